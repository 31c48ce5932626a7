#!/usr/bin/env bash
# compare.sh - ringws next to libwebsockets (WebSocket echo) and nginx (HTTP
# GET /healthz) on this machine, in one run.
#
# Why it exists: a figure alone says little; the same load against an
# established server on the same machine, at the same moment, says how ringws
# stands.  Servers run pinned to CPU 0, load generators to CPU 1.  Each
# setting is run --reps times, alternating the servers (and their order) so
# that drift in the machine's load hits both alike; the table shows medians,
# the server's CPU time per message (utime + stime from /proc/PID/stat) and
# the ringws/other ratios.  Three columns say how far to trust a row:
# "generator CPU %" near 100 means the load generator, not the server, set
# the rate; "other load %" is the CPU time taken during the runs by
# processes that are neither the server nor the generator, and "steal %" the
# time the hypervisor gave to other guests (both in % of one CPU, roughly):
# when they are not near 0 the rates are noisy (the CPU time per message
# much less so).
#
# Usage: bench/compare.sh [--quick] [--reps N] [--duration S] [--out FILE]
#   default: 5 reps of 5 s per setting (about 5 minutes); --quick: 1 s runs
#   (about 1 minute).  --out also writes the markdown tables to FILE.
# Builds what it needs: a release meson tree in build-bench/ (ringws and
# ringws-bench) and the libwebsockets peer (gcc, outside meson).  Installs
# wrk and nginx with apt-get when missing.  Every process it starts is
# stopped by PID; ports are chosen at run time; every run is time-bounded.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
DURATION=5

bench_quick() { DURATION=1; }
bench_options --duration=DURATION -- "$@"
bench_begin

# ---- servers --------------------------------------------------------------

start_ringws() {
    bench_server "$TMP/ringws" "$BUILD/ringws" --bind 127.0.0.1 --port 0 --workers 1 || {
        say "ringws did not start:"; cat "$TMP/ringws.err" >&2; exit 1; }
    RINGWS_PID=$BENCH_PID
    RINGWS_PORT=$BENCH_PORT
}

start_lws() {
    bench_server "$TMP/lws" "$BUILD/lws_echo" --port 0 || {
        say "lws_echo did not start:"; cat "$TMP/lws.err" >&2; exit 1; }
    LWS_PID=$BENCH_PID
    LWS_PORT=$BENCH_PORT
}

start_nginx() {
    local nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$TMP/nginx"
    NGINX_PORT=$(bench_free_port)
    cat >"$TMP/nginx/nginx.conf" <<EOF
# One process, like ringws --workers 1; no logs, no disk.
worker_processes 1;
master_process off;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /healthz { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
    taskset -c "$SERVER_CPU" "$nginx" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/error.log" >"$TMP/nginx.out" 2>&1 &
    NGINX_PID=$!
    bench_track "$NGINX_PID"
    bench_wait "$NGINX_PID" bench_accepts "$NGINX_PORT" || {
        say "nginx did not start:"; cat "$TMP/nginx.out" "$TMP/nginx/error.log" >&2; exit 1; }
}

# ---- measurements ---------------------------------------------------------

declare -A DEAD=()

# Reports a server that died (once, with the end of its log); later runs of
# it are recorded as failed without running.
check_alive() {
    local name=$1 pid=$2 log=$3 rc
    kill -0 "$pid" 2>/dev/null && return 0
    if [ -z "${DEAD[$name]:-}" ]; then
        wait "$pid" 2>/dev/null && rc=0 || rc=$?
        say "SERVER PROBLEM: $name (pid $pid) is gone (exit status $rc); its last log lines:"
        tail -n 20 "$log" >&2
        DEAD[$name]=1
        FAILED=1
    fi
    return 1
}

# record_skipped KIND SERVER LABEL REP
record_skipped() {
    printf '{"kind": "%s", "server": "%s", "label": "%s", "rep": %s, "rc": -1, "busy_s": 0, "steal_s": 0, "r": {}}\n' \
        "$1" "$2" "$3" "$4" >>"$TMP/results.jsonl"
}

# echo_run SERVER PID PORT LOG REP LABEL ARGS...
echo_run() {
    local server=$1 pid=$2 port=$3 log=$4 rep=$5 label=$6
    shift 6
    local b0 b1 s0 s1 rc=0 json
    check_alive "$server" "$pid" "$log" || { record_skipped echo "$server" "$label" "$rep"; return 0; }
    b0=$(bench_busy_ticks)
    s0=$(bench_steal_ticks)
    json=$(timeout $((DURATION + 40)) taskset -c "$CLIENT_CPU" "$BUILD/tools/ringws-bench" echo \
        --url "ws://127.0.0.1:$port/echo" --duration "$DURATION" --timeout 5 \
        --server-pid "$pid" --json "$@" 2>"$TMP/bench.err") || rc=$?
    b1=$(bench_busy_ticks)
    s1=$(bench_steal_ticks)
    bench_check_rc $rc "$server, $label, rep $rep"
    [ -n "$json" ] || json='{}'
    printf '{"kind": "echo", "server": "%s", "label": "%s", "rep": %s, "rc": %s, "busy_s": %s, "steal_s": %s, "r": %s}\n' \
        "$server" "$label" "$rep" "$rc" "$(bench_ticks_to_s "$b0" "$b1")" "$(bench_ticks_to_s "$s0" "$s1")" \
        "$json" >>"$TMP/results.jsonl"
    check_alive "$server" "$pid" "$log" || true
}

# http_run SERVER PID PORT LOG REP
http_run() {
    local server=$1 pid=$2 port=$3 log=$4 rep=$5
    local c0 c1 b0 b1 s0 s1 rc=0
    check_alive "$server" "$pid" "$log" ||
        { record_skipped http "$server" "GET /healthz, 100 conns" "$rep"; return 0; }
    c0=$(bench_cpu_ticks "$pid")
    b0=$(bench_busy_ticks)
    s0=$(bench_steal_ticks)
    timeout $((DURATION + 30)) /usr/bin/time -f "%U %S" -o "$TMP/wrk.time" \
        taskset -c "$CLIENT_CPU" wrk -t1 -c100 -d"${DURATION}s" --latency \
        "http://127.0.0.1:$port/healthz" >"$TMP/wrk.out" 2>&1 || rc=$?
    b1=$(bench_busy_ticks)
    s1=$(bench_steal_ticks)
    c1=$(bench_cpu_ticks "$pid" 2>/dev/null || echo "$c0")
    if [ $rc -ne 0 ] || grep -q "Socket errors\|Non-2xx" "$TMP/wrk.out"; then
        say "SERVER PROBLEM? $server, GET /healthz, rep $rep (wrk status $rc):"
        sed 's/^/    /' "$TMP/wrk.out" >&2
        FAILED=1
    fi
    python3 - "$TMP/wrk.out" "$TMP/wrk.time" "$server" "$rep" "$rc" "$c0" "$c1" "$b0" "$b1" \
        "$s0" "$s1" "$CLK_TCK" "$DURATION" >>"$TMP/results.jsonl" <<'EOF'
import json, re, sys
path, timing, server, rep, rc, c0, c1, b0, b1, s0, s1, hz, dur = sys.argv[1:]
text = open(path).read()
def grab(pattern, conv=float):
    m = re.search(pattern, text)
    return conv(m.group(1)) if m else 0
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = {p: 0.0 for p in ("50", "99")}
for p in lat:
    m = re.search(r"^\s+%s(?:\.000)?%%\s+([\d.]+)(us|ms|s)" % p, text, re.M)
    if m:
        lat[p] = us(m.group(1), m.group(2))
reqs = grab(r"(\d+) requests in", int)
cpu = (int(c1) - int(c0)) / float(hz)
try:
    wrk_cpu = sum(float(x) for x in open(timing).read().split()[-2:])
except (OSError, ValueError):
    wrk_cpu = 0.0
print(json.dumps({"kind": "http", "server": server, "label": "GET /healthz, 100 conns",
                  "rep": int(rep), "rc": int(rc), "busy_s": (int(b1) - int(b0)) / float(hz),
                  "steal_s": (int(s1) - int(s0)) / float(hz),
                  "r": {"msgs_per_s": grab(r"Requests/sec:\s+([\d.]+)"), "messages": reqs,
                        "server_cpu_s": cpu,
                        "server_cpu_us_per_msg": cpu * 1e6 / reqs if reqs else 0,
                        "latency_us_p50": lat["50"], "latency_us_p99": lat["99"],
                        "client_cpu_pct": wrk_cpu * 100 / float(dur), "duration_s": float(dur),
                        "errors": len(re.findall(r"Socket errors|Non-2xx", text))}}))
EOF
    check_alive "$server" "$pid" "$log" || true
}

# ---- the run --------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/bin/time ] || missing+=(time)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
bench_prepare lws_echo "${missing[@]}"
start_ringws
start_lws
start_nginx
say "ringws pid $RINGWS_PID port $RINGWS_PORT, lws_echo pid $LWS_PID port $LWS_PORT," \
    "nginx pid $NGINX_PID port $NGINX_PORT; $REPS reps of ${DURATION}s"

ECHO_SETTINGS=(
    "100 conns, inflight 1|--conns 100 --inflight 1 --size 20"
    "100 conns, inflight 8|--conns 100 --inflight 8 --size 20"
    "1000 conns, inflight 1|--conns 1000 --inflight 1 --size 20"
)

START=$(date +%s)
for rep in $(seq "$REPS"); do
    for setting in "${ECHO_SETTINGS[@]}"; do
        label=${setting%%|*}
        # shellcheck disable=SC2206
        args=(${setting#*|})
        if [ $((rep % 2)) -eq 1 ]; then
            echo_run ringws "$RINGWS_PID" "$RINGWS_PORT" "$TMP/ringws.err" "$rep" "$label" "${args[@]}"
            echo_run libwebsockets "$LWS_PID" "$LWS_PORT" "$TMP/lws.err" "$rep" "$label" "${args[@]}"
        else
            echo_run libwebsockets "$LWS_PID" "$LWS_PORT" "$TMP/lws.err" "$rep" "$label" "${args[@]}"
            echo_run ringws "$RINGWS_PID" "$RINGWS_PORT" "$TMP/ringws.err" "$rep" "$label" "${args[@]}"
        fi
    done
    if [ $((rep % 2)) -eq 1 ]; then
        http_run ringws "$RINGWS_PID" "$RINGWS_PORT" "$TMP/ringws.err" "$rep"
        http_run nginx "$NGINX_PID" "$NGINX_PORT" "$TMP/nginx/error.log" "$rep"
    else
        http_run nginx "$NGINX_PID" "$NGINX_PORT" "$TMP/nginx/error.log" "$rep"
        http_run ringws "$RINGWS_PID" "$RINGWS_PORT" "$TMP/ringws.err" "$rep"
    fi
    say "rep $rep/$REPS done ($(( $(date +%s) - START ))s)"
done
cp "$TMP/results.jsonl" "$BUILD/compare-results.jsonl"

PYTHONPATH=$ROOT/bench python3 - "$TMP/results.jsonl" "$DURATION" "$REPS" >"$TMP/tables.md" <<'EOF'
import sys
from report import read_runs, figures, failed, med, med_max, fmt, ratio
rows = read_runs(sys.argv[1])
dur, reps = sys.argv[2], sys.argv[3]

def pick(kind, server, label, key):
    return figures(rows, key, kind=kind, server=server, label=label)

def load(kind, label, key):
    # Per run, in % of one CPU: "other" is the busy time of all CPUs minus the
    # server's and the generator's; "steal" the hypervisor's.
    out = []
    for r in rows:
        if r["kind"] != kind or r["label"] != label or not r["r"]:
            continue
        d = r["r"].get("duration_s") or float(dur)
        if key == "steal":
            out.append(r.get("steal_s", 0) / d * 100)
            continue
        mine = r["r"].get("server_cpu_s", 0) + r["r"].get("client_cpu_pct", 0) / 100 * d
        out.append(max(0.0, (r["busy_s"] - mine) / d * 100))
    return med_max(out)

def fails(kind, server, label):
    return failed(rows, kind=kind, server=server, label=label)

def table(kind, other, labels, unit):
    print(f"| setting | ringws {unit}/s | {other} {unit}/s | ratio | ringws CPU us/{unit} | "
          f"{other} CPU us/{unit} | ratio | ringws p99 us | {other} p99 us | "
          f"generator CPU % (ringws / {other}) | failed runs | other load % (median / max) | "
          f"steal % (median / max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        a = med(pick(kind, "ringws", label, "msgs_per_s"))
        b = med(pick(kind, other, label, "msgs_per_s"))
        ca = med(pick(kind, "ringws", label, "server_cpu_us_per_msg"))
        cb = med(pick(kind, other, label, "server_cpu_us_per_msg"))
        la = med(pick(kind, "ringws", label, "latency_us_p99"))
        lb = med(pick(kind, other, label, "latency_us_p99"))
        ga = med(pick(kind, "ringws", label, "client_cpu_pct"))
        gb = med(pick(kind, other, label, "client_cpu_pct"))
        f = f"{fails(kind, 'ringws', label)} / {fails(kind, other, label)}"
        om, ox = load(kind, label, "other")
        sm, sx = load(kind, label, "steal")
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {fmt(ca, 2)} | {fmt(cb, 2)} | "
              f"{ratio(ca, cb)} | {fmt(la)} | {fmt(lb)} | {fmt(ga)} / {fmt(gb)} | {f} | "
              f"{fmt(om)} / {fmt(ox)} | {fmt(sm, 1)} / {fmt(sx, 1)} |")

labels = []
for r in rows:
    if r["kind"] == "echo" and r["label"] not in labels:
        labels.append(r["label"])
print(f"WebSocket echo, 20-byte binary messages, medians of {reps} runs of {dur} s "
      "(ratio = ringws / libwebsockets; for CPU us/msg lower is better):\n")
table("echo", "libwebsockets", labels, "msg")
print(f"\nHTTP GET /healthz with wrk -t1 -c100, medians of {reps} runs of {dur} s "
      "(ratio = ringws / nginx):\n")
table("http", "nginx", ["GET /healthz, 100 conns"], "req")
EOF
bench_finish "$TMP/tables.md"
