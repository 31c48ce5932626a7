/* timer.h - a per-worker hashed timing wheel.
 * Why it exists: every connection has exactly one deadline at a time
 * (handshake, idle, close), and a worker may hold hundreds of thousands of
 * them.  Arming, moving and cancelling are O(1); a periodic ring timeout
 * drives timer_wheel_expire.  Deadlines are in ticks of TIMER_TICK_MS. */
#ifndef RINGWS_TIMER_H
#define RINGWS_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define TIMER_TICK_MS 50u
#define TIMER_SLOTS 1024u /* a power of two; longer deadlines wrap around */
/* Deadlines are held as ticks modulo 2^32 and compared wrap-safe, so one
 * lies at most this far ahead (about 3.4 years): a later one is armed for
 * then, and whoever armed it looks again when it fires. */
#define TIMER_MAX_AHEAD 0x7fffffffu
/* The list heads (one per slot, and the walk's list of due nodes) and the
 * nodes share one space of 32-bit links: 0 (none), the heads, then the
 * nodes' keys. */
#define TIMER_HEADS (TIMER_SLOTS + 1u)
#define TIMER_KEY_MAX (UINT32_MAX - TIMER_HEADS - 1u)

/* A node is named by a key (at most TIMER_KEY_MAX) that its wheel turns
 * back into the node (timer_node_at): the links are keys, not pointers, so
 * that a node, one in every connection record, costs 12 bytes, not 24. */
struct timer_node {
    uint32_t prev, next; /* links; prev 0: not armed */
    uint32_t deadline;   /* in ticks, modulo 2^32 */
};

typedef struct timer_node *(*timer_node_at)(void *ctx, uint32_t key);

struct timer_wheel {
    uint64_t now; /* current tick */
    timer_node_at node_at;
    void *ctx;    /* node_at's */
    struct timer_node heads[TIMER_HEADS];
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_tick, timer_node_at node_at,
                      void *ctx);

/* Arms (or re-arms) n, whose key is `key`, to fire once the wheel reaches
 * `deadline` (at most TIMER_MAX_AHEAD ticks ahead). */
void timer_arm(struct timer_wheel *w, struct timer_node *n, uint32_t key, uint64_t deadline);
void timer_cancel(struct timer_wheel *w, struct timer_node *n);

static inline bool timer_armed(const struct timer_node *n)
{
    return n->prev != 0;
}

/* Whether n (armed) is due later than `tick`. */
static inline bool timer_due_after(const struct timer_node *n, uint64_t tick)
{
    return (int32_t)(n->deadline - (uint32_t)tick) > 0;
}

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
