"""TLS with real peers: the server listens with TLS (--tls-cert/--tls-key,
five certificates of a CA this test makes, chosen by SNI) and a plaintext
listener beside it (--plain-port), and is driven by python's ssl and the
websockets library over wss://, by `openssl s_client`, by Node's `ws`
(Debian's node-ws) and by raw bytes:

- echo (text, binary, messages spanning many records, bursts of small ones
  that must leave in few records, records cut into 5-byte segments or
  spread over 64-byte receive buffers), pub/sub with TLS and plain
  subscribers of one topic, pipelined HTTP over TLS, the plain listener
  beside it, idle pings, close 1012 and close_notify at shutdown;
- a storm of handshakes on one worker with a 1ms handshake budget: an
  established connection keeps echoing and clients that send a large
  request right after their Finished are served;
- TLS 1.2 and 1.3 accepted with forward-secret AEAD suites, TLS 1.0/1.1
  and weak suites refused, ALPN http/1.1 chosen and an offer without it
  refused with no_application_protocol, resumption with stateless tickets
  in both versions and no 0-RTT, client renegotiation refused with an
  answer, a TLS 1.3 KeyUpdate honoured;
- SNI: the certificate the client sees is the one for its name (exact,
  case-insensitive, wildcard one label deep, a chain through an
  intermediate, RSA), the default one otherwise;
- bad input gets a clear, bounded answer: plain HTTP (an alert, a close or
  a plain 400), garbage, truncated
  and huge records, alerts before, during and after the handshake, a
  ClientHello that never completes (the handshake timeout), a peer that
  leaves without close_notify while others keep going; the server sends
  close_notify before it closes, whatever the reason (RFC 8446 6.1: after
  its WebSocket close, at shutdown, at a timeout, in answer to the
  client's), unless it sent an error alert;
- SIGHUP reloads the certificates under load (a few dozen connections echo
  throughout, none is dropped); a bad file keeps the old ones.

Every refusal probe is first run against `openssl s_server` allowing what
is refused, so a probe that could not succeed anywhere cannot pass here.
With RINGWS_TLS_FRONT=nginx the same cases run against nginx terminating
TLS in front of a plain ringws (see tls_nginx.py), which skips what only the
server has (/metrics, its log lines); nginx fails the cases where it
answers bytes that are not TLS (garbage, an alert first) with an HTTP 400,
matches a wildcard name across more than one label, and closes without a
close_notify of its own after the client's.
"""

import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (EOF, OP_BINARY, OP_CLOSE, OP_TEXT, TLS_FRONT, HttpConn, RawWS,  # noqa: E402
                         Runner, Server, T, assert_served, build_frame, close_payload, connect, eq, expect,
                         fail, gather_all, http_get, same_payload, short, slack, tls_wrap,
                         upgrade_request, ws_connect)
import tls_ca  # noqa: E402
from tls_peers import (CT_ALERT, InteractiveSClient, PermissiveServer,  # noqa: E402
                       Tls13Writer, TlsPipe, dup_raw, parse_records, plaintext_alert, read_until_closed,
                       s_client)

NATIVE = TLS_FRONT != "nginx"
NODE = os.environ.get("RINGWS_NODE", "/usr/bin/node")
NODE_PATH = os.environ.get("RINGWS_NODE_PATH", "/usr/share/nodejs")

CA = tls_ca.shared_ca()
DEFAULT = CA.issue()
OTHER = CA.issue(("other.test",))
WILD = CA.issue(("*.wild.test",), cn="wild test")
RSA = CA.issue(("rsa.test",), kind="rsa")
CHAIN = CA.intermediate().issue(("chain.test",))
CERTS = [DEFAULT, OTHER, WILD, RSA, CHAIN]

CTX = CA.client_context()
CTX12 = CA.client_context(versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
CTX13 = CA.client_context(versions=(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3))

# A peer's misbehaviour must be answered within this (the server's own
# timeouts are all longer: the answer comes from reading the bytes).
PROMPT = 2.0 + slack(2)


def tls_sock(port, ctx=CTX, sni="127.0.0.1", clean_eof=False):
    """A TlsSocket with its handshake done; `sni` is also the name checked
    (an IP address sends no SNI)."""
    return tls_wrap(connect(port, tls=None), ctx, sni, clean_eof)


def no_name_check(ctx_versions=None):
    ctx = CA.client_context(versions=ctx_versions)
    ctx.check_hostname = False
    return ctx


def http_over(sock, path="/healthz", port=0, close=True):
    """One request on an open (TLS) socket; the response."""
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (
        path, port, "Connection: close\r\n" if close else "")
    sock.sendall(head.encode())
    return HttpConn(port, sock=sock).read_response()


def metrics(port):
    resp = http_get(port, "/metrics", tls=CTX)
    eq(resp.status, 200, "GET /metrics status")
    out = {}
    for line in resp.body.decode().splitlines():
        m = re.match(r"^(ringws_tls_\w+(?:\{[^}]*\})?) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


# ---------------------------------------------------------------------------
# Clients over wss://


async def t_echo(port, ctx, kind):
    async with ws_connect(port, tls=ctx) as ws:
        for payload in (["hello", "h\u00e9llo \u2713 \U0001F680", ""] if kind == "text"
                        else [bytes(range(256)), b"", os.urandom(1000)]):
            await ws.send(payload)
            same_payload(await ws.recv(), payload, "%s echo over TLS" % kind)
        await ws.close()
        eq(ws.close_code, 1000, "close code the server answered")


async def t_large(port, size, kind):
    """One message spanning many 16 KiB records each way."""
    data = os.urandom(size) if kind == "binary" else ("\u00e9a" * (size // 3 + 1))[:size // 2]
    async with ws_connect(port, tls=CTX) as ws:
        await ws.send(data)
        same_payload(await ws.recv(), data, "%d-byte %s echo over TLS" % (size, kind))
        await ws.close()


async def t_many_small(port, n):
    """n small messages sent without waiting; every echo comes, in order."""
    async with ws_connect(port, tls=CTX) as ws:
        msgs = ["m%05d" % i if i % 3 else b"b%05d" % i for i in range(n)]

        async def send_all():
            for m in msgs:
                await ws.send(m)

        async def recv_all():
            for i, m in enumerate(msgs):
                got = await ws.recv()
                if got != m:
                    fail("echo %d of %d: expected %r, got %r" % (i, n, m, short(got)))

        await gather_all(send_all(), recv_all())
        await ws.close()


def t_small_coalesced(port):
    """200 small frames in one record: their echoes leave together, in few
    records (the server flushes its batch, not one record a message)."""
    with TlsPipe(port, CTX) as p:
        p.handshake()
        req, key = upgrade_request(port)
        p.write(req)
        head = b""
        while b"\r\n\r\n" not in head:
            head += p.read()
        expect(head.startswith(b"HTTP/1.1 101 "), "101 Switching Protocols", short(head))
        rest = head[head.index(b"\r\n\r\n") + 4:]
        frames = [build_frame(OP_TEXT, b"small echo %03d" % i) for i in range(200)]
        want = b"".join(b"\x81" + bytes([len(b"small echo %03d" % i)]) + b"small echo %03d" % i
                        for i in range(200))
        # Wait for the tickets and anything else the server sends after
        # the handshake, so that what is counted below is the echo.
        while p.pump(0.1):
            try:
                rest += p.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                pass
        before = len(p.raw)
        p.write(b"".join(frames))
        got = rest + p.read_exactly(len(want) - len(rest))
        same_payload(got, want, "the 200 echoes")
        records, left = parse_records(bytes(p.raw[before:]))
        eq(left, b"", "bytes after the last whole record")
        expect(len(records) <= 4, "the 200 echoes (%d bytes) in at most 4 records" % len(want),
               "%d records of %s bytes" % (len(records), [r[2] for r in records][:20]))


def t_pubsub(port, plain_port):
    """Subscribers over TLS and over the plain listener on one topic; an
    HTTPS publisher; every subscriber gets every message, in order."""
    subs = [RawWS.open(port, "/ws?topics=tls.news", tls=CTX) for _ in range(3)]
    subs += [RawWS.open(plain_port, "/ws?topics=tls.news", tls=None) for _ in range(2)]
    try:
        for s in subs:
            s.send_frame(0x9, b"sync")
            s.expect_pong(b"sync")
        with HttpConn(port, tls=CTX) as c:
            for i in range(30):
                body = ("news %d \u2713" % i).encode() if i % 2 else os.urandom(50 + i)
                ctype = "text/plain" if i % 2 else "application/octet-stream"
                c.send("POST /publish/tls.news HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                       "Content-Length: %d\r\n\r\n" % (ctype, len(body)))
                c.sock.sendall(body)
                resp = c.read_response()
                eq((resp.status, json.loads(resp.body)), (200, {"recipients": 5}), "publish %d answer" % i)
                for j, s in enumerate(subs):
                    s.expect_event("text" if i % 2 else "binary", body)
        for s in subs:
            s.close_handshake()
    finally:
        for s in subs:
            s.close()


def t_alpn_python(port):
    ctx = CA.client_context(alpn=["h2", "http/1.1"])
    with tls_sock(port, ctx) as s:
        eq(s.selected_alpn_protocol(), "http/1.1", "ALPN the server chose from h2, http/1.1")
        eq(s.version(), "TLSv1.3", "version a default python client gets")
        resp = http_over(s, port=port)
        eq((resp.status, resp.body), (200, b"ok\n"), "GET /healthz over TLS")


def t_plain_listener(port, plain_port, stdout_lines):
    resp = http_get(plain_port, "/healthz", tls=None)
    eq((resp.status, resp.body), (200, b"ok\n"), "GET /healthz on the plain listener")
    with RawWS.open(plain_port, tls=None) as ws:
        ws.send_frame(OP_TEXT, b"plain beside TLS")
        ws.expect_echo(OP_TEXT, b"plain beside TLS")
        ws.close_handshake()
    # A TLS client on the plain port is not answered with TLS.
    try:
        with tls_sock(plain_port, CTX):
            fail("a TLS handshake succeeded on the plain listener")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass
    if NATIVE:
        # Under nginx the line is the plain server's own.
        opens = [ln for ln in stdout_lines if ln.startswith("open ")]
        expect(opens and opens[0].startswith("open https://"), "the 'open https://...' line",
               opens)


def t_node_ws(port, version, ciphers=None):
    if not os.access(NODE, os.X_OK):
        fail("no node at %s (Node 20 is part of the machine setup)" % NODE)
    if not os.path.isdir(os.path.join(NODE_PATH, "ws")):
        fail("no node-ws under %s: install Debian's node-ws (tools/setup.sh does)" % NODE_PATH)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_ws_echo.js")
    args = [NODE, script, "wss://127.0.0.1:%d/echo" % port, CA.cert] + \
        ([version] if version else []) + ([ciphers] if ciphers else [])
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(30),
                          env=dict(os.environ, NODE_PATH=NODE_PATH))
    try:
        res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        fail("node printed no result (status %d): %r %r" % (proc.returncode, proc.stdout[-300:],
                                                            proc.stderr[-600:]))
    expect(res.get("ok") and proc.returncode == 0, "node ws: every echo back and a 1000 close",
           res.get("error") or res)
    eq(res["authorized"], True, "node's verdict on the certificate chain")
    eq(res["protocol"], version or "TLSv1.3", "TLS version node got")
    if ciphers:
        eq(res["cipher"], ciphers, "suite node got")


def t_suite_tls12(port, suite, sni):
    """One TLS 1.2 suite, messages of many records both ways."""
    ctx = CA.client_context(versions=(ssl.TLSVersion.TLSv1_2,) * 2)
    ctx.set_ciphers(suite)
    with RawWS.open(port, sock=tls_sock(port, ctx, sni=sni)) as ws:
        eq(ws.sock.cipher()[0], suite, "suite agreed")
        data = os.urandom(200000)
        ws.send_frame(OP_BINARY, data)
        ws.expect_echo(OP_BINARY, data, timeout=T(10))
        for i in range(50):
            ws.send_frame(OP_TEXT, b"small %d" % i)
        for i in range(50):
            ws.expect_echo(OP_TEXT, b"small %d" % i)
        ws.close_handshake()


# ---------------------------------------------------------------------------
# Versions, suites, ALPN, renegotiation (openssl s_client)


def established(r, what):
    expect(r.established, what, r.brief())


def refused(r, what):
    expect(not r.established, what, r.brief())


def calibrated(args, cert=DEFAULT, server_args=(), expect_alpn=None, sni=None):
    """The probe `args` connects to s_server allowing it (the probe is
    able to succeed)."""
    extra = ["-servername", sni] if sni else []
    with PermissiveServer(cert, server_args) as ref:
        r = s_client(ref.port, list(args) + extra, ca=CA)
    expect(r.established, "the probe %s to connect to openssl s_server allowing it" % " ".join(args),
           r.brief())
    if expect_alpn:
        eq(r.alpn, expect_alpn, "ALPN the permissive s_server chose")
    return r


def t_version_accepted(port, flag, version):
    r = s_client(port, [flag, "-verify_ip", "127.0.0.1", "-verify_return_error"], ca=CA)
    established(r, "a %s handshake" % version)
    eq(r.protocol, version, "protocol")
    eq(r.verify, 0, "certificate verification of the default certificate for 127.0.0.1")
    expect(r.cipher.startswith("TLS_") or ("ECDHE" in r.cipher and
                                           ("GCM" in r.cipher or "CHACHA20" in r.cipher)),
           "a forward-secret AEAD suite", r.cipher)


def t_version_refused(port, flag, server_flag):
    probe = [flag, "-cipher", "DEFAULT:@SECLEVEL=0"]
    calibrated(probe, server_args=[server_flag])
    r = s_client(port, probe, ca=CA)
    refused(r, "%s refused" % flag)
    expect("protocol version" in r.alerts or 70 in r.alert_numbers or r.rc != 0,
           "a protocol_version alert or a close", r.brief())


def t_weak_suite_refused(port, suite, cert, sni):
    probe = ["-tls1_2", "-cipher", suite + ":@SECLEVEL=0"]
    calibrated(probe, cert=cert, sni=sni)
    r = s_client(port, probe + (["-servername", sni] if sni else []), ca=CA)
    refused(r, "TLS 1.2 with only %s offered refused" % suite)


def t_alpn(port):
    r = s_client(port, ["-alpn", "http/1.1"], ca=CA)
    established(r, "a handshake offering ALPN http/1.1")
    eq(r.alpn, "http/1.1", "ALPN selected")
    r = s_client(port, ["-alpn", "h2,http/1.1"], ca=CA)
    eq(r.alpn, "http/1.1", "ALPN selected from h2,http/1.1")
    r = s_client(port, [], ca=CA)
    established(r, "a handshake offering no ALPN")
    eq(r.alpn, None, "ALPN without an offer")


def t_alpn_h2_refused(port):
    calibrated(["-alpn", "h2"], expect_alpn="h2")
    for flag in ("-tls1_3", "-tls1_2"):
        r = s_client(port, ["-alpn", "h2", flag], ca=CA)
        refused(r, "a %s handshake offering only h2 refused" % flag)
        expect("no application protocol" in r.alerts or 120 in r.alert_numbers,
               "a no_application_protocol alert (%s)" % flag, r.brief())


RENEGOTIATION = r"^RENEGOTIATING"
DONE = r"^\s*Verify return code: \d+"


def renegotiate(port):
    """s_client -tls1_2 -msg, R once the handshake is done: (ServerHellos
    seen, whether s_client ended or saw an alert within PROMPT, output)."""
    with InteractiveSClient(port, ["-tls1_2", "-msg"], ca=CA) as c:
        if not c.wait_for(DONE, T(5)):
            fail("s_client's handshake did not finish: %r" % c.text()[-600:])
        start = len(c.text())
        c.send(b"R\n")
        if not c.wait_for(RENEGOTIATION, T(5), start):
            fail("s_client did not start renegotiating: %r" % c.text()[-600:])
        hellos = lambda: len(re.findall(r"^<<< .*ServerHello$", c.text(), re.M))  # noqa: E731
        answered = c.wait_for(r"^<<< .*Alert|^<<< .*ServerHello$", PROMPT, start) is not None \
            or c.wait_exit(0.05) is not None
        # A server that renegotiates answers with its whole flight at once.
        c.wait_for(r"^<<< .*ServerHelloDone", 0.3 if hellos() > 1 else 0, start)
        return hellos(), answered, c.text()


def t_renegotiation_refused(port):
    with PermissiveServer(DEFAULT) as ref:
        n, _, out = renegotiate(ref.port)
    eq(n, 2, "ServerHellos from s_server allowing renegotiation (the probe works)")
    n, answered, out = renegotiate(port)
    eq(n, 1, "ServerHellos: the first handshake only, no renegotiation")
    expect(answered, "an answer to the renegotiating ClientHello (an alert or a close) within %.1fs"
           % PROMPT, "nothing: %r" % out[-400:])


def t_key_update(port):
    """TLS 1.3 KeyUpdate asking for the server's: the server sends its own
    (RFC 8446 4.6.3) and the connection goes on."""
    with InteractiveSClient(port, ["-tls1_3", "-msg", "-crlf"], ca=CA) as c:
        if not c.wait_for(DONE, T(5)):
            fail("s_client's handshake did not finish: %r" % c.text()[-600:])
        start = len(c.text())
        c.send(b"K\n")
        if not c.wait_for(r"^KEYUPDATE", T(5), start):
            fail("s_client did not send a KeyUpdate: %r" % c.text()[-400:])
        c.send(b"GET /healthz HTTP/1.1\nHost: x\n\n")
        if not c.wait_for(r"^HTTP/1.1 200 OK", T(5), start):
            fail("no answer to a request after a KeyUpdate: %r" % c.text()[start:][-800:])
        expect(re.search(r"^<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate$",
                         c.text()[start:], re.M),
               "the server's KeyUpdate in answer to update_requested", c.text()[start:][-800:])
        # update_not_requested: the client's next records use its next key.
        start = len(c.text())
        c.send(b"k\n")
        if not c.wait_for(r"^KEYUPDATE", T(5), start):
            fail("s_client did not send a second KeyUpdate: %r" % c.text()[start:][-400:])
        c.send(b"GET /healthz HTTP/1.1\nHost: x\n\n")
        if not c.wait_for(r"^HTTP/1.1 200 OK", T(5), start):
            fail("no answer after a KeyUpdate (update_not_requested): %r" % c.text()[start:][-800:])


def t_record_padding(port):
    """TLS 1.3 records padded by the client (s_client -record_padding),
    up to full 16 KiB records."""
    for block in ("300", "16384"):
        r = s_client(port, ["-tls1_3", "-record_padding", block, "-ign_eof"], ca=CA,
                     stdin=b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        established(r, "a TLS 1.3 handshake padding its records to %s" % block)
        expect("HTTP/1.1 200 OK" in r.out, "the answer to a request padded to %s bytes" % block,
               r.out[-400:])


# ---------------------------------------------------------------------------
# TLS 1.3 records made by the test (the client's write side after the
# handshake, see tls_peers.Tls13Writer)


def crafted(port, keydir, name):
    ctx = CA.client_context(versions=(ssl.TLSVersion.TLSv1_3,) * 2)
    ctx.keylog_filename = os.path.join(keydir, name)
    p = TlsPipe(port, ctx)
    p.handshake()
    return p, Tls13Writer(p.obj.cipher()[0], ctx.keylog_filename)


def pipe_head(p):
    head = b""
    while b"\r\n\r\n" not in head:
        head += p.read()
    end = head.index(b"\r\n\r\n") + 4
    return head[:end], head[end:]


def pipe_expect_alert(p, alert, what):
    """The server answers with the fatal alert `alert` (OpenSSL's name of
    it, e.g. UNEXPECTED_MESSAGE) and closes."""
    deadline = time.monotonic() + PROMPT
    got = b""
    while True:
        try:
            data = p.read(max(0.01, deadline - time.monotonic()))
            if not data:
                fail("%s: expected a %s alert, got close_notify (after %r)" % (what, alert, got[:60]))
            got += data
        except ssl.SSLError as e:
            text = str(e).upper()
            if "ALERT" in text:
                expect(alert in text, "%s: a %s alert" % (what, alert), e)
                return
            fail("%s: expected a %s alert, got %s: %s" % (what, alert, type(e).__name__, e))
        except Exception as e:  # noqa: BLE001 - the message says what came
            fail("%s: expected a %s alert, got %s: %s (after %r)" % (what, alert, type(e).__name__,
                                                                    e, got[:60]))


def t_crafted_records(port):
    """Legal records a client may send: a request cut into a record, an
    empty application record and a padded one; a message in a record whose
    inner plaintext is 2^14 + 1 bytes; KeyUpdates both ways."""
    with tempfile.TemporaryDirectory(prefix="ringws-keys-") as d:
        p, w = crafted(port, d, "keys")
        with p:
            req, key = upgrade_request(port)
            p.sock.sendall(w.record(23, req[:20]) + w.record(23, b"")
                           + w.record(23, req[20:], padding=300))
            head, rest = pipe_head(p)
            expect(head.startswith(b"HTTP/1.1 101 "), "101 to a request in three records",
                   short(head))
            data = os.urandom(16384 - 8)  # with its 8-byte head, the frame fills a record
            p.sock.sendall(w.record(23, build_frame(OP_BINARY, data)))
            want = b"\x82\x7e" + len(data).to_bytes(2, "big") + data
            same_payload(rest + p.read_exactly(len(want) - len(rest)), want,
                         "echo of a message filling a record")
            for requested in (True, False):
                p.sock.sendall(w.key_update(requested))
                msg = b"after a KeyUpdate%s" % (b" requested" if requested else b"")
                p.sock.sendall(w.record(23, build_frame(OP_TEXT, msg)))
                eq(p.read_exactly(2 + len(msg)), b"\x81" + bytes([len(msg)]) + msg,
                   "echo after a KeyUpdate (update_%srequested)" % ("" if requested else "not_"))
            p.sock.sendall(w.record(23, build_frame(OP_CLOSE, close_payload(1000))))
            eq(p.read_exactly(4), b"\x88\x02\x03\xe8", "the close frame answering ours")
            try:
                eq(p.read(), b"", "what follows the close frame (close_notify)")
            except ssl.SSLEOFError:
                fail("TCP closed without close_notify after the close frame")


def t_crafted_bad(port, kind):
    alert, build = {
        # RFC 8446 5.4: no non-zero octet in the inner plaintext.
        "all-zero-inner": ("UNEXPECTED_MESSAGE", lambda w: w.record(0, b"", padding=20)),
        # RFC 8446 5: a change_cipher_spec after the Finished.
        "ccs-after-handshake": ("UNEXPECTED_MESSAGE", lambda w: b"\x14\x03\x03\x00\x01\x01"),
        "unknown-inner-type": ("UNEXPECTED_MESSAGE", lambda w: w.record(24, b"\x01\x00\x00")),
        # RFC 8446 5.1/5.4: more than 2^14 bytes of content.
        "content-overflow": ("RECORD_OVERFLOW", lambda w: w.record(23, bytes(16385))),
        "bad-tag": ("BAD_RECORD_MAC", lambda w: w.record(23, b"x" * 40)[:-1] + b"\x00"),
        "replayed": ("BAD_RECORD_MAC", lambda w: (lambda r: r + r)(w.record(23, b"GET"))),
        "renegotiating-hello": ("UNEXPECTED_MESSAGE",
                                lambda w: w.record(22, b"\x01\x00\x00\x04\x03\x03\x00\x00")),
    }[kind]
    with tempfile.TemporaryDirectory(prefix="ringws-keys-") as d:
        p, w = crafted(port, d, "keys")
        with p:
            p.sock.sendall(build(w))
            pipe_expect_alert(p, alert, kind)


def t_crafted_fatal_alert(port):
    """An encrypted fatal alert from the client: the server closes at once."""
    with tempfile.TemporaryDirectory(prefix="ringws-keys-") as d:
        p, w = crafted(port, d, "keys")
        with p:
            p.sock.sendall(w.record(21, b"\x02\x28"))
            read_until_closed(p.sock, PROMPT)


def expect_alert_on_open_ws(port, ctx, record, what, alert, rfc):
    """Raw bytes sent on an open WebSocket's TLS stream: the server closes
    with the alert named (OpenSSL's name for it, e.g. BAD_RECORD_MAC)."""
    with RawWS.open(port, tls=ctx) as ws, dup_raw(ws.sock) as raw:
        ws.send_frame(OP_TEXT, b"before")
        ws.expect_echo(OP_TEXT, b"before")
        raw.sendall(record)
        try:
            ws.expect_eof(PROMPT, "the server to close after %s" % what)
            fail("closed without a %s alert" % alert.lower())
        except ssl.SSLError as e:
            expect(alert in str(e).upper(), "a %s alert (%s)" % (alert.lower(), rfc), e)


def t_bad_mac_after_handshake(port, ctx):
    """A record of random bytes on an open WebSocket: bad_record_mac."""
    expect_alert_on_open_ws(port, ctx, b"\x17\x03\x03\x00\x40" + os.urandom(64),
                            "a record it cannot open", "BAD_RECORD_MAC", "RFC 8446 5.2")


# ---------------------------------------------------------------------------
# Resumption


def t_resumption(port, flag):
    with tempfile.TemporaryDirectory(prefix="ringws-sess-") as d:
        sess = os.path.join(d, "session.pem")
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        # -ign_eof: read until the server closes, so TLS 1.3's tickets,
        # which come after the handshake, are in the saved session.
        before = metrics(port) if NATIVE else None
        first = s_client(port, [flag, "-sess_out", sess, "-ign_eof"], stdin=request, ca=CA)
        established(first, "the first %s handshake" % flag)
        expect(not first.reused, "a full first handshake", first.brief())
        expect("HTTP/1.1 200 OK" in first.out, "the answer to the request", first.out[-400:])
        text = subprocess.run([tls_ca.OPENSSL, "sess_id", "-in", sess, "-noout", "-text"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
        expect("TLS session ticket:" in text, "a session ticket (stateless resumption)", text[-500:])
        m = re.search(r"Max Early Data: (\d+)", text)
        expect(m is None or m.group(1) == "0", "no 0-RTT allowed by the ticket", m and m.group(0))
        for i in range(2):
            again = s_client(port, [flag, "-sess_in", sess, "-ign_eof"], stdin=request, ca=CA)
            established(again, "the %s handshake with the saved session" % flag)
            expect(again.reused, "the session resumed (Reused)", again.brief())
            expect("HTTP/1.1 200 OK" in again.out, "the answer on the resumed session",
                   again.out[-400:])
        if NATIVE:
            after = metrics(port)
            key = 'ringws_tls_handshakes_total{kind="resumed"}'
            expect(after.get(key, 0) - before.get(key, 0) >= 2,
                   "%s up by 2 or more" % key, "%s -> %s" % (before.get(key), after.get(key)))


ROTATION_LIFETIME = 6.0


def ticket_key_name(sess):
    """The first 16 bytes of a saved session's ticket: the name of the key
    that sealed it (the server's ticket callback writes it there)."""
    text = subprocess.run([tls_ca.OPENSSL, "sess_id", "-in", sess, "-noout", "-text"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    m = re.search(r"TLS session ticket:\s*\n\s*0000 - ([0-9a-f -]+?)  ", text)
    expect(m is not None, "a session ticket in the saved session", text[-400:])
    return m.group(1).replace("-", " ").split()


def t_ticket_key_rotation(port, started):
    """The ticket key changes every ticket lifetime; a ticket sealed by the
    previous key still resumes.  A ticket taken half a lifetime after the
    start is resumed half a lifetime and a bit after the first change, and
    a ticket taken then carries another key's name."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with tempfile.TemporaryDirectory(prefix="ringws-rot-") as d:
        old, new = os.path.join(d, "old.pem"), os.path.join(d, "new.pem")
        time.sleep(max(0.0, started + ROTATION_LIFETIME / 2 - time.monotonic()))
        first = s_client(port, ["-tls1_3", "-sess_out", old, "-ign_eof"], stdin=request, ca=CA)
        established(first, "a handshake before the key changes")
        time.sleep(max(0.0, started + ROTATION_LIFETIME + 0.5 - time.monotonic()))
        fresh = s_client(port, ["-tls1_3", "-sess_out", new, "-ign_eof"], stdin=request, ca=CA)
        established(fresh, "a handshake after the key changed")
        expect(ticket_key_name(old) != ticket_key_name(new), "a new ticket key after a lifetime",
               "%s and %s" % (ticket_key_name(old), ticket_key_name(new)))
        again = s_client(port, ["-tls1_3", "-sess_in", old, "-ign_eof"], stdin=request, ca=CA)
        established(again, "the handshake with the previous key's ticket")
        expect(again.reused, "a ticket of the previous key resumed", again.brief())


# ---------------------------------------------------------------------------
# SNI


SNI_CASES = [
    # (name sent, certificate expected, whether the name is checked)
    (None, DEFAULT, True),
    ("localhost", DEFAULT, True),
    ("other.test", OTHER, True),
    ("OTHER.Test", OTHER, True),
    ("a.wild.test", WILD, True),
    ("wild.test", DEFAULT, False),
    ("x.a.wild.test", DEFAULT, False),
    ("rsa.test", RSA, True),
    ("chain.test", CHAIN, True),
    ("unknown.test", DEFAULT, False),
]


def t_sni(port, name, want, checked):
    for versions in ((ssl.TLSVersion.TLSv1_3,) * 2, (ssl.TLSVersion.TLSv1_2,) * 2):
        ctx = CA.client_context(versions=versions) if checked else no_name_check(versions)
        with tls_sock(port, ctx, sni=name or "127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
            if der != want.leaf_der():
                fail("%s, SNI %r: expected the certificate %r, got CN %r serial %r"
                     % (s.version(), name, want, *tls_ca.cert_of_der(der)))
            resp = http_over(s, port=port)
            eq(resp.status, 200, "GET /healthz on the connection")


def t_sni_s_client(port):
    r = s_client(port, ["-servername", "other.test", "-verify_hostname", "other.test"], ca=CA)
    established(r, "a handshake naming other.test")
    eq(r.subject, "CN = other.test", "certificate subject s_client saw")
    eq(r.verify, 0, "verification of other.test's certificate")
    r = s_client(port, ["-tls1_2", "-servername", "rsa.test", "-verify_hostname", "rsa.test"], ca=CA)
    established(r, "a TLS 1.2 handshake naming rsa.test")
    expect("Server public key is 2048 bit" in r.out and r.cipher.startswith("ECDHE-RSA-"),
           "the RSA certificate and an ECDHE-RSA suite", r.brief())


# ---------------------------------------------------------------------------
# Bad input


def expect_alert_or_close(port, data, what, fin=False, alert=None, limit=None):
    """Sends `data` raw; the server answers at most TLS alert records and
    closes within `limit`. `alert`: the alert description it must send."""
    limit = limit or PROMPT
    with connect(port, tls=None) as s:
        s.sendall(data)
        if fin:
            s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        got, how = read_until_closed(s, limit)
    records, left = parse_records(got)
    if left or any(r[0] != CT_ALERT for r in records):
        fail("%s: expected TLS alerts or nothing before the close, got %s" % (what, short(got)))
    if alert is not None:
        descs = [r[3][1] for r in records if len(r[3]) == 2]
        expect(alert in descs, "%s: an alert %d" % (what, alert), "alerts %s, %s after %.2fs"
               % (descs, how, time.monotonic() - t0))


def client_hello(sni=None, ctx=None):
    """The bytes of a real ClientHello (python's), never sent by python."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = (ctx or CTX).wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def t_plain_http(port):
    """Plain HTTP on the TLS port: a TLS alert or a close, or a plain 400
    saying so (as nginx answers, and docs/TLS.md promises), then the close;
    within bounded time."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(port, tls=None) as s:
        s.sendall(request)
        got, how = read_until_closed(s, PROMPT)
    if got.startswith(b"HTTP/"):
        head, _, body = got.partition(b"\r\n\r\n")
        expect(head.startswith(b"HTTP/1.1 400 ") and re.search(rb"(?im)^content-length: *%d\r?$"
                                                              % len(body), head),
               "a whole plain 400 answer", short(got))
        return
    expect_alert_or_close(port, request, "plain HTTP")


def t_garbage(port, kind):
    data = {
        # Not a record a TLS library may wait on: with a random second byte,
        # one run in about a thousand read as version 3.x with a length past
        # what was sent, and the server rightly waited for the rest (until
        # its handshake timeout, beyond this test's prompt).
        "random": b"\x00\x00" + os.urandom(4094),
        "bad-handshake": b"\x16\x03\x01\x00\xc8" + os.urandom(200),
        "sslv2-hello": bytes.fromhex("802e0103010015000000100100800700c0030080060040020080"
                                     "04008000003900003800003500003300003200000400000500002f"),
        "ccs-first": b"\x14\x03\x03\x00\x01\x01" * 3,
        "appdata-first": b"\x17\x03\x03\x00\x10" + os.urandom(16),
    }[kind]
    expect_alert_or_close(port, data, "garbage (%s)" % kind)


def t_truncated(port, where):
    hello = client_hello("localhost")
    data = {"hello-half": hello[:len(hello) // 2], "header": hello[:3],
            "hello-body-missing": hello[:5]}[where]
    # The server has no reason to wait for its handshake timeout: the peer
    # has said (FIN) that nothing more comes.
    expect_alert_or_close(port, data, "truncated record (%s) then FIN" % where, fin=True)


def t_truncated_after_handshake(port, ctx):
    with RawWS.open(port, tls=ctx) as ws, dup_raw(ws.sock) as raw:
        ws.send_frame(OP_TEXT, b"before")
        ws.expect_echo(OP_TEXT, b"before")
        raw.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(10))
        raw.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        try:
            ws.expect_eof(PROMPT, "the server to close after a truncated record and FIN")
        except (ssl.SSLError, ConnectionResetError):
            pass
        expect(time.monotonic() - t0 < PROMPT, "a close within %.1fs" % PROMPT, "later")


def t_huge_record_before_handshake(port):
    expect_alert_or_close(port, b"\x16\x03\x01\xff\xff" + os.urandom(65535),
                          "a 65535-byte handshake record", alert=22)


def t_huge_record_after_handshake(port, ctx):
    expect_alert_on_open_ws(port, ctx, b"\x17\x03\x03\xff\xff" + os.urandom(65535),
                            "a 65535-byte record", "RECORD_OVERFLOW", "RFC 8446 5.1")


def t_alert_first(port):
    expect_alert_or_close(port, plaintext_alert(40, version=0x0301), "an alert as the first record")


def t_alert_mid_handshake(port, ctx):
    """The server's first flight read, then a fatal alert instead of the
    client's next flight."""
    with TlsPipe(port, ctx) as p:
        p.sock.sendall(p.client_hello())
        deadline = time.monotonic() + T(5)
        while True:
            try:
                p.obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            if p.outgoing.pending:
                break
            if time.monotonic() > deadline:
                fail("no server flight within %.1fs" % T(5))
            p.pump(0.5)
        p.outgoing.read()
        p.sock.sendall(plaintext_alert(40))
        read_until_closed(p.sock, PROMPT)


def t_close_notify_before_request(port, ctx):
    """Our close_notify right after the handshake: the server answers with
    its own and closes."""
    s = tls_sock(port, ctx)
    try:
        s.settimeout(PROMPT)
        try:
            plain = s.unwrap()
        except (ssl.SSLEOFError, OSError) as e:
            fail("expected the server's close_notify in answer to ours, got %s: %s"
                 % (type(e).__name__, e))
        got, how = read_until_closed(plain, PROMPT)
        eq(got, b"", "bytes after the server's close_notify")
    finally:
        s.close()


def t_close_notify_after_upgrade(port, ctx):
    """Our close_notify on an open WebSocket: the server ends the
    connection (it may not read anything more), with close_notify."""
    with RawWS.open(port, tls=ctx) as ws:
        ws.send_frame(OP_TEXT, b"then close_notify")
        ws.expect_echo(OP_TEXT, b"then close_notify")
        ws.sock.settimeout(PROMPT)
        try:
            ws.sock.unwrap()
        except (ssl.SSLEOFError, OSError) as e:
            fail("expected the server's close_notify in answer to ours, got %s: %s"
                 % (type(e).__name__, e))


def clean_close(ws, what):
    """The server's EOF comes after its close_notify (reads b"")."""
    try:
        ws.expect_eof(PROMPT, what)
    except ssl.SSLEOFError:
        fail("%s: TCP closed without close_notify" % what)


def t_close_notify_after_ws_close(port, ctx):
    sock = tls_sock(port, ctx, clean_eof=True)
    with RawWS.open(port, sock=sock) as ws:
        ws.send_frame(OP_TEXT, b"x")
        ws.expect_echo(OP_TEXT, b"x")
        ws.send_close(1000, b"bye")
        ws.expect_close(1000)
        clean_close(ws, "after the close frame answering ours")


def t_close_notify_server_close(port, ctx):
    sock = tls_sock(port, ctx, clean_eof=True)
    with RawWS.open(port, sock=sock) as ws:
        ws.send_raw(build_frame(OP_TEXT, b"unmasked", mask=False))
        ws.expect_close(1002)
        ws.try_send(build_frame(OP_CLOSE, close_payload(1002)))
        clean_close(ws, "after the server's own close 1002")


def t_close_notify_http(port, ctx):
    s = tls_sock(port, ctx, clean_eof=True)
    try:
        resp = http_over(s, port=port)
        eq(resp.status, 200, "GET /healthz")
        s.settimeout(PROMPT)
        try:
            eq(s.recv(100), b"", "what follows a Connection: close response")
        except ssl.SSLEOFError:
            fail("TCP closed without close_notify after a Connection: close response")
    finally:
        s.close()


def t_abrupt_peers(port):
    """Peers that leave without close_notify (FIN mid-message, RST, FIN on
    an idle upgraded connection) while other connections echo on."""
    stop = threading.Event()
    errors = []
    counts = [0] * 6

    def echoer(i):
        async def go():
            async with ws_connect(port, tls=CTX if i % 2 else CTX12) as ws:
                n = 0
                while not stop.is_set() or n < 5:
                    msg = "abrupt neighbour %d %d" % (i, n)
                    await ws.send(msg)
                    eq(await ws.recv(), msg, "echo %d on neighbour %d" % (n, i))
                    n += 1
                    counts[i] = n
                await ws.close()
                eq(ws.close_code, 1000, "neighbour %d close code" % i)
        try:
            asyncio.run(asyncio.wait_for(go(), T(20)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("neighbour %d: %s: %s" % (i, type(e).__name__, e))

    threads = [threading.Thread(target=echoer, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    try:
        for ctx in (CTX, CTX12):
            for how in ("fin-mid-message", "rst", "fin-idle"):
                ws = RawWS.open(port, tls=ctx)
                ws.send_frame(OP_TEXT, b"hello")
                ws.expect_echo(OP_TEXT, b"hello")
                raw = dup_raw(ws.sock)
                if how == "fin-mid-message":
                    ws.send_raw(build_frame(OP_BINARY, os.urandom(50000))[:20000])
                if how == "rst":
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                ws.close()
                raw.close()
        mark = list(counts)
        deadline = time.monotonic() + T(5)
        while any(c < m + 3 for c, m in zip(counts, mark)) and not errors:
            if time.monotonic() > deadline:
                fail("neighbours stalled after the abrupt closes: echoes %s, before %s" % (counts, mark))
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(T(25))
    if errors:
        fail("; ".join(errors))
    assert_served(port, "after peers left without close_notify", tls=CTX)


def t_pipelined_https(port):
    s = tls_sock(port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3
                  + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c = HttpConn(port, sock=s)
        eq([(r.status, r.body) for r in (c.read_response() for _ in range(4))], [(200, b"ok\n")] * 4,
           "four pipelined requests in one record")
    finally:
        s.close()


class SegmentedPipe(TlsPipe):
    """Sends its records in 5-byte TCP segments: no record, handshake or
    not, arrives whole."""

    def flush(self):
        data = self.outgoing.read()
        for i in range(0, len(data), 5):
            self.sock.sendall(data[i:i + 5])
            time.sleep(0.0002)


def t_tiny_segments(port, ctx):
    with SegmentedPipe(port, ctx) as p:
        p.handshake(T(10))
        req, _ = upgrade_request(port)
        p.write(req)
        head = b""
        while b"\r\n\r\n" not in head:
            head += p.read()
        expect(head.startswith(b"HTTP/1.1 101 "), "101 Switching Protocols", short(head))
        rest = head[head.index(b"\r\n\r\n") + 4:]
        p.write(build_frame(OP_TEXT, b"in 5-byte segments"))
        want = b"\x81\x12in 5-byte segments"
        eq(rest + p.read_exactly(len(want) - len(rest)), want, "the echo")


def t_small_recv_buffers(port):
    """Records (and the handshake) span many of the server's receive
    buffers (--recv-buffer 64)."""
    for ctx in (CTX13, CTX12):
        with RawWS.open(port, tls=ctx) as ws:
            data = os.urandom(300000)
            ws.send_frame(OP_BINARY, data)
            ws.expect_echo(OP_BINARY, data, timeout=T(10))
            ws.send_raw(b"".join(build_frame(OP_TEXT, b"m%d" % i) for i in range(300)))
            for i in range(300):
                ws.expect_echo(OP_TEXT, b"m%d" % i)
            ws.close_handshake()


def t_handshake_storm(port):
    """A storm of full handshakes on one worker with a 1ms handshake
    budget, so that handshakes are put off to later loop turns; meanwhile
    an established connection keeps echoing, and TLS 1.3 clients that send
    a 600 KiB request right after their Finished (before the server has
    read it) are answered like any other."""
    stop = threading.Event()
    errors, done = [], [0, 0]
    body = os.urandom(600 << 10)

    def storm():
        while not stop.is_set():
            try:
                with tls_sock(port, CTX13) as s:
                    eq(http_over(s, port=port).status, 200, "GET /healthz in the storm")
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("storm client: %s: %s" % (type(e).__name__, e))
                return

    def uploader(i):
        for k in range(3):
            try:
                with tls_sock(port, CTX13) as s:
                    s.sendall(b"POST /publish/storm%d HTTP/1.1\r\nHost: x\r\nContent-Type: "
                              b"application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                              % (i, len(body)) + body)
                    resp = HttpConn(port, sock=s).read_response()
                    eq((resp.status, json.loads(resp.body)), (200, {"recipients": 0}),
                       "the answer to the upload")
                done[1] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("upload %d.%d right after the handshake: %s: %s"
                              % (i, k, type(e).__name__, e))

    before = metrics(port) if NATIVE else {}
    with RawWS.open(port, tls=CTX) as ws:
        storms = [threading.Thread(target=storm) for _ in range(16)]
        ups = [threading.Thread(target=uploader, args=(i,)) for i in range(6)]
        for th in storms + ups:
            th.start()
        try:
            echoes = 0
            while any(th.is_alive() for th in ups):
                ws.send_frame(OP_TEXT, b"established %d" % echoes)
                ws.expect_echo(OP_TEXT, b"established %d" % echoes, timeout=T(5))
                echoes += 1
        finally:
            stop.set()
            for th in storms + ups:
                th.join(T(20))
        ws.close_handshake()
    if errors:
        fail("%d of %d uploads and the storm's %d handshakes: %d failed: %s"
             % (done[1], 18, done[0], len(errors), "; ".join(errors[:3])))
    if NATIVE:
        after = metrics(port)
        key = "ringws_tls_handshakes_deferred_total"
        expect(after.get(key, 0) > before.get(key, 0), "handshakes put off during the storm (%s)" % key,
               "%s -> %s" % (before.get(key), after.get(key)))


def t_idle_ping_then_drop(port):
    """--idle-timeout over TLS: a ping after the idle time, and a peer that
    does not answer is dropped with close_notify."""
    with RawWS.open(port, sock=tls_sock(port, clean_eof=True)) as ws:
        ev = ws.recv_event(T(3), "the server's ping")
        eq(ev.kind, "ping", "what an idle connection gets")
        try:
            ws.recv_event(T(3), "the drop")
            fail("expected the connection dropped")
        except EOF:
            pass
        except ssl.SSLEOFError:
            fail("dropped without close_notify")


def t_shutdown_close_notify():
    """SIGTERM: every WebSocket gets its close 1012, then close_notify."""
    srv = Server(tls=[DEFAULT], label="shutdown").start()
    try:
        conns = [RawWS.open(srv.port, sock=tls_sock(srv.port, ctx, clean_eof=True))
                 for ctx in (CTX13, CTX12)]
        srv.send_signal(signal.SIGTERM)
        for ws in conns:
            ws.expect_close(1012)
            ws.try_send(build_frame(OP_CLOSE, close_payload(1012)))
            clean_close(ws, "after the close 1012 of a shutdown")
        eq(srv.wait(T(5)), 0, "exit status after SIGTERM")
        eq(srv.sanitizer_reports(), [], "sanitizer reports")
    finally:
        srv.kill()


# ---------------------------------------------------------------------------
# The handshake timeout (a server with --handshake-timeout 1s)

HS_TIMEOUT = 1.0


def closed_on_time(s, what):
    t0 = time.monotonic()
    read_until_closed(s, HS_TIMEOUT + 1.5 + slack(2))
    took = time.monotonic() - t0
    expect(took >= HS_TIMEOUT * 0.5, "%s: open until about the handshake timeout (%.1fs)"
           % (what, HS_TIMEOUT), "closed after %.2fs" % took)


def t_hello_never_completes(port):
    with connect(port, tls=None) as s:
        s.sendall(client_hello("localhost")[:40])
        closed_on_time(s, "a ClientHello cut short")


def t_hello_dribbled(port):
    """A ClientHello one byte every 50ms: bytes keep coming, the whole
    handshake is still bounded by the timeout."""
    hello = client_hello("localhost")
    with connect(port, tls=None) as s:
        t0 = time.monotonic()
        for i, b in enumerate(hello):
            try:
                s.send(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                break
            r, _, _ = select.select([s], [], [], 0.05)
            if r:
                break
            if time.monotonic() - t0 > HS_TIMEOUT + 1.5 + slack(2):
                fail("still open %.1fs into a dribbled ClientHello (%d of %d bytes sent)"
                     % (time.monotonic() - t0, i + 1, len(hello)))
        took = time.monotonic() - t0
        read_until_closed(s, HS_TIMEOUT + 1.5 + slack(2) - took)


def t_silent_client(port):
    with connect(port, tls=None) as s:
        closed_on_time(s, "a client that sends nothing")


def t_handshake_then_silence(port):
    """A finished handshake and no request: closed at the handshake
    timeout, with close_notify (RFC 8446 6.1: a party closing its write
    side sends one first, unless it sent an error alert)."""
    with tls_sock(port, clean_eof=True) as s:
        t0 = time.monotonic()
        s.settimeout(HS_TIMEOUT + 1.5 + slack(2))
        try:
            data = s.recv(100)
        except socket.timeout:
            fail("a finished TLS handshake and no request: still open after %.1fs"
                 % (time.monotonic() - t0))
        except ssl.SSLEOFError:
            fail("closed at the handshake timeout without close_notify")
        took = time.monotonic() - t0
        if data:
            # nginx answers 408 here; the server closes.
            expect(not NATIVE, "the connection closed", short(data))
        expect(took >= HS_TIMEOUT * 0.4, "open until about the handshake timeout", "%.2fs" % took)


# ---------------------------------------------------------------------------
# Reload


class LoadClients:
    """n connections echoing without pause on their own thread's event loop
    until stopped, half of them TLS 1.2; each counts its echoes."""

    def __init__(self, port, n):
        self.port, self.n = port, n
        self.counts = [0] * n
        self.errors = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _one(self, i):
        try:
            async with ws_connect(self.port, tls=CTX12 if i % 2 else CTX) as ws:
                n = 0
                while not self.stop_flag.is_set():
                    msg = "load %d %d" % (i, n)
                    await ws.send(msg)
                    got = await ws.recv()
                    if got != msg:
                        raise AssertionError("expected %r, got %r" % (msg, short(got)))
                    n += 1
                    self.counts[i] = n
                await ws.close()
                if ws.close_code != 1000:
                    raise AssertionError("close code %s" % ws.close_code)
        except Exception as e:  # noqa: BLE001 - every loss is reported
            self.errors.append("connection %d after %d echoes: %s: %s"
                               % (i, self.counts[i], type(e).__name__, e))

    async def _run(self):
        await asyncio.gather(*(self._one(i) for i in range(self.n)))

    def progress(self, rounds, what):
        """Every connection echoes `rounds` more times."""
        mark = list(self.counts)
        deadline = time.monotonic() + T(10)
        while any(c < m + rounds for c, m in zip(self.counts, mark)):
            if self.errors:
                fail("connections lost %s: %s" % (what, "; ".join(self.errors[:5])))
            if time.monotonic() > deadline:
                fail("connections stalled %s: echoes %s" % (what, self.counts))
            time.sleep(0.01)

    def finish(self):
        self.stop_flag.set()
        self.thread.join(T(15))
        if self.thread.is_alive():
            fail("the load connections did not finish")
        if self.errors:
            fail("connections lost: %s" % "; ".join(self.errors[:5]))


def peer_leaf(port, ctx=CTX):
    with tls_sock(port, ctx) as s:
        return s.getpeercert(binary_form=True)


def install(cert, dest):
    """Puts cert's files where the server reads them (renamed into place)."""
    for src, dst in ((cert.cert, dest.cert), (cert.key, dest.key)):
        shutil.copyfile(src, dst + ".new")
        os.replace(dst + ".new", dst)


def t_reload_under_load(srv, live):
    port = srv.port
    load = LoadClients(port, 30)
    try:
        load.progress(3, "before the reload")
        held = tls_sock(port)        # opened before, used after the reload
        eq(peer_leaf(port), DEFAULT.leaf_der(), "the certificate before the reload")
        fresh = CA.issue(cn="localhost reloaded")
        install(fresh, live)
        state, log = srv.reload_tls()
        eq(state, "ok", "the reload's outcome (log: %r)" % log[-300:])
        got = peer_leaf(port)
        if got != fresh.leaf_der():
            fail("a new connection after the reload: expected %r, got CN %r serial %r"
                 % (fresh, *tls_ca.cert_of_der(got)))
        eq(peer_leaf(port, CTX12), fresh.leaf_der(), "the certificate a TLS 1.2 client gets")
        load.progress(3, "after the reload")
        with held:
            resp = http_over(held, port=port)
            eq(resp.status, 200, "a request on a connection opened before the reload")

        for bad in ("garbage-cert", "mismatched-key", "missing-key"):
            if bad == "garbage-cert":
                with open(live.cert, "wb") as f:
                    f.write(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
            elif bad == "mismatched-key":
                install(fresh, live)
                shutil.copyfile(OTHER.key, live.key)
            else:
                install(fresh, live)
                os.unlink(live.key)
            state, log = srv.reload_tls()
            eq(state, "failed", "the reload with a bad file (%s) (log: %r)" % (bad, log[-300:]))
            if NATIVE:
                expect(re.search(r"TLS reload failed.*\S", log), "a reason in the warning", log)
            got = peer_leaf(port)
            if got != fresh.leaf_der():
                fail("after a failed reload (%s): expected the last good %r, got CN %r serial %r"
                     % (bad, fresh, *tls_ca.cert_of_der(got)))
            load.progress(2, "after a failed reload (%s)" % bad)

        install(DEFAULT, live)
        state, log = srv.reload_tls()
        eq(state, "ok", "the reload back to the first certificate (log: %r)" % log[-300:])
        eq(peer_leaf(port), DEFAULT.leaf_der(), "the certificate after reloading the first one")
        load.progress(2, "after the last reload")
    finally:
        load.finish()
    expect(min(load.counts) > 0, "every load connection echoed", load.counts)


# ---------------------------------------------------------------------------


def t_metrics(port):
    m = metrics(port)
    for key in ('ringws_tls_handshakes_total{kind="full"}', 'ringws_tls_handshakes_total{kind="resumed"}',
                "ringws_tls_handshake_failures_total", "ringws_tls_handshakes_deferred_total"):
        expect(key in m, "%s in /metrics" % key, sorted(m))
    expect(m['ringws_tls_handshakes_total{kind="full"}'] >= 50, "50 or more full handshakes counted", m)
    expect(m['ringws_tls_handshakes_total{kind="resumed"}'] >= 4, "4 or more resumed handshakes counted", m)
    expect(m["ringws_tls_handshake_failures_total"] >= 10, "10 or more failed handshakes counted", m)


def main():
    r = Runner("tls")
    with r.server(["--workers", "2"], "tls", tls=CERTS, plain_port=True) as srv:
        port = srv.port
        r.parallel([
            ("echo-text-tls1.3", t_echo, port, CTX13, "text"),
            ("echo-binary-tls1.3", t_echo, port, CTX13, "binary"),
            ("echo-text-tls1.2", t_echo, port, CTX12, "text"),
            ("echo-binary-tls1.2", t_echo, port, CTX12, "binary"),
            ("alpn-python", t_alpn_python, port),
            ("plain-listener", t_plain_listener, port, srv.plain_port, list(srv.stdout_lines)),
            ("tls1.3-accepted", t_version_accepted, port, "-tls1_3", "TLSv1.3"),
            ("tls1.2-accepted", t_version_accepted, port, "-tls1_2", "TLSv1.2"),
            ("tls1.1-refused", t_version_refused, port, "-tls1_1", "-tls1_1"),
            ("tls1.0-refused", t_version_refused, port, "-tls1", "-tls1"),
            ("weak-AES128-SHA-refused", t_weak_suite_refused, port, "AES128-SHA", RSA, "rsa.test"),
            ("weak-AES256-GCM-SHA384-static-rsa-refused", t_weak_suite_refused, port,
             "AES256-GCM-SHA384", RSA, "rsa.test"),
            ("weak-ECDHE-RSA-AES128-SHA-refused", t_weak_suite_refused, port,
             "ECDHE-RSA-AES128-SHA", RSA, "rsa.test"),
            ("weak-ECDHE-ECDSA-AES128-SHA-refused", t_weak_suite_refused, port,
             "ECDHE-ECDSA-AES128-SHA", DEFAULT, None),
            ("weak-NULL-refused", t_weak_suite_refused, port, "ECDHE-ECDSA-NULL-SHA", DEFAULT, None),
            ("alpn-http1.1", t_alpn, port),
            ("alpn-h2-only-refused", t_alpn_h2_refused, port),
            ("renegotiation-refused", t_renegotiation_refused, port),
            ("tls1.3-key-update", t_key_update, port),
            ("tls1.3-record-padding", t_record_padding, port),
            ("resumption-tls1.3", t_resumption, port, "-tls1_3"),
            ("resumption-tls1.2", t_resumption, port, "-tls1_2"),
            ("sni-s_client", t_sni_s_client, port),
        ] + [("sni-%s" % (name or "none"), t_sni, port, name, want, checked)
             for name, want, checked in SNI_CASES], workers=8, timeout=60)
        r.parallel([
            ("plain-http-to-tls-port", t_plain_http, port),
            ("garbage-random", t_garbage, port, "random"),
            ("garbage-bad-handshake", t_garbage, port, "bad-handshake"),
            ("garbage-sslv2-hello", t_garbage, port, "sslv2-hello"),
            ("garbage-ccs-first", t_garbage, port, "ccs-first"),
            ("garbage-appdata-first", t_garbage, port, "appdata-first"),
            ("truncated-hello-fin", t_truncated, port, "hello-half"),
            ("truncated-header-fin", t_truncated, port, "header"),
            ("truncated-hello-body-fin", t_truncated, port, "hello-body-missing"),
            ("truncated-record-after-handshake-tls1.3", t_truncated_after_handshake, port, CTX13),
            ("truncated-record-after-handshake-tls1.2", t_truncated_after_handshake, port, CTX12),
            ("huge-record-before-handshake", t_huge_record_before_handshake, port),
            ("huge-record-after-handshake-tls1.3", t_huge_record_after_handshake, port, CTX13),
            ("huge-record-after-handshake-tls1.2", t_huge_record_after_handshake, port, CTX12),
            ("bad-mac-after-handshake-tls1.3", t_bad_mac_after_handshake, port, CTX13),
            ("bad-mac-after-handshake-tls1.2", t_bad_mac_after_handshake, port, CTX12),
            ("crafted-records", t_crafted_records, port),
            ("crafted-fatal-alert", t_crafted_fatal_alert, port),
        ] + [("crafted-" + kind, t_crafted_bad, port, kind)
             for kind in ("all-zero-inner", "ccs-after-handshake", "unknown-inner-type",
                          "content-overflow", "bad-tag", "replayed", "renegotiating-hello")] + [
            ("alert-first", t_alert_first, port),
            ("alert-mid-handshake-tls1.3", t_alert_mid_handshake, port, CTX13),
            ("alert-mid-handshake-tls1.2", t_alert_mid_handshake, port, CTX12),
            ("close-notify-before-request-tls1.3", t_close_notify_before_request, port, CTX13),
            ("close-notify-before-request-tls1.2", t_close_notify_before_request, port, CTX12),
            ("close-notify-after-upgrade-tls1.3", t_close_notify_after_upgrade, port, CTX13),
            ("close-notify-after-upgrade-tls1.2", t_close_notify_after_upgrade, port, CTX12),
            ("close-notify-after-ws-close-tls1.3", t_close_notify_after_ws_close, port, CTX13),
            ("close-notify-after-ws-close-tls1.2", t_close_notify_after_ws_close, port, CTX12),
            ("close-notify-after-server-close", t_close_notify_server_close, port, CTX),
            ("close-notify-after-http-close", t_close_notify_http, port, CTX),
        ], workers=8, timeout=30)
        r.case("abrupt-peers-neighbours-unaffected", t_abrupt_peers, port, timeout=40)
        r.case("echo-1MiB-binary", t_large, port, 1 << 20, "binary")
        r.case("echo-4MiB-binary", t_large, port, 4 << 20, "binary")
        r.case("echo-2MiB-text", t_large, port, 2 << 20, "text")
        r.case("echo-5000-small", t_many_small, port, 5000)
        r.case("small-echoes-coalesced", t_small_coalesced, port)
        r.case("pubsub-tls-and-plain", t_pubsub, port, srv.plain_port)
        r.case("pipelined-https", t_pipelined_https, port)
        r.case("tiny-segments-tls1.3", t_tiny_segments, port, CTX13)
        r.case("tiny-segments-tls1.2", t_tiny_segments, port, CTX12)
        r.case("node-ws-tls1.3", t_node_ws, port, None)
        r.case("node-ws-tls1.2", t_node_ws, port, "TLSv1.2")
        r.parallel([("node-ws-" + suite, t_node_ws, port, "TLSv1.3", suite)
                    for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                  "TLS_CHACHA20_POLY1305_SHA256")]
                   + [("tls1.2-" + suite, t_suite_tls12, port, suite, sni)
                      for suite, sni in (("ECDHE-ECDSA-AES128-GCM-SHA256", "127.0.0.1"),
                                         ("ECDHE-ECDSA-AES256-GCM-SHA384", "127.0.0.1"),
                                         ("ECDHE-ECDSA-CHACHA20-POLY1305", "127.0.0.1"),
                                         ("ECDHE-RSA-AES128-GCM-SHA256", "rsa.test"),
                                         ("ECDHE-RSA-AES256-GCM-SHA384", "rsa.test"),
                                         ("ECDHE-RSA-CHACHA20-POLY1305", "rsa.test"))],
                   workers=3, timeout=30)
        if NATIVE:
            r.case("metrics", t_metrics, port)

    with r.server(["--workers", "1", "--tls-handshake-budget", "1ms"], "storm", tls=[DEFAULT]) as srv:
        r.case("handshake-storm", t_handshake_storm, srv.port, timeout=60)

    with r.server(["--recv-buffer", "64"], "small-buffers", tls=[DEFAULT]) as srv:
        r.case("records-across-64-byte-buffers", t_small_recv_buffers, srv.port)

    with r.server(["--tls-ticket-lifetime", "%gs" % ROTATION_LIFETIME], "rotation",
                  tls=[DEFAULT]) as rot, \
            r.server(["--handshake-timeout", "%gs" % HS_TIMEOUT, "--idle-timeout", "500ms"],
                     "timeouts", tls=[DEFAULT]) as srv:
        started = time.monotonic()  # the ticket key is made before the server listens
        cases = [
            ("hello-never-completes", t_hello_never_completes, srv.port),
            ("hello-dribbled", t_hello_dribbled, srv.port),
            ("silent-client", t_silent_client, srv.port),
            ("handshake-then-silence", t_handshake_then_silence, srv.port),
            ("idle-ping-then-drop", t_idle_ping_then_drop, srv.port),
        ]
        if NATIVE:
            cases.append(("ticket-key-rotation", t_ticket_key_rotation, rot.port, started))
        r.parallel(cases, workers=6, timeout=20)
        r.case("served-after-timeouts", assert_served, srv.port, "after the timeouts", None, CTX)

    live_dir = tempfile.mkdtemp(prefix="ringws-live-")
    try:
        live = tls_ca.Cert(os.path.join(live_dir, "server.pem"), os.path.join(live_dir, "server.key"),
                           DEFAULT.names, DEFAULT.cn, DEFAULT.serial, DEFAULT.kind)
        install(DEFAULT, live)
        with r.server(["--workers", "2"], "reload", tls=[live]) as srv:
            r.case("reload-under-load", t_reload_under_load, srv, live, timeout=60)
    finally:
        shutil.rmtree(live_dir, ignore_errors=True)
    r.case("shutdown-close-1012-then-close-notify", t_shutdown_close_notify)
    r.finish()


if __name__ == "__main__":
    main()
