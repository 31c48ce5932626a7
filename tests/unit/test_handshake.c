/* test_handshake.c - unit tests for RFC 6455 opening-handshake validation.
 *
 * Requests come from the real parser (each copied to the very end of a page
 * followed by a PROT_NONE page, so no over-read goes unnoticed), except the
 * few that the parser itself refuses, which are built by hand to reach the
 * handshake's own checks. */
#include "handshake.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static struct http_header hdrs[64];
static struct http_request req;
static struct ws_handshake_result res;

/* Readable pages ending right before an inaccessible one. */
static char *guard_map;
static size_t guard_room, guard_page;

static void guard_open(size_t room)
{
    guard_page = (size_t)sysconf(_SC_PAGESIZE);
    guard_room = (room + guard_page - 1) / guard_page * guard_page;
    guard_map = mmap(NULL, guard_room + guard_page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_map == MAP_FAILED ||
        mprotect(guard_map + guard_room, guard_page, PROT_NONE) != 0) {
        perror("guard_open");
        exit(1);
    }
}

/* Copies s so that its last byte is the last readable one. */
static const char *guard_put(const char *s, size_t n)
{
    if (n > guard_room) {
        fprintf(stderr, "guard_put: %zu bytes do not fit\n", n);
        exit(1);
    }
    return memcpy(guard_map + guard_room - n, s, n);
}

/* Parses "GET /chat HTTP/1.1\r\n" + extra header lines + CRLF; `line` is
 * the request line to use instead when not NULL. */
static bool parse_with(const char *line, const char *fields)
{
    static char text[4096];
    struct http_limits lim;

    http_limits_default(&lim);
    int n = snprintf(text, sizeof text, "%s\r\n%s\r\n", line ? line : "GET /chat HTTP/1.1",
                     fields);
    int rc = http_parse_request(guard_put(text, (size_t)n), (size_t)n, 0, &lim, &req, hdrs);
    if (rc != n)
        fprintf(stderr, "parse failed (%d): %s\n%s", rc,
                req.error_reason ? req.error_reason : "incomplete", text);
    return rc == n;
}

#define BASE_HOST "Host: server.example.com\r\n"
#define BASE_UPGRADE "Upgrade: websocket\r\nConnection: Upgrade\r\n"
#define BASE_KEY "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define BASE_VERSION "Sec-WebSocket-Version: 13\r\n"
#define BASE BASE_HOST BASE_UPGRADE BASE_KEY BASE_VERSION

static const struct ws_handshake_policy no_policy = { 0 };

static int validate(const char *line, const char *fields, const struct ws_handshake_policy *pol)
{
    if (!parse_with(line, fields))
        return -1;
    return ws_handshake_validate(&req, pol, &res);
}

static void check_fail(const char *line, const char *fields,
                       const struct ws_handshake_policy *pol, int status, const char *reason,
                       bool hint, int at)
{
    int rc = validate(line, fields, pol);
    CHECKF(rc == status && res.status == status && res.reason &&
               strcmp(res.reason, reason) == 0 && res.version_hint == hint &&
               res.subprotocol == NULL && res.accept[0] == '\0',
           "line %d: status %d reason \"%s\" hint %d, want %d \"%s\" %d", at, rc,
           res.reason ? res.reason : "-", res.version_hint, status, reason, hint);
}

#define FAIL(fields, status, reason) check_fail(NULL, fields, &no_policy, status, reason, false, __LINE__)

static void test_accept_key(void)
{
    char out[WS_ACCEPT_LEN + 1];

    memset(out, 'x', sizeof out);
    CHECK(ws_handshake_accept_key(RFC_KEY, strlen(RFC_KEY), out) == 0);
    CHECK(strcmp(out, RFC_ACCEPT) == 0);
    CHECK(ws_handshake_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", 24, out) == 0);
    CHECK(strcmp(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0);
    /* Only key_len bytes are hashed. */
    CHECK(ws_handshake_accept_key(RFC_KEY "trailing", strlen(RFC_KEY), out) == 0);
    CHECK(strcmp(out, RFC_ACCEPT) == 0);
    CHECK(ws_handshake_self_test() == 0);
}

static void test_success(void)
{
    CHECK(validate(NULL, BASE, &no_policy) == 101);
    CHECK(res.status == 101 && res.reason == NULL && !res.version_hint);
    CHECK(strcmp(res.accept, RFC_ACCEPT) == 0);
    CHECK(res.subprotocol == NULL);
    CHECK(ws_handshake_validate(&req, NULL, &res) == 101);

    /* Tokens are case-insensitive and may sit in lists and repeated fields. */
    CHECK(validate(NULL, BASE_HOST "Upgrade: h2c, WebSocket\r\nConnection: keep-alive, upgrade\r\n"
                   BASE_KEY BASE_VERSION, &no_policy) == 101);
    CHECK(validate(NULL, BASE_HOST "UPGRADE: WEBSOCKET\r\nconnection: keep-alive\r\n"
                   "Connection: UPGRADE\r\n" BASE_KEY BASE_VERSION, &no_policy) == 101);
    CHECK(validate(NULL, BASE "Content-Length: 0\r\n", &no_policy) == 101);
    CHECK(validate("GET /chat HTTP/1.9", BASE, &no_policy) == 101);
    CHECK(validate(NULL, BASE_HOST BASE_UPGRADE "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
                   BASE_VERSION, &no_policy) == 101);
    CHECK(strcmp(res.accept, "C/0nmHhBztSRGR1CwL6Tf4ZjwpY=") == 0);
}

static void test_requested(void)
{
    CHECK(parse_with(NULL, BASE) && ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST "Upgrade: h2c, WebSocket\r\n") && ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST "Upgrade: h2c\r\nUpgrade: websocket\r\n") &&
          ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST "Upgrade: h2c\r\n") && !ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST "Upgrade: websockets\r\n") && !ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST "Connection: websocket\r\n") && !ws_handshake_requested(&req));
    CHECK(parse_with(NULL, BASE_HOST) && !ws_handshake_requested(&req));
}

/* A request the parser would refuse, to reach the handshake's own check. */
static void build(const char *method, uint8_t minor, const char *const *fields, size_t n)
{
    req = (struct http_request){ .method = method, .method_len = (uint32_t)strlen(method),
                                 .version_minor = minor, .headers = hdrs,
                                 .n_headers = (uint16_t)n };
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(fields[i], ':');
        hdrs[i] = (struct http_header){ .name = fields[i],
                                        .name_len = (uint32_t)(colon - fields[i]),
                                        .value = colon + 2,
                                        .value_len = (uint32_t)strlen(colon + 2) };
    }
}

static void test_request_checks(void)
{
    check_fail("POST /chat HTTP/1.1", BASE, &no_policy, 405, "WebSocket upgrade needs GET", false,
               __LINE__);
    check_fail("get /chat HTTP/1.1", BASE, &no_policy, 405, "WebSocket upgrade needs GET", false,
               __LINE__);
    check_fail("GETS /chat HTTP/1.1", BASE, &no_policy, 405, "WebSocket upgrade needs GET", false,
               __LINE__);
    check_fail("GET /chat HTTP/1.0", BASE, &no_policy, 400, "WebSocket upgrade needs HTTP/1.1",
               false, __LINE__);
    check_fail("GET /chat HTTP/1.0", BASE_UPGRADE BASE_KEY BASE_VERSION, &no_policy, 400,
               "WebSocket upgrade needs HTTP/1.1", false, __LINE__);
    /* The method is judged first. */
    check_fail("PUT /chat HTTP/1.0", "Upgrade: websocket\r\n", &no_policy, 405,
               "WebSocket upgrade needs GET", false, __LINE__);

    static const char *const no_host[] = {
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    };
    build("GET", 1, no_host, 4);
    CHECK(ws_handshake_validate(&req, &no_policy, &res) == 400 &&
          strcmp(res.reason, "missing Host") == 0);
    static const char *const two_hosts[] = {
        "Host: a", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13", "host: b",
    };
    build("GET", 1, two_hosts, 6);
    CHECK(ws_handshake_validate(&req, &no_policy, &res) == 400 &&
          strcmp(res.reason, "duplicate Host") == 0);
    build("GET", 1, two_hosts, 5);
    CHECK(ws_handshake_validate(&req, &no_policy, &res) == 101);

    FAIL(BASE_HOST "Connection: Upgrade\r\n" BASE_KEY BASE_VERSION, 400,
         "Upgrade must list websocket");
    FAIL(BASE_HOST "Upgrade: h2c\r\nConnection: Upgrade\r\n" BASE_KEY BASE_VERSION, 400,
         "Upgrade must list websocket");
    FAIL(BASE_HOST "Upgrade: websocket2\r\nConnection: Upgrade\r\n" BASE_KEY BASE_VERSION, 400,
         "Upgrade must list websocket");
    FAIL(BASE_HOST "Upgrade: websocket\r\n" BASE_KEY BASE_VERSION, 400,
         "Connection must list Upgrade");
    FAIL(BASE_HOST "Upgrade: websocket\r\nConnection: keep-alive\r\n" BASE_KEY BASE_VERSION, 400,
         "Connection must list Upgrade");
    FAIL(BASE_HOST "Upgrade: websocket\r\nConnection: upgrades\r\n" BASE_KEY BASE_VERSION, 400,
         "Connection must list Upgrade");
    /* Order: Upgrade before Connection before the key. */
    FAIL(BASE_HOST, 400, "Upgrade must list websocket");
    FAIL(BASE_HOST "Upgrade: websocket\r\n", 400, "Connection must list Upgrade");
}

static void test_key(void)
{
    static const char *const bad_keys[] = {
        "dGhlIHNhbXBsZSBub25jZQ",       /* no padding */
        "dGhlIHNhbXBsZSBub25jZQ=",      /* short padding */
        "dGhlIHNhbXBsZSBub25jZQ===",    /* 25 characters */
        "dGhlIHNhbXBsZSBub25jZR==",     /* nonzero padding bits */
        "dGhlIHNhbXBsZSBub25jZ$==",     /* not base64 */
        "dGhlIHNhbXBs ZSBub25jZQ==",    /* inner space */
        "dGhlIHNhbXBsZSBub25jZQ=A",     /* padding misplaced */
        "dGhlIHNhbXBsZSBub25j=Q==",     /* padding inside */
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==", /* 32 bytes */
        "YWJjZGVmZ2hpamtsbW5vcHFy",     /* 18 bytes, no padding */
        "",
    };
    char fields[512];

    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        snprintf(fields, sizeof fields, BASE_HOST BASE_UPGRADE "Sec-WebSocket-Key: %s\r\n" BASE_VERSION,
                 bad_keys[i]);
        int rc = validate(NULL, fields, &no_policy);
        CHECKF(rc == 400 && strcmp(res.reason, "invalid Sec-WebSocket-Key") == 0,
               "key \"%s\": %d %s", bad_keys[i], rc, res.reason ? res.reason : "-");
    }
    FAIL(BASE_HOST BASE_UPGRADE BASE_VERSION, 400, "missing Sec-WebSocket-Key");
    FAIL(BASE_HOST BASE_UPGRADE BASE_KEY BASE_KEY BASE_VERSION, 400, "duplicate Sec-WebSocket-Key");
    FAIL(BASE_HOST BASE_UPGRADE BASE_KEY "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
         BASE_VERSION, 400, "duplicate Sec-WebSocket-Key");
    /* Surrounding whitespace is the parser's to trim, not an error. */
    CHECK(validate(NULL, BASE_HOST BASE_UPGRADE "Sec-WebSocket-Key: \t" RFC_KEY " \r\n" BASE_VERSION,
                   &no_policy) == 101);
    CHECK(strcmp(res.accept, RFC_ACCEPT) == 0);
}

static void test_version(void)
{
    FAIL(BASE_HOST BASE_UPGRADE BASE_KEY, 400, "missing Sec-WebSocket-Version");
    static const char *const versions[] = {
        "8", "12", "14", "013", "13, 8", "8, 13", "13.0", "", "thirteen",
    };
    char fields[512];

    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        snprintf(fields, sizeof fields, BASE_HOST BASE_UPGRADE BASE_KEY
                 "Sec-WebSocket-Version: %s\r\n", versions[i]);
        check_fail(NULL, fields, &no_policy, 426, "unsupported Sec-WebSocket-Version", true,
                   __LINE__);
    }
    check_fail(NULL, BASE BASE_VERSION, &no_policy, 426, "unsupported Sec-WebSocket-Version", true,
               __LINE__);
    CHECK(validate(NULL, BASE_HOST BASE_UPGRADE BASE_KEY "sec-websocket-version:13 \r\n",
                   &no_policy) == 101 && !res.version_hint);
    /* The key is judged before the version. */
    FAIL(BASE_HOST BASE_UPGRADE "Sec-WebSocket-Version: 8\r\n", 400, "missing Sec-WebSocket-Key");
}

static void test_origin(void)
{
    static const char *const origins[] = { "https://app.example.com", "http://localhost:8080" };
    const struct ws_handshake_policy pol = { .origins = origins, .n_origins = 2 };

    CHECK(validate(NULL, BASE "Origin: https://app.example.com\r\n", &pol) == 101);
    CHECK(validate(NULL, BASE "Origin: HTTPS://App.Example.COM\r\n", &pol) == 101);
    CHECK(validate(NULL, BASE "Origin: http://localhost:8080\r\n", &pol) == 101);
    check_fail(NULL, BASE, &pol, 403, "missing Origin", false, __LINE__);
    check_fail(NULL, BASE "Origin: https://evil.example.com\r\n", &pol, 403, "Origin not allowed",
               false, __LINE__);
    check_fail(NULL, BASE "Origin: https://app.example.com.evil\r\n", &pol, 403,
               "Origin not allowed", false, __LINE__);
    check_fail(NULL, BASE "Origin: https://app.example.co\r\n", &pol, 403, "Origin not allowed",
               false, __LINE__);
    check_fail(NULL, BASE "Origin: https://app.example.com/\r\n", &pol, 403, "Origin not allowed",
               false, __LINE__);
    check_fail(NULL, BASE "Origin: http://localhost\r\n", &pol, 403, "Origin not allowed", false,
               __LINE__);
    check_fail(NULL, BASE "Origin: null\r\n", &pol, 403, "Origin not allowed", false, __LINE__);
    check_fail(NULL, BASE "Origin: https://app.example.com\r\nOrigin: https://app.example.com\r\n",
               &pol, 403, "duplicate Origin", false, __LINE__);
    /* No list: any Origin, or none. */
    CHECK(validate(NULL, BASE "Origin: https://evil.example.com\r\n", &no_policy) == 101);
    CHECK(validate(NULL, BASE, &no_policy) == 101);
    /* The version is judged before the origin. */
    check_fail(NULL, BASE_HOST BASE_UPGRADE BASE_KEY "Sec-WebSocket-Version: 8\r\n", &pol, 426,
               "unsupported Sec-WebSocket-Version", true, __LINE__);
}

static void test_body(void)
{
    FAIL(BASE "Content-Length: 5\r\n", 400, "request body not allowed");
    FAIL(BASE "Transfer-Encoding: chunked\r\n", 400, "request body not allowed");
    CHECK(validate(NULL, BASE "Content-Length: 0\r\n", &no_policy) == 101);
}

static const char *choose(const char *offers, const char *const *server, size_t n)
{
    const struct ws_handshake_policy pol = { .subprotocols = server, .n_subprotocols = n };

    if (validate(NULL, offers, &pol) != 101)
        return "(failed)";
    return res.subprotocol;
}

static bool chose(const char *got, const char *want)
{
    return want ? got && strcmp(got, want) == 0 : got == NULL;
}

static void test_subprotocol(void)
{
    static const char *const server[] = { "superchat", "chat", "v2.json" };
    const size_t n = 3;

    /* The client's first offer that the server supports, not the server's. */
    const char *got = choose(BASE "Sec-WebSocket-Protocol: chat, superchat\r\n", server, n);
    CHECK(chose(got, "chat") && got == server[1]);
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: superchat, chat\r\n", server, n), "superchat"));
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: mqtt, v2.json ,chat\r\n", server, n),
                "v2.json"));
    /* Repeated fields concatenate in order. */
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Protocol: x, chat\r\n"
                       "sec-websocket-protocol: superchat\r\n", server, n), "chat"));
    /* Nothing in common, or nothing offered: no subprotocol, still 101. */
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: mqtt, wamp\r\n", server, n), NULL));
    CHECK(chose(choose(BASE, server, n), NULL));
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol:\r\n", server, n), NULL));
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: , ,\r\n", server, n), NULL));
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: chat\r\n", NULL, 0), NULL));
    /* Names are compared exactly. */
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: Chat, CHAT\r\n", server, n), NULL));
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: cha, chats, superchat\r\n", server, n),
                "superchat"));
    static const char *const with_empty[] = { "", "chat" };
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: ,chat\r\n", with_empty, 2), "chat"));
}

static void test_write_101(void)
{
    static const char plain[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                                "\r\n";
    static const char with_proto[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                     "Upgrade: websocket\r\n"
                                     "Connection: Upgrade\r\n"
                                     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                                     "Sec-WebSocket-Protocol: chat\r\n"
                                     "\r\n";
    char out[512];

    CHECK(validate(NULL, BASE, &no_policy) == 101);
    size_t n = ws_handshake_write_101(out, sizeof out, &res);
    CHECK(n == sizeof plain - 1 && memcmp(out, plain, n) == 0);
    CHECK(ws_handshake_write_101(out, sizeof plain - 1, &res) == sizeof plain - 1);
    CHECK(ws_handshake_write_101(out, sizeof plain - 2, &res) == 0);
    CHECK(ws_handshake_write_101(out, 10, &res) == 0);
    CHECK(ws_handshake_write_101(NULL, 0, &res) == 0);

    static const char *const server[] = { "chat" };
    CHECK(chose(choose(BASE "Sec-WebSocket-Protocol: chat\r\n", server, 1), "chat"));
    n = ws_handshake_write_101(out, sizeof out, &res);
    CHECK(n == sizeof with_proto - 1 && memcmp(out, with_proto, n) == 0);
    CHECK(ws_handshake_write_101(out, sizeof with_proto - 2, &res) == 0);

    /* A failed result never becomes a 101. */
    CHECK(validate(NULL, BASE_HOST BASE_UPGRADE BASE_KEY, &no_policy) == 400);
    CHECK(ws_handshake_write_101(out, sizeof out, &res) == 0);
}

/* Negotiation: exactly one accepted offer or none, answered stateless both
 * ways; a malformed field anywhere is 400. */
static void test_extensions(void)
{
    static const struct ws_handshake_policy pmd = { .deflate = true };
    static const char answer[] = "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "server_no_context_takeover; client_no_context_takeover\r\n";
    char out[512];
    size_t n;

    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                   "client_max_window_bits\r\n", &pmd) == 101 && res.deflate);
    n = ws_handshake_write_101(out, sizeof out, &res);
    CHECK(n > sizeof answer && memcmp(out + n - 2 - (sizeof answer - 1), answer,
                                      sizeof answer - 1) == 0);
    CHECK(strstr(out, answer) == strstr(out, "Sec-WebSocket-Extensions"));
    /* Not offered, or the server does not take it: no extension. */
    CHECK(validate(NULL, BASE, &pmd) == 101 && !res.deflate);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n", &no_policy) ==
              101 && !res.deflate);
    n = ws_handshake_write_101(out, sizeof out, &res);
    CHECK(n && !memmem(out, n, "Extensions", 10));
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: x-foo\r\n", &pmd) == 101 && !res.deflate);
    /* Offers the server cannot honour are skipped for a later one. */
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                   "server_max_window_bits=10\r\n", &pmd) == 101 && !res.deflate);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate; "
                   "server_max_window_bits=10, permessage-deflate; bogus, "
                   "permessage-deflate; server_max_window_bits=15\r\n", &pmd) == 101 &&
          res.deflate);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate; x\r\n"
                   "Sec-WebSocket-Extensions: permessage-deflate\r\n", &pmd) == 101 && res.deflate);
    /* Malformed: refused whole, wherever it is; without deflate it is not read. */
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate;\r\n", &pmd) == 400);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                   "Sec-WebSocket-Extensions: foo bar\r\n", &pmd) == 400);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: \r\n", &pmd) == 400);
    CHECK(validate(NULL, BASE "Sec-WebSocket-Extensions: foo bar\r\n", &no_policy) == 101);
}

int main(void)
{
    guard_open(8192);

    test_accept_key();
    test_success();
    test_requested();
    test_request_checks();
    test_key();
    test_version();
    test_origin();
    test_body();
    test_subprotocol();
    test_write_101();
    test_extensions();

    munmap(guard_map, guard_room + guard_page);
    return check_done("handshake");
}
