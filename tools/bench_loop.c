/* bench_loop.c - the load generator's engine: one loop (src/loop.c, the
 * server's own io_uring loop) per thread running WebSocket client
 * connections from connect to close.
 *
 * Why it exists: a generator that costs more CPU per message than the server
 * measures itself.  Each thread owns a ring; sockets are direct descriptors
 * (a sparse table per ring, so the 20000 descriptor limit applies per thread,
 * not per process); receives are multishot into a provided-buffer ring, so an
 * idle connection holds no receive buffer; output of a whole batch of
 * completions goes out in one send per connection.  Over wss:// the same
 * happens to records: bench_tls.c decrypts what is received before the
 * WebSocket client sees it, and seals a connection's queued output at the
 * flush, one TLS write per send.
 *
 * A connection's life: CONNECTING -> HANDSHAKE -> OPEN -> CLOSING (our close
 * frame) -> WAIT_EOF (the server's close came; the server shuts down first,
 * so TIME_WAIT stays on its side) -> SHUT (cancel what is still pending,
 * close the slot, wait for every completion) -> DONE.  Any server
 * misbehaviour is counted, printed (a few per thread) and ends the
 * connection. */
#include "bench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libdeflate.h>

#include "frame.h"

#define LOOP_SQ_ENTRIES 4096
#define LOOP_RECV_BUFS 1024
#define LOOP_RECV_BUF_SIZE 16384
#define LOOP_WAIT_NS (10 * 1000000ll)
#define LOOP_SWEEP_NS (20 * 1000000ull)
#define LOOP_LOG_LINES 5
/* An inflated message's room: grown from the first size up to the last. */
#define LOOP_INFLATE_START 65536
#define LOOP_INFLATE_MAX (64u << 20)
#define LOOP_TARGET_MAX 512   /* a path with a topic and a position */
#define LOOP_REQUEST_MAX 768  /* the upgrade request: that path and the headers */

enum loop_flag {
    CF_SEND_BUSY = 1u << 0,
    CF_RECV_ARMED = 1u << 1,
    CF_DIRTY = 1u << 2,
    CF_TLS = 1u << 3,     /* wss: c->tls is set; tested with the other flags,
                           * so that the plain path costs what it did */
};

uint64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bench_rand(struct bench_thread *t)
{
    /* xorshift64*: masking keys need no cryptographic strength here. */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return t->rng * 0x2545F4914F6CDD1Dull;
}

void bench_problem(struct bench_thread *t, const struct bench_conn *c,
                   const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!t->log_left)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ringws-bench: conn %u: %s%s\n", t->first_gid + c->idx, line,
            --t->log_left ? "" : " (further problems of this thread not shown)");
}

/* The connection a completion is for: its loop_conn is its first member. */
static struct bench_conn *loop_conn_of(struct loop_conn *lc)
{
    return (struct bench_conn *)((char *)lc - offsetof(struct bench_conn, io));
}

/* ---- output ---------------------------------------------------------- */

uint8_t *bench_out_reserve(struct bench_conn *c, uint32_t n)
{
    if (!(c->flags & CF_SEND_BUSY) && c->out_off) {
        /* Nothing of out is in the kernel's hands: move the unsent tail. */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (n > c->out_cap - c->out_len)
        return NULL;
    return c->out + c->out_len;
}

void bench_conn_dirty(struct bench_thread *t, struct bench_conn *c)
{
    if (c->flags & CF_DIRTY)
        return;
    c->flags |= CF_DIRTY;
    c->dirty_next = t->dirty;
    t->dirty = c;
}

void bench_out_commit(struct bench_thread *t, struct bench_conn *c, uint32_t n)
{
    c->out_len += n;
    bench_conn_dirty(t, c);
}

static void loop_conn_shut(struct bench_thread *t, struct bench_conn *c);

/* A handshake that failed, told to the mode before the connection is shut. */
static void loop_handshake_failed(struct bench_thread *t, struct bench_conn *c,
                                  enum bench_fail why, const char *resp, size_t len)
{
    if (t->b->mode->on_fail && c->state >= BC_CONNECTING && c->state <= BC_HANDSHAKE)
        t->b->mode->on_fail(t, c, why, resp, len);
}

/* A TLS failure: before the 101 the handshake failed, after it the
 * server sent what TLS refuses. */
static void loop_tls_failed(struct bench_thread *t, struct bench_conn *c)
{
    stat_add(c->state <= BC_HANDSHAKE ? &t->st.handshake_errors : &t->st.protocol_errors, 1);
    loop_conn_shut(t, c);
}

static void bench_send_tls(struct bench_thread *t, struct bench_conn *c)
{
    const uint8_t *p;
    int n = bench_tls_output(t, c, &p);

    if (n < 0) {
        loop_tls_failed(t, c);
        return;
    }
    if (!n)
        return;
    loop_send(t->loop, &c->io, p, (size_t)n);
    c->ops++;
    c->flags |= CF_SEND_BUSY;
}

static void bench_send(struct bench_thread *t, struct bench_conn *c)
{
    if (c->flags & (CF_SEND_BUSY | CF_TLS)) {
        if (!(c->flags & CF_SEND_BUSY) && c->state < BC_SHUT)
            bench_send_tls(t, c);
        return;
    }
    if (c->out_off == c->out_len || c->state >= BC_SHUT)
        return;
    loop_send(t->loop, &c->io, c->out + c->out_off, c->out_len - c->out_off);
    c->ops++;
    c->flags |= CF_SEND_BUSY;
}

static void loop_flush(void *ctx)
{
    struct bench_thread *t = ctx;
    const struct bench_mode *m = t->b->mode;
    struct bench_conn *c;

    while ((c = t->dirty)) {
        t->dirty = c->dirty_next;
        if (c->state == BC_OPEN && m->fill)
            m->fill(t, c);
        c->flags &= ~CF_DIRTY;
        bench_send(t, c);
    }
}

static void loop_queue_control(struct bench_thread *t, struct bench_conn *c,
                               unsigned opcode, const uint8_t *p, size_t n)
{
    uint64_t r = bench_rand(t);
    uint8_t *out = bench_out_reserve(c, (uint32_t)(WSC_MAX_HEAD + n));

    if (!out) {
        bench_problem(t, c, "no room to queue a control frame");
        return;
    }
    bench_out_commit(t, c, (uint32_t)wsc_frame_write(out, WS_FIN | opcode, p, n,
                                                     (const uint8_t *)&r));
}

/* ---- connection life --------------------------------------------------- */

static const char *loop_state_name(uint8_t s)
{
    static const char *const names[] = {"idle", "connecting", "waiting for the 101",
                                        "open", "closing", "waiting for FIN",
                                        "shut", "done"};
    return names[s];
}

/* Messages sent and never answered are lost once no answer can come. */
static void loop_conn_lose(struct bench_thread *t, struct bench_conn *c)
{
    if (c->sent > c->rcvd) {
        stat_add(&t->st.lost, c->sent - c->rcvd);
        c->sent = c->rcvd;
    }
}

static void loop_conn_shut(struct bench_thread *t, struct bench_conn *c)
{
    if (c->state >= BC_SHUT || c->state == BC_IDLE)
        return;
    if (c->state <= BC_HANDSHAKE)
        t->in_handshake--;
    else
        stat_add(&t->st.open_now, (uint64_t)-1);
    if (c->state == BC_CLOSING || c->state == BC_WAIT_EOF)
        t->closing--;
    /* Requests still pending are cancelled (each still completes). */
    if (c->state == BC_CONNECTING)
        loop_cancel_connect(t->loop, &c->io);
    if (c->flags & CF_RECV_ARMED)
        loop_cancel_recv(t->loop, &c->io);
    if (c->flags & CF_SEND_BUSY)
        loop_cancel_send(t->loop, &c->io);
    loop_conn_lose(t, c);
    free(c->hs);
    c->hs = NULL;
    c->state = BC_SHUT;
    loop_close(t->loop, &c->io);
    c->ops++;
}

/* ---- starting anew at a given time: a min-heap of slots --------------- */

static void loop_retry_push(struct bench_thread *t, struct bench_conn *c)
{
    unsigned i = t->n_retry++;

    while (i) {
        unsigned up = (i - 1) / 2;

        if (t->retry[up].due_ns <= c->retry_ns)
            break;
        t->retry[i] = t->retry[up];
        i = up;
    }
    t->retry[i] = (struct bench_retry){.due_ns = c->retry_ns, .idx = c->idx};
}

static struct bench_conn *loop_retry_pop(struct bench_thread *t)
{
    struct bench_conn *c = &t->conns[t->retry[0].idx];
    struct bench_retry last = t->retry[--t->n_retry];
    unsigned i = 0;

    for (;;) {
        unsigned k = 2 * i + 1;

        if (k >= t->n_retry)
            break;
        if (k + 1 < t->n_retry && t->retry[k + 1].due_ns < t->retry[k].due_ns)
            k++;
        if (last.due_ns <= t->retry[k].due_ns)
            break;
        t->retry[i] = t->retry[k];
        i = k;
    }
    t->retry[i] = last;
    c->retry_ns = 0;
    return c;
}

void bench_conn_retry(struct bench_thread *t, struct bench_conn *c, uint64_t due_ns)
{
    bool parked = c->retry_ns != 0;

    c->retry_ns = due_ns ? due_ns : 1;
    if (c->state == BC_DONE && !parked)
        loop_retry_push(t, c);
}

static void loop_conn_finish(struct bench_thread *t, struct bench_conn *c)
{
    bench_tls_conn_free(c);
    c->state = BC_DONE;
    c->flags = 0;
    t->live--;
    if (c->retry_ns)
        loop_retry_push(t, c);
    else if (t->b->mode->again)
        t->free_idx[t->n_free++] = c->idx;
}

void bench_conn_close(struct bench_thread *t, struct bench_conn *c)
{
    static const uint8_t normal[2] = {WS_CLOSE_NORMAL >> 8, WS_CLOSE_NORMAL & 0xff};

    if (c->state != BC_OPEN)
        return;
    loop_queue_control(t, c, WS_OP_CLOSE, normal, sizeof normal);
    c->state = BC_CLOSING;
    c->t_start = t->now;
    t->closing++;
}

/* A fresh socket, bound to a spread source address when asked, installed
 * in the connection's direct slot.  The ordinary descriptor lives only for
 * these few calls. */
static int loop_socket(struct bench_thread *t, struct bench_conn *c)
{
    const struct bench_opts *o = &t->b->o;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, ret = 0;

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        ret = -errno;
    if (!ret && o->src_addrs) {
        struct sockaddr_in src = {.sin_family = AF_INET};

        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(t->src_next++ % o->src_addrs));
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            ret = -errno;
    }
    if (!ret)
        ret = loop_fd_install(t->loop, c->idx, fd);
    close(fd);
    return ret;
}

static void loop_conn_start(struct bench_thread *t, struct bench_conn *c)
{
    const struct bench_opts *o = &t->b->o;
    int ret;

    if (!c->out) {
        c->out_cap = t->b->mode->out_cap(o);
        c->out = malloc(c->out_cap);
    }
    c->state = BC_CONNECTING;
    c->t_start = t->now;
    c->flags = 0;
    c->ctl_len = 0;
    c->out_off = c->out_len = 0;
    c->sent = c->rcvd = 0;
    wsc_rx_init(&c->rx);
    t->live++;
    t->in_handshake++;
    ret = c->out ? loop_socket(t, c) : -ENOMEM;
    if (ret < 0) {
        stat_add(&t->st.connect_errors, 1);
        bench_problem(t, c, "socket: %s", strerror(-ret));
        t->in_handshake--;
        loop_conn_finish(t, c);
        return;
    }
    loop_connect(t->loop, &c->io, (const struct sockaddr *)&o->dst, sizeof o->dst);
    c->ops++;
}

static void loop_arm_recv(struct bench_thread *t, struct bench_conn *c)
{
    loop_recv(t->loop, &c->io);
    c->ops++;
    c->flags |= CF_RECV_ARMED;
}

/* The request target: the mode's for this connection, or --url's path. */
static const char *loop_target(struct bench_thread *t, struct bench_conn *c,
                               char path[LOOP_TARGET_MAX])
{
    if (!t->b->mode->target)
        return t->b->o.path;
    return t->b->mode->target(t, c, path, LOOP_TARGET_MAX) ? path : NULL;
}

static void loop_on_connect(struct bench_thread *t, struct bench_conn *c, int res)
{
    const struct bench_opts *o = &t->b->o;
    char path[LOOP_TARGET_MAX];
    const char *target;
    uint32_t room;
    uint8_t *out;
    size_t n;

    if (c->state != BC_CONNECTING)
        return;
    if (res < 0) {
        stat_add(&t->st.connect_errors, 1);
        bench_problem(t, c, "connect: %s", strerror(-res));
        loop_handshake_failed(t, c, BENCH_FAIL_RESET, NULL, 0);
        loop_conn_shut(t, c);
        return;
    }
    c->hs = malloc(WSC_KEY_LEN + 1 + WSC_MAX_RESPONSE);
    /* Nothing is queued before the request: all of out is room for it. */
    room = c->out_cap < LOOP_REQUEST_MAX ? c->out_cap : LOOP_REQUEST_MAX;
    out = bench_out_reserve(c, room);
    if (!c->hs || !out || wsc_key_make(c->hs) < 0 || !(target = loop_target(t, c, path)) ||
        !(n = wsc_request_write((char *)out, room, o->host, target, c->hs, o->subprotocol,
                                o->deflate))) {
        stat_add(&t->st.connect_errors, 1);
        bench_problem(t, c, "cannot build the upgrade request");
        loop_conn_shut(t, c);
        return;
    }
    c->hs_len = 0;
    bench_out_commit(t, c, (uint32_t)n);
    c->state = BC_HANDSHAKE;
    if (t->b->tls) {
        c->flags |= CF_TLS;
        if (bench_tls_conn_start(t, c) < 0) {
            stat_add(&t->st.handshake_errors, 1);
            loop_conn_shut(t, c);
            return;
        }
    }
    loop_arm_recv(t, c);
}

static void loop_conn_opened(struct bench_thread *t, struct bench_conn *c)
{
    c->state = BC_OPEN;
    t->in_handshake--;
    stat_add(&t->st.opened, 1);
    if (t->now < t->stop_ns)
        stat_add(&t->st.opened_window, 1);
    stat_add(&t->st.open_now, 1);
    if (t->b->mode->on_open)
        t->b->mode->on_open(t, c);
}

/* Feeds answer bytes to the handshake; returns how many belong to it. */
static size_t loop_handshake_input(struct bench_thread *t, struct bench_conn *c,
                                   const uint8_t *p, size_t n)
{
    char *resp = c->hs + WSC_KEY_LEN + 1;
    size_t room = WSC_MAX_RESPONSE - c->hs_len, take = n < room ? n : room, used;
    const char *why = NULL;
    bool deflated = false;
    int r;

    memcpy(resp + c->hs_len, p, take);
    r = wsc_response_check(resp, c->hs_len + take, c->hs, t->b->o.subprotocol, t->b->o.deflate,
                           &deflated, &why);
    if (!r) {
        c->hs_len = (uint16_t)(c->hs_len + take);
        return n;
    }
    if (r < 0) {
        size_t line = strcspn(resp, "\r\n");

        stat_add(&t->st.handshake_errors, 1);
        bench_problem(t, c, "handshake: %s (status line \"%.*s\")", why,
                      (int)(line < 80 ? line : 80), resp);
        loop_handshake_failed(t, c, BENCH_FAIL_STATUS, resp, c->hs_len + take);
        loop_conn_shut(t, c);
        return n;
    }
    used = (size_t)r - c->hs_len;
    free(c->hs);
    c->hs = NULL;
    c->rx.deflate = deflated;
    loop_conn_opened(t, c);
    return used;
}

static void loop_on_close_frame(struct bench_thread *t, struct bench_conn *c)
{
    uint16_t code = c->ctl_len >= 2 ? (uint16_t)(c->ctl[0] << 8 | c->ctl[1]) : WS_CLOSE_NO_STATUS;

    if (c->state == BC_CLOSING) {
        c->state = BC_WAIT_EOF;
        c->t_start = t->now;
        return;
    }
    if (c->state != BC_OPEN)
        return;
    if (!t->b->mode->on_close ||
        !t->b->mode->on_close(t, c, code, (const char *)c->ctl + 2,
                              c->ctl_len > 2 ? c->ctl_len - 2u : 0)) {
        stat_add(&t->st.unexpected_closes, 1);
        bench_problem(t, c, "server closed an open connection with %u \"%.*s\" (%llu sent, "
                      "%llu answered)", code, c->ctl_len > 2 ? (int)c->ctl_len - 2 : 0,
                      (const char *)c->ctl + 2, (unsigned long long)c->sent,
                      (unsigned long long)c->rcvd);
    }
    loop_conn_lose(t, c);
    loop_queue_control(t, c, WS_OP_CLOSE, c->ctl, c->ctl_len >= 2 ? 2 : 0);
    c->state = BC_WAIT_EOF;
    c->t_start = t->now;
    t->closing++;
}

static void loop_on_control(struct bench_thread *t, struct bench_conn *c, uint8_t op)
{
    if (op == WS_OP_PING) {
        if (c->state == BC_OPEN) {
            loop_queue_control(t, c, WS_OP_PONG, c->ctl, c->ctl_len);
            stat_add(&t->st.pings, 1);
        }
    } else if (op == WS_OP_CLOSE) {
        loop_on_close_frame(t, c);
    }
    c->ctl_len = 0;
}

/* A compressed message's chunk: gathered, and once whole inflated (RFC
 * 7692 7.2.2: as if 00 00 ff ff followed; the server took no context over)
 * into *ev as one plain chunk.  False while it is not whole, or when it
 * does not inflate (then counted and the connection shut). */
__attribute__((noinline))
static bool loop_inflate(struct bench_thread *t, struct bench_conn *c, struct wsc_event *ev)
{
    static const uint8_t tail[] = {0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff};
    size_t need = (size_t)c->z_len + ev->len + sizeof(tail), got = 0;
    enum libdeflate_result r = LIBDEFLATE_INSUFFICIENT_SPACE;

    if (ev->msg_start)
        c->z_len = 0;
    if (need > c->z_cap) {
        uint8_t *z = realloc(c->z, need);
        if (!z)
            goto bad;
        c->z = z;
        c->z_cap = (uint32_t)need;
    }
    memcpy(c->z + c->z_len, ev->data, ev->len);
    c->z_len += (uint32_t)ev->len;
    if (!ev->msg_end)
        return false;
    memcpy(c->z + c->z_len, tail, sizeof(tail));
    if (!t->inflater && !(t->inflater = libdeflate_alloc_decompressor()))
        goto bad;
    for (;;) {
        size_t cap = t->inflated_cap ? t->inflated_cap * 2 : LOOP_INFLATE_START;
        uint8_t *o;

        if (t->inflated_cap) {
            r = libdeflate_deflate_decompress(t->inflater, c->z, c->z_len + sizeof(tail),
                                              t->inflated, t->inflated_cap, &got);
            if (r != LIBDEFLATE_INSUFFICIENT_SPACE || cap > LOOP_INFLATE_MAX)
                break;
        }
        if (!(o = realloc(t->inflated, cap)))
            goto bad;
        t->inflated = o;
        t->inflated_cap = cap;
    }
    if (r != LIBDEFLATE_SUCCESS)
        goto bad;
    ev->data = t->inflated;
    ev->len = got;
    ev->msg_start = true;
    ev->compressed = false;
    return true;
bad:
    stat_add(&t->st.protocol_errors, 1);
    bench_problem(t, c, "a compressed message that does not inflate");
    loop_conn_shut(t, c);
    return false;
}

/* Inlined as loop_conn_input, its caller, is. */
static inline __attribute__((always_inline)) void loop_frames_input(struct bench_thread *t,
                                                                   struct bench_conn *c,
                                                                   const uint8_t *p, size_t n)
{
    const struct bench_mode *m = t->b->mode;
    struct wsc_event ev;

    while (c->state >= BC_OPEN && c->state <= BC_WAIT_EOF) {
        size_t used = wsc_decode(&c->rx, p, n, &ev);

        p += used;
        n -= used;
        switch (ev.type) {
        case WSC_EV_NEED_MORE:
            return;
        case WSC_EV_DATA:
            if (ev.compressed && !loop_inflate(t, c, &ev))
                break;
            if (c->state <= BC_CLOSING && m->on_data)
                m->on_data(t, c, &ev);
            break;
        case WSC_EV_CONTROL:
            memcpy(c->ctl + c->ctl_len, ev.data, ev.len); /* <= 125 per frame */
            c->ctl_len = (uint8_t)(c->ctl_len + ev.len);
            if (ev.frame_end)
                loop_on_control(t, c, ev.opcode);
            break;
        default:
            stat_add(&t->st.protocol_errors, 1);
            bench_problem(t, c, "bad frame from the server: %s", ev.error);
            loop_conn_shut(t, c);
            return;
        }
    }
}

static void loop_on_eof(struct bench_thread *t, struct bench_conn *c)
{
    if (c->state >= BC_SHUT)
        return;
    if (c->state == BC_WAIT_EOF) {
        stat_add(&t->st.closed, 1);
        if ((c->flags & CF_TLS) && !bench_tls_closed_cleanly(c))
            stat_add(&t->st.tls_no_close_notify, 1);
    } else {
        stat_add(&t->st.unexpected_closes, 1);
        bench_problem(t, c, "server ended the TCP connection while %s (%llu sent, "
                      "%llu answered)", loop_state_name(c->state),
                      (unsigned long long)c->sent, (unsigned long long)c->rcvd);
        loop_handshake_failed(t, c, BENCH_FAIL_RESET, NULL, 0);
    }
    loop_conn_shut(t, c);
}

/* A receive or send failed (the connection was reset): unexpected unless
 * the closes were exchanged.  Over wss, once the server's close_notify
 * came, the reset our own close_notify may meet ends a clean close. */
static void loop_on_error(struct bench_thread *t, struct bench_conn *c, const char *op,
                          int res)
{
    if (c->state != BC_WAIT_EOF) {
        stat_add(&t->st.unexpected_closes, 1);
        bench_problem(t, c, "%s while %s: %s", op, loop_state_name(c->state), strerror(-res));
        loop_handshake_failed(t, c, BENCH_FAIL_RESET, NULL, 0);
    } else if ((c->flags & CF_TLS) && bench_tls_closed_cleanly(c)) {
        stat_add(&t->st.closed, 1);
    }
    loop_conn_shut(t, c);
}

/* Bytes the server sent, in order (wss: decrypted).  Inlined into both
 * callers: the plain path's code stays what it was. */
static inline __attribute__((always_inline)) void loop_conn_input(struct bench_thread *t,
                                                                 struct bench_conn *c,
                                                                 const uint8_t *p, size_t n)
{
    if (c->state == BC_HANDSHAKE) {
        size_t used = loop_handshake_input(t, c, p, n);

        p += used;
        n -= used;
    }
    if (n > 0 && c->state < BC_SHUT)
        loop_frames_input(t, c, p, n);
}

/* wss: received bytes are records, whose plaintext comes one record at a
 * time. */
static __attribute__((noinline)) void loop_input_tls(struct bench_thread *t,
                                                     struct bench_conn *c, const uint8_t *p,
                                                     int n)
{
    int k = bench_tls_input(t, c, &p, (size_t)n);

    while (k > 0) {
        loop_conn_input(t, c, p, (size_t)k);
        k = c->state < BC_SHUT ? bench_tls_read(t, c, &p) : 0;
    }
    if (k < 0)
        loop_tls_failed(t, c);
}

static void loop_on_recv(struct bench_thread *t, struct bench_conn *c, const uint8_t *p,
                         int res, bool ended)
{
    if (ended)
        c->flags &= ~CF_RECV_ARMED;
    if (res > 0 && (c->flags & CF_TLS)) {
        loop_input_tls(t, c, p, res);
    } else if (res > 0) {
        loop_conn_input(t, c, p, (size_t)res);
    } else if (res == 0) {
        loop_on_eof(t, c);
        return;
    } else if (res != -ENOBUFS && c->state < BC_SHUT) {
        loop_on_error(t, c, "recv", res);
        return;
    }
    if (!(c->flags & CF_RECV_ARMED) && c->state >= BC_HANDSHAKE && c->state < BC_SHUT)
        loop_arm_recv(t, c);
}

static void loop_on_send(struct bench_thread *t, struct bench_conn *c, int res)
{
    c->flags &= ~CF_SEND_BUSY;
    if (c->state >= BC_SHUT)
        return;
    if (res < 0) {
        loop_on_error(t, c, "send", res);
        return;
    }
    if (c->flags & CF_TLS) {
        bench_tls_sent(c, (uint32_t)res);
    } else {
        c->out_off += (uint32_t)res;
        if (c->out_off == c->out_len)
            c->out_off = c->out_len = 0;
    }
    bench_conn_dirty(t, c);
}

/* ---- what the loop calls ---------------------------------------------- */

/* After each completion of a connection's request: once it is shut and
 * nothing of it is in flight, its slot is free. */
static void loop_conn_settle(struct bench_conn *c)
{
    if (c->state == BC_SHUT && !c->ops)
        loop_conn_finish(c->t, c);
}

static void loop_received(void *ctx, struct loop_conn *lc, uint8_t *p, int res, bool ended)
{
    struct bench_conn *c = loop_conn_of(lc);

    if (ended)
        c->ops--;
    loop_on_recv(c->t, c, p, res, ended);
    loop_conn_settle(c);
}

static void loop_sent(void *ctx, struct loop_conn *lc, int res)
{
    struct bench_conn *c = loop_conn_of(lc);

    c->ops--;
    loop_on_send(c->t, c, res);
    loop_conn_settle(c);
}

static void loop_connected(struct loop_conn *lc, int res)
{
    struct bench_conn *c = loop_conn_of(lc);

    c->ops--;
    loop_on_connect(c->t, c, res);
    loop_conn_settle(c);
}

static void loop_closed(struct loop_conn *lc, int res)
{
    struct bench_conn *c = loop_conn_of(lc);

    c->ops--;
    loop_conn_settle(c);
}

/* Latencies are measured against the time the completions came. */
static void loop_clock(void *ctx)
{
    struct bench_thread *t = ctx;

    t->now = bench_now_ns();
}

static const struct loop_handlers loop_handlers = {
    .before_wait = loop_flush,
    .after_wait = loop_clock,
    .received = loop_received,
    .sent = loop_sent,
    .connected = loop_connected,
    .closed = loop_closed,
};

/* ---- the thread ------------------------------------------------------ */

static void loop_start_more(struct bench_thread *t)
{
    const struct bench_mode *m = t->b->mode;
    unsigned tries = t->b->o.open_window; /* bounds the work when starts fail at once */

    /* Those due to start anew first: a start that fails is not retried. */
    while (!t->stopping && t->n_retry && t->retry[0].due_ns <= t->now &&
           t->in_handshake < t->b->o.open_window)
        loop_conn_start(t, loop_retry_pop(t));
    while (!t->stopping && t->in_handshake < t->b->o.open_window && tries--) {
        struct bench_conn *c;

        if (t->next_start < t->n_conns)
            c = &t->conns[t->next_start];
        else if (t->n_free)
            c = &t->conns[t->free_idx[t->n_free - 1]];
        else
            return;
        if (m->again && !m->again(t))
            return;
        if (t->next_start < t->n_conns)
            t->next_start++;
        else
            t->n_free--;
        loop_conn_start(t, c);
    }
}

/* Deadlines and the closes owed after the stop, checked every few ms. */
static void loop_sweep(struct bench_thread *t)
{
    const struct bench_mode *m = t->b->mode;
    uint64_t limit = (uint64_t)(t->b->o.timeout_s * 1e9);

    for (unsigned i = 0; i < t->n_conns; i++) {
        struct bench_conn *c = &t->conns[i];

        switch (c->state) {
        case BC_CONNECTING:
        case BC_HANDSHAKE:
            if (t->now - c->t_start > limit) {
                stat_add(&t->st.handshake_timeouts, 1);
                bench_problem(t, c, "no handshake answer within %.1f s (%s)",
                              t->b->o.timeout_s, loop_state_name(c->state));
                loop_handshake_failed(t, c, BENCH_FAIL_TIMEOUT, NULL, 0);
                loop_conn_shut(t, c);
            }
            break;
        case BC_OPEN:
            if (t->stopping && (!m->drained || m->drained(c)))
                bench_conn_close(t, c);
            break;
        case BC_CLOSING:
        case BC_WAIT_EOF:
            if (t->now - c->t_start > limit) {
                stat_add(&t->st.close_timeouts, 1);
                bench_problem(t, c, "closing handshake unfinished after %.1f s (%s)",
                              t->b->o.timeout_s, loop_state_name(c->state));
                loop_conn_shut(t, c);
            }
            break;
        default:
            break;
        }
    }
}

static void loop_abandon(struct bench_thread *t)
{
    for (unsigned i = 0; i < t->n_conns; i++) {
        struct bench_conn *c = &t->conns[i];

        if (c->state != BC_IDLE && c->state != BC_DONE) {
            stat_add(&t->st.abandoned, 1);
            loop_conn_lose(t, c);
        }
    }
}

/* The sweep walks every connection: with nothing to time or to close it is
 * skipped, and its period grows with the thread's connections (1 us each),
 * so that 100k quiet subscribers on one thread cost no CPU between
 * messages.  Deadlines are whole seconds; a few more ms do not matter. */
static bool loop_sweep_due(const struct bench_thread *t)
{
    return t->stopping || t->in_handshake || t->closing;
}

static void loop_run(struct bench_thread *t)
{
    struct bench *b = t->b;
    uint64_t grace = bench_grace_ns(&b->o), next_sweep = 0;
    uint64_t sweep_ns = LOOP_SWEEP_NS + (uint64_t)t->n_conns * 1000u;

    for (;;) {
        uint64_t go = atomic_load_explicit(&b->go_ns, memory_order_relaxed), prev = t->now;

        t->now = bench_now_ns();
        if (prev && t->now - prev > atomic_load_explicit(&t->st.max_turn_ns, memory_order_relaxed))
            atomic_store_explicit(&t->st.max_turn_ns, t->now - prev, memory_order_relaxed);
        t->stop_ns = atomic_load_explicit(&b->stop_ns, memory_order_relaxed);
        if (t->now >= t->stop_ns)
            t->stopping = true;
        if (!t->go_seen && go && t->now >= go) {
            t->go_seen = true;
            if (b->mode->on_go)
                b->mode->on_go(t);
        }
        if (b->mode->tick)
            b->mode->tick(t);
        loop_start_more(t);
        if (t->now >= next_sweep) {
            if (loop_sweep_due(t))
                loop_sweep(t);
            next_sweep = t->now + sweep_ns;
        }
        if (t->stopping && !t->live)
            return;
        if (t->stop_ns != UINT64_MAX && t->now > t->stop_ns + grace) {
            loop_abandon(t);
            return;
        }
        if (loop_turn(t->loop, LOOP_WAIT_NS) < 0) {
            loop_abandon(t);
            return;
        }
    }
}

static int loop_setup(struct bench_thread *t)
{
    unsigned cq = t->n_conns * 4; /* a burst of completions per connection */
    struct loop_config cfg = {
        .name = "thread",
        .id = t->id,
        .sq_entries = LOOP_SQ_ENTRIES,
        .cq_entries = cq < 8192 ? 8192 : cq > 65536 ? 65536 : cq,
        .direct_slots = t->n_conns,
        .buf_count = LOOP_RECV_BUFS,
        .buf_size = LOOP_RECV_BUF_SIZE,
        .wake_fd = -1,
    };
    int ret;

    if (t->b->mode->recv_bufs)
        t->b->mode->recv_bufs(&t->b->o, t->n_conns, &cfg.buf_count, &cfg.buf_size);
    if ((ret = bench_tls_thread_init(t)) < 0)
        return ret;
    ret = loop_create(&t->loop, &cfg, &loop_handlers, t);
    if (ret < 0)
        return ret;
    if (t->n_conns && !loop_direct(t->loop))
        return -ENOTSUP; /* sockets are installed in direct slots */
    t->conns = calloc(t->n_conns ? t->n_conns : 1, sizeof *t->conns);
    t->free_idx = calloc(t->n_conns ? t->n_conns : 1, sizeof *t->free_idx);
    t->retry = calloc(t->n_conns ? t->n_conns : 1, sizeof *t->retry);
    if (!t->conns || !t->free_idx || !t->retry)
        return -ENOMEM;
    for (unsigned i = 0; i < t->n_conns; i++) {
        t->conns[i].idx = i;
        t->conns[i].io.fd = (int)i;
        t->conns[i].t = t;
    }
    return 0;
}

static void *loop_thread(void *arg)
{
    struct bench_thread *t = arg;
    int ret = loop_setup(t);

    if (ret < 0)
        fprintf(stderr, "ringws-bench: thread %u: setup: %s\n", t->id, strerror(-ret));
    else
        loop_run(t);
    loop_destroy(t->loop); /* the ring, then the receive buffers */
    t->loop = NULL;
    atomic_store(&t->st.finished, true);
    return NULL;
}

int bench_threads_start(struct bench *b)
{
    unsigned n = b->o.threads;

    b->threads = calloc(n, sizeof *b->threads);
    if (!b->threads)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        struct bench_thread *t = &b->threads[i];
        unsigned lo = (unsigned)((uint64_t)b->o.conns * i / n);
        unsigned hi = (unsigned)((uint64_t)b->o.conns * (i + 1) / n);

        t->b = b;
        t->id = i;
        t->first_gid = b->conn_base + lo;
        t->n_conns = hi - lo;
        t->src_next = b->conn_base + lo;
        t->log_left = LOOP_LOG_LINES;
        t->stop_ns = UINT64_MAX;
        t->rng = (b->salt ^ (0x9E3779B97F4A7C15ull * (i + 1))) | 1;
        t->budget = b->o.messages ? b->o.messages * (i + 1) / n - b->o.messages * i / n
                                  : UINT64_MAX;
        hist_init(&t->lat);
        if (pthread_create(&t->tid, NULL, loop_thread, t)) {
            b->o.threads = i;
            return -EAGAIN;
        }
    }
    return 0;
}

void bench_threads_join(struct bench *b)
{
    for (unsigned i = 0; i < b->o.threads; i++) {
        struct bench_thread *t = &b->threads[i];

        pthread_join(t->tid, NULL);
        for (unsigned k = 0; t->conns && k < t->n_conns; k++) {
            bench_tls_conn_free(&t->conns[k]);
            free(t->conns[k].out);
            free(t->conns[k].hs);
            free(t->conns[k].ts);
            free(t->conns[k].z);
        }
        free(t->conns);
        libdeflate_free_decompressor(t->inflater);
        free(t->inflated);
        free(t->free_idx);
        free(t->retry);
        t->conns = NULL;
        bench_tls_thread_end(t);
    }
}

void bench_stop_at(struct bench *b, uint64_t ns)
{
    if (!atomic_load(&b->interrupted))
        atomic_store(&b->stop_ns, ns);
}

void bench_sum(struct bench *b, struct bench_sum *s)
{
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < b->o.threads; i++) {
        struct bench_stats *st = &b->threads[i].st;
        uint64_t last = stat_get(&st->last_rx_ns);

        s->opened += stat_get(&st->opened);
        s->opened_window += stat_get(&st->opened_window);
        s->open_now += stat_get(&st->open_now);
        s->echoed += stat_get(&st->echoed);
        s->echoed_window += stat_get(&st->echoed_window);
        s->echoed_bytes += stat_get(&st->echoed_bytes);
        s->mismatches += stat_get(&st->mismatches);
        s->sent_compressed += stat_get(&st->sent_compressed);
        s->lost += stat_get(&st->lost);
        s->connect_errors += stat_get(&st->connect_errors);
        s->handshake_errors += stat_get(&st->handshake_errors);
        s->handshake_timeouts += stat_get(&st->handshake_timeouts);
        s->unexpected_closes += stat_get(&st->unexpected_closes);
        s->protocol_errors += stat_get(&st->protocol_errors);
        s->close_timeouts += stat_get(&st->close_timeouts);
        s->abandoned += stat_get(&st->abandoned);
        s->closed += stat_get(&st->closed);
        s->pings += stat_get(&st->pings);
        s->tls_full += stat_get(&st->tls_full);
        s->tls_resumed += stat_get(&st->tls_resumed);
        s->tls_no_close_notify += stat_get(&st->tls_no_close_notify);
        s->finished += atomic_load(&st->finished);
        if (last > s->last_rx_ns)
            s->last_rx_ns = last;
    }
}
