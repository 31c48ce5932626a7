#!/usr/bin/env bash
# history.sh - what message history costs ringws, and what resume gives
# back, on this machine.
#
# Why it exists: a topic with history (docs/PUBSUB.md, "History") promises
# that a subscriber coming back with its position misses nothing and gets
# nothing twice, at the memory of the frame fan-out already builds plus a
# few bytes a message, and at no cost to topics that keep none.  Measured,
# each on a fresh `ringws --workers 1` pinned to CPU 0, driven by
# ringws-bench pinned to CPU 1:
#   (a) memory per history message: --history-msgs messages of 20, 200 and
#       2000 bytes published (POST /publish, keep-alive) into a topic with
#       history=--history-msgs: the server's RSS growth divided by the
#       messages, with one raw subscriber receiving them as they come
#       (`ringws-bench fanout`), and with one ringws.v1 subscriber that was
#       away and gets all of them replayed (`ringws-bench resume`: every
#       message's envelope frame built); beside it the same publishing into
#       a topic without history, and the size of the envelope frame
#   (b) resume: 1, 1,000 and 10,000 ringws.v1 subscribers leave, 100
#       messages are published, all reconnect at once with their positions
#       (`ringws-bench resume`): time from each one's connect to its last
#       replayed message, and until all are done; every message checked
#   (c) the storm: --storm-conns subscribers, a publisher at 200 messages/s,
#       SIGUSR2 sheds every WebSocket (close 1012 "retry after N ms", N
#       below the default 5 s window); each comes back when told, with its
#       position (`ringws-bench storm`): messages lost, duplicates, gaps,
#       first and last reconnect, time until all are live again
#   (d) plain fan-out of 20 binary 20-byte messages at 5/s to --fanout-conns
#       raw subscribers, of a topic with history and of one without: history
#       costs nothing a subscriber does not use
# No peer of this machine offers resume (libwebsockets has no history; its
# fan-out is compared in bench/fanout.sh), so the tables are ringws's own.
# --reps times each; the tables give medians (and the worst run where a
# count must be 0).
#
# Usage: bench/history.sh [--quick] [--reps N] [--history-msgs N]
#                         [--resume-conns "N1 N2"] [--storm-conns N]
#                         [--fanout-conns N] [--out FILE]
#   default: 3 reps, 100000 messages, 1 1000 10000 resuming, 10000 in the
#   storm, 10000 fan-out subscribers (about 8 minutes); --quick: 1 rep,
#   10000 messages, 1 and 1000 resuming, 1000 in the storm and the fan-out.
#   --out also writes the markdown tables to FILE.
# Builds what it needs (a release meson tree in build-bench/).  Every
# server it starts is stopped by its PID; ports are chosen by the servers;
# every run is bounded in time.  Per-run records are kept in
# build-bench/history-results.jsonl.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
REPS=3
HISTORY_MSGS=100000
RESUME_CONNS="1 1000 10000"
STORM_CONNS=10000
FANOUT_CONNS=10000
SIZES="20 200 2000"
MISSED=100
STORM_RATE=200
FANOUT_MESSAGES=20
FANOUT_RATE=5

bench_quick() { REPS=1; HISTORY_MSGS=10000; RESUME_CONNS="1 1000"; STORM_CONNS=1000; FANOUT_CONNS=1000; }
bench_options --history-msgs=HISTORY_MSGS --resume-conns=RESUME_CONNS \
    --storm-conns=STORM_CONNS --fanout-conns=FANOUT_CONNS -- "$@"
# shellcheck disable=SC2086
bench_positive "--history-msgs, --resume-conns, --storm-conns and --fanout-conns take positive integers" \
    "$HISTORY_MSGS" $RESUME_CONNS "$STORM_CONNS" "$FANOUT_CONNS"
bench_begin
bench_prepare ""

# Every history rule the runs use, with room for the largest: 2000-byte
# messages x --history-msgs, the bound over all topics well above it, and
# a subscriber's queue that takes all of them replayed at once (a replay
# that does not fit is answered as a gap).
server_cmd() {
    echo "$BUILD/ringws" --port 0 --workers 1 \
        --topic "hist.*=close-1013,history=$HISTORY_MSGS" \
        --history-memory $((HISTORY_MSGS * 8192 + (64 << 20))) \
        --fanout-queue $((HISTORY_MSGS * 4096 + (1 << 20)))
}

# ---- one run ----------------------------------------------------------------

# run KIND SETTINGS_JSON LIMIT_S ARGS...: a fresh server, one ringws-bench
# run (ARGS, its URL and --server-pid added), the server stopped; the record
# goes to TMP/results.jsonl with the settings.
run() {
    local kind=$1 settings=$2 limit=$3 port rc=0 json load s0 s1 t0 t1 held
    shift 3
    # shellcheck disable=SC2046
    if ! bench_server "$TMP/server" $(server_cmd); then
        say "SERVER PROBLEM: ringws did not start:"
        tail -n 20 "$TMP/server.err" >&2
        bench_stop "$BENCH_PID"
        FAILED=1
        printf '{"kind": "%s", %s, "rc": -1, "r": {}}\n' "$kind" "$settings" >>"$TMP/results.jsonl"
        return 0
    fi
    port=$BENCH_PORT
    load=$(cut -d' ' -f1 /proc/loadavg)
    s0=$(bench_steal_ticks)
    t0=$(date +%s.%N)
    json=$(timeout "$limit" taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" "$@" \
        --url "ws://127.0.0.1:$port/ws" --server-pid "$BENCH_PID" --json 2>"$TMP/bench.err") || rc=$?
    t1=$(date +%s.%N)
    s1=$(bench_steal_ticks)
    if ! kill -0 "$BENCH_PID" 2>/dev/null; then
        say "SERVER PROBLEM: ringws (pid $BENCH_PID) died during the run; its last log lines:"
        tail -n 20 "$TMP/server.err" >&2
        FAILED=1
    fi
    # What the server counts its histories to hold (their messages and the
    # frames they pin), beside the RSS.
    held=$(curl -s --max-time 5 "http://127.0.0.1:$port/metrics" |
        awk '$1 == "ringws_history_messages" { m = $2 } $1 == "ringws_history_bytes" { b = $2 }
             END { printf "\"history_messages\": %d, \"history_bytes\": %d", m, b }') || {
        say "could not read /metrics of ringws (pid $BENCH_PID): the run's history figures are missing"
        held='"history_messages": null, "history_bytes": null'
        FAILED=1
    }
    bench_stop "$BENCH_PID"
    bench_check_rc $rc "$kind $settings"
    [ -n "$json" ] || json='{}'
    printf '{"kind": "%s", %s, "rc": %s, "wall_s": %s, "load1": %s, "steal_s": %s, %s, "r": %s}\n' \
        "$kind" "$settings" "$rc" "$(awk "BEGIN { print $t1 - $t0 }")" "$load" \
        "$(bench_ticks_to_s "$s0" "$s1")" "$held" "$json" >>"$TMP/results.jsonl"
}

# memory SIZE HISTORY(hist|plain) MODE(fanout|resume): --history-msgs
# messages into one topic, received live by a raw subscriber (fanout) or
# replayed to a ringws.v1 one (resume).
memory() {
    local size=$1 topic=$2.$1 mode=$3
    run memory "\"size\": $size, \"topic\": \"$2\", \"via\": \"$mode\"" \
        $((60 + HISTORY_MSGS / 500)) "$mode" --topic "$topic.$mode" --conns 1 \
        --messages "$HISTORY_MSGS" --rate 1000000 --size "$size"
}

resume() {
    local conns=$1
    run resume "\"conns\": $conns" $((60 + conns / 100)) resume --topic hist.resume \
        --conns "$conns" --messages $MISSED --open-window "$conns"
}

storm() {
    run storm "\"conns\": $STORM_CONNS" $((90 + STORM_CONNS / 100)) storm --topic hist.storm \
        --conns "$STORM_CONNS" --rate $STORM_RATE --timeout 30
}

fanout() {
    run fanout "\"topic\": \"$1\"" $((90 + FANOUT_CONNS / 500)) fanout --topic "$1.fanout" \
        --conns "$FANOUT_CONNS" --messages $FANOUT_MESSAGES --rate $FANOUT_RATE
}

# ---- the runs ---------------------------------------------------------------

say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy above ~1)"
START=$(date +%s)
: >"$TMP/results.jsonl"
for rep in $(seq "$REPS"); do
    for size in $SIZES; do
        if [ $((rep % 2)) -eq 1 ]; then
            memory "$size" hist fanout; memory "$size" hist resume; memory "$size" plain fanout
        else
            memory "$size" plain fanout; memory "$size" hist resume; memory "$size" hist fanout
        fi
    done
    for conns in $RESUME_CONNS; do
        resume "$conns"
    done
    storm
    if [ $((rep % 2)) -eq 1 ]; then fanout hist; fanout plain; else fanout plain; fanout hist; fi
    say "rep $rep/$REPS done ($(( $(date +%s) - START ))s)"
done
cp "$TMP/results.jsonl" "$BUILD/history-results.jsonl"

PYTHONPATH=$ROOT/bench python3 - "$TMP/results.jsonl" "$REPS" "$HISTORY_MSGS" "$MISSED" \
    "$STORM_RATE" "$FANOUT_MESSAGES" "$FANOUT_RATE" >"$TMP/table.md" <<'EOF'
import sys
from report import read_runs, figures, failed, med, fmt, ratio
rows = read_runs(sys.argv[1])
reps, msgs, missed, storm_rate = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fan_msgs, fan_rate = sys.argv[6], sys.argv[7]


def per_msg(r):
    """Server RSS growth over the publishing (and the replay), per message
    (bytes)."""
    x = r["r"]
    if r["rc"] != 0 or not x:
        return None
    if r["via"] == "resume":
        return x.get("server_bytes_per_message")
    if "server_rss_kib_after_publish" not in x or not x.get("messages"):
        return None
    return (x["server_rss_kib_after_publish"] - x["server_rss_kib_open"]) * 1024 / x["messages"]


def counted(size, via):
    """What the server counts a history message to pin (/metrics)."""
    return med(r["history_bytes"] / r["history_messages"] for r in rows
               if r["kind"] == "memory" and r["size"] == size and r["topic"] == "hist"
               and r["via"] == via and r["rc"] == 0 and r.get("history_messages"))


def mem(size, topic, via):
    return med(per_msg(r) for r in rows if r["kind"] == "memory" and r["size"] == size
               and r["topic"] == topic and r["via"] == via)


def worst(kind, key, **setting):
    v = figures(rows, key, kind=kind, **setting)
    return max(v) if v else None


print(f"Memory per history message: {msgs:,} binary messages published into one topic "
      f"(POST /publish, keep-alive), server RSS growth / messages, medians of {reps} runs. "
      "Raw: one raw subscriber received them live; envelope: one ringws.v1 subscriber was "
      "away and got all of them replayed (each message's envelope frame built). The envelope "
      "frame is what a ringws.v1 subscriber receives for one message (frame head, "
      "`msg TOPIC EPOCH OFFSET` line, payload). Publishing into a topic without history "
      "grows the RSS too (the allocator keeps what the queues and messages used, and a second "
      "round of publishing adds little): the columns minus no history are the history's own "
      "cost:\n")
print("| payload bytes | envelope frame bytes | no history, raw | history, raw "
      "| history, raw, minus no history | history, envelope | history, envelope, minus "
      "no history | ringws_history_bytes per message (raw / envelope) | failed runs |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for size in sorted({r["size"] for r in rows if r["kind"] == "memory"}):
    hr, he, pr = mem(size, "hist", "fanout"), mem(size, "hist", "resume"), mem(size, "plain", "fanout")
    line = len(f"msg hist.{size}.resume {'0' * 16} {msgs}\n")
    body = line + size
    frame = body + (2 if body < 126 else 4 if body < 65536 else 10)
    def minus(a):
        return fmt(None if a is None or pr is None else a - pr)
    print(f"| {size:,} | {frame:,} | {fmt(pr)} | {fmt(hr)} | {minus(hr)} | {fmt(he)} | "
          f"{minus(he)} | {fmt(counted(size, 'fanout'))} / {fmt(counted(size, 'resume'))} | "
          f"{failed(rows, kind='memory', size=size)} |")

print(f"\nResume: N ringws.v1 subscribers leave, {missed} messages are published, all N "
      "reconnect at the same moment with `?topics=T&since=T:EPOCH:OFFSET`; time from each "
      "one's connect start to its last replayed message, medians of "
      f"{reps} runs (lost, duplicates, gaps: worst run):\n")
print("| subscribers | resume p50 ms | p99 ms | max ms | all resumed ms | replayed of expected "
      "| lost / duplicates / gaps | server CPU us per resume | failed runs |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for conns in sorted({r["conns"] for r in rows if r["kind"] == "resume"}):
    def m(key, nd=1, scale=1):
        v = med(figures(rows, key, kind="resume", conns=conns))
        return fmt(None if v is None else v / scale, nd)
    rep = med(figures(rows, "replayed", kind="resume", conns=conns))
    print(f"| {conns:,} | {m('resume_us_p50', 2, 1000)} | {m('resume_us_p99', 2, 1000)} | "
          f"{m('resume_us_max', 2, 1000)} | {m('all_resumed_ms')} | {fmt(rep)} of {conns * missed:,} | "
          f"{fmt(worst('resume', 'lost', conns=conns))} / "
          f"{fmt(worst('resume', 'duplicates', conns=conns))} / "
          f"{fmt(worst('resume', 'gaps', conns=conns))} | "
          f"{m('server_cpu_us_per_resume')} | {failed(rows, kind='resume', conns=conns)} |")

print(f"\nReconnect storm: N ringws.v1 subscribers, {storm_rate} messages/s published "
      "(POST /publish), SIGUSR2 sheds every WebSocket (1012, \"retry after N ms\", N below "
      "5 s); each reconnects when told with its position. Times from the shed; live again = "
      "received a message published after the shed; medians of "
      f"{reps} runs (counts that must be 0: worst run):\n")
print("| subscribers | published | publishes/s after the shed | slowest publish answer ms "
      "| shed | first reconnect ms | last reconnect ms "
      "| all live again ms | replayed | lost | duplicates | gaps | gap notices "
      "| server CPU s, shed to end | failed runs |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for conns in sorted({r["conns"] for r in rows if r["kind"] == "storm"}):
    def m(key, nd=0):
        return fmt(med(figures(rows, key, kind="storm", conns=conns)), nd)
    w = {k: fmt(worst("storm", k, conns=conns)) for k in ("lost", "duplicates", "gaps",
                                                          "gap_notices")}
    print(f"| {conns:,} | {m('published')} | {m('publish_rate_after_shed', 1)} | "
          f"{m('publish_answer_ms_max', 1)} | {m('shed')} | {m('first_reconnect_ms', 1)} | "
          f"{m('last_reconnect_ms', 1)} | {m('all_live_ms', 1)} | {m('replayed')} | "
          f"{w['lost']} | {w['duplicates']} | {w['gaps']} | {w['gap_notices']} | "
          f"{m('server_cpu_s', 2)} | {failed(rows, kind='storm', conns=conns)} |")

print(f"\nPlain fan-out (raw subscribers, no envelope) of {fan_msgs} binary 20-byte messages at "
      f"{fan_rate}/s, to a topic with history and to one without, medians of {reps} runs "
      "(ratio = history / none):\n")
print("| subscribers | last delivery p50 us (history / none) | ratio "
      "| server CPU us/delivery (history / none) | ratio | delivered of expected "
      "(history / none) | failed runs (history / none) |")
print("|---:|---:|---:|---:|---:|---:|---:|")
fr = [r for r in rows if r["kind"] == "fanout"]
if fr:
    conns = med(figures(rows, "subscribers_wanted", kind="fanout"))
    cells = []
    for key, nd in (("last_delivery_us_p50", 0), ("server_cpu_us_per_delivery", 3)):
        a = med(figures(rows, key, kind="fanout", topic="hist"))
        b = med(figures(rows, key, kind="fanout", topic="plain"))
        cells.append(f"{fmt(a, nd)} / {fmt(b, nd)} | {ratio(a, b)}")
    da = med(figures(rows, "delivered", kind="fanout", topic="hist"))
    db = med(figures(rows, "delivered", kind="fanout", topic="plain"))
    print(f"| {fmt(conns)} | {' | '.join(cells)} | {fmt(da)} / {fmt(db)} of "
          f"{fmt(conns * int(fan_msgs) if conns else None)} | "
          f"{failed(rows, kind='fanout', topic='hist')} / {failed(rows, kind='fanout', topic='plain')} |")
EOF
bench_finish "$TMP/table.md"
