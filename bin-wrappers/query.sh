#!/bin/bash
# query.sh: read the ELF index: golden rules, heuristics, recent learnings and statistics.
# Read-only: it opens the database read-only and never creates or changes anything.
#
# Usage: query.sh [--context] [--domain D] [--stats] [--recent N] [--limit N]
set -euo pipefail
elf_self=${BASH_SOURCE[0]}
[[ $elf_self == */* ]] || elf_self=./$elf_self
[ ! -L "$elf_self" ] || elf_self=$(readlink -f "$elf_self")
# shellcheck source=lib/elf.sh
. "${elf_self%/*}/lib/elf.sh"
ELF_SCRIPT=query
ELF_HOME=${ELF_HOME:-$HOME/.claude/emergent-learning}
ELF_DB=$ELF_HOME/memory/index.db
# The scripts' one timeout: how long a busy database is waited for.
ELF_TIMEOUT=${ELF_LOCK_TIMEOUT:-60}
[[ $ELF_TIMEOUT =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
    elf_die 64 "ELF_LOCK_TIMEOUT must be a number of seconds (such as 30 or 2.5), not $(elf_quote "$ELF_TIMEOUT")"

usage() {
    cat <<'USAGE'
Usage: query.sh [--context] [--domain DOMAIN] [--stats] [--recent N] [--limit N]

Prints what the ELF home has learned. Read-only: nothing is created or changed.
  --context      golden rules, the strongest heuristics and recent learnings (the default)
  --domain D     heuristics and learnings of one domain
  --stats        counts by type, by domain, and of heuristics and experiments
  --recent N     the N most recent learnings
  --limit N      how many heuristics and learnings a section shows (default 10)
Environment: ELF_HOME (default ~/.claude/emergent-learning), ELF_LOCK_TIMEOUT (seconds to
wait for a busy database; default 60).
Exit: 0 done; 64 bad usage; 66 no database; 74 the database cannot be read (a file that is not
a database included); 75 the database stayed busy; 77 permission denied. Errors are one line.
USAGE
}

mode=context
domain=""
recent=10
limit=10
number() {
    if ! [[ $2 =~ ^[1-9][0-9]{0,8}$ ]]; then
        elf_die 64 "$1 needs a whole number of at least 1"
    fi
}
while [ $# -gt 0 ]; do
    case $1 in
        --context) mode=context; shift ;;
        --stats) mode=stats; shift ;;
        --domain)
            [ $# -ge 2 ] || elf_die 64 "--domain needs a value"
            mode=domain domain=$2; shift 2 ;;
        --domain=*) mode=domain domain=${1#*=}; shift ;;
        --recent)
            [ $# -ge 2 ] || elf_die 64 "--recent needs a value"
            number --recent "$2"; mode=recent recent=$2; shift 2 ;;
        --recent=*) number --recent "${1#*=}"; mode=recent recent=${1#*=}; shift ;;
        --limit)
            [ $# -ge 2 ] || elf_die 64 "--limit needs a value"
            number --limit "$2"; limit=$2; shift 2 ;;
        --limit=*) number --limit "${1#*=}"; limit=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) elf_die 64 "unknown argument $(elf_quote "$1") (see --help)" ;;
    esac
done

elf_need_tools elf-db
if [ "$mode" = domain ] && [ -z "$domain" ]; then
    elf_die 64 "--domain needs a domain (it is empty)"
fi
[ -f "$ELF_DB" ] || elf_die 66 "no ELF database at $ELF_DB (record something first)"

# One elf-db query a run, no jq: the lines are made by SQLite, each row one line of output
# (tab-separated: the section, the line; a tab, newline or carriage return inside a value is
# shown as \t, \n or \r, so an item is always one line), and every other control character is
# shown as \xNN by bash before anything reaches the terminal.
#
# rows SQL [--param NAME=VALUE]...: the rows, or one line and the exit status of elf-db. A
# table the database lacks (a legacy index made before experiments existed) reads as empty: the
# query runs again with an empty table of that name in its place (only then: a second start).
rows() {
    local sql=$1 out status with="" table tries=0
    shift
    while :; do
        status=0
        out=$(elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" --format tsv "${with:+WITH $with }$sql" "$@" 2>&1) || status=$?
        if [ "$status" -eq 0 ] || [ "$tries" -ge 3 ] ||
            ! [[ $out =~ no\ such\ table:\ (learnings|heuristics|experiments) ]]; then
            break
        fi
        table=${BASH_REMATCH[1]}
        with+="${with:+, }${EMPTY[$table]}"
        tries=$((tries + 1))
    done
    [ "$status" -eq 0 ] || elf_die "$status" "cannot read the ELF database $ELF_DB: $(elf_reason "$out" "$status")"
    printf '%s' "$out"
}
declare -A EMPTY=(
    [learnings]="learnings(id, type, title, domain, created_at) AS (SELECT NULL, NULL, NULL, NULL, NULL WHERE 0)"
    [heuristics]="heuristics(id, domain, rule, confidence, is_golden) AS (SELECT NULL, NULL, NULL, NULL, NULL WHERE 0)"
    [experiments]="experiments(id) AS (SELECT NULL WHERE 0)"
)

# shown TEXT: TEXT with control characters other than newline shown as \xNN.
shown() {
    elf_controls "$1" '\\x%02x' keep-newlines
    printf '%s' "$REPLY"
}

# section TAG: the lines of section TAG of $out (rows "TAG<tab>line"), in REPLY. Split with
# parameter expansions: read(1) on a pipe would take them a byte at a time.
section() {
    local rest=$out$'\n' line
    REPLY=""
    while [ -n "$rest" ]; do
        line=${rest%%$'\n'*}
        rest=${rest#*$'\n'}
        if [[ $line == "$1"$'\t'* ]]; then REPLY+=${line#*$'\t'}$'\n'; fi
    done
}

# The lines of one section, as SQL: "- [H-12] (0.85, testing) Check colour" and the like.
# A whole-valued confidence prints as 1, not 1.0 (as the numbers are written in the markdown).
H_LINE="'- [H-' || id || '] (' || coalesce(CASE WHEN typeof(confidence) = 'real' AND confidence = CAST(confidence AS INTEGER)
    THEN CAST(confidence AS INTEGER) ELSE confidence END, '') || ', ' || coalesce(domain, '') || ') ' || coalesce(rule, '')"
L_LINE="'- [' || coalesce(type, '') || '] ' || coalesce(title, '') || ' (' || coalesce(domain, '') || ', ' || coalesce(created_at, '') || ')'"
heuristics_sql() { # TAG WHERE
    echo "SELECT '$1', $H_LINE FROM (SELECT * FROM heuristics $2 ORDER BY confidence DESC, id DESC LIMIT CAST(:n AS INTEGER))"
}
learnings_sql() { # TAG WHERE LIMIT_PARAM
    echo "SELECT '$1', $L_LINE FROM (SELECT * FROM learnings $2 ORDER BY created_at DESC, id DESC LIMIT CAST($3 AS INTEGER))"
}
print_section() { # TAG
    section "$1"
    # elf-db's \\ is a backslash again; \n, \t and \r stay as they are, one item a line.
    shown "${REPLY//\\\\/\\}"
}

case $mode in
    context)
        out=$(rows "$(heuristics_sql h "") UNION ALL $(learnings_sql l "" :n)" --param "n=$limit")
        echo "# Golden Rules"
        echo
        if [ -f "$ELF_HOME/memory/golden-rules.md" ]; then
            shown "$(<"$ELF_HOME/memory/golden-rules.md")"$'\n'
        else
            echo "(none)"
        fi
        echo
        echo "# Heuristics"
        echo
        print_section h
        echo
        echo "# Recent Learnings"
        echo
        print_section l
        ;;
    domain)
        out=$(rows "$(heuristics_sql h "WHERE domain = :d") UNION ALL $(learnings_sql l "WHERE domain = :d" :n)" \
            --param "d=$domain" --param "n=$limit")
        echo "# Domain: $(shown "$domain")"
        echo
        echo "## Heuristics"
        echo
        print_section h
        echo
        echo "## Learnings"
        echo
        print_section l
        ;;
    recent)
        out=$(rows "$(learnings_sql l "" :r)" --param "r=$recent")
        echo "# Recent Learnings"
        echo
        print_section l
        ;;
    stats)
        out=$(rows "SELECT * FROM (SELECT 'c', 'learnings (' || coalesce(type, '') || '): ' || COUNT(*) FROM learnings GROUP BY type ORDER BY type)
            UNION ALL SELECT 'c', 'heuristics: ' || COUNT(*) || ' (golden: ' || COALESCE(SUM(is_golden), 0) || ')' FROM heuristics
            UNION ALL SELECT 'c', 'experiments: ' || COUNT(*) FROM experiments
            UNION ALL SELECT * FROM (SELECT 'd', coalesce(domain, '') || ': ' || COUNT(*) FROM
                (SELECT domain FROM learnings UNION ALL SELECT domain FROM heuristics) GROUP BY domain ORDER BY COUNT(*) DESC, domain)")
        echo "# Statistics"
        echo
        print_section c
        echo
        echo "## By domain"
        echo
        print_section d
        ;;
esac
