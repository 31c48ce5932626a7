/* bufring.c - mapping and registering a provided-buffer ring by hand. */
#include "bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
    for (uint32_t i = 0; i < count; i++)
        io_uring_buf_ring_add(b->br, bufring_addr(b, (uint16_t)i), size,
                              (uint16_t)i, io_uring_buf_ring_mask(count), (int)i);
    io_uring_buf_ring_advance(b->br, (int)count);
    return 0;
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
