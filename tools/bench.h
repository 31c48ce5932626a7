/* bench.h - what the parts of ringws-bench share.
 *
 * Why it exists: the load generator is one io_uring engine (bench_loop.c)
 * that runs WebSocket client connections from start to close, and a few
 * modes (bench_echo.c, bench_connect.c, bench_idle.c, bench_fanout.c) that
 * decide what the connections do while open and what is measured
 * (bench_resume.c: subscribers of the ringws.v1 envelope that leave and come
 * back with their positions, on their own or shed by the server).  The main
 * thread (ringws-bench.c) parses options, starts one engine thread per
 * --threads (each with its own ring) and lets the mode orchestrate and
 * report; the fanout mode first forks --procs processes that each run
 * engine threads for their share of the connections.  Beside them: the
 * client side of the protocol (bench_wire.c), TLS under it for wss://
 * (bench_tls.c), the HTTP publisher (bench_publish.c), the latency
 * histogram (bench_hist.c), /proc readings (bench_proc.c), the echo
 * mode's JSON notifications (bench_notify.c) and the text or JSON report
 * (bench_report.c). */
#ifndef RINGWS_BENCH_H
#define RINGWS_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench_hist.h"
#include "bench_wire.h"
#include "loop.h"

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_SRC_ADDRS 250 /* 127.0.0.2 .. 127.0.0.251 */
#define BENCH_CONNS_PER_SRC 10000
#define BENCH_CTL_MAX 125
#define BENCH_MAX_PROCS 256
#define BENCH_FANOUT_HEAD 16 /* fanout payload: sequence number, publish time */
#define BENCH_MAX_PIDS 16
#define BENCH_TLS_SESSIONS 16
#define BENCH_TLS_DESC 128   /* "TLSv1.3 TLS_AES_256_GCM_SHA384 x25519, server key ..." */

struct ssl_st;
struct ssl_session_st;
struct bench_tls;        /* bench_tls.c: the process's client context */
struct bench_tls_conn;   /* bench_tls.c: one connection's TLS state */

#define BENCH_MAX_SUB_URLS 8

struct bench_opts {
    struct sockaddr_in dst;
    char url[320];
    char host[80];       /* Host header: "127.0.0.1:PORT" */
    char hostname[64];   /* the host of the URL, without the port */
    char path[256];
    /* wss:// */
    bool tls;
    bool tls12;          /* --tls12: TLS 1.2 only (default: TLS 1.3 only) */
    bool resume;         /* --resume: each connection resumes the last session */
    char ca[256];        /* --ca FILE: verify the server; "": no verification */
    char sni[256];       /* --sni NAME; "": the URL's host when it is a name */
    unsigned conns, inflight, threads, src_addrs, open_window;
    size_t size;
    bool text, json;
    double duration_s, timeout_s;
    uint64_t messages;   /* echo: messages; connect: handshakes; fanout: publishes;
                            0: no count bound */
    /* --server-pid: what "the server" is, its CPU time and memory summed
     * over these processes (a TLS proxy and the server behind it) */
    int server_pids[BENCH_MAX_PIDS];
    unsigned n_server_pids; /* 0: none */
    bool url_set;        /* --url given: the mode's default path does not apply */
    /* fanout */
    unsigned procs;      /* processes running subscribers */
    /* --sub-url: subscriber process k opens its connections on
     * sub_dst[k % n_sub] (other nodes of a cluster); the publisher stays on
     * dst.  0: every process on dst. */
    struct sockaddr_in sub_dst[BENCH_MAX_SUB_URLS];
    char sub_host[BENCH_MAX_SUB_URLS][80];
    unsigned n_sub;
    double rate;         /* publishes per second */
    char topic[WSC_MAX_TOPIC + 1];
    char token[256];     /* --token: Authorization: Bearer; "" for none */
    /* --per-message FILE: each message's publish time and recipient
     * latency histogram written there; "": not kept */
    char per_message[256];
    /* idle --retry: failed handshakes are made again (503 after its
     * Retry-After, a timeout or reset after about a second) */
    bool retry;
    /* connect */
    bool cycle_echo;     /* --echo: one echo of --size bytes before each close */
    /* offered in Sec-WebSocket-Protocol, which the 101 must then choose;
     * "": none (the modes that speak the envelope set it) */
    char subprotocol[32];
    /* --deflate: offer permessage-deflate (bench_wire.h's offer); what comes
     * compressed is inflated before the mode sees it */
    bool deflate;
    /* echo --notifications: text messages from bench_notify.c's pool, sent
     * compressed (RSV1) with --deflate */
    bool notifications;
};

/* Counters of one engine thread.  Only that thread writes them (relaxed
 * stores); the main thread reads them for progress lines and reports. */
struct bench_stats {
    _Atomic uint64_t opened;            /* handshakes completed */
    _Atomic uint64_t opened_window;     /* ... before the stop time */
    _Atomic uint64_t open_now;          /* connections open right now */
    _Atomic uint64_t echoed;            /* echoes received complete */
    _Atomic uint64_t echoed_window;     /* ... before the stop time */
    _Atomic uint64_t echoed_bytes;      /* payload bytes of those echoes */
    _Atomic uint64_t mismatches;        /* echoes not byte-exact */
    _Atomic uint64_t sent_compressed;   /* echo --notifications --deflate: messages
                                           sent compressed (RSV1) */
    _Atomic uint64_t lost;              /* messages never answered */
    _Atomic uint64_t connect_errors;
    _Atomic uint64_t handshake_errors;  /* answer was not a valid 101 */
    _Atomic uint64_t handshake_timeouts;
    _Atomic uint64_t unexpected_closes; /* server closed or reset an open one */
    _Atomic uint64_t protocol_errors;   /* server sent a bad frame */
    _Atomic uint64_t close_timeouts;    /* closing handshake did not finish */
    _Atomic uint64_t abandoned;         /* still busy when the run ended */
    _Atomic uint64_t closed;            /* closing handshakes completed */
    _Atomic uint64_t pings;             /* pings answered */
    _Atomic uint64_t last_rx_ns;        /* time of the last echo */
    _Atomic uint64_t max_turn_ns;       /* longest loop turn: how late this
                                           thread can be to see an answer */
    _Atomic uint64_t tls_full;          /* TLS handshakes with a full exchange */
    _Atomic uint64_t tls_resumed;       /* ... resuming a session */
    _Atomic uint64_t tls_no_close_notify; /* orderly closes ended without it */
    _Atomic bool finished;
};

static inline void stat_add(_Atomic uint64_t *s, uint64_t n)
{
    atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t stat_get(_Atomic uint64_t *s)
{
    return atomic_load_explicit(s, memory_order_relaxed);
}

/* A plain copy of the counters summed over threads. */
struct bench_sum {
    uint64_t opened, opened_window, open_now, echoed, echoed_window, echoed_bytes;
    uint64_t mismatches, sent_compressed, lost, connect_errors, handshake_errors, handshake_timeouts;
    uint64_t unexpected_closes, protocol_errors, close_timeouts, abandoned, closed;
    uint64_t pings, last_rx_ns;
    uint64_t tls_full, tls_resumed, tls_no_close_notify;
    unsigned finished;
};

enum bench_conn_state {
    BC_IDLE,       /* never started */
    BC_CONNECTING,
    BC_HANDSHAKE,  /* request sent (wss: queued until TLS's handshake is
                    * done), waiting for the 101 */
    BC_OPEN,
    BC_CLOSING,    /* our close frame is queued: waiting for the server's */
    BC_WAIT_EOF,   /* closes exchanged: waiting for the server's FIN */
    BC_SHUT,       /* descriptor being closed: waiting for requests to end */
    BC_DONE,
};

struct bench_thread;

struct bench_retry {
    uint64_t due_ns;
    uint32_t idx;
};

struct bench_conn {
    struct loop_conn io;   /* first: the loop hands it back; fd is idx */
    struct bench_thread *t;
    struct bench_conn *dirty_next;
    struct bench_tls_conn *tls; /* wss: from the TCP connect until the slot is free */
    uint8_t *out;          /* outgoing bytes; [out_off, out_len) not yet sent
                            * (wss: not yet sealed into records) */
    uint32_t out_off, out_len, out_cap;
    uint32_t idx;          /* index in its thread, also its direct descriptor */
    uint8_t state;         /* enum bench_conn_state */
    uint8_t ops;           /* requests in flight */
    uint8_t flags;
    uint8_t ctl_len;
    uint16_t hs_len;
    char *hs;              /* handshake only: the key, then the answer so far */
    uint64_t t_start;      /* when the current phase's deadline started (ns) */
    uint64_t retry_ns;     /* start anew at this time once the slot is free; 0: no */
    struct wsc_rx rx;
    uint8_t ctl[BENCH_CTL_MAX];
    /* echo mode */
    uint32_t owed;         /* messages to send at the next flush */
    bool msg_bad;
    uint64_t sent, rcvd, msg_off;   /* fanout: rcvd is the next sequence number due */
    uint64_t *ts;          /* send time of message seq at ts[seq % inflight] */
    /* fanout mode: the head of the message being received, which a frame
     * split across two receives may deliver in pieces */
    uint8_t head[BENCH_FANOUT_HEAD];
    /* --deflate: a compressed message gathered until it is whole */
    uint8_t *z;
    uint32_t z_len, z_cap;
};

struct bench;

struct bench_thread {
    struct bench *b;
    unsigned id;
    pthread_t tid;
    struct loop *loop;
    struct bench_conn *conns;
    unsigned n_conns, first_gid;
    unsigned next_start;   /* first connection never started */
    uint32_t *free_idx;    /* cycling modes: finished slots to start anew */
    unsigned n_free;
    unsigned in_handshake; /* connecting or waiting for the 101 */
    unsigned closing;      /* in a closing handshake (CLOSING or WAIT_EOF) */
    unsigned live;         /* started and not yet done */
    unsigned log_left;     /* server problems still worth a line on stderr */
    bool stopping, go_seen;
    uint64_t now, stop_ns, budget, src_next, rng;
    struct bench_conn *dirty;
    /* connections waiting to be started anew: a min-heap on the time */
    struct bench_retry *retry;
    unsigned n_retry;
    struct hist lat;
    struct bench_stats st;
    /* --deflate: the inflater and the message it inflated last */
    struct libdeflate_decompressor *inflater;
    uint8_t *inflated;
    size_t inflated_cap;
    /* wss */
    uint8_t *tls_plain;    /* what SSL_read decrypts, one record at a time */
    /* --resume: the sessions (tickets) the server gave, latest last */
    struct ssl_session_st *tls_sessions[BENCH_TLS_SESSIONS];
    unsigned n_tls_sessions;
    char tls_desc[BENCH_TLS_DESC]; /* what the first handshake negotiated */
    _Atomic bool tls_desc_set;
};

/* A mode: `run` orchestrates from the main thread and prints the report;
 * the hooks run on engine threads.  A NULL run marks a planned mode. */
/* Why a handshake failed, for a mode that makes it again (idle --retry). */
enum bench_fail {
    BENCH_FAIL_STATUS,   /* an answer other than 101 (its bytes are passed) */
    BENCH_FAIL_TIMEOUT,  /* no answer within --timeout */
    BENCH_FAIL_RESET,    /* connect refused, or the connection reset or ended */
};

struct bench_mode {
    const char *name;
    const char *summary;
    int (*run)(struct bench *b);
    void (*on_go)(struct bench_thread *t);                       /* optional */
    void (*on_open)(struct bench_thread *t, struct bench_conn *c); /* optional */
    void (*on_data)(struct bench_thread *t, struct bench_conn *c,
                    const struct wsc_event *ev);                 /* optional */
    void (*fill)(struct bench_thread *t, struct bench_conn *c); /* optional */
    bool (*drained)(const struct bench_conn *c);                 /* optional */
    bool (*again)(struct bench_thread *t); /* optional: start a closed one anew */
    /* Connections mostly quiet (idle, fanout): wss gives their record
     * buffers back between records, at a little CPU per record. */
    bool quiet;
    uint32_t (*out_cap)(const struct bench_opts *o);
    /* optional: provided receive buffers of a thread with n_conns
     * connections (count a power of two); default 1024 x 16 KiB */
    void (*recv_bufs)(const struct bench_opts *o, unsigned n_conns, uint32_t *count,
                      uint32_t *size);
    /* optional: the request target of this connection's upgrade (its
     * length, 0 when cap is too small); default o->path */
    size_t (*target)(struct bench_thread *t, struct bench_conn *c, char *buf, size_t cap);
    /* optional: the server closed an open connection with code and reason;
     * true when the mode expected it (not counted as unexpected) */
    bool (*on_close)(struct bench_thread *t, struct bench_conn *c, unsigned code,
                     const char *reason, size_t len);
    void (*tick)(struct bench_thread *t); /* optional: once per loop turn */
    /* optional: a handshake failed (counted as before); resp holds the
     * answer's first len bytes for BENCH_FAIL_STATUS, else NULL.  The
     * mode may make it again with bench_conn_retry. */
    void (*on_fail)(struct bench_thread *t, struct bench_conn *c, enum bench_fail why,
                    const char *resp, size_t len);
};

struct bench {
    struct bench_opts o;
    const struct bench_mode *mode;
    struct bench_tls *tls;       /* wss://; NULL: plain */
    struct bench_thread *threads;
    const struct bench_notify *notify; /* echo --notifications; NULL: none */
    unsigned conn_base;          /* first connection of this process (--procs) */
    void *mode_data;             /* what a mode's run shares with its hooks */
    uint64_t salt;               /* varies the echo payloads between runs */
    _Atomic uint64_t go_ns;      /* 0 until the measured phase starts */
    _Atomic uint64_t stop_ns;    /* UINT64_MAX until the run must end */
    _Atomic bool interrupted;    /* SIGINT or SIGTERM: stop now, keep the stop */
};

/* ---- bench_loop.c ----------------------------------------------------- */

/* How long after the stop a thread may still finish closing handshakes
 * (each bounded by --timeout) before it abandons what is left. */
static inline uint64_t bench_grace_ns(const struct bench_opts *o)
{
    return (uint64_t)(o->timeout_s * 1.5e9);
}

/* How long opening every connection may take beyond --timeout: 1 ms each,
 * 3 ms over wss, whose handshakes cost the server several times more. */
static inline uint64_t bench_open_ns(const struct bench_opts *o)
{
    return (uint64_t)o->conns * (o->tls ? 3000000ull : 1000000ull);
}

uint64_t bench_now_ns(void);
int bench_threads_start(struct bench *b);
void bench_threads_join(struct bench *b);
void bench_sum(struct bench *b, struct bench_sum *s);
void bench_stop_at(struct bench *b, uint64_t ns);

/* Room for n more outgoing bytes, or NULL; bench_out_commit sends them. */
uint8_t *bench_out_reserve(struct bench_conn *c, uint32_t n);
void bench_out_commit(struct bench_thread *t, struct bench_conn *c, uint32_t n);
void bench_conn_dirty(struct bench_thread *t, struct bench_conn *c);
/* Starts the closing handshake of an open connection. */
void bench_conn_close(struct bench_thread *t, struct bench_conn *c);
/* Starts the connection anew at due_ns (in the thread's open window), once
 * its slot is free: at once for a finished one, else when it finishes. */
void bench_conn_retry(struct bench_thread *t, struct bench_conn *c, uint64_t due_ns);
/* Prints a server problem on stderr, a few per thread at most. */
void bench_problem(struct bench_thread *t, const struct bench_conn *c,
                   const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t bench_rand(struct bench_thread *t);

/* ---- bench_tls.c: wss:// -------------------------------------------------
 *
 * A connection's TLS runs on memory BIOs: what the ring receives is fed in
 * and its plaintext read out (bench_tls_input, bench_tls_read), what SSL
 * writes is taken out to be sent by the engine (bench_tls_output), so that
 * TLS adds no system call and never blocks. */

/* The process's client context for o (b->tls), when the URL is wss://.
 * 0 or -errno, having said why on stderr. */
int bench_tls_create(struct bench *b);
void bench_tls_destroy(struct bench *b);
/* A client SSL of the context: SNI and the name checked set, not yet
 * connected (the publisher runs it on its blocking socket). */
struct ssl_st *bench_tls_ssl(const struct bench_tls *tls);
/* After the TCP connect: the ClientHello is ready for bench_tls_output. */
int bench_tls_conn_start(struct bench_thread *t, struct bench_conn *c);
/* Once no request of the connection is in flight. */
void bench_tls_conn_free(struct bench_conn *c);
/* Feeds n received bytes at *p (the handshake goes on) and reads the
 * first record's plaintext: its length with *p pointing to it, 0 when no
 * whole record came, -EPROTO when TLS failed (said on stderr). */
int bench_tls_input(struct bench_thread *t, struct bench_conn *c, const uint8_t **p,
                    size_t n);
/* The next record's plaintext, alike.  The pointer holds until the next
 * call on any connection of the thread. */
int bench_tls_read(struct bench_thread *t, struct bench_conn *c, const uint8_t **p);
/* With no send in flight: seals the plaintext queued in out (once the
 * handshake is done) and returns what is to be sent (*p, length), or
 * -EPROTO / -ENOMEM. */
int bench_tls_output(struct bench_thread *t, struct bench_conn *c, const uint8_t **p);
void bench_tls_sent(struct bench_conn *c, uint32_t n);
/* Whether the server's close_notify came. */
bool bench_tls_closed_cleanly(const struct bench_conn *c);
/* A thread's TLS state: its decrypt buffer, the session it kept. */
int bench_tls_thread_init(struct bench_thread *t);
void bench_tls_thread_end(struct bench_thread *t);
/* What the first handshake of any thread negotiated; "" before one. */
const char *bench_tls_desc(struct bench *b);

/* ---- bench_notify.c: the echo mode's JSON notifications ---------------- */

#define BENCH_NOTIFY_COUNT 256   /* entries, a power of two */
#define BENCH_NOTIFY_MIN 128     /* --size bounds: the fields fit, and the */
#define BENCH_NOTIFY_MAX 65536   /* pool stays within a few MiB */
#define BENCH_NOTIFY_SLACK 64    /* compressed at most this much over --size */

struct bench_notify {
    unsigned count;
    size_t size;                 /* bytes of each entry */
    uint8_t *plain;              /* entry k at plain + k * size */
    uint8_t *z;                  /* with deflate: entry k compressed (RFC 7692
                                  * 7.2.1, without the 00 00 ff ff) at
                                  * z + z_off[k], z_off[k + 1] - z_off[k] bytes */
    uint32_t *z_off;
};

/* Builds the pool of entries of exactly size bytes, compressed too with
 * deflate.  0, -EINVAL (size out of bounds), -ENOMEM or -EPROTO. */
int notify_build(struct bench_notify *n, size_t size, bool deflate);
void notify_free(struct bench_notify *n);

/* The entry a message's seed picks. */
static inline unsigned notify_pick(const struct bench_notify *n, uint64_t seed)
{
    return (unsigned)(seed >> 32) & (n->count - 1);
}

/* ---- bench_proc.c: what /proc says about the server and the kernel ---- */

int proc_cpu_ticks(int pid, uint64_t *ticks);    /* utime + stime */
double proc_ticks_to_s(uint64_t ticks);
int proc_rss_kb(int pid, uint64_t *kb);          /* VmRSS; pid 0: this process */
/* The same summed over --server-pid's processes; -ENOENT when none. */
int proc_server_cpu_ticks(const struct bench_opts *o, uint64_t *ticks);
int proc_server_rss_kb(const struct bench_opts *o, uint64_t *kb);
int proc_meminfo_kb(const char *field, uint64_t *kb);
double proc_self_cpu_s(void);                    /* this process, user + sys */

/* ---- bench_report.c: one report, as text or as a JSON object ---------- */

struct report {
    FILE *f;
    bool json;
    unsigned n;
};

void report_begin(struct report *r, bool json);
void report_str(struct report *r, const char *key, const char *v);
void report_u64(struct report *r, const char *key, uint64_t v);
void report_num(struct report *r, const char *key, double v, int decimals);
void report_end(struct report *r);
/* The counters every mode reports, under their own names. */
void report_errors(struct report *r, const struct bench_sum *s);
/* latency_us_p50 / p99 / p999 / max of a histogram of nanoseconds. */
void report_latency(struct report *r, const struct hist *lat);
/* server_cpu_s and server_cpu_us_per_<unit> when the server's CPU time was
 * read, then client_cpu_pct over the measured window. */
void report_cpu(struct report *r, bool have_server, double server_s, const char *unit,
                uint64_t count, int decimals, double client_s, double window_s);
/* wss: what was negotiated (desc) and the handshakes, full and resumed. */
void report_tls(struct report *r, const struct bench_opts *o, const struct bench_sum *s,
                const char *desc);
/* True when the sum shows a server failure (exit status 1). */
bool bench_failed(const struct bench_sum *s);

/* ---- ringws-bench.c --------------------------------------------------- */

/* Sleeps until `until` (ns), printing a progress line each second on stderr
 * when `progress` is set; returns early once every thread has finished or
 * the run was interrupted. */
void bench_wait(struct bench *b, uint64_t until, bool progress,
                void (*line)(struct bench *b, double t_s));

/* ---- modes ------------------------------------------------------------ */

extern const struct bench_mode bench_mode_echo, bench_mode_connect, bench_mode_idle,
    bench_mode_fanout, bench_mode_resume, bench_mode_storm;

/* ---- bench_publish.c: the fanout mode's publisher ---------------------- */

/* One keep-alive HTTP connection that publishes with POST /publish/TOPIC.
 * Blocking, each call bounded by the timeout: one publisher in the parent
 * process does nothing else while a publish is answered. */
struct publisher {
    int fd;                      /* -1: not connected */
    const struct bench_tls *tls; /* https; NULL: http */
    struct ssl_st *ssl;          /* the connection's TLS, when https */
    struct sockaddr_in dst;
    const char *host, *topic, *token;
    double timeout_s;
    uint64_t last_ns;            /* when the last answer came */
    size_t cap, used;            /* answer bytes in buf */
    uint8_t *req;                /* head and body of one publish */
    size_t req_cap;
    char buf[WSC_MAX_ANSWER];
};

int publisher_init(struct publisher *p, const struct bench_opts *o,
                   const struct bench_tls *tls);
/* Publishes body[0..len) as a binary message; fills *a with the answer.
 * 0, or a negative errno when no valid answer came (*why says why). */
int publisher_send(struct publisher *p, const uint8_t *body, size_t len,
                   struct wsc_answer *a, const char **why);
void publisher_close(struct publisher *p);

#endif
