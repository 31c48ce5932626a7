/* fuzz_engine.c - the Redis engine's text formats (engine_proto.h) against
 * their promises, on any bytes.
 *
 * Why it exists: a channel's messages and a cluster's errors come from the
 * network.  A message that parses has a payload inside the input that ends
 * it, an offset from 1 below 2^53, an epoch of lowercase hex, and a text
 * payload that is UTF-8; written again in the same format it parses to
 * the same.  A channel's topic lies inside it; a redirection names a slot
 * below 16384 and a port from 1.  The input is one heap copy of exactly
 * its size, so any read past it faults. */
#include "engine_proto.h"
#include "fuzz_common.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    struct engine_msg m, again;
    struct engine_redirect r;
    const char *name;
    size_t len;

    memcpy(s, data, size);
    if (engine_msg_parse(s, size, &m) == 0) {
        char *w = malloc(size + 1);
        int n;
        FUZZ_CHECK(m.payload >= s && m.payload + m.len == s + size, "payload outside the input");
        FUZZ_CHECK(m.offset >= 1 && m.offset < (1ull << 53), "offset %llu",
                   (unsigned long long)m.offset);
        for (unsigned i = 0; i < ENGINE_EPOCH_LEN; i++)
            FUZZ_CHECK((m.epoch[i] >= '0' && m.epoch[i] <= '9') ||
                       (m.epoch[i] >= 'a' && m.epoch[i] <= 'f'), "epoch digit %u", i);
        FUZZ_CHECK(m.binary || utf8_valid((const uint8_t *)m.payload, m.len), "text not UTF-8");
        n = snprintf(w, size + 1, "%.16s %llu %c %llu ", m.epoch, (unsigned long long)m.offset,
                     m.binary ? 'b' : 't', (unsigned long long)m.published_us);
        if (n > 0 && (size_t)n + m.len <= size) {
            memcpy(w + n, m.payload, m.len);
            FUZZ_CHECK(engine_msg_parse(w, (size_t)n + m.len, &again) == 0 &&
                       again.offset == m.offset && again.binary == m.binary &&
                       again.published_us == m.published_us &&
                       again.len == m.len && !memcmp(again.epoch, m.epoch, ENGINE_EPOCH_LEN),
                       "written again, it parses differently");
        }
        free(w);
    }
    if (engine_channel_topic(s, size, &name, &len))
        FUZZ_CHECK(name > s && name + len < s + size && len, "topic outside the channel");
    if (engine_redirect_parse(s, size, &r) == 0)
        FUZZ_CHECK(r.slot < 16384 && r.port && r.host[0] && strlen(r.host) < sizeof(r.host),
                   "redirection slot %u port %u", r.slot, r.port);
    free(s);
    return 0;
}
