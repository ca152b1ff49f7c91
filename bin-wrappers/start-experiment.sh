#!/bin/bash
# start-experiment.sh: start an experiment in the ELF home: a row in memory/index.db, the folder
# experiments/active/<YYYYMMDD-HHMMSS>_<slug>/ with hypothesis.md and log.md, and a git commit,
# as one journaled pipeline. A name already used is refused before anything is written.
#
# Usage: start-experiment.sh [--name N] [--hypothesis H] [--success-criteria S] [--failure-criteria F]
# Environment fallbacks: EXPERIMENT_NAME, EXPERIMENT_HYPOTHESIS, EXPERIMENT_SUCCESS_CRITERIA,
# EXPERIMENT_FAILURE_CRITERIA (a flag wins).
set -euo pipefail
elf_self=${BASH_SOURCE[0]}
[[ $elf_self == */* ]] || elf_self=./$elf_self
[ ! -L "$elf_self" ] || elf_self=$(readlink -f "$elf_self")
# shellcheck source=lib/elf.sh
. "${elf_self%/*}/lib/elf.sh"
elf_init start-experiment

usage() {
    cat <<'USAGE'
Usage: start-experiment.sh [--name NAME] [--hypothesis TEXT] [--success-criteria TEXT]
                           [--failure-criteria TEXT]

Starts an experiment: a row in memory/index.db, experiments/active/<YYYYMMDD-HHMMSS>_<slug>/
with hypothesis.md and log.md, and a commit. With a name and a hypothesis it runs without
prompts; otherwise it asks for what is missing.
Environment: EXPERIMENT_NAME, EXPERIMENT_HYPOTHESIS, EXPERIMENT_SUCCESS_CRITERIA,
EXPERIMENT_FAILURE_CRITERIA, ELF_HOME (default ~/.claude/emergent-learning),
ELF_LOCK_TIMEOUT (seconds any wait may take: a lock, git's index.lock, a busy database, a
push; default 60), ELF_REMOTE (a git remote shared with other machines: each record is pushed
there; unreachable, the record stays committed here with a warning and the next run pushes it).
Exit: 0 started; 64 bad usage; 65 bad input (a name already used included); 74 I/O error
(disk full, read-only home, a database file that is not a database); 75 busy (a lock or the
database, past ELF_LOCK_TIMEOUT seconds); 77 permission denied. A failure is one line saying why, and whether the record is
journaled (the next run of any writing script completes it) or nothing was recorded.
USAGE
}

name=${EXPERIMENT_NAME-}
hypothesis=${EXPERIMENT_HYPOTHESIS-}
success=${EXPERIMENT_SUCCESS_CRITERIA-}
failure=${EXPERIMENT_FAILURE_CRITERIA-}
given_success=${EXPERIMENT_SUCCESS_CRITERIA+1}
given_failure=${EXPERIMENT_FAILURE_CRITERIA+1}

elf_flags name:name hypothesis:hypothesis success-criteria:success failure-criteria:failure -- "$@"

if [ -z "$name" ] || [ -z "$hypothesis" ]; then
    [ -n "$name" ] || elf_prompt name "Experiment name: "
    [ -n "$hypothesis" ] || elf_prompt hypothesis "Hypothesis: "
    [ -n "$given_success" ] || elf_prompt success "Success criteria: "
    [ -n "$given_failure" ] || elf_prompt failure "Failure criteria: "
fi

elf_clean_line name
elf_clean_block hypothesis success failure
[ -n "$name" ] || elf_die 65 "the experiment name is empty"

elf_home_ready

# The record, built in bash: every value of the user's is a JSON string made by elf_json.
printf -v stamp '%(%Y%m%d-%H%M%S)T' -1
printf -v started '%(%Y-%m-%d %H:%M:%S)T' -1
elf_slug "$name"
# The folder is claimed with mkdir, which makes it or fails when it is there: two names that
# clean to one slug in the same second ("Retry v1", "Retry v.1") get FOLDER and FOLDER-2, as
# failures get NAME.md and NAME-2.md. Until the record is journaled the folder is this run's to
# remove (a run killed in between leaves an empty folder, which git does not see).
folder=experiments/active/${stamp}_$REPLY
n=1
until err=$(mkdir -- "$ELF_HOME/$folder" 2>&1); do
    [ -e "$ELF_HOME/$folder" ] || [ -L "$ELF_HOME/$folder" ] ||
        elf_die "$(elf_io_status "$err" 74)" "cannot create the experiment's folder $folder: ${err##*: }; nothing was recorded"
    n=$((n + 1))
    [ "$n" -le 1000 ] || elf_die 75 "no free folder name for ${stamp}_$REPLY; nothing was recorded"
    folder=experiments/active/${stamp}_$REPLY-$n
done
unclaim() { [ -n "${ELF_JOURNALED-}" ] || rmdir -- "$ELF_HOME/$folder" 2>/dev/null || true; }
trap unclaim EXIT
elf_json "$name" && j_name=$REPLY
elf_json "$hypothesis" && j_hypothesis=$REPLY
elf_json "$folder" && j_folder=$REPLY
elf_md_block "$hypothesis" && md_hypothesis=$REPLY
elf_md_block "$success" && md_success=$REPLY
elf_md_block "$failure" && md_failure=$REPLY
elf_json "# Experiment: $name

**Started**: $started
**Status**: Active

## Hypothesis

$md_hypothesis

## Success Criteria

$md_success

## Failure Criteria

$md_failure

## Variables

- **Independent**:
- **Dependent**:
- **Controlled**:

## Controls

[What stays the same between cycles?]

## Methodology

[How will the experiment be run?]

## Expected Outcomes

[What do you expect to happen?]
" && j_hyp_md=$REPLY
elf_json "# Experiment Log: $name

**Started**: $started

## Cycle 1

### Try

[What was attempted?]

### Break

[What broke or surprised?]

### Analysis

[Why did it happen?]

### Learning

[What was learned?]
" && j_log_md=$REPLY
elf_json "experiment: Start '$name'" && j_message=$REPLY
record='{"key":"'$ELF_KEY'","kind":"experiment",'\
'"db":{"table":"experiments","values":{"name":'$j_name',"hypothesis":'$j_hypothesis',"status":"active","folder_path":'$j_folder'}},'\
'"write":[{"path":'${j_folder%\"}'/hypothesis.md","mode":"create","content":'$j_hyp_md'},'\
'{"path":'${j_folder%\"}'/log.md","mode":"create","content":'$j_log_md'}],'\
'"commit":{"message":'$j_message'}}'

# A second experiment of the same name breaks the table's UNIQUE constraint: nothing is written.
elf_insert_failed() {
    if [ "$1" -eq 65 ] && [[ $2 == *UNIQUE* ]]; then
        elf_die 65 "an experiment named $(elf_quote "$name") already exists; nothing was written"
    fi
}
elf_record "$record" "starting the experiment"
# A push that found another machine's experiment in this folder moved ours (elf-commit --push).
[[ ${ELF_PATH-} != */hypothesis.md ]] || folder=${ELF_PATH%/hypothesis.md}

elf_log INFO "Started experiment #$ELF_ID: $name ($folder)"
printf 'Experiment started: %s\n  ID: %s\n  Folder: %s\n  Commit: %s\n' "$name" "$ELF_ID" "$folder" "$ELF_COMMIT"
