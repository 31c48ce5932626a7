/* transport_tls.c - TLS under the connection layer: OpenSSL does the
 * handshake, tls_record.c the records after it, the ring carries them.
 *
 * Why it exists: a connection of the TLS listener speaks plaintext to the
 * protocols above it like any other (transport.h); this file turns what
 * the ring received into plaintext and the queued plaintext into records,
 * without a syscall of its own and without blocking.
 *
 * Memory: during its handshake a connection has an SSL (about 13 KB with
 * what hangs off it); once the handshake is over the SSL is freed and the
 * connection keeps only its keys, nonces and sequence numbers (struct
 * tls_record, about 200 bytes), the way kTLS hands them to the kernel.  All
 * the worker's SSLs share one BIO, which reads from the buffer the ring
 * filled and appends what OpenSSL writes to the connection being driven.
 * Records are opened in place in the receive buffer; only a record split
 * across receives is copied (into held input counted against
 * max_partial_bytes).
 *
 * Output: the queue stays the shared plaintext chunks (a published frame
 * is not copied per subscriber); when the flush step sends, up to
 * TLS_FLIGHT_PLAIN bytes of the queue are gathered into as few records as
 * fit and sealed in place, and only those records exist until the send
 * completes.
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
#include "tls_record.h"

#define TLS_FLIGHT_PLAIN (64u << 10)    /* plaintext sealed for one send */
#define TLS_FLIGHT_CHUNKS 255u          /* queued chunks one send may cover */
/* Bytes kept for a connection whose handshake is put off: its reading is
 * paused at once, so only what the ring had already received comes (also
 * counted against max_partial_bytes). */
#define TLS_DEFER_MAX (4u << 20)
#define TLS_BUDGET_DEFAULT_US 2000u
#define TLS_HS_KEY_UPDATE 24            /* TLS 1.3 handshake message type */

enum tls_conn_flag {
    TLS_FAILED = 1u << 0,      /* no record can be read or sealed any more */
    TLS_NOTIFY_SENT = 1u << 1, /* our close_notify is sealed */
    TLS_PEER_DONE = 1u << 2,   /* the peer's close_notify came */
    TLS_DEFERRED = 1u << 3,    /* on the worker's deferred list */
};

/* What a connection has only while its handshake lasts. */
struct tls_hs {
    SSL *ssl;
    struct tls_certs *certs;         /* the set SNI chooses from */
    struct tls_rec_secrets secrets;  /* TLS 1.3 traffic secrets (key log) */
    /* Records OpenSSL wrote, counted as they pass (the sequence numbers
     * the record layer goes on from): after the last ChangeCipherSpec
     * (TLS 1.2), and of the application type in the current call (TLS
     * 1.3: the session tickets sent with the first traffic key). */
    uint8_t hdr[TLS_REC_HEADER];
    uint8_t hdr_len;
    bool ccs_seen;
    uint32_t skip;
    uint32_t after_ccs, app_in_call;
};

struct tls_conn {
    struct tls_hs *hs;        /* NULL once the handshake is over */
    struct ringws_conn *c;
    uint8_t *flight;          /* records the send in flight carries */
    uint8_t *pend;            /* records written since */
    struct conn_pend defer;   /* received bytes of a handshake put off */
    struct tls_conn *defer_next;
    struct conn_pend held;    /* a record split across receives */
    uint32_t flight_len, flight_off;
    uint32_t flight_plain;    /* queued plaintext the flight seals */
    uint32_t pend_len, pend_cap;
    uint8_t flight_chunks;
    uint8_t flags;
    struct tls_record rec;    /* after the handshake */
};

struct tls_worker {
    struct tls_certs *certs;  /* handed to new connections */
    unsigned generation;      /* of certs: a reload changes the server's */
    struct tls_rec_crypto *cx;
    BIO_METHOD *method;
    BIO *bio;
    /* What the BIO reads from and writes to: the connection driven now. */
    struct tls_conn *cur;
    const uint8_t *in;
    size_t in_len;
    uint64_t budget_ns, spent_ns; /* handshake work per turn, this turn's */
    struct tls_conn *defer_head, *defer_tail;
};

/* The state lives in the connection's cold part, which tls_open makes. */
static struct tls_conn *tls_of(const struct ringws_conn *c)
{
    return c->cold ? c->cold->tp_state : NULL;
}

static uint64_t tls_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- records written, before they are sent -------------------------------- */

/* Room for n more bytes at the end of pend. */
static uint8_t *tls_pend_room(struct tls_conn *t, size_t n)
{
    if (n > UINT32_MAX - t->pend_len)
        return NULL;
    if (t->pend_len + n > t->pend_cap) {
        size_t cap = t->pend_cap ? 2u * t->pend_cap : 512;
        uint8_t *grown;
        while (cap < t->pend_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return NULL;
        grown = realloc(t->pend, cap);
        if (!grown)
            return NULL;
        t->pend = grown;
        t->pend_cap = (uint32_t)cap;
    }
    return t->pend + t->pend_len;
}

/* Counts the records of a handshake's output as it passes. */
static void tls_hs_count(struct tls_hs *hs, const uint8_t *p, size_t n)
{
    while (n) {
        if (hs->skip) {
            size_t k = n < hs->skip ? n : hs->skip;
            hs->skip -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        hs->hdr[hs->hdr_len++] = *p++;
        n--;
        if (hs->hdr_len < TLS_REC_HEADER)
            continue;
        hs->hdr_len = 0;
        hs->skip = (uint32_t)hs->hdr[3] << 8 | hs->hdr[4];
        if (hs->hdr[0] == TLS_CT_CHANGE_CIPHER_SPEC) {
            hs->ccs_seen = true;
            hs->after_ccs = 0;
        } else if (hs->ccs_seen) {
            hs->after_ccs++;
        }
        if (hs->hdr[0] == TLS_CT_APPLICATION_DATA)
            hs->app_in_call++;
    }
}

/* Seals one record of our own (an alert, a KeyUpdate) after what is
 * pending; false when there is no memory for it. */
static bool tls_pend_record(struct tls_worker *tw, struct tls_conn *t, uint8_t type,
                            const uint8_t *p, size_t n)
{
    uint8_t *rec = tls_pend_room(t, n + tls_record_overhead(&t->rec));
    long len;

    if (!rec)
        return false;
    memcpy(rec + tls_record_prefix(&t->rec), p, n);
    len = tls_record_seal(&t->rec, tw->cx, type, rec, n);
    if (len < 0)
        return false;
    t->pend_len += (uint32_t)len;
    return true;
}

/* ---- the worker's BIO ------------------------------------------------------ */

static int tls_bio_write(BIO *b, const char *p, int len)
{
    struct tls_worker *tw = BIO_get_data(b);
    struct tls_conn *t = tw->cur;
    uint8_t *room;

    BIO_clear_retry_flags(b);
    if (len < 0 || !t || !t->hs || !(room = tls_pend_room(t, (size_t)len)))
        return -1;
    memcpy(room, p, (size_t)len);
    t->pend_len += (uint32_t)len;
    tls_hs_count(t->hs, (const uint8_t *)p, (size_t)len);
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
    tw->cx = tls_rec_crypto_new();
    tw->method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringws ring");
    if (!tw->cx || !tw->method || BIO_meth_set_write(tw->method, tls_bio_write) != 1 ||
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
    tls_rec_crypto_free(tw->cx);
    if (tw->certs)
        tls_certs_put(tw->certs);
    free(tw);
    w->tls = NULL;
}

/* ---- a connection's state -------------------------------------------------- */

static void tls_hs_free(struct tls_hs *hs)
{
    if (!hs)
        return;
    SSL_free(hs->ssl);
    tls_certs_put(hs->certs);
    OPENSSL_cleanse(&hs->secrets, sizeof(hs->secrets));
    free(hs);
}

static int tls_open(struct ringws_conn *c)
{
    struct tls_worker *tw = conn_worker(c)->tls;
    struct tls_server *ts = conn_worker(c)->srv->tls;
    struct tls_conn *t;
    struct tls_hs *hs;

    if (tls_server_generation(ts) != tw->generation) {
        tls_certs_put(tw->certs);
        tw->certs = tls_certs_take(ts, &tw->generation);
    }
    t = calloc(1, sizeof(*t));
    hs = calloc(1, sizeof(*hs));
    if (!t || !hs || !conn_cold_get(c) || !(hs->ssl = tls_certs_new_ssl(tw->certs))) {
        ERR_clear_error();
        free(hs);
        free(t);
        return -ENOMEM;
    }
    BIO_up_ref(tw->bio);
    SSL_set_bio(hs->ssl, tw->bio, tw->bio);
    SSL_set_accept_state(hs->ssl);
    SSL_set_app_data(hs->ssl, &hs->secrets);
    hs->certs = tw->certs;
    tls_certs_hold(hs->certs);
    t->hs = hs;
    t->c = c;
    c->cold->tp_state = t;
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
    struct worker *w = conn_worker(c);
    struct tls_conn *t = tls_of(c);

    if (!t)
        return;
    if (t->flags & TLS_DEFERRED)
        tls_defer_unlink(w->tls, t);
    tls_hs_free(t->hs);
    conn_pend_release(w, &t->held);
    OPENSSL_cleanse(&t->rec, sizeof(t->rec));
    conn_pend_release(w, &t->defer);
    free(t->flight);
    free(t->pend);
    free(t);
    c->cold->tp_state = NULL;
}

/* ---- failure --------------------------------------------------------------- */

/* Plain HTTP sent to the TLS port (OpenSSL recognises a request line):
 * a plain answer says what is wrong, where a TLS alert would reach a client
 * that cannot read it. */
#define TLS_PLAIN_BODY "This port speaks TLS: use https:// or wss://\n"
_Static_assert(sizeof(TLS_PLAIN_BODY) - 1 == 45, "Content-Length below");

static void tls_answer_plain_http(struct tls_conn *t)
{
    static const char answer[] = "HTTP/1.1 400 Bad Request\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 45\r\nConnection: close\r\n\r\n" TLS_PLAIN_BODY;
    uint8_t *room = tls_pend_room(t, sizeof(answer) - 1);

    if (room) {
        memcpy(room, answer, sizeof(answer) - 1);
        t->pend_len += sizeof(answer) - 1;
    }
}

/* A bad record, a refused handshake, an alert from the peer: the alert of
 * ours that says why (OpenSSL's during the handshake, `alert` after it;
 * none for -1) goes out, nothing else does. */
static void tls_fail(struct ringws_conn *c, struct tls_conn *t, int alert)
{
    struct worker *w = conn_worker(c);
    unsigned long e = ERR_peek_error();

    if (t->flags & TLS_FAILED)
        return;
    t->flags |= TLS_FAILED;
    STAT_ADD(w, tls_handshake_failures, 1);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char why[200] = "";
        if (e)
            ERR_error_string_n(e, why, sizeof(why));
        log_msg(LOG_LEVEL_DEBUG, "worker %u: TLS failed (alert %d) %s", w->id, alert,
                why);
    }
    ERR_clear_error();
    if (t->hs && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST)
        tls_answer_plain_http(t);
    if (!t->hs && alert >= 0) {
        uint8_t msg[2] = {2, (uint8_t)alert}; /* fatal */
        tls_pend_record(w->tls, t, TLS_CT_ALERT, msg, sizeof(msg));
    }
    conn_wire_fail(c, t->pend_len != 0);
}

/* ---- the handshake --------------------------------------------------------- */

/* Keeps received bytes of a handshake for a later turn, after those kept
 * already, and stops reading meanwhile; false when there is no room. */
static bool tls_defer(struct ringws_conn *c, struct tls_conn *t, const uint8_t *in, size_t n)
{
    struct worker *w = conn_worker(c);
    struct tls_worker *tw = w->tls;

    if (conn_pend_store(w, &t->defer, in, n, TLS_DEFER_MAX) < 0)
        return false;
    if (!(t->flags & TLS_DEFERRED)) {
        t->flags |= TLS_DEFERRED;
        t->defer_next = NULL;
        if (tw->defer_tail)
            tw->defer_tail->defer_next = t;
        else
            tw->defer_head = t;
        tw->defer_tail = t;
        conn_wire_hold(c, true);
        STAT_ADD(w, tls_handshakes_deferred, 1);
    }
    return true;
}

/* The handshake is over: the record layer takes over with OpenSSL's keys,
 * going on from the records each side protected with them (TLS 1.2: the
 * Finished messages; TLS 1.3: the session tickets we sent), and the SSL is
 * let go.  false when that cannot be done (the connection then fails). */
static bool tls_handshake_done(struct ringws_conn *c, struct tls_conn *t)
{
    struct worker *w = conn_worker(c);
    struct tls_hs *hs = t->hs;
    bool v13 = SSL_version(hs->ssl) == TLS1_3_VERSION;
    int ret;

    if (SSL_has_pending(hs->ssl))
        return false; /* OpenSSL read past the handshake: never without read-ahead */
    ret = tls_record_from_ssl(&t->rec, w->tls->cx, hs->ssl, &hs->secrets, v13 ? 0 : 1,
                              v13 ? hs->app_in_call : hs->after_ccs);
    if (ret < 0)
        return false;
    if (SSL_session_reused(hs->ssl))
        STAT_ADD(w, tls_handshakes_resumed, 1);
    else
        STAT_ADD(w, tls_handshakes_full, 1);
    tls_hs_free(hs);
    t->hs = NULL;
    return true;
}

/* One step of the handshake with what is bound; true once it is over (the
 * rest of the input is records), false while it waits for more input, was
 * put off or failed. */
static bool tls_handshake_step(struct ringws_conn *c, struct tls_conn *t)
{
    struct tls_worker *tw = conn_worker(c)->tls;
    uint64_t start;
    int r;

    if (tw->spent_ns >= tw->budget_ns) {
        if (!tls_defer(c, t, tw->in, tw->in_len))
            tls_fail(c, t, -1);
        tw->in_len = 0;
        return false;
    }
    start = tls_clock_ns();
    t->hs->app_in_call = 0;
    r = SSL_do_handshake(t->hs->ssl);
    tw->spent_ns += tls_clock_ns() - start;
    if (r == 1) {
        if (tls_handshake_done(c, t))
            return true;
        tls_fail(c, t, -1);
        return false;
    }
    if (SSL_get_error(t->hs->ssl, r) != SSL_ERROR_WANT_READ)
        tls_fail(c, t, -1);
    return false;
}

/* ---- records in ------------------------------------------------------------ */

/* The alert that names what tls_record found wrong with a record. */
static int tls_alert_for(int err)
{
    switch (err) {
    case -EBADMSG: return TLS_ALERT_BAD_RECORD_MAC;
    case -EMSGSIZE: return TLS_ALERT_RECORD_OVERFLOW;
    case -ENOMSG: return TLS_ALERT_UNEXPECTED_MESSAGE;
    default: return TLS_ALERT_DECODE_ERROR;
    }
}

/* TLS 1.3 KeyUpdate: the peer's next key, and ours too when it asks (once,
 * however many of its updates ask). */
static bool tls_key_update(struct ringws_conn *c, struct tls_conn *t, uint8_t request,
                           bool *answered)
{
    static const uint8_t not_requested[] = {TLS_HS_KEY_UPDATE, 0, 0, 1, 0};
    struct tls_worker *tw = conn_worker(c)->tls;

    if (tls_record_update(&t->rec, tw->cx, &t->rec.rd) < 0)
        return false;
    if (request == 1 && !*answered && !(t->flags & TLS_NOTIFY_SENT)) {
        *answered = true;
        if (!tls_pend_record(tw, t, TLS_CT_HANDSHAKE, not_requested, sizeof(not_requested)) ||
            tls_record_update(&t->rec, tw->cx, &t->rec.wr) < 0)
            return false;
    }
    return true;
}

/* Handshake messages after the handshake: TLS 1.3 KeyUpdates (several may
 * share a record; RFC 8446 section 5.1 lets no other message follow one
 * in it, and a message split across records is not one a client sends
 * here).  Anything else, renegotiation included, fails the connection. */
static void tls_handshake_messages(struct ringws_conn *c, struct tls_conn *t, const uint8_t *p,
                                   size_t n)
{
    bool answered = false;

    while (n) {
        if (!t->rec.v13 || n < 5 || p[0] != TLS_HS_KEY_UPDATE || p[1] || p[2] || p[3] != 1 ||
            p[4] > 1) {
            tls_fail(c, t, TLS_ALERT_UNEXPECTED_MESSAGE);
            return;
        }
        if (!tls_key_update(c, t, p[4], &answered)) {
            tls_fail(c, t, TLS_ALERT_INTERNAL_ERROR);
            return;
        }
        p += 5;
        n -= 5;
    }
}

/* One whole record at rec, opened in place and handed on by its type. */
static void tls_record_in(struct ringws_conn *c, struct tls_conn *t, uint8_t *rec, size_t len)
{
    uint8_t type, *p;
    size_t n;
    int ret = tls_record_open(&t->rec, conn_worker(c)->tls->cx, rec, len, &type, &p, &n);

    if (ret < 0) {
        tls_fail(c, t, tls_alert_for(ret));
        return;
    }
    switch (type) {
    case TLS_CT_APPLICATION_DATA:
        if (n)
            conn_input(c, p, n);
        return;
    case TLS_CT_ALERT:
        if (n == 2 && p[1] == TLS_ALERT_CLOSE_NOTIFY) {
            t->flags |= TLS_PEER_DONE; /* the peer sends nothing more */
            if (!(c->flags & CF_RD_EOF))
                conn_on_eof(c);
        } else if (n == 2 && p[0] == 1 && p[1] == TLS_ALERT_USER_CANCELED) {
            /* a warning its close_notify follows */
        } else {
            tls_fail(c, t, n == 2 ? -1 : TLS_ALERT_DECODE_ERROR);
        }
        return;
    case TLS_CT_HANDSHAKE:
        tls_handshake_messages(c, t, p, n);
        return;
    default:
        tls_fail(c, t, TLS_ALERT_UNEXPECTED_MESSAGE);
    }
}

static bool tls_reading(const struct ringws_conn *c, const struct tls_conn *t)
{
    return !(c->flags & CF_TEARDOWN) && !(t->flags & (TLS_FAILED | TLS_PEER_DONE));
}

/* Completes the record held from earlier receives with the start of this
 * one; the bytes it took are consumed from *in. */
static void tls_held_complete(struct ringws_conn *c, struct tls_conn *t, uint8_t **in,
                              size_t *n)
{
    struct worker *w = conn_worker(c);
    size_t want = TLS_REC_HEADER;
    long len = 0;

    if (t->held.len >= TLS_REC_HEADER)
        want = (size_t)(len = tls_record_length(&t->rec, t->held.buf));
    for (;;) {
        size_t k = want - t->held.len < *n ? want - t->held.len : *n;
        if (conn_pend_store(w, &t->held, *in, k, TLS_REC_WIRE_MAX) < 0) {
            tls_fail(c, t, TLS_ALERT_INTERNAL_ERROR);
            return;
        }
        *in += k;
        *n -= k;
        if (t->held.len < want)
            return; /* still incomplete: the next receive goes on */
        if (len)
            break;
        len = tls_record_length(&t->rec, t->held.buf);
        if (len < 0) {
            tls_fail(c, t, tls_alert_for((int)len));
            return;
        }
        want = (size_t)len;
    }
    struct conn_pend whole = conn_pend_take(&t->held);
    tls_record_in(c, t, whole.buf, whole.len);
    conn_pend_free(w, &whole);
}

/* Records after the handshake: whole ones opened where the ring put them,
 * the last one kept while it is incomplete. */
static void tls_records_input(struct ringws_conn *c, struct tls_conn *t, uint8_t *in, size_t n)
{
    if (t->held.len) {
        tls_held_complete(c, t, &in, &n);
        if (t->held.len)
            return;
    }
    while (n >= TLS_REC_HEADER && tls_reading(c, t)) {
        long len = tls_record_length(&t->rec, in);
        if (len < 0) {
            tls_fail(c, t, tls_alert_for((int)len));
            return;
        }
        if ((size_t)len > n)
            break;
        tls_record_in(c, t, in, (size_t)len);
        in += len;
        n -= (size_t)len;
    }
    if (n && tls_reading(c, t) &&
        conn_pend_store(conn_worker(c), &t->held, in, n, TLS_REC_WIRE_MAX) < 0)
        tls_fail(c, t, TLS_ALERT_INTERNAL_ERROR);
}

static void tls_drive(struct ringws_conn *c, struct tls_conn *t, uint8_t *in, size_t n)
{
    struct tls_worker *tw = conn_worker(c)->tls;

    if (t->hs) {
        tls_bind(tw, t, in, n);
        bool done = tls_handshake_step(c, t);
        /* What OpenSSL did not read is the first records of the peer. */
        in += n - tw->in_len;
        n = tw->in_len;
        tls_bind(tw, NULL, NULL, 0);
        if (!done)
            n = 0;
    }
    if (n && tls_reading(c, t))
        tls_records_input(c, t, in, n);
    if (t->pend_len && !(c->flags & CF_TEARDOWN))
        conn_wire_want(c, true);
}

static void tls_input(struct ringws_conn *c, uint8_t *in, size_t n)
{
    struct tls_conn *t = tls_of(c);

    if (!tls_reading(c, t))
        return;
    if (t->flags & TLS_DEFERRED) { /* after what waits already */
        if (!tls_defer(c, t, in, n))
            tls_fail(c, t, -1);
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
        struct conn_pend kept = conn_pend_take(&t->defer);

        tls_defer_unlink(tw, t);
        if (tls_reading(t->c, t)) {
            tls_drive(t->c, t, kept.buf, kept.len);
            if (!(t->flags & TLS_DEFERRED))
                conn_wire_hold(t->c, false);
        }
        conn_pend_free(w, &kept);
    }
}

bool tls_worker_deferred(const struct worker *w)
{
    return w->tls && w->tls->defer_head;
}

/* ---- records out ----------------------------------------------------------- */

/* The queued plaintext one send seals, the chunks it covers, and whether
 * that is all of the queue. */
static size_t tls_flight_plain(const struct ringws_conn *c, unsigned *chunks, bool *all)
{
    const struct out_chunk *o = c->out_head;
    size_t plain = 0;
    bool cut = false;

    *chunks = 0;
    for (; o && *chunks < TLS_FLIGHT_CHUNKS && plain < TLS_FLIGHT_PLAIN; o = o->next) {
        size_t n = o->len - o->off;
        cut = n > TLS_FLIGHT_PLAIN - plain;
        plain += cut ? TLS_FLIGHT_PLAIN - plain : n;
        (*chunks)++;
    }
    *all = !o && !cut;
    return plain;
}

/* Seals `plain` bytes of the queue after what is pending: full records of
 * gathered chunks, so that many small messages share one record. */
static int tls_seal_queue(struct ringws_conn *c, struct tls_conn *t, size_t plain)
{
    struct tls_worker *tw = conn_worker(c)->tls;
    size_t nrec = (plain + TLS_REC_PLAIN_MAX - 1) / TLS_REC_PLAIN_MAX;
    size_t prefix = tls_record_prefix(&t->rec);
    const struct out_chunk *o = c->out_head;
    size_t off = o->off;
    uint8_t *out = tls_pend_room(t, plain + nrec * tls_record_overhead(&t->rec));

    if (!out)
        return -ENOMEM;
    while (plain) {
        size_t in_rec = plain < TLS_REC_PLAIN_MAX ? plain : TLS_REC_PLAIN_MAX;
        uint8_t *p = out + prefix;
        long len;
        plain -= in_rec;
        for (size_t left = in_rec; left;) {
            size_t k = o->len - off < left ? o->len - off : left;
            conn_chunk_copy(c, o, (uint32_t)off, p, k);
            p += k;
            left -= k;
            off += k;
            if (off == o->len && o->next) {
                o = o->next;
                off = o->off;
            }
        }
        len = tls_record_seal(&t->rec, tw->cx, TLS_CT_APPLICATION_DATA, out, in_rec);
        if (len < 0)
            return -EIO;
        out += len;
        t->pend_len += (uint32_t)len;
    }
    return 0;
}

/* Seals our close_notify after what is pending, once; false when it was
 * sealed before or cannot be (no handshake over, a failure, no memory). */
static bool tls_seal_close_notify(struct ringws_conn *c, struct tls_conn *t)
{
    static const uint8_t close_notify[2] = {1, TLS_ALERT_CLOSE_NOTIFY};

    if (t->hs || (t->flags & (TLS_FAILED | TLS_NOTIFY_SENT)))
        return false;
    t->flags |= TLS_NOTIFY_SENT;
    return tls_pend_record(conn_worker(c)->tls, t, TLS_CT_ALERT, close_notify,
                           sizeof(close_notify));
}

/* Nothing is in flight: sends the records written since the last send
 * (handshake, alerts, close_notify) and those sealed now from the queue. */
static void tls_send(struct ringws_conn *c)
{
    struct tls_conn *t = tls_of(c);
    unsigned chunks = 0;
    size_t plain = 0;

    if (t->flags & TLS_FAILED) {
        /* Queued after the failure (an answer that was under way): it
         * cannot be sealed, and the way down must not wait for it. */
        conn_wire_drop_queue(c);
        conn_flush_later(c);
    } else if (!t->hs && c->out_head) {
        bool all;
        plain = tls_flight_plain(c, &chunks, &all);
        if (tls_seal_queue(c, t, plain) < 0) {
            tls_fail(c, t, TLS_ALERT_INTERNAL_ERROR);
            return;
        }
        /* The last of the output before the way down (a close frame, a
         * last answer): close_notify leaves with it, one send for both. */
        if (all && (c->flags & (CF_WANT_SHUTWR | CF_PUB_WAIT)) == CF_WANT_SHUTWR)
            tls_seal_close_notify(c, t);
    }
    if (!t->pend_len) {
        conn_wire_want(c, false);
        return;
    }
    t->flight = t->pend;
    t->flight_len = t->pend_len;
    t->flight_off = 0;
    t->flight_plain = (uint32_t)plain;
    t->flight_chunks = (uint8_t)chunks;
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
    if (tls_seal_close_notify(c, tls_of(c))) {
        conn_wire_want(c, true);
        return;
    }
    conn_wire_shutdown(c);
}

/* An abrupt end still owes close_notify once the handshake is over (and
 * neither side's failure came first), or whatever alert is pending. */
static bool tls_last_words(struct ringws_conn *c)
{
    struct tls_conn *t = tls_of(c);

    return t->pend_len || (!t->hs && !(t->flags & (TLS_FAILED | TLS_NOTIFY_SENT)));
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
    .last_words = tls_last_words,
};
