/* conn_auth.c - the token of a connection: found in the upgrade request,
 * verified (token.c), held beside the connection, checked where it
 * subscribes and publishes, replaced by the `auth` command, and the close
 * with 4001 at its exp.
 *
 * Why it exists: what a token allows is decided per connection, once at the
 * upgrade and then at each command; the connection record stays as small as
 * before (the claims live in its cold part, only when a token was given),
 * and nothing here runs for a message that is not a command.  Expiries are
 * timers on a wheel of their own; a burst of them (every token of a login
 * wave ending in the same second) is spread: each tick closes at most
 * AUTH_EXPIRIES_PER_TICK connections and leaves the rest to the next. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "log.h"
#include "pubsub_proto.h"
#include "token.h"

#define AUTH_EXPIRIES_PER_TICK 128
#define AUTH_CLOSE_EXPIRED 4001

struct conn_auth {
    struct timer_node expiry; /* on the worker's token_wheel */
    struct ringws_conn *c;
    struct ringws_token_claims *claims;
};

void conn_auth_refused(struct worker *w, enum ringws_auth_failure r, const char *what,
                       const char *sub)
{
    STAT_ADD(w, auth_failures[r], 1);
    log_msg(LOG_LEVEL_INFO, "worker %u: %s refused: token %s%s%s", w->id, what,
            ringws_auth_failure_name(r), sub ? ", sub " : "", sub ? sub : "");
}

/* ---- where a token comes from ------------------------------------------- */

static bool conn_auth_bearer(const struct http_request *req, const char **tok, size_t *len)
{
    static const char scheme[] = "Bearer ";
    int i = http_header_find(req, "Authorization", 0);
    size_t sl = sizeof(scheme) - 1;

    if (i < 0 || req->headers[i].value_len < sl ||
        !http_text_equal_nocase(req->headers[i].value, scheme, sl))
        return false;
    *tok = req->headers[i].value + sl;
    *len = req->headers[i].value_len - sl;
    return true;
}

/* "Cookie: a=1; NAME=TOKEN; b=2" (RFC 6265 section 5.4), in any of the
 * request's Cookie fields. */
static bool conn_auth_cookie(const struct http_request *req, const char *name,
                             const char **tok, size_t *len)
{
    size_t nl = strlen(name);

    for (int i = http_header_find(req, "Cookie", 0); i >= 0;
         i = http_header_find(req, "Cookie", i + 1)) {
        const char *p = req->headers[i].value, *end = p + req->headers[i].value_len;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            while (p < stop && *p == ' ')
                p++;
            if ((size_t)(stop - p) > nl && !memcmp(p, name, nl) && p[nl] == '=') {
                *tok = p + nl + 1;
                *len = (size_t)(stop - p) - nl - 1;
                return true;
            }
            p = stop + 1;
        }
    }
    return false;
}

/* The first of: ?token=, Authorization: Bearer, the cookie. */
static bool conn_auth_find(const struct ringws_config *cfg, const struct http_request *req,
                           const char **tok, size_t *len)
{
    return (req->query && query_param_find(req->query, req->query_len, "token", tok, len)) ||
           conn_auth_bearer(req, tok, len) ||
           (cfg->token_cookie && conn_auth_cookie(req, cfg->token_cookie, tok, len));
}

/* Under the keys' read lock: ringws_server_reload_tokens may swap them. */
static enum ringws_auth_failure conn_auth_verify(struct worker *w, const char *tok,
                                                 size_t len,
                                                 struct ringws_token_claims **claims)
{
    struct ringws_server *srv = w->srv;
    enum ringws_auth_failure r;

    pthread_rwlock_rdlock(&srv->token_lock);
    r = token_verify(srv->token_keys, tok, len, (int64_t)time(NULL), srv->cfg.token_leeway_s,
                     claims);
    pthread_rwlock_unlock(&srv->token_lock);
    return r;
}

enum ringws_auth_failure conn_auth_from_request(struct ringws_conn *c,
                                                const struct http_request *req, bool upgrade,
                                                struct ringws_token_claims **claims)
{
    struct worker *w = conn_worker(c);
    const char *tok;
    size_t len;
    bool found = upgrade ? conn_auth_find(&w->srv->cfg, req, &tok, &len)
                         : conn_auth_bearer(req, &tok, &len);
    enum ringws_auth_failure r;

    *claims = NULL;
    if (!found)
        return RINGWS_AUTH_MISSING;
    r = conn_auth_verify(w, tok, len, claims);
    if (r != RINGWS_AUTH_OK)
        conn_auth_refused(w, r, upgrade ? "upgrade" : "publish", NULL);
    return r;
}

/* ---- what a token allows ------------------------------------------------ */

bool conn_auth_topics_ok(struct ringws_conn *c, const struct ringws_token_claims *claims,
                         const char *list, size_t len)
{
    const char *name;
    size_t pos = 0, n;

    while (topic_list_next(list, len, &pos, &name, &n) > 0)
        if (!token_covers(claims->topics, claims->n_topics, name, n)) {
            conn_auth_refused(conn_worker(c), RINGWS_AUTH_TOPIC_DENIED, "subscription",
                              claims->sub);
            return false;
        }
    return true;
}

static const struct ringws_token_claims *conn_auth_claims(const struct ringws_conn *c)
{
    return c->cold && c->cold->auth ? c->cold->auth->claims : NULL;
}

const struct ringws_token_claims *ringws_conn_token(const ringws_conn *c)
{
    return conn_auth_claims(c);
}

bool conn_auth_publish_ok(struct ringws_conn *c, const char *topic, size_t len)
{
    struct worker *w = conn_worker(c);
    const struct ringws_config *cfg = &w->srv->cfg;
    const struct ringws_token_claims *claims = conn_auth_claims(c);
    const struct ringws_topic_rule *rule;

    if (!cfg->n_token_keys) {
        rule = topic_rule_match(cfg->topic_rules, cfg->n_topic_rules, topic, len);
        return rule && rule->client_publish;
    }
    if (claims && token_covers(claims->publish, claims->n_publish, topic, len))
        return true;
    conn_auth_refused(w, claims ? RINGWS_AUTH_PUBLISH_DENIED : RINGWS_AUTH_MISSING,
                      "publish", claims ? claims->sub : NULL);
    return false;
}

/* ---- expiry -------------------------------------------------------------- */

/* Milliseconds until exp + leeway (0 once past). */
static uint64_t conn_auth_left_ms(const struct worker *w, const struct conn_auth *a)
{
    struct timespec ts;
    int64_t left_ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    left_ms = (a->claims->exp + (int64_t)w->srv->cfg.token_leeway_s) * 1000 -
              ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return left_ms < 0 ? 0 : (uint64_t)left_ms;
}

/* Arms the close at exp + leeway (none for a token without exp). */
static void conn_auth_arm(struct worker *w, struct conn_auth *a)
{
    timer_cancel(&w->token_wheel, &a->expiry);
    if (!a->claims->exp)
        return;
    timer_arm(&w->token_wheel, &a->expiry, conn_number(a->c),
              w->token_wheel.now + timer_ms_to_ticks(conn_auth_left_ms(w, a)));
}

/* The token wheel's timer_node_at: a connection's number names its token's
 * node (ctx: the worker). */
static struct timer_node *conn_auth_timer_at(void *w, uint32_t key)
{
    return &conn_at(w, key)->cold->auth->expiry;
}

void conn_auth_wheel_init(struct worker *w, uint64_t now_tick)
{
    timer_wheel_init(&w->token_wheel, now_tick, conn_auth_timer_at, w);
}

static void conn_auth_expired(struct timer_node *n)
{
    struct conn_auth *a = (struct conn_auth *)((char *)n - offsetof(struct conn_auth, expiry));
    struct ringws_conn *c = a->c;
    struct worker *w = conn_worker(c);

    if (!w->expiries_left) {
        timer_arm(&w->token_wheel, n, conn_number(c), w->token_wheel.now + 1);
        return;
    }
    /* An exp beyond the wheel's reach (TIMER_MAX_AHEAD) fires early: armed
     * again for what is left (a tick early is the wheel's rounding). */
    if (conn_auth_left_ms(w, a) >= TIMER_TICK_MS) {
        conn_auth_arm(w, a);
        return;
    }
    w->expiries_left--;
    if (!conn_ws_open(c))
        return;
    conn_auth_refused(w, RINGWS_AUTH_EXPIRED, "open connection", a->claims->sub);
    conn_ws_close_why(c, AUTH_CLOSE_EXPIRED, "token expired", false);
}

void conn_auth_tick(struct worker *w, uint64_t now_tick)
{
    w->expiries_left = AUTH_EXPIRIES_PER_TICK;
    timer_wheel_expire(&w->token_wheel, now_tick, conn_auth_expired);
}

/* ---- the token's life on a connection ----------------------------------- */

int conn_auth_attach(struct ringws_conn *c, struct ringws_token_claims *claims)
{
    struct conn_auth *a = calloc(1, sizeof(*a));

    if (a && !conn_cold_get(c)) {
        free(a);
        a = NULL;
    }
    if (!a) {
        free(claims);
        return -ENOMEM;
    }
    a->c = c;
    a->claims = claims;
    c->cold->auth = a;
    conn_auth_arm(conn_worker(c), a);
    log_msg(LOG_LEVEL_DEBUG, "worker %u: connection of sub %s opened", conn_worker(c)->id,
            claims->sub);
    return 0;
}

void conn_auth_gone(struct ringws_conn *c)
{
    struct conn_auth *a = c->cold ? c->cold->auth : NULL;

    if (!a)
        return;
    timer_cancel(&conn_worker(c)->token_wheel, &a->expiry);
    free(a->claims);
    free(a);
    c->cold->auth = NULL;
}

/* Every current subscription must stay within the new token's topics. */
static bool conn_auth_subs_ok(const struct ringws_conn *c,
                              const struct ringws_token_claims *claims)
{
    for (uint16_t i = 0; c->cold && i < c->cold->n; i++) {
        const struct topic *t = c->cold->refs[i].t;
        if (!token_covers(claims->topics, claims->n_topics, t->name, t->len))
            return false;
    }
    return true;
}

static void conn_auth_refresh_fail(struct ringws_conn *c, enum ringws_auth_failure r,
                                   const char *sub)
{
    conn_auth_refused(conn_worker(c), r, "auth command", sub);
    conn_ws_close_why(c, WS_CLOSE_POLICY, ringws_auth_failure_name(r), true);
}

void conn_auth_refresh(struct ringws_conn *c, const char *tok, size_t len)
{
    struct worker *w = conn_worker(c);
    struct conn_auth *a = c->cold ? c->cold->auth : NULL;
    struct ringws_token_claims *claims = NULL;
    enum ringws_auth_failure r;

    if (!w->srv->cfg.n_token_keys) {
        conn_ws_close_why(c, WS_CLOSE_POLICY, "no token keys", true);
        return;
    }
    r = conn_auth_verify(w, tok, len, &claims);
    if (r == RINGWS_AUTH_OK && a && strcmp(a->claims->sub, claims->sub) != 0)
        r = RINGWS_AUTH_SUBJECT_CHANGED;
    if (r == RINGWS_AUTH_OK && !conn_auth_subs_ok(c, claims))
        r = RINGWS_AUTH_TOPIC_DENIED;
    if (r != RINGWS_AUTH_OK) {
        conn_auth_refresh_fail(c, r, a ? a->claims->sub : NULL);
        free(claims);
        return;
    }
    if (!a) {
        if (conn_auth_attach(c, claims) < 0) {
            conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
            return;
        }
        a = c->cold->auth;
    } else {
        free(a->claims);
        a->claims = claims;
        conn_auth_arm(w, a);
    }
    if ((c->flags & CF_ENVELOPE) &&
        conn_ws_pubsub_notice(c, "authed %" PRId64, a->claims->exp) < 0)
        conn_ws_close_why(c, WS_CLOSE_INTERNAL, "out of memory", true);
}
