"""Publish/subscribe as docs/PUBSUB.md promises it, driven from outside: 50
subscribers (raw sockets and the websockets library, spread over two
workers) each get every one of 200 HTTP publishes in order, byte-exact and
with its opcode; `sub`/`unsub` commands take effect before the pong that
follows them, and a duplicate subscription gives one copy; topics stay apart;
POST /publish answers 200 {"recipients":N}, 401 without the token, 405 for
other methods, 400 for invalid topics and non-UTF-8 text; with no token
configured it answers 403 to a request with an Origin and to a peer that is
not loopback (from a network namespace, where root allows one), also on
0.0.0.0 and :: listeners, which warn at start; handshakes with an
invalid or too long topic list get 400; malformed commands close with 1008,
binary frames with 1003; `pub` works only where a --topic rule allows it;
slow subscribers meet the policy of the topic being published (close 1013,
close 1008, or drop-oldest: an in-order subsequence ending with the newest
queued message) while fast ones get everything, and the drops and closes
show in /metrics when it exists; many concurrent publishers (HTTP and `pub`)
keep their own order at every subscriber; a publish larger than
--max-publish is refused (413, close 1009), and publishes that would pass a
worker's --max-inbox are refused with 503 and Retry-After, counted in
/metrics, while every accepted one reaches every subscriber.

Every server runs with --workers 2 so that publishes cross workers."""

import asyncio
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import concurrent.futures as cf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (EOF, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, HttpConn, RawWS,  # noqa: E402
                         Runner, T, TestFailure, assert_served, build_frame, close_payload,
                         eq, expect, fail, gather_all, http_get, same_payload, short,
                         upgrade_request, ws_connect, text_of_bytes)

SEED = int(os.environ.get("RINGWS_TEST_SEED", int(time.time())))
print("pubsub: random seed %d (set RINGWS_TEST_SEED to repeat)" % SEED)

WORKERS = ["--workers", "2"]
TOKEN = "s3cret-token"
MAX_TOPICS = 4
# The binary's largest --max-topics.
MANY_TOPICS = 4000


def rng(tag):
    return random.Random("%d-%s" % (SEED, tag))




# ---------------------------------------------------------------------------
# Publishing over HTTP


TOKEN_AUTH = object()


class Publisher:
    """POST /publish/TOPIC on one keep-alive connection (reopened when the
    server closes it)."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method, target, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode("utf-8")
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, target, self.port)
        head += "".join("%s: %s\r\n" % h for h in headers)
        if method == "POST" or body:
            head += "Content-Length: %d\r\n" % len(body)
        data = head.encode("latin-1") + b"\r\n" + body
        if self.conn is None:
            self.conn = HttpConn(self.port)
        self.conn.send(data)
        resp = self.conn.read_response()
        if "close" in resp.tokens("Connection"):
            self.close()
        return resp

    def post(self, topic, body, binary=False, content_type=None, auth=TOKEN_AUTH):
        """auth: an Authorization value, None for no header, or by default
        the publisher's token (if any)."""
        headers = []
        if content_type is None and binary:
            content_type = "application/octet-stream"
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        if auth is TOKEN_AUTH:
            auth = "Bearer " + self.token if self.token is not None else None
        if auth is not None:
            headers.append(("Authorization", auth))
        return self.request("POST", "/publish/" + topic, body, headers)

    def publish(self, topic, body, binary=None, content_type=None, recipients=None):
        """Publishes; fails unless 200 {"recipients":N}; returns N (checked
        against `recipients` when given)."""
        if binary is None:
            binary = isinstance(body, (bytes, bytearray))
        resp = self.post(topic, body, binary=binary, content_type=content_type)
        if resp.status != 200:
            fail("POST /publish/%s: expected 200, got %d %s %r"
                 % (topic, resp.status, resp.reason, resp.body[:200]))
        n = recipients_of(resp)
        if recipients is not None and n != recipients:
            fail("POST /publish/%s: expected {\"recipients\":%d}, got %r"
                 % (topic, recipients, resp.body[:200]))
        return n


def recipients_of(resp):
    try:
        obj = json.loads(resp.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        fail("publish answer is not JSON: %r" % resp.body[:200])
    if not isinstance(obj, dict) or set(obj) != {"recipients"} or type(obj["recipients"]) is not int:
        fail("publish answer: expected {\"recipients\":N}, got %r" % resp.body[:200])
    return obj["recipients"]


def publish_once(port, topic, body, binary=None, recipients=None, token=None):
    p = Publisher(port, token)
    try:
        return p.publish(topic, body, binary=binary, recipients=recipients)
    finally:
        p.close()


# ---------------------------------------------------------------------------
# Subscribers


def subscriber(port, topics=None, path="/ws", rcvbuf=None):
    target = path if topics is None else "%s?topics=%s" % (path, topics)
    return RawWS.open(port, target, rcvbuf=rcvbuf)


def sync(ws, tag=b"sync"):
    """A ping after a command and its pong: the command has taken effect."""
    ws.send_frame(OP_PING, tag)
    ev = ws.recv_event(T(5), "the pong after a command")
    if ev.kind != "pong" or ev.data != tag:
        fail("expected the pong %r after a command, got %r" % (tag, ev))


def command(ws, text):
    ws.send_frame(OP_TEXT, text.encode("utf-8"))


def next_message(ws, what, timeout=None):
    """The next data message (pings answered are not expected here)."""
    try:
        ev = ws.recv_event(timeout if timeout is not None else T(5), what)
    except EOF as e:
        fail("expected %s, the connection was closed (%s)" % (what, e))
    if ev.kind not in ("text", "binary"):
        fail("expected %s, got %r" % (what, ev))
    return ev


def expect_msg(ws, kind, data, what="a published message"):
    if isinstance(data, str):
        data = data.encode("utf-8")
    ev = next_message(ws, "%s (%s %s)" % (what, kind, short(data)))
    if ev.kind != kind:
        fail("%s: expected a %s message %s, got %r" % (what, kind, short(data), ev))
    same_payload(ev.data, data, what)


def expect_nothing(ws, wait=0.3):
    ws.expect_silence(wait)


def fail_1008(ws, what):
    ev = ws.fail_expected(1008)
    expect(len(ev.reason) > 0, "a reason with the 1008 close after %s" % what,
           "an empty reason")
    return ev


def collect(ws, n, timeout, what):
    """Reads n data messages; returns [(kind, bytes)]."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("%s: got %d of %d messages within %.0fs" % (what, len(out), n, timeout))
        try:
            ev = ws.recv_event(left, "message %d of %d" % (len(out), n))
        except EOF as e:
            fail("%s: connection closed after %d of %d messages (%s)" % (what, len(out), n, e))
        except TestFailure as e:
            fail("%s: after %d of %d messages: %s" % (what, len(out), n, e))
        if ev.kind in ("text", "binary"):
            out.append((ev.kind, ev.data))
        elif ev.kind == "close":
            fail("%s: closed with code %s (reason %r) after %d of %d messages"
                 % (what, ev.code, bytes(ev.reason[:80]), len(out), n))
    return out


def compare_stream(got, want, what):
    for i, ((gk, gd), (wk, wd)) in enumerate(zip(got, want)):
        if gk != wk or gd != wd:
            if gk != wk:
                fail("%s: message %d: expected %s %s, got %s %s" % (what, i, wk, short(wd), gk, short(gd)))
            same_payload(gd, wd, "%s: message %d" % (what, i))
    eq(len(got), len(want), "%s: number of messages" % what)


def in_threads(fns, workers=None):
    """Runs callables concurrently; raises the first failure."""
    with cf.ThreadPoolExecutor(max_workers=workers or len(fns)) as pool:
        futs = [pool.submit(f) for f in fns]
        for f in futs:
            f.result()


def close_all(socks):
    for s in socks:
        s.close()


def wait_recipients(port, topic, want, token=None, limit=None):
    """Publishes probes to `topic` until the count is `want` (or a time
    limit passes) and returns the last count: a subscriber that went away
    may take the server a moment to notice."""
    deadline = time.monotonic() + (limit or T(3))
    p = Publisher(port, token)
    try:
        while True:
            n = p.publish(topic, "probe")
            if n == want or time.monotonic() > deadline:
                return n
            time.sleep(0.05)
    finally:
        p.close()


# ---------------------------------------------------------------------------
# Fan-out and ordering


def fanout_messages(n):
    r = rng("fanout")
    sizes = [0, 1, 7, 125, 126, 127, 1000, 4096, 65535, 65536, 70000]
    msgs = []
    for i in range(n):
        size = sizes[i % len(sizes)] if i < 3 * len(sizes) else r.choice([0, 3, 50, 125, 126, 500, 3000])
        if (i // 2) % 2 == 0:
            msgs.append(("text", text_of_bytes(size, r).encode("utf-8")))
        else:
            msgs.append(("binary", r.randbytes(size)))
    return msgs


def t_fanout(port, n_raw=35, n_lib=15, n_msgs=200):
    """Every subscriber gets every message, in order, exact, with its opcode;
    the POST answers the number of subscribers on both workers together."""
    msgs = fanout_messages(n_msgs)
    n_subs = n_raw + n_lib
    raws = []
    lib_ready = threading.Event()
    lib_go = threading.Event()
    lib_error = []

    async def lib_clients():
        conns = []
        try:
            for _ in range(n_lib):
                conns.append(await ws_connect(port, "/ws?topics=fan").__aenter__())
            lib_ready.set()
            while not lib_go.is_set():
                await asyncio.sleep(0.01)

            async def read(i, ws):
                for k, (kind, data) in enumerate(msgs):
                    got = await asyncio.wait_for(ws.recv(), T(20))
                    want = data.decode("utf-8") if kind == "text" else data
                    same_payload(got, want, "websockets client %d, message %d" % (i, k))

            await gather_all(*(read(i, ws) for i, ws in enumerate(conns)))
        finally:
            for ws in conns:
                await ws.close()

    def lib_thread():
        try:
            asyncio.run(asyncio.wait_for(lib_clients(), T(60)))
        except BaseException as e:  # noqa: BLE001 - reported by the case
            lib_error.append(e)
            lib_ready.set()

    th = threading.Thread(target=lib_thread, daemon=True)
    th.start()
    try:
        for _ in range(n_raw):
            raws.append(subscriber(port, "fan"))
        if not lib_ready.wait(T(20)):
            fail("the websockets clients did not connect within %.0fs" % T(20))
        if lib_error:
            raise lib_error[0]
        lib_go.set()
        counts = []

        def publish_all():
            p = Publisher(port)
            try:
                for kind, data in msgs:
                    body = data.decode("utf-8") if kind == "text" else data
                    counts.append(p.publish("fan", body, binary=(kind == "binary")))
            finally:
                p.close()

        def reader(i, ws):
            def go():
                got = collect(ws, len(msgs), T(30), "raw subscriber %d" % i)
                compare_stream(got, msgs, "raw subscriber %d" % i)
            return go

        in_threads([publish_all] + [reader(i, ws) for i, ws in enumerate(raws)])
        bad = [(i, c) for i, c in enumerate(counts) if c != n_subs]
        if bad:
            fail("recipients: expected %d for every publish, got %s for publishes %s"
                 % (n_subs, sorted({c for _, c in bad}), [i for i, _ in bad][:10]))
        th.join(T(30))
        if th.is_alive():
            fail("the websockets clients did not finish")
        if lib_error:
            raise lib_error[0]
        for ws in raws:
            expect_nothing(ws, 0.05)
    finally:
        lib_go.set()
        close_all(raws)


def t_topics_apart(port):
    """A subscriber of one topic never gets the other's messages."""
    with subscriber(port, "left") as a, subscriber(port, "right") as b, Publisher(port) as p:
        for i in range(20):
            eq(p.publish("left", "L%d" % i), 1, "recipients of left message %d" % i)
            eq(p.publish("right", b"R%d" % i), 1, "recipients of right message %d" % i)
        for i in range(20):
            expect_msg(a, "text", "L%d" % i, "left subscriber, message %d" % i)
            expect_msg(b, "binary", b"R%d" % i, "right subscriber, message %d" % i)
        expect_nothing(a)
        expect_nothing(b, 0.05)
        eq(p.publish("nobody", "x"), 0, "recipients of a topic without subscribers")


def t_sub_commands(port):
    """`sub a,b` then a ping: the pong says it took effect; messages of both
    arrive; `unsub` stops delivery (a second subscriber proves the message
    was sent); unknown topics in `unsub` are ignored."""
    with subscriber(port) as ws, subscriber(port, "cmd.a") as marker, Publisher(port) as p:
        command(ws, "sub cmd.a,cmd.b")
        sync(ws)
        eq(p.publish("cmd.a", "one"), 2, "recipients of cmd.a after sub")
        eq(p.publish("cmd.b", b"two"), 1, "recipients of cmd.b after sub")
        expect_msg(ws, "text", "one")
        expect_msg(ws, "binary", b"two")
        expect_msg(marker, "text", "one", "marker subscriber")

        command(ws, "unsub cmd.a")
        sync(ws)
        eq(p.publish("cmd.a", "after-unsub"), 1, "recipients of cmd.a after unsub (the marker only)")
        expect_msg(marker, "text", "after-unsub", "marker subscriber")
        eq(p.publish("cmd.b", "still-b"), 1, "recipients of cmd.b")
        expect_msg(ws, "text", "still-b", "cmd.b after unsubscribing cmd.a (cmd.a's message must not come)")

        command(ws, "unsub never.subscribed,cmd.b,also.unknown")
        sync(ws)
        eq(p.publish("cmd.b", "gone"), 0, "recipients of cmd.b after unsub")
        eq(p.publish("cmd.a", "gone too"), 1, "recipients of cmd.a")
        expect_msg(marker, "text", "gone too", "marker subscriber")
        expect_nothing(ws)

        # Subscribing again works, and the connection is healthy.
        command(ws, "sub cmd.b")
        sync(ws)
        eq(p.publish("cmd.b", "back"), 1, "recipients of cmd.b after subscribing again")
        expect_msg(ws, "text", "back")
        ws.close_handshake()


def t_duplicate_sub(port):
    """Subscribing twice (by the query and by commands, in one list or two)
    is one subscription: one copy of each message, one recipient."""
    with subscriber(port, "dup.a,dup.a") as ws, Publisher(port) as p:
        command(ws, "sub dup.a")
        command(ws, "sub dup.a,dup.a,dup.b")
        sync(ws)
        eq(p.publish("dup.a", "once"), 1, "recipients of dup.a, subscribed four times over")
        eq(p.publish("dup.b", "marker"), 1, "recipients of dup.b")
        expect_msg(ws, "text", "once")
        expect_msg(ws, "text", "marker", "the next message (a second copy of 'once' came instead)")
        # One unsub ends the subscription however often it was made.
        command(ws, "unsub dup.a")
        sync(ws)
        eq(p.publish("dup.a", "none"), 0, "recipients of dup.a after one unsub")
        expect_nothing(ws)


def t_close_unsubscribes(port):
    """A subscriber that closes (handshake or TCP reset) stops counting."""
    ws = subscriber(port, "bye.t")
    eq(publish_once(port, "bye.t", "x"), 1, "recipients with one subscriber")
    expect_msg(ws, "text", "x")
    ws.close_handshake()
    ws.close()
    eq(wait_recipients(port, "bye.t", 0), 0, "recipients after the subscriber closed")
    ws = subscriber(port, "bye.t")
    eq(publish_once(port, "bye.t", "y"), 1, "recipients with a new subscriber")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close()
    eq(wait_recipients(port, "bye.t", 0), 0, "recipients after the subscriber vanished (RST)")


def t_echo_still_served(port):
    assert_served(port, "with pub/sub enabled", limit=T(5))


def t_order_one_publisher_ws_lib(port):
    """A websockets-library subscriber over a burst of 500 small publishes
    on a kept-alive publisher connection, then its close is clean."""
    async def go():
        async with ws_connect(port, "/ws?topics=lib.order") as ws:
            def pub():
                with Publisher(port) as p:
                    for i in range(500):
                        p.publish("lib.order", "n%d" % i, recipients=1)
            await asyncio.gather(asyncio.to_thread(pub), asyncio.sleep(0))
            for i in range(500):
                eq(await asyncio.wait_for(ws.recv(), T(5)), "n%d" % i, "message %d" % i)
            await ws.close()
            eq(ws.close_code, 1000, "close code")
    asyncio.run(asyncio.wait_for(go(), T(30)))


# ---------------------------------------------------------------------------
# Publish endpoint errors


def t_publish_errors(port):
    with Publisher(port) as p:
        r = p.request("GET", "/publish/x")
        eq(r.status, 405, "GET /publish/x")
        r = p.request("PUT", "/publish/x", b"abc", [("Content-Type", "text/plain")])
        eq(r.status, 405, "PUT /publish/x")
        for topic, why in (("a%20b", "a percent-escaped space"), ("", "an empty topic"),
                           ("t" * 129, "129 bytes"), ("a,b", "a comma"), ("a%2Cb", "an escaped comma"),
                           ("caf%C3%A9", "an escaped non-ASCII letter"), ("a+b", "a plus sign"),
                           ("a*", "a star")):
            r = p.post(topic, "x")
            eq(r.status, 400, "POST /publish/ with %s (%r)" % (why, topic[:40]))
        # The edges that are valid.
        eq(p.publish("t" * 128, "x"), 0, "recipients of a 128-byte topic")
        eq(p.publish("Az09-._~:/@", "x"), 0, "recipients of a topic of every allowed character")
        # Text must be UTF-8; binary need not be.
        for ctype in (None, "text/plain; charset=utf-8", "application/json"):
            r = p.post("utf", b"ok \xc0\xaf", content_type=ctype)
            eq(r.status, 400, "POST of a non-UTF-8 body with Content-Type %s" % ctype)
        r = p.post("utf", b"\xed\xa0\x80", content_type=None)
        eq(r.status, 400, "POST of an encoded surrogate as text")
        eq(p.publish("utf", b"\xc0\xaf\xff", binary=True), 0, "recipients of a non-UTF-8 binary publish")


def t_publish_chunked_411(port):
    """A chunked body is not decoded: a publish that sends one is refused
    with 411 Length Required (not 404), publishes nothing, and the
    connection closes (the body cannot be skipped)."""
    with subscriber(port, "chunky") as ws, HttpConn(port) as c:
        c.send(b"POST /publish/chunky HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % port)
        r = c.read_response()
        eq(r.status, 411, "status of a chunked publish")
        c.expect_eof()
        expect_nothing(ws)


def t_publish_topic_chars(port):
    """Topics with '/', '@', ':' and '~' are delivered like any other."""
    topic = "room/42@eu:west~x"
    with subscriber(port, topic) as ws:
        eq(publish_once(port, topic, "slashes"), 1, "recipients of %s" % topic)
        expect_msg(ws, "text", "slashes")


def t_publish_sizes(port):
    """Up to 1 MiB of body is a message; more is refused with a 4xx."""
    mib = 1 << 20
    body = rng("big").randbytes(mib)
    with subscriber(port, "big") as ws, Publisher(port) as p:
        eq(p.publish("big", body, binary=True), 1, "recipients of a 1 MiB publish")
        ev = next_message(ws, "the 1 MiB message", T(10))
        eq(ev.kind, "binary", "kind of the 1 MiB message")
        same_payload(ev.data, body, "the 1 MiB message")
        r = p.post("big", body + b"x", binary=True)
        expect(400 <= r.status < 500, "a 4xx answer to a body of 1 MiB + 1", "%d %s" % (r.status, r.reason))
        expect_nothing(ws)


def t_token(port):
    with Publisher(port, TOKEN) as p, subscriber(port, "tok") as ws:
        for auth, why in ((None, "no Authorization"), ("Bearer wrong", "a wrong token"),
                          ("Bearer " + TOKEN[:-1], "a prefix of the token"),
                          ("Bearer " + TOKEN + "x", "the token and one more byte"),
                          ("Basic " + TOKEN, "the Basic scheme"), ("Bearer", "no token"),
                          ("Bearer  " + TOKEN + "  ", "extra spaces")):
            r = p.post("tok", "secret", auth=auth)
            if why == "extra spaces":
                # Optional whitespace around a header value is not part of it;
                # the double space after the scheme is tolerated or refused.
                expect(r.status in (200, 401), "200 or 401 for %s" % why, r.status)
                if r.status == 200:
                    expect_msg(ws, "text", "secret")
                continue
            eq(r.status, 401, "POST /publish/tok with %s" % why)
        eq(p.publish("tok", "right"), 1, "recipients with the right token")
        expect_msg(ws, "text", "right")
        expect_nothing(ws)
        r = p.request("GET", "/publish/tok", headers=[("Authorization", "Bearer " + TOKEN)])
        eq(r.status, 405, "GET /publish/tok with the token")
        r = p.post("bad topic!", "x")
        eq(r.status, 400, "an invalid topic with the right token")


# ---------------------------------------------------------------------------
# Who may publish without a token


EVIL = "http://evil.example"
WARNING = "without a publish token"


def t_origin_refused(port):
    """No token configured: a publish that carries an Origin (what a browser
    adds to a web page's POST, same-site or not) is refused with 403 and
    reaches nobody; the same request without Origin, from loopback, is
    published."""
    with Publisher(port) as p, subscriber(port, "orig") as ws:
        for origin in (EVIL, "http://127.0.0.1:%d" % port, "null"):
            r = p.request("POST", "/publish/orig", b"from a page",
                          [("Origin", origin), ("Content-Type", "text/plain")])
            eq(r.status, 403, "POST /publish with Origin %s and no token configured" % origin)
            expect(b"Origin" in r.body, "a reason that names the Origin", short(r.body))
        expect_nothing(ws)
        eq(p.publish("orig", "local"), 1, "recipients of a loopback publish without Origin")
        expect_msg(ws, "text", "local")


def t_token_origin(port):
    """With a token the token decides: a request that holds it is published
    whatever its Origin, one that does not gets 401."""
    with Publisher(port, TOKEN) as p, subscriber(port, "tok.o") as ws:
        r = p.request("POST", "/publish/tok.o", b"no token", [("Origin", EVIL)])
        eq(r.status, 401, "POST /publish with an Origin and no token")
        r = p.request("POST", "/publish/tok.o", b"token",
                      [("Origin", EVIL), ("Authorization", "Bearer " + TOKEN)])
        eq(r.status, 200, "POST /publish with an Origin and the token")
        eq(recipients_of(r), 1, "recipients of a publish with an Origin and the token")
        expect_msg(ws, "text", "token")
        expect_nothing(ws)


def t_cross_origin_subscription(port):
    """Subscribing from any web page stays allowed without --origin."""
    req, key = upgrade_request(port, path="/ws?topics=xo", headers={"Origin": EVIL})
    ws = RawWS.open(port, request=req, key=key)
    try:
        eq(publish_once(port, "xo", "seen"), 1, "recipients with a cross-origin subscriber")
        expect_msg(ws, "text", "seen")
    finally:
        ws.close()


def t_no_warning(srv):
    text = srv.stderr_text()
    expect(WARNING not in text, "no warning about publishing", repr(text[-600:]))


def t_warning(srv, bind):
    """Bound beyond loopback with no token: one warning at start that names
    the address and the ways to lock it down."""
    lines = [ln for ln in srv.stderr_text().splitlines() if WARNING in ln]
    eq(len(lines), 1, "warnings about publishing without a token")
    for word in ("[warn]", bind, "loopback", "--publish-token", "--origin"):
        expect(word in lines[0], "%r in the warning" % word, repr(lines[0]))


def post_from(host, port, topic, body, source=None, headers=()):
    """POST /publish/TOPIC from a client socket to `host`, bound to `source`
    when given: the answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(T(5))
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        with HttpConn(port, sock=s) as c:
            c.send(post_bytes(port, topic, body, headers))
            return c.read_response()
    finally:
        s.close()


def t_loopback_peers(port, hosts):
    """Every kind of loopback peer may publish without a token: 127.0.0.1,
    another 127/8 address, ::1, and IPv4 loopback arriving v4-mapped on a
    dual-stack listener."""
    with subscriber(port, "lo") as ws:
        for host, source in hosts:
            r = post_from(host, port, "lo", "from %s" % (source or host), source)
            eq(r.status, 200, "POST /publish from %s to %s" % (source or host, host))
            eq(recipients_of(r), 1, "recipients of the publish from %s" % (source or host))
            expect_msg(ws, "text", "from %s" % (source or host))


class Outside:
    """A peer that is not loopback: a network namespace joined to this one by
    a veth pair, with an IPv4 /30 and an IPv6 /64 of its own. Creating it
    needs root (CAP_NET_ADMIN); `why` says why it could not be made."""

    CLIENT = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=5)
s.sendall(sys.stdin.buffer.read())
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(s.getsockname()[0], file=sys.stderr)
sys.stdout.buffer.write(data)
"""

    def __init__(self):
        self.remove_stale()
        pid = os.getpid()
        a = (pid % 16000) * 4
        self.ns = "ringws-t%d" % pid
        self.dev = "rwt%d" % pid
        self.v4 = ("10.254.%d.%d" % (a >> 8, (a & 255) + 1), "10.254.%d.%d" % (a >> 8, (a & 255) + 2))
        net6 = "fd72:7773:%x::" % (pid & 0xffff)
        self.v6 = (net6 + "1", net6 + "2")
        self.made = False
        self.why = None
        steps = [
            ["netns", "add", self.ns],
            ["link", "add", self.dev + "h", "type", "veth", "peer", "name", self.dev + "n"],
            ["link", "set", self.dev + "n", "netns", self.ns],
            ["addr", "add", self.v4[0] + "/30", "dev", self.dev + "h"],
            ["-6", "addr", "add", self.v6[0] + "/64", "dev", self.dev + "h", "nodad"],
            ["link", "set", self.dev + "h", "up"],
            ["-n", self.ns, "addr", "add", self.v4[1] + "/30", "dev", self.dev + "n"],
            ["-n", self.ns, "-6", "addr", "add", self.v6[1] + "/64", "dev", self.dev + "n", "nodad"],
            ["-n", self.ns, "link", "set", self.dev + "n", "up"],
        ]
        for step in steps:
            try:
                r = subprocess.run(["ip"] + step, capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired) as e:
                self.why = "ip %s: %s" % (" ".join(step), e)
                break
            if step[0] == "netns" and r.returncode == 0:
                self.made = True
            if r.returncode != 0:
                self.why = "ip %s: %s" % (" ".join(step), r.stderr.decode(errors="replace").strip())
                break

    @staticmethod
    def remove_stale():
        """Namespaces (and their veth pairs) left by a run of this script
        that was killed before it could remove them: its PID is gone."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        for line in r.stdout.decode(errors="replace").splitlines():
            name = line.split()[0] if line.split() else ""
            pid = name[len("ringws-t"):]
            if name.startswith("ringws-t") and pid.isdigit() and not os.path.exists("/proc/" + pid):
                subprocess.run(["ip", "link", "del", "rwt%sh" % pid], capture_output=True, timeout=10)
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def remove(self):
        subprocess.run(["ip", "link", "del", self.dev + "h"], capture_output=True, timeout=10)
        if self.made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        self.made = False

    def post(self, host, port, topic, body, headers=()):
        """POST from inside the namespace (Connection: close): (status, source address)."""
        req = post_bytes(port, topic, body, [("Connection", "close")] + list(headers))
        r = subprocess.run(["ip", "netns", "exec", self.ns, "/usr/bin/python3", "-c", self.CLIENT,
                            host, str(port)], input=req, capture_output=True, timeout=T(15))
        if r.returncode != 0:
            fail("the client in the namespace failed: %s" % r.stderr.decode(errors="replace")[-400:])
        head = r.stdout.split(b"\r\n", 1)[0]
        if not head.startswith(b"HTTP/1.1 "):
            fail("the client in the namespace got %r" % r.stdout[:200])
        return int(head[9:12]), r.stderr.decode().strip(), r.stdout


def t_outside_peer(port, outside, hosts, token=None):
    """A peer outside the host: refused (403) without a token; with a token
    configured, published when it holds the token and 401 when not."""
    with subscriber(port, "out") as ws:
        for host in hosts:
            status, source, raw = outside.post(host, port, "out", "from outside")
            expect(source in outside.v4 + outside.v6, "a source address in the namespace", source)
            if token is None:
                eq(status, 403, "POST /publish from %s to %s without a token configured" % (source, host))
                expect(b"loopback" in raw, "a reason that names loopback", short(raw))
                continue
            eq(status, 401, "POST /publish from %s without the token" % source)
            status, _, raw = outside.post(host, port, "out", "with token",
                                          [("Authorization", "Bearer " + token)])
            eq(status, 200, "POST /publish from %s with the token" % source)
            expect_msg(ws, "text", "with token")
        expect_nothing(ws)


# ---------------------------------------------------------------------------
# Handshakes and commands


def handshake_status(port, target):
    req, _ = upgrade_request(port, path=target)
    with HttpConn(port) as c:
        c.send(req)
        return c.read_response()


def t_handshake_topics(port, max_topics):
    ok = ["a", "a,b", ",".join("t%d" % i for i in range(max_topics)), "x" * 128]
    bad = ["a%20b", "a,,b", ",a", "a,", "x" * 129, "a;b", "caf%C3%A9",
           ",".join("t%d" % i for i in range(max_topics + 1))]
    for q in ok:
        r = handshake_status(port, "/ws?topics=" + q)
        eq(r.status, 101, "handshake with topics=%s" % short(q))
    for q in bad:
        r = handshake_status(port, "/ws?topics=" + q)
        eq(r.status, 400, "handshake with topics=%s" % short(q))
    # Other query parameters are not topics.
    r = handshake_status(port, "/ws?x=1&topics=a&y=2")
    eq(r.status, 101, "handshake with topics among other parameters")


def t_handshake_duplicates(port, max_topics):
    """A topic named twice is one subscription (docs/PUBSUB.md, Topics), so
    a list longer than --max-topics made of fewer distinct topics is within
    the limit, as it is for `sub`."""
    q = ",".join(["same"] * (max_topics + 2))
    r = handshake_status(port, "/ws?topics=" + q)
    eq(r.status, 101, "handshake with topics=%s (%d names, 1 topic, --max-topics %d)"
       % (short(q), max_topics + 2, max_topics))
    q = ",".join("d%d" % (i % max_topics) for i in range(max_topics + 1))
    r = handshake_status(port, "/ws?topics=" + q)
    eq(r.status, 101, "handshake with topics=%s (%d names, %d topics, --max-topics %d)"
       % (short(q), max_topics + 1, max_topics, max_topics))


def t_sub_limit(port, max_topics):
    with subscriber(port) as ws:
        for i in range(max_topics):
            command(ws, "sub lim%d" % i)
        command(ws, "sub lim0")  # already held: no new subscription
        sync(ws)
        command(ws, "unsub lim0")
        command(ws, "sub lim%d" % max_topics)  # room again after the unsub
        sync(ws)
        command(ws, "sub one.too.many")
        fail_1008(ws, "a subscription past --max-topics")
    with subscriber(port) as ws:
        command(ws, "sub " + ",".join("m%d" % i for i in range(max_topics + 1)))
        fail_1008(ws, "one sub command past --max-topics")
    with subscriber(port, ",".join("q%d" % i for i in range(max_topics))) as ws:
        command(ws, "sub q0,q1")
        sync(ws)
        command(ws, "sub q%d" % max_topics)
        fail_1008(ws, "a sub past --max-topics after the query's")


MALFORMED = [
    "hello", "", " sub a", "sub", "sub ", "sub a,,b", "sub a b", "sub ,a", "sub a,",
    "sub " + "x" * 129, "sub a%b", "sub a\tb", "SUB a", "subscribe a", "unsub", "unsub ",
    "unsub a,,b", "pub", "sub\ta",
]


def t_malformed(port, text):
    with subscriber(port) as ws:
        command(ws, text)
        fail_1008(ws, "the command %r" % text)


def t_binary_frame(port):
    with subscriber(port, "bin") as ws:
        ws.send_frame(OP_BINARY, b"sub a")
        ws.fail_expected(1003)


def t_pub_forbidden(port, topic="t"):
    with subscriber(port) as ws:
        command(ws, "pub %s hello" % topic)
        fail_1008(ws, "a pub to %s, which no rule opens" % topic)


def t_pub_allowed(port):
    with subscriber(port, "t") as s1, subscriber(port, "t") as s2, subscriber(port) as pubr, \
            subscriber(port, "t") as self_sub:
        command(pubr, "pub t hello world")
        expect_msg(s1, "text", "hello world", "subscriber 1")
        expect_msg(s2, "text", "hello world", "subscriber 2")
        expect_msg(self_sub, "text", "hello world", "subscriber 3")
        for payload in ("", " two  spaces ", "héllo ☃ 😀", "pub t nested", "x" * 5000):
            command(pubr, "pub t " + payload)
            for i, s in enumerate((s1, s2, self_sub)):
                expect_msg(s, "text", payload, "subscriber %d, payload %s" % (i + 1, short(payload)))
        # A publisher that is a subscriber of the topic gets its own message.
        command(self_sub, "pub t from a subscriber")
        for i, s in enumerate((s1, s2, self_sub)):
            expect_msg(s, "text", "from a subscriber", "subscriber %d" % (i + 1))
        # 200 in a burst arrive in order.
        pubr.send_raw(b"".join(build_frame(OP_TEXT, ("pub t burst %d" % i).encode()) for i in range(200)))
        for s in (s1, s2, self_sub):
            for i in range(200):
                expect_msg(s, "text", "burst %d" % i, "burst message %d" % i)
        # The publisher itself subscribed to nothing: it got nothing.
        sync(pubr)
        expect_nothing(pubr, 0.05)
        # HTTP publishes to the same topic mix in.
        eq(publish_once(port, "t", "via http", token=TOKEN), 3, "recipients of an HTTP publish to t")
        expect_msg(s1, "text", "via http")


def t_pub_rules(port):
    with subscriber(port, "chat.room1,chat.secret") as s, subscriber(port) as pubr:
        command(pubr, "pub chat.room1 hi")
        expect_msg(s, "text", "hi", "a pub to chat.room1 (rule chat.*)")
        command(pubr, "pub chat. empty suffix")
        sync(pubr)
        command(pubr, "pub chat.secret leak")
        fail_1008(pubr, "a pub to chat.secret (an earlier rule without publish)")
        expect_nothing(s)
    with subscriber(port) as pubr:
        command(pubr, "pub chatroom x")
        fail_1008(pubr, "a pub to chatroom (matches no rule)")
    with subscriber(port) as pubr:
        command(pubr, "pub bad!topic x")
        fail_1008(pubr, "a pub to an invalid topic")


def t_custom_path(port):
    with subscriber(port, "x", path="/live") as ws:
        eq(publish_once(port, "x", "on /live"), 1, "recipients on the custom path")
        expect_msg(ws, "text", "on /live")
        command(ws, "sub y")
        sync(ws)
    r = handshake_status(port, "/ws?topics=x")
    eq(r.status, 404, "a WebSocket handshake on /ws when --pubsub-path is /live")
    r = handshake_status(port, "/echo")
    eq(r.status, 101, "a handshake on /echo")
    assert_served(port, "with --pubsub-path /live", limit=T(5))


# ---------------------------------------------------------------------------
# Many publishers at once


def t_concurrent_publishers(port, n_http=6, n_ws=2, per=150, n_subs=10):
    """Each publisher's messages arrive in its own order at every subscriber,
    nothing lost or duplicated, while they all publish at once."""
    topic = "load"
    subs = [subscriber(port, topic) for _ in range(n_subs)]
    total = (n_http + n_ws) * per
    r0 = rng("concurrent")
    fill = text_of_bytes(3000, r0)
    bfill = r0.randbytes(3000)

    def payload(p, i):
        head = "p%d:%d:" % (p, i)
        n = (p * 7919 + i * 104729) % 1500
        if p < n_http and (p + i) % 2:
            return "binary", head.encode() + bfill[:n]
        return "text", (head + fill[:n // 3]).encode("utf-8")

    wrong = []

    def http_pub(p):
        def go():
            with Publisher(port, TOKEN) as pub:
                for i in range(per):
                    kind, data = payload(p, i)
                    n = pub.publish(topic, data if kind == "binary" else data.decode("utf-8"),
                                    binary=(kind == "binary"))
                    if n != n_subs:
                        wrong.append((p, i, n))
        return go

    def ws_pub(p):
        def go():
            with subscriber(port) as ws:
                frames = []
                for i in range(per):
                    frames.append(build_frame(OP_TEXT, b"pub load " + payload(p, i)[1]))
                for k in range(0, len(frames), 10):
                    ws.send_raw(b"".join(frames[k:k + 10]))
                sync(ws, b"done")
        return go

    def reader(s, idx):
        def go():
            got = collect(s, total, T(60), "subscriber %d" % idx)
            nxt = [0] * (n_http + n_ws)
            for kind, data in got:
                head = data.split(b":", 2)
                try:
                    p, i = int(head[0][1:]), int(head[1])
                except (ValueError, IndexError):
                    fail("subscriber %d: a message that no publisher sent: %s" % (idx, short(data)))
                if i != nxt[p]:
                    fail("subscriber %d: publisher %d: expected its message %d, got %d (%s)"
                         % (idx, p, nxt[p], i, "a duplicate or reordering" if i < nxt[p] else "a loss"))
                wk, wd = payload(p, i)
                if kind != wk:
                    fail("subscriber %d: publisher %d message %d: expected %s, got %s" % (idx, p, i, wk, kind))
                same_payload(data, wd, "subscriber %d: publisher %d message %d" % (idx, p, i))
                nxt[p] += 1
            eq(nxt, [per] * (n_http + n_ws), "subscriber %d: messages per publisher" % idx)
        return go

    try:
        in_threads([http_pub(p) for p in range(n_http)] + [ws_pub(n_http + k) for k in range(n_ws)]
                   + [reader(s, i) for i, s in enumerate(subs)])
        if wrong:
            fail("recipients: expected %d for every HTTP publish, got %s" % (n_subs, wrong[:5]))
        for s in subs:
            expect_nothing(s, 0.05)
    finally:
        close_all(subs)


# ---------------------------------------------------------------------------
# Publishers and subscribers that do not wait for each other


def post_bytes(port, topic, body, extra_headers=(), version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = "POST /publish/%s %s\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n" % (
        topic, version, port, len(body))
    head += "".join("%s: %s\r\n" % h for h in extra_headers)
    return head.encode("latin-1") + b"\r\n" + body


def t_publish_pipelined(port, n=30):
    """Many POSTs in one write: each is answered, in order, with its own
    count, and the messages arrive in the order of the requests."""
    with subscriber(port, "pipe") as a, subscriber(port, "pipe") as b, HttpConn(port) as c:
        c.send(b"".join(post_bytes(port, "pipe", "m%d" % i) for i in range(n)))
        for i in range(n):
            resp = c.read_response()
            eq(resp.status, 200, "status of pipelined publish %d" % i)
            eq(recipients_of(resp), 2, "recipients of pipelined publish %d" % i)
        for s in (a, b):
            for i in range(n):
                expect_msg(s, "text", "m%d" % i, "pipelined message %d" % i)
        c.expect_open()


def t_publish_pipelined_half_close(port, n=30):
    """Many POSTs in one write, then the client shuts down its writing side
    before reading: requests held while a count crosses workers are still
    answered, every one, and then the server closes."""
    with subscriber(port, "half") as s, HttpConn(port) as c:
        c.send(b"".join(post_bytes(port, "half", "h%d" % i) for i in range(n)))
        c.sock.shutdown(socket.SHUT_WR)
        for i in range(n):
            resp = c.read_response()
            eq(resp.status, 200, "status of pipelined publish %d" % i)
            eq(recipients_of(resp), 1, "recipients of pipelined publish %d" % i)
        c.expect_eof()
        for i in range(n):
            expect_msg(s, "text", "h%d" % i, "pipelined message %d" % i)


def t_publish_connection_close(port):
    """`Connection: close` and HTTP/1.0: the count is answered, then the
    server closes."""
    with subscriber(port, "cc") as s:
        for headers, version in (([("Connection", "close")], "HTTP/1.1"), ([], "HTTP/1.0")):
            with HttpConn(port) as c:
                c.send(post_bytes(port, "cc", "bye", headers, version))
                resp = c.read_response()
                eq(resp.status, 200, "status with %s %s" % (version, headers))
                eq(recipients_of(resp), 1, "recipients with %s %s" % (version, headers))
                c.expect_eof()
            expect_msg(s, "text", "bye")


def t_publisher_vanishes(port, rounds=300, n_subs=20):
    """Publishers that reset the connection right after their request, while
    the count is being gathered from the other worker: the server neither
    crashes nor mixes anything up. Each connection is a publisher of its own,
    so there is no order among them to check, but a publish that happened
    reached every subscriber (all get the same set, none twice), and later
    publishes are answered normally."""
    subs = [subscriber(port, "vanish") for _ in range(n_subs)]
    try:
        for i in range(rounds):
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(post_bytes(port, "vanish", "v%d" % i))
            if i % 3 == 1:
                time.sleep(0.0005)
            s.close()
        # The reset publishes may still be crossing workers: let them
        # settle before the end marker (and read on a moment after it).
        time.sleep(T(0.3))
        eq(publish_once(port, "vanish", "final"), n_subs, "recipients of the publish after the resets")
        sets = [None] * n_subs

        def check(k, ws):
            def go():
                seen = set()
                while True:
                    ev = next_message(ws, "subscriber %d: the next message" % k, T(10))
                    if ev.kind != "text":
                        fail("subscriber %d: a %s message" % (k, ev.kind))
                    if ev.data == b"final":
                        sets[k] = seen
                        try:
                            ev = ws.recv_event(0.2, "a late message")
                        except TestFailure as e:
                            if "timed out" in str(e):
                                return
                            raise
                        fail("subscriber %d: %r after the end marker" % (k, ev))
                    if not ev.data.startswith(b"v") or not ev.data[1:].isdigit() \
                            or int(ev.data[1:]) >= rounds:
                        fail("subscriber %d: a message nobody sent: %s" % (k, short(ev.data)))
                    if ev.data in seen:
                        fail("subscriber %d: %s twice" % (k, ev.data.decode()))
                    seen.add(ev.data)
            return go

        in_threads([check(k, ws) for k, ws in enumerate(subs)])
        for k in range(1, n_subs):
            if sets[k] != sets[0]:
                fail("subscribers 0 and %d got different publishes: only 0 got %s, only %d got %s"
                     % (k, sorted(sets[0] - sets[k])[:5], k, sorted(sets[k] - sets[0])[:5]))
        print("  %d of %d reset publishers' messages were published" % (len(sets[0]), rounds), flush=True)
        assert_served(port, "after %d publishers reset their connections" % rounds, limit=T(5))
    finally:
        close_all(subs)


def t_subscriber_churn(port, n_stable=8, n_msgs=1500):
    """Subscribers come and go (reset, FIN, close handshake) while messages
    are published: the stable ones get every message in order."""
    stable = [subscriber(port, "churn") for _ in range(n_stable)]
    stop = threading.Event()
    churned = [0]
    errors = []

    def churn():
        k = 0
        try:
            while not stop.is_set():
                ws = subscriber(port, "churn")
                way = k % 3
                if way == 0:
                    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif way == 2:
                    ws.try_send(build_frame(OP_CLOSE, close_payload(1000)))
                ws.close()
                k += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        churned[0] = k

    def publish_all():
        try:
            with Publisher(port) as p:
                for i in range(n_msgs):
                    n = p.publish("churn", "c%d" % i)
                    if n < n_stable:
                        fail("publish %d: %d recipients, fewer than the %d stable subscribers"
                             % (i, n, n_stable))
        finally:
            stop.set()

    def reader(k, ws):
        def go():
            got = collect(ws, n_msgs, T(40), "stable subscriber %d" % k)
            compare_stream(got, [("text", b"c%d" % i) for i in range(n_msgs)], "stable subscriber %d" % k)
        return go

    th = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for t in th:
        t.start()
    try:
        in_threads([publish_all] + [reader(k, ws) for k, ws in enumerate(stable)])
    finally:
        stop.set()
        for t in th:
            t.join(T(10))
        close_all(stable)
    if errors:
        raise errors[0]
    print("  churn: %d subscriber connections came and went" % churned[0], flush=True)
    eq(wait_recipients(port, "churn", 0), 0, "recipients once every subscriber is gone")


# Connections that must outlive their case: the server is stopped with them
# open (the scope then checks a clean exit, sanitizer reports included).
HELD = []


def t_hold_for_shutdown(port):
    """A slow subscriber with a full queue, a fast one, and a subscriber of
    several topics stay open while the server is told to stop."""
    slow = subscriber(port, "held", rcvbuf=1)
    fast = subscriber(port, "held,other,third")
    HELD.extend([slow, fast])
    with Publisher(port) as p:
        for i in range(2500):
            p.publish("held", slow_payload(i))
    expect_msg(fast, "binary", slow_payload(0), "the fast subscriber")


# ---------------------------------------------------------------------------
# Slow subscribers

FANOUT_QUEUE = 65536
MSG = 1024


def slow_payload(i):
    return struct.pack("!I", i) * (MSG // 4)


def slow_index(data):
    if len(data) != MSG:
        fail("a message of %d bytes: every published one has %d" % (len(data), MSG))
    i = struct.unpack("!I", data[:4])[0]
    if data != slow_payload(i):
        fail("message %d is corrupted" % i)
    return i


def metrics(port):
    """GET /metrics as {name_with_labels: value}, or None without it."""
    try:
        r = http_get(port, "/metrics")
    except TestFailure:
        return None
    if r.status != 200:
        return None
    out = {}
    for line in r.body.decode("utf-8", "replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.rsplit(" ", 1)
        try:
            out[parts[0]] = float(parts[1])
        except (IndexError, ValueError):
            pass
    return out


def metric_sum(m, *words):
    return sum(v for k, v in m.items() if all(w in k for w in words))


class FastReader:
    """A subscriber that reads all the time on a thread, until the end marker."""

    END = 0xFFFFFFFF

    def __init__(self, port, topic, idx):
        self.ws = subscriber(port, topic)
        self.idx = idx
        self.got = []
        self.error = None
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            while True:
                ev = next_message(self.ws, "fast subscriber %d: message after %d" % (self.idx, len(self.got)),
                                  T(30))
                i = slow_index(ev.data)
                if i == self.END:
                    return
                self.got.append(i)
        except BaseException as e:  # noqa: BLE001 - checked by finish()
            self.error = e

    def finish(self, n):
        self.th.join(T(60))
        if self.th.is_alive():
            fail("fast subscriber %d did not finish reading" % self.idx)
        if self.error is not None:
            raise TestFailure("fast subscriber %d: %s" % (self.idx, self.error))
        if self.got != list(range(n)):
            first = next((k for k in range(min(n, len(self.got))) if self.got[k] != k), min(n, len(self.got)))
            fail("fast subscriber %d: expected messages 0..%d in order, got %d messages, first wrong at "
                 "position %d (%s)" % (self.idx, n - 1, len(self.got), first, self.got[first:first + 5]))


def read_slow(ws, what, until_index=None, timeout=None):
    """Reads what a slow subscriber was sent: data messages until a close
    frame (returned) or until the message `until_index` (then None)."""
    got = []
    deadline = time.monotonic() + (timeout or T(30))
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("%s: still reading after %.0fs (%d messages, last %s)" % (what, timeout or T(30),
                                                                         len(got), got[-1:]))
        try:
            ev = ws.recv_event(left, "the slow subscriber's next frame")
        except EOF as e:
            fail("%s: the connection ended without a close frame after %d messages (last %s): %s"
                 % (what, len(got), got[-1:], e))
        if ev.kind == "close":
            return got, ev
        if ev.kind not in ("text", "binary"):
            fail("%s: unexpected %r" % (what, ev))
        got.append(slow_index(ev.data))
        if until_index is not None and got[-1] == until_index:
            return got, None


def t_slow_close(port, topic, code, n_fast=2, limit=20000):
    """A subscriber that never reads meets a close with `code` once its queue
    is full; the fast ones get everything; what the slow one was sent before
    the close frame is the first messages, in order."""
    fast = [FastReader(port, topic, i) for i in range(n_fast)]
    slow = subscriber(port, topic, rcvbuf=1)
    m0 = metrics(port)
    try:
        closed_at = None
        with Publisher(port) as p:
            i = 0
            while i < limit:
                n = p.publish(topic, slow_payload(i))
                if n not in (n_fast, n_fast + 1):
                    fail("publish %d: expected %d or %d recipients, got %d" % (i, n_fast + 1, n_fast, n))
                if closed_at is None and n == n_fast:
                    closed_at = i
                elif closed_at is not None and n != n_fast:
                    fail("publish %d: %d recipients, but the slow subscriber was dropped at %d"
                         % (i, n, closed_at))
                i += 1
                if closed_at is not None and i >= closed_at + 20:
                    break
            total = i
            if closed_at is None:
                fail("the subscriber that never reads was still a recipient after %d x %d bytes "
                     "(--fanout-queue %d)" % (limit, MSG, FANOUT_QUEUE))
            p.publish(topic, struct.pack("!I", FastReader.END) * (MSG // 4), recipients=n_fast)
        got, ev = read_slow(slow, "slow subscriber (%s)" % topic)
        print("  %s: the slow subscriber stopped being a recipient at publish %d; it was sent %d "
              "messages before its close frame" % (topic, closed_at, len(got)), flush=True)
        if got != list(range(len(got))):
            fail("slow subscriber: expected the first messages in order, got %d messages: %s..."
                 % (len(got), got[:10]))
        expect(len(got) <= closed_at, "only messages published before the close (< %d)" % closed_at,
               "%d messages" % len(got))
        eq(ev.code, code, "close code of the slow subscriber")
        # 1013 asks the client to come back: with the binary's reconnect
        # window (5 s) its reason says when.
        hint = re.match(rb"^subscriber too slow; retry after ([0-9]+) ms$", bytes(ev.reason))
        expect(bool(hint) == (code == 1013) and (not hint or int(hint.group(1)) < 5000),
               "a retry hint below 5000 ms in the reason of a 1013 close, none in a 1008's",
               bytes(ev.reason))
        slow.try_send(build_frame(OP_CLOSE, close_payload(code)))
        slow.expect_eof(T(5))
        for f in fast:
            f.finish(total)
        m1 = metrics(port)
        if m0 is not None and m1 is not None:
            c0, c1 = metric_sum(m0, "fanout", "close"), metric_sum(m1, "fanout", "close")
            print("  /metrics: fanout closes %g -> %g" % (c0, c1), flush=True)
            expect(c1 >= c0 + 1, "the close counted in /metrics", "%g -> %g" % (c0, c1))
        else:
            print("  (no /metrics: the count is not checked from outside)", flush=True)
    finally:
        slow.close()
        for f in fast:
            f.ws.close()


def t_slow_drop_oldest(port, topic="drop.t", n_fast=2, n=6000):
    """Under drop-oldest the slow subscriber stays open: once it reads, it
    gets an in-order subsequence, fewer than all, ending with the newest
    message that was queued to it; then it is served normally again."""
    fast = [FastReader(port, topic, i) for i in range(n_fast)]
    slow = subscriber(port, topic, rcvbuf=1)
    m0 = metrics(port)
    try:
        last_queued = None
        dropped_new = 0
        with Publisher(port) as p:
            for i in range(n):
                c = p.publish(topic, slow_payload(i))
                if c == n_fast + 1:
                    last_queued = i
                elif c == n_fast:
                    dropped_new += 1
                else:
                    fail("publish %d: expected %d or %d recipients, got %d" % (i, n_fast + 1, n_fast, c))
            p.publish(topic, struct.pack("!I", FastReader.END) * (MSG // 4))
        print("  drop-oldest: %d publishes not queued to the slow subscriber at all; last queued %s"
              % (dropped_new, last_queued), flush=True)
        for f in fast:
            f.finish(n)
        expect(last_queued is not None, "the slow subscriber to have been a recipient", "never")
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        got, ev = read_slow(slow, "slow subscriber (drop-oldest)", until_index=last_queued)
        if ev is not None:
            fail("slow subscriber under drop-oldest was closed with %s (reason %r) after %d messages"
                 % (ev.code, bytes(ev.reason[:80]), len(got)))
        # The end marker was published last: it may be queued after last_queued.
        bad = [k for k in range(1, len(got)) if got[k] <= got[k - 1]]
        if bad:
            fail("slow subscriber: out of order or duplicated at position %d: %s"
                 % (bad[0], got[max(0, bad[0] - 3):bad[0] + 3]))
        expect(len(got) < n, "fewer than all %d messages (some dropped)" % n, "all %d" % len(got))
        eq(got[-1], last_queued, "the last message the slow subscriber got")
        print("  drop-oldest: the slow subscriber got %d of %d messages" % (len(got), n), flush=True)
        # It is still open and served: the end marker (if queued), then a fresh message.
        with Publisher(port) as p:
            p.publish(topic, slow_payload(n + 1), recipients=n_fast + 1)
        while True:
            ev = next_message(slow, "the message published after the flood")
            i = slow_index(ev.data)
            if i == FastReader.END:
                continue
            eq(i, n + 1, "the message after the flood")
            break
        sync(slow, b"alive")
        m1 = metrics(port)
        if m0 is not None and m1 is not None:
            d0, d1 = metric_sum(m0, "fanout", "drop"), metric_sum(m1, "fanout", "drop")
            print("  /metrics: fanout drops %g -> %g (%d messages missing)" % (d0, d1, n - len(got)),
                  flush=True)
            expect(d1 >= d0 + 1, "the drops counted in /metrics", "%g -> %g" % (d0, d1))
        slow.close_handshake()
    finally:
        slow.close()
        for f in fast:
            f.ws.close()


def t_slow_mixed_policies(port, n=6000):
    """The policy of the topic being published decides: a subscriber whose
    queue is full of drop-oldest messages is closed with 1013 by a publish to
    a topic without a rule (close-1013), not made to drop that one."""
    slow = subscriber(port, "drop.m,mixed.c", rcvbuf=1)
    try:
        with Publisher(port) as p:
            counted = 0
            for i in range(n):
                counted += p.publish("drop.m", slow_payload(i)) == 1
            expect(counted > 0, "the slow subscriber to be a recipient of drop.m", "never")
            c = p.publish("mixed.c", slow_payload(n))
            eq(c, 0, "recipients of a close-1013 topic's publish to a subscriber whose queue is full")
        got, ev = read_slow(slow, "slow subscriber of drop.m and mixed.c")
        bad = [k for k in range(1, len(got)) if got[k] <= got[k - 1]]
        expect(not bad, "drop.m messages in order", "disorder at position %s" % bad[:1])
        expect(n not in got, "no mixed.c message", "it came")
        eq(ev.code, 1013, "close code from the close-1013 topic's publish")
        slow.try_send(build_frame(OP_CLOSE, close_payload(1013)))
        slow.expect_eof(T(5))
    finally:
        slow.close()


def topic_gauges(port):
    """(topics, topic-index buckets) from /metrics, summed over workers."""
    m = metrics(port)
    expect(m is not None, "GET /metrics to answer", m)
    for name in ("ringws_topics", "ringws_topic_buckets"):
        expect(name in m, "the gauge %s in /metrics" % name, sorted(m))
    return int(m["ringws_topics"]), int(m["ringws_topic_buckets"])


def wait_topics(port, want):
    """The gauges once the topic count is `want`: a subscriber that closed
    leaves its topics when the server frees the connection, a moment after
    the close handshake."""
    deadline = time.monotonic() + T(5)
    gauges = topic_gauges(port)
    while gauges[0] != want and time.monotonic() < deadline:
        time.sleep(0.02)
        gauges = topic_gauges(port)
    return gauges


def t_topic_index_follows_topics(port, n_conns=8, per_conn=MANY_TOPICS, keep=100, per=1000):
    """The topic index grows with the topics and gives its buckets back as
    they go: 8 subscribers take 4000 distinct topics each; one drops all but
    100 of its topics (which are still delivered to: the index was rebuilt
    smaller, not lost) and the others close; then the last one closes.
    /metrics shows the topics and the index's buckets each time."""
    n = n_conns * per_conn
    eq(topic_gauges(port), (0, 0), "topics and index buckets before any subscription")
    names = [["ix.%d.%d" % (c, i) for i in range(per_conn)] for c in range(n_conns)]
    conns = [subscriber(port) for _ in range(n_conns)]
    try:
        for ws, mine in zip(conns, names):
            for i in range(0, per_conn, per):
                command(ws, "sub " + ",".join(mine[i:i + per]))
        for ws in conns:
            sync(ws)
        topics, buckets = topic_gauges(port)
        eq(topics, n, "topics after subscribing to %d" % n)
        expect(n <= buckets <= 4 * n, "between 1 and 4 buckets per topic", buckets)
        ws, mine = conns[0], names[0]
        for i in range(keep, per_conn, per):
            command(ws, "unsub " + ",".join(mine[i:i + per]))
        sync(ws)
        for other in conns[1:]:
            other.close_handshake()
            other.close()
        topics, buckets = wait_topics(port, keep)
        eq(topics, keep, "topics after unsubscribing and closing all but %d" % keep)
        expect(buckets <= 8 * keep, "at most 8 buckets per topic left (the index shrinks)",
               "%d buckets for %d topics" % (buckets, topics))
        with Publisher(port) as p:
            for name in mine[:keep]:
                eq(p.publish(name, name), 1, "recipients of %s after the index shrank" % name)
            eq(p.publish(mine[keep], "gone"), 0, "recipients of an unsubscribed topic")
            eq(p.publish(names[1][0], "gone"), 0, "recipients of a closed subscriber's topic")
        for name in mine[:keep]:
            expect_msg(ws, "text", name)
        ws.close_handshake()
        ws.close()
    finally:
        close_all(conns)
    eq(wait_topics(port, 0), (0, 0), "topics and index buckets once every subscriber has gone")


def t_burst_one_gathered_send(port, n=50):
    """Publishes that reach a subscriber within one loop turn leave in one
    gathered send: a publisher's n `pub` frames arrive in one write, so one
    worker delivers all n to the subscriber before it sends anything."""
    with subscriber(port, "g") as sub, subscriber(port) as pubr:
        sync(sub)
        sync(pubr)
        before = metric_sum(metrics(port), "ringws_sends_total")
        pubr.send_raw(b"".join(build_frame(OP_TEXT, ("pub g %d" % i).encode()) for i in range(n)))
        for i in range(n):
            expect_msg(sub, "text", "%d" % i, "burst message %d" % i)
        after = metric_sum(metrics(port), "ringws_sends_total")
        # The metrics answers themselves are sends too (one each).
        expect(after - before <= 2, "the %d messages to leave in one send (+1 for /metrics)" % n,
               "%g sends" % (after - before))


# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Limits upstream of fan-out (server: --max-publish 65536 --max-inbox 65536)

PUB_LIMIT = 65536


def t_publish_size_limit(port):
    """--max-publish bounds every way of publishing: HTTP gets 413, a
    WebSocket `pub` is closed with 1009, and nothing is delivered."""
    with subscriber(port, "big") as s, subscriber(port) as pubr, Publisher(port) as p:
        body = rng("limit").randbytes(PUB_LIMIT)
        eq(p.publish("big", body, binary=True), 1, "recipients of a publish of exactly --max-publish")
        expect_msg(s, "binary", body, "the largest message allowed")
        r = p.post("big", body + b"x", binary=True)
        eq(r.status, 413, "POST /publish of --max-publish + 1 bytes")
        command(pubr, "pub big " + "x" * PUB_LIMIT)
        expect_msg(s, "text", "x" * PUB_LIMIT, "the largest `pub` allowed")
        command(pubr, "pub big " + "y" * (PUB_LIMIT + 1))
        ev = pubr.fail_expected(1009)
        expect(len(ev.reason) > 0, "a reason with the 1009 close", "an empty reason")
        expect_nothing(s)


class CountingReader:
    """A subscriber that counts binary messages on a thread until a text
    "end"."""

    def __init__(self, port, topic):
        self.ws = subscriber(port, topic)
        self.count, self.error = 0, None
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        try:
            while True:
                ev = next_message(self.ws, "message %d" % self.count, T(30))
                if ev.kind == "text":
                    eq(ev.data, b"end", "the text message that ends the stream")
                    return
                self.count += 1
        except BaseException as e:  # noqa: BLE001 - checked by finish()
            self.error = e

    def finish(self):
        self.th.join(T(30))
        if self.th.is_alive():
            fail("a subscriber did not get the end of the stream")
        if self.error is not None:
            raise TestFailure("a subscriber: %s" % self.error)
        self.ws.close()
        return self.count


def publish_round(port, n, body):
    """n POSTs sent at once on n connections; returns their responses."""
    request = post_bytes(port, "flood", body, [("Content-Type", "application/octet-stream")])
    conns = [HttpConn(port) for _ in range(n)]
    try:
        for c in conns:
            c.send(request)
        return [c.read_response() for c in conns]
    finally:
        close_all(conns)


def t_inbox_flood(port, n=48, max_rounds=20):
    """Rounds of n concurrent 60 KiB HTTP publishes, until some meet a
    worker's inbox already holding more than --max-inbox: those get 503
    with Retry-After (nothing queued), counted in /metrics; each accepted
    one reached both subscribers."""
    body = rng("flood").randbytes(60 * 1024)
    readers = [CountingReader(port, "flood") for _ in range(2)]
    before = metrics(port) or {}
    ok = refused = 0
    try:
        for _ in range(max_rounds):
            for resp in publish_round(port, n, body):
                if resp.status == 503:
                    refused += 1
                    expect(resp.header("Retry-After") is not None, "Retry-After with the 503",
                           resp.headers)
                else:
                    eq(resp.status, 200, "status of a publish in the flood")
                    eq(recipients_of(resp), 2, "recipients of an accepted publish")
                    ok += 1
            if refused:
                break
        deadline = time.monotonic() + T(5)
        with Publisher(port) as p:
            while True:
                r = p.post("flood", "end")
                if r.status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        eq(r.status, 200, "a publish after the flood")
    finally:
        counts = [rd.finish() for rd in readers]
    after = metrics(port)
    print("     %d publishes accepted, %d refused with 503" % (ok, refused), flush=True)
    expect(refused > 0, "some of %d rounds of %d concurrent publishes refused with 503 (--max-inbox %d)"
           % (max_rounds, n, PUB_LIMIT), "all %d accepted" % ok)
    eq(after["ringws_publishes_refused_total"] - before.get("ringws_publishes_refused_total", 0), refused,
       "ringws_publishes_refused_total")
    eq(counts, [ok, ok], "messages each subscriber got (the accepted publishes)")


def main():
    r = Runner("pubsub")
    with r.server(WORKERS, "defaults") as srv:
        p = srv.port
        r.case("fanout-50-subscribers-200-messages", t_fanout, p, timeout=90)
        r.case("topics-apart", t_topics_apart, p)
        r.case("sub-unsub-commands", t_sub_commands, p)
        r.case("duplicate-subscription-one-copy", t_duplicate_sub, p)
        r.case("close-ends-subscriptions", t_close_unsubscribes, p)
        r.case("websockets-lib-500-in-order", t_order_one_publisher_ws_lib, p)
        r.case("publish-errors", t_publish_errors, p)
        r.case("publish-chunked-411", t_publish_chunked_411, p)
        r.case("publish-topic-characters", t_publish_topic_chars, p)
        r.case("publish-1mib-limit", t_publish_sizes, p)
        r.case("handshake-topics-max-64", t_handshake_topics, p, 64)
        r.case("handshake-duplicate-topics-count-once-max-64", t_handshake_duplicates, p, 64)
        for text in MALFORMED:
            r.case("malformed-command %r" % text, t_malformed, p, text)
        r.case("binary-frame-1003", t_binary_frame, p)
        r.case("pub-forbidden-by-default", t_pub_forbidden, p)
        r.case("echo-still-served", t_echo_still_served, p)
        r.case("publish-with-origin-no-token-403", t_origin_refused, p)
        r.case("cross-origin-subscription-allowed", t_cross_origin_subscription, p)
        r.case("no-warning-bound-to-loopback", t_no_warning, srv)

    rules = ["--publish-token", TOKEN, "--max-topics", str(MAX_TOPICS),
             "--topic", "t=close-1013,publish", "--topic", "chat.secret=close-1013",
             "--topic", "chat.*=drop-oldest,publish", "--topic", "load=close-1013,publish"]
    with r.server(WORKERS + rules, "token-rules") as srv:
        p = srv.port
        r.case("publish-token", t_token, p)
        r.case("publish-token-origin-does-not-matter", t_token_origin, p)
        r.case("handshake-topics-max-4", t_handshake_topics, p, MAX_TOPICS)
        r.case("handshake-duplicate-topics-count-once-max-4", t_handshake_duplicates, p, MAX_TOPICS)
        r.case("sub-past-max-topics-1008", t_sub_limit, p, MAX_TOPICS)
        r.case("pub-allowed-by-rule", t_pub_allowed, p)
        r.case("pub-rules-first-match", t_pub_rules, p)
        r.case("concurrent-publishers-http-and-ws", t_concurrent_publishers, p, timeout=90)

    # Bound beyond loopback: the peer's address decides. A peer that is not
    # loopback comes from a network namespace when one can be made.
    outside = Outside()
    if outside.why:
        print("skip publish-from-outside-*: no network namespace for a non-loopback peer (%s)"
              % outside.why, flush=True)
    try:
        with r.server(WORKERS, "bind-0.0.0.0", bind="0.0.0.0") as srv:
            r.case("warning-bound-to-0.0.0.0-without-token", t_warning, srv, "0.0.0.0")
            r.case("publish-from-loopback-peers-bind-0.0.0.0", t_loopback_peers, srv.port,
                   [("127.0.0.1", None), ("127.0.0.1", "127.0.0.2")])
            if not outside.why:
                r.case("publish-from-outside-403-bind-0.0.0.0", t_outside_peer, srv.port, outside,
                       [outside.v4[0]])
        with r.server(WORKERS + ["--max-per-address", "64"], "bind-::", bind="::") as srv:
            r.case("warning-bound-to-::-without-token", t_warning, srv, "::")
            r.case("publish-from-loopback-peers-bind-::", t_loopback_peers, srv.port,
                   [("127.0.0.1", None), ("127.0.0.1", "127.0.0.3"), ("::1", None)])
            if not outside.why:
                r.case("publish-from-outside-403-bind-::", t_outside_peer, srv.port, outside,
                       [outside.v4[0], outside.v6[0]])
        with r.server(WORKERS + ["--publish-token", TOKEN], "bind-0.0.0.0-token", bind="0.0.0.0") as srv:
            r.case("no-warning-with-a-token", t_no_warning, srv)
            if not outside.why:
                r.case("publish-from-outside-with-token", t_outside_peer, srv.port, outside,
                       [outside.v4[0]], TOKEN)
    finally:
        outside.remove()

    with r.server(WORKERS + ["--pubsub-path", "/live"], "custom-path") as srv:
        r.case("custom-pubsub-path", t_custom_path, srv.port)

    slow = ["--fanout-queue", str(FANOUT_QUEUE), "--close-timeout", "10s",
            "--topic", "slow.1008=close-1008", "--topic", "drop.*=drop-oldest"]
    with r.server(WORKERS + slow, "slow-subscribers") as srv:
        p = srv.port
        r.case("slow-subscriber-close-1013", t_slow_close, p, "slow.1013", 1013, timeout=90)
        r.case("slow-subscriber-close-1008", t_slow_close, p, "slow.1008", 1008, timeout=90)
        r.case("slow-subscriber-drop-oldest", t_slow_drop_oldest, p, timeout=90)
        r.case("slow-subscriber-policy-of-the-published-topic", t_slow_mixed_policies, p, timeout=90)

    with r.server(WORKERS, "churn") as srv:
        p = srv.port
        r.case("publish-pipelined", t_publish_pipelined, p)
        r.case("publish-pipelined-then-half-close", t_publish_pipelined_half_close, p)
        r.case("publish-connection-close", t_publish_connection_close, p)
        r.case("publishers-reset-before-the-answer", t_publisher_vanishes, p, timeout=90)
        r.case("subscribers-come-and-go-while-publishing", t_subscriber_churn, p, timeout=90)

    limits = ["--max-publish", PUB_LIMIT, "--max-inbox", PUB_LIMIT, "--fanout-queue", 64 << 20,
              "--topic", "big=close-1013,publish"]
    with r.server(WORKERS + limits, "publish-limits") as srv:
        r.case("publish-larger-than-max-publish-refused", t_publish_size_limit, srv.port)
        r.case("publish-flood-refused-past-max-inbox", t_inbox_flood, srv.port, timeout=90)

    with r.server(["--workers", "1", "--topic", "g=close-1013,publish"], "one-worker") as srv:
        r.case("burst-leaves-in-one-gathered-send", t_burst_one_gathered_send, srv.port)

    with r.server(WORKERS + ["--max-topics", str(MANY_TOPICS)], "many-topics") as srv:
        r.case("topic-index-follows-topics", t_topic_index_follows_topics, srv.port)

    # The scope's SIGTERM meets subscribers with queued messages.
    with r.server(WORKERS + ["--fanout-queue", str(FANOUT_QUEUE), "--close-timeout", "1s"],
                  "stop-with-queues") as srv:
        r.case("subscribers-with-queued-messages-at-stop", t_hold_for_shutdown, srv.port)
    close_all(HELD)
    r.finish()


if __name__ == "__main__":
    main()
