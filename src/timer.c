/* timer.c - hashed timing wheel: one doubly linked list per slot, linked
 * by 32-bit keys the wheel's owner resolves; a node whose deadline lies
 * more than one turn ahead stays in its slot until the wheel comes round to
 * its turn. */
#include "timer.h"

#include <stddef.h>
#include <time.h>

uint64_t timer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t timer_now_ms(void)
{
    return timer_now_ns() / 1000000u;
}

/* The due list's head, after the slots'. */
#define TIMER_DUE TIMER_SLOTS

static struct timer_node *timer_at(struct timer_wheel *w, uint32_t link)
{
    return link <= TIMER_HEADS ? &w->heads[link - 1] : w->node_at(w->ctx, link - TIMER_HEADS - 1);
}

void timer_wheel_init(struct timer_wheel *w, uint64_t now_tick, timer_node_at node_at,
                      void *ctx)
{
    w->now = now_tick;
    w->node_at = node_at;
    w->ctx = ctx;
    for (uint32_t i = 0; i < TIMER_HEADS; i++)
        w->heads[i].prev = w->heads[i].next = i + 1;
}

void timer_cancel(struct timer_wheel *w, struct timer_node *n)
{
    if (!n->prev)
        return;
    timer_at(w, n->prev)->next = n->next;
    timer_at(w, n->next)->prev = n->prev;
    n->prev = n->next = 0;
}

/* Appends an unlinked node (linked as `link`) to the list of heads[head]. */
static void timer_link_tail(struct timer_wheel *w, uint32_t head, struct timer_node *n,
                            uint32_t link)
{
    struct timer_node *h = &w->heads[head];

    n->next = head + 1;
    n->prev = h->prev;
    timer_at(w, h->prev)->next = link;
    h->prev = link;
}

void timer_arm(struct timer_wheel *w, struct timer_node *n, uint32_t key, uint64_t deadline)
{
    timer_cancel(w, n);
    if (deadline <= w->now)
        deadline = w->now + 1; /* the current slot was already walked */
    if (deadline - w->now > TIMER_MAX_AHEAD)
        deadline = w->now + TIMER_MAX_AHEAD;
    n->deadline = (uint32_t)deadline;
    timer_link_tail(w, (uint32_t)(deadline & (TIMER_SLOTS - 1)), n, key + TIMER_HEADS + 1);
}

/* The slot's due nodes move to the due list before any fires: a callback
 * may re-arm or cancel any node (the next one in the walk, too), and a node
 * unlinks itself from whichever list holds it, so the walk only ever
 * follows nodes still due.  Nothing armed during the walk lands in it: the
 * earliest deadline is the next tick. */
static void timer_slot_expire(struct timer_wheel *w, uint64_t tick,
                              void (*fire)(struct timer_node *n))
{
    uint32_t slot = (uint32_t)(tick & (TIMER_SLOTS - 1)), link = w->heads[slot].next;

    while (link != slot + 1) {
        struct timer_node *n = timer_at(w, link);
        uint32_t next = n->next;
        if (!timer_due_after(n, tick)) {
            timer_cancel(w, n);
            timer_link_tail(w, TIMER_DUE, n, link);
        }
        link = next;
    }
    while ((link = w->heads[TIMER_DUE].next) != TIMER_DUE + 1) {
        struct timer_node *n = timer_at(w, link);
        timer_cancel(w, n);
        fire(n);
    }
}

void timer_wheel_expire(struct timer_wheel *w, uint64_t now_tick,
                        void (*fire)(struct timer_node *n))
{
    /* After a long stall, one full turn visits every slot once. */
    if (now_tick - w->now > TIMER_SLOTS)
        w->now = now_tick - TIMER_SLOTS;
    while (w->now < now_tick) {
        w->now++;
        timer_slot_expire(w, w->now, fire);
    }
}
