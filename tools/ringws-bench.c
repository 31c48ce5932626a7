/* ringws-bench.c - a WebSocket load generator on io_uring.
 *
 * Why it exists: to measure ringws (or any RFC 6455 server on loopback) from
 * the outside, as a client that checks everything the server sends, with a
 * cost per message low enough that the server, not the generator, is what
 * is measured.  This file is the command line: options, the mode table, the
 * run's bounds, progress lines.  The engine is bench_loop.c; each mode has
 * its own file.
 *
 *   ringws-bench echo --url ws://127.0.0.1:8080/echo --conns 100 --inflight 8
 *   ringws-bench echo --notifications --deflate --size 200 --inflight 8
 *   ringws-bench connect --conns 50 --duration 5
 *   ringws-bench connect --url wss://127.0.0.1:8443/echo --resume --echo
 *   ringws-bench idle --conns 50000 --threads 4 --server-pid PID
 *   ringws-bench fanout --conns 100000 --procs 8 --messages 20 --server-pid PID
 *   ringws-bench resume --topic hist --conns 1000 --messages 100 --open-window 1000
 *   ringws-bench storm --topic hist --conns 10000 --rate 200 --server-pid PID
 *
 * Every run is bounded in time (--duration, --timeout) and only loopback
 * addresses are accepted as targets. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const struct bench_mode *const bench_modes[] = {
    &bench_mode_echo,
    &bench_mode_connect,
    &bench_mode_idle,
    &bench_mode_fanout,
    &bench_mode_resume,
    &bench_mode_storm,
};

#define BENCH_N_MODES (sizeof bench_modes / sizeof bench_modes[0])

static struct bench *bench_signalled;

static void bench_on_signal(int sig)
{
    (void)sig;
    atomic_store(&bench_signalled->interrupted, true);
    atomic_store(&bench_signalled->stop_ns, 0);
}

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: ringws-bench MODE [options]\n"
            "modes:\n");
    for (size_t i = 0; i < BENCH_N_MODES; i++)
        fprintf(f, "  %-9s %s\n", bench_modes[i]->name, bench_modes[i]->summary);
    fprintf(f,
            "options:\n"
            "  --url ws://127.0.0.1:PORT/PATH  target, loopback only (default\n"
            "                     ws://127.0.0.1:8080/echo; fanout, resume, storm:\n"
            "                     .../ws?topics=TOPIC)\n"
            "                     wss://... speaks TLS (fanout also publishes over https)\n"
            "  --conns N          connections; fanout: subscribers (default 100)\n"
            "  --inflight K       echo: messages outstanding per connection (default 1)\n"
            "  --size BYTES       echo, fanout, resume, storm: payload size (default 20;\n"
            "                     16 or more but for echo)\n"
            "  --text             echo: send text messages (default binary)\n"
            "  --deflate          offer permessage-deflate (asking the server to keep no\n"
            "                     context); messages that come compressed are inflated\n"
            "                     and checked as the plain ones; with --notifications,\n"
            "                     what is sent goes compressed too (RSV1), as browsers do\n"
            "  --notifications    echo: text messages of JSON notifications, each of exactly\n"
            "                     --size bytes (%u..%u), drawn from a pool of %u built\n"
            "                     (and compressed, with --deflate) once at start-up\n"
            "  --duration S       measured time; idle: hold time (default 5)\n"
            "  --messages M       echo: stop after M messages; connect: after M handshakes;\n"
            "                     fanout: publish M messages (default 10); resume: M\n"
            "                     published while the subscribers are away (default 100)\n"
            "  --rate R           fanout, storm: publishes per second (default 10)\n"
            "  --topic NAME       fanout, resume, storm: topic to subscribe and publish to\n"
            "                     (default bench; resume and storm want one with history)\n"
            "  --token TOKEN      fanout: send Authorization: Bearer TOKEN with each publish\n"
            "  --procs P          fanout: processes running the subscribers (default 1)\n"
            "  --per-message FILE fanout: write each message's publish time (CLOCK_MONOTONIC\n"
            "                     ns) and its recipients' latency histogram to FILE\n"
            "  --retry            idle: a handshake refused (503: after its Retry-After),\n"
            "                     timed out or reset is made again until it opens;\n"
            "                     --duration bounds the opening, and nothing is held\n"
            "  --sub-url URL      fanout: subscriber process k connects to the k-th of\n"
            "                     these (repeatable, in turn; the path is --url's): the\n"
            "                     nodes of a cluster, while publishes go to --url\n"
            "  --threads N        engine threads, one ring each (default 1; fanout: per\n"
            "                     process, at least enough for ulimit -n connections a ring)\n"
            "  --server-pid PID[,PID...]  read the server's CPU time and memory from\n"
            "                     /proc; several: their sum (a proxy and the server behind it);\n"
            "                     storm: the first one is sent SIGUSR2 (shed every WebSocket)\n"
            "  --src-addrs K      bind to 127.0.0.2 .. 127.0.0.(K+1) in turn (default: idle,\n"
            "                     fanout conns/10000+1, connect 16, echo 0 = none below 10000)\n"
            "  --open-window N    handshakes in progress per thread (default 256)\n"
            "  --timeout S        handshake, close and drain bound (default 10); fanout:\n"
            "                     also each publish answer and the wait for the last delivery;\n"
            "                     resume, storm: also each wait for all the subscribers to\n"
            "                     subscribe, resume, be live again\n"
            "  --json             print one JSON object instead of text\n"
            "  --echo             connect: one echo of --size bytes before each close\n"
            "wss:// (OpenSSL, memory BIOs on the same io_uring loop):\n"
            "  --tls12            TLS 1.2 only (default: TLS 1.3 only)\n"
            "  --resume           each new connection resumes the latest session (ticket)\n"
            "                     the server gave; the report counts resumed handshakes\n"
            "  --ca FILE          verify the server's certificate against the CA(s) in\n"
            "                     FILE, and its name (--sni, else the URL's host).  The\n"
            "                     default is NO verification: a benchmark, not a client\n"
            "                     to trust\n"
            "  --sni NAME         server name sent (default: the URL's host if it is a\n"
            "                     name; none for an address)\n"
            "Exit status: 0 clean, 1 a server failure was seen (mismatch, loss, error), 2 usage.\n",
            BENCH_NOTIFY_MIN, BENCH_NOTIFY_MAX, BENCH_NOTIFY_COUNT);
}

static int bench_parse_url(struct bench_opts *o, const char *url)
{
    const char *p = url, *colon, *slash;
    char host[64];
    struct in_addr a;
    unsigned long port;
    char *end;

    o->tls = !strncmp(p, "wss://", 6);
    if (strncmp(p, "ws://", 5) && !o->tls)
        return -EINVAL;
    p += o->tls ? 6 : 5;
    colon = strchr(p, ':');
    slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof host)
        return -EINVAL;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || port == 0 || port > 65535 || (*end && *end != '/'))
        return -EINVAL;
    if (!strcmp(host, "localhost"))
        a.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &a) != 1)
        return -EINVAL;
    if ((ntohl(a.s_addr) >> 24) != 127)
        return -EPERM;
    if (strlen(*end ? end : "/") >= sizeof o->path || strlen(url) >= sizeof o->url)
        return -ENAMETOOLONG;
    o->dst.sin_family = AF_INET;
    o->dst.sin_addr = a;
    o->dst.sin_port = htons((uint16_t)port);
    snprintf(o->host, sizeof o->host, "%s:%lu", host, port);
    snprintf(o->hostname, sizeof o->hostname, "%s", host);
    snprintf(o->path, sizeof o->path, "%s", *end ? end : "/");
    snprintf(o->url, sizeof o->url, "%s", url);
    return 0;
}

static int bench_parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || !(v >= lo && v <= hi))
        return -EINVAL;
    *out = v;
    return 0;
}

enum { OPT_URL = 256, OPT_CONNS, OPT_INFLIGHT, OPT_SIZE, OPT_TEXT, OPT_DURATION,
       OPT_MESSAGES, OPT_THREADS, OPT_PID, OPT_SRC, OPT_WINDOW, OPT_TIMEOUT, OPT_JSON,
       OPT_RATE, OPT_TOPIC, OPT_TOKEN, OPT_PROCS, OPT_ECHO, OPT_TLS12, OPT_RESUME, OPT_CA,
       OPT_SNI, OPT_DEFLATE, OPT_NOTIFICATIONS, OPT_SUB_URL, OPT_PER_MESSAGE, OPT_RETRY, OPT_HELP };

/* Another node's address for subscribers (its path is --url's). */
static int bench_parse_sub_url(struct bench_opts *o, const char *arg)
{
    struct bench_opts t = {0};
    int r;

    if (o->n_sub == BENCH_MAX_SUB_URLS)
        return -E2BIG;
    if ((r = bench_parse_url(&t, arg)) < 0)
        return r;
    o->sub_dst[o->n_sub] = t.dst;
    snprintf(o->sub_host[o->n_sub], sizeof o->sub_host[0], "%s", t.host);
    o->n_sub++;
    return 0;
}

/* A bearer token goes into a header line as it is: printable, no spaces. */
static int bench_parse_token(struct bench_opts *o, const char *arg)
{
    if (strlen(arg) >= sizeof o->token)
        return -ENAMETOOLONG;
    for (const char *p = arg; *p; p++)
        if (*p <= ' ' || *p > '~')
            return -EINVAL;
    snprintf(o->token, sizeof o->token, "%s", arg);
    return 0;
}

static int bench_copy_arg(char *dst, size_t cap, const char *arg)
{
    if (!*arg || strlen(arg) >= cap)
        return -EINVAL;
    snprintf(dst, cap, "%s", arg);
    return 0;
}

/* PID[,PID...]: the processes whose CPU time and memory are summed. */
static int bench_parse_pids(struct bench_opts *o, const char *arg)
{
    const char *p = arg;

    o->n_server_pids = 0;
    for (;;) {
        char *end;
        unsigned long pid = strtoul(p, &end, 10);

        if (end == p || pid < 1 || pid >= 1u << 22 || o->n_server_pids == BENCH_MAX_PIDS ||
            (*end && *end != ','))
            return -EINVAL;
        o->server_pids[o->n_server_pids++] = (int)pid;
        if (!*end)
            return 0;
        p = end + 1;
    }
}

static int bench_apply(struct bench_opts *o, int opt, const char *arg, int *src_set)
{
    double v;

    switch (opt) {
    case OPT_URL: o->url_set = true; return bench_parse_url(o, arg);
    case OPT_SUB_URL: return bench_parse_sub_url(o, arg);
    case OPT_TEXT: o->text = true; return 0;
    case OPT_DEFLATE: o->deflate = true; return 0;
    case OPT_NOTIFICATIONS: o->notifications = true; return 0;
    case OPT_JSON: o->json = true; return 0;
    case OPT_DURATION: return bench_parse_num(arg, 0.001, 3600, &o->duration_s);
    case OPT_TIMEOUT: return bench_parse_num(arg, 0.1, 600, &o->timeout_s);
    case OPT_RATE: return bench_parse_num(arg, 0.01, 1e6, &o->rate);
    case OPT_TOKEN: return bench_parse_token(o, arg);
    case OPT_PID: return bench_parse_pids(o, arg);
    case OPT_ECHO: o->cycle_echo = true; return 0;
    case OPT_TLS12: o->tls12 = true; return 0;
    case OPT_RESUME: o->resume = true; return 0;
    case OPT_CA: return bench_copy_arg(o->ca, sizeof o->ca, arg);
    case OPT_SNI: return bench_copy_arg(o->sni, sizeof o->sni, arg);
    case OPT_PER_MESSAGE: return bench_copy_arg(o->per_message, sizeof o->per_message, arg);
    case OPT_RETRY: o->retry = true; return 0;
    case OPT_TOPIC:
        if (!wsc_topic_valid(arg))
            return -EINVAL;
        snprintf(o->topic, sizeof o->topic, "%s", arg);
        return 0;
    default: break;
    }
    if (bench_parse_num(arg, 0, 1e12, &v) < 0 || v != (double)(uint64_t)v)
        return -EINVAL;
    switch (opt) {
    case OPT_CONNS: o->conns = (unsigned)v; return v >= 1 && v <= 2000000 ? 0 : -EINVAL;
    case OPT_INFLIGHT: o->inflight = (unsigned)v; return v >= 1 && v <= 1024 ? 0 : -EINVAL;
    case OPT_SIZE: o->size = (size_t)v; return v <= 16 << 20 ? 0 : -EINVAL;
    case OPT_MESSAGES: o->messages = (uint64_t)v; return 0;
    case OPT_THREADS:
        o->threads = (unsigned)v;
        return v >= 1 && v <= BENCH_MAX_THREADS ? 0 : -EINVAL;
    case OPT_SRC:
        o->src_addrs = (unsigned)v;
        *src_set = 1;
        return v <= BENCH_MAX_SRC_ADDRS ? 0 : -EINVAL;
    case OPT_WINDOW: o->open_window = (unsigned)v; return v >= 1 ? 0 : -EINVAL;
    case OPT_PROCS:
        o->procs = (unsigned)v;
        return v >= 1 && v <= BENCH_MAX_PROCS ? 0 : -EINVAL;
    default: return -EINVAL;
    }
}

/* A subscriber's path: --url's, or /ws, with topics=--topic unless it
 * names its topics. */
static int bench_topic_path(struct bench_opts *o)
{
    char *q;

    if (!o->url_set)
        snprintf(o->path, sizeof o->path, "/ws");
    q = strchr(o->path, '?');
    if (!q || !strstr(q, "topics=")) {
        size_t len = strlen(o->path);
        int n = snprintf(o->path + len, sizeof o->path - len, "%ctopics=%s", q ? '&' : '?',
                         o->topic);

        if (n < 0 || (size_t)n >= sizeof o->path - len) {
            fprintf(stderr, "ringws-bench: the subscriber path is too long\n");
            return -ENAMETOOLONG;
        }
    }
    if ((size_t)snprintf(o->url, sizeof o->url, "%s://%s%s", o->tls ? "wss" : "ws", o->host,
                         o->path) >= sizeof o->url) {
        fprintf(stderr, "ringws-bench: the subscriber URL is too long\n");
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The fanout mode's path, counts and processes.  A ring's direct table
 * holds at most ulimit -n connections: without --threads, each process gets
 * as many rings as its share needs. */
static int bench_finish_fanout(struct bench_opts *o, bool threads_set, uint64_t ring_max)
{
    uint64_t per_proc, need;
    int ret;

    if ((ret = bench_topic_path(o)) < 0)
        return ret;
    if (!o->messages)
        o->messages = 10;
    if (o->messages > 1000000 || o->size < BENCH_FANOUT_HEAD || o->size > 1 << 20) {
        fprintf(stderr, "ringws-bench: fanout takes --messages 1..1000000 and --size "
                "16..1048576\n");
        return -EINVAL;
    }
    if (o->procs > o->conns)
        o->procs = o->conns;
    if (ring_max > 1u << 20)
        ring_max = 1u << 20; /* the kernel's cap on a registered file table */
    per_proc = (o->conns + o->procs - 1) / o->procs;
    need = (per_proc + ring_max - 1) / ring_max;
    if (!threads_set && o->threads < need)
        o->threads = need > BENCH_MAX_THREADS ? BENCH_MAX_THREADS : (unsigned)need;
    return 0;
}

/* The resume and storm modes: ringws.v1 subscribers of --topic, one
 * process.  resume: --messages missed by each (default 100). */
static int bench_finish_resume(struct bench *b)
{
    struct bench_opts *o = &b->o;
    int ret;

    if ((ret = bench_topic_path(o)) < 0)
        return ret;
    snprintf(o->subprotocol, sizeof o->subprotocol, "ringws.v1");
    if (!o->messages)
        o->messages = 100;
    if (o->messages > 1000000 || o->size < BENCH_FANOUT_HEAD || o->size > 1 << 20) {
        fprintf(stderr, "ringws-bench: %s takes --messages 1..1000000 and --size "
                "16..1048576\n", b->mode->name);
        return -EINVAL;
    }
    return 0;
}

/* Defaults that depend on the mode, and limits that span options. */
static int bench_finish_opts(struct bench *b, int src_set, bool threads_set)
{
    struct bench_opts *o = &b->o;
    uint64_t per_thread, bytes, per_proc;
    struct rlimit rl;
    int ret;

    getrlimit(RLIMIT_NOFILE, &rl);
    if (b->mode == &bench_mode_fanout) {
        if ((ret = bench_finish_fanout(o, threads_set, rl.rlim_cur)) < 0)
            return ret;
    } else if (b->mode == &bench_mode_resume || b->mode == &bench_mode_storm) {
        if ((ret = bench_finish_resume(b)) < 0)
            return ret;
    }
    if (o->n_sub && b->mode != &bench_mode_fanout) {
        fprintf(stderr, "ringws-bench: --sub-url is for the fanout mode\n");
        return -EINVAL;
    }
    if (o->procs > 1 && b->mode != &bench_mode_fanout) {
        fprintf(stderr, "ringws-bench: --procs is for the fanout mode\n");
        return -EINVAL;
    }
    if (!o->tls && (o->tls12 || o->resume || o->ca[0] || o->sni[0])) {
        fprintf(stderr, "ringws-bench: --tls12, --resume, --ca and --sni need a wss:// URL\n");
        return -EINVAL;
    }
    if (o->notifications) {
        if (b->mode != &bench_mode_echo || o->size < BENCH_NOTIFY_MIN ||
            o->size > BENCH_NOTIFY_MAX) {
            fprintf(stderr, "ringws-bench: --notifications is for the echo mode, with --size "
                    "%u..%u\n", BENCH_NOTIFY_MIN, BENCH_NOTIFY_MAX);
            return -EINVAL;
        }
        o->text = true;
    }
    if (o->cycle_echo && b->mode != &bench_mode_connect) {
        fprintf(stderr, "ringws-bench: --echo is for the connect mode\n");
        return -EINVAL;
    }
    /* connect() picks ephemeral ports of one parity first; past half the
     * range (about 14000 ports per source address) each pick scans, and
     * opening slows from thousands per second to hundreds.  Stay below. */
    if (!src_set) {
        if (b->mode == &bench_mode_idle || b->mode == &bench_mode_fanout ||
            b->mode == &bench_mode_resume || b->mode == &bench_mode_storm)
            o->src_addrs = o->conns / BENCH_CONNS_PER_SRC + 1;
        else if (b->mode == &bench_mode_connect)
            o->src_addrs = 16;
        else if (o->conns > BENCH_CONNS_PER_SRC)
            o->src_addrs = o->conns / BENCH_CONNS_PER_SRC + 1;
        if (o->src_addrs > BENCH_MAX_SRC_ADDRS)
            o->src_addrs = BENCH_MAX_SRC_ADDRS;
    }
    if (o->threads > o->conns)
        o->threads = o->conns;
    per_proc = (o->conns + o->procs - 1) / o->procs;
    per_thread = (per_proc + o->threads - 1) / o->threads;
    if (per_thread > rl.rlim_cur) {
        fprintf(stderr, "ringws-bench: a ring holds at most %llu connections; use "
                "--threads %llu or more\n", (unsigned long long)rl.rlim_cur,
                (unsigned long long)((per_proc + rl.rlim_cur - 1) / rl.rlim_cur));
        return -EINVAL;
    }
    bytes = (uint64_t)o->conns * b->mode->out_cap(o);
    if ((uint64_t)o->inflight * (WSC_MAX_HEAD + o->size) > (1u << 30) || bytes > (8ull << 30)) {
        fprintf(stderr, "ringws-bench: --conns x --inflight x --size needs too much "
                "memory for send buffers\n");
        return -EINVAL;
    }
    return 0;
}

static int bench_parse_args(int argc, char **argv, struct bench *b)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"conns", required_argument, NULL, OPT_CONNS},
        {"inflight", required_argument, NULL, OPT_INFLIGHT},
        {"size", required_argument, NULL, OPT_SIZE},
        {"text", no_argument, NULL, OPT_TEXT},
        {"deflate", no_argument, NULL, OPT_DEFLATE},
        {"notifications", no_argument, NULL, OPT_NOTIFICATIONS},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"messages", required_argument, NULL, OPT_MESSAGES},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"server-pid", required_argument, NULL, OPT_PID},
        {"src-addrs", required_argument, NULL, OPT_SRC},
        {"open-window", required_argument, NULL, OPT_WINDOW},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"rate", required_argument, NULL, OPT_RATE},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"procs", required_argument, NULL, OPT_PROCS},
        {"echo", no_argument, NULL, OPT_ECHO},
        {"tls12", no_argument, NULL, OPT_TLS12},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"ca", required_argument, NULL, OPT_CA},
        {"sni", required_argument, NULL, OPT_SNI},
        {"sub-url", required_argument, NULL, OPT_SUB_URL},
        {"per-message", required_argument, NULL, OPT_PER_MESSAGE},
        {"retry", no_argument, NULL, OPT_RETRY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct bench_opts *o = &b->o;
    int opt, at = 0, src_set = 0;
    bool threads_set = false;

    *o = (struct bench_opts){
        .conns = 100, .inflight = 1, .threads = 1, .open_window = 256, .size = 20,
        .duration_s = 5, .timeout_s = 10, .procs = 1, .rate = 10, .topic = "bench",
    };
    bench_parse_url(o, "ws://127.0.0.1:8080/echo");
    while ((opt = getopt_long(argc, argv, "h", longopts, &at)) != -1) {
        if (opt == OPT_HELP || opt == 'h') {
            bench_usage(stdout);
            exit(0);
        }
        threads_set |= opt == OPT_THREADS;
        if (opt == '?' || bench_apply(o, opt, optarg, &src_set) < 0) {
            /* Named by the entry getopt matched, not by the option's
             * value: the array's order is free. */
            if (opt != '?')
                fprintf(stderr, "ringws-bench: bad value for --%s: %s%s\n",
                        longopts[at].name, optarg,
                        opt == OPT_URL ? " (ws[s]://127.x.y.z:PORT/PATH: loopback only)" : "");
            return -EINVAL;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "ringws-bench: name one mode\n");
        return -EINVAL;
    }
    for (size_t i = 0; i < BENCH_N_MODES; i++)
        if (!strcmp(argv[optind], bench_modes[i]->name))
            b->mode = bench_modes[i];
    if (!b->mode) {
        fprintf(stderr, "ringws-bench: unknown mode %s\n", argv[optind]);
        return -EINVAL;
    }
    if (!b->mode->run) {
        fprintf(stderr, "ringws-bench: mode %s is not implemented yet\n", b->mode->name);
        return -ENOSYS;
    }
    return bench_finish_opts(b, src_set, threads_set);
}

void bench_wait(struct bench *b, uint64_t until, bool progress,
                void (*line)(struct bench *b, double t_s))
{
    uint64_t t0 = atomic_load(&b->go_ns), next;

    if (!t0)
        t0 = bench_now_ns();
    next = bench_now_ns() + 1000000000ull;
    for (;;) {
        struct timespec ts = {.tv_nsec = 5 * 1000000};
        uint64_t now = bench_now_ns();
        unsigned done = 0;

        for (unsigned i = 0; i < b->o.threads; i++)
            done += atomic_load(&b->threads[i].st.finished);
        if (now >= until || done == b->o.threads || atomic_load(&b->interrupted))
            return;
        if (progress && line && now >= next) {
            line(b, (double)(now - t0) / 1e9);
            next += 1000000000ull;
        }
        if (until - now < (uint64_t)ts.tv_nsec)
            ts.tv_nsec = (long)(until - now);
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    static struct bench b;
    struct sigaction sa = {.sa_handler = bench_on_signal};
    int ret;

    if (bench_parse_args(argc, argv, &b) < 0) {
        bench_usage(stderr);
        return 2;
    }
    b.salt = bench_now_ns() ^ ((uint64_t)getpid() << 32);
    atomic_store(&b.stop_ns, UINT64_MAX);
    bench_signalled = &b;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (bench_tls_create(&b) < 0) {
        bench_tls_destroy(&b);
        return 2;
    }
    ret = b.mode->run(&b);
    bench_tls_destroy(&b);
    if (ret < 0) {
        fprintf(stderr, "ringws-bench: %s\n", strerror(-ret));
        return 1;
    }
    return ret;
}
