#!/usr/bin/env bash
# The relay benchmark: QoS 1 telemetry from simulated leaf devices through
#   (a) site broker → gatehoused (durable outbox, fsync per batch) → hub broker (TLS), and
#   (b) site broker → mosquitto's own bridge (QoS 1) → the same hub broker (TLS),
# in one run, with the same brokers' settings; then gatehoused's RSS idle and with 1,000 device
# identities connected upstream. Release builds; everything on 127.0.0.1.
#
#   Benchmarks/relay-bench.sh [MESSAGES] [DEVICES]
#   RULES=rules/examples/site Benchmarks/relay-bench.sh   # the telemetry rules applied on ingest
#   BIN=DIR Benchmarks/relay-bench.sh   # binaries built before: runs to compare use the same build
#   ROUNDS=5 Benchmarks/relay-bench.sh  # throughput rounds, gatehouse and the bridge in turn (3)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source Benchmarks/relay-lib.sh
scripts/setup
MESSAGES=${1:-50000}
DEVICES=${2:-10}
RATE=5000

products=(gatehoused gatehouse-mqtt relay-bench)
[ -n "${RULES:-}" ] && products+=(gatehouse)
relay_build "${products[@]}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 1,000 identities need 1,000+ descriptors

RULES_LINE=""
if [ -n "${RULES:-}" ]; then  # RULES=DIR: gatehoused applies that rule set's telemetry rules on ingest
    "$BIN/gatehouse" rules check "$RULES" --destination upstream --destination archive >/dev/null
    RULES_LINE="rules_dir = \"$(cd "$RULES" && pwd)\""
    echo "== telemetry rules applied on ingest: $RULES"
fi

WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
GH_PID=""; bridged_PID=""
trap 'relay_cleanup $GH_PID $bridged_PID' EXIT

relay_brokers "$WORK"
BRIDGED_PORT=$(free_port)
start_broker bridged "listener $BRIDGED_PORT 127.0.0.1
$RELAY_BROKER_COMMON
connection to-hub
address 127.0.0.1:$HUB_PORT
topic devices/# out 1
bridge_cafile $WORK/ca.crt
bridge_protocol_version mqttv311
cleansession false
try_private false" "$WORK"
wait_port "$BRIDGED_PORT"
relay_config "$WORK" "$RULES_LINE" "durability = \"${DURABILITY:-full}\"   # DURABILITY=normal: what fsync costs" ""

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }
start_gatehoused() {
    "$BIN/gatehoused" -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehoused.log" &
    GH_PID=$!
    sleep 1.5
}
bench() {  # LABEL PUB_PORT SUB_PORT [SUB_CA] RATE MESSAGES DEVICES
    local label=$1 pub=$2 sub=$3 ca=$4 rate=$5 messages=$6 devices=$7
    local args=(--label "$label" --pub-port "$pub" --sub-port "$sub" --devices "$devices" --messages "$messages" --rate "$rate")
    [ -n "$ca" ] && args+=(--sub-ca "$ca")
    "$BIN/relay-bench" "${args[@]}" | tee -a "$WORK/results.jsonl"
}

start_gatehoused
IDLE_RSS=$(rss_kb "$GH_PID"); IDLE_ANON=$(anon_kb "$GH_PID")
echo "== gatehoused idle: RSS $IDLE_RSS kB ($IDLE_ANON kB private)"

echo "== warm-up (connects every device identity)"
bench warmup-gatehouse "$SITE_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 2000 "$DEVICES" >/dev/null
bench warmup-bridge "$BRIDGED_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 2000 "$DEVICES" >/dev/null

echo "== throughput: $MESSAGES QoS 1 messages from $DEVICES devices, as fast as flow control allows"
if [ -n "${PROFILE:-}" ]; then  # PROFILE=1: perf profile of gatehoused during the throughput run
    perf record -F 999 -g -o "$WORK/perf.data" -p "$GH_PID" 2>/dev/null &
    PERF_PID=$!
fi
# ROUNDS (3) rounds, gatehouse and the bridge in turn (the bridge first every other round), so
# that the machine's drift weighs on both alike; the ratio is each round's, and their median.
for round in $(seq "${ROUNDS:-3}"); do
    if [ $((round % 2)) -eq 0 ]; then
        bench "mosquitto-bridge-$round" "$BRIDGED_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 "$MESSAGES" "$DEVICES"
    fi
    bench "gatehouse-$round" "$SITE_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 "$MESSAGES" "$DEVICES"
    if [ -n "${PROFILE:-}" ] && [ "$round" -eq 1 ]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" || true
        { perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -60 >"$WORK/profile.txt"; } || true
        echo "(profile: $WORK/profile.txt)"
    fi
    if [ $((round % 2)) -eq 1 ]; then
        bench "mosquitto-bridge-$round" "$BRIDGED_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 "$MESSAGES" "$DEVICES"
    fi
done

echo "== latency at $RATE msg/s ($((RATE * 10)) messages)"
bench site-broker-only "$SITE_PORT" "$SITE_PORT" "" "$RATE" $((RATE * 10)) "$DEVICES"
bench gatehouse-at-rate "$SITE_PORT" "$HUB_PORT" "$WORK/ca.crt" "$RATE" $((RATE * 10)) "$DEVICES"
bench bridge-at-rate "$BRIDGED_PORT" "$HUB_PORT" "$WORK/ca.crt" "$RATE" $((RATE * 10)) "$DEVICES"
LOADED_RSS=$(rss_kb "$GH_PID"); LOADED_ANON=$(anon_kb "$GH_PID")

echo "== 1,000 device identities connected upstream"
bench thousand-devices "$SITE_PORT" "$HUB_PORT" "$WORK/ca.crt" 0 1000 1000 >/dev/null
for _ in $(seq 120); do
    up=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from device where link_state = \"up\"").fetchone()[0])' "$WORK/state.db")
    [ "$up" -ge 1000 ] && break
    sleep 0.5
done
sleep 31  # one malloc_trim period of gatehoused
THOUSAND_RSS=$(rss_kb "$GH_PID"); THOUSAND_ANON=$(anon_kb "$GH_PID")
echo "   links up: $up"

python3 - "$WORK/results.jsonl" "$IDLE_RSS" "$LOADED_RSS" "$THOUSAND_RSS" "$up" "$IDLE_ANON" "$LOADED_ANON" "$THOUSAND_ANON" <<'PY'
import json, sys
import statistics
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
idle, loaded, thousand, up, idle_anon, loaded_anon, thousand_anon = (int(x) for x in sys.argv[2:9])
rounds = sorted(int(label.rsplit("-", 1)[1]) for label in rows if label.startswith("gatehouse-") and label[10:].isdigit())
print()
print(f"{'path':<22}{'msgs':>8}{'recv':>8}{'dups':>6}{'msg/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
labels = [f"{path}-{n}" for n in rounds for path in ("gatehouse", "mosquitto-bridge")]
for label in labels + ["site-broker-only", "gatehouse-at-rate", "bridge-at-rate"]:
    r = rows[label]
    print(f"{label:<22}{r['sent']:>8}{r['received']:>8}{r['duplicates']:>6}{r['msgs_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
print()
ratios = [rows[f"gatehouse-{n}"]["msgs_per_s"] / rows[f"mosquitto-bridge-{n}"]["msgs_per_s"] for n in rounds]
print(f"throughput ratio gatehouse / mosquitto bridge: median {statistics.median(ratios):.2f} "
      f"(rounds: {' '.join(f'{x:.2f}' for x in ratios)}; goal >= 1.0)")
base, gr, br = rows["site-broker-only"], rows["gatehouse-at-rate"], rows["bridge-at-rate"]
print(f"added latency at 5,000 msg/s over the site broker alone: gatehouse p50 {gr['p50_ms']-base['p50_ms']:.2f} ms, "
      f"p99 {gr['p99_ms']-base['p99_ms']:.2f} ms (goal p99 < 2 ms); bridge p50 {br['p50_ms']-base['p50_ms']:.2f} ms, p99 {br['p99_ms']-base['p99_ms']:.2f} ms")
print(f"gatehoused RSS (private in brackets): idle {idle/1024:.1f} MB ({idle_anon/1024:.1f}), after the load {loaded/1024:.1f} MB ({loaded_anon/1024:.1f}), "
      f"with {up} device identities connected upstream {thousand/1024:.1f} MB ({thousand_anon/1024:.1f}) (goal < 30 MB)")
PY
echo "(raw results: $WORK/results.jsonl)"
