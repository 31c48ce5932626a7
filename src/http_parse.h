/* http_parse.h - pure, allocation-free HTTP/1.1 request-head parser.
 *
 * Why it exists: every connection starts as HTTP, and every byte a client sends
 * before the handshake completes is hostile until proven otherwise.  The parser
 * takes bytes, returns a verdict and the exact place and reason it stopped, and
 * never touches I/O, globals or the heap, so that it can be fuzzed and
 * benchmarked alone.  Output slices point into the caller's buffer. */
#ifndef RINGWS_HTTP_PARSE_H
#define RINGWS_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return values of http_parse_request() other than a positive head length. */
#define HTTP_PARSE_ERROR      (-1) /* request is malformed: see req->error */
#define HTTP_PARSE_INCOMPLETE (-2) /* need more bytes; nothing is wrong yet */

/* Why parsing stopped; each maps to the HTTP status the server answers with. */
enum http_error {
    HTTP_ERR_NONE = 0,
    HTTP_ERR_BAD_REQUEST,       /* 400: syntax, bare LF, obs-fold, bad CL... */
    HTTP_ERR_URI_TOO_LONG,      /* 414: request line longer than the limit */
    HTTP_ERR_HEADERS_TOO_LARGE, /* 431: too many header bytes or fields */
    HTTP_ERR_VERSION,           /* 505: HTTP major version other than 1 */
    HTTP_ERR_NOT_IMPLEMENTED,   /* 501: Transfer-Encoding the server lacks */
};

struct http_limits {
    uint32_t max_request_line; /* bytes of "METHOD target HTTP/1.1" */
    uint32_t max_head_bytes;   /* bytes of request line + headers + CRLFs */
    uint16_t max_headers;      /* header fields; must be <= array capacity */
};

#define HTTP_DEFAULT_MAX_REQUEST_LINE 4096u
#define HTTP_DEFAULT_MAX_HEAD_BYTES   8192u
#define HTTP_DEFAULT_MAX_HEADERS      64u

struct http_header {
    const char *name;
    const char *value; /* leading and trailing OWS removed */
    uint32_t name_len;
    uint32_t value_len;
};

struct http_request {
    const char *method;
    const char *target; /* request-target as sent (path and query) */
    const char *path;   /* target up to '?' */
    const char *query;  /* after '?', NULL when absent */
    uint32_t method_len, target_len, path_len, query_len;
    uint8_t version_minor; /* HTTP/1.x */
    bool keep_alive;       /* from version and Connection tokens */
    bool has_body_length;  /* Content-Length present (and valid) */
    bool chunked;          /* Transfer-Encoding: chunked (last coding) */
    uint64_t content_length;
    struct http_header *headers; /* the caller's array */
    uint16_t n_headers;
    uint32_t head_len;           /* bytes consumed, including final CRLF */
    /* Set when HTTP_PARSE_ERROR is returned. */
    enum http_error error;
    uint32_t error_offset;       /* byte offset where the problem was seen */
    const char *error_reason;    /* static string, short, for the body */
};

void http_limits_default(struct http_limits *lim);

/* Parses one request head from buf[0..len).  prev_len is how many of these
 * bytes the previous call (on the same, grown buffer) already saw and found
 * incomplete, 0 at first: it lets a slow client's byte-at-a-time head be
 * checked without rescanning everything.  Returns the head length (> 0),
 * HTTP_PARSE_INCOMPLETE or HTTP_PARSE_ERROR.  Limits are enforced even while
 * incomplete (431/414 as soon as they are exceeded).  `hdrs` must hold at
 * least lim->max_headers entries. */
int http_parse_request(const char *buf, size_t len, size_t prev_len,
                       const struct http_limits *lim,
                       struct http_request *req, struct http_header *hdrs);

/* ASCII letters compared without case (field names, schemes, tokens):
 * unlike strncasecmp, the answer does not depend on the locale.  The one
 * case-insensitive compare of the server. */
bool http_text_equal_nocase(const char *a, const char *b, size_t n);

/* Index of the first header named `name` (case-insensitive) at or after
 * index `from`, or -1. */
int http_header_find(const struct http_request *req, const char *name, int from);

/* True when a comma-separated token list contains `token`, compared
 * case-insensitively with optional whitespace around elements. */
bool http_token_list_has(const char *list, size_t len, const char *token);

/* True when any header named `name` (repeated headers included) lists token. */
bool http_header_has_token(const struct http_request *req, const char *name,
                           const char *token);

/* Status code for an error (400, 414, 431, 505, 501). */
int http_error_status(enum http_error err);

#endif
