/* chat.c - chat rooms on publish/subscribe: ws://HOST:PORT/?room=ROOM&name=NAME (any
 * path) relays each text message to everyone in ROOM, itself included, as "NAME: message";
 * 400 without a valid room and name (topic-name characters), 403 for a room not among
 * ROOMS when some are given.  Usage: chat [PORT [ROOM...]]; stops on SIGINT or SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringws.h>

struct member { char room[RINGWS_MAX_TOPIC + 1], name[RINGWS_MAX_TOPIC + 1]; };

static ringws_server *server;
static char **rooms; /* the open rooms, NULL-terminated; NULL: any */

static void on_signal(int sig) { ringws_server_stop(server); }

/* KEY's value in a query of KEY=VALUE&... (ptr NULL when absent), raw. */
static struct ringws_str param(struct ringws_str q, const char *key)
{
    size_t klen = strlen(key);

    for (size_t i = 0, n; q.ptr && i < q.len; i += n + 1) {
        const char *p = q.ptr + i, *amp = memchr(p, '&', q.len - i);
        n = amp ? (size_t)(amp - p) : q.len - i;
        if (n > klen && p[klen] == '=' && !memcmp(p, key, klen))
            return (struct ringws_str){p + klen + 1, n - klen - 1};
    }
    return (struct ringws_str){NULL, 0};
}

static int on_upgrade(ringws_server *srv, const struct ringws_request *req,
                      const char *subprotocol, const char **location, void *user)
{
    struct ringws_str room = param(req->query, "room"), name = param(req->query, "name");

    if (!ringws_topic_valid(room.ptr, room.len) || !ringws_topic_valid(name.ptr, name.len))
        return 400;
    for (char **r = rooms; r && *r; r++)
        if (strlen(*r) == room.len && !memcmp(*r, room.ptr, room.len))
            return RINGWS_UPGRADE_ACCEPT;
    return rooms ? 403 : RINGWS_UPGRADE_ACCEPT;
}

static void on_open(ringws_conn *c, const struct ringws_request *req, void *user)
{
    struct ringws_str room = param(req->query, "room"), name = param(req->query, "name");
    struct member *m = calloc(1, sizeof(*m)); /* on_upgrade checked the lengths */

    ringws_conn_set_user(c, m); /* on_close frees it */
    if (m)
        memcpy(m->name, name.ptr, name.len);
    if (!m || ringws_subscribe(c, memcpy(m->room, room.ptr, room.len)) < 0)
        ringws_close(c, 1011, "no room", 7);
}

static void on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                       size_t len, void *user)
{
    struct member *m = ringws_conn_get_user(c);
    char line[4096];

    if (!m || op != RINGWS_TEXT || len > sizeof(line) - sizeof(m->name) - 2) {
        ringws_close(c, 1003, "short text only", 15);
        return;
    }
    int n = snprintf(line, sizeof(line), "%s: %.*s", m->name, (int)len, (const char *)data);
    ringws_publish(server, m->room, line, (size_t)n, 0); /* reaches every worker */
}

static void on_close(ringws_conn *c, uint16_t code, const char *reason, size_t reason_len,
                     void *user) { free(ringws_conn_get_user(c)); }

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct ringws_config cfg;
    int ret;

    ringws_config_init(&cfg);
    cfg.port = argc > 1 ? (uint16_t)strtoul(argv[1], NULL, 10) : 0;
    rooms = argc > 2 ? argv + 2 : NULL;
    cfg.cb = (struct ringws_callbacks){.on_upgrade = on_upgrade, .on_open = on_open,
                                       .on_message = on_message, .on_close = on_close};
    if ((ret = ringws_server_create(&cfg, &server)) < 0) {
        fprintf(stderr, "chat: %s\n", strerror(-ret));
        return 1;
    }
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ringws listening on %s:%u\n", cfg.bind, ringws_server_port(server));
    fflush(stdout);
    ret = ringws_server_run(server);
    signal(SIGINT, SIG_IGN); /* no handler may reach a freed server */
    signal(SIGTERM, SIG_IGN);
    ringws_server_destroy(server);
    return ret < 0 ? 1 : 0;
}
