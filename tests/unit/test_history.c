/* test_history.c - the history rings (src/history.c): append, eviction by
 * count, age and memory (the oldest of all topics first), lookup by
 * offset, a ring that wraps and grows, and what is released when. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "history.h"

struct item {
    struct hist_node node; /* first: the release callback casts back */
    int released;
};

static unsigned released_total;
static struct history *last_from;

static void on_release(struct hist_node *node, struct history *from, void *arg)
{
    struct item *it = (struct item *)node;

    (void)arg;
    it->released++;
    released_total++;
    last_from = from;
}

static void fill(struct item *items, size_t n, size_t bytes)
{
    memset(items, 0, n * sizeof(*items));
    for (size_t i = 0; i < n; i++)
        items[i].node.bytes = bytes;
}

static void test_append_lookup_count(void)
{
    struct history_set set;
    struct history h;
    struct item it[40];

    released_total = 0;
    fill(it, 40, 10);
    history_set_init(&set, 1 << 20, on_release, NULL);
    history_init(&h, 16, 0);
    CHECK(history_oldest(&h, 0) == 1 && history_at(&h, 1) == NULL);
    for (int i = 0; i < 40; i++)
        CHECK(history_append(&set, &h, &it[i].node, (uint64_t)i + 1, 1000) == 0);
    /* 16 held: offsets 25..40, the ring wrapped and grew from 8 to 16 */
    CHECK(h.n == 16 && h.cap == 16 && set.n == 16 && set.bytes == 160);
    CHECK(history_oldest(&h, 40) == 25);
    CHECK(history_at(&h, 24) == NULL && history_at(&h, 41) == NULL);
    for (uint64_t o = 25; o <= 40; o++)
        CHECK(history_at(&h, o) == &it[o - 1].node);
    CHECK(set.evicted[HIST_EVICT_COUNT] == 24 && released_total == 24);
    for (int i = 0; i < 24; i++)
        CHECK(it[i].released == 1 && it[i].node.h == NULL);
    CHECK(last_from == &h);
    history_clear(&set, &h);
    CHECK(released_total == 40 && set.n == 0 && set.bytes == 0 && h.ring == NULL);
    CHECK(set.evicted[HIST_EVICT_COUNT] == 24); /* clearing is no eviction */
}

static void test_ttl(void)
{
    struct history_set set;
    struct history h;
    struct item it[5];

    released_total = 0;
    fill(it, 5, 1);
    history_set_init(&set, 1 << 20, on_release, NULL);
    history_init(&h, 100, 1000); /* 1000 ns */
    CHECK(history_append(&set, &h, &it[0].node, 1, 100) == 0);
    CHECK(history_append(&set, &h, &it[1].node, 2, 600) == 0);
    CHECK(history_append(&set, &h, &it[2].node, 3, 1050) == 0);
    CHECK(h.n == 3);
    history_expire(&set, &h, 1100); /* 100 is 1000 old: kept (strictly older goes) */
    CHECK(h.n == 3);
    history_expire(&set, &h, 1101);
    CHECK(h.n == 2 && history_oldest(&h, 3) == 2 && it[0].released == 1);
    CHECK(history_append(&set, &h, &it[3].node, 4, 1700) == 0); /* expires 600 */
    CHECK(h.n == 2 && history_oldest(&h, 4) == 3 && set.evicted[HIST_EVICT_TTL] == 2);
    history_expire(&set, &h, 1000000);
    CHECK(h.n == 0 && history_oldest(&h, 4) == 5 && history_at(&h, 4) == NULL);
    history_clear(&set, &h);
}

/* Past the cap the oldest messages of all topics go first, whatever topic
 * the new one is for. */
static void test_memory(void)
{
    struct history_set set;
    struct history a, b;
    struct item ia[4], ib[4], huge;

    released_total = 0;
    fill(ia, 4, 100);
    fill(ib, 4, 100);
    history_set_init(&set, 450, on_release, NULL);
    history_init(&a, 10, 0);
    history_init(&b, 10, 0);
    CHECK(history_append(&set, &a, &ia[0].node, 1, 1) == 0);
    CHECK(history_append(&set, &b, &ib[0].node, 1, 2) == 0);
    CHECK(history_append(&set, &a, &ia[1].node, 2, 3) == 0);
    CHECK(history_append(&set, &b, &ib[1].node, 2, 4) == 0);
    CHECK(set.bytes == 400 && released_total == 0);
    CHECK(history_append(&set, &b, &ib[2].node, 3, 5) == 0); /* 500 > 450: a's 1 goes */
    CHECK(ia[0].released == 1 && last_from == &a && a.n == 1 && b.n == 3);
    CHECK(history_oldest(&a, 2) == 2 && set.evicted[HIST_EVICT_MEMORY] == 1);
    CHECK(history_append(&set, &a, &ia[2].node, 3, 6) == 0); /* b's 1 goes */
    CHECK(ib[0].released == 1 && history_oldest(&b, 3) == 2);
    /* one message larger than the cap: everything goes, itself included */
    fill(&huge, 1, 1000);
    CHECK(history_append(&set, &a, &huge.node, 4, 7) == 0);
    CHECK(set.n == 0 && set.bytes == 0 && a.n == 0 && b.n == 0 && huge.released == 1);
    CHECK(history_oldest(&a, 4) == 5 && history_oldest(&b, 3) == 4);
    history_clear(&set, &a);
    history_clear(&set, &b);
}

/* history=0 keeps nothing and takes nothing. */
static void test_no_history(void)
{
    struct history_set set;
    struct history h;
    struct item it;

    released_total = 0;
    fill(&it, 1, 5);
    history_set_init(&set, 100, on_release, NULL);
    history_init(&h, 0, 0);
    CHECK(history_append(&set, &h, &it.node, 1, 1) == 0);
    CHECK(it.node.h == NULL && h.n == 0 && set.n == 0 && released_total == 0);
    CHECK(history_oldest(&h, 7) == 8);
    history_clear(&set, &h);
}

/* Offsets looked up across the wrap of a full ring, many times round. */
static void test_wrap(void)
{
    struct history_set set;
    struct history h;
    static struct item it[1000];

    fill(it, 1000, 1);
    history_set_init(&set, 1 << 20, on_release, NULL);
    history_init(&h, 7, 0); /* grows 7 (capped), not a power of two */
    for (uint64_t o = 1; o <= 1000; o++) {
        CHECK(history_append(&set, &h, &it[o - 1].node, o, o) == 0);
        uint64_t first = o > 7 ? o - 6 : 1;
        CHECK(history_oldest(&h, o) == first);
        CHECK(history_at(&h, first) == &it[first - 1].node);
        CHECK(history_at(&h, o) == &it[o - 1].node);
        CHECK(first == 1 || history_at(&h, first - 1) == NULL);
    }
    CHECK(h.cap == 7 && h.n == 7);
    history_clear(&set, &h);
}

/* What a resuming client can be served: epoch mismatch, a future offset,
 * an evicted one, nothing missed with nothing held. */
static void test_serves(void)
{
    struct history_set set;
    struct history h, none;
    struct item it[10];

    fill(it, 10, 1);
    history_set_init(&set, 1 << 20, on_release, NULL);
    history_init(&h, 4, 0);
    history_init(&none, 0, 0);
    for (uint64_t o = 1; o <= 10; o++)
        CHECK(history_append(&set, &h, &it[o - 1].node, o, o) == 0);
    /* 7..10 held */
    CHECK(history_serves(&h, 10, true, 6));   /* 7..10 replayed */
    CHECK(history_serves(&h, 10, true, 10));  /* nothing missed */
    CHECK(!history_serves(&h, 10, true, 5));  /* 6 evicted */
    CHECK(!history_serves(&h, 10, true, 0));
    CHECK(!history_serves(&h, 10, true, 11)); /* a future offset */
    CHECK(!history_serves(&h, 10, false, 8)); /* another epoch */
    CHECK(!history_serves(&h, 10, false, 10));
    CHECK(history_serves(&none, 3, true, 3));  /* no history: only nothing missed */
    CHECK(!history_serves(&none, 3, true, 2));
    CHECK(history_serves(&none, 0, true, 0));  /* a fresh sequence, from 0 */
    history_clear(&set, &h);
}

/* A frame built after the append is counted from then on, evicts past the
 * cap like an append, and a node no longer held is not counted at all. */
static void test_charge(void)
{
    struct history_set set;
    struct history a;
    struct item it[4];

    released_total = 0;
    fill(it, 4, 100);
    history_set_init(&set, 400, on_release, NULL);
    history_init(&a, 10, 0);
    for (uint64_t o = 1; o <= 3; o++)
        CHECK(history_append(&set, &a, &it[o - 1].node, o, o) == 0);
    history_charge(&set, &it[2].node, 50);
    CHECK(set.bytes == 350 && it[2].node.bytes == 150 && released_total == 0);
    history_charge(&set, &it[1].node, 100); /* 450 > 400: the oldest goes */
    CHECK(set.bytes == 350 && released_total == 1 && it[0].released == 1);
    history_charge(&set, &it[0].node, 1000); /* not held: nothing counted */
    CHECK(set.bytes == 350 && set.n == 2 && released_total == 1);
    history_clear(&set, &a);
    CHECK(set.bytes == 0 && released_total == 3);
}

int main(void)
{
    test_append_lookup_count();
    test_ttl();
    test_memory();
    test_no_history();
    test_wrap();
    test_serves();
    test_charge();
    return check_done("history");
}
