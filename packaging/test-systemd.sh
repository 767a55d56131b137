#!/usr/bin/env bash
# packaging/test-systemd.sh — the package under a real systemd: boots a clean Debian 12 container
# (systemd-nspawn, its own network namespace) from the cached debootstrap base, installs the old
# .deb, and checks that the hardened gatehouse.service starts and runs (plugins loaded, site
# subscription on the container's own mosquitto), reloads its rules, upgrades to the new .deb
# (postinst restarts it), refuses a bad configuration without looping, and is stopped and removed
# by purge. Prints PASS/FAIL and "N passed, N failed". Runs as root.
#
#   sudo packaging/test-systemd.sh [OLD.deb NEW.deb]   # default: the two newest builds in out/deb
#
# The machine's PID 1 need not be systemd: the container boots its own. Installs
# systemd-container (for systemd-nspawn) when it is missing. Run packaging/test-install.sh once
# first: it makes the base system cache.
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-systemd: run as root" >&2; exit 2; }

cache=${GATEHOUSE_DEBOOTSTRAP_CACHE:-/var/cache/gatehouse-debootstrap}
base=$cache/bookworm-minbase.tar
source packaging/test-lib.sh

pick_debs test-systemd "$@"
new_version=$(dpkg-deb -f "$new_deb" Version)
[ -f "$base" ] || { echo "test-systemd: no $base; run packaging/test-install.sh first" >&2; exit 2; }
if ! command -v systemd-nspawn >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
        systemd-container >/dev/null
fi
mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -v security | head -1 | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/gatehouse-nspawn.XXXXXX)
nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ]; then
        kill "$nspawn_pid" 2>/dev/null # nspawn powers the container off
        for _ in $(seq 1 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    if grep -q " $root" /proc/self/mountinfo; then
        echo "test-systemd: something is still mounted in $root; not removing it" >&2
    else
        rm -rf "$root" "$root.console.log"
    fi
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/root/debs" "$cache/apt-archives/partial"
cp "$old_deb" "$new_deb" "$root/root/debs/"
nspawn=(systemd-nspawn -q --keep-unit --register=no -D "$root")

step "install $(basename "$old_deb") and mosquitto in the container (not booted yet)"
check "apt-get install" "${nspawn[@]}" --bind="$cache/apt-archives:/var/cache/apt/archives" sh -c \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o APT::Keep-Downloaded-Packages=true \
        /root/debs/$(basename "$old_deb") mosquitto mosquitto-clients >/root/apt.log 2>&1 || { tail -20 /root/apt.log; exit 1; }"

step "boot the container (systemd as its PID 1, a network namespace of its own)"
"${nspawn[@]}" --private-network -b >"$root.console.log" 2>&1 &
nspawn_pid=$!
init=""
for _ in $(seq 1 150); do
    init=$(pgrep -P "$nspawn_pid" | head -1)
    if [ -n "$init" ] &&
        nsenter -t "$init" -m -u -i -n -p systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; then
        break
    fi
    sleep 0.2
done
check "the container booted" test -n "$init"
in_c() { nsenter -t "$init" -m -u -i -n -p env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
wait_active() { for _ in $(seq 1 50); do [ "$(in_c systemctl is-active gatehouse)" = active ] && return 0; sleep 0.2; done; return 1; }
journal() { in_c journalctl -u gatehouse --no-pager -o cat "$@" | grep -v "^Failed to set thread priority"; }

step "gatehouse.service as systemd runs it"
check "gatehouse.service is active" wait_active
sleep 2
journal | grep -E "gatehoused started|subscribed to" | head -2
logged() { journal | grep -q "$1"; }
check "its log says gatehoused started" logged 'gatehoused started'
check "its log has the site subscription" logged 'subscribed to devices/+/messages/events/#'
pid=$(in_c systemctl show gatehouse -p MainPID --value)
runs_confined() {
    [ "$(in_c stat -c %U "/proc/$pid")" = gatehouse ] &&
        [ "$(in_c awk '/CapBnd/ {print $2}' "/proc/$pid/status")" = 0000000000001000 ]
}
check "it runs as user gatehouse, bounding set CAP_NET_ADMIN only" runs_confined
in_c mosquitto_pub -h 127.0.0.1 -q 1 -t 'devices/pump-7/messages/events/' -m '{"t": 1}'
sleep 5
echo "gatehoused RSS at idle under systemd: $(in_c awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB (anonymous $(in_c awk '/RssAnon/ {print $2}' /proc/$pid/status) KiB)"
reloads() { in_c systemctl reload gatehouse && sleep 1 && logged 'rules reloaded'; }
check "systemctl reload checks the rules and the daemon reloads them" reloads
in_c systemd-analyze security gatehouse.service 2>/dev/null | tail -1

step "upgrade to $new_version under systemd: postinst checks, then restarts"
upgrade_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold \
    /root/debs/$(basename "$new_deb") 2>&1")
check "apt-get install $(basename "$new_deb")" test "$(in_c dpkg-query -W -f='${Version}' gatehouse)" = "$new_version"
wait_active
new_pid=$(in_c systemctl show gatehouse -p MainPID --value)
check "the daemon was restarted into the new version (pid $pid → $new_pid)" test "$new_pid" != "$pid" -a "$new_pid" != 0
device_kept() { in_c setpriv --reuid=gatehouse --regid=gatehouse --init-groups gatehouse status | grep -q pump-7; }
check "the device seen before the upgrade is still in the state database" device_kept

step "a configuration that does not check"
in_c cp /etc/gatehouse/gatehouse.toml /root/good.toml
in_c sh -c 'printf "\n[gateway_typo]\nx = 1\n" >> /etc/gatehouse/gatehouse.toml'
reinstall_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confold \
    /root/debs/$(basename "$new_deb") 2>&1")
echo "$reinstall_out" | grep -E "^gatehouse" | head -3
check "postinst does not restart the daemon and says why" sh -c \
    "echo \"\$1\" | grep -q 'was NOT restarted' && [ \"\$2\" = \"\$3\" ]" _ "$reinstall_out" "$new_pid" \
    "$(in_c systemctl show gatehouse -p MainPID --value)"
restart_fails() { ! in_c systemctl restart gatehouse 2>/dev/null; }
check "systemctl restart fails at the ExecStartPre check" restart_fails
sleep 20
in_c systemctl show gatehouse -p ActiveState -p NRestarts | tr '\n' ' '
echo
check "no restart loop: the unit stays failed" test "$(in_c systemctl is-active gatehouse)" = failed
journal -n 40 | grep -m1 "unknown section"
in_c cp /root/good.toml /etc/gatehouse/gatehouse.toml
in_c systemctl reset-failed gatehouse
starts() { in_c systemctl start gatehouse && wait_active; }
check "fixed, it starts again" starts

step "purge while it runs"
check "apt-get purge gatehouse" in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q gatehouse >/root/purge.log 2>&1"
# (a minimal system has no procps: look in /proc)
stopped_and_gone() {
    ! in_c sh -c 'grep -qx gatehoused /proc/[0-9]*/comm 2>/dev/null' &&
        ! in_c test -e /lib/systemd/system/gatehouse.service
}
nothing_left() { ! in_c test -e /etc/gatehouse && ! in_c test -e /var/lib/gatehouse && ! in_c getent passwd gatehouse; }
check "the service is stopped and gone" stopped_and_gone
check "/etc/gatehouse, /var/lib/gatehouse and the user are gone" nothing_left

echo
echo "test-systemd: $passed passed, $failed failed"
((failed == 0))
