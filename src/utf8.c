/* utf8.c - incremental UTF-8 validation as a byte-class DFA.
 *
 * Why it exists: text messages and close reasons must be rejected at the
 * first byte that no continuation could make valid, and a message may be cut
 * anywhere, so the validator is a small automaton whose whole memory is one
 * state number.  Each byte maps to a class and (state, class) to the next
 * state; the states encode how many continuation bytes are still due
 * and which range the next one must fall in, which is what makes overlongs,
 * surrogates and code points above U+10FFFF fail at their first impossible
 * byte rather than at the end of the sequence.
 *
 * Runs of ASCII between code points are skipped a word at a time.  All bulk
 * work goes through utf8_scan_block().
 *
 * On x86-64 a vector pass goes first: the lookup-table method published by
 * Keiser and Lemire classifies every byte pair with three 16-entry nibble
 * tables (pshufb) and checks that the bytes after a 3- or 4-byte lead are
 * continuations, 64 bytes per step.  It only ever answers "no error in these
 * bytes"; on any error it hands the whole input back to the automaton, and
 * the bytes after the last complete code point always go to the automaton,
 * so the verdict and the state left behind are the automaton's own for
 * every way the input is cut. */
#include "utf8.h"
#include "simd.h"

#include <string.h>

#if SIMD_X86
#include <immintrin.h>
#endif

/* States; 0 and 1 are fixed by utf8.h (between code points, rejected). */
enum utf8_dfa_state {
    UTF8_S_ACCEPT = 0,
    UTF8_S_REJECT = 1,
    UTF8_S_TAIL1 = 2,    /* one continuation byte 80..BF due */
    UTF8_S_TAIL2 = 3,    /* two due, any 80..BF */
    UTF8_S_TAIL3 = 4,    /* three due, any 80..BF */
    UTF8_S_E0 = 5,       /* after E0: A0..BF, else overlong */
    UTF8_S_ED = 6,       /* after ED: 80..9F, else surrogate */
    UTF8_S_F0 = 7,       /* after F0: 90..BF, else overlong */
    UTF8_S_F4 = 8,       /* after F4: 80..8F, else above U+10FFFF */
    UTF8_STATES = 9,
};

/* Byte classes: the continuation range is split where the lead bytes E0,
 * ED, F0 and F4 restrict their second byte. */
enum utf8_byte_class {
    UTF8_C_ASCII = 0, /* 00..7F */
    UTF8_C_CONT_LO,   /* 80..8F */
    UTF8_C_CONT_MID,  /* 90..9F */
    UTF8_C_CONT_HI,   /* A0..BF */
    UTF8_C_BAD,       /* C0 C1 F5..FF: never in valid UTF-8 */
    UTF8_C_LEAD2,     /* C2..DF */
    UTF8_C_E0,
    UTF8_C_LEAD3,     /* E1..EC EE EF */
    UTF8_C_ED,
    UTF8_C_F0,
    UTF8_C_LEAD4,     /* F1..F3 */
    UTF8_C_F4,
    UTF8_CLASSES,
};

static const uint8_t utf8_class[256] = {
    /* 00..7F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80..8F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 90..9F */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* A0..BF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* C0 C1 bad, C2..DF two-byte leads */
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    /* E0, E1..EC, ED, EE EF */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
    /* F0, F1..F3, F4, F5..FF bad */
    9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* Rows are byte classes and columns states, so that the class (which does
 * not depend on the state) picks the row off the critical path and each
 * byte costs one dependent load.  Short names keep a row on one line. */
#define A UTF8_S_ACCEPT
#define R UTF8_S_REJECT
#define T1 UTF8_S_TAIL1
#define T2 UTF8_S_TAIL2
#define T3 UTF8_S_TAIL3
static const uint8_t utf8_next[UTF8_CLASSES][UTF8_STATES] = {
    /*                  ACCEPT     REJECT TAIL1 TAIL2 TAIL3 E0  ED  F0  F4 */
    [UTF8_C_ASCII]    = {A,         R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_CONT_LO]  = {R,         R,     A,    T1,   T2,   R,  T1, R,  T2},
    [UTF8_C_CONT_MID] = {R,         R,     A,    T1,   T2,   R,  T1, T2, R},
    [UTF8_C_CONT_HI]  = {R,         R,     A,    T1,   T2,   T1, R,  T2, R},
    [UTF8_C_BAD]      = {R,         R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_LEAD2]    = {T1,        R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_E0]       = {UTF8_S_E0, R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_LEAD3]    = {T2,        R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_ED]       = {UTF8_S_ED, R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_F0]       = {UTF8_S_F0, R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_LEAD4]    = {T3,        R,     R,    R,    R,    R,  R,  R,  R},
    [UTF8_C_F4]       = {UTF8_S_F4, R,     R,    R,    R,    R,  R,  R,  R},
};
#undef A
#undef R
#undef T1
#undef T2
#undef T3

#define UTF8_HIGH_BITS 0x8080808080808080ull

/* Bytes stepped through the automaton between two looks for ASCII: a
 * branch per byte would cost more than the occasional ASCII byte stepped
 * through the table, and a longer run would delay the word loop in text
 * that is mostly ASCII. */
#define UTF8_DFA_RUN 8

/* Below this many bytes a feed is not worth a vector pass. */
#define UTF8_DFA_SHORT 64

/* Index of the first byte with its top bit set in a word known to hold
 * one; the word was loaded with memcpy, so memory order is byte order. */
static size_t utf8_first_high_byte(uint64_t high)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(high) / 8;
#else
    return (size_t)__builtin_clzll(high) / 8;
#endif
}

/* Length of the ASCII run at p, found 8 bytes at a time; long runs are
 * tested 16 bytes per branch. */
static size_t utf8_skip_ascii(const uint8_t *p, size_t n)
{
    size_t i = 0;

    for (; i + 16 <= n; i += 16) {
        uint64_t w[2];

        memcpy(w, p + i, sizeof w);
        if ((w[0] | w[1]) & UTF8_HIGH_BITS)
            break;
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;

        memcpy(&w, p + i, sizeof w);
        if (w & UTF8_HIGH_BITS)
            return i + utf8_first_high_byte(w & UTF8_HIGH_BITS);
    }
    while (i < n && p[i] < 0x80)
        i++;
    return i;
}

/* Runs the automaton over p[0..n) from `state` and returns the new state.
 * Rejection is final, so it is looked for once per run, not per byte: the
 * verdict is the same, and only the verdict leaves this file. */
static uint32_t utf8_scan_block(uint32_t state, const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t end;

        if (state == UTF8_S_ACCEPT) {
            i += utf8_skip_ascii(p + i, n - i);
            if (i == n)
                break;
        }
        end = n - i > UTF8_DFA_RUN ? i + UTF8_DFA_RUN : n;
        for (; i < end; i++)
            state = utf8_next[utf8_class[p[i]]][state];
        if (state == UTF8_S_REJECT)
            break;
    }
    return state;
}

#if SIMD_X86
/* Error bits of the pair classification: a pair (previous byte, byte) is
 * wrong when the bit is set in all three nibble lookups. */
#define U8V_TOO_SHORT 0x01  /* lead, then no continuation */
#define U8V_TOO_LONG 0x02   /* ASCII, then a continuation */
#define U8V_OVERLONG_3 0x04 /* E0 80..9F */
#define U8V_TOO_LARGE 0x08  /* F4 90..BF, F5..FF 90..BF */
#define U8V_SURROGATE 0x10  /* ED A0..BF */
#define U8V_OVERLONG_2 0x20 /* C0 C1, then a continuation */
#define U8V_LARGE_1000 0x40 /* F5..FF 80..8F; shares the bit with ... */
#define U8V_OVERLONG_4 0x40 /* ... F0 80..8F */
#define U8V_TWO_CONTS 0x80  /* continuation, then continuation */
#define U8V_CARRY (U8V_TOO_SHORT | U8V_TOO_LONG | U8V_TWO_CONTS)

/* Indexed by the high nibble of the previous byte. */
static const uint8_t u8v_prev_high[16] = {
    U8V_TOO_LONG, U8V_TOO_LONG, U8V_TOO_LONG, U8V_TOO_LONG,
    U8V_TOO_LONG, U8V_TOO_LONG, U8V_TOO_LONG, U8V_TOO_LONG,
    U8V_TWO_CONTS, U8V_TWO_CONTS, U8V_TWO_CONTS, U8V_TWO_CONTS,
    U8V_TOO_SHORT | U8V_OVERLONG_2,
    U8V_TOO_SHORT,
    U8V_TOO_SHORT | U8V_OVERLONG_3 | U8V_SURROGATE,
    U8V_TOO_SHORT | U8V_TOO_LARGE | U8V_LARGE_1000 | U8V_OVERLONG_4,
};

/* Indexed by the low nibble of the previous byte. */
static const uint8_t u8v_prev_low[16] = {
    U8V_CARRY | U8V_OVERLONG_3 | U8V_OVERLONG_2 | U8V_OVERLONG_4,
    U8V_CARRY | U8V_OVERLONG_2,
    U8V_CARRY,
    U8V_CARRY,
    U8V_CARRY | U8V_TOO_LARGE,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000 | U8V_SURROGATE,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
    U8V_CARRY | U8V_TOO_LARGE | U8V_LARGE_1000,
};

/* Indexed by the high nibble of the byte itself. */
#define U8V_CONT_ALL (U8V_TOO_LONG | U8V_OVERLONG_2 | U8V_TWO_CONTS)
static const uint8_t u8v_cur_high[16] = {
    U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT,
    U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT,
    U8V_CONT_ALL | U8V_OVERLONG_3 | U8V_LARGE_1000 | U8V_OVERLONG_4,
    U8V_CONT_ALL | U8V_OVERLONG_3 | U8V_TOO_LARGE,
    U8V_CONT_ALL | U8V_SURROGATE | U8V_TOO_LARGE,
    U8V_CONT_ALL | U8V_SURROGATE | U8V_TOO_LARGE,
    U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT, U8V_TOO_SHORT,
};

/* Bytes one vector step covers, and the least input worth starting it for. */
#define UTF8_VEC_BLOCK 64

/* What the vector pass returns when it found an error. */
#define UTF8_VEC_ERROR ((size_t)-1)

/* Nonzero bytes of `err` mark wrong pairs, and bytes that had to continue a
 * 3- or 4-byte sequence but did not (or continued one that was complete). */
__attribute__((target("ssse3")))
static inline __m128i u8v_check_ssse3(__m128i in, __m128i prev)
{
    const __m128i t_ph = _mm_loadu_si128((const __m128i *)u8v_prev_high);
    const __m128i t_pl = _mm_loadu_si128((const __m128i *)u8v_prev_low);
    const __m128i t_ch = _mm_loadu_si128((const __m128i *)u8v_cur_high);
    const __m128i nib = _mm_set1_epi8(0x0f);
    __m128i prev1 = _mm_alignr_epi8(in, prev, 15);
    __m128i prev2 = _mm_alignr_epi8(in, prev, 14);
    __m128i prev3 = _mm_alignr_epi8(in, prev, 13);
    __m128i ph = _mm_shuffle_epi8(t_ph, _mm_and_si128(_mm_srli_epi16(prev1, 4), nib));
    __m128i pl = _mm_shuffle_epi8(t_pl, _mm_and_si128(prev1, nib));
    __m128i ch = _mm_shuffle_epi8(t_ch, _mm_and_si128(_mm_srli_epi16(in, 4), nib));
    __m128i pair = _mm_and_si128(_mm_and_si128(ph, pl), ch);
    /* Top bit set where the byte two back is E0.. or three back F0..: this
     * byte must be a continuation, which pairs with TWO_CONTS. */
    __m128i third = _mm_subs_epu8(prev2, _mm_set1_epi8(0xe0 - 0x80));
    __m128i fourth = _mm_subs_epu8(prev3, _mm_set1_epi8(0xf0 - 0x80));
    __m128i must = _mm_and_si128(_mm_or_si128(third, fourth), _mm_set1_epi8((char)0x80));
    return _mm_xor_si128(must, pair);
}

/* Checks whole 64-byte blocks of p[0..n), which starts between code points.
 * Returns how many bytes it checked with no error (the last code point may
 * be unfinished), or UTF8_VEC_ERROR. */
__attribute__((target("ssse3")))
static size_t u8v_run_ssse3(const uint8_t *p, size_t n)
{
    __m128i prev = _mm_setzero_si128();
    __m128i err = _mm_setzero_si128();
    size_t i = 0;

    for (; i + UTF8_VEC_BLOCK <= n; i += UTF8_VEC_BLOCK) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(p + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(p + i + 48));
        __m128i any = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));

        if (_mm_movemask_epi8(any) == 0 && _mm_movemask_epi8(prev) == 0) {
            prev = d; /* ASCII after ASCII: nothing to check */
            continue;
        }
        err = _mm_or_si128(err, u8v_check_ssse3(a, prev));
        err = _mm_or_si128(err, u8v_check_ssse3(b, a));
        err = _mm_or_si128(err, u8v_check_ssse3(c, b));
        err = _mm_or_si128(err, u8v_check_ssse3(d, c));
        prev = d;
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(err, _mm_setzero_si128())) != 0xffff)
            return UTF8_VEC_ERROR;
    }
    return i;
}

__attribute__((target("avx2")))
static inline __m256i u8v_check_avx2(__m256i in, __m256i prev)
{
    const __m256i t_ph = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)u8v_prev_high));
    const __m256i t_pl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)u8v_prev_low));
    const __m256i t_ch = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)u8v_cur_high));
    const __m256i nib = _mm256_set1_epi8(0x0f);
    /* prev's high lane then in's low lane: what palignr needs per lane. */
    __m256i joint = _mm256_permute2x128_si256(prev, in, 0x21);
    __m256i prev1 = _mm256_alignr_epi8(in, joint, 15);
    __m256i prev2 = _mm256_alignr_epi8(in, joint, 14);
    __m256i prev3 = _mm256_alignr_epi8(in, joint, 13);
    __m256i ph = _mm256_shuffle_epi8(t_ph, _mm256_and_si256(_mm256_srli_epi16(prev1, 4), nib));
    __m256i pl = _mm256_shuffle_epi8(t_pl, _mm256_and_si256(prev1, nib));
    __m256i ch = _mm256_shuffle_epi8(t_ch, _mm256_and_si256(_mm256_srli_epi16(in, 4), nib));
    __m256i pair = _mm256_and_si256(_mm256_and_si256(ph, pl), ch);
    __m256i third = _mm256_subs_epu8(prev2, _mm256_set1_epi8(0xe0 - 0x80));
    __m256i fourth = _mm256_subs_epu8(prev3, _mm256_set1_epi8(0xf0 - 0x80));
    __m256i must = _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
    return _mm256_xor_si256(must, pair);
}

__attribute__((target("avx2")))
static size_t u8v_run_avx2(const uint8_t *p, size_t n)
{
    __m256i prev = _mm256_setzero_si256();
    __m256i err = _mm256_setzero_si256();
    size_t i = 0;

    for (; i + UTF8_VEC_BLOCK <= n; i += UTF8_VEC_BLOCK) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));

        if (_mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(a, b), prev)) == 0) {
            prev = b;
            continue;
        }
        err = _mm256_or_si256(err, u8v_check_avx2(a, prev));
        err = _mm256_or_si256(err, u8v_check_avx2(b, a));
        prev = b;
        if (!_mm256_testz_si256(err, err))
            return UTF8_VEC_ERROR;
    }
    return i;
}

/* The vector pass between two stretches of the automaton: the automaton
 * finishes a sequence left open by the previous call, the vector checks the
 * middle, and the automaton takes over again at the start of the last
 * unfinished code point, so it alone decides how the input ends. */
static uint32_t utf8_scan_vec(uint32_t state, const uint8_t *p, size_t n,
                              size_t (*run)(const uint8_t *, size_t))
{
    size_t i = 0;

    for (; i < n && state != UTF8_S_ACCEPT && state != UTF8_S_REJECT; i++)
        state = utf8_next[utf8_class[p[i]]][state];
    if (state == UTF8_S_REJECT)
        return state;
    if (n - i >= UTF8_VEC_BLOCK) {
        size_t m = run(p + i, n - i);

        if (m == UTF8_VEC_ERROR)
            return utf8_scan_block(UTF8_S_ACCEPT, p + i, n - i);
        i += m;
        /* With no error found, a lead byte in the last three that lacks
         * some of its continuations is the one unfinished code point. */
        if (p[i - 1] >= 0xc0)
            i -= 1;
        else if (p[i - 2] >= 0xe0)
            i -= 2;
        else if (p[i - 3] >= 0xf0)
            i -= 3;
    }
    return utf8_scan_block(state, p + i, n - i);
}

static uint32_t utf8_scan_ssse3(uint32_t state, const uint8_t *p, size_t n)
{
    return utf8_scan_vec(state, p, n, u8v_run_ssse3);
}

static uint32_t utf8_scan_avx2(uint32_t state, const uint8_t *p, size_t n)
{
    return utf8_scan_vec(state, p, n, u8v_run_avx2);
}
#endif /* SIMD_X86 */

typedef uint32_t utf8_scan_fn(uint32_t state, const uint8_t *p, size_t n);

static enum utf8_result utf8_feed_with(struct utf8_state *s, const uint8_t *p, size_t n,
                                       utf8_scan_fn *scan)
{
    if (s->state != UTF8_S_REJECT && n > 0)
        s->state = scan(s->state, p, n);
    if (s->state == UTF8_S_ACCEPT)
        return UTF8_VALID;
    return s->state == UTF8_S_REJECT ? UTF8_INVALID : UTF8_PARTIAL;
}

enum utf8_result utf8_feed_scalar(struct utf8_state *s, const uint8_t *p, size_t n)
{
    return utf8_feed_with(s, p, n, utf8_scan_block);
}

#if SIMD_X86
enum utf8_result utf8_feed_ssse3(struct utf8_state *s, const uint8_t *p, size_t n)
{
    return utf8_feed_with(s, p, n, utf8_scan_ssse3);
}

enum utf8_result utf8_feed_avx2(struct utf8_state *s, const uint8_t *p, size_t n)
{
    return utf8_feed_with(s, p, n, utf8_scan_avx2);
}
#endif

/* Chosen on first use; every thread that races here picks the same one. */
static utf8_scan_fn *utf8_scan_chosen;

static utf8_scan_fn *utf8_scan_choose(void)
{
    utf8_scan_fn *f = utf8_scan_block;

#if SIMD_X86
    if (simd_cpu_has(SIMD_ISA_AVX2))
        f = utf8_scan_avx2;
    else if (simd_cpu_has(SIMD_ISA_SSSE3))
        f = utf8_scan_ssse3;
#endif
    __atomic_store_n(&utf8_scan_chosen, f, __ATOMIC_RELAXED);
    return f;
}

enum utf8_result utf8_feed(struct utf8_state *s, const uint8_t *p, size_t n)
{
    utf8_scan_fn *scan = __atomic_load_n(&utf8_scan_chosen, __ATOMIC_RELAXED);

    /* Short feeds (one byte at a time, close reasons) stay scalar. */
    if (n < UTF8_DFA_SHORT)
        scan = utf8_scan_block;
    else if (!scan)
        scan = utf8_scan_choose();
    return utf8_feed_with(s, p, n, scan);
}

/* Up to this many bytes, an all-ASCII input (most short text messages) is
 * settled eight bytes at a time, without the validator's set-up. */
#define UTF8_ASCII_SHORT 64

static bool utf8_short_ascii(const uint8_t *p, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= p[i];
    return !(acc & 0x8080808080808080ull);
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    struct utf8_state s;

    if (n <= UTF8_ASCII_SHORT && utf8_short_ascii(p, n))
        return true;
    utf8_init(&s);
    return utf8_feed(&s, p, n) == UTF8_VALID;
}
