# lib.sh - what the comparison scripts (bench/compare.sh, bench/fanout.sh,
# bench/tls.sh, bench/history.sh, bench/echo_deflate.sh) share; sourced by
# them, never run.
#
# Why it exists: both scripts take the same common options, build the same
# release tree and a libwebsockets peer, start servers pinned to one CPU and
# read the port from their "listening on ADDR:PORT" line, stop them by PID,
# read the kernel's tick counters and report failures alike.  Kept here
# once, so that the two cannot drift apart; each script keeps only its own
# settings, runs and table.
#
# It owns: ROOT, BUILD, REPS, OUT, SERVER_CPU, CLIENT_CPU, CLK_TCK, FAILED
# and TMP (a temporary folder removed at exit), and every server PID it
# was given (stopped at exit).  Functions are named bench_*, but for say.
#
# shellcheck shell=bash disable=SC2034  # its variables are the scripts'

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-bench
BENCH_NAME=${0##*/}
REPS=5
OUT=
SERVER_CPU=0
CLIENT_CPU=1
CLK_TCK=$(getconf CLK_TCK)
FAILED=0
TMP=
BENCH_PIDS=()

say() { echo "$BENCH_NAME: $*" >&2; }

# ---- options, temporary folder, clean-up ------------------------------------

# bench_options [--NAME=VAR...] -- ARGS...: the command line.  Every
# script takes --quick (which calls the script's bench_quick), --reps N,
# --out FILE and -h/--help (the script's opening comment, from its second
# line); each --NAME=VAR before the -- is an option of the script's own,
# whose value goes to VAR.  Later options override earlier ones.
bench_options() {
    local own=() spec var
    while [ "$1" != -- ]; do
        own+=("$1")
        shift
    done
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --quick) bench_quick ;;
        --reps) REPS=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | cut -c3-; exit 0 ;;
        *)
            var=
            for spec in "${own[@]}"; do
                [ "$1" != "${spec%%=*}" ] || var=${spec#*=}
            done
            [ -n "$var" ] || { say "unknown option $1"; exit 2; }
            printf -v "$var" %s "$2"
            shift ;;
        esac
        shift
    done
    bench_positive "--reps takes a positive integer" "$REPS"
}

# bench_positive MESSAGE VALUE...: exits (2), saying MESSAGE, unless every
# VALUE is a positive integer.
bench_positive() {
    local message=$1 v
    shift
    for v in "$@"; do
        case $v in ''|*[!0-9]*|0) say "$message"; exit 2 ;; esac
    done
}

# bench_alive PID...: whether any of the processes still runs.
bench_alive() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

# bench_stop PID...: asks each process to stop, gives them 5 s together,
# then kills what is left; every PID is reaped and forgotten.
bench_stop() {
    local pid keep=() _
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null || true
    for _ in $(seq 50); do
        bench_alive "$@" || break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        case " $* " in *" $pid "*) ;; *) keep+=("$pid") ;; esac
    done
    BENCH_PIDS=("${keep[@]}")
}

bench_cleanup() {
    bench_stop "${BENCH_PIDS[@]}"
    [ -z "$TMP" ] || rm -rf "$TMP"
}

# bench_begin: the temporary folder, and the clean-up at exit.
bench_begin() {
    TMP=$(mktemp -d "/tmp/ringws-${BENCH_NAME%.sh}.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# ---- prerequisites and builds -----------------------------------------------

# bench_peer PEER: builds bench/peers/PEER.c with gcc into BUILD/PEER.
bench_peer() {
    # shellcheck disable=SC2046
    gcc -O2 -o "$BUILD/$1" "$ROOT/bench/peers/$1.c" $(pkg-config --cflags --libs libwebsockets)
}

# bench_prepare PEER [PACKAGE...]: installs the packages named, and
# libwebsockets-dev for a PEER, when missing (as root, with apt-get); builds
# ringws and ringws-bench in a release meson tree in BUILD, and the peer
# (bench_peer) unless PEER is "".
bench_prepare() {
    local peer=$1
    shift
    local missing=("$@")
    [ -z "$peer" ] || pkg-config --exists libwebsockets || missing+=(libwebsockets-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            say "not root: install ${missing[*]} first"
            exit 1
        fi
        say "installing ${missing[*]}"
        apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    say "building (release) in $BUILD"
    if [ ! -f "$BUILD/build.ninja" ]; then
        meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
    elif ! meson introspect --buildoptions "$BUILD" | python3 -c \
        'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; sys.exit(o["buildtype"]!="release")'; then
        meson configure "$BUILD" --buildtype=release >/dev/null
    fi
    ninja -C "$BUILD" ringws tools/ringws-bench >/dev/null
    [ -z "$peer" ] || bench_peer "$peer"
}

# ---- servers ------------------------------------------------------------------

# bench_wait PID COMMAND...: runs COMMAND every 0.1 s, for up to 10 s,
# until it succeeds (0) or process PID is gone (1).
bench_wait() {
    local pid=$1 _
    shift
    for _ in $(seq 100); do
        "$@" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# bench_free_port: a port free on 127.0.0.1 now, for a server that cannot
# pick its own (nginx).
bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_accepts PORT: whether something accepts connections on 127.0.0.1:PORT.
bench_accepts() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)"
}

# bench_track PID: a server to stop at exit.
bench_track() { BENCH_PIDS+=("$1"); }

# bench_server LOG COMMAND...: starts COMMAND pinned to SERVER_CPU, with
# its output in LOG.out and LOG.err, and waits (up to 10 s) for its
# "listening on ADDR:PORT" line.  Sets BENCH_PID, and BENCH_PORT when it
# started (0); 1 when it did not (it is still stopped at exit).
bench_server() {
    local log=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$log.out" 2>"$log.err" &
    BENCH_PID=$!
    BENCH_PORT=
    bench_track "$BENCH_PID"
    bench_wait "$BENCH_PID" grep -q "listening on" "$log.out" || return 1
    BENCH_PORT=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log.out" | head -n1)
}

# ---- measurements and reports -------------------------------------------------

# Jiffies: a process's CPU time (utime + stime); every CPU's busy time
# (user+nice+system+irq+softirq); steal (the hypervisor ran someone else
# while this VM wanted to run).
bench_cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
bench_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
bench_steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }
# bench_ticks_to_s FROM TO: seconds between two tick counts.
bench_ticks_to_s() { awk "BEGIN { print ($2 - $1) / $CLK_TCK }"; }

# bench_check_rc RC WHAT: reports a ringws-bench run that failed (exit
# status RC, its stderr in TMP/bench.err); WHAT names the run.
bench_check_rc() {
    [ "$1" -eq 0 ] && return 0
    say "SERVER PROBLEM? $2: ringws-bench exit status $1"
    sed 's/^/    /' "$TMP/bench.err" | grep -v '^\s*\[' | tail -n 15 >&2
    FAILED=1
}

# bench_finish TABLE: prints the markdown TABLE (a file), copies it to OUT
# when asked, and exits 1 when a run failed.
bench_finish() {
    cat "$1"
    [ -z "$OUT" ] || cp "$1" "$OUT"
    if [ "$FAILED" -ne 0 ]; then
        say "some runs failed or a server misbehaved: see the SERVER PROBLEM lines above"
        exit 1
    fi
}
