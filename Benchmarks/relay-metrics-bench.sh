#!/usr/bin/env bash
# What metrics cost the relay: QoS 1 telemetry from simulated leaf devices through site broker →
# gatehoused → hub broker (TLS), as in Benchmarks/relay-bench.sh, with `[metrics]` off and on
# (scraped every second, as a busy Prometheus would) in alternating rounds, so that whatever else
# the machine does weighs on both alike. Prints each round and the ratio of the medians
# (docs/benchmarks.md, "Metrics on and off"; the goal: on within 3 % of off).
#
#   Benchmarks/relay-metrics-bench.sh [MESSAGES] [DEVICES] [ROUNDS]
#   BIN=DIR Benchmarks/relay-metrics-bench.sh   # binaries built before (release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source Benchmarks/relay-lib.sh
MESSAGES=${1:-20000}
DEVICES=${2:-10}
ROUNDS=${3:-5}

relay_build gatehoused gatehouse-mqtt relay-bench

WORK=$(mktemp -d /tmp/gatehouse-metrics-bench.XXXXXX)
GH_PID=""; SCRAPER_PID=""
trap 'relay_cleanup $SCRAPER_PID $GH_PID' EXIT
relay_brokers "$WORK"
METRICS_PORT=$(free_port)

round() {  # off|on N
    local mode=$1 n=$2
    rm -f "$WORK"/state.db*
    if [ "$mode" = on ]; then relay_config "$WORK" "" "" "[metrics]
listen = \"127.0.0.1:$METRICS_PORT\""; else relay_config "$WORK" "" "" ""; fi
    "$BIN/gatehoused" -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehoused.log" &
    GH_PID=$!
    sleep 1.5
    if [ "$mode" = on ]; then
        wait_port "$METRICS_PORT"
        (while curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null; do sleep 1; done) &
        SCRAPER_PID=$!
    fi
    "$BIN/relay-bench" --label "warmup-$mode" --pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" \
        --devices "$DEVICES" --messages 2000 --rate 0 >/dev/null
    local cpu_before cpu_after
    cpu_before=$(cpu_ticks "$GH_PID")
    "$BIN/relay-bench" --label "$mode-$n" --pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" \
        --devices "$DEVICES" --messages "$MESSAGES" --rate 0 | tee -a "$WORK/results.jsonl"
    cpu_after=$(cpu_ticks "$GH_PID")
    echo "{\"label\": \"cpu-$mode-$n\", \"ticks\": $((cpu_after - cpu_before))}" >>"$WORK/results.jsonl"
    if [ "$mode" = on ]; then
        curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^gatehouse_messages_sent_total' || true
        kill "$SCRAPER_PID" 2>/dev/null || true; wait "$SCRAPER_PID" 2>/dev/null || true; SCRAPER_PID=""
    fi
    kill "$GH_PID"; wait "$GH_PID" 2>/dev/null || true; GH_PID=""
}

echo "== $ROUNDS rounds of $MESSAGES QoS 1 messages from $DEVICES devices, metrics off and on alternately"
for n in $(seq 1 "$ROUNDS"); do
    if [ $((n % 2)) -eq 1 ]; then round off "$n"; round on "$n"; else round on "$n"; round off "$n"; fi
done

python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
off = [r["msgs_per_s"] for r in rows if r["label"].startswith("off-")]
on = [r["msgs_per_s"] for r in rows if r["label"].startswith("on-")]
print()
print("metrics off msg/s:", " ".join(f"{x:.0f}" for x in off))
print("metrics on  msg/s:", " ".join(f"{x:.0f}" for x in on))
m_off, m_on = statistics.median(off), statistics.median(on)
print(f"median off {m_off:.0f}, on {m_on:.0f}: on / off = {m_on / m_off:.3f} (goal >= 0.97)")
import os
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
messages = next(r["sent"] for r in rows if r["label"].startswith("off-"))
cpu = lambda mode: [r["ticks"] * tick_us / messages for r in rows if r["label"].startswith(f"cpu-{mode}-")]
c_off, c_on = cpu("off"), cpu("on")
print("gatehoused CPU per message, off (µs):", " ".join(f"{x:.1f}" for x in c_off))
print("gatehoused CPU per message, on  (µs):", " ".join(f"{x:.1f}" for x in c_on))
print(f"median CPU per message off {statistics.median(c_off):.1f} µs, on {statistics.median(c_on):.1f} µs: "
      f"on / off = {statistics.median(c_on) / statistics.median(c_off):.3f}")
PY
echo "(raw results: $WORK/results.jsonl)"
