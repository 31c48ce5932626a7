/* main.c - the ringws binary: an echo WebSocket at /echo, /healthz and a
 * console page at /, configured from the command line.
 *
 * Why it exists: it is what `make run` starts and what the integration
 * tests drive.  Like the programs in examples/, it uses <ringws.h> alone and
 * links the installed form of the library. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringws.h>

#define MAX_LIST 32

static ringws_server *main_server;
static atomic_bool main_ending; /* the SIGHUP thread is to end */

static void main_on_signal(int sig)
{
    (void)sig;
    if (main_server)
        ringws_server_stop(main_server);
}

/* SIGHUP, blocked in every thread, is taken here: reloading certificates
 * and token keys reads files and takes locks, which a signal handler must
 * not.  So is SIGUSR2: every WebSocket gets the stop close, the server
 * running on. */
static void *main_reload_thread(void *arg)
{
    sigset_t *hup = arg;
    int sig;

    while (sigwait(hup, &sig) == 0 && !atomic_load(&main_ending)) {
        if (sig == SIGUSR2) {
            ringws_server_disconnect_all(main_server);
            continue;
        }
        int tls = ringws_server_reload_tls(main_server);
        int tokens = ringws_server_reload_tokens(main_server);
        if (tls == -EINVAL && tokens == -EINVAL)
            fprintf(stderr, "ringws: SIGHUP ignored: no TLS certificates or token keys to "
                    "reload\n");
    }
    return NULL;
}

static void main_on_message(ringws_conn *c, enum ringws_opcode op, const void *data,
                            size_t len, void *user)
{
    (void)user;
    ringws_send(c, op, data, len); /* failure closes the connection itself */
}

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: ringws [options]\n"
            "  --bind ADDR             address to listen on (default 127.0.0.1)\n"
            "  --port N                port (default 8080; 0 picks a free one)\n"
            "  --workers N             worker threads (default: online CPUs)\n"
            "  --max-message BYTES     largest message accepted (default 16777216)\n"
            "  --min-message-rate BYTES  a message that spans receives must average this\n"
            "                          many bytes a second after its grace (default 4096;\n"
            "                          0 off); slower: close 1008\n"
            "  --message-grace T       time any such message may take (default 10s)\n"
            "  --max-partial-bytes BYTES  memory for requests and messages still arriving,\n"
            "                          per worker (default 268435456); past it: close 1009\n"
            "  --origin ORIGIN         allow this Origin (repeatable; default any)\n"
            "  --subprotocol NAME      supported subprotocol (repeatable, preferred first)\n"
            "  --idle-timeout T        ping after T of silence, drop after 2T (default 60s; 0 off)\n"
            "  --handshake-timeout T   time allowed for a request head (default 10s)\n"
            "  --close-timeout T       wait for the peer's close (default 3s)\n"
            "  --max-connections N     per worker (default 16384)\n"
            "  --max-per-address N     connections per source address (IPv6: /64), all\n"
            "                          workers together (default 0: no limit)\n"
            "  --max-handshakes N      per worker: with more connections not yet upgraded,\n"
            "                          upgrades are answered 503 with a Retry-After drawn\n"
            "                          over the reconnect window (default 0: no bound)\n"
            "  --admission-refusal R   how upgrades beyond --max-handshakes are refused: 503\n"
            "                          (Retry-After) or 1013 (opened, then closed 1013 with\n"
            "                          \"retry after N ms\" in the reason) (default 503)\n"
            "  --accepts-per-turn N    new connections a worker takes per loop turn; more\n"
            "                          wait for the next turns (default 256; 0: no budget)\n"
            "  --max-send-queue BYTES  output queued per connection (default 4194304)\n"
            "  --overflow POLICY       when a send would pass it: close (1008), try-again\n"
            "                          (1013) or drop (the message) (default close)\n"
            "  --pubsub-path PATH      WebSocket path of subscribers, also enables\n"
            "                          POST /publish/TOPIC (default /ws; \"\" turns both off)\n"
            "  --publish-token TOKEN   POST /publish needs \"Authorization: Bearer TOKEN\"\n"
            "  --fanout-queue BYTES    published bytes queued per subscriber (default 1048576)\n"
            "  --max-publish BYTES     largest published message (default 1048576)\n"
            "  --max-inbox BYTES       published bytes waiting for one worker; a publish\n"
            "                          past it is refused (default 67108864)\n"
            "  --max-topics N          subscriptions per connection (default 64)\n"
            "  --topic PATTERN=POLICY[,publish][,history=N[,history-ttl=T]]\n"
            "                          topics matching PATTERN (a name, or a prefix and *):\n"
            "                          slow subscribers get POLICY close-1013 (default),\n"
            "                          close-1008 or drop-oldest; ',publish' lets clients\n"
            "                          publish to them; history=N keeps their last N\n"
            "                          messages (for at most T: 90s, 5m, 1h) for resuming\n"
            "                          subscribers (repeatable; first match wins)\n"
            "  --history-memory BYTES  all histories together; past it the oldest\n"
            "                          messages go first (default 67108864)\n"
            "  --sequence-idle T       keep a topic's epoch and offset for T after its\n"
            "                          last subscriber and message left, so that clients\n"
            "                          back within it resume without a gap (default 300s;\n"
            "                          0: forget at once)\n"
            "  --sequence-idle-max N   idle sequences kept at most; past it the longest\n"
            "                          idle is forgotten first (default 65536)\n"            "  --engine URL            where topics' sequences and histories live:\n"
            "                          redis://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]\n"
            "                          (a Redis Cluster's seed nodes, or one Redis) shared\n"
            "                          by every node configured with it (default: in\n"
            "                          this process)\n"
            "  --recv-buffer BYTES     size of each provided receive buffer (default 16384)\n"
            "  --recv-buffers N        provided receive buffers per worker at most; 16 are\n"
            "                          posted at first, more as load needs them (default 1024)\n"
            "  --plain-recv-buffers    one receive per buffer even where the kernel can\n"
            "                          pack receives into buffers incrementally\n"
            "  --no-deflate            refuse permessage-deflate (by default it is accepted\n"
            "                          on every WebSocket path, stateless both ways)\n"
            "  --deflate-takeover PATH  on this WebSocket path, compression keeps context\n"
            "                          between messages where the client allows it (a\n"
            "                          zlib stream per direction per connection; every\n"
            "                          delivery compressed for it alone; repeatable)\n"
            "  --deflate-takeover-window BITS  most LZ77 window of those streams, 9..15\n"
            "                          (default 11: 2 KiB)\n"
            "  --deflate-takeover-memory BYTES  per worker, what those streams may reserve;\n"
            "                          past it new connections go stateless (default\n"
            "                          67108864)\n"
            "  --tls-cert FILE         certificate (PEM, chain after it) and ...\n"
            "  --tls-key FILE          ... its key: --port speaks TLS only; repeat both for\n"
            "                          more certificates, chosen by SNI (the first is the\n"
            "                          default); SIGHUP reads the files again\n"
            "  --plain-port N          with TLS, also a plaintext listener on port N (0: a\n"
            "                          free one)\n"
            "  --tls-ticket-lifetime T session tickets last T; their key changes as often\n"
            "                          (default 7200s)\n"
            "  --tls-handshake-budget T  handshake CPU per worker and loop turn before\n"
            "                          more handshakes wait for the next (default 2ms)\n"
            "  --stop-code CODE        close code WebSockets get on SIGTERM/SIGINT (and\n"
            "                          SIGUSR2, which closes them all, the server running\n"
            "                          on, history kept): 1012\n"
            "                          (service restart, default) or 1001 (going away)\n"
            "  --reconnect-window T    that close's reason, and every 1013's, ends \"; retry\n"
            "                          after N ms\", N drawn per connection below T\n"
            "                          (default 5s; 0: no hint)\n"
            "  --proxy-protocol        --port is behind a TCP proxy: each connection starts\n"
            "                          with a PROXY v1/v2 header naming the client (trusted;\n"
            "                          without one it is closed); --plain-port stays direct\n"
            "  --token-key [KID=]FILE  verify signed tokens (JWT) with this key: a PEM\n"
            "                          public key (RS256, ES256, EdDSA) or an HMAC secret\n"
            "                          (HS256); repeatable, each with a KID then; SIGHUP\n"
            "                          reads the files again\n"
            "  --token-leeway T        grace on a token's exp and nbf (default 30s)\n"
            "  --token-cookie NAME     a cookie that may carry the token\n"
            "  --require-token         the pub/sub path needs a token (401 without)\n"
            "  --config FILE           read these options from FILE: one \"key = value\" a\n"
            "                          line, the key a flag's name without the dashes\n"
            "                          (docs/ringws.conf.example); flags given here win\n"
            "  --print-config          print the effective configuration in that format\n"
            "                          and exit\n"
            "Durations: 500ms, 2s, or plain seconds (1.5).\n");
}

/* Parses "500ms", "2s" or "1.5" (seconds) into milliseconds. */
static int main_parse_duration(const char *s, unsigned *ms)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || v < 0)
        return -EINVAL;
    if (!strcmp(end, "ms"))
        v /= 1000.0;
    else if (*end && strcmp(end, "s"))
        return -EINVAL;
    if (v * 1000.0 > 4e9)
        return -ERANGE;
    *ms = (unsigned)(v * 1000.0 + 0.5);
    return 0;
}

static int main_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

struct main_opts {
    struct ringws_config cfg;
    const char *origins[MAX_LIST], *subprotocols[MAX_LIST], *takeover_paths[MAX_LIST];
    struct ringws_topic_rule rules[MAX_LIST];
    struct ringws_tls_cert certs[MAX_LIST];
    struct ringws_token_key token_keys[MAX_LIST];
    size_t n_keys;
    bool print_config;
};

enum { OPT_BIND = 256, OPT_PORT, OPT_WORKERS, OPT_MAX_MESSAGE, OPT_MIN_MSG_RATE,
       OPT_MSG_GRACE, OPT_MAX_PARTIAL, OPT_ORIGIN,
       OPT_SUBPROTOCOL, OPT_IDLE, OPT_HANDSHAKE, OPT_CLOSE, OPT_MAX_CONN, OPT_MAX_PER_ADDR, OPT_MAX_HANDSHAKES, OPT_ADMISSION_REFUSAL, OPT_ACCEPTS_PER_TURN,
       OPT_MAX_SENDQ,
       OPT_OVERFLOW, OPT_PUBSUB_PATH, OPT_PUBLISH_TOKEN, OPT_FANOUT_QUEUE, OPT_MAX_PUBLISH,
       OPT_MAX_INBOX, OPT_MAX_TOPICS,
       OPT_TOPIC, OPT_HISTORY_MEMORY, OPT_SEQUENCE_IDLE, OPT_SEQUENCE_IDLE_MAX, OPT_ENGINE,
       OPT_RECV_BUF, OPT_RECV_BUFS, OPT_PLAIN_BUFS, OPT_TLS_CERT, OPT_TLS_KEY, OPT_PLAIN_PORT,
       OPT_TICKET_LIFETIME, OPT_HANDSHAKE_BUDGET,
       OPT_STOP_CODE, OPT_RECONNECT_WINDOW, OPT_PROXY_PROTOCOL,
       OPT_TOKEN_KEY, OPT_TOKEN_LEEWAY, OPT_TOKEN_COOKIE, OPT_REQUIRE_TOKEN,
       OPT_NO_DEFLATE, OPT_TAKEOVER, OPT_TAKEOVER_WINDOW, OPT_TAKEOVER_MEMORY, OPT_CONFIG, OPT_PRINT_CONFIG, OPT_HELP };

/* Flags and config keys are one table: a key is its flag's name without the
 * dashes, so neither can gain an option the other lacks. */
static const struct option main_longopts[] = {
    {"bind", required_argument, NULL, OPT_BIND},
    {"port", required_argument, NULL, OPT_PORT},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
    {"min-message-rate", required_argument, NULL, OPT_MIN_MSG_RATE},
    {"message-grace", required_argument, NULL, OPT_MSG_GRACE},
    {"max-partial-bytes", required_argument, NULL, OPT_MAX_PARTIAL},
    {"origin", required_argument, NULL, OPT_ORIGIN},
    {"subprotocol", required_argument, NULL, OPT_SUBPROTOCOL},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
    {"close-timeout", required_argument, NULL, OPT_CLOSE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONN},
    {"max-per-address", required_argument, NULL, OPT_MAX_PER_ADDR},
    {"max-handshakes", required_argument, NULL, OPT_MAX_HANDSHAKES},
    {"admission-refusal", required_argument, NULL, OPT_ADMISSION_REFUSAL},
    {"accepts-per-turn", required_argument, NULL, OPT_ACCEPTS_PER_TURN},
    {"max-send-queue", required_argument, NULL, OPT_MAX_SENDQ},
    {"overflow", required_argument, NULL, OPT_OVERFLOW},
    {"pubsub-path", required_argument, NULL, OPT_PUBSUB_PATH},
    {"publish-token", required_argument, NULL, OPT_PUBLISH_TOKEN},
    {"fanout-queue", required_argument, NULL, OPT_FANOUT_QUEUE},
    {"max-publish", required_argument, NULL, OPT_MAX_PUBLISH},
    {"max-inbox", required_argument, NULL, OPT_MAX_INBOX},
    {"max-topics", required_argument, NULL, OPT_MAX_TOPICS},
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"history-memory", required_argument, NULL, OPT_HISTORY_MEMORY},
    {"sequence-idle", required_argument, NULL, OPT_SEQUENCE_IDLE},
    {"sequence-idle-max", required_argument, NULL, OPT_SEQUENCE_IDLE_MAX},
    {"engine", required_argument, NULL, OPT_ENGINE},
    {"recv-buffer", required_argument, NULL, OPT_RECV_BUF},
    {"recv-buffers", required_argument, NULL, OPT_RECV_BUFS},
    {"plain-recv-buffers", no_argument, NULL, OPT_PLAIN_BUFS},
    {"no-deflate", no_argument, NULL, OPT_NO_DEFLATE},
    {"deflate-takeover", required_argument, NULL, OPT_TAKEOVER},
    {"deflate-takeover-window", required_argument, NULL, OPT_TAKEOVER_WINDOW},
    {"deflate-takeover-memory", required_argument, NULL, OPT_TAKEOVER_MEMORY},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"plain-port", required_argument, NULL, OPT_PLAIN_PORT},
    {"tls-ticket-lifetime", required_argument, NULL, OPT_TICKET_LIFETIME},
    {"tls-handshake-budget", required_argument, NULL, OPT_HANDSHAKE_BUDGET},
    {"stop-code", required_argument, NULL, OPT_STOP_CODE},
    {"reconnect-window", required_argument, NULL, OPT_RECONNECT_WINDOW},
    {"proxy-protocol", no_argument, NULL, OPT_PROXY_PROTOCOL},
    {"token-key", required_argument, NULL, OPT_TOKEN_KEY},
    {"token-leeway", required_argument, NULL, OPT_TOKEN_LEEWAY},
    {"token-cookie", required_argument, NULL, OPT_TOKEN_COOKIE},
    {"require-token", no_argument, NULL, OPT_REQUIRE_TOKEN},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const struct option *main_find_opt(int opt)
{
    const struct option *o;

    for (o = main_longopts; o->name; o++)
        if (o->val == opt)
            return o;
    return NULL;
}

/* "FILE" or "KID=FILE" (a kid holds no '/'), cut in place. */
static int main_token_key(struct main_opts *o, char *arg)
{
    struct ringws_token_key *k = &o->token_keys[o->cfg.n_token_keys];
    char *eq = strchr(arg, '=');

    if (o->cfg.n_token_keys == MAX_LIST)
        return -E2BIG;
    *k = (struct ringws_token_key){.file = arg};
    if (eq && !memchr(arg, '/', (size_t)(eq - arg))) {
        *eq = '\0';
        k->kid = arg;
        k->file = eq + 1;
    }
    if (!k->file[0] || (k->kid && !k->kid[0]))
        return -EINVAL;
    o->cfg.n_token_keys++;
    return 0;
}

static int main_apply(struct main_opts *o, int opt, const char *arg)
{
    struct ringws_config *cfg = &o->cfg;
    unsigned long long v;

    switch (opt) {
    case OPT_BIND: cfg->bind = arg; return 0;
    case OPT_PORT:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->port = (uint16_t)v; return 0;
    case OPT_WORKERS:
        if (main_parse_uint(arg, 1024, &v) < 0 || !v) return -EINVAL;
        cfg->workers = (unsigned)v; return 0;
    case OPT_MAX_MESSAGE:
        if (main_parse_uint(arg, 1ull << 31, &v) < 0 || !v) return -EINVAL;
        cfg->max_message = (size_t)v; return 0;
    case OPT_MIN_MSG_RATE:
        if (main_parse_uint(arg, UINT32_MAX, &v) < 0) return -EINVAL;
        cfg->min_message_rate = (unsigned)v; return 0;
    case OPT_MSG_GRACE: return main_parse_duration(arg, &cfg->message_grace_ms);
    case OPT_MAX_PARTIAL:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0 || v < 65536) return -EINVAL;
        cfg->max_partial_bytes = (size_t)v; return 0;
    case OPT_ORIGIN:
        if (cfg->n_origins == MAX_LIST) return -E2BIG;
        o->origins[cfg->n_origins++] = arg; return 0;
    case OPT_SUBPROTOCOL:
        if (cfg->n_subprotocols == MAX_LIST) return -E2BIG;
        o->subprotocols[cfg->n_subprotocols++] = arg; return 0;
    case OPT_IDLE: return main_parse_duration(arg, &cfg->idle_timeout_ms);
    case OPT_HANDSHAKE: return main_parse_duration(arg, &cfg->handshake_timeout_ms);
    case OPT_CLOSE: return main_parse_duration(arg, &cfg->close_timeout_ms);
    case OPT_MAX_CONN:
        if (main_parse_uint(arg, 1u << 24, &v) < 0 || !v) return -EINVAL;
        cfg->max_connections = (unsigned)v; return 0;
    case OPT_MAX_PER_ADDR:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->max_per_address = (unsigned)v; return 0;
    case OPT_MAX_HANDSHAKES:
        if (main_parse_uint(arg, 1u << 24, &v) < 0) return -EINVAL;
        cfg->max_handshakes = (unsigned)v; return 0;
    case OPT_ADMISSION_REFUSAL:
        if (strcmp(arg, "503") && strcmp(arg, "1013")) return -EINVAL;
        cfg->admission_refusal = (uint16_t)atoi(arg); return 0;
    case OPT_ACCEPTS_PER_TURN:
        if (main_parse_uint(arg, 1u << 24, &v) < 0) return -EINVAL;
        cfg->accepts_per_turn = (unsigned)v; return 0;
    case OPT_MAX_SENDQ:
        if (main_parse_uint(arg, 1ull << 32, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_send_queue = (size_t)v; return 0;
    case OPT_OVERFLOW:
        if (!strcmp(arg, "close")) cfg->overflow = RINGWS_OVERFLOW_CLOSE;
        else if (!strcmp(arg, "try-again")) cfg->overflow = RINGWS_OVERFLOW_TRY_AGAIN;
        else if (!strcmp(arg, "drop")) cfg->overflow = RINGWS_OVERFLOW_DROP;
        else return -EINVAL;
        return 0;
    case OPT_PUBSUB_PATH:
        if (arg[0] && arg[0] != '/') return -EINVAL;
        cfg->pubsub_path = arg[0] ? arg : NULL; return 0;
    case OPT_PUBLISH_TOKEN:
        if (!arg[0]) return -EINVAL;
        cfg->publish_token = arg; return 0;
    case OPT_FANOUT_QUEUE:
        if (main_parse_uint(arg, 1ull << 32, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_fanout_queue = (size_t)v; return 0;
    case OPT_MAX_PUBLISH:
        if (main_parse_uint(arg, 1ull << 31, &v) < 0 || !v) return -EINVAL;
        cfg->max_publish = (size_t)v; return 0;
    case OPT_MAX_INBOX:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0 || v < 1024) return -EINVAL;
        cfg->max_inbox_bytes = (size_t)v; return 0;
    case OPT_MAX_TOPICS:
        if (main_parse_uint(arg, 4096, &v) < 0 || !v) return -EINVAL;
        cfg->max_topics = (unsigned)v; return 0;
    case OPT_TOPIC:
        if (cfg->n_topic_rules == MAX_LIST) return -E2BIG;
        if (ringws_topic_rule_parse((char *)arg, &o->rules[cfg->n_topic_rules]) < 0)
            return -EINVAL;
        cfg->n_topic_rules++; return 0;
    case OPT_HISTORY_MEMORY:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0) return -EINVAL;
        cfg->max_history_bytes = (size_t)v; return 0;
    case OPT_SEQUENCE_IDLE: return main_parse_duration(arg, &cfg->sequence_idle_ms);
    case OPT_SEQUENCE_IDLE_MAX:
        if (main_parse_uint(arg, UINT32_MAX, &v) < 0) return -EINVAL;
        cfg->sequence_idle_max = (uint32_t)v; return 0;
    case OPT_ENGINE:
        if (strncmp(arg, "redis://", 8) || !arg[8]) return -EINVAL;
        cfg->engine = arg; return 0;
    case OPT_RECV_BUF:
        if (main_parse_uint(arg, 1u << 20, &v) < 0 || v < 16) return -EINVAL;
        cfg->recv_buffer_size = (unsigned)v; return 0;
    case OPT_RECV_BUFS:
        if (main_parse_uint(arg, 32768, &v) < 0 || !v || (v & (v - 1))) return -EINVAL;
        cfg->recv_buffers = (unsigned)v; return 0;
    case OPT_PLAIN_BUFS:
        cfg->plain_recv_buffers = true; return 0;
    case OPT_NO_DEFLATE:
        cfg->deflate = false; return 0;
    case OPT_TAKEOVER:
        if (cfg->n_deflate_takeover_paths == MAX_LIST) return -E2BIG;
        if (arg[0] != '/') return -EINVAL;
        o->takeover_paths[cfg->n_deflate_takeover_paths++] = arg; return 0;
    case OPT_TAKEOVER_WINDOW:
        if (main_parse_uint(arg, 15, &v) < 0 || v < 9) return -EINVAL;
        cfg->deflate_takeover_window_bits = (unsigned)v; return 0;
    case OPT_TAKEOVER_MEMORY:
        if (main_parse_uint(arg, 1ull << 40, &v) < 0) return -EINVAL;
        cfg->deflate_takeover_memory = (size_t)v; return 0;
    case OPT_TLS_CERT:
        if (cfg->n_tls_certs == MAX_LIST) return -E2BIG;
        o->certs[cfg->n_tls_certs++].cert_file = arg; return 0;
    case OPT_TLS_KEY:
        if (o->n_keys == MAX_LIST) return -E2BIG;
        o->certs[o->n_keys++].key_file = arg; return 0;
    case OPT_PLAIN_PORT:
        if (main_parse_uint(arg, 65535, &v) < 0) return -EINVAL;
        cfg->plain_listener = true;
        cfg->plain_port = (uint16_t)v; return 0;
    case OPT_TICKET_LIFETIME: {
        unsigned ms;
        if (main_parse_duration(arg, &ms) < 0 || ms < 1000) return -EINVAL;
        cfg->tls_ticket_lifetime_s = ms / 1000; return 0;
    }
    case OPT_HANDSHAKE_BUDGET: {
        unsigned ms;
        if (main_parse_duration(arg, &ms) < 0 || !ms || ms > 1000) return -EINVAL;
        cfg->tls_handshake_budget_us = ms * 1000; return 0;
    }
    case OPT_STOP_CODE:
        if (strcmp(arg, "1001") && strcmp(arg, "1012")) return -EINVAL;
        cfg->stop_code = (uint16_t)atoi(arg); return 0;
    case OPT_RECONNECT_WINDOW:
        if (main_parse_duration(arg, &cfg->reconnect_window_ms) < 0 ||
            cfg->reconnect_window_ms > 3600000) return -EINVAL;
        return 0;
    case OPT_PROXY_PROTOCOL:
        cfg->proxy_protocol = true; return 0;
    case OPT_TOKEN_KEY: return main_token_key(o, (char *)arg);
    case OPT_TOKEN_LEEWAY: {
        unsigned ms;
        if (main_parse_duration(arg, &ms) < 0 || ms % 1000 || ms > 3600000) return -EINVAL;
        cfg->token_leeway_s = ms / 1000; return 0;
    }
    case OPT_TOKEN_COOKIE:
        if (!arg[0] || strpbrk(arg, " \t;=,\"")) return -EINVAL;
        cfg->token_cookie = arg; return 0;
    case OPT_REQUIRE_TOKEN: cfg->require_token = true; return 0;
    default: return -EINVAL;
    }
}

/* The file's text, never freed: the values point into it, as the flags'
 * point into argv. */
static char *main_config_text;

_Static_assert(OPT_HELP - OPT_BIND < 64, "more options than bits in main_clear_list's mask");

/* A repeatable flag on the command line replaces the file's list instead of
 * adding to it; a certificate and its key are one list. */

static void main_clear_list(struct main_opts *o, int opt, unsigned long long *cleared)
{
    unsigned long long bit = 1ull << (opt - OPT_BIND);

    if (*cleared & bit)
        return;
    switch (opt) {
    case OPT_ORIGIN: o->cfg.n_origins = 0; break;
    case OPT_SUBPROTOCOL: o->cfg.n_subprotocols = 0; break;
    case OPT_TAKEOVER: o->cfg.n_deflate_takeover_paths = 0; break;
    case OPT_TOPIC: o->cfg.n_topic_rules = 0; break;
    case OPT_TOKEN_KEY: o->cfg.n_token_keys = 0; break;
    case OPT_TLS_CERT:
    case OPT_TLS_KEY:
        o->cfg.n_tls_certs = 0;
        o->n_keys = 0;
        bit = 1ull << (OPT_TLS_CERT - OPT_BIND) | 1ull << (OPT_TLS_KEY - OPT_BIND);
        break;
    default: return;
    }
    *cleared |= bit;
}

static char *main_skip_space(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* A config value: a bare word (no blank, not starting with '"' or '#'), or
 * "..." holding anything but '"' (the only way to write a blank or the empty
 * string).  Only a comment may follow it.  NUL-terminates the value in place;
 * returns a message for a malformed one. */
static const char *main_config_value(char *s, char **val)
{
    char *end, *rest;

    if (*s == '"') {
        end = strchr(s + 1, '"');
        if (!end)
            return "unterminated quote";
        *val = s + 1;
        rest = main_skip_space(end + 1);
    } else {
        end = s + strcspn(s, " \t");
        *val = s;
        rest = main_skip_space(end);
    }
    if (*rest && *rest != '#')
        return "text after the value (quote a value that holds blanks)";
    *end = '\0';
    return NULL;
}

/* Applies one line of a config file; 0, or -EINVAL once reported as
 * FILE:LINE: message. */
static int main_config_line(struct main_opts *o, const char *file, unsigned line, char *s)
{
    const struct option *opt = NULL;
    const char *bad = NULL;
    char *key, *val = NULL;
    size_t klen;
    int ret;

    s = main_skip_space(s);
    if (!*s || *s == '#')
        return 0;
    key = s;
    klen = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-");
    s = main_skip_space(s + klen);
    if (!klen || (*s && *s != '=' && *s != '#')) {
        fprintf(stderr, "%s:%u: expected \"key = value\"\n", file, line);
        return -EINVAL;
    }
    for (const struct option *p = main_longopts; p->name && !opt; p++)
        if (strlen(p->name) == klen && !memcmp(p->name, key, klen))
            opt = p;
    if (!opt || opt->val == OPT_CONFIG || opt->val == OPT_PRINT_CONFIG || opt->val == OPT_HELP)
        bad = "unknown key";
    else if (*s == '=' && opt->has_arg == no_argument)
        bad = "takes no value (the key alone turns it on)";
    else if (*s == '=' && (!*main_skip_space(s + 1) || *main_skip_space(s + 1) == '#'))
        bad = "needs a value";
    else if (*s != '=' && opt->has_arg != no_argument)
        bad = "needs a value (key = value)";
    if (!bad && *s == '=')
        bad = main_config_value(main_skip_space(s + 1), &val);
    if (bad) {
        fprintf(stderr, "%s:%u: %.*s: %s\n", file, line, (int)klen, key, bad);
        return -EINVAL;
    }
    ret = main_apply(o, opt->val, val);
    if (ret == -E2BIG)
        fprintf(stderr, "%s:%u: %s: more than %d values\n", file, line, opt->name, MAX_LIST);
    else if (ret < 0)
        fprintf(stderr, "%s:%u: %s: bad value: %s\n", file, line, opt->name, val);
    return ret < 0 ? -EINVAL : 0;
}

/* Reads a config file whole (at most 1 MiB) and applies it line by line. */
static int main_load_config(struct main_opts *o, const char *file)
{
    enum { MAX_CONFIG = 1 << 20 };
    FILE *f = fopen(file, "r");
    char *s, *nl;
    size_t len;
    unsigned line = 0;

    if (!f) {
        fprintf(stderr, "%s: cannot read: %s\n", file, strerror(errno));
        return -EINVAL;
    }
    main_config_text = malloc(MAX_CONFIG + 1);
    if (!main_config_text) {
        fclose(f);
        fprintf(stderr, "%s: out of memory\n", file);
        return -EINVAL;
    }
    len = fread(main_config_text, 1, MAX_CONFIG + 1, f);
    if (ferror(f) || len > MAX_CONFIG) {
        fprintf(stderr, "%s: cannot read: %s\n", file,
                ferror(f) ? strerror(errno) : "larger than 1 MiB");
        fclose(f);
        return -EINVAL;
    }
    fclose(f);
    main_config_text[len] = '\0';
    for (s = main_config_text; s < main_config_text + len; s = nl + 1) {
        nl = memchr(s, '\n', (size_t)(main_config_text + len - s));
        if (!nl)
            nl = main_config_text + len;
        *nl = '\0';
        line++;
        if (strlen(s) != (size_t)(nl - s)) {
            fprintf(stderr, "%s:%u: a NUL byte\n", file, line);
            return -EINVAL;
        }
        if (nl > s && nl[-1] == '\r')
            nl[-1] = '\0';
        if (main_config_line(o, file, line, s) < 0)
            return -EINVAL;
    }
    return 0;
}

/* The file first, then the flags over it: argv is read twice, once to find
 * --config and once to apply. */
static int main_parse_args(int argc, char **argv, struct main_opts *o)
{
    unsigned long long cleared = 0;
    const char *file = NULL;
    int opt;

    while ((opt = getopt_long(argc, argv, "h", main_longopts, NULL)) != -1) {
        if (opt == 'h' || opt == OPT_HELP) {
            main_usage(stdout);
            exit(0);
        }
        if (opt == '?') {
            main_usage(stderr);
            return -EINVAL;
        }
        if (opt == OPT_CONFIG)
            file = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "ringws: unexpected argument: %s\n", argv[optind]);
        return -EINVAL;
    }
    if (file && main_load_config(o, file) < 0)
        return -EINVAL;
    optind = 0; /* glibc: start the scan again from argv[1] */
    while ((opt = getopt_long(argc, argv, "h", main_longopts, NULL)) != -1) {
        if (opt == OPT_CONFIG)
            continue;
        if (opt == OPT_PRINT_CONFIG) {
            o->print_config = true;
            continue;
        }
        main_clear_list(o, opt, &cleared);
        if (main_apply(o, opt, optarg) < 0) {
            fprintf(stderr, "ringws: bad value for --%s: %s\n", main_find_opt(opt)->name,
                    optarg ? optarg : "");
            main_usage(stderr);
            return -EINVAL;
        }
    }
    if (o->n_keys != o->cfg.n_tls_certs) {
        fprintf(stderr, "ringws: each tls-cert needs its tls-key\n");
        return -EINVAL;
    }
    if (o->cfg.plain_listener && !o->cfg.n_tls_certs) {
        fprintf(stderr, "ringws: plain-port is for a plaintext listener beside TLS\n");
        return -EINVAL;
    }
    if ((o->cfg.require_token || o->cfg.token_cookie) && !o->cfg.n_token_keys) {
        fprintf(stderr, "ringws: require-token and token-cookie need a token-key\n");
        return -EINVAL;
    }
    return 0;
}

/* Writes "key = value", quoted where a bare word would not read back the
 * same; -EINVAL for a value the format cannot hold. */
static int main_put(FILE *f, const char *key, const char *val)
{
    bool quote = !val[0] || strpbrk(val, " \t") || val[0] == '"' || val[0] == '#';

    if (strpbrk(val, "\r\n") || (quote && strchr(val, '"'))) {
        fprintf(stderr, "ringws: the value of %s cannot be written in a config file\n", key);
        return -EINVAL;
    }
    fprintf(f, quote ? "%s = \"%s\"\n" : "%s = %s\n", key, val);
    return 0;
}

static void main_put_ms(FILE *f, const char *key, unsigned ms)
{
    if (ms % 1000)
        fprintf(f, "%s = %ums\n", key, ms);
    else
        fprintf(f, "%s = %us\n", key, ms / 1000);
}

static const char *main_fanout_name(enum ringws_fanout_policy p)
{
    switch (p) {
    case RINGWS_FANOUT_CLOSE_POLICY: return "close-1008";
    case RINGWS_FANOUT_DROP_OLDEST: return "drop-oldest";
    default: return "close-1013";
    }
}

static const char *main_overflow_name(enum ringws_overflow_policy p)
{
    switch (p) {
    case RINGWS_OVERFLOW_TRY_AGAIN: return "try-again";
    case RINGWS_OVERFLOW_DROP: return "drop";
    default: return "close";
    }
}

/* "[KID=]FILE" as main_token_key reads it back; a file whose name would
 * read as a kid cannot be written without one. */
static int main_put_token_key(FILE *f, const char *key, const struct ringws_token_key *t)
{
    char val[4096];
    const char *eq = strchr(t->file, '=');
    int n = snprintf(val, sizeof(val), "%s%s%s", t->kid ? t->kid : "", t->kid ? "=" : "",
                     t->file);

    if (n < 0 || (size_t)n >= sizeof(val) ||
        (!t->kid && eq && !memchr(t->file, '/', (size_t)(eq - t->file)))) {
        fprintf(stderr, "ringws: the value of %s cannot be written in a config file\n", key);
        return -EINVAL;
    }
    return main_put(f, key, val);
}

/* One key's lines; a key whose default is "none" is written as a comment. */
static int main_print_key(FILE *f, const struct main_opts *o, const struct option *opt)
{
    const struct ringws_config *c = &o->cfg;
    const char *k = opt->name;
    int ret = 0;

    switch (opt->val) {
    case OPT_BIND: return main_put(f, k, c->bind);
    case OPT_PORT: fprintf(f, "%s = %u\n", k, c->port); return 0;
    case OPT_WORKERS:
        if (c->workers)
            fprintf(f, "%s = %u\n", k, c->workers);
        else
            fprintf(f, "# %s =  (not set: one per online CPU)\n", k);
        return 0;
    case OPT_MAX_MESSAGE: fprintf(f, "%s = %zu\n", k, c->max_message); return 0;
    case OPT_MIN_MSG_RATE: fprintf(f, "%s = %u\n", k, c->min_message_rate); return 0;
    case OPT_MSG_GRACE: main_put_ms(f, k, c->message_grace_ms); return 0;
    case OPT_MAX_PARTIAL: fprintf(f, "%s = %zu\n", k, c->max_partial_bytes); return 0;
    case OPT_ORIGIN:
        if (!c->n_origins)
            fprintf(f, "# %s =  (none: any Origin is allowed)\n", k);
        for (size_t i = 0; i < c->n_origins && !ret; i++)
            ret = main_put(f, k, c->origins[i]);
        return ret;
    case OPT_SUBPROTOCOL:
        if (!c->n_subprotocols)
            fprintf(f, "# %s =  (none)\n", k);
        for (size_t i = 0; i < c->n_subprotocols && !ret; i++)
            ret = main_put(f, k, c->subprotocols[i]);
        return ret;
    case OPT_IDLE: main_put_ms(f, k, c->idle_timeout_ms); return 0;
    case OPT_HANDSHAKE: main_put_ms(f, k, c->handshake_timeout_ms); return 0;
    case OPT_CLOSE: main_put_ms(f, k, c->close_timeout_ms); return 0;
    case OPT_MAX_CONN: fprintf(f, "%s = %u\n", k, c->max_connections); return 0;
    case OPT_MAX_PER_ADDR: fprintf(f, "%s = %u\n", k, c->max_per_address); return 0;
    case OPT_MAX_HANDSHAKES: fprintf(f, "%s = %u\n", k, c->max_handshakes); return 0;
    case OPT_ADMISSION_REFUSAL:
        fprintf(f, "%s = %u\n", k, c->admission_refusal ? c->admission_refusal : 503u); return 0;
    case OPT_ACCEPTS_PER_TURN: fprintf(f, "%s = %u\n", k, c->accepts_per_turn); return 0;
    case OPT_MAX_SENDQ: fprintf(f, "%s = %zu\n", k, c->max_send_queue); return 0;
    case OPT_OVERFLOW: return main_put(f, k, main_overflow_name(c->overflow));
    case OPT_PUBSUB_PATH: return main_put(f, k, c->pubsub_path ? c->pubsub_path : "");
    case OPT_PUBLISH_TOKEN:
        if (c->publish_token)
            return main_put(f, k, c->publish_token);
        fprintf(f, "# %s =  (not set: only loopback peers without an Origin publish)\n", k);
        return 0;
    case OPT_FANOUT_QUEUE: fprintf(f, "%s = %zu\n", k, c->max_fanout_queue); return 0;
    case OPT_MAX_PUBLISH: fprintf(f, "%s = %zu\n", k, c->max_publish); return 0;
    case OPT_MAX_INBOX: fprintf(f, "%s = %zu\n", k, c->max_inbox_bytes); return 0;
    case OPT_MAX_TOPICS: fprintf(f, "%s = %u\n", k, c->max_topics); return 0;
    case OPT_HISTORY_MEMORY: fprintf(f, "%s = %zu\n", k, c->max_history_bytes); return 0;
    case OPT_SEQUENCE_IDLE: main_put_ms(f, k, c->sequence_idle_ms); return 0;
    case OPT_SEQUENCE_IDLE_MAX: fprintf(f, "%s = %u\n", k, c->sequence_idle_max); return 0;
    case OPT_ENGINE:
        if (c->engine)
            return main_put(f, k, c->engine);
        fprintf(f, "# %s =  (not set: in this process, a single node)\n", k);
        return 0;
    case OPT_TOPIC:
        if (!c->n_topic_rules)
            fprintf(f, "# %s =  (none: every topic close-1013, no client publishing)\n", k);
        /* A pattern is a topic name (no blank, no quote): never quoted. */
        for (size_t i = 0; i < c->n_topic_rules; i++) {
            const struct ringws_topic_rule *r = &c->topic_rules[i];
            fprintf(f, "%s = %s=%s%s", k, r->pattern, main_fanout_name(r->policy),
                    r->client_publish ? ",publish" : "");
            if (r->history)
                fprintf(f, ",history=%u", r->history);
            if (r->history_ttl_ms % 1000)
                fprintf(f, ",history-ttl=%ums", r->history_ttl_ms);
            else if (r->history_ttl_ms)
                fprintf(f, ",history-ttl=%us", r->history_ttl_ms / 1000);
            fputc('\n', f);
        }
        return 0;
    case OPT_RECV_BUF: fprintf(f, "%s = %u\n", k, c->recv_buffer_size); return 0;
    case OPT_RECV_BUFS: fprintf(f, "%s = %u\n", k, c->recv_buffers); return 0;
    case OPT_PLAIN_BUFS:
        fprintf(f, c->plain_recv_buffers ? "%s\n" : "# %s  (off)\n", k);
        return 0;
    case OPT_NO_DEFLATE:
        fprintf(f, c->deflate ? "# %s  (off: permessage-deflate accepted, stateless)\n" : "%s\n",
                k);
        return 0;
    case OPT_TAKEOVER:
        if (!c->n_deflate_takeover_paths)
            fprintf(f, "# %s =  (none: stateless on every path)\n", k);
        for (size_t i = 0; i < c->n_deflate_takeover_paths && !ret; i++)
            ret = main_put(f, k, c->deflate_takeover_paths[i]);
        return ret;
    case OPT_TAKEOVER_WINDOW: fprintf(f, "%s = %u\n", k, c->deflate_takeover_window_bits); return 0;
    case OPT_TAKEOVER_MEMORY: fprintf(f, "%s = %zu\n", k, c->deflate_takeover_memory); return 0;
    case OPT_TLS_CERT:
        if (!c->n_tls_certs)
            fprintf(f, "# %s =  (none: plaintext)\n# tls-key =\n", k);
        for (size_t i = 0; i < c->n_tls_certs && !ret; i++) {
            ret = main_put(f, k, c->tls_certs[i].cert_file);
            if (!ret)
                ret = main_put(f, "tls-key", c->tls_certs[i].key_file);
        }
        return ret;
    case OPT_PLAIN_PORT:
        if (c->plain_listener)
            fprintf(f, "%s = %u\n", k, c->plain_port);
        else
            fprintf(f, "# %s =  (not set: no plaintext listener beside TLS)\n", k);
        return 0;
    case OPT_TICKET_LIFETIME: fprintf(f, "%s = %us\n", k, c->tls_ticket_lifetime_s); return 0;
    case OPT_HANDSHAKE_BUDGET:
        fprintf(f, "%s = %ums\n", k, c->tls_handshake_budget_us / 1000);
        return 0;
    case OPT_STOP_CODE: fprintf(f, "%s = %u\n", k, c->stop_code); return 0;
    case OPT_RECONNECT_WINDOW: main_put_ms(f, k, c->reconnect_window_ms); return 0;
    case OPT_PROXY_PROTOCOL:
        fprintf(f, c->proxy_protocol ? "%s\n" : "# %s  (off: --port takes direct connections)\n", k);
        return 0;
    case OPT_TOKEN_KEY:
        if (!c->n_token_keys)
            fprintf(f, "# %s =  (none: no tokens are verified)\n", k);
        for (size_t i = 0; i < c->n_token_keys && !ret; i++)
            ret = main_put_token_key(f, k, &c->token_keys[i]);
        return ret;
    case OPT_TOKEN_LEEWAY: fprintf(f, "%s = %us\n", k, c->token_leeway_s); return 0;
    case OPT_TOKEN_COOKIE:
        if (c->token_cookie)
            return main_put(f, k, c->token_cookie);
        fprintf(f, "# %s =  (not set: no cookie carries a token)\n", k);
        return 0;
    case OPT_REQUIRE_TOKEN:
        fprintf(f, c->require_token ? "%s\n" : "# %s  (off)\n", k);
        return 0;
    default: return 0; /* tls-key (with tls-cert), and what is no setting */
    }
}

/* The effective configuration in the config file's format: fed back with
 * --config it gives the same configuration. */
static int main_print_config(FILE *f, const struct main_opts *o)
{
    fprintf(f, "# ringws configuration: read with --config FILE; flags override it.\n");
    for (const struct option *opt = main_longopts; opt->name; opt++)
        if (main_print_key(f, o, opt) < 0)
            return -EINVAL;
    return 0;
}

/* Where to point a browser: https with TLS, and the plaintext listener
 * beside it. */
static void main_print_where(const struct ringws_config *cfg)
{
    const char *lb = strchr(cfg->bind, ':') ? "[" : "", *rb = *lb ? "]" : "";
    unsigned port = ringws_server_port(main_server);

    printf("ringws listening on %s%s%s:%u%s\n", lb, cfg->bind, rb, port,
           cfg->n_tls_certs ? " (TLS)" : "");
    if (cfg->plain_listener)
        printf("plain HTTP/WebSocket listener on %s%s%s:%u\n", lb, cfg->bind, rb,
               ringws_server_plain_port(main_server));
    printf("open %s://%s%s%s:%u/ in a browser (WebSocket echo at /echo%s%s)\n",
           cfg->n_tls_certs ? "https" : "http", lb, cfg->bind, rb, port,
           cfg->pubsub_path ? ", pub/sub at " : "", cfg->pubsub_path ? cfg->pubsub_path : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const char *const ws_paths[] = {"/echo"};
    struct main_opts o = {0};
    struct sigaction sa;
    sigset_t hup;
    pthread_t reloader;
    int ret;

    ringws_config_init(&o.cfg);
    o.cfg.port = 8080;
    o.cfg.ws_paths = ws_paths;
    o.cfg.n_ws_paths = 1;
    o.cfg.deflate = true; /* --no-deflate */
    o.cfg.cb.on_message = main_on_message;
    o.cfg.origins = o.origins;
    o.cfg.subprotocols = o.subprotocols;
    o.cfg.deflate_takeover_paths = o.takeover_paths;
    o.cfg.topic_rules = o.rules;
    o.cfg.pubsub_path = "/ws";
    o.cfg.tls_certs = o.certs;
    /* SIGTERM is how a service manager restarts the binary: clients are
     * told to come back, spread over the window (docs/DEPLOY.md). */
    o.cfg.stop_code = 1012;
    o.cfg.reconnect_window_ms = 5000;
    o.cfg.token_keys = o.token_keys;
    if (main_parse_args(argc, argv, &o) < 0)
        return 2;
    if (o.print_config) {
        if (main_print_config(stdout, &o) < 0)
            return 2;
        return fflush(stdout) ? 1 : 0;
    }

    ret = ringws_server_create(&o.cfg, &main_server);
    if (ret == -EIO && o.cfg.n_tls_certs) {
        fprintf(stderr, "ringws: cannot use the TLS certificates (the reason is above)\n");
        return 1;
    }
    if (ret == -ENOKEY) {
        fprintf(stderr, "ringws: cannot use the token keys (the reason is above)\n");
        return 1;
    }
    if (ret < 0) {
        fprintf(stderr, "ringws: cannot listen on %s:%u: %s\n", o.cfg.bind, o.cfg.port,
                strerror(-ret));
        return 1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = main_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigaddset(&hup, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
    if (pthread_create(&reloader, NULL, main_reload_thread, &hup) != 0) {
        fprintf(stderr, "ringws: cannot start the SIGHUP thread\n");
        ringws_server_destroy(main_server);
        return 1;
    }

    main_print_where(&o.cfg);
    ret = ringws_server_run(main_server);
    atomic_store(&main_ending, true);
    pthread_kill(reloader, SIGHUP);
    pthread_join(reloader, NULL);
    {
        ringws_server *srv = main_server;
        main_server = NULL; /* a late signal must not reach a freed server */
        ringws_server_destroy(srv);
    }
    if (ret < 0) {
        fprintf(stderr, "ringws: %s\n", strerror(-ret));
        return 1;
    }
    return 0;
}
