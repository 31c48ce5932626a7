/* test_redis_conn.c - a Redis connection on an io_uring loop against a real
 * redis-server (Debian's /usr/bin/redis-server, started here on a free
 * loopback port in a private directory).
 *
 * Why it exists: the Redis engine's every publish and subscription goes
 * through this connection.  Checked: a thousand commands queued in one turn
 * leave in few sends and are answered in order; a sharded subscription's
 * messages come as pushes; a stopped server (SIGSTOP) costs bounded memory:
 * past REDIS_CONN_MAX_AWAITED commands, or REDIS_CONN_MAX_BYTES of them,
 * commands are refused (-EAGAIN), and once it runs again every accepted
 * one is answered and commands are taken again; an SUNSUBSCRIBE on a
 * subscription connection past the bound is taken all the same (a release)
 * and ends its channel; a server killed under an
 * awaited command fails
 * that command (NULL answer) and reports the loss, and once a server is
 * back on the port both connections come up again by themselves. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "port_clock.h"
#include "loop.h"
#include "redis_conn.h"

extern char **environ;

static char dir[] = "/tmp/test_redis_conn.XXXXXX";
static char port_s[16];

static pid_t redis_start(void)
{
    char *argv[] = {"redis-server", "--port", port_s, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", dir, "--logfile", "redis.log", NULL};
    pid_t pid;

    if (posix_spawn(&pid, "/usr/bin/redis-server", NULL, NULL, argv, environ) != 0) {
        perror("redis-server");
        exit(1);
    }
    return pid;
}

static void redis_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* What the connections' owner saw. */
struct seen {
    int ups, downs;
    int pushes;
    char last_push[64];
};

static void on_push(void *ctx, redisReply *r)
{
    struct seen *s = ctx;

    s->pushes++;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING)
        snprintf(s->last_push, sizeof(s->last_push), "%s %s", r->element[0]->str,
                 r->element[2]->str);
    else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 3)
        snprintf(s->last_push, sizeof(s->last_push), "%s %lld", r->element[0]->str,
                 r->element[2]->integer);
}

static void on_state(void *ctx, bool up)
{
    struct seen *s = ctx;

    if (up)
        s->ups++;
    else
        s->downs++;
}

static const struct redis_conn_ops ops = {.push = on_push, .state = on_state};

/* Answers of the pipeline: each INCR must give the next number. */
struct tally {
    long long next;
    int wrong, nulls, got;
};

static void on_incr(void *arg, redisReply *r)
{
    struct tally *t = arg;

    t->got++;
    if (!r) {
        t->nulls++;
        return;
    }
    if (r->type != REDIS_REPLY_INTEGER || r->integer != t->next)
        t->wrong++;
    t->next++;
}

static void on_any(void *arg, redisReply *r)
{
    struct tally *t = arg;

    t->got++;
    if (!r)
        t->nulls++;
    else if (r->type == REDIS_REPLY_INTEGER)
        t->next = r->integer;
}

static void on_ok(void *arg, redisReply *r)
{
    struct tally *t = arg;

    t->got++;
    if (!r)
        t->nulls++;
    else if (r->type != REDIS_REPLY_STATUS)
        t->wrong++;
}

/* SIGSTOP or SIGCONT, returning once the server is stopped or running. */
static void redis_signal(pid_t pid, int sig)
{
    int st;

    kill(pid, sig);
    waitpid(pid, &st, sig == SIGSTOP ? WUNTRACED : WCONTINUED);
}

/* Turns the loop until cond holds or 10 s pass. */
#define TURN_UNTIL(l, cond)                                                    \
    do {                                                                       \
        double deadline_ = now_s() + 10;                                       \
        while (!(cond) && now_s() < deadline_)                                 \
            loop_turn(l, 50 * 1000 * 1000);                                    \
    } while (0)

static int command(struct redis_conn *rc, const char *a0, const char *a1, const char *a2,
                   redis_reply_fn *fn, void *arg)
{
    const char *argv[3] = {a0, a1, a2};
    size_t lens[3] = {strlen(a0), a1 ? strlen(a1) : 0, a2 ? strlen(a2) : 0};

    return redis_conn_command(rc, a2 ? 3 : a1 ? 2 : 1, argv, lens, fn, arg);
}

int main(void)
{
    static const struct loop_handlers none = {0};
    struct loop_config cfg = {.name = "test", .sq_entries = 256, .cq_entries = 1024,
                              .buf_count = 8, .buf_size = 4096, .wake_fd = -1};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    static struct redis_conn cmd, sub;
    struct seen cs = {0}, ss = {0};
    struct tally t = {.next = 1}, u = {0};
    struct loop *l;
    pid_t pid;
    int turns;

    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    a.sin_port = htons(free_port());
    snprintf(port_s, sizeof(port_s), "%u", ntohs(a.sin_port));
    pid = redis_start();
    if (loop_create(&l, &cfg, &none, NULL) < 0) {
        fprintf(stderr, "no ring\n");
        redis_kill(pid);
        return 1;
    }
    CHECK(redis_conn_start(&cmd, l, (struct sockaddr *)&a, sizeof(a), NULL, &ops, &cs) == 0);
    CHECK(redis_conn_start(&sub, l, (struct sockaddr *)&a, sizeof(a), NULL, &ops, &ss) == 0);
    /* The server may take a moment to listen: refused connects are
     * retried after the backoff. */
    TURN_UNTIL(l, cs.ups && ss.ups);
    CHECK(cs.ups == 1 && ss.ups == 1);

    /* A thousand commands queued in one turn: answered in order. */
    for (int i = 0; i < 1000; i++)
        CHECK(command(&cmd, "INCR", "counter", NULL, on_incr, &t) == 0);
    turns = 0;
    while (t.got < 1000 && turns < 1000) {
        loop_turn(l, 50 * 1000 * 1000);
        turns++;
    }
    CHECKF(t.got == 1000 && !t.wrong && !t.nulls, "got %d, wrong %d, lost %d", t.got, t.wrong,
           t.nulls);
    CHECKF(turns < 50, "%d turns for one pipeline", turns);

    /* A sharded subscription: its confirmation and its messages are
     * pushes. */
    CHECK(command(&sub, "SSUBSCRIBE", "ringws:{t}:c", NULL, NULL, NULL) == 0);
    TURN_UNTIL(l, ss.pushes == 1);
    CHECKF(!strcmp(ss.last_push, "ssubscribe 1"), "%s", ss.last_push);
    u = (struct tally){0};
    CHECK(command(&cmd, "SPUBLISH", "ringws:{t}:c", "hello", on_any, &u) == 0);
    TURN_UNTIL(l, ss.pushes == 2 && u.got == 1);
    CHECKF(!strcmp(ss.last_push, "smessage hello"), "%s", ss.last_push);
    CHECK(u.got == 1 && u.next == 1); /* one subscriber took it */

    /* A stopped server: small commands are refused past
     * REDIS_CONN_MAX_AWAITED awaited answers, and all of those accepted
     * are answered, in order, once it runs again. */
    redis_signal(pid, SIGSTOP);
    t = (struct tally){.next = 1001};
    {
        unsigned taken = 0;
        int r;
        CHECK(redis_conn_can_take(&cmd, REDIS_CONN_MAX_AWAITED, 1024));
        CHECK(!redis_conn_can_take(&cmd, REDIS_CONN_MAX_AWAITED + 1, 1024));
        while ((r = command(&cmd, "INCR", "counter", NULL, on_incr, &t)) == 0 &&
               taken < 2 * REDIS_CONN_MAX_AWAITED)
            taken++;
        CHECKF(r == -EAGAIN && taken == REDIS_CONN_MAX_AWAITED, "%u taken, then %d", taken, r);
        CHECK(!redis_conn_can_take(&cmd, 1, 64));
        loop_turn(l, 10 * 1000 * 1000);
        CHECK(command(&cmd, "INCR", "counter", NULL, on_incr, &t) == -EAGAIN);
        redis_signal(pid, SIGCONT);
        TURN_UNTIL(l, t.got == (int)taken);
        CHECKF(t.got == (int)taken && !t.wrong && !t.nulls, "got %d, wrong %d, lost %d",
               t.got, t.wrong, t.nulls);
        CHECK(cmd.cb_n == 0 && cmd.cb_bytes == 0);
    }

    /* Large commands: refused past REDIS_CONN_MAX_BYTES, whether sent into
     * the socket or not; what the connection holds stays within twice
     * that; the server running again answers them all. */
    redis_signal(pid, SIGSTOP);
    {
        static char big[65536];
        const char *argv[3] = {"SET", "big", big};
        size_t lens[3] = {3, 3, sizeof(big)};
        unsigned taken = 0;
        int r;
        memset(big, 'x', sizeof(big));
        u = (struct tally){0};
        while ((r = redis_conn_command(&cmd, 3, argv, lens, on_ok, &u)) == 0 && taken < 1000) {
            taken++;
            loop_turn(l, 0); /* what the socket takes leaves */
        }
        CHECKF(r == -EAGAIN && taken == REDIS_CONN_MAX_BYTES / (cmd.cb_bytes / taken),
               "%u taken, then %d", taken, r);
        CHECK(cmd.cb_bytes <= REDIS_CONN_MAX_BYTES);
        CHECKF(cmd.out_cap <= 2 * REDIS_CONN_MAX_BYTES && cmd.send_cap <= 2 * REDIS_CONN_MAX_BYTES,
               "buffers %zu and %zu bytes", cmd.out_cap, cmd.send_cap);
        redis_signal(pid, SIGCONT);
        TURN_UNTIL(l, u.got == (int)taken);
        CHECKF(u.got == (int)taken && !u.wrong && !u.nulls, "got %d, wrong %d, lost %d",
               u.got, u.wrong, u.nulls);
        CHECK(redis_conn_command(&cmd, 3, argv, lens, on_ok, &u) == 0);
        TURN_UNTIL(l, u.got == (int)taken + 1);
        CHECK(u.got == (int)taken + 1 && !u.wrong && !u.nulls);
    }
    /* A subscription connection past REDIS_CONN_MAX_BYTES unsent: an
     * SUNSUBSCRIBE is refused as a command, taken as a release, and once
     * the server runs again it ends the channel (a publish reaches nobody),
     * the other subscription staying. */
    redis_signal(pid, SIGSTOP);
    {
        static char chan[65536];
        const char *sargv[2] = {"SSUBSCRIBE", chan}, *uargv[2] = {"SUNSUBSCRIBE", chan};
        size_t slens[2] = {10, sizeof(chan)}, ulens[2] = {12, sizeof(chan)};
        const char *pargv[3] = {"SPUBLISH", chan, "m"};
        size_t plens[3] = {8, sizeof(chan), 1};
        int r, pushes = ss.pushes, taken = 0;
        memset(chan, 'x', sizeof(chan));
        while ((r = redis_conn_command(&sub, 2, sargv, slens, NULL, NULL)) == 0 && taken < 1000) {
            taken++;
            loop_turn(l, 0);
        }
        CHECKF(r == -EAGAIN && taken > 1, "%d taken, then %d", taken, r);
        CHECK(redis_conn_command(&sub, 2, uargv, ulens, NULL, NULL) == -EAGAIN);
        CHECK(redis_conn_command_release(&sub, 2, uargv, ulens) == 0);
        redis_signal(pid, SIGCONT);
        TURN_UNTIL(l, ss.pushes == pushes + taken + 1);
        CHECKF(ss.pushes == pushes + taken + 1 && !strcmp(ss.last_push, "sunsubscribe 1"),
               "%d pushes of %d, last %s", ss.pushes - pushes, taken + 1, ss.last_push);
        u = (struct tally){0};
        CHECK(redis_conn_command(&cmd, 3, pargv, plens, on_any, &u) == 0);
        TURN_UNTIL(l, u.got == 1);
        CHECKF(u.got == 1 && !u.nulls && u.next == 0, "reached %lld", u.next);
    }
    CHECK(cs.downs == 0 && ss.downs == 0); /* slow is not lost */

    /* The server dies under an awaited command: the command gets NULL and
     * both connections report the loss. */
    u = (struct tally){0};
    CHECK(command(&cmd, "BLPOP", "nothing", "0", on_any, &u) == 0);
    loop_turn(l, 10 * 1000 * 1000);
    redis_kill(pid);
    TURN_UNTIL(l, u.got == 1 && cs.downs == 1 && ss.downs == 1);
    CHECK(u.got == 1 && u.nulls == 1);
    CHECK(cs.downs == 1 && ss.downs == 1);
    CHECK(command(&cmd, "INCR", "counter", NULL, on_any, &u) == -ENOTCONN);

    /* Back on the same port: both connect again by themselves. */
    pid = redis_start();
    TURN_UNTIL(l, cs.ups == 2 && ss.ups == 2);
    CHECK(cs.ups == 2 && ss.ups == 2);
    CHECK(cmd.reconnects == 1 && sub.reconnects == 1);
    u = (struct tally){0};
    CHECK(command(&cmd, "INCR", "counter", NULL, on_any, &u) == 0);
    TURN_UNTIL(l, u.got == 1);
    CHECK(u.got == 1 && !u.nulls && u.next == 1); /* a new server, without persistence */

    redis_conn_stop(&cmd);
    redis_conn_stop(&sub);
    loop_destroy(l);
    redis_conn_free(&cmd);
    redis_conn_free(&sub);
    redis_kill(pid);
    {
        char log[sizeof(dir) + 16];
        snprintf(log, sizeof(log), "%s/redis.log", dir);
        unlink(log);
        rmdir(dir);
    }
    return check_done("redis_conn");
}
