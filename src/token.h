/* token.h - signed tokens (JWT, RFC 7519): the keys that verify them and a
 * token verified into its claims.
 *
 * Why it exists: a push server must know who each connection is and what it
 * may read and write without asking a backend per connection.  The backend
 * signs a token; the server checks it here, with OpenSSL for the signature
 * and jansson for the JSON.  The algorithm is the key's (one per key), never
 * the token's: a token whose header names another one, or "none", is
 * refused, so a public key can never be used as an HMAC secret.  Input is
 * bounded (TOKEN_MAX_LEN, TOKEN_MAX_PATTERNS): nothing a client sends makes
 * the verifier allocate more than a few times the token's size.  No I/O
 * except token_keys_load, no global state.  See docs/SECURITY.md. */
#ifndef RINGWS_TOKEN_H
#define RINGWS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringws.h"

#define TOKEN_MAX_LEN 4096      /* bytes of an encoded token */
#define TOKEN_MAX_PATTERNS 64   /* patterns in each of topics and publish */
#define TOKEN_MAX_SUB 255       /* bytes of sub */
#define TOKEN_MAX_KEYS 32
#define TOKEN_MIN_SECRET 32     /* bytes of an HMAC secret (RFC 7518 3.2) */

enum token_alg { TOKEN_HS256, TOKEN_RS256, TOKEN_ES256, TOKEN_EDDSA };

struct token_keys;

/* Reads every key file: a PEM public key (RSA: RS256; EC P-256: ES256;
 * Ed25519: EdDSA) or, for a file that is not PEM, an HMAC secret (HS256;
 * the file's bytes less one trailing newline).  0, or -EINVAL with why
 * (NUL-terminated, naming the file) filled in; -ENOMEM. */
int token_keys_load(const struct ringws_token_key *keys, size_t n, struct token_keys **out,
                    char *why, size_t why_len);
void token_keys_free(struct token_keys *ks);
/* The algorithm of the i-th key loaded. */
enum token_alg token_keys_alg(const struct token_keys *ks, size_t i);

/* Verifies the len bytes of tok at time now (seconds since the epoch) with
 * leeway seconds of grace on exp and nbf.  RINGWS_AUTH_OK and *out, a
 * claims record in one allocation (free()), or why it is refused. */
enum ringws_auth_failure token_verify(const struct token_keys *ks, const char *tok,
                                      size_t len, int64_t now, unsigned leeway,
                                      struct ringws_token_claims **out);

/* True when one of the patterns (a topic name, or a prefix ending in '*')
 * matches the topic. */
bool token_covers(const char *const *patterns, size_t n, const char *topic, size_t len);

/* Decodes unpadded base64url (RFC 4648 section 5) strictly: only the
 * alphabet, no padding, unused bits zero.  The decoded length, or -EINVAL
 * (also when it would pass cap). */
int token_base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

#endif
