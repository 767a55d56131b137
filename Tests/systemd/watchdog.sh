#!/usr/bin/env bash
# Tests/systemd/watchdog.sh — gatehoused's systemd health under a real systemd: boots a Debian 12
# container (systemd-nspawn, from the debootstrap base packaging/test-install.sh caches) and runs
# this build's gatehoused (a debug build: it has the wedge knob) as a Type=notify unit with
# WatchdogSec=3s and a site broker in the container. Checks that
#   - `systemctl start` returns only after READY=1, with the status text gatehoused sends;
#   - its log lines reach journald with structured fields (GATEHOUSE_…);
#   - left alone it keeps pinging the watchdog (no restart in 12 s);
#   - with its relay loop wedged on purpose (GATEHOUSE_DEBUG_WEDGE_RELAY_AFTER) it stops pinging,
#     says which loop stalled, and systemd kills and restarts it.
# Prints PASS/FAIL and "N passed, N failed" (docs/operations.md, "systemd"); NOT RUN and why when
# it cannot run here (not root, no debootstrap base). Runs as root.
#
#   sudo Tests/systemd/watchdog.sh [BIN]   # BIN: the debug build folder (swift build --show-bin-path)
#
# The container uses the host's Swift runtime and libraries, bind-mounted read-only (the host is
# the same Debian release), so nothing is installed in it.
set -uo pipefail
cd "$(dirname "$0")/../.."
skip() {
    echo "systemd watchdog test: NOT RUN — $1"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "systemd-nspawn needs root"
BIN=${1:-$(swift build --show-bin-path)}
cache=${GATEHOUSE_DEBOOTSTRAP_CACHE:-/var/cache/gatehouse-debootstrap}
base=$cache/bookworm-minbase.tar
[ -f "$base" ] || skip "no $base (packaging/test-install.sh makes it)"
[ -x "$BIN/gatehoused" ] && [ -f "$BIN/libgatehouse-mqtt.so" ] ||
    skip "no gatehoused and libgatehouse-mqtt.so in $BIN (swift build)"
command -v systemd-nspawn >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null

passed=0 failed=0
step() { printf '\n== %s\n' "$*"; }
check() { # check "what" command...
    local what=$1
    shift
    if "$@"; then echo "PASS: $what"; passed=$((passed + 1)); else echo "FAIL: $what"; failed=$((failed + 1)); fi
}

root=$(mktemp -d /var/tmp/gatehouse-watchdog.XXXXXX)
# A copy of the package cache of its own: packaging/test-systemd.sh may hold the shared one's lock.
apt_cache=$(mktemp -d /var/tmp/gatehouse-watchdog-apt.XXXXXX)
nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ]; then
        kill "$nspawn_pid" 2>/dev/null # nspawn powers the container off
        for _ in $(seq 1 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$nspawn_pid" 2>/dev/null
    fi
    rm -rf "$apt_cache"
    if grep -q " $root" /proc/self/mountinfo; then
        echo "watchdog.sh: something is still mounted in $root; not removing it" >&2
    else
        rm -rf "$root" "$root.console.log"
    fi
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
chmod 0755 "$root"
mkdir -p "$root/gh" "$root/hostlib" "$root/opt/swift" "$root/etc/gatehouse-test" "$root/var/lib/gatehouse-test"
head -c 32 /dev/urandom | base64 >"$root/etc/gatehouse-test/group.key"
chmod 600 "$root/etc/gatehouse-test/group.key"
cat >"$root/etc/gatehouse-test/gatehouse.toml" <<'TOML'
[gateway]
state_db = "/var/lib/gatehouse-test/state.db"
plugin_dir = "/gh"
[identity]
group_key_file = "/etc/gatehouse-test/group.key"
[site]
plugin = "mqtt"
port = 1883
[hub]
plugin = "mqtt"
hostname = "hub.invalid"
port = 8883
TOML
libs="LD_LIBRARY_PATH=/opt/swift/usr/lib/swift/linux:/hostlib"
cat >"$root/etc/systemd/system/site-broker.service" <<UNIT
[Service]
Environment=$libs
ExecStart=/hostbin/mosquitto -p 1883
UNIT
unit() { # unit EXTRA_ENVIRONMENT: the gatehoused unit, as the package's in what matters here
    cat >"$root/etc/systemd/system/gh-test.service" <<UNIT
[Unit]
After=site-broker.service
Requires=site-broker.service
[Service]
Type=notify
NotifyAccess=main
WatchdogSec=3s
Restart=on-abnormal
RestartSec=1s
TimeoutStartSec=60s
# As the package's unit: what a watchdog abort may take before SIGKILL (Swift's backtracer writes
# the threads' stacks to the journal meanwhile).
TimeoutStopSec=30s
Environment=$libs $1
ExecStart=/gh/gatehoused -c /etc/gatehouse-test/gatehouse.toml
UNIT
}
unit ""
nspawn=(systemd-nspawn -q --keep-unit --register=no -D "$root" --bind-ro="$BIN:/gh" --bind-ro=/opt/swift:/opt/swift
    --bind-ro=/usr/lib/x86_64-linux-gnu:/hostlib --bind-ro=/usr/sbin:/hostbin)

step "install systemd in the container (not booted yet; the debootstrap base has none)"
mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -v security | head -1 | awk '{print $2}')
echo "deb ${mirror:-http://deb.debian.org/debian} bookworm main" >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp -a "$cache/apt-archives/." "$apt_cache/" 2>/dev/null
mkdir -p "$apt_cache/partial"
rm -f "$apt_cache/lock"
installed() {
    "${nspawn[@]}" --bind="$apt_cache:/var/cache/apt/archives" sh -c \
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o APT::Keep-Downloaded-Packages=true \
            systemd systemd-sysv >/root/apt.log 2>&1 || { tail -20 /root/apt.log; exit 1; }"
}
check "apt-get install systemd" installed

step "boot the container (systemd as its PID 1)"
"${nspawn[@]}" --private-network -b >"$root.console.log" 2>&1 &
nspawn_pid=$!
init=""
for _ in $(seq 1 300); do
    init=$(pgrep -P "$nspawn_pid" | head -1)
    if [ -n "$init" ] &&
        nsenter -t "$init" -m -u -i -n -p systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; then
        break
    fi
    sleep 0.2
done
check "the container booted" test -n "$init"
[ -n "$init" ] || { printf '\n%d passed, %d failed (no container)\n' "$passed" "$failed"; exit 1; }
in_c() { nsenter -t "$init" -m -u -i -n -p env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
show() { in_c systemctl show gh-test -p "$1" --value; }

step "Type=notify: systemctl start returns once gatehoused said READY=1"
start_ok() { timeout 90 nsenter -t "$init" -m -u -i -n -p systemctl start gh-test; }
check "systemctl start gh-test" start_ok
check "active after the start job (READY=1 came)" test "$(in_c systemctl is-active gh-test)" = active
status_text=$(show StatusText)
echo "status text: $status_text"
check "the status text is gatehoused's" grep -q "site link up" <<<"$status_text"
check "the watchdog is armed (WatchdogUSec=3s)" test "$(show WatchdogUSec)" = 3s

step "journald: log lines with structured fields"
sleep 1
fields() { in_c journalctl -u gh-test -o verbose --no-pager MESSAGE="site link changed" | grep -q 'GATEHOUSE_STATE=up'; }
check "the site-link line carries GATEHOUSE_STATE=up" fields
in_c journalctl -u gh-test -o verbose --no-pager MESSAGE="site link changed" | grep -E "PRIORITY|GATEHOUSE_" | head -6

step "left alone it keeps pinging: no restart in 12 s"
pid=$(show MainPID)
sleep 12
check "same pid, no restart (NRestarts $(show NRestarts))" test "$(show MainPID)" = "$pid" -a "$(show NRestarts)" = 0

step "the relay loop wedged on purpose: no more pings, systemd restarts it"
unit "GATEHOUSE_DEBUG_WEDGE_RELAY_AFTER=4"
in_c systemctl daemon-reload
in_c systemctl restart gh-test
wedged_pid=$(show MainPID)
wedged_at=$SECONDS
restarted() { # within 60 s: 4 s to the wedge, 3 s of watchdog, the abort (30 s at most), 1 s
    for _ in $(seq 1 300); do
        local now
        now=$(show MainPID)
        [ "$(show NRestarts)" -ge 1 ] && [ "$now" != 0 ] && [ "$now" != "$wedged_pid" ] && return 0
        sleep 0.2
    done
    return 1
}
check "restarted by systemd after the wedge (pid $wedged_pid → $(show MainPID))" restarted
echo "restarted $((SECONDS - wedged_at)) s after the start of the wedged run"
journal=$(in_c journalctl -u gh-test --no-pager -o cat)
check "gatehoused said which loop stalled" grep -q "a loop is stalled" <<<"$journal"
in_c journalctl -u gh-test --no-pager -o verbose MESSAGE="a loop is stalled: no watchdog ping until it beats again" |
    grep -m1 GATEHOUSE_LOOPS
check "systemd saw the watchdog time out" grep -q "Watchdog timeout" <<<"$(in_c journalctl --no-pager -o cat -u gh-test _PID=1)"
in_c journalctl --no-pager -o cat _PID=1 | grep -E "gh-test.service: " | tail -8

printf '\n%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
