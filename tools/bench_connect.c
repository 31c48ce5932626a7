/* bench_connect.c - the connect mode: connect, handshake, close, again.
 *
 * Why it exists: the cost of a connection's whole life (accept, parsing the
 * upgrade, SHA-1 of the key, the 101, the closing handshake, freeing it;
 * over wss the TLS handshake first) decides how a server survives reconnect
 * storms.  --conns connections cycle at once; each cycle's latency runs
 * from the connect to a verified 101.  With --echo each cycle also sends
 * one binary message of --size bytes and checks its echo before closing
 * (the "connect cycle" TLS servers are compared by); with --resume (wss)
 * each new connection offers a session its thread was given, and
 * the report counts the handshakes that resumed. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static uint32_t connect_out_cap(const struct bench_opts *o)
{
    return 512 + 2 * (WSC_MAX_HEAD + BENCH_CTL_MAX) +
           (o->cycle_echo ? (uint32_t)(WSC_MAX_HEAD + o->size) : 0);
}

/* --echo: the payload every cycle sends (b->mode_data, --size bytes). */
static void connect_send_echo(struct bench_thread *t, struct bench_conn *c)
{
    const struct bench_opts *o = &t->b->o;
    uint8_t *p = bench_out_reserve(c, (uint32_t)(WSC_MAX_HEAD + o->size));
    uint64_t r = bench_rand(t);

    if (!p) {
        bench_problem(t, c, "no room to queue the echo");
        bench_conn_close(t, c);
        return;
    }
    bench_out_commit(t, c, (uint32_t)wsc_frame_write(p, WS_FIN | WS_OP_BINARY, t->b->mode_data,
                                                     o->size, (const uint8_t *)&r));
    c->sent = 1;
}

static void connect_on_open(struct bench_thread *t, struct bench_conn *c)
{
    hist_record(&t->lat, t->now - c->t_start);
    if (t->b->o.cycle_echo)
        connect_send_echo(t, c);
    else
        bench_conn_close(t, c);
}

static void connect_on_data(struct bench_thread *t, struct bench_conn *c,
                            const struct wsc_event *ev)
{
    const uint8_t *want = t->b->mode_data;
    size_t size = t->b->o.size;

    if (ev->msg_start) {
        c->msg_off = 0;
        c->msg_bad = ev->opcode != WS_OP_BINARY || c->rcvd >= c->sent;
    }
    if (!c->msg_bad && ev->len)
        c->msg_bad = c->msg_off + ev->len > size || memcmp(ev->data, want + c->msg_off, ev->len);
    c->msg_off += ev->len;
    if (!ev->msg_end)
        return;
    if (c->msg_bad || c->msg_off != size) {
        stat_add(&t->st.mismatches, 1);
        bench_problem(t, c, "the echo differs (opcode %u, %llu bytes)", ev->opcode,
                      (unsigned long long)c->msg_off);
    }
    if (c->rcvd < c->sent) {
        c->rcvd++;
        stat_add(&t->st.echoed, 1);
    }
    bench_conn_close(t, c);
}

static bool connect_drained(const struct bench_conn *c)
{
    return c->rcvd >= c->sent;
}

/* Each start spends one unit of the --messages budget, if there is one. */
static bool connect_again(struct bench_thread *t)
{
    if (!t->budget) {
        t->stopping = true;
        return false;
    }
    if (t->budget != UINT64_MAX)
        t->budget--;
    return true;
}

static void connect_line(struct bench *b, double t_s)
{
    static uint64_t prev, prev_ns;
    struct bench_sum s;
    uint64_t now = bench_now_ns();

    bench_sum(b, &s);
    if (!prev_ns)
        prev_ns = atomic_load(&b->go_ns); /* the first line covers the first second */
    fprintf(stderr, "[%5.1fs] connect: %.0f handshakes/s, %llu total, %llu errors\n", t_s,
            now > prev_ns ? (double)(s.opened - prev) * 1e9 / (double)(now - prev_ns) : 0,
            (unsigned long long)s.opened,
            (unsigned long long)(s.connect_errors + s.handshake_errors +
                                 s.handshake_timeouts + s.unexpected_closes));
    prev = s.opened;
    prev_ns = now;
}

static int connect_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    uint64_t go = bench_now_ns(), stop = go + (uint64_t)(o->duration_s * 1e9), end;
    uint64_t cpu0 = 0, cpu1 = 0, n;
    bool have_cpu = proc_server_cpu_ticks(o, &cpu0) == 0;
    double window, self0 = proc_self_cpu_s(), self1;
    struct bench_sum s;
    struct hist lat;
    struct report r;
    int ret;

    if (o->cycle_echo) {
        uint8_t *payload = malloc(o->size ? o->size : 1);

        if (!payload)
            return -ENOMEM;
        for (size_t i = 0; i < o->size; i++)
            payload[i] = (uint8_t)(b->salt >> (8 * (i & 7))) ^ (uint8_t)i;
        b->mode_data = payload;
    }
    atomic_store(&b->go_ns, go);
    bench_stop_at(b, stop);
    ret = bench_threads_start(b);
    if (ret < 0)
        return ret;
    bench_wait(b, stop, o->duration_s > 2, connect_line);
    end = bench_now_ns();
    self1 = proc_self_cpu_s();
    if (have_cpu)
        have_cpu = proc_server_cpu_ticks(o, &cpu1) == 0;
    bench_wait(b, stop + bench_grace_ns(o) + 1000000000ull, false, NULL);
    bench_threads_join(b);

    bench_sum(b, &s);
    hist_init(&lat);
    for (unsigned i = 0; i < o->threads; i++)
        hist_merge(&lat, &b->threads[i].lat);
    window = (double)((end < stop ? end : stop) - go) / 1e9;
    n = s.opened_window;
    report_begin(&r, o->json);
    report_str(&r, "mode", "connect");
    report_str(&r, "url", o->url);
    report_u64(&r, "conns", o->conns);
    report_u64(&r, "threads", o->threads);
    report_u64(&r, "src_addrs", o->src_addrs);
    report_num(&r, "duration_s", window, 3);
    report_str(&r, "cycle", o->cycle_echo ? "connect, upgrade, echo, close"
                                         : "connect, upgrade, close");
    report_u64(&r, "handshakes", n);
    report_num(&r, "handshakes_per_s", window > 0 ? (double)n / window : 0, 0);
    if (o->cycle_echo)
        report_u64(&r, "echoed_total", s.echoed);
    report_latency(&r, &lat);
    report_cpu(&r, have_cpu, proc_ticks_to_s(cpu1 - cpu0), "handshake", n, 2, self1 - self0,
               window);
    report_tls(&r, o, &s, bench_tls_desc(b));
    report_errors(&r, &s);
    report_end(&r);
    free(b->mode_data);
    return bench_failed(&s) || !s.opened ? 1 : 0;
}

const struct bench_mode bench_mode_connect = {
    .name = "connect",
    .summary = "connect, handshake, close, repeat: handshakes/s",
    .run = connect_run,
    .on_open = connect_on_open,
    .on_data = connect_on_data,
    .drained = connect_drained,
    .again = connect_again,
    .out_cap = connect_out_cap,
};
