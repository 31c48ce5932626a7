"""Plain HTTP/1.1 on the server's port: the built-in routes, the status codes
for every kind of bad request, keep-alive, pipelining and requests that
arrive in pieces. Run twice: once with default receive buffers and once with
64-byte ones, so that request heads span many buffers."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (HttpConn, Runner, T, eq, expect, http_get)  # noqa: E402

# The send-queue cap of the server that tests back-pressure on pipelining:
# reading stops (and parsing waits) while half of it is unread.
SMALL_SEND_QUEUE = 65536
# The largest request body accepted (RINGWS_MAX_HTTP_BODY).
MAX_BODY = 1 << 20


def req(port, method="GET", path="/healthz", version="HTTP/1.1", headers=(), body=b""):
    head = "%s %s %s\r\nHost: 127.0.0.1:%d\r\n" % (method, path, version, port)
    head += "".join("%s: %s\r\n" % h for h in headers)
    return (head + "\r\n").encode("latin-1") + body


def check_healthz(r):
    eq(r.status, 200, "GET /healthz status")
    eq(r.body, b"ok\n", "GET /healthz body")
    eq(r.header("Content-Length"), "3", "GET /healthz Content-Length")


def t_healthz(port):
    check_healthz(http_get(port, "/healthz"))


def t_head_healthz(port):
    get = http_get(port, "/healthz")
    with HttpConn(port) as c:
        # HEAD then GET in one write: if the HEAD response carried a body,
        # the second response would not parse.
        c.send(req(port, "HEAD") + req(port, "GET"))
        head = c.read_response(head=True)
        eq(head.status, 200, "HEAD /healthz status")
        eq(head.header("Content-Length"), get.header("Content-Length"), "HEAD Content-Length")
        eq(head.header("Content-Type"), get.header("Content-Type"), "HEAD Content-Type")
        check_healthz(c.read_response())
        c.expect_open()


def t_root(port):
    r = http_get(port, "/")
    eq(r.status, 200, "GET / status")
    ctype = (r.header("Content-Type") or "").lower()
    expect(ctype.startswith("text/html"), "Content-Type text/html", r.header("Content-Type"))
    expect(b"WebSocket" in r.body, "a page mentioning WebSocket", r.body[:200])
    expect(b"/echo" in r.body, "a page that connects to /echo", r.body[:200])
    eq(int(r.header("Content-Length")), len(r.body), "Content-Length of /")


def t_head_root(port):
    get = http_get(port, "/")
    with HttpConn(port) as c:
        c.send(req(port, "HEAD", "/") + req(port, "GET", "/healthz"))
        r = c.read_response(head=True)
        eq(r.status, 200, "HEAD / status")
        eq(r.header("Content-Length"), str(len(get.body)), "HEAD / Content-Length")
        check_healthz(c.read_response())


CLIENT_JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "ringws.js")


def t_client_script(port):
    """/ringws.js is src/ringws.js, with an ETag that answers a conditional
    GET with 304 (the length of the file, no bytes: the next response on
    the connection parses) and a full 200 for another tag."""
    r = http_get(port, "/ringws.js")
    eq(r.status, 200, "GET /ringws.js status")
    eq(r.header("Content-Type"), "text/javascript; charset=utf-8", "Content-Type of /ringws.js")
    eq(r.body, open(CLIENT_JS, "rb").read(), "the body of /ringws.js")
    eq(r.header("Access-Control-Allow-Origin"), "*", "pages of any origin may import it")
    etag = r.header("ETag") or ""
    expect(len(etag) > 2 and etag[0] == '"' and etag[-1] == '"', "a strong ETag", etag)
    with HttpConn(port) as c:
        c.send(req(port, "GET", "/ringws.js", headers=[("If-None-Match", "W/" + etag)]) +
               req(port, "GET", "/ringws.js", headers=[("If-None-Match", '"other", ' + etag)]) +
               req(port, "GET", "/ringws.js", headers=[("If-None-Match", '"other"')]))
        for what in ("a weak match", "a match in a list"):
            nm = c.read_response(head=True)
            eq(nm.status, 304, "status for %s" % what)
            eq(nm.header("ETag"), etag, "the ETag of the 304")
            eq(nm.header("Content-Length"), str(len(r.body)), "the 304's Content-Length")
        full = c.read_response()
        eq(full.status, 200, "status for another tag")
        eq(full.body, r.body, "the body for another tag")
        c.expect_open()


def t_404(port):
    for path in ("/nope", "/healthz/x", "/echo2", "/favicon.ico"):
        r = http_get(port, path)
        eq(r.status, 404, "GET %s status" % path)


def t_echo_no_upgrade(port):
    r = http_get(port, "/echo")
    eq(r.status, 426, "GET /echo without Upgrade")
    expect("websocket" in r.tokens("Upgrade"), "Upgrade: websocket", r.header_all("Upgrade"))
    eq(r.header("Sec-WebSocket-Version"), "13", "Sec-WebSocket-Version")


def t_405(port):
    for path in ("/", "/healthz", "/echo"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            with HttpConn(port) as c:
                c.send(req(port, method, path, headers=[("Content-Length", "0")]))
                r = c.read_response()
                eq(r.status, 405, "%s %s status" % (method, path))
                allow = r.header("Allow")
                expect(allow, "an Allow header on 405 for %s %s" % (method, path), r.headers)
                expect("GET" in [a.strip() for a in allow.split(",")], "Allow listing GET", allow)


def t_405_body_consumed(port):
    # The body of a rejected POST must not be read as the next request: the
    # server either skips it and answers the pipelined GET, or closes.
    with HttpConn(port) as c:
        c.send(req(port, "POST", "/healthz", headers=[("Content-Length", "5")], body=b"hello")
               + req(port, "GET"))
        eq(c.read_response().status, 405, "POST status")
        try:
            r = c.read_response(timeout=T(2))
        except AssertionError as e:
            if "connection closed" not in str(e):
                raise
            return
        check_healthz(r)


def t_400_close(port):
    bad = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n: novalue\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad\x01Name: y\r\n\r\n",
        b"G\x00ET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTQ/1.1\r\nHost: x\r\n\r\n",
    ]
    for raw in bad:
        with HttpConn(port) as c:
            c.send(raw)
            r = c.read_response()
            eq(r.status, 400, "status for %r" % raw)
            c.expect_eof(what="server to close after 400 for %r" % raw)


def t_bare_lf(port):
    # The first request also ends with CRLFCRLF so that a server waiting for
    # one is not what makes the case fail: only a missing 400 can.
    for raw in (b"GET /healthz HTTP/1.1\nHost: x\n\n\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\n\r\n"):
        with HttpConn(port) as c:
            c.send(raw)
            r = c.read_response()
            eq(r.status, 400, "status for bare LF in %r" % raw)
            c.expect_eof()


def t_obs_fold(port):
    with HttpConn(port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n")
        eq(c.read_response().status, 400, "status for obs-fold (space)")
        c.expect_eof()
    with HttpConn(port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n")
        eq(c.read_response().status, 400, "status for obs-fold (tab)")
        c.expect_eof()


def t_414(port):
    with HttpConn(port) as c:
        c.send(req(port, "GET", "/" + "a" * 5000))
        eq(c.read_response().status, 414, "status for a 5000-byte request target")
    with HttpConn(port) as c:
        # Just under the limit is a normal (unknown) path.
        c.send(req(port, "GET", "/" + "a" * 4000))
        eq(c.read_response().status, 404, "status for a 4000-byte request target")


def t_431_size(port):
    big = [("X-Fill-%d" % i, "v" * 1000) for i in range(9)]
    with HttpConn(port) as c:
        c.send(req(port, headers=big))
        eq(c.read_response().status, 431, "status for a 9 KB head")
    ok = [("X-Fill-%d" % i, "v" * 1000) for i in range(7)]
    with HttpConn(port) as c:
        c.send(req(port, headers=ok))
        check_healthz(c.read_response())


def t_431_count(port):
    # Host + 63 = 64 fields is fine; Host + 64 = 65 is too many.
    with HttpConn(port) as c:
        c.send(req(port, headers=[("X-H%d" % i, "v") for i in range(63)]))
        check_healthz(c.read_response())
    with HttpConn(port) as c:
        c.send(req(port, headers=[("X-H%d" % i, "v") for i in range(64)]))
        eq(c.read_response().status, 431, "status for 65 header fields")


def t_505(port):
    for version in ("HTTP/2.0", "HTTP/3.0"):
        with HttpConn(port) as c:
            c.send(req(port, version=version))
            eq(c.read_response().status, 505, "status for %s" % version)


def t_501(port):
    for te in ("gzip", "identity", "compress, chunked"):
        with HttpConn(port) as c:
            c.send(req(port, "POST", "/healthz", headers=[("Transfer-Encoding", te)]))
            eq(c.read_response().status, 501, "status for Transfer-Encoding: %s" % te)


def t_chunked_not_501(port):
    # Chunked is the one transfer coding the server understands: the body is
    # read, the method is then refused, and the next request is answered.
    with HttpConn(port) as c:
        c.send(req(port, "POST", "/healthz", headers=[("Transfer-Encoding", "chunked")],
                   body=b"5\r\nhello\r\n0\r\n\r\n") + req(port))
        r = c.read_response()
        eq(r.status, 405, "POST with a chunked body")
        try:
            nxt = c.read_response(timeout=T(2))
        except AssertionError as e:
            if "connection closed" not in str(e):
                raise
            return
        check_healthz(nxt)


def t_connection_close(port):
    with HttpConn(port) as c:
        c.send(req(port, headers=[("Connection", "close")]))
        check_healthz(c.read_response())
        c.expect_eof()


def t_http10(port):
    with HttpConn(port) as c:
        c.send(req(port, version="HTTP/1.0"))
        r = c.read_response()
        check_healthz(r)
        c.expect_eof(what="server to close an HTTP/1.0 connection without keep-alive")


def t_http10_keepalive(port):
    with HttpConn(port) as c:
        for _ in range(3):
            c.send(req(port, version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
            check_healthz(c.read_response())
        c.expect_open()


def t_keepalive(port):
    with HttpConn(port) as c:
        for i in range(10):
            c.send(req(port, "GET", "/" if i % 3 == 0 else "/healthz" if i % 3 == 1 else "/missing"))
            r = c.read_response()
            eq(r.status, (200, 200, 404)[i % 3], "status of request %d on one connection" % i)
        c.expect_open()


def t_pipeline3(port):
    with HttpConn(port) as c:
        c.send(req(port, "GET", "/healthz") + req(port, "GET", "/nope") + req(port, "GET", "/"))
        a, b, d = c.read_response(), c.read_response(), c.read_response()
        eq([a.status, b.status, d.status], [200, 404, 200], "statuses of 3 pipelined requests")
        eq(a.body, b"ok\n", "first pipelined body")
        expect(b"WebSocket" in d.body, "the demo page third", d.body[:80])
        c.expect_open()


def t_pipeline_many(port):
    n = 100
    with HttpConn(port) as c:
        c.send(b"".join(req(port, "GET", "/healthz" if i % 2 else "/x%d" % i) for i in range(n)))
        for i in range(n):
            r = c.read_response()
            eq(r.status, 200 if i % 2 else 404, "status of pipelined request %d of %d" % (i, n))


def t_pipeline_then_close(port):
    with HttpConn(port) as c:
        c.send(req(port) + req(port, headers=[("Connection", "close")]) + req(port))
        check_healthz(c.read_response())
        check_healthz(c.read_response())
        c.expect_eof(what="server to close after the Connection: close request, answering nothing after it")


def t_pipeline_half_close(port):
    # Far more answers than half the send queue: parsing waits for the
    # client to read while the rest of the requests are held unparsed. A
    # client that has said everything (SHUT_WR) before reading still gets
    # every answer, then the close.
    n = 200
    page = http_get(port, "/")
    eq(page.status, 200, "GET / status")
    expect(n * len(page.body) > 2 * SMALL_SEND_QUEUE, "answers beyond the send queue",
           n * len(page.body))
    with HttpConn(port, timeout=T(10)) as c:
        c.send(b"".join(req(port, "GET", "/") for _ in range(n)))
        c.sock.shutdown(socket.SHUT_WR)
        for i in range(n):
            r = c.read_response()
            eq(r.status, 200, "status of pipelined request %d of %d" % (i, n))
            eq(r.body, page.body, "body of pipelined request %d of %d" % (i, n))
        c.expect_eof(what="server to close after the last answer")


def t_max_body_then_big_head(port):
    # A body of exactly the limit, then two requests with large (legal)
    # heads: 12 KiB after the body. The end of the body and what follows
    # come in one write, after the server has read the rest, so that they
    # arrive in one receive: the server must answer the full request, not
    # count what follows against its limit.
    body = b"b" * MAX_BODY
    fill = [("X-Fill-%d" % i, "v" * 1000) for i in range(6)]
    first = req(port, "POST", "/healthz", headers=[("Content-Length", str(MAX_BODY))], body=body)
    rest = req(port, headers=fill) * 2
    expect(len(rest) > 12000, "more than 12 KB after the body", len(rest))
    with HttpConn(port, timeout=T(10)) as c:
        c.send(first[:-100])
        time.sleep(T(0.2))  # nothing to wait on: the server answers only once the body is complete
        c.send(first[-100:] + rest)
        eq(c.read_response().status, 405, "status of a POST with a 1 MiB body")
        check_healthz(c.read_response())
        check_healthz(c.read_response())
        c.expect_open()
    # What follows is a head over the limit: the full request is still
    # answered, then the next gets its 431.
    with HttpConn(port, timeout=T(10)) as c:
        c.send(first[:-100])
        time.sleep(T(0.2))
        c.send(first[-100:] + req(port, headers=fill * 2))
        eq(c.read_response().status, 405, "status of a POST with a 1 MiB body")
        eq(c.read_response().status, 431, "status of the 12 KB head after it")
        c.expect_eof()


def t_one_byte_writes(port):
    with HttpConn(port) as c:
        c.send(req(port, headers=[("User-Agent", "byte-by-byte"), ("Accept", "*/*")]), chops=1, pause=0.002)
        check_healthz(c.read_response())
        c.send(req(port, "GET", "/"), chops=1)
        eq(c.read_response().status, 200, "second request in 1-byte writes")


def t_big_head_small_writes(port):
    hdrs = [("X-Long-%d" % i, "z" * 300) for i in range(20)]
    with HttpConn(port) as c:
        c.send(req(port, headers=hdrs), chops=[97, 1, 1, 200, 3, 1000, 7, 64, 64, 1, 2000])
        check_healthz(c.read_response())


def t_pipeline_split(port):
    # Request boundaries fall inside writes and writes end inside requests.
    blob = b"".join(req(port, "GET", "/healthz") for _ in range(5))
    with HttpConn(port) as c:
        c.send(blob, chops=[10, 50, 37, 1, 1, 1, 120, 3], pause=0.002)
        for i in range(5):
            check_healthz(c.read_response())


def t_many_connections(port):
    conns = [HttpConn(port) for _ in range(30)]
    try:
        for c in conns:
            c.send(req(port))
        for c in conns:
            check_healthz(c.read_response())
    finally:
        for c in conns:
            c.close()


def t_close_mid_request(port):
    # A client that vanishes mid-head must not disturb the server.
    c = HttpConn(port)
    c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-")
    c.close()
    check_healthz(http_get(port, "/healthz"))


def main():
    r = Runner("http")
    cases = [
        ("healthz", t_healthz), ("head-healthz", t_head_healthz), ("root", t_root),
        ("head-root", t_head_root), ("client-script", t_client_script), ("404", t_404), ("echo-426", t_echo_no_upgrade),
        ("405-allow", t_405), ("405-body-not-a-request", t_405_body_consumed),
        ("400-malformed-closes", t_400_close), ("400-bare-lf", t_bare_lf),
        ("400-obs-fold", t_obs_fold), ("414", t_414), ("431-size", t_431_size),
        ("431-count", t_431_count), ("505", t_505), ("501-transfer-encoding", t_501),
        ("chunked-not-501", t_chunked_not_501), ("connection-close", t_connection_close),
        ("http10-closes", t_http10), ("http10-keepalive", t_http10_keepalive),
        ("keepalive-reuse", t_keepalive), ("pipeline-3", t_pipeline3),
        ("pipeline-100", t_pipeline_many), ("pipeline-connection-close", t_pipeline_then_close),
        ("one-byte-writes", t_one_byte_writes), ("big-head-small-writes", t_big_head_small_writes),
        ("pipeline-split", t_pipeline_split), ("30-connections", t_many_connections),
        ("client-vanishes-mid-head", t_close_mid_request),
        ("max-body-then-12k-of-heads", t_max_body_then_big_head),
    ]
    with r.server([], "default") as srv:
        for cid, fn in cases:
            r.case(cid, fn, srv.port)
    small = ["--recv-buffer", "64", "--recv-buffers", "512"]
    again = {"healthz", "head-healthz", "root", "400-malformed-closes", "414", "431-size",
             "431-count", "keepalive-reuse", "pipeline-3", "pipeline-100",
             "one-byte-writes", "big-head-small-writes", "pipeline-split", "405-body-not-a-request",
             "chunked-not-501"}
    with r.server(small, "recv-buffer-64") as srv:
        for cid, fn in cases:
            if cid in again:
                r.case(cid + "[rb64]", fn, srv.port)
    with r.server(["--max-send-queue", SMALL_SEND_QUEUE], "small-send-queue") as srv:
        r.case("pipeline-half-close", t_pipeline_half_close, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
