/* conn_ws_pubsub.c - the subscriber connection's commands: `sub`, `unsub`,
 * `pub` and `auth` text frames on the pub/sub endpoint (docs/PUBSUB.md).
 *
 * Why it exists: a command is WebSocket input, and what a bad one costs is
 * a WebSocket close code; pub/sub itself (pubsub.c) only subscribes,
 * unsubscribes and publishes.  This file parses a command (pubsub_proto.c),
 * asks the connection's token (conn_auth.c) or, without token keys, the
 * topic rules whether it may publish, calls pub/sub, and fails
 * the connection with the code each refusal calls for.  With ringws.v1
 * (CF_ENVELOPE) every command is answered, in the order sent: each answer
 * is queued before the next frame is read. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "internal.h"
#include "pubsub_proto.h"

/* A command that waits for the engine (CF_ENGINE_WAIT): the input after
 * it, and the command itself when it must run again once its topics are
 * ready (cmd_len 0: a publish awaiting its position, which runs once). */
struct conn_wait {
    struct conn_pend rest;
    uint32_t turn;    /* held for the turn after w->turn_pass == turn (on
                       * w->turn_held), not for the engine: 0 */
    uint32_t cmd_len;
    uint8_t cmd[];
};

/* Reads nothing more until conn_engine_ready. */
static int conn_ws_pubsub_hold(struct ringws_conn *c, const uint8_t *cmd, size_t n)
{
    struct conn_wait *wt;

    if (!conn_cold_get(c))
        return -ENOMEM;
    if (!(wt = calloc(1, sizeof(*wt) + n)))
        return -ENOMEM;
    if (n)
        memcpy(wt->cmd, cmd, n);
    wt->cmd_len = (uint32_t)n;
    c->cold->wait = wt;
    c->flags |= CF_ENGINE_WAIT;
    conn_wire_hold(c, true);
    return 0;
}

/* Bounded by a message and its frame's header: a client that keeps
 * sending while its command waits is failed rather than buffered. */
int conn_ws_pubsub_keep(struct ringws_conn *c, const uint8_t *p, size_t n)
{
    struct worker *w = conn_worker(c);

    return conn_pend_store(w, &c->cold->wait->rest, p, n,
                           w->srv->cfg.max_message + WS_MAX_SERVER_HEADER + 4);
}

/* Takes the connection at i off its worker's list of those held for the
 * next turn, keeping the order. */
static void conn_ws_turn_remove(struct worker *w, unsigned i)
{
    memmove(&w->turn_held[i], &w->turn_held[i + 1],
            (--w->n_turn_held - i) * sizeof(w->turn_held[0]));
}

int conn_ws_hold_turn(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);

    if (w->n_turn_held == w->cap_turn_held) {
        unsigned cap = w->cap_turn_held ? w->cap_turn_held * 2 : 16;
        struct ringws_conn **grown = realloc(w->turn_held, cap * sizeof(*grown));

        if (!grown)
            return -ENOMEM;
        w->turn_held = grown;
        w->cap_turn_held = cap;
    }
    if (conn_ws_pubsub_hold(c, NULL, 0) < 0)
        return -ENOMEM;
    if (!w->turn_pass) /* before the first turn's end */
        w->turn_pass = 1;
    c->cold->wait->turn = w->turn_pass;
    w->turn_held[w->n_turn_held++] = c;
    return 0;
}

void conn_ws_turn(struct worker *w)
{
    w->inflated_turn = 0;
    if (++w->turn_pass == 0)
        w->turn_pass = 1;
    /* Oldest first; those held again while these read were held in this
     * pass, behind them: they wait for the next. */
    while (w->n_turn_held && w->turn_held[0]->cold->wait->turn != w->turn_pass) {
        struct ringws_conn *c = w->turn_held[0];

        conn_ws_turn_remove(w, 0);
        c->cold->wait->turn = 0;
        conn_engine_ready(c, true);
    }
}

void conn_ws_pubsub_wait_free(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);
    struct conn_wait *wt = c->cold->wait;

    if (!wt)
        return;
    for (unsigned i = 0; wt->turn && i < w->n_turn_held; i++)
        if (w->turn_held[i] == c) {
            conn_ws_turn_remove(w, i);
            break;
        }
    c->cold->wait = NULL;
    conn_pend_release(w, &wt->rest);
    free(wt);
}

void conn_engine_ready(struct ringws_conn *c, bool ok)
{
    struct conn_wait *wt = c->cold ? c->cold->wait : NULL;
    struct conn_pend rest;

    if (c->state == CONN_HTTP) {
        conn_http_engine_ready(c);
        return;
    }
    c->flags &= ~CF_ENGINE_WAIT;
    if (!wt)
        return;
    c->cold->wait = NULL;
    rest = conn_pend_take(&wt->rest);
    conn_wire_hold(c, false);
    if (!ok && conn_ws_open(c))
        conn_ws_close_why(c, WS_CLOSE_TRY_AGAIN, "engine unavailable", true);
    if (wt->cmd_len && conn_ws_open(c))
        conn_ws_pubsub_command(c, WS_OP_TEXT, wt->cmd, wt->cmd_len);
    /* Kept again by a command that waits once more. */
    if (rest.len && conn_ws_reading(c) && !(c->flags & CF_TEARDOWN))
        conn_ws_input(c, rest.buf, rest.len);
    conn_pend_free(conn_worker(c), &rest);
    free(wt);
    conn_flush_later(c);
}

int conn_ws_pubsub_notice(struct ringws_conn *c, const char *fmt, ...)
{
    char line[RINGWS_MAX_TOPIC + 3 * SEQ_EPOCH_LEN + 64];
    uint8_t hdr[WS_MAX_SERVER_HEADER];
    va_list ap;
    size_t h;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -EINVAL;
    line[n++] = '\n';
    h = ws_frame_header(hdr, WS_FIN | WS_OP_TEXT, (size_t)n);
    return conn_queue(c, hdr, h, line, (size_t)n);
}

/* p, n: the command's text, kept to run it again when it must wait for
 * its topics. */
static void conn_ws_pubsub_topics(struct ringws_conn *c, const struct pubsub_cmd *cmd,
                                  const uint8_t *p, size_t n)
{
    const struct ringws_token_claims *claims = ringws_conn_token(c);
    int r;

    if (cmd->type == PUBSUB_CMD_SUB && claims &&
        !conn_auth_topics_ok(c, claims, cmd->arg, cmd->arg_len)) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, "topic not allowed by the token", true);
        return;
    }
    if (cmd->positions && !(c->flags & CF_ENVELOPE)) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, "positions need the ringws.v1 subprotocol", true);
        return;
    }
    if (cmd->type == PUBSUB_CMD_SUB &&
        (r = pubsub_prepare(c, cmd->arg, cmd->arg_len)) != 0) {
        if (r > 0 && (r = conn_ws_pubsub_hold(c, p, n)) == 0)
            return;
        conn_ws_close_why(c, WS_CLOSE_TRY_AGAIN, "engine unavailable", true);
        return;
    }
    r = cmd->type == PUBSUB_CMD_SUB
            ? pubsub_subscribe_list(c, cmd->arg, cmd->arg_len, cmd->positions,
                                    cmd->positions_len)
            : pubsub_unsubscribe_list(c, cmd->arg, cmd->arg_len);
    if (r == -E2BIG)
        conn_ws_close_why(c, WS_CLOSE_POLICY, "too many topics", true);
    else if (r == -ENOMEM)
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
    else if (r == -EAGAIN)
        conn_ws_close_why(c, WS_CLOSE_TRY_AGAIN, "engine unavailable", true);
}

static void conn_ws_pubsub_publish_failed(struct ringws_conn *c, int r)
{
    if (r == -ENOMEM)
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
    else if (r == -ESHUTDOWN)
        conn_ws_close_why(c, WS_CLOSE_GOING_AWAY, "server shutting down", true);
    else if (r == -EMSGSIZE)
        conn_ws_close_why(c, WS_CLOSE_TOO_BIG, "message too big to publish", true);
    else if (r == -EAGAIN)
        conn_ws_close_why(c, WS_CLOSE_TRY_AGAIN, "publish queue full", true);
    else if (r < 0) /* no epoch could be drawn, or the answer not queued */
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "publish failed", true);
}

/* The engine placed a publish the connection waits for (ringws.v1 with an
 * engine that answers later): its answer, then the input kept. */
static void conn_ws_pubsub_published(void *arg, int err, uint64_t recipients,
                                     const struct pub_pos *pos)
{
    struct ringws_conn *c = arg;
    int r = err;
    const uint8_t *cmd = c->cold->wait->cmd;

    (void)recipients;
    if (r == 0 && conn_ws_open(c))
        r = conn_ws_pubsub_notice(c, "published %s %s %" PRIu64, (const char *)cmd,
                                  pos->epoch, pos->offset);
    c->cold->wait->cmd_len = 0; /* it ran: the topic was kept only for the answer */
    if (r < 0 && conn_ws_open(c))
        conn_ws_pubsub_publish_failed(c, r);
    conn_engine_ready(c, true);
}

static void conn_ws_pubsub_publish(struct ringws_conn *c, const struct pubsub_cmd *cmd)
{
    struct worker *w = conn_worker(c);
    struct pub_pos pos;
    bool later = (c->flags & CF_ENVELOPE) && w->srv->engine->prepare;
    int r;

    if (!conn_auth_publish_ok(c, cmd->arg, cmd->arg_len)) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, "publishing to this topic is not allowed", true);
        return;
    }
    /* The payload is the tail of a valid text frame after an ASCII space:
     * valid UTF-8 too. */
    /* An engine that places publishes later is waited for in ringws.v1:
     * the answer names the position, and answers keep the commands' order.
     * The wait keeps the topic's name (NUL-terminated) for the answer. */
    if (later) {
        char name[RINGWS_MAX_TOPIC + 1];
        memcpy(name, cmd->arg, cmd->arg_len);
        name[cmd->arg_len] = '\0';
        if ((r = conn_ws_pubsub_hold(c, (const uint8_t *)name, cmd->arg_len + 1)) < 0) {
            conn_ws_pubsub_publish_failed(c, r);
            return;
        }
    }
    r = pubsub_publish_from(w, cmd->arg, cmd->arg_len, cmd->payload, cmd->payload_len,
                            false, later ? conn_ws_pubsub_published : NULL, c, NULL, &pos);
    if (r == 1)
        return;
    if (later) { /* refused at once: nothing to wait for */
        c->cold->wait->cmd_len = 0;
        conn_engine_ready(c, true);
    }
    if (r == 0 && (c->flags & CF_ENVELOPE))
        r = conn_ws_pubsub_notice(c, "published %.*s %s %" PRIu64, (int)cmd->arg_len,
                                  cmd->arg, pos.epoch, pos.offset);
    conn_ws_pubsub_publish_failed(c, r);
}

void conn_ws_pubsub_command(struct ringws_conn *c, unsigned opcode, const uint8_t *p,
                            size_t n)
{
    struct pubsub_cmd cmd;
    const char *why = NULL;

    if (opcode != WS_OP_TEXT) {
        conn_ws_close_why(c, WS_CLOSE_UNSUPPORTED, "commands are text frames", true);
        return;
    }
    if (pubsub_cmd_parse((const char *)p, n, &cmd, &why) < 0) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, why, true);
        return;
    }
    if (cmd.type == PUBSUB_CMD_PUB)
        conn_ws_pubsub_publish(c, &cmd);
    else if (cmd.type == PUBSUB_CMD_AUTH)
        conn_auth_refresh(c, cmd.arg, cmd.arg_len);
    else
        conn_ws_pubsub_topics(c, &cmd, p, n);
}
