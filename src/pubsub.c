/* pubsub.c - publish and subscribe: subscriptions per connection, messages
 * built once and shared by every recipient, delivery on each worker,
 * cross-worker inboxes with their byte budget, slow-subscriber policies.
 *
 * Why it exists: pushing one message to very many clients is what ringws is
 * for.  A publish builds its frame once; every worker that owns subscribers
 * takes one share of it (a slot) and queues the same bytes to each of its
 * subscribers, so the cost per recipient is a small chunk and a send, never
 * a copy.  Workers never share an index and never take a lock: messages
 * reach other workers through a lock-free inbox (a Treiber stack drained
 * whole) and an eventfd read armed in each ring.  Each inbox holds at most
 * max_inbox_bytes: a publish that any inbox cannot take goes nowhere.  See
 * docs/PUBSUB.md.
 *
 * Compression (permessage-deflate, stateless): while some subscriber
 * negotiated it, a publish compresses its payload once, before it is
 * sequenced; the compressed frame (and its ringws.v1 twin, made from it
 * without compressing again) is shared like the plain one, by the
 * subscribers with compression, and lives as long as the message.  A
 * subscriber whose server side takes context over (conn_takeover) cannot
 * share it: its deliveries are compressed through its own stream, one
 * compression per delivery (docs/ARCHITECTURE.md, "Compression"), and
 * those too short to compress take the shared plain frame.
 *
 * Order: every publish takes its topic's next offset from the sequencer
 * (pubsub_seq.c) and posts it to the inboxes under the topic's lock there,
 * so that every inbox holds a topic's messages in offset order; a worker that
 * publishes or subscribes first delivers what it took from its inbox
 * (w->pending).  See docs/ARCHITECTURE.md, "Sequences".
 *
 * Below it: each worker's topic index (topic_index.c, pure).  Of the
 * connection layer it uses only the output queue: conn_ws_open (may the
 * connection be sent to), conn_queue_shared, conn_drop_queued, and, for a
 * slow subscriber, a CF_SLOW_* flag with conn_flush_later.  Above it: the
 * subscriber commands (conn_ws_pubsub.c), POST /publish (conn_http.c, told
 * the count through a callback) and the API (ringws_publish,
 * ringws_subscribe, ringws_unsubscribe). */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "deflate_stream.h"
#include "engine.h"
#include "internal.h"
#include "metrics.h"
#include "pubsub_proto.h"
#include "topic_index.h"
#include "utf8.h"

/* The worker the calling thread runs, if any: a publish made on a worker
 * thread delivers to that worker's subscribers at once. */
static __thread struct worker *pubsub_self;

static void pubsub_inbox_take(struct worker *w);
static void pubsub_inbox_run_nested(struct worker *w);
static const struct pub_frame *pubsub_frame_for(struct ringws_server *srv, struct pub_msg *m,
                                                uint32_t flags);
static uint32_t pubsub_frame_flags(const struct ringws_conn *c);
static int pubsub_own_pieces(struct ringws_conn *c, struct pub_msg *m, struct iovec iov[2],
                             unsigned *op);

/* ---- subscriptions ----------------------------------------------------- */

/* The index's size, as /metrics shows it. */
static void pubsub_count_topics(struct worker *w)
{
    atomic_store_explicit(&w->stats.topics, w->topics.n, memory_order_relaxed);
    atomic_store_explicit(&w->stats.topic_buckets, topic_index_buckets(&w->topics),
                          memory_order_relaxed);
}

static struct sub_ref *conn_sub_find(struct ringws_conn *c, const struct topic *t)
{
    for (uint16_t i = 0; c->cold && i < c->cold->n; i++)
        if (c->cold->refs[i].t == t)
            return &c->cold->refs[i];
    return NULL;
}

/* Takes the connection at idx out of t's subscribers; the one that moves
 * into its place gets its position updated. */
/* The worker no longer holds a server topic (the in-process engine's
 * leave). */
static void pubsub_seq_drop(struct worker *w, struct seq_topic *st)
{
    seq_lock(w->srv);
    seq_topic_drop(w->srv, st);
    seq_unlock(w->srv);
}

static void pubsub_remove_sub(struct worker *w, struct topic *t, uint32_t idx)
{
    struct seq_topic *st = t->n_subs == 1 ? t->data : NULL; /* t goes with it */
    const struct ringws_conn *gone = t->subs[idx];
    struct ringws_conn *moved;

    if (pubsub_frame_flags(gone) & CF_DEFLATE)
        atomic_fetch_sub_explicit(&w->srv->deflate_subs, 1, memory_order_relaxed);
    moved = topic_index_remove_sub(&w->topics, t, idx);

    if (moved)
        conn_sub_find(moved, t)->idx = idx;
    if (st)
        w->srv->engine->leave(w, st);
    STAT_ADD(w, subscriptions, -1);
    pubsub_count_topics(w);
}

/* A topic's policy is its first matching rule's, fixed when it is made;
 * the server's topic (held by the caller) stays held while it exists. */
static struct topic *pubsub_topic_create(struct worker *w, const char *name, size_t len,
                                         uint64_t hash, struct seq_topic *st)
{
    const struct ringws_config *cfg = &w->srv->cfg;
    const struct ringws_topic_rule *rule =
        topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, name, len);
    struct topic *t = topic_index_create(&w->topics, name, len, hash);

    if (t) {
        t->tag = rule ? rule->policy : RINGWS_FANOUT_CLOSE_TRY_AGAIN;
        t->data = st;
    }
    return t;
}

/* Holding the sequencer alone (seq_lock): the topic's view, and for a
 * position the held messages after it, referenced for the replay. */
static int pubsub_start_read(struct ringws_server *srv, struct seq_topic *st,
                             struct sub_start *ss)
{
    uint64_t n;
    size_t need = 0;

    seq_topic_view(srv, st, &ss->view);
    if (!ss->pos) {
        ss->outcome = START_SUBSCRIBED;
        return 0;
    }
    if (!seq_topic_serves(st, ss->pos->epoch, ss->pos->offset)) {
        ss->outcome = START_GAP;
        return 0;
    }
    ss->outcome = START_RECOVERED;
    n = ss->view.last - ss->pos->offset;
    /* What cannot fit the subscriber's queue is a gap, found before any
     * work: the lock is held, and a client chooses its position. */
    if (n > ss->room / OUT_CHUNK_OVERHEAD) {
        ss->outcome = START_GAP;
        return 0;
    }
    if (!n)
        return 0;
    ss->replay = malloc(n * sizeof(*ss->replay));
    if (!ss->replay)
        return -ENOMEM;
    for (uint64_t i = 0; i < n && ss->outcome == START_RECOVERED; i++) {
        struct pub_msg *m = seq_topic_message(st, ss->pos->offset + 1 + i);
        ss->replay[ss->n_replay++] = m;
        need += m ? m->raw.len + OUT_CHUNK_OVERHEAD : 0;
        if (need > ss->room)
            ss->outcome = START_GAP; /* the exact check comes later */
    }
    return 0;
}

/* Joins the sequencer for a subscription on this worker: takes the server's
 * topic (held for a worker topic made now: !t), reads where it stands, and
 * delivers what this worker's inbox holds of offsets up to view.last.
 *
 * Why no message is missed or doubled at the seam: a publish takes its
 * offset and is posted to every inbox while it holds the sequencer's table
 * (shared).  Holding the table alone, view.last is the topic's last offset
 * and the inbox is taken:
 * every message up to view.last is then either delivered by this worker
 * already (published here, or drained) or in what was taken, which
 * pubsub_inbox_run delivers now, before the subscriber joins the topic's
 * subscribers; every message after view.last is posted after the lock
 * goes, so it reaches the inbox later and finds the subscriber there.  The
 * subscriber thus gets the replay (its offsets up to view.last), then live
 * messages from view.last + 1, each once. */
static int pubsub_start_sync(struct worker *w, const char *name, size_t len,
                             struct seq_topic *held, struct seq_topic **stp, struct sub_start *ss)
{
    struct ringws_server *srv = w->srv;
    struct seq_topic *st;
    int r = 0;

    seq_lock(srv);
    st = held ? held : seq_topic_get(srv, name, len);
    if (!st) {
        seq_unlock(srv);
        return -ENOMEM;
    }
    if (ss->answer)
        r = pubsub_start_read(srv, st, ss);
    if (r == 0 && !held)
        seq_topic_hold(srv, st);
    seq_topic_settle(srv, st);
    pubsub_inbox_take(w);
    seq_unlock(srv);
    pubsub_inbox_run_nested(w);
    *stp = st;
    return r;
}

static void pubsub_start_release(struct sub_start *ss)
{
    for (uint64_t i = 0; i < ss->n_replay; i++)
        if (ss->replay[i])
            pubsub_msg_unref(ss->replay[i]);
    free(ss->replay);
    ss->replay = NULL;
    ss->n_replay = 0;
}

/* Queues one more share of a message this worker has delivered already
 * (its slot's own reference may be gone: one is taken again for it). */
static int pubsub_queue_again(struct ringws_conn *c, struct pub_msg *m)
{
    struct worker *w = conn_worker(c);
    struct pub_slot *s = &m->slots[w->id];
    const struct pub_frame *f;
    bool fresh = s->local_refs == 0;
    struct iovec iov[2];
    unsigned op;
    int r = pubsub_own_pieces(c, m, iov, &op);

    if (r < 0)
        return r;
    if (r > 0) /* compressed for it alone: no share of the slot */
        return conn_ws_queue_takeover(c, op, iov, (unsigned)r);
    if (!(f = pubsub_frame_for(w->srv, m, pubsub_frame_flags(c))))
        return -ENOMEM;
    if (fresh) {
        atomic_fetch_add(&m->refs, 1);
        s->local_refs = 1;
    }
    r = conn_queue_shared(w, c, s, f);
    if (r == 0)
        STAT_ADD(w, send_queue_bytes, f->len + OUT_CHUNK_OVERHEAD);
    if (fresh)
        pubsub_slot_release(s);
    return r;
}

/* A replay must fit the subscriber's queue (max_fanout_queue) as a whole:
 * one that does not is answered as a gap (the client fetches the rest from
 * its backend or GET /history) rather than cut by the slow-subscriber
 * policy halfway. */
static bool pubsub_replay_fits(struct ringws_conn *c, const struct sub_start *ss)
{
    struct worker *w = conn_worker(c);
    size_t room = w->srv->cfg.max_fanout_queue, need = 0;

    for (uint64_t i = 0; i < ss->n_replay; i++) {
        const struct pub_frame *f =
            ss->replay[i]
                ? pubsub_frame_for(w->srv, ss->replay[i], pubsub_frame_flags(c))
                : NULL;
        if (!f)
            return false;
        need += f->len + OUT_CHUNK_OVERHEAD;
        if (c->out_bytes + need > room)
            return false;
    }
    return true;
}

/* The answer, then the replay: both before the subscriber joins. */
static int pubsub_start_answer(struct ringws_conn *c, const char *name, size_t len,
                               struct sub_start *ss)
{
    const struct seq_view *v = &ss->view;
    int n = (int)len, r;

    if (ss->outcome == START_RECOVERED && !pubsub_replay_fits(c, ss))
        ss->outcome = START_GAP;
    if (ss->pos)
        seq_count_resume(conn_worker(c)->srv,
                         ss->outcome == START_RECOVERED ? SEQ_RECOVERED : SEQ_GAP);
    if (ss->outcome == START_SUBSCRIBED)
        return conn_ws_pubsub_notice(c, "subscribed %.*s %s %" PRIu64, n, name, v->epoch,
                                     v->last);
    if (ss->outcome == START_GAP)
        return conn_ws_pubsub_notice(c, "gap %.*s %s %" PRIu64 " %" PRIu64, n, name,
                                     v->epoch, v->oldest, v->last);
    r = conn_ws_pubsub_notice(c, "recovered %.*s %s %" PRIu64 " %" PRIu64, n, name, v->epoch,
                              ss->pos->offset + 1, v->last);
    for (uint64_t i = 0; r == 0 && i < ss->n_replay; i++)
        r = pubsub_queue_again(c, ss->replay[i]);
    return r;
}

static int pubsub_subscribe_at(struct ringws_conn *c, const char *name, size_t len,
                               struct sub_start *ss)
{
    struct worker *w = conn_worker(c);
    uint64_t hash = topic_index_hash(&w->topics, name, len);
    struct topic *t = topic_index_find(&w->topics, name, len, hash);
    struct conn_cold *cs = c->cold;
    struct seq_topic *st = NULL;
    bool held = t && conn_sub_find(c, t), fresh;
    int idx, r;

    if (!held && cs && cs->n >= w->srv->cfg.max_topics)
        return -E2BIG;
    if (held && ss->answer) {
        /* One subscription, one copy of each message: what it has queued
         * already is not replayed; it is told where it stands. */
        ss->pos = NULL;
        r = w->srv->engine->join(w, name, len, t->data, &st, ss);
        return r < 0 ? r : pubsub_start_answer(c, name, len, ss);
    }
    if (held)
        return 0;
    if (!cs || cs->n == cs->cap) {
        unsigned cap = cs && cs->cap ? cs->cap * 2u : 1; /* most subscribe once */
        struct conn_cold *grown;
        if (cap > w->srv->cfg.max_topics)
            cap = w->srv->cfg.max_topics;
        grown = realloc(cs, sizeof(*cs) + cap * sizeof(cs->refs[0]));
        if (!grown)
            return -ENOMEM;
        cs = grown;
        if (!c->cold)
            *cs = (struct conn_cold){0};
        cs->cap = (uint16_t)cap;
        c->cold = cs;
    }
    /* A raw subscriber of a topic this worker holds already needs nothing
     * of the sequencer: it is not told where it starts. */
    if (!t || ss->answer) {
        r = w->srv->engine->join(w, name, len, t ? t->data : NULL, &st, ss);
        if (r < 0)
            return r;
        if (ss->answer)
            r = pubsub_start_answer(c, name, len, ss);
        if (r == 0 && !t && !(t = pubsub_topic_create(w, name, len, hash, st)))
            r = -ENOMEM;
        if (r < 0) {
            if (!t) /* held for a worker topic not made */
                w->srv->engine->leave(w, st);
            return r;
        }
    }
    st = t->data;
    fresh = t->n_subs == 0;
    idx = topic_index_add_sub(&w->topics, t, c); /* removes a fresh t when it fails */
    pubsub_count_topics(w);
    if (idx < 0) {
        if (fresh)
            w->srv->engine->leave(w, st);
        return idx;
    }
    cs->refs[cs->n++] = (struct sub_ref){t, (uint32_t)idx};
    STAT_ADD(w, subscriptions, 1);
    if (pubsub_frame_flags(c) & CF_DEFLATE)
        atomic_fetch_add_explicit(&w->srv->deflate_subs, 1, memory_order_relaxed);
    return 0;
}

static int pubsub_subscribe(struct ringws_conn *c, const char *name, size_t len)
{
    struct sub_start ss = {0};

    return pubsub_subscribe_at(c, name, len, &ss);
}

static int pubsub_unsubscribe(struct ringws_conn *c, const char *name, size_t len)
{
    struct worker *w = conn_worker(c);
    struct topic *t = topic_index_find(&w->topics, name, len,
                                       topic_index_hash(&w->topics, name, len));
    struct sub_ref *ref = t ? conn_sub_find(c, t) : NULL;

    if (!ref)
        return -ENOENT;
    pubsub_remove_sub(w, t, ref->idx);
    *ref = c->cold->refs[--c->cold->n];
    return 0;
}

/* Ends every subscription; the cold part goes too unless it holds more. */
void pubsub_conn_gone(struct ringws_conn *c)
{
    if (!c->cold)
        return;
    conn_ws_pubsub_wait_free(c);
    for (uint16_t i = 0; i < c->cold->n; i++)
        pubsub_remove_sub(conn_worker(c), c->cold->refs[i].t, c->cold->refs[i].idx);
    c->cold->n = 0;
    conn_cold_trim(c);
}

/* Ending a subscription that does not exist is no error for a list. */
static int pubsub_unsubscribe_held(struct ringws_conn *c, const char *name, size_t len)
{
    int r = pubsub_unsubscribe(c, name, len);

    if (r == -ENOENT)
        r = 0;
    if (r == 0 && (c->flags & CF_ENVELOPE))
        r = conn_ws_pubsub_notice(c, "unsubscribed %.*s", (int)len, name);
    return r;
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

int pubsub_subscribe_list(struct ringws_conn *c, const char *list, size_t len,
                          const char *positions, size_t positions_len)
{
    const char *name;
    size_t pos = 0, n;
    int r;

    while ((r = topic_list_next(list, len, &pos, &name, &n)) > 0) {
        struct topic_pos tp;
        size_t cap = conn_worker(c)->srv->cfg.max_fanout_queue;
        struct sub_start ss = {.answer = (c->flags & CF_ENVELOPE) != 0,
                               .room = c->out_bytes < cap ? cap - c->out_bytes : 0};
        if (positions && topic_pos_find(positions, positions_len, name, n, &tp))
            ss.pos = &tp;
        r = pubsub_subscribe_at(c, name, n, &ss);
        pubsub_start_release(&ss);
        if (r < 0)
            return r;
    }
    return r;
}

int pubsub_unsubscribe_list(struct ringws_conn *c, const char *list, size_t len)
{
    return pubsub_list_apply(c, list, len, pubsub_unsubscribe_held);
}

/* ---- messages ---------------------------------------------------------- */

void pubsub_msg_unref(struct pub_msg *m)
{
    if (atomic_fetch_sub(&m->refs, 1) == 1) {
        free(atomic_load_explicit(&m->env, memory_order_relaxed));
        free(atomic_load_explicit(&m->zenv, memory_order_relaxed));
        free(m);
    }
}

/* Built by the first worker that needs it; a worker that loses the race to
 * publish its copy frees it: the frame is still built once per message in
 * the common case and never copied per subscriber.  Only its head is built:
 * the payload is the raw frame's, or for the compressed one (zipped) the
 * compressed frame's (struct pub_env). */
static const struct pub_env *pubsub_env_make(struct ringws_server *srv, struct pub_msg *m,
                                             bool zipped)
{
    _Atomic(struct pub_env *) *slot = zipped ? &m->zenv : &m->env;
    struct pub_env *env = atomic_load_explicit(slot, memory_order_acquire), *mine;
    const struct pub_frame *src = zipped ? &m->z : &m->raw;
    uint8_t head[ENVELOPE_HEAD_MAX];
    size_t payload = src->len - (zipped ? m->z_hdr : m->frame_hdr), h;

    if (env)
        return env;
    h = envelope_head(head, sizeof(head), m->raw.bytes[0] & 0x0f, zipped, pub_msg_topic(m),
                      m->topic_len, m->epoch, m->offset, payload);
    if (!h || !(mine = malloc(sizeof(*mine) + h)))
        return NULL;
    memcpy(mine->data, head, h);
    mine->f = (struct pub_frame){mine->data, (uint32_t)(h + payload)};
    if (atomic_compare_exchange_strong_explicit(slot, &env, mine, memory_order_acq_rel,
                                                memory_order_acquire)) {
        seq_message_charge(srv, m, sizeof(*mine) + h);
        return mine;
    }
    free(mine);
    return env;
}

const struct pub_env *pubsub_env(struct ringws_server *srv, struct pub_msg *m)
{
    return pubsub_env_make(srv, m, false);
}

/* The frame a subscriber is sent: raw or ringws.v1 (CF_ENVELOPE), the
 * compressed one when it negotiated permessage-deflate and the publish was
 * compressed; NULL without memory. */
static const struct pub_frame *pubsub_frame_for(struct ringws_server *srv, struct pub_msg *m,
                                                uint32_t flags)
{
    bool zipped = (flags & CF_DEFLATE) && m->z.len;
    const struct pub_env *env;

    if (!(flags & CF_ENVELOPE))
        return zipped ? &m->z : &m->raw;
    env = pubsub_env_make(srv, m, zipped);
    return env ? &env->f : NULL;
}

/* The flags that choose a subscriber's shared frame: one whose server side
 * takes context over shares only the plain frames. */
static uint32_t pubsub_frame_flags(const struct ringws_conn *c)
{
    const struct deflate_takeover *t = conn_takeover(c);

    return t && deflate_takeover_tx_bits(t) ? c->flags & ~(uint32_t)CF_DEFLATE : c->flags;
}

/* For a subscriber whose server side takes context over, the plain
 * payload of its frame of m (the raw payload; with ringws.v1 the line
 * before it too) as pieces for its stream, and the opcode: how many; 0
 * when it takes a shared frame (no stream of its own, or a message too
 * short to compress); -ENOMEM. */
static int pubsub_own_pieces(struct ringws_conn *c, struct pub_msg *m, struct iovec iov[2],
                             unsigned *op)
{
    const struct deflate_takeover *t = conn_takeover(c);
    size_t payload = m->raw.len - m->frame_hdr, head, h;
    const struct pub_env *env;

    if (!t || !deflate_takeover_tx_bits(t) || payload < DEFLATE_TAKEOVER_MIN_SIZE)
        return 0;
    *op = m->raw.bytes[0] & 0x0f;
    iov[1] = (struct iovec){(void *)(m->raw.bytes + m->frame_hdr), payload};
    if (!(c->flags & CF_ENVELOPE)) {
        iov[0] = iov[1];
        return 1;
    }
    if (!(env = pubsub_env_make(conn_worker(c)->srv, m, false)))
        return -ENOMEM;
    head = env->f.len - payload;
    h = ws_frame_header_len(env->f.bytes);
    iov[0] = (struct iovec){(void *)(env->f.bytes + h), head - h};
    return 2;
}

void pubsub_slot_release(struct pub_slot *s)
{
    if (--s->local_refs == 0)
        pubsub_msg_unref(s->msg);
}

/* The payload compressed (zlen bytes at *z), when some subscriber
 * negotiated compression and it pays; zlen 0: the message goes plain to all. */
static int pubsub_msg_compress(struct ringws_server *srv, const void *data, size_t len,
                               const uint8_t **z, size_t *zlen)
{
    ssize_t n;

    *zlen = 0;
    if (len < DEFLATE_MIN_SIZE ||
        !atomic_load_explicit(&srv->deflate_subs, memory_order_relaxed))
        return 0;
    if ((n = deflate_compress(data, len, DEFLATE_SMALL, z)) < 0)
        return (int)n;
    *zlen = (size_t)n;
    return 0;
}

static struct pub_msg *pubsub_msg_build(struct ringws_server *srv, const char *topic,
                                        size_t topic_len, const void *data, size_t len,
                                        bool binary, const uint8_t *z, size_t zlen)
{
    size_t slots = srv->n_workers * sizeof(struct pub_slot);
    unsigned op = binary ? WS_OP_BINARY : WS_OP_TEXT;
    uint8_t hdr[WS_MAX_SERVER_HEADER], zhdr[WS_MAX_SERVER_HEADER];
    size_t h = ws_frame_header(hdr, WS_FIN | op, len);
    size_t zh = zlen ? ws_frame_header(zhdr, WS_FIN | WS_RSV1 | op, zlen) : 0;
    /* One allocation: the message, its slots, the raw frame, the topic
     * (its own length, not RINGWS_MAX_TOPIC: a held message costs what it
     * says), the compressed frame. */
    struct pub_msg *m = malloc(sizeof(*m) + slots + h + len + topic_len + zh + zlen);
    uint8_t *frame;

    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m) + slots);
    frame = (uint8_t *)m->slots + slots;
    memcpy(frame, hdr, h);
    if (len)
        memcpy(frame + h, data, len);
    m->raw.bytes = frame;
    m->raw.len = (uint32_t)(h + len);
    m->frame_hdr = (uint8_t)h;
    m->hist.ns = timer_now_ns();
    m->topic_len = (uint16_t)topic_len;
    memcpy((char *)frame + h + len, topic, topic_len);
    if (zlen) {
        uint8_t *zf = (uint8_t *)frame + h + len + topic_len;
        memcpy(zf, zhdr, zh);
        memcpy(zf + zh, z, zlen);
        m->z = (struct pub_frame){zf, (uint32_t)(zh + zlen)};
        m->z_hdr = (uint8_t)zh;
    }
    for (unsigned i = 0; i < srv->n_workers; i++)
        m->slots[i].msg = m;
    return m;
}

/* The message of a publish, compressed first (outside any lock, once for
 * every subscriber on every worker) when compress says and it pays; NULL
 * without memory. */
static struct pub_msg *pubsub_msg_make(struct ringws_server *srv, struct worker *self,
                                       const char *topic, size_t topic_len, const void *data,
                                       size_t len, bool binary, bool compress)
{
    const uint8_t *z = NULL;
    size_t zlen = 0;
    struct pub_msg *m;

    if (compress && pubsub_msg_compress(srv, data, len, &z, &zlen) < 0)
        return NULL;
    m = pubsub_msg_build(srv, topic, topic_len, data, len, binary, z, zlen);
    if (m && zlen) /* any thread: an atomic add, on its worker's or the first */
        atomic_fetch_add_explicit(&(self ? self : &srv->workers[0])->stats.deflate_compressed,
                                  1, memory_order_relaxed);
    return m;
}

static bool pubsub_same_topic(const struct out_chunk *o, const void *arg)
{
    const struct pub_msg *m = arg;
    const struct pub_msg *q = o->shared ? o->shared->msg : NULL;

    return q && q->topic_len == m->topic_len &&
           !memcmp(pub_msg_topic(q), pub_msg_topic(m), m->topic_len);
}

/* Any published message; not the shares of the embedded pages (the
 * worker's static_slot holds no message), which belong to HTTP answers. */
static bool pubsub_any_shared(const struct out_chunk *o, const void *arg)
{
    (void)arg;
    return o->shared && o->shared->msg;
}

/* Whether a subscriber's queue takes cost more bytes of the message s
 * holds, applying the topic's policy when it is full (dropping older
 * messages of the topic, or closing it after this batch).  Inlined: the
 * plain delivery's loop pays no call for it. */
static inline __attribute__((always_inline)) bool
pubsub_room_for(struct worker *w, struct ringws_conn *c, struct pub_slot *s,
                const struct topic *t, size_t cost)
{
    size_t cap = w->srv->cfg.max_fanout_queue;

    if (!conn_ws_open(c))
        return false;
    /* An empty queue takes any message: the cap bounds what piles up. */
    if (c->out_bytes && c->out_bytes + cost > cap) {
        if (t->tag == RINGWS_FANOUT_DROP_OLDEST) {
            if (!conn_drop_queued(c, pubsub_same_topic, s->msg, cost, cap)) {
                STAT_ADD(w, fanout_dropped, 1);
                return false;
            }
        } else {
            /* Closed after this batch (callbacks must not run while a
             * topic's subscribers are walked); what it has not been handed
             * yet goes, so that the close frame is next in line. */
            conn_drop_queued(c, pubsub_any_shared, NULL, 1, 0);
            c->flags |= t->tag == RINGWS_FANOUT_CLOSE_POLICY ? CF_SLOW_1008 : CF_SLOW_1013;
            conn_flush_later(c);
            STAT_ADD(w, fanout_closed, 1);
            return false;
        }
    }
    return true;
}

/* Queues one share of the message (f: its raw frame, or its ringws.v1
 * frame) to a subscriber, applying the topic's policy when
 * the subscriber's queue is full.  True if queued. */
static inline bool pubsub_queue_to(struct worker *w, struct ringws_conn *c, struct pub_slot *s,
                                   const struct topic *t, const struct pub_frame *f)
{
    if (!pubsub_room_for(w, c, s, t, f->len + OUT_CHUNK_OVERHEAD))
        return false;
    if (conn_queue_shared(w, c, s, f) < 0) {
        STAT_ADD(w, fanout_dropped, 1);
        return false;
    }
    return true;
}

/* The same for a subscriber that compresses through its own stream: room
 * is made for the plain frame (what it compresses from), then it is
 * compressed and queued as its own chunk.  -1: not such a delivery (the
 * caller queues a shared frame); else whether it was queued. */
__attribute__((noinline))
static int pubsub_queue_own(struct ringws_conn *c, struct pub_slot *s, const struct topic *t)
{
    struct worker *w = conn_worker(c);
    struct iovec iov[2];
    unsigned op;
    int n = pubsub_own_pieces(c, s->msg, iov, &op);

    if (n == 0)
        return -1;
    if (n > 0 &&
        !pubsub_room_for(w, c, s, t,
                         iov[0].iov_len + (n > 1 ? iov[1].iov_len : 0) + WS_MAX_SERVER_HEADER +
                             OUT_CHUNK_OVERHEAD))
        return 0;
    if (n < 0 || conn_ws_queue_takeover(c, op, iov, (unsigned)n) < 0) {
        STAT_ADD(w, fanout_dropped, 1);
        return 0;
    }
    return 1;
}

/* Queues the message to this worker's subscribers of its topic; returns how
 * many.  The slot keeps one reference of its own (the message cannot go
 * away under the caller) until the caller's pubsub_slot_release.  Each
 * worker hashes the topic with its own index's key: one short hash per
 * worker and publish.  A worker with subscribers of the topic times its
 * share with one clock read: *clock_ns is when the share started (when the
 * previous one ended), and becomes when this one ended. */
static uint64_t pubsub_deliver(struct worker *w, struct pub_slot *s, uint64_t *clock_ns)
{
    struct pub_msg *m = s->msg;
    const char *name = pub_msg_topic(m);
    struct topic *t = topic_index_find(&w->topics, name, m->topic_len,
                                       topic_index_hash(&w->topics, name, m->topic_len));
    uint64_t n = 0, n_zipped = 0, n_own = 0, end;
    int64_t other_bytes = 0; /* what frames other than raw queued beyond it */

    STAT_ADD(w, publishes, 1);
    s->local_refs = 1;
    if (!t)
        return 0;
    for (uint32_t i = 0; i < t->n_subs; i++) {
        struct ringws_conn *c = t->subs[i];
        const struct pub_frame *f = &m->raw;
        bool queued;

        if (c->flags & (CF_ENVELOPE | CF_DEFLATE)) {
            int own = pubsub_queue_own(c, s, t);

            if (own >= 0) { /* its own chunk, counted where it was queued */
                n_own += (unsigned)own;
                continue;
            }
            if (!(f = pubsub_frame_for(w->srv, m, pubsub_frame_flags(c)))) {
                STAT_ADD(w, fanout_dropped, 1);
                continue;
            }
        }
        queued = pubsub_queue_to(w, c, s, t, f);
        n += queued;
        if (f != &m->raw && queued) {
            other_bytes += (int64_t)f->len - (int64_t)m->raw.len;
            n_zipped += (f->bytes[0] & WS_RSV1) != 0;
        }
    }
    STAT_ADD(w, send_queue_bytes,
             n * (m->raw.len + OUT_CHUNK_OVERHEAD) + (uint64_t)other_bytes);
    STAT_ADD(w, deflate_sent, n_zipped);
    STAT_ADD(w, fanout_queued, n + n_own);
    end = timer_now_ns();
    metrics_observe(&w->stats.publish_latency, end - m->hist.ns);
    metrics_observe(&w->stats.fanout_duration, end - *clock_ns);
    *clock_ns = end;
    return n + n_own;
}

/* ---- the inboxes ------------------------------------------------------- */

/* Gives back the room m took in the first n inboxes. */
static void pubsub_inbox_unreserve(struct ringws_server *srv, const struct worker *self,
                                   const struct pub_msg *m, unsigned n)
{
    size_t cost = pubsub_msg_cost(srv, m);

    for (unsigned j = 0; j < n; j++)
        if (&srv->workers[j] != self)
            atomic_fetch_sub(&srv->workers[j].inbox_bytes, cost);
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
    pubsub_inbox_unreserve(srv, self, m, i + 1); /* the full inbox's share included */
    return -EAGAIN;
}

/* A worker has taken a message out of its inbox. */
static void pubsub_inbox_release(struct worker *w, const struct pub_msg *m)
{
    atomic_fetch_sub(&w->inbox_bytes, pubsub_msg_cost(w->srv, m));
}

/* Pushes s onto w's inbox; true when the worker must be woken (after the
 * sequencer's locks go: no system call under it). */
static bool pubsub_push(struct worker *w, struct pub_slot *s)
{
    struct pub_slot *head = atomic_load(&w->inbox);

    do {
        s->qnext = head;
    } while (!atomic_compare_exchange_weak(&w->inbox, &head, s));
    /* One eventfd write per drain is enough: the worker clears the flag
     * before it takes the inbox, so a push it misses writes again. */
    return !atomic_exchange(&w->inbox_woken, true);
}

static void pubsub_post(struct worker *w, struct pub_slot *s)
{
    if (pubsub_push(w, s))
        worker_wake(w);
}

/* Moves what the inbox holds to the end of the worker's pending list, in
 * publish order. */
static void pubsub_inbox_take(struct worker *w)
{
    struct pub_slot *s = atomic_exchange(&w->inbox, NULL), *fifo = NULL, *last = s;

    if (!s)
        return;
    while (s) { /* newest first: reverse into publish order */
        struct pub_slot *next = s->qnext;
        s->qnext = fifo;
        fifo = s;
        s = next;
    }
    if (w->pending)
        w->pending_tail->qnext = fifo;
    else
        w->pending = fifo;
    w->pending_tail = last;
}

/* Takes the oldest pending slot off the list. */
static struct pub_slot *pubsub_pending_pop(struct worker *w)
{
    struct pub_slot *s = w->pending;

    if (s)
        w->pending = s->qnext;
    return s;
}

/* A worker has delivered its share: the last one tells the origin of a
 * counted publish the total. */
static void pubsub_worker_done(struct ringws_server *srv, struct pub_msg *m, uint64_t n)
{
    struct pub_count *k = m->count;

    if (!k)
        return;
    if (n)
        atomic_fetch_add(&k->recipients, n);
    if (atomic_fetch_sub(&k->pending, 1) == 1)
        pubsub_post(&srv->workers[k->origin], &m->slots[k->origin]);
}

/* The origin's own slot is posted to its inbox only as the reply (it
 * delivers its own share at once); the count lives until it is told. */
static bool pubsub_is_reply(const struct worker *w, const struct pub_slot *s)
{
    return s->msg->count && s->msg->count->origin == w->id;
}

/* The reply was told (or its publisher is gone): its count goes. */
static void pubsub_count_free(struct pub_msg *m)
{
    free(m->count);
    m->count = NULL;
}

/* Delivers the pending list.  The list lives in the worker, not on this
 * stack: a reply's callback may publish on this worker, which takes newer
 * messages from the inbox behind the older ones still pending here and
 * delivers them all, in order, before its own.  Replies are only set
 * aside: this runs inside a publish or a subscription too, where a reply's
 * callback must not run (the publish it answers may be the one under way,
 * not yet delivered here nor waiting for its count). */
static void pubsub_inbox_run(struct worker *w)
{
    struct pub_slot *s;
    uint64_t clock_ns = w->pending ? timer_now_ns() : 0;

    while ((s = pubsub_pending_pop(w))) {
        struct pub_msg *m = s->msg;
        if (pubsub_is_reply(w, s)) {
            s->qnext = w->replies;
            w->replies = s;
        } else {
            pubsub_inbox_release(w, m);
            pubsub_worker_done(w->srv, m, pubsub_deliver(w, s, &clock_ns));
            pubsub_slot_release(s);
        }
    }
}

/* After a publish or a subscription took the inbox: replies it set aside
 * are answered by the next drain, which a wake makes sure of. */
static void pubsub_inbox_run_nested(struct worker *w)
{
    pubsub_inbox_run(w);
    if (w->replies && !atomic_exchange(&w->inbox_woken, true))
        worker_wake(w);
}

/* From the loop: deliveries, then the counts of this worker's publishes. */
void pubsub_inbox_drain(struct worker *w)
{
    struct pub_slot *s;

    atomic_store(&w->inbox_woken, false);
    pubsub_inbox_take(w);
    pubsub_inbox_run(w);
    while ((s = w->replies)) {
        struct pub_msg *m = s->msg;
        w->replies = s->qnext;
        m->count->done(m->count->done_arg, 0, atomic_load(&m->count->recipients), NULL);
        pubsub_count_free(m);
        pubsub_msg_unref(m);
    }
}

/* ---- publishing -------------------------------------------------------- */

/* Under its topic's lock (seq_publish_lock): m takes its topic's next
 * offset and is posted to every inbox but self's, so that each inbox holds the topic's
 * messages in offset order whichever threads publish; self's inbox is
 * taken (what it holds of the topic is older) to be delivered before m.
 * The eventfd writes wait for the locks to go. */
static int pubsub_sequence(struct ringws_server *srv, struct worker *self, struct pub_msg *m,
                           struct pub_pos *pos)
{
    unsigned n = srv->n_workers;
    bool wake[n];
    struct seq_hold hold;
    int r;

    if ((r = seq_publish_lock(srv, m, pos != NULL, &hold)) < 0)
        return r;
    if (pos) {
        memcpy(pos->epoch, m->epoch, SEQ_EPOCH_LEN);
        pos->epoch[SEQ_EPOCH_LEN] = '\0';
        pos->offset = m->offset;
    }
    /* Everything the other workers read is written before the first post. */
    for (unsigned i = 0; i < n; i++)
        wake[i] = (!self || i != self->id) && pubsub_push(&srv->workers[i], &m->slots[i]);
    if (self)
        pubsub_inbox_take(self);
    seq_publish_unlock(srv, &hold);
    for (unsigned i = 0; i < n; i++)
        if (wake[i])
            worker_wake(&srv->workers[i]);
    return 0;
}

/* Publishes m: delivered at once to the calling worker's subscribers (self,
 * may be NULL), after what its inbox held, and posted to every other
 * worker.  With done (and self), returns 1 when the count comes later,
 * else 0 and *recipients. */
static int pubsub_dispatch(struct ringws_server *srv, struct worker *self,
                           struct pub_msg *m, pubsub_done_fn *done, void *arg,
                           uint64_t *recipients, struct pub_pos *pos)
{
    unsigned n = srv->n_workers;
    unsigned remote = self ? n - 1 : n;
    bool defer = done && remote > 0;
    int r;

    atomic_init(&m->refs, n + (defer ? 1 : 0));
    if (defer) {
        if (!(m->count = malloc(sizeof(*m->count))))
            return -ENOMEM;
        *m->count = (struct pub_count){.origin = self->id, .done = done, .done_arg = arg};
        atomic_init(&m->count->pending, remote);
        atomic_init(&m->count->recipients, 0);
    }
    if ((r = pubsub_sequence(srv, self, m, pos)) < 0) {
        pubsub_count_free(m);
        return r;
    }
    if (self) {
        pubsub_inbox_run_nested(self);
        uint64_t clock_ns = m->hist.ns;
        uint64_t local = pubsub_deliver(self, &m->slots[self->id], &clock_ns);
        if (!defer && recipients)
            *recipients = local;
        if (defer && local)
            atomic_fetch_add(&m->count->recipients, local);
        pubsub_slot_release(&m->slots[self->id]);
    }
    return defer ? 1 : 0;
}

static int pubsub_check(const struct ringws_server *srv, const char *topic, size_t topic_len,
                        const void *data, size_t len, bool binary)
{
    if (!topic_name_valid(topic, topic_len))
        return -EINVAL;
    if (len > srv->cfg.max_message || len > srv->cfg.max_publish || len > UINT32_MAX - WS_MAX_SERVER_HEADER)
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

static int pubsub_publish(struct ringws_server *srv, struct worker *self, const char *topic,
                          size_t topic_len, const void *data, size_t len, bool binary,
                          pubsub_done_fn *done, void *arg, uint64_t *recipients,
                          struct pub_pos *pos)
{
    struct pub_msg *m;
    int ret = pubsub_check(srv, topic, topic_len, data, len, binary);

    if (ret < 0)
        return ret;
    if (!pubsub_enter(srv))
        return -ESHUTDOWN;
    /* A message that goes through another engine comes back to each node
     * (pubsub_publish_placed), which compresses it there. */
    m = pubsub_msg_make(srv, self, topic, topic_len, data, len, binary,
                        srv->engine == &engine_local);
    ret = m ? srv->engine->publish(srv, self, m, done, arg, recipients, pos) : -ENOMEM;
    atomic_fetch_sub(&srv->publishers, 1);
    return ret;
}

/* The in-process engine's publish: m takes its position here and goes to
 * every worker's inbox; freed when that fails. */
static int pubsub_local_publish(struct ringws_server *srv, struct worker *self,
                                struct pub_msg *m, pubsub_done_fn *done, void *arg,
                                uint64_t *recipients, struct pub_pos *pos)
{
    int ret = pubsub_inbox_reserve(srv, self, m);

    if (ret == 0 && (ret = pubsub_dispatch(srv, self, m, done, arg, recipients, pos)) < 0)
        pubsub_inbox_unreserve(srv, self, m, srv->n_workers);
    if (ret < 0)
        free(m);
    return ret;
}

int pubsub_publish_placed(struct worker *w, const char *topic, size_t topic_len,
                          const void *data, size_t len, bool binary,
                          const char epoch[SEQ_EPOCH_LEN], uint64_t offset, uint64_t age_ns,
                          bool deliver)
{
    struct ringws_server *srv = w->srv;
    struct pub_msg *m = pubsub_msg_make(srv, w, topic, topic_len, data, len, binary, true);
    struct seq_hold hold;
    int ret;

    if (!m)
        return -ENOMEM;
    if (age_ns < m->hist.ns)
        m->hist.ns -= age_ns;
    memcpy(m->epoch, epoch, SEQ_EPOCH_LEN);
    m->offset = offset;
    if (deliver)
        return pubsub_local_publish(srv, w, m, NULL, NULL, NULL, NULL);
    atomic_init(&m->refs, 1);
    if ((ret = seq_publish_lock(srv, m, false, &hold)) == 0)
        seq_publish_unlock(srv, &hold);
    pubsub_msg_unref(m);
    return ret;
}

int pubsub_prepare(struct ringws_conn *c, const char *list, size_t len)
{
    struct worker *w = conn_worker(c);
    const struct engine_ops *e = w->srv->engine;

    return e->prepare ? e->prepare(w, list, len, c) : 0;
}

int ringws_publish(ringws_server *srv, const char *topic, const void *data, size_t len,
                   unsigned flags)
{
    struct worker *self = pubsub_self && pubsub_self->srv == srv ? pubsub_self : NULL;

    if (!topic || (flags & ~RINGWS_PUBLISH_BINARY) || (len && !data))
        return -EINVAL;
    return pubsub_publish(srv, self, topic, strnlen(topic, RINGWS_MAX_TOPIC + 1), data, len,
                          flags & RINGWS_PUBLISH_BINARY, NULL, NULL, NULL, NULL);
}

int pubsub_publish_from(struct worker *w, const char *topic, size_t topic_len,
                        const void *data, size_t len, bool binary, pubsub_done_fn *done,
                        void *arg, uint64_t *recipients, struct pub_pos *pos)
{
    if (recipients)
        *recipients = 0;
    return pubsub_publish(w->srv, w, topic, topic_len, data, len, binary, done, arg,
                          recipients, pos);
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

/* ---- start and end ----------------------------------------------------- */

void pubsub_thread_enter(struct worker *w)
{
    pubsub_self = w;
}

void pubsub_worker_fini(struct worker *w)
{
    /* Every connection is gone, and with it every topic and the index's
     * buckets (topic_index_remove_sub). */
    pubsub_self = NULL;
}

/* Lets go of what a worker that no longer runs has in its inbox: its share
 * of each message counts as delivered to nobody, and the count of one of
 * its own publishes (whose publisher is gone with the worker) only drops
 * its message reference.  Returns whether there was anything. */
static bool pubsub_inbox_discard(struct worker *w)
{
    struct pub_slot *s;
    bool any;

    pubsub_inbox_take(w);
    if (w->replies) { /* set aside: back in line, to be let go below */
        for (s = w->replies; s->qnext; s = s->qnext)
            ;
        s->qnext = w->pending;
        w->pending = w->replies;
        w->replies = NULL;
    }
    any = w->pending != NULL;
    while ((s = pubsub_pending_pop(w))) {
        struct pub_msg *m = s->msg;
        if (!pubsub_is_reply(w, s)) {
            pubsub_inbox_release(w, m);
            pubsub_worker_done(w->srv, m, 0); /* may post a reply */
        } else {
            pubsub_count_free(m); /* nobody is told */
        }
        pubsub_msg_unref(m); /* the slot's or the reply's reference */
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

/* ---- the in-process engine (engine.h) ---------------------------------- */

/* Sequences and histories in this process: the sequencer's lock orders a
 * topic's publishes and subscriptions on every worker. */
const struct engine_ops engine_local = {
    .name = "local",
    .publish = pubsub_local_publish,
    .join = pubsub_start_sync,
    .leave = pubsub_seq_drop,
    .history = history_json_build,
    .sweep = seq_sweep,
};
