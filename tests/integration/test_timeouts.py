"""Timers: a handshake that does not complete in time is dropped (slow or
silent clients cannot hold connections), a silent WebSocket gets a ping
after the idle timeout and is dropped if it never answers, a client that
answers stays, a close the client never answers still ends the TCP
connection after the close timeout, and a message that arrives slower than
the minimum rate is cut off with 1008 (with the defaults too) while one that
keeps to the rate, stalls included, is delivered."""

import asyncio
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PONG, OP_TEXT, EOF, RawWS, Runner, Server,  # noqa: E402
                         T, build_frame, close_payload, connect, eq, expect, fail, slack, wait_closed,
                         ws_connect)

# Timing windows around a 1 s setting: not before 0.8 s (the timer really
# waited) and not after 3 s plus an allowance on slow builds.
EARLY = 0.8
LATE = 3.0 + slack(2)


def t_partial_request(port):
    well = RawWS.open(port)
    try:
        s = connect(port)
        t0 = time.monotonic()
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso")
        # Meanwhile the well-behaved client is served.
        deadline = t0 + LATE + 1
        closed_after = None
        i = 0
        s.setblocking(False)
        while time.monotonic() < deadline:
            well.send_frame(OP_TEXT, "still here %d" % i)
            well.expect_echo(OP_TEXT, "still here %d" % i)
            i += 1
            r, _, _ = select.select([s], [], [], 0.1)
            if r:
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed_after = time.monotonic() - t0
                    break
        s.close()
        if closed_after is None:
            fail("expected the half-sent handshake to be dropped within %.1fs, it stayed open" % LATE)
        expect(EARLY <= closed_after <= LATE, "closed between %.1fs and %.1fs" % (EARLY, LATE),
               "closed after %.2fs" % closed_after)
        # The upgraded connection is not subject to the handshake timer.
        time.sleep(0.5)
        well.send_frame(OP_TEXT, "after")
        well.expect_echo(OP_TEXT, "after")
        well.close_handshake()
    finally:
        well.close()


def t_silent_connect(port):
    s = connect(port)
    try:
        took = wait_closed(s, LATE + 1, "server to drop a connection that never sends a byte")
        expect(EARLY <= took <= LATE, "dropped between %.1fs and %.1fs" % (EARLY, LATE), "after %.2fs" % took)
    finally:
        s.close()


def t_slowloris(port, n=20):
    request = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    socks = [connect(port) for _ in range(n)]
    for s in socks:
        s.setblocking(False)
    t0 = time.monotonic()
    closed = {}
    pos = 0
    try:
        while len(closed) < n and time.monotonic() - t0 < LATE + 2:
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    while True:
                        data = s.recv(4096)
                        if not data:
                            closed[i] = time.monotonic() - t0
                            break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed[i] = time.monotonic() - t0
                if i in closed:
                    continue
                try:
                    s.send(request[pos:pos + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed[i] = time.monotonic() - t0
            pos += 1
            time.sleep(0.2)
    finally:
        for s in socks:
            s.close()
    open_ones = [i for i in range(n) if i not in closed]
    if open_ones:
        fail("expected all %d dripping clients dropped within %.1fs; %d still open" % (n, LATE + 2, len(open_ones)))
    latest = max(closed.values())
    earliest = min(closed.values())
    expect(earliest >= EARLY and latest <= LATE + 0.5, "all dropped between %.1fs and %.1fs" % (EARLY, LATE + 0.5),
           "dropped between %.2fs and %.2fs" % (earliest, latest))


def t_idle_ping_then_drop(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "then silence")
        ws.expect_echo(OP_TEXT, "then silence")
        t0 = time.monotonic()
        ev = ws.recv_event(timeout=LATE + 1, what="a ping after 1s of silence")
        t_ping = time.monotonic() - t0
        eq(ev.kind, "ping", "first frame after silence")
        expect(EARLY <= t_ping <= LATE, "a ping between %.1fs and %.1fs" % (EARLY, LATE), "after %.2fs" % t_ping)
        # Never answer: the server gives up after another idle period. It may
        # send a close frame first; then it must close TCP.
        t1 = time.monotonic()
        try:
            while True:
                ev = ws.recv_event(timeout=LATE + 1, what="the connection to be dropped")
                if ev.kind != "close":
                    fail("expected only a close frame before the drop, got %r" % ev)
        except EOF:
            pass
        t_drop = time.monotonic() - t1
        expect(EARLY <= t_drop <= LATE, "dropped %.1fs to %.1fs after the ping" % (EARLY, LATE),
               "dropped %.2fs after the ping" % t_drop)


def t_idle_pong_keeps(port):
    with RawWS.open(port) as ws:
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 4.5:
            try:
                ev = ws.recv_event(timeout=0.2, what="a ping")
            except EOF:
                fail("expected a client answering pings to stay connected; dropped after %.2fs, %d pings"
                     % (time.monotonic() - t0, pings))
            except AssertionError as e:
                if "timed out" in str(e):
                    continue
                raise
            eq(ev.kind, "ping", "frame from the server while idle")
            pings += 1
            ws.send_raw(build_frame(OP_PONG, ev.data))
        expect(pings >= 2, "at least 2 pings in 4.5s of silence with a 1s idle timeout", "%d pings" % pings)
        ws.send_frame(OP_TEXT, "still connected")
        ws.expect_echo(OP_TEXT, "still connected")
        ws.close_handshake()


def t_idle_data_resets(port):
    # A client that talks every 0.4 s is never dropped (it may see pings;
    # it answers none of them and must still stay, because its data counts).
    with RawWS.open(port) as ws:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 3.5:
            ws.send_frame(OP_TEXT, "tick %d" % i)
            while True:
                ev = ws.recv_event(timeout=T(2), what="echo of tick %d" % i)
                if ev.kind == "ping":
                    continue
                eq((ev.kind, ev.data), ("text", b"tick %d" % i), "echo")
                break
            i += 1
            time.sleep(0.4)
        ws.close_handshake()


async def t_library_stays(port):
    async with ws_connect(port) as ws:
        await asyncio.sleep(4.0)
        await ws.send("after 4 idle periods")
        eq(await asyncio.wait_for(ws.recv(), T(5)), "after 4 idle periods", "echo after idling")
        await ws.close()
        eq(ws.close_code, 1000, "close code")


def t_close_timeout(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "bare", mask=False)
        ws.expect_close(1002)
        # Never answer the close.
        ws.expect_eof(timeout=LATE, what="the server to close TCP within the 1s close timeout")


def t_close_timeout_client_close_not_affected(port):
    # A client that does answer is closed at once, well before the timeout.
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "bare", mask=False)
        ws.expect_close(1002)
        t0 = time.monotonic()
        ws.try_send(build_frame(0x8, b"\x03\xea"))
        ws.expect_eof(timeout=LATE)
        took = time.monotonic() - t0
        expect(took < 0.8, "TCP closed right after our close reply", "%.2fs" % took)


def t_close_timeout_on_shutdown(*_):
    # A close the server starts on SIGTERM, never answered: TCP is closed and
    # the process exits once the 1 s close timeout has passed.
    srv = Server(["--close-timeout", "1s"], "close-1s-shutdown").start()
    try:
        ws = RawWS.open(srv.port)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        ws.expect_close(1012)
        ws.expect_eof(timeout=LATE, what="the server to close TCP within the 1s close timeout")
        took = time.monotonic() - t0
        expect(EARLY <= took <= LATE, "TCP closed between %.1fs and %.1fs" % (EARLY, LATE), "%.2fs" % took)
        rc = srv.wait(LATE)
        eq(rc, 0, "exit status after SIGTERM")
        ws.close()
    finally:
        srv.kill()


def t_handshake_timeout_not_for_http_between(port):
    # After a complete HTTP request, a kept-alive connection that starts and
    # finishes a second one in time is served.
    s = connect(port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(T(3))
        data = b""
        while b"ok\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                fail("connection closed before the /healthz answer")
            data += chunk
        expect(data.startswith(b"HTTP/1.1 200"), "200", data[:40])
    finally:
        s.close()


def t_duration_forms(port):
    # "1.5" (bare seconds) and "500ms": the silent client is dropped after
    # about 0.5 s, and a WebSocket is pinged after about 1.5 s.
    s = connect(port)
    try:
        took = wait_closed(s, 3 + slack(2), "server to drop a silent connection (500ms)")
        expect(0.3 <= took <= 2.0 + slack(2), "dropped between 0.3s and 2.0s", "after %.2fs" % took)
    finally:
        s.close()
    with RawWS.open(port) as ws:
        t0 = time.monotonic()
        ev = ws.recv_event(timeout=4 + slack(2), what="a ping after 1.5s of silence")
        took = time.monotonic() - t0
        eq(ev.kind, "ping", "first frame after silence")
        expect(1.2 <= took <= 3.5 + slack(2), "a ping between 1.2s and 3.5s", "after %.2fs" % took)


# ---------------------------------------------------------------------------
# Messages that take too long (a floor on the average rate after a grace)

ZERO_MASK = b"\0\0\0\0"  # masked bytes equal the plain ones


def trickle_until_closed(ws, every, limit):
    """Announces a 1 MiB binary frame and sends its payload one byte every
    `every` seconds, answering every ping, until the server's close frame;
    returns (its code, seconds since the first byte, bytes sent)."""
    ws.send_raw(build_frame(OP_BINARY, b"", length=1 << 20, key=ZERO_MASK) + b"x")
    t0 = time.monotonic()
    sent, pings = 1, 0
    next_byte = t0 + every
    while True:
        now = time.monotonic()
        if now - t0 > limit:
            fail("expected the server to cut off a message trickled at 1 byte per %.1fs within %.0fs; "
                 "still open with %d bytes sent and %d pings answered" % (every, limit, sent, pings))
        if now >= next_byte:
            if not ws.try_send(b"x"):
                fail("the connection ended without a close frame after %.1fs" % (now - t0))
            sent += 1
            next_byte += every
        try:
            ev = ws.recv_event(timeout=max(0.0, min(next_byte, t0 + limit) - time.monotonic()),
                               what="a ping or the close")
        except EOF:
            fail("the connection ended without a close frame after %.1fs" % (time.monotonic() - t0))
        except AssertionError as e:
            if "timed out" in str(e):
                continue
            raise
        if ev.kind == "ping":
            pings += 1
            ws.try_send(build_frame(OP_PONG, ev.data))
            continue
        eq(ev.kind, "close", "frame from the server while a message trickles in")
        took = time.monotonic() - t0
        ws.try_send(build_frame(OP_CLOSE, close_payload(ev.code)))
        ws.expect_eof()
        return ev.code, took, sent, pings


def t_slow_message_closed(port, grace_s):
    """1 byte every 1.5 s, pings answered (idle timeout 1 s): the message
    is cut off with 1008 once its grace has passed."""
    with RawWS.open(port) as ws:
        code, took, sent, pings = trickle_until_closed(ws, 1.5, T(10))
        print("     closed %d after %.2fs, %d bytes, %d pings answered" % (code, took, sent, pings), flush=True)
        eq(code, 1008, "close code for a message slower than the floor")
        expect(pings >= 1, "pings answered while trickling (idle timeout 1s)", "%d pings" % pings)
        expect(grace_s * 0.8 <= took <= grace_s + LATE, "closed between %.1fs and %.1fs"
               % (grace_s * 0.8, grace_s + LATE), "closed after %.2fs" % took)


def t_slow_message_default(port):
    """With the default settings, a 1 MiB frame trickled at 1 byte per 2 s,
    pings answered, is cut off within 60 s."""
    with RawWS.open(port) as ws:
        code, took, sent, pings = trickle_until_closed(ws, 2.0, 60)
        print("     defaults: closed %d after %.1fs, %d bytes sent" % (code, took, sent), flush=True)
        eq(code, 1008, "close code for a trickled message under the defaults")


def t_steady_message_delivered(port, grace_s):
    """A message that spans receives and lasts past its grace is delivered
    when it keeps to the floor on average: 24 KiB in 1 KiB pieces every
    0.1 s, and a fragmented one that stalls between its fragments, pings
    answered, for longer than the grace (its first 6 KiB bought the time)
    before its last 2 KiB."""
    with RawWS.open(port) as ws:
        payload = bytes(range(256)) * 96
        frame = build_frame(OP_BINARY, payload)
        t0 = time.monotonic()
        ws.send_raw(frame, chops=[1024] * (len(frame) // 1024 + 1), pause=0.1)
        ws.expect_echo(OP_BINARY, payload, timeout=T(5))
        expect(time.monotonic() - t0 > grace_s, "the steady message to last past the grace",
               "%.2fs" % (time.monotonic() - t0))
        payload = bytes(reversed(range(256))) * 32
        ws.send_raw(build_frame(OP_BINARY, payload[:6 * 1024], fin=False))
        deadline = time.monotonic() + grace_s + 1.0
        while time.monotonic() < deadline:
            try:
                ev = ws.recv_event(timeout=max(0.0, deadline - time.monotonic()), what="a ping")
            except AssertionError as e:
                if "timed out" in str(e):
                    break
                raise
            eq(ev.kind, "ping", "frame from the server during the stall")
            ws.send_raw(build_frame(OP_PONG, ev.data))
        ws.send_raw(build_frame(OP_CONT, payload[6 * 1024:]))
        # The stall's last ping may cross the final fragment on the wire.
        ev = ws.recv_event(timeout=T(5), what="the echo")
        if ev.kind == "ping":
            ws.send_raw(build_frame(OP_PONG, ev.data))
            ev = ws.recv_event(timeout=T(5), what="the echo")
        eq((ev.kind, ev.data == payload), ("binary", True), "the message echoed whole")
        ws.close_handshake()


def main():
    r = Runner("timeouts")
    with r.server(["--handshake-timeout", "1s"], "handshake-1s") as srv:
        r.case("partial-request-dropped", t_partial_request, srv.port)
        r.case("silent-connection-dropped", t_silent_connect, srv.port)
        r.case("slowloris-20-dropped", t_slowloris, srv.port)
        r.case("http-served-under-short-handshake-timeout", t_handshake_timeout_not_for_http_between, srv.port)
    with r.server(["--idle-timeout", "1s"], "idle-1s") as srv:
        r.case("idle-ping-then-drop", t_idle_ping_then_drop, srv.port)
        r.case("idle-pong-keeps", t_idle_pong_keeps, srv.port)
        r.case("idle-data-keeps", t_idle_data_resets, srv.port)
        r.case("idle-websockets-client-stays", t_library_stays, srv.port)
    with r.server(["--close-timeout", "1s"], "close-1s") as srv:
        r.case("close-timeout-closes-tcp", t_close_timeout, srv.port)
        r.case("close-reply-closes-at-once", t_close_timeout_client_close_not_affected, srv.port)
    r.case("close-timeout-on-shutdown", t_close_timeout_on_shutdown)
    with r.server(["--idle-timeout", "1.5", "--handshake-timeout", "500ms"], "duration-forms") as srv:
        r.case("duration-forms-accepted", t_duration_forms, srv.port)
    with r.server(["--idle-timeout", "1s", "--message-grace", "2s", "--min-message-rate", "1024"],
                  "slow-message") as srv:
        r.case("slow-message-closed-1008", t_slow_message_closed, srv.port, 2.0)
        r.case("steady-slow-message-delivered", t_steady_message_delivered, srv.port, 2.0)
    with r.server([], "defaults") as srv:
        r.case("slow-message-closed-by-default", t_slow_message_default, srv.port, timeout=75)
    r.finish()


if __name__ == "__main__":
    main()
