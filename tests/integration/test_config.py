"""The config file of the ringws binary (--config FILE, --print-config):
settings from a file shape a real server, flags override the file, every
malformed line is reported as FILE:LINE with exit status 2 before anything
listens, --print-config reads back to the same configuration, and the
example in docs/ loads."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (BIN, OP_BINARY, HttpConn, RawWS, Runner, Server, T, check_101,  # noqa: E402
                         eq, expect, fail, http_get, upgrade_request)

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                       "ringws.conf.example")
TMP = tempfile.mkdtemp(prefix="ringws-config-")

# Limits the file sets, each far from its default so that a file that was
# not applied shows.
FILE_MAX_MESSAGE = 1000
FILE_ORIGIN = "https://app.example"


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def run(args, timeout=10):
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=T(timeout))
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


BASE = write("base.conf", """# a server for the tests
bind = 127.0.0.1   # loopback
port = 0
max-message = %d
origin = %s
pubsub-path = ""
""" % (FILE_MAX_MESSAGE, FILE_ORIGIN))


def handshake_status(port, origin):
    request, key = upgrade_request(port, headers={"Origin": origin})
    with HttpConn(port) as c:
        c.send(request)
        r = c.read_response()
    if r.status == 101:
        check_101(r, key)
    return r.status


def echo_size(port, size):
    """Sends one binary message of `size` bytes; True when it is echoed,
    False when the server closes with 1009."""
    request, key = upgrade_request(port, headers={"Origin": FILE_ORIGIN})
    with RawWS.open(port, request=request, key=key) as ws:
        ws.send_frame(OP_BINARY, b"x" * size)
        if size <= FILE_MAX_MESSAGE:
            ws.expect_echo(OP_BINARY, b"x" * size)
            ws.close_handshake()
            return True
        ws.fail_expected(1009)
        return False


def t_file_limits(port):
    echo_size(port, FILE_MAX_MESSAGE)
    eq(echo_size(port, FILE_MAX_MESSAGE + 1), False, "a message over the file's max-message")
    eq(handshake_status(port, FILE_ORIGIN), 101, "the file's origin")
    eq(handshake_status(port, "https://other.example"), 403, "an origin not in the file")
    # pubsub-path = "" turns the pub/sub path off (it is /ws by default).
    request, _ = upgrade_request(port, path="/ws")
    with HttpConn(port) as c:
        c.send(request)
        expect(c.read_response().status != 101, "no WebSocket on /ws", "101")


def t_flags_override(port):
    # --max-message 5000 over the file's 1000; --origin replaces the list.
    request, key = upgrade_request(port, headers={"Origin": "https://other.example"})
    with RawWS.open(port, request=request, key=key) as ws:
        ws.send_frame(OP_BINARY, b"y" * 4000)
        ws.expect_echo(OP_BINARY, b"y" * 4000)
        ws.close_handshake()
    eq(handshake_status(port, FILE_ORIGIN), 403, "the file's origin, replaced by --origin")


def t_bind_from_file():
    path = write("bind.conf", "bind = 127.0.0.2\nport = 0\n")
    srv = Server(cmd=[BIN, "--config", path], label="bind-127.0.0.2").start()
    try:
        expect(any("127.0.0.2:%d" % srv.port in line for line in srv.stdout_lines),
               "listening on 127.0.0.2", srv.stdout_lines)
        with socket.create_connection(("127.0.0.2", srv.port), timeout=T(5)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            expect(s.recv(100).startswith(b"HTTP/1.1 200"), "/healthz on 127.0.0.2", "")
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=T(5)).close()
            fail("127.0.0.1 accepted a connection though the file binds 127.0.0.2")
        except ConnectionRefusedError:
            pass
    finally:
        srv.stop()


# (name, file text, line the error is on, what the message must say)
BAD_FILES = [
    ("unknown-key", "port = 0\n# fine\nno-such-key = 1\n", 3, "unknown key"),
    ("bad-value", "port = 0\nmax-message = 12x\n", 2, "bad value"),
    ("out-of-bounds", "port = 70000\n", 1, "bad value"),
    ("below-minimum", "\n\nmax-send-queue = 10\n", 3, "bad value"),
    ("bad-duration", "idle-timeout = soon\n", 1, "bad value"),
    ("bad-topic-policy", "topic = a.*=sometimes\n", 1, "bad value"),
    ("bad-topic-history", "topic = a.*=history=0\n", 1, "bad value"),
    ("missing-value", "port =\n", 1, "needs a value"),
    ("missing-value-comment", "port = # none\n", 1, "needs a value"),
    ("no-equals", "port\n", 1, "needs a value"),
    ("switch-given-value", "plain-recv-buffers = yes\n", 1, "takes no value"),
    ("unterminated-quote", 'bind = "127.0.0.1\n', 1, "unterminated quote"),
    ("text-after-value", "bind = 127.0.0.1 extra\n", 1, "text after the value"),
    ("flag-spelling", "--port = 0\n", 1, "unknown key"),
    ("no-key", "= 0\n", 1, "expected \"key = value\""),
    ("nested-config", "config = other.conf\n", 1, "unknown key"),
    ("too-many-origins", "".join("origin = https://o%d.example\n" % i for i in range(33)), 33,
     "more than 32"),
    ("nul-byte", "port = 0\npo\0rt = 1\n", 2, "NUL"),
]


def t_bad_file(name, text, line, message):
    path = write(name + ".conf", text)
    for extra in ([], ["--print-config"]):
        rc, out, err = run(["--config", path, "--port", "0"] + extra)
        eq(rc, 2, "exit status for %s %s" % (name, extra))
        expect(re.search(r"^%s:%d: .*%s" % (re.escape(path), line, re.escape(message)), err, re.M),
               "'%s:%d: ...%s...'" % (path, line, message), err[-300:])
        expect("listening" not in out and "bind" not in out, "nothing listened or printed", out[-200:])


def t_unreadable_files():
    for path, why in ((os.path.join(TMP, "absent.conf"), "No such file"), (TMP, "directory")):
        rc, out, err = run(["--config", path, "--port", "0"])
        eq(rc, 2, "exit status for %s" % path)
        expect(err.startswith(path + ": cannot read") and why in err, path + ": cannot read ... " + why,
               err[-300:])
        expect("listening" not in out, "nothing listened", out[-200:])


# Every key with a value away from its default.
ALL_FLAGS = ["--bind", "::1", "--port", "4321", "--workers", "3", "--max-message", "123456",
             "--min-message-rate", "77", "--message-grace", "1500ms", "--max-partial-bytes", "70000",
             "--origin", "https://a.example", "--origin", "https://b.example",
             "--subprotocol", "v2", "--subprotocol", "v1", "--idle-timeout", "0",
             "--handshake-timeout", "2.5", "--close-timeout", "250ms", "--max-connections", "99",
             "--max-per-address", "7", "--max-send-queue", "2048", "--overflow", "try-again",
             "--admission-refusal", "1013",
             "--pubsub-path", "/events", "--publish-token", "s3cret#with#hashes",
             "--fanout-queue", "4096", "--max-publish", "999", "--max-inbox", "8192",
             "--max-topics", "5", "--topic", "a.*=drop-oldest,publish", "--topic", "b=close-1008",
             "--topic", "h=history=50,history-ttl=90s", "--history-memory", "65536",
             "--sequence-idle", "1500ms", "--sequence-idle-max", "77",
             "--engine", "redis://10.1.2.3:7000,[::1]:7001",
             "--recv-buffer", "64", "--recv-buffers", "512", "--plain-recv-buffers",
             "--tls-cert", "/certs/one cert.pem", "--tls-key", "/certs/one.key",
             "--tls-cert", "/certs/two.pem", "--tls-key", "/certs/two.key",
             "--plain-port", "0", "--tls-ticket-lifetime", "3600",
             "--tls-handshake-budget", "5ms",
             "--stop-code", "1001", "--reconnect-window", "750ms", "--proxy-protocol",
             "--token-key", "k1=/keys/a.pem", "--token-key", "/keys/b=c.pem", "--token-leeway", "7s", "--token-cookie", "jwt",
             "--require-token", "--deflate-takeover", "/ws", "--deflate-takeover", "/chat",
             "--deflate-takeover-window", "13", "--deflate-takeover-memory", "1048576"]


def help_keys():
    rc, out, _ = run(["--help"])
    eq(rc, 0, "--help exit status")
    return sorted(set(re.findall(r"^  --([a-z-]+)", out, re.M)) - {"config", "print-config"})


def printed_keys(text):
    return {m.group(1) for m in re.finditer(r"^(?:# )?([a-z-]+)\b", text, re.M)}


def t_print_round_trip():
    rc, first, err = run(ALL_FLAGS + ["--print-config"])
    eq(rc, 0, "--print-config exit status (stderr %s)" % err[-200:])
    missing = [k for k in help_keys() if k not in printed_keys(first)]
    eq(missing, [], "flags of --help with no key in --print-config")
    # The flags' values are what it prints, not defaults.
    for line in ("bind = ::1", "workers = 3", "message-grace = 1500ms", "idle-timeout = 0s",
                 "handshake-timeout = 2500ms", "close-timeout = 250ms", "overflow = try-again",
                 "admission-refusal = 1013",
                 "publish-token = s3cret#with#hashes", "topic = a.*=drop-oldest,publish",
                 "topic = b=close-1008", "topic = h=close-1013,history=50,history-ttl=90s",
                 "history-memory = 65536", "sequence-idle = 1500ms", "sequence-idle-max = 77",
                 "engine = redis://10.1.2.3:7000,[::1]:7001", "plain-recv-buffers", 'tls-cert = "/certs/one cert.pem"',
                 "tls-key = /certs/two.key", "plain-port = 0", "tls-ticket-lifetime = 3600s",
                 "tls-handshake-budget = 5ms", "stop-code = 1001", "reconnect-window = 750ms",
                 "proxy-protocol",
                 "origin = https://b.example", "max-inbox = 8192",
                 "token-key = k1=/keys/a.pem", "token-key = /keys/b=c.pem", "token-leeway = 7s",
                 "token-cookie = jwt", "require-token", "deflate-takeover = /ws",
                 "deflate-takeover = /chat", "deflate-takeover-window = 13",
                 "deflate-takeover-memory = 1048576"):
        expect(re.search("^" + re.escape(line) + "$", first, re.M), line, first)
    path = write("printed.conf", first)
    rc, again, err = run(["--config", path, "--print-config"])
    eq(rc, 0, "--config of the printed file (stderr %s)" % err[-200:])
    eq(again, first, "the configuration read back from --print-config")
    # Defaults alone read back too (the keys without a value are comments).
    rc, defaults, _ = run(["--print-config"])
    rc2, again, err = run(["--config", write("defaults.conf", defaults), "--print-config"])
    eq((rc, rc2, again), (0, 0, defaults), "defaults read back (stderr %s)" % err[-200:])


def t_print_overrides():
    # What --print-config prints is the file with the flags over it.
    rc, out, err = run(["--config", BASE, "--max-message", "5000", "--origin", "https://x.example",
                        "--print-config"])
    eq(rc, 0, "exit status (stderr %s)" % err[-200:])
    for line in ("max-message = 5000", "origin = https://x.example", 'pubsub-path = ""', "port = 0"):
        expect(re.search("^" + re.escape(line) + "$", out, re.M), line, out)
    expect(FILE_ORIGIN not in out, "the file's origin list replaced", out)


def t_example_loads(port):
    eq(http_get(port, "/healthz").status, 200, "/healthz of a server from the example")
    # Its origin list is in force.
    eq(handshake_status(port, "https://app.example"), 101, "the example's origin")
    eq(handshake_status(port, "https://evil.example"), 403, "an origin not in the example")


def main():
    r = Runner("config")
    with r.server([], "from-file", cmd=[BIN, "--config", BASE]) as srv:
        r.case("file-sets-limits", t_file_limits, srv.port)
    with r.server([], "flags-override", cmd=[BIN, "--config", BASE, "--max-message", "5000",
                                             "--origin", "https://other.example"]) as srv:
        r.case("flags-override-file", t_flags_override, srv.port)
    r.case("bind-from-file", t_bind_from_file)
    for name, text, line, message in BAD_FILES:
        r.case("error-" + name, t_bad_file, name, text, line, message)
    r.case("unreadable-files", t_unreadable_files)
    r.case("print-config-round-trip", t_print_round_trip)
    r.case("print-config-flags-over-file", t_print_overrides)
    with r.server([], "docs-example", cmd=[BIN, "--config", EXAMPLE, "--port", "0"]) as srv:
        r.case("docs-example-loads", t_example_loads, srv.port)
    shutil.rmtree(TMP, ignore_errors=True)  # finish() leaves by os._exit: no atexit
    r.finish()


if __name__ == "__main__":
    main()
