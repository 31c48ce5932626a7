/* test_topic_index.c - the topic index against its contract and against a
 * plain model of it.
 *
 * Why it exists: every publish finds its subscribers here and every
 * unsubscribe relies on the positions it reports; a stale position would
 * unsubscribe the wrong connection, and a resizing rule gone wrong would
 * keep memory after topics left or rebuild the table at every edge.  The
 * model below is a list of topics with their subscribers and the bucket
 * count computed from the documented rule; random operations must leave
 * the index and the model alike, positions included. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guard.h"
#include "ringws.h"
#include "topic_index.h"

static const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};

/* Subscribers are opaque to the index: small numbers serve. */
static void *sub_ptr(unsigned i)
{
    return (void *)(uintptr_t)(i + 1);
}

static struct topic *ix_subscribe(struct topic_index *ix, const char *name, size_t len,
                                  uint64_t hash, unsigned sub, int *idx)
{
    struct topic *t = topic_index_find(ix, name, len, hash);

    if (!t)
        t = topic_index_create(ix, name, len, hash);
    if (!t) {
        *idx = -ENOMEM;
        return NULL;
    }
    *idx = topic_index_add_sub(ix, t, sub_ptr(sub));
    return t;
}

static void test_basic(void)
{
    struct topic_index ix;
    struct topic *t;
    uint64_t h;
    int idx;

    topic_index_init(&ix, key);
    CHECK(topic_index_buckets(&ix) == 0);
    h = topic_index_hash(&ix, "news", 4);
    CHECK(h == topic_index_hash(&ix, "news", 4));
    CHECK(h != topic_index_hash(&ix, "newt", 4));
    CHECK(topic_index_find(&ix, "news", 4, h) == NULL);

    t = ix_subscribe(&ix, "news", 4, h, 0, &idx);
    CHECK(t && idx == 0);
    CHECK(ix.n == 1 && topic_index_buckets(&ix) == TOPIC_INDEX_MIN_BUCKETS);
    CHECK(topic_index_find(&ix, "news", 4, h) == t);
    CHECK(t->len == 4 && !memcmp(t->name, "news", 4) && t->tag == 0);
    CHECK(topic_index_find(&ix, "new", 3, topic_index_hash(&ix, "new", 3)) == NULL);
    CHECK(ix_subscribe(&ix, "news", 4, h, 1, &idx) == t && idx == 1);
    CHECK(t->n_subs == 2 && t->subs[0] == sub_ptr(0) && t->subs[1] == sub_ptr(1));

    /* Removing the last position moves nobody; removing the first moves the
     * last into it; removing the only one removes the topic. */
    CHECK(ix_subscribe(&ix, "news", 4, h, 2, &idx) == t && idx == 2);
    CHECK(topic_index_remove_sub(&ix, t, 2) == NULL);
    CHECK(topic_index_remove_sub(&ix, t, 0) == sub_ptr(1));
    CHECK(t->n_subs == 1 && t->subs[0] == sub_ptr(1));
    CHECK(topic_index_remove_sub(&ix, t, 0) == NULL);
    CHECK(ix.n == 0 && topic_index_buckets(&ix) == 0 && ix.buckets == NULL);
    CHECK(topic_index_find(&ix, "news", 4, h) == NULL);

    /* Another key hashes differently (with overwhelming likelihood). */
    {
        const uint64_t other[2] = {key[0] ^ 1, key[1]};
        struct topic_index iy;
        topic_index_init(&iy, other);
        CHECK(topic_index_hash(&iy, "news", 4) != h);
    }
}

/* Names of every length up to the largest, each ending on the last
 * readable byte: a read past a name's end crashes. */
static void test_long_names(void)
{
    struct topic_index ix;
    char names[RINGWS_MAX_TOPIC + 1][RINGWS_MAX_TOPIC];
    struct topic *t[RINGWS_MAX_TOPIC + 1];
    int idx;

    topic_index_init(&ix, key);
    for (size_t n = 1; n <= RINGWS_MAX_TOPIC; n++) {
        memset(names[n], 'a', n); /* each a prefix of the next */
        t[n] = ix_subscribe(&ix, names[n], n, topic_index_hash(&ix, names[n], n), 0, &idx);
        CHECK(t[n] && idx == 0);
    }
    CHECK(ix.n == RINGWS_MAX_TOPIC);
    for (size_t n = 1; n <= RINGWS_MAX_TOPIC; n++) {
        const char *p = (const char *)guard_place((const uint8_t *)names[n], n);
        CHECKF(topic_index_find(&ix, p, n, topic_index_hash(&ix, p, n)) == t[n], "%zu", n);
        CHECK(t[n]->len == n && !memcmp(t[n]->name, names[n], n));
    }
    for (size_t n = 1; n <= RINGWS_MAX_TOPIC; n++)
        CHECK(topic_index_remove_sub(&ix, t[n], 0) == NULL);
    CHECK(ix.n == 0 && ix.buckets == NULL);
}

/* Topics in one bucket, and topics with one hash: found by name, removed
 * from the middle of a chain without losing the rest. */
static void test_collisions(void)
{
    struct topic_index ix;
    /* Prefixes of each other among both groups: length counts too. */
    char name[8][4] = {"a", "aa", "aaa", "b", "ab", "ba", "abc", "bb"};
    struct topic *t[8];
    int idx;

    topic_index_init(&ix, key);
    for (unsigned i = 0; i < 8; i++) {
        /* 0..3: the same hash; 4..7: other hashes of the same bucket. */
        uint64_t h = i < 4 ? 5 : 5 + (uint64_t)TOPIC_INDEX_MIN_BUCKETS * (i - 3);
        t[i] = ix_subscribe(&ix, name[i], strlen(name[i]), h, i, &idx);
        CHECK(t[i] && idx == 0);
    }
    CHECK(topic_index_buckets(&ix) == TOPIC_INDEX_MIN_BUCKETS);
    for (unsigned i = 0; i < 8; i++) {
        uint64_t h = i < 4 ? 5 : 5 + (uint64_t)TOPIC_INDEX_MIN_BUCKETS * (i - 3);
        CHECK(topic_index_find(&ix, name[i], strlen(name[i]), h) == t[i]);
        CHECK(topic_index_find(&ix, name[i], strlen(name[i]), h ^ (1ull << 40)) == NULL);
    }
    CHECK(topic_index_find(&ix, "e", 1, 5) == NULL);
    CHECK(topic_index_find(&ix, "aaaa", 4, 5) == NULL);
    CHECK(topic_index_remove_sub(&ix, t[1], 0) == NULL);
    CHECK(topic_index_remove_sub(&ix, t[5], 0) == NULL);
    CHECK(topic_index_find(&ix, "aa", 2, 5) == NULL);
    CHECK(topic_index_find(&ix, "ba", 2, 5 + 2 * TOPIC_INDEX_MIN_BUCKETS) == NULL);
    for (unsigned i = 0; i < 8; i++)
        if (i != 1 && i != 5) {
            uint64_t h = i < 4 ? 5 : 5 + (uint64_t)TOPIC_INDEX_MIN_BUCKETS * (i - 3);
            CHECK(topic_index_find(&ix, name[i], strlen(name[i]), h) == t[i]);
            CHECK(topic_index_remove_sub(&ix, t[i], 0) == NULL);
        }
    CHECK(ix.n == 0 && ix.buckets == NULL);
}

/* The documented rule: created topics double the table when there are as
 * many topics as buckets; removals halve it below one topic per eight
 * buckets (never under the minimum) and free it with the last topic. */
static uint32_t rule_after_create(uint32_t size, uint32_t n_before)
{
    if (!size)
        return TOPIC_INDEX_MIN_BUCKETS;
    return n_before >= size ? size * 2 : size;
}

static uint32_t rule_after_remove(uint32_t size, uint32_t n_after)
{
    if (!n_after)
        return 0;
    return size > TOPIC_INDEX_MIN_BUCKETS && n_after < size / 8 ? size / 2 : size;
}

static void test_grow_shrink(void)
{
    enum { N = 20000 };
    struct topic_index ix;
    struct topic **t = calloc(N, sizeof(*t));
    uint32_t size = 0, peak;
    int idx;

    topic_index_init(&ix, key);
    for (unsigned i = 0; i < N; i++) {
        char name[16];
        size_t n = (size_t)snprintf(name, sizeof(name), "t%u", i);
        size = rule_after_create(size, i);
        t[i] = ix_subscribe(&ix, name, n, topic_index_hash(&ix, name, n), i, &idx);
        CHECK(t[i] && idx == 0);
        CHECKF(topic_index_buckets(&ix) == size, "%u topics: %u buckets, rule says %u", i + 1,
               topic_index_buckets(&ix), size);
    }
    peak = size;
    CHECK(peak == 32768); /* 20000 topics: the first power of two not below */
    for (unsigned i = 0; i < N; i++) {
        char name[16];
        size_t n = (size_t)snprintf(name, sizeof(name), "t%u", i);
        CHECK(topic_index_find(&ix, name, n, topic_index_hash(&ix, name, n)) == t[i]);
    }
    /* Remove from the middle outwards, so that the survivors are found
     * after each rehash. */
    for (unsigned k = 0; k < N; k++) {
        unsigned i = (k + N / 2) % N;
        char name[16];
        size_t n = (size_t)snprintf(name, sizeof(name), "t%u", (i + 1) % N);
        CHECK(topic_index_remove_sub(&ix, t[i], 0) == NULL);
        size = rule_after_remove(size, N - 1 - k);
        CHECKF(topic_index_buckets(&ix) == size, "%u topics: %u buckets, rule says %u",
               N - 1 - k, topic_index_buckets(&ix), size);
        if (k + 1 < N)
            CHECK(topic_index_find(&ix, name, n, topic_index_hash(&ix, name, n)) ==
                  t[(i + 1) % N]);
        if (k == N - 2) /* one topic left: shrunk back to the minimum */
            CHECK(topic_index_buckets(&ix) == TOPIC_INDEX_MIN_BUCKETS);
    }
    CHECK(ix.n == 0 && ix.buckets == NULL);
    free(t);
}

/* A topic's subscriber array gives memory back after a mass unsubscribe. */
static void test_sub_array_shrinks(void)
{
    struct topic_index ix;
    struct topic *t = NULL;
    int idx;

    topic_index_init(&ix, key);
    for (unsigned i = 0; i < 1000; i++)
        t = ix_subscribe(&ix, "big", 3, 1, i, &idx);
    CHECK(t && t->n_subs == 1000 && t->cap == 1024);
    while (t->n_subs > 10)
        topic_index_remove_sub(&ix, t, t->n_subs - 1);
    CHECK(t->cap == 64);
    while (t->n_subs > 1)
        topic_index_remove_sub(&ix, t, 0);
    CHECK(topic_index_remove_sub(&ix, t, 0) == NULL && ix.buckets == NULL);
}

/* ---- randomized differential check ------------------------------------ */

enum { M_TOPICS = 300, M_SUBS = 40 };

struct model {
    char name[M_TOPICS][RINGWS_MAX_TOPIC];
    size_t len[M_TOPICS];
    uint64_t hash[M_TOPICS];
    int pos[M_TOPICS][M_SUBS]; /* position of sub in the topic, -1: none */
    unsigned count[M_TOPICS];
    uint32_t n_topics, size;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void model_init(struct model *m, const struct topic_index *ix)
{
    memset(m, 0, sizeof(*m));
    memset(m->pos, -1, sizeof(m->pos));
    for (unsigned k = 0; k < M_TOPICS; k++) {
        m->len[k] = 2 + rng(k % 4 ? 12 : RINGWS_MAX_TOPIC - 1);
        for (size_t i = 0; i < m->len[k]; i++)
            m->name[k][i] = (char)('a' + rng(3)); /* few letters: many shared prefixes */
        m->name[k][0] = (char)('A' + k % 26);
        m->name[k][m->len[k] - 1] = (char)('0' + k / 26); /* distinct */
        /* A third share one hash: chains of different names. */
        m->hash[k] = k % 3 ? topic_index_hash(ix, m->name[k], m->len[k]) : 42;
    }
}

/* Every topic of the model is found with its subscribers where the model
 * says; the others are not found; the table has the rule's size. */
static bool model_agrees(const struct model *m, const struct topic_index *ix)
{
    bool ok = ix->n == m->n_topics && topic_index_buckets(ix) == m->size;

    for (unsigned k = 0; k < M_TOPICS; k++) {
        struct topic *t = topic_index_find(ix, m->name[k], m->len[k], m->hash[k]);
        if (!m->count[k]) {
            ok &= t == NULL;
            continue;
        }
        ok &= t && t->n_subs == m->count[k];
        for (unsigned s = 0; t && s < M_SUBS; s++)
            if (m->pos[k][s] >= 0)
                ok &= t->subs[m->pos[k][s]] == sub_ptr(s);
    }
    return ok;
}

static void model_subscribe(struct model *m, struct topic_index *ix, unsigned k, unsigned s)
{
    struct topic *t;
    int idx;

    if (m->pos[k][s] >= 0)
        return; /* one subscription per pair, as pub/sub keeps it */
    if (!m->count[k]) {
        m->size = rule_after_create(m->size, m->n_topics);
        m->n_topics++;
    }
    t = ix_subscribe(ix, m->name[k], m->len[k], m->hash[k], s, &idx);
    CHECK(t && idx == (int)m->count[k]);
    m->pos[k][s] = idx;
    m->count[k]++;
}

static void model_unsubscribe(struct model *m, struct topic_index *ix, unsigned k, unsigned s)
{
    struct topic *t = topic_index_find(ix, m->name[k], m->len[k], m->hash[k]);
    int idx = m->pos[k][s];
    uintptr_t moved;

    if (idx < 0)
        return;
    moved = (uintptr_t)topic_index_remove_sub(ix, t, (uint32_t)idx);
    m->pos[k][s] = -1;
    m->count[k]--;
    if (moved) {
        /* The last one took the freed position. */
        CHECK(m->pos[k][moved - 1] == (int)m->count[k]);
        m->pos[k][moved - 1] = idx;
    } else if (m->count[k]) {
        CHECK(idx == (int)m->count[k]); /* nobody moved: it was the last */
    }
    if (!m->count[k]) {
        m->n_topics--;
        m->size = rule_after_remove(m->size, m->n_topics);
    }
}

static void test_differential(void)
{
    static struct model m;
    struct topic_index ix;
    unsigned disagreements = 0;

    topic_index_init(&ix, key);
    model_init(&m, &ix);
    for (unsigned step = 0; step < 200000; step++) {
        /* Phases that mostly add, then mostly remove, so that the table
         * grows and shrinks through several sizes. */
        bool adding = (step / 20000) % 2 == 0;
        unsigned k = rng(M_TOPICS), s = rng(M_SUBS);
        if (rng(10) < (adding ? 7u : 3u))
            model_subscribe(&m, &ix, k, s);
        else
            model_unsubscribe(&m, &ix, k, s);
        if (step % 97 == 0 || step > 199000)
            disagreements += !model_agrees(&m, &ix);
    }
    CHECKF(disagreements == 0, "%u disagreements", disagreements);
    for (unsigned k = 0; k < M_TOPICS; k++)
        for (unsigned s = 0; s < M_SUBS; s++)
            model_unsubscribe(&m, &ix, k, s);
    CHECK(model_agrees(&m, &ix) && ix.buckets == NULL);
}

int main(void)
{
    guard_setup(RINGWS_MAX_TOPIC);
    test_basic();
    test_long_names();
    test_collisions();
    test_grow_shrink();
    test_sub_array_shrinks();
    test_differential();
    return check_done("topic_index");
}
