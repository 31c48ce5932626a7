/* timer.h - a per-worker hashed timing wheel.
 * Why it exists: every connection has exactly one deadline at a time
 * (handshake, idle, close), and a worker may hold hundreds of thousands of
 * them.  Arming, moving and cancelling are O(1); a periodic ring timeout
 * drives timer_wheel_expire.  Deadlines are in ticks of TIMER_TICK_MS. */
#ifndef RINGWS_TIMER_H
#define RINGWS_TIMER_H

#include <stdint.h>

#define TIMER_TICK_MS 50u
#define TIMER_SLOTS 1024u /* a power of two; longer deadlines wrap around */

struct timer_node {
    struct timer_node *prev, *next; /* prev NULL: not armed */
    uint64_t deadline;              /* in ticks */
};

struct timer_wheel {
    uint64_t now; /* current tick */
    struct timer_node slots[TIMER_SLOTS]; /* list heads */
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_tick);

/* Arms (or re-arms) n to fire once the wheel reaches `deadline`. */
void timer_arm(struct timer_wheel *w, struct timer_node *n, uint64_t deadline);
void timer_cancel(struct timer_node *n);

/* Advances to now_tick, calling fire(n) for every node whose deadline has
 * passed; the node is disarmed before the call.  fire may re-arm or cancel
 * any node, n included: a node re-armed or cancelled before its turn in
 * the walk does not fire. */
void timer_wheel_expire(struct timer_wheel *w, uint64_t now_tick,
                        void (*fire)(struct timer_node *n));

/* The monotonic clock (a vDSO read, no system call): nanoseconds for what
 * is timed (the publish histograms), milliseconds for deadlines. */
uint64_t timer_now_ns(void);
uint64_t timer_now_ms(void);
static inline uint64_t timer_ms_to_ticks(uint64_t ms)
{
    return (ms + TIMER_TICK_MS - 1) / TIMER_TICK_MS;
}

#endif
