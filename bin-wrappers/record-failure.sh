#!/bin/bash
# record-failure.sh: record a failure in the ELF home: a row in memory/index.db, a markdown file
# in memory/failures/ and a git commit, as one journaled pipeline.
#
# Usage: record-failure.sh [--title T] [--domain D] [--severity S] [--tags T] [--summary S]
# Environment fallbacks: FAILURE_TITLE, FAILURE_DOMAIN, FAILURE_SEVERITY, FAILURE_TAGS,
# FAILURE_SUMMARY (a flag wins). Without a title and a domain it prompts for what is missing.
set -euo pipefail
elf_self=${BASH_SOURCE[0]}
[[ $elf_self == */* ]] || elf_self=./$elf_self
[ ! -L "$elf_self" ] || elf_self=$(readlink -f "$elf_self")
# shellcheck source=lib/elf.sh
. "${elf_self%/*}/lib/elf.sh"
elf_init record-failure

usage() {
    cat <<'USAGE'
Usage: record-failure.sh [--title TITLE] [--domain DOMAIN] [--severity 1-5|low|medium|high|critical]
                         [--tags TAGS] [--summary TEXT]

Records a failure: a row in memory/index.db, memory/failures/YYYYMMDD_<slug>.md and a commit.
With a title and a domain it runs without prompts; otherwise it asks for what is missing
(Title, Domain, Severity, Tags, then Summary lines until an empty line).
Environment: FAILURE_TITLE, FAILURE_DOMAIN, FAILURE_SEVERITY, FAILURE_TAGS, FAILURE_SUMMARY,
ELF_HOME (default ~/.claude/emergent-learning),
ELF_LOCK_TIMEOUT (seconds any wait may take: a lock, git's index.lock, a busy database, a
push; default 60), ELF_REMOTE (a git remote shared with other machines: each record is pushed
there; unreachable, the record stays committed here with a warning and the next run pushes it).
Exit: 0 recorded; 64 bad usage; 65 bad input; 74 I/O error (disk full, read-only home,
a database file that is not a database); 75 busy (a lock or the database, past ELF_LOCK_TIMEOUT
seconds); 77 permission denied. A failure is one line saying why, and whether the record is
journaled (the next run of any writing script completes it) or nothing was recorded.
USAGE
}

title=${FAILURE_TITLE-}
domain=${FAILURE_DOMAIN-}
severity=${FAILURE_SEVERITY-}
tags=${FAILURE_TAGS-}
summary=${FAILURE_SUMMARY-}
given_severity=${FAILURE_SEVERITY+1}
given_tags=${FAILURE_TAGS+1}
given_summary=${FAILURE_SUMMARY+1}

elf_flags title:title domain:domain severity:severity tags:tags summary:summary -- "$@"

if [ -z "$title" ] || [ -z "$domain" ]; then
    [ -n "$title" ] || elf_prompt title "Title: "
    [ -n "$domain" ] || elf_prompt domain "Domain: "
    [ -n "$given_severity" ] || elf_prompt severity "Severity (1-5, or low/medium/high/critical) [3]: "
    [ -n "$given_tags" ] || elf_prompt tags "Tags (comma-separated): "
    [ -n "$given_summary" ] || elf_prompt_lines summary "Summary (end with an empty line):"
fi

elf_clean_line title domain tags
elf_clean_block summary
[ -n "$title" ] || elf_die 65 "the title is empty"
[ -n "$domain" ] || elf_die 65 "the domain is empty"
[ -n "$severity" ] || severity=3
elf_severity "$severity" ||
    elf_die 65 "invalid severity $(elf_quote "$severity"): use 1-5 or low, medium, high, critical"
sev=$REPLY

elf_home_ready

# The record, built in bash: every value of the user's is a JSON string made by elf_json.
printf -v day '%(%Y%m%d)T' -1
printf -v date '%(%Y-%m-%d)T' -1
elf_slug "$title"
path=memory/failures/${day}_$REPLY.md
elf_md_block "$summary"
content="# $title

**Domain**: $domain
**Severity**: $sev
**Tags**: $tags
**Date**: $date

## Summary

$REPLY

## What Happened

[Describe the failure in detail]

## Root Cause

[What was the underlying issue?]

## Impact

[What were the consequences?]

## Prevention

[What heuristic or practice would prevent this?]

## Related

- **Experiments**:
- **Heuristics**:
- **Similar Failures**:

<!-- elf:$ELF_KEY -->
"
elf_json "$path" && j_path=$REPLY
elf_json "$title" && j_title=$REPLY
elf_json "${summary%%$'\n'*}" && j_first=$REPLY
elf_json "$tags" && j_tags=$REPLY
elf_json "$domain" && j_domain=$REPLY
elf_json "$content" && j_content=$REPLY
elf_json "failure: $title

Domain: $domain | Severity: $sev" && j_message=$REPLY
# "fix": when elf-write takes another name (a second failure with the same title on the same
# day gets NAME-2.md), the row follows it; run by elf-db done in the transaction that marks the
# record done.
# shellcheck disable=SC2016 # "$ref" and "$join" are JSON, not expansions
record='{"key":"'$ELF_KEY'","kind":"failure",'\
'"db":{"table":"learnings","values":{"type":"failure","filepath":'$j_path',"title":'$j_title',"summary":'$j_first',"tags":'$j_tags',"domain":'$j_domain',"severity":'$sev'}},'\
'"write":{"path":'$j_path',"mode":"create","unique":true,"content":'$j_content'},'\
'"commit":{"message":'$j_message'},'\
'"fix":{"sql":"UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path","params":{"path":{"$ref":"/write/path"},"id":{"$ref":"/db/id"}}}}'

elf_record "$record" "recording the failure"

elf_log INFO "Recorded failure #$ELF_ID: $title ($ELF_PATH)"
printf 'Failure recorded successfully!\n  ID: %s\n  File: %s\n  Commit: %s\n' "$ELF_ID" "$ELF_PATH" "$ELF_COMMIT"
