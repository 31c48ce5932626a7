/* siphash.h - SipHash-2-4, a keyed hash (Aumasson and Bernstein, 2012).
 *
 * Why it exists: where peers choose what is hashed (their addresses), a
 * bucket must not be predictable without the per-process key, or one peer
 * could aim its connections at another's budget.  Pure: no state, no I/O. */
#ifndef RINGWS_SIPHASH_H
#define RINGWS_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* The 64-bit SipHash-2-4 of p[0..n) under the 128-bit key k (k[0] holds
 * the key's first eight bytes, little-endian, as in the reference). */
uint64_t siphash24(const uint64_t k[2], const void *p, size_t n);

#endif
