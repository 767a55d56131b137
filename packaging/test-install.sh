#!/usr/bin/env bash
# packaging/test-install.sh — installs gatehouse's .deb in a clean Debian 12 chroot (debootstrap,
# no Swift toolchain), runs it against a local mosquitto, upgrades it to a newer build, and purges
# it. Prints each step with PASS/FAIL and ends with "N passed, N failed". Runs as root.
#
#   scripts/build-deb 0.1.0-1 && scripts/build-deb 0.1.0-2
#   sudo packaging/test-install.sh [OLD.deb NEW.deb]   # default: the two newest builds in out/deb
#
# The base system is cached in /var/cache/gatehouse-debootstrap (GATEHOUSE_DEBOOTSTRAP_CACHE) so
# a re-run takes about a minute plus the package downloads (which apt caches there too).
# KEEP=1 leaves the chroot in place for a look.
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-install: run as root (chroot, mount)" >&2; exit 2; }

cache=${GATEHOUSE_DEBOOTSTRAP_CACHE:-/var/cache/gatehouse-debootstrap}
base=$cache/bookworm-minbase.tar
source packaging/test-lib.sh
# What it runs on the host: a fresh Debian 12 has none of debootstrap, dpkg-dev (the local
# repository for the unattended upgrade) and systemd-analyze's package.
install_tools test-install debootstrap dpkg-dev systemd python3

pick_debs test-install "$@"
old_version=$(dpkg-deb -f "$old_deb" Version)
new_version=$(dpkg-deb -f "$new_deb" Version)
devhub_deb=$(dirname "$old_deb")/gatehouse-devhub_${old_version}_amd64.deb
dpkg --compare-versions "$new_version" gt "$old_version" ||
    { echo "test-install: $new_deb ($new_version) is not newer than $old_deb ($old_version)" >&2; exit 2; }

# The Debian mirror this machine's apt uses.
mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -v security | head -1 | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}

step "the packages"
for deb in "$old_deb" "$new_deb"; do
    echo "$(basename "$deb"): $(stat -c %s "$deb") bytes ($(du -h "$deb" | cut -f1)), Installed-Size $(dpkg-deb -f "$deb" Installed-Size) KiB"
done
echo "Depends: $(dpkg-deb -f "$new_deb" Depends)"
check "no libcurl (FoundationNetworking) in Depends" sh -c '! dpkg-deb -f "$1" Depends | grep -q libcurl' _ "$new_deb"
check "one binary: /usr/bin/gatehouse is a link to /usr/sbin/gatehoused" \
    sh -c 'dpkg-deb -c "$1" | grep -q "./usr/bin/gatehouse -> ../sbin/gatehoused"' _ "$new_deb"

step "systemd unit: systemd-analyze verify and security --offline=true (host)"
unit_dir=$(mktemp -d)
dpkg-deb -x "$new_deb" "$unit_dir"
unit=$unit_dir/lib/systemd/system/gatehouse.service
[ -f "$unit" ] || unit=$unit_dir/usr/lib/systemd/system/gatehouse.service
# verify resolves ExecStart= on this host: point it at the package's own binaries.
sed -e "s|/usr/sbin/gatehoused|$unit_dir/usr/sbin/gatehoused|g" -e "s|/usr/bin/gatehouse |$unit_dir/usr/bin/gatehouse |" \
    "$unit" >"$unit_dir/gatehouse.service"
verify_out=$(MANPATH=$unit_dir/usr/share/man systemd-analyze verify --man=no "$unit_dir/gatehouse.service" 2>&1)
echo "${verify_out:-(no complaints)}"
check "systemd-analyze verify gatehouse.service" test -z "$verify_out"
security_out=$(systemd-analyze security --offline=true "$unit" 2>&1)
echo "$security_out" | grep -E '^✗|Overall'
score=$(echo "$security_out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
check "exposure score ${score:-?} <= 2.5" awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.5) }'

step "a clean Debian 12 chroot (debootstrap, $mirror)"
mkdir -p "$cache/apt-archives/partial"
if [ ! -f "$base" ]; then
    fresh=$(mktemp -d /var/tmp/gatehouse-debootstrap.XXXXXX)
    chmod 0755 "$fresh" # it becomes the system's /; mktemp makes it 0700
    if debootstrap --variant=minbase bookworm "$fresh" "$mirror" >"$cache/debootstrap.log" 2>&1; then
        tar -C "$fresh" --numeric-owner -cf "$base.part" . && mv "$base.part" "$base"
    else
        tail -5 "$cache/debootstrap.log"
        fail "debootstrap bookworm from $mirror (log: $cache/debootstrap.log)"
    fi
    rm -rf "$fresh"
fi
[ -f "$base" ] || { echo "$passed passed, $failed failed"; exit 1; }
root=$(mktemp -d /var/tmp/gatehouse-chroot.XXXXXX)
tar -C "$root" -xf "$base"
chmod 0755 "$root" # (a cache made before the chmod above has a 0700 /: only root could use it)
mounts=()
# mount_in OPTIONS... SOURCE PATH: mounts SOURCE on PATH inside the chroot (never outside it).
mount_in() {
    local target=$root${*: -1}
    [[ $target == "$root"/* ]] || return 1
    mkdir -p "$target" && mount "${@:1:$#-1}" "$target" && mounts=("$target" "${mounts[@]}")
}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null; done
    rm -rf "$unit_dir"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "test-install: chroot kept in $root"
    elif grep -q " $root/" /proc/self/mountinfo; then
        echo "test-install: something is still mounted in $root; not removing it" >&2
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT
mount_in --bind /dev /dev &&
    mount_in -t proc proc /proc &&
    mount_in -t sysfs sys /sys &&
    mount_in --bind "$cache/apt-archives" /var/cache/apt/archives ||
    { fail "mounts in the chroot"; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
# No daemon of a package starts by itself in the chroot; the test starts what it needs.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/tmp/debs" && cp "$old_deb" "$new_deb" "$root/tmp/debs/"
[ -f "$devhub_deb" ] && cp "$devhub_deb" "$root/tmp/debs/"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
as_gatehouse() { chroot --userspec=gatehouse:gatehouse --groups=tss "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
apt_q=(-y -q -o Dpkg::Use-Pty=0 -o APT::Keep-Downloaded-Packages=true)
check "no Swift in the chroot" in_root sh -c '! command -v swift && ! ls /opt/swift 2>/dev/null && ! ldconfig -p | grep -q libswiftCore'
check "apt-get update in the chroot" in_root apt-get update -q -o Dpkg::Use-Pty=0

step "install $(basename "$old_deb") with its dependencies (and mosquitto, a site broker)"
debs=("/tmp/debs/$(basename "$old_deb")")
[ -f "$devhub_deb" ] && debs+=("/tmp/debs/$(basename "$devhub_deb")")
check "apt-get install ${debs[*]} mosquitto mosquitto-clients sqlite3" \
    in_root apt-get install "${apt_q[@]}" "${debs[@]}" mosquitto mosquitto-clients sqlite3
check "gatehoused --version" in_root /usr/sbin/gatehoused --version
check "gatehouse rules check /etc/gatehouse/rules.d" in_root /usr/bin/gatehouse rules check /etc/gatehouse/rules.d
[ -f "$devhub_deb" ] && check "gatehouse-devhub --help" in_root sh -c '/usr/bin/gatehouse-devhub --help >/dev/null'
echo "ldd /usr/sbin/gatehoused (Swift part):"
in_root ldd /usr/sbin/gatehoused | grep -E 'swift|Foundation|dispatch|not found' | head -8
check "every library of gatehoused, gatehouse and the plugins resolves" \
    in_root sh -c '! ldd /usr/sbin/gatehoused /usr/bin/gatehouse /usr/lib/gatehouse/plugins/*.so | grep "not found"'
check "user gatehouse exists, in group tss" in_root sh -c 'id gatehouse && id -nG gatehouse | grep -qw tss'
check "/var/lib/gatehouse is 0750 gatehouse:gatehouse" \
    test "$(in_root stat -c '%a %U:%G' /var/lib/gatehouse)" = "750 gatehouse:gatehouse"
echo "conffiles: $(in_root dpkg-query -W -f='${Conffiles}' gatehouse | awk '{print $1}' | tr '\n' ' ')"
check "no conffile in /etc/gatehouse (nothing there to ask about on an upgrade)" \
    in_root sh -c '! dpkg-query -W -f="\${Conffiles}" gatehouse | grep -q /etc/gatehouse/'
check "the defaults are in /usr/share/gatehouse/gatehouse.toml; /etc/gatehouse/gatehouse.toml does not exist" \
    in_root sh -c 'test -f /usr/share/gatehouse/gatehouse.toml && ! test -e /etc/gatehouse/gatehouse.toml &&
        test -d /etc/gatehouse/gatehouse.d'
check "the default rule set was copied to /etc/gatehouse/rules.d on the first install" \
    in_root sh -c 'cmp /usr/share/gatehouse/rules.d/00-default.rules /etc/gatehouse/rules.d/00-default.rules'
check "the package has no conffile at all (an upgrade never asks)" \
    test -z "$(in_root dpkg-query -W -f='${Conffiles}' gatehouse)"
# The site broker's queue settings: the package's file, its symlink in mosquitto's conf.d, and
# the site's override read after it.
queue_file=/usr/share/gatehouse/site-broker/gatehouse-queue.conf
queue=/etc/mosquitto/conf.d/gatehouse-queue.conf
queue_local=/etc/mosquitto/conf.d/gatehouse-queue.local.conf
# (The link is absolute: it resolves inside the chroot, not on this host.)
queue_linked() { test "$(readlink "$root$queue")" = "$queue_file" && test -f "$root$queue_file"; }
check "the site broker's gatehouse-queue.conf is the package's symlink to /usr/share/gatehouse/site-broker" queue_linked
check "bash and zsh completion installed" in_root sh -c 'test -s /usr/share/bash-completion/completions/gatehouse &&
    test -s /usr/share/zsh/vendor-completions/_gatehouse && grep -q "endorsement-key" /usr/share/bash-completion/completions/gatehouse'
echo "systemd-analyze verify in the chroot:"
in_root systemd-analyze verify --man=no gatehouse.service 2>&1 | grep -v "^$" || true

step "run gatehoused against a local mosquitto"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
site_port=$(free_port)
hub_port=$(free_port) # nothing listens there: no device identity connects upstream in this test
mkdir -p "$root/tmp/broker" && chown 0:0 "$root/tmp/broker"
in_root chown mosquitto: /tmp/broker
# With the drop-in the package installed (/etc/mosquitto/conf.d/gatehouse-queue.conf): Debian's
# mosquitto must start with it.
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence_location /tmp/broker/\nlog_dest file /tmp/broker/mosquitto.log\ninclude_dir /etc/mosquitto/conf.d\n' \
    "$site_port" >"$root/tmp/broker/mosquitto.conf"
# A site's override of the package's queue settings, in the file mosquitto reads after them.
printf 'max_queued_bytes 134217728\n' >"$root$queue_local"
chroot "$root" mosquitto -c /tmp/broker/mosquitto.conf &
pids+=($!)
broker_pid=$!
sleep 1
check "mosquitto starts with the package's site-broker drop-in and the site's override" kill -0 "$broker_pid"
# The site's settings, as a site writes them: a drop-in with the local broker's port and the hub
# on loopback; everything else is the package's default.
printf '[site]\nport = %s\n\n[hub]\naddress = "127.0.0.1"\nport = %s\n' "$site_port" "$hub_port" \
    >"$root/etc/gatehouse/gatehouse.d/50-site.toml"
check_out=$(as_gatehouse /usr/sbin/gatehoused --check -c /etc/gatehouse/gatehouse.toml 2>&1)
echo "$check_out" | grep '^gatehoused:'
check "defaults + the site's drop-in check (gatehoused --check, as user gatehouse)" \
    grep -q "checks (/usr/share/gatehouse/gatehouse.toml, /etc/gatehouse/gatehouse.d/50-site.toml)" <<<"$check_out"
check "--check on a gateway that never ran creates no state database" test ! -e "$root/var/lib/gatehouse/state.db"
printf '[outbox]\ndrop = "oldest"\nmax_bytes = "lots"\n' >"$root/etc/gatehouse/gatehouse.d/60-typo.toml"
bad_out=$(as_gatehouse /usr/sbin/gatehoused --check -c /etc/gatehouse/gatehouse.toml 2>&1)
echo "$bad_out" | grep '^gatehoused:' | head -2
check "a bad value in a drop-in: the message names its file, line and key" \
    grep -q "/etc/gatehouse/gatehouse.d/60-typo.toml:3: \[outbox\] max_bytes" <<<"$bad_out"
rm "$root/etc/gatehouse/gatehouse.d/60-typo.toml"

start_daemon() { # start_daemon LOG — $daemon is gatehoused's own pid (chroot and env exec it)
    chroot --userspec=gatehouse:gatehouse --groups=tss "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        /usr/sbin/gatehoused -c /etc/gatehouse/gatehouse.toml >"$1" 2>&1 &
    daemon=$!
    pids+=("$daemon")
    for _ in $(seq 1 100); do
        grep -q "subscribed to" "$1" && grep -q "gatehoused started" "$1" && break
        sleep 0.2
    done
}
stop_daemon() {
    kill -TERM "$daemon" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.2; done
    ! kill -0 "$daemon" 2>/dev/null
}
log1=$root/tmp/gatehoused-1.log
start_daemon "$log1"
grep -E 'gatehoused started|subscribed to|plugin' "$log1" | head -5
check "gatehoused started (log)" grep -q "gatehoused started" "$log1"
check "it loaded its plugins and subscribed on the site broker (log)" grep -q "subscribed to devices/+/messages/events/#" "$log1"
in_root mosquitto_pub -h 127.0.0.1 -p "$site_port" -q 1 -t 'devices/pump-7/messages/events/' -m '{"temperature": 21.5}'
sleep 5
rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
anon=$(awk '/RssAnon/ {print $2}' "/proc/$daemon/status")
echo "gatehoused RSS at idle (installed package, 5 s after start, one device seen): ${rss} KiB (anonymous ${anon} KiB)"
status_out=$(as_gatehouse /usr/bin/gatehouse status -c /etc/gatehouse/gatehouse.toml 2>&1)
echo "$status_out" | head -12
check "the device's message reached the state database (gatehouse status shows pump-7)" grep -q "pump-7" <<<"$status_out"
check "it is gatehoused that runs as user gatehouse" \
    test "$(ps -o user=,comm= -p "$daemon" | awk '{print $2}')" = gatehoused
check "gatehoused stops on SIGTERM" stop_daemon

step "edit the rules by hand, make the state database an older schema's, then upgrade to $new_version"
echo "# edited by hand on site: $(date -u +%FT%TZ)" >>"$root/etc/gatehouse/rules.d/00-default.rules"
hand_line=$(tail -1 "$root/etc/gatehouse/rules.d/00-default.rules")
# What an earlier release (schema v2, before provisioning and device tags) left behind.
in_root sqlite3 /var/lib/gatehouse/state.db "ALTER TABLE device DROP COLUMN tags; ALTER TABLE device DROP COLUMN model;
    ALTER TABLE device DROP COLUMN assigned_hub; ALTER TABLE device DROP COLUMN provisioning;
    DELETE FROM grdb_migrations WHERE identifier IN ('v3-provisioning', 'v4-device-tags');"
migrations_before=$(in_root sqlite3 /var/lib/gatehouse/state.db 'SELECT group_concat(identifier, " ") FROM grdb_migrations')
echo "migrations before the upgrade: $migrations_before"
db_sum() { in_root sqlite3 /var/lib/gatehouse/state.db .dump | sha256sum | cut -d' ' -f1; }
sum_before=$(db_sum)
check_out=$(as_gatehouse /usr/sbin/gatehoused --check -c /etc/gatehouse/gatehouse.toml 2>&1)
echo "$check_out" | grep '^gatehoused: state database'
check "gatehoused --check reports the migrations a start would run" \
    grep -q "the next start migrates it: v3-provisioning, v4-device-tags" <<<"$check_out"
check "... and runs none: the database's content (sqlite3 .dump) is the same" test "$(db_sum)" = "$sum_before"
# An unattended upgrade, as a fleet's: apt-get upgrade from a repository, no terminal, no
# --force-conf* option. The site has edited rules.d and has a drop-in; the new version's defaults
# (/usr/share/gatehouse/gatehouse.toml) differ from the old one's.
repo=$root/tmp/repo
mkdir -p "$repo" && cp "$new_deb" "$repo/"
new_devhub=$(dirname "$new_deb")/gatehouse-devhub_${new_version}_amd64.deb
[ -f "$new_devhub" ] && cp "$new_devhub" "$repo/"
(cd "$repo" && dpkg-scanpackages --multiversion . >Packages 2>/dev/null)
echo "deb [trusted=yes] file:/tmp/repo ./" >"$root/etc/apt/sources.list.d/gatehouse-test.list"
in_root apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null
defaults_differ() { ! dpkg-deb --fsys-tarfile "$new_deb" | tar -xO ./usr/share/gatehouse/gatehouse.toml | cmp -s - "$root/usr/share/gatehouse/gatehouse.toml"; }
check "the new version's default configuration differs from the installed one's" defaults_differ
upgrade_out=$(in_root apt-get upgrade -y -q -o Dpkg::Use-Pty=0 -o APT::Keep-Downloaded-Packages=true </dev/null 2>&1)
upgrade_rc=$?
echo "$upgrade_out" | grep -E "^(Setting up|Unpacking|gatehouse|E:|dpkg)" | head -8
check "unattended apt-get upgrade (no terminal, no --force-conf*) completes (exit $upgrade_rc)" test "$upgrade_rc" = 0
check "... and asked nothing" bash -c '! grep -qiE "conffile|Configuration file" <<<"$1"' _ "$upgrade_out"
override_kept() { grep -qx 'max_queued_bytes 134217728' "$root$queue_local" && queue_linked; }
check "the site's site-broker override is kept, the package's symlink renewed" override_kept
rm "$root/etc/apt/sources.list.d/gatehouse-test.list"
check "gatehouse $new_version installed" test "$(in_root dpkg-query -W -f='${Version}' gatehouse)" = "$new_version"
check "the hand-edited rule file is kept" grep -qxF "$hand_line" "$root/etc/gatehouse/rules.d/00-default.rules"
check "the site's drop-in is kept" grep -q "^port = $site_port" "$root/etc/gatehouse/gatehouse.d/50-site.toml"
migrations=$(in_root sqlite3 /var/lib/gatehouse/state.db 'SELECT group_concat(identifier, " ") FROM grdb_migrations')
check "the upgrade's check migrated nothing (no systemd here, so nothing restarted the daemon)" \
    test "$migrations" = "$migrations_before"
log2=$root/tmp/gatehoused-2.log
start_daemon "$log2"
check "the new version starts (log)" grep -q "gatehoused started" "$log2"
migrations=$(in_root sqlite3 /var/lib/gatehouse/state.db 'SELECT group_concat(identifier, " ") FROM grdb_migrations')
echo "migrations after the start: $migrations"
check "its start migrated the state database forward (v4-device-tags applied)" grep -q "v4-device-tags" <<<"$migrations"
check "the device row survived the upgrade and the migration" \
    test "$(in_root sqlite3 /var/lib/gatehouse/state.db "SELECT count(*) FROM device WHERE id = 'pump-7'")" = 1
check "state.db still belongs to gatehouse" test "$(in_root stat -c %U /var/lib/gatehouse/state.db)" = gatehouse
check "gatehoused stops on SIGTERM" stop_daemon

step "a single-file /etc/gatehouse/gatehouse.toml (as older versions installed it) is read instead of the defaults"
sed -e "/^\[site\]/,/^\[/ s/^port = .*/port = $site_port/" \
    -e 's/^# address = .*/address = "127.0.0.1"/' -e "/^\[hub\]/,/^\[/ s/^port = .*/port = $hub_port/" \
    "$root/usr/share/gatehouse/gatehouse.toml" >"$root/etc/gatehouse/gatehouse.toml"
mv "$root/etc/gatehouse/gatehouse.d/50-site.toml" "$root/tmp/50-site.toml"
check_out=$(as_gatehouse /usr/sbin/gatehoused --check -c /etc/gatehouse/gatehouse.toml 2>&1)
check "gatehoused --check reads /etc/gatehouse/gatehouse.toml alone" \
    grep -q "checks (/etc/gatehouse/gatehouse.toml); plugins load" <<<"$check_out"
log3=$root/tmp/gatehoused-3.log
start_daemon "$log3"
check "gatehoused starts with it and subscribes on the site broker" grep -q "subscribed to devices/+/messages/events/#" "$log3"
check "gatehoused stops on SIGTERM" stop_daemon
rm "$root/etc/gatehouse/gatehouse.toml"
mv "$root/tmp/50-site.toml" "$root/etc/gatehouse/gatehouse.d/50-site.toml"

step "a configuration that does not check: the package configuration fails, saying why and the way back"
printf '\n[gateway_typo]\nx = 1\n' >"$root/etc/gatehouse/gatehouse.d/70-typo.toml"
sum_before=$(db_sum)
reinstall_out=$(in_root apt-get install "${apt_q[@]}" --reinstall "/tmp/debs/$(basename "$new_deb")" </dev/null 2>&1)
reinstall_rc=$?
echo "$reinstall_out" | grep -E "^gatehouse(d)?:" | head -8
check "apt-get fails (exit $reinstall_rc)" test "$reinstall_rc" != 0
check "postinst names the file, line and section" \
    grep -q "/etc/gatehouse/gatehouse.d/70-typo.toml:2: gateway_typo: unknown section" <<<"$reinstall_out"
check "... says the running daemon was not restarted, and the way back" \
    bash -c 'grep -q "was NOT restarted" <<<"$1" && grep -q "the way back: reinstall the previous version" <<<"$1"' _ "$reinstall_out"
check "the package is left half-configured (dpkg and apt show it)" \
    test "$(in_root dpkg-query -W -f='${Status}' gatehouse)" = "install ok half-configured"
check "the state database is untouched" test "$(db_sum)" = "$sum_before"
rm "$root/etc/gatehouse/gatehouse.d/70-typo.toml"
check "fixed: dpkg --configure gatehouse completes" in_root dpkg --configure gatehouse
check "the package is configured" test "$(in_root dpkg-query -W -f='${Status}' gatehouse)" = "install ok installed"

step "a state database from a newer gatehouse is refused (exit 78), and postinst says so"
in_root sqlite3 /var/lib/gatehouse/state.db "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-a-newer-gatehouse')"
sum_before=$(db_sum)
newer_out=$(as_gatehouse /usr/sbin/gatehoused --check -c /etc/gatehouse/gatehouse.toml 2>&1)
newer_rc=$?
echo "$newer_out" | tail -1
check "gatehoused --check exits 78 and says the database is a newer version's" \
    sh -c "[ $newer_rc = 78 ] && echo \"\$1\" | grep -q 'written by a newer gatehouse'" _ "$newer_out"
reinstall_out=$(in_root apt-get install "${apt_q[@]}" --reinstall "/tmp/debs/$(basename "$new_deb")" </dev/null 2>&1)
echo "$reinstall_out" | grep -E "^gatehouse:" | head -3
check "postinst names the newer database and does not say to fix the configuration" \
    bash -c 'grep -q "was written by a newer gatehouse than" <<<"$1" && ! grep -qi "fix the configuration\|fix what the diagnostics" <<<"$1"' \
    _ "$reinstall_out"
check "the database is untouched" test "$(db_sum)" = "$sum_before"
in_root sqlite3 /var/lib/gatehouse/state.db "DELETE FROM grdb_migrations WHERE identifier = 'v99-from-a-newer-gatehouse'"
check "dpkg --configure gatehouse completes again" in_root dpkg --configure gatehouse

step "downgrade to $old_version"
downgrade=("/tmp/debs/$(basename "$old_deb")")
[ -f "$devhub_deb" ] && in_root dpkg -s gatehouse-devhub >/dev/null 2>&1 && downgrade+=("/tmp/debs/$(basename "$devhub_deb")")
check "apt-get install --allow-downgrades ${downgrade[*]}" \
    in_root apt-get install "${apt_q[@]}" --allow-downgrades "${downgrade[@]}" </dev/null
check "gatehouse $old_version installed and configured" \
    test "$(in_root dpkg-query -W -f='${Status} ${Version}' gatehouse)" = "install ok installed $old_version"
check "the site's drop-in and rules are kept" sh -c "grep -q '^port = $site_port' '$root/etc/gatehouse/gatehouse.d/50-site.toml' &&
    grep -qxF '$hand_line' '$root/etc/gatehouse/rules.d/00-default.rules'"
log4=$root/tmp/gatehoused-4.log
start_daemon "$log4"
check "$old_version starts on the same state database" grep -q "gatehoused started" "$log4"
check "gatehoused stops on SIGTERM" stop_daemon

step "purge"
purge=(gatehouse)
in_root dpkg -s gatehouse-devhub >/dev/null 2>&1 && purge=(gatehouse-devhub gatehouse)
check "apt-get purge ${purge[*]}" in_root apt-get purge "${apt_q[@]}" "${purge[@]}"
check "/etc/gatehouse is gone" test ! -e "$root/etc/gatehouse"
check "/var/lib/gatehouse is gone" test ! -e "$root/var/lib/gatehouse"
check "/usr/lib/gatehouse is gone" test ! -e "$root/usr/lib/gatehouse"
check "user and group gatehouse are gone" in_root sh -c '! getent passwd gatehouse && ! getent group gatehouse'
check "mosquitto still installed and its config untouched" in_root sh -c 'dpkg -s mosquitto >/dev/null && test -f /etc/mosquitto/mosquitto.conf'
queue_gone() { test ! -e "$root$queue" -a ! -L "$root$queue" -a ! -e "$root$queue_local"; }
check "the site-broker drop-in and the site's override are gone with the purge" queue_gone

step "upgrade from a package whose site-broker settings were a conffile (as 0.1.0-1's)"
# 0.1.0-1 shipped /etc/mosquitto/conf.d/gatehouse-queue.conf as a conffile. Its stand-in: the old
# build repacked with that file as a conffile (the only difference that matters here), versioned
# below 0.1.0-2, where the file became the package's symlink. Once edited by the site, once not.
repack=$(mktemp -d /var/tmp/gatehouse-repack.XXXXXX)
conffile_version=0.1.0-1+conffile
conffile_deb=/tmp/debs/gatehouse_${conffile_version}_amd64.deb
dpkg-deb -R "$old_deb" "$repack/pkg" &&
    rm "$repack/pkg$queue" && cp "$repack/pkg$queue_file" "$repack/pkg$queue" &&
    echo "$queue" >>"$repack/pkg/DEBIAN/conffiles" &&
    sed -i "s/^Version: .*/Version: $conffile_version/" "$repack/pkg/DEBIAN/control" &&
    dpkg-deb --root-owner-group -Znone -b "$repack/pkg" "$root$conffile_deb" >/dev/null
rm -rf "$repack"
install_conffile_deb() {
    in_root dpkg -i "$conffile_deb" >/dev/null 2>&1 && in_root dpkg-query -W -f='${Conffiles}' gatehouse | grep -q " $queue "
}
for edited in yes no; do
    check "install $conffile_version (the queue settings a conffile; edited by the site: $edited)" install_conffile_deb
    [ "$edited" = yes ] && echo 'max_queued_bytes 268435456 # this site' >>"$root$queue"
    conffile_out=$(in_root dpkg -i "/tmp/debs/$(basename "$new_deb")" </dev/null 2>&1)
    conffile_rc=$?
    echo "$conffile_out" | grep -iE "conffile|gatehouse-queue" | head -4
    check "upgrade to $new_version completes without a terminal (exit $conffile_rc) and asks nothing" \
        bash -c '[ "$1" = 0 ] && ! grep -qi "Configuration file" <<<"$2"' _ "$conffile_rc" "$conffile_out"
    check "... $queue is now the package's symlink" queue_linked
    if [ "$edited" = yes ]; then
        check "... the site's edited file is kept as gatehouse-queue.local.conf, read after the package's" \
            grep -qx 'max_queued_bytes 268435456 # this site' "$root$queue_local"
    else
        check "... the unedited conffile is gone, and no override was made" \
            test ! -e "$root$queue_local" -a ! -e "$root$queue.dpkg-bak"
    fi
    check "... and purged" in_root sh -c 'dpkg --purge gatehouse >/dev/null'
    check "... the purge removed the site broker's files" queue_gone
done

echo
echo "test-install: $passed passed, $failed failed"
((failed == 0))
