/* bench_wire.c - handshake, masked frames and server-frame decoding for the
 * load generator.  The accept key and token lists come from the protocol
 * library, so the client and the server agree by construction only where
 * RFC 6455 fixes the answer (SHA-1 and base64), never on parsing. */
#include "bench_wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "frame.h"
#include "handshake.h"
#include "http_parse.h"
#include "unmask.h"

int wsc_key_make(char key[WSC_KEY_LEN + 1])
{
    unsigned char raw[16];

    if (RAND_bytes(raw, sizeof raw) != 1)
        return -EIO;
    if (EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw) != WSC_KEY_LEN)
        return -EIO;
    return 0;
}

size_t wsc_request_write(char *out, size_t cap, const char *host, const char *path,
                         const char key[WSC_KEY_LEN + 1], const char *protocol, bool deflate)
{
    bool offer = protocol && *protocol;
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s%s%s"
                     "\r\n",
                     path, host, key, offer ? "Sec-WebSocket-Protocol: " : "",
                     offer ? protocol : "", offer ? "\r\n" : "",
                     deflate ? "Sec-WebSocket-Extensions: " WSC_DEFLATE_OFFER "\r\n" : "");

    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static bool wire_name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && !strncasecmp(p, name, n);
}

static const char *wire_trim(const char *s, const char **end)
{
    while (s < *end && (*s == ' ' || *s == '\t'))
        s++;
    while (*end > s && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
    return s;
}

/* An accepted permessage-deflate: the extension offered, once, and without
 * context taken over by the server (each message inflates alone). */
static bool wire_deflate_ok(const char *v, size_t vlen)
{
    static const char name[] = "permessage-deflate";
    size_t n = sizeof(name) - 1;

    return vlen >= n && !strncasecmp(v, name, n) &&
           (vlen == n || v[n] == ';' || v[n] == ' ' || v[n] == '\t') &&
           memmem(v, vlen, "server_no_context_takeover", 26) != NULL;
}

/* Checks one "Name: value" line; records what the 101 needs. */
static int wire_check_header(const char *line, const char *eol, const char *accept,
                             const char *protocol, bool deflate, unsigned *seen,
                             const char **why)
{
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    const char *v, *ve = eol;
    size_t nlen, vlen;

    if (!colon || colon == line) {
        *why = "malformed header line";
        return -EPROTO;
    }
    nlen = (size_t)(colon - line);
    v = wire_trim(colon + 1, &ve);
    vlen = (size_t)(ve - v);
    if (wire_name_is(line, nlen, "Upgrade")) {
        if (http_token_list_has(v, vlen, "websocket"))
            *seen |= 1;
    } else if (wire_name_is(line, nlen, "Connection")) {
        if (http_token_list_has(v, vlen, "upgrade"))
            *seen |= 2;
    } else if (wire_name_is(line, nlen, "Sec-WebSocket-Accept")) {
        if (vlen != WS_ACCEPT_LEN || memcmp(v, accept, WS_ACCEPT_LEN) || (*seen & 4)) {
            *why = "wrong Sec-WebSocket-Accept";
            return -EPROTO;
        }
        *seen |= 4;
    } else if (wire_name_is(line, nlen, "Sec-WebSocket-Protocol")) {
        /* RFC 6455 4.1: only the one offered, once. */
        if (!protocol || vlen != strlen(protocol) || memcmp(v, protocol, vlen) ||
            (*seen & 8)) {
            *why = "a subprotocol the client did not offer";
            return -EPROTO;
        }
        *seen |= 8;
    } else if (wire_name_is(line, nlen, "Sec-WebSocket-Extensions")) {
        /* RFC 6455 4.1: only what the client asked for, once. */
        if (!deflate || (*seen & 16) || !wire_deflate_ok(v, vlen)) {
            *why = "an extension the client did not ask for";
            return -EPROTO;
        }
        *seen |= 16;
    }
    return 0;
}

int wsc_response_check(const char *buf, size_t len, const char key[WSC_KEY_LEN + 1],
                       const char *protocol, bool deflate, bool *deflated, const char **why)
{
    unsigned want = protocol && *protocol ? 15 : 7;
    static const char status[] = "HTTP/1.1 101";
    char accept[WS_ACCEPT_LEN + 1];
    const char *end = NULL, *line, *eol;
    unsigned seen = 0;

    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
            end = buf + i + 1;
            break;
        }
    if (!end) {
        if (len >= WSC_MAX_RESPONSE) {
            *why = "response head too long";
            return -EPROTO;
        }
        if (len >= sizeof status - 1 && memcmp(buf, status, sizeof status - 1)) {
            *why = "status is not 101";
            return -EPROTO;
        }
        return 0;
    }
    if ((size_t)(end - buf) < sizeof status || memcmp(buf, status, sizeof status - 1) ||
        (buf[sizeof status - 1] != ' ' && buf[sizeof status - 1] != '\r')) {
        *why = "status is not 101";
        return -EPROTO;
    }
    if (ws_handshake_accept_key(key, WSC_KEY_LEN, accept) < 0) {
        *why = "cannot compute the accept key";
        return -EPROTO;
    }
    line = memchr(buf, '\n', (size_t)(end - buf)) + 1;
    for (; line < end - 2; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(end - line));
        if (!eol || eol[1] != '\n') {
            *why = "bare CR or LF in the head";
            return -EPROTO;
        }
        if (wire_check_header(line, eol, accept, want == 15 ? protocol : NULL, deflate, &seen,
                              why) < 0)
            return -EPROTO;
    }
    *deflated = (seen & 16) != 0;
    seen &= ~16u;
    if (seen != want) {
        *why = !(seen & 4)   ? "no Sec-WebSocket-Accept"
               : !(seen & 1) ? "no Upgrade: websocket"
               : !(seen & 2) ? "no Connection: upgrade"
                             : "the subprotocol offered was not chosen";
        return -EPROTO;
    }
    return (int)(end - buf);
}

size_t wsc_frame_head(uint8_t out[WSC_MAX_HEAD], unsigned first, uint64_t len,
                      const uint8_t mask[4])
{
    size_t n = ws_frame_header(out, first, len);

    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    return n + 4;
}

size_t wsc_frame_write(uint8_t *out, unsigned first, const void *payload,
                       size_t len, const uint8_t mask[4])
{
    size_t n = wsc_frame_head(out, first, len, mask);

    memcpy(out + n, payload, len);
    ws_unmask(out + n, len, mask, 0);
    return n + len;
}

static size_t wire_fail(struct wsc_rx *rx, struct wsc_event *ev, const char *why)
{
    rx->failed = 1;
    ev->type = WSC_EV_ERROR;
    ev->error = why;
    return 0;
}

/* Validates a complete header in rx->hdr and enters its payload. */
static const char *wire_frame_begin(struct wsc_rx *rx)
{
    uint8_t b0 = rx->hdr[0], l7 = rx->hdr[1] & 0x7f, op = b0 & 0x0f;
    uint64_t n = l7;

    /* RFC 7692 6.1: RSV1 only on a data message's first frame. */
    if ((b0 & 0x70) == 0x40 && rx->deflate && (op == WS_OP_TEXT || op == WS_OP_BINARY))
        rx->msg_deflated = 1;
    else if (b0 & 0x70)
        return "RSV bit set without an extension";
    else if (op == WS_OP_TEXT || op == WS_OP_BINARY)
        rx->msg_deflated = 0;
    if (l7 == 126) {
        n = (uint64_t)rx->hdr[2] << 8 | rx->hdr[3];
        if (n < 126)
            return "length not in its shortest form";
    } else if (l7 == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | rx->hdr[2 + i];
        if (n >> 63)
            return "64-bit length with the top bit set";
        if (n <= 0xFFFF)
            return "length not in its shortest form";
    }
    if (op & 0x8) {
        if (op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
            return "reserved control opcode";
        if (!(b0 & 0x80))
            return "fragmented control frame";
        if (n > WS_MAX_CONTROL_PAYLOAD)
            return "control frame longer than 125 bytes";
    } else if (op == WS_OP_CONT) {
        if (!rx->msg_opcode)
            return "continuation with no message open";
    } else if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
        if (rx->msg_opcode)
            return "new message inside a fragmented one";
        rx->msg_opcode = op;
        rx->msg_started = 0;
    } else {
        return "reserved data opcode";
    }
    rx->opcode = op;
    rx->fin = b0 >> 7;
    rx->remaining = n;
    rx->in_payload = 1;
    rx->hdr_len = 0;
    return NULL;
}

static size_t wire_header_need(const struct wsc_rx *rx)
{
    uint8_t l7 = rx->hdr[1] & 0x7f;

    if (rx->hdr_len < 2)
        return 2;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
}

/* Gathers header bytes; returns bytes taken, sets *done when complete. */
static size_t wire_take_header(struct wsc_rx *rx, const uint8_t *buf, size_t len,
                               bool *done, const char **err)
{
    size_t used = 0;

    *err = NULL;
    while (used < len && rx->hdr_len < wire_header_need(rx)) {
        rx->hdr[rx->hdr_len++] = buf[used++];
        if (rx->hdr_len == 2 && (rx->hdr[1] & 0x80)) {
            *err = "masked frame from the server";
            break;
        }
    }
    *done = rx->hdr_len >= 2 && rx->hdr_len == wire_header_need(rx);
    return used;
}

size_t wsc_decode(struct wsc_rx *rx, const uint8_t *buf, size_t len,
                  struct wsc_event *ev)
{
    size_t used = 0, n;
    bool empty;

    *ev = (struct wsc_event){.type = WSC_EV_NEED_MORE};
    if (rx->failed)
        return wire_fail(rx, ev, "protocol already broken");
    if (!rx->in_payload) {
        bool done;
        const char *err;

        used = wire_take_header(rx, buf, len, &done, &err);
        if (err)
            return wire_fail(rx, ev, err);
        if (!done)
            return used;
        err = wire_frame_begin(rx);
        if (err)
            return wire_fail(rx, ev, err);
    }
    empty = rx->remaining == 0;
    if (used == len && !empty)
        return used;
    n = len - used < rx->remaining ? len - used : (size_t)rx->remaining;
    ev->data = buf + used;
    ev->len = n;
    rx->remaining -= n;
    used += n;
    if (!rx->remaining)
        rx->in_payload = 0;
    if (rx->opcode & 0x8) {
        ev->type = WSC_EV_CONTROL;
        ev->opcode = rx->opcode;
        ev->frame_end = !rx->remaining;
        return used;
    }
    ev->type = WSC_EV_DATA;
    ev->opcode = rx->msg_opcode;
    ev->compressed = rx->msg_deflated;
    ev->msg_start = !rx->msg_started;
    rx->msg_started = 1;
    ev->msg_end = !rx->remaining && rx->fin;
    if (ev->msg_end)
        rx->msg_opcode = 0;
    return used;
}

/* ---- publish/subscribe ------------------------------------------------ */

bool wsc_topic_valid(const char *s)
{
    size_t n = strlen(s);

    if (!n || n > WSC_MAX_TOPIC)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9') || strchr("-._~:/@", *s)))
            return false;
    return true;
}

size_t wsc_publish_head_write(char *out, size_t cap, const char *host, const char *topic,
                              const char *token, size_t body_len)
{
    int n = snprintf(out, cap,
                     "POST /publish/%s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Content-Length: %zu\r\n"
                     "%s%s%s"
                     "\r\n",
                     topic, host, body_len, token && *token ? "Authorization: Bearer " : "",
                     token && *token ? token : "", token && *token ? "\r\n" : "");

    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* A decimal number of at most 18 digits (no overflow); false otherwise. */
static bool wire_parse_u64(const char *p, const char *end, uint64_t *v)
{
    if (p == end || end - p > 18)
        return false;
    *v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        *v = *v * 10 + (uint64_t)(*p - '0');
    }
    return true;
}

/* Reads `"recipients": N` from a JSON body; the server writes nothing else
 * there, so a key search is enough and a general JSON parser is not. */
static void wire_find_recipients(struct wsc_answer *a)
{
    static const char key[] = "\"recipients\"";
    const char *p = memmem(a->body, a->body_len, key, sizeof key - 1);
    const char *end = a->body + a->body_len, *digits;

    if (!p)
        return;
    p += sizeof key - 1;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p == end || *p++ != ':')
        return;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    for (digits = p; p < end && *p >= '0' && *p <= '9'; p++)
        ;
    a->has_recipients = wire_parse_u64(digits, p, &a->recipients);
}

/* Checks one header line of an answer; records length and keep-alive. */
static int wire_answer_header(const char *line, const char *eol, struct wsc_answer *a,
                              uint64_t *clen, bool *has_clen, const char **why)
{
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    const char *v, *ve = eol;
    size_t nlen;

    if (!colon || colon == line) {
        *why = "malformed header line";
        return -EPROTO;
    }
    nlen = (size_t)(colon - line);
    v = wire_trim(colon + 1, &ve);
    if (wire_name_is(line, nlen, "Content-Length")) {
        uint64_t n;

        if (!wire_parse_u64(v, ve, &n) || (*has_clen && n != *clen)) {
            *why = "bad Content-Length";
            return -EPROTO;
        }
        *clen = n;
        *has_clen = true;
    } else if (wire_name_is(line, nlen, "Transfer-Encoding")) {
        *why = "Transfer-Encoding in a publish answer";
        return -EPROTO;
    } else if (wire_name_is(line, nlen, "Connection")) {
        if (http_token_list_has(v, (size_t)(ve - v), "close"))
            a->keep_alive = false;
        else if (http_token_list_has(v, (size_t)(ve - v), "keep-alive"))
            a->keep_alive = true;
    }
    return 0;
}

int wsc_answer_parse(const char *buf, size_t len, struct wsc_answer *a, const char **why)
{
    static const char proto[] = "HTTP/1.";
    const char *head_end = NULL, *line, *eol;
    uint64_t clen = 0;
    bool has_clen = false;
    size_t head;

    *a = (struct wsc_answer){0};
    if (memcmp(buf, proto, len < sizeof proto - 1 ? len : sizeof proto - 1)) {
        *why = "not an HTTP/1.x answer";
        return -EPROTO;
    }
    for (size_t i = 3; i < len && !head_end; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            head_end = buf + i + 1;
    if (!head_end) {
        if (len >= WSC_MAX_ANSWER) {
            *why = "answer head too long";
            return -EPROTO;
        }
        return 0;
    }
    /* "HTTP/1.x SSS": the status is three digits followed by SP or CRLF. */
    if (head_end - buf < 16 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ' ||
        buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' ||
        buf[11] < '0' || buf[11] > '9' || (buf[12] != ' ' && buf[12] != '\r')) {
        *why = "malformed status line";
        return -EPROTO;
    }
    a->status = (unsigned)((buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0'));
    a->keep_alive = buf[7] == '1';
    line = memchr(buf, '\n', (size_t)(head_end - buf)) + 1;
    for (; line < head_end - 2; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(head_end - line));
        if (!eol || eol[1] != '\n') {
            *why = "bare CR or LF in the head";
            return -EPROTO;
        }
        if (wire_answer_header(line, eol, a, &clen, &has_clen, why) < 0)
            return -EPROTO;
    }
    if (!has_clen) {
        /* Without a length the body would end only at the close, and a
         * publisher that keeps its connection cannot wait for that. */
        *why = "no Content-Length";
        return -EPROTO;
    }
    head = (size_t)(head_end - buf);
    if (clen > WSC_MAX_ANSWER - head) {
        *why = "answer body too long";
        return -EPROTO;
    }
    if (len < head + clen)
        return 0;
    a->body = head_end;
    a->body_len = (size_t)clen;
    wire_find_recipients(a);
    return (int)(head + clen);
}
