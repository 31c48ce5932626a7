#!/usr/bin/env bash
# callgrind.sh - user-space instructions per echoed message and per fan-out
# delivery, counted by callgrind: repeatable on a noisy machine without
# hardware counters, where timings of a few percent are lost in the noise.
#
# Usage: bench/callgrind.sh [--build DIR] [--messages N] [--subscribers S]
#                           [--keep DIR]
#
# The server (DIR/ringws, default build-bench, built here as a release tree
# when absent) runs under callgrind with one worker.  Each figure is the
# difference between two runs of ringws-bench, one of N and one of 2N
# messages (publishes), each followed by a dump of the counters; dividing
# the difference by N cancels handshakes and closes; a first run warms the
# server up.  Prints one
# line per figure: echo binary and text (20 bytes, 100 connections,
# inflight 8) and fan-out (S subscribers, 16-byte messages).  --keep
# leaves the two counted dumps of each figure in DIR (echo-binary.1,
# echo-binary.2, ...) for callgrind_annotate: per-function counts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-bench
N=20000
SUBS=1000
KEEP=
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --messages) N=$2; shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    --keep) mkdir -p "$2" && KEEP=$(cd "$2" && pwd); shift 2 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
    esac
done

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" ringws tools/ringws-bench >/dev/null

TMP=$(mktemp -d)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# Starts the server under callgrind; sets SERVER and PORT.
start_server() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
        "$BUILD/ringws" --port 0 --workers 1 "$@" >"$TMP/server.err" 2>&1 &
    SERVER=$!
    for _ in $(seq 300); do
        PORT=$(sed -n 's/.*ringws listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$TMP/server.err")
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "callgrind.sh: the server did not start" >&2
    cat "$TMP/server.err" >&2
    exit 1
}

# Under valgrind the server does not see SIGTERM: callgrind ends it.
stop_server() {
    callgrind_control -k "$SERVER" >/dev/null 2>&1 || kill -9 "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    rm -f "$TMP"/cg.*
}

# The instructions counted since the previous dump; with --keep, the dump
# is kept as KEEP/NAME when a name is given.
dump_total() {
    local before after last
    before=$(ls "$TMP"/cg.* 2>/dev/null | wc -l)
    callgrind_control -d "$SERVER" >/dev/null 2>&1
    for _ in $(seq 100); do
        after=$(ls "$TMP"/cg.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    # shellcheck disable=SC2012
    last=$(ls -t "$TMP"/cg.* | head -1)
    if [ -n "$KEEP" ] && [ -n "${1:-}" ]; then
        cp "$last" "$KEEP/$1"
    fi
    callgrind_annotate "$last" 2>/dev/null |
        sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

# per_unit LABEL NAME COMMAND...: runs the command once to warm the server
# up (its pools and caches fill once), then with N and with 2N (the
# command's last argument is the count); prints instructions per unit and
# keeps the two dumps as NAME.1 and NAME.2.
per_unit() {
    local label=$1 name=$2 a b
    shift 2
    "$@" "$N" >/dev/null 2>&1
    dump_total >/dev/null
    "$@" "$N" >/dev/null 2>&1
    a=$(dump_total "$name.1")
    "$@" $((2 * N)) >/dev/null 2>&1
    b=$(dump_total "$name.2")
    awk -v l="$label" -v a="$a" -v b="$b" -v n="$N" \
        'BEGIN { printf "%-28s %8.1f instructions (%d and %d in all)\n", l, (b - a) / n, a, b }'
}

BENCH=$BUILD/tools/ringws-bench
start_server
per_unit "echo binary, per message" echo-binary "$BENCH" echo --url "ws://127.0.0.1:$PORT/echo" \
    --conns 100 --inflight 8 --timeout 120 --messages
per_unit "echo text, per message" echo-text "$BENCH" echo --url "ws://127.0.0.1:$PORT/echo" \
    --conns 100 --inflight 8 --text --timeout 120 --messages
stop_server

start_server
N_ECHO=$N
N=$((N_ECHO / SUBS > 10 ? N_ECHO / SUBS : 10))
per_unit "fan-out, per publish" fanout "$BENCH" fanout \
    --url "ws://127.0.0.1:$PORT/ws?topics=bench" --conns "$SUBS" --rate 1000 --timeout 120 \
    --messages
stop_server
echo "(fan-out: $SUBS subscribers; divide by $SUBS for a delivery)"
