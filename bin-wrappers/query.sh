#!/bin/bash
# query.sh: read the ELF index: golden rules, heuristics, recent learnings and statistics.
# Read-only: it opens the database read-only and never creates or changes anything.
#
# Usage: query.sh [--context] [--domain D] [--stats] [--recent N] [--limit N]
set -euo pipefail
# shellcheck source=lib/elf.sh
elf_self=$(readlink -f "${BASH_SOURCE[0]}")
. "${elf_self%/*}/lib/elf.sh"
ELF_SCRIPT=query
ELF_HOME=${ELF_HOME:-$HOME/.claude/emergent-learning}
ELF_DB=$ELF_HOME/memory/index.db
command -v elf-db >/dev/null 2>&1 || elf_die 69 "elf-db not found on PATH (install elf-tools, see its README)"

usage() {
    cat <<'USAGE'
Usage: query.sh [--context] [--domain DOMAIN] [--stats] [--recent N] [--limit N]

Prints what the ELF home has learned. Read-only: nothing is created or changed.
  --context      golden rules, the strongest heuristics and recent learnings (the default)
  --domain D     heuristics and learnings of one domain
  --stats        counts by type, by domain, and of heuristics and experiments
  --recent N     the N most recent learnings
  --limit N      how many heuristics and learnings a section shows (default 10)
Environment: ELF_HOME (default ~/.claude/emergent-learning).
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
        *) elf_die 64 "unknown argument $(printf '%q' "$1") (see --help)" ;;
    esac
done

[ -f "$ELF_DB" ] || elf_die 66 "no ELF database at $ELF_DB (record something first)"
elf_db_readable

# q SQL [--param NAME=VALUE]...: rows as JSON lines, read-only.
q() {
    local sql=$1
    shift
    elf-db query --db "$ELF_DB" "$sql" "$@"
}
fmt() { jq -r -L "$ELF_LIB" "include \"elf\"; $1"; }

heuristics() { # [DOMAIN]
    if [ -n "${1-}" ]; then
        q "SELECT id, domain, rule, confidence FROM heuristics WHERE domain = :d ORDER BY confidence DESC, id DESC LIMIT :n" \
            --param "d=$1" --param "n=$limit"
    else
        q "SELECT id, domain, rule, confidence FROM heuristics ORDER BY confidence DESC, id DESC LIMIT :n" --param "n=$limit"
    fi | fmt '"- [H-\(.id)] (\(.confidence | term), \(.domain | term)) \(.rule | term)"'
}

learnings() { # N [DOMAIN]
    if [ -n "${2-}" ]; then
        q "SELECT id, type, title, domain, created_at FROM learnings WHERE domain = :d ORDER BY created_at DESC, id DESC LIMIT :n" \
            --param "d=$2" --param "n=$1"
    else
        q "SELECT id, type, title, domain, created_at FROM learnings ORDER BY created_at DESC, id DESC LIMIT :n" --param "n=$1"
    fi | fmt '"- [\(.type | term)] \(.title | term) (\(.domain | term), \(.created_at | term))"'
}

case $mode in
    context)
        echo "# Golden Rules"
        echo
        if [ -f "$ELF_HOME/memory/golden-rules.md" ]; then
            jq -Rr -L "$ELF_LIB" 'include "elf"; term' <"$ELF_HOME/memory/golden-rules.md"
        else
            echo "(none)"
        fi
        echo
        echo "# Heuristics"
        echo
        heuristics
        echo
        echo "# Recent Learnings"
        echo
        learnings "$limit"
        ;;
    domain)
        echo "# Domain: $(jq -nr -L "$ELF_LIB" --arg d "$domain" 'include "elf"; $d | term')"
        echo
        echo "## Heuristics"
        echo
        heuristics "$domain"
        echo
        echo "## Learnings"
        echo
        learnings "$limit" "$domain"
        ;;
    recent)
        echo "# Recent Learnings"
        echo
        learnings "$recent"
        ;;
    stats)
        echo "# Statistics"
        echo
        q "SELECT type, COUNT(*) AS n FROM learnings GROUP BY type ORDER BY type" | fmt '"learnings (\(.type | term)): \(.n)"'
        q "SELECT COUNT(*) AS n, COALESCE(SUM(is_golden), 0) AS golden FROM heuristics" |
            fmt '"heuristics: \(.n) (golden: \(.golden))"'
        q "SELECT COUNT(*) AS n FROM experiments" | fmt '"experiments: \(.n)"'
        echo
        echo "## By domain"
        echo
        q "SELECT domain, COUNT(*) AS n FROM (SELECT domain FROM learnings UNION ALL SELECT domain FROM heuristics) GROUP BY domain ORDER BY n DESC, domain" |
            fmt '"\(.domain | term): \(.n)"'
        ;;
esac
