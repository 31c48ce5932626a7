/* deflate_short.c - one fixed-code deflate block for a short message.
 *
 * Why it exists: see deflate_short.h.  What it gives up against libdeflate
 * level 1 is the per-message Huffman code (fixed codes cost about 8 bits a
 * literal where a code built for JSON text spends 5-6, and a dynamic
 * block's header costs tens of bytes, more than it saves on a message of a
 * few hundred bytes) and every match but the latest one per hash.  What it
 * keeps is no set-up per message: the codes are made once, the hash table
 * is never cleared, and each input byte costs a hash, a load and a compare. */
#include "deflate_short.h"

#include <stdbool.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bit writer and the match extension assume a little-endian machine"
#endif

#define SHORT_MAX_MATCH 258
#define SHORT_WINDOW 32768
/* A 3-byte match costs 7 + 5 bits and the distance's extra bits; beyond
 * this distance that is no less than three literals' 24. */
#define SHORT_FAR3 4096

static uint32_t short_rev(uint32_t code, unsigned bits)
{
    uint32_t r = 0;

    for (unsigned i = 0; i < bits; i++)
        r |= ((code >> i) & 1u) << (bits - 1 - i);
    return r;
}

/* The fixed code of a length symbol 257..285 (RFC 1951 3.2.6). */
static void short_len_code(unsigned sym, uint32_t *code, unsigned *bits)
{
    if (sym < 280) {
        *code = short_rev(sym - 256, 7);
        *bits = 7;
    } else {
        *code = short_rev(0xc0 + sym - 280, 8);
        *bits = 8;
    }
}

void deflate_short_init(struct deflate_short *s)
{
    memset(s->head, 0, sizeof(s->head));
    s->base = 1; /* a cleared entry (0) is stale */
    for (unsigned c = 0; c < 256; c++) {
        s->lit[c] = (uint16_t)(c < 144 ? short_rev(0x30 + c, 8) : short_rev(0x190 + c - 144, 9));
        s->lit_bits[c] = c < 144 ? 8 : 9;
    }
    /* Lengths 3..257 by their symbol's base and extra bits (RFC 1951
     * 3.2.5); 258 has a symbol of its own. */
    for (unsigned l = 0; l < 256; l++) {
        unsigned sym, extra = 0, clen;
        uint32_t code;

        if (l == 255) {
            sym = 285;
        } else if (l < 8) {
            sym = 257 + l;
        } else {
            unsigned top = 31u - (unsigned)__builtin_clz(l);

            extra = top - 2;
            sym = 257 + 4 * extra + 4 + ((l >> extra) & 3u);
        }
        short_len_code(sym, &code, &clen);
        s->len[l] = code | ((l & ((1u << extra) - 1)) << clen);
        s->len_bits[l] = (uint8_t)(clen + extra);
    }
    for (unsigned d = 0; d < 30; d++)
        s->dist[d] = (uint8_t)short_rev(d, 5);
}

static inline uint32_t short_load32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint64_t short_load64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t short_hash(uint32_t v)
{
    return (v * 2654435761u) >> (32 - DEFLATE_SHORT_HASH_BITS);
}

/* How many of a[0..max) equal b[0..max), a word at a time. */
static inline size_t short_extend(const uint8_t *a, const uint8_t *b, size_t max)
{
    size_t k = 0;

    while (k + 8 <= max) {
        uint64_t x = short_load64(a + k) ^ short_load64(b + k);

        if (x)
            return k + ((unsigned)__builtin_ctzll(x) >> 3);
        k += 8;
    }
    while (k < max && a[k] == b[k])
        k++;
    return k;
}

/* A distance's fixed code (5 bits) and extra bits, packed. */
static inline uint32_t short_dist(const struct deflate_short *s, uint32_t d, unsigned *bits)
{
    uint32_t dm = d - 1;
    unsigned k;

    if (dm < 4) {
        *bits = 5;
        return s->dist[dm];
    }
    k = 30u - (unsigned)__builtin_clz(dm); /* extra bits: floor(log2) - 1 */
    *bits = 5 + k;
    return s->dist[2 * (k + 1) + ((dm >> k) & 1u)] | ((dm & ((1u << k) - 1)) << 5);
}

/* The bit writer: bits are added from the low end, and whole bytes are
 * stored a word at a time into the slack past the limit.  At most 7 bits
 * wait between calls, and a call adds at most 36 (four 9-bit literals;
 * a match is at most 31): the word never overflows. */
struct short_out {
    uint64_t bits;
    unsigned n;
    uint8_t *p;
};

static inline void short_put(struct short_out *o, uint64_t bits, unsigned n)
{
    o->bits |= bits << o->n;
    o->n += n;
    memcpy(o->p, &o->bits, sizeof(o->bits));
    o->p += o->n >> 3;
    o->bits >>= o->n & ~7u;
    o->n &= 7;
}

/* The match at in[i] against the table's candidate, its length (0 for
 * none); the table then points at i. */
static inline size_t short_match(struct deflate_short *s, const uint8_t *in, size_t n,
                                 size_t i, uint32_t base, uint32_t *dist)
{
    uint32_t v = short_load32(in + i) & 0xffffffu;
    uint32_t *slot = &s->head[short_hash(v)];
    uint32_t cand = *slot, pos = base + (uint32_t)i;
    size_t max, len;

    *slot = pos;
    /* Entries below the base are earlier messages'; the distance's test
     * also refuses an entry not before pos, which only a base moved back
     * by hand (a test) could leave. */
    if (cand < base || pos - cand - 1 >= SHORT_WINDOW ||
        (short_load32(in + (cand - base)) & 0xffffffu) != v)
        return 0;
    max = n - i < SHORT_MAX_MATCH ? n - i : SHORT_MAX_MATCH;
    len = 3 + short_extend(in + (cand - base) + 3, in + i + 3, max - 3);
    *dist = pos - cand;
    return len == 3 && *dist > SHORT_FAR3 ? 0 : len;
}

/* Literals in[from..to): false once the output passed lim.  Four at a
 * time: their codes (8 or 9 bits each) go into the bit buffer together. */
static inline bool short_literals(const struct deflate_short *s, struct short_out *o,
                                  const uint8_t *in, size_t from, size_t to, const uint8_t *lim)
{
    size_t i = from;

    for (; i + 4 <= to; i += 4) {
        uint64_t bits = s->lit[in[i]];
        unsigned n = s->lit_bits[in[i]];

        bits |= (uint64_t)s->lit[in[i + 1]] << n;
        n += s->lit_bits[in[i + 1]];
        bits |= (uint64_t)s->lit[in[i + 2]] << n;
        n += s->lit_bits[in[i + 2]];
        bits |= (uint64_t)s->lit[in[i + 3]] << n;
        n += s->lit_bits[in[i + 3]];
        short_put(o, bits, n);
        if (o->p > lim)
            return false;
    }
    for (; i < to; i++) {
        short_put(o, s->lit[in[i]], s->lit_bits[in[i]]);
        if (o->p > lim)
            return false;
    }
    return true;
}

size_t deflate_short_compress(struct deflate_short *s, const uint8_t *in, size_t n,
                              uint8_t *out, size_t cap)
{
    const uint8_t *lim = out + cap;
    struct short_out o = {3, 3, out}; /* BFINAL, BTYPE 01: fixed codes */
    uint32_t base;
    size_t i = 0, lit = 0; /* in[lit..i): literals not yet written */

    if (n > (1u << 30))
        return 0;
    if (s->base > UINT32_MAX - (uint32_t)n) {
        memset(s->head, 0, sizeof(s->head));
        s->base = 1;
    }
    base = s->base;
    s->base += (uint32_t)n;
    /* The search runs ahead of the writer, which takes the literals
     * before each match in one run.  Matches start where a word can be
     * loaded: the last three bytes go as literals. */
    while (i + 4 <= n) {
        uint32_t dist;
        size_t len = short_match(s, in, n, i, base, &dist);
        unsigned l, dbits;
        uint32_t dcode;

        if (!len) {
            i++;
            continue;
        }
        if (!short_literals(s, &o, in, lit, i, lim))
            return 0;
        l = (unsigned)len - 3;
        dcode = short_dist(s, dist, &dbits);
        short_put(&o, s->len[l] | ((uint64_t)dcode << s->len_bits[l]), s->len_bits[l] + dbits);
        if (o.p > lim)
            return 0;
        /* The positions inside the match go into the table too: JSON
         * repeats keys and values right after each other. */
        for (size_t j = i + 1; j < i + len && j + 4 <= n; j++)
            s->head[short_hash(short_load32(in + j) & 0xffffffu)] = base + (uint32_t)j;
        i += len;
        lit = i;
    }
    if (!short_literals(s, &o, in, lit, n, lim))
        return 0;
    short_put(&o, 0, 7); /* end of block: symbol 256, seven zero bits */
    if (o.n)
        o.p++;
    return o.p > lim ? 0 : (size_t)(o.p - out);
}
