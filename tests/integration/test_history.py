"""The ringws.v1 envelope, sequences, history and resume as docs/PUBSUB.md
promises them, driven from outside with raw sockets: the subprotocol is
chosen on the pub/sub path whatever --subprotocol lists; messages arrive as
`msg TOPIC EPOCH OFFSET` + LF + the payload (binary bytes unchanged, in a
binary frame) while raw subscribers of the same topic keep the raw payload;
every command is answered, in the order sent; offsets and epochs are the
same on both workers and every subscriber sees 1, 2, 3... without a hole
while several HTTP publishers and a WebSocket `pub` race; resuming from a
position replays exactly what was missed (`recovered`) or says `gap` (other
epoch, future offset, evicted by count, by age, by --history-memory);
`since` needs ringws.v1 (400) and a malformed position is refused (400 at
the upgrade, 1008 in `sub`); a replay that cannot fit --fanout-queue is a
`gap`; clients resuming from random recent positions
while a publisher hammers the topic each end with a contiguous sequence;
SIGUSR2 closes every WebSocket with 1012 and a resume after it loses
nothing; a topic left idle keeps its sequence for --sequence-idle (resume
`recovered`, with or without history), then is forgotten (new epoch), and
past --sequence-idle-max the longest idle goes first; GET /history answers JSON (limit, since, gap, base64 for binary)
behind the same guard as POST /publish; /metrics shows the history."""

import base64
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

import jwt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_PING, OP_TEXT, SUITE_TLS, HttpConn, RawWS,  # noqa: E402
                         Runner, T, build_frame, eq, expect, fail,
                         suite_certs, upgrade_request, metric)

SEED = int(os.environ.get("RINGWS_TEST_SEED", int(time.time())))
print("history: random seed %d (set RINGWS_TEST_SEED to repeat)" % SEED)

WORKERS = ["--workers", "2"]
PROTO = ("Sec-WebSocket-Protocol", "ringws.v1")
EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")


# ---------------------------------------------------------------------------
# Clients


def env_open(port, topics=None, since=None, protocols="ringws.v1", **kw):
    """A subscriber that offers `protocols`; fails unless it gets ringws.v1."""
    path = "/ws"
    q = []
    if topics is not None:
        q.append("topics=" + topics)
    if since is not None:
        q.append("since=" + since)
    if q:
        path += "?" + "&".join(q)
    req, key = upgrade_request(port, path=path, add=[("Sec-WebSocket-Protocol", protocols)])
    ws = RawWS.open(port, request=req, key=key, **kw)
    eq(ws.response.header_all("Sec-WebSocket-Protocol"), ["ringws.v1"], "chosen subprotocol")
    return ws


def upgrade_status(port, path, proto=True):
    req, _ = upgrade_request(port, path=path, add=[PROTO] if proto else [])
    with HttpConn(port) as h:
        h.send(req)
        return h.read_response().status


class Env:
    """One frame of the envelope: its opcode, header fields and body."""

    def __init__(self, opcode, fields, body):
        self.opcode, self.fields, self.body = opcode, fields, body

    def __repr__(self):
        return "<%s %s %r>" % ("text" if self.opcode == OP_TEXT else "binary",
                               " ".join(self.fields), self.body[:60])


def recv_env(ws, what="an envelope frame", timeout=None):
    ev = ws.recv_event(timeout if timeout is not None else T(5), what)
    if ev.kind not in ("text", "binary"):
        fail("%s: expected a data frame, got %r" % (what, ev))
    nl = ev.data.find(b"\n")
    if nl < 0:
        fail("%s: no header line in %r" % (what, ev.data[:80]))
    head = ev.data[:nl].decode("ascii")
    if "  " in head or head != head.strip():
        fail("%s: header line not single-spaced: %r" % (what, head))
    return Env(OP_TEXT if ev.kind == "text" else OP_BINARY, head.split(" "), ev.data[nl + 1:])


def expect_notice(ws, *fields, what=None):
    """The next frame is the notice `fields` (None matches any value);
    returns its fields."""
    f = recv_env(ws, what or " ".join(x or "*" for x in fields))
    if f.opcode != OP_TEXT or f.body != b"":
        fail("notice %r: expected a text frame without a body, got %r" % (fields, f))
    if len(f.fields) != len(fields) or any(w is not None and w != g for w, g in zip(fields, f.fields)):
        fail("expected notice %r, got %r" % (" ".join(x or "*" for x in fields), " ".join(f.fields)))
    return f.fields


def expect_msg(ws, topic, epoch, offset, body=None, opcode=None):
    f = recv_env(ws, "msg %s %d" % (topic, offset))
    want = ["msg", topic, epoch, str(offset)]
    if f.fields != want:
        fail("expected %r, got %r" % (" ".join(want), f))
    if body is not None and f.body != body:
        fail("msg %d: expected body %r, got %r" % (offset, body[:60], f.body[:60]))
    if opcode is not None and f.opcode != opcode:
        fail("msg %d: expected opcode %d, got %d" % (offset, opcode, f.opcode))
    return f


def subscribed(ws, topic):
    """Waits for `subscribed TOPIC EPOCH LAST`; returns (epoch, last)."""
    fields = expect_notice(ws, "subscribed", topic, None, None)
    expect(EPOCH_RE.match(fields[2]), "an epoch of 16 hex digits", fields[2])
    return fields[2], int(fields[3])


def cmd(ws, text):
    ws.send_frame(OP_TEXT, text.encode("utf-8"))


def post(port, topic, body, binary=False, headers=(), tls=SUITE_TLS):
    hs = [("Content-Type", "application/octet-stream" if binary else "text/plain")] + list(headers)
    head = "POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (topic, len(body))
    head += "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n"
    with HttpConn(port, tls=tls) as h:
        h.send(head.encode() + body)
        resp = h.read_response()
    eq(resp.status, 200, "POST /publish/%s" % topic)
    return resp


class Poster:
    """A keep-alive publisher over HTTP."""

    def __init__(self, port):
        self.h = HttpConn(port)

    def post(self, topic, body):
        self.h.send(("POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (topic, len(body))).encode() + body)
        resp = self.h.read_response()
        if resp.status != 200:
            fail("POST /publish/%s: %d %r" % (topic, resp.status, resp.body[:100]))

    def close(self):
        self.h.close()


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


def get_json(port, path, headers=()):
    with HttpConn(port) as h:
        h.send(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                % (path, "".join("%s: %s\r\n" % kv for kv in headers))).encode())
        resp = h.read_response()
    body = json.loads(resp.body.decode()) if resp.status == 200 else None
    return resp.status, body


def collect_msgs(ws, topic, n, what):
    """The next n frames, all msg of topic: their offsets."""
    offs = []
    for _ in range(n):
        f = recv_env(ws, what)
        if f.fields[:2] != ["msg", topic]:
            fail("%s: expected msg %s, got %r" % (what, topic, f))
        offs.append(int(f.fields[3]))
    return offs


# ---------------------------------------------------------------------------
# The envelope


def t_negotiation(port):
    # chosen among other offers, after a preferred one the server lacks
    ws = env_open(port, "n1", protocols="chat.v9, ringws.v1")
    subscribed(ws, "n1")
    ws.close()
    # a client that does not offer it gets the raw stream and no header
    raw = RawWS.open(port, "/ws?topics=n1")
    eq(raw.response.header_all("Sec-WebSocket-Protocol"), [], "subprotocol without an offer")
    raw.close()
    # off the pub/sub path it is not chosen
    req, key = upgrade_request(port, path="/echo", add=[PROTO])
    echo = RawWS.open(port, request=req, key=key)
    eq(echo.response.header_all("Sec-WebSocket-Protocol"), [], "ringws.v1 off the pub/sub path")
    echo.close()


def t_framing(port):
    ws = env_open(port, "news")
    raw = RawWS.open(port, "/ws?topics=news")
    epoch, last = subscribed(ws, "news")
    eq(last, 0, "LAST of a fresh topic")
    text = "h\u00e9llo \U0001F600 world".encode("utf-8")
    blob = bytes(range(256)) + b"\n\n\x00"
    post(port, "news", text)
    post(port, "news", blob, binary=True)
    post(port, "news", b"")
    expect_msg(ws, "news", epoch, 1, text, OP_TEXT)
    expect_msg(ws, "news", epoch, 2, blob, OP_BINARY)
    expect_msg(ws, "news", epoch, 3, b"", OP_TEXT)
    # the raw subscriber of the same topic: today's stream, unchanged
    for want, kind in ((text, "text"), (blob, "binary"), (b"", "text")):
        ev = raw.recv_event(T(5), "raw message")
        eq((ev.kind, ev.data), (kind, want), "raw subscriber's message")
    # an exact header line: no trailing space, LF only
    post(port, "news", b"x")
    ev = ws.recv_event(T(5), "msg 4")
    eq(ev.data, ("msg news %s 4\nx" % epoch).encode(), "whole frame of msg 4")
    close_all([ws, raw])


def server_frame(opcode, payload):
    """A frame as the server sends it: FIN, unmasked, minimal length."""
    return build_frame(opcode, payload, mask=False)


def recv_wire(ws, n, what, timeout=None):
    """The next n bytes on the wire, as they came (no frame parsing)."""
    ws._fill(n, time.monotonic() + (timeout or T(10)), what)
    data = bytes(ws.buf[ws.pos:ws.pos + n])
    ws.pos += n
    return data


def t_envelope_wire(port, tls=SUITE_TLS):
    """The exact bytes of ringws.v1 frames (docs/PUBSUB.md: the frame head,
    `msg TOPIC EPOCH OFFSET` LF, the payload unchanged) for text and binary
    payloads whose frames take each length form (7, 16 and 64 bits, and
    both sides of 125/126 and 65535/65536), live and replayed: the replay
    sends the same bytes.  The payload is the raw frame's, sent as a second
    piece after a head of the envelope's own: a reader with a small receive
    buffer gets the big ones in many partial sends."""
    topic = "h.wire"
    live = env_open(port, topic, tls=tls)
    raw = RawWS.open(port, "/ws?topics=" + topic, tls=tls)
    epoch, last = subscribed(live, topic)
    line = ("msg %s %s " % (topic, epoch)).encode()
    sizes = [0, 1, 125 - len(line) - 2, 126 - len(line) - 2, 65535 - len(line) - 2,
             65536 - len(line) - 2, 300000]
    msgs = []
    for i, n in enumerate(sizes):
        for binary in (False, True):
            body = (bytes((j * 7 + i) & 0xff for j in range(n)) if binary
                    else ("\u00e9" * (n // 2) + "x" * (n % 2)).encode("utf-8"))
            post(port, topic, body, binary=binary, tls=tls)
            msgs.append((OP_BINARY if binary else OP_TEXT, body))
    wire = []
    for i, (op, body) in enumerate(msgs):
        off = last + 1 + i
        want = server_frame(op, b"%s%d\n" % (line, off) + body)
        got = recv_wire(live, len(want), "msg %d" % off)
        if got != want:
            fail("msg %d (%d bytes): wire bytes differ from the envelope's, first at %d" %
                 (off, len(body), next(k for k in range(len(want)) if got[k] != want[k])))
        wire.append(want)
        want = server_frame(op, body)
        eq(recv_wire(raw, len(want), "raw %d" % off), want, "raw subscriber's frame %d" % off)
    # resumed from before the first: the same bytes again, after the notice
    slow = env_open(port, topic, since="%s:%s:%d" % (topic, epoch, last), rcvbuf=4096, tls=tls)
    expect_notice(slow, "recovered", topic, epoch, str(last + 1), str(last + len(msgs)))
    for i, want in enumerate(wire):
        eq(recv_wire(slow, len(want), "replayed msg %d" % (last + 1 + i)), want,
           "replayed msg %d, byte for byte" % (last + 1 + i))
    close_all([live, raw, slow])


def t_envelope_wire_tls(port):
    import tls_ca
    t_envelope_wire(port, tls=tls_ca.shared_ca().client_context())


def t_answers_in_order(port):
    ws = env_open(port)
    cmd(ws, "sub a1,b1")
    cmd(ws, "unsub a1,zz")
    cmd(ws, "pub c1 hello")
    cmd(ws, "sub d1")
    cmd(ws, "unsub b1")
    ea, _ = subscribed(ws, "a1")
    subscribed(ws, "b1")
    expect_notice(ws, "unsubscribed", "a1")
    expect_notice(ws, "unsubscribed", "zz")
    f = expect_notice(ws, "published", "c1", None, "1")
    expect(EPOCH_RE.match(f[2]), "published epoch", f[2])
    subscribed(ws, "d1")
    expect_notice(ws, "unsubscribed", "b1")
    # a publisher subscribed to its topic gets its msg, then the answer
    cmd(ws, "sub c2")
    e2, last = subscribed(ws, "c2")
    cmd(ws, "pub c2 mine")
    expect_msg(ws, "c2", e2, last + 1, b"mine")
    expect_notice(ws, "published", "c2", e2, str(last + 1))
    # a second sub of a held topic: one subscription, told where it stands
    cmd(ws, "sub c2")
    eq(subscribed(ws, "c2"), (e2, last + 1), "re-subscribed position")
    post(port, "c2", b"once")
    expect_msg(ws, "c2", e2, last + 2, b"once")
    ws.send_frame(OP_PING, b"p")
    ev = ws.recv_event(T(5), "pong")
    eq(ev.kind, "pong", "nothing doubled before the pong")
    ws.close()


def t_same_offsets_across_workers(port):
    subs = [env_open(port, "xw") for _ in range(8)]
    starts = [subscribed(s, "xw") for s in subs]
    eq(len({e for e, _ in starts}), 1, "one epoch on every worker")
    epoch = starts[0][0]
    base = max(l for _, l in starts)
    eq(min(l for _, l in starts), base, "one LAST on every worker")
    p = Poster(port)
    for i in range(50):
        p.post("xw", b"m%d" % i)
    p.close()
    for s in subs:
        for i in range(50):
            expect_msg(s, "xw", epoch, base + 1 + i, b"m%d" % i)
    close_all(subs)


def t_order_concurrent_publishers(port, threads=4, each=100):
    subs = [env_open(port, "race") for _ in range(6)]
    epoch, base = subscribed(subs[0], "race")
    for s in subs[1:]:
        subscribed(s, "race")
    pubws = env_open(port)
    errors = []

    def http_pub(k):
        try:
            p = Poster(port)
            for i in range(each):
                p.post("race", b"h%d-%d" % (k, i))
            p.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def ws_pub():
        try:
            for i in range(each):
                cmd(pubws, "pub race w-%d" % i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=http_pub, args=(k,)) for k in range(threads)]
    ts.append(threading.Thread(target=ws_pub))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    total = (threads + 1) * each
    per_source = {}
    for n, s in enumerate(subs):
        offs, bodies = [], []
        for _ in range(total):
            f = recv_env(s, "race message")
            offs.append(int(f.fields[3]))
            bodies.append(f.body)
            expect(f.fields[2] == epoch, "one epoch", f)
        eq(offs, list(range(base + 1, base + total + 1)), "subscriber %d's offsets" % n)
        per_source[n] = bodies
    eq(len({tuple(b) for b in per_source.values()}), 1, "the same message at each offset")
    # each publisher's own order kept
    for k in list(range(threads)) + ["w"]:
        tag = (b"h%d-" % k) if k != "w" else b"w-"
        mine = [b for b in per_source[0] if b.startswith(tag)]
        eq(mine, [tag + b"%d" % i for i in range(each)], "publisher %s's order" % k)
    # the ws publisher's answers: one per pub, offsets increasing
    last = 0
    for _ in range(each):
        f = expect_notice(pubws, "published", "race", epoch, None)
        expect(int(f[3]) > last, "increasing published offsets", f)
        last = int(f[3])
    close_all(subs + [pubws])


def t_order_concurrent_topics(port, per_topic=2, each=60):
    """Publishers of different topics (with history, with a rule of no
    history, without a rule) at once, on both workers: each topic's own
    offsets stay contiguous and identical for every subscriber, each
    publisher's order kept."""
    topics = ["h.race2", "race", "free.race3"]
    subs = [env_open(port, ",".join(topics)) for _ in range(4)]
    base = {}
    for n, s in enumerate(subs):
        for t in topics:
            epoch, last = subscribed(s, t)
            if n == 0:
                base[t] = (epoch, last)
    errors = []

    def http_pub(topic, k):
        try:
            p = Poster(port)
            for i in range(each):
                p.post(topic, b"%s/%d-%d" % (topic.encode(), k, i))
            p.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=http_pub, args=(t, k)) for t in topics for k in range(per_topic)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    total = len(topics) * per_topic * each
    seen = []
    for n, s in enumerate(subs):
        got = {t: [] for t in topics}
        for _ in range(total):
            f = recv_env(s, "message of a racing topic")
            t = f.fields[1]
            expect(t in got and f.fields[2] == base[t][0], "a known topic, its epoch", f)
            got[t].append((int(f.fields[3]), f.body))
        for t in topics:
            offs = [o for o, _ in got[t]]
            first = base[t][1] + 1
            eq(offs, list(range(first, first + per_topic * each)), "subscriber %d's %s offsets" % (n, t))
            for k in range(per_topic):
                tag = b"%s/%d-" % (t.encode(), k)
                mine = [b for _, b in got[t] if b.startswith(tag)]
                eq(mine, [tag + b"%d" % i for i in range(each)], "publisher %s/%d's order" % (t, k))
        seen.append(got)
    expect(all(g == seen[0] for g in seen), "every subscriber the same message at each offset",
           len(seen))
    close_all(subs)


def t_since_needs_envelope(port):
    ep = "0123456789abcdef"
    eq(upgrade_status(port, "/ws?topics=a&since=a:%s:1" % ep, proto=False), 400,
       "since without ringws.v1")
    eq(upgrade_status(port, "/ws?topics=a&since=a:%s:x" % ep), 400, "malformed offset")
    eq(upgrade_status(port, "/ws?topics=a&since=a:0123:1"), 400, "short epoch")
    eq(upgrade_status(port, "/ws?topics=a&since=b:%s:1" % ep), 400, "position of another topic")
    eq(upgrade_status(port, "/ws?since=a:%s:1" % ep), 400, "position without topics")
    eq(upgrade_status(port, "/ws?topics=a&since=a:%s:9007199254740992" % ep), 400,
       "offset of 2^53")
    # in the command: 1008
    ws = env_open(port)
    cmd(ws, "sub a a:%s:1x" % ep)
    ws.expect_close([1008])
    ws.close()
    ws = env_open(port)
    cmd(ws, "sub a b:%s:1" % ep)
    ws.expect_close([1008])
    ws.close()
    raw = RawWS.open(port, "/ws")
    cmd(raw, "sub a a:%s:1" % ep)
    raw.expect_close([1008])
    raw.close()


# ---------------------------------------------------------------------------
# History and resume


def fresh_topic(port, topic, n):
    """Publishes n messages to topic; returns its epoch and last offset."""
    ws = env_open(port, topic)
    epoch, last = subscribed(ws, topic)
    p = Poster(port)
    for i in range(n):
        p.post(topic, b"%s-%d" % (topic.encode(), last + 1 + i))
    p.close()
    # the subscriber holds the topic (and its epoch) until all arrived
    for i in range(n):
        expect_msg(ws, topic, epoch, last + 1 + i)
    return ws, epoch, last + n


def t_resume_recovered(port):
    holder, epoch, last = fresh_topic(port, "h.rec", 10)
    ws = env_open(port, "h.rec", since="h.rec:%s:4" % epoch)
    expect_notice(ws, "recovered", "h.rec", epoch, "5", str(last))
    for o in range(5, last + 1):
        expect_msg(ws, "h.rec", epoch, o, b"h.rec-%d" % o)
    post(port, "h.rec", b"live")
    expect_msg(ws, "h.rec", epoch, last + 1, b"live")
    # nothing missed: recovered FROM = TO + 1, then live
    ws2 = env_open(port, "h.rec", since="h.rec:%s:%d" % (epoch, last + 1))
    expect_notice(ws2, "recovered", "h.rec", epoch, str(last + 2), str(last + 1))
    # the same in the command, beside a topic without position
    ws3 = env_open(port)
    cmd(ws3, "sub other,h.rec h.rec:%s:%d" % (epoch, last - 1))
    subscribed(ws3, "other")
    expect_notice(ws3, "recovered", "h.rec", epoch, str(last), str(last + 1))
    expect_msg(ws3, "h.rec", epoch, last, b"h.rec-%d" % last)
    expect_msg(ws3, "h.rec", epoch, last + 1, b"live")
    close_all([holder, ws, ws2, ws3])


def t_resume_gap(port):
    holder, epoch, last = fresh_topic(port, "h.small", 8)  # history=5: 4..8 held
    other = "fedcba9876543210" if epoch != "fedcba9876543210" else "0123456789abcdef"
    ws = env_open(port, "h.small", since="h.small:%s:3" % epoch)
    expect_notice(ws, "recovered", "h.small", epoch, "4", "8")
    ws.close()
    ws = env_open(port, "h.small", since="h.small:%s:2" % epoch)
    expect_notice(ws, "gap", "h.small", epoch, "4", "8")
    post(port, "h.small", b"after")
    expect_msg(ws, "h.small", epoch, 9, b"after")  # nothing replayed, live follows
    ws.close()
    ws = env_open(port, "h.small", since="h.small:%s:5" % other)
    expect_notice(ws, "gap", "h.small", epoch, "5", "9")
    ws.close()
    ws = env_open(port, "h.small", since="h.small:%s:10" % epoch)
    expect_notice(ws, "gap", "h.small", epoch, "5", "9")
    ws.close()
    # a topic without a history rule: recovered only when nothing was missed
    holder2, e2, l2 = fresh_topic(port, "nohist", 3)
    ws = env_open(port, "nohist", since="nohist:%s:3" % e2)
    expect_notice(ws, "recovered", "nohist", e2, "4", "3")
    ws.close()
    ws = env_open(port, "nohist", since="nohist:%s:2" % e2)
    expect_notice(ws, "gap", "nohist", e2, "4", "3")
    close_all([ws, holder, holder2])


def wait_metric(port, name, ok, what):
    deadline = time.monotonic() + T(5)
    while not ok(metric(port, name)):
        if time.monotonic() > deadline:
            fail("%s: %s stayed %r" % (what, name, metric(port, name)))
        time.sleep(0.05)


def leave(port, conns):
    """Closes conns and waits until their topics are idle in the sequencer."""
    before = metric(port, "ringws_sequences_idle")
    close_all(conns)
    wait_metric(port, "ringws_sequences_idle", lambda v: v >= before + len(conns),
                "the topics left by their subscribers are idle")


def t_idle_sequence_kept(port):
    """A topic nobody holds keeps its sequence for --sequence-idle: a
    client back within it resumes without a gap (with a history rule or
    without, published to or not), and a publish meanwhile still counts."""
    a = env_open(port, "idle.nohist")
    ea, la = subscribed(a, "idle.nohist")
    b = env_open(port, "h.idle")  # history rule, nothing published
    eb, lb = subscribed(b, "h.idle")
    c = env_open(port, "idle.missed")
    ec, lc = subscribed(c, "idle.missed")
    leave(port, [a, b, c])
    post(port, "idle.missed", b"while away")
    ws = env_open(port, "idle.nohist,h.idle", since="idle.nohist:%s:%d,h.idle:%s:%d"
                  % (ea, la, eb, lb))
    expect_notice(ws, "recovered", "idle.nohist", ea, str(la + 1), str(la))
    expect_notice(ws, "recovered", "h.idle", eb, str(lb + 1), str(lb))
    post(port, "idle.nohist", b"live")
    expect_msg(ws, "idle.nohist", ea, la + 1, b"live")
    ws2 = env_open(port, "idle.missed", since="idle.missed:%s:%d" % (ec, lc))
    expect_notice(ws2, "gap", "idle.missed", ec, str(lc + 2), str(lc + 1))
    close_all([ws, ws2])


def get_epoch(port, topic):
    status, body = get_json(port, "/history/" + topic)
    eq(status, 200, "GET /history/" + topic)
    return body["epoch"]


def t_forgotten_topic_new_epoch(port):
    """Past --sequence-idle (200ms here) an idle topic is forgotten by the
    sweep: its next use starts a new epoch and a resume from the old one
    is a gap."""
    holder, epoch, last = fresh_topic(port, "forget.me", 2)  # no history rule
    holder.close()
    deadline = time.monotonic() + T(5)
    while get_epoch(port, "forget.me") == epoch:
        if time.monotonic() > deadline:
            fail("the topic kept its epoch past its idle grace")
        time.sleep(0.1)
    ws = env_open(port, "forget.me", since="forget.me:%s:%d" % (epoch, last))
    fields = expect_notice(ws, "gap", "forget.me", None, "1", "0")
    expect(fields[2] != epoch, "a new epoch", fields)
    ws.close()


def t_idle_cap(port):
    """--sequence-idle-max 1: the longest idle sequence is forgotten first."""
    a = env_open(port, "cap.a")
    ea, la = subscribed(a, "cap.a")
    leave(port, [a])
    b = env_open(port, "cap.b")
    eb, lb = subscribed(b, "cap.b")
    b.close()
    wait_metric(port, "ringws_sequences", lambda v: v == 1, "cap.a forgotten, cap.b idle")
    eq(metric(port, "ringws_sequences_idle"), 1, "idle sequences under the cap")
    ws = env_open(port, "cap.b", since="cap.b:%s:%d" % (eb, lb))
    expect_notice(ws, "recovered", "cap.b", eb, str(lb + 1), str(lb))
    ws.close()
    ws = env_open(port, "cap.a", since="cap.a:%s:%d" % (ea, la))
    fields = expect_notice(ws, "gap", "cap.a", None, "1", "0")
    expect(fields[2] != ea, "a new epoch", fields)
    ws.close()


def t_resume_ttl(port):
    holder, epoch, last = fresh_topic(port, "ttl.a", 3)  # history-ttl=300ms
    ws = env_open(port, "ttl.a", since="ttl.a:%s:0" % epoch)
    expect_notice(ws, "recovered", "ttl.a", epoch, "1", "3")
    ws.close()
    time.sleep(0.6)
    ws = env_open(port, "ttl.a", since="ttl.a:%s:0" % epoch)
    expect_notice(ws, "gap", "ttl.a", epoch, "4", "3")
    close_all([ws, holder])




def t_ttl_swept(port):
    """Expired messages go without the topic being touched again, and the
    topic, left with no subscriber and no history, is forgotten."""
    key = 'ringws_history_evictions_total{reason="ttl"}'
    holder, epoch, last = fresh_topic(port, "ttl.sweep", 3)
    holder.close()
    before = metric(port, key)
    deadline = time.monotonic() + T(5)
    while metric(port, key) < before + 3:
        if time.monotonic() > deadline:
            fail("the expired messages of an untouched topic were not dropped")
        time.sleep(0.1)
    deadline = time.monotonic() + T(5)
    while True:  # then idle for --sequence-idle, then forgotten
        status, body = get_json(port, "/history/ttl.sweep")
        if body["epoch"] != epoch:
            break
        if time.monotonic() > deadline:
            fail("the swept topic was not forgotten past its idle grace")
        time.sleep(0.1)
    eq(body["last"], 0, "a forgotten topic's new sequence")


def t_resume_memory(port):
    # --history-memory holds 2 messages of 4000 bytes, not 3: each pins its
    # raw frame and bookkeeping, and its envelope frame only a head of its
    # own (the payload is the raw frame's)
    ws = env_open(port, "mem.a,mem.b")
    ea, _ = subscribed(ws, "mem.a")
    eb, _ = subscribed(ws, "mem.b")
    p = Poster(port)
    for i in range(3):
        p.post("mem.a", b"a" * 4000)
    for i in range(3):
        p.post("mem.b", b"b" * 4000)
    p.close()
    collect_msgs(ws, "mem.a", 3, "mem.a")
    collect_msgs(ws, "mem.b", 3, "mem.b")
    # the oldest of both topics went first: mem.a's all went before any of
    # mem.b's, and then mem.b's oldest
    r = env_open(port, "mem.a,mem.b", since="mem.a:%s:0,mem.b:%s:0" % (ea, eb))
    expect_notice(r, "gap", "mem.a", ea, "4", "3")
    fb = expect_notice(r, "gap", "mem.b", eb, None, "3")
    expect(1 < int(fb[3]) <= 3, "mem.b's newest kept", fb)
    r2 = env_open(port, "mem.b", since="mem.b:%s:%d" % (eb, int(fb[3]) - 1))
    expect_notice(r2, "recovered", "mem.b", eb, fb[3], "3")
    for o in range(int(fb[3]), 4):
        expect_msg(r2, "mem.b", eb, o, b"b" * 4000)
    close_all([ws, r, r2])


def t_payload_held_once(port):
    """A held message whose envelope frame was built (a ringws.v1
    subscriber got it) counts its payload once: the raw frame's bytes are
    the envelope's too."""
    ws = env_open(port, "mem.once")
    epoch, _ = subscribed(ws, "mem.once")
    p = Poster(port)
    for i in range(2):
        p.post("mem.once", b"o" * 4000)
    p.close()
    collect_msgs(ws, "mem.once", 2, "mem.once")
    # every message held now is one of these two (the cap holds two)
    _, values = metrics(port)
    held = values.get("ringws_history_messages", 0)
    eq(held, 2, "messages held")
    per = values["ringws_history_bytes"] / held
    expect(4000 < per < 4000 + 512, "bytes counted per held 4000-byte message with its "
           "envelope frame: the payload once plus bookkeeping", per)
    ws.close()


def t_replay_bounded_by_queue(port):
    """--fanout-queue 8192: a replay of 20 messages of 1000 bytes cannot
    fit and is answered gap; the last 5 fit and are replayed."""
    holder = env_open(port, "q.big")
    epoch, _ = subscribed(holder, "q.big")
    p = Poster(port)
    for i in range(20):
        p.post("q.big", bytes([65 + i]) * 1000)
    p.close()
    collect_msgs(holder, "q.big", 20, "q.big")
    ws = env_open(port, "q.big", since="q.big:%s:0" % epoch)
    expect_notice(ws, "gap", "q.big", epoch, "1", "20")
    ws.send_frame(OP_PING, b"q")
    eq(ws.recv_event(T(5), "pong").kind, "pong", "nothing replayed after the gap")
    ws2 = env_open(port, "q.big", since="q.big:%s:15" % epoch)
    expect_notice(ws2, "recovered", "q.big", epoch, "16", "20")
    for o in range(16, 21):
        expect_msg(ws2, "q.big", epoch, o, bytes([64 + o]) * 1000)
    close_all([holder, ws, ws2])


def t_resume_race(port, clients=200):
    """A publisher hammers a topic while clients resume from random recent
    positions: each must end with a contiguous run, no duplicate."""
    holder, epoch, last = fresh_topic(port, "seam", 20)
    stop = threading.Event()
    published = [last]
    errors = []

    def hammer():
        try:
            p = Poster(port)
            i = 0
            while not stop.is_set():
                p.post("seam", b"s%d" % i)
                i += 1
                published[0] += 1
            p.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=hammer)
    t.start()
    rnd = random.Random("%d-seam" % SEED)
    opened = []
    try:
        for _ in range(clients):
            since = max(0, published[0] - rnd.randint(0, 30))
            ws = env_open(port, "seam", since="seam:%s:%d" % (epoch, since))
            opened.append((ws, since))
    finally:
        stop.set()
        t.join()
    if errors:
        raise errors[0]
    final = published[0]
    for ws, since in opened:
        expect_notice(ws, "recovered", "seam", epoch, str(since + 1), None)
        offs = collect_msgs(ws, "seam", final - since, "seam messages")
        eq(offs, list(range(since + 1, final + 1)), "offsets after %d" % since)
        ws.send_frame(OP_PING, b"end")
        ev = ws.recv_event(T(5), "the pong after the last message")
        eq(ev.kind, "pong", "nothing after the last message")
    close_all([ws for ws, _ in opened] + [holder])


# ---------------------------------------------------------------------------
# GET /history, SIGUSR2, tokens, /metrics


def t_get_history(port):
    holder, epoch, last = fresh_topic(port, "h.get", 6)
    post(port, "h.get", b"\x00\xffbin\n", binary=True)
    post(port, "h.get", 'q"uo\\te\n\u00e9'.encode())
    last += 2
    status, body = get_json(port, "/history/h.get")
    eq(status, 200, "GET /history/h.get")
    eq((body["topic"], body["epoch"], body["oldest"], body["last"], body["gap"]),
       ("h.get", epoch, 1, last, False), "history head")
    eq([m["offset"] for m in body["messages"]], list(range(1, last + 1)), "offsets")
    eq(body["messages"][0], {"offset": 1, "text": "h.get-1"}, "a text message")
    eq(base64.b64decode(body["messages"][6]["binary"]), b"\x00\xffbin\n", "a binary message")
    eq(body["messages"][7]["text"], 'q"uo\\te\n\u00e9', "escaped text")
    status, body = get_json(port, "/history/h.get?limit=3")
    eq([m["offset"] for m in body["messages"]], [1, 2, 3], "limit=3")
    status, body = get_json(port, "/history/h.get?since=%s:5&limit=2" % epoch)
    eq(([m["offset"] for m in body["messages"]], body["gap"]), ([6, 7], False), "since=E:5")
    status, body = get_json(port, "/history/h.get?since=6")
    eq([m["offset"] for m in body["messages"]], [7, 8], "since=6 without an epoch")
    status, body = get_json(port, "/history/h.get?since=0")
    eq(len(body["messages"]), last, "since=0: from the oldest")
    other = "0" * 16 if epoch != "0" * 16 else "1" * 16
    status, body = get_json(port, "/history/h.get?since=%s:5" % other)
    eq((body["gap"], body["messages"][0]["offset"]), (True, 1), "other epoch: gap from oldest")
    status, body = get_json(port, "/history/h.get?since=%s:99" % epoch)
    eq(body["gap"], True, "a future offset: gap")
    h2, e2, l2 = fresh_topic(port, "h.small", 0)
    status, body = get_json(port, "/history/h.small?since=%s:1" % e2)
    eq((body["gap"], body["oldest"], [m["offset"] for m in body["messages"]][0]),
       (True, l2 - 4, l2 - 4), "evicted: gap, messages from the oldest")
    status, body = get_json(port, "/history/never.used")
    eq((body["oldest"], body["last"], body["gap"], body["messages"]), (1, 0, False, []),
       "an unknown topic")
    expect(EPOCH_RE.match(body["epoch"]), "an epoch for an unknown topic", body["epoch"])
    for bad in ("limit=0", "limit=1001", "since=x", "since=%s:" % epoch, "since=abc:1"):
        eq(get_json(port, "/history/h.get?" + bad)[0], 400, bad)
    eq(get_json(port, "/history/bad%20topic")[0], 400, "invalid topic")
    eq(get_json(port, "/history/h.get", headers=[("Origin", "https://evil.example")])[0], 403,
       "a request with an Origin")
    with HttpConn(port) as h:
        h.send(b"POST /history/h.get HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        eq(h.read_response().status, 405, "POST /history")
    close_all([holder, h2])


def t_get_history_token(port):
    eq(get_json(port, "/history/x")[0], 401, "GET /history without the publish token")
    status, body = get_json(port, "/history/x", headers=[("Authorization", "Bearer tok-1")])
    eq(status, 200, "GET /history with the publish token")


def t_sigusr2(srv):
    port = srv.port
    holder, epoch, last = fresh_topic(srv.port, "h.usr2", 3)
    subs = [env_open(port, "h.usr2") for _ in range(6)]
    for s in subs:
        subscribed(s, "h.usr2")
    echo = RawWS.open(port, "/echo")
    web = HttpConn(port)
    srv.send_signal(signal.SIGUSR2)
    for ws in subs + [holder, echo]:
        reason = bytes(ws.expect_close([1012]).reason)
        expect(re.match(rb"server restarting; retry after \d+ ms$", reason),
               "the stop close's reason", reason)
    close_all(subs + [holder, echo])
    # the server runs on, its history kept: publish meanwhile, resume
    p = Poster(port)
    for i in range(4):
        p.post("h.usr2", b"while-away-%d" % i)
    p.close()
    ws = env_open(port, "h.usr2", since="h.usr2:%s:%d" % (epoch, last))
    expect_notice(ws, "recovered", "h.usr2", epoch, str(last + 1), str(last + 4))
    for i in range(4):
        expect_msg(ws, "h.usr2", epoch, last + 1 + i, b"while-away-%d" % i)
    # an HTTP keep-alive connection was left alone
    web.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    eq(web.read_response().status, 200, "HTTP connection after SIGUSR2")
    close_all([ws, web])


def t_tokens(port, secret):
    def tok(topics, exp=60):
        return jwt.encode({"sub": "ann", "topics": topics, "publish": ["tok.*"],
                           "exp": int(time.time()) + exp}, secret, algorithm="HS256")
    t1 = tok(["tok.*"])
    req, key = upgrade_request(port, path="/ws?token=" + t1, add=[PROTO])
    ws = RawWS.open(port, request=req, key=key)
    cmd(ws, "sub tok.a")
    ea, _ = subscribed(ws, "tok.a")
    cmd(ws, "pub tok.a hi")
    expect_msg(ws, "tok.a", ea, 1, b"hi")
    expect_notice(ws, "published", "tok.a", ea, "1")
    t2 = tok(["tok.*"], exp=120)
    cmd(ws, "auth " + t2)
    f = expect_notice(ws, "authed", None)
    eq(int(f[1]), jwt.decode(t2, options={"verify_signature": False})["exp"], "authed EXP")
    cmd(ws, "sub tok.a,other tok.a:%s:0" % ea)
    ws.expect_close([1008])
    ws.close()
    # GET /history: the topics claim decides, from every peer
    eq(get_json(port, "/history/tok.a")[0], 401, "GET /history without a token")
    status, body = get_json(port, "/history/tok.a", headers=[("Authorization", "Bearer " + t1)])
    eq((status, [m["text"] for m in body["messages"]]), (200, ["hi"]), "GET /history in the claim")
    eq(get_json(port, "/history/other", headers=[("Authorization", "Bearer " + t1)])[0], 403,
       "GET /history outside the topics claim")
    # positions at the upgrade obey the claim too
    req, key = upgrade_request(port, path="/ws?token=%s&topics=other&since=other:%s:0"
                               % (t1, "0" * 16), add=[PROTO])
    with HttpConn(port) as h:
        h.send(req)
        eq(h.read_response().status, 403, "since for a topic outside the claim")


def metrics(port):
    """/metrics: its text and its ringws_ samples by name."""
    with HttpConn(port) as h:
        h.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        text = h.read_response().body.decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("ringws_") and " " in line:
            name, v = line.rsplit(" ", 1)
            values[name] = float(v)
    return text, values


def t_metrics(port):
    text, values = metrics(port)
    for fam in ("ringws_sequences", "ringws_history_messages", "ringws_history_bytes",
                "ringws_history_evictions_total", "ringws_resumes_total"):
        expect("# HELP %s " % fam in text and "# TYPE %s " % fam in text, "HELP and TYPE of " + fam,
               fam)
    expect(values.get("ringws_history_messages", 0) > 0, "messages held", values)
    expect(values.get("ringws_history_bytes", 0) > values["ringws_history_messages"] * 100,
           "bytes held", values)
    expect(values.get("ringws_sequences", 0) > 0, "topics held", values)
    for reason in ("count", "ttl"):
        expect(values.get('ringws_history_evictions_total{reason="%s"}' % reason, 0) > 0,
               "evictions by " + reason, values)
    for outcome in ("recovered", "gap"):
        expect(values.get('ringws_resumes_total{outcome="%s"}' % outcome, 0) > 0,
               "resumes " + outcome, values)


# ---------------------------------------------------------------------------


def main():
    r = Runner("history")
    rules = ["--topic", "h.small=history=5", "--topic", "h.*=close-1013,history=1000",
             "--topic", "ttl.*=history=100,history-ttl=300ms", "--topic", "seam=history=1000",
             "--topic", "c*=close-1013,publish", "--topic", "race=publish"]
    with r.server(WORKERS + rules + ["--subprotocol", "chat.v9"], "history") as srv:
        p = srv.port
        r.case("subprotocol-negotiation", t_negotiation, p)
        r.case("envelope-framing-text-binary-raw-unchanged", t_framing, p)
        r.case("envelope-wire-bytes-live-and-replayed", t_envelope_wire, p, timeout=60)
        r.case("answers-in-command-order", t_answers_in_order, p)
        r.case("offsets-identical-across-workers", t_same_offsets_across_workers, p)
        r.case("order-under-concurrent-publishers", t_order_concurrent_publishers, p, timeout=60)
        r.case("order-per-topic-under-publishers-of-several-topics", t_order_concurrent_topics, p,
               timeout=60)
        r.case("since-needs-envelope-malformed-positions", t_since_needs_envelope, p)
        r.case("resume-recovered", t_resume_recovered, p)
        r.case("resume-gap-epoch-future-evicted", t_resume_gap, p)
        r.case("idle-sequence-kept-resume-recovered", t_idle_sequence_kept, p)
        r.case("resume-after-ttl-is-a-gap", t_resume_ttl, p)
        r.case("resume-race-at-the-seam", t_resume_race, p, timeout=60)
        r.case("get-history", t_get_history, p)
        r.case("sigusr2-closes-1012-and-resume-loses-nothing", t_sigusr2, srv)
        r.case("metrics-history-families", t_metrics, p)
    with r.server(WORKERS + rules, "history-tls", tls=suite_certs()) as srv:
        r.case("envelope-wire-bytes-over-tls", t_envelope_wire_tls, srv.port, timeout=60)
    with r.server(WORKERS + ["--sequence-idle", "200ms", "--topic",
                             "ttl.*=history=100,history-ttl=300ms"], "history-idle-grace") as srv:
        r.case("forgotten-topic-starts-a-new-epoch", t_forgotten_topic_new_epoch, srv.port)
        r.case("expired-history-swept-topic-forgotten", t_ttl_swept, srv.port)
    with r.server(WORKERS + ["--sequence-idle-max", "1"], "history-idle-cap") as srv:
        r.case("idle-sequences-capped-longest-idle-first", t_idle_cap, srv.port)
    with r.server(["--publish-token", "tok-1"], "history-publish-token") as srv:
        r.case("get-history-needs-the-publish-token", t_get_history_token, srv.port)
    tmp = tempfile.mkdtemp(prefix="ringws-history-")
    try:
        secret = base64.b64encode(os.urandom(33))
        path = os.path.join(tmp, "hs.key")
        with open(path, "wb") as f:
            f.write(secret + b"\n")
        with r.server(WORKERS + ["--token-key", "hs=" + path, "--topic", "tok.*=history=10"],
                      "history-tokens") as srv:
            r.case("tokens-sub-positions-claim-auth-answered", t_tokens, srv.port, secret)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with r.server(WORKERS + ["--topic", "mem.*=history=100", "--history-memory", "12000"],
                  "history-memory") as srv:
        r.case("resume-after-memory-eviction-is-a-gap", t_resume_memory, srv.port)
        r.case("payload-held-once-with-its-envelope", t_payload_held_once, srv.port)
    with r.server(WORKERS + ["--topic", "q.*=history=100", "--fanout-queue", "8192"],
                  "history-small-queue") as srv:
        r.case("replay-larger-than-the-queue-is-a-gap", t_replay_bounded_by_queue, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
