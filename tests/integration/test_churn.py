"""Connection churn: thousands of short connections, concurrently, each
ended a different way: a clean close handshake, an abrupt reset (SO_LINGER
0), a half-close, a reset or a FIN in the middle of a frame, a partial
handshake abandoned, a connect closed at once, a reset while the echo is
being sent, a close frame followed by a reset, and the websockets library.

Afterwards the server must be back where it started: no TCP socket on its
port still owned by it, the same number of open descriptors as after the
warm-up (connections are direct descriptors, so this count stays flat even
during the churn), RSS within CHURN_RSS_TOLERANCE_MIB of the warmed-up
baseline, /healthz answering, and on SIGTERM an exit status 0 with nothing
from a sanitizer on stderr (under AddressSanitizer that includes
LeakSanitizer's report at exit: no leak at all).

Only 127.0.0.1 is targeted; the server is started here and stopped by PID."""

import asyncio
import concurrent.futures as cf
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (ASAN, EOF, OP_BINARY, OP_CLOSE, OP_TEXT, SLOW, RawWS,  # noqa: E402
                         SERVE_LIMIT, Runner, Server, T, assert_served, build_frame, close_payload, connect,
                         eq, expect, fail, proc_status_kib, upgrade_request, ws_connect)

MIB = 1 << 20
CYCLES = int(6000 / SLOW)        # 6000 on a normal build, 2000 under ASan
WARM_CYCLES = max(200, CYCLES // 10)
CONCURRENCY = 32
CLOSE_TIMEOUT_S = 1.0


# After the churn RSS may exceed the baseline by allocator caches and dirty
# pages not yet returned; under AddressSanitizer also by what its
# quarantine (filled at warm-up) and redzones hold.
CHURN_RSS_TOLERANCE_MIB = 8 + (256 if ASAN else 0)
WARM_ROUNDS = 5 if ASAN else 1


# ---------------------------------------------------------------------------
# The server seen from outside


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def server_sockets(port):
    """TCP sockets on the server's port still owned by a process (inode not
    0, which includes direct descriptors), listeners left out, by state."""
    states = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].rsplit(":", 1)[1], 16) == port and p[3] != "0A" and p[9] != "0":
                states[p[3]] = states.get(p[3], 0) + 1
    return states


def rst(sock):
    """Closes with a reset instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def opened_echo(port, i):
    ws = RawWS.open(port)
    msg = "churn %d" % i
    ws.send_frame(OP_TEXT, msg)
    ws.expect_echo(OP_TEXT, msg)
    return ws


def c_clean(port, i):
    ws = opened_echo(port, i)
    try:
        ws.close_handshake(1000)
    finally:
        ws.close()


def c_reset(port, i):
    rst(opened_echo(port, i).sock)


def c_half_close(port, i):
    # The client shuts down its side without a close frame: the server must
    # end the connection (a close frame first is allowed, then EOF).
    ws = opened_echo(port, i)
    try:
        ws.sock.shutdown(socket.SHUT_WR)
        try:
            while True:
                ev = ws.recv_event(T(3), "the server to close after our half-close")
                if ev.kind != "close":
                    fail("expected nothing but a close after a half-close, got %r" % ev)
        except EOF:
            pass
    finally:
        ws.close()


def c_mid_frame_reset(port, i):
    ws = opened_echo(port, i)
    ws.send_raw(build_frame(OP_BINARY, os.urandom(1000))[:300])
    rst(ws.sock)


def c_mid_frame_fin(port, i):
    ws = opened_echo(port, i)
    ws.send_raw(build_frame(OP_BINARY, os.urandom(1000))[:300])
    ws.close()


def c_mid_handshake(port, i):
    s = connect(port)
    request, _ = upgrade_request(port)
    s.sendall(request[:40 + i % 60])
    if i % 2:
        rst(s)
    else:
        s.close()


def c_connect_close(port, i):
    s = connect(port)
    if i % 2:
        rst(s)
    else:
        s.close()


def c_reset_while_echoing(port, i):
    # The server is still sending the 256 KiB echo when the reset comes.
    ws = opened_echo(port, i)
    ws.send_raw(build_frame(OP_BINARY, b"r" * (256 * 1024)))
    rst(ws.sock)


def c_close_then_reset(port, i):
    ws = opened_echo(port, i)
    ws.send_raw(build_frame(OP_CLOSE, close_payload(1000)))
    rst(ws.sock)


def c_library(port, i):
    async def go():
        async with ws_connect(port) as ws:
            await ws.send("lib %d" % i)
            eq(await asyncio.wait_for(ws.recv(), T(5)), "lib %d" % i, "library echo")
    asyncio.run(asyncio.wait_for(go(), T(10)))


MODES = [
    ("clean-close", c_clean),
    ("reset", c_reset),
    ("half-close", c_half_close),
    ("mid-frame-reset", c_mid_frame_reset),
    ("mid-frame-fin", c_mid_frame_fin),
    ("mid-handshake", c_mid_handshake),
    ("connect-close", c_connect_close),
    ("reset-while-echoing", c_reset_while_echoing),
    ("close-then-reset", c_close_then_reset),
    ("library-client", c_library),
]


def churn(port, n, offset=0):
    """n cycles on CONCURRENCY threads, the modes in turn; returns
    ({mode: count}, [failure descriptions])."""
    counts, failures = {}, []
    lock = threading.Lock()

    def one(i):
        name, fn = MODES[i % len(MODES)]
        try:
            fn(port, i)
            err = None
        except Exception as e:  # noqa: BLE001 - every failure is reported
            err = "%s #%d: %s: %s" % (name, i, type(e).__name__, e)
        with lock:
            counts[name] = counts.get(name, 0) + 1
            if err:
                failures.append(err)

    with cf.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(one, range(offset, offset + n)))
    return counts, failures


def settle(srv, want_fds, limit):
    """Waits until the server owns no connection socket and has want_fds
    descriptors open; returns (sockets by state, fds) as last seen."""
    deadline = time.monotonic() + limit
    while True:
        socks, fds = server_sockets(srv.port), fd_count(srv.pid)
        if (not socks and (want_fds is None or fds == want_fds)) or time.monotonic() >= deadline:
            return socks, fds
        time.sleep(0.05)


class State:
    base_rss = base_fds = None
    served_worst = 0.0


def t_warm_up(srv, st):
    payload = os.urandom(64 * 1024)
    frame = build_frame(OP_BINARY, payload)
    for _ in range(WARM_ROUNDS):
        for _ in range(16):
            with RawWS.open(srv.port) as ws:
                ws.send_raw(frame * 32, timeout=T(10))
                for _ in range(32):
                    ws.expect_echo(OP_BINARY, payload, timeout=T(10))
                ws.close_handshake()
    counts, failures = churn(srv.port, WARM_CYCLES)
    expect(not failures, "every warm-up cycle as expected", "%d failed, e.g. %s" % (len(failures), failures[:3]))
    socks, fds = settle(srv, None, CLOSE_TIMEOUT_S + T(5))
    expect(not socks, "no connection left on the server after the warm-up", "sockets by state %s" % socks)
    assert_served(srv.port, "after the warm-up", T(5))
    socks, fds = settle(srv, None, CLOSE_TIMEOUT_S + T(5))
    st.base_fds = fds
    st.base_rss = proc_status_kib(srv.pid, "VmRSS")
    print("     baseline after %d warm-up cycles: %d descriptors, RSS %.1f MiB"
          % (WARM_CYCLES, st.base_fds, st.base_rss / 1024), flush=True)


def t_churn(srv, st):
    stop = threading.Event()
    samples = {"fds": set(), "rss": 0, "served": [], "errors": []}

    def observe():
        last_probe = 0.0
        while not stop.wait(0.05):
            try:
                samples["fds"].add(fd_count(srv.pid))
                samples["rss"] = max(samples["rss"], proc_status_kib(srv.pid, "VmRSS"))
            except OSError:
                return
            if time.monotonic() - last_probe >= 0.5:
                last_probe = time.monotonic()
                try:
                    samples["served"].append(assert_served(srv.port, "during the churn"))
                except AssertionError as e:
                    samples["errors"].append(str(e))

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        counts, failures = churn(srv.port, CYCLES, offset=WARM_CYCLES)
    finally:
        stop.set()
        watcher.join(T(10))
    took = time.monotonic() - t0
    print("     %d cycles in %.1fs (%d at a time): %s" % (CYCLES, took, CONCURRENCY,
          ", ".join("%s %d" % kv for kv in sorted(counts.items()))), flush=True)
    print("     during the churn: descriptors %s, RSS peak %.1f MiB, %d probes served (slowest %.2fs)"
          % (sorted(samples["fds"]), samples["rss"] / 1024, len(samples["served"]),
             max(samples["served"] or [0])), flush=True)
    expect(not failures, "every cycle to behave as its mode expects",
           "%d of %d failed, e.g. %s" % (len(failures), CYCLES, "; ".join(failures[:3])))
    expect(not samples["errors"], "a well-behaved client served within %.1fs all through the churn"
           % SERVE_LIMIT, "%d probes failed, e.g. %s" % (len(samples["errors"]), samples["errors"][:2]))
    expect(samples["fds"] <= {st.base_fds}, "the descriptor count to stay at %d during the churn" % st.base_fds,
           "counts %s" % sorted(samples["fds"]))


def t_back_to_baseline(srv, st):
    socks, fds = settle(srv, st.base_fds, CLOSE_TIMEOUT_S + T(5))
    rss = proc_status_kib(srv.pid, "VmRSS")
    print("     after the churn: %d descriptors (baseline %d), RSS %.1f MiB (baseline %.1f, %+.1f MiB, "
          "tolerance %d MiB)" % (fds, st.base_fds, rss / 1024, st.base_rss / 1024,
                                  (rss - st.base_rss) / 1024, CHURN_RSS_TOLERANCE_MIB), flush=True)
    expect(not socks, "no TCP connection on the server's port still owned by the server",
           "sockets by state (hex as in /proc/net/tcp) %s" % socks)
    eq(fds, st.base_fds, "open descriptors of the server after the churn")
    expect(rss <= st.base_rss + CHURN_RSS_TOLERANCE_MIB * 1024,
           "RSS within %d MiB of the %.1f MiB baseline" % (CHURN_RSS_TOLERANCE_MIB, st.base_rss / 1024),
           "%.1f MiB" % (rss / 1024))
    took = assert_served(srv.port, "after the churn")
    print("     /healthz and echo served in %.2fs after the churn" % took, flush=True)


def t_sigterm(srv):
    t0 = time.monotonic()
    problems = srv.stop()
    expect(not problems, "exit status 0 on SIGTERM and no sanitizer report on stderr", "; ".join(problems))
    print("     exited 0 %.2fs after SIGTERM; stderr has no sanitizer report" % (time.monotonic() - t0),
          flush=True)


def main():
    r = Runner("churn", watchdog=float(os.environ.get("RINGWS_TEST_WATCHDOG", 200 * SLOW)))
    srv = Server(["--workers", 2, "--handshake-timeout", "2s", "--close-timeout", "%gs" % CLOSE_TIMEOUT_S,
                  "--idle-timeout", "10s"], "churn")
    try:
        srv.start()
    except AssertionError as e:
        r.record("server start", False, str(e))
        r.finish()
    r.current_server = srv
    st = State()
    ok = r.case("warm-up-%d-cycles-baseline" % WARM_CYCLES, t_warm_up, srv, st, timeout=60)
    if ok:
        r.case("churn-%d-cycles-%d-modes" % (CYCLES, len(MODES)), t_churn, srv, st, timeout=120)
        r.case("descriptors-rss-back-to-baseline-healthz", t_back_to_baseline, srv, st, timeout=30)
    r.current_server = None
    r.case("sigterm-exit-0-no-sanitizer-report", t_sigterm, srv, timeout=20)
    r.finish()


if __name__ == "__main__":
    main()
