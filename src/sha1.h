/* sha1.h - SHA-1 (FIPS 180-4), for the WebSocket opening handshake.
 *
 * Why it exists: RFC 6455 asks for SHA-1 of 60 bytes per handshake.
 * OpenSSL 3 reaches SHA-1 (EVP and its one-shot SHA1() alike) through its
 * provider machinery, which on first use pages about 2 MiB of libcrypto into
 * every server process and on every use looks the algorithm up and
 * allocates a context; this is the whole algorithm, 60 bytes at a time.
 * Not for anything that needs collision resistance.  Pure: no state, no
 * I/O. */
#ifndef RINGWS_SHA1_H
#define RINGWS_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_LEN 20

/* The SHA-1 digest of p[0..n) into md. */
void sha1(const void *p, size_t n, uint8_t md[SHA1_LEN]);

#endif
