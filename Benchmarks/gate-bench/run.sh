#!/bin/sh
# Time from command arrival to decision and commands/s of the command gate, on one core.
#   Benchmarks/gate-bench/run.sh [COUNT] [IN_FLIGHT]
set -eu
cd "$(dirname "$0")/../.."
count=${1:-20000}
inflight=${2:-64}
work=$(mktemp -d /var/tmp/gate-bench.XXXXXX)  # on disk: the audit fsync is real
trap 'rm -rf "$work"' EXIT
swift build -c release --product gate-bench >/dev/null
scripts/mint-token keys "$work/idp" >/dev/null
token=$(scripts/mint-token token "$work/idp" --role Gateway.Operator --claim site=A)
taskset -c 0 .build/release/gate-bench --jwks "$work/idp/jwks.json" --token "$token" \
    --rules rules/examples/site --state "$work/state.db" --count "$count" --in-flight "$inflight"
