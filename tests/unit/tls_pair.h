/* tls_pair.h - an OpenSSL client and an OpenSSL server joined in memory,
 * and the server's record state taken from OpenSSL the way the TLS
 * transport takes it.
 *
 * Why it exists: the record layer (tls_record.c) is judged against a real
 * OpenSSL peer, by its unit test and by its fuzzer alike.  Both need a
 * certificate made on the spot, a handshake without sockets, and the
 * sequence numbers the transport (transport_tls.c) counts in the server's
 * handshake output: records after the last ChangeCipherSpec (TLS 1.2),
 * application records of the call that completed (TLS 1.3: the session
 * tickets).  The server's SSL_CTX follows the server's policy
 * (tls_context.c) where it shapes the records: versions, suites, tickets
 * without a session cache, the key log callback.
 *
 * Everything is static inline: each program includes it once and uses only
 * some of it. */
#ifndef RINGWS_TEST_TLS_PAIR_H
#define RINGWS_TEST_TLS_PAIR_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls_record.h"

/* A self-signed EC P-256 certificate naming cn, valid for a day. */
static inline int tls_pair_cert(const char *cn, X509 **cert, EVP_PKEY **key)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
    bool ok = k && x && name && X509_set_version(x, 2) == 1 &&
              ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
              X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                         -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, k) == 1 &&
              X509_sign(x, k, EVP_sha256()) > 0;

    if (!ok) {
        X509_free(x);
        EVP_PKEY_free(k);
        return -1;
    }
    *cert = x;
    *key = k;
    return 0;
}

/* The server's policy as far as records go; `tickets` session tickets per
 * handshake (the server sends one). */
static inline SSL_CTX *tls_pair_server_ctx(X509 *cert, EVP_PKEY *key, size_t tickets)
{
    static const unsigned char sid_ctx[] = "ringws";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1 ||
        SSL_CTX_set_num_tickets(ctx, tickets) != 1 || SSL_CTX_use_certificate(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_keylog_callback(ctx, tls_rec_keylog);
    return ctx;
}

/* A client that speaks only `version` and offers only `suite` (a TLS 1.2
 * cipher list or a TLS 1.3 suite name). */
static inline SSL_CTX *tls_pair_client_ctx(int version, const char *suite)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx || SSL_CTX_set_min_proto_version(ctx, version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, version) != 1 ||
        (version == TLS1_3_VERSION ? SSL_CTX_set_ciphersuites(ctx, suite)
                                   : SSL_CTX_set_cipher_list(ctx, suite)) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

struct tls_pair {
    SSL *client, *server;
    BIO *client_in, *client_out;  /* what the client reads, what it wrote */
    BIO *server_in, *server_out;
    struct tls_rec_secrets secrets; /* the server's key log */
    /* The server's handshake records, counted as the transport counts them. */
    bool ccs_seen;
    unsigned after_ccs, app_in_call;
};

/* Counts the server's records as the transport does; OpenSSL writes whole
 * records into a memory BIO. */
static inline int tls_pair_count(struct tls_pair *tp, const uint8_t *p, size_t n)
{
    while (n) {
        size_t len;
        if (n < TLS_REC_HEADER)
            return -1;
        len = TLS_REC_HEADER + ((size_t)p[3] << 8 | p[4]);
        if (len > n)
            return -1;
        if (p[0] == TLS_CT_CHANGE_CIPHER_SPEC) {
            tp->ccs_seen = true;
            tp->after_ccs = 0;
        } else if (tp->ccs_seen) {
            tp->after_ccs++;
        }
        if (p[0] == TLS_CT_APPLICATION_DATA)
            tp->app_in_call++;
        p += len;
        n -= len;
    }
    return 0;
}

/* Moves every byte one side wrote to the other; the server's are counted
 * first (a call's records are all in its wbio when the call returns). */
static inline int tls_pair_move(BIO *from, BIO *to, struct tls_pair *count)
{
    char *p;
    long n = BIO_get_mem_data(from, &p);

    if (n < 0 || (count && tls_pair_count(count, (const uint8_t *)p, (size_t)n) < 0) ||
        (n && BIO_write(to, p, (int)n) != n))
        return -1;
    (void)BIO_reset(from);
    return 0;
}

static inline bool tls_pair_step(SSL *ssl, int *done)
{
    int r;

    if (*done)
        return true;
    r = SSL_do_handshake(ssl);
    if (r == 1) {
        *done = 1;
        return true;
    }
    return SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ;
}

/* A handshake of a fresh client (resuming `resume` when not NULL) and a
 * fresh server.  0, or -1 when it fails; tls_pair_free either way. */
static inline int tls_pair_connect(struct tls_pair *tp, SSL_CTX *cctx, SSL_CTX *sctx,
                                   SSL_SESSION *resume)
{
    int cdone = 0, sdone = 0;

    memset(tp, 0, sizeof(*tp));
    tp->client = SSL_new(cctx);
    tp->server = SSL_new(sctx);
    tp->client_in = BIO_new(BIO_s_mem());
    tp->client_out = BIO_new(BIO_s_mem());
    tp->server_in = BIO_new(BIO_s_mem());
    tp->server_out = BIO_new(BIO_s_mem());
    if (!tp->client || !tp->server || !tp->client_in || !tp->client_out || !tp->server_in ||
        !tp->server_out) {
        BIO_free(tp->client_in);
        BIO_free(tp->client_out);
        BIO_free(tp->server_in);
        BIO_free(tp->server_out);
        SSL_free(tp->client);
        SSL_free(tp->server);
        memset(tp, 0, sizeof(*tp));
        return -1;
    }
    SSL_set_bio(tp->client, tp->client_in, tp->client_out);
    SSL_set_bio(tp->server, tp->server_in, tp->server_out);
    SSL_set_connect_state(tp->client);
    SSL_set_accept_state(tp->server);
    SSL_set_app_data(tp->server, &tp->secrets);
    if (resume && SSL_set_session(tp->client, resume) != 1)
        return -1;
    for (int turn = 0; turn < 16 && !(cdone && sdone); turn++) {
        if (!tls_pair_step(tp->client, &cdone) ||
            tls_pair_move(tp->client_out, tp->server_in, NULL) < 0)
            return -1;
        if (!sdone) {
            tp->app_in_call = 0;
            if (!tls_pair_step(tp->server, &sdone))
                return -1;
        }
        if (tls_pair_move(tp->server_out, tp->client_in, tp) < 0)
            return -1;
    }
    return cdone && sdone ? 0 : -1;
}

/* The server's record state, as the transport builds it once the handshake
 * is over; the server's SSL is let go then, as there. */
static inline int tls_pair_record(struct tls_pair *tp, struct tls_record *r,
                                  struct tls_rec_crypto *cx)
{
    bool v13 = SSL_version(tp->server) == TLS1_3_VERSION;
    int ret;

    if (SSL_has_pending(tp->server))
        return -1;
    ret = tls_record_from_ssl(r, cx, tp->server, &tp->secrets, v13 ? 0 : 1,
                              v13 ? tp->app_in_call : tp->after_ccs);
    SSL_free(tp->server);
    tp->server = NULL;
    tp->server_in = tp->server_out = NULL;
    return ret;
}

static inline void tls_pair_free(struct tls_pair *tp)
{
    SSL_free(tp->client);
    SSL_free(tp->server);
    memset(tp, 0, sizeof(*tp));
}

#endif
