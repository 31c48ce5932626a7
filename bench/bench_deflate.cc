// bench_deflate.cc - zlib against libdeflate for permessage-deflate's
// stateless mode: each message compressed and inflated on its own, as a
// whole buffer, on payloads shaped like what ringws carries (JSON
// notifications of 100 B to 4 KiB, the lines of a chat transcript).
//
// Why it exists: the library is chosen per direction on these figures
// (docs/ARCHITECTURE.md, "Compression").  Each benchmark reports the
// compressed size as a counter ("ratio": compressed / plain), and the
// transcript is also compressed with context takeover (one zlib stream,
// sync-flushed per message) to show what the stateless mode costs in ratio.
// The short-message encoder (src/deflate_short.c) is measured beside them
// on the same messages: what its fixed codes cost in bytes, for what they
// save in set-up; and the short-message decoder (src/inflate_short.c)
// beside libdeflate's on the same streams.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <libdeflate.h>
#include <zlib.h>

extern "C" {
#include "deflate_short.h"
#include "inflate_short.h"
}

namespace {

// A JSON notification of about `size` bytes, its fields varying with i as
// an application's would.
std::string Notification(size_t size, unsigned i)
{
    static const char *const kUsers[] = {"alice", "bob", "carol", "dmitri", "eve", "farida"};
    static const char *const kWords[] = {"order", "shipped", "payment", "received", "the",
                                         "your", "is", "on", "its", "way", "update", "status",
                                         "account", "new", "message", "from", "team"};
    char head[256];
    std::string s;
    unsigned x = i * 2654435761u + 12345;

    snprintf(head, sizeof head,
             "{\"type\":\"notification\",\"id\":%u,\"ts\":%u,\"user\":{\"id\":%u,\"name\":\"%s\"},"
             "\"priority\":\"normal\",\"text\":\"",
             100000 + i, 1733500000u + i * 7, 4000 + x % 997, kUsers[x % 6]);
    s = head;
    while (s.size() + 40 < size) {
        x = x * 1103515245u + 12345;
        s += kWords[(x >> 16) % 17];
        s += ' ';
    }
    s += "\",\"items\":[]}";
    return s;
}

// Messages of about `size` bytes, each different, cycled through by the
// per-message benchmarks: one input repeated would train the branch
// predictors on it and flatter the libraries whose set-up branches most.
std::vector<std::string> Notifications(size_t size)
{
    std::vector<std::string> v;
    for (unsigned i = 1; i <= 64; i++)
        v.push_back(Notification(size, i));
    return v;
}

// A chat transcript: short JSON lines, one message each.
std::vector<std::string> Transcript(unsigned n)
{
    std::vector<std::string> v;
    for (unsigned i = 0; i < n; i++)
        v.push_back(Notification(120 + (i * 37) % 180, i));
    return v;
}

void Sizes(benchmark::internal::Benchmark *b)
{
    for (int64_t s : {100, 200, 1024, 4096})
        b->Arg(s);
}

// Around the bound below which a payload goes to the short-message decoder
// first (384 compressed bytes, about 1 KiB of these messages).
void InflateSizes(benchmark::internal::Benchmark *b)
{
    for (int64_t s : {100, 200, 512, 1024, 1536, 2048, 4096})
        b->Arg(s);
}

void BM_LibdeflateCompress(benchmark::State &state)
{
    std::vector<std::string> in = Notifications((size_t)state.range(0));
    libdeflate_compressor *c = libdeflate_alloc_compressor((int)state.range(1));
    std::vector<uint8_t> out(8192);
    size_t i = 0, plain = 0, z = 0;

    for (auto _ : state) {
        const std::string &m = in[i++ % in.size()];
        size_t n = libdeflate_deflate_compress(c, m.data(), m.size(), out.data(), out.size());
        benchmark::DoNotOptimize(n);
        plain += m.size();
        z += n;
    }
    state.counters["ratio"] = (double)z / plain;
    state.SetBytesProcessed((int64_t)plain);
    libdeflate_free_compressor(c);
}
BENCHMARK(BM_LibdeflateCompress)->ArgsProduct({{100, 200, 300, 512, 1024, 4096}, {1, 6}});

// The short-message encoder, its state kept between messages as a worker
// keeps it.
void BM_ShortCompress(benchmark::State &state)
{
    std::vector<std::string> in = Notifications((size_t)state.range(0));
    std::vector<uint8_t> out(8192 + DEFLATE_SHORT_SLACK);
    auto *s = new deflate_short;
    size_t i = 0, plain = 0, z = 0;

    deflate_short_init(s);
    for (auto _ : state) {
        const std::string &m = in[i++ % in.size()];
        size_t n = deflate_short_compress(s, (const uint8_t *)m.data(), m.size(), out.data(), 8192);
        benchmark::DoNotOptimize(n);
        plain += m.size();
        z += n;
    }
    state.counters["ratio"] = (double)z / plain;
    state.SetBytesProcessed((int64_t)plain);
    delete s;
}
BENCHMARK(BM_ShortCompress)->Arg(100)->Arg(200)->Arg(300)->Arg(512)->Arg(1024)->Arg(4096);

// zlib with a stream kept and reset per message (deflateReset): the
// cheapest way to use it statelessly, without a fresh allocation each time.
// Arguments: size, level, window bits, memLevel, strategy.  A stateless
// sender may use any window up to the agreed one (RFC 7692 7.1.2.1), so
// small windows and memLevels, and fixed Huffman codes (Z_FIXED), are
// tried for what they save of the per-message set-up on small inputs.
void BM_ZlibCompress(benchmark::State &state)
{
    std::vector<std::string> in = Notifications((size_t)state.range(0));
    std::vector<uint8_t> out(8192);
    z_stream z{};
    size_t i = 0, plain = 0, n = 0;

    deflateInit2(&z, (int)state.range(1), Z_DEFLATED, -(int)state.range(2), (int)state.range(3),
                 (int)state.range(4));
    for (auto _ : state) {
        const std::string &m = in[i++ % in.size()];
        deflateReset(&z);
        z.next_in = (Bytef *)m.data();
        z.avail_in = (uInt)m.size();
        z.next_out = out.data();
        z.avail_out = (uInt)out.size();
        deflate(&z, Z_SYNC_FLUSH);
        n += out.size() - z.avail_out - 4;
        plain += m.size();
    }
    state.counters["ratio"] = (double)n / plain;
    state.SetBytesProcessed((int64_t)plain);
    deflateEnd(&z);
}
void ZlibArgs(benchmark::internal::Benchmark *b)
{
    for (int64_t s : {100, 200, 1024, 4096}) {
        for (int64_t level : {1, 6})
            for (int64_t mem : {1, 4, 8})
                b->Args({s, level, 15, mem, Z_DEFAULT_STRATEGY});
        for (int64_t bits : {9, 12})
            for (int64_t mem : {1, 4})
                for (int64_t strategy : {Z_DEFAULT_STRATEGY, Z_FIXED})
                    b->Args({s, 1, bits, mem, strategy});
    }
}
BENCHMARK(BM_ZlibCompress)->Apply(ZlibArgs);

std::vector<uint8_t> Compressed(const std::string &in)
{
    libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    std::vector<uint8_t> out(libdeflate_deflate_compress_bound(c, in.size()) + 9);
    out.resize(libdeflate_deflate_compress(c, in.data(), in.size(), out.data(), out.size()));
    libdeflate_free_compressor(c);
    return out;
}

// Notifications(size), each compressed on its own: what a client sends.
std::vector<std::vector<uint8_t>> CompressedAll(size_t size)
{
    std::vector<std::vector<uint8_t>> v;
    for (const std::string &m : Notifications(size))
        v.push_back(Compressed(m));
    return v;
}

void BM_LibdeflateInflate(benchmark::State &state)
{
    std::vector<std::vector<uint8_t>> in = CompressedAll((size_t)state.range(0));
    std::vector<uint8_t> out(1 << 20);
    libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t i = 0, plain = 0;

    for (auto _ : state) {
        const std::vector<uint8_t> &z = in[i++ % in.size()];
        size_t n = 0;
        libdeflate_deflate_decompress(d, z.data(), z.size(), out.data(), out.size(), &n);
        plain += n;
    }
    state.SetBytesProcessed((int64_t)plain);
    libdeflate_free_decompressor(d);
}
BENCHMARK(BM_LibdeflateInflate)->Apply(InflateSizes);

// The short-message decoder on the same streams (what the server tries
// first on a payload of up to 384 bytes, deflate.c).
void BM_ShortInflate(benchmark::State &state)
{
    std::vector<std::vector<uint8_t>> in = CompressedAll((size_t)state.range(0));
    std::vector<uint8_t> out(1 << 20);
    struct inflate_short *d = inflate_short_new();
    size_t i = 0, plain = 0;

    for (auto _ : state) {
        const std::vector<uint8_t> &z = in[i++ % in.size()];
        ssize_t n = inflate_short(d, z.data(), z.size(), out.data(), out.size());

        if (n < 0) {
            state.SkipWithError("a stream was left to libdeflate");
            break;
        }
        plain += (size_t)n;
    }
    state.SetBytesProcessed((int64_t)plain);
    inflate_short_free(d);
}
BENCHMARK(BM_ShortInflate)->Apply(InflateSizes);

void BM_ZlibInflate(benchmark::State &state)
{
    std::vector<std::vector<uint8_t>> in = CompressedAll((size_t)state.range(0));
    std::vector<uint8_t> out(1 << 20);
    z_stream s{};
    size_t i = 0, plain = 0;

    inflateInit2(&s, -15);
    for (auto _ : state) {
        const std::vector<uint8_t> &z = in[i++ % in.size()];
        inflateReset(&s);
        s.next_in = (Bytef *)z.data();
        s.avail_in = (uInt)z.size();
        s.next_out = out.data();
        s.avail_out = (uInt)out.size();
        benchmark::DoNotOptimize(inflate(&s, Z_SYNC_FLUSH));
        plain += out.size() - s.avail_out;
    }
    state.SetBytesProcessed((int64_t)plain);
    inflateEnd(&s);
}
BENCHMARK(BM_ZlibInflate)->Apply(Sizes);

// The transcript's bytes on the wire: stateless (each line alone, libdeflate
// level 6) against context takeover (one zlib stream, sync flush per line,
// the 4 trailing bytes dropped as RFC 7692 7.2.1 says).
void BM_TranscriptStateless(benchmark::State &state)
{
    std::vector<std::string> lines = Transcript(500);
    libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    std::vector<uint8_t> out(8192);
    size_t plain = 0, wire = 0;

    for (auto _ : state) {
        plain = wire = 0;
        for (const std::string &l : lines) {
            size_t n = libdeflate_deflate_compress(c, l.data(), l.size(), out.data(), out.size());
            plain += l.size();
            wire += n && n < l.size() ? n : l.size();
        }
    }
    state.counters["ratio"] = (double)wire / plain;
    state.SetBytesProcessed((int64_t)(state.iterations() * plain));
    libdeflate_free_compressor(c);
}
BENCHMARK(BM_TranscriptStateless);

void BM_TranscriptTakeover(benchmark::State &state)
{
    std::vector<std::string> lines = Transcript(500);
    std::vector<uint8_t> out(8192);
    size_t plain = 0, wire = 0;

    for (auto _ : state) {
        z_stream z{};
        deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        plain = wire = 0;
        for (const std::string &l : lines) {
            z.next_in = (Bytef *)l.data();
            z.avail_in = (uInt)l.size();
            z.next_out = out.data();
            z.avail_out = (uInt)out.size();
            deflate(&z, Z_SYNC_FLUSH);
            plain += l.size();
            wire += out.size() - z.avail_out - 4;
        }
        deflateEnd(&z);
    }
    state.counters["ratio"] = (double)wire / plain;
    state.SetBytesProcessed((int64_t)(state.iterations() * plain));
}
BENCHMARK(BM_TranscriptTakeover);

} // namespace
