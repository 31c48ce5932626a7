/* test_pubsub_threads.c - publishing from many threads at once.
 *
 * Why it exists: ringws_publish is the one entry point of the library that
 * any thread may call while the workers run, and a publish that comes in on
 * a worker (POST /publish, a client's `pub`) crosses to the other workers
 * and, for HTTP, comes back with a count: that is where a data race or a
 * lost wake-up would hide.  Four application threads call ringws_publish
 * 10000 times each (text and binary), two threads POST /publish 1000 times
 * each on keep-alive connections, and one WebSocket client sends 2000 `pub`
 * commands, all to one topic and all with publisher id and sequence number
 * in the payload, while ten subscribers on two workers read: eight opened
 * with /ws?topics=load and two on another path, subscribed by
 * ringws_subscribe from on_open.  Every subscriber must get all 44000, each
 * publisher's in its order, byte-exact, none twice; two of the eight speak
 * ringws.v1 and must see one epoch and the offsets 1, 2, 3... without a hole
 * (one sequence whichever thread published); every POST must answer
 * {"recipients":10}; the counters must add up; the error returns of
 * ringws_publish and ringws_subscribe must be the documented ones.  Built
 * also under ThreadSanitizer (tools/run-tests.sh).
 *
 * Then a second server, one of whose workers is held inside a callback so
 * that it cannot take what is posted to it: publishes from another thread
 * are accepted until that worker's inbox budget is spent and refused with
 * -EAGAIN after it (and counted), none reaches any subscriber when refused,
 * every accepted one reaches every subscriber in order once the worker is
 * let go, and publishing works again; a message longer than max_publish is
 * refused with -EMSGSIZE.
 *
 * The clients are plain blocking sockets with a frame reader written here,
 * so that the server is judged by an independent implementation. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../unit/check.h"
#include "../unit/ws_client.h"
#include "ringws.h"

#define WORKERS 2
#define N_WS_SUBS 8   /* subscribed by the handshake query */
#define N_ENV_SUBS 2  /* of those, speaking ringws.v1 */
#define N_APP_SUBS 2  /* subscribed by ringws_subscribe in on_open */
#define N_SUBS (N_WS_SUBS + N_APP_SUBS)
#define N_API_PUB 4    /* threads calling ringws_publish: ids 0..3 */
#define PER_API_PUB 10000
#define N_HTTP_PUB 2   /* threads POSTing /publish: ids 4, 5 */
#define PER_HTTP_PUB 1000
#define WS_PUB_ID (N_API_PUB + N_HTTP_PUB) /* the `pub` client: id 6 */
#define PER_WS_PUB 2000
#define N_PUB (WS_PUB_ID + 1)
#define TOTAL_MSGS (N_API_PUB * PER_API_PUB + N_HTTP_PUB * PER_HTTP_PUB + PER_WS_PUB)
#define TOPIC "load"
#define MAX_TOPICS 3
#define MAX_MESSAGE (256 * 1024)
#define RECV_TIMEOUT_S 30

/* Fixed key of RFC 6455 section 1.3 and its accept value. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char *const app_paths[] = {"/app"};
static const struct ringws_topic_rule rules[] = {
    {.pattern = "load", .policy = RINGWS_FANOUT_CLOSE_TRY_AGAIN, .client_publish = true},
};

/* What the callbacks saw, read by the main thread. */
static atomic_int app_opened, app_checks_passed, app_checks_run;
static atomic_int relay_ret = 1;
static atomic_uint workers_seen; /* bit per worker that owns a subscriber */
static char app_first_failure[128];
static atomic_int app_failure_written;

struct shared {
    ringws_server *srv; /* set before the server runs */
};

/* ---- callbacks ----------------------------------------------------------- */

static void app_check(bool ok, const char *what)
{
    atomic_fetch_add(&app_checks_run, 1);
    if (ok) {
        atomic_fetch_add(&app_checks_passed, 1);
    } else if (!atomic_exchange(&app_failure_written, 1)) {
        snprintf(app_first_failure, sizeof(app_first_failure), "%s", what);
    }
}

#define APP_CHECK(expr) app_check((expr), #expr)

static void on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    char long_topic[RINGWS_MAX_TOPIC + 2];

    atomic_fetch_or(&workers_seen, 1u << (ringws_conn_worker(c) & 31));
    if (req->path.len != 4 || memcmp(req->path.ptr, "/app", 4))
        return; /* a subscriber connection of the pub/sub endpoint */
    memset(long_topic, 't', RINGWS_MAX_TOPIC + 1);
    long_topic[RINGWS_MAX_TOPIC + 1] = 0;
    APP_CHECK(ringws_subscribe(c, TOPIC) == 0);
    APP_CHECK(ringws_subscribe(c, TOPIC) == 0); /* twice is one subscription */
    APP_CHECK(ringws_subscribe(c, "bad topic") == -EINVAL);
    APP_CHECK(ringws_subscribe(c, "") == -EINVAL);
    APP_CHECK(ringws_subscribe(c, "a,b") == -EINVAL);
    APP_CHECK(ringws_subscribe(c, long_topic) == -EINVAL);
    APP_CHECK(ringws_subscribe(c, "x1") == 0);
    APP_CHECK(ringws_subscribe(c, "x2") == 0);
    APP_CHECK(ringws_subscribe(c, "x3") == -E2BIG); /* max_topics is 3 */
    APP_CHECK(ringws_subscribe(c, TOPIC) == 0);     /* held already: no new one */
    APP_CHECK(ringws_unsubscribe(c, "never") == -ENOENT);
    APP_CHECK(ringws_unsubscribe(c, "x2") == 0);
    APP_CHECK(ringws_unsubscribe(c, "x2") == -ENOENT);
    atomic_fetch_add(&app_opened, 1);
}

static void on_message(ringws_conn *c, enum ringws_opcode op, const void *data, size_t len,
                       void *user)
{
    struct shared *sh = user;

    /* Publishing from inside a callback is allowed too. */
    if (len == 5 && !memcmp(data, "relay", 5))
        atomic_store(&relay_ret, ringws_publish(sh->srv, "relay", "relayed", 7, 0));
}

/* ---- a small blocking client ------------------------------------------- */

struct client {
    int fd;
    size_t start, end;          /* unread bytes in buf */
    uint8_t buf[1 << 18];
    uint8_t msg[1 << 16];       /* a fragmented message being joined */
    size_t msg_len;
    int msg_op;                 /* 0: none open */
    char why[160];              /* the first thing that went wrong */
};

/* extra: more header lines (each ending in CRLF), or "". */
static struct client *client_open_with(uint16_t port, const char *target, const char *extra)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
    struct client *c = calloc(1, sizeof(*c));
    char req[512];
    char *end = NULL;
    int one = 1, n;

    if (!c)
        return NULL;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto fail;
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 target, extra);
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto fail;
    while (!end) {
        ssize_t got = recv(c->fd, c->buf + c->end, sizeof(c->buf) - 1 - c->end, 0);
        if (got <= 0)
            goto fail;
        c->end += (size_t)got;
        c->buf[c->end] = 0;
        end = strstr((char *)c->buf, "\r\n\r\n");
    }
    if (strncmp((char *)c->buf, "HTTP/1.1 101 ", 13) ||
        !strcasestr((char *)c->buf, "\r\nSec-WebSocket-Accept: " WS_ACCEPT "\r\n")) {
        fprintf(stderr, "handshake on %s: %.60s\n", target, (char *)c->buf);
        goto fail;
    }
    c->start = (size_t)(end + 4 - (char *)c->buf);
    return c;
fail:
    close(c->fd);
    free(c);
    return NULL;
}

static struct client *client_open(uint16_t port, const char *target)
{
    return client_open_with(port, target, "");
}

static void client_close(struct client *c)
{
    if (c) {
        close(c->fd);
        free(c);
    }
}

/* Sends one masked frame of at most 65535 payload bytes; false on failure. */
static bool client_send(struct client *c, unsigned opcode, const void *p, size_t n)
{
    uint8_t f[WS_CLIENT_MAX_HEADER + WS_CLIENT_MAX_PAYLOAD];
    size_t len;

    if (n > WS_CLIENT_MAX_PAYLOAD)
        return false;
    len = ws_client_frame(f, 0x80 | opcode, p, n);
    return send(c->fd, f, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* Makes sure `need` unread bytes are in buf; false on EOF, error or timeout. */
static bool client_fill(struct client *c, size_t need)
{
    if (need > sizeof(c->buf))
        return false;
    if (c->end - c->start >= need)
        return true;
    if (sizeof(c->buf) - c->start < need) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    while (c->end - c->start < need) {
        ssize_t n = recv(c->fd, c->buf + c->end, sizeof(c->buf) - c->end, 0);
        if (n <= 0)
            return false;
        c->end += (size_t)n;
    }
    return true;
}

static int client_error(struct client *c, const char *why)
{
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "%s", why);
    return -1;
}

/* The next message or control frame: returns its opcode (1 text, 2 binary,
 * 9 ping, 10 pong) with *data and *len valid until the next call, 8 for a
 * close frame (*len = its code, or 1005), -1 when the server broke the
 * protocol or the connection ended. */
static int client_next(struct client *c, const uint8_t **data, size_t *len)
{
    for (;;) {
        uint8_t b0, b1;
        uint64_t n;
        size_t hlen = 2;
        const uint8_t *p;
        int op;

        if (!client_fill(c, 2))
            return client_error(c, "connection ended or timed out waiting for a frame");
        b0 = c->buf[c->start];
        b1 = c->buf[c->start + 1];
        op = b0 & 0x0f;
        if (b1 & 0x80)
            return client_error(c, "the server sent a masked frame");
        if (b0 & 0x70)
            return client_error(c, "the server set RSV bits");
        n = b1 & 0x7f;
        if (n == 126) {
            if (!client_fill(c, 4))
                return client_error(c, "truncated 16-bit length");
            n = (uint64_t)c->buf[c->start + 2] << 8 | c->buf[c->start + 3];
            hlen = 4;
            if (n < 126)
                return client_error(c, "a 16-bit length for a short frame");
        } else if (n == 127) {
            if (!client_fill(c, 10))
                return client_error(c, "truncated 64-bit length");
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | c->buf[c->start + 2 + i];
            hlen = 10;
            if (n < 65536)
                return client_error(c, "a 64-bit length for a short frame");
        }
        if (n > sizeof(c->buf) - hlen)
            return client_error(c, "a frame larger than this test ever publishes");
        if (!client_fill(c, hlen + (size_t)n))
            return client_error(c, "connection ended or timed out inside a frame");
        p = c->buf + c->start + hlen;
        c->start += hlen + (size_t)n;
        if (op >= 8) {
            if (!(b0 & 0x80) || n > 125)
                return client_error(c, "a fragmented or long control frame");
            if (op == 8) {
                *len = n >= 2 ? (size_t)(p[0] << 8 | p[1]) : 1005;
                return 8;
            }
            if (op != 9 && op != 10)
                return client_error(c, "a reserved control opcode");
            *data = p;
            *len = (size_t)n;
            return op;
        }
        if (op == 0) {
            if (!c->msg_op)
                return client_error(c, "a continuation frame with no message open");
        } else if (op == 1 || op == 2) {
            if (c->msg_op)
                return client_error(c, "a new message inside a fragmented one");
            if (b0 & 0x80) {
                *data = p;
                *len = (size_t)n;
                return op;
            }
            c->msg_op = op;
            c->msg_len = 0;
        } else {
            return client_error(c, "a reserved data opcode");
        }
        if (c->msg_len + n > sizeof(c->msg))
            return client_error(c, "a fragmented message larger than this test publishes");
        memcpy(c->msg + c->msg_len, p, (size_t)n);
        c->msg_len += (size_t)n;
        if (b0 & 0x80) {
            op = c->msg_op;
            c->msg_op = 0;
            *data = c->msg;
            *len = c->msg_len;
            return op;
        }
    }
}

/* ---- the messages ------------------------------------------------------- */

/* Publisher p's message s: text "P<p> S<s> " and letters for even s, binary
 * (0xff, p, s as 4 bytes, then bytes that depend on both) for odd s; the
 * `pub` client can send only text. */
static size_t make_payload(unsigned p, unsigned s, uint8_t *out, bool *binary)
{
    size_t n = 12 + (size_t)((s * 37u + p * 11u) % 400u);

    *binary = (s & 1) && p != WS_PUB_ID;
    if (*binary) {
        out[0] = 0xff;
        out[1] = (uint8_t)p;
        out[2] = (uint8_t)(s >> 24);
        out[3] = (uint8_t)(s >> 16);
        out[4] = (uint8_t)(s >> 8);
        out[5] = (uint8_t)s;
        for (size_t i = 6; i < n; i++)
            out[i] = (uint8_t)(i * 131u + s * 7u + p);
    } else {
        int h = snprintf((char *)out, 32, "P%u S%06u ", p, s);
        for (size_t i = (size_t)h; i < n; i++)
            out[i] = (uint8_t)('a' + (i + s + p) % 26);
    }
    return n;
}

/* Which publisher and sequence number a received message claims to be. */
static bool parse_payload(int op, const uint8_t *d, size_t len, unsigned *p, unsigned *s)
{
    if (op == 2 && len >= 6 && d[0] == 0xff) {
        *p = d[1];
        *s = (unsigned)d[2] << 24 | (unsigned)d[3] << 16 | (unsigned)d[4] << 8 | d[5];
        return *p < N_PUB;
    }
    if (op == 1 && len >= 10 && d[0] == 'P') {
        char tmp[32];
        size_t k = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
        memcpy(tmp, d, k);
        tmp[k] = 0;
        return sscanf(tmp, "P%u S%u ", p, s) == 2 && *p < N_PUB;
    }
    return false;
}

/* ---- threads ------------------------------------------------------------ */

struct reader {
    struct client *c;
    pthread_t th;
    bool envelope;              /* ringws.v1: "msg TOPIC EPOCH OFFSET\n" first */
    char epoch[17];
    unsigned long long offset;  /* the last one seen */
    unsigned got;               /* messages accepted */
    unsigned next[N_PUB];       /* next sequence number expected per publisher */
    char error[256];
};

/* Checks and strips a ringws.v1 header line: the topic, one epoch, the
 * next offset. */
static bool envelope_strip(struct reader *r, const uint8_t **d, size_t *len)
{
    const uint8_t *nl = memchr(*d, '\n', *len);
    char line[128], epoch[17];
    unsigned long long off;
    int end = 0;

    if (!nl || (size_t)(nl - *d) >= sizeof(line)) {
        snprintf(r->error, sizeof(r->error), "no header line");
        return false;
    }
    memcpy(line, *d, (size_t)(nl - *d));
    line[nl - *d] = 0;
    if (sscanf(line, "msg " TOPIC " %16[0-9a-f] %llu%n", epoch, &off, &end) != 2 ||
        line[end] || off != r->offset + 1 || (r->offset && strcmp(epoch, r->epoch))) {
        snprintf(r->error, sizeof(r->error), "header \"%s\" after offset %llu of %s", line,
                 r->offset, r->epoch);
        return false;
    }
    memcpy(r->epoch, epoch, sizeof(epoch));
    r->offset = off;
    *len -= (size_t)(nl + 1 - *d);
    *d = nl + 1;
    return true;
}

/* The ringws.v1 subscriber's first frame: "subscribed TOPIC EPOCH LAST". */
static bool envelope_start(struct reader *r)
{
    const uint8_t *d;
    size_t len;
    char line[128];
    int op = client_next(r->c, &d, &len), end = 0;

    if (op != 1 || len >= sizeof(line)) {
        snprintf(r->error, sizeof(r->error), "no subscribed notice (opcode %d)", op);
        return false;
    }
    memcpy(line, d, len);
    line[len] = 0;
    if (sscanf(line, "subscribed " TOPIC " %16[0-9a-f] %llu\n%n", r->epoch, &r->offset, &end) !=
            2 || (size_t)end != len) {
        snprintf(r->error, sizeof(r->error), "first frame \"%s\"", line);
        return false;
    }
    return true;
}

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    uint8_t want[512];

    if (r->envelope && !envelope_start(r))
        return NULL;
    while (r->got < TOTAL_MSGS) {
        const uint8_t *d;
        size_t len;
        unsigned p, s;
        bool binary;
        int op = client_next(r->c, &d, &len);

        if (op == 9 || op == 10)
            continue; /* not expected within this test's time, but harmless */
        if (op < 0) {
            snprintf(r->error, sizeof(r->error), "after %u messages: %s", r->got, r->c->why);
            return NULL;
        }
        if (op == 8) {
            snprintf(r->error, sizeof(r->error), "closed with code %zu after %u messages", len,
                     r->got);
            return NULL;
        }
        if (r->envelope && !envelope_strip(r, &d, &len)) {
            snprintf(r->error + strlen(r->error), sizeof(r->error) - strlen(r->error),
                     " (message %u)", r->got);
            return NULL;
        }
        if (!parse_payload(op, d, len, &p, &s)) {
            snprintf(r->error, sizeof(r->error),
                     "message %u (opcode %d, %zu bytes) is from no publisher", r->got, op, len);
            return NULL;
        }
        if (s != r->next[p]) {
            snprintf(r->error, sizeof(r->error),
                     "publisher %u: expected its message %u, got %u (%s)", p, r->next[p], s,
                     s < r->next[p] ? "a duplicate or reordering" : "a loss or reordering");
            return NULL;
        }
        if (make_payload(p, s, want, &binary) != len || (binary ? 2 : 1) != op ||
            memcmp(want, d, len)) {
            snprintf(r->error, sizeof(r->error),
                     "publisher %u message %u: wrong payload or opcode (%zu bytes, opcode %d)",
                     p, s, len, op);
            return NULL;
        }
        r->next[p]++;
        r->got++;
    }
    return NULL;
}

struct publisher {
    ringws_server *srv;
    uint16_t port;
    unsigned id;
    pthread_barrier_t *start;
    pthread_t th;
    unsigned failures;
    int first_error;     /* API: the return value; HTTP: the status */
    char error[160];
};

static void *api_publisher_main(void *arg)
{
    struct publisher *pb = arg;
    uint8_t buf[512];

    pthread_barrier_wait(pb->start);
    for (unsigned s = 0; s < PER_API_PUB; s++) {
        bool binary;
        size_t n = make_payload(pb->id, s, buf, &binary);
        int ret = ringws_publish(pb->srv, TOPIC, buf, n, binary ? RINGWS_PUBLISH_BINARY : 0);
        if (ret != 0 && !pb->failures++)
            pb->first_error = ret;
    }
    return NULL;
}

/* POST /publish/load on one keep-alive connection; each answer must be 200
 * {"recipients":N_SUBS} before the next request goes. */
static void *http_publisher_main(void *arg)
{
    struct publisher *pb = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(pb->port)};
    struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
    char req[1024], resp[1024];
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_barrier_wait(pb->start);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        snprintf(pb->error, sizeof(pb->error), "connect: %s", strerror(errno));
        pb->failures = PER_HTTP_PUB;
        close(fd);
        return NULL;
    }
    for (unsigned s = 0; s < PER_HTTP_PUB; s++) {
        bool binary;
        uint8_t body[512];
        size_t n = make_payload(pb->id, s, body, &binary), len = 0, want = 0;
        int h = snprintf(req, sizeof(req),
                         "POST /publish/" TOPIC " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                         binary ? "application/octet-stream" : "text/plain; charset=utf-8", n);
        char *end = NULL, *cl;
        unsigned status = 0, recipients = 0;

        memcpy(req + h, body, n);
        if (send(fd, req, (size_t)h + n, MSG_NOSIGNAL) != (ssize_t)((size_t)h + n)) {
            snprintf(pb->error, sizeof(pb->error), "request %u: send failed", s);
            pb->failures += PER_HTTP_PUB - s;
            break;
        }
        while (!end || len < want) {
            ssize_t got = recv(fd, resp + len, sizeof(resp) - 1 - len, 0);
            if (got <= 0)
                break;
            len += (size_t)got;
            resp[len] = 0;
            if (!end && (end = strstr(resp, "\r\n\r\n")) != NULL) {
                cl = strcasestr(resp, "\r\nContent-Length:");
                want = (size_t)(end + 4 - resp) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
            }
        }
        if (!end || len != want || sscanf(resp, "HTTP/1.1 %u", &status) != 1 || status != 200 ||
            sscanf(end + 4, "{\"recipients\":%u}", &recipients) != 1 || recipients != N_SUBS) {
            if (!pb->failures++)
                snprintf(pb->error, sizeof(pb->error), "request %u answered: %.100s", s, resp);
            if (!end || len != want)
                break; /* the connection is out of step */
        }
    }
    close(fd);
    return NULL;
}

/* A WebSocket client of the pub/sub endpoint sending `pub load ...` frames,
 * then a ping: its pong says every command was read. */
static void *ws_publisher_main(void *arg)
{
    struct publisher *pb = arg;
    struct client *c = client_open(pb->port, "/ws");
    uint8_t frame[600];

    pthread_barrier_wait(pb->start);
    if (!c) {
        snprintf(pb->error, sizeof(pb->error), "could not open /ws");
        pb->failures = PER_WS_PUB;
        return NULL;
    }
    for (unsigned s = 0; s < PER_WS_PUB; s++) {
        bool binary;
        size_t n = make_payload(pb->id, s, frame + 9, &binary);
        memcpy(frame, "pub " TOPIC " ", 9);
        if (!client_send(c, 1, frame, 9 + n)) {
            snprintf(pb->error, sizeof(pb->error), "send of command %u failed", s);
            pb->failures = PER_WS_PUB - s;
            break;
        }
    }
    if (!pb->failures) {
        const uint8_t *d;
        size_t len;
        int op = client_send(c, 9, "end", 3) ? client_next(c, &d, &len) : -1;
        if (op != 10 && !pb->failures++)
            snprintf(pb->error, sizeof(pb->error), "no pong after the commands: %d %.100s", op,
                     c->why);
    }
    client_close(c);
    return NULL;
}

static void *server_thread(void *arg)
{
    return (void *)(intptr_t)ringws_server_run(arg);
}

/* ---- a worker that cannot take what is posted to it --------------------- */

#define INBOX_BUDGET (1u << 20)
#define INBOX_MSG 65536u /* also max_publish */
#define INBOX_TRIES 2000u
#define INBOX_TOPIC "inbox"
#define INBOX_END 0xffffffffu

static atomic_int hold_on, hold_release;

static void hold_on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    ringws_subscribe(c, INBOX_TOPIC);
}

/* "who": the worker's number back; "hold": keeps this worker inside the
 * callback until the main thread lets it go (30 s at most). */
static void hold_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                            size_t len, void *user)
{
    char who[2] = {(char)('0' + ringws_conn_worker(c)), 0};

    if (len == 3 && !memcmp(data, "who", 3)) {
        ringws_send(c, RINGWS_TEXT, who, 1);
    } else if (len == 4 && !memcmp(data, "hold", 4)) {
        atomic_store(&hold_on, 1);
        for (int i = 0; i < 30000 && !atomic_load(&hold_release); i++)
            usleep(1000);
    }
}

/* The worker a fresh /app client belongs to, or -1. */
static int client_worker(struct client *c)
{
    const uint8_t *d;
    size_t len;

    if (!client_send(c, 1, "who", 3) || client_next(c, &d, &len) != 1 || len != 1)
        return -1;
    return d[0] - '0';
}

/* Reads the published stream: the accepted sequence numbers in order, then
 * the end marker; false (with a note) otherwise. */
static bool read_inbox_stream(struct client *c, const char *who, const uint32_t *want,
                              unsigned n_want)
{
    for (unsigned i = 0; i <= n_want; i++) {
        const uint8_t *d;
        size_t len;
        uint32_t seq;
        int op = client_next(c, &d, &len);

        if (op != 2 || len < 4) {
            CHECKF(0, "%s: message %u of %u: opcode %d (%zu bytes) %s", who, i, n_want + 1, op,
                   len, c->why);
            return false;
        }
        memcpy(&seq, d, 4);
        if (seq != (i < n_want ? want[i] : INBOX_END)) {
            CHECKF(0, "%s: message %u: sequence %u, expected %u", who, i, seq,
                   i < n_want ? want[i] : INBOX_END);
            return false;
        }
    }
    return true;
}

static void test_inbox_budget(void)
{
    static const char *const paths[] = {"/app"};
    static uint32_t accepted[INBOX_TRIES];
    struct client *by_worker[2][2] = {{NULL}}, *spare[64];
    unsigned n_by[2] = {0}, n_spare = 0, n_ok = 0, n_refused = 0, n_other = 0;
    struct ringws_config cfg;
    struct ringws_stats st;
    ringws_server *srv;
    uint8_t *msg = calloc(1, INBOX_MSG + 1);
    uint32_t end = INBOX_END;
    pthread_t th;
    void *res;
    int held_w = -1, r = -EAGAIN;

    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = 2;
    cfg.ws_paths = paths;
    cfg.n_ws_paths = 1;
    cfg.max_publish = INBOX_MSG;
    cfg.max_inbox_bytes = INBOX_BUDGET;
    cfg.max_fanout_queue = 64u << 20; /* the subscribers read only at the end */
    cfg.close_timeout_ms = 1000;
    cfg.cb.on_open = hold_on_open;
    cfg.cb.on_message = hold_on_message;
    if (!msg || ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"the inbox server");
        free(msg);
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);

    CHECK(ringws_publish(srv, "other", msg, INBOX_MSG + 1, RINGWS_PUBLISH_BINARY) == -EMSGSIZE);
    CHECK(ringws_publish(srv, "other", msg, INBOX_MSG, RINGWS_PUBLISH_BINARY) == 0);

    /* Two clients on one worker (one to hold it, one to read), one on the
     * other: the kernel spreads connections, so open until both are there. */
    for (int i = 0; i < 64 && (n_by[0] < 2 || n_by[1] < 1) && (n_by[1] < 2 || n_by[0] < 1); i++) {
        struct client *c = client_open(ringws_server_port(srv), "/app");
        int w = c ? client_worker(c) : -1;
        if (w == 0 || w == 1) {
            if (n_by[w] < 2) {
                by_worker[w][n_by[w]++] = c;
                continue;
            }
        }
        if (c)
            spare[n_spare++] = c;
    }
    held_w = n_by[0] == 2 && n_by[1] >= 1 ? 0 : 1;
    for (unsigned i = 0; i < n_spare; i++)
        client_close(spare[i]);
    if (n_by[held_w] < 2 || n_by[!held_w] < 1) {
        CHECKF(0, "no two clients on one worker and one on the other in 64 tries");
        goto stop;
    }
    CHECK(client_send(by_worker[held_w][0], 1, "hold", 4));
    for (int i = 0; i < 1000 && !atomic_load(&hold_on); i++)
        usleep(5000);
    CHECK(atomic_load(&hold_on));

    /* Worker held_w takes nothing now: its inbox fills to the budget. */
    for (uint32_t i = 0; i < INBOX_TRIES; i++) {
        memcpy(msg, &i, 4);
        r = ringws_publish(srv, INBOX_TOPIC, msg, INBOX_MSG, RINGWS_PUBLISH_BINARY);
        if (r == 0)
            accepted[n_ok++] = i;
        else if (r == -EAGAIN)
            n_refused++;
        else
            n_other++;
    }
    printf("a held worker: %u of %u publishes of %u bytes accepted, %u refused\n", n_ok,
           INBOX_TRIES, INBOX_MSG, n_refused);
    CHECKF(n_ok >= 1 && n_ok <= INBOX_BUDGET / INBOX_MSG + 1,
           "%u publishes of %u bytes accepted while a worker with a %u-byte inbox was held",
           n_ok, INBOX_MSG, INBOX_BUDGET);
    CHECKF(n_refused == INBOX_TRIES - n_ok && !n_other, "%u refused with -EAGAIN, %u otherwise",
           n_refused, n_other);
    ringws_server_stats(srv, &st);
    CHECKF(st.publishes_refused == n_refused, "stats.publishes_refused %llu, %u refused",
           (unsigned long long)st.publishes_refused, n_refused);

    /* Let go: the inbox drains and publishing works again. */
    atomic_store(&hold_release, 1);
    for (int i = 0; i < 1000; i++) {
        memcpy(msg, &end, 4);
        r = ringws_publish(srv, INBOX_TOPIC, msg, INBOX_MSG, RINGWS_PUBLISH_BINARY);
        if (r != -EAGAIN)
            break;
        usleep(5000);
    }
    CHECKF(r == 0, "a publish after the worker was let go: %d", r);
    read_inbox_stream(by_worker[held_w][1], "the subscriber on the held worker", accepted, n_ok);
    read_inbox_stream(by_worker[!held_w][0], "the subscriber on the other worker", accepted, n_ok);

stop:
    atomic_store(&hold_release, 1);
    for (int w = 0; w < 2; w++)
        for (unsigned i = 0; i < n_by[w]; i++)
            client_close(by_worker[w][i]);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
    free(msg);
}

/* ---- cases -------------------------------------------------------------- */

static void test_publish_errors(ringws_server *srv)
{
    static uint8_t big[MAX_MESSAGE + 1];
    static const uint8_t bad_utf8[] = {'o', 'k', 0xc0, 0xaf};
    static const uint8_t surrogate[] = {0xed, 0xa0, 0x80};
    char topic[RINGWS_MAX_TOPIC + 2];

    CHECK(ringws_publish(srv, "bad topic", "x", 1, 0) == -EINVAL);
    CHECK(ringws_publish(srv, "", "x", 1, 0) == -EINVAL);
    CHECK(ringws_publish(srv, "a,b", "x", 1, 0) == -EINVAL);
    CHECK(ringws_publish(srv, "caf\xc3\xa9", "x", 1, 0) == -EINVAL);
    memset(topic, 'q', RINGWS_MAX_TOPIC + 1);
    topic[RINGWS_MAX_TOPIC + 1] = 0;
    CHECK(ringws_publish(srv, topic, "x", 1, 0) == -EINVAL); /* 129 bytes */
    topic[RINGWS_MAX_TOPIC] = 0;
    CHECK(ringws_publish(srv, topic, "x", 1, 0) == 0); /* 128 bytes */
    CHECK(ringws_publish(srv, "Az09-._~:/@", "x", 1, 0) == 0);
    CHECK(ringws_publish(srv, "errs", bad_utf8, sizeof(bad_utf8), 0) == -EINVAL);
    CHECK(ringws_publish(srv, "errs", surrogate, sizeof(surrogate), 0) == -EINVAL);
    CHECK(ringws_publish(srv, "errs", bad_utf8, sizeof(bad_utf8), RINGWS_PUBLISH_BINARY) == 0);
    CHECK(ringws_publish(srv, "errs", "x", 1, 4u) == -EINVAL); /* unknown flag */
    CHECK(ringws_publish(srv, "errs", big, MAX_MESSAGE + 1, RINGWS_PUBLISH_BINARY) == -EMSGSIZE);
    CHECK(ringws_publish(srv, "errs", big, MAX_MESSAGE, RINGWS_PUBLISH_BINARY) == 0);
    CHECK(ringws_publish(srv, "errs", "", 0, 0) == 0);
}
#define ERROR_CASE_PUBLISHES 5 /* the successful ones above */

static bool wait_atomic(atomic_int *v, int want, int ms)
{
    for (int i = 0; i < ms / 5 && atomic_load(v) != want; i++)
        usleep(5000);
    return atomic_load(v) == want;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    static struct reader readers[N_SUBS];
    static struct publisher pubs[N_PUB];
    static struct shared sh;
    struct ringws_config cfg;
    struct ringws_stats st;
    struct client *relay_sub, *app0 = NULL;
    pthread_barrier_t start;
    pthread_t th;
    uint16_t port;
    void *res;
    double t0;
    int n_open = 0;

    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = WORKERS;
    cfg.ws_paths = app_paths;
    cfg.n_ws_paths = 1;
    cfg.pubsub_path = "/ws";
    cfg.max_topics = MAX_TOPICS;
    cfg.max_message = MAX_MESSAGE;
    /* Room enough that a reader thread slowed by the sanitizer is never a
     * slow subscriber: this test is about threads, not back-pressure. */
    cfg.max_fanout_queue = 16u << 20;
    cfg.close_timeout_ms = 1000;
    cfg.topic_rules = rules;
    cfg.n_topic_rules = 1;
    cfg.cb.on_open = on_open;
    cfg.cb.on_message = on_message;
    cfg.user = &sh;
    if (ringws_server_create(&cfg, &sh.srv) != 0) {
        CHECK(!"ringws_server_create");
        return check_done("pubsub_threads");
    }
    port = ringws_server_port(sh.srv);
    pthread_create(&th, NULL, server_thread, sh.srv);

    test_publish_errors(sh.srv);

    /* Subscribers: by the query, by ringws_subscribe, and one for "relay". */
    for (int i = 0; i < N_SUBS; i++) {
        readers[i].envelope = i < N_ENV_SUBS;
        readers[i].c = client_open_with(port, i < N_WS_SUBS ? "/ws?topics=" TOPIC : "/app",
                                        readers[i].envelope
                                            ? "Sec-WebSocket-Protocol: ringws.v1\r\n" : "");
        CHECKF(readers[i].c != NULL, "subscriber %d could not open", i);
        n_open += readers[i].c != NULL;
    }
    relay_sub = client_open(port, "/ws?topics=relay");
    CHECK(relay_sub != NULL);
    CHECK(wait_atomic(&app_opened, N_APP_SUBS, 5000));
    CHECKF(atomic_load(&app_checks_passed) == atomic_load(&app_checks_run) &&
               atomic_load(&app_checks_run) == 13 * N_APP_SUBS,
           "%d of %d ringws_subscribe checks in on_open passed; first failure: %s",
           atomic_load(&app_checks_passed), atomic_load(&app_checks_run), app_first_failure);

    /* Publishing from a callback. */
    app0 = readers[N_WS_SUBS].c;
    if (app0 && relay_sub) {
        const uint8_t *d;
        size_t len;
        int op;

        client_send(app0, 1, "relay", 5);
        op = client_next(relay_sub, &d, &len);
        CHECKF(op == 1 && len == 7 && !memcmp(d, "relayed", 7), "relay subscriber: op %d, %s", op,
               relay_sub->why);
        /* The message may arrive before the callback has stored the result. */
        CHECKF(wait_atomic(&relay_ret, 0, 5000), "ringws_publish in on_message: %d",
               atomic_load(&relay_ret));
    }

    if (n_open != N_SUBS) {
        fprintf(stderr, "not every subscriber opened; the load phase is skipped\n");
        goto stop;
    }

    t0 = now_s();
    for (int i = 0; i < N_SUBS; i++)
        pthread_create(&readers[i].th, NULL, reader_main, &readers[i]);
    pthread_barrier_init(&start, NULL, N_PUB);
    for (unsigned p = 0; p < N_PUB; p++) {
        pubs[p] = (struct publisher){.srv = sh.srv, .port = port, .id = p, .start = &start};
        pthread_create(&pubs[p].th, NULL,
                       p < N_API_PUB ? api_publisher_main
                       : p < WS_PUB_ID ? http_publisher_main : ws_publisher_main,
                       &pubs[p]);
    }
    for (unsigned p = 0; p < N_PUB; p++) {
        pthread_join(pubs[p].th, NULL);
        CHECKF(pubs[p].failures == 0, "publisher %u (%s): %u failed, the first: %d %s", p,
               p < N_API_PUB ? "ringws_publish" : p < WS_PUB_ID ? "POST /publish" : "pub",
               pubs[p].failures, pubs[p].first_error, pubs[p].error);
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_SUBS; i++) {
        pthread_join(readers[i].th, NULL);
        CHECKF(readers[i].got == TOTAL_MSGS && !readers[i].error[0],
               "subscriber %d (%s): %u of %u messages: %s", i,
               i < N_WS_SUBS ? "/ws?topics" : "/app ringws_subscribe", readers[i].got,
               TOTAL_MSGS, readers[i].error);
    }
    printf("%d messages from %d publishers to %d subscribers (worker mask %#x): %.2fs\n",
           TOTAL_MSGS, N_PUB, N_SUBS, atomic_load(&workers_seen), now_s() - t0);

    /* The counters add up once every worker has handled every publish. */
    {
        uint64_t n_published = (uint64_t)TOTAL_MSGS + 1 + ERROR_CASE_PUBLISHES;
        uint64_t queued = (uint64_t)TOTAL_MSGS * N_SUBS + 1;

        for (int i = 0; i < 400; i++) {
            ringws_server_stats(sh.srv, &st);
            if (st.publishes == n_published * WORKERS && st.fanout_queued == queued)
                break;
            usleep(5000);
        }
        CHECKF(st.publishes == n_published * WORKERS,
               "stats.publishes %llu, expected %llu (%llu publishes, each handled once per worker)",
               (unsigned long long)st.publishes, (unsigned long long)(n_published * WORKERS),
               (unsigned long long)n_published);
        CHECKF(st.fanout_queued == queued, "stats.fanout_queued %llu, expected %llu",
               (unsigned long long)st.fanout_queued, (unsigned long long)queued);
        CHECKF(st.fanout_dropped == 0 && st.fanout_closed == 0, "dropped %llu, closed %llu",
               (unsigned long long)st.fanout_dropped, (unsigned long long)st.fanout_closed);
        /* 8 x load, 2 x (load, x1), 1 x relay */
        CHECKF(st.subscriptions == N_WS_SUBS + 2 * N_APP_SUBS + 1,
               "stats.subscriptions %llu, expected %d", (unsigned long long)st.subscriptions,
               N_WS_SUBS + 2 * N_APP_SUBS + 1);
    }

stop:
    for (int i = 0; i < N_SUBS; i++)
        client_close(readers[i].c);
    client_close(relay_sub);
    /* Subscriptions end with their connections. */
    for (int i = 0; i < 400; i++) {
        ringws_server_stats(sh.srv, &st);
        if (st.subscriptions == 0)
            break;
        usleep(5000);
    }
    CHECKF(st.subscriptions == 0, "stats.subscriptions %llu after every subscriber closed",
           (unsigned long long)st.subscriptions);

    ringws_server_stop(sh.srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    CHECKF(ringws_publish(sh.srv, TOPIC, "late", 4, 0) == -ESHUTDOWN,
           "ringws_publish after the server stopped: %d",
           ringws_publish(sh.srv, TOPIC, "late", 4, 0));
    ringws_server_destroy(sh.srv);
    test_inbox_budget();
    return check_done("pubsub_threads");
}
