"""ringws behind Debian's nginx as a TLS-less WebSocket reverse proxy, with
the configuration docs/DEPLOY.md shows (read from it, with this test's ports
and timeouts): echo of text and binary messages; pub/sub with the subscriber
through nginx and the publisher straight to ringws (nginx refuses /publish);
messages near --max-message echoed and one past it closed with 1009; close
codes passing both ways (the client's echoed, the server's 1002 and 1008
reaching the client); idle connections as DEPLOY.md describes them (ringws's
pings under proxy_read_timeout keep an idle client open and drop a dead
one; without them nginx cuts the idle client); and the stop close (1012 and
its reconnect hint) reaching the client on SIGTERM."""

import asyncio
import contextlib
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fronts  # noqa: E402
from ringws_test import (EOF, OP_BINARY, OP_TEXT, RawWS, Runner, Server, T, eq, expect,  # noqa: E402
                         slack, ws_connect)

MAX_MESSAGE = 1 << 20
HINT = re.compile(rb"^server restarting; retry after ([0-9]+) ms$")


class Nginx:
    """nginx in front of `upstream` as docs/DEPLOY.md configures it, its
    proxy_read_timeout set to `read_timeout`."""

    def __init__(self, upstream, read_timeout="120s"):
        self.port = fronts.free_port()
        body = fronts.deploy_snippet("nginx", [
            ("listen 80;", "listen 127.0.0.1:%d;" % self.port),
            ("127.0.0.1:8080", "127.0.0.1:%d" % upstream),
            ("proxy_read_timeout 120s;", "proxy_read_timeout %s;" % read_timeout)])
        self.front = fronts.Nginx(body, [self.port])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.front.stop()


@contextlib.contextmanager
def behind(r, args, label, read_timeout="120s", env=None):
    """A ringws server (a scope of the runner: it must end cleanly) and an
    nginx in front of it."""
    with r.server(args, label, tls=None, env=env) as srv:
        with Nginx(srv.port, read_timeout) as ngx:
            yield srv, ngx


def run(coro, limit=30):
    return asyncio.run(asyncio.wait_for(coro, T(limit)))


def t_echo(r):
    async def go(port):
        async with ws_connect(port, tls=None) as ws:
            await ws.send("héllo through nginx")
            eq(await ws.recv(), "héllo through nginx", "text echo")
            data = bytes(range(256)) * 64
            await ws.send(data)
            eq(await ws.recv(), data, "binary echo")
    with behind(r, [], "echo") as (_, ngx):
        run(go(ngx.port))


def t_pubsub(r):
    with behind(r, [], "pubsub") as (srv, ngx):
        sub = RawWS.open(ngx.port, path="/ws?topics=news", tls=None)
        sub.send_frame(OP_TEXT, "sub alerts")
        sub.send_frame(0x9, b"sync")  # the command took effect once its pong comes
        sub.expect_pong(b"sync")
        for topic, text in (("news", "published to ringws"), ("alerts", "to the topic subscribed by command")):
            body = text.encode()
            resp = post(srv.port, "/publish/" + topic, body)
            expect(resp.startswith(b"HTTP/1.1 200 ") and b'"recipients":1' in resp,
                   "200 with one recipient for a publish straight to ringws", resp[:200])
            sub.expect_event("text", body)
        resp = post(ngx.port, "/publish/news", b"through nginx")
        expect(resp.startswith(b"HTTP/1.1 403 ") and b"nginx" in resp,
               "nginx's 403 for a publish through it", resp[:200])
        sub.expect_silence(0.2)
        sub.close_handshake()
        sub.close()


def post(port, path, body):
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
              % (path.encode(), len(body)) + body)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out


def t_large_messages(r):
    async def go(port):
        async with ws_connect(port, tls=None) as ws:
            near = os.urandom(MAX_MESSAGE - 16)
            await ws.send(near)
            eq(await ws.recv(), near, "a message 16 bytes under --max-message")
            await ws.send(b"x" * (MAX_MESSAGE + 1))
            try:
                await ws.recv()
                expect(False, "the connection closed", "a message")
            except Exception:  # noqa: BLE001 - websockets' ConnectionClosed
                pass
            eq(ws.close_code, 1009, "close code for a message over --max-message")
    with behind(r, ["--max-message", str(MAX_MESSAGE)], "large") as (_, ngx):
        run(go(ngx.port))


def t_close_codes(r):
    async def client_close(port):
        async with ws_connect(port, tls=None) as ws:
            await ws.close(4321, "bye from the client")
            eq(ws.close_code, 4321, "the client's close code echoed back")
    with behind(r, [], "close-codes") as (_, ngx):
        run(client_close(ngx.port))
        ws = RawWS.open(ngx.port, tls=None)
        ws.send_frame(OP_TEXT, "reserved bit", rsv=4)
        ws.expect_close(1002)
        ws.expect_eof()
        ws.close()
        ws = RawWS.open(ngx.port, path="/ws", tls=None)
        ws.send_frame(OP_TEXT, "pub news not allowed")
        ev = ws.expect_close(1008)
        eq(bytes(ev.reason), b"publishing to this topic is not allowed", "reason of the 1008")
        ws.expect_eof()
        ws.close()


def t_idle_pings_under_read_timeout(r):
    """idle-timeout 1s, proxy_read_timeout 3s: a client that answers pings
    stays open past nginx's timeout (4 s idle, then an echo); one that does
    not is dropped by ringws after about 2 s, before nginx would."""
    async def live(port):
        async with ws_connect(port, tls=None) as ws:
            await asyncio.sleep(4.0)
            await ws.send("still here")
            eq(await ws.recv(), "still here", "echo after 4 s idle (pings answered)")

    def dead(srv, port):
        ws = RawWS.open(port, tls=None)
        t0 = time.monotonic()
        ev = ws.recv_event(T(2), "ringws's ping")
        eq(ev.kind, "ping", "what an idle client gets first")
        ws.expect_eof(timeout=T(3), what="ringws to drop a client that answers no ping")
        took = time.monotonic() - t0
        expect(1.5 <= took < 2.9 + slack(1), "dropped after about 2 s, before nginx's 3 s",
               "%.2fs" % took)
        expect("peer silent after ping, dropping" in srv.stderr_text(), "ringws's word on the drop",
               srv.stderr_tail())
        ws.close()

    async def both(srv, port):
        await asyncio.gather(live(port), asyncio.get_running_loop().run_in_executor(None, dead, srv, port))

    with behind(r, ["--idle-timeout", "1s"], "idle-pings", read_timeout="3s",
                env={"RINGWS_LOG": "debug"}) as (srv, ngx):
        run(both(srv, ngx.port))


def t_idle_cut_by_nginx(r):
    """No pings (idle-timeout 0) and proxy_read_timeout 1s: nginx closes the
    idle tunnel without a close frame."""
    with behind(r, ["--idle-timeout", "0"], "idle-nginx", read_timeout="1s") as (_, ngx):
        ws = RawWS.open(ngx.port, tls=None)
        t0 = time.monotonic()
        try:
            ev = ws.recv_event(T(4), "nginx to cut the idle tunnel")
            expect(False, "the connection cut without a frame", ev)
        except EOF:
            pass
        took = time.monotonic() - t0
        expect(0.8 <= took <= 2.5 + slack(2), "cut after about proxy_read_timeout (1 s)", "%.2fs" % took)
        ws.close()


def t_sigterm_close(r):
    srv = Server([], "sigterm").start()
    try:
        with Nginx(srv.port) as ngx:
            sigterm_through(srv, ngx)
    finally:
        srv.kill()


def sigterm_through(srv, ngx):
    ws = RawWS.open(ngx.port, tls=None)
    ws.send_frame(OP_BINARY, b"before")
    ws.expect_echo(OP_BINARY, b"before")
    srv.send_signal(signal.SIGTERM)
    ev = ws.expect_close(1012)
    m = HINT.match(bytes(ev.reason))
    expect(m and int(m.group(1)) < 5000, "a reconnect hint within the 5 s window", bytes(ev.reason))
    ws.send_close(1012)
    ws.expect_eof()
    ws.close()
    eq(srv.wait(T(5)), 0, "exit status after SIGTERM")
    expect(not srv.sanitizer_reports(), "no sanitizer report", srv.stderr_tail())


def main():
    why = fronts.missing(fronts.NGINX)
    if why:
        print("proxy: skipped: " + why)
        sys.exit(77)
    r = Runner("proxy")
    for cid, fn in [
        ("echo-text-and-binary", t_echo),
        ("pubsub-subscriber-through-nginx", t_pubsub),
        ("large-messages-and-1009", t_large_messages),
        ("close-codes-both-ways", t_close_codes),
        ("idle-pings-under-proxy-read-timeout", t_idle_pings_under_read_timeout),
        ("idle-tunnel-cut-by-nginx-without-pings", t_idle_cut_by_nginx),
        ("sigterm-1012-with-hint-through-nginx", t_sigterm_close),
    ]:
        r.case(cid, fn, r, timeout=40)
    r.finish()


if __name__ == "__main__":
    main()
