#!/usr/bin/env bash
# Benchmark elf-lock against flock(1) and lckdo(1) (moreutils); prints a markdown table.
#
#   bench/lock.sh                          # default: 10 rounds x 200 runs, 5 x 4 x 500 cycles
#   ROUNDS=20 RUNS=300 bench/lock.sh       # more
#
# Rows:
#   1. `elf-lock L -- true` against `flock L true`: target median within 1.1x.
#   2. the same against `lckdo L true`, for reference.
#   3. 4 processes x 500 lock/unlock cycles on one lock, total time: target no slower than
#      flock(1).
#
# A shared machine drifts: hyperfine runs every command of a round in turn, ROUNDS times, and
# the table shows the median of the rounds' medians, so that drift hits all commands alike.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${ROUNDS:-10}
runs=${RUNS:-200}
cycles=${CYCLES:-500}
cycle_runs=${CYCLE_RUNS:-5}

for tool in hyperfine flock lckdo jq; do
    command -v "$tool" >/dev/null || { echo "bench/lock.sh: $tool is not installed" >&2; exit 69; }
done

cargo build --release --quiet --bin elf-lock --manifest-path "$root/Cargo.toml"
elf=$root/target/release/elf-lock

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lock=$work/L
touch "$lock"

# The median of the numbers on standard input.
median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The median over the rounds' JSON exports $2... of command $1's median, in milliseconds.
median_of() {
    local i=$1
    shift
    for f in "$@"; do jq -r ".results[$i].median * 1000" "$f"; done | median
}

one=()
for r in $(seq "$rounds"); do
    hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$work/one-$r.json" \
        "$elf $lock -- true" \
        "flock $lock true" \
        "lckdo $lock true" >/dev/null
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
        "$(cycle "flock $lock true")" >/dev/null
    many+=("$work/many-$r.json")
done

row() {
    # operation, elf median, anchor median, target ratio or -
    awk -v op="$1" -v e="$2" -v a="$3" -v t="$4" 'BEGIN {
        r = e / a
        met = (t == "-") ? "-" : ((r <= t) ? "yes" : "no")
        printf "| %s | %.3f ms | %.3f ms | %.3f | %s | %s |\n", op, e, a, r, (t == "-") ? "-" : "<= " t "x", met
    }'
}

e1=$(median_of 0 "${one[@]}")
f1=$(median_of 1 "${one[@]}")
l1=$(median_of 2 "${one[@]}")
e2=$(median_of 0 "${many[@]}")
f2=$(median_of 1 "${many[@]}")

echo "| operation | elf median | anchor median | ratio | target | met |"
echo "|---|---|---|---|---|---|"
row "\`elf-lock L -- true\` vs \`flock L true\` ($rounds x $runs runs)" "$e1" "$f1" 1.1
row "\`elf-lock L -- true\` vs \`lckdo L true\` ($rounds x $runs runs)" "$e1" "$l1" -
row "4 x $cycles lock/unlock cycles, total ($cycle_runs runs) vs flock" "$e2" "$f2" 1.0
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
