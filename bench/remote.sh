#!/usr/bin/env bash
# A home shared by machines through a git remote (ELF_REMOTE): the records/s of three machines
# sharing one remote (a bare repository over file://, each machine a clone on this machine)
# against one machine alone, and the extra latency a push adds to one record (p50, p99: one
# writer recording with ELF_REMOTE, against the same without it).
# Prints a markdown table (bench/lib.sh describes the format) and, on stderr, the records
# found on the remote after a final sync per machine.
#
# Usage: bench/remote.sh [RECORDS_PER_WRITER]
# REMOTE_PER (10) records per writer (the argument wins); REMOTE_WRITERS (2) writers per
# machine; REMOTE_SINGLE (30) records of the latency runs.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_need git jq
bench_build
per=${1:-${REMOTE_PER:-$(bench_default 10 3)}}
writers=${REMOTE_WRITERS:-2}
single=${REMOTE_SINGLE:-$(bench_default 30 5)}
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
wrappers=$bench_root/bin-wrappers
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# home NAME [REMOTE]: a machine's home, with the remote as origin when given; one warm-up record.
home() {
    mkdir -p "$work/$1"
    git init -q -b main "$work/$1"
    [ -z "${2-}" ] || git -C "$work/$1" remote add origin "$2"
    ELF_HOME=$work/$1 ELF_REMOTE=${2:+origin} "$wrappers/record-heuristic.sh" --domain warmup \
        --rule "warm-up of $1" --explanation x >/dev/null
}

# writer HOME TAG: PER records (failures and heuristics on shared domains), a latency per line
# in $work/lat.TAG.
writer() {
    local h=$1 tag=$2 i t0
    for i in $(seq "$per"); do
        t0=$EPOCHREALTIME
        if ((i % 2)); then
            ELF_HOME=$h "$wrappers/record-failure.sh" --title "failure $i" --domain bench >/dev/null
        else
            ELF_HOME=$h "$wrappers/record-heuristic.sh" --domain "shared-$((i % 3))" \
                --rule "rule $tag $i" --explanation x >/dev/null
        fi
        awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f\n", b - a }' >>"$work/lat.$tag"
    done
}

# throughput MACHINE...: every machine's writers at once; prints records/s.
throughput() {
    local start m w
    start=$EPOCHREALTIME
    for m in "$@"; do
        for w in $(seq "$writers"); do writer "$work/$m" "$m-$w" & done
    done
    wait
    awk -v r=$(($# * writers * per)) -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print r / (b - a) }'
}

git init -q --bare -b main "$work/remote.git"
url=file://$work/remote.git
home alone
for m in m1 m2 m3; do home "$m" "$url"; done
say() { echo "bench/remote.sh: $*" >&2; }

alone=$(throughput alone)
say "one machine alone, $writers writers x $per records: $(printf '%.1f' "$alone") records/s"
shared=$(ELF_REMOTE=origin throughput m1 m2 m3)
say "three machines sharing $url, $writers writers each x $per records: $(printf '%.1f' "$shared") records/s"
for m in m1 m2 m3 m1 m2; do
    ELF_HOME=$work/$m ELF_REMOTE=origin "$wrappers/sync-db-markdown.sh" --fix >/dev/null
done
on_remote=$(git -C "$work/remote.git" log --format=%s main | grep -c -e '^failure: ' -e '^heuristic: rule ' || true)
say "on the remote after a final sync per machine: $on_remote of $((3 * writers * per)) records ($(git -C "$work/remote.git" log --format=%s main | grep -c '^heuristic: warm-up') warm-ups)"

# The extra latency of a push: one writer, alone on its machine and on the remote.
rm -f "$work"/lat.*
home solo
home pusher "$url"
per=$single writer "$work/solo" solo
ELF_REMOTE=origin per=$single writer "$work/pusher" pusher
p50_off=$(bench_pct 50 <"$work/lat.solo")
p99_off=$(bench_pct 99 <"$work/lat.solo")
p50_on=$(bench_pct 50 <"$work/lat.pusher")
p99_on=$(bench_pct 99 <"$work/lat.pusher")

bench_header
bench_row "remote: 3 machines x $writers writers x $per records sharing one remote (file://) vs one machine alone: throughput" \
    "$(printf '%.1f' "$shared") records/s" "$(printf '%.1f' "$alone") records/s" \
    "$(awk -v a="$shared" -v b="$alone" 'BEGIN { printf "%.3g", a / b }')" - -
bench_row "remote: records on the remote after a final sync per machine" "$on_remote of $((3 * writers * per))" - - "all" \
    "$([ "$on_remote" -eq $((3 * writers * per)) ] && echo yes || echo no)"
bench_time_row "remote: one record with a push vs without, p50 ($single records, one writer)" "$p50_on" "$p50_off" -
bench_time_row "remote: one record with a push vs without, p99" "$p99_on" "$p99_off" -
bench_row "remote: extra latency a push adds to one record (p50, p99)" \
    "$(bench_time "$(awk -v a="$p50_on" -v b="$p50_off" 'BEGIN { print a - b }')"), $(bench_time "$(awk -v a="$p99_on" -v b="$p99_off" 'BEGIN { print a - b }')")" - - - -
