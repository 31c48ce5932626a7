/* deflate.c - whole-message compression and inflation with libdeflate, and
 * short messages sent once with deflate_short.c, with what each thread
 * needs made on its first call.
 *
 * Why it exists: the stateless mode of permessage-deflate needs no stream
 * state between messages, which is exactly what libdeflate's whole-buffer
 * calls do, faster than zlib on these payloads (bench/RESULTS.md); its
 * bounded output buffer is also the decompression bomb's bound.  The
 * per-thread part is a few hundred KiB per worker, not per connection. */
#include "deflate.h"
#include "deflate_short.h"
#include "inflate_short.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <libdeflate.h>

/* libdeflate's levels for each effort (bench/RESULTS.md, "Compression"). */
static const int deflate_levels[DEFLATE_EFFORTS] = {1, 6};

/* Up to this size a message sent once goes through the short-message
 * encoder: 4-11x fewer instructions than libdeflate level 1, for 11-21 %
 * more bytes; beyond it the bytes cost more and the saving shrinks
 * (bench/RESULTS.md, "A compressor for short messages"). */
#define DEFLATE_SHORT_MAX 512

/* Up to this many bytes of payload (and its tail) a received message is
 * inflated by the short-message decoder first: as far as its cheaper
 * set-up still outweighs libdeflate's faster loop (about 1 KiB of JSON
 * inflated, bench/RESULTS.md "A decoder for short messages"). */
#define DEFLATE_INFLATE_SHORT_MAX 384

/* Appended to a received payload before inflating: the 00 00 ff ff that
 * RFC 7692 7.2.2 restores (ending a sync-flushed stream with an empty
 * stored block), then a final empty stored block, since libdeflate wants a
 * final block to end on.  A stream that already ended in a final block
 * (as ours do) never reads them. */
static const uint8_t deflate_tail[] = {0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff};

/* Scratch kept between messages; larger is let go by deflate_trim. */
#define DEFLATE_KEEP (64u << 10)

struct deflate_thread {
    struct libdeflate_compressor *comp[DEFLATE_EFFORTS];
    struct deflate_short *short_enc;
    struct inflate_short *short_dec;
    struct libdeflate_decompressor *decomp;
    uint8_t *in, *out; /* inflating: the input with its tail, the message */
    size_t in_cap, out_cap;
    uint8_t *z;        /* compressing: kept apart, since what is compressed
                        * may be a message just inflated (an echo) */
    size_t z_cap;
};

static pthread_key_t deflate_key;
static pthread_once_t deflate_once = PTHREAD_ONCE_INIT;
static bool deflate_key_ok;
static __thread struct deflate_thread *deflate_self;

static void deflate_thread_free(void *arg)
{
    struct deflate_thread *t = arg;

    for (unsigned i = 0; i < DEFLATE_EFFORTS; i++)
        libdeflate_free_compressor(t->comp[i]);
    libdeflate_free_decompressor(t->decomp);
    free(t->short_enc);
    inflate_short_free(t->short_dec);
    free(t->in);
    free(t->out);
    free(t->z);
    free(t);
}

static void deflate_key_create(void)
{
    deflate_key_ok = pthread_key_create(&deflate_key, deflate_thread_free) == 0;
}

static struct deflate_thread *deflate_thread(void)
{
    struct deflate_thread *t = deflate_self;

    if (t)
        return t;
    pthread_once(&deflate_once, deflate_key_create);
    if (!deflate_key_ok || !(t = calloc(1, sizeof(*t))))
        return NULL;
    if (pthread_setspecific(deflate_key, t) != 0) {
        free(t);
        return NULL;
    }
    deflate_self = t;
    return t;
}

/* Makes *buf hold at least n bytes, its first `keep` kept. */
static int deflate_room_keep(uint8_t **buf, size_t *cap, size_t n, size_t keep)
{
    uint8_t *b;

    if (*cap >= n)
        return 0;
    if (keep) {
        if (!(b = realloc(*buf, n)))
            return -ENOMEM;
    } else {
        if (!(b = malloc(n)))
            return -ENOMEM;
        free(*buf);
    }
    *buf = b;
    *cap = n;
    return 0;
}

static int deflate_room(uint8_t **buf, size_t *cap, size_t n)
{
    return deflate_room_keep(buf, cap, n, 0);
}

uint8_t *deflate_scratch_z(size_t n)
{
    struct deflate_thread *t = deflate_thread();

    return t && deflate_room(&t->z, &t->z_cap, n) == 0 ? t->z : NULL;
}

uint8_t *deflate_scratch_out(size_t n, size_t keep)
{
    struct deflate_thread *t = deflate_thread();

    return t && deflate_room_keep(&t->out, &t->out_cap, n, keep) == 0 ? t->out : NULL;
}

/* A short message sent once: into n - 1 bytes (and the encoder's slack),
 * or 0 when it would not be smaller. */
static ssize_t deflate_compress_short(struct deflate_thread *t, const void *p, size_t n,
                                      const uint8_t **out)
{
    if (!t->short_enc) {
        if (!(t->short_enc = malloc(sizeof(*t->short_enc))))
            return -ENOMEM;
        deflate_short_init(t->short_enc);
    }
    if (deflate_room(&t->z, &t->z_cap, n - 1 + DEFLATE_SHORT_SLACK) < 0)
        return -ENOMEM;
    *out = t->z;
    return (ssize_t)deflate_short_compress(t->short_enc, p, n, t->z, n - 1);
}

ssize_t deflate_compress(const void *p, size_t n, enum deflate_effort effort,
                         const uint8_t **out)
{
    struct deflate_thread *t;
    size_t bound, z;

    if (n < DEFLATE_MIN_SIZE)
        return 0;
    if (!(t = deflate_thread()))
        return -ENOMEM;
    if (effort == DEFLATE_FAST && n <= DEFLATE_SHORT_MAX) {
        ssize_t r = deflate_compress_short(t, p, n, out);

        /* Fixed codes gain only through repeats: a text of a small
         * alphabet without them shrinks only with a code built for it. */
        if (r != 0)
            return r;
    }
    if (!t->comp[effort] && !(t->comp[effort] = libdeflate_alloc_compressor(deflate_levels[effort])))
        return -ENOMEM;
    /* Only a result smaller than the message is any use: n - 1 bytes of
     * room, and libdeflate gives up (0) beyond them. */
    bound = n - 1;
    if (deflate_room(&t->z, &t->z_cap, bound) < 0)
        return -ENOMEM;
    z = libdeflate_deflate_compress(t->comp[effort], p, n, t->z, bound);
    *out = t->z;
    return (ssize_t)z;
}

/* Inflates in[0..n) (the payload and its tail) into the thread's output
 * scratch: a short payload through the short-message decoder first, and
 * whatever it leaves (invalid data included) through libdeflate, whose
 * verdict stands. */
static int deflate_inflate_tailed(struct deflate_thread *t, const uint8_t *in, size_t n,
                                  size_t max, const uint8_t **out, size_t *out_len)
{
    bool short_tried = n > DEFLATE_INFLATE_SHORT_MAX + sizeof(deflate_tail);
    size_t cap;

    /* Guess, then grow by 4: a bomb costs at most 4/3 of max in output
     * written before it is refused. */
    cap = n * 4 > DEFLATE_KEEP ? n * 4 : DEFLATE_KEEP;
    if (t->out_cap > cap)
        cap = t->out_cap;
    for (;;) {
        enum libdeflate_result r;

        if (cap > max)
            cap = max;
        if (deflate_room(&t->out, &t->out_cap, cap ? cap : 1) < 0)
            return -ENOMEM;
        if (!short_tried) {
            ssize_t z = inflate_short(t->short_dec, in, n, t->out, cap);

            short_tried = true;
            if (z >= 0) {
                *out = t->out;
                *out_len = (size_t)z;
                return 0;
            }
        }
        r = libdeflate_deflate_decompress(t->decomp, in, n, t->out, cap, out_len);
        if (r == LIBDEFLATE_SUCCESS) {
            *out = t->out;
            return 0;
        }
        if (r != LIBDEFLATE_INSUFFICIENT_SPACE)
            return -EINVAL;
        if (cap >= max)
            return -EMSGSIZE;
        cap = cap > max / 4 ? max : cap * 4;
    }
}

int deflate_inflate(uint8_t *p, size_t n, size_t room, size_t max, const uint8_t **out,
                    size_t *out_len)
{
    struct deflate_thread *t = deflate_thread();
    uint8_t kept[sizeof(deflate_tail)];
    int r;

    if (!max) /* no limit: still one the size arithmetic cannot pass */
        max = SIZE_MAX / 8;
    if (!t || (!t->decomp && !(t->decomp = libdeflate_alloc_decompressor())) ||
        (!t->short_dec && !(t->short_dec = inflate_short_new())))
        return -ENOMEM;
    if (room >= sizeof(deflate_tail)) {
        memcpy(kept, p + n, sizeof(kept));
        memcpy(p + n, deflate_tail, sizeof(deflate_tail));
        r = deflate_inflate_tailed(t, p, n + sizeof(deflate_tail), max, out, out_len);
        memcpy(p + n, kept, sizeof(kept));
        return r;
    }
    if (deflate_room(&t->in, &t->in_cap, n + sizeof(deflate_tail)) < 0)
        return -ENOMEM;
    memcpy(t->in, p, n);
    memcpy(t->in + n, deflate_tail, sizeof(deflate_tail));
    return deflate_inflate_tailed(t, t->in, n + sizeof(deflate_tail), max, out, out_len);
}

void deflate_trim(void)
{
    struct deflate_thread *t = deflate_self;

    if (t && t->out_cap > DEFLATE_KEEP) {
        free(t->out);
        t->out = NULL;
        t->out_cap = 0;
    }
    if (t && t->z_cap > DEFLATE_KEEP) {
        free(t->z);
        t->z = NULL;
        t->z_cap = 0;
    }
    if (t && t->in_cap > DEFLATE_KEEP) {
        free(t->in);
        t->in = NULL;
        t->in_cap = 0;
    }
}
