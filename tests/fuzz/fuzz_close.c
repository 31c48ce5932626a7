/* fuzz_close.c - close payloads, read and written, against the rules.
 *
 * Why it exists: a close frame's payload is the one control payload the
 * server must judge (RFC 6455 sections 5.5.1 and 7.4) and the one it must
 * build from a reason of any length.  The input is taken as a received
 * payload (big-endian code, then reason) and judged by ws_close_parse and
 * by the plain rules in fuzz_common.h; then the same code and reason go
 * through ws_close_payload, whose output must be a cut of the reason at a
 * code point boundary that fits a control frame, and must read back through
 * ws_close_parse as what was written. */
#include "frame.h"
#include "fuzz_common.h"

#define REASON_ROOM (WS_MAX_CONTROL_PAYLOAD - 2)

static void check_parse(const uint8_t *p, size_t n)
{
    uint16_t code = 0, want_code = 0;
    uint16_t rc = ws_close_parse(p, n, &code);
    uint16_t want = fuzz_close_ref(p, n, &want_code);

    FUZZ_CHECK(rc == want, "ws_close_parse of %zu bytes: %u, rules say %u", n, rc, want);
    if (rc == 0)
        FUZZ_CHECK(code == want_code, "code %u, payload says %u", code, want_code);
}

/* Longest prefix of a valid reason that fits and ends between code points,
 * found by walking the code points rather than by looking at the cut. */
static size_t ref_reason_cut(const uint8_t *reason, size_t len)
{
    uint8_t after[REASON_ROOM];
    size_t bad, fit = len < REASON_ROOM ? len : REASON_ROOM;

    fuzz_utf8_ref(reason, fit, &bad, after);
    while (fit > 0 && after[fit - 1] != FUZZ_UTF8_VALID)
        fit--;
    return fit;
}

static void check_build(const uint8_t *data, size_t size)
{
    uint16_t code = size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0;
    const uint8_t *reason = data + (size >= 2 ? 2 : size);
    size_t reason_len = size >= 2 ? size - 2 : 0, bad;
    bool reason_ok = fuzz_utf8_ref(reason, reason_len, &bad, NULL) == FUZZ_UTF8_VALID;
    /* Exactly the size frame.h gives, so a write past it faults. */
    uint8_t *out = malloc(WS_MAX_CONTROL_PAYLOAD);
    size_t n;

    FUZZ_CHECK(out != NULL, "out of memory");
    n = ws_close_payload(out, code, (const char *)reason, reason_len);
    if (code == 0) {
        FUZZ_CHECK(n == 0, "code 0 wrote %zu bytes", n);
        free(out);
        return;
    }
    FUZZ_CHECK(n >= 2 && n <= WS_MAX_CONTROL_PAYLOAD, "payload of %zu bytes", n);
    FUZZ_CHECK(out[0] == data[0] && out[1] == data[1], "code written as %02x%02x",
               out[0], out[1]);
    FUZZ_CHECK(memcmp(out + 2, reason, n - 2) == 0, "reason is not a prefix");
    if (reason_len <= REASON_ROOM)
        FUZZ_CHECK(n - 2 == reason_len, "reason of %zu bytes cut to %zu", reason_len,
                   n - 2);
    if (reason_ok) {
        size_t want = ref_reason_cut(reason, reason_len);

        FUZZ_CHECK(n - 2 == want, "valid reason of %zu bytes cut to %zu, not %zu",
                   reason_len, n - 2, want);
    }

    /* What was written must read back, or be refused for the right cause. */
    uint16_t back = 0;
    uint16_t rc = ws_close_parse(out, n, &back);
    if (!fuzz_close_code_ok(code))
        FUZZ_CHECK(rc == WS_CLOSE_PROTOCOL_ERROR, "code %u read back with %u", code, rc);
    else if (reason_ok)
        FUZZ_CHECK(rc == 0 && back == code, "code %u read back as %u (rc %u)", code,
                   back, rc);
    free(out);
}

/* ws_close_code_valid is small enough to check over its whole domain. */
static void check_all_codes(void)
{
    for (uint32_t c = 0; c <= UINT16_MAX; c++)
        FUZZ_CHECK(ws_close_code_valid((uint16_t)c) == fuzz_close_code_ok((uint16_t)c),
                   "ws_close_code_valid(%u)", c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool codes_checked;

    if (!codes_checked) {
        check_all_codes();
        codes_checked = true;
    }
    check_parse(data, size);
    check_build(data, size);
    return 0;
}
