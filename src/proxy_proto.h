/* proxy_proto.h - the PROXY protocol header (versions 1 and 2, as HAProxy's
 * proxy-protocol.txt defines them) that a TCP load balancer sends before a
 * client's first byte, telling the server whom the connection is for.
 *
 * Why it exists: behind such a proxy every connection comes from the
 * proxy's address; the header carries the client's.  The parser is pure
 * (bytes in, a verdict, a position and the addresses out; no I/O, no
 * allocation): the connection layer (conn_proxy.c) feeds it what has
 * arrived so far, however the header was cut. */
#ifndef RINGWS_PROXY_PROTO_H
#define RINGWS_PROXY_PROTO_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header accepted.  Version 1 lines are at most 107 bytes by
 * the spec; a version 2 header may declare up to 16 + 65535 bytes, but the
 * addresses and the TLVs proxies send in practice (AWS, Azure, GCP, HAProxy's
 * own) take a few dozen: a longer one is refused rather than buffered. */
#define PROXY_V1_MAX 107
#define PROXY_MAX_HEADER 2048

enum proxy_result {
    PROXY_BAD = -1,      /* not a valid header: see proxy_stop */
    PROXY_NEED_MORE = 0, /* a valid beginning of one: more bytes needed */
};

/* What the header says.  has_addr is false when it carries no client
 * address: a v2 LOCAL command (the proxy's own connection, a health
 * check), v1 UNKNOWN, or a v2 UNSPEC or UNIX family. */
struct proxy_header {
    uint8_t version; /* 1 or 2 */
    bool has_addr;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } src, dst;
    socklen_t addr_len; /* of src and dst, with has_addr */
};

/* Where the parser stopped and why: on PROXY_BAD the offset of the first
 * byte that made the header invalid; on PROXY_NEED_MORE the length given. */
struct proxy_stop {
    size_t pos;
    const char *why;
};

/* Parses the header at the start of p[0..n).  Returns its length (> 0; the
 * bytes after it are the client's), PROXY_NEED_MORE or PROXY_BAD.  Reads
 * nothing past p[n - 1]; *h is filled only on success.  A prefix of a
 * header never parses as a shorter header, so a caller may feed a growing
 * buffer until the verdict comes. */
int proxy_parse(const uint8_t *p, size_t n, struct proxy_header *h, struct proxy_stop *stop);

#endif
