/* siphash.c - SipHash-2-4 as specified in "SipHash: a fast short-input PRF"
 * (Aumasson, Bernstein 2012): two compression rounds per 8-byte word, four
 * finalization rounds, the length in the top byte of the last word. */
#include "siphash.h"

static inline uint64_t sip_rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static inline void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = sip_rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = sip_rotl(v[0], 32);
    v[2] += v[3];
    v[3] = sip_rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = sip_rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = sip_rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = sip_rotl(v[2], 32);
}

/* Little-endian load of up to 8 bytes. */
static uint64_t sip_load(const uint8_t *p, size_t n)
{
    uint64_t m = 0;

    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

static void sip_compress(uint64_t v[4], uint64_t m)
{
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

uint64_t siphash24(const uint64_t k[2], const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t v[4] = {k[0] ^ 0x736f6d6570736575ull, k[1] ^ 0x646f72616e646f6dull,
                     k[0] ^ 0x6c7967656e657261ull, k[1] ^ 0x7465646279746573ull};
    size_t whole = n & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8)
        sip_compress(v, sip_load(p + i, 8));
    sip_compress(v, sip_load(p + whole, n - whole) | (uint64_t)(n & 0xff) << 56);
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}
