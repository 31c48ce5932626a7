// bench_proto.cc - micro-benchmarks of ringws's pure protocol code.
//
// Why it exists: the per-byte and per-request costs of parsing, handshake,
// unmasking and UTF-8 validation decide how far a worker can go before the
// kernel is the limit.  Each loop is measured next to memcpy of the same
// size, the physical reference: unmasking or validating cannot beat reading
// and writing the bytes once.  Bytes per second come from SetBytesProcessed.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "frame.h"
#include "handshake.h"
#include "http_parse.h"
#include "unmask.h"
#include "utf8.h"
}

namespace {

// What a desktop browser sends to open a WebSocket (about 500 bytes).
const char kUpgrade[] =
    "GET /echo HTTP/1.1\r\n"
    "Host: 127.0.0.1:8080\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: http://127.0.0.1:8080\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n";

struct Parsed {
    http_limits lim;
    http_request req;
    std::vector<http_header> hdrs;

    Parsed() : hdrs(HTTP_DEFAULT_MAX_HEADERS)
    {
        http_limits_default(&lim);
    }
    int parse()
    {
        return http_parse_request(kUpgrade, sizeof kUpgrade - 1, 0, &lim, &req, hdrs.data());
    }
};

void BM_HttpParseUpgrade(benchmark::State &state)
{
    Parsed p;

    for (auto _ : state) {
        int n = p.parse();
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
    if (p.parse() <= 0)
        state.SkipWithError("the request did not parse");
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(sizeof kUpgrade - 1));
}
BENCHMARK(BM_HttpParseUpgrade);

// Validation of the parsed request, including the accept key (SHA-1 + base64).
void BM_HandshakeValidate(benchmark::State &state)
{
    Parsed p;
    ws_handshake_policy policy = {};
    ws_handshake_result res;

    if (p.parse() <= 0) {
        state.SkipWithError("the request did not parse");
        return;
    }
    for (auto _ : state) {
        int status = ws_handshake_validate(&p.req, &policy, &res);
        benchmark::DoNotOptimize(status);
        benchmark::ClobberMemory();
    }
    if (ws_handshake_validate(&p.req, &policy, &res) != 101)
        state.SkipWithError("the request was refused");
}
BENCHMARK(BM_HandshakeValidate);

void BM_AcceptKey(benchmark::State &state)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[WS_ACCEPT_LEN + 1];

    for (auto _ : state) {
        int r = ws_handshake_accept_key(key, sizeof key - 1, out);
        benchmark::DoNotOptimize(r);
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_AcceptKey);

void PayloadSizes(benchmark::internal::Benchmark *b)
{
    for (int64_t n : {16, 128, 4096, 65536})
        b->Arg(n);
}

// Unmasking at an odd start (buffer address + 1, mask rotation 3): the
// offsets a frame split across receive buffers really gets.
void BM_Unmask(benchmark::State &state)
{
    size_t n = size_t(state.range(0));
    std::vector<uint8_t> buf(n + 64, 0x5a);
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    unsigned off = 0;

    for (auto _ : state) {
        off = ws_unmask(buf.data() + 1, n, mask, 3);
        benchmark::DoNotOptimize(off);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(n));
}
BENCHMARK(BM_Unmask)->Apply(PayloadSizes);
// Small frames' payloads, whose length is rarely a multiple of 8.
BENCHMARK(BM_Unmask)->Arg(5)->Arg(20)->Arg(31)->Arg(45)->Arg(100);

void BM_Memcpy(benchmark::State &state)
{
    size_t n = size_t(state.range(0));
    std::vector<uint8_t> src(n + 64, 0x5a), dst(n + 64);

    for (auto _ : state) {
        memcpy(dst.data() + 1, src.data() + 1, n);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(n));
}
BENCHMARK(BM_Memcpy)->Apply(PayloadSizes);

std::string AsciiText(size_t n)
{
    std::string s;

    while (s.size() < n)
        s += "The quick brown fox jumps over the lazy dog. ";
    s.resize(n);
    return s;
}

// One character in four is multi-byte (2, 3 and 4-byte forms in turn).
std::string MixedText(size_t n)
{
    static const char *const units[] = {"abc\xc3\xa9", "def\xe2\x82\xac", "ghi\xf0\x9f\x98\x80"};
    std::string s;

    for (size_t i = 0;; i++) {
        const char *u = units[i % 3];
        if (s.size() + strlen(u) > n)
            break;
        s += u;
    }
    s.append(n - s.size(), 'x');
    return s;
}

template <bool Mixed>
void BM_Utf8Valid(benchmark::State &state)
{
    size_t n = size_t(state.range(0));
    std::string text = Mixed ? MixedText(n) : AsciiText(n);
    const uint8_t *p = reinterpret_cast<const uint8_t *>(text.data());

    if (!utf8_valid(p, n)) {
        state.SkipWithError("the sample is not valid UTF-8");
        return;
    }
    for (auto _ : state) {
        bool ok = utf8_valid(p, n);
        benchmark::DoNotOptimize(ok);
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(n));
}
BENCHMARK_TEMPLATE(BM_Utf8Valid, false)->Name("BM_Utf8Valid/ascii")->Arg(4096)->Arg(65536);
BENCHMARK_TEMPLATE(BM_Utf8Valid, true)->Name("BM_Utf8Valid/mixed25")->Arg(4096)->Arg(65536);

// Header of a server frame for payloads needing the 2-, 4- and 10-byte forms.
void BM_FrameHeader(benchmark::State &state)
{
    uint64_t len = uint64_t(state.range(0));
    uint8_t out[10];

    for (auto _ : state) {
        benchmark::DoNotOptimize(len);
        size_t n = ws_frame_header(out, WS_FIN | WS_OP_BINARY, len);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(out);
    }
}
BENCHMARK(BM_FrameHeader)->Arg(20)->Arg(1000)->Arg(70000);

// A client's frames as they sit in a receive buffer: `count` masked frames
// of `size` payload bytes each (ASCII text or binary), minimal lengths.
std::vector<uint8_t> ClientFrames(size_t count, size_t size, bool text)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    std::vector<uint8_t> w;
    std::string body = AsciiText(size);

    for (size_t f = 0; f < count; f++) {
        w.push_back(uint8_t(0x80 | (text ? WS_OP_TEXT : WS_OP_BINARY)));
        if (size < 126) {
            w.push_back(uint8_t(0x80 | size));
        } else if (size <= 0xffff) {
            w.push_back(0x80 | 126);
            w.push_back(uint8_t(size >> 8));
            w.push_back(uint8_t(size));
        } else {
            w.push_back(0x80 | 127);
            for (int i = 7; i >= 0; i--)
                w.push_back(uint8_t(uint64_t(size) >> (8 * i)));
        }
        w.insert(w.end(), key, key + 4);
        for (size_t i = 0; i < size; i++)
            w.push_back(uint8_t(uint8_t(text ? body[i] : uint8_t(i * 7)) ^ key[i % 4]));
    }
    return w;
}

// ws_decode over a receive buffer the way conn_ws_input loops over it:
// args are frames per buffer, payload bytes, text (1) or binary (0), and the
// piece size the buffer is handed over in (0: whole).  The decoder unmasks
// in place, so every iteration first restores the masked bytes with a
// memcpy (BM_Memcpy gives its cost).  Items are frames.
void BM_Decode(benchmark::State &state)
{
    size_t count = size_t(state.range(0)), size = size_t(state.range(1));
    bool text = state.range(2) != 0;
    size_t piece = size_t(state.range(3));
    std::vector<uint8_t> wire = ClientFrames(count, size, text), buf(wire.size());
    ws_decoder d;
    size_t events = 0;

    ws_decoder_init(&d);
    if (!piece)
        piece = buf.size();
    for (auto _ : state) {
        memcpy(buf.data(), wire.data(), wire.size());
        for (size_t from = 0; from < buf.size(); from += piece) {
            size_t len = std::min(piece, buf.size() - from), off = 0;

            while (off < len) {
                ws_event ev;
                off += ws_decode(&d, buf.data() + from + off, len - off, &ev, 16u << 20);
                if (ev.type == WS_EV_NEED_MORE)
                    break;
                if (ev.type == WS_EV_ERROR) {
                    state.SkipWithError("decode error");
                    return;
                }
                events++;
                benchmark::DoNotOptimize(ev.data);
            }
        }
        benchmark::ClobberMemory();
    }
    if (events < state.iterations() * count)
        state.SkipWithError("frames went missing");
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(count));
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(wire.size()));
}
BENCHMARK(BM_Decode)
    ->ArgNames({"frames", "size", "text", "piece"})
    ->Args({8, 20, 0, 0})
    ->Args({8, 20, 1, 0})
    ->Args({8, 20, 0, 13})
    ->Args({1, 1000, 0, 0})
    ->Args({1, 1000, 1, 0})
    ->Args({1, 65536, 0, 0});

} // namespace
