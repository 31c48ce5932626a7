/* fuzz_ws_ext.c - the Sec-WebSocket-Extensions parser against the promises
 * of ws_ext.h.
 *
 * Why it exists: the field is the client's text, parsed before the
 * connection is trusted with anything.  Beyond not crashing or reading past
 * the value (a heap copy of exactly its bytes), a refusal must point inside
 * the value or at its end with a reason, the offers counted must not
 * depend on the room given for them, and the grammar must compose: a
 * field that parses, listed twice, parses as twice its offers, each the
 * same.  What the server agrees to for each offer (ws_pmd_agree) must keep
 * to the offer's bounds, and its answer must parse back to the same
 * agreement. */
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

/* The agreement's answer, parsed as a field, says what was agreed. */
static void judge_answer(const struct ws_pmd_agreed *a)
{
    char text[WS_PMD_ANSWER_MAX];
    struct ws_pmd_offer back;
    struct ws_ext_stop stop;
    size_t len = ws_pmd_answer(a, text, sizeof(text)), n;

    FUZZ_CHECK(len > 0, "no room for the answer");
    FUZZ_CHECK(ws_ext_parse(text, len, &back, 1, &n, &stop) == 0 && n == 1 && back.valid,
               "the answer \"%s\" does not parse as one valid offer", text);
    FUZZ_CHECK(back.server_no_context_takeover == !a->server_bits &&
                   back.client_no_context_takeover == !a->client_bits &&
                   back.server_max_window_bits == a->say_server_bits &&
                   back.client_max_window_bits == a->client_bits,
               "the answer \"%s\" says other than the agreement", text);
}

/* Each offer, with the server stateless and with windows of its own. */
static void judge_agree(const struct ws_pmd_offer *o)
{
    static const unsigned takeover[] = {0, WS_PMD_MIN_SERVER_BITS, 11, 15};

    for (size_t i = 0; i < sizeof(takeover) / sizeof(takeover[0]); i++) {
        struct ws_pmd_agreed a;
        unsigned cbits = o->client_max_window_bits == WS_PMD_BITS_ANY ? 15
                                                                      : o->client_max_window_bits;

        if (!ws_pmd_agree(o, takeover[i], &a)) {
            FUZZ_CHECK(!o->valid || o->server_max_window_bits, "a plain offer declined");
            continue;
        }
        FUZZ_CHECK(o->valid, "a declined offer agreed to");
        FUZZ_CHECK(a.server_bits <= takeover[i] && a.client_bits <= takeover[i],
                   "windows %u, %u past %u", a.server_bits, a.client_bits, takeover[i]);
        FUZZ_CHECK(!a.server_bits || (a.server_bits >= WS_PMD_MIN_SERVER_BITS &&
                                      !o->server_no_context_takeover &&
                                      (!o->server_max_window_bits ||
                                       a.server_bits <= o->server_max_window_bits)),
                   "server window %u against the offer", a.server_bits);
        FUZZ_CHECK(!a.client_bits || (!o->client_no_context_takeover && cbits &&
                                      a.client_bits <= cbits),
                   "client window %u against the offer", a.client_bits);
        FUZZ_CHECK(!o->server_max_window_bits == !a.say_server_bits,
                   "server_max_window_bits answered %u for an offer of %u", a.say_server_bits,
                   o->server_max_window_bits);
        judge_answer(&a);
    }
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
        judge_agree(&offers[i]);
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
