/* transport.h - what carries a connection's bytes between the loop and the
 * connection layer: plain TCP (transport_tcp.c) or TLS (transport_tls.c).
 *
 * Why it exists: the connection layer (conn.c) and the protocols above it
 * speak plaintext: requests and frames in, queued chunks out.  What goes on
 * the wire is the transport's business, and the connection code cannot tell
 * which transport it has.  The seam is shaped for TLS (docs/ARCHITECTURE.md,
 * "Transports"):
 * - records: wire bytes are not the queued plaintext one for one, so the
 *   transport reports what a finished send consumed of the plaintext, and
 *   input may hand on less, more or none of what came (a partial record);
 * - handshakes: input may answer the peer with wire bytes of its own before
 *   any plaintext reaches the protocol: it keeps them and says so with
 *   conn_wire_want(c, true), and the flush step calls its send although
 *   the application queued nothing, over as many round trips as it takes;
 * - close: shutdown may first send close_notify the same way (want, and
 *   return without shutting down); the flush step calls shutdown again
 *   once the transport says it has nothing left (conn_wire_want(c, false)
 *   in its sent), and then it shuts TCP down with conn_wire_shutdown.
 *
 * Which transport a connection has is a flag it already holds
 * (CF_TP_SEALED: the worker's sealing transport, TLS; else plain TCP), so
 * the seam costs a connection no memory.  The plain transport has no input
 * and no send of its own: the connection layer hands received bytes to
 * conn_input and sends its queue itself, a test of that flag where
 * indirect calls (input, send, sent) cost fan-out about 20 instructions
 * per delivery. */
#ifndef RINGWS_TRANSPORT_H
#define RINGWS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

struct ringws_conn;

struct transport_ops {
    const char *name;
    /* n bytes came from the wire, in a buffer the transport may change in
     * place and that is gone once it returns: hands the plaintext they
     * carry to conn_input.  NULL with send. */
    void (*input)(struct ringws_conn *c, uint8_t *in, size_t n);
    /* Nothing is in flight and output is due: starts one send of the queued
     * plaintext (the chunks from c->out_head on; none queued when only
     * the transport's own bytes are due, CF_TP_WRITE), sealed as the
     * transport needs.  NULL (with sent): the wire is the plaintext, and the
     * connection layer gathers the queued chunks into one send. */
    void (*send)(struct ringws_conn *c);
    /* That send put `wire` bytes on the wire: consumes the plaintext they
     * carried.  NULL with send. */
    void (*sent)(struct ringws_conn *c, size_t wire);
    /* Output is flushed and the conversation over: ends our side of it
     * (conn_wire_shutdown; TLS sends close_notify first). */
    void (*shutdown)(struct ringws_conn *c);
    /* Nothing of the connection is in the ring: closes the descriptor
     * (conn_wire_close). */
    void (*close)(struct ringws_conn *c);
    /* A new connection: sets up the transport's own state (c->tp_state).
     * 0 or -errno.  NULL with send. */
    int (*open)(struct ringws_conn *c);
    /* The connection is freed: lets go of that state.  NULL with send. */
    void (*release)(struct ringws_conn *c);
    /* Whether an abrupt end still owes the peer words of the transport's
     * own (TLS: close_notify, or an alert), which the draining way down
     * then sends before the close.  NULL with send. */
    bool (*last_words)(struct ringws_conn *c);
};

extern const struct transport_ops transport_tcp;

#endif
