/* tls_record.c - TLS application records in place with OpenSSL's AEADs
 * (see tls_record.h for why the SSL object is let go after the
 * handshake). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "tls_record.h"

#define TLS_TAG 16
#define TLS12_EXPLICIT_NONCE 8
#define TLS13_CIPHERTEXT_MAX (TLS_REC_PLAIN_MAX + 256)
#define TLS12_CIPHERTEXT_MAX (TLS_REC_PLAIN_MAX + 2048)

enum tls_rec_aead { TLS_AES_128_GCM, TLS_AES_256_GCM, TLS_CHACHA20_POLY1305, TLS_N_AEADS };

struct tls_rec_crypto {
    EVP_CIPHER_CTX *ctx;
    EVP_CIPHER *ciphers[TLS_N_AEADS];
    EVP_KDF *hkdf, *prf;
};

struct tls_rec_crypto *tls_rec_crypto_new(void)
{
    static const char *const names[TLS_N_AEADS] = {"AES-128-GCM", "AES-256-GCM",
                                                   "ChaCha20-Poly1305"};
    struct tls_rec_crypto *cx = calloc(1, sizeof(*cx));
    bool ok = cx != NULL;

    if (ok) {
        cx->ctx = EVP_CIPHER_CTX_new();
        cx->hkdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
        cx->prf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
        ok = cx->ctx && cx->hkdf && cx->prf;
        for (int i = 0; ok && i < TLS_N_AEADS; i++)
            ok = (cx->ciphers[i] = EVP_CIPHER_fetch(NULL, names[i], NULL)) != NULL;
    }
    if (!ok) {
        tls_rec_crypto_free(cx);
        return NULL;
    }
    return cx;
}

void tls_rec_crypto_free(struct tls_rec_crypto *cx)
{
    if (!cx)
        return;
    EVP_CIPHER_CTX_free(cx->ctx);
    for (int i = 0; i < TLS_N_AEADS; i++)
        EVP_CIPHER_free(cx->ciphers[i]);
    EVP_KDF_free(cx->hkdf);
    EVP_KDF_free(cx->prf);
    free(cx);
}

/* ---- keys ---------------------------------------------------------------- */

static int tls_hex_byte(const char *p)
{
    int v = 0;

    for (int i = 0; i < 2; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            v |= ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            v |= ch - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* "LABEL <client random> <secret>": keeps the secret of the two labels
 * that name the first application traffic secrets. */
void tls_rec_keylog(const SSL *ssl, const char *line)
{
    struct tls_rec_secrets *s = SSL_get_app_data(ssl);
    static const char c_label[] = "CLIENT_TRAFFIC_SECRET_0 ", s_label[] = "SERVER_TRAFFIC_SECRET_0 ";
    uint8_t *out;
    uint8_t *len;
    const char *hex;
    size_t n = 0;

    if (!s)
        return;
    if (!strncmp(line, c_label, sizeof(c_label) - 1)) {
        out = s->client;
        len = &s->client_len;
    } else if (!strncmp(line, s_label, sizeof(s_label) - 1)) {
        out = s->server;
        len = &s->server_len;
    } else {
        return;
    }
    hex = strchr(line + strlen(c_label), ' ');
    if (!hex)
        return;
    for (hex++; n < TLS_REC_SECRET_MAX && hex[0] && hex[1]; hex += 2) {
        int v = tls_hex_byte(hex);
        if (v < 0)
            return;
        out[n++] = (uint8_t)v;
    }
    if (!*hex)
        *len = (uint8_t)n;
}

/* HKDF-Expand-Label(secret, label, "", n) of RFC 8446 section 7.1. */
static int tls_expand_label(struct tls_rec_crypto *cx, bool sha384, const uint8_t *secret,
                            size_t secret_len, const char *label, uint8_t *out, size_t n)
{
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t label_len = strlen(label), k = 0;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ret;
    EVP_KDF_CTX *kctx;

    if (label_len > 16)
        return -EINVAL;
    info[k++] = (uint8_t)(n >> 8);
    info[k++] = (uint8_t)n;
    info[k++] = (uint8_t)(6 + label_len);
    memcpy(info + k, "tls13 ", 6);
    k += 6;
    memcpy(info + k, label, label_len);
    k += label_len;
    info[k++] = 0; /* empty context */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, sha384 ? "SHA384" : "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, k),
        OSSL_PARAM_construct_end(),
    };
    kctx = EVP_KDF_CTX_new(cx->hkdf);
    ret = kctx && EVP_KDF_derive(kctx, out, n, params) == 1 ? 0 : -EIO;
    EVP_KDF_CTX_free(kctx);
    return ret;
}

static int tls_dir_from_secret(struct tls_record *r, struct tls_rec_crypto *cx,
                               struct tls_rec_dir *d)
{
    if (tls_expand_label(cx, r->sha384, d->secret, r->secret_len, "key", d->key, r->key_len) < 0 ||
        tls_expand_label(cx, r->sha384, d->secret, r->secret_len, "iv", d->iv, 12) < 0)
        return -EIO;
    d->seq = 0;
    return 0;
}

int tls_record_update(struct tls_record *r, struct tls_rec_crypto *cx, struct tls_rec_dir *d)
{
    uint8_t next[TLS_REC_SECRET_MAX];

    if (tls_expand_label(cx, r->sha384, d->secret, r->secret_len, "traffic upd", next,
                         r->secret_len) < 0)
        return -EIO;
    memcpy(d->secret, next, r->secret_len);
    OPENSSL_cleanse(next, sizeof(next));
    return tls_dir_from_secret(r, cx, d);
}

static int tls_keys13(struct tls_record *r, struct tls_rec_crypto *cx,
                      const struct tls_rec_secrets *s)
{
    if (!s || s->client_len != r->secret_len || s->server_len != r->secret_len)
        return -EIO;
    memcpy(r->rd.secret, s->client, r->secret_len);
    memcpy(r->wr.secret, s->server, r->secret_len);
    if (tls_dir_from_secret(r, cx, &r->rd) < 0 || tls_dir_from_secret(r, cx, &r->wr) < 0)
        return -EIO;
    return 0;
}

/* The key block of RFC 5246 section 6.3 (AEAD suites: no MAC keys). */
static int tls_keys12(struct tls_record *r, struct tls_rec_crypto *cx, SSL *ssl)
{
    static const char label[] = "key expansion";
    uint8_t master[48], cr[32], sr[32], block[2 * 32 + 2 * 12];
    size_t iv_len = r->aead == TLS_CHACHA20_POLY1305 ? 12 : 4;
    size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master, sizeof(master));
    size_t need = 2 * (r->key_len + iv_len);
    EVP_KDF_CTX *kctx;
    int ret;

    if (!mlen || SSL_get_client_random(ssl, cr, sizeof(cr)) != sizeof(cr) ||
        SSL_get_server_random(ssl, sr, sizeof(sr)) != sizeof(sr))
        return -EIO;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, r->sha384 ? "SHA384" : "SHA256",
                                         0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master, mlen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)label, sizeof(label) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, sr, sizeof(sr)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, cr, sizeof(cr)),
        OSSL_PARAM_construct_end(),
    };
    kctx = EVP_KDF_CTX_new(cx->prf);
    ret = kctx && EVP_KDF_derive(kctx, block, need, params) == 1 ? 0 : -EIO;
    EVP_KDF_CTX_free(kctx);
    if (ret == 0) {
        /* client key, server key, client IV, server IV; the server reads
         * what the client wrote */
        memcpy(r->rd.key, block, r->key_len);
        memcpy(r->wr.key, block + r->key_len, r->key_len);
        memcpy(r->rd.iv, block + 2 * r->key_len, iv_len);
        memcpy(r->wr.iv, block + 2 * r->key_len + iv_len, iv_len);
    }
    OPENSSL_cleanse(master, sizeof(master));
    OPENSSL_cleanse(block, sizeof(block));
    return ret;
}

int tls_record_from_ssl(struct tls_record *r, struct tls_rec_crypto *cx, SSL *ssl,
                        const struct tls_rec_secrets *secrets, uint64_t rd_seq,
                        uint64_t wr_seq)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
    int version = SSL_version(ssl);
    int ret;

    memset(r, 0, sizeof(*r));
    if (!c || !md || (version != TLS1_2_VERSION && version != TLS1_3_VERSION))
        return -ENOTSUP;
    switch (SSL_CIPHER_get_cipher_nid(c)) {
    case NID_aes_128_gcm: r->aead = TLS_AES_128_GCM; r->key_len = 16; break;
    case NID_aes_256_gcm: r->aead = TLS_AES_256_GCM; r->key_len = 32; break;
    case NID_chacha20_poly1305: r->aead = TLS_CHACHA20_POLY1305; r->key_len = 32; break;
    default: return -ENOTSUP;
    }
    r->v13 = version == TLS1_3_VERSION;
    r->secret_len = (uint8_t)EVP_MD_get_size(md);
    if (r->secret_len == 48)
        r->sha384 = true;
    else if (r->secret_len != 32)
        return -ENOTSUP;
    ret = r->v13 ? tls_keys13(r, cx, secrets) : tls_keys12(r, cx, ssl);
    r->rd.seq = rd_seq;
    r->wr.seq = wr_seq;
    return ret;
}

/* ---- records ------------------------------------------------------------- */

static bool tls_explicit_nonce(const struct tls_record *r)
{
    return !r->v13 && r->aead != TLS_CHACHA20_POLY1305;
}

size_t tls_record_prefix(const struct tls_record *r)
{
    return TLS_REC_HEADER + (tls_explicit_nonce(r) ? TLS12_EXPLICIT_NONCE : 0);
}

size_t tls_record_overhead(const struct tls_record *r)
{
    return tls_record_prefix(r) + (r->v13 ? 1 : 0) + TLS_TAG;
}

static void tls_put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* The per-record nonce: the IV with the sequence number mixed in (TLS 1.3,
 * ChaCha20), or the salt and the explicit part (TLS 1.2 GCM). */
static void tls_nonce(const struct tls_record *r, const struct tls_rec_dir *d,
                      const uint8_t *explicit_part, uint8_t nonce[12])
{
    uint8_t seq[8];

    if (tls_explicit_nonce(r)) {
        memcpy(nonce, d->iv, 4);
        memcpy(nonce + 4, explicit_part, 8);
        return;
    }
    tls_put64(seq, d->seq);
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] ^= seq[i];
}

/* TLS 1.2's additional data: sequence, type, version, plaintext length. */
static size_t tls_aad12(const struct tls_rec_dir *d, uint8_t type, size_t n, uint8_t aad[13])
{
    tls_put64(aad, d->seq);
    aad[8] = type;
    aad[9] = 3;
    aad[10] = 3;
    aad[11] = (uint8_t)(n >> 8);
    aad[12] = (uint8_t)n;
    return 13;
}

static int tls_aead(struct tls_rec_crypto *cx, const struct tls_record *r,
                    const struct tls_rec_dir *d, const uint8_t nonce[12], bool enc,
                    const uint8_t *aad, size_t aad_len, uint8_t *p, size_t n, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = cx->ctx;
    int outl;

    if (EVP_CipherInit_ex2(ctx, cx->ciphers[r->aead], d->key, nonce, enc, NULL) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len) != 1 ||
        (n && EVP_CipherUpdate(ctx, p, &outl, p, (int)n) != 1))
        return -EIO;
    if (enc)
        return EVP_CipherFinal_ex(ctx, p + n, &outl) == 1 &&
                       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TLS_TAG, tag) == 1
                   ? 0
                   : -EIO;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TLS_TAG, tag) != 1)
        return -EIO;
    return EVP_CipherFinal_ex(ctx, p + n, &outl) == 1 ? 0 : -EBADMSG;
}

long tls_record_seal(struct tls_record *r, struct tls_rec_crypto *cx, uint8_t type, uint8_t *rec,
                     size_t n)
{
    size_t prefix = tls_record_prefix(r), body;
    uint8_t nonce[12], aad[13], *p = rec + prefix;
    size_t aad_len;

    if (n > TLS_REC_PLAIN_MAX)
        return -EINVAL;
    if (r->v13) {
        p[n++] = type; /* the inner content type; no padding */
        type = TLS_CT_APPLICATION_DATA;
    }
    body = prefix - TLS_REC_HEADER + n + TLS_TAG;
    rec[0] = type;
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(body >> 8);
    rec[4] = (uint8_t)body;
    if (tls_explicit_nonce(r))
        tls_put64(rec + TLS_REC_HEADER, r->wr.seq);
    tls_nonce(r, &r->wr, rec + TLS_REC_HEADER, nonce);
    if (r->v13) {
        memcpy(aad, rec, TLS_REC_HEADER);
        aad_len = TLS_REC_HEADER;
    } else {
        aad_len = tls_aad12(&r->wr, type, n, aad);
    }
    if (tls_aead(cx, r, &r->wr, nonce, true, aad, aad_len, p, n, p + n) < 0)
        return -EIO;
    r->wr.seq++;
    return (long)(TLS_REC_HEADER + body);
}

long tls_record_length(const struct tls_record *r, const uint8_t *p)
{
    size_t body = (size_t)p[3] << 8 | p[4];
    size_t min = tls_record_prefix(r) - TLS_REC_HEADER + TLS_TAG + (r->v13 ? 1 : 0);

    /* TLS 1.3 wraps every protected record as application data: any other
     * outer type (a change_cipher_spec after the handshake) is unexpected,
     * as an unknown type is in either version (RFC 8446 section 5). */
    if (p[0] < TLS_CT_CHANGE_CIPHER_SPEC || p[0] > TLS_CT_APPLICATION_DATA ||
        (r->v13 && p[0] != TLS_CT_APPLICATION_DATA))
        return -ENOMSG;
    if (p[1] != 3 || p[2] != 3)
        return -EPROTO;
    if (body > (r->v13 ? TLS13_CIPHERTEXT_MAX : TLS12_CIPHERTEXT_MAX))
        return -EMSGSIZE;
    if (body < min)
        return -EPROTO;
    return (long)(TLS_REC_HEADER + body);
}

int tls_record_open(struct tls_record *r, struct tls_rec_crypto *cx, uint8_t *rec, size_t len,
                    uint8_t *type, uint8_t **plain, size_t *plain_len)
{
    size_t prefix = tls_record_prefix(r), n;
    uint8_t nonce[12], aad[13], *p = rec + prefix;
    size_t aad_len;
    int ret;

    if (len < tls_record_overhead(r))
        return -EPROTO;
    n = len - prefix - TLS_TAG;
    if (r->v13 && rec[0] != TLS_CT_APPLICATION_DATA)
        return -ENOMSG;
    tls_nonce(r, &r->rd, rec + TLS_REC_HEADER, nonce);
    if (r->v13) {
        memcpy(aad, rec, TLS_REC_HEADER);
        aad_len = TLS_REC_HEADER;
    } else {
        aad_len = tls_aad12(&r->rd, rec[0], n, aad);
    }
    ret = tls_aead(cx, r, &r->rd, nonce, false, aad, aad_len, p, n, p + n);
    if (ret < 0)
        return ret;
    r->rd.seq++;
    *type = rec[0];
    if (r->v13) { /* the inner type is the last byte that is not padding */
        while (n && !p[n - 1])
            n--;
        if (!n)
            return -ENOMSG; /* no type at all: unexpected_message (section 5.4) */
        *type = p[--n];
    }
    if (n > TLS_REC_PLAIN_MAX)
        return -EMSGSIZE;
    *plain = p;
    *plain_len = n;
    return 0;
}
