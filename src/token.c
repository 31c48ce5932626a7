/* token.c - JWT verification with OpenSSL's EVP and jansson (see token.h).
 * The signature is checked before the claims are read; the header is the
 * only JSON parsed from an unverified token. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "pubsub_proto.h"
#include "token.h"

#define TOKEN_MAX_HEADER 1024 /* decoded bytes of the header */
#define TOKEN_MAX_SIG 1024    /* decoded bytes of a signature (RSA 8192) */
#define TOKEN_MAX_KEY_FILE (64 * 1024)

struct token_key {
    char *kid;                /* NULL: none */
    enum token_alg alg;
    EVP_PKEY *pkey;           /* RS256, ES256, EdDSA */
    unsigned char *secret;    /* HS256 */
    size_t secret_len;
};

struct token_keys {
    size_t n;
    struct token_key keys[];
};

static const char *const token_alg_names[] = {
    [TOKEN_HS256] = "HS256", [TOKEN_RS256] = "RS256",
    [TOKEN_ES256] = "ES256", [TOKEN_EDDSA] = "EdDSA",
};

const char *ringws_auth_failure_name(enum ringws_auth_failure r)
{
    static const char *const names[RINGWS_AUTH_REASONS] = {
        [RINGWS_AUTH_OK] = "ok",
        [RINGWS_AUTH_MISSING] = "missing",
        [RINGWS_AUTH_MALFORMED] = "malformed",
        [RINGWS_AUTH_BAD_SIGNATURE] = "bad_signature",
        [RINGWS_AUTH_UNKNOWN_KID] = "unknown_kid",
        [RINGWS_AUTH_ALG_MISMATCH] = "alg_mismatch",
        [RINGWS_AUTH_EXPIRED] = "expired",
        [RINGWS_AUTH_NOT_YET_VALID] = "not_yet_valid",
        [RINGWS_AUTH_TOPIC_DENIED] = "topic_denied",
        [RINGWS_AUTH_PUBLISH_DENIED] = "publish_denied",
        [RINGWS_AUTH_SUBJECT_CHANGED] = "subject_changed",
        [RINGWS_AUTH_NO_MEMORY] = "no_memory",
    };

    return (unsigned)r < RINGWS_AUTH_REASONS ? names[r] : "unknown";
}

/* ---- base64url ---------------------------------------------------------- */

static int token_b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

/* The alphabet is checked here; OpenSSL's decoder (standard alphabet,
 * padded) does the arithmetic on a translated copy. */
int token_base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    unsigned char std[TOKEN_MAX_LEN + 4];
    unsigned char tmp[(TOKEN_MAX_LEN + 4) / 4 * 3];
    size_t pad = (4 - n % 4) % 4, len = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    int got;

    if (n % 4 == 1 || n > TOKEN_MAX_LEN || len > cap)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (token_b64_value(in[i]) < 0)
            return -EINVAL;
        std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : (unsigned char)in[i];
    }
    /* The bits past the last whole byte must be zero: one encoding per
     * value, so a token cannot be altered without changing what it says. */
    if ((n % 4 == 2 && (token_b64_value(in[n - 1]) & 0x0f)) ||
        (n % 4 == 3 && (token_b64_value(in[n - 1]) & 0x03)))
        return -EINVAL;
    memset(std + n, '=', pad);
    if (n + pad == 0)
        return 0;
    got = EVP_DecodeBlock(tmp, std, (int)(n + pad));
    if (got < 0 || (size_t)got != len + pad)
        return -EINVAL;
    memcpy(out, tmp, len);
    return (int)len;
}

/* ---- keys ---------------------------------------------------------------- */

static int token_key_why(char *why, size_t why_len, const char *file, const char *msg)
{
    snprintf(why, why_len, "%s: %s", file, msg);
    return -EINVAL;
}

/* The algorithm a public key verifies; -EINVAL for a kind or curve no
 * algorithm here takes. */
static int token_pkey_alg(EVP_PKEY *pkey, enum token_alg *alg)
{
    char group[32];
    size_t glen = 0;

    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pkey) < 2048)
            return -EINVAL;
        *alg = TOKEN_RS256;
        return 0;
    case EVP_PKEY_EC:
        if (!EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof(group), &glen) ||
            strcmp(group, "prime256v1") != 0)
            return -EINVAL;
        *alg = TOKEN_ES256;
        return 0;
    case EVP_PKEY_ED25519:
        *alg = TOKEN_EDDSA;
        return 0;
    default:
        return -EINVAL;
    }
}

static int token_key_parse(struct token_key *k, const unsigned char *buf, size_t len,
                           const char *file, char *why, size_t why_len)
{
    static const char pem[] = "-----BEGIN ";
    BIO *bio;

    if (len >= sizeof(pem) - 1 && !memcmp(buf, pem, sizeof(pem) - 1)) {
        bio = BIO_new_mem_buf(buf, (int)len);
        if (!bio)
            return -ENOMEM;
        k->pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!k->pkey)
            return token_key_why(why, why_len, file, "not a PEM public key");
        if (token_pkey_alg(k->pkey, &k->alg) < 0)
            return token_key_why(why, why_len, file, "not an RSA key of 2048 bits or more, "
                                 "an EC P-256 key or an Ed25519 key");
        return 0;
    }
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    if (len < TOKEN_MIN_SECRET)
        return token_key_why(why, why_len, file, "an HMAC secret needs at least 32 bytes");
    k->secret = malloc(len);
    if (!k->secret)
        return -ENOMEM;
    memcpy(k->secret, buf, len);
    k->secret_len = len;
    k->alg = TOKEN_HS256;
    return 0;
}

static int token_key_load(struct token_key *k, const struct ringws_token_key *spec,
                          char *why, size_t why_len)
{
    FILE *f = fopen(spec->file, "rb");
    unsigned char *buf;
    size_t len;
    int ret;

    if (!f) {
        snprintf(why, why_len, "%s: %s", spec->file, strerror(errno));
        return -EINVAL;
    }
    buf = malloc(TOKEN_MAX_KEY_FILE + 1);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    len = fread(buf, 1, TOKEN_MAX_KEY_FILE + 1, f);
    if (ferror(f) || len > TOKEN_MAX_KEY_FILE)
        ret = token_key_why(why, why_len, spec->file,
                            ferror(f) ? "cannot read" : "larger than 64 KiB");
    else
        ret = token_key_parse(k, buf, len, spec->file, why, why_len);
    fclose(f);
    OPENSSL_cleanse(buf, len); /* a secret's copy goes no further than needed */
    free(buf);
    if (ret == 0 && spec->kid && !(k->kid = strdup(spec->kid)))
        ret = -ENOMEM;
    return ret;
}

void token_keys_free(struct token_keys *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
        if (ks->keys[i].secret)
            OPENSSL_cleanse(ks->keys[i].secret, ks->keys[i].secret_len);
        free(ks->keys[i].secret);
        free(ks->keys[i].kid);
    }
    free(ks);
}

int token_keys_load(const struct ringws_token_key *keys, size_t n, struct token_keys **out,
                    char *why, size_t why_len)
{
    struct token_keys *ks;
    int ret = 0;

    if (!n || n > TOKEN_MAX_KEYS) {
        snprintf(why, why_len, "between 1 and %d token keys", TOKEN_MAX_KEYS);
        return -EINVAL;
    }
    ks = calloc(1, sizeof(*ks) + n * sizeof(ks->keys[0]));
    if (!ks)
        return -ENOMEM;
    for (size_t i = 0; i < n && ret == 0; i++) {
        ks->n = i + 1;
        if (!keys[i].file || (keys[i].kid && !keys[i].kid[0]))
            ret = token_key_why(why, why_len, keys[i].file ? keys[i].file : "(none)",
                                "a key needs a file and a non-empty kid or none");
        for (size_t j = 0; j < i && ret == 0; j++)
            if (keys[i].kid && keys[j].kid && !strcmp(keys[i].kid, keys[j].kid))
                ret = token_key_why(why, why_len, keys[i].file, "kid used twice");
        if (ret == 0)
            ret = token_key_load(&ks->keys[i], &keys[i], why, why_len);
    }
    if (ret == 0 && n > 1)
        for (size_t i = 0; i < n && ret == 0; i++)
            if (!keys[i].kid)
                ret = token_key_why(why, why_len, keys[i].file,
                                    "with several keys each needs a kid (KID=FILE)");
    if (ret < 0) {
        token_keys_free(ks);
        return ret;
    }
    *out = ks;
    return 0;
}

enum token_alg token_keys_alg(const struct token_keys *ks, size_t i)
{
    return ks->keys[i].alg;
}

/* ---- verification -------------------------------------------------------- */

/* The key a token's header names: its kid's; without a kid, the only key. */
static enum ringws_auth_failure token_key_pick(const struct token_keys *ks, json_t *hdr,
                                               const struct token_key **key)
{
    json_t *kid = json_object_get(hdr, "kid");
    json_t *alg = json_object_get(hdr, "alg");

    if (!json_is_string(alg) || (kid && !json_is_string(kid)) || json_object_get(hdr, "crit"))
        return RINGWS_AUTH_MALFORMED; /* no extension is understood here */
    *key = NULL;
    if (!kid && ks->n == 1)
        *key = &ks->keys[0];
    for (size_t i = 0; kid && i < ks->n && !*key; i++)
        if (ks->keys[i].kid && !strcmp(ks->keys[i].kid, json_string_value(kid)))
            *key = &ks->keys[i];
    if (!*key)
        return RINGWS_AUTH_UNKNOWN_KID;
    if (strcmp(json_string_value(alg), token_alg_names[(*key)->alg]) != 0)
        return RINGWS_AUTH_ALG_MISMATCH;
    return RINGWS_AUTH_OK;
}

static bool token_hmac_ok(const struct token_key *k, const char *data, size_t len,
                          const uint8_t *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;

    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)data, len,
              mac, &mac_len))
        return false;
    return sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

/* JOSE writes an ECDSA signature as r || s, 32 bytes each; OpenSSL
 * verifies the DER form. */
static int token_es256_der(const uint8_t *sig, size_t sig_len, unsigned char *der, size_t cap)
{
    ECDSA_SIG *es;
    BIGNUM *r, *s;
    unsigned char *p = der;
    int n = -1;

    if (sig_len != 64)
        return -1;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);
    if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL; /* owned by es now */
        if (i2d_ECDSA_SIG(es, NULL) <= (int)cap)
            n = i2d_ECDSA_SIG(es, &p);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return n;
}

static bool token_pkey_ok(const struct token_key *k, const char *data, size_t len,
                          const uint8_t *sig, size_t sig_len)
{
    unsigned char der[80];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = false;
    int n;

    if (!ctx)
        return false;
    if (k->alg == TOKEN_ES256) {
        n = token_es256_der(sig, sig_len, der, sizeof(der));
        sig = der;
        sig_len = n > 0 ? (size_t)n : 0;
    } else if (k->alg == TOKEN_EDDSA && sig_len != 64) {
        sig_len = 0;
    }
    if (sig_len &&
        EVP_DigestVerifyInit(ctx, NULL, k->alg == TOKEN_EDDSA ? NULL : EVP_sha256(), NULL,
                             k->pkey) == 1)
        ok = EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* A base64url part decoded and parsed as a JSON object; NULL if either
 * fails. */
static json_t *token_json_part(const char *p, size_t n, size_t cap)
{
    uint8_t buf[TOKEN_MAX_LEN];
    int len = token_base64url_decode(p, n, buf, cap < sizeof(buf) ? cap : sizeof(buf));
    json_t *j;

    if (len < 0)
        return NULL;
    j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Past any date a token means (and far from overflowing with the leeway
 * added, in milliseconds). */
#define TOKEN_MAX_TIME 9000000000000000LL

/* A time claim: absent (0), or a number of seconds; false for anything else. */
static bool token_time(json_t *claims, const char *name, int64_t *t)
{
    json_t *v = json_object_get(claims, name);
    double d;

    *t = 0;
    if (!v)
        return true;
    if (json_is_integer(v)) {
        *t = json_integer_value(v);
        return *t > 0 && *t < TOKEN_MAX_TIME / 1000;
    }
    if (!json_is_real(v))
        return false;
    d = json_real_value(v);
    if (!(d >= 1 && d < (double)(TOKEN_MAX_TIME / 1000)))
        return false;
    *t = (int64_t)d;
    return true;
}

/* A pattern list: absent (none), or an array of at most TOKEN_MAX_PATTERNS
 * valid patterns; adds their bytes (with NULs) to *bytes.  -1 if invalid. */
static int token_patterns(json_t *claims, const char *name, size_t *bytes)
{
    json_t *v = json_object_get(claims, name), *e;
    size_t i;

    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > TOKEN_MAX_PATTERNS)
        return -1;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e) ||
            !topic_pattern_valid(json_string_value(e), json_string_length(e)))
            return -1;
        *bytes += json_string_length(e) + 1;
    }
    return (int)json_array_size(v);
}

/* The subject as it goes into logs: printable, no control characters. */
static bool token_sub_valid(const char *s, size_t n)
{
    if (n > TOKEN_MAX_SUB)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static char *token_copy_list(json_t *claims, const char *name, const char **ptrs, char *p)
{
    json_t *v = json_object_get(claims, name), *e;
    size_t i;

    if (!v)
        return p;
    json_array_foreach(v, i, e) {
        size_t n = json_string_length(e);
        memcpy(p, json_string_value(e), n + 1);
        ptrs[i] = p;
        p += n + 1;
    }
    return p;
}

/* The claims in one allocation: the record, the pattern pointers, then
 * the strings. */
static enum ringws_auth_failure token_claims_build(json_t *claims,
                                                   struct ringws_token_claims **out)
{
    struct ringws_token_claims *c;
    json_t *sub = json_object_get(claims, "sub");
    size_t bytes = 0, sub_len = json_is_string(sub) ? json_string_length(sub) : 0;
    int nt = token_patterns(claims, "topics", &bytes);
    int np = token_patterns(claims, "publish", &bytes);
    int64_t exp, nbf;
    const char **ptrs;
    char *p;

    if (nt < 0 || np < 0 || (sub && !json_is_string(sub)) ||
        (sub && !token_sub_valid(json_string_value(sub), sub_len)) ||
        !token_time(claims, "exp", &exp) || !token_time(claims, "nbf", &nbf))
        return RINGWS_AUTH_MALFORMED;
    c = malloc(sizeof(*c) + (size_t)(nt + np) * sizeof(char *) + bytes + sub_len + 1);
    if (!c)
        return RINGWS_AUTH_NO_MEMORY;
    ptrs = (const char **)(c + 1);
    p = (char *)(ptrs + nt + np);
    *c = (struct ringws_token_claims){.exp = exp, .nbf = nbf,
                                      .topics = ptrs, .n_topics = (size_t)nt,
                                      .publish = ptrs + nt, .n_publish = (size_t)np};
    p = token_copy_list(claims, "topics", ptrs, p);
    p = token_copy_list(claims, "publish", ptrs + nt, p);
    memcpy(p, sub_len ? json_string_value(sub) : "", sub_len + 1);
    c->sub = p;
    *out = c;
    return RINGWS_AUTH_OK;
}

static enum ringws_auth_failure token_check_time(const struct ringws_token_claims *c,
                                                 int64_t now, unsigned leeway)
{
    if (c->exp && now >= c->exp + (int64_t)leeway)
        return RINGWS_AUTH_EXPIRED;
    if (c->nbf && now + (int64_t)leeway < c->nbf)
        return RINGWS_AUTH_NOT_YET_VALID;
    return RINGWS_AUTH_OK;
}

static enum ringws_auth_failure token_verify_parts(const struct token_keys *ks,
                                                   const char *tok, size_t len,
                                                   const char *dot1, const char *dot2,
                                                   struct ringws_token_claims **out)
{
    uint8_t sig[TOKEN_MAX_SIG];
    const struct token_key *key = NULL;
    json_t *hdr = token_json_part(tok, (size_t)(dot1 - tok), TOKEN_MAX_HEADER), *claims;
    enum ringws_auth_failure r = hdr ? token_key_pick(ks, hdr, &key) : RINGWS_AUTH_MALFORMED;
    int sig_len;
    bool ok;

    json_decref(hdr);
    if (r != RINGWS_AUTH_OK)
        return r;
    sig_len = token_base64url_decode(dot2 + 1, (size_t)(tok + len - dot2 - 1), sig, sizeof(sig));
    if (sig_len <= 0)
        return RINGWS_AUTH_MALFORMED;
    if (key->alg == TOKEN_HS256)
        ok = token_hmac_ok(key, tok, (size_t)(dot2 - tok), sig, (size_t)sig_len);
    else
        ok = token_pkey_ok(key, tok, (size_t)(dot2 - tok), sig, (size_t)sig_len);
    if (!ok)
        return RINGWS_AUTH_BAD_SIGNATURE;
    claims = token_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), TOKEN_MAX_LEN);
    if (!claims)
        return RINGWS_AUTH_MALFORMED;
    r = token_claims_build(claims, out);
    json_decref(claims);
    return r;
}

enum ringws_auth_failure token_verify(const struct token_keys *ks, const char *tok,
                                      size_t len, int64_t now, unsigned leeway,
                                      struct ringws_token_claims **out)
{
    const char *dot1, *dot2;
    enum ringws_auth_failure r;

    if (!len || len > TOKEN_MAX_LEN)
        return RINGWS_AUTH_MALFORMED;
    dot1 = memchr(tok, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(tok + len - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(tok + len - dot2 - 1)))
        return RINGWS_AUTH_MALFORMED;
    r = token_verify_parts(ks, tok, len, dot1, dot2, out);
    if (r != RINGWS_AUTH_OK)
        return r;
    r = token_check_time(*out, now, leeway);
    if (r != RINGWS_AUTH_OK) {
        free(*out);
        *out = NULL;
    }
    return r;
}

bool token_covers(const char *const *patterns, size_t n, const char *topic, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (topic_pattern_match(patterns[i], topic, len))
            return true;
    return false;
}
