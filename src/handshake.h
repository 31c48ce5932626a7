/* handshake.h - RFC 6455 section 4.2 opening-handshake validation.
 *
 * Why it exists: the handshake decides whether a request becomes a WebSocket,
 * and every way it can be wrong has its own precise HTTP answer.  Pure: takes a
 * parsed request and the server's policy, returns a status, the accept key and
 * the chosen subprotocol.  SHA-1 and base64 come from OpenSSL. */
#ifndef RINGWS_HANDSHAKE_H
#define RINGWS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"
#include "ws_ext.h"

#define WS_ACCEPT_LEN 28 /* base64 of a 20-byte SHA-1 */

struct ws_handshake_policy {
    const char *const *subprotocols; /* server's list, in preference order */
    size_t n_subprotocols;
    const char *const *origins;      /* allowed Origin values; none = any */
    size_t n_origins;
    bool deflate;                    /* accept a permessage-deflate offer */
    /* With deflate: the most LZ77 window (9..15 bits) the server keeps per
     * direction when it takes context over between messages; 0: stateless
     * both ways (ws_pmd_agree). */
    uint8_t takeover_bits;
};

struct ws_handshake_result {
    int status;                 /* 101 on success, else the HTTP status */
    const char *reason;         /* static short text for an error body */
    bool version_hint;          /* add "Sec-WebSocket-Version: 13" (426) */
    char accept[WS_ACCEPT_LEN + 1];
    const char *subprotocol;    /* from the policy list, NULL when none */
    bool deflate;               /* permessage-deflate accepted ... */
    struct ws_pmd_agreed pmd;   /* ... with these windows (ws_ext.h) */
};

/* True when the request asks for a WebSocket upgrade at all (an Upgrade
 * header whose token list contains "websocket"), so the server routes it to
 * validation rather than to plain HTTP handling. */
bool ws_handshake_requested(const struct http_request *req);

/* Validates a request that asked to upgrade: GET (else 405), HTTP/1.1 or
 * later (else 400), Host present and single (400), Upgrade contains
 * websocket (400), Connection contains Upgrade (400), exactly one
 * Sec-WebSocket-Key that is base64 of 16 bytes (400), Sec-WebSocket-Version
 * present (400) and exactly 13 (else 426 with version_hint), Origin in the
 * allow-list when one is set (403).  A body on the request is 400.  With
 * policy->deflate, every Sec-WebSocket-Extensions field must parse (else
 * 400), and the first permessage-deflate offer ws_pmd_agree accepts with
 * policy->takeover_bits is taken (without takeover_bits: stateless both
 * ways, server_no_context_takeover and client_no_context_takeover whether
 * offered or not, RFC 7692 7.1.1); none: no extension.  Fills
 * `out` and returns out->status. */
int ws_handshake_validate(const struct http_request *req,
                          const struct ws_handshake_policy *policy,
                          struct ws_handshake_result *out);

/* True when the client offers the subprotocol name in
 * Sec-WebSocket-Protocol. */
bool ws_handshake_offered(const struct http_request *req, const char *name);

/* base64(SHA-1(key + GUID)) into out (NUL-terminated).  0 or -EIO. */
int ws_handshake_accept_key(const char *key, size_t key_len,
                            char out[WS_ACCEPT_LEN + 1]);

/* RFC 6455 1.3's example through ws_handshake_accept_key: 0 when it gives
 * the RFC's answer, -EIO when not.  The server runs it once at start:
 * besides checking the digest it depends on, it pages in OpenSSL's SHA-1
 * path (its provider, about 2 MiB of libcrypto), a cost of the process
 * that the first client's handshake would otherwise pay. */
int ws_handshake_self_test(void);

/* Writes the 101 response for a successful result.  Returns bytes written,
 * or 0 when `cap` is too small. */
size_t ws_handshake_write_101(char *out, size_t cap,
                              const struct ws_handshake_result *res);

#endif
