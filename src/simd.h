/* simd.h - run-time choice of vector code, and the variants behind it.
 *
 * Why it exists: the release build must run on any x86-64 (SSE2 only), yet
 * the byte loops that see every payload byte (unmasking, UTF-8 validation,
 * header scanning) are several times faster with wider vectors.  Each of
 * those files keeps a scalar twin and compiles its vector versions with
 * target attributes; the entry point picks one the first time it runs.
 *
 * The variants are declared here, not in the modules' own headers, so that
 * the unit test can hold each one against its scalar twin while the rest of
 * the program only ever sees ws_unmask(), utf8_feed() and the HTTP parser.
 * Header only: the fuzzers compile each module on its own. */
#ifndef RINGWS_SIMD_H
#define RINGWS_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SIMD_X86 1
#else
#define SIMD_X86 0
#endif

enum simd_isa {
    SIMD_ISA_SSE2,  /* every x86-64 */
    SIMD_ISA_SSSE3, /* pshufb, palignr */
    SIMD_ISA_AVX2,
};

static inline bool simd_cpu_has(enum simd_isa isa)
{
#if SIMD_X86
    __builtin_cpu_init(); /* idempotent; callers may run before constructors */
    switch (isa) {
    case SIMD_ISA_SSE2:
        return true;
    case SIMD_ISA_SSSE3:
        return __builtin_cpu_supports("ssse3");
    case SIMD_ISA_AVX2:
        return __builtin_cpu_supports("avx2");
    }
#endif
    (void)isa;
    return false;
}

/* unmask.c: same contract as ws_unmask(). */
unsigned ws_unmask_scalar(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);
#if SIMD_X86
unsigned ws_unmask_avx2(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);
#endif

/* utf8.c: same contract as utf8_feed(). */
enum utf8_result utf8_feed_scalar(struct utf8_state *s, const uint8_t *p, size_t n);
#if SIMD_X86
enum utf8_result utf8_feed_ssse3(struct utf8_state *s, const uint8_t *p, size_t n);
enum utf8_result utf8_feed_avx2(struct utf8_state *s, const uint8_t *p, size_t n);
#endif

/* http_parse.c: the first byte in [p, end) below 0x20 or equal to 0x7f, or
 * end. */
const char *http_scan_ctl_scalar(const char *p, const char *end);
#if SIMD_X86
const char *http_scan_ctl_sse2(const char *p, const char *end);
const char *http_scan_ctl_avx2(const char *p, const char *end);
#endif

#endif
