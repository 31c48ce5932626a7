/* fuzz_tls_handshake.c - arbitrary bytes where a ClientHello belongs.
 *
 * Why it exists: the first bytes of a TLS connection come from anyone, and
 * OpenSSL reads them under the server's own policy and callbacks
 * (tls_context.c: the certificate chosen by SNI among several, ALPN, the
 * session ticket keys, the key log the record layer takes its secrets
 * from).  The server's own code builds its certificates at start-up, from
 * two made here and written to a scratch directory for as long as it reads
 * them: a default one and a wildcard one.  Each input is fed, cut as TCP
 * might cut it, to a fresh server SSL of that set.  What the server answers
 * must be whole records; the certificate it chose must be the one the name
 * asked for selects; ALPN, when chosen, is http/1.1; the key log holds
 * secrets of a hash's length; and the handshake never completes (no input
 * knows the secret of the server's key exchange). */
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "../unit/tls_pair.h"
#include "fuzz_common.h"
#include "ringws.h"
#include "tls.h"
#include "tls_record.h"

#define WILDCARD_SUFFIX ".example.test"

static struct tls_server *ts;
static struct tls_certs *certs;

/* ---- start-up: the server's certificate set -------------------------------- */

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "w");

    FUZZ_CHECK(f != NULL, "cannot write %s", path);
    FUZZ_CHECK(cert ? PEM_write_X509(f, cert) == 1
                    : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1,
               "PEM %s", path);
    FUZZ_CHECK(fclose(f) == 0, "cannot write %s", path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const names[2] = {"localhost", "*" WILDCARD_SUFFIX};
    static char dir[] = "/tmp/ringws-fuzz-tls-XXXXXX", paths[4][sizeof(dir) + 16];
    static struct ringws_tls_cert files[2];
    struct ringws_config cfg = {0};
    unsigned generation;

    (void)argc, (void)argv;
    FUZZ_CHECK(mkdtemp(dir) != NULL, "scratch directory");
    for (int i = 0; i < 2; i++) {
        X509 *cert;
        EVP_PKEY *key;
        FUZZ_CHECK(tls_pair_cert(names[i], &cert, &key) == 0, "certificate");
        snprintf(paths[2 * i], sizeof(paths[0]), "%s/cert%d.pem", dir, i);
        snprintf(paths[2 * i + 1], sizeof(paths[0]), "%s/key%d.pem", dir, i);
        write_pem(paths[2 * i], cert, NULL);
        write_pem(paths[2 * i + 1], NULL, key);
        files[i] = (struct ringws_tls_cert){paths[2 * i], paths[2 * i + 1]};
        X509_free(cert);
        EVP_PKEY_free(key);
    }
    cfg.tls_certs = files;
    cfg.n_tls_certs = 2;
    FUZZ_CHECK(tls_server_create(&ts, &cfg) == 0, "tls_server_create");
    /* Both live as long as the process: the set's contexts call back into
     * the server for its ticket keys. */
    certs = tls_certs_take(ts, &generation);
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    rmdir(dir);
    return 0;
}

/* ---- what the server answered ---------------------------------------------- */

/* Whole records of the types a TLS server writes. */
static void check_output(BIO *out, bool *hello)
{
    char *p;
    long n = BIO_get_mem_data(out, &p);
    const uint8_t *u = (const uint8_t *)p;

    while (n > 0) {
        size_t len;
        FUZZ_CHECK(n >= TLS_REC_HEADER, "%ld bytes of a header", n);
        len = (size_t)u[3] << 8 | u[4];
        /* The version is not checked: an alert about a ClientHello's
         * version may carry that version. */
        FUZZ_CHECK(u[0] >= TLS_CT_CHANGE_CIPHER_SPEC && u[0] <= TLS_CT_APPLICATION_DATA &&
                       len <= TLS_REC_PLAIN_MAX + 256,
                   "record of type %u, %zu bytes", u[0], len);
        FUZZ_CHECK((size_t)n >= TLS_REC_HEADER + len, "a record cut short");
        *hello |= u[0] == TLS_CT_HANDSHAKE; /* a ServerHello: the ClientHello was read */
        u += TLS_REC_HEADER + len;
        n -= (long)(TLS_REC_HEADER + len);
    }
    (void)BIO_reset(out);
}

/* The certificate tls_context.c's SNI must have chosen: the wildcard one
 * for one label before its suffix, else the default. */
static void check_certificate(SSL *ssl)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    size_t len = name ? strlen(name) : 0, suffix = strlen(WILDCARD_SUFFIX);
    bool wildcard = len > suffix && !strcasecmp(name + len - suffix, WILDCARD_SUFFIX) &&
                    !memchr(name, '.', len - suffix);
    X509 *cert = SSL_get_certificate(ssl);
    char cn[64] = "";

    FUZZ_CHECK(cert != NULL, "no certificate");
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    FUZZ_CHECK(!strcmp(cn, wildcard ? "*" WILDCARD_SUFFIX : "localhost"),
               "name \"%s\" got the certificate of %s", name ? name : "", cn);
}

static void check_state(SSL *ssl, const struct tls_rec_secrets *s, bool hello)
{
    const unsigned char *alpn;
    unsigned alpn_len;

    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    FUZZ_CHECK(alpn_len == 0 || (alpn_len == 8 && !memcmp(alpn, "http/1.1", 8)),
               "ALPN %.*s chosen", (int)alpn_len, alpn);
    FUZZ_CHECK((s->client_len == 0 || s->client_len == 32 || s->client_len == 48) &&
                   (s->server_len == 0 || s->server_len == 32 || s->server_len == 48) &&
                   (!s->client_len || !s->server_len || s->client_len == s->server_len),
               "key log: secrets of %u and %u bytes", s->client_len, s->server_len);
    if (hello)
        check_certificate(ssl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SSL *ssl = tls_certs_new_ssl(certs);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    struct tls_rec_secrets secrets = {0};
    struct fuzz_rng rng = {fuzz_hash(data, size, 3)};
    bool hello = false;

    FUZZ_CHECK(ssl && in && out, "out of memory");
    SSL_set_bio(ssl, in, out);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, &secrets);
    for (size_t at = 0; at < size;) {
        size_t k = fuzz_cut(&rng);
        int r, err;
        k = k < size - at ? k : size - at;
        FUZZ_CHECK(BIO_write(in, data + at, (int)k) == (int)k, "out of memory");
        at += k;
        r = SSL_do_handshake(ssl);
        FUZZ_CHECK(r != 1, "a handshake completed");
        err = SSL_get_error(ssl, r);
        check_output(out, &hello);
        if (err != SSL_ERROR_WANT_READ) {
            FUZZ_CHECK(err == SSL_ERROR_SSL, "SSL_get_error %d", err);
            break;
        }
    }
    check_state(ssl, &secrets, hello);
    SSL_free(ssl);
    ERR_clear_error();
    return 0;
}
