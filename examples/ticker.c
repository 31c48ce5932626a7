/* ticker.c - publishing from a thread of the application's own: the thread
 * publishes "tick N" (N = 1, 2, 3...) to the topic "ticks" every INTERVAL
 * milliseconds (default 100); clients subscribe through the built-in
 * pub/sub path, ws://HOST:PORT/ws?topics=ticks.  With ENGINE
 * (redis://HOST:PORT[,...], docs/CLUSTER.md) the ticks reach the
 * subscribers of every node sharing that Redis.
 * Usage: ticker [PORT [INTERVAL [ENGINE]]]; stops on SIGINT or SIGTERM. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringws.h>

static ringws_server *server;
static atomic_bool stopping;

static void on_signal(int sig)
{
    (void)sig;
    ringws_server_stop(server);
}

static void *ticker_main(void *arg)
{
    unsigned ms = *(const unsigned *)arg;
    struct timespec next;
    unsigned long n = 1;
    char msg[32];
    int len, ret;

    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!atomic_load(&stopping)) {
        next.tv_nsec += (long)(ms % 1000) * 1000000;
        next.tv_sec += ms / 1000 + next.tv_nsec / 1000000000;
        next.tv_nsec %= 1000000000;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        /* Callable from any thread.  -EAGAIN (the workers' inboxes are
         * full) tries again at the next tick: subscribers see no gaps. */
        len = snprintf(msg, sizeof(msg), "tick %lu", n);
        ret = ringws_publish(server, "ticks", msg, (size_t)len, 0);
        if (ret == 0)
            n++;
        else if (ret != -EAGAIN)
            break; /* -ESHUTDOWN: the server is stopping */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct ringws_config cfg;
    unsigned ms = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 100;
    pthread_t ticker;
    int ret;

    ringws_config_init(&cfg);
    cfg.port = argc > 1 ? (uint16_t)strtoul(argv[1], NULL, 10) : 0;
    cfg.pubsub_path = "/ws";
    cfg.engine = argc > 3 ? argv[3] : NULL;
    ret = ringws_server_create(&cfg, &server);
    if (ret < 0) {
        fprintf(stderr, "ticker: %s\n", strerror(-ret));
        return 1;
    }
    ret = -pthread_create(&ticker, NULL, ticker_main, &ms);
    if (ret < 0) {
        fprintf(stderr, "ticker: %s\n", strerror(-ret));
        ringws_server_destroy(server);
        return 1;
    }
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ringws listening on %s:%u\n", cfg.bind, ringws_server_port(server));
    fflush(stdout);

    ret = ringws_server_run(server); /* until a signal stops it */
    atomic_store(&stopping, true);
    pthread_join(ticker, NULL);
    signal(SIGINT, SIG_IGN); /* no handler may reach a freed server */
    signal(SIGTERM, SIG_IGN);
    ringws_server_destroy(server);
    return ret < 0 ? 1 : 0;
}
