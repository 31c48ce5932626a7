/* fuzz_common.h - what every libFuzzer target of ringws shares.
 *
 * Why it exists: the targets check properties (same verdict however the
 * bytes are cut, same answer as a plain reference) rather than only "does
 * not crash", so each needs a way to stop loudly on a broken property, a
 * repeatable way to cut one input into chunks, a way to make a read past
 * the bytes a parser was given fault even when the buffer goes on, and a
 * reference UTF-8 judge.  Keeping these here means one meaning for each,
 * and the targets stay about the parser they exercise.
 *
 * Everything is static inline: each target is one translation unit and uses
 * only some of it. */
#ifndef RINGWS_FUZZ_COMMON_H
#define RINGWS_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define FUZZ_HAVE_ASAN 1
#endif
#endif

/* A broken property is a crash to libFuzzer: abort() makes it save the
 * input, and the message says which property broke. */
#define FUZZ_CHECK(cond, ...)                                               \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: property broken: %s: ", __FILE__,       \
                    __LINE__, #cond);                                       \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* ---- repeatable cuts ------------------------------------------------------
 * Cut sizes come from a generator seeded by a hash of the input, so that a
 * saved input replays with the very same cuts while the corpus files stay
 * plain wire bytes (readable, and usable by other tests as they are).  Any
 * mutation of the input also changes the cuts. */

static inline uint64_t fuzz_hash(const uint8_t *p, size_t n, uint64_t salt)
{
    uint64_t h = 0xcbf29ce484222325ull ^ salt; /* FNV-1a */

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

struct fuzz_rng {
    uint64_t s;
};

static inline uint64_t fuzz_next(struct fuzz_rng *r)
{
    /* splitmix64: any seed, zero included, gives a good stream. */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Next cut size, at least 1.  Mostly tiny, sometimes large: the interesting
 * cuts fall inside headers and code points, the large ones keep the fast
 * paths of the parsers busy. */
static inline size_t fuzz_cut(struct fuzz_rng *r)
{
    uint64_t x = fuzz_next(r);
    static const size_t span[4] = {1, 8, 64, 1024};

    return 1 + (size_t)((x >> 8) % span[x & 3]);
}

/* ---- exact read limits ----------------------------------------------------
 * libFuzzer's input sits in a heap block of exactly its size, so ASan traps a
 * read past its end; but a parser given only buf[start..end) of a larger
 * buffer would read the rest unnoticed.  These poison everything outside the
 * window while the parser runs.  ASan tracks 8-byte granules, so the part
 * before `start` is poisoned only down to a granule boundary; the part after
 * `end` reaches the end of the block and is exact. */

static inline void fuzz_window(const void *block, size_t size, size_t start, size_t end)
{
#ifdef FUZZ_HAVE_ASAN
    const char *b = block;

    ASAN_POISON_MEMORY_REGION(b, start);
    ASAN_POISON_MEMORY_REGION(b + end, size - end);
#else
    (void)block, (void)size, (void)start, (void)end;
#endif
}

static inline void fuzz_window_clear(const void *block, size_t size)
{
#ifdef FUZZ_HAVE_ASAN
    ASAN_UNPOISON_MEMORY_REGION(block, size);
#else
    (void)block, (void)size;
#endif
}

/* Heap copy of exactly n bytes (at least one byte is allocated so that an
 * empty input still has an address), so any read past it faults. */
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);

    FUZZ_CHECK(q != NULL, "out of memory");
    if (n)
        memcpy(q, p, n);
    return q;
}

/* ---- reference UTF-8 ------------------------------------------------------
 * Written from RFC 3629 alone, on purpose unlike the table-driven validator
 * it judges: decode the lead byte, then after every byte ask whether any
 * Unicode scalar value of the right length still begins with the bits seen.
 * The first byte after which none does is where the input became invalid. */

enum fuzz_utf8_verdict {
    FUZZ_UTF8_VALID,   /* ends between code points */
    FUZZ_UTF8_PARTIAL, /* valid so far, ends inside a code point */
    FUZZ_UTF8_INVALID,
};

/* Whether a scalar value of at least `min` exists whose leading bits are
 * `acc` followed by `free_groups` unknown 6-bit groups. */
static inline bool fuzz_utf8_completable(uint32_t acc, unsigned free_groups, uint32_t min)
{
    uint32_t lo = acc << (6 * free_groups);
    uint32_t hi = lo | ((1u << (6 * free_groups)) - 1);

    if (lo < min)
        lo = min;
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    if (lo > hi)
        return false;
    return !(lo >= 0xD800 && hi <= 0xDFFF); /* only surrogates remain */
}

/* Judges p[0..n).  When INVALID, *bad is the index of the byte that made it
 * so; when `after` is not NULL, after[i] receives the verdict of p[0..i]
 * (VALID or PARTIAL) for every i before that byte. */
static inline enum fuzz_utf8_verdict fuzz_utf8_ref(const uint8_t *p, size_t n,
                                            size_t *bad, uint8_t *after)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = p[i];
        unsigned len;
        uint32_t acc, min;

        if (b < 0x80) {
            len = 1, acc = b, min = 0;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, acc = b & 0x1F, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, acc = b & 0x0F, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, acc = b & 0x07, min = 0x10000;
        } else {
            *bad = i;
            return FUZZ_UTF8_INVALID;
        }
        for (unsigned k = 0; k < len; k++) {
            if (i + k == n)
                return FUZZ_UTF8_PARTIAL;
            if (k > 0) {
                if ((p[i + k] & 0xC0) != 0x80) {
                    *bad = i + k;
                    return FUZZ_UTF8_INVALID;
                }
                acc = acc << 6 | (p[i + k] & 0x3F);
            }
            if (!fuzz_utf8_completable(acc, len - 1 - k, min)) {
                *bad = i + k;
                return FUZZ_UTF8_INVALID;
            }
            if (after)
                after[i + k] = k + 1 == len ? FUZZ_UTF8_VALID : FUZZ_UTF8_PARTIAL;
        }
        i += len;
    }
    return FUZZ_UTF8_VALID;
}

/* ---- reference close payload rules ----------------------------------------
 * RFC 6455 sections 5.5.1 and 7.4 as frame.h states them; used by the close
 * target and by the frame target for every close frame it decodes. */

/* The codes a peer may send: 1000-1003, 1007-1014 (1012-1014 registered
 * with IANA after RFC 6455), 3000-4999. */
static inline bool fuzz_close_code_ok(uint16_t c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
           (c >= 3000 && c <= 4999);
}

/* 0 and the code for a valid payload (1005 when empty), else the code to
 * answer with: 1002 for one byte or a code no peer may send, 1007 for a
 * reason that is not UTF-8. */
static inline uint16_t fuzz_close_ref(const uint8_t *p, size_t n, uint16_t *code)
{
    size_t bad;

    if (n == 0) {
        *code = 1005;
        return 0;
    }
    if (n == 1)
        return 1002;
    *code = (uint16_t)(p[0] << 8 | p[1]);
    if (!fuzz_close_code_ok(*code))
        return 1002;
    if (fuzz_utf8_ref(p + 2, n - 2, &bad, NULL) != FUZZ_UTF8_VALID)
        return 1007;
    return 0;
}

#endif
