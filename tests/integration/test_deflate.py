"""permessage-deflate (RFC 7692) as the server speaks it, stateless both ways:
the negotiation (every parameter combination of Autobahn's sections 12 and
13, declined offers, malformed fields), compressed messages both ways on raw
sockets (whole, fragmented, cut at every byte, ended with a final block or a
sync flush, empty), every bad use of RSV1, decompression bombs and broken
data, and pub/sub fan-out: one compression per publish shared by every
subscriber that negotiated it (the wire shows RSV1, /metrics counts), plain
frames for the others.  Real peers too: python3-websockets with its default
compression, Node's ws.  Then the context-takeover mode of --deflate-takeover
paths: RFC 7692's window parameters answered exactly, messages both ways that
only a peer that kept the window can read, its memory made lazily, shown
and given back, the per-worker cap falling back to stateless, fan-out and
history replay through each subscriber's stream, and python3-websockets,
Node's ws and headless Chromium keeping context both ways."""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, HttpConn, RawWS,  # noqa: E402
                         Runner, T, build_frame, close_payload, deflate_message, eq, expect,
                         fail, http_get, inflate_message, upgrade_request, metric)

PMD = "permessage-deflate"
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def offer_request(port, path, offer, protocol=None):
    add = [("Sec-WebSocket-Extensions", offer)] if offer is not None else []
    if protocol:
        add.append(("Sec-WebSocket-Protocol", protocol))
    return upgrade_request(port, path=path, add=add)


def open_pmd(port, path="/echo", offer=PMD + "; client_max_window_bits", protocol=None):
    request, key = offer_request(port, path, offer, protocol)
    ws = RawWS.open(port, request=request, key=key)
    if not ws.deflate:
        ws.close()
        fail("offer %r: no permessage-deflate in the 101 (%r)"
             % (offer, ws.response.header_all("Sec-WebSocket-Extensions")))
    return ws


def json_text(n, seed=1):
    """A JSON notification of about n bytes, as an application sends."""
    r = random.Random(seed)
    words = ["order", "shipped", "payment", "received", "your", "status", "update", "team"]
    body = {"type": "notification", "id": seed, "user": {"id": r.randrange(10000), "name": "alice"},
            "text": ""}
    while len(json.dumps(body)) < n:
        body["text"] += r.choice(words) + " "
    return json.dumps(body)




def publish(port, topic, body):
    data = body.encode() if isinstance(body, str) else body
    with HttpConn(port) as c:
        c.send(("POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % (topic, len(data))).encode() + data)
        resp = c.read_response()
    eq(resp.status, 200, "POST /publish status")
    return json.loads(resp.body)["recipients"]


# ---------------------------------------------------------------------------
# Negotiation


def t_answer_exact(port):
    """The one answer: stateless both ways, whatever the offer asked."""
    for offer in [PMD, PMD + "; client_max_window_bits", PMD + "; client_no_context_takeover",
                  PMD + "; server_no_context_takeover", "x-webkit-deflate-frame, " + PMD,
                  PMD + "; server_max_window_bits=10, " + PMD,
                  "PerMessage-Deflate; Client_Max_Window_Bits=\"12\""]:
        with open_pmd(port, offer=offer) as ws:
            eq(ws.response.header_all("Sec-WebSocket-Extensions"), [ANSWER], "answer to %r" % offer)
            ws.close_handshake()


def t_autobahn_params(port):
    """Autobahn 12/13's offers: each parameter combination, a compressed
    message each way (sizes 16 B to 64 KiB, text and binary).  An offer that
    bounds the server's window below 15 is declined: its compressor uses a
    32 KiB window."""
    combos = [""]
    for b in range(8, 16):
        combos += ["; server_max_window_bits=%d" % b, "; client_max_window_bits=%d" % b,
                   "; client_no_context_takeover; client_max_window_bits=%d" % b,
                   "; server_no_context_takeover; server_max_window_bits=%d" % b]
    combos += ["; server_no_context_takeover", "; client_no_context_takeover",
               "; server_no_context_takeover; client_no_context_takeover",
               "; client_max_window_bits"]
    sizes = [16, 64, 256, 1024, 4096, 65536]
    for i, params in enumerate(combos):
        request, key = offer_request(port, "/echo", PMD + params)
        with RawWS.open(port, request=request, key=key) as ws:
            declined = "server_max_window_bits=" in params and not params.endswith("=15")
            eq(ws.deflate, not declined, "accepted %r" % params)
            if declined:
                eq(ws.response.header_all("Sec-WebSocket-Extensions"), [], "answer to %r" % params)
                ws.close_handshake()
                continue
            size = sizes[i % len(sizes)]
            text = json_text(size, i)
            ws.send_frame(OP_TEXT, deflate_message(text), rsv=4)
            ev = ws.expect_echo(OP_TEXT, text)
            eq(ev.compressed, len(text) >= 128, "echo of %d bytes compressed" % len(text))
            data = os.urandom(size // 2) * 2
            ws.send_frame(OP_BINARY, deflate_message(data), rsv=4)
            ws.expect_echo(OP_BINARY, data)
            ws.close_handshake()


def t_declined_then_rsv1_1002(port):
    """No offer, an unknown one, or only declined ones: no extension, and RSV1
    is then a protocol error as before."""
    for offer in [None, "x-foo", PMD + "; mystery", PMD + "; server_max_window_bits=9",
                  PMD + "; client_max_window_bits=16", PMD + "; server_no_context_takeover; "
                  "server_no_context_takeover"]:
        request, key = offer_request(port, "/echo", offer)
        with RawWS.open(port, request=request, key=key) as ws:
            eq(ws.deflate, False, "extension accepted for %r" % offer)
            ws.send_frame(OP_TEXT, deflate_message("hello"), rsv=4)
            ws.fail_expected(1002)


def t_malformed_400(port):
    for offer in [PMD + ";", PMD + "; a=", PMD + " x", "", PMD + "; a=\"b c\"",
                  PMD + ", ;", "foo/bar"]:
        request, _ = offer_request(port, "/echo", offer)
        with HttpConn(port) as c:
            c.send(request)
            resp = c.read_response()
        eq(resp.status, 400, "status for %r" % offer)
    # One malformed field among good ones spoils the request.
    request, _ = upgrade_request(port, add=[("Sec-WebSocket-Extensions", PMD),
                                            ("Sec-WebSocket-Extensions", "a b")])
    with HttpConn(port) as c:
        c.send(request)
        eq(c.read_response().status, 400, "status with a second malformed field")


def t_no_deflate_flag(port):
    request, key = offer_request(port, "/echo", PMD)
    with RawWS.open(port, request=request, key=key) as ws:
        eq(ws.response.header_all("Sec-WebSocket-Extensions"), [], "answer with --no-deflate")
        ws.send_frame(OP_TEXT, deflate_message("x" * 300), rsv=4)
        ws.fail_expected(1002)
    # Not parsed either: what the server does not take cannot be malformed.
    request, key = offer_request(port, "/echo", PMD + ";")
    with RawWS.open(port, request=request, key=key) as ws:
        ws.close_handshake()


# ---------------------------------------------------------------------------
# Messages


def t_fragmented(port):
    """RSV1 on the first frame only, the compressed bytes spread over
    continuations (one byte each too), with pings between; and the whole
    exchange cut at every byte."""
    text = json_text(3000, 7)
    z = deflate_message(text)
    with open_pmd(port) as ws:
        for parts in ([z[:1], z[1:2], z[2:]], [z[i:i + 1] for i in range(len(z))],
                      [z[:10], b"", z[10:]]):
            data = build_frame(OP_TEXT, parts[0], fin=False, rsv=4)
            for j, p in enumerate(parts[1:]):
                if j == 1:
                    data += build_frame(OP_PING, b"between")
                data += build_frame(OP_CONT, p, fin=(j == len(parts) - 2))
            ws.send_raw(data)
            if len(parts) > 2:
                ws.expect_pong(b"between")
            ev = ws.expect_echo(OP_TEXT, text)
            expect(ev.compressed, "echo compressed", ev)
        ws.send_raw(build_frame(OP_BINARY, z[:100], fin=False, rsv=4) +
                    build_frame(OP_CONT, z[100:]), chops=1)
        ws.expect_echo(OP_BINARY, text.encode())
        ws.close_handshake()


def t_final_block_and_empty(port):
    """A sender may end with a final block instead of a sync flush (RFC 7692
    7.2.3.4); an empty message compresses to one byte (7.2.3.6)."""
    with open_pmd(port) as ws:
        for text in ["Hello", json_text(500, 3)]:
            ws.send_frame(OP_TEXT, deflate_message(text, final=True), rsv=4)
            ws.expect_echo(OP_TEXT, text)
        ws.send_frame(OP_TEXT, b"\x00", rsv=4)
        ws.expect_echo(OP_TEXT, b"")
        ws.send_frame(OP_TEXT, b"\x02\x00", rsv=4)  # a final empty fixed block
        ws.expect_echo(OP_TEXT, b"")
        # Plain messages still pass on a connection with compression.
        ws.send_frame(OP_TEXT, "plain, RSV1 clear")
        ws.expect_echo(OP_TEXT, "plain, RSV1 clear")
        ws.close_handshake()


def t_small_sent_plain(port):
    """Below 128 bytes the answer goes plain (RSV1 clear), above compressed."""
    with open_pmd(port) as ws:
        for n, zipped in [(20, False), (127, False), (128, True), (2000, True)]:
            text = ("hello world " * 200)[:n]
            ws.send_frame(OP_TEXT, deflate_message(text), rsv=4)
            ev = ws.expect_echo(OP_TEXT, text)
            eq(ev.compressed, zipped, "echo of %d bytes compressed" % n)
        # Incompressible bytes go plain: compressing them would not shrink them.
        data = os.urandom(4000)
        ws.send_frame(OP_BINARY, deflate_message(data), rsv=4)
        eq(ws.expect_echo(OP_BINARY, data).compressed, False, "random bytes sent compressed")
        ws.close_handshake()


def t_bad_rsv1(port):
    def fails(data, code=1002):
        with open_pmd(port) as ws:
            ws.send_raw(data)
            ws.fail_expected(code)
    z = deflate_message(json_text(400))
    fails(build_frame(OP_TEXT, z[:5], fin=False, rsv=4) + build_frame(OP_CONT, z[5:], rsv=4))
    fails(build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_CONT, deflate_message("b"), rsv=4))
    fails(build_frame(OP_PING, b"", rsv=4))
    fails(build_frame(OP_PING, deflate_message("ping"), rsv=4))
    fails(build_frame(OP_CLOSE, close_payload(1000), rsv=4))
    for rsv in (1, 2, 3, 5, 6, 7):
        fails(build_frame(OP_TEXT, z, rsv=rsv))


def t_bad_data(port):
    def fails(payload, opcode=OP_TEXT, code=1007):
        with open_pmd(port) as ws:
            ws.send_frame(opcode, payload, rsv=4)
            ws.fail_expected(code)
    fails(b"\xff\xff\xff\xff garbage")
    fails(b"\x07")  # a reserved block type
    fails(deflate_message(b"\xc3\x28 not UTF-8"))
    fails(deflate_message("é".encode()[:1]))  # text cut inside a code point
    # Binary is not checked as text.
    with open_pmd(port) as ws:
        ws.send_frame(OP_BINARY, deflate_message(b"\xc3\x28"), rsv=4)
        ws.expect_echo(OP_BINARY, b"\xc3\x28")
        ws.close_handshake()


def t_bomb(port, max_message):
    """Inflating stops at max-message (1009) and takes little time; exactly
    max-message passes."""
    with open_pmd(port) as ws:
        ws.send_frame(OP_BINARY, deflate_message(b"\x00" * max_message), rsv=4)
        ws.expect_echo(OP_BINARY, b"\x00" * max_message, timeout=T(10))
        ws.close_handshake()
    for size in (max_message + 1, 64 << 20):
        bomb = deflate_message(b"\x00" * size)
        with open_pmd(port) as ws:
            t0 = time.monotonic()
            ws.send_frame(OP_BINARY, bomb, rsv=4)
            ws.fail_expected(1009)
            took = time.monotonic() - t0
        expect(took < T(2), "a %d-byte bomb refused within 2 s" % size, "%.2f s" % took)


def t_inflate_budget(port, max_message):
    """Many small messages that inflate to max-message each, in one write:
    past 1 MiB inflated in a loop turn the rest of the connection's input
    waits for the next turn (counted), and every echo still comes, whole and
    in order."""
    n = 40
    datas = [bytes([i]) + b"\x00" * (max_message - 1) for i in range(n)]
    d0 = metric(port, "ringws_deflate_deferred_total")
    with open_pmd(port) as ws:
        burst = b"".join(build_frame(OP_BINARY, deflate_message(d), rsv=4) for d in datas)
        expect(len(burst) < 16384, "the burst fits one receive", len(burst))
        ws.send_raw(burst)
        for d in datas:
            ws.expect_echo(OP_BINARY, d, timeout=T(10))
        ws.close_handshake()
    deferred = metric(port, "ringws_deflate_deferred_total") - d0
    expect(deferred >= 1, "input put off to a later turn", deferred)


def t_python_websockets(port, answer=ANSWER):
    """python3-websockets offers permessage-deflate by default and speaks it
    both ways with the server's answer."""
    import websockets

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % port, max_size=None,
                                      open_timeout=T(5)) as ws:
            eq(ws.response_headers.get("Sec-WebSocket-Extensions"), answer, "python's answer")
            for i, n in enumerate([5, 200, 3000, 70000]):
                text = json_text(n, i)
                await ws.send(text)
                eq(await ws.recv(), text, "echo of %d bytes" % n)
                await ws.send(text.encode())
                eq(await ws.recv(), text.encode(), "binary echo of %d bytes" % n)
    before = metric(port, "ringws_deflate_inflated_total")
    asyncio.run(go())
    # websockets compresses every message: all 8 came compressed.
    eq(metric(port, "ringws_deflate_inflated_total") - before, 8, "messages inflated")


def t_node_ws(port, answer=ANSWER):
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        fail("no node: install nodejs and node-ws (tools/setup.sh does)")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_ws_deflate.js")
    before = {m: metric(port, m) for m in ("ringws_deflate_inflated_total",
                                          "ringws_deflate_sent_total")}
    env = dict(os.environ, NODE_PATH="/usr/share/nodejs")
    proc = subprocess.run([node, script, "ws://127.0.0.1:%d" % port], capture_output=True,
                          timeout=T(30), env=env)
    out = proc.stdout.decode(errors="replace").strip()
    try:
        res = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        fail("node printed %r (stderr %r)" % (out, proc.stderr[-400:]))
    expect(res.get("ok"), "node's ws exchanged compressed messages", res)
    eq(res["extensions"], PMD, "extension node agreed to")
    eq(res["answer"], answer, "the server's answer node took")
    got = {m: metric(port, m) - before[m] for m in before}
    expect(got["ringws_deflate_inflated_total"] >= res["sent_compressed"],
           "node's compressed messages inflated", got)
    expect(got["ringws_deflate_sent_total"] >= res["received"] - res["small"],
           "compressed frames sent to node", got)


# ---------------------------------------------------------------------------
# Pub/sub


def t_fanout_once(port):
    """One publish, compressed once, its compressed frame sent to every
    subscriber that negotiated compression (raw and ringws.v1), the plain one
    to the others; small publishes go plain to all and compress nothing."""
    zs = [open_pmd(port, "/ws?topics=zf") for _ in range(3)]
    plain = [RawWS.open(port, path="/ws?topics=zf") for _ in range(2)]
    env = open_pmd(port, "/ws?topics=zf", protocol="ringws.v1")
    try:
        first = env.recv_event()
        expect(first.data.startswith(b"subscribed zf "), "subscribed notice", first)
        c0 = metric(port, "ringws_deflate_compressed_total")
        s0 = metric(port, "ringws_deflate_sent_total")
        text = json_text(1500, 11)
        eq(publish(port, "zf", text), 6, "recipients")
        for ws in zs:
            ev = ws.expect_event("text", text.encode())
            expect(ev.compressed, "a compressed frame to a subscriber with compression", ev)
        for ws in plain:
            eq(ws.expect_event("text", text.encode()).compressed, False, "plain subscriber's frame")
        ev = env.recv_event()
        expect(ev.compressed and ev.data.startswith(b"msg zf ") and ev.data.endswith(text.encode()),
               "a compressed ringws.v1 frame", ev)
        eq(metric(port, "ringws_deflate_compressed_total") - c0, 1, "compressions for one publish")
        eq(metric(port, "ringws_deflate_sent_total") - s0, 4, "compressed frames queued")
        small = '{"n":1}'
        eq(publish(port, "zf", small), 6, "recipients")
        for ws in zs + plain:
            eq(ws.expect_event("text", small.encode()).compressed, False, "small publish's frame")
        eq(metric(port, "ringws_deflate_compressed_total") - c0, 1, "compressions after a small one")
    finally:
        for ws in zs + plain + [env]:
            ws.close()


def t_fanout_no_compression_without_subscriber(port):
    """Without a subscriber that negotiated it, a publish compresses nothing."""
    with RawWS.open(port, path="/ws?topics=plainonly") as ws:
        c0 = metric(port, "ringws_deflate_compressed_total")
        text = json_text(2000, 5)
        eq(publish(port, "plainonly", text), 1, "recipients")
        eq(ws.expect_event("text", text.encode()).compressed, False, "frame compressed")
        eq(metric(port, "ringws_deflate_compressed_total") - c0, 0, "compressions")


def t_history_replay(port):
    """A resume replays the held messages in the subscriber's form."""
    texts = [json_text(600 + i, 20 + i) for i in range(3)]
    with open_pmd(port, "/ws?topics=zh", protocol="ringws.v1") as ws:
        notice = ws.recv_event().data.decode().split()
        epoch = notice[2]
        for t in texts:
            publish(port, "zh", t)
        for t in texts:
            ev = ws.recv_event()
            expect(ev.compressed and ev.data.endswith(t.encode()), "live compressed message", ev)
    with open_pmd(port, "/ws?topics=zh&since=zh:%s:0" % epoch, protocol="ringws.v1") as ws:
        expect(ws.recv_event().data.startswith(b"recovered zh "), "recovered notice", None)
        for t in texts:
            ev = ws.recv_event()
            expect(ev.compressed and ev.data.endswith(t.encode()), "replayed compressed", ev)


# ---------------------------------------------------------------------------
# Context takeover (--deflate-takeover PATH)

TAIL = b"\x00\x00\xff\xff"
# deflate_takeover_worst(11, 11): what a connection with an 11-bit window
# each way reserves against --deflate-takeover-memory.
WORST_11_11 = 28728


def pmd_params(answer):
    """The parameters of a permessage-deflate answer, as a dict."""
    parts = [p.strip() for p in answer.split(";")]
    eq(parts[0], PMD, "extension answered")
    return dict((p.split("=") + [None])[:2] for p in parts[1:])


def takeover_open(port, path="/echo", offer=PMD + "; client_max_window_bits", protocol=None):
    """A raw connection that keeps both windows the answer lets it keep:
    the server's messages are inflated in order (its announced window, or
    15), the client's compressed against the ones before."""
    ws = open_pmd(port, path, offer, protocol)
    params = pmd_params(ws.response.header("Sec-WebSocket-Extensions"))
    if "server_no_context_takeover" not in params:
        ws.inflater = zlib.decompressobj(-int(params.get("server_max_window_bits") or 15))
    ws.comp = None
    if "client_max_window_bits" in params:
        ws.comp = zlib.compressobj(6, zlib.DEFLATED, -max(9, int(params["client_max_window_bits"])))
    return ws, params


def client_deflate(ws, data):
    """One message of the client's, compressed after the ones before (or on
    its own without takeover that way)."""
    if ws.comp is None:
        return deflate_message(data)
    out = ws.comp.compress(data.encode() if isinstance(data, str) else data)
    out += ws.comp.flush(zlib.Z_SYNC_FLUSH)
    expect(out.endswith(TAIL), "sync flush ends in 00 00 ff ff", out[-8:])
    return out[:-4]


def takeover_recv(ws, kind="text"):
    """A message from a takeover connection: (data, compressed bytes on the
    wire or None when it came plain)."""
    f = ws.recv_frame()
    expect(f.fin and f.opcode == (OP_TEXT if kind == "text" else OP_BINARY),
           "one whole %s frame" % kind, f)
    if f.rsv != 4:
        return f.payload, None
    if ws.inflater is None:
        return inflate_message(f.payload), len(f.payload)
    try:
        return ws.inflater.decompress(f.payload + TAIL), len(f.payload)
    except zlib.error as e:
        fail("the server's message does not inflate after the ones before it: %s" % e)


TAKEOVER_OFFERS = [
    ("", "; client_no_context_takeover"),
    ("; client_max_window_bits", "; client_max_window_bits=11"),
    ("; client_max_window_bits=9", "; client_max_window_bits=9"),
    ("; client_max_window_bits=15", "; client_max_window_bits=11"),
    ("; client_max_window_bits=8", "; client_max_window_bits=8"),
    ("; server_max_window_bits=10; client_max_window_bits",
     "; server_max_window_bits=10; client_max_window_bits=11"),
    ("; server_max_window_bits=15", "; server_max_window_bits=11; client_no_context_takeover"),
    ("; server_max_window_bits=9; client_max_window_bits=10",
     "; server_max_window_bits=9; client_max_window_bits=10"),
    ("; server_no_context_takeover; client_max_window_bits",
     "; server_no_context_takeover; client_max_window_bits=11"),
    ("; client_no_context_takeover; client_max_window_bits=12", "; client_no_context_takeover"),
    ("; server_no_context_takeover; client_no_context_takeover",
     "; server_no_context_takeover; client_no_context_takeover"),
    ("; server_max_window_bits=8", None),
    ("; server_no_context_takeover; server_max_window_bits=12", None),
    ("; server_max_window_bits=8, " + PMD + "; client_max_window_bits",
     "; client_max_window_bits=11"),
]


def t_takeover_params(port):
    """RFC 7692 7.1 on a takeover path: each direction keeps context where
    the offer lets it, the windows answered exactly (the server's only when
    the offer named it, the client's bounded by the server's 11 bits), an
    offer the server cannot keep to declined.  Then messages both ways that
    only a peer that kept the window can read: the same JSON twice (the
    second a few bytes when context is kept), and a message far behind a
    long one, which a server keeping to a small window must not refer to."""
    a = json_text(600, 1)
    b = json.dumps({"log": [json_text(300, s) for s in range(2, 6)]})
    for params, want in TAKEOVER_OFFERS:
        request, key = offer_request(port, "/echo", PMD + params)
        with RawWS.open(port, request=request, key=key) as ws:
            if want is None:
                eq(ws.response.header_all("Sec-WebSocket-Extensions"), [], "answer to %r" % params)
                ws.close_handshake()
                continue
        ws, got = takeover_open(port, offer=PMD + params)
        with ws:
            eq(ws.response.header("Sec-WebSocket-Extensions"), PMD + want, "answer to %r" % params)
            if got.get("client_max_window_bits") == "8":
                ws.comp = None  # zlib keeps no raw 8-bit window: stateless messages fit it
            sizes = []
            for text in (a, a, b, a):
                ws.send_frame(OP_TEXT, client_deflate(ws, text), rsv=4)
                data, zlen = takeover_recv(ws)
                eq(data, text.encode(), "echo through %r" % params)
                sizes.append(zlen)
            takeover = "server_no_context_takeover" not in got
            # zlib reaches back its window less 262 bytes: 250 at 9 bits,
            # less than the message (its bound is checked by inflating).
            reach = got.get("server_max_window_bits") != "9"
            expect(not takeover or not reach or sizes[1] * 4 < sizes[0],
                   "the second alike echo refers to the first (%r)" % params, sizes)
            expect(takeover or sizes[1] == sizes[0], "stateless echoes alike (%r)" % params, sizes)
            ws.close_handshake()


def t_takeover_fragmented(port):
    """A compressed message in three fragments, after one it refers to."""
    ws, _ = takeover_open(port)
    with ws:
        text = json_text(2000, 9)
        ws.send_frame(OP_TEXT, client_deflate(ws, text), rsv=4)
        eq(takeover_recv(ws)[0], text.encode(), "first echo")
        z = client_deflate(ws, text)
        ws.send_frame(OP_TEXT, z[:3], fin=False, rsv=4)
        ws.send_frame(OP_CONT, z[3:5], fin=False)
        ws.send_frame(OP_CONT, z[5:])
        eq(takeover_recv(ws)[0], text.encode(), "fragmented echo")
        ws.close_handshake()


def t_takeover_broken_context_1007(port):
    """A client message that refers to a window the server never had (its
    compressor kept context the answer did not let it): refused 1007, as
    any data that does not inflate."""
    ws, _ = takeover_open(port, offer=PMD)  # the client's side stateless
    with ws:
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        text = json_text(800, 3)
        first = comp.compress(text.encode()) + comp.flush(zlib.Z_SYNC_FLUSH)
        second = comp.compress(text.encode()) + comp.flush(zlib.Z_SYNC_FLUSH)
        ws.send_frame(OP_TEXT, first[:-4], rsv=4)
        eq(takeover_recv(ws)[0], text.encode(), "first echo")
        ws.send_frame(OP_TEXT, second[:-4], rsv=4)
        ws.fail_expected(1007)


def takeover_bytes(port):
    """ringws_deflate_takeover_bytes over all workers."""
    body = http_get(port, "/metrics").body.decode()
    rows = [line for line in body.splitlines() if line.startswith("ringws_deflate_takeover_bytes{")]
    expect(rows, "ringws_deflate_takeover_bytes rows in /metrics", body[-300:])
    return sum(int(float(line.split()[1])) for line in rows)


def wait_takeover_bytes(port, pred, what):
    deadline = time.monotonic() + T(5)
    while True:
        n = takeover_bytes(port)
        if pred(n):
            return n
        if time.monotonic() > deadline:
            fail("ringws_deflate_takeover_bytes %d: not %s" % (n, what))
        time.sleep(0.02)


def t_takeover_memory(port):
    """The streams are made on a direction's first compressed message, their
    bytes shown per worker (never past the reservation), and given back when
    the connections close."""
    # The cases before may leave connections closing for a moment.
    wait_takeover_bytes(port, lambda n: n == 0, "0 with no connection")
    ws, _ = takeover_open(port)
    with ws:
        idle = takeover_bytes(port)
        expect(0 < idle < 128, "an idle takeover connection holds its record alone", idle)
        text = json_text(1000, 4)
        ws.send_frame(OP_TEXT, client_deflate(ws, text), rsv=4)
        eq(takeover_recv(ws)[0], text.encode(), "echo")
        one = takeover_bytes(port)
        expect(10000 < one <= WORST_11_11, "both streams made, within the reservation", one)
        ws2, _ = takeover_open(port)
        with ws2:
            ws2.send_frame(OP_TEXT, client_deflate(ws2, text), rsv=4)
            eq(takeover_recv(ws2)[0], text.encode(), "echo")
            eq(takeover_bytes(port), 2 * one, "two connections' streams")
            ws2.close_handshake()
        wait_takeover_bytes(port, lambda n: n == one, "back to one connection's")
        ws.close_handshake()
    wait_takeover_bytes(port, lambda n: n == 0, "0 once the connections closed")


def t_takeover_cap(port):
    """Past --deflate-takeover-memory (here two connections' worth) a new
    connection is answered stateless, whole, and counted; a closed one gives
    its room back."""
    r0 = metric(port, "ringws_deflate_takeover_refused_total")
    first = [takeover_open(port)[0] for _ in range(2)]
    try:
        for ws in first:
            ws.send_frame(OP_TEXT, client_deflate(ws, json_text(500, 1)), rsv=4)
            takeover_recv(ws)
        with open_pmd(port) as ws:
            eq(ws.response.header_all("Sec-WebSocket-Extensions"), [ANSWER], "answer past the cap")
            text = json_text(700, 2)
            ws.send_frame(OP_TEXT, deflate_message(text), rsv=4)
            ws.expect_echo(OP_TEXT, text)
            ws.close_handshake()
        eq(metric(port, "ringws_deflate_takeover_refused_total") - r0, 1, "refused")
        # An upgrade without compression is not refused anything.
        with RawWS.open(port) as ws:
            ws.close_handshake()
        eq(metric(port, "ringws_deflate_takeover_refused_total") - r0, 1, "refused")
        first.pop().close_handshake()
        ws, got = takeover_open(port)
        with ws:
            eq(got, {"client_max_window_bits": "11"}, "takeover again once room was given back")
            ws.close_handshake()
    finally:
        for ws in first:
            ws.close()


def t_takeover_fanout(port):
    """A publish to takeover subscribers (raw and ringws.v1): compressed for
    each through its own stream (the second alike message a fraction of the
    first), beside one shared compression for the stateless subscriber and
    the plain frame for the plain one."""
    zs = [takeover_open(port, "/ws?topics=tk")[0] for _ in range(2)]
    env, _ = takeover_open(port, "/ws?topics=tk", protocol="ringws.v1")
    stateless = open_pmd(port, "/ws?topics=tk", offer=PMD + "; server_no_context_takeover")
    plain = RawWS.open(port, path="/ws?topics=tk")
    try:
        expect(env.recv_event().data.startswith(b"subscribed tk "), "subscribed notice", None)
        c0 = metric(port, "ringws_deflate_compressed_total")
        text = json_text(1500, 12)
        sizes = {id(ws): [] for ws in zs + [env]}
        for _ in range(2):
            eq(publish(port, "tk", text), 5, "recipients")
            for ws in zs:
                data, zlen = takeover_recv(ws)
                eq(data, text.encode(), "takeover subscriber's message")
                sizes[id(ws)].append(zlen)
            data, zlen = takeover_recv(env)
            expect(data.startswith(b"msg tk ") and data.endswith(text.encode()),
                   "takeover ringws.v1 message", data[:40])
            sizes[id(env)].append(zlen)
            expect(stateless.expect_event("text", text.encode()).compressed,
                   "a shared compressed frame to the stateless subscriber", None)
            eq(plain.expect_event("text", text.encode()).compressed, False, "plain frame")
        for zl in sizes.values():
            expect(zl[0] and zl[1] * 4 < zl[0], "the second publish refers to the first", zl)
        # Per publish: one shared compression, one per takeover subscriber.
        eq(metric(port, "ringws_deflate_compressed_total") - c0, 2 * 4, "compressions")
        eq(publish(port, "tk", '{"n":1}'), 5, "recipients of a short one")
        for ws in zs:
            eq(takeover_recv(ws), (b'{"n":1}', None), "a short publish goes plain")
    finally:
        for ws in zs + [env, stateless, plain]:
            ws.close()
    # Once they have all gone, no subscriber with compression is left: a
    # publish to a plain one compresses nothing.
    with RawWS.open(port, path="/ws?topics=tk") as ws:
        wait_takeover_bytes(port, lambda n: n == 0, "0 once the subscribers left")
        c0 = metric(port, "ringws_deflate_compressed_total")
        eq(publish(port, "tk", text), 1, "recipients")
        eq(ws.expect_event("text", text.encode()).compressed, False, "plain frame")
        eq(metric(port, "ringws_deflate_compressed_total") - c0, 0, "compressions with none left")


def t_takeover_history(port):
    """A resume's replay goes through the subscriber's stream, in order, and
    the live messages after it too."""
    texts = [json_text(500, 30 + i) for i in range(3)]
    with open_pmd(port, "/ws?topics=th", protocol="ringws.v1") as ws:
        epoch = ws.recv_event().data.decode().split()[2]
    for t in texts:
        publish(port, "th", t)
    ws, _ = takeover_open(port, "/ws?topics=th&since=th:%s:0" % epoch, protocol="ringws.v1")
    with ws:
        expect(ws.recv_event().data.startswith(b"recovered th "), "recovered notice", None)
        sizes = []
        for t in texts + texts[:1]:
            if len(sizes) == 3:
                publish(port, "th", t)
            data, zlen = takeover_recv(ws)
            expect(zlen and data.endswith(t.encode()), "replayed, then live, compressed", data[:40])
            sizes.append(zlen)
        expect(sizes[3] * 3 < sizes[0], "the live message refers to the replayed one", sizes)


def t_takeover_python_websockets(port):
    """python3-websockets' default offer is takeover both ways: it reads
    the answer, and messages go both ways compressed against the ones
    before."""
    t_python_websockets(port, PMD + "; client_max_window_bits=11")


def t_takeover_node_ws(port):
    t_node_ws(port, PMD + "; client_max_window_bits=11")


def t_takeover_chromium(port):
    """Headless Chromium on a takeover path: it agrees to keep context both
    ways, and alike JSON messages go both ways compressed (the server
    inflates them, and compresses the echoes, through the streams)."""
    from cdp import Browser

    msgs = [json_text(n, i) for i, n in enumerate([300, 300, 2000, 300, 60000])]

    async def go():
        async with Browser() as b:
            await b.open("http://127.0.0.1:%d/healthz" % port)
            return await b.eval("""new Promise((done, fail) => {
                const msgs = %s, got = [];
                const ws = new WebSocket('ws://127.0.0.1:%d/echo');
                ws.onopen = () => msgs.forEach((m) => ws.send(m));
                ws.onmessage = (e) => {
                    got.push(e.data);
                    if (got.length === msgs.length)
                        done({extensions: ws.extensions, same: got.every((g, i) => g === msgs[i])});
                };
                ws.onerror = () => fail(new Error('websocket error'));
                setTimeout(() => fail(new Error('timed out')), 20000);
            })""" % (json.dumps(msgs), port))

    before = {m: metric(port, m) for m in ("ringws_deflate_inflated_total",
                                          "ringws_deflate_sent_total")}
    res = asyncio.run(go())
    eq(res["extensions"], PMD + "; client_max_window_bits=11", "Chromium's agreed extension")
    expect(res["same"], "Chromium got every echo back byte-exact", res)
    got = {m: metric(port, m) - before[m] for m in before}
    eq(got["ringws_deflate_inflated_total"], len(msgs), "Chromium's messages inflated")
    eq(got["ringws_deflate_sent_total"], len(msgs), "echoes compressed through the stream")


def main():
    r = Runner("deflate")
    with r.server([], "default") as srv:
        p = srv.port
        for cid, fn in [
            ("answer-exact", t_answer_exact), ("autobahn-12-13-params", t_autobahn_params),
            ("declined-then-rsv1-1002", t_declined_then_rsv1_1002), ("malformed-400", t_malformed_400),
            ("fragmented", t_fragmented), ("final-block-and-empty", t_final_block_and_empty),
            ("small-sent-plain", t_small_sent_plain), ("bad-rsv1-1002", t_bad_rsv1),
            ("bad-data-1007", t_bad_data), ("python-websockets", t_python_websockets),
            ("node-ws", t_node_ws), ("fanout-compressed-once", t_fanout_once),
            ("fanout-plain-only", t_fanout_no_compression_without_subscriber),
        ]:
            r.case(cid, fn, p, timeout=60)
    with r.server(["--max-message", "65536", "--topic", "zh=close-1013,history=10"], "max-64k") as srv:
        r.case("bomb-1009", t_bomb, srv.port, 65536)
        r.case("inflate-budget-per-turn", t_inflate_budget, srv.port, 65536)
        r.case("history-replay", t_history_replay, srv.port)
    takeover = ["--workers", "1", "--deflate-takeover", "/echo", "--deflate-takeover", "/ws",
                "--topic", "th=close-1013,history=10"]
    with r.server(takeover, "takeover") as srv:
        p = srv.port
        for cid, fn in [
            ("takeover-params", t_takeover_params), ("takeover-fragmented", t_takeover_fragmented),
            ("takeover-broken-context-1007", t_takeover_broken_context_1007),
            ("takeover-memory", t_takeover_memory), ("takeover-fanout", t_takeover_fanout),
            ("takeover-history", t_takeover_history),
            ("takeover-python-websockets", t_takeover_python_websockets),
            ("takeover-node-ws", t_takeover_node_ws), ("takeover-chromium", t_takeover_chromium),
        ]:
            r.case(cid, fn, p, timeout=90)
    with r.server(["--workers", "1", "--deflate-takeover", "/echo", "--deflate-takeover-memory",
                   str(2 * WORST_11_11 + 1000)], "takeover-cap") as srv:
        r.case("takeover-cap-stateless", t_takeover_cap, srv.port)
    with r.server(["--no-deflate"], "no-deflate") as srv:
        r.case("no-deflate-flag", t_no_deflate_flag, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
