/* fuzz_ws_ext.c - the Sec-WebSocket-Extensions parser against the promises
 * of ws_ext.h.
 *
 * Why it exists: the field is the client's text, parsed before the
 * connection is trusted with anything.  Beyond not crashing or reading past
 * the value (a heap copy of exactly its bytes), a refusal must point inside
 * the value or at its end with a reason, the offers counted must not
 * depend on the room given for them, and the grammar must compose: a
 * field that parses, listed twice, parses as twice its offers, each the
 * same. */
#include "fuzz_common.h"
#include "ws_ext.h"

#define FUZZ_OFFERS 16

static int judge(const uint8_t *data, size_t size, struct ws_pmd_offer *offers, size_t max,
                 size_t *n, struct ws_ext_stop *stop)
{
    uint8_t *copy = fuzz_dup(data, size);
    int r;

    memset(stop, 0, sizeof(*stop));
    r = ws_ext_parse((const char *)copy, size, offers, max, n, stop);
    free(copy);
    FUZZ_CHECK(r == 0 || r == -1, "result %d", r);
    if (r < 0)
        FUZZ_CHECK(stop->why && stop->pos <= size, "stopped at %zu of %zu", stop->pos, size);
    return r;
}

static bool same_offer(const struct ws_pmd_offer *a, const struct ws_pmd_offer *b)
{
    return a->valid == b->valid && a->declined == b->declined &&
           a->server_no_context_takeover == b->server_no_context_takeover &&
           a->client_no_context_takeover == b->client_no_context_takeover &&
           a->server_max_window_bits == b->server_max_window_bits &&
           a->client_max_window_bits == b->client_max_window_bits;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_pmd_offer offers[FUZZ_OFFERS], few[1], twice[2 * FUZZ_OFFERS];
    struct ws_ext_stop stop, stop2;
    size_t n, n_few, n2;
    uint8_t *doubled;
    int r;

    if (size > 4096)
        return 0;
    r = judge(data, size, offers, FUZZ_OFFERS, &n, &stop);
    FUZZ_CHECK(judge(data, size, few, 1, &n_few, &stop2) == r, "room changed the verdict");
    if (r < 0) {
        FUZZ_CHECK(stop2.pos == stop.pos, "room moved the stop");
        return 0;
    }
    FUZZ_CHECK(n_few == n, "room changed the count: %zu, %zu", n_few, n);
    for (size_t i = 0; i < n && i < FUZZ_OFFERS; i++) {
        FUZZ_CHECK(!offers[i].valid || !offers[i].server_max_window_bits ||
                   (offers[i].server_max_window_bits >= 8 && offers[i].server_max_window_bits <= 15),
                   "server bits %u", offers[i].server_max_window_bits);
        FUZZ_CHECK(offers[i].valid || offers[i].declined, "declined without a reason");
    }
    if (n && !same_offer(&few[0], &offers[0]))
        FUZZ_CHECK(false, "first offer differs with less room");
    doubled = malloc(2 * size + 1);
    if (!doubled)
        return 0;
    memcpy(doubled, data, size);
    doubled[size] = ',';
    memcpy(doubled + size + 1, data, size);
    r = judge(doubled, 2 * size + 1, twice, 2 * FUZZ_OFFERS, &n2, &stop2);
    free(doubled);
    FUZZ_CHECK(r == 0 && n2 == 2 * n, "doubled: %d, %zu offers of %zu", r, n2, n);
    for (size_t i = 0; n <= FUZZ_OFFERS && i < n; i++)
        FUZZ_CHECK(same_offer(&twice[i], &offers[i]) && same_offer(&twice[n + i], &offers[i]),
                   "doubled offer %zu differs", i);
    return 0;
}
