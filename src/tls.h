/* tls.h - TLS for the server: what all its connections share
 * (tls_context.c) and the transport that seals each one's bytes
 * (transport_tls.c).
 *
 * Why it exists: the server (server.c) loads and reloads certificates, the
 * worker (worker.c) keeps the set it hands to new connections and gives the
 * transport its turn, and the connection layer only ever sees a
 * transport_ops table; this is the whole of what they know of OpenSSL. */
#ifndef RINGWS_TLS_H
#define RINGWS_TLS_H

#include <stdbool.h>
#include <stdint.h>

#include "ringws.h"
#include "transport.h"

struct tls_server;
struct tls_certs;
struct worker;

/* ---- tls_context.c: shared by every worker ----------------------------- */

/* Loads every certificate and key of cfg->tls_certs.  0, -EIO (a file is
 * missing or bad: logged, with OpenSSL's reason) or -ENOMEM.  The server
 * must outlive every set taken from it (its contexts reach the ticket
 * keys). */
int tls_server_create(struct tls_server **out, const struct ringws_config *cfg);
void tls_server_destroy(struct tls_server *ts);
/* Loads the files again and makes them current; on any error the current
 * set stays (logged).  0, -EIO or -ENOMEM. */
int tls_server_reload(struct tls_server *ts);
/* The number of the current set: changes with each reload. */
unsigned tls_server_generation(const struct tls_server *ts);
/* A reference to the current set and its number (a lock, taken once per
 * worker per reload, not per connection). */
struct tls_certs *tls_certs_take(struct tls_server *ts, unsigned *generation);
/* Another reference to a set the caller holds. */
void tls_certs_hold(struct tls_certs *certs);
void tls_certs_put(struct tls_certs *certs);
/* A new server-side SSL on the set's default certificate (SNI may move it
 * to another of the set); it holds no reference of its own to the set:
 * the caller keeps one until the handshake is over.  NULL on failure. */
struct ssl_st *tls_certs_new_ssl(struct tls_certs *certs);

/* ---- transport_tls.c: one worker's TLS connections --------------------- */

/* The transport of connections accepted on the TLS listener. */
extern const struct transport_ops transport_tls;

/* Per worker, from its own thread.  0 or -ENOMEM. */
int tls_worker_init(struct worker *w);
void tls_worker_fini(struct worker *w);
/* Once per loop turn, before the flush step: resumes handshakes the last
 * turn put off, within the handshake budget. */
void tls_worker_turn(struct worker *w);
/* Whether handshakes wait for the next turn (the loop must not block). */
bool tls_worker_deferred(const struct worker *w);

#endif
