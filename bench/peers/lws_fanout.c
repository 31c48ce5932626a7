/* lws_fanout.c - the comparison peer for pub/sub: the subset of ringws's
 * publish / subscribe endpoint (docs/PUBSUB.md) that `ringws-bench fanout`
 * uses, built on Debian's libwebsockets (4.1), single-threaded, on its
 * default poll loop like lws_echo.c.
 *
 * Why it exists: ringws's fan-out figures (time for a publish to reach the
 * last of N subscribers, CPU per delivery) mean something only next to an
 * established C server doing the same job on the same machine.
 *
 * What it speaks:
 *  - WebSocket subscribers on /ws?topics=A[,B...]: each connection is
 *    subscribed, at the upgrade, to every topic listed (1-128 bytes of
 *    A-Z a-z 0-9 - . _ ~ : / @, at most 64, duplicates counted once).  A
 *    missing or invalid list refuses the upgrade (lws then drops the
 *    connection: it has no hook to answer 400 at that point).  Frames the
 *    subscribers send are ignored (no sub / unsub / pub commands).
 *  - HTTP POST /publish/TOPIC with a Content-Length body (up to 1 MiB),
 *    read through LWS_CALLBACK_HTTP_BODY straight into one message buffer
 *    with LWS_PRE bytes of headroom.  Content-Type application/octet-stream
 *    publishes a binary message, anything else a text message, which must
 *    be UTF-8.  At LWS_CALLBACK_HTTP_BODY_COMPLETION the buffer is queued,
 *    shared and reference-counted, to every subscriber of the topic (each
 *    is asked for a writable callback), and the answer is 200
 *    {"recipients":N} (application/json) on the kept-alive connection.
 *    Errors: 400 (invalid topic, text not UTF-8), 404 (other paths), 405
 *    (other methods on /publish/), 411 (no length), 413 (over 1 MiB).
 *  - Each subscriber writes its queue in LWS_CALLBACK_SERVER_WRITEABLE, one
 *    lws_write per message, as many as the socket takes (checking
 *    lws_partial_buffered / lws_send_pipe_choked as lws_echo.c does).  lws
 *    writes the frame head into the headroom in place, the same bytes for
 *    every subscriber, so one buffer serves all of them.  A subscriber with
 *    more than 1 MiB queued is closed with 1013, like ringws's default
 *    close-1013 policy.
 *
 * Built by bench/fanout.sh with gcc, outside meson, so that the main build
 * never needs libwebsockets:
 *   gcc -O2 lws_fanout.c $(pkg-config --cflags --libs libwebsockets)
 * Usage: lws_fanout [--port N] [--tls-cert FILE --tls-key FILE] (port 0 picks a
 * free port; with the certificate it speaks wss:// and https:// only); it
 * prints "lws_fanout listening on 127.0.0.1:PORT" once it accepts connections. */
#include <libwebsockets.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "peer_main.h"

#define FAN_MAX_BODY (1u << 20)
#define FAN_MAX_TOPIC 128
#define FAN_MAX_TOPICS 64
#define FAN_QUEUE_BYTES (1u << 20)
#define FAN_BUCKETS 1024
#define FAN_CLOSE_TRY_AGAIN 1013 /* not in lws 4.1's enum lws_close_status */

/* One published message, shared by every subscriber it was queued to. */
struct fan_msg {
    unsigned refs;
    int binary;
    size_t len;
    unsigned char buf[]; /* LWS_PRE bytes of room, then the payload */
};

struct fan_topic {
    struct fan_topic *next;  /* hash chain */
    lws_dll2_owner_t subs;   /* struct fan_sub.node */
    char name[FAN_MAX_TOPIC + 1];
};

struct fan_session;

/* One subscription: a connection on a topic. */
struct fan_sub {
    lws_dll2_t node;
    struct fan_topic *topic;
    struct fan_session *s;
};

/* Per connection; one protocol serves both the HTTP publishers and the
 * WebSocket subscribers (lws binds upgrades without a subprotocol to the
 * first protocol), so the struct has a part for each. */
struct fan_session {
    /* subscriber */
    struct lws *wsi;
    struct fan_sub *subs;    /* [n_subs] */
    unsigned n_subs;
    struct fan_msg **q;      /* ring of pending messages */
    unsigned q_head, q_len, q_cap;
    size_t q_bytes;
    int overflow;            /* close with 1013 at the next writable */
    /* publisher: the request being read */
    struct fan_msg *body;
    size_t body_got;
    unsigned error;          /* HTTP status to answer once the body is read */
    char topic[FAN_MAX_TOPIC + 1];
};

static struct fan_topic *fan_table[FAN_BUCKETS];

/* ---- topics -------------------------------------------------------------- */

static int fan_topic_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == '/' || c == '@';
}

static int fan_topic_valid(const char *p, size_t len)
{
    if (!len || len > FAN_MAX_TOPIC)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!fan_topic_char((unsigned char)p[i]))
            return 0;
    return 1;
}

static unsigned fan_hash(const char *p, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h % FAN_BUCKETS;
}

static struct fan_topic *fan_topic_find(const char *name, size_t len, int create)
{
    unsigned h = fan_hash(name, len);
    struct fan_topic *t;

    for (t = fan_table[h]; t; t = t->next)
        if (strlen(t->name) == len && !memcmp(t->name, name, len))
            return t;
    if (!create || !(t = calloc(1, sizeof *t)))
        return NULL;
    memcpy(t->name, name, len);
    t->next = fan_table[h];
    fan_table[h] = t;
    return t;
}

static void fan_topic_drop_if_empty(struct fan_topic *t)
{
    struct fan_topic **pp = &fan_table[fan_hash(t->name, strlen(t->name))];

    if (t->subs.count)
        return;
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    free(t);
}

/* ---- messages and queues -------------------------------------------------- */

static void fan_msg_unref(struct fan_msg *m)
{
    if (m && !--m->refs)
        free(m);
}

static void fan_queue_clear(struct fan_session *s)
{
    while (s->q_len) {
        fan_msg_unref(s->q[s->q_head]);
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
    }
    s->q_bytes = 0;
}

static int fan_queue_push(struct fan_session *s, struct fan_msg *m)
{
    if (s->q_len == s->q_cap) {
        unsigned cap = s->q_cap ? s->q_cap * 2 : 4;
        struct fan_msg **q = malloc(cap * sizeof *q);

        if (!q)
            return -1;
        for (unsigned i = 0; i < s->q_len; i++)
            q[i] = s->q[(s->q_head + i) % s->q_cap];
        free(s->q);
        s->q = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->q[(s->q_head + s->q_len) % s->q_cap] = m;
    s->q_len++;
    s->q_bytes += m->len;
    m->refs++;
    return 0;
}

/* Queues m to every subscriber of the topic; returns how many. */
static unsigned fan_publish(const char *topic, struct fan_msg *m)
{
    struct fan_topic *t = fan_topic_find(topic, strlen(topic), 0);
    unsigned n = 0;

    if (!t)
        return 0;
    for (struct lws_dll2 *d = lws_dll2_get_head(&t->subs); d; d = d->next) {
        struct fan_session *s = lws_container_of(d, struct fan_sub, node)->s;

        if (s->overflow)
            continue; /* closing: its writable callback is already asked for */
        if (s->q_bytes + m->len > FAN_QUEUE_BYTES || fan_queue_push(s, m) < 0) {
            /* Too slow: what it holds goes, and so does it. */
            fan_queue_clear(s);
            s->overflow = 1;
        } else {
            n++;
        }
        lws_callback_on_writable(s->wsi);
    }
    return n;
}

/* ---- subscribers ---------------------------------------------------------- */

/* The topics of ?topics=A,B, in a static buffer; NULL when missing. */
static const char *fan_topics_arg(struct lws *wsi)
{
    static char arg[FAN_MAX_TOPICS * (FAN_MAX_TOPIC + 1) + 16];
    const char *p = lws_get_urlarg_by_name(wsi, "topics=", arg, (int)sizeof arg);

    return p && *p ? p : NULL;
}

/* Checks a topic list (s NULL) or subscribes s to it; -1 when invalid or
 * over FAN_MAX_TOPICS distinct topics. */
static int fan_subscribe(const char *p, struct fan_session *s)
{
    const char *c, *seen[FAN_MAX_TOPICS];
    size_t seen_len[FAN_MAX_TOPICS];
    unsigned most = 1, n = 0;

    for (c = p; *c; c++)
        most += *c == ',';
    if (most > FAN_MAX_TOPICS)
        most = FAN_MAX_TOPICS;
    /* Never reallocated: the topics' lists point into it. */
    if (s && !(s->subs = calloc(most, sizeof *s->subs)))
        return -1;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        unsigned i;

        if (!fan_topic_valid(p, len))
            return -1;
        for (i = 0; i < n; i++)
            if (seen_len[i] == len && !memcmp(seen[i], p, len))
                break;
        if (i == n) {
            struct fan_topic *t;

            if (n == most)
                return -1;
            seen[n] = p;
            seen_len[n++] = len;
            if (s) {
                if (!(t = fan_topic_find(p, len, 1)))
                    return -1;
                s->subs[s->n_subs].topic = t;
                s->subs[s->n_subs].s = s;
                lws_dll2_add_tail(&s->subs[s->n_subs].node, &t->subs);
                s->n_subs++;
            }
        }
        p += len + (e != NULL);
    }
    return n ? 0 : -1;
}

static void fan_unsubscribe(struct fan_session *s)
{
    for (unsigned i = 0; i < s->n_subs; i++) {
        lws_dll2_remove(&s->subs[i].node);
        fan_topic_drop_if_empty(s->subs[i].topic);
    }
    s->n_subs = 0;
    free(s->subs);
    s->subs = NULL;
    fan_queue_clear(s);
    free(s->q);
    s->q = NULL;
    s->q_cap = s->q_head = 0;
}

static int fan_write(struct lws *wsi, struct fan_session *s)
{
    if (s->overflow) {
        lws_close_reason(wsi, (enum lws_close_status)FAN_CLOSE_TRY_AGAIN,
                         (unsigned char *)"too slow", 8);
        return -1;
    }
    while (s->q_len) {
        struct fan_msg *m = s->q[s->q_head];
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                          m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);

        if (n < 0 || (size_t)n < m->len)
            return -1;
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        s->q_bytes -= m->len;
        fan_msg_unref(m);
        if (s->q_len && (lws_partial_buffered(wsi) || lws_send_pipe_choked(wsi))) {
            lws_callback_on_writable(wsi);
            break;
        }
    }
    return 0;
}

/* ---- publishers ----------------------------------------------------------- */

static int fan_utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = p[i], need;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* Answers and readies the connection for its next request (keep-alive);
 * nonzero: close it. */
static int fan_answer(struct lws *wsi, unsigned status, const char *body, size_t len)
{
    unsigned char head[LWS_PRE + 256], *start = head + LWS_PRE, *p = start;
    unsigned char *end = head + sizeof head - 1;
    unsigned char out[LWS_PRE + 64];

    if (status != HTTP_STATUS_OK) {
        if (lws_return_http_status(wsi, status, NULL))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    if (len > sizeof out - LWS_PRE ||
        lws_add_http_common_headers(wsi, status, "application/json", len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    memcpy(out + LWS_PRE, body, len);
    if (lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The request has been read whole: publish it, answer. */
static int fan_publish_done(struct lws *wsi, struct fan_session *s)
{
    char json[48];
    unsigned n;
    int len;

    if (s->error) {
        unsigned status = s->error;

        fan_msg_unref(s->body);
        s->body = NULL;
        s->error = 0;
        return fan_answer(wsi, status, NULL, 0);
    }
    if (!s->body->binary && !fan_utf8_valid(s->body->buf + LWS_PRE, s->body->len)) {
        fan_msg_unref(s->body);
        s->body = NULL;
        return fan_answer(wsi, HTTP_STATUS_BAD_REQUEST, NULL, 0);
    }
    n = fan_publish(s->topic, s->body);
    fan_msg_unref(s->body); /* the request's reference; the queues hold theirs */
    s->body = NULL;
    len = snprintf(json, sizeof json, "{\"recipients\":%u}\n", n);
    return fan_answer(wsi, HTTP_STATUS_OK, json, (size_t)len);
}

/* A new request (LWS_CALLBACK_HTTP): 0 to read its body, else the answer's
 * result. */
static int fan_request(struct lws *wsi, struct fan_session *s, const char *uri)
{
    static const char prefix[] = "/publish/";
    char num[32], ctype[64];
    unsigned long long clen;
    size_t tlen;
    char *e;

    s->body = NULL;
    s->body_got = 0;
    s->error = 0;
    if (strncmp(uri, prefix, sizeof prefix - 1))
        return fan_answer(wsi, HTTP_STATUS_NOT_FOUND, NULL, 0);
    if (!lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        return fan_answer(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, NULL, 0);
    if (lws_hdr_copy(wsi, num, sizeof num, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return fan_answer(wsi, HTTP_STATUS_LENGTH_REQUIRED, NULL, 0);
    clen = strtoull(num, &e, 10);
    if (*e || clen > FAN_MAX_BODY) {
        fan_answer(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, NULL, 0);
        return -1; /* the body is not read: the connection cannot go on */
    }
    uri += sizeof prefix - 1;
    tlen = strlen(uri);
    if (!fan_topic_valid(uri, tlen))
        s->error = HTTP_STATUS_BAD_REQUEST; /* answered once the body is read */
    else
        memcpy(s->topic, uri, tlen + 1);
    s->body = malloc(sizeof *s->body + LWS_PRE + clen);
    if (!s->body)
        return -1;
    s->body->refs = 1;
    s->body->len = clen;
    s->body->binary = lws_hdr_copy(wsi, ctype, sizeof ctype, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
                      !strncasecmp(ctype, "application/octet-stream", 24) &&
                      (!ctype[24] || ctype[24] == ';' || ctype[24] == ' ');
    if (!clen)
        return fan_publish_done(wsi, s); /* no body callbacks will come */
    return 0;
}

/* ---- the protocol --------------------------------------------------------- */

static int fan_callback(struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len)
{
    struct fan_session *s = user;
    const char *topics;
    char uri[64];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* Refusing here drops the connection before the 101; lws has no
         * way to answer 400 from this callback. */
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/ws"))
            return -1;
        topics = fan_topics_arg(wsi);
        return topics && fan_subscribe(topics, NULL) == 0 ? 0 : -1;
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof *s);
        s->wsi = wsi;
        topics = fan_topics_arg(wsi); /* the headers are kept until here */
        if (!topics || fan_subscribe(topics, s) < 0) {
            fan_unsubscribe(s);
            return -1;
        }
        return 0;
    case LWS_CALLBACK_RECEIVE:
        return 0; /* no commands: ignored */
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return fan_write(wsi, s);
    case LWS_CALLBACK_CLOSED:
        fan_unsubscribe(s);
        return 0;

    case LWS_CALLBACK_HTTP:
        return fan_request(wsi, s, in) ? -1 : 0;
    case LWS_CALLBACK_HTTP_BODY:
        if (s->body && len <= s->body->len - s->body_got) {
            memcpy(s->body->buf + LWS_PRE + s->body_got, in, len);
            s->body_got += len;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!s->body)
            return -1;
        return fan_publish_done(wsi, s) ? -1 : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (s) {
            fan_msg_unref(s->body);
            s->body = NULL;
        }
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

int main(int argc, char **argv)
{
    return peer_main(argc, argv, "lws_fanout", "pubsub", fan_callback, sizeof(struct fan_session));
}
