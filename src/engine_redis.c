/* engine_redis.c - the Redis engine: topics' sequences and histories in a
 * Redis Cluster (or one Redis), shared by every node configured with it
 * (docs/CLUSTER.md).
 *
 * Why it exists: one process is one failure domain and one host's
 * connections; nodes behind a load balancer must give a topic the same
 * epoch and offsets everywhere and deliver each publish once to every
 * subscriber on every node.  Redis orders each topic (one script on the
 * topic's master gives the offset, appends to its stream and SPUBLISHes),
 * and a node subscribes a topic's sharded channel only while it has
 * subscribers of it (interest).  Below the engine, fan-out is the
 * in-process one: a message that comes from Redis is placed in the node's
 * sequencer with the position Redis gave and posted to the workers as a
 * local publish is.  A topic is live on a node while its channel is
 * subscribed and the sequencer holds Redis's position and history
 * window: then subscriptions, resumes and GET /history are answered from
 * the node's memory as a single node answers them; a command that names a
 * topic not live waits until it is (prepare).
 *
 * Threads: the node-wide table of topics (interest, state, waiters) is
 * under one mutex; each topic has an owner worker (by its hash) that alone
 * talks to Redis about it and delivers its messages.  Each worker has its
 * own view of the cluster (CLUSTER SLOTS), its own command connection per
 * master, and a subscription connection per master while it owns live
 * topics there. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/sha.h>

#include "cluster_slot.h"
#include "engine.h"
#include "engine_proto.h"
#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "siphash.h"
#include "utf8.h"

#define RE_GRACE_MS 2000u      /* a channel outlives its last subscriber */
#define RE_RETRY_MS 1000u      /* a topic that could not be made live is refused this long */
#define RE_TOPO_MIN_MS 200u    /* between two reads of the slot map */
#define RE_JOIN_WAIT_MS 5000u  /* a command waits at most this long for its topics */
#define RE_MAX_SEEDS 16u
#define RE_NO_MASTER 0xffffu
#define RE_KEY_MAX (RINGWS_MAX_TOPIC + 16)
#define RE_MIN_BUCKETS 64u

_Static_assert(ENGINE_EPOCH_LEN == SEQ_EPOCH_LEN, "one epoch length");

/* KEYS: the topic's hash, stream, channel.  ARGV: an epoch for a topic
 * that has none, the stream's MAXLEN (0: no history), the keys' idle
 * expiry (ms), the type (t/b), the payload, the publish time (the
 * publishing node's CLOCK_REALTIME, us), the history's age limit (ms, 0:
 * none).  Returns {epoch, offset, nodes that took it}; the channel's
 * message is engine_proto.h's.
 *
 * With an age limit the stream holds no message older than it, as each
 * node's copy does: the entries older than it (by their publish time, the
 * field us, sixth of the fields this script writes) are trimmed from the
 * front at every publish (exact MINID: "~" trims whole nodes only), and
 * the stream expires once its newest entry is that old.  The IDs are
 * offsets, not times, so the cut is found by reading the front: one
 * entry when nothing is old, each old entry once. */
static const char re_publish_lua[] =
    "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not e then e = ARGV[1]; redis.call('HSET', KEYS[1], 'epoch', e) end\n"
    "local o = redis.call('HINCRBY', KEYS[1], 'last', 1)\n"
    "if tonumber(ARGV[2]) > 0 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], o .. '-0',"
    " 't', ARGV[4], 'p', ARGV[5], 'us', ARGV[6])\n"
    "  local ttl = tonumber(ARGV[7])\n"
    "  if ttl > 0 then\n"
    "    local cut, from, n, old = tonumber(ARGV[6]) - ttl * 1000, '-', 1, false\n"
    "    while true do\n"
    "      local r = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', n)\n"
    "      local keep\n"
    "      for i = 1, #r do\n"
    "        if tonumber(r[i][2][6]) >= cut then keep = r[i][1]; break end\n"
    "        old = true\n"
    "      end\n"
    "      if keep or #r == 0 then\n"
    "        if keep and old then redis.call('XTRIM', KEYS[2], 'MINID', keep) end\n"
    "        break\n"
    "      end\n"
    "      from, n = '(' .. r[#r][1], 64\n"
    "    end\n"
    "    redis.call('PEXPIRE', KEYS[2], ttl)\n"
    "  else\n"
    "    redis.call('PEXPIRE', KEYS[2], ARGV[3])\n"
    "  end\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "local n = redis.call('SPUBLISH', KEYS[3],"
    " e .. ' ' .. o .. ' ' .. ARGV[4] .. ' ' .. ARGV[6] .. ' ' .. ARGV[5])\n"
    "return {e, o, n}\n";

/* KEYS: the topic's hash.  ARGV: the epoch a node found to have lost
 * acknowledged writes, a new one.  Replaces it only if it is still the
 * topic's (another node may have done so already). */
static const char re_replace_lua[] =
    "if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then\n"
    "  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])\n"
    "end\n"
    "return redis.call('HGET', KEYS[1], 'epoch')\n";

struct re_master;
struct re_worker;

/* A connection waiting for topics to be live (prepare). */
struct re_wait {
    struct ringws_conn *c;
    unsigned worker;     /* the connection's */
    unsigned pending;    /* topics not live yet (under the lock) */
    bool failed;
    struct re_wait *next; /* on its worker's ready list */
};

struct re_waitref {
    struct re_waitref *next;
    struct re_wait *wt;
};

/* A message that came while its topic was not live yet. */
struct re_early {
    struct re_early *next;
    size_t len;
    char text[]; /* "EPOCH OFFSET TYPE PAYLOAD" */
};

enum re_state { RT_OFF, RT_JOINING, RT_LIVE };

struct re_topic {
    struct re_topic *next;      /* in its bucket */
    uint64_t hash;
    /* Under the lock. */
    uint32_t interest;          /* workers whose index holds it */
    enum re_state state;
    uint64_t idle_ms;           /* when interest fell to 0 */
    uint64_t failed_ms;         /* when it could not be made live */
    uint64_t join_ms;           /* when it was asked to be */
    struct re_waitref *waiters;
    struct re_topic *join_next; /* on its owner's list to make live */
    bool join_listed;
    /* The owner's alone. */
    unsigned owner;
    struct re_master *master;   /* where it is subscribed (or asked) */
    struct seq_topic *st;       /* the sequencer's, held while not off */
    bool subscribed, syncing, known;
    char epoch[SEQ_EPOCH_LEN];  /* of what was delivered */
    uint64_t last;
    char replaced[SEQ_EPOCH_LEN]; /* an epoch this node replaced: its messages are stale */
    bool has_replaced;
    struct re_early *early, *early_tail;
    uint16_t len;
    char name[];
};

struct re_master {
    struct re_worker *rw;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct redis_conn cmd, sub;
    bool sub_started, retired;
    bool sub_remake; /* an unsubscribe found no memory: remade by re_tick */
};

struct re_pub {
    struct re_pub *next;
    struct pub_msg *m;
};

struct re_worker {
    struct worker *w;
    struct redis_engine *e;
    struct re_master **masters, **retired;
    unsigned n_masters, n_retired;
    uint16_t slots[CLUSTER_SLOTS]; /* index in masters */
    bool map_ready, topo_busy, stopping;
    bool topo_again; /* a read asked for while one was on its way, or too soon after one */
    uint64_t topo_ms;
    struct redis_conn *seeds; /* one per seed: the first up answers the slot map */
    unsigned n_seeds;
    struct sockaddr_storage topo_addr; /* who answers the slot map asked */
    socklen_t topo_addr_len;
    /* Handed over by other threads, under the lock. */
    struct re_topic *joins;
    struct re_wait *ready;
    struct re_pub *pubs;
    size_t pubs_bytes; /* what pubs hold: at most max_inbox_bytes */
    /* For /metrics on any worker: its masters, and those whose command
     * connection is up (re_count_masters keeps them). */
    _Atomic unsigned masters_known, masters_up;
    uint8_t rnd[64];
    unsigned rnd_used;
};

struct redis_engine {
    pthread_mutex_t lock;
    struct redis_auth auth; /* from the URL's USER:PASSWORD@ */
    char *user, *password;
    struct sockaddr_storage seeds[RE_MAX_SEEDS];
    socklen_t seed_len[RE_MAX_SEEDS];
    unsigned n_seeds;
    struct re_topic **buckets;
    uint32_t mask, n;
    uint64_t key[2];
    const char *sha; /* of re_publish_lua, hex */
    char sha_hex[2 * SHA_DIGEST_LENGTH + 1];
    struct re_worker **workers;
    _Atomic uint64_t reconnects_seen, refills, gaps, refused, live;
    /* Of refused: publishes whose caller had been answered 0 already
     * (ringws_publish: handed to a worker, or sent), so that nobody else
     * can tell them. */
    _Atomic uint64_t refused_unreported;
};

static struct redis_engine *re_of(const struct ringws_server *srv)
{
    return srv->engine_state;
}

static uint64_t re_now_ms(void)
{
    return timer_now_ms();
}

/* ---- the node-wide table (under the lock) ----------------------------- */

static struct re_topic *re_find(struct redis_engine *e, const char *name, size_t len,
                                uint64_t hash)
{
    struct re_topic *t = e->buckets ? e->buckets[hash & e->mask] : NULL;

    while (t && !(t->hash == hash && t->len == len && !memcmp(t->name, name, len)))
        t = t->next;
    return t;
}

static void re_grow(struct redis_engine *e)
{
    uint32_t size = e->buckets ? e->mask + 1 : 0, n = size ? size * 2 : RE_MIN_BUCKETS;
    struct re_topic **b;

    if (size && e->n < size)
        return;
    if (!(b = calloc(n, sizeof(*b))))
        return;
    for (uint32_t i = 0; i < size; i++) {
        while (e->buckets[i]) {
            struct re_topic *t = e->buckets[i];
            e->buckets[i] = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
        }
    }
    free(e->buckets);
    e->buckets = b;
    e->mask = n - 1;
}

static struct re_topic *re_get(struct ringws_server *srv, const char *name, size_t len)
{
    struct redis_engine *e = re_of(srv);
    uint64_t hash = siphash24(e->key, name, len);
    struct re_topic *t = re_find(e, name, len, hash);

    if (t)
        return t;
    re_grow(e);
    if (!e->buckets || !(t = calloc(1, sizeof(*t) + len)))
        return NULL;
    t->hash = hash;
    t->owner = (unsigned)(hash % srv->n_workers);
    t->len = (uint16_t)len;
    memcpy(t->name, name, len);
    t->next = e->buckets[hash & e->mask];
    e->buckets[hash & e->mask] = t;
    e->n++;
    return t;
}

/* Asks the owner to make t live; true when the owner must be woken. */
static bool re_want_live(struct ringws_server *srv, struct re_topic *t)
{
    struct re_worker *owner = re_of(srv)->workers[t->owner];

    if (t->state == RT_OFF) {
        t->state = RT_JOINING;
        t->join_ms = re_now_ms();
    }
    if (t->join_listed || !owner)
        return false;
    t->join_listed = true;
    t->join_next = owner->joins;
    owner->joins = t;
    return true;
}

/* The topic is live (ok) or could not be made so: its waiters are told;
 * each whose last topic this was goes to its worker's ready list. */
static void re_answer_waiters(struct ringws_server *srv, struct re_topic *t, bool ok,
                              bool wake[])
{
    struct redis_engine *e = re_of(srv);

    while (t->waiters) {
        struct re_waitref *ref = t->waiters;
        struct re_wait *wt = ref->wt;
        struct re_worker *rw = e->workers[wt->worker];
        t->waiters = ref->next;
        free(ref);
        wt->failed |= !ok;
        if (--wt->pending)
            continue;
        wt->next = rw->ready;
        rw->ready = wt;
        wake[wt->worker] = true;
    }
}

static void re_wake(struct ringws_server *srv, const bool wake[])
{
    for (unsigned i = 0; i < srv->n_workers; i++)
        if (wake[i])
            worker_wake(&srv->workers[i]);
}

/* ---- keys and random epochs -------------------------------------------- */

static size_t re_key(char *out, const char *name, size_t len, char kind)
{
    return (size_t)snprintf(out, RE_KEY_MAX, "ringws:{%.*s}:%c", (int)len, name, kind);
}

/* 16 hex digits from the kernel's CSPRNG, drawn 64 bytes at a time. */
static void re_epoch_draw(struct re_worker *rw, char out[SEQ_EPOCH_LEN])
{
    static const char hex[] = "0123456789abcdef";

    if (rw->rnd_used == 0 || rw->rnd_used + SEQ_EPOCH_LEN / 2 > sizeof(rw->rnd)) {
        if (getrandom(rw->rnd, sizeof(rw->rnd), 0) != (ssize_t)sizeof(rw->rnd))
            memset(rw->rnd, 0x5a, sizeof(rw->rnd)); /* never seen: getrandom does not fail here */
        rw->rnd_used = 0;
    }
    for (unsigned i = 0; i < SEQ_EPOCH_LEN / 2; i++) {
        uint8_t b = rw->rnd[rw->rnd_used++];
        out[2 * i] = hex[b >> 4];
        out[2 * i + 1] = hex[b & 15];
    }
}

/* What a topic's rule keeps: the stream's length and age limit (0:
 * none; ttl_ms may be NULL), and how long its keys outlive their last publish (the sequence's
 * idle time, at least the history's age limit, at least a second). */
static void re_topic_limits(const struct ringws_config *cfg, const char *name, size_t len,
                            uint32_t *maxlen, uint32_t *ttl_ms, uint64_t *idle_ms)
{
    const struct ringws_topic_rule *rule =
        topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, name, len);
    uint64_t idle = cfg->sequence_idle_ms;

    *maxlen = rule ? rule->history : 0;
    if (ttl_ms)
        *ttl_ms = rule ? rule->history_ttl_ms : 0;
    if (rule && rule->history_ttl_ms > idle)
        idle = rule->history_ttl_ms;
    *idle_ms = idle < 1000 ? 1000 : idle;
}

/* ---- the slot map ------------------------------------------------------ */

static struct re_master *re_master_of(struct re_worker *rw, const char *name, size_t len)
{
    uint16_t i;

    if (!rw->map_ready)
        return NULL;
    i = rw->slots[cluster_crc16(name, len) & (CLUSTER_SLOTS - 1)];
    return i == RE_NO_MASTER ? NULL : rw->masters[i];
}

static void re_topology_refresh(struct re_worker *rw);
static void re_resubscribe(struct re_worker *rw, struct re_master *m);
static void re_join_start(struct re_worker *rw, struct re_topic *t);

/* "HOST:PORT" of a master, for the log. */
static const char *re_addr_text(const struct sockaddr_storage *a, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (a->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in *)a)->sin_port);
    } else if (a->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    }
    snprintf(out, n, "%s:%u", host, port);
    return out;
}

/* Publishes this worker's masters for /metrics, which another worker
 * writes: the masters themselves are this worker's alone. */
static void re_count_masters(struct re_worker *rw)
{
    unsigned up = 0;

    for (unsigned i = 0; i < rw->n_masters; i++)
        up += rw->masters[i] && rw->masters[i]->cmd.state == REDIS_UP;
    atomic_store(&rw->masters_known, rw->n_masters);
    atomic_store(&rw->masters_up, up);
}

static void re_cmd_state(void *ctx, bool up)
{
    struct re_master *m = ctx;
    char a[INET6_ADDRSTRLEN + 8];

    log_msg(up ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, "worker %u: redis %s %s", m->rw->w->id,
            re_addr_text(&m->addr, a, sizeof(a)), up ? "up" : "lost; reconnecting");
    re_count_masters(m->rw);
    if (!up) {
        atomic_fetch_add(&m->rw->e->reconnects_seen, 1);
        re_topology_refresh(m->rw);
        return;
    }
    re_resubscribe(m->rw, NULL); /* topics that waited for it */
}

static void re_sub_push(void *ctx, redisReply *r);
static int re_redirect_target(struct re_worker *rw, const char *err, size_t n,
                              struct engine_redirect *to);

static void re_sub_state(void *ctx, bool up)
{
    struct re_master *m = ctx;

    if (up) {
        re_resubscribe(m->rw, m);
        return;
    }
    atomic_fetch_add(&m->rw->e->reconnects_seen, 1);
    re_resubscribe(m->rw, m); /* marks its topics unsubscribed */
    re_topology_refresh(m->rw);
}

static const struct redis_conn_ops re_cmd_ops = {.state = re_cmd_state};
static const struct redis_conn_ops re_sub_ops = {.push = re_sub_push, .state = re_sub_state};

static struct re_master *re_master_new(struct re_worker *rw, const struct sockaddr *a,
                                       socklen_t len)
{
    struct re_master *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->rw = rw;
    memcpy(&m->addr, a, len);
    m->addr_len = len;
    if (redis_conn_start(&m->cmd, rw->w->loop, a, len, &rw->e->auth, &re_cmd_ops, m) < 0) {
        redis_conn_free(&m->cmd);
        free(m);
        return NULL;
    }
    return m;
}

static void re_master_retire(struct re_worker *rw, struct re_master *m)
{
    struct re_master **grown = realloc(rw->retired, (rw->n_retired + 1) * sizeof(*grown));

    m->retired = true;
    redis_conn_stop(&m->cmd);
    if (m->sub_started)
        redis_conn_stop(&m->sub);
    if (grown) {
        rw->retired = grown;
        rw->retired[rw->n_retired++] = m;
    } /* else kept nowhere: its connections are stopped, its memory lost */
}

static bool re_addr_same(const struct sockaddr_storage *a, socklen_t alen,
                         const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && !memcmp(a, b, alen);
}

/* An address as Redis writes it (IPv4 or IPv6, no brackets) and a port:
 * a socket address; false if it is none. */
static bool re_addr_from(const char *host, unsigned port, struct sockaddr_storage *out,
                         socklen_t *len)
{
    memset(out, 0, sizeof(*out));
    if (!port || port > 65535)
        return false;
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)out)->sin_addr) == 1) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof(*a);
        return true;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a);
        return true;
    }
    return false;
}

/* CLUSTER SLOTS' "IP", port. */
static bool re_addr_parse(const redisReply *ip, const redisReply *port,
                          struct sockaddr_storage *out, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN];

    if (ip->type != REDIS_REPLY_STRING || port->type != REDIS_REPLY_INTEGER ||
        ip->len >= sizeof(host) || port->integer <= 0 || port->integer > 65535)
        return false;
    memcpy(host, ip->str, ip->len);
    host[ip->len] = '\0';
    return re_addr_from(host, (unsigned)port->integer, out, len);
}

/* The index of the master at that address, kept or made; RE_NO_MASTER
 * without memory. */
static uint16_t re_master_index(struct re_worker *rw, struct re_master **next, unsigned *n_next,
                                const struct sockaddr_storage *a, socklen_t len)
{
    struct re_master *m = NULL;

    for (unsigned i = 0; i < *n_next; i++)
        if (re_addr_same(&next[i]->addr, next[i]->addr_len, a, len))
            return (uint16_t)i;
    for (unsigned i = 0; i < rw->n_masters && !m; i++)
        if (rw->masters[i] && re_addr_same(&rw->masters[i]->addr, rw->masters[i]->addr_len, a, len)) {
            m = rw->masters[i];
            rw->masters[i] = NULL; /* moved to the new list */
        }
    if (!m && !(m = re_master_new(rw, (const struct sockaddr *)a, len)))
        return RE_NO_MASTER;
    next[*n_next] = m;
    return (uint16_t)(*n_next)++;
}

/* CLUSTER SLOTS' answer: [[start, end, [ip, port, id], replicas...], ...];
 * an error (a Redis that is not a cluster) makes the one asked serve
 * every slot. */
static void re_topology_reply(void *arg, redisReply *r)
{
    struct re_worker *rw = arg;
    struct re_master **next;
    unsigned n_next = 0;

    rw->topo_busy = false;
    rw->topo_ms = re_now_ms();
    if (!r || rw->stopping)
        return;
    if (!(next = calloc(r->type == REDIS_REPLY_ARRAY ? r->elements + 1 : 1, sizeof(*next))))
        return;
    for (unsigned i = 0; i < CLUSTER_SLOTS; i++)
        rw->slots[i] = RE_NO_MASTER;
    if (r->type == REDIS_REPLY_ERROR) {
        uint16_t idx = re_master_index(rw, next, &n_next, &rw->topo_addr, rw->topo_addr_len);
        for (unsigned i = 0; i < CLUSTER_SLOTS; i++)
            rw->slots[i] = idx;
    } else if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *range = r->element[i];
            struct sockaddr_storage a;
            socklen_t alen;
            uint16_t idx;
            if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
                range->element[0]->type != REDIS_REPLY_INTEGER ||
                range->element[1]->type != REDIS_REPLY_INTEGER ||
                range->element[2]->type != REDIS_REPLY_ARRAY ||
                range->element[2]->elements < 2 ||
                !re_addr_parse(range->element[2]->element[0], range->element[2]->element[1],
                               &a, &alen))
                continue;
            idx = re_master_index(rw, next, &n_next, &a, alen);
            for (long long s = range->element[0]->integer;
                 s <= range->element[1]->integer && s < CLUSTER_SLOTS; s++)
                if (s >= 0)
                    rw->slots[s] = idx;
        }
    }
    for (unsigned i = 0; i < rw->n_masters; i++)
        if (rw->masters[i])
            re_master_retire(rw, rw->masters[i]);
    free(rw->masters);
    rw->masters = next;
    rw->n_masters = n_next;
    rw->map_ready = n_next > 0;
    re_count_masters(rw);
    log_msg(LOG_LEVEL_DEBUG, "worker %u: slot map read: %u masters", rw->w->id, n_next);
    re_resubscribe(rw, NULL);
}

/* Reads the slot map again (a master lost, a MOVED, a slot that moved):
 * from the seed, or else from any master that is up.  One asked for while
 * a read is on its way or too soon after one is not dropped: the tick
 * makes it (the event may be newer than the answer on its way, as
 * Redis's sunsubscribe when a slot's hand-over follows an ASK). */
static void re_topology_refresh(struct re_worker *rw)
{
    static const char *argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 5};
    struct redis_conn *rc = NULL;

    if (rw->stopping)
        return;
    if (rw->topo_busy || re_now_ms() - rw->topo_ms < RE_TOPO_MIN_MS) {
        rw->topo_again = true;
        return;
    }
    for (unsigned i = 0; !rc && i < rw->n_seeds; i++)
        if (rw->seeds[i].state == REDIS_UP)
            rc = &rw->seeds[i];
    for (unsigned i = 0; !rc && i < rw->n_masters; i++)
        if (rw->masters[i]->cmd.state == REDIS_UP)
            rc = &rw->masters[i]->cmd;
    if (!rc)
        return; /* the seed's reconnect asks again */
    rw->topo_addr = rc->addr;
    rw->topo_addr_len = rc->addr_len;
    if (redis_conn_command(rc, 2, argv, lens, re_topology_reply, rw) == 0) {
        rw->topo_busy = true;
        rw->topo_again = false;
    } else {
        rw->topo_again = true; /* a connection full of a slow server's work: the tick asks */
    }
}

static void re_seed_state(void *ctx, bool up)
{
    struct re_worker *rw = ctx;

    if (up) {
        rw->topo_ms = 0;
        re_topology_refresh(rw);
    }
}

static const struct redis_conn_ops re_seed_ops = {.state = re_seed_state};

/* ---- making topics live ----------------------------------------------- */

static void re_ignore(void *arg, redisReply *r)
{
    (void)arg;
    (void)r;
}

static int re_command(struct redis_conn *rc, int argc, const char **argv, const size_t *lens,
                      redis_reply_fn *fn, void *arg)
{
    return redis_conn_command(rc, argc, argv, lens, fn ? fn : re_ignore, arg);
}

/* The owner gives up making t live for now: its waiters are refused. */
static void re_join_fail(struct re_worker *rw, struct re_topic *t)
{
    struct ringws_server *srv = rw->w->srv;
    bool wake[srv->n_workers];

    memset(wake, 0, sizeof(wake));
    pthread_mutex_lock(&rw->e->lock);
    if (t->state == RT_JOINING && !t->st)
        t->state = RT_OFF;
    t->failed_ms = re_now_ms();
    re_answer_waiters(srv, t, false, wake);
    pthread_mutex_unlock(&rw->e->lock);
    re_wake(srv, wake);
}

static void re_subscribe(struct re_worker *rw, struct re_topic *t)
{
    char ch[RE_KEY_MAX];
    const char *argv[2] = {"SSUBSCRIBE", ch};
    size_t lens[2] = {10, re_key(ch, t->name, t->len, 'c')};

    if (t->master->sub.state != REDIS_UP)
        return; /* re_resubscribe, when it comes up */
    if (redis_conn_command(&t->master->sub, 2, argv, lens, NULL, NULL) == 0)
        t->subscribed = true;
}

/* Subscribes t's channel on the master the slot map names (again, when
 * it changed or the subscription was lost); a topic asked for while that
 * master is unreachable is refused, one live already waits for it. */
static void re_join_start(struct re_worker *rw, struct re_topic *t)
{
    struct re_master *m = re_master_of(rw, t->name, t->len);

    if (!m || m->cmd.state != REDIS_UP) {
        /* The slot map or the master's connection is on its way (a node
         * starting, a failover): their events, or the tick, come back
         * here; a command waits for them a while, then is refused. */
        if (t->state == RT_JOINING && re_now_ms() - t->join_ms >= RE_JOIN_WAIT_MS)
            re_join_fail(rw, t);
        re_topology_refresh(rw);
        return;
    }
    if (t->master != m)
        t->subscribed = false;
    t->master = m;
    if (!m->sub_started) {
        m->sub_started = true;
        if (redis_conn_start(&m->sub, rw->w->loop, (const struct sockaddr *)&m->addr,
                             m->addr_len, &rw->e->auth, &re_sub_ops, m) < 0) {
            m->sub_started = false;
            re_join_fail(rw, t);
            return;
        }
    }
    if (!t->subscribed)
        re_subscribe(rw, t);
}

/* The owner's topics of master m (NULL: of any) subscribe again where the
 * slot map now puts them: after a reconnect, a failover, a slot moved. */
static void re_resubscribe(struct re_worker *rw, struct re_master *m)
{
    struct redis_engine *e = rw->e;
    struct re_topic **todo = NULL;
    size_t n = 0, cap = 0;

    pthread_mutex_lock(&e->lock);
    for (uint32_t i = 0; e->buckets && i <= e->mask; i++)
        for (struct re_topic *t = e->buckets[i]; t; t = t->next) {
            /* One asked for but not taken up yet is the owner's next wake's. */
            if (t->owner != rw->w->id || t->state == RT_OFF || !t->st || (m && t->master != m))
                continue;
            if (n == cap) {
                struct re_topic **g = realloc(todo, (cap = cap ? cap * 2 : 16) * sizeof(*g));
                if (!g)
                    break;
                todo = g;
            }
            todo[n++] = t;
        }
    pthread_mutex_unlock(&e->lock);
    for (size_t i = 0; i < n; i++) {
        if (m)
            todo[i]->subscribed = false;
        if (m && m->sub.state != REDIS_UP)
            continue;
        if (!todo[i]->subscribed || re_master_of(rw, todo[i]->name, todo[i]->len) != todo[i]->master)
            re_join_start(rw, todo[i]);
        else if (todo[i]->state == RT_JOINING && !todo[i]->syncing &&
                 re_now_ms() - todo[i]->join_ms > RE_JOIN_WAIT_MS)
            re_join_fail(rw, todo[i]);
    }
    free(todo);
}


/* What a position read brings back. */
struct re_sync {
    struct re_worker *rw;
    struct re_topic *t;
    bool have_pos, failed;
    char epoch[SEQ_EPOCH_LEN];
    uint64_t last;
    /* re_sync_start's own, and one per queued command whose answer names
     * it: a command refused after another was queued (the connection's
     * bound, no memory) leaves it to that answer to free. */
    unsigned refs;
};

static void re_sync_put(struct re_sync *s)
{
    if (--s->refs == 0)
        free(s);
}

/* Microseconds of CLOCK_REALTIME, the clock every node shares. */
static uint64_t re_realtime_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

/* us: when it was published (0: unknown, now); its age counts for the
 * history's age limit and the publish histogram as on its node. */
static bool re_deliver(struct re_worker *rw, struct re_topic *t, const char *epoch,
                       uint64_t offset, bool binary, const char *p, size_t n, uint64_t us,
                       bool deliver)
{
    uint64_t now = us ? re_realtime_us() : 0;
    int r = pubsub_publish_placed(rw->w, t->name, t->len, p, n, binary, epoch, offset,
                                  now > us ? (now - us) * 1000u : 0, deliver);

    if (r < 0)
        return false;
    memcpy(t->epoch, epoch, SEQ_EPOCH_LEN);
    t->last = offset;
    t->known = true;
    return true;
}

static void re_live(struct re_worker *rw, struct re_topic *t);
static void re_sync_start(struct re_worker *rw, struct re_topic *t);

/* Whether the node's copy of the topic's history holds at offset the
 * message (binary, p, n): 1 the same, 0 another, -1 it holds none there. */
static int re_held_same(struct re_worker *rw, struct re_topic *t, uint64_t offset, bool binary,
                        const char *p, size_t n)
{
    struct ringws_server *srv = rw->w->srv;
    struct pub_msg *m;
    int r;

    seq_lock(srv);
    m = t->st ? seq_topic_message(t->st, offset) : NULL;
    seq_unlock(srv);
    if (!m)
        return -1;
    r = ((m->raw.bytes[0] & 0x0f) == WS_OP_BINARY) == binary &&
        m->raw.len - m->frame_hdr == n && !memcmp(m->raw.bytes + m->frame_hdr, p, n);
    pubsub_msg_unref(m);
    return r;
}

static void re_replaced(void *arg, redisReply *r)
{
    struct re_sync *s = arg;

    (void)r;
    s->t->syncing = false;
    re_sync_start(s->rw, s->t); /* whatever the answer: the position read again says */
    free(s);
}

/* Redis holds less than, or other than, what this node delivered in the
 * topic's epoch: writes it acknowledged were lost (a replica promoted
 * before it had them), and their offsets are, or will be, given again.
 * The epoch is replaced, so that no offset means two messages in one
 * epoch; the topic's messages are held meanwhile, and the next read of
 * its position delivers what is new under the new epoch. */
static void re_lost(struct re_worker *rw, struct re_topic *t)
{
    char km[RE_KEY_MAX], epoch[SEQ_EPOCH_LEN];
    size_t lm = re_key(km, t->name, t->len, 'm');
    const char *argv[6] = {"EVAL", re_replace_lua, "1", km, t->epoch, epoch};
    size_t lens[6] = {4, sizeof(re_replace_lua) - 1, 1, lm, SEQ_EPOCH_LEN, SEQ_EPOCH_LEN};
    struct re_sync *s;

    atomic_fetch_add(&rw->e->gaps, 1);
    log_msg(LOG_LEVEL_WARN, "worker %u: topic %.*s: Redis lost writes of epoch %.16s; "
            "replacing the epoch", rw->w->id, (int)t->len, t->name, t->epoch);
    t->state = RT_JOINING;
    memcpy(t->replaced, t->epoch, SEQ_EPOCH_LEN);
    t->has_replaced = true;
    re_epoch_draw(rw, epoch);
    if (t->syncing || !(s = calloc(1, sizeof(*s))))
        return; /* the read under way, or the tick, comes back */
    s->rw = rw;
    s->t = t;
    if (re_command(&t->master->cmd, 6, argv, lens, re_replaced, s) < 0) {
        free(s);
        return;
    }
    t->syncing = true;
}

/* A message of the topic's channel: delivered when it follows what was
 * delivered; a duplicate is dropped; a hole is filled from the stream
 * first; one that is malformed (not one of ours) is dropped. */
static void re_on_message(struct re_worker *rw, struct re_topic *t, const char *s, size_t n)
{
    struct engine_msg m;
    bool same;

    if (engine_msg_parse(s, n, &m) < 0)
        return;
    if (t->state != RT_LIVE) {
        struct re_early *e = malloc(sizeof(*e) + n);
        if (!e)
            return;
        e->next = NULL;
        e->len = n;
        memcpy(e->text, s, n);
        if (t->early_tail)
            t->early_tail->next = e;
        else
            t->early = e;
        t->early_tail = e;
        return;
    }
    if (t->has_replaced && !memcmp(m.epoch, t->replaced, SEQ_EPOCH_LEN))
        return; /* of the epoch this node replaced: delivered from the stream */
    same = t->known && !memcmp(m.epoch, t->epoch, SEQ_EPOCH_LEN);
    if (same && m.offset <= t->last) {
        /* A repeat, unless it is another message at that offset. */
        if (re_held_same(rw, t, m.offset, m.binary, m.payload, m.len) == 0) {
            re_lost(rw, t);
            re_on_message(rw, t, s, n); /* held */
        }
        return;
    }
    if ((same && m.offset != t->last + 1) || (!same && m.offset != 1)) {
        atomic_fetch_add(&rw->e->refills, 1);
        t->state = RT_JOINING; /* held from now on, delivered after the refill */
        re_on_message(rw, t, s, n);
        re_sync_start(rw, t);
        return;
    }
    if (re_deliver(rw, t, m.epoch, m.offset, m.binary, m.payload, m.len, m.published_us, true)) {
        uint64_t us = re_realtime_us();
        /* Clocks of other hosts may be ahead: such a sample says 0. */
        metrics_observe(&rw->w->stats.engine_lag,
                        us > m.published_us ? (us - m.published_us) * 1000u : 0);
    }
}

static uint64_t re_reply_u64(const redisReply *r)
{
    uint64_t v = 0;

    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer > 0 ? (uint64_t)r->integer : 0;
    if (r->type != REDIS_REPLY_STRING)
        return 0;
    for (size_t i = 0; i < r->len && r->str[i] >= '0' && r->str[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(r->str[i] - '0');
    return v;
}

static void re_sync_pos(void *arg, redisReply *r)
{
    struct re_sync *s = arg;

    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len != SEQ_EPOCH_LEN) {
        s->failed = true;
    } else {
        memcpy(s->epoch, r->element[0]->str, SEQ_EPOCH_LEN);
        s->last = re_reply_u64(r->element[1]);
        s->have_pos = true;
    }
    re_sync_put(s);
}

/* One stream entry: [ID, [field, value, ...]] with t, p; its offset is
 * the ID's first part. */
static bool re_entry(const redisReply *x, uint64_t *offset, bool *binary, const char **p,
                     size_t *n, uint64_t *us)
{
    const redisReply *f;

    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
        x->element[0]->type != REDIS_REPLY_STRING || x->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    *offset = re_reply_u64(x->element[0]);
    *binary = false;
    *p = NULL;
    *us = 0;
    f = x->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (k->len == 2 && !memcmp(k->str, "us", 2))
            *us = re_reply_u64(v);
        if (k->len != 1)
            continue;
        if (k->str[0] == 't')
            *binary = v->len == 1 && v->str[0] == 'b';
        else if (k->str[0] == 'p') {
            *p = v->str;
            *n = v->len;
        }
    }
    /* Written by the publish script from a checked message; a text that
     * is not UTF-8 is not one of ours. */
    return *offset && *p && (*binary || utf8_valid((const uint8_t *)*p, *n));
}

/* The topic's position and its stream's window (newest first) are read:
 * the node's sequencer is brought to them.  What follows what was
 * delivered is delivered (a refill); otherwise (a new topic, a new epoch,
 * a hole the stream no longer covers) the history starts anew from the
 * window. */
static void re_sync_done(struct re_sync *s, const redisReply *window)
{
    struct re_worker *rw = s->rw;
    struct re_topic *t = s->t;
    bool was_live = t->known, same = t->known && !memcmp(t->epoch, s->epoch, SEQ_EPOCH_LEN);
    size_t k = window && window->type == REDIS_REPLY_ARRAY ? window->elements : 0;
    uint64_t agreed = 0; /* after a new epoch: the offsets whose messages this node has */
    bool lost = same && s->last < t->last, disagree = false;

    /* What the stream holds at offsets this node delivered must be what
     * it delivered; after a new epoch, what it holds the same needs no
     * delivery again (an epoch replaced after lost writes keeps the rest
     * of the stream). */
    for (size_t i = k; i-- > 0 && !lost;) {
        uint64_t offset;
        bool binary;
        const char *p;
        size_t n = 0;
        uint64_t us;
        int held;
        if (!re_entry(window->element[i], &offset, &binary, &p, &n, &us) || !t->known ||
            offset > t->last)
            continue;
        held = re_held_same(rw, t, offset, binary, p, n);
        if (same)
            lost = held == 0;
        else if (held == 1 && !disagree)
            agreed = offset; /* the window's entries are consecutive */
        else
            disagree = true;
    }
    if (lost) {
        re_lost(rw, t);
        return;
    }

    for (size_t i = k; i-- > 0;) { /* oldest first */
        uint64_t offset;
        bool binary;
        const char *p;
        size_t n = 0;
        uint64_t us;
        if (!re_entry(window->element[i], &offset, &binary, &p, &n, &us))
            continue;
        if (same && offset <= t->last)
            continue;
        if (same && offset != t->last + 1) {
            atomic_fetch_add(&rw->e->gaps, 1); /* the stream no longer holds what was missed */
            same = false;
        }
        re_deliver(rw, t, s->epoch, offset, binary, p, n, us, was_live && offset > agreed);
        same = true;
    }
    if (!t->known || memcmp(t->epoch, s->epoch, SEQ_EPOCH_LEN) || t->last < s->last) {
        /* Nothing held to bring it there (no history, or the window is
         * older): the position alone. */
        if (was_live && t->known && t->last < s->last)
            atomic_fetch_add(&rw->e->gaps, 1);
        seq_lock(rw->w->srv);
        seq_topic_place(rw->w->srv, t->st, s->epoch, s->last);
        seq_unlock(rw->w->srv);
        memcpy(t->epoch, s->epoch, SEQ_EPOCH_LEN);
        t->last = s->last;
        t->known = true;
    }
    re_live(rw, t);
}

static void re_sync_window(void *arg, redisReply *r)
{
    struct re_sync *s = arg;
    struct re_topic *t = s->t;

    t->syncing = false;
    if (!r || s->failed || !s->have_pos || r->type == REDIS_REPLY_ERROR) {
        s->t->subscribed = false; /* subscribed again with the connection */
        if (!t->known)
            re_join_fail(s->rw, t);
        re_sync_put(s);
        return;
    }
    re_sync_done(s, r->type == REDIS_REPLY_ARRAY ? r : NULL);
    re_sync_put(s);
}

/* Reads where the topic stands: its epoch made if it has none (so that a
 * subscriber is told the epoch the first publish will use), the keys'
 * expiry set if they have none, the position, and the stream's window. */
static void re_sync_start(struct re_worker *rw, struct re_topic *t)
{
    const struct ringws_config *cfg = &rw->w->srv->cfg;
    char km[RE_KEY_MAX], ks[RE_KEY_MAX], epoch[SEQ_EPOCH_LEN], ms[24], count[16];
    size_t lm = re_key(km, t->name, t->len, 'm'), ls = re_key(ks, t->name, t->len, 's');
    uint32_t maxlen;
    uint64_t idle;
    struct re_sync *s;
    struct redis_conn *rc = &t->master->cmd;

    if (t->syncing || !t->st)
        return;
    re_topic_limits(cfg, t->name, t->len, &maxlen, NULL, &idle);
    if (!(s = calloc(1, sizeof(*s)))) {
        re_join_fail(rw, t);
        return;
    }
    s->rw = rw;
    s->t = t;
    s->refs = 1;
    re_epoch_draw(rw, epoch);
    snprintf(ms, sizeof(ms), "%" PRIu64, idle);
    snprintf(count, sizeof(count), "%u", maxlen ? maxlen : 1);
    {
        const char *a1[] = {"HSETNX", km, "epoch", epoch};
        size_t l1[] = {6, lm, 5, SEQ_EPOCH_LEN};
        const char *a2[] = {"PEXPIRE", km, ms, "NX"};
        size_t l2[] = {7, lm, strlen(ms), 2};
        const char *a3[] = {"HMGET", km, "epoch", "last"};
        size_t l3[] = {5, lm, 5, 4};
        const char *a4[] = {"XREVRANGE", ks, "+", "-", "COUNT", count};
        size_t l4[] = {9, ls, 1, 1, 5, strlen(count)};
        /* A history-less topic reads an empty window: the same shape.
         * All four or none as a rule (each argument is at most RE_KEY_MAX
         * bytes, 16 more for its RESP header, 16 for each command's); a
         * refusal after the third (no memory) leaves s to its answer. */
        int r = redis_conn_can_take(rc, 4, 4 * (16 + 6 * (RE_KEY_MAX + 16))) ? 0 : -EAGAIN;

        if (r == 0)
            r = re_command(rc, 4, a1, l1, NULL, NULL);
        if (r == 0)
            r = re_command(rc, 4, a2, l2, NULL, NULL);
        if (r == 0) { /* its answer's reference first: it may come at once */
            s->refs++;
            if ((r = re_command(rc, 4, a3, l3, re_sync_pos, s)) < 0)
                s->refs--;
        }
        if (r == 0) {
            s->refs++;
            if ((r = re_command(rc, 6, a4, l4, re_sync_window, s)) < 0)
                s->refs--;
        }
        if (r < 0) {
            /* The connection is down (what was queued fails with it), or
             * full of a slow server's work, or memory ran out. */
            re_sync_put(s);
            re_join_fail(rw, t);
            return;
        }
    }
    t->syncing = true;
    re_sync_put(s);
}

/* The topic is live: what came meanwhile is delivered in order, and the
 * waiters are answered. */
static void re_live(struct re_worker *rw, struct re_topic *t)
{
    struct ringws_server *srv = rw->w->srv;
    bool wake[srv->n_workers], first = false;

    memset(wake, 0, sizeof(wake));
    pthread_mutex_lock(&rw->e->lock);
    if (t->state != RT_LIVE) {
        first = true;
        t->state = RT_LIVE;
    }
    re_answer_waiters(srv, t, true, wake);
    pthread_mutex_unlock(&rw->e->lock);
    if (first)
        atomic_fetch_add(&rw->e->live, 1);
    while (t->early && t->state == RT_LIVE) {
        struct re_early *m = t->early;
        t->early = m->next;
        if (!t->early)
            t->early_tail = NULL;
        re_on_message(rw, t, m->text, m->len);
        free(m);
    }
    re_wake(srv, wake);
}

static struct re_topic *re_topic_of_channel(struct re_worker *rw, const redisReply *ch)
{
    struct redis_engine *e = rw->e;
    struct re_topic *t;
    const char *name;
    size_t len;

    if (ch->type != REDIS_REPLY_STRING || !engine_channel_topic(ch->str, ch->len, &name, &len))
        return NULL;
    pthread_mutex_lock(&e->lock);
    t = re_find(e, name, len, siphash24(e->key, name, len));
    pthread_mutex_unlock(&e->lock);
    /* Only its owner frees a topic, and only this worker's are read. */
    return t && t->owner == rw->w->id ? t : NULL;
}

/* What a subscription connection hears: its subscriptions confirmed, its
 * messages, and a channel dropped by Redis (its slot moved). */
static void re_sub_push(void *ctx, redisReply *r)
{
    struct re_master *m = ctx;
    struct re_worker *rw = m->rw;
    struct re_topic *t;
    const redisReply *kind;

    if (r->type == REDIS_REPLY_ERROR) {
        /* MOVED: an SSUBSCRIBE sent where the slot was, by a map read
         * from a node that had not heard of its hand-over yet.  The
         * topic would stay "subscribed" where nothing comes: the slot
         * follows the answer and the subscription moves now. */
        struct engine_redirect to;
        int i = re_redirect_target(rw, r->str, r->len, &to);
        re_topology_refresh(rw);
        if (i >= 0 && !to.ask) {
            rw->slots[to.slot] = (uint16_t)i;
            re_resubscribe(rw, NULL);
        }
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        (kind = r->element[0])->type != REDIS_REPLY_STRING ||
        !(t = re_topic_of_channel(rw, r->element[1])) || t->master != m)
        return;
    if (kind->len == 8 && !memcmp(kind->str, "smessage", 8) &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        re_on_message(rw, t, r->element[2]->str, r->element[2]->len);
    } else if (kind->len == 10 && !memcmp(kind->str, "ssubscribe", 10)) {
        if (t->state != RT_OFF)
            re_sync_start(rw, t);
    } else if (kind->len == 12 && !memcmp(kind->str, "sunsubscribe", 12) && t->subscribed) {
        t->subscribed = false; /* not ours: the slot moved */
        re_topology_refresh(rw);
    }
}

/* ---- the engine's calls ----------------------------------------------- */

static int re_prepare(struct worker *w, const char *list, size_t len, struct ringws_conn *c)
{
    struct ringws_server *srv = w->srv;
    struct redis_engine *e = re_of(srv);
    struct re_wait *wt = NULL;
    bool wake[srv->n_workers];
    const char *name;
    size_t pos = 0, n;
    uint64_t now = re_now_ms();
    int r = 0;

    memset(wake, 0, sizeof(wake));
    pthread_mutex_lock(&e->lock);
    while (r == 0 && topic_list_next(list, len, &pos, &name, &n) > 0) {
        struct re_topic *t = re_get(srv, name, n);
        struct re_waitref *ref;
        if (!t) {
            r = -ENOMEM;
            break;
        }
        if (t->state == RT_LIVE)
            continue;
        if (t->failed_ms && now - t->failed_ms < RE_RETRY_MS) {
            r = -EAGAIN;
            break;
        }
        if ((!wt && !(wt = calloc(1, sizeof(*wt)))) || !(ref = malloc(sizeof(*ref)))) {
            r = -ENOMEM;
            break;
        }
        ref->wt = wt;
        ref->next = t->waiters;
        t->waiters = ref;
        wt->pending++;
        if (re_want_live(srv, t))
            wake[t->owner] = true;
    }
    if (wt && r < 0) {
        /* Refused: the topics asked already forget the wait. */
        pos = 0;
        while (topic_list_next(list, len, &pos, &name, &n) > 0) {
            struct re_topic *t = re_find(e, name, n, siphash24(e->key, name, n));
            for (struct re_waitref **pp = t ? &t->waiters : NULL; pp && *pp;) {
                struct re_waitref *ref = *pp;
                if (ref->wt != wt) {
                    pp = &ref->next;
                    continue;
                }
                *pp = ref->next;
                free(ref);
            }
        }
        free(wt);
        wt = NULL;
    } else if (wt) {
        wt->c = c;
        wt->worker = w->id;
    }
    pthread_mutex_unlock(&e->lock);
    re_wake(srv, wake);
    return wt ? 1 : r;
}

static int re_join(struct worker *w, const char *name, size_t len, struct seq_topic *held,
                   struct seq_topic **stp, struct sub_start *ss)
{
    struct ringws_server *srv = w->srv;
    struct redis_engine *e = re_of(srv);
    struct re_topic *t = NULL;
    bool wake = false;
    int r;

    if (!held) {
        pthread_mutex_lock(&e->lock);
        t = re_get(srv, name, len);
        if (!t || (ss->answer && t->state != RT_LIVE)) {
            pthread_mutex_unlock(&e->lock);
            atomic_fetch_add(&e->refused, 1);
            return t ? -EAGAIN : -ENOMEM;
        }
        t->interest++;
        if (t->state == RT_OFF)
            wake = re_want_live(srv, t);
        pthread_mutex_unlock(&e->lock);
        if (wake)
            worker_wake(&srv->workers[t->owner]);
    }
    r = engine_local.join(w, name, len, held, stp, ss);
    if (r < 0 && !held) {
        pthread_mutex_lock(&e->lock);
        if (!--t->interest)
            t->idle_ms = re_now_ms();
        pthread_mutex_unlock(&e->lock);
    }
    return r;
}

static void re_leave(struct worker *w, struct seq_topic *st)
{
    struct ringws_server *srv = w->srv;
    struct redis_engine *e = re_of(srv);
    const char *name;
    size_t len;
    struct re_topic *t;

    seq_topic_name(st, &name, &len);
    pthread_mutex_lock(&e->lock);
    t = re_find(e, name, len, siphash24(e->key, name, len));
    if (t && t->interest && !--t->interest)
        t->idle_ms = re_now_ms();
    pthread_mutex_unlock(&e->lock);
    engine_local.leave(w, st);
}

/* A live topic's history is the node's copy of the stream's window. */
static int re_history(struct ringws_server *srv, const char *topic, size_t len,
                      const struct history_query *q, char **out, size_t *out_len)
{
    struct redis_engine *e = re_of(srv);
    struct re_topic *t;
    bool live;

    pthread_mutex_lock(&e->lock);
    t = re_find(e, topic, len, siphash24(e->key, topic, len));
    live = t && t->state == RT_LIVE;
    pthread_mutex_unlock(&e->lock);
    if (!live)
        return -EAGAIN;
    return history_json_build(srv, topic, len, q, out, out_len);
}

/* What a publish waits for. */
struct re_pubctx {
    struct re_worker *rw;
    struct pub_msg *m;
    pubsub_done_fn *done;
    void *arg;
    unsigned tries;
};

static int re_publish_send(struct re_pubctx *x, struct re_master *to);

static void re_publish_end(struct re_pubctx *x, int err, uint64_t nodes,
                           const struct pub_pos *pos)
{
    if (err < 0) {
        atomic_fetch_add(&x->rw->e->refused, 1);
        if (!x->done)
            atomic_fetch_add(&x->rw->e->refused_unreported, 1);
    }
    if (x->done)
        x->done(x->arg, err, nodes, pos);
    free(x->m);
    free(x);
}

/* The index in this worker's map of the master a redirection names, if it
 * knows it (a node new to the map is known after the map's next read,
 * which a redirection always asks for); -1 otherwise. */
static int re_redirect_target(struct re_worker *rw, const char *err, size_t n,
                              struct engine_redirect *to)
{
    struct sockaddr_storage a;
    socklen_t alen;

    if (engine_redirect_parse(err, n, to) < 0 || !re_addr_from(to->host, to->port, &a, &alen))
        return -1;
    for (unsigned i = 0; i < rw->n_masters; i++)
        if (re_addr_same(&rw->masters[i]->addr, rw->masters[i]->addr_len, &a, alen))
            return (int)i;
    return -1;
}

/* A publish sent where the slot no longer is (a slot migrated, a
 * failover the map has not seen yet) follows the redirection once or
 * twice; true when it was sent again. */
static bool re_publish_redirect(struct re_pubctx *x, const char *err, size_t n)
{
    struct re_worker *rw = x->rw;
    struct engine_redirect to;
    int i;

    if (strncmp(err, "MOVED ", 6) && strncmp(err, "ASK ", 4))
        return false;
    re_topology_refresh(rw);
    if (x->tries >= 3 || (i = re_redirect_target(rw, err, n, &to)) < 0 ||
        rw->masters[i]->cmd.state != REDIS_UP)
        return false;
    if (!to.ask) {
        rw->slots[to.slot] = (uint16_t)i;
        return re_publish_send(x, NULL) == 0;
    }
    {
        static const char *argv[1] = {"ASKING"};
        static const size_t lens[1] = {6};
        /* Both or neither: an ASKING alone would apply to whatever command
         * comes next.  Their size at most: 64 bytes for each argument's
         * header or small value, three keys, the payload. */
        size_t bytes = 15 * 64 + 3 * RE_KEY_MAX + x->m->raw.len - x->m->frame_hdr;
        return redis_conn_can_take(&rw->masters[i]->cmd, 2, bytes) &&
               re_command(&rw->masters[i]->cmd, 1, argv, lens, NULL, NULL) == 0 &&
               re_publish_send(x, rw->masters[i]) == 0;
    }
}

static void re_publish_reply(void *arg, redisReply *r)
{
    struct re_pubctx *x = arg;
    struct pub_pos pos;

    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8) && x->tries < 2) {
        static const char *argv[3] = {"SCRIPT", "LOAD", re_publish_lua};
        static const size_t lens[3] = {6, 4, sizeof(re_publish_lua) - 1};
        struct re_master *m = re_master_of(x->rw, pub_msg_topic(x->m), x->m->topic_len);
        if (m && re_command(&m->cmd, 3, argv, lens, NULL, NULL) == 0 && re_publish_send(x, NULL) == 0)
            return;
    }
    if (r && r->type == REDIS_REPLY_ERROR && re_publish_redirect(x, r->str, r->len))
        return;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len != SEQ_EPOCH_LEN ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_INTEGER) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_msg(LOG_LEVEL_DEBUG, "worker %u: publish: %s", x->rw->w->id, r->str);
        re_publish_end(x, -EAGAIN, 0, NULL);
        return;
    }
    memcpy(pos.epoch, r->element[0]->str, SEQ_EPOCH_LEN);
    pos.epoch[SEQ_EPOCH_LEN] = '\0';
    pos.offset = (uint64_t)r->element[1]->integer;
    re_publish_end(x, 0, (uint64_t)r->element[2]->integer, &pos);
}

/* One EVALSHA on the topic's master (to: another, after an ASK); 0, or
 * -EAGAIN when that master is not up. */
static int re_publish_send(struct re_pubctx *x, struct re_master *to)
{
    struct re_worker *rw = x->rw;
    const struct pub_msg *m = x->m;
    struct re_master *master = to ? to : re_master_of(rw, pub_msg_topic(m), m->topic_len);
    char km[RE_KEY_MAX], ks[RE_KEY_MAX], kc[RE_KEY_MAX], epoch[SEQ_EPOCH_LEN], maxlen_s[16],
        idle_s[24], us_s[24], ttl_s[16];
    struct timespec now;
    bool binary = (m->raw.bytes[0] & 0x0f) == WS_OP_BINARY;
    uint32_t maxlen, ttl;
    uint64_t idle;
    const char *argv[13];
    size_t lens[13];

    if (!master || master->cmd.state != REDIS_UP) {
        re_topology_refresh(rw);
        return -EAGAIN;
    }
    x->tries++;
    re_topic_limits(&rw->w->srv->cfg, pub_msg_topic(m), m->topic_len, &maxlen, &ttl, &idle);
    re_epoch_draw(rw, epoch);
    snprintf(maxlen_s, sizeof(maxlen_s), "%u", maxlen);
    snprintf(idle_s, sizeof(idle_s), "%" PRIu64, idle);
    snprintf(ttl_s, sizeof(ttl_s), "%u", ttl);
    clock_gettime(CLOCK_REALTIME, &now); /* the one clock nodes share */
    snprintf(us_s, sizeof(us_s), "%" PRIu64,
             (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u);
    argv[0] = "EVALSHA", lens[0] = 7;
    argv[1] = rw->e->sha, lens[1] = 2 * SHA_DIGEST_LENGTH;
    argv[2] = "3", lens[2] = 1;
    argv[3] = km, lens[3] = re_key(km, pub_msg_topic(m), m->topic_len, 'm');
    argv[4] = ks, lens[4] = re_key(ks, pub_msg_topic(m), m->topic_len, 's');
    argv[5] = kc, lens[5] = re_key(kc, pub_msg_topic(m), m->topic_len, 'c');
    argv[6] = epoch, lens[6] = SEQ_EPOCH_LEN;
    argv[7] = maxlen_s, lens[7] = strlen(maxlen_s);
    argv[8] = idle_s, lens[8] = strlen(idle_s);
    argv[9] = binary ? "b" : "t", lens[9] = 1;
    argv[10] = (const char *)m->raw.bytes + m->frame_hdr, lens[10] = m->raw.len - m->frame_hdr;
    argv[11] = us_s, lens[11] = strlen(us_s);
    argv[12] = ttl_s, lens[12] = strlen(ttl_s);
    return redis_conn_command(&master->cmd, 13, argv, lens, re_publish_reply, x) < 0 ? -EAGAIN
                                                                                     : 0;
}

/* Takes room for m in the list of publishes handed to rw (under the
 * lock): max_inbox_bytes bounds it as it bounds an inbox of the
 * in-process engine, an empty list takes any message. */
static bool re_pub_take(const struct ringws_server *srv, struct re_worker *rw,
                        const struct pub_msg *m)
{
    size_t cost = sizeof(struct re_pub) + pubsub_msg_cost(srv, m);

    if (rw->pubs_bytes && rw->pubs_bytes + cost > srv->cfg.max_inbox_bytes)
        return false;
    rw->pubs_bytes += cost;
    return true;
}

static int re_publish(struct ringws_server *srv, struct worker *self, struct pub_msg *m,
                      pubsub_done_fn *done, void *arg, uint64_t *recipients,
                      struct pub_pos *pos)
{
    struct redis_engine *e = re_of(srv);
    struct re_pubctx *x;
    int r;

    if (!self) {
        /* Handed to the topic's owner: one publisher's publishes to a
         * topic keep their order. */
        struct re_pub *p = malloc(sizeof(*p));
        unsigned owner = (unsigned)(siphash24(e->key, pub_msg_topic(m), m->topic_len) % srv->n_workers);
        struct re_worker *to;
        if (!p) {
            free(m);
            return -ENOMEM;
        }
        p->m = m;
        pthread_mutex_lock(&e->lock);
        if ((to = e->workers[owner]) && re_pub_take(srv, to, m)) {
            p->next = to->pubs;
            to->pubs = p;
        } else {
            to = NULL; /* not running, or its list full (a slow Redis): refused */
        }
        pthread_mutex_unlock(&e->lock);
        if (!to) {
            atomic_fetch_add(&e->refused, 1);
            free(p);
            free(m);
            return -EAGAIN;
        }
        worker_wake(&srv->workers[owner]);
        return 0;
    }
    if (!(x = calloc(1, sizeof(*x)))) {
        free(m);
        return -ENOMEM;
    }
    *x = (struct re_pubctx){self->engine, m, done, arg, 0};
    if ((r = re_publish_send(x, NULL)) < 0) {
        atomic_fetch_add(&e->refused, 1);
        free(m);
        free(x);
        return r;
    }
    (void)recipients;
    (void)pos;
    return done ? 1 : 0;
}

/* Frees the topic at *pp (nobody needs it: off, no interest, nothing
 * waiting), taking it out of its bucket. */
static void re_forget(struct redis_engine *e, struct re_topic **pp)
{
    struct re_topic *t = *pp;

    *pp = t->next;
    e->n--;
    while (t->early) {
        struct re_early *m = t->early;
        t->early = m->next;
        free(m);
    }
    free(t);
}

/* Ends the topic's channel on its master's subscription connection.  Taken
 * past the connection's bound (a slow Redis): refused, the node would
 * receive the channel until the connection is remade.  Without memory for
 * it, the connection is marked to be remade (re_tick, once the lock is
 * let go: the loss is reported under it), which subscribes again only the
 * topics still live. */
static void re_unsubscribe(struct re_topic *t)
{
    char ch[RE_KEY_MAX];
    const char *argv[2] = {"SUNSUBSCRIBE", ch};
    size_t lens[2] = {12, re_key(ch, t->name, t->len, 'c')};

    if (redis_conn_command_release(&t->master->sub, 2, argv, lens) == -ENOMEM)
        t->master->sub_remake = true;
}

/* The subscription connections an unsubscribe could not be queued on. */
static void re_remake_subs(struct re_worker *rw)
{
    char a[INET6_ADDRSTRLEN + 8];

    for (unsigned i = 0; i < rw->n_masters; i++) {
        struct re_master *m = rw->masters[i];
        if (!m || !m->sub_remake)
            continue;
        m->sub_remake = false;
        log_msg(LOG_LEVEL_WARN, "worker %u: redis %s: no memory to unsubscribe; reconnecting",
                rw->w->id, re_addr_text(&m->addr, a, sizeof(a)));
        redis_conn_fail(&m->sub);
    }
}

/* Every second on each worker: its channels without subscribers past
 * the grace are unsubscribed, topics nobody needs freed, the slot map read
 * again while a master is unreachable. */
static void re_tick(struct worker *w)
{
    struct re_worker *rw = w->engine;
    struct redis_engine *e = rw->e;
    uint64_t now = re_now_ms();
    bool down = !rw->map_ready;
    struct seq_topic *drop[64];
    unsigned n_drop = 0;

    for (unsigned i = 0; i < rw->n_masters; i++)
        down |= rw->masters[i]->cmd.state != REDIS_UP;
    if (down || rw->topo_again)
        re_topology_refresh(rw);
    re_resubscribe(rw, NULL); /* whatever an event left unsubscribed, or waits too long */
    pthread_mutex_lock(&e->lock);
    for (uint32_t i = 0; e->buckets && i <= e->mask; i++) {
        struct re_topic **pp = &e->buckets[i];
        while (*pp) {
            struct re_topic *t = *pp;
            bool idle = t->owner == w->id && !t->interest && !t->waiters && !t->syncing &&
                        !t->join_listed && now - t->idle_ms > RE_GRACE_MS;
            if (idle && t->state != RT_OFF && n_drop < sizeof(drop) / sizeof(drop[0])) {
                if (t->subscribed && t->master->sub.state == REDIS_UP)
                    re_unsubscribe(t);
                if (t->state == RT_LIVE)
                    atomic_fetch_sub(&e->live, 1);
                t->state = RT_OFF;
                t->subscribed = t->known = false;
                if (t->st)
                    drop[n_drop++] = t->st; /* let go after the lock */
                t->st = NULL;
            }
            if (idle && t->state == RT_OFF && (!t->failed_ms || now - t->failed_ms > RE_RETRY_MS)) {
                re_forget(e, pp);
                continue;
            }
            pp = &t->next;
        }
    }
    pthread_mutex_unlock(&e->lock);
    re_remake_subs(rw);
    for (unsigned i = 0; i < n_drop; i++)
        engine_local.leave(w, drop[i]);
}

/* Work other threads handed this worker: topics to make live, waits
 * answered, publishes of threads that are no worker. */
static void re_woken(struct worker *w)
{
    struct re_worker *rw = w->engine;
    struct redis_engine *e = rw->e;
    struct re_topic *joins;
    struct re_wait *ready;
    struct re_pub *pubs;

    pthread_mutex_lock(&e->lock);
    joins = rw->joins;
    ready = rw->ready;
    pubs = rw->pubs;
    rw->joins = NULL;
    rw->ready = NULL;
    rw->pubs = NULL;
    rw->pubs_bytes = 0;
    for (struct re_topic *t = joins; t; t = t->join_next)
        t->join_listed = false;
    pthread_mutex_unlock(&e->lock);
    while (joins) {
        struct re_topic *t = joins;
        joins = t->join_next;
        if (!t->st) {
            /* Held from now on: its epoch and last offset must outlive a
             * moment without subscribers. */
            seq_lock(w->srv);
            if ((t->st = seq_topic_get(w->srv, t->name, t->len)))
                seq_topic_hold(w->srv, t->st);
            seq_unlock(w->srv);
        }
        if (t->st)
            re_join_start(rw, t);
        else
            re_join_fail(rw, t);
    }
    while (ready) {
        struct re_wait *wt = ready;
        ready = wt->next;
        conn_engine_ready(wt->c, !wt->failed);
        free(wt);
    }
    while (pubs) { /* newest first: reversed into order */
        struct re_pub *p = pubs, *rev = NULL;
        while (p) {
            struct re_pub *next = p->next;
            p->next = rev;
            rev = p;
            p = next;
        }
        pubs = NULL;
        while (rev) {
            struct re_pub *q = rev;
            struct re_pubctx *x = calloc(1, sizeof(*x));
            rev = q->next;
            if (!x || (*x = (struct re_pubctx){rw, q->m, NULL, NULL, 0}, re_publish_send(x, NULL) < 0)) {
                atomic_fetch_add(&e->refused, 1);
                atomic_fetch_add(&e->refused_unreported, 1);
                free(q->m);
                free(x);
            }
            free(q);
        }
    }
}

static void re_worker_free(struct worker *w);

static int re_worker_start(struct worker *w)
{
    struct redis_engine *e = re_of(w->srv);
    struct re_worker *rw = calloc(1, sizeof(*rw));

    if (!rw || !(rw->seeds = calloc(e->n_seeds, sizeof(*rw->seeds)))) {
        free(rw);
        return -ENOMEM;
    }
    rw->w = w;
    rw->e = e;
    for (unsigned i = 0; i < CLUSTER_SLOTS; i++)
        rw->slots[i] = RE_NO_MASTER;
    w->engine = rw;
    /* Any seed that answers will do: one may be the master that died. */
    for (; rw->n_seeds < e->n_seeds; rw->n_seeds++) {
        unsigned s = rw->n_seeds;
        if (redis_conn_start(&rw->seeds[s], w->loop, (const struct sockaddr *)&e->seeds[s],
                             e->seed_len[s], &e->auth, &re_seed_ops, rw) < 0) {
            re_worker_free(w);
            return -ENOMEM;
        }
    }
    /* Topics asked for before this worker was there to own them (a
     * request on another worker that started first) are taken up now. */
    pthread_mutex_lock(&e->lock);
    e->workers[w->id] = rw;
    for (uint32_t i = 0; e->buckets && i <= e->mask; i++)
        for (struct re_topic *t = e->buckets[i]; t; t = t->next)
            if (t->owner == w->id && t->state == RT_JOINING && !t->join_listed) {
                t->join_listed = true;
                t->join_next = rw->joins;
                rw->joins = t;
            }
    pthread_mutex_unlock(&e->lock);
    worker_wake(w);
    return 0;
}

/* Everything awaited gets its answer (publishes refused, waits failed). */
static void re_worker_stop(struct worker *w)
{
    struct re_worker *rw = w->engine;

    if (!rw)
        return;
    rw->stopping = true;
    for (unsigned i = 0; i < rw->n_seeds; i++)
        redis_conn_stop(&rw->seeds[i]);
    for (unsigned i = 0; i < rw->n_masters; i++) {
        redis_conn_stop(&rw->masters[i]->cmd);
        if (rw->masters[i]->sub_started)
            redis_conn_stop(&rw->masters[i]->sub);
    }
    re_woken(w);
}

static void re_master_free(struct re_master *m)
{
    redis_conn_free(&m->cmd);
    if (m->sub_started)
        redis_conn_free(&m->sub);
    free(m);
}

static void re_worker_free(struct worker *w)
{
    struct re_worker *rw = w->engine;
    struct redis_engine *e = re_of(w->srv);

    if (!rw)
        return;
    pthread_mutex_lock(&e->lock);
    e->workers[w->id] = NULL;
    while (rw->pubs) {
        struct re_pub *p = rw->pubs;
        rw->pubs = p->next;
        free(p->m);
        free(p);
    }
    while (rw->ready) {
        struct re_wait *wt = rw->ready;
        rw->ready = wt->next;
        free(wt);
    }
    pthread_mutex_unlock(&e->lock);
    for (unsigned i = 0; i < rw->n_seeds; i++)
        redis_conn_free(&rw->seeds[i]);
    free(rw->seeds);
    for (unsigned i = 0; i < rw->n_masters; i++)
        re_master_free(rw->masters[i]);
    for (unsigned i = 0; i < rw->n_retired; i++)
        re_master_free(rw->retired[i]);
    free(rw->masters);
    free(rw->retired);
    free(rw);
    w->engine = NULL;
}

static void re_metrics(struct ringws_server *srv, struct text_buf *o)
{
    struct redis_engine *e = re_of(srv);
    unsigned up = 0, masters = 0;

    pthread_mutex_lock(&e->lock);
    for (unsigned i = 0; i < srv->n_workers; i++) {
        struct re_worker *rw = e->workers[i];
        if (rw) {
            masters += atomic_load(&rw->masters_known);
            up += atomic_load(&rw->masters_up);
        }
    }
    pthread_mutex_unlock(&e->lock);
    metrics_write_family(o, "ringws_engine_connections", "gauge");
    metrics_write_sample(o, "ringws_engine_connections", "state=\"up\"", up);
    metrics_write_sample(o, "ringws_engine_connections", "state=\"down\"", masters - up);
    metrics_write_family(o, "ringws_engine_reconnects_total", "counter");
    metrics_write_sample(o, "ringws_engine_reconnects_total", NULL,
                         atomic_load(&e->reconnects_seen));
    metrics_write_family(o, "ringws_engine_channels", "gauge");
    metrics_write_sample(o, "ringws_engine_channels", NULL, atomic_load(&e->live));
    metrics_write_family(o, "ringws_engine_refills_total", "counter");
    metrics_write_sample(o, "ringws_engine_refills_total", NULL, atomic_load(&e->refills));
    metrics_write_family(o, "ringws_engine_gaps_total", "counter");
    metrics_write_sample(o, "ringws_engine_gaps_total", NULL, atomic_load(&e->gaps));
    metrics_write_family(o, "ringws_engine_refused_total", "counter");
    metrics_write_sample(o, "ringws_engine_refused_total", NULL, atomic_load(&e->refused));
    metrics_write_family(o, "ringws_engine_refused_unreported_total", "counter");
    metrics_write_sample(o, "ringws_engine_refused_unreported_total", NULL,
                         atomic_load(&e->refused_unreported));
    metrics_write_histogram(o, srv, "ringws_engine_lag_seconds",
                            offsetof(struct worker_stats, engine_lag));
}

static void re_auth_free(struct redis_engine *e);

static void re_destroy(struct ringws_server *srv)
{
    struct redis_engine *e = re_of(srv);

    if (!e)
        return;
    for (uint32_t i = 0; e->buckets && i <= e->mask; i++)
        while (e->buckets[i]) {
            struct re_topic *t = e->buckets[i];
            while (t->waiters) {
                struct re_waitref *ref = t->waiters;
                t->waiters = ref->next;
                if (!--ref->wt->pending)
                    free(ref->wt);
                free(ref);
            }
            re_forget(e, &e->buckets[i]);
        }
    free(e->buckets);
    free(e->workers);
    re_auth_free(e);
    pthread_mutex_destroy(&e->lock);
    free(e);
    srv->engine_state = NULL;
}

static const struct engine_ops engine_redis = {
    .name = "redis",
    .publish = re_publish,
    .join = re_join,
    .leave = re_leave,
    .history = re_history,
    .sweep = seq_sweep,
    .prepare = re_prepare,
    .worker_start = re_worker_start,
    .worker_stop = re_worker_stop,
    .worker_free = re_worker_free,
    .woken = re_woken,
    .tick = re_tick,
    .metrics = re_metrics,
    .destroy = re_destroy,
};

/* "[USER]:PASSWORD" (what precedes '@' in the URL): AUTH on every
 * connection.  No decoding: a password holding '@' or ',' is not written
 * in a URL. */
static int re_auth_parse(struct redis_engine *e, const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);

    if (!colon || colon + 1 == p + n)
        return -EINVAL;
    if (colon > p && !(e->user = strndup(p, (size_t)(colon - p))))
        return -ENOMEM;
    if (!(e->password = strndup(colon + 1, (size_t)(p + n - colon - 1))))
        return -ENOMEM;
    e->auth = (struct redis_auth){e->user, e->password};
    return 0;
}

static void re_auth_free(struct redis_engine *e)
{
    free(e->user);
    if (e->password) /* not left in freed memory */
        explicit_bzero(e->password, strlen(e->password));
    free(e->password);
}

/* "HOST:PORT" (HOST may be [v6]) resolved into e's seeds. */
static int re_seed_add(struct redis_engine *e, const char *s, size_t n)
{
    char host[256], port[8];
    const char *colon = memrchr(s, ':', n);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    size_t hl, pl;

    if (!colon || e->n_seeds == RE_MAX_SEEDS)
        return -EINVAL;
    hl = (size_t)(colon - s);
    pl = n - hl - 1;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (!hl || hl >= sizeof(host) || !pl || pl >= sizeof(port))
        return -EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EINVAL;
    memcpy(&e->seeds[e->n_seeds], res->ai_addr, res->ai_addrlen);
    e->seed_len[e->n_seeds++] = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int engine_redis_create(struct ringws_server *srv, const char *url)
{
    static const char scheme[] = "redis://";
    struct redis_engine *e;
    const char *p, *end;
    uint8_t digest[SHA_DIGEST_LENGTH];

    if (strncmp(url, scheme, sizeof(scheme) - 1)) {
        log_msg(LOG_LEVEL_ERROR, "engine: not redis://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]");
        return -EINVAL;
    }
    if (!(e = calloc(1, sizeof(*e))))
        return -ENOMEM;
    p = url + sizeof(scheme) - 1;
    if ((end = strrchr(p, '@')) && re_auth_parse(e, p, (size_t)(end - p)) < 0) {
        log_msg(LOG_LEVEL_ERROR, "engine: malformed [USER]:PASSWORD@");
        re_auth_free(e);
        free(e);
        return -EINVAL;
    }
    for (p = end ? end + 1 : p; *p; p = *end ? end + 1 : end) {
        end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        if (re_seed_add(e, p, (size_t)(end - p)) < 0) {
            log_msg(LOG_LEVEL_ERROR, "engine: %.*s: not a reachable HOST:PORT", (int)(end - p),
                    p);
            re_auth_free(e);
            free(e);
            return -EINVAL;
        }
    }
    if (!e->n_seeds) {
        log_msg(LOG_LEVEL_ERROR, "engine: no HOST:PORT");
        re_auth_free(e);
        free(e);
        return -EINVAL;
    }
    if (getrandom(e->key, sizeof(e->key), 0) != (ssize_t)sizeof(e->key) ||
        !(e->workers = calloc(srv->n_workers, sizeof(*e->workers)))) {
        re_auth_free(e);
        free(e);
        return -ENOMEM;
    }
    SHA1((const uint8_t *)re_publish_lua, sizeof(re_publish_lua) - 1, digest);
    for (unsigned i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(e->sha_hex + 2 * i, 3, "%02x", digest[i]);
    e->sha = e->sha_hex;
    pthread_mutex_init(&e->lock, NULL);
    srv->engine_state = e;
    srv->engine = &engine_redis;
    return 0;
}
