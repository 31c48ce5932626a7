/* bench_wire.h - the client side of RFC 6455 for the load generator.
 *
 * Why it exists: the load generator must judge the server from the wire, not
 * trust it, so it speaks the protocol as an independent client: a random
 * Sec-WebSocket-Key and a check of the 101 answer, masked frames out, and a
 * streaming decoder for the server's frames that rejects what a server must
 * never send (masked frames, RSV bits other than permessage-deflate's
 * RSV1 once agreed, bad control frames).  Pure: bytes in,
 * verdicts out, no I/O and no allocation. */
#ifndef RINGWS_BENCH_WIRE_H
#define RINGWS_BENCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSC_KEY_LEN 24          /* base64 of 16 random bytes */
#define WSC_MAX_HEAD 14         /* 2 + 8 (64-bit length) + 4 (mask) */
#define WSC_MAX_RESPONSE 4096   /* a 101 answer longer than this is refused */

/* Fills key with a fresh random key (NUL-terminated).  0 or -EIO. */
int wsc_key_make(char key[WSC_KEY_LEN + 1]);

/* What the client offers with `deflate`: permessage-deflate as browsers do,
 * but with server_no_context_takeover, so that it can inflate each message
 * on its own (it never compresses what it sends). */
#define WSC_DEFLATE_OFFER "permessage-deflate; server_no_context_takeover; client_max_window_bits"

/* Writes the upgrade request, offering `protocol` in Sec-WebSocket-Protocol
 * unless it is NULL or "", and WSC_DEFLATE_OFFER with deflate; returns its
 * length, 0 when cap is too small. */
size_t wsc_request_write(char *out, size_t cap, const char *host, const char *path,
                         const char key[WSC_KEY_LEN + 1], const char *protocol, bool deflate);

/* Checks a server's answer to the request sent with `key` (and offering
 * `protocol`, NULL or "": none, which the answer must then choose; and
 * permessage-deflate when deflate, which it may take, with
 * server_no_context_takeover: *deflated says whether it did).  Returns the
 * length of a complete, valid 101 head (> 0), 0 when more bytes are needed,
 * or -EPROTO with *why set to a short static reason. */
int wsc_response_check(const char *buf, size_t len, const char key[WSC_KEY_LEN + 1],
                       const char *protocol, bool deflate, bool *deflated, const char **why);

/* Writes a masked client frame header for `len` payload bytes (first: FIN |
 * opcode); returns its size (6, 8 or 14).  The payload that follows must be
 * masked by the caller with the same key (ws_unmask does it in place). */
size_t wsc_frame_head(uint8_t out[WSC_MAX_HEAD], unsigned first, uint64_t len,
                      const uint8_t mask[4]);

/* Writes a whole masked frame (head and masked copy of the payload) and
 * returns its size; out must hold WSC_MAX_HEAD + len bytes. */
size_t wsc_frame_write(uint8_t *out, unsigned first, const void *payload,
                       size_t len, const uint8_t mask[4]);

enum wsc_event_type {
    WSC_EV_NEED_MORE = 0, /* every byte given was consumed */
    WSC_EV_DATA,          /* a chunk of a text or binary message */
    WSC_EV_CONTROL,       /* a chunk of a close, ping or pong frame */
    WSC_EV_ERROR,         /* the server broke the protocol */
};

struct wsc_event {
    uint8_t type;         /* enum wsc_event_type */
    uint8_t opcode;       /* DATA: the message's opcode; CONTROL: the frame's */
    bool msg_start;       /* DATA: first chunk of the message */
    bool msg_end;         /* DATA: last chunk of the message */
    bool frame_end;       /* CONTROL: last chunk of the control frame */
    bool compressed;      /* DATA: the message came with RSV1 (permessage-deflate) */
    const uint8_t *data;  /* points into the caller's buffer */
    size_t len;
    const char *error;    /* ERROR: static reason */
};

/* Decoder state for frames coming from a server. */
struct wsc_rx {
    uint64_t remaining;   /* payload bytes still to come in this frame */
    uint8_t hdr[10];      /* a header split across reads */
    uint8_t hdr_len;
    uint8_t in_payload;
    uint8_t opcode;       /* of the current frame */
    uint8_t fin;
    uint8_t msg_opcode;   /* TEXT/BINARY while a message is open, else 0 */
    uint8_t msg_started;  /* a chunk of the open message was reported */
    uint8_t failed;
    uint8_t deflate;      /* permessage-deflate agreed: RSV1 on a message's first frame */
    uint8_t msg_deflated; /* the open message is compressed */
};

static inline void wsc_rx_init(struct wsc_rx *rx)
{
    *rx = (struct wsc_rx){0};
}

/* Decodes from buf[0..len): returns bytes consumed and fills *ev.  Loop
 * while ev->type is DATA or CONTROL; empty frames are reported with len 0.
 * After an ERROR, every call reports it again and consumes nothing. */
size_t wsc_decode(struct wsc_rx *rx, const uint8_t *buf, size_t len,
                  struct wsc_event *ev);

/* ---- publish/subscribe (docs/PUBSUB.md) ------------------------------ */

#define WSC_MAX_TOPIC 128
#define WSC_MAX_ANSWER 8192     /* a publish answer longer than this is refused */

/* True when s is a topic name the server accepts: 1..128 bytes of
 * A-Z a-z 0-9 - . _ ~ : / @. */
bool wsc_topic_valid(const char *s);

/* Writes the head of `POST /publish/TOPIC` with a binary body of body_len
 * bytes (the body follows it on the wire); token NULL or "": no
 * Authorization.  Returns its length, 0 when cap is too small. */
size_t wsc_publish_head_write(char *out, size_t cap, const char *host, const char *topic,
                              const char *token, size_t body_len);

/* What a publish answer said. */
struct wsc_answer {
    unsigned status;          /* 200 when published */
    bool keep_alive;          /* the connection may carry the next publish */
    bool has_recipients;      /* the body held "recipients":N */
    uint64_t recipients;
    const char *body;         /* points into the caller's buffer */
    size_t body_len;
};

/* Parses a publish answer (status line, headers, Content-Length body) from
 * buf[0..len).  Returns its whole length (> 0) when complete, 0 when more
 * bytes are needed, or -EPROTO with *why set to a short static reason. */
int wsc_answer_parse(const char *buf, size_t len, struct wsc_answer *a, const char **why);

#endif
