/* http_response.h - writing HTTP/1.1 responses.
 * Why it exists: every answer the server gives before (or instead of) a
 * WebSocket - built-in routes, errors with their precise status, a library
 * user's on_http answer - is framed the same way: status line, Content-Length
 * always, Connection when the server will close. */
#ifndef RINGWS_HTTP_RESPONSE_H
#define RINGWS_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

struct http_response_head {
    int status;
    const char *content_type;  /* NULL: no Content-Type */
    size_t content_length;
    bool close;                /* adds "Connection: close" */
    const char *extra;         /* extra header lines, each ending in CRLF */
};

/* Reason phrase for a status ("Not Found"); "Unknown" for others. */
const char *http_status_text(int status);

/* Writes the head into out; returns its length, or 0 when cap is too small. */
size_t http_response_write_head(char *out, size_t cap,
                                const struct http_response_head *h);

/* The files served by the built-in routes, embedded at build time by
 * tools/embed-page.py, each with its ETag: the console at "/"
 * (src/console.html) and the browser client at "/ringws.js"
 * (src/ringws.js). */
extern const char http_console_page[];
extern const size_t http_console_page_len;
extern const char http_console_page_etag[];
extern const char http_client_script[];
extern const size_t http_client_script_len;
extern const char http_client_script_etag[];

#endif
