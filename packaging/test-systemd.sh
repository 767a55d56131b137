#!/usr/bin/env bash
# packaging/test-systemd.sh — the package under a real systemd: boots a clean Debian 12 container
# (systemd-nspawn, its own network namespace) from the cached debootstrap base, installs the old
# .deb, and checks that the hardened gatehouse.service starts and runs (plugins loaded, site
# subscription on the container's own mosquitto), reloads its rules, upgrades to the new .deb
# (postinst restarts it), is restarted after every crash (five kill -9 within a minute), has the
# container's mosquitto, configured by the package, queue 3,000 messages for it while it is
# stopped, refuses a bad configuration without looping, starts with a [firewall] section (the
# ruleset applied, the sysctls it may not write under the unit a warning each), and is stopped and
# removed by purge.
# Prints PASS/FAIL and "N passed, N failed". Runs as root.
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
chmod 0755 "$root" # the container's /: 0700 (mktemp's, or an old cache's) lets only root use it
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

step "a crash restarts it, for ever: five kill -9 within a minute"
# (RestartSec=10s, no start limit: docs/packaging.md.) Each kill waits until systemd has started
# a new gatehoused; the old unit allowed three starts in two minutes.
main_pid() { in_c systemctl show gatehouse -p MainPID --value; }
wait_new_pid() { # wait_new_pid OLD: a running gatehoused with another pid (30 s at most)
    local now
    for _ in $(seq 1 150); do
        now=$(main_pid)
        [ "$now" != 0 ] && [ "$now" != "$1" ] && [ "$(in_c systemctl is-active gatehouse)" = active ] && return 0
        sleep 0.2
    done
    return 1
}
restarts_before=$(in_c systemctl show gatehouse -p NRestarts --value)
pid=$(main_pid)
first_kill=$SECONDS last_kill=$SECONDS
delays=()
for kill_no in 1 2 3 4 5; do
    [ "$pid" -gt 1 ] 2>/dev/null || break # never kill -9 0 (this script's own process group)
    last_kill=$SECONDS
    in_c sh -c "kill -9 $pid"
    wait_new_pid "$pid" || break
    delays+=($((SECONDS - last_kill)))
    pid=$(main_pid)
    sleep 1
done
kills_span=$((last_kill - first_kill))
restarts_after=$(in_c systemctl show gatehouse -p NRestarts --value)
echo "kill -9 five times: ${kills_span}s from the first kill to the last; kill to new gatehoused: ${delays[*]} s;" \
    "NRestarts $restarts_before -> $restarts_after"
check "five kill -9 within a minute ($kill_no done, ${kills_span}s apart)" test "$kill_no" = 5 -a "$kills_span" -le 60
check "systemd restarted it after each of them (NRestarts +5)" test "$restarts_after" = $((restarts_before + 5))
sleep 3
still_running() { [ "$(in_c systemctl is-active gatehouse)" = active ] && [ "$(main_pid)" = "$1" ] && in_c test -d "/proc/$1"; }
check "gatehoused is running afterwards (pid $pid)" still_running "$pid"
journal | grep -m1 "Scheduled restart job" || true

step "the site broker the package configures queues for gatehoused while it is stopped"
# The container's own mosquitto.service reads /etc/mosquitto/conf.d/gatehouse-queue.conf, which
# the package installed. 3,000 QoS 1 messages is three times mosquitto's default queue a client.
check "/etc/mosquitto/conf.d/gatehouse-queue.conf is the package's conffile" in_c sh -c \
    'dpkg-query -W -f="\${Conffiles}" gatehouse | grep -q /etc/mosquitto/conf.d/gatehouse-queue.conf'
in_c systemctl stop gatehouse
in_c sh -c 'seq 1 3000 | mosquitto_pub -h 127.0.0.1 -q 1 -l -t devices/queue-1/messages/events/'
in_c systemctl start gatehouse
messages_in() {
    in_c setpriv --reuid=gatehouse --regid=gatehouse --init-groups gatehouse status | awk '$1 == "queue-1" {print $5}'
}
for _ in $(seq 1 60); do [ "$(messages_in)" = 3000 ] && break; sleep 0.5; done
got=$(messages_in)
check "all 3,000 published while it was stopped reached gatehoused after its start (${got:-none})" test "$got" = 3000
no_drops() { ! in_c grep -q "messages are being dropped" /var/log/mosquitto/mosquitto.log; }
check "mosquitto dropped none of them" no_drops

step "a configuration that does not check"
in_c cp /etc/gatehouse/gatehouse.toml /root/good.toml
running_pid=$(main_pid)
in_c sh -c 'printf "\n[gateway_typo]\nx = 1\n" >> /etc/gatehouse/gatehouse.toml'
reinstall_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confold \
    /root/debs/$(basename "$new_deb") 2>&1")
echo "$reinstall_out" | grep -E "^gatehouse" | head -3
check "postinst does not restart the daemon and says why" sh -c \
    "echo \"\$1\" | grep -q 'was NOT restarted' && [ \"\$2\" = \"\$3\" ]" _ "$reinstall_out" "$running_pid" \
    "$(in_c systemctl show gatehouse -p MainPID --value)"
restart_fails() { ! in_c systemctl restart gatehouse 2>/dev/null; }
check "systemctl restart fails at the ExecStartPre check" restart_fails
restarts_before=$(in_c systemctl show gatehouse -p NRestarts --value)
sleep 25 # two and a half RestartSec
in_c systemctl show gatehouse -p ActiveState -p Result -p NRestarts | tr '\n' ' '
echo
check "no restart loop: the unit stays failed" test "$(in_c systemctl is-active gatehouse)" = failed
check "... and systemd did not start it again (NRestarts still $restarts_before)" \
    test "$(in_c systemctl show gatehouse -p NRestarts --value)" = "$restarts_before"
journal -n 40 | grep -m1 "unknown section"
in_c cp /root/good.toml /etc/gatehouse/gatehouse.toml
in_c systemctl reset-failed gatehouse
starts() { in_c systemctl start gatehouse && wait_active; }
check "fixed, it starts again" starts

step "gatehoused with [firewall] starts under the packaged unit (ProcSubset=pid, ProtectKernelTunables=yes)"
# The container's own network namespace: the ruleset goes there. Its sysctls are the kernel's
# defaults (rp_filter 0, accept_ra 1, ...), which gatehoused cannot write under the unit: each
# is a warning, the ruleset applies, the daemon runs.
in_c cp /etc/gatehouse/gatehouse.toml /root/good.toml
in_c sh -c 'printf "\n[firewall]\nplugin = \"nftables\"\nallow = [{ port = 22, comment = \"ssh\" }]\nsite_interface = \"lo\"\n" >> /etc/gatehouse/gatehouse.toml'
firewall_starts() { in_c systemctl restart gatehouse && wait_active && sleep 2 && logged 'firewall applied:'; }
check "systemctl restart with [firewall]: active, the ruleset applied" firewall_starts
journal | grep -m2 -E "firewall applied:|not applied:" | cut -c1-220
check "each sysctl it could not write is a warning naming it" logged 'host setting net.ipv4.conf.all.rp_filter = 1 (rp_filter) not applied'
check "the daemon is still running (pid $(main_pid))" test "$(in_c systemctl is-active gatehouse)" = active
table_present() { in_c gatehouse firewall status -c /etc/gatehouse/gatehouse.toml | grep -q '"present" : true'; }
check "table inet gatehouse is in place" table_present
shown_not_applied() { in_c gatehouse status -c /etc/gatehouse/gatehouse.toml | grep -q 'not applied at the last apply'; }
check "gatehouse status shows the settings not applied" shown_not_applied
in_c gatehouse firewall remove -c /etc/gatehouse/gatehouse.toml >/dev/null
in_c cp /root/good.toml /etc/gatehouse/gatehouse.toml
in_c systemctl restart gatehouse
wait_active

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
