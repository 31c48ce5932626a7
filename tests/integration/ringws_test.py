"""Shared helpers for the ringws integration tests.

The tests drive the built server binary (RINGWS_BIN) from the outside, the
way a peer on the network would: a process runner that starts it on a free
port and checks it ends cleanly, a raw-socket WebSocket client that can send
anything a real client library refuses to (unmasked or reserved frames,
lengths that lie, byte-by-byte writes), an HTTP client that parses responses
strictly, and a small case runner that prints one summary line and exits
non-zero when anything failed.

Everything here is bounded in time: every socket operation has a timeout, and
a watchdog ends a script that runs too long, so no test can hang a build.

With RINGWS_TEST_TLS=1 every server a suite starts through Runner.server
listens with TLS, on a certificate of a CA the test makes (tls_ca.py), and
connect(), ws_connect() and assert_served speak TLS to it: the same suite
runs over wss://. With RINGWS_TLS_FRONT=nginx such a server is a plain ringws
behind nginx terminating TLS (tls_nginx.py), to check TLS tests against a
second implementation.

Python 3.11 standard library only; the websockets package is imported by the
scripts that need it, not here.
"""

import asyncio
import atexit
import base64
import fcntl
import hashlib
import inspect
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OPNAMES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: AddressSanitizer",
    "runtime error:",
    "ThreadSanitizer",
    "MemorySanitizer",
)


def _binary():
    path = os.environ.get("RINGWS_BIN")
    if not path:
        raise TestFailure("RINGWS_BIN is not set: point it at the built ringws binary")
    return path


def _detect_slowness(path):
    """Sanitizer builds run several times slower; scale the time limits of
    operations (never the timing windows the server must meet) by this."""
    env = os.environ.get("RINGWS_TEST_SLOW")
    if env:
        return float(env)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return 1.0
    if b"__asan_init" in data or b"__tsan_init" in data or b"__msan_init" in data:
        return 3.0
    if b"__ubsan_handle" in data:
        return 1.5
    return 1.0


def _is_asan(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


BIN = os.environ.get("RINGWS_BIN", "")
SLOW = _detect_slowness(BIN) if BIN else 1.0
# AddressSanitizer builds also hold freed memory in quarantine: RSS bounds
# need their own allowance.
ASAN = _is_asan(BIN) if BIN else False


def T(seconds):
    """A time limit for an operation, scaled for slow (sanitizer) builds."""
    return seconds * SLOW


def slack(seconds):
    """Extra allowance added to the upper edge of a timing window on a slow
    build: timers do not run slower under a sanitizer, but the loop that
    serves them may."""
    return seconds * (SLOW - 1.0) * 0.5


# ---------------------------------------------------------------------------
# TLS

TLS_ENV = os.environ.get("RINGWS_TEST_TLS") == "1"
TLS_FRONT = os.environ.get("RINGWS_TLS_FRONT", "")

# What connect() and its users take for `tls` unless told: TLS (to the
# suite's CA) when RINGWS_TEST_TLS=1, plain TCP otherwise.
SUITE_TLS = object()


def client_tls(tls):
    """The client SSLContext that `tls` stands for (None: plain TCP):
    SUITE_TLS, an SSLContext, or None/False."""
    if tls is SUITE_TLS:
        if not TLS_ENV:
            return None
        with _suite_cert_lock:
            if not _suite_ctx:
                import tls_ca
                _suite_ctx.append(tls_ca.shared_ca().client_context())
        return _suite_ctx[0]
    return tls or None


def suite_certs():
    """The certificates a suite's servers get under RINGWS_TEST_TLS=1: one,
    for localhost, 127.0.0.1 and ::1."""
    import tls_ca
    ca = tls_ca.shared_ca()
    with _suite_cert_lock:
        if not _suite_cert:
            _suite_cert.append(ca.issue())
    return list(_suite_cert)


_suite_cert = []
_suite_ctx = []
_suite_cert_lock = threading.Lock()


def ragged_eof(exc):
    """Whether an ssl error is an EOF that came without close_notify
    (OpenSSL 3 reports it as unexpected_eof_while_reading, which python
    3.11 does not map to SSLEOFError)."""
    return isinstance(exc, ssl.SSLEOFError) or \
        getattr(exc, "reason", None) == "UNEXPECTED_EOF_WHILE_READING"


class TlsSocket(ssl.SSLSocket):
    """An SSLSocket that takes the MSG_DONTWAIT flag the raw clients use:
    a read or write that would block raises BlockingIOError as a plain
    socket's does. A write that would block must be retried with the same
    bytes (OpenSSL has taken part of them). A write after the peer closed
    (its close_notify, or EOF) raises BrokenPipeError, as on plain TCP. An
    EOF without close_notify reads as b"", or raises SSLEOFError where
    suppress_ragged_eofs is off."""

    def _dontwait(self, op, *args):
        old = self.gettimeout()
        self.setblocking(False)
        try:
            return op(*args)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError() from None
        finally:
            self.settimeout(old)

    def recv(self, buflen=1024, flags=0):
        try:
            if flags & socket.MSG_DONTWAIT:
                return self._dontwait(super().recv, buflen)
            return super().recv(buflen, flags)
        except ssl.SSLError as e:
            if not ragged_eof(e):
                raise
            if self.suppress_ragged_eofs:
                return b""
            raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF without close_notify") from None

    def send(self, data, flags=0):
        try:
            if flags & socket.MSG_DONTWAIT:
                return self._dontwait(super().send, data)
            return super().send(data, flags)
        except ssl.SSLError as e:
            if not (isinstance(e, ssl.SSLZeroReturnError) or ragged_eof(e)):
                raise
            raise BrokenPipeError("TLS peer closed: %s" % e) from None


def wait_readable(sock, timeout):
    """select() for one socket that also counts bytes TLS has already
    decrypted and holds (the kernel no longer has them)."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


# ---------------------------------------------------------------------------
# Failures


class TestFailure(AssertionError):
    pass


class CaseTimeout(Exception):
    pass


def short(value, limit=160):
    if isinstance(value, (bytes, bytearray)) and len(value) > 48:
        return "<%d bytes, sha1 %s, starts %r>" % (
            len(value), hashlib.sha1(value).hexdigest()[:12], bytes(value[:24]))
    if isinstance(value, str) and len(value) > 64:
        return "<%d chars, starts %r>" % (len(value), value[:32])
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def fail(msg):
    raise TestFailure(msg)


def proc_status_kib(pid, field):
    """A size field of /proc/PID/status in KiB (VmRSS, RssAnon...); its
    absence fails the case."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    fail("no %s in /proc/%d/status" % (field, pid))


def expect(cond, expected, got):
    if not cond:
        raise TestFailure("expected %s, got %s" % (expected, got))


def eq(got, expected, what):
    if got != expected:
        raise TestFailure("%s: expected %s, got %s" % (what, short(expected), short(got)))


def same_payload(got, expected, what="payload"):
    """Byte-exact comparison that says where two large payloads differ."""
    if type(got) is not type(expected):
        fail("%s: expected %s, got %s" % (what, type(expected).__name__, type(got).__name__))
    if got == expected:
        return
    if isinstance(got, str):
        got_b, exp_b = got.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    else:
        got_b, exp_b = bytes(got), bytes(expected)
    first = next((i for i in range(min(len(got_b), len(exp_b))) if got_b[i] != exp_b[i]),
                 min(len(got_b), len(exp_b)))
    fail("%s: expected %d bytes, got %d bytes, first difference at byte %d (expected %r, got %r)"
         % (what, len(exp_b), len(got_b), first, exp_b[first:first + 8], got_b[first:first + 8]))


# ---------------------------------------------------------------------------
# The server process

_live_servers = set()


def _kill_all():
    for srv in list(_live_servers):
        srv.kill()


atexit.register(_kill_all)

LISTEN_RE = re.compile(rb"ringws listening on (?:\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)")
PLAIN_RE = re.compile(rb"plain HTTP/WebSocket listener on (?:\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)")


class Server:
    """One ringws process on a port the kernel picks, bound to 127.0.0.1
    unless `bind` says otherwise; `env` adds variables to its environment.
    `cmd` runs another program that prints the same listening line (an
    example of examples/, given its port 0) instead of the binary."""

    def __init__(self, args=(), label="default", bind="127.0.0.1", env=None, cmd=None,
                 tls=None, plain_port=False):
        """`tls`: certificates (tls_ca.Cert, the first the default) for a
        TLS listener; `plain_port` adds the plaintext listener beside it,
        whose port is then self.plain_port."""
        self.cmd = [str(a) for a in cmd] if cmd else None
        self.args = [str(a) for a in args]
        self.label = label
        self.bind = bind
        self.env = env
        self.tls = list(tls or ())
        self.want_plain = plain_port
        self.front = None
        self.proc = None
        self.port = None
        self.plain_port = None
        self.stdout_lines = []
        self._stderr = None
        self._reader = None
        self.died_early = None

    def _tls_args(self):
        if not self.tls or TLS_FRONT == "nginx":
            return []
        args = []
        for c in self.tls:
            args += ["--tls-cert", c.cert, "--tls-key", c.key]
        return args + (["--plain-port", "0"] if self.want_plain else [])

    def start(self):
        cmd = self.cmd or [_binary(), "--bind", self.bind, "--port", "0"] + self._tls_args() + self.args
        env = dict(os.environ, **self.env) if self.env else None
        self._stderr = tempfile.TemporaryFile()
        # The server writes through the same open file description that
        # stderr_text() reads with pread: O_APPEND keeps every line at the
        # end whatever offset the file holds.
        fcntl.fcntl(self._stderr.fileno(), fcntl.F_SETFL,
                    fcntl.fcntl(self._stderr.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr, close_fds=True, env=env)
        except OSError as e:
            self.proc = None
            fail("cannot start %s: %s" % (cmd[0], e))
        _live_servers.add(self)
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + T(10)
        native_plain = self.want_plain and self.tls and TLS_FRONT != "nginx"
        while True:
            m = LISTEN_RE.search(buf)
            p = PLAIN_RE.search(buf) if native_plain else None
            if m and b"\n" in buf[m.end():] and (not native_plain or (p and b"\n" in buf[p.end():])):
                self.port = int(m.group(1))
                if p:
                    self.plain_port = int(p.group(1))
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                fail("server %s printed no 'ringws listening on ADDRESS:PORT' line within %.0fs; "
                     "stdout %r; stderr %s" % (self.label, T(10), buf[-300:], self.stderr_tail()))
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                rc = self.proc.wait(timeout=T(5))
                self.kill()
                fail("server %s exited (status %s) before listening; command %s; stdout %r; stderr %s"
                     % (self.label, rc, " ".join(cmd), buf[-300:], self.stderr_tail()))
            buf += chunk
        self.stdout_lines = buf.decode("utf-8", "replace").splitlines()
        self._reader = threading.Thread(target=self._drain, args=(fd,), daemon=True)
        self._reader.start()
        if self.tls and TLS_FRONT == "nginx":
            self._start_front()
        return self

    def _start_front(self):
        import tls_nginx
        try:
            self.front = tls_nginx.NginxFront(self.tls, self.port, self.args)
        except RuntimeError as e:
            self.kill()
            fail("server %s: %s" % (self.label, e))
        if self.want_plain:
            self.plain_port = self.port
        self.port = self.front.port

    def reload_tls(self, timeout=None):
        """SIGHUP, then waits for the server's word on it: ("ok", log) for
        "TLS certificates reloaded", ("failed", log) for "TLS reload
        failed", (None, log) when neither came within `timeout`."""
        limit = timeout if timeout is not None else T(5)
        if self.front is not None:
            return self.front.reload(limit)
        before = len(self.stderr_text())
        self.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + limit
        while True:
            text = self.stderr_text()[before:]
            if "TLS reload failed" in text:
                return "failed", text
            if "TLS certificates reloaded" in text:
                return "ok", text
            if time.monotonic() > deadline:
                return None, text
            time.sleep(0.01)

    def _drain(self, fd):
        # Keep reading so that a chatty server never blocks on a full pipe.
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.stdout_lines.extend(chunk.decode("utf-8", "replace").splitlines())
            del self.stdout_lines[:-200]

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        # pread, never seek+read: the file offset is shared with the server,
        # whose every O_APPEND write moves it to the end, so a line written
        # between a seek and a read would make the read return nothing.
        if self._stderr is None:
            return ""
        fd, chunks, at = self._stderr.fileno(), [], 0
        while True:
            chunk = os.pread(fd, 1 << 20, at)
            if not chunk:
                return b"".join(chunks).decode("utf-8", "replace")
            chunks.append(chunk)
            at += len(chunk)

    def stderr_tail(self, n=1500):
        text = self.stderr_text()
        return repr(text[-n:]) if text else "(empty)"

    def sanitizer_reports(self):
        text = self.stderr_text()
        return [p for p in SANITIZER_PATTERNS if p in text]

    def sanitizer_count(self):
        text = self.stderr_text()
        return sum(text.count(p) for p in SANITIZER_PATTERNS)

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Exit status, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _live_servers.discard(self)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Ends the server and returns what was wrong with its life: it died
        before being asked to stop, ignored the signal, exited non-zero or
        left sanitizer reports on stderr. An empty list means clean."""
        problems = []
        if self.proc is None:
            return ["server %s was never started" % self.label]
        if self.proc.poll() is not None:
            problems.append("server died before the end of the tests (status %s)" % self.proc.returncode)
        else:
            self.send_signal(sig)
            rc = self.wait(timeout if timeout is not None else T(8))
            if rc is None:
                problems.append("server still running %.0fs after %s" % (
                    timeout if timeout is not None else T(8), signal.Signals(sig).name))
                self.kill()
            elif rc != 0:
                problems.append("server exited with status %s after %s" % (rc, signal.Signals(sig).name))
        self.kill()
        reports = self.sanitizer_reports()
        if reports:
            problems.append("sanitizer reports on stderr (%s)" % ", ".join(reports))
        if problems:
            problems.append("stderr: " + self.stderr_tail(3000))
        return problems


# ---------------------------------------------------------------------------
# Sockets


def connect(port, timeout=None, nodelay=True, rcvbuf=None, tls=SUITE_TLS):
    """A client socket; `rcvbuf` (SO_RCVBUF, set before connecting so that
    the window follows it) makes a peer that can hold little unread data.
    With `tls` (see client_tls) the socket is a TlsSocket whose handshake
    is done, on which the server's EOF without close_notify raises
    ssl.SSLEOFError: every close of the server's must come with one."""
    if rcvbuf is None:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout or T(5))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout or T(5))
        s.connect(("127.0.0.1", port))
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout or T(5))
    ctx = client_tls(tls)
    return tls_wrap(s, ctx, clean_eof=True) if ctx is not None else s


def tls_wrap(sock, ctx, server_hostname="127.0.0.1", clean_eof=False):
    """The TlsSocket over `sock` once its handshake is done (`sock` is
    closed if it fails). With `clean_eof`, reading an EOF that came without
    the server's close_notify raises ssl.SSLEOFError instead of returning
    b"" (a close_notify still reads as b"")."""
    ctx.sslsocket_class = TlsSocket
    try:
        return ctx.wrap_socket(sock, server_hostname=server_hostname,
                               suppress_ragged_eofs=not clean_eof)
    except BaseException:
        sock.close()
        raise


def chop(data, sizes):
    """Splits data into pieces: `sizes` is an int (every piece that long), a
    list of piece lengths (the rest goes last) or None (one piece)."""
    if sizes is None:
        return [data]
    if isinstance(sizes, int):
        return [data[i:i + sizes] for i in range(0, len(data), sizes)] or [data]
    out, pos = [], 0
    for n in sizes:
        if pos >= len(data):
            break
        out.append(data[pos:pos + n])
        pos += n
    if pos < len(data):
        out.append(data[pos:])
    return out


def send_pieces(sock, pieces, pause=0.0, on_readable=None, timeout=None):
    """Writes each piece with its own send() calls (TCP_NODELAY makes each its
    own segment), sleeping `pause` between pieces. While a write would block,
    incoming bytes are handed to on_readable so that a peer that echoes while
    we send can never deadlock us.

    If the peer closes the connection part way (a server that refuses what
    it has read so far may), the rest is not sent and the error is returned:
    what the server answered before closing is still there to be read, and
    the expectations that follow decide whether that was right."""
    try:
        _send_pieces(sock, pieces, pause, on_readable, timeout)
    except (BrokenPipeError, ConnectionResetError) as e:
        return e
    return None


def _send_pieces(sock, pieces, pause, on_readable, timeout):
    limit = timeout or T(30)
    for i, piece in enumerate(pieces):
        view = memoryview(piece)
        deadline = time.monotonic() + limit
        while len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                fail("timed out writing to the server (%d bytes left of a %d-byte piece)" % (len(view), len(piece)))
            rlist = [sock] if on_readable is not None else []
            r, w, _ = select.select(rlist, [sock], [], min(left, 1.0))
            if rlist and not r and getattr(sock, "pending", None) and sock.pending():
                r = rlist
            if r:
                on_readable()
            if w:
                try:
                    n = sock.send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                view = view[n:]
        if pause and i + 1 < len(pieces):
            time.sleep(pause)


def wait_closed(sock, timeout, what="server to close the connection"):
    """Reads (and discards) until the peer closes; returns the seconds it took.
    Fails if the connection is still open after `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("expected the %s within %.1fs; it stayed open (%d bytes read meanwhile)" % (what, timeout, got))
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
        got += len(data)


# ---------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name):
        out = []
        for v in self.header_all(name):
            out.extend(t.strip().lower() for t in v.split(",") if t.strip())
        return out

    def __repr__(self):
        return "<%s %d %s, %d body bytes>" % (self.version, self.status, self.reason, len(self.body))


class _SocketOwner:
    """Closes its socket (self.sock) when done, also as a context manager."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HttpConn(_SocketOwner):
    """An HTTP/1.1 client connection that parses responses strictly: a status
    line, CRLF-terminated headers, and (every response but 101) a
    Content-Length that says exactly how long the body is."""

    def __init__(self, port, timeout=None, sock=None, tls=SUITE_TLS):
        self.sock = sock or connect(port, timeout, tls=tls)
        self.buf = bytearray()
        self.timeout = timeout or T(5)

    def send(self, data, chops=None, pause=0.0):
        if isinstance(data, str):
            data = data.encode("latin-1")
        send_pieces(self.sock, chop(data, chops), pause)

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out after %.1fs waiting for %s (have %r)" % (self.timeout, what, bytes(self.buf[:200])))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            fail("timed out after %.1fs waiting for %s (have %r)" % (self.timeout, what, bytes(self.buf[:200])))
        except ConnectionResetError:
            data = b""
        if not data:
            fail("connection closed while waiting for %s (have %r)" % (what, bytes(self.buf[:200])))
        self.buf += data

    def read_response(self, head=False, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > 65536:
                fail("response head longer than 64 KiB")
            self._fill(deadline, "a response head")
        raw_head = bytes(self.buf[:end + 4])
        lines = raw_head[:-4].split(b"\r\n")
        m = re.match(rb"(HTTP/1\.[01]) (\d{3}) ?(.*)$", lines[0])
        if not m:
            fail("bad status line %r" % lines[0])
        version, status, reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")
        headers = []
        for line in lines[1:]:
            if b":" not in line or line[:1] in (b" ", b"\t"):
                fail("bad response header line %r" % line)
            k, v = line.split(b":", 1)
            if k != k.strip() or not k:
                fail("bad response header name %r" % k)
            headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        del self.buf[:end + 4]
        resp = Response(version, status, reason, headers, b"", raw_head)
        if status == 101:
            return resp
        cls = resp.header_all("Content-Length")
        if len(cls) != 1 or not cls[0].isdigit():
            fail("response %d must have exactly one numeric Content-Length header, has %r" % (status, cls))
        if resp.header("Transfer-Encoding") is not None:
            fail("response %d has Transfer-Encoding %r" % (status, resp.header("Transfer-Encoding")))
        length = 0 if head or status in (204, 304) else int(cls[0])
        while len(self.buf) < length:
            self._fill(deadline, "a %d-byte response body" % length)
        resp.body = bytes(self.buf[:length])
        del self.buf[:length]
        return resp

    def expect_eof(self, timeout=None, what="server to close the connection"):
        """The server closes the connection and sends nothing more first."""
        if self.buf:
            fail("expected the %s, got more bytes: %r" % (what, bytes(self.buf[:100])))
        limit = timeout or T(3)
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("expected the %s within %.1fs; it stayed open" % (what, limit))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not data:
                return
            fail("expected the %s, got more bytes: %r" % (what, data[:100]))

    def expect_open(self, wait=0.2):
        """The connection is still open: nothing arrives and no EOF within
        `wait` seconds."""
        if self.buf:
            fail("unexpected bytes after the response: %r" % bytes(self.buf[:100]))
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return
        except ConnectionResetError:
            fail("expected the connection to stay open, got a reset")
        if not data:
            fail("expected the connection to stay open (keep-alive), the server closed it")
        fail("expected nothing more from the server, got %r" % data)


def http_get(port, path, method="GET", headers=(), version="HTTP/1.1", tls=SUITE_TLS):
    """A single request on a fresh connection; returns the response."""
    head = "%s %s %s\r\nHost: 127.0.0.1:%d\r\n" % (method, path, version, port)
    head += "".join("%s: %s\r\n" % h for h in headers)
    with HttpConn(port, tls=tls) as c:
        c.send(head + "\r\n")
        return c.read_response(head=(method == "HEAD"))


def metric(port, name):
    """The value of one unlabelled row of GET /metrics; a row missing fails."""
    resp = http_get(port, "/metrics")
    eq(resp.status, 200, "status of GET /metrics")
    for line in resp.body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    fail("no %s in /metrics: %s" % (name, short(resp.body)))


def make_key(raw16=None):
    return base64.b64encode(raw16 if raw16 is not None else os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


def upgrade_request(port, path="/echo", key=None, method="GET", version="HTTP/1.1",
                    headers=None, drop=(), add=()):
    """Builds a handshake request. `headers` replaces the defaults given by
    name, `drop` removes default headers by name, `add` appends raw
    (name, value) pairs, duplicates allowed."""
    if key is None:
        key = make_key()
    base = [("Host", "127.0.0.1:%d" % port), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    over = {k.lower(): (k, v) for k, v in (headers or {}).items()}
    dropset = {d.lower() for d in drop}
    lines = ["%s %s %s" % (method, path, version)]
    for k, v in base:
        if k.lower() in dropset:
            continue
        if k.lower() in over:
            k, v = over.pop(k.lower())
        lines.append("%s: %s" % (k, v))
    for k, v in over.values():
        lines.append("%s: %s" % (k, v))
    for k, v in add:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), key


def check_101(resp, key):
    eq(resp.status, 101, "handshake status")
    expect("websocket" in resp.tokens("Upgrade"), "Upgrade: websocket", resp.header_all("Upgrade"))
    expect("upgrade" in resp.tokens("Connection"), "Connection: Upgrade", resp.header_all("Connection"))
    eq(resp.header_all("Sec-WebSocket-Accept"), [accept_for(key)], "Sec-WebSocket-Accept")


# ---------------------------------------------------------------------------
# WebSocket frames


def apply_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None,
                len_form=None, first_byte=None):
    """Encodes one client frame. `length` overrides the length field (so it
    may lie), `len_form` forces 7, 16 or 64 bit length encoding, and
    `first_byte` overrides FIN/RSV/opcode entirely."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = first_byte if first_byte is not None else ((0x80 if fin else 0) | (rsv << 4) | opcode)
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if len_form is None:
        len_form = 7 if n < 126 else (16 if n < 65536 else 64)
    if len_form == 7:
        head = struct.pack("!BB", b0, mbit | n)
    elif len_form == 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        if key is None:
            key = os.urandom(4)
        return head + key + apply_mask(payload, key)
    return head + payload


def deflate_message(data, final=False):
    """A message's payload compressed on its own (permessage-deflate without
    context takeover): sync-flushed with the trailing 00 00 ff ff removed as
    RFC 7692 7.2.1 says, or (final) ended with a final block as it allows."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    if final:
        return c.compress(data) + c.flush(zlib.Z_FINISH)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    if not out.endswith(b"\x00\x00\xff\xff"):
        raise AssertionError("sync flush did not end in 00 00 ff ff")
    return out[:-4]


def inflate_message(data):
    """A received compressed message's payload, inflated (RFC 7692 7.2.2)."""
    try:
        d = zlib.decompressobj(-15)
        return d.decompress(bytes(data) + b"\x00\x00\xff\xff") + d.flush()
    except zlib.error as e:
        raise ProtocolViolation("server sent compressed data that does not inflate: %s" % e)


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def utf8_valid(data):
    try:
        bytes(data).decode("utf-8", "strict")
        return True
    except UnicodeDecodeError:
        return False


MIXED_TEXT = "aé€😀z"  # 1, 2, 3 and 4-byte UTF-8 characters


def text_of_bytes(n, r=None):
    """A str whose UTF-8 encoding is exactly n bytes, with multi-byte
    characters wherever possible."""
    out, size = [], 0
    r = r or random.Random(n)
    while size < n:
        c = r.choice(MIXED_TEXT)
        b = len(c.encode())
        if size + b > n:
            c, b = "x", 1
        out.append(c)
        size += b
    return "".join(out)


def utf8_first_invalid(data):
    """Index of the byte at which `data` stops being a prefix of any valid
    UTF-8 text (Unicode table 3-7), or None if it still is one."""
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            ranges = [(0x80, 0xBF)]
        elif b == 0xE0:
            ranges = [(0xA0, 0xBF), (0x80, 0xBF)]
        elif 0xE1 <= b <= 0xEC or 0xEE <= b <= 0xEF:
            ranges = [(0x80, 0xBF)] * 2
        elif b == 0xED:
            ranges = [(0x80, 0x9F), (0x80, 0xBF)]
        elif b == 0xF0:
            ranges = [(0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)]
        elif 0xF1 <= b <= 0xF3:
            ranges = [(0x80, 0xBF)] * 3
        elif b == 0xF4:
            ranges = [(0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)]
        else:
            return i
        for j, (lo, hi) in enumerate(ranges):
            if i + 1 + j >= n:
                return None
            if not lo <= data[i + 1 + j] <= hi:
                return i + 1 + j
        i += 1 + len(ranges)
    return None


# RFC 6455's codes and those the IANA registry added after it: 1012
# (Service Restart), 1013 (Try Again Later, which the server sends to a peer
# it will not wait for: --overflow try-again, a slow subscriber) and 1014
# (Bad Gateway). The server echoes a peer's code and an application may
# close with any of them.
VALID_CLOSE_CODES_SENT_BY_SERVER = (set(range(1000, 1004)) | set(range(1007, 1015))
                                    | set(range(3000, 5000)))


class ProtocolViolation(TestFailure):
    pass


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    def __repr__(self):
        return "<frame %s fin=%d %s>" % (OPNAMES.get(self.opcode, self.opcode), self.fin, short(self.payload))


class Event:
    """A complete message or a control frame from the server."""

    def __init__(self, kind, data=b"", code=None, reason=b"", compressed=False):
        self.kind, self.data, self.code, self.reason = kind, data, code, reason
        self.compressed = compressed  # it came with RSV1 (permessage-deflate)

    def __repr__(self):
        if self.kind == "close":
            return "<close code=%s reason=%r>" % (self.code, bytes(self.reason[:60]))
        return "<%s %s>" % (self.kind, short(self.data))


class EOF(TestFailure):
    pass


class RawWS(_SocketOwner):
    """A WebSocket client on a plain socket that sends exactly the bytes a
    test asks for and checks every frame the server sends: unmasked, no RSV
    bits (but RSV1 on a data message's first frame once permessage-deflate
    was agreed: such messages are inflated), known opcodes, minimal length
    encoding, control frames whole and short, text valid UTF-8, close
    payloads well-formed, nothing after a close."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = bytearray(buf)
        self.pos = 0
        self.frag_op = None
        self.frag_parts = []
        self.got_close = False
        self.eof = False
        self.response = None
        self.sent_close = False
        self.send_error = None
        self.deflate = False     # the server agreed to permessage-deflate
        self.frag_rsv1 = False
        # With context takeover from the server: a zlib.decompressobj that
        # inflates its messages in order, each after the ones before.
        self.inflater = None

    # -- opening

    @classmethod
    def open(cls, port, path="/echo", request=None, key=None, extra=b"", chops=None, pause=0.0,
             timeout=None, rcvbuf=None, tls=SUITE_TLS, sock=None):
        """Connects (or takes the connected `sock`) and completes a
        handshake (failing unless it is a correct 101). `extra` is sent in
        the same write right after the request."""
        sock = sock or connect(port, timeout, rcvbuf=rcvbuf, tls=tls)
        try:
            if request is None:
                request, key = upgrade_request(port, path=path, key=key)
            send_pieces(sock, chop(request + extra, chops), pause)
            hc = HttpConn(port, timeout, sock=sock)
            resp = hc.read_response()
            check_101(resp, key)
        except BaseException:
            sock.close()
            raise
        ws = cls(sock, bytes(hc.buf))
        ws.response = resp
        ws.deflate = any(v.split(";")[0].strip() == "permessage-deflate"
                         for v in resp.header_all("Sec-WebSocket-Extensions"))
        return ws

    # -- sending

    def send_raw(self, data, chops=None, pause=0.0, timeout=None):
        err = send_pieces(self.sock, chop(data, chops), pause, on_readable=self._read_some, timeout=timeout)
        if err is not None:
            self.send_error = err

    def send_frame(self, opcode, payload=b"", chops=None, pause=0.0, **kw):
        self.send_raw(build_frame(opcode, payload, **kw), chops, pause)

    def send_close(self, code=None, reason=b"", **kw):
        self.sent_close = True
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    def try_send(self, data):
        """Sends if the connection still takes it: the server may already have
        closed (after an error it need not wait for our close)."""
        try:
            self.sock.settimeout(T(2))
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return False

    # -- receiving

    def _read_some(self):
        try:
            data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def _fill(self, need, deadline, what):
        while len(self.buf) - self.pos < need:
            if self.eof:
                raise EOF("connection closed by the server while waiting for %s" % what)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out waiting for %s" % what)
            if wait_readable(self.sock, left):
                self._read_some()

    def recv_frame(self, timeout=None, what="a frame"):
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        self._fill(2, deadline, what)
        b0, b1 = self.buf[self.pos], self.buf[self.pos + 1]
        fin, rsv, opcode = b0 >> 7, (b0 >> 4) & 7, b0 & 15
        if b1 & 0x80:
            raise ProtocolViolation("server sent a masked frame (first bytes %02x %02x)" % (b0, b1))
        n = b1 & 0x7F
        hlen = 2
        if n == 126:
            self._fill(4, deadline, what)
            n = struct.unpack_from("!H", self.buf, self.pos + 2)[0]
            hlen = 4
            if n < 126:
                raise ProtocolViolation("server used a 16-bit length for %d bytes" % n)
        elif n == 127:
            self._fill(10, deadline, what)
            n = struct.unpack_from("!Q", self.buf, self.pos + 2)[0]
            hlen = 10
            if n < 65536 or n >> 63:
                raise ProtocolViolation("server used a 64-bit length for %d bytes" % n)
        if rsv and not (rsv == 4 and self.deflate and opcode in (OP_TEXT, OP_BINARY)):
            raise ProtocolViolation("server frame has RSV bits %d (opcode %d)" % (rsv, opcode))
        if opcode not in OPNAMES:
            raise ProtocolViolation("server frame has reserved opcode %d" % opcode)
        if opcode >= 8 and (not fin or n > 125):
            raise ProtocolViolation("server control frame fin=%d length %d" % (fin, n))
        self._fill(hlen + n, deadline, what)
        start = self.pos + hlen
        payload = bytes(self.buf[start:start + n])
        self.pos = start + n
        if self.got_close:
            raise ProtocolViolation("server sent %r after its close frame" % Frame(fin, rsv, opcode, payload))
        return Frame(fin, rsv, opcode, payload)

    def recv_event(self, timeout=None, what="a message"):
        """Next complete message (fragments joined) or control frame."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()), what)
            if f.opcode == OP_CLOSE:
                self.got_close = True
                p = f.payload
                if len(p) == 1:
                    raise ProtocolViolation("server close frame has a 1-byte payload")
                if not p:
                    return Event("close")
                code = struct.unpack("!H", p[:2])[0]
                if code not in VALID_CLOSE_CODES_SENT_BY_SERVER:
                    raise ProtocolViolation("server sent close code %d, not valid on the wire" % code)
                if not utf8_valid(p[2:]):
                    raise ProtocolViolation("server close reason is not UTF-8: %r" % p[2:])
                return Event("close", code=code, reason=p[2:])
            if f.opcode == OP_PING:
                return Event("ping", f.payload)
            if f.opcode == OP_PONG:
                return Event("pong", f.payload)
            if f.opcode == OP_CONT:
                if self.frag_op is None:
                    raise ProtocolViolation("server sent a continuation frame with no message open")
                self.frag_parts.append(f.payload)
            else:
                if self.frag_op is not None:
                    raise ProtocolViolation("server started a new message inside a fragmented one")
                self.frag_op = f.opcode
                self.frag_parts = [f.payload]
                self.frag_rsv1 = f.rsv == 4
            if f.fin:
                op, data = self.frag_op, b"".join(self.frag_parts)
                zipped = self.frag_rsv1
                self.frag_op, self.frag_parts, self.frag_rsv1 = None, [], False
                if zipped and self.inflater is not None:
                    try:
                        data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
                    except zlib.error as e:
                        raise ProtocolViolation("server's message does not inflate after the "
                                                "ones before it: %s" % e)
                elif zipped:
                    data = inflate_message(data)
                if op == OP_TEXT:
                    if not utf8_valid(data):
                        raise ProtocolViolation("server sent a text message that is not UTF-8")
                    return Event("text", data, compressed=zipped)
                return Event("binary", data, compressed=zipped)

    def expect_event(self, kind, data=None, timeout=None):
        what = "%s %s" % (kind, short(data) if data is not None else "")
        try:
            ev = self.recv_event(timeout, what)
        except EOF as e:
            fail("expected %s, got the connection closed (%s)" % (what, e))
        if ev.kind != kind or (data is not None and ev.data != data):
            if ev.kind == kind and data is not None:
                same_payload(ev.data, data, "%s payload" % kind)
            fail("expected %s, got %r" % (what, ev))
        return ev

    def expect_echo(self, opcode, payload, timeout=None):
        kind = "text" if opcode == OP_TEXT else "binary"
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return self.expect_event(kind, payload, timeout)

    def expect_pong(self, payload, timeout=None):
        return self.expect_event("pong", payload, timeout)

    def expect_close(self, codes, timeout=None):
        """Next event must be a close frame whose code is in `codes` (None in
        `codes` stands for an empty close payload)."""
        if isinstance(codes, int) or codes is None:
            codes = {codes}
        try:
            ev = self.recv_event(timeout, "a close frame with code %s" % sorted(codes, key=str))
        except EOF as e:
            fail("expected a close frame with code %s, got the connection closed without one (%s)"
                 % (sorted(codes, key=str), e))
        except TestFailure as e:
            if "timed out" in str(e):
                fail("expected a close frame with code %s, got nothing within the time limit"
                     % sorted(codes, key=str))
            raise
        if ev.kind != "close":
            fail("expected a close frame with code %s, got %r" % (sorted(codes, key=str), ev))
        if ev.code not in codes:
            fail("expected close code %s, got close code %s (reason %r)"
                 % (sorted(codes, key=str), ev.code, bytes(ev.reason[:60])))
        return ev

    def expect_eof(self, timeout=None, what="the server to close TCP"):
        """Nothing but EOF may follow: the server closes the TCP connection."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(3))
        if len(self.buf) > self.pos:
            fail("expected %s, got %d more bytes: %r" % (what, len(self.buf) - self.pos,
                                                         bytes(self.buf[self.pos:self.pos + 40])))
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("expected %s within %.1fs; the connection stayed open" % (
                    what, timeout if timeout is not None else T(3)))
            if wait_readable(self.sock, left):
                self._read_some()
                if len(self.buf) > self.pos:
                    fail("expected %s, got more bytes: %r" % (what, bytes(self.buf[self.pos:self.pos + 40])))

    def expect_silence(self, wait):
        """No frame at all arrives within `wait` seconds, and no EOF."""
        try:
            ev = self.recv_event(wait, "silence")
        except EOF:
            fail("expected the connection to stay open and quiet, the server closed it")
        except TestFailure as e:
            if "timed out" in str(e):
                return
            raise
        fail("expected nothing from the server, got %r" % ev)

    def fail_expected(self, codes, timeout=None):
        """A protocol error was sent: the server must answer with a close
        frame carrying one of `codes` and then close TCP (we answer its close
        the way a polite client does)."""
        ev = self.expect_close(codes, timeout)
        self.try_send(build_frame(OP_CLOSE, close_payload(ev.code) if ev.code else b""))
        self.expect_eof()
        return ev

    def close_handshake(self, code=1000, reason=b"", expect_codes=None):
        """Client-initiated clean close: send close, get the same code back,
        then the server closes TCP."""
        self.send_close(code, reason)
        self.expect_close(expect_codes if expect_codes is not None else code)
        self.expect_eof()


# ---------------------------------------------------------------------------
# The case runner


class Runner:
    """Runs named cases, prints one line per case (what was expected and what
    came, for a failure), and at the end `NAME: N passed, M failed`."""

    def __init__(self, name, watchdog=None):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.current_server = None
        self.started = time.monotonic()
        limit = watchdog if watchdog is not None else float(os.environ.get("RINGWS_TEST_WATCHDOG", 280 * SLOW))
        self._dog = threading.Timer(limit, self._watchdog, args=(limit,))
        self._dog.daemon = True
        self._dog.start()
        print("%s: binary %s, time scale %.1f%s" % (name, BIN, SLOW, self._tls_note()), flush=True)

    @staticmethod
    def _tls_note():
        if not TLS_ENV:
            return ""
        return ", over TLS" + (" (nginx in front)" if TLS_FRONT == "nginx" else "")

    def _watchdog(self, limit):
        with self.lock:
            print("FAIL watchdog: the script ran past %.0fs; stopping" % limit, flush=True)
            _kill_all()
            print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed + 1), flush=True)
            os._exit(1)

    def record(self, cid, ok, msg="", dur=0.0):
        with self.lock:
            if ok:
                self.passed += 1
                print("ok   %s (%.2fs)" % (cid, dur), flush=True)
            else:
                self.failed += 1
                print("FAIL %s (%.2fs): %s" % (cid, dur, msg), flush=True)

    def _invoke(self, fn, args, timeout):
        if inspect.iscoroutinefunction(fn):
            return asyncio.run(asyncio.wait_for(fn(*args), timeout))
        return fn(*args)

    @staticmethod
    def _describe(exc):
        if isinstance(exc, TestFailure):
            return str(exc)
        if isinstance(exc, (asyncio.TimeoutError, CaseTimeout)):
            return "the case did not finish within its time limit"
        tb = traceback.extract_tb(exc.__traceback__)
        where = ""
        for fr in reversed(tb):
            if os.path.basename(fr.filename).startswith(("test_", "ringws_test")):
                where = " at %s:%d" % (os.path.basename(fr.filename), fr.lineno)
                break
        return "%s: %s%s" % (type(exc).__name__, exc, where)

    def _server_note(self):
        srv = self.current_server
        if srv is not None and srv.proc is not None and not srv.alive():
            return " [server %s is no longer running, status %s; stderr %s]" % (
                srv.label, srv.proc.returncode, srv.stderr_tail(800))
        return ""

    def case(self, cid, fn, *args, timeout=30):
        """Runs one case in this thread with a hard time limit."""
        limit = T(timeout)
        t0 = time.monotonic()
        srv = self.current_server
        reports_before = srv.sanitizer_count() if srv is not None and srv.proc is not None else 0

        def on_alarm(signum, frame):
            raise CaseTimeout()

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit + 2)
        try:
            self._invoke(fn, args, limit)
        except BaseException as exc:  # noqa: BLE001 - every failure is a result
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.record(cid, False, self._describe(exc) + self._server_note(), time.monotonic() - t0)
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if srv is not None and srv.proc is not None and srv.sanitizer_count() > reports_before:
            self.record(cid, False, "the server wrote a sanitizer report during this case: %s"
                        % srv.stderr_tail(1500), time.monotonic() - t0)
            return False
        self.record(cid, True, dur=time.monotonic() - t0)
        return True

    def parallel(self, cases, workers=16, timeout=30):
        """Runs (id, fn, args...) cases on a pool of threads; the results are
        printed as they finish. Each case must bound its own time (every
        socket operation here has a timeout)."""
        import concurrent.futures as cf

        def one(c):
            cid, fn, args = c[0], c[1], c[2:]
            t0 = time.monotonic()
            try:
                self._invoke(fn, args, T(timeout))
            except Exception as exc:  # noqa: BLE001
                return cid, False, self._describe(exc), time.monotonic() - t0
            return cid, True, "", time.monotonic() - t0

        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for cid, ok, msg, dur in pool.map(one, cases):
                if not ok:
                    msg += self._server_note()
                self.record(cid, ok, msg, dur)

    def server(self, args=(), label="default", **kw):
        """kw: Server's bind, env, cmd, tls and plain_port. Under
        RINGWS_TEST_TLS=1 a server of the binary listens with TLS."""
        if TLS_ENV and "cmd" not in kw and "tls" not in kw:
            kw["tls"] = suite_certs()
        return _ServerScope(self, args, label, kw)

    def finish(self):
        self._dog.cancel()
        _kill_all()
        print("(%.1fs)" % (time.monotonic() - self.started), flush=True)
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        sys.stdout.flush()
        os._exit(0 if self.failed == 0 and self.passed > 0 else 1)


class _ServerScope:
    """`with runner.server(args, label) as srv:` starts a server (a failure to
    start is a failed case and skips nothing silently: the cases inside fail
    on their own) and, at the end, counts a case that the server stayed up
    and ended cleanly on SIGTERM with no sanitizer report."""

    def __init__(self, runner, args, label, kw):
        self.runner, self.args, self.label, self.kw = runner, args, label, kw
        self.srv = None

    def __enter__(self):
        self.srv = Server(self.args, self.label, **self.kw)
        try:
            self.srv.start()
        except TestFailure as e:
            self.runner.record("server[%s] start" % self.label, False, str(e))
            self.srv.port = _dead_port()
        self.runner.current_server = self.srv
        return self.srv

    def __exit__(self, *exc):
        self.runner.current_server = None
        if self.srv.proc is None or self.srv.port is None:
            return False
        t0 = time.monotonic()
        problems = self.srv.stop()
        self.runner.record("server[%s] ran and exited cleanly" % self.label, not problems,
                           "; ".join(problems), time.monotonic() - t0)
        return False


def _dead_port():
    """A port nothing listens on, so that cases against a server that failed
    to start fail quickly with 'connection refused'."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ws_uri(port, path="/echo", tls=SUITE_TLS):
    return "%s://127.0.0.1:%d%s" % ("wss" if client_tls(tls) else "ws", port, path)


def ws_connect(port, path="/echo", tls=SUITE_TLS, **kw):
    """The websockets library's client, configured for tests: no size limit,
    no compression offer, no keepalive pings of its own (it still answers the
    server's), bounded timeouts; over TLS when `tls` says so."""
    import websockets
    ctx = client_tls(tls)
    opts = dict(max_size=None, compression=None, ping_interval=None, open_timeout=T(5),
                close_timeout=T(5), max_queue=None)
    if ctx is not None:
        opts["ssl"] = ctx
    opts.update(kw)
    return websockets.connect(ws_uri(port, path, ctx or None), **opts)


# How long a fresh, well-behaved client may take while the server is under attack.
SERVE_LIMIT = 2.0 + slack(2)


def assert_served(port, when, limit=None, tls=SUITE_TLS):
    """A fresh well-behaved client: the websockets library opens /echo, gets
    its message back and closes, then GET /healthz answers 200 "ok". All of
    it within `limit` seconds; returns how long it took."""
    import websockets
    limit = limit or SERVE_LIMIT

    async def go():
        t0 = time.monotonic()
        async with ws_connect(port, tls=tls, open_timeout=limit, close_timeout=limit) as ws:
            await ws.send("probe " + when)
            eq(await ws.recv(), "probe " + when, "echo to a well-behaved client " + when)
            await ws.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(tls))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        expect(data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nok\n"),
               "200 ok from /healthz " + when, short(data))
        return time.monotonic() - t0

    try:
        return asyncio.run(asyncio.wait_for(go(), limit))
    except asyncio.TimeoutError:
        fail("a well-behaved client (echo at /echo, then /healthz) was not served within %.1fs %s"
             % (limit, when))
    except (OSError, websockets.exceptions.WebSocketException) as e:
        fail("a well-behaved client was refused %s: %s: %s" % (when, type(e).__name__, e))


async def gather_all(*coros):
    """Runs coroutines concurrently, waits for every one of them (so none is
    left running or unretrieved) and raises the first failure."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            raise res
    return results
