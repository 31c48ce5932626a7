/* tls_context.c - what every TLS connection of the server shares: the
 * certificates (an SSL_CTX each: the first is the default, the others are
 * chosen by the name the client asks for), the protocol policy, and the
 * keys that seal session tickets.
 *
 * Why it exists: certificates are read at start and again on reload, by a
 * thread that is not a worker, while workers go on handing the current set
 * to new connections.  A set is reference counted: the server holds the
 * current one, each worker the one it hands out, each connection the one
 * it was accepted with until its handshake is over; a reload replaces the
 * server's, and each worker moves to the new set at its next accept.  The
 * lock below is taken by a reload and by each worker once per reload,
 * never per connection.
 *
 * Session tickets are stateless (no session cache): a ticket carries its
 * session sealed with a key of the process, so a worker resumes a session
 * any worker issued.  The key changes every ticket lifetime; tickets
 * sealed by the previous one are still opened, and replaced. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "timer.h"
#include "tls.h"
#include "tls_record.h"

#define TLS_TICKET_LIFETIME_DEFAULT 7200u
/* TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3's are all such). */
#define TLS_CIPHERS_12 "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS_GROUPS "X25519:P-256:P-384"
/* Tickets per full TLS 1.3 handshake: clients use each once, and one that
 * opens its next connections before the last one's ticket has come (a
 * browser's several) resumes only with a spare (a resumed handshake brings
 * one new ticket). */
#define TLS_TICKETS 2

struct tls_cert_entry {
    SSL_CTX *ctx;
    char **names;     /* the certificate's DNS names (lower case) */
    size_t n_names;
};

struct tls_certs {
    _Atomic unsigned refs;
    size_t n;
    struct tls_cert_entry e[]; /* e[0]: the default */
};

struct tls_ticket_key {
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
};

struct tls_server {
    pthread_mutex_t lock;           /* current, and the moves to it */
    struct tls_certs *current;
    _Atomic unsigned generation;
    const struct ringws_tls_cert *files;
    size_t n_files;
    unsigned lifetime_s;
    pthread_mutex_t ticket_lock;    /* the keys, in each ticket seal and open */
    struct tls_ticket_key keys[2];  /* [0] seals and opens, [1] only opens */
    bool have_previous;
    uint64_t key_born_s;
};

/* ---- errors ------------------------------------------------------------ */

/* Logs what OpenSSL says went wrong with a file (and clears its queue). */
static void tls_log_error(const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char why[256] = "unknown error";

    if (e)
        ERR_error_string_n(e, why, sizeof(why));
    ERR_clear_error();
    log_msg(LOG_LEVEL_ERROR, "TLS: %s %s: %s", what, file, why);
}

/* ---- session tickets --------------------------------------------------- */

static int tls_ticket_key_make(struct tls_ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -EIO;
}

/* Under ticket_lock: a key older than a lifetime becomes the previous one;
 * one older than two is of no use any more (the sessions it sealed have
 * expired). */
static int tls_tickets_rotate(struct tls_server *ts)
{
    uint64_t now = timer_now_ms() / 1000;
    struct tls_ticket_key fresh;

    if (now - ts->key_born_s < ts->lifetime_s)
        return 0;
    if (tls_ticket_key_make(&fresh) < 0)
        return -EIO;
    ts->have_previous = now - ts->key_born_s < 2ull * ts->lifetime_s;
    ts->keys[1] = ts->keys[0];
    ts->keys[0] = fresh;
    ts->key_born_s = now;
    OPENSSL_cleanse(&fresh, sizeof(fresh));
    return 0;
}

static int tls_ticket_mac_init(EVP_MAC_CTX *hctx, uint8_t *hmac_key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac_key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };

    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket key callback: enc 1 seals a new ticket with the current
 * key; enc 0 opens one: 2 (open it, and issue a new ticket), 0 (unknown or
 * expired key: full handshake) or 1 (open it, no new ticket).  A TLS 1.3
 * resumption always gets a new ticket: clients use each ticket once, and
 * without a new one (OpenSSL sends none when the callback says 1) every
 * other reconnect of a client would be a full handshake.  TLS 1.2 tickets
 * are reused as they are, and replaced only when sealed by the previous
 * key (a renewed TLS 1.2 ticket is one OpenSSL's client does not resume
 * from: measured, every other reconnect a full handshake). */
static int tls_ticket_cb(SSL *ssl, unsigned char *key_name, unsigned char *iv,
                         EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server *ts = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct tls_ticket_key k;
    int found = 0, ret = -1;

    pthread_mutex_lock(&ts->ticket_lock);
    if (tls_tickets_rotate(ts) == 0) {
        if (enc) {
            k = ts->keys[0];
            found = 1;
        } else if (!memcmp(key_name, ts->keys[0].name, 16)) {
            k = ts->keys[0];
            found = SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
        } else if (ts->have_previous && !memcmp(key_name, ts->keys[1].name, 16)) {
            k = ts->keys[1];
            found = 2;
        }
    }
    pthread_mutex_unlock(&ts->ticket_lock);
    if (enc && found) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) == 1 &&
            EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
            tls_ticket_mac_init(hctx, k.hmac) == 0)
            ret = 1;
    } else if (!enc) {
        ret = 0;
        if (found && EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
            tls_ticket_mac_init(hctx, k.hmac) == 0)
            ret = found;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    return ret;
}

/* ---- names and protocols ----------------------------------------------- */

/* A DNS name of a certificate, or a wildcard "*.example.com" (one label),
 * against the name a client asked for. */
static bool tls_name_matches(const char *pattern, const char *name)
{
    const char *dot;

    if (!strcasecmp(pattern, name))
        return true;
    if (pattern[0] != '*' || pattern[1] != '.')
        return false;
    dot = strchr(name, '.');
    return dot && dot != name && !strcasecmp(pattern + 1, dot);
}

static const struct tls_cert_entry *tls_certs_find(const struct tls_certs *certs,
                                                   const char *name)
{
    for (size_t i = 0; i < certs->n; i++)
        for (size_t j = 0; j < certs->e[i].n_names; j++)
            if (tls_name_matches(certs->e[i].names[j], name))
                return &certs->e[i];
    return NULL;
}

/* SNI: the certificate whose names cover the one asked for; the default
 * when none does (the client judges the certificate it gets). */
static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_certs *certs = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_cert_entry *e;

    (void)alert;
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    e = tls_certs_find(certs, name);
    if (e && e->ctx != SSL_get_SSL_CTX(ssl) && !SSL_set_SSL_CTX(ssl, e->ctx))
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* ALPN: this server speaks HTTP/1.1 (and WebSocket through it) only; a
 * client that offers protocols without it is refused
 * (no_application_protocol, RFC 7301 section 3.2). */
static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, http11, sizeof(http11) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- one certificate --------------------------------------------------- */

static int tls_names_add(struct tls_cert_entry *e, const unsigned char *s, int len)
{
    char **grown, *name;

    if (len <= 0 || memchr(s, '\0', (size_t)len))
        return 0; /* not a name a client can ask for */
    grown = realloc(e->names, (e->n_names + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    e->names = grown;
    name = strndup((const char *)s, (size_t)len);
    if (!name)
        return -ENOMEM;
    e->names[e->n_names++] = name;
    return 0;
}

/* The DNS names of the certificate (its common name when it has none). */
static int tls_names_collect(struct tls_cert_entry *e)
{
    X509 *x = SSL_CTX_get0_certificate(e->ctx);
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int ret = 0;

    for (int i = 0; sans && ret == 0 && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS)
            ret = tls_names_add(e, ASN1_STRING_get0_data(g->d.dNSName),
                                ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    if (ret == 0 && !e->n_names) {
        X509_NAME *subj = X509_get_subject_name(x);
        int at = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (at >= 0) {
            ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, at));
            ret = tls_names_add(e, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
        }
    }
    return ret;
}

/* TLS 1.2 and 1.3, AEAD suites with forward secrecy, no compression, no
 * renegotiation, no 0-RTT (OpenSSL's default: max_early_data 0), tickets
 * without a session cache, buffers released while a connection idles. */
static int tls_ctx_policy(SSL_CTX *ctx, struct tls_server *ts)
{
    uint64_t opts = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE;
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
    opts |= SSL_OP_NO_CLIENT_RENEGOTIATION;
#endif
    static const unsigned char sid_ctx[] = "ringws";

    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1 ||
        SSL_CTX_set_num_tickets(ctx, TLS_TICKETS) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb) != 1)
        return -EIO;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, (long)ts->lifetime_s);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
    /* The traffic secrets reach the record layer this way (tls_record.h). */
    SSL_CTX_set_keylog_callback(ctx, tls_rec_keylog);
    SSL_CTX_set_app_data(ctx, ts);
    return 0;
}

static int tls_entry_load(struct tls_server *ts, struct tls_cert_entry *e,
                          const struct ringws_tls_cert *f)
{
    e->ctx = SSL_CTX_new(TLS_server_method());
    if (!e->ctx || tls_ctx_policy(e->ctx, ts) < 0) {
        tls_log_error("cannot set up for", f->cert_file);
        return -EIO;
    }
    if (SSL_CTX_use_certificate_chain_file(e->ctx, f->cert_file) != 1) {
        tls_log_error("cannot load certificate", f->cert_file);
        return -EIO;
    }
    if (SSL_CTX_use_PrivateKey_file(e->ctx, f->key_file, SSL_FILETYPE_PEM) != 1) {
        tls_log_error("cannot load key", f->key_file);
        return -EIO;
    }
    if (SSL_CTX_check_private_key(e->ctx) != 1) {
        tls_log_error("key does not match certificate", f->cert_file);
        return -EIO;
    }
    return tls_names_collect(e);
}

/* ---- sets of certificates ---------------------------------------------- */

static void tls_certs_free(struct tls_certs *certs)
{
    for (size_t i = 0; i < certs->n; i++) {
        SSL_CTX_free(certs->e[i].ctx);
        for (size_t j = 0; j < certs->e[i].n_names; j++)
            free(certs->e[i].names[j]);
        free(certs->e[i].names);
    }
    free(certs);
}

static int tls_certs_load(struct tls_server *ts, struct tls_certs **out)
{
    struct tls_certs *certs = calloc(1, sizeof(*certs) + ts->n_files * sizeof(certs->e[0]));
    int ret = 0;

    if (!certs)
        return -ENOMEM;
    atomic_init(&certs->refs, 1);
    for (size_t i = 0; ret == 0 && i < ts->n_files; i++) {
        certs->n = i + 1;
        ret = tls_entry_load(ts, &certs->e[i], &ts->files[i]);
        if (ret == 0)
            SSL_CTX_set_tlsext_servername_callback(certs->e[i].ctx, tls_sni_cb);
        if (ret == 0)
            SSL_CTX_set_tlsext_servername_arg(certs->e[i].ctx, certs);
    }
    if (ret < 0) {
        tls_certs_free(certs);
        return ret;
    }
    *out = certs;
    return 0;
}

void tls_certs_hold(struct tls_certs *certs)
{
    atomic_fetch_add_explicit(&certs->refs, 1, memory_order_relaxed);
}

void tls_certs_put(struct tls_certs *certs)
{
    if (certs && atomic_fetch_sub_explicit(&certs->refs, 1, memory_order_acq_rel) == 1)
        tls_certs_free(certs);
}

struct tls_certs *tls_certs_take(struct tls_server *ts, unsigned *generation)
{
    struct tls_certs *certs;

    pthread_mutex_lock(&ts->lock);
    certs = ts->current;
    tls_certs_hold(certs);
    *generation = atomic_load_explicit(&ts->generation, memory_order_relaxed);
    pthread_mutex_unlock(&ts->lock);
    return certs;
}

unsigned tls_server_generation(const struct tls_server *ts)
{
    return atomic_load_explicit(&ts->generation, memory_order_relaxed);
}

SSL *tls_certs_new_ssl(struct tls_certs *certs)
{
    return SSL_new(certs->e[0].ctx);
}

/* ---- the server's TLS -------------------------------------------------- */

int tls_server_create(struct tls_server **out, const struct ringws_config *cfg)
{
    struct tls_server *ts = calloc(1, sizeof(*ts));
    int ret;

    if (!ts)
        return -ENOMEM;
    pthread_mutex_init(&ts->lock, NULL);
    pthread_mutex_init(&ts->ticket_lock, NULL);
    ts->files = cfg->tls_certs;
    ts->n_files = cfg->n_tls_certs;
    ts->lifetime_s = cfg->tls_ticket_lifetime_s ? cfg->tls_ticket_lifetime_s
                                                : TLS_TICKET_LIFETIME_DEFAULT;
    ts->key_born_s = timer_now_ms() / 1000;
    ret = tls_ticket_key_make(&ts->keys[0]);
    if (ret == 0)
        ret = tls_certs_load(ts, &ts->current);
    if (ret < 0) {
        tls_server_destroy(ts);
        return ret;
    }
    *out = ts;
    return 0;
}

void tls_server_destroy(struct tls_server *ts)
{
    if (!ts)
        return;
    tls_certs_put(ts->current);
    pthread_mutex_destroy(&ts->lock);
    pthread_mutex_destroy(&ts->ticket_lock);
    OPENSSL_cleanse(ts->keys, sizeof(ts->keys));
    free(ts);
}

int tls_server_reload(struct tls_server *ts)
{
    struct tls_certs *fresh, *old;
    int ret = tls_certs_load(ts, &fresh);

    if (ret < 0) {
        log_msg(LOG_LEVEL_WARN, "TLS reload failed (%s): the certificates in use stay",
                strerror(-ret));
        return ret;
    }
    pthread_mutex_lock(&ts->lock);
    old = ts->current;
    ts->current = fresh;
    atomic_fetch_add_explicit(&ts->generation, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ts->lock);
    tls_certs_put(old);
    log_msg(LOG_LEVEL_INFO, "TLS certificates reloaded (%zu)", ts->n_files);
    return 0;
}
