#!/usr/bin/env bash
# SYN floods against the firewall plugin's ruleset, in three network namespaces this script makes
# and removes (the host's own firewall and sysctls are never touched):
#
#   lan (10.234.1.2) ── gw (10.234.1.1 | 10.234.0.1) ── wan (10.234.0.2)
#
# gatehouse applies its ruleset in gw (port 8883 allowed from anywhere, the derived site-broker
# port pinned to the LAN). For each scenario hping3 floods from wan for 15 s while a real client in
# lan makes 20 connections to 8883, each one reading the server's greeting; at least 19 of 20 must
# get in:
#   spoofed  SYNs to 8883 from random sources (--rand-source), ~5,000/s
#   single   SYNs to 8883 from one source, ~5,000/s
#   scan     SYNs to a blocked port (9999) from one source, ~5,000/s
#
#   Tests/firewall/flood.sh [MODE ...]     MODE: syncookies (default) and/or synproxy
#   SCENARIOS="spoofed single scan" FLOOD_SECONDS=15 GATEHOUSE_BIN=DIR
#
# docs/firewall.md ("SYN floods") has the figures it measured.
set -euo pipefail
cd "$(dirname "$0")/../.."
modes=("${@:-syncookies}")
scenarios=(${SCENARIOS:-spoofed single scan})
seconds=${FLOOD_SECONDS:-15}

skip() {
    echo "firewall flood test: NOT RUN — $1"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root"
for tool in ip nft hping3 python3 timeout; do
    command -v "$tool" >/dev/null || skip "$tool is missing (scripts/setup installs it)"
done
BIN=${GATEHOUSE_BIN:-$(swift build --show-bin-path)}
[ -x "$BIN/gatehouse" ] && [ -e "$BIN/libgatehouse-nftables.so" ] ||
    skip "$BIN has no gatehouse and libgatehouse-nftables.so (swift build first, or set GATEHOUSE_BIN)"

tag=$$
GW=gh-fl-gw-$tag WAN=gh-fl-wan-$tag LAN=gh-fl-lan-$tag
work=$(mktemp -d /tmp/gatehouse-flood.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "$GW" "$WAN" "$LAN"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$GW" 2>/dev/null || skip "cannot create a network namespace here"
ip netns add "$WAN"
ip netns add "$LAN"
ip link add ghf-wan netns "$GW" type veth peer name ghf-wanp netns "$WAN"
ip link add ghf-lan netns "$GW" type veth peer name ghf-lanp netns "$LAN"
ip -n "$GW" addr add 10.234.0.1/24 dev ghf-wan
ip -n "$GW" addr add 10.234.1.1/24 dev ghf-lan
ip -n "$WAN" addr add 10.234.0.2/24 dev ghf-wanp
ip -n "$LAN" addr add 10.234.1.2/24 dev ghf-lanp
for link in lo ghf-wan ghf-lan; do ip -n "$GW" link set "$link" up; done
for link in lo ghf-wanp; do ip -n "$WAN" link set "$link" up; done
for link in lo ghf-lanp; do ip -n "$LAN" link set "$link" up; done
# Replies to spoofed sources leave by the WAN, as on a gateway with a default route.
ip -n "$GW" route add default via 10.234.0.2
ip -n "$WAN" route add default via 10.234.0.1
ip -n "$LAN" route add default via 10.234.1.1

# A server that greets each connection, in the gateway namespace: on the allowed port (8883) and
# on the site broker's port (1883, derived from [site] and pinned to the LAN by site_interface).
ip netns exec "$GW" python3 -c '
import selectors, socket
selector = selectors.DefaultSelector()
for port in (8883, 1883):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128); selector.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in selector.select():
        c, _ = key.fileobj.accept()
        try: c.sendall(b"ok\n")
        except OSError: pass
        c.close()' >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/server.log" && break; sleep 0.1; done

# "ok" when a connection from NAMESPACE to ADDRESS:PORT gets the greeting within 2 s.
greeted() {
    ip netns exec "$1" python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok" if s.recv(3) == b"ok\n" else "no greeting")
except OSError as e:
    print(type(e).__name__)' "$2" "$3"
}

config() {
    cat >"$work/gatehouse.toml" <<TOML
[gateway]
state_db = "$work/state.db"
plugin_dir = "$BIN"
[site]
plugin = "mqtt"
port = 1883
[hub]
plugin = "mqtt"
hostname = "hub.invalid"
[firewall]
plugin = "nftables"
allow = [{ port = 8883, comment = "site broker TLS" }]
site_interface = "ghf-lan"
syn_flood_protection = "$1"
disable_ipv6 = ["all"]
state_file = "$work/firewall.json"
TOML
}

failed=0
config syncookies
ip netns exec "$GW" "$BIN/gatehouse" firewall apply -c "$work/gatehouse.toml" >"$work/apply.log" 2>&1 || {
    cat "$work/apply.log"
    exit 1
}
lan=$(greeted "$LAN" 10.234.1.1 1883)
wan=$(greeted "$WAN" 10.234.0.1 1883)
echo "firewall flood test: the derived site-broker port 1883 from the LAN: $lan; from the WAN: $wan"
if [ "$lan" != ok ] || [ "$wan" = ok ]; then
    echo "firewall flood test: FAILED — the derived broker port must be open on the LAN side only"
    failed=1
fi
echo "firewall flood test: ${seconds} s floods from the WAN namespace, 20 real connections from the LAN each"
for mode in "${modes[@]}"; do
    config "$mode"
    for scenario in "${scenarios[@]}"; do
        case $scenario in
            spoofed) flood=(-S --rand-source -p 8883) ;;
            single) flood=(-S -p 8883) ;;
            scan) flood=(-S -p 9999) ;;
            *) echo "unknown scenario $scenario" >&2; exit 2 ;;
        esac
        # Each scenario starts from an almost empty conntrack table (what the one before left,
        # half-open entries kept conntrack_syn_timeout, is gone first; 30 s at most), so the peak
        # printed is this flood's own.
        for _ in $(seq 1 60); do
            count=$(ip netns exec "$GW" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0)
            ((count < 1000)) && break
            sleep 0.5
        done
        # A fresh apply: counters and meters start at zero.
        ip netns exec "$GW" "$BIN/gatehouse" firewall apply -c "$work/gatehouse.toml" >"$work/apply.log" 2>&1 || {
            cat "$work/apply.log"
            exit 1
        }
        # -i u60: about 5,000 packets a second here (hping3 sleeps between packets); the rate
        # reached is measured and printed.
        ip netns exec "$WAN" timeout -s INT "$seconds" hping3 -q -i u60 "${flood[@]}" 10.234.0.1 \
            >"$work/hping.log" 2>&1 &
        hping=$!
        # The conntrack table's size, sampled every 0.5 s.
        (
            peak=0
            while kill -0 "$hping" 2>/dev/null; do
                count=$(ip netns exec "$GW" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0)
                ((count > peak)) && peak=$count
                echo "$peak" >"$work/conntrack.peak"
                sleep 0.5
            done
        ) &
        sampler=$!
        sleep 1
        result=$(ip netns exec "$LAN" python3 -c '
import socket, time
ok, times = 0, []
for _ in range(20):
    start = time.monotonic()
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(("10.234.1.1", 8883))
        if s.recv(3) == b"ok\n":
            ok += 1; times.append(time.monotonic() - start)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.6)
times.sort()
p50 = times[len(times) // 2] * 1000 if times else 0
print(f"{ok} {p50:.1f} {max(times, default=0) * 1000:.0f}")')
        wait "$hping" || true
        wait "$sampler" || true
        read -r ok p50 worst <<<"$result"
        sent=$(grep -ao '[0-9]* packets transmitted' "$work/hping.log" | grep -o '^[0-9]*' || echo 0)
        counters=$(ip netns exec "$GW" "$BIN/gatehouse" firewall status -c "$work/gatehouse.toml" 2>/dev/null |
            python3 -c '
import json, sys
counters = json.load(sys.stdin)["counters"]
print(", ".join("%s %d" % (n, counters.get(n, {}).get("packets", 0)) for n in ("drop_syn_flood", "drop_not_allowed")))')
        verdict=ok
        if ((ok < 19)); then verdict=FAILED; failed=1; fi
        printf '  %-10s %-8s %2d/20 connected (p50 %s ms, max %s ms) during %d SYN/s (%d in %d s); %s; conntrack peak %s — %s\n' \
            "$mode" "$scenario" "$ok" "$p50" "$worst" $((sent / seconds)) "$sent" "$seconds" "$counters" \
            "$(cat "$work/conntrack.peak" 2>/dev/null || echo "?")" "$verdict"
    done
done
if ((failed)); then
    echo "firewall flood test: FAILED — fewer than 19 of 20 real connections got in during a flood"
    exit 1
fi
echo "firewall flood test: OK"
