/* http_parse.c - the HTTP/1.1 request-head parser behind http_parse.h.
 *
 * Why it exists: it owns the byte grammar of a request head (RFC 9112
 * sections 2 to 6) and the framing verdicts that follow from it (Host,
 * Content-Length, Transfer-Encoding, Connection).  Routing and responses
 * belong to the server.
 *
 * The full parse is sequential: it walks the bytes once, in order, and stops
 * at the first problem, so the error it reports is always the earliest one,
 * and a limit (414, 431) is simply an error at a byte offset like any other.
 * Long runs of bytes (header values, the bytes a slow client adds) are
 * scanned by scan_find_ctl() alone, which picks a vector version of its
 * scalar twin at first use. */
#include "http_parse.h"
#include "simd.h"

#include <limits.h>
#include <string.h>

#if SIMD_X86
#include <immintrin.h>
#endif

/* RFC 9112 2.2 asks a server to ignore "at least one" empty line before the
 * request line.  A bound keeps a CRLF flood from costing a full parse per
 * byte and lets the quick check know where the request line can start. */
#define PARSE_MAX_EMPTY_LINES 16u

struct parse_ctx {
    const char *buf;
    const char *end;      /* buf + len: the bytes received so far */
    const char *head_end; /* where the head must have ended (431 past it) */
    const struct http_limits *lim;
    struct http_request *req;
};

/* Returns the first byte in [p, end) that is a control character (CR, LF,
 * HTAB, NUL, ...) or DEL, or end.  Everything else is allowed in a header
 * value, so this finds line ends and forbidden bytes in one pass.  The
 * scalar twin is the definition; the vector versions test 16 or 32 bytes per
 * compare and hand the last partial block to it, so they never read past
 * end. */
const char *http_scan_ctl_scalar(const char *p, const char *end)
{
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f)
            break;
        p++;
    }
    return p;
}

#if SIMD_X86
const char *http_scan_ctl_sse2(const char *p, const char *end)
{
    const __m128i below = _mm_set1_epi8(0x1f);
    const __m128i del = _mm_set1_epi8(0x7f);

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* Unsigned v <= 0x1f: the saturating difference is zero. */
        __m128i ctl = _mm_or_si128(_mm_cmpeq_epi8(_mm_subs_epu8(v, below), _mm_setzero_si128()),
                                   _mm_cmpeq_epi8(v, del));
        unsigned bits = (unsigned)_mm_movemask_epi8(ctl);

        if (bits)
            return p + __builtin_ctz(bits);
        p += 16;
    }
    return http_scan_ctl_scalar(p, end);
}

__attribute__((target("avx2")))
const char *http_scan_ctl_avx2(const char *p, const char *end)
{
    const __m256i below = _mm256_set1_epi8(0x1f);
    const __m256i del = _mm256_set1_epi8(0x7f);

    while (end - p >= 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)p);
        __m256i ctl = _mm256_or_si256(
            _mm256_cmpeq_epi8(_mm256_subs_epu8(v, below), _mm256_setzero_si256()),
            _mm256_cmpeq_epi8(v, del));
        unsigned bits = (unsigned)_mm256_movemask_epi8(ctl);

        if (bits)
            return p + __builtin_ctz(bits);
        p += 32;
    }
    return http_scan_ctl_sse2(p, end);
}
#endif

typedef const char *scan_ctl_fn(const char *p, const char *end);

/* Chosen on first use; every thread that races here picks the same one. */
static scan_ctl_fn *scan_ctl_chosen;

static scan_ctl_fn *scan_ctl_choose(void)
{
#if SIMD_X86
    scan_ctl_fn *f = simd_cpu_has(SIMD_ISA_AVX2) ? http_scan_ctl_avx2 : http_scan_ctl_sse2;
#else
    scan_ctl_fn *f = http_scan_ctl_scalar;
#endif
    __atomic_store_n(&scan_ctl_chosen, f, __ATOMIC_RELAXED);
    return f;
}

static const char *scan_find_ctl(const char *p, const char *end)
{
    scan_ctl_fn *f = __atomic_load_n(&scan_ctl_chosen, __ATOMIC_RELAXED);

    /* Short runs (a value of a few bytes) are not worth a call through a
     * pointer. */
    if (end - p < 16)
        return http_scan_ctl_scalar(p, end);
    if (!f)
        f = scan_ctl_choose();
    return f(p, end);
}

static bool char_is_ctl(char ch)
{
    unsigned char c = (unsigned char)ch;
    return c < 0x20 || c == 0x7f;
}

static bool char_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool char_is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool char_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool char_in(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

/* tchar of RFC 9110 5.6.2: what methods, header names and tokens are made of. */
static bool char_is_tchar(char c)
{
    if (char_is_alpha(c) || char_is_digit(c))
        return true;
    return char_in(c, "!#$%&'*+-.^_`|~");
}

/* Visible ASCII: the bytes a request-target may hold. */
static bool char_is_vchar(char c)
{
    return c > 0x20 && c < 0x7f;
}

static char char_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

bool http_text_equal_nocase(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (char_lower(a[i]) != char_lower(b[i]))
            return false;
    return true;
}

/* True when [p, p + n) equals the NUL-terminated word, ignoring case. */
static bool text_is_nocase(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && http_text_equal_nocase(p, word, n);
}

static bool header_is(const struct http_header *h, const char *name)
{
    return text_is_nocase(h->name, h->name_len, name);
}

static int parse_fail(struct parse_ctx *c, enum http_error err, const char *at,
                      const char *reason)
{
    c->req->error = err;
    c->req->error_offset = (uint32_t)(at - c->buf);
    c->req->error_reason = reason;
    return HTTP_PARSE_ERROR;
}

static int parse_bad(struct parse_ctx *c, const char *at, const char *reason)
{
    return parse_fail(c, HTTP_ERR_BAD_REQUEST, at, reason);
}

/* A scan reached head_end: either the bytes so far run out there (wait for
 * more) or the head window does, and the head has not ended inside it. */
static int parse_ran_out(struct parse_ctx *c, const char *p)
{
    if (p == c->end)
        return HTTP_PARSE_INCOMPLETE;
    return parse_fail(c, HTTP_ERR_HEADERS_TOO_LARGE, p, "request head too large");
}

/* A request-line scan reached its cap: the end of the bytes so far, of the
 * head window, or of max_request_line.  Only the line's own CR may sit just
 * past that limit, and a CR met before the version is complete means the
 * line ended too early. */
static int parse_line_stop(struct parse_ctx *c, const char *p)
{
    if (p == c->head_end)
        return parse_ran_out(c, p);
    if (*p == '\r')
        return parse_bad(c, p, "malformed request line");
    return parse_fail(c, HTTP_ERR_URI_TOO_LONG, p, "request line too long");
}

/* p is at a CR that must be followed by LF. */
static int parse_crlf(struct parse_ctx *c, const char *p, const char *bare_cr)
{
    if (p + 1 == c->head_end)
        return parse_ran_out(c, p + 1);
    if (p[1] != '\n')
        return parse_bad(c, p, bare_cr);
    return 0;
}

/* Why a byte that is not allowed in the request line stopped it. */
static int parse_line_char(struct parse_ctx *c, const char *p, const char *other)
{
    if (*p == '\n')
        return parse_bad(c, p, "bare LF in request line");
    if (*p == '\r')
        return parse_bad(c, p, "malformed request line");
    if (*p == '\0')
        return parse_bad(c, p, "NUL in request line");
    return parse_bad(c, p, other);
}

static int parse_skip_empty_lines(struct parse_ctx *c, const char **pp)
{
    const char *p = c->buf;
    unsigned lines = 0;

    while (p < c->head_end && (*p == '\r' || *p == '\n')) {
        if (*p == '\n')
            return parse_bad(c, p, "bare LF before request line");
        if (lines == PARSE_MAX_EMPTY_LINES)
            return parse_bad(c, p, "too many empty lines before request");
        int rc = parse_crlf(c, p, "bare CR before request line");
        if (rc)
            return rc;
        p += 2;
        lines++;
    }
    *pp = p;
    return 0;
}

static int parse_method(struct parse_ctx *c, const char **pp, const char *cap)
{
    const char *start = *pp, *p = start;

    while (p < cap && char_is_tchar(*p))
        p++;
    if (p == cap)
        return parse_line_stop(c, p);
    if (p == start && *p == ' ')
        return parse_bad(c, p, "missing method");
    if (*p != ' ')
        return parse_line_char(c, p, "invalid character in method");
    c->req->method = start;
    c->req->method_len = (uint32_t)(p - start);
    *pp = p + 1;
    return 0;
}

static void parse_split_query(struct http_request *r, const char *p, const char *end)
{
    const char *q = memchr(p, '?', (size_t)(end - p));

    r->path = p;
    r->path_len = (uint32_t)((q ? q : end) - p);
    if (q) {
        r->query = q + 1;
        r->query_len = (uint32_t)(end - q - 1);
    }
}

/* absolute-form (RFC 9112 3.2.2): the server is its own origin, so only the
 * path and query matter; the authority must exist and carry no userinfo. */
static int parse_absolute_form(struct parse_ctx *c, const char *t, const char *end)
{
    const char *p = t;

    if (end - p >= 7 && http_text_equal_nocase(p, "http://", 7))
        p += 7;
    else if (end - p >= 8 && http_text_equal_nocase(p, "https://", 8))
        p += 8;
    else
        return parse_bad(c, t, "malformed request-target");

    const char *host = p;
    while (p < end && *p != '/' && *p != '?') {
        if (*p == '@')
            return parse_bad(c, p, "userinfo in request-target");
        p++;
    }
    if (p == host)
        return parse_bad(c, host, "empty host in request-target");
    parse_split_query(c->req, p, end);
    if (c->req->path_len == 0) {
        c->req->path = "/";
        c->req->path_len = 1;
    }
    return 0;
}

static int parse_target_form(struct parse_ctx *c)
{
    struct http_request *r = c->req;
    const char *t = r->target, *end = t + r->target_len;

    if (*t == '/') {
        parse_split_query(r, t, end);
        return 0;
    }
    if (*t == '*' && r->target_len == 1) {
        /* Methods are case-sensitive (RFC 9110 9.1). */
        if (r->method_len != 7 || memcmp(r->method, "OPTIONS", 7) != 0)
            return parse_bad(c, t, "asterisk-form needs OPTIONS");
        r->path = t;
        r->path_len = 1;
        return 0;
    }
    return parse_absolute_form(c, t, end);
}

static int parse_target(struct parse_ctx *c, const char **pp, const char *cap)
{
    const char *start = *pp, *p = start;

    while (p < cap && char_is_vchar(*p))
        p++;
    if (p == cap)
        return parse_line_stop(c, p);
    if (p == start && *p == ' ')
        return parse_bad(c, p, "missing request-target");
    if (*p == '\r')
        return parse_bad(c, p, "missing HTTP version");
    if (*p != ' ')
        return parse_line_char(c, p, "invalid character in request-target");
    c->req->target = start;
    c->req->target_len = (uint32_t)(p - start);
    *pp = p + 1;
    return parse_target_form(c);
}

/* "HTTP/" DIGIT "." DIGIT, then the line's CRLF.  The major version is
 * judged only once the line is well formed, so junk is 400, not 505. */
static int parse_version(struct parse_ctx *c, const char **pp, const char *cap)
{
    static const char name[] = "HTTP/";
    const char *v = *pp, *p = v;

    for (size_t i = 0; i < 8; i++, p++) {
        if (p == cap)
            return parse_line_stop(c, p);
        bool ok = i < 5 ? *p == name[i] : i == 6 ? *p == '.' : char_is_digit(*p);
        if (!ok)
            return parse_line_char(c, p, "malformed HTTP version");
    }
    if (p == c->head_end)
        return parse_ran_out(c, p);
    if (*p != '\r')
        return parse_line_char(c, p, "malformed HTTP version");
    int rc = parse_crlf(c, p, "bare CR in request line");
    if (rc)
        return rc;
    if (v[5] != '1')
        return parse_fail(c, HTTP_ERR_VERSION, v, "unsupported HTTP version");
    c->req->version_minor = (uint8_t)(v[7] - '0');
    *pp = p + 2;
    return 0;
}

static int parse_request_line(struct parse_ctx *c, const char **pp)
{
    const char *p = *pp;
    size_t room = (size_t)(c->head_end - p);
    const char *cap = p + (room < c->lim->max_request_line ? room
                                                           : c->lim->max_request_line);
    int rc = parse_method(c, &p, cap);

    if (!rc)
        rc = parse_target(c, &p, cap);
    if (!rc)
        rc = parse_version(c, &p, cap);
    *pp = p;
    return rc;
}

/* Why a byte stopped a header name. */
static int parse_name_char(struct parse_ctx *c, const char *p)
{
    if (char_is_ows(*p))
        return parse_bad(c, p, "whitespace before colon");
    if (*p == '\n')
        return parse_bad(c, p, "bare LF in header");
    if (*p == '\r')
        return parse_bad(c, p, "header line without colon");
    return parse_bad(c, p, "invalid character in header name");
}

/* Why a control character stopped a header value. */
static int parse_value_char(struct parse_ctx *c, const char *p)
{
    if (*p == '\n')
        return parse_bad(c, p, "bare LF in header");
    if (*p == '\0')
        return parse_bad(c, p, "NUL in header value");
    return parse_bad(c, p, "control character in header value");
}

/* Finds the CR ending a value that starts at p; HTAB is the one control
 * character a value may hold. */
static int parse_value_end(struct parse_ctx *c, const char **pp)
{
    const char *p = *pp;

    for (;;) {
        p = scan_find_ctl(p, c->head_end);
        if (p == c->head_end)
            return parse_ran_out(c, p);
        if (*p != '\t')
            break;
        p++;
    }
    if (*p != '\r')
        return parse_value_char(c, p);
    *pp = p;
    return parse_crlf(c, p, "bare CR in header");
}

static int parse_field(struct parse_ctx *c, const char **pp)
{
    const char *name = *pp, *p = name;

    while (p < c->head_end && char_is_tchar(*p))
        p++;
    if (p == c->head_end)
        return parse_ran_out(c, p);
    if (*p != ':')
        return parse_name_char(c, p);
    if (p == name)
        return parse_bad(c, p, "empty header name");
    const char *name_end = p++;
    while (p < c->head_end && char_is_ows(*p))
        p++;
    const char *value = p;
    int rc = parse_value_end(c, &p);
    if (rc)
        return rc;
    const char *value_end = p;
    while (value_end > value && char_is_ows(value_end[-1]))
        value_end--;

    struct http_request *r = c->req;
    r->headers[r->n_headers++] = (struct http_header){
        .name = name,
        .value = value,
        .name_len = (uint32_t)(name_end - name),
        .value_len = (uint32_t)(value_end - value),
    };
    *pp = p + 2;
    return 0;
}

static int parse_fields(struct parse_ctx *c, const char *p)
{
    struct http_request *r = c->req;

    for (;;) {
        if (p == c->head_end)
            return parse_ran_out(c, p);
        if (*p == '\r')
            break;
        if (*p == '\n')
            return parse_bad(c, p, "bare LF in header");
        if (char_is_ows(*p))
            return parse_bad(c, p, r->n_headers ? "obs-fold not allowed"
                                                : "whitespace before first header");
        if (r->n_headers == c->lim->max_headers)
            return parse_fail(c, HTTP_ERR_HEADERS_TOO_LARGE, p, "too many header fields");
        int rc = parse_field(c, &p);
        if (rc)
            return rc;
    }
    int rc = parse_crlf(c, p, "bare CR in header");
    if (rc)
        return rc;
    r->head_len = (uint32_t)(p + 2 - c->buf);
    return 0;
}

/* Content-Length = 1*DIGIT, possibly sent as a list or repeated; every
 * value must agree (RFC 9110 8.6), or the body's end is ambiguous. */
static int parse_content_length(struct parse_ctx *c, const struct http_header *h)
{
    struct http_request *r = c->req;
    const char *p = h->value, *end = p + h->value_len;

    for (;;) {
        while (p < end && char_is_ows(*p))
            p++;
        const char *digits = p;
        uint64_t v = 0;
        for (; p < end && char_is_digit(*p); p++) {
            unsigned d = (unsigned)(*p - '0');
            if (v > (UINT64_MAX - d) / 10)
                return parse_bad(c, h->name, "Content-Length overflows");
            v = v * 10 + d;
        }
        while (p < end && char_is_ows(*p))
            p++;
        if (p == digits || (p < end && *p != ','))
            return parse_bad(c, h->name, "invalid Content-Length");
        if (r->has_body_length && r->content_length != v)
            return parse_bad(c, h->name, "conflicting Content-Length");
        r->has_body_length = true;
        r->content_length = v;
        if (p == end)
            return 0;
        p++;
    }
}

/* The last non-empty element of a comma list, with its length in *n, or
 * NULL when the list has none. */
static const char *parse_last_element(const char *p, size_t len, size_t *n)
{
    const char *end = p + len;

    while (end > p && (char_is_ows(end[-1]) || end[-1] == ','))
        end--;
    if (end == p)
        return NULL;
    const char *start = end;
    while (start > p && start[-1] != ',')
        start--;
    while (char_is_ows(*start))
        start++;
    *n = (size_t)(end - start);
    return start;
}

/* reg-name and IPv4 characters: unreserved, pct-encoded, sub-delims. */
static bool char_is_host(char c)
{
    return char_is_alpha(c) || char_is_digit(c) || char_in(c, "-._~%!$&'()*+,;=");
}

/* uri-host [ ":" port ] (RFC 9110 7.2); an empty value is allowed.  A bad
 * Host must be refused (RFC 9112 3.2), and it is what gets echoed in
 * redirects and logs. */
static bool parse_host_valid(const char *v, size_t n)
{
    size_t i = 0;

    if (n && v[0] == '[') {
        while (++i < n && v[i] != ']')
            if (!char_is_host(v[i]) && v[i] != ':')
                return false;
        if (i++ == n)
            return false;
    } else {
        while (i < n && char_is_host(v[i]))
            i++;
    }
    if (i < n && v[i] == ':')
        for (i++; i < n && char_is_digit(v[i]); i++)
            ;
    return i == n;
}

static int parse_transfer_encoding(struct parse_ctx *c, const struct http_header *te)
{
    struct http_request *r = c->req;
    const char *at = te->name;

    if (r->version_minor == 0)
        return parse_bad(c, at, "Transfer-Encoding in HTTP/1.0");
    if (r->has_body_length)
        return parse_bad(c, at, "both Transfer-Encoding and Content-Length");

    /* The codings of repeated fields concatenate.  Only "chunked" alone is
     * understood: any other coding (even before a final chunked) is one the
     * server cannot undo, hence 501. */
    const char *last = NULL;
    size_t last_len = 0;
    unsigned codings = 0;
    for (int i = 0; (i = http_header_find(r, "Transfer-Encoding", i)) >= 0; i++) {
        const char *v = r->headers[i].value;
        size_t n, len = r->headers[i].value_len;
        const char *e = parse_last_element(v, len, &n);
        for (size_t k = 0; k < len; k++)
            codings += v[k] == ',';
        if (e) {
            last = e;
            last_len = n;
            codings++;
        }
    }
    if (!last)
        return parse_bad(c, at, "empty Transfer-Encoding");
    if (codings != 1 || !text_is_nocase(last, last_len, "chunked"))
        return parse_fail(c, HTTP_ERR_NOT_IMPLEMENTED, at, "unsupported Transfer-Encoding");
    r->chunked = true;
    return 0;
}

/* The checks that need the whole head: Host, body framing, persistence. */
static int parse_semantics(struct parse_ctx *c)
{
    struct http_request *r = c->req;
    const struct http_header *te = NULL;
    bool host = false;

    for (uint16_t i = 0; i < r->n_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (header_is(h, "Host")) {
            if (host)
                return parse_bad(c, h->name, "duplicate Host");
            if (!parse_host_valid(h->value, h->value_len))
                return parse_bad(c, h->value, "invalid Host");
            host = true;
        } else if (header_is(h, "Content-Length")) {
            int rc = parse_content_length(c, h);
            if (rc)
                return rc;
        } else if (header_is(h, "Transfer-Encoding") && !te) {
            te = h;
        }
    }
    if (!host && r->version_minor >= 1)
        return parse_bad(c, c->buf + r->head_len - 2, "missing Host");
    if (te) {
        int rc = parse_transfer_encoding(c, te);
        if (rc)
            return rc;
    }
    bool close = http_header_has_token(r, "Connection", "close");
    r->keep_alive = r->version_minor >= 1
                        ? !close
                        : !close && http_header_has_token(r, "Connection", "keep-alive");
    return 0;
}

static int parse_head(struct parse_ctx *c)
{
    const char *p;
    int rc = parse_skip_empty_lines(c, &p);

    if (!rc)
        rc = parse_request_line(c, &p);
    if (!rc)
        rc = parse_fields(c, p);
    if (!rc)
        rc = parse_semantics(c);
    return rc;
}

static size_t parse_max_head(const struct http_limits *lim)
{
    /* The head length is returned as an int. */
    return lim->max_head_bytes < INT_MAX ? lim->max_head_bytes : INT_MAX;
}

/* Where the request line starts: after the empty lines the full parse
 * accepts, which all lie within the first `seen` bytes. */
static size_t parse_line_start(const char *buf, size_t seen)
{
    size_t i = 0;

    while (i + 1 < seen && i < 2 * PARSE_MAX_EMPTY_LINES && buf[i] == '\r' && buf[i + 1] == '\n')
        i += 2;
    return i;
}

/* Decides, without a full parse, that bytes added after prev_len leave the
 * head incomplete and trip no limit.  True only when no line ends or starts
 * among the new bytes (so no field is added and the head cannot end), the
 * head window still holds them, and the request line is either short enough
 * or was already closed: a call that found buf[0..prev_len) incomplete
 * with prev_len >= start + max_request_line + 2 must have seen its CRLF, or
 * it would have answered 414.  A syntax error inside the unfinished last line
 * is then reported once that line ends or a limit is reached, never lost. */
static bool parse_quick_incomplete(const char *buf, size_t len, size_t prev_len,
                                   const struct http_limits *lim)
{
    if (prev_len == 0 || prev_len >= len || len > parse_max_head(lim))
        return false;
    if (char_is_ctl(buf[prev_len - 1]))
        return false;
    if (scan_find_ctl(buf + prev_len, buf + len) != buf + len)
        return false;
    size_t start = parse_line_start(buf, prev_len);
    return len - start <= lim->max_request_line ||
           prev_len - start >= (size_t)lim->max_request_line + 2;
}

void http_limits_default(struct http_limits *lim)
{
    lim->max_request_line = HTTP_DEFAULT_MAX_REQUEST_LINE;
    lim->max_head_bytes = HTTP_DEFAULT_MAX_HEAD_BYTES;
    lim->max_headers = HTTP_DEFAULT_MAX_HEADERS;
}

int http_parse_request(const char *buf, size_t len, size_t prev_len,
                       const struct http_limits *lim,
                       struct http_request *req, struct http_header *hdrs)
{
    *req = (struct http_request){ .headers = hdrs };
    if (len == 0 || parse_quick_incomplete(buf, len, prev_len, lim))
        return HTTP_PARSE_INCOMPLETE;

    size_t window = parse_max_head(lim);
    struct parse_ctx c = {
        .buf = buf,
        .end = buf + len,
        .head_end = buf + (len < window ? len : window),
        .lim = lim,
        .req = req,
    };
    int rc = parse_head(&c);
    return rc ? rc : (int)req->head_len;
}

int http_header_find(const struct http_request *req, const char *name, int from)
{
    for (int i = from < 0 ? 0 : from; i < req->n_headers; i++)
        if (header_is(&req->headers[i], name))
            return i;
    return -1;
}

bool http_token_list_has(const char *list, size_t len, const char *token)
{
    if (len == 0)
        return false;

    const char *p = list, *end = list + len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end, *s = p;
        while (s < e && char_is_ows(*s))
            s++;
        while (e > s && char_is_ows(e[-1]))
            e--;
        if (e > s && text_is_nocase(s, (size_t)(e - s), token))
            return true;
        if (!comma)
            return false;
        p = comma + 1;
    }
}

bool http_header_has_token(const struct http_request *req, const char *name,
                           const char *token)
{
    for (int i = 0; (i = http_header_find(req, name, i)) >= 0; i++)
        if (http_token_list_has(req->headers[i].value, req->headers[i].value_len, token))
            return true;
    return false;
}

int http_error_status(enum http_error err)
{
    switch (err) {
    case HTTP_ERR_BAD_REQUEST:
        return 400;
    case HTTP_ERR_URI_TOO_LONG:
        return 414;
    case HTTP_ERR_HEADERS_TOO_LARGE:
        return 431;
    case HTTP_ERR_VERSION:
        return 505;
    case HTTP_ERR_NOT_IMPLEMENTED:
        return 501;
    case HTTP_ERR_NONE:
        break;
    }
    /* Not an error: the caller has a bug, and 500 says so. */
    return 500;
}
