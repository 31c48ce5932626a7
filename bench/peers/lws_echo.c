/* lws_echo.c - the comparison peer: an echo WebSocket at /echo built on
 * Debian's libwebsockets (4.1), single-threaded, on its default poll loop.
 *
 * Why it exists: ringws's figures mean something only next to an
 * established C server doing the same job on the same machine.  It echoes
 * every complete message back with its own opcode (text as text, binary as
 * binary), reassembling fragments, with messages up to 16 MiB.  It writes
 * as many queued echoes per writable callback as the socket takes, checking
 * lws_partial_buffered after each write as the library asks, so that
 * pipelined load is not throttled to one message per poll round.
 *
 * Built by bench/compare.sh with gcc, outside meson, so that the main build
 * never needs libwebsockets:
 *   gcc -O2 lws_echo.c $(pkg-config --cflags --libs libwebsockets)
 * Usage: lws_echo [--port N] [--tls-cert FILE --tls-key FILE] (port 0 picks a
 * free port; with the certificate it speaks wss:// and https:// only); it
 * prints "lws_echo listening on 127.0.0.1:PORT" once it accepts connections. */
#include <libwebsockets.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer_main.h"

#define ECHO_MAX_MESSAGE (16u << 20)

struct echo_msg {
    struct echo_msg *next;
    size_t len;
    int binary;
    unsigned char buf[]; /* LWS_PRE bytes of room, then the payload */
};

struct echo_session {
    struct echo_msg *head, *tail;
    unsigned char *rx;
    size_t rx_len, rx_cap;
    int rx_binary, in_msg;
};

static void echo_free(struct echo_session *s)
{
    while (s->head) {
        struct echo_msg *m = s->head;

        s->head = m->next;
        free(m);
    }
    s->tail = NULL;
    free(s->rx);
    s->rx = NULL;
    s->rx_len = s->rx_cap = 0;
}

/* Appends a chunk of the message being received; -1 when over the limit. */
static int echo_append(struct echo_session *s, const void *in, size_t len)
{
    if (s->rx_len + len > ECHO_MAX_MESSAGE)
        return -1;
    if (s->rx_len + len > s->rx_cap) {
        size_t cap = s->rx_cap ? s->rx_cap : 4096;
        unsigned char *p;

        while (cap < s->rx_len + len)
            cap *= 2;
        p = realloc(s->rx, cap);
        if (!p)
            return -1;
        s->rx = p;
        s->rx_cap = cap;
    }
    memcpy(s->rx + s->rx_len, in, len);
    s->rx_len += len;
    return 0;
}

static int echo_queue(struct echo_session *s)
{
    struct echo_msg *m = malloc(sizeof *m + LWS_PRE + s->rx_len);

    if (!m)
        return -1;
    m->next = NULL;
    m->len = s->rx_len;
    m->binary = s->rx_binary;
    memcpy(m->buf + LWS_PRE, s->rx, s->rx_len);
    if (s->tail)
        s->tail->next = m;
    else
        s->head = m;
    s->tail = m;
    s->rx_len = 0;
    return 0;
}

static int echo_write(struct lws *wsi, struct echo_session *s)
{
    while (s->head) {
        struct echo_msg *m = s->head;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                          m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);

        if (n < 0 || (size_t)n < m->len)
            return -1;
        s->head = m->next;
        if (!s->head)
            s->tail = NULL;
        free(m);
        if (s->head && (lws_partial_buffered(wsi) || lws_send_pipe_choked(wsi))) {
            lws_callback_on_writable(wsi);
            break;
        }
    }
    return 0;
}

static int echo_callback(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len)
{
    struct echo_session *s = user;
    char uri[64];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/echo"))
            return -1;
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof *s);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!s->in_msg) {
            s->in_msg = 1;
            s->rx_len = 0;
            s->rx_binary = lws_frame_is_binary(wsi);
        }
        if (echo_append(s, in, len) < 0)
            return -1;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            s->in_msg = 0;
            if (echo_queue(s) < 0)
                return -1;
            lws_callback_on_writable(wsi);
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return echo_write(wsi, s);
    case LWS_CALLBACK_CLOSED:
        echo_free(s);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

int main(int argc, char **argv)
{
    return peer_main(argc, argv, "lws_echo", "echo", echo_callback, sizeof(struct echo_session));
}
