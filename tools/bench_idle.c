/* bench_idle.c - the idle mode: open many connections, hold them, measure
 * what each costs the server.
 *
 * Why it exists: a server meant for hundreds of thousands of quiet
 * WebSockets lives or dies by its bytes per idle connection.  The server's
 * resident memory (VmRSS of --server-pid) is read before any connection,
 * once all are open and settled, at the end of the hold and after the
 * closes; the kernel's share is the Slab delta of /proc/meminfo, which on
 * loopback counts both ends of each connection (client and server socket).
 * Connections are spread over source addresses 127.0.0.2 and up so that
 * the 64k-port limit of one source address does not cap the count. */
#include "bench.h"

#include <stdio.h>
#include <time.h>

static uint32_t idle_out_cap(const struct bench_opts *o)
{
    (void)o;
    return 512 + 2 * (WSC_MAX_HEAD + BENCH_CTL_MAX);
}

static void idle_line(struct bench *b, double t_s)
{
    struct bench_sum s;

    bench_sum(b, &s);
    fprintf(stderr, "[%5.1fs] idle: %llu/%u open, %llu failed\n", t_s,
            (unsigned long long)s.open_now, b->o.conns,
            (unsigned long long)(s.connect_errors + s.handshake_errors +
                                 s.handshake_timeouts + s.unexpected_closes));
}

struct idle_mem {
    uint64_t rss_kb, slab_kb, unreclaim_kb, self_kb;
    bool rss_ok;
};

static void idle_measure(const struct bench *b, struct idle_mem *m)
{
    m->rss_ok = proc_server_rss_kb(&b->o, &m->rss_kb) == 0;
    proc_meminfo_kb("Slab", &m->slab_kb);
    proc_meminfo_kb("SUnreclaim", &m->unreclaim_kb);
    proc_rss_kb(0, &m->self_kb);
}

static void idle_sleep(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};

    nanosleep(&ts, NULL);
}

/* Waits until every connection has opened or failed, printing progress. */
static void idle_wait_open(struct bench *b, uint64_t t0)
{
    uint64_t deadline = t0 + (uint64_t)(b->o.timeout_s * 1e9) + bench_open_ns(&b->o);
    uint64_t next_line = t0 + 1000000000ull;
    struct bench_sum s;

    for (;;) {
        uint64_t now = bench_now_ns();

        bench_sum(b, &s);
        if (s.opened + s.connect_errors + s.handshake_errors + s.handshake_timeouts +
                s.unexpected_closes >= b->o.conns ||
            s.finished == b->o.threads || now > deadline)
            return;
        if (now >= next_line) {
            idle_line(b, (double)(now - t0) / 1e9);
            next_line += 1000000000ull;
        }
        idle_sleep(0.005);
    }
}

static double idle_per_conn(uint64_t after_kb, uint64_t before_kb, uint64_t n)
{
    return n ? ((double)after_kb - (double)before_kb) * 1024.0 / (double)n : 0;
}

static int idle_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    struct idle_mem before, open, end, closed;
    uint64_t t0, t_open, t_stop, t_closed, n;
    struct bench_sum s;
    struct report r;
    int ret;

    idle_measure(b, &before);
    t0 = bench_now_ns();
    atomic_store(&b->go_ns, t0);
    ret = bench_threads_start(b);
    if (ret < 0)
        return ret;
    idle_wait_open(b, t0);
    t_open = bench_now_ns();
    bench_sum(b, &s);
    n = s.open_now;
    idle_sleep(1.0); /* let the server finish its per-connection setup */
    idle_measure(b, &open);
    bench_wait(b, t_open + (uint64_t)(o->duration_s * 1e9), o->duration_s > 2, idle_line);
    bench_sum(b, &s);
    idle_measure(b, &end);
    t_stop = bench_now_ns();
    bench_stop_at(b, t_stop);
    bench_wait(b, t_stop + bench_grace_ns(o) + 1000000000ull, false, NULL);
    bench_threads_join(b);
    t_closed = bench_now_ns();
    idle_sleep(0.5);
    idle_measure(b, &closed);

    bench_sum(b, &s);
    report_begin(&r, o->json);
    report_str(&r, "mode", "idle");
    report_str(&r, "url", o->url);
    report_u64(&r, "conns", o->conns);
    report_u64(&r, "threads", o->threads);
    report_u64(&r, "src_addrs", o->src_addrs);
    report_u64(&r, "opened", n);
    report_num(&r, "open_s", (double)(t_open - t0) / 1e9, 2);
    report_num(&r, "opens_per_s", t_open > t0 ? (double)n * 1e9 / (double)(t_open - t0) : 0, 0);
    report_num(&r, "hold_s", o->duration_s, 1);
    report_num(&r, "close_s", (double)(t_closed - t_stop) / 1e9, 2);
    if (before.rss_ok && open.rss_ok) {
        report_u64(&r, "server_rss_kib_before", before.rss_kb);
        report_u64(&r, "server_rss_kib_open", open.rss_kb);
        report_u64(&r, "server_rss_kib_end_of_hold", end.rss_kb);
        report_u64(&r, "server_rss_kib_after_close", closed.rss_kb);
        report_num(&r, "server_bytes_per_conn", idle_per_conn(open.rss_kb, before.rss_kb, n), 0);
    }
    report_num(&r, "kernel_slab_bytes_per_pair", idle_per_conn(open.slab_kb, before.slab_kb, n), 0);
    report_num(&r, "kernel_unreclaimable_bytes_per_pair",
               idle_per_conn(open.unreclaim_kb, before.unreclaim_kb, n), 0);
    report_num(&r, "client_bytes_per_conn", idle_per_conn(open.self_kb, before.self_kb, n), 0);
    report_tls(&r, o, &s, bench_tls_desc(b));
    report_errors(&r, &s);
    report_end(&r);
    return bench_failed(&s) || n < o->conns ? 1 : 0;
}

const struct bench_mode bench_mode_idle = {
    .name = "idle",
    .summary = "open and hold --conns connections: server bytes per connection",
    .run = idle_run,
    .out_cap = idle_out_cap,
    .quiet = true,
};
