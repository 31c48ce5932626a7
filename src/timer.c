/* timer.c - hashed timing wheel: one doubly linked list per slot; a node
 * whose deadline lies more than one turn ahead stays in its slot until the
 * wheel comes round to its turn. */
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

void timer_wheel_init(struct timer_wheel *w, uint64_t now_tick)
{
    w->now = now_tick;
    for (unsigned i = 0; i < TIMER_SLOTS; i++)
        w->slots[i].prev = w->slots[i].next = &w->slots[i];
}

void timer_cancel(struct timer_node *n)
{
    if (!n->prev)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Appends an unlinked node to the list of head. */
static void timer_link_tail(struct timer_node *head, struct timer_node *n)
{
    n->next = head;
    n->prev = head->prev;
    head->prev->next = n;
    head->prev = n;
}

void timer_arm(struct timer_wheel *w, struct timer_node *n, uint64_t deadline)
{
    timer_cancel(n);
    if (deadline <= w->now)
        deadline = w->now + 1; /* the current slot was already walked */
    n->deadline = deadline;
    timer_link_tail(&w->slots[deadline & (TIMER_SLOTS - 1)], n);
}

/* The slot's due nodes move to a list of their own before any fires: a
 * callback may re-arm or cancel any node (the next one in the walk, too),
 * and a node unlinks itself from whichever list holds it, so the walk only
 * ever follows nodes still due.  Nothing armed during the walk lands in it:
 * the earliest deadline is the next tick. */
static void timer_slot_expire(struct timer_wheel *w, uint64_t tick,
                              void (*fire)(struct timer_node *n))
{
    struct timer_node *head = &w->slots[tick & (TIMER_SLOTS - 1)];
    struct timer_node due = {.prev = &due, .next = &due};
    struct timer_node *n = head->next;

    while (n != head) {
        struct timer_node *next = n->next;
        if (n->deadline <= tick) {
            timer_cancel(n);
            timer_link_tail(&due, n);
        }
        n = next;
    }
    while (due.next != &due) {
        n = due.next;
        timer_cancel(n);
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
