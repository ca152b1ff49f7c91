#!/usr/bin/env bash
# elf-write benchmarks (issue 4) against the tools people use today: sponge(1),
# `cat > tmp && mv tmp F` and `cat >> F`. Prints a markdown table (bench/lib.sh describes the
# format; hyperfine's progress goes to stderr).
#
#   bench/write.sh                      # the full run (a few minutes)
#   BENCH_QUICK=1 bench/write.sh        # fewer runs, for a smoke test
#   WRITE_ONLY=replace bench/write.sh   # one section: replace, stream or append
#
# WRITE_RUNS (40) minimum hyperfine runs of the one-invocation rows; WRITE_RECORDS (10000)
# records streamed, and as many sponge runs; WRITE_STREAM_RUNS (2) runs of the streaming rows.
#
# Durability is compared like with like: elf-write --no-sync against the anchors as they are
# (no fsync), and elf-write (fsync of the file and its folder) against the anchors followed by
# `sync FILE FOLDER`. Each timed replace writes content that differs from what is there, so
# elf-write's "already there" shortcut never kicks in.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need hyperfine sponge jq
bench_build
ew=$ELF_BIN/elf-write

work=$(mktemp -d "${TMPDIR:-/tmp}/elf-write-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

runs=(--warmup "$(bench_default 5 2)" --min-runs "${WRITE_RUNS:-$(bench_default 40 10)}")
stream_runs=(--runs "${WRITE_STREAM_RUNS:-$(bench_default 2 1)}")
records=${WRITE_RECORDS:-$(bench_default 10000 1000)}

# 4 KiB of text, and a different content for the file before each timed run.
head -c 3072 /dev/urandom | base64 -w0 | head -c 4095 > in4k
printf '\n' >> in4k
printf 'old\n' > old

rows=()

# row NAME MAX_RATIO ELF_CMD ANCHOR_CMD [hyperfine options...]
# MAX_RATIO is the target for elf/anchor ("-" when the row only informs).
row() {
    local name=$1 target=$2 elf=$3 anchor=$4
    shift 4
    hyperfine -S bash --style basic "$@" --export-json result.json "$elf" "$anchor" >&2
    rows+=("$(bench_time_row "$name" "$(bench_hf_median result.json 0)" "$(bench_hf_median result.json 1)" "$target")")
}

section() { [[ -z ${WRITE_ONLY:-} || ${WRITE_ONLY} == "$1" ]]; }

# 1. One invocation, a 4 KiB file.
if section replace; then
row "replace 4 KiB, no fsync: elf-write --no-sync F vs sponge F" 1.2 \
    "$ew --no-sync F < in4k" "sponge F < in4k" \
    --prepare "cp old F" "${runs[@]}"
row "replace 4 KiB, no fsync: elf-write --no-sync F vs cat > tmp && mv tmp F" - \
    "$ew --no-sync F < in4k" "cat < in4k > tmp && mv tmp F" \
    --prepare "cp old F" "${runs[@]}"
row "replace 4 KiB, fsync: elf-write F vs sponge F && sync F ." 1.2 \
    "$ew F < in4k" "sponge F < in4k && sync F ." \
    --prepare "cp old F" "${runs[@]}"
row "replace 4 KiB, fsync: elf-write F vs cat > tmp && sync tmp && mv tmp F && sync ." - \
    "$ew F < in4k" "cat < in4k > tmp && sync tmp && mv tmp F && sync ." \
    --prepare "cp old F" "${runs[@]}"

fi

# 2. Streaming: N records through one elf-write against N sponge runs (100 files, each
#    rewritten N/100 times with new content).
if section stream; then
mkdir -p s1 s2 in
pad=$(head -c 4000 in4k)
awk -v n="$records" -v pad="$pad" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"key\":\"k%d\",\"write\":{\"path\":\"f%d\",\"content\":\"%d %s\\n\"}}\n", i, i % 100, i, pad
}' > records.jsonl
for ((j = 0; j < 100; j++)); do printf '%d %s\n' "$j" "$pad" > "in/$j"; done
cat > sponge-loop.sh <<EOF
for ((i = 0; i < $records; i++)); do sponge "s2/f\$((i % 100))" < "in/\$((i % 100))"; done
EOF
cat > sponge-sync-loop.sh <<EOF
for ((i = 0; i < $records; i++)); do
    sponge "s2/f\$((i % 100))" < "in/\$((i % 100))" && sync "s2/f\$((i % 100))" s2
done
EOF
# The streaming target (20x faster) is judged at equal durability (the fsync row) and on tmpfs;
# without fsync on a disk, both sides wait on the same file system (see the C floor below).
row "stream $records records, no fsync: one elf-write --no-sync vs $records sponge runs" - \
    "$ew --no-sync --root s1 < records.jsonl > /dev/null" "bash sponge-loop.sh" \
    "${stream_runs[@]}"
row "stream $records records, fsync: one elf-write vs $records x (sponge && sync)" 0.05 \
    "$ew --root s1 < records.jsonl > /dev/null" "bash sponge-sync-loop.sh" \
    "${stream_runs[@]}"
row "stream $records records: one elf-write (fsync, the default) vs $records sponge runs (no fsync)" - \
    "$ew --root s1 < records.jsonl > /dev/null" "bash sponge-loop.sh" \
    "${stream_runs[@]}"

# The file system's own floor for the no-fsync stream: a C loop that does nothing but what any
# atomic replace must (create a temporary file, write 4 KiB, rename it over the target), with
# no JSON, no locks, no checks. On ext4 the rename over an existing file starts the writeback
# of the new one (auto_da_alloc), which is most of the cost.
if command -v cc > /dev/null 2>&1; then
    cat > floor.c <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10000, d = open(argc > 2 ? argv[2] : ".", O_RDONLY);
    char buf[4005], t[64], f[64];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, ".t%d", i);
        snprintf(f, sizeof f, "f%d", i % 100);
        int fd = openat(d, t, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || renameat(d, t, d, f)) return 1;
        close(fd);
    }
    return 0;
}
C
    cc -O2 -o floor floor.c
    mkdir -p s3
    row "floor: $records x (create, write 4 KiB, rename over) in a C loop vs $records sponge runs" - \
        "./floor $records s3" "bash sponge-loop.sh" "${stream_runs[@]}"
fi

# The same on tmpfs, where the file system costs little: what is left is each tool's own cost.
if shm=$(mktemp -d /dev/shm/elf-write-bench.XXXXXX 2>/dev/null); then
    trap 'rm -rf "$work" "$shm"' EXIT
    mkdir -p "$shm/s1" "$shm/s2" "$shm/tmp"
    cp -r in "$shm/"
    sed "s|s2/|$shm/s2/|g; s|in/|$shm/in/|g" sponge-loop.sh > sponge-loop-shm.sh
    row "stream $records records on tmpfs, no fsync: one elf-write --no-sync vs $records sponge runs" 0.05 \
        "$ew --no-sync --root $shm/s1 < records.jsonl > /dev/null" "TMPDIR=$shm/tmp bash sponge-loop-shm.sh" \
        "${stream_runs[@]}"
fi

fi

# 3. Appends: the cost of one append as the file grows (the whole file is rewritten).
if section append; then
printf '## H-1: a rule\n\n**Confidence**: 0.7\n\nAn explanation of a few words.\n\n---\n\n' > entry
for size in 4 1024 8192; do
    head -c $((size * 1024)) /dev/zero | tr '\0' 'x' > "base$size"
    row "append to a $size KiB file, no fsync: elf-write -a --no-sync --key K vs cat >>" - \
        "$ew -a --no-sync --key k\$RANDOM\$RANDOM A < entry" "cat entry >> A" \
        --prepare "cp base$size A" "${runs[@]}"
done
row "append to a 1024 KiB file, fsync: elf-write -a --key K vs cat >> && sync" - \
    "$ew -a --key k\$RANDOM\$RANDOM A < entry" "cat entry >> A && sync A" \
    --prepare "cp base1024 A" "${runs[@]}"
fi

echo "bench/write.sh: elf-write $("$ew" --version | cut -d' ' -f2), $(nproc) cores, $(uname -sr), $(df -T . | awk 'NR == 2 { print $2 }') on $(df . | awk 'NR == 2 { print $1 }')" >&2
bench_header
printf '%s\n' "${rows[@]}"
