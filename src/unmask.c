/* unmask.c - scalar in-place unmasking of client payloads.
 *
 * Why it exists: every byte a client sends in a frame is XORed with a 4-byte
 * key, and a large message crosses this loop once, so it works a 64-bit word
 * at a time.  The key is rotated once up front so that the word loop does
 * not care where in the key the buffer starts; memcpy loads and stores keep
 * it correct for any alignment (they compile to plain moves). */
#include "unmask.h"

#include <string.h>

unsigned ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset)
{
    uint8_t key[8];
    uint64_t key64;
    size_t i = 0;

    for (unsigned k = 0; k < 8; k++)
        key[k] = mask[(offset + k) & 3];
    memcpy(&key64, key, sizeof key64);

    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];

        memcpy(w, p + i, sizeof w);
        w[0] ^= key64;
        w[1] ^= key64;
        w[2] ^= key64;
        w[3] ^= key64;
        memcpy(p + i, w, sizeof w);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;

        memcpy(&w, p + i, sizeof w);
        w ^= key64;
        memcpy(p + i, &w, sizeof w);
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
    return (unsigned)((offset + n) & 3);
}
