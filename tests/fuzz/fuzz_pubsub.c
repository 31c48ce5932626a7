/* fuzz_pubsub.c - the subscriber's command frames, topic lists, the
 * topics= query and topic rules, against docs/PUBSUB.md.
 *
 * Why it exists: these are the parsers a subscriber feeds directly.  Each
 * verdict is checked against a plain reading of the rules: a command parses
 * only when it is one of the three topic words, a space, and valid topics,
 * or `auth`, a space and the rest (the token, checked elsewhere); the
 * pieces it returns lie inside the input; a topic list's names are exactly
 * the comma-separated pieces and each is valid; a position parses only as
 * a valid topic, 16 lowercase hex digits and a decimal offset below 2^53,
 * and the positions of a `sub` each name a topic of its list; a rule parses
 * only into a valid pattern, a known policy and a bounded history. */
#include <errno.h>

#include "fuzz_common.h"
#include "pubsub_proto.h"

static bool ref_topic_char(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("-._~:/@", ch));
}

static bool ref_topic(const uint8_t *p, size_t n)
{
    if (n == 0 || n > RINGWS_MAX_TOPIC)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!ref_topic_char(p[i]))
            return false;
    return true;
}

/* A list is valid when it is non-empty and every comma-separated piece is a
 * valid topic. */
static bool ref_list(const uint8_t *p, size_t n, unsigned *count)
{
    size_t start = 0;

    *count = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == ',') {
            if (!ref_topic(p + start, i - start))
                return false;
            (*count)++;
            start = i + 1;
        }
    }
    return true;
}

static bool inside(const void *piece, size_t len, const uint8_t *p, size_t n)
{
    const uint8_t *q = piece;

    return q >= p && q + len <= p + n;
}

static void check_list(const uint8_t *p, size_t n)
{
    const char *name;
    size_t pos = 0, len;
    unsigned want_count, count = 0;
    bool want = ref_list(p, n, &want_count);
    int r;

    while ((r = topic_list_next((const char *)p, n, &pos, &name, &len)) > 0) {
        FUZZ_CHECK(inside(name, len, p, n) && ref_topic((const uint8_t *)name, len),
                   "list piece %zu bytes at %td", len, (const uint8_t *)name - p);
        count++;
        FUZZ_CHECK(count <= n, "list walk does not end");
    }
    if (n == 0) {
        FUZZ_CHECK(r == 0 && count == 0, "empty list gave %d", r);
        return;
    }
    FUZZ_CHECK((r == 0) == want, "list verdict %d, rules say %d", r, want);
    if (want)
        FUZZ_CHECK(count == want_count, "%u names, rules say %u", count, want_count);
}

/* TOPIC:EPOCH:OFFSET, read from the right. */
static bool ref_position(const uint8_t *p, size_t n, size_t *topic_len, uint64_t *offset)
{
    size_t c2 = n, c1;
    uint64_t v = 0;

    while (c2 > 0 && p[c2 - 1] != ':')
        c2--;
    if (c2 == 0 || c2 == n || n - c2 > 16)
        return false;
    c2--; /* the last ':' */
    if (c2 < 17 || p[c2 - 17] != ':')
        return false;
    c1 = c2 - 17;
    for (size_t i = c1 + 1; i < c2; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    for (size_t i = c2 + 1; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *topic_len = c1;
    *offset = v;
    return v < (1ull << 53) && ref_topic(p, c1);
}

static void check_position(const uint8_t *p, size_t n)
{
    struct topic_pos pos;
    size_t tl = 0;
    uint64_t off = 0;
    bool want = ref_position(p, n, &tl, &off);
    int r = topic_pos_parse((const char *)p, n, &pos);

    FUZZ_CHECK((r == 0) == want, "position verdict %d, rules say %d", r, want);
    if (r == 0)
        FUZZ_CHECK(pos.topic == (const char *)p && pos.topic_len == tl && pos.offset == off &&
                       !memcmp(pos.epoch, p + tl + 1, 16),
                   "position pieces");
}

static void check_command(const uint8_t *p, size_t n)
{
    struct pubsub_cmd cmd;
    const char *why = NULL;
    int r = pubsub_cmd_parse((const char *)p, n, &cmd, &why);
    unsigned count;

    if (r < 0) {
        FUZZ_CHECK(r == -EINVAL && why && why[0], "error %d without a reason", r);
        return;
    }
    FUZZ_CHECK(inside(cmd.arg, cmd.arg_len, p, n), "argument outside the input");
    switch (cmd.type) {
    case PUBSUB_CMD_SUB:
    case PUBSUB_CMD_UNSUB: {
        size_t word = cmd.type == PUBSUB_CMD_SUB ? 4 : 6;
        FUZZ_CHECK(n > word && !memcmp(p, cmd.type == PUBSUB_CMD_SUB ? "sub " : "unsub ", word),
                   "command word");
        FUZZ_CHECK(cmd.arg == (const char *)p + word, "argument does not follow the word");
        FUZZ_CHECK(ref_list((const uint8_t *)cmd.arg, cmd.arg_len, &count),
                   "accepted an invalid topic list");
        if (!cmd.positions) {
            FUZZ_CHECK(cmd.arg_len == n - word, "argument is not the rest");
            break;
        }
        FUZZ_CHECK(cmd.type == PUBSUB_CMD_SUB, "positions after unsub");
        FUZZ_CHECK(cmd.positions == cmd.arg + cmd.arg_len + 1 && cmd.arg[cmd.arg_len] == ' ' &&
                       cmd.positions + cmd.positions_len == (const char *)p + n,
                   "positions are not the rest after one space");
        {
            size_t start = 0;
            for (size_t i = 0; i <= cmd.positions_len; i++) {
                struct topic_pos tp;
                if (i < cmd.positions_len && cmd.positions[i] != ',')
                    continue;
                FUZZ_CHECK(topic_pos_parse(cmd.positions + start, i - start, &tp) == 0,
                           "accepted an invalid position");
                FUZZ_CHECK(topic_pos_find(cmd.positions, cmd.positions_len, tp.topic,
                                          tp.topic_len, &tp),
                           "a position not found again");
                start = i + 1;
            }
        }
        break;
    }
    case PUBSUB_CMD_PUB:
        FUZZ_CHECK(n > 4 && !memcmp(p, "pub ", 4), "command word");
        FUZZ_CHECK(cmd.arg == (const char *)p + 4, "topic does not follow the word");
        FUZZ_CHECK(ref_topic((const uint8_t *)cmd.arg, cmd.arg_len), "accepted an invalid topic");
        FUZZ_CHECK(inside(cmd.payload, cmd.payload_len, p, n), "payload outside the input");
        FUZZ_CHECK(cmd.payload + cmd.payload_len == (const char *)p + n,
                   "payload is not the rest");
        FUZZ_CHECK(4 + cmd.arg_len == n || p[4 + cmd.arg_len] == ' ', "no space after topic");
        break;
    case PUBSUB_CMD_AUTH:
        FUZZ_CHECK(n > 5 && !memcmp(p, "auth ", 5), "command word");
        FUZZ_CHECK(cmd.arg == (const char *)p + 5 && cmd.arg_len == n - 5,
                   "token is not the rest");
        break;
    default:
        FUZZ_CHECK(false, "unknown command type %d", (int)cmd.type);
    }
}

static void check_query(const uint8_t *p, size_t n)
{
    const char *v;
    size_t len;

    if (topic_query_find((const char *)p, n, &v, &len)) {
        FUZZ_CHECK(inside(v, len, p, n), "value outside the query");
        FUZZ_CHECK((const uint8_t *)v - p >= 7 && !memcmp(v - 7, "topics=", 7),
                   "value does not follow topics=");
        FUZZ_CHECK(!memchr(v, '&', len), "value runs into the next parameter");
    }
}

static void check_rule(const uint8_t *p, size_t n)
{
    char *spec = malloc(n + 1);
    struct ringws_topic_rule rule;

    FUZZ_CHECK(spec != NULL, "out of memory");
    memcpy(spec, p, n);
    spec[n] = '\0';
    if (ringws_topic_rule_parse(spec, &rule) == 0) {
        size_t pl = strlen(rule.pattern);
        FUZZ_CHECK(pl > 0, "empty pattern accepted");
        FUZZ_CHECK((pl == 1 && rule.pattern[0] == '*') ||
                       ref_topic((const uint8_t *)rule.pattern,
                                 rule.pattern[pl - 1] == '*' ? pl - 1 : pl),
                   "invalid pattern accepted");
        FUZZ_CHECK(rule.policy <= RINGWS_FANOUT_DROP_OLDEST, "policy %d", (int)rule.policy);
        FUZZ_CHECK(rule.history <= 1000000 && (rule.history || !rule.history_ttl_ms),
                   "history %u, ttl %u", rule.history, rule.history_ttl_ms);
    }
    free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: a read past the input faults. */
    uint8_t *p = fuzz_dup(data, size);

    check_command(p, size);
    check_position(p, size);
    check_list(p, size);
    check_query(p, size);
    check_rule(p, size);
    free(p);
    return 0;
}
