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
install_tools test-systemd systemd-container dpkg-dev
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
        /root/debs/$(basename "$old_deb") mosquitto mosquitto-clients sqlite3 >/root/apt.log 2>&1 || { tail -20 /root/apt.log; exit 1; }"

step "boot the container (systemd as its PID 1, a network namespace of its own)"
# boot_container: boots it and sets $init (its PID 1 as seen here); power_off: shuts it down (nspawn
# powers the container off on SIGTERM). The two together are a reboot: /run and the processes go,
# the disk stays.
boot_container() {
    "${nspawn[@]}" --private-network -b >>"$root.console.log" 2>&1 &
    nspawn_pid=$!
    init=""
    for _ in $(seq 1 150); do
        init=$(pgrep -P "$nspawn_pid" | head -1)
        if [ -n "$init" ] &&
            nsenter -t "$init" -m -u -i -n -p systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}
power_off() {
    kill "$nspawn_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    ! kill -0 "$nspawn_pid" 2>/dev/null && nspawn_pid=""
}
boot_container
check "the container booted" test -n "$init"
in_c() { nsenter -t "$init" -m -u -i -n -p env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
wait_active() { for _ in $(seq 1 50); do [ "$(in_c systemctl is-active gatehouse)" = active ] && return 0; sleep 0.2; done; return 1; }
journal() { in_c journalctl -u gatehouse --no-pager -o cat "$@" | grep -v "^Failed to set thread priority"; }

step "gatehouse.service as systemd runs it"
check "gatehouse.service is active" wait_active
sleep 2
journal | grep -E "gatehoused started|subscribed to" | head -2
# (grep reads it all: with pipefail, a grep -q that stops at the first match leaves journalctl a
# SIGPIPE, and a long journal then "fails" the check.)
logged() { journal | grep -- "$1" >/dev/null; }
check "its log says gatehoused started" logged 'gatehoused started'
check "its log has the site subscription" logged 'subscribed to devices/+/messages/events/#'
pid=$(in_c systemctl show gatehouse -p MainPID --value)
runs_confined() {
    [ "$(in_c stat -c %U "/proc/$pid")" = gatehouse ] &&
        [ "$(in_c awk '/CapBnd/ {print $2}' "/proc/$pid/status")" = 0000000000001000 ]
}
check "it runs as user gatehouse, bounding set CAP_NET_ADMIN only" runs_confined
# No [firewall]: it gave CAP_NET_ADMIN up (the unit grants it for the firewall plugin only).
# capabilities PID: the distinct CapPrm/CapEff/CapAmb values over all of its threads (Linux keeps
# capabilities per thread).
capabilities() {
    in_c sh -c "cat /proc/$1/task/*/status" | awk '$1 ~ /^Cap(Prm|Eff|Amb):/ {print $1 $2}' | sort -u | tr '\n' ' '
}
echo "capabilities without [firewall], all $(in_c sh -c "ls /proc/$pid/task | wc -l") threads: $(capabilities "$pid")"
check "without [firewall] none of its threads holds a capability (CapPrm, CapEff, CapAmb all 0)" \
    test "$(capabilities "$pid")" = "CapAmb:0000000000000000 CapEff:0000000000000000 CapPrm:0000000000000000 "
in_c mosquitto_pub -h 127.0.0.1 -q 1 -t 'devices/pump-7/messages/events/' -m '{"t": 1}'
sleep 5
echo "gatehoused RSS at idle under systemd: $(in_c awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB (anonymous $(in_c awk '/RssAnon/ {print $2}' /proc/$pid/status) KiB)"
reloads() { in_c systemctl reload gatehouse && sleep 1 && logged 'rules reloaded'; }
check "systemctl reload checks the rules and the daemon reloads them" reloads
in_c systemd-analyze security gatehouse.service 2>/dev/null | tail -1

step "upgrade to $new_version under systemd: postinst checks, then restarts"
upgrade_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/debs/$(basename "$new_deb") </dev/null 2>&1")
check "apt-get install $(basename "$new_deb")" test "$(in_c dpkg-query -W -f='${Version}' gatehouse)" = "$new_version"
wait_active
new_pid=$(in_c systemctl show gatehouse -p MainPID --value)
check "the daemon was restarted into the new version (pid $pid → $new_pid)" test "$new_pid" != "$pid" -a "$new_pid" != 0
device_kept() { in_c setpriv --reuid=gatehouse --regid=gatehouse --init-groups gatehouse status | grep pump-7 >/dev/null; }
check "the device seen before the upgrade is still in the state database" device_kept

step "an upgrade whose check fails: apt fails, the old daemon serves on, the database is untouched"
# A release that refuses this gateway's configuration: $new_version repacked as $new_version+refuses
# with its mqtt plugin renamed (a release that drops or renames the plugin [site] names). Its
# postinst check fails on [site] plugin = "mqtt".
refusing_version=$new_version+refuses
refusing_deb=$root/root/debs/gatehouse_${refusing_version}_amd64.deb
variant=$(mktemp -d)
dpkg-deb -R "$new_deb" "$variant"
sed -i "s/^Version: .*/Version: $refusing_version/" "$variant/DEBIAN/control"
mv "$variant/usr/lib/gatehouse/plugins/libgatehouse-mqtt.so" "$variant/usr/lib/gatehouse/plugins/libgatehouse-mqtt5.so"
sed -i 's|plugins/libgatehouse-mqtt.so$|plugins/libgatehouse-mqtt5.so|' "$variant/DEBIAN/md5sums"
dpkg-deb -Zgzip -z1 -b "$variant" "$refusing_deb" >/dev/null
rm -rf "$variant"
migrations() { in_c sqlite3 /var/lib/gatehouse/state.db 'SELECT group_concat(identifier, " ") FROM grdb_migrations'; }
migrations_before=$(migrations)
serving_pid=$(in_c systemctl show gatehouse -p MainPID --value)
refused_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/debs/$(basename "$refusing_deb") </dev/null 2>&1")
refused_rc=$?
echo "$refused_out" | grep -E "^gatehouse(d)?:|^E:" | cut -c1-200 | head -8
check "apt-get install fails (exit $refused_rc) and dpkg leaves gatehouse half-configured" \
    test "$refused_rc" != 0 -a "$(in_c dpkg-query -W -f='${Status}' gatehouse)" = "install ok half-configured"
check "the message names the cause (file, line, [site] plugin)" \
    grep -q '/usr/share/gatehouse/gatehouse.toml:[0-9]*: \[site\] plugin = "mqtt"' <<<"$refused_out"
check "... and the way back (the previous version, $new_version)" \
    grep -q "the way back: reinstall the previous version (apt-get install gatehouse=$new_version" <<<"$refused_out"
check "the previous daemon was not restarted (pid $serving_pid)" \
    test "$(in_c systemctl show gatehouse -p MainPID --value)" = "$serving_pid" -a "$(in_c systemctl is-active gatehouse)" = active
in_c mosquitto_pub -h 127.0.0.1 -q 1 -t 'devices/after-refusal/messages/events/' -m '{"t": 2}'
serves() {
    for _ in $(seq 1 25); do
        in_c setpriv --reuid=gatehouse --regid=gatehouse --init-groups gatehouse status 2>/dev/null | grep -- "$1" >/dev/null && return 0
        sleep 0.2
    done
    return 1
}
check "it still serves: a device's message sent now reaches it" serves after-refusal
check "nothing was migrated ($migrations_before)" test "$(migrations)" = "$migrations_before"

step "reboot after the failed upgrade: the unit stays failed, once, and says why"
power_off
check "the container powered off" test -z "$nspawn_pid"
boot_container
check "the container booted again" test -n "$init"
for _ in $(seq 1 50); do [ "$(in_c systemctl is-active gatehouse)" = failed ] && break; sleep 0.2; done
check "gatehouse.service is failed: $refusing_version's ExecStartPre check refuses the configuration" \
    test "$(in_c systemctl is-active gatehouse)" = failed
check "the journal names the cause" logged '\[site\] plugin = "mqtt"'
sleep 12 # past RestartSec
check "... and systemd does not retry it (NRestarts 0)" test "$(in_c systemctl show gatehouse -p NRestarts --value)" = 0
check "the database is as before" test "$(migrations)" = "$migrations_before"

step "the way back: reinstall the previous version ($new_version)"
back_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades /root/debs/$(basename "$new_deb") </dev/null 2>&1")
back_rc=$?
echo "$back_out" | grep -E "^gatehouse|^E:" | head -3
check "apt-get install --allow-downgrades $(basename "$new_deb") completes (exit $back_rc)" test "$back_rc" = 0
check "gatehouse $new_version is configured" test "$(in_c dpkg-query -W -f='${Status} ${Version}' gatehouse)" = "install ok installed $new_version"
check "postinst started the failed unit: it is active again" wait_active
both_devices() { serves pump-7 && serves after-refusal; }
check "the devices seen before are all there" both_devices
check "nothing was migrated by any of it" test "$(migrations)" = "$migrations_before"

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
# The container's own mosquitto.service reads /etc/mosquitto/conf.d/gatehouse-queue.conf, the
# package's symlink to its file in /usr/share/gatehouse/site-broker. 3,000 QoS 1 messages is
# three times mosquitto's default queue a client.
check "/etc/mosquitto/conf.d/gatehouse-queue.conf is the package's file (a symlink, not a conffile)" in_c sh -c \
    'test "$(readlink /etc/mosquitto/conf.d/gatehouse-queue.conf)" = /usr/share/gatehouse/site-broker/gatehouse-queue.conf &&
        dpkg -S /etc/mosquitto/conf.d/gatehouse-queue.conf | grep -q "^gatehouse:"'
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
running_pid=$(main_pid)
in_c sh -c 'printf "[gateway_typo]\nx = 1\n" >/etc/gatehouse/gatehouse.d/70-typo.toml'
reinstall_out=$(in_c sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall \
    /root/debs/$(basename "$new_deb") </dev/null 2>&1")
echo "$reinstall_out" | grep -E "^gatehouse" | head -3
check "postinst fails the configuration, does not restart the daemon, and says why" sh -c \
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
in_c rm /etc/gatehouse/gatehouse.d/70-typo.toml
fixed() { in_c dpkg --configure gatehouse >/dev/null && wait_active; }
check "fixed, dpkg --configure gatehouse completes and its postinst starts the failed unit again" fixed

step "gatehoused with [firewall] starts under the packaged unit (ProcSubset=pid, ProtectKernelTunables=yes)"
# The container's own network namespace: the ruleset goes there. Its sysctls are the kernel's
# defaults (rp_filter 0, accept_ra 1, ...), which gatehoused cannot write under the unit: each
# is a warning, the ruleset applies, the daemon runs.
in_c sh -c 'printf "[firewall]\nplugin = \"nftables\"\nallow = [{ port = 22, comment = \"ssh\" }]\nsite_interface = \"lo\"\n" >/etc/gatehouse/gatehouse.d/80-firewall.toml'
firewall_starts() { in_c systemctl restart gatehouse && wait_active && sleep 2 && logged 'firewall applied:'; }
check "systemctl restart with [firewall]: active, the ruleset applied" firewall_starts
journal | grep -m2 -E "firewall applied:|not applied:" | cut -c1-220
check "each sysctl it could not write is a warning naming it" logged 'host setting net.ipv4.conf.all.rp_filter = 1 (rp_filter) not applied'
check "the daemon is still running (pid $(main_pid))" test "$(in_c systemctl is-active gatehouse)" = active
echo "capabilities with [firewall]: $(capabilities "$(main_pid)")"
check "with [firewall] it keeps CAP_NET_ADMIN (CapEff 0000000000001000, every thread)" \
    test "$(capabilities "$(main_pid)")" = "CapAmb:0000000000001000 CapEff:0000000000001000 CapPrm:0000000000001000 "
table_present() { in_c gatehouse firewall status -c /etc/gatehouse/gatehouse.toml | grep -E '"present" ?: true' >/dev/null; }
check "table inet gatehouse is in place" table_present
shown_not_applied() { in_c gatehouse status -c /etc/gatehouse/gatehouse.toml | grep 'not applied at the last apply' >/dev/null; }
check "gatehouse status shows the settings not applied" shown_not_applied
in_c gatehouse firewall remove -c /etc/gatehouse/gatehouse.toml >/dev/null
in_c rm /etc/gatehouse/gatehouse.d/80-firewall.toml
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
