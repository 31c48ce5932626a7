/* deflate.h - permessage-deflate's message transforms (RFC 7692) in the
 * stateless mode: each message compressed, and inflated, on its own.
 *
 * Why it exists: with no context taken over between messages, no
 * connection holds compression state; a message is one whole-buffer call
 * (libdeflate, docs/ARCHITECTURE.md "Compression").  What the calls need
 * (the compressors, the decompressor, scratch buffers) belongs to the
 * calling thread, made on its first call and freed when it exits: a worker,
 * or an application thread that publishes. */
#ifndef RINGWS_DEFLATE_H
#define RINGWS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Payloads shorter than this are sent plain: below it compression saves a
 * few bytes of a short JSON message for microseconds of CPU (bench/RESULTS.md,
 * "Compression"). */
#define DEFLATE_MIN_SIZE 128

/* How hard to try: a message sent once (an echo) is compressed fast; a
 * publish, compressed once for all its subscribers, for size. */
enum deflate_effort {
    DEFLATE_FAST,
    DEFLATE_SMALL,
    DEFLATE_EFFORTS
};

/* Compresses p[0..n) as one message's payload (a deflate stream whose last
 * block is final, RFC 7692 7.2.3.4), into the thread's scratch: *out is
 * valid until the thread's next call here.  Returns its length; 0 when n is
 * below DEFLATE_MIN_SIZE or it would not be smaller than n (the message then
 * goes plain); -ENOMEM. */
ssize_t deflate_compress(const void *p, size_t n, enum deflate_effort effort,
                         const uint8_t **out);

/* Inflates a received message's payload p[0..n) (RFC 7692 7.2.2: as if
 * 00 00 ff ff followed it) into the thread's scratch, never past max bytes
 * (the work is bounded by about 4/3 of max whatever the input).  `room` is
 * how many bytes past p + n the caller lets it borrow: with 9 or more the
 * tail is written there and the payload inflated where it lies (the bytes
 * are put back before it returns), else the payload is copied to scratch
 * with its tail.  0 with *out and *out_len (valid until the next call
 * here), -EMSGSIZE past max, -EINVAL for data that is not deflate,
 * -ENOMEM. */
int deflate_inflate(uint8_t *p, size_t n, size_t room, size_t max, const uint8_t **out,
                    size_t *out_len);

/* The calling thread's scratch for a compressed message (the one
 * deflate_compress returns), at least n bytes; NULL without memory.  For
 * the streams of the takeover mode (deflate_stream.c). */
uint8_t *deflate_scratch_z(size_t n);

/* The thread's scratch for an inflated message (the one deflate_inflate
 * returns), grown to at least n bytes with its first `keep` kept; NULL
 * without memory. */
uint8_t *deflate_scratch_out(size_t n, size_t keep);

/* Lets go of scratch grown past what ordinary messages need, once a large
 * one is done with. */
void deflate_trim(void);

#endif
