/* test_proxy_proto.c - the PROXY protocol parser against the spec's
 * examples and its limits: v1 TCP4/TCP6/UNKNOWN and the 107-byte line, v2
 * PROXY/LOCAL with each family, TLVs, and every way a header can be wrong,
 * each refused at the byte the parser names.  Every input sits at the end
 * of a page followed by an inaccessible one (guard.h), and is also fed in
 * every prefix, which must wait for more until the verdict comes. */
#include <arpa/inet.h>
#include <string.h>

#include "check.h"
#include "guard.h"
#include "proxy_proto.h"

#define SIG2 "\r\n\r\n\0\r\nQUIT\n"

static int parse(const void *in, size_t n, struct proxy_header *h, struct proxy_stop *st)
{
    return proxy_parse(guard_place(in, n), n, h, st);
}

/* Every strict prefix shorter than where the verdict is reached waits for
 * more; the whole input gives `want`. */
static void check_prefixes(const void *in, size_t n, int want, size_t decided)
{
    struct proxy_header h;
    struct proxy_stop st;

    for (size_t k = 0; k < decided && k < n; k++)
        CHECKF(parse(in, k, &h, &st) == PROXY_NEED_MORE && st.pos == k, "prefix %zu of %zu", k, n);
    CHECK(parse(in, n, &h, &st) == want);
}

static void check_bad(const void *in, size_t n, size_t pos, const char *why_part)
{
    struct proxy_header h;
    struct proxy_stop st = {0, NULL};
    int r = parse(in, n, &h, &st);

    CHECKF(r == PROXY_BAD && st.pos == pos && st.why && strstr(st.why, why_part),
           "got %d at %zu (%s), want bad at %zu (%s)", r, st.pos, st.why ? st.why : "-", pos,
           why_part);
    check_prefixes(in, n, PROXY_BAD, pos + 1);
}

static void check_src4(const struct proxy_header *h, const char *addr, unsigned port)
{
    char text[INET_ADDRSTRLEN];

    CHECK(h->has_addr && h->src.sa.sa_family == AF_INET && h->addr_len == sizeof(struct sockaddr_in));
    CHECK(inet_ntop(AF_INET, &h->src.in4.sin_addr, text, sizeof(text)) && !strcmp(text, addr));
    CHECK(ntohs(h->src.in4.sin_port) == port);
}

static void check_src6(const struct proxy_header *h, const char *addr, unsigned port)
{
    char text[INET6_ADDRSTRLEN];

    CHECK(h->has_addr && h->src.sa.sa_family == AF_INET6 &&
          h->addr_len == sizeof(struct sockaddr_in6));
    CHECK(inet_ntop(AF_INET6, &h->src.in6.sin6_addr, text, sizeof(text)) && !strcmp(text, addr));
    CHECK(ntohs(h->src.in6.sin6_port) == port);
}

static void test_v1(void)
{
    static const char tcp4[] = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
    static const char tcp6[] = "PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
    static const char unknown[] = "PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 0 0\r\n";
    size_t hdr4 = strlen("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
    struct proxy_header h;
    struct proxy_stop st;
    char longest[PROXY_V1_MAX + 1], too_long[PROXY_V1_MAX + 2];

    CHECK(parse(tcp4, strlen(tcp4), &h, &st) == (int)hdr4 && h.version == 1 && st.pos == hdr4);
    check_src4(&h, "192.0.2.7", 56324);
    CHECK(ntohs(h.dst.in4.sin_port) == 443);
    check_prefixes(tcp4, hdr4, (int)hdr4, hdr4);
    CHECK(parse(tcp6, strlen(tcp6), &h, &st) == (int)strlen(tcp6));
    check_src6(&h, "2001:db8::7", 65535);
    CHECK(parse(unknown, strlen(unknown), &h, &st) == (int)strlen(unknown) && !h.has_addr);
    CHECK(parse("PROXY UNKNOWN\r\n", 15, &h, &st) == 15 && !h.has_addr && h.version == 1);

    /* 107 bytes with the CRLF is the longest line; one more is refused at
     * the byte that could no longer be followed by CRLF in time. */
    memset(longest, 'x', sizeof(longest));
    memcpy(longest, "PROXY UNKNOWN ", 14);
    memcpy(longest + PROXY_V1_MAX - 2, "\r\n", 2);
    CHECK(parse(longest, PROXY_V1_MAX, &h, &st) == PROXY_V1_MAX);
    memset(too_long, 'x', sizeof(too_long));
    memcpy(too_long, "PROXY UNKNOWN ", 14);
    memcpy(too_long + PROXY_V1_MAX - 1, "\r\n", 2);
    check_bad(too_long, sizeof(too_long), PROXY_V1_MAX - 2, "107");

    check_bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 32, 6, "TCP4, TCP6 or UNKNOWN");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, 30, "printable");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 32, 31, "CR not followed by LF");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 30, 27, "source port");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 34, 29, "destination port");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 36, 27, "not a port");
    check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", 33, 29, "not a port");
    check_bad("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", 34, 11, "IPv4");
    check_bad("PROXY TCP4 ::1 ::1 1 2\r\n", 24, 11, "IPv4");
    check_bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 28, 11, "IPv6");
    check_bad("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 33, 11, "source address");
    check_bad("PROXY TCP4\r\n", 12, 10, "addresses");
    check_bad("PROXY TCP4 1.2.3.4\x01 5.6.7.8 1 2\r\n", 33, 18, "printable");
    check_bad("PROXY\r\n", 7, 5, "signature");
    check_bad("GET / HTTP/1.1\r\n", 16, 0, "signature");
    check_bad("PROXX", 5, 4, "signature");
}

/* A v2 header: command, family and transport, then `body` of its length. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t len)
{
    memcpy(out, SIG2, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    if (len)
        memcpy(out + 16, body, len);
    return 16 + len;
}

static void test_v2(void)
{
    static const uint8_t inet[12] = {192, 0, 2, 9, 127, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb};
    static const uint8_t zeros[PROXY_MAX_HEADER];
    uint8_t body[300] = {0}, buf[PROXY_MAX_HEADER + 64];
    struct proxy_header h;
    struct proxy_stop st;
    size_t n;

    n = v2(buf, 0x21, 0x11, inet, sizeof(inet));
    memcpy(buf + n, "GET", 3);
    CHECK(parse(buf, n + 3, &h, &st) == (int)n && h.version == 2);
    check_src4(&h, "192.0.2.9", 8080);
    check_prefixes(buf, n, (int)n, n);

    /* IPv6, with TLVs after the addresses (skipped). */
    memset(body, 0, 36);
    body[0] = 0x20, body[1] = 0x01, body[2] = 0x0d, body[3] = 0xb8, body[15] = 0x42;
    body[32] = 0x30, body[33] = 0x39;
    memcpy(body + 36, "\x01\x00\x02h2\x04\x00\x00\xea\x00\x01Z", 12);
    n = v2(buf, 0x21, 0x21, body, 48);
    CHECK(parse(buf, n, &h, &st) == (int)n);
    check_src6(&h, "2001:db8::42", 12345);

    /* LOCAL (a health check of the proxy): no address, whatever follows. */
    n = v2(buf, 0x20, 0x11, inet, sizeof(inet));
    CHECK(parse(buf, n, &h, &st) == (int)n && !h.has_addr);
    n = v2(buf, 0x20, 0x00, NULL, 0);
    CHECK(parse(buf, n, &h, &st) == 16 && !h.has_addr);
    /* UNSPEC and UNIX name no TCP client. */
    n = v2(buf, 0x21, 0x00, "junk", 4);
    CHECK(parse(buf, n, &h, &st) == (int)n && !h.has_addr);
    n = v2(buf, 0x21, 0x31, body, 216);
    CHECK(parse(buf, n, &h, &st) == (int)n && !h.has_addr);

    /* The longest header accepted, and one byte more. */
    n = v2(buf, 0x20, 0x00, zeros, PROXY_MAX_HEADER - 16);
    CHECK(parse(buf, n, &h, &st) == PROXY_MAX_HEADER);
    n = v2(buf, 0x20, 0x00, zeros, PROXY_MAX_HEADER - 15);
    check_bad(buf, n, 15, "longer than 2048");

    n = v2(buf, 0x11, 0x11, inet, sizeof(inet));
    check_bad(buf, n, 12, "another version");
    n = v2(buf, 0x22, 0x11, inet, sizeof(inet));
    check_bad(buf, n, 12, "LOCAL or PROXY");
    n = v2(buf, 0x21, 0x41, inet, sizeof(inet));
    check_bad(buf, n, 13, "family");
    n = v2(buf, 0x21, 0x13, inet, sizeof(inet));
    check_bad(buf, n, 13, "transport");
    n = v2(buf, 0x21, 0x12, inet, sizeof(inet));
    check_bad(buf, n, 13, "stream");
    n = v2(buf, 0x21, 0x11, inet, 11);
    check_bad(buf, n, 15, "too short");
    n = v2(buf, 0x21, 0x21, body, 35);
    check_bad(buf, n, 15, "too short");
    /* TLVs: one cut short by the end, one longer than what is left. */
    memcpy(body, inet, 12);
    memcpy(body + 12, "\x01\x00", 2);
    n = v2(buf, 0x21, 0x11, body, 14);
    check_bad(buf, n, 28, "cut short");
    memcpy(body + 12, "\x01\x00\x05" "ab", 5);
    n = v2(buf, 0x21, 0x11, body, 17);
    check_bad(buf, n, 28, "longer than the header");
    /* A signature one byte off. */
    memcpy(buf, SIG2, 12);
    buf[7] = 'q';
    check_bad(buf, 16, 7, "signature");
}

int main(void)
{
    guard_setup(PROXY_MAX_HEADER + 256);
    test_v1();
    test_v2();
    return check_done("proxy_proto");
}
