/* inflate_short.c - a deflate decoder whose set-up follows the codes a
 * short message uses.
 *
 * Why it exists: see inflate_short.h.  A general decoder sorts every
 * symbol of both alphabets (316) and fills tables of 2^11 entries or more
 * for each block, which is most of its work on a message of a few hundred
 * bytes.  Here the symbols with a code are listed while their lengths are
 * read, sorted by a count over those alone, and each code is written once
 * into a table that doubles as the lengths grow, to 2^10 entries (literals
 * and lengths) and 2^7 (distances).  A code longer than that is finished
 * canonically, one bit a step, from the prefix its table entry holds: it
 * is one of the message's rarest symbols, so few steps are taken. */
#include "inflate_short.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bit reader assumes a little-endian machine"
#endif

#define INFL_MAX_BITS 15
#define INFL_LIT_BITS 10
#define INFL_DIST_BITS 7
#define INFL_PRE_BITS 7   /* the lengths' own code is at most 7 bits long */
#define INFL_LIT_SYMS 288 /* what a fixed block defines; 286 and 287 never occur */
#define INFL_DIST_SYMS 32 /* likewise 30 and 31 */
#define INFL_PRE_SYMS 19
#define INFL_PRE_STEP 14   /* bits a code length's code and its extra bits take */
#define INFL_MATCH_STEP 33 /* a length's extra bits, a distance and its extra bits */

/* A table entry: the symbol, and its code's length; a length of 0 means
 * the code is longer than the table, and the symbol field then holds the
 * code's first bits (most significant first) to go on from. */
#define INFL_ENTRY(sym, len) ((uint16_t)((sym) << 4 | (len)))

struct infl_code {
    uint16_t *table;  /* 2^bits entries, indexed by the next bits as read */
    uint16_t *sorted; /* the symbols in canonical order */
    unsigned bits;
    uint16_t count[INFL_MAX_BITS + 1]; /* codes of each length */
    uint16_t first[INFL_MAX_BITS + 1]; /* the first code of each length */
    uint16_t index[INFL_MAX_BITS + 1]; /* where its symbols start in sorted */
};

/* Bits are taken from the low end of a 64-bit word refilled to at least 56
 * valid bits when fewer are left than the next step may take: a code (15),
 * a code length's code and its extra bits, a match's rest.  Past the input,
 * zero bytes are fed and counted: a stream is valid only if it ends before
 * reading any of them. */
struct infl_bits {
    const uint8_t *p, *end;
    uint64_t buf;
    unsigned n;    /* valid bits in buf */
    unsigned over; /* zero bytes fed past the end */
};

static const uint16_t infl_len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,
                                           15, 17, 19, 23, 27, 31, 35, 43,  51,  59,
                                           67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t infl_len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                           2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t infl_dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,
                                            17,   25,   33,   49,   65,   97,    129,   193,
                                            257,  385,  513,  769,  1025, 1537,  2049,  3073,
                                            4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t infl_dist_extra[30] = {0, 0, 0, 0, 1, 1, 2,  2,  3,  3,  4,  4,  5,  5,  6,
                                            6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
/* The order the lengths' code lengths come in (RFC 1951 3.2.7). */
static const uint8_t infl_pre_order[INFL_PRE_SYMS] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                      11, 4,  12, 3, 13, 2, 14, 1, 15};

static inline __attribute__((always_inline)) bool infl_fill(struct infl_bits *b)
{
    uint64_t w;

    if (__builtin_expect(b->end - b->p < 8, 0)) {
        /* The last bytes one at a time, then zero bytes past the end. */
        while (b->n <= 56) {
            if (b->p < b->end)
                b->buf |= (uint64_t)*b->p++ << b->n;
            else if (++b->over > sizeof(b->buf))
                return false; /* every real bit is spent: the stream overran */
            b->n += 8;
        }
        return true;
    }
    /* Whole bytes up to 56 valid bits; the bits above them come from the
     * next byte and are or-ed again, with the same values, when it is
     * loaded. */
    memcpy(&w, b->p, sizeof(w));
    b->buf |= w << b->n;
    b->p += (63 - b->n) >> 3;
    b->n |= 56;
    return true;
}

static inline __attribute__((always_inline)) unsigned infl_take(struct infl_bits *b, unsigned k)
{
    unsigned v = (unsigned)(b->buf & ((1u << k) - 1));

    b->buf >>= k;
    b->n -= k;
    return v;
}

/* Builds code c, with the reversals rev, from the symbols listed in used[0..nused), in increasing
 * order, each as (symbol + base) << 4 | its code's length; the others have
 * none.  Only a complete code is taken: an over-subscribed one is invalid,
 * and an incomplete one (allowed for a lone distance code) is left to the
 * general decoder. */
static bool infl_build(const uint16_t *rev, struct infl_code *c, const uint16_t *used,
                       unsigned nused, unsigned base)
{
    uint16_t next[INFL_MAX_BITS + 1];
    unsigned len, lmin, i, code = 0, idx = 0, size = 1u << c->bits;
    int left = 1;

    memset(c->count, 0, sizeof(c->count));
    for (i = 0; i < nused; i++)
        c->count[used[i] & 15]++;
    for (len = 1; len <= INFL_MAX_BITS; len++) {
        left = (left << 1) - c->count[len];
        if (left < 0)
            return false;
        c->first[len] = (uint16_t)code;
        c->index[len] = next[len] = (uint16_t)idx;
        idx += c->count[len];
        code = (code + c->count[len]) << 1;
    }
    if (left != 0)
        return false;
    for (i = 0; i < nused; i++)
        c->sorted[next[used[i] & 15]++] = (uint16_t)((used[i] >> 4) - base);
    /* The table grows with the length: each code is written once, in a
     * table as wide as its length, and every entry written so far is
     * copied as the table doubles.  A canonical code's rest, in order, is
     * the longer codes, whose first bits are marked for the canonical
     * step.  A complete code has one that fits (lmin <= bits). */
    for (lmin = 1; !c->count[lmin]; lmin++)
        ;
    for (i = 0, len = lmin; len <= c->bits; len++) {
        if (len > lmin)
            memcpy(c->table + (1u << (len - 1)), c->table, sizeof(*c->table) << (len - 1));
        for (code = c->first[len]; i < c->index[len] + c->count[len]; i++, code++)
            c->table[rev[code << (INFL_LIT_BITS - len)]] = INFL_ENTRY(c->sorted[i], len);
    }
    if (i < nused) {
        for (code = c->first[c->bits] + c->count[c->bits]; code < size; code++)
            c->table[rev[code << (INFL_LIT_BITS - c->bits)]] = INFL_ENTRY(code, 0);
    }
    return true;
}

/* Finishes a code longer than the table canonically, one bit a step from
 * the prefix its entry holds: its symbol and length as an entry, or 0 for
 * bits that are no code.  Rare, and kept out of the decoding loops. */
static __attribute__((noinline)) unsigned infl_decode_long(const struct infl_code *c, uint16_t e,
                                                           uint64_t buf)
{
    unsigned code = e >> 4;

    for (unsigned len = c->bits + 1; len <= INFL_MAX_BITS; len++) {
        unsigned at;

        code = code << 1 | (unsigned)((buf >> (len - 1)) & 1);
        at = code - c->first[len];
        if (at < c->count[len])
            return (unsigned)c->sorted[c->index[len] + at] << 4 | len;
    }
    return 0;
}

/* Decodes one symbol of code c, whose table (c->table, held by the caller
 * where stores to the output would make the compiler load it again) has
 * `bits` bits, a constant at each call.  -1 for bits that are no code. */
static inline __attribute__((always_inline)) int infl_decode(struct infl_bits *b,
                                                             const struct infl_code *c,
                                                             const uint16_t *table, unsigned bits)
{
    unsigned e = table[b->buf & ((1u << bits) - 1)];

    if (__builtin_expect(!(e & 15), 0) && !(e = infl_decode_long(c, (uint16_t)e, b->buf)))
        return -1;
    b->buf >>= e & 15;
    b->n -= e & 15;
    return (int)(e >> 4);
}

/* What every call reads and none writes.  Codes are read least significant
 * bit first, so a code's table index is its value reversed: rev holds
 * 10-bit reversals, which serve any length up to 10 (a code of len bits
 * shifted up by 10 - len).  Then the fixed codes (RFC 1951 3.2.6). */
struct inflate_short {
    uint16_t rev[1u << INFL_LIT_BITS];
    uint16_t lit_table[1u << INFL_LIT_BITS], lit_sorted[INFL_LIT_SYMS];
    uint16_t dist_table[1u << INFL_DIST_BITS], dist_sorted[INFL_DIST_SYMS];
    struct infl_code lit, dist;
};

struct inflate_short *inflate_short_new(void)
{
    struct inflate_short *s = malloc(sizeof(*s));
    uint16_t used[INFL_LIT_SYMS];

    if (!s)
        return NULL;
    for (unsigned v = 0; v < 1u << INFL_LIT_BITS; v++) {
        unsigned r = 0;

        for (unsigned k = 0; k < INFL_LIT_BITS; k++)
            r |= ((v >> k) & 1u) << (INFL_LIT_BITS - 1 - k);
        s->rev[v] = (uint16_t)r;
    }
    s->lit = (struct infl_code){s->lit_table, s->lit_sorted, INFL_LIT_BITS, {0}, {0}, {0}};
    s->dist = (struct infl_code){s->dist_table, s->dist_sorted, INFL_DIST_BITS, {0}, {0}, {0}};
    for (unsigned sym = 0; sym < INFL_LIT_SYMS; sym++)
        used[sym] = (uint16_t)(sym << 4 | (sym < 144 ? 8 : sym < 256 ? 9 : sym < 280 ? 7 : 8));
    infl_build(s->rev, &s->lit, used, INFL_LIT_SYMS, 0);
    for (unsigned sym = 0; sym < INFL_DIST_SYMS; sym++)
        used[sym] = (uint16_t)(sym << 4 | 5);
    infl_build(s->rev, &s->dist, used, INFL_DIST_SYMS, 0);
    return s;
}

void inflate_short_free(struct inflate_short *s)
{
    free(s);
}

/* Reads a dynamic block's header (RFC 1951 3.2.7) and builds its codes.
 * A code with no end of block is not refused here: its block cannot end,
 * so decoding it fails. */
static bool infl_read_codes(const struct inflate_short *s, struct infl_bits *reader,
                            struct infl_code *lit, struct infl_code *dist)
{
    struct infl_bits b = *reader;
    uint16_t pre_table[1u << INFL_PRE_BITS], pre_sorted[INFL_PRE_SYMS], pre_used[INFL_PRE_SYMS];
    struct infl_code pre = {pre_table, pre_sorted, INFL_PRE_BITS, {0}, {0}, {0}};
    uint8_t pre_lens[INFL_PRE_SYMS] = {0};
    uint16_t used[INFL_LIT_SYMS + INFL_DIST_SYMS];
    unsigned nlit, ndist, npre, nused = 0, nlit_used, i = 0, prev = 0, k;

    if (!infl_fill(&b))
        return false;
    nlit = 257 + infl_take(&b, 5);
    ndist = 1 + infl_take(&b, 5);
    npre = 4 + infl_take(&b, 4);
    if (nlit > 286 || ndist > 30)
        return false;
    for (i = 0; i < npre; i++) {
        if (i == 12 && !infl_fill(&b))
            return false;
        pre_lens[infl_pre_order[i]] = (uint8_t)infl_take(&b, 3);
    }
    for (k = 0; k < INFL_PRE_SYMS; k++)
        if (pre_lens[k])
            pre_used[nused++] = (uint16_t)(k << 4 | pre_lens[k]);
    if (!infl_build(s->rev, &pre, pre_used, nused, 0))
        return false;
    nused = 0;
    for (i = 0; i < nlit + ndist;) {
        unsigned rep;
        int sym;

        if (b.n < INFL_PRE_STEP && !infl_fill(&b))
            return false;
        if ((sym = infl_decode(&b, &pre, pre_table, INFL_PRE_BITS)) < 0)
            return false;
        if (sym < 16) {
            if ((prev = (unsigned)sym))
                used[nused++] = (uint16_t)(i << 4 | prev);
            i++;
            continue;
        }
        if (sym == 16) {
            if (i == 0)
                return false;
            rep = 3 + infl_take(&b, 2);
        } else {
            prev = 0;
            rep = sym == 17 ? 3 + infl_take(&b, 3) : 11 + infl_take(&b, 7);
        }
        if (rep > nlit + ndist - i)
            return false;
        if (!prev) {
            i += rep;
            continue;
        }
        for (; rep; rep--, i++)
            used[nused++] = (uint16_t)(i << 4 | prev);
    }
    *reader = b;
    for (nlit_used = nused; nlit_used && (used[nlit_used - 1] >> 4) >= nlit; nlit_used--)
        ; /* the distances' few lengths are the list's end */
    return infl_build(s->rev, lit, used, nlit_used, 0) &&
           infl_build(s->rev, dist, used + nlit_used, nused - nlit_used, nlit);
}

/* Copies a match of len bytes from d back.  Words at a time where the
 * source is a word behind or more and the output has a word of room past
 * the match (bytes written beyond it are overwritten by what follows);
 * else a byte at a time, which also repeats a short period as it must. */
static inline __attribute__((always_inline)) void infl_copy_match(uint8_t *dst, unsigned d,
                                                                  unsigned len,
                                                                  const uint8_t *dst_end)
{
    const uint8_t *from = dst - d;

    if (d >= sizeof(uint64_t) && (size_t)(dst_end - dst) >= len + sizeof(uint64_t)) {
        const uint8_t *end = dst + len;

        do {
            uint64_t w;

            memcpy(&w, from, sizeof(w));
            memcpy(dst, &w, sizeof(w));
            from += sizeof(w);
            dst += sizeof(w);
        } while (dst < end);
        return;
    }
    while (len--)
        *dst++ = *from++;
}

/* Decodes a Huffman block's symbols into out[*o..cap).  The reader is
 * copied in and out, and the output walked by pointer, so that the loop's
 * state lives in registers. */
static bool infl_block(struct infl_bits *reader, const struct infl_code *lit,
                       const struct infl_code *dist, uint8_t *out, size_t *o, size_t cap)
{
    struct infl_bits b = *reader;
    const uint16_t *const lit_table = lit->table, *const dist_table = dist->table;
    uint8_t *dst = out + *o, *const dst_end = out + cap;

    for (;;) {
        unsigned len, d;
        int sym;

        if (b.n < INFL_MAX_BITS && !infl_fill(&b))
            return false;
        if ((sym = infl_decode(&b, lit, lit_table, INFL_LIT_BITS)) < 256) {
            if (sym < 0 || dst == dst_end)
                return false;
            *dst++ = (uint8_t)sym;
            continue;
        }
        if (sym == 256)
            break;
        if ((sym -= 257) >= 29)
            return false;
        if (b.n < INFL_MATCH_STEP && !infl_fill(&b))
            return false;
        len = infl_len_base[sym] + infl_take(&b, infl_len_extra[sym]);
        if ((sym = infl_decode(&b, dist, dist_table, INFL_DIST_BITS)) < 0 || sym >= 30)
            return false;
        d = infl_dist_base[sym] + infl_take(&b, infl_dist_extra[sym]);
        if (d > (size_t)(dst - out) || len > (size_t)(dst_end - dst))
            return false;
        infl_copy_match(dst, d, len, dst_end);
        dst += len;
    }
    *reader = b;
    *o = (size_t)(dst - out);
    return true;
}

/* Copies a stored block (RFC 1951 3.2.4): the reader restarts after it. */
static bool infl_stored(struct infl_bits *b, uint8_t *out, size_t *o, size_t cap)
{
    const uint8_t *q;
    unsigned len;

    infl_take(b, b->n & 7);
    if (b->over > b->n >> 3)
        return false;
    q = b->p - (b->n >> 3) + b->over;
    if (b->end - q < 4)
        return false;
    len = (unsigned)q[0] | (unsigned)q[1] << 8;
    if (len != (~((unsigned)q[2] | (unsigned)q[3] << 8) & 0xffff))
        return false;
    q += 4;
    if ((size_t)(b->end - q) < len || len > cap - *o)
        return false;
    memcpy(out + *o, q, len);
    *o += len;
    b->p = q + len;
    b->buf = 0;
    b->n = 0;
    b->over = 0;
    return true;
}

ssize_t inflate_short(const struct inflate_short *s, const uint8_t *in, size_t n, uint8_t *out,
                      size_t cap)
{
    uint16_t lit_table[1u << INFL_LIT_BITS], lit_sorted[INFL_LIT_SYMS];
    uint16_t dist_table[1u << INFL_DIST_BITS], dist_sorted[INFL_DIST_SYMS];
    struct infl_code lit = {lit_table, lit_sorted, INFL_LIT_BITS, {0}, {0}, {0}};
    struct infl_code dist = {dist_table, dist_sorted, INFL_DIST_BITS, {0}, {0}, {0}};
    struct infl_bits b = {in, in + n, 0, 0, 0};
    size_t o = 0;
    unsigned final;

    do {
        bool ok;

        if (!infl_fill(&b))
            return -EAGAIN;
        final = infl_take(&b, 1);
        switch (infl_take(&b, 2)) {
        case 0:
            ok = infl_stored(&b, out, &o, cap);
            break;
        case 1:
            ok = infl_block(&b, &s->lit, &s->dist, out, &o, cap);
            break;
        case 2:
            ok = infl_read_codes(s, &b, &lit, &dist) && infl_block(&b, &lit, &dist, out, &o, cap);
            break;
        default:
            ok = false;
        }
        if (!ok)
            return -EAGAIN;
    } while (!final);
    if (b.over > b.n >> 3)
        return -EAGAIN; /* the last code ran into the bytes fed past the end */
    return (ssize_t)o;
}
