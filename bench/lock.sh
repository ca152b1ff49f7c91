#!/usr/bin/env bash
# elf-lock benchmarks (issue 3) against flock(1) and lckdo(1) (moreutils). Prints a markdown
# table (bench/lib.sh describes the format).
#
#   1. `elf-lock L -- true` against `flock L true`: target median within 1.1x.
#   2. the same against `lckdo L true`, for reference.
#   3. 4 processes x 500 lock/unlock cycles on one lock: total time; target no slower than
#      flock(1).
#
# LOCK_ROUNDS (10) x LOCK_RUNS (200) runs of row 1; LOCK_CYCLES (500) and LOCK_CYCLE_RUNS (5)
# for row 3. A shared machine drifts: hyperfine runs every command of a round in turn, ROUNDS
# times, and the table shows the median of the rounds' medians, so drift hits all alike.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need hyperfine flock lckdo jq
bench_build
rounds=${LOCK_ROUNDS:-$(bench_default 10 2)}
runs=${LOCK_RUNS:-$(bench_default 200 50)}
cycles=${LOCK_CYCLES:-$(bench_default 500 100)}
cycle_runs=${LOCK_CYCLE_RUNS:-$(bench_default 5 1)}
elf=$ELF_BIN/elf-lock

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lock=$work/L
touch "$lock"

# The median over the rounds' JSON exports $2... of command $1's median, in seconds.
median_of() {
    local i=$1
    shift
    for f in "$@"; do bench_hf_median "$f" "$i"; done | bench_median
}

one=()
for r in $(seq "$rounds"); do
    hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$work/one-$r.json" \
        "$elf $lock -- true" \
        "flock $lock true" \
        "lckdo $lock true" >&2
    one+=("$work/one-$r.json")
done

cycle() {
    # 4 processes, each locking and unlocking $cycles times; $i expands in the benchmark's shell
    # shellcheck disable=SC2016
    printf 'for p in 1 2 3 4; do (i=0; while [ $i -lt %s ]; do %s; i=$((i+1)); done) & done; wait' "$cycles" "$1"
}

many=()
for r in $(seq "$cycle_runs"); do
    hyperfine --style none --shell bash --runs 1 --export-json "$work/many-$r.json" \
        "$(cycle "$elf $lock -- true")" \
        "$(cycle "flock $lock true")" >&2
    many+=("$work/many-$r.json")
done

bench_header
e1=$(median_of 0 "${one[@]}")
bench_time_row "\`elf-lock L -- true\` vs \`flock L true\` ($rounds x $(bench_runs "$runs"))" "$e1" "$(median_of 1 "${one[@]}")" 1.1
bench_time_row "\`elf-lock L -- true\` vs \`lckdo L true\` ($rounds x $(bench_runs "$runs"))" "$e1" "$(median_of 2 "${one[@]}")" -
bench_time_row "4 x $cycles lock/unlock cycles on one lock, total, vs flock ($(bench_runs "$cycle_runs"))" \
    "$(median_of 0 "${many[@]}")" "$(median_of 1 "${many[@]}")" 1.0
echo "bench/lock.sh: load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
