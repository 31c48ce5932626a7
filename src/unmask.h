/* unmask.h - in-place XOR of client payloads with the frame's masking key.
 *
 * Why it exists: every client frame is masked (RFC 6455 section 5.3), and the
 * payload is unmasked where it lies in the receive buffer, never copied.  A
 * frame may span receive buffers, so the mask can start at any of its four
 * rotations.  One entry point; faster variants hide behind it. */
#ifndef RINGWS_UNMASK_H
#define RINGWS_UNMASK_H

#include <stddef.h>
#include <stdint.h>

/* XORs p[0..n) with mask[(offset + i) % 4]; returns (offset + n) % 4, the
 * offset to pass for the bytes that follow. */
unsigned ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);

#endif
