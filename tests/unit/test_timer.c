/* test_timer.c - the hashed timing wheel: nodes fire once, at their tick,
 * in the order armed within a tick; cancelled nodes never fire; deadlines
 * more than a turn ahead wait for their turn; ticks crossing 2^32 (the
 * deadlines' modulus) and deadlines past the farthest one held keep their
 * order; a stalled wheel catches up;
 * and a fire callback may re-arm or cancel any node (the next one in the
 * walk, itself, nodes of other slots) without the walk firing a node that
 * is not due or not armed. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "timer.h"

#define NODES 16

enum action { ACT_NONE, ACT_REARM, ACT_CANCEL, ACT_ARM_NOW };

struct tnode {
    struct timer_node t; /* first: the fire callback gets &t */
    int fired;
    uint64_t fired_at;
    enum action act;     /* what its fire does to `target` */
    int target;
    uint64_t target_deadline;
};

static struct timer_wheel wheel;
static struct tnode nodes[NODES];
static int order[64], n_order;

/* The keys name nodes at the top of their space, so that the links (key +
 * the heads) reach UINT32_MAX. */
#define KEY_BASE (TIMER_KEY_MAX - NODES + 1)

static uint32_t key_of(int id)
{
    return KEY_BASE + (uint32_t)id;
}

static struct timer_node *node_at(void *ctx, uint32_t key)
{
    if (ctx != &wheel || key < KEY_BASE || key > TIMER_KEY_MAX) {
        CHECKF(0, "resolved key %u", key);
        exit(check_done("timer"));
    }
    return &nodes[key - KEY_BASE].t;
}

static int node_id(const struct timer_node *n)
{
    for (int i = 0; i < NODES; i++)
        if (n == &nodes[i].t)
            return i;
    return -1;
}

static void fire(struct timer_node *n)
{
    int id = node_id(n);
    struct tnode *x;

    if (id < 0) {
        /* The walk left its slot: the wheel is corrupt, nothing after this
         * would mean anything (and the walk may never end). */
        CHECK(!"fired something that is not an armed node");
        exit(check_done("timer"));
    }
    x = &nodes[id];
    CHECKF(!x->t.prev, "node %d fired while still linked", id);
    CHECKF(!timer_due_after(&x->t, wheel.now), "node %d fired at tick %llu, due %llu", id,
           (unsigned long long)wheel.now, (unsigned long long)x->t.deadline);
    x->fired++;
    x->fired_at = wheel.now;
    if (n_order < (int)(sizeof(order) / sizeof(order[0])))
        order[n_order++] = id;
    switch (x->act) {
    case ACT_NONE:
        break;
    case ACT_REARM:
        timer_arm(&wheel, &nodes[x->target].t, key_of(x->target), x->target_deadline);
        break;
    case ACT_CANCEL:
        timer_cancel(&wheel, &nodes[x->target].t);
        break;
    case ACT_ARM_NOW:
        timer_arm(&wheel, &nodes[x->target].t, key_of(x->target), wheel.now);
        break;
    }
}

static void reset(uint64_t now)
{
    memset(&wheel, 0, sizeof(wheel));
    memset(nodes, 0, sizeof(nodes));
    n_order = 0;
    timer_wheel_init(&wheel, now, node_at, &wheel);
}

static void arm(int id, uint64_t deadline)
{
    timer_arm(&wheel, &nodes[id].t, key_of(id), deadline);
}

static bool order_is(const int *want, int n)
{
    return n_order == n && !memcmp(order, want, (size_t)n * sizeof(int));
}

/* Fires in deadline order, in arming order within a tick, at their tick. */
static void test_order(void)
{
    static const int want[] = {3, 1, 0, 4};

    reset(100);
    arm(0, 105);
    arm(1, 103);
    arm(2, 105);
    arm(3, 101);
    arm(4, 105);
    arm(5, 104);
    timer_cancel(&wheel, &nodes[2].t);
    timer_cancel(&wheel, &nodes[5].t);
    timer_cancel(&wheel, &nodes[5].t); /* twice is harmless */
    arm(4, 110);               /* moved later ... */
    arm(4, 105);               /* ... and back: now last of its tick */
    for (uint64_t t = 101; t <= 120; t++)
        timer_wheel_expire(&wheel, t, fire);
    CHECKF(order_is(want, 4), "%d fired", n_order);
    CHECK(nodes[3].fired_at == 101 && nodes[1].fired_at == 103 && nodes[0].fired_at == 105 &&
          nodes[4].fired_at == 105);
    CHECK(!nodes[2].fired && !nodes[5].fired);

    /* One call over many ticks: the same order. */
    reset(100);
    arm(0, 105);
    arm(1, 103);
    arm(3, 101);
    arm(4, 105);
    timer_wheel_expire(&wheel, 120, fire);
    CHECKF(order_is(want, 4), "%d fired", n_order);

    /* A deadline already passed fires on the next tick, not this one. */
    reset(100);
    arm(0, 50);
    CHECK(nodes[0].t.deadline == 101);
    timer_wheel_expire(&wheel, 100, fire);
    CHECK(!nodes[0].fired);
    timer_wheel_expire(&wheel, 101, fire);
    CHECK(nodes[0].fired == 1);
}

/* A deadline several turns ahead shares its slot with nearer ones and is
 * passed over until its own turn. */
static void test_wrap(void)
{
    uint64_t far = 1000 + 3 * TIMER_SLOTS + 7;

    reset(1000);
    arm(0, far);
    arm(1, 1007);
    arm(2, 1000 + TIMER_SLOTS + 7);
    for (uint64_t t = 1001; t < far; t += 13)
        timer_wheel_expire(&wheel, t, fire);
    timer_wheel_expire(&wheel, far - 1, fire);
    CHECK(nodes[1].fired == 1 && nodes[1].fired_at == 1007);
    CHECK(nodes[2].fired == 1 && nodes[2].fired_at == 1000 + TIMER_SLOTS + 7);
    CHECK(!nodes[0].fired);
    timer_wheel_expire(&wheel, far, fire);
    CHECK(nodes[0].fired == 1 && nodes[0].fired_at == far);
}

/* A wheel not driven for many turns fires every due node once, and keeps
 * the ones not yet due. */
static void test_stall(void)
{
    uint64_t now = 5000, later = now + 10 * TIMER_SLOTS;

    reset(now);
    arm(0, now + 1);
    arm(1, now + 500);
    arm(2, now + TIMER_SLOTS + 3);
    arm(3, now + 5 * TIMER_SLOTS);
    arm(4, later);
    arm(5, later + 2);
    arm(6, later + TIMER_SLOTS);
    timer_wheel_expire(&wheel, later, fire);
    for (int i = 0; i <= 4; i++)
        CHECKF(nodes[i].fired == 1, "node %d fired %d times", i, nodes[i].fired);
    CHECK(!nodes[5].fired && !nodes[6].fired);
    CHECK(wheel.now == later);
    timer_wheel_expire(&wheel, later + 2, fire);
    CHECK(nodes[5].fired == 1 && !nodes[6].fired);
    timer_wheel_expire(&wheel, later + TIMER_SLOTS, fire);
    CHECK(nodes[6].fired == 1 && nodes[6].fired_at == later + TIMER_SLOTS);
}

/* The node after the one firing, in the same slot, is moved to another
 * slot that holds nodes of its own: the walk must neither follow it there
 * nor fire it now. */
static void test_rearm_next(void)
{
    reset(200);
    arm(7, 210);  /* the slot node 1 moves into */
    arm(0, 205);
    arm(1, 205);
    arm(2, 205);
    nodes[0].act = ACT_REARM;
    nodes[0].target = 1;
    nodes[0].target_deadline = 210;
    timer_wheel_expire(&wheel, 205, fire);
    CHECK(nodes[0].fired == 1 && nodes[2].fired == 1);
    CHECK(!nodes[1].fired && !nodes[7].fired);
    timer_wheel_expire(&wheel, 210, fire);
    CHECK(nodes[7].fired == 1 && nodes[1].fired == 1 && nodes[1].fired_at == 210);
    CHECK(nodes[0].fired == 1 && nodes[2].fired == 1);
}

/* The next node is cancelled: it does not fire, and the walk goes on to
 * the rest of the slot. */
static void test_cancel_next(void)
{
    reset(300);
    arm(0, 301);
    arm(1, 301);
    arm(2, 301);
    nodes[0].act = ACT_CANCEL;
    nodes[0].target = 1;
    timer_wheel_expire(&wheel, 305, fire);
    CHECK(nodes[0].fired == 1 && !nodes[1].fired && nodes[2].fired == 1);
}

/* A node re-arms itself (later, or for "now", which means the next tick),
 * cancels itself, or arms another node for the tick being walked. */
static void test_self_and_now(void)
{
    reset(400);
    arm(0, 401);
    arm(1, 401);
    arm(2, 401);
    nodes[0].act = ACT_REARM;
    nodes[0].target = 0;
    nodes[0].target_deadline = 403;
    nodes[1].act = ACT_CANCEL;
    nodes[1].target = 1;
    nodes[2].act = ACT_ARM_NOW;
    nodes[2].target = 3; /* not armed yet */
    timer_wheel_expire(&wheel, 401, fire);
    CHECK(nodes[0].fired == 1 && nodes[1].fired == 1 && nodes[2].fired == 1);
    CHECK(!nodes[3].fired && nodes[3].t.deadline == 402);
    nodes[0].act = ACT_NONE;
    timer_wheel_expire(&wheel, 402, fire);
    CHECK(nodes[3].fired == 1 && nodes[0].fired == 1);
    timer_wheel_expire(&wheel, 410, fire);
    CHECK(nodes[0].fired == 2 && nodes[0].fired_at == 403);
    CHECK(nodes[1].fired == 1 && nodes[2].fired == 1 && nodes[3].fired == 1);
}

/* Nodes of other slots, and a later node of the same slot, are re-armed
 * and cancelled from a fire: each ends where it was last put. */
static void test_other_slots(void)
{
    reset(500);
    arm(0, 501);
    arm(1, 501);
    arm(2, 501);
    arm(3, 501);
    arm(4, 502);
    arm(5, 503);
    arm(6, 503);
    nodes[0].act = ACT_REARM; /* a node two places on, same slot */
    nodes[0].target = 2;
    nodes[0].target_deadline = 504;
    nodes[1].act = ACT_CANCEL; /* a node of the next slot */
    nodes[1].target = 4;
    nodes[3].act = ACT_REARM; /* a node of a later slot, earlier */
    nodes[3].target = 6;
    nodes[3].target_deadline = 502;
    timer_wheel_expire(&wheel, 501, fire);
    CHECK(nodes[0].fired == 1 && nodes[1].fired == 1 && nodes[3].fired == 1);
    CHECK(!nodes[2].fired);
    timer_wheel_expire(&wheel, 502, fire);
    CHECK(!nodes[4].fired && nodes[6].fired == 1 && nodes[6].fired_at == 502);
    timer_wheel_expire(&wheel, 510, fire);
    CHECK(nodes[5].fired == 1 && nodes[5].fired_at == 503);
    CHECK(nodes[2].fired == 1 && nodes[2].fired_at == 504);
    CHECK(!nodes[4].fired && nodes[6].fired == 1);
}

/* Deadlines are held modulo 2^32: a wheel whose ticks cross a multiple of
 * 2^32 fires each node once at its tick, before, across and after it; the
 * walks of a slot before the edge pass over its nodes due after it. */
static void test_wrap32(void)
{
    uint64_t edge = (uint64_t)1 << 32, now = edge - 2 * TIMER_SLOTS - 10;

    reset(now);
    arm(0, edge - 3);
    arm(1, edge);
    arm(2, edge + 5);
    arm(3, edge + TIMER_SLOTS + 2);
    arm(4, edge + 2);
    timer_cancel(&wheel, &nodes[4].t);
    arm(4, edge - 1); /* moved earlier, across the edge */
    arm(7, edge + 100);
    for (uint64_t t = now + 1; t <= edge + 2 * TIMER_SLOTS; t += 3)
        timer_wheel_expire(&wheel, t, fire);
    CHECK(nodes[0].fired == 1 && nodes[0].fired_at == edge - 3);
    CHECK(nodes[4].fired == 1 && nodes[4].fired_at == edge - 1);
    CHECK(nodes[1].fired == 1 && nodes[1].fired_at == edge);
    CHECK(nodes[2].fired == 1 && nodes[2].fired_at == edge + 5);
    CHECK(nodes[3].fired == 1 && nodes[3].fired_at == edge + TIMER_SLOTS + 2);
    CHECK(nodes[7].fired == 1 && nodes[7].fired_at == edge + 100);

    /* Armed after the edge, for "now" and for a tick past it. */
    reset(edge + 7);
    arm(5, edge + 7);
    arm(6, edge + 9);
    CHECK(nodes[5].t.deadline == 8 && nodes[6].t.deadline == 9);
    timer_wheel_expire(&wheel, edge + 8, fire);
    CHECK(nodes[5].fired == 1 && !nodes[6].fired);
    timer_wheel_expire(&wheel, edge + 9, fire);
    CHECK(nodes[6].fired == 1);
}

/* A deadline past TIMER_MAX_AHEAD is armed for the farthest tick held, and
 * compares as later than every nearer tick. */
static void test_far(void)
{
    uint64_t now = 3000;

    reset(now);
    arm(0, now + ((uint64_t)1 << 33));
    CHECK(nodes[0].t.deadline == (uint32_t)(now + TIMER_MAX_AHEAD));
    CHECK(timer_armed(&nodes[0].t) && timer_due_after(&nodes[0].t, now + TIMER_MAX_AHEAD - 1));
    CHECK(!timer_due_after(&nodes[0].t, now + TIMER_MAX_AHEAD));
    timer_wheel_expire(&wheel, now + 4 * TIMER_SLOTS, fire);
    CHECK(!nodes[0].fired && timer_armed(&nodes[0].t));
    timer_cancel(&wheel, &nodes[0].t);
    CHECK(!timer_armed(&nodes[0].t));
}

int main(void)
{
    alarm(30); /* a walk that never ends fails the test instead of hanging */
    CHECK(sizeof(struct timer_node) == 12);
    test_order();
    test_wrap();
    test_wrap32();
    test_far();
    test_stall();
    test_rearm_next();
    test_cancel_next();
    test_self_and_now();
    test_other_slots();
    return check_done("timer");
}
