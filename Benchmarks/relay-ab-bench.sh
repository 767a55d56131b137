#!/usr/bin/env bash
# Two builds of gatehoused side by side: QoS 1 throughput and gatehoused's CPU per message
# (user + system, from /proc) through the same site and TLS hub brokers, the builds alternating
# round by round so that the machine's drift weighs on both alike (docs/benchmarks.md).
#
#   Benchmarks/relay-ab-bench.sh DIR_A DIR_B [ROUNDS=4] [MESSAGES=50000] [DEVICES=10]
# Each DIR holds gatehoused, libgatehouse-mqtt.so and relay-bench of one release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source Benchmarks/relay-lib.sh
A=$1; B=$2; ROUNDS=${3:-4}; MESSAGES=${4:-50000}; DEVICES=${5:-10}
WORK=$(mktemp -d /tmp/gatehouse-ab-bench.XXXXXX)
GH_PID=""
trap 'relay_cleanup $GH_PID' EXIT
relay_brokers "$WORK"
for round in $(seq "$ROUNDS"); do
    for BIN in "$A" "$B"; do
        rm -f "$WORK"/state.db*
        relay_config "$WORK" "" "" ""
        "$BIN/gatehoused" -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehoused.log" &
        GH_PID=$!
        sleep 1.5
        args=(--pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" --devices "$DEVICES" --rate 0)
        "$BIN/relay-bench" "${args[@]}" --label warmup --messages 2000 >/dev/null
        before=$(cpu_ticks "$GH_PID")
        rate=$("$BIN/relay-bench" "${args[@]}" --label run --messages "$MESSAGES" |
            python3 -c 'import json, sys; print(round(json.load(sys.stdin)["msgs_per_s"]))')
        after=$(cpu_ticks "$GH_PID")
        echo "round $round $BIN: $rate msg/s, $(((after - before) * 1000000 / $(getconf CLK_TCK) / MESSAGES)) µs CPU a message"
        kill "$GH_PID"; wait "$GH_PID" 2>/dev/null || true; GH_PID=""
    done
done
