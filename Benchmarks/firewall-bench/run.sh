#!/usr/bin/env bash
# Time to render + check + apply + read back the firewall ruleset, in a network namespace this
# script creates and removes (the host's own firewall is never touched). Needs root.
#   Benchmarks/firewall-bench/run.sh [RUNS=20] [EXTRA_ALLOW_RULES=0]
#   BIN=DIR uses the gatehouse and libgatehouse-nftables.so already built there (release).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
extra=${2:-0}
if [ -z "${BIN:-}" ]; then
    swift build -c release --product gatehouse >/dev/null
    swift build -c release --product gatehouse-nftables >/dev/null
    BIN=$(swift build -c release --show-bin-path)
fi
work=$(mktemp -d /tmp/firewall-bench.XXXXXX)
ns="gh-fwbench-$$"
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
ip netns add "$ns"
allow='{ port = 8883, source = "10.0.0.0/8", comment = "site broker TLS" }'
for i in $(seq "$extra"); do allow="$allow, { port = $((20000 + i)), proto = \"udp\", source = \"192.168.$((i % 250)).0/24\" }"; done
cat >"$work/gatehouse.toml" <<TOML
[gateway]
state_db = "$work/state.db"
plugin_dir = "$BIN"
[site]
plugin = "mqtt"
[hub]
plugin = "mqtt"
hostname = "hub.invalid"
[firewall]
plugin = "nftables"
allow = [$allow]
site_source = "10.0.0.0/8"
disable_ipv6 = ["all"]
state_file = "$work/firewall.json"
TOML
echo "firewall-bench: $runs applies of a ruleset with $((extra + 2)) allow rules, in namespace $ns ($BIN)"
for _ in $(seq "$runs"); do
    ip netns exec "$ns" "$BIN/gatehouse" firewall apply -c "$work/gatehouse.toml" 2>/dev/null
done | python3 -c '
import re, statistics, sys
rows, host, settings = [], [], 0
for line in sys.stdin:
    m = re.search(r"(\d+) rules .* in ([\d.]+) ms \(render ([\d.]+) ms, check ([\d.]+) ms, apply ([\d.]+) ms, read back ([\d.]+) ms\)", line)
    if m: rows.append([float(x) for x in m.groups()])
    h = re.search(r"host settings: (\d+) as configured, \d+ changed \(([\d.]+) ms\)", line)
    if h: host.append(float(h.group(2))); settings = int(h.group(1))
if not rows: sys.exit("no apply line parsed")
names = ["total", "render", "check (dry run)", "apply", "read back"]
print(f"  rules (all chains): {int(rows[0][0])}")
for i, name in enumerate(names, start=1):
    values = sorted(r[i] for r in rows)
    print(f"  {name:<16} p50 {statistics.median(values):7.2f} ms   max {values[-1]:7.2f} ms")
if host:
    host.sort()
    print(f"  host settings    p50 {statistics.median(host):7.2f} ms   max {host[-1]:7.2f} ms   ({settings} settings, after the total above)")
'
