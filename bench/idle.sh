#!/usr/bin/env bash
# idle.sh - server memory per idle WebSocket connection, ringws (default
# flags) next to libwebsockets, in one run, and where ringws's bytes go.
#
# Why it exists: memory per idle connection decides how many machines a push
# service needs, and a single figure hides what it is made of.  Each rep
# starts a fresh server of each kind (alternating their order), opens
# --conns connections with ringws-bench idle from CPU 1 (servers on CPU 0),
# holds them --hold seconds and reads the server's memory before and 3-4 s
# into the hold.  For ringws it splits the growth, from /proc/PID/smaps:
# anonymous memory outside the receive rings (the connection records in
# their slabs and what the allocator adds), the receive rings' resident
# pages, and file-backed pages (shared libraries paged in by the first
# connections: a cost of the process, not of each connection); beside them
# the kernel's slab growth per connection pair and the fresh server's own
# RSS (the one-off cost of the process: code and libraries it pages in at
# start).  Medians over the reps.
#
# Usage: bench/idle.sh [--quick] [--reps N] [--conns N] [--hold S] [--out FILE]
#                      [--threads N] [--ringws-args "ARGS"] [--peer lws|none]
#   default: 3 reps of 15000 connections held 6 s (about 1.5 minutes);
#   --threads: the generator's (ringws-bench --threads); --ringws-args: more
#   flags for ringws (e.g. "--workers 6 --max-connections 20000" for
#   100,000 connections); --peer none: ringws alone (libwebsockets is one
#   process with one descriptor table: 20,000 connections here at most).
#   --quick: 1 rep.  Past 20,000 connections run it under the host's lock
#   for heavy runs, if it has one; one worker's descriptor table holds
#   RLIMIT_NOFILE connections at most.
# Builds what it needs (bench/lib.sh); every process it starts is stopped
# by PID; ports are chosen at run time; every run is time-bounded.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
REPS=3
CONNS=15000
HOLD=6
THREADS=1
RINGWS_ARGS=
PEER=lws

bench_quick() { REPS=1; }
bench_options --conns=CONNS --hold=HOLD --threads=THREADS --ringws-args=RINGWS_ARGS \
    --peer=PEER -- "$@"
bench_positive "--conns, --hold and --threads take positive integers" "$CONNS" "$HOLD" "$THREADS"
case $PEER in lws | none) ;; *) say "--peer takes lws or none"; exit 2 ;; esac
# Read 3-4 s after the last connection opened (the rings give their pages
# back within 2 s of the burst), 2 s or more before the closes begin.
[ "$HOLD" -ge 6 ] || { say "--hold takes at least 6 s"; exit 2; }
bench_begin
bench_prepare lws_echo

# smaps_split PID: "anon_outside_rings rings file" in KiB.  The rings are
# the anonymous mappings whose size is a multiple of 16 MiB (the default
# 1024 x 16 KiB per worker; the kernel may merge two workers' into one).
smaps_split() {
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / {
            split($1, a, "-")
            size = 0
            n = length(a[2])
            # hex difference by digits: awk here has no strtonum
            lo = 0; hi = 0
            for (i = 1; i <= length(a[1]); i++) lo = lo * 16 + index("0123456789abcdef", substr(a[1], i, 1)) - 1
            for (i = 1; i <= n; i++) hi = hi * 16 + index("0123456789abcdef", substr(a[2], i, 1)) - 1
            size = hi - lo
            kind = NF < 6 ? (size % 16777216 == 0 ? "ring" : "anon") : ($6 ~ /^\[/ ? "anon" : "file")
        }
        /^Rss:/ { sum[kind] += $2 }
        END { printf "%d %d %d\n", sum["anon"], sum["ring"], sum["file"] }
    ' "/proc/$1/smaps"
}

# run_one KIND: one fresh server, one idle run; appends a line
# "KIND bytes_per_conn anon ring file kernel start_kib start_file_kib" (bytes
# per connection; the fresh server's resident KiB, and of it file-backed)
# to TMP/rows.
run_one() {
    local kind=$1 pid port before after rc=0 n kslab
    if [ "$kind" = ringws ]; then
        # shellcheck disable=SC2086  # the extra flags are words
        bench_server "$TMP/srv" "$BUILD/ringws" --bind 127.0.0.1 --port 0 $RINGWS_ARGS || {
            say "ringws did not start"; cat "$TMP/srv.err" >&2; exit 1; }
    else
        bench_server "$TMP/srv" "$BUILD/lws_echo" --port 0 || {
            say "lws_echo did not start"; cat "$TMP/srv.err" >&2; exit 1; }
    fi
    pid=$BENCH_PID
    port=$BENCH_PORT
    sleep 0.5
    before=$(smaps_split "$pid")
    taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" idle --url "ws://127.0.0.1:$port/echo" \
        --conns "$CONNS" --threads "$THREADS" --duration "$HOLD" --timeout 60 --server-pid "$pid" --json \
        >"$TMP/bench.json" 2>"$TMP/bench.err" &
    local bpid=$!
    while kill -0 "$bpid" 2>/dev/null && ! grep -q " $CONNS/$CONNS open" "$TMP/bench.err"; do
        sleep 0.2
    done
    sleep 3
    after=$(smaps_split "$pid")
    wait "$bpid" || rc=$?
    bench_check_rc "$rc" "$kind idle"
    bench_stop "$pid"
    n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["opened"])' "$TMP/bench.json")
    kslab=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_slab_bytes_per_pair"])' "$TMP/bench.json")
    read -r a0 r0 f0 <<<"$before"
    read -r a1 r1 f1 <<<"$after"
    awk -v k="$kind" -v n="$n" -v a="$((a1 - a0))" -v r="$((r1 - r0))" -v f="$((f1 - f0))" -v ks="$kslab" \
        -v s="$((a0 + r0 + f0))" -v sf="$f0" \
        'BEGIN { printf "%s %.0f %.0f %.0f %.0f %s %d %d\n", k, (a + r + f) * 1024 / n, a * 1024 / n, r * 1024 / n, f * 1024 / n, ks, s, sf }' \
        >>"$TMP/rows"
}

for rep in $(seq "$REPS"); do
    say "rep $rep of $REPS: $CONNS connections held $HOLD s"
    if [ "$PEER" = none ]; then
        run_one ringws
    elif [ $((rep % 2)) -eq 1 ]; then
        run_one ringws; run_one lws
    else
        run_one lws; run_one ringws
    fi
done

# median COLUMN KIND
median() {
    awk -v c="$1" -v k="$2" '$1 == k { print $c }' "$TMP/rows" | sort -n |
        awk '{ v[NR] = $1 } END { print NR == 0 ? "-" : NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs() { awk -v c="$1" -v k="$2" '$1 == k { printf "%s%s", s, $c; s = ", " }' "$TMP/rows"; }

{
    echo "| $CONNS idle connections, held $HOLD s (medians of $REPS) | ringws | libwebsockets |"
    echo "|---|---:|---:|"
    echo "| **server RSS growth per connection** (runs) | **$(median 2 ringws)** ($(runs 2 ringws)) | **$(median 2 lws)** ($(runs 2 lws)) |"
    echo "| anonymous memory outside the receive rings | $(median 3 ringws) | $(median 3 lws) |"
    echo "| receive rings, resident | $(median 4 ringws) | - |"
    echo "| file-backed pages (libraries paged in) | $(median 5 ringws) | $(median 5 lws) |"
    echo "| kernel slab per loopback pair (system-wide Slab delta: noisy on a shared machine) | $(median 6 ringws) | $(median 6 lws) |"
    echo "| one-off: the fresh server's RSS, KiB (of it file-backed) | $(median 7 ringws) ($(median 8 ringws)) | $(median 7 lws) ($(median 8 lws)) |"
} >"$TMP/table"
bench_finish "$TMP/table"
