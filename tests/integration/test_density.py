"""Memory per idle connection: a server with its default receive buffers
holds thousands of upgraded, silent WebSocket connections; once they are
quiet its receive rings hold no resident page (the loop gives the pages of
its buffers back within about a second of the traffic falling), and its
anonymous resident memory (RssAnon: the shared libraries' pages are not the
connections' cost) has grown by no more than IDLE_BYTES_PER_CONN each.

Each request carries a 2 KB cookie, as browsers' requests often do, so a
burst of handshakes grows the rings (more buffers are posted when a receive
finds none, as far as the load of the machine makes batches large) and
touches their pages.  What each connection keeps is its record (120 bytes,
handed out in order from large slabs) and little else: 122 bytes
measured; the 168-byte record (169-170 measured) fails the bound, so do the
208-byte record in slabs of 256 (230-238) and the 168-byte one in those
slabs (185-199: the allocator's padding of each slab), and so does a server
that leaves its rings' pages resident.

Only 127.0.0.1 is targeted; the server is started here and stopped by PID."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import ASAN, Runner, Server, expect, fail, proc_status_kib, upgrade_request  # noqa: E402

IDLE_CONNS = 4000
WARM_CONNS = 256
# AddressSanitizer's redzones and quarantine make any bound meaningless.
IDLE_BYTES_PER_CONN = 140
# The default receive ring of a worker: 1024 buffers of 16 KiB, one
# anonymous mapping (the kernel may merge two workers' into one).
RING_BYTES = 1024 * 16384
WORKERS = 2
COOKIE = "c" * 2000


def ring_rss_kib(pid):
    """Resident KiB of the receive rings: the anonymous mappings whose size
    is a multiple of RING_BYTES, which must add up to one ring per worker
    (or the rings were not found and the figure would be meaningless)."""
    size = rss = 0
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                anon = len(head) == 5
                cur = (hi - lo) if anon and (hi - lo) % RING_BYTES == 0 else None
                if cur:
                    size += cur
            elif head[0] == "Rss:" and cur:
                rss += int(head[1])
    expect(size == WORKERS * RING_BYTES, "one %d-byte ring mapping per worker" % RING_BYTES,
           "%d bytes of such mappings" % size)
    return rss


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
    last = proc_status_kib(pid, "RssAnon")
    for _ in range(20):
        time.sleep(0.1)
        now = proc_status_kib(pid, "RssAnon")
        if now == last:
            return now
        last = now
    return last


def rings_quiet(pid):
    """RssAnon once the receive rings hold no resident page; fails when
    they still do after 5 s.  Not under AddressSanitizer, whose shadow
    mappings look like rings (and which bounds nothing here)."""
    if ASAN:
        return rss_settled(pid)
    deadline = time.monotonic() + 5
    while ring_rss_kib(pid) > 0:
        if time.monotonic() > deadline:
            fail("the receive rings keep %d KiB resident 5 s after the last receive"
                 % ring_rss_kib(pid))
        time.sleep(0.1)
    return rss_settled(pid)


def t_idle_bytes(srv, held):
    open_idle(srv.port, WARM_CONNS, held)
    base = rings_quiet(srv.pid)
    t0 = time.monotonic()
    open_idle(srv.port, IDLE_CONNS, held)
    took = time.monotonic() - t0
    grown = rings_quiet(srv.pid) - base
    per_conn = grown * 1024 / IDLE_CONNS
    print("     %d idle connections opened in %.2fs: RssAnon +%d KiB once the rings are quiet, "
          "%.0f bytes per connection (bound %s)"
          % (IDLE_CONNS, took, grown, per_conn,
             "none under AddressSanitizer" if ASAN else IDLE_BYTES_PER_CONN), flush=True)
    if not ASAN:
        expect(per_conn <= IDLE_BYTES_PER_CONN,
               "at most %d bytes per idle connection" % IDLE_BYTES_PER_CONN, "%.0f" % per_conn)


def main():
    r = Runner("density", watchdog=float(os.environ.get("RINGWS_TEST_WATCHDOG", 120)))
    srv = Server(["--workers", WORKERS], "density")
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
