#!/usr/bin/env bash
# elf-backoff benchmarks (issue 2). Prints a markdown table (bench/lib.sh describes the format).
#
#   1. `elf-backoff -- true` against `true`: the overhead per run (target: under 1 ms more at the
#      median), against Debian's `retry -- true`, and against the spawn floor of the machine, a
#      C program that only spawns `true` (target: at most 1.25 times it).
#   2. Contention: 50 processes each need a non-blocking lock (`flock -n`) that its holder keeps
#      for 20 ms; total attempts and completion time for each jitter kind and for `retry` with a
#      fixed delay. Jitter is judged on completion time under contention: full or decorrelated
#      jitter finish at least twice as soon as no jitter, with fewer attempts.
#
# BACKOFF_RUNS (300) hyperfine runs per command; BACKOFF_PROCS (50) contending processes;
# BACKOFF_CONTENTION_RUNS (3) repetitions of each contention run, medians reported.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need hyperfine retry flock jq
bench_build
runs=${BACKOFF_RUNS:-$(bench_default 300 30)}
procs=${BACKOFF_PROCS:-50}
crounds=${BACKOFF_CONTENTION_RUNS:-$(bench_default 3 1)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The floor of any command wrapper on this machine: a static C program that only
# posix_spawnp()s its command and waits for it (no options, no retries, no held output).
floor=()
if command -v cc > /dev/null 2>&1; then
    cat > "$work/spawn.c" <<'C'
#include <spawn.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    pid_t pid;
    int status;
    if (argc < 2 || posix_spawnp(&pid, argv[1], 0, 0, argv + 1, environ)) return 127;
    if (waitpid(pid, &status, 0) < 0) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
C
    cc -O2 -static -o "$work/spawn" "$work/spawn.c" 2>/dev/null || cc -O2 -o "$work/spawn" "$work/spawn.c"
    floor=("$work/spawn true")
fi
hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$work/o.json" \
    "true" "$ELF_BIN/elf-backoff -- true" "retry -- true" "${floor[@]}" >&2
t=$(bench_hf_median "$work/o.json" 0)
e=$(bench_hf_median "$work/o.json" 1)
r=$(bench_hf_median "$work/o.json" 2)

bench_header
bench_row "\`elf-backoff -- true\` vs \`true\`: overhead per run ($(bench_runs "$runs"))" \
    "$(bench_time "$e")" "$(bench_time "$t")" \
    "$(awk -v e="$e" -v t="$t" 'BEGIN { printf "%.3g (+%.3f ms)", e / t, (e - t) * 1000 }')" \
    "< +1 ms" "$(awk -v e="$e" -v t="$t" 'BEGIN { print (e - t < 0.001) ? "yes" : "no" }')"
bench_time_row "\`elf-backoff -- true\` vs \`retry -- true\` ($(bench_runs "$runs"))" "$e" "$r" -
if ((${#floor[@]})); then
    f=$(bench_hf_median "$work/o.json" 3)
    bench_row "floor: a static C wrapper that only posix_spawns \`true\` and waits, vs \`true\` ($(bench_runs "$runs"))" \
        "$(bench_time "$f")" "$(bench_time "$t")" \
        "$(awk -v e="$f" -v t="$t" 'BEGIN { printf "%.3g (+%.3f ms)", e / t, (e - t) * 1000 }')" - -
    bench_time_row "\`elf-backoff -- true\` vs that floor ($(bench_runs "$runs"))" "$e" "$f" 1.25
fi

# contend LABEL COMMAND-PREFIX...: prints "attempts seconds" for $procs processes that each
# retry `flock -n` on a lock held 20 ms per turn.
contend() {
    : >"$work/attempts"
    local start end
    start=$EPOCHREALTIME
    for _ in $(seq "$procs"); do
        "$@" sh -c "echo >> '$work/attempts'; exec flock -n -E 75 '$work/lock' sleep 0.02" >/dev/null 2>&1 &
    done
    wait
    end=$EPOCHREALTIME
    echo "$(wc -l <"$work/attempts") $(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')"
}

# contention KIND COMMAND-PREFIX...: sets att[KIND] and secs[KIND], the medians of the rounds.
declare -A att secs
contention() {
    local kind=$1 a=() s=() out
    shift
    for _ in $(seq "$crounds"); do
        out=$(contend "$@")
        a+=("${out% *}") s+=("${out#* }")
        echo "contention $kind: $out" >&2
    done
    att[$kind]=$(printf '%s\n' "${a[@]}" | bench_median)
    secs[$kind]=$(printf '%s\n' "${s[@]}" | bench_median)
}
for j in none equal full decorrelated; do
    contention "$j" "$ELF_BIN/elf-backoff" -q -n 100000 --base 10ms --max-delay 1s --jitter "$j" --
done
contention retry retry -d 1 --

cell() { printf '%s attempts, %s' "${att[$1]}" "$(bench_time "${secs[$1]}")"; }
for j in equal full decorrelated; do
    target=- met=-
    if [[ $j != equal ]]; then
        target="<= 0.5 (2x sooner), fewer attempts"
        met=$(awk -v s="${secs[$j]}" -v n="${secs[none]}" -v a="${att[$j]}" -v b="${att[none]}" \
            'BEGIN { print (s / n <= 0.5 && a < b) ? "yes" : "no" }')
    fi
    bench_row "contention, $procs x \`flock -n\` held 20 ms: completion time, \`--jitter $j\` vs \`--jitter none\` ($(bench_runs "$crounds"))" \
        "$(cell "$j")" "$(cell none)" \
        "$(awk -v a="${secs[$j]}" -v b="${secs[none]}" 'BEGIN { r = a / b; if (r < 0.9) printf "%.3g (%.3gx sooner)", r, 1 / r; else printf "%.3g", r }')" \
        "$target" "$met"
done
bench_row "contention: completion time, \`elf-backoff\` (full jitter, base 10 ms) vs \`retry -d 1\` (fixed 1 s)" \
    "$(cell full)" "$(cell retry)" \
    "$(awk -v a="${secs[full]}" -v b="${secs[retry]}" 'BEGIN { r = a / b; if (r < 0.9) printf "%.3g (%.3gx faster)", r, 1 / r; else printf "%.3g", r }')" \
    - -
