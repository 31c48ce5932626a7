/* server.c - the public server API: configuration, listeners, worker
 * threads, stop, and the sum of the workers' counters.
 *
 * Why it exists: it turns a ringws_config into N workers, each with its own
 * SO_REUSEPORT listener on the same address (the kernel spreads connections
 * across them), and owns the only cross-thread signal there is: the stop
 * request, delivered through each worker's eventfd. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "internal.h"
#include "log.h"
#include "tls.h"
#include "token.h"

#define LISTEN_BACKLOG 4096
#define MAX_RECV_BUF_SIZE (1u << 20)
#define MAX_RECV_BUF_COUNT 32768u

void ringws_config_init(struct ringws_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->bind = "127.0.0.1";
    cfg->max_message = 16u << 20;
    cfg->min_message_rate = 4096;
    cfg->message_grace_ms = 10000;
    cfg->max_partial_bytes = (size_t)256 << 20;
    cfg->handshake_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->close_timeout_ms = 3000;
    cfg->max_send_queue = 4u << 20;
    cfg->max_connections = 16384;
    cfg->max_handshakes = 0; /* bench/RESULTS.md, the reconnect storm */
    cfg->accepts_per_turn = 256;
    cfg->recv_buffer_size = 16384;
    cfg->recv_buffers = 1024;
    cfg->builtin_routes = true;
    cfg->max_fanout_queue = 1u << 20;
    cfg->max_publish = 1u << 20;
    cfg->max_inbox_bytes = 64u << 20;
    cfg->max_history_bytes = 64u << 20;
    cfg->sequence_idle_ms = 300000;
    cfg->sequence_idle_max = 65536;
    cfg->max_topics = 64;
    cfg->deflate_takeover_window_bits = 11;
    cfg->deflate_takeover_memory = (size_t)64 << 20;
    cfg->tls_ticket_lifetime_s = 7200;
    cfg->tls_handshake_budget_us = 2000;
    cfg->token_leeway_s = 30;
}

static int server_listen(const struct ringws_config *cfg, uint16_t port, int *out_fd)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    char service[8];
    int one = 1, fd, ret;

    snprintf(service, sizeof(service), "%u", port);
    ret = getaddrinfo(cfg->bind, service, &hints, &ai);
    if (ret)
        return ret == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        freeaddrinfo(ai);
        return ret;
    }
    /* TCP_NODELAY is inherited by accepted sockets, which as direct
     * descriptors cannot be given options one by one. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        ret = -errno;
        close(fd);
        freeaddrinfo(ai);
        return ret;
    }
    freeaddrinfo(ai);
    *out_fd = fd;
    return 0;
}

/* The port the listeners share, and whether they listen on loopback only:
 * the kernel hands such a listener connections from this host alone. */
static void server_note_listener(ringws_server *srv, int fd, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6)
        *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    srv->listen_loopback = conn_addr_loopback((struct sockaddr *)&ss, len);
}

/* POST /publish without a token is for programs on this host: a loopback
 * listener sees no others (unless a proxy speaks for them: the PROXY
 * header's address then decides); any other listener needs each peer's
 * address (see conn_accepted), and its operator is told how to lock it
 * down. */
static void server_plan_publish(ringws_server *srv)
{
    const struct ringws_config *cfg = &srv->cfg;
    bool unguarded = cfg->pubsub_path && !cfg->publish_token && !cfg->n_token_keys &&
                     (!srv->listen_loopback || cfg->proxy_protocol);

    srv->peer_addrs = srv->addr_counts || unguarded;
    if (unguarded)
        log_msg(LOG_LEVEL_WARN,
                "listening on %s without a publish token: POST /publish is refused (403) "
                "except from loopback peers; set --publish-token (publish_token) to publish "
                "from other hosts, and --origin (origins) to choose which web pages may "
                "subscribe", cfg->bind);
}

static int server_worker_init(ringws_server *srv, struct worker *w, unsigned id)
{
    w->srv = srv;
    w->id = id;
    w->static_slot.local_refs = 1;
    topic_index_init(&w->topics, srv->topic_key);
    /* Each worker draws its own jitter; a seed of 0 would stay 0. */
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
        w->rng = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)w << 16);
    w->rng |= 1;
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd < 0)
        return -errno;
    w->hdrs = calloc(srv->limits.max_headers, sizeof(*w->hdrs));
    w->req_names = calloc(srv->limits.max_headers, sizeof(*w->req_names));
    w->req_values = calloc(srv->limits.max_headers, sizeof(*w->req_values));
    if (!w->hdrs || !w->req_names || !w->req_values)
        return -ENOMEM;
    return 0;
}

static int server_check_config(const struct ringws_config *cfg)
{
    if (!cfg->bind || !cfg->max_message || !cfg->max_send_queue || !cfg->max_partial_bytes ||
        !cfg->max_connections || !cfg->close_timeout_ms || !cfg->handshake_timeout_ms ||
        cfg->overflow > RINGWS_OVERFLOW_DROP || !cfg->max_fanout_queue ||
        (cfg->admission_refusal && cfg->admission_refusal != 503 &&
         cfg->admission_refusal != WS_CLOSE_TRY_AGAIN) ||
        (cfg->stop_code && cfg->stop_code != WS_CLOSE_GOING_AWAY &&
         cfg->stop_code != WS_CLOSE_SERVICE_RESTART) ||
        !cfg->max_publish || !cfg->max_inbox_bytes ||
        !cfg->max_topics || cfg->max_topics > UINT16_MAX || cfg->n_subprotocols > 255 ||
        (cfg->pubsub_path && cfg->pubsub_path[0] != '/') ||
        cfg->recv_buffer_size < 16 || cfg->recv_buffer_size > MAX_RECV_BUF_SIZE ||
        !cfg->recv_buffers || cfg->recv_buffers > MAX_RECV_BUF_COUNT ||
        (cfg->recv_buffers & (cfg->recv_buffers - 1)))
        return -EINVAL;
    if (cfg->plain_listener && !cfg->n_tls_certs)
        return -EINVAL; /* a second plaintext listener beside plaintext */
    for (size_t i = 0; i < cfg->n_tls_certs; i++)
        if (!cfg->tls_certs || !cfg->tls_certs[i].cert_file || !cfg->tls_certs[i].key_file)
            return -EINVAL;
    if ((cfg->n_token_keys && !cfg->token_keys) ||
        ((cfg->require_token || cfg->token_cookie) && !cfg->n_token_keys) ||
        (cfg->token_cookie && !cfg->token_cookie[0]) || cfg->token_leeway_s > 3600)
        return -EINVAL;
    if (cfg->n_deflate_takeover_paths &&
        (!cfg->deflate_takeover_paths || cfg->deflate_takeover_window_bits < WS_PMD_MIN_SERVER_BITS ||
         cfg->deflate_takeover_window_bits > 15))
        return -EINVAL;
    for (size_t i = 0; i < cfg->n_deflate_takeover_paths; i++)
        if (!cfg->deflate_takeover_paths[i] || cfg->deflate_takeover_paths[i][0] != '/')
            return -EINVAL;
    for (size_t i = 0; i < cfg->n_topic_rules; i++)
        if (!cfg->topic_rules[i].pattern ||
            cfg->topic_rules[i].policy > RINGWS_FANOUT_DROP_OLDEST)
            return -EINVAL;
    return 0;
}

/* Reads the token key files: a bad one is logged with its reason. */
static int server_read_token_keys(const ringws_server *srv, struct token_keys **out)
{
    static const char *const algs[] = {"HS256", "RS256", "ES256", "EdDSA"};
    const struct ringws_config *cfg = &srv->cfg;
    char why[512];
    int ret = token_keys_load(cfg->token_keys, cfg->n_token_keys, out, why, sizeof(why));

    if (ret == -EINVAL) {
        log_msg(LOG_LEVEL_ERROR, "token key: %s", why);
        return -ENOKEY;
    }
    for (size_t i = 0; ret == 0 && i < cfg->n_token_keys; i++)
        log_msg(LOG_LEVEL_INFO, "token key %s%s%s: %s", cfg->token_keys[i].file,
                cfg->token_keys[i].kid ? ", kid " : "",
                cfg->token_keys[i].kid ? cfg->token_keys[i].kid : "",
                algs[token_keys_alg(*out, i)]);
    return ret;
}

int ringws_server_reload_tokens(ringws_server *srv)
{
    struct token_keys *ks, *old;
    int ret;

    if (!srv->cfg.n_token_keys)
        return -EINVAL;
    ret = server_read_token_keys(srv, &ks);
    if (ret < 0) {
        log_msg(LOG_LEVEL_ERROR, "token key reload failed: the keys in use stay");
        return ret;
    }
    pthread_rwlock_wrlock(&srv->token_lock);
    old = srv->token_keys;
    srv->token_keys = ks;
    pthread_rwlock_unlock(&srv->token_lock);
    token_keys_free(old);
    log_msg(LOG_LEVEL_INFO, "token keys reloaded");
    return 0;
}

int ringws_server_create(const struct ringws_config *cfg, ringws_server **out)
{
    ringws_server *srv;
    long cpus;
    int ret;

    ret = server_check_config(cfg);
    if (ret < 0)
        return ret;
    if (ws_handshake_self_test() < 0) {
        log_msg(LOG_LEVEL_ERROR, "the Sec-WebSocket-Accept digest fails RFC 6455's example");
        return -EIO;
    }
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->cfg = *cfg;
    http_limits_default(&srv->limits);
    srv->policy = (struct ws_handshake_policy){
        .subprotocols = cfg->subprotocols, .n_subprotocols = cfg->n_subprotocols,
        .origins = cfg->origins, .n_origins = cfg->n_origins, .deflate = cfg->deflate};
    if (getrandom(srv->topic_key, sizeof(srv->topic_key), 0) != sizeof(srv->topic_key)) {
        srv->topic_key[0] = (uint64_t)(uintptr_t)srv ^ (uint64_t)time(NULL);
        srv->topic_key[1] = ~srv->topic_key[0];
    }
    srv->engine = &engine_local;
    ret = conn_addr_table_create(srv);
    if (ret == 0)
        ret = seq_create(srv);
    pthread_rwlock_init(&srv->token_lock, NULL);
    if (ret == 0 && cfg->n_token_keys)
        ret = server_read_token_keys(srv, &srv->token_keys);
    if (ret == 0 && cfg->n_tls_certs)
        ret = tls_server_create(&srv->tls, cfg);
    if (ret < 0) {
        token_keys_free(srv->token_keys);
        pthread_rwlock_destroy(&srv->token_lock);
        seq_destroy(srv);
        if (srv->engine->destroy)
            srv->engine->destroy(srv);
        free(srv->addr_counts);
        free(srv);
        return ret;
    }
    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    srv->n_workers = cfg->workers ? cfg->workers : (unsigned)(cpus > 0 ? cpus : 1);
    srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
    if (!srv->workers) {
        tls_server_destroy(srv->tls);
        token_keys_free(srv->token_keys);
        pthread_rwlock_destroy(&srv->token_lock);
        seq_destroy(srv);
        if (srv->engine->destroy)
            srv->engine->destroy(srv);
        free(srv->addr_counts);
        free(srv);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < srv->n_workers; i++)
        srv->workers[i].listen_fd = srv->workers[i].plain_fd = srv->workers[i].wake_fd = -1;
    if (cfg->engine && (ret = engine_redis_create(srv, cfg->engine)) < 0) {
        ringws_server_destroy(srv);
        return ret;
    }
    for (unsigned i = 0; i < srv->n_workers; i++) {
        struct worker *w = &srv->workers[i];
        ret = server_worker_init(srv, w, i);
        if (ret == 0)
            ret = server_listen(cfg, srv->port ? srv->port : cfg->port, &w->listen_fd);
        if (ret == 0 && cfg->plain_listener)
            ret = server_listen(cfg, srv->plain_port ? srv->plain_port : cfg->plain_port,
                                &w->plain_fd);
        if (ret < 0) {
            ringws_server_destroy(srv);
            return ret;
        }
        if (!srv->port)
            server_note_listener(srv, w->listen_fd, &srv->port);
        if (cfg->plain_listener && !srv->plain_port)
            server_note_listener(srv, w->plain_fd, &srv->plain_port);
    }
    server_plan_publish(srv);
    *out = srv;
    return 0;
}

uint16_t ringws_server_port(const ringws_server *srv)
{
    return srv->port;
}

uint16_t ringws_server_plain_port(const ringws_server *srv)
{
    return srv->plain_port;
}

int ringws_server_reload_tls(ringws_server *srv)
{
    if (!srv->tls)
        return -EINVAL;
    return tls_server_reload(srv->tls);
}

static void *server_worker_main(void *arg)
{
    struct worker *w = arg;
    int ret = worker_run(w);

    if (ret < 0) {
        /* One failed worker stops them all: a server half alive would keep
         * its listener taking clients nobody serves. */
        log_msg(LOG_LEVEL_ERROR, "worker %u cannot go on (%s): stopping the server", w->id,
                strerror(-ret));
        ringws_server_stop(w->srv);
        pubsub_worker_abandon(w);
    }
    return (void *)(intptr_t)ret;
}

int ringws_server_run(ringws_server *srv)
{
    sigset_t block, old;
    unsigned started = 0;
    int ret = 0;

    /* Workers never take SIGINT/SIGTERM (the caller's thread handles them
     * and its handler calls ringws_server_stop) nor SIGHUP (the caller's
     * to act on, with ringws_server_reload_tls, say). */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (; started < srv->n_workers; started++) {
        ret = -pthread_create(&srv->workers[started].thread, NULL, server_worker_main,
                              &srv->workers[started]);
        if (ret < 0) {
            ringws_server_stop(srv);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (unsigned i = 0; i < started; i++) {
        void *res;
        pthread_join(srv->workers[i].thread, &res);
        if ((intptr_t)res < 0 && ret == 0)
            ret = (int)(intptr_t)res;
    }
    pubsub_server_drain(srv);
    return ret;
}

void ringws_server_stop(ringws_server *srv)
{
    atomic_store(&srv->stop_requested, true);
    for (unsigned i = 0; i < srv->n_workers; i++)
        if (srv->workers[i].wake_fd >= 0)
            worker_wake(&srv->workers[i]);
}

void ringws_server_disconnect_all(ringws_server *srv)
{
    for (unsigned i = 0; i < srv->n_workers; i++) {
        atomic_store(&srv->workers[i].disconnect, true);
        if (srv->workers[i].wake_fd >= 0)
            worker_wake(&srv->workers[i]);
    }
}

void ringws_server_destroy(ringws_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stop_requested, true);
    pubsub_server_drain(srv); /* publishes to a server that never ran */
    for (unsigned i = 0; i < srv->n_workers; i++) {
        struct worker *w = &srv->workers[i];
        if (w->listen_fd >= 0)
            close(w->listen_fd);
        if (w->plain_fd >= 0)
            close(w->plain_fd);
        if (w->wake_fd >= 0)
            close(w->wake_fd);
        free(w->hdrs);
        free(w->req_names);
        free(w->req_values);
    }
    seq_destroy(srv); /* the histories' messages, after the inboxes' */
    if (srv->engine->destroy)
        srv->engine->destroy(srv);
    free(srv->workers);
    free(srv->addr_counts);
    tls_server_destroy(srv->tls);
    token_keys_free(srv->token_keys);
    pthread_rwlock_destroy(&srv->token_lock);
    free(srv);
}

/* Each worker writes only its own counters: the sum is read without a lock,
 * each figure current to within what the workers are doing meanwhile. */
void ringws_server_stats(const ringws_server *srv, struct ringws_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < srv->n_workers; i++) {
        const struct worker_stats *st = &srv->workers[i].stats;
#define STAT_GET(f) atomic_load_explicit(&st->f, memory_order_relaxed)
        out->connections_open += STAT_GET(conns_open);
        out->accepted += STAT_GET(accepted);
        out->refused += STAT_GET(refused) + STAT_GET(refused_per_address);
        out->send_queue_overflows += STAT_GET(send_queue_overflows);
        out->messages_dropped += STAT_GET(messages_dropped);
        out->publishes += STAT_GET(publishes);
        out->fanout_queued += STAT_GET(fanout_queued);
        out->fanout_dropped += STAT_GET(fanout_dropped);
        out->fanout_closed += STAT_GET(fanout_closed);
        out->subscriptions += STAT_GET(subscriptions);
        out->sends += STAT_GET(sends);
        out->topics += STAT_GET(topics);
        out->topic_buckets += STAT_GET(topic_buckets);
        out->messages_too_slow += STAT_GET(messages_too_slow);
        out->partial_over_budget += STAT_GET(partial_over_budget);
        out->partial_bytes += STAT_GET(partial_bytes);
        out->publishes_refused += STAT_GET(publishes_refused);
        out->tls_handshakes_full += STAT_GET(tls_handshakes_full);
        out->tls_handshakes_resumed += STAT_GET(tls_handshakes_resumed);
        out->tls_handshake_failures += STAT_GET(tls_handshake_failures);
        out->tls_handshakes_deferred += STAT_GET(tls_handshakes_deferred);
        for (unsigned r = 0; r < RINGWS_AUTH_REASONS; r++)
            out->auth_failures[r] += STAT_GET(auth_failures[r]);
#undef STAT_GET
    }
}
