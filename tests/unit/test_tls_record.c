/* test_tls_record.c - the record layer against a real OpenSSL client.
 *
 * Why it exists: once a handshake is over the server lets OpenSSL's SSL go
 * and tls_record.c protects the records with keys and sequence numbers it
 * took from OpenSSL.  A wrong key, nonce, additional data or sequence
 * number shows only when a peer reads the records, so every check here has
 * OpenSSL's client on the other side: its records open to what it wrote,
 * ours are read by its SSL_read, for TLS 1.2 and 1.3 with each AEAD, after
 * full and resumed handshakes, across KeyUpdates both ways and up to a
 * close_notify; tampered records and bad headers are refused.  Client and
 * server meet in memory (tls_pair.h), with a certificate made here. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "check.h"
#include "guard.h"
#include "tls_pair.h"
#include "tls_record.h"

#define WIRE_MAX (3u * TLS_REC_WIRE_MAX)
#define BIG_WRITE 40000u /* three records' worth */
#define KEY_UPDATE 24    /* the TLS 1.3 handshake message type */

struct suite {
    const char *name;    /* as OpenSSL names the suite negotiated */
    int version;
    unsigned key_len;
    bool sha384;
    size_t tickets;      /* per handshake: the server sends one; two shows
                          * the write sequence is counted, not assumed */
};

static const struct suite suites[] = {
    {"ECDHE-ECDSA-AES128-GCM-SHA256", TLS1_2_VERSION, 16, false, 1},
    {"ECDHE-ECDSA-AES256-GCM-SHA384", TLS1_2_VERSION, 32, true, 1},
    {"ECDHE-ECDSA-CHACHA20-POLY1305", TLS1_2_VERSION, 32, false, 1},
    {"TLS_AES_128_GCM_SHA256", TLS1_3_VERSION, 16, false, 1},
    {"TLS_AES_256_GCM_SHA384", TLS1_3_VERSION, 32, true, 2},
    {"TLS_CHACHA20_POLY1305_SHA256", TLS1_3_VERSION, 32, false, 1},
};

static uint8_t wire[WIRE_MAX], msg[BIG_WRITE], got[BIG_WRITE];
static struct tls_rec_crypto *cx;

/* One connection after its handshake: OpenSSL's client, our server side. */
struct conn {
    struct tls_pair tp;
    struct tls_record r;
    const struct suite *s;
    const char *what;  /* "full" or "resumed", for messages */
};

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

/* Everything the client wrote since the last call. */
static size_t client_wrote(struct conn *c)
{
    int n = BIO_read(c->tp.client_out, wire, sizeof(wire));

    return n > 0 ? (size_t)n : 0;
}

/* Hands our records to the client. */
static void client_gets(struct conn *c, const uint8_t *p, size_t n)
{
    CHECKF(BIO_write(c->tp.client_in, p, (int)n) == (int)n, "%s %s", c->s->name, c->what);
}

/* Reads n bytes of application data from the client's SSL into got. */
static bool client_reads(struct conn *c, size_t n)
{
    size_t have = 0;

    while (have < n) {
        int r = SSL_read(c->tp.client, got + have, (int)(n - have));
        if (r <= 0) {
            fprintf(stderr, "%s %s: SSL_read: error %d, %s\n", c->s->name, c->what,
                    SSL_get_error(c->tp.client, r), ERR_reason_error_string(ERR_get_error()));
            ERR_clear_error();
            return false;
        }
        have += (size_t)r;
    }
    return true;
}

/* Opens the one record at p (all of it, as tls_record_length says). */
static int open_one(struct conn *c, uint8_t *p, size_t n, uint8_t *type, uint8_t **plain,
                    size_t *plain_len)
{
    long len = n >= TLS_REC_HEADER ? tls_record_length(&c->r, p) : -EPROTO;

    if (len < 0 || (size_t)len != n)
        return len < 0 ? (int)len : -EPROTO;
    return tls_record_open(&c->r, cx, p, n, type, plain, plain_len);
}

/* ---- the connection ---------------------------------------------------- */

static bool conn_open(struct conn *c, const struct suite *s, SSL_CTX *cctx, SSL_CTX *sctx,
                      SSL_SESSION *resume)
{
    const SSL_CIPHER *cipher;
    bool v13 = s->version == TLS1_3_VERSION;

    c->s = s;
    c->what = resume ? "resumed" : "full";
    if (tls_pair_connect(&c->tp, cctx, sctx, resume) < 0) {
        fprintf(stderr, "%s %s: handshake failed: %s\n", s->name, c->what,
                ERR_reason_error_string(ERR_get_error()));
        CHECK(!"handshake");
        return false;
    }
    cipher = SSL_get_current_cipher(c->tp.client);
    CHECKF(cipher && !strcmp(SSL_CIPHER_get_name(cipher), s->name), "%s %s: got %s", s->name,
           c->what, cipher ? SSL_CIPHER_get_name(cipher) : "none");
    CHECKF(SSL_version(c->tp.server) == s->version, "%s %s", s->name, c->what);
    CHECKF(SSL_session_reused(c->tp.server) == (resume != NULL) &&
               SSL_session_reused(c->tp.client) == (resume != NULL),
           "%s %s: reused %d/%d", s->name, c->what, SSL_session_reused(c->tp.server),
           SSL_session_reused(c->tp.client));
    /* What the transport starts from: the Finished each side sent (TLS
     * 1.2), the tickets we sent with our first traffic key (TLS 1.3: all
     * of them after a full handshake, one after a resumed one). */
    if (v13)
        CHECKF(c->tp.app_in_call == (resume ? 1 : s->tickets), "%s %s: %u tickets", s->name,
               c->what, c->tp.app_in_call);
    else
        CHECKF(c->tp.after_ccs == 1, "%s %s: %u records after ChangeCipherSpec", s->name,
               c->what, c->tp.after_ccs);
    if (tls_pair_record(&c->tp, &c->r, cx) < 0) {
        CHECKF(!"record state", "%s %s", s->name, c->what);
        return false;
    }
    CHECKF(c->r.v13 == v13 && c->r.key_len == s->key_len && c->r.sha384 == s->sha384 &&
               c->r.secret_len == (s->sha384 ? 48 : 32),
           "%s %s: v13 %d key %u sha384 %d", s->name, c->what, c->r.v13, c->r.key_len,
           c->r.sha384);
    return true;
}

/* ---- the client's records opened by us --------------------------------- */

/* Each size the client writes opens, record by record, to what it wrote;
 * in TLS 1.3 also when the client pads its records. */
static void check_client_writes(struct conn *c)
{
    static const size_t sizes[] = {1, 2, 13, 100, 1000, 4096, 16383, 16384, BIG_WRITE};
    size_t n_sizes = sizeof(sizes) / sizeof(sizes[0]);

    for (size_t i = 0; i < (c->r.v13 ? 2 : 1) * n_sizes; i++) {
        size_t n = sizes[i % n_sizes], len, at = 0, total = 0, records = 0;
        int ret = 0;

        if (i == n_sizes)
            CHECK(SSL_set_block_padding(c->tp.client, 512) == 1);
        fill(msg, n, (unsigned)i);
        CHECKF(SSL_write(c->tp.client, msg, (int)n) == (int)n, "%s %s", c->s->name, c->what);
        len = client_wrote(c);
        while (ret == 0 && at < len) {
            long rl = tls_record_length(&c->r, wire + at);
            uint8_t type = 0, *p;
            size_t pn;
            if (rl < 0 || at + (size_t)rl > len) {
                ret = rl < 0 ? (int)rl : -EPROTO;
                break;
            }
            ret = tls_record_open(&c->r, cx, wire + at, (size_t)rl, &type, &p, &pn);
            if (ret == 0 && (type != TLS_CT_APPLICATION_DATA || total + pn > n))
                ret = -EPROTO;
            if (ret == 0) {
                memcpy(got + total, p, pn);
                total += pn;
                records++;
                at += (size_t)rl;
            }
        }
        CHECKF(ret == 0 && at == len && total == n && !memcmp(got, msg, n) &&
                   records == (n + TLS_REC_PLAIN_MAX - 1) / TLS_REC_PLAIN_MAX,
               "%s %s: %zu bytes written%s: %d after %zu records, %zu bytes", c->s->name,
               c->what, n, i >= n_sizes ? " padded" : "", ret, records, total);
    }
    CHECK(SSL_set_block_padding(c->tp.client, 0) == 1);
}

/* ---- our records read by the client ------------------------------------ */

/* One flight of records of many sizes, empty ones among them, read back
 * by SSL_read as one stream. */
static void check_server_writes(struct conn *c)
{
    static const size_t sizes[] = {0, 1, 100, 0, 16383, 16384, 7};
    size_t prefix = tls_record_prefix(&c->r), at = 0, total = 0;
    uint64_t seq;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        uint64_t explicit_nonce = 0;
        long len;
        seq = c->r.wr.seq;
        fill(wire + at + prefix, n, 40 + (unsigned)i);
        memcpy(msg + total, wire + at + prefix, n);
        len = tls_record_seal(&c->r, cx, TLS_CT_APPLICATION_DATA, wire + at, n);
        CHECKF(len == (long)(n + tls_record_overhead(&c->r)) &&
                   tls_record_length(&c->r, wire + at) == len,
               "%s %s: %zu bytes sealed into %ld", c->s->name, c->what, n, len);
        /* TLS 1.2 GCM sends 8 bytes of the nonce: the sequence number, so
         * that a nonce is never used twice under one key. */
        for (size_t k = TLS_REC_HEADER; k < prefix; k++)
            explicit_nonce = explicit_nonce << 8 | wire[at + k];
        CHECKF(prefix == TLS_REC_HEADER || explicit_nonce == seq,
               "%s %s: explicit nonce %llu for sequence %llu", c->s->name, c->what,
               (unsigned long long)explicit_nonce, (unsigned long long)seq);
        if (len < 0)
            return;
        at += (size_t)len;
        total += n;
    }
    client_gets(c, wire, at);
    CHECKF(client_reads(c, total) && !memcmp(got, msg, total), "%s %s: %zu bytes", c->s->name,
           c->what, total);

    seq = c->r.wr.seq;
    CHECKF(tls_record_seal(&c->r, cx, TLS_CT_APPLICATION_DATA, wire, TLS_REC_PLAIN_MAX + 1) ==
                   -EINVAL &&
               c->r.wr.seq == seq,
           "%s %s: a record too long", c->s->name, c->what);
}

/* ---- refused records ----------------------------------------------------- */

/* Every flipped bit of a client record that the record authenticates makes
 * it fail to open, without moving the sequence; the record itself still
 * opens after that, and only once. */
static void check_tampered(struct conn *c)
{
    static uint8_t pristine[256];
    uint64_t seq = c->r.rd.seq;
    size_t len, bad = SIZE_MAX;
    uint8_t type, *p;
    size_t pn;
    int ret = 0;

    fill(msg, 100, 99);
    CHECK(SSL_write(c->tp.client, msg, 100) == 100);
    len = client_wrote(c);
    CHECKF(len > TLS_REC_HEADER && len <= sizeof(pristine) &&
               tls_record_length(&c->r, wire) == (long)len,
           "%s %s: one record of %zu bytes", c->s->name, c->what, len);
    if (len <= TLS_REC_HEADER || len > sizeof(pristine))
        return;
    memcpy(pristine, wire, len);
    for (size_t bit = 0; bit < 8 * len && bad == SIZE_MAX; bit++) {
        size_t byte = bit / 8;
        int want = -EBADMSG;
        /* TLS 1.2 authenticates neither the version (tls_record_length
         * judges it, below) nor the length (the caller's framing). */
        if (!c->r.v13 && byte > 0 && byte < TLS_REC_HEADER)
            continue;
        if (c->r.v13 && byte == 0)
            want = -ENOMSG; /* every protected record is application data */
        memcpy(wire, pristine, len);
        wire[byte] ^= (uint8_t)(1u << (bit % 8));
        ret = tls_record_open(&c->r, cx, wire, len, &type, &p, &pn);
        if (ret != want)
            bad = bit;
    }
    CHECKF(bad == SIZE_MAX, "%s %s: bit %zu flipped: %d", c->s->name, c->what, bad, ret);
    for (size_t bit = 8; bit < 24; bit++) {
        memcpy(wire, pristine, len);
        wire[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECKF(tls_record_length(&c->r, wire) == -EPROTO, "%s %s: version bit %zu", c->s->name,
               c->what, bit);
    }
    memcpy(wire, pristine, len);
    CHECKF(tls_record_open(&c->r, cx, wire, len - 1, &type, &p, &pn) == -EBADMSG,
           "%s %s: cut short", c->s->name, c->what);
    CHECKF(tls_record_open(&c->r, cx, wire, tls_record_overhead(&c->r) - 1, &type, &p, &pn) ==
               -EPROTO,
           "%s %s: shorter than its overhead", c->s->name, c->what);
    CHECKF(c->r.rd.seq == seq, "%s %s: the sequence moved on failures", c->s->name, c->what);
    memcpy(wire, pristine, len);
    ret = tls_record_open(&c->r, cx, wire, len, &type, &p, &pn);
    CHECKF(ret == 0 && type == TLS_CT_APPLICATION_DATA && pn == 100 && !memcmp(p, msg, 100),
           "%s %s: the record itself: %d", c->s->name, c->what, ret);
    memcpy(wire, pristine, len);
    CHECKF(tls_record_open(&c->r, cx, wire, len, &type, &p, &pn) == -EBADMSG,
           "%s %s: replayed", c->s->name, c->what);
}

/* Headers tls_record_length refuses, and the bounds it keeps, each header
 * at the very end of a readable page. */
static void check_length(struct conn *c)
{
    static const uint8_t bad_types[] = {0, 19, 24, 128, 255};
    static const uint8_t bad_versions[][2] = {{3, 1}, {3, 4}, {3, 0}, {2, 3}, {0, 3}, {3, 2}};
    size_t min = c->r.v13 ? 1 + 16 : strstr(c->s->name, "CHACHA") ? 16 : 8 + 16;
    size_t max = c->r.v13 ? 16384 + 256 : 16384 + 2048;
    const struct {
        uint8_t type, major, minor;
        size_t len;
        long want;
    } cases[] = {
        {23, 3, 3, min, (long)(TLS_REC_HEADER + min)},
        {23, 3, 3, max, (long)(TLS_REC_HEADER + max)},
        /* TLS 1.3 protects every record as application data: any other
         * outer type after the handshake is unexpected_message. */
        {22, 3, 3, 300, c->r.v13 ? -ENOMSG : TLS_REC_HEADER + 300},
        {21, 3, 3, min, c->r.v13 ? -ENOMSG : (long)(TLS_REC_HEADER + min)},
        {20, 3, 3, min, c->r.v13 ? -ENOMSG : (long)(TLS_REC_HEADER + min)},
        {23, 3, 3, max + 1, -EMSGSIZE},
        {23, 3, 3, 0xffff, -EMSGSIZE},
        {23, 3, 3, min - 1, -EPROTO},
        {23, 3, 3, 0, -EPROTO},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t h[TLS_REC_HEADER] = {cases[i].type, cases[i].major, cases[i].minor,
                                     (uint8_t)(cases[i].len >> 8), (uint8_t)cases[i].len};
        long got_len = tls_record_length(&c->r, guard_place(h, sizeof(h)));
        CHECKF(got_len == cases[i].want, "%s: case %zu: %ld, not %ld", c->s->name, i, got_len,
               cases[i].want);
    }
    for (size_t i = 0; i < sizeof(bad_types); i++) {
        uint8_t h[TLS_REC_HEADER] = {bad_types[i], 3, 3, 0, 100};
        CHECKF(tls_record_length(&c->r, guard_place(h, sizeof(h))) == -ENOMSG,
               "%s: type %u", c->s->name, bad_types[i]);
    }
    for (size_t i = 0; i < sizeof(bad_versions) / sizeof(bad_versions[0]); i++) {
        uint8_t h[TLS_REC_HEADER] = {23, bad_versions[i][0], bad_versions[i][1], 0, 100};
        CHECKF(tls_record_length(&c->r, guard_place(h, sizeof(h))) == -EPROTO,
               "%s: version %u.%u", c->s->name, bad_versions[i][0], bad_versions[i][1]);
    }
}

/* ---- TLS 1.3 KeyUpdate ---------------------------------------------------- */

/* Opens the KeyUpdate the client sent first in wire[0..len) and the n
 * bytes of msg in the record after it, which only the next key opens.
 * Whether that record opened. */
static bool open_key_update(struct conn *c, size_t len, uint8_t requested, size_t n)
{
    static uint8_t app[TLS_REC_WIRE_MAX];
    const uint8_t want[] = {KEY_UPDATE, 0, 0, 1, requested};
    uint8_t secret[TLS_REC_SECRET_MAX], type = 0, *p = NULL;
    long first = tls_record_length(&c->r, wire);
    size_t pn = 0, rest;
    int ret;

    if (first <= 0 || (size_t)first >= len || len - (size_t)first > sizeof(app)) {
        CHECKF(!"two records", "%s %s: %zu bytes", c->s->name, c->what, len);
        return false;
    }
    rest = len - (size_t)first;
    memcpy(app, wire + first, rest);
    ret = tls_record_open(&c->r, cx, wire, (size_t)first, &type, &p, &pn);
    CHECKF(ret == 0 && type == TLS_CT_HANDSHAKE && pn == sizeof(want) && !memcmp(p, want, pn),
           "%s %s: KeyUpdate(%u): %d, type %u, %zu bytes", c->s->name, c->what, requested, ret,
           type, pn);
    /* The record after it is sealed with the next key. */
    memcpy(wire, app, rest);
    CHECKF(tls_record_open(&c->r, cx, wire, rest, &type, &p, &pn) == -EBADMSG,
           "%s %s: opened with the old key", c->s->name, c->what);
    memcpy(secret, c->r.rd.secret, sizeof(secret));
    CHECK(tls_record_update(&c->r, cx, &c->r.rd) == 0);
    CHECKF(memcmp(secret, c->r.rd.secret, c->r.secret_len) && c->r.rd.seq == 0,
           "%s %s: the secret did not move on", c->s->name, c->what);
    memcpy(wire, app, rest);
    ret = open_one(c, wire, rest, &type, &p, &pn);
    CHECKF(ret == 0 && type == TLS_CT_APPLICATION_DATA && pn == n && !memcmp(p, msg, n),
           "%s %s: after KeyUpdate(%u): %d", c->s->name, c->what, requested, ret);
    return ret == 0;
}

/* The client moves its key on alone, then asks us to move ours: we answer
 * with our KeyUpdate under the old key and go on under the new one. */
static void check_key_update(struct conn *c)
{
    static const uint8_t ours[] = {KEY_UPDATE, 0, 0, 1, 0};
    size_t prefix = tls_record_prefix(&c->r);
    long first, second;

    for (int twice = 0; twice < 2; twice++) {
        fill(msg, 300, 70 + (unsigned)twice);
        CHECK(SSL_key_update(c->tp.client, SSL_KEY_UPDATE_NOT_REQUESTED) == 1);
        CHECK(SSL_write(c->tp.client, msg, 300) == 300);
        if (!open_key_update(c, client_wrote(c), 0, 300))
            return;
    }
    fill(msg, 200, 80);
    CHECK(SSL_key_update(c->tp.client, SSL_KEY_UPDATE_REQUESTED) == 1);
    CHECK(SSL_write(c->tp.client, msg, 200) == 200);
    if (!open_key_update(c, client_wrote(c), 1, 200))
        return;

    memcpy(wire + prefix, ours, sizeof(ours));
    first = tls_record_seal(&c->r, cx, TLS_CT_HANDSHAKE, wire, sizeof(ours));
    CHECK(first > 0 && tls_record_update(&c->r, cx, &c->r.wr) == 0 && c->r.wr.seq == 0);
    if (first <= 0)
        return;
    fill(wire + first + prefix, 500, 81);
    memcpy(msg, wire + first + prefix, 500);
    second = tls_record_seal(&c->r, cx, TLS_CT_APPLICATION_DATA, wire + first, 500);
    CHECK(second > 0);
    client_gets(c, wire, (size_t)(first + second));
    CHECKF(client_reads(c, 500) && !memcmp(got, msg, 500), "%s %s: after our KeyUpdate",
           c->s->name, c->what);
}

/* ---- the end ----------------------------------------------------------------- */

/* Our close_notify is a clean end to the client; its own opens as one. */
static void check_close(struct conn *c)
{
    static const uint8_t close_notify[] = {1, TLS_ALERT_CLOSE_NOTIFY};
    uint8_t type = 0, *p = NULL;
    size_t pn = 0;
    long len;
    int r, ret;

    memcpy(wire + tls_record_prefix(&c->r), close_notify, sizeof(close_notify));
    len = tls_record_seal(&c->r, cx, TLS_CT_ALERT, wire, sizeof(close_notify));
    CHECK(len > 0);
    if (len <= 0)
        return;
    client_gets(c, wire, (size_t)len);
    r = SSL_read(c->tp.client, got, 1);
    CHECKF(r <= 0 && SSL_get_error(c->tp.client, r) == SSL_ERROR_ZERO_RETURN,
           "%s %s: SSL_read %d, error %d", c->s->name, c->what, r,
           SSL_get_error(c->tp.client, r));
    ERR_clear_error();
    CHECK(SSL_shutdown(c->tp.client) == 1);
    len = (long)client_wrote(c);
    ret = open_one(c, wire, (size_t)len, &type, &p, &pn);
    CHECKF(ret == 0 && type == TLS_CT_ALERT && pn == 2 && !memcmp(p, close_notify, 2),
           "%s %s: the client's close_notify: %d, type %u", c->s->name, c->what, ret, type);
}

/* ---- records OpenSSL never sends ----------------------------------------- */

/* Seals a record as the client would, the way RFC 5288, RFC 7905 and RFC
 * 8446 section 5.2 say, with OpenSSL's AEAD alone and the client's key as
 * the record layer took it: n bytes of data at out + prefix, then (TLS
 * 1.3) the inner type and pad zeros.  Its length, or -1. */
static long forge(struct conn *c, uint8_t type, size_t n, size_t pad, uint8_t *out)
{
    const struct tls_rec_dir *d = &c->r.rd;
    bool v13 = c->r.v13, chacha = strstr(c->s->name, "CHACHA") != NULL;
    bool explicit_nonce = !v13 && !chacha;
    size_t prefix = TLS_REC_HEADER + (explicit_nonce ? 8 : 0);
    size_t inner = n + (v13 ? 1 + pad : 0), body = prefix - TLS_REC_HEADER + inner + 16;
    uint8_t nonce[12], aad[13], seq[8];
    EVP_CIPHER *aead = EVP_CIPHER_fetch(NULL, chacha ? "ChaCha20-Poly1305"
                                             : c->s->key_len == 16 ? "AES-128-GCM"
                                                                   : "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl;
    bool ok;

    for (int i = 0; i < 8; i++)
        seq[i] = (uint8_t)(d->seq >> (56 - 8 * i));
    out[0] = v13 ? TLS_CT_APPLICATION_DATA : type;
    out[1] = out[2] = 3;
    out[3] = (uint8_t)(body >> 8);
    out[4] = (uint8_t)body;
    if (v13) {
        out[prefix + n] = type;
        memset(out + prefix + n + 1, 0, pad);
    }
    memcpy(nonce, d->iv, 12);
    if (explicit_nonce) {
        memcpy(nonce + 4, seq, 8);
        memcpy(out + TLS_REC_HEADER, seq, 8);
    } else {
        for (int i = 0; i < 8; i++)
            nonce[4 + i] ^= seq[i];
    }
    memcpy(aad, v13 ? out : seq, v13 ? TLS_REC_HEADER : 8);
    aad[8] = type;
    aad[9] = aad[10] = 3;
    aad[11] = (uint8_t)(n >> 8);
    aad[12] = (uint8_t)n;
    ok = aead && ctx && EVP_EncryptInit_ex2(ctx, aead, d->key, nonce, NULL) == 1 &&
         EVP_EncryptUpdate(ctx, NULL, &outl, aad, v13 ? TLS_REC_HEADER : 13) == 1 &&
         EVP_EncryptUpdate(ctx, out + prefix, &outl, out + prefix, (int)inner) == 1 &&
         EVP_EncryptFinal_ex(ctx, out + prefix + inner, &outl) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + prefix + inner) == 1;
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(aead);
    return ok ? (long)(TLS_REC_HEADER + body) : -1;
}

/* After the close (the client never sent these: they take its sequence
 * numbers): more plaintext than a record may carry, and TLS 1.3's padding, up to
 * the largest ciphertext and alone. */
static void check_forged(struct conn *c)
{
    const size_t prefix = tls_record_prefix(&c->r);
    const struct {
        uint8_t type;
        size_t n, pad;
        long want_length;
        int want;
    } cases[] = {
        {TLS_CT_APPLICATION_DATA, 100, 0, 0, 0},
        {TLS_CT_APPLICATION_DATA, TLS_REC_PLAIN_MAX + 1, 0, 0, -EMSGSIZE},
        {TLS_CT_APPLICATION_DATA, TLS_REC_PLAIN_MAX, 255 - 16, 0, 0}, /* 2^14 + 256 */
        {TLS_CT_APPLICATION_DATA, TLS_REC_PLAIN_MAX, 256 - 16, -EMSGSIZE, 0},
        {0, 0, 40, 0, -ENOMSG}, /* nothing but zeros: no type */
        {TLS_CT_ALERT, 2, 3, 0, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = cases[i].n;
        uint8_t type = 255, *p = NULL;
        size_t pn = 0;
        long len, rl;
        int ret;
        if (!c->r.v13 && cases[i].pad)
            continue;
        fill(wire + prefix, n, 90 + (unsigned)i);
        memcpy(msg, wire + prefix, n);
        len = forge(c, cases[i].type, n, cases[i].pad, wire);
        rl = tls_record_length(&c->r, wire);
        CHECKF(len > 0 && rl == (cases[i].want_length ? cases[i].want_length : len),
               "%s %s: forged case %zu: length %ld", c->s->name, c->what, i, rl);
        if (rl < 0)
            continue;
        ret = tls_record_open(&c->r, cx, wire, (size_t)len, &type, &p, &pn);
        CHECKF(ret == cases[i].want &&
                   (ret < 0 || (type == cases[i].type && pn == n && !memcmp(p, msg, n))),
               "%s %s: forged case %zu: %d, type %u, %zu bytes", c->s->name, c->what, i, ret,
               type, pn);
    }
}

/* The key log lines OpenSSL writes, and lines it never writes. */
static void check_keylog(SSL_CTX *sctx)
{
    static const char r32[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    static const char s48[] = "0123456789ABCDEF0123456789abcdef"
                              "0123456789abcdef0123456789ABCDEF"
                              "fedcba9876543210fedcba9876543210";
    const struct {
        const char *label, *random, *secret;
        unsigned client_len, server_len;
    } cases[] = {
        {"CLIENT_TRAFFIC_SECRET_0", r32, r32, 32, 0},
        {"SERVER_TRAFFIC_SECRET_0", r32, s48, 0, 48},
        {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", r32, r32, 0, 0},
        {"SERVER_TRAFFIC_SECRET_1", r32, r32, 0, 0},
        {"CLIENT_TRAFFIC_SECRET_0", r32, "0011223", 0, 0},              /* odd */
        {"CLIENT_TRAFFIC_SECRET_0", r32, "00112g33", 0, 0},             /* not hex */
        {"CLIENT_TRAFFIC_SECRET_0", r32, "", 0, 0},
        {"SERVER_TRAFFIC_SECRET_0", r32, "00112233445566778899aabbccddeeff00112233445566778899"
                                         "aabbccddeeff00112233445566778899aabbccddeeff00", 0, 0},
    };
    SSL *ssl = SSL_new(sctx);
    char line[400];

    CHECK(ssl != NULL);
    for (size_t i = 0; ssl && i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_rec_secrets sec = {0};
        const char *hex = cases[i].secret;
        unsigned len = cases[i].client_len + cases[i].server_len;
        uint8_t *out = cases[i].client_len ? sec.client : sec.server;
        bool same = true;
        SSL_set_app_data(ssl, &sec);
        snprintf(line, sizeof(line), "%s %s %s", cases[i].label, cases[i].random, hex);
        tls_rec_keylog(ssl, line);
        for (unsigned k = 0; k < len; k++) {
            unsigned v;
            sscanf(hex + 2 * k, "%2x", &v);
            same &= out[k] == v;
        }
        CHECKF(sec.client_len == cases[i].client_len && sec.server_len == cases[i].server_len &&
                   same,
               "key log line %zu: %u/%u bytes", i, sec.client_len, sec.server_len);
    }
    SSL_free(ssl);
}

/* ---- the suites ---------------------------------------------------------------- */

static void check_conn(struct conn *c)
{
    check_length(c);
    check_client_writes(c);
    check_server_writes(c);
    check_tampered(c);
    if (c->r.v13) {
        check_key_update(c);
        check_client_writes(c); /* the sequences go on from the new keys */
        check_server_writes(c);
    }
}

static void check_suite(const struct suite *s, X509 *cert, EVP_PKEY *key)
{
    SSL_CTX *sctx = tls_pair_server_ctx(cert, key, s->tickets);
    SSL_CTX *cctx = tls_pair_client_ctx(s->version, s->name);
    SSL_SESSION *sess = NULL;
    struct conn c;

    CHECKF(sctx && cctx, "%s: contexts", s->name);
    if (!sctx || !cctx)
        goto out;
    if (s == &suites[0])
        check_keylog(sctx);
    if (conn_open(&c, s, cctx, sctx, NULL)) {
        check_conn(&c);
        sess = SSL_get1_session(c.tp.client); /* its ticket came with our records */
        check_close(&c);
        check_forged(&c);
    }
    tls_pair_free(&c.tp);
    CHECKF(sess && SSL_SESSION_is_resumable(sess), "%s: no session to resume", s->name);
    if (sess && conn_open(&c, s, cctx, sctx, sess)) {
        check_conn(&c);
        check_close(&c);
        check_forged(&c);
    }
    tls_pair_free(&c.tp);
out:
    SSL_SESSION_free(sess);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    ERR_clear_error();
}

int main(void)
{
    X509 *cert;
    EVP_PKEY *key;

    guard_setup(TLS_REC_HEADER);
    cx = tls_rec_crypto_new();
    if (!cx || tls_pair_cert("localhost", &cert, &key) < 0) {
        fprintf(stderr, "cannot set up OpenSSL\n");
        return 1;
    }
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        check_suite(&suites[i], cert, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    tls_rec_crypto_free(cx);
    return check_done("tls_record");
}
