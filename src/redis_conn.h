/* redis_conn.h - one connection to a Redis server, driven by a worker's
 * io_uring loop: commands pipelined, answers matched in order, the
 * replies no command waits for (a subscription's messages) handed to the
 * owner, reconnection with backoff.
 *
 * Why it exists: the Redis engine (docs/CLUSTER.md) talks to Redis from
 * the workers, which must never block and run no other poller.  hiredis
 * 0.14's async layer cannot carry sharded pub/sub (it asserts on an
 * smessage), so hiredis is used for RESP only (its reader and command
 * formatter) and the bytes move through the loop (loop_req). */
#ifndef RINGWS_REDIS_CONN_H
#define RINGWS_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "loop.h"

/* A command's answer; reply NULL: the connection was lost before it came
 * (the command may or may not have run).  The reply is freed after the
 * call. */
typedef void redis_reply_fn(void *arg, redisReply *reply);

struct redis_conn_ops {
    /* A reply while no command waits (a subscription's smessage, or an
     * sunsubscribe when a slot moved).  Freed after the call. */
    void (*push)(void *ctx, redisReply *reply);
    /* The connection is up (after each connect) or lost (then retried
     * after a backoff: 100 ms doubling to 5 s). */
    void (*state)(void *ctx, bool up);
};

/* Credentials sent (AUTH) first on every connection; NULL fields: none
 * (user NULL: the default user).  The strings must outlive the
 * connection. */
struct redis_auth {
    const char *user, *password;
};

struct redis_cb {
    redis_reply_fn *fn;
    void *arg;
    size_t len; /* of its command */
};

/* What one connection holds while its server is slow (or stopped): past
 * either bound a command is refused (-EAGAIN), never queued.  Commands
 * whose answer is awaited, in number and in bytes (sent or not: a
 * publish's message is held until its answer), and bytes not sent yet. */
#define REDIS_CONN_MAX_AWAITED 65536u
#define REDIS_CONN_MAX_BYTES (8u << 20)

enum redis_conn_state { REDIS_DOWN, REDIS_CONNECTING, REDIS_UP, REDIS_CLOSING };

struct redis_conn {
    struct loop *loop;
    const struct redis_conn_ops *ops;
    void *ctx;
    const struct redis_auth *auth; /* NULL: none */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int fd;
    enum redis_conn_state state;
    bool rx_busy, tx_busy, cx_busy, tm_busy, stopped;
    struct loop_req rx, tx, cx, tm;
    struct __kernel_timespec backoff_ts;
    unsigned backoff_ms;
    uint64_t reconnects; /* connections lost and made again */
    redisReader *reader;
    char *out, *sending;        /* commands gathered; the batch in flight */
    size_t out_len, out_cap, send_len, send_off, send_cap;
    struct redis_cb *cbs;       /* answers awaited, a ring in send order */
    uint32_t cb_head, cb_n, cb_cap;
    size_t cb_bytes;            /* their commands' */
    char rbuf[16384];
};

/* Connects at once (and again whenever lost, until redis_conn_stop); with
 * auth (may be NULL), AUTH is the first command of every connection, and
 * a refusal drops it (to be tried again after the backoff). */
int redis_conn_start(struct redis_conn *rc, struct loop *l, const struct sockaddr *addr,
                     socklen_t len, const struct redis_auth *auth,
                     const struct redis_conn_ops *ops, void *ctx);
/* Queues a command (argv[0] its name) to be sent with the others of this
 * turn; fn gets its answer.  fn NULL: no answer is awaited, the reply
 * comes as a push (only on a subscription's connection, where every reply
 * does).  -ENOTCONN while the connection is not up, -EAGAIN past
 * REDIS_CONN_MAX_AWAITED or REDIS_CONN_MAX_BYTES (a connection holding
 * nothing takes a command of any size), -ENOMEM. */
int redis_conn_command(struct redis_conn *rc, int argc, const char **argv, const size_t *lens,
                       redis_reply_fn *fn, void *arg);
/* Queues a command that ends what an earlier one on this connection began
 * (an SUNSUBSCRIBE after its SSUBSCRIBE), no answer awaited, past
 * REDIS_CONN_MAX_BYTES too: refusing it would keep the cost it ends (the
 * channel's messages, until the connection is remade), and what it adds
 * past the bound is one such command per subscription the bound let in.
 * -ENOTCONN while the connection is not up, -ENOMEM. */
int redis_conn_command_release(struct redis_conn *rc, int argc, const char **argv,
                               const size_t *lens);
/* Whether n commands awaiting answers, bytes bytes in all once formatted
 * (an upper bound, at most REDIS_CONN_MAX_BYTES), would all be taken now:
 * a caller whose commands share one state asks first, so that none is
 * refused after the others are queued. */
bool redis_conn_can_take(const struct redis_conn *rc, unsigned n, size_t bytes);
/* Drops the connection now (the awaited answers get NULL), as a lost one,
 * and connects again after the backoff. */
void redis_conn_fail(struct redis_conn *rc);
/* No more reconnects; the socket is shut so that what is in flight ends,
 * and awaited answers get NULL. */
void redis_conn_stop(struct redis_conn *rc);
/* After the loop is gone (its ring cancelled what was in flight): frees
 * what the connection holds; answers still awaited are dropped unseen. */
void redis_conn_free(struct redis_conn *rc);

#endif
