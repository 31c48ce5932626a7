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
#include "fuzz_common.h"
#include "../unit/peer_inflate.h"
#include "deflate_short.h"

static struct deflate_short enc;
static bool enc_ready;

static size_t inflate_raw(const uint8_t *z, size_t zn, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *msg;
    int r = peer_inflate(z, zn, out, cap, &n, &msg);

    FUZZ_CHECK(r == 0, "zlib: %d (%s)", r, msg ? msg : "");
    return n;
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
