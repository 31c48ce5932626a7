#!/usr/bin/env bash
# tls.sh - what TLS costs ringws, next to libwebsockets over TLS and nginx
# terminating TLS in front of a plain ringws, on this machine, in one run.
#
# Why it exists: TLS is where WebSocket servers' costs explode (issue 11);
# ringws's figures over wss:// mean something only next to the set-ups a
# user would otherwise choose, measured at the same moment, and next to the
# reference figures of uWebSockets over TLS the issue gives.  Servers:
#   ringws-tls      ringws --workers 1 --tls-cert --tls-key (skipped, with a
#                   line saying why, by a ringws without --tls-cert)
#   libwebsockets   bench/peers/lws_echo.c and lws_fanout.c with
#                   --tls-cert/--tls-key (Debian's lws, built with OpenSSL)
#   nginx+ringws    nginx terminating TLS (bench/tls-setup.sh) in front of
#                   a plain ringws --workers 1: the CPU time and memory are
#                   those of nginx's processes and ringws's together
#   ringws (plain)  ws://, for the fan-out only
# Every server runs pinned to CPU 0 (nginx and the ringws behind it share
# it), the load generator (ringws-bench, TLS 1.3 by default) to CPU 1.
# Measured, each server started afresh for each of (a), (b)+(c), (d):
#   (a) server memory per idle wss connection, --idle-conns held 2 s
#   (b) echo, 100 connections, 1 and 8 messages in flight, 20-byte binary
#       messages: server CPU us per message
#   (c) connect cycles (connect, TLS handshake, upgrade, one echo, close),
#       32 at a time, full and resumed (--resume: session tickets):
#       handshakes/s, server CPU us per handshake and handshakes/s per core
#       (1e6 / that CPU)
#   (d) fan-out of 20 binary 20-byte messages at 5/s to --fanout-conns wss
#       subscribers (the publisher over https): median time from a publish
#       to its last delivery, server CPU us per delivery
# --reps times each, servers alternating (and their order); the tables give
# medians, ratios to ringws-tls and to the uWebSockets figures.  The test
# certificate is ECDSA P-256 (--cert rsa: RSA 2048), self-signed, made at
# each run; the tables say which, and what TLS the runs negotiated.
#
# Usage: bench/tls.sh [--quick] [--reps N] [--duration S] [--idle-conns N]
#                     [--fanout-conns N] [--cert ecdsa|rsa] [--out FILE]
#   default: 3 reps, 5 s runs, 15000 idle and 10000 fan-out connections
#   (about 20 minutes); --quick: 1 rep, 1 s runs, 2000 and 1000 (about 2).
#   --out also writes the markdown tables to FILE.
# Builds what it needs (a release meson tree in build-bench/, the two
# libwebsockets peers) and installs nginx and libwebsockets-dev when
# missing.  Every process it starts is stopped by its PID; ports are chosen
# at run time; every run is bounded in time.  Per-run records are kept in
# build-bench/tls-results.jsonl.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
REPS=3
DURATION=5
IDLE_CONNS=15000
FANOUT_CONNS=10000
CERT=ecdsa
MESSAGES=20
RATE=5
CYCLE_CONNS=32

bench_quick() { REPS=1; DURATION=1; IDLE_CONNS=2000; FANOUT_CONNS=1000; }
bench_options --duration=DURATION --idle-conns=IDLE_CONNS --fanout-conns=FANOUT_CONNS \
    --cert=CERT -- "$@"
bench_positive "--idle-conns and --fanout-conns take positive integers" "$IDLE_CONNS" \
    "$FANOUT_CONNS"
case $CERT in ecdsa|rsa) ;; *) say "--cert takes ecdsa or rsa"; exit 2 ;; esac
bench_begin
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
bench_prepare lws_echo "${missing[@]}"
bench_peer lws_fanout
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$ROOT/bench/tls-setup.sh" cert "$TMP/cert" "$CERT"
TLS_ARGS=(--tls-cert "$TMP/cert/cert.pem" --tls-key "$TMP/cert/key.pem")

SERVERS=(ringws-tls libwebsockets nginx+ringws)
if ! "$BUILD/ringws" --help 2>&1 | grep -q -- --tls-cert; then
    say "ringws-tls: SKIPPED: this ringws has no --tls-cert yet; the other servers are measured"
    SERVERS=(libwebsockets nginx+ringws)
fi

# ---- servers ------------------------------------------------------------------

# nginx_pids MASTER WORKERS: MASTER and its WORKERS workers (once forked),
# comma-separated.
nginx_pids() {
    local master=$1 workers=$2 kids _
    [ "$workers" -gt 1 ] || { echo "$master"; return 0; }
    for _ in $(seq 50); do
        kids=$(ps -o pid= --ppid "$master" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
        if [ "$(echo "$kids" | tr ',' '\n' | grep -c .)" -eq "$workers" ]; then
            echo "$master,$kids"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# start_nginx BACKEND_PORT CONNS: nginx in front of the plain ringws on
# BACKEND_PORT, with enough processes for CONNS connections (two
# descriptors each, 20000 a process).  Sets NGINX_MASTER, NGINX_WORKERS,
# SRV_PORT and SRV_PIDS (nginx's processes; the caller adds the backend).
start_nginx() {
    local backend=$1 conns=$2 dir
    NGINX_WORKERS=$((1 + 2 * conns / 16000))
    dir=$(mktemp -d "$TMP/nginx.XXXX")
    SRV_PORT=$(bench_free_port)
    "$ROOT/bench/tls-setup.sh" nginx-conf "$dir" "$SRV_PORT" "$backend" \
        "$TMP/cert/cert.pem" "$TMP/cert/key.pem" "$NGINX_WORKERS"
    taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$dir/out" 2>&1 &
    NGINX_MASTER=$!
    bench_track "$NGINX_MASTER"
    SRV_LOG=$dir/error.log
    bench_wait "$NGINX_MASTER" bench_accepts "$SRV_PORT" &&
        SRV_PIDS=$(nginx_pids "$NGINX_MASTER" "$NGINX_WORKERS")
}

# start_server SERVER ROLE CONNS: a fresh server for ROLE (echo: idle,
# echo and connect; fanout) that will hold CONNS connections.  Sets
# SRV_BASE (ws[s]://127.0.0.1:PORT), SRV_PIDS (comma-separated: what is
# measured), SRV_STOP (the PIDs to stop) and SRV_LOG; 1 when it did not
# start (what did is still stopped at exit).
start_server() {
    local server=$1 role=$2 conns=$3 peer=lws_echo
    [ "$role" = echo ] || peer=lws_fanout
    SRV_LOG=$TMP/server.err
    SRV_PIDS='' SRV_STOP='' NGINX_WORKERS=''
    case $server in
    ringws-tls)
        bench_server "$TMP/server" "$BUILD/ringws" --port 0 --workers 1 "${TLS_ARGS[@]}" || return 1
        SRV_BASE=wss://127.0.0.1:$BENCH_PORT SRV_PIDS=$BENCH_PID SRV_STOP=$BENCH_PID ;;
    libwebsockets)
        bench_server "$TMP/server" "$BUILD/$peer" --port 0 "${TLS_ARGS[@]}" || return 1
        SRV_BASE=wss://127.0.0.1:$BENCH_PORT SRV_PIDS=$BENCH_PID SRV_STOP=$BENCH_PID ;;
    ringws)
        bench_server "$TMP/server" "$BUILD/ringws" --port 0 --workers 1 || return 1
        SRV_BASE=ws://127.0.0.1:$BENCH_PORT SRV_PIDS=$BENCH_PID SRV_STOP=$BENCH_PID ;;
    nginx+ringws)
        bench_server "$TMP/server" "$BUILD/ringws" --port 0 --workers 1 || return 1
        SRV_STOP=$BENCH_PID
        start_nginx "$BENCH_PORT" "$conns" || return 1
        SRV_BASE=wss://127.0.0.1:$SRV_PORT SRV_PIDS=$SRV_PIDS,$BENCH_PID
        SRV_STOP="$NGINX_MASTER $SRV_STOP" ;;
    esac
}

# stop_server: nginx's master and the servers first, then any nginx
# worker left (stopping a worker before its master would have it
# replaced).
stop_server() {
    local pid left=()
    # shellcheck disable=SC2086
    bench_stop $SRV_STOP
    for pid in ${SRV_PIDS//,/ }; do
        ! kill -0 "$pid" 2>/dev/null || left+=("$pid")
    done
    [ ${#left[@]} -eq 0 ] || bench_stop "${left[@]}"
}

# ---- runs ---------------------------------------------------------------------

# record MEASURE SERVER REP RC [JSON]: one line of results.
record() {
    local json=${5:-}
    [ -n "$json" ] || json='{}'
    printf '{"measure": "%s", "server": "%s", "rep": %s, "rc": %s, "nginx_workers": "%s", "load1": %s, "r": %s}\n' \
        "$1" "$2" "$3" "$4" "${NGINX_WORKERS:-}" "$(cut -d' ' -f1 /proc/loadavg)" "$json" \
        >>"$TMP/results.jsonl"
}

# all_alive: whether every process of the server still runs.
all_alive() {
    local pid
    for pid in ${SRV_PIDS//,/ }; do
        kill -0 "$pid" 2>/dev/null || return 1
    done
}

# bench_run MEASURE SERVER REP LIMIT MODE PATH ARGS...: one ringws-bench
# run against the server started, bounded by LIMIT seconds, recorded.
bench_run() {
    local measure=$1 server=$2 rep=$3 limit=$4 mode=$5 path=$6 rc=0 json
    shift 6
    if ! all_alive; then
        say "SERVER PROBLEM: $server is gone before $measure, rep $rep; its last log lines:"
        tail -n 20 "$SRV_LOG" >&2
        FAILED=1
        record "$measure" "$server" "$rep" -1
        return 0
    fi
    json=$(timeout "$limit" taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" "$mode" \
        --url "$SRV_BASE$path" --server-pid "$SRV_PIDS" --json "$@" 2>"$TMP/bench.err") || rc=$?
    bench_check_rc $rc "$server, $measure, rep $rep"
    record "$measure" "$server" "$rep" "$rc" "$json"
}

# failed_start SERVER REP MEASURE...: a server that did not start.
failed_start() {
    local server=$1 rep=$2 m
    shift 2
    say "SERVER PROBLEM: $server did not start; its last log lines:"
    tail -n 20 "$SRV_LOG" >&2
    FAILED=1
    for m in "$@"; do
        record "$m" "$server" "$rep" -1
    done
}

# The three set-ups of one server in one rep.
run_server() {
    local server=$1 rep=$2 open_s=$((10 + IDLE_CONNS * 3 / 1000)) k
    if [ "$server" != ringws ]; then
        if start_server "$server" echo "$IDLE_CONNS"; then
            bench_run idle "$server" "$rep" $((open_s + 40)) idle /echo \
                --conns "$IDLE_CONNS" --duration 2 --timeout 10
        else
            failed_start "$server" "$rep" idle
        fi
        stop_server
        if start_server "$server" echo 100; then
            for k in 1 8; do
                bench_run "echo$k" "$server" "$rep" $((DURATION + 40)) echo /echo \
                    --conns 100 --inflight $k --size 20 --duration "$DURATION" --timeout 5
            done
            bench_run full "$server" "$rep" $((DURATION + 40)) connect /echo \
                --conns $CYCLE_CONNS --echo --size 20 --duration "$DURATION" --timeout 5
            bench_run resumed "$server" "$rep" $((DURATION + 40)) connect /echo \
                --conns $CYCLE_CONNS --echo --size 20 --duration "$DURATION" --timeout 5 --resume
        else
            failed_start "$server" "$rep" echo1 echo8 full resumed
        fi
        stop_server
    fi
    if start_server "$server" fanout "$FANOUT_CONNS"; then
        bench_run fanout "$server" "$rep" $((90 + FANOUT_CONNS * 3 / 1000)) fanout /ws \
            --conns "$FANOUT_CONNS" --messages $MESSAGES --rate $RATE --size 20
    else
        failed_start "$server" "$rep" fanout
    fi
    stop_server
}

say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy above ~1)"
say "servers: ${SERVERS[*]} and plain ringws (fan-out); $REPS reps, ${DURATION}s runs," \
    "$IDLE_CONNS idle and $FANOUT_CONNS fan-out connections, $CERT certificate"
START=$(date +%s)
: >"$TMP/results.jsonl"
ORDER=("${SERVERS[@]}" ringws)
for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) -eq 1 ]; then
        for server in "${ORDER[@]}"; do run_server "$server" "$rep"; done
    else
        for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do run_server "${ORDER[$i]}" "$rep"; done
    fi
    say "rep $rep/$REPS done ($(($(date +%s) - START))s)"
done
cp "$TMP/results.jsonl" "$BUILD/tls-results.jsonl"

PYTHONPATH=$ROOT/bench python3 - "$TMP/results.jsonl" "$REPS" "$DURATION" "$IDLE_CONNS" "$FANOUT_CONNS" "$CERT" \
    "$MESSAGES" "$RATE" "$CYCLE_CONNS" "${SERVERS[*]}" >"$TMP/tables.md" <<'EOF'
import sys
from report import read_runs, figures, failed, med, fmt, ratio
rows = read_runs(sys.argv[1])
reps, dur, idle_n, fan_n, cert, messages, rate, cycle = sys.argv[2:10]
servers = sys.argv[10].split()
# uWebSockets over TLS (uWS::SSLApp, OpenSSL 3.0, TLS 1.3 AES-256-GCM, one
# thread pinned to one core, client on the other, 20-byte messages), as
# issue 11 gives them for this machine kind.
UWS = {"idle_bytes": 31900, "echo1": 23.3, "echo8": 2.93, "full": 938, "resumed": 674,
       "fanout_ms": 251}

def vals(measure, server, key):
    return figures(rows, key, measure=measure, server=server)

def fails(measure, server):
    return failed(rows, measure=measure, server=server)

def workers(measure, server):
    w = {r["nginx_workers"] for r in rows if r["measure"] == measure and r["server"] == server}
    return "/".join(sorted(x for x in w if x))

def label(measure, server):
    w = workers(measure, server)
    return f"{server} ({w} nginx worker{'s' if w != '1' else ''})" if w else server

tls = sorted({r["r"]["tls"] for r in rows if r["r"].get("tls")})
print(f"TLS cost, medians of {reps} runs per server; certificate: {cert.upper()} "
      f"({'P-256' if cert == 'ecdsa' else '2048 bits'}, self-signed); negotiated: "
      f"{'; '.join(tls) if tls else '-'}.  Servers on one core, the load generator on the "
      "other; nginx+ringws counts nginx's processes and the ringws behind it together.  "
      "Reference: uWebSockets over TLS as issue 11 gives it.")
if "ringws-tls" not in servers:
    print("\nringws-tls was SKIPPED: the ringws built has no --tls-cert yet.")

def ref(server, measure, key):
    return med(vals(measure, server, key))

print(f"\n(a) Server memory per idle wss connection, {int(idle_n):,} connections held 2 s "
      "(fresh server each run):\n")
print("| server | bytes per connection | ringws-tls / this | this / uWebSockets (31.9 KB) "
      "| failed runs |")
print("|---|---:|---:|---:|---:|")
base = ref("ringws-tls", "idle", "server_bytes_per_conn")
for s in servers:
    v = ref(s, "idle", "server_bytes_per_conn")
    print(f"| {label('idle', s)} | {fmt(v)} | {ratio(base, v)} | {ratio(v, UWS['idle_bytes'])} | "
          f"{fails('idle', s)} |")

print(f"\n(b) Echo over TLS, 100 connections, 20-byte binary messages, {dur} s runs "
      "(CPU: the server's, us per message):\n")
print("| server | in flight | CPU us/msg | ringws-tls / this | this / uWebSockets | msgs/s "
      "| p99 us | generator CPU % | failed runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in ("1", "8"):
    m = "echo" + k
    base = ref("ringws-tls", m, "server_cpu_us_per_msg")
    for s in servers:
        v = ref(s, m, "server_cpu_us_per_msg")
        print(f"| {label(m, s)} | {k} | {fmt(v, 2)} | {ratio(base, v)} | {ratio(v, UWS[m])} | "
              f"{fmt(ref(s, m, 'msgs_per_s'))} | {fmt(ref(s, m, 'latency_us_p99'))} | "
              f"{fmt(ref(s, m, 'client_cpu_pct'))} | {fails(m, s)} |")

print(f"\n(c) TLS connect cycles (connect, handshake, upgrade, one 20-byte echo, close), "
      f"{cycle} at a time, {dur} s runs; resumed: session tickets (--resume).  A full "
      "handshake costs the client about as much as the server, so near 100 % generator CPU "
      "the generator set handshakes/s; per core (1e6 / the server's CPU us per handshake) is "
      "the server's own ceiling:\n")
print("| server | handshakes | resumed % | handshakes/s | CPU us/handshake | ringws-tls / this "
      "| this / uWebSockets | handshakes/s per core | generator CPU % | failed runs |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in ("full", "resumed"):
    base = ref("ringws-tls", m, "server_cpu_us_per_handshake")
    for s in servers:
        v = ref(s, m, "server_cpu_us_per_handshake")
        full, res = ref(s, m, "tls_handshakes_full"), ref(s, m, "tls_handshakes_resumed")
        pct = 100 * res / (full + res) if full is not None and res is not None and full + res else None
        print(f"| {label(m, s)} | {m} | {fmt(pct, 1)} | {fmt(ref(s, m, 'handshakes_per_s'))} | "
              f"{fmt(v)} | {ratio(base, v)} | {ratio(v, UWS[m])} | "
              f"{fmt(1e6 / v if v else None)} | {fmt(ref(s, m, 'client_cpu_pct'))} | "
              f"{fails(m, s)} |")

print(f"\n(d) Fan-out of {messages} binary 20-byte messages at {rate}/s to {int(fan_n):,} "
      "subscribers (fresh server each run; over wss the publisher posts over https):\n")
print("| server | last delivery p50 ms | ringws-tls / this | this / uWebSockets (251 ms) "
      "| CPU us/delivery | ringws-tls / this | delivered of expected | failed runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
base_t = ref("ringws-tls", "fanout", "last_delivery_us_p50")
base_c = ref("ringws-tls", "fanout", "server_cpu_us_per_delivery")
for s in servers + ["ringws"]:
    t = ref(s, "fanout", "last_delivery_us_p50")
    c = ref(s, "fanout", "server_cpu_us_per_delivery")
    name = label("fanout", s) if s != "ringws" else "ringws (plain ws://)"
    print(f"| {name} | {fmt(t / 1e3 if t else None, 1)} | {ratio(base_t, t)} | "
          f"{ratio(t / 1e3 if t else None, UWS['fanout_ms'])} | {fmt(c, 3)} | {ratio(base_c, c)} | "
          f"{fmt(ref(s, 'fanout', 'delivered'))} of {int(fan_n) * int(messages):,} | "
          f"{fails('fanout', s)} |")
loads = [r["load1"] for r in rows]
print(f"\nLoad average at the start of the runs: median {fmt(med(loads), 2)}, "
      f"max {fmt(max(loads) if loads else None, 2)}.")
EOF
bench_finish "$TMP/tables.md"
