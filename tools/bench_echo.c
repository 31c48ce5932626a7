/* bench_echo.c - the echo mode: pipelined round trips over every connection.
 *
 * Why it exists: messages per second, round-trip latency and byte-exact
 * echoes are the first thing a WebSocket server is judged by.  Each
 * connection keeps --inflight messages outstanding; the send time of each is
 * kept in a per-connection queue (echoes come back in order), and every
 * payload is a pure function of (run, connection, sequence number), so an
 * echo is checked chunk by chunk against what it must be without keeping a
 * copy, at any size and however the server's frames are split.  With
 * --notifications the payload is instead an entry of bench_notify.c's pool,
 * chosen by the same seed, and compared with it. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frame.h"
#include "unmask.h"

static uint64_t echo_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t echo_seed(const struct bench_thread *t, const struct bench_conn *c,
                          uint64_t seq)
{
    return echo_mix(t->b->salt ^ ((uint64_t)(t->first_gid + c->idx) << 40) ^ seq);
}

/* Bytes [off, off + n) of the payload for `seed`.  Text payloads stay in
 * printable ASCII so that they are valid UTF-8. */
static void echo_pattern(uint8_t *dst, uint64_t seed, uint64_t off, size_t n, bool text)
{
    while (n) {
        uint64_t w = echo_mix(seed + (off >> 3));

        for (unsigned k = off & 7; k < 8 && n; k++, n--, off++) {
            uint8_t v = (uint8_t)(w >> (8 * k));

            *dst++ = text ? (uint8_t)(0x30 + (v & 0x3f)) : v;
        }
    }
}

static bool echo_check(const uint8_t *p, uint64_t seed, uint64_t off, size_t n, bool text)
{
    uint8_t want[512];

    while (n) {
        size_t k = n < sizeof want ? n : sizeof want;

        echo_pattern(want, seed, off, k, text);
        if (memcmp(p, want, k))
            return false;
        p += k;
        off += k;
        n -= k;
    }
    return true;
}

static uint32_t echo_out_cap(const struct bench_opts *o)
{
    size_t wire = o->size + (o->notifications ? BENCH_NOTIFY_SLACK : 0);

    return (uint32_t)(o->inflight * (WSC_MAX_HEAD + wire) +
                      2 * (WSC_MAX_HEAD + BENCH_CTL_MAX) + 512);
}

static void echo_on_open(struct bench_thread *t, struct bench_conn *c)
{
    if (!c->ts)
        c->ts = calloc(t->b->o.inflight, sizeof *c->ts);
    if (!c->ts) {
        bench_problem(t, c, "out of memory");
        bench_conn_close(t, c);
        return;
    }
    c->owed = 0;
    c->msg_off = 0;
    if (t->go_seen && !t->stopping) {
        c->owed = t->b->o.inflight;
        bench_conn_dirty(t, c);
    }
}

static void echo_on_go(struct bench_thread *t)
{
    for (unsigned i = 0; i < t->n_conns; i++) {
        struct bench_conn *c = &t->conns[i];

        if (c->state == BC_OPEN) {
            c->owed = t->b->o.inflight;
            bench_conn_dirty(t, c);
        }
    }
}

/* Queues one message of --notifications: a pool entry, compressed (RSV1
 * on its only frame) when the pool holds the compressed forms and the
 * server agreed to permessage-deflate on this connection. */
static bool echo_put_notify(struct bench_thread *t, struct bench_conn *c,
                            const struct bench_notify *n)
{
    unsigned k = notify_pick(n, echo_seed(t, c, c->sent)), first = WS_FIN | WS_OP_TEXT;
    const uint8_t *src = n->plain + (size_t)k * n->size;
    size_t len = n->size, h;
    uint64_t r;
    uint8_t *p;

    if (n->z && c->rx.deflate) {
        first |= WS_RSV1;
        src = n->z + n->z_off[k];
        len = n->z_off[k + 1] - n->z_off[k];
    }
    p = bench_out_reserve(c, (uint32_t)(WSC_MAX_HEAD + len));
    if (!p)
        return false;
    r = bench_rand(t);
    h = wsc_frame_write(p, first, src, len, (const uint8_t *)&r);
    bench_out_commit(t, c, (uint32_t)h);
    if (first & WS_RSV1)
        stat_add(&t->st.sent_compressed, 1);
    return true;
}

/* Queues one message of the pattern of (run, connection, sequence); first
 * is FIN and its opcode. */
static bool echo_put_pattern(struct bench_thread *t, struct bench_conn *c,
                             const struct bench_opts *o, unsigned first)
{
    uint8_t *p = bench_out_reserve(c, (uint32_t)(WSC_MAX_HEAD + o->size));
    uint64_t r;
    size_t h;

    if (!p)
        return false;
    r = bench_rand(t);
    h = wsc_frame_head(p, first, o->size, (const uint8_t *)&r);
    echo_pattern(p + h, echo_seed(t, c, c->sent), 0, o->size, o->text);
    ws_unmask(p + h, o->size, (const uint8_t *)&r, 0);
    bench_out_commit(t, c, (uint32_t)(h + o->size));
    return true;
}

static void echo_fill(struct bench_thread *t, struct bench_conn *c)
{
    const struct bench_opts *o = &t->b->o;
    const struct bench_notify *n = t->b->notify;
    unsigned first = WS_FIN | (o->text ? WS_OP_TEXT : WS_OP_BINARY);

    while (c->owed && !t->stopping) {
        if (!t->budget) {
            t->stopping = true; /* the sweep closes connections as they drain */
            break;
        }
        if (!(n ? echo_put_notify(t, c, n) : echo_put_pattern(t, c, o, first)))
            break;
        c->ts[c->sent % o->inflight] = t->now;
        c->sent++;
        c->owed--;
        if (t->budget != UINT64_MAX)
            t->budget--;
    }
}

/* Whether received bytes [off, off + len) of message seq are what was sent. */
static bool echo_matches(const struct bench_thread *t, const struct bench_conn *c,
                         uint64_t seq, const struct wsc_event *ev)
{
    const struct bench_opts *o = &t->b->o;
    const struct bench_notify *n = t->b->notify;
    uint64_t seed = echo_seed(t, c, seq);

    if (n)
        return !memcmp(ev->data, n->plain + (size_t)notify_pick(n, seed) * n->size +
                                     c->msg_off, ev->len);
    return echo_check(ev->data, seed, c->msg_off, ev->len, o->text);
}

static void echo_on_data(struct bench_thread *t, struct bench_conn *c,
                         const struct wsc_event *ev)
{
    const struct bench_opts *o = &t->b->o;
    uint8_t want_op = o->text ? WS_OP_TEXT : WS_OP_BINARY;

    if (ev->msg_start) {
        c->msg_off = 0;
        c->msg_bad = ev->opcode != want_op || c->rcvd >= c->sent;
    }
    if (!c->msg_bad && ev->len) {
        c->msg_bad = c->msg_off + ev->len > o->size || !echo_matches(t, c, c->rcvd, ev);
    }
    c->msg_off += ev->len;
    if (!ev->msg_end)
        return;
    if (c->rcvd >= c->sent) {
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "a message nobody sent (opcode %u, %llu bytes)", ev->opcode,
                      (unsigned long long)c->msg_off);
        return;
    }
    if (c->msg_bad || c->msg_off != o->size) {
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "echo #%llu differs (opcode %u, %llu bytes)",
                      (unsigned long long)c->rcvd, ev->opcode,
                      (unsigned long long)c->msg_off);
    }
    hist_record(&t->lat, t->now - c->ts[c->rcvd % o->inflight]);
    c->rcvd++;
    stat_add(&t->st.echoed, 1);
    stat_add(&t->st.echoed_bytes, o->size);
    if (t->now < t->stop_ns)
        stat_add(&t->st.echoed_window, 1);
    atomic_store_explicit(&t->st.last_rx_ns, t->now, memory_order_relaxed);
    if (!t->stopping) {
        c->owed++;
        bench_conn_dirty(t, c);
    } else if (c->rcvd == c->sent) {
        bench_conn_close(t, c);
    }
}

static bool echo_drained(const struct bench_conn *c)
{
    return c->rcvd >= c->sent;
}

static void echo_line(struct bench *b, double t_s)
{
    static uint64_t prev, prev_ns;
    struct bench_sum s;
    uint64_t now = bench_now_ns();
    double rate;

    bench_sum(b, &s);
    if (!prev_ns)
        prev_ns = atomic_load(&b->go_ns); /* the first line covers the first second */
    rate = now > prev_ns ? (double)(s.echoed - prev) * 1e9 / (double)(now - prev_ns) : 0;
    fprintf(stderr, "[%5.1fs] echo: %.0f msg/s, %llu echoed, %llu/%u open, "
            "%llu mismatches, %llu errors\n", t_s, rate, (unsigned long long)s.echoed,
            (unsigned long long)s.open_now, b->o.conns, (unsigned long long)s.mismatches,
            (unsigned long long)(s.unexpected_closes + s.protocol_errors + s.lost));
    prev = s.echoed;
    prev_ns = now;
}

/* Waits until every connection has opened or failed, or the time runs out. */
static void echo_wait_open(struct bench *b)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)(b->o.timeout_s * 1e9) + bench_open_ns(&b->o);
    struct bench_sum s;

    for (;;) {
        struct timespec ts = {.tv_nsec = 5 * 1000000};

        bench_sum(b, &s);
        if (s.opened + s.connect_errors + s.handshake_errors + s.handshake_timeouts +
                s.unexpected_closes >= b->o.conns ||
            s.finished == b->o.threads || bench_now_ns() > deadline)
            return;
        nanosleep(&ts, NULL);
    }
}

static int echo_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    uint64_t go, stop, end, cpu0 = 0, cpu1 = 0;
    double self0, self1, window;
    bool have_cpu = false;
    struct bench_sum s;
    struct hist lat;
    struct report r;
    struct bench_notify pool;
    int ret;

    if (o->notifications) {
        if ((ret = notify_build(&pool, o->size, o->deflate)) < 0) {
            notify_free(&pool);
            return ret;
        }
        b->notify = &pool;
    }
    ret = bench_threads_start(b);
    if (ret < 0)
        goto out;
    echo_wait_open(b);
    bench_sum(b, &s);
    go = bench_now_ns();
    stop = s.opened ? go + (uint64_t)(o->duration_s * 1e9) : go;
    have_cpu = proc_server_cpu_ticks(o, &cpu0) == 0;
    self0 = proc_self_cpu_s();
    bench_stop_at(b, stop);
    atomic_store(&b->go_ns, go);
    bench_wait(b, stop, o->duration_s > 2, echo_line);
    end = bench_now_ns();
    if (have_cpu)
        have_cpu = proc_server_cpu_ticks(o, &cpu1) == 0;
    self1 = proc_self_cpu_s();
    bench_wait(b, stop + bench_grace_ns(o) + 1000000000ull, false, NULL);
    bench_threads_join(b);

    bench_sum(b, &s);
    hist_init(&lat);
    for (unsigned i = 0; i < o->threads; i++)
        hist_merge(&lat, &b->threads[i].lat);
    if (o->messages && s.last_rx_ns > go && end < stop)
        end = s.last_rx_ns;
    window = (double)(end - go) / 1e9;
    {
        uint64_t msgs = o->messages && end < stop ? s.echoed : s.echoed_window;

        report_begin(&r, o->json);
        report_str(&r, "mode", "echo");
        report_str(&r, "url", o->url);
        report_u64(&r, "conns", o->conns);
        report_u64(&r, "inflight", o->inflight);
        report_u64(&r, "size", o->size);
        report_str(&r, "opcode", o->text ? "text" : "binary");
        report_str(&r, "payload", o->notifications ? "notifications" : "pattern");
        report_u64(&r, "sent_compressed", s.sent_compressed);
        report_u64(&r, "threads", o->threads);
        report_u64(&r, "opened", s.opened);
        report_num(&r, "duration_s", window, 3);
        report_u64(&r, "messages", msgs);
        report_num(&r, "msgs_per_s", window > 0 ? (double)msgs / window : 0, 0);
        report_num(&r, "payload_mib_per_s",
                   window > 0 ? (double)msgs * (double)o->size / window / 1048576.0 : 0, 2);
        report_latency(&r, &lat);
        report_num(&r, "latency_us_mean",
                   lat.count ? (double)lat.sum / (double)lat.count / 1e3 : 0, 1);
        report_u64(&r, "echoed_total", s.echoed);
        report_cpu(&r, have_cpu, proc_ticks_to_s(cpu1 - cpu0), "msg", msgs, 3, self1 - self0,
                   window);
        report_tls(&r, o, &s, bench_tls_desc(b));
        report_errors(&r, &s);
        report_end(&r);
    }
    ret = bench_failed(&s) || !s.opened ? 1 : 0;
out:
    if (b->notify) {
        b->notify = NULL;
        notify_free(&pool);
    }
    return ret;
}

const struct bench_mode bench_mode_echo = {
    .name = "echo",
    .summary = "pipelined round trips: msgs/s, latency, byte-exact check",
    .run = echo_run,
    .on_go = echo_on_go,
    .on_open = echo_on_open,
    .on_data = echo_on_data,
    .fill = echo_fill,
    .drained = echo_drained,
    .out_cap = echo_out_cap,
};
