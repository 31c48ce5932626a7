/* sha1.c - SHA-1 as FIPS 180-4 section 6.1 specifies it: 512-bit blocks,
 * the message padded with a 1 bit, zeros and its bit length (big-endian),
 * eighty rounds per block over a sixteen-word rolling schedule. */
#include "sha1.h"

#include <string.h>

static inline uint32_t sha1_rotl(uint32_t x, unsigned b)
{
    return (x << b) | (x >> (32 - b));
}

static inline uint32_t sha1_load_be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void sha1_block(uint32_t h[5], const uint8_t *blk)
{
    uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

    for (unsigned t = 0; t < 16; t++)
        w[t] = sha1_load_be(blk + 4 * t);
    for (unsigned t = 0; t < 80; t++) {
        uint32_t f, k, tmp;

        if (t >= 16) {
            uint32_t x = w[(t + 13) & 15] ^ w[(t + 8) & 15] ^ w[(t + 2) & 15] ^ w[t & 15];
            w[t & 15] = sha1_rotl(x, 1);
        }
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        tmp = sha1_rotl(a, 5) + f + e + k + w[t & 15];
        e = d;
        d = c;
        c = sha1_rotl(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void sha1(const void *p, size_t n, uint8_t md[SHA1_LEN])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const uint8_t *in = p;
    uint64_t bits = (uint64_t)n * 8;
    uint8_t tail[128] = {0};
    size_t rest = n % 64, tail_len = rest < 56 ? 64 : 128;

    for (; n >= 64; n -= 64, in += 64)
        sha1_block(h, in);
    if (rest)
        memcpy(tail, in, rest);
    tail[rest] = 0x80;
    for (unsigned i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tail_len == 128)
        sha1_block(h, tail + 64);
    for (unsigned i = 0; i < 5; i++) {
        md[4 * i] = (uint8_t)(h[i] >> 24);
        md[4 * i + 1] = (uint8_t)(h[i] >> 16);
        md[4 * i + 2] = (uint8_t)(h[i] >> 8);
        md[4 * i + 3] = (uint8_t)h[i];
    }
}
