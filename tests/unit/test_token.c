/* test_token.c - the token module alone: strict base64url, which key files
 * load (and why the others do not, in words that name the file), the
 * algorithm each key fixes, kid selection, and the claims of a token signed
 * here with Ed25519 and HMAC.  Keys are made with OpenSSL in a temporary
 * directory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "check.h"
#include "b64url.h"
#include "token.h"

static char dir[] = "/tmp/ringws-token-XXXXXX";
static const int64_t now = 1700000000;

static int decode(const char *s, char *out, size_t cap)
{
    return token_base64url_decode(s, strlen(s), (uint8_t *)out, cap);
}

static void test_base64url(void)
{
    char out[16];

    CHECK(decode("", out, sizeof(out)) == 0);
    CHECK(decode("YQ", out, sizeof(out)) == 1 && out[0] == 'a');
    CHECK(decode("YWI", out, sizeof(out)) == 2 && !memcmp(out, "ab", 2));
    CHECK(decode("YWJj", out, sizeof(out)) == 3 && !memcmp(out, "abc", 3));
    CHECK(decode("-_8", out, sizeof(out)) == 2 && (uint8_t)out[0] == 0xfb &&
          (uint8_t)out[1] == 0xff);
    CHECK(decode("YR", out, sizeof(out)) == -EINVAL);   /* bits past the byte */
    CHECK(decode("YWJ", out, sizeof(out)) == -EINVAL);
    CHECK(decode("YQ==", out, sizeof(out)) == -EINVAL); /* padding */
    CHECK(decode("Y", out, sizeof(out)) == -EINVAL);
    CHECK(decode("Y+Jj", out, sizeof(out)) == -EINVAL); /* standard alphabet */
    CHECK(decode("YW Jj", out, sizeof(out)) == -EINVAL);
    CHECK(decode("YWJj", out, 2) == -EINVAL);           /* past cap */
}

static char *path_of(const char *name)
{
    static char paths[8][96];
    static unsigned next;
    char *p = paths[next++ % 8];

    snprintf(p, 96, "%s/%s", dir, name);
    return p;
}

static void write_text(const char *name, const char *text)
{
    FILE *f = fopen(path_of(name), "w");

    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

/* Writes the public half (or, with private, the whole key) of a new key. */
static EVP_PKEY *write_key(const char *name, EVP_PKEY *k, bool private)
{
    FILE *f = fopen(path_of(name), "w");

    CHECK(f && k);
    CHECK(private ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
                  : PEM_write_PUBKEY(f, k));
    fclose(f);
    return k;
}

/* Loads one key file; the reason of a refusal must name the file and hold
 * `why`. */
static int load1(const char *kid, const char *name, const char *why, struct token_keys **ks)
{
    struct ringws_token_key spec = {kid, path_of(name)};
    char msg[512] = "";
    int r = token_keys_load(&spec, 1, ks, msg, sizeof(msg));

    if (why)
        CHECKF(r == -EINVAL && strstr(msg, name) && strstr(msg, why), "%s: %s", name, msg);
    return r;
}

static void test_key_files(void)
{
    struct token_keys *ks = NULL;
    struct ringws_token_key two[2];
    char msg[512];

    write_text("short.key", "only-sixteen-byt\n");
    load1(NULL, "short.key", "at least 32 bytes", &ks);
    load1(NULL, "absent.pem", "No such file", &ks);
    EVP_PKEY_free(write_key("ed.key", EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), true));
    load1(NULL, "ed.key", "not a PEM public key", &ks);
    EVP_PKEY_free(write_key("rsa1024.pub", EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024),
                            false));
    load1(NULL, "rsa1024.pub", "2048 bits", &ks);
    EVP_PKEY_free(write_key("p384.pub", EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"), false));
    load1(NULL, "p384.pub", "P-256", &ks);

    write_text("hs.key", "0123456789abcdef0123456789abcdef\n");
    CHECK(load1(NULL, "hs.key", NULL, &ks) == 0 && token_keys_alg(ks, 0) == TOKEN_HS256);
    token_keys_free(ks);
    /* Several keys: each needs a kid, and kids differ. */
    two[0] = (struct ringws_token_key){"a", path_of("hs.key")};
    two[1] = (struct ringws_token_key){NULL, path_of("hs.key")};
    CHECK(token_keys_load(two, 2, &ks, msg, sizeof(msg)) == -EINVAL && strstr(msg, "kid"));
    two[1].kid = "a";
    CHECK(token_keys_load(two, 2, &ks, msg, sizeof(msg)) == -EINVAL && strstr(msg, "twice"));
}

/* header.claims.signature, signed with the Ed25519 key or the HMAC secret. */
static void sign(char *out, const char *header, const char *claims, EVP_PKEY *ed,
                 const char *secret)
{
    unsigned char sig[64];
    size_t sig_len = sizeof(sig), n;
    unsigned mac_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    b64url(header, strlen(header), out);
    n = strlen(out);
    out[n++] = '.';
    b64url(claims, strlen(claims), out + n);
    n += strlen(out + n);
    if (ed)
        CHECK(EVP_DigestSignInit(ctx, NULL, NULL, NULL, ed) == 1 &&
              EVP_DigestSign(ctx, sig, &sig_len, (unsigned char *)out, n) == 1);
    else
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)out, n, sig, &mac_len);
    EVP_MD_CTX_free(ctx);
    out[n++] = '.';
    b64url(sig, ed ? sig_len : mac_len, out + n);
}

static enum ringws_auth_failure verify(const struct token_keys *ks, const char *tok,
                                       struct ringws_token_claims **c)
{
    *c = NULL;
    return token_verify(ks, tok, strlen(tok), now, 10, c);
}

static void test_verify(void)
{
    static const char secret[] = "0123456789abcdef0123456789abcdef";
    EVP_PKEY *ed = write_key("ed.pub", EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), false);
    struct ringws_token_key spec[2] = {{"e", path_of("ed.pub")}, {"h", path_of("hs.key")}};
    struct token_keys *ks = NULL;
    struct ringws_token_claims *c;
    char msg[256], tok[1024], *sig;

    CHECK(token_keys_load(spec, 2, &ks, msg, sizeof(msg)) == 0);
    CHECK(token_keys_alg(ks, 0) == TOKEN_EDDSA && token_keys_alg(ks, 1) == TOKEN_HS256);
    sign(tok, "{\"alg\":\"EdDSA\",\"kid\":\"e\"}",
         "{\"sub\":\"bob\",\"exp\":1700000005,\"topics\":[\"a\",\"b.*\"],\"publish\":[\"*\"]}",
         ed, NULL);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_OK && c && !strcmp(c->sub, "bob") &&
          c->exp == 1700000005 && c->n_topics == 2 && !strcmp(c->topics[1], "b.*") &&
          c->n_publish == 1 && token_covers(c->publish, c->n_publish, "x", 1) &&
          token_covers(c->topics, c->n_topics, "b.c", 3) &&
          !token_covers(c->topics, c->n_topics, "c", 1));
    free(c);
    /* The same claims signed by the HMAC key under the Ed25519 kid. */
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"e\"}", "{\"sub\":\"bob\"}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_ALG_MISMATCH && !c);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"sub\":\"bob\"}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_OK && c && c->exp == 0 && c->n_topics == 0);
    free(c);
    sign(tok, "{\"alg\":\"HS256\"}", "{\"sub\":\"bob\"}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_UNKNOWN_KID);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\",\"crit\":[\"x\"]}", "{}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_MALFORMED);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"exp\":1699999990}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_EXPIRED);     /* leeway 10 s: just past */
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"exp\":1699999991}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_OK);          /* within it */
    free(c);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"nbf\":1700000011}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_NOT_YET_VALID);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"sub\":\"a\\u0007b\"}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_MALFORMED);   /* control character */
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"topics\":[\"a b\"]}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_MALFORMED);   /* not a pattern */
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"exp\":1e300}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_MALFORMED);
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"sub\":\"a\",\"sub\":\"b\"}", NULL, secret);
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_MALFORMED);   /* duplicate member */
    sign(tok, "{\"alg\":\"HS256\",\"kid\":\"h\"}", "{\"sub\":\"bob\"}", NULL, secret);
    sig = strrchr(tok, '.') + 5;
    *sig = *sig == 'A' ? 'B' : 'A'; /* still base64url, another signature */
    CHECK(verify(ks, tok, &c) == RINGWS_AUTH_BAD_SIGNATURE);
    EVP_PKEY_free(ed);
    token_keys_free(ks);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_base64url();
    test_key_files();
    test_verify();
    for (const char *const *n = (const char *const[]){"short.key", "ed.key", "rsa1024.pub",
                                                       "p384.pub", "hs.key", "ed.pub", NULL};
         *n; n++)
        unlink(path_of(*n));
    rmdir(dir);
    return check_done("token");
}
