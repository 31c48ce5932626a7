"""Echo at /echo: every message comes back byte-exact with its type, at every
size class of the frame length encoding and up to 4 MiB, many in a row, from
many clients at once, and when frames reach the server cut at every possible
offset. Run against default receive buffers and against 256- and 64-byte
ones, so that frames and messages span many buffers and get split at many
offsets inside headers, masks, payloads and UTF-8 characters. Also run with
two workers that must fall back to single accepts and receives (the kernel
made to refuse worker 0's multishot ones), which ThreadSanitizer watches for
races on what the workers learn."""

import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_CONT, OP_TEXT, RawWS, Runner, T, build_frame,  # noqa: E402
                         eq, gather_all, same_payload, text_of_bytes, ws_connect)

SEED = int(os.environ.get("RINGWS_TEST_SEED", int(time.time())))
print("echo: random seed %d (set RINGWS_TEST_SEED to repeat)" % SEED)


def rng(tag):
    return random.Random("%d-%s" % (SEED, tag))


def payload_for(kind, n, r=None):
    r = r or random.Random(n)
    if kind == "text":
        if n > 100000:
            # Fast for large sizes: a repeated random block.
            block = text_of_bytes(4096, r)
            s = block * (n // 4096)
            return s + "b" * (n - len(s.encode()))
        return text_of_bytes(n, r)
    return r.randbytes(n)


async def roundtrip(ws, msg):
    await ws.send(msg)
    got = await asyncio.wait_for(ws.recv(), T(20))
    same_payload(got, msg, "echo of a %d-%s message" % (len(msg), type(msg).__name__))


async def t_basic(port):
    async with ws_connect(port) as ws:
        for msg in ["hello", b"\x00\x01\x02\xff", "", b"", "héllo wörld ☃ 🎉 日本語",
                    "\x00nul inside", b"\x00" * 10, "a"]:
            await roundtrip(ws, msg)


async def t_sizes(port, kind):
    async with ws_connect(port) as ws:
        for n in (0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 1 << 20, 4 << 20):
            await roundtrip(ws, payload_for(kind, n))


async def t_over_2k(port):
    # Messages larger than about 2 KB must arrive whole and exact: a server
    # built on multishot receive with provided buffers once lost exactly those.
    r = rng("2k")
    async with ws_connect(port) as ws:
        for n in (2047, 2048, 2049, 2500, 3000, 4095, 4096, 4097, 8191, 8192, 8193,
                  16383, 16384, 16385, 16386, 32768, 100000):
            await roundtrip(ws, payload_for("binary", n, r))
            await roundtrip(ws, payload_for("text", n, r))


async def t_many_messages(port):
    r = rng("many")
    msgs = []
    for i in range(1000):
        n = r.choice([0, 1, 10, 125, 126, 200, 1000, 3000])
        msgs.append(payload_for("text" if i % 2 else "binary", n, r))
    async with ws_connect(port) as ws:
        async def sender():
            for m in msgs:
                await ws.send(m)

        async def receiver():
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), T(10))
                same_payload(got, m, "message %d of %d" % (i, len(msgs)))

        await gather_all(sender(), receiver())


async def t_concurrent(port, clients=50, per_client=20):
    async def one(c):
        r = rng("client-%d" % c)
        async with ws_connect(port) as ws:
            for i in range(per_client):
                n = r.choice([0, 5, 125, 126, 1000, 2100, 5000])
                await roundtrip(ws, payload_for("text" if (i + c) % 2 else "binary", n, r))
            await ws.close()
            eq(ws.close_code, 1000, "close code of client %d" % c)

    await gather_all(*(one(c) for c in range(clients)))


def t_every_offset(port, opcode):
    # One ~600-byte frame, delivered as two writes split at every offset.
    payload = text_of_bytes(600, rng("offset")).encode() if opcode == OP_TEXT else rng("offsetb").randbytes(600)
    with RawWS.open(port) as ws:
        frame = build_frame(opcode, payload, key=b"\x37\xfa\x21\x3d")
        for k in range(1, len(frame)):
            ws.send_raw(frame, chops=[k], pause=0.0005)
            try:
                ws.expect_echo(opcode, payload)
            except AssertionError as e:
                raise AssertionError("frame split at offset %d of %d: %s" % (k, len(frame), e))
        ws.close_handshake()


def t_three_way(port):
    r = rng("three")
    payload = text_of_bytes(700, r).encode()
    with RawWS.open(port) as ws:
        for i in range(150):
            frame = build_frame(OP_TEXT, payload)
            a = r.randrange(1, len(frame) - 1)
            b = r.randrange(1, len(frame) - a)
            ws.send_raw(frame, chops=[a, b], pause=0.0005)
            try:
                ws.expect_echo(OP_TEXT, payload)
            except AssertionError as e:
                raise AssertionError("frame cut at %d and %d: %s" % (a, a + b, e))


def t_one_byte_writes(port):
    payload = text_of_bytes(300, rng("1b")).encode()
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, payload, chops=1)
        ws.expect_echo(OP_TEXT, payload)
        ws.send_frame(OP_BINARY, b"\xfe" * 70000, chops=[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        ws.expect_echo(OP_BINARY, b"\xfe" * 70000)


def t_fragmented_random(port):
    r = rng("frag")
    with RawWS.open(port) as ws:
        for it in range(20):
            kind = OP_TEXT if it % 2 == 0 else OP_BINARY
            msg = text_of_bytes(r.randrange(2000, 6000), r).encode() if kind == OP_TEXT \
                else r.randbytes(r.randrange(2000, 6000))
            # Frame boundaries at random places (inside UTF-8 characters too),
            # some empty continuation frames.
            cuts = sorted(r.sample(range(1, len(msg)), r.randrange(1, 12)))
            pieces = [msg[a:b] for a, b in zip([0] + cuts, cuts + [len(msg)])]
            if r.random() < 0.5:
                pieces.insert(r.randrange(1, len(pieces) + 1), b"")
            stream = b""
            for i, p in enumerate(pieces):
                stream += build_frame(kind if i == 0 else OP_CONT, p, fin=(i == len(pieces) - 1))
            sizes = []
            while sum(sizes) < len(stream):
                sizes.append(r.randrange(1, 400))
            ws.send_raw(stream, chops=sizes, pause=0.0003)
            try:
                ws.expect_echo(kind, msg)
            except AssertionError as e:
                raise AssertionError("message %d in %d frames, %d writes: %s" % (it, len(pieces), len(sizes), e))
        ws.close_handshake()


def t_burst(port):
    # 300 small frames in one write, then 300 of 1500 bytes in one write.
    r = rng("burst")
    with RawWS.open(port) as ws:
        for size in (10, 1500):
            msgs = [r.randbytes(size) for _ in range(300)]
            ws.send_raw(b"".join(build_frame(OP_BINARY, m) for m in msgs))
            for i, m in enumerate(msgs):
                try:
                    ws.expect_echo(OP_BINARY, m)
                except AssertionError as e:
                    raise AssertionError("message %d of 300 (%d bytes each): %s" % (i, size, e))
        ws.close_handshake()


def t_header_then_payload(port):
    # The frame header arrives first, the payload a moment later, in pieces.
    payload = rng("hp").randbytes(5000)
    with RawWS.open(port) as ws:
        for hsplit in (1, 2, 3, 4, 5, 6, 7, 8):
            frame = build_frame(OP_BINARY, payload)
            ws.send_raw(frame, chops=[hsplit, 1000, 1, 2500], pause=0.002)
            ws.expect_echo(OP_BINARY, payload)


def t_fallback_logged(srv):
    text = srv.stderr_text()
    for what in ("multishot accept refused", "multishot recv refused"):
        eq(text.count(what), 1, "warnings %r on stderr" % what)


def main():
    r = Runner("echo")
    configs = [
        ([], "default"),
        (["--recv-buffer", "256", "--recv-buffers", "512"], "rb256"),
        (["--recv-buffer", "64", "--recv-buffers", "512"], "rb64"),
        # The fallback for kernels without incremental buffer rings.
        (["--recv-buffer", "64", "--recv-buffers", "512", "--plain-recv-buffers"], "rb64-plain"),
    ]
    for args, label in configs:
        with r.server(args, label) as srv:
            p = srv.port
            tag = "[%s]" % label
            r.case("basic" + tag, t_basic, p)
            r.case("sizes-text" + tag, t_sizes, p, "text", timeout=60)
            r.case("sizes-binary" + tag, t_sizes, p, "binary", timeout=60)
            r.case("over-2k-intact" + tag, t_over_2k, p)
            r.case("1000-messages" + tag, t_many_messages, p, timeout=60)
            r.case("50-concurrent-clients" + tag, t_concurrent, p, timeout=60)
            r.case("every-offset-text" + tag, t_every_offset, p, OP_TEXT, timeout=60)
            if label.startswith("rb64"):
                r.case("every-offset-binary" + tag, t_every_offset, p, OP_BINARY, timeout=60)
            r.case("three-way-splits" + tag, t_three_way, p)
            r.case("one-byte-writes" + tag, t_one_byte_writes, p)
            r.case("fragmented-random-chops" + tag, t_fragmented_random, p)
            r.case("burst-300-frames" + tag, t_burst, p)
            r.case("header-then-payload" + tag, t_header_then_payload, p)
    # The fallback for kernels without multishot accept and recv: worker 0's
    # first ones are refused (RINGWS_TEST_FAULT=multishot), so every worker
    # goes on with single accepts and receives, learnt while they serve.
    with r.server(["--workers", "2"], "no-multishot", env={"RINGWS_TEST_FAULT": "multishot"}) as srv:
        p = srv.port
        tag = "[no-multishot]"
        r.case("50-concurrent-clients" + tag, t_concurrent, p, timeout=60)
        r.case("basic" + tag, t_basic, p)
        r.case("1000-messages" + tag, t_many_messages, p, timeout=60)
        r.case("one-byte-writes" + tag, t_one_byte_writes, p)
        r.case("burst-300-frames" + tag, t_burst, p)
        r.case("fallback-logged" + tag, t_fallback_logged, srv)
    r.finish()


if __name__ == "__main__":
    main()
