/* internal.h - the structures shared by the server's modules.
 *
 * Why it exists: the worker (loop.c), the connection state machine (conn*.c)
 * and the public API (server.c) all see the same worker and connection
 * structs; nothing here is part of the public API. */
#ifndef RINGWS_INTERNAL_H
#define RINGWS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "frame.h"
#include "history.h"
#include "http_parse.h"
#include "handshake.h"
#include "loop.h"
#include "proto.h"
#include "transport.h"
#include "ringws.h"
#include "timer.h"
#include "topic_index.h"

/* Largest request body accepted with Content-Length (413 beyond). */
#define RINGWS_MAX_HTTP_BODY (1u << 20)

/* ---- connections ------------------------------------------------------ */

/* ---- published messages (pubsub.c) ------------------------------------- */

struct pub_msg;

struct pub_pos;

/* Told, on the worker that published, how a publish ended
 * (pubsub_publish_from): err 0 and how many connections it was queued to
 * on every worker (with an engine of many nodes: how many nodes took it)
 * and, when the engine tells it only now, its position (else NULL); or
 * -errno (-EAGAIN: refused, try again later). */
typedef void pubsub_done_fn(void *arg, int err, uint64_t recipients, const struct pub_pos *pos);

/* A message's share held by one worker: its link in that worker's inbox and
 * a count of the worker's queued chunks, so that a worker touches the
 * message's shared atomic count once, not once per recipient. */
struct pub_slot {
    struct pub_slot *qnext; /* in the worker's inbox */
    struct pub_msg *msg;
    uint32_t local_refs;    /* queued chunks, +1 while delivering */
};

/* The subprotocol of the envelope (docs/PUBSUB.md). */
#define RINGWS_ENVELOPE "ringws.v1"

/* The epoch of a topic's sequence: 16 lowercase hex digits. */
#define SEQ_EPOCH_LEN 16

/* A frame of a message, as its subscribers' chunks send it. */
struct pub_frame {
    const uint8_t *bytes;
    uint32_t len;
};

/* The ringws.v1 frame of a message ("msg TOPIC EPOCH OFFSET\n" before the
 * payload), built by the first worker that needs it: its head (the frame
 * header and that line) is data, f.bytes; the payload after it is the raw
 * frame's, or the compressed frame's for the one with RSV1 (envelope_head),
 * not a copy (f.len counts both: the head is f.len minus the payload).  A
 * share of it is sent as two pieces (conn_chunk_pieces). */
struct pub_env {
    struct pub_frame f;
    uint8_t data[];
};

/* A publish whose publisher awaits the count of its recipients on every
 * worker (pubsub_publish_from with done): made for it alone, so that a
 * message held in history carries none of it. */
struct pub_count {
    _Atomic uint32_t pending;     /* workers yet to deliver it */
    unsigned origin;              /* worker that runs done */
    _Atomic uint64_t recipients;  /* connections it was queued to */
    pubsub_done_fn *done;
    void *done_arg;
};

/* One publish: the frame built once, shared by every recipient on every
 * worker, freed when the last worker lets go of its slot (and the history
 * of its topic of it). */
struct pub_msg {
    _Atomic uint32_t refs;        /* slots (and a reply) still holding it */
    uint16_t topic_len;           /* its bytes follow the raw frame */
    uint8_t frame_hdr;            /* bytes of raw before the payload */
    uint8_t z_hdr;                /* bytes of z before the payload */
    struct pub_count *count;      /* NULL: nobody awaits the count */
    struct pub_frame raw;         /* header and payload */
    /* The same message compressed (permessage-deflate, RSV1 set), made at
     * publish when some subscriber negotiated it and it pays; len 0: none.
     * Its bytes follow the topic's. */
    struct pub_frame z;
    _Atomic(struct pub_env *) env; /* NULL until a ringws.v1 subscriber needs it */
    _Atomic(struct pub_env *) zenv; /* the same from z, for one with deflate */
    uint64_t offset;              /* in its topic's sequence, from 1 */
    char epoch[SEQ_EPOCH_LEN];    /* of that sequence */
    /* While its topic's history holds it; hist.ns, when it was published
     * (timer_now_ns()), is set for every message. */
    struct hist_node hist;
    struct pub_slot slots[];      /* one per worker */
};

/* The message's topic name (topic_len bytes, not terminated). */
static inline const char *pub_msg_topic(const struct pub_msg *m)
{
    return (const char *)m->raw.bytes + m->raw.len;
}

/* ---- connections ------------------------------------------------------ */

/* One piece of queued output: bytes of its own, or a share of a published
 * frame. */
struct out_chunk {
    struct out_chunk *next;
    struct pub_slot *shared; /* NULL: the bytes are in data */
    uint32_t len;            /* bytes to send */
    uint32_t off;            /* bytes already sent */
    uint8_t data[];
};

/* A share of a published message keeps in its data the address of the
 * frame it sends (the raw one or the ringws.v1 one): one load from the
 * chunk itself, not two through the message. */
static inline const uint8_t *out_chunk_bytes(const struct out_chunk *o)
{
    const uint8_t *frame;

    if (!o->shared)
        return o->data;
    memcpy(&frame, o->data, sizeof(frame));
    return frame;
}

/* What a queued chunk costs beyond its bytes (header and allocator
 * rounding): counted so that a flood of tiny frames (empty pongs, 1-byte
 * echoes) meets the send-queue cap by the memory it really pins. */
#define OUT_CHUNK_OVERHEAD 32

enum conn_state {
    CONN_HTTP,    /* reading requests */
    CONN_WS,      /* WebSocket open */
    CONN_CLOSING, /* our close frame is out; reading until the peer's close */
    CONN_DRAIN,   /* nothing more to read: flush, shut down, wait for EOF */
    CONN_PROXY,   /* awaiting the PROXY protocol header (conn_proxy.c) */
    CONN_FREE,    /* not a connection: the record is on the free list */
};

enum conn_flag {
    CF_RECV_ARMED = 1u << 0,  /* a multishot recv is in flight */
    CF_SEND_BUSY = 1u << 1,   /* a send is in flight */
    CF_SHUT_BUSY = 1u << 2,   /* a shutdown is in flight */
    CF_CANCELLED = 1u << 4,   /* pending requests were cancelled */
    CF_TEARDOWN = 1u << 5,    /* going away: close and free once nothing is in flight */
    CF_WANT_SHUTWR = 1u << 7, /* shut down writing once output is flushed */
    CF_WR_SHUT = 1u << 8,     /* writing is shut down */
    CF_FLUSH_LISTED = 1u << 9,/* on the worker's flush list */
    CF_OPENED = 1u << 10,     /* on_open ran: on_close is owed */
    CF_REPORTED = 1u << 11,   /* on_close ran */
    CF_CLOSE_SENT = 1u << 12, /* our close frame is queued */
    CF_PING_OUT = 1u << 13,   /* an idle ping awaits an answer */
    CF_RECV_AGAIN = 1u << 14, /* re-arm the recv after this batch */
    CF_RD_EOF = 1u << 15,     /* the peer will send nothing more */
    CF_RECV_PAUSED = 1u << 16, /* reading stopped until output drains */
    CF_PAUSE_CANCEL = 1u << 17, /* we cancelled the recv: that pause, or nothing more to read */
    CF_ADDR_COUNTED = 1u << 18, /* holds a per-address counter */
    CF_PUBSUB = 1u << 19,     /* a subscriber connection: frames are commands */
    CF_PUB_WAIT = 1u << 20,   /* an HTTP publish awaits its recipient count */
    CF_PUB_CLOSE = 1u << 21,  /* ... and the connection closes after the answer */
    CF_SLOW_1008 = 1u << 22,  /* a slow peer to fail with 1008 after this batch */
    CF_SLOW_1013 = 1u << 23,  /* ... with 1013 */
    CF_SLOW_SEND = 1u << 24,  /* ... found by ringws_send, not by a publish */
    CF_CLOSE_OWED = 1u << 25, /* on_close is owed, once the callbacks return */
    CF_PEER_LOCAL = 1u << 26, /* the peer is on this host (a loopback address) */
    /* The connection came through the worker's TLS listener: its bytes go
     * through the worker's sealing transport (tp_sealed), not plain TCP. */
    CF_TP_SEALED = 1u << 27,
    /* The transport has wire bytes of its own to send (a TLS handshake's
     * answer, close_notify): the flush step calls its send though no
     * plaintext is queued, and shuts down writing only once it has none. */
    CF_TP_WRITE = 1u << 28,
    /* The transport takes no input for now: reading stays paused. */
    CF_TP_HOLD = 1u << 29,
    /* A subscriber that negotiated ringws.v1: messages come in the envelope
     * and commands are answered (docs/PUBSUB.md). */
    CF_ENVELOPE = 1u << 30,
    /* permessage-deflate negotiated (stateless both ways): messages may
     * come compressed, and go compressed when that pays. */
    CF_DEFLATE = 1u << 31,
};

/* A WebSocket whose command waits for the engine (pubsub_prepare, or a
 * publish whose position comes later): nothing more is read until
 * conn_engine_ready; what came after the command is kept unread (in its
 * cold part's wait).  It shares CF_PUB_CLOSE's bit, which
 * only an HTTP connection sets (and always with CF_PUB_WAIT, whose place in
 * conn_settle's wait it has). */
#define CF_ENGINE_WAIT CF_PUB_CLOSE

/* Work a protocol left for the flush step (its proto_ops flush): a
 * WebSocket peer too slow for what was queued to it. */
#define CF_PROTO_DEFERRED (CF_SLOW_1008 | CF_SLOW_1013 | CF_SLOW_SEND)

struct conn_auth;

struct sub_ref {
    struct topic *t;
    uint32_t idx; /* where the connection sits in t->subs */
};

/* What few connections need, kept out of the connection record (whose
 * every byte an idle connection pays): one allocation, made on first need
 * (conn_cold_get), freed once it holds nothing (conn_cold_trim) or with
 * the connection.  The connection's verified token (conn_auth.c), its
 * subscriptions (pubsub.c), a control frame split across receives
 * (conn_ws.c), the input held between receives (conn_held_*), and the
 * gathered send in flight or the TLS state. */
struct conn_wait;
struct conn_held;

struct conn_cold {
    struct conn_auth *auth; /* NULL: no token */
    struct conn_wait *wait; /* with CF_ENGINE_WAIT (conn_ws_pubsub.c) */
    /* permessage-deflate with context takeover (deflate_stream.h): its
     * streams; NULL: stateless both ways, or no compression. */
    struct deflate_takeover *pmd;
    uint8_t *ctl;           /* a control frame split across receives */
    struct conn_held *held; /* NULL: no input held */
    union {
        struct msghdr *send_msg; /* plain: in flight for a gathered send */
        void *tp_state;          /* sealed (CF_TP_SEALED): the transport's */
    };
    uint16_t n, cap;        /* subscriptions in refs */
    uint8_t ctl_len;        /* bytes of it in ctl */
    struct sub_ref refs[];
};

/* Input a protocol holds between receives, in memory counted against the
 * worker's max_partial_bytes (conn_pend_*): NULL and 0 while none is held. */
struct conn_pend {
    uint8_t *buf;
    uint32_t len;
    uint32_t cap;
};

/* What the protocol of the state holds between receives, in its own small
 * allocation beside the cold part (conn_held_*): only a request or a
 * message spanning receives needs it, and it is freed as it empties.  One
 * at a time, so they share their place: the upgrade takes the request's
 * bytes out of req before the frames after it are decoded into msg.  The
 * way down (conn.c) lets go of either as held. */
struct conn_held {
    union {
        struct conn_pend req; /* HTTP: a request spanning receives */
        struct conn_pend msg; /* WebSocket: a message being gathered */
        struct conn_pend pd;  /* whichever of them */
    };
    union {
        uint32_t req_seen; /* HTTP: bytes of req the parser found incomplete */
        uint32_t msg_tick; /* WebSocket: tick (low 32 bits) of the first
                            * byte of the message gathered in msg */
    };
};

struct ringws_conn {
    struct loop_conn io; /* first: the loop hands it back to conn.c */
    uint32_t flags;
    struct ringws_conn *flush_next; /* the flush list, or the free list */
    struct timer_node timer;
    uint32_t last_rx_tick; /* low 32 bits of the tick (wraps after years) */
    uint8_t state;
    uint8_t out_inflight; /* chunks the send in flight points at */
    uint8_t subprotocol; /* 1 + its index in the config's list; 0: none */
    uint16_t close_code; /* what on_close reports when the end is abrupt */
    uint16_t addr_slot;  /* per-address counter held (with CF_ADDR_COUNTED) */
    struct out_chunk *out_head, *out_tail;
    size_t out_bytes;    /* memory the queue holds: unsent bytes plus chunk overhead */
    struct conn_cold *cold; /* what few connections need; NULL: none of it */
    struct ws_decoder dec;
    void *user;
};

/* Records live in slabs of CONN_SLAB_BYTES, aligned to their size, each
 * owned by one worker (conn.c): a record finds its worker from the head of
 * its slab by masking its own address rather than holding a pointer to it
 * (8 bytes on every idle connection). */
#define CONN_SLAB_BYTES ((size_t)512 << 10)

struct conn_slab {
    struct worker *w;
    uint32_t index; /* in the worker's slabs */
    uint32_t used;  /* conns[0..used) were handed out; full but for the newest */
    struct ringws_conn conns[];
};

static inline struct conn_slab *conn_slab_of(const struct ringws_conn *c)
{
    return (struct conn_slab *)((uintptr_t)c & ~(uintptr_t)(CONN_SLAB_BYTES - 1));
}

static inline struct worker *conn_worker(const struct ringws_conn *c)
{
    return conn_slab_of(c)->w;
}

/* A WebSocket that may still be sent messages (the application's or
 * published ones): open, and no close frame of ours queued or due. */
static inline bool conn_ws_open(const struct ringws_conn *c)
{
    return c->state == CONN_WS &&
           !(c->flags & (CF_CLOSE_SENT | CF_TEARDOWN | CF_SLOW_1008 | CF_SLOW_1013));
}

/* Accepted, not yet upgraded nor going away: what max_handshakes bounds. */
static inline bool conn_handshaking(const struct ringws_conn *c)
{
    return c->state == CONN_HTTP || c->state == CONN_PROXY;
}

/* A WebSocket whose input is still decoded (to find the peer's close). */
static inline bool conn_ws_reading(const struct ringws_conn *c)
{
    return c->state == CONN_WS || c->state == CONN_CLOSING;
}

/* ---- workers ---------------------------------------------------------- */

/* A connection accepted beyond the turn's budget, waiting for a later turn
 * (worker.c): its peer is copied, the loop reuses its own. */
struct accept_wait {
    int fd;
    unsigned listener;
    socklen_t peer_len; /* 0: no peer address */
    struct sockaddr_storage peer;
};

struct engine_ops;
struct tls_worker;
struct tls_server;

/* Outcomes of WebSocket handshakes, as /metrics labels them (metrics.c):
 * the status answered, or the handshake timeout. */
enum handshake_outcome {
    HS_101, HS_400, HS_401, HS_403, HS_404, HS_405, HS_411, HS_413, HS_414,
    HS_426, HS_429, HS_431, HS_500, HS_501, HS_503, HS_505, HS_OTHER, HS_TIMEOUT,
    HS_OUTCOMES
};

/* A latency histogram of one worker: counts per bucket (not cumulative;
 * the last one is +Inf) and the sum, merged over the workers when /metrics
 * is read (metrics.c has the bounds). */
#define HIST_BUCKETS 16
struct stat_hist {
    _Atomic uint64_t buckets[HIST_BUCKETS];
    _Atomic uint64_t sum_ns;
};

/* Counters a worker keeps for its own connections.  Only the worker writes
 * them (STAT_ADD: a relaxed load and store, no locked instruction); any
 * thread may read them (ringws_server_stats, metrics.c). */
struct worker_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t refused;             /* over max_connections */
    _Atomic uint64_t refused_per_address; /* over max_per_address */
    _Atomic uint64_t send_queue_overflows; /* sends that met a full queue */
    _Atomic uint64_t messages_dropped;     /* of those, dropped by the policy */
    _Atomic uint64_t conns_open;
    _Atomic uint64_t publishes;
    _Atomic uint64_t fanout_queued;
    _Atomic uint64_t fanout_dropped;
    _Atomic uint64_t fanout_closed;
    _Atomic uint64_t subscriptions;
    _Atomic uint64_t sends;
    _Atomic uint64_t topics;        /* in the worker's topic index */
    _Atomic uint64_t topic_buckets; /* of that index */
    _Atomic uint64_t messages_too_slow;
    _Atomic uint64_t partial_over_budget;
    _Atomic uint64_t partial_bytes; /* capacity of every connection's held input */
    _Atomic uint64_t publishes_refused; /* by any publishing thread (atomic add) */
    _Atomic uint64_t tls_handshakes_full;
    _Atomic uint64_t tls_handshakes_resumed;
    _Atomic uint64_t tls_handshake_failures;
    _Atomic uint64_t tls_handshakes_deferred;
    _Atomic uint64_t handshakes_refused_busy; /* 503: over max_handshakes */
    _Atomic uint64_t accepts_deferred; /* over accepts_per_turn */
    _Atomic uint64_t handshakes[HS_OUTCOMES];
    _Atomic uint64_t messages_received; /* WebSocket data messages */
    _Atomic uint64_t messages_sent;     /* by ringws_send (fan-out: fanout_queued) */
    _Atomic uint64_t bytes_received;    /* on the wire, TLS records included */
    _Atomic uint64_t bytes_sent;
    _Atomic uint64_t send_queue_bytes;  /* every connection's out_bytes */
    /* permessage-deflate: messages compressed (once per publish, once per
     * ringws_send; by any publishing thread: atomic add), compressed frames
     * queued, compressed messages received. */
    _Atomic uint64_t deflate_compressed;
    _Atomic uint64_t deflate_sent;
    _Atomic uint64_t deflate_inflated;
    /* The takeover mode: bytes its connections' streams hold now, and
     * upgrades answered stateless because the worker's reservations were
     * at deflate_takeover_memory. */
    _Atomic uint64_t deflate_takeover_bytes;
    _Atomic uint64_t deflate_takeover_refused;
    /* Connections whose input was put off to the next turn: the worker had
     * inflated its budget for this one. */
    _Atomic uint64_t deflate_deferred;
    struct stat_hist publish_latency;   /* publish to queued, per worker share */
    struct stat_hist fanout_duration;   /* one worker's share of a publish */
    struct stat_hist engine_lag;        /* another node's publish to its arrival here */
    _Atomic uint64_t auth_failures[RINGWS_AUTH_REASONS]; /* by reason */
};

#define STAT_ADD(w, field, n)                                                  \
    atomic_store_explicit(&(w)->stats.field,                                   \
                          atomic_load_explicit(&(w)->stats.field,              \
                                               memory_order_relaxed) + (n),    \
                          memory_order_relaxed)

struct worker {
    struct ringws_server *srv;
    unsigned id;
    pthread_t thread;
    struct loop *loop;  /* created and used by the worker's thread */
    /* The transport of the connections of its TLS listener (NULL without
     * TLS); the others' is plain TCP (transport_tcp). */
    const struct transport_ops *tp_sealed;
    struct tls_worker *tls;
    int listen_fd;       /* on the server's port (TLS when it has certificates) */
    int plain_fd;        /* beside TLS, a plaintext listener; -1: none */
    int wake_fd;
    bool stopping;
    uint64_t stop_deadline_ms;
    /* Calls of the application into the library running now (they run
     * inside its callbacks): while not 0, on_close is owed rather than
     * reported (conn_report_close). */
    unsigned in_api;
    struct ringws_conn *flush_head;
    struct ringws_conn *free_conns;
    struct conn_slab **slabs; /* in the order they were made */
    uint32_t n_slabs;
    /* The configuration's max_message as ws_decode takes it (ws_max_message):
     * every connection's decoder, every receive. */
    uint32_t ws_max_message;
    struct http_header *hdrs;  /* parser scratch, max_headers entries */
    struct ringws_str *req_names, *req_values; /* the same, for callbacks */
    struct worker_stats stats;
    struct timer_wheel wheel;
    /* The exp of connections' tokens (conn_auth.c): a wheel of its own, so
     * that a token's deadline never displaces the connection's. */
    struct timer_wheel token_wheel;
    unsigned expiries_left; /* closes for exp this loop turn may still make */
    struct topic_index topics; /* its subscribers are connections (pubsub.c) */
    _Atomic(struct pub_slot *) inbox; /* publishes from other threads, newest first */
    _Atomic size_t inbox_bytes;       /* what they hold (answers not counted) */
    atomic_bool inbox_woken;          /* the eventfd was written since the last drain */
    atomic_bool disconnect;           /* ringws_server_disconnect_all asked */
    /* Taken from the inbox, not yet delivered, oldest first: a publish or
     * subscription of this worker delivers them before its own (pubsub.c,
     * "order"). */
    struct pub_slot *pending, *pending_tail;
    struct pub_slot *replies; /* counts set aside for the next drain (pubsub.c) */
    struct out_chunk *chunk_cache[2]; /* freed chunks of the two pooled sizes */
    /* The share that chunks of bytes living as long as the server (the
     * embedded pages) hold: it starts at one reference, so that it is never
     * the last one released. */
    struct pub_slot static_slot;
    unsigned chunk_cached[2];
    uint64_t rng; /* xorshift64* state (worker_random_below); never 0 */
    void *engine; /* the engine's per-worker state (NULL in process) */
    /* Its connections in the handshake phase (CONN_PROXY, CONN_HTTP): with
     * those waiting in accept_q, what max_handshakes bounds (conn_state_set
     * keeps it). */
    unsigned handshaking;
    /* What its takeover connections may come to hold (each one's
     * deflate_takeover_worst), which deflate_takeover_memory bounds. */
    size_t takeover_reserved;
    /* Bytes inflated since the turn began, and the connections whose input
     * waits for the next turn because it passed the budget (conn_ws.c):
     * an array, n of cap used. */
    size_t inflated_turn;
    struct ringws_conn **turn_held;
    unsigned n_turn_held, cap_turn_held;
    uint32_t turn_pass; /* conn_ws_turn's passes, never 0 */
    /* Accepted beyond accepts_per_turn, oldest first: a ring of cap
     * (a power of two) entries, n of them from head; turn_accepts: taken
     * this turn. */
    struct accept_wait *accept_q;
    unsigned accept_head, accept_n, accept_cap, turn_accepts;
};

/* Live connections of the worker (its own count, also read by stats). */
static inline uint64_t worker_conns(const struct worker *w)
{
    return atomic_load_explicit(&w->stats.conns_open, memory_order_relaxed);
}

struct ringws_server {
    struct ringws_config cfg;
    struct http_limits limits;
    struct ws_handshake_policy policy;
    struct worker *workers;
    unsigned n_workers;
    uint16_t port;
    uint16_t plain_port;  /* beside TLS; 0: none */
    struct tls_server *tls; /* certificates and tickets; NULL: no TLS */
    /* The keys that verify tokens (cfg.n_token_keys > 0), read under
     * token_lock's read side: ringws_server_reload_tokens swaps them. */
    struct token_keys *token_keys;
    pthread_rwlock_t token_lock;
    /* Connections per source address, shared by all workers: a counter per
     * hash bucket, so colliding addresses share a budget (conservative). */
    _Atomic uint16_t *addr_counts;
    bool listen_loopback; /* bound to a loopback address: every peer is local */
    bool peer_addrs;      /* accepts report each peer's address */
    atomic_bool stop_requested;
    _Atomic unsigned publishers; /* ringws_publish calls under way */
    /* Subscriptions of connections that negotiated permessage-deflate: a
     * publish is compressed only while there are some. */
    _Atomic uint64_t deflate_subs;
    uint64_t topic_key[2];       /* keys every worker's topic index */
    struct sequencer *seq;       /* every topic's offsets and history (pubsub_seq.c) */
    const struct engine_ops *engine; /* where sequences live (engine.h) */
    void *engine_state;              /* the engine's own (NULL in process) */
    uint64_t addr_key[2];        /* keys the per-address buckets (SipHash) */
};

/* Answers pile up unread: more than half the send-queue cap waits for the
 * peer.  Reading and HTTP parsing stop meanwhile (conn.c). */
static inline bool conn_backlogged(const struct ringws_conn *c)
{
    return c->out_bytes > conn_worker(c)->srv->cfg.max_send_queue / 2;
}

/* ---- worker.c: a worker's thread, its loop and its stop ----------------- */

/* Runs the worker until the server stops; 0 or the -errno of its ring. */
int worker_run(struct worker *w);
/* Wakes the worker from any thread (async-signal-safe). */
void worker_wake(struct worker *w);
/* A number drawn uniformly from [0, bound) (bound > 0): jitter, not
 * secrets. */
uint32_t worker_random_below(struct worker *w, uint32_t bound);

/* The worker's current tick of the timing wheel. */
static inline uint64_t worker_tick(const struct worker *w)
{
    return w->wheel.now;
}

/* ---- conn.c: what the worker's loop calls ------------------------------ */

/* sealed: through the TLS listener (the worker's tp_sealed); proxied: its
 * first bytes are a PROXY protocol header naming the client (peer is the
 * proxy's address and is not used). */
void conn_accepted(struct worker *w, bool sealed, bool proxied, int fd,
                   const struct sockaddr *peer, socklen_t peer_len);
/* ctx: the connection's worker (the loop's). */
void conn_on_recv(void *ctx, struct loop_conn *lc, uint8_t *p, int res, bool ended);
void conn_on_send(void *ctx, struct loop_conn *lc, int res);
void conn_on_shutdown(struct loop_conn *lc, int res);
void conn_on_timer(struct timer_node *n);
/* A record's number in its worker (its slab's place, then its own): what
 * names its timer node on the worker's wheels. */
uint32_t conn_number(const struct ringws_conn *c);
struct ringws_conn *conn_at(struct worker *w, uint32_t number);
/* The worker's wheel's timer_node_at (ctx: the worker). */
struct timer_node *conn_timer_at(void *w, uint32_t key);
void conn_flush_all(struct worker *w);
void conn_stop_all(struct worker *w);
/* Sends every WebSocket of the worker the stop close, the server running
 * on (ringws_server_disconnect_all). */
void conn_disconnect_all(struct worker *w);
void conn_abort_all(struct worker *w);
void conn_free_all(struct worker *w);
/* Whether a connection still has a request in the ring. */
bool conn_in_ring(struct worker *w);
int conn_addr_table_create(struct ringws_server *srv);
/* Whether an address is loopback: 127.0.0.0/8, ::1, or ::ffff:127.x.y.z. */
bool conn_addr_loopback(const struct sockaddr *sa, socklen_t len);

/* ---- conn.c: used by the transports (transport.h) ---------------------- */

/* The plaintext of n bytes from the wire, for the protocol of the
 * connection's state. */
void conn_input(struct ringws_conn *c, uint8_t *buf, size_t n);
/* n bytes from the wire, after any PROXY header: through the connection's
 * transport to conn_input. */
void conn_wire_input(struct ringws_conn *c, uint8_t *buf, size_t n);
/* The client's address, learnt after the accept (a PROXY header; NULL: it
 * named none): takes its per-address budget and marks it local when it is
 * loopback, as conn_accepted does for a direct peer.  false: over
 * max_per_address (counted as refused). */
bool conn_peer_known(struct ringws_conn *c, const struct sockaddr *peer, socklen_t len);
/* Sends n wire bytes at p (which must live until conn_on_send), shuts down
 * writing (both marked as in the ring), closes the descriptor (the
 * connection's last request: nothing waits for it). */
void conn_wire_send(struct ringws_conn *c, const void *p, size_t n);
void conn_wire_shutdown(struct ringws_conn *c);
void conn_wire_close(struct ringws_conn *c);
/* n bytes of the queued plaintext have left (sealed and sent); at most
 * what is queued. */
void conn_wire_consumed(struct ringws_conn *c, size_t n);
/* Drops the queued plaintext (a transport that can no longer seal it). */
void conn_wire_drop_queue(struct ringws_conn *c);
/* The transport failed: an abrupt end (1006), after its own last words
 * when it has some to send (an alert). */
void conn_wire_fail(struct ringws_conn *c, bool last_words);
/* Stops reading until unheld (a handshake put off for a later turn). */
void conn_wire_hold(struct ringws_conn *c, bool hold);
/* A sealing transport has wire bytes of its own to send (want) or none
 * left (CF_TP_WRITE). */
void conn_wire_want(struct ringws_conn *c, bool want);

/* ---- conn.c: used by conn_http.c and conn_ws.c ------------------------- */

/* Queues a then b as one chunk.  conn_queue_on: for a caller that has
 * the connection's worker at hand (an echo's send), no lookup. */
int conn_queue_on(struct worker *w, struct ringws_conn *c, const void *a, size_t alen,
                  const void *b, size_t blen);
static inline int conn_queue(struct ringws_conn *c, const void *a, size_t alen,
                             const void *b, size_t blen)
{
    return conn_queue_on(conn_worker(c), c, a, alen, b, blen);
}
void conn_drain(struct ringws_conn *c);
/* conn_drain once the closing handshake is complete: closes as soon as
 * the output is out. */
void conn_drain_closed(struct ringws_conn *c);
/* Moves to state; leaving the handshake phase gives back the connection's
 * place under max_handshakes (worker.handshaking). */
void conn_state_set(struct ringws_conn *c, enum conn_state state);
void conn_abort(struct ringws_conn *c);
void conn_report_close(struct ringws_conn *c, uint16_t code,
                       const char *reason, size_t reason_len);
void conn_set_deadline(struct ringws_conn *c, unsigned ms);
/* Appends to a protocol's held input; -EMSGSIZE past limit, -ENOBUFS past
 * the worker's max_partial_bytes, -ENOMEM. */
int conn_pend_store(struct worker *w, struct conn_pend *pd, const uint8_t *p, size_t n,
                    size_t limit);
/* Takes the held bytes out of the connection (*pd is left empty); the
 * caller frees them with conn_pend_free, which also gives their capacity
 * back to the worker's partial budget.  What a callback is handed from them
 * then lives until it returns, whatever the callback does to the
 * connection. */
struct conn_pend conn_pend_take(struct conn_pend *pd);
void conn_pend_free(struct worker *w, struct conn_pend *taken);
void conn_pend_release(struct worker *w, struct conn_pend *pd);
/* The connection's held input (struct conn_held): NULL while none. */
static inline struct conn_held *conn_held(const struct ringws_conn *c)
{
    return c->cold ? c->cold->held : NULL;
}
static inline uint32_t conn_held_len(const struct ringws_conn *c)
{
    const struct conn_held *h = conn_held(c);

    return h ? h->pd.len : 0;
}
/* conn_pend_store on the held input, which it allocates on first need. */
int conn_held_store(struct ringws_conn *c, const uint8_t *p, size_t n, size_t limit);
/* conn_pend_take on the held input, whose place is freed. */
struct conn_pend conn_held_take(struct ringws_conn *c);
/* Gives back taken bytes to hold: -ENOMEM (they are not taken back). */
int conn_held_put(struct ringws_conn *c, struct conn_pend pd);
void conn_held_release(struct ringws_conn *c);
void conn_flush_later(struct ringws_conn *c);
/* The connection's cold part, allocated (zeroed) on first need; NULL when
 * no memory is left. */
struct conn_cold *conn_cold_get(struct ringws_conn *c);
/* Frees the cold part once it holds nothing. */
void conn_cold_trim(struct ringws_conn *c);
void conn_settle(struct ringws_conn *c);
/* Acts on the peer's EOF for the connection's state; sets CF_RD_EOF. */
void conn_on_eof(struct ringws_conn *c);
/* Stops reading while answers pile up unread (conn_backlogged). */
void conn_pause_if_backlogged(struct ringws_conn *c);
/* Nothing to do: a proto_ops entry of a state the event does not concern. */
void conn_proto_none(struct ringws_conn *c);
/* Queues a share of a published message: f is its raw frame or its
 * ringws.v1 frame; 0 or -errno.  The caller counts f->len +
 * OUT_CHUNK_OVERHEAD in send_queue_bytes.  w is c's worker, which a
 * fan-out holds already (conn_worker). */
int conn_queue_shared(struct worker *w, struct ringws_conn *c, struct pub_slot *s,
                      const struct pub_frame *f);
/* Queues len bytes that outlive the connection (the embedded pages) without
 * copying them; counted in send_queue_bytes.  0 or -errno. */
int conn_queue_static(struct ringws_conn *c, const void *bytes, size_t len);
/* The bytes of chunk o from byte off to its end, as one or two pieces
 * (returns how many).  A share of a message queued to a ringws.v1
 * connection that is not the raw frame is the envelope frame: its head of
 * its own, then the raw frame's payload (struct pub_env). */
unsigned conn_chunk_pieces(const struct ringws_conn *c, const struct out_chunk *o, uint32_t off,
                           struct iovec iov[2]);
/* Copies n bytes of chunk o from byte off (within the chunk) to dst. */
void conn_chunk_copy(const struct ringws_conn *c, const struct out_chunk *o, uint32_t off,
                     uint8_t *dst, size_t n);
/* Takes back every chunk queued after mark (c->out_tail when they were
 * queued; NULL: the queue was empty), none of which a send holds yet: an
 * upgrade whose subscriptions fail takes back its 101. */
void conn_out_rewind(struct ringws_conn *c, struct out_chunk *mark);
/* Drops queued chunks not yet handed to the kernel, oldest first, for which
 * match() holds, until `room` more bytes fit under `cap`; true if they fit. */
bool conn_drop_queued(struct ringws_conn *c, bool (*match)(const struct out_chunk *o,
                                                          const void *arg),
                      const void *arg, size_t room, size_t cap);

/* ---- pubsub.c ---------------------------------------------------------- */

void pubsub_thread_enter(struct worker *w);
void pubsub_worker_fini(struct worker *w);
void pubsub_inbox_drain(struct worker *w);
void pubsub_slot_release(struct pub_slot *s);
void pubsub_msg_unref(struct pub_msg *m);
/* What a message holds while it waits in an inbox (or an engine's list):
 * the bytes max_inbox_bytes counts.  Inline: once per worker per publish. */
static inline size_t pubsub_msg_cost(const struct ringws_server *srv, const struct pub_msg *m)
{
    return sizeof(*m) + srv->n_workers * sizeof(struct pub_slot) + m->raw.len + m->z.len +
           m->topic_len;
}
/* The message's ringws.v1 frame, built on first need; NULL without memory. */
const struct pub_env *pubsub_env(struct ringws_server *srv, struct pub_msg *m);
void pubsub_conn_gone(struct ringws_conn *c);
/* Subscribes c to every topic of a valid list (topic_list_valid), each
 * from the position given for it in a valid position list (positions,
 * pubsub_positions_valid; NULL: none), answering each one when c speaks
 * ringws.v1: 0, -E2BIG past max_topics, -ENOMEM. */
int pubsub_subscribe_list(struct ringws_conn *c, const char *list, size_t len,
                          const char *positions, size_t positions_len);
/* Unsubscribes c from every topic of a valid list (unknown ones ignored). */
int pubsub_unsubscribe_list(struct ringws_conn *c, const char *list, size_t len);
/* Where a publish landed in its topic's sequence. */
struct pub_pos {
    char epoch[SEQ_EPOCH_LEN + 1];
    uint64_t offset;
};
/* A publish made on worker w (an HTTP request, a subscriber's command):
 * 0 with *recipients (and *pos) set, or 1 when the answer comes later
 * (other workers count too, or the engine answers later): done then runs
 * on w, from its loop, unless w stops first; or -errno.  Without done it
 * never returns 1, and recipients may be NULL; so may pos. */
int pubsub_publish_from(struct worker *w, const char *topic, size_t topic_len,
                        const void *data, size_t len, bool binary, pubsub_done_fn *done,
                        void *arg, uint64_t *recipients, struct pub_pos *pos);
/* A message whose position an engine gave (another node's publish, or
 * one of a shared history), published age_ns ago: with deliver, published
 * on worker w as a local publish is (every worker's subscribers, in the
 * topic's order); without, only kept in the topic's history.  0 or
 * -errno. */
int pubsub_publish_placed(struct worker *w, const char *topic, size_t topic_len,
                          const void *data, size_t len, bool binary,
                          const char epoch[SEQ_EPOCH_LEN], uint64_t offset, uint64_t age_ns,
                          bool deliver);
/* An engine's answer to pubsub_prepare came: the connection's held
 * command runs again (ok), or fails as a refused publish does. */
void pubsub_engine_ready(struct ringws_conn *c, bool ok);
/* Before a command naming the topics of a valid list runs on c: 0 when
 * they are ready (always with the in-process engine); 1 when the engine
 * must make them ready first: pubsub_engine_ready(c) follows on c's
 * worker, and c must hold the command until then; or -errno. */
int pubsub_prepare(struct ringws_conn *c, const char *list, size_t len);
void pubsub_server_drain(struct ringws_server *srv);
/* A worker that failed (the server is stopping): what its inbox holds now
 * or gets from publishers still under way counts as delivered to nobody. */
void pubsub_worker_abandon(struct worker *w);

/* ---- pubsub_seq.c: every topic's sequence and history ------------------- */

/* A topic of the server (not of a worker): its sequence and history, held
 * while a worker has subscribers of it or its history holds a message, and
 * then for sequence_idle_ms (at most sequence_idle_max idle topics). */
struct seq_topic;

/* Where a topic stands: its epoch, the offset of its last message, the
 * oldest its history holds (last + 1: none). */
struct seq_view {
    char epoch[SEQ_EPOCH_LEN + 1];
    uint64_t last, oldest;
};

/* Resumes by outcome, as /metrics counts them. */
enum seq_resume { SEQ_RECOVERED, SEQ_GAP, SEQ_RESUME_OUTCOMES };

/* What /metrics shows of the sequencer. */
struct seq_stats {
    uint64_t topics, idle_topics, history_messages, history_bytes;
    uint64_t evicted[HIST_EVICT_REASONS];
    uint64_t resumes[SEQ_RESUME_OUTCOMES];
};

int seq_create(struct ringws_server *srv);
void seq_destroy(struct ringws_server *srv);
/* Everything below but seq_stats, seq_count_resume, seq_message_charge
 * and the publish's own pair runs between seq_lock and seq_unlock, which
 * hold the table alone: no publish is under way meanwhile
 * (docs/ARCHITECTURE.md, "Sequences"). */
void seq_lock(struct ringws_server *srv);
void seq_unlock(struct ringws_server *srv);
/* What a publish holds from seq_publish_lock to seq_publish_unlock. */
struct seq_hold {
    struct seq_topic *t; /* whose order lock is held; NULL: none */
    bool alone;          /* the table alone (a topic was made) */
    bool over_cap;       /* the idle list is past its cap */
};
/* The topic of that name, made (with a fresh epoch) when unknown; NULL
 * without memory. */
struct seq_topic *seq_topic_get(struct ringws_server *srv, const char *name, size_t len);
/* Any thread, without the lock: gives m its topic's next offset and epoch
 * (tell: an epoch the publisher is told, even for a topic nobody holds),
 * or, when m comes with them (an engine's: m->offset != 0), moves the
 * topic to them; and hands it to the topic's history (which takes a
 * reference of its own when it keeps it).  On 0 the topic's publishes stay
 * ordered, this one after all before it, until seq_publish_unlock: the
 * publisher posts m to the inboxes meanwhile.  -ENOMEM or -EIO: nothing is
 * held. */
int seq_publish_lock(struct ringws_server *srv, struct pub_msg *m, bool tell,
                     struct seq_hold *hold);
void seq_publish_unlock(struct ringws_server *srv, struct seq_hold *hold);
/* Any thread, without the lock (it takes it when m may be held): m's
 * ringws.v1 frame of that many bytes was built; a history holding m counts
 * it from now on. */
void seq_message_charge(struct ringws_server *srv, struct pub_msg *m, size_t bytes);
/* The topic's position now (expired history dropped first). */
void seq_topic_view(struct ringws_server *srv, struct seq_topic *t, struct seq_view *v);
/* Whether the history gives exactly what follows offset `after` of the
 * sequence of that epoch (NULL: of the topic's, whatever it is), as of
 * the last seq_topic_view. */
bool seq_topic_serves(const struct seq_topic *t, const char *epoch, uint64_t after);
/* The held message of that offset (a reference taken for the caller), or
 * NULL. */
struct pub_msg *seq_topic_message(struct seq_topic *t, uint64_t offset);
/* An engine says where the topic stands (its epoch and last offset,
 * without a message): a history that is not a run ending there is
 * dropped. */
void seq_topic_place(struct ringws_server *srv, struct seq_topic *t, const char *epoch,
                     uint64_t last);
/* Any thread, without the lock (the name never changes). */
void seq_topic_name(const struct seq_topic *t, const char **name, size_t *len);
/* A worker's index holds the topic (hold) or no longer does (drop). */
void seq_topic_hold(struct ringws_server *srv, struct seq_topic *t);
void seq_topic_drop(struct ringws_server *srv, struct seq_topic *t);
/* A topic no worker holds and whose history is empty goes idle at the
 * next seq_unlock (forgotten past the idle cap, or by seq_sweep past its
 * grace). */
void seq_topic_settle(struct ringws_server *srv, struct seq_topic *t);
/* Any thread, without the lock. */
void seq_count_resume(struct ringws_server *srv, enum seq_resume outcome);
/* Takes the lock: drops what is past its age from up to budget histories
 * with a history-ttl, going on from where the last sweep stopped, so that
 * an expired history gives its memory back (and its topic may go idle)
 * without waiting to be published to or read; then forgets up to budget
 * topics idle past sequence_idle_ms. */
void seq_sweep(struct ringws_server *srv, uint64_t now_ns, unsigned budget);
void seq_stats(struct ringws_server *srv, struct seq_stats *out);

/* ---- history_json.c: GET /history/TOPIC -------------------------------- */

/* What is asked: since=[EPOCH:]OFFSET (0 and no epoch: from the oldest
 * held) and at most limit messages (1..1000). */
struct history_query {
    bool has_epoch;
    char epoch[SEQ_EPOCH_LEN];
    uint64_t since;
    uint32_t limit;
};

/* The answer's JSON body (malloc'd, *out); 0 or -ENOMEM. */
int history_json_build(struct ringws_server *srv, const char *topic, size_t len,
                       const struct history_query *q, char **out, size_t *out_len);

/* ---- conn_ws.c --------------------------------------------------------- */

/* Decodes frames from buf (all of it is consumed). */
void conn_ws_input(struct ringws_conn *c, uint8_t *buf, size_t len);
/* Sends a close frame and moves to CONN_CLOSING (or DRAIN when failing). */
void conn_ws_close(struct ringws_conn *c, uint16_t code, const char *reason,
                   size_t reason_len, bool fail);
/* The same with a reason of the server's own (NUL-terminated), whose length
 * is counted here rather than by hand at every call. */
void conn_ws_close_why(struct ringws_conn *c, uint16_t code, const char *why, bool fail);

/* The takeover state of a connection that negotiated it (NULL: none). */
static inline struct deflate_takeover *conn_takeover(const struct ringws_conn *c)
{
    return c->cold ? c->cold->pmd : NULL;
}

/* Whether an upgrade on this worker may take context over: 1 when the path
 * is one of deflate_takeover_paths and the worker's reservations leave room
 * for the largest state it could negotiate; -ENOSPC when they do not; 0
 * for another path. */
int conn_ws_takeover_allowed(struct worker *w, const char *path, size_t path_len);
/* Gives a connection that agreed to context takeover its (empty) streams,
 * reserved against the worker's cap.  0 or -ENOMEM. */
int conn_ws_takeover_attach(struct ringws_conn *c, const struct ws_pmd_agreed *a);
/* Frees them and gives the reservation back (none: nothing); after the
 * subscriptions have gone (pubsub_conn_gone), since whether they counted
 * in deflate_subs depends on the streams.  The cold part goes too when it
 * held nothing else. */
void conn_ws_takeover_detach(struct ringws_conn *c);
/* Queues one message (op, its payload the pieces iov[0..n)) compressed
 * through the connection's own stream (its server side takes context
 * over): 0; -ENOMEM, nothing queued and the stream as it was (the message
 * may go plain); -EIO, the stream is of no more use: the connection is
 * failed after this batch (1013, as a slow one). */
int conn_ws_queue_takeover(struct ringws_conn *c, unsigned op, const struct iovec *iov,
                           unsigned n);

/* ---- conn_auth.c: the token of a connection ----------------------------- */

/* The token a request carries (an upgrade: ?token=, Authorization: Bearer
 * or the cookie token_cookie; else Bearer only), verified with the loaded
 * keys: RINGWS_AUTH_OK and *claims, RINGWS_AUTH_MISSING (not counted: the
 * caller knows whether one is needed), or why it is refused (counted and
 * logged). */
enum ringws_auth_failure conn_auth_from_request(struct ringws_conn *c,
                                                const struct http_request *req, bool upgrade,
                                                struct ringws_token_claims **claims);
/* Whether the claims let a connection subscribe to every topic of a valid
 * list; counts and logs a refusal. */
bool conn_auth_topics_ok(struct ringws_conn *c, const struct ringws_token_claims *claims,
                         const char *list, size_t len);
/* Whether the connection may publish to the topic: its token's publish
 * claim covers it (or no keys are loaded and a topic rule allows it);
 * counts and logs a refusal. */
bool conn_auth_publish_ok(struct ringws_conn *c, const char *topic, size_t len);
/* Gives an opened connection the claims (taken over, freed with it) and
 * arms the close at their exp.  0 or -ENOMEM (the claims are freed). */
int conn_auth_attach(struct ringws_conn *c, struct ringws_token_claims *claims);
/* The `auth TOKEN` command: a fresh token for an open connection. */
void conn_auth_refresh(struct ringws_conn *c, const char *tok, size_t len);
/* Lets go of the connection's token (when it is freed). */
void conn_auth_gone(struct ringws_conn *c);
/* Closes connections whose token expired by now_tick, a bounded number per
 * tick (the rest in the next ones). */
void conn_auth_tick(struct worker *w, uint64_t now_tick);
void conn_auth_wheel_init(struct worker *w, uint64_t now_tick);
/* Counts a refusal by reason and logs it with the peer's subject. */
void conn_auth_refused(struct worker *w, enum ringws_auth_failure r, const char *what,
                       const char *sub);

/* ---- conn_ws_pubsub.c -------------------------------------------------- */

/* A message from a subscriber connection (CF_PUBSUB): one command. */
void conn_ws_pubsub_command(struct ringws_conn *c, unsigned opcode, const uint8_t *p,
                            size_t n);
/* Input that came while the connection waits for its engine
 * (CF_ENGINE_WAIT): kept, to be read once it is ready.  0 or -errno. */
int conn_ws_pubsub_keep(struct ringws_conn *c, const uint8_t *p, size_t n);
/* The engine is ready for the connection that waits (CF_ENGINE_WAIT, or
 * an HTTP request held with CF_PUB_WAIT): its command runs again (ok:
 * its topics are ready; else it fails as refused), then what it kept is
 * read.  On the connection's worker. */
void conn_engine_ready(struct ringws_conn *c, bool ok);
/* Lets go of what a waiting connection kept (it is being freed). */
void conn_ws_pubsub_wait_free(struct ringws_conn *c);
/* Holds the connection's further input until the worker's next turn (its
 * inflating budget is spent, conn_ws.c), by the same means as a wait for
 * the engine.  0 or -ENOMEM (then nothing is held). */
int conn_ws_hold_turn(struct ringws_conn *c);
/* At each turn's end: the budget is new, and the connections held for it
 * read what they kept. */
void conn_ws_turn(struct worker *w);

/* ---- conn_http.c -------------------------------------------------------- */

/* An HTTP request held for the engine (CF_PUB_WAIT) runs again. */
void conn_http_engine_ready(struct ringws_conn *c);

/* Queues a ringws.v1 notice (a header line, printf-style, without its line
 * feed) to a CF_ENVELOPE connection; 0 or -errno. */
int conn_ws_pubsub_notice(struct ringws_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
