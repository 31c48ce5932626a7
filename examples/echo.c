/* echo.c - the smallest ringws server: a WebSocket at /echo that sends
 * every message back as it came.  Usage: echo [PORT] (0, the default, picks
 * a free port); stops on SIGINT or SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringws.h>

static ringws_server *server;

static void on_signal(int sig)
{
    (void)sig;
    ringws_server_stop(server); /* async-signal-safe */
}

static void on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                       size_t len, void *user)
{
    (void)user;
    ringws_send(c, op, data, len); /* a failure closes the connection */
}

int main(int argc, char **argv)
{
    static const char *const paths[] = {"/echo"};
    struct sigaction sa = {.sa_handler = on_signal};
    struct ringws_config cfg;
    int ret;

    ringws_config_init(&cfg);
    cfg.port = argc > 1 ? (uint16_t)strtoul(argv[1], NULL, 10) : 0;
    cfg.ws_paths = paths;
    cfg.n_ws_paths = 1;
    cfg.cb.on_message = on_message;
    ret = ringws_server_create(&cfg, &server);
    if (ret < 0) {
        fprintf(stderr, "echo: %s\n", strerror(-ret));
        return 1;
    }
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ringws listening on %s:%u\n", cfg.bind, ringws_server_port(server));
    fflush(stdout);

    ret = ringws_server_run(server); /* until a signal stops it */
    signal(SIGINT, SIG_IGN);         /* no handler may reach a freed server */
    signal(SIGTERM, SIG_IGN);
    ringws_server_destroy(server);
    return ret < 0 ? 1 : 0;
}
