/* bench_hist.c - bucket arithmetic of the latency histogram. */
#include "bench_hist.h"

#include <math.h>
#include <string.h>

#define HIST_SUB (1u << HIST_SUB_BITS)

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static unsigned hist_index(uint64_t v)
{
    unsigned e;

    if (v < HIST_SUB)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
    return ((e - HIST_SUB_BITS + 1) << HIST_SUB_BITS) +
           (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of a bucket: the value reported for any sample in it. */
uint64_t hist_bucket_value(unsigned i)
{
    unsigned tier = i >> HIST_SUB_BITS, sub = i & (HIST_SUB - 1), shift;
    uint64_t lo;

    if (!tier)
        return sub;
    shift = tier - 1;
    lo = (uint64_t)(HIST_SUB + sub) << shift;
    return lo + (((uint64_t)1 << shift) >> 1);
}

void hist_record(struct hist *h, uint64_t v)
{
    h->bucket[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    uint64_t rank, seen = 0, v;

    if (!h->count)
        return 0;
    rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank >= h->count)
        return h->max;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            v = hist_bucket_value(i);
            return v > h->max ? h->max : v < h->min ? h->min : v;
        }
    }
    return h->max;
}
