/* bench_tls.c - the client side of TLS for wss://: OpenSSL 3 driven by the
 * engine's io_uring loop through memory BIOs.
 *
 * Why it exists: a load generator for TLS must cost little per message and
 * must never block its ring.  So SSL never sees a socket: what a receive
 * brings is written into the connection's read BIO, SSL_do_handshake and
 * SSL_read drain it, and the engine hands the plaintext to the WebSocket
 * client one record at a time; what SSL writes (the handshake, records,
 * alerts) collects in the write BIO, and the engine's flush moves it into
 * the connection's send buffer and sends it with its one send per batch.
 * Plaintext queued while a send is in flight waits and is sealed with what
 * follows it, so a batch of small messages leaves as one record.
 *
 * Defaults fit benchmarking: TLS 1.3 only (--tls12: 1.2 only), ALPN
 * http/1.1 offered as browsers do for wss, no certificate verification
 * unless --ca names the CA to verify against (the name checked is --sni,
 * else the URL's host).  --resume keeps, per thread, the latest sessions
 * the server gave (tickets) and offers the latest still resumable on every
 * new connection: OpenSSL uses a TLS 1.3 ticket once (RFC 8446 asks
 * clients not to reuse one), while a TLS 1.2 one serves every connection
 * until the server sends a new one.  The client sends its close_notify in
 * answer to the server's, which follows the WebSocket closing handshake
 * (the server ends TCP first); closes whose TCP end came without the
 * server's close_notify are counted. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SSL_read's largest plaintext: one record. */
#define TLS_PLAIN_MAX 16384

struct bench_tls {
    SSL_CTX *ctx;
    char sni[256];          /* "": none (the URL's host is an address) */
    bool resume;
    bool quiet;             /* the mode's connections are mostly quiet */
};

struct bench_tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio;       /* what came, what SSL wrote; both owned by ssl */
    uint8_t *tx;            /* records being sent: [tx_off, tx_len) */
    uint32_t tx_off, tx_len, tx_cap;
    bool closed_cleanly;    /* the server's close_notify came */
    bool failed;            /* TLS failed: its session is not to be resumed */
};

static const unsigned char tls_alpn[] = "\x08http/1.1";

/* The reason OpenSSL gives for the last failure, its queue emptied so that
 * the next connection's failure is told alone. */
static const char *tls_reason(SSL *ssl, char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();

    /* Without --ca the result of the verification is kept but unused. */
    if (ssl && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
        snprintf(buf, cap, "certificate: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    else if (e)
        ERR_error_string_n(e, buf, cap);
    else
        snprintf(buf, cap, "connection ended");
    ERR_clear_error();
    return buf;
}

/* ---- the context ------------------------------------------------------ */

/* A session the server gave to one of the engine's connections (the
 * publisher's keeps its own). */
static int tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct bench_conn *c = SSL_get_app_data(ssl);
    struct bench_thread *t;

    if (!c)
        return 0; /* not kept: OpenSSL drops its reference */
    t = c->t;
    if (t->n_tls_sessions == BENCH_TLS_SESSIONS) {
        SSL_SESSION_free(t->tls_sessions[0]);
        memmove(t->tls_sessions, t->tls_sessions + 1,
                (BENCH_TLS_SESSIONS - 1) * sizeof *t->tls_sessions);
        t->n_tls_sessions--;
    }
    t->tls_sessions[t->n_tls_sessions++] = sess;
    return 1; /* the reference is kept */
}

/* The latest session that can still be resumed; NULL when none. */
static SSL_SESSION *tls_session_pick(struct bench_thread *t)
{
    while (t->n_tls_sessions) {
        SSL_SESSION *s = t->tls_sessions[t->n_tls_sessions - 1];

        if (SSL_SESSION_is_resumable(s))
            return s;
        SSL_SESSION_free(s);
        t->n_tls_sessions--;
    }
    return NULL;
}

/* What the server is checked against with --ca: --sni, else the URL's
 * host, a name or an address. */
static int tls_verify_setup(struct bench_tls *tls, const struct bench_opts *o)
{
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(tls->ctx);
    int ok;

    if (access(o->ca, R_OK) < 0) {
        fprintf(stderr, "ringws-bench: --ca %s: %s\n", o->ca, strerror(errno));
        return -errno;
    }
    if (SSL_CTX_load_verify_locations(tls->ctx, o->ca, NULL) != 1) {
        char why[160];

        fprintf(stderr, "ringws-bench: --ca %s: %s\n", o->ca, tls_reason(NULL, why, sizeof why));
        return -EINVAL;
    }
    SSL_CTX_set_verify(tls->ctx, SSL_VERIFY_PEER, NULL);
    if (tls->sni[0])
        ok = X509_VERIFY_PARAM_set1_host(vp, tls->sni, 0);
    else
        ok = X509_VERIFY_PARAM_set1_ip_asc(vp, o->hostname);
    if (ok != 1) {
        fprintf(stderr, "ringws-bench: cannot check the name %s\n",
                tls->sni[0] ? tls->sni : o->hostname);
        return -EINVAL;
    }
    return 0;
}

int bench_tls_create(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    int version = o->tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    struct in_addr a;
    struct bench_tls *tls;

    if (!o->tls)
        return 0;
    tls = calloc(1, sizeof *tls);
    if (!tls || !(tls->ctx = SSL_CTX_new(TLS_client_method()))) {
        free(tls);
        fprintf(stderr, "ringws-bench: cannot create the TLS context\n");
        return -ENOMEM;
    }
    b->tls = tls;
    tls->resume = o->resume;
    tls->quiet = b->mode->quiet;
    if (o->sni[0])
        snprintf(tls->sni, sizeof tls->sni, "%s", o->sni);
    else if (inet_pton(AF_INET, o->hostname, &a) != 1)
        snprintf(tls->sni, sizeof tls->sni, "%s", o->hostname); /* RFC 6066: names only */
    if (SSL_CTX_set_min_proto_version(tls->ctx, version) != 1 ||
        SSL_CTX_set_max_proto_version(tls->ctx, version) != 1 ||
        SSL_CTX_set_alpn_protos(tls->ctx, tls_alpn, sizeof tls_alpn - 1) != 0) {
        fprintf(stderr, "ringws-bench: cannot configure the TLS context\n");
        return -EINVAL;
    }
    if (o->ca[0] && tls_verify_setup(tls, o) < 0)
        return -EINVAL;
    if (o->resume) {
        SSL_CTX_set_session_cache_mode(tls->ctx, SSL_SESS_CACHE_CLIENT |
                                                     SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(tls->ctx, tls_new_session);
    }
    return 0;
}

void bench_tls_destroy(struct bench *b)
{
    if (!b->tls)
        return;
    SSL_CTX_free(b->tls->ctx);
    free(b->tls);
    b->tls = NULL;
}

SSL *bench_tls_ssl(const struct bench_tls *tls)
{
    SSL *ssl = SSL_new(tls->ctx);

    if (ssl && tls->sni[0] && SSL_set_tlsext_host_name(ssl, tls->sni) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* ---- threads ---------------------------------------------------------- */

int bench_tls_thread_init(struct bench_thread *t)
{
    if (!t->b->tls)
        return 0;
    t->tls_plain = malloc(TLS_PLAIN_MAX);
    return t->tls_plain ? 0 : -ENOMEM;
}

void bench_tls_thread_end(struct bench_thread *t)
{
    free(t->tls_plain);
    t->tls_plain = NULL;
    while (t->n_tls_sessions)
        SSL_SESSION_free(t->tls_sessions[--t->n_tls_sessions]);
}

/* "TLSv1.3 TLS_AES_256_GCM_SHA384 x25519, server key EC prime256v1" */
static void tls_describe(struct bench_thread *t, SSL *ssl)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    EVP_PKEY *key = cert ? X509_get0_pubkey(cert) : NULL;
    const char *group = SSL_group_to_name(ssl, SSL_get_negotiated_group(ssl));
    char kdesc[64] = "none";

    if (key) {
        char curve[32];
        size_t len;

        if (EVP_PKEY_get_group_name(key, curve, sizeof curve, &len) == 1)
            snprintf(kdesc, sizeof kdesc, "%s %s", EVP_PKEY_get0_type_name(key), curve);
        else
            snprintf(kdesc, sizeof kdesc, "%s %d", EVP_PKEY_get0_type_name(key),
                     EVP_PKEY_get_bits(key));
    }
    snprintf(t->tls_desc, sizeof t->tls_desc, "%s %s %s, server key %s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), group ? group : "-", kdesc);
    atomic_store_explicit(&t->tls_desc_set, true, memory_order_release);
}

const char *bench_tls_desc(struct bench *b)
{
    for (unsigned i = 0; i < b->o.threads; i++)
        if (atomic_load_explicit(&b->threads[i].tls_desc_set, memory_order_acquire))
            return b->threads[i].tls_desc;
    return "";
}

/* ---- connections ------------------------------------------------------ */

static int tls_fail(struct bench_thread *t, struct bench_conn *c, const char *when)
{
    char why[160];

    c->tls->failed = true;
    bench_problem(t, c, "TLS %s: %s", when, tls_reason(c->tls->ssl, why, sizeof why));
    return -EPROTO;
}

int bench_tls_conn_start(struct bench_thread *t, struct bench_conn *c)
{
    const struct bench_tls *tls = t->b->tls;
    struct bench_tls_conn *tc = calloc(1, sizeof *tc);
    SSL_SESSION *sess;
    int r;

    if (!tc)
        return -ENOMEM;
    c->tls = tc;
    tc->ssl = bench_tls_ssl(tls);
    tc->rbio = BIO_new(BIO_s_mem());
    tc->wbio = BIO_new(BIO_s_mem());
    if (!tc->ssl || !tc->rbio || !tc->wbio) {
        BIO_free(tc->rbio);
        BIO_free(tc->wbio);
        tc->rbio = tc->wbio = NULL;
        return -ENOMEM;
    }
    SSL_set_bio(tc->ssl, tc->rbio, tc->wbio);
    SSL_set_app_data(tc->ssl, c);
    SSL_set_connect_state(tc->ssl);
    if (tls->quiet)
        SSL_set_mode(tc->ssl, SSL_MODE_RELEASE_BUFFERS);
    if (tls->resume && (sess = tls_session_pick(t)))
        SSL_set_session(tc->ssl, sess);
    r = SSL_do_handshake(tc->ssl); /* writes the ClientHello */
    if (r <= 0 && SSL_get_error(tc->ssl, r) != SSL_ERROR_WANT_READ)
        return tls_fail(t, c, "start");
    bench_conn_dirty(t, c);
    return 0;
}

void bench_tls_conn_free(struct bench_conn *c)
{
    if (!c->tls)
        return;
    /* A connection whose server ended TCP before the client answered its
     * close_notify (or never sent one) would be taken for a broken one:
     * OpenSSL would mark its session (the one --resume keeps) never to be
     * resumed.  Only a failed one is. */
    if (c->tls->ssl && !c->tls->failed)
        SSL_set_shutdown(c->tls->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->tls->ssl); /* and the BIOs it was given */
    free(c->tls->tx);
    free(c->tls);
    c->tls = NULL;
}

static void tls_handshake_done(struct bench_thread *t, struct bench_conn *c)
{
    SSL *ssl = c->tls->ssl;

    stat_add(SSL_session_reused(ssl) ? &t->st.tls_resumed : &t->st.tls_full, 1);
    if (!atomic_load_explicit(&t->tls_desc_set, memory_order_relaxed))
        tls_describe(t, ssl);
    bench_conn_dirty(t, c); /* the upgrade request waits to be sealed */
}

int bench_tls_read(struct bench_thread *t, struct bench_conn *c, const uint8_t **p)
{
    struct bench_tls_conn *tc = c->tls;
    int n = tc->closed_cleanly ? 0 : SSL_read(tc->ssl, t->tls_plain, TLS_PLAIN_MAX);

    if (n > 0) {
        *p = t->tls_plain;
        return n;
    }
    if (BIO_ctrl_pending(tc->wbio))
        bench_conn_dirty(t, c); /* handshake messages or an alert to send */
    if (tc->closed_cleanly)
        return 0; /* nothing may follow close_notify */
    switch (SSL_get_error(tc->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        /* Answered with ours: some servers (libwebsockets) end TCP only
         * once it came. */
        tc->closed_cleanly = true;
        SSL_shutdown(tc->ssl);
        bench_conn_dirty(t, c);
        return 0;
    default:
        return tls_fail(t, c, "record");
    }
}

int bench_tls_input(struct bench_thread *t, struct bench_conn *c, const uint8_t **p,
                    size_t n)
{
    struct bench_tls_conn *tc = c->tls;

    if (tc->closed_cleanly)
        return 0;
    if (BIO_write(tc->rbio, *p, (int)n) != (int)n)
        return tls_fail(t, c, "input");
    if (!SSL_is_init_finished(tc->ssl)) {
        int r = SSL_do_handshake(tc->ssl);

        if (r == 1) {
            tls_handshake_done(t, c);
        } else {
            if (SSL_get_error(tc->ssl, r) != SSL_ERROR_WANT_READ)
                return tls_fail(t, c, "handshake");
            if (BIO_ctrl_pending(tc->wbio))
                bench_conn_dirty(t, c);
            return 0;
        }
    }
    return bench_tls_read(t, c, p);
}

/* Moves what SSL wrote to the end of tx.  No send is in flight: tx may
 * move. */
static int tls_take_written(struct bench_tls_conn *tc)
{
    size_t n = BIO_ctrl_pending(tc->wbio);

    if (!n)
        return 0;
    if (tc->tx_off) {
        memmove(tc->tx, tc->tx + tc->tx_off, tc->tx_len - tc->tx_off);
        tc->tx_len -= tc->tx_off;
        tc->tx_off = 0;
    }
    if (n > tc->tx_cap - tc->tx_len) {
        uint32_t cap = tc->tx_cap ? tc->tx_cap : 4096;
        uint8_t *tx;

        while (cap < tc->tx_len + n)
            cap *= 2;
        if (!(tx = realloc(tc->tx, cap)))
            return -ENOMEM;
        tc->tx = tx;
        tc->tx_cap = cap;
    }
    if (BIO_read(tc->wbio, tc->tx + tc->tx_len, (int)n) != (int)n)
        return -EPROTO;
    tc->tx_len += (uint32_t)n;
    return 0;
}

int bench_tls_output(struct bench_thread *t, struct bench_conn *c, const uint8_t **p)
{
    struct bench_tls_conn *tc = c->tls;
    int ret;

    if (c->out_len > c->out_off && SSL_is_init_finished(tc->ssl)) {
        int len = (int)(c->out_len - c->out_off);

        /* A memory BIO takes all: SSL_write seals the whole batch. */
        if (SSL_write(tc->ssl, c->out + c->out_off, len) != len)
            return tls_fail(t, c, "write");
        c->out_off = c->out_len = 0;
    }
    if ((ret = tls_take_written(tc)) < 0)
        return ret;
    *p = tc->tx + tc->tx_off;
    return (int)(tc->tx_len - tc->tx_off);
}

void bench_tls_sent(struct bench_conn *c, uint32_t n)
{
    struct bench_tls_conn *tc = c->tls;

    tc->tx_off += n;
    if (tc->tx_off == tc->tx_len)
        tc->tx_off = tc->tx_len = 0;
}

bool bench_tls_closed_cleanly(const struct bench_conn *c)
{
    return c->tls->closed_cleanly;
}
