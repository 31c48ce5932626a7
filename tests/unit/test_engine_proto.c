/* test_engine_proto.c - the Redis engine's text formats: a channel's
 * message, a channel's name, a cluster's redirection (engine_proto.h).
 *
 * Why it exists: these bytes come from the network and end up in
 * subscribers' frames; every input sits at the end of a page followed by
 * an inaccessible one, so that a read past it crashes. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "engine_proto.h"
#include "guard.h"

static const char *place(const char *s, size_t n)
{
    return (const char *)guard_place((const uint8_t *)s, n);
}

static int msg(const char *s, struct engine_msg *m)
{
    size_t n = strlen(s);

    return engine_msg_parse(place(s, n), n, m);
}

static int redirect(const char *s, struct engine_redirect *r)
{
    size_t n = strlen(s);

    return engine_redirect_parse(place(s, n), n, r);
}

int main(void)
{
    static const char *bad_msgs[] = {
        "", "0123456789abcdef", "0123456789abcdef 1 t", "0123456789abcdef 1 x 5 hello",
        "0123456789abcdef 1 t hello", "0123456789abcdef 1 t 5", "0123456789abcdef 1 t -5 x",
        "0123456789ABCDEF 1 t 5 hello",    /* upper case is not an epoch of ours */
        "0123456789abcde 1 t 5 hello",     /* 15 digits */
        "0123456789abcdef 0 t 5 hello",    /* offsets start at 1 */
        "0123456789abcdef -1 t 5 hello", "0123456789abcdef  1 t 5 hello",
        "0123456789abcdef 1 t5 hello", "0123456789abcdef 1t 5 hello",
        "0123456789abcdef 9007199254740992 t 5 x", /* 2^53 */
        "0123456789abcdef 99999999999999999999999 t 5 x",
        "0123456789abcdef 1 t 99999999999999999999999 x",
    };
    static const char *bad_redirects[] = {
        "", "MOVED", "MOVED 1", "MOVED 1 127.0.0.1", "MOVED 16384 127.0.0.1:7000",
        "MOVED x 127.0.0.1:7000", "MOVED 1 127.0.0.1:0", "MOVED 1 127.0.0.1:65536",
        "MOVED 1 :7000", "MOVED 1 127.0.0.1:70a", "ERR MOVED 1 127.0.0.1:7000",
        "NOSCRIPT No matching script", "MOVED 1 a b:7000", "MOVED 1 a\tb:7000",
    };
    struct engine_msg m;
    struct engine_redirect r;
    const char *name;
    size_t len;

    guard_setup(256);
    CHECK(msg("0123456789abcdef 42 t 1765100000123456 hello world", &m) == 0);
    CHECK(!memcmp(m.epoch, "0123456789abcdef", 16) && m.offset == 42 && !m.binary);
    CHECK(m.published_us == 1765100000123456ull);
    CHECK(m.len == 11 && !memcmp(m.payload, "hello world", 11));
    CHECK(msg("ffffffffffffffff 9007199254740991 b 0 ", &m) == 0); /* 2^53 - 1, empty */
    CHECK(m.offset == 9007199254740991ull && m.binary && m.len == 0);
    {
        /* A binary payload is any bytes, spaces and NULs included. */
        static const char b[] = "0000000000000001 7 b 1 \0 \xff\n";
        CHECK(engine_msg_parse(place(b, sizeof(b) - 1), sizeof(b) - 1, &m) == 0);
        CHECK(m.binary && m.len == 4 && !memcmp(m.payload, "\0 \xff\n", 4));
        /* The same bytes as text are not UTF-8. */
        static const char t[] = "0000000000000001 7 t 1 \0 \xff\n";
        CHECK(engine_msg_parse(place(t, sizeof(t) - 1), sizeof(t) - 1, &m) == -EILSEQ);
    }
    for (size_t i = 0; i < sizeof(bad_msgs) / sizeof(bad_msgs[0]); i++)
        CHECKF(msg(bad_msgs[i], &m) == -EINVAL, "accepted %s", bad_msgs[i]);

    CHECK(engine_channel_topic(place("ringws:{news.a:b}:c", 19), 19, &name, &len));
    CHECK(len == 8 && !memcmp(name, "news.a:b", 8));
    CHECK(!engine_channel_topic(place("ringws:{}:c", 11), 11, &name, &len));
    CHECK(!engine_channel_topic(place("ringws:{a}:s", 12), 12, &name, &len));
    CHECK(!engine_channel_topic(place("other:{a}:c", 11), 11, &name, &len));
    CHECK(!engine_channel_topic(place("ringws:{a b}:c", 14), 14, &name, &len));
    CHECK(!engine_channel_topic(place("ringws:{", 8), 8, &name, &len));

    CHECK(redirect("MOVED 3999 127.0.0.1:6381", &r) == 0);
    CHECK(!r.ask && r.slot == 3999 && !strcmp(r.host, "127.0.0.1") && r.port == 6381);
    CHECK(redirect("ASK 16383 ::1:7002", &r) == 0);
    CHECK(r.ask && r.slot == 16383 && !strcmp(r.host, "::1") && r.port == 7002);
    for (size_t i = 0; i < sizeof(bad_redirects) / sizeof(bad_redirects[0]); i++)
        CHECKF(redirect(bad_redirects[i], &r) == -EINVAL, "accepted %s", bad_redirects[i]);
    return check_done("engine_proto");
}
