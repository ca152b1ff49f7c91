#!/usr/bin/env bash
# record-failure.sh: record a failure in the ELF home: a row in memory/index.db, a markdown file
# in memory/failures/ and a git commit, as one journaled pipeline.
#
# Usage: record-failure.sh [--title T] [--domain D] [--severity S] [--tags T] [--summary S]
# Environment fallbacks: FAILURE_TITLE, FAILURE_DOMAIN, FAILURE_SEVERITY, FAILURE_TAGS,
# FAILURE_SUMMARY (a flag wins). Without a title and a domain it prompts for what is missing.
set -euo pipefail
# shellcheck source=lib/elf.sh
elf_self=$(readlink -f "${BASH_SOURCE[0]}")
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
ELF_LOCK_TIMEOUT (seconds to wait for a lock; default 60, and 10 for git's index.lock).
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

elf_clean_lines title domain
[ -n "$title" ] || elf_die 65 "the title is empty"
[ -n "$domain" ] || elf_die 65 "the domain is empty"
[ -n "$severity" ] || severity=3
sev=$(elf_severity "$severity") ||
    elf_die 65 "invalid severity $(printf '%q' "$severity"): use 1-5 or low, medium, high, critical"

elf_home_ready
elf_recover

record=$(jq -nc -L "$ELF_LIB" --arg key "$ELF_KEY" \
    --arg title "$title" --arg domain "$domain" --argjson severity "$sev" \
    --arg tags "$tags" --arg summary "$summary" \
    --arg day "$(printf '%(%Y%m%d)T' -1)" --arg date "$(printf '%(%Y-%m-%d)T' -1)" --arg hash "$(elf_hash "$title")" '
    include "elf";
    ($tags | clean_line) as $tags
    | ($summary | clean_block) as $summary
    | "memory/failures/\($day)_\($title | slug($hash)).md" as $path
    | {key: $key, kind: "failure",
       db: {table: "learnings",
            values: {type: "failure", filepath: $path, title: $title,
                     summary: ($summary | split("\n") | .[0] // ""),
                     tags: $tags, domain: $domain, severity: $severity}},
       write: {path: $path, mode: "create", unique: true,
               content: failure_markdown($title; $domain; $severity; $tags; $date; $summary)},
       commit: {message: "failure: \($title)\n\nDomain: \($domain) | Severity: \($severity)"}}')

status=0
elf_submit "$record" || status=$?
[ "$status" -eq 0 ] || elf_fail_status "$status" "recording the failure"
result=$ELF_RESULT

{
    IFS= read -r id
    IFS= read -r path
    IFS= read -r commit
} < <(jq -r 'include "elf"; .db.id, (.write.path | term), (if .commit.skipped then "skipped (\(.commit.skipped | term))" else .commit.sha end)' -L "$ELF_LIB" <<<"$result")
case $id in '' | null | 0) elf_die 70 "the database returned no id" ;; esac

elf_log INFO "Recorded failure #$id: $title ($path)"
printf 'Failure recorded successfully!\n  ID: %s\n  File: %s\n  Commit: %s\n' "$id" "$path" "$commit"
