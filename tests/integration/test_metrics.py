"""GET /metrics read with a real Prometheus text parser (Debian's
python3-prometheus-client) after real traffic on a server with two workers:
handshakes that succeed and fail with each status and one that times out,
echoes and publishes whose every byte the test sends and reads itself on raw
sockets, so that the handshake outcomes, the messages and the wire bytes in
and out must match exactly; each worker's connections add up to the total;
the publish histograms count one observation per worker that holds
subscribers, with cumulative buckets whose +Inf equals the count; nothing
stays queued once the peers have gone; and every family has HELP and TYPE."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (Runner, T, build_frame, close_payload, connect, eq, expect, fail,  # noqa: E402
                         upgrade_request)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

WORKERS = 2
# The handshake timeout, short so that the timed-out handshake comes soon;
# it is also the keep-alive timeout of the scraper's connection, which
# therefore asks for /metrics between the steps of the traffic.
HANDSHAKE_TIMEOUT = T(0.5)
OUTCOMES = ("101", "400", "401", "403", "404", "405", "411", "413", "414", "426", "429", "431",
            "500", "501", "503", "505", "other", "timeout")
HISTOGRAMS = ("ringws_publish_to_enqueue_seconds", "ringws_fanout_duration_seconds")


class Counted:
    """A plain socket that counts every byte each way: what the server must
    count as received and sent on this connection."""

    def __init__(self, port):
        self.sock = connect(port, tls=False)
        self.sent = 0
        self.got = 0
        self.buf = bytearray()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)
        self.sent += len(data)

    def _more(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out waiting for %s (have %r)" % (what, bytes(self.buf[:120])))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            data = b""
        self.got += len(data)
        self.buf += data
        return bool(data)

    def read_exactly(self, n, what):
        deadline = time.monotonic() + T(5)
        while len(self.buf) < n:
            if not self._more(deadline, what):
                fail("connection closed waiting for %s (have %r)" % (what, bytes(self.buf[:120])))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self, what="a response head"):
        deadline = time.monotonic() + T(5)
        while b"\r\n\r\n" not in self.buf:
            if not self._more(deadline, what):
                fail("connection closed waiting for %s (have %r)" % (what, bytes(self.buf[:120])))
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end])
        del self.buf[:end]
        return head

    def read_response(self):
        """(status, body) of one HTTP response with a Content-Length."""
        head = self.read_head()
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, self.read_exactly(length, "a %d-byte body" % length)

    def at_eof(self, wait):
        """True once the server has closed (the socket is closed then)."""
        if not self._more(time.monotonic() + wait, "the server to close the connection"):
            self.sock.close()
            return True
        return False

    def read_to_eof(self, what="the server to close the connection"):
        deadline = time.monotonic() + T(5)
        while self._more(deadline, what):
            pass
        self.sock.close()


ORIGIN = "http://127.0.0.1"  # the server's --origin


def upgrade(port, path="/echo", add=(), **kw):
    """An upgrade request from the allowed origin."""
    return upgrade_request(port, path=path, add=(("Origin", ORIGIN),) + tuple(add), **kw)[0]


def status_of(head):
    return int(head.split(b" ", 2)[1])


def ws_open(port, path):
    """A WebSocket opened on a counted socket (the 101 read whole)."""
    c = Counted(port)
    c.send(upgrade(port, path))
    head = c.read_head("the 101")
    eq(status_of(head), 101, "status of the upgrade to %s" % path)
    return c


def ws_close(c):
    """The closing handshake: our 1000, the server's echo (2 + 2 bytes),
    then its EOF."""
    c.send(build_frame(0x8, close_payload(1000)))
    eq(c.read_exactly(4, "the close echo"), b"\x88\x02\x03\xe8", "the server's close frame")
    c.read_to_eof()


class Scraper:
    """GET /metrics on one keep-alive connection, parsed; counts the bytes
    of every request and response, which the counters include too."""

    REQUEST = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, port):
        self.conn = Counted(port)
        self.last = 0  # bytes of the latest response

    def scrape(self):
        got = self.conn.got - len(self.conn.buf)
        self.conn.send(self.REQUEST)
        status, body = self.conn.read_response()
        eq(status, 200, "status of GET /metrics")
        self.last = self.conn.got - len(self.conn.buf) - got
        return parse(body.decode())


def parse(text):
    """{family name: family}; a parse error fails the case."""
    fams = {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = fam
    if not fams:
        fail("no metric families in %r" % text[:200])
    # HELP and TYPE for every family, from the text itself: the parser makes
    # up an untyped family without them.
    for name, fam in fams.items():
        expect(fam.documentation, "HELP for %s" % name, "none")
        expect(fam.type != "unknown", "TYPE for %s" % name, fam.type)
    return fams


def value(fams, family, sample=None, **labels):
    """The value of one sample; family is the name without _total."""
    fam = fams.get(family)
    if fam is None:
        fail("no family %s in /metrics (have %s)" % (family, sorted(fams)))
    want = sample or (family + "_total" if fam.type == "counter" else family)
    for s in fam.samples:
        if s.name == want and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    fail("no sample %s%r in %s" % (want, labels, [(s.name, s.labels) for s in fam.samples]))


def histogram(fams, name):
    """(buckets [(le, cumulative)], sum, count), checked for consistency."""
    fam = fams.get(name)
    if fam is None or fam.type != "histogram":
        fail("no histogram %s in /metrics" % name)
    buckets, total, count = [], None, None
    for s in fam.samples:
        if s.name == name + "_bucket":
            buckets.append((float(s.labels["le"]), s.value))
        elif s.name == name + "_sum":
            total = s.value
        elif s.name == name + "_count":
            count = s.value
    expect(len(buckets) >= 2 and buckets[-1][0] == float("inf"), "buckets ending with +Inf", buckets)
    for (le0, v0), (le1, v1) in zip(buckets, buckets[1:]):
        expect(le0 < le1, "%s bounds increasing" % name, buckets)
        expect(v0 <= v1, "%s buckets cumulative" % name, buckets)
    eq(buckets[-1][1], count, "%s: +Inf bucket equals _count" % name)
    expect(total is not None and total >= 0, "%s_sum present and not negative" % name, total)
    return buckets, total, count


def per_worker(fams):
    return {s.labels["worker"]: s.value for s in fams["ringws_connections"].samples}


def t_families(port):
    scraper = Scraper(port)
    fams = scraper.scrape()
    for name in ("ringws_connections_open", "ringws_accepted", "ringws_refused", "ringws_publishes",
                 "ringws_fanout_queued", "ringws_subscriptions", "ringws_tls_handshakes",
                 "ringws_handshakes", "ringws_messages_received", "ringws_messages_sent",
                 "ringws_bytes_received", "ringws_bytes_sent", "ringws_connections",
                 "ringws_send_queue_bytes") + HISTOGRAMS:
        expect(name in fams, "family %s" % name, sorted(fams))
    eq(sorted(s.labels["outcome"] for s in fams["ringws_handshakes"].samples), sorted(OUTCOMES),
       "the outcomes of ringws_handshakes_total")
    eq(sorted(per_worker(fams)), [str(i) for i in range(WORKERS)], "the workers of ringws_connections")
    for name in HISTOGRAMS:
        histogram(fams, name)
    scraper.conn.sock.close()


def refused(port, request, status):
    """A handshake refused with status; the connection then closes or stays
    (keep-alive) as the server chooses: we close it after the answer."""
    c = Counted(port)
    c.send(request)
    got, _ = c.read_response()
    eq(got, status, "status of %r" % request[:60])
    c.sock.close()
    return c


def wait_for(scraper, cond, what):
    """Scrapes until cond(fams) holds."""
    deadline = time.monotonic() + T(5)
    while True:
        fams = scraper.scrape()
        if cond(fams):
            return fams
        if time.monotonic() > deadline:
            fail("timed out waiting for %s" % what)
        time.sleep(0.02)


def alone(fams):
    """Only the scraper's own connection is open."""
    return value(fams, "ringws_connections_open") == 1


def t_traffic(port):
    scraper = Scraper(port)
    before = wait_for(scraper, alone, "the connections of earlier cases to close")
    first_response = scraper.last
    scrape_sent, scrape_got = scraper.conn.sent, scraper.conn.got
    peers = []  # every counted connection of the traffic

    # Handshakes: one timed out (a request left unfinished past the
    # handshake timeout), refusals of each kind, then successes.
    slow = Counted(port)
    slow.send("GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso")
    peers.append(slow)
    host = "Host: 127.0.0.1:%d\r\n" % port
    peers.append(refused(port, upgrade(port, drop=("Sec-WebSocket-Key",)), 400))
    peers.append(refused(port, upgrade(port, path="/ws?topics=a,,b"), 400))
    peers.append(refused(port, upgrade_request(port, add=(("Origin", "http://elsewhere.example"),))[0], 403))
    peers.append(refused(port, upgrade(port, path="/nowhere"), 404))
    scraper.scrape()
    peers.append(refused(port, "POST /echo HTTP/1.1\r\n%sContent-Length: 0\r\n\r\n" % host, 405))
    peers.append(refused(port, "GET /echo HTTP/1.1\r\n%s\r\n" % host, 426))
    # Over the 8 KiB head limit, yet read whole in one receive (the server
    # stops reading after the error).
    peers.append(refused(port, "GET /echo HTTP/1.1\r\n%sUpgrade: websocket\r\nX-Big: %s\r\n\r\n"
                         % (host, "x" * 9000), 431))
    # Plain HTTP is no handshake: not counted.
    peers.append(refused(port, "GET /healthz HTTP/1.1\r\n%s\r\n" % host, 200))
    scraper.scrape()

    # Echoes with known sizes: 2 + 4 + n bytes in, 2 + n out.
    echo = ws_open(port, "/echo")
    peers.append(echo)
    sizes = [0, 1, 17, 125]
    for n in sizes:
        payload = bytes([0x61 + n % 26]) * n
        echo.send(build_frame(0x1, payload))
        eq(echo.read_exactly(2 + n, "the echo of %d bytes" % n), b"\x81" + bytes([n]) + payload,
           "the echo")

    # Subscribers on both workers' share, then publishes over HTTP and one
    # `pub` from a WebSocket client.
    scraper.scrape()
    subs = [ws_open(port, "/ws?topics=news") for _ in range(6)]
    peers.extend(subs)
    during = scraper.scrape()
    eq(sum(per_worker(during).values()), value(during, "ringws_connections_open"),
       "ringws_connections summed over workers")
    # The only topic is news: ringws_topics counts the workers holding its
    # subscribers, each of which observes every publish once.
    workers_with_subs = value(during, "ringws_topics")
    expect(workers_with_subs >= 1, "subscribers on some worker", workers_with_subs)
    publishes = 3
    for i in range(publishes):
        body = "update %d" % i
        c = Counted(port)
        c.send("POST /publish/news HTTP/1.1\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
               % (host, len(body), body))
        status, answer = c.read_response()
        eq((status, answer), (200, b'{"recipients":6}\n'), "the publish's answer")
        c.read_to_eof()
        peers.append(c)
        for s in subs:
            eq(s.read_exactly(2 + len(body), "a published message"),
               b"\x81" + bytes([len(body)]) + body.encode(), "the published message")
        scraper.scrape()
    pub = ws_open(port, "/ws")
    peers.append(pub)
    pub.send(build_frame(0x1, b"pub chat.room hello"))
    # The `pub` is a received message; it reaches no subscriber.

    # Meanwhile the handshake timeout comes for the unfinished request: the
    # scraper, idle, would meet its keep-alive deadline (the same timeout),
    # so it keeps asking while it waits.
    deadline = time.monotonic() + T(5)
    while not slow.at_eof(0.1):
        scraper.scrape()
        if time.monotonic() > deadline:
            fail("the unfinished request still open after %.1fs" % T(5))
    for c in [echo, pub] + subs:
        ws_close(c)
    after = wait_for(scraper, alone, "the traffic's connections to close")

    def delta(family, **labels):
        return value(after, family, **labels) - value(before, family, **labels)

    expected_outcomes = {"101": 1 + len(subs) + 1, "400": 2, "403": 1, "404": 1, "405": 1,
                         "426": 1, "431": 1, "timeout": 1}
    got = {o: delta("ringws_handshakes", outcome=o) for o in OUTCOMES}
    eq({o: v for o, v in got.items() if v}, expected_outcomes, "handshakes by outcome")
    # Received: the echoes, and the commands of the `pub` client.
    eq(delta("ringws_messages_received"), len(sizes) + 1, "messages received")
    eq(delta("ringws_messages_sent"), len(sizes) + publishes * len(subs), "messages sent")
    eq(delta("ringws_fanout_queued"), publishes * len(subs), "fan-out deliveries")
    # Wire bytes: every byte of the traffic, and the scraper's requests
    # after the first scrape and its responses before the last one (each
    # response is counted once its send completes).
    traffic_in = sum(c.sent for c in peers)
    traffic_out = sum(c.got for c in peers)
    scraped_in = scraper.conn.sent - scrape_sent
    scraped_out = scraper.conn.got - scrape_got - scraper.last + first_response
    eq(delta("ringws_bytes_received"), traffic_in + scraped_in, "wire bytes received")
    eq(delta("ringws_bytes_sent"), traffic_out + scraped_out, "wire bytes sent")
    eq(value(after, "ringws_send_queue_bytes"), 0, "bytes queued once every peer is gone")
    eq(sorted(per_worker(after).values()), [0] * (WORKERS - 1) + [1],
       "each worker's connections: the scraper's alone")

    for name in HISTOGRAMS:
        _, sum_after, count_after = histogram(after, name)
        _, sum_before, count_before = histogram(before, name)
        eq(count_after - count_before, publishes * workers_with_subs,
           "%s: observations (one per publish and worker with subscribers)" % name)
        expect(sum_after > sum_before, "%s_sum grew" % name, (sum_before, sum_after))
    scraper.conn.sock.close()


def t_close_frees(port):
    """Once the closing handshake is complete (our close, the server's
    echo), the server closes TCP first (RFC 6455 section 7.1.1) and frees
    the connection at once: it does not wait for our FIN, which we hold
    back (the server runs with a 60 s close timeout, so waiting for it
    would show).  Its close frame comes whole, then its FIN, no reset."""
    scraper = Scraper(port)
    wait_for(scraper, alone, "the connections of earlier cases to close")
    c = ws_open(port, "/echo")
    c.send(build_frame(0x8, close_payload(1000)))
    eq(c.read_exactly(4, "the close echo"), b"\x88\x02\x03\xe8", "the server's close frame")
    c.sock.settimeout(T(5))
    try:
        eq(c.sock.recv(1), b"", "the server's FIN after its close frame")
    except ConnectionResetError:
        fail("the server reset the connection instead of closing it")
    wait_for(scraper, alone, "the server to free the connection while our side is still open")
    c.sock.close()
    scraper.conn.sock.close()


TCP_CLOSE_WAIT = 8  # tcpi_state once the peer's FIN is in


def segments_in(sock):
    """(state, segments, segments with data) the kernel counted in on sock
    (struct tcp_info: tcpi_state, tcpi_segs_in, tcpi_data_segs_in)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return info[0], struct.unpack_from("I", info, 140)[0], struct.unpack_from("I", info, 152)[0]


def t_close_fin_in_frame(port):
    """The server's close frame and its FIN leave in one segment: the close
    follows the frame at once, and the frame waits in the kernel for it
    instead of going alone with the FIN one segment behind.  Counted by
    the kernel on our side from the moment our close frame goes until the
    FIN is in: one segment, with data.  A delayed acknowledgement of our
    close frame (when the server answers after the kernel's delayed-ACK
    timer, on a loaded machine) adds a segment, so a few tries are
    allowed; a FIN of its own adds one every time."""
    seen = []
    for _ in range(5):
        c = ws_open(port, "/echo")
        time.sleep(T(0.05))  # the 101's acknowledgement is out of the count
        _, segs0, data0 = segments_in(c.sock)
        c.send(build_frame(0x8, close_payload(1000)))
        deadline = time.monotonic() + T(5)
        while segments_in(c.sock)[0] != TCP_CLOSE_WAIT:
            if time.monotonic() > deadline:
                fail("no FIN from the server after the closing handshake")
            time.sleep(0.002)
        _, segs1, data1 = segments_in(c.sock)
        eq(c.read_exactly(4, "the close echo"), b"\x88\x02\x03\xe8", "the server's close frame")
        c.read_to_eof()
        seen.append((segs1 - segs0, data1 - data0))
        if seen[-1] == (1, 1):
            return
    fail("the close frame and the FIN came in separate segments: (segments, with data) %r" % seen)


def main():
    r = Runner("metrics")
    with r.server(["--workers", str(WORKERS), "--handshake-timeout", "%dms" % (HANDSHAKE_TIMEOUT * 1000),
                   "--origin", ORIGIN, "--topic", "chat.*=drop-oldest,publish"],
                  "two-workers") as srv:
        r.case("families-help-type-histograms", t_families, srv.port)
        r.case("traffic-counted-exactly", t_traffic, srv.port)
    with r.server(["--close-timeout", "60s"], "close-timeout-60s") as srv:
        r.case("close-complete-frees-without-peer-fin", t_close_frees, srv.port)
        r.case("close-frame-and-fin-in-one-segment", t_close_fin_in_frame, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
