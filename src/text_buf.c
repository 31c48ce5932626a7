/* text_buf.c - a text that grows as it is written (text_buf.h). */
#include "text_buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void text_buf_reserve(struct text_buf *t, size_t more)
{
    size_t cap = t->cap ? t->cap : 4096;
    char *grown;

    if (t->err || t->len + more <= t->cap)
        return;
    while (cap < t->len + more)
        cap *= 2;
    grown = realloc(t->p, cap);
    if (!grown) {
        t->err = -ENOMEM;
        return;
    }
    t->p = grown;
    t->cap = cap;
}

void text_buf_printf(struct text_buf *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    text_buf_reserve(t, 256);
    if (t->err)
        return;
    va_start(ap, fmt);
    n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= t->cap - t->len) {
        /* Longer than the room made: once more, with room for it. */
        text_buf_reserve(t, (size_t)n + 1);
        if (t->err)
            return;
        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
    }
    if (n < 0) {
        t->err = -EINVAL;
        return;
    }
    t->len += (size_t)n;
}

void text_buf_free(struct text_buf *t)
{
    free(t->p);
    t->p = NULL;
    t->len = t->cap = 0;
}
