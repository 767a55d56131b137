#!/usr/bin/env bash
# The rule-language benchmark: builds the Swift benchmark (release), installs CEL and Rego with
# pip into .venv, runs everything on one core (CPU 0) and prints one table.
#   Benchmarks/rules-bench/run.sh
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check cel-expr-python regopy
swift build -c release 2>&1 | grep -v '^\[' || true
pin=(taskset -c 0)
command -v taskset >/dev/null || pin=()
results=$(mktemp)
"${pin[@]}" .build/release/rules-bench > "$results"
"${pin[@]}" .venv/bin/python compare.py "$results"
rm -f "$results"
