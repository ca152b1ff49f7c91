#!/usr/bin/env bash
# The agents' read path: `python3 query.py --context --domain debugging` on a copy of the real
# home, the legacy query.py against ours (bin-wrappers/query.py, which hands over to
# query-py.sh), side by side, runs alternating; beside them the floor of any query.py, python3
# itself (`python3 -c pass`, and a query.py that only execs /bin/true), and query-py.sh alone.
# Prints a markdown table (bench/lib.sh describes the format): p50 and p99 per call.
#
# Usage: bench/querypy.sh [RUNS]
# QUERYPY_LEGACY  the legacy query.py (mikegugel/Emergent-Learning-Framework_ELF at 8a99a8d,
#                 query/query.py); without it the comparison is skipped (one row says so)
# QUERYPY_RUNS    (50) runs of each command (the argument wins)
# QUERYPY_PYTHON  the python3 to run (default: python3 on PATH), the same for every command
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need python3
bench_build
runs=${1:-${QUERYPY_RUNS:-$(bench_default 50 5)}}
python=${QUERYPY_PYTHON:-$(command -v python3)}
legacy=${QUERYPY_LEGACY:-}
bench_header
if [[ -z $legacy || ! -f $legacy ]]; then
    bench_row "query.py --context --domain debugging: QUERYPY_LEGACY not set (the legacy query.py)" "skipped" - - - -
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The legacy script writes (tables, indexes, statistics): each side gets its own copy.
cp -r "$bench_root/tests/fixtures/real-home" "$work/legacy-home"
cp -r "$bench_root/tests/fixtures/real-home" "$work/home"
chmod -R u+w "$work"
printf 'import os\nos.execv("/bin/true", ["true"])\n' >"$work/true.py"
args=(--context --domain debugging)
# The outputs agree before anything is timed.
"$python" "$legacy" --base-path "$work/legacy-home" "${args[@]}" >"$work/legacy.out"
"$python" "$bench_root/bin-wrappers/query.py" --base-path "$work/home" "${args[@]}" >"$work/ours.out"
cmp -s "$work/legacy.out" "$work/ours.out" || bench_die "the outputs differ: diff $work/legacy.out $work/ours.out"

# time NAME COMMAND...: one run, its latency appended to lat.NAME.
time_one() {
    local name=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    "$@" >/dev/null
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' >>"$work/lat.$name"
}
for name in legacy ours direct python shim; do : >"$work/lat.$name"; done
for _ in $(seq "$runs"); do
    time_one legacy "$python" "$legacy" --base-path "$work/legacy-home" "${args[@]}"
    time_one ours "$python" "$bench_root/bin-wrappers/query.py" --base-path "$work/home" "${args[@]}"
    time_one direct "$bench_root/bin-wrappers/query-py.sh" --base-path "$work/home" "${args[@]}"
    time_one python "$python" -c pass
    time_one shim "$python" "$work/true.py"
done
[[ ! -e $work/home/memory/index.db-wal && ! -e $work/home/memory/index.db-shm ]] ||
    bench_die "query-py.sh left a -wal or -shm"
p() { bench_pct "$1" <"$work/lat.$2"; }
what="query.py --context --domain debugging, real home, $(bench_runs "$runs") alternating, $("$python" --version 2>&1) ($python)"
bench_time_row "$what: ours vs legacy, p50" "$(p 50 ours)" "$(p 50 legacy)" 0.25
bench_time_row "$what: ours vs legacy, p99" "$(p 99 ours)" "$(p 99 legacy)" -
bench_time_row "$what: query-py.sh alone vs legacy, p50" "$(p 50 direct)" "$(p 50 legacy)" -
bench_time_row "$what: the floor, python3 -c pass vs legacy, p50" "$(p 50 python)" "$(p 50 legacy)" -
bench_time_row "$what: the floor, a query.py that execs /bin/true vs legacy, p50" "$(p 50 shim)" "$(p 50 legacy)" -
