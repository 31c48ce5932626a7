/* frame.h - RFC 6455 frame decoder (streaming, in place) and encoder.
 *
 * Why it exists: frames arrive split at any byte across receive buffers, and
 * the protocol's rules (masking, RSV bits, opcodes, control-frame limits,
 * fragmentation, UTF-8, message size) must be enforced before any byte reaches
 * the application.  The decoder is pure: it holds at most a partial 14-byte
 * header, unmasks payload in place in the caller's buffer and reports chunks;
 * the caller decides whether a message can be handed over where it lies or
 * must be gathered.  The encoder writes server frame headers (never masked)
 * and close payloads. */
#ifndef RINGWS_FRAME_H
#define RINGWS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL_ERROR = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,    /* never on the wire */
    WS_CLOSE_ABNORMAL = 1006,     /* never on the wire */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_EXTENSION = 1010,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_SERVICE_RESTART = 1012,
    WS_CLOSE_TRY_AGAIN = 1013,
};

#define WS_MAX_CONTROL_PAYLOAD 125
#define WS_MAX_HEADER 14 /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_MAX_SERVER_HEADER 10 /* the same, unmasked: what the server sends */

/* In a DATA event's opcode, beside TEXT or BINARY: the message is
 * compressed (permessage-deflate, RSV1 on its first frame).  Its chunks are
 * the compressed bytes, not checked as UTF-8: the inflated text is. */
#define WS_MSG_DEFLATED 0x40u

enum ws_event_type {
    WS_EV_NEED_MORE = 0, /* all given bytes consumed, nothing to report */
    WS_EV_DATA,          /* a chunk of a text/binary message */
    WS_EV_CONTROL,       /* a chunk of a close/ping/pong frame */
    WS_EV_ERROR,         /* protocol violation: fail with close_code */
};

struct ws_event {
    uint8_t type;       /* enum ws_event_type */
    uint8_t opcode;     /* DATA: TEXT/BINARY of the message; CONTROL: its op */
    bool frame_start;   /* first chunk of this frame's payload */
    bool frame_end;     /* this frame's payload is complete */
    bool msg_start;     /* DATA: first chunk of the message */
    bool msg_end;       /* DATA: last chunk of the message (FIN frame done) */
    uint8_t *data;      /* unmasked payload bytes, in the caller's buffer */
    size_t len;         /* may be 0 (empty frames are reported) */
    uint16_t close_code; /* ERROR: the close code to send */
    const char *reason;  /* ERROR: static text for logs and the close reason */
};

struct ws_decoder {
    /* A failed decoder reads nothing of its frame and message again, so
     * the failure it repeats takes their place (one decoder per
     * connection: every byte of it is paid per idle connection). */
    union {
        uint64_t remaining;      /* payload bytes still to come in this frame */
        const char *fail_reason; /* with failed */
    };
    union {
        /* Data bytes of the open message so far: never above the limit
         * (ws_decode's max_message, at most 4 GiB - 1) when there is one,
         * and never read when there is none. */
        uint32_t msg_len;
        uint16_t fail_code; /* with failed */
    };
    struct utf8_state utf8;
    /* The header is gathered until the frame begins, the mask used only
     * after: they share their place (frame_begin moves the mask). */
    union {
        uint8_t hdr[WS_MAX_HEADER];
        uint8_t mask[4];
    };
    uint8_t hdr_len;      /* bytes of a partial header held in hdr */
    uint8_t in_payload;   /* 1 while payload bytes are expected */
    uint8_t opcode;       /* opcode of the current frame */
    uint8_t fin;
    uint8_t mask_off;     /* rotation of the mask for the next byte */
    uint8_t msg_opcode;   /* TEXT/BINARY while a fragmented message is open */
    uint8_t rsv_allowed;  /* RSV bits (0x70 mask) an extension negotiated */
    uint8_t deflate;      /* permessage-deflate: RSV1 marks a compressed message */
    uint8_t failed;       /* sticky: an ERROR was reported */
    uint8_t frame_started; /* a chunk of the current frame was reported */
};

/* require_mask is implied: this decoder reads client frames. */
void ws_decoder_init(struct ws_decoder *d);

/* A message limit as ws_decode takes it: one past 4 GiB - 1 acts as
 * 4 GiB - 1, which no gathered message (conn_pend: 32-bit lengths) could
 * pass anyway. */
static inline uint32_t ws_max_message(uint64_t limit)
{
    return limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit;
}

/* Decodes from buf[0..len), with max_message the limit on a message's data
 * bytes (0: none), the same on every call for a decoder (a server's, from
 * its configuration: not held in each connection's decoder).  Returns the
 * number of bytes consumed and fills
 * *ev.  The caller loops, advancing by the return value, until ev->type is
 * WS_EV_NEED_MORE (all bytes consumed) or WS_EV_ERROR.  DATA and CONTROL
 * chunks point into buf (unmasked in place); a chunk of an empty frame has
 * len 0.  Checks, each an ERROR with its close code:
 *   unmasked frame, RSV bits not allowed (with deflate, RSV1 only on the
 *   first frame of a data message), reserved opcode, control frame
 *   longer than 125 or fragmented, 64-bit length with top bit set,
 *   continuation with no open message, new data frame inside an open message
 *   (1002); text that is not UTF-8, checked per chunk and at message end
 *   (1007); message over max_message, checked from the header (1009).
 * After an ERROR every later call reports the same ERROR and consumes 0. */
size_t ws_decode(struct ws_decoder *d, uint8_t *buf, size_t len, struct ws_event *ev,
                 uint32_t max_message);

/* Writes a server frame header (unmasked) for `len` payload bytes.  `first`
 * is the opcode byte's low bits plus FIN/RSV: pass e.g. WS_FIN | WS_OP_TEXT.
 * Returns the header size: 2, 4 or WS_MAX_SERVER_HEADER. */
#define WS_FIN 0x80u
#define WS_RSV1 0x40u
size_t ws_frame_header(uint8_t out[WS_MAX_SERVER_HEADER], unsigned first, uint64_t len);
/* The size of a server frame's header (unmasked) from its first two bytes:
 * what ws_frame_header returned for it. */
size_t ws_frame_header_len(const uint8_t *hdr);

/* Writes a close payload (code, then reason cut to fit 125 bytes at a UTF-8
 * boundary) and returns its length.  code 0 writes an empty payload. */
size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL_PAYLOAD], uint16_t code,
                        const char *reason, size_t reason_len);

/* True for codes a peer may send: 1000-1003, 1007-1014, 3000-4999. */
bool ws_close_code_valid(uint16_t code);

/* Checks a received close payload.  Returns 0 when valid and sets *code
 * (1005 for an empty payload); else the close code to answer with: 1002 for
 * a 1-byte payload or an invalid code, 1007 for a reason that is not UTF-8. */
uint16_t ws_close_parse(const uint8_t *p, size_t n, uint16_t *code);

#endif
