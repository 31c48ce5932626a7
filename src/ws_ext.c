/* ws_ext.c - parsing Sec-WebSocket-Extensions and reading the
 * permessage-deflate offers in it.
 *
 * Why it exists: the grammar (RFC 6455 9.1, with HTTP's tokens, quoted
 * strings and optional whitespace) and RFC 7692's rules for its parameters
 * decide what the server may answer; getting either wrong makes a client
 * fail the connection, or the server run with a configuration the client
 * never agreed to.  One pass over the bytes, one cursor, no allocation. */
#include "ws_ext.h"

#include <stdio.h>
#include <string.h>

#include "http_parse.h"

/* The longest unescaped parameter value kept: window bits are two digits,
 * so anything longer is only checked for being a token. */
#define EXT_VALUE_KEEP 4

struct ext_cur {
    const char *v;
    size_t len, pos;
    struct ws_ext_stop *stop;
};

/* RFC 9110 5.6.2: tchar. */
static bool ext_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ext_fail(struct ext_cur *k, const char *why)
{
    k->stop->pos = k->pos;
    k->stop->why = why;
    return -1;
}

static bool ext_end(const struct ext_cur *k)
{
    return k->pos >= k->len;
}

static char ext_peek(const struct ext_cur *k)
{
    return ext_end(k) ? '\0' : k->v[k->pos];
}

static void ext_ows(struct ext_cur *k)
{
    while (!ext_end(k) && (k->v[k->pos] == ' ' || k->v[k->pos] == '\t'))
        k->pos++;
}

/* A token at the cursor: its start and length (0: none there). */
static size_t ext_token(struct ext_cur *k, const char **s)
{
    size_t start = k->pos;

    while (!ext_end(k) && ext_tchar((unsigned char)k->v[k->pos]))
        k->pos++;
    *s = k->v + start;
    return k->pos - start;
}

/* RFC 9110 5.6.4: qdtext and the octets a quoted-pair may escape. */
static bool ext_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5B) ||
           (c >= 0x5D && c <= 0x7E) || c >= 0x80;
}

static bool ext_escapable(unsigned char c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7E) || c >= 0x80;
}

/* A parameter's value: a token, or a quoted string whose unescaped text
 * must be a token (RFC 6455 9.1).  The first EXT_VALUE_KEEP unescaped bytes
 * go to out, the whole unescaped length to *n.  0 or -1 (malformed). */
static int ext_value(struct ext_cur *k, char out[EXT_VALUE_KEEP], size_t *n)
{
    const char *s;

    *n = 0;
    if (ext_peek(k) != '"') {
        size_t len = ext_token(k, &s);
        if (!len)
            return ext_fail(k, "parameter value expected");
        memcpy(out, s, len < EXT_VALUE_KEEP ? len : EXT_VALUE_KEEP);
        *n = len;
        return 0;
    }
    k->pos++;
    for (;;) {
        unsigned char c;
        if (ext_end(k))
            return ext_fail(k, "quoted string not closed");
        c = (unsigned char)k->v[k->pos];
        if (c == '"')
            break;
        if (c == '\\') {
            k->pos++;
            if (ext_end(k) || !ext_escapable((unsigned char)k->v[k->pos]))
                return ext_fail(k, "bad escape in quoted string");
            c = (unsigned char)k->v[k->pos];
        } else if (!ext_qdtext(c)) {
            return ext_fail(k, "bad character in quoted string");
        }
        if (!ext_tchar(c))
            return ext_fail(k, "quoted value is not a token");
        if (*n < EXT_VALUE_KEEP)
            out[*n] = (char)c;
        (*n)++;
        k->pos++;
    }
    if (!*n)
        return ext_fail(k, "quoted value is empty");
    k->pos++; /* the closing quote */
    return 0;
}

static bool ext_name_is(const char *s, size_t n, const char *name)
{
    return strlen(name) == n && http_text_equal_nocase(name, s, n);
}

/* RFC 7692 7.1.2: 8 to 15, digits only, no leading zero. */
static uint8_t ext_window_bits(const char *v, size_t n)
{
    if (n == 1 && v[0] >= '8' && v[0] <= '9')
        return (uint8_t)(v[0] - '0');
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return (uint8_t)(10 + v[1] - '0');
    return 0;
}

enum {
    PMD_SERVER_NCT = 1u << 0,
    PMD_CLIENT_NCT = 1u << 1,
    PMD_SERVER_BITS = 1u << 2,
    PMD_CLIENT_BITS = 1u << 3,
};

static void pmd_decline(struct ws_pmd_offer *o, const char *why)
{
    if (o->valid) {
        o->valid = false;
        o->declined = why;
    }
}

/* One parameter of a permessage-deflate offer (value: NULL when none). */
static void pmd_param(struct ws_pmd_offer *o, unsigned *seen, const char *name, size_t len,
                      const char *value, size_t vlen)
{
    unsigned bit;

    if (ext_name_is(name, len, "server_no_context_takeover"))
        bit = PMD_SERVER_NCT;
    else if (ext_name_is(name, len, "client_no_context_takeover"))
        bit = PMD_CLIENT_NCT;
    else if (ext_name_is(name, len, "server_max_window_bits"))
        bit = PMD_SERVER_BITS;
    else if (ext_name_is(name, len, "client_max_window_bits"))
        bit = PMD_CLIENT_BITS;
    else
        return pmd_decline(o, "unknown parameter");
    if (*seen & bit)
        return pmd_decline(o, "repeated parameter");
    *seen |= bit;
    switch (bit) {
    case PMD_SERVER_NCT:
    case PMD_CLIENT_NCT:
        if (value)
            return pmd_decline(o, "no_context_takeover takes no value");
        if (bit == PMD_SERVER_NCT)
            o->server_no_context_takeover = true;
        else
            o->client_no_context_takeover = true;
        return;
    case PMD_SERVER_BITS:
        if (!value || !(o->server_max_window_bits = ext_window_bits(value, vlen)))
            return pmd_decline(o, "server_max_window_bits not in 8..15");
        return;
    default:
        if (!value) {
            o->client_max_window_bits = WS_PMD_BITS_ANY;
            return;
        }
        if (!(o->client_max_window_bits = ext_window_bits(value, vlen)))
            return pmd_decline(o, "client_max_window_bits not in 8..15");
    }
}

/* The parameters after an extension's name, up to the next ',' or the end. */
static int ext_params(struct ext_cur *k, struct ws_pmd_offer *o, bool pmd)
{
    unsigned seen = 0;

    ext_ows(k);
    while (ext_peek(k) == ';') {
        char value[EXT_VALUE_KEEP];
        const char *name;
        size_t len, vlen = 0;
        bool has_value = false;

        k->pos++;
        ext_ows(k);
        if (!(len = ext_token(k, &name)))
            return ext_fail(k, "parameter name expected");
        ext_ows(k);
        if (ext_peek(k) == '=') {
            k->pos++;
            ext_ows(k);
            if (ext_value(k, value, &vlen) < 0)
                return -1;
            has_value = true;
            ext_ows(k);
        }
        if (pmd)
            pmd_param(o, &seen, name, len, has_value ? value : NULL,
                      vlen < EXT_VALUE_KEEP ? vlen : EXT_VALUE_KEEP + 1);
    }
    if (!ext_end(k) && ext_peek(k) != ',')
        return ext_fail(k, "',' or ';' expected");
    return 0;
}

int ws_ext_parse(const char *v, size_t len, struct ws_pmd_offer *offers, size_t max,
                 size_t *n, struct ws_ext_stop *stop)
{
    struct ext_cur k = {.v = v, .len = len, .stop = stop};
    bool any = false;

    *n = 0;
    for (;;) {
        struct ws_pmd_offer o = {.valid = true};
        const char *name;
        size_t nlen;
        bool pmd;

        ext_ows(&k);
        if (ext_end(&k))
            break;
        if (ext_peek(&k) == ',') { /* an empty list element */
            k.pos++;
            continue;
        }
        if (!(nlen = ext_token(&k, &name)))
            return ext_fail(&k, "extension name expected");
        pmd = ext_name_is(name, nlen, WS_PMD_NAME);
        if (ext_params(&k, &o, pmd) < 0)
            return -1;
        if (pmd && (*n)++ < max)
            offers[*n - 1] = o;
        any = true;
        if (ext_end(&k))
            break;
        k.pos++; /* the ',' */
    }
    if (!any)
        return ext_fail(&k, "no extension in the field");
    return 0;
}

bool ws_pmd_agree(const struct ws_pmd_offer *o, unsigned takeover_bits,
                  struct ws_pmd_agreed *out)
{
    unsigned bits = o->server_max_window_bits;

    *out = (struct ws_pmd_agreed){0};
    if (!o->valid)
        return false;
    if (!takeover_bits || o->server_no_context_takeover) {
        /* The stateless compressor's window is 32 KiB. */
        if (bits && bits != 15)
            return false;
        out->say_server_bits = (uint8_t)bits;
    } else {
        if (bits && bits < WS_PMD_MIN_SERVER_BITS)
            return false;
        out->server_bits = (uint8_t)(bits && bits < takeover_bits ? bits : takeover_bits);
        out->say_server_bits = bits ? out->server_bits : 0;
    }
    bits = o->client_max_window_bits == WS_PMD_BITS_ANY ? 15 : o->client_max_window_bits;
    if (takeover_bits && !o->client_no_context_takeover && bits)
        out->client_bits = (uint8_t)(bits < takeover_bits ? bits : takeover_bits);
    return true;
}

size_t ws_pmd_answer(const struct ws_pmd_agreed *a, char *out, size_t cap)
{
    char server[64] = "; server_no_context_takeover", client[40] = "; client_no_context_takeover";
    int n;

    if (a->server_bits)
        server[0] = '\0';
    if (a->say_server_bits)
        snprintf(server + strlen(server), sizeof(server) - strlen(server),
                 "; server_max_window_bits=%u", a->say_server_bits);
    if (a->client_bits)
        snprintf(client, sizeof(client), "; client_max_window_bits=%u", a->client_bits);
    n = snprintf(out, cap, WS_PMD_NAME "%s%s", server, client);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
