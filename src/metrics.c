/* metrics.c - the text of GET /metrics: the HELP of every family, the
 * families that ringws_server_stats does not carry (handshakes by outcome,
 * messages and bytes, each worker's connections, queued bytes, the publish
 * histograms), and the histograms' buckets.
 *
 * Why it exists: operators alert on these figures, so each family has its
 * HELP and TYPE and a fixed set of series (zeros included) from the start.
 * Each worker writes only its own counters and buckets; this file sums them
 * when /metrics is read, so the hot paths pay a plain increment and take no
 * lock.  docs/METRICS.md lists every family and what to alert on. */
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Bucket bounds of both histograms in nanoseconds, 10 us to 1 s; the last
 * bucket (HIST_BUCKETS - 1) is +Inf. */
static const uint64_t metrics_bounds_ns[HIST_BUCKETS - 1] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
    10000000, 25000000, 50000000, 100000000, 250000000, 1000000000,
};

static const struct {
    int status;
    const char *label;
} metrics_outcomes[HS_OUTCOMES] = {
    [HS_101] = {101, "101"}, [HS_400] = {400, "400"}, [HS_401] = {401, "401"},
    [HS_403] = {403, "403"}, [HS_404] = {404, "404"}, [HS_405] = {405, "405"},
    [HS_411] = {411, "411"}, [HS_413] = {413, "413"}, [HS_414] = {414, "414"},
    [HS_426] = {426, "426"}, [HS_429] = {429, "429"}, [HS_431] = {431, "431"},
    [HS_500] = {500, "500"}, [HS_501] = {501, "501"}, [HS_503] = {503, "503"},
    [HS_505] = {505, "505"}, [HS_OTHER] = {0, "other"}, [HS_TIMEOUT] = {0, "timeout"},
};

/* The HELP of every family, in the order /metrics shows them. */
static const struct {
    const char *name, *help;
} metrics_helps[] = {
    {"ringws_connections_open", "Connections accepted and not yet closed."},
    {"ringws_accepted_total", "Connections accepted."},
    {"ringws_refused_total", "Connections refused: over max_connections or max_per_address."},
    {"ringws_send_queue_overflows_total", "Sends that met a full send queue."},
    {"ringws_messages_dropped_total", "Messages dropped by the overflow policy."},
    {"ringws_publishes_total", "Publishes handled, once per worker."},
    {"ringws_fanout_queued_total", "Published messages queued to subscribers."},
    {"ringws_fanout_dropped_total", "Published messages dropped for slow subscribers."},
    {"ringws_fanout_closed_total", "Slow subscribers closed (1008 or 1013)."},
    {"ringws_subscriptions", "Current subscriptions."},
    {"ringws_sends_total", "Send requests issued (each may gather many queued messages)."},
    {"ringws_topics", "Topics with subscribers, once per worker that holds some."},
    {"ringws_topic_buckets", "Hash buckets of the workers' topic indexes."},
    {"ringws_messages_too_slow_total", "Connections closed 1008: a message below min_message_rate."},
    {"ringws_partial_over_budget_total", "Connections closed: max_partial_bytes reached."},
    {"ringws_partial_bytes", "Bytes held now by incomplete requests and messages."},
    {"ringws_publishes_refused_total", "Publishes refused: a worker's inbox was full."},
    {"ringws_tls_handshakes_total", "TLS handshakes completed, by kind (full or resumed)."},
    {"ringws_tls_handshake_failures_total", "TLS connections that failed."},
    {"ringws_tls_handshakes_deferred_total", "TLS handshake steps put off to a later loop turn."},
    {"ringws_auth_failures_total", "Signed tokens refused, by reason (docs/SECURITY.md)."},
    {"ringws_sequences", "Topics the sequencer holds (with subscribers or history, or idle)."},
    {"ringws_sequences_idle", "Sequences kept idle (no subscriber, no history) for "
                              "sequence_idle, bounded by sequence_idle_max."},
    {"ringws_history_messages", "Messages held by topics' histories now."},
    {"ringws_history_bytes", "Memory the histories' messages pin now (their shared frames), "
                             "bounded by history_memory."},
    {"ringws_history_evictions_total", "Messages dropped from histories, by reason (count, "
                                       "ttl, memory)."},
    {"ringws_resumes_total", "Subscriptions with a position, by outcome (recovered, gap)."},
    {"ringws_handshakes_total", "WebSocket handshakes by outcome: the status answered to a "
                                "request for a WebSocket endpoint, or timeout (a request "
                                "still incomplete at handshake_timeout)."},
    {"ringws_handshakes_refused_total", "WebSocket upgrades answered 503 with Retry-After "
                                        "before their handshake, by reason (max_handshakes: "
                                        "the worker's connections not yet upgraded were over "
                                        "that bound)."},
    {"ringws_accepts_deferred_total", "New connections put off to a later loop turn by "
                                      "accepts_per_turn."},
    {"ringws_messages_received_total", "WebSocket data messages received (control frames not "
                                       "counted)."},
    {"ringws_messages_sent_total", "WebSocket data messages queued to peers: sends of the "
                                   "application and published deliveries."},
    {"ringws_bytes_received_total", "Bytes read from peers' sockets: wire bytes, HTTP, "
                                    "WebSocket framing and TLS records included."},
    {"ringws_bytes_sent_total", "Bytes written to peers' sockets: wire bytes, HTTP, "
                                "WebSocket framing and TLS records included."},
    {"ringws_deflate_compressed_total", "Messages compressed for permessage-deflate: once per "
                                        "publish, once per compressed ringws_send, once per "
                                        "delivery to a connection with context takeover."},
    {"ringws_deflate_sent_total", "Compressed frames queued to peers (RSV1 set)."},
    {"ringws_deflate_inflated_total", "Compressed messages received and inflated."},
    {"ringws_deflate_deferred_total", "Connections whose further input waited for the next "
                                      "loop turn: their worker had inflated 1 MiB in this one."},
    {"ringws_deflate_takeover_bytes", "Memory the context-takeover streams of each worker's "
                                      "connections hold now (zlib's state and windows)."},
    {"ringws_deflate_takeover_refused_total", "Upgrades answered stateless on a takeover path: "
                                              "the worker's deflate_takeover_memory was "
                                              "reserved."},
    {"ringws_connections", "Connections each worker holds now."},
    {"ringws_send_queue_bytes", "Bytes waiting in send queues now (unsent data plus chunk "
                                "bookkeeping)."},
    {"ringws_publish_to_enqueue_seconds", "From a publish to its message queued to every "
                                          "subscriber of a worker; one observation per "
                                          "worker that has subscribers of the topic."},
    {"ringws_fanout_duration_seconds", "Time one worker spends queueing a publish to its "
                                       "subscribers of the topic."},
    {"ringws_engine_connections", "With the Redis engine: the workers' command connections to "
     "masters, by state."},
    {"ringws_engine_reconnects_total", "Connections to Redis lost (each made again with backoff)."},
    {"ringws_engine_channels", "Topics live on this node: sharded channels it subscribes."},
    {"ringws_engine_refills_total", "Holes in a topic's messages filled from its stream."},
    {"ringws_engine_gaps_total", "Holes the stream could no longer fill, or history Redis lost."},
    {"ringws_engine_refused_total", "Publishes and subscriptions refused while Redis could not "
     "take them."},
    {"ringws_engine_refused_unreported_total", "Publishes of ringws_publish refused after the "
     "call had returned 0: lost, and their caller not told."},
    {"ringws_engine_lag_seconds", "From a publish on any node (its clock) to its message handed "
     "to this node's workers."},
};

void metrics_write_family(struct text_buf *t, const char *name, const char *type)
{
    for (size_t i = 0; i < sizeof(metrics_helps) / sizeof(metrics_helps[0]); i++)
        if (!strcmp(metrics_helps[i].name, name))
            text_buf_printf(t, "# HELP %s %s\n", name, metrics_helps[i].help);
    text_buf_printf(t, "# TYPE %s %s\n", name, type);
}

void metrics_write_sample(struct text_buf *t, const char *name, const char *label,
                          uint64_t value)
{
    text_buf_printf(t, "%s%s%s%s %" PRIu64 "\n", name, label ? "{" : "", label ? label : "",
                   label ? "}" : "", value);
}

void metrics_count_handshake(struct worker *w, int status)
{
    unsigned i = 0;

    if (status == METRICS_HANDSHAKE_TIMEOUT)
        i = HS_TIMEOUT;
    while (i < HS_OTHER && metrics_outcomes[i].status != status)
        i++;
    STAT_ADD(w, handshakes[i], 1);
}

void metrics_observe(struct stat_hist *h, uint64_t ns)
{
    unsigned i = 0;

    while (i < HIST_BUCKETS - 1 && ns > metrics_bounds_ns[i])
        i++;
    atomic_store_explicit(&h->buckets[i],
                          atomic_load_explicit(&h->buckets[i], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns,
                          atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

static uint64_t metrics_sum_workers(const struct ringws_server *srv, size_t offset)
{
    uint64_t sum = 0;

    for (unsigned i = 0; i < srv->n_workers; i++)
        sum += atomic_load_explicit(
            (const _Atomic uint64_t *)((const char *)&srv->workers[i].stats + offset),
            memory_order_relaxed);
    return sum;
}

#define METRICS_SUM(srv, f) metrics_sum_workers(srv, offsetof(struct worker_stats, f))

static void metrics_write_counter(struct text_buf *t, const char *name, uint64_t value)
{
    metrics_write_family(t, name, "counter");
    metrics_write_sample(t, name, NULL, value);
}

static void metrics_write_handshakes(struct text_buf *t, const struct ringws_server *srv)
{
    static const char name[] = "ringws_handshakes_total";

    metrics_write_family(t, name, "counter");
    for (unsigned i = 0; i < HS_OUTCOMES; i++) {
        char label[32];
        snprintf(label, sizeof(label), "outcome=\"%s\"", metrics_outcomes[i].label);
        metrics_write_sample(t, name, label, METRICS_SUM(srv, handshakes[i]));
    }
}

/* Upgrades refused before their handshake, by reason (one so far), and the
 * connections the accept budget put off. */
static void metrics_write_admission(struct text_buf *t, const struct ringws_server *srv)
{
    static const char name[] = "ringws_handshakes_refused_total";

    metrics_write_family(t, name, "counter");
    metrics_write_sample(t, name, "reason=\"max_handshakes\"",
                         METRICS_SUM(srv, handshakes_refused_busy));
    metrics_write_counter(t, "ringws_accepts_deferred_total", METRICS_SUM(srv, accepts_deferred));
}

static void metrics_write_connections(struct text_buf *t, const struct ringws_server *srv)
{
    static const char name[] = "ringws_connections";

    metrics_write_family(t, name, "gauge");
    for (unsigned i = 0; i < srv->n_workers; i++) {
        char label[32];
        snprintf(label, sizeof(label), "worker=\"%u\"", i);
        metrics_write_sample(t, name, label, worker_conns(&srv->workers[i]));
    }
}

/* Per worker: the cap it checks against is per worker. */
static void metrics_write_takeover(struct text_buf *t, const struct ringws_server *srv)
{
    static const char name[] = "ringws_deflate_takeover_bytes";

    metrics_write_family(t, name, "gauge");
    for (unsigned i = 0; i < srv->n_workers; i++) {
        char label[32];
        snprintf(label, sizeof(label), "worker=\"%u\"", i);
        metrics_write_sample(t, name, label,
                             atomic_load_explicit(&srv->workers[i].stats.deflate_takeover_bytes,
                                                  memory_order_relaxed));
    }
    metrics_write_counter(t, "ringws_deflate_takeover_refused_total",
                          METRICS_SUM(srv, deflate_takeover_refused));
}

/* The buckets are counted per bucket and summed here: the cumulative counts
 * and _count come from the same reads, so they always agree. */
void metrics_write_histogram(struct text_buf *t, const struct ringws_server *srv,
                             const char *name, size_t offset)
{
    uint64_t cumulative = 0, sum_ns = 0;

    metrics_write_family(t, name, "histogram");
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        for (unsigned i = 0; i < srv->n_workers; i++) {
            const struct stat_hist *h =
                (const void *)((const char *)&srv->workers[i].stats + offset);
            cumulative += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
            if (b == 0)
                sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
        }
        if (b < HIST_BUCKETS - 1)
            text_buf_printf(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                           (double)metrics_bounds_ns[b] / 1e9, cumulative);
        else
            text_buf_printf(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    }
    text_buf_printf(t, "%s_sum %.9f\n", name, (double)sum_ns / 1e9);
    text_buf_printf(t, "%s_count %" PRIu64 "\n", name, cumulative);
}

void metrics_write_server(struct text_buf *t, const struct ringws_server *srv)
{
    metrics_write_handshakes(t, srv);
    metrics_write_admission(t, srv);
    metrics_write_counter(t, "ringws_messages_received_total", METRICS_SUM(srv, messages_received));
    /* Published deliveries are counted once per publish (fanout_queued),
     * not once per recipient. */
    metrics_write_counter(t, "ringws_messages_sent_total",
                    METRICS_SUM(srv, messages_sent) + METRICS_SUM(srv, fanout_queued));
    metrics_write_counter(t, "ringws_bytes_received_total", METRICS_SUM(srv, bytes_received));
    metrics_write_counter(t, "ringws_bytes_sent_total", METRICS_SUM(srv, bytes_sent));
    metrics_write_counter(t, "ringws_deflate_compressed_total",
                          METRICS_SUM(srv, deflate_compressed));
    metrics_write_counter(t, "ringws_deflate_sent_total", METRICS_SUM(srv, deflate_sent));
    metrics_write_counter(t, "ringws_deflate_inflated_total", METRICS_SUM(srv, deflate_inflated));
    metrics_write_counter(t, "ringws_deflate_deferred_total", METRICS_SUM(srv, deflate_deferred));
    metrics_write_takeover(t, srv);
    metrics_write_connections(t, srv);
    metrics_write_family(t, "ringws_send_queue_bytes", "gauge");
    metrics_write_sample(t, "ringws_send_queue_bytes", NULL, METRICS_SUM(srv, send_queue_bytes));
    metrics_write_histogram(t, srv, "ringws_publish_to_enqueue_seconds",
                      offsetof(struct worker_stats, publish_latency));
    metrics_write_histogram(t, srv, "ringws_fanout_duration_seconds",
                      offsetof(struct worker_stats, fanout_duration));
}
