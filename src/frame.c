/* frame.c - RFC 6455 frame decoding (streaming, in place) and encoding.
 *
 * Why it exists: a receive buffer holds whatever TCP delivered, so a frame
 * header may be cut at any byte and a payload may span many buffers.  The
 * decoder keeps only what it cannot leave in the caller's buffer (a partial
 * header, the mask and its rotation, the UTF-8 state of an open text
 * message) and reports payload as chunks unmasked where they lie.  Every
 * rule is checked as soon as the bytes that decide it have arrived, so a
 * hostile peer is cut off before it can make the server wait or buffer.
 *
 * Receivers need not insist on the shortest length encoding (RFC 6455 asks
 * it of senders only), so a 16- or 64-bit length holding a small value is
 * accepted.
 *
 * Most frames arrive whole: a small message lies in one receive buffer with
 * its header.  For those, frame_whole() reads the header from the buffer in
 * one go, checks every rule at once and reports the frame without the
 * byte-gathering state machine.  It only ever accepts: anything it does not
 * take (a cut header or payload, any rule broken) goes to the streaming
 * path untouched, which finds the error and reports it exactly as it would
 * have anyway.  So there is one definition of every rule's verdict, and the
 * fast path's only duty is to never accept what the streaming path would
 * refuse. */
#include "frame.h"

#include <string.h>

#include "unmask.h"

#define FRAME_OPCODE_BITS 0x0Fu
#define FRAME_RSV_BITS 0x70u
#define FRAME_MASK_BIT 0x80u
#define FRAME_LEN_BITS 0x7Fu
#define FRAME_MASK_LEN 4u

static bool frame_is_control(unsigned opcode)
{
    return (opcode & 0x8u) != 0;
}

static bool frame_opcode_known(unsigned opcode)
{
    return opcode <= WS_OP_BINARY ||
           (opcode >= WS_OP_CLOSE && opcode <= WS_OP_PONG);
}

/* Bytes of extended length that follow the 7-bit length field. */
static unsigned frame_ext_len(unsigned len7)
{
    if (len7 == 126)
        return 2;
    return len7 == 127 ? 8 : 0;
}

/* The payload length from a header holding at least its length bytes. */
static uint64_t frame_payload_len(const uint8_t *hdr)
{
    unsigned len7 = hdr[1] & FRAME_LEN_BITS;
    unsigned ext = frame_ext_len(len7);
    uint64_t len = ext ? 0 : len7;

    for (unsigned i = 0; i < ext; i++)
        len = len << 8 | hdr[2 + i];
    return len;
}

/* Reports an error and makes it stick: the connection is to be failed, so
 * no later byte may be interpreted. */
static void frame_fail(struct ws_decoder *d, struct ws_event *ev,
                       uint16_t code, const char *reason)
{
    d->failed = 1;
    d->fail_code = code;
    d->fail_reason = reason;
    *ev = (struct ws_event){.type = WS_EV_ERROR, .close_code = code,
                            .reason = reason};
}

/* Rules decided by the first two header bytes alone.  Returns the reason
 * text of a violation (always 1002), or NULL. */
static const char *frame_check_start(const struct ws_decoder *d)
{
    unsigned b0 = d->hdr[0], b1 = d->hdr[1];
    unsigned opcode = b0 & FRAME_OPCODE_BITS;

    unsigned rsv = b0 & FRAME_RSV_BITS & ~(unsigned)d->rsv_allowed;

    /* RFC 7692 6.1: RSV1 on a message's first frame marks it compressed;
     * control frames and continuations are never compressed. */
    if (d->deflate && (rsv & WS_RSV1)) {
        if (frame_is_control(opcode))
            return "compressed control frame";
        if (opcode == WS_OP_CONT)
            return "RSV1 on a continuation frame";
        rsv &= ~WS_RSV1;
    }
    if (rsv)
        return "reserved bits set";
    if (!frame_opcode_known(opcode))
        return "reserved opcode";
    if (!(b1 & FRAME_MASK_BIT))
        return "client frame not masked";
    if (frame_is_control(opcode)) {
        if (!(b0 & WS_FIN))
            return "fragmented control frame";
        if ((b1 & FRAME_LEN_BITS) > WS_MAX_CONTROL_PAYLOAD)
            return "control frame too long";
        return NULL;
    }
    if (opcode == WS_OP_CONT && !d->msg_opcode)
        return "continuation without a message";
    if (opcode != WS_OP_CONT && d->msg_opcode)
        return "new message inside a fragmented one";
    return NULL;
}

/* Rules decided once the length is known; returns the close code of a
 * violation or 0, and its reason in *reason. */
static uint16_t frame_check_length(const struct ws_decoder *d, const char **reason,
                                   uint32_t max_message)
{
    uint64_t len = frame_payload_len(d->hdr);

    if (len >> 63) {
        *reason = "frame length has its top bit set";
        return WS_CLOSE_PROTOCOL_ERROR;
    }
    if (frame_is_control(d->hdr[0] & FRAME_OPCODE_BITS) || !max_message)
        return 0;
    /* msg_len never exceeds max_message, so the subtraction cannot wrap. */
    if (len > max_message - d->msg_len) {
        *reason = "message too big";
        return WS_CLOSE_TOO_BIG;
    }
    return 0;
}

/* Copies header bytes until d->hdr holds `want` of them or buf runs out;
 * returns whether it got there. */
static bool frame_take_header(struct ws_decoder *d, const uint8_t *buf,
                              size_t len, size_t *used, size_t want)
{
    size_t take;

    if (d->hdr_len >= want)
        return true;
    take = want - d->hdr_len;
    if (take > len - *used)
        take = len - *used;
    if (take) {
        memcpy(d->hdr + d->hdr_len, buf + *used, take);
        d->hdr_len = (uint8_t)(d->hdr_len + take);
        *used += take;
    }
    return d->hdr_len == want;
}

/* Starts the frame whose complete header sits in d->hdr. */
static void frame_begin(struct ws_decoder *d, size_t hdr_size)
{
    unsigned b0 = d->hdr[0], opcode = b0 & FRAME_OPCODE_BITS;

    d->opcode = (uint8_t)opcode;
    d->fin = (b0 & WS_FIN) != 0;
    d->remaining = frame_payload_len(d->hdr);
    /* Last: the mask takes the place of the header's first bytes. */
    memmove(d->mask, d->hdr + hdr_size - FRAME_MASK_LEN, FRAME_MASK_LEN);
    d->mask_off = 0;
    d->hdr_len = 0;
    d->in_payload = 1;
    d->frame_started = 0;
    if (opcode == WS_OP_TEXT || opcode == WS_OP_BINARY) {
        /* A compressed message's opcode carries the mark: its chunks are
         * not text to validate (frame_track_message, frame_whole_report). */
        bool deflated = d->deflate && (b0 & WS_RSV1);
        d->msg_opcode = (uint8_t)(opcode | (deflated ? WS_MSG_DEFLATED : 0));
        d->msg_len = 0;
        utf8_init(&d->utf8);
    }
}

/* Gathers the header, checking each rule when its bytes are complete: the
 * checks run in the call that completes their bytes, never twice.  Returns
 * true once the frame has begun; false with ev untouched when buf ran out,
 * or with ev an ERROR. */
static bool frame_read_header(struct ws_decoder *d, const uint8_t *buf, size_t len,
                              size_t *used, struct ws_event *ev, uint32_t max_message)
{
    size_t before = d->hdr_len, want;
    const char *reason;
    uint16_t code;

    if (!frame_take_header(d, buf, len, used, 2))
        return false;
    if (before < 2 && (reason = frame_check_start(d))) {
        frame_fail(d, ev, WS_CLOSE_PROTOCOL_ERROR, reason);
        return false;
    }
    want = 2 + frame_ext_len(d->hdr[1] & FRAME_LEN_BITS);
    if (!frame_take_header(d, buf, len, used, want))
        return false;
    if (before < want && (code = frame_check_length(d, &reason, max_message))) {
        frame_fail(d, ev, code, reason);
        return false;
    }
    want += FRAME_MASK_LEN;
    if (!frame_take_header(d, buf, len, used, want))
        return false;
    frame_begin(d, want);
    return true;
}

/* Message bookkeeping for a data chunk in *ev.  Returns false when the
 * chunk makes a text message invalid, or ends it inside a code point. */
static bool frame_track_message(struct ws_decoder *d, struct ws_event *ev)
{
    ev->msg_start = ev->frame_start && d->opcode != WS_OP_CONT;
    ev->msg_end = ev->frame_end && d->fin;
    d->msg_len += ev->len;
    if (d->msg_opcode == WS_OP_TEXT) {
        enum utf8_result r = utf8_feed(&d->utf8, ev->data, ev->len);

        if (r == UTF8_INVALID || (ev->msg_end && r != UTF8_VALID))
            return false;
    }
    if (ev->msg_end) {
        d->msg_opcode = 0;
        d->msg_len = 0;
    }
    return true;
}

/* Unmasks and reports the payload bytes of the current frame found in
 * buf[used..len); returns the bytes consumed in all. */
static size_t frame_emit_chunk(struct ws_decoder *d, uint8_t *buf, size_t len,
                               size_t used, struct ws_event *ev)
{
    size_t n = len - used;
    uint8_t *p = buf + used;
    bool control = frame_is_control(d->opcode);

    if (n > d->remaining)
        n = (size_t)d->remaining;
    d->mask_off = (uint8_t)ws_unmask(p, n, d->mask, d->mask_off);
    d->remaining -= n;

    ev->type = control ? WS_EV_CONTROL : WS_EV_DATA;
    ev->opcode = control ? d->opcode : d->msg_opcode;
    ev->frame_start = !d->frame_started;
    ev->frame_end = d->remaining == 0;
    ev->data = p;
    ev->len = n;
    d->frame_started = 1;
    if (ev->frame_end)
        d->in_payload = 0;
    if (!control && !frame_track_message(d, ev))
        frame_fail(d, ev, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
    return used + n;
}

/* The rules of the first header byte for frame_whole(), for every value of
 * it: bit 0 set when such a frame may come while no fragmented message is
 * open, bit 1 when one is; FRAME_WHOLE_CONTROL marks control frames.  A
 * byte with a reserved opcode, RSV bits or a control opcode without FIN has
 * neither bit: the streaming path reports it.  RSV bits an extension
 * negotiated are cleared from the byte before the lookup. */
#define FRAME_WHOLE_CLOSED 1u
#define FRAME_WHOLE_OPEN 2u
#define FRAME_WHOLE_CONTROL 4u
#define FRAME_WHOLE_OP(op, fin)                                                    \
    ((op) == WS_OP_CONT ? FRAME_WHOLE_OPEN                                         \
     : (op) <= WS_OP_BINARY ? FRAME_WHOLE_CLOSED                                   \
     : (op) >= WS_OP_CLOSE && (op) <= WS_OP_PONG && (fin)                          \
         ? FRAME_WHOLE_CLOSED | FRAME_WHOLE_OPEN | FRAME_WHOLE_CONTROL             \
         : 0)
#define FRAME_WHOLE_B0(b) ((b) & FRAME_RSV_BITS ? 0 : FRAME_WHOLE_OP((b) & 15, (b) & 0x80))
#define FRAME_WHOLE_B0_4(b)                                                        \
    FRAME_WHOLE_B0(b), FRAME_WHOLE_B0((b) + 1), FRAME_WHOLE_B0((b) + 2),            \
        FRAME_WHOLE_B0((b) + 3)
#define FRAME_WHOLE_B0_16(b)                                                       \
    FRAME_WHOLE_B0_4(b), FRAME_WHOLE_B0_4((b) + 4), FRAME_WHOLE_B0_4((b) + 8),      \
        FRAME_WHOLE_B0_4((b) + 12)
static const uint8_t frame_whole_rules[256] = {
    FRAME_WHOLE_B0_16(0x00), FRAME_WHOLE_B0_16(0x10), FRAME_WHOLE_B0_16(0x20),
    FRAME_WHOLE_B0_16(0x30), FRAME_WHOLE_B0_16(0x40), FRAME_WHOLE_B0_16(0x50),
    FRAME_WHOLE_B0_16(0x60), FRAME_WHOLE_B0_16(0x70), FRAME_WHOLE_B0_16(0x80),
    FRAME_WHOLE_B0_16(0x90), FRAME_WHOLE_B0_16(0xA0), FRAME_WHOLE_B0_16(0xB0),
    FRAME_WHOLE_B0_16(0xC0), FRAME_WHOLE_B0_16(0xD0), FRAME_WHOLE_B0_16(0xE0),
    FRAME_WHOLE_B0_16(0xF0),
};

/* The smallest client frame: 2 header bytes and the mask. */
#define FRAME_MIN_CLIENT (2u + FRAME_MASK_LEN)

static size_t frame_whole_utf8(struct ws_decoder *d, struct ws_event *ev,
                               const uint8_t *p, size_t n, size_t used, bool msg_end);

/* Bookkeeping and the event for a whole frame whose payload p[0..n) is
 * unmasked; `first` is its first header byte, `used` the bytes it took in
 * all, `bits` the ASCII word of ws_unmask_short (0x80 when unknown).  The
 * only call, to the UTF-8 validator, is a tail call: the common case keeps
 * to scratch registers.  The per-frame fields of the decoder (opcode, fin,
 * mask, remaining) are the streaming path's and only read while in_payload
 * is set, so a whole frame leaves them as they are. */
static inline size_t frame_whole_report(struct ws_decoder *d, struct ws_event *ev,
                                        uint8_t *p, size_t n, size_t used,
                                        unsigned first, uint64_t bits)
{
    unsigned op = first & FRAME_OPCODE_BITS;
    bool msg_end = (first & WS_FIN) != 0, open = d->msg_opcode != 0;
    uint8_t msg_op;

    if (frame_is_control(op)) {
        *ev = (struct ws_event){.type = WS_EV_CONTROL, .opcode = (uint8_t)op,
                                .frame_start = true, .frame_end = true,
                                .data = p, .len = n};
        return used;
    }
    if (!open) {
        d->msg_opcode = (uint8_t)op;
        utf8_init(&d->utf8);
    }
    msg_op = d->msg_opcode;
    *ev = (struct ws_event){.type = WS_EV_DATA, .opcode = msg_op,
                            .frame_start = true, .frame_end = true,
                            .msg_start = !open, .msg_end = msg_end,
                            .data = p, .len = n};
    /* After a failure nothing of this state is read again, so it may be
     * settled before the UTF-8 verdict. */
    if (msg_end) {
        d->msg_opcode = 0;
        d->msg_len = 0;
    } else {
        d->msg_len += n; /* was 0 if this frame opened the message */
    }
    if (msg_op == WS_OP_TEXT &&
        (d->utf8.state != 0 || (bits & 0x8080808080808080ull) != 0))
        return frame_whole_utf8(d, ev, p, n, used, msg_end);
    return used;
}

/* Text that is not plain ASCII between code points: the validator decides. */
__attribute__((noinline))
static size_t frame_whole_utf8(struct ws_decoder *d, struct ws_event *ev,
                               const uint8_t *p, size_t n, size_t used, bool msg_end)
{
    enum utf8_result r = utf8_feed(&d->utf8, p, n);

    if (r == UTF8_INVALID || (msg_end && r != UTF8_VALID))
        frame_fail(d, ev, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
    return used;
}

/* A whole frame of WS_UNMASK_SHORT payload bytes or more. */
__attribute__((noinline))
static size_t frame_whole_long(struct ws_decoder *d, struct ws_event *ev, uint8_t *p,
                               size_t n, size_t used, unsigned first)
{
    ws_unmask(p, n, p - FRAME_MASK_LEN, 0);
    return frame_whole_report(d, ev, p, n, used, first, 0x80);
}

static size_t frame_decode_stream(struct ws_decoder *d, uint8_t *buf, size_t len,
                                  struct ws_event *ev, uint32_t max_message);

/* Decodes the frame at buf[0], at a frame boundary, when it lies whole in
 * buf[0..len) and breaks no rule; anything else goes to the streaming path
 * untouched, which then reports the frame (cut) or the rule it breaks. */
static inline size_t frame_whole(struct ws_decoder *d, uint8_t *buf, size_t len,
                                 struct ws_event *ev, uint32_t max_message)
{
    unsigned b0 = buf[0], b1 = buf[1];
    unsigned rules = frame_whole_rules[b0 & ~(d->rsv_allowed & FRAME_RSV_BITS)];
    unsigned open = d->msg_opcode != 0;
    unsigned len7 = b1 & FRAME_LEN_BITS;
    uint64_t n = len7;
    size_t hl = FRAME_MIN_CLIENT;
    uint8_t *p;

    if (!(rules >> open & 1) || !(b1 & FRAME_MASK_BIT))
        return frame_decode_stream(d, buf, len, ev, max_message);
    if (len7 >= 126) {
        /* Control frames must fit the 7-bit length (125 at most). */
        if (rules & FRAME_WHOLE_CONTROL)
            return frame_decode_stream(d, buf, len, ev, max_message);
        hl = 2 + frame_ext_len(len7) + FRAME_MASK_LEN;
        if (len < hl)
            return frame_decode_stream(d, buf, len, ev, max_message);
        n = frame_payload_len(buf);
    }
    /* Also refuses a 64-bit length with its top bit set: it never fits. */
    if (n > len - hl)
        return frame_decode_stream(d, buf, len, ev, max_message);
    /* Control frames do not count toward a message; msg_len is 0 when no
     * message is open, and never above max_message. */
    if (!(rules & FRAME_WHOLE_CONTROL) && max_message && n > max_message - d->msg_len)
        return frame_decode_stream(d, buf, len, ev, max_message);
    /* Accepted: from here on the frame is consumed. */
    p = buf + hl;
    if (n >= WS_UNMASK_SHORT)
        return frame_whole_long(d, ev, p, (size_t)n, hl + (size_t)n, b0);
    return frame_whole_report(d, ev, p, (size_t)n, hl + (size_t)n, b0,
                              ws_unmask_short(p, (size_t)n,
                                              ws_unmask_key(p - FRAME_MASK_LEN, 0)));
}

void ws_decoder_init(struct ws_decoder *d)
{
    *d = (struct ws_decoder){0};
    utf8_init(&d->utf8);
}

/* The streaming path: any frame, cut anywhere.  Kept out of line so that
 * the whole-frame path in ws_decode() pays for none of its registers. */
__attribute__((noinline))
static size_t frame_decode_stream(struct ws_decoder *d, uint8_t *buf, size_t len,
                                  struct ws_event *ev, uint32_t max_message)
{
    size_t used = 0;

    *ev = (struct ws_event){0};
    if (d->failed) {
        frame_fail(d, ev, d->fail_code, d->fail_reason);
        return 0;
    }
    if (!d->in_payload && !frame_read_header(d, buf, len, &used, ev, max_message))
        return used;
    /* No payload byte here: nothing to report, unless the frame is empty,
     * which is reported once, in the call that completes its header. */
    if (used == len && d->remaining > 0)
        return used;
    return frame_emit_chunk(d, buf, len, used, ev);
}

size_t ws_decode(struct ws_decoder *d, uint8_t *buf, size_t len, struct ws_event *ev,
                 uint32_t max_message)
{
    /* At a frame boundary with a whole header's worth of bytes: try the
     * whole-frame path; a failed decoder keeps to the streaming path. */
    if (!(d->in_payload | d->hdr_len | d->failed) && len >= FRAME_MIN_CLIENT)
        return frame_whole(d, buf, len, ev, max_message);
    return frame_decode_stream(d, buf, len, ev, max_message);
}

size_t ws_frame_header(uint8_t out[WS_MAX_SERVER_HEADER], unsigned first, uint64_t len)
{
    size_t ext;

    out[0] = (uint8_t)first;
    if (len <= WS_MAX_CONTROL_PAYLOAD) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        ext = 2;
    } else {
        out[1] = 127;
        ext = 8;
    }
    for (size_t i = 0; i < ext; i++)
        out[2 + i] = (uint8_t)(len >> (8 * (ext - 1 - i)));
    return 2 + ext;
}

size_t ws_frame_header_len(const uint8_t *hdr)
{
    return 2 + frame_ext_len(hdr[1] & FRAME_LEN_BITS);
}

size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL_PAYLOAD], uint16_t code,
                        const char *reason, size_t reason_len)
{
    size_t n = reason_len;

    if (!code)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n > WS_MAX_CONTROL_PAYLOAD - 2) {
        n = WS_MAX_CONTROL_PAYLOAD - 2;
        /* Back off to the start of the code point the cut fell into. */
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(out + 2, reason, n);
    return 2 + n;
}

/* RFC 6455's codes, and 1012-1014 (Service Restart, Try Again Later, Bad
 * Gateway) that the IANA registry added after it. */
bool ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

uint16_t ws_close_parse(const uint8_t *p, size_t n, uint16_t *code)
{
    uint16_t c;

    if (n == 0) {
        *code = WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (n == 1)
        return WS_CLOSE_PROTOCOL_ERROR;
    c = (uint16_t)(p[0] << 8 | p[1]);
    if (!ws_close_code_valid(c))
        return WS_CLOSE_PROTOCOL_ERROR;
    if (!utf8_valid(p + 2, n - 2))
        return WS_CLOSE_INVALID_DATA;
    *code = c;
    return 0;
}
