/* metrics.h - the text of GET /metrics (Prometheus text format 0.0.4) and
 * the workers' latency histograms.  docs/METRICS.md lists every family. */
#ifndef RINGWS_METRICS_H
#define RINGWS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "text_buf.h"

/* Appends the HELP and TYPE lines of a family. */
void metrics_write_family(struct text_buf *t, const char *name, const char *type);

/* Appends one sample: name{label} value (label NULL: none). */
void metrics_write_sample(struct text_buf *t, const char *name, const char *label,
                          uint64_t value);

/* Appends the families kept only inside the server (the handshakes, the
 * traffic, each worker's connections, the histograms). */
void metrics_write_server(struct text_buf *t, const struct ringws_server *srv);

/* Counts a handshake answered with status (101, or the refusal's), or one
 * that timed out (METRICS_HANDSHAKE_TIMEOUT). */
#define METRICS_HANDSHAKE_TIMEOUT 0
void metrics_count_handshake(struct worker *w, int status);

/* Appends a histogram summed over the workers: the stat_hist at offset
 * in struct worker_stats. */
void metrics_write_histogram(struct text_buf *t, const struct ringws_server *srv,
                             const char *name, size_t offset);

/* Records one observation of ns nanoseconds (by the worker that owns h). */
void metrics_observe(struct stat_hist *h, uint64_t ns);

#endif
