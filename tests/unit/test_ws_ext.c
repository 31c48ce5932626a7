/* test_ws_ext.c - unit tests of the Sec-WebSocket-Extensions parser: the
 * grammar of RFC 6455 9.1 (several offers, parameters, quoted values, case,
 * optional whitespace, empty list elements), RFC 7692 7.1's rules for the
 * permessage-deflate parameters, and where a malformed field stops.  Every
 * input ends at the last readable byte (guard.h). */
#include "ws_ext.h"

#include <string.h>

#include "check.h"
#include "guard.h"

#define MAX_OFFERS 4

static struct ws_pmd_offer offers[MAX_OFFERS];
static size_t n_offers;
static struct ws_ext_stop stop;

static int parse(const char *text)
{
    size_t n = strlen(text);
    const char *v = (const char *)guard_place((const uint8_t *)text, n);

    memset(offers, 0xA5, sizeof(offers));
    stop = (struct ws_ext_stop){0};
    return ws_ext_parse(v, n, offers, MAX_OFFERS, &n_offers, &stop);
}

/* A malformed field: refused at byte pos. */
static void check_bad(const char *text, size_t pos)
{
    int r = parse(text);

    CHECKF(r == -1 && stop.pos == pos && stop.why, "\"%s\": %d, stopped at %zu (%s), want %zu",
           text, r, stop.pos, stop.why ? stop.why : "-", pos);
}

/* One permessage-deflate offer, valid or declined. */
static const struct ws_pmd_offer *one(const char *text)
{
    int r = parse(text);

    CHECKF(r == 0 && n_offers == 1, "\"%s\": %d, %zu offers (%s at %zu)", text, r, n_offers,
           stop.why ? stop.why : "-", stop.pos);
    return &offers[0];
}

static void check_declined(const char *text)
{
    const struct ws_pmd_offer *o = one(text);

    CHECKF(!o->valid && o->declined, "\"%s\" accepted", text);
}

static void test_plain_offers(void)
{
    const struct ws_pmd_offer *o = one("permessage-deflate");

    CHECK(o->valid && !o->server_no_context_takeover && !o->client_no_context_takeover &&
          o->server_max_window_bits == 0 && o->client_max_window_bits == 0);
    /* What browsers send. */
    o = one("permessage-deflate; client_max_window_bits");
    CHECK(o->valid && o->client_max_window_bits == WS_PMD_BITS_ANY);
    o = one("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=15; client_max_window_bits=8");
    CHECK(o->valid && o->server_no_context_takeover && o->client_no_context_takeover &&
          o->server_max_window_bits == 15 && o->client_max_window_bits == 8);
    o = one("permessage-deflate;server_max_window_bits=9");
    CHECK(o->valid && o->server_max_window_bits == 9);
}

static void test_several(void)
{
    /* In the order sent, across unknown extensions, which are skipped. */
    CHECK(parse("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10, "
                "foo; bar=\"baz\"; qux, permessage-deflate") == 0);
    CHECK(n_offers == 2 && offers[0].server_max_window_bits == 10 &&
          offers[1].valid && offers[1].server_max_window_bits == 0);
    /* Offers beyond the caller's room are counted, not written. */
    CHECK(parse("permessage-deflate, permessage-deflate, permessage-deflate, "
                "permessage-deflate, permessage-deflate; client_max_window_bits=9") == 0);
    CHECK(n_offers == 5);
    /* Only extensions we do not know: no offer, no error. */
    CHECK(parse("foo, bar; baz=1") == 0 && n_offers == 0);
}

static void test_quoted(void)
{
    const struct ws_pmd_offer *o = one("permessage-deflate; client_max_window_bits=\"10\"");

    CHECK(o->valid && o->client_max_window_bits == 10);
    o = one("permessage-deflate; server_max_window_bits=\"1\\5\"");
    CHECK(o->valid && o->server_max_window_bits == 15);
    CHECK(parse("foo; a=\"x-y.z\"") == 0 && n_offers == 0);
    /* The unescaped text must be a token. */
    check_bad("foo; a=\"x y\"", 9);
    check_bad("foo; a=\"\"", 8);
    check_bad("foo; a=\"a,b\"", 9);
    check_bad("foo; a=\"a\\ b\"", 10);
    check_bad("foo; a=\"abc", 11);
    check_bad("foo; a=\"abc\\", 12);
    check_bad("foo; a=\"a\x01\"", 9);
}

static void test_case_and_space(void)
{
    const struct ws_pmd_offer *o = one("PerMessage-Deflate ;\tServer_No_Context_Takeover ; "
                                       "CLIENT_MAX_WINDOW_BITS = 12 ");

    CHECK(o->valid && o->server_no_context_takeover && o->client_max_window_bits == 12);
    /* Empty list elements are skipped. */
    CHECK(parse(" , ,permessage-deflate,, foo ,") == 0 && n_offers == 1 && offers[0].valid);
}

static void test_declined(void)
{
    check_declined("permessage-deflate; server_no_context_takeover; server_no_context_takeover");
    check_declined("permessage-deflate; client_max_window_bits; client_max_window_bits=9");
    check_declined("permessage-deflate; server_max_window_bits=8; server_max_window_bits=8");
    check_declined("permessage-deflate; mystery");
    check_declined("permessage-deflate; server_no_context_takeover=1");
    check_declined("permessage-deflate; client_no_context_takeover=\"x\"");
    check_declined("permessage-deflate; server_max_window_bits");
    static const char *const bad_bits[] = {"7", "16", "0", "08", "015", "1a", "-9", "99999"};
    for (size_t i = 0; i < sizeof(bad_bits) / sizeof(bad_bits[0]); i++) {
        char text[96];
        snprintf(text, sizeof(text), "permessage-deflate; server_max_window_bits=%s", bad_bits[i]);
        check_declined(text);
        snprintf(text, sizeof(text), "permessage-deflate; client_max_window_bits=%s", bad_bits[i]);
        check_declined(text);
    }
    /* A declined offer does not hide the next one. */
    CHECK(parse("permessage-deflate; x, permessage-deflate; client_no_context_takeover") == 0);
    CHECK(n_offers == 2 && !offers[0].valid && offers[1].valid &&
          offers[1].client_no_context_takeover);
}

static void test_malformed(void)
{
    check_bad("", 0);
    check_bad("  ", 2);
    check_bad(",", 1);
    check_bad("permessage-deflate;", 19);
    check_bad("permessage-deflate; ", 20);
    check_bad("permessage-deflate; =1", 20);
    check_bad("permessage-deflate; a=", 22);
    check_bad("permessage-deflate; a= ;", 23);
    check_bad("permessage-deflate x", 19);
    check_bad("permessage-deflate; a b", 22);
    check_bad("permessage-deflate; a=1 2", 24);
    check_bad(";a", 0);
    check_bad("foo, (bar)", 5);
    check_bad("foo/bar", 3);
    check_bad("permessage-deflate; client_max_window_bits=\"10", 46);
    check_bad("p\xc3\xa9", 1);
    /* A malformed extension after a valid offer spoils the whole field. */
    check_bad("permessage-deflate, foo;", 24);
}

/* The answer to the single offer `text` with the server's takeover window
 * (0: stateless only); NULL when declined. */
static const char *answer(const char *text, unsigned takeover_bits)
{
    static char out[WS_PMD_ANSWER_MAX];
    struct ws_pmd_agreed a;

    if (!ws_pmd_agree(one(text), takeover_bits, &a))
        return NULL;
    CHECKF(ws_pmd_answer(&a, out, sizeof(out)) > 0, "\"%s\": no room for the answer", text);
    return out;
}

static void check_answer(const char *text, unsigned takeover_bits, const char *want)
{
    const char *got = answer(text, takeover_bits);

    CHECKF(want ? got && !strcmp(got, want) : !got, "\"%s\" (takeover %u): \"%s\", want \"%s\"",
           text, takeover_bits, got ? got : "(declined)", want ? want : "(declined)");
}

#define PMD "permessage-deflate"
#define BOTH_NCT "; server_no_context_takeover; client_no_context_takeover"

static void test_agree_stateless(void)
{
    check_answer(PMD, 0, PMD BOTH_NCT);
    check_answer(PMD "; client_max_window_bits", 0, PMD BOTH_NCT);
    check_answer(PMD "; client_max_window_bits=9", 0, PMD BOTH_NCT);
    check_answer(PMD "; server_max_window_bits=15", 0,
                 PMD "; server_no_context_takeover; server_max_window_bits=15"
                     "; client_no_context_takeover");
    check_answer(PMD "; server_max_window_bits=14", 0, NULL);
    check_answer(PMD "; mystery", 0, NULL);
}

/* RFC 7692 7.1.2: each direction's window as the offer bounds it, named in
 * the answer only where the offer named it; context kept only where the
 * offer lets it. */
static void test_agree_takeover(void)
{
    struct ws_pmd_agreed a;
    char small[16];

    check_answer(PMD, 11, PMD "; client_no_context_takeover");
    check_answer(PMD "; client_max_window_bits", 11, PMD "; client_max_window_bits=11");
    check_answer(PMD "; client_max_window_bits=9", 11, PMD "; client_max_window_bits=9");
    check_answer(PMD "; client_max_window_bits=15", 11, PMD "; client_max_window_bits=11");
    check_answer(PMD "; client_max_window_bits=8", 11, PMD "; client_max_window_bits=8");
    check_answer(PMD "; server_max_window_bits=10", 11,
                 PMD "; server_max_window_bits=10; client_no_context_takeover");
    check_answer(PMD "; server_max_window_bits=15; client_max_window_bits", 11,
                 PMD "; server_max_window_bits=11; client_max_window_bits=11");
    check_answer(PMD "; server_max_window_bits=9; client_max_window_bits=12", 13,
                 PMD "; server_max_window_bits=9; client_max_window_bits=12");
    /* 8 bits is no window a raw zlib stream keeps to. */
    check_answer(PMD "; server_max_window_bits=8", 11, NULL);
    check_answer(PMD "; server_no_context_takeover; client_max_window_bits", 11,
                 PMD "; server_no_context_takeover; client_max_window_bits=11");
    check_answer(PMD "; client_no_context_takeover; client_max_window_bits=10", 11,
                 PMD "; client_no_context_takeover");
    check_answer(PMD "; server_no_context_takeover; client_no_context_takeover", 11,
                 PMD BOTH_NCT);
    /* Stateless outbound is the 32 KiB compressor: a bound below 15 is
     * declined as in the stateless mode. */
    check_answer(PMD "; server_no_context_takeover; server_max_window_bits=10", 11, NULL);
    CHECK(ws_pmd_agree(one(PMD "; server_max_window_bits=12; client_max_window_bits"), 11, &a) &&
          a.server_bits == 11 && a.client_bits == 11);
    CHECK(ws_pmd_agree(one(PMD "; client_no_context_takeover"), 15, &a) && a.server_bits == 15 &&
          a.client_bits == 0);
    CHECK(ws_pmd_answer(&a, small, sizeof(small)) == 0);
}

int main(void)
{
    guard_setup(4096);
    test_plain_offers();
    test_several();
    test_quoted();
    test_case_and_space();
    test_declined();
    test_malformed();
    test_agree_stateless();
    test_agree_takeover();
    return check_done("ws_ext");
}
