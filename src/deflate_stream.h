/* deflate_stream.h - permessage-deflate with context takeover (RFC 7692
 * 7.1.1): a connection's own compression streams, kept between messages.
 *
 * Why it exists: on the paths configured for it, a peer that allows it gets
 * each message compressed against the ones before it (a better ratio on
 * small, alike messages), at the price of a zlib stream per direction per
 * connection.  That state is made on the first compressed message of its
 * direction (an idle connection holds none), sized by the negotiated
 * window, and every byte zlib allocates for it is counted: the connection
 * knows its own, and a counter given at creation (the worker's gauge) the
 * sum.  One thread uses a connection's streams: its worker. */
#ifndef RINGWS_DEFLATE_STREAM_H
#define RINGWS_DEFLATE_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct deflate_takeover;

/* The most a connection's state can take for these windows (bits 9..15,
 * 0 for a direction without context): what a per-worker cap reserves for
 * it at the upgrade, so that a stream made later never meets the cap. */
size_t deflate_takeover_worst(unsigned tx_bits, unsigned rx_bits);

/* A connection's takeover record (no stream yet: they come with their
 * first message): tx_bits, the server's compressor's window (0: its
 * messages go stateless, deflate.h), rx_bits the peer's (0: inflated
 * stateless).  gauge counts its bytes (the record's included) until
 * deflate_takeover_free.  NULL without memory. */
struct deflate_takeover *deflate_takeover_new(unsigned tx_bits, unsigned rx_bits,
                                              _Atomic uint64_t *gauge);

void deflate_takeover_free(struct deflate_takeover *t);

/* Whether each direction takes context over. */
unsigned deflate_takeover_tx_bits(const struct deflate_takeover *t);
unsigned deflate_takeover_rx_bits(const struct deflate_takeover *t);

/* Bytes the record and its streams hold now. */
size_t deflate_takeover_bytes(const struct deflate_takeover *t);

/* Payloads shorter than this are sent plain: a stream's message costs a
 * sync flush (5 bytes) and a header of its own, more than a few bytes
 * saved. */
#define DEFLATE_TAKEOVER_MIN_SIZE 32

/* Compresses one message, whose payload is the pieces iov[0..n), through
 * the server's stream (made now if it is the first): a sync-flushed deflate
 * block with its 00 00 ff ff taken off (RFC 7692 7.2.1), at *out in the
 * thread's scratch until its next compression.  The peer's window then
 * holds the message: it must be sent, compressed, in this order.  Returns
 * its length, or -ENOMEM with the stream as it was (the message may go
 * plain). */
ssize_t deflate_takeover_compress(struct deflate_takeover *t, const struct iovec *iov,
                                  unsigned n, const uint8_t **out);

/* Inflates a received message's payload p[0..n) through the peer's stream
 * (made now if it is the first), as deflate_inflate does (never past max
 * bytes; *out in the thread's scratch): 0, -EMSGSIZE past max, -EINVAL for
 * data that is not deflate, -ENOMEM.  After an error the stream is of no
 * more use: the connection must be failed. */
int deflate_takeover_inflate(struct deflate_takeover *t, const uint8_t *p, size_t n, size_t max,
                             const uint8_t **out, size_t *out_len);

#endif
