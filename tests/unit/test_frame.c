/* test_frame.c - the frame decoder, the encoders and unmasking.
 *
 * Why it exists: the decoder meets bytes cut wherever TCP cut them, so the
 * same stream must give the same messages whether it arrives whole, in two
 * pieces cut at any offset, byte by byte or in random chunks; and every
 * protocol violation must give its exact close code as soon as the bytes that
 * prove it are in, not later.  Streams are built here by an independent
 * encoder with random masking keys and random (also non-minimal) length
 * encodings, and each piece handed to the decoder ends at the edge of an
 * inaccessible page so that any read past the end crashes the test. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guard.h"
#include "frame.h"
#include "unmask.h"
#include "utf8.h"

/* ---- random numbers ----------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static uint32_t rng_below(uint32_t n)
{
    return rng_next() % n;
}

/* ---- growable byte buffer ----------------------------------------------- */

struct bytes {
    uint8_t *b;
    size_t len, cap;
};

static void bytes_put(struct bytes *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        w->cap = (w->len + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
        if (!w->b)
            abort();
    }
    if (n)
        memcpy(w->b + w->len, p, n);
    w->len += n;
}

static void bytes_free(struct bytes *w)
{
    free(w->b);
    *w = (struct bytes){0};
}

/* ---- client-side encoder (independent of the code under test) ----------- */

enum len_form { LEN_MIN, LEN_16, LEN_64, LEN_RANDOM };

/* Appends one frame.  `first` is the FIN/RSV/opcode byte; the payload is
 * masked with a random key unless `unmasked`.  LEN_RANDOM picks a longer
 * length encoding than needed now and then, for data frames only. */
static void wire_frame_ex(struct bytes *w, unsigned first, const void *payload,
                          size_t n, enum len_form form, bool unmasked)
{
    const uint8_t *pl = payload;
    uint8_t h[14], key[4];
    size_t hl = 2;

    if (form == LEN_RANDOM && (first & 0x8))
        form = LEN_MIN; /* a control frame must use the 7-bit length */
    if (form == LEN_RANDOM) {
        unsigned r = rng_below(8);

        form = r == 0 ? LEN_64 : r == 1 ? LEN_16 : LEN_MIN;
    }
    if (form == LEN_16 && n > 0xffff)
        form = LEN_64;
    if (form == LEN_MIN)
        form = n < 126 ? LEN_MIN : n <= 0xffff ? LEN_16 : LEN_64;
    h[0] = (uint8_t)first;
    h[1] = unmasked ? 0 : 0x80;
    if (form == LEN_MIN) {
        h[1] |= (uint8_t)n;
    } else if (form == LEN_16) {
        h[1] |= 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] |= 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)rng_next();
    if (!unmasked) {
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    bytes_put(w, h, hl);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(pl[i] ^ (unmasked ? 0 : key[i % 4]));

        bytes_put(w, &c, 1);
    }
}

static void wire_frame(struct bytes *w, unsigned first, const void *pl, size_t n)
{
    wire_frame_ex(w, first, pl, n, LEN_RANDOM, false);
}

/* ---- expected results and the recorder ---------------------------------- */

/* A complete data message or control frame, in completion order. */
struct unit {
    uint8_t type;   /* WS_EV_DATA or WS_EV_CONTROL */
    uint8_t opcode;
    struct bytes data;
};

#define MAX_UNITS 256

struct units {
    struct unit u[MAX_UNITS];
    size_t n;
};

static void units_add(struct units *us, uint8_t type, uint8_t opcode,
                      const void *p, size_t n)
{
    struct unit *u;

    if (us->n == MAX_UNITS)
        abort();
    u = &us->u[us->n++];
    *u = (struct unit){.type = type, .opcode = opcode};
    bytes_put(&u->data, p, n);
}

static void units_free(struct units *us)
{
    for (size_t i = 0; i < us->n; i++)
        bytes_free(&us->u[i].data);
    us->n = 0;
}

/* Reassembles events and checks their flags against each other.  flog
 * also logs every completed frame (kind, opcode, message flags, length,
 * payload), however its chunks came: two decodes of one stream that agree
 * on flog and err reported the same frames, in the same order, with the
 * same flags, and stopped at the same error. */
struct rec {
    struct units got;
    struct bytes msg, ctl, frame, flog;
    bool in_frame, in_msg, frame_is_ctl, frame_msg_start;
    uint8_t msg_opcode;
    uint16_t err;
    const char *reason;
    unsigned bad_flags;
    size_t chunks;
};

static void rec_free(struct rec *r)
{
    units_free(&r->got);
    bytes_free(&r->msg);
    bytes_free(&r->ctl);
    bytes_free(&r->frame);
    bytes_free(&r->flog);
    *r = (struct rec){0};
}

static void rec_frame_log(struct rec *r, const struct ws_event *ev)
{
    if (ev->frame_start) {
        r->frame.len = 0;
        r->frame_msg_start = ev->msg_start;
    }
    bytes_put(&r->frame, ev->data, ev->len);
    if (ev->frame_end) {
        uint8_t h[4] = {ev->type, ev->opcode, r->frame_msg_start, ev->msg_end};
        uint64_t n = r->frame.len;

        bytes_put(&r->flog, h, sizeof h);
        bytes_put(&r->flog, &n, sizeof n);
        bytes_put(&r->flog, r->frame.b, r->frame.len);
    }
}

static void rec_event(struct rec *r, const struct ws_event *ev)
{
    bool ctl = ev->type == WS_EV_CONTROL;

    r->chunks++;
    rec_frame_log(r, ev);
    if (ev->frame_start != !r->in_frame || (r->in_frame && ctl != r->frame_is_ctl))
        r->bad_flags++;
    if (ev->len == 0 && !(ev->frame_start && ev->frame_end))
        r->bad_flags++;
    r->in_frame = !ev->frame_end;
    r->frame_is_ctl = ctl;
    if (ctl) {
        if (ev->opcode < WS_OP_CLOSE || ev->opcode > WS_OP_PONG ||
            ev->msg_start || ev->msg_end)
            r->bad_flags++;
        bytes_put(&r->ctl, ev->data, ev->len);
        if (ev->frame_end) {
            units_add(&r->got, WS_EV_CONTROL, ev->opcode, r->ctl.b, r->ctl.len);
            r->ctl.len = 0;
        }
        return;
    }
    if (ev->opcode != WS_OP_TEXT && ev->opcode != WS_OP_BINARY)
        r->bad_flags++;
    if (ev->msg_start != !r->in_msg || (r->in_msg && ev->opcode != r->msg_opcode))
        r->bad_flags++;
    if (ev->msg_end && !ev->frame_end)
        r->bad_flags++;
    if (ev->msg_start && !ev->frame_start)
        r->bad_flags++;
    r->in_msg = !ev->msg_end;
    r->msg_opcode = ev->opcode;
    bytes_put(&r->msg, ev->data, ev->len);
    if (ev->msg_end) {
        units_add(&r->got, WS_EV_DATA, ev->opcode, r->msg.b, r->msg.len);
        r->msg.len = 0;
    }
}

/* Hands one piece to the decoder the way a connection would: loop until
 * NEED_MORE or ERROR.  Returns false once an error was reported. */
static bool rec_feed(struct rec *r, struct ws_decoder *d, uint64_t max, const uint8_t *piece,
                     size_t len)
{
    uint8_t *buf = guard_place(piece, len);
    size_t off = 0;

    for (;;) {
        struct ws_event ev;
        size_t used = ws_decode(d, buf + off, len - off, &ev, ws_max_message(max));

        if (ev.type == WS_EV_ERROR) {
            r->err = ev.close_code;
            r->reason = ev.reason;
            return false;
        }
        if (used > len - off) {
            r->bad_flags++;
            return false;
        }
        off += used;
        if (ev.type == WS_EV_NEED_MORE) {
            if (off != len)
                r->bad_flags++;
            return true;
        }
        if (used == 0 || ev.data < buf || ev.data + ev.len != buf + off)
            r->bad_flags++;
        rec_event(r, &ev);
    }
}

/* Decodes `w` cut at the ascending offsets cuts[0..ncuts). */
static void rec_decode_cuts(struct rec *r, const struct bytes *w,
                            const size_t *cuts, size_t ncuts, uint64_t max)
{
    struct ws_decoder d;
    size_t from = 0;

    ws_decoder_init(&d);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : w->len;

        if (!rec_feed(r, &d, max, w->b + from, to - from))
            return;
        from = to;
    }
}

static void rec_decode_chop(struct rec *r, const struct bytes *w, size_t step,
                            uint64_t max)
{
    struct ws_decoder d;

    ws_decoder_init(&d);
    for (size_t from = 0; from < w->len; from += step) {
        size_t n = w->len - from < step ? w->len - from : step;

        if (!rec_feed(r, &d, max, w->b + from, n))
            return;
    }
}

static bool units_equal(const struct units *a, const struct units *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const struct unit *x = &a->u[i], *y = &b->u[i];

        if (x->type != y->type || x->opcode != y->opcode ||
            x->data.len != y->data.len ||
            (x->data.len && memcmp(x->data.b, y->data.b, x->data.len)))
            return false;
    }
    return true;
}

/* The decoded stream equals `want`, ended cleanly, with consistent flags. */
static bool rec_ok(const struct rec *r, const struct units *want)
{
    return !r->err && !r->bad_flags && !r->in_frame && !r->in_msg &&
           units_equal(&r->got, want);
}

/* ---- unmask ------------------------------------------------------------- */

static void test_unmask(void)
{
    static uint8_t orig[320], buf[320], want[320];
    const uint8_t key[4] = {0x12, 0x9a, 0xff, 0x01};

    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = (uint8_t)rng_next();
    for (unsigned off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 300; len++) {
            for (size_t al = 0; al < 16; al++) {
                unsigned ret;
                uint8_t *g;

                memcpy(buf + al, orig, len);
                for (size_t i = 0; i < len; i++)
                    want[i] = (uint8_t)(orig[i] ^ key[(off + i) % 4]);
                ret = ws_unmask(buf + al, len, key, off);
                CHECKF(ret == (off + len) % 4 && !memcmp(buf + al, want, len),
                       "offset %u length %zu alignment %zu", off, len, al);
                if (al)
                    continue;
                g = guard_place(orig, len);
                ws_unmask(g, len, key, off);
                CHECKF(!memcmp(g, want, len), "page end, length %zu", len);
            }
        }
    }

    /* Pieces chained through the returned offset equal one pass. */
    for (int iter = 0; iter < 200; iter++) {
        size_t len = rng_below(300), at = 0;
        unsigned off = 0;

        memcpy(buf, orig, len);
        while (at < len) {
            size_t n = 1 + rng_below((uint32_t)(len - at));

            off = ws_unmask(buf + at, n, key, off);
            at += n;
        }
        for (size_t i = 0; i < len; i++)
            want[i] = (uint8_t)(orig[i] ^ key[i % 4]);
        CHECKF(!memcmp(buf, want, len) && off == len % 4, "iter %d", iter);
    }
}

/* ---- encoders and close helpers ----------------------------------------- */

static void test_frame_header(void)
{
    static const struct {
        uint64_t len;
        size_t size;
        uint8_t b[10];
    } cases[] = {
        {0, 2, {0x81, 0}},
        {125, 2, {0x81, 125}},
        {126, 4, {0x81, 126, 0, 126}},
        {65535, 4, {0x81, 126, 0xff, 0xff}},
        {65536, 10, {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {0x0102030405060708ull, 10, {0x81, 127, 1, 2, 3, 4, 5, 6, 7, 8}},
    };
    uint8_t out[10];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = ws_frame_header(out, WS_FIN | WS_OP_TEXT, cases[i].len);

        CHECKF(n == cases[i].size && !memcmp(out, cases[i].b, n),
               "length %llu", (unsigned long long)cases[i].len);
        CHECKF(ws_frame_header_len(out) == n, "header length read back, length %llu",
               (unsigned long long)cases[i].len);
    }
    CHECK(ws_frame_header(out, WS_OP_BINARY, 3) == 2 && out[0] == 0x02);
    CHECK(ws_frame_header(out, WS_FIN | WS_RSV1 | WS_OP_TEXT, 3) == 2 &&
          out[0] == 0xc1 && out[1] == 3);
    CHECK(ws_frame_header(out, WS_FIN | WS_OP_CLOSE, 2) == 2 && out[0] == 0x88);
}

static void test_close_payload(void)
{
    uint8_t out[WS_MAX_CONTROL_PAYLOAD];
    char reason[200];
    size_t n;

    CHECK(ws_close_payload(out, 0, "ignored", 7) == 0);
    CHECK(ws_close_payload(out, 1000, NULL, 0) == 2 && out[0] == 0x03 &&
          out[1] == 0xe8);
    n = ws_close_payload(out, 4999, "bye", 3);
    CHECK(n == 5 && out[0] == 0x13 && out[1] == 0x87 && !memcmp(out + 2, "bye", 3));

    memset(reason, 'a', sizeof reason);
    CHECK(ws_close_payload(out, 1001, reason, 123) == 125);
    CHECK(ws_close_payload(out, 1001, reason, 200) == 125);

    /* A cut inside a code point backs off to its start, for every width. */
    for (size_t width = 2; width <= 4; width++) {
        static const char *cps[] = {NULL, NULL, "\xc3\xa9", "\xe2\x82\xac",
                                    "\xf0\x9f\x98\x80"};

        for (size_t start = 120; start <= 123; start++) {
            size_t want = start < 123 && start + width > 123 ? start : 123;

            memset(reason, 'a', sizeof reason);
            memcpy(reason + start, cps[width], width);
            n = ws_close_payload(out, 1000, reason, sizeof reason);
            CHECKF(n == 2 + want && utf8_valid(out + 2, n - 2),
                   "width %zu at %zu: %zu", width, start, n);
        }
    }
}

static void test_close_code_valid(void)
{
    unsigned valid = 0;

    for (unsigned c = 0; c < 65536; c++) {
        bool want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                    (c >= 3000 && c <= 4999);

        if (ws_close_code_valid((uint16_t)c) != want) {
            CHECKF(false, "code %u", c);
            return;
        }
        valid += want;
    }
    CHECK(valid == 4 + 8 + 2000);
    /* 1012-1014 are registered with IANA after RFC 6455. */
    CHECK(ws_close_code_valid(1012) && ws_close_code_valid(1013) &&
          ws_close_code_valid(1014));
    CHECK(!ws_close_code_valid(1005) && !ws_close_code_valid(1006) &&
          !ws_close_code_valid(1015) && !ws_close_code_valid(999) &&
          !ws_close_code_valid(5000));
}

static void test_close_parse(void)
{
    uint16_t code = 0;

    CHECK(ws_close_parse(NULL, 0, &code) == 0 && code == WS_CLOSE_NO_STATUS);
    CHECK(ws_close_parse((const uint8_t *)"\x03", 1, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8", 2, &code) == 0 &&
          code == 1000);
    CHECK(ws_close_parse((const uint8_t *)"\x0b\xb8ok", 4, &code) == 0 &&
          code == 3000);
    CHECK(ws_close_parse((const uint8_t *)"\x13\x87\xe2\x82\xac", 5, &code) == 0 &&
          code == 4999);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe7", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xed", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xee", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xec", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x13\x88", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x00\x00", 2, &code) == 1002);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8\xff", 3, &code) == 1007);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8\xe2\x82", 4, &code) == 1007);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8\xed\xa0\x80", 5, &code) ==
          1007);
    /* The code is judged before the reason. */
    CHECK(ws_close_parse((const uint8_t *)"\x03\xed\xff", 3, &code) == 1002);
}

/* ---- single frames ------------------------------------------------------ */

/* One complete small frame in a buffer: one call takes it all. */
static void test_single_call(void)
{
    static const uint8_t ops[] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_CLOSE,
                                  WS_OP_PING, WS_OP_PONG};

    for (size_t i = 0; i < sizeof ops; i++) {
        for (size_t n = 0; n <= 5; n += 5) {
            struct bytes w = {0};
            struct ws_decoder d;
            struct ws_event ev;
            uint8_t *buf;
            size_t used;

            wire_frame_ex(&w, WS_FIN | ops[i], (const uint8_t *)"hello", n,
                          LEN_MIN, false);
            buf = guard_place(w.b, w.len);
            ws_decoder_init(&d);
            used = ws_decode(&d, buf, w.len, &ev, 0);
            CHECKF(used == w.len && ev.opcode == ops[i] && ev.frame_start &&
                       ev.frame_end && ev.len == n && ev.data == buf + w.len - n &&
                       (n == 0 || !memcmp(ev.data, "hello", n)),
                   "opcode %u length %zu", ops[i], n);
            if (ops[i] & 8)
                CHECK(ev.type == WS_EV_CONTROL && !ev.msg_start && !ev.msg_end);
            else
                CHECK(ev.type == WS_EV_DATA && ev.msg_start && ev.msg_end);
            used = ws_decode(&d, buf + w.len, 0, &ev, 0);
            CHECK(used == 0 && ev.type == WS_EV_NEED_MORE);
            bytes_free(&w);
        }
    }
}

/* Payload sizes around each length encoding, in every encoding that can
 * hold them: receivers accept non-minimal lengths. */
static void test_lengths(void)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 1000, 65535, 65536, 70001};
    uint8_t *pl = malloc(70001);

    for (size_t i = 0; i < 70001; i++)
        pl[i] = (uint8_t)rng_next();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int form = LEN_MIN; form <= LEN_64; form++) {
            struct bytes w = {0};
            struct units want = {0};
            struct rec r = {0};

            if (form == LEN_16 && sizes[s] > 0xffff)
                continue;
            wire_frame_ex(&w, WS_FIN | WS_OP_BINARY, pl, sizes[s], form, false);
            units_add(&want, WS_EV_DATA, WS_OP_BINARY, pl, sizes[s]);
            rec_decode_cuts(&r, &w, NULL, 0, 0);
            CHECKF(rec_ok(&r, &want) && r.chunks == 1, "size %zu form %d",
                   sizes[s], form);
            rec_free(&r);
            rec_decode_chop(&r, &w, 1, 0);
            CHECKF(rec_ok(&r, &want), "size %zu form %d byte by byte",
                   sizes[s], form);
            rec_free(&r);
            units_free(&want);
            bytes_free(&w);
        }
    }
    free(pl);
}

/* ---- errors ------------------------------------------------------------- */

/* Whether the error helpers' decoders negotiated permessage-deflate. */
static uint8_t error_deflate;

/* Feeds `w` one byte at a time and returns the close code of the first
 * error (0 if none) and in *at the index of the byte that brought it. */
static uint16_t error_bytewise(const struct bytes *w, uint64_t max, uint8_t rsv,
                               size_t *at)
{
    struct ws_decoder d;
    struct ws_event ev;

    ws_decoder_init(&d);
    d.rsv_allowed = rsv;
    d.deflate = error_deflate;
    for (size_t i = 0; i < w->len; i++) {
        uint8_t *b = guard_place(w->b + i, 1);
        size_t off = 0;

        for (int calls = 0;; calls++) {
            off += ws_decode(&d, b + off, 1 - off, &ev, ws_max_message(max));
            if (ev.type == WS_EV_ERROR || ev.type == WS_EV_NEED_MORE)
                break;
            if (off > 1 || calls > 2)
                return 1; /* no code: the decoder misbehaved */
        }
        if (ev.type == WS_EV_ERROR) {
            *at = i;
            /* Sticky: the same error again, nothing consumed. */
            if (ws_decode(&d, b, 1, &ev, ws_max_message(max)) != 0 || ev.type != WS_EV_ERROR ||
                ev.close_code != d.fail_code || !ev.reason)
                return 1;
            return d.fail_code;
        }
    }
    *at = w->len;
    return 0;
}

/* The same, whole: the error code the decoder reaches in one buffer. */
static uint16_t error_whole(const struct bytes *w, uint64_t max, uint8_t rsv)
{
    struct ws_decoder d;
    struct ws_event ev;
    uint8_t *buf = guard_place(w->b, w->len);
    size_t off = 0;

    ws_decoder_init(&d);
    d.rsv_allowed = rsv;
    d.deflate = error_deflate;
    for (size_t calls = 0; calls <= w->len; calls++) {
        off += ws_decode(&d, buf + off, w->len - off, &ev, ws_max_message(max));
        if (ev.type == WS_EV_ERROR)
            return ev.close_code;
        if (ev.type == WS_EV_NEED_MORE)
            return off == w->len ? 0 : 1;
    }
    return 1;
}

/* Expects close code `code` exactly when byte `at` arrives, whole or not. */
#define EXPECT_ERROR(w, max, rsv, code, at_want, what)                       \
    do {                                                                     \
        size_t at_;                                                          \
        uint16_t got_ = error_bytewise(w, max, rsv, &at_);                   \
        CHECKF(got_ == (code) && at_ == (size_t)(at_want),                   \
               "%s: code %u at %zu, want %u at %zu", what, got_, at_,         \
               (unsigned)(code), (size_t)(at_want));                         \
        CHECKF(error_whole(w, max, rsv) == (code), "%s: whole", what);       \
    } while (0)

static void test_header_errors(void)
{
    struct bytes w = {0};
    const uint8_t pl[8] = "payload";

    for (unsigned op = 0; op < 16; op++) {
        bool known = op <= 2 || (op >= 8 && op <= 10);

        w.len = 0;
        wire_frame(&w, WS_FIN | op, pl, 4);
        if (op == WS_OP_CONT || !known)
            EXPECT_ERROR(&w, 0, 0, 1002, 1, "opcode");
        else
            EXPECT_ERROR(&w, 0, 0, 0, w.len, "opcode");
    }

    for (unsigned rsv = 0x10; rsv <= 0x40; rsv <<= 1) {
        w.len = 0;
        wire_frame(&w, WS_FIN | rsv | WS_OP_TEXT, pl, 4);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "rsv not negotiated");
        EXPECT_ERROR(&w, 0, 0x40, rsv == 0x40 ? 0 : 1002,
                     rsv == 0x40 ? w.len : 1, "rsv1 negotiated");
    }

    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, pl, 4, LEN_MIN, true);
    EXPECT_ERROR(&w, 0, 0, 1002, 1, "unmasked");
    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_PING, pl, 0, LEN_MIN, true);
    EXPECT_ERROR(&w, 0, 0, 1002, 1, "unmasked empty ping");

    for (unsigned op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
        uint8_t big[200] = {0x03, 0xe8};

        w.len = 0;
        wire_frame(&w, op, big, 2);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "fragmented control");
        w.len = 0;
        wire_frame_ex(&w, WS_FIN | op, big, 125, LEN_MIN, false);
        EXPECT_ERROR(&w, 0, 0, 0, w.len, "control of 125");
        w.len = 0;
        wire_frame_ex(&w, WS_FIN | op, big, 126, LEN_MIN, false);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "control of 126");
        w.len = 0;
        wire_frame_ex(&w, WS_FIN | op, big, 5, LEN_16, false);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "control with a 16-bit length");
        w.len = 0;
        wire_frame_ex(&w, WS_FIN | op, big, 5, LEN_64, false);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "control with a 64-bit length");
    }

    /* 64-bit length with the top bit set: known after 10 bytes. */
    w.len = 0;
    bytes_put(&w, "\x82\xff\x80\0\0\0\0\0\0\0" "abcd", 14);
    EXPECT_ERROR(&w, 0, 0, 1002, 9, "top bit");
    w.len = 0;
    bytes_put(&w, "\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff" "abcd", 14);
    EXPECT_ERROR(&w, 0, 0, 0, w.len, "largest length, unlimited");
    EXPECT_ERROR(&w, 1u << 20, 0, 1009, 9, "largest length, limited");
    /* A limit past 4 GiB - 1 is held at 4 GiB - 1 (frame.h). */
    EXPECT_ERROR(&w, UINT64_MAX, 0, 1009, 9, "largest length, huge limit");
    w.len = 0;
    bytes_put(&w, "\x82\xff\0\0\0\0\xff\xff\xff\xff" "abcd", 14);
    EXPECT_ERROR(&w, UINT64_MAX, 0, 0, w.len, "4 GiB - 1, huge limit");
    w.len = 0;
    bytes_put(&w, "\x82\xff\0\0\0\x01\0\0\0\0" "abcd", 14);
    EXPECT_ERROR(&w, UINT64_MAX, 0, 1009, 9, "4 GiB, huge limit");
    bytes_free(&w);
}

/* The opcodes of the data events of `w` decoded with deflate in one piece
 * (whole) or byte by byte, ORed together; 0xff for an error. */
static unsigned deflate_opcodes(const struct bytes *w, bool whole)
{
    struct ws_decoder d;
    struct ws_event ev;
    unsigned ops = 0;

    ws_decoder_init(&d);
    d.deflate = 1;
    for (size_t i = 0; i < w->len;) {
        size_t n = whole ? w->len - i : 1, off = 0;
        uint8_t *b = guard_place(w->b + i, n);

        do {
            off += ws_decode(&d, b + off, n - off, &ev, 0);
            if (ev.type == WS_EV_ERROR)
                return 0xff;
            if (ev.type == WS_EV_DATA)
                ops |= ev.opcode;
        } while (ev.type != WS_EV_NEED_MORE);
        i += n;
    }
    return ops;
}

/* permessage-deflate (RFC 7692 6.1): RSV1 on a data message's first frame
 * marks the message, whose chunks are not UTF-8-checked (what they inflate
 * to is); RSV1 on a continuation or a control frame is 1002. */
static void test_deflate_rsv1(void)
{
    struct bytes w = {0};
    const uint8_t junk[4] = {0xff, 0xfe, 0xc3, 0x28}; /* no UTF-8 */

    wire_frame(&w, WS_FIN | WS_RSV1 | WS_OP_TEXT, junk, 4);
    for (int whole = 0; whole < 2; whole++)
        CHECKF(deflate_opcodes(&w, whole) == (WS_OP_TEXT | WS_MSG_DEFLATED), "whole %d", whole);
    /* Fragmented: the continuations (whole frames, the fast path) keep the
     * mark, and a plain text after it is checked again. */
    w.len = 0;
    wire_frame(&w, WS_RSV1 | WS_OP_TEXT, junk, 2);
    wire_frame(&w, WS_OP_CONT, junk + 2, 1);
    wire_frame(&w, WS_FIN | WS_OP_CONT, junk + 3, 1);
    wire_frame(&w, WS_FIN | WS_OP_BINARY, junk, 4);
    for (int whole = 0; whole < 2; whole++)
        CHECKF(deflate_opcodes(&w, whole) ==
                   (WS_OP_TEXT | WS_MSG_DEFLATED | WS_OP_BINARY), "fragments, whole %d", whole);
    wire_frame(&w, WS_FIN | WS_OP_TEXT, junk, 4);
    error_deflate = 1;
    EXPECT_ERROR(&w, 0, 0, 1007, w.len - 4, "plain text after a compressed one");
    w.len = 0;
    wire_frame(&w, WS_RSV1 | WS_OP_BINARY, junk, 2);
    wire_frame(&w, WS_FIN | WS_RSV1 | WS_OP_CONT, junk, 2);
    EXPECT_ERROR(&w, 0, 0, 1002, 9, "RSV1 on a continuation");
    for (unsigned op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
        w.len = 0;
        wire_frame(&w, WS_FIN | WS_RSV1 | op, junk, 2);
        EXPECT_ERROR(&w, 0, 0, 1002, 1, "RSV1 on a control frame");
    }
    w.len = 0;
    wire_frame(&w, WS_FIN | WS_RSV1 | 0x20 | WS_OP_TEXT, junk, 2);
    EXPECT_ERROR(&w, 0, 0, 1002, 1, "RSV2 beside RSV1");
    error_deflate = 0;
    w.len = 0;
    wire_frame(&w, WS_FIN | WS_RSV1 | WS_OP_TEXT, junk, 2);
    EXPECT_ERROR(&w, 0, 0, 1002, 1, "RSV1 without deflate");
    bytes_free(&w);
}

static void test_size_errors(void)
{
    struct bytes w = {0};
    uint8_t pl[300];
    size_t first;

    memset(pl, 'x', sizeof pl);
    for (int form = LEN_MIN; form <= LEN_64; form++) {
        size_t len_end = form == LEN_MIN ? 1 : form == LEN_16 ? 3 : 9;

        w.len = 0;
        wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, pl, 101, form, false);
        EXPECT_ERROR(&w, 100, 0, 1009, len_end, "too big");
        w.len = 0;
        wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, pl, 100, form, false);
        EXPECT_ERROR(&w, 100, 0, 0, w.len, "just fits");
    }

    /* Fragments add up; control frames in between do not count. */
    w.len = 0;
    wire_frame_ex(&w, WS_OP_BINARY, pl, 60, LEN_MIN, false);
    wire_frame(&w, WS_FIN | WS_OP_PING, pl, 100);
    first = w.len;
    wire_frame_ex(&w, WS_FIN | WS_OP_CONT, pl, 41, LEN_MIN, false);
    EXPECT_ERROR(&w, 100, 0, 1009, first + 1, "fragments too big");
    w.len = first;
    wire_frame(&w, WS_FIN | WS_OP_CONT, pl, 40);
    wire_frame(&w, WS_FIN | WS_OP_BINARY, pl, 100);
    EXPECT_ERROR(&w, 100, 0, 0, w.len, "fragments fit, next message fits");
    EXPECT_ERROR(&w, 10, 0, 1009, 1, "first fragment too big");
    bytes_free(&w);
}

static void test_sequence_errors(void)
{
    struct bytes w = {0};
    size_t first;

    wire_frame(&w, WS_FIN | WS_OP_CONT, "a", 1);
    EXPECT_ERROR(&w, 0, 0, 1002, 1, "continuation first");

    w.len = 0;
    wire_frame(&w, WS_FIN | WS_OP_TEXT, "a", 1);
    first = w.len;
    wire_frame_ex(&w, WS_OP_CONT, "b", 1, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1002, first + 1, "continuation after a whole message");

    for (unsigned op = WS_OP_TEXT; op <= WS_OP_BINARY; op++) {
        w.len = 0;
        wire_frame(&w, WS_OP_BINARY, "a", 1);
        wire_frame(&w, WS_FIN | WS_OP_PING, "p", 1);
        first = w.len;
        wire_frame_ex(&w, WS_FIN | op, "b", 1, LEN_MIN, false);
        EXPECT_ERROR(&w, 0, 0, 1002, first + 1, "new message inside another");
    }
    bytes_free(&w);
}

static void test_utf8_errors(void)
{
    struct bytes w = {0};
    size_t first;

    wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, "ab\xff" "cd", 5, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1007, 6 + 2, "bad byte");
    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, "ab\xed\xa0\x80", 5, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1007, 6 + 3, "surrogate");
    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, "ab\xe2\x82", 4, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1007, 6 + 3, "truncated at message end");
    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_BINARY, "ab\xff\xe2\x82", 5, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 0, w.len, "binary is not checked");
    w.len = 0;
    wire_frame_ex(&w, WS_FIN | WS_OP_CLOSE, "\x03\xe8\xff", 3, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 0, w.len, "close reason is the caller's");

    /* Across fragments: a split code point is fine, a truncated end is not. */
    w.len = 0;
    wire_frame(&w, WS_OP_TEXT, "\xe2", 1);
    wire_frame(&w, WS_FIN | WS_OP_PING, "", 0);
    wire_frame(&w, WS_OP_CONT, "\x82", 1);
    wire_frame(&w, WS_FIN | WS_OP_CONT, "\xac", 1);
    EXPECT_ERROR(&w, 0, 0, 0, w.len, "split euro sign");
    w.len = 0;
    wire_frame(&w, WS_OP_TEXT, "\xe2\x82", 2);
    first = w.len;
    wire_frame_ex(&w, WS_FIN | WS_OP_CONT, "", 0, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1007, first + 5, "empty final fragment, truncated");
    w.len = 0;
    wire_frame(&w, WS_OP_TEXT, "ok", 2);
    first = w.len;
    wire_frame_ex(&w, WS_FIN | WS_OP_CONT, "\xc0\x80", 2, LEN_MIN, false);
    EXPECT_ERROR(&w, 0, 0, 1007, first + 6, "overlong in a continuation");
    bytes_free(&w);
}

/* ---- streams ------------------------------------------------------------ */

/* At least `target` bytes of valid text; out needs 3 bytes to spare. */
static size_t gen_text(uint8_t *out, size_t target)
{
    static const char *cps[] = {"a", "Z", " ", "\xc3\xa9", "\xd7\x90",
                                "\xe2\x82\xac", "\xe4\xb8\xad", "\xef\xbf\xbd",
                                "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
    size_t n = 0;

    while (n < target) {
        const char *c = cps[rng_below(sizeof cps / sizeof cps[0])];
        size_t l = strlen(c);

        memcpy(out + n, c, l);
        n += l;
    }
    return n;
}

static void gen_control(struct bytes *w, struct units *want)
{
    uint8_t pl[125];
    unsigned op = rng_below(2) ? WS_OP_PING : WS_OP_PONG;
    size_t n = rng_below(4) ? rng_below(10) : rng_below(126);

    for (size_t i = 0; i < n; i++)
        pl[i] = (uint8_t)rng_next();
    wire_frame(w, WS_FIN | op, pl, n);
    units_add(want, WS_EV_CONTROL, (uint8_t)op, pl, n);
}

/* A random stream of messages cut into fragments, with pings and pongs
 * between messages and between fragments; big allows payloads over 64 KiB. */
static void gen_stream(struct bytes *w, struct units *want, unsigned messages,
                       bool big)
{
    uint8_t *pl = malloc(200000);

    for (unsigned m = 0; m < messages; m++) {
        unsigned op = rng_below(2) ? WS_OP_TEXT : WS_OP_BINARY;
        size_t n = rng_below(4) ? rng_below(40) : rng_below(400);
        unsigned frags = rng_below(3) ? 1 : 2 + rng_below(3);
        size_t at = 0;

        if (big && rng_below(4) == 0)
            n = 60000 + rng_below(100000);
        if (op == WS_OP_TEXT)
            n = gen_text(pl, n);
        else
            for (size_t i = 0; i < n; i++)
                pl[i] = (uint8_t)rng_next();
        if (rng_below(6) == 0)
            gen_control(w, want);
        for (unsigned f = 0; f < frags; f++) {
            size_t end = f + 1 == frags ? n : at + rng_below((uint32_t)(n - at + 1));

            wire_frame(w, (f + 1 == frags ? WS_FIN : 0) | (f ? WS_OP_CONT : op),
                       pl + at, end - at);
            at = end;
            if (f + 1 < frags && rng_below(2))
                gen_control(w, want);
        }
        units_add(want, WS_EV_DATA, (uint8_t)op, pl, n);
    }
    wire_frame(w, WS_FIN | WS_OP_CLOSE, "\x03\xe8" "done", 6);
    units_add(want, WS_EV_CONTROL, WS_OP_CLOSE, "\x03\xe8" "done", 6);
    free(pl);
}

static void check_random_chops(const struct bytes *w, const struct units *want,
                               int rounds, const char *what)
{
    size_t cuts[64];

    for (int iter = 0; iter < rounds; iter++) {
        struct rec r = {0};
        size_t n = 0, at = 0;
        uint32_t span = 1 + rng_below(rng_below(2) ? 20 : (uint32_t)w->len / 8 + 1);

        while (n < 64 && (at += 1 + rng_below(span)) < w->len)
            cuts[n++] = at;
        rec_decode_cuts(&r, w, cuts, n, 0);
        CHECKF(rec_ok(&r, want), "%s: random chop %d", what, iter);
        rec_free(&r);
    }
}

static void test_small_streams(void)
{
    for (int s = 0; s < 12; s++) {
        struct bytes w = {0};
        struct units want = {0};
        struct rec r = {0};
        size_t fails = 0;

        gen_stream(&w, &want, 4 + rng_below(12), false);

        rec_decode_cuts(&r, &w, NULL, 0, 0);
        CHECKF(rec_ok(&r, &want), "stream %d whole", s);
        rec_free(&r);

        for (size_t cut = 0; cut <= w.len; cut++) {
            rec_decode_cuts(&r, &w, &cut, 1, 0);
            fails += !rec_ok(&r, &want);
            rec_free(&r);
        }
        CHECKF(fails == 0, "stream %d: %zu of %zu two-piece cuts failed", s,
               fails, w.len + 1);

        rec_decode_chop(&r, &w, 1, 0);
        CHECKF(rec_ok(&r, &want), "stream %d byte by byte", s);
        rec_free(&r);

        check_random_chops(&w, &want, 100, "small stream");
        units_free(&want);
        bytes_free(&w);
    }
}

static void test_big_streams(void)
{
    for (int s = 0; s < 3; s++) {
        struct bytes w = {0};
        struct units want = {0};
        struct rec r = {0};

        gen_stream(&w, &want, 12, true);
        rec_decode_cuts(&r, &w, NULL, 0, 0);
        CHECKF(rec_ok(&r, &want), "big stream %d whole", s);
        rec_free(&r);
        rec_decode_chop(&r, &w, 1, 0);
        CHECKF(rec_ok(&r, &want), "big stream %d byte by byte", s);
        rec_free(&r);
        rec_decode_chop(&r, &w, 1000, 0);
        CHECKF(rec_ok(&r, &want), "big stream %d in 1000-byte pieces", s);
        rec_free(&r);
        check_random_chops(&w, &want, 20, "big stream");
        units_free(&want);
        bytes_free(&w);
    }
}

/* A frame over 64 KiB in 1000-byte pieces: one chunk per piece, each
 * pointing into that piece. */
static void test_big_frame(void)
{
    size_t n = 100000;
    uint8_t *pl = malloc(n + 4); /* gen_text may end 3 bytes past n */
    struct bytes w = {0};
    struct units want = {0};
    struct rec r = {0};

    n = gen_text(pl, n);
    wire_frame_ex(&w, WS_FIN | WS_OP_TEXT, pl, n, LEN_64, false);
    units_add(&want, WS_EV_DATA, WS_OP_TEXT, pl, n);
    rec_decode_chop(&r, &w, 1000, 0);
    CHECK(rec_ok(&r, &want));
    CHECK(r.chunks == (w.len + 999) / 1000);
    rec_free(&r);
    rec_decode_chop(&r, &w, 1000, n);
    CHECK(rec_ok(&r, &want));
    rec_free(&r);
    rec_decode_chop(&r, &w, 1000, n - 1);
    CHECK(r.err == 1009 && r.chunks == 0);
    rec_free(&r);
    units_free(&want);
    bytes_free(&w);
    free(pl);
}

/* The fragmented message with pings between its fragments, by hand. */
static void test_interleaved(void)
{
    struct bytes w = {0};
    struct units want = {0};
    struct rec r = {0};

    wire_frame(&w, WS_OP_TEXT, "Hel", 3);
    wire_frame(&w, WS_FIN | WS_OP_PING, "p1", 2);
    wire_frame(&w, WS_OP_CONT, "", 0);
    wire_frame(&w, WS_FIN | WS_OP_PONG, "", 0);
    wire_frame(&w, WS_OP_CONT, "lo \xe2", 4);
    wire_frame(&w, WS_FIN | WS_OP_PING, "p2", 2);
    wire_frame(&w, WS_FIN | WS_OP_CONT, "\x82\xac!", 3);
    wire_frame(&w, WS_FIN | WS_OP_BINARY, "\xff", 1);
    wire_frame(&w, WS_FIN | WS_OP_TEXT, "", 0);
    units_add(&want, WS_EV_CONTROL, WS_OP_PING, "p1", 2);
    units_add(&want, WS_EV_CONTROL, WS_OP_PONG, "", 0);
    units_add(&want, WS_EV_CONTROL, WS_OP_PING, "p2", 2);
    units_add(&want, WS_EV_DATA, WS_OP_TEXT, "Hello \xe2\x82\xac!", 10);
    units_add(&want, WS_EV_DATA, WS_OP_BINARY, "\xff", 1);
    units_add(&want, WS_EV_DATA, WS_OP_TEXT, "", 0);
    rec_decode_cuts(&r, &w, NULL, 0, 0);
    CHECK(rec_ok(&r, &want) && r.chunks == 9);
    rec_free(&r);
    rec_decode_chop(&r, &w, 1, 0);
    CHECK(rec_ok(&r, &want));
    rec_free(&r);
    units_free(&want);
    bytes_free(&w);
}

/* Text with multi-byte code points, one frame or three, cut at every
 * position; with one bad byte the error comes exactly when it arrives. */
static void test_text_cuts(void)
{
    uint8_t text[200], saved;
    size_t n = 0;

    for (int i = 0; i < 8; i++) {
        memcpy(text + n, "a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e", 10);
        n += 10;
    }
    for (int frags = 1; frags <= 3; frags += 2) {
        for (int bad = 0; bad <= 1; bad++) {
            struct bytes w = {0};
            struct units want = {0};
            size_t bad_at = 0, fails = 0;

            saved = text[37];
            if (bad)
                text[37] = 0xc0;
            if (frags == 1) {
                wire_frame(&w, WS_FIN | WS_OP_TEXT, text, n);
                bad_at = w.len - n + 37;
            } else {
                /* Cuts fall inside the euro sign and the clef. */
                wire_frame(&w, WS_OP_TEXT, text, 5);
                wire_frame(&w, WS_OP_CONT, text + 5, 3);
                wire_frame(&w, WS_FIN | WS_OP_CONT, text + 8, n - 8);
                bad_at = w.len - (n - 8) + 37 - 8;
            }
            units_add(&want, WS_EV_DATA, WS_OP_TEXT, text, n);
            for (size_t cut = 0; cut <= w.len; cut++) {
                struct rec r = {0};
                struct ws_decoder d;

                ws_decoder_init(&d);
                if (!bad) {
                    rec_decode_cuts(&r, &w, &cut, 1, 0);
                    fails += !rec_ok(&r, &want);
                } else {
                    bool first = rec_feed(&r, &d, 0, w.b, cut);

                    fails += first != (cut <= bad_at);
                    if (first)
                        rec_feed(&r, &d, 0, w.b + cut, w.len - cut);
                    fails += r.err != 1007 || r.bad_flags;
                }
                rec_free(&r);
            }
            CHECKF(fails == 0, "%d fragments, bad %d: %zu cuts failed", frags,
                   bad, fails);
            text[37] = saved;
            units_free(&want);
            bytes_free(&w);
        }
    }
}

/* ---- whole against cut, on streams with errors -------------------------- */

/* One frame of a "wild" stream: mostly what a client may send given the
 * open message's opcode (*msg_op, 0 for none), now and then (1 in `odds`)
 * something it may not. */
static void wild_frame(struct bytes *w, uint8_t *pl, uint8_t *msg_op, unsigned odds)
{
    unsigned first, r = rng_below(10);
    size_t n = rng_below(8) ? rng_below(40) : rng_below(8) ? rng_below(400)
                                                           : 60000 + rng_below(20000);
    bool control = r < 2, text;

    if (control) {
        first = WS_FIN | (WS_OP_CLOSE + rng_below(3));
        n = rng_below(126);
    } else if (*msg_op) {
        first = WS_OP_CONT | (rng_below(3) ? 0 : WS_FIN);
    } else {
        first = (rng_below(2) ? WS_OP_TEXT : WS_OP_BINARY) | (rng_below(4) ? WS_FIN : 0);
    }
    text = !control && ((first & 0x0F) == WS_OP_TEXT || *msg_op == WS_OP_TEXT);
    if (text)
        n = gen_text(pl, n);
    else
        for (size_t i = 0; i < n; i++)
            pl[i] = (uint8_t)rng_next();
    if (rng_below(odds) == 0) {
        switch (rng_below(9)) {
        case 0: /* reserved opcode */
            first = (first & ~0x0Fu) | (3 + rng_below(5) + (rng_below(2) ? 8 : 0));
            break;
        case 1: /* RSV bit */
            first |= 0x10u << rng_below(3);
            break;
        case 2: /* unmasked */
            wire_frame_ex(w, first, pl, n, LEN_RANDOM, true);
            return;
        case 3: /* fragmented or long control frame */
            if (rng_below(2)) {
                first = WS_OP_PING;
            } else {
                first = WS_FIN | WS_OP_PONG;
                n = 126 + rng_below(100);
                for (size_t i = 0; i < n; i++)
                    pl[i] = (uint8_t)rng_next();
                wire_frame_ex(w, first, pl, n, rng_below(2) ? LEN_MIN : LEN_64, false);
                return;
            }
            break;
        case 4: /* continuation or new message out of turn */
            first = (first & WS_FIN) | (*msg_op ? WS_OP_BINARY : WS_OP_CONT);
            break;
        case 5: /* bytes no UTF-8 has, or a truncated code point at the end */
            if (n)
                pl[rng_below((uint32_t)n)] = rng_below(2) ? 0xff : 0xc0;
            else
                pl[n++] = 0xe2;
            break;
        case 6: /* 64-bit length with the top bit set */
            bytes_put(w, "\x82\xff\x80\0\0\0\0\0\0\x10" "mask", 14);
            return;
        case 7: /* a length one off: what follows is read as other frames */
            wire_frame_ex(w, first, pl, n, LEN_RANDOM, false);
            w->b[w->len - n - 4 - 1] ^= 1;
            return;
        default: /* a big frame, for the max_message decodes */
            n = 1000 + rng_below(3000);
            for (size_t i = 0; i < n; i++)
                pl[i] = 'x';
            break;
        }
    }
    if (!control && (first & 0x0F) != WS_OP_CONT)
        *msg_op = (uint8_t)(first & 0x0F);
    if (!control && (first & WS_FIN))
        *msg_op = 0;
    wire_frame(w, first, pl, n);
}

/* Equal contents; an empty buffer may have no storage at all. */
static bool bytes_same(const struct bytes *a, const struct bytes *b)
{
    return a->len == b->len && (a->len == 0 || !memcmp(a->b, b->b, a->len));
}

/* Decodes `w` whole, byte by byte (never the whole-frame path: no piece
 * holds a header) and in random cuts; each must report the same frames and
 * end the same way. */
static void check_whole_vs_cut(const struct bytes *w, uint64_t max, bool clean,
                               const char *what)
{
    struct rec whole = {0}, r = {0};
    size_t cuts[256];

    rec_decode_cuts(&whole, w, NULL, 0, max);
    CHECKF(!whole.bad_flags, "%s: whole: inconsistent flags", what);
    if (clean)
        CHECKF(!whole.err && !whole.in_frame && !whole.in_msg, "%s: whole: err %u",
               what, whole.err);
    rec_decode_chop(&r, w, 1, max);
    CHECKF(r.err == whole.err && !r.bad_flags && bytes_same(&r.flog, &whole.flog),
           "%s: byte by byte: err %u, whole %u", what, r.err, whole.err);
    rec_free(&r);
    for (int iter = 0; iter < 30; iter++) {
        size_t n = 0, at = 0;
        uint32_t span = 1 + rng_below(rng_below(2) ? 24 : (uint32_t)w->len / 4 + 1);

        while (n < 256 && (at += 1 + rng_below(span)) < w->len)
            cuts[n++] = at;
        rec_decode_cuts(&r, w, cuts, n, max);
        CHECKF(r.err == whole.err && !r.bad_flags && bytes_same(&r.flog, &whole.flog),
               "%s: chop %d (span %u): err %u, whole %u", what, iter, span, r.err,
               whole.err);
        rec_free(&r);
    }
    rec_free(&whole);
}

static void test_whole_vs_cut(void)
{
    uint8_t *pl = malloc(90000);

    for (int s = 0; s < 300; s++) {
        struct bytes w = {0};
        unsigned frames = 1 + rng_below(30), odds = rng_below(3) ? 40 : 6;
        uint8_t msg_op = 0;
        bool clean = rng_below(4) == 0;
        char what[64];
        uint64_t max;

        for (unsigned f = 0; f < frames; f++)
            wild_frame(&w, pl, &msg_op, clean ? UINT32_MAX : odds);
        while (msg_op)
            wild_frame(&w, pl, &msg_op, UINT32_MAX);
        snprintf(what, sizeof what, "wild stream %d", s);
        check_whole_vs_cut(&w, 0, clean, what);
        max = 20 + rng_below(rng_below(2) ? 100 : 5000);
        check_whole_vs_cut(&w, max, false, what);
        bytes_free(&w);
    }
    free(pl);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rng_state = strtoull(argv[1], NULL, 0) | 1;
    guard_setup(4 << 20);
    test_unmask();
    test_frame_header();
    test_close_payload();
    test_close_code_valid();
    test_close_parse();
    test_single_call();
    test_lengths();
    test_header_errors();
    test_deflate_rsv1();
    test_size_errors();
    test_sequence_errors();
    test_utf8_errors();
    test_interleaved();
    test_text_cuts();
    test_big_frame();
    test_small_streams();
    test_big_streams();
    test_whole_vs_cut();
    return check_done("frame");
}
