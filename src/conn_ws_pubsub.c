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

#include "internal.h"
#include "pubsub_proto.h"

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

static void conn_ws_pubsub_topics(struct ringws_conn *c, const struct pubsub_cmd *cmd)
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
    r = cmd->type == PUBSUB_CMD_SUB
            ? pubsub_subscribe_list(c, cmd->arg, cmd->arg_len, cmd->positions,
                                    cmd->positions_len)
            : pubsub_unsubscribe_list(c, cmd->arg, cmd->arg_len);
    if (r == -E2BIG)
        conn_ws_close_why(c, WS_CLOSE_POLICY, "too many topics", true);
    else if (r == -ENOMEM)
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
}

static void conn_ws_pubsub_publish(struct ringws_conn *c, const struct pubsub_cmd *cmd)
{
    struct pub_pos pos;
    int r;

    if (!conn_auth_publish_ok(c, cmd->arg, cmd->arg_len)) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, "publishing to this topic is not allowed", true);
        return;
    }
    /* The payload is the tail of a valid text frame after an ASCII space:
     * valid UTF-8 too. */
    r = pubsub_publish_from(c->w, cmd->arg, cmd->arg_len, cmd->payload, cmd->payload_len,
                            false, NULL, NULL, NULL, &pos);
    if (r == 0 && (c->flags & CF_ENVELOPE))
        r = conn_ws_pubsub_notice(c, "published %.*s %s %" PRIu64, (int)cmd->arg_len,
                                  cmd->arg, pos.epoch, pos.offset);
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
        conn_ws_pubsub_topics(c, &cmd);
}
