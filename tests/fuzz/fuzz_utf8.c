/* fuzz_utf8.c - differential target: the incremental UTF-8 validator
 * against the plain reference in fuzz_common.h.
 *
 * Why it exists: utf8.c is a table-driven automaton with a word-at-a-time
 * ASCII skip, and utf8.h promises the same verdict however the input is cut
 * and INVALID at the very first byte that no continuation could save.  Both
 * promises are checked against a reference that shares no code with it:
 * byte by byte (which pins the exact failing byte), in random cuts (which
 * puts the ASCII skip at every position of a word and every cut inside a
 * code point), and one-shot at several alignments. */
#include "fuzz_common.h"
#include "utf8.h"

/* What the validator must say after the first `len` bytes, given the
 * reference's judgement of the whole input. */
static enum utf8_result expected(enum fuzz_utf8_verdict whole, size_t bad,
                                 const uint8_t *after, size_t len)
{
    if (len == 0)
        return UTF8_VALID;
    if (whole == FUZZ_UTF8_INVALID && len > bad)
        return UTF8_INVALID;
    return after[len - 1] == FUZZ_UTF8_VALID ? UTF8_VALID : UTF8_PARTIAL;
}

/* utf8.h documents the state numbers; the frame decoder keeps the struct. */
static void check_state(const struct utf8_state *s, enum utf8_result r)
{
    FUZZ_CHECK((s->state == 0) == (r == UTF8_VALID), "state %u for result %d",
               s->state, r);
    FUZZ_CHECK((s->state == 1) == (r == UTF8_INVALID), "state %u for result %d",
               s->state, r);
}

/* One byte per call, each from a 1-byte heap block, so the result after
 * every byte is compared and nothing past that byte can be read. */
static void check_bytewise(const uint8_t *p, size_t n, enum fuzz_utf8_verdict whole,
                           size_t bad, const uint8_t *after)
{
    struct utf8_state s;
    uint8_t *one = malloc(1);

    FUZZ_CHECK(one != NULL, "out of memory");
    utf8_init(&s);
    for (size_t i = 0; i < n; i++) {
        *one = p[i];
        enum utf8_result r = utf8_feed(&s, one, 1);
        enum utf8_result want = expected(whole, bad, after, i + 1);

        FUZZ_CHECK(r == want, "byte %zu (0x%02x): got %d, reference %d", i, p[i],
                   r, want);
        check_state(&s, r);
    }
    free(one);
}

/* Random cuts of a copy, each cut the only readable part of the copy,
 * with empty feeds mixed in that must change nothing. */
static void check_cuts(const uint8_t *p, size_t n, enum fuzz_utf8_verdict whole,
                       size_t bad, const uint8_t *after, struct fuzz_rng *rng)
{
    struct utf8_state s;
    uint8_t *copy = fuzz_dup(p, n);
    size_t off = 0;

    utf8_init(&s);
    while (off < n) {
        size_t cut = fuzz_cut(rng);

        if (cut > n - off)
            cut = n - off;
        fuzz_window(copy, n, off, off + cut);
        enum utf8_result r = utf8_feed(&s, copy + off, cut);
        fuzz_window_clear(copy, n);
        off += cut;

        enum utf8_result want = expected(whole, bad, after, off);
        FUZZ_CHECK(r == want, "cut ending at %zu: got %d, reference %d", off, r, want);
        check_state(&s, r);
        if (fuzz_next(rng) % 4 == 0)
            FUZZ_CHECK(utf8_feed(&s, copy + off, 0) == r, "empty feed at %zu", off);
    }
    free(copy);
}

/* utf8_valid on every suffix that starts within the first word: the ASCII
 * skip then meets the input at each alignment. */
static void check_oneshot(const uint8_t *p, size_t n, uint8_t *after)
{
    uint8_t *copy = fuzz_dup(p, n);

    for (size_t k = 0; k <= n && k < 8; k++) {
        size_t bad = 0;
        bool want = fuzz_utf8_ref(p + k, n - k, &bad, after) == FUZZ_UTF8_VALID;

        FUZZ_CHECK(utf8_valid(copy + k, n - k) == want,
                   "utf8_valid from offset %zu: reference says %d", k, want);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *after = malloc(size ? size : 1);
    size_t bad = 0;
    enum fuzz_utf8_verdict whole;
    struct fuzz_rng rng = {fuzz_hash(data, size, 0)};

    FUZZ_CHECK(after != NULL, "out of memory");
    whole = fuzz_utf8_ref(data, size, &bad, after);

    check_bytewise(data, size, whole, bad, after);
    for (int round = 0; round < 3; round++)
        check_cuts(data, size, whole, bad, after, &rng);
    check_oneshot(data, size, after);
    free(after);
    return 0;
}
