/* bufring.h - a provided-buffer ring for multishot receives.
 * Why it exists: an idle connection must hold no receive buffer.  Every
 * connection of a worker receives into buffers picked by the kernel from one
 * shared ring; a buffer goes back to the ring as soon as its bytes are
 * consumed.  liburing 2.3 lacks io_uring_setup_buf_ring, so the ring memory
 * is mapped and registered here. */
#ifndef RINGWS_BUFRING_H
#define RINGWS_BUFRING_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

struct bufring {
    struct io_uring_buf_ring *br;
    uint8_t *base;      /* count * size bytes of buffers */
    size_t ring_bytes;  /* mapping of br */
    uint32_t count;     /* a power of two */
    uint32_t size;      /* bytes per buffer */
    uint16_t bgid;
};

/* Maps, fills and registers the ring.  0 or -errno. */
int bufring_create(struct bufring *b, struct io_uring *ring, uint16_t bgid,
                   uint32_t count, uint32_t size);
void bufring_destroy(struct bufring *b, struct io_uring *ring);

static inline uint8_t *bufring_addr(const struct bufring *b, uint16_t bid)
{
    return b->base + (size_t)bid * b->size;
}

/* Hands buffer bid back to the kernel. */
static inline void bufring_recycle(struct bufring *b, uint16_t bid)
{
    io_uring_buf_ring_add(b->br, bufring_addr(b, bid), b->size, bid,
                          io_uring_buf_ring_mask(b->count), 0);
    io_uring_buf_ring_advance(b->br, 1);
}

#endif
