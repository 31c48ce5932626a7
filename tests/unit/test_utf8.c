/* test_utf8.c - the incremental UTF-8 validator against a plain reference.
 *
 * Why it exists: the validator's promise is exact: the same verdict however
 * the input is cut, and INVALID at the very first byte that no continuation
 * could save.  A reference written from the definition (decode, then ask
 * whether any valid code point still starts with the bytes seen) judges
 * classic hand-picked cases and many random, mostly-valid strings.  Inputs
 * also sit at the end of a page followed by an inaccessible one, so that a
 * word-at-a-time read past the end crashes instead of passing by luck. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guard.h"
#include "utf8.h"

#define NOT_BAD ((size_t)-1)

/* ---- reference ---------------------------------------------------------- */

/* Whether some scalar value in [min, U+10FFFF], not a surrogate, has the
 * bits `acc` followed by `rem` free 6-bit groups. */
static bool ref_completable(uint32_t acc, unsigned rem, uint32_t min)
{
    uint32_t lo = acc << (6 * rem);
    uint32_t hi = lo | ((1u << (6 * rem)) - 1);

    if (lo < min)
        lo = min;
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    if (lo > hi)
        return false;
    return !(lo >= 0xD800 && hi <= 0xDFFF);
}

/* Index of the first byte after which the input can no longer be completed
 * into valid UTF-8, or NOT_BAD; *partial tells whether the input then ends
 * inside a code point. */
static size_t ref_first_bad(const uint8_t *p, size_t n, bool *partial)
{
    size_t i = 0;

    *partial = false;
    while (i < n) {
        uint8_t b = p[i];
        unsigned need;
        uint32_t acc, min;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC0 && b < 0xE0) {
            need = 1, acc = b & 0x1F, min = 0x80;
        } else if (b >= 0xE0 && b < 0xF0) {
            need = 2, acc = b & 0x0F, min = 0x800;
        } else if (b >= 0xF0 && b < 0xF8) {
            need = 3, acc = b & 0x07, min = 0x10000;
        } else {
            return i; /* a continuation byte or F8..FF cannot lead */
        }
        for (unsigned k = 0;; k++) {
            if (!ref_completable(acc, need - k, min))
                return i + k;
            if (k == need)
                break;
            if (i + 1 + k >= n) {
                *partial = true;
                return NOT_BAD;
            }
            if ((p[i + 1 + k] & 0xC0) != 0x80)
                return i + 1 + k;
            acc = acc << 6 | (p[i + 1 + k] & 0x3F);
        }
        i += 1 + need;
    }
    return NOT_BAD;
}

static enum utf8_result ref_verdict(const uint8_t *p, size_t n)
{
    bool partial;

    if (ref_first_bad(p, n, &partial) != NOT_BAD)
        return UTF8_INVALID;
    return partial ? UTF8_PARTIAL : UTF8_VALID;
}

/* ---- drivers ------------------------------------------------------------ */

static enum utf8_result feed_whole(const uint8_t *p, size_t n)
{
    struct utf8_state s;

    utf8_init(&s);
    return utf8_feed(&s, p, n);
}

/* Feeds byte by byte; returns the index of the byte that first got
 * INVALID (NOT_BAD if none) and the final verdict in *end. */
static size_t feed_bytewise(const uint8_t *p, size_t n, enum utf8_result *end)
{
    struct utf8_state s;
    size_t bad = NOT_BAD;

    utf8_init(&s);
    *end = utf8_feed(&s, p, 0);
    for (size_t i = 0; i < n; i++) {
        *end = utf8_feed(&s, p + i, 1);
        if (*end == UTF8_INVALID && bad == NOT_BAD)
            bad = i;
    }
    return bad;
}

static enum utf8_result feed_split(const uint8_t *p, size_t n, size_t cut,
                                   enum utf8_result *first)
{
    struct utf8_state s;

    utf8_init(&s);
    *first = utf8_feed(&s, p, cut);
    return utf8_feed(&s, p + cut, n - cut);
}

/* ---- classic cases ------------------------------------------------------ */

struct kcase {
    const uint8_t *s;
    size_t len;
    size_t bad;    /* index of the first impossible byte, or NOT_BAD */
    bool partial;  /* valid so far but ends inside a code point */
};

#define OK(lit) {(const uint8_t *)(lit), sizeof(lit) - 1, NOT_BAD, false}
#define PART(lit) {(const uint8_t *)(lit), sizeof(lit) - 1, NOT_BAD, true}
#define BAD(lit, at) {(const uint8_t *)(lit), sizeof(lit) - 1, at, false}

static const struct kcase kcases[] = {
    OK(""),
    OK("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), /* kosme */
    /* first and last code points of each length */
    OK("\x00"), OK("\xc2\x80"), OK("\xe0\xa0\x80"), OK("\xf0\x90\x80\x80"),
    OK("\x7f"), OK("\xdf\xbf"), OK("\xef\xbf\xbf"), OK("\xf4\x8f\xbf\xbf"),
    /* around the surrogates; noncharacters are valid UTF-8 */
    OK("\xed\x9f\xbf"), OK("\xee\x80\x80"), OK("\xef\xbf\xbd"),
    OK("\xef\xbf\xbe"), OK("\xf0\x9f\xbf\xbf"), OK("\xf3\xbf\xbf\xbf"),
    OK("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"),
    /* five- and six-byte forms and code points past U+10FFFF */
    BAD("\xf8\x88\x80\x80\x80", 0), BAD("\xfc\x84\x80\x80\x80\x80", 0),
    BAD("\xf4\x90\x80\x80", 1), BAD("\xf5\x80\x80\x80", 0),
    BAD("\xf7\xbf\xbf\xbf", 0), BAD("\xfb\xbf\xbf\xbf\xbf", 0),
    BAD("\xfd\xbf\xbf\xbf\xbf\xbf", 0), BAD("\xfe", 0), BAD("\xff", 0),
    BAD("\xfe\xfe\xff\xff", 0),
    /* lone and stray continuation bytes */
    BAD("\x80", 0), BAD("\xbf", 0), BAD("\x80\xbf", 0),
    BAD("\x80\xbf\x80\xbf\x80\xbf\x80", 0), BAD("a\x80", 1),
    BAD("\xc2\x80\x80", 2), BAD("\xe0\xa0\x80\xbf", 3),
    BAD("abcdefgh\x9f", 8), BAD("abcdefghijklmnopq\xa0z", 17),
    /* lead bytes followed by something else */
    BAD("\xc2 ", 1), BAD("\xe1\x80 ", 2), BAD("\xf1\x80\x80 ", 3),
    BAD("\xc2\xc2\x80", 1), BAD("\xe1\xc2\x80", 1), BAD("\xf0\x90\xc2\x80", 2),
    BAD("\xc0 ", 0), BAD("\xe0\x7f", 1),
    /* truncated sequences at the end */
    PART("\xc2"), PART("\xe0"), PART("\xe0\xa0"), PART("\xed\x9f"),
    PART("\xf0"), PART("\xf0\x90"), PART("\xf0\x90\x80"), PART("\xf4\x8f\xbf"),
    PART("abc\xe2\x82"),
    /* overlongs: slash, the largest of each length, NUL */
    BAD("\xc0\xaf", 0), BAD("\xe0\x80\xaf", 1), BAD("\xf0\x80\x80\xaf", 1),
    BAD("\xf8\x80\x80\x80\xaf", 0), BAD("\xfc\x80\x80\x80\x80\xaf", 0),
    BAD("\xc1\xbf", 0), BAD("\xe0\x9f\xbf", 1), BAD("\xf0\x8f\xbf\xbf", 1),
    BAD("\xc0\x80", 0), BAD("\xe0\x80\x80", 1), BAD("\xf0\x80\x80\x80", 1),
    /* surrogates, single and paired */
    BAD("\xed\xa0\x80", 1), BAD("\xed\xad\xbf", 1), BAD("\xed\xae\x80", 1),
    BAD("\xed\xaf\xbf", 1), BAD("\xed\xb0\x80", 1), BAD("\xed\xbe\x80", 1),
    BAD("\xed\xbf\xbf", 1), BAD("\xed\xa0\x80\xed\xb0\x80", 1),
    BAD("\xed\xaf\xbf\xed\xbf\xbf", 1), BAD("ab\xed\xa0", 3),
};

static void test_classic(void)
{
    for (size_t c = 0; c < sizeof kcases / sizeof kcases[0]; c++) {
        const struct kcase *k = &kcases[c];
        enum utf8_result want = k->bad != NOT_BAD ? UTF8_INVALID
                                : k->partial      ? UTF8_PARTIAL
                                                  : UTF8_VALID;
        enum utf8_result end, first;
        const uint8_t *g = guard_place(k->s, k->len);
        bool partial;

        CHECKF(ref_first_bad(k->s, k->len, &partial) == k->bad &&
                   partial == k->partial,
               "reference disagrees on case %zu", c);
        CHECKF(feed_whole(k->s, k->len) == want, "case %zu whole", c);
        CHECKF(feed_whole(g, k->len) == want, "case %zu at page end", c);
        CHECKF(utf8_valid(g, k->len) == (want == UTF8_VALID), "case %zu", c);
        CHECKF(feed_bytewise(g, k->len, &end) == k->bad && end == want,
               "case %zu byte by byte", c);
        for (size_t cut = 0; cut <= k->len; cut++) {
            enum utf8_result mid = ref_verdict(k->s, cut);

            CHECKF(feed_split(g, k->len, cut, &first) == want && first == mid,
                   "case %zu split at %zu", c, cut);
        }
    }
}

/* ---- state behaviour ---------------------------------------------------- */

static void test_state(void)
{
    struct utf8_state s;

    utf8_init(&s);
    CHECK(utf8_feed(&s, NULL, 0) == UTF8_VALID);
    CHECK(utf8_feed(&s, (const uint8_t *)"\xf0\x9f", 2) == UTF8_PARTIAL);
    CHECK(utf8_feed(&s, NULL, 0) == UTF8_PARTIAL);
    CHECK(utf8_feed(&s, (const uint8_t *)"\x98", 1) == UTF8_PARTIAL);
    CHECK(utf8_feed(&s, (const uint8_t *)"\x80xyz", 4) == UTF8_VALID);
    CHECK(utf8_feed(&s, (const uint8_t *)"\xff", 1) == UTF8_INVALID);
    CHECK(s.state == 1);
    CHECK(utf8_feed(&s, (const uint8_t *)"valid", 5) == UTF8_INVALID);
    CHECK(utf8_feed(&s, NULL, 0) == UTF8_INVALID);
    CHECK(utf8_valid(NULL, 0));
    CHECK(!utf8_valid((const uint8_t *)"\xe2\x82", 2));
    CHECK(utf8_valid((const uint8_t *)"\xe2\x82\xac", 3));
}

/* Every ASCII run length before a bad or a multi-byte sequence, so that the
 * word loop hands over at every position of a word. */
static void test_ascii_runs(void)
{
    uint8_t buf[80];

    for (size_t run = 0; run < 64; run++) {
        memset(buf, 'a', run);
        memcpy(buf + run, "\xe2\x82\xac", 3);
        memset(buf + run + 3, 'b', 8);
        CHECKF(feed_whole(guard_place(buf, run + 11), run + 11) == UTF8_VALID,
               "run %zu", run);
        buf[run] = 0x80;
        CHECKF(feed_whole(guard_place(buf, run + 11), run + 11) ==
                   UTF8_INVALID, "run %zu", run);
        for (size_t i = 0; i < run; i++)
            buf[i] = (uint8_t)(i * 37 % 128);
        buf[run] = 0xc0;
        CHECKF(feed_whole(guard_place(buf, run + 1), run + 1) == UTF8_INVALID,
               "run %zu", run);
        CHECKF(feed_whole(guard_place(buf, run), run) == UTF8_VALID, "run %zu",
               run);
    }
}

/* ---- random differential ------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static uint32_t rng_below(uint32_t n)
{
    return rng_next() % n;
}

static uint32_t gen_code_point(void)
{
    static const uint32_t edges[] = {
        0,      0x7f,   0x80,    0x7ff,   0x800,    0xd7ff,
        0xe000, 0xfffd, 0xffff,  0x10000, 0x10ffff, 0xfeff,
    };
    uint32_t c;

    switch (rng_below(8)) {
    case 0: case 1: case 2:
        return rng_below(0x80);
    case 3:
        return 0x80 + rng_below(0x780);
    case 4:
        do
            c = 0x800 + rng_below(0xf800);
        while (c >= 0xd800 && c <= 0xdfff);
        return c;
    case 5:
        return 0x10000 + rng_below(0x100000);
    default:
        return edges[rng_below(sizeof edges / sizeof edges[0])];
    }
}

static size_t gen_encode(uint8_t *out, uint32_t c)
{
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xc0 | c >> 6);
        out[1] = (uint8_t)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xe0 | c >> 12);
        out[1] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
        out[2] = (uint8_t)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | c >> 18);
    out[1] = (uint8_t)(0x80 | (c >> 12 & 0x3f));
    out[2] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
    out[3] = (uint8_t)(0x80 | (c & 0x3f));
    return 4;
}

/* Bytes that sit on the DFA's range edges. */
static uint8_t gen_nasty_byte(void)
{
    static const uint8_t nasty[] = {
        0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
        0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1,
        0xf3, 0xf4, 0xf5, 0xf7, 0xf8, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
    };
    return nasty[rng_below(sizeof nasty)];
}

#define GEN_MAX 400

/* Mostly valid text, sometimes with long ASCII runs, then a few edits. */
static size_t gen_string(uint8_t *out)
{
    size_t n = 0, target = rng_below(8) == 0 ? rng_below(300) : rng_below(40);
    unsigned edits;

    if (rng_below(16) == 0) {
        while (n < target)
            out[n++] = (uint8_t)rng_next();
        return n;
    }
    while (n < target) {
        if (rng_below(6) == 0) {
            for (size_t run = rng_below(24); run && n < target; run--)
                out[n++] = (uint8_t)(' ' + rng_below(90));
        } else {
            n += gen_encode(out + n, gen_code_point());
        }
    }
    edits = rng_below(2) ? 0 : 1 + rng_below(3);
    while (edits--) {
        size_t at = n ? rng_below((uint32_t)n) : 0;

        switch (rng_below(5)) {
        case 0:
            if (n) out[at] = gen_nasty_byte();
            break;
        case 1:
            if (n) out[at] = (uint8_t)rng_next();
            break;
        case 2:
            if (n) {
                memmove(out + at, out + at + 1, n - at - 1);
                n--;
            }
            break;
        case 3:
            memmove(out + at + 1, out + at, n - at);
            out[at] = gen_nasty_byte();
            n++;
            break;
        default:
            n = at;
            break;
        }
    }
    return n;
}

static void test_random(void)
{
    uint8_t buf[GEN_MAX + 8];
    unsigned counts[3] = {0, 0, 0};

    for (unsigned iter = 0; iter < 200000; iter++) {
        size_t n = gen_string(buf);
        const uint8_t *g = guard_place(buf, n);
        bool partial;
        size_t bad = ref_first_bad(buf, n, &partial);
        enum utf8_result want = ref_verdict(buf, n), end, first;
        size_t cut = n ? rng_below((uint32_t)n + 1) : 0;

        counts[want + 1]++;
        CHECKF(feed_whole(g, n) == want, "iter %u whole", iter);
        CHECKF(utf8_valid(g, n) == (want == UTF8_VALID), "iter %u", iter);
        CHECKF(feed_bytewise(g, n, &end) == bad && end == want,
               "iter %u: first bad byte %zu, want %zu", iter,
               feed_bytewise(g, n, &end), bad);
        CHECKF(feed_split(g, n, cut, &first) == want &&
                   first == ref_verdict(buf, cut),
               "iter %u split at %zu", iter, cut);
    }
    /* The generator must really exercise all three verdicts. */
    CHECK(counts[0] > 20000 && counts[1] > 20000 && counts[2] > 2000);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rng_state = strtoull(argv[1], NULL, 0) | 1;
    guard_setup(4096);
    test_classic();
    test_state();
    test_ascii_runs();
    test_random();
    return check_done("utf8");
}
