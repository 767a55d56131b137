#!/usr/bin/env bash
# The upstream transports compared, in one run on one machine (docs/benchmarks.md, "Upstream
# transports"):
#   (a) gatehoused with the `amqp` transport → DevHub's AMQP endpoint (995 identities a connection),
#   (b) gatehoused with the `mqtt` transport → DevHub's MQTT endpoint (one TLS connection a device),
#   (c) mosquitto's own bridge → a TLS mosquitto (one connection for the whole site, no identities);
# each at 10 and at 1,000 devices: QoS 1 msg/s from the site broker to the hub, the time to
# connect 1,000 device identities, and gatehoused's RSS (and private memory) idle and with 1,000
# identities connected. Release builds; everything on 127.0.0.1.
#
#   Benchmarks/amqp-bench.sh [MESSAGES]          # messages a throughput run (default 20,000)
#   BIN=DIR Benchmarks/amqp-bench.sh             # binaries built before (gatehoused, gatehouse-devhub,
#                                                # relay-bench, libgatehouse-mqtt.so, libgatehouse-amqp.so)
#   AMQP_HUB="methods = false" Benchmarks/amqp-bench.sh   # more [hub] keys for the amqp run
#   TRANSPORTS=amqp Benchmarks/amqp-bench.sh     # only some of amqp, amqp-sensors, mqtt, bridge
#                                                # (amqp-sensors: `methods = false`, devices that
#                                                # take no direct methods: two links a device, not four)
#
# (a) and (b) go to the same hub (DevHub, which verifies every token and stores every message);
# (c) cannot (a bridge has one identity), so it goes to mosquitto, a faster hub: its figures are
# the ceiling of the site broker and TLS, not a like-for-like hub.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
scripts/setup
MESSAGES=${1:-20000}

if [ -n "${BIN:-}" ]; then
    echo "== using the binaries in $BIN"
else
    echo "== building (release)"
    for product in gatehoused gatehouse-mqtt gatehouse-amqp gatehouse-devhub relay-bench; do
        swift build -c release -q --product "$product"
    done
    BIN=$(swift build -c release --show-bin-path)
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # 1,000 MQTT identities need 1,000+ descriptors

WORK=$(mktemp -d /tmp/gatehouse-amqp-bench.XXXXXX)
GH_PID=""; hub_PID=""; site_PID=""; bridged_PID=""; DEVHUB_PID=""
cleanup() {
    for pid in $GH_PID $DEVHUB_PID $hub_PID $site_PID $bridged_PID; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

SITE_PORT=$(free_port); HUB_PORT=$(free_port); BRIDGED_PORT=$(free_port)
DEVHUB_MQTT=$(free_port); DEVHUB_AMQP=$(free_port); DEVHUB_HTTP=$(free_port)
DEVHUB_URL="http://127.0.0.1:$DEVHUB_HTTP"
make_certs "$WORK"
COMMON="allow_anonymous true
max_inflight_messages 500
max_connections -1"
start_broker site "listener $SITE_PORT 127.0.0.1
$COMMON
$(site_broker_settings | grep -v '^max_inflight_messages')" "$WORK"
start_broker hub "listener $HUB_PORT 127.0.0.1
cafile $WORK/ca.crt
certfile $WORK/server.crt
keyfile $WORK/server.key
persistence false
max_queued_messages 0
$COMMON" "$WORK"
start_broker bridged "listener $BRIDGED_PORT 127.0.0.1
persistence false
max_queued_messages 0
$COMMON
connection to-hub
address 127.0.0.1:$HUB_PORT
topic devices/# out 1
bridge_cafile $WORK/ca.crt
bridge_protocol_version mqttv311
cleansession false
try_private false" "$WORK"
"$BIN/gatehouse-devhub" serve --data "$WORK/devhub" --mqtt "127.0.0.1:$DEVHUB_MQTT" --http "127.0.0.1:$DEVHUB_HTTP" \
    --hub-name devhub.local --amqp "127.0.0.1:$DEVHUB_AMQP" >"$WORK/devhub.log" 2>&1 &
DEVHUB_PID=$!
for port in "$SITE_PORT" "$HUB_PORT" "$BRIDGED_PORT" "$DEVHUB_HTTP" "$DEVHUB_AMQP"; do wait_port "$port"; done

head -c 32 /dev/urandom | base64 >"$WORK/group.key"; chmod 600 "$WORK/group.key"
echo "== 1,000 devices in DevHub (keys derived from the group key, as gatehoused derives them)"
python3 Tests/Fixtures/leaf-load.py create "$DEVHUB_URL" 1000 bench- "$(cat "$WORK/group.key")"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
devhub_last() { python3 - "$DEVHUB_URL" <<'PY'
import json, sys, urllib.request
after = 0
while True:
    page = json.load(urllib.request.urlopen(f"{sys.argv[1]}/api/telemetry?after={after}&limit=100000"))
    if not page["messages"]:
        break
    after = page["last"]
print(after)
PY
}
# arrivals SEQ COUNT START — waits until DevHub holds COUNT messages past SEQ; prints msg/s from
# START (the first publish) to the last arrival.
arrivals() {
    python3 - "$DEVHUB_URL" "$1" "$2" "$3" <<'PY'
import datetime, json, sys, time, urllib.request
url, seq, count, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
received, last_at, deadline = 0, None, time.time() + 300
while received < count and time.time() < deadline:
    page = json.load(urllib.request.urlopen(f"{url}/api/telemetry?after={seq}&limit=100000"))
    for message in page["messages"]:
        received += 1
        last_at = message["receivedAt"]
    seq = page["last"]
    if received < count:
        time.sleep(0.2)
if last_at is None:
    print("0 0")
    sys.exit()
end = datetime.datetime.fromisoformat(last_at.replace("Z", "+00:00")[:26] + "+00:00").timestamp()
print(f"{received} {received / max(end - start, 1e-6):.0f}")
PY
}
links_up() {
    python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from device where link_state = \"up\"").fetchone()[0])' "$1"
}
publish() {  # LABEL DEVICES MESSAGES
    "$BIN/relay-bench" --label "$1" --pub-port "$SITE_PORT" --sub-port "$SITE_PORT" --devices "$2" --messages "$3" \
        --rate 0 >>"$WORK/publish.jsonl"
}

RESULTS="$WORK/results.txt"
run_transport() {  # mqtt | amqp | amqp-sensors
    local transport=$1 dir="$WORK/$1" plugin=${1%%-*}
    mkdir -p "$dir"
    local hub_lines
    if [ "$transport" = amqp ]; then
        hub_lines="port = $DEVHUB_AMQP
${AMQP_HUB:-}"
    elif [ "$transport" = amqp-sensors ]; then
        hub_lines="port = $DEVHUB_AMQP
methods = false"
    else
        hub_lines="port = $DEVHUB_MQTT"
    fi
    cat >"$dir/gatehouse.toml" <<TOML
[gateway]
state_db = "$dir/state.db"
plugin_dir = "$BIN"
log_level = "warning"
[outbox]
inflight_per_device = 64
[identity]
group_key_file = "$WORK/group.key"
[site]
plugin = "mqtt"
port = $SITE_PORT
client_id = "gatehouse-$transport"
[hub]
plugin = "$plugin"
hostname = "devhub.local"
address = "127.0.0.1"
$hub_lines
ca_file = "$WORK/devhub/ca.pem"
TOML
    "$BIN/gatehoused" -c "$dir/gatehouse.toml" 2>>"$dir/gatehoused.log" &
    GH_PID=$!
    sleep 2
    local idle idle_anon
    idle=$(rss_kb "$GH_PID"); idle_anon=$(anon_kb "$GH_PID")
    echo "== $transport: idle RSS $idle kB ($idle_anon kB private)"

    publish "$transport-warmup" 10 200
    sleep 2
    local seq start result10 result1000 connect_s
    seq=$(devhub_last); start=$(now)
    publish "$transport-10" 10 "$MESSAGES"
    result10=$(arrivals "$seq" "$MESSAGES" "$start")
    echo "   10 devices: ${result10#* } msg/s (${result10%% *} of $MESSAGES arrived)"
    # The warm baseline: the same daemon after that traffic (SQLite's page cache, the relay's
    # queues and the TLS buffers have grown), one malloc-trim period later, still 10 devices.
    # What 1,000 identities add above it is what they cost; above the cold start it also
    # counts what any traffic costs once.
    sleep 31
    local warm warm_anon
    warm=$(rss_kb "$GH_PID"); warm_anon=$(anon_kb "$GH_PID")
    echo "   warm RSS (10 devices, after that traffic): $warm kB ($warm_anon kB private)"

    start=$(now)
    publish "$transport-connect" 1000 1000
    local up=0
    for _ in $(seq 600); do
        up=$(links_up "$dir/state.db")
        [ "$up" -ge 1000 ] && break
        sleep 0.1
    done
    connect_s=$(python3 -c "print(f'{$(now) - $start:.2f}')")
    echo "   1,000 identities: $up up in $connect_s s"
    sleep 3
    seq=$(devhub_last); start=$(now)
    publish "$transport-1000" 1000 "$MESSAGES"
    result1000=$(arrivals "$seq" "$MESSAGES" "$start")
    echo "   1,000 devices: ${result1000#* } msg/s (${result1000%% *} of $MESSAGES arrived)"
    sleep 31  # one malloc_trim period of gatehoused
    local loaded loaded_anon
    loaded=$(rss_kb "$GH_PID"); loaded_anon=$(anon_kb "$GH_PID")
    echo "   RSS with 1,000 identities: $loaded kB ($loaded_anon kB private)"
    echo "$transport ${result10#* } ${result1000#* } $connect_s $up $idle $idle_anon $loaded $loaded_anon $warm" >>"$RESULTS"
    kill "$GH_PID"; wait "$GH_PID" 2>/dev/null || true
    GH_PID=""
}

TRANSPORTS=${TRANSPORTS:-amqp amqp-sensors mqtt bridge}
for transport in amqp amqp-sensors mqtt; do
    [[ " $TRANSPORTS " == *" $transport "* ]] && run_transport "$transport"
done
[[ " $TRANSPORTS " == *" bridge "* ]] || TRANSPORTS=""
[ -z "$TRANSPORTS" ] && { echo "(bridge skipped)"; echo "bridge - -" >>"$RESULTS"; }

[ -n "$TRANSPORTS" ] && echo "== mosquitto bridge"
bridge() {  # DEVICES
    "$BIN/relay-bench" --label "bridge-$1" --pub-port "$BRIDGED_PORT" --sub-port "$HUB_PORT" --sub-ca "$WORK/ca.crt" \
        --devices "$1" --messages "$MESSAGES" --rate 0 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["msgs_per_s"]))'
}
if [ -n "$TRANSPORTS" ]; then
    "$BIN/relay-bench" --label bridge-warmup --pub-port "$BRIDGED_PORT" --sub-port "$HUB_PORT" \
        --sub-ca "$WORK/ca.crt" --devices 10 --messages 2000 --rate 0 >/dev/null
    B10=$(bridge 10); B1000=$(bridge 1000)
    echo "bridge $B10 $B1000" >>"$RESULTS"
fi

python3 - "$RESULTS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    fields = line.split()
    rows[fields[0]] = fields[1:]
print()
print(f"{'path':<24}{'msg/s 10 dev':>14}{'msg/s 1,000 dev':>17}{'connect 1,000':>15}{'RSS idle':>11}{'RSS warm':>11}{'RSS 1,000':>11}{'above idle':>12}{'above warm':>12}")
for name, label in [("amqp", "gatehoused amqp"), ("amqp-sensors", "  no method links"), ("mqtt", "gatehoused mqtt")]:
    if name not in rows:
        continue
    m10, m1000, connect, up, idle, idle_anon, loaded, loaded_anon, warm = rows[name]
    above = (int(loaded) - int(idle)) / 1024
    above_warm = (int(loaded) - int(warm)) / 1024
    print(f"{label:<24}{m10:>14}{m1000:>17}{connect + ' s':>15}{int(idle)/1024:>8.1f} MB{int(warm)/1024:>8.1f} MB"
          f"{int(loaded)/1024:>8.1f} MB{above:>9.1f} MB{above_warm:>9.1f} MB"
          f"   (private {int(idle_anon)/1024:.1f} → {int(loaded_anon)/1024:.1f} MB; {up} up)")
if "bridge" in rows:
    b10, b1000 = rows["bridge"]
    print(f"{'mosquitto bridge':<24}{b10:>14}{b1000:>17}{'-':>15}")
if "amqp" in rows and "mqtt" in rows:
    a, m = rows["amqp"], rows["mqtt"]
    print()
    print(f"amqp / mqtt throughput: {int(a[0]) / max(int(m[0]), 1):.2f} at 10 devices, {int(a[1]) / max(int(m[1]), 1):.2f} at 1,000 (goal >= 1)")
    print(f"amqp: 1,000 identities cost {(int(a[6]) - int(a[4])) / 1024:.1f} MB of RSS above the cold start, "
          f"{(int(a[6]) - int(a[8])) / 1024:.1f} MB above the warm 10-device daemon (goal < 10 MB), connected in {a[2]} s (goal < 5 s)")
PY
echo "(work folder: $WORK)"
