/* log.c - level-filtered logging to stderr, one write per message so that
 * lines from several workers never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read from RINGWS_LOG on first use.  Every thread that races here computes
 * the same value; the atomic makes the race a defined one. */
static enum log_level log_threshold(void)
{
    static _Atomic int level = -1;
    int v = atomic_load_explicit(&level, memory_order_relaxed);

    if (v < 0) {
        const char *env = getenv("RINGWS_LOG");
        v = LOG_LEVEL_INFO;
        if (env && !strcmp(env, "debug"))
            v = LOG_LEVEL_DEBUG;
        else if (env && !strcmp(env, "warn"))
            v = LOG_LEVEL_WARN;
        else if (env && !strcmp(env, "error"))
            v = LOG_LEVEL_ERROR;
        atomic_store_explicit(&level, v, memory_order_relaxed);
    }
    return (enum log_level)v;
}

int log_enabled(enum log_level level)
{
    return level >= log_threshold();
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[1024];
    va_list ap;
    int n;

    if (!log_enabled(level))
        return;
    n = snprintf(line, sizeof(line), "ringws[%s] ", names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return; /* nowhere left to report a failed report */
}
