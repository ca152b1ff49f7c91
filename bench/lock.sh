#!/usr/bin/env bash
# Benchmark elf-lock against flock(1) and lckdo(1) (moreutils).
#
#   bench/lock.sh            # prints a markdown table of medians
#   RUNS=3000 bench/lock.sh  # more runs for the single-lock case
#
# Rows:
#   1. `elf-lock L -- true` against `flock L true`: target median within 1.1x.
#   2. the same against `lckdo L true` (for reference).
#   3. 4 processes x 500 lock/unlock cycles on one lock, total time: target no slower than
#      flock(1).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-2000}
cycles=${CYCLES:-500}

cargo build --release --quiet --bin elf-lock --manifest-path "$root/Cargo.toml"
elf=$root/target/release/elf-lock

for tool in hyperfine flock lckdo jq; do
    command -v "$tool" >/dev/null || { echo "bench/lock.sh: $tool is not installed" >&2; exit 69; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lock=$work/L
touch "$lock"

# median of the command at index $2 in hyperfine's JSON export $1, in milliseconds
median() {
    jq -r ".results[$2].median * 1000" "$1"
}

hyperfine -N --style none --warmup 100 --runs "$runs" --export-json "$work/one.json" \
    "$elf $lock -- true" \
    "flock $lock true" \
    "lckdo $lock true" >/dev/null

cycle() {
    # 4 processes, each locking and unlocking $cycles times; $i expands in the benchmark's shell
    # shellcheck disable=SC2016
    printf 'for p in 1 2 3 4; do (i=0; while [ $i -lt %s ]; do %s; i=$((i+1)); done) & done; wait' "$cycles" "$1"
}

hyperfine --style none --shell bash --warmup 1 --runs "${CYCLE_RUNS:-5}" --export-json "$work/many.json" \
    "$(cycle "$elf $lock -- true")" \
    "$(cycle "flock $lock true")" >/dev/null

row() {
    # operation, elf median, anchor median, target ratio
    awk -v op="$1" -v e="$2" -v a="$3" -v t="$4" 'BEGIN {
        r = e / a
        met = (t == "-") ? "-" : ((r <= t) ? "yes" : "no")
        printf "| %s | %.3f ms | %.3f ms | %.3f | %s | %s |\n", op, e, a, r, (t == "-") ? "-" : "<= " t "x", met
    }'
}

e1=$(median "$work/one.json" 0)
f1=$(median "$work/one.json" 1)
l1=$(median "$work/one.json" 2)
e2=$(median "$work/many.json" 0)
f2=$(median "$work/many.json" 1)

echo "| operation | elf median | anchor median | ratio | target | met |"
echo "|---|---|---|---|---|---|"
row "elf-lock L -- true vs flock L true ($runs runs)" "$e1" "$f1" 1.1
row "elf-lock L -- true vs lckdo L true ($runs runs)" "$e1" "$l1" -
row "4 x $cycles lock/unlock cycles, total, vs flock" "$e2" "$f2" 1.0
