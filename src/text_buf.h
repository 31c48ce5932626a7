/* text_buf.h - a text that grows as it is written, for the answers built
 * whole before they are queued (GET /metrics, GET /history).
 *
 * Why it exists: both answers are long, of a length known only once
 * written, and written with printf; one buffer with one error rule serves
 * both.  The first error (no memory, a bad format) sticks: later writes do
 * nothing, and the caller checks err once at the end. */
#ifndef RINGWS_TEXT_BUF_H
#define RINGWS_TEXT_BUF_H

#include <stddef.h>

struct text_buf {
    char *p;
    size_t len, cap;
    int err; /* 0, or the first -errno */
};

/* Makes room for more bytes after len (p[len..len+more) writable). */
void text_buf_reserve(struct text_buf *t, size_t more);
void text_buf_printf(struct text_buf *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void text_buf_free(struct text_buf *t);

#endif
