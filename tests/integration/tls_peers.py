"""TLS peers for the tests, beside python's ssl sockets: `openssl s_client`
run once and its report parsed; `openssl s_server` as a peer that allows
what the server under test must refuse (old versions, weak suites, h2,
renegotiation), so that every probe is first seen to succeed where it
should; and TlsPipe, a TLS client over memory BIOs whose every byte on the
wire the test sees and may replace.
"""

import os
import re
import select
import socket
import ssl
import subprocess
import threading
import time

from ringws_test import T, fail, ragged_eof
from tls_ca import OPENSSL


# ---------------------------------------------------------------------------
# openssl s_client


class SClient:
    """What one `openssl s_client` run reports: `established` (a suite was
    agreed), `protocol`, `cipher`, `reused` (the session was resumed),
    `alpn`, `subject` of the peer's certificate, `verify` (the return code,
    0 when the chain and name checked out), `alerts` (the alert texts it
    printed) and `out` (stdout and stderr)."""

    def __init__(self, rc, out):
        self.rc, self.out = rc, out
        m = re.search(r"^(New|Reused), (\S+), Cipher is (\S+)", out, re.M)
        self.established = bool(m) and m.group(3) != "(NONE)"
        self.reused = bool(m) and m.group(1) == "Reused"
        self.cipher = m.group(3) if m else None
        # TLS 1.3 prints its session (with the protocol) only when a
        # ticket came; its suites say the version anyway.
        m = re.search(r"^\s*Protocol\s*: (\S+)", out, re.M)
        if not self.established:
            self.protocol = None
        elif self.cipher.startswith("TLS_"):
            self.protocol = "TLSv1.3"
        else:
            self.protocol = m.group(1) if m else None
        m = re.search(r"^ALPN protocol: (\S+)", out, re.M)
        self.alpn = m.group(1) if m else None
        m = re.search(r"^subject=(.*)$", out, re.M)
        self.subject = m.group(1).strip() if m else None
        m = re.search(r"^\s*Verify return code: (\d+)", out, re.M)
        self.verify = int(m.group(1)) if m else None
        self.alerts = re.findall(r"(?:tlsv1|sslv3|tlsv13) alert ([a-z ]+?)(?::|$)", out, re.M)
        self.alert_numbers = [int(n) for n in re.findall(r"SSL alert number (\d+)", out)]

    def brief(self):
        if self.established:
            return "established %s %s%s, ALPN %s, subject %r, verify %s" % (
                self.protocol, self.cipher, " (resumed)" if self.reused else "", self.alpn,
                self.subject, self.verify)
        lines = [ln for ln in self.out.splitlines() if "error" in ln or "alert" in ln]
        return "not established (status %d): %s" % (self.rc, " | ".join(lines)[-400:] or self.out[-300:])


def s_client(port, args=(), stdin=b"", ca=None, timeout=None, host="127.0.0.1"):
    """Runs s_client against host:port with `args`, feeding `stdin` (its
    end ends the session unless -ign_eof is given)."""
    cmd = [OPENSSL, "s_client", "-connect", "%s:%d" % (host, port)]
    if ca is not None:
        cmd += ["-CAfile", ca.root.cert]
    cmd += list(args)
    try:
        proc = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout or T(10))
    except subprocess.TimeoutExpired as e:
        fail("openssl s_client did not end within %.0fs: %s; output %r"
             % (timeout or T(10), " ".join(cmd), (e.output or b"")[-400:]))
    return SClient(proc.returncode, proc.stdout.decode("utf-8", "replace"))


class InteractiveSClient:
    """s_client kept running with its stdin open, for the commands it
    reads from there (R: renegotiate, K/k: key update); its output is
    collected as it comes."""

    def __init__(self, port, args=(), ca=None):
        cmd = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port]
        if ca is not None:
            cmd += ["-CAfile", ca.root.cert]
        self.proc = subprocess.Popen(cmd + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.buf = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            with self.lock:
                self.buf += chunk

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern, timeout, start=0):
        """The match of `pattern` in the output past `start`, or None when
        `timeout` passed or s_client ended without it."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text()[start:], re.M)
            if m or time.monotonic() > deadline:
                return m
            if self.proc.poll() is not None:
                self.reader.join(1)
                return re.search(pattern, self.text()[start:], re.M)
            time.sleep(0.01)

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# openssl s_server: a peer that allows what ringws must refuse


class PermissiveServer:
    """`openssl s_server` on a free port with the given certificate,
    security level 0 (every suite and version OpenSSL still has), ALPN h2
    and client renegotiation allowed, as a reference that the probes of the
    refusal cases do connect where a server lets them."""

    def __init__(self, cert, args=()):
        cmd = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", cert.cert, "-key", cert.key,
               "-cipher", "ALL:COMPLEMENTOFALL:@SECLEVEL=0", "-alpn", "h2",
               "-client_renegotiation"] + list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        out = b""
        deadline = time.monotonic() + T(10)
        fd = self.proc.stdout.fileno()
        while True:
            m = re.search(rb"^ACCEPT .*:(\d+)\r?\n", out, re.M)
            if m:
                break
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if r else b""
            if not chunk:
                self.close()
                fail("openssl s_server did not start: %s; output %r" % (" ".join(cmd), out[-300:]))
            out += chunk
        self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while os.read(self.proc.stdout.fileno(), 65536):
            pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# TLS records on the wire

CT_ALERT, CT_APPDATA = 21, 23


def parse_records(data):
    """(complete records as (content type, version, length), bytes left)."""
    out, pos = [], 0
    while len(data) - pos >= 5:
        ctype, ver, n = data[pos], int.from_bytes(data[pos + 1:pos + 3], "big"), \
            int.from_bytes(data[pos + 3:pos + 5], "big")
        if len(data) - pos - 5 < n:
            break
        out.append((ctype, ver, n, bytes(data[pos + 5:pos + 5 + n])))
        pos += 5 + n
    return out, data[pos:]


def read_until_closed(sock, timeout):
    """Everything the peer sends until it closes: (bytes, "eof"|"reset"),
    or fails when the connection is still open after `timeout`."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("expected the server to close the connection within %.1fs; it stayed open "
                 "(%d bytes read: %r)" % (timeout, len(got), got[:40]))
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got, "reset"
        if not data:
            return got, "eof"
        got += data


def plaintext_alert(description, level=2, version=0x0303):
    return bytes([CT_ALERT]) + version.to_bytes(2, "big") + b"\x00\x02" + bytes([level, description])


class TlsPipe:
    """A TLS client whose records the test handles: the SSLObject works on
    memory BIOs and this class moves the bytes, so a test can stop half
    way through a handshake, count the records the server sends, or write
    bytes of its own between them."""

    def __init__(self, port, ctx, server_hostname="127.0.0.1", timeout=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout or T(5))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.raw = bytearray()      # every byte the server sent, as it came

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout):
        """Reads what the server sent within `timeout` into the TLS object;
        False when nothing came."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.incoming.write_eof()
            return True
        self.raw += data
        self.incoming.write(data)
        return True

    def client_hello(self):
        """The ClientHello this client would send, not sent."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def handshake(self, timeout=None):
        deadline = time.monotonic() + (timeout or T(5))
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
            left = deadline - time.monotonic()
            if left <= 0:
                fail("TLS handshake did not finish within %.1fs" % (timeout or T(5)))
            self.pump(left)

    def write(self, data):
        self.obj.write(data)
        self.flush()

    def read(self, timeout=None):
        """Decrypted bytes: at least one, or b"" once the server's
        close_notify came; SSLEOFError at an EOF without it."""
        deadline = time.monotonic() + (timeout or T(5))
        while True:
            try:
                return self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                self.flush()
            except ssl.SSLError as e:
                if ragged_eof(e) and not isinstance(e, ssl.SSLEOFError):
                    raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF without close_notify") from None
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                fail("nothing from the server within %.1fs" % (timeout or T(5)))
            self.pump(left)

    def read_exactly(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or T(5))
        out = b""
        while len(out) < n:
            got = self.read(max(0.01, deadline - time.monotonic()))
            if not got:
                fail("the server closed (close_notify) after %d of %d bytes: %r" % (len(out), n, out[:60]))
            out += got
        return out

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dup_raw(tls_sock):
    """A plain socket on the same connection as an SSLSocket: what is
    written to it goes to the server as it is, past the TLS layer."""
    return socket.socket(fileno=os.dup(tls_sock.fileno()))


# ---------------------------------------------------------------------------
# TLS 1.3 records of the test's own making


def hkdf_expand_label(secret, label, length, hash_name):
    """HKDF-Expand-Label(secret, label, "", length) of RFC 8446 7.1."""
    import hmac
    info = length.to_bytes(2, "big") + bytes([6 + len(label)]) + b"tls13 " + label + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hash_name).digest()
        out += block
        i += 1
    return out[:length]


class Tls13Writer:
    """The client's side of a TLS 1.3 connection after its handshake,
    written by the test: python's client sent nothing but its Finished, so
    the client's application records start at sequence 0 with the traffic
    secret python logged (`keylog`, a file of this one connection). What
    the server sends is still read by python (TlsPipe.read). Records can
    carry any inner type, padding, or plaintext longer than TLS allows."""

    KEY_UPDATE = 24

    def __init__(self, suite, keylog):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
        with open(keylog) as f:
            secrets = [ln.split()[2] for ln in f if ln.startswith("CLIENT_TRAFFIC_SECRET_0 ")]
        if len(secrets) != 1:
            fail("expected one CLIENT_TRAFFIC_SECRET_0 in the key log, got %d" % len(secrets))
        self.hash = "sha384" if suite.endswith("SHA384") else "sha256"
        self.aead, self.key_len = {
            "TLS_AES_128_GCM_SHA256": (AESGCM, 16), "TLS_AES_256_GCM_SHA384": (AESGCM, 32),
            "TLS_CHACHA20_POLY1305_SHA256": (ChaCha20Poly1305, 32)}[suite]
        self._use(bytes.fromhex(secrets[0]))

    def _use(self, secret):
        self.secret = secret
        self.key = self.aead(hkdf_expand_label(secret, b"key", self.key_len, self.hash))
        self.iv = hkdf_expand_label(secret, b"iv", 12, self.hash)
        self.seq = 0

    def record(self, inner_type, data, padding=0):
        inner = bytes(data) + bytes([inner_type]) + bytes(padding)
        header = bytes([CT_APPDATA, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
        nonce = bytes(a ^ b for a, b in zip(self.iv, self.seq.to_bytes(12, "big")))
        self.seq += 1
        return header + self.key.encrypt(nonce, inner, header)

    def key_update(self, requested):
        """A KeyUpdate record; later records use the next secret."""
        rec = self.record(22, bytes([self.KEY_UPDATE, 0, 0, 1, 1 if requested else 0]))
        size = len(self.secret)
        self._use(hkdf_expand_label(self.secret, b"traffic upd", size, self.hash))
        return rec
