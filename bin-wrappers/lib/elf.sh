# shellcheck shell=bash
# The bash half of the ELF wrappers, sourced by each script: the home, the tools, input
# normalisation, the record pipeline, recovery, logging and exit statuses.
#
# Locks, outermost first (so no two scripts can deadlock):
#   .git/elf-active.lock  shared by every recording pipeline; exclusive for recovery and for
#                         sync-db-markdown.sh --fix, so a recovery never replays a live record
#   .git/claude-lock      the legacy commit lock, taken by elf-commit (old and new scripts
#                         exclude each other)
#   elf-write's per-file locks, and SQLite's own locking.

ELF_LIB=$(cd "${BASH_SOURCE[0]%/*}" && pwd)
export ELF_LIB

# elf_init NAME: set the script name, the home and its paths.
elf_init() {
    ELF_SCRIPT=$1
    ELF_HOME=${ELF_HOME:-$HOME/.claude/emergent-learning}
    # An absolute home, so that every tool sees the same paths whatever its working folder.
    case $ELF_HOME in
        /*) ;;
        *) ELF_HOME=$PWD/$ELF_HOME ;;
    esac
    ELF_DB=$ELF_HOME/memory/index.db
    ELF_ACTIVE_LOCK=$ELF_HOME/.git/elf-active.lock
    # This run's record key: the scripts put it in their record, so that a failed run can tell
    # whether its record was journaled (see elf_fail_status).
    ELF_KEY=elf-${EPOCHREALTIME//[!0-9]/}-$$-$SRANDOM
    # Warnings held until the run's record is through (see elf_warn_later).
    ELF_WARNINGS=()
    export ELF_HOME ELF_DB ELF_ACTIVE_LOCK ELF_SCRIPT
    local tool
    for tool in elf-db elf-write elf-commit elf-lock jq; do
        command -v "$tool" >/dev/null 2>&1 || elf_die 69 "$tool not found on PATH (install elf-tools, see its README)"
    done
}

# elf_flags NAME:VAR... -- ARGS...: parse "--NAME VALUE" and "--NAME=VALUE" into VAR, setting
# given_VAR=1 too (so that an empty value given on purpose is told from a missing one). -h and
# --help call the script's usage function; anything else is a usage error (64). Its own
# variables start with __ so that they never shadow the script's (bash scopes dynamically).
elf_flags() {
    local -A __var=()
    while [ "$1" != -- ]; do
        __var[${1%%:*}]=${1#*:}
        shift
    done
    shift
    local __flag __value
    while [ $# -gt 0 ]; do
        case $1 in
            -h | --help)
                usage
                exit 0
                ;;
            --?*=*)
                __flag=${1%%=*}
                __value=${1#*=}
                shift
                ;;
            --?*)
                __flag=$1
                [ -n "${__var[${__flag#--}]-}" ] || elf_die 64 "unknown argument $(printf '%q' "$1") (see --help)"
                [ $# -ge 2 ] || elf_die 64 "$__flag needs a value"
                __value=$2
                shift 2
                ;;
            *) elf_die 64 "unknown argument $(printf '%q' "$1") (see --help)" ;;
        esac
        __flag=${__flag#--}
        [ -n "${__var[$__flag]-}" ] || elf_die 64 "unknown argument $(printf '%q' "--$__flag") (see --help)"
        printf -v "${__var[$__flag]}" '%s' "$__value"
        printf -v "given_${__var[$__flag]}" '%s' 1
    done
}

# elf_die STATUS MESSAGE: one line on stderr, then exit.
elf_die() {
    local status=$1
    shift
    printf '%s: %s\n' "$ELF_SCRIPT" "$*" >&2
    exit "$status"
}

elf_warn() {
    printf '%s: warning: %s\n' "$ELF_SCRIPT" "$*" >&2
}

# elf_warn_later MESSAGE: a warning printed once the run's record is through (elf_submit), or
# dropped when the run fails: its one line then says what matters.
elf_warn_later() {
    ELF_WARNINGS+=("$*")
}

# elf_flush_warnings: print the held warnings.
elf_flush_warnings() {
    local w
    for w in "${ELF_WARNINGS[@]}"; do
        elf_warn "$w"
    done
    ELF_WARNINGS=()
}

# elf_reason MESSAGES STATUS: the line of the tools' MESSAGES that explains a failure (the first
# that is not a warning, its internal "line N: " dropped), for a one-line message of the
# script's own; "exit status STATUS" when there is none.
elf_reason() {
    local line first=""
    while IFS= read -r line; do
        case $line in "" | *": warning: "*) continue ;; esac
        first=$line
        break
    done <<<"$1"
    if [[ $first =~ ^([a-z-]+):\ line\ [0-9]+:\ (.*)$ ]]; then
        first="${BASH_REMATCH[1]}: ${BASH_REMATCH[2]}"
    fi
    printf '%s' "${first:-exit status $2}"
}

# elf_io_status MESSAGE DEFAULT: 77 when MESSAGE says permission was denied, DEFAULT otherwise
# (a read-only file system and a full disk are I/O errors, 74).
elf_io_status() {
    case $1 in
        *"Permission denied"* | *"Operation not permitted"*) echo 77 ;;
        *) echo "$2" ;;
    esac
}

# elf_clean_line TEXT: the one-line cleaned form (no ANSI escapes, no control characters).
elf_clean_line() {
    jq -nr -L "$ELF_LIB" --arg s "$1" 'include "elf"; $s | clean_line'
}

# elf_clean_lines VAR...: clean several variables in place with one jq.
elf_clean_lines() {
    local __args=() __v
    for __v in "$@"; do
        __args+=(--arg "$__v" "${!__v}")
    done
    local __out=()
    mapfile -d '' -t __out < <(jq -nj -L "$ELF_LIB" "${__args[@]}" \
        'include "elf"; $ARGS.named | to_entries[] | (.value | clean_line), "\u0000"')
    local __i=0
    for __v in "$@"; do
        printf -v "$__v" '%s' "${__out[__i]-}"
        __i=$((__i + 1))
    done
}

# elf_severity VALUE: 1..5 kept; low, medium, high, critical -> 2, 3, 4, 5 (any case);
# anything else is rejected (status 1).
elf_severity() {
    local v=${1,,}
    v=${v#"${v%%[![:space:]]*}"}
    v=${v%"${v##*[![:space:]]}"}
    case $v in
        1 | 2 | 3 | 4 | 5) printf '%s\n' "$v" ;;
        low) echo 2 ;;
        medium) echo 3 ;;
        high) echo 4 ;;
        critical) echo 5 ;;
        *) return 1 ;;
    esac
}

# elf_confidence VALUE: a number in [0, 1] (".5" is 0.5); low, medium, high -> 0.3, 0.6, 0.85
# (any case); empty -> 0.7; anything else is rejected (status 1).
elf_confidence() {
    local v=${1,,}
    v=${v#"${v%%[![:space:]]*}"}
    v=${v%"${v##*[![:space:]]}"}
    case $v in
        "") echo 0.7 ;;
        low) echo 0.3 ;;
        medium) echo 0.6 ;;
        high) echo 0.85 ;;
        *)
            [[ $v =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || return 1
            jq -nr --arg v "$v" '$v | tonumber | if . >= 0 and . <= 1 then . else error("out of range") end' 2>/dev/null || return 1
            ;;
    esac
}

# elf_prompt VAR LABEL: read one line from standard input into VAR, showing LABEL when standard
# input is a terminal.
elf_prompt() {
    local __line=""
    if [ -t 0 ]; then
        printf '%s' "$2" >&2
    fi
    IFS= read -r __line || true
    printf -v "$1" '%s' "$__line"
}

# elf_prompt_lines VAR LABEL: read lines until an empty line (or end of input) into VAR.
elf_prompt_lines() {
    local __line="" __all=""
    if [ -t 0 ]; then
        printf '%s\n' "$2" >&2
    fi
    while IFS= read -r __line && [ -n "$__line" ]; do
        __all+=${__all:+$'\n'}$__line
    done
    printf -v "$1" '%s' "$__all"
}

# elf_hash TEXT: eight hex digits naming TEXT, for the slug of a title without an ASCII letter
# or digit (empty otherwise: the slug does not need it).
elf_hash() {
    if [[ $1 =~ [A-Za-z0-9] ]]; then
        return 0
    fi
    printf '%s' "$1" | sha256sum | cut -c1-8
}

# elf_home_ready: create a missing home (folders, database, git repository), and complete an
# existing one: missing tables and indexes are added, nothing is dropped or rewritten.
elf_home_ready() {
    local err status=0
    err=$(mkdir -p "$ELF_HOME/memory/failures" "$ELF_HOME/memory/successes" "$ELF_HOME/memory/heuristics" \
        "$ELF_HOME/experiments/active" "$ELF_HOME/logs" 2>&1) ||
        elf_die "$(elf_io_status "$err" 74)" "cannot create the home folders under $ELF_HOME: ${err##*: }"
    # A home that cannot be written (a read-only mount, no permission) stops here, with its
    # reason, before anything is attempted. test -w asks the kernel, which knows read-only
    # mounts even for root; the probe file tells why.
    if [ ! -w "$ELF_HOME/memory" ]; then
        if err=$(mktemp "$ELF_HOME/memory/.elf-probe.XXXXXX" 2>&1); then
            rm -f "$err"
        else
            elf_die "$(elf_io_status "$err" 74)" "cannot write in the ELF home $ELF_HOME: ${err##*: }; nothing was changed"
        fi
    fi
    if [ ! -e "$ELF_HOME/.git/elf-initialized" ]; then
        # Several first runs at once: one creates the repository, the others wait for it. A
        # .git folder alone proves nothing (git init fills it in for a while): the stamp, made
        # under the lock once the repository is complete, does.
        #
        # A machine where git knows nobody (a fresh container, a CI runner): the new home's own
        # repository commits as "ELF <elf@HOST>", so that recording works out of the box. An
        # identity from git's configuration or GIT_AUTHOR_*/GIT_COMMITTER_* always wins.
        # shellcheck disable=SC2016 # expanded by the inner shell
        err=$(elf-lock -q -w 60 "$ELF_HOME/.elf-init.lock" -- sh -c '
            if [ ! -d "$1/.git" ]; then
                git init -q "$1" || exit
                if [ -z "$(git -C "$1" config user.name)" ] && [ -z "${GIT_AUTHOR_NAME-}" ]; then
                    git -C "$1" config user.name ELF &&
                        git -C "$1" config user.email "elf@$(uname -n)" || exit
                fi
            fi
            : >>"$1/.git/elf-initialized"' sh "$ELF_HOME" 2>&1 >/dev/null) || status=$?
        [ "$status" -eq 0 ] ||
            elf_die 74 "cannot create a git repository in $ELF_HOME: $(elf_reason "$err" "$status")"
    fi
    if [ ! -e "$ELF_HOME/.gitignore" ]; then
        printf '%s\n' "# The SQLite index and the logs are local to this machine; they are not tracked." \
            "memory/index.db" "memory/index.db-wal" "memory/index.db-shm" "memory/index.db-journal" "logs/" ".elf-init.lock" |
            elf-write --create "$ELF_HOME/.gitignore" 2>/dev/null ||
            [ -e "$ELF_HOME/.gitignore" ] || elf_die 74 "cannot write $ELF_HOME/.gitignore"
        # Committed below, by this run or, when a held lock or a full disk stops it, by the
        # next one: the marker stays until the commit is made.
        { : >>"$ELF_HOME/.git/elf-gitignore-uncommitted"; } 2>/dev/null || true
    fi
    if [ -e "$ELF_HOME/.git/elf-gitignore-uncommitted" ]; then
        status=0
        err=$(elf-commit --repo "$ELF_HOME" --lock "$ELF_HOME/.git/claude-lock" \
            ${ELF_LOCK_TIMEOUT:+--timeout "$ELF_LOCK_TIMEOUT"} \
            -m "Start the ELF home" -- .gitignore 2>&1 >/dev/null) || status=$?
        if [ "$status" -eq 0 ]; then
            rm -f "$ELF_HOME/.git/elf-gitignore-uncommitted"
        else
            elf_warn_later "could not commit .gitignore (the next run tries again): $(elf_reason "$err" "$status")"
        fi
    fi
    # The schema is completed once per database; the stamp (inside .git, never committed) names
    # the database's inode, so a replaced database is completed again.
    local stamp
    stamp=$ELF_HOME/.git/elf-schema-$(stat -c %i "$ELF_DB" 2>/dev/null || echo new)
    if [ ! -e "$stamp" ]; then
        status=0
        err=$(elf-db exec --db "$ELF_DB" --file "$ELF_LIB/schema.sql" 2>&1 >/dev/null) || status=$?
        [ "$status" -eq 0 ] ||
            elf_die "$status" "cannot prepare the database: $(elf_reason "$err" "$status"); nothing was recorded"
        elf-write --create "$ELF_HOME/.git/elf-schema-$(stat -c %i "$ELF_DB")" </dev/null 2>/dev/null || true
    fi
}

# elf_db_readable: exit with one line unless the database can be read (elf-db's status: 74
# for a file that is not a database or cannot be read, 77 without permission).
elf_db_readable() {
    local err status=0
    err=$(elf-db query --db "$ELF_DB" "SELECT count(*) FROM sqlite_master" 2>&1 >/dev/null) || status=$?
    [ "$status" -eq 0 ] || elf_die "$status" "cannot read the ELF database $ELF_DB: $(elf_reason "$err" "$status")"
}

# The pipeline tail every record goes through after elf-db insert --journal, and that recovery
# replays pending records through: shape, write, fix the row, commit, mark done. With
# ELF_TAIL_LOCK set (the lock of a shared append file), the tail runs under that lock, so that
# the commit of an entry holds that entry and no other writer's.
elf_tail() {
    if [ -n "${ELF_TAIL_LOCK-}" ]; then
        elf-lock -q -w "${ELF_LOCK_TIMEOUT:-60}" "$ELF_TAIL_LOCK" -- "$ELF_LIB/elf-tail"
    else
        elf_tail_run
    fi
}

elf_tail_run() {
    jq -c -L "$ELF_LIB" 'include "elf"; fill' |
        elf-write --root "$ELF_HOME" ${ELF_LOCK_TIMEOUT:+--timeout "$ELF_LOCK_TIMEOUT"} |
        jq -c -L "$ELF_LIB" 'include "elf"; fixup' |
        elf-db exec --db "$ELF_DB" |
        jq -c -L "$ELF_LIB" 'include "elf"; restore' |
        elf-commit --repo "$ELF_HOME" --lock "$ELF_HOME/.git/claude-lock" ${ELF_LOCK_TIMEOUT:+--timeout "$ELF_LOCK_TIMEOUT"} |
        elf-db "done" --db "$ELF_DB"
}

# elf_recover: finish what an earlier crash interrupted. Runs only when no other recording
# pipeline is live (the active lock is free), so it never replays a record still in flight;
# when some are live, one of them or a later run recovers instead.
#
# Its messages are held: a failed recovery is reported in one line after the run's own record
# (elf_warn_later), or not at all when that record fails too (its own message says why).
elf_recover() {
    local status=0 err
    err=$(elf-lock -n -q "$ELF_ACTIVE_LOCK" -- "$ELF_LIB/elf-recover" 2>&1 >/dev/null) || status=$?
    case $status in
        0) [ -z "$err" ] || printf '%s\n' "$err" >&2 ;;
        75) ;;
        *) elf_warn_later "interrupted records could not be completed: $(elf_reason "$err" "$status"); they stay journaled" ;;
    esac
}

# elf_record: records on stdin, finished records on stdout, all under the shared active lock.
elf_record() {
    elf-lock -s -q -w "${ELF_LOCK_TIMEOUT:-60}" "$ELF_ACTIVE_LOCK" -- "$ELF_LIB/elf-record"
}

# elf_submit RECORD: RECORD (one JSON line carrying "key": $ELF_KEY) through elf_record, the
# tools' messages held. Status 0: ELF_RESULT holds the finished record, and the messages (and
# the warnings held by elf_warn_later) are printed. Otherwise the status is returned with the messages in
# ELF_ERRORS, for elf_fail_status to explain in one line.
# shellcheck disable=SC2034 # ELF_RESULT is read by the scripts
elf_submit() {
    local err status=0
    ELF_RESULT=""
    ELF_ERRORS=""
    if err=$(mktemp "${TMPDIR:-/tmp}/elf-errors.XXXXXX" 2>/dev/null); then
        ELF_RESULT=$(printf '%s\n' "$1" | elf_record 2>"$err") || status=$?
        ELF_ERRORS=$(<"$err")
        rm -f "$err"
    else
        ELF_RESULT=$(printf '%s\n' "$1" | elf_record) || status=$?
    fi
    if [ "$status" -eq 0 ]; then
        [ -z "$ELF_ERRORS" ] || printf '%s\n' "$ELF_ERRORS" >&2
        elf_flush_warnings
    fi
    return "$status"
}

# elf_journal_state: where this run's record (key $ELF_KEY) stands in the journal: pending,
# done, absent (also when the database holds no journal or is not a database: nothing of the
# record can be replayed then), or unknown (the journal could not be read just now: a full
# disk, a busy database).
elf_journal_state() {
    local out err status=0
    err=$(mktemp "${TMPDIR:-/tmp}/elf-errors.XXXXXX" 2>/dev/null) || err=/dev/null
    out=$(elf-db query --db "$ELF_DB" "SELECT done_at IS NOT NULL AS done FROM elf_journal WHERE key = :k" \
        --param "k=$ELF_KEY" 2>"$err") || status=$?
    if [ "$status" -ne 0 ]; then
        case $(<"$err") in
            *"no such table"* | *"not a database"* | *"malformed"*) echo absent ;;
            *) echo unknown ;;
        esac
    elif [ -z "$out" ]; then
        echo absent
    else
        jq -r 'if .done == 1 then "done" else "pending" end' <<<"$out"
    fi
    [ "$err" = /dev/null ] || rm -f "$err"
}

# elf_log LEVEL MESSAGE: one line in logs/YYYYMMDD.log, appended atomically.
elf_log() {
    local line
    line=$(printf '[%(%Y-%m-%d %H:%M:%S)T] [%s] [%s] %s' -1 "$1" "$ELF_SCRIPT" "$2")
    printf '%s\n' "$line" | elf-write --append "$ELF_HOME/logs/$(printf '%(%Y%m%d)T' -1).log" 2>/dev/null ||
        elf_warn "could not write the log"
}

# elf_fail_status STATUS WHAT: explain a failed elf_submit in one line, the tools' reason and
# where the record stands, and exit with its status (64, 65, 74, 75 or 77; 70 for any other).
# A record that is journaled is not lost: the next run of any writing script completes it.
elf_fail_status() {
    local status=$1 reason
    reason=$(elf_reason "${ELF_ERRORS-}" "$1")
    case $status in
        64 | 65 | 74 | 75 | 77) ;;
        *) status=70 ;;
    esac
    case $(elf_journal_state) in
        pending) elf_die "$status" "$2: the record is journaled but not finished: $reason; the next run completes it" ;;
        done) elf_die "$status" "$2 failed: $reason; another run has completed the record since" ;;
        unknown) elf_die "$status" "$2 failed: $reason; if the record was journaled, the next run completes it" ;;
        *) elf_die "$status" "$2 failed: $reason; nothing was recorded" ;;
    esac
}
