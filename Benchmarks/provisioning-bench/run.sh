#!/usr/bin/env bash
# Provisioning benchmark (issue #5): the time gatehouse takes to register DEVICES new leaf devices
# with DPS on their behalf — DevHub's DPS over MQTT/TLS, every device key derived inside swtpm
# (fresh state, Unix socket) — from their first telemetry to all assigned and to all relayed, at
# each [provisioning] concurrency given; then the TPM's HMAC operations per second
# (Benchmarks/tpm-bench/run.sh). Release build; real swtpm, DevHub, mosquitto and gatehoused.
# Not a test: it prints figures.
#
#   Benchmarks/provisioning-bench/run.sh [DEVICES=1000] [CONCURRENCY...=4 16]
#   Benchmarks/provisioning-bench/run.sh 1000 4 16 32
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICES=${1:-1000}
shift || true
CONCURRENCY=("$@")
[ ${#CONCURRENCY[@]} -gt 0 ] || CONCURRENCY=(4 16)

for tool in swtpm mosquitto python3; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (scripts/setup installs it)" >&2; exit 69; }
done
python3 -c 'import paho.mqtt.client' 2>/dev/null || { echo "paho-mqtt is missing: pip install paho-mqtt" >&2; exit 69; }

echo "== building gatehoused, gatehouse, gatehouse-devhub and the mqtt plugin (release)"
for product in gatehoused gatehouse gatehouse-devhub gatehouse-mqtt; do
    swift build -c release -q --product "$product"
done
BIN=$(swift build -c release --show-bin-path)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # a TLS connection a device on each side
echo "== gatehouse $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r), swtpm $(swtpm --version | head -1 | sed 's/.*version \([0-9.]*\).*/\1/')"
python3 Benchmarks/provisioning-bench/bench.py --bin "$BIN" --devices "$DEVICES" --concurrency "${CONCURRENCY[@]}"

echo
echo "== TPM HMAC operations per second (Benchmarks/tpm-bench/run.sh)"
Benchmarks/tpm-bench/run.sh 2000 "$DEVICES"
