/* ringws.h - the public API of ringws, an io_uring WebSocket and HTTP/1.1
 * server for Linux.
 *
 * A server runs one worker thread per core; each worker owns its own
 * io_uring ring and its own SO_REUSEPORT listener, and every connection
 * belongs to exactly one worker for its whole life.
 *
 * Thread rules:
 *  - Callbacks run on the worker thread that owns the connection.
 *  - ringws_send*, ringws_close and ringws_conn_* may be called only from
 *    a callback of that same connection's worker (typically inside the
 *    callback itself).  A ringws_conn pointer is valid from on_open until
 *    on_close returns; never keep it after that.
 *  - ringws_server_stop may be called from any thread or a signal handler.
 *
 * Errors are negative errno values. */
#ifndef RINGWS_H
#define RINGWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ringws_server ringws_server;
typedef struct ringws_conn ringws_conn;

enum ringws_opcode {
    RINGWS_TEXT = 1,
    RINGWS_BINARY = 2,
};

/* A header or any other byte string that is not NUL-terminated. */
struct ringws_str {
    const char *ptr;
    size_t len;
};

/* A request as parsed; every string points into the receive buffer and is
 * valid only during the callback (for its whole call, also when on_open
 * closes the connection). */
/* The claims of a verified token (JWT): valid as long as the request or
 * connection it came with. */
struct ringws_token_claims {
    const char *sub;            /* the subject; "" when the token has none */
    int64_t exp;                /* seconds since the epoch; 0: never expires */
    int64_t nbf;                /* not before; 0: none */
    const char *const *topics;  /* patterns it may subscribe to: a topic */
    size_t n_topics;            /* name, or a prefix ending in '*' */
    const char *const *publish; /* patterns it may publish to */
    size_t n_publish;
};

/* Why a token was refused (ringws_stats.auth_failures counts each). */
enum ringws_auth_failure {
    RINGWS_AUTH_OK = 0,
    RINGWS_AUTH_MISSING,         /* none given where one is required */
    RINGWS_AUTH_MALFORMED,       /* not a well-formed JWT, or bad claim types */
    RINGWS_AUTH_BAD_SIGNATURE,
    RINGWS_AUTH_UNKNOWN_KID,     /* no key with its kid (or none given among several keys) */
    RINGWS_AUTH_ALG_MISMATCH,    /* its alg is not its key's ("none" included) */
    RINGWS_AUTH_EXPIRED,
    RINGWS_AUTH_NOT_YET_VALID,
    RINGWS_AUTH_TOPIC_DENIED,    /* a subscription outside its topics */
    RINGWS_AUTH_PUBLISH_DENIED,  /* a publish outside its publish claim */
    RINGWS_AUTH_SUBJECT_CHANGED, /* a refreshed token of another sub */
    RINGWS_AUTH_NO_MEMORY,       /* the claims could not be stored */
    RINGWS_AUTH_REASONS
};

/* The reason's name as logs, close reasons and /metrics write it
 * ("bad_signature"...). */
const char *ringws_auth_failure_name(enum ringws_auth_failure r);

struct ringws_request {
    struct ringws_str method, path, query; /* query.ptr NULL when absent */
    int version_minor;                      /* HTTP/1.x */
    size_t n_headers;
    const struct ringws_str *header_names;
    const struct ringws_str *header_values;
    struct ringws_str body;                 /* Content-Length body, if any */
    /* An upgrade's verified token (docs/SECURITY.md); NULL without one. */
    const struct ringws_token_claims *token;
};

/* Looks a header up by case-insensitive name; ptr NULL when absent. */
struct ringws_str ringws_request_header(const struct ringws_request *req,
                                        const char *name);

/* The answer an on_http callback fills in.  Body bytes are copied.
 * Header values (content_type, location, on_upgrade's *location) are
 * checked, never cut short: one that holds a control character other than
 * HTAB (CR and LF would split the response), or that does not fit (a
 * Location line over 2 KiB, a head over 4 KiB), is refused: the client gets
 * 500 instead, and the refusal is logged at debug level. */
struct ringws_response {
    int status;               /* e.g. 200 */
    const char *content_type; /* default "text/plain; charset=utf-8" */
    const void *body;
    size_t body_len;
    const char *location;     /* for 3xx, NULL otherwise */
};

/* Return values of on_http. */
#define RINGWS_HTTP_HANDLED 0  /* *res was filled in */
#define RINGWS_HTTP_DECLINED 1 /* let the server answer (built-in or 404) */

/* Return value of on_upgrade to let the handshake complete; anything else
 * is an HTTP status to answer with (401, 403, 3xx with *location set...;
 * *location is checked as ringws_response's is). */
#define RINGWS_UPGRADE_ACCEPT 0

struct ringws_callbacks {
    /* Plain HTTP request (not an upgrade).  May fill *res and return
     * RINGWS_HTTP_HANDLED, or return RINGWS_HTTP_DECLINED. */
    int (*on_http)(ringws_server *srv, const struct ringws_request *req,
                   struct ringws_response *res, void *user);
    /* A valid upgrade request to a WebSocket path; `subprotocol` is what the
     * server picked (NULL if none). */
    int (*on_upgrade)(ringws_server *srv, const struct ringws_request *req,
                      const char *subprotocol, const char **location,
                      void *user);
    void (*on_open)(ringws_conn *c, const struct ringws_request *req, void *user);
    /* A complete message; data is valid only during the call (for the
     * whole call, also after ringws_send or ringws_close ends the
     * connection from inside it). */
    void (*on_message)(ringws_conn *c, enum ringws_opcode op,
                       const void *data, size_t len, void *user);
    /* The connection is gone.  code is the close code received (or 1005 when
     * the close carried none, 1006 when the connection dropped without a
     * close handshake, the code the server sent when it failed the
     * connection); reason is the peer's close reason, if any.  Runs exactly
     * once per opened connection, and never inside another callback: when a
     * callback ends a connection (ringws_send meeting the overflow policy,
     * say, on its own connection or another), on_close runs after that
     * callback has returned. */
    void (*on_close)(ringws_conn *c, uint16_t code, const char *reason,
                     size_t reason_len, void *user);
};

/* What ringws_send does when a message would pile more than max_send_queue
 * bytes onto a connection whose peer is not reading fast enough. */
enum ringws_overflow_policy {
    RINGWS_OVERFLOW_CLOSE = 0,     /* close with 1008 (policy violation) */
    RINGWS_OVERFLOW_TRY_AGAIN = 1, /* close with 1013 (try again later) */
    RINGWS_OVERFLOW_DROP = 2,      /* drop this message, keep the connection */
};

/* What a publish does to a subscriber whose queue of published messages is
 * full (see docs/PUBSUB.md). */
enum ringws_fanout_policy {
    RINGWS_FANOUT_CLOSE_TRY_AGAIN = 0, /* close the subscriber with 1013 */
    RINGWS_FANOUT_CLOSE_POLICY = 1,    /* close the subscriber with 1008 */
    RINGWS_FANOUT_DROP_OLDEST = 2,     /* drop its oldest queued messages of
                                        * the topic until the new one fits */
};

/* How topics matching a pattern behave: the first matching rule wins. */
struct ringws_topic_rule {
    const char *pattern;  /* a topic name, or a prefix ending in '*' */
    enum ringws_fanout_policy policy;
    bool client_publish;  /* WebSocket clients may `pub` to it */
    unsigned history;     /* messages of each matching topic kept for
                           * resuming subscribers; 0: none */
    unsigned history_ttl_ms; /* ... for at most this long; 0: no limit */
};

/* A certificate (PEM; the file may hold its chain after it) and its private
 * key (PEM), for TLS (ringws_config.tls_certs). */
struct ringws_tls_cert {
    const char *cert_file;
    const char *key_file;
};

/* A key that verifies tokens (ringws_config.token_keys). */
struct ringws_token_key {
    const char *kid;  /* the kid in a token's header that selects it; NULL: none */
    const char *file; /* a PEM public key (RSA: RS256, EC P-256: ES256,
                       * Ed25519: EdDSA) or a file holding an HMAC secret
                       * (HS256, at least 32 bytes; one trailing newline is
                       * not part of it) */
};

struct ringws_config {
    const char *bind;          /* address to listen on; default "127.0.0.1" */
    uint16_t port;             /* 0 picks a free port: see ringws_server_port */
    unsigned workers;          /* 0 = number of online CPUs */
    size_t max_message;        /* bytes; default 16 MiB; over it: close 1009 */
    /* A message that spans receives must arrive at min_message_rate bytes
     * per second on average, counted from its first byte, once
     * message_grace_ms have passed: each byte buys 1/rate s more.  Slower:
     * close 1008.  Defaults 4096 (0: no floor) and 10000. */
    unsigned min_message_rate;
    unsigned message_grace_ms;
    size_t max_partial_bytes;  /* per worker: memory held by requests and
                                * messages still arriving; default 256 MiB;
                                * a connection that would pass it is closed
                                * (WebSocket: 1009) */
    unsigned handshake_timeout_ms; /* default 10000 */
    unsigned idle_timeout_ms;  /* ping after this much silence; 0 = never */
    unsigned close_timeout_ms; /* wait for the peer's close; default 3000 */
    size_t max_send_queue;     /* bytes queued per connection; default 4 MiB */
    enum ringws_overflow_policy overflow; /* default RINGWS_OVERFLOW_CLOSE */
    unsigned max_connections;  /* per worker; default 16384 */
    /* Admission during a reconnect storm: a worker whose connections not
     * yet upgraded (TCP accepted, HTTP or TLS under way) number more than
     * max_handshakes answers further upgrade requests 503 with a jittered
     * Retry-After instead of letting them wait for handshake_timeout;
     * 0 = no bound (default: a plaintext storm is absorbed fastest
     * without it, docs/TUNING.md). */
    unsigned max_handshakes;
    /* New connections a worker takes per loop turn; those beyond wait, in
     * order, for the next turns, so that a storm of connects shares each
     * turn with the established connections' sends and receives; 0 = no
     * budget; default 256. */
    unsigned accepts_per_turn;
    /* How an upgrade beyond max_handshakes is refused: 503 (or 0) with
     * that Retry-After; or 1013: answered 101, then closed at once with
     * 1013 Try Again Later, whose reason ends "; retry after N ms" (N drawn
     * from [0, reconnect_window_ms) when that is not 0), for browsers,
     * whose WebSocket API shows no HTTP status or header of a refused
     * upgrade, only a close's code and reason. */
    uint16_t admission_refusal;
    unsigned max_per_address;  /* per source address (IPv4, also v4-mapped
                                * behind "::"; IPv6: per /64) across all
                                * workers; 0 = no limit (default) */
    /* Receive buffers: each worker lends the kernel recv_buffers buffers (a
     * power of two, at most 32768; default 1024) of recv_buffer_size bytes
     * (16 to 1 MiB; default 16384), shared by all its connections.  Where
     * the kernel can (6.12+) it packs receives into a buffer one after the
     * other; plain_recv_buffers asks for one receive per buffer instead. */
    unsigned recv_buffer_size;
    unsigned recv_buffers;
    bool plain_recv_buffers;
    const char *const *ws_paths;     /* paths that accept upgrades; NULL: any */
    size_t n_ws_paths;
    const char *const *subprotocols; /* supported, in preference order */
    size_t n_subprotocols;
    const char *const *origins;      /* allowed Origin values; none: any */
    size_t n_origins;
    bool builtin_routes;       /* serve /healthz, /metrics, the console at / and /ringws.js */
    /* Accept permessage-deflate (RFC 7692) in its stateless mode: both
     * sides compress each message on its own, so that no connection holds
     * compression state.  Messages of 128 bytes or more are sent compressed
     * when that makes them smaller; a publish is compressed once for all
     * its subscribers.  Default false (the ringws binary: on). */
    bool deflate;
    /* With deflate, context takeover (RFC 7692 7.1.1) on these WebSocket
     * paths: where the client's offer allows it, each direction keeps its
     * LZ77 window between messages (a better ratio on small, alike
     * messages) in a zlib stream of the connection's own, made on its first
     * compressed message that way, of at most 2^deflate_takeover_window_bits
     * bytes of window (9..15; default 11).  Every message sent to such a
     * connection, a publish's delivery included, is compressed for it
     * alone (docs/ARCHITECTURE.md, "Compression").  A worker reserves at
     * most deflate_takeover_memory bytes (default 64 MiB) for these
     * streams: past it an upgrade gets the stateless mode. */
    const char *const *deflate_takeover_paths;
    size_t n_deflate_takeover_paths;
    unsigned deflate_takeover_window_bits;
    size_t deflate_takeover_memory;
    /* Publish/subscribe (docs/PUBSUB.md). */
    const char *pubsub_path;   /* WebSocket path of subscriber connections and
                                * enables POST /publish/TOPIC; NULL: off */
    const char *publish_token; /* required as "Authorization: Bearer" by
                                * POST /publish; NULL: only loopback peers
                                * whose request has no Origin may publish
                                * (a warning at create when the listener is
                                * not loopback) */
    size_t max_fanout_queue;   /* published bytes queued per subscriber;
                                * default 1 MiB */
    size_t max_publish;        /* bytes in a published message (all ways of
                                * publishing); default 1 MiB */
    size_t max_inbox_bytes;    /* published messages waiting for one worker
                                * to take them; default 64 MiB; a publish
                                * that would pass it on any worker is refused
                                * (-EAGAIN, 503, close 1013) */
    unsigned max_topics;       /* subscriptions per connection; default 64 */
    const struct ringws_topic_rule *topic_rules;
    size_t n_topic_rules;
    /* TLS (docs/TLS.md): with n_tls_certs > 0 the listener on port speaks
     * TLS 1.2/1.3 only.  The first certificate is the default; the others
     * are chosen by the name the client asks for (SNI) among the DNS names
     * of each.  The files are read at create and again by
     * ringws_server_reload_tls. */
    const struct ringws_tls_cert *tls_certs;
    size_t n_tls_certs;
    bool plain_listener;       /* with TLS: also a plaintext listener ... */
    uint16_t plain_port;       /* ... on this port (0 picks a free one) */
    /* The listener on port is behind a TCP proxy that speaks the PROXY
     * protocol (v1 or v2, docs/DEPLOY.md): every connection must begin with
     * its header (before TLS, with TLS), whose client address then counts
     * for max_per_address and the loopback check of publishing; a
     * connection without a valid one within handshake_timeout_ms is closed.
     * The plaintext listener beside TLS stays direct. */
    bool proxy_protocol;
    unsigned tls_ticket_lifetime_s; /* session tickets: valid this long; the
                                     * key that seals them changes as often;
                                     * default 7200 */
    unsigned tls_handshake_budget_us; /* handshake CPU a worker spends per
                                       * loop turn before it defers further
                                       * handshakes to the next; default 2000 */
    /* What ringws_server_stop tells each WebSocket: close stop_code (0:
     * 1001 Going Away, "server shutting down"; or 1012 Service Restart,
     * "server restarting").  With reconnect_window_ms > 0 the reason ends
     * in "; retry after N ms", N drawn per connection from
     * [0, reconnect_window_ms), so that clients spread their return
     * instead of all reconnecting at once; so does the reason of every
     * 1013 Try Again Later the server sends.  Defaults 0 and 0. */
    uint16_t stop_code;
    unsigned reconnect_window_ms;
    /* Signed tokens (docs/SECURITY.md): with n_token_keys > 0 an upgrade
     * that carries a token (?token=, Authorization: Bearer, the cookie
     * token_cookie) must carry a valid one (else 401), its claims bound what
     * the connection subscribes and publishes to, it is closed with 4001 at
     * its exp, and POST /publish needs one (or publish_token) from every
     * peer.  The files are read at create and again by
     * ringws_server_reload_tokens (the strings must stay valid). */
    const struct ringws_token_key *token_keys;
    size_t n_token_keys;
    unsigned token_leeway_s;   /* grace on exp and nbf; default 30 */
    const char *token_cookie;  /* cookie that may carry the token; NULL: none */
    bool require_token;        /* the pub/sub path needs a token (else 401) */
    size_t max_history_bytes;  /* all topics' histories together (their
                                * shared frames); past it the oldest
                                * messages of all topics go first; default
                                * 64 MiB */
    /* A topic's sequence (epoch, last offset) outlives its last subscriber
     * and its history by sequence_idle_ms (default 300000), so that a
     * client back within it resumes without a false gap; at most
     * sequence_idle_max idle sequences are kept (default 65536; past it
     * the longest idle is forgotten first).  0: forgotten at once. */
    unsigned sequence_idle_ms;
    uint32_t sequence_idle_max;
    /* Where topics' sequences live (docs/CLUSTER.md): NULL, in this
     * process; "redis://HOST:PORT[,HOST:PORT...]", in Redis (a Redis
     * Cluster given by seed nodes, or one Redis), shared by every node
     * configured with it.  Hosts are resolved at create. */
    const char *engine;
    struct ringws_callbacks cb;
    void *user;                /* passed to every callback */
};

/* Fills *cfg with the defaults above. */
void ringws_config_init(struct ringws_config *cfg);

/* Creates a server: binds every worker's listener.  0 or -errno: -ENOKEY
 * when a token key cannot be used (the reason is logged), -EIO when a TLS
 * certificate cannot. */
int ringws_server_create(const struct ringws_config *cfg, ringws_server **out);

/* The port the listeners are bound to (useful after port 0). */
uint16_t ringws_server_port(const ringws_server *srv);

/* The plaintext listener's port beside TLS (plain_listener), else 0. */
uint16_t ringws_server_plain_port(const ringws_server *srv);

/* Reads the certificates and keys of tls_certs again: handshakes that start
 * after it returns use them, connections already open keep theirs.  On any
 * error (a file missing or bad, a key that does not match) nothing changes.
 * 0, -EINVAL (the server has no TLS), -EIO (see the log) or -ENOMEM.
 * Callable from any thread but not from a signal handler. */
int ringws_server_reload_tls(ringws_server *srv);

/* Reads the token key files again (rotation: load old and new under two
 * kids, then drop the old): tokens verified after it returns use them.  On
 * any error nothing changes.  0, -EINVAL (the server has no token keys),
 * -ENOKEY (a key cannot be used: see the log) or -ENOMEM.  Callable from
 * any thread but not from a signal handler. */
int ringws_server_reload_tokens(ringws_server *srv);

/* Runs the workers until ringws_server_stop; returns 0, or the -errno of a
 * worker that could not go on (its ring failed): such a worker stops the
 * whole server as ringws_server_stop does, its own connections end at once
 * (on_close with 1006), and the error is logged. */
int ringws_server_run(ringws_server *srv);

/* Asks the server to stop: stop accepting, send the stop close (stop_code:
 * 1001 unless configured) to every WebSocket, wait up to close_timeout_ms,
 * then ringws_server_run returns.  Async-signal-safe. */
void ringws_server_stop(ringws_server *srv);

/* Sends every open WebSocket the close ringws_server_stop would (stop_code,
 * the reconnect hint) while the server keeps running: its listeners, its
 * topics' histories and its HTTP connections stay.  For shedding clients
 * onto other processes, and for testing their recovery.  Any thread, or a
 * signal handler. */
void ringws_server_disconnect_all(ringws_server *srv);

void ringws_server_destroy(ringws_server *srv);

/* Counters summed over all workers; callable from any thread (each figure
 * is exact for its worker at the moment it is read). */
struct ringws_stats {
    uint64_t connections_open;     /* accepted and not yet freed */
    uint64_t accepted;
    uint64_t refused;              /* over max_connections or max_per_address */
    uint64_t send_queue_overflows; /* ringws_send met a full queue */
    uint64_t messages_dropped;     /* ... and dropped the message */
    uint64_t publishes;            /* publishes handled (per worker: once) */
    uint64_t fanout_queued;        /* published messages queued to subscribers */
    uint64_t fanout_dropped;       /* dropped for slow subscribers */
    uint64_t fanout_closed;        /* slow subscribers closed (1008/1013) */
    uint64_t subscriptions;        /* current subscriptions */
    uint64_t sends;                /* send requests issued (each may gather
                                    * many queued messages) */
    uint64_t topics;               /* topics with subscribers (once per
                                    * worker that holds some of them) */
    uint64_t topic_buckets;        /* hash buckets of the topic indexes
                                    * (a pointer each) */
    uint64_t messages_too_slow;    /* closed 1008: below min_message_rate */
    uint64_t partial_over_budget;  /* closed: max_partial_bytes reached */
    uint64_t partial_bytes;        /* held now by incomplete requests and
                                    * messages */
    uint64_t publishes_refused;    /* a worker's inbox was full */
    uint64_t tls_handshakes_full;     /* TLS handshakes completed in full */
    uint64_t tls_handshakes_resumed;  /* ... resumed from a session ticket */
    uint64_t tls_handshake_failures;  /* TLS connections that failed */
    uint64_t tls_handshakes_deferred; /* handshake steps put off to a later
                                       * loop turn (handshake budget) */
    /* Tokens refused, and connections closed for their token, by reason
     * ([RINGWS_AUTH_OK] stays 0). */
    uint64_t auth_failures[RINGWS_AUTH_REASONS];
};
void ringws_server_stats(const ringws_server *srv, struct ringws_stats *out);

/* Queues a message.  0, -EINVAL (bad opcode or text not UTF-8), -EPIPE
 * (closing), -ENOBUFS (the queue already holds data and this message would
 * take it over max_send_queue: the overflow policy was applied - the
 * message dropped, or the connection failed with 1008 or 1013: later sends
 * return -EPIPE, its close frame follows what is queued and on_close runs
 * once the calling callback has returned). */
int ringws_send(ringws_conn *c, enum ringws_opcode op, const void *data,
                size_t len);

/* Starts the closing handshake with a code (1000-1003, 1007-1014,
 * 3000-4999) and a UTF-8 reason of at most 123 bytes. */
int ringws_close(ringws_conn *c, uint16_t code, const char *reason,
                 size_t reason_len);

/* Publishing (docs/PUBSUB.md). */
#define RINGWS_PUBLISH_BINARY 1u /* flags: a binary message (default text) */
#define RINGWS_MAX_TOPIC 128     /* bytes in a topic name */

/* True when len bytes at topic make a valid topic name: 1 to
 * RINGWS_MAX_TOPIC bytes of A-Z a-z 0-9 and - . _ ~ : / @ (the names
 * subscribers can put in a query string unescaped). */
bool ringws_topic_valid(const char *topic, size_t len);

/* Parses a rule written PATTERN=POLICY[,publish] (the ringws binary's
 * --topic; POLICY is close-1013, close-1008 or drop-oldest) in place: spec
 * is cut at '=', and rule->pattern points into it.  0 or -EINVAL. */
int ringws_topic_rule_parse(char *spec, struct ringws_topic_rule *rule);

/* Publishes to every subscriber of topic on every worker.  Callable from any
 * thread, also from callbacks.  The frame is built once; data is copied.
 * 0, -EINVAL (bad topic, bad flags, text not UTF-8), -EMSGSIZE (longer than
 * max_publish or max_message), -EAGAIN (a worker's inbox holds
 * max_inbox_bytes already: nothing was published, try again later),
 * -ENOMEM, -ESHUTDOWN (the server is stopping).
 *
 * With an engine (config.engine, docs/CLUSTER.md) 0 means "handed over",
 * not "published": from a thread that is no worker, once the publish is
 * queued for the topic's worker (-EAGAIN when that worker's queue holds
 * max_inbox_bytes already); from a callback, once it is sent to the
 * topic's Redis master (-EAGAIN when that master's connection is down at
 * the call).  A refusal after that (the master lost before it answered,
 * its slot being migrated, no master for the slot when the worker takes
 * it) is not reported to the caller: the message is not published and is
 * not retried (retrying could publish it twice), and the metric
 * ringws_engine_refused_unreported_total counts it.  A publisher that
 * must know uses POST /publish, whose answer comes after Redis's. */
int ringws_publish(ringws_server *srv, const char *topic, const void *data,
                   size_t len, unsigned flags);

/* Subscribes a connection (any path) to a topic, or ends a subscription;
 * from the connection's own worker only, like ringws_send.  0, -EINVAL
 * (bad topic), -E2BIG (max_topics reached), -EPIPE (closing), -ENOMEM;
 * ringws_unsubscribe returns -ENOENT when it was not subscribed.
 *
 * With an engine (docs/CLUSTER.md) ringws_subscribe does not wait for a
 * topic the node has not made live (none of its connections subscribed
 * it, or read its history, in the last 2 s): it returns 0 at once, and the connection receives
 * the messages published after the node's subscription in Redis is
 * confirmed and its position read (a few round trips to the topic's
 * master); one published in between does not reach it, and nothing tells
 * it so.  A client that must not miss one subscribes itself with the
 * ringws.v1 `sub` command (or ?topics=), which waits for the topic. */
int ringws_subscribe(ringws_conn *c, const char *topic);
int ringws_unsubscribe(ringws_conn *c, const char *topic);

void ringws_conn_set_user(ringws_conn *c, void *user);
void *ringws_conn_get_user(const ringws_conn *c);
/* The chosen subprotocol, or NULL. */
const char *ringws_conn_subprotocol(const ringws_conn *c);
/* The worker (0..workers-1) that owns the connection. */
unsigned ringws_conn_worker(const ringws_conn *c);
/* The connection's verified token (the latest one an `auth` command
 * brought), or NULL without one; valid until the connection's next `auth`
 * command or the end of its on_close. */
const struct ringws_token_claims *ringws_conn_token(const ringws_conn *c);

#ifdef __cplusplus
}
#endif
#endif
