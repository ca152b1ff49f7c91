# The jq half of the ELF wrappers: input cleaning, slugs, the markdown formats, and the pipeline
# tail's dispatch on a record's "kind". Loaded with: jq -L "$ELF_LIB" 'include "elf"; ...'

# Removes ANSI escape sequences (CSI, OSC, two-byte ESC x) and control characters other than
# newline; CR LF and lone CR become LF; tabs become spaces.
def clean_text:
  gsub("\r\n?"; "\n")
  | gsub("\u001b\\[[0-?]*[ -/]*[@-~]"; "")
  | gsub("\u001b\\][^\u0007\u001b]*(\u0007|\u001b\\\\)?"; "")
  | gsub("\u001b[@-_]?"; "")
  | gsub("\t"; " ")
  | gsub("[\u0000-\u0009\u000b-\u001f\u007f\u0080-\u009f]"; "");

# One line: clean_text, then newlines become spaces, runs of spaces collapse, ends trimmed.
def clean_line:
  clean_text | gsub("\n"; " ") | gsub("  +"; " ") | sub("^ +"; "") | sub(" +$"; "");

# Multi-line text: clean_text with trailing blank lines removed.
def clean_block:
  clean_text | sub("[ \n]+$"; "");

# The legacy slug: lower case, spaces to "-", only [a-z0-9-], at most 100 characters. A title
# with no ASCII letter or digit gets "untitled-<hash>" (the hash of the title, given by the
# script), so that it is never empty.
def slug($fallback):
  (ascii_downcase | gsub(" "; "-") | gsub("[^a-z0-9-]"; "") | .[0:100]) as $s
  | if ($s | test("[a-z0-9]")) then $s else "untitled-" + $fallback end;

# The legacy domain rule: as the slug, then leading and trailing "-" stripped.
def domain_slug:
  ascii_downcase | gsub(" "; "-") | gsub("[^a-z0-9-]"; "") | .[0:100] | sub("^-+"; "") | sub("-+$"; "");

# A number as the markdown shows it (0.5, 0.85, 1).
def num_text: tostring;

def failure_markdown($title; $domain; $severity; $tags; $date; $summary):
  "# \($title)\n\n**Domain**: \($domain)\n**Severity**: \($severity)\n**Tags**: \($tags)\n**Date**: \($date)\n\n## Summary\n\n\($summary)\n\n## What Happened\n\n[Describe the failure in detail]\n\n## Root Cause\n\n[What was the underlying issue?]\n\n## Impact\n\n[What were the consequences?]\n\n## Prevention\n\n[What heuristic or practice would prevent this?]\n\n## Related\n\n- **Experiments**:\n- **Heuristics**:\n- **Similar Failures**:\n";

def heuristic_header($domain):
  "# Heuristics: \($domain)\n\nGenerated from failures, successes, and observations in the **\($domain)** domain.\n\n---\n\n";

def heuristic_entry($id; $rule; $confidence; $source; $created; $explanation):
  "## H-\($id): \($rule)\n\n**Confidence**: \($confidence | num_text)\n**Source**: \($source)\n**Created**: \($created)\n\n\($explanation)\n\n---\n\n";

def experiment_hypothesis($name; $started; $hypothesis; $success; $failure):
  "# Experiment: \($name)\n\n**Started**: \($started)\n**Status**: Active\n\n## Hypothesis\n\n\($hypothesis)\n\n## Success Criteria\n\n\($success)\n\n## Failure Criteria\n\n\($failure)\n\n## Variables\n\n- **Independent**:\n- **Dependent**:\n- **Controlled**:\n\n## Controls\n\n[What stays the same between cycles?]\n\n## Methodology\n\n[How will the experiment be run?]\n\n## Expected Outcomes\n\n[What do you expect to happen?]\n";

def experiment_log($name; $started):
  "# Experiment Log: \($name)\n\n**Started**: \($started)\n\n## Cycle 1\n\n### Try\n\n[What was attempted?]\n\n### Break\n\n[What broke or surprised?]\n\n### Analysis\n\n[Why did it happen?]\n\n### Learning\n\n[What was learned?]\n";

# The tail's first step, after elf-db: shape each stage's instructions from the results of the
# stages before it. Dispatches on "kind", so that replayed records of every kind work.
def fill:
  if has("error") then .
  elif .kind == "heuristic" then
    .write.content = heuristic_entry(.db.id; .heuristic.rule; .heuristic.confidence;
                                     .heuristic.source; .heuristic.created; .heuristic.explanation)
  else . end;

# After elf-write: when elf-write chose another name than the row records (a second record
# with the same title on the same day), an update brings the row into agreement. Every record
# leaves with "db" holding the statement elf-db exec runs (a no-op when nothing changed) and
# the row id kept in "db.id".
def fixup:
  if has("error") then .
  elif .kind == "failure" then
    .db = (.db + {
      sql: "UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path",
      params: {path: .write.path, id: .db.id}
    })
  else
    .db = (.db + {sql: "SELECT 1 WHERE :id IS NULL", params: {id: .db.id}})
  end;

# Text safe for a terminal: control characters (ANSI escapes included) shown as \xNN.
def term:
  def hex2: [(. / 16 | floor), (. % 16)] | map("0123456789abcdef"[.:.+1]) | add;
  if type == "string" then
    explode
    | map(if (. < 32 and . != 10) or (. >= 127 and . < 160) then "\\x" + hex2 | explode else [.] end)
    | add // [] | implode
  elif . == null then ""
  else tostring end;
