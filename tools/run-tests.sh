#!/bin/sh
# run-tests.sh - builds ringws twice (optimised with assertions, and with
# ASan+UBSan), runs the whole meson test suite in each, and prints one
# closing line "N passed, M failed" over both.  Exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."

configure() {
    dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
    fi
    ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { cat "$dir.ninja.log"; exit 1; }
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

echo "== fuzz (10 s per target)"
sh tools/fuzz.sh 10 || status=1

/usr/bin/python3 tools/test-summary.py build-test build-asan || status=1
exit $status
