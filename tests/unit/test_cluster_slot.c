/* test_cluster_slot.c - hash slots against the ones Redis 7.0's CLUSTER
 * KEYSLOT answered for the same keys, and CRC16 against the check value
 * of the Redis Cluster specification.
 *
 * Why it exists: a slot computed differently from Redis sends every
 * command of a topic to the wrong master; every key sits at the end of a
 * page followed by an inaccessible one, so that a read past it crashes. */
#include <string.h>

#include "check.h"
#include "cluster_slot.h"
#include "guard.h"

static const struct {
    const char *key;
    uint16_t slot;
} slots[] = {
    {"123456789", 12739},
    {"foo", 12182},
    {"{user1000}.following", 3443},
    {"ringws:{news}:m", 5161},   /* a topic's keys and channel share */
    {"ringws:{news}:c", 5161},   /* the topic's own slot */
    {"news", 5161},
    {"a{}b", 13694},             /* an empty tag: the whole key */
    {"{}x", 10595},
    {"x{", 3596},                /* no closing brace: the whole key */
    {"{a}{b}", 15495},           /* the first tag only */
    {"chat.room/42@x:y~_-", 8260},
    {"", 0},
};

int main(void)
{
    guard_setup(64);
    CHECK(cluster_crc16("123456789", 9) == 0x31c3);
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        size_t n = strlen(slots[i].key);
        uint16_t s = cluster_slot((const char *)guard_place((const uint8_t *)slots[i].key, n), n);
        CHECKF(s == slots[i].slot, "%s: slot %u, Redis says %u", slots[i].key, s,
               slots[i].slot);
    }
    return check_done("cluster_slot");
}
