#!/usr/bin/env bash
# elf-db benchmarks (issue 5) against the tools people use today for the same job:
#   - loading 100,000 JSON-lines rows into a learnings-like table (the legacy schema with its
#     four indexes, and the same table without them): elf-db insert --table against
#     `sqlite-utils insert --nl` (target: at least 5x faster), and against the sqlite3 CLI
#     running the same INSERTs in one transaction, the practical limit (target: within 2x);
#   - the latency of one record through `elf-db insert --journal` in a live pipeline, against
#     the legacy way (one sqlite3 process per record);
#   - peak memory of insert and query at 10,000 and 1,000,000 rows (it must stay flat).
# Every database is in WAL mode with synchronous=FULL (sqlite-utils and sqlite3 keep SQLite's
# default, FULL; elf-db's default is FULL).
#
# DB_ROWS (100000) rows loaded, DB_RUNS (5) runs of each load, DB_BIG (1000000) rows for the
# memory rows, DB_LATENCY (300) records timed one by one. Prints a markdown table (bench/lib.sh
# describes the format).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROWS=${DB_ROWS:-$(bench_default 100000 10000)}
RUNS=${DB_RUNS:-$(bench_default 5 2)}
BIG=${DB_BIG:-$(bench_default 1000000 100000)}
LATENCY=${DB_LATENCY:-$(bench_default 300 50)}

bench_need hyperfine sqlite3 sqlite-utils jq awk
bench_build
ELF=$ELF_BIN/elf-db
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# The legacy learnings table and its indexes.
cat > schema.sql <<'SQL'
CREATE TABLE learnings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    filepath TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT,
    tags TEXT,
    domain TEXT,
    severity INTEGER DEFAULT 3,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_learnings_type ON learnings(type);
CREATE INDEX idx_learnings_domain ON learnings(domain);
CREATE INDEX idx_learnings_tags ON learnings(tags);
CREATE INDEX idx_learnings_created_at ON learnings(created_at);
SQL
sqlite3 empty.db < schema.sql
sqlite3 empty.db 'PRAGMA journal_mode=WAL;' > /dev/null
# The same table without its indexes, where SQLite's own work weighs less.
grep -v '^CREATE INDEX' schema.sql | sqlite3 plain.db
sqlite3 plain.db 'PRAGMA journal_mode=WAL;' > /dev/null

# rows.jsonl: plain rows (sqlite-utils, elf-db --table); records.jsonl: the record form;
# inserts.sql: the same INSERTs for sqlite3, in one transaction.
gen() {
    awk -v n="$1" -v rows="$2" -v recs="$3" -v sql="$4" 'BEGIN {
        split("failure success heuristic experiment observation", types, " ")
        split("git testing build deploy docs", domains, " ")
        print "PRAGMA synchronous=FULL;\nBEGIN;" > sql
        for (i = 1; i <= n; i++) {
            t = types[i % 5 + 1]; d = domains[i % 5 + 1]; s = i % 5 + 1
            v = sprintf("\"type\":\"%s\",\"filepath\":\"memory/failures/20251201_title-%d.md\",\"title\":\"Title %d of a learning\",\"summary\":\"What happened, in one line of moderate length\",\"tags\":\"%s,tag%d\",\"domain\":\"%s\",\"severity\":%d", t, i, i, d, i % 50, d, s)
            print "{" v "}" > rows
            print "{\"db\":{\"table\":\"learnings\",\"values\":{" v "}}}" > recs
            printf "INSERT INTO learnings(type,filepath,title,summary,tags,domain,severity) VALUES (%s,%s,%s,%s,%s,%s,%d);\n", \
                "'"'"'" t "'"'"'", "'"'"'memory/failures/20251201_title-" i ".md'"'"'", "'"'"'Title " i " of a learning'"'"'", \
                "'"'"'What happened, in one line of moderate length'"'"'", "'"'"'" d ",tag" (i % 50) "'"'"'", "'"'"'" d "'"'"'", s > sql
        }
        print "COMMIT;" > sql
    }'
}
gen "$ROWS" rows.jsonl records.jsonl inserts.sql

reset='rm -f w.db-wal w.db-shm; cp empty.db w.db'

# Every command runs through the same shell (stdin comes from a file).
hyperfine --warmup 1 --runs "$RUNS" --prepare "$reset" --export-json load.json \
    -n "elf-db insert --table" "'$ELF' insert --db w.db --table learnings < rows.jsonl > /dev/null" \
    -n "elf-db insert (records)" "'$ELF' insert --db w.db < records.jsonl > /dev/null" \
    -n "sqlite-utils insert --nl" "sqlite-utils insert w.db learnings rows.jsonl --nl" \
    -n "sqlite3 CLI, one transaction" "sqlite3 w.db < inserts.sql > /dev/null" >&2
elf_table=$(bench_hf_median load.json 0)
elf_records=$(bench_hf_median load.json 1)
sqlite_utils=$(bench_hf_median load.json 2)
sqlite3_cli=$(bench_hf_median load.json 3)
hyperfine --warmup 1 --runs "$RUNS" --prepare 'rm -f w.db-wal w.db-shm; cp plain.db w.db' --export-json plain.json \
    -n "elf-db insert --table (no indexes)" "'$ELF' insert --db w.db --table learnings < rows.jsonl > /dev/null" \
    -n "sqlite-utils insert --nl (no indexes)" "sqlite-utils insert w.db learnings rows.jsonl --nl" \
    -n "sqlite3 CLI, one transaction (no indexes)" "sqlite3 w.db < inserts.sql > /dev/null" >&2
plain_elf=$(bench_hf_median plain.json 0)
plain_utils=$(bench_hf_median plain.json 1)
plain_cli=$(bench_hf_median plain.json 2)

# Latency of one record through a live `elf-db insert --journal`, and the legacy way: one
# sqlite3 process per record. Microseconds per record, median and 99th percentile.
latency_elf() {
    cp empty.db lat.db
    coproc ELFDB { "$ELF" --db lat.db insert --journal; }
    local i t0 t1 line
    for ((i = 0; i < LATENCY; i++)); do
        t0=$EPOCHREALTIME
        printf '{"db":{"table":"learnings","values":{"type":"failure","filepath":"f%d","title":"t%d"}}}\n' "$i" "$i" >&"${ELFDB[1]}"
        IFS= read -r line <&"${ELFDB[0]}"
        t1=$EPOCHREALTIME
        [[ $line == *'"id":'* ]] || { echo "bench/db.sh: bad answer: $line" >&2; exit 1; }
        echo $(( ${t1/./} - ${t0/./} ))
    done
    local pid=$ELFDB_PID fd=${ELFDB[1]}
    exec {fd}>&-
    wait "$pid"
}
latency_sqlite3() {
    cp empty.db lat3.db
    local i t0 t1 line
    for ((i = 0; i < LATENCY; i++)); do
        t0=$EPOCHREALTIME
        line=$(sqlite3 -cmd '.timeout 10000' lat3.db \
            "INSERT INTO learnings(type,filepath,title) VALUES ('failure','f$i','t$i'); SELECT last_insert_rowid();")
        t1=$EPOCHREALTIME
        [[ -n $line ]] || exit 1
        echo $(( ${t1/./} - ${t0/./} ))
    done
}
latency_elf_spawn() {
    cp empty.db lat2.db
    local i t0 t1 line
    for ((i = 0; i < LATENCY; i++)); do
        t0=$EPOCHREALTIME
        line=$(printf '{"db":{"table":"learnings","values":{"type":"failure","filepath":"f%d","title":"t%d"}}}\n' "$i" "$i" |
            "$ELF" --db lat2.db insert --journal)
        t1=$EPOCHREALTIME
        [[ -n $line ]] || exit 1
        echo $(( ${t1/./} - ${t0/./} ))
    done
}
# The latencies in seconds, one per line.
seconds() { awk '{ printf "%.6f\n", $1 / 1e6 }'; }
latency_elf | seconds >lat_elf.txt
latency_elf_spawn | seconds >lat_spawn.txt
latency_sqlite3 | seconds >lat_sqlite3.txt

# Peak resident memory (KiB) of a command reading stdin from a file.
peak_kib() { # file-for-stdin command...
    local input=$1
    shift
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%M' -o rss.txt "$@" < "$input" > /dev/null
        cat rss.txt
    else
        "$@" < "$input" > /dev/null &
        local pid=$! hwm=0 v
        while v=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2> /dev/null); do
            [[ -n $v ]] && hwm=$v
            sleep 0.02
        done
        wait "$pid"
        echo "$hwm"
    fi
}
gen 10000 /dev/null small-records.jsonl /dev/null
gen "$BIG" /dev/null big-records.jsonl /dev/null
cp empty.db m.db
insert_small=$(peak_kib small-records.jsonl "$ELF" --db m.db insert)
query_small=$(peak_kib /dev/null "$ELF" --db m.db query 'SELECT * FROM learnings')
cp empty.db m.db
insert_big=$(peak_kib big-records.jsonl "$ELF" --db m.db insert)
query_big=$(peak_kib /dev/null "$ELF" --db m.db query 'SELECT * FROM learnings')

echo "bench/db.sh: $ROWS rows, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)" >&2
bench_header
bench_time_row "insert $ROWS rows: \`elf-db insert --table\` vs \`sqlite-utils insert --nl\`" "$elf_table" "$sqlite_utils" 0.2
bench_time_row "insert $ROWS rows: \`elf-db insert --table\` vs sqlite3 CLI, same INSERTs in one transaction" "$elf_table" "$sqlite3_cli" 2
bench_time_row "the same table without its indexes, vs sqlite-utils" "$plain_elf" "$plain_utils" 0.2
bench_time_row "the same table without its indexes, vs sqlite3 CLI" "$plain_elf" "$plain_cli" 2
bench_time_row "insert $ROWS records (db form) vs sqlite3 CLI, one transaction" "$elf_records" "$sqlite3_cli" 2
bench_time_row "one record through a live \`elf-db insert --journal\` vs one sqlite3 process per record, p50 ($LATENCY records)" \
    "$(bench_pct 50 <lat_elf.txt)" "$(bench_pct 50 <lat_sqlite3.txt)" -
bench_time_row "the same, p99" "$(bench_pct 99 <lat_elf.txt)" "$(bench_pct 99 <lat_sqlite3.txt)" -
bench_time_row "one record, one \`elf-db insert --journal\` process vs one sqlite3 process, p50" \
    "$(bench_pct 50 <lat_spawn.txt)" "$(bench_pct 50 <lat_sqlite3.txt)" -
memory_row() { # what big small
    bench_row "peak memory of \`elf-db $1\`: $BIG rows (elf column) vs 10000 rows (anchor column)" "$2 KiB" "$3 KiB" \
        "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.3g", a / b }')" "<= 1.5 (flat)" \
        "$(awk -v a="$2" -v b="$3" 'BEGIN { print (a / b <= 1.5) ? "yes" : "no" }')"
}
memory_row insert "$insert_big" "$insert_small"
memory_row query "$query_big" "$query_small"
