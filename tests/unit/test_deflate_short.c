/* test_deflate_short.c - the short-message encoder against two independent
 * inflaters: zlib (raw, 15-bit window, the 00 00 ff ff tail appended as an
 * RFC 7692 peer does) and libdeflate.  Inputs of every length to 300 and
 * around each boundary the encoder has (its 4-byte minimum match, 258-byte
 * maximum, 32 KiB window, 64 KiB), random, JSON-shaped and runs of one
 * byte, each placed before a guard page; one state for all of them, so
 * every message meets the entries that the ones before left in its table,
 * and a state whose base wraps; the cap, and the slack past it. */
#include "deflate_short.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

#include "check.h"
#include "guard.h"
#include "peer_inflate.h"

#define MAX_IN (64u << 10)

static struct deflate_short enc;
static struct libdeflate_decompressor *ld;
static uint8_t *zbuf, *back;
static size_t zcap;

static size_t zlib_inflate(const uint8_t *z, size_t zn, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *msg;
    int r = peer_inflate(z, zn, out, cap, &n, &msg);

    CHECKF(r == 0, "zlib: %d (%s)", r, msg ? msg : "");
    return n;
}

/* Compresses p[0..n) (placed before the guard page) with room to spare,
 * checks both inflaters give it back; returns the compressed length. */
static size_t round_trip(const uint8_t *src, size_t n, const char *what)
{
    const uint8_t *p = guard_place(src, n);
    size_t zn = deflate_short_compress(&enc, p, n, zbuf, zcap), got = 0;

    CHECKF(zn > 0, "%s, %zu bytes: no output", what, n);
    if (!zn)
        return 0;
    CHECKF(zlib_inflate(zbuf, zn, back, MAX_IN + 1) == n && memcmp(back, src, n) == 0,
           "%s, %zu bytes: zlib gives back something else", what, n);
    CHECKF(libdeflate_deflate_decompress(ld, zbuf, zn, back, MAX_IN + 1, &got) ==
                   LIBDEFLATE_SUCCESS && got == n && memcmp(back, src, n) == 0,
           "%s, %zu bytes: libdeflate gives back something else", what, n);
    return zn;
}

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng();
}

static void fill_json(uint8_t *p, size_t n, unsigned seed)
{
    static const char *const words[] = {"order", "shipped", "payment", "received",
                                        "status", "the", "your", "update"};
    size_t len = 0;

    while (len < n) {
        char item[96];
        int k = snprintf(item, sizeof(item), "{\"id\":%u,\"user\":\"%s\",\"text\":\"%s %s\"},",
                         seed++, words[rng() % 8], words[rng() % 8], words[rng() % 8]);
        size_t take = (size_t)k < n - len ? (size_t)k : n - len;

        memcpy(p + len, item, take);
        len += take;
    }
}

/* Lengths where the encoder changes what it does. */
static const size_t boundaries[] = {
    255, 256, 257, 258, 259, 260, 261, 262, 263, 511, 512, 513, 1023, 1024, 1025,
    4095, 4096, 4097, 32767, 32768, 32769, 32770, 32771, 32772, 65535, 65536,
};

static void test_lengths(uint8_t *src)
{
    for (size_t n = 0; n <= 300; n++) {
        fill_random(src, n);
        round_trip(src, n, "random");
        fill_json(src, n, (unsigned)n);
        round_trip(src, n, "json");
        memset(src, 'a' + (int)(n % 26), n);
        round_trip(src, n, "one byte");
    }
    for (size_t b = 0; b < sizeof(boundaries) / sizeof(boundaries[0]); b++) {
        size_t n = boundaries[b];

        fill_random(src, n);
        round_trip(src, n, "random");
        fill_json(src, n, (unsigned)n);
        round_trip(src, n, "json");
        memset(src, 0, n);
        round_trip(src, n, "zeros");
        /* Random blocks repeated: matches of every length to the maximum. */
        for (size_t i = 0; i < n;) {
            size_t run = 1 + rng() % 300, from = i > 0 ? rng() % i : 0;

            for (size_t k = 0; k < run && i < n; k++, i++)
                src[i] = i > from && rng() % 8 ? src[from + k] : (uint8_t)rng();
        }
        round_trip(src, n, "repeats");
    }
}

/* A 16-byte marker, then one byte repeated, then the marker again at a
 * distance of 32,768 (the window: a match) or 32,769 (one past it: the
 * marker goes as literals).  Both round-trip; the first is smaller by
 * about the marker's literals. */
static void test_max_distance(uint8_t *src)
{
    static const uint8_t mark[16] = "0123456789ABCDEF";
    size_t z[2];

    for (int past = 0; past < 2; past++) {
        size_t d = 32768 + (size_t)past;

        memcpy(src, mark, sizeof(mark));
        memset(src + sizeof(mark), 'x', d - sizeof(mark));
        memcpy(src + d, mark, sizeof(mark));
        z[past] = round_trip(src, d + sizeof(mark), "marker at the window's edge");
    }
    CHECKF(z[0] + 8 < z[1], "no match at distance 32768: %zu against %zu bytes", z[0], z[1]);
}

/* 0 when the stream would not fit the cap, and nothing written past cap +
 * DEFLATE_SHORT_SLACK; a stream of exactly cap bytes fits. */
static void test_cap(uint8_t *src)
{
    uint8_t out[600];

    for (size_t n = 1; n <= 512; n++) {
        size_t full, cap;

        fill_json(src, n, 7);
        full = deflate_short_compress(&enc, guard_place(src, n), n, zbuf, zcap);
        CHECK(full > 0);
        for (cap = full > 2 ? full - 2 : 0; cap <= full; cap++) {
            size_t z;

            memset(out, 0xa5, sizeof(out));
            z = deflate_short_compress(&enc, guard_place(src, n), n, out, cap);
            CHECKF(z == (cap >= full ? full : 0), "%zu bytes, cap %zu: %zu (full %zu)", n, cap,
                   z, full);
            for (size_t i = cap + DEFLATE_SHORT_SLACK; i < sizeof(out); i++)
                CHECKF(out[i] == 0xa5, "%zu bytes, cap %zu: byte %zu written", n, cap, i);
        }
        fill_random(src, n);
        CHECK(deflate_short_compress(&enc, guard_place(src, n), n, out, n - 1) == 0);
    }
}

/* A base near the end of its range (moved forward, as use moves it): the
 * table is cleared, not misread. */
static void test_wrap(uint8_t *src)
{
    for (int i = 0; i < 64; i++) {
        size_t n = 100 + rng() % 4000;

        deflate_short_init(&enc);
        fill_json(src, n, (unsigned)i + 1000);
        round_trip(src, n, "before the wrap");
        enc.base = UINT32_MAX - (uint32_t)(rng() % 8000);
        fill_json(src, n, (unsigned)i);
        round_trip(src, n, "base wrapping");
        round_trip(src, n, "after the wrap");
    }
}

/* The ratio on JSON stays what bench/RESULTS.md reports (a bound loose
 * enough for any input of this shape, tight enough to catch matches lost). */
static void test_ratio(uint8_t *src)
{
    size_t plain = 0, z = 0;

    for (unsigned i = 0; i < 64; i++) {
        fill_json(src, 1024, i * 100);
        plain += 1024;
        z += round_trip(src, 1024, "ratio");
    }
    CHECKF(z * 10 < plain * 6, "JSON of 1 KiB: %zu of %zu bytes", z, plain);
}

int main(void)
{
    uint8_t *src = malloc(MAX_IN + 16);

    zcap = MAX_IN + MAX_IN / 8 + 64;
    zbuf = malloc(zcap + DEFLATE_SHORT_SLACK);
    back = malloc(MAX_IN + 1);
    ld = libdeflate_alloc_decompressor();
    if (!src || !zbuf || !back || !ld)
        return 1;
    guard_setup(MAX_IN);
    deflate_short_init(&enc);
    test_lengths(src);
    test_max_distance(src);
    test_cap(src);
    test_wrap(src);
    test_ratio(src);
    libdeflate_free_decompressor(ld);
    free(src);
    free(zbuf);
    free(back);
    return check_done("deflate_short");
}
