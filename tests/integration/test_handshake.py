"""The WebSocket opening handshake at /echo (RFC 6455 section 4): the 101
answer and its Sec-WebSocket-Accept, case-insensitive tokens, every way a
request can be refused with its status code, Origin checks, subprotocol
choice, and data that arrives in the same write as the request."""

import asyncio
import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_TEXT, HttpConn, RawWS, Runner, T, build_frame,  # noqa: E402
                         check_101, eq, make_key, upgrade_request, ws_connect)


def exchange(port, request, chops=None):
    with HttpConn(port) as c:
        c.send(request, chops=chops)
        return c.read_response()


def status_of(port, **kw):
    request, _ = upgrade_request(port, **kw)
    return exchange(port, request)


def t_valid(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "hello")
        ws.expect_echo(OP_TEXT, "hello")
        ws.close_handshake()


def t_accept_known_vector(port):
    # The sample key of RFC 6455 section 1.3 and its documented answer.
    request, key = upgrade_request(port, key="dGhlIHNhbXBsZSBub25jZQ==")
    r = exchange(port, request)
    eq(r.status, 101, "status")
    eq(r.header("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "Sec-WebSocket-Accept")


def t_many_keys(port):
    for i in range(20):
        request, key = upgrade_request(port, key=make_key(bytes([i]) * 16 if i % 2 else os.urandom(16)))
        check_101(exchange(port, request), key)


def t_case_insensitive(port):
    variants = [
        {"Upgrade": "WebSocket", "Connection": "upgrade"},
        {"Upgrade": "WEBSOCKET", "Connection": "keep-alive, Upgrade"},
        {"Upgrade": "websocket", "Connection": "Upgrade, keep-alive"},
        {"Upgrade": "websocket", "Connection": "keep-alive,upgrade"},
    ]
    for v in variants:
        request, key = upgrade_request(port, headers=v)
        check_101(exchange(port, request), key)
    # Header names in other cases.
    key = make_key()
    request = ("GET /echo HTTP/1.1\r\nHOST: 127.0.0.1:%d\r\nUPGRADE: WebSocket\r\n"
               "connection: keep-alive, Upgrade\r\nsec-websocket-key: %s\r\n"
               "SEC-WEBSOCKET-VERSION: 13\r\n\r\n" % (port, key)).encode()
    check_101(exchange(port, request), key)


def t_whitespace(port):
    key = make_key()
    request = ("GET /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade:websocket\r\n"
               "Connection:   Upgrade  \r\nSec-WebSocket-Key: \t%s \t\r\n"
               "Sec-WebSocket-Version:13\r\n\r\n" % (port, key)).encode()
    check_101(exchange(port, request), key)


def t_non_get(port):
    for method in ("POST", "PUT", "DELETE"):
        eq(status_of(port, method=method).status, 405, "%s upgrade status" % method)


def t_http10(port):
    eq(status_of(port, version="HTTP/1.0").status, 400, "HTTP/1.0 upgrade status")


def t_missing_host(port):
    eq(status_of(port, drop=["Host"]).status, 400, "upgrade without Host")


def t_no_websocket_upgrade(port):
    eq(status_of(port, drop=["Upgrade"]).status, 426, "Connection: Upgrade but no Upgrade header")
    r = status_of(port, headers={"Upgrade": "h2c"})
    eq(r.status, 426, "Upgrade: h2c at /echo")
    eq(r.header("Sec-WebSocket-Version"), "13", "Sec-WebSocket-Version on 426")


def t_connection_without_upgrade(port):
    eq(status_of(port, headers={"Connection": "keep-alive"}).status, 400, "Connection: keep-alive only")
    eq(status_of(port, drop=["Connection"]).status, 400, "no Connection header")


def t_bad_keys(port):
    cases = {
        "missing": dict(drop=["Sec-WebSocket-Key"]),
        "not base64": dict(key="!!!!!!!!!!!!!!!!!!!!!!=="),
        "15 bytes": dict(key=base64.b64encode(b"x" * 15).decode()),
        "17 bytes": dict(key=base64.b64encode(b"x" * 17).decode()),
        "short": dict(key="abc"),
        "empty": dict(key=""),
        "two keys": dict(add=[("Sec-WebSocket-Key", make_key())]),
    }
    for what, kw in cases.items():
        eq(status_of(port, **kw).status, 400, "Sec-WebSocket-Key %s" % what)


def t_version(port):
    eq(status_of(port, drop=["Sec-WebSocket-Version"]).status, 400, "missing Sec-WebSocket-Version")
    for v in ("8", "12", "14", "0"):
        r = status_of(port, headers={"Sec-WebSocket-Version": v})
        eq(r.status, 426, "Sec-WebSocket-Version %s" % v)
        eq(r.header("Sec-WebSocket-Version"), "13", "advertised version for %s" % v)


def t_unknown_path(port):
    for path in ("/", "/healthz", "/chat", "/echo/x"):
        eq(status_of(port, path=path).status, 404, "upgrade at %s" % path)


def t_split_bytes(port):
    request, key = upgrade_request(port)
    with RawWS.open(port, request=request, key=key, chops=1) as ws:
        ws.send_frame(OP_TEXT, "after a slow handshake")
        ws.expect_echo(OP_TEXT, "after a slow handshake")


def t_frames_same_write(port):
    frames = (build_frame(OP_TEXT, "first") + build_frame(OP_BINARY, b"\x00\x01second")
              + build_frame(OP_TEXT, "x" * 300))
    with RawWS.open(port, extra=frames) as ws:
        ws.expect_echo(OP_TEXT, "first")
        ws.expect_echo(OP_BINARY, b"\x00\x01second")
        ws.expect_echo(OP_TEXT, "x" * 300)
        ws.close_handshake()


def t_frames_same_write_split(port):
    # Handshake and frames in one stream, cut at odd places.
    frames = build_frame(OP_TEXT, "y" * 200) + build_frame(OP_TEXT, "tail")
    with RawWS.open(port, extra=frames, chops=[30, 100, 1, 1, 90, 5]) as ws:
        ws.expect_echo(OP_TEXT, "y" * 200)
        ws.expect_echo(OP_TEXT, "tail")


def t_http_then_upgrade(port):
    # A keep-alive connection that asks for /healthz and then upgrades.
    request, key = upgrade_request(port)
    get = ("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
    with HttpConn(port) as c:
        c.send(get + request + build_frame(OP_TEXT, "after upgrade"))
        r = c.read_response()
        eq((r.status, r.body), (200, b"ok\n"), "response before the upgrade")
        check_101(c.read_response(), key)
        ws = RawWS(c.sock, bytes(c.buf))
        ws.expect_echo(OP_TEXT, "after upgrade")


def t_origin(port):
    for origin in ("http://good.example", "https://also.example"):
        request, key = upgrade_request(port, headers={"Origin": origin})
        check_101(exchange(port, request), key)
    for origin in ("http://evil.example", "http://good.example.evil", "null", "http://good.example:81"):
        eq(status_of(port, headers={"Origin": origin}).status, 403, "Origin %s" % origin)


def t_origin_any(port):
    # Without --origin every Origin is accepted.
    request, key = upgrade_request(port, headers={"Origin": "http://anything.example"})
    check_101(exchange(port, request), key)


def sub_choice(port, offered_lines):
    add = [("Sec-WebSocket-Protocol", line) for line in offered_lines]
    request, key = upgrade_request(port, add=add)
    r = exchange(port, request)
    check_101(r, key)
    return r.header_all("Sec-WebSocket-Protocol")


def t_subprotocol(port):
    eq(sub_choice(port, ["superchat, chat"]), ["superchat"], "answer to 'superchat, chat'")
    eq(sub_choice(port, ["chat, superchat"]), ["chat"], "answer to 'chat, superchat'")
    eq(sub_choice(port, ["foo"]), [], "answer to 'foo'")
    eq(sub_choice(port, ["foo, chat"]), ["chat"], "answer to 'foo, chat'")
    eq(sub_choice(port, ["foo,superchat,chat"]), ["superchat"], "answer to 'foo,superchat,chat'")
    eq(sub_choice(port, ["foo", "superchat"]), ["superchat"], "answer to two header lines foo / superchat")
    eq(sub_choice(port, []), [], "answer when no subprotocol is offered")


def t_subprotocol_none_configured(port):
    eq(sub_choice(port, ["chat"]), [], "answer to 'chat' when the server has no subprotocols")


async def t_subprotocol_library(port):
    async with ws_connect(port, subprotocols=["superchat", "chat"]) as ws:
        eq(ws.subprotocol, "superchat", "subprotocol picked for the websockets client")
        await ws.send("with a subprotocol")
        eq(await asyncio.wait_for(ws.recv(), T(5)), "with a subprotocol", "echo")


async def t_library(port):
    async with ws_connect(port) as ws:
        await ws.send("library hello")
        eq(await asyncio.wait_for(ws.recv(), T(5)), "library hello", "echo")
        await ws.close()
        eq(ws.close_code, 1000, "close code after a client close")


def t_concurrent_handshakes(port):
    conns = []
    try:
        reqs = [upgrade_request(port) for _ in range(40)]
        socks = []
        for request, key in reqs:
            c = HttpConn(port)
            conns.append(c)
            c.send(request[:20])
            socks.append((c, request, key))
        for c, request, key in socks:
            c.send(request[20:])
        for c, request, key in socks:
            check_101(c.read_response(), key)
    finally:
        for c in conns:
            c.close()


def main():
    r = Runner("handshake")
    with r.server([], "default") as srv:
        p = srv.port
        for cid, fn in [
            ("valid", t_valid), ("accept-rfc-sample", t_accept_known_vector), ("accept-20-keys", t_many_keys),
            ("case-insensitive", t_case_insensitive), ("optional-whitespace", t_whitespace),
            ("non-get-405", t_non_get), ("http10-400", t_http10), ("missing-host-400", t_missing_host),
            ("no-websocket-upgrade-426", t_no_websocket_upgrade),
            ("connection-without-upgrade-400", t_connection_without_upgrade),
            ("bad-key-400", t_bad_keys), ("version-426", t_version), ("unknown-path-404", t_unknown_path),
            ("handshake-1-byte-writes", t_split_bytes), ("frames-in-handshake-write", t_frames_same_write),
            ("frames-in-handshake-write-chopped", t_frames_same_write_split),
            ("http-then-upgrade", t_http_then_upgrade), ("origin-unrestricted", t_origin_any),
            ("no-subprotocols-configured", t_subprotocol_none_configured),
            ("websockets-client", t_library), ("40-concurrent-handshakes", t_concurrent_handshakes),
        ]:
            r.case(cid, fn, p)
    with r.server(["--origin", "http://good.example", "--origin", "https://also.example"], "origin") as srv:
        r.case("origin-403", t_origin, srv.port)
    with r.server(["--subprotocol", "chat", "--subprotocol", "superchat"], "subprotocol") as srv:
        r.case("subprotocol-choice", t_subprotocol, srv.port)
        r.case("subprotocol-websockets-client", t_subprotocol_library, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
