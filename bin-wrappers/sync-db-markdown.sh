#!/bin/bash
# sync-db-markdown.sh: compare the markdown of an ELF home with its index, entry by entry, and
# with --fix repair every difference faithfully.
#
# Usage: sync-db-markdown.sh [--fix] [--verbose]
# Exit (like diff): 0 in sync; 1 differences found (after --fix: differences remain); >1 error.
set -euo pipefail
elf_self=${BASH_SOURCE[0]}
[[ $elf_self == */* ]] || elf_self=./$elf_self
[ ! -L "$elf_self" ] || elf_self=$(readlink -f "$elf_self")
# shellcheck source=lib/elf.sh
. "${elf_self%/*}/lib/elf.sh"
elf_init sync-db-markdown

usage() {
    cat <<'USAGE'
Usage: sync-db-markdown.sh [--fix] [--verbose]

Compares memory/failures/*.md with the failure rows, and every "## H-<id>" entry of
memory/heuristics/*.md with the heuristic rows, and reports every difference:
  failure file without row, failure row without file,
  heuristic entry without row (H-0 and duplicate headings included), heuristic row without entry,
and every record set aside because it could not be finished (with the elf-db commands that
retry it or give it up; --fix leaves those to you). Rows of records still being recorded are
not differences.
--fix first completes interrupted records, then repairs each difference from the data itself:
a row is made from a file's fields, a file or an entry from a row's fields, and a renumbered
heading takes its new row's id. Repairs are committed in one commit.
--verbose also prints what was compared and each repair.
Environment: ELF_HOME (default ~/.claude/emergent-learning).
Exit: 0 in sync; 1 differences (after --fix: differences remain); 64 bad usage; >1 error:
66 no home (or no database, without --fix); 74 I/O error (disk full, read-only home with
--fix, a database file that is not a database); 75 busy; 77 permission denied. Errors are
one line.
USAGE
}

fix=""
verbose=""
while [ $# -gt 0 ]; do
    case $1 in
        --fix) fix=1 ;;
        --verbose | -v) verbose=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) elf_die 64 "unknown argument $(printf '%q' "$1") (see --help)" ;;
    esac
    shift
done

[ -d "$ELF_HOME/memory" ] || elf_die 66 "no ELF home at $ELF_HOME"
# A database that is there but cannot be read stops both modes in one line (--fix makes a
# missing one, and rows from the markdown).
[ ! -e "$ELF_DB" ] || elf_db_readable

# --fix runs whole under the drain lock (taken by this shell through elf-lock's descriptor
# form, held until it exits), so no record is drained meanwhile; records journaled meanwhile
# wait, pending, and are left out of the comparison.
if [ -n "$fix" ]; then
    elf_home_ready
    for w in "${ELF_WARNINGS[@]}"; do elf_warn "$w"; done
    [ ! -L "$ELF_DRAIN_LOCK" ] || elf_die 77 "$ELF_DRAIN_LOCK is a symbolic link; refusing to follow it; nothing was repaired"
    exec {drain_fd}>>"$ELF_DRAIN_LOCK" || elf_die 74 "cannot open the drain lock $ELF_DRAIN_LOCK; nothing was repaired"
    status=0
    err=$(elf-lock -q -w "$ELF_TIMEOUT" "$drain_fd" 2>&1) || status=$?
    if [ "$status" -eq 75 ]; then
        elf_die 75 "the drain lock $ELF_DRAIN_LOCK stayed held for ${ELF_TIMEOUT}s (ELF_LOCK_TIMEOUT); nothing was repaired"
    elif [ "$status" -ne 0 ]; then
        elf_exit_status "$status" "cannot take the drain lock: $(elf_reason "$err" "$status"); nothing was repaired"
    fi
fi

say() { [ -z "$verbose" ] || printf '%s\n' "$*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# collect: the four sets as one JSON object in $work/state.json.
collect() {
    local f rel
    : >"$work/files"
    : >"$work/entries"
    shopt -s nullglob
    : >"$work/odd"
    for f in "$ELF_HOME"/memory/failures/*.md; do
        rel=memory/failures/${f##*/}
        [ "${f##*/}" = TEMPLATE.md ] && continue
        # Only regular files are read: a folder, a FIFO, a device or a symbolic link named *.md
        # is reported and left alone (reading a FIFO would hang).
        if [ ! -f "$f" ] || [ -L "$f" ]; then
            printf '%s\n' "$rel" >>"$work/odd"
            continue
        fi
        jq -n --arg p "$rel" '$p' >>"$work/files"
    done
    for f in "$ELF_HOME"/memory/heuristics/*.md; do
        [ "${f##*/}" = TEMPLATE.md ] && continue
        rel=memory/heuristics/${f##*/}
        if [ ! -f "$f" ] || [ -L "$f" ]; then
            printf '%s\n' "$rel" >>"$work/odd"
            continue
        fi
        # shellcheck disable=SC2094 # reads $f, appends to another file
        jq -Rsc -L "$ELF_LIB" --arg p "$rel" --arg d "$(basename "$f" .md)" \
            'include "elf"; heuristic_entries[] + {path: $p, domain: $d}' <"$f" >>"$work/entries"
    done
    shopt -u nullglob
    # The rows of records still in the journal (pending: being recorded right now, or waiting
    # for the next drain; set aside: listed below) are not differences: their files are not
    # written yet.
    local journal inflight_l="" inflight_h="" inflight='{"h":[],"f":[]}'
    journal=$(elf-db query --db "$ELF_DB" --format tsv \
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'elf_journal'")
    : >"$work/setaside"
    if [ "$journal" = 1 ]; then
        inflight_l="AND id NOT IN (SELECT json_extract(ids, '\$[0].id') FROM elf_journal WHERE done_at IS NULL AND json_extract(record, '\$.db.table') = 'learnings')"
        inflight_h="WHERE id NOT IN (SELECT json_extract(ids, '\$[0].id') FROM elf_journal WHERE done_at IS NULL AND json_extract(record, '\$.db.table') = 'heuristics')"
        # Their entries and files too: the heuristics' ids, the failures' paths (or the
        # NAME-N.md elf-write takes when NAME.md is taken).
        inflight=$(elf-db query --db "$ELF_DB" \
            "SELECT json_object(
                'h', (SELECT json_group_array(json_extract(ids, '\$[0].id')) FROM elf_journal
                      WHERE done_at IS NULL AND json_extract(record, '\$.db.table') = 'heuristics'),
                'f', (SELECT json_group_array(json_extract(record, '\$.write.path')) FROM elf_journal
                      WHERE done_at IS NULL AND json_extract(record, '\$.db.table') = 'learnings')) AS j" |
            jq -c '.j | fromjson | {h: (.h | map(select(. != null))), f: (.f | map(select(. != null)))}')
        elf-db pending --db "$ELF_DB" --set-aside |
            jq -r -L "$ELF_LIB" 'include "elf";
                "set-aside record: \(.key | term) (\(.kind // "record" | term)): \(.set_aside.error.message // "failed" | term) (elf-db retry \(.key | term) tries it again; elf-db drop \(.key | term) gives it up)"' \
                >"$work/setaside"
    fi
    elf-db query --db "$ELF_DB" "SELECT id, filepath FROM learnings WHERE type = 'failure' $inflight_l ORDER BY id" >"$work/frows"
    elf-db query --db "$ELF_DB" "SELECT id, domain, rule FROM heuristics $inflight_h ORDER BY id" >"$work/hrows"
    jq -n --slurpfile files "$work/files" --slurpfile frows "$work/frows" \
        --slurpfile entries "$work/entries" --slurpfile hrows "$work/hrows" --argjson inflight "$inflight" '
        def mine($p): . as $q | $p == $q or ($p | startswith(($q | rtrimstr(".md")) + "-"));
        {files: ($files | map(select(. as $p | $inflight.f | any(mine($p)) | not))),
         frows: $frows,
         entries: ($entries | map(select(.id as $i | $inflight.h | any(. == $i) | not))),
         hrows: $hrows}' >"$work/state.json"
    say "compared $(jq '.files | length' "$work/state.json") failure files with $(jq '.frows | length' "$work/state.json") failure rows," \
        "$(jq '.entries | length' "$work/state.json") heuristic entries with $(jq '.hrows | length' "$work/state.json") heuristic rows"
    jq -c -L "$ELF_LIB" 'include "elf"; differences[]' "$work/state.json" >"$work/diffs"
}

report() {
    jq -r -L "$ELF_LIB" 'include "elf"; difference_line' "$work/diffs"
    cat "$work/setaside"
    jq -Rr -L "$ELF_LIB" 'include "elf"; "not a regular file, left alone: \(term)"' "$work/odd"
}

# differences: how many differences and set-aside records there are.
differences() {
    echo $(($(wc -l <"$work/diffs") + $(wc -l <"$work/setaside") + $(wc -l <"$work/odd")))
}

# repair: fix each difference in $work/diffs; the changed paths go to $work/paths.
repair() {
    : >"$work/paths"
    local rows

    # 1. Failure files without rows: rows from the files' own fields.
    jq -r 'select(.kind == "failure-file-without-row") | .path' "$work/diffs" | while IFS= read -r path; do
        jq -Rsc -L "$ELF_LIB" --arg p "$path" '
            include "elf";
            failure_fields as $f
            | {db: {table: "learnings", values: ({
                type: "failure", filepath: $p,
                title: ($f.title // ($p | sub("^.*/"; "") | sub("\\.md$"; ""))),
                summary: (($f.summary // "") | split("\n") | .[0] // ""),
                tags: $f.tags, domain: $f.domain, severity: $f.severity}
                + (if ($f.date // "" | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
                   then {created_at: "\($f.date) 00:00:00"} else {} end))}}' <"$ELF_HOME/$path"
    done >"$work/new-failure-rows"

    # 2. Heuristic entries without rows: rows from the entries, then the headings renumbered.
    jq -c 'select(.kind == "heuristic-entry-without-row" and .row == null)
        | {entry: {path, n}, db: {table: "heuristics", values: ({
            domain, rule, explanation, source_type: .source, confidence}
            + (if (.created // "" | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
               then {created_at: "\(.created) 00:00:00"} else {} end))}}' "$work/diffs" >"$work/new-heuristic-rows"

    cat "$work/new-failure-rows" "$work/new-heuristic-rows" |
        elf-db insert --keep-going --db "$ELF_DB" >"$work/inserted" || true
    jq -r 'select(.error) | "cannot add a row for \(.db.values.filepath // .entry.path): \(.error.message)"' \
        "$work/inserted" >&2 || true
    jq -r 'select(.error | not) | "added row #\(.db.id) for \(.db.values.filepath // "\(.entry.path) entry \(.entry.n + 1)")"' \
        "$work/inserted" | while IFS= read -r line; do say "$line"; done

    # Renumber the headings of the entries that got a row, and of the misnumbered entries of
    # existing rows, one rewrite per file.
    {
        jq -c 'select((.error | not) and .entry) | {path: .entry.path, n: .entry.n, id: .db.id}' "$work/inserted"
        jq -c 'select(.kind == "heuristic-entry-without-row" and .row != null) | {path, n, id: .row}' "$work/diffs"
    } |
        jq -sc 'group_by(.path)[] | {path: .[0].path, ids: (map({(.n | tostring): .id}) | add)}' |
        while IFS= read -r change; do
            path=$(jq -r '.path' <<<"$change")
            # elf-write reads all of its input before it replaces the file, as sponge(1) does.
            # shellcheck disable=SC2094
            jq -Rsr -L "$ELF_LIB" --argjson ids "$(jq -c '.ids' <<<"$change")" 'include "elf"; renumber($ids)' \
                <"$ELF_HOME/$path" | elf-write "$ELF_HOME/$path"
            printf '%s\n' "$path" >>"$work/paths"
        done
    jq -r 'select((.error | not) and .db.values.filepath) | .db.values.filepath' "$work/inserted" >>"$work/paths"

    # 3. Failure rows without files: files from the rows' own fields.
    rows=$(jq -r 'select(.kind == "failure-row-without-file") | .id' "$work/diffs" | paste -sd, -)
    if [ -n "$rows" ]; then
        elf-db query --db "$ELF_DB" \
            "SELECT id, filepath, title, summary, tags, domain, severity, created_at FROM learnings WHERE ',' || :ids || ',' LIKE '%,' || id || ',%' ORDER BY id" \
            --param "ids=$rows" |
            jq -c -L "$ELF_LIB" 'include "elf";
                {row: .id, write: {path: .filepath, mode: "create",
                 content: failure_markdown(.title // ""; .domain // ""; .severity // ""; .tags // "";
                                           ((.created_at // "") | tostring | .[0:10]); .summary // "")}}' |
            elf-write --keep-going --root "$ELF_HOME" >"$work/written" || true
        jq -r 'select(.error) | "cannot write the file of row #\(.row): \(.error.message)"' "$work/written" >&2
        jq -r 'select(.error | not) | .write.path' "$work/written" >>"$work/paths"
        jq -r 'select(.error | not) | "wrote \(.write.path) from row #\(.row)"' "$work/written" |
            while IFS= read -r line; do say "$line"; done
    fi

    # 4. Heuristic rows without entries: entries from the rows' own fields, appended.
    rows=$(jq -r 'select(.kind == "heuristic-row-without-entry") | .id' "$work/diffs" | paste -sd, -)
    if [ -n "$rows" ]; then
        elf-db query --db "$ELF_DB" \
            "SELECT id, domain, rule, explanation, source_type, confidence, created_at FROM heuristics WHERE ',' || :ids || ',' LIKE '%,' || id || ',%' ORDER BY id" \
            --param "ids=$rows" |
            jq -c -L "$ELF_LIB" 'include "elf";
                ((.domain // "" | domain_slug) | if . == "" then "general" else . end) as $d
                | {key: "sync-heuristic-\(.id)", row: .id,
                   write: {path: "memory/heuristics/\($d).md", mode: "append", header: heuristic_header($d),
                           content: heuristic_entry(.id; .rule // ""; .confidence // ""; .source_type // "";
                                                    ((.created_at // "") | tostring | .[0:10]); .explanation // "")}}' |
            elf-write --keep-going --root "$ELF_HOME" >"$work/appended" || true
        jq -r 'select(.error) | "cannot append the entry of H-\(.row): \(.error.message)"' "$work/appended" >&2
        jq -r 'select(.error | not) | .write.path' "$work/appended" >>"$work/paths"
        jq -r 'select(.error | not) | "appended H-\(.row) to \(.write.path)"' "$work/appended" |
            while IFS= read -r line; do say "$line"; done
    fi

    # One commit of exactly the repaired paths.
    sort -u "$work/paths" -o "$work/paths"
    if [ -s "$work/paths" ]; then
        local n
        n=$(wc -l <"$work/diffs")
        mapfile -t paths <"$work/paths"
        elf-commit --repo "$ELF_HOME" --lock "$ELF_HOME/.git/claude-lock" \
            -m "sync: repair $n differences between markdown and index" -- "${paths[@]}" >/dev/null ||
            elf_warn "the repairs were made but not committed (status $?)"
    fi
}

if [ -n "$fix" ]; then
    # Complete interrupted records first: they are not differences, only unfinished work. When
    # that fails for want of space, access or a lock, repairing would fail too (or repair from
    # half the data): stop. A record that fails on its own (65) stays journaled and is reported.
    status=0
    elf_tail || status=$?
    err=$ELF_DRAIN_ERRORS
    case $status in
        0) [ -z "$err" ] || printf '%s\n' "$err" >&2 ;;
        74 | 75 | 77) elf_die "$status" "cannot complete the interrupted records: $(elf_reason "$err" "$status"); nothing was repaired" ;;
        *) elf_warn "some interrupted records could not be completed: $(elf_reason "$err" "$status"); they stay journaled" ;;
    esac
fi

collect
if [ "$(differences)" -eq 0 ]; then
    say "in sync"
    exit 0
fi
if [ -z "$fix" ]; then
    report
    printf '%s differences\n' "$(differences)" >&2
    exit 1
fi

say "$(differences) differences; repairing"
[ -z "$verbose" ] || report
repair
collect
if [ "$(differences)" -ne 0 ]; then
    report
    printf '%s differences remain\n' "$(differences)" >&2
    exit 1
fi
elf_log INFO "sync --fix: index and markdown agree"
say "in sync"
