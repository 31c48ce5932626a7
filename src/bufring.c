/* bufring.c - mapping and registering a provided-buffer ring by hand. */
#include "bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Enough for handshakes, pings and small messages of many connections at
 * once (incremental buffers pack them), few enough pages to stay small. */
#define BUFRING_FIRST_POSTED 16

static void bufring_post(struct bufring *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        io_uring_buf_ring_add(b->br, bufring_addr(b, (uint16_t)(b->posted + i)), b->size,
                              (uint16_t)(b->posted + i), io_uring_buf_ring_mask(b->count), (int)i);
    io_uring_buf_ring_advance(b->br, (int)n);
    b->posted += n;
}

bool bufring_grow(struct bufring *b)
{
    uint32_t n = b->posted < b->count - b->posted ? b->posted : b->count - b->posted;

    if (!n)
        return false;
    bufring_post(b, n);
    return true;
}

int bufring_create(struct bufring *b, struct io_uring *ring, uint16_t bgid,
                   uint32_t count, uint32_t size, bool incremental)
{
    struct io_uring_buf_reg reg;
    size_t data_bytes = (size_t)count * size;
    int ret;

    if (!count || (count & (count - 1)) || count > 32768 || !size)
        return -EINVAL;
    memset(b, 0, sizeof(*b));
    b->ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
    b->br = mmap(NULL, b->ring_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->br == MAP_FAILED)
        return -errno;
    b->base = mmap(NULL, data_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->base == MAP_FAILED) {
        ret = -errno;
        munmap(b->br, b->ring_bytes);
        return ret;
    }
    b->count = count;
    b->size = size;
    b->bgid = bgid;

    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)b->br;
    reg.ring_entries = count;
    reg.bgid = bgid;
    ret = -EINVAL;
    if (incremental) {
        /* liburing 2.3 calls the kernel's flags field "pad". */
        reg.pad = IOU_PBUF_RING_INC;
        b->used = calloc(count, sizeof(*b->used));
        ret = b->used ? io_uring_register_buf_ring(ring, &reg, 0) : -ENOMEM;
        if (ret < 0) {
            free(b->used);
            b->used = NULL;
            reg.pad = 0;
        }
    }
    if (ret < 0)
        ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret < 0) {
        munmap(b->base, data_bytes);
        munmap(b->br, b->ring_bytes);
        return ret;
    }
    io_uring_buf_ring_init(b->br);
    bufring_post(b, count < BUFRING_FIRST_POSTED ? count : BUFRING_FIRST_POSTED);
    return 0;
}

void bufring_trim(struct bufring *b)
{
    /* Advice only: a refusal leaves the pages resident, nothing worse. */
    (void)madvise(b->base, (size_t)b->posted * b->size, MADV_DONTNEED);
}

void bufring_destroy(struct bufring *b)
{
    if (!b->br)
        return;
    munmap(b->base, (size_t)b->count * b->size);
    munmap(b->br, b->ring_bytes);
    free(b->used);
    b->used = NULL;
    b->br = NULL;
}
