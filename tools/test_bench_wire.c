/* test_bench_wire.c - checks of the load generator's client protocol code.
 *
 * Why it exists: the generator's verdicts (mismatch, protocol error, bad
 * handshake) are only worth something if its own parser is right; these
 * cases pin the RFC 6455 examples and the splits a server may produce. */
#include <stdio.h>
#include <string.h>

#include "bench_hist.h"
#include "bench_wire.h"
#include "../tests/unit/check.h"

static const char test_key[] = "dGhlIHNhbXBsZSBub25jZQ==";

static void test_response(void)
{
    /* RFC 6455 section 1.3's example answer. */
    static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    static const char bad_key[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOx=\r\n\r\n";
    static const char no_upgrade[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                     "Connection: Upgrade\r\n"
                                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    const char *why = NULL;
    bool deflated;

    CHECK(wsc_response_check(ok, sizeof ok - 1, test_key, NULL, false, &deflated, &why) ==
          (int)sizeof ok - 1);
    for (size_t n = 0; n < sizeof ok - 1; n++)
        CHECK(wsc_response_check(ok, n, test_key, NULL, false, &deflated, &why) == 0);
    CHECK(wsc_response_check(bad_key, sizeof bad_key - 1, test_key, NULL, false, &deflated,
                             &why) < 0);
    CHECK(wsc_response_check(no_upgrade, sizeof no_upgrade - 1, test_key, NULL, false,
                             &deflated, &why) < 0);
    CHECK(wsc_response_check("HTTP/1.1 404 Not Found\r\n", 24, test_key, NULL, false,
                             &deflated, &why) < 0);
}

/* A subprotocol offered must be chosen, exactly and once; one not offered
 * fails the handshake. */
static void test_response_protocol(void)
{
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    char buf[512];
    const char *why = NULL;
    bool deflated;
    int n;

    n = snprintf(buf, sizeof buf, "%sSec-WebSocket-Protocol: ringws.v1\r\n\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, "ringws.v1", false, &deflated, &why) == n);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, false, &deflated, &why) < 0);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, "ringws.v2", false, &deflated, &why) < 0);
    n = snprintf(buf, sizeof buf, "%s\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, "ringws.v1", false, &deflated, &why) < 0);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, "", false, &deflated, &why) == n);
    n = snprintf(buf, sizeof buf,
                 "%sSec-WebSocket-Protocol: ringws.v1\r\nSec-WebSocket-Protocol: ringws.v1\r\n\r\n",
                 head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, "ringws.v1", false, &deflated, &why) < 0);
}

/* The request offers the subprotocol only when one is given. */
static void test_request_protocol(void)
{
    char buf[512];
    size_t n = wsc_request_write(buf, sizeof buf, "h:1", "/ws?topics=a", test_key, "ringws.v1",
                                 false);

    CHECK(n > 0 && strstr(buf, "\r\nSec-WebSocket-Protocol: ringws.v1\r\n\r\n"));
    n = wsc_request_write(buf, sizeof buf, "h:1", "/ws", test_key, NULL, false);
    CHECK(n > 0 && !strstr(buf, "Sec-WebSocket-Protocol") && strstr(buf, "\r\n\r\n"));
    CHECK(wsc_request_write(buf, 40, "h:1", "/ws", test_key, "ringws.v1", false) == 0);
}

/* permessage-deflate, offered with --deflate: taken only without context
 * kept by the server, never when not offered; RSV1 then allowed on a data
 * message's first frame only. */
static void test_deflate(void)
{
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    static const uint8_t first[] = {0x41, 0x01, 'a', 0x80, 0x01, 'b'};
    static const uint8_t cont[] = {0x01, 0x01, 'a', 0xc0, 0x01, 'b'};
    static const uint8_t ping[] = {0xc9, 0x00};
    char buf[512];
    const char *why = NULL;
    bool deflated = true;
    int n;
    size_t len = wsc_request_write(buf, sizeof buf, "h:1", "/ws", test_key, NULL, true);

    CHECK(len > 0 && strstr(buf, "\r\nSec-WebSocket-Extensions: " WSC_DEFLATE_OFFER "\r\n\r\n"));
    n = snprintf(buf, sizeof buf, "%s\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, true, &deflated, &why) == n &&
          !deflated);
    n = snprintf(buf, sizeof buf, "%sSec-WebSocket-Extensions: permessage-deflate; "
                 "server_no_context_takeover; client_no_context_takeover\r\n\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, true, &deflated, &why) == n &&
          deflated);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, false, &deflated, &why) < 0);
    n = snprintf(buf, sizeof buf, "%sSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, true, &deflated, &why) < 0);
    n = snprintf(buf, sizeof buf, "%sSec-WebSocket-Extensions: x-other; "
                 "server_no_context_takeover\r\n\r\n", head);
    CHECK(wsc_response_check(buf, (size_t)n, test_key, NULL, true, &deflated, &why) < 0);

    struct wsc_rx rx;
    struct wsc_event ev;
    size_t off = 0;
    wsc_rx_init(&rx);
    rx.deflate = 1;
    off += wsc_decode(&rx, first, sizeof first, &ev);
    CHECK(ev.type == WSC_EV_DATA && ev.compressed && !ev.msg_end);
    off += wsc_decode(&rx, first + off, sizeof first - off, &ev);
    CHECK(ev.type == WSC_EV_DATA && ev.compressed && ev.msg_end && off == sizeof first);
    wsc_rx_init(&rx);
    rx.deflate = 1;
    off = wsc_decode(&rx, cont, sizeof cont, &ev);
    CHECK(ev.type == WSC_EV_DATA && !ev.compressed);
    wsc_decode(&rx, cont + off, sizeof cont - off, &ev);
    CHECK(ev.type == WSC_EV_ERROR);
    wsc_rx_init(&rx);
    rx.deflate = 1;
    wsc_decode(&rx, ping, sizeof ping, &ev);
    CHECK(ev.type == WSC_EV_ERROR);
}

/* Decodes `in` fed `step` bytes at a time; gathers data and control bytes. */
static int test_decode(const uint8_t *in, size_t len, size_t step, uint8_t *data,
                       size_t *dlen, unsigned *msgs, unsigned *controls)
{
    struct wsc_rx rx;

    wsc_rx_init(&rx);
    *dlen = 0;
    *msgs = *controls = 0;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        const uint8_t *p = in + off;
        struct wsc_event ev;

        for (;;) {
            size_t used = wsc_decode(&rx, p, n, &ev);

            p += used;
            n -= used;
            if (ev.type == WSC_EV_NEED_MORE)
                break;
            if (ev.type == WSC_EV_ERROR)
                return -1;
            if (ev.type == WSC_EV_DATA) {
                memcpy(data + *dlen, ev.data, ev.len);
                *dlen += ev.len;
                *msgs += ev.msg_end;
            } else if (ev.frame_end) {
                (*controls)++;
            }
        }
    }
    return 0;
}

static void test_frames(void)
{
    /* "Hel" + ping + "lo" (RFC 6455 5.7's fragmented text with a ping
     * between), then a 300-byte binary message with a 16-bit length. */
    uint8_t in[400] = {0x01, 0x03, 'H', 'e', 'l', 0x89, 0x00, 0x80, 0x02, 'l', 'o',
                       0x82, 126, 0x01, 0x2c};
    size_t len = 15 + 300, dlen;
    uint8_t data[400];
    unsigned msgs, controls;

    for (size_t i = 0; i < 300; i++)
        in[15 + i] = (uint8_t)i;
    for (size_t step = 1; step <= len; step++) {
        CHECK(test_decode(in, len, step, data, &dlen, &msgs, &controls) == 0);
        CHECK(dlen == 305 && msgs == 2 && controls == 1);
        CHECK(!memcmp(data, "Hello", 5) && data[5] == 0 && data[304] == (uint8_t)299);
    }
}

static void test_frame_errors(void)
{
    static const uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'x'};
    static const uint8_t rsv[] = {0xc1, 0x00};
    static const uint8_t long_ping[] = {0x89, 126, 0x00, 0x80};
    static const uint8_t stray_cont[] = {0x80, 0x00};
    static const uint8_t not_shortest[] = {0x82, 126, 0x00, 0x05, 1, 2, 3, 4, 5};
    size_t dlen;
    uint8_t data[16];
    unsigned msgs, controls;

    CHECK(test_decode(masked, sizeof masked, 1, data, &dlen, &msgs, &controls) < 0);
    CHECK(test_decode(rsv, sizeof rsv, 2, data, &dlen, &msgs, &controls) < 0);
    CHECK(test_decode(long_ping, sizeof long_ping, 4, data, &dlen, &msgs, &controls) < 0);
    CHECK(test_decode(stray_cont, sizeof stray_cont, 2, data, &dlen, &msgs, &controls) < 0);
    CHECK(test_decode(not_shortest, sizeof not_shortest, 9, data, &dlen, &msgs, &controls) < 0);
}

static void test_masked_write(void)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t out[64];

    /* RFC 6455 5.7: a masked "Hello". */
    CHECK(wsc_frame_write(out, 0x81, "Hello", 5, mask) == 11);
    CHECK(!memcmp(out, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
}

static void test_publish(void)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: application/json\r\n"
                             "Content-Length: 19\r\n\r\n"
                             "{\"recipients\":4242}";
    static const char closing[] = "HTTP/1.1 401 Unauthorized\r\n"
                                  "Connection: close\r\nContent-Length: 0\r\n\r\n";
    static const char no_length[] = "HTTP/1.1 200 OK\r\n\r\n{\"recipients\":1}";
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char spaced[] = "HTTP/1.0 200 OK\r\nContent-Length: 20\r\n"
                                 "Connection: keep-alive\r\n\r\n{ \"recipients\" : 7 }";
    char buf[512];
    struct wsc_answer a;
    const char *why = NULL;

    CHECK(wsc_answer_parse(ok, sizeof ok - 1, &a, &why) == (int)sizeof ok - 1);
    CHECK(a.status == 200 && a.keep_alive && a.has_recipients && a.recipients == 4242);
    for (size_t n = 0; n < sizeof ok - 1; n++)
        CHECK(wsc_answer_parse(ok, n, &a, &why) == 0);
    /* Two answers back to back: the first one's length only. */
    memcpy(buf, ok, sizeof ok - 1);
    memcpy(buf + sizeof ok - 1, closing, sizeof closing);
    CHECK(wsc_answer_parse(buf, sizeof ok - 1 + sizeof closing - 1, &a, &why) ==
          (int)sizeof ok - 1);
    CHECK(wsc_answer_parse(closing, sizeof closing - 1, &a, &why) == (int)sizeof closing - 1);
    CHECK(a.status == 401 && !a.keep_alive && !a.has_recipients);
    CHECK(wsc_answer_parse(spaced, sizeof spaced - 1, &a, &why) == (int)sizeof spaced - 1);
    CHECK(a.status == 200 && a.keep_alive && a.has_recipients && a.recipients == 7);
    CHECK(wsc_answer_parse(no_length, sizeof no_length - 1, &a, &why) < 0);
    CHECK(wsc_answer_parse(chunked, sizeof chunked - 1, &a, &why) < 0);
    CHECK(wsc_answer_parse("SSH-2.0", 7, &a, &why) < 0);
    CHECK(wsc_answer_parse("HTTP/1.1 2x0 OK\r\n\r\n", 19, &a, &why) < 0);

    CHECK(wsc_publish_head_write(buf, sizeof buf, "127.0.0.1:8080", "bench", "s3cret", 20) > 0);
    CHECK(strstr(buf, "POST /publish/bench HTTP/1.1\r\n") == buf);
    CHECK(strstr(buf, "\r\nContent-Length: 20\r\n") && strstr(buf, "Bearer s3cret\r\n\r\n"));
    CHECK(wsc_publish_head_write(buf, sizeof buf, "h", "t", NULL, 1) > 0 &&
          !strstr(buf, "Authorization"));
    CHECK(wsc_publish_head_write(buf, 20, "h", "t", NULL, 1) == 0);

    CHECK(wsc_topic_valid("bench") && wsc_topic_valid("a-b.c_d~e:f/g@h"));
    CHECK(!wsc_topic_valid("") && !wsc_topic_valid("a b") && !wsc_topic_valid("a,b") &&
          !wsc_topic_valid("a%20"));
    memset(buf, 'x', 129);
    buf[129] = '\0';
    CHECK(!wsc_topic_valid(buf));
    buf[128] = '\0';
    CHECK(wsc_topic_valid(buf));
}

static void test_hist(void)
{
    static struct hist h;

    hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v);
    CHECK(h.count == 100000 && h.min == 1 && h.max == 100000);
    for (double p = 1; p <= 100; p += 7.5) {
        double want = p * 1000, got = (double)hist_percentile(&h, p);

        CHECK(got >= want * 0.98 && got <= want * 1.02);
    }
    CHECK(hist_percentile(&h, 100) == 100000);
}

int main(void)
{
    test_deflate();
    test_response();
    test_response_protocol();
    test_request_protocol();
    test_frames();
    test_frame_errors();
    test_masked_write();
    test_publish();
    test_hist();
    return check_done("bench_wire");
}
