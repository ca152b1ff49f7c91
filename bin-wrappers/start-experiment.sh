#!/usr/bin/env bash
# start-experiment.sh: start an experiment in the ELF home: a row in memory/index.db, the folder
# experiments/active/<YYYYMMDD-HHMMSS>_<slug>/ with hypothesis.md and log.md, and a git commit,
# as one journaled pipeline. A name already used is refused before anything is written.
#
# Usage: start-experiment.sh [--name N] [--hypothesis H] [--success-criteria S] [--failure-criteria F]
# Environment fallbacks: EXPERIMENT_NAME, EXPERIMENT_HYPOTHESIS, EXPERIMENT_SUCCESS_CRITERIA,
# EXPERIMENT_FAILURE_CRITERIA (a flag wins).
set -euo pipefail
# shellcheck source=lib/elf.sh
elf_self=$(readlink -f "${BASH_SOURCE[0]}")
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
ELF_LOCK_TIMEOUT (seconds to wait for a lock; default 60, and 10 for git's index.lock).
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

name=$(elf_clean_line "$name")
[ -n "$name" ] || elf_die 65 "the experiment name is empty"

elf_home_ready
elf_recover

stamp=$(printf '%(%Y%m%d-%H%M%S)T' -1)
record=$(jq -nc -L "$ELF_LIB" --arg key "$ELF_KEY" \
    --arg name "$name" --arg hypothesis "$hypothesis" --arg success "$success" \
    --arg failure "$failure" --arg stamp "$stamp" --arg started "$(printf '%(%Y-%m-%d %H:%M:%S)T' -1)" \
    --arg hash "$(elf_hash "$name")" '
    include "elf";
    ($hypothesis | clean_block) as $hypothesis
    | "experiments/active/\($stamp)_\($name | slug($hash))" as $folder
    | {key: $key, kind: "experiment",
       db: {table: "experiments",
            values: {name: $name, hypothesis: $hypothesis, status: "active", folder_path: $folder}},
       write: [
         {path: "\($folder)/hypothesis.md", mode: "create",
          content: experiment_hypothesis($name; $started; $hypothesis;
                                         ($success | clean_block); ($failure | clean_block))},
         {path: "\($folder)/log.md", mode: "create", content: experiment_log($name; $started)}
       ],
       commit: {message: "experiment: Start \u0027\($name)\u0027"}}')

status=0
elf_submit "$record" || status=$?
if [ "$status" -eq 65 ] && [[ $ELF_ERRORS == *UNIQUE* ]]; then
    elf_die 65 "an experiment named $(printf '%q' "$name") already exists; nothing was written"
fi
[ "$status" -eq 0 ] || elf_fail_status "$status" "starting the experiment"
result=$ELF_RESULT

{
    IFS= read -r id
    IFS= read -r folder
    IFS= read -r commit
} < <(jq -r 'include "elf"; .db.id, (.db.values.folder_path | term), (if .commit.skipped then "skipped (\(.commit.skipped | term))" else .commit.sha end)' -L "$ELF_LIB" <<<"$result")
case $id in '' | null | 0) elf_die 70 "the database returned no id" ;; esac

elf_log INFO "Started experiment #$id: $name ($folder)"
printf 'Experiment started: %s\n  ID: %s\n  Folder: %s\n  Commit: %s\n' "$name" "$id" "$folder" "$commit"
