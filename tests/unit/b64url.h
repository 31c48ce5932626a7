/* b64url.h - base64url without padding (RFC 7515, section 2), the encoding
 * of a JWT's parts: the token tests, the API test and the token fuzzer
 * make their tokens with it (OpenSSL's encoder, then the URL alphabet). */
#ifndef RINGWS_TEST_B64URL_H
#define RINGWS_TEST_B64URL_H

#include <stddef.h>

#include <openssl/evp.h>

/* out holds 4 * ((n + 2) / 3) + 1 bytes. */
static inline void b64url(const void *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (len && out[len - 1] == '=')
        len--;
    out[len] = 0;
}

#endif
