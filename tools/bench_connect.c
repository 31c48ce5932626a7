/* bench_connect.c - the connect mode: connect, handshake, close, again.
 *
 * Why it exists: the cost of a connection's whole life (accept, parsing the
 * upgrade, SHA-1 of the key, the 101, the closing handshake, freeing it;
 * over wss the TLS handshake first) decides how a server survives reconnect
 * storms.  --conns connections cycle at once; each cycle's latency runs
 * from the connect to a verified 101.  With --resume (wss) each new
 * connection offers a session its thread was given, and the report counts
 * the handshakes that resumed. */
#include "bench.h"

#include <stdio.h>

static uint32_t connect_out_cap(const struct bench_opts *o)
{
    (void)o;
    return 512 + 2 * (WSC_MAX_HEAD + BENCH_CTL_MAX);
}

static void connect_on_open(struct bench_thread *t, struct bench_conn *c)
{
    hist_record(&t->lat, t->now - c->t_start);
    bench_conn_close(t, c);
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
    report_u64(&r, "handshakes", n);
    report_num(&r, "handshakes_per_s", window > 0 ? (double)n / window : 0, 0);
    report_latency(&r, &lat);
    report_cpu(&r, have_cpu, proc_ticks_to_s(cpu1 - cpu0), "handshake", n, 2, self1 - self0,
               window);
    report_tls(&r, o, &s, bench_tls_desc(b));
    report_errors(&r, &s);
    report_end(&r);
    return bench_failed(&s) || !s.opened ? 1 : 0;
}

const struct bench_mode bench_mode_connect = {
    .name = "connect",
    .summary = "connect, handshake, close, repeat: handshakes/s",
    .run = connect_run,
    .on_open = connect_on_open,
    .again = connect_again,
    .out_cap = connect_out_cap,
};
