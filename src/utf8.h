/* utf8.h - incremental UTF-8 validation (RFC 3629) for text messages.
 *
 * Why it exists: RFC 6455 requires text messages (and close reasons) to be
 * valid UTF-8 and the connection failed with 1007 at the first bad byte, even
 * when a message arrives in many fragments.  The validator keeps its state
 * between calls so that a code point may be split anywhere. */
#ifndef RINGWS_UTF8_H
#define RINGWS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct utf8_state {
    uint32_t state; /* 0: between code points; other: mid-sequence; 1: rejected */
};

enum utf8_result {
    UTF8_VALID = 0,    /* everything so far is valid, no sequence pending */
    UTF8_PARTIAL = 1,  /* valid so far, ends inside a code point */
    UTF8_INVALID = -1, /* some byte can never be part of valid UTF-8 */
};

static inline void utf8_init(struct utf8_state *s) { s->state = 0; }

/* Feeds n bytes.  Rejects at the first byte that makes the input invalid
 * whatever follows (overlong forms, surrogates, > U+10FFFF, stray
 * continuation bytes, truncated sequences followed by a non-continuation).
 * Once invalid, stays invalid. */
enum utf8_result utf8_feed(struct utf8_state *s, const uint8_t *p, size_t n);

/* One-shot check of a complete string. */
bool utf8_valid(const uint8_t *p, size_t n);

#endif
