/* proxy_proto.c - parses the PROXY protocol header, version 1 (a text line)
 * and version 2 (binary), told apart by their signatures (proxy_proto.h).
 *
 * Why it exists: a server behind a TCP load balancer learns its clients'
 * addresses from this header only, so the parser decides what the
 * per-address limits and the loopback check believe.  It accepts exactly
 * what the spec allows, bounds every read by the bytes it was given, and
 * says where it stopped. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <string.h>

static const uint8_t proxy_sig_v1[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t proxy_sig_v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define PROXY_V2_FIXED 16
#define PROXY_V2_LOCAL 0x0
#define PROXY_V2_PROXY 0x1
#define PROXY_AF_UNSPEC 0x0
#define PROXY_AF_INET 0x1
#define PROXY_AF_INET6 0x2
#define PROXY_AF_UNIX 0x3
#define PROXY_STREAM 0x1

static int proxy_fail(struct proxy_stop *stop, size_t pos, const char *why)
{
    stop->pos = pos;
    stop->why = why;
    return PROXY_BAD;
}

static int proxy_more(struct proxy_stop *stop, size_t n)
{
    stop->pos = n;
    stop->why = "incomplete header";
    return PROXY_NEED_MORE;
}

/* How many leading bytes of p match sig. */
static size_t proxy_match(const uint8_t *p, size_t n, const uint8_t *sig, size_t len)
{
    size_t i = 0;

    while (i < n && i < len && p[i] == sig[i])
        i++;
    return i;
}

/* ---- version 1 ---------------------------------------------------------- */

/* One field of the line: the bytes up to the next space or the line's end
 * (at *at, which moves past it and the single space after it). */
struct proxy_field {
    size_t start, len;
};

static bool proxy_v1_field(const uint8_t *p, size_t end, size_t *at, bool last,
                           struct proxy_field *f)
{
    size_t i = *at;

    while (i < end && p[i] != ' ')
        i++;
    f->start = *at;
    f->len = i - *at;
    if (!f->len || (last ? i != end : i == end))
        return false;
    *at = last ? i : i + 1;
    return true;
}

static bool proxy_v1_port(const uint8_t *p, const struct proxy_field *f, uint16_t *port)
{
    unsigned v = 0;

    if (f->len > 5)
        return false;
    for (size_t i = 0; i < f->len; i++) {
        if (p[f->start + i] < '0' || p[f->start + i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[f->start + i] - '0');
    }
    if (v > 65535)
        return false;
    *port = htons((uint16_t)v);
    return true;
}

/* inet_pton wants a C string: the field is copied (it is short). */
static bool proxy_v1_addr(const uint8_t *p, const struct proxy_field *f, int af, void *out)
{
    char text[INET6_ADDRSTRLEN];

    if (f->len >= sizeof(text))
        return false;
    memcpy(text, p + f->start, f->len);
    text[f->len] = '\0';
    return inet_pton(af, text, out) == 1;
}

/* "TCP4 SRC DST SPORT DPORT" or the same with TCP6, between at and end. */
static int proxy_v1_tcp(const uint8_t *p, size_t at, size_t end, bool v6,
                        struct proxy_header *h, struct proxy_stop *stop)
{
    struct proxy_field src, dst, sport, dport;
    struct proxy_header out = {.version = 1, .has_addr = true};
    int af = v6 ? AF_INET6 : AF_INET;
    void *sa = v6 ? (void *)&out.src.in6.sin6_addr : (void *)&out.src.in4.sin_addr;
    void *da = v6 ? (void *)&out.dst.in6.sin6_addr : (void *)&out.dst.in4.sin_addr;
    uint16_t sp, dp;

    if (!proxy_v1_field(p, end, &at, false, &src))
        return proxy_fail(stop, at, "expected a source address and a space");
    if (!proxy_v1_addr(p, &src, af, sa))
        return proxy_fail(stop, src.start, v6 ? "not an IPv6 address" : "not an IPv4 address");
    if (!proxy_v1_field(p, end, &at, false, &dst))
        return proxy_fail(stop, at, "expected a destination address and a space");
    if (!proxy_v1_addr(p, &dst, af, da))
        return proxy_fail(stop, dst.start, v6 ? "not an IPv6 address" : "not an IPv4 address");
    if (!proxy_v1_field(p, end, &at, false, &sport))
        return proxy_fail(stop, at, "expected a source port and a space");
    if (!proxy_v1_port(p, &sport, &sp))
        return proxy_fail(stop, sport.start, "not a port (0 to 65535)");
    if (!proxy_v1_field(p, end, &at, true, &dport))
        return proxy_fail(stop, at, "expected a destination port, then CRLF");
    if (!proxy_v1_port(p, &dport, &dp))
        return proxy_fail(stop, dport.start, "not a port (0 to 65535)");
    if (v6) {
        out.src.in6.sin6_family = out.dst.in6.sin6_family = AF_INET6;
        out.src.in6.sin6_port = sp;
        out.dst.in6.sin6_port = dp;
        out.addr_len = sizeof(struct sockaddr_in6);
    } else {
        out.src.in4.sin_family = out.dst.in4.sin_family = AF_INET;
        out.src.in4.sin_port = sp;
        out.dst.in4.sin_port = dp;
        out.addr_len = sizeof(struct sockaddr_in);
    }
    *h = out;
    return 0;
}

/* The line's end: the index of its LF (CR before it), 0 while incomplete,
 * or PROXY_BAD at the first byte that no continuation could save.  Only
 * printable ASCII may come before the CR, and the LF must be byte 107 at
 * the latest. */
static int proxy_v1_eol(const uint8_t *p, size_t n, size_t *lf, struct proxy_stop *stop)
{
    for (size_t i = sizeof(proxy_sig_v1); i < n; i++) {
        if (p[i] == '\r') {
            if (i + 1 == n)
                return proxy_more(stop, n);
            if (p[i + 1] != '\n')
                return proxy_fail(stop, i + 1, "CR not followed by LF");
            *lf = i + 1;
            return 1;
        }
        if (i >= PROXY_V1_MAX - 2)
            return proxy_fail(stop, i, "no CRLF within 107 bytes");
        if (p[i] < 0x20 || p[i] > 0x7e)
            return proxy_fail(stop, i, "not printable ASCII in a version 1 header");
    }
    return proxy_more(stop, n);
}

static int proxy_v1(const uint8_t *p, size_t n, struct proxy_header *h, struct proxy_stop *stop)
{
    size_t lf = 0, at = sizeof(proxy_sig_v1), end;
    struct proxy_field proto;
    int ret = proxy_v1_eol(p, n, &lf, stop);

    if (ret <= 0)
        return ret;
    end = lf - 1; /* the CR */
    while (at < end && p[at] != ' ')
        at++;
    proto = (struct proxy_field){sizeof(proxy_sig_v1), at - sizeof(proxy_sig_v1)};
    if (proto.len == 7 && !memcmp(p + proto.start, "UNKNOWN", 7)) {
        /* The rest of the line, whatever it holds, is to be ignored. */
        *h = (struct proxy_header){.version = 1, .has_addr = false};
    } else if (proto.len == 4 && (!memcmp(p + proto.start, "TCP4", 4) ||
                                  !memcmp(p + proto.start, "TCP6", 4))) {
        if (at == end)
            return proxy_fail(stop, at, "expected a space and the addresses");
        ret = proxy_v1_tcp(p, at + 1, end, p[proto.start + 3] == '6', h, stop);
        if (ret < 0)
            return ret;
    } else {
        return proxy_fail(stop, proto.start, "protocol not TCP4, TCP6 or UNKNOWN");
    }
    stop->pos = lf + 1;
    stop->why = "complete";
    return (int)(lf + 1);
}

/* ---- version 2 ---------------------------------------------------------- */

/* TLVs after the addresses: each a type, a 16-bit length and that many
 * bytes, all inside the header.  None is needed; each is checked and
 * skipped. */
static int proxy_v2_tlvs(const uint8_t *p, size_t off, size_t total, struct proxy_stop *stop)
{
    while (off < total) {
        size_t len;

        if (total - off < 3)
            return proxy_fail(stop, off, "a TLV cut short by the header's end");
        len = (size_t)p[off + 1] << 8 | p[off + 2];
        if (len > total - off - 3)
            return proxy_fail(stop, off, "a TLV longer than the header");
        off += 3 + len;
    }
    return 0;
}

static void proxy_v2_inet(const uint8_t *a, struct proxy_header *h)
{
    h->src.in4.sin_family = h->dst.in4.sin_family = AF_INET;
    memcpy(&h->src.in4.sin_addr, a, 4);
    memcpy(&h->dst.in4.sin_addr, a + 4, 4);
    memcpy(&h->src.in4.sin_port, a + 8, 2);
    memcpy(&h->dst.in4.sin_port, a + 10, 2);
    h->addr_len = sizeof(struct sockaddr_in);
}

static void proxy_v2_inet6(const uint8_t *a, struct proxy_header *h)
{
    h->src.in6.sin6_family = h->dst.in6.sin6_family = AF_INET6;
    memcpy(&h->src.in6.sin6_addr, a, 16);
    memcpy(&h->dst.in6.sin6_addr, a + 16, 16);
    memcpy(&h->src.in6.sin6_port, a + 32, 2);
    memcpy(&h->dst.in6.sin6_port, a + 34, 2);
    h->addr_len = sizeof(struct sockaddr_in6);
}

static const size_t proxy_v2_addr_len[] = {
    [PROXY_AF_UNSPEC] = 0, [PROXY_AF_INET] = 12, [PROXY_AF_INET6] = 36, [PROXY_AF_UNIX] = 216};

/* Whether the header names a client: LOCAL is the proxy's own connection,
 * UNSPEC a source it cannot name; either way what follows is ignored, as
 * the spec asks. */
static bool proxy_v2_names(const uint8_t *p)
{
    return (p[12] & 0xF) == PROXY_V2_PROXY && (p[13] >> 4) != PROXY_AF_UNSPEC;
}

/* The fixed part after the signature: version and command, family and
 * transport, length; each refused as soon as its byte is there. */
static int proxy_v2_fixed(const uint8_t *p, size_t n, size_t *total, struct proxy_stop *stop)
{
    if (n > 12 && (p[12] >> 4) != 2)
        return proxy_fail(stop, 12, "version 2 signature with another version");
    if (n > 12 && (p[12] & 0xF) > PROXY_V2_PROXY)
        return proxy_fail(stop, 12, "command not LOCAL or PROXY");
    if (n > 13 && (p[13] >> 4) > PROXY_AF_UNIX)
        return proxy_fail(stop, 13, "unknown address family");
    if (n > 13 && (p[13] & 0xF) > 2)
        return proxy_fail(stop, 13, "unknown transport");
    if (n > 13 && proxy_v2_names(p) && (p[13] & 0xF) != PROXY_STREAM)
        return proxy_fail(stop, 13, "not a stream (TCP) connection");
    if (n < PROXY_V2_FIXED)
        return proxy_more(stop, n);
    *total = PROXY_V2_FIXED + ((size_t)p[14] << 8 | p[15]);
    if (*total > PROXY_MAX_HEADER)
        return proxy_fail(stop, 15, "header longer than 2048 bytes");
    if (proxy_v2_names(p) && *total - PROXY_V2_FIXED < proxy_v2_addr_len[p[13] >> 4])
        return proxy_fail(stop, 15, "length too short for the address family");
    if (n < *total)
        return proxy_more(stop, n);
    return 1;
}

static int proxy_v2(const uint8_t *p, size_t n, struct proxy_header *h, struct proxy_stop *stop)
{
    struct proxy_header out = {.version = 2, .has_addr = false};
    size_t total = 0;
    unsigned family;
    int ret = proxy_v2_fixed(p, n, &total, stop);

    if (ret <= 0)
        return ret;
    family = p[13] >> 4;
    if (proxy_v2_names(p)) {
        if (family == PROXY_AF_INET)
            proxy_v2_inet(p + PROXY_V2_FIXED, &out);
        else if (family == PROXY_AF_INET6)
            proxy_v2_inet6(p + PROXY_V2_FIXED, &out);
        out.has_addr = family != PROXY_AF_UNIX;
        ret = proxy_v2_tlvs(p, PROXY_V2_FIXED + proxy_v2_addr_len[family], total, stop);
        if (ret < 0)
            return ret;
    }
    *h = out;
    stop->pos = total;
    stop->why = "complete";
    return (int)total;
}

/* ---- either ------------------------------------------------------------- */

int proxy_parse(const uint8_t *p, size_t n, struct proxy_header *h, struct proxy_stop *stop)
{
    size_t m1 = proxy_match(p, n, proxy_sig_v1, sizeof(proxy_sig_v1));
    size_t m2 = proxy_match(p, n, proxy_sig_v2, sizeof(proxy_sig_v2));

    if (m1 == sizeof(proxy_sig_v1))
        return proxy_v1(p, n, h, stop);
    if (m2 == sizeof(proxy_sig_v2))
        return proxy_v2(p, n, h, stop);
    if (m1 == n || m2 == n)
        return proxy_more(stop, n);
    return proxy_fail(stop, m1 > m2 ? m1 : m2, "no PROXY protocol signature");
}
