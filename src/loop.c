/* loop.c - one thread's io_uring ring: set-up with feature probing and
 * fallbacks, the submission helpers, the provided receive buffers, and the
 * completion loop that calls up through the user's handlers (loop.h).
 *
 * Why it exists: every io_uring detail of ringws lives here, so that the
 * layers above deal in "arm a receive", "send these bytes", "close" and
 * never see an SQE, a CQE flag or a buffer id.  One ring per thread,
 * created and used only by that thread (SINGLE_ISSUER). */
#include "loop.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bufring.h"
#include "log.h"

#define BUF_GROUP 0

/* user_data: a pointer (8-byte aligned) with the operation in the low
 * bits.  The loop's own requests (accept, wake, tick) carry the loop, and
 * so do its user's loop_req requests, told apart by their address (not
 * inside the loop). */
enum ud_op {
    UD_IGNORE = 0,
    UD_LOOP,      /* the accept, the wake read or the tick, told apart by
                   * the pointer (a field of the loop) */
    UD_RECV,      /* multishot */
    UD_RECV_ONCE, /* single: the kernel refused multishot */
    UD_SEND,
    UD_SHUTDOWN,
    UD_CLOSE,
    UD_CONNECT,
};
#define UD_OP_MASK 7u

/* A listening socket and its accept request; the completion's user_data
 * points at it. */
struct loop_listener {
    int fd;
    unsigned index;        /* told to the accepted handler */
    bool armed;
    bool multishot;
    bool want_peer;
    struct sockaddr_storage peer; /* filled by the accept with want_peer */
    socklen_t peer_len;
};

struct loop {
    struct io_uring ring;
    struct bufring bufs;
    const struct loop_handlers *h;
    void *ctx;
    const char *name;
    unsigned id;
    bool direct;
    bool listening;
    bool fault_multishot;
    /* Requests whose success nobody waits for (cancels, closes of
     * descriptors nothing refers to any more) post no completion then. */
    bool skip_success;
    unsigned fault_turns;
    struct loop_listener lis[LOOP_MAX_LISTENERS];
    unsigned n_lis;
    int wake_fd;
    uint64_t wake_val;
    unsigned tick_ms;
    struct __kernel_timespec tick_ts;
    /* Receive buffer pages given back when traffic falls (loop_trim_bufs). */
    uint64_t rx_period;  /* bytes received since the last check */
    unsigned trim_ms;    /* since the last check */
    bool trimmed;        /* nothing received since the pages went back */
    bool trim_due;       /* at the end of this batch of completions */
};

/* How often the loop asks whether its receive buffers' pages can go back. */
#define LOOP_TRIM_MS 1000

static uint64_t ud_make(const void *p, enum ud_op op)
{
    return (uint64_t)(uintptr_t)p | op;
}

/* What the kernel refuses, learnt while serving by the first loop whose
 * request is refused and then used by all: every thread reads and may write
 * these at any time, hence atomics (relaxed: nothing else is published with
 * them).  A request armed before the news came is refused in turn and falls
 * back by itself (loop_on_accept, loop_on_recv). */
static struct {
    atomic_bool multishot_accept;
    atomic_bool multishot_recv;
} loop_features = {true, true};

static bool loop_feature_on(atomic_bool *feature)
{
    return atomic_load_explicit(feature, memory_order_relaxed);
}

/* Turns a feature off; true for the one caller that turned it off. */
static bool loop_feature_drop(atomic_bool *feature)
{
    return atomic_exchange_explicit(feature, false, memory_order_relaxed);
}

static struct io_uring_sqe *loop_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

    while (!sqe) {
        /* The SQ is full: hand what is queued to the kernel and retry. */
        io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

/* An SQE for one of a connection's requests, tagged and aimed at its
 * descriptor. */
static struct io_uring_sqe *loop_conn_sqe(struct loop *l, struct io_uring_sqe *sqe,
                                          struct loop_conn *lc, enum ud_op op)
{
    if (l->direct)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ud_make(lc, op));
    return sqe;
}

bool loop_direct(const struct loop *l)
{
    return l->direct;
}

int loop_fd_install(struct loop *l, unsigned slot, int fd)
{
    int ret = io_uring_register_files_update(&l->ring, slot, &fd, 1);

    return ret < 0 ? ret : 0;
}

/* liburing 2.3 stores file_index + 1 in the SQE, so the "allocate a slot"
 * value must be passed minus one (its multishot helper does the same). */
#define LOOP_ACCEPT_ALLOC_SLOT (IORING_FILE_INDEX_ALLOC - 1)
/* Not an accept4 flag: the kernel refuses it (RINGWS_TEST_FAULT=multishot). */
#define LOOP_FAULT_ACCEPT_FLAG 1u

static void loop_arm_accept(struct loop *l, struct loop_listener *li)
{
    struct io_uring_sqe *sqe = loop_sqe(l);
    struct sockaddr *peer = li->want_peer ? (struct sockaddr *)&li->peer : NULL;
    socklen_t *peer_len = li->want_peer ? &li->peer_len : NULL;

    li->multishot = !li->want_peer && loop_feature_on(&loop_features.multishot_accept);
    li->peer_len = sizeof(li->peer);
    if (li->multishot) {
        if (l->direct)
            io_uring_prep_multishot_accept_direct(sqe, li->fd, NULL, NULL, 0);
        else
            io_uring_prep_multishot_accept(sqe, li->fd, NULL, NULL, SOCK_CLOEXEC);
        if (l->fault_multishot)
            sqe->accept_flags |= LOOP_FAULT_ACCEPT_FLAG;
    } else if (l->direct) {
        io_uring_prep_accept_direct(sqe, li->fd, peer, peer_len, 0, LOOP_ACCEPT_ALLOC_SLOT);
    } else {
        io_uring_prep_accept(sqe, li->fd, peer, peer_len, SOCK_CLOEXEC);
    }
    io_uring_sqe_set_data64(sqe, ud_make(li, UD_LOOP));
    li->armed = true;
}

/* Re-arms what a refusal or a full table left unarmed. */
static void loop_rearm_accepts(struct loop *l)
{
    for (unsigned i = 0; l->listening && i < l->n_lis; i++)
        if (!l->lis[i].armed)
            loop_arm_accept(l, &l->lis[i]);
}

int loop_listen(struct loop *l, int fd, bool want_peer)
{
    struct loop_listener *li;

    if (l->n_lis == LOOP_MAX_LISTENERS)
        return -ENOSPC;
    li = &l->lis[l->n_lis];
    li->fd = fd;
    li->index = l->n_lis++;
    li->want_peer = want_peer;
    l->listening = true;
    loop_arm_accept(l, li);
    return (int)li->index;
}

void loop_unlisten(struct loop *l)
{
    l->listening = false;
    for (unsigned i = 0; i < l->n_lis; i++) {
        if (l->lis[i].armed) {
            struct io_uring_sqe *sqe = loop_sqe(l);
            io_uring_prep_cancel64(sqe, ud_make(&l->lis[i], UD_LOOP), 0);
            io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_IGNORE));
        }
        /* An open listener stays in its SO_REUSEPORT group: the kernel would
         * go on completing handshakes into a queue nobody accepts from, and
         * a process started on the same port to take over would get only
         * its share of new clients until this one exits.  Shut, it leaves
         * the group at once; what was already queued is reset. */
        if (shutdown(l->lis[i].fd, SHUT_RD) < 0)
            log_msg(LOG_LEVEL_WARN, "%s %u: shutting listener %u: %s", l->name, l->id, i,
                    strerror(errno));
    }
}

void loop_recv(struct loop *l, struct loop_conn *lc)
{
    struct io_uring_sqe *sqe = loop_sqe(l);
    enum ud_op op = UD_RECV;

    if (loop_feature_on(&loop_features.multishot_recv)) {
        io_uring_prep_recv_multishot(sqe, lc->fd, NULL, 0, l->fault_multishot ? MSG_WAITALL : 0);
    } else {
        io_uring_prep_recv(sqe, lc->fd, NULL, 0, 0);
        op = UD_RECV_ONCE;
    }
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    loop_conn_sqe(l, sqe, lc, op);
}

static void loop_prep_send(struct loop *l, struct loop_conn *lc, const void *p, size_t n,
                           int flags)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_send(sqe, lc->fd, p, n, flags);
    loop_conn_sqe(l, sqe, lc, UD_SEND);
}

static void loop_prep_sendmsg(struct loop *l, struct loop_conn *lc, struct msghdr *m, int flags)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_sendmsg(sqe, lc->fd, m, flags);
    loop_conn_sqe(l, sqe, lc, UD_SEND);
}

void loop_send(struct loop *l, struct loop_conn *lc, const void *p, size_t n)
{
    loop_prep_send(l, lc, p, n, MSG_NOSIGNAL);
}

void loop_sendmsg(struct loop *l, struct loop_conn *lc, struct msghdr *m)
{
    loop_prep_sendmsg(l, lc, m, MSG_NOSIGNAL);
}

void loop_send_more(struct loop *l, struct loop_conn *lc, const void *p, size_t n)
{
    loop_prep_send(l, lc, p, n, MSG_NOSIGNAL | MSG_MORE);
}

void loop_sendmsg_more(struct loop *l, struct loop_conn *lc, struct msghdr *m)
{
    loop_prep_sendmsg(l, lc, m, MSG_NOSIGNAL | MSG_MORE);
}

void loop_connect(struct loop *l, struct loop_conn *lc, const struct sockaddr *addr,
                  socklen_t len)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_connect(sqe, lc->fd, addr, len);
    loop_conn_sqe(l, sqe, lc, UD_CONNECT);
}

void loop_shutdown(struct loop *l, struct loop_conn *lc, int how)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_shutdown(sqe, lc->fd, how);
    loop_conn_sqe(l, sqe, lc, UD_SHUTDOWN);
}

/* A request whose result nobody reads: where the kernel can, it posts a
 * completion only for a failure (which UD_IGNORE drops as well), one
 * completion less to post and to reap per cancel or close. */
static void loop_untracked(struct loop *l, struct io_uring_sqe *sqe)
{
    io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_IGNORE));
    if (l->skip_success)
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* Cancels one of the connection's requests by its user_data: the kernel
 * finds it by hash, where cancelling by descriptor would scan every armed
 * request of the ring and make a mass close quadratic. */
static void loop_cancel_op(struct loop *l, struct loop_conn *lc, enum ud_op op)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_cancel64(sqe, ud_make(lc, op), 0);
    loop_untracked(l, sqe);
}

void loop_cancel_recv(struct loop *l, struct loop_conn *lc)
{
    loop_cancel_op(l, lc, UD_RECV);
    /* Once multishot was refused, the receive may be either kind. */
    if (!loop_feature_on(&loop_features.multishot_recv))
        loop_cancel_op(l, lc, UD_RECV_ONCE);
}

/* A send to a peer that stopped reading would wait forever. */
void loop_cancel_send(struct loop *l, struct loop_conn *lc)
{
    loop_cancel_op(l, lc, UD_SEND);
}

void loop_cancel_connect(struct loop *l, struct loop_conn *lc)
{
    loop_cancel_op(l, lc, UD_CONNECT);
}

static void loop_prep_close(struct loop *l, struct io_uring_sqe *sqe, int fd)
{
    if (l->direct)
        io_uring_prep_close_direct(sqe, (unsigned)fd);
    else
        io_uring_prep_close(sqe, fd);
}

void loop_close(struct loop *l, struct loop_conn *lc)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    loop_prep_close(l, sqe, lc->fd);
    io_uring_sqe_set_data64(sqe, ud_make(lc, UD_CLOSE));
}

/* Tags a prepared request of the user's: its completion comes back through
 * loop_on_loop. */
static void loop_req_tag(struct io_uring_sqe *sqe, struct loop_req *r)
{
    io_uring_sqe_set_data64(sqe, ud_make(r, UD_LOOP));
}

void loop_req_connect(struct loop *l, struct loop_req *r, int fd, const struct sockaddr *addr,
                      socklen_t len)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_connect(sqe, fd, addr, len);
    loop_req_tag(sqe, r);
}

void loop_req_recv(struct loop *l, struct loop_req *r, int fd, void *buf, size_t n)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_recv(sqe, fd, buf, n, 0);
    loop_req_tag(sqe, r);
}

void loop_req_send(struct loop *l, struct loop_req *r, int fd, const void *buf, size_t n)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_send(sqe, fd, buf, n, MSG_NOSIGNAL);
    loop_req_tag(sqe, r);
}

void loop_req_timeout(struct loop *l, struct loop_req *r, struct __kernel_timespec *ts)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_timeout(sqe, ts, 0, 0);
    loop_req_tag(sqe, r);
}

void loop_close_fd(struct loop *l, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    loop_prep_close(l, sqe, fd);
    loop_untracked(l, sqe);
}

static void loop_arm_wake(struct loop *l)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_read(sqe, l->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ud_make(&l->wake_val, UD_LOOP));
}

static void loop_arm_tick(struct loop *l)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    l->tick_ts.tv_sec = l->tick_ms / 1000;
    l->tick_ts.tv_nsec = (long long)(l->tick_ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &l->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(&l->tick_ts, UD_LOOP));
}

/* ---- setup ------------------------------------------------------------- */

/* liburing maps a ring's queues with raw system calls, which
 * ThreadSanitizer does not see: a ring mapped where another thread's freed
 * ring was looks to it like memory two threads wrote without order.  A
 * lock around setting rings up and tearing them down gives that order
 * (rings are made and ended once per worker, never on a hot path). */
static pthread_mutex_t loop_rings_lock = PTHREAD_MUTEX_INITIALIZER;

static int loop_ring_map(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    int ret;

    pthread_mutex_lock(&loop_rings_lock);
    ret = io_uring_queue_init_params(entries, ring, p);
    pthread_mutex_unlock(&loop_rings_lock);
    return ret;
}

static void loop_ring_unmap(struct io_uring *ring)
{
    pthread_mutex_lock(&loop_rings_lock);
    io_uring_queue_exit(ring);
    pthread_mutex_unlock(&loop_rings_lock);
}

static int loop_ring_init(struct loop *l, const struct loop_config *cfg, const char **mode)
{
    static const struct {
        unsigned flags;
        const char *name;
    } tries[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
         "SINGLE_ISSUER|DEFER_TASKRUN"},
        {IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},
        {0, "plain"},
    };
    struct io_uring_params p;
    int ret = -EINVAL;

    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i].flags | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = cfg->cq_entries;
        ret = loop_ring_map(cfg->sq_entries, &l->ring, &p);
        if (ret == 0) {
            *mode = tries[i].name;
            l->skip_success = p.features & IORING_FEAT_CQE_SKIP;
            return 0;
        }
    }
    return ret;
}

static int loop_probe(struct loop *l, bool *send_zc)
{
    static const int needed[] = {
        IORING_OP_ACCEPT, IORING_OP_RECV,     IORING_OP_SEND,
        IORING_OP_SENDMSG, IORING_OP_SHUTDOWN, IORING_OP_CLOSE,
        IORING_OP_TIMEOUT, IORING_OP_READ,     IORING_OP_ASYNC_CANCEL,
        IORING_OP_CONNECT,
    };
    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);

    if (!probe)
        return -ENOTSUP;
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed[i])) {
            log_msg(LOG_LEVEL_ERROR, "io_uring lacks opcode %d", needed[i]);
            io_uring_free_probe(probe);
            return -ENOTSUP;
        }
    }
    *send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
    io_uring_free_probe(probe);
    return 0;
}

static int loop_setup(struct loop *l, const struct loop_config *cfg)
{
    const char *mode = "";
    bool send_zc = false;
    int ret;

    ret = loop_ring_init(l, cfg, &mode);
    if (ret < 0) {
        log_msg(LOG_LEVEL_ERROR, "%s %u: io_uring_queue_init: %s", cfg->name, cfg->id, strerror(-ret));
        return ret;
    }
    ret = loop_probe(l, &send_zc);
    if (ret < 0) {
        loop_ring_unmap(&l->ring);
        return ret;
    }
    io_uring_register_ring_fd(&l->ring); /* an optimisation: failure is fine */
    l->direct = cfg->direct_slots &&
                io_uring_register_files_sparse(&l->ring, cfg->direct_slots) == 0;
    ret = bufring_create(&l->bufs, &l->ring, BUF_GROUP, cfg->buf_count, cfg->buf_size,
                         cfg->buf_incremental);
    if (ret < 0) {
        log_msg(LOG_LEVEL_ERROR, "%s %u: provided buffer ring: %s", cfg->name, cfg->id, strerror(-ret));
        loop_ring_unmap(&l->ring);
        return ret;
    }
    if (cfg->log_setup)
        log_msg(LOG_LEVEL_INFO,
                "io_uring: %s, %s, %u x %u B provided receive buffers per ring%s%s",
                mode, l->direct ? "direct descriptors" : "regular descriptors",
                cfg->buf_count, cfg->buf_size, l->bufs.used ? " (incremental)" : "",
                send_zc ? ", SEND_ZC available" : "");
    if (cfg->direct_slots && !l->direct)
        log_msg(LOG_LEVEL_WARN, "%s %u: no sparse file table; using regular descriptors", cfg->name,
                cfg->id);
    return 0;
}

int loop_create(struct loop **out, const struct loop_config *cfg,
                const struct loop_handlers *h, void *ctx)
{
    struct loop *l = calloc(1, sizeof(*l));
    int ret;

    *out = NULL;
    if (!l)
        return -ENOMEM;
    ret = loop_setup(l, cfg);
    if (ret < 0) {
        free(l);
        return ret;
    }
    l->h = h;
    l->ctx = ctx;
    l->name = cfg->name;
    l->id = cfg->id;
    l->fault_turns = cfg->fault_turns;
    l->fault_multishot = cfg->fault_multishot;
    l->wake_fd = cfg->wake_fd;
    l->tick_ms = cfg->tick_ms;
    if (l->wake_fd >= 0)
        loop_arm_wake(l);
    if (l->tick_ms)
        loop_arm_tick(l);
    *out = l;
    return 0;
}

void loop_destroy(struct loop *l)
{
    if (!l)
        return;
    /* The closes the last batch queued (their owners are freed already)
     * still run: regular descriptors are not the ring's to release. */
    io_uring_submit(&l->ring);
    loop_ring_unmap(&l->ring);
    bufring_destroy(&l->bufs);
    free(l);
}

/* ---- completions ------------------------------------------------------- */

static void loop_on_accept(struct loop *l, struct loop_listener *li,
                           const struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        li->armed = false;
    if (cqe->res >= 0) {
        if (!l->listening)
            loop_close_fd(l, cqe->res);
        else
            l->h->accepted(l->ctx, li->index, cqe->res,
                           li->want_peer ? (struct sockaddr *)&li->peer : NULL, li->peer_len);
    } else if (!l->listening) {
        return; /* the cancel or the listener's shutdown ended it */
    } else if (cqe->res == -EINVAL && li->multishot) {
        if (loop_feature_drop(&loop_features.multishot_accept))
            log_msg(LOG_LEVEL_WARN, "multishot accept refused; falling back to single accepts");
    } else if (cqe->res != -ECANCELED) {
        /* -ENFILE/-EMFILE (tables full) and the like: the next tick re-arms,
         * after connections have had a chance to go away. */
        log_msg(LOG_LEVEL_DEBUG, "%s %u: accept: %s", l->name, l->id, strerror(-cqe->res));
        return;
    }
    if (!li->armed && l->listening)
        loop_arm_accept(l, li);
}

/* Decodes a receive completion for the handler: the bytes of the buffer
 * the kernel picked, and whether the request is over.  The buffer goes back
 * once the handler is done with it. */
static void loop_on_recv(struct loop *l, struct loop_conn *lc, const struct io_uring_cqe *cqe,
                         bool multishot)
{
    bool ended = !(cqe->flags & IORING_CQE_F_MORE);
    uint16_t bid;
    uint8_t *p;

    if (cqe->res == -EINVAL && multishot) {
        if (loop_feature_drop(&loop_features.multishot_recv))
            log_msg(LOG_LEVEL_WARN, "multishot recv refused; falling back to single receives");
        loop_recv(l, lc);
        return;
    }
    if (cqe->res == -ENOBUFS && bufring_grow(&l->bufs))
        log_msg(LOG_LEVEL_DEBUG, "%s %u: %u receive buffers posted", l->name, l->id,
                l->bufs.posted);
    if (cqe->res <= 0) {
        l->h->received(l->ctx, lc, NULL, cqe->res, ended);
        return;
    }
    bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    l->rx_period += (unsigned)cqe->res;
    p = bufring_take(&l->bufs, bid, (uint32_t)cqe->res);
    l->h->received(l->ctx, lc, p, cqe->res, ended);
    bufring_release(&l->bufs, bid, cqe->flags);
}

/* Once a second: when less came in over it than half of what the posted
 * buffers hold, the pages they took (as many as the largest burst, which
 * grew the ring) go back to the kernel, once, until something is received
 * again.  A quiet server keeps no receive memory for its idle connections;
 * a busy one, whose buffers are reused within the second, keeps them.  Not
 * here but once the batch is handled (loop_turn): a later completion of
 * this batch may still have bytes in a buffer. */
static void loop_trim_check(struct loop *l)
{
    l->trim_ms += l->tick_ms;
    if (l->trim_ms < LOOP_TRIM_MS)
        return;
    l->trim_ms = 0;
    if (l->rx_period)
        l->trimmed = false;
    if (!l->trimmed && l->rx_period * 2 < (uint64_t)l->bufs.posted * l->bufs.size)
        l->trim_due = true;
    l->rx_period = 0;
}

static void loop_on_loop(struct loop *l, const struct io_uring_cqe *cqe, const void *p)
{
    if ((const char *)p < (const char *)l || (const char *)p >= (const char *)(l + 1)) {
        struct loop_req *r = (struct loop_req *)p;
        r->done(r, cqe->res);
        return;
    }
    if ((const char *)p >= (const char *)l->lis &&
        (const char *)p < (const char *)(l->lis + LOOP_MAX_LISTENERS)) {
        loop_on_accept(l, (struct loop_listener *)p, cqe);
        return;
    }
    if (p == &l->wake_val) {
        l->h->woken(l->ctx);
        /* Kept armed to the end: replies to waiting publishes still come
         * while the server stops. */
        loop_arm_wake(l);
        return;
    }
    l->h->ticked(l->ctx);
    loop_trim_check(l);
    loop_rearm_accepts(l);
    loop_arm_tick(l);
}

static void loop_dispatch(struct loop *l, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    void *p = (void *)(uintptr_t)(ud & ~(uint64_t)UD_OP_MASK);

    switch ((enum ud_op)(ud & UD_OP_MASK)) {
    case UD_IGNORE:
        break;
    case UD_RECV:
        loop_on_recv(l, p, cqe, true);
        break;
    case UD_RECV_ONCE:
        loop_on_recv(l, p, cqe, false);
        break;
    case UD_SEND:
        l->h->sent(l->ctx, p, cqe->res);
        break;
    case UD_SHUTDOWN:
        l->h->shut(p, cqe->res);
        break;
    case UD_CLOSE:
        l->h->closed(p, cqe->res);
        break;
    case UD_CONNECT:
        l->h->connected(p, cqe->res);
        break;
    case UD_LOOP:
        loop_on_loop(l, cqe, p);
        break;
    }
}

static int loop_submit_and_wait(struct loop *l, long long wait_ns)
{
    struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000,
                                   .tv_nsec = wait_ns % 1000000000};
    struct io_uring_cqe *cqe;
    int ret = wait_ns < 0 ? io_uring_submit_and_wait(&l->ring, 1)
                          : io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);

    if (l->fault_turns && --l->fault_turns == 0)
        return -EIO;
    return ret;
}

int loop_turn(struct loop *l, long long wait_ns)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int ret;

    if (l->h->before_wait)
        l->h->before_wait(l->ctx);
    if (l->h->work_left && l->h->work_left(l->ctx))
        wait_ns = 0;
    ret = loop_submit_and_wait(l, wait_ns);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
        log_msg(LOG_LEVEL_ERROR, "%s %u: io_uring_submit_and_wait: %s", l->name, l->id, strerror(-ret));
        return ret;
    }
    if (l->h->after_wait)
        l->h->after_wait(l->ctx);
    io_uring_for_each_cqe(&l->ring, head, cqe) {
        loop_dispatch(l, cqe);
        seen++;
    }
    io_uring_cq_advance(&l->ring, seen);
    if (l->trim_due) {
        /* Every completion seen was handled and its bytes consumed. */
        bufring_trim(&l->bufs);
        l->trim_due = false;
        l->trimmed = true;
    }
    return 0;
}
