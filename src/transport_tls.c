/* transport_tls.c - TLS under the connection layer: OpenSSL opens and seals
 * records in memory, the ring carries them.
 *
 * Why it exists: a connection of the TLS listener speaks plaintext to the
 * protocols above it like any other (transport.h); this file turns what
 * the ring received into plaintext and the queued plaintext into records,
 * without a syscall of its own and without blocking.
 *
 * Memory: an idle connection holds its SSL (OpenSSL releases its record
 * buffers while nothing is half read or half written) and this file's
 * small record, nothing else.  All the worker's connections share one BIO,
 * which reads from the buffer the ring filled and appends what OpenSSL
 * writes to the connection being driven; plaintext is opened into, and
 * staged for sealing from, two record-sized buffers of the worker.
 *
 * Output: the queue stays the shared plaintext chunks (a published frame
 * is not copied per subscriber); when the flush step sends, up to
 * TLS_FLIGHT_PLAIN bytes of the queue are sealed into as few records as
 * fit, and only those records exist until the send completes.
 *
 * Handshakes cost milliseconds of CPU: a worker spends at most its budget
 * on them per loop turn (tls_handshake_budget_us), keeping the bytes of
 * the others for the next turn, so that established connections are not
 * made to wait behind a storm of new ones. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "log.h"
#include "tls.h"

#define TLS_RECORD_PLAIN 16384u         /* plaintext of a full record */
#define TLS_FLIGHT_PLAIN (64u << 10)    /* plaintext sealed for one send */
#define TLS_FLIGHT_CHUNKS 255u          /* queued chunks one send may cover */
#define TLS_DEFER_MAX (64u << 10)       /* handshake bytes kept while put off */
#define TLS_BUDGET_DEFAULT_US 2000u

enum tls_conn_flag {
    TLS_DONE = 1u << 0,        /* the handshake is over */
    TLS_FAILED = 1u << 1,      /* no record can be read or sealed any more */
    TLS_NOTIFY_SENT = 1u << 2, /* our close_notify is sealed */
    TLS_DEFERRED = 1u << 3,    /* on the worker's deferred list */
};

struct tls_conn {
    SSL *ssl;
    struct ringws_conn *c;
    struct tls_certs *certs;  /* held until the handshake is over (SNI) */
    uint8_t *flight;          /* records the send in flight carries */
    uint8_t *pend;            /* records written since */
    uint8_t *defer;           /* received bytes of a handshake put off */
    struct tls_conn *defer_next;
    uint32_t flight_len, flight_off;
    uint32_t flight_plain;    /* queued plaintext the flight seals */
    uint32_t pend_len, pend_cap;
    uint32_t defer_len;
    uint8_t flight_chunks;
    uint8_t flags;
};

struct tls_worker {
    struct tls_certs *certs;  /* handed to new connections */
    unsigned generation;      /* of certs: a reload changes the server's */
    BIO_METHOD *method;
    BIO *bio;
    /* What the BIO reads from and writes to: the connection driven now. */
    struct tls_conn *cur;
    const uint8_t *in;
    size_t in_len;
    uint64_t budget_ns, spent_ns; /* handshake work per turn, this turn's */
    struct tls_conn *defer_head, *defer_tail;
    uint8_t plain[TLS_RECORD_PLAIN]; /* an opened record */
    uint8_t stage[TLS_RECORD_PLAIN]; /* plaintext gathered for one record */
};

static struct tls_conn *tls_of(const struct ringws_conn *c)
{
    return c->tp_state;
}

static uint64_t tls_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the worker's BIO --------------------------------------------------- */

static int tls_pend_append(struct tls_conn *t, const void *p, size_t n)
{
    if (n > UINT32_MAX - t->pend_len)
        return -ENOMEM;
    if (t->pend_len + n > t->pend_cap) {
        size_t cap = t->pend_cap ? 2u * t->pend_cap : 512;
        uint8_t *grown;
        while (cap < t->pend_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -ENOMEM;
        grown = realloc(t->pend, cap);
        if (!grown)
            return -ENOMEM;
        t->pend = grown;
        t->pend_cap = (uint32_t)cap;
    }
    memcpy(t->pend + t->pend_len, p, n);
    t->pend_len += (uint32_t)n;
    return 0;
}

static int tls_bio_write(BIO *b, const char *p, int len)
{
    struct tls_worker *tw = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (len < 0 || !tw->cur || tls_pend_append(tw->cur, p, (size_t)len) < 0)
        return -1;
    return len;
}

/* What the ring received and OpenSSL has not read yet; none left: retry
 * (the rest of a record comes with a later receive). */
static int tls_bio_read(BIO *b, char *out, int len)
{
    struct tls_worker *tw = BIO_get_data(b);
    size_t n = len > 0 ? (size_t)len : 0;

    BIO_clear_retry_flags(b);
    if (!tw->in_len) {
        BIO_set_retry_read(b);
        return -1;
    }
    if (n > tw->in_len)
        n = tw->in_len;
    memcpy(out, tw->in, n);
    tw->in += n;
    tw->in_len -= n;
    return (int)n;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH; /* written bytes are kept at once */
}

static int tls_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* Points the BIO at connection t and the received bytes to read. */
static void tls_bind(struct tls_worker *tw, struct tls_conn *t, const uint8_t *in, size_t n)
{
    tw->cur = t;
    tw->in = in;
    tw->in_len = n;
}

int tls_worker_init(struct worker *w)
{
    struct tls_worker *tw = calloc(1, sizeof(*tw));
    unsigned budget = w->srv->cfg.tls_handshake_budget_us;

    if (!tw)
        return -ENOMEM;
    w->tls = tw;
    tw->budget_ns = 1000ull * (budget ? budget : TLS_BUDGET_DEFAULT_US);
    tw->method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringws ring");
    if (!tw->method || BIO_meth_set_write(tw->method, tls_bio_write) != 1 ||
        BIO_meth_set_read(tw->method, tls_bio_read) != 1 ||
        BIO_meth_set_ctrl(tw->method, tls_bio_ctrl) != 1 ||
        BIO_meth_set_create(tw->method, tls_bio_create) != 1)
        return -ENOMEM;
    tw->bio = BIO_new(tw->method);
    if (!tw->bio)
        return -ENOMEM;
    BIO_set_data(tw->bio, tw);
    tw->certs = tls_certs_take(w->srv->tls, &tw->generation);
    return 0;
}

/* After every connection is freed (each SSL let go of its BIO reference). */
void tls_worker_fini(struct worker *w)
{
    struct tls_worker *tw = w->tls;

    if (!tw)
        return;
    BIO_free(tw->bio);
    BIO_meth_free(tw->method);
    tls_certs_put(tw->certs);
    free(tw);
    w->tls = NULL;
}

/* ---- a connection's state ----------------------------------------------- */

static int tls_open(struct ringws_conn *c)
{
    struct tls_worker *tw = c->w->tls;
    struct tls_server *ts = c->w->srv->tls;
    struct tls_conn *t;

    if (tls_server_generation(ts) != tw->generation) {
        tls_certs_put(tw->certs);
        tw->certs = tls_certs_take(ts, &tw->generation);
    }
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->ssl = tls_certs_new_ssl(tw->certs);
    if (!t->ssl) {
        ERR_clear_error();
        free(t);
        return -ENOMEM;
    }
    BIO_up_ref(tw->bio);
    SSL_set_bio(t->ssl, tw->bio, tw->bio);
    SSL_set_accept_state(t->ssl);
    t->certs = tw->certs;
    tls_certs_hold(t->certs);
    t->c = c;
    c->tp_state = t;
    return 0;
}

static void tls_defer_unlink(struct tls_worker *tw, struct tls_conn *t)
{
    struct tls_conn **at = &tw->defer_head, *prev = NULL;

    while (*at && *at != t) {
        prev = *at;
        at = &(*at)->defer_next;
    }
    if (!*at)
        return;
    *at = t->defer_next;
    if (tw->defer_tail == t)
        tw->defer_tail = prev;
    t->flags &= ~TLS_DEFERRED;
}

/* The connection is freed: nothing of it is in the ring any more. */
static void tls_release(struct ringws_conn *c)
{
    struct tls_conn *t = tls_of(c);

    if (!t)
        return;
    if (t->flags & TLS_DEFERRED)
        tls_defer_unlink(c->w->tls, t);
    SSL_free(t->ssl);
    tls_certs_put(t->certs);
    free(t->flight);
    free(t->pend);
    free(t->defer);
    free(t);
    c->tp_state = NULL;
}

/* ---- failure ------------------------------------------------------------ */

/* A bad record, a refused handshake, an alert from the peer: what OpenSSL
 * wrote (its alert) still goes out, nothing else does. */
static void tls_fail(struct ringws_conn *c, struct tls_conn *t)
{
    unsigned long e = ERR_peek_error();

    t->flags |= TLS_FAILED;
    STAT_ADD(c->w, tls_handshake_failures, 1);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char why[200] = "no reason given";
        if (e)
            ERR_error_string_n(e, why, sizeof(why));
        log_msg(LOG_LEVEL_DEBUG, "worker %u: TLS: %s", c->w->id, why);
    }
    ERR_clear_error();
    conn_wire_fail(c, t->pend_len != 0);
}

/* ---- input -------------------------------------------------------------- */

/* Keeps received bytes of a handshake for a later turn, after those kept
 * already; false when there are too many (a ClientHello is far smaller). */
static bool tls_defer(struct ringws_conn *c, struct tls_conn *t, const uint8_t *in, size_t n)
{
    struct tls_worker *tw = c->w->tls;
    uint8_t *grown;

    if (t->defer_len + n > TLS_DEFER_MAX)
        return false;
    grown = realloc(t->defer, t->defer_len + n ? t->defer_len + n : 1);
    if (!grown)
        return false;
    memcpy(grown + t->defer_len, in, n);
    t->defer = grown;
    t->defer_len += (uint32_t)n;
    if (!(t->flags & TLS_DEFERRED)) {
        t->flags |= TLS_DEFERRED;
        t->defer_next = NULL;
        if (tw->defer_tail)
            tw->defer_tail->defer_next = t;
        else
            tw->defer_head = t;
        tw->defer_tail = t;
        STAT_ADD(c->w, tls_handshakes_deferred, 1);
    }
    return true;
}

static void tls_handshake_done(struct ringws_conn *c, struct tls_conn *t)
{
    t->flags |= TLS_DONE;
    if (SSL_session_reused(t->ssl))
        STAT_ADD(c->w, tls_handshakes_resumed, 1);
    else
        STAT_ADD(c->w, tls_handshakes_full, 1);
    tls_certs_put(t->certs);
    t->certs = NULL;
}

/* One step of the handshake with what is bound; true once it is over (the
 * rest of the input is records), false while it waits for more input, was
 * put off or failed. */
static bool tls_handshake_step(struct ringws_conn *c, struct tls_conn *t)
{
    struct tls_worker *tw = c->w->tls;
    uint64_t start;
    int r;

    if (tw->spent_ns >= tw->budget_ns) {
        if (!tls_defer(c, t, tw->in, tw->in_len))
            tls_fail(c, t);
        tw->in_len = 0;
        return false;
    }
    start = tls_clock_ns();
    r = SSL_do_handshake(t->ssl);
    tw->spent_ns += tls_clock_ns() - start;
    if (r == 1) {
        tls_handshake_done(c, t);
        return true;
    }
    if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
        tls_fail(c, t);
    return false;
}

/* Opens every whole record of the bound input and hands its plaintext on. */
static void tls_read_records(struct ringws_conn *c, struct tls_conn *t)
{
    struct tls_worker *tw = c->w->tls;

    while (!(c->flags & CF_TEARDOWN)) {
        size_t got = 0;
        int r = SSL_read_ex(t->ssl, tw->plain, sizeof(tw->plain), &got);
        if (r == 1) {
            conn_input(c, tw->plain, got);
            continue;
        }
        switch (SSL_get_error(t->ssl, r)) {
        case SSL_ERROR_WANT_READ:
            return;
        case SSL_ERROR_ZERO_RETURN: /* close_notify: the peer sends no more */
            if (!(c->flags & CF_RD_EOF))
                conn_on_eof(c);
            return;
        default:
            tls_fail(c, t);
            return;
        }
    }
}

static void tls_drive(struct ringws_conn *c, struct tls_conn *t, const uint8_t *in, size_t n)
{
    struct tls_worker *tw = c->w->tls;

    tls_bind(tw, t, in, n);
    if ((t->flags & TLS_DONE) || tls_handshake_step(c, t))
        if (!(t->flags & TLS_FAILED))
            tls_read_records(c, t);
    tls_bind(tw, NULL, NULL, 0);
    if (t->pend_len && !(c->flags & CF_TEARDOWN))
        conn_wire_want(c, true);
}

static void tls_input(struct ringws_conn *c, uint8_t *in, size_t n)
{
    struct tls_conn *t = tls_of(c);

    if (t->flags & TLS_FAILED)
        return;
    if (t->flags & TLS_DEFERRED) { /* after what waits already */
        if (!tls_defer(c, t, in, n))
            tls_fail(c, t);
        return;
    }
    tls_drive(c, t, in, n);
}

void tls_worker_turn(struct worker *w)
{
    struct tls_worker *tw = w->tls;

    tw->spent_ns = 0;
    while (tw->defer_head && tw->spent_ns < tw->budget_ns) {
        struct tls_conn *t = tw->defer_head;
        uint8_t *in = t->defer;
        size_t n = t->defer_len;

        tls_defer_unlink(tw, t);
        t->defer = NULL;
        t->defer_len = 0;
        if (!(t->c->flags & CF_TEARDOWN))
            tls_drive(t->c, t, in, n);
        free(in);
    }
}

bool tls_worker_deferred(const struct worker *w)
{
    return w->tls && w->tls->defer_head;
}

/* ---- output ------------------------------------------------------------- */

static int tls_seal(struct tls_conn *t, const uint8_t *p, size_t n)
{
    size_t done = 0;

    return SSL_write_ex(t->ssl, p, n, &done) == 1 && done == n ? 0 : -EIO;
}

/* Seals up to TLS_FLIGHT_PLAIN bytes of the queue: whole records straight
 * from a chunk, small chunks gathered so that many messages share a
 * record. */
static int tls_seal_queue(struct ringws_conn *c, struct tls_conn *t, struct tls_worker *tw)
{
    size_t plain = 0, staged = 0;
    unsigned chunks = 0;
    int ret = 0;

    for (const struct out_chunk *o = c->out_head;
         o && ret == 0 && chunks < TLS_FLIGHT_CHUNKS && plain < TLS_FLIGHT_PLAIN; o = o->next) {
        const uint8_t *p = out_chunk_bytes(o) + o->off;
        size_t n = o->len - o->off;
        if (n > TLS_FLIGHT_PLAIN - plain)
            n = TLS_FLIGHT_PLAIN - plain;
        chunks++;
        plain += n;
        while (n && ret == 0) {
            size_t k = sizeof(tw->stage) - staged;
            if (k > n)
                k = n;
            if (!staged && k == sizeof(tw->stage)) {
                ret = tls_seal(t, p, k);
            } else {
                memcpy(tw->stage + staged, p, k);
                staged += k;
                if (staged == sizeof(tw->stage)) {
                    ret = tls_seal(t, tw->stage, staged);
                    staged = 0;
                }
            }
            p += k;
            n -= k;
        }
    }
    if (staged && ret == 0)
        ret = tls_seal(t, tw->stage, staged);
    t->flight_plain = (uint32_t)plain;
    t->flight_chunks = (uint8_t)chunks;
    return ret;
}

/* Nothing is in flight: sends the records written since the last send
 * (handshake, alerts, close_notify) and those sealed now from the queue. */
static void tls_send(struct ringws_conn *c)
{
    struct tls_conn *t = tls_of(c);
    struct tls_worker *tw = c->w->tls;

    t->flight_plain = 0;
    t->flight_chunks = 0;
    if (t->flags & TLS_FAILED) {
        /* Queued after the failure (an answer that was under way): it
         * cannot be sealed, and the way down must not wait for it. */
        conn_wire_drop_queue(c);
        conn_flush_later(c);
    } else if ((t->flags & TLS_DONE) && c->out_head) {
        tls_bind(tw, t, NULL, 0);
        int ret = tls_seal_queue(c, t, tw);
        tls_bind(tw, NULL, NULL, 0);
        if (ret < 0) {
            tls_fail(c, t);
            return;
        }
    }
    if (!t->pend_len) {
        conn_wire_want(c, false);
        return;
    }
    t->flight = t->pend;
    t->flight_len = t->pend_len;
    t->flight_off = 0;
    t->pend = NULL;
    t->pend_len = t->pend_cap = 0;
    c->out_inflight = t->flight_chunks;
    conn_wire_send(c, t->flight, t->flight_len);
}

static void tls_sent(struct ringws_conn *c, size_t wire)
{
    struct tls_conn *t = tls_of(c);

    t->flight_off += (uint32_t)wire;
    if (t->flight_off < t->flight_len) {
        c->out_inflight = t->flight_chunks;
        conn_wire_send(c, t->flight + t->flight_off, t->flight_len - t->flight_off);
        return;
    }
    free(t->flight);
    t->flight = NULL;
    t->flight_len = t->flight_off = 0;
    if (t->flight_plain && !(t->flags & TLS_FAILED))
        conn_wire_consumed(c, t->flight_plain);
    t->flight_plain = 0;
    conn_wire_want(c, t->pend_len != 0);
}

/* close_notify first, then TCP: called again once it is sent. */
static void tls_shutdown(struct ringws_conn *c)
{
    struct tls_conn *t = tls_of(c);
    struct tls_worker *tw = c->w->tls;

    if ((t->flags & (TLS_DONE | TLS_FAILED | TLS_NOTIFY_SENT)) == TLS_DONE) {
        t->flags |= TLS_NOTIFY_SENT;
        tls_bind(tw, t, NULL, 0);
        SSL_shutdown(t->ssl);
        tls_bind(tw, NULL, NULL, 0);
        ERR_clear_error();
        if (t->pend_len) {
            conn_wire_want(c, true);
            return;
        }
    }
    conn_wire_shutdown(c);
}

const struct transport_ops transport_tls = {
    .name = "tls",
    .input = tls_input,
    .send = tls_send,
    .sent = tls_sent,
    .shutdown = tls_shutdown,
    .close = conn_wire_close,
    .open = tls_open,
    .release = tls_release,
};
