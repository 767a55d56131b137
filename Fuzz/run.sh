#!/usr/bin/env bash
# Builds a fuzzer with libFuzzer and AddressSanitizer and runs it.
#   Fuzz/run.sh                      # the rule language, 10 minutes
#   Fuzz/run.sh -runs=1000           # any libFuzzer flags
#   Fuzz/run.sh site-mqtt            # the site subscriber's MQTT read loop, 10 million inputs
#   Fuzz/run.sh site-mqtt -runs=1000 # any libFuzzer flags
# Rules seeds: the golden corpus and the shipped rules. site-mqtt seeds: corpus/site-mqtt
# (committed; site-mqtt-seeds.py writes the hand-made ones). The growing corpus and any crash
# files go to Fuzz/.work/ (not committed).
# Leak detection is off: Swift stores the boxes of indirect enums behind tagged pointers that
# LeakSanitizer cannot follow, so it reports every lazily built global as leaked.
set -euo pipefail
cd "$(dirname "$0")"
# Allocation is most of a rules input's cost under ASan, so (measured on 400 corpus inputs: 22 s
# with ASan's defaults, 6.4 s with these) no allocation stacks (a report still shows the faulting
# stack; re-run the input with ASAN_OPTIONS=detect_leaks=0 for the alloc/free stacks), an 8 MB
# quarantine (a use after free is still caught while the block is in it) and no fill of new blocks.
export ASAN_OPTIONS="detect_leaks=0:malloc_context_size=0:quarantine_size_mb=8:max_malloc_fill_size=0:${ASAN_OPTIONS:-}"
if [ "${1:-}" = site-mqtt ]; then
    shift
    swift build -c release -Xswiftc -sanitize=fuzzer,address --product SiteMQTTFuzzer
    mkdir -p .work/site-mqtt/corpus .work/site-mqtt/artifacts
    cp corpus/site-mqtt/* .work/site-mqtt/corpus/
    args=("$@")
    [ ${#args[@]} -eq 0 ] && args=(-runs=10000000)
    exec .build/release/SiteMQTTFuzzer .work/site-mqtt/corpus -dict=site-mqtt.dict -max_len=16384 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix=.work/site-mqtt/artifacts/ -print_final_stats=1 -detect_leaks=0 \
        "${args[@]}"
fi
swift build -c release -Xswiftc -sanitize=fuzzer,address --product RulesFuzzer
mkdir -p .work/corpus .work/artifacts
find ../Tests/GateRulesTests/corpus ../rules -name '*.rules' | while read -r f; do
    cp "$f" ".work/corpus/seed-$(echo "$f" | md5sum | cut -c1-12).rules"
done
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-max_total_time=600)
exec .build/release/RulesFuzzer .work/corpus -dict=rules.dict -max_len=4096 -timeout=5 \
    -artifact_prefix=.work/artifacts/ -print_final_stats=1 -detect_leaks=0 "${args[@]}"
