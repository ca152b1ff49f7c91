#!/usr/bin/env bash
# elf-backoff benchmarks: per-run overhead against `true` and Debian's `retry`, and retries under
# lock contention for each jitter kind. Prints a markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin elf-backoff
bin=$PWD/target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median_ms() { # hyperfine JSON file, command index -> median in ms
    jq -r ".results[$2].median * 1000" "$1"
}
row() { # operation elf anchor target(ratio upper bound) 
    awk -v op="$1" -v e="$2" -v a="$3" -v t="$4" -v unit="$5" 'BEGIN {
        r = (a > 0) ? e / a : 0
        met = (t == "-") ? "-" : ((r <= t) ? "yes" : "no")
        printf "| %s | %.3f %s | %.3f %s | %.2f | %s | %s |\n", op, e, unit, a, unit, r, (t == "-" ? "-" : "<= " t), met
    }'
}

echo "| operation | elf median | anchor median | ratio | target | met |"
echo "|---|---|---|---|---|---|"

hyperfine -N --warmup 20 --runs 300 --export-json "$work/o.json" \
    "true" "$bin/elf-backoff -- true" "retry -- true" >/dev/null 2>&1
t=$(median_ms "$work/o.json" 0)
e=$(median_ms "$work/o.json" 1)
r=$(median_ms "$work/o.json" 2)
awk -v e="$e" -v t="$t" 'BEGIN { d = e - t; printf "| elf-backoff -- true, overhead over true | %.3f ms | (true %.3f ms) | +%.3f ms | < 1 ms | %s |\n", e, t, d, (d < 1 ? "yes" : "no") }'
row "elf-backoff -- true vs retry -- true" "$e" "$r" "-" ms

# Contention: 50 processes need a non-blocking lock that each holds for 20 ms.
contend() { # label, command prefix...
    local label=$1; shift
    : > "$work/attempts"
    local start end
    start=$(date +%s%N)
    for _ in $(seq 50); do
        "$@" sh -c "echo >> '$work/attempts'; exec flock -n -E 75 '$work/lock' sleep 0.02" >/dev/null 2>&1 &
    done
    wait
    end=$(date +%s%N)
    printf '| contention, 50 procs, %s | %s attempts | %.2f s | | | |\n' "$label" "$(wc -l < "$work/attempts")" "$(echo "($end - $start) / 1000000000" | bc -l)"
}
for j in none equal full decorrelated; do
    contend "elf-backoff --jitter $j" "$bin/elf-backoff" -q -n 100000 --base 10ms --max-delay 1s --jitter "$j" --
done
contend "retry -d 1 (fixed 1 s)" retry -d 1 --
