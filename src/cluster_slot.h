/* cluster_slot.h - the Redis Cluster hash slot of a key.
 *
 * Why it exists: a Redis Cluster serves each of its 16384 slots from one
 * master; the Redis engine (docs/CLUSTER.md) finds a topic's master by the
 * slot of the topic's keys.  Pure: no state, no I/O. */
#ifndef RINGWS_CLUSTER_SLOT_H
#define RINGWS_CLUSTER_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define CLUSTER_SLOTS 16384u

/* CRC16/XMODEM of p[0..n). */
uint16_t cluster_crc16(const void *p, size_t n);
/* The slot of a key of n bytes: of its hash tag (what lies between its
 * first '{' and the next '}', when not empty), else of the whole key. */
uint16_t cluster_slot(const char *key, size_t n);

#endif
