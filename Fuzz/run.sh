#!/usr/bin/env bash
# Builds the rule-language fuzzer with libFuzzer and AddressSanitizer and runs it.
#   Fuzz/run.sh            # 10 minutes
#   Fuzz/run.sh -runs=1000 # any libFuzzer flags
# Seeds: the golden corpus and the shipped rules. The growing corpus and any crash files go to
# Fuzz/.work/ (not committed).
# Leak detection is off: Swift stores the boxes of indirect enums behind tagged pointers that
# LeakSanitizer cannot follow, so it reports every lazily built global as leaked.
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release -Xswiftc -sanitize=fuzzer,address
mkdir -p .work/corpus .work/artifacts
find ../Tests/GateRulesTests/corpus ../rules -name '*.rules' | while read -r f; do
    cp "$f" ".work/corpus/seed-$(echo "$f" | md5sum | cut -c1-12).rules"
done
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-max_total_time=600)
export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
exec .build/release/RulesFuzzer .work/corpus -dict=rules.dict -max_len=4096 -timeout=5 \
    -artifact_prefix=.work/artifacts/ -print_final_stats=1 -detect_leaks=0 "${args[@]}"
