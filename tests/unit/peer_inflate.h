/* peer_inflate.h - a payload inflated the way a permessage-deflate peer
 * does it with zlib: raw, 15-bit window, the 00 00 ff ff of RFC 7692 7.2.2
 * appended.  For the test and the fuzz target that check an encoder whose
 * one block is final against an inflater that is not the project's. */
#ifndef RINGWS_TEST_PEER_INFLATE_H
#define RINGWS_TEST_PEER_INFLATE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* Inflates z[0..zn) into out[0..cap): 0 with *out_len when the stream ended
 * at its final block, right before the tail; else zlib's code (Z_OK: it
 * ran out of room or input; Z_MEM_ERROR: no memory), with s_msg set from
 * zlib's message or NULL. */
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
        /* The block is final: the stream ends before the tail. */
        if (r == Z_STREAM_END)
            r = s.avail_in == 4 ? 0 : Z_DATA_ERROR;
        inflateEnd(&s);
    }
    free(in);
    return r;
}

#endif
