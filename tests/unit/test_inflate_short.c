/* test_inflate_short.c - the short-message decoder against the encoders a
 * peer uses (zlib, every level, strategy, memory level and window; and
 * libdeflate) and against libdeflate's decoder as the judge of everything
 * else: truncated streams, every bit of valid streams flipped, codes built
 * by hand that are incomplete, a distance past the start, the output cap.
 * Whatever it decodes must be what libdeflate decodes; what zlib and
 * libdeflate encode it must decode itself, not leave to libdeflate.  Every
 * input is placed before a guard page. */
#include "inflate_short.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <zlib.h>

#include "check.h"
#include "guard.h"

#define MAX_PLAIN (64u << 10)
#define MAX_Z (MAX_PLAIN + MAX_PLAIN / 8 + 64)

/* What the server appends to a received payload (deflate.c): the 00 00 ff
 * ff a sync flush ends with, then a final empty stored block. */
static const uint8_t tail[] = {0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff};

static struct inflate_short *dec;
static struct libdeflate_decompressor *judge;
static uint8_t *zbuf, *out, *want;

static uint32_t rng_state = 2024;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static void fill_json(uint8_t *p, size_t n, unsigned seed)
{
    static const char *const words[] = {"order", "shipped", "payment", "received", "status",
                                        "the",   "your",    "update",  "account",  "team"};
    size_t len = 0;

    while (len < n) {
        char item[128];
        int k = snprintf(item, sizeof(item),
                         "{\"id\":%u,\"ts\":%u,\"user\":\"%s\",\"text\":\"%s %s %s\"},", seed,
                         1733500000u + seed * 7, words[rng() % 10], words[rng() % 10],
                         words[rng() % 10], words[rng() % 10]);
        size_t take = (size_t)k < n - len ? (size_t)k : n - len;

        seed++;
        memcpy(p + len, item, take);
        len += take;
    }
}

static void fill_random(uint8_t *p, size_t n, unsigned alphabet)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() % alphabet);
}

/* src[0..n) through zlib as a permessage-deflate peer sends it (a sync
 * flush, its 00 00 ff ff taken off) with the server's tail put on, or
 * finished with a final block; into zbuf, returning the length. */
static size_t zlib_stream(const uint8_t *src, size_t n, int level, int strategy, int mem,
                          int wbits, int flush)
{
    z_stream s = {0};
    size_t zn;

    if (deflateInit2(&s, level, Z_DEFLATED, -wbits, mem, strategy) != Z_OK)
        abort();
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)n;
    s.next_out = zbuf;
    s.avail_out = MAX_Z;
    if (deflate(&s, flush) != (flush == Z_FINISH ? Z_STREAM_END : Z_OK))
        abort();
    zn = MAX_Z - s.avail_out;
    deflateEnd(&s);
    if (flush == Z_SYNC_FLUSH) {
        zn -= 4;
        memcpy(zbuf + zn, tail, sizeof(tail));
        zn += sizeof(tail);
    }
    return zn;
}

/* z[0..zn) decoded here, placed before the guard page: the plain text
 * src[0..n) when `must` (a stream of a real encoder), else whatever
 * libdeflate makes of it, if anything.  Returns inflate_short's result. */
static ssize_t check_stream(const uint8_t *z, size_t zn, const uint8_t *src, size_t n, int must,
                            const char *what)
{
    ssize_t r = inflate_short(dec, guard_place(z, zn), zn, out, MAX_PLAIN);
    size_t got = 0;

    if (must) {
        CHECKF(r == (ssize_t)n && memcmp(out, src, n) == 0, "%s: %zu bytes: %zd", what, n, r);
        return r;
    }
    if (r < 0) {
        CHECKF(r == -EAGAIN, "%s: %zd", what, r);
        return r;
    }
    CHECKF(libdeflate_deflate_decompress(judge, z, zn, want, MAX_PLAIN, &got) ==
                       LIBDEFLATE_SUCCESS &&
               got == (size_t)r && memcmp(want, out, got) == 0,
           "%s: decoded %zd bytes that libdeflate does not", what, r);
    return r;
}

/* Every length to 600 at level 6 (what browsers send), JSON, random text of
 * a small alphabet and of all bytes, runs of one byte. */
static void test_lengths(uint8_t *src)
{
    for (size_t n = 0; n <= 600; n++) {
        fill_json(src, n, (unsigned)n);
        check_stream(zbuf, zlib_stream(src, n, 6, Z_DEFAULT_STRATEGY, 8, 15, Z_SYNC_FLUSH), src,
                     n, 1, "json");
        fill_random(src, n, 16);
        check_stream(zbuf, zlib_stream(src, n, 6, Z_DEFAULT_STRATEGY, 8, 15, Z_SYNC_FLUSH), src,
                     n, 1, "16 letters");
        fill_random(src, n, 256);
        check_stream(zbuf, zlib_stream(src, n, 6, Z_DEFAULT_STRATEGY, 8, 15, Z_SYNC_FLUSH), src,
                     n, 1, "random");
        memset(src, 'x', n);
        check_stream(zbuf, zlib_stream(src, n, 6, Z_DEFAULT_STRATEGY, 8, 15, Z_FINISH), src, n,
                     1, "run");
    }
}

/* Every level, strategy, memory level (which sets zlib's block size, so
 * long inputs make many blocks of each kind) and window. */
static void test_zlib_settings(uint8_t *src)
{
    static const size_t sizes[] = {1, 40, 150, 300, 1000, 5000, 40000, MAX_PLAIN};
    static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
                                     Z_FIXED};
    static const int mems[] = {1, 8, 9};
    static const int wbits[] = {9, 12, 15};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];

        fill_json(src, n, (unsigned)i * 1000);
        for (int level = 0; level <= 9; level++)
            for (size_t s = 0; s < sizeof(strategies) / sizeof(strategies[0]); s++)
                for (size_t m = 0; m < sizeof(mems) / sizeof(mems[0]); m++)
                    for (size_t w = 0; w < sizeof(wbits) / sizeof(wbits[0]); w++) {
                        char what[96];

                        snprintf(what, sizeof(what), "zlib level %d strategy %d mem %d wbits %d",
                                 level, strategies[s], mems[m], wbits[w]);
                        check_stream(zbuf,
                                     zlib_stream(src, n, level, strategies[s], mems[m], wbits[w],
                                                 (level + (int)s) % 2 ? Z_FINISH : Z_SYNC_FLUSH),
                                     src, n, 1, what);
                    }
    }
}

static void test_libdeflate_levels(uint8_t *src)
{
    static const size_t sizes[] = {1, 40, 150, 300, 1000, 5000, 40000};

    for (int level = 0; level <= 12; level++) {
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t zn;

            fill_json(src, sizes[i], (unsigned)level * 100 + (unsigned)i);
            zn = libdeflate_deflate_compress(c, src, sizes[i], zbuf, MAX_Z);
            CHECK(zn > 0);
            check_stream(zbuf, zn, src, sizes[i], 1, "libdeflate");
        }
        libdeflate_free_compressor(c);
    }
}

/* Exactly the output's size fits; a byte less is left to libdeflate. */
static void test_cap(uint8_t *src)
{
    for (size_t n = 1; n <= 300; n += 7) {
        size_t zn;

        fill_json(src, n, (unsigned)n);
        zn = zlib_stream(src, n, 6, Z_DEFAULT_STRATEGY, 8, 15, Z_SYNC_FLUSH);
        CHECKF(inflate_short(dec, guard_place(zbuf, zn), zn, out, n) == (ssize_t)n,
               "%zu bytes into %zu", n, n);
        CHECKF(inflate_short(dec, guard_place(zbuf, zn), zn, out, n - 1) == -EAGAIN,
               "%zu bytes into %zu", n, n - 1);
    }
}

/* Every prefix of streams of each block type: none is decoded unless
 * libdeflate decodes it the same (a prefix that ends after the final block
 * is a whole stream). */
static void test_truncated(uint8_t *src)
{
    static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FIXED};

    for (int level = 0; level <= 6; level += 6)
        for (size_t s = 0; s < 2; s++) {
            uint8_t whole[1024];
            size_t zn;

            fill_json(src, 300, 77);
            zn = zlib_stream(src, 300, level, strategies[s], 8, 15, Z_SYNC_FLUSH);
            memcpy(whole, zbuf, zn);
            for (size_t k = 0; k < zn; k++) {
                ssize_t r = check_stream(whole, k, NULL, 0, 0, "prefix");

                CHECKF(r < 0 || k >= zn - sizeof(tail) + 4, "a prefix of %zu of %zu decoded", k,
                       zn);
            }
        }
}

/* Every bit of a dynamic, a fixed and a stored stream flipped, and random
 * bytes changed: whatever decodes must be what libdeflate decodes. */
static void test_mutations(uint8_t *src)
{
    static const int levels[] = {6, 6, 0};
    static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FIXED, Z_DEFAULT_STRATEGY};
    unsigned decoded = 0, tried = 0;

    for (size_t s = 0; s < 3; s++) {
        uint8_t whole[1024];
        size_t zn;

        fill_json(src, 200, (unsigned)s);
        zn = zlib_stream(src, 200, levels[s], strategies[s], 8, 15, Z_SYNC_FLUSH);
        memcpy(whole, zbuf, zn);
        for (size_t bit = 0; bit < zn * 8; bit++) {
            whole[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            decoded += check_stream(whole, zn, NULL, 0, 0, "flipped bit") >= 0;
            tried++;
            whole[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        for (int k = 0; k < 3000; k++) {
            uint8_t copy[1024];

            memcpy(copy, whole, zn);
            for (int j = 0; j < 3; j++)
                copy[rng() % zn] = (uint8_t)rng();
            decoded += check_stream(copy, zn, NULL, 0, 0, "changed bytes") >= 0;
            tried++;
        }
    }
    /* Some mutations land in literals and still decode: the judge then
     * had output to compare. */
    CHECKF(decoded > 0 && decoded < tried, "%u of %u mutated streams decoded", decoded, tried);
}

/* A bit writer for the streams built by hand below. */
struct bits_out {
    uint8_t *p;
    size_t n;
    unsigned bits;
};

static void put(struct bits_out *w, uint32_t v, unsigned k)
{
    for (unsigned i = 0; i < k; i++, w->bits++) {
        if (w->bits == 8) {
            w->n++;
            w->bits = 0;
        }
        if (!w->bits)
            w->p[w->n] = 0;
        w->p[w->n] |= (uint8_t)(((v >> i) & 1u) << w->bits);
    }
}

static size_t put_end(struct bits_out *w)
{
    return w->n + (w->bits ? 1 : 0);
}

/* A dynamic block whose codes are 'a' and end of block (one bit each) and
 * one distance code of one bit (incomplete, which RFC 1951 allows for a
 * lone distance code): "aa".  With `overrun`, the last run of zero lengths
 * goes that far past the 258 lengths the header announces. */
static size_t dynamic_aa(uint8_t *z, int overrun)
{
    struct bits_out w = {z, 0, 0};

    put(&w, 1, 1);  /* final */
    put(&w, 2, 2);  /* dynamic */
    put(&w, 0, 5);  /* 257 literal/length codes */
    put(&w, 0, 5);  /* 1 distance code */
    put(&w, 14, 4); /* 18 code length codes, in the order 16, 17, 18, 0, 8, ..., 1 */
    for (unsigned i = 0; i < 18; i++)
        put(&w, i == 2 || i == 17 ? 1 : 0, 3); /* 18 and 1: one bit each */
    /* The lengths' code: 1 -> 0, 18 -> 1. */
    put(&w, 1, 1), put(&w, 97 - 11, 7);           /* 97 zeros */
    put(&w, 0, 1);                                /* 'a': 1 */
    put(&w, 1, 1), put(&w, 127, 7);               /* 138 zeros */
    put(&w, 1, 1), put(&w, 20 - 11 + overrun, 7); /* 20 zeros: 98..255 */
    put(&w, 0, 1);                                /* end of block: 1 */
    put(&w, 0, 1);                                /* distance 0: 1 */
    put(&w, 0, 1), put(&w, 0, 1);                 /* 'a' 'a' (code 0) */
    put(&w, 1, 1);                                /* end of block (code 1) */
    return put_end(&w);
}

/* zlib and libdeflate take the incomplete code; the short decoder leaves
 * it to libdeflate.  A run past the announced lengths is invalid. */
static void test_dynamic_by_hand(void)
{
    uint8_t z[64];
    size_t zn = dynamic_aa(z, 0), got = 0;

    CHECK(libdeflate_deflate_decompress(judge, z, zn, want, 16, &got) == LIBDEFLATE_SUCCESS &&
          got == 2 && memcmp(want, "aa", 2) == 0);
    CHECK(inflate_short(dec, guard_place(z, zn), zn, out, 16) == -EAGAIN);
    zn = dynamic_aa(z, 3);
    CHECK(libdeflate_deflate_decompress(judge, z, zn, want, 16, &got) != LIBDEFLATE_SUCCESS);
    CHECK(inflate_short(dec, guard_place(z, zn), zn, out, 16) == -EAGAIN);
}

/* A Huffman code goes out from its most significant bit. */
static void put_code(struct bits_out *w, uint32_t code, unsigned len)
{
    for (unsigned i = len; i-- > 0;)
        put(w, (code >> i) & 1u, 1);
}

/* A fixed block: 'a', then a length symbol lsym (0 for none) with distance
 * symbol dsym, then the end of block. */
static size_t fixed_block(uint8_t *z, unsigned lsym, unsigned dsym)
{
    struct bits_out w = {z, 0, 0};

    put(&w, 1, 1);
    put(&w, 1, 2); /* fixed */
    put_code(&w, 0x30 + 'a', 8);
    if (lsym) {
        if (lsym < 280)
            put_code(&w, lsym - 256, 7);
        else
            put_code(&w, 0xc0 + lsym - 280, 8);
        put_code(&w, dsym, 5);
    }
    put_code(&w, 0, 7); /* end of block */
    return put_end(&w);
}

/* A match that reaches before the start, and the symbols that a fixed
 * code has but RFC 1951 gives no meaning (length 286 and 287, distance 30
 * and 31), are invalid and not decoded; the first block at distance 1 is
 * "aaaa". */
static void test_fixed_by_hand(void)
{
    static const unsigned bad[][2] = {{257, 1}, {286, 0}, {287, 0}, {257, 30}, {257, 31}};
    uint8_t z[16];
    size_t zn, got = 0;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        zn = fixed_block(z, bad[i][0], bad[i][1]);
        CHECKF(libdeflate_deflate_decompress(judge, z, zn, want, 16, &got) != LIBDEFLATE_SUCCESS,
               "length %u distance %u", bad[i][0], bad[i][1]);
        CHECKF(inflate_short(dec, guard_place(z, zn), zn, out, 16) == -EAGAIN,
               "length %u distance %u", bad[i][0], bad[i][1]);
    }
    zn = fixed_block(z, 257, 0);
    CHECK(libdeflate_deflate_decompress(judge, z, zn, want, 16, &got) == LIBDEFLATE_SUCCESS &&
          got == 4);
    CHECK(inflate_short(dec, guard_place(z, zn), zn, out, 16) == 4 && memcmp(out, "aaaa", 4) == 0);
}

/* A stream whose last code ends in bits past its last byte: 'a' and the
 * end of block take 18 bits of a fixed block, given 2 bytes.  The seven
 * zero bits of the end of block would be read from the zeros fed past the
 * end: not decoded. */
static void test_ends_past_input(void)
{
    uint8_t z[16];
    size_t zn = fixed_block(z, 0, 0), got = 0;

    CHECK(zn == 3);
    CHECK(inflate_short(dec, guard_place(z, zn), zn, out, 16) == 1 && out[0] == 'a');
    CHECK(libdeflate_deflate_decompress(judge, z, 2, want, 16, &got) != LIBDEFLATE_SUCCESS);
    CHECK(inflate_short(dec, guard_place(z, 2), 2, out, 16) == -EAGAIN);
}

int main(void)
{
    uint8_t *src = malloc(MAX_PLAIN);

    zbuf = malloc(MAX_Z + sizeof(tail));
    out = malloc(MAX_PLAIN);
    want = malloc(MAX_PLAIN);
    dec = inflate_short_new();
    judge = libdeflate_alloc_decompressor();
    if (!src || !zbuf || !out || !want || !dec || !judge)
        return 1;
    guard_setup(MAX_Z + sizeof(tail));
    test_lengths(src);
    test_zlib_settings(src);
    test_libdeflate_levels(src);
    test_cap(src);
    test_truncated(src);
    test_mutations(src);
    test_dynamic_by_hand();
    test_fixed_by_hand();
    test_ends_past_input();
    inflate_short_free(dec);
    libdeflate_free_decompressor(judge);
    free(src);
    free(zbuf);
    free(out);
    free(want);
    return check_done("inflate_short");
}
