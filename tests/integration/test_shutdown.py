"""Graceful shutdown: on SIGTERM or SIGINT the server stops accepting, sends
close 1001 to every open WebSocket, and exits 0 within the close timeout
plus a small margin, even when a client never answers its close."""

import asyncio
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_TEXT, HttpConn, RawWS, Runner, Server, T, eq, expect, fail,  # noqa: E402
                         slack, upgrade_request, ws_connect)

MARGIN = 2.0 + slack(4)


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


async def clients_get_1001(sig):
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
            eq(ws.close_code, 1001, "close code received by client %d" % i)
        ev = raw.expect_close(1001)
        raw.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xe9")  # masked close 1001, zero mask
        raw.expect_eof()
        raw.close()
        del ev
        finish(srv, sig, 3.0 + MARGIN - (time.monotonic() - t0), "10 clients answering the close")
    finally:
        srv.kill()


async def t_sigterm(*_):
    await clients_get_1001(signal.SIGTERM)


async def t_sigint(*_):
    await clients_get_1001(signal.SIGINT)


def t_unresponsive(*_):
    srv = start(["--close-timeout", "1s"])
    try:
        mute = RawWS.open(srv.port)
        polite = RawWS.open(srv.port)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        polite.expect_close(1001)
        polite.try_send(b"\x88\x82\x00\x00\x00\x00\x03\xe9")
        polite.expect_eof()
        mute.expect_close(1001)
        # Never answer: the close timeout (1 s) ends it.
        mute.expect_eof(timeout=1.0 + MARGIN)
        finish(srv, signal.SIGTERM, 1.0 + MARGIN - (time.monotonic() - t0), "a client that never answers")
        mute.close()
        polite.close()
    finally:
        srv.kill()


def t_stops_accepting(*_):
    srv = start(["--close-timeout", "2s"])
    try:
        mute = RawWS.open(srv.port)  # keeps the server in its closing phase
        srv.send_signal(signal.SIGTERM)
        mute.expect_close(1001)
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
            eq(codes, [1001] * 40, "close codes of 40 clients over 2 workers")
            finish(srv, signal.SIGTERM, 3.0 + MARGIN, "40 clients, 2 workers")
        finally:
            srv.kill()

    asyncio.run(asyncio.wait_for(run(), T(30)))


def main():
    r = Runner("shutdown")
    for cid, fn in [
        ("sigterm-10-clients-1001", t_sigterm),
        ("sigint-10-clients-1001", t_sigint),
        ("client-never-answers-close", t_unresponsive),
        ("stops-accepting", t_stops_accepting),
        ("http-and-half-handshakes", t_http_and_half_handshakes),
        ("sigterm-no-connections", t_no_connections),
        ("sigint-no-connections-2-workers", t_sigint_no_connections),
        ("40-clients-2-workers", t_many_clients_workers),
    ]:
        r.case(cid, fn, timeout=40)
    r.finish()


if __name__ == "__main__":
    main()
