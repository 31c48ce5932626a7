/* conn_proxy.c - the first state of a connection on a listener that speaks
 * the PROXY protocol (ringws_config.proxy_protocol): the header a TCP load
 * balancer sends before the client's first byte, then the client's address
 * in place of the proxy's, then HTTP or TLS as on any connection.
 *
 * Why it exists: behind such a balancer every connection comes from its
 * address, so the per-address limit and the loopback check of publishing
 * would judge the balancer.  This state holds a connection until its
 * header has come whole (however the network cut it, within the handshake
 * timeout), gives the connection the address the header names, and hands
 * the bytes after it on.  A connection without a valid header is closed:
 * it is never served as if the balancer's address were the client's. */
#include <arpa/inet.h>

#include "internal.h"
#include "log.h"
#include "proxy_proto.h"

static void conn_proxy_log(const struct ringws_conn *c, const struct proxy_header *h,
                           const char *what)
{
    char text[INET6_ADDRSTRLEN] = "none";
    unsigned port = 0;

    if (!log_enabled(LOG_LEVEL_DEBUG))
        return;
    if (h->has_addr && h->src.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &h->src.in4.sin_addr, text, sizeof(text));
        port = ntohs(h->src.in4.sin_port);
    } else if (h->has_addr) {
        inet_ntop(AF_INET6, &h->src.in6.sin6_addr, text, sizeof(text));
        port = ntohs(h->src.in6.sin6_port);
    }
    log_msg(LOG_LEVEL_DEBUG, "worker %u: PROXY v%u client %s port %u: %s", conn_worker(c)->id,
            h->version, text, port, what);
}

/* The header is whole: the connection takes the client's address (none for
 * LOCAL and UNKNOWN: uncounted, and never local) and goes on as HTTP. */
static void conn_proxy_done(struct ringws_conn *c, const struct proxy_header *h, uint8_t *rest,
                            size_t n)
{
    if (!conn_peer_known(c, h->has_addr ? &h->src.sa : NULL, h->addr_len)) {
        conn_proxy_log(c, h, "refused (max-per-address)");
        conn_abort(c);
        return;
    }
    conn_proxy_log(c, h, "accepted");
    c->state = CONN_HTTP;
    if (n)
        conn_wire_input(c, rest, n);
}

/* Parses what came, in place while nothing is held; a header cut by the
 * network is gathered in the held input (bounded by PROXY_MAX_HEADER).  Since the
 * held bytes were a strict beginning of the header, its end lies in p. */
static void conn_proxy_input(struct ringws_conn *c, uint8_t *p, size_t n)
{
    uint32_t had = conn_held_len(c);
    const uint8_t *hdr = p;
    size_t len = n, used;
    struct proxy_header h;
    struct proxy_stop stop;
    int r;

    if (had) {
        size_t take = n < PROXY_MAX_HEADER - had ? n : PROXY_MAX_HEADER - had;
        if (conn_held_store(c, p, take, PROXY_MAX_HEADER) < 0) {
            conn_abort(c);
            return;
        }
        hdr = conn_held(c)->req.buf;
        len = conn_held(c)->req.len;
    }
    r = proxy_parse(hdr, len, &h, &stop);
    if (r == PROXY_NEED_MORE) {
        if (!had && conn_held_store(c, p, n, PROXY_MAX_HEADER) < 0)
            conn_abort(c);
        return;
    }
    if (r == PROXY_BAD) {
        log_msg(LOG_LEVEL_DEBUG, "worker %u: no valid PROXY header (byte %zu: %s): closed",
                conn_worker(c)->id, stop.pos, stop.why);
        conn_abort(c);
        return;
    }
    used = (size_t)r - had;
    conn_held_release(c);
    conn_proxy_done(c, &h, p + used, n - used);
}

/* The handshake timeout, armed at the accept, bounds the header too; an
 * EOF or a stop before it ends the connection (nothing was said yet). */
const struct proto_ops proxy_proto_ops = {
    .input = conn_proxy_input,
    .eof = conn_abort,
    .timer = conn_abort,
    .stop = conn_abort,
    .flush = conn_proto_none,
    .resume = conn_proto_none,
};
