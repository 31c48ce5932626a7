/* guard.h - test inputs placed at the very end of a readable mapping,
 * followed by a PROT_NONE page, so that any read past an input's end
 * crashes the test instead of passing by luck. */
#ifndef RINGWS_GUARD_H
#define RINGWS_GUARD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *guard_base;
static size_t guard_size;

/* Maps room for inputs of up to `size` bytes, then the guard page. */
static void guard_setup(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    guard_size = (size + page - 1) / page * page;
    guard_base = mmap(NULL, guard_size + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_base == MAP_FAILED ||
        mprotect(guard_base + guard_size, page, PROT_NONE) != 0) {
        perror("guard page");
        exit(1);
    }
}

/* Copies src so that its last byte is the last readable byte. */
static uint8_t *guard_place(const uint8_t *src, size_t n)
{
    uint8_t *dst = guard_base + guard_size - n;

    if (n > guard_size)
        abort();
    if (n)
        memcpy(dst, src, n);
    return dst;
}

#endif
