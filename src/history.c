/* history.c - per-topic rings of held messages under one memory cap (see
 * history.h). */
#include <errno.h>
#include <stdlib.h>

#include "history.h"

void history_set_init(struct history_set *set, size_t cap,
                      void (*release)(struct hist_node *node, struct history *from, void *arg),
                      void *arg)
{
    *set = (struct history_set){.cap = cap, .release = release, .arg = arg};
    set->all.next = set->all.prev = &set->all;
}

void history_init(struct history *h, uint32_t limit, uint64_t ttl_ns)
{
    *h = (struct history){.limit = limit, .ttl_ns = ttl_ns};
}

static struct hist_node *history_first(const struct history *h)
{
    return h->n ? h->ring[h->head] : NULL;
}

/* Takes the oldest node out of h and of the set, and releases it. */
static void history_pop(struct history_set *set, struct history *h, enum hist_evict why)
{
    struct hist_node *node = h->ring[h->head];

    h->ring[h->head] = NULL;
    h->head = h->head + 1 == h->cap ? 0 : h->head + 1;
    h->n--;
    h->first++;
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->h = NULL;
    set->bytes -= node->bytes;
    set->n--;
    if (why < HIST_EVICT_REASONS)
        set->evicted[why]++;
    set->release(node, h, set->arg);
}

/* Doubles the ring (up to limit), the oldest first in the new one. */
static int history_grow(struct history *h)
{
    uint32_t cap = h->cap ? h->cap * 2 : 8;
    struct hist_node **ring;

    if (cap > h->limit)
        cap = h->limit;
    ring = calloc(cap, sizeof(*ring));
    if (!ring)
        return -ENOMEM;
    for (uint32_t i = 0; i < h->n; i++)
        ring[i] = h->ring[(h->head + i) % h->cap];
    free(h->ring);
    h->ring = ring;
    h->cap = cap;
    h->head = 0;
    return 0;
}

/* Appends are in time order across topics: the set's first node is the
 * oldest of its own history too. */
static void history_trim(struct history_set *set)
{
    while (set->bytes > set->cap && set->n)
        history_pop(set, set->all.next->h, HIST_EVICT_MEMORY);
}

void history_expire(struct history_set *set, struct history *h, uint64_t now_ns)
{
    struct hist_node *first;

    while (h->ttl_ns && (first = history_first(h)) && now_ns - first->ns > h->ttl_ns)
        history_pop(set, h, HIST_EVICT_TTL);
}

int history_append(struct history_set *set, struct history *h, struct hist_node *node,
                   uint64_t offset, uint64_t now_ns)
{
    if (!h->limit)
        return 0;
    if (h->n == h->limit)
        history_pop(set, h, HIST_EVICT_COUNT);
    if (h->n == h->cap && history_grow(h) < 0)
        return -ENOMEM;
    h->ring[(h->head + h->n) % h->cap] = node;
    if (!h->n++)
        h->first = offset;
    node->h = h;
    node->ns = now_ns;
    node->prev = set->all.prev;
    node->next = &set->all;
    set->all.prev->next = node;
    set->all.prev = node;
    set->bytes += node->bytes;
    set->n++;
    history_expire(set, h, now_ns);
    history_trim(set);
    return 0;
}

void history_charge(struct history_set *set, struct hist_node *node, size_t bytes)
{
    if (!node->h)
        return;
    node->bytes += bytes;
    set->bytes += bytes;
    history_trim(set);
}

uint64_t history_oldest(const struct history *h, uint64_t last)
{
    return h->n ? h->first : last + 1;
}

struct hist_node *history_at(const struct history *h, uint64_t offset)
{
    if (!h->n || offset < h->first || offset - h->first >= h->n)
        return NULL;
    return h->ring[(h->head + (offset - h->first)) % h->cap];
}

bool history_serves(const struct history *h, uint64_t last, bool same_epoch, uint64_t after)
{
    return same_epoch && after <= last && after + 1 >= history_oldest(h, last);
}

void history_clear(struct history_set *set, struct history *h)
{
    while (h->n)
        history_pop(set, h, HIST_EVICT_REASONS);
    free(h->ring);
    h->ring = NULL;
    h->cap = 0;
}
