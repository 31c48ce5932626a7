/* fuzz_frame.c - the streaming frame decoder, however its bytes are cut.
 *
 * Why it exists: ws_decode keeps state between receive buffers (a partial
 * header, the mask rotation, the UTF-8 state of an open text message), and
 * a client chooses where TCP cuts its bytes.  The input is taken as client
 * bytes and decoded four times: whole, byte by byte and twice in random
 * cuts, each on its own copy (the decoder unmasks in place) with nothing
 * outside the current cut readable.  Events are folded into frames (kind,
 * opcode, message flags, payload bytes joined) and an end (error code or
 * none); every cut must give the whole decode's frames, and the whole decode
 * must match a plain decoder written from RFC 6455 below.  The one allowed
 * difference is documented: a text chunk that breaks UTF-8 is not reported,
 * so a cut decode may have shown the valid start of the failing frame.
 * Close frames are judged by ws_close_parse against the reference rules.
 * max_message is small and taken from the input, so 1009 is reached; so is
 * whether RSV1 was negotiated (as permessage-deflate would).
 *
 * The whole decode goes through the decoder's whole-frame path wherever a
 * frame lies whole in the input; the byte-by-byte decode never does (no
 * piece holds a header) and the cut decodes mix the two, so the property
 * "same frames however cut" also holds the fast path to the streaming one. */
#include "frame.h"
#include "fuzz_common.h"

struct frame_rec {
    uint8_t type;   /* WS_EV_DATA or WS_EV_CONTROL */
    uint8_t opcode;
    bool msg_start, msg_end, complete;
    size_t at, len; /* payload in the run's pool */
};

/* Everything one decode reported, folded. */
struct run {
    struct frame_rec *frames;
    size_t n, frames_cap;
    uint8_t *pool; /* payload bytes of all frames, in order */
    size_t pool_len, size;
    uint8_t *msg;  /* bytes of the open text message, for the UTF-8 check */
    size_t msg_len;
    uint8_t msg_opcode;
    bool open;     /* the last frame is still being reported */
    bool failed;
    uint16_t code;
    /* The reference only: the payload of the frame that failed UTF-8. */
    size_t fail_at, fail_len;
};

static void run_init(struct run *r, size_t size)
{
    *r = (struct run){0};
    /* Each frame takes at least 6 bytes of input; payload never exceeds it. */
    r->frames_cap = size / 6 + 1;
    r->size = size;
    r->frames = malloc(r->frames_cap * sizeof *r->frames);
    r->pool = malloc(size + 1);
    r->msg = malloc(size + 1);
    FUZZ_CHECK(r->frames && r->pool && r->msg, "out of memory");
}

static void run_free(struct run *r)
{
    free(r->frames);
    free(r->pool);
    free(r->msg);
}

static const char *kind(uint8_t type)
{
    return type == WS_EV_DATA ? "data" : type == WS_EV_CONTROL ? "control" : "?";
}

/* ---- folding the decoder's events ----------------------------------------- */

static void fold_message(struct run *r, const struct ws_event *ev)
{
    size_t bad;

    if (ev->msg_start) {
        FUZZ_CHECK(ev->frame_start, "message starts inside a frame");
        FUZZ_CHECK(r->msg_opcode == 0, "message starts inside message");
        r->msg_opcode = ev->opcode;
        r->msg_len = 0;
    }
    FUZZ_CHECK(r->msg_opcode == ev->opcode, "data opcode %u in a message of %u",
               ev->opcode, r->msg_opcode);
    FUZZ_CHECK((ev->opcode & ~WS_MSG_DEFLATED) == WS_OP_TEXT ||
                   (ev->opcode & ~WS_MSG_DEFLATED) == WS_OP_BINARY,
               "data event with opcode %u", ev->opcode);
    memcpy(r->msg + r->msg_len, ev->data, ev->len);
    r->msg_len += ev->len;
    if (!ev->msg_end)
        return;
    FUZZ_CHECK(ev->frame_end, "message ends inside a frame");
    if (ev->opcode == WS_OP_TEXT)
        FUZZ_CHECK(fuzz_utf8_ref(r->msg, r->msg_len, &bad, NULL) == FUZZ_UTF8_VALID,
                   "text message of %zu bytes handed over, not UTF-8", r->msg_len);
    r->msg_opcode = 0;
}

static void fold(struct run *r, const struct ws_event *ev)
{
    struct frame_rec *f = &r->frames[r->n - (r->open ? 1 : 0)];

    FUZZ_CHECK(r->open || r->n < r->frames_cap, "more frames than the input can hold");
    FUZZ_CHECK(r->pool_len + ev->len <= r->size && r->msg_len + ev->len <= r->size,
               "more payload than input");
    FUZZ_CHECK(ev->frame_start == !r->open, "frame_start %d while a frame is %s",
               ev->frame_start, r->open ? "open" : "closed");
    if (ev->frame_start) {
        *f = (struct frame_rec){ev->type, ev->opcode, ev->msg_start, false, false,
                                r->pool_len, 0};
        r->n++;
    } else {
        FUZZ_CHECK(f->type == ev->type && f->opcode == ev->opcode,
                   "%s frame %u goes on as %s %u", kind(f->type), f->opcode,
                   kind(ev->type), ev->opcode);
        FUZZ_CHECK(!ev->msg_start, "message starts after a frame's first chunk");
    }
    memcpy(r->pool + r->pool_len, ev->data, ev->len);
    r->pool_len += ev->len;
    f->len += ev->len;
    f->msg_end = ev->msg_end;
    f->complete = ev->frame_end;
    r->open = !ev->frame_end;
    if (ev->type == WS_EV_DATA)
        fold_message(r, ev);
}

/* ---- decoding -------------------------------------------------------------- */

/* Decodes buf[from..to) of a block of `size` bytes, looping as frame.h
 * asks; returns false once the decoder failed. */
static bool feed(struct ws_decoder *d, uint32_t max_message, uint8_t *block, size_t size,
                 size_t from, size_t to, struct run *r)
{
    size_t pos = from;

    for (;;) {
        struct ws_event ev;
        size_t left = to - pos;

        fuzz_window(block, size, pos, to);
        size_t used = ws_decode(d, block + pos, left, &ev, max_message);
        fuzz_window_clear(block, size);

        FUZZ_CHECK(used <= left, "consumed %zu of %zu bytes", used, left);
        if (ev.type == WS_EV_ERROR) {
            FUZZ_CHECK(ev.close_code == WS_CLOSE_PROTOCOL_ERROR ||
                           ev.close_code == WS_CLOSE_INVALID_DATA ||
                           ev.close_code == WS_CLOSE_TOO_BIG,
                       "close code %u", ev.close_code);
            FUZZ_CHECK(ev.reason != NULL, "error without a reason");
            r->failed = true;
            r->code = ev.close_code;

            struct ws_event again;
            FUZZ_CHECK(ws_decode(d, block + pos + used, left - used, &again, max_message) == 0 &&
                           again.type == WS_EV_ERROR && again.close_code == r->code,
                       "error %u is not sticky", r->code);
            return false;
        }
        pos += used;
        if (ev.type == WS_EV_NEED_MORE) {
            FUZZ_CHECK(pos == to, "need more with %zu bytes left", to - pos);
            return true;
        }
        FUZZ_CHECK(ev.type == WS_EV_DATA || ev.type == WS_EV_CONTROL, "event type %u",
                   ev.type);
        FUZZ_CHECK(ev.len == 0 || (ev.data >= block + pos - used &&
                                   ev.data + ev.len <= block + pos),
                   "chunk outside the bytes consumed");
        /* Every chunk consumes bytes: an empty frame consumes its header. */
        FUZZ_CHECK(used > 0, "%s event consumed nothing", kind(ev.type));
        fold(r, &ev);
    }
}

/* One decode of a fresh copy: mode 0 in one piece, 1 byte by byte, else
 * in random cuts. */
static void decode(const uint8_t *data, size_t size, uint64_t max_message, uint8_t rsv,
                   int mode, struct fuzz_rng *rng, struct run *r)
{
    struct ws_decoder d;
    uint8_t *copy = fuzz_dup(data, size);
    size_t pos = 0;

    run_init(r, size);
    ws_decoder_init(&d);
    d.rsv_allowed = rsv & 0x70;
    d.deflate = rsv >> 7;
    do { /* at least once, so that an empty input is fed too */
        size_t step = mode == 0 ? size : mode == 1 ? 1 : fuzz_cut(rng);
        size_t to = step < size - pos ? pos + step : size;

        if (!feed(&d, ws_max_message(max_message), copy, size, pos, to, r))
            break;
        pos = to;
    } while (pos < size);
    if (r->msg_opcode == WS_OP_TEXT) {
        size_t bad;
        FUZZ_CHECK(fuzz_utf8_ref(r->msg, r->msg_len, &bad, NULL) != FUZZ_UTF8_INVALID,
                   "invalid UTF-8 handed over in an open text message");
    }
    free(copy);
}

/* ---- the reference decoder ------------------------------------------------- */

static bool ref_fail(struct run *r, uint16_t code)
{
    r->failed = true;
    r->code = code;
    return false;
}

/* The rules decided by the first two bytes; false when they fail.  `rsv`:
 * the RSV bits an extension negotiated, and 0x80 for permessage-deflate
 * (RFC 7692 6.1: RSV1 only on a data message's first frame). */
static bool ref_start(struct run *r, uint8_t b0, uint8_t b1, uint8_t msg_opcode, uint8_t rsv)
{
    unsigned op = b0 & 0x0F, bits = b0 & 0x70 & ~rsv;

    if ((rsv & 0x80) && (bits & 0x40)) {
        if (op == 0 || op >= 8)
            return ref_fail(r, 1002);
        bits &= ~0x40u;
    }
    if (bits)
        return ref_fail(r, 1002);
    if (!(op <= 2 || (op >= 8 && op <= 10)))
        return ref_fail(r, 1002);
    if (!(b1 & 0x80))
        return ref_fail(r, 1002);
    if (op >= 8)
        return (b0 & 0x80) && (b1 & 0x7F) <= 125 ? true : ref_fail(r, 1002);
    if (op == 0 && !msg_opcode)
        return ref_fail(r, 1002);
    if (op != 0 && msg_opcode)
        return ref_fail(r, 1002);
    return true;
}

static void ref_record(struct run *r, uint8_t type, uint8_t opcode, bool msg_start,
                       bool msg_end, bool complete, const uint8_t *p, size_t n)
{
    r->frames[r->n++] = (struct frame_rec){type, opcode, msg_start, msg_end, complete,
                                           r->pool_len, n};
    memcpy(r->pool + r->pool_len, p, n);
    r->pool_len += n;
}

/* Decodes the whole input frame by frame, as RFC 6455 5.2 lays frames out. */
static void ref_decode(const uint8_t *in, size_t size, uint64_t max_message, uint8_t rsv,
                       struct run *r)
{
    uint8_t *pay = malloc(size + 1);
    size_t pos = 0;
    uint64_t msg_total = 0;

    FUZZ_CHECK(pay != NULL, "out of memory");
    run_init(r, size);
    while (size - pos >= 2) {
        uint8_t b0 = in[pos], b1 = in[pos + 1];
        unsigned op = b0 & 0x0F, len7 = b1 & 0x7F;
        bool fin = b0 & 0x80, control = op >= 8;
        size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        uint64_t len = len7 < 126 ? len7 : 0;

        if (!ref_start(r, b0, b1, r->msg_opcode, rsv) || size - pos < 2 + ext)
            break;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | in[pos + 2 + i];
        if (len >> 63) {
            ref_fail(r, 1002);
            break;
        }
        uint64_t before = op == 0 ? msg_total : 0;
        if (!control && max_message && before + len > max_message) {
            ref_fail(r, 1009);
            break;
        }
        if (size - pos < 2 + ext + 4)
            break;
        const uint8_t *mask = in + pos + 2 + ext;
        pos += 2 + ext + 4;
        size_t avail = len < size - pos ? (size_t)len : size - pos;
        if (avail == 0 && len > 0)
            break;
        for (size_t i = 0; i < avail; i++)
            pay[i] = in[pos + i] ^ mask[i % 4];
        pos += avail;
        bool complete = avail == len;

        if (control) {
            ref_record(r, WS_EV_CONTROL, (uint8_t)op, false, false, complete, pay, avail);
            if (!complete)
                break;
            continue;
        }
        if (op != 0) {
            /* A compressed message is marked, and its bytes are not text. */
            r->msg_opcode = (uint8_t)(op | ((rsv & 0x80) && (b0 & 0x40) ? WS_MSG_DEFLATED : 0));
            r->msg_len = 0;
            msg_total = 0;
        }
        msg_total += avail;
        if (r->msg_opcode == WS_OP_TEXT) {
            size_t bad;
            memcpy(r->msg + r->msg_len, pay, avail);
            r->msg_len += avail;
            enum fuzz_utf8_verdict v = fuzz_utf8_ref(r->msg, r->msg_len, &bad, NULL);
            if (v == FUZZ_UTF8_INVALID || (complete && fin && v != FUZZ_UTF8_VALID)) {
                /* Kept aside: a cut decode may have shown its valid start. */
                r->fail_at = r->pool_len;
                r->fail_len = avail;
                memcpy(r->pool + r->pool_len, pay, avail);
                ref_fail(r, 1007);
                break;
            }
        }
        ref_record(r, WS_EV_DATA, r->msg_opcode, op != 0, complete && fin, complete, pay,
                   avail);
        if (complete && fin)
            r->msg_opcode = 0;
        if (!complete)
            break;
    }
    free(pay);
}

/* ---- comparing ------------------------------------------------------------- */

static void check_frame(const struct run *a, const struct run *b, size_t i, const char *what)
{
    const struct frame_rec *x = &a->frames[i], *y = &b->frames[i];

    FUZZ_CHECK(x->type == y->type && x->opcode == y->opcode, "%s: frame %zu is %s %u, not %s %u",
               what, i, kind(y->type), y->opcode, kind(x->type), x->opcode);
    FUZZ_CHECK(x->msg_start == y->msg_start && x->msg_end == y->msg_end &&
                   x->complete == y->complete,
               "%s: frame %zu flags start %d end %d complete %d, not %d %d %d", what, i,
               y->msg_start, y->msg_end, y->complete, x->msg_start, x->msg_end, x->complete);
    FUZZ_CHECK(x->len == y->len, "%s: frame %zu has %zu payload bytes, not %zu", what, i,
               y->len, x->len);
    FUZZ_CHECK(memcmp(a->pool + x->at, b->pool + y->at, x->len) == 0,
               "%s: frame %zu payload differs", what, i);
}

/* `want` is the reference or the whole decode, `got` a decode to judge. */
static void check_runs(const struct run *want, const struct run *got, const struct run *ref,
                       bool cut, const char *what)
{
    FUZZ_CHECK(want->failed == got->failed && want->code == got->code,
               "%s: ends with %s %u, not %s %u", what, got->failed ? "error" : "no error",
               got->code, want->failed ? "error" : "no error", want->code);
    size_t n = want->n;
    if (cut && want->failed && want->code == WS_CLOSE_INVALID_DATA && got->n == n + 1) {
        const struct frame_rec *extra = &got->frames[n];

        FUZZ_CHECK(!extra->complete && extra->len < ref->fail_len &&
                       memcmp(got->pool + extra->at, ref->pool + ref->fail_at, extra->len) == 0,
                   "%s: frame %zu shown before failing UTF-8 is not a start of it", what, n);
    } else {
        FUZZ_CHECK(got->n == n, "%s: %zu frames, not %zu", what, got->n, n);
    }
    for (size_t i = 0; i < n; i++)
        check_frame(want, got, i, what);
}

static void check_closes(const struct run *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct frame_rec *f = &r->frames[i];
        uint16_t code = 0, want_code = 0;

        if (f->type != WS_EV_CONTROL || f->opcode != WS_OP_CLOSE || !f->complete)
            continue;
        uint16_t rc = ws_close_parse(r->pool + f->at, f->len, &code);
        uint16_t want = fuzz_close_ref(r->pool + f->at, f->len, &want_code);
        FUZZ_CHECK(rc == want && (rc || code == want_code),
                   "close payload of %zu bytes: %u/%u, rules say %u/%u", f->len, rc, code,
                   want, want_code);
    }
}

/* The encoder's header for a length must read back as that length, in the
 * shortest form. */
static void check_header_writer(uint64_t len, unsigned first)
{
    uint8_t out[10];
    size_t n = ws_frame_header(out, first, len);
    size_t want = len <= 125 ? 2 : len <= 0xFFFF ? 4 : 10;
    uint64_t back = out[1] & 0x7F;

    FUZZ_CHECK(n == want && out[0] == first && !(out[1] & 0x80),
               "header for %llu: %zu bytes", (unsigned long long)len, n);
    if (n > 2) {
        back = 0;
        for (size_t i = 2; i < n; i++)
            back = back << 8 | out[i];
    }
    FUZZ_CHECK(back == len, "header for %llu reads %llu", (unsigned long long)len,
               (unsigned long long)back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t max_messages[4] = {0, 16, 125, 1024};
    struct fuzz_rng rng = {fuzz_hash(data, size, 2)};
    uint64_t pick = fuzz_next(&rng);
    uint64_t max_message = max_messages[pick & 3];
    /* RSV1 plainly allowed, or with permessage-deflate's meaning, or not. */
    uint8_t rsv = pick >> 62 & 1 ? 0x40 : pick >> 61 & 1 ? 0x80 : 0;
    struct run ref, whole, cut;

    ref_decode(data, size, max_message, rsv, &ref);
    decode(data, size, max_message, rsv, 0, &rng, &whole);
    check_runs(&ref, &whole, &ref, false, "whole decode against the reference");
    check_closes(&whole);
    for (int mode = 1; mode <= 3; mode++) {
        decode(data, size, max_message, rsv, mode, &rng, &cut);
        check_runs(&whole, &cut, &ref, true, mode == 1 ? "byte-by-byte decode" : "cut decode");
        run_free(&cut);
    }
    run_free(&whole);
    run_free(&ref);

    check_header_writer(pick >> 2 >> (pick % 64), WS_FIN | (unsigned)(pick >> 56 & 0x0F));
    return 0;
}
