/* pubsub_proto.h - the pure parts of publish/subscribe: topic names, topic
 * lists, the subscriber connection's commands, topic rules and the head of
 * a ringws.v1 message frame.
 *
 * Why it exists: everything a client can put in front of the fan-out engine
 * (a query string, a command frame) is parsed here, without allocation or
 * I/O, so that it can be unit-tested and fuzzed alone.  See docs/PUBSUB.md. */
#ifndef RINGWS_PUBSUB_PROTO_H
#define RINGWS_PUBSUB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "frame.h"
#include "ringws.h"

/* True when p[0..n) is a valid topic name (1..RINGWS_MAX_TOPIC bytes of
 * A-Z a-z 0-9 and - . _ ~ : / @). */
bool topic_name_valid(const char *p, size_t n);

/* Walks a comma-separated topic list: returns the next name in *name and *len
 * and advances *pos; 0 at the end, 1 for a name, -EINVAL for an empty or
 * invalid name (the list is then invalid as a whole). */
int topic_list_next(const char *list, size_t list_len, size_t *pos,
                    const char **name, size_t *len);

/* True when the list holds at least one name and every name is valid. */
bool topic_list_valid(const char *list, size_t list_len);

/* Finds "KEY=" among the &-separated parameters of a URL query (not
 * percent-decoded: topic names and tokens need no escaping).  Returns true
 * and the value of the first when present. */
bool query_param_find(const char *query, size_t query_len, const char *key,
                      const char **value, size_t *value_len);

/* query_param_find for "topics". */
bool topic_query_find(const char *query, size_t query_len, const char **value,
                      size_t *value_len);

/* A subscriber's position in a topic: "TOPIC:EPOCH:OFFSET" (the topic may
 * hold ':'; the last two fields are the epoch, 16 lowercase hex digits,
 * and the offset, decimal below 2^53). */
#define TOPIC_POS_EPOCH_LEN 16
#define TOPIC_POS_MAX_OFFSET ((1ull << 53) - 1)

struct topic_pos {
    const char *topic;
    size_t topic_len;
    char epoch[TOPIC_POS_EPOCH_LEN];
    uint64_t offset;
};

/* Parses one position; 0 or -EINVAL. */
int topic_pos_parse(const char *p, size_t n, struct topic_pos *out);

/* True when positions (comma-separated, non-empty) are all valid, each
 * names a topic of the valid topic list, and no topic is named twice. */
bool topic_pos_list_valid(const char *topics, size_t topics_len, const char *positions,
                          size_t positions_len);

/* The position of a valid position list that names the topic; false when
 * none does. */
bool topic_pos_find(const char *positions, size_t positions_len, const char *topic,
                    size_t topic_len, struct topic_pos *out);

enum pubsub_cmd_type {
    PUBSUB_CMD_SUB = 1,
    PUBSUB_CMD_UNSUB,
    PUBSUB_CMD_PUB,
    PUBSUB_CMD_AUTH, /* a fresh token for the connection */
};

/* One command frame of a subscriber connection. */
struct pubsub_cmd {
    enum pubsub_cmd_type type;
    const char *arg;       /* SUB/UNSUB: the topic list; PUB: the topic;
                            * AUTH: the token (not checked here) */
    size_t arg_len;
    const char *payload;   /* PUB only: everything after the topic and one space */
    size_t payload_len;
    const char *positions; /* SUB only: the positions after the list and one
                            * space (topic_pos_list_valid); NULL: none */
    size_t positions_len;
};

/* Parses a command; 0, or -EINVAL with *why set to a short reason. */
int pubsub_cmd_parse(const char *p, size_t n, struct pubsub_cmd *cmd,
                     const char **why);

/* True when p[0..n) is a topic pattern: a topic name, a topic-name prefix
 * followed by '*', or "*" alone. */
bool topic_pattern_valid(const char *p, size_t n);

/* True when the NUL-terminated pattern matches the topic. */
bool topic_pattern_match(const char *pattern, const char *topic, size_t len);

/* The first rule whose pattern matches topic, or NULL. */
const struct ringws_topic_rule *topic_rule_match(const struct ringws_topic_rule *rules,
                                                 size_t n_rules, const char *topic,
                                                 size_t len);

/* The head of a message's ringws.v1 frame (docs/PUBSUB.md): the frame
 * header (FIN, the raw frame's opcode, the length of all that follows),
 * then "msg TOPIC EPOCH OFFSET" and LF; the payload follows it unchanged.
 * With deflated, the payload is a compressed message (permessage-deflate:
 * RSV1 set) and the line goes in a stored deflate block before it (RFC 1951
 * 3.2.4: BFINAL 0, BTYPE 00, LEN and its complement), so that the frame
 * inflates to the line and the payload with no second compression: the
 * payload's matches reach no further back than its own start.  Written to
 * out; returns its length, or 0 when cap is too small (ENVELOPE_HEAD_MAX
 * always suffices). */
#define ENVELOPE_STORED_HDR 5
#define ENVELOPE_HEAD_MAX                                                                         \
    (WS_MAX_SERVER_HEADER + ENVELOPE_STORED_HDR + 4 + RINGWS_MAX_TOPIC + 1 +                    \
     TOPIC_POS_EPOCH_LEN + 1 + 20 + 1)
size_t envelope_head(uint8_t *out, size_t cap, unsigned opcode, bool deflated, const char *topic,
                     size_t topic_len, const char epoch[TOPIC_POS_EPOCH_LEN], uint64_t offset,
                     size_t payload_len);

/* A frame kept as two pieces, its head and a payload held elsewhere: the
 * bytes from byte off (below head_len + payload_len) to the end, in iov;
 * returns how many pieces (1 or 2). */
unsigned envelope_pieces(const uint8_t *head, size_t head_len, const uint8_t *payload,
                         size_t payload_len, size_t off, struct iovec iov[2]);

#endif
