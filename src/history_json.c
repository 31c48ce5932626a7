/* history_json.c - GET /history/TOPIC's answer: a topic's held messages as
 * JSON (docs/PUBSUB.md, "History").
 *
 * Why it exists: backends fetch what a client missed without speaking
 * WebSocket; the answer is read from the sequencer's history (references
 * taken under its lock, the JSON written after it goes) and is the only
 * place where a message is copied out of its shared frame: text escaped,
 * binary in base64 (OpenSSL's EVP_EncodeBlock). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"
#include "text_buf.h"

/* An answer stops growing past this many bytes (it holds at least one
 * message): a client asks again from the last offset it got. */
#define HISTORY_JSON_SOFT_CAP (8u << 20)

/* A UTF-8 text as a JSON string: quotes, backslashes and control
 * characters escaped, everything else as it is. */
static void json_text(struct text_buf *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    text_buf_reserve(o, 6 * n + 2);
    if (o->err)
        return;
    o->p[o->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            o->p[o->len++] = '\\';
            o->p[o->len++] = (char)ch;
        } else if (ch < 0x20) {
            memcpy(o->p + o->len, "\\u00", 4);
            o->p[o->len + 4] = hex[ch >> 4];
            o->p[o->len + 5] = hex[ch & 15];
            o->len += 6;
        } else {
            o->p[o->len++] = (char)ch;
        }
    }
    o->p[o->len++] = '"';
}

static void json_base64(struct text_buf *o, const uint8_t *s, size_t n)
{
    text_buf_reserve(o, 4 * ((n + 2) / 3) + 3);
    if (o->err)
        return;
    o->p[o->len++] = '"';
    o->len += (size_t)EVP_EncodeBlock((unsigned char *)o->p + o->len, s, (int)n);
    o->p[o->len++] = '"';
}

static void json_message(struct text_buf *o, const struct pub_msg *m, bool first)
{
    const uint8_t *payload = m->raw.bytes + m->frame_hdr;
    size_t n = m->raw.len - m->frame_hdr;
    bool binary = (m->raw.bytes[0] & 0x0f) == WS_OP_BINARY;

    text_buf_printf(o, "%s{\"offset\":%" PRIu64 ",\"%s\":", first ? "" : ",", m->offset,
                binary ? "binary" : "text");
    if (binary)
        json_base64(o, payload, n);
    else
        json_text(o, payload, n);
    text_buf_printf(o, "}");
}

int history_json_build(struct ringws_server *srv, const char *topic, size_t len,
                       const struct history_query *q, char **out, size_t *out_len)
{
    struct text_buf o = {0};
    struct seq_view v;
    struct seq_topic *st;
    struct pub_msg **msgs;
    uint64_t from, n = 0, size = 0;
    bool gap;

    msgs = calloc(q->limit, sizeof(*msgs));
    if (!msgs)
        return -ENOMEM;
    seq_lock(srv);
    st = seq_topic_get(srv, topic, len); /* unknown: a new epoch, kept while idle */
    if (!st) {
        seq_unlock(srv);
        free(msgs);
        return -ENOMEM;
    }
    seq_topic_view(srv, st, &v);
    gap = (q->since || q->has_epoch) &&
          !seq_topic_serves(st, q->has_epoch ? q->epoch : NULL, q->since);
    from = gap || !q->since ? v.oldest : q->since + 1;
    while (from + n <= v.last && n < q->limit && size < HISTORY_JSON_SOFT_CAP) {
        if (!(msgs[n] = seq_topic_message(st, from + n)))
            break; /* what the view counts is held: not reached */
        size += msgs[n++]->raw.len;
    }
    seq_topic_settle(srv, st);
    seq_unlock(srv);

    text_buf_printf(&o, "{\"topic\":\"%.*s\",\"epoch\":\"%s\",\"oldest\":%" PRIu64 ",\"last\":%"
                PRIu64 ",\"gap\":%s,\"messages\":[", (int)len, topic, v.epoch, v.oldest, v.last,
                gap ? "true" : "false");
    for (uint64_t i = 0; i < n; i++)
        json_message(&o, msgs[i], i == 0);
    text_buf_printf(&o, "]}\n");
    for (uint64_t i = 0; i < n; i++)
        pubsub_msg_unref(msgs[i]);
    free(msgs);
    if (o.err) {
        text_buf_free(&o);
        return o.err;
    }
    *out = o.p;
    *out_len = o.len;
    return 0;
}
