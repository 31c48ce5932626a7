/* bench_hist.h - a log-linear latency histogram.
 *
 * Why it exists: tail percentiles (p99.9) of millions of round trips need
 * every sample counted, at a cost of one increment per sample and a fixed,
 * small memory per thread.  Values below 64 are exact; above, each power of
 * two is cut into 64 buckets, so a reported value is within 1/64 (1.6 %) of
 * the true one.  Threads keep their own histogram and merge at the end. */
#ifndef RINGWS_BENCH_HIST_H
#define RINGWS_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) << HIST_SUB_BITS)

struct hist {
    uint64_t count, sum, min, max;
    uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);

/* The value bucket i stands for (its middle), to write a histogram out. */
uint64_t hist_bucket_value(unsigned i);

/* The value at percentile p (0 < p <= 100); 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double p);

#endif
