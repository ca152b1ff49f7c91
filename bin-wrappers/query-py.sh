#!/bin/bash
# query-py.sh: ELF's query.py (the agents' read path), read-only, on elf-db.
#
# The legacy flags, mode precedence, queries, ordering, limits and output: text byte for byte
# as the legacy script printed it, JSON equal as parsed JSON. query.py (beside this script, or
# installed as ~/.claude/emergent-learning/query/query.py) only hands its arguments over.
#
# Read-only: it never creates the home, the database, a table, -wal or -shm. A missing
# database, or a missing table, reads as an empty one (the answers the legacy script gave on the
# empty database it created). One elf-db start a call (two for --domain; one more when a table
# is missing), no jq.
set -euo pipefail
prog=query.py

die() { # STATUS MESSAGE
    printf '%s: %s\n' "$prog" "$2" >&2
    exit "$1"
}

usage() {
    cat <<'USAGE'
usage: query.py [-h] [--base-path BASE_PATH] [--context] [--domain DOMAIN] [--tags TAGS]
                [--recent N] [--type TYPE] [--experiments] [--ceo-reviews] [--golden-rules]
                [--stats] [--limit LIMIT] [--format {text,json}] [--max-tokens MAX_TOKENS]

Emergent Learning Framework - Query System (read-only; elf-tools)

options:
  -h, --help            show this help message and exit
  --base-path BASE_PATH the ELF home (default ~/.claude/emergent-learning)
  --context             build the full context for agents (golden rules, domain, tags, recent)
  --domain DOMAIN       heuristics and learnings of a domain
  --tags TAGS           learnings whose tags hold any of these (comma-separated)
  --recent N            the N most recent learnings
  --type TYPE           with --recent: only learnings of this type
  --experiments         active experiments
  --ceo-reviews         pending CEO reviews
  --golden-rules        the golden rules
  --stats               counts of the knowledge base
  --limit LIMIT         how many results (default 10; -1: all)
  --format {text,json}  output format (default text)
  --max-tokens MAX_TOKENS
                        token budget of --context (default 5000)

The first mode given runs, in this order: context, golden-rules, domain, tags, recent,
experiments, ceo-reviews, stats; without one, this help. Nothing is ever written: a missing
database reads as an empty one. Exit: 0 done; 64 bad usage; 74 the database cannot be read;
75 it stayed busy longer than ELF_LOCK_TIMEOUT (seconds, default 60); 77 permission denied.
USAGE
}

# --- Arguments, as argparse took them: --name VALUE or --name=VALUE, a unique prefix of a
# name, the last of a repeated option. A value may not look like an option (a negative number
# may).
names=(base-path context domain tags recent type experiments ceo-reviews golden-rules stats limit format max-tokens help)
base=$HOME/.claude/emergent-learning
context="" domain="" tags="" recent="" type="" experiments="" ceo="" golden="" stats=""
limit=10 format=text max_tokens=5000

# int NAME TEXT: TEXT as a whole number (Python's int(): blanks around, a sign, digits with
# single underscores between them), normalised, in REPLY.
int() {
    local t=$2
    [[ $t =~ ^[[:space:]]*([+-]?)([0-9](_?[0-9])*)[[:space:]]*$ ]] ||
        die 64 "argument --$1: invalid int value: '$t'"
    local sign=${BASH_REMATCH[1]#+} digits=${BASH_REMATCH[2]//_/}
    digits=${digits##+(0)}
    REPLY=$sign${digits:-0}
    [ "$REPLY" != -0 ] || REPLY=0
}
shopt -s extglob
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case $arg in
        -h) usage; exit 0 ;;
        --*=*) name=${arg%%=*} name=${name#--} value=${arg#*=} has_value=1 ;;
        --?*) name=${arg#--} value="" has_value="" ;;
        *) die 64 "unrecognized arguments: $arg" ;;
    esac
    match=""
    for n in "${names[@]}"; do
        if [ "$n" = "$name" ]; then match=$n; break; fi
        if [[ $n == "$name"* ]]; then
            [ -z "$match" ] || die 64 "ambiguous option: --$name could match --$match, --$n"
            match=$n
        fi
    done
    [ -n "$match" ] || die 64 "unrecognized arguments: $arg"
    case $match in
        help) usage; exit 0 ;;
        context | experiments | ceo-reviews | golden-rules | stats)
            [ -z "$has_value" ] || die 64 "argument --$match: ignored explicit argument '$value'"
            case $match in
                context) context=1 ;;
                experiments) experiments=1 ;;
                ceo-reviews) ceo=1 ;;
                golden-rules) golden=1 ;;
                stats) stats=1 ;;
            esac
            continue ;;
    esac
    if [ -z "$has_value" ]; then
        [ $# -gt 0 ] || die 64 "argument --$match: expected one argument"
        value=$1
        if [[ $value == -?* && ! $value =~ ^-([0-9]+|[0-9]*\.[0-9]+)$ ]]; then
            die 64 "argument --$match: expected one argument"
        fi
        shift
    fi
    case $match in
        base-path) base=$value ;;
        domain) domain=$value ;;
        tags) tags=$value ;;
        type) type=$value ;;
        recent) int recent "$value"; recent=$REPLY ;;
        limit) int limit "$value"; limit=$REPLY ;;
        max-tokens) int max-tokens "$value"; max_tokens=$REPLY ;;
        format)
            case $value in
                text | json) format=$value ;;
                *) die 64 "argument --format: invalid choice: '$value' (choose from 'text', 'json')" ;;
            esac ;;
    esac
done
# SQLite's LIMIT takes a 64-bit integer (the legacy script died with a traceback past it).
# Past 2^63 - 1, 19 digits wrap around to a negative number in bash's arithmetic.
for n in limit recent; do
    v=${!n#-}
    [ -z "$v" ] || { [ ${#v} -le 19 ] && [ $((10#$v)) -ge 0 ]; } ||
        die 64 "argument --$n: ${!n} is out of range (at most 9223372036854775807)"
done
# The budget is compared with character counts: anything past 18 digits is as good as infinite.
if [ ${#max_tokens} -gt 18 ]; then
    if [[ $max_tokens == -* ]]; then max_tokens=-1000000000000000000; else max_tokens=1000000000000000000; fi
fi

mode=""
if [ -n "$context" ]; then mode=context
elif [ -n "$golden" ]; then mode="golden-rules"
elif [ -n "$domain" ]; then mode=domain
elif [ -n "$tags" ]; then mode=tags
elif [ -n "$recent" ]; then mode=recent
elif [ -n "$experiments" ]; then mode=experiments
elif [ -n "$ceo" ]; then mode="ceo-reviews"
elif [ -n "$stats" ]; then mode=stats
else usage; exit 0
fi

base=${base:-.}
db=$base/memory/index.db
golden_path=$base/memory/golden-rules.md
timeout=${ELF_LOCK_TIMEOUT:-60}
[[ $timeout =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
    die 64 "ELF_LOCK_TIMEOUT must be a number of seconds (such as 30 or 2.5), not '$timeout'"

# The golden rules as Python read them (universal newlines), in REPLY.
golden_rules() {
    if [ ! -e "$golden_path" ]; then
        REPLY=$'# Golden Rules\n\nNo golden rules have been established yet.'
        return
    fi
    [ -r "$golden_path" ] || die 77 "cannot read $golden_path: permission denied"
    REPLY=""
    IFS= read -r -d '' REPLY <"$golden_path" || true
    REPLY=${REPLY//$'\r\n'/$'\n'}
    REPLY=${REPLY//$'\r'/$'\n'}
}

if [ "$mode" = golden-rules ]; then
    golden_rules
    printf '%s\n' "$REPLY"
    exit 0
fi

# --- SQL. Values are bound parameters; the SQL text is fixed. The expressions below are
# templates, @ standing for a column (expanded with ${T//@/col}: no subshell).
# Python's str() of a value: None, integers, reals as repr() prints them (15, 16 or 17
# significant digits, the fewest that give the same number back), text as it is.
PY="(CASE typeof(@) WHEN 'null' THEN 'None' WHEN 'real' THEN replace(CASE
    WHEN CAST(printf('%!.15g', @) AS REAL) = @ THEN printf('%!.15g', @)
    WHEN CAST(printf('%!.16g', @) AS REAL) = @ THEN printf('%!.16g', @)
    ELSE printf('%!.17g', @) END, '.0e', 'e') ELSE CAST(@ AS TEXT) END)"
# Python's truth of a value: not None, not 0, not empty.
TRUTHY="(@ IS NOT NULL AND NOT (typeof(@) IN ('integer', 'real') AND @ = 0) AND length(CAST(@ AS BLOB)) > 0)"
# format(x, '.2f'): printf rounds a tie (0.125) away from zero, Python to even.
F2="(CASE WHEN typeof(@) NOT IN ('integer', 'real') THEN $PY
    WHEN abs(@) < 1e15 AND @ * 200 = CAST(@ * 200 AS INTEGER) AND CAST(@ * 200 AS INTEGER) % 2 <> 0
        AND CAST(abs(@) * 100 + 0.5 AS INTEGER) % 2 <> 0
    THEN printf('%.2f', @ - sign(@) * 0.001) ELSE printf('%.2f', @) END)"
# The tags of --tags, as Python's split(',') gives them, one row each (:tags is a JSON array).
TAG_MATCH="EXISTS (SELECT 1 FROM json_each(:tags) t WHERE l.tags LIKE '%' || t.value || '%')"
# A table that is missing reads as empty: these stand in for them (the columns the SQL uses).
declare -A EMPTY=(
    [learnings]="(SELECT NULL AS id, NULL AS type, NULL AS title, NULL AS summary, NULL AS tags, NULL AS domain, NULL AS created_at WHERE 0)"
    [heuristics]="(SELECT NULL AS id, NULL AS domain, NULL AS rule, NULL AS explanation, NULL AS confidence, NULL AS times_validated, NULL AS is_golden WHERE 0)"
    [experiments]="(SELECT NULL AS id, NULL AS name, NULL AS hypothesis, NULL AS status, NULL AS cycles_run, NULL AS updated_at WHERE 0)"
    [ceo_reviews]="(SELECT NULL AS id, NULL AS title, NULL AS context, NULL AS recommendation, NULL AS status, NULL AS created_at WHERE 0)"
)
declare -A T=([learnings]=learnings [heuristics]=heuristics [experiments]=experiments [ceo_reviews]=ceo_reviews)

# query SQL [--param NAME=VALUE]...: elf-db's rows (tsv) in OUT; a missing table of the four
# is read as empty (the SQL is built again, in SQL, by the caller's function $BUILD). A
# missing database: no rows.
OUT=""
query() {
    local status err
    OUT=""
    [ -n "$db" ] || return 0
    while :; do
        status=0
        err=$(elf-db query --db "$db" --busy-timeout "$timeout" --format tsv "$@" 2>&1) || status=$?
        if [ "$status" -eq 0 ]; then OUT=$err; return 0; fi
        if [[ $err =~ no\ such\ table:\ (main\.)?(learnings|heuristics|experiments|ceo_reviews) ]] &&
            [ "${T[${BASH_REMATCH[2]}]}" = "${BASH_REMATCH[2]}" ]; then
            T[${BASH_REMATCH[2]}]=${EMPTY[${BASH_REMATCH[2]}]}
            "$BUILD"
            set -- "$SQL" "${@:2}"
            continue
        fi
        err=${err%%$'\n'*}
        [ "$status" -ne 127 ] || die 69 "elf-db not found on PATH (install elf-tools, see its README)"
        die "$status" "cannot read the ELF database $db: ${err#elf-db: }"
    done
}
[ -f "$db" ] || db=""

# --- Python's text of a JSON row (elf-db's JSON lines): "key: value" lines.
# pyfloat JSON-NUMBER: repr() of the float, in REPLY.
pyfloat() {
    local n=$1 sign="" int frac exp=0 digits point
    [[ $n == -* ]] && sign=- n=${n#-}
    if [[ $n == *[eE]* ]]; then exp=${n#*[eE]} exp=${exp#+} n=${n%%[eE]*}; fi
    int=${n%%.*}
    frac=""
    [[ $n == *.* ]] && frac=${n#*.}
    digits=$int$frac
    point=$((${#int} + 10#0 + exp))
    # Leading zeros move the point; trailing zeros are not digits.
    while [[ $digits == 0* ]]; do digits=${digits#0}; point=$((point - 1)); done
    while [[ $digits == *0 ]]; do digits=${digits%0}; done
    if [ -z "$digits" ]; then REPLY=${sign}0.0; return; fi
    local e=$((point - 1))
    if [ "$e" -ge -4 ] && [ "$e" -lt 16 ]; then
        if [ "$point" -le 0 ]; then
            printf -v REPLY '%s0.%*s%s' "$sign" "$((-point))" "" "$digits"
            REPLY=${REPLY// /0}
        elif [ "$point" -ge "${#digits}" ]; then
            printf -v REPLY '%s%s%*s.0' "$sign" "$digits" "$((point - ${#digits}))" ""
            REPLY=${REPLY// /0}
        else
            REPLY=$sign${digits:0:point}.${digits:point}
        fi
    else
        local m=${digits:0:1}
        [ ${#digits} -eq 1 ] || m+=.${digits:1}
        printf -v REPLY '%s%se%+03d' "$sign" "$m" "$e"
    fi
}
# jstr JSON-STRING-BODY: the text, in REPLY.
jstr() {
    local s=${1//\\\"/\"}
    printf -v REPLY '%b' "$s"
}
# row_text LINE: the "key: value" lines of one JSON row, in REPLY (no final newline).
row_text() {
    local rest=${1#\{} text="" key v
    while [ -n "$rest" ] && [ "$rest" != "}" ]; do
        [[ $rest =~ ^\"(([^\"\\]|\\.)*)\": ]] || die 70 "unexpected row from elf-db: $1"
        rest=${rest:${#BASH_REMATCH[0]}}
        jstr "${BASH_REMATCH[1]}"
        key=$REPLY
        case $rest in
            null*) v=None rest=${rest:4} ;;
            \"*)
                [[ $rest =~ ^\"(([^\"\\]|\\.)*)\" ]] || die 70 "unexpected row from elf-db: $1"
                rest=${rest:${#BASH_REMATCH[0]}}
                jstr "${BASH_REMATCH[1]}"
                v=$REPLY ;;
            *)
                [[ $rest =~ ^-?[0-9][0-9.eE+-]* ]] || die 70 "unexpected row from elf-db: $1"
                v=${BASH_REMATCH[0]}
                rest=${rest:${#v}}
                if [[ $v == *[.eE]* ]]; then pyfloat "$v"; v=$REPLY; fi ;;
        esac
        rest=${rest#,}
        text+=${text:+$'\n'}"$key: $v"
    done
    REPLY=$text
}
# list TEXT-OF-ROWS: format_output() of a list of rows, in REPLY (text), or the JSON array.
list() {
    local rows=$1 line i=0 text=""
    if [ "$format" = json ]; then
        rows=${rows%$'\n'}
        REPLY="[${rows//$'\n'/,}]"
        return
    fi
    [ -z "$rows" ] || rows+=$'\n'
    while [ -n "$rows" ]; do
        line=${rows%%$'\n'*}
        rows=${rows#*$'\n'}
        i=$((i + 1))
        row_text "$line"
        text+=${text:+$'\n'}$'\n'"--- Item $i ---"$'\n'$REPLY
    done
    REPLY=$text
}
# rows TABLE SQL-AFTER-FROM [PARAM]...: SELECT * of TABLE's rows as JSON lines, in REPLY
# (nothing when the table or the database is missing).
rows() {
    local table=$1 tail=$2 status=0 err
    shift 2
    REPLY=""
    [ -n "$db" ] || return 0
    err=$(elf-db query --db "$db" --busy-timeout "$timeout" "SELECT * FROM $table $tail" "$@" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        [[ $err == *"no such table: $table"* ]] && return 0
        [ "$status" -ne 127 ] || die 69 "elf-db not found on PATH (install elf-tools, see its README)"
        err=${err%%$'\n'*}
        die "$status" "cannot read the ELF database $db: ${err#elf-db: }"
    fi
    REPLY=$err
}
# jquote TEXT: TEXT as a JSON string, in REPLY.
jquote() {
    local s=$1 i c h u
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
        for ((i = 1; i < 32; i++)); do
            printf -v h '%02x' "$i"
            printf -v c '%b' "\\x$h"
            [[ $s == *"$c"* ]] || continue
            printf -v u '\\u%04x' "$i"
            s=${s//"$c"/$u}
        done
    fi
    REPLY="\"$s\""
}
# tags_json TEXT: TEXT split at commas, as a JSON array, in REPLY.
tags_json() {
    jquote "$1"
    REPLY="[${REPLY//,/\",\"}]"
}
# esc TEXT: TEXT with its backslashes doubled, for the final printf %b.
esc() { REPLY=${1//\\/\\\\}; }
NL="char(10)"
WS="' ' || char(9, 10, 11, 12, 13, 28, 29, 30, 31, 133, 160, 5760, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288)"

case $mode in
context)
    build_context() {
        local parts=()
        if [ -n "$domain" ]; then
            parts+=("SELECT 'h' AS tag, e FROM (SELECT '- **' || ${PY//@/rule} || '** (confidence: ' || ${F2//@/confidence} || ', validated: '
                || ${PY//@/times_validated} || 'x)' || $NL || '  ' || ${PY//@/explanation} || $NL || $NL AS e
                FROM (SELECT * FROM ${T[heuristics]} WHERE domain = :d ORDER BY confidence DESC, times_validated DESC LIMIT 5))")
            parts+=("SELECT 'l' AS tag, e FROM (SELECT '- **' || ${PY//@/title} || '** (' || ${PY//@/type} || ')' || $NL
                || CASE WHEN ${TRUTHY//@/summary} THEN '  ' || ${PY//@/summary} || $NL ELSE '' END
                || '  Tags: ' || ${PY//@/tags} || $NL || $NL AS e
                FROM (SELECT * FROM ${T[learnings]} WHERE domain = :d ORDER BY created_at DESC LIMIT 5))")
        fi
        if [ -n "$tags" ]; then
            parts+=("SELECT 't' AS tag, e FROM (SELECT '- **' || ${PY//@/title} || '** (' || ${PY//@/type} || ', domain: ' || ${PY//@/domain} || ')' || $NL
                || CASE WHEN ${TRUTHY//@/summary} THEN '  ' || ${PY//@/summary} || $NL ELSE '' END
                || '  Tags: ' || ${PY//@/tags} || $NL || $NL AS e
                FROM (SELECT * FROM ${T[learnings]} l WHERE $TAG_MATCH ORDER BY created_at DESC LIMIT 5))")
        fi
        parts+=("SELECT 'r' AS tag, e FROM (SELECT '- **' || ${PY//@/title} || '** (' || ${PY//@/type} || ', ' || ${PY//@/created_at} || ')' || $NL
                || CASE WHEN ${TRUTHY//@/summary} THEN '  ' || ${PY//@/summary} || $NL || $NL ELSE '' END AS e
                FROM (SELECT * FROM ${T[learnings]} ORDER BY created_at DESC LIMIT 3))")
        parts+=("SELECT 'e' AS tag, e FROM (SELECT '- **' || ${PY//@/name} || '** (' || ${PY//@/cycles_run} || ' cycles)' || $NL
                || CASE WHEN ${TRUTHY//@/hypothesis} THEN '  Hypothesis: ' || ${PY//@/hypothesis} || $NL || $NL ELSE '' END AS e
                FROM (SELECT * FROM ${T[experiments]} WHERE status = 'active' ORDER BY updated_at DESC))")
        parts+=("SELECT 'c' AS tag, e FROM (SELECT '- **' || ${PY//@/title} || '**' || $NL
                || CASE WHEN ${TRUTHY//@/context} THEN '  Context: ' || ${PY//@/context} || $NL ELSE '' END
                || CASE WHEN ${TRUTHY//@/recommendation} THEN '  Recommendation: ' || ${PY//@/recommendation} || $NL || $NL ELSE '' END AS e
                FROM (SELECT * FROM ${T[ceo_reviews]} WHERE status = 'pending' ORDER BY created_at ASC))")
        local sql="" p
        for p in "${parts[@]}"; do sql+=${sql:+ UNION ALL }$p; done
        # Each entry with its "tokens" (characters / 4), as the budget counts them.
        SQL="SELECT tag, length(e) / 4, e FROM ($sql)"
    }
    params=()
    [ -z "$domain" ] || params+=(--param "d=$domain")
    if [ -n "$tags" ]; then
        tags_json "$tags"
        params+=(--param "tags=$REPLY")
    fi
    BUILD=build_context
    build_context
    query "$SQL" "${params[@]}"
    golden_rules
    LC_ALL=C.UTF-8 eval 'tokens=$((${#REPLY} / 4))'
    esc "$REPLY"
    out="# Task Context\n\nAgent task context generation\n\n---\n\n# TIER 1: Golden Rules\n$REPLY\n# TIER 2: Relevant Knowledge\n\n"
    declare -A section=()
    rtier=() rtok=()
    rest=$OUT
    [ -z "$rest" ] || rest+=$'\n'
    while [ -n "$rest" ]; do
        line=${rest%%$'\n'*}
        rest=${rest#*$'\n'}
        tag=${line%%$'\t'*}
        line=${line#*$'\t'}
        n=${line%%$'\t'*}
        entry=${line#*$'\t'}
        case $tag in
            h | l | t) tokens=$((tokens + n)) ;;
            r) rtier+=("$entry") rtok+=("$n"); continue ;;
        esac
        section[$tag]+=$entry
    done
    if [ -n "$domain" ]; then
        esc "$domain"
        out+="## Domain: $REPLY\n\n"
        [ -z "${section[h]:-}" ] || out+="### Heuristics:\n${section[h]}"
        [ -z "${section[l]:-}" ] || out+="### Recent Learnings:\n${section[l]}"
    fi
    if [ -n "$tags" ]; then
        esc "${tags//,/, }"
        out+="## Tag Matches: $REPLY\n\n${section[t]:-}"
    fi
    if [ $((max_tokens - tokens)) -gt 500 ]; then
        out+="# TIER 3: Recent Context\n\n"
        for i in "${!rtier[@]}"; do
            out+=${rtier[i]}
            tokens=$((tokens + rtok[i]))
            [ "$tokens" -lt "$max_tokens" ] || break
        done
    fi
    [ -z "${section[e]:-}" ] || out+="\n# Active Experiments\n\n${section[e]}"
    [ -z "${section[c]:-}" ] || out+="\n# Pending CEO Reviews\n\n${section[c]}"
    printf '%b\n' "$out"
    ;;
domain)
    rows heuristics "WHERE domain = :d ORDER BY confidence DESC, times_validated DESC LIMIT CAST(:n AS INTEGER)" \
        --param "d=$domain" --param "n=$limit"
    h=$REPLY
    rows learnings "WHERE domain = :d ORDER BY created_at DESC LIMIT CAST(:n AS INTEGER)" \
        --param "d=$domain" --param "n=$limit"
    l=$REPLY
    nh=0 nl=0
    [ -z "$h" ] || { x=${h//[!$'\n']/}; nh=$((${#x} + 1)); }
    [ -z "$l" ] || { x=${l//[!$'\n']/}; nl=$((${#x} + 1)); }
    if [ "$format" = json ]; then
        jquote "$domain"
        d=$REPLY
        list "$h"
        h=$REPLY
        list "$l"
        printf '{"domain": %s, "heuristics": %s, "learnings": %s, "count": {"heuristics": %s, "learnings": %s}}\n' \
            "$d" "$h" "$REPLY" "$nh" "$nl"
    else
        list "$h"
        h=$REPLY
        list "$l"
        printf 'domain: %s\nheuristics:\n%s\nlearnings:\n%s\ncount:\nheuristics: %s\nlearnings: %s\n' \
            "$domain" "$h" "$REPLY" "$nh" "$nl"
    fi
    ;;
tags | recent | experiments | ceo-reviews)
    case $mode in
        tags)
            tags_json "$tags"
            rows learnings "WHERE EXISTS (SELECT 1 FROM json_each(:tags) t
                WHERE learnings.tags LIKE '%' || trim(t.value, $WS) || '%')
                ORDER BY created_at DESC LIMIT CAST(:n AS INTEGER)" --param "tags=$REPLY" --param "n=$limit" ;;
        recent)
            if [ -n "$type" ]; then
                rows learnings "WHERE type = :t ORDER BY created_at DESC LIMIT CAST(:n AS INTEGER)" \
                    --param "t=$type" --param "n=$recent"
            else
                rows learnings "ORDER BY created_at DESC LIMIT CAST(:n AS INTEGER)" --param "n=$recent"
            fi ;;
        experiments) rows experiments "WHERE status = 'active' ORDER BY updated_at DESC" ;;
        ceo-reviews) rows ceo_reviews "WHERE status = 'pending' ORDER BY created_at ASC" ;;
    esac
    list "$REPLY"
    printf '%s\n' "$REPLY"
    ;;
stats)
    build_stats() {
        local part="" name table col where
        for spec in "lt learnings type" "ld learnings domain" "hd heuristics domain" \
            "es experiments status" "cs ceo_reviews status"; do
            read -r name table col <<<"$spec"
            part+="SELECT '$name', ${PY//@/k} || ': ' || c,
                json_quote(CASE typeof(k) WHEN 'null' THEN 'null' ELSE ${PY//@/k} END) || ': ' || c
                FROM (SELECT $col AS k, COUNT(*) AS c FROM ${T[$table]} GROUP BY $col) UNION ALL "
        done
        for spec in "golden_heuristics heuristics is_golden=1" "total_learnings learnings 1" \
            "total_heuristics heuristics 1" "total_experiments experiments 1" "total_ceo_reviews ceo_reviews 1"; do
            read -r name table where <<<"$spec"
            part+="SELECT '$name', COUNT(*), NULL FROM ${T[$table]} WHERE $where UNION ALL "
        done
        SQL=${part% UNION ALL }
    }
    BUILD=build_stats
    build_stats
    query "$SQL"
    declare -A text=() json=() count=()
    rest=$OUT
    [ -z "$rest" ] || rest+=$'\n'
    while [ -n "$rest" ]; do
        line=${rest%%$'\n'*}
        rest=${rest#*$'\n'}
        tag=${line%%$'\t'*}
        line=${line#*$'\t'}
        case $tag in
            lt | ld | hd | es | cs)
                text[$tag]+=${text[$tag]:+\\n}${line%%$'\t'*}
                json[$tag]+=${json[$tag]:+, }${line#*$'\t'} ;;
            *) count[$tag]=${line%%$'\t'*} ;;
        esac
    done
    dicts=(learnings_by_type:lt learnings_by_domain:ld heuristics_by_domain:hd golden_heuristics
        experiments_by_status:es ceo_reviews_by_status:cs total_learnings total_heuristics
        total_experiments total_ceo_reviews)
    out=""
    for d in "${dicts[@]}"; do
        name=${d%%:*}
        if [[ $d == *:* ]]; then
            tag=${d#*:}
            if [ "$format" = json ]; then
                out+=${out:+, }"\"$name\": {${json[$tag]:-}}"
            else
                out+=${out:+\\n}"$name:\\n${text[$tag]:-}"
            fi
        elif [ "$format" = json ]; then
            out+=${out:+, }"\"$name\": ${count[$name]:-0}"
        else
            out+=${out:+\\n}"$name: ${count[$name]:-0}"
        fi
    done
    if [ "$format" = json ]; then printf '{%b}\n' "$out"; else printf '%b\n' "$out"; fi
    ;;
esac
