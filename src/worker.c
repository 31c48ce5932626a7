/* worker.c - one worker thread: its loop, the handlers that loop calls, and
 * the worker's way from serving to stopping.
 *
 * Why it exists: the loop (loop.c) knows no connection and no server; this
 * file is its user, the way a Redis server is the user of ae.c.  It tells
 * the loop what the worker needs (ring sizes, receive buffers, the tick,
 * the wake descriptor), routes each completion to the connection layer,
 * and decides when the worker is done. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "engine.h"
#include "internal.h"
#include "log.h"
#include "tls.h"

#define WORKER_SQ_ENTRIES 4096u
#define WORKER_CQ_ENTRIES 16384u
#define WORKER_REAP_MS 1000u

void worker_wake(struct worker *w)
{
    uint64_t one = 1;

    /* Async-signal-safe; a full counter still wakes the reader. */
    if (write(w->wake_fd, &one, sizeof(one)) < 0)
        return;
}

uint32_t worker_random_below(struct worker *w, uint32_t bound)
{
    uint64_t x = w->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    /* The high half of the product: no modulo bias worth the name, no
     * division. */
    return (uint32_t)(((x * 0x2545F4914F6CDD1Dull) >> 32) * bound >> 32);
}

/* ---- the accept budget ---------------------------------------------------
 * A reconnect storm delivers thousands of accepts in one completion batch.
 * Each one taken arms a receive, and the handshakes that follow would then
 * fill the next batches ahead of the established connections' traffic.  A
 * worker therefore takes at most accepts_per_turn new connections per loop
 * turn; the others wait here, oldest first, for the next turns (which come
 * without waiting while any are left: worker_work_left).  Waiting ones count
 * as handshaking for max_handshakes (conn_http.c). */

#define WORKER_ACCEPT_Q_MIN 64u

static int worker_accept_grow(struct worker *w)
{
    unsigned cap = w->accept_cap ? w->accept_cap * 2 : WORKER_ACCEPT_Q_MIN;
    struct accept_wait *q;

    if (cap < w->accept_cap)
        return -ENOMEM;
    q = malloc(cap * sizeof(*q));
    if (!q)
        return -ENOMEM;
    for (unsigned i = 0; i < w->accept_n; i++)
        q[i] = w->accept_q[(w->accept_head + i) & (w->accept_cap - 1)];
    free(w->accept_q);
    w->accept_q = q;
    w->accept_cap = cap;
    w->accept_head = 0;
    return 0;
}

static bool worker_accept_defer(struct worker *w, unsigned listener, int fd,
                                const struct sockaddr *peer, socklen_t len)
{
    struct accept_wait *a;

    if (w->accept_n == w->accept_cap && worker_accept_grow(w) < 0)
        return false;
    a = &w->accept_q[(w->accept_head + w->accept_n++) & (w->accept_cap - 1)];
    a->fd = fd;
    a->listener = listener;
    a->peer_len = peer && len <= sizeof(a->peer) ? len : 0;
    if (a->peer_len)
        memcpy(&a->peer, peer, len);
    STAT_ADD(w, accepts_deferred, 1);
    return true;
}

/* Listener 0 is the server's port: TLS when the server has certificates,
 * behind a PROXY protocol header when configured so.  The plaintext
 * listener beside TLS is always direct. */
static void worker_accept_now(struct worker *w, unsigned listener, int fd,
                              const struct sockaddr *peer, socklen_t len)
{
    w->turn_accepts++;
    conn_accepted(w, listener == 0 && w->tp_sealed,
                  listener == 0 && w->srv->cfg.proxy_protocol, fd, peer, len);
}

/* A turn begins: a fresh budget, taken first by the oldest waiting. */
static void worker_accept_turn(struct worker *w)
{
    w->turn_accepts = 0;
    while (w->accept_n && w->turn_accepts < w->srv->cfg.accepts_per_turn) {
        struct accept_wait a = w->accept_q[w->accept_head];
        w->accept_head = (w->accept_head + 1) & (w->accept_cap - 1);
        w->accept_n--;
        worker_accept_now(w, a.listener, a.fd,
                          a.peer_len ? (const struct sockaddr *)&a.peer : NULL, a.peer_len);
    }
}

/* A stopping worker takes no one more: the waiting are closed unanswered,
 * as the listener's own queue is. */
static void worker_accept_drop(struct worker *w)
{
    for (; w->accept_n; w->accept_n--) {
        loop_close_fd(w->loop, w->accept_q[w->accept_head].fd);
        w->accept_head = (w->accept_head + 1) & (w->accept_cap - 1);
    }
}

static void worker_accepted(void *ctx, unsigned listener, int fd, const struct sockaddr *peer,
                            socklen_t len)
{
    struct worker *w = ctx;
    unsigned budget = w->srv->cfg.accepts_per_turn;

    if (!budget || (!w->accept_n && w->turn_accepts < budget)) {
        worker_accept_now(w, listener, fd, peer, len);
    } else if (!worker_accept_defer(w, listener, fd, peer, len)) {
        /* No memory to wait in: refused as over max_connections. */
        STAT_ADD(w, refused, 1);
        loop_close_fd(w->loop, fd);
    }
}

/* ---- the loop's handlers ------------------------------------------------ */

static void worker_before_wait(void *ctx)
{
    struct worker *w = ctx;

    worker_accept_turn(w);
    if (w->tls)
        tls_worker_turn(w);
    if (w->inflated_turn) /* none held without it: a plain turn pays one test */
        conn_ws_turn(w);
    conn_flush_all(w);
}

/* Accepts, TLS handshakes and input to inflate put off by their budgets
 * wait for the next turn, which must come without an event to wake it. */
static bool worker_work_left(void *ctx)
{
    const struct worker *w = ctx;

    return w->accept_n || tls_worker_deferred(w) || w->n_turn_held;
}

static void worker_woken(void *ctx)
{
    struct worker *w = ctx;

    if (w->srv->engine->woken)
        w->srv->engine->woken(w);
    pubsub_inbox_drain(w);
    if (atomic_exchange(&w->disconnect, false) && !w->stopping)
        conn_disconnect_all(w);
    if (atomic_load(&w->srv->stop_requested) && !w->stopping) {
        w->stopping = true;
        w->stop_deadline_ms = timer_now_ms() + w->srv->cfg.close_timeout_ms + 500;
        loop_unlisten(w->loop);
        worker_accept_drop(w);
        conn_stop_all(w);
    }
}

static void worker_ticked(void *ctx)
{
    struct worker *w = ctx;
    uint64_t now = timer_now_ms() / TIMER_TICK_MS;

    timer_wheel_expire(&w->wheel, now, conn_on_timer);
    /* Once a second, a bounded step of the engine's upkeep (in process:
     * the histories with an age limit and the sequences idle past their
     * grace, pubsub_seq.c). */
    if (w->id == 0 && now % (1000 / TIMER_TICK_MS) == 0)
        w->srv->engine->sweep(w->srv, timer_now_ns(), 1024);
    if (w->srv->engine->tick && now % (1000 / TIMER_TICK_MS) == 0)
        w->srv->engine->tick(w);
    if (w->srv->cfg.n_token_keys) /* no token, no expiry: a server without keys pays nothing */
        conn_auth_tick(w, now);
}

static const struct loop_handlers worker_handlers = {
    .before_wait = worker_before_wait,
    .work_left = worker_work_left,
    .accepted = worker_accepted,
    .received = conn_on_recv,
    .sent = conn_on_send,
    .shut = conn_on_shutdown,
    .woken = worker_woken,
    .ticked = worker_ticked,
};

/* Direct descriptors keep connections out of the process's descriptor
 * table, whose limit (RLIMIT_NOFILE) would otherwise cap all workers
 * together; the table is sparse and bounded per ring by the same limit. */
static unsigned worker_direct_slots(const struct ringws_server *srv)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)srv->cfg.max_connections + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
        want = rl.rlim_cur;
    return (unsigned)want;
}

/* Tests only: RINGWS_TEST_FAULT, read once per worker at start, injects a
 * fault into worker 0 so that a test can watch what the server does with it:
 *   ring:N     its submission fails with -EIO after N loop turns (the loop
 *              pays one predictable branch per turn);
 *   multishot  its multishot accept and recv carry a flag the kernel refuses
 *              with -EINVAL, as a kernel without them would. */
static void worker_fault_init(const struct worker *w, struct loop_config *cfg)
{
    const char *env = getenv("RINGWS_TEST_FAULT");
    unsigned long n;
    char *end;

    if (w->id != 0 || !env)
        return;
    if (!strcmp(env, "multishot")) {
        cfg->fault_multishot = true;
    } else if (!strncmp(env, "ring:", 5)) {
        n = strtoul(env + 5, &end, 10);
        if (!*end && n <= UINT32_MAX)
            cfg->fault_turns = (unsigned)n;
    }
}

static bool worker_done(struct worker *w)
{
    return w->stopping && (worker_conns(w) == 0 || timer_now_ms() >= w->stop_deadline_ms);
}

/* After conn_abort_all: turns until no connection has a request left in the
 * ring (each is cancelled, then its descriptor closed), so that nothing the
 * kernel still holds points at memory about to be freed.  Cancellations
 * complete at once; the bound only guards against a request that would
 * not. */
static int worker_reap(struct worker *w)
{
    uint64_t deadline = timer_now_ms() + WORKER_REAP_MS;
    int ret = 0;

    while (ret == 0 && conn_in_ring(w)) {
        if (timer_now_ms() >= deadline) {
            log_msg(LOG_LEVEL_WARN, "worker %u: requests still in flight after %u ms; "
                    "freed once the ring is gone", w->id, WORKER_REAP_MS);
            break;
        }
        ret = loop_turn(w->loop, -1);
    }
    return ret;
}

int worker_run(struct worker *w)
{
    const struct ringws_server *srv = w->srv;
    struct loop_config cfg = {
        .name = "worker",
        .id = w->id,
        .log_setup = w->id == 0,
        .sq_entries = WORKER_SQ_ENTRIES,
        .cq_entries = WORKER_CQ_ENTRIES,
        .direct_slots = worker_direct_slots(srv),
        .buf_count = srv->cfg.recv_buffers,
        .buf_size = srv->cfg.recv_buffer_size,
        .buf_incremental = !srv->cfg.plain_recv_buffers,
        .tick_ms = TIMER_TICK_MS,
        /* A stop asked for before the loop existed has already written the
         * eventfd, so the read armed now completes at once. */
        .wake_fd = w->wake_fd,
    };
    int ret, fatal = 0;

    if (srv->tls) {
        ret = tls_worker_init(w);
        if (ret < 0) {
            tls_worker_fini(w);
            return ret;
        }
        w->tp_sealed = &transport_tls;
    }
    worker_fault_init(w, &cfg);
    ret = loop_create(&w->loop, &cfg, &worker_handlers, w);
    if (ret < 0) {
        tls_worker_fini(w);
        return ret;
    }
    pubsub_thread_enter(w);
    if (srv->engine->worker_start && (ret = srv->engine->worker_start(w)) < 0) {
        loop_destroy(w->loop);
        w->loop = NULL;
        tls_worker_fini(w);
        return ret;
    }
    w->ws_max_message = ws_max_message(srv->cfg.max_message);
    timer_wheel_init(&w->wheel, timer_now_ms() / TIMER_TICK_MS, conn_timer_at, w);
    conn_auth_wheel_init(w, timer_now_ms() / TIMER_TICK_MS);
    /* Behind a proxy the kernel's peer is the proxy: the header names the
     * client. */
    loop_listen(w->loop, w->listen_fd, srv->peer_addrs && !srv->cfg.proxy_protocol);
    if (w->plain_fd >= 0)
        loop_listen(w->loop, w->plain_fd, srv->peer_addrs);

    while (!fatal && !worker_done(w))
        fatal = loop_turn(w->loop, -1);
    if (srv->engine->worker_stop) /* answers what waits for it */
        srv->engine->worker_stop(w);
    worker_accept_drop(w);
    conn_abort_all(w);
    if (!fatal)
        fatal = worker_reap(w);
    /* The ring goes first: closing it cancels whatever it still holds (all
     * of it after a ring failure, when nothing could be reaped), and only
     * then are the buffers, chunks and connections those requests point at
     * freed. */
    loop_destroy(w->loop);
    w->loop = NULL;
    if (srv->engine->worker_free)
        srv->engine->worker_free(w);
    conn_free_all(w);
    free(w->accept_q);
    w->accept_q = NULL;
    free(w->turn_held); /* emptied by the connections' frees */
    w->turn_held = NULL;
    tls_worker_fini(w);
    pubsub_worker_fini(w);
    return fatal;
}
