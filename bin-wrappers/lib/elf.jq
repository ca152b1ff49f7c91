# The jq half of the ELF wrappers, run once per use and never per record: the markdown formats
# and parsers of sync-db-markdown.sh, the upgrade of records journaled by an earlier version of
# the scripts, and terminal escaping. The scripts build their records in bash (elf.sh); the
# formats here must stay byte for byte the same as theirs (a test holds them together).
# Loaded with: jq -L "$ELF_LIB" 'include "elf"; ...'

# The legacy domain rule (as elf_domain_slug in elf.sh): lower case, spaces to "-", only
# [a-z0-9-], at most 100 characters, leading and trailing "-" stripped.
def domain_slug:
  ascii_downcase | gsub(" "; "-") | gsub("[^a-z0-9-]"; "") | .[0:100] | sub("^-+"; "") | sub("-+$"; "");

# A number as the markdown shows it (0.5, 0.85, 1).
def num_text: tostring;

# Text for a heading or a list line: one line, always (as elf_clean_line leaves the scripts'
# input): ANSI escapes and other control characters removed, line breaks and tabs as spaces,
# runs of spaces one space, the ends trimmed. A row's text from elsewhere (a legacy writer, a
# hand edit) can then never forge an entry or a field.
def one_line:
  tostring
  | gsub("\u001b\\[[0-?]*[ -/]*[@-~]"; "")
  | gsub("[\r\n\t\u2028\u2029]"; " ")
  | gsub("[\u0000-\u001f\u007f-\u009f]"; "")
  | gsub("  +"; " ") | sub("^ "; "") | sub(" $"; "");

# Text for the body of an entry (as elf_md_block): a line markdown would read as a heading
# ("#" after at most three spaces) gets a backslash before its "#".
def md_block:
  tostring | split("\n")
  | map(if test("^ {0,3}#") then sub("^(?<s> {0,3})#"; "\(.s)\\#") else . end)
  | join("\n");

# The text of an entry's body as given: md_block undone.
def md_unblock:
  split("\n")
  | map(if test("^ {0,3}\\\\#") then sub("^(?<s> {0,3})\\\\#"; "\(.s)#") else . end)
  | join("\n");

def failure_markdown($title; $domain; $severity; $tags; $date; $summary):
  "# \($title | one_line)\n\n**Domain**: \($domain | one_line)\n**Severity**: \($severity | one_line)\n**Tags**: \($tags | one_line)\n**Date**: \($date | one_line)\n\n## Summary\n\n\($summary | md_block)\n\n## What Happened\n\n[Describe the failure in detail]\n\n## Root Cause\n\n[What was the underlying issue?]\n\n## Impact\n\n[What were the consequences?]\n\n## Prevention\n\n[What heuristic or practice would prevent this?]\n\n## Related\n\n- **Experiments**:\n- **Heuristics**:\n- **Similar Failures**:\n";

def heuristic_header($domain):
  "# Heuristics: \($domain | one_line)\n\nGenerated from failures, successes, and observations in the **\($domain)** domain.\n\n---\n\n";

def heuristic_entry($id; $rule; $confidence; $source; $created; $explanation):
  "## H-\($id): \($rule | one_line)\n\n**Confidence**: \($confidence | num_text | one_line)\n**Source**: \($source | one_line)\n**Created**: \($created | one_line)\n\n\($explanation | md_block)\n\n---\n\n";

# A pending record journaled by an earlier version of the scripts, in the current form: a
# heuristic gets its entry (the row id is in the journaled record), a failure its key line and
# the "fix" statement that brings the row to the name elf-write chose. Run once per drain, and
# only when such records are pending (see elf_upgrade_pending in elf.sh).
def upgrade:
  if has("error") then .
  elif .kind == "heuristic" and (.write.content == null) then
    .write.content = heuristic_entry(.db.id; .heuristic.rule; .heuristic.confidence;
                                     .heuristic.source; .heuristic.created; .heuristic.explanation)
  elif .kind == "failure" and (has("fix") | not) then
    (if (.write.content | test("\n<!-- elf:[^\n]* -->\n$") | not) then
       .write.content += "\n<!-- elf:\(.key | tostring | gsub("[^A-Za-z0-9._:@/+=-]"; "")) -->\n"
     else . end)
    | .fix = {sql: "UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path",
              params: {path: {"$ref": "/write/path"}, id: {"$ref": "/db/id"}}}
  else . end;

# Text safe for a terminal, on one line: control characters (ANSI escapes and line breaks
# included) shown as \xNN.
def term:
  def hex2: [(. / 16 | floor), (. % 16)] | map("0123456789abcdef"[.:.+1]) | add;
  if type == "string" then
    explode
    | map(if . < 32 or (. >= 127 and . < 160) then "\\x" + hex2 | explode else [.] end)
    | add // [] | implode
  elif . == null then ""
  else tostring end;

# ---- Parsing markdown (sync-db-markdown.sh) ----

# The value of a "**Name**: value" (or "**Name:** value") line in a list of lines, or null.
def field($lines; $name):
  [ $lines[] | capture("^\\*\\*\($name)(\\*\\*:|:\\*\\*) ?(?<v>.*)$")? | .v ]
  | if length > 0 then (.[0] | sub("\\s+#.*$"; "") | sub("\\s+$"; "")) else null end;

# The "## H-<id>: rule" entries of a heuristics file (the file's text as input), in order, each
# with its position among the file's H-headings: {n, id, rule, confidence, source, created,
# explanation}. Other "## " headings end an entry and are not entries themselves; YAML front
# matter is skipped.
def heuristic_entries:
  (split("\n")) as $lines
  | [ range(0; $lines | length) | select($lines[.] | test("^## ")) ] as $heads
  | [ $heads | to_entries[]
      | .value as $at
      | ($heads[.key + 1] // ($lines | length)) as $upto
      | ($lines[$at] | capture("^## H-(?<id>[0-9]+):\\s*(?<rule>.*)$")?) as $h
      | select($h != null)
      | ($lines[$at + 1:$upto]) as $body
      | ($body | map(select(test("^\\*\\*[A-Za-z ]+(\\*\\*:|:\\*\\*)") | not))
               | map(select(. != "---")) | join("\n")
               | sub("^[ \n]+"; "") | sub("[ \n]+$"; "") | md_unblock) as $text
      | {id: ($h.id | tonumber), rule: ($h.rule | sub("\\s+$"; "")),
         confidence: (field($body; "Confidence") | if . == null then null else (tonumber? // null) end),
         source: (field($body; "Source") // field($body; "Source Type")),
         created: field($body; "Created"),
         explanation: (field($body; "Explanation") // $text)} ]
  | to_entries | map(.value + {n: .key});

# A severity as written in a file: 1..5 kept, low, medium, high, critical (any case) mapped to
# 2, 3, 4, 5 as the scripts do; anything else is kept as written.
def severity_value:
  (ascii_downcase | sub("^\\s+"; "") | sub("\\s+$"; "")) as $s
  | {"low": 2, "medium": 3, "high": 4, "critical": 5}[$s] // (tonumber? // .);

# A failure file's fields (the file's text as input): {title, domain, severity, tags, date,
# summary}. Severity stays as written when it is not a number.
def failure_fields:
  (split("\n")) as $lines
  | ([ $lines[] | capture("^# (?<t>.*)$")? | .t ] | .[0] // null) as $title
  | ([ range(0; $lines | length) | select($lines[.] | test("^## Summary\\s*$")) ] | .[0]) as $s
  | (if $s == null then null
     else [ $lines[$s + 1:][] ] | (map(test("^## ")) | index(true)) as $stop
          | (if $stop == null then . else .[:$stop] end)
          | join("\n") | sub("^[ \n]+"; "") | sub("[ \n]+$"; "") | md_unblock
     end) as $summary
  | {title: $title,
     domain: field($lines; "Domain"),
     severity: (field($lines; "Severity") | if . == null then null else severity_value end),
     tags: field($lines; "Tags"),
     date: field($lines; "Date"),
     summary: $summary};

# A failure row's values from its file (the file's text as input, $p its path), as sync's
# repairs and the import of another machine's records make it: the title (else the file's
# name), the summary's first line, tags, domain, severity, and created_at from a YYYY-MM-DD
# date (null without one).
def failure_values($p):
  failure_fields as $f
  | {type: "failure", filepath: $p,
     title: ($f.title // ($p | sub("^.*/"; "") | sub("\\.md$"; ""))),
     summary: (($f.summary // "") | split("\n") | .[0] // ""),
     tags: $f.tags, domain: $f.domain, severity: $f.severity,
     created_at: (if ($f.date // "" | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}$")) then "\($f.date) 00:00:00" else null end)};

# The differences between the markdown and the index, from {files, frows, entries, hrows}:
# failure files (paths), failure rows ({id, filepath}), heuristic entries ({path, domain, n, id,
# rule, ...}) and heuristic rows ({id, domain, rule}). One object per difference, in a stable
# order, "kind" one of failure-file-without-row, failure-row-without-file, failure-file-shared,
# heuristic-entry-without-row, heuristic-entry-duplicate, heuristic-row-without-entry.
#
# An entry is a row's when its id is the row's and so is its rule (as one line, ignoring case
# and runs of white space): an id alone proves nothing once ids restart (a lost index.db). The
# entry in the row's domain file is taken first, then the first in file order. Another entry
# with the same id and rule is a copy (a paste, or a legacy writer racing a repair): a
# duplicate, repaired by removing it. An entry left over whose rule is the rule of a row left
# over (legacy "H-0" headings, or a renumbered copy) is that row's entry with a wrong number:
# one difference, reported with "row" set, repaired by renumbering the heading. Failure rows
# sharing one file: every row but the one whose title the file carries (else the lowest id) is
# a row without a file of its own.
def differences:
  def norm: one_line | ascii_downcase;
  . as $in
  | ($in.files | map({(.): true}) | add // {}) as $filepaths
  | ($in.hrows | map({(.id | tostring): .}) | add // {}) as $hrowids
  | def claim($e; $need_domain):
      ($e.id | tostring) as $k
      | $hrowids[$k] as $row
      | $e.id > 0 and $row != null and (.claimed[$k] | not) and (.taken[$e.at] | not)
        and ($row.rule | norm) == ($e.rule | norm)
        and (($need_domain | not) or ($row.domain | domain_slug) == $e.domain);
    ($in.entries | to_entries | map(.value + {at: (.key | tostring)})) as $entries
  | (reduce ($entries[], $entries[]) as $e ({claimed: {}, taken: {}, round: 0, seen: 0};
       .seen += 1
       | (.seen <= ($entries | length)) as $first
       | if claim($e; $first) then .claimed[$e.id | tostring] = true | .taken[$e.at] = true
         else . end)) as $m
  | ($entries | map(select($m.taken[.at] | not))) as $unclaimed
  | ($unclaimed | map(select(.id > 0 and $m.claimed[.id | tostring]
                             and (($hrowids[.id | tostring].rule | norm) == (.rule | norm))))) as $dups
  | ($dups | map({(.at): true}) | add // {}) as $dupat
  | [ $in.hrows[] | select($m.claimed[.id | tostring] | not) ] as $rowsleft
  | ($unclaimed | map(select($dupat[.at] | not))
     | reduce .[] as $e ({used: {}, out: []};
         . as $acc
         | ([ $rowsleft[] | select(($acc.used[.id | tostring] | not) and (.rule | norm) == ($e.rule | norm)) ]
            | .[0]) as $candidate
         | if $candidate != null
           then .used[$candidate.id | tostring] = true
                | .out += [$e + {kind: "heuristic-entry-without-row", row: $candidate.id}]
           else .out += [$e + {kind: "heuristic-entry-without-row"}] end)) as $paired
  | ($in.frows | group_by(.filepath)) as $byfile
  | [ $byfile[] | select(length > 1) | . as $g
      | ($g | map(select((.title // "" | norm) == (.file_title // "" | norm))) | .[0].id // $g[0].id) as $keep
      | $g[] | select(.id != $keep) | {kind: "failure-file-shared", id, path: .filepath, with: $keep} ] as $shared
  | ($in.frows | map(.filepath) | map({(.): true}) | add // {}) as $rowpaths
  | [ $in.files[] | select($rowpaths[.] | not) | {kind: "failure-file-without-row", path: .} ]
  + [ $in.frows[] | select($filepaths[.filepath] | not)
      | {kind: "failure-row-without-file", id, path: .filepath} ]
  + [ $shared[] | select($filepaths[.path]) ]
  + [ $paired.out[] | del(.at) ]
  + [ $dups[] | del(.at) + {kind: "heuristic-entry-duplicate"} ]
  + [ $rowsleft[] | select($paired.used[.id | tostring] | not)
      | {kind: "heuristic-row-without-entry", id, domain, rule} ];

# One line describing a difference, safe for a terminal.
def difference_line:
  if .kind == "failure-file-without-row" then "failure file without row: \(.path | term)"
  elif .kind == "failure-row-without-file" then "failure row without file: #\(.id) \(.path | term)"
  elif .kind == "heuristic-entry-without-row" and .row != null then
    "heuristic entry without row: \(.path | term) H-\(.id) (entry \(.n + 1)): \(.rule | term) (the entry of row H-\(.row), misnumbered)"
  elif .kind == "heuristic-entry-without-row" then
    "heuristic entry without row: \(.path | term) H-\(.id) (entry \(.n + 1)): \(.rule | term)"
  elif .kind == "heuristic-entry-duplicate" then
    "duplicate heuristic entry: \(.path | term) H-\(.id) (entry \(.n + 1)): \(.rule | term) (a copy of row H-\(.id)'s entry)"
  elif .kind == "failure-file-shared" then
    "failure rows sharing one file: #\(.id) and #\(.with) \(.path | term)"
  else "heuristic row without entry: H-\(.id) (\(.domain | term)): \(.rule | term)" end;

# A heuristics file's text (input) with some "## H-" headings renumbered ($ids maps a heading's
# position among the file's H-headings, as a string, to its new id) and the entries at the
# positions $drop removed (an entry runs from its heading to the next "## " heading).
def rewrite($ids; $drop):
  ($drop | map({(tostring): true}) | add // {}) as $gone
  | split("\n")
  | reduce .[] as $line ({out: [], n: 0, dropping: false};
      if ($line | test("^## H-[0-9]+:")) then
        (.n | tostring) as $k
        | .dropping = ($gone[$k] == true)
        | (if .dropping then .
           elif $ids[$k] != null then .out += [$line | sub("^## H-[0-9]+:"; "## H-\($ids[$k]):")]
           else .out += [$line] end)
        | .n += 1
      elif ($line | test("^## ")) then .dropping = false | .out += [$line]
      elif .dropping then .
      else .out += [$line] end)
  | .out | join("\n");
