/* peer_main.h - the start-up every libwebsockets peer shares (lws_echo.c,
 * lws_fanout.c): options, signals, the protocol table, the context on
 * 127.0.0.1 (TLS with --tls-cert/--tls-key: Debian's lws is built with
 * OpenSSL), the "listening on" line, the service loop.
 *
 * Why it exists: each peer is built alone, by one gcc line from one .c
 * file (bench/lib.sh, bench_prepare), so the shared part is a header of
 * static functions that the .c includes, and each peer keeps only its
 * protocol's callback.  The scripts read the port from the line printed
 * here. */
#ifndef PEER_MAIN_H
#define PEER_MAIN_H

#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t peer_interrupted;
static struct lws_context *peer_context;

static void peer_on_signal(int sig)
{
    (void)sig;
    peer_interrupted = 1;
    if (peer_context)
        lws_cancel_service(peer_context);
}

/* Serves one protocol (called PROTOCOL, with CALLBACK and SESSION bytes of
 * per-connection data) on 127.0.0.1 until SIGINT or SIGTERM,
 * single-threaded, on lws's default poll loop.  Takes [--port N] (0, the
 * default, picks a free port) and [--tls-cert FILE --tls-key FILE] (PEM:
 * the port then speaks TLS only, wss:// and https://, with lws's own TLS
 * settings) and prints "NAME listening on 127.0.0.1:PORT" once it accepts
 * connections.  With [--deflate] it accepts permessage-deflate through
 * lws's own extension (RFC 7692 with lws's defaults: a zlib stream per
 * direction per connection, context taken over), the comparison for
 * bench/deflate.py.  Returns main's exit status. */
static int peer_main(int argc, char **argv, const char *name, const char *protocol,
                     lws_callback_function *callback, size_t session)
{
    /* lws keeps a pointer to it: it lives until the context is destroyed. */
    const struct lws_protocols protocols[] = {
        {protocol, callback, session, 65536, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    static const struct lws_extension extensions[] = {
        {"permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate"},
        {NULL, NULL, NULL},
    };
    struct lws_context_creation_info info;
    struct lws_vhost *vh;
    int deflate = 0;
    const char *cert = NULL, *key = NULL;
    int port = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--tls-cert") && i + 1 < argc) {
            cert = argv[++i];
        } else if (!strcmp(argv[i], "--tls-key") && i + 1 < argc) {
            key = argv[++i];
        } else if (!strcmp(argv[i], "--deflate")) {
            deflate = 1;
        } else {
            fprintf(stderr, "usage: %s [--port N] [--tls-cert FILE --tls-key FILE] [--deflate]\n",
                    name);
            return 2;
        }
    }
    if (!cert != !key) {
        fprintf(stderr, "%s: --tls-cert and --tls-key go together\n", name);
        return 2;
    }
    signal(SIGINT, peer_on_signal);
    signal(SIGTERM, peer_on_signal);
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

    memset(&info, 0, sizeof info);
    info.port = port;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (deflate)
        info.extensions = extensions;
    if (cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cert;
        info.ssl_private_key_filepath = key;
    }
    peer_context = lws_create_context(&info);
    if (!peer_context) {
        fprintf(stderr, "%s: cannot create the context\n", name);
        return 1;
    }
    vh = lws_get_vhost_by_name(peer_context, "default");
    printf("%s listening on 127.0.0.1:%d\n", name, vh ? lws_get_vhost_listen_port(vh) : port);
    fflush(stdout);
    while (!peer_interrupted && lws_service(peer_context, 0) >= 0)
        ;
    lws_context_destroy(peer_context);
    return 0;
}

#endif
