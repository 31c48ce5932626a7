"""The echo of the console page in a real browser (test_console.py uses the
rest of it): headless Chromium loads `/?send=TEXT`
from the built server, the page's script opens a WebSocket to /echo, sends
TEXT and, when the echo comes back, sets document.title to `echo:TEXT`.
Chromium's --dump-dom prints the DOM once the page has settled (network
activity included, within a virtual-time budget), and the cases read the
title, the status and the log from it.

One case puts a small TCP relay between the browser and the server, so that
the test sees the browser's own handshake (Origin, key, version, user agent)
and the frames on the wire; another makes the server refuse the browser's
Origin, so the page must show no echo.

Over TLS, the page is loaded over https from the server itself (with a
certificate of a CA the test makes, tls_ca.py) and opens wss:// to it; the
browser trusts that CA through an NSS database in its profile's home, so
the chain is really verified, and a browser without the CA must refuse the
same page.

The browser is /usr/bin/chromium (tools/setup.sh installs it) or the one
RINGWS_CHROMIUM names; a missing browser is a failed case, not a skip.
Python 3.11 standard library only.
"""

import base64
import html.parser
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_TEXT, Response, Runner, T, apply_mask, check_101, eq,  # noqa: E402
                         expect, fail, inflate_message, short)
import tls_ca  # noqa: E402

CHROMIUM = os.environ.get("RINGWS_CHROMIUM", "/usr/bin/chromium")

# Headless, no sandbox (the tests may run as root), and nothing that reaches
# for hosts outside this machine.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio",
]

BROWSER_TIMEOUT = 60  # seconds for one browser run, scaled by T()


def random_text():
    """A message the page cannot have by chance: random, with a 2-byte, a
    3-byte and a 4-byte UTF-8 character and the HTML specials & and <."""
    return "h\u00e9llo \u2713 \U0001F680 a&b<c %s" % base64.b32encode(os.urandom(5)).decode().lower()


# ---------------------------------------------------------------------------
# The browser


# net::ERR_CERT_AUTHORITY_INVALID, as Chromium logs a refused chain.
NET_ERROR_UNTRUSTED = "net_error -202"


def run_chromium(url, ca=None, untrusted=False):
    """Runs headless Chromium on `url` and returns the DOM it dumps. Chromium
    runs in its own session so that it and every helper process it starts
    can be ended together, whatever happens. `ca` (a tls_ca.TestCA) is
    trusted through the NSS database of the profile's home, the store
    Chromium verifies server chains against on Linux. With `untrusted` the
    run must end in Chromium refusing the server's chain."""
    if not os.access(CHROMIUM, os.X_OK):
        fail("no browser at %s: install the chromium package (tools/setup.sh does) "
             "or point RINGWS_CHROMIUM at one" % CHROMIUM)
    profile = tempfile.mkdtemp(prefix="ringws-chromium-")
    if ca is not None:
        ca.nss_db(profile)
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    cmd = [CHROMIUM] + CHROMIUM_FLAGS + [
        "--user-data-dir=" + profile, "--dump-dom", "--virtual-time-budget=5000", url]
    proc = None
    try:
        env = dict(os.environ, HOME=profile)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True, env=env)
        limit = T(BROWSER_TIMEOUT)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            fail("chromium did not finish within %.0fs on %s; stderr %s"
                 % (limit, url, _tail(err)))
        out.seek(0)
        dom = out.read().decode("utf-8", "replace")
        if untrusted:
            err.seek(0)
            expect(NET_ERROR_UNTRUSTED in err.read().decode("utf-8", "replace"),
                   "chromium refusing the chain (%s)" % NET_ERROR_UNTRUSTED, _tail(err))
            return dom
        if rc != 0 or not dom.strip():
            fail("chromium exited with status %s and %d bytes of DOM on %s; stderr %s"
                 % (rc, len(dom), url, _tail(err)))
        return dom
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        out.close()
        err.close()
        shutil.rmtree(profile, ignore_errors=True)


def _tail(f, n=800):
    f.seek(0)
    text = f.read().decode("utf-8", "replace")
    # Chromium's complaints about the missing session bus are noise here.
    lines = [ln for ln in text.splitlines() if "dbus" not in ln.lower()]
    text = "\n".join(lines)
    return repr(text[-n:]) if text else "(empty)"


def page_url(port, text, scheme="http"):
    return "%s://127.0.0.1:%d/?send=%s" % (scheme, port, urllib.parse.quote(text, safe=""))


class DemoDom(html.parser.HTMLParser):
    """The parts of the dumped demo page the cases check: the title, the
    text of #status and of #log (entities decoded)."""

    def __init__(self, dom):
        super().__init__(convert_charrefs=True)
        self.title = None
        self.status = None
        self.log = None
        self._into = None
        self._text = []
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        if self._into is None and (tag == "title" or ident in ("status", "log")):
            self._into = tag if tag == "title" else ident
            self._text = []

    def handle_endtag(self, tag):
        if self._into is None:
            return
        if (self._into == "title" and tag == "title") or \
           (self._into == "status" and tag == "b") or (self._into == "log" and tag == "div"):
            setattr(self, self._into, "".join(self._text))
            self._into = None

    def handle_data(self, data):
        if self._into is not None:
            self._text.append(data)


def check_echoed(dom, text, ws_port, ws_origin="ws://127.0.0.1"):
    page = DemoDom(dom)
    expect(page.title is not None, "a <title> in the dumped DOM", short(dom))
    eq(page.title, "echo:" + text, "document.title after the echo")
    eq(page.status, "open", "status on the page")
    eq((page.log or "").splitlines(),
       ["connected to %s:%d/echo" % (ws_origin, ws_port), "> " + text, "< " + text],
       "log on the page")


# ---------------------------------------------------------------------------
# A relay that keeps what crosses it


class Relay:
    """Listens on its own port and forwards every connection to the server,
    keeping the first bytes each way (enough for the heads and the first
    frames). The port is known before the server starts, so the server can
    be told which Origin the browser will send."""

    KEEP = 64 * 1024

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []   # [client bytes, server bytes] per connection
        self.socks = []
        self.target = None

    def start(self, target_port):
        self.target = target_port
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=T(5))
            except OSError:
                client.close()
                continue
            rec = [bytearray(), bytearray()]
            with self.lock:
                self.conns.append(rec)
                self.socks += [client, upstream]
            for s in (client, upstream):
                s.settimeout(T(60))
            threading.Thread(target=self._pump, args=(client, upstream, rec[0]), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, rec[1]), daemon=True).start()

    def _pump(self, src, dst, keep):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    keep += data[:self.KEEP - len(keep)]
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.lsock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass

    def websocket_exchange(self):
        """(client bytes, server bytes) of the one connection that asked for
        /echo; fails unless there is exactly one."""
        with self.lock:
            found = [(bytes(c), bytes(s)) for c, s in self.conns if c.startswith(b"GET /echo ")]
            seen = [bytes(c[:40]) for c, _ in self.conns]
        eq(len(found), 1, "WebSocket connections through the relay (first bytes of each: %r)" % seen)
        return found[0]


def parse_head(raw, what):
    """Splits raw bytes at the end of an HTTP head: (start line, headers as a
    Response-like object, the bytes after the head)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        fail("no complete %s head in %s" % (what, short(raw)))
    lines = raw[:end].decode("latin-1").split("\r\n")
    headers = []
    for ln in lines[1:]:
        name, sep, value = ln.partition(":")
        if not sep:
            fail("%s header line without a colon: %r" % (what, ln))
        headers.append((name.strip(), value.strip()))
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if parts[0].startswith("HTTP/") and parts[1].isdigit() else 0
    return lines[0], Response(parts[0], status, parts[2] if len(parts) > 2 else "", headers,
                              b"", raw[:end + 4]), raw[end + 4:]


def first_frame(data, what):
    """(fin, opcode, masked, payload, compressed) of the frame at the start
    of data; a compressed payload (RSV1, permessage-deflate) is inflated."""
    if len(data) < 2:
        fail("no %s frame: %s" % (what, short(data)))
    b0, b1 = data[0], data[1]
    n, pos = b1 & 0x7F, 2
    if n == 126:
        n, pos = struct.unpack(">H", data[2:4])[0], 4
    elif n == 127:
        n, pos = struct.unpack(">Q", data[2:10])[0], 10
    masked = bool(b1 & 0x80)
    key = data[pos:pos + 4] if masked else None
    pos += 4 if masked else 0
    payload = data[pos:pos + n]
    if len(payload) != n:
        fail("%s frame cut short: %d of %d payload bytes" % (what, len(payload), n))
    if masked:
        payload = apply_mask(payload, key)
    if b0 & 0x40:
        payload = inflate_message(payload)
    return bool(b0 & 0x80), b0 & 0x0F, masked, bytes(payload), bool(b0 & 0x40)


# ---------------------------------------------------------------------------
# Cases


def t_echo(port):
    text = random_text()
    check_echoed(run_chromium(page_url(port, text)), text, port)


def t_echo_ascii_again(port):
    # A second browser, a second connection: the first left nothing behind.
    text = "plain " + base64.b32encode(os.urandom(5)).decode().lower()
    check_echoed(run_chromium(page_url(port, text)), text, port)


def t_echo_over_https(port, ca):
    """The page over https from the server itself, its script opening
    wss:// to the same origin; Chromium verifies the chain to the test CA
    (no certificate error is ignored)."""
    text = random_text()
    dom = run_chromium(page_url(port, text, "https"), ca)
    # The virtual-time budget does not wait for the network: on a loaded
    # machine the DOM can be dumped before the TLS handshake of the
    # WebSocket or its echo. An undecided page (connecting, or open with
    # the echo still out) is loaded again, at most twice; a wrong outcome
    # never is.
    for _ in range(2):
        page = DemoDom(dom)
        lines = (page.log or "").splitlines()
        if not (page.status == "connecting" or (page.status == "open" and lines[-1:] == ["> " + text])):
            break
        print("  page undecided when the DOM was dumped (status %r): loading again" % page.status,
              flush=True)
        dom = run_chromium(page_url(port, text, "https"), ca)
    check_echoed(dom, text, port, "wss://127.0.0.1")


def t_untrusted_https(port):
    """Without the CA in its store, Chromium refuses the same page: the
    trust of the case above comes from the CA, not from a lax browser."""
    text = random_text()
    dom = run_chromium(page_url(port, text, "https"), untrusted=True)
    expect(text not in html.unescape(dom), "no page from a server whose CA the browser does not trust",
           short(dom))


def t_handshake_on_wire(relay, text=None):
    """The browser's handshake and first frames as they cross the wire.
    Chromium offers permessage-deflate and the server takes it, stateless
    both ways; a text of 128 bytes or more comes back compressed (RSV1 on
    the wire), a shorter one plain."""
    text = text or random_text()
    check_echoed(run_chromium(page_url(relay.port, text)), text, relay.port)
    client, server = relay.websocket_exchange()

    line, req, client_rest = parse_head(client, "browser request")
    eq(line, "GET /echo HTTP/1.1", "browser request line")
    eq(req.header("Host"), "127.0.0.1:%d" % relay.port, "browser Host")
    expect("websocket" in req.tokens("Upgrade"), "Upgrade: websocket from the browser",
           req.header_all("Upgrade"))
    expect("upgrade" in req.tokens("Connection"), "Connection: Upgrade from the browser",
           req.header_all("Connection"))
    eq(req.header("Sec-WebSocket-Version"), "13", "browser Sec-WebSocket-Version")
    eq(req.header("Origin"), "http://127.0.0.1:%d" % relay.port, "browser Origin")
    expect("Chrome/" in (req.header("User-Agent") or ""), "a Chrome User-Agent",
           req.header("User-Agent"))
    key = req.header("Sec-WebSocket-Key") or ""
    try:
        eq(len(base64.b64decode(key, validate=True)), 16, "decoded Sec-WebSocket-Key length")
    except ValueError:
        fail("browser Sec-WebSocket-Key is not base64: %r" % key)

    _, resp, server_rest = parse_head(server, "server response")
    check_101(resp, key)
    expect("permessage-deflate" in (req.header("Sec-WebSocket-Extensions") or ""),
           "a permessage-deflate offer from the browser", req.header_all("Sec-WebSocket-Extensions"))
    eq(resp.header_all("Sec-WebSocket-Extensions"),
       ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
       "Sec-WebSocket-Extensions in the 101")

    want = text.encode("utf-8")
    fin, op, masked, payload, _ = first_frame(client_rest, "browser")
    eq((fin, op, masked), (True, OP_TEXT, True), "browser frame (fin, opcode, masked)")
    eq(payload, want, "browser frame payload")
    fin, op, masked, payload, zipped = first_frame(server_rest, "server")
    eq((fin, op, masked), (True, OP_TEXT, False), "server frame (fin, opcode, masked)")
    eq(payload, want, "server echo payload")
    eq(zipped, len(want) >= 128, "server echo of %d bytes compressed" % len(want))


def t_deflate_on_wire(relay):
    t_handshake_on_wire(relay, random_text() + " " + "your order has shipped; " * 12)


def t_origin_refused(port):
    # The server only accepts another Origin: the page loads, the browser's
    # handshake is refused, and nothing may be echoed.
    text = random_text()
    page = DemoDom(run_chromium(page_url(port, text)))
    # Chromium's virtual-time budget does not wait for a WebSocket handshake,
    # so on a loaded machine the DOM can be dumped before the refusal
    # arrives: "connecting" means undecided (a wrong outcome is never
    # retried), and the page is loaded again, at most twice.
    for _ in range(2):
        if page.status != "connecting":
            break
        print("  status still 'connecting' when the DOM was dumped: loading again", flush=True)
        page = DemoDom(run_chromium(page_url(port, text)))
    eq(page.title, "ringws console", "document.title when the handshake is refused")
    expect((page.status or "").startswith("closed"), "status 'closed (...)'", page.status)
    lines = (page.log or "").splitlines()
    expect("error" in lines and "< " + text not in lines,
           "an error and no echo in the log", lines)


def main():
    r = Runner("browser")
    with r.server([], "default") as srv:
        r.case("demo-page-echo", t_echo, srv.port, timeout=90)
        r.case("demo-page-echo-again", t_echo_ascii_again, srv.port, timeout=90)

    for cid, fn in [("browser-handshake-on-wire", t_handshake_on_wire),
                    ("browser-deflate-on-wire", t_deflate_on_wire)]:
        relay = Relay()
        origin = "http://127.0.0.1:%d" % relay.port
        with r.server(["--origin", origin], "origin-" + origin) as srv:
            relay.start(srv.port)
            try:
                r.case(cid, fn, relay, timeout=90)
            finally:
                relay.stop()

    with r.server(["--origin", "http://elsewhere.invalid"], "origin-elsewhere") as srv:
        r.case("foreign-origin-refused", t_origin_refused, srv.port, timeout=90)

    ca = tls_ca.shared_ca()
    with r.server([], "tls", tls=[ca.issue()]) as srv:
        r.case("https-page-wss-echo", t_echo_over_https, srv.port, ca, timeout=90)
        r.case("https-untrusted-ca-refused", t_untrusted_https, srv.port, timeout=90)
    r.finish()


if __name__ == "__main__":
    main()
