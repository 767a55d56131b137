#!/usr/bin/env bash
# packaging/test-site-broker-outage.sh — the packaged site-broker settings lose nothing while
# gatehoused is away (docs/site-broker.md, "While gatehoused is away"; issue #15).
#
# A site broker (mosquitto) with exactly the file the package installs in /etc/mosquitto/conf.d
# (packaging/site-broker/gatehouse-queue.conf), a TLS mosquitto standing in for IoT Hub, and
# gatehoused between them. relay-bench (Benchmarks/relay-bench) publishes QoS 1 telemetry as
# DEVICES leaf devices at RATE msg/s and counts every PUBACK the site broker sends it; gatehoused
# is killed (SIGKILL) LEAD s into the stream, stays down OUTAGE s, and is started again while the
# devices keep publishing. It then counts what reached the hub. It passes when every message was
# acknowledged by the site broker, every acknowledged message reached the hub, and the broker
# logged no "Outgoing messages are being dropped". Last, the site's packet limit: a message of
# [site] max_message_bytes (256 KiB) is acknowledged, a packet over max_packet_size is refused
# (disconnect, no PUBACK). Prints the figures; exit status 0 = pass.
#
#   packaging/test-site-broker-outage.sh [OUTAGE_SECONDS=60] [RATE=1000] [DEVICES=10]
#
#   CONFIGURATION=release   build and run release binaries (default: debug, as scripts/test)
#   GATEHOUSE_BIN=DIR       run the binaries in DIR (gatehoused, libgatehouse-mqtt.so,
#                           relay-bench) without building
#   SITE_SETTINGS=stock     run the site broker with mosquitto's defaults instead of the packaged
#                           file (persistence only): shows what the test catches
#
# scripts/test runs it with a 10 s outage (10,000 messages, ten times mosquitto's default queue of
# 1,000); docs/demo-and-tests.md gives the 60 s run. Everything binds to 127.0.0.1; no root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
OUTAGE=${1:-60}
RATE=${2:-1000}
DEVICES=${3:-10}
LEAD=3 TAIL=3
CONFIGURATION=${CONFIGURATION:-debug}
SITE_SETTINGS=${SITE_SETTINGS:-packaged}
MESSAGES=$((RATE * (LEAD + OUTAGE + TAIL)))

scripts/setup
if [ -n "${GATEHOUSE_BIN:-}" ]; then
    BIN=$GATEHOUSE_BIN  # already built (scripts/test)
else
    for product in gatehoused gatehouse-mqtt relay-bench; do
        swift build -c "$CONFIGURATION" -q --product "$product"
    done
    BIN=$(swift build -c "$CONFIGURATION" --show-bin-path)
fi

WORK=$(mktemp -d /tmp/gatehouse-outage.XXXXXX)
GH_PID="" hub_PID="" site_PID="" BENCH_PID=""
cleanup() {
    for pid in $BENCH_PID $GH_PID $hub_PID $site_PID; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "outage: work folder kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

HUB_PORT=$(free_port) SITE_PORT=$(free_port)
make_certs "$WORK"
start_broker hub "listener $HUB_PORT 127.0.0.1
cafile $WORK/ca.crt
certfile $WORK/server.crt
keyfile $WORK/server.key
allow_anonymous true
persistence false
max_queued_messages 0
max_connections -1" "$WORK"
if [ "$SITE_SETTINGS" = stock ]; then
    settings="persistence true"
else
    settings=$(site_broker_settings)
fi
start_broker site "listener $SITE_PORT 127.0.0.1
allow_anonymous true
$settings" "$WORK"
wait_port "$HUB_PORT"
wait_port "$SITE_PORT"

head -c 32 /dev/urandom | base64 >"$WORK/group.key"
chmod 600 "$WORK/group.key"
gatehouse_config "$WORK" "" "" ""

runs=0
start_gatehoused() {
    runs=$((runs + 1))
    "$BIN/gatehoused" -c "$WORK/gatehouse.toml" 2>"$WORK/gatehoused-$runs.log" &
    GH_PID=$!
    for _ in $(seq 100); do
        grep -q "subscribed to" "$WORK/gatehoused-$runs.log" && return 0
        sleep 0.1
    done
    echo "outage: gatehoused did not subscribe to the site broker:" >&2
    tail -5 "$WORK/gatehoused-$runs.log" >&2
    return 1
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== site broker ($SITE_SETTINGS settings) on :$SITE_PORT, hub (TLS) on :$HUB_PORT, $CONFIGURATION build"
start_gatehoused
site_rss_before=$(rss_kb "$site_PID")
echo "== $DEVICES devices publish $MESSAGES QoS 1 messages at $RATE msg/s; gatehoused is killed after ${LEAD}s and stays down ${OUTAGE}s"
# The hub side (relay-bench's subscriber) waits up to 120 s past the last publish for the backlog.
"$BIN/relay-bench" --label outage --pub-port "$SITE_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" \
    --devices "$DEVICES" --messages "$MESSAGES" --rate "$RATE" --timeout 120 >"$WORK/result.json" &
BENCH_PID=$!
sleep "$LEAD"
kill -KILL "$GH_PID"
wait "$GH_PID" 2>/dev/null || true
GH_PID=""
echo "   gatehoused killed; down for ${OUTAGE}s"
sleep "$OUTAGE"
# What the broker holds for gatehoused now: its memory, and its save file (SIGUSR1 saves now).
site_rss_outage=$(rss_kb "$site_PID")
kill -USR1 "$site_PID"
for _ in $(seq 50); do grep -q "Saving in-memory database" "$WORK/site.log" && break; sleep 0.1; done
sleep 0.5
db_bytes=$(stat -c %s "$WORK/site-data/mosquitto.db" 2>/dev/null || echo 0)
start_gatehoused
echo "   gatehoused started again"
wait "$BENCH_PID"
BENCH_PID=""
dropped_notices=$(grep -c "Outgoing messages are being dropped" "$WORK/site.log" || true)

echo "== the site's packet limit: 256 KiB of payload is taken; a packet over max_packet_size is refused"
limit=$(awk '$1 == "max_packet_size" {print $2}' packaging/site-broker/gatehouse-queue.conf)
head -c 262144 /dev/zero | tr '\0' 'x' >"$WORK/largest.bin"
head -c "$limit" /dev/zero | tr '\0' 'x' >"$WORK/oversize.bin"
publish_file() { # publish_file FILE DEVICE: mosquitto_pub's exit status (0: acknowledged)
    timeout 20 mosquitto_pub -h 127.0.0.1 -p "$SITE_PORT" -q 1 -t "devices/$2/messages/events/" -f "$1" \
        2>>"$WORK/limit.err" && echo 0 || echo $?
}
largest_rc=$(publish_file "$WORK/largest.bin" large-1)
oversize_rc=$(publish_file "$WORK/oversize.bin" large-2)
limit_ok=0
((largest_rc == 0 && oversize_rc != 0)) && grep -q "disconnected due to oversize packet" "$WORK/site.log" && limit_ok=1
[ "$SITE_SETTINGS" = stock ] && limit_ok=skipped

python3 - "$WORK/result.json" "$OUTAGE" "$RATE" "$site_rss_before" "$site_rss_outage" "$db_bytes" \
    "$dropped_notices" "$limit_ok" "$largest_rc" "$oversize_rc" "${limit:-?}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
outage, rate, rss0, rss1, db, notices = (int(x) for x in sys.argv[2:8])
limit_ok, largest_rc, oversize_rc, limit = sys.argv[8:12]
queued = outage * rate  # published while gatehoused was down (at least)
print()
print(f"published            {r['sent']:>9,}   ({rate:,} msg/s, {outage} s of it with gatehoused down)")
print(f"acknowledged (PUBACK){r['acked']:>9,}   by the site broker")
print(f"arrived at the hub   {r['received']:>9,}   unique ({r['duplicates']:,} duplicate(s))")
print(f"acknowledged, lost   {r['acked_lost']:>9,}")
print(f"latency p50 / max    {r['p50_ms']:>9.1f} / {r['max_ms']:,.0f} ms   (max: the outage plus the time to drain the backlog)")
print(f"site broker          RSS {rss0/1024:.1f} MB before, {rss1/1024:.1f} MB after {outage} s "
      f"(~{(rss1-rss0)*1024/max(queued,1):.0f} B a queued message); save file {db/1e6:.1f} MB "
      f"(~{db/max(queued,1):.0f} B a message); 'messages are being dropped' logged {notices} time(s)")
print(f"packet limit         {'holds' if limit_ok == '1' else limit_ok if limit_ok == 'skipped' else 'FAILED'}: "
      f"256 KiB of payload acknowledged (mosquitto_pub exit {largest_rc}), {limit} bytes refused with a "
      f"disconnect (exit {oversize_rc})")
ok = r["acked"] == r["sent"] and r["acked_lost"] == 0 and r["received"] >= r["acked"] and notices == 0 \
    and limit_ok in ("1", "skipped")
print()
print(("outage: OK" if ok else "outage: FAIL") +
      f" — {r['acked']:,} acknowledged, {r['received']:,} arrived, {r['acked_lost']:,} lost after a {outage} s outage at {rate:,} msg/s")
sys.exit(0 if ok else 1)
PY
