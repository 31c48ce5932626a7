/* deflate_short.h - a deflate encoder for short messages: one block of
 * fixed Huffman codes (RFC 1951 3.2.6), greedy matches from a hash table
 * that is never cleared between messages.
 *
 * Why it exists: a general compressor spends most of a short message's
 * cost setting itself up (clearing hash tables, building and sending
 * Huffman codes: about 45k instructions for 200 bytes with libdeflate level
 * 1, bench/RESULTS.md).  A message sent once (an echo, ringws_send) is
 * compressed here for a few thousand instructions, at some bytes more; a
 * publish, compressed once for all its subscribers, still goes through
 * libdeflate (deflate.c).  Pure: the caller owns the state and the output. */
#ifndef RINGWS_DEFLATE_SHORT_H
#define RINGWS_DEFLATE_SHORT_H

#include <stddef.h>
#include <stdint.h>

#define DEFLATE_SHORT_HASH_BITS 12

/* Bytes past `cap` that deflate_short_compress may write (whole words of
 * its bit buffer) before it finds that the stream does not fit. */
#define DEFLATE_SHORT_SLACK 8

/* The encoder's state between messages: the fixed codes, made once, and
 * the hash table, whose entries are positions counted from a base that
 * every message moves past, so an entry left by an earlier message is
 * seen as stale instead of being cleared. */
struct deflate_short {
    uint32_t base;
    uint16_t lit[256];   /* literal's code, bit-reversed, and its length */
    uint8_t lit_bits[256];
    uint32_t len[256];   /* match length - 3: code and extra bits, packed */
    uint8_t len_bits[256];
    uint8_t dist[30];    /* distance code, bit-reversed (5 bits) */
    uint32_t head[1u << DEFLATE_SHORT_HASH_BITS];
};

void deflate_short_init(struct deflate_short *s);

/* Compresses in[0..n) into out as one raw deflate stream whose only block
 * is final.  out must have room for cap + DEFLATE_SHORT_SLACK bytes.
 * Returns the stream's length, or 0 when it would be longer than cap. */
size_t deflate_short_compress(struct deflate_short *s, const uint8_t *in, size_t n,
                              uint8_t *out, size_t cap);

#endif
