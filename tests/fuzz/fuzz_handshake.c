/* fuzz_handshake.c - the opening handshake against the rules of handshake.h.
 *
 * Why it exists: the handshake decides which bytes become a WebSocket, so a
 * wrong "yes" is worse than a crash.  The input is parsed as an HTTP request
 * head and, when complete, validated under a few server policies.  Each
 * answer is compared with the rules handshake.h lists, re-written below in
 * the order it gives them, with their own token and base64 code: the status
 * (and the version hint of 426), the accept key (recomputed from SHA-1 with
 * a separate base64 encoder), and the subprotocol, which must be one of the
 * server's, offered by the client, and present whenever an offer matches.
 * The 101 response writer is run at its exact size and one byte short. */
#include <openssl/sha.h>

#include "fuzz_common.h"
#include "handshake.h"
#include "ws_ext.h"

#define GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static const char *const chat_protocols[] = {"chat", "superchat"};
static const char *const many_protocols[] = {"v1.json", "chat", "mqtt"};
static const char *const one_origin[] = {"https://example.com"};
static const char *const two_origins[] = {"http://localhost:8080", "https://example.com"};

static const struct ws_handshake_policy policies[] = {
    {0},
    {chat_protocols, 2, one_origin, 1},
    {many_protocols, 3, two_origins, 2},
    {many_protocols, 3, NULL, 0},
    {chat_protocols, 2, NULL, 0, true},
};

/* ---- plain helpers for the rules ---------------------------------------- */

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool same_nocase(const char *a, size_t n, const char *word)
{
    if (strlen(word) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(word[i]))
            return false;
    return true;
}

/* Every header named `name`: their count, and the last index in *at. */
static int count_headers(const struct http_request *r, const char *name, int *at)
{
    int n = 0;

    for (int i = 0; i < r->n_headers; i++)
        if (same_nocase(r->headers[i].name, r->headers[i].name_len, name))
            n++, *at = i;
    return n;
}

/* Whether any element of any `name` header's comma list equals `token`,
 * ignoring case when `nocase`, after trimming spaces and tabs. */
static bool list_has(const struct http_request *r, const char *name,
                     const char *token, bool nocase)
{
    for (int i = 0; i < r->n_headers; i++) {
        const struct http_header *h = &r->headers[i];

        if (!same_nocase(h->name, h->name_len, name))
            continue;
        for (size_t a = 0; a <= h->value_len;) {
            size_t b = a;

            while (b < h->value_len && h->value[b] != ',')
                b++;
            size_t s = a, e = b;
            while (s < e && (h->value[s] == ' ' || h->value[s] == '\t'))
                s++;
            while (e > s && (h->value[e - 1] == ' ' || h->value[e - 1] == '\t'))
                e--;
            size_t n = e - s;
            if (n == strlen(token) &&
                (nocase ? same_nocase(h->value + s, n, token)
                        : memcmp(h->value + s, token, n) == 0))
                return true;
            a = b + 1;
        }
    }
    return false;
}

static int b64_index(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;

    return p ? (int)(p - alphabet) : -1;
}

/* Canonical base64 of 16 bytes: 21 full sextets, one holding the last two
 * bits (its low four bits zero), then "==". */
static bool key_valid(const struct http_header *h)
{
    if (h->value_len != 24 || h->value[22] != '=' || h->value[23] != '=')
        return false;
    for (int i = 0; i < 22; i++)
        if (b64_index(h->value[i]) < 0)
            return false;
    return (b64_index(h->value[21]) & 0x0F) == 0;
}

static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
        *out++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    *out = '\0';
}

static void ref_accept(const char *key, size_t n, char out[WS_ACCEPT_LEN + 1])
{
    uint8_t md[SHA_DIGEST_LENGTH];
    char *text = malloc(n + sizeof GUID);

    FUZZ_CHECK(text != NULL, "out of memory");
    if (n)
        memcpy(text, key, n);
    memcpy(text + n, GUID, sizeof GUID - 1);
    SHA1((const unsigned char *)text, n + sizeof GUID - 1, md);
    b64_encode(md, sizeof md, out);
    free(text);
}

/* ---- the rules of handshake.h, in its order ------------------------------ */

static int ref_status(const struct http_request *r, const struct ws_handshake_policy *pol)
{
    int at = -1, n;

    if (r->method_len != 3 || memcmp(r->method, "GET", 3) != 0)
        return 405;
    if (r->version_minor < 1)
        return 400;
    if (count_headers(r, "Host", &at) != 1)
        return 400;
    if (!list_has(r, "Upgrade", "websocket", true) ||
        !list_has(r, "Connection", "upgrade", true))
        return 400;
    if (count_headers(r, "Sec-WebSocket-Key", &at) != 1 || !key_valid(&r->headers[at]))
        return 400;
    n = count_headers(r, "Sec-WebSocket-Version", &at);
    if (n == 0)
        return 400;
    if (n > 1 || r->headers[at].value_len != 2 || memcmp(r->headers[at].value, "13", 2))
        return 426;
    if (pol->n_origins) {
        bool allowed = false;

        if (count_headers(r, "Origin", &at) != 1)
            return 403;
        for (size_t k = 0; k < pol->n_origins; k++)
            allowed |= same_nocase(r->headers[at].value, r->headers[at].value_len,
                                   pol->origins[k]);
        if (!allowed)
            return 403;
    }
    if ((r->has_body_length && r->content_length > 0) || r->chunked)
        return 400;
    /* The field's own grammar is fuzzed by fuzz_ws_ext; here only that any
     * malformed field refuses the request. */
    for (int i = 0; pol->deflate &&
                    (i = http_header_find(r, "Sec-WebSocket-Extensions", i)) >= 0; i++) {
        struct ws_pmd_offer o[1];
        struct ws_ext_stop stop;
        size_t n;
        if (ws_ext_parse(r->headers[i].value, r->headers[i].value_len, o, 1, &n, &stop) < 0)
            return 400;
    }
    return 101;
}

/* ---- checks --------------------------------------------------------------- */

static bool contains(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static void check_101_writer(const struct ws_handshake_result *res)
{
    size_t cap = 512;
    char *big = malloc(cap), *exact, *accept_line = malloc(64);
    size_t n = ws_handshake_write_101(big, cap, res);

    FUZZ_CHECK(big && accept_line, "out of memory");
    FUZZ_CHECK(n > 0 && n < cap, "101 response of %zu bytes", n);
    snprintf(accept_line, 64, "\r\nSec-WebSocket-Accept: %s\r\n", res->accept);
    FUZZ_CHECK(memcmp(big, "HTTP/1.1 101 ", 13) == 0, "status line");
    FUZZ_CHECK(contains(big, n, accept_line), "accept header missing");
    FUZZ_CHECK(contains(big, n, "\r\nSec-WebSocket-Protocol: ") == (res->subprotocol != NULL),
               "protocol header does not match the choice");
    FUZZ_CHECK(contains(big, n, "\r\nSec-WebSocket-Extensions: permessage-deflate; ") ==
                   res->deflate,
               "extensions header does not match the choice");
    FUZZ_CHECK(n >= 4 && memcmp(big + n - 4, "\r\n\r\n", 4) == 0, "head not ended");

    /* Writes beyond cap fault: both blocks are exactly cap bytes. */
    exact = malloc(n);
    FUZZ_CHECK(exact != NULL, "out of memory");
    FUZZ_CHECK(ws_handshake_write_101(exact, n, res) == n, "exact size refused");
    FUZZ_CHECK(memcmp(exact, big, n) == 0, "exact size wrote other bytes");
    FUZZ_CHECK(ws_handshake_write_101(exact, n - 1, res) == 0, "short buffer accepted");
    free(exact);
    free(accept_line);
    free(big);
}

static void check_policy(const struct http_request *r, const struct ws_handshake_policy *pol,
                         int which)
{
    struct ws_handshake_result res;
    int status = ws_handshake_validate(r, pol, &res);
    int want = ref_status(r, pol);

    FUZZ_CHECK(status == res.status, "returned %d, result says %d", status, res.status);
    FUZZ_CHECK(status == 101 || status == 400 || status == 403 || status == 405 ||
                   status == 426,
               "policy %d: undocumented status %d", which, status);
    FUZZ_CHECK(status == want, "policy %d: status %d, rules say %d", which, status, want);
    FUZZ_CHECK(res.version_hint == (status == 426), "version hint %d with %d",
               res.version_hint, status);
    FUZZ_CHECK(status == 101 || res.reason != NULL, "status %d without a reason", status);
    if (status != 101)
        return;

    int at = -1;
    char want_accept[WS_ACCEPT_LEN + 1];
    count_headers(r, "Sec-WebSocket-Key", &at);
    ref_accept(r->headers[at].value, r->headers[at].value_len, want_accept);
    FUZZ_CHECK(strlen(res.accept) == WS_ACCEPT_LEN, "accept of %zu chars", strlen(res.accept));
    FUZZ_CHECK(strcmp(res.accept, want_accept) == 0, "accept %s, SHA-1 says %s",
               res.accept, want_accept);

    bool from_policy = false, any_offer = false;
    for (size_t k = 0; k < pol->n_subprotocols; k++) {
        from_policy |= res.subprotocol == pol->subprotocols[k];
        any_offer |= list_has(r, "Sec-WebSocket-Protocol", pol->subprotocols[k], false);
    }
    if (res.subprotocol) {
        FUZZ_CHECK(from_policy, "policy %d: subprotocol %s is not the server's", which,
                   res.subprotocol);
        FUZZ_CHECK(list_has(r, "Sec-WebSocket-Protocol", res.subprotocol, false),
                   "subprotocol %s was not offered", res.subprotocol);
    }
    FUZZ_CHECK(any_offer == (res.subprotocol != NULL),
               "policy %d: an offer matches but none chosen, or the reverse", which);
    check_101_writer(&res);
}

/* The accept key over arbitrary bytes, not only valid keys: the function
 * takes any length and must agree with SHA-1 on all of them. */
static void check_accept_raw(const uint8_t *data, size_t size)
{
    char got[WS_ACCEPT_LEN + 1], want[WS_ACCEPT_LEN + 1];
    size_t n = size < 256 ? size : 256;

    FUZZ_CHECK(ws_handshake_accept_key((const char *)data, n, got) == 0, "accept failed");
    ref_accept((const char *)data, n, want);
    FUZZ_CHECK(strcmp(got, want) == 0, "accept of %zu raw bytes: %s, not %s", n, got, want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_limits lim;
    struct http_request req;
    struct http_header *hdrs;

    check_accept_raw(data, size);

    http_limits_default(&lim);
    hdrs = malloc(lim.max_headers * sizeof *hdrs);
    FUZZ_CHECK(hdrs != NULL, "out of memory");
    if (http_parse_request((const char *)data, size, 0, &lim, &req, hdrs) > 0) {
        FUZZ_CHECK(ws_handshake_requested(&req) == list_has(&req, "Upgrade", "websocket", true),
                   "ws_handshake_requested disagrees with the Upgrade header");
        for (size_t k = 0; k < sizeof policies / sizeof policies[0]; k++)
            check_policy(&req, &policies[k], (int)k);
    }
    free(hdrs);
    return 0;
}
