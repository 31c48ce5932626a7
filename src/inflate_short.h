/* inflate_short.h - a deflate decoder for short messages, whose set-up
 * costs what the message's Huffman codes use, not what the alphabets could.
 *
 * Why it exists: in the stateless mode every received message is a deflate
 * stream of its own, and the clients that matter (browsers, zlib) send a
 * dynamic block even for 100 bytes.  A general decoder builds full decode
 * tables for each one: about 10k instructions for a 200-byte message with
 * libdeflate, five times the rest of an echo (bench/RESULTS.md, "A decoder
 * for short messages").  This one sorts only the symbols a code uses, fills
 * small tables and decodes the rare long codes canonically.
 *
 * It takes only what it is built for: streams whose codes are complete, in
 * an output of bounded size.  Anything else, invalid data included, is left
 * to the general decoder (deflate.c), which gives the verdict; so this one
 * never accepts what that one would refuse (tests/fuzz/fuzz_inflate_short.c
 * checks it).  Pure: the caller owns the tables every call reads (made
 * once) and the output; nothing is kept between calls. */
#ifndef RINGWS_INFLATE_SHORT_H
#define RINGWS_INFLATE_SHORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The tables every call reads: the fixed codes and the bit reversals. */
struct inflate_short;

/* Makes the tables (about 4 KiB); NULL without memory. */
struct inflate_short *inflate_short_new(void);
void inflate_short_free(struct inflate_short *s);

/* Inflates the raw deflate stream in[0..n), which must end with a final
 * block, into out[0..cap).  Returns the inflated length, or -EAGAIN when it
 * was not decoded here: data this decoder does not take, data that is not
 * deflate, or an output longer than cap. */
ssize_t inflate_short(const struct inflate_short *s, const uint8_t *in, size_t n, uint8_t *out,
                      size_t cap);

#endif
