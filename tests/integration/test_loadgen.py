"""The load generator against the server, end to end, small: every mode of
tools/ringws-bench runs against a two-worker ringws and must report a clean
run (exit 0, no mismatch, loss, protocol error or unexpected close) with the
exact counts asked for.  This keeps the instrument behind bench/RESULTS.md
working, and it is one more independent client of the server: the fan-out
mode checks that every subscriber gets every published message once and in
order, across two generator processes."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import Runner, T, eq, fail  # noqa: E402

BENCH = os.environ.get("RINGWS_BENCH", "")
CLEAN = ("mismatches", "lost", "connect_errors", "handshake_errors", "handshake_timeouts",
         "unexpected_closes", "protocol_errors", "close_timeouts", "abandoned")


def bench(srv, mode, path, *args):
    cmd = [BENCH, mode, "--url", "ws://127.0.0.1:%d%s" % (srv.port, path), "--json",
           "--timeout", "%d" % T(20), "--server-pid", str(srv.pid)] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=T(90))
    except subprocess.TimeoutExpired:
        fail("%s did not finish" % " ".join(cmd))
    if p.returncode != 0:
        fail("%s exited %d: %s" % (mode, p.returncode, p.stderr.decode("utf-8", "replace")[-600:]))
    try:
        out = json.loads(p.stdout)
    except ValueError:
        fail("%s printed no JSON: %r" % (mode, p.stdout[:300]))
    for key in CLEAN:
        eq(out.get(key), 0, "%s: %s" % (mode, key))
    return out


def t_echo(srv):
    out = bench(srv, "echo", "/echo", "--conns", 20, "--inflight", 4, "--messages", 2000)
    eq(out["echoed_total"], 2000, "messages echoed byte-exact")
    eq(out["closes_completed"], 20, "closing handshakes completed")


def t_echo_text(srv):
    out = bench(srv, "echo", "/echo", "--conns", 10, "--inflight", 2, "--messages", 500,
                "--text", "--size", 300)
    eq(out["echoed_total"], 500, "text messages echoed byte-exact")


def t_connect(srv):
    out = bench(srv, "connect", "/echo", "--conns", 10, "--messages", 200)
    eq(out["handshakes"], 200, "handshakes completed")


def t_idle(srv):
    out = bench(srv, "idle", "/echo", "--conns", 300, "--duration", 1)
    eq(out["opened"], 300, "connections held")
    eq(out["closes_completed"], 300, "closing handshakes completed")


def t_fanout(srv):
    out = bench(srv, "fanout", "/ws", "--conns", 300, "--messages", 5, "--rate", 20,
                "--procs", 2)
    eq(out["subscribers"], 300, "subscribers open")
    eq(out["delivered"], 1500, "deliveries (subscribers x messages)")
    eq(out["messages_complete"], 5, "messages that reached every subscriber")
    for key in ("duplicates", "out_of_order", "recipient_mismatches", "publish_errors"):
        eq(out[key], 0, "fanout: " + key)


def main():
    r = Runner("loadgen")
    if not os.access(BENCH, os.X_OK):
        fail("RINGWS_BENCH must name the built tools/ringws-bench (got %r)" % BENCH)
    with r.server(["--workers", "2"], "two-workers") as srv:
        r.case("echo-binary", t_echo, srv, timeout=60)
        r.case("echo-text", t_echo_text, srv, timeout=60)
        r.case("connect", t_connect, srv, timeout=60)
        r.case("idle", t_idle, srv, timeout=60)
        r.case("fanout-two-processes", t_fanout, srv, timeout=60)
    r.finish()


if __name__ == "__main__":
    main()
