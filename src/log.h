/* log.h - the one logging call of ringws.
 * Why it exists: workers, setup and the binary report through one function so
 * that the level and format are chosen in one place (RINGWS_LOG=debug|info|
 * warn|error, default info). */
#ifndef RINGWS_LOG_H
#define RINGWS_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True when messages of `level` are printed: lets a caller skip building
 * expensive debug text. */
int log_enabled(enum log_level level);

#endif
