/* unmask.h - in-place XOR of client payloads with the frame's masking key.
 *
 * Why it exists: every client frame is masked (RFC 6455 section 5.3), and the
 * payload is unmasked where it lies in the receive buffer, never copied.  A
 * frame may span receive buffers, so the mask can start at any of its four
 * rotations.  One entry point; faster variants hide behind it.
 *
 * Most frames are small (chat lines, game state, acks), so payloads under
 * WS_UNMASK_SHORT bytes also have an inline form, ws_unmask_short(), that
 * the decoder's whole-frame path uses without a call: a handful of word
 * XORs, whatever the length, instead of a loop and a byte-at-a-time tail. */
#ifndef RINGWS_UNMASK_H
#define RINGWS_UNMASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* XORs p[0..n) with mask[(offset + i) % 4]; returns (offset + n) % 4, the
 * offset to pass for the bytes that follow. */
unsigned ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);

#define WS_UNMASK_SHORT 32

/* The key word (32-bit, or two copies in 64 bits) for the byte `ahead`
 * bytes after the one `key` belongs to: a rotation, whose direction depends
 * on how the word was loaded from memory. */
static inline uint32_t ws_unmask_key_ahead(uint32_t key, size_t ahead)
{
    unsigned s = (unsigned)(ahead & 3) * 8;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (key >> s) | (key << ((32 - s) & 31));
#else
    return (key << s) | (key >> ((32 - s) & 31));
#endif
}

static inline uint64_t ws_unmask_key64_ahead(uint64_t key, size_t ahead)
{
    unsigned s = (unsigned)(ahead & 3) * 8;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (key >> s) | (key << ((64 - s) & 63));
#else
    return (key << s) | (key >> ((64 - s) & 63));
#endif
}

/* The key as a 32-bit word loaded from memory (memcpy), rotated so that its
 * first byte in memory order is mask[offset % 4]: the word to XOR at a byte
 * that takes key byte `offset`.  Shifts, not byte stores, so that vector
 * loads of it do not wait on a failed store forward. */
static inline uint32_t ws_unmask_key(const uint8_t mask[4], size_t offset)
{
    uint32_t m;

    memcpy(&m, mask, sizeof m);
    return ws_unmask_key_ahead(m, offset);
}

/* Unmasks p[0..n), n < WS_UNMASK_SHORT, where `key` is the key word of
 * p[0] (ws_unmask_key): one XOR per set bit of n, 16, 8, 4, 2 and 1 bytes
 * wide, with no loop and no byte-at-a-time tail.  The pieces do not
 * overlap, so a later load of the same bytes (the next reader, or the
 * repeated calls of a benchmark) is forwarded from one store instead of
 * waiting for several to reach the cache.  Nothing outside p[0..n) is
 * read or written.
 *
 * Returns the OR of the unmasked pieces: it has no bit of
 * 0x8080808080808080 set exactly when every unmasked byte is ASCII, which
 * spares a text frame's UTF-8 validator the common case. */
static inline uint64_t ws_unmask_short(uint8_t *p, size_t n, uint32_t key)
{
    uint64_t k = key * 0x0000000100000001ull, seen = 0;

    /* Pieces of 16, 8 and 4 bytes keep the key's rotation. */
    if (n & 16) {
        uint64_t w[2];

        memcpy(w, p, 16);
        w[0] ^= k;
        w[1] ^= k;
        memcpy(p, w, 16);
        seen = w[0] | w[1];
        p += 16;
    }
    if (n & 8) {
        uint64_t w;

        memcpy(&w, p, 8);
        w ^= k;
        memcpy(p, &w, 8);
        seen |= w;
        p += 8;
    }
    if (n & 4) {
        uint32_t w;

        memcpy(&w, p, 4);
        w ^= key;
        memcpy(p, &w, 4);
        seen |= w;
        p += 4;
    }
    if (n & 2) {
        uint16_t w;

        memcpy(&w, p, 2);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        w ^= (uint16_t)key;
#else
        w ^= (uint16_t)(key >> 16);
#endif
        memcpy(p, &w, 2);
        seen |= w;
        p += 2;
        key = ws_unmask_key_ahead(key, 2);
    }
    if (n & 1) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        p[0] ^= (uint8_t)key;
#else
        p[0] ^= (uint8_t)(key >> 24);
#endif
        seen |= p[0];
    }
    return seen;
}

#endif
