/* redis_conn.c - one connection to a Redis server on a worker's ring.
 *
 * Why it exists: see redis_conn.h.  Commands queued during a loop turn
 * leave in one send (the batch), the next batch gathers while it is in
 * flight: a pipeline as deep as the traffic, one system call per batch
 * counted by the ring.  Answers come back in the order the commands were
 * sent (RESP), so the callbacks wait in a ring in that order; a reply when
 * none waits is a push of a subscription.  A lost connection fails every
 * awaited answer (NULL: the caller cannot know whether its command ran)
 * and is made again after a backoff; what a subscription must redo after
 * that is its owner's business (ops->state). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "redis_conn.h"

#define REDIS_BACKOFF_MIN_MS 100u
#define REDIS_BACKOFF_MAX_MS 5000u

static void redis_conn_connect(struct redis_conn *rc);
static int redis_conn_send_auth(struct redis_conn *rc);

static void redis_conn_recv(struct redis_conn *rc)
{
    rc->rx_busy = true;
    loop_req_recv(rc->loop, &rc->rx, rc->fd, rc->rbuf, sizeof(rc->rbuf));
}

/* Sends what the last batch left, or swaps in the gathered commands. */
static void redis_conn_flush(struct redis_conn *rc)
{
    if (rc->tx_busy || rc->state != REDIS_UP)
        return;
    if (rc->send_off == rc->send_len) {
        char *b = rc->sending;
        size_t cap = rc->send_cap;
        if (!rc->out_len)
            return;
        rc->sending = rc->out;
        rc->send_cap = rc->out_cap;
        rc->send_len = rc->out_len;
        rc->send_off = 0;
        rc->out = b;
        rc->out_cap = cap;
        rc->out_len = 0;
    }
    rc->tx_busy = true;
    loop_req_send(rc->loop, &rc->tx, rc->fd, rc->sending + rc->send_off,
                  rc->send_len - rc->send_off);
}

/* The oldest awaited answer's callback, taken off the ring. */
static struct redis_cb redis_conn_cb_pop(struct redis_conn *rc)
{
    struct redis_cb cb = rc->cbs[rc->cb_head];

    rc->cb_head = (rc->cb_head + 1) % rc->cb_cap;
    rc->cb_n--;
    rc->cb_bytes -= cb.len;
    return cb;
}

/* Every awaited answer gets NULL, oldest first. */
static void redis_conn_fail_callbacks(struct redis_conn *rc)
{
    while (rc->cb_n) {
        struct redis_cb cb = redis_conn_cb_pop(rc);
        if (cb.fn)
            cb.fn(cb.arg, NULL);
    }
}

/* Connects again after the backoff, unless stopped. */
static void redis_conn_retry(struct redis_conn *rc)
{
    rc->state = REDIS_DOWN;
    if (rc->stopped || rc->tm_busy)
        return;
    rc->backoff_ts.tv_sec = rc->backoff_ms / 1000;
    rc->backoff_ts.tv_nsec = (long long)(rc->backoff_ms % 1000) * 1000000;
    rc->tm_busy = true;
    loop_req_timeout(rc->loop, &rc->tm, &rc->backoff_ts);
    rc->backoff_ms = rc->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                                : rc->backoff_ms * 2;
}

/* Once nothing of the old socket is in the ring: closed, then retried. */
static void redis_conn_settle(struct redis_conn *rc)
{
    if (rc->state != REDIS_CLOSING || rc->rx_busy || rc->tx_busy || rc->cx_busy)
        return;
    close(rc->fd);
    rc->fd = -1;
    redis_conn_retry(rc);
}

void redis_conn_fail(struct redis_conn *rc)
{
    bool was_up = rc->state == REDIS_UP;

    if (rc->state == REDIS_DOWN || rc->state == REDIS_CLOSING)
        return;
    rc->state = REDIS_CLOSING;
    /* Ends the receive and the send in flight (a shut socket completes
     * them); the descriptor is closed once both are back. */
    shutdown(rc->fd, SHUT_RDWR);
    rc->out_len = 0;
    rc->send_len = rc->send_off = 0;
    redisReaderFree(rc->reader);
    rc->reader = redisReaderCreate();
    redis_conn_fail_callbacks(rc);
    if (was_up)
        rc->reconnects++;
    if (was_up && rc->ops->state)
        rc->ops->state(rc->ctx, false);
    redis_conn_settle(rc);
}

static void redis_conn_on_recv(struct loop_req *r, int res)
{
    struct redis_conn *rc = (struct redis_conn *)((char *)r - offsetof(struct redis_conn, rx));
    void *reply;

    rc->rx_busy = false;
    if (rc->state != REDIS_UP || res <= 0) {
        redis_conn_fail(rc);
        redis_conn_settle(rc);
        return;
    }
    if (redisReaderFeed(rc->reader, rc->rbuf, (size_t)res) != REDIS_OK) {
        redis_conn_fail(rc);
        return;
    }
    while (rc->state == REDIS_UP) {
        if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
            redis_conn_fail(rc); /* a protocol error: nothing after it can be trusted */
            return;
        }
        if (!reply)
            break;
        if (rc->cb_n) {
            struct redis_cb cb = redis_conn_cb_pop(rc);
            if (cb.fn)
                cb.fn(cb.arg, reply);
        } else if (rc->ops->push) {
            rc->ops->push(rc->ctx, reply);
        }
        freeReplyObject(reply);
    }
    if (rc->state == REDIS_UP)
        redis_conn_recv(rc);
}

static void redis_conn_on_send(struct loop_req *r, int res)
{
    struct redis_conn *rc = (struct redis_conn *)((char *)r - offsetof(struct redis_conn, tx));

    rc->tx_busy = false;
    if (rc->state != REDIS_UP || res <= 0) {
        redis_conn_fail(rc);
        redis_conn_settle(rc);
        return;
    }
    rc->send_off += (size_t)res;
    redis_conn_flush(rc);
}

static void redis_conn_on_connect(struct loop_req *r, int res)
{
    struct redis_conn *rc = (struct redis_conn *)((char *)r - offsetof(struct redis_conn, cx));

    rc->cx_busy = false;
    if (rc->state != REDIS_CONNECTING || res < 0) {
        if (rc->state == REDIS_CONNECTING)
            redis_conn_fail(rc);
        redis_conn_settle(rc);
        return;
    }
    rc->state = REDIS_UP;
    /* The backoff starts again once the server took the connection (and
     * its credentials): a refused password is retried ever more slowly. */
    if (!rc->auth || !rc->auth->password)
        rc->backoff_ms = REDIS_BACKOFF_MIN_MS;
    redis_conn_recv(rc);
    if (rc->auth && rc->auth->password && redis_conn_send_auth(rc) < 0) {
        redis_conn_fail(rc);
        return;
    }
    if (rc->ops->state)
        rc->ops->state(rc->ctx, true);
    redis_conn_flush(rc);
}

/* A refused AUTH: commands after it would be refused too. */
static void redis_conn_auth_reply(void *arg, redisReply *r)
{
    struct redis_conn *rc = arg;

    if (r && r->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_LEVEL_WARN, "redis: AUTH refused: %s", r->str);
        redis_conn_fail(rc);
    } else if (r) {
        rc->backoff_ms = REDIS_BACKOFF_MIN_MS;
    }
}

static int redis_conn_send_auth(struct redis_conn *rc)
{
    const char *argv[3] = {"AUTH", rc->auth->user, rc->auth->password};
    size_t lens[3] = {4, rc->auth->user ? strlen(rc->auth->user) : 0,
                      strlen(rc->auth->password)};

    if (!rc->auth->user) {
        argv[1] = argv[2];
        lens[1] = lens[2];
    }
    return redis_conn_command(rc, rc->auth->user ? 3 : 2, argv, lens, redis_conn_auth_reply,
                              rc);
}

static void redis_conn_on_timer(struct loop_req *r, int res)
{
    struct redis_conn *rc = (struct redis_conn *)((char *)r - offsetof(struct redis_conn, tm));

    rc->tm_busy = false;
    if (!rc->stopped && rc->state == REDIS_DOWN)
        redis_conn_connect(rc);
}

static void redis_conn_connect(struct redis_conn *rc)
{
    int one = 1;

    rc->fd = socket(rc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (rc->fd < 0) { /* out of descriptors, say: tried again later */
        redis_conn_retry(rc);
        return;
    }
    /* Commands are small and pipelined: no waiting for more to fill a
     * segment. */
    setsockopt(rc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc->state = REDIS_CONNECTING;
    rc->cx_busy = true;
    loop_req_connect(rc->loop, &rc->cx, rc->fd, (const struct sockaddr *)&rc->addr,
                     rc->addr_len);
}

int redis_conn_start(struct redis_conn *rc, struct loop *l, const struct sockaddr *addr,
                     socklen_t len, const struct redis_auth *auth,
                     const struct redis_conn_ops *ops, void *ctx)
{
    if (len > sizeof(rc->addr))
        return -EINVAL;
    memset(rc, 0, offsetof(struct redis_conn, rbuf));
    rc->loop = l;
    rc->ops = ops;
    rc->ctx = ctx;
    rc->auth = auth;
    memcpy(&rc->addr, addr, len);
    rc->addr_len = len;
    rc->fd = -1;
    rc->backoff_ms = REDIS_BACKOFF_MIN_MS;
    rc->rx.done = redis_conn_on_recv;
    rc->tx.done = redis_conn_on_send;
    rc->cx.done = redis_conn_on_connect;
    rc->tm.done = redis_conn_on_timer;
    rc->reader = redisReaderCreate();
    if (!rc->reader)
        return -ENOMEM;
    redis_conn_connect(rc);
    return 0;
}

/* Room for one more awaited answer: the ring doubles, oldest first. */
static int redis_conn_cb_push(struct redis_conn *rc, redis_reply_fn *fn, void *arg,
                              size_t len)
{
    if (rc->cb_n == rc->cb_cap) {
        uint32_t cap = rc->cb_cap ? rc->cb_cap * 2 : 64;
        struct redis_cb *b = malloc(cap * sizeof(*b));
        if (!b)
            return -ENOMEM;
        for (uint32_t i = 0; i < rc->cb_n; i++)
            b[i] = rc->cbs[(rc->cb_head + i) % rc->cb_cap];
        free(rc->cbs);
        rc->cbs = b;
        rc->cb_cap = cap;
        rc->cb_head = 0;
    }
    rc->cbs[(rc->cb_head + rc->cb_n) % rc->cb_cap] = (struct redis_cb){fn, arg, len};
    rc->cb_n++;
    rc->cb_bytes += len;
    return 0;
}

/* Whether n commands of bytes bytes in all pass the bounds of what the
 * connection holds (REDIS_CONN_MAX_*): a slow server costs bounded
 * memory.  One holding nothing takes any command, so that a large one is
 * not refused for ever. */
static bool redis_conn_has_room(const struct redis_conn *rc, unsigned n, size_t bytes,
                                bool awaited)
{
    size_t unsent = rc->out_len + rc->send_len - rc->send_off;

    if (unsent && unsent + bytes > REDIS_CONN_MAX_BYTES)
        return false;
    return !awaited || (rc->cb_n + n <= REDIS_CONN_MAX_AWAITED &&
                        (!rc->cb_bytes || rc->cb_bytes + bytes <= REDIS_CONN_MAX_BYTES));
}

bool redis_conn_can_take(const struct redis_conn *rc, unsigned n, size_t bytes)
{
    return rc->state == REDIS_UP && redis_conn_has_room(rc, n, bytes, true);
}

/* Queues a command; bounded: whether REDIS_CONN_MAX_* apply to it. */
static int redis_conn_queue(struct redis_conn *rc, int argc, const char **argv,
                            const size_t *lens, redis_reply_fn *fn, void *arg, bool bounded)
{
    char *cmd;
    int n;

    if (rc->state != REDIS_UP)
        return -ENOTCONN;
    n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return -ENOMEM;
    if (bounded && !redis_conn_has_room(rc, 1, (size_t)n, fn != NULL)) {
        free(cmd);
        return -EAGAIN;
    }
    if (rc->out_len + (size_t)n > rc->out_cap) {
        size_t cap = rc->out_cap ? rc->out_cap : 4096;
        char *b;
        while (cap < rc->out_len + (size_t)n)
            cap *= 2;
        b = realloc(rc->out, cap);
        if (!b) {
            free(cmd);
            return -ENOMEM;
        }
        rc->out = b;
        rc->out_cap = cap;
    }
    if (fn && redis_conn_cb_push(rc, fn, arg, (size_t)n) < 0) {
        free(cmd);
        return -ENOMEM;
    }
    memcpy(rc->out + rc->out_len, cmd, (size_t)n);
    rc->out_len += (size_t)n;
    free(cmd);
    redis_conn_flush(rc);
    return 0;
}

int redis_conn_command(struct redis_conn *rc, int argc, const char **argv, const size_t *lens,
                       redis_reply_fn *fn, void *arg)
{
    return redis_conn_queue(rc, argc, argv, lens, fn, arg, true);
}

int redis_conn_command_release(struct redis_conn *rc, int argc, const char **argv,
                               const size_t *lens)
{
    return redis_conn_queue(rc, argc, argv, lens, NULL, NULL, false);
}

void redis_conn_stop(struct redis_conn *rc)
{
    rc->stopped = true;
    redis_conn_fail(rc);
}

void redis_conn_free(struct redis_conn *rc)
{
    if (rc->fd >= 0)
        close(rc->fd);
    rc->fd = -1;
    if (rc->reader)
        redisReaderFree(rc->reader);
    rc->reader = NULL;
    free(rc->out);
    free(rc->sending);
    free(rc->cbs);
    rc->out = rc->sending = NULL;
    rc->cbs = NULL;
}
