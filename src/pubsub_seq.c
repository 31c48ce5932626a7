/* pubsub_seq.c - the sequencer: every topic's epoch, offsets and history,
 * shared by all workers and publishing threads.
 *
 * Why it exists: an offset must be the same on every worker and a
 * subscriber must get a topic's messages in offset order, whichever thread
 * published them; the workers' own topic indexes are private and
 * lock-free, so the order is made here, once per publish, under the
 * topic's own lock held just long enough to give the offset, append to the
 * history and post the message to the inboxes (pubsub.c; the argument is
 * in docs/ARCHITECTURE.md, "Sequences").  Publishes share the table (a
 * read hold of its rwlock) and meet only at their own topic's lock, and,
 * for topics with history, at the short append under the history lock;
 * whatever changes the table or reads where a topic stands (a topic made
 * or forgotten, a subscription's join, GET /history, the sweep, /metrics)
 * holds the table alone (seq_lock).  The table holds a topic while a
 * worker has subscribers of it or its history holds a message, and then,
 * idle, for sequence_idle_ms (at most sequence_idle_max idle topics): a
 * client back within it resumes from its offset instead of being told of
 * a gap nothing caused.  A topic forgotten starts again with a new epoch.
 * Below it: the history rings (history.c).  Above it: pubsub.c, /metrics
 * and GET /history. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"
#include "pubsub_proto.h"
#include "siphash.h"

#define SEQ_MIN_BUCKETS 64u

struct seq_topic {
    struct seq_topic *next;      /* in its bucket */
    /* Orders the topic's publishes made under a shared hold of the table:
     * its offset, history append and posts to the inboxes. */
    pthread_mutex_t order;
    struct seq_topic *check_next; /* on the list to check at the unlock */
    /* On the idle list (oldest idle first) while idle_listed. */
    struct seq_topic *idle_prev, *idle_next;
    uint64_t idle_ns;            /* when it went idle */
    /* On the list of histories with an age limit that hold messages, which
     * the sweep walks (seq_sweep). */
    struct seq_topic *ttl_prev, *ttl_next;
    bool ttl_listed;
    uint64_t hash;
    uint64_t last;               /* offset of the last publish; 0: none (order) */
    uint32_t workers;            /* workers whose index holds the topic */
    bool check_listed, idle_listed;
    char epoch[SEQ_EPOCH_LEN + 1];
    struct history hist;
    uint16_t len;
    char name[];
};

/* Who may touch what: the buckets, a topic's workers, its idle state and
 * its removal need the table alone (the write hold); a topic's last offset
 * a hold of either kind and, when shared, the topic's order lock; the
 * histories and the check, idle and ttl lists a hold of either kind and,
 * when shared, hist_lock (an append may evict another topic's message). */
struct sequencer {
    pthread_rwlock_t table;
    pthread_mutex_t hist_lock;
    struct seq_topic **buckets;
    uint32_t mask, n;
    uint64_t key[2];
    struct history_set hist;
    struct seq_topic *check;     /* maybe idle at the unlock */
    struct seq_topic *idle_head, *idle_tail; /* idle topics, longest idle first */
    uint32_t n_idle, idle_max;
    uint64_t idle_grace_ns;
    struct seq_topic *ttl_head;  /* histories to sweep */
    struct seq_topic *ttl_cursor; /* where the next sweep starts; NULL: at the head */
    _Atomic uint64_t resumes[SEQ_RESUME_OUTCOMES]; /* counted without the lock */
};

static struct seq_topic *seq_of_history(struct history *h)
{
    return (struct seq_topic *)((char *)h - offsetof(struct seq_topic, hist));
}

static bool seq_topic_idle(const struct seq_topic *t)
{
    return !t->workers && !t->hist.n;
}

static void seq_idle_mark(struct sequencer *q, struct seq_topic *t)
{
    if (t->check_listed || t->idle_listed || !seq_topic_idle(t))
        return;
    t->check_listed = true;
    t->check_next = q->check;
    q->check = t;
}

static void seq_idle_push(struct sequencer *q, struct seq_topic *t, uint64_t now_ns)
{
    t->idle_listed = true;
    t->idle_ns = now_ns;
    t->idle_next = NULL;
    t->idle_prev = q->idle_tail;
    if (q->idle_tail)
        q->idle_tail->idle_next = t;
    else
        q->idle_head = t;
    q->idle_tail = t;
    q->n_idle++;
}

/* The topic is in use again (or forgotten): off the idle list. */
static void seq_idle_unlink(struct sequencer *q, struct seq_topic *t)
{
    if (!t->idle_listed)
        return;
    if (t->idle_prev)
        t->idle_prev->idle_next = t->idle_next;
    else
        q->idle_head = t->idle_next;
    if (t->idle_next)
        t->idle_next->idle_prev = t->idle_prev;
    else
        q->idle_tail = t->idle_prev;
    t->idle_listed = false;
    q->n_idle--;
}

/* A message left its topic's history: the history's reference goes. */
static void seq_history_release(struct hist_node *node, struct history *from, void *arg)
{
    struct pub_msg *m = (struct pub_msg *)((char *)node - offsetof(struct pub_msg, hist));

    seq_idle_mark(arg, seq_of_history(from));
    pubsub_msg_unref(m);
}

int seq_create(struct ringws_server *srv)
{
    struct sequencer *q = calloc(1, sizeof(*q));
    pthread_rwlockattr_t attr;

    if (!q)
        return -ENOMEM;

    /* A subscription waits for the publishes under way, not for all that
     * keep coming. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&q->table, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&q->hist_lock, NULL);
    memcpy(q->key, srv->topic_key, sizeof(q->key));
    history_set_init(&q->hist, srv->cfg.max_history_bytes, seq_history_release, q);
    q->idle_grace_ns = (uint64_t)srv->cfg.sequence_idle_ms * 1000000u;
    q->idle_max = q->idle_grace_ns ? srv->cfg.sequence_idle_max : 0;
    srv->seq = q;
    return 0;
}

static void seq_ttl_link(struct sequencer *q, struct seq_topic *t)
{
    if (t->ttl_listed || !t->hist.ttl_ns || !t->hist.n)
        return;
    t->ttl_listed = true;
    t->ttl_prev = NULL;
    t->ttl_next = q->ttl_head;
    if (q->ttl_head)
        q->ttl_head->ttl_prev = t;
    q->ttl_head = t;
}

static void seq_ttl_unlink(struct sequencer *q, struct seq_topic *t)
{
    if (!t->ttl_listed)
        return;
    if (q->ttl_cursor == t)
        q->ttl_cursor = t->ttl_next;
    if (t->ttl_prev)
        t->ttl_prev->ttl_next = t->ttl_next;
    else
        q->ttl_head = t->ttl_next;
    if (t->ttl_next)
        t->ttl_next->ttl_prev = t->ttl_prev;
    t->ttl_listed = false;
}

static void seq_forget(struct sequencer *q, struct seq_topic *t)
{
    struct seq_topic **pp = &q->buckets[t->hash & q->mask];

    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    q->n--;
    seq_idle_unlink(q, t);
    t->check_listed = true; /* its history's release must not list it again */
    seq_ttl_unlink(q, t);
    history_clear(&q->hist, &t->hist);
    pthread_mutex_destroy(&t->order);
    free(t);
}

void seq_destroy(struct ringws_server *srv)
{
    struct sequencer *q = srv->seq;

    if (!q)
        return;
    for (uint32_t i = 0; q->buckets && i <= q->mask; i++)
        while (q->buckets[i])
            seq_forget(q, q->buckets[i]);
    free(q->buckets);
    pthread_rwlock_destroy(&q->table);
    pthread_mutex_destroy(&q->hist_lock);
    free(q);
    srv->seq = NULL;
}

void seq_lock(struct ringws_server *srv)
{
    pthread_rwlock_wrlock(&srv->seq->table);
}

/* Topics left idle go on the idle list (the caller holds the table alone,
 * or shares it and holds hist_lock); true when the list is past its cap. */
static bool seq_settle_idle(struct sequencer *q)
{
    uint64_t now_ns = q->check ? timer_now_ns() : 0;

    while (q->check) {
        struct seq_topic *t = q->check;
        q->check = t->check_next;
        t->check_listed = false;
        if (seq_topic_idle(t))
            seq_idle_push(q, t, now_ns);
    }
    return q->n_idle > q->idle_max;
}

/* Topics left idle by this critical section go on the idle list before
 * the lock goes, and past the list's cap the longest idle are forgotten:
 * topics nothing needs cost at most idle_max entries, whatever names
 * publishers make up. */
void seq_unlock(struct ringws_server *srv)
{
    struct sequencer *q = srv->seq;

    seq_settle_idle(q);
    while (q->n_idle > q->idle_max)
        seq_forget(q, q->idle_head);
    pthread_rwlock_unlock(&q->table);
}

/* Ends a shared hold that left the idle list past its cap: forgetting
 * needs the table alone, taken after the shared hold went. */
static void seq_unshare(struct sequencer *q, bool over_cap)
{
    pthread_rwlock_unlock(&q->table);
    if (over_cap) {
        pthread_rwlock_wrlock(&q->table);
        while (q->n_idle > q->idle_max)
            seq_forget(q, q->idle_head);
        pthread_rwlock_unlock(&q->table);
    }
}

/* Doubles the table above one topic per bucket (it never shrinks: its size
 * is what the most topics held at once needed).  Without memory it stays. */
static void seq_grow(struct sequencer *q)
{
    uint32_t size = q->buckets ? q->mask + 1 : 0, n = size ? size * 2 : SEQ_MIN_BUCKETS;
    struct seq_topic **b;

    if (size && q->n < size)
        return;
    b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (uint32_t i = 0; i < size; i++) {
        while (q->buckets[i]) {
            struct seq_topic *t = q->buckets[i];
            q->buckets[i] = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->mask = n - 1;
}

static struct seq_topic *seq_lookup(struct sequencer *q, const char *name, size_t len,
                                    uint64_t hash)
{
    struct seq_topic *t = q->buckets ? q->buckets[hash & q->mask] : NULL;

    while (t && !(t->hash == hash && t->len == len && !memcmp(t->name, name, len)))
        t = t->next;
    return t;
}

static struct seq_topic *seq_topic_find(struct ringws_server *srv, const char *name,
                                        size_t len)
{
    struct sequencer *q = srv->seq;

    return seq_lookup(q, name, len, siphash24(q->key, name, len));
}

/* 16 hex digits from the kernel's CSPRNG: a client can neither guess the
 * next epoch nor meet an old one again by chance. */
static int seq_epoch_draw(char out[SEQ_EPOCH_LEN + 1])
{
    uint8_t r[SEQ_EPOCH_LEN / 2];

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -EIO;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return 0;
}

struct seq_topic *seq_topic_get(struct ringws_server *srv, const char *name, size_t len)
{
    struct sequencer *q = srv->seq;
    const struct ringws_config *cfg = &srv->cfg;
    uint64_t hash = siphash24(q->key, name, len);
    struct seq_topic *t = seq_lookup(q, name, len, hash);
    const struct ringws_topic_rule *rule;

    if (t)
        return t;
    seq_grow(q);
    if (!q->buckets || !(t = calloc(1, sizeof(*t) + len)))
        return NULL;
    if (seq_epoch_draw(t->epoch) < 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->order, NULL);
    rule = topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, name, len);
    history_init(&t->hist, rule ? rule->history : 0,
                 rule ? (uint64_t)rule->history_ttl_ms * 1000000u : 0);
    t->hash = hash;
    t->len = (uint16_t)len;
    memcpy(t->name, name, len);
    t->next = q->buckets[hash & q->mask];
    q->buckets[hash & q->mask] = t;
    q->n++;
    return t;
}

/* What a held message pins: the message with its slots, raw frame (and
 * its compressed twin) and topic; its ringws.v1 frames are counted when
 * built (seq_message_charge). */
static size_t seq_message_bytes(const struct ringws_server *srv, const struct pub_msg *m)
{
    return sizeof(*m) + srv->n_workers * sizeof(struct pub_slot) + m->raw.len + m->z.len +
           m->topic_len;
}

void seq_message_charge(struct ringws_server *srv, struct pub_msg *m, size_t bytes)
{
    struct sequencer *q = srv->seq;
    bool over_cap;

    /* hist.bytes is set at the publish, before any worker sees m, and only
     * under hist_lock after: a message of a topic without history takes no
     * lock here. */
    if (!m->hist.bytes)
        return;
    pthread_rwlock_rdlock(&q->table);
    pthread_mutex_lock(&q->hist_lock);
    history_charge(&q->hist, &m->hist, bytes);
    over_cap = seq_settle_idle(q);
    pthread_mutex_unlock(&q->hist_lock);
    seq_unshare(q, over_cap);
}

/* A message whose position an engine gave (m->offset set: another node's
 * publish, or one read back from a shared history) moves the topic to it;
 * a new epoch, or an offset that does not follow, starts the history
 * anew: what it held is no longer a run that ends before this message.
 * Under the topic's lock; the history is shared (one memory cap). */
static void seq_topic_accept(struct sequencer *q, struct seq_topic *t, const struct pub_msg *m)
{
    if (memcmp(t->epoch, m->epoch, SEQ_EPOCH_LEN) || m->offset != t->last + 1) {
        pthread_mutex_lock(&q->hist_lock);
        history_clear(&q->hist, &t->hist);
        pthread_mutex_unlock(&q->hist_lock);
        memcpy(t->epoch, m->epoch, SEQ_EPOCH_LEN);
    }
    t->last = m->offset;
}

/* Gives m its offset (or takes the engine's) and hands it to the history;
 * true when the idle list went past its cap.  A topic without history
 * touches nothing shared beyond itself. */
static bool seq_topic_assign(struct ringws_server *srv, struct seq_topic *t, struct pub_msg *m)
{
    struct sequencer *q = srv->seq;
    bool over_cap;

    if (m->offset) {
        seq_topic_accept(q, t, m);
    } else {
        m->offset = ++t->last;
        memcpy(m->epoch, t->epoch, SEQ_EPOCH_LEN);
    }
    if (!t->hist.limit)
        return false;
    m->hist.bytes = seq_message_bytes(srv, m);
    atomic_fetch_add(&m->refs, 1);
    pthread_mutex_lock(&q->hist_lock);
    /* Without memory for the ring the message is simply not kept: resumers
     * of the topic see a gap, which is what a history that cannot hold it
     * means. */
    if (history_append(&q->hist, &t->hist, &m->hist, m->offset, m->hist.ns) < 0)
        atomic_fetch_sub(&m->refs, 1);
    if (t->hist.n)
        seq_idle_unlink(q, t);
    seq_ttl_link(q, t);
    seq_idle_mark(q, t);
    over_cap = seq_settle_idle(q);
    pthread_mutex_unlock(&q->hist_lock);
    return over_cap;
}

void seq_sweep(struct ringws_server *srv, uint64_t now_ns, unsigned budget)
{
    struct sequencer *q = srv->seq;
    struct seq_topic *t;

    seq_lock(srv);
    t = q->ttl_cursor ? q->ttl_cursor : q->ttl_head;
    while (t && budget--) {
        struct seq_topic *next = t->ttl_next;
        history_expire(&q->hist, &t->hist, now_ns);
        if (!t->hist.n)
            seq_ttl_unlink(q, t); /* idle at the unlock, when no worker holds it */
        t = next;
    }
    q->ttl_cursor = t;
    for (unsigned n = 0; n < budget && q->idle_head &&
                        q->idle_head->idle_ns + q->idle_grace_ns <= now_ns; n++)
        seq_forget(q, q->idle_head);
    seq_unlock(srv);
}

/* Whether the topic's rule keeps a history. */
static bool seq_rule_keeps(const struct ringws_config *cfg, const char *name, size_t len)
{
    const struct ringws_topic_rule *rule =
        topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, name, len);

    return rule && rule->history;
}

/* A topic the table does not hold has no subscriber anywhere (a worker
 * that makes its own topic goes through the table alone) and, without a
 * history rule, would be forgotten at once: its message is the first of a
 * sequence nobody sees, and the table is not touched (no allocation, no
 * epoch drawn unless the publisher is to be told one).  A topic to be
 * made takes the table alone. */
int seq_publish_lock(struct ringws_server *srv, struct pub_msg *m, bool tell,
                     struct seq_hold *hold)
{
    struct sequencer *q = srv->seq;
    const char *name = pub_msg_topic(m);
    struct seq_topic *t;

    *hold = (struct seq_hold){0};
    pthread_rwlock_rdlock(&q->table);
    t = seq_topic_find(srv, name, m->topic_len);
    if (t) {
        pthread_mutex_lock(&t->order);
        hold->t = t;
        hold->over_cap = seq_topic_assign(srv, t, m);
        return 0;
    }
    if (!seq_rule_keeps(&srv->cfg, name, m->topic_len)) {
        char epoch[SEQ_EPOCH_LEN + 1] = "0000000000000000";
        if (m->offset) /* placed by the engine already */
            return 0;
        if (tell && seq_epoch_draw(epoch) < 0) {
            pthread_rwlock_unlock(&q->table);
            return -EIO;
        }
        m->offset = 1;
        memcpy(m->epoch, epoch, SEQ_EPOCH_LEN);
        return 0;
    }
    pthread_rwlock_unlock(&q->table);
    seq_lock(srv);
    hold->alone = true;
    if (!(t = seq_topic_get(srv, name, m->topic_len))) {
        seq_unlock(srv);
        return -ENOMEM;
    }
    seq_topic_assign(srv, t, m);
    return 0;
}

void seq_publish_unlock(struct ringws_server *srv, struct seq_hold *hold)
{
    if (hold->alone) {
        seq_unlock(srv);
        return;
    }
    if (hold->t)
        pthread_mutex_unlock(&hold->t->order);
    seq_unshare(srv->seq, hold->over_cap);
}

void seq_topic_view(struct ringws_server *srv, struct seq_topic *t, struct seq_view *v)
{
    history_expire(&srv->seq->hist, &t->hist, timer_now_ns());
    memcpy(v->epoch, t->epoch, sizeof(v->epoch));
    v->last = t->last;
    v->oldest = history_oldest(&t->hist, t->last);
}

bool seq_topic_serves(const struct seq_topic *t, const char *epoch, uint64_t after)
{
    return history_serves(&t->hist, t->last, !epoch || !memcmp(epoch, t->epoch, SEQ_EPOCH_LEN),
                          after);
}

struct pub_msg *seq_topic_message(struct seq_topic *t, uint64_t offset)
{
    struct hist_node *node = history_at(&t->hist, offset);
    struct pub_msg *m;

    if (!node)
        return NULL;
    m = (struct pub_msg *)((char *)node - offsetof(struct pub_msg, hist));
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void seq_topic_place(struct ringws_server *srv, struct seq_topic *t, const char *epoch,
                     uint64_t last)
{
    if (memcmp(t->epoch, epoch, SEQ_EPOCH_LEN) || last != t->last) {
        history_clear(&srv->seq->hist, &t->hist);
        memcpy(t->epoch, epoch, SEQ_EPOCH_LEN);
    }
    t->last = last;
}

void seq_topic_name(const struct seq_topic *t, const char **name, size_t *len)
{
    *name = t->name;
    *len = t->len;
}

void seq_topic_hold(struct ringws_server *srv, struct seq_topic *t)
{
    t->workers++;
    seq_idle_unlink(srv->seq, t);
}

void seq_topic_drop(struct ringws_server *srv, struct seq_topic *t)
{
    t->workers--;
    seq_idle_mark(srv->seq, t);
}

void seq_topic_settle(struct ringws_server *srv, struct seq_topic *t)
{
    seq_idle_mark(srv->seq, t);
}

void seq_count_resume(struct ringws_server *srv, enum seq_resume outcome)
{
    atomic_fetch_add_explicit(&srv->seq->resumes[outcome], 1, memory_order_relaxed);
}

void seq_stats(struct ringws_server *srv, struct seq_stats *out)
{
    struct sequencer *q = srv->seq;

    seq_lock(srv);
    out->topics = q->n;
    out->idle_topics = q->n_idle;
    out->history_messages = q->hist.n;
    out->history_bytes = q->hist.bytes;
    memcpy(out->evicted, q->hist.evicted, sizeof(out->evicted));
    for (unsigned i = 0; i < SEQ_RESUME_OUTCOMES; i++)
        out->resumes[i] = atomic_load_explicit(&q->resumes[i], memory_order_relaxed);
    seq_unlock(srv);
}
