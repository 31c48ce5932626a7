/* deflate_stream.c - the takeover mode's zlib streams: made on first use,
 * every allocation counted, sync-flushed per message.
 *
 * Why it exists: libdeflate compresses whole buffers only; a stream that
 * keeps its window between messages is zlib's.  zlib's memory comes
 * through this file's allocator, so that the bytes a connection holds are
 * known exactly (and its worker's gauge with them), and the window and hash
 * sizes follow the negotiated window bits rather than zlib's 32 KiB
 * defaults (deflate_takeover_worst says what they cost). */
#include "deflate_stream.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "deflate.h"

struct deflate_takeover {
    z_stream *tx, *rx;      /* NULL until the first message that way */
    _Atomic uint64_t *gauge;
    size_t bytes;
    uint8_t tx_bits, rx_bits;
};

/* zlib's own bookkeeping beyond the window and hash tables (its
 * deflate_state is about 5.9 KiB, inflate_state about 7.2 KiB on 64-bit),
 * with the z_stream and the allocator's headers: a bound the unit test
 * checks against what the streams really take. */
#define DT_STATE_SLACK (8u << 10)

/* Each allocation carries its size ahead of it (16 bytes keep zlib's
 * alignment). */
#define DT_HEAD 16

/* The stream and its hash table scale with the window: zlib's default pairs
 * a 15-bit window with memLevel 8; 2 KiB of window needs far fewer hash
 * chains than 32 KiB.  memLevel 1 (bits 9 and 10) is zlib's least. */
static int dt_mem_level(unsigned bits)
{
    return bits > 10 ? (int)bits - 9 : 1;
}

size_t deflate_takeover_worst(unsigned tx_bits, unsigned rx_bits)
{
    size_t n = sizeof(struct deflate_takeover) + DT_HEAD;

    /* zconf.h: deflate needs (1 << (windowBits + 2)) + (1 << (memLevel + 9)),
     * inflate 1 << windowBits, each beside its state. */
    if (tx_bits)
        n += ((size_t)1 << (tx_bits + 2)) + ((size_t)1 << (dt_mem_level(tx_bits) + 9)) +
             DT_STATE_SLACK;
    if (rx_bits)
        n += ((size_t)1 << rx_bits) + DT_STATE_SLACK;
    return n;
}

static void dt_count(struct deflate_takeover *t, ssize_t delta)
{
    t->bytes += (size_t)delta;
    /* Only the owning worker writes its gauge: a relaxed load and store. */
    atomic_store_explicit(t->gauge,
                          atomic_load_explicit(t->gauge, memory_order_relaxed) + (uint64_t)delta,
                          memory_order_relaxed);
}

static void *dt_alloc(void *opaque, uInt items, uInt size)
{
    struct deflate_takeover *t = opaque;
    size_t n = (size_t)items * size + DT_HEAD;
    uint8_t *p = malloc(n);

    if (!p)
        return NULL;
    memcpy(p, &n, sizeof(n));
    dt_count(t, (ssize_t)n);
    return p + DT_HEAD;
}

static void dt_free(void *opaque, void *q)
{
    uint8_t *p = (uint8_t *)q - DT_HEAD;
    size_t n;

    memcpy(&n, p, sizeof(n));
    dt_count(opaque, -(ssize_t)n);
    free(p);
}

struct deflate_takeover *deflate_takeover_new(unsigned tx_bits, unsigned rx_bits,
                                              _Atomic uint64_t *gauge)
{
    struct deflate_takeover boot = {.gauge = gauge}, *t;
    uint8_t *p = dt_alloc(&boot, 1, sizeof(*t));

    if (!p)
        return NULL;
    t = (struct deflate_takeover *)p;
    *t = (struct deflate_takeover){.gauge = gauge, .bytes = boot.bytes,
                                   .tx_bits = (uint8_t)tx_bits, .rx_bits = (uint8_t)rx_bits};
    return t;
}

static void dt_stream_free(struct deflate_takeover *t, z_stream **s, bool tx)
{
    if (!*s)
        return;
    if (tx)
        deflateEnd(*s);
    else
        inflateEnd(*s);
    dt_free(t, *s);
    *s = NULL;
}

void deflate_takeover_free(struct deflate_takeover *t)
{
    if (!t)
        return;
    dt_stream_free(t, &t->tx, true);
    dt_stream_free(t, &t->rx, false);
    dt_free(t, t); /* the record counts itself: the gauge is back where it was */
}

unsigned deflate_takeover_tx_bits(const struct deflate_takeover *t)
{
    return t->tx_bits;
}

unsigned deflate_takeover_rx_bits(const struct deflate_takeover *t)
{
    return t->rx_bits;
}

size_t deflate_takeover_bytes(const struct deflate_takeover *t)
{
    return t->bytes;
}

/* zlib's level for the server's streams: the fastest that finds the
 * previous message of alike JSON (levels 1 and 2 insert too few strings
 * into the hash to see it: a repeated 1.5 KiB notification takes 250 and
 * 90 bytes at them, 49 at 3, 24 at 6), since every delivery to every such
 * subscriber is compressed on its own stream. */
#define DT_LEVEL 3

/* The stream of one direction, made on its first message: raw deflate
 * (negative window bits). */
static z_stream *dt_stream(struct deflate_takeover *t, bool tx)
{
    z_stream **sp = tx ? &t->tx : &t->rx, *s;
    int r;

    if (*sp)
        return *sp;
    if (!(s = dt_alloc(t, 1, sizeof(*s))))
        return NULL;
    *s = (z_stream){.zalloc = dt_alloc, .zfree = dt_free, .opaque = t};
    if (tx)
        r = deflateInit2(s, DT_LEVEL, Z_DEFLATED, -(int)t->tx_bits, dt_mem_level(t->tx_bits),
                         Z_DEFAULT_STRATEGY);
    else
        r = inflateInit2(s, -(int)t->rx_bits);
    if (r != Z_OK) {
        dt_free(t, s);
        return NULL;
    }
    return *sp = s;
}

ssize_t deflate_takeover_compress(struct deflate_takeover *t, const struct iovec *iov,
                                  unsigned n, const uint8_t **out)
{
    z_stream *s = dt_stream(t, true);
    size_t total = 0, room;
    uint8_t *buf;

    if (!s)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].iov_len;
    /* Room for the worst the stream can make of it and the flush's empty
     * stored block: deflate never stops short, so the stream only moves
     * once the whole message fits. */
    room = deflateBound(s, total) + 16;
    if (room > UINT_MAX || !(buf = deflate_scratch_z(room)))
        return -ENOMEM;
    s->next_out = buf;
    s->avail_out = (uInt)room;
    for (unsigned i = 0; i < n; i++) {
        int r;

        s->next_in = iov[i].iov_base;
        s->avail_in = (uInt)iov[i].iov_len;
        r = deflate(s, i + 1 == n ? Z_SYNC_FLUSH : Z_NO_FLUSH);
        if ((r != Z_OK && r != Z_BUF_ERROR) || s->avail_in)
            return -EIO;
    }
    total = room - s->avail_out;
    if (!s->avail_out || total < 4 || memcmp(buf + total - 4, "\x00\x00\xff\xff", 4))
        return -EIO;
    *out = buf;
    return (ssize_t)(total - 4);
}

/* A peer's message ended in a final block (RFC 7692 7.2.3.3 allows it): the
 * stream starts again for the next message with the window it had. */
static int dt_inflate_restart(z_stream *s)
{
    uint8_t window[1u << 15];
    uInt len = sizeof(window);

    if (inflateGetDictionary(s, window, &len) != Z_OK || inflateReset(s) != Z_OK ||
        (len && inflateSetDictionary(s, window, len) != Z_OK))
        return -EINVAL;
    return 0;
}

int deflate_takeover_inflate(struct deflate_takeover *t, const uint8_t *p, size_t n, size_t max,
                             const uint8_t **out, size_t *out_len)
{
    /* RFC 7692 7.2.2: the 00 00 ff ff the sender took off. */
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    const uint8_t *in[2] = {p, tail};
    const size_t in_len[2] = {n, sizeof(tail)};
    z_stream *s = dt_stream(t, false);
    size_t got = 0, cap;
    uint8_t *buf;

    if (!max || max > UINT_MAX - 1) /* no limit: still one zlib can count */
        max = UINT_MAX - 1;
    if (!s)
        return -ENOMEM;
    /* Guess, then grow by 4, up to one byte past max: that byte made means
     * the message is too big, whatever the input. */
    cap = n * 4 > (64u << 10) ? n * 4 : (64u << 10);
    if (cap > max + 1)
        cap = max + 1;
    if (!(buf = deflate_scratch_out(cap, 0)))
        return -ENOMEM;
    for (unsigned i = 0; i < 2; i++) {
        s->next_in = (Bytef *)in[i];
        s->avail_in = (uInt)in_len[i];
        do {
            int r;

            if (got == cap) {
                if (cap > max)
                    return -EMSGSIZE;
                cap = cap > (max + 1) / 4 ? max + 1 : cap * 4;
                if (!(buf = deflate_scratch_out(cap, got)))
                    return -ENOMEM;
            }
            s->next_out = buf + got;
            s->avail_out = (uInt)(cap - got);
            r = inflate(s, Z_SYNC_FLUSH);
            got = cap - s->avail_out;
            if (r == Z_STREAM_END) {
                if (got > max)
                    return -EMSGSIZE;
                *out = buf;
                *out_len = got;
                return dt_inflate_restart(s);
            }
            if (r == Z_BUF_ERROR && s->avail_out)
                break; /* all input taken, all output made */
            if (r == Z_MEM_ERROR)
                return -ENOMEM;
            if (r != Z_OK && r != Z_BUF_ERROR)
                return -EINVAL;
        } while (s->avail_in || !s->avail_out);
    }
    if (got > max)
        return -EMSGSIZE;
    *out = buf;
    *out_len = got;
    return 0;
}
