"""Graceful shutdown: on SIGTERM or SIGINT the server stops accepting, sends
close 1012 (or 1001 with --stop-code 1001) to every open WebSocket, its
reason carrying a reconnect hint drawn per connection within
--reconnect-window, and exits 0 within the close timeout
plus a small margin, even when a client never answers its close. A worker
whose ring fails (a fault injected through RINGWS_TEST_FAULT) takes the whole
server down the same way, with the error logged and a non-zero exit."""

import asyncio
import fcntl
import os
import re
import signal
import socket
import struct
import sys
import termios
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (EOF, OP_BINARY, OP_TEXT, HttpConn, RawWS, Runner, Server, T, TestFailure,  # noqa: E402
                         build_frame, eq, expect, fail, slack, upgrade_request, ws_connect)

MARGIN = 2.0 + slack(4)
HINT = re.compile(rb"^server restarting; retry after ([0-9]+) ms$")


def hint_ms(reason, window_ms):
    """The delay a stop close's reason asks the client to wait; checks the
    format and that it lies in [0, window_ms)."""
    m = HINT.match(bytes(reason))
    expect(m, "a reason 'server restarting; retry after N ms'", bytes(reason))
    ms = int(m.group(1))
    expect(0 <= ms < window_ms, "a hint within the %d ms window" % window_ms, ms)
    return ms


def start(args=()):
    return Server(list(args), "shutdown").start()


def finish(srv, sig, limit, what):
    """Waits for the exit after `sig` was sent; checks status 0, the time
    limit and the sanitizer output."""
    rc = srv.wait(limit)
    if rc is None:
        srv.kill()
        fail("expected exit within %.1fs after %s (%s), still running" % (limit, sig.name, what))
    reports = srv.sanitizer_reports()
    if reports:
        fail("sanitizer reports after %s: %s; stderr %s" % (sig.name, reports, srv.stderr_tail()))
    eq(rc, 0, "exit status after %s" % sig.name)


async def clients_get_1012(sig):
    srv = start()
    try:
        conns = []
        for i in range(10):
            ws = await ws_connect(srv.port, close_timeout=T(5))
            await ws.send("hello %d" % i)
            eq(await asyncio.wait_for(ws.recv(), T(5)), "hello %d" % i, "echo before shutdown")
            conns.append(ws)
        # One more in the middle of a fragmented message.
        raw = RawWS.open(srv.port)
        raw.send_frame(OP_TEXT, "half a message", fin=False)
        t0 = time.monotonic()
        srv.send_signal(sig)
        for i, ws in enumerate(conns):
            await asyncio.wait_for(ws.wait_closed(), T(5))
            eq(ws.close_code, 1012, "close code received by client %d" % i)
            hint_ms(ws.close_reason.encode(), 5000)  # the binary's default window
        ev = raw.expect_close(1012)
        hint_ms(ev.reason, 5000)
        raw.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xf4")  # masked close 1012, zero mask
        raw.expect_eof()
        raw.close()
        del ev
        finish(srv, sig, 3.0 + MARGIN - (time.monotonic() - t0), "10 clients answering the close")
    finally:
        srv.kill()


async def t_sigterm(*_):
    await clients_get_1012(signal.SIGTERM)


async def t_sigint(*_):
    await clients_get_1012(signal.SIGINT)


def t_unresponsive(*_):
    srv = start(["--close-timeout", "1s"])
    try:
        mute = RawWS.open(srv.port)
        polite = RawWS.open(srv.port)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        polite.expect_close(1012)
        polite.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xf4")
        polite.expect_eof()
        mute.expect_close(1012)
        # Never answer: the close timeout (1 s) ends it.
        mute.expect_eof(timeout=1.0 + MARGIN)
        finish(srv, signal.SIGTERM, 1.0 + MARGIN - (time.monotonic() - t0), "a client that never answers")
        mute.close()
        polite.close()
    finally:
        srv.kill()


def t_stop_code_1001(*_):
    """--stop-code 1001 and no window: the library's own close, as before."""
    srv = start(["--stop-code", "1001", "--reconnect-window", "0"])
    try:
        ws = RawWS.open(srv.port)
        srv.send_signal(signal.SIGTERM)
        ev = ws.expect_close(1001)
        eq(bytes(ev.reason), b"server shutting down", "reason of the 1001 close")
        ws.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xe9")
        ws.expect_eof()
        ws.close()
        finish(srv, signal.SIGTERM, 1.0 + MARGIN, "one client, 1001")
    finally:
        srv.kill()


def t_reconnect_hints_spread(*_):
    """60 clients over 2 workers get hints that all lie in the window and
    spread over it: few equal, the earliest and latest far apart."""
    window = 2000
    srv = start(["--workers", "2", "--reconnect-window", "%dms" % window])
    conns = []
    try:
        conns = [RawWS.open(srv.port) for _ in range(60)]
        srv.send_signal(signal.SIGTERM)
        hints = []
        for ws in conns:
            hints.append(hint_ms(ws.expect_close(1012).reason, window))
            ws.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xf4")
            ws.close()
        # 60 draws from 2000 values: about one pair alike by chance.
        expect(len(set(hints)) >= 50, "hints that differ", sorted(hints))
        expect(max(hints) - min(hints) >= window // 2, "hints spread over the window", sorted(hints))
        finish(srv, signal.SIGTERM, 1.0 + MARGIN, "60 clients with hints")
    finally:
        for ws in conns:
            ws.close()
        srv.kill()


def t_stops_accepting(*_):
    srv = start(["--close-timeout", "2s"])
    try:
        mute = RawWS.open(srv.port)  # keeps the server in its closing phase
        srv.send_signal(signal.SIGTERM)
        mute.expect_close(1012)
        # The signal has been handled. A new client gets no WebSocket now.
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=T(2))
        except (ConnectionRefusedError, socket.timeout):
            s = None
        if s is not None:
            request, _ = upgrade_request(srv.port)
            try:
                s.sendall(request)
                s.settimeout(2.0 + MARGIN)
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except socket.timeout:
                fail("a connection accepted after SIGTERM was still open when the server should have exited")
            finally:
                s.close()
            expect(not data.startswith(b"HTTP/1.1 101"), "no handshake after SIGTERM", data[:40])
        finish(srv, signal.SIGTERM, 2.0 + MARGIN, "closing phase")
        mute.close()
    finally:
        srv.kill()


def t_http_and_half_handshakes(*_):
    srv = start()
    try:
        idle = HttpConn(srv.port)
        idle.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        eq(idle.read_response().status, 200, "status before shutdown")
        half = HttpConn(srv.port)
        half.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        idle.expect_eof(timeout=MARGIN + 1, what="server to close an idle keep-alive connection at shutdown")
        half.sock.settimeout(MARGIN + 1)
        try:
            while half.sock.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        finish(srv, signal.SIGTERM, 3.0 + MARGIN - (time.monotonic() - t0), "only HTTP connections")
        idle.close()
        half.close()
    finally:
        srv.kill()


def t_no_connections(*_):
    srv = start()
    try:
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        finish(srv, signal.SIGTERM, 1.0 + MARGIN, "no connections")
        took = time.monotonic() - t0
        expect(took < 1.0 + MARGIN, "prompt exit", "%.2fs" % took)
    finally:
        srv.kill()


def t_sigint_no_connections(*_):
    srv = start(["--workers", "2"])
    try:
        srv.send_signal(signal.SIGINT)
        finish(srv, signal.SIGINT, 1.0 + MARGIN, "no connections, 2 workers")
    finally:
        srv.kill()


def t_many_clients_workers(*_):
    async def run():
        srv = start(["--workers", "2"])
        try:
            conns = [await ws_connect(srv.port) for _ in range(40)]
            for i, ws in enumerate(conns):
                await ws.send(b"x" * i)
            for i, ws in enumerate(conns):
                eq(await asyncio.wait_for(ws.recv(), T(5)), b"x" * i, "echo")
            srv.send_signal(signal.SIGTERM)
            codes = []
            for ws in conns:
                await asyncio.wait_for(ws.wait_closed(), T(5))
                codes.append(ws.close_code)
            eq(codes, [1012] * 40, "close codes of 40 clients over 2 workers")
            finish(srv, signal.SIGTERM, 3.0 + MARGIN, "40 clients, 2 workers")
        finally:
            srv.kill()

    asyncio.run(asyncio.wait_for(run(), T(30)))


def expect_ended(socks, what):
    """Each socket's connection ends (EOF or reset) within T(2), whatever
    it still had to read: none outlives the server."""
    for i, sock in enumerate(socks):
        sock.settimeout(T(2))
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            fail("client %d%s: its connection outlived the server" % (i, what))


def stalled_clients(port, n, into):
    """n clients that each send three 512 KiB messages to /echo and read
    none of the echoes (a 4 KiB receive buffer), appended to `into` as they
    open so that the caller closes them whatever happens."""
    frame = build_frame(OP_BINARY, bytes(range(256)) * 2048)
    for _ in range(n):
        ws = RawWS.open(port, rcvbuf=4096)
        into.append(ws)
        ws.sock.sendall(frame * 3)


def unread(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def t_stop_with_sends_in_flight(*_):
    """Stopped while large sends wait on clients that read nothing: after
    the close timeout every connection is torn down with its sends still in
    the ring; the server exits 0 in time, every connection ends, and the
    sanitizers (ASan build) report nothing."""
    srv = start(["--workers", "2", "--close-timeout", "1s"])
    clients = []
    try:
        stalled_clients(srv.port, 16, clients)
        # Echoes reach every client and pile up behind its full window.
        deadline = time.monotonic() + T(10)
        while any(unread(ws.sock) < 2048 for ws in clients):
            if time.monotonic() > deadline:
                fail("the echoes never reached every client (unread: %s)"
                     % [unread(ws.sock) for ws in clients])
            time.sleep(0.02)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        finish(srv, signal.SIGTERM, 1.5 + MARGIN, "16 clients that read nothing")
        expect_ended([ws.sock for ws in clients], "")
        expect(time.monotonic() - t0 < 1.5 + MARGIN + T(2), "a prompt end", time.monotonic() - t0)
    finally:
        for ws in clients:
            ws.close()
        srv.kill()


class PublishLoop:
    """POST /publish/f over and over on a keep-alive connection (a new one
    when the server closes it) until told to stop or nothing listens: every
    request must be answered or its connection closed within `limit`."""

    def __init__(self, port, limit):
        self.port, self.limit = port, limit
        self.stop = threading.Event()
        self.answers = {}
        self.error = None
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        req = b"POST /publish/f HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping"
        conn = None
        try:
            while not self.stop.is_set():
                if conn is None:
                    try:
                        conn = HttpConn(self.port, timeout=self.limit)
                    except OSError:
                        return  # nothing listens any more
                try:
                    conn.send(req)
                    status = conn.read_response().status
                    self.answers[status] = self.answers.get(status, 0) + 1
                except TestFailure as e:
                    if "timed out" in str(e):
                        raise TestFailure("a publish was left unanswered for %.0fs" % self.limit)
                    conn.close()
                    conn = None
                except OSError:
                    conn.close()
                    conn = None
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        finally:
            if conn is not None:
                conn.close()

    def finish(self):
        self.stop.set()
        self.th.join(self.limit + 5)
        if self.error is not None:
            raise self.error


def wait_stderr(srv, text, limit):
    deadline = time.monotonic() + limit
    while text not in srv.stderr_text():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return time.monotonic()


def t_worker_ring_fails(*_):
    """Worker 0's ring fails (RINGWS_TEST_FAULT=ring:N makes its submit
    return -EIO after N loop turns): the whole server goes down, its error
    logged, with a non-zero exit, within the close timeout and a margin.
    Clients of the failed worker see their connections end, those of the
    other worker get close 1012, and no HTTP publish waits on the failed
    worker's count. Clients that read nothing keep large sends in flight
    when the ring fails (their memory is freed only after the ring is torn
    down: the ASan build watches the teardown)."""
    srv = Server(["--workers", "2", "--close-timeout", "1s"], "ring-fault",
                 env={"RINGWS_TEST_FAULT": "ring:300"}).start()
    clients, mute = [], []
    pub = None
    try:
        stalled_clients(srv.port, 6, mute)
        clients = [RawWS.open(srv.port) for _ in range(6)] + \
                  [RawWS.open(srv.port, "/ws?topics=f") for _ in range(6)]
        pub = PublishLoop(srv.port, T(3))
        failed_at = None
        deadline = time.monotonic() + T(15)
        # Echo traffic turns both loops until worker 0 fails.
        while failed_at is None and time.monotonic() < deadline and srv.alive():
            for ws in clients[:6]:
                ws.try_send(b"\x81\x84\x00\x00\x00\x00ping")
            failed_at = wait_stderr(srv, "io_uring_submit_and_wait", 0.05)
        if failed_at is None:
            fail("worker 0 never failed (stderr %s)" % srv.stderr_tail())
        limit = 1.0 + MARGIN
        rc = srv.wait(limit)
        if rc is None:
            fail("the server was still running %.1fs after its worker 0 failed; stderr %s"
                 % (limit, srv.stderr_tail()))
        pub.finish()
        expect(rc not in (0, None) and rc > 0, "a non-zero exit status", rc)
        text = srv.stderr_text()
        for line in ("worker 0: io_uring_submit_and_wait: Input/output error",
                     "ringws: Input/output error"):
            expect(line in text, "%r on stderr" % line, srv.stderr_tail())
        expect(not srv.sanitizer_reports(), "no sanitizer report", srv.stderr_tail())
        ends = {"1012": 0, "eof": 0}
        for ws in clients:
            try:
                while True:
                    ev = ws.recv_event(T(2), "the end of the connection")
                    if ev.kind == "close":
                        eq(ev.code, 1012, "close code from the worker that went on")
                        ends["1012"] += 1
                        break
            except EOF:
                ends["eof"] += 1
        expect_ended([ws.sock for ws in mute], " that read nothing")
        print("  connections: %d closed with 1012, %d ended by the failed worker; publishes: %s"
              % (ends["1012"], ends["eof"], pub.answers), flush=True)
    finally:
        if pub is not None:
            pub.stop.set()
        for ws in clients + mute:
            ws.close()
        srv.kill()


def main():
    r = Runner("shutdown")
    for cid, fn in [
        ("sigterm-10-clients-1012", t_sigterm),
        ("sigint-10-clients-1012", t_sigint),
        ("stop-code-1001-without-hint", t_stop_code_1001),
        ("reconnect-hints-spread-in-window", t_reconnect_hints_spread),
        ("client-never-answers-close", t_unresponsive),
        ("stops-accepting", t_stops_accepting),
        ("http-and-half-handshakes", t_http_and_half_handshakes),
        ("sigterm-no-connections", t_no_connections),
        ("sigint-no-connections-2-workers", t_sigint_no_connections),
        ("40-clients-2-workers", t_many_clients_workers),
        ("stop-with-large-sends-in-flight", t_stop_with_sends_in_flight),
        ("worker-ring-fails-server-exits", t_worker_ring_fails),
    ]:
        r.case(cid, fn, timeout=40)
    r.finish()


if __name__ == "__main__":
    main()
