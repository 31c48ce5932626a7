/* bench_resume.c - the resume and storm modes: subscribers that speak the
 * ringws.v1 envelope (docs/PUBSUB.md), keep their position in the topic,
 * and come back with it.
 *
 * Why it exists: a topic with history promises that a subscriber who left
 * and came back with its position misses nothing and gets nothing twice.
 * These modes hold the server to it from the wire, for many clients at
 * once, and time it:
 *
 * - resume: one message is published (so that the topic and its epoch
 *   outlive its subscribers), N subscribers subscribe (`subscribed` gives
 *   each its epoch and position), close, --messages are published while they are
 *   away, then all N reconnect at the same moment with
 *   `?since=TOPIC:EPOCH:OFFSET`; each is timed from the start of its
 *   connect to the last replayed message (`recovered FROM TO`, then TO).
 * - storm: N subscribers, one publisher at --rate, then the server is told
 *   to shed every WebSocket (SIGUSR2 to the first --server-pid: close 1012
 *   with "retry after N ms"); each subscriber waits the time the close
 *   names, reconnects with its position, and is live again once a message
 *   published after the shed reaches it.  Publishing goes on until every
 *   subscriber is live again, and one second more.
 *
 * Every message is checked: its topic and epoch, its offset the one after
 * the last (a lower one is a duplicate, a higher one a gap whose skipped
 * offsets are lost, as are those a `gap` notice gives up and those that
 * never came by the end), and its offset minus the publisher's sequence
 * number (the payload: sequence number and publish time, 64-bit
 * little-endian, then zeros to --size) the same for every message of the
 * run, so that an offset given to the wrong message shows.  Header lines
 * are parsed where they lie in the receive buffer; only a line split
 * across two receives is gathered in the subscriber's own buffer. */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frame.h"

#define RES_PROTOCOL "ringws.v1"
#define RES_EPOCH_LEN 16
/* "recovered " TOPIC EPOCH FROM TO, with room to spare */
#define RES_LINE_MAX (16 + WSC_MAX_TOPIC + RES_EPOCH_LEN + 2 * 21)
#define RES_FIELDS 5
#define RES_SHED_AFTER_NS 1000000000ull /* storm: publishing before the shed */
#define RES_TAIL_NS 1000000000ull       /* storm: publishing once all are live */
#define RES_QUIET_NS 500000000ull       /* storm: no delivery this long: done */
#define RES_STEP_NS 1000000ull          /* the main thread's polling step */

enum res_phase { RES_SUBSCRIBE, RES_CLOSE, RES_RESUME };

enum res_kind { RES_NONE, RES_MSG, RES_NOTICE, RES_BAD };

/* One subscriber: what it holds of the topic, across its connections. */
struct res_sub {
    uint64_t last;          /* offset of the last message it holds */
    uint64_t last_seq;      /* that message's sequence number; UINT64_MAX: none */
    uint64_t cur;           /* offset of the message being received */
    uint64_t replay_to;     /* the last offset `recovered` announced, still due */
    uint64_t t_conn;        /* when its current connection started */
    char epoch[RES_EPOCH_LEN];
    bool subscribed;        /* it has an epoch and a position */
    bool resuming;          /* its connection gave the position: replay not done */
    bool waiting_live;      /* storm: came back, nothing published after the shed yet */
    uint8_t kind;           /* enum res_kind: of the frame being received */
    bool in_body;           /* the frame's header line is behind */
    uint16_t line_len;      /* bytes of a split header line gathered in line */
    char line[RES_LINE_MAX];
};

/* What one engine thread counted; the main thread reads them as it waits. */
struct res_tally {
    _Atomic uint64_t subscribed, recovered, gap_notices, epoch_changes, resumed, replayed;
    _Atomic uint64_t live, reconnects, shed, no_hint, hint_max_ms;
    _Atomic uint64_t duplicates, gaps, missed;
    _Atomic uint64_t resumed_last_ns, reopen_first_ns, reopen_last_ns;
    _Atomic uint64_t live_first_ns, live_last_ns;
    unsigned phase_done;    /* the last phase this thread acted on */
    struct hist lat;        /* connect start to the last replayed message */
};

struct res_run {
    struct res_sub *subs;   /* [conns] */
    struct res_tally *tally; /* [threads] */
    bool storm;
    _Atomic unsigned phase;  /* enum res_phase */
    _Atomic uint64_t resume_ns; /* resume: when the reconnects start */
    _Atomic uint64_t shed_seq;  /* storm: first sequence number after the shed */
    _Atomic int64_t delta;      /* offset - sequence number; INT64_MIN: none yet */
};

static struct res_run *res_run_of(const struct bench_thread *t)
{
    return t->b->mode_data;
}

static struct res_sub *res_sub_of(const struct bench_thread *t, const struct bench_conn *c)
{
    return &res_run_of(t)->subs[t->first_gid - t->b->conn_base + c->idx];
}

static struct res_tally *res_tally_of(const struct bench_thread *t)
{
    return &res_run_of(t)->tally[t->id];
}

static void res_max(_Atomic uint64_t *a, uint64_t v)
{
    if (v > stat_get(a))
        atomic_store_explicit(a, v, memory_order_relaxed);
}

static void res_min(_Atomic uint64_t *a, uint64_t v)
{
    uint64_t cur = stat_get(a);

    if (!cur || v < cur)
        atomic_store_explicit(a, v, memory_order_relaxed);
}

static uint64_t res_get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void res_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- header lines ------------------------------------------------------ */

struct res_field {
    const char *p;
    size_t n;
};

/* Splits a header line at single spaces; the number of fields, or -1 when
 * there are more than RES_FIELDS or an empty one. */
static int res_split(const char *line, size_t len, struct res_field f[RES_FIELDS])
{
    int n = 0;
    const char *p = line, *end = line + len;

    while (p <= end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *e = sp ? sp : end;

        if (e == p || n == RES_FIELDS)
            return -1;
        f[n++] = (struct res_field){p, (size_t)(e - p)};
        p = e + 1;
        if (!sp)
            break;
    }
    return n;
}

static bool res_is(const struct res_field *f, const char *s)
{
    return f->n == strlen(s) && !memcmp(f->p, s, f->n);
}

/* A decimal offset below 2^53, as docs/PUBSUB.md bounds them. */
static bool res_offset(const struct res_field *f, uint64_t *v)
{
    *v = 0;
    if (!f->n || f->n > 16)
        return false;
    for (size_t i = 0; i < f->n; i++) {
        if (f->p[i] < '0' || f->p[i] > '9')
            return false;
        *v = *v * 10 + (uint64_t)(f->p[i] - '0');
    }
    return *v < 1ull << 53;
}

static bool res_epoch_valid(const struct res_field *f)
{
    if (f->n != RES_EPOCH_LEN)
        return false;
    for (size_t i = 0; i < f->n; i++)
        if (!((f->p[i] >= '0' && f->p[i] <= '9') || (f->p[i] >= 'a' && f->p[i] <= 'f')))
            return false;
    return true;
}

/* ---- what a subscriber receives ---------------------------------------- */

/* The current connection's resume is complete: its replay (or its gap). */
static void res_resumed(struct bench_thread *t, struct res_sub *s)
{
    struct res_tally *tl = res_tally_of(t);

    s->resuming = false;
    s->replay_to = 0;
    hist_record(&tl->lat, t->now - s->t_conn);
    stat_add(&tl->resumed, 1);
    res_max(&tl->resumed_last_ns, t->now);
}

/* `subscribed TOPIC EPOCH LAST`: the first connection's answer. */
static int res_on_subscribed(struct bench_thread *t, struct res_sub *s,
                             const struct res_field *f)
{
    if (s->subscribed || !res_offset(&f[3], &s->last))
        return -EPROTO;
    memcpy(s->epoch, f[2].p, RES_EPOCH_LEN);
    s->subscribed = true;
    stat_add(&res_tally_of(t)->subscribed, 1);
    return 0;
}

/* `recovered TOPIC EPOCH FROM TO`: FROM..TO follow. */
static int res_on_recovered(struct bench_thread *t, struct res_sub *s,
                            const struct res_field *f)
{
    uint64_t from, to;

    if (!s->resuming || memcmp(f[2].p, s->epoch, RES_EPOCH_LEN) || !res_offset(&f[3], &from) ||
        !res_offset(&f[4], &to) || from != s->last + 1 || to + 1 < from)
        return -EPROTO;
    stat_add(&res_tally_of(t)->recovered, 1);
    if (to >= from)
        s->replay_to = to;
    else
        res_resumed(t, s);
    return 0;
}

/* `gap TOPIC EPOCH OLDEST LAST`: what lies between the position and LAST
 * is given up (lost); a different epoch starts the count anew. */
static int res_on_gap(struct bench_thread *t, struct res_sub *s, const struct res_field *f)
{
    struct res_tally *tl = res_tally_of(t);
    uint64_t oldest, last;

    if (!s->resuming || !res_offset(&f[3], &oldest) || !res_offset(&f[4], &last))
        return -EPROTO;
    stat_add(&tl->gap_notices, 1);
    if (memcmp(f[2].p, s->epoch, RES_EPOCH_LEN)) {
        stat_add(&tl->epoch_changes, 1);
        memcpy(s->epoch, f[2].p, RES_EPOCH_LEN);
    } else if (last > s->last) {
        stat_add(&tl->missed, last - s->last);
    }
    s->last = last;
    res_resumed(t, s);
    return 0;
}

/* A frame's header line: what kind of frame it is, and for a notice what
 * it says.  Anything else than the table of docs/PUBSUB.md is an error. */
static int res_header(struct bench_thread *t, struct res_sub *s, unsigned opcode,
                      const char *line, size_t len)
{
    const struct bench_opts *o = &t->b->o;
    struct res_field f[RES_FIELDS];
    int n = res_split(line, len, f);

    if (n < 4 || !res_is(&f[1], o->topic) || !res_epoch_valid(&f[2]))
        return -EPROTO;
    if (res_is(&f[0], "msg") && n == 4) {
        s->kind = RES_MSG;
        if (memcmp(f[2].p, s->epoch, RES_EPOCH_LEN) || !res_offset(&f[3], &s->cur))
            return -EPROTO;
        /* after the subscription's answer: `subscribed`, or `recovered`
         * with a replay still due (or done, which ends resuming) */
        return s->subscribed && (!s->resuming || s->replay_to) ? 0 : -EPROTO;
    }
    s->kind = RES_NOTICE;
    if (opcode != WS_OP_TEXT)
        return -EPROTO;
    if (res_is(&f[0], "subscribed") && n == 4)
        return res_on_subscribed(t, s, f);
    if (res_is(&f[0], "recovered") && n == 5)
        return res_on_recovered(t, s, f);
    if (res_is(&f[0], "gap") && n == 5)
        return res_on_gap(t, s, f);
    return -EPROTO;
}

/* A whole message at offset s->cur with sequence number seq. */
static void res_on_message(struct bench_thread *t, struct bench_conn *c, struct res_sub *s,
                           uint64_t seq)
{
    struct res_run *run = res_run_of(t);
    struct res_tally *tl = res_tally_of(t);
    int64_t delta = (int64_t)(s->cur - seq), none = INT64_MIN;

    if (s->cur <= s->last) {
        stat_add(&tl->duplicates, 1);
        bench_problem(t, c, "offset %llu again (%llu held)", (unsigned long long)s->cur,
                      (unsigned long long)s->last);
        return;
    }
    if (s->cur > s->last + 1) {
        stat_add(&tl->gaps, 1);
        stat_add(&tl->missed, s->cur - s->last - 1);
        bench_problem(t, c, "offset %llu came while %llu was due", (unsigned long long)s->cur,
                      (unsigned long long)s->last + 1);
    }
    if (!atomic_compare_exchange_strong(&run->delta, &none, delta) && none != delta) {
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "offset %llu holds message #%llu: offsets and messages disagree",
                      (unsigned long long)s->cur, (unsigned long long)seq);
    }
    s->last = s->cur;
    s->last_seq = seq;
    stat_add(&t->st.echoed, 1);
    atomic_store_explicit(&t->st.last_rx_ns, t->now, memory_order_relaxed);
    if (s->replay_to) {
        stat_add(&tl->replayed, 1);
        if (s->cur >= s->replay_to)
            res_resumed(t, s);
    }
    if (s->waiting_live && seq >= atomic_load_explicit(&run->shed_seq, memory_order_relaxed)) {
        s->waiting_live = false;
        stat_add(&tl->live, 1);
        res_min(&tl->live_first_ns, t->now);
        res_max(&tl->live_last_ns, t->now);
    }
}

static void res_bad_frame(struct bench_thread *t, struct bench_conn *c, const char *what)
{
    stat_add(&t->st.protocol_errors, 1);
    bench_problem(t, c, "%s", what);
    bench_conn_close(t, c);
}

/* Takes the header line from the start of a frame's data: in place when
 * the line ends in this chunk (the usual case), else gathered.  Returns
 * the bytes of the chunk that belong to the line (with its line feed). */
static size_t res_take_line(struct bench_thread *t, struct bench_conn *c, struct res_sub *s,
                            const struct wsc_event *ev)
{
    const uint8_t *nl = memchr(ev->data, '\n', ev->len);
    size_t take = nl ? (size_t)(nl - ev->data) : ev->len;
    const char *line = (const char *)ev->data;
    size_t len = take;

    if (s->line_len || !nl) {
        if (s->line_len + take > sizeof s->line) {
            s->kind = RES_BAD;
            res_bad_frame(t, c, "a header line longer than any the envelope has");
            return ev->len;
        }
        memcpy(s->line + s->line_len, ev->data, take);
        s->line_len = (uint16_t)(s->line_len + take);
        if (!nl)
            return take;
        line = s->line;
        len = s->line_len;
    }
    s->in_body = true;
    if (res_header(t, s, ev->opcode, line, len) < 0) {
        s->kind = RES_BAD;
        stat_add(&t->st.protocol_errors, 1);
        bench_problem(t, c, "unexpected header line \"%.*s\"", (int)(len < 160 ? len : 160),
                      line);
        bench_conn_close(t, c);
    }
    return take + 1;
}

static void res_on_data(struct bench_thread *t, struct bench_conn *c,
                        const struct wsc_event *ev)
{
    struct res_sub *s = res_sub_of(t, c);
    size_t used = 0, body;

    if (ev->msg_start) {
        s->kind = RES_NONE;
        s->in_body = false;
        s->line_len = 0;
        c->msg_off = 0;
    }
    if (s->kind == RES_BAD)
        return;
    if (!s->in_body)
        used = res_take_line(t, c, s, ev);
    if (s->kind == RES_BAD)
        return;
    body = ev->len - used;
    if (s->kind == RES_MSG && c->msg_off < BENCH_FANOUT_HEAD) {
        size_t take = BENCH_FANOUT_HEAD - c->msg_off;

        memcpy(c->head + c->msg_off, ev->data + used, take < body ? take : body);
    }
    c->msg_off += body;
    if (!ev->msg_end)
        return;
    if (!s->in_body)
        res_bad_frame(t, c, "a frame without a header line");
    else if (s->kind == RES_NOTICE && c->msg_off)
        res_bad_frame(t, c, "a notice with a body");
    else if (s->kind == RES_MSG && (ev->opcode != WS_OP_BINARY || c->msg_off != t->b->o.size))
        res_bad_frame(t, c, "a message differs from any published");
    else if (s->kind == RES_MSG)
        res_on_message(t, c, s, res_get_le64(c->head));
}

static void res_on_open(struct bench_thread *t, struct bench_conn *c)
{
    struct res_sub *s = res_sub_of(t, c);
    struct res_tally *tl = res_tally_of(t);

    s->t_conn = c->t_start;
    s->resuming = s->subscribed;
    s->replay_to = 0;
    if (s->resuming) {
        stat_add(&tl->reconnects, 1);
        res_min(&tl->reopen_first_ns, t->now);
        res_max(&tl->reopen_last_ns, t->now);
    }
}

/* The first connection subscribes; the next ones give the position held. */
static size_t res_target(struct bench_thread *t, struct bench_conn *c, char *buf, size_t cap)
{
    const struct bench_opts *o = &t->b->o;
    const struct res_sub *s = res_sub_of(t, c);
    int n = s->subscribed
                ? snprintf(buf, cap, "%s&since=%s:%.*s:%llu", o->path, o->topic, RES_EPOCH_LEN,
                           s->epoch, (unsigned long long)s->last)
                : snprintf(buf, cap, "%s", o->path);

    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* The milliseconds of "retry after N ms" in a close reason; false when
 * the reason names none. */
static bool res_hint_ms(const char *reason, size_t len, uint64_t *ms)
{
    static const char key[] = "retry after ";
    const char *p = memmem(reason, len, key, sizeof key - 1), *end = reason + len;

    if (!p)
        return false;
    p += sizeof key - 1;
    *ms = 0;
    if (p == end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9' && *ms < 1000000000ull)
        *ms = *ms * 10 + (uint64_t)(*p++ - '0');
    return end - p >= 3 && !memcmp(p, " ms", 3);
}

/* The server sheds or stops: come back when the close says, with the
 * position held.  A close without the hint comes back at once (and is
 * counted: docs/PUBSUB.md promises the hint). */
static bool res_on_close(struct bench_thread *t, struct bench_conn *c, unsigned code,
                         const char *reason, size_t len)
{
    struct res_run *run = res_run_of(t);
    struct res_tally *tl = res_tally_of(t);
    struct res_sub *s = res_sub_of(t, c);
    uint64_t ms = 0;

    if (code != WS_CLOSE_SERVICE_RESTART && code != WS_CLOSE_GOING_AWAY)
        return false;
    stat_add(&tl->shed, 1);
    if (!res_hint_ms(reason, len, &ms))
        stat_add(&tl->no_hint, 1);
    res_max(&tl->hint_max_ms, ms);
    s->waiting_live = run->storm;
    bench_conn_retry(t, c, t->now + ms * 1000000ull);
    return true;
}

/* The resume mode's phases, acted on once by each thread. */
static void res_tick(struct bench_thread *t)
{
    struct res_run *run = res_run_of(t);
    struct res_tally *tl = res_tally_of(t);
    unsigned phase = atomic_load_explicit(&run->phase, memory_order_acquire);

    if (phase == tl->phase_done)
        return;
    tl->phase_done = phase;
    for (unsigned i = 0; i < t->n_conns; i++) {
        struct bench_conn *c = &t->conns[i];

        if (phase == RES_CLOSE && c->state == BC_OPEN)
            bench_conn_close(t, c);
        else if (phase == RES_RESUME && c->state == BC_DONE && res_sub_of(t, c)->subscribed)
            bench_conn_retry(t, c, atomic_load(&run->resume_ns));
    }
}

static uint32_t res_out_cap(const struct bench_opts *o)
{
    (void)o;
    /* The upgrade request with a position, then a pong and a close. */
    return 768 + 2 * (WSC_MAX_HEAD + BENCH_CTL_MAX);
}

/* ---- the main thread ----------------------------------------------------- */

struct res_sum {
    uint64_t subscribed, recovered, gap_notices, epoch_changes, resumed, replayed;
    uint64_t live, reconnects, shed, no_hint, hint_max_ms, duplicates, gaps, missed;
    uint64_t resumed_last_ns, reopen_first_ns, reopen_last_ns, live_first_ns, live_last_ns;
};

static void res_sum(const struct bench *b, struct res_sum *r)
{
    const struct res_run *run = b->mode_data;

    memset(r, 0, sizeof *r);
    for (unsigned i = 0; i < b->o.threads; i++) {
        struct res_tally *tl = &run->tally[i];
        uint64_t v;

        r->subscribed += stat_get(&tl->subscribed);
        r->recovered += stat_get(&tl->recovered);
        r->gap_notices += stat_get(&tl->gap_notices);
        r->epoch_changes += stat_get(&tl->epoch_changes);
        r->resumed += stat_get(&tl->resumed);
        r->replayed += stat_get(&tl->replayed);
        r->live += stat_get(&tl->live);
        r->reconnects += stat_get(&tl->reconnects);
        r->shed += stat_get(&tl->shed);
        r->no_hint += stat_get(&tl->no_hint);
        r->duplicates += stat_get(&tl->duplicates);
        r->gaps += stat_get(&tl->gaps);
        r->missed += stat_get(&tl->missed);
        if ((v = stat_get(&tl->hint_max_ms)) > r->hint_max_ms)
            r->hint_max_ms = v;
        if ((v = stat_get(&tl->resumed_last_ns)) > r->resumed_last_ns)
            r->resumed_last_ns = v;
        if ((v = stat_get(&tl->reopen_last_ns)) > r->reopen_last_ns)
            r->reopen_last_ns = v;
        if ((v = stat_get(&tl->live_last_ns)) > r->live_last_ns)
            r->live_last_ns = v;
        if ((v = stat_get(&tl->reopen_first_ns)) && (!r->reopen_first_ns || v < r->reopen_first_ns))
            r->reopen_first_ns = v;
        if ((v = stat_get(&tl->live_first_ns)) && (!r->live_first_ns || v < r->live_first_ns))
            r->live_first_ns = v;
    }
}

/* Waits (polling) until done(b) holds, the deadline passes, every thread
 * has ended, or the run is interrupted; whether done(b) held. */
static bool res_wait(struct bench *b, uint64_t deadline, bool (*done)(struct bench *b))
{
    for (;;) {
        struct timespec ts = {.tv_nsec = (long)RES_STEP_NS};
        struct bench_sum s;

        if (done(b))
            return true;
        bench_sum(b, &s);
        if (bench_now_ns() >= deadline || s.finished == b->o.threads ||
            atomic_load(&b->interrupted))
            return false;
        nanosleep(&ts, NULL);
    }
}

static bool res_all_subscribed(struct bench *b)
{
    struct res_sum r;

    res_sum(b, &r);
    return r.subscribed == b->o.conns;
}

static bool res_all_closed(struct bench *b)
{
    struct bench_sum s;

    bench_sum(b, &s);
    return s.open_now == 0 && s.closed + s.unexpected_closes >= b->o.conns;
}

static bool res_all_resumed(struct bench *b)
{
    struct res_sum r;

    res_sum(b, &r);
    return r.resumed >= r.subscribed;
}

/* Publishes message #seq (its publish time inside); 0 or -errno, said. */
static int res_publish(struct publisher *pub, uint8_t *body, size_t size, uint64_t seq)
{
    struct wsc_answer a;
    const char *why;
    int ret;

    res_put_le64(body, seq);
    res_put_le64(body + 8, bench_now_ns());
    ret = publisher_send(pub, body, size, &a, &why);
    if (ret < 0) {
        fprintf(stderr, "ringws-bench: publish #%llu: %s (%s)\n", (unsigned long long)seq, why,
                strerror(-ret));
        return ret;
    }
    if (a.status != 200) {
        fprintf(stderr, "ringws-bench: publish #%llu: status %u: %.*s\n",
                (unsigned long long)seq, a.status, (int)(a.body_len < 200 ? a.body_len : 200),
                a.body);
        return -EPROTO;
    }
    return 0;
}

struct res_pub {
    struct publisher pub;
    uint8_t *body;
    uint64_t published, errors;
    uint64_t answer_max_ns; /* the slowest publish answer */
};

static int res_pub_open(struct res_pub *p, struct bench *b)
{
    *p = (struct res_pub){0};
    p->body = calloc(1, b->o.size);
    if (!p->body || publisher_init(&p->pub, &b->o, b->tls) < 0) {
        free(p->body);
        return -ENOMEM;
    }
    return 0;
}

/* The next message; false once one failed (sequence numbers must stay
 * contiguous, so publishing stops there). */
static bool res_pub_next(struct res_pub *p, const struct bench_opts *o)
{
    uint64_t t0 = bench_now_ns(), took;

    if (p->errors || res_publish(&p->pub, p->body, o->size, p->published) < 0) {
        p->errors = 1;
        return false;
    }
    took = bench_now_ns() - t0;
    if (took > p->answer_max_ns)
        p->answer_max_ns = took;
    p->published++;
    return true;
}

static void res_pub_close(struct res_pub *p)
{
    publisher_close(&p->pub);
    free(p->pub.req);
    free(p->body);
}

/* Messages published and never received: after the last one held, up to
 * the last published, for every subscriber (run after the threads end). */
static uint64_t res_tail_lost(const struct bench *b, uint64_t published)
{
    const struct res_run *run = b->mode_data;
    uint64_t lost = 0;

    if (!published)
        return 0;
    for (unsigned i = 0; i < b->o.conns; i++) {
        const struct res_sub *s = &run->subs[i];
        uint64_t have = s->last_seq == UINT64_MAX ? 0 : s->last_seq + 1;

        if (s->subscribed && have < published)
            lost += published - have;
    }
    return lost;
}

struct res_figures {
    uint64_t t_go, t_subscribed, t_mark, t_all, published, cpu0, cpu1;
    uint64_t rss0_kb, rss1_kb; /* the server's, before the first publish and once resumed */
    double self0, self1;
    bool have_cpu, have_rss;
};

static void res_cpu_start(struct bench *b, struct res_figures *fig)
{
    fig->have_cpu = proc_server_cpu_ticks(&b->o, &fig->cpu0) == 0;
    fig->self0 = proc_self_cpu_s();
}

static void res_cpu_end(struct bench *b, struct res_figures *fig)
{
    if (fig->have_cpu)
        fig->have_cpu = proc_server_cpu_ticks(&b->o, &fig->cpu1) == 0;
    fig->self1 = proc_self_cpu_s();
}

static double res_ms(uint64_t from, uint64_t to)
{
    return from && to > from ? (double)(to - from) / 1e6 : 0;
}

static void res_report_common(struct report *r, struct bench *b, const struct res_sum *x,
                              const struct res_figures *fig)
{
    const struct bench_opts *o = &b->o;

    report_str(r, "url", o->url);
    report_str(r, "topic", o->topic);
    report_u64(r, "threads", o->threads);
    report_u64(r, "src_addrs", o->src_addrs);
    report_u64(r, "subscribers_wanted", o->conns);
    report_u64(r, "subscribers", x->subscribed);
    report_num(r, "subscribe_s", (double)(fig->t_subscribed - fig->t_go) / 1e9, 2);
    report_u64(r, "size", o->size);
    report_u64(r, "published", fig->published);
    report_u64(r, "reconnects", x->reconnects);
    report_u64(r, "recovered", x->recovered);
    report_u64(r, "gap_notices", x->gap_notices);
    report_u64(r, "epoch_changes", x->epoch_changes);
    report_u64(r, "replayed", x->replayed);
}

static void res_report_tail(struct report *r, struct bench *b, const struct res_sum *x,
                            struct bench_sum *s, const struct res_figures *fig,
                            const char *unit, uint64_t count)
{
    report_u64(r, "delivered", s->echoed);
    report_u64(r, "duplicates", x->duplicates);
    report_u64(r, "gaps", x->gaps);
    report_cpu(r, fig->have_cpu, proc_ticks_to_s(fig->cpu1 - fig->cpu0), unit, count, 1,
               fig->self1 - fig->self0, (double)(fig->t_all - fig->t_mark) / 1e9);
    report_tls(r, &b->o, s, bench_tls_desc(b));
    report_errors(r, s);
}

static bool res_failed(const struct bench *b, const struct res_sum *x, const struct bench_sum *s)
{
    return bench_failed(s) || x->duplicates || x->gaps || x->gap_notices ||
           x->subscribed != b->o.conns || x->reconnects != x->subscribed;
}

static int res_alloc(struct bench *b, bool storm)
{
    struct res_run *run = calloc(1, sizeof *run);

    if (!run)
        return -ENOMEM;
    b->mode_data = run;
    run->storm = storm;
    atomic_store(&run->shed_seq, UINT64_MAX);
    atomic_store(&run->delta, INT64_MIN);
    run->subs = calloc(b->o.conns, sizeof *run->subs);
    run->tally = calloc(b->o.threads, sizeof *run->tally);
    if (!run->subs || !run->tally)
        return -ENOMEM;
    for (unsigned i = 0; i < b->o.conns; i++)
        run->subs[i].last_seq = UINT64_MAX;
    for (unsigned i = 0; i < b->o.threads; i++)
        hist_init(&run->tally[i].lat);
    return 0;
}

static void res_free(struct bench *b)
{
    struct res_run *run = b->mode_data;

    if (!run)
        return;
    free(run->subs);
    free(run->tally);
    free(run);
    b->mode_data = NULL;
}

/* Starts the subscribers and waits until each had its `subscribed`. */
static int res_start(struct bench *b, struct res_figures *fig, bool storm)
{
    int ret = res_alloc(b, storm);

    if (ret < 0)
        return ret;
    fig->t_go = bench_now_ns();
    atomic_store(&b->go_ns, fig->t_go);
    if ((ret = bench_threads_start(b)) < 0)
        return ret;
    res_wait(b, fig->t_go + (uint64_t)(b->o.timeout_s * 1e9) + bench_open_ns(&b->o),
             res_all_subscribed);
    fig->t_subscribed = bench_now_ns();
    return 0;
}

static void res_stop(struct bench *b)
{
    uint64_t now = bench_now_ns();

    bench_stop_at(b, now);
    bench_wait(b, now + bench_grace_ns(&b->o) + 1000000000ull, false, NULL);
    bench_threads_join(b);
}

/* ---- resume ----------------------------------------------------------- */

static void resume_report(struct bench *b, const struct res_figures *fig)
{
    const struct res_run *run = b->mode_data;
    struct hist *lat = malloc(sizeof *lat);
    struct bench_sum s;
    struct res_sum x;
    struct report r;

    if (!lat)
        return;
    hist_init(lat);
    for (unsigned i = 0; i < b->o.threads; i++)
        hist_merge(lat, &run->tally[i].lat);
    res_sum(b, &x);
    bench_sum(b, &s);
    s.lost += x.missed + res_tail_lost(b, fig->published);
    report_begin(&r, b->o.json);
    report_str(&r, "mode", "resume");
    res_report_common(&r, b, &x, fig);
    report_u64(&r, "missed_per_subscriber", b->o.messages);
    report_u64(&r, "replayed_expected", x.subscribed * b->o.messages);
    report_u64(&r, "resumed", x.resumed);
    report_num(&r, "resume_us_p50", (double)hist_percentile(lat, 50) / 1e3, 1);
    report_num(&r, "resume_us_p99", (double)hist_percentile(lat, 99) / 1e3, 1);
    report_num(&r, "resume_us_max", (double)lat->max / 1e3, 1);
    report_num(&r, "all_resumed_ms", res_ms(fig->t_mark, x.resumed_last_ns), 1);
    /* What the history holds once every message was replayed in the
     * envelope (each frame built), per message published. */
    if (fig->have_rss) {
        report_u64(&r, "server_rss_kib_before", fig->rss0_kb);
        report_u64(&r, "server_rss_kib_resumed", fig->rss1_kb);
        report_num(&r, "server_bytes_per_message",
                   ((double)fig->rss1_kb - (double)fig->rss0_kb) * 1024.0 /
                       (double)(fig->published ? fig->published : 1), 0);
    }
    res_report_tail(&r, b, &x, &s, fig, "resume", x.resumed);
    report_end(&r);
    free(lat);
}

static int resume_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    struct res_figures fig = {0};
    struct res_run *run;
    struct res_pub pub;
    struct bench_sum s;
    struct res_sum x;
    int ret = res_pub_open(&pub, b);

    if (ret < 0)
        return ret;
    fig.have_rss = proc_server_rss_kb(o, &fig.rss0_kb) == 0;
    /* A topic with neither subscribers nor messages is forgotten (its
     * epoch with it) past --sequence-idle, at once with 0: one message
     * before the subscribers keeps it while they are away whatever the
     * server's setting. */
    if (!res_pub_next(&pub, o) || (ret = res_start(b, &fig, false)) < 0) {
        res_pub_close(&pub);
        res_free(b);
        return ret < 0 ? ret : -EPROTO;
    }
    run = b->mode_data;
    atomic_store_explicit(&run->phase, RES_CLOSE, memory_order_release);
    res_wait(b, bench_now_ns() + (uint64_t)(o->timeout_s * 1e9), res_all_closed);
    while (pub.published < o->messages + 1 && res_pub_next(&pub, o))
        ;
    fig.published = pub.published;
    res_pub_close(&pub);
    res_cpu_start(b, &fig);
    fig.t_mark = bench_now_ns();
    atomic_store(&run->resume_ns, fig.t_mark);
    atomic_store_explicit(&run->phase, RES_RESUME, memory_order_release);
    res_wait(b, fig.t_mark + (uint64_t)(o->timeout_s * 1e9) + bench_open_ns(o),
             res_all_resumed);
    fig.t_all = bench_now_ns();
    res_cpu_end(b, &fig);
    if (fig.have_rss)
        fig.have_rss = proc_server_rss_kb(o, &fig.rss1_kb) == 0;
    res_stop(b);
    resume_report(b, &fig);
    res_sum(b, &x);
    bench_sum(b, &s);
    ret = res_failed(b, &x, &s) || x.missed || pub.errors || x.resumed != x.subscribed ||
          x.replayed != x.subscribed * o->messages || res_tail_lost(b, fig.published);
    res_free(b);
    return ret;
}

/* ---- storm ------------------------------------------------------------ */

struct storm_figures {
    struct res_figures f;
    uint64_t t_shed, shed_seq, t_end, t_last_pub, answer_max_ns;
    bool all_live;
};

static void storm_report(struct bench *b, const struct storm_figures *st)
{
    struct bench_sum s;
    struct res_sum x;
    struct report r;

    res_sum(b, &x);
    bench_sum(b, &s);
    s.lost += x.missed + res_tail_lost(b, st->f.published);
    report_begin(&r, b->o.json);
    report_str(&r, "mode", "storm");
    res_report_common(&r, b, &x, &st->f);
    report_num(&r, "rate_per_s", b->o.rate, 1);
    report_u64(&r, "published_before_shed", st->shed_seq);
    /* The publisher waits for each answer: a server busy with the storm
     * answers late, and fewer messages than --rate asks are published. */
    report_num(&r, "publish_rate_after_shed",
               st->t_last_pub > st->t_shed
                   ? (double)(st->f.published - st->shed_seq) * 1e9 /
                         (double)(st->t_last_pub - st->t_shed)
                   : 0,
               1);
    report_num(&r, "publish_answer_ms_max", (double)st->answer_max_ns / 1e6, 1);
    report_u64(&r, "shed", x.shed);
    report_u64(&r, "closes_without_hint", x.no_hint);
    report_u64(&r, "retry_hint_ms_max", x.hint_max_ms);
    report_num(&r, "first_reconnect_ms", res_ms(st->t_shed, x.reopen_first_ns), 1);
    report_num(&r, "last_reconnect_ms", res_ms(st->t_shed, x.reopen_last_ns), 1);
    report_u64(&r, "live_again", x.live);
    report_num(&r, "first_live_ms", res_ms(st->t_shed, x.live_first_ns), 1);
    report_num(&r, "all_live_ms", st->all_live ? res_ms(st->t_shed, x.live_last_ns) : 0, 1);
    res_report_tail(&r, b, &x, &s, &st->f, "reconnect", x.reconnects);
    report_end(&r);
}

static bool storm_all_live(struct bench *b)
{
    struct res_sum x;

    res_sum(b, &x);
    return x.live >= x.subscribed;
}

/* Publishes at --rate, sheds after RES_SHED_AFTER_NS, and goes on until
 * every subscriber is live again (or --timeout after the shed) and
 * RES_TAIL_NS more. */
static int storm_publish(struct bench *b, struct storm_figures *st)
{
    const struct bench_opts *o = &b->o;
    struct res_run *run = b->mode_data;
    uint64_t period = (uint64_t)(1e9 / o->rate), t0 = bench_now_ns();
    struct res_pub pub;
    int ret = res_pub_open(&pub, b);

    if (ret < 0)
        return ret;
    st->t_end = UINT64_MAX;
    while (!atomic_load(&b->interrupted)) {
        uint64_t now = bench_now_ns(), due = t0 + pub.published * period;

        if (!st->t_shed && now >= t0 + RES_SHED_AFTER_NS) {
            st->shed_seq = pub.published;
            atomic_store(&run->shed_seq, st->shed_seq);
            st->t_shed = now;
            res_cpu_start(b, &st->f);
            st->f.t_mark = now;
            if (kill(o->server_pids[0], SIGUSR2) < 0) {
                ret = -errno;
                break;
            }
        }
        if (st->t_shed && st->t_end == UINT64_MAX &&
            ((st->all_live = storm_all_live(b)) || now > st->t_shed + (uint64_t)(o->timeout_s * 1e9)))
            st->t_end = now + RES_TAIL_NS;
        if (now >= st->t_end)
            break;
        if (now >= due) {
            if (!res_pub_next(&pub, o))
                break;
            st->t_last_pub = bench_now_ns();
            continue;
        }
        nanosleep(&(struct timespec){.tv_nsec = (long)(due - now < RES_STEP_NS ? due - now
                                                                              : RES_STEP_NS)},
                  NULL);
    }
    st->f.published = pub.published;
    st->answer_max_ns = pub.answer_max_ns;
    if (pub.errors && !ret)
        ret = -EPROTO;
    res_pub_close(&pub);
    return ret;
}

/* Waits until no delivery came for RES_QUIET_NS (bounded by --timeout). */
static void storm_drain(struct bench *b)
{
    uint64_t until = bench_now_ns() + (uint64_t)(b->o.timeout_s * 1e9);

    for (;;) {
        struct bench_sum s;
        uint64_t now = bench_now_ns();

        bench_sum(b, &s);
        if (now >= until || atomic_load(&b->interrupted) ||
            (s.last_rx_ns && now - s.last_rx_ns > RES_QUIET_NS))
            return;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000}, NULL);
    }
}

static int storm_run(struct bench *b)
{
    struct storm_figures st = {0};
    struct bench_sum s;
    struct res_sum x;
    int ret, pret;

    if (!b->o.n_server_pids) {
        fprintf(stderr, "ringws-bench: storm needs --server-pid: the server to shed with SIGUSR2\n");
        return -EINVAL;
    }
    if ((ret = res_start(b, &st.f, true)) < 0) {
        res_free(b);
        return ret;
    }
    pret = res_all_subscribed(b) ? storm_publish(b, &st) : -ETIMEDOUT;
    if (pret < 0)
        fprintf(stderr, "ringws-bench: storm: %s\n", strerror(-pret));
    storm_drain(b);
    st.f.t_all = bench_now_ns();
    res_cpu_end(b, &st.f);
    res_stop(b);
    storm_report(b, &st);
    res_sum(b, &x);
    bench_sum(b, &s);
    ret = pret < 0 || res_failed(b, &x, &s) || x.missed || !st.all_live || x.no_hint ||
          res_tail_lost(b, st.f.published);
    res_free(b);
    return ret;
}

/* ---- the modes ------------------------------------------------------- */

const struct bench_mode bench_mode_resume = {
    .name = "resume",
    .summary = "N ringws.v1 subscribers leave, M publishes, all resume: replay time",
    .run = resume_run,
    .on_open = res_on_open,
    .on_data = res_on_data,
    .out_cap = res_out_cap,
    .target = res_target,
    .on_close = res_on_close,
    .tick = res_tick,
    .quiet = true,
};

const struct bench_mode bench_mode_storm = {
    .name = "storm",
    .summary = "N ringws.v1 subscribers shed by SIGUSR2 while publishing: all back, none lost",
    .run = storm_run,
    .on_open = res_on_open,
    .on_data = res_on_data,
    .out_cap = res_out_cap,
    .target = res_target,
    .on_close = res_on_close,
    .quiet = true,
};
