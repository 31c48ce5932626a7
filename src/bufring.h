/* bufring.h - a provided-buffer ring for multishot receives.
 * Why it exists: an idle connection must hold no receive buffer.  Every
 * connection of a worker receives into buffers picked by the kernel from one
 * shared ring; a buffer goes back to the ring as soon as its bytes are
 * consumed.  liburing 2.3 lacks io_uring_setup_buf_ring, so the ring memory
 * is mapped and registered here.
 *
 * Where the kernel supports it (6.12+), the ring is incremental
 * (IOU_PBUF_RING_INC): a receive takes only the bytes it needs from the
 * buffer at the head, and the next receive continues in the same buffer, so
 * small messages pack into a few hot pages instead of touching every buffer
 * of the ring in turn.
 *
 * Only a few buffers are posted at first; the rest wait in reserve, never
 * touched, until the kernel runs out (-ENOBUFS) and bufring_grow posts more.
 * The kernel takes posted buffers in ring order and a consumed one goes back
 * at once, so the pages that stay resident follow the most data ever in
 * flight at one time, not the number of connections that ever sent a
 * handshake through the ring; and the loop hands those pages back
 * (bufring_trim) once traffic has fallen, so that a burst of handshakes
 * leaves nothing resident behind it. */
#ifndef RINGWS_BUFRING_H
#define RINGWS_BUFRING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

struct bufring {
    struct io_uring_buf_ring *br;
    uint8_t *base;      /* count * size bytes of buffers */
    uint32_t *used;     /* incremental: bytes of each buffer already handed out */
    size_t ring_bytes;  /* mapping of br */
    uint32_t count;     /* a power of two: the most buffers ever posted */
    uint32_t posted;    /* buffers 0..posted-1 are the kernel's; the rest wait */
    uint32_t size;      /* bytes per buffer */
    uint16_t bgid;
};

/* Maps, fills and registers the ring, incremental if asked and the kernel
 * can.  0 or -errno. */
int bufring_create(struct bufring *b, struct io_uring *ring, uint16_t bgid,
                   uint32_t count, uint32_t size, bool incremental);
/* After -ENOBUFS: doubles the buffers posted, up to count.  false when
 * all of them were posted already. */
bool bufring_grow(struct bufring *b);
/* Gives the pages of every buffer back to the kernel (they read as zeros
 * when next touched).  Only between batches of completions: no buffer's
 * bytes may be waiting to be consumed; the kernel fills the buffers only
 * from this thread's own entry into the ring, so it cannot be writing now. */
void bufring_trim(struct bufring *b);
/* Unmaps the buffers once the ring they were registered with is gone (the
 * registration goes with the ring). */
void bufring_destroy(struct bufring *b);

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

/* Where the `len` bytes of a completion that used buffer bid start.  Call
 * once per such completion, in completion order. */
static inline uint8_t *bufring_take(struct bufring *b, uint16_t bid, uint32_t len)
{
    uint8_t *p = bufring_addr(b, bid);

    if (b->used) {
        p += b->used[bid];
        b->used[bid] += len;
    }
    return p;
}

/* After a completion's bytes are consumed: the buffer goes back to the
 * kernel unless the kernel said it will go on filling it. */
static inline void bufring_release(struct bufring *b, uint16_t bid, uint32_t cqe_flags)
{
    if (b->used) {
        if (cqe_flags & IORING_CQE_F_BUF_MORE)
            return;
        b->used[bid] = 0;
    }
    bufring_recycle(b, bid);
}

#endif
