/* main.c - the ringws binary: an echo WebSocket at /echo, /healthz and a
 * demo page at /, configured from the command line.
 *
 * Why it exists: it is what `make run` starts and what the integration
 * tests drive.  Like the programs in examples/, it uses <ringws.h> alone and
 * links the installed form of the library. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringws.h>

#define MAX_LIST 32

static ringws_server *main_server;
static atomic_bool main_ending; /* the SIGHUP thread is to end */

static void main_on_signal(int sig)
{
    (void)sig;
    if (main_server)
        ringws_server_stop(main_server);
}

/* SIGHUP, blocked in every thread, is taken here: reloading certificates
 * reads files and takes locks, which a signal handler must not. */
static void *main_reload_thread(void *arg)
{
    sigset_t *hup = arg;
    int sig;

    while (sigwait(hup, &sig) == 0 && !atomic_load(&main_ending))
        if (ringws_server_reload_tls(main_server) == -EINVAL)
            fprintf(stderr, "ringws: SIGHUP ignored: no TLS certificates to reload\n");
    return NULL;
}

static void main_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                            size_t len, void *user)
{
    (void)user;
    ringws_send(c, op, data, len); /* failure closes the connection itself */
}

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: ringws [options]\n"
            "  --bind ADDR             address to listen on (default 127.0.0.1)\n"
            "  --port N                port (default 8080; 0 picks a free one)\n"
            "  --workers N             worker threads (default: online CPUs)\n"
            "  --max-message BYTES     largest message accepted (default 16777216)\n"
            "  --min-message-rate BYTES  a message that spans receives must average this\n"
            "                          many bytes a second after its grace (default 4096;\n"
            "                          0 off); slower: close 1008\n"
            "  --message-grace T       time any such message may take (default 10s)\n"
            "  --max-partial-bytes BYTES  memory for requests and messages still arriving,\n"
            "                          per worker (default 268435456); past it: close 1009\n"
            "  --origin ORIGIN         allow this Origin (repeatable; default any)\n"
            "  --subprotocol NAME      supported subprotocol (repeatable, preferred first)\n"
            "  --idle-timeout T        ping after T of silence, drop after 2T (default 60s; 0 off)\n"
            "  --handshake-timeout T   time allowed for a request head (default 10s)\n"
            "  --close-timeout T       wait for the peer's close (default 3s)\n"
            "  --max-connections N     per worker (default 16384)\n"
            "  --max-per-address N     connections per source address (IPv6: /64), all\n"
            "                          workers together (default 0: no limit)\n"
            "  --max-send-queue BYTES  output queued per connection (default 4194304)\n"
            "  --overflow POLICY       when a send would pass it: close (1008), try-again\n"
            "                          (1013) or drop (the message) (default close)\n"
            "  --pubsub-path PATH      WebSocket path of subscribers, also enables\n"
            "                          POST /publish/TOPIC (default /ws; \"\" turns both off)\n"
            "  --publish-token TOKEN   POST /publish needs \"Authorization: Bearer TOKEN\"\n"
            "  --fanout-queue BYTES    published bytes queued per subscriber (default 1048576)\n"
            "  --max-publish BYTES     largest published message (default 1048576)\n"
            "  --max-inbox BYTES       published bytes waiting for one worker; a publish\n"
            "                          past it is refused (default 67108864)\n"
            "  --max-topics N          subscriptions per connection (default 64)\n"
            "  --topic PATTERN=POLICY[,publish]\n"
            "                          topics matching PATTERN (a name, or a prefix and *):\n"
            "                          slow subscribers get POLICY close-1013 (default),\n"
            "                          close-1008 or drop-oldest; ',publish' lets clients\n"
            "                          publish to them (repeatable; first match wins)\n"
            "  --recv-buffer BYTES     size of each provided receive buffer (default 16384)\n"
            "  --recv-buffers N        provided receive buffers per worker (default 1024)\n"
            "  --plain-recv-buffers    one receive per buffer even where the kernel can\n"
            "                          pack receives into buffers incrementally\n"
            "  --tls-cert FILE         certificate (PEM, chain after it) and ...\n"
            "  --tls-key FILE          ... its key: --port speaks TLS only; repeat both for\n"
            "                          more certificates, chosen by SNI (the first is the\n"
            "                          default); SIGHUP reads the files again\n"
            "  --plain-port N          with TLS, also a plaintext listener on port N (0: a\n"
            "                          free one)\n"
            "  --tls-ticket-lifetime T session tickets last T; their key changes as often\n"
            "                          (default 7200s)\n"
            "  --tls-handshake-budget T  handshake CPU per worker and loop turn before\n"
            "                          more handshakes wait for the next (default 2ms)\n"
            "Durations: 500ms, 2s, or plain seconds (1.5).\n");
}

/* Parses "500ms", "2s" or "1.5" (seconds) into milliseconds. */
static int main_parse_duration(const char *s, unsigned *ms)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || v < 0)
        return -EINVAL;
    if (!strcmp(end, "ms"))
        v /= 1000.0;
    else if (*end && strcmp(end, "s"))
        return -EINVAL;
    if (v * 1000.0 > 4e9)
        return -ERANGE;
    *ms = (unsigned)(v * 1000.0 + 0.5);
    return 0;
}

static int main_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

struct main_opts {
    struct ringws_config cfg;
    const char *origins[MAX_LIST], *subprotocols[MAX_LIST];
    struct ringws_topic_rule rules[MAX_LIST];
    struct ringws_tls_cert certs[MAX_LIST];
    size_t n_keys;
};

enum { OPT_BIND = 256, OPT_PORT, OPT_WORKERS, OPT_MAX_MESSAGE, OPT_MIN_MSG_RATE,
       OPT_MSG_GRACE, OPT_MAX_PARTIAL, OPT_ORIGIN,
       OPT_SUBPROTOCOL, OPT_IDLE, OPT_HANDSHAKE, OPT_CLOSE, OPT_MAX_CONN, OPT_MAX_PER_ADDR, OPT_MAX_SENDQ,
       OPT_OVERFLOW, OPT_PUBSUB_PATH, OPT_PUBLISH_TOKEN, OPT_FANOUT_QUEUE, OPT_MAX_PUBLISH,
       OPT_MAX_INBOX, OPT_MAX_TOPICS,
       OPT_TOPIC,
       OPT_RECV_BUF, OPT_RECV_BUFS, OPT_PLAIN_BUFS, OPT_TLS_CERT, OPT_TLS_KEY, OPT_PLAIN_PORT,
       OPT_TICKET_LIFETIME, OPT_HANDSHAKE_BUDGET, OPT_HELP };

static int main_apply(struct main_opts *o, int opt, const char *arg)
{
    struct ringws_config *cfg = &o->cfg;
    unsigned long long v;

    switch (opt) {
    case OPT_BIND: cfg->bind = arg; return 0;
    case OPT_PORT:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->port = (uint16_t)v; return 0;
    case OPT_WORKERS:
        if (main_parse_uint(arg, 1024, &v) < 0 || !v) return -EINVAL;
        cfg->workers = (unsigned)v; return 0;
    case OPT_MAX_MESSAGE:
        if (main_parse_uint(arg, 1ull << 31, &v) < 0 || !v) return -EINVAL;
        cfg->max_message = (size_t)v; return 0;
    case OPT_MIN_MSG_RATE:
        if (main_parse_uint(arg, UINT32_MAX, &v) < 0) return -EINVAL;
        cfg->min_message_rate = (unsigned)v; return 0;
    case OPT_MSG_GRACE: return main_parse_duration(arg, &cfg->message_grace_ms);
    case OPT_MAX_PARTIAL:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0 || v < 65536) return -EINVAL;
        cfg->max_partial_bytes = (size_t)v; return 0;
    case OPT_ORIGIN:
        if (cfg->n_origins == MAX_LIST) return -E2BIG;
        o->origins[cfg->n_origins++] = arg; return 0;
    case OPT_SUBPROTOCOL:
        if (cfg->n_subprotocols == MAX_LIST) return -E2BIG;
        o->subprotocols[cfg->n_subprotocols++] = arg; return 0;
    case OPT_IDLE: return main_parse_duration(arg, &cfg->idle_timeout_ms);
    case OPT_HANDSHAKE: return main_parse_duration(arg, &cfg->handshake_timeout_ms);
    case OPT_CLOSE: return main_parse_duration(arg, &cfg->close_timeout_ms);
    case OPT_MAX_CONN:
        if (main_parse_uint(arg, 1u << 24, &v) < 0 || !v) return -EINVAL;
        cfg->max_connections = (unsigned)v; return 0;
    case OPT_MAX_PER_ADDR:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->max_per_address = (unsigned)v; return 0;
    case OPT_MAX_SENDQ:
        if (main_parse_uint(arg, 1ull << 32, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_send_queue = (size_t)v; return 0;
    case OPT_OVERFLOW:
        if (!strcmp(arg, "close")) cfg->overflow = RINGWS_OVERFLOW_CLOSE;
        else if (!strcmp(arg, "try-again")) cfg->overflow = RINGWS_OVERFLOW_TRY_AGAIN;
        else if (!strcmp(arg, "drop")) cfg->overflow = RINGWS_OVERFLOW_DROP;
        else return -EINVAL;
        return 0;
    case OPT_PUBSUB_PATH:
        if (arg[0] && arg[0] != '/') return -EINVAL;
        cfg->pubsub_path = arg[0] ? arg : NULL; return 0;
    case OPT_PUBLISH_TOKEN:
        if (!arg[0]) return -EINVAL;
        cfg->publish_token = arg; return 0;
    case OPT_FANOUT_QUEUE:
        if (main_parse_uint(arg, 1ull << 32, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_fanout_queue = (size_t)v; return 0;
    case OPT_MAX_PUBLISH:
        if (main_parse_uint(arg, 1ull << 31, &v) < 0 || !v) return -EINVAL;
        cfg->max_publish = (size_t)v; return 0;
    case OPT_MAX_INBOX:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_inbox_bytes = (size_t)v; return 0;
    case OPT_MAX_TOPICS:
        if (main_parse_uint(arg, 4096, &v) < 0 || !v) return -EINVAL;
        cfg->max_topics = (unsigned)v; return 0;
    case OPT_TOPIC:
        if (cfg->n_topic_rules == MAX_LIST) return -E2BIG;
        if (ringws_topic_rule_parse((char *)arg, &o->rules[cfg->n_topic_rules]) < 0)
            return -EINVAL;
        cfg->n_topic_rules++; return 0;
    case OPT_RECV_BUF:
        if (main_parse_uint(arg, 1u << 20, &v) < 0 || v < 16) return -EINVAL;
        cfg->recv_buffer_size = (unsigned)v; return 0;
    case OPT_RECV_BUFS:
        if (main_parse_uint(arg, 32768, &v) < 0 || !v || (v & (v - 1))) return -EINVAL;
        cfg->recv_buffers = (unsigned)v; return 0;
    case OPT_PLAIN_BUFS:
        cfg->plain_recv_buffers = true; return 0;
    case OPT_TLS_CERT:
        if (cfg->n_tls_certs == MAX_LIST) return -E2BIG;
        o->certs[cfg->n_tls_certs++].cert_file = arg; return 0;
    case OPT_TLS_KEY:
        if (o->n_keys == MAX_LIST) return -E2BIG;
        o->certs[o->n_keys++].key_file = arg; return 0;
    case OPT_PLAIN_PORT:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->plain_listener = true;
        cfg->plain_port = (uint16_t)v; return 0;
    case OPT_TICKET_LIFETIME: {
        unsigned ms;
        if (main_parse_duration(arg, &ms) < 0 || ms < 1000) return -EINVAL;
        cfg->tls_ticket_lifetime_s = ms / 1000; return 0;
    }
    case OPT_HANDSHAKE_BUDGET: {
        unsigned ms;
        if (main_parse_duration(arg, &ms) < 0 || !ms || ms > 1000) return -EINVAL;
        cfg->tls_handshake_budget_us = ms * 1000; return 0;
    }
    default: return -EINVAL;
    }
}

static int main_parse_args(int argc, char **argv, struct main_opts *o)
{
    static const struct option longopts[] = {
        {"bind", required_argument, NULL, OPT_BIND},
        {"port", required_argument, NULL, OPT_PORT},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
        {"min-message-rate", required_argument, NULL, OPT_MIN_MSG_RATE},
        {"message-grace", required_argument, NULL, OPT_MSG_GRACE},
        {"max-partial-bytes", required_argument, NULL, OPT_MAX_PARTIAL},
        {"origin", required_argument, NULL, OPT_ORIGIN},
        {"subprotocol", required_argument, NULL, OPT_SUBPROTOCOL},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
        {"close-timeout", required_argument, NULL, OPT_CLOSE},
        {"max-connections", required_argument, NULL, OPT_MAX_CONN},
        {"max-per-address", required_argument, NULL, OPT_MAX_PER_ADDR},
        {"max-send-queue", required_argument, NULL, OPT_MAX_SENDQ},
        {"overflow", required_argument, NULL, OPT_OVERFLOW},
        {"pubsub-path", required_argument, NULL, OPT_PUBSUB_PATH},
        {"publish-token", required_argument, NULL, OPT_PUBLISH_TOKEN},
        {"fanout-queue", required_argument, NULL, OPT_FANOUT_QUEUE},
        {"max-publish", required_argument, NULL, OPT_MAX_PUBLISH},
        {"max-inbox", required_argument, NULL, OPT_MAX_INBOX},
        {"max-topics", required_argument, NULL, OPT_MAX_TOPICS},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"recv-buffer", required_argument, NULL, OPT_RECV_BUF},
        {"recv-buffers", required_argument, NULL, OPT_RECV_BUFS},
        {"plain-recv-buffers", no_argument, NULL, OPT_PLAIN_BUFS},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"plain-port", required_argument, NULL, OPT_PLAIN_PORT},
        {"tls-ticket-lifetime", required_argument, NULL, OPT_TICKET_LIFETIME},
        {"tls-handshake-budget", required_argument, NULL, OPT_HANDSHAKE_BUDGET},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h' || opt == OPT_HELP) {
            main_usage(stdout);
            exit(0);
        }
        if (opt == '?' || main_apply(o, opt, optarg) < 0) {
            if (opt != '?')
                fprintf(stderr, "ringws: bad value for --%s: %s\n",
                        longopts[opt - OPT_BIND].name, optarg);
            main_usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringws: unexpected argument: %s\n", argv[optind]);
        return -EINVAL;
    }
    if (o->n_keys != o->cfg.n_tls_certs) {
        fprintf(stderr, "ringws: each --tls-cert needs its --tls-key\n");
        return -EINVAL;
    }
    if (o->cfg.plain_listener && !o->cfg.n_tls_certs) {
        fprintf(stderr, "ringws: --plain-port is for a plaintext listener beside TLS\n");
        return -EINVAL;
    }
    return 0;
}

/* Where to point a browser: https with TLS, and the plaintext listener
 * beside it. */
static void main_print_where(const struct ringws_config *cfg)
{
    const char *lb = strchr(cfg->bind, ':') ? "[" : "", *rb = *lb ? "]" : "";
    unsigned port = ringws_server_port(main_server);

    printf("ringws listening on %s%s%s:%u%s\n", lb, cfg->bind, rb, port,
           cfg->n_tls_certs ? " (TLS)" : "");
    if (cfg->plain_listener)
        printf("plain HTTP/WebSocket listener on %s%s%s:%u\n", lb, cfg->bind, rb,
               ringws_server_plain_port(main_server));
    printf("open %s://%s%s%s:%u/ in a browser (WebSocket echo at /echo%s%s)\n",
           cfg->n_tls_certs ? "https" : "http", lb, cfg->bind, rb, port,
           cfg->pubsub_path ? ", pub/sub at " : "", cfg->pubsub_path ? cfg->pubsub_path : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const char *const ws_paths[] = {"/echo"};
    struct main_opts o = {0};
    struct sigaction sa;
    sigset_t hup;
    pthread_t reloader;
    int ret;

    ringws_config_init(&o.cfg);
    o.cfg.port = 8080;
    o.cfg.ws_paths = ws_paths;
    o.cfg.n_ws_paths = 1;
    o.cfg.cb.on_message = main_on_message;
    o.cfg.origins = o.origins;
    o.cfg.subprotocols = o.subprotocols;
    o.cfg.topic_rules = o.rules;
    o.cfg.pubsub_path = "/ws";
    o.cfg.tls_certs = o.certs;
    if (main_parse_args(argc, argv, &o) < 0)
        return 2;

    ret = ringws_server_create(&o.cfg, &main_server);
    if (ret == -EIO && o.cfg.n_tls_certs) {
        fprintf(stderr, "ringws: cannot use the TLS certificates (the reason is above)\n");
        return 1;
    }
    if (ret < 0) {
        fprintf(stderr, "ringws: cannot listen on %s:%u: %s\n", o.cfg.bind, o.cfg.port,
                strerror(-ret));
        return 1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = main_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
    if (pthread_create(&reloader, NULL, main_reload_thread, &hup) != 0) {
        fprintf(stderr, "ringws: cannot start the SIGHUP thread\n");
        ringws_server_destroy(main_server);
        return 1;
    }

    main_print_where(&o.cfg);
    ret = ringws_server_run(main_server);
    atomic_store(&main_ending, true);
    pthread_kill(reloader, SIGHUP);
    pthread_join(reloader, NULL);
    {
        ringws_server *srv = main_server;
        main_server = NULL; /* a late signal must not reach a freed server */
        ringws_server_destroy(srv);
    }
    if (ret < 0) {
        fprintf(stderr, "ringws: %s\n", strerror(-ret));
        return 1;
    }
    return 0;
}
