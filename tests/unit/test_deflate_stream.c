/* test_deflate_stream.c - the takeover mode's streams against zlib playing
 * the peer: messages that refer to the ones before them (the second of two
 * alike messages is much smaller, and only a peer that kept the window can
 * read it), every window size, the memory counted (nothing before the
 * first message, the worst case never passed, back to zero when freed), a
 * peer's final block, bombs and broken data. */
#include "deflate_stream.h"
#include "deflate.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "check.h"

#define MSG_MAX (1u << 20)

/* A JSON notification of about n bytes, different per seed. */
static size_t json(char *out, size_t n, unsigned seed)
{
    static const char *const words[] = {"order", "shipped", "payment", "received", "status"};
    size_t len = (size_t)snprintf(out, n, "{\"type\":\"notification\",\"id\":%u,\"text\":\"", seed);

    for (unsigned i = seed; len + 12 < n; i = i * 1103515245u + 12345u)
        len += (size_t)snprintf(out + len, n - len, "%s ", words[(i >> 16) % 5]);
    len += (size_t)snprintf(out + len, n - len, "\"}");
    return len;
}

/* The peer's side of the server's stream: inflates with the window it
 * kept. */
static size_t peer_inflate(z_stream *s, const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
    uint8_t in[8192];

    memcpy(in, p, n);
    memcpy(in + n, "\x00\x00\xff\xff", 4);
    s->next_in = in;
    s->avail_in = (uInt)(n + 4);
    s->next_out = out;
    s->avail_out = (uInt)cap;
    CHECK(inflate(s, Z_SYNC_FLUSH) == Z_OK && s->avail_in == 0);
    return cap - s->avail_out;
}

/* The peer's compressor: one message, sync-flushed, 00 00 ff ff off. */
static size_t peer_deflate(z_stream *s, const void *p, size_t n, uint8_t *out, size_t cap)
{
    s->next_in = (Bytef *)p;
    s->avail_in = (uInt)n;
    s->next_out = out;
    s->avail_out = (uInt)cap;
    CHECK(deflate(s, Z_SYNC_FLUSH) == Z_OK && s->avail_in == 0);
    return cap - s->avail_out - 4;
}

static void test_server_to_peer(unsigned bits)
{
    _Atomic uint64_t gauge = 0;
    struct deflate_takeover *t = deflate_takeover_new(bits, 0, &gauge);
    z_stream peer = {0};
    char msg[2048];
    uint8_t back[4096];
    ssize_t first = 0;

    CHECK(t && inflateInit2(&peer, -(int)bits) == Z_OK);
    /* No stream before the first message: the record alone. */
    CHECKF(gauge == deflate_takeover_bytes(t) && gauge < 128, "bits %u: %zu bytes idle", bits,
           (size_t)gauge);
    for (unsigned i = 0; i < 20; i++) {
        /* Alike messages, each a little different: the next refers to the
         * one before, as far back as zlib reaches (its window less 262
         * bytes of lookahead). */
        size_t n = json(msg, bits > 9 ? 400 : 200, 3);

        msg[n - 3] = (char)('a' + i);
        struct iovec iov[2] = {{msg, 10}, {msg + 10, n - 10}};
        const uint8_t *z;
        ssize_t zn = deflate_takeover_compress(t, iov, 2, &z);

        CHECKF(zn > 0, "bits %u message %u: %zd", bits, i, zn);
        if (zn <= 0)
            break;
        if (!i)
            first = zn;
        else
            CHECKF(zn * 3 < first, "bits %u: message %u takes %zd bytes, the first %zd", bits, i,
                   zn, first);
        CHECKF(peer_inflate(&peer, z, (size_t)zn, back, sizeof(back)) == n &&
                   !memcmp(back, msg, n), "bits %u: message %u differs", bits, i);
    }
    CHECKF(gauge <= deflate_takeover_worst(bits, 0), "bits %u: %zu bytes, worst %zu", bits,
           (size_t)gauge, deflate_takeover_worst(bits, 0));
    CHECK(gauge == deflate_takeover_bytes(t));
    deflate_takeover_free(t);
    CHECKF(gauge == 0, "bits %u: %zu bytes after free", bits, (size_t)gauge);
    inflateEnd(&peer);
}

static void test_peer_to_server(unsigned bits)
{
    _Atomic uint64_t gauge = 0;
    struct deflate_takeover *t = deflate_takeover_new(0, bits, &gauge);
    z_stream peer = {0};
    char msg[2048];
    uint8_t z[4096];

    CHECK(t && deflateInit2(&peer, 6, Z_DEFLATED, -(int)bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    for (unsigned i = 0; i < 10; i++) {
        size_t n = json(msg, 1000, i % 3);
        size_t zn = peer_deflate(&peer, msg, n, z, sizeof(z));
        const uint8_t *out;
        size_t len;
        int r = deflate_takeover_inflate(t, z, zn, MSG_MAX, &out, &len);

        CHECKF(r == 0 && len == n && !memcmp(out, msg, n), "bits %u message %u: %d", bits, i, r);
    }
    CHECKF(gauge <= deflate_takeover_worst(0, bits), "bits %u: %zu bytes, worst %zu", bits,
           (size_t)gauge, deflate_takeover_worst(0, bits));
    deflate_takeover_free(t);
    CHECK(gauge == 0);
    deflateEnd(&peer);
}

/* A peer that ends a message with a final block, then goes on referring to
 * it: the window outlives the block. */
static void test_final_block(void)
{
    _Atomic uint64_t gauge = 0;
    struct deflate_takeover *t = deflate_takeover_new(0, 11, &gauge);
    char msg[600];
    uint8_t z[2048];
    size_t n = json(msg, sizeof(msg), 7), zn;
    z_stream peer = {0};
    const uint8_t *out;
    size_t len;

    CHECK(deflateInit2(&peer, 6, Z_DEFLATED, -11, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    peer.next_in = (Bytef *)msg;
    peer.avail_in = (uInt)n;
    peer.next_out = z;
    peer.avail_out = sizeof(z);
    CHECK(deflate(&peer, Z_FINISH) == Z_STREAM_END);
    zn = sizeof(z) - peer.avail_out;
    CHECK(deflate_takeover_inflate(t, z, zn, MSG_MAX, &out, &len) == 0 && len == n &&
          !memcmp(out, msg, n));
    /* The same text again, as a back-reference into the first message. */
    CHECK(deflateReset(&peer) == Z_OK && deflateSetDictionary(&peer, (Bytef *)msg, (uInt)n) == Z_OK);
    zn = peer_deflate(&peer, msg, n, z, sizeof(z));
    CHECK(zn < n / 4);
    CHECK(deflate_takeover_inflate(t, z, zn, MSG_MAX, &out, &len) == 0 && len == n &&
          !memcmp(out, msg, n));
    deflateEnd(&peer);
    deflate_takeover_free(t);
}

static void test_bounds(void)
{
    _Atomic uint64_t gauge = 0;
    struct deflate_takeover *t = deflate_takeover_new(0, 11, &gauge);
    z_stream peer = {0};
    uint8_t *zeros = calloc(1, 1u << 20), z[8192];
    const uint8_t *out;
    size_t len, zn;

    CHECK(deflateInit2(&peer, 9, Z_DEFLATED, -11, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zn = peer_deflate(&peer, zeros, 1u << 20, z, sizeof(z));
    /* One byte past max is refused, max itself is not. */
    CHECK(deflate_takeover_inflate(t, z, zn, (1u << 20) - 1, &out, &len) == -EMSGSIZE);
    deflate_takeover_free(t);
    t = deflate_takeover_new(0, 11, &gauge);
    CHECK(deflate_takeover_inflate(t, z, zn, 1u << 20, &out, &len) == 0 && len == 1u << 20);
    CHECK(deflate_takeover_inflate(t, (const uint8_t *)"\xff\xff\xff", 3, MSG_MAX, &out, &len) ==
          -EINVAL);
    deflate_takeover_free(t);
    CHECK(gauge == 0);
    deflateEnd(&peer);
    free(zeros);
}

/* The stateless inflater (deflate.c) given room after the payload: it
 * borrows it for the tail and puts it back, and gives what it gives with
 * the payload copied (room under 9 bytes); a peer's sync-flushed message
 * and a final block alike, and a bomb still refused. */
static void test_inflate_borrowed(void)
{
    static const uint8_t after[16] = "next frame bytes";
    char text[4096];
    uint8_t buf[8192], peer_z[8192];
    z_stream zs = {0};

    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    for (unsigned i = 0; i < 40; i++) {
        size_t n = json(text, 160 + i * 97, i), zn;
        const uint8_t *msg, *ours;

        if (i % 2) {
            deflateReset(&zs);
            zn = peer_deflate(&zs, text, n, peer_z, sizeof(peer_z));
        } else {
            bool fast = i % 4, short_enc = fast && n <= 512;
            ssize_t r = deflate_compress(text, n, fast ? DEFLATE_FAST : DEFLATE_SMALL, &ours);

            CHECK(r > 0);
            zn = r > 0 ? (size_t)r : 0;
            memcpy(peer_z, ours, zn);
            /* The first block's type (bits 1-2): fixed codes are the
             * short-message encoder's, up to 512 bytes sent once;
             * libdeflate's are dynamic on these messages. */
            CHECKF(zn && (peer_z[0] & 7) == (short_enc ? 3 : 5),
                   "message %u (%zu bytes, %s): block header %u", i, n,
                   fast ? "fast" : "small", peer_z[0] & 7);
        }
        for (size_t room = 0; room <= sizeof(after); room++) {
            size_t len = 0;

            memcpy(buf, peer_z, zn);
            memcpy(buf + zn, after, sizeof(after));
            CHECKF(deflate_inflate(buf, zn, room, MSG_MAX, &msg, &len) == 0 && len == n &&
                       memcmp(msg, text, n) == 0,
                   "message %u, room %zu", i, room);
            CHECKF(memcmp(buf, peer_z, zn) == 0 && memcmp(buf + zn, after, sizeof(after)) == 0,
                   "message %u, room %zu: the buffer changed", i, room);
        }
    }
    deflateEnd(&zs);
    {
        const uint8_t *msg;
        size_t len;
        uint8_t zeros[4096] = {0}, bomb[64 + sizeof(after)];
        z_stream zb = {0};

        CHECK(deflateInit2(&zb, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        size_t zn = peer_deflate(&zb, zeros, sizeof(zeros), bomb, 64);
        deflateEnd(&zb);
        memcpy(bomb + zn, after, sizeof(after));
        CHECK(deflate_inflate(bomb, zn, sizeof(after), 1000, &msg, &len) == -EMSGSIZE);
        CHECK(memcmp(bomb + zn, after, sizeof(after)) == 0);
    }
}

/* A message sent once that fixed codes cannot shrink (300 bytes drawn from
 * 64 characters, no repeats to match) still goes compressed, with a code
 * built for it (a dynamic block), and inflates back. */
static void test_short_falls_back(void)
{
    char text[300];
    uint32_t x = 12345;
    const uint8_t *z, *msg;
    size_t len = 0;
    uint8_t copy[sizeof(text)];
    ssize_t zn;

    for (size_t i = 0; i < sizeof(text); i++) {
        x = x * 1103515245u + 12345u;
        text[i] = (char)(0x30 + ((x >> 16) & 0x3f));
    }
    zn = deflate_compress(text, sizeof(text), DEFLATE_FAST, &z);
    CHECKF(zn > 0 && (size_t)zn < sizeof(text) && (z[0] & 7) == 5,
           "small alphabet: %zd bytes, block header %u", zn, zn > 0 ? z[0] & 7 : 0);
    if (zn <= 0)
        return;
    memcpy(copy, z, (size_t)zn);
    CHECK(deflate_inflate(copy, (size_t)zn, 0, MSG_MAX, &msg, &len) == 0 &&
          len == sizeof(text) && memcmp(msg, text, len) == 0);
}

int main(void)
{
    for (unsigned bits = 9; bits <= 15; bits++) {
        test_server_to_peer(bits);
        test_peer_to_server(bits);
    }
    test_final_block();
    test_bounds();
    test_inflate_borrowed();
    test_short_falls_back();
    return check_done("deflate_stream");
}
