/* history_mem.c - the allocator's bytes per message held in a topic's
 * history, exact to the byte.
 *
 * Why it exists: RSS moves by pages and keeps what the allocator has not
 * given back, so the per-message cost of history (docs/PUBSUB.md, "History":
 * the shared frame plus a few bytes) is read here from jemalloc's own count
 * of allocated bytes (stats.allocated, thread caches off: run it with
 * MALLOC_CONF=tcache:false).  One server of one worker, a topic with
 * history=N: N messages of S bytes published with ringws_publish and
 * delivered (to nobody), then every held message's ringws.v1 frame built,
 * as a replay to an envelope subscriber builds it.  Prints the bytes per
 * held message after each step, and what ringws_history_bytes counts.
 *
 * Usage: history_mem [N [S [binary|text]]]   (default 100000 20 binary) */
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ringws.h"

#define TOPIC "mem.topic"

static size_t allocated(void)
{
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch), n = 0;

    mallctl("epoch", &epoch, &sz, &epoch, sz);
    sz = sizeof(n);
    if (mallctl("stats.allocated", &n, &sz, NULL, 0) != 0) {
        fprintf(stderr, "history_mem: no stats.allocated (not jemalloc?)\n");
        exit(1);
    }
    return n;
}

static void *server_thread(void *arg)
{
    return (void *)(intptr_t)ringws_server_run(arg);
}

/* The held message of that offset, referenced; NULL when not held. */
static struct pub_msg *held_message(struct ringws_server *srv, uint64_t offset)
{
    struct seq_topic *t;
    struct pub_msg *m = NULL;

    seq_lock(srv);
    t = seq_topic_get(srv, TOPIC, strlen(TOPIC));
    if (t)
        m = seq_topic_message(t, offset);
    seq_unlock(srv);
    return m;
}

/* Builds the ringws.v1 frame of every held message. */
static unsigned build_envelopes(struct ringws_server *srv, unsigned n)
{
    unsigned built = 0;

    for (uint64_t off = 1; off <= n; off++) {
        struct pub_msg *m = held_message(srv, off);
        if (!m)
            continue;
        built += pubsub_env(srv, m) != NULL;
        pubsub_msg_unref(m);
    }
    return built;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 100000;
    size_t size = argc > 2 ? strtoul(argv[2], NULL, 10) : 20;
    bool text = argc > 3 && !strcmp(argv[3], "text");
    struct ringws_topic_rule rule = {.pattern = "mem.*", .policy = RINGWS_FANOUT_CLOSE_TRY_AGAIN,
                                     .history = n};
    struct ringws_config cfg;
    struct ringws_stats st;
    struct seq_stats sq;
    ringws_server *srv;
    pthread_t th;
    char *payload = malloc(size + 1);
    size_t a0, a1, a2;

    if (!n || !payload)
        return 2;
    memset(payload, 'x', size);
    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = 1;
    cfg.topic_rules = &rule;
    cfg.n_topic_rules = 1;
    cfg.max_history_bytes = (size_t)n * (size + 4096);
    if (ringws_server_create(&cfg, &srv) != 0)
        return 1;
    pthread_create(&th, NULL, server_thread, srv);
    a0 = allocated();
    for (unsigned i = 0; i < n;) {
        int r = ringws_publish(srv, TOPIC, payload, size, text ? 0 : RINGWS_PUBLISH_BINARY);
        if (r == -EAGAIN) { /* the worker's inbox is full: let it drain */
            sched_yield();
            continue;
        }
        if (r != 0) {
            fprintf(stderr, "history_mem: publish: %s\n", strerror(-r));
            return 1;
        }
        i++;
    }
    do {
        sched_yield();
        ringws_server_stats(srv, &st);
    } while (st.publishes < n);
    a1 = allocated();
    seq_stats(srv, &sq);
    printf("messages %u, payload %zu bytes (%s), held %llu\n", n, size, text ? "text" : "binary",
           (unsigned long long)sq.history_messages);
    printf("raw frames only: %.1f bytes allocated per held message; ringws_history_bytes %.1f\n",
           (double)(a1 - a0) / n, (double)sq.history_bytes / n);
    if (build_envelopes(srv, n) != sq.history_messages)
        fprintf(stderr, "history_mem: not every envelope frame was built\n");
    a2 = allocated();
    seq_stats(srv, &sq);
    printf("with envelope frames: %.1f bytes allocated per held message (+%.1f); "
           "ringws_history_bytes %.1f\n",
           (double)(a2 - a0) / n, (double)(a2 - a1) / n, (double)sq.history_bytes / n);
    ringws_server_stop(srv);
    pthread_join(th, NULL);
    ringws_server_destroy(srv);
    free(payload);
    return 0;
}
