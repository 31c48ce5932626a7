/* test_simd.c - every vector routine against its scalar twin.
 *
 * Why it exists: the vector versions of unmasking, UTF-8 validation and
 * header scanning must give exactly the scalar answers for every length,
 * alignment and split, and must never read a byte past the input.  Inputs
 * are tried at every alignment in a buffer, and again ending at the last
 * byte of a page followed by an inaccessible one, so an over-read crashes
 * instead of passing by luck.  A variant this CPU lacks is skipped with a
 * note. */
#include "check.h"
#include "simd.h"
#include "unmask.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_LEN 300
#define MAX_ALIGN 64

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* The last byte of `guard_page` is followed by a PROT_NONE page. */
static uint8_t *guard_page;
static size_t page_size;

static void guard_init(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *m = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + page_size, page_size, PROT_NONE) != 0) {
        perror("mmap");
        exit(1);
    }
    guard_page = m;
}

/* Copies src[0..n) so that it ends at the page end. */
static uint8_t *at_page_end(const uint8_t *src, size_t n)
{
    uint8_t *p = guard_page + page_size - n;
    memcpy(p, src, n);
    return p;
}

/* ---- unmasking ---- */

typedef unsigned unmask_fn(uint8_t *p, size_t n, const uint8_t mask[4], unsigned offset);

static void check_unmask_one(const char *name, unmask_fn *f, uint8_t *dst, const uint8_t *src,
                             size_t n, unsigned offset)
{
    static uint8_t want[70000];
    uint8_t mask[4];
    unsigned r;

    fill_random(mask, 4);
    /* The definition, byte by byte: the scalar variant is under test too. */
    for (size_t i = 0; i < n; i++)
        want[i] = (uint8_t)(src[i] ^ mask[(offset + i) & 3]);
    unsigned want_r = (unsigned)((offset + n) & 3);
    memmove(dst, src, n);
    r = f(dst, n, mask, offset);
    CHECKF(r == want_r && memcmp(dst, want, n) == 0, "%s len %zu offset %u", name, n, offset);
}

static void test_unmask(const char *name, unmask_fn *f)
{
    static uint8_t buf[MAX_ALIGN + 70000];
    uint8_t src[70000];

    for (size_t n = 0; n <= MAX_LEN; n++) {
        for (size_t a = 0; a < MAX_ALIGN; a++) {
            fill_random(src, n);
            check_unmask_one(name, f, buf + a, src, n, (unsigned)(a + n) & 3);
        }
        for (unsigned off = 0; off < 4; off++) {
            fill_random(src, n);
            check_unmask_one(name, f, guard_page + page_size - n, src, n, off);
        }
    }
    for (int k = 0; k < 50; k++) {
        size_t n = rnd() % sizeof src;
        fill_random(src, n);
        check_unmask_one(name, f, buf + rnd() % MAX_ALIGN, src, n, rnd() & 3);
    }
    /* Unmasking twice is the identity, whatever the variant. */
    fill_random(src, 1000);
    memcpy(buf, src, 1000);
    uint8_t mask[4] = {1, 2, 3, 4};
    unsigned off = f(buf, 333, mask, 1);
    f(buf + 333, 667, mask, off);
    ws_unmask_scalar(buf, 1000, mask, 1);
    CHECKF(memcmp(buf, src, 1000) == 0, "%s split round trip", name);
}

/* The inline short form the frame decoder uses: every length below
 * WS_UNMASK_SHORT at every key rotation, ending at a page end, and its
 * ASCII word must tell exactly whether any unmasked byte has its top bit. */
static void test_unmask_short(void)
{
    uint8_t src[WS_UNMASK_SHORT], want[WS_UNMASK_SHORT], mask[4];

    for (size_t n = 0; n < WS_UNMASK_SHORT; n++) {
        for (unsigned off = 0; off < 4; off++) {
            for (int k = 0; k < 64; k++) {
                bool ascii = true;
                uint64_t bits;
                uint8_t *p;

                fill_random(mask, 4);
                for (size_t i = 0; i < n; i++)
                    want[i] = (uint8_t)(rnd() & 0x7f);
                if (n && k & 1)
                    want[rnd() % n] |= 0x80;
                for (size_t i = 0; i < n; i++) {
                    src[i] = (uint8_t)(want[i] ^ mask[(off + i) & 3]);
                    ascii &= want[i] < 0x80;
                }
                p = at_page_end(src, n);
                bits = ws_unmask_short(p, n, ws_unmask_key(mask, off));
                CHECKF(memcmp(p, want, n) == 0 &&
                           ((bits & 0x8080808080808080ull) == 0) == ascii,
                       "short len %zu offset %u ascii %d", n, off, ascii);
            }
        }
    }
}

/* ---- header scanning ---- */

typedef const char *scan_fn(const char *p, const char *end);

/* Mostly header-value bytes, with a control byte or DEL now and then. */
static void fill_header(uint8_t *p, size_t n, unsigned ctl_odds)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd();
        if (r % ctl_odds == 0)
            p[i] = (r >> 8) & 1 ? 0x7f : (uint8_t)((r >> 9) % 0x20);
        else
            p[i] = (uint8_t)(0x80 + (r >> 9) % 0x80); /* obs-text */
        if (r % 3 != 0 && p[i] >= 0x80)
            p[i] = (uint8_t)(0x20 + (r >> 9) % 0x5f); /* visible ASCII and space */
    }
}

static void check_scan_one(const char *name, scan_fn *f, const uint8_t *p, size_t n)
{
    const char *s = (const char *)p;
    const char *want = http_scan_ctl_scalar(s, s + n);
    const char *got = f(s, s + n);
    CHECKF(got == want, "%s len %zu: %td, want %td", name, n, got - s, want - s);
}

static void test_scan(const char *name, scan_fn *f)
{
    static uint8_t buf[MAX_ALIGN + 4096];
    uint8_t src[4096];

    for (size_t n = 0; n <= MAX_LEN; n++) {
        for (size_t a = 0; a < MAX_ALIGN; a++) {
            fill_header(src, n, 1 + rnd() % 400);
            memcpy(buf + a, src, n);
            check_scan_one(name, f, buf + a, n);
        }
        fill_header(src, n, 1 + rnd() % 400);
        check_scan_one(name, f, at_page_end(src, n), n);
        fill_header(src, n, 100000);
        check_scan_one(name, f, at_page_end(src, n), n);
    }
    /* Every single control byte and DEL at every position of a block. */
    for (unsigned c = 0; c < 256; c++) {
        for (size_t pos = 0; pos < 40; pos++) {
            memset(src, 'a', 40);
            src[pos] = (uint8_t)c;
            check_scan_one(name, f, at_page_end(src, 40), 40);
        }
    }
}

/* ---- UTF-8 ---- */

typedef enum utf8_result utf8_fn(struct utf8_state *s, const uint8_t *p, size_t n);

static size_t put_code_point(uint8_t *p, uint32_t c)
{
    if (c < 0x80) {
        p[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        p[0] = (uint8_t)(0xc0 | c >> 6);
        p[1] = (uint8_t)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        p[0] = (uint8_t)(0xe0 | c >> 12);
        p[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
        p[2] = (uint8_t)(0x80 | (c & 0x3f));
        return 3;
    }
    p[0] = (uint8_t)(0xf0 | c >> 18);
    p[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
    p[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
    p[3] = (uint8_t)(0x80 | (c & 0x3f));
    return 4;
}

static uint32_t random_code_point_any(unsigned ascii_pct)
{
    static const uint32_t edges[] = {
        0x0, 0x7f, 0x80, 0x7ff, 0x800, 0xfff, 0x1000, 0xd7ff, 0xe000, 0xfffd, 0xffff,
        0x10000, 0x3ffff, 0x40000, 0xfffff, 0x100000, 0x10ffff,
    };
    uint32_t r = rnd();

    if (r % 100 < ascii_pct)
        return rnd() % 0x80;
    switch (rnd() % 5) {
    case 0:
        return edges[rnd() % (sizeof edges / sizeof edges[0])];
    case 1:
        return 0x80 + rnd() % (0x800 - 0x80);
    case 2: {
        uint32_t c = 0x800 + rnd() % (0x10000 - 0x800);
        return c >= 0xd800 && c <= 0xdfff ? c + 0x800 : c;
    }
    case 3:
        return 0x10000 + rnd() % (0x110000 - 0x10000);
    default:
        return 0x4e00 + rnd() % 0x5000;
    }
}

/* Lengths other than those in `lengths` (bit k: k+1 bytes) fall back to
 * ASCII, so that some inputs hold only a few kinds of sequence and a
 * missed error cannot hide behind an unrelated one. */
static uint32_t random_code_point(unsigned ascii_pct, unsigned lengths)
{
    uint32_t c = random_code_point_any(ascii_pct);
    unsigned len = c < 0x80 ? 0 : c < 0x800 ? 1 : c < 0x10000 ? 2 : 3;

    return lengths & (1u << len) ? c : rnd() % 0x80;
}

/* Valid text of exactly n bytes (ASCII pads the end), then `mutations`
 * bytes overwritten with bytes that often break it. */
static void fill_utf8(uint8_t *p, size_t n, unsigned ascii_pct, unsigned mutations)
{
    static const uint8_t nasty[] = {
        0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
        0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf8, 0xff, 0x00, 0x41,
    };
    unsigned lengths = rnd() % 2 ? 15 : rnd() % 16;
    size_t i = 0;

    while (i < n) {
        uint8_t tmp[4];
        size_t k = put_code_point(tmp, random_code_point(ascii_pct, lengths));
        if (k > n - i) {
            p[i++] = 'x';
            continue;
        }
        memcpy(p + i, tmp, k);
        i += k;
    }
    /* Pairs and triples just outside the valid ranges, each with its
     * length in the first byte. */
    static const uint8_t bad_seq[][5] = {
        {2, 0xc0, 0x80}, {2, 0xc1, 0xbf}, {3, 0xe0, 0x80, 0x80}, {3, 0xe0, 0x9f, 0xbf},
        {3, 0xed, 0xa0, 0x80}, {3, 0xed, 0xbf, 0xbf}, {3, 0xf0, 0x80, 0x80},
        {3, 0xf0, 0x8f, 0xbf}, {3, 0xf4, 0x90, 0x80}, {3, 0xf4, 0xbf, 0xbf},
        {3, 0xf5, 0x80, 0x80}, {2, 0xff, 0x80}, {2, 0xe1, 0x41}, {3, 0xf1, 0x80, 0x41},
        {2, 0x41, 0x80}, {3, 0xc3, 0xa9, 0xa9}, {3, 0xe2, 0x82, 0xc3}, {3, 0xe1, 0x80, 0x41},
        {4, 0xf1, 0x80, 0x80, 0x41}, {4, 0xf1, 0x80, 0x80, 0xf1}, {4, 0xe1, 0x80, 0x80, 0x80},
        {3, 0xc3, 0xbf, 0xbf}, {3, 0xc3, 0x80, 0x80}, {3, 0xc3, 0x9f, 0x90}, {2, 0xbf, 0xa0},
    };
    for (unsigned m = 0; m < mutations && n > 0; m++) {
        uint32_t r = rnd();
        if (r % 3 == 0) {
            const uint8_t *b = bad_seq[rnd() % (sizeof bad_seq / sizeof bad_seq[0])];
            size_t at = rnd() % n;
            for (size_t k = 0; k < b[0] && at + k < n; k++)
                p[at + k] = b[1 + k];
        } else {
            p[rnd() % n] = r % 3 == 1 ? nasty[rnd() % sizeof nasty] : (uint8_t)rnd();
        }
    }
}

/* Feeds p[0..n) to both in random chunks, after a random prefix that may
 * leave a sequence open, and compares every verdict and state. */
static void check_utf8_one(const char *name, utf8_fn *f, const uint8_t *p, size_t n,
                           size_t max_chunk)
{
    static const uint8_t prefixes[][3] = {{0}, {0xc3}, {0xe2, 0x82}, {0xf0, 0x9f}, {0xf4}, {0xed}, {0xe0}};
    static const size_t prefix_len[] = {0, 1, 2, 2, 1, 1, 1};
    size_t which = rnd() % 7;
    struct utf8_state a, b;

    utf8_init(&a);
    utf8_init(&b);
    utf8_feed_scalar(&a, prefixes[which], prefix_len[which]);
    f(&b, prefixes[which], prefix_len[which]);
    for (size_t i = 0; i < n || i == 0;) {
        size_t k = max_chunk ? 1 + rnd() % max_chunk : n;
        if (k > n - i)
            k = n - i;
        enum utf8_result ra = utf8_feed_scalar(&a, p + i, k);
        enum utf8_result rb = f(&b, p + i, k);
        if (ra != rb || a.state != b.state) {
            CHECKF(ra == rb && a.state == b.state,
                   "%s len %zu prefix %zu chunk at %zu+%zu: %d/%u, want %d/%u", name, n, which,
                   i, k, rb, b.state, ra, a.state);
            return;
        }
        i += k;
        if (k == 0)
            break;
    }
    CHECK(a.state == b.state);
}

/* Every lead byte followed by three bytes from a set that covers each
 * range boundary, in ASCII, where the vector steps meet (16- and 32-byte
 * lanes, 64-byte blocks) and inside them; the verdict must be the
 * automaton's. */
static void test_utf8_patterns(const char *name, utf8_fn *f)
{
    static const uint8_t follow[] = {
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc2, 0xe1, 0xf1, 0xff,
    };
    static const size_t where[] = {13, 14, 15, 29, 30, 31, 61, 62, 63, 70};
    const size_t nf = sizeof follow;
    uint8_t text[128];
    unsigned turn = 0;

    for (unsigned lead = 0x80; lead < 0x100; lead++) {
        for (size_t k = 0; k < nf * nf * nf; k++, turn++) {
            size_t at = where[turn % (sizeof where / sizeof where[0])];
            struct utf8_state a, b;

            memset(text, 'a', sizeof text);
            text[at] = (uint8_t)lead;
            text[at + 1] = follow[k % nf];
            text[at + 2] = follow[k / nf % nf];
            text[at + 3] = follow[k / nf / nf];
            utf8_init(&a);
            utf8_init(&b);
            enum utf8_result ra = utf8_feed_scalar(&a, text, sizeof text);
            enum utf8_result rb = f(&b, text, sizeof text);
            CHECKF(ra == rb && a.state == b.state, "%s %02x %02x %02x %02x at %zu", name, lead,
                   text[at + 1], text[at + 2], text[at + 3], at);
        }
    }
}

static void test_utf8(const char *name, utf8_fn *f)
{
    static uint8_t buf[MAX_ALIGN + 20000];
    uint8_t src[20000];

    for (size_t n = 0; n <= MAX_LEN; n++) {
        for (size_t a = 0; a < MAX_ALIGN; a++) {
            fill_utf8(src, n, rnd() % 101, rnd() % 3 == 0 ? 1 + rnd() % 2 : 0);
            memcpy(buf + a, src, n);
            check_utf8_one(name, f, buf + a, n, a & 1 ? 0 : 1 + rnd() % 150);
        }
        fill_utf8(src, n, rnd() % 101, rnd() % 2);
        check_utf8_one(name, f, at_page_end(src, n), n, 0);
        check_utf8_one(name, f, at_page_end(src, n), n, 1 + rnd() % 100);
    }
    for (int k = 0; k < 300; k++) {
        size_t n = rnd() % sizeof src;
        fill_utf8(src, n, rnd() % 101, rnd() % 4 ? 0 : 1 + rnd() % 3);
        memcpy(buf + rnd() % MAX_ALIGN, src, n);
        check_utf8_one(name, f, src, n, k & 1 ? 0 : 1 + rnd() % 3000);
        check_utf8_one(name, f, at_page_end(src, n > 4096 ? 4096 : n), n > 4096 ? 4096 : n,
                       1 + rnd() % 300);
    }
    test_utf8_patterns(name, f);
    /* Byte at a time still finds the exact byte. */
    for (int k = 0; k < 40; k++) {
        size_t n = 2000;
        fill_utf8(src, n, 50, 1);
        check_utf8_one(name, f, src, n, 1);
    }
}

int main(void)
{
    guard_init();

    test_unmask_short();
    test_unmask("scalar", ws_unmask_scalar);
    test_utf8("scalar-self", utf8_feed_scalar);
    test_utf8("dispatched", utf8_feed);
    test_unmask("dispatched", ws_unmask);
#if SIMD_X86
    test_scan("sse2", http_scan_ctl_sse2);
    if (simd_cpu_has(SIMD_ISA_SSSE3))
        test_utf8("ssse3", utf8_feed_ssse3);
    else
        printf("simd: no SSSE3 on this CPU, ssse3 UTF-8 skipped\n");
    if (simd_cpu_has(SIMD_ISA_AVX2)) {
        test_unmask("avx2", ws_unmask_avx2);
        test_utf8("avx2", utf8_feed_avx2);
        test_scan("avx2", http_scan_ctl_avx2);
    } else {
        printf("simd: no AVX2 on this CPU, avx2 variants skipped\n");
    }
#else
    printf("simd: not x86-64, only the scalar versions exist\n");
#endif
    return check_done("simd");
}
