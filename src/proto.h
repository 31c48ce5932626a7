/* proto.h - what each connection state does with the events the connection
 * layer hears: HTTP (conn_http.c), WebSocket open and closing (conn_ws.c),
 * and draining (conn.c's own, the way down).
 *
 * Why it exists: conn.c holds a connection's lifecycle, queues and teardown
 * and knows no protocol; what input means, what an idle or late deadline
 * does, how a server stop ends the conversation and what work a protocol
 * left for the flush step belong to the protocol of the connection's state.
 * conn.c calls them through one table per state, indexed by c->state: no
 * memory per connection, one indirect call per event. */
#ifndef RINGWS_PROTO_H
#define RINGWS_PROTO_H

#include <stddef.h>
#include <stdint.h>

struct ringws_conn;

struct proto_ops {
    /* Plaintext bytes from the peer (conn_input), in a buffer that is gone
     * once it returns. */
    void (*input)(struct ringws_conn *c, uint8_t *buf, size_t n);
    /* The peer will send nothing more (CF_RD_EOF is set). */
    void (*eof)(struct ringws_conn *c);
    /* The connection's one deadline passed (conn_set_deadline, or one the
     * protocol armed itself). */
    void (*timer)(struct ringws_conn *c);
    /* The server is stopping: end the conversation as the protocol does. */
    void (*stop)(struct ringws_conn *c);
    /* Work the protocol left for the flush step, outside every callback
     * (CF_PROTO_DEFERRED is set; the connection is not torn down). */
    void (*flush)(struct ringws_conn *c);
    /* Queued output drained below the resume mark, or whatever held input
     * back is gone: input kept unparsed may go on. */
    void (*resume)(struct ringws_conn *c);
};

extern const struct proto_ops http_proto_ops;       /* CONN_HTTP */
extern const struct proto_ops ws_proto_ops;         /* CONN_WS */
extern const struct proto_ops ws_closing_proto_ops; /* CONN_CLOSING */
extern const struct proto_ops proxy_proto_ops;      /* CONN_PROXY */

#endif
