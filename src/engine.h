/* engine.h - where topics' sequences live and how publishes made elsewhere
 * arrive: the points at which pub/sub and the workers call their engine.
 *
 * Why it exists: one process is one node; many nodes share their topics'
 * sequences (epoch, offsets, history) through an engine.  Fan-out below it
 * (inboxes, one frame per message, the workers' indexes) is the same
 * whatever the engine.  The in-process engine (engine_local: pubsub.c's
 * sequencing over pubsub_seq.c) is one; the Redis Cluster engine
 * (engine_redis.c, docs/CLUSTER.md) another.  The server picks one at its
 * creation and calls it through srv->engine only. */
#ifndef RINGWS_ENGINE_H
#define RINGWS_ENGINE_H

#include "internal.h"
#include "pubsub_proto.h"
#include "text_buf.h"

/* How a subscription starts: where the client stands, if it says, and
 * what it is answered. */
struct sub_start {
    const struct topic_pos *pos; /* NULL: no position */
    bool answer;                 /* a ringws.v1 command or upgrade */
    struct seq_view view;
    enum { START_SUBSCRIBED, START_RECOVERED, START_GAP } outcome;
    struct pub_msg **replay;     /* referenced, offsets pos->offset + 1 .. view.last */
    uint64_t n_replay;
    size_t room;                 /* left in the subscriber's queue (max_fanout_queue) */
};

struct engine_ops {
    const char *name;
    /* Publishes m (built, checked; the engine owns it from now on) from
     * worker self (NULL: a thread that is no worker): as
     * pubsub_publish_from answers (0, 1 when done runs later, -errno). */
    int (*publish)(struct ringws_server *srv, struct worker *self, struct pub_msg *m,
                   pubsub_done_fn *done, void *arg, uint64_t *recipients,
                   struct pub_pos *pos);
    /* A subscription of worker w to the topic starts: held is the server
     * topic w holds already (NULL: w holds none, and one is held for it,
     * to be given back with leave if w does not keep it).  With
     * ss->answer, ss gets the view and the replay.  What w's inbox holds
     * of the topic's offsets up to the view is delivered before it
     * returns.  *stp: the server topic.  0 or -errno. */
    int (*join)(struct worker *w, const char *name, size_t len, struct seq_topic *held,
                struct seq_topic **stp, struct sub_start *ss);
    /* Worker w no longer holds the server topic (its last subscriber of it
     * left). */
    void (*leave)(struct worker *w, struct seq_topic *st);
    /* GET /history/TOPIC's JSON body (malloc'd); 0 or -ENOMEM. */
    int (*history)(struct ringws_server *srv, const char *topic, size_t len,
                   const struct history_query *q, char **out, size_t *out_len);
    /* Once a second on worker 0: a bounded step of upkeep. */
    void (*sweep)(struct ringws_server *srv, uint64_t now_ns, unsigned budget);
    /* The rest may be NULL (the in-process engine needs none of them). */
    /* Whether the topics of a valid list are ready on worker w for a
     * command of connection c: 0; or 1: pubsub_engine_ready(c) follows;
     * or -errno. */
    int (*prepare)(struct worker *w, const char *list, size_t len, struct ringws_conn *c);
    /* On the worker's thread: once its loop exists (0 or -errno); when it
     * stops (before its connections are freed); after its loop is gone. */
    int (*worker_start)(struct worker *w);
    void (*worker_stop)(struct worker *w);
    void (*worker_free)(struct worker *w);
    /* The worker was woken (another thread handed it work), and every
     * second on every worker. */
    void (*woken)(struct worker *w);
    void (*tick)(struct worker *w);
    /* Its lines of GET /metrics. */
    void (*metrics)(struct ringws_server *srv, struct text_buf *out);
    /* Frees what the server's engine holds (ringws_server_destroy). */
    void (*destroy)(struct ringws_server *srv);
};

/* Makes the Redis engine (engine_redis.c, docs/CLUSTER.md) the server's:
 * url is "redis://HOST:PORT[,HOST:PORT...]", resolved now.  0, -EINVAL (a
 * malformed URL or an unknown host, logged) or -ENOMEM. */
int engine_redis_create(struct ringws_server *srv, const char *url);

/* The single-node engine: sequences and histories in this process. */
extern const struct engine_ops engine_local;

#endif
