/* tls_record.h - TLS 1.2 and 1.3 application records after the handshake:
 * keys taken from OpenSSL once the handshake is over, records sealed and
 * opened with OpenSSL's AEAD ciphers, in place.
 *
 * Why it exists: an OpenSSL SSL object costs an idle connection about
 * 13 KB (the SSL alone is 7.6 KB), half of what a push server holds per
 * client.  What a connection needs once its handshake is over is two keys,
 * two nonces and two sequence numbers: OpenSSL does the handshake, then
 * the SSL is freed and this module protects the records, the way the
 * kernel does with kTLS.  The cryptography is OpenSSL's (AES-GCM,
 * ChaCha20-Poly1305, HKDF, the TLS 1.2 PRF); what is here is the record
 * format of RFC 8446 section 5, RFC 5288 and RFC 7905.  No allocation, no
 * I/O: the transport (transport_tls.c) hands it whole records. */
#ifndef RINGWS_TLS_RECORD_H
#define RINGWS_TLS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TLS_REC_HEADER 5
#define TLS_REC_PLAIN_MAX 16384u          /* plaintext of one record */
#define TLS_REC_WIRE_MAX (16384u + 2048u + TLS_REC_HEADER) /* largest accepted */
#define TLS_REC_SECRET_MAX 48

enum tls_content {
    TLS_CT_CHANGE_CIPHER_SPEC = 20,
    TLS_CT_ALERT = 21,
    TLS_CT_HANDSHAKE = 22,
    TLS_CT_APPLICATION_DATA = 23,
};

/* Alert descriptions the server sends (RFC 8446 section 6). */
enum tls_alert {
    TLS_ALERT_CLOSE_NOTIFY = 0,
    TLS_ALERT_UNEXPECTED_MESSAGE = 10,
    TLS_ALERT_BAD_RECORD_MAC = 20,
    TLS_ALERT_RECORD_OVERFLOW = 22,
    TLS_ALERT_DECODE_ERROR = 50,
    TLS_ALERT_INTERNAL_ERROR = 80,
    TLS_ALERT_USER_CANCELED = 90,
};

/* One direction's protection. */
struct tls_rec_dir {
    uint8_t key[32];
    uint8_t iv[12];  /* TLS 1.3 and ChaCha20: the nonce base; 1.2 GCM: 4 bytes of salt */
    uint64_t seq;
    uint8_t secret[TLS_REC_SECRET_MAX]; /* TLS 1.3: the traffic secret, for KeyUpdate */
};

struct tls_record {
    struct tls_rec_dir rd, wr;
    uint8_t aead;        /* enum tls_rec_aead (tls_record.c) */
    uint8_t key_len;
    uint8_t secret_len;  /* TLS 1.3: the hash's length */
    bool v13;
    bool sha384;         /* the suite's hash */
};

/* The ciphers and KDFs, fetched once per thread that seals or opens. */
struct tls_rec_crypto;
struct tls_rec_crypto *tls_rec_crypto_new(void);
void tls_rec_crypto_free(struct tls_rec_crypto *cx);

/* The traffic secrets OpenSSL reports through its key log callback during
 * a TLS 1.3 handshake (the SSL's app data points at this). */
struct tls_rec_secrets {
    uint8_t client[TLS_REC_SECRET_MAX];
    uint8_t server[TLS_REC_SECRET_MAX];
    uint8_t client_len, server_len;
};
/* For SSL_CTX_set_keylog_callback. */
void tls_rec_keylog(const SSL *ssl, const char *line);

/* The server's record state once the handshake of ssl is over: rd_seq and
 * wr_seq are the records each side already protected with these keys.  0,
 * -ENOTSUP (a suite or version this module does not do) or -EIO. */
int tls_record_from_ssl(struct tls_record *r, struct tls_rec_crypto *cx, SSL *ssl,
                        const struct tls_rec_secrets *secrets, uint64_t rd_seq,
                        uint64_t wr_seq);

/* Bytes before a record's plaintext (header, TLS 1.2 GCM's explicit
 * nonce), and all its bytes beyond the plaintext. */
size_t tls_record_prefix(const struct tls_record *r);
size_t tls_record_overhead(const struct tls_record *r);

/* Seals the n bytes of plaintext (n <= TLS_REC_PLAIN_MAX) at rec +
 * tls_record_prefix(r) into a record of type at rec, which has room for
 * tls_record_overhead(r) more.  The record's length, -EINVAL (n is too
 * large: nothing is sealed) or -EIO. */
long tls_record_seal(struct tls_record *r, struct tls_rec_crypto *cx, uint8_t type, uint8_t *rec,
                     size_t n);

/* The length of the record starting with these n >= TLS_REC_HEADER bytes:
 * -ENOMSG (a type not expected here), -EPROTO (not a record of this
 * connection), -EMSGSIZE (too long). */
long tls_record_length(const struct tls_record *r, const uint8_t *p);

/* Opens the whole record of len bytes at rec in place: *type, and its
 * plaintext at *plain.  0, -EBADMSG (authentication failed), -EMSGSIZE
 * (plaintext too long), -ENOMSG (no content type, or an outer type TLS
 * 1.3 does not protect), -EPROTO (malformed). */
int tls_record_open(struct tls_record *r, struct tls_rec_crypto *cx, uint8_t *rec, size_t len,
                    uint8_t *type, uint8_t **plain, size_t *plain_len);

/* TLS 1.3 KeyUpdate: the next traffic secret and keys of one direction. */
int tls_record_update(struct tls_record *r, struct tls_rec_crypto *cx, struct tls_rec_dir *d);

#endif
