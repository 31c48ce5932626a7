/* conn_http.c - HTTP/1.1 on a connection: requests parsed in place (and
 * gathered in req when they span receives), pipelined requests answered in
 * order, built-in routes, the library user's on_http, the upgrade to
 * WebSocket, and what an HTTP connection does on EOF, on its deadline and
 * when the server stops (http_proto_ops).
 *
 * Why it exists: one port serves both plain HTTP and WebSocket, and every
 * request that is not a valid upgrade must get a precise, complete answer
 * (status, Content-Length, keep-alive or close) rather than a dropped
 * connection. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "engine.h"
#include "http_response.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "pubsub_proto.h"
#include "token.h"

#define HEAD_MAX 4096 /* bytes of a response head the server writes */

/* For the application, over the view it is handed; the server's own code
 * looks fields up in the parsed request (http_header_find). */
struct ringws_str ringws_request_header(const struct ringws_request *req,
                                        const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < req->n_headers; i++)
        if (req->header_names[i].len == len &&
            http_text_equal_nocase(req->header_names[i].ptr, name, len))
            return req->header_values[i];
    return (struct ringws_str){NULL, 0};
}

/* The value of the first field named `name`; ptr NULL when absent. */
static struct ringws_str conn_http_field(const struct http_request *req, const char *name)
{
    int i = http_header_find(req, name, 0);

    if (i < 0)
        return (struct ringws_str){NULL, 0};
    return (struct ringws_str){req->headers[i].value, req->headers[i].value_len};
}

/* True when [p, p + n) starts with the NUL-terminated word, ignoring case. */
static bool conn_http_starts_nocase(const char *p, size_t n, const char *word)
{
    size_t len = strlen(word);

    return p && n >= len && http_text_equal_nocase(p, word, len);
}

static bool str_is(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && !memcmp(p, s, n);
}

static void conn_http_error(struct ringws_conn *c, const struct http_request *req,
                            int status, const char *reason, bool close,
                            const char *extra);
static bool conn_http_is_handshake(const struct ringws_config *cfg,
                                   const struct http_request *req);

/* Queues a complete response.  Errors of the request itself (malformed,
 * too large) and requests that asked for it close the connection after the
 * answer is out. */
/* Answers req; a static body (one that lives as long as the server) is
 * queued without a copy, so that pipelined requests for a page cost its
 * head each, not the page. */
static void conn_http_answer(struct ringws_conn *c, const struct http_request *req,
                             int status, const char *ctype, const void *body,
                             size_t body_len, bool body_static, bool close, const char *extra)
{
    struct worker *w = conn_worker(c);
    char head[HEAD_MAX];
    struct http_response_head h = {
        .status = status,
        .content_type = ctype,
        .content_length = body_len,
        .close = close,
        .extra = extra,
    };
    /* A 304, like the answer to HEAD, gives the length of the
     * representation, not its bytes. */
    bool head_only = status == 304 || (req && str_is(req->method, req->method_len, "HEAD"));
    size_t n = http_response_write_head(head, sizeof(head), &h);

    if (c->out_bytes > w->srv->cfg.max_send_queue) {
        /* Pipelined requests from a client that reads no responses. */
        STAT_ADD(w, send_queue_overflows, 1);
        conn_abort(c);
        return;
    }
    if (!n) {
        /* Only the application's values can make a head too long: the
         * answer is refused whole rather than cut short.  The 500's own
         * head is small. */
        log_msg(LOG_LEVEL_DEBUG, "worker %u: response head over %u bytes refused",
                w->id, (unsigned)sizeof(head));
        conn_http_error(c, req, 500, "response header too long", close, NULL);
        return;
    }
    if (req && conn_http_is_handshake(&w->srv->cfg, req))
        metrics_count_handshake(w, status);
    if (head_only)
        body_len = 0;
    if (conn_queue(c, head, n, body, body_static ? 0 : body_len) < 0 ||
        (body_static && body_len && conn_queue_static(c, body, body_len) < 0)) {
        conn_abort(c);
        return;
    }
    if (close)
        conn_drain(c);
}

static void conn_http_respond(struct ringws_conn *c, const struct http_request *req,
                              int status, const char *ctype, const void *body,
                              size_t body_len, bool close, const char *extra)
{
    conn_http_answer(c, req, status, ctype, body, body_len, false, close, extra);
}

/* A header value from the application.  Any control character but HTAB
 * could end the line and add headers of its own (response splitting): such
 * a value is refused, never written. */
static bool conn_http_value_ok(const struct ringws_conn *c, const char *name, const char *v)
{
    for (const char *p = v; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            log_msg(LOG_LEVEL_DEBUG, "worker %u: %s from the application holds control "
                    "character 0x%02x: refused", conn_worker(c)->id, name, ch);
            return false;
        }
    }
    return true;
}

/* Writes "Location: VALUE\r\n" for the application's redirect into out
 * (empty without one); false when the value is refused or the line does not
 * fit (refused whole, never cut short). */
static bool conn_http_location(const struct ringws_conn *c, char *out, size_t cap,
                               const char *location)
{
    int n;

    out[0] = 0;
    if (!location)
        return true;
    if (!conn_http_value_ok(c, "Location", location))
        return false;
    n = snprintf(out, cap, "Location: %s\r\n", location);
    if (n > 0 && (size_t)n < cap)
        return true;
    log_msg(LOG_LEVEL_DEBUG, "worker %u: Location from the application (%zu bytes) does not fit: "
            "refused", conn_worker(c)->id, strlen(location));
    out[0] = 0;
    return false;
}

static void conn_http_error(struct ringws_conn *c, const struct http_request *req,
                            int status, const char *reason, bool close,
                            const char *extra)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status,
                     http_status_text(status), reason ? reason : "");

    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    conn_http_respond(c, req, status, "text/plain; charset=utf-8", body,
                      (size_t)n, close, extra);
}

static void conn_http_view(const struct worker *w, const struct http_request *req,
                           const uint8_t *body, size_t body_len,
                           struct ringws_request *out)
{
    for (unsigned i = 0; i < req->n_headers; i++) {
        w->req_names[i] = (struct ringws_str){req->headers[i].name, req->headers[i].name_len};
        w->req_values[i] = (struct ringws_str){req->headers[i].value, req->headers[i].value_len};
    }
    *out = (struct ringws_request){
        .method = {req->method, req->method_len},
        .path = {req->path, req->path_len},
        .query = {req->query, req->query_len},
        .version_minor = req->version_minor,
        .n_headers = req->n_headers,
        .header_names = w->req_names,
        .header_values = w->req_values,
        .body = {(const char *)body, body_len},
    };
}

static bool conn_http_is_pubsub_path(const struct ringws_config *cfg,
                                     const struct http_request *req)
{
    return cfg->pubsub_path && str_is(req->path, req->path_len, cfg->pubsub_path);
}

static bool conn_http_is_ws_path(const struct ringws_config *cfg,
                                 const struct http_request *req)
{
    if (conn_http_is_pubsub_path(cfg, req))
        return true;
    for (size_t i = 0; i < cfg->n_ws_paths; i++)
        if (str_is(req->path, req->path_len, cfg->ws_paths[i]))
            return true;
    return false;
}

/* A request that tries to open a WebSocket: one that asks for the upgrade,
 * or any request to a WebSocket endpoint (refused with 426 or 405 when it
 * does not ask).  Also asked of what a malformed request's head held
 * before its error (path NULL: not even the request line). */
static bool conn_http_is_handshake(const struct ringws_config *cfg,
                                   const struct http_request *req)
{
    return req->path && (ws_handshake_requested(req) || conn_http_is_ws_path(cfg, req));
}

static bool conn_http_is_get(const struct http_request *req)
{
    return str_is(req->method, req->method_len, "GET") ||
           str_is(req->method, req->method_len, "HEAD");
}

/* A subscriber's topics from "?topics=a,b", checked before the 101 so that
 * a bad list opens nothing. */
static bool conn_http_topics_ok(struct ringws_conn *c, const struct http_request *req,
                                const char **list, size_t *len)
{
    if (!req->query || !topic_query_find(req->query, req->query_len, list, len))
        return true;
    if (!topic_list_valid(*list, *len)) {
        conn_http_error(c, req, 400, "invalid topic list", !req->keep_alive, NULL);
        return false;
    }
    return true;
}

/* Positions to resume from, "?since=TOPIC:EPOCH:OFFSET,...": only with
 * ringws.v1 (a raw subscriber could not tell replayed messages from live
 * ones), each naming a topic of the list. */
static bool conn_http_since_ok(struct ringws_conn *c, const struct http_request *req,
                               bool envelope, const char *topics, size_t topics_len,
                               const char **since, size_t *len)
{
    if (!req->query || !query_param_find(req->query, req->query_len, "since", since, len))
        return true;
    if (!envelope) {
        conn_http_error(c, req, 400, "since needs the ringws.v1 subprotocol",
                        !req->keep_alive, NULL);
        return false;
    }
    if (!topics_len || !topic_pos_list_valid(topics, topics_len, *since, *len)) {
        conn_http_error(c, req, 400, "invalid since", !req->keep_alive, NULL);
        return false;
    }
    return true;
}

/* Subscribes after the 101 is queued (at mark) but before the connection
 * is open, so that ringws.v1 answers and replays follow the 101 and that a
 * list of more distinct topics than allowed is still refused with 400:
 * the 101, and whatever followed it, is taken back. */
static bool conn_http_subscribe(struct ringws_conn *c, const struct http_request *req,
                                const char *list, size_t len, const char *since,
                                size_t since_len, struct out_chunk *mark)
{
    int r = pubsub_subscribe_list(c, list, len, since, since_len);

    if (r >= 0)
        return true;
    pubsub_conn_gone(c);
    conn_out_rewind(c, mark);
    conn_ws_takeover_detach(c);
    c->flags &= ~(CF_ENVELOPE | CF_DEFLATE);
    conn_http_error(c, req, r == -E2BIG ? 400 : 503,
                    r == -E2BIG ? "too many topics" : "out of memory", !req->keep_alive, NULL);
    return false;
}

/* Answers a refused token: 401 with the reason (RFC 6750 section 3). */
static void conn_http_token_refused(struct ringws_conn *c, const struct http_request *req,
                                    enum ringws_auth_failure r)
{
    char extra[160], why[64];
    const char *name = ringws_auth_failure_name(r);

    if (r == RINGWS_AUTH_NO_MEMORY) {
        conn_http_error(c, req, 503, "out of memory", !req->keep_alive, NULL);
        return;
    }
    snprintf(why, sizeof(why), "token %s", name);
    if (r == RINGWS_AUTH_MISSING)
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer\r\n");
    else
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer error=\"invalid_token\", "
                 "error_description=\"%s\"\r\n", name);
    conn_http_error(c, req, 401, why, !req->keep_alive, extra);
}

/* The upgrade's token, with token keys: a token given must be valid (401),
 * the pub/sub path needs one with require_token (401), and ?topics= must lie
 * within its claims (403).  *claims: NULL without a token. */
static bool conn_http_token(struct ringws_conn *c, const struct http_request *req, bool pubsub,
                            const char *topics, size_t topics_len,
                            struct ringws_token_claims **claims)
{
    struct worker *w = conn_worker(c);
    const struct ringws_config *cfg = &w->srv->cfg;
    enum ringws_auth_failure r;

    *claims = NULL;
    if (!cfg->n_token_keys)
        return true;
    r = conn_auth_from_request(c, req, true, claims);
    if (r == RINGWS_AUTH_MISSING && !(pubsub && cfg->require_token))
        return true;
    if (r == RINGWS_AUTH_MISSING)
        conn_auth_refused(w, r, "upgrade", NULL);
    if (r != RINGWS_AUTH_OK) {
        conn_http_token_refused(c, req, r);
        return false;
    }
    if (topics_len && !conn_auth_topics_ok(c, *claims, topics, topics_len)) {
        free(*claims);
        *claims = NULL;
        conn_http_error(c, req, 403, "topics outside the token's claims", !req->keep_alive,
                        "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n");
        return false;
    }
    return true;
}

/* Retry-After of an admission refusal: drawn per answer over the
 * reconnect window (at least ADMIT_RETRY_MIN_S seconds wide), so that the
 * clients a storm refused do not all come back in the same second. */
#define ADMIT_RETRY_MIN_S 5u

/* An operator's bound on the connections a worker holds in the handshake
 * phase (max_handshakes; none by default, since a plaintext refusal costs
 * about what an upgrade does, and over TLS it comes after the TLS
 * handshake, whose cost it cannot save: docs/TUNING.md): where handshakes
 * are dear, upgrades beyond it are refused at once, before the costly part
 * of the handshake (tokens, subscriptions, the application's callbacks),
 * and told when to come back. */
static bool conn_http_busy(const struct ringws_conn *c)
{
    const struct worker *w = conn_worker(c);
    unsigned max = w->srv->cfg.max_handshakes;

    return max && w->handshaking + w->accept_n > max;
}

/* A refused upgrade as 503 with a Retry-After drawn over the reconnect
 * window, so that the refused do not all come back at once; the
 * connection closes after it. */
static void conn_http_refuse(struct ringws_conn *c, const struct http_request *req,
                             const char *why)
{
    struct worker *w = conn_worker(c);
    unsigned span = (w->srv->cfg.reconnect_window_ms + 999) / 1000;
    char extra[40];

    if (span < ADMIT_RETRY_MIN_S)
        span = ADMIT_RETRY_MIN_S;
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", 1 + worker_random_below(w, span));
    conn_http_error(c, req, 503, why, true, extra);
}

static void conn_http_refuse_busy(struct ringws_conn *c, const struct http_request *req)
{
    STAT_ADD(conn_worker(c), handshakes_refused_busy, 1);
    conn_http_refuse(c, req, "too many handshakes in progress");
}

/* The refusal as a WebSocket opened and closed at once with 1013 and its
 * retry hint (admission_refusal 1013): nothing of the application's runs,
 * no subscription is made, nothing is compressed. */
static void conn_http_open_busy(struct ringws_conn *c, struct ws_handshake_result *hs)
{
    struct worker *w = conn_worker(c);
    char head[HEAD_MAX];
    size_t n;

    hs->deflate = false;
    n = ws_handshake_write_101(head, sizeof(head), hs);
    if (!n || conn_queue(c, head, n, NULL, 0) < 0) {
        conn_abort(c);
        return;
    }
    STAT_ADD(w, handshakes_refused_busy, 1);
    metrics_count_handshake(w, 101);
    conn_state_set(c, CONN_WS);
    ws_decoder_init(&c->dec);
    c->last_rx_tick = (uint32_t)worker_tick(w);
    conn_ws_close_why(c, WS_CLOSE_TRY_AGAIN, "too many handshakes in progress", false);
}

/* The handshake checked with the server's policy, and context takeover
 * offered to the client where the path has it and the worker's cap lets
 * it (counted when the cap alone made a compressing client stateless). */
static int conn_http_validate(struct ringws_conn *c, const struct http_request *req,
                              struct ws_handshake_result *hs)
{
    struct worker *w = conn_worker(c);
    struct ringws_server *srv = w->srv;
    struct ws_handshake_policy policy = srv->policy;
    int takeover = policy.deflate && srv->cfg.n_deflate_takeover_paths
                       ? conn_ws_takeover_allowed(w, req->path, req->path_len)
                       : 0;

    if (takeover > 0)
        policy.takeover_bits = (uint8_t)srv->cfg.deflate_takeover_window_bits;
    ws_handshake_validate(req, &policy, hs);
    if (takeover < 0 && hs->status == 101 && hs->deflate)
        STAT_ADD(w, deflate_takeover_refused, 1);
    return hs->status;
}

static void conn_http_upgrade(struct ringws_conn *c, const struct http_request *req,
                              struct ringws_request *view)
{
    struct worker *w = conn_worker(c);
    struct ringws_server *srv = w->srv;
    const struct ringws_config *cfg = &srv->cfg;
    struct ws_handshake_result hs;
    char head[HEAD_MAX];
    const char *location = NULL, *topics = NULL, *since = NULL;
    struct ringws_token_claims *claims;
    struct out_chunk *mark;
    size_t n, topics_len = 0, since_len = 0;
    bool pubsub = conn_http_is_pubsub_path(cfg, req);
    bool envelope = pubsub && ws_handshake_offered(req, RINGWS_ENVELOPE), busy;
    int status;

    if ((cfg->n_ws_paths || cfg->pubsub_path) && !conn_http_is_ws_path(cfg, req)) {
        conn_http_error(c, req, 404, "no WebSocket endpoint at this path", !req->keep_alive, NULL);
        return;
    }
    /* A stop reaches the workers one by one: a client that lands on one
     * that has not heard of it yet gets no WebSocket either. */
    if (atomic_load(&srv->stop_requested)) {
        conn_http_refuse(c, req, "server shutting down");
        return;
    }
    busy = conn_http_busy(c);
    if (busy && cfg->admission_refusal != WS_CLOSE_TRY_AGAIN) {
        conn_http_refuse_busy(c, req);
        return;
    }
    status = conn_http_validate(c, req, &hs);
    if (status != 101) {
        conn_http_error(c, req, status, hs.reason, !req->keep_alive,
                        status == 405 ? "Allow: GET\r\n"
                        : hs.version_hint ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    if (envelope)
        hs.subprotocol = RINGWS_ENVELOPE; /* whatever --subprotocol lists */
    if (busy) {
        conn_http_open_busy(c, &hs);
        return;
    }
    if (pubsub && !conn_http_topics_ok(c, req, &topics, &topics_len))
        return;
    if (pubsub &&
        !conn_http_since_ok(c, req, envelope, topics, topics_len, &since, &since_len))
        return;
    if (!conn_http_token(c, req, pubsub, topics, topics_len, &claims))
        return;
    view->token = claims;
    if (cfg->cb.on_upgrade) {
        status = cfg->cb.on_upgrade(srv, view, hs.subprotocol, &location, cfg->user);
        if (status != RINGWS_UPGRADE_ACCEPT) {
            char extra[HEAD_MAX / 2];
            const char *why = "upgrade refused";
            free(claims);
            if (status < 300 || status > 599)
                status = 500;
            if (!conn_http_location(c, extra, sizeof(extra),
                                    status / 100 == 3 ? location : NULL)) {
                status = 500;
                why = "invalid Location from the application";
            }
            conn_http_error(c, req, status, why, !req->keep_alive, extra[0] ? extra : NULL);
            return;
        }
    }
    if (hs.deflate && (hs.pmd.server_bits || hs.pmd.client_bits) &&
        conn_ws_takeover_attach(c, &hs.pmd) < 0) {
        free(claims);
        conn_http_error(c, req, 503, "out of memory", !req->keep_alive, NULL);
        return;
    }
    n = ws_handshake_write_101(head, sizeof(head), &hs);
    mark = c->out_tail;
    if (!n || conn_queue(c, head, n, NULL, 0) < 0) {
        free(claims);
        conn_abort(c);
        return;
    }
    if (envelope)
        c->flags |= CF_ENVELOPE;
    if (hs.deflate) /* before the subscriptions: they count it */
        c->flags |= CF_DEFLATE;
    if (topics_len && !conn_http_subscribe(c, req, topics, topics_len, since, since_len, mark)) {
        free(claims);
        return;
    }
    if (claims && conn_auth_attach(c, claims) < 0) { /* the claims are freed */
        conn_abort(c);
        return;
    }
    metrics_count_handshake(w, 101);
    conn_state_set(c, CONN_WS);
    for (size_t i = 0; hs.subprotocol && i < cfg->n_subprotocols; i++)
        if (cfg->subprotocols[i] == hs.subprotocol)
            c->subprotocol = (uint8_t)(i + 1);
    c->flags |= CF_OPENED;
    ws_decoder_init(&c->dec);
    c->dec.deflate = hs.deflate;
    c->last_rx_tick = (uint32_t)worker_tick(w); /* the idle clock starts here */
    conn_set_deadline(c, cfg->idle_timeout_ms);
    if (pubsub)
        c->flags |= CF_PUBSUB;
    if (cfg->cb.on_open)
        cfg->cb.on_open(c, view, cfg->user);
}

/* The refused tokens, one series per reason (zeros included). */
static void conn_http_metrics_auth(struct text_buf *body, const struct ringws_stats *st)
{
    static const char name[] = "ringws_auth_failures_total";

    metrics_write_family(body, name, "counter");
    for (unsigned r = RINGWS_AUTH_OK + 1; r < RINGWS_AUTH_REASONS; r++) {
        char label[64];

        snprintf(label, sizeof(label), "reason=\"%s\"", ringws_auth_failure_name(r));
        metrics_write_sample(body, name, label, st->auth_failures[r]);
    }
}

/* The sequencer's topics, the histories and the resumes. */
static void conn_http_metrics_history(struct text_buf *body, struct ringws_server *srv)
{
    static const char *const evict[HIST_EVICT_REASONS] = {"reason=\"count\"",
                                                          "reason=\"ttl\"",
                                                          "reason=\"memory\""};
    static const char *const resume[SEQ_RESUME_OUTCOMES] = {"outcome=\"recovered\"",
                                                            "outcome=\"gap\""};
    struct seq_stats s;

    seq_stats(srv, &s);
    metrics_write_family(body, "ringws_sequences", "gauge");
    metrics_write_sample(body, "ringws_sequences", NULL, s.topics);
    metrics_write_family(body, "ringws_sequences_idle", "gauge");
    metrics_write_sample(body, "ringws_sequences_idle", NULL, s.idle_topics);
    metrics_write_family(body, "ringws_history_messages", "gauge");
    metrics_write_sample(body, "ringws_history_messages", NULL, s.history_messages);
    metrics_write_family(body, "ringws_history_bytes", "gauge");
    metrics_write_sample(body, "ringws_history_bytes", NULL, s.history_bytes);
    metrics_write_family(body, "ringws_history_evictions_total", "counter");
    for (unsigned i = 0; i < HIST_EVICT_REASONS; i++)
        metrics_write_sample(body, "ringws_history_evictions_total", evict[i], s.evicted[i]);
    metrics_write_family(body, "ringws_resumes_total", "counter");
    for (unsigned i = 0; i < SEQ_RESUME_OUTCOMES; i++)
        metrics_write_sample(body, "ringws_resumes_total", resume[i], s.resumes[i]);
    if (srv->engine->metrics)
        srv->engine->metrics(srv, body);
}

/* Prometheus text format: the counters of ringws_server_stats, then the
 * families only the server keeps (metrics.c). */
static void conn_http_metrics(struct ringws_conn *c, const struct http_request *req,
                              bool close)
{
    struct worker *w = conn_worker(c);
    struct ringws_stats st;
    struct text_buf body = {0};

    ringws_server_stats(w->srv, &st);
    /* Rows of one name follow each other: its HELP and TYPE lines go
     * before the first; label is NULL or what goes between the braces. */
    const struct {
        const char *name, *type, *label;
        uint64_t value;
    } rows[] = {
        {"ringws_connections_open", "gauge", NULL, st.connections_open},
        {"ringws_accepted_total", "counter", NULL, st.accepted},
        {"ringws_refused_total", "counter", NULL, st.refused},
        {"ringws_send_queue_overflows_total", "counter", NULL, st.send_queue_overflows},
        {"ringws_messages_dropped_total", "counter", NULL, st.messages_dropped},
        {"ringws_publishes_total", "counter", NULL, st.publishes},
        {"ringws_fanout_queued_total", "counter", NULL, st.fanout_queued},
        {"ringws_fanout_dropped_total", "counter", NULL, st.fanout_dropped},
        {"ringws_fanout_closed_total", "counter", NULL, st.fanout_closed},
        {"ringws_subscriptions", "gauge", NULL, st.subscriptions},
        {"ringws_sends_total", "counter", NULL, st.sends},
        {"ringws_topics", "gauge", NULL, st.topics},
        {"ringws_topic_buckets", "gauge", NULL, st.topic_buckets},
        {"ringws_messages_too_slow_total", "counter", NULL, st.messages_too_slow},
        {"ringws_partial_over_budget_total", "counter", NULL, st.partial_over_budget},
        {"ringws_partial_bytes", "gauge", NULL, st.partial_bytes},
        {"ringws_publishes_refused_total", "counter", NULL, st.publishes_refused},
        {"ringws_tls_handshakes_total", "counter", "kind=\"full\"", st.tls_handshakes_full},
        {"ringws_tls_handshakes_total", "counter", "kind=\"resumed\"",
         st.tls_handshakes_resumed},
        {"ringws_tls_handshake_failures_total", "counter", NULL, st.tls_handshake_failures},
        {"ringws_tls_handshakes_deferred_total", "counter", NULL, st.tls_handshakes_deferred},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (i == 0 || strcmp(rows[i].name, rows[i - 1].name) != 0)
            metrics_write_family(&body, rows[i].name, rows[i].type);
        metrics_write_sample(&body, rows[i].name, rows[i].label, rows[i].value);
    }
    conn_http_metrics_auth(&body, &st);
    conn_http_metrics_history(&body, w->srv);
    metrics_write_server(&body, w->srv);
    if (body.err)
        conn_http_error(c, req, 503, "out of memory", close, NULL);
    else
        conn_http_respond(c, req, 200, "text/plain; version=0.0.4; charset=utf-8", body.p,
                          body.len, close, NULL);
    text_buf_free(&body);
}

/* If-None-Match names the tag (strong or weak, alone or in a list) or is
 * "*": the client's copy is current. */
static bool conn_http_etag_matches(const struct http_request *req, const char *etag)
{
    size_t n = strlen(etag);

    for (int i = http_header_find(req, "If-None-Match", 0); i >= 0;
         i = http_header_find(req, "If-None-Match", i + 1)) {
        const char *v = req->headers[i].value;
        size_t len = req->headers[i].value_len;

        if ((len == 1 && v[0] == '*') || memmem(v, len, etag, n))
            return true;
    }
    return false;
}

/* A file embedded in the server: revalidated with its ETag (a build that
 * changes the file changes the tag, so no stale copy outlives an upgrade),
 * readable by pages of any origin (an application's page on its own site
 * imports /ringws.js from here). */
static void conn_http_embedded(struct ringws_conn *c, const struct http_request *req,
                               const char *ctype, const char *body, size_t len,
                               const char *etag, bool close)
{
    char extra[160];

    snprintf(extra, sizeof(extra),
             "ETag: %s\r\nCache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n", etag);
    conn_http_answer(c, req, conn_http_etag_matches(req, etag) ? 304 : 200, ctype, body, len,
                     true, close, extra);
}

static void conn_http_builtin(struct ringws_conn *c, const struct http_request *req)
{
    static const char health_ok[] = "ok\n";
    const struct ringws_config *cfg = &conn_worker(c)->srv->cfg;
    bool close = !req->keep_alive;
    bool root = str_is(req->path, req->path_len, "/");
    bool health = str_is(req->path, req->path_len, "/healthz");
    bool metrics = str_is(req->path, req->path_len, "/metrics");
    bool script = str_is(req->path, req->path_len, "/ringws.js");

    if (conn_http_is_ws_path(cfg, req)) {
        if (conn_http_is_get(req))
            conn_http_error(c, req, 426, "this endpoint speaks WebSocket only", close,
                            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        else
            conn_http_error(c, req, 405, "use GET with Upgrade: websocket", close,
                            "Allow: GET\r\n");
    } else if (cfg->builtin_routes && (root || health || metrics || script)) {
        if (!conn_http_is_get(req))
            conn_http_error(c, req, 405, "only GET and HEAD are allowed here", close,
                            "Allow: GET, HEAD\r\n");
        else if (metrics)
            conn_http_metrics(c, req, close);
        else if (root)
            conn_http_embedded(c, req, "text/html; charset=utf-8", http_console_page,
                               http_console_page_len, http_console_page_etag, close);
        else if (script)
            conn_http_embedded(c, req, "text/javascript; charset=utf-8", http_client_script,
                               http_client_script_len, http_client_script_etag, close);
        else
            conn_http_respond(c, req, 200, "text/plain; charset=utf-8", health_ok,
                              sizeof(health_ok) - 1, close, NULL);
    } else {
        conn_http_error(c, req, 404, "no such path", close, NULL);
    }
}

static void conn_http_user(struct ringws_conn *c, const struct http_request *req,
                           const struct ringws_request *view)
{
    struct ringws_server *srv = conn_worker(c)->srv;
    struct ringws_response res = {.status = 200};
    char extra[HEAD_MAX / 2];

    if (srv->cfg.cb.on_http(srv, view, &res, srv->cfg.user) != RINGWS_HTTP_HANDLED) {
        conn_http_builtin(c, req);
        return;
    }
    if (res.status < 200 || res.status > 599)
        res.status = 500;
    if (!conn_http_location(c, extra, sizeof(extra), res.location) ||
        (res.content_type && !conn_http_value_ok(c, "Content-Type", res.content_type))) {
        conn_http_error(c, req, 500, "invalid response header from the application",
                        !req->keep_alive, NULL);
        return;
    }
    conn_http_respond(c, req, res.status,
                      res.content_type ? res.content_type : "text/plain; charset=utf-8",
                      res.body, res.body_len, !req->keep_alive, extra[0] ? extra : NULL);
}

#define PUBLISH_PREFIX "/publish/"

static bool conn_http_is_publish(const struct ringws_config *cfg,
                                 const struct http_request *req)
{
    size_t n = sizeof(PUBLISH_PREFIX) - 1;

    return cfg->pubsub_path && req->path_len >= n && !memcmp(req->path, PUBLISH_PREFIX, n);
}

/* "Authorization: Bearer TOKEN", compared through SHA-256 digests so that
 * the time taken tells nothing about the token, not even its length. */
static bool conn_http_token_ok(const char *token, const struct http_request *req)
{
    static const char scheme[] = "Bearer ";
    struct ringws_str auth = conn_http_field(req, "Authorization");
    unsigned char want[SHA256_DIGEST_LENGTH], got[SHA256_DIGEST_LENGTH];
    size_t sl = sizeof(scheme) - 1;

    if (!conn_http_starts_nocase(auth.ptr, auth.len, scheme))
        return false;
    SHA256((const unsigned char *)token, strlen(token), want);
    SHA256((const unsigned char *)auth.ptr + sl, auth.len - sl, got);
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

/* Without a token, publishing is for programs on this host: a loopback
 * peer, and no Origin, which browsers add to every POST a web page makes
 * (a page the user visits must not publish through the user's browser).
 * Returns why the request is refused, or NULL. */
static const char *conn_http_untrusted(const struct ringws_conn *c,
                                       const struct http_request *req)
{
    if (http_header_find(req, "Origin", 0) >= 0)
        return "a request with an Origin needs a publish token";
    if (!(c->flags & CF_PEER_LOCAL))
        return "without a publish token only loopback peers may publish";
    return NULL;
}

static void conn_http_publish_answer(struct ringws_conn *c, uint64_t recipients, bool close)
{
    char body[48];
    int n = snprintf(body, sizeof(body), "{\"recipients\":%" PRIu64 "}\n", recipients);

    conn_http_respond(c, NULL, 200, "application/json", body, (size_t)n, close, NULL);
}

static void conn_http_resume(struct ringws_conn *c);

/* The count of a publish that waited on other workers or on its engine
 * (CF_PUB_WAIT kept the connection, and its input, until now): answer
 * it. */
static void conn_http_publish_done(void *arg, int err, uint64_t recipients,
                                   const struct pub_pos *pos)
{
    struct ringws_conn *c = arg;

    c->flags &= ~CF_PUB_WAIT;
    if (!(c->flags & CF_TEARDOWN)) {
        if (c->state == CONN_HTTP)
            conn_set_deadline(c, conn_worker(c)->srv->cfg.handshake_timeout_ms);
        if (err < 0)
            conn_http_error(c, NULL, 503, "publish refused by the engine",
                            c->flags & CF_PUB_CLOSE, "Retry-After: 1\r\n");
        else
            conn_http_publish_answer(c, recipients, c->flags & CF_PUB_CLOSE);
        c->flags &= ~CF_PUB_CLOSE;
        conn_http_resume(c);
    }
    conn_flush_later(c); /* settles, shuts down or sends, as the state asks */
}

/* POST /publish/TOPIC: the body is the message (docs/PUBSUB.md). */
/* With token keys: a bearer token whose publish claim (read: its topics
 * claim, for GET /history) covers the topic. */
static bool conn_http_publish_claimed(struct ringws_conn *c, const struct http_request *req,
                                      const char *topic, size_t topic_len, bool read)
{
    struct worker *w = conn_worker(c);
    struct ringws_token_claims *claims;
    enum ringws_auth_failure r = conn_auth_from_request(c, req, false, &claims);
    bool covered;

    if (r == RINGWS_AUTH_MISSING)
        conn_auth_refused(w, r, "publish", NULL);
    if (r != RINGWS_AUTH_OK) {
        conn_http_token_refused(c, req, r);
        return false;
    }
    covered = read ? token_covers(claims->topics, claims->n_topics, topic, topic_len)
                   : token_covers(claims->publish, claims->n_publish, topic, topic_len);
    if (!covered) {
        conn_auth_refused(w,
                          read ? RINGWS_AUTH_TOPIC_DENIED : RINGWS_AUTH_PUBLISH_DENIED,
                          read ? "history" : "publish", claims->sub);
        conn_http_error(c, req, 403, read ? "topic outside the token's topics claim"
                                          : "topic outside the token's publish claim",
                        !req->keep_alive,
                        "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n");
    }
    free(claims);
    return covered;
}

/* Who may publish (read: read the history): the holder of publish_token;
 * with token keys, a token that covers the topic, from every peer; without
 * either, programs on this host.  A refusal is answered here. */
static bool conn_http_publisher_ok(struct ringws_conn *c, const struct http_request *req,
                                   const char *topic, size_t topic_len, bool read)
{
    const struct ringws_config *cfg = &conn_worker(c)->srv->cfg;
    const char *untrusted;

    if (cfg->publish_token && conn_http_token_ok(cfg->publish_token, req))
        return true;
    if (cfg->n_token_keys)
        return conn_http_publish_claimed(c, req, topic, topic_len, read);
    if (cfg->publish_token) {
        conn_http_error(c, req, 401, "a valid publish token is required", !req->keep_alive,
                        "WWW-Authenticate: Bearer\r\n");
        return false;
    }
    if ((untrusted = conn_http_untrusted(c, req))) {
        conn_http_error(c, req, 403, untrusted, !req->keep_alive, NULL);
        return false;
    }
    return true;
}

static void conn_http_publish(struct ringws_conn *c, const struct http_request *req,
                              const struct ringws_request *view)
{
    static const char octets[] = "application/octet-stream";
    const char *topic = req->path + sizeof(PUBLISH_PREFIX) - 1;
    size_t topic_len = req->path_len - (sizeof(PUBLISH_PREFIX) - 1);
    struct ringws_str ctype = conn_http_field(req, "Content-Type");
    bool binary = conn_http_starts_nocase(ctype.ptr, ctype.len, octets);
    bool close = !req->keep_alive;
    uint64_t recipients;
    int r;

    if (!str_is(req->method, req->method_len, "POST")) {
        conn_http_error(c, req, 405, "publish with POST", close, "Allow: POST\r\n");
        return;
    }
    if (!conn_http_publisher_ok(c, req, topic, topic_len, false))
        return;
    if (!topic_name_valid(topic, topic_len)) {
        conn_http_error(c, req, 400, "invalid topic", close, NULL);
        return;
    }
    r = pubsub_publish_from(conn_worker(c), topic, topic_len, view->body.ptr, view->body.len,
                            binary, conn_http_publish_done, c, &recipients, NULL);
    if (r == 1) {
        /* Other workers count their subscribers; the answer (and any
         * pipelined request after this one) waits for them, however long a
         * fan-out to millions takes: the keep-alive deadline restarts with
         * the answer. */
        c->flags |= CF_PUB_WAIT;
        conn_set_deadline(c, 0);
        if (close)
            c->flags |= CF_PUB_CLOSE;
    } else if (r == 0) {
        conn_http_publish_answer(c, recipients, close);
    } else if (r == -ESHUTDOWN) {
        conn_http_error(c, req, 503, "server shutting down", true, NULL);
    } else if (r == -EAGAIN) {
        conn_http_error(c, req, 503, "publish queue full", close, "Retry-After: 1\r\n");
    } else if (r == -ENOMEM) {
        conn_http_error(c, req, 503, "out of memory", close, NULL);
    } else {
        conn_http_error(c, req, r == -EMSGSIZE ? 413 : 400,
                        r == -EMSGSIZE ? "message too large" : "text message is not UTF-8",
                        close, NULL);
    }
}

#define HISTORY_PREFIX "/history/"

static bool conn_http_is_history(const struct ringws_config *cfg,
                                 const struct http_request *req)
{
    size_t n = sizeof(HISTORY_PREFIX) - 1;

    return cfg->pubsub_path && req->path_len >= n && !memcmp(req->path, HISTORY_PREFIX, n);
}

static bool conn_http_decimal(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!n || n > 16)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return v <= max;
}

/* ?since=[EPOCH:]OFFSET&limit=N (limit 1..1000, default 100). */
static bool conn_http_history_query(const struct http_request *req, struct history_query *q)
{
    const char *v;
    size_t n;
    uint64_t x;

    *q = (struct history_query){.limit = 100};
    if (!req->query)
        return true;
    if (query_param_find(req->query, req->query_len, "limit", &v, &n)) {
        if (!conn_http_decimal(v, n, 1000, &x) || !x)
            return false;
        q->limit = (uint32_t)x;
    }
    if (!query_param_find(req->query, req->query_len, "since", &v, &n))
        return true;
    if (n > SEQ_EPOCH_LEN && v[SEQ_EPOCH_LEN] == ':') {
        for (size_t i = 0; i < SEQ_EPOCH_LEN; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
                return false;
        q->has_epoch = true;
        memcpy(q->epoch, v, SEQ_EPOCH_LEN);
        v += SEQ_EPOCH_LEN + 1;
        n -= SEQ_EPOCH_LEN + 1;
    }
    return conn_http_decimal(v, n, TOPIC_POS_MAX_OFFSET, &q->since);
}

/* GET /history/TOPIC: read by whoever may publish (docs/PUBSUB.md). */
static void conn_http_history(struct ringws_conn *c, const struct http_request *req)
{
    const char *topic = req->path + sizeof(HISTORY_PREFIX) - 1;
    size_t topic_len = req->path_len - (sizeof(HISTORY_PREFIX) - 1), len;
    bool close = !req->keep_alive;
    struct history_query q;
    struct ringws_server *srv;
    char *body;
    int r;

    if (!conn_http_is_get(req)) {
        conn_http_error(c, req, 405, "read the history with GET", close, "Allow: GET, HEAD\r\n");
        return;
    }
    if (!conn_http_publisher_ok(c, req, topic, topic_len, true))
        return;
    if (!topic_name_valid(topic, topic_len)) {
        conn_http_error(c, req, 400, "invalid topic", close, NULL);
        return;
    }
    if (!conn_http_history_query(req, &q)) {
        conn_http_error(c, req, 400, "invalid since or limit", close, NULL);
        return;
    }
    srv = conn_worker(c)->srv;
    if ((r = srv->engine->history(srv, topic, topic_len, &q, &body, &len)) < 0) {
        conn_http_error(c, req, 503, r == -EAGAIN ? "engine unavailable" : "out of memory",
                        close, r == -EAGAIN ? "Retry-After: 1\r\n" : NULL);
        return;
    }
    conn_http_respond(c, req, 200, "application/json", body, len, close, NULL);
    free(body);
}

static void conn_http_request(struct ringws_conn *c, const struct http_request *req,
                              const uint8_t *body, size_t body_len)
{
    struct worker *w = conn_worker(c);
    const struct ringws_config *cfg = &w->srv->cfg;
    struct ringws_request view;

    conn_http_view(w, req, body, body_len, &view);
    /* The next request of a keep-alive connection gets a fresh allowance. */
    conn_set_deadline(c, cfg->handshake_timeout_ms);
    if (ws_handshake_requested(req))
        conn_http_upgrade(c, req, &view);
    else if (conn_http_is_publish(cfg, req))
        conn_http_publish(c, req, &view);
    else if (conn_http_is_history(cfg, req))
        conn_http_history(c, req);
    else if (cfg->cb.on_http)
        conn_http_user(c, req, &view);
    else
        conn_http_builtin(c, req);
}

/* A chunked body cannot be skipped without decoding it, so the connection
 * closes after the answer.  Built-in routes answer as usual (none takes a
 * body); a publish or a library user's handler would need the body, which
 * is refused with 411 Length Required. */
static void conn_http_chunked(struct ringws_conn *c, struct http_request *req)
{
    const struct ringws_config *cfg = &conn_worker(c)->srv->cfg;

    req->keep_alive = false;
    if (cfg->cb.on_http || ws_handshake_requested(req) || conn_http_is_publish(cfg, req))
        conn_http_error(c, req, 411, "send the body with Content-Length", true, NULL);
    else
        conn_http_builtin(c, req);
}

/* With an engine that makes topics ready first (pubsub_prepare), an
 * upgrade that subscribes and a history read wait for it: the request
 * stays unparsed (CF_PUB_WAIT holds it and what follows) and runs again
 * from conn_http_engine_ready.  A refusal lets it run: the engine then
 * answers it as unavailable. */
static bool conn_http_engine_wait(struct ringws_conn *c, const struct http_request *req)
{
    struct worker *w = conn_worker(c);
    const struct ringws_config *cfg = &w->srv->cfg;
    const char *list;
    size_t len;

    if (!w->srv->engine->prepare)
        return false;
    if (conn_http_is_history(cfg, req)) {
        list = req->path + sizeof(HISTORY_PREFIX) - 1;
        len = req->path_len - (sizeof(HISTORY_PREFIX) - 1);
        if (!topic_name_valid(list, len))
            return false;
    } else if (!conn_http_is_pubsub_path(cfg, req) || !req->query ||
               !topic_query_find(req->query, req->query_len, &list, &len) ||
               !topic_list_valid(list, len)) {
        return false;
    }
    if (pubsub_prepare(c, list, len) != 1)
        return false;
    c->flags |= CF_PUB_WAIT;
    conn_set_deadline(c, 0);
    return true;
}

void conn_http_engine_ready(struct ringws_conn *c)
{
    c->flags &= ~CF_PUB_WAIT;
    if (!(c->flags & CF_TEARDOWN)) {
        conn_set_deadline(c, conn_worker(c)->srv->cfg.handshake_timeout_ms);
        conn_http_resume(c);
    }
    conn_flush_later(c);
}

/* Handles as many requests as buf holds; returns bytes consumed (the rest is
 * an incomplete request) and sets *seen_out to the bytes of the rest the
 * parser found incomplete (0: parse them from their start).  May switch the
 * connection to CONN_WS, after which the caller hands the remaining bytes
 * to conn_ws_input. */
static size_t conn_http_requests(struct ringws_conn *c, uint8_t *buf, size_t len,
                                 size_t seen, uint32_t *seen_out)
{
    struct worker *w = conn_worker(c);
    const struct ringws_server *srv = w->srv;
    size_t off = 0;

    *seen_out = 0;

    while (off < len && c->state == CONN_HTTP && !(c->flags & (CF_TEARDOWN | CF_PUB_WAIT))) {
        struct http_request req;
        size_t total;
        if (conn_backlogged(c)) {
            /* Answers pile up unread: keep the rest for when they drain
             * (reading is paused meanwhile, see conn.c). */
            return off;
        }
        int r = http_parse_request((const char *)buf + off, len - off, off ? 0 : seen,
                                   &srv->limits, &req, w->hdrs);
        if (r == HTTP_PARSE_INCOMPLETE) {
            *seen_out = (uint32_t)(len - off);
            return off;
        }
        if (r == HTTP_PARSE_ERROR) {
            if (conn_http_is_handshake(&srv->cfg, &req))
                metrics_count_handshake(w, http_error_status(req.error));
            conn_http_error(c, NULL, http_error_status(req.error), req.error_reason, true, NULL);
            return len;
        }
        if (req.chunked) {
            conn_http_chunked(c, &req);
            return len;
        }
        if (req.has_body_length && req.content_length > RINGWS_MAX_HTTP_BODY) {
            conn_http_error(c, &req, 413, "request body too large", true, NULL);
            return len;
        }
        total = (size_t)r + (req.has_body_length ? (size_t)req.content_length : 0);
        if (len - off < total)
            return off; /* the head is complete; the body is not */
        if (conn_http_engine_wait(c, &req))
            return off;
        conn_http_request(c, &req, buf + off + r, total - (size_t)r);
        off += total;
    }
    /* The rest is parsed after the upgrade as frames, or after a publish's
     * answer as further requests. */
    return conn_ws_reading(c) || (c->flags & CF_PUB_WAIT) ? off : len;
}

/* Parses the requests gathered in req.  They are taken out of the held
 * input first: the views handed to on_http and on_open point into them and
 * must outlive anything those callbacks do to the connection.  What is left
 * is held again; after an upgrade it goes to the frame decoder (frames may
 * follow the request), which gathers messages in msg (req's place, empty
 * now), and so do the n bytes of buf that follow it.  Returns the bytes
 * parsed. */
static size_t conn_http_input_held(struct ringws_conn *c, const uint8_t *buf, size_t n)
{
    struct worker *w = conn_worker(c);
    uint32_t seen = conn_held(c)->req_seen;
    struct conn_pend held = conn_held_take(c);
    size_t used = conn_http_requests(c, held.buf, held.len, seen, &seen);

    if (c->state == CONN_HTTP && used < held.len && !(c->flags & CF_TEARDOWN)) {
        memmove(held.buf, held.buf + used, held.len - used);
        held.len -= (uint32_t)used;
        if (conn_held_put(c, held) < 0) {
            conn_pend_free(w, &held);
            conn_abort(c);
            return used;
        }
        conn_held(c)->req_seen = seen;
        return used;
    }
    if (c->state != CONN_HTTP && conn_ws_reading(c) && !(c->flags & CF_TEARDOWN)) {
        conn_ws_input(c, held.buf + used, held.len - used);
        if (n && conn_ws_reading(c) && !(c->flags & CF_TEARDOWN))
            conn_ws_input(c, (uint8_t *)buf, n);
    }
    /* Between requests a keep-alive connection holds no buffer. */
    conn_pend_free(w, &held);
    return used;
}

/* A request that spans receives is gathered in req, which holds at most
 * the largest request (head and body).  What follows it in the same
 * receive moves into req only as parsing makes room, so that a complete
 * request is answered whatever comes after it. */
static void conn_http_input(struct ringws_conn *c, uint8_t *buf, size_t n)
{
    const struct ringws_server *srv = conn_worker(c)->srv;
    size_t limit = (size_t)srv->limits.max_head_bytes + RINGWS_MAX_HTTP_BODY;
    size_t used, had;
    uint32_t seen;

    while ((had = conn_held_len(c))) {
        size_t take = n < limit - had ? n : limit - had;
        if (conn_held_store(c, buf, take, limit) < 0) {
            conn_abort(c);
            return;
        }
        buf += take;
        n -= take;
        used = conn_http_input_held(c, buf, n);
        if (c->state != CONN_HTTP || (c->flags & CF_TEARDOWN) || !n)
            return;
        if (!used && !take) {
            /* Parsing waits (answers unread) and req is full: more
             * pipelined bytes than one request may hold. */
            conn_abort(c);
            return;
        }
    }
    used = conn_http_requests(c, buf, n, 0, &seen);
    buf += used;
    n -= used;
    if (!n || (c->flags & CF_TEARDOWN))
        return;
    if (conn_ws_reading(c))
        conn_ws_input(c, buf, n);
    else if (c->state != CONN_HTTP)
        return;
    else if (conn_held_store(c, buf, n, limit) < 0)
        conn_abort(c);
    else
        conn_held(c)->req_seen = seen;
}

/* True while conn_http_requests leaves complete requests unparsed: answers
 * pile up unread, or a publish awaits its count. */
static bool conn_http_held(const struct ringws_conn *c)
{
    return (c->flags & CF_PUB_WAIT) || conn_backlogged(c);
}

/* Parses pipelined requests left unparsed while answers piled up or while
 * a publish awaited its count. */
static void conn_http_resume(struct ringws_conn *c)
{
    if (c->state != CONN_HTTP || (c->flags & (CF_TEARDOWN | CF_PUB_WAIT)))
        return;
    if (conn_held_len(c)) {
        conn_http_input(c, NULL, 0);
        conn_pause_if_backlogged(c);
    }
    if ((c->flags & (CF_RD_EOF | CF_TEARDOWN)) == CF_RD_EOF)
        conn_on_eof(c); /* by the state now: the requests may have upgraded it */
}

/* A client may half-close after its last request: answer it, and every
 * request it pipelined before (they are parsed as the answers drain, and
 * conn_http_resume acts on the EOF again). */
static void conn_http_eof(struct ringws_conn *c)
{
    if (conn_held_len(c) && conn_http_held(c))
        return;
    if (c->out_head || (c->flags & (CF_SEND_BUSY | CF_PUB_WAIT)))
        conn_drain(c);
    else
        conn_abort(c);
}

/* An idle keep-alive connection has nothing in flight to lose; one with a
 * request under way is answered first. */
static void conn_http_stop(struct ringws_conn *c)
{
    if (!c->out_head && !conn_held_len(c) && !(c->flags & (CF_SEND_BUSY | CF_PUB_WAIT)))
        conn_abort(c);
    else
        conn_drain(c);
}

/* The deadline of an HTTP connection is the handshake or keep-alive
 * timeout: it is aborted.  One that holds part of a request counts as a
 * handshake that timed out (an idle keep-alive connection does not). */
static void conn_http_expired(struct ringws_conn *c)
{
    if (conn_held_len(c))
        metrics_count_handshake(conn_worker(c), METRICS_HANDSHAKE_TIMEOUT);
    conn_abort(c);
}

/* HTTP leaves no work for the flush step. */
const struct proto_ops http_proto_ops = {
    .input = conn_http_input,
    .eof = conn_http_eof,
    .timer = conn_http_expired,
    .stop = conn_http_stop,
    .flush = conn_proto_none,
    .resume = conn_http_resume,
};
