/* test_engine_handover.c - ringws_publish from an application's thread with
 * the Redis engine, against a real redis-server (Debian's
 * /usr/bin/redis-server, started here on a free loopback port in a private
 * directory).
 *
 * Why it exists: such a publish is handed to the topic's worker, which
 * sends it to Redis when it runs; a worker held up (a slow Redis, a long
 * callback) must not let the handed-over publishes pile up without bound.
 * Checked: while the only worker is held in a callback, publishes are
 * taken up to max_inbox_bytes and refused with -EAGAIN past it; once it
 * runs again every one taken is published (the topic's last offset in
 * Redis counts them) and publishes are taken again. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <ringws.h>

#include "check.h"
#include "port_clock.h"

extern char **environ;

#define INBOX (64u << 10)

static char dir[] = "/tmp/test_engine_handover.XXXXXX";
static char port_s[16];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool held, release;

/* Holds the worker until the test releases it. */
static int on_http(ringws_server *srv, const struct ringws_request *req,
                   struct ringws_response *res, void *user)
{
    (void)srv;
    (void)req;
    (void)user;
    pthread_mutex_lock(&mu);
    held = true;
    pthread_cond_broadcast(&cv);
    while (!release)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    res->status = 200;
    return RINGWS_HTTP_HANDLED;
}

static void *server_thread(void *arg)
{
    return (void *)(intptr_t)ringws_server_run(arg);
}

/* The topic's last offset in Redis: how many of its publishes ran there. */
static long long published(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "HGET ringws:{t}:m last");
    long long n = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;

    freeReplyObject(r);
    return n;
}

static long long wait_published(redisContext *rc, long long want)
{
    double deadline = now_s() + 10;
    long long n;

    while ((n = published(rc)) < want && now_s() < deadline)
        usleep(10 * 1000);
    return n;
}

int main(void)
{
    static char msg[1000];
    char *argv[] = {"redis-server", "--port", port_s, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", dir, "--logfile", "redis.log", NULL};
    char engine[64];
    struct ringws_config cfg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    redisContext *rc = NULL;
    ringws_server *srv;
    pthread_t th;
    long long before;
    unsigned taken = 0;
    double deadline;
    char buf[256];
    void *res;
    pid_t pid;
    int fd, r;

    alarm(60); /* a worker that stops answering fails the test, not hangs it */
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(port_s, sizeof(port_s), "%u", free_port());
    if (posix_spawn(&pid, "/usr/bin/redis-server", NULL, NULL, argv, environ) != 0) {
        perror("redis-server");
        return 1;
    }
    deadline = now_s() + 10;
    while ((!rc || rc->err) && now_s() < deadline) {
        if (rc)
            redisFree(rc);
        usleep(10 * 1000);
        rc = redisConnect("127.0.0.1", atoi(port_s));
    }
    CHECK(rc && !rc->err);

    snprintf(engine, sizeof(engine), "redis://127.0.0.1:%s", port_s);
    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = 1;
    cfg.engine = engine;
    cfg.max_inbox_bytes = INBOX;
    cfg.cb = (struct ringws_callbacks){.on_http = on_http};
    CHECK(ringws_server_create(&cfg, &srv) == 0);
    pthread_create(&th, NULL, server_thread, srv);

    /* Once the worker knows Redis, a publish reaches it. */
    deadline = now_s() + 10;
    while (published(rc) == 0 && now_s() < deadline) {
        ringws_publish(srv, "t", "warm", 4, 0);
        usleep(20 * 1000);
    }
    before = published(rc);
    CHECK(before > 0);

    /* The worker held in a callback: taken up to max_inbox_bytes, then
     * refused. */
    a.sin_port = htons(ringws_server_port(srv));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(write(fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", 31) == 31);
    pthread_mutex_lock(&mu);
    while (!held)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    memset(msg, 'm', sizeof(msg));
    while ((r = ringws_publish(srv, "t", msg, sizeof(msg), 0)) == 0 && taken < 10000)
        taken++;
    CHECKF(r == -EAGAIN && taken >= INBOX / (2 * sizeof(msg)) && taken <= INBOX / sizeof(msg),
           "%u taken, then %d", taken, r);
    CHECK(published(rc) == before);

    /* Running again: every one taken is published, and publishes are
     * taken again. */
    pthread_mutex_lock(&mu);
    release = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    CHECK(read(fd, buf, sizeof(buf)) > 12 && !memcmp(buf, "HTTP/1.1 200", 12));
    close(fd);
    CHECKF(wait_published(rc, before + taken) == before + taken, "%lld of %lld published",
           published(rc), before + taken);
    CHECK(ringws_publish(srv, "t", msg, sizeof(msg), 0) == 0);
    CHECK(wait_published(rc, before + taken + 1) == before + taken + 1);

    ringws_server_stop(srv);
    pthread_join(th, &res);
    CHECK((intptr_t)res == 0);
    ringws_server_destroy(srv);
    redisFree(rc);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    {
        char log[sizeof(dir) + 16];
        snprintf(log, sizeof(log), "%s/redis.log", dir);
        unlink(log);
        rmdir(dir);
    }
    return check_done("engine_handover");
}
