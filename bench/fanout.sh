#!/usr/bin/env bash
# fanout.sh - ringws's pub/sub fan-out next to libwebsockets
# (bench/peers/lws_fanout.c) on this machine, in one run.
#
# Why it exists: the time for one publish to reach the last of N
# subscribers, and the server CPU each delivery costs, mean something only
# next to an established C server doing the same job at the same moment.
# For each subscriber count, each server is started afresh (pinned to CPU 0,
# ringws with one worker) and driven by `ringws-bench fanout` (pinned to
# CPU 1): N subscribers on /ws?topics=bench, 20 binary messages published
# over HTTP (POST /publish/bench, keep-alive) at 5 per second, every
# delivery checked.  Servers alternate, and so does their order, --reps
# times; the table gives medians and the ringws/libwebsockets ratios.
#
# Usage: bench/fanout.sh [--quick] [--reps N] [--conns "N1 N2"] [--out FILE]
#   default: 1000 and 10000 subscribers, 5 runs of each server per count;
#   --quick: 1000 only.  --out also writes the markdown table to FILE.
# Builds what it needs: a release meson tree in build-bench/ (ringws and
# ringws-bench) and the libwebsockets peer (gcc, outside meson, as
# compare.sh builds lws_echo).  Every server it starts is stopped by its
# PID; ports are chosen by the servers (port 0) and read from their first
# line; every run is bounded in time.  Per-run records are kept in
# build-bench/fanout-results.jsonl.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
CONNS="1000 10000"
MESSAGES=20
RATE=5

bench_quick() { CONNS=1000; }
bench_options --conns=CONNS -- "$@"
# shellcheck disable=SC2086
bench_positive "--conns takes positive integers" $CONNS
bench_begin
bench_prepare lws_fanout

# ---- one run ----------------------------------------------------------------

# run SERVER CONNS REP: a fresh server, one fanout run, the server stopped.
run() {
    local server=$1 conns=$2 rep=$3 cmd port rc=0 json load s0 s1 t0 t1
    case $server in
    ringws) cmd=("$BUILD/ringws" --port 0 --workers 1) ;;
    libwebsockets) cmd=("$BUILD/lws_fanout" --port 0) ;;
    esac
    if ! bench_server "$TMP/server" "${cmd[@]}"; then
        say "SERVER PROBLEM: $server did not start:"
        tail -n 20 "$TMP/server.err" >&2
        bench_stop "$BENCH_PID"
        FAILED=1
        printf '{"server": "%s", "conns": %s, "rep": %s, "rc": -1, "r": {}}\n' \
            "$server" "$conns" "$rep" >>"$TMP/results.jsonl"
        return 0
    fi
    port=$BENCH_PORT
    load=$(cut -d' ' -f1 /proc/loadavg)
    s0=$(bench_steal_ticks)
    t0=$(date +%s.%N)
    # Opening (bounded by --timeout per handshake and 1 ms a subscriber),
    # 4 s of publishing, at most --timeout for the last deliveries: 90 s
    # plus the opening is far more than a run needs.
    json=$(timeout $((90 + conns / 500)) taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" fanout \
        --url "ws://127.0.0.1:$port/ws" --conns "$conns" --messages $MESSAGES --rate $RATE \
        --server-pid "$BENCH_PID" --json 2>"$TMP/bench.err") || rc=$?
    t1=$(date +%s.%N)
    s1=$(bench_steal_ticks)
    if ! kill -0 "$BENCH_PID" 2>/dev/null; then
        say "SERVER PROBLEM: $server (pid $BENCH_PID) died during the run; its last log lines:"
        tail -n 20 "$TMP/server.err" >&2
        FAILED=1
    fi
    bench_stop "$BENCH_PID"
    bench_check_rc $rc "$server, $conns subscribers, rep $rep"
    [ -n "$json" ] || json='{}'
    printf '{"server": "%s", "conns": %s, "rep": %s, "rc": %s, "wall_s": %s, "load1": %s, "steal_s": %s, "r": %s}\n' \
        "$server" "$conns" "$rep" "$rc" \
        "$(awk "BEGIN { print $t1 - $t0 }")" "$load" \
        "$(bench_ticks_to_s "$s0" "$s1")" \
        "$json" >>"$TMP/results.jsonl"
}

# ---- the runs ---------------------------------------------------------------

say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy above ~1)"
START=$(date +%s)
: >"$TMP/results.jsonl"
for conns in $CONNS; do
    for rep in $(seq "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then
            run ringws "$conns" "$rep"
            run libwebsockets "$conns" "$rep"
        else
            run libwebsockets "$conns" "$rep"
            run ringws "$conns" "$rep"
        fi
        say "$conns subscribers: rep $rep/$REPS done ($(( $(date +%s) - START ))s)"
    done
done
cp "$TMP/results.jsonl" "$BUILD/fanout-results.jsonl"

PYTHONPATH=$ROOT/bench python3 - "$TMP/results.jsonl" "$REPS" "$MESSAGES" "$RATE" >"$TMP/table.md" <<'EOF'
import sys
from report import read_runs, figures, failed, med, med_max, fmt, ratio
rows = read_runs(sys.argv[1])
reps, messages, rate = sys.argv[2], int(sys.argv[3]), sys.argv[4]

def vals(server, conns, key):
    return figures(rows, key, server=server, conns=conns)

def fails(server, conns):
    return failed(rows, server=server, conns=conns)

def spread(conns, f):
    return med_max(f(r) for r in rows if r["conns"] == conns and r.get("wall_s"))

print(f"Fan-out: {messages} binary 20-byte messages at {rate}/s to N subscribers of one topic, "
      f"medians of {reps} runs per server (ratio = ringws / libwebsockets; lower is better "
      "for every figure but delivered):\n")
print("| subscribers | last delivery p50 us (ringws / lws) | ratio | recipient latency p50 us "
      "(ringws / lws) | ratio | server CPU us/delivery (ringws / lws) | ratio | "
      "delivered of expected (ringws / lws) | failed runs (ringws / lws) | "
      "load average at start (median / max) | steal % of one CPU (median / max) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for conns in sorted({r["conns"] for r in rows}):
    cells = []
    for key, nd in (("last_delivery_us_p50", 0), ("recipient_latency_us_p50", 0),
                    ("server_cpu_us_per_delivery", 3)):
        a, b = med(vals("ringws", conns, key)), med(vals("libwebsockets", conns, key))
        cells.append(f"{fmt(a, nd)} / {fmt(b, nd)} | {ratio(a, b)}")
    da, db = med(vals("ringws", conns, "delivered")), med(vals("libwebsockets", conns, "delivered"))
    lm, lx = spread(conns, lambda r: r["load1"])
    sm, sx = spread(conns, lambda r: r["steal_s"] / r["wall_s"] * 100)
    print(f"| {conns:,} | {' | '.join(cells)} | {fmt(da)} / {fmt(db)} of {conns * messages:,} | "
          f"{fails('ringws', conns)} / {fails('libwebsockets', conns)} | {fmt(lm, 2)} / {fmt(lx, 2)} | "
          f"{fmt(sm, 1)} / {fmt(sx, 1)} |")
EOF
bench_finish "$TMP/table.md"
