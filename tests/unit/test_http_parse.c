/* test_http_parse.c - unit tests for the request-head parser.
 *
 * Every parse runs on bytes copied to the very end of a readable page that is
 * followed by a PROT_NONE page, so a read past the input crashes the test
 * instead of passing by luck.  Each input is also fed one byte at a time,
 * once from scratch at every length and once with prev_len as a server
 * would, and the two must agree on every verdict that matters. */
#include "http_parse.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define S(lit) lit, sizeof(lit) - 1 /* a literal with its length, NULs included */
#define HDR_CAP 256

static struct http_header hdrs[HDR_CAP];
static struct http_request req;
static struct http_limits def;

/* Readable pages ending right before an inaccessible one. */
struct guard {
    char *map;
    size_t room; /* readable bytes before the PROT_NONE page */
    size_t page;
};

static struct guard guard;

static void guard_open(struct guard *g, size_t room)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->room = (room + g->page - 1) / g->page * g->page;
    g->map = mmap(NULL, g->room + g->page, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED || mprotect(g->map + g->room, g->page, PROT_NONE) != 0) {
        perror("guard_open");
        exit(1);
    }
}

static void guard_close(struct guard *g)
{
    munmap(g->map, g->room + g->page);
}

/* Copies s so that its last byte is the last readable one. */
static const char *guard_put(struct guard *g, const char *s, size_t n)
{
    if (n > g->room) {
        fprintf(stderr, "guard_put: %zu bytes do not fit\n", n);
        exit(1);
    }
    char *dst = g->map + g->room - n;
    memmove(dst, s, n);
    return dst;
}

static int parse_lim(const char *s, size_t n, const struct http_limits *lim)
{
    return http_parse_request(guard_put(&guard, s, n), n, 0, lim, &req, hdrs);
}

static int parse(const char *s, size_t n)
{
    return parse_lim(s, n, &def);
}

static int parse_str(const char *s)
{
    return parse(s, strlen(s));
}

/* The first verdict other than INCOMPLETE when s arrives a byte at a time. */
struct outcome {
    int rc;
    enum http_error err;
    uint32_t offset;
    const char *reason;
    size_t at; /* bytes given to the call that returned rc */
};

static struct outcome feed(const char *s, size_t n, const struct http_limits *lim,
                           bool use_prev)
{
    struct outcome o = { .rc = HTTP_PARSE_INCOMPLETE, .at = n };
    size_t prev = 0;

    for (size_t k = 1; k <= n; k++) {
        int rc = http_parse_request(guard_put(&guard, s, k), k, use_prev ? prev : 0,
                                    lim, &req, hdrs);
        if (rc != HTTP_PARSE_INCOMPLETE) {
            o = (struct outcome){ rc, req.error, req.error_offset, req.error_reason, k };
            break;
        }
        prev = k;
    }
    return o;
}

static bool slice_is(const char *p, uint32_t n, const char *text)
{
    return p && strlen(text) == n && memcmp(p, text, n) == 0;
}

static const char *header_value(const char *name)
{
    static char v[256];
    int i = http_header_find(&req, name, 0);

    if (i < 0)
        return NULL;
    snprintf(v, sizeof v, "%.*s", (int)req.headers[i].value_len, req.headers[i].value);
    return v;
}

/* A complete head of n bytes: INCOMPLETE for every shorter prefix, both ways
 * of feeding complete exactly at its last byte. */
static void check_ok_lim(const char *s, size_t n, const struct http_limits *lim, int line)
{
    struct outcome slow = feed(s, n, lim, false);
    struct outcome quick = feed(s, n, lim, true);
    int rc = parse_lim(s, n, lim);

    CHECKF(rc == (int)n && req.head_len == n, "line %d: rc %d (%s at %u)", line, rc,
           req.error_reason ? req.error_reason : "-", req.error_offset);
    CHECKF(slow.rc == (int)n && slow.at == n, "line %d: byte-wise rc %d at %zu (%s)", line,
           slow.rc, slow.at, slow.reason ? slow.reason : "-");
    CHECKF(quick.rc == (int)n && quick.at == n, "line %d: prev_len rc %d at %zu (%s)", line,
           quick.rc, quick.at, quick.reason ? quick.reason : "-");
}

#define CHECK_OK(lit) check_ok_lim(S(lit), &def, __LINE__)
#define CHECK_OK_N(s, n, lim) check_ok_lim(s, n, lim, __LINE__)

static bool is_limit(enum http_error e)
{
    return e == HTTP_ERR_URI_TOO_LONG || e == HTTP_ERR_HEADERS_TOO_LARGE;
}

/* A head that must fail with err/reason at `offset` (-1: any).  No prefix
 * that ends before the offending byte may fail; fed with prev_len, the same
 * error comes, for limits at exactly the same byte. */
static void check_err_lim(const char *s, size_t n, const struct http_limits *lim,
                          enum http_error err, const char *reason, long offset, int line)
{
    struct outcome slow = feed(s, n, lim, false);
    struct outcome quick = feed(s, n, lim, true);
    int rc = parse_lim(s, n, lim);

    CHECKF(rc == HTTP_PARSE_ERROR && req.error == err && req.error_reason &&
               strcmp(req.error_reason, reason) == 0 &&
               (offset < 0 || req.error_offset == (uint32_t)offset),
           "line %d: rc %d err %d reason \"%s\" at %u, want %d \"%s\" at %ld", line, rc,
           req.error, req.error_reason ? req.error_reason : "-", req.error_offset, err,
           reason, offset);
    CHECKF(slow.rc == HTTP_PARSE_ERROR && slow.err == req.error &&
               slow.offset == req.error_offset && slow.reason == req.error_reason &&
               slow.at > slow.offset,
           "line %d: byte-wise rc %d \"%s\" at %u after %zu", line, slow.rc,
           slow.reason ? slow.reason : "-", slow.offset, slow.at);
    CHECKF(quick.rc == HTTP_PARSE_ERROR && quick.err == req.error &&
               quick.offset == req.error_offset && quick.reason == req.error_reason &&
               quick.at >= slow.at && (!is_limit(err) || quick.at == slow.at),
           "line %d: prev_len rc %d \"%s\" at %u after %zu (byte-wise after %zu)", line,
           quick.rc, quick.reason ? quick.reason : "-", quick.offset, quick.at, slow.at);
}

#define CHECK_ERR(lit, err, reason, off) check_err_lim(S(lit), &def, err, reason, off, __LINE__)
#define BAD HTTP_ERR_BAD_REQUEST

static void test_simple_get(void)
{
    const char *s = "GET /chat HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n";
    int rc = parse_str(s);

    CHECK(rc == (int)strlen(s));
    CHECK(slice_is(req.method, req.method_len, "GET"));
    CHECK(slice_is(req.target, req.target_len, "/chat"));
    CHECK(slice_is(req.path, req.path_len, "/chat"));
    CHECK(req.query == NULL && req.query_len == 0);
    CHECK(req.version_minor == 1);
    CHECK(req.keep_alive);
    CHECK(!req.has_body_length && !req.chunked && req.content_length == 0);
    CHECK(req.headers == hdrs && req.n_headers == 2);
    CHECK(slice_is(hdrs[0].name, hdrs[0].name_len, "Host"));
    CHECK(slice_is(hdrs[0].value, hdrs[0].value_len, "example.com"));
    CHECK(slice_is(hdrs[1].name, hdrs[1].name_len, "X-A"));
    CHECK(req.error == HTTP_ERR_NONE && req.error_reason == NULL);
    CHECK_OK("GET /chat HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_OK("M / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_OK("X-CUSTOM!#$%&'*+-.^_`|~9 / HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_target_forms(void)
{
    CHECK(parse_str("GET /a/b?x=1&y=%20?z HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "/a/b"));
    CHECK(slice_is(req.query, req.query_len, "x=1&y=%20?z"));
    CHECK(slice_is(req.target, req.target_len, "/a/b?x=1&y=%20?z"));

    CHECK(parse_str("GET /? HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "/") && req.query && req.query_len == 0);

    CHECK(parse_str("GET //x/../y HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "//x/../y"));

    CHECK(parse_str("GET http://example.com/a/b?q HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK(slice_is(req.target, req.target_len, "http://example.com/a/b?q"));
    CHECK(slice_is(req.path, req.path_len, "/a/b"));
    CHECK(slice_is(req.query, req.query_len, "q"));

    CHECK(parse_str("GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "/") && req.query == NULL);

    CHECK(parse_str("GET http://example.com?a=b HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "/"));
    CHECK(slice_is(req.query, req.query_len, "a=b"));

    CHECK(parse_str("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(slice_is(req.path, req.path_len, "*") && req.query == NULL);
    CHECK_OK("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_OK("GET http://[::1]:80/x HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_OK("OPTIONS /a HTTP/1.1\r\nHost: h\r\n\r\n");

    CHECK_ERR("GET * HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "asterisk-form needs OPTIONS", 4);
    CHECK_ERR("options * HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "asterisk-form needs OPTIONS", 8);
    CHECK_ERR("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed request-target", 8);
    CHECK_ERR("OPTIONS ** HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed request-target", 8);
    CHECK_ERR("CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "malformed request-target", 8);
    CHECK_ERR("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed request-target", 4);
    CHECK_ERR("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed request-target", 4);
    CHECK_ERR("GET http:/h/ HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed request-target", 4);
    CHECK_ERR("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "empty host in request-target", 11);
    CHECK_ERR("GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "empty host in request-target", 11);
    CHECK_ERR("GET https://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "userinfo in request-target", 15);
    CHECK_ERR("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "invalid character in request-target", 6);
    CHECK_ERR("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "invalid character in request-target", 8);
    CHECK_ERR("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "invalid character in request-target", 5);
    CHECK_ERR("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", BAD,
              "invalid character in request-target", 5);
    check_err_lim(S("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n"), &def, BAD, "NUL in request line", 5,
                  __LINE__);
    CHECK_ERR("GET /a\nHost: h\r\n\r\n", BAD, "bare LF in request line", 6);
}

static void test_request_line_errors(void)
{
    CHECK_ERR(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "missing method", 0);
    CHECK_ERR("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "missing request-target", 4);
    CHECK_ERR("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 6);
    CHECK_ERR("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 14);
    CHECK_ERR("GET / HTTP/1.1x\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 14);
    CHECK_ERR("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "invalid character in method", 2);
    CHECK_ERR("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "invalid character in method", 3);
    CHECK_ERR("G\xc3\x89T / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "invalid character in method", 1);
    CHECK_ERR("GET\r\nHost: h\r\n\r\n", BAD, "malformed request line", 3);
    CHECK_ERR("GET\nHost: h\r\n\r\n", BAD, "bare LF in request line", 3);
    CHECK_ERR("GET /\r\nHost: h\r\n\r\n", BAD, "missing HTTP version", 5);
    CHECK_ERR("GET / \r\nHost: h\r\n\r\n", BAD, "malformed request line", 6);
    CHECK_ERR("GET / HTTP/1.1\rHost: h\r\n\r\n", BAD, "bare CR in request line", 14);
    CHECK_ERR("GET / HTTP/1.1\nHost: h\r\n\r\n", BAD, "bare LF in request line", 14);
    check_err_lim(S("GET / HTTP/1.1\0\r\nHost: h\r\n\r\n"), &def, BAD, "NUL in request line",
                  14, __LINE__);
    check_err_lim(S("\0GET / HTTP/1.1\r\nHost: h\r\n\r\n"), &def, BAD, "NUL in request line",
                  0, __LINE__);
}

static void test_versions(void)
{
    CHECK(parse_str("GET / HTTP/1.0\r\n\r\n") > 0 && req.version_minor == 0);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && req.version_minor == 1);
    CHECK(parse_str("GET / HTTP/1.9\r\nHost: h\r\n\r\n") > 0 && req.version_minor == 9);
    CHECK_ERR("GET / HTTP/1.9\r\n\r\n", BAD, "missing Host", 16);

    CHECK_ERR("GET / HTTP/2.0\r\nHost: h\r\n\r\n", HTTP_ERR_VERSION, "unsupported HTTP version", 6);
    CHECK_ERR("GET / HTTP/0.9\r\nHost: h\r\n\r\n", HTTP_ERR_VERSION, "unsupported HTTP version", 6);
    CHECK_ERR("GET / HTTP/3.0\r\n\r\n", HTTP_ERR_VERSION, "unsupported HTTP version", 6);
    CHECK_ERR("GET / HTTP/1.10\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 14);
    CHECK_ERR("GET / HTTP/11.1\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 12);
    CHECK_ERR("GET / HTTP/1.x\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 13);
    CHECK_ERR("GET / HTTP/1\r\nHost: h\r\n\r\n", BAD, "malformed request line", 12);
    CHECK_ERR("GET / http/1.1\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 6);
    CHECK_ERR("GET / HTTPS/1.1\r\nHost: h\r\n\r\n", BAD, "malformed HTTP version", 10);
    CHECK_ERR("GET / HTTP/2\r\nHost: h\r\n\r\n", BAD, "malformed request line", 12);

    /* 505 needs a well-formed line: its prefix is no error yet. */
    CHECK(parse_str("GET / HTTP/2.0") == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_str("GET / HTTP/2.0\r") == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_str("GET / HTTP/2.0\r\n") == HTTP_PARSE_ERROR);
}

static void test_leading_empty_lines(void)
{
    const char *s = "\r\n\r\nPOST /p HTTP/1.0\r\nContent-Length: 3\r\n\r\n";

    CHECK(parse_str(s) == (int)strlen(s));
    CHECK(slice_is(req.method, req.method_len, "POST"));
    CHECK(req.head_len == strlen(s));
    CHECK(parse_str("\r\n") == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_str("\r\n\r\n") == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_str("\r") == HTTP_PARSE_INCOMPLETE);
    CHECK_OK("\r\n\r\nPOST /p HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
    CHECK_OK("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_OK("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"
             "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_ERR("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"
              "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
              BAD, "too many empty lines before request", 32);
    CHECK_ERR("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "bare LF before request line", 0);
    CHECK_ERR("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "bare LF before request line", 2);
    CHECK_ERR("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "bare CR before request line", 0);
    CHECK_ERR("\r\n GET / HTTP/1.1\r\nHost: h\r\n\r\n", BAD, "missing method", 2);
}

static void test_header_syntax(void)
{
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Sp:   \r\n"
                    "X-Trim: \t a \t b\t \r\nX-Obs: caf\xc3\xa9\xff\r\n\r\n") > 0);
    CHECK(req.n_headers == 5);
    CHECK(slice_is(hdrs[1].value, hdrs[1].value_len, ""));
    CHECK(slice_is(hdrs[2].value, hdrs[2].value_len, ""));
    CHECK(slice_is(hdrs[3].value, hdrs[3].value_len, "a \t b"));
    CHECK(slice_is(hdrs[4].value, hdrs[4].value_len, "caf\xc3\xa9\xff"));
    CHECK_OK("GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Trim: \t a \t b\t \r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost:h\r\nA:\"q\\\"x\"\r\n\r\n");

    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", BAD, "bare LF in header", 23);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\n\n", BAD, "bare LF in header", 25);
    CHECK_ERR("GET / HTTP/1.1\r\nHost\n\r\n", BAD, "bare LF in header", 20);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", BAD, "bare CR in header", 23);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\n\rX", BAD, "bare CR in header", 25);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", BAD, "obs-fold not allowed", 31);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", BAD, "obs-fold not allowed", 31);
    CHECK_ERR("GET / HTTP/1.1\r\n Host: h\r\n\r\n", BAD, "whitespace before first header", 16);
    CHECK_ERR("GET / HTTP/1.1\r\nHost : h\r\n\r\n", BAD, "whitespace before colon", 20);
    CHECK_ERR("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", BAD, "whitespace before colon", 20);
    CHECK_ERR("GET / HTTP/1.1\r\n: h\r\n\r\n", BAD, "empty header name", 16);
    CHECK_ERR("GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", BAD, "invalid character in header name", 18);
    CHECK_ERR("GET / HTTP/1.1\r\nX\xc3\xa9: h\r\nHost: h\r\n\r\n", BAD,
              "invalid character in header name", 17);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", BAD, "header line without colon", 32);
    check_err_lim(S("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"), &def, BAD,
                  "NUL in header value", 29, __LINE__);
    check_err_lim(S("GET / HTTP/1.1\r\nHost: h\r\nX: \0\r\n\r\n"), &def, BAD,
                  "NUL in header value", 28, __LINE__);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01" "b\r\n\r\n", BAD,
              "control character in header value", 29);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", BAD,
              "control character in header value", 29);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: h\r\nX: a\x1b[0m\r\n\r\n", BAD,
              "control character in header value", 29);
}

static void test_host(void)
{
    CHECK_OK("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost: [::1]:9001\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost: my_host.local:\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    CHECK_OK("GET / HTTP/1.0\r\n\r\n");
    CHECK_OK("GET / HTTP/1.0\r\nHost: h\r\n\r\n");
    CHECK_OK("GET / HTTP/1.1\r\nhOsT: h\r\n\r\n");

    CHECK_ERR("GET / HTTP/1.1\r\nX: h\r\n\r\n", BAD, "missing Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\n\r\n", BAD, "missing Host", 16);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", BAD, "duplicate Host", 25);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nHOST: b\r\n\r\n", BAD, "duplicate Host", 31);
    CHECK_ERR("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", BAD, "duplicate Host", 25);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", BAD, "invalid Host", 22);
    CHECK_ERR("GET / HTTP/1.1\r\nHost: [a/b]\r\n\r\n", BAD, "invalid Host", 22);
}

static void check_length(const char *value, uint64_t want, int line)
{
    char s[256];
    snprintf(s, sizeof s, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:%s\r\n\r\n", value);
    int rc = parse_str(s);
    CHECKF(rc == (int)strlen(s) && req.has_body_length && req.content_length == want,
           "line %d: Content-Length \"%s\": rc %d, %llu", line, value, rc,
           (unsigned long long)req.content_length);
}

static void check_bad_length(const char *value, const char *reason, int line)
{
    char s[256];
    snprintf(s, sizeof s, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:%s\r\n\r\n", value);
    check_err_lim(s, strlen(s), &def, BAD, reason, 26, line);
}

static void test_content_length(void)
{
    check_length(" 0", 0, __LINE__);
    check_length(" 5", 5, __LINE__);
    check_length("5", 5, __LINE__);
    check_length(" 005 ", 5, __LINE__);
    check_length(" 5, 5", 5, __LINE__);
    check_length(" 5,5 , 5", 5, __LINE__);
    check_length(" 18446744073709551615", UINT64_MAX, __LINE__);
    check_bad_length("", "invalid Content-Length", __LINE__);
    check_bad_length(" ", "invalid Content-Length", __LINE__);
    check_bad_length(" abc", "invalid Content-Length", __LINE__);
    check_bad_length(" -1", "invalid Content-Length", __LINE__);
    check_bad_length(" +1", "invalid Content-Length", __LINE__);
    check_bad_length(" 1.0", "invalid Content-Length", __LINE__);
    check_bad_length(" 0x10", "invalid Content-Length", __LINE__);
    check_bad_length(" 1 2", "invalid Content-Length", __LINE__);
    check_bad_length(" 5,", "invalid Content-Length", __LINE__);
    check_bad_length(" ,5", "invalid Content-Length", __LINE__);
    check_bad_length(" 5,,5", "invalid Content-Length", __LINE__);
    check_bad_length(" 5, 6", "conflicting Content-Length", __LINE__);
    check_bad_length(" 18446744073709551616", "Content-Length overflows", __LINE__);
    check_bad_length(" 99999999999999999999999", "Content-Length overflows", __LINE__);

    CHECK(parse_str("POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 7\r\nCONTENT-LENGTH: 7\r\n\r\n") > 0);
    CHECK(req.has_body_length && req.content_length == 7);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
              BAD, "conflicting Content-Length", 45);
    CHECK(parse_str("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n") > 0);
    CHECK(req.has_body_length && req.content_length == 3);
}

static void test_transfer_encoding(void)
{
    CHECK(parse_str("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    CHECK(req.chunked && !req.has_body_length);
    CHECK(parse_str("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: CHUNKED \r\n\r\n") > 0);
    CHECK(req.chunked);
    /* A coding the server cannot undo before the chunked framing: 501. */
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
              "Transfer-Encoding: chunked\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK(parse_str("POST / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && !req.chunked);

    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
              "Transfer-Encoding: identity\r\n\r\n",
              HTTP_ERR_NOT_IMPLEMENTED, "unsupported Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
              BAD, "both Transfer-Encoding and Content-Length", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
              BAD, "both Transfer-Encoding and Content-Length", 45);
    CHECK_ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BAD,
              "Transfer-Encoding in HTTP/1.0", 17);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", BAD,
              "empty Transfer-Encoding", 26);
    CHECK_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , ,\r\n\r\n", BAD,
              "empty Transfer-Encoding", 26);
}

static void test_keep_alive(void)
{
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") > 0 && !req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n") > 0 &&
          !req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n"
                    "Connection: close\r\n\r\n") > 0 && !req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n") > 0 && req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.0\r\n\r\n") > 0 && !req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0 && req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n") > 0 &&
          !req.keep_alive);
    CHECK(parse_str("GET / HTTP/1.0\r\nX-Connection: keep-alive\r\n\r\n") > 0 && !req.keep_alive);
}

static void test_pipelined(void)
{
    const char *s = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                    "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                    "GET /three HTTP/1.0\r\n\r\n";
    size_t n = strlen(s);
    const char *b = guard_put(&guard, s, n);

    int first = http_parse_request(b, n, 0, &def, &req, hdrs);
    CHECK(first == (int)strlen("GET /one HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK(slice_is(req.path, req.path_len, "/one"));

    int second = http_parse_request(b + first, n - (size_t)first, 0, &def, &req, hdrs);
    CHECK(second > 0 && slice_is(req.path, req.path_len, "/two"));
    CHECK(req.has_body_length && req.content_length == 5);
    CHECK(memcmp(b + first + second, "hello", 5) == 0);

    size_t off = (size_t)first + (size_t)second + 5;
    int third = http_parse_request(b + off, n - off, 0, &def, &req, hdrs);
    CHECK(third > 0 && off + (size_t)third == n);
    CHECK(slice_is(req.path, req.path_len, "/three") && req.version_minor == 0);

    /* The second request partly arrived: the first is still complete. */
    CHECK(http_parse_request(guard_put(&guard, s, 40), 40, 0, &def, &req, hdrs) == first);
}

/* Every prefix of valid heads, parsed at the very end of a guarded page. */
static void test_every_split(void)
{
    static const char *const valid[] = {
        "GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nX-Empty:\r\nX-Tab:\t a\tb \t\r\n\r\n",
        "\r\n\r\nPOST /p HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://example.com/a?b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        size_t n = strlen(valid[i]);
        for (size_t k = 0; k < n; k++) {
            int rc = parse(valid[i], k);
            CHECKF(rc == HTTP_PARSE_INCOMPLETE, "input %zu prefix %zu: rc %d (%s)", i, k, rc,
                   req.error_reason ? req.error_reason : "-");
        }
        CHECKF(parse(valid[i], n) == (int)n, "input %zu", i);
        check_ok_lim(valid[i], n, &def, __LINE__);
    }
}

/* A request line of exactly `line_len` bytes (CRLF excluded). */
static size_t make_line(char *out, size_t line_len, const char *lead, const char *rest)
{
    size_t pad = line_len - strlen("GET / HTTP/1.1");
    size_t n = (size_t)sprintf(out, "%sGET /", lead);
    memset(out + n, 'a', pad);
    n += pad;
    n += (size_t)sprintf(out + n, " HTTP/1.1%s", rest);
    return n;
}

static void test_request_line_limit(void)
{
    struct http_limits lim = { .max_request_line = 20, .max_head_bytes = 200, .max_headers = 8 };
    char s[9000];
    size_t n;

    n = make_line(s, 20, "", "\r\nHost: h\r\n\r\n");
    CHECK_OK_N(s, n, &lim);
    n = make_line(s, 21, "", "\r\nHost: h\r\n\r\n");
    check_err_lim(s, n, &lim, HTTP_ERR_URI_TOO_LONG, "request line too long", 20, __LINE__);
    /* Leading empty lines do not count. */
    n = make_line(s, 20, "\r\n\r\n", "\r\nHost: h\r\n\r\n");
    CHECK_OK_N(s, n, &lim);
    n = make_line(s, 21, "\r\n\r\n", "\r\nHost: h\r\n\r\n");
    check_err_lim(s, n, &lim, HTTP_ERR_URI_TOO_LONG, "request line too long", 24, __LINE__);

    /* While incomplete: 20 bytes wait, the 21st is too many, unless it is
     * the line's CR. */
    n = make_line(s, 21, "", "");
    CHECK(parse_lim(s, 20, &lim) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_lim(s, 21, &lim) == HTTP_PARSE_ERROR && req.error == HTTP_ERR_URI_TOO_LONG &&
          req.error_offset == 20);
    CHECK(http_error_status(req.error) == 414);
    n = make_line(s, 20, "", "\r");
    CHECK(parse_lim(s, n, &lim) == HTTP_PARSE_INCOMPLETE);
    memset(s, 'a', 40);
    CHECK(parse_lim(s, 20, &lim) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_lim(s, 21, &lim) == HTTP_PARSE_ERROR && req.error == HTTP_ERR_URI_TOO_LONG);
    /* A line that ends at the limit without a version is malformed, not long. */
    check_err_lim(S("GETTTTTTTTTTTTTTTTT\r\n\r\n"), &lim, BAD, "malformed request line", 19,
                  __LINE__);
    check_err_lim(S("GETTTTTTTTTTTTTTTTTT\r\n\r\n"), &lim, BAD, "malformed request line", 20,
                  __LINE__);
    check_err_lim(S("GETTTTTTTTTTTTTTTTTTT\r\n\r\n"), &lim, HTTP_ERR_URI_TOO_LONG,
                  "request line too long", 20, __LINE__);
    /* An earlier syntax error wins over the length. */
    check_err_lim(S("GET /\x01" "aaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n"), &lim, BAD,
                  "invalid character in request-target", 5, __LINE__);

    n = make_line(s, HTTP_DEFAULT_MAX_REQUEST_LINE, "", "\r\nHost: h\r\n\r\n");
    CHECK_OK_N(s, n, &def);
    n = make_line(s, HTTP_DEFAULT_MAX_REQUEST_LINE + 1, "", "\r\nHost: h\r\n\r\n");
    check_err_lim(s, n, &def, HTTP_ERR_URI_TOO_LONG, "request line too long",
                  HTTP_DEFAULT_MAX_REQUEST_LINE, __LINE__);
}

/* A head of exactly `total` bytes, padded in one header value. */
static size_t make_head(char *out, size_t total)
{
    const char *start = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    size_t n = strlen(start), pad = total - n - 4;
    memcpy(out, start, n);
    memset(out + n, 'p', pad);
    memcpy(out + n + pad, "\r\n\r\n", 4);
    return total;
}

static void test_head_limit(void)
{
    struct http_limits lim = { .max_request_line = 100, .max_head_bytes = 64, .max_headers = 8 };
    char s[9000];

    size_t n = make_head(s, 64);
    CHECK_OK_N(s, n, &lim);
    n = make_head(s, 65);
    check_err_lim(s, n, &lim, HTTP_ERR_HEADERS_TOO_LARGE, "request head too large", 64,
                  __LINE__);
    /* Incomplete: 64 bytes may still end; a 65th without the end may not. */
    CHECK(parse_lim(s, 64, &lim) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_lim(s, 65, &lim) == HTTP_PARSE_ERROR && req.error == HTTP_ERR_HEADERS_TOO_LARGE &&
          req.error_offset == 64 && http_error_status(req.error) == 431);
    /* The final CRLF is part of the head. */
    n = make_head(s, 65);
    CHECK(parse_lim(s, 63, &lim) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_lim(s, 64, &lim) == HTTP_PARSE_INCOMPLETE);
    /* The head window applies to leading empty lines too. */
    check_err_lim(S("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nX-Pad: ppppppppppppppppppppppppp\r\n\r\n"),
                  &lim, HTTP_ERR_HEADERS_TOO_LARGE, "request head too large", 64, __LINE__);
    /* An earlier error wins over the size. */
    check_err_lim(S("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: p\x01pppppppppppppppppppppppppppppppp\r\n\r\n"),
                  &lim, BAD, "control character in header value", 33, __LINE__);

    n = make_head(s, HTTP_DEFAULT_MAX_HEAD_BYTES);
    CHECK_OK_N(s, n, &def);
    n = make_head(s, HTTP_DEFAULT_MAX_HEAD_BYTES + 1);
    check_err_lim(s, n, &def, HTTP_ERR_HEADERS_TOO_LARGE, "request head too large",
                  HTTP_DEFAULT_MAX_HEAD_BYTES, __LINE__);
}

/* "GET / HTTP/1.1" with `fields` header lines, Host first. */
static size_t make_fields(char *out, unsigned fields)
{
    size_t n = (size_t)sprintf(out, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (unsigned i = 1; i < fields; i++)
        n += (size_t)sprintf(out + n, "X-%u: %u\r\n", i, i);
    n += (size_t)sprintf(out + n, "\r\n");
    return n;
}

static void test_header_count_limit(void)
{
    struct http_limits lim = { .max_request_line = 100, .max_head_bytes = 4000, .max_headers = 3 };
    char s[9000];

    size_t n = make_fields(s, 3);
    CHECK_OK_N(s, n, &lim);
    CHECK(parse_lim(s, n, &lim) == (int)n && req.n_headers == 3);
    n = make_fields(s, 4);
    check_err_lim(s, n, &lim, HTTP_ERR_HEADERS_TOO_LARGE, "too many header fields",
                  (long)strlen("GET / HTTP/1.1\r\nHost: h\r\nX-1: 1\r\nX-2: 2\r\n"), __LINE__);
    /* Fires at the first byte of the extra field, before its line ends. */
    size_t at = strlen("GET / HTTP/1.1\r\nHost: h\r\nX-1: 1\r\nX-2: 2\r\n");
    CHECK(parse_lim(s, at, &lim) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_lim(s, at + 1, &lim) == HTTP_PARSE_ERROR && req.error == HTTP_ERR_HEADERS_TOO_LARGE);

    lim.max_headers = 0;
    check_ok_lim(S("GET / HTTP/1.0\r\n\r\n"), &lim, __LINE__);
    check_err_lim(S("GET / HTTP/1.0\r\nA: b\r\n\r\n"), &lim, HTTP_ERR_HEADERS_TOO_LARGE,
                  "too many header fields", 16, __LINE__);

    n = make_fields(s, HTTP_DEFAULT_MAX_HEADERS);
    CHECK_OK_N(s, n, &def);
    n = make_fields(s, HTTP_DEFAULT_MAX_HEADERS + 1);
    check_err_lim(s, n, &def, HTTP_ERR_HEADERS_TOO_LARGE, "too many header fields", -1, __LINE__);
}

static void test_prev_len_variants(void)
{
    const char *s = "GET /x HTTP/1.1\r\nHost: h\r\nX-Long: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
    size_t n = strlen(s);
    const char *b = guard_put(&guard, s, n);

    /* Smaller than the truth, zero, equal or past the length: same answer. */
    for (size_t prev = 0; prev <= n + 5; prev++) {
        int rc = http_parse_request(b, n, prev, &def, &req, hdrs);
        CHECKF(rc == (int)n, "prev_len %zu: rc %d", prev, rc);
    }
    /* Uneven chunks, each call told what the previous one saw. */
    size_t prev = 0, k = 0;
    int rc = HTTP_PARSE_INCOMPLETE;
    for (size_t step = 1; rc == HTTP_PARSE_INCOMPLETE && k < n; step = step * 2 % 7 + 1) {
        k = k + step < n ? k + step : n;
        rc = http_parse_request(guard_put(&guard, s, k), k, prev, &def, &req, hdrs);
        prev = k;
    }
    CHECK(rc == (int)n && k == n);
    CHECK(slice_is(header_value("x-long"), (uint32_t)strlen("abcdefghijklmnopqrstuvwxyz"),
                   "abcdefghijklmnopqrstuvwxyz"));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A slow client's megabyte, one byte per call: linear with prev_len.  A
 * rescan per call would take about 5e11 byte steps here. */
static void test_slowloris_linear(void)
{
    enum { BIG = 1 << 20 };
    struct http_limits lim = { .max_request_line = BIG + 64, .max_head_bytes = 4 * BIG,
                              .max_headers = 8 };
    struct guard g;
    guard_open(&g, 3 * BIG);
    char *s = g.map + g.room - (2 * BIG + 64);
    size_t n = (size_t)sprintf(s, "GET /");
    memset(s + n, 'a', BIG);
    n += BIG;
    n += (size_t)sprintf(s + n, " HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(s + n, 'v', BIG);
    n += BIG;
    n += (size_t)sprintf(s + n, "\r\n\r\n");

    double t0 = now_s();
    int rc = HTTP_PARSE_INCOMPLETE;
    size_t k;
    for (k = 1; k <= n && rc == HTTP_PARSE_INCOMPLETE; k++)
        rc = http_parse_request(s, k, k - 1, &lim, &req, hdrs);
    double took = now_s() - t0;
    CHECKF(rc == (int)n && k - 1 == n, "rc %d at %zu of %zu", rc, k - 1, n);
    CHECKF(took < 10.0, "2 MiB byte by byte took %.2f s", took);
    CHECK(req.target_len == BIG + 1 && hdrs[1].value_len == BIG);

    /* A request line one over a large limit is still caught byte by byte. */
    lim.max_request_line = BIG;
    rc = HTTP_PARSE_INCOMPLETE;
    for (k = 1; k <= n && rc == HTTP_PARSE_INCOMPLETE; k++)
        rc = http_parse_request(s, k, k - 1, &lim, &req, hdrs);
    CHECK(rc == HTTP_PARSE_ERROR && req.error == HTTP_ERR_URI_TOO_LONG && k - 1 == (size_t)BIG + 1);
    guard_close(&g);
}

static void test_helpers(void)
{
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX: 1\r\n"
                    "CONNECTION:  Upgrade\t\r\nx: 2\r\n\r\n") > 0);
    CHECK(http_header_find(&req, "host", 0) == 0);
    CHECK(http_header_find(&req, "HOST", 0) == 0);
    CHECK(http_header_find(&req, "Host", 1) == -1);
    CHECK(http_header_find(&req, "connection", 0) == 1);
    CHECK(http_header_find(&req, "connection", 2) == 3);
    CHECK(http_header_find(&req, "connection", 4) == -1);
    CHECK(http_header_find(&req, "X", 0) == 2);
    CHECK(http_header_find(&req, "X", 3) == 4);
    CHECK(http_header_find(&req, "X", -5) == 2);
    CHECK(http_header_find(&req, "Xx", 0) == -1);
    CHECK(http_header_find(&req, "", 0) == -1);
    CHECK(http_header_has_token(&req, "Connection", "upgrade"));
    CHECK(http_header_has_token(&req, "connection", "KEEP-ALIVE"));
    CHECK(!http_header_has_token(&req, "Connection", "close"));
    CHECK(!http_header_has_token(&req, "Upgrade", "websocket"));

    static const struct {
        const char *list, *token;
        bool has;
    } lists[] = {
        { "keep-alive, Upgrade", "upgrade", true },
        { "keep-alive, Upgrade", "keep-alive", true },
        { "upgrade2", "upgrade", false },
        { "xupgrade", "upgrade", false },
        { "upgrade", "upgrade2", false },
        { "Upgrade", "upgrade", true },
        { " \tupgrade\t ", "upgrade", true },
        { ",,upgrade,,", "upgrade", true },
        { "a,upgrade", "upgrade", true },
        { "a ,upgrade ,b", "upgrade", true },
        { "a b, c", "b", false },
        { "a b, c", "a b", true },
        { "", "upgrade", false },
        { ",", "upgrade", false },
        { "upgrade", "", false },
        { ", ,", "", false },
        { "websocket", "WebSocket", true },
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        CHECKF(http_token_list_has(lists[i].list, strlen(lists[i].list), lists[i].token) ==
                   lists[i].has,
               "\"%s\" has \"%s\"", lists[i].list, lists[i].token);
    /* Only `len` bytes count. */
    CHECK(!http_token_list_has("close", 4, "close"));
    CHECK(http_token_list_has("a,closed", 7, "close"));

    CHECK(http_error_status(HTTP_ERR_BAD_REQUEST) == 400);
    CHECK(http_error_status(HTTP_ERR_URI_TOO_LONG) == 414);
    CHECK(http_error_status(HTTP_ERR_HEADERS_TOO_LARGE) == 431);
    CHECK(http_error_status(HTTP_ERR_VERSION) == 505);
    CHECK(http_error_status(HTTP_ERR_NOT_IMPLEMENTED) == 501);
    CHECK(http_error_status(HTTP_ERR_NONE) == 500);

    struct http_limits lim;
    memset(&lim, 0xff, sizeof lim);
    http_limits_default(&lim);
    CHECK(lim.max_request_line == 4096 && lim.max_head_bytes == 8192 && lim.max_headers == 64);
}

static void test_state_reset(void)
{
    /* A failed parse leaves nothing behind for the next one. */
    CHECK(parse_str("GET /\x01") == HTTP_PARSE_ERROR && req.error_reason);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(req.error == HTTP_ERR_NONE && req.error_reason == NULL && req.error_offset == 0);
    CHECK(parse_str("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    CHECK(parse_str("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK(!req.chunked && !req.has_body_length && req.query == NULL);
    CHECK(http_parse_request(NULL, 0, 0, &def, &req, hdrs) == HTTP_PARSE_INCOMPLETE);
}

int main(void)
{
    http_limits_default(&def);
    guard_open(&guard, 64 * 1024);

    test_simple_get();
    test_target_forms();
    test_request_line_errors();
    test_versions();
    test_leading_empty_lines();
    test_header_syntax();
    test_host();
    test_content_length();
    test_transfer_encoding();
    test_keep_alive();
    test_pipelined();
    test_every_split();
    test_request_line_limit();
    test_head_limit();
    test_header_count_limit();
    test_prev_len_variants();
    test_slowloris_linear();
    test_helpers();
    test_state_reset();

    guard_close(&guard);
    return check_done("http_parse");
}
