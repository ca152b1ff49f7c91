#!/usr/bin/env bash
# Benchmark elf-db against the tools people use today for the same job:
#   - loading 100,000 JSON-lines rows into a learnings-like table (the legacy schema with its
#     four indexes, and the same table without them): elf-db insert --table against
#     `sqlite-utils insert --nl`, and against the sqlite3 CLI running the same INSERTs in one
#     transaction (the practical limit);
#   - the latency of one record through `elf-db insert --journal` in a live pipeline, against
#     the legacy way (one sqlite3 process per record);
#   - peak memory of insert and query at 10,000 and 1,000,000 rows (it must stay flat).
# Every database is in WAL mode with synchronous=FULL (sqlite-utils and sqlite3 keep SQLite's
# default, FULL; elf-db's default is FULL).
#
# Usage: bench/db.sh            (ROWS=100000 RUNS=5 BIG=1000000 LATENCY=300 to change)
# Prints a markdown table: operation | elf median | anchor median | ratio | target | met.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}
RUNS=${RUNS:-5}
BIG=${BIG:-1000000}
LATENCY=${LATENCY:-300}

for tool in hyperfine sqlite3 sqlite-utils jq awk; do
    command -v "$tool" > /dev/null || { echo "bench/db.sh: $tool is required" >&2; exit 1; }
done
cargo build --release >&2
ELF=$PWD/target/release/elf-db
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

median() { # hyperfine JSON, result index -> median seconds
    jq -r ".results[$2].median" "$1"
}
reset='rm -f w.db-wal w.db-shm; cp empty.db w.db'

# Every command runs through the same shell (stdin comes from a file).
hyperfine --warmup 1 --runs "$RUNS" --prepare "$reset" --export-json load.json \
    -n "elf-db insert --table" "'$ELF' insert --db w.db --table learnings < rows.jsonl > /dev/null" \
    -n "elf-db insert (records)" "'$ELF' insert --db w.db < records.jsonl > /dev/null" \
    -n "sqlite-utils insert --nl" "sqlite-utils insert w.db learnings rows.jsonl --nl" \
    -n "sqlite3 CLI, one transaction" "sqlite3 w.db < inserts.sql > /dev/null" >&2
elf_table=$(median load.json 0)
elf_records=$(median load.json 1)
sqlite_utils=$(median load.json 2)
sqlite3_cli=$(median load.json 3)
hyperfine --warmup 1 --runs "$RUNS" --prepare 'rm -f w.db-wal w.db-shm; cp plain.db w.db' --export-json plain.json \
    -n "elf-db insert --table (no indexes)" "'$ELF' insert --db w.db --table learnings < rows.jsonl > /dev/null" \
    -n "sqlite-utils insert --nl (no indexes)" "sqlite-utils insert w.db learnings rows.jsonl --nl" \
    -n "sqlite3 CLI, one transaction (no indexes)" "sqlite3 w.db < inserts.sql > /dev/null" >&2
plain_elf=$(median plain.json 0)
plain_utils=$(median plain.json 1)
plain_cli=$(median plain.json 2)

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
pct() { # percentile of the numbers on stdin, in seconds
    sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.6f", a[i] / 1e6 }'
}
latency_elf > lat_elf.txt
latency_elf_spawn > lat_spawn.txt
latency_sqlite3 > lat_sqlite3.txt

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

row() { # operation elf anchor ratio target met
    printf '| %s | %s | %s | %s | %s | %s |\n' "$@"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "yes" : "no" }'; }
speed() { awk -v a="$1" -v e="$2" 'BEGIN { r = a / e; if (r >= 1) printf "%.2fx faster", r; else printf "%.2fx slower", 1 / r }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? "yes" : "no" }'; }

echo
echo "elf-db benchmark, $ROWS rows, $(date -u +%Y-%m-%d), $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo '| operation | elf median | anchor median | ratio | target | met |'
echo '|---|---|---|---|---|---|'
r=$(ratio "$sqlite_utils" "$elf_table")
row "insert $ROWS rows, elf-db --table vs sqlite-utils insert --nl" "$(ms "$elf_table")" "$(ms "$sqlite_utils")" "$(speed "$sqlite_utils" "$elf_table")" ">= 5x faster" "$(ge "$r" 5)"
r=$(ratio "$elf_table" "$sqlite3_cli")
row "insert $ROWS rows, elf-db --table vs sqlite3 CLI (one transaction)" "$(ms "$elf_table")" "$(ms "$sqlite3_cli")" "${r}x the time" "<= 2x the time" "$(le "$r" 2)"
r=$(ratio "$plain_utils" "$plain_elf")
row "the same table without its indexes, vs sqlite-utils" "$(ms "$plain_elf")" "$(ms "$plain_utils")" "$(speed "$plain_utils" "$plain_elf")" ">= 5x faster" "$(ge "$r" 5)"
r=$(ratio "$plain_elf" "$plain_cli")
row "the same table without its indexes, vs sqlite3 CLI" "$(ms "$plain_elf")" "$(ms "$plain_cli")" "${r}x the time" "<= 2x the time" "$(le "$r" 2)"
r=$(ratio "$elf_records" "$sqlite3_cli")
row "insert $ROWS records (db form) vs sqlite3 CLI (one transaction)" "$(ms "$elf_records")" "$(ms "$sqlite3_cli")" "${r}x the time" "<= 2x the time" "$(le "$r" 2)"
e=$(pct 50 < lat_elf.txt)
a=$(pct 50 < lat_sqlite3.txt)
row "one record, insert --journal in a live pipeline vs one sqlite3 per record (p50)" "$(ms "$e")" "$(ms "$a")" "$(speed "$a" "$e")" "-" "-"
e=$(pct 99 < lat_elf.txt)
a=$(pct 99 < lat_sqlite3.txt)
row "the same, p99" "$(ms "$e")" "$(ms "$a")" "$(speed "$a" "$e")" "-" "-"
e=$(pct 50 < lat_spawn.txt)
a=$(pct 50 < lat_sqlite3.txt)
row "one record, one elf-db --journal process vs one sqlite3 process (p50)" "$(ms "$e")" "$(ms "$a")" "$(speed "$a" "$e")" "-" "-"
r=$(ratio "$insert_big" "$insert_small")
row "peak memory, insert $BIG vs 10000 rows" "$insert_big KiB" "$insert_small KiB" "${r}x" "flat (<= 1.5x)" "$(le "$r" 1.5)"
r=$(ratio "$query_big" "$query_small")
row "peak memory, query $BIG vs 10000 rows" "$query_big KiB" "$query_small KiB" "${r}x" "flat (<= 1.5x)" "$(le "$r" 1.5)"
