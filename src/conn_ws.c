/* conn_ws.c - WebSocket on a connection: frames decoded in place, messages
 * handed over where they lie or gathered when they span receives, control
 * frames answered, the closing handshake, the idle ping and the
 * message-rate deadline, the close on server stop and of a peer too slow
 * (ws_proto_ops, ws_closing_proto_ops), and the send/close API.
 *
 * Why it exists: the decoder (frame.c) knows the protocol's rules; this file
 * knows what the server does about each event: deliver, pong, echo a close,
 * or fail the connection with the code the RFC names.  A connection that
 * negotiated permessage-deflate (CF_DEFLATE) holds no compression state in
 * the stateless mode: a compressed message is inflated whole when
 * complete, and a message sent is compressed on its own (deflate.c).  One
 * that agreed to context takeover (conn_takeover) has a stream of its own
 * per direction that keeps context (deflate_stream.c), reserved here
 * against its worker's deflate_takeover_memory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "deflate_stream.h"
#include "internal.h"
#include "log.h"
#include "utf8.h"

static int conn_ws_frame_on(struct worker *w, struct ringws_conn *c, unsigned first,
                            const void *p, size_t n)
{
    uint8_t hdr[WS_MAX_SERVER_HEADER];
    size_t h = ws_frame_header(hdr, first, n);

    return conn_queue_on(w, c, hdr, h, p, n);
}

static int conn_ws_frame(struct ringws_conn *c, unsigned first, const void *p, size_t n)
{
    return conn_ws_frame_on(conn_worker(c), c, first, p, n);
}

void conn_ws_close(struct ringws_conn *c, uint16_t code, const char *reason,
                   size_t reason_len, bool fail)
{
    uint8_t payload[WS_MAX_CONTROL_PAYLOAD];
    size_t n;

    if (c->flags & (CF_CLOSE_SENT | CF_TEARDOWN))
        return;
    n = ws_close_payload(payload, code, reason, reason_len);
    c->flags |= CF_CLOSE_SENT;
    if (conn_ws_frame(c, WS_FIN | WS_OP_CLOSE, payload, n) < 0) {
        conn_abort(c);
        return;
    }
    if (fail) {
        /* Failing the connection: nothing more it sends is read. */
        c->close_code = code;
        conn_report_close(c, code, reason, reason_len);
        conn_drain(c);
    } else {
        c->state = CONN_CLOSING;
        conn_held_release(c);
        conn_set_deadline(c, conn_worker(c)->srv->cfg.close_timeout_ms);
    }
}

/* A close that asks the peer to come back later carries, with
 * reconnect_window_ms > 0, a delay drawn per connection from
 * [0, reconnect_window_ms): "WHY; retry after N ms" (ringws.js waits that
 * long), so that the clients one event sends away (a stop, a storm beyond
 * admission, an engine gone) do not all return in the same millisecond. */
static void conn_ws_close_hint(struct ringws_conn *c, uint16_t code, const char *why, bool fail)
{
    struct worker *w = conn_worker(c);
    unsigned window = w->srv->cfg.reconnect_window_ms;
    char reason[WS_MAX_CONTROL_PAYLOAD - 2 + 1];
    int n;

    if (!window) {
        conn_ws_close(c, code, why, strlen(why), fail);
        return;
    }
    n = snprintf(reason, sizeof(reason), "%s; retry after %u ms", why,
                 worker_random_below(w, window));
    conn_ws_close(c, code, reason, (size_t)n < sizeof(reason) ? (size_t)n : sizeof(reason) - 1,
                  fail);
}

/* 1012 (Service Restart) and 1013 (Try Again Later) ask the peer to come
 * back: they carry the hint. */
void conn_ws_close_why(struct ringws_conn *c, uint16_t code, const char *why, bool fail)
{
    if (code == WS_CLOSE_SERVICE_RESTART || code == WS_CLOSE_TRY_AGAIN)
        conn_ws_close_hint(c, code, why, fail);
    else
        conn_ws_close(c, code, why, strlen(why), fail);
}

static void conn_ws_ping(struct ringws_conn *c)
{
    if (conn_ws_frame(c, WS_FIN | WS_OP_PING, NULL, 0) < 0)
        conn_abort(c);
}

/* ---- deadlines --------------------------------------------------------- */

/* A ping after one idle period of silence, the drop after a second one.
 * Safe to call early (the timer also serves a gathered message's
 * deadline): it re-arms for whatever is still ahead. */
static void conn_ws_idle_expired(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);
    unsigned idle_ms = w->srv->cfg.idle_timeout_ms;
    uint64_t due = timer_ms_to_ticks(idle_ms) * (c->flags & CF_PING_OUT ? 2 : 1);
    uint64_t quiet = (uint32_t)((uint32_t)worker_tick(w) - c->last_rx_tick);

    if (quiet < due) {
        /* Traffic came since the deadline was set, or it is not yet due. */
        timer_arm(&w->wheel, &c->timer, conn_number(c),
                  worker_tick(w) + (due - quiet));
        return;
    }
    if (c->flags & CF_PING_OUT) {
        log_msg(LOG_LEVEL_DEBUG, "worker %u: peer silent after ping, dropping", w->id);
        conn_abort(c);
        return;
    }
    c->flags |= CF_PING_OUT;
    conn_ws_ping(c);
    conn_set_deadline(c, idle_ms);
}

static bool conn_ws_msg_timed(const struct ringws_conn *c)
{
    return c->state == CONN_WS && conn_held_len(c) && conn_worker(c)->srv->cfg.min_message_rate &&
           !(c->flags & CF_TEARDOWN);
}

/* The tick by which the message gathered in msg must be complete: its
 * grace, plus the time its bytes so far bought at the minimum rate.  A
 * floor on the average, not on each moment, so that an honest peer's
 * stall is paid for by what it sent before. */
static uint64_t conn_ws_msg_deadline(const struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);
    const struct ringws_config *cfg = &w->srv->cfg;
    uint64_t now = worker_tick(w);
    const struct conn_held *h = conn_held(c);
    uint64_t start = now - (uint32_t)((uint32_t)now - h->msg_tick);
    uint64_t ms = cfg->message_grace_ms + (uint64_t)h->msg.len * 1000 / cfg->min_message_rate;

    return start + timer_ms_to_ticks(ms);
}

/* The connection's one timer fires at the earlier of its idle deadline and
 * its message's; the message's only moves later as bytes come. */
static void conn_ws_msg_watch(struct ringws_conn *c)
{
    uint64_t at;

    if (!conn_ws_msg_timed(c))
        return;
    at = conn_ws_msg_deadline(c);
    if (!timer_armed(&c->timer) || timer_due_after(&c->timer, at))
        timer_arm(&conn_worker(c)->wheel, &c->timer, conn_number(c), at);
}

static void conn_ws_msg_started(struct ringws_conn *c)
{
    conn_held(c)->msg_tick = (uint32_t)worker_tick(conn_worker(c));
    conn_ws_msg_watch(c);
}

/* The open WebSocket's deadline: a message too slow to arrive fails the
 * connection; otherwise the idle ping or drop, and the timer re-armed. */
static void conn_ws_expired(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);

    if (conn_ws_msg_timed(c) && worker_tick(w) >= conn_ws_msg_deadline(c)) {
        STAT_ADD(w, messages_too_slow, 1);
        conn_ws_close_why(c, WS_CLOSE_POLICY, "message too slow", true);
        return;
    }
    if (w->srv->cfg.idle_timeout_ms)
        conn_ws_idle_expired(c);
    conn_ws_msg_watch(c);
}

/* ---- input ------------------------------------------------------------- */

static void conn_ws_inflate(struct ringws_conn *c, uint8_t op, uint8_t *p, size_t n,
                            size_t room);

/* A complete message, plain or inflated, to the application or the
 * pub/sub protocol.  The receive path hands its worker down: a message
 * pays no lookup of it. */
static inline __attribute__((always_inline)) void
conn_ws_deliver_plain(struct worker *w, struct ringws_conn *c, uint8_t op, const uint8_t *p,
                      size_t n)
{
    const struct ringws_config *cfg = &w->srv->cfg;

    STAT_ADD(w, messages_received, 1);
    if (c->flags & CF_PUBSUB)
        conn_ws_pubsub_command(c, op, p, n);
    else if (cfg->cb.on_message)
        cfg->cb.on_message(c, (enum ringws_opcode)op, p, n, cfg->user);
}

/* Inlined where messages are complete: a plain message pays one test for
 * compression (the opcode's mark), no call.  `room`: the bytes past p + n
 * that inflating may borrow (deflate_inflate). */
static inline __attribute__((always_inline)) void
conn_ws_deliver(struct worker *w, struct ringws_conn *c, uint8_t op, uint8_t *p, size_t n,
                size_t room)
{
    if (op & WS_MSG_DEFLATED)
        conn_ws_inflate(c, op, p, n, room);
    else
        conn_ws_deliver_plain(w, c, op, p, n);
}

/* Bytes a worker inflates in a turn before the connection that passed
 * them reads no more of its input until the next turn.  A message is
 * inflated whole (up to max_message), so a turn inflates at most this
 * plus one message per connection that received one: without it, a
 * receive of 16 KiB could hold a thousand messages of 16 bytes that
 * inflate to 16 KiB each (deflate's ratio reaches 1032), and one
 * connection keep the worker from the others for that long. */
#define INFLATE_TURN_BUDGET (1u << 20)

/* Counts what was inflated; past the budget, the rest of the input waits
 * (unless it waits already, for the engine). */
static void conn_ws_inflate_spent(struct ringws_conn *c, size_t len)
{
    struct worker *w = conn_worker(c);

    w->inflated_turn += len;
    if (w->inflated_turn < INFLATE_TURN_BUDGET || (c->flags & CF_ENGINE_WAIT) ||
        !conn_ws_reading(c) || (c->flags & CF_TEARDOWN))
        return;
    if (conn_ws_hold_turn(c) == 0)
        STAT_ADD(w, deflate_deferred, 1);
}

/* A compressed message, complete: inflated whole (bounded by max_message,
 * RFC 7692 7.2.2), its text checked, then delivered like any other. */
__attribute__((noinline))
static void conn_ws_inflate(struct ringws_conn *c, uint8_t op, uint8_t *p, size_t n,
                            size_t room)
{
    struct worker *w = conn_worker(c);
    struct deflate_takeover *t = conn_takeover(c);
    size_t max = w->srv->cfg.max_message, len;
    const uint8_t *msg;
    int r = t && deflate_takeover_rx_bits(t) ? deflate_takeover_inflate(t, p, n, max, &msg, &len)
                                             : deflate_inflate(p, n, room, max, &msg, &len);

    op &= (uint8_t)~WS_MSG_DEFLATED;
    STAT_ADD(w, deflate_inflated, 1);
    if (r == -EMSGSIZE)
        conn_ws_close_why(c, WS_CLOSE_TOO_BIG, "message too big", true);
    else if (r == -EINVAL)
        conn_ws_close_why(c, WS_CLOSE_INVALID_DATA, "invalid compressed data", true);
    else if (r < 0)
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
    else if (op == WS_OP_TEXT && !utf8_valid(msg, len))
        conn_ws_close_why(c, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8", true);
    else
        conn_ws_deliver_plain(w, c, op, msg, len);
    deflate_trim();
    if (r == 0)
        conn_ws_inflate_spent(c, len);
}

/* A message spanning frames or receives is gathered; the decoder has
 * already bounded it by max_message.  Out of line: a whole message in one
 * receive (conn_ws_data) keeps no register for it. */
__attribute__((noinline)) static void conn_ws_gather(struct worker *w, struct ringws_conn *c,
                                                     const struct ws_event *ev)
{
    bool starting = !conn_held_len(c);
    int r = conn_held_store(c, ev->data, ev->len, w->srv->cfg.max_message);

    if (r == -ENOBUFS) {
        conn_ws_close_why(c, WS_CLOSE_TOO_BIG, "no room for partial messages", true);
        return;
    }
    if (r < 0) {
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
        return;
    }
    if (starting && conn_held_len(c) && !ev->msg_end)
        conn_ws_msg_started(c);
    if (ev->msg_end) {
        struct conn_pend msg = conn_held_take(c);
        conn_ws_deliver(w, c, ev->opcode, msg.buf, msg.len, msg.cap - msg.len);
        conn_pend_free(w, &msg);
    }
}

/* end: the end of the received bytes ev's data lies in, which are the
 * connection's until conn_ws_input returns. */
static void conn_ws_data(struct worker *w, struct ringws_conn *c, const struct ws_event *ev,
                         uint8_t *end)
{
    if (c->state != CONN_WS)
        return; /* after our close frame, data is read and dropped */
    if (ev->msg_start && ev->msg_end && ev->frame_start) {
        /* The whole message lies in this receive buffer: no copy (and
         * inflating may borrow the bytes after it). */
        conn_ws_deliver(w, c, ev->opcode, ev->data, ev->len,
                        (size_t)(end - (ev->data + ev->len)));
        return;
    }
    conn_ws_gather(w, c, ev);
}

static void conn_ws_on_close_frame(struct ringws_conn *c, const uint8_t *p, size_t n)
{
    uint16_t code;
    uint16_t err = ws_close_parse(p, n, &code);
    const char *reason = n > 2 ? (const char *)p + 2 : NULL;
    size_t reason_len = n > 2 ? n - 2 : 0;

    if (err) {
        conn_ws_close_why(c, err, err == WS_CLOSE_INVALID_DATA ? "close reason is not UTF-8"
                                                               : "invalid close frame",
                          true);
        return;
    }
    conn_report_close(c, code, reason, reason_len);
    if (c->state == CONN_WS) {
        /* Echo the code (an empty close is answered with an empty one). */
        uint8_t payload[WS_MAX_CONTROL_PAYLOAD];
        size_t plen = ws_close_payload(payload, code == WS_CLOSE_NO_STATUS ? 0 : code,
                                       NULL, 0);
        c->flags |= CF_CLOSE_SENT;
        if (conn_ws_frame(c, WS_FIN | WS_OP_CLOSE, payload, plen) < 0) {
            conn_abort(c);
            return;
        }
    }
    conn_drain_closed(c);
}

static void conn_ws_control(struct ringws_conn *c, const struct ws_event *ev)
{
    struct worker *w = conn_worker(c);
    const uint8_t *p = ev->data;
    size_t n = ev->len;

    if (!(ev->frame_start && ev->frame_end)) {
        /* A control frame split across receives: at most 125 bytes, kept
         * in the cold part (rare). */
        struct conn_cold *cs = conn_cold_get(c);

        if (ev->frame_start && cs && !cs->ctl)
            cs->ctl = malloc(WS_MAX_CONTROL_PAYLOAD);
        if (!cs || !cs->ctl) {
            conn_abort(c);
            return;
        }
        if (ev->frame_start)
            cs->ctl_len = 0;
        memcpy(cs->ctl + cs->ctl_len, ev->data, ev->len);
        cs->ctl_len = (uint8_t)(cs->ctl_len + ev->len);
        if (!ev->frame_end)
            return;
        p = cs->ctl;
        n = cs->ctl_len;
    }
    switch (ev->opcode) {
    case WS_OP_PING:
        if (c->state != CONN_WS)
            break;
        if (c->out_bytes + n > w->srv->cfg.max_send_queue) {
            /* A ping flood from a peer that reads none of the pongs. */
            STAT_ADD(w, send_queue_overflows, 1);
            conn_ws_close_why(c, WS_CLOSE_POLICY, "send queue full", true);
        } else if (conn_ws_frame(c, WS_FIN | WS_OP_PONG, p, n) < 0) {
            conn_abort(c);
        }
        break;
    case WS_OP_PONG:
        break; /* any input already counts as a sign of life */
    case WS_OP_CLOSE:
        conn_ws_on_close_frame(c, p, n);
        break;
    }
    if (c->cold && p == c->cold->ctl) {
        free(c->cold->ctl);
        c->cold->ctl = NULL;
        conn_cold_trim(c);
    }
}

/* A command waits for the engine (CF_ENGINE_WAIT): what follows it is read
 * after.  Out of line: the echo path never comes here. */
__attribute__((cold, noinline)) static void conn_ws_input_wait(struct ringws_conn *c,
                                                               const uint8_t *p, size_t n)
{
    if (conn_ws_pubsub_keep(c, p, n) < 0)
        conn_ws_close_why(c, WS_CLOSE_TOO_BIG, "too much input while a command waits", true);
}

void conn_ws_input(struct ringws_conn *c, uint8_t *buf, size_t len)
{
    /* The loop keeps the position and the end (not the start, a length
     * and an offset): with c and w, nothing of it is spilled per message. */
    struct worker *w = conn_worker(c);
    uint8_t *p = buf, *end = buf + len;

    /* Any input is a sign of life: the idle clock restarts, and an idle
     * ping counts as answered. */
    c->last_rx_tick = (uint32_t)worker_tick(w);
    c->flags &= ~CF_PING_OUT;
    /* A connection due to fail (CF_SLOW_*) reads nothing more, as if it
     * had failed already. */
    while (p < end && conn_ws_reading(c) &&
           !(c->flags & (CF_TEARDOWN | CF_SLOW_1008 | CF_SLOW_1013 | CF_ENGINE_WAIT))) {
        struct ws_event ev;
        p += ws_decode(&c->dec, p, (size_t)(end - p), &ev, w->ws_max_message);
        switch ((enum ws_event_type)ev.type) {
        case WS_EV_NEED_MORE:
            return;
        case WS_EV_DATA:
            conn_ws_data(w, c, &ev, end);
            break;
        case WS_EV_CONTROL:
            conn_ws_control(c, &ev);
            break;
        case WS_EV_ERROR:
            log_msg(LOG_LEVEL_DEBUG, "worker %u: failing connection: %u %s", w->id,
                    ev.close_code, ev.reason);
            if (c->state == CONN_CLOSING)
                conn_abort(c); /* our close is already out */
            else
                conn_ws_close(c, ev.close_code, ev.reason, strlen(ev.reason), true);
            return;
        }
    }
    /* The loop stops early only for a reason in c's state or flags. */
    if (__builtin_expect(p < end, 0) && (c->flags & CF_ENGINE_WAIT))
        conn_ws_input_wait(c, p, (size_t)(end - p));
}

/* ---- the connection's events ------------------------------------------- */

/* The stop close (ringws_config.stop_code), and a hint of when to come
 * back drawn per connection, so that a restart is not followed by every
 * client reconnecting in the same millisecond. */
static void conn_ws_stop(struct ringws_conn *c)
{
    const struct ringws_config *cfg = &conn_worker(c)->srv->cfg;
    uint16_t code = cfg->stop_code ? cfg->stop_code : WS_CLOSE_GOING_AWAY;

    conn_ws_close_hint(c, code,
                       code == WS_CLOSE_SERVICE_RESTART ? "server restarting" : "server shutting down",
                       false);
}

/* A peer too slow for what was queued to it (by a publish, or by the
 * application's ringws_send) is failed here, after the callbacks returned:
 * on_close must not run inside ringws_send.  A close of ours already out
 * (CONN_CLOSING) stays as it is. */
static void conn_ws_flush(struct ringws_conn *c)
{
    uint16_t code = c->flags & CF_SLOW_1008 ? WS_CLOSE_POLICY : WS_CLOSE_TRY_AGAIN;
    const char *why = c->flags & CF_SLOW_SEND ? "send queue full" : "subscriber too slow";

    c->flags &= ~(CF_SLOW_1008 | CF_SLOW_1013 | CF_SLOW_SEND);
    conn_ws_close_why(c, code, why, true);
}

/* TCP ending without a close handshake is abrupt: 1006 (conn_abort). */
const struct proto_ops ws_proto_ops = {
    .input = conn_ws_input,
    .eof = conn_abort,
    .timer = conn_ws_expired,
    .stop = conn_ws_stop,
    .flush = conn_ws_flush,
    .resume = conn_proto_none,
};

/* Our close frame is out: frames are still decoded to find the peer's
 * close; its EOF, or the close timeout, ends the connection abruptly. */
const struct proto_ops ws_closing_proto_ops = {
    .input = conn_ws_input,
    .eof = conn_abort,
    .timer = conn_abort,
    .stop = conn_proto_none,
    .flush = conn_ws_flush,
    .resume = conn_proto_none,
};

/* ---- context takeover ---------------------------------------------------- */

int conn_ws_takeover_allowed(struct worker *w, const char *path, size_t path_len)
{
    const struct ringws_config *cfg = &w->srv->cfg;
    unsigned bits = cfg->deflate_takeover_window_bits;
    size_t i;

    for (i = 0; i < cfg->n_deflate_takeover_paths; i++)
        if (strlen(cfg->deflate_takeover_paths[i]) == path_len &&
            !memcmp(cfg->deflate_takeover_paths[i], path, path_len))
            break;
    if (i == cfg->n_deflate_takeover_paths)
        return 0;
    /* The most it could agree to, so that the answer is never taken back. */
    if (w->takeover_reserved + deflate_takeover_worst(bits, bits) > cfg->deflate_takeover_memory)
        return -ENOSPC;
    return 1;
}

int conn_ws_takeover_attach(struct ringws_conn *c, const struct ws_pmd_agreed *a)
{
    struct worker *w = conn_worker(c);
    struct deflate_takeover *t;

    if (!conn_cold_get(c))
        return -ENOMEM;
    t = deflate_takeover_new(a->server_bits, a->client_bits,
                             &w->stats.deflate_takeover_bytes);
    if (!t) {
        conn_cold_trim(c);
        return -ENOMEM;
    }
    c->cold->pmd = t;
    w->takeover_reserved += deflate_takeover_worst(a->server_bits, a->client_bits);
    return 0;
}

void conn_ws_takeover_detach(struct ringws_conn *c)
{
    struct deflate_takeover *t = conn_takeover(c);

    if (!t)
        return;
    conn_worker(c)->takeover_reserved -=
        deflate_takeover_worst(deflate_takeover_tx_bits(t), deflate_takeover_rx_bits(t));
    deflate_takeover_free(t);
    c->cold->pmd = NULL;
    conn_cold_trim(c);
}

int conn_ws_queue_takeover(struct ringws_conn *c, unsigned op, const struct iovec *iov,
                           unsigned n)
{
    struct worker *w = conn_worker(c);
    const uint8_t *z;
    ssize_t zn = deflate_takeover_compress(conn_takeover(c), iov, n, &z);

    if (zn >= 0) {
        atomic_fetch_add_explicit(&w->stats.deflate_compressed, 1,
                                  memory_order_relaxed);
        if (conn_ws_frame(c, WS_FIN | WS_RSV1 | op, z, (size_t)zn) == 0) {
            STAT_ADD(w, deflate_sent, 1);
            return 0;
        }
        /* Compressed through the stream: the peer's window must see it,
         * so a failure to queue it leaves the stream ahead of the peer. */
        zn = -EIO;
    }
    if (zn == -EIO) { /* the stream and the peer's window parted: it cannot go on */
        c->flags |= CF_SLOW_1013;
        conn_flush_later(c);
    }
    return (int)zn;
}

/* ---- public API -------------------------------------------------------- */

/* A message of the application on a connection whose server side takes
 * context over: through its stream, but for short ones (plain, the stream
 * untouched). */
static int conn_ws_send_takeover(struct ringws_conn *c, unsigned op, const void *data,
                                 size_t len)
{
    struct iovec iov = {(void *)data, len};
    int r;

    if (len >= DEFLATE_TAKEOVER_MIN_SIZE && (r = conn_ws_queue_takeover(c, op, &iov, 1)) != -ENOMEM)
        return r;
    /* Short, or no memory for the stream (left untouched): plain. */
    return conn_ws_frame(c, WS_FIN | op, data, len);
}

/* A message of the application on a connection that negotiated
 * compression: compressed on its own when that makes it smaller (RSV1
 * set), else sent plain; or through its stream (context takeover).  Out of
 * line: a plain connection's send pays one test of its flags for it. */
__attribute__((noinline))
static int conn_ws_send_deflated(struct ringws_conn *c, unsigned op, const void *data,
                                 size_t len)
{
    struct worker *w = conn_worker(c);
    const uint8_t *z;
    struct deflate_takeover *t = conn_takeover(c);
    ssize_t zn;

    if (t && deflate_takeover_tx_bits(t))
        return conn_ws_send_takeover(c, op, data, len);
    zn = deflate_compress(data, len, DEFLATE_FAST, &z); /* 0 below its minimum */

    if (zn <= 0) /* it would not shrink, or no memory: plain is as good */
        return conn_ws_frame(c, WS_FIN | op, data, len);
    atomic_fetch_add_explicit(&w->stats.deflate_compressed, 1, memory_order_relaxed);
    STAT_ADD(w, deflate_sent, 1);
    return conn_ws_frame(c, WS_FIN | WS_RSV1 | op, z, (size_t)zn);
}

int ringws_send(ringws_conn *c, enum ringws_opcode op, const void *data, size_t len)
{
    struct worker *w = conn_worker(c);

    if (op != RINGWS_TEXT && op != RINGWS_BINARY)
        return -EINVAL;
    if (!conn_ws_open(c))
        return -EPIPE;
    if (op == RINGWS_TEXT && !utf8_valid(data, len))
        return -EINVAL;
    /* An empty queue takes any message: the cap bounds what piles up.  The
     * configuration is read only then: a send keeps one register (w) for
     * after its queueing, not two. */
    if (c->out_bytes && c->out_bytes + len > w->srv->cfg.max_send_queue) {
        const struct ringws_config *cfg = &w->srv->cfg;

        STAT_ADD(w, send_queue_overflows, 1);
        if (cfg->overflow == RINGWS_OVERFLOW_DROP) {
            STAT_ADD(w, messages_dropped, 1);
        } else {
            /* Failed by the flush step, after the caller's callback has
             * returned: on_close must not run inside ringws_send. */
            c->flags |= CF_SLOW_SEND | (cfg->overflow == RINGWS_OVERFLOW_TRY_AGAIN
                                            ? CF_SLOW_1013 : CF_SLOW_1008);
            conn_flush_later(c);
        }
        return -ENOBUFS;
    }
    int r = c->flags & CF_DEFLATE ? conn_ws_send_deflated(c, (unsigned)op, data, len)
                                   : conn_ws_frame_on(w, c, WS_FIN | (unsigned)op, data, len);
    STAT_ADD(w, messages_sent, r == 0);
    return r;
}

int ringws_close(ringws_conn *c, uint16_t code, const char *reason, size_t reason_len)
{
    if (!ws_close_code_valid(code) || reason_len > WS_MAX_CONTROL_PAYLOAD - 2 ||
        (reason_len && !utf8_valid((const uint8_t *)reason, reason_len)))
        return -EINVAL;
    if (!conn_ws_open(c))
        return -EPIPE;
    /* Called from a callback: an abort here (no memory for the close
     * frame) owes on_close rather than running it inside the caller. */
    conn_worker(c)->in_api++;
    conn_ws_close(c, code, reason, reason_len, false);
    conn_worker(c)->in_api--;
    return 0;
}

void ringws_conn_set_user(ringws_conn *c, void *user)
{
    c->user = user;
}

void *ringws_conn_get_user(const ringws_conn *c)
{
    return c->user;
}

const char *ringws_conn_subprotocol(const ringws_conn *c)
{
    const struct ringws_config *cfg = &conn_worker(c)->srv->cfg;

    if (c->flags & CF_ENVELOPE)
        return RINGWS_ENVELOPE;
    return c->subprotocol ? cfg->subprotocols[c->subprotocol - 1] : NULL;
}

unsigned ringws_conn_worker(const ringws_conn *c)
{
    return conn_worker(c)->id;
}
