/* fuzz_deflate_short.c - round trip: the short-message encoder's output for
 * the input, inflated by zlib (raw, 15-bit window, the 00 00 ff ff tail an
 * RFC 7692 peer appends), must be the input; a cap just under the full
 * stream must give 0 and nothing written past cap + DEFLATE_SHORT_SLACK.
 *
 * Why it exists: an encoder writes what every peer has to read; a length,
 * distance or bit that is off shows up here as data that does not come
 * back or a stream zlib refuses.  The state is kept between inputs, as a
 * worker keeps it, so each input meets the stale entries of the ones
 * before; an input starting with 0xff moves the table's base forward to near its
 * wrap. */
#include <zlib.h>

#include "fuzz_common.h"
#include "deflate_short.h"

static struct deflate_short enc;
static bool enc_ready;

static size_t inflate_raw(const uint8_t *z, size_t zn, uint8_t *out, size_t cap)
{
    z_stream s = {0};
    uint8_t *in = malloc(zn + 4);
    int r;

    FUZZ_CHECK(in != NULL && inflateInit2(&s, -15) == Z_OK, "zlib set-up");
    memcpy(in, z, zn);
    memcpy(in + zn, "\x00\x00\xff\xff", 4);
    s.next_in = in;
    s.avail_in = (uInt)(zn + 4);
    s.next_out = out;
    s.avail_out = (uInt)cap;
    r = inflate(&s, Z_SYNC_FLUSH);
    FUZZ_CHECK(r == Z_STREAM_END && s.avail_in == 4, "zlib: %d (%s), %u bytes left", r,
               s.msg ? s.msg : "", s.avail_in);
    inflateEnd(&s);
    free(in);
    return cap - s.avail_out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = fuzz_dup(data, size); /* exactly size bytes: reads past it trap */
    size_t cap = size + size / 8 + 16, zn, back_n;
    uint8_t *z = malloc(cap + DEFLATE_SHORT_SLACK), *back = malloc(size + 1);

    FUZZ_CHECK(z != NULL && back != NULL, "out of memory");
    if (!enc_ready) {
        deflate_short_init(&enc);
        enc_ready = true;
    }
    if (size && data[0] == 0xff && enc.base < UINT32_MAX - (uint32_t)(size * 2))
        enc.base = UINT32_MAX - (uint32_t)(size * 2); /* forward only, as in use */
    zn = deflate_short_compress(&enc, p, size, z, cap);
    FUZZ_CHECK(zn > 0 && zn <= cap, "%zu bytes compressed to %zu, room for %zu", size, zn, cap);
    back_n = inflate_raw(z, zn, back, size + 1);
    FUZZ_CHECK(back_n == size && memcmp(back, data, size) == 0,
               "%zu bytes came back as %zu others", size, back_n);

    /* One byte short of the stream: 0, and the slack is all it wrote. */
    memset(z, 0xa5, cap + DEFLATE_SHORT_SLACK);
    FUZZ_CHECK(deflate_short_compress(&enc, p, size, z, zn - 1) == 0,
               "a stream of %zu bytes fitted %zu", zn, zn - 1);
    for (size_t i = zn - 1 + DEFLATE_SHORT_SLACK; i < cap + DEFLATE_SHORT_SLACK; i++)
        FUZZ_CHECK(z[i] == 0xa5, "byte %zu written past cap %zu + slack", i, zn - 1);
    free(p);
    free(z);
    free(back);
    return 0;
}
