/* topic_index.h - a set of named topics, each with an array of opaque
 * subscribers: a chained hash table under a keyed hash.
 *
 * Why it exists: every worker finds a topic's subscribers once per publish
 * and keeps the index as topics come and go by the million; the table and
 * its resizing rules are the same whoever the subscribers are, so they are
 * kept apart from connections and tested alone.  Pure: no I/O, no global
 * state; it allocates topics, arrays and buckets, and gives them back. */
#ifndef RINGWS_TOPIC_INDEX_H
#define RINGWS_TOPIC_INDEX_H

#include <stddef.h>
#include <stdint.h>

/* The fewest buckets an index with topics has. */
#define TOPIC_INDEX_MIN_BUCKETS 64u

struct topic {
    struct topic *next; /* in its bucket */
    uint64_t hash;
    void **subs;        /* the subscribers, in no order */
    uint32_t n_subs, cap;
    uint32_t tag;       /* the user's, 0 at creation (pub/sub: the fan-out policy) */
    void *data;         /* the user's, NULL at creation (pub/sub: the server's topic) */
    uint16_t len;
    char name[];
};

/* Doubled above one topic per bucket, halved below one per eight (the gap
 * keeps topics that come and go at an edge from resizing it back and
 * forth), freed with its last topic. */
struct topic_index {
    struct topic **buckets; /* NULL while there is no topic */
    uint32_t mask;          /* buckets - 1 */
    uint32_t n;             /* topics */
    uint64_t key[2];        /* of the hash: clients choose names */
};

/* An empty index whose hash is keyed by key (SipHash-2-4). */
void topic_index_init(struct topic_index *ix, const uint64_t key[2]);
uint64_t topic_index_hash(const struct topic_index *ix, const char *name, size_t len);
/* The number of buckets (0 while there is no topic). */
uint32_t topic_index_buckets(const struct topic_index *ix);
/* The topic of that name and hash, or NULL. */
struct topic *topic_index_find(const struct topic_index *ix, const char *name, size_t len,
                               uint64_t hash);
/* A new topic without subscribers (name must not be in the index, len at
 * most UINT16_MAX); NULL without memory.  The caller adds a subscriber at
 * once: only topic_index_remove_sub takes a topic out. */
struct topic *topic_index_create(struct topic_index *ix, const char *name, size_t len,
                                 uint64_t hash);
/* Appends sub to t's subscribers: its position, or -ENOMEM (a topic left
 * without subscribers is then removed). */
int topic_index_add_sub(struct topic_index *ix, struct topic *t, void *sub);
/* Removes the subscriber at position idx: the last one moves into its
 * place and is returned (NULL when none moved), so that the caller can
 * update what it keeps of positions.  A topic left without subscribers is
 * removed and freed. */
void *topic_index_remove_sub(struct topic_index *ix, struct topic *t, uint32_t idx);

#endif
