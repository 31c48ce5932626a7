/* test_api.c - the public API from a library user's side: on_http answers
 * its own paths and declines others, on_upgrade accepts, refuses with a
 * status or redirects (header values that would split or overflow the
 * response refused with 500), on_open / on_message / on_close see the
 * right connection, user data and codes, what a callback is handed outlives
 * a close from inside it, on_close runs once and never inside another
 * callback, ringws_send / ringws_close reject what they must, and a relay
 * that closes one connection from another's on_close keeps the idle timers
 * right; with token keys, on_upgrade and on_open see the verified claims
 * (and can refuse on them), ringws_conn_token gives them to later
 * callbacks, an invalid token never reaches on_upgrade and is counted by
 * reason, and a bad key file stops ringws_server_create.  The server runs
 * in a thread; this program is its client over real loopback sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <libdeflate.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "check.h"
#include "b64url.h"
#include "ringws.h"
#include "ws_client.h"

static const char *const ws_paths[] = {"/ws"};
static const char *const protocols[] = {"chat.v2", "chat.v1"};

static atomic_int opened, closed_code, send_checks;
static char closed_reason[64];
static atomic_int user_data_ok;
static atomic_int flood_sent, flood_ret;
static atomic_int nested_closes, closes;
static atomic_uint message_sum, request_sum;

/* What the application keeps per connection, allocated in on_open and
 * freed in on_close as a real application would: any use after on_close
 * is a heap-use-after-free under AddressSanitizer. */
struct app_conn {
    bool in_callback; /* inside on_open or on_message of this connection */
    int flood_sent;
};

/* FNV-1a, to read every byte a callback was handed. */
static unsigned sum_bytes(unsigned h, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const uint8_t *)p)[i]) * 16777619u;
    return h;
}

static unsigned sum_request(const struct ringws_request *req)
{
    unsigned h = sum_bytes(2166136261u, req->path.ptr, req->path.len);

    h = sum_bytes(h, req->query.ptr, req->query.len);
    for (size_t i = 0; i < req->n_headers; i++) {
        h = sum_bytes(h, req->header_names[i].ptr, req->header_names[i].len);
        h = sum_bytes(h, req->header_values[i].ptr, req->header_values[i].len);
    }
    return h;
}

static bool query_has(const struct ringws_request *req, const char *word)
{
    size_t n = strlen(word);
    return req->query.ptr && req->query.len == n && !memcmp(req->query.ptr, word, n);
}

static bool path_is(const struct ringws_request *req, const char *path)
{
    size_t n = strlen(path);
    return req->path.len == n && !memcmp(req->path.ptr, path, n);
}

/* Header values an application might return: some would split the
 * response or not fit in its head. */
static char long_value[600], too_long_location[2100], too_long_type[4200];
static const struct {
    const char *path;
    int status;
    const char *location, *content_type;
} header_cases[] = {
    {"/split-location", 302, "/x\r\nSet-Cookie: x=1", NULL},
    {"/lf-location", 302, "/x\nSet-Cookie: x=1", NULL},
    {"/ctl-location", 302, "/x\x01y", NULL},
    {"/del-location", 302, "/x\x7fy", NULL},
    {"/long-location", 302, too_long_location, NULL},
    {"/split-type", 200, NULL, "text/plain\r\nSet-Cookie: x=1"},
    {"/cr-type", 200, NULL, "text/plain\rSet-Cookie: x=1"},
    {"/long-type", 200, NULL, too_long_type},
    {"/good-location", 302, "/there?a=1\tb", NULL},
    {"/good-long-location", 302, long_value, NULL},
    {"/good-type", 200, NULL, "text/plain;\tcharset=utf-8"},
};

static int on_http(ringws_server *srv, const struct ringws_request *req,
                   struct ringws_response *res, void *user)
{
    static const char body[] = "hello from on_http";

    for (size_t i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]); i++) {
        if (path_is(req, header_cases[i].path)) {
            res->status = header_cases[i].status;
            res->location = header_cases[i].location;
            res->content_type = header_cases[i].content_type;
            res->body = body;
            res->body_len = sizeof(body) - 1;
            return RINGWS_HTTP_HANDLED;
        }
    }

    if (req->path.len == 6 && !memcmp(req->path.ptr, "/hello", 6)) {
        struct ringws_str agent = ringws_request_header(req, "x-test");
        res->status = agent.ptr && agent.len == 3 && !memcmp(agent.ptr, "yes", 3) ? 200 : 400;
        res->body = body;
        res->body_len = sizeof(body) - 1;
        return RINGWS_HTTP_HANDLED;
    }
    if (req->path.len == 5 && !memcmp(req->path.ptr, "/echo", 5) && req->body.len) {
        res->status = 201;
        res->content_type = "application/octet-stream";
        res->body = req->body.ptr;
        res->body_len = req->body.len;
        return RINGWS_HTTP_HANDLED;
    }
    return RINGWS_HTTP_DECLINED;
}

static int on_upgrade(ringws_server *srv, const struct ringws_request *req,
                      const char *subprotocol, const char **location, void *user)
{
    if (query_has(req, "deny"))
        return 401;
    if (query_has(req, "moved")) {
        *location = "/ws?welcome";
        return 302;
    }
    if (query_has(req, "moved-split")) {
        *location = "/ws\r\nSet-Cookie: x=1";
        return 302;
    }
    if (query_has(req, "moved-long")) {
        *location = too_long_location;
        return 307;
    }
    return RINGWS_UPGRADE_ACCEPT;
}

static void on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    struct app_conn *st = calloc(1, sizeof(*st));

    ringws_conn_set_user(c, st);
    st->in_callback = true;
    atomic_fetch_add(&opened, 1);
    if (query_has(req, "bye"))
        ringws_close(c, 4000, "bye", 3);
    if (query_has(req, "bye-read")) {
        /* The request stays readable for the whole call, even after the
         * connection is closed from inside it. */
        ringws_close(c, 4000, "bye", 3);
        atomic_store(&request_sum, sum_request(req));
    }
    st->in_callback = false;
}

static void on_message(ringws_conn *c, enum ringws_opcode op, const void *data, size_t len,
                       void *user)
{
    static const uint8_t bad_utf8[] = {0xc0, 0xaf};
    struct app_conn *st = ringws_conn_get_user(c);
    int checks = 0;

    st->in_callback = true;
    if (len >= 10 && !memcmp(data, "close-read", 10)) {
        /* data stays readable for the whole call, even after the
         * connection is closed from inside it. */
        ringws_close(c, 1000, "read", 4);
        atomic_store(&message_sum, sum_bytes(2166136261u, data, len));
        st->in_callback = false;
        return;
    }
    checks += ringws_send(c, (enum ringws_opcode)9, "x", 1) == -EINVAL;
    checks += ringws_send(c, RINGWS_TEXT, bad_utf8, sizeof(bad_utf8)) == -EINVAL;
    checks += ringws_close(c, 1005, NULL, 0) == -EINVAL;
    checks += ringws_close(c, 1015, NULL, 0) == -EINVAL;
    checks += ringws_close(c, 1000, (const char *)bad_utf8, sizeof(bad_utf8)) == -EINVAL;
    atomic_store(&send_checks, checks);
    if (ringws_conn_get_user(c))
        atomic_fetch_add(&user_data_ok, 1);
    if (len == 5 && !memcmp(data, "flood", 5)) {
        /* Push more than the send-queue cap at a peer that is not reading. */
        static uint8_t big[60000];
        int sent = 0, ret = 0;
        while (sent < 64 && (ret = ringws_send(c, RINGWS_BINARY, big, sizeof(big))) == 0)
            sent++;
        /* The state is the application's until on_close, which must not
         * have run inside ringws_send. */
        st->flood_sent = sent;
        atomic_store(&flood_sent, st->flood_sent);
        atomic_store(&flood_ret, ret);
    } else if (len == 8 && !memcmp(data, "close-me", 8)) {
        ringws_close(c, 3001, "asked", 5);
    } else if (len == 10 && !memcmp(data, "restart-me", 10)) {
        ringws_close(c, 1012, "restart", 7);
    } else {
        ringws_send(c, op, data, len);
    }
    st->in_callback = false;
}

static void on_close(ringws_conn *c, uint16_t code, const char *reason, size_t reason_len,
                     void *user)
{
    struct app_conn *st = ringws_conn_get_user(c);

    if (st->in_callback)
        atomic_fetch_add(&nested_closes, 1);
    free(st);
    atomic_fetch_add(&closes, 1);
    if (reason_len >= sizeof(closed_reason))
        reason_len = sizeof(closed_reason) - 1;
    memcpy(closed_reason, reason ? reason : "", reason_len);
    closed_reason[reason_len] = 0;
    atomic_store(&closed_code, code);
}

/* ---- a small blocking client ------------------------------------------- */

static int client_connect(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = 5};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

/* Bytes that arrived after a response (frames sent right after a 101). */
static uint8_t surplus[4096];
static size_t surplus_len;

/* Reads one response head (and a body of Content-Length bytes) into buf. */
static size_t client_read_response(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char *end = NULL;

    while (!end && len < cap - 1) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (end) {
        const char *cl = strcasestr(buf, "Content-Length: ");
        size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
        while (len < want && len < cap - 1) {
            ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        if (len > want && len - want <= sizeof(surplus)) {
            surplus_len = len - want;
            memcpy(surplus, buf + want, surplus_len);
            len = want;
        }
    }
    buf[len] = 0;
    return len;
}

static void client_request(uint16_t port, const char *req, char *buf, size_t cap)
{
    int fd = client_connect(port);

    if (send(fd, req, strlen(req), 0) < 0)
        perror("send");
    client_read_response(fd, buf, cap);
    close(fd);
}

static int client_upgrade(uint16_t port, const char *target, const char *extra, char *buf,
                          size_t cap)
{
    char req[512];
    int fd = client_connect(port);

    surplus_len = 0;
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "%s\r\n",
             target, extra);
    if (send(fd, req, strlen(req), 0) < 0)
        perror("send");
    client_read_response(fd, buf, cap);
    return fd;
}

/* Sends one masked frame of up to 65535 bytes; first is FIN | opcode. */
static void client_send_frame_raw(int fd, unsigned first, const void *p, size_t n)
{
    uint8_t f[WS_CLIENT_MAX_HEADER + WS_CLIENT_MAX_PAYLOAD];

    if (send(fd, f, ws_client_frame(f, first, p, n), 0) < 0)
        perror("send");
}

/* The same, a whole message (FIN set). */
static void client_send_frame(int fd, unsigned opcode, const void *p, size_t n)
{
    client_send_frame_raw(fd, 0x80 | opcode, p, n);
}

static bool client_recv_exact(int fd, uint8_t *p, size_t n)
{
    size_t from_surplus = n < surplus_len ? n : surplus_len;

    memcpy(p, surplus, from_surplus);
    memmove(surplus, surplus + from_surplus, surplus_len - from_surplus);
    surplus_len -= from_surplus;
    n -= from_surplus;
    return !n || recv(fd, p + from_surplus, n, MSG_WAITALL) == (ssize_t)n;
}

/* Reads one small server frame; returns its opcode, or -1. */
static int client_read_frame(int fd, uint8_t *payload, size_t *len)
{
    uint8_t h[2];

    if (!client_recv_exact(fd, h, 2) || (h[1] & 0x80) || (h[1] & 0x7f) > 125)
        return -1;
    *len = h[1] & 0x7f;
    if (*len && !client_recv_exact(fd, payload, *len))
        return -1;
    return h[0] & 0x0f;
}

/* ---- cases ------------------------------------------------------------- */

static void test_http(uint16_t port)
{
    char buf[4096];

    client_request(port, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Test: yes\r\n\r\n", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 200 ", 13), "%.40s", buf);
    CHECK(strstr(buf, "\r\n\r\nhello from on_http") != NULL);
    client_request(port, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde", buf,
                   sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 201 ", 13), "%.40s", buf);
    CHECK(strstr(buf, "application/octet-stream") && strstr(buf, "\r\n\r\nabcde"));
    /* Declined: the built-in routes answer. */
    client_request(port, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 200 ", 13), "%.40s", buf);
    client_request(port, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 404 ", 13), "%.40s", buf);
    client_request(port, "GET /ws HTTP/1.1\r\nHost: t\r\n\r\n", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 426 ", 13), "%.40s", buf);
}

/* Header values from the application that hold control characters or do
 * not fit are refused with 500, never written (response splitting) nor cut
 * short; tabs are fine. */
static void test_app_headers(uint16_t port)
{
    char req[256], buf[8192], line[1024];
    int fd;

    for (size_t i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]); i++) {
        bool good = !strncmp(header_cases[i].path, "/good", 5);
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", header_cases[i].path);
        client_request(port, req, buf, sizeof(buf));
        if (good) {
            CHECKF(!strncmp(buf, "HTTP/1.1 200 ", 13) || !strncmp(buf, "HTTP/1.1 302 ", 13),
                   "%s: %.40s", header_cases[i].path, buf);
            /* Written whole: a 600-byte Location too. */
            snprintf(line, sizeof(line), "\r\n%s: %s\r\n",
                     header_cases[i].location ? "Location" : "Content-Type",
                     header_cases[i].location ? header_cases[i].location
                                              : header_cases[i].content_type);
            CHECKF(strstr(buf, line) != NULL, "%s", header_cases[i].path);
        } else {
            CHECKF(!strncmp(buf, "HTTP/1.1 500 ", 13), "%s: %.40s", header_cases[i].path, buf);
            CHECKF(!strstr(buf, "ppppp"), "%s: %.200s", header_cases[i].path, buf);
        }
        CHECKF(!strstr(buf, "Set-Cookie"), "%s: %.200s", header_cases[i].path, buf);
        CHECKF(strstr(buf, "\r\n\r\n") != NULL, "%s: no complete head", header_cases[i].path);
    }
    fd = client_upgrade(port, "/ws?moved-split", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 500 ", 13), "%.40s", buf);
    CHECK(!strstr(buf, "Set-Cookie"));
    close(fd);
    fd = client_upgrade(port, "/ws?moved-long", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 500 ", 13), "%.40s", buf);
    CHECK(!strstr(buf, "ppppp"));
    close(fd);
}

static void test_upgrade_decisions(uint16_t port)
{
    char buf[4096];
    int fd;

    fd = client_upgrade(port, "/ws?deny", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 401 ", 13), "%.40s", buf);
    close(fd);
    fd = client_upgrade(port, "/ws?moved", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 302 ", 13), "%.40s", buf);
    CHECK(strstr(buf, "\r\nLocation: /ws?welcome\r\n") != NULL);
    close(fd);
    fd = client_upgrade(port, "/other", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 404 ", 13), "%.40s", buf);
    close(fd);
    fd = client_upgrade(port, "/ws", "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n", buf,
                        sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    CHECK(strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    CHECK(strstr(buf, "Sec-WebSocket-Protocol: chat.v1\r\n") != NULL);
    close(fd);
}

static void wait_closed_code(int want)
{
    for (int i = 0; i < 200 && atomic_load(&closed_code) != want; i++)
        usleep(10000);
}

static void wait_closes(int want)
{
    for (int i = 0; i < 200 && atomic_load(&closes) < want; i++)
        usleep(10000);
}

/* Reads the server's close frame, answers it and waits for on_close. */
static void client_finish_close(int fd, int want_code)
{
    uint8_t payload[128];
    size_t len = 0;
    int before = atomic_load(&closes);

    CHECK(client_read_frame(fd, payload, &len) == 8 && len >= 2 &&
          (payload[0] << 8 | payload[1]) == want_code);
    client_send_frame(fd, 8, payload, 2);
    wait_closes(before + 1);
    CHECK(atomic_load(&closes) == before + 1);
    CHECK(atomic_load(&closed_code) == want_code);
    close(fd);
}

/* What a callback is handed lives until it returns, also when the
 * connection is closed from inside it and the bytes were gathered from
 * several receives (a fragmented message, an upgrade request in pieces). */
static void test_callback_lifetimes(uint16_t port)
{
    static const char *const names[] = {"Host", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                        "Sec-WebSocket-Version", "X-Pad"};
    const char *values[] = {"t", "websocket", "Upgrade", "dGhlIHNhbXBsZSBub25jZQ==", "13", NULL};
    char pad[600], req[2048], buf[4096];
    uint8_t msg[600];
    unsigned want;
    int fd;

    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)('a' + i % 26);
    memcpy(msg, "close-read", 10);
    fd = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    atomic_store(&message_sum, 0);
    client_send_frame_raw(fd, 0x01, msg, 300);         /* text, not final */
    client_send_frame_raw(fd, 0x80, msg + 300, 300);   /* continuation, final */
    client_finish_close(fd, 1000);
    CHECK(atomic_load(&message_sum) == sum_bytes(2166136261u, msg, sizeof(msg)));

    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = 0;
    values[5] = pad;
    snprintf(req, sizeof(req), "GET /ws?bye-read HTTP/1.1\r\n");
    want = sum_bytes(sum_bytes(2166136261u, "/ws", 3), "bye-read", 8);
    for (size_t i = 0; i < 6; i++) {
        snprintf(req + strlen(req), sizeof(req) - strlen(req), "%s: %s\r\n", names[i],
                 values[i]);
        want = sum_bytes(want, names[i], strlen(names[i]));
        want = sum_bytes(want, values[i], strlen(values[i]));
    }
    strcat(req, "\r\n");
    atomic_store(&request_sum, 0);
    fd = client_connect(port);
    surplus_len = 0;
    /* Two receives at least: the request is gathered in the server. */
    CHECK(send(fd, req, 40, 0) == 40);
    usleep(50000);
    CHECK(send(fd, req + 40, strlen(req) - 40, 0) == (ssize_t)(strlen(req) - 40));
    client_read_response(fd, buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    client_finish_close(fd, 4000);
    CHECK(atomic_load(&request_sum) == want);
}

static void test_messages_and_close(uint16_t port)
{
    char buf[4096];
    uint8_t payload[128];
    size_t len = 0;
    int opened_before = atomic_load(&opened);
    int fd = client_upgrade(port, "/ws", "", buf, sizeof(buf));

    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    client_send_frame(fd, 1, "hi there", 8);
    CHECK(client_read_frame(fd, payload, &len) == 1 && len == 8 && !memcmp(payload, "hi there", 8));
    CHECK(atomic_load(&opened) == opened_before + 1);
    CHECK(atomic_load(&send_checks) == 5);
    CHECK(atomic_load(&user_data_ok) >= 1);

    /* A server-initiated close: the client's reply completes it. */
    client_send_frame(fd, 1, "close-me", 8);
    CHECK(client_read_frame(fd, payload, &len) == 8 && len == 7 &&
          payload[0] == 3001 >> 8 && payload[1] == (3001 & 0xff) && !memcmp(payload + 2, "asked", 5));
    client_send_frame(fd, 8, "\x0b\xb9ok", 4); /* 3001 "ok" */
    wait_closed_code(3001);
    CHECK(atomic_load(&closed_code) == 3001 && !strcmp(closed_reason, "ok"));
    CHECK(recv(fd, buf, sizeof(buf), 0) == 0); /* then the server closes TCP */
    close(fd);

    /* A code registered with IANA after RFC 6455 (1012, Service Restart)
     * both ways: the application closes with it, the peer answers it. */
    fd = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    client_send_frame(fd, 1, "restart-me", 10);
    CHECK(client_read_frame(fd, payload, &len) == 8 && len == 9 && payload[0] == 1012 >> 8 &&
          payload[1] == (1012 & 0xff) && !memcmp(payload + 2, "restart", 7));
    client_send_frame(fd, 8, "\x03\xf4", 2); /* 1012 */
    wait_closed_code(1012);
    CHECK(atomic_load(&closed_code) == 1012);
    CHECK(recv(fd, buf, sizeof(buf), 0) == 0);
    close(fd);

    /* ringws_close from on_open. */
    fd = client_upgrade(port, "/ws?bye", "", buf, sizeof(buf));
    CHECK(client_read_frame(fd, payload, &len) == 8 && len == 5 && payload[0] == 4000 >> 8 &&
          payload[1] == (4000 & 0xff) && !memcmp(payload + 2, "bye", 3));
    client_send_frame(fd, 8, "\x0f\xa0", 2);
    wait_closed_code(4000);
    CHECK(atomic_load(&closed_code) == 4000);
    close(fd);

    /* A peer that vanishes: on_close reports 1006. */
    fd = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    close(fd);
    wait_closed_code(1006);
    CHECK(atomic_load(&closed_code) == 1006);
}

/* Reads frames until a close arrives; returns its code, or -1. */
static int client_drain_to_close(int fd)
{
    uint8_t h[10], buf[4096];

    for (int frames = 0; frames < 1000; frames++) {
        uint64_t n;
        if (!client_recv_exact(fd, h, 2))
            return -1;
        n = h[1] & 0x7f;
        if (n == 126) {
            if (!client_recv_exact(fd, h + 2, 2))
                return -1;
            n = (uint64_t)h[2] << 8 | h[3];
        } else if (n == 127) {
            return -1; /* nothing that large is sent here */
        }
        if ((h[0] & 0x0f) == 8)
            return n >= 2 && client_recv_exact(fd, buf, 2) ? buf[0] << 8 | buf[1] : -1;
        while (n) {
            size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
            if (!client_recv_exact(fd, buf, k))
                return -1;
            n -= k;
        }
    }
    return -1;
}

/* A peer that stops reading while the application pushes: the overflow
 * policy decides (1008, 1013, or the message dropped). */
static void test_overflow(uint16_t port, enum ringws_overflow_policy policy)
{
    char buf[4096];
    uint8_t payload[128];
    size_t len = 0;
    int fd = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    int closes_before = atomic_load(&closes);

    atomic_store(&flood_sent, -1);
    client_send_frame(fd, 1, "flood", 5);
    for (int i = 0; i < 200 && atomic_load(&flood_sent) < 0; i++)
        usleep(10000);
    /* 256 KiB cap, 60000-byte messages: the fifth would pass it. */
    CHECKF(atomic_load(&flood_sent) == 4, "sent %d", atomic_load(&flood_sent));
    CHECK(atomic_load(&flood_ret) == -ENOBUFS);
    if (policy == RINGWS_OVERFLOW_DROP) {
        int code = 0;
        for (int i = 0; i < 4; i++) {
            uint8_t h[4], chunk[4096];
            size_t left = 60000;
            code |= !client_recv_exact(fd, h, 4) || h[1] != 126;
            while (left && !code) {
                size_t k = left < sizeof(chunk) ? left : sizeof(chunk);
                code |= !client_recv_exact(fd, chunk, k);
                left -= k;
            }
        }
        CHECK(code == 0);
        client_send_frame(fd, 1, "still here", 10);
        CHECK(client_read_frame(fd, payload, &len) == 1 && len == 10);
    } else {
        int want = policy == RINGWS_OVERFLOW_TRY_AGAIN ? 1013 : 1008;
        int got = client_drain_to_close(fd);
        CHECKF(got == want, "close code %d, want %d", got, want);
        /* on_close ran once, after on_message returned, with the code
         * the peer was sent. */
        wait_closes(closes_before + 1);
        CHECK(atomic_load(&closes) == closes_before + 1);
        CHECK(atomic_load(&closed_code) == want && !strcmp(closed_reason, "send queue full"));
    }
    close(fd);
}

static void *server_thread(void *arg)
{
    return (void *)(intptr_t)ringws_server_run(arg);
}

/* ---- a relay: connections in pairs, each forwarding to the other --------- */

/* Pairs connections in the order they open; a message on one is sent to
 * the other; when one goes, the app closes the other.  With one worker and
 * small idle timeouts, the close of a connection whose idle timer fired
 * re-arms its partner's timer in the middle of the timer wheel's walk. */
struct relay_conn {
    ringws_conn *c;
    struct relay_conn *partner;
    bool in_callback;
};

static struct relay_conn *relay_waiting;
static atomic_int relay_closes, relay_nested, relay_code_4001;

static void relay_on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    struct relay_conn *st = calloc(1, sizeof(*st));

    st->c = c;
    ringws_conn_set_user(c, st);
    if (relay_waiting) {
        st->partner = relay_waiting;
        relay_waiting->partner = st;
        relay_waiting = NULL;
    } else {
        relay_waiting = st;
    }
}

static void relay_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                             size_t len, void *user)
{
    struct relay_conn *st = ringws_conn_get_user(c);

    st->in_callback = true;
    if (st->partner)
        ringws_send(st->partner->c, op, data, len);
    st->in_callback = false;
}

static void relay_on_close(ringws_conn *c, uint16_t code, const char *reason,
                           size_t reason_len, void *user)
{
    struct relay_conn *st = ringws_conn_get_user(c);

    if (st->in_callback || (st->partner && st->partner->in_callback))
        atomic_fetch_add(&relay_nested, 1);
    if (code == 4001)
        atomic_fetch_add(&relay_code_4001, 1);
    if (st->partner) {
        st->partner->partner = NULL;
        ringws_close(st->partner->c, 4001, "partner left", 12);
    }
    if (relay_waiting == st)
        relay_waiting = NULL;
    free(st);
    atomic_fetch_add(&relay_closes, 1);
}

/* Silent pairs, opened in one tick, are pinged, then dropped for not
 * answering, each drop closing the partner from inside the timer walk;
 * meanwhile an active pair talks through the relay and is never pinged. */
static void test_relay_timers(uint16_t port)
{
    enum { SILENT = 12 };
    int silent[SILENT], a, b;
    char buf[4096];
    uint8_t payload[128];
    size_t len = 0;
    int ok = 0, rounds = 0;

    for (int i = 0; i < SILENT; i++) {
        silent[i] = client_upgrade(port, "/ws", "", buf, sizeof(buf));
        CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    }
    a = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    b = client_upgrade(port, "/ws", "", buf, sizeof(buf));
    /* Every 20 ms, a tenth of the idle timeout, until the silent ones are
     * gone (two idle timeouts and a close timeout: under a second). */
    for (; ok == 2 * rounds && rounds < 250 && atomic_load(&relay_closes) < SILENT; rounds++) {
        char ma[16], mb[16];
        int na = snprintf(ma, sizeof(ma), "a-%d", rounds);
        int nb = snprintf(mb, sizeof(mb), "b-%d", rounds);
        client_send_frame(a, 1, ma, (size_t)na);
        client_send_frame(b, 1, mb, (size_t)nb);
        /* Each reads the other's message, and nothing else: no ping. */
        ok += client_read_frame(b, payload, &len) == 1 && len == (size_t)na &&
              !memcmp(payload, ma, len);
        ok += client_read_frame(a, payload, &len) == 1 && len == (size_t)nb &&
              !memcmp(payload, mb, len);
        usleep(20000);
    }
    CHECKF(ok == 2 * rounds && rounds >= 10, "%d of %d messages relayed", ok, 2 * rounds);
    CHECKF(atomic_load(&relay_closes) == SILENT, "%d closed", atomic_load(&relay_closes));
    client_send_frame(a, 8, "\x03\xe8", 2);
    CHECK(client_read_frame(a, payload, &len) == 8 && len == 2 && payload[0] == 0x03 &&
          payload[1] == 0xe8);
    CHECK(client_read_frame(b, payload, &len) == 8 && len >= 2 &&
          (payload[0] << 8 | payload[1]) == 4001);
    client_send_frame(b, 8, payload, 2);
    for (int i = 0; i < 200 && atomic_load(&relay_closes) < SILENT + 2; i++)
        usleep(10000);
    CHECK(atomic_load(&relay_closes) == SILENT + 2);
    CHECK(atomic_load(&relay_code_4001) == 1); /* b: closed by the app, answered */
    CHECK(atomic_load(&relay_nested) == 0);
    for (int i = 0; i < SILENT; i++)
        close(silent[i]);
    close(a);
    close(b);
}

static void run_relay_server(struct ringws_config cfg)
{
    ringws_server *srv;
    pthread_t th;
    void *res;

    cfg.idle_timeout_ms = 200;
    cfg.close_timeout_ms = 200;
    cfg.cb = (struct ringws_callbacks){.on_open = relay_on_open,
                                       .on_message = relay_on_message,
                                       .on_close = relay_on_close};
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for the relay");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    test_relay_timers(ringws_server_port(srv));
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

static void run_overflow_server(struct ringws_config cfg, enum ringws_overflow_policy policy)
{
    ringws_server *srv;
    pthread_t th;
    void *res;

    cfg.overflow = policy;
    cfg.max_send_queue = 256 * 1024;
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for the overflow policy");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    test_overflow(ringws_server_port(srv), policy);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

/* The close a stop sends: 1001 "server shutting down" unless configured
 * otherwise; with a window, a hint below it ends the reason. */
static void run_stop_server(struct ringws_config cfg, uint16_t code, unsigned window_ms)
{
    ringws_server *srv;
    pthread_t th;
    void *res;
    char buf[4096], want[64], tail;
    uint8_t payload[128];
    size_t len = 0;
    unsigned ms = 0;
    int fd;

    cfg.stop_code = code;
    cfg.reconnect_window_ms = window_ms;
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for the stop close");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    fd = client_upgrade(ringws_server_port(srv), "/ws", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    ringws_server_stop(srv);
    CHECK(client_read_frame(fd, payload, &len) == 8 && len >= 2);
    payload[len] = '\0';
    CHECKF((payload[0] << 8 | payload[1]) == (code ? code : 1001), "code %u",
           payload[0] << 8 | payload[1]);
    snprintf(want, sizeof(want), "%s", code == 1012 ? "server restarting" : "server shutting down");
    if (!window_ms)
        CHECKF(!strcmp((char *)payload + 2, want), "reason %s", (char *)payload + 2);
    else
        CHECKF(sscanf((char *)payload + 2, "server restarting; retry after %u ms%c", &ms, &tail) == 1 &&
               ms < window_ms, "reason %s", (char *)payload + 2);
    client_send_frame(fd, 8, payload, 2);
    close(fd);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

/* ringws_server_disconnect_all: every WebSocket gets the stop close while
 * the server runs on and takes new connections. */
static void run_disconnect_all(struct ringws_config cfg)
{
    ringws_server *srv;
    pthread_t th;
    void *res;
    char buf[4096];
    uint8_t payload[128];
    size_t len = 0;
    int fd[2];

    cfg.stop_code = 1012;
    cfg.reconnect_window_ms = 0;
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for disconnect_all");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    for (int i = 0; i < 2; i++) {
        fd[i] = client_upgrade(ringws_server_port(srv), "/ws", "", buf, sizeof(buf));
        CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "%.40s", buf);
    }
    ringws_server_disconnect_all(srv);
    for (int i = 0; i < 2; i++) {
        CHECK(client_read_frame(fd[i], payload, &len) == 8 && len >= 2);
        payload[len] = '\0';
        CHECKF((payload[0] << 8 | payload[1]) == 1012 &&
                   !strcmp((char *)payload + 2, "server restarting"),
               "close %u %s", payload[0] << 8 | payload[1], (char *)payload + 2);
        client_send_frame(fd[i], 8, payload, 2);
        close(fd[i]);
    }
    /* still serving */
    fd[0] = client_upgrade(ringws_server_port(srv), "/ws", "", buf, sizeof(buf));
    CHECKF(!strncmp(buf, "HTTP/1.1 101 ", 13), "after disconnect_all: %.40s", buf);
    close(fd[0]);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

/* ---- tokens ------------------------------------------------------------ */

static const char token_secret[] = "0123456789abcdef0123456789abcdef-secret";
static atomic_int token_upgrades, token_claims_ok, token_opens_ok;

/* An HS256 token for sub, valid for a minute, signed with secret. */
static void make_token(char *out, const char *sub, const char *secret)
{
    char hdr[64], body[256], claims[192];
    unsigned char mac[32];
    unsigned mac_len = 0;
    size_t n;

    b64url("{\"alg\":\"HS256\"}", 15, hdr);
    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"exp\":%lld,\"topics\":[\"a\",\"b.*\"]}",
             sub, (long long)time(NULL) + 60);
    b64url(claims, strlen(claims), body);
    n = (size_t)sprintf(out, "%s.%s", hdr, body);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)out, n, mac, &mac_len);
    out[n] = '.';
    b64url(mac, mac_len, out + n + 1);
}

static bool claims_are_alices(const struct ringws_token_claims *t)
{
    return t && !strcmp(t->sub, "alice") && t->n_topics == 2 && !strcmp(t->topics[1], "b.*") &&
           t->n_publish == 0 && t->exp > time(NULL);
}

/* A library user's own rule on top of the claims: sub "blocked" is refused. */
static int token_on_upgrade(ringws_server *srv, const struct ringws_request *req,
                            const char *subprotocol, const char **location, void *user)
{
    atomic_fetch_add(&token_upgrades, 1);
    if (req->token && !strcmp(req->token->sub, "blocked"))
        return 403;
    if (claims_are_alices(req->token))
        atomic_fetch_add(&token_claims_ok, 1);
    return RINGWS_UPGRADE_ACCEPT;
}

static void token_on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    if (req->token == ringws_conn_token(c))
        atomic_fetch_add(&token_opens_ok, 1);
}

/* Answers each message with the connection's sub ("-" without a token). */
static void token_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                             size_t len, void *user)
{
    const struct ringws_token_claims *t = ringws_conn_token(c);
    const char *sub = t ? t->sub : "-";

    ringws_send(c, RINGWS_TEXT, sub, strlen(sub));
}

static void token_expect_sub(uint16_t port, const char *target, const char *want)
{
    char buf[2048];
    uint8_t payload[128];
    size_t len = 0;
    int fd = client_upgrade(port, target, "", buf, sizeof(buf));

    CHECK(strncmp(buf, "HTTP/1.1 101", 12) == 0);
    client_send_frame(fd, RINGWS_TEXT, "who", 3);
    CHECK(client_read_frame(fd, payload, &len) == RINGWS_TEXT && len == strlen(want) &&
          !memcmp(payload, want, len));
    close(fd);
}

static void test_tokens(uint16_t port, ringws_server *srv)
{
    char tok[512], target[600], buf[2048];
    struct ringws_stats st;
    int fd;

    make_token(tok, "alice", token_secret);
    snprintf(target, sizeof(target), "/ws?token=%s", tok);
    token_expect_sub(port, target, "alice");
    CHECK(atomic_load(&token_claims_ok) == 1 && atomic_load(&token_opens_ok) == 1);
    token_expect_sub(port, "/ws", "-");

    make_token(tok, "blocked", token_secret);
    snprintf(target, sizeof(target), "/ws?token=%s", tok);
    fd = client_upgrade(port, target, "", buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 403", 12) == 0);
    close(fd);

    /* Signed with another secret: refused before the application sees it. */
    make_token(tok, "alice", "another secret of at least thirty-two bytes");
    snprintf(target, sizeof(target), "/ws?token=%s", tok);
    fd = client_upgrade(port, target, "", buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 401", 12) == 0);
    close(fd);
    CHECK(atomic_load(&token_upgrades) == 3);
    ringws_server_stats(srv, &st);
    CHECK(st.auth_failures[RINGWS_AUTH_BAD_SIGNATURE] == 1);
    CHECK(st.auth_failures[RINGWS_AUTH_OK] == 0);
    CHECK(!strcmp(ringws_auth_failure_name(RINGWS_AUTH_BAD_SIGNATURE), "bad_signature"));
}

static void run_token_server(struct ringws_config cfg)
{
    char path[] = "/tmp/ringws-api-key-XXXXXX";
    struct ringws_token_key key = {.file = path};
    int kfd = mkstemp(path);
    ringws_server *srv;
    pthread_t th;
    void *res;

    CHECK(kfd >= 0 && write(kfd, token_secret, 4) == 4); /* too short for HS256 */
    cfg.token_keys = &key;
    cfg.n_token_keys = 1;
    cfg.cb = (struct ringws_callbacks){.on_upgrade = token_on_upgrade,
                                       .on_open = token_on_open,
                                       .on_message = token_on_message};
    CHECK(ringws_server_create(&cfg, &srv) == -ENOKEY);
    CHECK(pwrite(kfd, token_secret, strlen(token_secret), 0) == (ssize_t)strlen(token_secret));
    close(kfd);
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server with a token key");
        unlink(path);
        return;
    }
    unlink(path); /* read at create */
    pthread_create(&th, NULL, server_thread, srv);
    test_tokens(ringws_server_port(srv), srv);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

/* ---- permessage-deflate, opted into through ringws_config.deflate ------ */

static void deflate_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                               size_t len, void *user)
{
    ringws_send(c, op, data, len);
}

/* A 300-byte text sent compressed (as one stored deflate block, which any
 * inflater takes): echoed compressed (RSV1) when the server takes the
 * offer, refused with 1002 when it does not. */
static void test_deflate(uint16_t port, bool on)
{
    static const char answer[] = "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                                 "server_no_context_takeover; client_no_context_takeover\r\n";
    char buf[2048];
    uint8_t msg[300], stored[5 + sizeof(msg)], h[2], reply[125], back[sizeof(msg) + 1];
    size_t n = 0, got = 0;
    struct libdeflate_decompressor *d;
    int fd = client_upgrade(port, "/ws", "Sec-WebSocket-Extensions: permessage-deflate; "
                                         "client_max_window_bits\r\n", buf, sizeof(buf));

    CHECK(!strncmp(buf, "HTTP/1.1 101", 12));
    CHECK((strstr(buf, answer) != NULL) == on);
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)"your order has shipped; "[i % 24];
    stored[0] = 1; /* BFINAL, stored */
    stored[1] = (uint8_t)sizeof(msg);
    stored[2] = (uint8_t)(sizeof(msg) >> 8);
    stored[3] = (uint8_t)~stored[1];
    stored[4] = (uint8_t)~stored[2];
    memcpy(stored + 5, msg, sizeof(msg));
    client_send_frame_raw(fd, 0x80 | 0x40 | RINGWS_TEXT, stored, sizeof(stored));
    CHECK(client_recv_exact(fd, h, 2));
    if (!on) {
        n = h[1] & 0x7f;
        CHECK(h[0] == (0x80 | 8) && n >= 2 && n < 126 && client_recv_exact(fd, reply, n) &&
              (reply[0] << 8 | reply[1]) == 1002);
        close(fd);
        return;
    }
    CHECK(h[0] == (0x80 | 0x40 | RINGWS_TEXT));
    n = h[1] & 0x7f;
    CHECK(n < 126 && client_recv_exact(fd, reply, n));
    d = libdeflate_alloc_decompressor();
    CHECK(d && libdeflate_deflate_decompress(d, reply, n, back, sizeof(back), &got) ==
                   LIBDEFLATE_SUCCESS);
    CHECK(got == sizeof(msg) && !memcmp(back, msg, got));
    libdeflate_free_decompressor(d);
    close(fd);
}

static void run_deflate_server(struct ringws_config cfg, bool on)
{
    ringws_server *srv;
    pthread_t th;
    void *res;

    cfg.deflate = on;
    cfg.cb = (struct ringws_callbacks){.on_message = deflate_on_message};
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for deflate");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    test_deflate(ringws_server_port(srv), on);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
}

/* A library user's takeover path: the answer keeps context both ways (the
 * client's window bounded by the server's default 11 bits), elsewhere it
 * stays stateless; the echo comes back compressed. */
static void run_takeover_server(struct ringws_config cfg)
{
    static const char *const takeover_paths[] = {"/ws"}, *const bad_paths[] = {"ws"};
    static const char answer[] = "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                                 "client_max_window_bits=11\r\n";
    char buf[2048];
    uint8_t h[2];
    ringws_server *srv;
    pthread_t th;
    void *res;
    int fd;

    cfg.deflate = true;
    cfg.deflate_takeover_paths = takeover_paths;
    cfg.n_deflate_takeover_paths = 1;
    cfg.cb = (struct ringws_callbacks){.on_message = deflate_on_message};
    if (ringws_server_create(&cfg, &srv) != 0) {
        CHECK(!"server for takeover");
        return;
    }
    pthread_create(&th, NULL, server_thread, srv);
    fd = client_upgrade(ringws_server_port(srv), "/ws",
                        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                        buf, sizeof(buf));
    CHECK(!strncmp(buf, "HTTP/1.1 101", 12) && strstr(buf, answer));
    client_send_frame_raw(fd, 0x80 | RINGWS_TEXT, (const uint8_t *)long_value, 200);
    CHECK(client_recv_exact(fd, h, 2) && h[0] == (0x80 | 0x40 | RINGWS_TEXT));
    close(fd);
    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
    cfg.deflate_takeover_window_bits = 8; /* no raw zlib window of 8 bits */
    CHECK(ringws_server_create(&cfg, &srv) == -EINVAL);
    cfg.deflate_takeover_window_bits = 11;
    cfg.deflate_takeover_paths = bad_paths; /* a path starts with '/' */
    CHECK(ringws_server_create(&cfg, &srv) == -EINVAL);
}

int main(void)
{
    struct ringws_config cfg;
    ringws_server *srv;
    pthread_t th;
    void *res;

    alarm(60); /* a worker that stops answering fails the test, not hangs it */
    memset(long_value, 'p', sizeof(long_value) - 1);
    memset(too_long_location, 'p', sizeof(too_long_location) - 1);
    memset(too_long_type, 'p', sizeof(too_long_type) - 1);
    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = 1;
    cfg.ws_paths = ws_paths;
    cfg.n_ws_paths = 1;
    cfg.subprotocols = protocols;
    cfg.n_subprotocols = 2;
    cfg.cb = (struct ringws_callbacks){.on_http = on_http, .on_upgrade = on_upgrade,
                                       .on_open = on_open, .on_message = on_message,
                                       .on_close = on_close};
    CHECK(ringws_server_create(&cfg, &srv) == 0);
    CHECK(ringws_server_port(srv) != 0);
    pthread_create(&th, NULL, server_thread, srv);

    test_http(ringws_server_port(srv));
    test_app_headers(ringws_server_port(srv));
    test_upgrade_decisions(ringws_server_port(srv));
    test_messages_and_close(ringws_server_port(srv));
    test_callback_lifetimes(ringws_server_port(srv));

    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);

    CHECK(!cfg.deflate); /* a library user opts in */
    run_deflate_server(cfg, false);
    run_deflate_server(cfg, true);
    run_takeover_server(cfg);
    run_overflow_server(cfg, RINGWS_OVERFLOW_CLOSE);
    run_overflow_server(cfg, RINGWS_OVERFLOW_TRY_AGAIN);
    run_overflow_server(cfg, RINGWS_OVERFLOW_DROP);
    run_relay_server(cfg);
    run_stop_server(cfg, 0, 0);
    run_stop_server(cfg, 1012, 0);
    run_stop_server(cfg, 1012, 1500);
    run_disconnect_all(cfg);
    run_token_server(cfg);

    /* Every open connection was reported closed once, never from inside
     * another callback of its own. */
    CHECK(atomic_load(&closes) == atomic_load(&opened));
    CHECK(atomic_load(&nested_closes) == 0);

    cfg.stop_code = 1000; /* a stop close is 1001 or 1012 */
    CHECK(ringws_server_create(&cfg, &srv) == -EINVAL);
    cfg.stop_code = 0;
    cfg.max_message = 0; /* invalid config is refused, nothing leaks */
    CHECK(ringws_server_create(&cfg, &srv) == -EINVAL);
    return check_done("api");
}
