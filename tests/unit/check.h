/* check.h - the smallest test harness that reports where a check failed.
 * Each unit test is a program: CHECK() records a failure with file and line
 * and goes on; check_done() prints the totals and gives the exit status. */
#ifndef RINGWS_CHECK_H
#define RINGWS_CHECK_H

#include <stdio.h>

static unsigned check_passed, check_failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            check_passed++;                                                  \
        } else {                                                             \
            check_failed++;                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

/* CHECK with a printf-style note, for checks inside loops. */
#define CHECKF(cond, ...)                                                    \
    do {                                                                     \
        if (cond) {                                                          \
            check_passed++;                                                  \
        } else {                                                             \
            check_failed++;                                                  \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

static inline int check_done(const char *suite)
{
    printf("%s: %u passed, %u failed\n", suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
