/* pubsub_proto.c - topic names, topic lists, subscriber commands and topic
 * rules; pure functions (see pubsub_proto.h). */
#include <errno.h>
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
    if (!topic_list_valid(arg, arg_len)) {
        *why = "invalid topic";
        return -EINVAL;
    }
    cmd->arg = arg;
    cmd->arg_len = arg_len;
    return 0;
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

int ringws_topic_rule_parse(char *spec, struct ringws_topic_rule *rule)
{
    static const struct {
        const char *name;
        enum ringws_fanout_policy policy;
    } policies[] = {
        {"close-1013", RINGWS_FANOUT_CLOSE_TRY_AGAIN},
        {"close-1008", RINGWS_FANOUT_CLOSE_POLICY},
        {"drop-oldest", RINGWS_FANOUT_DROP_OLDEST},
    };
    char *eq = strchr(spec, '=');
    char *opts, *comma;
    size_t plen;

    if (!eq)
        return -EINVAL;
    *eq = '\0';
    opts = eq + 1;
    plen = strlen(spec);
    if (!topic_pattern_valid(spec, plen))
        return -EINVAL;
    comma = strchr(opts, ',');
    if (comma) {
        if (strcmp(comma + 1, "publish"))
            return -EINVAL;
        *comma = '\0';
    }
    *rule = (struct ringws_topic_rule){.pattern = spec, .client_publish = comma != NULL};
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
        if (!strcmp(opts, policies[i].name)) {
            rule->policy = policies[i].policy;
            return 0;
        }
    }
    return -EINVAL;
}
