/* engine_proto.h - what the Redis engine reads from Redis that it did not
 * parse with hiredis: a channel's message, a channel's name, a redirection.
 *
 * Why it exists: these bytes cross the network (another node's publish, a
 * cluster's error) and reach subscribers as frames, so they are parsed by
 * pure functions that a unit test and a fuzzer check alone
 * (docs/CLUSTER.md, "Keys").  No state, no I/O, no allocation. */
#ifndef RINGWS_ENGINE_PROTO_H
#define RINGWS_ENGINE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENGINE_EPOCH_LEN 16
/* Offsets stay below 2^53 (docs/PUBSUB.md). */
#define ENGINE_MAX_OFFSET ((1ull << 53) - 1)

/* "EPOCH OFFSET TYPE US PAYLOAD": 16 lowercase hex digits, a decimal
 * offset from 1, `t` (the payload is UTF-8) or `b`, the publishing node's
 * clock (CLOCK_REALTIME, microseconds, decimal), the payload (the rest,
 * maybe empty), one space between each. */
struct engine_msg {
    char epoch[ENGINE_EPOCH_LEN];
    uint64_t offset;
    uint64_t published_us;
    bool binary;
    const char *payload; /* inside the input */
    size_t len;
};

/* 0, or -EINVAL (malformed) or -EILSEQ (a text payload not UTF-8). */
int engine_msg_parse(const char *s, size_t n, struct engine_msg *out);

/* The topic of a channel "ringws:{TOPIC}:c" (a valid topic name); false
 * for any other channel. */
bool engine_channel_topic(const char *ch, size_t n, const char **name, size_t *len);

/* A cluster's redirection: "MOVED SLOT HOST:PORT" or "ASK SLOT HOST:PORT"
 * (HOST an IPv4 or IPv6 address as Redis writes it, without brackets). */
struct engine_redirect {
    bool ask;
    uint16_t slot;
    char host[46];
    uint16_t port;
};

/* 0, or -EINVAL for any other error text. */
int engine_redirect_parse(const char *s, size_t n, struct engine_redirect *out);

#endif
