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
 * work goes through utf8_scan_block() so that a vector version can replace
 * it without touching the entry points. */
#include "utf8.h"

#include <string.h>

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

enum utf8_result utf8_feed(struct utf8_state *s, const uint8_t *p, size_t n)
{
    if (s->state != UTF8_S_REJECT && n > 0)
        s->state = utf8_scan_block(s->state, p, n);
    if (s->state == UTF8_S_ACCEPT)
        return UTF8_VALID;
    return s->state == UTF8_S_REJECT ? UTF8_INVALID : UTF8_PARTIAL;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    struct utf8_state s;

    utf8_init(&s);
    return utf8_feed(&s, p, n) == UTF8_VALID;
}
