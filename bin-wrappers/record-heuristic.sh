#!/usr/bin/env bash
# record-heuristic.sh: record a heuristic in the ELF home: a row in memory/index.db, an
# "## H-<id>" entry appended to memory/heuristics/<domain>.md and a git commit, as one
# journaled pipeline. The heading carries the row's real id.
#
# Usage: record-heuristic.sh [--domain D] [--rule R] [--explanation E] [--source S] [--confidence C]
# Environment fallbacks: HEURISTIC_DOMAIN, HEURISTIC_RULE, HEURISTIC_EXPLANATION,
# HEURISTIC_SOURCE, HEURISTIC_CONFIDENCE (a flag wins).
set -euo pipefail
# shellcheck source=lib/elf.sh
elf_self=$(readlink -f "${BASH_SOURCE[0]}")
. "${elf_self%/*}/lib/elf.sh"
elf_init record-heuristic

usage() {
    cat <<'USAGE'
Usage: record-heuristic.sh [--domain DOMAIN] [--rule RULE] [--explanation TEXT]
                           [--source SOURCE] [--confidence 0..1|low|medium|high]

Records a heuristic: a row in memory/index.db, an "## H-<id>" entry in
memory/heuristics/<domain>.md (created with its header when new) and a commit.
With a domain and a rule it runs without prompts; otherwise it asks for what is missing.
Confidence: a number from 0 to 1 (.5 is 0.5), or low (0.3), medium (0.6), high (0.85);
empty means 0.7. Source defaults to "observation".
Environment: HEURISTIC_DOMAIN, HEURISTIC_RULE, HEURISTIC_EXPLANATION, HEURISTIC_SOURCE,
HEURISTIC_CONFIDENCE, ELF_HOME (default ~/.claude/emergent-learning),
ELF_LOCK_TIMEOUT (seconds to wait for a lock; default 60, and 10 for git's index.lock).
Exit: 0 recorded; 64 bad usage; 65 bad input; 74 I/O error (disk full, read-only home,
a database file that is not a database); 75 busy (a lock or the database, past ELF_LOCK_TIMEOUT
seconds); 77 permission denied. A failure is one line saying why, and whether the record is
journaled (the next run of any writing script completes it) or nothing was recorded.
USAGE
}

domain=${HEURISTIC_DOMAIN-}
rule=${HEURISTIC_RULE-}
explanation=${HEURISTIC_EXPLANATION-}
source=${HEURISTIC_SOURCE-}
confidence=${HEURISTIC_CONFIDENCE-}
given_explanation=${HEURISTIC_EXPLANATION+1}
given_source=${HEURISTIC_SOURCE+1}
given_confidence=${HEURISTIC_CONFIDENCE+1}

elf_flags domain:domain rule:rule explanation:explanation source:source confidence:confidence -- "$@"

if [ -z "$domain" ] || [ -z "$rule" ]; then
    [ -n "$domain" ] || elf_prompt domain "Domain: "
    [ -n "$rule" ] || elf_prompt rule "Rule: "
    [ -n "$given_explanation" ] || elf_prompt_lines explanation "Explanation (end with an empty line):"
    [ -n "$given_source" ] || elf_prompt source "Source [observation]: "
    [ -n "$given_confidence" ] || elf_prompt confidence "Confidence (0-1, or low/medium/high) [0.7]: "
fi

domain=$(jq -nr -L "$ELF_LIB" --arg s "$domain" 'include "elf"; $s | clean_line | domain_slug')
elf_clean_lines rule source
[ -n "$domain" ] || elf_die 65 "the domain is empty (after keeping only a-z, 0-9 and -)"
[ -n "$rule" ] || elf_die 65 "the rule is empty"
[ -n "$source" ] || source=observation
conf=$(elf_confidence "$confidence") ||
    elf_die 65 "invalid confidence $(printf '%q' "$confidence"): use a number from 0 to 1, or low, medium, high"

elf_home_ready
elf_recover

record=$(jq -nc -L "$ELF_LIB" --arg key "$ELF_KEY" \
    --arg domain "$domain" --arg rule "$rule" --arg explanation "$explanation" \
    --arg source "$source" --argjson confidence "$conf" --arg date "$(printf '%(%Y-%m-%d)T' -1)" '
    include "elf";
    ($explanation | clean_block) as $explanation
    | {key: $key, kind: "heuristic",
       db: {table: "heuristics",
            values: {domain: $domain, rule: $rule, explanation: $explanation,
                     source_type: $source, confidence: $confidence}},
       heuristic: {rule: $rule, confidence: $confidence, source: $source, created: $date,
                   explanation: $explanation},
       write: {path: "memory/heuristics/\($domain).md", mode: "append",
               header: heuristic_header($domain)},
       commit: {message: "heuristic: \($rule)\n\nDomain: \($domain) | Confidence: \($confidence)"}}')

# Entries of one domain share a file: their tails take turns, so each commit holds its entry.
export ELF_TAIL_LOCK=$ELF_HOME/.git/elf-heuristics-$domain.lock
status=0
elf_submit "$record" || status=$?
[ "$status" -eq 0 ] || elf_fail_status "$status" "recording the heuristic"
result=$ELF_RESULT

{
    IFS= read -r id
    IFS= read -r path
    IFS= read -r commit
} < <(jq -r 'include "elf"; .db.id, (.write.path | term), (if .commit.skipped then "skipped (\(.commit.skipped | term))" else .commit.sha end)' -L "$ELF_LIB" <<<"$result")
case $id in '' | null | 0) elf_die 70 "the database returned no id" ;; esac

elf_log INFO "Recorded heuristic H-$id in $domain: $rule"
printf 'Heuristic recorded successfully!\n  ID: H-%s\n  File: %s\n  Commit: %s\n' "$id" "$path" "$commit"
