#!/usr/bin/env bash
# Runs the randomized tests again and again with new seeds, to find the rare input that
# breaks them (tests/run.sh and CI run them with fixed seeds, so a landing never depends
# on luck). Usage: tests/soak.sh [RUNS] [nextest filter]
#
# Each run gets a new MUSEFS_TEST_SEED (the damaged-file tests: where bits flip, where a
# file is cut, what garbage goes in) and PROPTEST_RNG_SEED (the property tests). A run
# that fails is reported with its seeds; its output and the files it failed on are kept
# under target/soak/. Rerun it with the same two variables to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
filter=${2:-test(/refused_only_when_ffmpeg_cannot_play_them/) | binary(synthesis_props)}
mkdir -p target/soak
cargo build --workspace --quiet
failed=0
for i in $(seq 1 "$runs"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    pseed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    log=target/soak/run-$seed.log
    rm -rf target/debug/damaged-failures
    if MUSEFS_TEST_SEED=$seed PROPTEST_RNG_SEED=$pseed cargo nextest run -p musefs-tests --no-fail-fast \
        -E "$filter" >"$log" 2>&1; then
        rm -f "$log"
        echo "run $i: ok"
    else
        failed=$((failed + 1))
        echo "run $i: FAILED with MUSEFS_TEST_SEED=$seed PROPTEST_RNG_SEED=$pseed (output: $log)"
        grep -E "^\s+FAIL " "$log" | sort -u || true
        [ -d target/debug/damaged-failures ] && mv target/debug/damaged-failures "target/soak/failures-$seed"
    fi
done
echo "$failed of $runs runs failed"
[ "$failed" -eq 0 ]
