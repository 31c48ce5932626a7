/* bench_report.c - printing a run's figures, as aligned text or as one JSON
 * object, and deciding whether they show a server failure.
 *
 * Why it exists: scripts (bench/compare.sh) read the JSON and people read
 * the text; both come from the same calls so they never disagree. */
#include "bench.h"

#include <math.h>

void report_begin(struct report *r, bool json)
{
    r->f = stdout;
    r->json = json;
    r->n = 0;
    if (json)
        fputc('{', r->f);
}

static void report_key(struct report *r, const char *key)
{
    if (r->json)
        fprintf(r->f, "%s\"%s\": ", r->n ? ", " : "", key);
    else
        fprintf(r->f, "%-36s ", key);
    r->n++;
}

void report_str(struct report *r, const char *key, const char *v)
{
    report_key(r, key);
    if (!r->json) {
        fprintf(r->f, "%s\n", v);
        return;
    }
    fputc('"', r->f);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            fprintf(r->f, "\\%c", *v);
        else if ((unsigned char)*v < 0x20)
            fprintf(r->f, "\\u%04x", *v);
        else
            fputc(*v, r->f);
    }
    fputc('"', r->f);
}

void report_u64(struct report *r, const char *key, uint64_t v)
{
    report_key(r, key);
    fprintf(r->f, r->json ? "%llu" : "%llu\n", (unsigned long long)v);
}

void report_num(struct report *r, const char *key, double v, int decimals)
{
    report_key(r, key);
    if (!isfinite(v))
        v = 0;
    fprintf(r->f, r->json ? "%.*f" : "%.*f\n", decimals, v);
}

void report_end(struct report *r)
{
    if (r->json)
        fputs("}\n", r->f);
    fflush(r->f);
}

void report_errors(struct report *r, const struct bench_sum *s)
{
    report_u64(r, "mismatches", s->mismatches);
    report_u64(r, "lost", s->lost);
    report_u64(r, "connect_errors", s->connect_errors);
    report_u64(r, "handshake_errors", s->handshake_errors);
    report_u64(r, "handshake_timeouts", s->handshake_timeouts);
    report_u64(r, "unexpected_closes", s->unexpected_closes);
    report_u64(r, "protocol_errors", s->protocol_errors);
    report_u64(r, "close_timeouts", s->close_timeouts);
    report_u64(r, "abandoned", s->abandoned);
    report_u64(r, "closes_completed", s->closed);
    report_u64(r, "pings_answered", s->pings);
}

void report_tls(struct report *r, const struct bench_opts *o, const struct bench_sum *s,
                const char *desc)
{
    if (!o->tls)
        return;
    report_str(r, "tls", desc);
    report_str(r, "tls_verify", o->ca[0] ? "ca" : "none");
    report_u64(r, "tls_handshakes_full", s->tls_full);
    report_u64(r, "tls_handshakes_resumed", s->tls_resumed);
    report_u64(r, "tls_closes_without_close_notify", s->tls_no_close_notify);
}

bool bench_failed(const struct bench_sum *s)
{
    return s->mismatches || s->lost || s->connect_errors || s->handshake_errors ||
           s->handshake_timeouts || s->unexpected_closes || s->protocol_errors ||
           s->close_timeouts || s->abandoned;
}

void report_latency(struct report *r, const struct hist *lat)
{
    report_num(r, "latency_us_p50", (double)hist_percentile(lat, 50) / 1e3, 1);
    report_num(r, "latency_us_p99", (double)hist_percentile(lat, 99) / 1e3, 1);
    report_num(r, "latency_us_p999", (double)hist_percentile(lat, 99.9) / 1e3, 1);
    report_num(r, "latency_us_max", (double)lat->max / 1e3, 1);
}

void report_cpu(struct report *r, bool have_server, double server_s, const char *unit,
                uint64_t count, int decimals, double client_s, double window_s)
{
    if (have_server) {
        char key[64];

        snprintf(key, sizeof(key), "server_cpu_us_per_%s", unit);
        report_num(r, "server_cpu_s", server_s, 2);
        report_num(r, key, count ? server_s * 1e6 / (double)count : 0, decimals);
    }
    report_num(r, "client_cpu_pct", window_s > 0.01 ? client_s * 100.0 / window_s : 0, 1);
}
