/* fuzz_http_parse.c - the request-head parser, whole and incremental.
 *
 * Why it exists: a client may deliver its head in any number of pieces and
 * the server re-parses the grown buffer with prev_len, taking shortcuts on
 * the bytes already seen.  The promise (http_parse.h) is that the shortcuts
 * never change the answer, so the input is parsed whole, then again as a
 * growing buffer cut byte by byte and at random, and the final verdicts
 * must be identical: same head length and fields, or same error at the
 * same offset (with one exception the parser documents, check_deferred()
 * below).  Every answer is also held to what the header says about
 * it: slices inside the head, limits enforced even while incomplete, header
 * values free of line breaks, and the framing verdicts (Content-Length,
 * Transfer-Encoding, Host, keep-alive) that request smuggling would abuse.
 * Requests that follow a complete head (pipelining) get the same checks.
 * Each input runs under the default limits and under small ones taken from
 * its hash, so that 414 and 431 are reached by short inputs. */
#include "fuzz_common.h"
#include "http_parse.h"

#define MAX_PIPELINED 8

/* One parse: its return value and the request it filled. */
struct outcome {
    int rc;
    struct http_request req;
};

/* The buffer being parsed and the heap block it lies in; the block ends
 * where the input ends, so poisoning past the window is exact. */
struct subject {
    const char *buf;
    size_t len;
    const char *block;
    size_t block_len;
    const struct http_limits *lim;
    struct http_header *hdrs;
};

static bool is_tchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool same_nocase(const char *a, size_t n, const char *word)
{
    if (strlen(word) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char x = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
        char y = word[i] >= 'A' && word[i] <= 'Z' ? (char)(word[i] + 32) : word[i];
        if (x != y)
            return false;
    }
    return true;
}

static bool within(const char *p, size_t n, const char *lo, size_t lo_len)
{
    return p >= lo && n <= lo_len && (size_t)(p - lo) <= lo_len - n;
}

/* Calls the parser with nothing readable past buf[len). */
static void parse(const struct subject *s, size_t len, size_t prev, struct outcome *o)
{
    size_t start = (size_t)(s->buf - s->block);

    fuzz_window(s->block, s->block_len, start, start + len);
    o->rc = http_parse_request(s->buf, len, prev, s->lim, &o->req, s->hdrs);
    fuzz_window_clear(s->block, s->block_len);
}

/* ---- what any single answer must satisfy --------------------------------- */

/* Elements of a comma list, trimmed, compared with `token` ignoring case. */
static bool ref_list_has(const char *v, size_t n, const char *token)
{
    for (size_t a = 0; a <= n;) {
        size_t b = a, e;

        while (b < n && v[b] != ',')
            b++;
        e = b;
        while (a < e && is_ows(v[a]))
            a++;
        while (e > a && is_ows(v[e - 1]))
            e--;
        if (e > a && same_nocase(v + a, e - a, token))
            return true;
        a = b + 1;
    }
    return false;
}

static bool ref_header_has(const struct http_request *r, const char *name, const char *token)
{
    for (int i = 0; i < r->n_headers; i++)
        if (same_nocase(r->headers[i].name, r->headers[i].name_len, name) &&
            ref_list_has(r->headers[i].value, r->headers[i].value_len, token))
            return true;
    return false;
}

static int ref_count(const struct http_request *r, const char *name)
{
    int n = 0;

    for (int i = 0; i < r->n_headers; i++)
        n += same_nocase(r->headers[i].name, r->headers[i].name_len, name);
    return n;
}

static void check_header(const struct http_request *r, int i, const char *head, size_t head_len)
{
    const struct http_header *h = &r->headers[i];

    FUZZ_CHECK(within(h->name, h->name_len, head, head_len), "header %d name outside", i);
    FUZZ_CHECK(within(h->value, h->value_len, head, head_len), "header %d value outside", i);
    FUZZ_CHECK(h->name_len > 0, "header %d has an empty name", i);
    for (uint32_t k = 0; k < h->name_len; k++)
        FUZZ_CHECK(is_tchar(h->name[k]), "header %d name byte 0x%02x", i,
                   (unsigned char)h->name[k]);
    for (uint32_t k = 0; k < h->value_len; k++) {
        unsigned char c = (unsigned char)h->value[k];
        FUZZ_CHECK(c == '\t' || (c >= 0x20 && c != 0x7f), "header %d value byte 0x%02x",
                   i, c);
    }
    if (h->value_len)
        FUZZ_CHECK(!is_ows(h->value[0]) && !is_ows(h->value[h->value_len - 1]),
                   "header %d value not trimmed", i);
    /* Lookup by this very name finds this field, or an earlier one. */
    char *name = malloc(h->name_len + 1);
    FUZZ_CHECK(name != NULL, "out of memory");
    memcpy(name, h->name, h->name_len);
    name[h->name_len] = '\0';
    int first = http_header_find(r, name, 0);
    FUZZ_CHECK(first >= 0 && first <= i && http_header_find(r, name, i) == i,
               "http_header_find(%s) gave %d for field %d", name, first, i);
    FUZZ_CHECK(same_nocase(r->headers[first].name, r->headers[first].name_len, name),
               "http_header_find(%s) gave another name", name);
    free(name);
    static const char *const tokens[] = {"close", "keep-alive", "upgrade", "websocket",
                                         "chunked"};
    for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++)
        FUZZ_CHECK(http_token_list_has(h->value, h->value_len, tokens[t]) ==
                       ref_list_has(h->value, h->value_len, tokens[t]),
                   "http_token_list_has(header %d, %s)", i, tokens[t]);
}

/* Content-Length: every element of every such field is 1*DIGIT with one
 * value, RFC 9110 8.6; anything else must have been refused. */
static void check_content_length(const struct http_request *r)
{
    int fields = 0;

    for (int i = 0; i < r->n_headers; i++) {
        const struct http_header *h = &r->headers[i];

        if (!same_nocase(h->name, h->name_len, "Content-Length"))
            continue;
        fields++;
        for (size_t a = 0; a <= h->value_len;) {
            size_t b = a, e;
            uint64_t v = 0;

            while (b < h->value_len && h->value[b] != ',')
                b++;
            e = b;
            while (a < e && is_ows(h->value[a]))
                a++;
            while (e > a && is_ows(h->value[e - 1]))
                e--;
            FUZZ_CHECK(e > a, "empty Content-Length element accepted");
            for (size_t k = a; k < e; k++) {
                FUZZ_CHECK(h->value[k] >= '0' && h->value[k] <= '9',
                           "Content-Length byte 0x%02x accepted", (unsigned char)h->value[k]);
                FUZZ_CHECK(v <= (UINT64_MAX - 9) / 10, "Content-Length overflow accepted");
                v = v * 10 + (uint64_t)(h->value[k] - '0');
            }
            FUZZ_CHECK(v == r->content_length, "Content-Length %llu, field says %llu",
                       (unsigned long long)r->content_length, (unsigned long long)v);
            a = b + 1;
        }
    }
    FUZZ_CHECK(r->has_body_length == (fields > 0), "has_body_length %d with %d fields",
               r->has_body_length, fields);
}

static void check_framing(const struct http_request *r)
{
    int te = ref_count(r, "Transfer-Encoding");

    check_content_length(r);
    FUZZ_CHECK(!(te && r->has_body_length), "both Transfer-Encoding and Content-Length");
    FUZZ_CHECK(r->chunked == (te > 0), "chunked %d with %d Transfer-Encoding fields",
               r->chunked, te);
    FUZZ_CHECK(!r->chunked || r->version_minor >= 1, "chunked in HTTP/1.0");
    FUZZ_CHECK(ref_count(r, "Host") == 1 || (r->version_minor == 0 && ref_count(r, "Host") == 0),
               "%d Host fields in HTTP/1.%u", ref_count(r, "Host"), r->version_minor);

    bool close = ref_header_has(r, "Connection", "close");
    bool keep = r->version_minor >= 1 ? !close
                                      : !close && ref_header_has(r, "Connection", "keep-alive");
    FUZZ_CHECK(r->keep_alive == keep, "keep_alive %d, Connection says %d", r->keep_alive, keep);
}

static void check_complete(const struct subject *s, size_t len, const struct outcome *o)
{
    const struct http_request *r = &o->req;
    const char *head = s->buf;
    size_t h = r->head_len;

    FUZZ_CHECK(r->error == HTTP_ERR_NONE, "complete with error %d", r->error);
    FUZZ_CHECK(h == (size_t)o->rc && h <= len, "head_len %zu, rc %d, len %zu", h, o->rc, len);
    FUZZ_CHECK(h <= s->lim->max_head_bytes, "head of %zu bytes over the limit", h);
    FUZZ_CHECK(h >= 4 && memcmp(head + h - 4, "\r\n\r\n", 4) == 0, "head does not end in CRLFCRLF");
    FUZZ_CHECK(r->headers == s->hdrs, "headers not in the caller's array");
    FUZZ_CHECK(r->n_headers <= s->lim->max_headers, "%u headers", r->n_headers);
    FUZZ_CHECK(r->version_minor <= 9, "version 1.%u", r->version_minor);

    FUZZ_CHECK(r->method_len > 0 && within(r->method, r->method_len, head, h), "method slice");
    for (uint32_t k = 0; k < r->method_len; k++)
        FUZZ_CHECK(is_tchar(r->method[k]), "method byte 0x%02x", (unsigned char)r->method[k]);
    FUZZ_CHECK(r->target_len > 0 && within(r->target, r->target_len, head, h), "target slice");
    for (uint32_t k = 0; k < r->target_len; k++)
        FUZZ_CHECK(r->target[k] > 0x20 && r->target[k] < 0x7f, "target byte 0x%02x",
                   (unsigned char)r->target[k]);
    FUZZ_CHECK((size_t)r->method_len + r->target_len + 10 <= s->lim->max_request_line,
               "request line of %u bytes over the limit",
               r->method_len + r->target_len + 10);
    /* absolute-form with an empty path reports "/", which cannot lie in the
     * head; any other path is a part of the target. */
    FUZZ_CHECK(within(r->path, r->path_len, r->target, r->target_len) ||
                   (r->path_len == 1 && r->path[0] == '/'),
               "path slice");
    if (r->query)
        FUZZ_CHECK(within(r->query, r->query_len, r->target, r->target_len) &&
                       r->query[-1] == '?',
                   "query slice");
    for (int i = 0; i < r->n_headers; i++)
        check_header(r, i, head, h);
    check_framing(r);
}

/* Where the request line starts: after the empty lines the parser skips. */
static size_t line_start(const char *buf, size_t len)
{
    size_t i = 0;

    while (i + 1 < len && i < 32 && buf[i] == '\r' && buf[i + 1] == '\n')
        i += 2;
    return i;
}

static void check_outcome(const struct subject *s, size_t len, const struct outcome *o)
{
    const struct http_request *r = &o->req;

    if (o->rc > 0) {
        check_complete(s, len, o);
        return;
    }
    if (o->rc == HTTP_PARSE_ERROR) {
        int status = http_error_status(r->error);

        FUZZ_CHECK(r->error != HTTP_ERR_NONE, "error without a cause");
        FUZZ_CHECK(status == 400 || status == 414 || status == 431 || status == 505 ||
                       status == 501,
                   "status %d", status);
        FUZZ_CHECK(r->error_offset <= len, "error at %u of %zu bytes", r->error_offset, len);
        FUZZ_CHECK(r->error_reason != NULL && r->error_reason[0], "error without a reason");
        return;
    }
    FUZZ_CHECK(o->rc == HTTP_PARSE_INCOMPLETE, "return value %d", o->rc);
    /* "Limits are enforced even while incomplete." */
    FUZZ_CHECK(len <= s->lim->max_head_bytes, "incomplete after %zu bytes, limit %u", len,
               s->lim->max_head_bytes);
    size_t st = line_start(s->buf, len);
    size_t scan = len - st < (size_t)s->lim->max_request_line + 1
                      ? len - st
                      : (size_t)s->lim->max_request_line + 1;
    FUZZ_CHECK(memchr(s->buf + st, '\r', scan) || memchr(s->buf + st, '\n', scan) ||
                   len - st <= s->lim->max_request_line,
               "incomplete with a %zu-byte request line, limit %u", len - st,
               s->lim->max_request_line);
}

/* ---- same answer however the bytes arrive ------------------------------ */

static void check_same(const struct outcome *a, const struct outcome *b, size_t at)
{
    const struct http_request *x = &a->req, *y = &b->req;

    FUZZ_CHECK(a->rc == b->rc, "incremental rc %d (at %zu bytes), whole rc %d", b->rc, at,
               a->rc);
    if (a->rc == HTTP_PARSE_ERROR) {
        FUZZ_CHECK(x->error == y->error && x->error_offset == y->error_offset &&
                       strcmp(x->error_reason, y->error_reason) == 0,
                   "whole: error %d at %u (%s); incremental: error %d at %u (%s)", x->error,
                   x->error_offset, x->error_reason, y->error, y->error_offset,
                   y->error_reason);
    } else if (a->rc > 0) {
        FUZZ_CHECK(x->method == y->method && x->target == y->target &&
                       x->method_len == y->method_len && x->target_len == y->target_len &&
                       x->n_headers == y->n_headers && x->keep_alive == y->keep_alive &&
                       x->has_body_length == y->has_body_length &&
                       x->content_length == y->content_length && x->chunked == y->chunked &&
                       x->version_minor == y->version_minor,
                   "same head, different request");
    }
}

/* http_parse.c may leave a syntax error inside the last, unfinished line
 * unreported while the line grows (it skips re-parsing bytes that cannot end
 * a line); it promises the error is reported once that line ends.  So an
 * incremental "incomplete" against a whole-buffer error is allowed only when
 * the error lies in that line, and ending the line must bring out exactly
 * the whole-buffer error. */
static void check_deferred(const struct subject *s, const struct outcome *whole)
{
    const struct http_request *w = &whole->req;
    size_t line = s->len;

    while (line > 0 && s->buf[line - 1] != '\r' && s->buf[line - 1] != '\n')
        line--;
    FUZZ_CHECK(w->error_offset >= line,
               "incremental parse still incomplete at %zu bytes; whole parse: error %d "
               "at %u (%s), before the last line (at %zu)",
               s->len, w->error, w->error_offset, w->error_reason, line);

    char *ext = malloc(s->len + 2);
    FUZZ_CHECK(ext != NULL, "out of memory");
    memcpy(ext, s->buf, s->len);
    memcpy(ext + s->len, "\r\n", 2);
    struct subject e = {ext, s->len + 2, ext, s->len + 2, s->lim, s->hdrs};
    struct outcome o;
    parse(&e, e.len, s->len, &o);
    check_outcome(&e, e.len, &o);
    check_same(whole, &o, e.len);
    free(ext);
}

/* Feeds the buffer growing by `cut` (0: random cuts) until the parser
 * answers or the input runs out; the answer must be the whole one. */
static void check_growing(const struct subject *s, const struct outcome *whole,
                          size_t cut, struct fuzz_rng *rng)
{
    struct outcome o = {.rc = HTTP_PARSE_INCOMPLETE};
    size_t len = 0, prev = 0;

    while (len < s->len) {
        size_t step = cut ? cut : fuzz_cut(rng);

        len = step < s->len - len ? len + step : s->len;
        parse(s, len, prev, &o);
        check_outcome(s, len, &o);
        if (o.rc != HTTP_PARSE_INCOMPLETE)
            break;
        prev = len;
    }
    if (s->len == 0)
        return;
    if (o.rc == HTTP_PARSE_INCOMPLETE && whole->rc == HTTP_PARSE_ERROR && prev > 0)
        check_deferred(s, whole);
    else
        check_same(whole, &o, len);
}

/* Checks the request at the start of s and returns where the next one
 * starts, or 0 when none can follow. */
static size_t check_request(const struct subject *s, struct fuzz_rng *rng)
{
    struct outcome whole;
    const struct http_request *r = &whole.req;

    parse(s, s->len, 0, &whole);
    check_outcome(s, s->len, &whole);
    check_growing(s, &whole, 1, rng);
    check_growing(s, &whole, 0, rng);
    check_growing(s, &whole, 0, rng);

    if (whole.rc <= 0 || r->chunked)
        return 0;
    if (!r->has_body_length)
        return r->head_len;
    if (r->content_length > s->len - r->head_len)
        return 0;
    return r->head_len + (size_t)r->content_length;
}

static void check_pipeline(const char *data, size_t size, const struct http_limits *lim,
                           struct fuzz_rng *rng)
{
    struct http_header *hdrs = malloc((lim->max_headers ? lim->max_headers : 1) * sizeof *hdrs);
    struct subject s = {data, size, data, size, lim, hdrs};

    FUZZ_CHECK(hdrs != NULL, "out of memory");
    for (int n = 0; n < MAX_PIPELINED; n++) {
        size_t next = check_request(&s, rng);

        if (next == 0 || next >= s.len)
            break;
        s.buf += next;
        s.len -= next;
    }
    free(hdrs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_rng rng = {fuzz_hash(data, size, 1)};
    struct http_limits lim;
    uint64_t h = fuzz_next(&rng);

    http_limits_default(&lim);
    check_pipeline((const char *)data, size, &lim, &rng);

    lim.max_request_line = 8 + (uint32_t)(h % 120);
    lim.max_head_bytes = 16 + (uint32_t)(h >> 8 & 0x1ff);
    lim.max_headers = 1 + (uint16_t)(h >> 20 & 7);
    check_pipeline((const char *)data, size, &lim, &rng);
    return 0;
}
