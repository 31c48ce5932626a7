#!/usr/bin/env bash
# echo_deflate.sh - ringws's echo of JSON notifications, plain against
# compressed both ways (permessage-deflate, as browsers send), in one run.
#
# Why it exists: what compression adds to an echoed message is the figure
# the compression issue compares with uWebSockets' (34 / 14 µs compressed,
# 15.5 / 2.4 µs plain, at 1 / 8 in flight).  The C load generator makes it
# measurable: `ringws-bench echo --notifications` sends 200-byte JSON
# notifications from a pool built once, and with --deflate each goes
# compressed (zlib level 6, compressed once at start-up) so that the server
# inflates every message and compresses every answer, while the generator's
# own cost per message stays that of the plain runs.  One ringws (release,
# one worker) pinned to CPU 0, the generator to CPU 1; 100 connections at 1
# and at 8 in flight; plain and compressed runs alternate, their order
# swapped each rep, so that drift in the machine's load hits both alike.
# The table gives medians of the server's CPU time per message (utime +
# stime from /proc/PID/stat), the ratio compressed / plain (the median of
# each rep's own ratio), and "generator CPU %": near 100, the generator, not
# the server, set the rate (the CPU per message still holds).
#
# Usage: bench/echo_deflate.sh [--quick] [--reps N] [--duration S] [--size B]
#                              [--out FILE]
#   default: 5 reps of 5 s per setting, 200-byte messages (about 2 minutes);
#   --quick: 1 s runs (about 30 s).  --out also writes the table to FILE.
# Builds ringws and ringws-bench in a release meson tree in build-bench/.
# Every process it starts is stopped by PID; the port is chosen at run time;
# every run is time-bounded.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
DURATION=5
SIZE=200

bench_quick() { DURATION=1; }
bench_options --duration=DURATION --size=SIZE -- "$@"
bench_positive "--size takes a positive integer" "$SIZE"
bench_begin

# run REP INFLIGHT MODE: one echo run, its JSON line in TMP/results.jsonl.
run() {
    local rep=$1 inflight=$2 mode=$3 b0 b1 s0 s1 rc=0 json extra=()
    kill -0 "$RINGWS_PID" 2>/dev/null || { say "SERVER PROBLEM: ringws is gone"; tail -n 20 \
        "$TMP/ringws.err" >&2; exit 1; }
    [ "$mode" = plain ] || extra=(--deflate)
    b0=$(bench_busy_ticks)
    s0=$(bench_steal_ticks)
    json=$(timeout $((DURATION + 40)) taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" echo \
        --url "ws://127.0.0.1:$RINGWS_PORT/echo" --notifications --size "$SIZE" --conns 100 \
        --inflight "$inflight" --duration "$DURATION" --timeout 5 --server-pid "$RINGWS_PID" \
        --json "${extra[@]}" 2>"$TMP/bench.err") || rc=$?
    b1=$(bench_busy_ticks)
    s1=$(bench_steal_ticks)
    bench_check_rc $rc "$mode, $inflight in flight, rep $rep"
    [ -n "$json" ] || json='{}'
    printf '{"mode": "%s", "inflight": %s, "rep": %s, "rc": %s, "busy_s": %s, "steal_s": %s, "r": %s}\n' \
        "$mode" "$inflight" "$rep" "$rc" "$(bench_ticks_to_s "$b0" "$b1")" \
        "$(bench_ticks_to_s "$s0" "$s1")" "$json" >>"$TMP/results.jsonl"
}

bench_prepare ""
bench_server "$TMP/ringws" "$BUILD/ringws" --bind 127.0.0.1 --port 0 --workers 1 || {
    say "ringws did not start:"; cat "$TMP/ringws.err" >&2; exit 1; }
RINGWS_PID=$BENCH_PID
RINGWS_PORT=$BENCH_PORT
say "ringws pid $RINGWS_PID port $RINGWS_PORT; $REPS reps of ${DURATION}s, $SIZE-byte messages;" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"

START=$(date +%s)
for rep in $(seq "$REPS"); do
    for inflight in 1 8; do
        if [ $((rep % 2)) -eq 1 ]; then
            run "$rep" "$inflight" plain
            run "$rep" "$inflight" compressed
        else
            run "$rep" "$inflight" compressed
            run "$rep" "$inflight" plain
        fi
    done
    say "rep $rep/$REPS done ($(( $(date +%s) - START ))s)"
done
say "load average $(cut -d' ' -f1-3 /proc/loadavg)"
cp "$TMP/results.jsonl" "$BUILD/echo-deflate-results.jsonl"

PYTHONPATH=$ROOT/bench python3 - "$TMP/results.jsonl" "$DURATION" "$REPS" "$SIZE" \
    >"$TMP/table.md" <<'EOF' || FAILED=1
import sys
from report import read_runs, figures, failed, med, med_max, fmt
rows = read_runs(sys.argv[1])
dur, reps, size = sys.argv[2:5]
bad = []

def pick(mode, inflight, key):
    return figures(rows, key, mode=mode, inflight=inflight)

def per_rep_ratio(inflight):
    out = []
    for rep in sorted({r["rep"] for r in rows}):
        a = figures(rows, "server_cpu_us_per_msg", mode="compressed", inflight=inflight, rep=rep)
        b = figures(rows, "server_cpu_us_per_msg", mode="plain", inflight=inflight, rep=rep)
        if a and b and b[0]:
            out.append(a[0] / b[0])
    return out

def other_load(inflight):
    # % of one CPU taken by processes that are neither server nor generator.
    out = []
    for r in rows:
        if r["inflight"] != inflight or not r["r"]:
            continue
        d = r["r"].get("duration_s") or float(dur)
        mine = r["r"].get("server_cpu_s", 0) + r["r"].get("client_cpu_pct", 0) / 100 * d
        out.append(max(0.0, (r["busy_s"] - mine) / d * 100))
    return med_max(out)

for r in rows:
    if r["mode"] == "compressed" and r["r"] and r["r"].get("sent_compressed", 0) == 0:
        bad.append(f"rep {r['rep']}, {r['inflight']} in flight: nothing was sent compressed")

print(f"Echo of {size}-byte JSON notifications, 100 connections, medians of {reps} runs of "
      f"{dur} s (compressed: permessage-deflate both ways; ratio = compressed / plain, "
      "the median of each rep's ratio):\n")
print("| in flight | server CPU µs/msg, plain | compressed | ratio (min-max) | msgs/s, plain | "
      "compressed | generator CPU %, plain / compressed | failed runs | "
      "other load % (median / max) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for inflight in (1, 8):
    cp = med(pick("plain", inflight, "server_cpu_us_per_msg"))
    cc = med(pick("compressed", inflight, "server_cpu_us_per_msg"))
    rr = per_rep_ratio(inflight)
    spread = f"{med(rr):.2f} ({min(rr):.2f}-{max(rr):.2f})" if rr else "-"
    rp = med(pick("plain", inflight, "msgs_per_s"))
    rc = med(pick("compressed", inflight, "msgs_per_s"))
    gp = med(pick("plain", inflight, "client_cpu_pct"))
    gc = med(pick("compressed", inflight, "client_cpu_pct"))
    f = failed(rows, inflight=inflight)
    om, ox = other_load(inflight)
    print(f"| {inflight} | {fmt(cp, 2)} | {fmt(cc, 2)} | {spread} | {fmt(rp)} | {fmt(rc)} | "
          f"{fmt(gp)} / {fmt(gc)} | {f} | {fmt(om)} / {fmt(ox)} |")
for line in bad:
    print(f"\nPROBLEM: {line}")
sys.exit(1 if bad else 0)
EOF
bench_finish "$TMP/table.md"
