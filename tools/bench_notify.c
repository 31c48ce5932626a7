/* bench_notify.c - the echo mode's JSON notifications (--notifications).
 *
 * Why it exists: the payload a permessage-deflate server is judged on is
 * what browsers send it, short JSON that compresses, compressed by the
 * client with RSV1 set; the echo mode's pseudo-random bytes neither
 * compress nor look like it.  A pool of distinct notifications of exactly
 * --size bytes (ids, times, users and words varying per entry, so that no
 * one input trains the server's branch predictors) is built once at
 * start-up, and with --deflate each entry is compressed once there too, as
 * a browser would (zlib, raw deflate, level 6, 15-bit window, each message
 * on its own ending in a sync flush whose 00 00 ff ff is dropped: RFC 7692
 * 7.2.1), so that sending compressed costs the generator no more per
 * message than sending plain. */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define NOTIFY_TAIL "\",\"items\":[]}"

/* Entry i's head: everything before the text.  Its length, or 0 when it
 * does not fit in cap. */
static size_t notify_head(char *out, size_t cap, unsigned i, unsigned x)
{
    static const char *const users[] = {"alice", "bob", "carol", "dmitri", "eve", "farida"};
    int n = snprintf(out, cap,
                     "{\"type\":\"notification\",\"id\":%u,\"ts\":%u,\"user\":{\"id\":%u,"
                     "\"name\":\"%s\"},\"priority\":\"normal\",\"text\":\"",
                     100000 + i, 1733500000u + i * 7, 4000 + x % 997, users[x % 6]);

    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* Entry i, exactly size bytes: the head, words up to the room left (the
 * last one cut where the room ends), the tail.  -EINVAL when size cannot
 * hold the head and tail. */
static int notify_write(uint8_t *out, size_t size, unsigned i)
{
    static const char *const words[] = {"order", "shipped", "payment", "received", "the",
                                        "your", "is", "on", "its", "way", "update", "status",
                                        "account", "new", "message", "from", "team"};
    unsigned x = i * 2654435761u + 12345;
    char head[256];
    size_t h = notify_head(head, sizeof head, i, x), t = sizeof(NOTIFY_TAIL) - 1, at;

    if (!h || h + t > size)
        return -EINVAL;
    memcpy(out, head, h);
    for (at = h; at < size - t;) {
        const char *w;
        size_t n;

        x = x * 1103515245u + 12345;
        w = words[(x >> 16) % (sizeof words / sizeof words[0])];
        n = strlen(w);
        if (n > size - t - at)
            n = size - t - at;
        memcpy(out + at, w, n);
        at += n;
        if (at < size - t)
            out[at++] = ' ';
    }
    memcpy(out + at, NOTIFY_TAIL, t);
    return 0;
}

/* Compresses every entry on its own into n->z; 0 or -ENOMEM / -EPROTO. */
static int notify_compress(struct bench_notify *n)
{
    size_t cap = (size_t)n->count * (n->size + BENCH_NOTIFY_SLACK), used = 0;
    z_stream zs = {0};
    int ret = 0;

    n->z = malloc(cap);
    n->z_off = malloc((n->count + 1) * sizeof *n->z_off);
    if (!n->z || !n->z_off)
        return -ENOMEM;
    if (deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    for (unsigned i = 0; i < n->count && !ret; i++) {
        size_t room = n->size + BENCH_NOTIFY_SLACK, len;

        n->z_off[i] = (uint32_t)used;
        zs.next_in = n->plain + (size_t)i * n->size;
        zs.avail_in = (uInt)n->size;
        zs.next_out = n->z + used;
        zs.avail_out = (uInt)room;
        /* Room left over means the whole flush was written; it ends in
         * the empty stored block's 00 00 ff ff, which the sender drops. */
        if (deflate(&zs, Z_SYNC_FLUSH) != Z_OK || zs.avail_in || !zs.avail_out ||
            (len = room - zs.avail_out) < 4 ||
            memcmp(n->z + used + len - 4, "\x00\x00\xff\xff", 4) ||
            deflateReset(&zs) != Z_OK)
            ret = -EPROTO;
        else
            used += len - 4;
    }
    n->z_off[n->count] = (uint32_t)used;
    deflateEnd(&zs);
    return ret;
}

int notify_build(struct bench_notify *n, size_t size, bool deflate)
{
    int ret;

    *n = (struct bench_notify){.count = BENCH_NOTIFY_COUNT, .size = size};
    if (size < BENCH_NOTIFY_MIN || size > BENCH_NOTIFY_MAX)
        return -EINVAL;
    if (!(n->plain = malloc((size_t)n->count * size)))
        return -ENOMEM;
    for (unsigned i = 0; i < n->count; i++)
        if ((ret = notify_write(n->plain + (size_t)i * size, size, i + 1)) < 0)
            return ret;
    return deflate ? notify_compress(n) : 0;
}

void notify_free(struct bench_notify *n)
{
    free(n->plain);
    free(n->z);
    free(n->z_off);
    *n = (struct bench_notify){0};
}
