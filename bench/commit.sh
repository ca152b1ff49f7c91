#!/usr/bin/env bash
# elf-commit benchmarks (issue 6) against the git CLI. Prints a markdown table (bench/lib.sh
# describes the format).
#
#   1,000 single-file commits: elf-commit reading 1,000 records (one commit each) against a
#     loop of `git add F && git commit -m M` (target: at least 5x faster);
#   the same 1,000 records with --batch, one commit for all (target: at least 50x faster);
#   one invocation, `elf-commit -m x -- f` against `git commit -m x -- f` (target: no slower).
#
# COMMIT_N (1000) commits; COMMIT_RUNS (3) runs of the N-commit operations; COMMIT_ONE_RUNS (50)
# runs of the single one. The repositories are made under $TMPDIR (TMPDIR=/dev/shm measures
# without the disk).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need hyperfine git jq
bench_build
bin=$ELF_BIN/elf-commit
n=${COMMIT_N:-$(bench_default 1000 100)}
runs=${COMMIT_RUNS:-$(bench_default 3 1)}
one_runs=${COMMIT_ONE_RUNS:-$(bench_default 50 10)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# No global or system configuration: both sides see the same repository settings.
export HOME=$work/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"

# A repository with N new files under m/, and the N records naming them.
cat >"$work/fresh" <<EOF
#!/usr/bin/env bash
set -e
rm -rf "$work/repo"
git init -q "$work/repo"
cd "$work/repo"
git config user.name Bench
git config user.email bench@example.com
echo seed >seed
git add seed
git commit -q -m seed
mkdir m
for i in \$(seq $n); do echo "learning \$i" >"m/f\$i.md"; done
EOF
chmod +x "$work/fresh"
for i in $(seq "$n"); do
    printf '{"key":"k%d","write":{"path":"m/f%d.md"},"commit":{"message":"failure: record %d"}}\n' "$i" "$i" "$i"
done >"$work/records.jsonl"
cat >"$work/git-loop" <<EOF
#!/usr/bin/env bash
set -e
cd "$work/repo"
for i in \$(seq $n); do git add "m/f\$i.md" && git commit -q -m "failure: record \$i"; done
EOF
chmod +x "$work/git-loop"


# Both elf forms do what the git loop does: one commit per record, or one for all.
"$work/fresh"
"$bin" --repo "$work/repo" <"$work/records.jsonl" >/dev/null
[ "$(git -C "$work/repo" rev-list --count HEAD)" -eq $((n + 1)) ] || { echo "elf-commit made the wrong number of commits" >&2; exit 1; }
[ -z "$(git -C "$work/repo" status --porcelain)" ] || { echo "elf-commit left the work tree unclean" >&2; exit 1; }
"$work/fresh"
"$bin" --repo "$work/repo" --batch <"$work/records.jsonl" >/dev/null
[ "$(git -C "$work/repo" rev-list --count HEAD)" -eq 2 ] || { echo "elf-commit --batch made the wrong number of commits" >&2; exit 1; }

hyperfine --runs "$runs" --prepare "$work/fresh" --export-json "$work/stream.json" \
    -n "elf-commit (records)" "$bin --repo $work/repo < $work/records.jsonl > /dev/null" \
    -n "elf-commit --batch" "$bin --repo $work/repo --batch < $work/records.jsonl > /dev/null" \
    -n "git add && git commit loop" "$work/git-loop" >&2
[ "$(git -C "$work/repo" rev-list --count HEAD)" -eq $((n + 1)) ] || { echo "the git loop made the wrong number of commits" >&2; exit 1; }

# One commit of one changed file in a repository with some history.
"$work/fresh"
(cd "$work/repo" && "$bin" -m "all" -- m >/dev/null)
hyperfine -N --warmup 5 --runs "$one_runs" --export-json "$work/one.json" \
    --prepare "sh -c 'date +%N >> $work/repo/m/f1.md'" \
    -n "elf-commit -m x -- f" "$bin --repo $work/repo -m x -- m/f1.md" \
    -n "git commit -m x -- f" "git -C $work/repo commit -q -m x -- m/f1.md" >&2

bench_header
bench_time_row "$n single-file commits, one record each: \`elf-commit\` vs a \`git add && git commit\` loop ($(bench_runs "$runs"))" \
    "$(bench_hf_median "$work/stream.json" 0)" "$(bench_hf_median "$work/stream.json" 2)" 0.2
bench_time_row "$n records, \`elf-commit --batch\` (one commit) vs the same git loop" \
    "$(bench_hf_median "$work/stream.json" 1)" "$(bench_hf_median "$work/stream.json" 2)" 0.02
bench_time_row "one invocation, one file: \`elf-commit -m x -- f\` vs \`git commit -m x -- f\` ($(bench_runs "$one_runs"))" \
    "$(bench_hf_median "$work/one.json" 0)" "$(bench_hf_median "$work/one.json" 1)" 1
