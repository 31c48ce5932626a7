/* test_pubsub_proto.c - topic names, topic lists, subscriber commands,
 * topic rules and the envelope's frame head (src/pubsub_proto.c) against
 * the rules of docs/PUBSUB.md; a compressed envelope inflates (libdeflate,
 * as a peer's inflater would) to its line and the payload. */
#include <errno.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pubsub_proto.h"

static bool name_ok(const char *s)
{
    return topic_name_valid(s, strlen(s));
}

static void test_names(void)
{
    char longest[RINGWS_MAX_TOPIC + 2];

    CHECK(name_ok("a"));
    CHECK(name_ok("news.sport:eu/live@2-x_y~z"));
    CHECK(name_ok("ABCxyz0189"));
    CHECK(!name_ok(""));
    CHECK(!name_ok("a b"));
    CHECK(!name_ok("a,b"));
    CHECK(!name_ok("a%20"));
    CHECK(!name_ok("a*"));
    CHECK(!name_ok("caf\xc3\xa9"));
    CHECK(!topic_name_valid("a\0b", 3));
    memset(longest, 'x', sizeof(longest));
    CHECK(topic_name_valid(longest, RINGWS_MAX_TOPIC));
    CHECK(!topic_name_valid(longest, RINGWS_MAX_TOPIC + 1));
    /* Every byte outside the allowed set is refused. */
    for (int ch = 0; ch < 256; ch++) {
        char s[1] = {(char)ch};
        bool want = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || strchr("-._~:/@", ch) != NULL;
        if (ch == 0)
            want = false;
        CHECKF(topic_name_valid(s, 1) == want, "byte 0x%02x", ch);
    }
}

/* The names of a list joined by '|', or "ERR" when the list is invalid. */
static const char *list_walk(const char *list)
{
    static char out[512];
    const char *name;
    size_t pos = 0, len, o = 0;
    int r;

    out[0] = '\0';
    while ((r = topic_list_next(list, strlen(list), &pos, &name, &len)) > 0) {
        if (o)
            out[o++] = '|';
        memcpy(out + o, name, len);
        o += len;
        out[o] = '\0';
    }
    return r < 0 ? "ERR" : out;
}

static void test_lists(void)
{
    CHECK(!strcmp(list_walk("a"), "a"));
    CHECK(!strcmp(list_walk("a,b,c"), "a|b|c"));
    CHECK(!strcmp(list_walk(""), ""));
    CHECK(!strcmp(list_walk("a,"), "ERR"));
    CHECK(!strcmp(list_walk(",a"), "ERR"));
    CHECK(!strcmp(list_walk("a,,b"), "ERR"));
    CHECK(!strcmp(list_walk("a,b c"), "ERR"));
    CHECK(!strcmp(list_walk(","), "ERR"));
}

static const char *query_topics(const char *q)
{
    static char out[256];
    const char *v;
    size_t n;

    if (!topic_query_find(q, strlen(q), &v, &n))
        return "NONE";
    memcpy(out, v, n);
    out[n] = '\0';
    return out;
}

static void test_query(void)
{
    CHECK(!strcmp(query_topics("topics=a,b"), "a,b"));
    CHECK(!strcmp(query_topics("x=1&topics=a&y=2"), "a"));
    CHECK(!strcmp(query_topics("topics="), ""));
    CHECK(!strcmp(query_topics("mytopics=a"), "NONE"));
    CHECK(!strcmp(query_topics("topic=a"), "NONE"));
    CHECK(!strcmp(query_topics(""), "NONE"));
    CHECK(!strcmp(query_topics("&&topics=z"), "z"));
}

static int cmd(const char *s, struct pubsub_cmd *c)
{
    const char *why = NULL;
    int r = pubsub_cmd_parse(s, strlen(s), c, &why);

    if (r < 0)
        CHECK(why != NULL && why[0]);
    return r;
}

static void test_commands(void)
{
    struct pubsub_cmd c;

    CHECK(cmd("sub a,b", &c) == 0 && c.type == PUBSUB_CMD_SUB && c.arg_len == 3 &&
          !memcmp(c.arg, "a,b", 3));
    CHECK(cmd("unsub a", &c) == 0 && c.type == PUBSUB_CMD_UNSUB && c.arg_len == 1);
    CHECK(cmd("pub t hello world", &c) == 0 && c.type == PUBSUB_CMD_PUB &&
          c.arg_len == 1 && c.payload_len == 11 && !memcmp(c.payload, "hello world", 11));
    CHECK(cmd("pub t ", &c) == 0 && c.payload_len == 0);
    CHECK(cmd("pub t", &c) == 0 && c.payload_len == 0);
    CHECK(cmd("pub t  two", &c) == 0 && c.payload_len == 4 && c.payload[0] == ' ');
    CHECK(cmd("sub", &c) == -EINVAL);
    CHECK(cmd("sub ", &c) == -EINVAL);
    CHECK(cmd("sub a,", &c) == -EINVAL);
    CHECK(cmd("sub a b", &c) == -EINVAL);
    CHECK(cmd("SUB a", &c) == -EINVAL);
    CHECK(cmd("subscribe a", &c) == -EINVAL);
    CHECK(cmd("pub", &c) == -EINVAL);
    CHECK(cmd("pub  x", &c) == -EINVAL);
    CHECK(cmd("pub a,b x", &c) == -EINVAL);
    CHECK(cmd("", &c) == -EINVAL);
    CHECK(cmd("hello", &c) == -EINVAL);
    CHECK(cmd("auth a.b.c", &c) == 0 && c.type == PUBSUB_CMD_AUTH && c.arg_len == 5 &&
          !memcmp(c.arg, "a.b.c", 5));
    CHECK(cmd("auth", &c) == -EINVAL);
    CHECK(cmd("auth ", &c) == -EINVAL);
    CHECK(cmd("AUTH x", &c) == -EINVAL);
}

/* Token claims and topic rules share the pattern syntax. */
static void test_patterns(void)
{
    const char *q = "topics=a&token=x.y.z&tokens=no";
    const char *v;
    size_t n;

    CHECK(topic_pattern_valid("*", 1) && topic_pattern_valid("news", 4) &&
          topic_pattern_valid("news.*", 6));
    CHECK(!topic_pattern_valid("", 0) && !topic_pattern_valid("**", 2) &&
          !topic_pattern_valid("a*b", 3) && !topic_pattern_valid("a b", 3));
    CHECK(topic_pattern_match("news.*", "news.eu", 7) && topic_pattern_match("news.*", "news.", 5));
    CHECK(!topic_pattern_match("news.*", "news", 4) && !topic_pattern_match("news", "news.eu", 7));
    CHECK(topic_pattern_match("*", "x", 1) && topic_pattern_match("news", "news", 4));
    CHECK(query_param_find(q, strlen(q), "token", &v, &n) && n == 5 && !memcmp(v, "x.y.z", 5));
    CHECK(!query_param_find(q, strlen(q), "toke", &v, &n));
    CHECK(!query_param_find("token", 5, "token", &v, &n));
}

static void test_rules(void)
{
    char s1[] = "chat.*=drop-oldest,publish", s2[] = "alerts=close-1008",
         s3[] = "*=close-1013", bad1[] = "x=slow", bad2[] = "=close-1008",
         bad3[] = "a b=close-1008", bad4[] = "x=drop-oldest,write", bad5[] = "x",
         s4[] = "chat.*=drop-oldest";
    struct ringws_topic_rule r[3];
    const struct ringws_topic_rule *m;

    CHECK(ringws_topic_rule_parse(s1, &r[0]) == 0 && !strcmp(r[0].pattern, "chat.*") &&
          r[0].policy == RINGWS_FANOUT_DROP_OLDEST && r[0].client_publish);
    CHECK(ringws_topic_rule_parse(s2, &r[1]) == 0 && r[1].policy == RINGWS_FANOUT_CLOSE_POLICY &&
          !r[1].client_publish);
    CHECK(ringws_topic_rule_parse(s3, &r[2]) == 0 && r[2].policy == RINGWS_FANOUT_CLOSE_TRY_AGAIN);
    CHECK(ringws_topic_rule_parse(bad1, &r[0]) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad2, &r[0]) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad3, &r[0]) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad4, &r[0]) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad5, &r[0]) == -EINVAL);

    CHECK(ringws_topic_rule_parse(s4, &r[0]) == 0);
    m = topic_rule_match(r, 3, "chat.room1", 10);
    CHECK(m == &r[0]);
    m = topic_rule_match(r, 3, "chat.", 5);
    CHECK(m == &r[0]);
    m = topic_rule_match(r, 3, "chat", 4);
    CHECK(m == &r[2]);
    m = topic_rule_match(r, 3, "alerts", 6);
    CHECK(m == &r[1]);
    m = topic_rule_match(r, 3, "alertsX", 7);
    CHECK(m == &r[2]);
    CHECK(topic_rule_match(r, 2, "other", 5) == NULL);
    CHECK(topic_rule_match(NULL, 0, "other", 5) == NULL);
}

/* history=N and history-ttl=T beside the policy, which may then be left
 * out (docs/PUBSUB.md, "Topic rules"). */
static void test_rules_history(void)
{
    char s1[] = "news.*=close-1013,history=1000,history-ttl=5m", s2[] = "a=history=5",
         s3[] = "b=publish,history=2,history-ttl=1500ms,drop-oldest",
         bad1[] = "x=history=0", bad2[] = "x=history=abc", bad3[] = "x=history-ttl=5m",
         bad4[] = "x=history=5,history-ttl=5y", bad5[] = "x=close-1013,close-1008",
         bad6[] = "x=history=5,", bad7[] = "x=", bad8[] = "x=history=1000001";
    struct ringws_topic_rule r;

    CHECK(ringws_topic_rule_parse(s1, &r) == 0 && r.history == 1000 &&
          r.history_ttl_ms == 300000 && r.policy == RINGWS_FANOUT_CLOSE_TRY_AGAIN);
    CHECK(ringws_topic_rule_parse(s2, &r) == 0 && r.history == 5 && !r.history_ttl_ms &&
          r.policy == RINGWS_FANOUT_CLOSE_TRY_AGAIN && !r.client_publish);
    CHECK(ringws_topic_rule_parse(s3, &r) == 0 && r.history == 2 && r.history_ttl_ms == 1500 &&
          r.policy == RINGWS_FANOUT_DROP_OLDEST && r.client_publish);
    CHECK(ringws_topic_rule_parse(bad1, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad2, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad3, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad4, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad5, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad6, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad7, &r) == -EINVAL);
    CHECK(ringws_topic_rule_parse(bad8, &r) == -EINVAL);
}

/* Positions: TOPIC:EPOCH:OFFSET, the topic may hold ':'. */
static void test_positions(void)
{
    static const char e[] = "0123456789abcdef";
    struct topic_pos p;
    struct pubsub_cmd cmd;
    const char *why;
    char buf[256];

    snprintf(buf, sizeof(buf), "a:b:%s:42", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == 0 && p.topic_len == 3 &&
          !memcmp(p.topic, "a:b", 3) && !memcmp(p.epoch, e, 16) && p.offset == 42);
    snprintf(buf, sizeof(buf), "news:%s:0", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == 0 && p.offset == 0);
    snprintf(buf, sizeof(buf), "news:%s:9007199254740991", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == 0 && p.offset == (1ull << 53) - 1);
    snprintf(buf, sizeof(buf), "news:%s:9007199254740992", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    snprintf(buf, sizeof(buf), "news:0123456789ABCDEF:1");
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    snprintf(buf, sizeof(buf), "news:0123456789abcde:1");
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    snprintf(buf, sizeof(buf), "news:%s:", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    snprintf(buf, sizeof(buf), "news:%s:-1", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    snprintf(buf, sizeof(buf), ":%s:1", e);
    CHECK(topic_pos_parse(buf, strlen(buf), &p) == -EINVAL);
    CHECK(topic_pos_parse("news:1", 6, &p) == -EINVAL);

    snprintf(buf, sizeof(buf), "a:%s:1,b:%s:2", e, e);
    CHECK(topic_pos_list_valid("a,b", 3, buf, strlen(buf)));
    CHECK(topic_pos_find(buf, strlen(buf), "b", 1, &p) && p.offset == 2);
    CHECK(!topic_pos_find(buf, strlen(buf), "c", 1, &p));
    CHECK(!topic_pos_list_valid("a", 1, buf, strlen(buf)));    /* b not in the list */
    snprintf(buf, sizeof(buf), "a:%s:1,a:%s:2", e, e);
    CHECK(!topic_pos_list_valid("a,b", 3, buf, strlen(buf)));  /* a twice */
    snprintf(buf, sizeof(buf), "a:%s:1,", e);
    CHECK(!topic_pos_list_valid("a", 1, buf, strlen(buf)));

    snprintf(buf, sizeof(buf), "sub a,b b:%s:7", e);
    CHECK(pubsub_cmd_parse(buf, strlen(buf), &cmd, &why) == 0 && cmd.type == PUBSUB_CMD_SUB &&
          cmd.arg_len == 3 && cmd.positions && cmd.positions_len == strlen(buf) - 8);
    CHECK(pubsub_cmd_parse("sub a,b", 7, &cmd, &why) == 0 && !cmd.positions);
    snprintf(buf, sizeof(buf), "sub a c:%s:7", e);
    CHECK(pubsub_cmd_parse(buf, strlen(buf), &cmd, &why) == -EINVAL);
    CHECK(pubsub_cmd_parse("sub a ", 6, &cmd, &why) == -EINVAL);
}

/* The whole ringws.v1 frame as docs/PUBSUB.md writes it, built by hand:
 * FIN and the opcode, the shortest length form, "msg TOPIC EPOCH OFFSET",
 * LF, the payload unchanged. */
static size_t envelope_by_hand(uint8_t *out, unsigned opcode, const char *line,
                               const uint8_t *payload, size_t n)
{
    size_t ln = strlen(line), len = ln + n, h = 2;

    out[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[1] = (uint8_t)len;
    } else if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        h = 4;
    } else {
        out[1] = 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        h = 10;
    }
    memcpy(out + h, line, ln);
    memcpy(out + h + ln, payload, n);
    return h + len;
}

static void test_envelope(void)
{
    static const char epoch[TOPIC_POS_EPOCH_LEN] = "0123456789abcdef";
    static const char line[] = "msg news/eu 0123456789abcdef 42\n";
    size_t ln = strlen(line);
    /* each length form, and both sides of its bounds */
    size_t sizes[] = {0, 1, 125 - ln, 126 - ln, 65535 - ln, 65536 - ln, 70000};
    uint8_t *payload = malloc(70000), *want = malloc(70000 + 200), *got = malloc(70000 + 200);
    uint8_t head[ENVELOPE_HEAD_MAX];

    for (size_t i = 0; i < 70000; i++)
        payload[i] = (uint8_t)(i * 7);
    for (unsigned op = 1; op <= 2; op++) {
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            size_t n = sizes[k], total = envelope_by_hand(want, op, line, payload, n);
            size_t h = envelope_head(head, sizeof(head), op, false, "news/eu", 7, epoch, 42, n);
            CHECKF(h + n == total && !memcmp(head, want, h),
                   "envelope head, opcode %u, payload %zu", op, n);
            /* the two pieces from every offset give the rest of the frame
             * (all offsets near the seam; a stride through the payload) */
            for (size_t off = 0; off < total; off += off < h + 64 ? 1 : 997) {
                struct iovec iov[2];
                unsigned pieces = envelope_pieces(head, h, payload, n, off, iov);
                size_t got_len = 0;
                for (unsigned p = 0; p < pieces; p++) {
                    memcpy(got + got_len, iov[p].iov_base, iov[p].iov_len);
                    got_len += iov[p].iov_len;
                }
                CHECKF(pieces == (off < h && n ? 2u : 1u) && got_len == total - off &&
                           !memcmp(got, want + off, got_len),
                       "pieces from byte %zu, opcode %u, payload %zu", off, op, n);
            }
        }
    }
    /* the longest topic and offset fit ENVELOPE_HEAD_MAX; a smaller buffer
     * is refused, not overrun */
    char topic[RINGWS_MAX_TOPIC];
    memset(topic, 't', sizeof(topic));
    size_t h = envelope_head(head, sizeof(head), 2, false, topic, sizeof(topic), epoch, UINT64_MAX,
                             1u << 20);
    CHECK(h == 10 + 4 + RINGWS_MAX_TOPIC + 1 + 16 + 1 + 20 + 1 && head[0] == 0x82 &&
          head[1] == 127 && head[h - 1] == '\n');
    CHECK(envelope_head(head, h - 1, 2, false, topic, sizeof(topic), epoch, UINT64_MAX, 1u << 20) == 0);
    free(payload);
    free(want);
    free(got);
}

/* A compressed message's envelope: RSV1 and the opcode, the length of the
 * stored block, line and compressed payload; and what a peer inflates from
 * head and payload (with the 00 00 ff ff of RFC 7692 7.2.2 after them) is
 * the line followed by the original payload. */
static void test_envelope_deflated(void)
{
    static const char epoch[TOPIC_POS_EPOCH_LEN] = "0123456789abcdef";
    static const char line[] = "msg news/eu 0123456789abcdef 42\n";
    static const char json[] = "{\"id\": 17, \"text\": \"hello\"}";
    size_t ln = strlen(line), sizes[] = {200, 5000, 100000};
    struct libdeflate_compressor *zc = libdeflate_alloc_compressor(6);
    struct libdeflate_decompressor *zd = libdeflate_alloc_decompressor();
    uint8_t head[ENVELOPE_HEAD_MAX];

    CHECK(zc && zd);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k], cap = libdeflate_deflate_compress_bound(zc, n), out_len = 0;
        uint8_t *payload = malloc(n), *z = malloc(cap), *wire = malloc(ENVELOPE_HEAD_MAX + cap + 4);
        uint8_t *inflated = malloc(ln + n + 1);

        for (size_t i = 0; i < n; i++)
            payload[i] = (uint8_t)json[i % (sizeof(json) - 1)];
        size_t zlen = libdeflate_deflate_compress(zc, payload, n, z, cap);
        size_t h = envelope_head(head, sizeof(head), 1, true, "news/eu", 7, epoch, 42, zlen);
        size_t hdr = zlen + ln + ENVELOPE_STORED_HDR < 126 ? 2 : zlen + ln + 5 < 65536 ? 4 : 10;

        CHECKF(zlen > 0 && h == hdr + ENVELOPE_STORED_HDR + ln, "head of %zu bytes", n);
        CHECKF(head[0] == (0x80 | 0x40 | 1), "FIN, RSV1 and text, payload %zu", n);
        CHECKF(head[hdr] == 0 && head[hdr + 1] == ln && head[hdr + 2] == 0 &&
                   head[hdr + 3] == (uint8_t)~ln && head[hdr + 4] == 0xff,
               "a stored block of the line, payload %zu", n);
        memcpy(wire, head + hdr, h - hdr);
        memcpy(wire + h - hdr, z, zlen);
        memcpy(wire + h - hdr + zlen, "\x00\x00\xff\xff", 4);
        CHECKF(libdeflate_deflate_decompress_ex(zd, wire, h - hdr + zlen + 4, inflated, ln + n + 1,
                                                NULL, &out_len) == LIBDEFLATE_SUCCESS &&
                   out_len == ln + n && !memcmp(inflated, line, ln) &&
                   !memcmp(inflated + ln, payload, n),
               "inflates to the line and the payload, %zu bytes", n);
        free(payload);
        free(z);
        free(wire);
        free(inflated);
    }
    libdeflate_free_compressor(zc);
    libdeflate_free_decompressor(zd);
}

int main(void)
{
    test_names();
    test_lists();
    test_query();
    test_commands();
    test_patterns();
    test_rules();
    test_rules_history();
    test_positions();
    test_envelope();
    test_envelope_deflated();
    return check_done("pubsub_proto");
}
