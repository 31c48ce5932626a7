/* history.h - the last messages of topics, bounded per topic by count and
 * age and across all topics by memory.
 *
 * Why it exists: a client that reconnects catches up on what it missed
 * from the history; its bounds (a ring per topic, the oldest messages of
 * all topics dropped first past the memory cap) are the same whatever a
 * message is, so they are kept apart from pub/sub and tested alone.  Pure:
 * no I/O, no locks (the caller holds one), no clock (times are given); it
 * allocates only each topic's ring.  The entries are the caller's nodes,
 * embedded in its messages: what an entry costs is the node and one ring
 * pointer (its offset is the ring's, not the node's). */
#ifndef RINGWS_HISTORY_H
#define RINGWS_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct history;

/* One held message, embedded in the caller's message. */
struct hist_node {
    struct hist_node *prev, *next; /* in the set, oldest first */
    struct history *h;             /* NULL while not held */
    uint64_t ns;                   /* when it was published */
    size_t bytes;                  /* what it pins, counted against the cap */
};

enum hist_evict {
    HIST_EVICT_COUNT,  /* the topic's history=N was full */
    HIST_EVICT_TTL,    /* older than its history-ttl */
    HIST_EVICT_MEMORY, /* all histories together were past the cap */
    HIST_EVICT_REASONS
};

/* All histories of a server: the memory cap, every held node in the order
 * appended (so the oldest of all topics is first), and release, called for
 * each node let go (evicted or cleared) with the history it left (which
 * may then be empty: the caller may forget its topic). */
struct history_set {
    struct hist_node all;      /* the list's head: all.next is the oldest */
    size_t bytes, cap;
    uint64_t n;                /* nodes held */
    uint64_t evicted[HIST_EVICT_REASONS];
    void (*release)(struct hist_node *node, struct history *from, void *arg);
    void *arg;
};

/* One topic's: offsets held are contiguous, first to first + n - 1. */
struct history {
    struct hist_node **ring;
    uint32_t cap;   /* allocated slots, grown up to limit */
    uint32_t head;  /* slot of the oldest */
    uint32_t n;
    uint32_t limit; /* history=N; 0: keeps nothing */
    uint64_t first; /* offset of the oldest, when n */
    uint64_t ttl_ns; /* 0: no age limit */
};

void history_set_init(struct history_set *set, size_t cap,
                      void (*release)(struct hist_node *node, struct history *from, void *arg),
                      void *arg);
void history_init(struct history *h, uint32_t limit, uint64_t ttl_ns);
/* Appends node (offset: one above the last held, or any when empty;
 * bytes set by the caller), then evicts: by count, by age at now_ns, and
 * the oldest of all topics past the cap (node itself included, when it
 * alone is more than the cap).  0, or -ENOMEM (nothing appended). */
int history_append(struct history_set *set, struct history *h, struct hist_node *node,
                   uint64_t offset, uint64_t now_ns);
/* The node, if still held, pins bytes more (a frame built after it was
 * appended); past the cap the oldest of all topics go (node included). */
void history_charge(struct history_set *set, struct hist_node *node, size_t bytes);
/* Evicts what is older than the ttl at now_ns. */
void history_expire(struct history_set *set, struct history *h, uint64_t now_ns);
/* The offset of the oldest held message; when none is held, last + 1. */
uint64_t history_oldest(const struct history *h, uint64_t last);
/* The node of that offset, or NULL when not held. */
struct hist_node *history_at(const struct history *h, uint64_t offset);
/* Whether a client that holds everything up to offset `after` of a
 * sequence (same_epoch: the sequence whose last offset is `last` and
 * whose history h is) can be given exactly what it missed: the same
 * epoch, an offset the sequence reached, and every message after it still
 * held (nothing missed counts as served, even with nothing held). */
bool history_serves(const struct history *h, uint64_t last, bool same_epoch, uint64_t after);
/* Lets go of every node and of the ring. */
void history_clear(struct history_set *set, struct history *h);

#endif
