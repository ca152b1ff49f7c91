#!/usr/bin/env bash
# Late binding: one record through the tail of the ELF pipeline, one pipeline per record,
#   elf-db insert --journal | elf-write | elf-db exec --key fix | elf-commit | elf-db done
# with references ({"$ref":"/db/id"}, {"$join":[...]}) in the record, against the same pipeline
# with the three jq steps the scripts used before the tools resolved references (fill after the
# insert, fixup after elf-write, restore after the exec), side by side, records alternating
# between the two, heuristics and failures in turn.
# Prints a markdown table (bench/lib.sh describes the format): p50 and p99 latency per record.
#
# Usage: bench/refs.sh [RECORDS]
# REFS_RECORDS (200) records for each form (the argument wins).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need jq git
bench_build
records=${1:-${REFS_RECORDS:-$(bench_default 200 20)}}
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The three jq steps, as the scripts ran them between the tools.
cat >"$work/steps.jq" <<'JQ'
def fill:
  if has("error") then .
  elif .kind == "heuristic" then
    .write.content = "## H-\(.db.id): \(.heuristic.rule)\n\n**Confidence**: \(.heuristic.confidence)\n\n---\n\n"
  elif .kind == "failure" then
    .write.content += "\n<!-- elf:\(.key) -->\n"
  else . end;
def fixup:
  if has("error") then .
  else .row = .db
    | .db = (if .kind == "failure" then
        {sql: "UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path",
         params: {path: .write.path, id: .row.id}}
      else {sql: "SELECT :id", params: {id: .row.id}} end)
  end;
def restore: if has("row") then .db = .row | del(.row) else . end;
JQ
for step in fill fixup restore; do
    { cat "$work/steps.jq"; echo "$step"; } >"$work/$step.jq"
done

setup() { # home
    mkdir -p "$1/memory/failures" "$1/memory/heuristics"
    git init -q "$1"
    printf 'memory/index.db*\n' >"$1/.gitignore"
    git -C "$1" add .gitignore && git -C "$1" commit -q -m init
    elf-db exec --db "$1/memory/index.db" --file "$bench_root/bin-wrappers/lib/schema.sql"
}

# record FORM I: record I (a heuristic when I is even, a failure otherwise) in FORM (refs, jq).
record() {
    local form=$1 i=$2 path="memory/failures/20250101_same.md"
    local rule="Rule $i"
    if ((i % 2 == 0)); then
        if [[ $form == refs ]]; then
            # shellcheck disable=SC2016 # JSON, not expansions
            printf '{"key":"r%s","kind":"heuristic","db":{"table":"heuristics","values":{"domain":"bench","rule":"%s","confidence":0.7}},"write":{"path":"memory/heuristics/bench.md","mode":"append","header":"# Heuristics: bench\\n\\n","content":{"$join":["## H-",{"$ref":"/db/id"},": %s\\n\\n**Confidence**: 0.7\\n\\n---\\n\\n"]}},"commit":{"message":"heuristic: %s"}}\n' \
                "$i" "$rule" "$rule" "$rule"
        else
            printf '{"key":"j%s","kind":"heuristic","db":{"table":"heuristics","values":{"domain":"bench","rule":"%s","confidence":0.7}},"heuristic":{"rule":"%s","confidence":0.7},"write":{"path":"memory/heuristics/bench.md","mode":"append","header":"# Heuristics: bench\\n\\n"},"commit":{"message":"heuristic: %s"}}\n' \
                "$i" "$rule" "$rule" "$rule"
        fi
    else
        local fix=""
        # shellcheck disable=SC2016 # JSON, not expansions
        [[ $form == jq ]] || fix=',"fix":{"sql":"UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path","params":{"path":{"$ref":"/write/path"},"id":{"$ref":"/db/id"}}}'
        local marker=""
        [[ $form == jq ]] || marker="\\n<!-- elf:r$i -->\\n"
        printf '{"key":"%s%s","kind":"failure","db":{"table":"learnings","values":{"type":"failure","filepath":"%s","title":"Same %s"}},"write":{"path":"%s","mode":"create","unique":true,"content":"# Same %s\\n%s"},"commit":{"message":"failure: Same %s"}%s}\n' \
            "${form:0:1}" "$i" "$path" "$i" "$path" "$i" "$marker" "$i" "$fix"
    fi
}

# one FORM HOME I: one record through one pipeline; prints its latency in seconds.
one() {
    local form=$1 home=$2 i=$3 db=$2/memory/index.db t0 t1
    t0=$EPOCHREALTIME
    if [[ $form == refs ]]; then
        record refs "$i" |
            elf-db insert --journal --db "$db" |
            elf-write --root "$home" |
            elf-db exec --key fix --db "$db" |
            elf-commit --repo "$home" |
            elf-db "done" --db "$db" >/dev/null
    else
        record jq "$i" |
            elf-db insert --journal --db "$db" |
            jq -c -f "$work/fill.jq" |
            elf-write --root "$home" |
            jq -c -f "$work/fixup.jq" |
            elf-db exec --db "$db" |
            jq -c -f "$work/restore.jq" |
            elf-commit --repo "$home" |
            elf-db "done" --db "$db" >/dev/null
    fi
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

setup "$work/refs"
setup "$work/jq"
: >"$work/lat.refs"
: >"$work/lat.jq"
for i in $(seq "$records"); do
    one refs "$work/refs" "$i" >>"$work/lat.refs"
    one jq "$work/jq" "$i" >>"$work/lat.jq"
done
for form in refs jq; do
    home=$work/$form
    n=$(git -C "$home" rev-list --count HEAD)
    [[ $n -eq $((records + 1)) ]] || bench_die "$form: $((n - 1)) commits for $records records"
    pending=$(elf-db query --db "$home/memory/index.db" --format tsv "SELECT count(*) FROM elf_journal WHERE done_at IS NULL")
    [[ $pending == 0 ]] || bench_die "$form: $pending records left pending"
done
ids=$(grep -c '^## H-[1-9]' "$work/refs/memory/heuristics/bench.md")
[[ $ids -eq $((records / 2)) ]] || bench_die "refs: $ids headings with an id for $((records / 2)) heuristics"

bench_header
what="one record through insert --journal \\| elf-write \\| exec \\| elf-commit \\| done ($records records, one pipeline each): references vs three jq steps (jq $(jq --version))"
bench_time_row "$what: p50" "$(bench_pct 50 <"$work/lat.refs")" "$(bench_pct 50 <"$work/lat.jq")" 1
bench_time_row "$what: p99" "$(bench_pct 99 <"$work/lat.refs")" "$(bench_pct 99 <"$work/lat.jq")" 1
