#!/usr/bin/env bash
# What qpid-proton allocates for one device's links, without any gatehouse code: the floor under
# the `amqp` transport's memory a device (docs/benchmarks.md, "Upstream transports").
#   Benchmarks/proton-link-cost.sh [DEVICES]     (default 1,000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
out=$(mktemp -d /tmp/proton-link-cost.XXXXXX)
trap 'rm -rf "$out"' EXIT
gcc -O2 -Wall -Werror Benchmarks/proton-link-cost.c -o "$out/proton-link-cost" -lqpid-proton
echo "libqpid-proton: $(dpkg-query -W -f '${Version}' libqpid-proton11 2>/dev/null || echo '?')"
"$out/proton-link-cost" "${1:-1000}"
