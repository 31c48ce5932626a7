"""Resource-exhaustion attacks from the network, each against a server of its
own: slow and silent handshakes; peers that never read what they asked for
(64 KiB echoes, pings, one-byte echoes, pipelined HTTP requests); tiny
fragment floods and max-message; oversized request heads; partial requests
and messages held open, one by one and against the worker's budget for
them; subscriptions to as many topics as allowed; more connections than
allowed; and a storm of invalid frames.

After (and, where the attack holds state, during) each attack two things
are checked: a fresh well-behaved client (the websockets library echoing at
/echo, then GET /healthz) is served within SERVE_LIMIT, and the server's
resident memory (VmRSS) stayed below a stated bound: the RSS measured after
a warm-up that makes the server as large as ordinary busy traffic does
(receive-buffer rings cycled; under AddressSanitizer its quarantine full),
plus an allowance per attack, larger under AddressSanitizer. Every measured
peak is printed, with a table at the end.

Only 127.0.0.1 is targeted; every server is started here on a port the
kernel picks and stopped by its PID."""

import os
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (ASAN, BIN, EOF, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT,  # noqa: E402
                         SERVE_LIMIT, SLOW, RawWS, Runner, T, assert_served, build_frame,
                         close_payload, connect, eq, expect, fail, short, slack,
                         upgrade_request, metric, proc_status_kib)

MIB = 1 << 20
WORKERS = 2
# Receive buffers are posted as load needs them, up to the default 1024 x
# 16 KiB per worker: a flood with many requests in flight at once brings
# into use buffers that the warm-up did not, and they stay resident.
RECV_RING_MIB = WORKERS * 1024 * 16 * 1024 // MIB

# AddressSanitizer keeps up to 256 MiB of freed memory in quarantine (its
# default quarantine_size_mb) and pads every allocation with redzones: the
# warm-up fills the quarantine, and the allowances grow by a factor.
WARM_ROUNDS = 5 if ASAN else 1
ASAN_FACTOR = 2 if ASAN else 1
ASAN_EXTRA_MIB = 64 if ASAN else 0

RESULTS = []


# ---------------------------------------------------------------------------
# Observing the server from outside


def server_sockets(port):
    """TCP sockets on the server's port that a process still owns (an inode
    other than 0; direct descriptors included, which /proc/PID/fd does not
    list), by state, listeners left out."""
    owned = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].rsplit(":", 1)[1], 16) == port and p[3] != "0A" and p[9] != "0":
                owned += 1
    return owned


class RssWatch:
    """Samples the server's VmRSS every 20 ms from the baseline (taken when
    entered) until check() compares the peak with the attack's bound."""

    def __init__(self, srv, name, allowance_mib):
        self.srv, self.name = srv, name
        self.allowance = int(allowance_mib * ASAN_FACTOR + ASAN_EXTRA_MIB)
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.base = self.peak = proc_status_kib(self.srv.pid, "VmRSS")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, proc_status_kib(self.srv.pid, "VmRSS"))
            except (OSError, AssertionError):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        return False

    def measure(self):
        """Prints (and keeps for the table) the figures of this attack."""
        self.bound = self.base + self.allowance * 1024
        if not self.srv.alive():
            line = "rss %-24s baseline %6.1f MiB  peak %6.1f MiB (+%5.1f)  then the server died" % (
                self.name, self.base / 1024, self.peak / 1024, (self.peak - self.base) / 1024)
        else:
            after = proc_status_kib(self.srv.pid, "VmRSS")
            self.peak = max(self.peak, after)
            line = ("rss %-24s baseline %6.1f MiB  peak %6.1f MiB (+%5.1f)  after %6.1f MiB  bound %6.1f MiB%s"
                    % (self.name, self.base / 1024, self.peak / 1024, (self.peak - self.base) / 1024,
                       after / 1024, self.bound / 1024, "  OVER" if self.peak > self.bound else ""))
        print("     " + line, flush=True)
        RESULTS.append(line)

    def check(self):
        """Fails unless the peak stayed within the bound (after measure)."""
        expect(self.srv.alive(), "the server running through %s" % self.name,
               "it exited with status %s" % self.srv.proc.poll())
        expect(self.peak <= self.bound, "server RSS at most %.1f MiB during %s (baseline %.1f MiB + %d MiB)"
               % (self.bound / 1024, self.name, self.base / 1024, self.allowance),
               "a peak of %.1f MiB (+%.1f MiB)" % (self.peak / 1024, (self.peak - self.base) / 1024))


class Background:
    """Runs fn(*args) in a thread; result() re-raises what it raised."""

    def __init__(self, fn, *args):
        self.value, self.error = None, None
        self._t = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._t.start()

    def _run(self, fn, args):
        try:
            self.value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to result()
            self.error = e

    def result(self, timeout=None):
        self._t.join(timeout if timeout is not None else T(20))
        if self._t.is_alive():
            fail("a background check did not finish")
        if self.error is not None:
            raise self.error
        return self.value


def warm_up(port):
    """Echo traffic through 16 connections (so both workers' receive-buffer
    rings have the buffers of that load posted and resident, and under AddressSanitizer its
    quarantine of freed memory is full), an HTTP request and one library
    client: the baseline is then a server that has been busy, and what an
    attack adds shows on top of it."""
    payload = os.urandom(64 * 1024)
    frame = build_frame(OP_BINARY, payload)
    for _ in range(WARM_ROUNDS):
        for _ in range(16):
            with RawWS.open(port) as ws:
                ws.send_raw(frame * 32, timeout=T(10))
                for _ in range(32):
                    ws.expect_echo(OP_BINARY, payload, timeout=T(10))
                ws.close_handshake()
    assert_served(port, "at warm-up", T(5))


def open_many(port, n):
    """n connections, non-blocking once open; the time each connect returned."""
    socks, opened = [], []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            s.setblocking(False)
            socks.append(s)
            opened.append(time.monotonic())
    except BaseException:
        close_all(socks)
        raise
    return socks, opened


def close_all(socks, rst=False):
    for s in socks:
        try:
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass


def reap(ep, socks, index, closed, got, t_of):
    """Handles readiness of the watched sockets: EOF or reset marks one closed
    (seconds since t_of[i]) and stops watching it; bytes are kept in got."""
    for fd, _ in ep:
        i = index[fd]
        if i in closed:
            continue
        try:
            data = socks[i].recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if data:
            got[i] = got.get(i, b"") + data
            continue
        closed[i] = time.monotonic() - t_of[i]


def wait_all_closed(socks, opened, limit, closed=None, got=None):
    """Waits until the server closed every socket or `limit` seconds after
    the last one opened; returns {index: seconds after its connect}."""
    closed = {} if closed is None else closed
    got = {} if got is None else got
    ep = select.epoll()
    index = {}
    try:
        for i, s in enumerate(socks):
            if i not in closed:
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                index[s.fileno()] = i
        deadline = max(opened) + limit
        while len(closed) < len(socks):
            before = set(closed)
            reap(ep.poll(min(0.2, max(0.0, deadline - time.monotonic()))), socks, index, closed, got, opened)
            for i in set(closed) - before:
                ep.unregister(socks[i].fileno())
            if time.monotonic() >= deadline:
                break
    finally:
        ep.close()
    return closed


def http_status(data):
    if not data.startswith(b"HTTP/1.1 ") or len(data) < 12:
        return None
    try:
        return int(data[9:12])
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Slow and silent handshakes (server: --handshake-timeout 1s / 2s)


def t_slowloris(srv, n=500, handshake_s=1.0):
    """n connections each drip one header byte every 300 ms: the handshake
    deadline is not renewed by bytes, so all are dropped about 1 s after
    their connect, while a well-behaved client is served."""
    warm_up(srv.port)
    request = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Drip: " + b"d" * 4000
    early, late = 0.8 * handshake_s, 3.0 * handshake_s + slack(2)
    with RssWatch(srv, "slowloris-%d" % n, 6) as rw:
        socks, opened = open_many(srv.port, n)
        closed, got = {}, {}
        try:
            check = Background(assert_served, srv.port, "during slowloris")
            ep = select.epoll()
            index = {}
            for i, s in enumerate(socks):
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                index[s.fileno()] = i
            pos, next_drip = 0, time.monotonic()
            deadline = max(opened) + late + 1
            while len(closed) < n and time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_drip:
                    for i, s in enumerate(socks):
                        if i in closed:
                            continue
                        try:
                            s.send(request[pos:pos + 1])
                        except BlockingIOError:
                            pass
                        except (BrokenPipeError, ConnectionResetError):
                            closed[i] = now - opened[i]
                            ep.unregister(s.fileno())
                    pos += 1
                    next_drip += 0.3
                before = set(closed)
                reap(ep.poll(max(0.0, min(next_drip, deadline) - time.monotonic())), socks, index, closed, got,
                     opened)
                for i in set(closed) - before:
                    ep.unregister(socks[i].fileno())
            ep.close()
            took = check.result()
        finally:
            close_all(socks)
    assert_served(srv.port, "after slowloris")
    rw.measure()
    still = n - len(closed)
    expect(still == 0, "all %d dripping connections dropped within %.1fs of their connect" % (n, late),
           "%d still open after %.1fs (%d bytes dripped each)" % (still, late + 1, pos))
    expect(min(closed.values()) >= early and max(closed.values()) <= late,
           "dropped between %.1fs and %.1fs after connect" % (early, late),
           "dropped between %.2fs and %.2fs" % (min(closed.values()), max(closed.values())))
    expect(not got, "no bytes to a request that never completed",
           "%d connections got bytes, e.g. %s" % (len(got), short(next(iter(got.values()), b""))))
    print("     slowloris: %d connections dropped %.2f-%.2fs after connect; client served in %.2fs"
          % (n, min(closed.values()), max(closed.values()), took), flush=True)
    rw.check()


def t_half_open(srv, n=1000, handshake_s=2.0):
    """n connections that send nothing are held until the handshake timeout
    (at little cost each) and then all dropped; others are served
    meanwhile."""
    warm_up(srv.port)
    early, late = 0.8 * handshake_s, 2.0 * handshake_s + slack(2)
    with RssWatch(srv, "half-open-%d" % n, 4) as rw:
        socks, opened = open_many(srv.port, n)
        try:
            took = assert_served(srv.port, "with %d silent connections open" % n)
            held = server_sockets(srv.port)
            closed = wait_all_closed(socks, opened, late + 1)
        finally:
            close_all(socks)
    assert_served(srv.port, "after the silent connections")
    rw.measure()
    expect(held >= n, "the server holding all %d silent connections before the timeout" % n,
           "%d server-side sockets" % held)
    expect(len(closed) == n, "all %d silent connections dropped within %.1fs" % (n, late),
           "%d still open" % (n - len(closed)))
    expect(min(closed.values()) >= early and max(closed.values()) <= late,
           "dropped between %.1fs and %.1fs after connect" % (early, late),
           "dropped between %.2fs and %.2fs" % (min(closed.values()), max(closed.values())))
    print("     half-open: %d held (+%.1f KiB RSS each at most), dropped %.2f-%.2fs; client served in %.2fs"
          % (n, (rw.peak - rw.base) / n, min(closed.values()), max(closed.values()), took), flush=True)
    rw.check()


# ---------------------------------------------------------------------------
# Readers that do not read (server: --idle-timeout 2s --close-timeout 1s)


def drain_events(ws, limit):
    """Reads what the server sent until its close frame or EOF (a frame cut
    off by a reset is ignored): (messages read, close code or None)."""
    messages, code = 0, None
    try:
        while True:
            ev = ws.recv_event(limit, "the rest of the stream")
            if ev.kind == "close":
                code = ev.code
                break
            messages += 1
    except EOF:
        pass
    return messages, code


def t_stalled_readers(srv, n=4, idle_s=2.0, close_s=1.0):
    """n clients flood 64 KiB messages at the echo and never read: the server
    stops reading them (back-pressure) or closes them with 1008 once the
    4 MiB send-queue cap is reached; either way memory stays bounded, and
    each connection ends (1008 close, or dropped by the idle timeout)."""
    warm_up(srv.port)
    payload = os.urandom(65536)
    frame = build_frame(OP_BINARY, payload)
    cap = 128 * MIB  # per connection: more than any buffering could absorb
    with RssWatch(srv, "stalled-readers-%d" % n, 8 + 6 * n) as rw:
        wss = [RawWS.open(srv.port) for _ in range(n)]
        try:
            for ws in wss:
                ws.sock.setblocking(False)
            sent = [0] * n
            blocked = [None] * n
            stalled, ended = {}, {}
            deadline = time.monotonic() + T(30)
            while len(stalled) + len(ended) < n and time.monotonic() < deadline:
                progressed = False
                for i, ws in enumerate(wss):
                    if i in stalled or i in ended:
                        continue
                    off = sent[i] % len(frame)
                    try:
                        k = ws.sock.send(frame[off:])
                    except BlockingIOError:
                        now = time.monotonic()
                        if blocked[i] is None:
                            blocked[i] = now
                        elif now - blocked[i] >= 1.0:
                            stalled[i] = now
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        ended[i] = time.monotonic()
                        continue
                    sent[i] += k
                    blocked[i] = None
                    progressed = True
                    if sent[i] >= cap:
                        stalled[i] = time.monotonic()
                if not progressed:
                    time.sleep(0.01)
            expect(len(stalled) + len(ended) == n, "each flood to stall or end within %.0fs" % T(30),
                   "%d still sending" % (n - len(stalled) - len(ended)))
            took = assert_served(srv.port, "with %d stalled readers" % n)
            # Without reading anything, wait for each connection to end: the
            # server must close it (a reset, since our data is unread) within
            # two idle periods plus the close timeout.
            limit = 2 * idle_s + close_s + 1.5 + slack(4)
            poll = select.poll()
            for i, ws in enumerate(wss):
                if i not in ended:
                    poll.register(ws.sock.fileno(), select.POLLRDHUP)
            fd_index = {ws.sock.fileno(): i for i, ws in enumerate(wss)}
            t_end = time.monotonic() + limit
            while len(ended) < n and time.monotonic() < t_end:
                for fd, ev in poll.poll(200):
                    if ev & (select.POLLHUP | select.POLLERR | select.POLLRDHUP):
                        i = fd_index[fd]
                        if i not in ended:
                            ended[i] = time.monotonic()
                            poll.unregister(fd)
            open_ones = [i for i in range(n) if i not in ended]
            outcomes = []
            for i, ws in enumerate(wss):
                if i in open_ones:
                    continue
                ws.sock.setblocking(True)
                messages, code = drain_events(ws, T(5))
                outcomes.append((i, sent[i], messages, code, ended[i] - stalled.get(i, ended[i])))
        finally:
            for ws in wss:
                ws.close()
    assert_served(srv.port, "after the stalled readers")
    rw.measure()
    for i, nsent, messages, code, after in outcomes:
        print("     stalled reader %d: sent %.1f MiB, %d echoes readable, %s %.1fs after the stall"
              % (i, nsent / MIB, messages, "close %s" % code if code else "dropped without a close frame",
                 after), flush=True)
    expect(not open_ones, "every stalled reader closed or dropped within %.1fs" % limit,
           "%d of %d still open" % (len(open_ones), n))
    bad = [(i, code) for i, _, _, code, _ in outcomes if code is not None and code != 1008]
    expect(not bad, "a close frame, where one was sent, with code 1008", "codes %s" % bad)
    print("     client served in %.2fs while stalled" % took, flush=True)
    rw.check()


def t_ping_flood(srv, n=50000):
    """50k pings with 125-byte payloads, no pong read while sending: the
    pongs (6.3 MB) cannot all queue; the server either stops reading
    (the sender is throttled) or closes with 1008. Memory stays bounded;
    the pongs that do come are exact and in order."""
    warm_up(srv.port)
    pad = b"p" * 117
    frames = [build_frame(OP_PING, b"%08d" % i + pad) for i in range(n)]
    data = b"".join(frames)
    with RssWatch(srv, "ping-flood-%dk" % (n // 1000), 24) as rw:
        ws = RawWS.open(srv.port)
        try:
            ws.sock.setblocking(False)
            off, blocked, throttled, reset = 0, None, False, False
            deadline = time.monotonic() + T(20)
            while off < len(data) and time.monotonic() < deadline:
                try:
                    off += ws.sock.send(data[off:off + 65536])
                    blocked = None
                except BlockingIOError:
                    now = time.monotonic()
                    if blocked is None:
                        blocked = now
                    elif now - blocked >= 1.0:
                        throttled = True
                        break
                    time.sleep(0.005)
                except (BrokenPipeError, ConnectionResetError):
                    reset = True
                    break
            sent_unread = off
            took = assert_served(srv.port, "during a ping flood")
            ws.sock.setblocking(True)
            if not reset:
                ws.send_raw(data[off:], timeout=T(20))
                ws.send_frame(OP_TEXT, "after the ping flood")
            pongs, code, echoed = 0, None, False
            try:
                while True:
                    ev = ws.recv_event(T(10), "pong %d" % pongs)
                    if ev.kind == "pong":
                        want = b"%08d" % pongs + pad
                        if ev.data != want:
                            fail("pong %d: expected the payload of ping %d, got %s"
                                 % (pongs, pongs, short(ev.data)))
                        pongs += 1
                    elif ev.kind == "close":
                        code = ev.code
                        ws.try_send(build_frame(OP_CLOSE, close_payload(ev.code)))
                        break
                    elif ev.kind == "text":
                        eq(ev.data, b"after the ping flood", "echo after the ping flood")
                        echoed = True
                        break
                    else:
                        fail("expected pongs, got %r" % ev)
            except EOF:
                pass
            if echoed:
                ws.close_handshake()
        finally:
            ws.close()
    assert_served(srv.port, "after the ping flood")
    rw.measure()
    print("     ping flood: %d pings, %.1f MB sent before %s; %d pongs read, %s; client served in %.2fs"
          % (n, sent_unread / 1e6, "the sender stalled" if throttled else "the end" if not reset else "a reset",
             pongs, "then close %s" % code if code else "then the echo" if echoed else "then EOF", took),
          flush=True)
    expect(echoed or code == 1008, "all pings answered and the echo after them, or a close with 1008",
           "%d pongs, then %s" % (pongs, "close %s" % code if code else "the connection dropped"))
    if echoed:
        eq(pongs, n, "pongs before the echo")
    rw.check()


def flood_unread(sock, data, stall_s=1.0, limit=None):
    """Sends data reading nothing, until all of it is sent, the peer has taken
    nothing for stall_s, or the connection fails: (bytes sent, outcome)."""
    sock.setblocking(False)
    off, blocked = 0, None
    deadline = time.monotonic() + (limit or T(30))
    try:
        while off < len(data) and time.monotonic() < deadline:
            try:
                off += sock.send(data[off:off + MIB])
                blocked = None
            except BlockingIOError:
                now = time.monotonic()
                if blocked is None:
                    blocked = now
                elif now - blocked >= stall_s:
                    return off, "stalled"
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                return off, "reset"
    finally:
        sock.setblocking(True)
    return off, "all sent" if off == len(data) else "still sending"


def finish_and_collect(ws, rest, want, limit):
    """Sends `rest` while reading, then reads until `want` bytes of output
    (on top of what RawWS already holds) came or the server closed; returns
    them. Output that arrives is consumed as we go, so the server's
    back-pressure releases and the rest can be sent."""
    sock = ws.sock
    sock.setblocking(False)
    got = bytearray(ws.buf[ws.pos:])
    view = memoryview(rest)
    deadline = time.monotonic() + limit
    eof = False
    try:
        while (len(view) or len(got) < want) and not eof and time.monotonic() < deadline:
            r, w, _ = select.select([sock], [sock] if len(view) else [], [], 0.2)
            if r:
                try:
                    chunk = sock.recv(MIB)
                except (BlockingIOError, InterruptedError):
                    chunk = None
                except ConnectionResetError:
                    chunk = b""
                if chunk == b"":
                    eof = True
                elif chunk:
                    got += chunk
            if w and len(view):
                try:
                    view = view[sock.send(view[:MIB]):]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    view = view[:0]
    finally:
        sock.setblocking(True)
    return bytes(got)


def answers_then_close(got, unit, n):
    """got must be `unit` n times, or k < n times followed by a close frame:
    returns (k, close code or None, description of anything else)."""
    k = 0
    step = len(unit)
    # Compare in blocks: a million two-byte frames one by one would be slow.
    block = unit * 4096
    while k + 4096 <= n and got[k * step:(k + 4096) * step] == block:
        k += 4096
    while k < n and got[k * step:(k + 1) * step] == unit:
        k += 1
    rest = got[k * step:]
    if k == n and not rest:
        return k, None, None
    if len(rest) >= 4 and rest[0] == 0x88 and 2 <= rest[1] <= 125:
        return k, struct.unpack("!H", rest[2:4])[0], None
    return k, None, "after %d answers: %s" % (k, short(rest))


def t_empty_ping_flood(srv, n=1000000):
    """A million empty pings (6 MB), no pong read while sending. Each pong
    counts 2 bytes against the 4 MiB send-queue cap, but the server keeps
    every queued frame in an allocation of its own: what the peer can make
    it hold must stay within about four times the cap all the same."""
    warm_up(srv.port)
    unit_in = build_frame(OP_PING, b"", key=os.urandom(4))
    pong = b"\x8a\x00"
    with RssWatch(srv, "empty-ping-flood-%dk" % (n // 1000), 16) as rw:
        ws = RawWS.open(srv.port)
        try:
            data = unit_in * n
            sent, outcome = flood_unread(ws.sock, data)
            took = assert_served(srv.port, "during an empty-ping flood")
            got = finish_and_collect(ws, data[sent:] if outcome != "reset" else b"", 2 * n, T(30))
            k, code, odd = answers_then_close(got, pong, n)
            if code is None and odd is None:
                ws.buf, ws.pos = bytearray(), 0
                ws.close_handshake()
        finally:
            ws.close()
    assert_served(srv.port, "after the empty-ping flood")
    rw.measure()
    print("     empty pings: %.1f MB sent before %s, %d pongs exact, %s; client served in %.2fs"
          % (sent / 1e6, outcome, k, "then close %s" % code if code else odd or "all answered", took), flush=True)
    expect(odd is None and (k == n or code == 1008), "%d pongs, or pongs then a close with 1008" % n,
           odd or "%d pongs then close %s" % (k, code))
    rw.check()


def t_tiny_echo_unread(srv, n=3000000):
    """Three million one-byte messages, echoes not read: the same per-frame
    cost as the empty pings, through the application's send path."""
    warm_up(srv.port)
    unit_in = build_frame(OP_BINARY, b"x", key=os.urandom(4))
    echo = b"\x82\x01x"
    with RssWatch(srv, "tiny-echo-unread-%dM" % (n // 1000000), 16) as rw:
        ws = RawWS.open(srv.port)
        try:
            data = unit_in * n
            sent, outcome = flood_unread(ws.sock, data)
            took = assert_served(srv.port, "during a tiny-message flood")
            got = finish_and_collect(ws, data[sent:] if outcome != "reset" else b"", 3 * n, T(30))
            k, code, odd = answers_then_close(got, echo, n)
        finally:
            ws.close()
    assert_served(srv.port, "after the tiny-message flood")
    rw.measure()
    print("     tiny messages: %.1f MB sent before %s, %d echoes exact, %s; client served in %.2fs"
          % (sent / 1e6, outcome, k, "then close %s" % code if code else odd or "all echoed", took), flush=True)
    expect(odd is None and (k == n or code == 1008), "%d echoes, or echoes then a close with 1008" % n,
           odd or "%d echoes then close %s" % (k, code))
    rw.check()


def t_pipelined_unread(srv, n=200000, handshake_s=2.0):
    """200k pipelined GET / (the 13 KB console page each: 2.6 GB of answers
    for 5 MB of requests) on one connection that reads nothing: the server
    stops reading it or closes it, holds a bounded amount, and ends the
    connection once it stops making progress."""
    warm_up(srv.port)
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    with RssWatch(srv, "pipelined-unread-%dk" % (n // 1000), 12) as rw:
        s = connect(srv.port)
        try:
            sent, outcome = flood_unread(s, req * n)
            t_stall = time.monotonic()
            took = assert_served(srv.port, "during a pipelined flood")
            # Still reading nothing: the connection must end within the
            # handshake (keep-alive) timeout and a close timeout.
            poll = select.poll()
            poll.register(s.fileno(), select.POLLRDHUP)
            limit = 2 * handshake_s + 3.0 + slack(4)
            ended = None
            while ended is None and time.monotonic() - t_stall < limit:
                for _, ev in poll.poll(200):
                    if ev & (select.POLLHUP | select.POLLERR | select.POLLRDHUP):
                        ended = time.monotonic() - t_stall
        finally:
            close_all([s], rst=True)
    assert_served(srv.port, "after the pipelined flood")
    rw.measure()
    print("     pipelined: %d requests (%.1f MB) sent before %s; connection %s; client served in %.2fs"
          % (sent // len(req), sent / 1e6, outcome,
             "ended %.1fs later" % ended if ended is not None else "still open", took), flush=True)
    expect(ended is not None, "the unread pipelined connection ended within %.1fs" % limit, "still open")
    rw.check()


def t_pipelined_read(srv, n=5000):
    """5000 pipelined GET / in one write (135 KB) from a client that reads
    as fast as it can: HTTP/1.1 allows it and the server's back-pressure is
    meant for it, so every answer comes, whole and in order (slowed down,
    not cut off); the server stays up and serves others."""
    warm_up(srv.port)
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    with RssWatch(srv, "pipelined-read-%d" % n, 12) as rw:
        s = connect(srv.port)
        got = bytearray()
        try:
            got += finish_and_collect(RawWS(s), req * n, 1 << 62, T(20))
        finally:
            s.close()
    heads = got.count(b"HTTP/1.1 200 OK\r\n")
    print("     pipelined and read: %d requests, %d answers (%d bytes) before EOF" % (n, heads, len(got)), flush=True)
    expect(srv.alive(), "the server still running after %d pipelined requests" % n,
           "it exited with status %s" % srv.proc.poll())
    rw.measure()
    assert_served(srv.port, "after a pipelining client")
    one = len(got) // heads if heads else 0
    expect(heads == n and got == got[:one] * heads, "%d whole, identical answers" % n,
           "%d answers (%d bytes) before the server closed the connection" % (heads, len(got)))
    rw.check()


# ---------------------------------------------------------------------------
# Tiny fragments and max-message (server: --max-message 1048576)


def t_tiny_fragments(srv, n=200000, max_message=MIB):
    """One text message in 200k one-byte fragments is assembled and echoed;
    200k empty fragments do not grow it; a message that crosses max-message
    by fragments, large or tiny, gets 1009."""
    warm_up(srv.port)
    key = os.urandom(4)
    with RssWatch(srv, "tiny-fragments-%dk" % (n // 1000), 10) as rw:
        first = build_frame(OP_TEXT, b"a", fin=False, key=key)
        mid = build_frame(OP_CONT, b"a", fin=False, key=key)
        last = build_frame(OP_CONT, b"a", key=key)
        with RawWS.open(srv.port) as ws:
            t0 = time.monotonic()
            ws.send_raw(first + mid * (n - 2) + last, timeout=T(30))
            ws.expect_echo(OP_TEXT, b"a" * n, timeout=T(20))
            took_small = time.monotonic() - t0
            empty = build_frame(OP_CONT, b"", fin=False, key=key)
            ws.send_raw(build_frame(OP_TEXT, b"x", fin=False, key=key) + empty * n
                        + build_frame(OP_CONT, b"y", key=key), timeout=T(30))
            ws.expect_echo(OP_TEXT, b"xy", timeout=T(20))
            # Exactly max-message in 16 fragments is still accepted.
            chunk = os.urandom(max_message // 16)
            ws.send_raw(b"".join(build_frame(OP_BINARY if i == 0 else OP_CONT, chunk, fin=(i == 15))
                                 for i in range(16)), timeout=T(30))
            ws.expect_echo(OP_BINARY, chunk * 16, timeout=T(20))
            ws.close_handshake()
        # Crossing max-message with 64 KiB fragments.
        with RawWS.open(srv.port) as ws:
            big = b"b" * 65536
            ws.send_raw(b"".join(build_frame(OP_BINARY if i == 0 else OP_CONT, big, fin=False)
                                 for i in range(max_message // 65536 + 1)), timeout=T(30))
            ws.fail_expected(1009, timeout=T(10))
        # Crossing it with one-byte fragments after a large first one.
        with RawWS.open(srv.port) as ws:
            ws.send_raw(build_frame(OP_TEXT, b"c" * (max_message - 100), fin=False)
                        + mid * 200 + last, timeout=T(30))
            ws.fail_expected(1009, timeout=T(10))
        # Announced length alone, nothing sent.
        with RawWS.open(srv.port) as ws:
            ws.send_raw(build_frame(OP_BINARY, b"", length=max_message + 1, len_form=64))
            ws.fail_expected(1009, timeout=T(10))
    assert_served(srv.port, "after the fragment floods")
    rw.measure()
    print("     tiny fragments: %d one-byte fragments echoed as one message in %.2fs" % (n, took_small),
          flush=True)
    rw.check()


# ---------------------------------------------------------------------------
# HTTP floods (server: defaults)


def http_flood(port, request, n, batch, label):
    """n connections (batch at a time) each send `request` and read to EOF;
    returns {status: count} and a sample of anything unexpected."""
    statuses, odd = {}, []
    done = 0
    while done < n:
        k = min(batch, n - done)
        socks = []
        try:
            for _ in range(k):
                s = connect(port, timeout=T(5))
                try:
                    s.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                socks.append(s)
            for s in socks:
                data = b""
                deadline = time.monotonic() + T(5)
                while time.monotonic() < deadline:
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        odd.append("%s: no EOF within %.0fs, have %s" % (label, T(5), short(data)))
                        break
                    except ConnectionResetError:
                        odd.append("%s: reset after %s" % (label, short(data)))
                        break
                    if not chunk:
                        break
                    data += chunk
                st = http_status(data)
                statuses[st] = statuses.get(st, 0) + 1
        finally:
            close_all(socks)
        done += k
    return statuses, odd[:3]


def t_head_floods(srv):
    """Request lines over 4096 bytes get 414, heads over 8192 bytes or 64
    fields 431, a Content-Length over 1 MiB 413, each then closed; a head
    that never ends is answered 431 after 8 KiB and the rest discarded."""
    warm_up(srv.port)
    port = srv.port
    host = b"Host: 127.0.0.1\r\n"
    floods = [
        ("long-uri-414", b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\n" + host + b"\r\n", 600, 200, 414),
        ("big-head-431", b"GET / HTTP/1.1\r\n" + host + b"X-Big: " + b"h" * 9000 + b"\r\n\r\n", 600, 200, 431),
        ("many-fields-431", b"GET / HTTP/1.1\r\n" + host
         + b"".join(b"X-F%d: v\r\n" % i for i in range(70)) + b"\r\n", 600, 200, 431),
        ("body-413", b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 2000000\r\n\r\n", 600, 200, 413),
        ("endless-head-431", b"GET / HTTP/1.1\r\n" + host + b"X-Endless: " + b"e" * (256 * 1024), 100, 100, 431),
    ]
    with RssWatch(srv, "http-floods", 10 + RECV_RING_MIB) as rw:
        check = Background(lambda: [assert_served(port, "during HTTP floods") for _ in range(3)])
        results = []
        for label, request, n, batch, want in floods:
            statuses, odd = http_flood(port, request, n, batch, label)
            results.append((label, n, want, statuses, odd))
        took = check.result()
    assert_served(port, "after HTTP floods")
    rw.measure()
    for label, n, want, statuses, odd in results:
        print("     %s: %d requests, statuses %s" % (label, n, statuses), flush=True)
        expect(statuses == {want: n} and not odd, "%d x status %d, each followed by the server's close"
               % (n, want), "%s %s" % (statuses, "; ".join(odd)))
    print("     clients served in %s s during the floods" % ", ".join("%.2f" % t for t in took), flush=True)
    rw.check()


# ---------------------------------------------------------------------------
# What one connection can make the server hold (server: --max-message 1 MiB)


def t_held_partial_bodies(srv, n=100):
    """n connections each send a request head with Content-Length: 1 MiB and
    all of the body but one byte: the server buffers each request (at most
    the head limit + 1 MiB per connection) until it completes or the
    handshake timeout ends it. RSS grows by about n MiB, not more."""
    warm_up(srv.port)
    body = b"B" * (MIB - 1)
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % MIB
    with RssWatch(srv, "held-bodies-%dx1MiB" % n, n * 1.6 + 8) as rw:
        socks = []
        try:
            for _ in range(n):
                s = connect(srv.port, timeout=T(10))
                s.sendall(head + body)
                socks.append(s)
            time.sleep(0.3)
            took = assert_served(srv.port, "with %d partial 1 MiB bodies held" % n)
            # Completing one request gets its answer (404 for POST / is not
            # it: / takes GET and HEAD, so 405), then the others are dropped.
            socks[0].sendall(b"B")
            socks[0].settimeout(T(5))
            st = http_status(socks[0].recv(4096))
        finally:
            close_all(socks, rst=True)
    assert_served(srv.port, "after the partial bodies")
    rw.measure()
    eq(st, 405, "status of the completed POST / with a 1 MiB body")
    print("     held bodies: +%.2f MiB per connection at the peak; client served in %.2fs"
          % ((rw.peak - rw.base) / 1024 / n, took), flush=True)
    rw.check()


def t_held_partial_messages(srv, n=50, max_message=MIB):
    """n WebSocket connections each send all but the last byte of a
    fragmented message of max-message bytes: each is gathered (at most
    max-message per connection). RSS grows by about n x max-message."""
    warm_up(srv.port)
    part = b"m" * (64 * 1024)
    frames = b"".join(build_frame(OP_BINARY if i == 0 else OP_CONT, part, fin=False)
                      for i in range(max_message // len(part) - 1))
    frames += build_frame(OP_CONT, part[:-1], fin=False)
    with RssWatch(srv, "held-messages-%dx1MiB" % n, n * max_message / MIB * 1.6 + 8) as rw:
        wss = []
        try:
            for _ in range(n):
                ws = RawWS.open(srv.port)
                wss.append(ws)
                ws.send_raw(frames, timeout=T(10))
            time.sleep(0.3)
            took = assert_served(srv.port, "with %d partial messages held" % n)
            wss[0].send_frame(OP_CONT, b"z")
            wss[0].expect_echo(OP_BINARY, part * (max_message // len(part) - 1) + part[:-1] + b"z", timeout=T(10))
        finally:
            for ws in wss:
                close_all([ws.sock], rst=True)
    assert_served(srv.port, "after the partial messages")
    rw.measure()
    print("     held messages: +%.2f MiB per connection at the peak; client served in %.2fs"
          % ((rw.peak - rw.base) / 1024 / n, took), flush=True)
    rw.check()


def t_partial_budget(srv, budget, n_held=3):
    """One worker with a budget for partial messages: n_held connections
    each hold all but the last byte of a 1 MiB message (1 MiB each of the
    budget); a connection whose gathering would pass the budget is closed
    with 1009 and counted, while the others are unaffected: each completes
    its message and gets it back."""
    warm_up(srv.port)
    payloads = [os.urandom(MIB) for _ in range(n_held + 1)]
    frames = [build_frame(OP_BINARY, p) for p in payloads]
    with RssWatch(srv, "partial-budget-%.1fMiB" % (budget / MIB), budget / MIB * 1.6 + 8) as rw:
        held = []
        try:
            for f in frames[:n_held]:
                ws = RawWS.open(srv.port)
                held.append(ws)
                ws.send_raw(f[:-1], timeout=T(10))
            deadline = time.monotonic() + T(5)
            while metric(srv.port, "ringws_partial_bytes") < n_held * MIB:
                if time.monotonic() > deadline:
                    fail("the server did not gather the %d held messages within %.0fs (%d bytes held)"
                         % (n_held, T(5), metric(srv.port, "ringws_partial_bytes")))
                time.sleep(0.05)
            with RawWS.open(srv.port) as over:
                over.send_raw(frames[n_held][:-1], timeout=T(10))
                over.fail_expected(1009, timeout=T(5))
            took = assert_served(srv.port, "with the partial-message budget spent")
            for ws, f, p in zip(held, frames, payloads):
                ws.send_raw(f[-1:])
                ws.expect_echo(OP_BINARY, p, timeout=T(10))
                ws.close_handshake()
            refused = metric(srv.port, "ringws_partial_over_budget_total")
            left = metric(srv.port, "ringws_partial_bytes")
        finally:
            for ws in held:
                ws.close()
    rw.measure()
    eq(refused, 1, "ringws_partial_over_budget_total")
    eq(left, 0, "ringws_partial_bytes once every message completed")
    print("     partial budget: %d held, the one past %.1f MiB closed 1009; client served in %.2fs"
          % (n_held, budget / MIB, took), flush=True)
    rw.check()


def subscribe_many(port, n, per, name_len):
    """n subscriber connections, each subscribed (by one `sub` command) to
    `per` distinct topics of name_len bytes; returns the sockets once a
    pong after each command says it took effect."""
    pong = build_frame(OP_PING, b"sync", mask=False)[1:]
    socks = []
    try:
        for i in range(n):
            names = [("pin.%d.%d." % (i, j)).ljust(name_len, "x") for j in range(per)]
            request, _ = upgrade_request(port, path="/ws")
            s = connect(port, timeout=T(10))
            socks.append(s)
            s.sendall(request + build_frame(OP_TEXT, "sub " + ",".join(names))
                      + build_frame(OP_PING, b"sync"))
            got = b""
            while not got.endswith(pong):
                data = s.recv(4096)
                if not data:
                    fail("subscriber %d closed by the server (got %r)" % (i, got[:80]))
                got += data
    except BaseException:
        close_all(socks)
        raise
    return socks


def t_topics_pinned(srv, n=1000, per=64, name_len=128):
    """n connections each subscribe to `per` (the default --max-topics)
    distinct topics with the longest names: what an attacker can pin with
    subscriptions alone. RSS grows by about 520 bytes per subscription
    (docs/SECURITY.md: the worker's index and the sequencer's entry), not
    more, and the index goes with the connections (the sequences stay
    idle, bounded by --sequence-idle-max)."""
    warm_up(srv.port)
    with RssWatch(srv, "topics-%dx%d" % (n, per), n * per * 600 / MIB + 8) as rw:
        socks = subscribe_many(srv.port, n, per, name_len)
        try:
            eq(metric(srv.port, "ringws_topics"), n * per, "topics held")
            took = assert_served(srv.port, "with %d topics held" % (n * per))
        finally:
            close_all(socks, rst=True)
    rw.measure()
    deadline = time.monotonic() + T(5)
    while metric(srv.port, "ringws_topics") and time.monotonic() < deadline:
        time.sleep(0.05)
    eq(metric(srv.port, "ringws_topics"), 0, "topics once the subscribers are gone")
    print("     topics: %.0f bytes per subscription to a topic of its own at the peak; "
          "client served in %.2fs" % ((rw.peak - rw.base) * 1024 / (n * per), took), flush=True)
    rw.check()


# ---------------------------------------------------------------------------
# More connections than allowed (server: --workers 1 --max-connections 100)


def refused_fast(port, limit):
    """A new connection is closed by the server within `limit` seconds."""
    s = connect(port, timeout=T(5))
    try:
        s.settimeout(limit)
        try:
            data = s.recv(4096)
        except socket.timeout:
            fail("expected a connection beyond the limit to be closed at once; it stayed open %.1fs" % limit)
        except ConnectionResetError:
            data = b""
        eq(data, b"", "bytes on a refused connection")
    finally:
        s.close()


def t_connection_flood(srv, limit=100, extra=300):
    """With --max-connections 100 on one worker: 100 connections are held,
    the 300 after them are closed at once, a new client is refused (not
    left hanging) until some of the 100 go, and then it is served."""
    warm_up(srv.port)
    with RssWatch(srv, "connection-flood-%d" % (limit + extra), 4) as rw:
        holders, opened = open_many(srv.port, limit)
        excess = []
        try:
            deadline = time.monotonic() + T(5)
            while server_sockets(srv.port) < limit and time.monotonic() < deadline:
                time.sleep(0.02)
            excess, ex_opened = open_many(srv.port, extra)
            ex_closed = wait_all_closed(excess, ex_opened, 1.0 + slack(2))
            held_closed = wait_all_closed(holders, opened, 0.0)
            # Recheck the holders a moment later: nothing may have gone.
            time.sleep(0.2)
            held_closed = wait_all_closed(holders, [time.monotonic()], 0.0, held_closed)
            t0 = time.monotonic()
            refused_fast(srv.port, 1.0 + slack(2))
            refused_in = time.monotonic() - t0
            close_all(holders[:limit // 2])
            t0 = time.monotonic()
            served_in = None
            while served_in is None and time.monotonic() - t0 < SERVE_LIMIT:
                try:
                    assert_served(srv.port, "after half the holders left", SERVE_LIMIT)
                    served_in = time.monotonic() - t0
                except AssertionError:
                    time.sleep(0.05)
        finally:
            close_all(holders)
            close_all(excess)
    assert_served(srv.port, "after the connection flood")
    rw.measure()
    expect(len(ex_closed) == extra, "all %d connections beyond the limit closed within %.1fs"
           % (extra, 1.0 + slack(2)), "%d still open" % (extra - len(ex_closed)))
    expect(not held_closed, "the %d connections within the limit kept" % limit,
           "%d of them closed" % len(held_closed))
    expect(served_in is not None, "a client served within %.1fs of half the holders leaving" % SERVE_LIMIT,
           "still refused")
    print("     connection flood: %d held, %d closed within %.2fs, a new client refused in %.2fs, "
          "served %.2fs after holders left" % (limit, extra, max(ex_closed.values()), refused_in, served_in),
          flush=True)
    rw.check()


# ---------------------------------------------------------------------------
# Invalid frames from many connections at once (server: --max-message 65536)

STORM = [
    ("unmasked", build_frame(OP_TEXT, "bare", mask=False), 1002),
    ("rsv1", build_frame(OP_TEXT, "rsv", rsv=4), 1002),
    ("opcode-3", build_frame(3, b"x"), 1002),
    ("opcode-11", build_frame(11, b""), 1002),
    ("ping-126", build_frame(OP_PING, b"p" * 126), 1002),
    ("fragmented-ping", build_frame(OP_PING, b"p", fin=False), 1002),
    ("orphan-continuation", build_frame(OP_CONT, b"c"), 1002),
    ("text-inside-fragmented", build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_TEXT, b"b"), 1002),
    ("length-top-bit", build_frame(OP_BINARY, b"", length=(1 << 63) | 5, len_form=64), 1002),
    ("bad-utf8", build_frame(OP_TEXT, b"abc\xff"), 1007),
    ("bad-utf8-across-fragments", build_frame(OP_TEXT, b"ok\xce", fin=False) + build_frame(OP_CONT, b"zz"), 1007),
    ("close-code-999", build_frame(OP_CLOSE, close_payload(999)), 1002),
    ("close-code-1005", build_frame(OP_CLOSE, close_payload(1005)), 1002),
    ("close-1-byte", build_frame(OP_CLOSE, b"\x03"), 1002),
    ("close-reason-bad-utf8", build_frame(OP_CLOSE, close_payload(1000, b"bad \xc0\xaf")), 1007),
    ("announced-too-big", build_frame(OP_BINARY, b"", length=65537, len_form=64), 1009),
    ("fragments-too-big", build_frame(OP_BINARY, b"a" * 40000, fin=False) + build_frame(OP_CONT, b"b" * 30000),
     1009),
]


def t_invalid_storm(srv, per_kind=20):
    """Every kind of protocol error, from len(STORM) x per_kind connections
    opened first and then all sent at once: each connection gets its own
    close code and is closed, while a well-behaved client is served."""
    warm_up(srv.port)
    conns = []
    with RssWatch(srv, "invalid-storm-%d" % (len(STORM) * per_kind), 6) as rw:
        try:
            for _ in range(per_kind):
                for name, data, code in STORM:
                    conns.append((name, code, RawWS.open(srv.port), data))
            check = Background(assert_served, srv.port, "during the invalid-frame storm")
            for _, _, ws, data in conns:
                ws.send_raw(data)
            wrong = []
            for name, code, ws, _ in conns:
                try:
                    ws.fail_expected(code, timeout=T(5))
                except AssertionError as e:
                    wrong.append("%s: %s" % (name, e))
            took = check.result()
        finally:
            for _, _, ws, _ in conns:
                ws.close()
    assert_served(srv.port, "after the invalid-frame storm")
    rw.measure()
    expect(not wrong, "each of %d connections closed with its code" % len(conns),
           "%d wrong, e.g. %s" % (len(wrong), "; ".join(wrong[:3])))
    print("     storm: %d connections, %d kinds, all got their codes; client served in %.2fs"
          % (len(conns), len(STORM), took), flush=True)
    rw.check()


# ---------------------------------------------------------------------------


def main():
    r = Runner("attacks", watchdog=float(os.environ.get("RINGWS_TEST_WATCHDOG", 240 * SLOW)))
    w = ["--workers", WORKERS]
    with r.server(w + ["--handshake-timeout", "1s"], "slowloris") as srv:
        r.case("slowloris-500-dropped-others-served", t_slowloris, srv, timeout=30)
    with r.server(w + ["--handshake-timeout", "2s"], "half-open") as srv:
        r.case("half-open-1000-held-then-dropped", t_half_open, srv, timeout=30)
    with r.server(w + ["--idle-timeout", "2s", "--close-timeout", "1s"], "stalled") as srv:
        r.case("stalled-readers-bounded-then-closed", t_stalled_readers, srv, timeout=60)
    with r.server(w, "ping-flood") as srv:
        r.case("ping-flood-50k-bounded", t_ping_flood, srv, timeout=60)
    with r.server(w, "empty-pings") as srv:
        r.case("empty-ping-flood-1M-bounded", t_empty_ping_flood, srv, timeout=60)
    with r.server(w, "tiny-echo") as srv:
        r.case("tiny-message-echo-unread-bounded", t_tiny_echo_unread, srv, timeout=60)
    with r.server(w + ["--handshake-timeout", "2s", "--close-timeout", "1s"], "pipelined") as srv:
        r.case("pipelined-requests-unread-bounded", t_pipelined_unread, srv, timeout=60)
    # The client reads until the server closes: after the keep-alive time.
    with r.server(w + ["--handshake-timeout", "2s"], "pipelined-read") as srv:
        r.case("pipelined-requests-read-answered", t_pipelined_read, srv, timeout=60)
    with r.server(w + ["--max-message", MIB], "fragments") as srv:
        r.case("tiny-fragments-200k-and-1009", t_tiny_fragments, srv, timeout=60)
    with r.server(w, "http-floods") as srv:
        r.case("http-floods-414-431-413", t_head_floods, srv, timeout=60)
    with r.server(w + ["--handshake-timeout", "20s"], "held-bodies") as srv:
        r.case("held-partial-bodies-bounded", t_held_partial_bodies, srv, timeout=60)
    with r.server(w + ["--max-message", MIB], "held-messages") as srv:
        r.case("held-partial-messages-bounded", t_held_partial_messages, srv, timeout=60)
    with r.server(w, "topics") as srv:
        r.case("topics-pinned-by-subscriptions-bounded", t_topics_pinned, srv, timeout=60)
    budget = 7 * MIB // 2
    with r.server(["--workers", 1, "--max-message", MIB, "--max-partial-bytes", budget], "partial-budget") as srv:
        r.case("partial-budget-closes-the-one-past-it", t_partial_budget, srv, budget, timeout=60)
    with r.server(["--workers", 1, "--max-connections", 100, "--handshake-timeout", "20s"], "max-conn") as srv:
        r.case("connection-flood-beyond-max-connections", t_connection_flood, srv, timeout=40)
    with r.server(w + ["--max-message", 65536], "storm") as srv:
        r.case("invalid-frame-storm-codes", t_invalid_storm, srv, timeout=60)
    print("RSS per attack (%s build, %s):" % ("ASan" if ASAN else "normal", BIN))
    for line in RESULTS:
        print("  " + line)
    r.finish()


if __name__ == "__main__":
    main()
