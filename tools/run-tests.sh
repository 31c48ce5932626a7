#!/bin/sh
# run-tests.sh - builds ringws twice (optimised with assertions, and with
# ASan+UBSan) and runs the whole meson test suite in each; then builds a
# third tree under ThreadSanitizer and runs there the multi-threaded publish
# test and the integration suites whose bounds TSan does not upset.  Prints
# one closing line "N passed, M failed" over the three.  Exits non-zero on
# any failure.
set -u
cd "$(dirname "$0")/.."

configure() {
    dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
    fi
    ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { cat "$dir.ninja.log"; exit 1; }
}

# Configures a tree (once) and builds only the named targets in it.
configure_only() {
    dir=$1; shift
    targets=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
    fi
    ninja -C "$dir" $targets >"$dir.ninja.log" 2>&1 || { cat "$dir.ninja.log"; exit 1; }
}

configure build-test --buildtype=debugoptimized
configure build-asan --buildtype=debug -Djemalloc=false \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fno-sanitize-recover=undefined

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

status=0
for dir in build-test build-asan; do
    echo "== tests in $dir"
    meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
done

# ThreadSanitizer: the library's own threads, ringws_publish called from
# application threads, and the server under the suites that exercise
# cross-worker delivery, echo, HTTP, shutdown, the protocol, TLS (the
# SIGHUP thread reloading certificates that workers hand out), history (the
# sequencer under concurrent publishers and resumers), tokens (the
# same thread swapping the keys workers verify with), the metrics that
# sum every worker's counters (history also names the history ring's unit
# test, built here too) and the Redis engine (its topics' table shared by
# the workers, work handed between them; examples/ticker is one of its
# nodes, built here too; engine_handover publishes to it from a thread of
# its own).  Left out:
# the suites that bound the server's RSS (TSan's shadow memory inflates it)
# and the slow real-time ones (browser, timeouts).
configure_only build-tsan "ringws tests/test_pubsub_threads tests/test_history tests/test_engine_handover examples/ticker" --buildtype=debugoptimized \
    -Db_sanitize=thread -Djemalloc=false
echo "== tests in build-tsan (ThreadSanitizer)"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C build-tsan --no-rebuild --print-errorlogs --num-processes 2 \
    pubsub_threads pubsub history echo shutdown http frames conformance tls tokens metrics cluster engine_handover || status=1

echo "== fuzz (10 s per target)"
sh tools/fuzz.sh 10 || status=1

/usr/bin/python3 tools/test-summary.py build-test build-asan build-tsan || status=1
exit $status
