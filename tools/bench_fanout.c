/* bench_fanout.c - the fanout mode: N subscribers on one topic, M messages
 * published over HTTP at a fixed rate, every delivery checked and timed.
 *
 * Why it exists: ringws is made to push one message to very many clients,
 * so its central figure is how long a publish takes to reach the last of N
 * subscribers, and whether every subscriber got every message exactly once
 * and in order (docs/PUBSUB.md).
 *
 * Shape of a run: the parent forks --procs children before it starts any
 * thread.  Each child runs the engine (bench_loop.c) for its share of the
 * subscribers, on its own rings, so that no process needs more than the
 * 20000 descriptors a ring's direct table may hold per thread, and reports
 * to the parent through a pipe: a progress record every 100 ms (counters
 * only, written whole and without blocking), and a final record once the
 * parent says stop (counters, the per-recipient latency histogram, and per
 * message the latest arrival and the number of subscribers reached).  The
 * parent waits until every subscriber is open, publishes with one blocking
 * keep-alive connection (bench_publish.c), waits until every delivery is
 * counted or --timeout passes, then stops the children and reports.
 *
 * The payload is binary: the sequence number and the publish time
 * (CLOCK_MONOTONIC ns, one clock for every process of the machine) as
 * little-endian 64-bit words, then a filler that depends only on the offset
 * so that a subscriber checks every byte without knowing anything but the
 * size.  A message's arrival time is when its receive completion was reaped
 * (the engine's clock of that batch). */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"

#define FAN_PROGRESS_NS (100 * 1000000ull)
#define FAN_LOG_LINES 5

/* ---- the pipes between the parent and its children -------------------- */

enum { FAN_CMD_STOP = 1 };

struct fanout_cmd {
    uint32_t kind;
    uint32_t pad;
    uint64_t published;       /* messages the server accepted */
};

enum { FAN_REP_PROGRESS = 1, FAN_REP_FINAL };

/* A progress record, and the head of the final one, which is followed by
 * struct hist and by `messages` pairs of (latest arrival, count).  Small
 * enough (< PIPE_BUF) that a non-blocking write puts it whole or not at all. */
struct fanout_report {
    uint32_t kind, proc, threads, pad;
    struct bench_sum s;       /* echoed: deliveries in order */
    uint64_t dups, gaps;      /* repeated or early sequence numbers */
    char tls[BENCH_TLS_DESC]; /* wss: what was negotiated; "" before */
};

_Static_assert(sizeof(struct fanout_report) < 4096, "progress records must be atomic");

struct fanout_at {
    uint64_t last_ns;         /* latest arrival of the message (0: none) */
    uint64_t count;           /* subscribers that received it */
};

/* Reads n bytes, waiting for them on a non-blocking pipe too: the rest
 * of a record whose start came is on its way (bounded all the same). */
static int fanout_read_all(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n) {
        ssize_t r = read(fd, p, n);

        if (r < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};

            if (poll(&pfd, 1, 10000) == 0)
                return -ETIMEDOUT;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EPIPE;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int fanout_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;

    while (n) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- payload ------------------------------------------------------------ */

static uint8_t fanout_filler(uint64_t off)
{
    return (uint8_t)(off * 131 + 7);
}

static bool fanout_filler_ok(const uint8_t *p, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != fanout_filler(off + i))
            return false;
    return true;
}

static uint64_t fanout_get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void fanout_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- subscribers: engine hooks, run in a child's threads --------------- */

/* What one engine thread counted; b->mode_data holds one per thread. */
struct fanout_tally {
    struct fanout_at *at;     /* [messages] */
    struct hist *msg_lat;     /* [messages] with --per-message, else NULL */
    uint64_t dups, gaps;
};

static struct fanout_tally *fanout_tally_of(struct bench_thread *t)
{
    return &((struct fanout_tally *)t->b->mode_data)[t->id];
}

static uint32_t fanout_out_cap(const struct bench_opts *o)
{
    (void)o;
    /* The upgrade request, then at most a pong and a close at a time. */
    return 512 + 2 * (WSC_MAX_HEAD + BENCH_CTL_MAX);
}

/* A publish reaches every subscriber of a thread at once, and with
 * DEFER_TASKRUN all their receives complete in one io_uring_enter before
 * any buffer can be recycled: a receive that finds the ring empty ends with
 * -ENOBUFS and must be armed again, so a thread short of buffers re-arms
 * thousands of receives per message.  One small buffer per subscriber
 * (a message and its frame head, rounded up; most of a burst is one
 * message) makes that rare at little memory: 16 MiB for 20000 subscribers. */
static void fanout_recv_bufs(const struct bench_opts *o, unsigned n_conns, uint32_t *count,
                             uint32_t *size)
{
    uint32_t c = 1024, sz = 512;

    while (c < n_conns && c < 32768)
        c <<= 1;
    while (sz < o->size + WSC_MAX_HEAD && sz < 16384)
        sz <<= 1;
    *count = c;
    *size = sz;
}

static void fanout_deliver(struct bench_thread *t, struct bench_conn *c, uint64_t seq,
                           uint64_t sent_ns)
{
    struct fanout_tally *tl = fanout_tally_of(t);

    if (seq >= t->b->o.messages || seq < c->rcvd) {
        tl->dups += seq < c->rcvd;
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, seq < c->rcvd ? "message #%llu again or late (#%llu due)"
                                          : "message #%llu was never published (#%llu due)",
                      (unsigned long long)seq, (unsigned long long)c->rcvd);
        return;
    }
    if (seq > c->rcvd) {
        tl->gaps++;
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "message #%llu came while #%llu was due",
                      (unsigned long long)seq, (unsigned long long)c->rcvd);
    }
    c->rcvd = seq + 1;
    tl->at[seq].count++;
    if (t->now > tl->at[seq].last_ns)
        tl->at[seq].last_ns = t->now;
    hist_record(&t->lat, t->now > sent_ns ? t->now - sent_ns : 0);
    if (tl->msg_lat)
        hist_record(&tl->msg_lat[seq], t->now > sent_ns ? t->now - sent_ns : 0);
    stat_add(&t->st.echoed, 1);
    atomic_store_explicit(&t->st.last_rx_ns, t->now, memory_order_relaxed);
}

static void fanout_on_data(struct bench_thread *t, struct bench_conn *c,
                           const struct wsc_event *ev)
{
    size_t size = t->b->o.size, take = 0;

    if (ev->msg_start) {
        c->msg_off = 0;
        c->msg_bad = ev->opcode != WS_OP_BINARY;
    }
    if (c->msg_off < BENCH_FANOUT_HEAD) {
        take = BENCH_FANOUT_HEAD - c->msg_off;
        if (take > ev->len)
            take = ev->len;
        memcpy(c->head + c->msg_off, ev->data, take);
    }
    if (!c->msg_bad && ev->len > take)
        c->msg_bad = c->msg_off + ev->len > size ||
                     !fanout_filler_ok(ev->data + take, c->msg_off + take, ev->len - take);
    c->msg_off += ev->len;
    if (!ev->msg_end)
        return;
    if (c->msg_bad || c->msg_off != size) {
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "a message differs from any published (opcode %u, %llu bytes)",
                      ev->opcode, (unsigned long long)c->msg_off);
        return;
    }
    fanout_deliver(t, c, fanout_get_le64(c->head), fanout_get_le64(c->head + 8));
}

/* ---- a child process ------------------------------------------------- */

static void fanout_child_fill(struct bench *b, unsigned k, unsigned kind,
                              struct fanout_report *r)
{
    struct fanout_tally *tl = b->mode_data;

    *r = (struct fanout_report){.kind = kind, .proc = k, .threads = b->o.threads};
    bench_sum(b, &r->s);
    if (b->tls)
        snprintf(r->tls, sizeof r->tls, "%s", bench_tls_desc(b));
    for (unsigned i = 0; i < b->o.threads; i++) {
        r->dups += tl[i].dups;
        r->gaps += tl[i].gaps;
    }
}

/* The final record: counters, with the messages every open subscriber
 * missed counted as lost, the latency histogram and the per-message
 * arrivals of every thread merged. */
static int fanout_child_final(struct bench *b, unsigned k, int fd, uint64_t published)
{
    struct fanout_tally *tl = b->mode_data;
    uint64_t m = b->o.messages, due;
    struct fanout_report r;
    struct fanout_at *at = calloc(m, sizeof *at);
    struct hist *lat = malloc(sizeof *lat);
    int ret;

    if (!at || !lat) {
        free(at);
        free(lat);
        return -ENOMEM;
    }
    fanout_child_fill(b, k, FAN_REP_FINAL, &r);
    due = r.s.opened * published;
    if (due > r.s.echoed)
        r.s.lost += due - r.s.echoed;
    hist_init(lat);
    for (unsigned i = 0; i < b->o.threads; i++) {
        hist_merge(lat, &b->threads[i].lat);
        for (uint64_t s = 0; s < m; s++) {
            at[s].count += tl[i].at[s].count;
            if (tl[i].at[s].last_ns > at[s].last_ns)
                at[s].last_ns = tl[i].at[s].last_ns;
        }
    }
    ret = fanout_write_all(fd, &r, sizeof r);
    if (!ret)
        ret = fanout_write_all(fd, lat, sizeof *lat);
    if (!ret)
        ret = fanout_write_all(fd, at, m * sizeof *at);
    /* --per-message: each message's histogram, the threads' merged into
     * the first's. */
    for (uint64_t s = 0; !ret && tl[0].msg_lat && s < m; s++) {
        for (unsigned i = 1; i < b->o.threads; i++)
            hist_merge(&tl[0].msg_lat[s], &tl[i].msg_lat[s]);
        ret = fanout_write_all(fd, &tl[0].msg_lat[s], sizeof tl[0].msg_lat[s]);
    }
    free(at);
    free(lat);
    return ret;
}

/* m empty histograms (--per-message); false without memory. */
static bool fanout_hists_new(struct hist **h, uint64_t m)
{
    if (!(*h = malloc(m * sizeof **h)))
        return false;
    for (uint64_t s = 0; s < m; s++)
        hist_init(&(*h)[s]);
    return true;
}

/* Runs subscribers [lo, hi) until the parent says stop (or is gone);
 * never returns. */
static void fanout_child_run(struct bench *b, unsigned k, unsigned lo, unsigned hi,
                             int cmd_fd, int rep_fd)
{
    struct fanout_cmd cmd = {0};
    struct fanout_tally *tl;
    struct fanout_report r;
    uint64_t stop;
    int ret;

    b->conn_base = lo;
    b->o.conns = hi - lo;
    if (b->o.n_sub) { /* this process's node */
        b->o.dst = b->o.sub_dst[k % b->o.n_sub];
        memcpy(b->o.host, b->o.sub_host[k % b->o.n_sub], sizeof(b->o.host));
    }
    if (b->o.threads > b->o.conns)
        b->o.threads = b->o.conns;
    tl = calloc(b->o.threads, sizeof *tl);
    for (unsigned i = 0; tl && i < b->o.threads; i++) {
        if (!(tl[i].at = calloc(b->o.messages, sizeof *tl[i].at)))
            tl = NULL;
        else if (b->o.per_message[0] && !fanout_hists_new(&tl[i].msg_lat, b->o.messages))
            tl = NULL;
    }
    if (!tl) {
        fprintf(stderr, "ringws-bench: process %u: out of memory\n", k);
        _exit(1);
    }
    b->mode_data = tl;
    fcntl(rep_fd, F_SETFL, O_NONBLOCK);
    atomic_store(&b->go_ns, bench_now_ns());
    if ((ret = bench_threads_start(b)) < 0) {
        fprintf(stderr, "ringws-bench: process %u: %s\n", k, strerror(-ret));
        _exit(1);
    }
    for (;;) {
        struct pollfd pfd = {.fd = cmd_fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)(FAN_PROGRESS_NS / 1000000));

        /* Progress is a snapshot: when the pipe is full the parent is
         * busy publishing, and the next record will do. */
        fanout_child_fill(b, k, FAN_REP_PROGRESS, &r);
        if (write(rep_fd, &r, sizeof r) < 0 && errno != EAGAIN)
            break;
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0) {
            if (fanout_read_all(cmd_fd, &cmd, sizeof cmd) < 0)
                cmd.published = 0; /* the parent is gone: nobody reads the report */
            break;
        }
    }
    stop = bench_now_ns();
    bench_stop_at(b, stop);
    bench_wait(b, stop + bench_grace_ns(&b->o) + 1000000000ull, false, NULL);
    bench_threads_join(b);
    fcntl(rep_fd, F_SETFL, 0);
    ret = cmd.kind == FAN_CMD_STOP ? fanout_child_final(b, k, rep_fd, cmd.published) : -EPIPE;
    _exit(ret < 0 ? 1 : 0);
}

/* ---- the parent ------------------------------------------------------ */

struct fanout_child {
    pid_t pid;
    int cmd_fd, rep_fd;          /* -1 once closed */
    bool final;                  /* the final record came */
    struct fanout_report rep;    /* the latest record */
    struct hist *lat;
    struct fanout_at *at;
    struct hist *msg_lat;        /* [messages] with --per-message */
};

struct fanout_run {
    struct bench *b;
    struct fanout_child *kids;
    unsigned n_kids, log_left;
    uint64_t t0, next_line;
    uint64_t open_seen, open_seen_ns; /* subscribers open, and since when */
    /* publishing */
    uint64_t subscribers;        /* open when publishing began */
    uint64_t published, publish_errors, recipient_mismatches;
    uint64_t t_first, t_last;    /* first and last publish */
    uint64_t *pub_ns;            /* [messages] publish time */
    uint64_t *ack_ns;            /* [messages] time to the answer */
};

static void fanout_sum(const struct fanout_run *f, struct bench_sum *s, uint64_t *threads)
{
    memset(s, 0, sizeof *s);
    *threads = 0;
    for (unsigned k = 0; k < f->n_kids; k++) {
        const struct bench_sum *c = &f->kids[k].rep.s;

        s->opened += c->opened;
        s->opened_window += c->opened_window;
        s->open_now += c->open_now;
        s->echoed += c->echoed;
        s->mismatches += c->mismatches;
        s->lost += c->lost;
        s->connect_errors += c->connect_errors;
        s->handshake_errors += c->handshake_errors;
        s->handshake_timeouts += c->handshake_timeouts;
        s->unexpected_closes += c->unexpected_closes;
        s->protocol_errors += c->protocol_errors;
        s->close_timeouts += c->close_timeouts;
        s->abandoned += c->abandoned;
        s->closed += c->closed;
        s->pings += c->pings;
        s->tls_full += c->tls_full;
        s->tls_resumed += c->tls_resumed;
        s->tls_no_close_notify += c->tls_no_close_notify;
        s->finished += c->finished;
        if (c->last_rx_ns > s->last_rx_ns)
            s->last_rx_ns = c->last_rx_ns;
        *threads += f->kids[k].rep.threads;
    }
}

static void fanout_kid_gone(struct fanout_run *f, struct fanout_child *kid, const char *why)
{
    if (!kid->final && f->log_left) {
        f->log_left--;
        fprintf(stderr, "ringws-bench: process %u (pid %d): %s\n",
                (unsigned)(kid - f->kids), (int)kid->pid, why);
    }
    close(kid->rep_fd);
    kid->rep_fd = -1;
}

/* Takes every record a readable pipe holds and keeps the latest: while
 * the parent waited for a slow publish answer, progress piled up there. */
static void fanout_kid_read(struct fanout_run *f, struct fanout_child *kid)
{
    struct fanout_report r;
    size_t m = f->b->o.messages;

    for (;;) {
        ssize_t n = read(kid->rep_fd, &r, sizeof r);

        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        /* Records are under PIPE_BUF, so written whole; a short read
         * would be a torn one: wait for its rest. */
        if (n <= 0 || (n < (ssize_t)sizeof r &&
                       fanout_read_all(kid->rep_fd, (uint8_t *)&r + n, sizeof r - (size_t)n) < 0)) {
            fanout_kid_gone(f, kid, "ended without a report");
            return;
        }
        kid->rep = r;
        if (r.kind == FAN_REP_FINAL)
            break;
    }
    if (fanout_read_all(kid->rep_fd, kid->lat, sizeof *kid->lat) < 0 ||
        fanout_read_all(kid->rep_fd, kid->at, m * sizeof *kid->at) < 0 ||
        (kid->msg_lat &&
         fanout_read_all(kid->rep_fd, kid->msg_lat, m * sizeof *kid->msg_lat) < 0)) {
        fanout_kid_gone(f, kid, "report cut short");
        return;
    }
    kid->final = true;
    fanout_kid_gone(f, kid, "");
}

/* Reads what the children sent within `ns`; returns how many pipes are
 * still open. */
static unsigned fanout_pump(struct fanout_run *f, uint64_t ns)
{
    struct pollfd pfd[BENCH_MAX_PROCS];
    unsigned idx[BENCH_MAX_PROCS], n = 0;
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};

    for (unsigned k = 0; k < f->n_kids; k++)
        if (f->kids[k].rep_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = f->kids[k].rep_fd, .events = POLLIN};
            idx[n++] = k;
        }
    if (!n) {
        nanosleep(&ts, NULL);
        return 0;
    }
    if (ppoll(pfd, n, &ts, NULL) <= 0)
        return n;
    for (unsigned i = 0; i < n; i++)
        if (pfd[i].revents)
            fanout_kid_read(f, &f->kids[idx[i]]);
    n = 0;
    for (unsigned k = 0; k < f->n_kids; k++)
        n += f->kids[k].rep_fd >= 0;
    return n;
}

static uint64_t fanout_failed_subs(const struct bench_sum *s)
{
    return s->connect_errors + s->handshake_errors + s->handshake_timeouts +
           s->unexpected_closes;
}

/* A progress line each second on stderr: a million subscribers take a
 * minute or more to open. */
static void fanout_progress(struct fanout_run *f)
{
    const struct bench_opts *o = &f->b->o;
    uint64_t now = bench_now_ns(), threads;
    struct bench_sum s;

    if (now < f->next_line)
        return;
    /* After a publish that blocked for seconds: one line, not a catch-up. */
    f->next_line = now - f->next_line < 1000000000ull ? f->next_line + 1000000000ull
                                                      : now + 1000000000ull;
    fanout_sum(f, &s, &threads);
    if (!f->t_first)
        fprintf(stderr, "[%5.1fs] fanout: %llu/%u subscribers open, %llu failed\n",
                (double)(now - f->t0) / 1e9, (unsigned long long)s.open_now, o->conns,
                (unsigned long long)fanout_failed_subs(&s));
    else
        fprintf(stderr, "[%5.1fs] fanout: %llu/%llu published, %llu/%llu delivered, "
                "%llu open, %llu errors\n", (double)(now - f->t0) / 1e9,
                (unsigned long long)f->published, (unsigned long long)o->messages,
                (unsigned long long)s.echoed,
                (unsigned long long)(f->subscribers * o->messages),
                (unsigned long long)s.open_now,
                (unsigned long long)(s.mismatches + fanout_failed_subs(&s) +
                                     s.protocol_errors + f->publish_errors +
                                     f->recipient_mismatches));
}

/* Pumps until `until` or until done(f) says enough.  The pipes are read
 * at least once even when `until` has passed: a publisher running behind
 * its rate would otherwise leave them full of stale progress. */
static void fanout_wait(struct fanout_run *f, uint64_t until,
                        bool (*done)(struct fanout_run *f))
{
    for (;;) {
        uint64_t now = bench_now_ns(), step = until > now ? until - now : 0;
        unsigned open;

        if (step > 50 * 1000000ull)
            step = 50 * 1000000ull;
        open = fanout_pump(f, step);
        fanout_progress(f);
        if (bench_now_ns() >= until || atomic_load(&f->b->interrupted) ||
            (done && (done(f) || !open)))
            return; /* with every child gone, nothing more can come */
    }
}

/* Every subscriber opened or failed, or none opened for --timeout: each
 * handshake is bounded by it, so a server that stopped accepting (a full
 * table, a connection limit) leaves nothing worth waiting for. */
static bool fanout_all_open(struct fanout_run *f)
{
    uint64_t threads, now = bench_now_ns();
    struct bench_sum s;

    fanout_sum(f, &s, &threads);
    if (s.opened != f->open_seen) {
        f->open_seen = s.opened;
        f->open_seen_ns = now;
    }
    return s.opened + fanout_failed_subs(&s) >= f->b->o.conns ||
           (threads && s.finished == threads) ||
           now - f->open_seen_ns > (uint64_t)(f->b->o.timeout_s * 1e9);
}

static bool fanout_all_delivered(struct fanout_run *f)
{
    uint64_t threads;
    struct bench_sum s;

    fanout_sum(f, &s, &threads);
    return s.echoed >= f->subscribers * f->published;
}

static bool fanout_all_final(struct fanout_run *f)
{
    for (unsigned k = 0; k < f->n_kids; k++)
        if (f->kids[k].rep_fd >= 0)
            return false;
    return true;
}

static int fanout_spawn(struct fanout_run *f)
{
    struct bench *b = f->b;
    unsigned p = b->o.procs;

    for (unsigned k = 0; k < p; k++) {
        struct fanout_child *kid = &f->kids[k];
        unsigned lo = (unsigned)((uint64_t)b->o.conns * k / p);
        unsigned hi = (unsigned)((uint64_t)b->o.conns * (k + 1) / p);
        int cmd[2], rep[2];

        if (pipe2(cmd, O_CLOEXEC) < 0)
            return -errno;
        if (pipe2(rep, O_CLOEXEC) < 0) {
            close(cmd[0]);
            close(cmd[1]);
            return -errno;
        }
        fflush(NULL);
        kid->pid = fork();
        if (kid->pid == 0) {
            /* Only its own pipes: a parent's end held by a sibling would
             * hide the parent's exit from that sibling. */
            for (unsigned j = 0; j < k; j++) {
                close(f->kids[j].cmd_fd);
                close(f->kids[j].rep_fd);
            }
            close(cmd[1]);
            close(rep[0]);
            fanout_child_run(b, k, lo, hi, cmd[0], rep[1]);
        }
        close(cmd[0]);
        close(rep[1]);
        if (kid->pid < 0) {
            close(cmd[1]);
            close(rep[0]);
            return -errno;
        }
        kid->cmd_fd = cmd[1];
        kid->rep_fd = rep[0];
        fcntl(kid->rep_fd, F_SETFL, O_NONBLOCK);
        f->n_kids = k + 1;
    }
    return 0;
}

/* Tells every child to stop, collects the final reports (bounded), and
 * reaps the children. */
static void fanout_stop(struct fanout_run *f)
{
    struct fanout_cmd cmd = {.kind = FAN_CMD_STOP, .published = f->published};
    uint64_t until = bench_now_ns() + bench_grace_ns(&f->b->o) + 5000000000ull;

    for (unsigned k = 0; k < f->n_kids; k++) {
        if (fanout_write_all(f->kids[k].cmd_fd, &cmd, sizeof cmd) < 0 && f->log_left) {
            f->log_left--;
            fprintf(stderr, "ringws-bench: process %u cannot be told to stop\n", k);
        }
        close(f->kids[k].cmd_fd);
        f->kids[k].cmd_fd = -1;
    }
    /* An interrupt ends the waits early; the reports are still wanted. */
    while (!fanout_all_final(f) && bench_now_ns() < until)
        fanout_pump(f, 50 * 1000000ull);
    for (unsigned k = 0; k < f->n_kids; k++) {
        struct fanout_child *kid = &f->kids[k];

        if (kid->rep_fd >= 0) {
            fanout_kid_gone(f, kid, "no report in time: killed");
            kill(kid->pid, SIGKILL);
        }
        waitpid(kid->pid, NULL, 0);
    }
}

/* Publishes --messages messages at --rate, each once its time has come
 * (late ones at once: the rate is a ceiling, the report gives the real
 * span). */
static void fanout_publish(struct fanout_run *f)
{
    const struct bench_opts *o = &f->b->o;
    uint64_t go = bench_now_ns(), period = (uint64_t)(1e9 / o->rate);
    uint8_t *body = malloc(o->size);
    struct publisher pub;
    struct wsc_answer a;
    const char *why;
    int ret;

    if (!body || publisher_init(&pub, o, f->b->tls) < 0) {
        fprintf(stderr, "ringws-bench: out of memory\n");
        f->publish_errors++;
        free(body);
        return;
    }
    for (size_t i = BENCH_FANOUT_HEAD; i < o->size; i++)
        body[i] = fanout_filler(i);
    for (uint64_t seq = 0; seq < o->messages && !atomic_load(&f->b->interrupted); seq++) {
        uint64_t sent;

        fanout_wait(f, go + seq * period, NULL);
        if (atomic_load(&f->b->interrupted))
            break;
        sent = bench_now_ns();
        if (!f->t_first)
            f->t_first = sent;
        fanout_put_le64(body, seq);
        fanout_put_le64(body + 8, sent);
        ret = publisher_send(&pub, body, o->size, &a, &why);
        if (ret < 0 || a.status != 200) {
            f->publish_errors++;
            if (ret < 0)
                fprintf(stderr, "ringws-bench: publish #%llu: %s (%s)\n",
                        (unsigned long long)seq, why, strerror(-ret));
            else
                fprintf(stderr, "ringws-bench: publish #%llu: status %u: %.*s\n",
                        (unsigned long long)seq, a.status,
                        (int)(a.body_len < 200 ? a.body_len : 200), a.body);
            break; /* sequence numbers must stay contiguous */
        }
        f->pub_ns[seq] = sent;
        f->ack_ns[seq] = bench_now_ns() - sent;
        f->t_last = sent;
        f->published++;
        if (!a.has_recipients || a.recipients != f->subscribers) {
            f->recipient_mismatches++;
            if (f->log_left) {
                f->log_left--;
                fprintf(stderr, "ringws-bench: publish #%llu reached %s%llu recipients, "
                        "%llu subscribers are open\n", (unsigned long long)seq,
                        a.has_recipients ? "" : "(no count) ",
                        (unsigned long long)a.recipients,
                        (unsigned long long)f->subscribers);
            }
        }
    }
    publisher_close(&pub);
    free(pub.req);
    free(body);
}

static int fanout_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest rank of a sorted array; 0 when empty. */
static uint64_t fanout_rank(const uint64_t *v, size_t n, double p)
{
    size_t r = (size_t)((p / 100.0) * (double)n + 0.999999);

    if (!n)
        return 0;
    return v[r < 1 ? 0 : r > n ? n - 1 : r - 1];
}

struct fanout_mem {
    uint64_t rss_kb, slab_kb, kids_kb;
    bool rss_ok;
};

static void fanout_measure(const struct fanout_run *f, struct fanout_mem *m)
{
    memset(m, 0, sizeof *m);
    m->rss_ok = proc_server_rss_kb(&f->b->o, &m->rss_kb) == 0;
    proc_meminfo_kb("Slab", &m->slab_kb);
    for (unsigned k = 0; k < f->n_kids; k++) {
        uint64_t kb;

        if (proc_rss_kb(f->kids[k].pid, &kb) == 0)
            m->kids_kb += kb;
    }
}

static uint64_t fanout_kids_ticks(const struct fanout_run *f)
{
    uint64_t sum = 0;

    for (unsigned k = 0; k < f->n_kids; k++) {
        uint64_t t;

        if (proc_cpu_ticks(f->kids[k].pid, &t) == 0)
            sum += t;
    }
    return sum;
}

static double fanout_per_conn(uint64_t after_kb, uint64_t before_kb, uint64_t n)
{
    return n ? ((double)after_kb - (double)before_kb) * 1024.0 / (double)n : 0;
}

/* Merges the children's per-message arrivals and returns the
 * publish-to-last-delivery latency of each message reached at all,
 * sorted; *complete counts the messages that reached every subscriber. */
static size_t fanout_last_latencies(const struct fanout_run *f, uint64_t *lat,
                                    uint64_t *complete)
{
    size_t n = 0;

    *complete = 0;
    for (uint64_t s = 0; s < f->published; s++) {
        uint64_t last = 0, count = 0;

        for (unsigned k = 0; k < f->n_kids; k++) {
            if (!f->kids[k].final)
                continue;
            count += f->kids[k].at[s].count;
            if (f->kids[k].at[s].last_ns > last)
                last = f->kids[k].at[s].last_ns;
        }
        *complete += count == f->subscribers;
        if (count)
            lat[n++] = last > f->pub_ns[s] ? last - f->pub_ns[s] : 0;
    }
    qsort(lat, n, sizeof *lat, fanout_cmp_u64);
    return n;
}

struct fanout_figures {
    struct fanout_mem before, open, after;
    uint64_t t_open, cpu0, cpu1, kids0, kids1;
    uint64_t each0[BENCH_MAX_PIDS], each1[BENCH_MAX_PIDS]; /* per --server-pid */
    double self0, self1;
    bool have_cpu;
};

static const char *fanout_tls_desc(const struct fanout_run *f)
{
    for (unsigned k = 0; k < f->n_kids; k++)
        if (f->kids[k].rep.tls[0])
            return f->kids[k].rep.tls;
    return "";
}

/* Several servers (the nodes of a cluster): each one's CPU seconds over the
 * same window, server_cpu_s_K for the K-th --server-pid, to show how the
 * deliveries' cost spreads. */
static void fanout_report_each_cpu(struct report *r, const struct bench_opts *o,
                                   const struct fanout_figures *fig)
{
    char key[32];

    if (!fig->have_cpu || o->n_server_pids < 2)
        return;
    for (unsigned i = 0; i < o->n_server_pids; i++) {
        snprintf(key, sizeof key, "server_cpu_s_%u", i);
        report_num(r, key, proc_ticks_to_s(fig->each1[i] - fig->each0[i]), 3);
    }
}

/* Each --server-pid's CPU ticks; false when one could not be read. */
static bool fanout_each_cpu(const struct bench_opts *o, uint64_t *ticks)
{
    for (unsigned i = 0; i < o->n_server_pids; i++)
        if (proc_cpu_ticks(o->server_pids[i], &ticks[i]) < 0)
            return false;
    return true;
}

static void fanout_report(struct fanout_run *f, const struct fanout_figures *fig)
{
    const struct bench_opts *o = &f->b->o;
    uint64_t threads, dups = 0, gaps = 0, complete, expected = (uint64_t)o->conns * o->messages;
    uint64_t *last = calloc(f->published ? f->published : 1, sizeof *last);
    uint64_t *ack = calloc(f->published ? f->published : 1, sizeof *ack);
    uint64_t t_done = fig->t_open, n_last;
    double window, client_s, p50;
    struct bench_sum s;
    struct hist *lat = malloc(sizeof *lat);
    struct report r;

    if (!last || !ack || !lat) {
        free(last);
        free(ack);
        free(lat);
        fprintf(stderr, "ringws-bench: out of memory for the report\n");
        return;
    }
    fanout_sum(f, &s, &threads);
    hist_init(lat);
    for (unsigned k = 0; k < f->n_kids; k++) {
        dups += f->kids[k].rep.dups;
        gaps += f->kids[k].rep.gaps;
        if (f->kids[k].final)
            hist_merge(lat, f->kids[k].lat);
        else
            s.abandoned += f->kids[k].rep.s.open_now; /* their deliveries are unknown */
    }
    n_last = fanout_last_latencies(f, last, &complete);
    memcpy(ack, f->ack_ns, f->published * sizeof *ack);
    qsort(ack, f->published, sizeof *ack, fanout_cmp_u64);
    if (f->t_first && s.last_rx_ns > f->t_first)
        t_done = s.last_rx_ns;
    window = f->t_first && t_done > f->t_first ? (double)(t_done - f->t_first) / 1e9 : 0;
    client_s = proc_ticks_to_s(fig->kids1 - fig->kids0) + fig->self1 - fig->self0;
    p50 = (double)fanout_rank(last, n_last, 50);

    report_begin(&r, o->json);
    report_str(&r, "mode", "fanout");
    report_str(&r, "url", o->url);
    report_str(&r, "topic", o->topic);
    report_u64(&r, "procs", o->procs);
    report_u64(&r, "threads_per_proc", o->threads);
    report_u64(&r, "threads", threads);
    report_u64(&r, "src_addrs", o->src_addrs);
    report_u64(&r, "subscribers_wanted", o->conns);
    report_u64(&r, "subscribers", f->subscribers);
    report_num(&r, "open_s", (double)(fig->t_open - f->t0) / 1e9, 2);
    report_num(&r, "opens_per_s", fig->t_open > f->t0 ? (double)f->subscribers * 1e9 /
                                                            (double)(fig->t_open - f->t0) : 0, 0);
    report_u64(&r, "size", o->size);
    report_num(&r, "rate_per_s", o->rate, 2);
    report_u64(&r, "messages_wanted", o->messages);
    report_u64(&r, "messages", f->published);
    report_num(&r, "publish_s", f->t_last > f->t_first ? (double)(f->t_last - f->t_first) / 1e9 : 0,
               3);
    report_u64(&r, "publish_errors", f->publish_errors);
    report_u64(&r, "recipient_mismatches", f->recipient_mismatches);
    report_u64(&r, "expected", expected);
    report_u64(&r, "delivered", s.echoed);
    report_u64(&r, "messages_complete", complete);
    report_u64(&r, "duplicates", dups);
    report_u64(&r, "out_of_order", gaps);
    report_num(&r, "last_delivery_us_p50", p50 / 1e3, 1);
    report_num(&r, "last_delivery_us_p99", (double)fanout_rank(last, n_last, 99) / 1e3, 1);
    report_num(&r, "last_delivery_us_max", (double)fanout_rank(last, n_last, 100) / 1e3, 1);
    report_num(&r, "recipient_latency_us_p50", (double)hist_percentile(lat, 50) / 1e3, 1);
    report_num(&r, "recipient_latency_us_p99", (double)hist_percentile(lat, 99) / 1e3, 1);
    report_num(&r, "recipient_latency_us_max", (double)lat->max / 1e3, 1);
    report_num(&r, "publish_answer_us_p50", (double)fanout_rank(ack, f->published, 50) / 1e3, 1);
    report_num(&r, "publish_answer_us_max", (double)fanout_rank(ack, f->published, 100) / 1e3, 1);
    /* What one burst sustains: the subscribers reached over the median
     * time to reach the last of them. */
    report_num(&r, "burst_deliveries_per_s", p50 > 0 ? (double)f->subscribers * 1e9 / p50 : 0, 0);
    report_cpu(&r, fig->have_cpu, proc_ticks_to_s(fig->cpu1 - fig->cpu0), "delivery", s.echoed,
               3, client_s, window);
    fanout_report_each_cpu(&r, o, fig);
    if (fig->before.rss_ok && fig->open.rss_ok) {
        report_u64(&r, "server_rss_kib_before", fig->before.rss_kb);
        report_u64(&r, "server_rss_kib_open", fig->open.rss_kb);
        report_u64(&r, "server_rss_kib_after_publish", fig->after.rss_kb);
        report_num(&r, "server_bytes_per_conn",
                   fanout_per_conn(fig->open.rss_kb, fig->before.rss_kb, f->subscribers), 0);
    }
    report_num(&r, "kernel_slab_bytes_per_pair",
               fanout_per_conn(fig->open.slab_kb, fig->before.slab_kb, f->subscribers), 0);
    report_num(&r, "client_bytes_per_conn",
               f->subscribers ? (double)fig->open.kids_kb * 1024.0 / (double)f->subscribers : 0,
               0);
    report_tls(&r, o, &s, fanout_tls_desc(f));
    report_errors(&r, &s);
    report_end(&r);
    free(last);
    free(ack);
    free(lat);
}

/* --per-message: a line per message published, "SEQ PUB_NS COUNT" and
 * then VALUE_NS:COUNT for each non-empty bucket of its recipients'
 * latencies (every process's merged), so that a script can pool the
 * messages of a time window (PUB_NS: CLOCK_MONOTONIC, as Python's
 * time.monotonic_ns()). */
static int fanout_write_per_message(const struct fanout_run *f)
{
    const struct bench_opts *o = &f->b->o;
    struct hist *h = malloc(sizeof *h);
    FILE *out = h ? fopen(o->per_message, "w") : NULL;
    int ret = 0;

    if (!out) {
        ret = h ? -errno : -ENOMEM;
        free(h);
        return ret;
    }
    for (uint64_t s = 0; s < f->published; s++) {
        hist_init(h);
        for (unsigned k = 0; k < f->n_kids; k++)
            if (f->kids[k].final)
                hist_merge(h, &f->kids[k].msg_lat[s]);
        fprintf(out, "%llu %llu %llu", (unsigned long long)s, (unsigned long long)f->pub_ns[s],
                (unsigned long long)h->count);
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
            if (h->bucket[i])
                fprintf(out, " %llu:%llu", (unsigned long long)hist_bucket_value(i),
                        (unsigned long long)h->bucket[i]);
        fputc('\n', out);
    }
    if (fclose(out) != 0)
        ret = -errno;
    free(h);
    return ret;
}

static bool fanout_failed(struct fanout_run *f)
{
    const struct bench_opts *o = &f->b->o;
    uint64_t threads, dups = 0;
    struct bench_sum s;

    fanout_sum(f, &s, &threads);
    for (unsigned k = 0; k < f->n_kids; k++) {
        dups += f->kids[k].rep.dups;
        if (!f->kids[k].final)
            return true;
    }
    return bench_failed(&s) || dups || f->publish_errors || f->recipient_mismatches ||
           s.echoed != (uint64_t)o->conns * o->messages;
}

static int fanout_alloc(struct fanout_run *f, struct bench *b)
{
    uint64_t m = b->o.messages;

    *f = (struct fanout_run){.b = b, .log_left = FAN_LOG_LINES};
    f->kids = calloc(b->o.procs, sizeof *f->kids);
    f->pub_ns = calloc(m, sizeof *f->pub_ns);
    f->ack_ns = calloc(m, sizeof *f->ack_ns);
    if (!f->kids || !f->pub_ns || !f->ack_ns)
        return -ENOMEM;
    for (unsigned k = 0; k < b->o.procs; k++) {
        f->kids[k].cmd_fd = f->kids[k].rep_fd = -1;
        f->kids[k].lat = malloc(sizeof *f->kids[k].lat);
        f->kids[k].at = calloc(m, sizeof *f->kids[k].at);
        if (!f->kids[k].lat || !f->kids[k].at ||
            (b->o.per_message[0] && !fanout_hists_new(&f->kids[k].msg_lat, m)))
            return -ENOMEM;
    }
    return 0;
}

static void fanout_free(struct fanout_run *f)
{
    for (unsigned k = 0; f->kids && k < f->b->o.procs; k++) {
        free(f->kids[k].lat);
        free(f->kids[k].at);
        free(f->kids[k].msg_lat);
    }
    free(f->kids);
    free(f->pub_ns);
    free(f->ack_ns);
}

static int fanout_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    struct fanout_figures fig = {0};
    struct fanout_run f;
    uint64_t threads;
    struct bench_sum s;
    int ret = fanout_alloc(&f, b);

    if (ret < 0) {
        fanout_free(&f);
        return ret;
    }
    fanout_measure(&f, &fig.before);
    f.t0 = f.open_seen_ns = bench_now_ns();
    f.next_line = f.t0 + 1000000000ull;
    ret = fanout_spawn(&f);
    if (ret < 0) {
        fprintf(stderr, "ringws-bench: starting process %u: %s\n", f.n_kids, strerror(-ret));
        fanout_stop(&f);
        fanout_free(&f);
        return ret;
    }
    fanout_wait(&f, f.t0 + (uint64_t)(o->timeout_s * 1e9) + bench_open_ns(o),
                fanout_all_open);
    fig.t_open = bench_now_ns();
    /* Let the server finish its per-connection work before its memory is
     * read and the counts are compared with the publish answers. */
    fanout_wait(&f, fig.t_open + 1000000000ull, NULL);
    fanout_measure(&f, &fig.open);
    fanout_sum(&f, &s, &threads);
    f.subscribers = s.open_now;
    fig.have_cpu = proc_server_cpu_ticks(o, &fig.cpu0) == 0 && fanout_each_cpu(o, fig.each0);
    fig.kids0 = fanout_kids_ticks(&f);
    fig.self0 = proc_self_cpu_s();
    if (f.subscribers) {
        fanout_publish(&f);
        fanout_wait(&f, (f.t_last ? f.t_last : bench_now_ns()) + (uint64_t)(o->timeout_s * 1e9),
                    fanout_all_delivered);
    }
    if (fig.have_cpu)
        fig.have_cpu = proc_server_cpu_ticks(o, &fig.cpu1) == 0 && fanout_each_cpu(o, fig.each1);
    fig.kids1 = fanout_kids_ticks(&f);
    fig.self1 = proc_self_cpu_s();
    fanout_measure(&f, &fig.after);
    fanout_stop(&f);
    fanout_report(&f, &fig);
    ret = fanout_failed(&f) || !f.subscribers ? 1 : 0;
    if (o->per_message[0]) {
        int w = fanout_write_per_message(&f);
        if (w < 0) {
            fprintf(stderr, "ringws-bench: %s: %s\n", o->per_message, strerror(-w));
            ret = 1;
        }
    }
    fanout_free(&f);
    return ret;
}

const struct bench_mode bench_mode_fanout = {
    .name = "fanout",
    .summary = "N subscribers, M publishes over HTTP: delivery check, time to the last",
    .run = fanout_run,
    .on_data = fanout_on_data,
    .out_cap = fanout_out_cap,
    .recv_bufs = fanout_recv_bufs,
    .quiet = true,
};
