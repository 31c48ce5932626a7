/* handshake.c - RFC 6455 4.2 opening-handshake validation and the 101 answer.
 *
 * Why it exists: it owns the one decision of whether a parsed HTTP request
 * becomes a WebSocket, the exact status for each way it can fail, the
 * Sec-WebSocket-Accept key and the subprotocol choice.  Checks run in the
 * order handshake.h lists them, so a request that is wrong in several ways
 * always gets the same answer.  SHA-1 and base64 come from OpenSSL. */
#include "handshake.h"

#include "ws_ext.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

/* RFC 6455 1.3: appended to the client's key before hashing. */
static const char hs_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#define HS_KEY_LEN 24       /* base64 of 16 bytes, "==" included */
#define HS_KEY_RAW_LEN 16

static int hs_fail(struct ws_handshake_result *out, int status, const char *reason)
{
    out->status = status;
    out->reason = reason;
    return status;
}

static bool hs_value_is(const struct http_header *h, const char *text)
{
    size_t n = strlen(text);
    return h->value_len == n && memcmp(h->value, text, n) == 0;
}

/* How many fields are named `name`: a header that must appear once is
 * refused when repeated.  *first gets the index of the first, or -1. */
static int hs_count(const struct http_request *req, const char *name, int *first)
{
    int n = 0;

    *first = http_header_find(req, name, 0);
    for (int i = *first; i >= 0; i = http_header_find(req, name, i + 1))
        n++;
    return n;
}

/* Canonical base64 of exactly 16 bytes: decoding and encoding again must
 * give the same text, which rules out stray characters, whitespace and
 * nonzero padding bits. */
static bool hs_key_valid(const struct http_header *key)
{
    unsigned char raw[HS_KEY_LEN / 4 * 3];
    unsigned char again[HS_KEY_LEN + 1];

    if (key->value_len != HS_KEY_LEN || memcmp(key->value + HS_KEY_LEN - 2, "==", 2) != 0)
        return false;
    if (EVP_DecodeBlock(raw, (const unsigned char *)key->value, HS_KEY_LEN) < 0)
        return false;
    EVP_EncodeBlock(again, raw, HS_KEY_RAW_LEN);
    return memcmp(again, key->value, HS_KEY_LEN) == 0;
}

static int hs_check_key(const struct http_request *req, struct ws_handshake_result *out,
                        const struct http_header **key)
{
    int i, n = hs_count(req, "Sec-WebSocket-Key", &i);

    if (n == 0)
        return hs_fail(out, 400, "missing Sec-WebSocket-Key");
    if (n > 1)
        return hs_fail(out, 400, "duplicate Sec-WebSocket-Key");
    if (!hs_key_valid(&req->headers[i]))
        return hs_fail(out, 400, "invalid Sec-WebSocket-Key");
    *key = &req->headers[i];
    return 0;
}

static int hs_check_version(const struct http_request *req, struct ws_handshake_result *out)
{
    int i, n = hs_count(req, "Sec-WebSocket-Version", &i);

    if (n == 0)
        return hs_fail(out, 400, "missing Sec-WebSocket-Version");
    if (n > 1 || !hs_value_is(&req->headers[i], "13")) {
        out->version_hint = true;
        return hs_fail(out, 426, "unsupported Sec-WebSocket-Version");
    }
    return 0;
}

/* Origins serialize in lowercase scheme and host (RFC 6454 6.2), but a
 * configured list may not, so the match ignores case. */
static int hs_check_origin(const struct http_request *req,
                           const struct ws_handshake_policy *policy,
                           struct ws_handshake_result *out)
{
    if (!policy || policy->n_origins == 0)
        return 0;

    int i, n = hs_count(req, "Origin", &i);
    if (n == 0)
        return hs_fail(out, 403, "missing Origin");
    if (n > 1)
        return hs_fail(out, 403, "duplicate Origin");
    const struct http_header *h = &req->headers[i];
    for (size_t k = 0; k < policy->n_origins; k++)
        if (strlen(policy->origins[k]) == h->value_len &&
            http_text_equal_nocase(policy->origins[k], h->value, h->value_len))
            return 0;
    return hs_fail(out, 403, "Origin not allowed");
}

/* The server's entry equal to a client's offer (names are case-sensitive),
 * or NULL. */
static const char *hs_supported(const struct ws_handshake_policy *policy,
                                const char *offer, size_t len)
{
    for (size_t k = 0; k < policy->n_subprotocols; k++) {
        const char *s = policy->subprotocols[k];
        if (strlen(s) == len && memcmp(s, offer, len) == 0)
            return s;
    }
    return NULL;
}

/* Walks the client's offers in the order sent, across repeated fields, and
 * takes the first one the server supports: the client listed them by its
 * preference, and answering with one it did not offer fails the connection. */
static const char *hs_first_offer(const struct http_request *req,
                                  const struct ws_handshake_policy *policy)
{
    for (int i = 0; (i = http_header_find(req, "Sec-WebSocket-Protocol", i)) >= 0; i++) {
        const char *p = req->headers[i].value, *end = p + req->headers[i].value_len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end, *s = p;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            const char *chosen = e > s ? hs_supported(policy, s, (size_t)(e - s)) : NULL;
            if (chosen)
                return chosen;
            p = comma ? comma + 1 : end;
        }
    }
    return NULL;
}

static const char *hs_choose_subprotocol(const struct http_request *req,
                                         const struct ws_handshake_policy *policy)
{
    if (!policy || policy->n_subprotocols == 0)
        return NULL;
    return hs_first_offer(req, policy);
}

bool ws_handshake_offered(const struct http_request *req, const char *name)
{
    const struct ws_handshake_policy one = {.subprotocols = &name, .n_subprotocols = 1};

    return hs_first_offer(req, &one) != NULL;
}

/* permessage-deflate offers kept per field: more is no real client. */
#define HS_PMD_OFFERS 8

/* Every field is parsed, even after an offer is chosen: a malformed one
 * anywhere refuses the request rather than letting half of it count. */
static int hs_check_extensions(const struct http_request *req,
                               const struct ws_handshake_policy *policy,
                               struct ws_handshake_result *out)
{
    if (!policy || !policy->deflate)
        return 0;
    for (int i = 0; (i = http_header_find(req, "Sec-WebSocket-Extensions", i)) >= 0; i++) {
        struct ws_pmd_offer offers[HS_PMD_OFFERS];
        struct ws_ext_stop stop;
        size_t n;

        if (ws_ext_parse(req->headers[i].value, req->headers[i].value_len, offers,
                         HS_PMD_OFFERS, &n, &stop) < 0)
            return hs_fail(out, 400, "malformed Sec-WebSocket-Extensions");
        for (size_t k = 0; k < n && k < HS_PMD_OFFERS && !out->deflate; k++)
            out->deflate = ws_pmd_agree(&offers[k], policy->takeover_bits, &out->pmd);
    }
    return 0;
}

static int hs_check_request(const struct http_request *req, struct ws_handshake_result *out)
{
    int host;

    if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
        return hs_fail(out, 405, "WebSocket upgrade needs GET");
    if (req->version_minor < 1)
        return hs_fail(out, 400, "WebSocket upgrade needs HTTP/1.1");
    switch (hs_count(req, "Host", &host)) {
    case 0:
        return hs_fail(out, 400, "missing Host");
    case 1:
        break;
    default:
        return hs_fail(out, 400, "duplicate Host");
    }
    if (!http_header_has_token(req, "Upgrade", "websocket"))
        return hs_fail(out, 400, "Upgrade must list websocket");
    if (!http_header_has_token(req, "Connection", "upgrade"))
        return hs_fail(out, 400, "Connection must list Upgrade");
    return 0;
}

bool ws_handshake_requested(const struct http_request *req)
{
    return http_header_has_token(req, "Upgrade", "websocket");
}

int ws_handshake_validate(const struct http_request *req,
                          const struct ws_handshake_policy *policy,
                          struct ws_handshake_result *out)
{
    const struct http_header *key = NULL;

    *out = (struct ws_handshake_result){ 0 };
    if (hs_check_request(req, out) || hs_check_key(req, out, &key) ||
        hs_check_version(req, out) || hs_check_origin(req, policy, out))
        return out->status;
    if ((req->has_body_length && req->content_length > 0) || req->chunked)
        return hs_fail(out, 400, "request body not allowed");
    if (hs_check_extensions(req, policy, out))
        return out->status;
    if (ws_handshake_accept_key(key->value, key->value_len, out->accept))
        return hs_fail(out, 500, "cannot compute Sec-WebSocket-Accept");
    out->subprotocol = hs_choose_subprotocol(req, policy);
    out->status = 101;
    return 101;
}

int ws_handshake_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, key, key_len) == 1 &&
              EVP_DigestUpdate(ctx, hs_guid, sizeof(hs_guid) - 1) == 1 &&
              EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 20;

    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -EIO;
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len);
    return 0;
}

int ws_handshake_self_test(void)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    static const char want[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    char got[WS_ACCEPT_LEN + 1];

    if (ws_handshake_accept_key(key, sizeof(key) - 1, got) < 0 || strcmp(got, want) != 0)
        return -EIO;
    return 0;
}

/* Appends text when it fits; *len past cap marks the overflow. */
static void hs_put(char *out, size_t cap, size_t *len, const char *text)
{
    size_t n = strlen(text);

    if (*len <= cap && n <= cap - *len)
        memcpy(out + *len, text, n);
    *len += n;
}

size_t ws_handshake_write_101(char *out, size_t cap, const struct ws_handshake_result *res)
{
    size_t len = 0;

    if (res->status != 101)
        return 0;
    hs_put(out, cap, &len,
           "HTTP/1.1 101 Switching Protocols\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Accept: ");
    hs_put(out, cap, &len, res->accept);
    hs_put(out, cap, &len, "\r\n");
    if (res->subprotocol) {
        hs_put(out, cap, &len, "Sec-WebSocket-Protocol: ");
        hs_put(out, cap, &len, res->subprotocol);
        hs_put(out, cap, &len, "\r\n");
    }
    if (res->deflate) {
        char answer[WS_PMD_ANSWER_MAX];

        if (!ws_pmd_answer(&res->pmd, answer, sizeof(answer)))
            return 0;
        hs_put(out, cap, &len, "Sec-WebSocket-Extensions: ");
        hs_put(out, cap, &len, answer);
        hs_put(out, cap, &len, "\r\n");
    }
    hs_put(out, cap, &len, "\r\n");
    return len <= cap ? len : 0;
}
