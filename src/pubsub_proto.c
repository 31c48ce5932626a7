/* pubsub_proto.c - topic names, topic lists, subscriber commands, topic
 * rules and the envelope's frame head; pure functions (see pubsub_proto.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pubsub_proto.h"

static bool topic_char_valid(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
           ch == '~' || ch == ':' || ch == '/' || ch == '@';
}

bool topic_name_valid(const char *p, size_t n)
{
    if (n == 0 || n > RINGWS_MAX_TOPIC)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!topic_char_valid((unsigned char)p[i]))
            return false;
    return true;
}

bool ringws_topic_valid(const char *topic, size_t len)
{
    return topic_name_valid(topic, len);
}

int topic_list_next(const char *list, size_t list_len, size_t *pos,
                    const char **name, size_t *len)
{
    size_t start = *pos, end;

    if (start > list_len || (start == list_len && start > 0 && list[start - 1] != ','))
        return 0;
    if (start == list_len)
        return list_len ? -EINVAL : 0; /* a trailing comma, or nothing at all */
    end = start;
    while (end < list_len && list[end] != ',')
        end++;
    if (!topic_name_valid(list + start, end - start))
        return -EINVAL;
    *name = list + start;
    *len = end - start;
    *pos = end < list_len ? end + 1 : end;
    return 1;
}

bool query_param_find(const char *query, size_t query_len, const char *key,
                      const char **value, size_t *value_len)
{
    size_t kl = strlen(key), i = 0;

    while (i < query_len) {
        size_t end = i;
        while (end < query_len && query[end] != '&')
            end++;
        if (end - i > kl && !memcmp(query + i, key, kl) && query[i + kl] == '=') {
            *value = query + i + kl + 1;
            *value_len = end - i - kl - 1;
            return true;
        }
        i = end + 1;
    }
    return false;
}

bool topic_query_find(const char *query, size_t query_len, const char **value,
                      size_t *value_len)
{
    return query_param_find(query, query_len, "topics", value, value_len);
}

bool topic_list_valid(const char *list, size_t list_len)
{
    const char *name;
    size_t pos = 0, len;
    int r;

    while ((r = topic_list_next(list, list_len, &pos, &name, &len)) > 0)
        ;
    return r == 0 && list_len > 0;
}

int pubsub_cmd_parse(const char *p, size_t n, struct pubsub_cmd *cmd, const char **why)
{
    static const struct {
        const char *word;
        enum pubsub_cmd_type type;
    } words[] = {
        {"sub", PUBSUB_CMD_SUB},
        {"unsub", PUBSUB_CMD_UNSUB},
        {"pub", PUBSUB_CMD_PUB},
        {"auth", PUBSUB_CMD_AUTH},
    };
    const char *arg = NULL;
    size_t arg_len = 0;

    memset(cmd, 0, sizeof(*cmd));
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]) && !arg; i++) {
        size_t wl = strlen(words[i].word);
        if (n > wl && !memcmp(p, words[i].word, wl) && p[wl] == ' ') {
            cmd->type = words[i].type;
            arg = p + wl + 1;
            arg_len = n - wl - 1;
        }
    }
    if (!arg) {
        *why = "unknown command";
        return -EINVAL;
    }
    if (cmd->type == PUBSUB_CMD_AUTH) {
        if (!arg_len) {
            *why = "missing token";
            return -EINVAL;
        }
        cmd->arg = arg;
        cmd->arg_len = arg_len;
        return 0;
    }
    if (cmd->type == PUBSUB_CMD_PUB) {
        const char *sp = memchr(arg, ' ', arg_len);
        size_t topic_len = sp ? (size_t)(sp - arg) : arg_len;
        if (!topic_name_valid(arg, topic_len)) {
            *why = "invalid topic";
            return -EINVAL;
        }
        cmd->arg = arg;
        cmd->arg_len = topic_len;
        cmd->payload = sp ? sp + 1 : arg + arg_len;
        cmd->payload_len = sp ? arg_len - topic_len - 1 : 0;
        return 0;
    }
    if (cmd->type == PUBSUB_CMD_SUB) {
        const char *sp = memchr(arg, ' ', arg_len);
        if (sp) {
            cmd->positions = sp + 1;
            cmd->positions_len = arg_len - (size_t)(sp - arg) - 1;
            arg_len = (size_t)(sp - arg);
        }
    }
    if (!topic_list_valid(arg, arg_len)) {
        *why = "invalid topic";
        return -EINVAL;
    }
    if (cmd->positions &&
        !topic_pos_list_valid(arg, arg_len, cmd->positions, cmd->positions_len)) {
        *why = "invalid position";
        return -EINVAL;
    }
    cmd->arg = arg;
    cmd->arg_len = arg_len;
    return 0;
}

int topic_pos_parse(const char *p, size_t n, struct topic_pos *out)
{
    const char *c2 = NULL, *c1 = NULL;
    uint64_t off = 0;
    size_t digits;

    for (size_t i = n; i-- > 0 && !c1;) {
        if (p[i] != ':')
            continue;
        if (!c2)
            c2 = p + i;
        else
            c1 = p + i;
    }
    if (!c1 || c2 - c1 - 1 != TOPIC_POS_EPOCH_LEN ||
        !topic_name_valid(p, (size_t)(c1 - p)))
        return -EINVAL;
    for (size_t i = 0; i < TOPIC_POS_EPOCH_LEN; i++) {
        char ch = c1[1 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return -EINVAL;
    }
    digits = n - (size_t)(c2 + 1 - p);
    if (!digits || digits > 16)
        return -EINVAL;
    for (size_t i = 0; i < digits; i++) {
        char ch = c2[1 + i];
        if (ch < '0' || ch > '9')
            return -EINVAL;
        off = off * 10 + (uint64_t)(ch - '0');
    }
    if (off > TOPIC_POS_MAX_OFFSET)
        return -EINVAL;
    out->topic = p;
    out->topic_len = (size_t)(c1 - p);
    memcpy(out->epoch, c1 + 1, TOPIC_POS_EPOCH_LEN);
    out->offset = off;
    return 0;
}

/* Walks a comma-separated position list like topic_list_next. */
static int topic_pos_next(const char *list, size_t list_len, size_t *pos,
                          struct topic_pos *out)
{
    size_t start = *pos, end;

    if (start > list_len || (start == list_len && start > 0 && list[start - 1] != ','))
        return 0;
    if (start == list_len)
        return -EINVAL; /* a trailing comma, or nothing at all */
    end = start;
    while (end < list_len && list[end] != ',')
        end++;
    if (topic_pos_parse(list + start, end - start, out) < 0)
        return -EINVAL;
    *pos = end < list_len ? end + 1 : end;
    return 1;
}

static bool topic_list_has(const char *list, size_t list_len, const char *name, size_t len)
{
    const char *t;
    size_t pos = 0, n;

    while (topic_list_next(list, list_len, &pos, &t, &n) > 0)
        if (n == len && !memcmp(t, name, len))
            return true;
    return false;
}

bool topic_pos_list_valid(const char *topics, size_t topics_len, const char *positions,
                          size_t positions_len)
{
    struct topic_pos tp, seen;
    size_t pos = 0, k = 0;
    int r;

    while ((r = topic_pos_next(positions, positions_len, &pos, &tp)) > 0) {
        size_t before = 0;
        if (!topic_list_has(topics, topics_len, tp.topic, tp.topic_len))
            return false;
        for (size_t i = 0; i < k; i++) { /* named once: the first would hide it */
            topic_pos_next(positions, positions_len, &before, &seen);
            if (seen.topic_len == tp.topic_len && !memcmp(seen.topic, tp.topic, tp.topic_len))
                return false;
        }
        k++;
    }
    return r == 0;
}

bool topic_pos_find(const char *positions, size_t positions_len, const char *topic,
                    size_t topic_len, struct topic_pos *out)
{
    size_t pos = 0;

    while (topic_pos_next(positions, positions_len, &pos, out) > 0)
        if (out->topic_len == topic_len && !memcmp(out->topic, topic, topic_len))
            return true;
    return false;
}

bool topic_pattern_valid(const char *p, size_t n)
{
    if (n == 1 && p[0] == '*')
        return true;
    return n && topic_name_valid(p, p[n - 1] == '*' ? n - 1 : n);
}

bool topic_pattern_match(const char *pattern, const char *topic, size_t len)
{
    size_t pl = strlen(pattern);

    if (pl && pattern[pl - 1] == '*')
        return len >= pl - 1 && !memcmp(pattern, topic, pl - 1);
    return pl == len && !memcmp(pattern, topic, len);
}

const struct ringws_topic_rule *topic_rule_match(const struct ringws_topic_rule *rules,
                                                 size_t n_rules, const char *topic,
                                                 size_t len)
{
    for (size_t i = 0; i < n_rules; i++)
        if (rules[i].pattern && topic_pattern_match(rules[i].pattern, topic, len))
            return &rules[i];
    return NULL;
}

/* "history-ttl=" values: a number with s (the default), m, h or ms. */
static int topic_rule_duration(const char *v, unsigned *ms)
{
    static const struct {
        const char *suffix;
        unsigned long long ms;
    } units[] = {{"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60000}, {"h", 3600000}};
    unsigned long long n = 0;
    const char *p = v;

    while (*p >= '0' && *p <= '9' && n < (1ull << 40))
        n = n * 10 + (unsigned long long)(*p++ - '0');
    if (p == v)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!strcmp(p, units[i].suffix)) {
            if (!n || n * units[i].ms > UINT32_MAX)
                return -EINVAL;
            *ms = (unsigned)(n * units[i].ms);
            return 0;
        }
    }
    return -EINVAL;
}

/* "history=N": 1 to 1,000,000 messages. */
static int topic_rule_count(const char *v, unsigned *n)
{
    unsigned long long x = 0;
    const char *p = v;

    while (*p >= '0' && *p <= '9' && x <= 1000000)
        x = x * 10 + (unsigned long long)(*p++ - '0');
    if (p == v || *p || !x || x > 1000000)
        return -EINVAL;
    *n = (unsigned)x;
    return 0;
}

/* One option of a rule: a policy (once), publish, history=N,
 * history-ttl=T. */
static int topic_rule_option(const char *opt, struct ringws_topic_rule *rule, bool *policy)
{
    static const struct {
        const char *name;
        enum ringws_fanout_policy policy;
    } policies[] = {
        {"close-1013", RINGWS_FANOUT_CLOSE_TRY_AGAIN},
        {"close-1008", RINGWS_FANOUT_CLOSE_POLICY},
        {"drop-oldest", RINGWS_FANOUT_DROP_OLDEST},
    };

    if (!strcmp(opt, "publish")) {
        rule->client_publish = true;
        return 0;
    }
    if (!strncmp(opt, "history=", 8))
        return topic_rule_count(opt + 8, &rule->history);
    if (!strncmp(opt, "history-ttl=", 12))
        return topic_rule_duration(opt + 12, &rule->history_ttl_ms);
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        if (!strcmp(opt, policies[i].name) && !*policy) {
            rule->policy = policies[i].policy;
            *policy = true;
            return 0;
        }
    }
    return -EINVAL;
}

/* PATTERN=OPTION[,OPTION...]: the policy may be left out (close-1013)
 * when another option is given. */
int ringws_topic_rule_parse(char *spec, struct ringws_topic_rule *rule)
{
    char *eq = strchr(spec, '=');
    char *opts, *opt, *save = NULL;
    bool policy = false;

    if (!eq)
        return -EINVAL;
    *eq = '\0';
    opts = eq + 1;
    if (!topic_pattern_valid(spec, strlen(spec)) || !*opts || opts[strlen(opts) - 1] == ',' ||
        strstr(opts, ",,"))
        return -EINVAL;
    *rule = (struct ringws_topic_rule){.pattern = spec, .policy = RINGWS_FANOUT_CLOSE_TRY_AGAIN};
    for (opt = strtok_r(opts, ",", &save); opt; opt = strtok_r(NULL, ",", &save))
        if (topic_rule_option(opt, rule, &policy) < 0)
            return -EINVAL;
    if (rule->history_ttl_ms && !rule->history)
        return -EINVAL; /* an age limit of nothing kept */
    return 0;
}

size_t envelope_head(uint8_t *out, size_t cap, unsigned opcode, bool deflated, const char *topic,
                     size_t topic_len, const char epoch[TOPIC_POS_EPOCH_LEN], uint64_t offset,
                     size_t payload_len)
{
    char line[ENVELOPE_HEAD_MAX];
    uint8_t hdr[WS_MAX_SERVER_HEADER + ENVELOPE_STORED_HDR];
    int n = snprintf(line, sizeof(line), "msg %.*s %.*s %" PRIu64 "\n", (int)topic_len, topic,
                     TOPIC_POS_EPOCH_LEN, epoch, offset);
    size_t h, stored = deflated ? ENVELOPE_STORED_HDR : 0;

    if (n < 0 || (size_t)n >= sizeof(line) || topic_len > RINGWS_MAX_TOPIC)
        return 0;
    h = ws_frame_header(hdr, WS_FIN | (deflated ? WS_RSV1 : 0) | (opcode & 0x0f),
                        stored + (size_t)n + payload_len);
    if (deflated) {
        hdr[h] = 0;
        hdr[h + 1] = (uint8_t)n;
        hdr[h + 2] = (uint8_t)((unsigned)n >> 8);
        hdr[h + 3] = (uint8_t)~hdr[h + 1];
        hdr[h + 4] = (uint8_t)~hdr[h + 2];
        h += stored;
    }
    if (h + (size_t)n > cap)
        return 0;
    memcpy(out, hdr, h);
    memcpy(out + h, line, (size_t)n);
    return h + (size_t)n;
}

unsigned envelope_pieces(const uint8_t *head, size_t head_len, const uint8_t *payload,
                         size_t payload_len, size_t off, struct iovec iov[2])
{
    if (off >= head_len) {
        iov[0] = (struct iovec){(void *)(payload + (off - head_len)), payload_len - (off - head_len)};
        return 1;
    }
    iov[0] = (struct iovec){(void *)(head + off), head_len - off};
    if (!payload_len)
        return 1;
    iov[1] = (struct iovec){(void *)payload, payload_len};
    return 2;
}
