/* transport_tcp.c - the plain TCP transport: the wire carries the queued
 * plaintext as it is.
 *
 * Why it exists: the connection layer speaks only to a transport
 * (transport.h).  Without TLS, bytes pass straight through: the
 * connection layer hands received bytes to conn_input and gathers its
 * queue into one send itself (no input and no send here), and the
 * connection's own shutdown and close serve as they are. */
#include "internal.h"
#include "transport.h"

const struct transport_ops transport_tcp = {
    .name = "tcp",
    .shutdown = conn_wire_shutdown,
    .close = conn_wire_close,
};
