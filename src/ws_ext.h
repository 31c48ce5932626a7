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

/* What the server agrees to for one offer (RFC 7692 7.1): the LZ77 window
 * of each direction, 0 where no context is taken over between messages
 * (server_no_context_takeover, client_no_context_takeover). */
struct ws_pmd_agreed {
    uint8_t server_bits;     /* server to client: its compressor's window */
    uint8_t client_bits;     /* client to server: the window the server inflates with */
    /* The offer named server_max_window_bits: the answer must name it too
     * (7.1.2.1), with this value (the takeover window, or the offer's 15
     * that the stateless compressor keeps to); 0: not named. */
    uint8_t say_server_bits;
};

/* The zlib window of the smallest raw deflate stream it makes: 8 asks for
 * a 256-byte window it cannot keep to (raw streams start at 9 bits). */
#define WS_PMD_MIN_SERVER_BITS 9

/* Whether the server can accept the offer, and with what.  takeover_bits 0:
 * only the stateless mode (both directions without context, a 32 KiB
 * compressor: the offer must not bound the server's window below 15).
 * Else (9..15) the most window the server spends per direction: context is
 * taken over in each direction the offer lets it, the server's window
 * min(takeover_bits, server_max_window_bits) (an offer below 9 is
 * declined), the client's min(takeover_bits, client_max_window_bits) when
 * the offer names client_max_window_bits (with or without a value);
 * without it the client could use 32 KiB, so the server asks for
 * client_no_context_takeover instead. */
bool ws_pmd_agree(const struct ws_pmd_offer *o, unsigned takeover_bits,
                  struct ws_pmd_agreed *out);

/* The answer's value (RFC 7692 7.1: the parameters the agreement needs and
 * nothing else) into out[0..cap), NUL-terminated.  Its length, or 0 when
 * cap is too small. */
size_t ws_pmd_answer(const struct ws_pmd_agreed *a, char *out, size_t cap);

/* Room ws_pmd_answer never exceeds (with the NUL). */
#define WS_PMD_ANSWER_MAX 128

#endif
