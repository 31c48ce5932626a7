/* fuzz_inflate_short.c - the short-message decoder judged by libdeflate:
 * the input as a deflate stream must decode to what libdeflate makes of it,
 * or be left to libdeflate (-EAGAIN), never anything else; and the input as
 * a message, compressed by zlib as a permessage-deflate peer sends it (its
 * level, strategy, memory level and window taken from the first byte), must
 * be decoded here, to itself.
 *
 * Why it exists: the server takes this decoder's output for the message
 * and gives libdeflate only what this one declines, so a stream it accepts
 * that libdeflate refuses, or decodes differently, would reach the
 * application as a message no other decoder sees.  And a decoder that
 * declined real streams would be correct and useless: the second property
 * keeps it taking them. */
#include "fuzz_common.h"
#include "inflate_short.h"

#include <errno.h>

#include <libdeflate.h>
#include <zlib.h>

#define FUZZ_OUT (64u << 10)

static struct inflate_short *dec;
static struct libdeflate_decompressor *judge;
static uint8_t *out, *want, *z;

/* What the server appends to a received payload (deflate.c). */
static const uint8_t tail[] = {0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff};

static void judge_stream(const uint8_t *data, size_t size)
{
    uint8_t *p = fuzz_dup(data, size); /* exactly size bytes: reads past it trap */
    size_t cap = size && data[0] & 1 ? data[size - 1] : FUZZ_OUT, got = 0;
    ssize_t r = inflate_short(dec, p, size, out, cap);

    FUZZ_CHECK(r >= 0 || r == -EAGAIN, "returned %zd", r);
    if (r >= 0)
        FUZZ_CHECK(libdeflate_deflate_decompress(judge, p, size, want, cap, &got) ==
                               LIBDEFLATE_SUCCESS &&
                       got == (size_t)r && memcmp(want, out, got) == 0,
                   "decoded %zd bytes that libdeflate does not", r);
    free(p);
}

static void round_trip(const uint8_t *data, size_t size)
{
    static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
                                     Z_FIXED};
    unsigned k = size ? data[0] : 0;
    z_stream s = {0};
    size_t zn, zcap = size + size / 8 + 64;
    uint8_t *p;
    ssize_t r;

    if (size > FUZZ_OUT)
        return;
    FUZZ_CHECK(deflateInit2(&s, (int)(k % 10), Z_DEFLATED, -(9 + (int)(k / 10 % 7)),
                            1 + (int)(k / 70 % 9), strategies[k % 5]) == Z_OK,
               "zlib settings %u", k);
    s.next_in = (Bytef *)data;
    s.avail_in = (uInt)size;
    s.next_out = z;
    s.avail_out = (uInt)zcap;
    FUZZ_CHECK(deflate(&s, Z_SYNC_FLUSH) == Z_OK && s.avail_in == 0, "zlib deflate");
    zn = zcap - s.avail_out - 4; /* the 00 00 ff ff a peer takes off */
    deflateEnd(&s);
    memcpy(z + zn, tail, sizeof(tail));
    zn += sizeof(tail);
    p = fuzz_dup(z, zn);
    r = inflate_short(dec, p, zn, out, FUZZ_OUT);
    FUZZ_CHECK(r == (ssize_t)size && memcmp(out, data, size) == 0,
               "%zu bytes (zlib settings %u) came back as %zd", size, k, r);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dec) {
        dec = inflate_short_new();
        judge = libdeflate_alloc_decompressor();
        out = malloc(FUZZ_OUT);
        want = malloc(FUZZ_OUT);
        z = malloc(FUZZ_OUT + FUZZ_OUT / 8 + 64 + sizeof(tail));
        FUZZ_CHECK(dec && judge && out && want && z, "out of memory");
    }
    judge_stream(data, size);
    round_trip(data, size);
    return 0;
}
