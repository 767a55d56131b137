#!/usr/bin/env bash
# DevHub benchmark: 1,000 concurrent device connections (MQTT/TLS, each with a valid SAS token),
# DevHub's RSS while it holds them, and the QoS 1 D2C messages/s it accepts (each PUBACK is sent
# after the message is committed to SQLite). Not a test: it prints figures.
#   Benchmarks/devhub-bench/run.sh                     # 1000 devices x 20 messages
#   DEVICES=200 MESSAGES=100 WINDOW=20 Benchmarks/devhub-bench/run.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
swift build -c release --product gatehouse-devhub >/dev/null
bin="$(swift build -c release --show-bin-path)/gatehouse-devhub"
work="$(mktemp -d /tmp/devhub-bench.XXXXXX)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 1,000 sockets on each side
"$bin" serve --data "$work/data" --mqtt 127.0.0.1:0 --http 127.0.0.1:0 --log-level warning 2>"$work/devhub.log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$work/data/devhub.json" ] && break; sleep 0.1; done
read -r port control ca < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["mqtt"]["port"], d["control"], d["caFile"])' "$work/data/devhub.json")
echo "DevHub $(git rev-parse --short HEAD) release build, $(nproc) cores, pid $pid"
python3 Benchmarks/devhub-bench/load.py --port "$port" --control "$control" --ca "$ca" --pid "$pid" \
    --devices "${DEVICES:-1000}" --messages "${MESSAGES:-20}" --window "${WINDOW:-10}"
