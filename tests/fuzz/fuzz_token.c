/* fuzz_token.c - the token verifier (token.c) against whatever a client can
 * send as a token, and against claims a key holder signed.
 *
 * Why it exists: a token is read from every client before anything else is
 * known about it.  The first byte of an input picks what the rest is:
 *   0: a token as a client sends it: any verdict but acceptance is fine
 *      (no input here holds a valid signature), and nothing may crash, leak
 *      or read past the bytes;
 *   1: claims JSON, signed here with the HMAC key as base64url: accepted
 *      claims must hold what token.h promises (sub printable and bounded,
 *      every pattern valid, counts bounded), refused ones for a claims
 *      reason only;
 *   2: base64url text, decoded by token_base64url_decode and by a plain
 *      reference: the same verdict and the same bytes. */
#include <errno.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "../unit/b64url.h"
#include "fuzz_common.h"
#include "pubsub_proto.h"
#include "token.h"

static const char secret[] = "fuzzing-secret-of-at-least-32-bytes!";
static struct token_keys *keys;
static const int64_t now = 1700000000;

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");

    FUZZ_CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* Two keys from files, as the server loads them: an HMAC secret (kid h)
 * and an Ed25519 public key (kid e). */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/fuzz-token-XXXXXX", hs[64], ed[64], why[256];
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f;
    struct ringws_token_key spec[2] = {{"h", hs}, {"e", ed}};

    FUZZ_CHECK(mkdtemp(dir) && pk, "set-up");
    snprintf(hs, sizeof(hs), "%s/hs", dir);
    snprintf(ed, sizeof(ed), "%s/ed.pub", dir);
    write_file(hs, secret, sizeof(secret) - 1);
    f = fopen(ed, "wb");
    FUZZ_CHECK(f && PEM_write_PUBKEY(f, pk) && fclose(f) == 0, "cannot write %s", ed);
    EVP_PKEY_free(pk);
    FUZZ_CHECK(token_keys_load(spec, 2, &keys, why, sizeof(why)) == 0, "keys: %s", why);
    unlink(hs);
    unlink(ed);
    rmdir(dir);
    return 0;
}

static void check_claims(const struct ringws_token_claims *c)
{
    size_t sl = strlen(c->sub);

    FUZZ_CHECK(sl <= TOKEN_MAX_SUB, "sub of %zu bytes", sl);
    for (size_t i = 0; i < sl; i++)
        FUZZ_CHECK((unsigned char)c->sub[i] >= 0x20 && c->sub[i] != 0x7f, "control in sub");
    FUZZ_CHECK(c->n_topics <= TOKEN_MAX_PATTERNS && c->n_publish <= TOKEN_MAX_PATTERNS,
               "%zu topics, %zu publish", c->n_topics, c->n_publish);
    for (size_t i = 0; i < c->n_topics; i++)
        FUZZ_CHECK(topic_pattern_valid(c->topics[i], strlen(c->topics[i])), "topic pattern");
    for (size_t i = 0; i < c->n_publish; i++)
        FUZZ_CHECK(topic_pattern_valid(c->publish[i], strlen(c->publish[i])), "publish pattern");
    FUZZ_CHECK(!c->exp || now < c->exp + 30, "accepted after exp");
    FUZZ_CHECK(!c->nbf || now + 30 >= c->nbf, "accepted before nbf");
}

static void check_raw(const uint8_t *p, size_t n)
{
    struct ringws_token_claims *c = NULL;
    enum ringws_auth_failure r = token_verify(keys, (const char *)p, n, now, 30, &c);

    FUZZ_CHECK(r != RINGWS_AUTH_OK && !c, "an unsigned input was accepted");
    FUZZ_CHECK(r > RINGWS_AUTH_OK && r < RINGWS_AUTH_REASONS, "reason %d", (int)r);
}

static void check_signed(const uint8_t *p, size_t n)
{
    static const char hdr[] = "{\"alg\":\"HS256\",\"kid\":\"h\"}";
    char tok[TOKEN_MAX_LEN + 64];
    unsigned char mac[32];
    unsigned mac_len = 0;
    struct ringws_token_claims *c = NULL;
    enum ringws_auth_failure r;
    size_t len;

    if (n > 2000)
        return;
    b64url((const uint8_t *)hdr, sizeof(hdr) - 1, tok);
    len = strlen(tok);
    tok[len++] = '.';
    b64url(p, n, tok + len);
    len += strlen(tok + len);
    HMAC(EVP_sha256(), secret, sizeof(secret) - 1, (unsigned char *)tok, len, mac, &mac_len);
    tok[len++] = '.';
    b64url(mac, mac_len, tok + len);
    len += strlen(tok + len);
    r = token_verify(keys, tok, len, now, 30, &c);
    if (r == RINGWS_AUTH_OK) {
        check_claims(c);
        free(c);
        return;
    }
    FUZZ_CHECK(!c, "claims with a refusal");
    FUZZ_CHECK(r == RINGWS_AUTH_MALFORMED || r == RINGWS_AUTH_EXPIRED ||
               r == RINGWS_AUTH_NOT_YET_VALID || r == RINGWS_AUTH_NO_MEMORY,
               "signed claims refused for %s", ringws_auth_failure_name(r));
}

static int ref_value(uint8_t ch)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *at = ch ? strchr(abc, ch) : NULL;

    return at ? (int)(at - abc) : -1;
}

/* Bit by bit: every character holds 6 bits; the bits left over at the end
 * (fewer than 8) must be zero, and a single leftover character is no byte. */
static int ref_decode(const uint8_t *p, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    int len = 0;

    if (n % 4 == 1)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int v = ref_value(p[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return acc ? -EINVAL : len;
}

static void check_base64(const uint8_t *p, size_t n)
{
    uint8_t got[TOKEN_MAX_LEN], want[TOKEN_MAX_LEN];
    int g, w;

    if (n > TOKEN_MAX_LEN)
        return;
    g = token_base64url_decode((const char *)p, n, got, sizeof(got));
    w = ref_decode(p, n, want);
    FUZZ_CHECK(g == w, "decoded length %d, reference %d", g, w);
    FUZZ_CHECK(g <= 0 || !memcmp(got, want, (size_t)g), "decoded bytes differ");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p;

    if (!size)
        return 0;
    /* The bytes alone, in a buffer of their exact size: a read past them
     * faults under ASan. */
    p = malloc(size - 1 ? size - 1 : 1);
    memcpy(p, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0: check_raw(p, size - 1); break;
    case 1: check_signed(p, size - 1); break;
    default: check_base64(p, size - 1); break;
    }
    free(p);
    return 0;
}
