#!/bin/sh
# fuzz.sh - builds the libFuzzer targets of tests/fuzz/ and runs each for a
# bounded time: `tools/fuzz.sh [SECONDS_PER_TARGET]` (default 60).
#
# Why it exists: the parsers are pure modules, so each can be fuzzed alone,
# and a crash found once must stay a test forever.  For every target this
# first replays tests/fuzz/regressions/<target>/ (every input that ever broke
# it), then fuzzes from the seed corpus.  New inputs go to a scratch corpus
# under build-fuzz/ so the committed seeds stay few; a crashing input is
# copied into tests/fuzz/regressions/<target>/ to be committed with the fix.
# Prints one line per target and "fuzz: N passed, M failed"; exits non-zero
# on any failure, 77 when no clang with libFuzzer is available.
# FUZZ_TARGETS="frame utf8" runs only those (e.g. a long run on one parser).
set -u
cd "$(dirname "$0")/.." || exit 1

SECONDS_PER_TARGET=${1:-60}
OUT=build-fuzz
CC_FUZZ=${CC_FUZZ:-clang}
TARGETS=${FUZZ_TARGETS:-"http_parse handshake frame utf8 close pubsub tls_handshake tls_record proxy_proto token ws_ext engine deflate_short inflate_short"}
CFLAGS_FUZZ="-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Isrc -Iinclude
 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

case $SECONDS_PER_TARGET in
'' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

# The modules each target links: the pure ones, and for tls_handshake the
# server's certificates and policy (tls_context.c) with what it calls;
# handshake and the TLS ones need OpenSSL, token OpenSSL and jansson.
# pubsub_proto.c builds the envelope's frame head with frame.c's header
# writer, which brings the frame codec's own modules.
PUBSUB_PROTO="src/pubsub_proto.c src/frame.c src/utf8.c src/unmask.c"
modules() {
    case $1 in
    http_parse) echo "src/http_parse.c" ;;
    handshake) echo "src/handshake.c src/ws_ext.c src/http_parse.c" ;;
    frame | close) echo "src/frame.c src/utf8.c src/unmask.c" ;;
    utf8) echo "src/utf8.c" ;;
    pubsub) echo "$PUBSUB_PROTO" ;;
    proxy_proto) echo "src/proxy_proto.c" ;;
    tls_handshake) echo "src/tls_context.c src/tls_record.c src/log.c src/timer.c" ;;
    tls_record) echo "src/tls_record.c" ;;
    token) echo "src/token.c $PUBSUB_PROTO" ;;
    ws_ext) echo "src/ws_ext.c src/http_parse.c" ;;
    engine) echo "src/engine_proto.c $PUBSUB_PROTO" ;;
    deflate_short) echo "src/deflate_short.c" ;;
    inflate_short) echo "src/inflate_short.c" ;;
    esac
}

libs() {
    case $1 in
    handshake) echo "-lcrypto" ;;
    tls_handshake) echo "-lssl -lcrypto -lpthread" ;;
    tls_record) echo "-lssl -lcrypto" ;;
    token) echo "-lcrypto -ljansson" ;;
    deflate_short) echo "-lz" ;;
    inflate_short) echo "-lz -ldeflate" ;;
    esac
}

# Inputs a target's mutator is helped by; the HTTP words are long and
# exact, which random mutation rarely hits.
dict() {
    case $1 in
    http_parse | handshake) echo "-dict=tests/fuzz/http.dict" ;;
    esac
}

# Builds when the binary is missing or older than a source it uses.
build() {
    t=$1
    bin=$OUT/fuzz_$t
    srcs="tests/fuzz/fuzz_$t.c $(modules "$t")"
    stale=0
    [ -x "$bin" ] || stale=1
    for f in $srcs tests/fuzz/fuzz_common.h tests/unit/tls_pair.h src/*.h; do
        # shellcheck disable=SC3013 # dash and bash both have -nt
        [ "$f" -nt "$bin" ] && stale=1
    done
    [ $stale -eq 0 ] && return 0
    # shellcheck disable=SC2086,SC2046 # word lists on purpose
    $CC_FUZZ $CFLAGS_FUZZ -o "$bin" $srcs $(libs "$t") >"$OUT/logs/$t.build.log" 2>&1
}

# Keeps whatever libFuzzer saved as a failing input.
keep_artifacts() {
    t=$1
    kept=""
    for a in "$OUT/artifacts/$t"/crash-* "$OUT/artifacts/$t"/leak-* \
        "$OUT/artifacts/$t"/timeout-* "$OUT/artifacts/$t"/oom-*; do
        [ -f "$a" ] || continue
        mkdir -p "tests/fuzz/regressions/$t"
        cp "$a" "tests/fuzz/regressions/$t/"
        kept="$kept tests/fuzz/regressions/$t/$(basename "$a")"
    done
    echo "$kept"
}

# Replays every saved regression once; they must all pass.
replay() {
    t=$1
    dir=tests/fuzz/regressions/$t
    set -- "$dir"/*
    [ -f "$1" ] || { echo 0; return 0; }
    "./$OUT/fuzz_$t" -timeout=10 -rss_limit_mb=1024 "$@" \
        >"$OUT/logs/$t.replay.log" 2>&1 || return 1
    echo $#
}

# Fuzzes one target from its seeds into a fresh scratch corpus.
fuzz() {
    t=$1
    scratch=$OUT/corpus/$t
    rm -rf "$scratch" "$OUT/artifacts/$t"
    mkdir -p "$scratch" "$OUT/artifacts/$t"
    # shellcheck disable=SC2046 # dict() gives no word or one
    timeout $((SECONDS_PER_TARGET + 120)) "./$OUT/fuzz_$t" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t/" $(dict "$t") \
        "$scratch" "tests/fuzz/corpus/$t" >"$OUT/logs/$t.log" 2>&1
}

# libFuzzer's count of executed inputs and coverage, for the summary line.
stats() {
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -n 1)
    cov=$(sed -n 's/.*DONE *cov: \([0-9]*\).*/\1/p' "$1" | tail -n 1)
    echo "${runs:-?} runs, cov ${cov:-?}"
}

if ! printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }\n' |
    $CC_FUZZ -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
    echo "fuzz: skipped: $CC_FUZZ cannot build libFuzzer targets (needs clang and libclang-rt-dev)"
    exit 77
fi

mkdir -p "$OUT/logs" "$OUT/corpus" "$OUT/artifacts"
# Leaks are failures too: the parsers never allocate, so one would be a
# target's, but a target that leaks would hide nothing else.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
start=$(date +%s)
for t in $TARGETS; do
    t0=$(date +%s)
    if ! build "$t"; then
        echo "fuzz_$t: FAILED to build (see $OUT/logs/$t.build.log)"
        tail -n 20 "$OUT/logs/$t.build.log"
        failed=$((failed + 1))
        continue
    fi
    if ! replayed=$(replay "$t"); then
        echo "fuzz_$t: FAILED replaying tests/fuzz/regressions/$t/ (see $OUT/logs/$t.replay.log)"
        grep -E 'property broken|ERROR:|runtime error:|SUMMARY:|^Running:' \
            "$OUT/logs/$t.replay.log" | tail -n 6
        failed=$((failed + 1))
        continue
    fi
    if fuzz "$t"; then
        echo "fuzz_$t: ok ($(($(date +%s) - t0)) s, $(stats "$OUT/logs/$t.log"), regressions replayed: $replayed)"
        passed=$((passed + 1))
    else
        kept=$(keep_artifacts "$t")
        echo "fuzz_$t: FAILED after $(($(date +%s) - t0)) s; input kept as${kept:- (none saved)} (log: $OUT/logs/$t.log)"
        grep -E 'property broken|ERROR:|runtime error:|SUMMARY:' "$OUT/logs/$t.log" | head -n 6
        failed=$((failed + 1))
    fi
done
echo "fuzz: $(($(date +%s) - start)) s in all, $SECONDS_PER_TARGET s per target"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
