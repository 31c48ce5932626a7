/* loop.h - an io_uring event loop that knows no client type.
 *
 * Why it exists: every io_uring detail (ring set-up and its fallbacks,
 * submission entries, completion decoding, provided receive buffers,
 * multishot requests and what to do when the kernel refuses them) lives in
 * loop.c; its user registers a table of handlers and deals in "receive on
 * this connection", "send these bytes", "close", never in an SQE.  The
 * server's workers (worker.c) and the load generator (tools/) run the same
 * loop.  One loop per thread, created and used only by that thread. */
#ifndef RINGWS_LOOP_H
#define RINGWS_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <linux/time_types.h>

struct loop;

/* A connection as the loop sees it: the descriptor (or direct slot) its
 * requests name.  The user embeds it at the start of its own connection
 * struct, which must be 8-byte aligned: the loop tags the address with the
 * operation in the completion's user_data, and hands it back to the
 * handlers. */
struct loop_conn {
    int fd;
};

/* What the loop calls.  A handler given a loop_conn is the last to touch
 * it for that completion: it may free the connection.  Only the handlers
 * of requests the user makes are needed; the two around the wait may be
 * NULL. */
struct loop_handlers {
    /* Before each wait for completions: start what the last batch queued. */
    void (*before_wait)(void *ctx);
    /* After before_wait: whether work is left for the next turn (work
     * put off to keep a turn short), in which case the wait does not block. */
    bool (*work_left)(void *ctx);
    /* After the wait, before the completions are handled. */
    void (*after_wait)(void *ctx);
    /* A connection was accepted on the listener loop_listen numbered
     * `listener` (peer NULL unless loop_listen asked). */
    void (*accepted)(void *ctx, unsigned listener, int fd, const struct sockaddr *peer,
                     socklen_t peer_len);
    /* res > 0: res bytes at p, which the handler may change in place (the
     * buffer goes back to the kernel once it returns); 0: the peer's EOF;
     * < 0: -errno (-ENOBUFS: no buffer was free).  ended: the receive
     * request is over, loop_recv arms the next.  The two hottest handlers
     * are handed ctx too: their user need not find it from lc. */
    void (*received)(void *ctx, struct loop_conn *lc, uint8_t *p, int res, bool ended);
    void (*sent)(void *ctx, struct loop_conn *lc, int res);
    void (*connected)(struct loop_conn *lc, int res);
    void (*shut)(struct loop_conn *lc, int res);
    void (*closed)(struct loop_conn *lc, int res);
    /* The wake descriptor was written (loop_config.wake_fd). */
    void (*woken)(void *ctx);
    /* Every loop_config.tick_ms. */
    void (*ticked)(void *ctx);
};

struct loop_config {
    const char *name;         /* in log lines, with id: "worker 3" */
    unsigned id;
    bool log_setup;           /* say once what the ring got */
    unsigned sq_entries, cq_entries;
    unsigned direct_slots;    /* a sparse table of direct descriptors; 0: none */
    uint32_t buf_count;       /* provided receive buffers (a power of two) */
    uint32_t buf_size;
    bool buf_incremental;     /* where the kernel can */
    unsigned tick_ms;         /* 0: no tick */
    int wake_fd;              /* an eventfd other threads write; -1: none */
    /* Tests only: submission fails with -EIO after this many turns (0:
     * never); multishot requests carry a flag the kernel refuses. */
    unsigned fault_turns;
    bool fault_multishot;
};

/* 0 or -errno; on failure *out is NULL and nothing is left behind. */
int loop_create(struct loop **out, const struct loop_config *cfg,
                const struct loop_handlers *h, void *ctx);
/* Submits what is queued (closes), closes the ring (which cancels what it
 * still holds), then frees the receive buffers: only then may what the
 * requests point at be freed. */
void loop_destroy(struct loop *l);
/* Whether connections are direct descriptors (the sparse table exists). */
bool loop_direct(const struct loop *l);
/* Puts a descriptor into direct slot `slot` (the caller closes its own). */
int loop_fd_install(struct loop *l, unsigned slot, int fd);

/* One turn: before_wait, submit, wait for a completion (at most wait_ns
 * when >= 0) and dispatch every completion there is.  0, or the -errno of
 * a ring that cannot go on. */
int loop_turn(struct loop *l, long long wait_ns);

/* Listeners one loop accepts on (a TLS port and a plaintext one beside it). */
#define LOOP_MAX_LISTENERS 2

/* Accepts on fd until loop_unlisten; with want_peer, one at a time with the
 * peer's address (a multishot accept cannot report it).  The listener's
 * number (0, 1...), or -ENOSPC past LOOP_MAX_LISTENERS. */
int loop_listen(struct loop *l, int fd, bool want_peer);
/* Stops accepting: the listeners are shut (they leave their SO_REUSEPORT
 * group, so that the kernel hands new clients to the group's other
 * listeners), the armed accepts are cancelled, and a connection they still
 * bring is closed at once. */
void loop_unlisten(struct loop *l);

void loop_recv(struct loop *l, struct loop_conn *lc);
void loop_send(struct loop *l, struct loop_conn *lc, const void *p, size_t n);
void loop_sendmsg(struct loop *l, struct loop_conn *lc, struct msghdr *m);
/* The same when the sender's close follows at once: the bytes may wait in
 * the kernel to leave in one segment with the FIN (MSG_MORE).  Functions
 * of their own, so that other sends pay nothing for the choice. */
void loop_send_more(struct loop *l, struct loop_conn *lc, const void *p, size_t n);
void loop_sendmsg_more(struct loop *l, struct loop_conn *lc, struct msghdr *m);
void loop_connect(struct loop *l, struct loop_conn *lc, const struct sockaddr *addr,
                  socklen_t len);
void loop_shutdown(struct loop *l, struct loop_conn *lc, int how);
/* Cancels the connection's receive (or send); its handler still runs. */
void loop_cancel_recv(struct loop *l, struct loop_conn *lc);
void loop_cancel_send(struct loop *l, struct loop_conn *lc);
void loop_cancel_connect(struct loop *l, struct loop_conn *lc);
void loop_close(struct loop *l, struct loop_conn *lc);
/* Closes a descriptor no request of the ring refers to any more (one
 * that never became a connection, or a connection's last request): no
 * handler runs, so whatever owned it may be freed at once. */
void loop_close_fd(struct loop *l, int fd);

/* A request of the loop's user that belongs to no connection (an engine's
 * client socket): an ordinary descriptor, a buffer of the caller's own
 * (no provided buffer), one request per loop_req at a time.  Its
 * completion calls done with the result (bytes, 0, or -errno); the
 * loop_req must live until then.  Connections' completions do not pay
 * for these: they come through the loop's own tag. */
struct loop_req {
    void (*done)(struct loop_req *r, int res);
};
void loop_req_connect(struct loop *l, struct loop_req *r, int fd, const struct sockaddr *addr,
                      socklen_t len);
void loop_req_recv(struct loop *l, struct loop_req *r, int fd, void *buf, size_t n);
void loop_req_send(struct loop *l, struct loop_req *r, int fd, const void *buf, size_t n);
/* Completes with -ETIME once *ts (which must live until then) has passed:
 * a reconnect's backoff. */
void loop_req_timeout(struct loop *l, struct loop_req *r, struct __kernel_timespec *ts);

#endif
