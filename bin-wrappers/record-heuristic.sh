#!/bin/bash
# record-heuristic.sh: record a heuristic in the ELF home: a row in memory/index.db, an
# "## H-<id>" entry appended to memory/heuristics/<domain>.md and a git commit, as one
# journaled pipeline. The heading carries the row's real id.
#
# Usage: record-heuristic.sh [--domain D] [--rule R] [--explanation E] [--source S] [--confidence C]
# Environment fallbacks: HEURISTIC_DOMAIN, HEURISTIC_RULE, HEURISTIC_EXPLANATION,
# HEURISTIC_SOURCE, HEURISTIC_CONFIDENCE (a flag wins).
set -euo pipefail
elf_self=${BASH_SOURCE[0]}
[[ $elf_self == */* ]] || elf_self=./$elf_self
[ ! -L "$elf_self" ] || elf_self=$(readlink -f "$elf_self")
# shellcheck source=lib/elf.sh
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
ELF_LOCK_TIMEOUT (seconds any wait may take: a lock, git's index.lock, a busy database, a
push; default 60), ELF_REMOTE (a git remote shared with other machines: each record is pushed
there; unreachable, the record stays committed here with a warning and the next run pushes it).
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

elf_clean_line domain rule source
elf_clean_block explanation
elf_domain_slug "$domain"
domain=$REPLY
[ -n "$domain" ] || elf_die 65 "the domain is empty (after keeping only a-z, 0-9 and -)"
[ -n "$rule" ] || elf_die 65 "the rule is empty"
[ -n "$source" ] || source=observation
elf_confidence "$confidence" ||
    elf_die 65 "invalid confidence $(elf_quote "$confidence"): use a number from 0 to 1, or low, medium, high"
conf=$REPLY

elf_home_ready

# The record, built in bash: every value of the user's is a JSON string made by elf_json. The
# entry's heading carries the row id, which elf-write takes from the record ({"$ref":"/db/id"})
# once elf-db has inserted the row.
printf -v date '%(%Y-%m-%d)T' -1
elf_json "$domain" && j_domain=$REPLY
elf_json "$rule" && j_rule=$REPLY
elf_json "$explanation" && j_explanation=$REPLY
elf_json "$source" && j_source=$REPLY
elf_md_block "$explanation"
elf_json ": $rule

**Confidence**: $conf
**Source**: $source
**Created**: $date

$REPLY

---

" && j_entry=$REPLY
elf_json "# Heuristics: $domain

Generated from failures, successes, and observations in the **$domain** domain.

---

" && j_header=$REPLY
elf_json "heuristic: $rule

Domain: $domain | Confidence: $conf" && j_message=$REPLY
# shellcheck disable=SC2016 # "$ref" and "$join" are JSON, not expansions
record='{"key":"'$ELF_KEY'","kind":"heuristic",'\
'"db":{"table":"heuristics","values":{"domain":'$j_domain',"rule":'$j_rule',"explanation":'$j_explanation',"source_type":'$j_source',"confidence":'$conf'}},'\
'"write":{"path":"memory/heuristics/'$domain'.md","mode":"append","header":'$j_header','\
'"content":{"$join":["## H-",{"$ref":"/db/id"},'$j_entry']}},'\
'"commit":{"message":'$j_message'}}'

elf_record "$record" "recording the heuristic"

elf_log INFO "Recorded heuristic H-$ELF_ID in $domain: $rule"
printf 'Heuristic recorded successfully!\n  ID: H-%s\n  File: %s\n  Commit: %s\n' "$ELF_ID" "$ELF_PATH" "$ELF_COMMIT"
