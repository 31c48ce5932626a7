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
 * the 64k-port limit of one source address does not cap the count.
 *
 * With --retry it is a reconnect storm instead (bench/storm.py): every
 * connection starts at once and a failed handshake is made again as a
 * client would, a 503 after its Retry-After, a timeout or a reset after a
 * backoff; the report says how long until all were open and how many
 * tries failed, by kind. */
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_BACKOFF_NS 1000000000ull /* before a timed out or reset one tries again */

/* --retry: one per thread, read by the main thread for the report. */
struct idle_tally {
    _Atomic uint64_t refused_503;    /* 503 with a Retry-After */
    _Atomic uint64_t refused_bare;   /* 503 without one, or another status */
    _Atomic uint64_t timeouts_connect;  /* no SYN-ACK: a listen queue full */
    _Atomic uint64_t timeouts_upgrade;  /* connected, no answer to the request */
    _Atomic uint64_t resets;
    _Atomic uint64_t retry_after_max_s;
};

/* The seconds of a Retry-After header in an answer's first len bytes;
 * -1 without one. */
static long idle_retry_after(const char *resp, size_t len)
{
    static const char name[] = "\r\nretry-after:";
    size_t n = sizeof name - 1;

    for (size_t i = 0; i + n < len; i++) {
        size_t k = 0;

        while (k < n && tolower((unsigned char)resp[i + k]) == name[k])
            k++;
        if (k < n)
            continue;
        for (i += n; i < len && resp[i] == ' '; i++)
            ;
        if (i == len || !isdigit((unsigned char)resp[i]))
            return -1;
        return strtol(resp + i, NULL, 10);
    }
    return -1;
}

/* A failed handshake is made again: a 503 after its Retry-After (and up
 * to a second more, as clients' timers spread), others after a backoff of
 * one to two seconds. */
static void idle_on_fail(struct bench_thread *t, struct bench_conn *c, enum bench_fail why,
                         const char *resp, size_t len)
{
    struct idle_tally *tl = &((struct idle_tally *)t->b->mode_data)[t->id];
    uint64_t jitter = bench_rand(t) % 1000000000ull, wait = IDLE_BACKOFF_NS;
    long s = -1;

    if (!t->b->o.retry)
        return;
    if (why == BENCH_FAIL_STATUS && len >= 12 && !memcmp(resp, "HTTP/1.1 503", 12))
        s = idle_retry_after(resp, len);
    if (s >= 0) {
        stat_add(&tl->refused_503, 1);
        if ((uint64_t)s > atomic_load_explicit(&tl->retry_after_max_s, memory_order_relaxed))
            atomic_store_explicit(&tl->retry_after_max_s, (uint64_t)s, memory_order_relaxed);
        wait = (uint64_t)s * 1000000000ull;
    } else {
        stat_add(why == BENCH_FAIL_STATUS ? &tl->refused_bare
                 : why == BENCH_FAIL_RESET ? &tl->resets
                 : c->state == BC_CONNECTING ? &tl->timeouts_connect : &tl->timeouts_upgrade, 1);
    }
    bench_conn_retry(t, c, t->now + wait + jitter);
}

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

/* Waits until every connection has opened or failed (--retry: opened, for
 * at most --duration), printing progress. */
static void idle_wait_open(struct bench *b, uint64_t t0)
{
    uint64_t deadline = t0 + (b->o.retry ? (uint64_t)(b->o.duration_s * 1e9)
                              : (uint64_t)(b->o.timeout_s * 1e9) + bench_open_ns(&b->o));
    uint64_t next_line = t0 + 1000000000ull;
    struct bench_sum s;

    for (;;) {
        uint64_t now = bench_now_ns();

        bench_sum(b, &s);
        if ((b->o.retry ? s.open_now
                        : s.opened + s.connect_errors + s.handshake_errors + s.handshake_timeouts +
                              s.unexpected_closes) >= b->o.conns ||
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

/* --retry: the failed tries by kind, summed over the threads. */
static void idle_report_retries(struct report *r, const struct bench *b, uint64_t t0,
                                uint64_t t_open)
{
    const struct idle_tally *tl = b->mode_data;
    uint64_t sum[5] = {0}, max_s = 0, turn = 0;

    for (unsigned i = 0; i < b->o.threads; i++) {
        sum[0] += atomic_load(&tl[i].refused_503);
        sum[1] += atomic_load(&tl[i].refused_bare);
        sum[2] += atomic_load(&tl[i].timeouts_connect);
        sum[3] += atomic_load(&tl[i].timeouts_upgrade);
        sum[4] += atomic_load(&tl[i].resets);
        if (atomic_load(&tl[i].retry_after_max_s) > max_s)
            max_s = atomic_load(&tl[i].retry_after_max_s);
        if (atomic_load(&b->threads[i].st.max_turn_ns) > turn)
            turn = atomic_load(&b->threads[i].st.max_turn_ns);
    }
    /* CLOCK_MONOTONIC, for a script that places other events in the storm */
    report_u64(r, "start_ns", t0);
    report_u64(r, "all_open_ns", t_open);
    report_u64(r, "refused_503_retry_after", sum[0]);
    report_u64(r, "retry_after_max_s", max_s);
    report_u64(r, "refused_other", sum[1]);
    report_u64(r, "connect_timeouts_retried", sum[2]);
    report_u64(r, "upgrade_timeouts_retried", sum[3]);
    report_u64(r, "resets_retried", sum[4]);
    /* A client thread busy this long sees answers this late: past the
     * timeout, its own timeouts are the load generator's. */
    report_num(r, "client_max_turn_s", (double)turn / 1e9, 3);
}

static int idle_run(struct bench *b)
{
    const struct bench_opts *o = &b->o;
    struct idle_mem before, open, end, closed;
    uint64_t t0, t_open, t_stop, t_closed, n;
    struct bench_sum s;
    struct report r;
    int ret;

    if (!(b->mode_data = calloc(o->threads, sizeof(struct idle_tally))))
        return -ENOMEM;
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
    if (!o->retry)
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
    report_num(&r, "hold_s", o->retry ? 0 : o->duration_s, 1);
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
    if (o->retry)
        idle_report_retries(&r, b, t0, t_open);
    report_end(&r);
    free(b->mode_data);
    /* --retry: failed tries are the storm's figures, not failures. */
    return (!o->retry && bench_failed(&s)) || n < o->conns ? 1 : 0;
}

const struct bench_mode bench_mode_idle = {
    .name = "idle",
    .summary = "open and hold --conns connections: server bytes per connection",
    .run = idle_run,
    .out_cap = idle_out_cap,
    .quiet = true,
    .on_fail = idle_on_fail,
};
