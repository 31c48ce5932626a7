/* ws_client.h - a test client's frames: masked, as RFC 6455 requires of a
 * client, with payloads up to 65535 bytes (a 7- or 16-bit length).
 *
 * Why it exists: the C tests that talk to the server over real sockets
 * (test_api, test_pubsub_threads) build their frames with this one
 * encoder. */
#ifndef RINGWS_TEST_WS_CLIENT_H
#define RINGWS_TEST_WS_CLIENT_H

#include <stdint.h>
#include <string.h>

#define WS_CLIENT_MAX_PAYLOAD 65535u
#define WS_CLIENT_MAX_HEADER 8u /* 2 + 16-bit length + mask */

/* Writes the frame into out (WS_CLIENT_MAX_HEADER + n bytes at most) and
 * returns its length; first is FIN | RSV | opcode.  n must not pass
 * WS_CLIENT_MAX_PAYLOAD. */
static inline size_t ws_client_frame(uint8_t *out, unsigned first, const void *p, size_t n)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 2;

    out[0] = (uint8_t)first;
    if (n < 126) {
        out[1] = (uint8_t)(0x80 | n);
    } else {
        out[1] = 0x80 | 126;
        out[2] = (uint8_t)(n >> 8);
        out[3] = (uint8_t)n;
        h = 4;
    }
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        out[h + i] = ((const uint8_t *)p)[i] ^ mask[i % 4];
    return h + n;
}

#endif
