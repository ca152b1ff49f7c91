#!/usr/bin/env bash
# End to end: recording failures with bin-wrappers/record-failure.sh against the same job done
# carefully in plain bash (flock(1) + the sqlite3 CLI with a busy timeout + a temporary file and
# mv + git add and git commit -- path), at 1, 8 and 20 concurrent writers.
# Prints a markdown table (bench/lib.sh describes the format): for each number of writers, the
# throughput, the p50 and p99 latency of one record, and the records lost (started, but not
# in all three of the database, the files and the commits).
#
# Usage: bench/e2e.sh [RECORDS_PER_WRITER]
# E2E_PER (10) records per writer (the argument wins); E2E_WRITERS ("1 8 20") the writer counts.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need flock sqlite3 git
bench_build
per=${1:-${E2E_PER:-$(bench_default 10 3)}}
read -ra writer_counts <<<"${E2E_WRITERS:-1 8 20}"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
wrappers=$bench_root/bin-wrappers
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The careful plain-bash recorder: one failure, with the legacy file format.
careful_record() { # home title
    local home=$1 title=$2 day slug rel tmp id
    day=$(date +%Y%m%d)
    slug=$(printf '%s' "$title" | tr '[:upper:]' '[:lower:]' | tr ' ' '-' | tr -cd 'a-z0-9-' | cut -c1-100)
    rel=memory/failures/${day}_${slug}.md
    id=$(sqlite3 -cmd ".timeout 10000" "$home/memory/index.db" \
        ".param set :t '$title'" ".param set :p '$rel'" \
        "INSERT INTO learnings(type, filepath, title, domain, severity) VALUES ('failure', :p, :t, 'bench', 3); SELECT last_insert_rowid();")
    tmp=$(mktemp "$home/memory/failures/.tmp.XXXXXX")
    printf '# %s\n\n**Domain**: bench\n**Severity**: 3\n**Tags**: \n**Date**: %s\n\n## Summary\n\n\n' \
        "$title" "$(date +%Y-%m-%d)" >"$tmp"
    mv "$tmp" "$home/$rel"
    # shellcheck disable=SC2016 # expanded by the inner shell
    flock -w 60 "$home/.git/claude-lock" sh -c 'cd "$1" && git add -- "$2" && git commit -q -m "failure: $3" -- "$2"' \
        sh "$home" "$rel" "$title"
    [ -n "$id" ]
}

setup_careful() { # home
    mkdir -p "$1/memory/failures"
    git init -q "$1"
    sqlite3 "$1/memory/index.db" "PRAGMA journal_mode=WAL;" <"$wrappers/lib/schema.sql" >/dev/null
    sqlite3 "$1/memory/index.db" <"$wrappers/lib/schema.sql"
    printf 'memory/index.db*\n' >"$1/.gitignore"
    git -C "$1" add .gitignore && git -C "$1" commit -q -m init
}

# The floor of this machine for a script like the wrappers: bash, the wrappers' library sourced,
# and as many program starts as a record makes (7 besides bash), each a static program that does
# nothing (elf-lock -V). No design that starts these programs can record faster.
floor_record() {
    local i
    # shellcheck disable=SC2016 # expanded by the inner bash
    bash -c '. "$1/bin-wrappers/lib/elf.sh"; for i in 1 2 3 4 5 6 7; do elf-lock -V >/dev/null; done' bash "$bench_root"
}

# writer TOOL HOME W: PER records, one latency (seconds) per line in $work/lat.W, and one line
# per record that failed in $work/failed.W
writer() {
    local tool=$1 home=$2 w=$3 i t0 t1 st
    : >"$work/failed.$w"
    for i in $(seq "$per"); do
        t0=$EPOCHREALTIME
        st=0
        if [ "$tool" = elf ]; then
            ELF_HOME=$home "$wrappers/record-failure.sh" --title "writer $w record $i" --domain bench >/dev/null 2>>"$work/err.$w" || st=$?
        elif [ "$tool" = floor ]; then
            floor_record || st=$?
        else
            careful_record "$home" "writer $w record $i" >/dev/null 2>>"$work/err.$w" || st=$?
        fi
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' >>"$work/lat.$w"
        [ "$st" -eq 0 ] || echo "record $i: exit $st" >>"$work/failed.$w"
    done
}

# run TOOL WRITERS: sets thr, p50, p99 (seconds), lost and detail for that run.
run() {
    local tool=$1 n=$2 home=$work/$1-$2 start end w rows files commits failed
    rm -f "$work"/lat.* "$work"/failed.* "$work"/err.*
    if [ "$tool" = elf ]; then
        ELF_HOME=$home "$wrappers/record-failure.sh" --title warmup --domain bench >/dev/null
    elif [ "$tool" = careful-bash ]; then
        setup_careful "$home"
    fi
    start=$EPOCHREALTIME
    for w in $(seq "$n"); do writer "$tool" "$home" "$w" & done
    wait
    end=$EPOCHREALTIME
    if [ "$tool" = floor ]; then
        thr=$(awk -v r=$((n * per)) -v a="$start" -v b="$end" 'BEGIN { print r / (b - a) }')
        p50=$(cat "$work"/lat.* | bench_pct 50)
        echo "bench/e2e.sh: floor (bash + 7 static programs that do nothing), $n writers: $(printf '%.1f' "$thr") records/s, p50 $(bench_time "$p50")" >&2
        return
    fi
    rows=$(sqlite3 "$home/memory/index.db" "SELECT COUNT(*) FROM learnings WHERE title LIKE 'writer %'")
    files=$(find "$home/memory/failures" -name '*writer-*' | wc -l)
    commits=$(git -C "$home" log --format=%s | grep -c '^failure: writer ' || true)
    failed=$(cat "$work"/failed.* | wc -l)
    lost=$((n * per - $(printf '%s\n' "$rows" "$files" "$commits" | sort -n | head -1)))
    thr=$(awk -v r=$((n * per)) -v a="$start" -v b="$end" 'BEGIN { print r / (b - a) }')
    p50=$(cat "$work"/lat.* | bench_pct 50)
    p99=$(cat "$work"/lat.* | bench_pct 99)
    detail="$lost of $((n * per)) ($rows rows, $files files, $commits commits; $failed runs exited non-zero)"
    echo "bench/e2e.sh: $tool, $n writers: $(printf '%.1f' "$thr") records/s, p50 $(bench_time "$p50"), p99 $(bench_time "$p99"), lost $detail" >&2
    cat "$work"/err.* | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' >&2
}

bench_header
for n in "${writer_counts[@]}"; do
    run elf "$n"
    e_thr=$thr e_p50=$p50 e_p99=$p99 e_lost=$lost e_detail=$detail
    run careful-bash "$n"
    c_thr=$thr c_p50=$p50 c_p99=$p99
    run floor "$n"
    f_thr=$thr f_p50=$p50
    thr=$c_thr p50=$c_p50 p99=$c_p99
    what="end to end, $n writer$([ "$n" -eq 1 ] || echo s) x $per records: \`record-failure.sh\` vs careful bash"
    # The targets: one writer, p50 at or below the careful bash's; 20 writers, at least 3x its
    # throughput and a p99 at or below its p99.
    t_thr=- m_thr=- t_p50=- t_p99=-
    if [ "$n" -ge 20 ]; then
        t_thr=">= 3"
        m_thr=$(awk -v a="$e_thr" -v b="$thr" 'BEGIN { print (a / b >= 3) ? "yes" : "no" }')
        t_p99=1
    fi
    [ "$n" -ne 1 ] || t_p50=1
    bench_row "$what: throughput" "$(printf '%.1f' "$e_thr") records/s" "$(printf '%.1f' "$thr") records/s" \
        "$(awk -v a="$e_thr" -v b="$thr" 'BEGIN { printf "%.3g", a / b }')" "$t_thr" "$m_thr"
    bench_row "$what: throughput, this machine's floor (bash + 7 programs that do nothing, as many writers)" \
        "$(printf '%.1f' "$f_thr") records/s (p50 $(bench_time "$f_p50"))" "$(printf '%.1f' "$thr") records/s" \
        "$(awk -v a="$f_thr" -v b="$thr" 'BEGIN { printf "%.3g", a / b }')" - -
    bench_time_row "$what: p50 latency per record" "$e_p50" "$p50" "$t_p50"
    bench_time_row "$what: p99 latency per record" "$e_p99" "$p99" "$t_p99"
    bench_row "$what: records lost" "$e_detail" "$detail" - "0 lost (elf)" "$([ "$e_lost" -eq 0 ] && echo yes || echo no)"
done
