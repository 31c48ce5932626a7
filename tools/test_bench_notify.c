/* test_bench_notify.c - checks of the echo mode's JSON notifications.
 *
 * Why it exists: the echo --notifications runs measure a server's
 * permessage-deflate on what browsers send, which holds only if every entry
 * of the pool is what it claims: exactly --size bytes of valid JSON, all
 * distinct, and compressed as RFC 7692 7.2.1 says, so that a peer that
 * appends 00 00 ff ff and inflates with no context gets the entry back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"
#include "../tests/unit/check.h"
#include "../tests/unit/peer_inflate.h"

static void test_pool(size_t size)
{
    struct bench_notify n;
    uint8_t *back = malloc(size + 1);
    size_t z_total = 0;

    CHECK(back != NULL);
    CHECK(notify_build(&n, size, true) == 0);
    CHECK(n.count == BENCH_NOTIFY_COUNT && n.size == size);
    for (unsigned k = 0; k < n.count && back; k++) {
        const uint8_t *e = n.plain + (size_t)k * size;
        size_t zl = n.z_off[k + 1] - n.z_off[k], got = 0;
        const char *msg;
        json_error_t err;
        json_t *j = json_loadb((const char *)e, size, 0, &err);

        CHECK(j != NULL && json_is_object(j));
        CHECK(j && !strcmp(json_string_value(json_object_get(j, "type")), "notification"));
        json_decref(j);
        if (k)
            CHECK(memcmp(e, e - size, size) != 0);
        CHECK(zl > 0 && zl <= size + BENCH_NOTIFY_SLACK);
        CHECK(peer_inflate(n.z + n.z_off[k], zl, back, size + 1, &got, &msg) ==
                  PEER_INFLATE_OPEN &&
              got == size);
        CHECK(!memcmp(back, e, size));
        z_total += zl;
    }
    /* JSON of words compresses even alone: about 0.75 of its size at 200
     * bytes, under a third from 4 KiB. */
    CHECK(z_total < (size_t)n.count * size);
    if (size >= 4096)
        CHECK(z_total * 3 < (size_t)n.count * size);
    notify_free(&n);
    free(back);
}

int main(void)
{
    struct bench_notify n;

    CHECK(notify_build(&n, BENCH_NOTIFY_MIN - 1, false) == -EINVAL);
    notify_free(&n);
    CHECK(notify_build(&n, BENCH_NOTIFY_MAX + 1, false) == -EINVAL);
    notify_free(&n);
    CHECK(notify_build(&n, 200, false) == 0 && n.z == NULL);
    notify_free(&n);
    /* Every size near the smallest (where the words left after the head
     * are fewest, and each cut falls elsewhere), then a spread. */
    for (size_t size = BENCH_NOTIFY_MIN; size < 400; size += size < 160 ? 1 : 13)
        test_pool(size);
    test_pool(4096);
    test_pool(BENCH_NOTIFY_MAX);
    return check_done("bench_notify");
}
