# shellcheck shell=bash
# Shared by the bench/*.sh scripts (sourced, not run): where the binaries are, and the one row
# format of every table.
#
# Every script prints on standard output a markdown table of rows
#     | operation | elf median | anchor median | ratio | target | met |
# and its progress and details on standard error. The ratio is elf / anchor of the figure
# shown (time, attempts, records per second...); the target says which way it must go.
#
# Environment understood by every script:
#   ELF_BIN        directory holding the elf-* binaries to measure; when unset, the script
#                  builds them itself (release, static, as bench/run does) and uses those
#   BENCH_QUICK=1  small counts, for a smoke test (each script's own variables still win)
#   BENCH_NO_HEADER=1  rows only, no table header (bench/run puts every row in one table)
#   TMPDIR         where the work files go (the file system measured)

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LC_ALL=C

bench_die() {
    echo "bench/$(basename "$0"): $*" >&2
    exit 1
}

# bench_need TOOL...: fail with a clear message when a tool is missing (bench/run installs them).
bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || bench_die "$t is not installed (bench/run installs what is missing)"
    done
}

# bench_build: sets and exports ELF_BIN and puts it first on PATH. Without ELF_BIN, builds the
# release binaries statically linked and not position-independent (fast start-up: no dynamic
# loader, no relocations); proc-macros forbid
# crt-static unless the target is given explicitly, hence --target.
bench_build() {
    if [[ -z ${ELF_BIN:-} ]]; then
        local host
        host=$(rustc -vV | sed -n 's/^host: //p')
        RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
            cargo build --release --quiet --target "$host" --manifest-path "$bench_root/Cargo.toml" >&2
        ELF_BIN=$bench_root/target/$host/release
    fi
    ELF_BIN=$(cd "$ELF_BIN" && pwd)
    local t
    for t in elf-backoff elf-lock elf-write elf-db elf-commit; do
        [[ -x $ELF_BIN/$t ]] || bench_die "$ELF_BIN/$t is missing"
    done
    export ELF_BIN PATH="$ELF_BIN:$PATH"
}

# bench_default VALUE QUICK_VALUE: VALUE, or QUICK_VALUE under BENCH_QUICK=1.
bench_default() {
    if [[ -n ${BENCH_QUICK:-} ]]; then echo "$2"; else echo "$1"; fi
}

# bench_runs N: "1 run" or "N runs", for the operation names.
bench_runs() {
    if [[ $1 == 1 ]]; then echo "1 run"; else echo "$1 runs"; fi
}

bench_header() {
    [[ -n ${BENCH_NO_HEADER:-} ]] && return 0
    echo "| operation | elf median | anchor median | ratio | target | met |"
    echo "|---|---|---|---|---|---|"
}

# bench_row OPERATION ELF ANCHOR RATIO TARGET MET: one row, the cells as given.
bench_row() {
    printf '| %s | %s | %s | %s | %s | %s |\n' "$@"
}

# bench_time SECONDS: a duration for a cell ("850 µs" is never needed: ms below a second).
bench_time() {
    awk -v s="$1" 'BEGIN {
        if (s >= 10) printf "%.1f s", s; else if (s >= 1) printf "%.2f s", s
        else if (s >= 0.1) printf "%.0f ms", s * 1000; else if (s >= 0.01) printf "%.1f ms", s * 1000
        else printf "%.2f ms", s * 1000
    }'
}

# bench_time_row OPERATION ELF_SECONDS ANCHOR_SECONDS MAX_RATIO
# The ratio is elf / anchor time; MAX_RATIO is the target (met when ratio <= MAX_RATIO), or "-"
# when the row only informs. A target below 1 reads as a speed-up ("<= 0.2, 5x faster").
bench_time_row() {
    local r target met
    r=$(awk -v e="$2" -v a="$3" 'BEGIN {
        r = e / a
        if (r < 0.9) printf "%.3g (%.3gx faster)", r, 1 / r; else printf "%.3g", r
    }')
    if [[ $4 == - ]]; then
        target=- met=-
    else
        target=$(awk -v t="$4" 'BEGIN { if (t < 1) printf "<= %.3g (%.3gx faster)", t, 1 / t; else printf "<= %s", t }')
        met=$(awk -v e="$2" -v a="$3" -v t="$4" 'BEGIN { print (e / a <= t) ? "yes" : "no" }')
    fi
    bench_row "$1" "$(bench_time "$2")" "$(bench_time "$3")" "$r" "$target" "$met"
}

# bench_median: the median of the numbers on standard input.
bench_median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_pct P: the P-th percentile (nearest rank, P in 0..100) of the numbers on standard input.
bench_pct() {
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print v[int((NR - 1) * p / 100 + 0.5) + 1] }'
}

# bench_hf_median FILE INDEX: the median in seconds of command INDEX of a hyperfine JSON export.
bench_hf_median() {
    jq -r ".results[$2].median" "$1"
}
