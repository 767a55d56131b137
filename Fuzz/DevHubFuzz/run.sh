#!/usr/bin/env bash
# Builds DevHub's fuzzer with libFuzzer and AddressSanitizer and runs it.
#   Fuzz/DevHubFuzz/run.sh              # 10 minutes
#   Fuzz/DevHubFuzz/run.sh -runs=20000  # any libFuzzer flags
# The fuzzer feeds each input to the MQTT decoder (round-trip and split checks) and to a real
# DevHub session (raw CONNECT, hub device, DPS registration, or a whole connection to the AMQP
# endpoint; see DevHubFuzzer.swift).
# Seeds come from seeds.py; the growing corpus and any crash files go to .work/ (not committed).
# Needs the root package to vend DevHubKit as a library product.
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release -Xswiftc -sanitize=fuzzer,address
mkdir -p .work/corpus .work/artifacts
python3 seeds.py .work/corpus
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-max_total_time=600)
# Leaks are checked once, at exit (a session that leaks its channel shows up there), not per
# input: NIO's event-loop threads and caches outlive single inputs.
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
exec .build/release/DevHubFuzzer .work/corpus -dict=mqtt.dict -max_len=4096 -timeout=20 -detect_leaks=0 \
    -artifact_prefix=.work/artifacts/ -print_final_stats=1 "${args[@]}"
