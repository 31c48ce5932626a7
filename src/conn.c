/* conn.c - a connection's life: allocation from a per-worker pool, the
 * partial-input buffer and its budget, the send queue and its gathered
 * sends, deadlines, and the orderly way down (flush, shut down writing, wait
 * for the peer's EOF, close; or, once a closing handshake is complete,
 * flush and close) or the abrupt one (cancel, close).
 *
 * Why it exists: HTTP and WebSocket (conn_http.c, conn_ws.c) decide what
 * to say and when to stop, and hear the connection's events (input, EOF,
 * deadline, server stop, the flush step) through their proto_ops, one per
 * state (proto.h); no protocol behaviour is left here.  This file makes
 * sure every byte that was queued leaves, that a connection is freed
 * exactly once and only when the ring holds no request that points at it,
 * and that an idle connection holds no buffer. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "internal.h"
#include "pubsub_proto.h"
#include "log.h"
#include "siphash.h"

/* Records per slab.  A slab's records are handed out in order (a record
 * freed goes to the free list), so its pages become resident only as
 * connections come: a large slab costs a small server nothing, and the
 * allocator's rounding and padding of each allocation (up to a page or
 * two) is spread over many connections: with 256 per slab it was about 24
 * bytes per connection. */
#define CONN_SLAB ((CONN_SLAB_BYTES - sizeof(struct conn_slab)) / sizeof(struct ringws_conn))
#define SEND_IOV_MAX 64
/* Chunks of two sizes are pooled per worker, since one is allocated and
 * freed per message: shares of published frames, and small frames of their
 * own (short echoes, pongs, pings) in blocks of CHUNK_SMALL_BLOCK bytes. */
#define CHUNK_SMALL_BLOCK 64
#define CHUNK_SMALL_DATA (CHUNK_SMALL_BLOCK - sizeof(struct out_chunk))
#define CHUNK_CACHE_MAX 4096
enum chunk_class { CHUNK_SHARED, CHUNK_SMALL, CHUNK_OTHER };

/* SEND_IOV_MAX chunks a send at most, each one piece, or two on a
 * ringws.v1 connection (conn_chunk_pieces): the batch is allocated for
 * that many iovecs. */
struct send_batch {
    struct msghdr msg;
    struct iovec iov[];
};

static void conn_report_owed(struct ringws_conn *c);

/* The connection a completion is for: the loop hands back its loop_conn,
 * the connection's first member. */
_Static_assert(offsetof(struct ringws_conn, io) == 0,
               "the loop tags the connection's own 8-byte aligned address");
/* A connection per client, tens of thousands per worker, each paying every
 * byte while idle: what few connections need goes to the cold part, not
 * here (120 bytes on LP64). */
_Static_assert(sizeof(void *) != 8 || sizeof(struct ringws_conn) <= 120,
               "struct ringws_conn grew");
_Static_assert((CONN_SLAB_BYTES & (CONN_SLAB_BYTES - 1)) == 0 && CONN_SLAB >= 1024,
               "slabs are found by masking a record's address");

static struct ringws_conn *conn_of(struct loop_conn *lc)
{
    return (struct ringws_conn *)((char *)lc - offsetof(struct ringws_conn, io));
}

/* ---- requests in the ring ---------------------------------------------- */

/* Each request the connection has in the loop is marked, so that it is
 * freed only once none is left (conn_settle).  The transport ends and
 * closes the connection through conn_wire_*. */
static void conn_recv_arm(struct ringws_conn *c)
{
    loop_recv(conn_worker(c)->loop, &c->io);
    c->flags |= CF_RECV_ARMED;
}

/* The output is the connection's last and its close follows as soon as it
 * is out (conn_drain_closed on plain TCP): the last bytes wait in the
 * kernel for the close (`more`, MSG_MORE), so that the FIN leaves in their
 * segment rather than in one of its own, a whole transmit, receive and
 * wake-up of the peer less.  Such a connection has the peer's end
 * (CF_RD_EOF), which an open one seldom has (conn_send_start). */
static bool conn_closes_after_output(const struct ringws_conn *c)
{
    return c->state == CONN_DRAIN && !(c->flags & CF_WANT_SHUTWR);
}

/* The send path takes the worker from its caller (conn_flush_all has it):
 * a fan-out pays no lookup per delivery. */
static inline void conn_send_bytes(struct worker *w, struct ringws_conn *c, const void *p,
                                   size_t n, bool more)
{
    if (more)
        loop_send_more(w->loop, &c->io, p, n);
    else
        loop_send(w->loop, &c->io, p, n);
    c->flags |= CF_SEND_BUSY;
}

void conn_wire_send(struct ringws_conn *c, const void *p, size_t n)
{
    conn_send_bytes(conn_worker(c), c, p, n, false);
}

static inline void conn_send_msg(struct worker *w, struct ringws_conn *c, struct msghdr *m,
                                 bool more)
{
    if (more)
        loop_sendmsg_more(w->loop, &c->io, m);
    else
        loop_sendmsg(w->loop, &c->io, m);
    c->flags |= CF_SEND_BUSY;
}

void conn_wire_shutdown(struct ringws_conn *c)
{
    loop_shutdown(conn_worker(c)->loop, &c->io, SHUT_WR);
    c->flags |= CF_SHUT_BUSY;
}

/* Nothing of the connection is in the ring any more: the close refers to
 * nothing of it, and the connection is freed without waiting for it. */
void conn_wire_close(struct ringws_conn *c)
{
    loop_close_fd(conn_worker(c)->loop, c->io.fd);
}

/* Stops the armed receive (a pause, or nothing more to read): its end,
 * -ECANCELED, is then no failure (CF_PAUSE_CANCEL, conn_on_recv). */
static void conn_recv_cancel(struct ringws_conn *c)
{
    if ((c->flags & (CF_RECV_ARMED | CF_PAUSE_CANCEL)) != CF_RECV_ARMED)
        return;
    c->flags |= CF_PAUSE_CANCEL;
    loop_cancel_recv(conn_worker(c)->loop, &c->io);
}

/* The transport of the connection: the worker's sealing one (TLS) for
 * connections of its TLS listener, plain TCP for the others. */
static const struct transport_ops *conn_tp(const struct ringws_conn *c)
{
    return (c->flags & CF_TP_SEALED) ? conn_worker(c)->tp_sealed : &transport_tcp;
}

/* Only a sealing transport has a send to call for bytes of its own. */
void conn_wire_want(struct ringws_conn *c, bool want)
{
    if (!want || !(c->flags & CF_TP_SEALED)) {
        c->flags &= ~CF_TP_WRITE;
        return;
    }
    c->flags |= CF_TP_WRITE;
    conn_flush_later(c);
}

/* ---- pool -------------------------------------------------------------- */

/* Calls fn on every live connection of the worker.  The slabs are the list
 * of connections (a list of their own would cost every connection two
 * pointers); fn may free the connection it is given. */
static void conn_for_each(struct worker *w, void (*fn)(struct ringws_conn *c))
{
    for (uint32_t k = 0; k < w->n_slabs; k++)
        for (uint32_t i = 0; i < w->slabs[k]->used; i++)
            if (w->slabs[k]->conns[i].state != CONN_FREE)
                fn(&w->slabs[k]->conns[i]);
}

/* A slab of its own size and alignment (conn_slab_of), listed last: a
 * record's number (conn_number) is its place in the worker's slabs. */
static struct conn_slab *conn_slab_add(struct worker *w)
{
    struct conn_slab **grown;
    struct conn_slab *s;

    if ((uint64_t)(w->n_slabs + 1) * CONN_SLAB - 1 > TIMER_KEY_MAX)
        return NULL; /* numbers name timer nodes */
    grown = realloc(w->slabs, (w->n_slabs + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    w->slabs = grown;
    /* Not calloc: zeroing would touch every page at once. */
    s = aligned_alloc(CONN_SLAB_BYTES, CONN_SLAB_BYTES);
    if (!s)
        return NULL;
    s->w = w;
    s->index = w->n_slabs;
    s->used = 0;
    w->slabs[w->n_slabs++] = s;
    return s;
}

uint32_t conn_number(const struct ringws_conn *c)
{
    const struct conn_slab *s = conn_slab_of(c);

    return s->index * (uint32_t)CONN_SLAB + (uint32_t)(c - s->conns);
}

struct ringws_conn *conn_at(struct worker *w, uint32_t number)
{
    return &w->slabs[number / CONN_SLAB]->conns[number % CONN_SLAB];
}

struct timer_node *conn_timer_at(void *w, uint32_t key)
{
    return &conn_at(w, key)->timer;
}

static struct ringws_conn *conn_alloc(struct worker *w)
{
    struct ringws_conn *c;

    if (w->free_conns) {
        c = w->free_conns;
        w->free_conns = c->flush_next;
    } else {
        struct conn_slab *s = w->n_slabs ? w->slabs[w->n_slabs - 1] : NULL;

        if (!s || s->used == CONN_SLAB)
            s = conn_slab_add(w);
        if (!s)
            return NULL;
        c = &s->conns[s->used++];
    }
    memset(c, 0, sizeof(*c));
    STAT_ADD(w, conns_open, 1);
    return c;
}

static enum chunk_class chunk_class_of(const struct out_chunk *o)
{
    if (o->shared)
        return CHUNK_SHARED;
    return o->len <= CHUNK_SMALL_DATA ? CHUNK_SMALL : CHUNK_OTHER;
}

/* The memory a chunk pins beyond the bytes it will send, as counted against
 * the send-queue caps. */
static size_t chunk_overhead(const struct out_chunk *o)
{
    return chunk_class_of(o) == CHUNK_SMALL ? CHUNK_SMALL_BLOCK - o->len : OUT_CHUNK_OVERHEAD;
}

static struct out_chunk *chunk_alloc(struct worker *w, enum chunk_class cls, size_t data)
{
    struct out_chunk *o = cls == CHUNK_OTHER ? NULL : w->chunk_cache[cls];

    if (o) {
        w->chunk_cache[cls] = o->next;
        w->chunk_cached[cls]--;
        return o;
    }
    if (cls == CHUNK_SMALL)
        data = CHUNK_SMALL_DATA;
    else if (cls == CHUNK_SHARED)
        data = sizeof(const uint8_t *); /* the frame's address (out_chunk_bytes) */
    return malloc(sizeof(*o) + data);
}

static void chunk_free(struct worker *w, struct out_chunk *o)
{
    enum chunk_class cls = chunk_class_of(o);

    if (o->shared)
        pubsub_slot_release(o->shared);
    if (cls == CHUNK_OTHER || w->chunk_cached[cls] >= CHUNK_CACHE_MAX) {
        free(o);
        return;
    }
    o->next = w->chunk_cache[cls];
    w->chunk_cache[cls] = o;
    w->chunk_cached[cls]++;
}

static void chunk_cache_free(struct worker *w)
{
    for (int cls = 0; cls < CHUNK_OTHER; cls++) {
        while (w->chunk_cache[cls]) {
            struct out_chunk *o = w->chunk_cache[cls];
            w->chunk_cache[cls] = o->next;
            free(o);
        }
        w->chunk_cached[cls] = 0;
    }
}

static void conn_out_free(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);
    struct out_chunk *o = c->out_head;

    STAT_ADD(w, send_queue_bytes, -(uint64_t)c->out_bytes);
    while (o) {
        struct out_chunk *next = o->next;
        chunk_free(w, o);
        o = next;
    }
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
    c->out_inflight = 0;
}

static void conn_free(struct ringws_conn *c)
{
    struct worker *w = conn_worker(c);

    conn_report_owed(c); /* a worker that ends before its next flush */
    if (conn_handshaking(c))
        w->handshaking--;
    if (c->flags & CF_ADDR_COUNTED)
        atomic_fetch_sub(&w->srv->addr_counts[c->addr_slot], 1);
    timer_cancel(&w->wheel, &c->timer);
    conn_auth_gone(c);
    pubsub_conn_gone(c); /* while the streams tell which subscriptions shared frames */
    conn_ws_takeover_detach(c);
    conn_out_free(c);
    conn_held_release(c);
    if (c->flags & CF_TP_SEALED)
        w->tp_sealed->release(c);
    if (c->cold) {
        free(c->cold->ctl);
        if (!(c->flags & CF_TP_SEALED))
            free(c->cold->send_msg);
        free(c->cold);
        c->cold = NULL;
    }
    c->state = CONN_FREE;
    c->flush_next = w->free_conns;
    w->free_conns = c;
    STAT_ADD(w, conns_open, -1);
}

bool conn_in_ring(struct worker *w)
{
    const uint32_t in_ring = CF_RECV_ARMED | CF_SEND_BUSY | CF_SHUT_BUSY;

    for (uint32_t k = 0; k < w->n_slabs; k++)
        for (uint32_t i = 0; i < w->slabs[k]->used; i++)
            if (w->slabs[k]->conns[i].state != CONN_FREE &&
                (w->slabs[k]->conns[i].flags & in_ring))
                return true;
    return false;
}

/* Only once the ring is gone (worker_run): a send in flight reads its chunks
 * until then. */
void conn_free_all(struct worker *w)
{
    conn_for_each(w, conn_free);
    for (uint32_t k = 0; k < w->n_slabs; k++)
        free(w->slabs[k]);
    free(w->slabs);
    w->slabs = NULL;
    w->n_slabs = 0;
    w->free_conns = NULL;
    chunk_cache_free(w);
}

/* ---- pending input ----------------------------------------------------- */

/* The memory held by every connection's held input, per worker, within
 * max_partial_bytes: each connection is bounded on its own (head and body
 * limits, max_message), but only this bounds them all together. */
static bool conn_partial_take(struct worker *w, size_t more)
{
    uint64_t held = atomic_load_explicit(&w->stats.partial_bytes, memory_order_relaxed);

    if (held + more > w->srv->cfg.max_partial_bytes) {
        STAT_ADD(w, partial_over_budget, 1);
        return false;
    }
    STAT_ADD(w, partial_bytes, more);
    return true;
}

int conn_pend_store(struct worker *w, struct conn_pend *pd, const uint8_t *p, size_t n,
                    size_t limit)
{
    size_t need = (size_t)pd->len + n;

    if (need > limit || need > UINT32_MAX)
        return -EMSGSIZE;
    if (need > pd->cap) {
        size_t cap = pd->cap ? pd->cap : 1024;
        uint8_t *np;
        while (cap < need)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        if (!conn_partial_take(w, cap - pd->cap))
            return -ENOBUFS;
        np = realloc(pd->buf, cap);
        if (!np) {
            STAT_ADD(w, partial_bytes, -(uint64_t)(cap - pd->cap));
            return -ENOMEM;
        }
        pd->buf = np;
        pd->cap = (uint32_t)cap;
    }
    if (n)
        memcpy(pd->buf + pd->len, p, n);
    pd->len = (uint32_t)need;
    return 0;
}

struct conn_pend conn_pend_take(struct conn_pend *pd)
{
    struct conn_pend taken = *pd;

    *pd = (struct conn_pend){NULL, 0, 0};
    return taken;
}

void conn_pend_free(struct worker *w, struct conn_pend *taken)
{
    STAT_ADD(w, partial_bytes, -(uint64_t)taken->cap);
    free(taken->buf);
}

void conn_pend_release(struct worker *w, struct conn_pend *pd)
{
    struct conn_pend taken = conn_pend_take(pd);

    conn_pend_free(w, &taken);
}

int conn_held_put(struct ringws_conn *c, struct conn_pend pd)
{
    struct conn_held *h;

    if (!conn_cold_get(c))
        return -ENOMEM;
    h = calloc(1, sizeof(*h));
    if (!h) {
        conn_cold_trim(c);
        return -ENOMEM;
    }
    h->pd = pd;
    c->cold->held = h;
    return 0;
}

int conn_held_store(struct ringws_conn *c, const uint8_t *p, size_t n, size_t limit)
{
    int r;

    if (!conn_held(c) && conn_held_put(c, (struct conn_pend){NULL, 0, 0}) < 0)
        return -ENOMEM;
    r = conn_pend_store(conn_worker(c), &c->cold->held->pd, p, n, limit);
    if (r < 0 && !c->cold->held->pd.len)
        conn_held_release(c);
    return r;
}

struct conn_pend conn_held_take(struct ringws_conn *c)
{
    struct conn_held *h = conn_held(c);
    struct conn_pend taken = {NULL, 0, 0};

    if (h) {
        taken = h->pd;
        free(h);
        c->cold->held = NULL;
        conn_cold_trim(c);
    }
    return taken;
}

void conn_held_release(struct ringws_conn *c)
{
    struct conn_pend taken = conn_held_take(c);

    conn_pend_free(conn_worker(c), &taken);
}

/* ---- output ------------------------------------------------------------ */

/* The worker is the caller's (every connection's is the slab's): a fan-out
 * lists connections one after the other without reading it again. */
static inline void conn_flush_later_on(struct worker *w, struct ringws_conn *c)
{
    if (c->flags & CF_FLUSH_LISTED)
        return;
    c->flags |= CF_FLUSH_LISTED;
    c->flush_next = w->flush_head;
    w->flush_head = c;
}

void conn_flush_later(struct ringws_conn *c)
{
    conn_flush_later_on(conn_worker(c), c);
}

/* Returns what the chunk adds to the queue, which the caller counts in
 * send_queue_bytes: a fan-out counts all its chunks at once
 * (pubsub_deliver). */
static size_t conn_out_append(struct worker *w, struct ringws_conn *c, struct out_chunk *o)
{
    size_t bytes = o->len + chunk_overhead(o);

    o->next = NULL;
    o->off = 0;
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_bytes += bytes;
    conn_flush_later_on(w, c);
    return bytes;
}

int conn_queue_on(struct worker *w, struct ringws_conn *c, const void *a, size_t alen,
                  const void *b, size_t blen)
{
    size_t n = alen + blen;
    struct out_chunk *o;

    if (c->flags & (CF_TEARDOWN | CF_WR_SHUT))
        return -EPIPE;
    if (n > UINT32_MAX)
        return -EMSGSIZE;
    o = chunk_alloc(w, n <= CHUNK_SMALL_DATA ? CHUNK_SMALL : CHUNK_OTHER, n);
    if (!o)
        return -ENOMEM;
    o->shared = NULL;
    o->len = (uint32_t)n;
    memcpy(o->data, a, alen);
    if (blen)
        memcpy(o->data + alen, b, blen);
    STAT_ADD(w, send_queue_bytes, conn_out_append(w, c, o));
    return 0;
}

int conn_queue_shared(struct worker *w, struct ringws_conn *c, struct pub_slot *s,
                      const struct pub_frame *f)
{
    struct out_chunk *o;

    if (c->flags & (CF_TEARDOWN | CF_WR_SHUT))
        return -EPIPE;
    o = chunk_alloc(w, CHUNK_SHARED, 0);
    if (!o)
        return -ENOMEM;
    o->shared = s;
    o->len = f->len;
    memcpy(o->data, &f->bytes, sizeof(f->bytes));
    s->local_refs++;
    conn_out_append(w, c, o);
    return 0;
}

int conn_queue_static(struct ringws_conn *c, const void *bytes, size_t len)
{
    struct worker *w = conn_worker(c);
    struct pub_frame f = {.bytes = bytes, .len = (uint32_t)len};
    int r;

    if (len > UINT32_MAX)
        return -EMSGSIZE;
    r = conn_queue_shared(w, c, &w->static_slot, &f);
    if (r == 0)
        STAT_ADD(w, send_queue_bytes, len + OUT_CHUNK_OVERHEAD);
    return r;
}

void conn_out_rewind(struct ringws_conn *c, struct out_chunk *mark)
{
    struct worker *w = conn_worker(c);
    struct out_chunk *o = mark ? mark->next : c->out_head;

    if (mark)
        mark->next = NULL;
    else
        c->out_head = NULL;
    c->out_tail = mark;
    while (o) {
        struct out_chunk *next = o->next;
        c->out_bytes -= o->len + chunk_overhead(o);
        STAT_ADD(w, send_queue_bytes, -(uint64_t)(o->len + chunk_overhead(o)));
        chunk_free(w, o);
        o = next;
    }
}

bool conn_drop_queued(struct ringws_conn *c,
                      bool (*match)(const struct out_chunk *o, const void *arg),
                      const void *arg, size_t room, size_t cap)
{
    struct worker *w = conn_worker(c);
    struct out_chunk *prev = NULL, *o = c->out_head;
    unsigned skip = c->out_inflight;

    /* Chunks a send in flight points at, and a partly sent head, stay. */
    if (o && o->off && !skip)
        skip = 1;
    for (; o && skip; skip--) {
        prev = o;
        o = o->next;
    }
    while (o && c->out_bytes + room > cap) {
        struct out_chunk *next = o->next;
        if (!match(o, arg)) {
            prev = o;
            o = next;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            c->out_head = next;
        if (c->out_tail == o)
            c->out_tail = prev;
        c->out_bytes -= o->len + chunk_overhead(o);
        STAT_ADD(w, send_queue_bytes, -(uint64_t)(o->len + chunk_overhead(o)));
        chunk_free(w, o);
        STAT_ADD(w, fanout_dropped, 1);
        o = next;
    }
    return c->out_bytes + room <= cap;
}

unsigned conn_chunk_pieces(const struct ringws_conn *c, const struct out_chunk *o, uint32_t off,
                           struct iovec iov[2])
{
    const uint8_t *p = out_chunk_bytes(o);
    const struct pub_msg *m = o->shared && (c->flags & CF_ENVELOPE) ? o->shared->msg : NULL;
    const struct pub_frame *src;
    uint32_t payload;

    if (!m || p == m->raw.bytes) {
        iov[0] = (struct iovec){(void *)(p + off), o->len - off};
        return 1;
    }
    /* A compressed envelope frame's head has RSV1 set, and its payload is
     * the compressed frame's. */
    src = p[0] & WS_RSV1 ? &m->z : &m->raw;
    payload = src->len - (src == &m->z ? m->z_hdr : m->frame_hdr);
    return envelope_pieces(p, o->len - payload, src->bytes + src->len - payload, payload, off,
                           iov);
}

void conn_chunk_copy(const struct ringws_conn *c, const struct out_chunk *o, uint32_t off,
                     uint8_t *dst, size_t n)
{
    struct iovec iov[2];
    unsigned pieces = conn_chunk_pieces(c, o, off, iov);

    for (unsigned i = 0; i < pieces && n; i++) {
        size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;
        memcpy(dst, iov[i].iov_base, k);
        dst += k;
        n -= k;
    }
}

struct conn_cold *conn_cold_get(struct ringws_conn *c)
{
    if (!c->cold)
        c->cold = calloc(1, sizeof(*c->cold));
    return c->cold;
}

void conn_cold_trim(struct ringws_conn *c)
{
    const struct conn_cold *cs = c->cold;

    if (cs && !cs->auth && !cs->wait && !cs->pmd && !cs->ctl && !cs->held && !cs->send_msg &&
        !cs->n) {
        free(c->cold);
        c->cold = NULL;
    }
}

/* A batch for a gathered send of `iovs` pieces, held in the cold part
 * while in flight (freed by conn_on_send); NULL when no memory is left. */
static struct send_batch *conn_batch_alloc(struct ringws_conn *c, unsigned iovs)
{
    if (!conn_cold_get(c))
        return NULL;
    return malloc(sizeof(struct send_batch) + iovs * sizeof(struct iovec));
}

/* Sends n gathered pieces of the first `chunks` chunks (the batch is freed
 * by conn_on_send). */
static inline void conn_send_batch(struct worker *w, struct ringws_conn *c, struct send_batch *b,
                                   unsigned n, unsigned chunks, bool more)
{
    c->out_inflight = (uint8_t)chunks;
    memset(&b->msg, 0, sizeof(b->msg));
    b->msg.msg_iov = b->iov;
    b->msg.msg_iovlen = n;
    c->cold->send_msg = &b->msg;
    conn_send_msg(w, c, &b->msg, more);
}

/* The queued plaintext goes on the wire as it is (a transport without a
 * send of its own): one chunk as it is, several in one gathered send. */
static inline void conn_send_queue(struct worker *w, struct ringws_conn *c, bool more)
{
    struct out_chunk *o = c->out_head;
    struct send_batch *b = NULL;
    unsigned n = 0;

    if (o->next)
        b = conn_batch_alloc(c, SEND_IOV_MAX);
    if (!o->next || !b) {
        c->out_inflight = 1;
        conn_send_bytes(w, c, out_chunk_bytes(o) + o->off, o->len - o->off, more);
        return;
    }
    for (; o && n < SEND_IOV_MAX; o = o->next, n++) {
        b->iov[n].iov_base = (void *)(out_chunk_bytes(o) + o->off);
        b->iov[n].iov_len = o->len - o->off;
    }
    conn_send_batch(w, c, b, n, n, more);
}

/* The same for a ringws.v1 connection, whose shares of messages are two
 * pieces each (conn_chunk_pieces): always a gathered send, but for the
 * first piece alone when no memory is left for the batch. */
static void conn_send_pieces(struct worker *w, struct ringws_conn *c, bool more)
{
    struct out_chunk *o = c->out_head;
    struct send_batch *b = conn_batch_alloc(c, 2 * SEND_IOV_MAX);
    unsigned n = 0, chunks = 0;

    if (!b) {
        struct iovec first[2];
        conn_chunk_pieces(c, o, o->off, first);
        c->out_inflight = 1;
        conn_send_bytes(w, c, first[0].iov_base, first[0].iov_len, more);
        return;
    }
    for (; o && chunks < SEND_IOV_MAX; o = o->next, chunks++)
        n += conn_chunk_pieces(c, o, o->off, &b->iov[n]);
    conn_send_batch(w, c, b, n, chunks, more);
}

/* Starts one send of the queued output, through the transport's own when
 * it seals.  A test of flags, not a call, for a plain raw connection:
 * fan-out pays it per delivery.  Only a connection with the peer's end in
 * (CF_RD_EOF) can be sending its last output. */
static inline void conn_send_start(struct worker *w, struct ringws_conn *c)
{
    if (!(c->flags & (CF_TP_SEALED | CF_ENVELOPE | CF_RD_EOF)))
        conn_send_queue(w, c, false);
    else if (c->flags & CF_TP_SEALED)
        w->tp_sealed->send(c);
    else if (c->flags & CF_ENVELOPE)
        conn_send_pieces(w, c, (c->flags & CF_RD_EOF) && conn_closes_after_output(c));
    else
        conn_send_queue(w, c, conn_closes_after_output(c));
}

/* n bytes of the queue left (at most what is queued), counted in
 * send_queue_bytes.  Forced inline: the send completion runs it per send (a
 * fan-out: per delivery), and as a call of its own it costs more than the
 * count. */
static inline __attribute__((always_inline)) void
conn_out_consume(struct worker *w, struct ringws_conn *c, size_t n)
{
    size_t held = c->out_bytes;

    c->out_bytes -= n;
    while (n) {
        struct out_chunk *o = c->out_head;
        size_t left = o->len - o->off;
        if (n < left) {
            o->off += (uint32_t)n;
            break;
        }
        n -= left;
        c->out_bytes -= chunk_overhead(o);
        c->out_head = o->next;
        chunk_free(w, o);
    }
    if (!c->out_head)
        c->out_tail = NULL;
    STAT_ADD(w, send_queue_bytes, c->out_bytes - held);
}

/* The queue may have been dropped while a sealed send was in flight (an
 * abort): what left then is no longer queued. */
void conn_wire_consumed(struct ringws_conn *c, size_t n)
{
    size_t queued = 0;

    for (const struct out_chunk *o = c->out_head; o && queued < n; o = o->next)
        queued += o->len - o->off;
    conn_out_consume(conn_worker(c), c, n < queued ? n : queued);
}

/* ---- the way down ------------------------------------------------------ */

/* Reports on_close once, and never inside another callback: the
 * application may free its state in on_close and must not find it gone
 * when a call of its own returns.  A callback reaches the library only
 * through the API, so an API call that can end a connection either leaves
 * that to the flush step (a full send queue: CF_SLOW_SEND) or marks itself
 * (w->in_api: ringws_close, whose abort when no memory is left for the
 * close frame is reported here); inside it the report is owed and made by
 * the flush step, with its code and no reason (an abort carries none). */
void conn_report_close(struct ringws_conn *c, uint16_t code, const char *reason,
                       size_t reason_len)
{
    struct worker *w = conn_worker(c);
    const struct ringws_callbacks *cb = &w->srv->cfg.cb;

    if ((c->flags & (CF_OPENED | CF_REPORTED | CF_CLOSE_OWED)) != CF_OPENED)
        return;
    if (w->in_api) {
        c->flags |= CF_CLOSE_OWED;
        c->close_code = code;
        conn_flush_later(c);
        return;
    }
    c->flags |= CF_REPORTED;
    if (cb->on_close)
        cb->on_close(c, code, reason, reason_len, w->srv->cfg.user);
}

static void conn_report_owed(struct ringws_conn *c)
{
    if (!(c->flags & CF_CLOSE_OWED))
        return;
    c->flags &= ~CF_CLOSE_OWED;
    conn_report_close(c, c->close_code, NULL, 0);
}

/* Closes and frees the connection once the ring no longer references it.
 * Must be the last thing a completion handler does with c. */
void conn_settle(struct ringws_conn *c)
{
    /* A waiting HTTP publish is answered by another worker's message, which
     * points at c. */
    uint32_t busy = c->flags & (CF_RECV_ARMED | CF_SEND_BUSY | CF_SHUT_BUSY | CF_PUB_WAIT |
                                CF_ENGINE_WAIT);

    if (!(c->flags & CF_TEARDOWN))
        return;
    if (busy && !(c->flags & CF_CANCELLED)) {
        if ((c->flags & (CF_RECV_ARMED | CF_PAUSE_CANCEL)) == CF_RECV_ARMED)
            loop_cancel_recv(conn_worker(c)->loop, &c->io);
        if (c->flags & CF_SEND_BUSY)
            loop_cancel_send(conn_worker(c)->loop, &c->io);
        c->flags |= CF_CANCELLED; /* a shutdown in flight ends by itself */
    }
    /* A listed connection is settled again by conn_flush_all: freeing it
     * now would leave a stale entry on the flush list. */
    if (busy || (c->flags & CF_FLUSH_LISTED))
        return;
    conn_tp(c)->close(c);
    conn_free(c);
}

/* Tears the connection down now: queued output is dropped. */
static void conn_teardown(struct ringws_conn *c)
{
    if (c->flags & CF_TEARDOWN)
        return;
    conn_report_close(c, c->close_code ? c->close_code : WS_CLOSE_ABNORMAL, NULL, 0);
    c->flags |= CF_TEARDOWN;
    timer_cancel(&conn_worker(c)->wheel, &c->timer);
    /* A send in flight still reads its chunks (until its cancellation
     * completes): they go with the connection, not before. */
    if (!(c->flags & CF_SEND_BUSY))
        conn_out_free(c);
    conn_held_release(c);
    conn_flush_later(c); /* settles after the current completion */
}

void conn_state_set(struct ringws_conn *c, enum conn_state state)
{
    if (conn_handshaking(c) && state != CONN_HTTP && state != CONN_PROXY)
        conn_worker(c)->handshaking--;
    c->state = (uint8_t)state;
}

static void conn_drain_with(struct ringws_conn *c, uint32_t flag)
{
    if (c->state == CONN_DRAIN || (c->flags & CF_TEARDOWN))
        return;
    conn_state_set(c, CONN_DRAIN);
    c->flags |= flag;
    conn_held_release(c);
    conn_set_deadline(c, conn_worker(c)->srv->cfg.close_timeout_ms);
    conn_flush_later(c);
}

/* Stops reading requests or frames: flush what is queued, shut down our
 * side, and close when the peer closes its side or the close timeout ends.
 * Waiting for the peer's EOF keeps its unread data from turning our close
 * into a reset that could destroy the last response in flight. */
void conn_drain(struct ringws_conn *c)
{
    conn_drain_with(c, CF_WANT_SHUTWR);
}

/* The closing handshake is complete (the peer's close frame came, ours is
 * queued): the peer sends nothing more (RFC 6455 section 5.5.1), so no
 * input is left to turn the close into a reset, and the server closes TCP
 * first (section 7.1.1).  The connection closes as soon as its output is
 * out: the FIN leaves in its last segment (conn_closes_after_output), and
 * neither a shutdown (which the ring runs on a worker thread) nor a wait
 * for the peer's EOF is needed.  Its receive is cancelled at once, in the
 * batch that sends the close frame, rather than on the way down a turn
 * after it.  A sealing transport still says its last words (close_notify)
 * on the way down of conn_drain. */
void conn_drain_closed(struct ringws_conn *c)
{
    if (c->flags & CF_TP_SEALED) {
        conn_drain_with(c, CF_WANT_SHUTWR);
        return;
    }
    conn_drain_with(c, CF_RD_EOF);
    if (conn_closes_after_output(c))
        conn_recv_cancel(c);
}

void conn_wire_drop_queue(struct ringws_conn *c)
{
    conn_out_free(c);
}

/* An abrupt end for the protocol (on_close as conn_teardown reports it,
 * queued output dropped) in which the transport still says its last
 * words before the close: the way down of conn_drain, bounded by the close
 * timeout. */
static void conn_end_with_words(struct ringws_conn *c)
{
    conn_report_close(c, c->close_code ? c->close_code : WS_CLOSE_ABNORMAL, NULL, 0);
    conn_out_free(c);
    conn_drain(c);
}

/* Ends the connection abruptly (a deadline, a peer gone without a closing
 * handshake, no memory): queued output is dropped.  A sealing transport
 * that owes its peer words of its own first (TLS: close_notify, which
 * RFC 8446 section 6.1 asks before every close but one after an error
 * alert) gets them out on the draining connection's way down. */
void conn_abort(struct ringws_conn *c)
{
    if ((c->flags & (CF_TP_SEALED | CF_TEARDOWN)) == CF_TP_SEALED &&
        c->state != CONN_DRAIN && conn_worker(c)->tp_sealed->last_words(c)) {
        conn_end_with_words(c);
        return;
    }
    conn_teardown(c);
}

/* The transport cannot go on: the connection ends as abruptly as a reset
 * would end it (1006 to on_close), except that the transport's own last
 * words (a TLS alert) still go out before it closes. */
void conn_wire_fail(struct ringws_conn *c, bool last_words)
{
    if (c->flags & CF_TEARDOWN)
        return;
    if (last_words && c->state != CONN_DRAIN)
        conn_end_with_words(c);
    else
        conn_teardown(c);
}

void conn_proto_none(struct ringws_conn *c)
{
    (void)c;
}

/* Input after the conversation is over is discarded. */
static void conn_drain_input(struct ringws_conn *c, uint8_t *buf, size_t n)
{
    (void)c;
    (void)buf;
    (void)n;
}

/* The flush step closes once the peer's EOF and our shutdown are both in. */
static void conn_drain_eof(struct ringws_conn *c)
{
    conn_flush_later(c);
}

/* A peer found too slow after its close frame was queued: its close is out
 * already. */
static void conn_drain_flush(struct ringws_conn *c)
{
    c->flags &= ~CF_PROTO_DEFERRED;
}

/* The draining state is the connection's own, whichever protocol led to
 * it: a late peer (the close timeout) is aborted. */
static const struct proto_ops conn_drain_ops = {
    .input = conn_drain_input,
    .eof = conn_drain_eof,
    .timer = conn_teardown,
    .stop = conn_proto_none,
    .flush = conn_drain_flush,
    .resume = conn_proto_none,
};

/* The protocol of each state; indexed by c->state, so that a state costs a
 * connection no memory. */
static const struct proto_ops *const conn_protos[] = {
    [CONN_HTTP] = &http_proto_ops,
    [CONN_WS] = &ws_proto_ops,
    [CONN_CLOSING] = &ws_closing_proto_ops,
    [CONN_DRAIN] = &conn_drain_ops,
    [CONN_PROXY] = &proxy_proto_ops,
};

/* Drained: the output is out, the peer's EOF in (or its close frame, with
 * conn_drain_closed), and our side shut down where a shutdown is wanted. */
static bool conn_drained(const struct ringws_conn *c)
{
    uint32_t f = c->flags;

    return c->state == CONN_DRAIN && !c->out_head &&
           !(f & (CF_SEND_BUSY | CF_SHUT_BUSY | CF_TP_WRITE)) && (f & CF_RD_EOF) &&
           (!(f & CF_WANT_SHUTWR) || (f & CF_WR_SHUT));
}

/* What was left for the flush step, outside every callback: an owed
 * on_close, and the protocol's deferred work (a WebSocket peer too slow
 * for what was queued to it). */
static void conn_flush_deferred(struct ringws_conn *c)
{
    conn_report_owed(c);
    if ((c->flags & CF_PROTO_DEFERRED) && !(c->flags & CF_TEARDOWN))
        conn_protos[c->state]->flush(c);
}

/* Called for every connection with work after each batch of completions:
 * starts sends (one per connection per loop turn, gathering every queued
 * chunk), shutdowns, recv re-arms and teardowns. */
void conn_flush_all(struct worker *w)
{
    struct ringws_conn *c = w->flush_head;

    w->flush_head = NULL;
    while (c) {
        struct ringws_conn *next = c->flush_next;
        c->flags &= ~CF_FLUSH_LISTED;
        if (c->flags & (CF_CLOSE_OWED | CF_PROTO_DEFERRED))
            conn_flush_deferred(c);
        if (c->flags & CF_TEARDOWN) {
            conn_settle(c);
        } else {
            /* While a cancelled recv is still armed, the re-arm waits for
             * its last completion, which lists the connection again. */
            if ((c->flags & (CF_RECV_AGAIN | CF_RECV_ARMED | CF_RD_EOF | CF_RECV_PAUSED)) ==
                CF_RECV_AGAIN) {
                conn_recv_arm(c);
                c->flags &= ~CF_RECV_AGAIN;
            }
            /* CF_TP_WRITE is tested only when nothing is queued: the
             * plain transport pays nothing for it. */
            if (!(c->flags & CF_SEND_BUSY) && (c->out_head || (c->flags & CF_TP_WRITE))) {
                STAT_ADD(w, sends, 1);
                conn_send_start(w, c);
            }
            else if ((c->flags & (CF_SEND_BUSY | CF_WANT_SHUTWR | CF_WR_SHUT |
                                  CF_SHUT_BUSY | CF_PUB_WAIT | CF_TP_WRITE)) == CF_WANT_SHUTWR &&
                     !c->out_head)
                conn_tp(c)->shutdown(c);
            if (conn_drained(c)) {
                c->flags |= CF_TEARDOWN;
                conn_settle(c);
            }
        }
        c = next;
    }
}

/* ---- deadlines --------------------------------------------------------- */

void conn_set_deadline(struct ringws_conn *c, unsigned ms)
{
    struct worker *w = conn_worker(c);

    if (!ms) {
        timer_cancel(&w->wheel, &c->timer);
        return;
    }
    timer_arm(&w->wheel, &c->timer, conn_number(c),
              worker_tick(w) + timer_ms_to_ticks(ms));
}

void conn_on_timer(struct timer_node *n)
{
    struct ringws_conn *c =
        (struct ringws_conn *)((char *)n - offsetof(struct ringws_conn, timer));

    conn_protos[c->state]->timer(c);
}

/* ---- completions ------------------------------------------------------- */

#define ADDR_BUCKETS 65536u

/* The bucket of a peer: IPv4 by address (also when a dual-stack listener
 * reports it as ::ffff:a.b.c.d), IPv6 by its /64 (one host may hold a whole
 * /64).  The hash is keyed with a secret of the process, so that nobody can
 * pick addresses (from an IPv6 /48, say) that land in another's bucket. */
static uint16_t conn_addr_bucket(const struct ringws_server *srv, const struct sockaddr *sa)
{
    const uint8_t *key = NULL;
    size_t len = 0;

    if (sa->sa_family == AF_INET) {
        key = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        len = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        bool v4 = IN6_IS_ADDR_V4MAPPED(a6);
        key = a6->s6_addr + (v4 ? 12 : 0);
        len = v4 ? 4 : 8; /* the length is hashed too: no v4 key equals a v6 one */
    }
    return (uint16_t)siphash24(srv->addr_key, key, len);
}

/* Takes one connection of the peer's budget; false when it is spent.
 * *counted: a counter was taken, to be given back when the connection goes. */
static bool conn_addr_take(struct ringws_server *srv, const struct sockaddr *peer,
                           socklen_t len, uint16_t *slot, bool *counted)
{
    uint16_t n;

    *counted = false;
    if (!srv->addr_counts || !peer || len < sizeof(sa_family_t))
        return true;
    *slot = conn_addr_bucket(srv, peer);
    n = atomic_fetch_add(&srv->addr_counts[*slot], 1);
    if (n < srv->cfg.max_per_address) {
        *counted = true;
        return true;
    }
    atomic_fetch_sub(&srv->addr_counts[*slot], 1);
    return false;
}

bool conn_addr_loopback(const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24 == 127;
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

int conn_addr_table_create(struct ringws_server *srv)
{
    if (!srv->cfg.max_per_address)
        return 0;
    if (srv->cfg.max_per_address > UINT16_MAX)
        return -EINVAL;
    if (getrandom(srv->addr_key, sizeof(srv->addr_key), 0) != sizeof(srv->addr_key))
        return -EIO; /* a guessable key would let peers aim at others' buckets */
    srv->addr_counts = calloc(ADDR_BUCKETS, sizeof(*srv->addr_counts));
    return srv->addr_counts ? 0 : -ENOMEM;
}

/* The connection holds a per-address counter, given back by conn_free. */
static void conn_addr_hold(struct ringws_conn *c, uint16_t slot, bool counted)
{
    if (counted) {
        c->addr_slot = slot;
        c->flags |= CF_ADDR_COUNTED;
    }
}

bool conn_peer_known(struct ringws_conn *c, const struct sockaddr *peer, socklen_t len)
{
    struct worker *w = conn_worker(c);
    uint16_t slot = 0;
    bool counted;

    if (!conn_addr_take(w->srv, peer, len, &slot, &counted)) {
        STAT_ADD(w, refused_per_address, 1);
        return false;
    }
    conn_addr_hold(c, slot, counted);
    if (peer && conn_addr_loopback(peer, len))
        c->flags |= CF_PEER_LOCAL;
    return true;
}

/* A direct peer is judged before anything is allocated for it; a proxied
 * one once its header has named it (conn_proxy.c). */
void conn_accepted(struct worker *w, bool sealed, bool proxied, int fd,
                   const struct sockaddr *peer, socklen_t peer_len)
{
    const struct ringws_config *cfg = &w->srv->cfg;
    struct ringws_conn *c = NULL;
    uint16_t slot = 0;
    bool counted = false;

    if (!proxied && !conn_addr_take(w->srv, peer, peer_len, &slot, &counted)) {
        STAT_ADD(w, refused_per_address, 1);
        loop_close_fd(w->loop, fd);
        return;
    }
    if (worker_conns(w) < cfg->max_connections)
        c = conn_alloc(w);
    if (!c && counted)
        atomic_fetch_sub(&w->srv->addr_counts[slot], 1);
    if (!c) {
        /* Refused cheaply: a close, nothing allocated. */
        STAT_ADD(w, refused, 1);
        loop_close_fd(w->loop, fd);
        log_msg(LOG_LEVEL_DEBUG, "worker %u: connection refused (limit %u)", w->id,
                cfg->max_connections);
        return;
    }
    STAT_ADD(w, accepted, 1);
    conn_addr_hold(c, slot, counted);
    /* Without the peer's address only a loopback listener vouches for it;
     * where neither does, the peer counts as remote.  Behind a proxy the
     * listener vouches for nothing: the header decides. */
    if (!proxied && (peer ? conn_addr_loopback(peer, peer_len) : w->srv->listen_loopback))
        c->flags |= CF_PEER_LOCAL;
    c->io.fd = fd;
    c->state = proxied ? CONN_PROXY : CONN_HTTP;
    w->handshaking++;
    if (sealed) {
        c->flags |= CF_TP_SEALED;
        if (w->tp_sealed->open(c) < 0) {
            conn_teardown(c); /* nothing to report: closed by the flush step */
            return;
        }
    }
    conn_recv_arm(c);
    conn_set_deadline(c, cfg->handshake_timeout_ms);
}

void conn_input(struct ringws_conn *c, uint8_t *buf, size_t n)
{
    conn_protos[c->state]->input(c, buf, n);
}

void conn_wire_input(struct ringws_conn *c, uint8_t *buf, size_t n)
{
    if (c->flags & CF_TP_SEALED)
        conn_worker(c)->tp_sealed->input(c, buf, n);
    else
        conn_input(c, buf, n);
}

/* Also called again by the protocol while input received before the EOF
 * waits to be parsed (the HTTP resume). */
void conn_on_eof(struct ringws_conn *c)
{
    c->flags |= CF_RD_EOF;
    conn_protos[c->state]->eof(c);
}

/* Back-pressure: a peer that sends faster than it reads the answers (an echo
 * client, a pipelining HTTP client) is not read from while more than half
 * the send-queue cap waits for it, and is read again below a quarter.  The
 * cap itself then only meets applications that push on their own. */
static void conn_recv_pause(struct ringws_conn *c)
{
    c->flags |= CF_RECV_PAUSED;
    conn_recv_cancel(c);
}

void conn_pause_if_backlogged(struct ringws_conn *c)
{
    if ((c->flags & (CF_RECV_PAUSED | CF_TEARDOWN)) || !conn_backlogged(c))
        return;
    conn_recv_pause(c);
}

static void conn_resume_if_drained(struct ringws_conn *c)
{
    if ((c->flags & (CF_RECV_PAUSED | CF_TP_HOLD)) != CF_RECV_PAUSED ||
        c->out_bytes > conn_worker(c)->srv->cfg.max_send_queue / 4)
        return;
    c->flags &= ~CF_RECV_PAUSED;
    c->flags |= CF_RECV_AGAIN;
    conn_protos[c->state]->resume(c);
}

/* A transport that cannot take more input for now (a handshake put off)
 * stops reading, as back-pressure does; unheld, reading resumes unless
 * answers still pile up. */
void conn_wire_hold(struct ringws_conn *c, bool hold)
{
    if (hold) {
        c->flags |= CF_TP_HOLD;
        if (!(c->flags & (CF_RECV_PAUSED | CF_TEARDOWN)))
            conn_recv_pause(c);
        return;
    }
    c->flags &= ~CF_TP_HOLD;
    conn_resume_if_drained(c);
    conn_flush_later(c);
}

/* res > 0: bytes at p; 0: the peer's EOF; < 0: -errno.  ended: the receive
 * request is over (the kernel ended a multishot, or a cancel did). */
void conn_on_recv(void *ctx, struct loop_conn *lc, uint8_t *p, int res, bool ended)
{
    struct worker *w = ctx;
    struct ringws_conn *c = conn_of(lc);
    bool paused_by_us = false;

    if (ended) {
        paused_by_us = c->flags & CF_PAUSE_CANCEL;
        c->flags &= ~(CF_RECV_ARMED | CF_PAUSE_CANCEL);
    }
    if (res > 0) {
        STAT_ADD(w, bytes_received, (unsigned)res);
        if (c->flags & CF_TEARDOWN)
            ;
        /* A PROXY header comes before TLS: its state takes the bytes
         * first.  Tested only for sealed connections: plain ones pay
         * nothing for it. */
        else if ((c->flags & CF_TP_SEALED) && c->state != CONN_PROXY)
            w->tp_sealed->input(c, p, (size_t)res);
        else
            conn_input(c, p, (size_t)res);
    } else if (res == 0) {
        /* A sealing transport may have heard the end first (close_notify). */
        if (!(c->flags & (CF_TEARDOWN | CF_RD_EOF)))
            conn_on_eof(c);
    } else if (res == -ECANCELED && paused_by_us) {
        /* Reading was paused for back-pressure (resumed by conn_on_send),
         * or the closing handshake is complete (CF_RD_EOF). */
    } else if (res != -ENOBUFS) {
        /* -ECANCELED after a teardown, or the peer reset the connection. */
        c->flags |= CF_RD_EOF;
        conn_teardown(c);
    }
    conn_pause_if_backlogged(c);
    if (ended && !(c->flags & (CF_TEARDOWN | CF_RD_EOF | CF_RECV_PAUSED))) {
        /* The kernel ended the multishot (buffers ran out, or it chose to):
         * re-arm once this batch has returned its buffers. */
        c->flags |= CF_RECV_AGAIN;
        conn_flush_later_on(w, c);
    }
    conn_settle(c);
}

void conn_on_send(void *ctx, struct loop_conn *lc, int res)
{
    struct ringws_conn *c = conn_of(lc);
    struct worker *w = ctx;

    c->flags &= ~CF_SEND_BUSY;
    c->out_inflight = 0;
    if (res > 0)
        STAT_ADD(w, bytes_sent, (unsigned)res);
    if (!(c->flags & CF_TP_SEALED) && c->cold) {
        free(c->cold->send_msg);
        c->cold->send_msg = NULL;
    }
    if (res < 0) {
        if (!(c->flags & CF_TEARDOWN))
            log_msg(LOG_LEVEL_DEBUG, "worker %u: send: %s", w->id, strerror(-res));
        conn_teardown(c);
    } else if (!(c->flags & CF_TEARDOWN)) {
        if (c->flags & CF_TP_SEALED)
            w->tp_sealed->sent(c, (size_t)res);
        else
            conn_out_consume(w, c, (size_t)res);
        conn_resume_if_drained(c);
        /* CF_RD_EOF: a draining connection may close now that its
         * output is out (conn_drained). */
        if (c->out_head ||
            (c->flags & (CF_WANT_SHUTWR | CF_RECV_AGAIN | CF_TP_WRITE | CF_RD_EOF)))
            conn_flush_later_on(w, c);
    }
    conn_settle(c);
}

void conn_on_shutdown(struct loop_conn *lc, int res)
{
    struct ringws_conn *c = conn_of(lc);

    c->flags &= ~CF_SHUT_BUSY;
    c->flags |= CF_WR_SHUT;
    if (res < 0)
        conn_teardown(c);
    else if (!(c->flags & CF_TEARDOWN))
        conn_flush_later(c);
    conn_settle(c);
}

/* ---- server stop ------------------------------------------------------- */

static void conn_stop(struct ringws_conn *c)
{
    conn_protos[c->state]->stop(c);
}

void conn_stop_all(struct worker *w)
{
    conn_for_each(w, conn_stop);
}

/* A WebSocket gets the stop close; other connections are left alone. */
static void conn_disconnect(struct ringws_conn *c)
{
    if (c->state == CONN_WS)
        conn_protos[CONN_WS]->stop(c);
}

void conn_disconnect_all(struct worker *w)
{
    conn_for_each(w, conn_disconnect);
}

void conn_abort_all(struct worker *w)
{
    conn_for_each(w, conn_teardown);
}
