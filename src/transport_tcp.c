/* transport_tcp.c - the plain TCP transport: the wire carries the queued
 * plaintext as it is.
 *
 * Why it exists: the connection layer speaks only to a transport
 * (transport.h).  Without TLS, bytes pass straight through: the
 * connection's own functions serve as they are, with no call in between,
 * and there is no send of its own (the connection layer gathers its queue
 * into one send). */
#include "internal.h"
#include "transport.h"

const struct transport_ops transport_tcp = {
    .name = "tcp",
    .input = conn_input,
    .shutdown = conn_wire_shutdown,
    .close = conn_wire_close,
};
