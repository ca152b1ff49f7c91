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
memory/heuristics/*.md with the heuristic rows (an entry is a row's when its id and its rule
are the row's), and reports every difference, one line each:
  failure file without row, failure row without file, failure rows sharing one file,
  heuristic entry without row (H-0 and misnumbered headings included), duplicate heuristic
  entry (a copy of a row's entry), heuristic row without entry,
  not committed (a file that differs from its last commit), not a regular file (a FIFO,
  socket, device, folder or symbolic link named *.md: never read, left alone),
and every record set aside because it could not be finished (with the elf-db commands that
retry it or give it up; --fix leaves those to you). Rows of records still being recorded are
not differences. It compares under the drain lock, so no record is written meanwhile.
--fix first completes interrupted records, then repairs each difference from the data itself:
a row is made from a file's fields, a file or an entry from a row's fields (headings one
line), a copy is removed, a row sharing a file gets its own (NAME-2.md), an entry keeps its id
when no row has it (a lost index.db is rebuilt under the markdown's ids) and is renumbered
otherwise. Repairs and uncommitted files are committed in one commit.
--verbose also prints what was compared and each repair.
Environment: ELF_HOME (default ~/.claude/emergent-learning), ELF_LOCK_TIMEOUT (seconds any wait
may take: the drain lock, a file's lock, git's locks, a busy database; default 60), ELF_REMOTE
(a git remote shared with other machines: --fix first fetches, replays and pushes, and adds
the other machines' records to the index).
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
        *) elf_die 64 "unknown argument $(elf_quote "$1") (see --help)" ;;
    esac
    shift
done

elf_need_tools elf-db elf-write elf-commit elf-lock jq
[ -d "$ELF_HOME/memory" ] || elf_die 66 "no ELF home at $ELF_HOME"
# A database that is there but cannot be read stops both modes in one line (--fix makes a
# missing one, and rows from the markdown).
[ ! -e "$ELF_DB" ] || elf_db_readable

# It runs whole under the drain lock (taken by this shell through elf-lock's descriptor form,
# held until it exits), so no record is drained meanwhile and the files, the rows and the
# commits are compared at one moment; records journaled meanwhile wait, pending, and are left
# out of the comparison. Without --fix, a home whose lock cannot be opened (read-only) is
# compared without it.
if [ -n "$fix" ]; then
    elf_home_ready
    for w in "${ELF_WARNINGS[@]}"; do elf_warn "$w"; done
    [ ! -L "$ELF_DRAIN_LOCK" ] || elf_die 77 "$ELF_DRAIN_LOCK is a symbolic link; refusing to follow it; nothing was repaired"
    exec {drain_fd}>>"$ELF_DRAIN_LOCK" || elf_die 74 "cannot open the drain lock $ELF_DRAIN_LOCK; nothing was repaired"
elif [ -d "$ELF_GIT_DIR" ] && [ ! -L "$ELF_DRAIN_LOCK" ]; then
    { exec {drain_fd}>>"$ELF_DRAIN_LOCK"; } 2>/dev/null || drain_fd=""
fi
if [ -n "${drain_fd-}" ]; then
    status=0
    err=$(elf-lock -q -w "$ELF_TIMEOUT" "$drain_fd" 2>&1) || status=$?
    if [ "$status" -eq 75 ]; then
        elf_die 75 "the drain lock $ELF_DRAIN_LOCK stayed held for ${ELF_TIMEOUT}s (ELF_LOCK_TIMEOUT)${fix:+; nothing was repaired}"
    elif [ "$status" -ne 0 ]; then
        elf_exit_status "$status" "cannot take the drain lock: $(elf_reason "$err" "$status")${fix:+; nothing was repaired}"
    fi
fi

say() { [ -z "$verbose" ] || printf '%s\n' "$*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# collect: the four sets as one JSON object in $work/state.json, the differences in
# $work/diffs, the files that are not regular in $work/odd and those not committed in
# $work/uncommitted.
collect() {
    local f rel
    : >"$work/files"
    : >"$work/entries"
    shopt -s nullglob
    : >"$work/odd"
    for f in "$ELF_HOME"/memory/failures/*.md; do
        rel=memory/failures/${f##*/}
        [ "${f##*/}" = TEMPLATE.md ] && continue
        # Only regular files are read: a folder, a FIFO, a socket, a device or a symbolic link
        # named *.md is reported and left alone (reading a FIFO would hang; a link may lead
        # out of the home).
        if [ ! -f "$f" ] || [ -L "$f" ]; then
            printf '%s\n' "$rel" >>"$work/odd"
            continue
        fi
        printf '%s\n' "$rel" >>"$work/files"
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
    # The rows, and the records still in the journal (pending: being recorded right now, or
    # waiting for the next drain; set aside: listed below), read in one query, so in one
    # snapshot: a record's row and its journal entry are written in one transaction. The rows
    # of those records are not differences, and neither are their entries and files (the
    # heuristics' ids, the failures' paths or the NAME-N.md elf-write takes when NAME.md is
    # taken): they are not written yet.
    local journal inflight="json('[]')"
    journal=$(elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" --format tsv \
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'elf_journal'") ||
        elf_die 74 "cannot read the ELF database $ELF_DB"
    : >"$work/setaside"
    if [ "$journal" = 1 ]; then
        inflight="(SELECT json_group_array(json_object('table', json_extract(record, '\$.db.table'),
                    'id', json_extract(ids, '\$[0].id'),
                    'path', coalesce(json_extract(record, '\$.write.path'), json_extract(record, '\$.write[0].path'))))
                  FROM elf_journal WHERE done_at IS NULL)"
        elf-db pending --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" --set-aside |
            jq -r -L "$ELF_LIB" 'include "elf";
                "set-aside record: \(.key | term) (\(.kind // "record" | term)): \(.set_aside.error.message // "failed" | term) (elf-db retry \(.key | term) tries it again; elf-db drop \(.key | term) gives it up)"' \
                >"$work/setaside"
    fi
    elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" \
        "SELECT json_object(
            'frows', (SELECT json_group_array(json_object('id', id, 'filepath', filepath, 'title', title))
                      FROM (SELECT id, filepath, title FROM learnings WHERE type = 'failure' ORDER BY id)),
            'hrows', (SELECT json_group_array(json_object('id', id, 'domain', domain, 'rule', rule))
                      FROM (SELECT id, domain, rule FROM heuristics ORDER BY id)),
            'inflight', $inflight) AS j" |
        jq -c '.j | fromjson
            | .inflight as $in
            | ($in | map(select(.table == "learnings" and .id != null) | {(.id | tostring): true}) | add // {}) as $fl
            | ($in | map(select(.table == "heuristics" and .id != null) | {(.id | tostring): true}) | add // {}) as $hl
            | .frows |= map(select($fl[.id | tostring] | not))
            | .hrows |= map(select($hl[.id | tostring] | not))
            | .inflight = {h: [$in[] | select(.table == "heuristics") | .id | select(. != null)],
                           f: [$in[] | select(.table == "learnings") | .path | select(. != null)],
                           paths: [$in[] | .path | select(. != null)]}' >"$work/rows.json"
    # The title each shared failure file carries (its "# " line), to tell whose file it is.
    : >"$work/titles"
    local path line
    while IFS= read -r path; do
        f=$ELF_HOME/$path
        line=""
        if [ -f "$f" ] && [ ! -L "$f" ]; then
            IFS= read -r line <"$f" || true
        fi
        jq -nc --arg p "$path" --arg t "${line#\# }" '{($p): $t}' >>"$work/titles"
    done < <(jq -r '.frows | group_by(.filepath)[] | select(length > 1) | .[0].filepath' "$work/rows.json")
    jq -Rn --slurpfile rows "$work/rows.json" --slurpfile entries "$work/entries" --slurpfile titles "$work/titles" '
        def mine($p): . as $q | $p == $q or ($p | startswith(($q | rtrimstr(".md")) + "-"));
        $rows[0] as $r | ($titles | add // {}) as $t
        | {files: ([inputs] | map(select(. as $p | $r.inflight.f | any(mine($p)) | not))),
           frows: ($r.frows | map(. + {file_title: $t[.filepath]})),
           entries: ($entries | map(select(.id as $i | $r.inflight.h | any(. == $i) | not))),
           hrows: $r.hrows, inflight: $r.inflight.paths}' <"$work/files" >"$work/state.json"
    say "compared $(jq '.files | length' "$work/state.json") failure files with $(jq '.frows | length' "$work/state.json") failure rows," \
        "$(jq '.entries | length' "$work/state.json") heuristic entries with $(jq '.hrows | length' "$work/state.json") heuristic rows"
    jq -c -L "$ELF_LIB" 'include "elf"; differences[]' "$work/state.json" >"$work/diffs"
    # The markdown is kept three times: a file that differs from its last commit (untracked,
    # changed, staged) is reported, and committed by --fix. Files of records still in the
    # journal are theirs to commit.
    : >"$work/uncommitted"
    if [ -e "$ELF_HOME/.git" ]; then
        git -C "$ELF_HOME" status --porcelain=v1 -z --untracked-files=all --no-renames \
            -- memory/failures memory/heuristics 2>/dev/null |
            jq -Rrs --slurpfile s "$work/state.json" --rawfile odd "$work/odd" '
                ($s[0].inflight + ($odd | split("\n")) | map({(.): true}) | add // {}) as $busy
                | split("\u0000")[] | select(length > 3) | {xy: .[0:2], path: .[3:]}
                | select(.path | test("\\.md$")) | select(.path | test("/TEMPLATE\\.md$") | not)
                | select($busy[.path] | not)
                | "\(.path)\t\(if .xy == "??" then "untracked" elif .xy[1:2] == "D" or .xy[0:1] == "D" then "deleted" else "changed" end)"' \
                >"$work/uncommitted" || true
    fi
}

report() {
    jq -r -L "$ELF_LIB" 'include "elf"; difference_line' "$work/diffs"
    cat "$work/setaside"
    jq -Rr -L "$ELF_LIB" 'include "elf"; "not a regular file, left alone: \(term)"' "$work/odd"
    jq -Rr -L "$ELF_LIB" 'include "elf"; split("\t") | "not committed (\(.[1])): \(.[0] | term)"' "$work/uncommitted"
}

# differences: how many differences and set-aside records there are.
differences() {
    echo $(($(wc -l <"$work/diffs") + $(wc -l <"$work/setaside") + $(wc -l <"$work/odd") + $(wc -l <"$work/uncommitted")))
}

# repair: fix each difference in $work/diffs; the changed paths go to $work/paths.
repair() {
    : >"$work/paths"
    local rows

    # 1. Failure files without rows: rows from the files' own fields.
    jq -r 'select(.kind == "failure-file-without-row") | .path' "$work/diffs" | while IFS= read -r path; do
        jq -Rsc -L "$ELF_LIB" --arg p "$path" '
            include "elf";
            {db: {table: "learnings", values: (failure_values($p) | if .created_at == null then del(.created_at) else . end)}}' <"$ELF_HOME/$path"
    done >"$work/new-failure-rows"

    # 2. Heuristic entries without rows: rows from the entries. An entry keeps its id when no
    # row has it and no other such entry claims it (a lost index.db rebuilt keeps every H-<id>
    # the markdown holds; new ids then start above them); otherwise its row gets a new id and
    # the heading is renumbered.
    jq -sc --slurpfile r "$work/rows.json" '
        ($r[0] | [.hrows[].id] + .inflight.h | map({(tostring): true}) | add // {}) as $taken
        | map(select(.kind == "heuristic-entry-without-row" and .row == null))
        | (map(select(.id > 0) | .id) | group_by(.) | map(select(length == 1) | .[0])
           | map({(tostring): true}) | add // {}) as $once
        | .[]
        | ((.id > 0) and ($taken[.id | tostring] | not) and $once[.id | tostring]) as $keep
        | {entry: {path, n, kept: $keep}, db: {table: "heuristics", values: (
            (if $keep then {id} else {} end)
            + {domain, rule, explanation, source_type: .source, confidence}
            + (if (.created // "" | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
               then {created_at: "\(.created) 00:00:00"} else {} end))}}' "$work/diffs" >"$work/new-heuristic-rows"

    cat "$work/new-failure-rows" "$work/new-heuristic-rows" |
        elf-db insert --keep-going --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" >"$work/inserted" || true
    jq -r 'select(.error) | "cannot add a row for \(.db.values.filepath // .entry.path): \(.error.message)"' \
        "$work/inserted" >&2 || true
    jq -r 'select(.error | not) | "added row #\(.db.id) for \(.db.values.filepath // "\(.entry.path) entry \(.entry.n + 1)")"' \
        "$work/inserted" | while IFS= read -r line; do say "$line"; done

    # Renumber the headings of the entries that got a row of another id, and of the
    # misnumbered entries of existing rows, and remove the duplicates: one rewrite per file.
    {
        jq -c 'select((.error | not) and .entry and (.entry.kept | not)) | {path: .entry.path, n: .entry.n, id: .db.id}' "$work/inserted"
        jq -c 'select(.kind == "heuristic-entry-without-row" and .row != null) | {path, n, id: .row}' "$work/diffs"
        jq -c 'select(.kind == "heuristic-entry-duplicate") | {path, n, drop: true}' "$work/diffs"
    } |
        jq -sc 'group_by(.path)[] | {path: .[0].path,
                 ids: (map(select(.id) | {(.n | tostring): .id}) | add // {}),
                 drop: map(select(.drop) | .n)}' |
        while IFS= read -r change; do
            path=$(jq -r '.path' <<<"$change")
            # elf-write reads all of its input before it replaces the file, as sponge(1) does.
            # shellcheck disable=SC2094
            jq -Rsr -L "$ELF_LIB" --argjson c "$change" 'include "elf"; rewrite($c.ids; $c.drop)' \
                <"$ELF_HOME/$path" | elf-write --timeout "$ELF_TIMEOUT" "$ELF_HOME/$path"
            printf '%s\n' "$path" >>"$work/paths"
            jq -r '.drop[] | "removed the duplicate entry \(. + 1) of \($p)"' --arg p "$path" <<<"$change" |
                while IFS= read -r line; do say "$line"; done
        done
    jq -r 'select((.error | not) and .db.values.filepath) | .db.values.filepath' "$work/inserted" >>"$work/paths"

    # 3. Failure rows without files, and all but one of the rows sharing a file: files from
    # the rows' own fields, at the row's path or, when that is taken, at NAME-N.md (the row
    # follows it).
    rows=$(jq -r 'select(.kind == "failure-row-without-file" or .kind == "failure-file-shared") | .id' "$work/diffs" | paste -sd, -)
    if [ -n "$rows" ]; then
        elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" \
            "SELECT id, filepath, title, summary, tags, domain, severity, created_at FROM learnings WHERE ',' || :ids || ',' LIKE '%,' || id || ',%' ORDER BY id" \
            --param "ids=$rows" |
            jq -c -L "$ELF_LIB" 'include "elf";
                {row: .id, write: {path: .filepath, mode: "create", unique: true,
                 content: failure_markdown(.title // ""; .domain // ""; .severity // ""; .tags // "";
                                           ((.created_at // "") | tostring | .[0:10]); .summary // "")},
                 fix: {sql: "UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path",
                       params: {path: {"$ref": "/write/path"}, id: .id}}}' |
            elf-write --keep-going --root "$ELF_HOME" --timeout "$ELF_TIMEOUT" |
            elf-db exec --keep-going --key fix --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" >"$work/written" || true
        jq -r 'select(.error) | "cannot write the file of row #\(.row): \(.error.message)"' "$work/written" >&2
        jq -r 'select(.error | not) | .write.path' "$work/written" >>"$work/paths"
        jq -r 'select(.error | not) | "wrote \(.write.path) from row #\(.row)"' "$work/written" |
            while IFS= read -r line; do say "$line"; done
    fi

    # 4. Heuristic rows without entries: entries from the rows' own fields, appended.
    rows=$(jq -r 'select(.kind == "heuristic-row-without-entry") | .id' "$work/diffs" | paste -sd, -)
    if [ -n "$rows" ]; then
        elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" \
            "SELECT id, domain, rule, explanation, source_type, confidence, created_at FROM heuristics WHERE ',' || :ids || ',' LIKE '%,' || id || ',%' ORDER BY id" \
            --param "ids=$rows" |
            jq -c -L "$ELF_LIB" 'include "elf";
                ((.domain // "" | domain_slug) | if . == "" then "general" else . end) as $d
                | {key: "sync-heuristic-\(.id)", row: .id,
                   write: {path: "memory/heuristics/\($d).md", mode: "append", header: heuristic_header($d),
                           content: heuristic_entry(.id; .rule // ""; .confidence // ""; .source_type // "";
                                                    ((.created_at // "") | tostring | .[0:10]); .explanation // "")}}' |
            elf-write --keep-going --root "$ELF_HOME" --timeout "$ELF_TIMEOUT" >"$work/appended" || true
        jq -r 'select(.error) | "cannot append the entry of H-\(.row): \(.error.message)"' "$work/appended" >&2
        jq -r 'select(.error | not) | .write.path' "$work/appended" >>"$work/paths"
        jq -r 'select(.error | not) | "appended H-\(.row) to \(.write.path)"' "$work/appended" |
            while IFS= read -r line; do say "$line"; done
    fi

    # 5. Files that differ from their last commit: committed as they are.
    cut -f1 "$work/uncommitted" >>"$work/paths"

    # One commit of exactly the repaired paths.
    sort -u "$work/paths" -o "$work/paths"
    if [ -s "$work/paths" ]; then
        local n
        n=$(wc -l <"$work/diffs")
        mapfile -t paths <"$work/paths"
        elf-commit --repo "$ELF_HOME" --lock "$ELF_GIT_DIR/claude-lock" --timeout "$ELF_TIMEOUT" \
            -m "sync: repair $n differences between markdown and index" -- "${paths[@]}" >/dev/null ||
            elf_warn "the repairs were made but not committed (status $?)"
    fi
}

if [ -n "$fix" ] && [ ! -e "$ELF_DB" ]; then
    # A missing index (deleted to "reset" it) is made anew, its ids starting above every
    # H-<id> of the markdown; the rows then come from the markdown, under their own ids.
    elf_seed
    err=$(elf-db exec --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" \
        --file <(printf '%s\n' "$(<"$ELF_LIB/schema.sql")" "$REPLY") 2>&1 >/dev/null) ||
        elf_die "$(elf_io_status "$err" 74)" "cannot create the ELF database $ELF_DB: $(elf_reason "$err" 74); nothing was repaired"
fi
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

if [ -n "$fix" ] && [ -n "${ELF_REMOTE-}" ]; then
    # A shared home: the other machines' records first (fetch, replay, push, import). A
    # remote that cannot be reached, or a refused push, is said (one line) and the home is
    # repaired as it is here.
    elf_remote_sync || true
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
# What is repaired, by kind, for the one line --fix prints when it is done.
found=$(differences)
kinds=$({
    jq -r '.kind | sub("-"; " "; "g")' "$work/diffs"
    sed 's/^/not committed /; s/\t.*//; s/ memory.*//' "$work/uncommitted"
} | sort | uniq -c | sed 's/^ *\([0-9]*\) \(.*\)/\1 \2/' | paste -sd, - | sed 's/,/, /g')
repair
collect
if [ "$(differences)" -ne 0 ]; then
    report
    printf '%s differences remain\n' "$(differences)" >&2
    exit 1
fi
elf_log INFO "sync --fix: index and markdown agree"
printf 'repaired %s differences (%s); in sync\n' "$found" "$kinds"
