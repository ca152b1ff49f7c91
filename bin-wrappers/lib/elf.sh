# shellcheck shell=bash
# The bash half of the ELF wrappers, sourced by each script: the home, input cleaning and JSON
# encoding, the record (journal, then drain), logging and exit statuses.
#
# A record is journaled, then drained:
#
#   1. The script cleans its input, builds its record (one JSON line, in bash) and journals it:
#      `elf-db insert --journal` stores the row and the whole record in one transaction. From
#      then on the record is safe: whatever happens, a drain completes it.
#   2. It takes the drain lock (.git/elf-drain.lock) and, holding it, runs every pending
#      record (its own and every other writer's) through the tail in one pipeline:
#        elf-db pending | elf-write | elf-commit | elf-db done --key fix
#      one elf-write batch, one elf-commit group (one commit per record) and one transaction
#      for the done marks: group commit across processes. A script whose record another
#      drainer finished while it waited for the lock finds it among the finished records that
#      drain left in .git/elf-drain.out, and hands the lock on without draining.
#   3. It reads its record's outcome: from its finished record (the drain's output, or
#      .git/elf-drain.out) when it came through whole, else from the journal (`elf-db query
#      --format tsv`): done, with its id, path and commit; set aside, with its error; or still
#      pending, with the reason.
#
# Recovery is the same drain: a record whose writer was killed is pending, and the next drain
# (any script's) completes it. A record that fails for a reason of its own (a bad value, a file
# in the way) is counted by `elf-db done`; after three attempts (never for the
# retryable statuses 74 and 75) it is set aside with its error, so that it never blocks the
# others; sync-db-markdown.sh lists it, and `elf-db retry` or `elf-db drop` settles it.
#
# Locks, outermost first (so that no two scripts can deadlock):
#   .git/elf-drain.lock   one drainer at a time; sync-db-markdown.sh --fix holds it while it
#                         repairs, so no record is drained meanwhile
#   elf-write's per-file locks
#   .git/claude-lock      the legacy commit lock, taken by elf-commit (old and new scripts
#                         exclude each other)
#   SQLite's own locking (journaling takes none of the locks above).
#
# The tail needs no jq: a record says what its later stages need from earlier ones with
# references ({"$ref":"/db/id"}, {"$join":[...]}) that each tool resolves as it acts.

ELF_LIB=$(cd "${BASH_SOURCE[0]%/*}" && pwd)
export ELF_LIB

# elf_init NAME: set the script name, the home and its paths; check the settings that would
# make a record fail, before anything is written.
elf_init() {
    ELF_SCRIPT=$1
    if [ -z "${ELF_HOME-}" ]; then
        [ -n "${HOME-}" ] || elf_die 64 "neither ELF_HOME nor HOME is set: set ELF_HOME to the ELF home's folder"
        ELF_HOME=$HOME/.claude/emergent-learning
    fi
    # An absolute home, so that every tool sees the same paths whatever its working folder.
    case $ELF_HOME in
        /*) ;;
        *) ELF_HOME=$PWD/$ELF_HOME ;;
    esac
    ELF_DB=$ELF_HOME/memory/index.db
    # The git folder: .git, or the folder a .git file names (a linked worktree, a submodule,
    # git init --separate-git-dir). The scripts' locks and stamps live there, out of the work
    # tree.
    ELF_GIT_DIR=$ELF_HOME/.git
    if [ -f "$ELF_GIT_DIR" ] && [ ! -L "$ELF_GIT_DIR" ]; then
        local gitdir=""
        IFS= read -r gitdir <"$ELF_GIT_DIR" || true
        [[ $gitdir == "gitdir: "?* ]] ||
            elf_die 66 "$ELF_GIT_DIR is a file but not a \"gitdir: PATH\" line; nothing was recorded"
        gitdir=${gitdir#gitdir: }
        case $gitdir in
            /*) ELF_GIT_DIR=$gitdir ;;
            *) ELF_GIT_DIR=$ELF_HOME/$gitdir ;;
        esac
    fi
    ELF_DRAIN_LOCK=$ELF_GIT_DIR/elf-drain.lock
    # One timeout for every wait of a run: the drain lock, a file's lock, git's locks and a
    # busy database.
    ELF_TIMEOUT=${ELF_LOCK_TIMEOUT:-60}
    [[ $ELF_TIMEOUT =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
        elf_die 64 "ELF_LOCK_TIMEOUT must be a number of seconds (such as 30 or 2.5), not $(elf_quote "$ELF_TIMEOUT")"
    # This run's record key: the scripts put it in their record, to find its outcome.
    ELF_KEY=elf-${EPOCHREALTIME//[!0-9]/}-$$-$SRANDOM
    # Warnings printed once the run's record is through (see elf_record).
    ELF_WARNINGS=()
    export ELF_HOME ELF_DB ELF_SCRIPT
}

# elf_need_tools TOOL...: exit 69 (EX_UNAVAILABLE) with one line unless each TOOL is on PATH.
# Called once the arguments are read, so that --help works without the tools.
elf_need_tools() {
    local tool
    for tool in "$@"; do
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
                [ -n "${__var[${__flag#--}]-}" ] || elf_die 64 "unknown argument $(elf_quote "$1") (see --help)"
                [ $# -ge 2 ] || elf_die 64 "$__flag needs a value"
                __value=$2
                shift 2
                ;;
            *) elf_die 64 "unknown argument $(elf_quote "$1") (see --help)" ;;
        esac
        __flag=${__flag#--}
        [ -n "${__var[$__flag]-}" ] || elf_die 64 "unknown argument $(elf_quote "--$__flag") (see --help)"
        printf -v "${__var[$__flag]}" '%s' "$__value"
        printf -v "given_${__var[$__flag]}" '%s' 1
    done
}

# elf_controls TEXT FORMAT [KEEP_NEWLINES]: TEXT with every control character (C0, DEL and
# C1) written as printf FORMAT of its code (\\x%02x for people, \\u%04x for JSON); newlines
# kept when KEEP_NEWLINES is given. Sets REPLY. The loop runs only when there is one.
# shellcheck disable=SC2059 # FORMAT is the caller's printf format, by design
elf_controls() {
    local LC_ALL=C s=$1 out="" c set=$'\x01'-$'\x1f'$'\x7f'
    [ -z "${3-}" ] || set=$'\x01'-$'\x09'$'\x0b'-$'\x1f'$'\x7f'
    # shellcheck disable=SC2254 # $set is a bracket expression's contents, by design
    if [[ $s == *[$set]* || $s == *$'\xc2'[$'\x80'-$'\x9f']* ]]; then
        while [ -n "$s" ]; do
            c=${s:0:1}
            s=${s:1}
            case $c in
                [$set]) printf -v c "$2" "'$c" ;;
                $'\xc2')
                    if [[ $s == [$'\x80'-$'\x9f']* ]]; then
                        printf -v c "$2" "'${s:0:1}"
                        s=${s:1}
                    fi
                    ;;
            esac
            out+=$c
        done
        s=$out
    fi
    REPLY=$s
}

# elf_quote TEXT: TEXT in single quotes for a message, control characters shown as \xNN.
elf_quote() {
    elf_controls "$1" '\\x%02x'
    printf "'%s'" "$REPLY"
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

# elf_reason MESSAGES STATUS: the line of the tools' MESSAGES that explains a failure (the first
# that is not a warning, its internal "line N: " dropped), for a one-line message of the
# script's own; "exit status STATUS" when there is none. A wait that ran out (75) says what
# was busy and for how long, in the script's own setting (ELF_LOCK_TIMEOUT), not in the flags
# of the tool that waited.
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
    if [ "$2" = 75 ] && [ -n "$first" ]; then
        elf_waited "$first"
        first=$REPLY
    fi
    printf '%s' "${first:-exit status $2}"
}

# elf_waited MESSAGE: a tool's message about a wait that ran out, said in the scripts' terms:
# what was busy, and for how long (ELF_LOCK_TIMEOUT). Sets REPLY.
elf_waited() {
    local m=$1
    case $m in
        *ELF_LOCK_TIMEOUT* | *"never end"* | *"wait forever"*) ;; # no wait: a lock of our own ancestry
        *"database is busy"* | *"database is locked"* | *"--busy-timeout"*)
            m="the database ${ELF_DB-} stayed busy for ${ELF_TIMEOUT-}s (ELF_LOCK_TIMEOUT)"
            ;;
        *)
            m=${m%%"; gave up after"*}
            m=${m%%" (gave up after"*}
            m="$m: waited ${ELF_TIMEOUT-}s (ELF_LOCK_TIMEOUT)"
            ;;
    esac
    REPLY=$m
}

# elf_io_status MESSAGE DEFAULT: 77 when MESSAGE says permission was denied, DEFAULT otherwise
# (a read-only file system and a full disk are I/O errors, 74).
elf_io_status() {
    case $1 in
        *"Permission denied"* | *"Operation not permitted"*) echo 77 ;;
        *) echo "$2" ;;
    esac
}

# ---- Cleaning and encoding text, in bash (no program started) ----

# elf_clean_text VAR...: in place: CR LF and lone CR become LF; ANSI escape sequences (CSI, OSC
# and two-byte ESC x) are removed; tabs become spaces; other control characters (C0 but
# newline, DEL, C1) are removed; each byte that is not part of valid UTF-8 becomes U+FFFD.
elf_clean_text() {
    local LC_ALL=C __v __s __out __rest
    for __v in "$@"; do
        __s=${!__v}
        __s=${__s//$'\r\n'/$'\n'}
        __s=${__s//$'\r'/$'\n'}
        if [[ $__s == *$'\e'* ]]; then
            __out=${__s%%$'\e'*}
            __rest=${__s#*$'\e'}
            while :; do
                if [[ $__rest =~ ^\[[0-?]*[\ -/]*[@-~] ]]; then
                    __rest=${__rest:${#BASH_REMATCH[0]}}
                elif [[ $__rest == ']'* ]]; then
                    # OSC: up to BEL, or to the next ESC (whose "\" then ends it as ESC x).
                    if [[ ${__rest%%$'\e'*} == *$'\a'* ]]; then
                        __rest=${__rest#*$'\a'}
                    else
                        __rest=${__rest:${#__rest%%$'\e'*}}
                    fi
                elif [[ $__rest == [@-_]* ]]; then
                    __rest=${__rest:1}
                fi
                if [[ $__rest == *$'\e'* ]]; then
                    __out+=${__rest%%$'\e'*}
                    __rest=${__rest#*$'\e'}
                else
                    __out+=$__rest
                    break
                fi
            done
            __s=$__out
        fi
        __s=${__s//$'\t'/ }
        __s=${__s//[$'\x01'-$'\x09'$'\x0b'-$'\x1f'$'\x7f']/}
        if [[ $__s == *[$'\x80'-$'\xff']* ]]; then
            __s=${__s//$'\xc2'[$'\x80'-$'\x9f']/}
            elf_utf8 __s
        fi
        printf -v "$__v" '%s' "$__s"
    done
}

# elf_utf8 VAR: in place, each byte that is not part of a valid UTF-8 sequence becomes U+FFFD
# (as jq reads text). Called with LC_ALL=C.
elf_utf8() {
    local s=${!1} out="" valid
    valid=$'^([\x01-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf][\x80-\xbf]|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf][\x80-\xbf]|[\xf1-\xf3][\x80-\xbf][\x80-\xbf][\x80-\xbf]|\xf4[\x80-\x8f][\x80-\xbf][\x80-\xbf])+'
    while [ -n "$s" ]; do
        if [[ $s =~ $valid ]]; then
            out+=${BASH_REMATCH[0]}
            s=${s:${#BASH_REMATCH[0]}}
        else
            out+=$'\xef\xbf\xbd'
            s=${s:1}
        fi
    done
    printf -v "$1" '%s' "$out"
}

# elf_clean_line VAR...: in place, one line: elf_clean_text, then newlines become spaces, runs
# of spaces one space, and the ends are trimmed.
elf_clean_line() {
    local LC_ALL=C __v __s
    elf_clean_text "$@"
    for __v in "$@"; do
        __s=${!__v//$'\n'/ }
        while [[ $__s == *'  '* ]]; do
            __s=${__s//'  '/ }
        done
        __s=${__s# }
        __s=${__s% }
        printf -v "$__v" '%s' "$__s"
    done
}

# elf_clean_block VAR...: in place, text of several lines: elf_clean_text, then trailing
# spaces and newlines removed.
elf_clean_block() {
    local LC_ALL=C __v __s
    elf_clean_text "$@"
    for __v in "$@"; do
        __s=${!__v}
        __s=${__s%"${__s##*[!$' \n']}"}
        printf -v "$__v" '%s' "$__s"
    done
}

# elf_md_block TEXT: TEXT for the body of a markdown entry, in REPLY: a line that markdown
# would read as a heading ("#" after at most three spaces) gets a backslash before its "#", so
# that text of the user's can never forge an entry ("## H-99: ...") or a section. Markdown
# shows "\#" as "#"; the index keeps the text as given. (elf.jq's md_block is the same rule.)
elf_md_block() {
    local LC_ALL=C s=$'\n'$1 p
    if [[ $s == *$'\n'*'#'* ]]; then
        for p in '' ' ' '  ' '   '; do
            s=${s//$'\n'"$p"'#'/$'\n'"$p"'\#'}
        done
    fi
    REPLY=${s:1}
}

# elf_slug TEXT: the legacy slug: lower case, spaces to "-", only [a-z0-9-], at most 100
# characters; "untitled-HASH" (eight hex digits of TEXT's SHA-256) when no ASCII letter or digit
# is left. Sets REPLY.
elf_slug() {
    local LC_ALL=C s=${1,,}
    s=${s// /-}
    s=${s//[!a-z0-9-]/}
    s=${s:0:100}
    if [[ $s != *[a-z0-9]* ]]; then
        s=$(printf '%s' "$1" | sha256sum)
        s=untitled-${s:0:8}
    fi
    REPLY=$s
}

# elf_domain_slug TEXT: the legacy domain rule: as the slug, then leading and trailing "-"
# stripped (empty when nothing is left). Sets REPLY.
elf_domain_slug() {
    local LC_ALL=C s=${1,,}
    s=${s// /-}
    s=${s//[!a-z0-9-]/}
    s=${s:0:100}
    while [[ $s == -* ]]; do s=${s#-}; done
    while [[ $s == *- ]]; do s=${s%-}; done
    REPLY=$s
}

# elf_json TEXT: TEXT as a JSON string (quotes included), in REPLY. TEXT is valid UTF-8 (as
# elf_clean_text leaves it).
elf_json() {
    # Byte by byte (LC_ALL=C): only ASCII is replaced, and bash's replacements in a UTF-8
    # locale are slower by a factor of forty.
    local LC_ALL=C s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    elf_controls "$s" '\\u%04x'
    REPLY="\"$REPLY\""
}

# elf_severity VALUE: 1..5 kept; low, medium, high, critical -> 2, 3, 4, 5 (any case);
# anything else is rejected (status 1). Sets REPLY.
elf_severity() {
    local v=${1,,}
    v=${v#"${v%%[![:space:]]*}"}
    v=${v%"${v##*[![:space:]]}"}
    case $v in
        1 | 2 | 3 | 4 | 5) REPLY=$v ;;
        low) REPLY=2 ;;
        medium) REPLY=3 ;;
        high) REPLY=4 ;;
        critical) REPLY=5 ;;
        *) return 1 ;;
    esac
}

# elf_confidence VALUE: a number in [0, 1] (".5" is 0.5), as the shortest decimal text (0.70 ->
# 0.7, 1.0 -> 1); low, medium, high -> 0.3, 0.6, 0.85 (any case); empty -> 0.7; anything else
# is rejected (status 1). Sets REPLY.
elf_confidence() {
    local v=${1,,} int frac
    v=${v#"${v%%[![:space:]]*}"}
    v=${v%"${v##*[![:space:]]}"}
    case $v in
        "") REPLY=0.7 ;;
        low) REPLY=0.3 ;;
        medium) REPLY=0.6 ;;
        high) REPLY=0.85 ;;
        *)
            [[ $v == *[0-9]* ]] && [[ $v =~ ^([0-9]*)(\.([0-9]*))?$ ]] || return 1
            int=${BASH_REMATCH[1]}
            frac=${BASH_REMATCH[3]}
            while [[ $int == 0?* ]]; do int=${int#0}; done
            while [[ $frac == *0 ]]; do frac=${frac%0}; done
            int=${int:-0}
            case $int in
                0) ;;
                1) [ -z "$frac" ] || return 1 ;;
                *) return 1 ;;
            esac
            REPLY=$int${frac:+.$frac}
            ;;
    esac
}

# The longest answer taken at a prompt: 128 KiB, what the kernel lets a flag or an environment
# variable carry (MAX_ARG_STRLEN), so that a value means the same by all three ways in. Bash
# reads a pipe a byte at a time: reading stops at the limit, so that a flood is refused at once.
ELF_MAX_ANSWER=131072

# elf_prompt VAR LABEL: read one line from standard input into VAR, showing LABEL when standard
# input is a terminal.
elf_prompt() {
    local __line=""
    if [ -t 0 ]; then
        printf '%s' "$2" >&2
    fi
    IFS= read -r -n $((ELF_MAX_ANSWER + 1)) __line || true
    elf_answer_fits "$__line" "$2"
    printf -v "$1" '%s' "$__line"
}

# elf_prompt_lines VAR LABEL: read lines until an empty line (or end of input) into VAR.
elf_prompt_lines() {
    local __line="" __all="" __size=0 __lines=()
    if [ -t 0 ]; then
        printf '%s\n' "$2" >&2
    fi
    # Lines gathered in an array and joined once (appending to a string copies it each time).
    while IFS= read -r -n $((ELF_MAX_ANSWER + 1)) __line && [ -n "$__line" ]; do
        __lines+=("$__line")
        __size=$((__size + ${#__line} + 1))
        [ "$__size" -le $((ELF_MAX_ANSWER + 1)) ] || break
    done
    if [ ${#__lines[@]} -gt 0 ]; then
        printf -v __all '%s\n' "${__lines[@]}"
        __all=${__all%$'\n'}
    fi
    elf_answer_fits "$__all" "$2"
    printf -v "$1" '%s' "$__all"
}

# elf_answer_fits TEXT LABEL: exit 65 when TEXT is longer than ELF_MAX_ANSWER bytes.
elf_answer_fits() {
    local LC_ALL=C label=${2%%[:(]*}
    [ ${#1} -le "$ELF_MAX_ANSWER" ] ||
        elf_die 65 "the answer to \"${label% }\" is longer than $ELF_MAX_ANSWER bytes (128 KiB, the limit of a value); nothing was recorded"
}

# elf_home_ready: create a missing home (folders, git repository, .gitignore), and refuse a home
# that cannot be recorded in, before anything is journaled. On a ready home it starts no program.
# The database's tables are completed by the journaling itself (elf-db insert --schema).
elf_home_ready() {
    local err status=0 d
    elf_need_tools elf-db elf-write elf-commit elf-lock
    for d in memory/failures memory/successes memory/heuristics experiments/active logs; do
        if [ ! -d "$ELF_HOME/$d" ]; then
            err=$(mkdir -p "$ELF_HOME/memory/failures" "$ELF_HOME/memory/successes" "$ELF_HOME/memory/heuristics" \
                "$ELF_HOME/experiments/active" "$ELF_HOME/logs" 2>&1) ||
                elf_die "$(elf_io_status "$err" 74)" "cannot create the home folders under $ELF_HOME: ${err##*: }"
            break
        fi
    done
    # The record's folders must be the home's own: a symbolic link would lead the writes out of
    # the home, which elf-write refuses; found now, nothing is journaled.
    for d in memory memory/failures memory/heuristics experiments experiments/active; do
        [ ! -L "$ELF_HOME/$d" ] ||
            elf_die 77 "$ELF_HOME/$d is a symbolic link; the ELF home's folders must be real folders; nothing was recorded"
    done
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
    if [ ! -e "$ELF_GIT_DIR/elf-ready" ]; then
        # Several first runs at once: one creates the repository, the others wait for it. A
        # .git folder alone proves nothing (git init fills it in for a while): the stamp, made
        # under the lock once the repository is complete and elf-commit can commit in it, does.
        # The lock lives in the git folder (made first when missing; git init fills it in), so
        # that nothing of the scripts' shows in the home's work tree.
        #
        # A home inside another repository's work tree gets a repository of its own (the
        # record's three copies stay in the home), and the run says so once.
        #
        # A machine where git knows nobody (a fresh container, a CI runner): the new home's own
        # repository commits as "ELF <elf@HOST>", so that recording works out of the box. An
        # identity from git's configuration or GIT_AUTHOR_*/GIT_COMMITTER_* always wins.
        #
        # A repository elf-commit cannot commit in (SHA-256 objects, an unknown extension) is
        # refused here, before anything is journaled (elf-commit --check: 69, one line).
        if [ ! -e "$ELF_HOME/.git" ] && [ ! -L "$ELF_HOME/.git" ]; then
            local outer
            if outer=$(git -C "$ELF_HOME" rev-parse --show-toplevel 2>/dev/null); then
                ELF_WARNINGS+=("$ELF_HOME is inside the git work tree of $outer; the ELF home got a git repository of its own")
            fi
            err=$(mkdir -- "$ELF_HOME/.git" 2>&1) || [ -d "$ELF_HOME/.git" ] ||
                elf_die "$(elf_io_status "$err" 74)" "cannot create a git repository in $ELF_HOME: ${err##*: }; nothing was recorded"
        fi
        # shellcheck disable=SC2016 # expanded by the inner shell
        err=$(elf-lock -q -w "$ELF_TIMEOUT" "$ELF_GIT_DIR/elf-init.lock" -- sh -c '
            if [ ! -e "$2/HEAD" ]; then
                git init -q "$1" >&2 || exit 74
                if [ -z "$(git -C "$1" config user.name)" ] && [ -z "${GIT_AUTHOR_NAME-}" ]; then
                    git -C "$1" config user.name ELF &&
                        git -C "$1" config user.email "elf@$(uname -n)" || exit 74
                fi
            fi
            elf-commit --repo "$1" --check || exit
            : >>"$2/elf-ready"' sh "$ELF_HOME" "$ELF_GIT_DIR" 2>&1 >/dev/null) || status=$?
        case $status in
            0) ;;
            64 | 69) elf_die "$status" "cannot record in the git repository of $ELF_HOME: $(elf_reason "$err" "$status"); nothing was recorded" ;;
            *) elf_exit_status "$status" "cannot create a git repository in $ELF_HOME: $(elf_reason "$err" "$status"); nothing was recorded" ;;
        esac
    fi
    if [ ! -e "$ELF_HOME/.gitignore" ]; then
        printf '%s\n' "# The SQLite index and the logs are local to this machine; they are not tracked." \
            "memory/index.db" "memory/index.db-wal" "memory/index.db-shm" "memory/index.db-journal" "logs/" |
            elf-write --create "$ELF_HOME/.gitignore" 2>/dev/null ||
            [ -e "$ELF_HOME/.gitignore" ] || elf_die 74 "cannot write $ELF_HOME/.gitignore"
        # Committed below, by this run or, when a held lock or a full disk stops it, by the
        # next one: the marker stays until the commit is made.
        { : >>"$ELF_GIT_DIR/elf-gitignore-uncommitted"; } 2>/dev/null || true
    fi
    if [ -e "$ELF_GIT_DIR/elf-gitignore-uncommitted" ]; then
        status=0
        err=$(elf-commit --repo "$ELF_HOME" --lock "$ELF_GIT_DIR/claude-lock" --timeout "$ELF_TIMEOUT" \
            -m "Start the ELF home" -- .gitignore 2>&1 >/dev/null) || status=$?
        if [ "$status" -eq 0 ]; then
            rm -f "$ELF_GIT_DIR/elf-gitignore-uncommitted"
        else
            ELF_WARNINGS+=("could not commit .gitignore (the next run tries again): $(elf_reason "$err" "$status")")
        fi
    fi
}

# elf_db_readable: exit with one line unless the database can be read (elf-db's status: 74
# for a file that is not a database or cannot be read, 77 without permission).
elf_db_readable() {
    local err status=0
    err=$(elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" "SELECT count(*) FROM sqlite_master" 2>&1 >/dev/null) || status=$?
    [ "$status" -eq 0 ] || elf_die "$status" "cannot read the ELF database $ELF_DB: $(elf_reason "$err" "$status")"
}

# elf_drain: under the drain lock, run every pending record through the tail (elf_tail).
# Status 0 when the tail ran through (records that failed on their own are counted by elf-db
# done, see the top of this file); otherwise the status of the step that stopped, with its
# messages in ELF_DRAIN_ERRORS.
elf_drain() {
    local fd status=0
    ELF_DRAIN_ERRORS=""
    ELF_FINISHED=""
    if [ -L "$ELF_DRAIN_LOCK" ]; then
        ELF_DRAIN_ERRORS="$ELF_DRAIN_LOCK is a symbolic link; refusing to follow it"
        return 77
    fi
    exec {fd}>>"$ELF_DRAIN_LOCK" || {
        ELF_DRAIN_ERRORS="cannot open the drain lock $ELF_DRAIN_LOCK"
        return 74
    }
    # The descriptor form: the lock belongs to this shell's open file, held until it is closed.
    ELF_DRAIN_ERRORS=$(elf-lock -q -w "$ELF_TIMEOUT" "$fd" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        exec {fd}>&-
        [ "$status" -ne 75 ] ||
            ELF_DRAIN_ERRORS="the drain lock $ELF_DRAIN_LOCK stayed held for ${ELF_TIMEOUT}s (ELF_LOCK_TIMEOUT)"
        return "$status"
    fi
    # The drain that just ended may have finished this run's record: its finished records are
    # in .git/elf-drain.out (written by elf_tail under this lock). Then there is nothing to do
    # but read the outcome, and the lock goes to the next waiter at once.
    local out=$ELF_GIT_DIR/elf-drain.out text
    if [ -f "$out" ] && [ ! -L "$out" ]; then
        # read, not $(<...): no subshell to fork (a regular file is read in blocks).
        IFS= read -r -d '' text <"$out" || true
        elf_mine "$text"
        if elf_finished; then
            exec {fd}>&-
            return 0
        fi
    fi
    elf_tail || status=$?
    exec {fd}>&-
    return "$status"
}

# elf_mine TEXT: the line of TEXT (finished records, one a line) that is this run's record, in
# ELF_FINISHED (empty when there is none).
elf_mine() {
    ELF_FINISHED=""
    if [[ $'\n'$1 =~ $'\n'(\{\"key\":\"$ELF_KEY\"[^$'\n']*) ]]; then
        ELF_FINISHED=${BASH_REMATCH[1]}
    fi
}

# elf_tail: every pending record through the tail, by the holder of the drain lock. Records
# journaled by an earlier version of the scripts are brought to the current form first (one jq
# run, only when there are such records). Status and ELF_DRAIN_ERRORS as elf_drain's.
elf_tail() {
    local status=0 mine=$'\x1e'"elf-mine " out=$ELF_GIT_DIR/elf-drain.out
    # The tools' messages are kept in memory (a file could not take them on a full disk). The
    # finished record of this run's key, when this drain finished it, follows them on a last
    # line of its own (printed once the tail has ended, so nothing is spliced into it). The
    # finished records are also left in .git/elf-drain.out, for the scripts waiting for the
    # lock whose records this drain finished (see elf_drain); when it cannot be written, they
    # ask the journal instead.
    # shellcheck disable=SC2030 # $pending lives in this subshell only, by design
    ELF_DRAIN_ERRORS=$(
        {
            pending=$(elf-db pending --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT") || exit
            [ -n "$pending" ] || exit 0
            elf_upgrade_pending
            finished=$(printf '%s\n' "$pending" |
                elf-write --keep-going --root "$ELF_HOME" --timeout "$ELF_TIMEOUT" |
                elf-commit --keep-going --repo "$ELF_HOME" --lock "$ELF_GIT_DIR/claude-lock" --timeout "$ELF_TIMEOUT" \
                    ${ELF_REMOTE:+--push "$ELF_REMOTE" --push-timeout "$ELF_TIMEOUT" --db "$ELF_DB"} |
                elf-db "done" --keep-going --key fix --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT") || exit
            [ -z "${ELF_REMOTE-}" ] || elf_import || true
            if [ ! -L "$out" ]; then
                # A file cut short by a full disk is emptied (truncating frees room).
                { printf '%s\n' "$finished" >"$out"; } 2>/dev/null || { : >"$out"; } 2>/dev/null
            fi
            elf_mine "$finished"
            [ -z "$ELF_FINISHED" ] || printf '%s%s\n' "$mine" "$ELF_FINISHED"
        } 2>&1
    ) || status=$?
    ELF_FINISHED=""
    # A regular expression, not ${x##*"$mine"}: bash's pattern matching is quadratic in the
    # length of the text, and a record may be large.
    if [[ $ELF_DRAIN_ERRORS =~ $mine(.*)$ ]]; then
        ELF_FINISHED=${BASH_REMATCH[1]}
        ELF_DRAIN_ERRORS=${ELF_DRAIN_ERRORS:0:${#ELF_DRAIN_ERRORS}-${#BASH_REMATCH[0]}}
    fi
    return "$status"
}

# elf_finished: this run's outcome read from its finished record (ELF_FINISHED, one JSON line
# the drain passed on), without a program: true, with ELF_ID, ELF_PATH and ELF_COMMIT set,
# when the record came through whole. The record is the scripts' own: every value of the
# user's is a JSON string, in which a quote is always escaped, so these patterns can only meet
# the keys they name (the first "id" is the insert's, its results closing "db").
# shellcheck disable=SC2034 # ELF_ID, ELF_PATH and ELF_COMMIT are read by the scripts
elf_finished() {
    local r=$ELF_FINISHED s='"(([^"\\]|\\.)*)"'
    [ -n "$r" ] && [[ $r != *'"error":{'* ]] || return 1
    [[ $r =~ \"id\":([0-9]+) ]] || return 1
    ELF_ID=${BASH_REMATCH[1]}
    [[ $r =~ \"write\":\[?\{\"path\":$s ]] || return 1
    ELF_PATH=${BASH_REMATCH[1]}
    if [[ $r =~ \"sha\":\"([0-9a-f]+)\" ]]; then
        ELF_COMMIT=${BASH_REMATCH[1]}
        [[ ! $r =~ \"skipped\":$s ]] || ELF_COMMIT="skipped (${BASH_REMATCH[1]})"
    else
        return 1
    fi
}

# elf_upgrade_pending: the pending records of an earlier version of the scripts (a failure
# without its "fix", a heuristic without its entry's "$join") in the current form, in place in
# $pending. Found by counting (a line at a time would make bash read byte by byte): every
# current failure carries one "fix" and every current heuristic one "$join".
# shellcheck disable=SC2016,SC2031 # '"$join"' is JSON text; $pending is elf_tail's subshell's
elf_upgrade_pending() {
    local failures heuristics fixes joins
    elf_count "$pending" '"kind":"failure"' && failures=$REPLY
    elf_count "$pending" '"kind":"heuristic"' && heuristics=$REPLY
    elf_count "$pending" ',"fix":{' && fixes=$REPLY
    elf_count "$pending" '{"$join":' && joins=$REPLY
    if [ "$fixes" -lt "$failures" ] || [ "$joins" -lt "$heuristics" ]; then
        if command -v jq >/dev/null 2>&1; then
            pending=$(jq -c -L "$ELF_LIB" 'include "elf"; upgrade' <<<"$pending") || true
        fi
    fi
}

# elf_count TEXT WORD: how many times WORD is in TEXT, in REPLY.
elf_count() {
    local rest=${1//"$2"/}
    REPLY=$(((${#1} - ${#rest}) / ${#2}))
}

# elf_record RECORD WHAT: journal RECORD (one JSON line carrying "key": $ELF_KEY), drain, and
# read the outcome. On success ELF_ID, ELF_PATH and ELF_COMMIT are set (ELF_COMMIT is the
# commit's id, or "skipped (REASON)"). Otherwise one line saying why and where the record
# stands, and exit with the status (64, 65, 74, 75 or 77; 70 for any other).
# shellcheck disable=SC2034 # ELF_ID, ELF_PATH and ELF_COMMIT are read by the scripts
elf_record() {
    local err status=0 drain=0 out state code message w
    if [ -e "$ELF_DB" ]; then
        err=$(elf-db insert --journal --schema "$ELF_LIB/schema.sql" --db "$ELF_DB" \
            --busy-timeout "$ELF_TIMEOUT" <<<"$1" 2>&1 >/dev/null) || status=$?
    else
        elf_seed
        err=$(elf-db insert --journal --schema <(printf '%s\n' "$(<"$ELF_LIB/schema.sql")" "$REPLY") \
            --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" <<<"$1" 2>&1 >/dev/null) || status=$?
    fi
    if [ "$status" -ne 0 ]; then
        # A script may explain some failures better (see start-experiment.sh).
        ! declare -F elf_insert_failed >/dev/null || elf_insert_failed "$status" "$err"
        elf_exit_status "$status" "$2 failed: $(elf_reason "$err" "$status"); nothing was recorded"
    fi
    ELF_JOURNALED=1
    elf_drain || drain=$?
    # A push that did not happen (ELF_REMOTE) is a warning: the record is committed here.
    elf_push_warning "$ELF_DRAIN_ERRORS"
    # Done: the drain's trouble with other records is theirs (their scripts say so, the journal
    # counts it, and sync-db-markdown.sh lists what is set aside).
    if elf_finished; then
        for w in "${ELF_WARNINGS[@]}"; do elf_warn "$w"; done
        return 0
    fi
    status=0
    out=$(elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" --format tsv --param "k=$ELF_KEY" \
        "SELECT CASE WHEN done_at IS NOT NULL THEN 'done' WHEN set_aside_at IS NOT NULL THEN 'set-aside' ELSE 'pending' END,
                json_extract(ids, '\$[0].id'), json_extract(record, '\$.write.path'),
                json_extract(record, '\$.write[0].path'), json_extract(record, '\$.commit.sha'),
                json_extract(record, '\$.commit.skipped'), json_extract(error, '\$.code'),
                json_extract(error, '\$.message')
         FROM elf_journal WHERE key = :k" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        elf_exit_status "$status" "$2: the record is journaled, its outcome cannot be read: $(elf_reason "$out" "$status"); the next run completes it"
    fi
    # Tab-separated fields; mapfile, not read: read joins the empty fields of NULLs (a tab is
    # white space to IFS).
    local f
    mapfile -t -d $'\t' f <<<"$out"
    state=${f[0]-}
    ELF_ID=${f[1]-}
    ELF_PATH=${f[2]:-${f[3]-}}
    ELF_COMMIT=${f[4]-}
    [ -z "${f[5]-}" ] || ELF_COMMIT="skipped (${f[5]})"
    code=${f[6]-}
    message=${f[7]-}
    message=${message%$'\n'}
    message=${message//\\n/ }
    if [ "$code" = 75 ]; then
        elf_waited "$message"
        message=$REPLY
    fi
    case $state in
        done)
            # Warnings held until now: when the record fails, its one line says what matters.
            for w in "${ELF_WARNINGS[@]}"; do elf_warn "$w"; done
            ;;
        set-aside)
            elf_exit_status "${code:-70}" "$2 failed: $message; the record is set aside (sync-db-markdown.sh lists it)"
            ;;
        pending)
            if [ -n "$code" ]; then
                elf_exit_status "$code" "$2: the record is journaled but not finished: $message; the next run tries again"
            fi
            elf_exit_status "$drain" "$2: the record is journaled but not finished: $(elf_reason "$ELF_DRAIN_ERRORS" "$drain"); the next run completes it"
            ;;
        *) elf_exit_status 70 "$2: the journal has no record $ELF_KEY" ;;
    esac
}

# ---- Sharing a home across machines (ELF_REMOTE) ----
#
# The drain's elf-commit pushes each group of records to ELF_REMOTE (elf-commit --push: a push
# rejected because another machine pushed first fetches, replays this machine's unpushed
# commits onto the remote's head and retries). Then elf_import adds the rows of the records
# the remote brought (the other machines') to this machine's index, so that query.sh and
# sync-db-markdown.sh see everything. sync-db-markdown.sh --fix runs elf_remote_sync first.

# elf_push_warning MESSAGES: the last push warning of the tools' MESSAGES, if any, added to
# ELF_WARNINGS (without the tool's prefix).
elf_push_warning() {
    local line last=""
    [ -n "${ELF_REMOTE-}" ] || return 0
    while IFS= read -r line; do
        case $line in
            "elf-commit: warning: not pushed to "* | "elf-commit: warning: push to "*) last=${line#elf-commit: warning: } ;;
        esac
    done <<<"$1"
    [ -z "$last" ] || ELF_WARNINGS+=("$last")
}

# elf_remote_sync: bring the home and ELF_REMOTE together (fetch, replay, push: elf-commit
# --sync), then import the rows of what came. Status: elf-commit's (0; 75 unreachable; 69
# refused), its line on stderr.
elf_remote_sync() {
    local status=0
    elf-commit --repo "$ELF_HOME" --lock "$ELF_GIT_DIR/claude-lock" --timeout "$ELF_TIMEOUT" \
        --push "$ELF_REMOTE" --push-timeout "$ELF_TIMEOUT" --db "$ELF_DB" --sync || status=$?
    elf_import || true
    return "$status"
}

# elf_import: the rows of the records that came from the other machines, added to this
# machine's index, incrementally: the markdown files changed between the last commit imported
# (.git/elf-imported; where its history and HEAD's meet, after a replay) and HEAD, read with
# elf.jq's parsers. A heuristic row keeps its entry's H-<id> (sqlite_sequence follows it up);
# a failure row comes from its file's fields, or, when the file is a record of this machine's
# renamed by a replay (its key is in the journal), that row follows it. Entries whose id a
# row of another rule still has here (a record journaled while the remote's entry came) wait:
# the mark is not moved, and a later run imports them once the push has renumbered ours.
elf_import() {
    local head last="" base files=() f n
    [ -e "$ELF_DB" ] || return 0
    # Nothing came from the remote since the last import (elf-commit makes the file when
    # something does): no program started.
    [ ! -e "$ELF_GIT_DIR/elf-imported" ] || [ -e "$ELF_GIT_DIR/elf-import-pending" ] || return 0
    head=$(git -C "$ELF_HOME" rev-parse -q --verify HEAD 2>/dev/null) || return 0
    [ ! -f "$ELF_GIT_DIR/elf-imported" ] || IFS= read -r last <"$ELF_GIT_DIR/elf-imported" || true
    [ "$head" != "$last" ] || return 0
    if [ -n "$last" ] && base=$(git -C "$ELF_HOME" merge-base "$last" "$head" 2>/dev/null); then
        mapfile -t files < <(git -C "$ELF_HOME" diff --name-only --no-renames --diff-filter=AM "$base" "$head" -- memory/failures memory/heuristics experiments/active)
    else
        mapfile -t files < <(git -C "$ELF_HOME" ls-tree -r --name-only "$head" -- memory/failures memory/heuristics experiments/active)
    fi
    local keep=()
    for f in "${files[@]}"; do
        if [[ $f =~ ^(memory/(failures|heuristics)/[^/]+\.md|experiments/active/[^/]+/hypothesis\.md)$ ]] && [ "${f##*/}" != TEMPLATE.md ] &&
            [ -f "$ELF_HOME/$f" ] && [ ! -L "$ELF_HOME/$f" ]; then
            keep+=("$f")
        fi
    done
    if [ ${#keep[@]} -gt 0 ]; then
        # shellcheck disable=SC2016 # SQL and jq text
        (cd "$ELF_HOME" && jq -Rn -c -L "$ELF_LIB" 'include "elf";
            reduce inputs as $l ({}; .[input_filename] += $l + "\n")
            | to_entries[] | .key as $p | .value as $text
            | if ($p | startswith("memory/heuristics/")) then
                ($p | sub("^.*/"; "") | sub("\\.md$"; "")) as $d
                | $text | heuristic_entries[]
                | {db: {sql: "INSERT INTO heuristics (id, domain, rule, explanation, source_type, confidence, created_at) SELECT :id, :domain, :rule, :explanation, :source, :confidence, coalesce(:created, CURRENT_TIMESTAMP) WHERE NOT EXISTS (SELECT 1 FROM heuristics WHERE id = :id)",
                        params: {id, domain: $d, rule, explanation, source, confidence,
                                 created: (if (.created // "" | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}$")) then "\(.created) 00:00:00" else null end)}},
                   check: {id, rule}}
              elif ($p | startswith("experiments/")) then
                # An experiment: its name and hypothesis from hypothesis.md; a name this
                # machine already has stays as it is here (names are unique in the index).
                ($text | split("\n")) as $lines
                | ([$lines[] | capture("^# Experiment: (?<n>.*)$")? | .n] | .[0]) as $name
                | ([range(0; $lines | length) | select($lines[.] | test("^## Hypothesis\\s*$"))] | .[0]) as $h
                | (if $h == null then null
                   else [$lines[$h + 1:][]] | (map(test("^## ")) | index(true)) as $stop
                        | (if $stop == null then . else .[:$stop] end)
                        | join("\n") | sub("^[ \n]+"; "") | sub("[ \n]+$"; "") | md_unblock
                   end) as $hyp
                | select($name != null)
                | {db: {sql: "INSERT INTO experiments (name, hypothesis, status, folder_path) SELECT :name, :hyp, '\''active'\'', :folder WHERE NOT EXISTS (SELECT 1 FROM experiments WHERE name = :name OR folder_path = :folder)",
                        params: {name: $name, hyp: $hyp, folder: ($p | sub("/hypothesis\\.md$"; ""))}}}
              else
                ($text | failure_values($p)) as $f
                | ([$text | split("\n")[] | capture("^<!-- elf:(?<k>[^ ]+)( [0-9]+)? -->$")? | .k] | last) as $k
                | {db: {sql: "UPDATE learnings SET filepath = :p WHERE type = '\''failure'\'' AND id = (SELECT json_extract(ids, '\''$[0].id'\'') FROM elf_journal WHERE key = :k) AND NOT EXISTS (SELECT 1 FROM learnings WHERE filepath = :p)",
                        params: {p: $p, k: ($k // "")}}},
                  {db: {sql: "INSERT INTO learnings (type, filepath, title, summary, tags, domain, severity, created_at) SELECT '\''failure'\'', :p, :title, :summary, :tags, :domain, :severity, coalesce(:created, CURRENT_TIMESTAMP) WHERE NOT EXISTS (SELECT 1 FROM learnings WHERE filepath = :p)",
                        params: {p: $p, title: $f.title, summary: $f.summary, tags: $f.tags,
                                 domain: $f.domain, severity: $f.severity, created: $f.created_at}}}
              end' "${keep[@]}") >"$ELF_GIT_DIR/elf-import.jsonl" || return
        elf-db exec --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" <"$ELF_GIT_DIR/elf-import.jsonl" >"$ELF_GIT_DIR/elf-import.out" || return
        # Every entry now has its row (its id and its rule), or the mark stays.
        n=$(jq -c -s 'map(select(.check) | .check)' "$ELF_GIT_DIR/elf-import.jsonl" |
            elf-db query --db "$ELF_DB" --busy-timeout "$ELF_TIMEOUT" --format tsv -p "e=$(cat)" \
                "SELECT count(*) FROM json_each(:e) AS e WHERE NOT EXISTS (SELECT 1 FROM heuristics h WHERE h.id = json_extract(e.value, '\$.id') AND lower(trim(h.rule)) = lower(trim(json_extract(e.value, '\$.rule'))))") || return
        rm -f "$ELF_GIT_DIR/elf-import.jsonl" "$ELF_GIT_DIR/elf-import.out"
        if [ "$n" != 0 ]; then
            elf_warn "$n entries from $ELF_REMOTE wait for their ids here (a record of this machine's has them until its push); the next run imports them"
            return 0
        fi
    fi
    printf '%s\n' "$head" >"$ELF_GIT_DIR/elf-imported"
    rm -f "$ELF_GIT_DIR/elf-import-pending"
}

# elf_seed: for a new index.db beside existing markdown (a first run, or an index deleted to
# "reset" it), the SQL that starts the heuristics' ids above every "## H-<id>" the markdown
# already holds, in REPLY: an id is never given twice, and sync-db-markdown.sh --fix can
# rebuild the old rows under their own ids. Idempotent (several first runs at once may each
# run it); the tables are AUTOINCREMENT, so sqlite_sequence holds the last id given.
elf_seed() {
    local files=() f max=0 id
    for f in "$ELF_HOME"/memory/heuristics/*.md; do
        # Regular files only: a FIFO would hang the read.
        [ ! -f "$f" ] || [ -L "$f" ] || files+=("$f")
    done
    if [ ${#files[@]} -gt 0 ]; then
        while IFS= read -r id; do
            id=${id#"## H-"}
            id=${id%:}
            [ ${#id} -le 18 ] || continue
            id=$((10#$id))
            [ "$id" -le "$max" ] || max=$id
        done < <(grep -hoE '^## H-[0-9]+:' -- "${files[@]}" 2>/dev/null || true)
    fi
    REPLY="-- Ids above the $max the markdown holds.
INSERT INTO sqlite_sequence (name, seq) SELECT 'heuristics', $max
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'heuristics');
UPDATE sqlite_sequence SET seq = $max WHERE name = 'heuristics' AND seq < $max;"
}

# elf_exit_status STATUS MESSAGE: exit with STATUS (64, 65, 74, 75 or 77; 70 for any other).
elf_exit_status() {
    local status=$1
    case $status in
        64 | 65 | 74 | 75 | 77) ;;
        *) status=70 ;;
    esac
    elf_die "$status" "$2"
}

# elf_log LEVEL MESSAGE: one line in logs/YYYYMMDD.log, appended with one write(2) (O_APPEND:
# lines of concurrent scripts never interleave).
elf_log() {
    local line day
    printf -v day '%(%Y%m%d)T' -1
    printf -v line '[%(%Y-%m-%d %H:%M:%S)T] [%s] [%s] %s\n' -1 "$1" "$ELF_SCRIPT" "$2"
    if [ -L "$ELF_HOME/logs/$day.log" ] || ! { printf '%s' "$line" >>"$ELF_HOME/logs/$day.log"; } 2>/dev/null; then
        elf_warn "could not write the log"
    fi
}
