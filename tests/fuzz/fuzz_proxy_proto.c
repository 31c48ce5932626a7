/* fuzz_proxy_proto.c - the PROXY protocol parser, fed every prefix of the
 * input, against the promises of proxy_proto.h.
 *
 * Why it exists: the header arrives in as many pieces as the network
 * makes, and conn_proxy.c feeds the parser a growing buffer until it
 * decides.  So the verdict must not depend on the cut: every prefix before
 * the decision waits (and says it stopped at its end), every prefix from
 * the decision on gives the same verdict at the same place, a refusal
 * points inside the bytes given, and a header parses the same alone as with
 * the client's bytes after it.  A v2 address is checked against the bytes
 * it came from.  Each prefix is a window of one heap copy, with the rest
 * poisoned, so any read past it faults. */
#include "fuzz_common.h"
#include "proxy_proto.h"

struct verdict {
    int r;
    struct proxy_stop stop;
    struct proxy_header h;
};

static struct verdict judge(const uint8_t *block, size_t size, size_t k)
{
    struct verdict v;

    memset(&v, 0, sizeof(v));
    fuzz_window(block, size, 0, k);
    v.r = proxy_parse(block, k, &v.h, &v.stop);
    fuzz_window_clear(block, size);
    return v;
}

static void check_same(const struct verdict *a, const struct verdict *b, size_t k)
{
    FUZZ_CHECK(a->r == b->r && a->stop.pos == b->stop.pos,
               "prefix %zu: %d at %zu (%s), before %d at %zu (%s)", k, b->r, b->stop.pos,
               b->stop.why, a->r, a->stop.pos, a->stop.why);
    if (a->r > 0)
        FUZZ_CHECK(a->h.version == b->h.version && a->h.has_addr == b->h.has_addr &&
                   a->h.addr_len == b->h.addr_len && !memcmp(&a->h.src, &b->h.src, sizeof(a->h.src)) &&
                   !memcmp(&a->h.dst, &b->h.dst, sizeof(a->h.dst)), "prefix %zu: other addresses", k);
}

/* A v2 header's source address is the bytes right after its 16 fixed ones. */
static void check_v2_addr(const uint8_t *p, const struct proxy_header *h)
{
    if (h->version != 2 || !h->has_addr)
        return;
    if (h->src.sa.sa_family == AF_INET)
        FUZZ_CHECK(!memcmp(&h->src.in4.sin_addr, p + 16, 4) &&
                   !memcmp(&h->src.in4.sin_port, p + 24, 2), "v2 IPv4 source");
    else
        FUZZ_CHECK(h->src.sa.sa_family == AF_INET6 &&
                   !memcmp(&h->src.in6.sin6_addr, p + 16, 16) &&
                   !memcmp(&h->src.in6.sin6_port, p + 48, 2), "v2 IPv6 source");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct verdict first = {PROXY_NEED_MORE, {0, NULL}, {0}};
    uint8_t *p;
    bool decided = false;

    if (size > PROXY_MAX_HEADER + 64)
        return 0;
    p = fuzz_dup(data, size);
    for (size_t k = 0; k <= size; k++) {
        struct verdict v = judge(p, size, k);

        FUZZ_CHECK(v.stop.why != NULL, "prefix %zu: no reason given", k);
        if (!decided && v.r == PROXY_NEED_MORE) {
            FUZZ_CHECK(v.stop.pos == k, "prefix %zu waits but stopped at %zu", k, v.stop.pos);
            continue;
        }
        if (!decided) {
            decided = true;
            first = v;
            FUZZ_CHECK(v.r == PROXY_BAD || v.r > 0, "prefix %zu: result %d", k, v.r);
            FUZZ_CHECK(v.r == PROXY_BAD ? v.stop.pos < k : (size_t)v.r == k,
                       "prefix %zu decided %d at %zu", k, v.r, v.stop.pos);
            if (v.r > 0) {
                FUZZ_CHECK(v.r <= PROXY_MAX_HEADER && (v.h.version == 1 || v.h.version == 2),
                           "header of %d bytes, version %u", v.r, v.h.version);
                FUZZ_CHECK(v.h.version != 1 || v.r <= PROXY_V1_MAX, "v1 of %d bytes", v.r);
                check_v2_addr(p, &v.h);
            }
            continue;
        }
        check_same(&first, &v, k);
    }
    free(p);
    return 0;
}
