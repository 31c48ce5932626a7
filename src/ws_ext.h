/* ws_ext.h - the Sec-WebSocket-Extensions field (RFC 6455 9.1) and the
 * permessage-deflate offers in it (RFC 7692 7.1).
 *
 * Why it exists: a client lists extensions it offers, each with parameters,
 * in one or several fields; the server must answer with exactly one offer it
 * accepts, or none, and a field that breaks the grammar must be refused as a
 * whole rather than half-understood.  The parser is pure: text in, the
 * permessage-deflate offers found (into the caller's array) and, for a
 * malformed field, where and why it stopped; no allocation, no I/O. */
#ifndef RINGWS_WS_EXT_H
#define RINGWS_WS_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_PMD_NAME "permessage-deflate"

/* client_max_window_bits given without a value: the client can honour a
 * bound the server names. */
#define WS_PMD_BITS_ANY 1

/* One permessage-deflate offer.  An offer that breaks RFC 7692 7.1's rules
 * (a parameter unknown, repeated, with a value it must not have, without
 * one it needs, or out of 8..15) is not malformed: the server declines it
 * (valid false, declined says why) and may accept a later one. */
struct ws_pmd_offer {
    bool valid;
    const char *declined;
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    uint8_t server_max_window_bits; /* 0: absent; else 8..15 */
    uint8_t client_max_window_bits; /* 0: absent; WS_PMD_BITS_ANY; else 8..15 */
};

/* Where a malformed field stopped and why: pos is the offset of the first
 * byte the grammar could not take (the length when it ended too soon). */
struct ws_ext_stop {
    size_t pos;
    const char *why;
};

/* Parses one field value v[0..len): a list of at least one extension (empty
 * list elements are skipped, RFC 9110 5.6.1), each a token with
 * ";"-separated parameters, a parameter a token with an optional value that
 * is a token or a quoted string whose unescaped text is a token.  Extension
 * and parameter names are matched without regard to case; extensions other
 * than permessage-deflate are checked for grammar only.  The
 * permessage-deflate offers go to offers[0..max) in the order sent, *n
 * counts all of them (past max too).  Returns 0, or -1 for a malformed
 * field (*stop says where and why; offers then mean nothing).  Reads
 * nothing past v[len - 1]. */
int ws_ext_parse(const char *v, size_t len, struct ws_pmd_offer *offers, size_t max,
                 size_t *n, struct ws_ext_stop *stop);

#endif
