/* unmask.c - in-place unmasking of client payloads.
 *
 * Why it exists: every byte a client sends in a frame is XORed with a 4-byte
 * key, and a large message crosses this loop once.  The key is rotated once
 * up front so that no loop cares where in the key the buffer starts; since
 * every step is a multiple of four bytes, one rotated key serves them all.
 * Unaligned loads and stores keep it correct for any alignment; long runs
 * are aligned first because stores across cache lines are slow.
 *
 * The scalar version works 64-bit words, which the compiler already turns
 * into SSE2 on every x86-64 (a hand-written SSE2 loop measured no faster);
 * where the CPU has AVX2, runs of 256 bytes and more go 32 bytes per XOR.
 * Below that the vector set-up costs more than it saves.  Runs under 32
 * bytes, and the last bytes (under 8) of any run, never go byte by byte:
 * one XOR per set bit of their count (ws_unmask_short in unmask.h). */
#include "unmask.h"
#include "simd.h"

#include <string.h>

#if SIMD_X86
#include <immintrin.h>
#endif

/* XORs p[i..n) where p[0] takes key byte `offset`: 32-byte blocks of four
 * words, words, then the last 1-7 bytes with ws_unmask_short.  Also the
 * head and tail of the vector versions.  (Letting ws_unmask_short take all
 * of the last 31 bytes measured slower for runs of 128 bytes and 4 KiB.) */
static inline void unmask_words(uint8_t *p, size_t i, size_t n, const uint8_t mask[4],
                                unsigned offset)
{
    uint32_t key = ws_unmask_key(mask, offset + i);
    uint64_t key64 = key * 0x0000000100000001ull;

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
    if (i < n)
        ws_unmask_short(p + i, n - i, key);
}

unsigned ws_unmask_scalar(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset)
{
    unmask_words(p, 0, n, mask, offset);
    return (unsigned)((offset + n) & 3);
}

#if SIMD_X86
/* Stores that straddle cache lines cost extra on every step, so long runs
 * first unmask up to `align - 1` bytes to reach an aligned address; short
 * ones would spend more on that than they save. */
#define UNMASK_ALIGN_MIN 512

static inline size_t unmask_head(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset,
                                 size_t align)
{
    size_t h = (size_t)(-(uintptr_t)p) & (align - 1);

    if (n < UNMASK_ALIGN_MIN || h == 0)
        return 0;
    unmask_words(p, 0, h, mask, offset);
    return h;
}

__attribute__((target("avx2")))
unsigned ws_unmask_avx2(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset)
{
    size_t i = unmask_head(p, n, mask, offset, 32);
    __m256i k = _mm256_set1_epi32((int)ws_unmask_key(mask, offset + i));

    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(p + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(p + i + 96));
        _mm256_storeu_si256((__m256i *)(p + i), _mm256_xor_si256(a, k));
        _mm256_storeu_si256((__m256i *)(p + i + 32), _mm256_xor_si256(b, k));
        _mm256_storeu_si256((__m256i *)(p + i + 64), _mm256_xor_si256(c, k));
        _mm256_storeu_si256((__m256i *)(p + i + 96), _mm256_xor_si256(d, k));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        _mm256_storeu_si256((__m256i *)(p + i), _mm256_xor_si256(a, k));
    }
    if (i + 16 <= n) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        _mm_storeu_si128((__m128i *)(p + i), _mm_xor_si128(a, _mm256_castsi256_si128(k)));
        i += 16;
    }
    unmask_words(p, i, n, mask, offset);
    return (unsigned)((offset + n) & 3);
}
#endif

/* Shorter runs stay scalar: see the top of the file. */
#define UNMASK_VEC_MIN 256

typedef unsigned unmask_fn(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);

/* Chosen on first use; every thread that races here picks the same one. */
static unmask_fn *unmask_chosen;

static unmask_fn *unmask_choose(void)
{
#if SIMD_X86
    unmask_fn *f = simd_cpu_has(SIMD_ISA_AVX2) ? ws_unmask_avx2 : ws_unmask_scalar;
#else
    unmask_fn *f = ws_unmask_scalar;
#endif
    __atomic_store_n(&unmask_chosen, f, __ATOMIC_RELAXED);
    return f;
}

/* The first long run: picks the variant, then runs it.  Out of line so
 * that ws_unmask() makes no call of its own, only tail calls, and needs no
 * stack frame on its short path. */
__attribute__((noinline))
static unsigned unmask_first(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset)
{
    return unmask_choose()(p, n, mask, offset);
}

unsigned ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset)
{
    unmask_fn *f;

    if (n < WS_UNMASK_SHORT) {
        ws_unmask_short(p, n, ws_unmask_key(mask, offset));
        return (unsigned)((offset + n) & 3);
    }
    if (n < UNMASK_VEC_MIN)
        return ws_unmask_scalar(p, n, mask, offset);
    f = __atomic_load_n(&unmask_chosen, __ATOMIC_RELAXED);
    return (f ? f : unmask_first)(p, n, mask, offset);
}
