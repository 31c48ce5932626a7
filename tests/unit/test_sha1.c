/* test_sha1.c - SHA-1 against the FIPS 180-2 examples and against OpenSSL
 * for every length from 0 to 200 bytes.
 *
 * Why it exists: the handshake's Sec-WebSocket-Accept is only right if the
 * hash is; the lengths around 55, 56 and 64 bytes are where the padding
 * takes one block or two.  Every input sits at the end of a page followed
 * by an inaccessible one, so that a read past the end crashes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "check.h"
#include "guard.h"
#include "sha1.h"

static void hex(const uint8_t md[SHA1_LEN], char out[2 * SHA1_LEN + 1])
{
    for (unsigned i = 0; i < SHA1_LEN; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static void check_vector(const char *msg, const char *want)
{
    uint8_t md[SHA1_LEN];
    char got[2 * SHA1_LEN + 1];
    size_t n = strlen(msg);

    sha1(guard_place((const uint8_t *)msg, n), n, md);
    hex(md, got);
    CHECKF(strcmp(got, want) == 0, "SHA-1(\"%s\") = %s, expected %s", msg, got, want);
}

int main(void)
{
    uint8_t msg[200], md[SHA1_LEN], want[EVP_MAX_MD_SIZE];
    unsigned want_len;

    guard_setup(sizeof(msg));
    check_vector("", "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_vector("abc", "a9993e364706816aba3e25717850c26c9cd0d89d");
    check_vector("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 37 + 11);
    for (unsigned n = 0; n <= sizeof(msg); n++) {
        sha1(guard_place(msg, n), n, md);
        CHECK(EVP_Digest(msg, n, want, &want_len, EVP_sha1(), NULL) == 1);
        CHECKF(want_len == SHA1_LEN && memcmp(md, want, SHA1_LEN) == 0,
               "%u bytes: differs from OpenSSL's SHA-1", n);
    }
    return check_done("sha1");
}
