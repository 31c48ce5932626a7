/* fuzz_tls_record.c - arbitrary bytes where a client's records belong,
 * after a real handshake.
 *
 * Why it exists: once a handshake is over every byte a client sends goes
 * through tls_record_length and tls_record_open, in the receive buffer
 * itself, in whole records or in one cut across receives and kept.  At
 * start-up one real handshake per suite is made in memory (tls_pair.h).
 * The first byte of an input picks the suite (TLS 1.2 or 1.3, each AEAD)
 * and what the rest is: raw wire bytes, or a script of records that a
 * mirror of the client seals with the client's real keys (content types
 * valid and not, empty ones, KeyUpdates, one with a bit flipped).  The
 * stream is read once whole and once cut as TCP might cut it, by a reader
 * that keeps a split record the way the transport does: both readings must
 * agree record by record; a script's must give back what was sealed, read
 * as RFC 8446 section 5.4 says (the inner type is the last byte that is not
 * zero), and stop at its tampered record, which never opens. */
#include <errno.h>

#include <openssl/err.h>

#include "../unit/tls_pair.h"
#include "fuzz_common.h"
#include "tls_record.h"

#define KEY_UPDATE 24 /* the TLS 1.3 handshake message type */
#define SCRIPT_MAX_RECORDS 64

static const struct {
    int version;
    const char *suite;
} suites[] = {
    {TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256"},
    {TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384"},
    {TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256"},
};
#define N_SUITES (sizeof(suites) / sizeof(suites[0]))

static struct tls_rec_crypto *cx;
static struct tls_record server_side[N_SUITES], client_side[N_SUITES];

/* ---- start-up: one handshake per suite ------------------------------------- */

static void handshake(size_t i, SSL_CTX *sctx)
{
    SSL_CTX *cctx = tls_pair_client_ctx(suites[i].version, suites[i].suite);
    struct tls_pair tp;
    struct tls_record *mirror = &client_side[i];

    FUZZ_CHECK(cctx && tls_pair_connect(&tp, cctx, sctx, NULL) == 0 &&
                   tls_pair_record(&tp, &server_side[i], cx) == 0,
               "handshake of %s", suites[i].suite);
    /* The client seals with what the server opens with, and the reverse. */
    *mirror = server_side[i];
    mirror->rd = server_side[i].wr;
    mirror->wr = server_side[i].rd;
    tls_pair_free(&tp);
    SSL_CTX_free(cctx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    SSL_CTX *sctx;
    X509 *cert;
    EVP_PKEY *key;

    (void)argc, (void)argv;
    cx = tls_rec_crypto_new();
    FUZZ_CHECK(cx && tls_pair_cert("localhost", &cert, &key) == 0, "OpenSSL set-up");
    sctx = tls_pair_server_ctx(cert, key, 1);
    FUZZ_CHECK(sctx != NULL, "server context");
    for (size_t i = 0; i < N_SUITES; i++)
        handshake(i, sctx);
    SSL_CTX_free(sctx);
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return 0;
}

/* ---- the reader ------------------------------------------------------------ */

enum stage { OPENED, BAD_LENGTH, BAD_RECORD };

struct outcome {
    enum stage stage;
    int ret;
    uint8_t type;
    size_t len;
    uint64_t hash; /* of the plaintext */
};

struct log {
    struct outcome *o;
    size_t n, cap;
};

static void log_add(struct log *l, struct outcome o)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->o = realloc(l->o, l->cap * sizeof(*l->o));
        FUZZ_CHECK(l->o != NULL, "out of memory");
    }
    l->o[l->n++] = o;
}

/* A KeyUpdate, which moves the sender's key on after its record. */
static bool is_key_update(const struct tls_record *r, uint8_t type, const uint8_t *p, size_t n)
{
    return r->v13 && type == TLS_CT_HANDSHAKE && n == 5 && p[0] == KEY_UPDATE && !p[1] &&
           !p[2] && p[3] == 1 && p[4] <= 1;
}

/* What the transport does with the records of one connection: whole ones
 * opened where they lie, a split one kept until it is whole; the first
 * failure ends the connection. */
struct reader {
    struct tls_record r;
    uint8_t held[TLS_REC_WIRE_MAX];
    size_t held_len;
    bool failed;
    struct log log;
};

static void reader_open(struct reader *rd, uint8_t *rec, size_t len)
{
    uint8_t type = 0, *p = NULL;
    size_t n = 0;
    int ret = tls_record_open(&rd->r, cx, rec, len, &type, &p, &n);

    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG || ret == -EPROTO || ret == -EMSGSIZE || ret == -ENOMSG,
                   "open: %d", ret);
        log_add(&rd->log, (struct outcome){BAD_RECORD, ret, 0, 0, 0});
        rd->failed = true;
        return;
    }
    FUZZ_CHECK(p >= rec + tls_record_prefix(&rd->r) && p + n <= rec + len - 16 &&
                   n <= TLS_REC_PLAIN_MAX,
               "plaintext of %zu bytes at %td in a record of %zu", n, p - rec, len);
    log_add(&rd->log, (struct outcome){OPENED, 0, type, n, fuzz_hash(p, n, 0)});
    if (is_key_update(&rd->r, type, p, n))
        FUZZ_CHECK(tls_record_update(&rd->r, cx, &rd->r.rd) == 0, "KeyUpdate");
}

/* The length of the record starting at p, or the failure logged. */
static long reader_length(struct reader *rd, const uint8_t *p)
{
    long len = tls_record_length(&rd->r, p);

    if (len < 0) {
        FUZZ_CHECK(len == -EPROTO || len == -EMSGSIZE || len == -ENOMSG, "length: %ld", len);
        log_add(&rd->log, (struct outcome){BAD_LENGTH, (int)len, 0, 0, 0});
        rd->failed = true;
    } else {
        FUZZ_CHECK(len > TLS_REC_HEADER && (size_t)len <= TLS_REC_WIRE_MAX, "length %ld", len);
    }
    return len;
}

/* Completes the kept record with the start of in; the bytes it took. */
static size_t reader_complete(struct reader *rd, const uint8_t *in, size_t n)
{
    size_t took = 0, k;
    long len;
    uint8_t *whole;

    k = TLS_REC_HEADER > rd->held_len ? TLS_REC_HEADER - rd->held_len : 0;
    k = k < n ? k : n;
    memcpy(rd->held + rd->held_len, in, k);
    rd->held_len += k;
    took += k;
    if (rd->held_len < TLS_REC_HEADER)
        return took;
    len = reader_length(rd, rd->held);
    if (len < 0)
        return took;
    k = (size_t)len - rd->held_len < n - took ? (size_t)len - rd->held_len : n - took;
    memcpy(rd->held + rd->held_len, in + took, k);
    rd->held_len += k;
    took += k;
    if (rd->held_len < (size_t)len)
        return took;
    whole = fuzz_dup(rd->held, (size_t)len); /* a read past it faults */
    rd->held_len = 0;
    reader_open(rd, whole, (size_t)len);
    free(whole);
    return took;
}

/* One receive: in is a block of exactly n bytes, opened in place. */
static void reader_feed(struct reader *rd, uint8_t *in, size_t n)
{
    if (rd->failed)
        return;
    if (rd->held_len) {
        size_t took = reader_complete(rd, in, n);
        in += took;
        n -= took;
        if (rd->held_len || rd->failed)
            return;
    }
    while (n >= TLS_REC_HEADER) {
        long len = reader_length(rd, in);
        if (len < 0)
            return;
        if ((size_t)len > n)
            break;
        reader_open(rd, in, (size_t)len);
        if (rd->failed)
            return;
        in += len;
        n -= (size_t)len;
    }
    memcpy(rd->held, in, n);
    rd->held_len = n;
}

/* ---- scripts: records sealed as the client would ------------------------- */

struct script {
    uint8_t *wire;
    size_t len, cap;
    struct log want;  /* the records before the tampered one */
    bool tampered;    /* the last record has a bit flipped */
};

static uint8_t *script_room(struct script *s, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = 2 * (s->len + n);
        s->wire = realloc(s->wire, s->cap);
        FUZZ_CHECK(s->wire != NULL, "out of memory");
    }
    return s->wire + s->len;
}

/* What the server reads from a record sealed with this type and content:
 * TLS 1.3 hides the type as the last byte that is not zero (the content
 * may end in zeros too); TLS 1.2 refuses types it does not know by their
 * header. */
static struct outcome reference(bool v13, uint8_t type, const uint8_t *p, size_t n)
{
    if (!v13)
        return type >= TLS_CT_CHANGE_CIPHER_SPEC && type <= TLS_CT_APPLICATION_DATA
                   ? (struct outcome){OPENED, 0, type, n, fuzz_hash(p, n, 0)}
                   : (struct outcome){BAD_LENGTH, -ENOMSG, 0, 0, 0};
    if (type)
        return (struct outcome){OPENED, 0, type, n, fuzz_hash(p, n, 0)};
    while (n && !p[n - 1])
        n--;
    if (!n)
        return (struct outcome){BAD_RECORD, -ENOMSG, 0, 0, 0};
    return (struct outcome){OPENED, 0, p[n - 1], n - 1, fuzz_hash(p, n - 1, 0)};
}

/* Items of three bytes, then the content: ctl, length (16 bits, cut to
 * what the input has).  ctl & 7: the type (0 and out-of-range ones
 * among them); & 8: flip a bit (the last record); & 16: a KeyUpdate
 * (the length bytes then ask for an update and give the bit to flip). */
static void script_build(struct script *s, struct tls_record *client, const uint8_t *p,
                         size_t n)
{
    static const uint8_t types[8] = {23, 23, 22, 21, 20, 0, 24, 255};
    size_t prefix = tls_record_prefix(client);

    while (n >= 3 && !s->tampered && s->want.n < SCRIPT_MAX_RECORDS) {
        uint8_t ctl = p[0], type = types[ctl & 7];
        size_t len = (size_t)p[1] << 8 | p[2], bit = len;
        uint8_t key_update[5] = {KEY_UPDATE, 0, 0, 1, p[2] & 1};
        const uint8_t *content = p + 3;
        uint8_t *rec;
        struct outcome o;
        long rl;

        p += 3;
        n -= 3;
        if (ctl & 16) {
            type = TLS_CT_HANDSHAKE;
            content = key_update;
            len = sizeof(key_update);
        } else {
            len %= TLS_REC_PLAIN_MAX + 1;
            len = len < n ? len : n;
            p += len;
            n -= len;
        }
        rec = script_room(s, len + tls_record_overhead(client));
        memcpy(rec + prefix, content, len);
        o = reference(client->v13, type, content, len);
        rl = tls_record_seal(client, cx, type, rec, len);
        FUZZ_CHECK(rl == (long)(len + tls_record_overhead(client)), "sealed %ld", rl);
        s->len += (size_t)rl;
        if (ctl & 8) {
            bit %= 8 * (size_t)rl;
            rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            /* TLS 1.2 authenticates neither the header's version (the
             * length check refuses it) nor its length (the framing moves:
             * the record fails or stays incomplete). */
            s->tampered = true;
            return;
        }
        log_add(&s->want, o);
        if (o.stage != OPENED)
            return;
        if (is_key_update(client, o.type, content, o.len))
            FUZZ_CHECK(tls_record_update(client, cx, &client->wr) == 0, "KeyUpdate");
    }
}

/* ---- the target ------------------------------------------------------------- */

static void read_whole(struct reader *rd, const uint8_t *wire, size_t n)
{
    uint8_t *in = fuzz_dup(wire, n);

    reader_feed(rd, in, n);
    free(in);
}

static void read_cut(struct reader *rd, const uint8_t *wire, size_t n)
{
    struct fuzz_rng rng = {fuzz_hash(wire, n, 7)};

    for (size_t at = 0; at < n;) {
        size_t k = fuzz_cut(&rng);
        uint8_t *in;
        k = k < n - at ? k : n - at;
        in = fuzz_dup(wire + at, k);
        reader_feed(rd, in, k);
        free(in);
        at += k;
    }
}

static bool same_outcome(const struct outcome *a, const struct outcome *b)
{
    return a->stage == b->stage && a->ret == b->ret && a->type == b->type && a->len == b->len &&
           a->hash == b->hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct reader whole, cut;
    struct script s = {0};
    size_t suite;
    bool scripted;

    if (size < 1)
        return 0;
    suite = data[0] % N_SUITES;
    scripted = (data[0] / N_SUITES) & 1;
    if (scripted) {
        struct tls_record client = client_side[suite];
        script_build(&s, &client, data + 1, size - 1);
    } else {
        s.wire = fuzz_dup(data + 1, size - 1);
        s.len = size - 1;
    }
    whole = (struct reader){.r = server_side[suite]};
    cut = (struct reader){.r = server_side[suite]};
    read_whole(&whole, s.wire, s.len);
    read_cut(&cut, s.wire, s.len);

    FUZZ_CHECK(whole.log.n == cut.log.n && whole.failed == cut.failed &&
                   (whole.failed || whole.held_len == cut.held_len),
               "whole: %zu records, failed %d, %zu kept; cut: %zu, %d, %zu", whole.log.n,
               whole.failed, whole.held_len, cut.log.n, cut.failed, cut.held_len);
    for (size_t i = 0; i < whole.log.n; i++)
        FUZZ_CHECK(same_outcome(&whole.log.o[i], &cut.log.o[i]),
                   "record %zu: whole %d/%d, cut %d/%d", i, whole.log.o[i].stage,
                   whole.log.o[i].ret, cut.log.o[i].stage, cut.log.o[i].ret);
    if (scripted) {
        size_t n = s.want.n;
        FUZZ_CHECK(whole.log.n == n || (s.tampered && whole.log.n == n + 1),
                   "%zu records read, %zu sealed", whole.log.n, n);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(same_outcome(&whole.log.o[i], &s.want.o[i]),
                       "record %zu: %d/%d type %u, %zu bytes; sealed %d/%d type %u, %zu bytes",
                       i, whole.log.o[i].stage, whole.log.o[i].ret, whole.log.o[i].type,
                       whole.log.o[i].len, s.want.o[i].stage, s.want.o[i].ret,
                       s.want.o[i].type, s.want.o[i].len);
        FUZZ_CHECK(whole.log.n == n || whole.log.o[n].stage != OPENED,
                   "a tampered record opened");
    }
    free(whole.log.o);
    free(cut.log.o);
    free(s.want.o);
    free(s.wire);
    return 0;
}
