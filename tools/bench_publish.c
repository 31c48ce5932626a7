/* bench_publish.c - the fanout mode's publisher: POST /publish/TOPIC on a
 * keep-alive TCP connection, https when the subscribers speak wss.
 *
 * Why it exists: a fan-out is measured from the moment a message is handed
 * to the server, so the publisher must be as plain as the server's HTTP
 * endpoint allows: one blocking connection, one request at a time, every
 * call bounded by --timeout (SO_SNDTIMEO / SO_RCVTIMEO), the answer checked
 * byte by byte (bench_wire.c).  The connection is opened anew when the
 * server asks to close it or after it has idled long enough that the
 * server's keep-alive limit could end it while a request is on its way.
 * Over TLS the same socket carries a blocking SSL (bench_tls.c's context),
 * its reads and writes bounded by the same socket timeouts. */
#include "bench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Well below ringws's default keep-alive idle time (--handshake-timeout,
 * 10 s): a request sent as the server closes would be lost, or published
 * twice if it were retried. */
#define PUB_IDLE_NS (2 * 1000000000ull)

int publisher_init(struct publisher *p, const struct bench_opts *o,
                   const struct bench_tls *tls)
{
    *p = (struct publisher){.fd = -1, .tls = tls, .dst = o->dst, .host = o->host,
                            .topic = o->topic, .token = o->token, .timeout_s = o->timeout_s,
                            .cap = sizeof p->buf};
    p->req_cap = 512 + sizeof o->token + WSC_MAX_TOPIC + o->size;
    p->req = malloc(p->req_cap);
    return p->req ? 0 : -ENOMEM;
}

void publisher_close(struct publisher *p)
{
    SSL_free(p->ssl);
    p->ssl = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->used = 0;
}

/* A socket timeout ends a blocking SSL call with "want read/write". */
static int publisher_tls_error(struct publisher *p, int r)
{
    int e = SSL_get_error(p->ssl, r), err = errno;

    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return -ETIMEDOUT;
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !err))
        return 0; /* the server ended the connection */
    return e == SSL_ERROR_SYSCALL ? -err : -EPROTO;
}

static int publisher_tls_connect(struct publisher *p)
{
    int r;

    if (!(p->ssl = bench_tls_ssl(p->tls)) || SSL_set_fd(p->ssl, p->fd) != 1) {
        publisher_close(p);
        return -ENOMEM;
    }
    if ((r = SSL_connect(p->ssl)) != 1) {
        int ret = publisher_tls_error(p, r);

        publisher_close(p);
        return ret ? ret : -ECONNRESET;
    }
    return 0;
}

static int publisher_connect(struct publisher *p)
{
    struct timeval tv = {.tv_sec = (time_t)p->timeout_s,
                         .tv_usec = (suseconds_t)((p->timeout_s - (double)(time_t)p->timeout_s) *
                                                  1e6)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        connect(fd, (const struct sockaddr *)&p->dst, sizeof p->dst) < 0) {
        int ret = -errno;

        close(fd);
        return ret;
    }
    p->fd = fd;
    p->used = 0;
    return p->tls ? publisher_tls_connect(p) : 0;
}

/* One send or SSL_write: bytes written or -errno. */
static ssize_t publisher_write(struct publisher *p, const uint8_t *b, size_t n)
{
    ssize_t w;

    if (p->ssl) {
        int r = SSL_write(p->ssl, b, (int)n);

        if (r > 0)
            return r;
        w = publisher_tls_error(p, r);
        return w ? w : -ECONNRESET;
    }
    w = send(p->fd, b, n, MSG_NOSIGNAL);
    return w >= 0 ? w : errno == EAGAIN ? -ETIMEDOUT : -errno;
}

/* One recv or SSL_read: bytes read, 0 at the end, or -errno. */
static ssize_t publisher_read(struct publisher *p, uint8_t *b, size_t n)
{
    ssize_t r;

    if (p->ssl) {
        int k = SSL_read(p->ssl, b, (int)n);

        return k > 0 ? k : publisher_tls_error(p, k);
    }
    r = recv(p->fd, b, n, 0);
    return r >= 0 ? r : errno == EAGAIN ? -ETIMEDOUT : -errno;
}

static int publisher_write_all(struct publisher *p, const uint8_t *b, size_t n)
{
    while (n) {
        ssize_t w = publisher_write(p, b, n);

        if (w == -EINTR)
            continue;
        if (w < 0)
            return (int)w;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until one whole answer is in buf; returns its length. */
static int publisher_read_answer(struct publisher *p, struct wsc_answer *a, const char **why)
{
    for (;;) {
        int r = p->used ? wsc_answer_parse(p->buf, p->used, a, why) : 0;
        ssize_t n;

        if (r != 0)
            return r;
        n = publisher_read(p, (uint8_t *)p->buf + p->used, p->cap - p->used);
        if (n == -EINTR)
            continue;
        if (n < 0) {
            *why = n == -ETIMEDOUT ? "no answer within --timeout" : "recv failed";
            return (int)n;
        }
        if (n == 0) {
            *why = "server closed the publishing connection";
            return -ECONNRESET;
        }
        p->used += (size_t)n;
    }
}

int publisher_send(struct publisher *p, const uint8_t *body, size_t len,
                   struct wsc_answer *a, const char **why)
{
    size_t head;
    int ret;

    *why = NULL;
    if (p->fd >= 0 && bench_now_ns() - p->last_ns > PUB_IDLE_NS)
        publisher_close(p);
    if (p->fd < 0 && (ret = publisher_connect(p)) < 0) {
        *why = "cannot connect";
        return ret;
    }
    head = wsc_publish_head_write((char *)p->req, p->req_cap - len, p->host, p->topic,
                                  p->token, len);
    if (!head) {
        *why = "request too long";
        return -ENAMETOOLONG;
    }
    memcpy(p->req + head, body, len);
    if ((ret = publisher_write_all(p, p->req, head + len)) < 0) {
        *why = "send failed";
        publisher_close(p);
        return ret;
    }
    ret = publisher_read_answer(p, a, why);
    if (ret < 0) {
        publisher_close(p);
        return ret;
    }
    p->last_ns = bench_now_ns();
    /* The answer stays readable in buf until the next call; what followed
     * it (nothing, from a server that answers one request at a time) goes. */
    if (!a->keep_alive)
        publisher_close(p);
    p->used = 0;
    return 0;
}
