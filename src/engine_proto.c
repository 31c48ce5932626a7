/* engine_proto.c - the Redis engine's own text formats (engine_proto.h).
 *
 * Why it exists: see engine_proto.h; the engine (engine_redis.c) only
 * calls these and acts on what they found. */
#include <errno.h>
#include <string.h>

#include "engine_proto.h"
#include "pubsub_proto.h"
#include "utf8.h"

/* A decimal number of s[*i..n) up to max (no sign, no empty one); the
 * index moves past it. */
static bool engine_decimal(const char *s, size_t n, size_t *i, uint64_t max, uint64_t *out)
{
    size_t start = *i;
    uint64_t v = 0;

    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        unsigned d = (unsigned)(s[*i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
        (*i)++;
    }
    *out = v;
    return *i > start;
}

int engine_msg_parse(const char *s, size_t n, struct engine_msg *out)
{
    size_t i = ENGINE_EPOCH_LEN;

    if (n < ENGINE_EPOCH_LEN + 5 || s[i] != ' ')
        return -EINVAL;
    for (size_t k = 0; k < ENGINE_EPOCH_LEN; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f')))
            return -EINVAL;
    i++;
    if (!engine_decimal(s, n, &i, ENGINE_MAX_OFFSET, &out->offset) || !out->offset)
        return -EINVAL;
    if (n - i < 3 || s[i] != ' ' || (s[i + 1] != 't' && s[i + 1] != 'b') || s[i + 2] != ' ')
        return -EINVAL;
    out->binary = s[i + 1] == 'b';
    i += 3;
    if (!engine_decimal(s, n, &i, UINT64_MAX / 1000, &out->published_us) || i >= n || s[i] != ' ')
        return -EINVAL;
    memcpy(out->epoch, s, ENGINE_EPOCH_LEN);
    out->payload = s + i + 1;
    out->len = n - i - 1;
    if (!out->binary && !utf8_valid((const uint8_t *)out->payload, out->len))
        return -EILSEQ;
    return 0;
}

bool engine_channel_topic(const char *ch, size_t n, const char **name, size_t *len)
{
    static const char pre[] = "ringws:{", post[] = "}:c";

    if (n < sizeof(pre) - 1 + sizeof(post) - 1 || memcmp(ch, pre, sizeof(pre) - 1) ||
        memcmp(ch + n - (sizeof(post) - 1), post, sizeof(post) - 1))
        return false;
    *name = ch + sizeof(pre) - 1;
    *len = n - (sizeof(pre) - 1) - (sizeof(post) - 1);
    return topic_name_valid(*name, *len);
}

int engine_redirect_parse(const char *s, size_t n, struct engine_redirect *out)
{
    size_t i, colon, hl;
    uint64_t v;

    if (n >= 6 && !memcmp(s, "MOVED ", 6))
        out->ask = false, i = 6;
    else if (n >= 4 && !memcmp(s, "ASK ", 4))
        out->ask = true, i = 4;
    else
        return -EINVAL;
    if (!engine_decimal(s, n, &i, 16383, &v) || i >= n || s[i] != ' ')
        return -EINVAL;
    out->slot = (uint16_t)v;
    i++;
    for (colon = n; colon > i && s[colon - 1] != ':'; colon--)
        ;
    if (colon == i)
        return -EINVAL;
    hl = colon - 1 - i;
    if (!hl || hl >= sizeof(out->host))
        return -EINVAL;
    for (size_t k = i; k < colon - 1; k++)
        if (s[k] <= ' ' || s[k] > '~') /* an address is printable, without spaces */
            return -EINVAL;
    memcpy(out->host, s + i, hl);
    out->host[hl] = '\0';
    if (!engine_decimal(s, n, &colon, 65535, &v) || colon != n || !v)
        return -EINVAL;
    out->port = (uint16_t)v;
    return 0;
}
