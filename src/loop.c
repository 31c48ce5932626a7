/* loop.c - one worker's io_uring ring: setup with feature probing, the
 * submission helpers the connection layer uses, and the completion loop.
 *
 * Why it exists: every io_uring detail of ringws lives here, so that the
 * connection state machine deals in "arm a receive", "send these bytes",
 * "close" and never sees an SQE.  One ring per worker thread, created and
 * used only by that thread (SINGLE_ISSUER). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

#define RING_ENTRIES 4096u
#define RING_CQ_ENTRIES 16384u
#define BUF_GROUP 0
#define LOOP_REAP_MS 1000u

/* user_data: a pointer (8-byte aligned) with the operation in the low bits. */
enum ud_op {
    UD_IGNORE = 0,
    UD_ACCEPT,
    UD_RECV,
    UD_SEND,
    UD_SHUTDOWN,
    UD_CLOSE,
    UD_WAKE,
    UD_TICK,
};
#define UD_OP_MASK 7u

static uint64_t ud_make(const void *p, enum ud_op op)
{
    return (uint64_t)(uintptr_t)p | op;
}

/* What the kernel refuses, learnt while serving by the first worker whose
 * request is refused and then used by all: every worker reads and may write
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

static struct io_uring_sqe *loop_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

    while (!sqe) {
        /* The SQ is full: hand what is queued to the kernel and retry. */
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

static void loop_use_conn_fd(struct worker *w, struct io_uring_sqe *sqe)
{
    if (w->direct)
        sqe->flags |= IOSQE_FIXED_FILE;
}

uint64_t loop_tick(const struct worker *w)
{
    return w->wheel.now;
}

/* liburing 2.3 stores file_index + 1 in the SQE, so the "allocate a slot"
 * value must be passed minus one (its multishot helper does the same). */
#define LOOP_ACCEPT_ALLOC_SLOT (IORING_FILE_INDEX_ALLOC - 1)
/* Not an accept4 flag: the kernel refuses it (RINGWS_TEST_FAULT=multishot). */
#define LOOP_FAULT_ACCEPT_FLAG 1u

static void loop_arm_accept(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    w->accept_multishot = false;
    if (w->srv->peer_addrs) {
        /* Counting per source address, or telling loopback peers from
         * others where the listener sees both (see server.c), needs each
         * peer's address, which a multishot accept cannot report: one
         * accept at a time, then. */
        w->peer_len = sizeof(w->peer);
        if (w->direct)
            io_uring_prep_accept_direct(sqe, w->listen_fd, (struct sockaddr *)&w->peer,
                                        &w->peer_len, 0, LOOP_ACCEPT_ALLOC_SLOT);
        else
            io_uring_prep_accept(sqe, w->listen_fd, (struct sockaddr *)&w->peer,
                                 &w->peer_len, SOCK_CLOEXEC);
    } else if (loop_feature_on(&loop_features.multishot_accept)) {
        w->accept_multishot = true;
        if (w->direct)
            io_uring_prep_multishot_accept_direct(sqe, w->listen_fd, NULL, NULL, 0);
        else
            io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (w->fault_multishot)
            sqe->accept_flags |= LOOP_FAULT_ACCEPT_FLAG;
    } else if (w->direct) {
        io_uring_prep_accept_direct(sqe, w->listen_fd, NULL, NULL, 0, LOOP_ACCEPT_ALLOC_SLOT);
    } else {
        io_uring_prep_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    }
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_ACCEPT));
    w->accept_armed = true;
}

void loop_arm_recv(struct worker *w, struct ringws_conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    if (loop_feature_on(&loop_features.multishot_recv)) {
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, w->fault_multishot ? MSG_WAITALL : 0);
        c->flags &= ~CF_RECV_SINGLE;
    } else {
        io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
        c->flags |= CF_RECV_SINGLE;
    }
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    loop_use_conn_fd(w, sqe);
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_RECV));
    c->flags |= CF_RECV_ARMED;
}

void loop_send(struct worker *w, struct ringws_conn *c, const void *p, size_t n)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
    loop_use_conn_fd(w, sqe);
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_SEND));
    c->flags |= CF_SEND_BUSY;
}

void loop_sendmsg(struct worker *w, struct ringws_conn *c, struct msghdr *m)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    io_uring_prep_sendmsg(sqe, c->fd, m, MSG_NOSIGNAL);
    loop_use_conn_fd(w, sqe);
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_SEND));
    c->flags |= CF_SEND_BUSY;
}

void loop_shutdown(struct worker *w, struct ringws_conn *c, int how)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    io_uring_prep_shutdown(sqe, c->fd, how);
    loop_use_conn_fd(w, sqe);
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_SHUTDOWN));
    c->flags |= CF_SHUT_BUSY;
}

/* Cancels one of the connection's requests by its user_data: the kernel
 * finds it by hash, where cancelling by descriptor would scan every armed
 * request of the ring and make a mass close quadratic. */
static void loop_cancel_op(struct worker *w, struct ringws_conn *c, enum ud_op op)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    io_uring_prep_cancel64(sqe, ud_make(c, op), 0);
    io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_IGNORE));
}

void loop_cancel_recv(struct worker *w, struct ringws_conn *c)
{
    loop_cancel_op(w, c, UD_RECV);
}

/* A send to a peer that stopped reading would wait forever. */
void loop_cancel_send(struct worker *w, struct ringws_conn *c)
{
    loop_cancel_op(w, c, UD_SEND);
}

static void loop_prep_close(struct worker *w, struct io_uring_sqe *sqe, int fd)
{
    if (w->direct)
        io_uring_prep_close_direct(sqe, (unsigned)fd);
    else
        io_uring_prep_close(sqe, fd);
}

void loop_close(struct worker *w, struct ringws_conn *c)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    loop_prep_close(w, sqe, c->fd);
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_CLOSE));
    c->flags |= CF_CLOSE_BUSY;
}

/* Closes a descriptor that never became a connection (refused at once). */
void loop_close_fd(struct worker *w, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    loop_prep_close(w, sqe, fd);
    io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_IGNORE));
}

static void loop_arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_WAKE));
}

static void loop_arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = loop_sqe(w);

    w->tick_ts.tv_sec = 0;
    w->tick_ts.tv_nsec = (long long)TIMER_TICK_MS * 1000000;
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_TICK));
}

void loop_wake(struct worker *w)
{
    uint64_t one = 1;

    /* Async-signal-safe; a full counter still wakes the reader. */
    if (write(w->wake_fd, &one, sizeof(one)) < 0)
        return;
}

/* ---- setup ------------------------------------------------------------- */

static int loop_ring_init(struct worker *w, const char **mode)
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
        p.cq_entries = RING_CQ_ENTRIES;
        ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
        if (ret == 0) {
            *mode = tries[i].name;
            return 0;
        }
    }
    return ret;
}

static int loop_probe(struct worker *w, bool *send_zc)
{
    static const int needed[] = {
        IORING_OP_ACCEPT, IORING_OP_RECV,     IORING_OP_SEND,
        IORING_OP_SENDMSG, IORING_OP_SHUTDOWN, IORING_OP_CLOSE,
        IORING_OP_TIMEOUT, IORING_OP_READ,     IORING_OP_ASYNC_CANCEL,
    };
    struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);

    if (!probe)
        return -ENOTSUP;
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed[i])) {
            log_msg(LOG_ERROR, "io_uring lacks opcode %d", needed[i]);
            io_uring_free_probe(probe);
            return -ENOTSUP;
        }
    }
    *send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
    io_uring_free_probe(probe);
    return 0;
}

/* Direct descriptors keep connections out of the process's descriptor
 * table, whose limit (RLIMIT_NOFILE) would otherwise cap all workers
 * together; the table is sparse and bounded per ring by the same limit. */
static unsigned loop_direct_slots(const struct ringws_server *srv)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)srv->cfg.max_connections + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
        want = rl.rlim_cur;
    return (unsigned)want;
}

static int loop_setup(struct worker *w)
{
    const char *mode = "";
    bool send_zc = false;
    unsigned slots;
    int ret;

    ret = loop_ring_init(w, &mode);
    if (ret < 0) {
        log_msg(LOG_ERROR, "worker %u: io_uring_queue_init: %s", w->id, strerror(-ret));
        return ret;
    }
    ret = loop_probe(w, &send_zc);
    if (ret < 0)
        return ret;
    io_uring_register_ring_fd(&w->ring); /* an optimisation: failure is fine */

    slots = loop_direct_slots(w->srv);
    w->direct = io_uring_register_files_sparse(&w->ring, slots) == 0;

    ret = bufring_create(&w->bufs, &w->ring, BUF_GROUP, w->srv->recv_buf_count,
                         w->srv->recv_buf_size, !w->srv->recv_buf_plain);
    if (ret < 0) {
        log_msg(LOG_ERROR, "worker %u: provided buffer ring: %s", w->id, strerror(-ret));
        return ret;
    }
    if (w->id == 0)
        log_msg(LOG_INFO,
                "io_uring: %s, %s, %u x %u B provided receive buffers per worker%s%s",
                mode, w->direct ? "direct descriptors" : "regular descriptors",
                w->srv->recv_buf_count, w->srv->recv_buf_size,
                w->bufs.used ? " (incremental)" : "", send_zc ? ", SEND_ZC available" : "");
    if (!w->direct)
        log_msg(LOG_WARN, "worker %u: no sparse file table; using regular descriptors", w->id);
    return 0;
}

/* ---- completions ------------------------------------------------------- */

static void loop_on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        w->accept_armed = false;
    if (cqe->res >= 0) {
        if (w->stopping)
            loop_close_fd(w, cqe->res);
        else
            conn_accepted(w, cqe->res, w->srv->peer_addrs ? (struct sockaddr *)&w->peer : NULL,
                          w->peer_len);
        if (!w->accept_armed && !w->stopping)
            loop_arm_accept(w);
        return;
    }
    if (cqe->res == -EINVAL && w->accept_multishot) {
        if (loop_feature_drop(&loop_features.multishot_accept))
            log_msg(LOG_WARN, "multishot accept refused; falling back to single accepts");
    } else if (cqe->res != -ECANCELED) {
        /* -ENFILE/-EMFILE (tables full) and the like: the next tick re-arms,
         * after connections have had a chance to go away. */
        log_msg(LOG_DEBUG, "worker %u: accept: %s", w->id, strerror(-cqe->res));
        return;
    }
    if (!w->accept_armed && !w->stopping)
        loop_arm_accept(w);
}

static void loop_on_recv(struct ringws_conn *c, struct io_uring_cqe *cqe)
{
    if (cqe->res == -EINVAL && !(c->flags & CF_RECV_SINGLE)) {
        if (loop_feature_drop(&loop_features.multishot_recv))
            log_msg(LOG_WARN, "multishot recv refused; falling back to single receives");
        c->flags &= ~CF_RECV_ARMED;
        loop_arm_recv(c->w, c);
        return;
    }
    conn_on_recv(c, cqe->res, cqe->flags);
}

static void loop_on_wake(struct worker *w, int res)
{
    pubsub_inbox_drain(w);
    if (atomic_load(&w->srv->stop_requested) && !w->stopping) {
        w->stopping = true;
        w->stop_deadline_ms = timer_now_ms() + w->srv->cfg.close_timeout_ms + 500;
        if (w->accept_armed) {
            struct io_uring_sqe *sqe = loop_sqe(w);
            io_uring_prep_cancel64(sqe, ud_make(w, UD_ACCEPT), 0);
            io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_IGNORE));
        }
        conn_stop_all(w);
    }
    /* Kept armed while stopping: replies to waiting publishes still come. */
    loop_arm_wake(w);
}

static void loop_on_tick(struct worker *w)
{
    timer_wheel_expire(&w->wheel, timer_now_ms() / TIMER_TICK_MS, conn_on_timer);
    if (!w->accept_armed && !w->stopping)
        loop_arm_accept(w);
    loop_arm_tick(w);
}

static void loop_dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    void *p = (void *)(uintptr_t)(ud & ~(uint64_t)UD_OP_MASK);

    switch ((enum ud_op)(ud & UD_OP_MASK)) {
    case UD_IGNORE:
        break;
    case UD_ACCEPT:
        loop_on_accept(w, cqe);
        break;
    case UD_RECV:
        loop_on_recv(p, cqe);
        break;
    case UD_SEND:
        conn_on_send(p, cqe->res);
        break;
    case UD_SHUTDOWN:
        conn_on_shutdown(p, cqe->res);
        break;
    case UD_CLOSE:
        conn_on_close(p, cqe->res);
        break;
    case UD_WAKE:
        loop_on_wake(w, cqe->res);
        break;
    case UD_TICK:
        loop_on_tick(w);
        break;
    }
}

/* Tests only: RINGWS_TEST_FAULT, read once per worker at start, injects a
 * fault into worker 0 so that a test can watch what the server does with it:
 *   ring:N     its submission fails with -EIO after N loop turns (the loop
 *              pays one predictable branch per turn);
 *   multishot  its multishot accept and recv carry a flag the kernel refuses
 *              with -EINVAL, as a kernel without them would. */
static void loop_fault_init(struct worker *w)
{
    const char *env = getenv("RINGWS_TEST_FAULT");
    unsigned long n;
    char *end;

    if (w->id != 0 || !env)
        return;
    if (!strcmp(env, "multishot")) {
        w->fault_multishot = true;
    } else if (!strncmp(env, "ring:", 5)) {
        n = strtoul(env + 5, &end, 10);
        if (!*end && n <= UINT32_MAX)
            w->fault_turns = (unsigned)n;
    }
}

static int loop_submit_and_wait(struct worker *w)
{
    int ret = io_uring_submit_and_wait(&w->ring, 1);

    if (w->fault_turns && --w->fault_turns == 0)
        return -EIO;
    return ret;
}

static bool loop_done(struct worker *w)
{
    return w->stopping && (worker_conns(w) == 0 || timer_now_ms() >= w->stop_deadline_ms);
}

/* One turn: start what the connections have queued, submit, wait for a
 * completion and handle all there are.  0, or the -errno of a ring that
 * cannot go on. */
static int loop_turn(struct worker *w)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int ret;

    conn_flush_all(w);
    ret = loop_submit_and_wait(w);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
        log_msg(LOG_ERROR, "worker %u: io_uring_submit_and_wait: %s", w->id, strerror(-ret));
        return ret;
    }
    io_uring_for_each_cqe(&w->ring, head, cqe) {
        loop_dispatch(w, cqe);
        seen++;
    }
    io_uring_cq_advance(&w->ring, seen);
    return 0;
}

/* After conn_abort_all: turns until no connection has a request left in the
 * ring (each is cancelled, then its descriptor closed), so that nothing the
 * kernel still holds points at memory about to be freed.  Cancellations
 * complete at once; the bound only guards against a request that would
 * not. */
static int loop_reap(struct worker *w)
{
    uint64_t deadline = timer_now_ms() + LOOP_REAP_MS;
    int ret = 0;

    while (ret == 0 && conn_in_ring(w)) {
        if (timer_now_ms() >= deadline) {
            log_msg(LOG_WARN, "worker %u: requests still in flight after %u ms; "
                    "freed once the ring is gone", w->id, LOOP_REAP_MS);
            break;
        }
        ret = loop_turn(w);
    }
    return ret;
}

int loop_run(struct worker *w)
{
    int ret = loop_setup(w), fatal = 0;

    if (ret < 0)
        return ret;
    pubsub_thread_enter(w);
    timer_wheel_init(&w->wheel, timer_now_ms() / TIMER_TICK_MS);
    loop_fault_init(w);
    loop_arm_accept(w);
    loop_arm_wake(w);
    loop_arm_tick(w);
    /* A stop asked for before the ring existed has already written the
     * eventfd, so the armed read completes at once. */

    while (!fatal && !loop_done(w))
        fatal = loop_turn(w);
    conn_abort_all(w);
    if (!fatal)
        fatal = loop_reap(w);
    /* The ring goes first: closing it cancels whatever it still holds (all
     * of it after a ring failure, when nothing could be reaped), and only
     * then are the buffers, chunks and connections those requests point at
     * freed. */
    io_uring_queue_exit(&w->ring);
    bufring_destroy(&w->bufs);
    conn_free_all(w);
    pubsub_worker_fini(w);
    return fatal;
}
