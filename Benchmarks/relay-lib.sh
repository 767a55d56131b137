# What the relay benchmarks share (relay-bench.sh, relay-metrics-bench.sh, relay-rules-bench.sh):
# the release build, a TLS hub broker and a plain site broker with the same settings, the
# gatehoused configuration between them, and gatehoused's CPU time. Sourced after scripts/lib.sh.

# relay_build PRODUCT... — builds the products (release) unless BIN names binaries built before;
# sets BIN.
relay_build() {
    if [ -n "${BIN:-}" ]; then
        echo "== using the binaries in $BIN"
        return
    fi
    echo "== building (release)"
    local product
    for product in "$@"; do swift build -c release -q --product "$product"; done
    BIN=$(swift build -c release --show-bin-path)
}

# The brokers' settings: no persistence, no queue limit, a deep in-flight window, so the brokers
# never throttle what is measured.
RELAY_BROKER_COMMON="allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 500
max_connections -1"

# relay_brokers WORK — starts the hub broker (TLS, the hub's stand-in) and the site broker; sets
# HUB_PORT, SITE_PORT, hub_PID, site_PID and writes WORK/group.key. Call relay_cleanup on exit.
relay_brokers() {
    local work=$1
    HUB_PORT=$(free_port)
    SITE_PORT=$(free_port)
    make_certs "$work"
    start_broker hub "listener $HUB_PORT 127.0.0.1
cafile $work/ca.crt
certfile $work/server.crt
keyfile $work/server.key
$RELAY_BROKER_COMMON" "$work"
    start_broker site "listener $SITE_PORT 127.0.0.1
$RELAY_BROKER_COMMON" "$work"
    wait_port "$HUB_PORT"
    wait_port "$SITE_PORT"
    head -c 32 /dev/urandom | base64 >"$work/group.key"
    chmod 600 "$work/group.key"
}

# relay_config WORK GATEWAY_LINES OUTBOX_LINES TAIL — gatehoused between the two brokers
# (scripts/lib.sh's gatehouse_config), logging warnings only, 64 messages in flight a device.
relay_config() {
    gatehouse_config "$1" "log_level = \"warning\"
$2" "inflight_per_device = 64
$3" "$4"
}

# cpu_ticks PID — user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# relay_cleanup PID... — stops what a benchmark started (the brokers and any PIDs given).
relay_cleanup() {
    local pid
    for pid in "$@" ${hub_PID:-} ${site_PID:-}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
