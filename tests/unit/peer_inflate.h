/* peer_inflate.h - a payload inflated the way a permessage-deflate peer
 * does it with zlib: raw, 15-bit window, the 00 00 ff ff of RFC 7692 7.2.2
 * appended.  For the test and the fuzz target that check an encoder whose
 * one block is final against an inflater that is not the project's, and
 * for the load generator's messages, which end in a sync flush as a
 * browser's do. */
#ifndef RINGWS_TEST_PEER_INFLATE_H
#define RINGWS_TEST_PEER_INFLATE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* What peer_inflate returns for a stream read whole, tail included, with
 * no final block in it: a message whose sender ended it with a sync flush
 * (RFC 7692 7.2.1).  Not a zlib code: zlib's Z_OK is 0. */
#define PEER_INFLATE_OPEN 1

/* Inflates z[0..zn) into out[0..cap), *out_len the bytes it gave: 0 when
 * the stream ended at its final block, right before the tail;
 * PEER_INFLATE_OPEN; else zlib's code (Z_BUF_ERROR: out of room;
 * Z_MEM_ERROR: no memory), with s_msg set from zlib's message or NULL. */
static inline int peer_inflate(const uint8_t *z, size_t zn, uint8_t *out, size_t cap,
                               size_t *out_len, const char **s_msg)
{
    z_stream s = {0};
    uint8_t *in = malloc(zn + 4);
    int r = Z_MEM_ERROR;

    *s_msg = NULL;
    if (in && inflateInit2(&s, -15) == Z_OK) {
        memcpy(in, z, zn);
        memcpy(in + zn, "\x00\x00\xff\xff", 4);
        s.next_in = in;
        s.avail_in = (uInt)(zn + 4);
        s.next_out = out;
        s.avail_out = (uInt)cap;
        r = inflate(&s, Z_SYNC_FLUSH);
        *s_msg = s.msg;
        *out_len = cap - s.avail_out;
        /* A final block ends the stream before the tail; without one,
         * zlib reads all of it and waits for more. */
        if (r == Z_STREAM_END)
            r = s.avail_in == 4 ? 0 : Z_DATA_ERROR;
        else if (r == Z_OK)
            r = s.avail_in ? Z_BUF_ERROR : PEER_INFLATE_OPEN;
        inflateEnd(&s);
    }
    free(in);
    return r;
}

#endif
