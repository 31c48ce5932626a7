"""Memory per idle connection: a server with its default receive buffers
holds thousands of upgraded, silent WebSocket connections, and its anonymous
resident memory (RssAnon: the shared libraries' pages are not the
connections' cost) grows by no more than IDLE_BYTES_PER_CONN each.

Each request carries a 2 KB cookie, as browsers' requests often do.  The
bound has a wide margin over what a connection costs (its record, about 220
bytes with the allocator's share, and a few receive buffers shared by all)
but fails if every handshake leaves the receive buffer pages it passed
through resident, as a ring that cycles through all of its buffers does
(the request's 2 KB more per connection).

Only 127.0.0.1 is targeted; the server is started here and stopped by PID."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import ASAN, Runner, Server, expect, fail, upgrade_request  # noqa: E402

IDLE_CONNS = 4000
WARM_CONNS = 256
# AddressSanitizer's redzones and quarantine make any bound meaningless.
IDLE_BYTES_PER_CONN = 800
COOKIE = "c" * 2000


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    fail("no RssAnon in /proc/%d/status" % pid)


def open_idle(port, n, held):
    """Opens n connections, upgrades them all, and keeps them in `held`."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(upgrade_request(port, add=[("Cookie", COOKIE)])[0])
        socks.append(s)
    held.extend(socks)
    for s in socks:
        head = b""
        while b"\r\n\r\n" not in head:
            got = s.recv(4096)
            if not got:
                fail("connection closed during the handshake: %r" % head)
            head += got
        expect(head.startswith(b"HTTP/1.1 101"), "101 Switching Protocols", head[:40])


def rss_settled(pid):
    """RssAnon once two readings 100 ms apart agree (the last handshakes'
    completions may still be handled when the client has its answers)."""
    last = rss_anon_kib(pid)
    for _ in range(20):
        time.sleep(0.1)
        now = rss_anon_kib(pid)
        if now == last:
            return now
        last = now
    return last


def t_idle_bytes(srv, held):
    open_idle(srv.port, WARM_CONNS, held)
    base = rss_settled(srv.pid)
    t0 = time.monotonic()
    open_idle(srv.port, IDLE_CONNS, held)
    took = time.monotonic() - t0
    grown = rss_settled(srv.pid) - base
    per_conn = grown * 1024 / IDLE_CONNS
    print("     %d idle connections opened in %.2fs: RssAnon +%d KiB, %.0f bytes per connection "
          "(bound %s)" % (IDLE_CONNS, took, grown, per_conn,
                          "none under AddressSanitizer" if ASAN else IDLE_BYTES_PER_CONN), flush=True)
    if not ASAN:
        expect(per_conn <= IDLE_BYTES_PER_CONN,
               "at most %d bytes per idle connection" % IDLE_BYTES_PER_CONN, "%.0f" % per_conn)


def main():
    r = Runner("density", watchdog=float(os.environ.get("RINGWS_TEST_WATCHDOG", 120)))
    srv = Server(["--workers", 2], "density")
    held = []
    try:
        srv.start()
    except AssertionError as e:
        r.record("server start", False, str(e))
        r.finish()
    r.current_server = srv
    try:
        r.case("idle-connections-%d-rss-per-conn" % IDLE_CONNS, t_idle_bytes, srv, held, timeout=60)
    finally:
        for s in held:
            s.close()
    r.current_server = None
    r.case("sigterm-exit-0", lambda: expect(not srv.stop(), "exit status 0 on SIGTERM", "problems"),
           timeout=20)
    r.finish()


if __name__ == "__main__":
    main()
