#!/usr/bin/env bash
# What applying telemetry rules on ingest costs the relay: QoS 1 throughput through the site
# broker → gatehoused (durable outbox) → a TLS hub broker, without rules and with a rule set,
# run after run in alternation against the same brokers and the same release binaries, so that
# both see the same machine (a shared 2-core VM drifts by more than the effect measured).
# Prints each run and the median of each, and their ratio; the CPU time gatehoused spent per
# message in the throughput runs (user + system, from /proc: what the rules cost, less disturbed by
# other load than the wall clock); then the latency at 5,000 msg/s (30,000 messages a run).
#
#   Benchmarks/relay-rules-bench.sh [RULES_DIR=rules/examples/site] [ROUNDS=6] [MESSAGES=50000] [DEVICES=10]
#   BIN=DIR Benchmarks/relay-rules-bench.sh   # binaries built before (gatehoused, gatehouse, relay-bench, the plugin)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source Benchmarks/relay-lib.sh
scripts/setup
RULES=${1:-rules/examples/site}
ROUNDS=${2:-6}
MESSAGES=${3:-50000}
DEVICES=${4:-10}

relay_build gatehoused gatehouse gatehouse-mqtt relay-bench
"$BIN/gatehouse" rules check "$RULES" --destination upstream --destination archive >/dev/null
RULES_DIR=$(cd "$RULES" && pwd)

WORK=$(mktemp -d /tmp/gatehouse-rules-bench.XXXXXX)
GH_PID=""
trap 'relay_cleanup $GH_PID' EXIT
relay_brokers "$WORK"

# run LABEL RULES_LINE — a fresh gatehoused (empty state), a warm-up, then the measured run.
run() {
    local label=$1 rules_line=$2
    rm -f "$WORK"/state.db*
    relay_config "$WORK" "$rules_line" "" ""
    "$BIN/gatehoused" -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehoused.log" &
    GH_PID=$!
    sleep 1.5
    local args=(--pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" --devices "$DEVICES" --rate 0)
    "$BIN/relay-bench" "${args[@]}" --label warmup --messages 2000 >/dev/null
    local before after
    before=$(cpu_ticks "$GH_PID")
    "$BIN/relay-bench" "${args[@]}" --label "$label" --messages "$MESSAGES" | tee -a "$WORK/results.jsonl"
    after=$(cpu_ticks "$GH_PID")
    echo "{\"label\":\"$label-cpu\",\"cpu_ns_per_message\":$(((after - before) * 1000000000 / $(getconf CLK_TCK) / MESSAGES))}" \
        | tee -a "$WORK/results.jsonl"
    local paced=(--pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" --devices "$DEVICES")
    "$BIN/relay-bench" "${paced[@]}" --rate 5000 --label "$label-at-rate" --messages 30000 | tee -a "$WORK/results.jsonl"
    kill "$GH_PID"; wait "$GH_PID" 2>/dev/null || true
    GH_PID=""
}

echo "== $ROUNDS rounds of $MESSAGES QoS 1 messages from $DEVICES devices: without rules, then with $RULES"
for round in $(seq "$ROUNDS"); do
    run without-rules ""
    run with-rules "rules_dir = \"$RULES_DIR\""
done

python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for row in rows:
    if "sent" in row and row.get("received") != row.get("sent"):
        print(f"warning: {row['label']} received {row.get('received')} of {row.get('sent')}")
def rates(label): return [r["msgs_per_s"] for r in rows if r["label"] == label]
without, with_rules = rates("without-rules"), rates("with-rules")
print()
print("without rules msg/s:", " ".join(f"{x:.0f}" for x in without))
print("with rules    msg/s:", " ".join(f"{x:.0f}" for x in with_rules))
a, b = statistics.median(without), statistics.median(with_rules)
pairs = [w / o for o, w in zip(without, with_rules)]
print(f"median without {a:.0f} msg/s, with {b:.0f} msg/s: ratio {b / a:.3f} "
      f"(per round {' '.join(f'{p:.2f}' for p in pairs)}; goal: within 5 %)")
def cpu(label): return [r["cpu_ns_per_message"] / 1000 for r in rows if r["label"] == label]
co, cw = cpu("without-rules-cpu"), cpu("with-rules-cpu")
print(f"gatehoused CPU per message (µs): without rules {' '.join(f'{x:.1f}' for x in co)} (median "
      f"{statistics.median(co):.1f}); with rules {' '.join(f'{x:.1f}' for x in cw)} (median {statistics.median(cw):.1f}): "
      f"ratio {statistics.median(cw) / statistics.median(co):.3f}")
def latency(label, key): return [r[key] for r in rows if r["label"] == label]
for key in ["p50_ms", "p99_ms"]:
    o, w = latency("without-rules-at-rate", key), latency("with-rules-at-rate", key)
    print(f"end-to-end {key[:3]} at 5,000 msg/s: without rules {' '.join(f'{x:.2f}' for x in o)} (median "
          f"{statistics.median(o):.2f} ms); with rules {' '.join(f'{x:.2f}' for x in w)} (median {statistics.median(w):.2f} ms)")
PY
echo "(raw results: $WORK/results.jsonl)"
