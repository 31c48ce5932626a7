#!/usr/bin/env bash
# cycle.sh - the server's CPU per connection cycle (connect, upgrade,
# close; with --bench-args --echo one echo before the close), ringws next to
# libwebsockets in one run.
#
# Why it exists: a reconnect storm is paid per cycle, mostly in the kernel
# (accept, the close sequence, the wake-ups), and that cost hides in a
# figure per second.  The server's utime and stime (/proc/PID/stat) over
# the cycles the generator counted say what one cycle costs, in user space
# and in the kernel.  Servers run pinned to CPU 0 (one worker), the
# generator (`ringws-bench connect --conns 50`) to CPU 1; each rep runs
# every server once, in an order that turns from rep to rep; the table
# shows medians, and each ratio is the median of the ratios within a rep
# (the load of a shared machine moves the absolute figures: they grow when
# the generator is starved and the server wakes for fewer cycles at a
# time).
#
# Usage: bench/cycle.sh [--quick] [--reps N] [--duration S]
#                       [--bench-args "ARGS"] [--before BIN] [--out FILE]
#   default: 5 reps of 4 s; --quick: 3 reps of 2 s.  --before BIN adds
#   another ringws binary (an earlier build) as a third server, for a
#   before/after of a change measured in the same runs.
# Builds what it needs (bench/lib.sh: build-bench/ and the libwebsockets
# peer); every process it starts is stopped by PID, ports are chosen at run
# time, every run is time-bounded.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
DURATION=4
BENCH_ARGS=
BEFORE=

bench_quick() { DURATION=2; REPS=3; }
bench_options --duration=DURATION --bench-args=BENCH_ARGS --before=BEFORE -- "$@"
bench_begin
bench_prepare lws_echo
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || { say "--before $BEFORE: not an executable"; exit 2; }

# cycle_run NAME COMMAND...: one server, one generator run; appends
# "rep NAME cycles user_ticks system_ticks" to TMP/runs.
cycle_run() {
    local name=$1 rc=0 u0 s0 u1 s1 n
    shift
    bench_server "$TMP/$name" "$@" || { say "$name did not start:"; cat "$TMP/$name.err" >&2; exit 1; }
    read -r u0 s0 < <(awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$BENCH_PID/stat")
    # shellcheck disable=SC2086  # --bench-args is a list of words
    timeout $((DURATION + 30)) taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" connect \
        --url "ws://127.0.0.1:$BENCH_PORT/echo" --conns 50 --duration "$DURATION" $BENCH_ARGS \
        >"$TMP/bench.out" 2>"$TMP/bench.err" || rc=$?
    read -r u1 s1 < <(awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$BENCH_PID/stat")
    bench_stop "$BENCH_PID"
    bench_check_rc "$rc" "$name, rep $rep"
    n=$(awk '$1 == "handshakes" { print $2 }' "$TMP/bench.out")
    echo "$rep $name ${n:-0} $((u1 - u0)) $((s1 - s0))" >>"$TMP/runs"
}

servers=(ringws libwebsockets)
[ -z "$BEFORE" ] || servers=(before ringws libwebsockets)
for rep in $(seq "$REPS"); do
    order=("${servers[@]}")
    for _ in $(seq $(((rep - 1) % ${#servers[@]}))); do
        order=("${order[@]:1}" "${order[0]}")
    done
    for s in "${order[@]}"; do
        case $s in
        ringws) cycle_run ringws "$BUILD/ringws" --bind 127.0.0.1 --port 0 --workers 1 ;;
        before) cycle_run before "$BEFORE" --bind 127.0.0.1 --port 0 --workers 1 ;;
        libwebsockets) cycle_run libwebsockets "$BUILD/lws_echo" --port 0 ;;
        esac
    done
done

python3 - "$TMP/runs" "$CLK_TCK" "$BENCH_ARGS" >"$TMP/table" <<'EOF'
import statistics, sys
runs, tck, args = sys.argv[1], int(sys.argv[2]), sys.argv[3]
per = {}  # name -> rep -> (user us, system us) per cycle
for line in open(runs):
    rep, name, n, u, s = line.split()
    n = max(int(n), 1)
    per.setdefault(name, {})[rep] = (int(u) * 1e6 / tck / n, int(s) * 1e6 / tck / n)
names = [x for x in ("before", "ringws", "libwebsockets") if x in per]
print("server CPU per cycle (connect, upgrade, %sclose), us, medians of %d reps:\n"
      % ("echo, " if "--echo" in args else "", len(per["ringws"])))
print("| server | user | system | total | total / libwebsockets' |")
print("|---|---:|---:|---:|---:|")
def med(name, f):
    return statistics.median(f(v) for v in per[name].values())
for name in names:
    ratio = statistics.median(sum(per[name][r]) / sum(per["libwebsockets"][r]) for r in per[name])
    print("| %s | %.1f | %.1f | %.1f | %.2f |" % (name, med(name, lambda v: v[0]),
          med(name, lambda v: v[1]), med(name, sum), ratio))
if "before" in per:
    print("\nringws / before, total, median of the reps: %.2f"
          % statistics.median(sum(per["ringws"][r]) / sum(per["before"][r]) for r in per["ringws"]))
EOF
bench_finish "$TMP/table"
