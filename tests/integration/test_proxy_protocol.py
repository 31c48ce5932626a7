"""ringws behind a TCP proxy that speaks the PROXY protocol (--proxy-protocol,
docs/DEPLOY.md): Debian's HAProxy, configured as docs/DEPLOY.md shows, sends
version 1 (send-proxy) and version 2 (send-proxy-v2) headers for clients
bound to 127.0.0.2 and 127.0.0.3, and ringws must see those addresses (its
debug log names each client's address and port; --max-per-address 1
refuses a second connection of one client and serves another client's).
Raw sockets then send what HAProxy never would: headers naming remote
addresses (publishing without a token is refused though the proxy is on
loopback), malformed headers and none at all (closed unanswered), v2 LOCAL
(served, counted for no address), a header cut byte by byte, an oversize v1
line, a header that never ends (the handshake timeout), and a header before
a TLS handshake, with the plaintext listener beside TLS staying direct."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fronts  # noqa: E402
from ringws_test import (OP_BINARY, OP_TEXT, TLS_FRONT, RawWS, Runner, T, expect,  # noqa: E402
                         slack, tls_wrap, upgrade_request)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
DEBUG = {"RINGWS_LOG": "debug"}


def v1(src, sport=40000, dport=80):
    six = ":" in src
    return ("PROXY %s %s %s %d %d\r\n" % ("TCP6" if six else "TCP4", src, "::1" if six else "127.0.0.1",
                                           sport, dport)).encode()


def v2(src=None, sport=40000, cmd=0x21, tlvs=b""):
    """A version 2 header: PROXY (cmd 0x21) from src, or LOCAL (0x20)."""
    if src is None:
        body = tlvs
        fam = 0x00
    elif ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1") + \
            struct.pack("!HH", sport, 80) + tlvs
        fam = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 80) + tlvs
        fam = 0x11
    return V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def dial(port, src=None):
    s = socket.socket()
    if src:
        s.bind((src, 0))
    s.settimeout(T(5))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, limit):
    """Everything until EOF (a reset counts as one) within `limit`."""
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except ConnectionResetError:
        return out


def exchange(port, data, src=None, pieces=None, pause=0.0):
    """Sends `data` (in `pieces` when given) on a fresh connection and
    returns all the answer, the connection closed by the server."""
    s = dial(port, src)
    try:
        for piece in (pieces or [data]):
            s.sendall(piece)
            if pause:
                time.sleep(pause)
        return read_all(s, T(5))
    finally:
        s.close()


def expect_status(answer, status, what):
    expect(answer.startswith(b"HTTP/1.1 %d " % status), "%d for %s" % (status, what), answer[:80])


def expect_refused(answer, what):
    expect(answer == b"", "the connection closed unanswered (%s)" % what, answer[:80])


def wait_log(srv, text, limit=None):
    deadline = time.monotonic() + (limit or T(3))
    while text not in srv.stderr_text():
        if time.monotonic() > deadline:
            expect(False, "%r in the server's log" % text, srv.stderr_tail())
        time.sleep(0.01)


def ws_via(port, src):
    """A WebSocket through `port` from a client bound to `src`; also its
    local port, which the PROXY header carries."""
    s = dial(port, src)
    sport = s.getsockname()[1]
    return RawWS.open(port, sock=s, tls=None), sport


def publish(port, topic, body, src=None, header=b""):
    req = (b"POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
           % (topic.encode(), len(body))) + body
    return exchange(port, header + req, src=src)


class Haproxy:
    """HAProxy from docs/DEPLOY.md's block, with a frontend sending version
    2 (as documented) and another sending version 1."""

    def __init__(self, upstream):
        self.v2 = fronts.free_port()
        self.v1 = fronts.free_port()
        doc = fronts.deploy_snippet("haproxy", [("bind :80", "bind 127.0.0.1:%d" % self.v2),
                                                ("127.0.0.1:8080", "127.0.0.1:%d" % upstream)])
        # "backend ringws" is also the end of "default_backend ringws".
        second = doc[doc.index("frontend"):].replace("websockets", "websockets_v1") \
            .replace("backend ringws", "backend ringws_v1") \
            .replace("send-proxy-v2", "send-proxy").replace(":%d" % self.v2, ":%d" % self.v1)
        self.front = fronts.HAProxy(doc + second, [self.v1, self.v2])

    def stop(self):
        self.front.stop()


def t_haproxy_addresses(r):
    with r.server(["--proxy-protocol", "--workers", "2"], "behind-haproxy", env=DEBUG) as srv:
        hap = Haproxy(srv.port)
        try:
            for port, version, src in ((hap.v1, 1, "127.0.0.2"), (hap.v2, 2, "127.0.0.3")):
                ws, sport = ws_via(port, src)
                ws.send_frame(OP_TEXT, "via v%d" % version)
                ws.expect_echo(OP_TEXT, "via v%d" % version)
                ws.send_frame(OP_BINARY, bytes(range(256)) * 300)
                ws.expect_echo(OP_BINARY, bytes(range(256)) * 300)
                wait_log(srv, "PROXY v%d client %s port %d: accepted" % (version, src, sport))
                ws.close_handshake()
                ws.close()
        finally:
            hap.stop()


def t_haproxy_max_per_address(r):
    with r.server(["--proxy-protocol", "--workers", "2", "--max-per-address", "1"], "per-address",
                  env=DEBUG) as srv:
        hap = Haproxy(srv.port)
        try:
            first, _ = ws_via(hap.v2, "127.0.0.2")
            s = dial(hap.v2, "127.0.0.2")
            sport = s.getsockname()[1]
            s.sendall(upgrade_request(hap.v2)[0])
            expect_refused(read_all(s, T(5)), "a second connection of 127.0.0.2")
            s.close()
            wait_log(srv, "PROXY v2 client 127.0.0.2 port %d: refused (max-per-address)" % sport)
            other, _ = ws_via(hap.v1, "127.0.0.3")
            other.send_frame(OP_TEXT, "another client")
            other.expect_echo(OP_TEXT, "another client")
            # Its first connection gone, the client is served again.
            first.close_handshake()
            first.close()
            deadline = time.monotonic() + T(3)
            while True:
                answer = exchange(hap.v2, HEALTHZ, src="127.0.0.2")
                if answer or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            expect_status(answer, 200, "127.0.0.2 once its first connection closed")
            other.close_handshake()
            other.close()
        finally:
            hap.stop()


def t_publish_loopback_check(r):
    """No publish token: only loopback clients publish, as the header names
    them, though every connection comes from the proxy on loopback."""
    with r.server(["--proxy-protocol"], "publish-check", env=DEBUG) as srv:
        hap = Haproxy(srv.port)
        try:
            sub = RawWS.open(hap.v2, path="/ws?topics=news", sock=dial(hap.v2, "127.0.0.3"), tls=None)
            expect_status(publish(hap.v1, "news", b"from 127.0.0.2", src="127.0.0.2"), 200,
                          "a publish of a loopback client through HAProxy")
            sub.expect_event("text", b"from 127.0.0.2")
            for header, who in ((v1("203.0.113.9"), "v1 from 203.0.113.9"),
                                (v2("2001:db8::9"), "v2 from 2001:db8::9"),
                                (v2("192.0.2.1"), "v2 from 192.0.2.1")):
                answer = publish(srv.port, "news", b"remote", header=header)
                expect_status(answer, 403, "a publish " + who)
            expect_status(publish(srv.port, "news", b"local", header=v1("127.0.0.5")), 200,
                          "a publish whose header names 127.0.0.5")
            sub.expect_event("text", b"local")
            expect_refused(publish(srv.port, "news", b"direct"), "a publish without a header")
            sub.close_handshake()
            sub.close()
        finally:
            hap.stop()


BAD_HEADERS = [
    ("no header", HEALTHZ, "byte 0: no PROXY protocol signature"),
    ("v1 protocol TCP5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "byte 6: protocol not TCP4"),
    ("v1 bad address", b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "byte 11: not an IPv4 address"),
    ("v1 port too big", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "byte 27: not a port"),
    ("v1 LF alone", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "byte 30: not printable"),
    ("v1 over 107 bytes", b"PROXY UNKNOWN " + b"x" * 150 + b"\r\n", "byte 105: no CRLF within 107"),
    ("v2 version 1", V2_SIG + b"\x11\x11\x00\x0c" + bytes(12), "byte 12: version 2 signature"),
    ("v2 UDP", V2_SIG + b"\x21\x12\x00\x0c" + bytes(12), "byte 13: not a stream"),
    ("v2 short address", V2_SIG + b"\x21\x11\x00\x0b" + bytes(11), "byte 15: length too short"),
    ("v2 TLV overrun", v2("192.0.2.1", tlvs=b"\x01\x00\x09ab"), "byte 28: a TLV longer"),
    ("v2 too long", V2_SIG + b"\x20\x00\x08\x00" + bytes(2048), "byte 15: header longer than 2048"),
]


def t_malformed_headers(r):
    with r.server(["--proxy-protocol"], "malformed", env=DEBUG) as srv:
        for what, header, log in BAD_HEADERS:
            data = header if header is HEALTHZ else header + HEALTHZ
            expect_refused(exchange(srv.port, data), what)
            wait_log(srv, "no valid PROXY header (%s" % log)
        expect_status(exchange(srv.port, v1("192.0.2.7") + HEALTHZ), 200, "a valid header after them")


def t_local_and_unknown(r):
    """LOCAL and UNKNOWN name no client: served, counted for no address
    (two at once under --max-per-address 1), never local to publish."""
    with r.server(["--proxy-protocol", "--max-per-address", "1"], "local", env=DEBUG) as srv:
        held = dial(srv.port)
        held.sendall(v2(cmd=0x20) + upgrade_request(srv.port)[0])
        expect(held.recv(12) == b"HTTP/1.1 101", "a WebSocket after a LOCAL header", "")
        expect_status(exchange(srv.port, v2(cmd=0x20) + HEALTHZ), 200, "LOCAL beside another LOCAL")
        expect_status(exchange(srv.port, b"PROXY UNKNOWN\r\n" + HEALTHZ), 200, "v1 UNKNOWN")
        wait_log(srv, "PROXY v2 client none port 0: accepted")
        expect_status(publish(srv.port, "t", b"x", header=v2(cmd=0x20)), 403, "a publish after LOCAL")
        held.close()


def t_split_headers(r):
    """Headers cut byte by byte, then the request; and a header, request
    and WebSocket frames in one write."""
    with r.server(["--proxy-protocol"], "split", env=DEBUG) as srv:
        for what, header in (("v1", v1("198.51.100.4", sport=1111)),
                             ("v2", v2("2001:db8::4", sport=2222, tlvs=b"\x04\x00\x02ok"))):
            pieces = [header[i:i + 1] for i in range(len(header))] + [HEALTHZ]
            expect_status(exchange(srv.port, None, pieces=pieces, pause=0.002), 200,
                          "a %s header sent byte by byte" % what)
        wait_log(srv, "PROXY v1 client 198.51.100.4 port 1111: accepted")
        wait_log(srv, "PROXY v2 client 2001:db8::4 port 2222: accepted")
        request, key = upgrade_request(srv.port)
        s = dial(srv.port)
        ws = RawWS.open(srv.port, request=v2("192.0.2.44") + request, key=key, sock=s, tls=None)
        ws.send_frame(OP_TEXT, "after the header")
        ws.expect_echo(OP_TEXT, "after the header")
        ws.close_handshake()
        ws.close()


def t_header_timeout(r):
    """The handshake timeout bounds the header: half of one, or nothing."""
    limit = 1.0 + slack(2) + 1.0
    with r.server(["--proxy-protocol", "--handshake-timeout", "1s"], "timeout") as srv:
        for what, data in (("half a header", v1("192.0.2.8")[:20]), ("nothing", b"")):
            s = dial(srv.port)
            t0 = time.monotonic()
            if data:
                s.sendall(data)
            answer = read_all(s, T(limit))
            took = time.monotonic() - t0
            s.close()
            expect_refused(answer, what)
            expect(0.8 <= took <= limit, "closed after the 1s handshake timeout (%s)" % what,
                   "%.2fs" % took)


def t_raw_max_per_address(r):
    """Per address as the headers name them; IPv6 per /64."""
    with r.server(["--proxy-protocol", "--max-per-address", "1"], "raw-per-address", env=DEBUG) as srv:
        held = []
        for src, served in (("198.51.100.1", True), ("198.51.100.1", False), ("198.51.100.2", True),
                            ("2001:db8:1:2::1", True), ("2001:db8:1:2::2", False),
                            ("2001:db8:1:3::1", True)):
            s = dial(srv.port)
            s.sendall(v1(src) + upgrade_request(srv.port)[0])
            answer = s.recv(12) if served else read_all(s, T(5))
            expect(answer == (b"HTTP/1.1 101" if served else b""),
                   "%s %s" % (src, "served" if served else "refused"), answer[:40])
            held.append(s)
        for s in held:
            s.close()


def t_tls_behind_proxy(r):
    """The header comes before the ClientHello; --plain-port stays direct."""
    if TLS_FRONT == "nginx":
        print("  skipped: the TLS listener is nginx's under RINGWS_TLS_FRONT=nginx", flush=True)
        return
    import tls_ca
    ca = tls_ca.shared_ca()
    with r.server(["--proxy-protocol"], "tls", env=DEBUG, tls=[ca.issue()], plain_port=True) as srv:
        s = dial(srv.port)
        s.sendall(v2("192.0.2.99", sport=4443))
        t = tls_wrap(s, ca.client_context())
        t.sendall(HEALTHZ)
        expect_status(read_all(t, T(5)), 200, "GET /healthz over TLS after a v2 header")
        t.close()
        wait_log(srv, "PROXY v2 client 192.0.2.99 port 4443: accepted")
        s = dial(srv.port)
        try:
            t = tls_wrap(s, ca.client_context())
            t.sendall(HEALTHZ)
            answer = read_all(t, T(5))
        except (OSError, ValueError):
            answer = b""
        expect_refused(answer, "a TLS handshake without a header")
        expect_status(exchange(srv.plain_port, HEALTHZ), 200, "the plain port, direct")


def main():
    for path in (fronts.HAPROXY,):
        why = fronts.missing(path)
        if why:
            print("proxy_protocol: skipped: " + why)
            sys.exit(77)
    r = Runner("proxy_protocol")
    for cid, fn in [
        ("haproxy-v1-v2-client-addresses", t_haproxy_addresses),
        ("haproxy-max-per-address-per-client", t_haproxy_max_per_address),
        ("publish-loopback-check-by-header", t_publish_loopback_check),
        ("malformed-headers-closed-unanswered", t_malformed_headers),
        ("v2-local-and-v1-unknown", t_local_and_unknown),
        ("headers-split-byte-by-byte", t_split_headers),
        ("header-within-handshake-timeout", t_header_timeout),
        ("raw-max-per-address-v4-and-v6-64", t_raw_max_per_address),
        ("tls-after-the-header-plain-port-direct", t_tls_behind_proxy),
    ]:
        r.case(cid, fn, r, timeout=40)
    r.finish()


if __name__ == "__main__":
    main()
