/* log.c - level-filtered logging to stderr, one write per message so that
 * lines from several workers never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static enum log_level log_threshold(void)
{
    static int level = -1; /* benign race: every thread computes the same */
    if (level < 0) {
        const char *env = getenv("RINGWS_LOG");
        level = LOG_INFO;
        if (env && !strcmp(env, "debug"))
            level = LOG_DEBUG;
        else if (env && !strcmp(env, "warn"))
            level = LOG_WARN;
        else if (env && !strcmp(env, "error"))
            level = LOG_ERROR;
    }
    return (enum log_level)level;
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
