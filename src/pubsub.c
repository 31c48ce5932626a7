/* pubsub.c - topics and fan-out: each worker's topic index, subscriptions,
 * publishing from any thread, delivery of one shared frame to every
 * subscriber, slow-subscriber policies, and the subscriber connection's
 * commands.
 *
 * Why it exists: pushing one message to very many clients is what ringws is
 * for.  A publish builds its frame once; every worker that owns subscribers
 * takes one share of it (a slot) and queues the same bytes to each of its
 * subscribers, so the cost per recipient is a small chunk and a send, never
 * a copy.  Workers never share an index and never take a lock: messages
 * reach other workers through a lock-free inbox (a Treiber stack drained
 * whole) and an eventfd read armed in each ring.  Each inbox holds at most
 * max_inbox_bytes: a publish that any inbox cannot take goes nowhere.  See
 * docs/PUBSUB.md. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "pubsub_proto.h"
#include "utf8.h"

#define TOPIC_BUCKETS_MIN 64u

struct topic {
    struct topic *next; /* in its bucket */
    uint64_t hash;
    struct ringws_conn **subs;
    uint32_t n_subs, cap;
    enum ringws_fanout_policy policy;
    bool client_publish;
    uint16_t len;
    char name[];
};

struct sub_ref {
    struct topic *t;
    uint32_t idx; /* where the connection sits in t->subs */
};

struct conn_subs {
    uint16_t n, cap;
    struct sub_ref refs[];
};

/* The worker the calling thread runs, if any: a publish made on a worker
 * thread delivers to that worker's subscribers at once. */
static __thread struct worker *pubsub_self;

/* ---- names ------------------------------------------------------------- */

static uint64_t pubsub_hash(const struct ringws_server *srv, const char *p, size_t n)
{
    uint64_t h = srv->topic_seed ^ (n * 0x9e3779b97f4a7c15ull);

    /* A seeded multiply-xorshift: clients choose topic names, so bucket
     * placement must not be predictable from the name alone. */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

/* ---- the topic index --------------------------------------------------- */

static struct topic *topic_find(struct worker *w, const char *name, size_t len, uint64_t hash)
{
    struct topic *t;

    if (!w->topics.buckets)
        return NULL;
    for (t = w->topics.buckets[hash & w->topics.mask]; t; t = t->next)
        if (t->hash == hash && t->len == len && !memcmp(t->name, name, len))
            return t;
    return NULL;
}

/* Rehashes every topic into n buckets (a power of two; 0 frees the array,
 * for an index without topics). */
static int topic_index_resize(struct worker *w, uint32_t n)
{
    uint32_t old = w->topics.buckets ? w->topics.mask + 1 : 0;
    struct topic **b = NULL;

    if (n && !(b = calloc(n, sizeof(*b))))
        return -ENOMEM;
    for (uint32_t i = 0; i < old; i++) {
        struct topic *t = w->topics.buckets[i];
        while (t) {
            struct topic *next = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
            t = next;
        }
    }
    STAT_ADD(w, topic_buckets, (uint64_t)n - old);
    free(w->topics.buckets);
    w->topics.buckets = b;
    w->topics.mask = n ? n - 1 : 0;
    return 0;
}

static int topic_index_grow(struct worker *w)
{
    return topic_index_resize(w, w->topics.buckets ? (w->topics.mask + 1) * 2
                                                   : TOPIC_BUCKETS_MIN);
}

/* Gives buckets back as topics go, so that a million topics that came and
 * went leave nothing behind: the index is halved below one topic per 8
 * buckets and freed with its last topic.  A halved index is a quarter full
 * and grows again only above one topic per bucket, so topics coming and
 * going at either edge do not rebuild it back and forth.  Without memory
 * for the smaller array the index stays as it is. */
static void topic_index_shrink(struct worker *w)
{
    uint32_t size = w->topics.mask + 1;

    if (!w->topics.n)
        topic_index_resize(w, 0);
    else if (size > TOPIC_BUCKETS_MIN && w->topics.n < size / 8)
        topic_index_resize(w, size / 2);
}

static struct topic *topic_create(struct worker *w, const char *name, size_t len, uint64_t hash)
{
    const struct ringws_config *cfg = &w->srv->cfg;
    const struct ringws_topic_rule *rule;
    struct topic *t;

    if ((!w->topics.buckets || w->topics.n > w->topics.mask) && topic_index_grow(w) < 0)
        return NULL;
    t = calloc(1, sizeof(*t) + len);
    if (!t)
        return NULL;
    rule = topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, name, len);
    t->hash = hash;
    t->len = (uint16_t)len;
    memcpy(t->name, name, len);
    t->policy = rule ? rule->policy : RINGWS_FANOUT_CLOSE_TRY_AGAIN;
    t->client_publish = rule && rule->client_publish;
    t->next = w->topics.buckets[hash & w->topics.mask];
    w->topics.buckets[hash & w->topics.mask] = t;
    w->topics.n++;
    STAT_ADD(w, topics, 1);
    return t;
}

static void topic_destroy(struct worker *w, struct topic *t)
{
    struct topic **pp = &w->topics.buckets[t->hash & w->topics.mask];

    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    w->topics.n--;
    STAT_ADD(w, topics, -1);
    free(t->subs);
    free(t);
    topic_index_shrink(w);
}

static struct sub_ref *conn_sub_find(struct ringws_conn *c, const struct topic *t)
{
    for (uint16_t i = 0; c->subs && i < c->subs->n; i++)
        if (c->subs->refs[i].t == t)
            return &c->subs->refs[i];
    return NULL;
}

/* Takes the connection out of t's subscriber array (the last one moves into
 * its place) and frees the topic when nobody is left. */
static void topic_remove_sub(struct worker *w, struct topic *t, uint32_t idx)
{
    struct ringws_conn *moved = t->subs[--t->n_subs];

    if (idx != t->n_subs) {
        t->subs[idx] = moved;
        conn_sub_find(moved, t)->idx = idx;
    }
    STAT_ADD(w, subscriptions, -1);
    if (!t->n_subs) {
        topic_destroy(w, t);
    } else if (t->cap > 64 && t->n_subs < t->cap / 4) {
        /* Give memory back after a mass unsubscribe. */
        struct ringws_conn **s = realloc(t->subs, (t->cap / 2) * sizeof(*s));
        if (s) {
            t->subs = s;
            t->cap /= 2;
        }
    }
}

static int pubsub_subscribe(struct ringws_conn *c, const char *name, size_t len)
{
    struct worker *w = c->w;
    uint64_t hash = pubsub_hash(w->srv, name, len);
    struct topic *t = topic_find(w, name, len, hash);
    struct conn_subs *cs = c->subs;

    if (t && conn_sub_find(c, t))
        return 0; /* one subscription, one copy of each message */
    if (cs && cs->n >= w->srv->cfg.max_topics)
        return -E2BIG;
    if (!cs || cs->n == cs->cap) {
        unsigned cap = cs ? cs->cap * 2u : 1; /* most subscribe once */
        struct conn_subs *grown;
        if (cap > w->srv->cfg.max_topics)
            cap = w->srv->cfg.max_topics;
        grown = realloc(cs, sizeof(*cs) + cap * sizeof(cs->refs[0]));
        if (!grown)
            return -ENOMEM;
        cs = grown;
        if (!c->subs)
            cs->n = 0;
        cs->cap = (uint16_t)cap;
        c->subs = cs;
    }
    if (!t && !(t = topic_create(w, name, len, hash)))
        return -ENOMEM;
    if (t->n_subs == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 4;
        struct ringws_conn **s = realloc(t->subs, cap * sizeof(*s));
        if (!s) {
            if (!t->n_subs)
                topic_destroy(w, t);
            return -ENOMEM;
        }
        t->subs = s;
        t->cap = cap;
    }
    cs->refs[cs->n++] = (struct sub_ref){t, t->n_subs};
    t->subs[t->n_subs++] = c;
    STAT_ADD(w, subscriptions, 1);
    return 0;
}

static int pubsub_unsubscribe(struct ringws_conn *c, const char *name, size_t len)
{
    struct worker *w = c->w;
    struct topic *t = topic_find(w, name, len, pubsub_hash(w->srv, name, len));
    struct sub_ref *ref = t ? conn_sub_find(c, t) : NULL;

    if (!ref)
        return -ENOENT;
    topic_remove_sub(w, t, ref->idx);
    *ref = c->subs->refs[--c->subs->n];
    return 0;
}

void pubsub_conn_gone(struct ringws_conn *c)
{
    if (!c->subs)
        return;
    for (uint16_t i = 0; i < c->subs->n; i++)
        topic_remove_sub(c->w, c->subs->refs[i].t, c->subs->refs[i].idx);
    free(c->subs);
    c->subs = NULL;
}

/* Ending a subscription that does not exist is no error for a list. */
static int pubsub_unsubscribe_held(struct ringws_conn *c, const char *name, size_t len)
{
    int r = pubsub_unsubscribe(c, name, len);

    return r == -ENOENT ? 0 : r;
}

/* Applies fn to every topic of a valid list; stops at the first error. */
static int pubsub_list_apply(struct ringws_conn *c, const char *list, size_t len,
                             int (*fn)(struct ringws_conn *c, const char *name, size_t len))
{
    const char *name;
    size_t pos = 0, n;
    int r;

    while ((r = topic_list_next(list, len, &pos, &name, &n)) > 0) {
        r = fn(c, name, n);
        if (r < 0)
            return r;
    }
    return r;
}

int pubsub_subscribe_list(struct ringws_conn *c, const char *list, size_t len)
{
    return pubsub_list_apply(c, list, len, pubsub_subscribe);
}

/* ---- messages ---------------------------------------------------------- */

static void pubsub_msg_unref(struct pub_msg *m)
{
    if (atomic_fetch_sub(&m->refs, 1) == 1)
        free(m);
}

void pubsub_slot_release(struct pub_slot *s)
{
    if (--s->local_refs == 0)
        pubsub_msg_unref(s->msg);
}

static struct pub_msg *pubsub_msg_build(struct ringws_server *srv, const char *topic,
                                        size_t topic_len, const void *data, size_t len,
                                        bool binary)
{
    size_t slots = srv->n_workers * sizeof(struct pub_slot);
    uint8_t hdr[10];
    size_t h = ws_frame_header(hdr, WS_FIN | (binary ? WS_OP_BINARY : WS_OP_TEXT), len);
    struct pub_msg *m = malloc(sizeof(*m) + slots + h + len);
    uint8_t *frame;

    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m) + slots);
    frame = (uint8_t *)m->slots + slots;
    memcpy(frame, hdr, h);
    if (len)
        memcpy(frame + h, data, len);
    m->frame = frame;
    m->frame_len = (uint32_t)(h + len);
    m->topic_len = (uint16_t)topic_len;
    memcpy(m->topic, topic, topic_len);
    m->topic_hash = pubsub_hash(srv, topic, topic_len);
    for (unsigned i = 0; i < srv->n_workers; i++)
        m->slots[i].msg = m;
    return m;
}

static bool pubsub_same_topic(const struct out_chunk *o, const void *arg)
{
    const struct pub_msg *m = arg;
    const struct pub_msg *q = o->shared ? o->shared->msg : NULL;

    return q && q->topic_hash == m->topic_hash && q->topic_len == m->topic_len &&
           !memcmp(q->topic, m->topic, m->topic_len);
}

static bool pubsub_any_shared(const struct out_chunk *o, const void *arg)
{
    (void)arg;
    return o->shared != NULL;
}

/* Queues one share of the message to a subscriber, applying the topic's
 * policy when the subscriber's queue is full.  True if queued. */
static bool pubsub_queue_to(struct ringws_conn *c, struct pub_slot *s, const struct topic *t)
{
    struct worker *w = c->w;
    size_t cap = w->srv->cfg.max_fanout_queue;
    size_t cost = s->msg->frame_len + OUT_CHUNK_OVERHEAD;

    if (!conn_ws_open(c))
        return false;
    /* An empty queue takes any message: the cap bounds what piles up. */
    if (c->out_bytes && c->out_bytes + cost > cap) {
        if (t->policy == RINGWS_FANOUT_DROP_OLDEST) {
            if (!conn_drop_queued(c, pubsub_same_topic, s->msg, cost, cap)) {
                STAT_ADD(w, fanout_dropped, 1);
                return false;
            }
        } else {
            /* Closed after this batch (callbacks must not run while a
             * topic's subscribers are walked); what it has not been handed
             * yet goes, so that the close frame is next in line. */
            conn_drop_queued(c, pubsub_any_shared, NULL, 1, 0);
            c->flags |= t->policy == RINGWS_FANOUT_CLOSE_POLICY ? CF_SLOW_1008 : CF_SLOW_1013;
            conn_flush_later(c);
            STAT_ADD(w, fanout_closed, 1);
            return false;
        }
    }
    if (conn_queue_shared(c, s) < 0) {
        STAT_ADD(w, fanout_dropped, 1);
        return false;
    }
    return true;
}

/* Queues the message to this worker's subscribers of its topic; returns how
 * many.  The slot keeps one reference of its own (the message cannot go
 * away under the caller) until the caller's pubsub_slot_release. */
static uint64_t pubsub_deliver(struct worker *w, struct pub_slot *s)
{
    struct pub_msg *m = s->msg;
    struct topic *t = topic_find(w, m->topic, m->topic_len, m->topic_hash);
    uint64_t n = 0;

    STAT_ADD(w, publishes, 1);
    s->local_refs = 1;
    for (uint32_t i = 0; t && i < t->n_subs; i++)
        n += pubsub_queue_to(t->subs[i], s, t);
    STAT_ADD(w, fanout_queued, n);
    return n;
}

/* ---- the inboxes ------------------------------------------------------- */

/* What a message holds while it waits in an inbox. */
static size_t pubsub_msg_cost(const struct ringws_server *srv, const struct pub_msg *m)
{
    return sizeof(*m) + srv->n_workers * sizeof(struct pub_slot) + m->frame_len;
}

/* Takes room for m in every inbox it will be posted to (all but self's);
 * if one is full, gives back what it took and counts the refusal there.
 * An empty inbox takes any message: the budget bounds what piles up. */
static int pubsub_inbox_reserve(struct ringws_server *srv, const struct worker *self,
                                const struct pub_msg *m)
{
    size_t cost = pubsub_msg_cost(srv, m), cap = srv->cfg.max_inbox_bytes;
    unsigned i;

    for (i = 0; i < srv->n_workers; i++) {
        struct worker *w = &srv->workers[i];
        size_t held;
        if (w == self)
            continue;
        held = atomic_fetch_add(&w->inbox_bytes, cost);
        if (held && held + cost > cap) {
            atomic_fetch_add_explicit(&w->stats.publishes_refused, 1, memory_order_relaxed);
            break;
        }
    }
    if (i == srv->n_workers)
        return 0;
    for (unsigned j = 0; j <= i; j++) /* the full inbox's share included */
        if (&srv->workers[j] != self)
            atomic_fetch_sub(&srv->workers[j].inbox_bytes, cost);
    return -EAGAIN;
}

/* A worker has taken a message out of its inbox. */
static void pubsub_inbox_release(struct worker *w, const struct pub_msg *m)
{
    atomic_fetch_sub(&w->inbox_bytes, pubsub_msg_cost(w->srv, m));
}

static void pubsub_post(struct worker *w, struct pub_slot *s)
{
    struct pub_slot *head = atomic_load(&w->inbox);

    do {
        s->qnext = head;
    } while (!atomic_compare_exchange_weak(&w->inbox, &head, s));
    /* One eventfd write per drain is enough: the worker clears the flag
     * before it takes the inbox, so a push it misses writes again. */
    if (!atomic_exchange(&w->inbox_woken, true))
        worker_wake(w);
}

static struct pub_slot *pubsub_inbox_take(struct worker *w)
{
    struct pub_slot *s = atomic_exchange(&w->inbox, NULL), *fifo = NULL;

    while (s) { /* newest first: reverse into publish order */
        struct pub_slot *next = s->qnext;
        s->qnext = fifo;
        fifo = s;
        s = next;
    }
    return fifo;
}

/* A worker has delivered its share: the last one tells the origin of an
 * HTTP publish the total. */
static void pubsub_worker_done(struct ringws_server *srv, struct pub_msg *m, uint64_t n)
{
    if (n)
        atomic_fetch_add(&m->recipients, n);
    if (atomic_fetch_sub(&m->pending, 1) == 1 && m->reply_to)
        pubsub_post(&srv->workers[m->origin], &m->slots[m->origin]);
}

static bool pubsub_is_reply(const struct worker *w, const struct pub_slot *s)
{
    return s->msg->reply_to && s->msg->origin == w->id;
}

void pubsub_inbox_drain(struct worker *w)
{
    struct pub_slot *s;

    atomic_store(&w->inbox_woken, false);
    s = pubsub_inbox_take(w);
    while (s) {
        struct pub_slot *next = s->qnext;
        struct pub_msg *m = s->msg;
        if (pubsub_is_reply(w, s)) {
            conn_http_publish_done(m->reply_to, atomic_load(&m->recipients));
            pubsub_msg_unref(m);
        } else {
            pubsub_inbox_release(w, m);
            pubsub_worker_done(w->srv, m, pubsub_deliver(w, s));
            pubsub_slot_release(s);
        }
        s = next;
    }
}

/* ---- publishing -------------------------------------------------------- */

/* Publishes m: delivered at once to the calling worker's subscribers (self,
 * may be NULL) and posted to every other worker.  With a reply connection,
 * returns 1 when the count comes later, else 0 and *recipients. */
static int pubsub_dispatch(struct ringws_server *srv, struct worker *self,
                           struct pub_msg *m, struct ringws_conn *reply_to,
                           uint64_t *recipients)
{
    unsigned n = srv->n_workers;
    unsigned remote = self ? n - 1 : n;
    bool defer = reply_to && remote > 0;

    atomic_init(&m->refs, n + (defer ? 1 : 0));
    atomic_init(&m->pending, remote);
    if (defer) {
        m->reply_to = reply_to;
        m->origin = self->id;
        reply_to->flags |= CF_PUB_WAIT;
    }
    /* Everything the other workers read is written before the first post. */
    for (unsigned i = 0; i < n; i++)
        if (!self || i != self->id)
            pubsub_post(&srv->workers[i], &m->slots[i]);
    if (self) {
        uint64_t local = pubsub_deliver(self, &m->slots[self->id]);
        if (!defer && recipients)
            *recipients = local;
        if (defer && local)
            atomic_fetch_add(&m->recipients, local);
        pubsub_slot_release(&m->slots[self->id]);
    }
    return defer ? 1 : 0;
}

static int pubsub_check(const struct ringws_server *srv, const char *topic, size_t topic_len,
                        const void *data, size_t len, bool binary)
{
    if (!topic_name_valid(topic, topic_len))
        return -EINVAL;
    if (len > srv->cfg.max_message || len > srv->cfg.max_publish || len > UINT32_MAX - 10)
        return -EMSGSIZE;
    if (!binary && !utf8_valid(data, len))
        return -EINVAL;
    return 0;
}

/* Publishing is refused once a stop is requested; the count of publishers
 * under way lets the final drain wait for the last one. */
static bool pubsub_enter(struct ringws_server *srv)
{
    atomic_fetch_add(&srv->publishers, 1);
    if (!atomic_load(&srv->stop_requested))
        return true;
    atomic_fetch_sub(&srv->publishers, 1);
    return false;
}

static int pubsub_publish(struct ringws_server *srv, const char *topic, size_t topic_len,
                          const void *data, size_t len, bool binary,
                          struct ringws_conn *reply_to, uint64_t *recipients)
{
    struct worker *self = pubsub_self && pubsub_self->srv == srv ? pubsub_self : NULL;
    struct pub_msg *m;
    int ret = pubsub_check(srv, topic, topic_len, data, len, binary);

    if (ret < 0)
        return ret;
    if (!pubsub_enter(srv))
        return -ESHUTDOWN;
    m = pubsub_msg_build(srv, topic, topic_len, data, len, binary);
    ret = m ? pubsub_inbox_reserve(srv, self, m) : -ENOMEM;
    if (ret == 0)
        ret = pubsub_dispatch(srv, self, m, reply_to, recipients);
    else
        free(m);
    atomic_fetch_sub(&srv->publishers, 1);
    return ret;
}

int ringws_publish(ringws_server *srv, const char *topic, const void *data, size_t len,
                   unsigned flags)
{
    if (!topic || (flags & ~RINGWS_PUBLISH_BINARY) || (len && !data))
        return -EINVAL;
    return pubsub_publish(srv, topic, strnlen(topic, RINGWS_MAX_TOPIC + 1), data, len,
                          flags & RINGWS_PUBLISH_BINARY, NULL, NULL);
}

int pubsub_publish_http(struct ringws_conn *c, const char *topic, size_t topic_len,
                        const void *data, size_t len, bool binary, uint64_t *recipients)
{
    *recipients = 0;
    return pubsub_publish(c->w->srv, topic, topic_len, data, len, binary, c, recipients);
}

/* ---- the API on connections -------------------------------------------- */

int ringws_subscribe(ringws_conn *c, const char *topic)
{
    size_t len = topic ? strnlen(topic, RINGWS_MAX_TOPIC + 1) : 0;

    if (!topic_name_valid(topic, len))
        return -EINVAL;
    if (!conn_ws_open(c))
        return -EPIPE;
    return pubsub_subscribe(c, topic, len);
}

int ringws_unsubscribe(ringws_conn *c, const char *topic)
{
    size_t len = topic ? strnlen(topic, RINGWS_MAX_TOPIC + 1) : 0;

    if (!topic_name_valid(topic, len))
        return -EINVAL;
    return pubsub_unsubscribe(c, topic, len);
}

/* ---- the subscriber connection's commands ------------------------------ */

static void pubsub_fail(struct ringws_conn *c, uint16_t code, const char *why)
{
    conn_ws_close(c, code, why, strlen(why), true);
}

static void pubsub_cmd_topics(struct ringws_conn *c, const struct pubsub_cmd *cmd)
{
    int r = pubsub_list_apply(c, cmd->arg, cmd->arg_len,
                              cmd->type == PUBSUB_CMD_SUB ? pubsub_subscribe
                                                          : pubsub_unsubscribe_held);

    if (r == -E2BIG)
        pubsub_fail(c, WS_CLOSE_POLICY, "too many topics");
    else if (r == -ENOMEM)
        pubsub_fail(c, WS_CLOSE_INTERNAL, "out of memory");
}

static void pubsub_cmd_publish(struct ringws_conn *c, const struct pubsub_cmd *cmd)
{
    const struct ringws_config *cfg = &c->w->srv->cfg;
    const struct ringws_topic_rule *rule =
        topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, cmd->arg, cmd->arg_len);
    int r;

    if (!rule || !rule->client_publish) {
        pubsub_fail(c, WS_CLOSE_POLICY, "publishing to this topic is not allowed");
        return;
    }
    /* The payload is the tail of a valid text frame after an ASCII space:
     * valid UTF-8 too. */
    r = pubsub_publish(c->w->srv, cmd->arg, cmd->arg_len, cmd->payload, cmd->payload_len,
                       false, NULL, NULL);
    if (r == -ENOMEM)
        pubsub_fail(c, WS_CLOSE_INTERNAL, "out of memory");
    else if (r == -ESHUTDOWN)
        pubsub_fail(c, WS_CLOSE_GOING_AWAY, "server shutting down");
    else if (r == -EMSGSIZE)
        pubsub_fail(c, WS_CLOSE_TOO_BIG, "message too big to publish");
    else if (r == -EAGAIN)
        pubsub_fail(c, WS_CLOSE_TRY_AGAIN, "publish queue full");
}

void pubsub_on_command(struct ringws_conn *c, unsigned opcode, const uint8_t *p, size_t n)
{
    struct pubsub_cmd cmd;
    const char *why = NULL;

    if (opcode != WS_OP_TEXT) {
        pubsub_fail(c, WS_CLOSE_UNSUPPORTED, "commands are text frames");
        return;
    }
    if (pubsub_cmd_parse((const char *)p, n, &cmd, &why) < 0) {
        pubsub_fail(c, WS_CLOSE_POLICY, why);
        return;
    }
    if (cmd.type == PUBSUB_CMD_PUB)
        pubsub_cmd_publish(c, &cmd);
    else
        pubsub_cmd_topics(c, &cmd);
}

/* ---- start and end ----------------------------------------------------- */

void pubsub_thread_enter(struct worker *w)
{
    pubsub_self = w;
}

void pubsub_worker_fini(struct worker *w)
{
    /* Every connection is gone, and with it every topic and the index
     * (topic_index_shrink). */
    pubsub_self = NULL;
}

/* Lets go of what a worker that no longer runs has in its inbox: its share
 * of each message counts as delivered to nobody, and a reply to one of its
 * own HTTP publishes (whose connection is already freed) only drops its
 * message reference.  Returns whether there was anything. */
static bool pubsub_inbox_discard(struct worker *w)
{
    struct pub_slot *s = pubsub_inbox_take(w);
    bool any = s != NULL;

    while (s) {
        struct pub_slot *next = s->qnext;
        struct pub_msg *m = s->msg;
        if (!pubsub_is_reply(w, s)) {
            pubsub_inbox_release(w, m);
            pubsub_worker_done(w->srv, m, 0); /* may post a reply */
        }
        pubsub_msg_unref(m); /* the slot's or the reply's reference */
        s = next;
    }
    return any;
}

/* The publishers under way when the stop was requested post what they
 * must; later ones are refused (pubsub_enter).  Publishes waiting on other
 * workers for this one's count get their answers now, not when those
 * workers give up at their close timeout. */
void pubsub_worker_abandon(struct worker *w)
{
    while (atomic_load(&w->srv->publishers))
        sched_yield();
    pubsub_inbox_discard(w);
}

/* After the workers have stopped: messages still in inboxes are let go. */
void pubsub_server_drain(struct ringws_server *srv)
{
    bool any = true;

    while (atomic_load(&srv->publishers))
        sched_yield();
    while (any) {
        any = false;
        for (unsigned i = 0; i < srv->n_workers; i++)
            any |= pubsub_inbox_discard(&srv->workers[i]);
    }
}

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
#undef STAT_GET
    }
}
