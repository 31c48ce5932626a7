/* topic_index.c - the topic hash table: lookup, creation, subscriber
 * arrays, and the resizing rules that let a million topics come and go
 * without leaving memory behind. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "topic_index.h"

/* A subscriber array above this size is halved when three quarters empty. */
#define TOPIC_SUBS_KEEP 64u

void topic_index_init(struct topic_index *ix, const uint64_t key[2])
{
    *ix = (struct topic_index){.key = {key[0], key[1]}};
}

uint64_t topic_index_hash(const struct topic_index *ix, const char *name, size_t len)
{
    return siphash24(ix->key, name, len);
}

uint32_t topic_index_buckets(const struct topic_index *ix)
{
    return ix->buckets ? ix->mask + 1 : 0;
}

struct topic *topic_index_find(const struct topic_index *ix, const char *name, size_t len,
                               uint64_t hash)
{
    struct topic *t;

    if (!ix->buckets)
        return NULL;
    for (t = ix->buckets[hash & ix->mask]; t; t = t->next)
        if (t->hash == hash && t->len == len && !memcmp(t->name, name, len))
            return t;
    return NULL;
}

/* Rehashes every topic into n buckets (a power of two; 0 frees the array,
 * for an index without topics). */
static int topic_index_resize(struct topic_index *ix, uint32_t n)
{
    uint32_t old = topic_index_buckets(ix);
    struct topic **b = NULL;

    if (n && !(b = calloc(n, sizeof(*b))))
        return -ENOMEM;
    for (uint32_t i = 0; i < old; i++) {
        struct topic *t = ix->buckets[i];
        while (t) {
            struct topic *next = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
            t = next;
        }
    }
    free(ix->buckets);
    ix->buckets = b;
    ix->mask = n ? n - 1 : 0;
    return 0;
}

/* A halved index is a quarter full and grows again only above one topic
 * per bucket.  Without memory for the smaller array the index stays as it
 * is. */
static void topic_index_shrink(struct topic_index *ix)
{
    uint32_t size = topic_index_buckets(ix);

    if (!ix->n)
        topic_index_resize(ix, 0);
    else if (size > TOPIC_INDEX_MIN_BUCKETS && ix->n < size / 8)
        topic_index_resize(ix, size / 2);
}

struct topic *topic_index_create(struct topic_index *ix, const char *name, size_t len,
                                 uint64_t hash)
{
    uint32_t size = topic_index_buckets(ix);
    struct topic *t;

    if ((!size || ix->n >= size) &&
        topic_index_resize(ix, size ? size * 2 : TOPIC_INDEX_MIN_BUCKETS) < 0)
        return NULL;
    t = calloc(1, sizeof(*t) + len);
    if (!t)
        return NULL;
    t->hash = hash;
    t->len = (uint16_t)len;
    memcpy(t->name, name, len);
    t->next = ix->buckets[hash & ix->mask];
    ix->buckets[hash & ix->mask] = t;
    ix->n++;
    return t;
}

static void topic_index_destroy(struct topic_index *ix, struct topic *t)
{
    struct topic **pp = &ix->buckets[t->hash & ix->mask];

    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    ix->n--;
    free(t->subs);
    free(t);
    topic_index_shrink(ix);
}

int topic_index_add_sub(struct topic_index *ix, struct topic *t, void *sub)
{
    if (t->n_subs == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 4;
        void **s = realloc(t->subs, cap * sizeof(*s));
        if (!s) {
            if (!t->n_subs)
                topic_index_destroy(ix, t);
            return -ENOMEM;
        }
        t->subs = s;
        t->cap = cap;
    }
    t->subs[t->n_subs] = sub;
    return (int)t->n_subs++;
}

void *topic_index_remove_sub(struct topic_index *ix, struct topic *t, uint32_t idx)
{
    void *moved = t->subs[--t->n_subs];

    if (!t->n_subs) {
        topic_index_destroy(ix, t);
        return NULL;
    }
    if (idx != t->n_subs)
        t->subs[idx] = moved;
    else
        moved = NULL;
    if (t->cap > TOPIC_SUBS_KEEP && t->n_subs < t->cap / 4) {
        /* Give memory back after a mass unsubscribe. */
        void **s = realloc(t->subs, (t->cap / 2) * sizeof(*s));
        if (s) {
            t->subs = s;
            t->cap /= 2;
        }
    }
    return moved;
}
