#!/usr/bin/env bash
# End to end: recording failures with bin-wrappers/record-failure.sh against the same job done
# carefully in plain bash (flock(1) + the sqlite3 CLI with a busy timeout + a temporary file and
# mv + git add and git commit -- path), at 1, 8 and 20 concurrent writers.
# Prints markdown rows: writers, tool, records, lost, throughput, p50 and p99 latency.
# Usage: bench/e2e.sh [RECORDS_PER_WRITER]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-10}
cargo build --release --quiet
export PATH=$PWD/target/release:$PATH
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
wrappers=$PWD/bin-wrappers
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

# writer TOOL HOME W: PER records, one latency (ns) per line in $work/lat.W
writer() {
    local tool=$1 home=$2 w=$3 i t0 t1
    for i in $(seq "$per"); do
        t0=$(date +%s%N)
        if [ "$tool" = elf ]; then
            ELF_HOME=$home "$wrappers/record-failure.sh" --title "writer $w record $i" --domain bench >/dev/null 2>&1 || true
        else
            careful_record "$home" "writer $w record $i" >/dev/null 2>&1 || true
        fi
        t1=$(date +%s%N)
        echo $((t1 - t0)) >>"$work/lat.$w"
    done
}

run() { # tool writers
    local tool=$1 n=$2 home=$work/$1-$2 start end w rows files commits lost
    rm -f "$work"/lat.*
    if [ "$tool" = elf ]; then
        ELF_HOME=$home "$wrappers/record-failure.sh" --title warmup --domain bench >/dev/null
    else
        setup_careful "$home"
    fi
    start=$(date +%s%N)
    for w in $(seq "$n"); do writer "$tool" "$home" "$w" & done
    wait
    end=$(date +%s%N)
    rows=$(sqlite3 "$home/memory/index.db" "SELECT COUNT(*) FROM learnings WHERE title LIKE 'writer %'")
    files=$(find "$home/memory/failures" -name '*writer-*' | wc -l)
    commits=$(git -C "$home" log --format=%s | grep -c '^failure: writer ' || true)
    lost=$((n * per - $(printf '%s\n' "$rows" "$files" "$commits" | sort -n | head -1)))
    sort -n "$work"/lat.* | awk -v n="$n" -v tool="$tool" -v total=$((n * per)) -v secs="$(( (end - start) / 1000000 ))" \
        -v lost="$lost" -v rows="$rows" -v files="$files" -v commits="$commits" '
        { v[NR] = $1 }
        END {
            p50 = v[int((NR - 1) * 0.50) + 1] / 1e6; p99 = v[int((NR - 1) * 0.99) + 1] / 1e6
            printf "| %d | %s | %d (rows %d, files %d, commits %d) | %d | %.1f rec/s | %.0f ms | %.0f ms |\n",
                n, tool, total, rows, files, commits, lost, total / (secs / 1000), p50, p99
        }'
}

echo "| writers | tool | records | lost | throughput | p50 latency | p99 latency |"
echo "|---|---|---|---|---|---|---|"
for n in 1 8 20; do
    run elf "$n"
    run careful-bash "$n"
done
