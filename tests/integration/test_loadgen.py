"""The load generator against the server, end to end, small: every mode of
tools/ringws-bench runs against a two-worker ringws and must report a clean
run (exit 0, no mismatch, loss, protocol error or unexpected close) with the
exact counts asked for.  This keeps the instrument behind bench/RESULTS.md
working, and it is one more independent client of the server: the fan-out
mode checks that every subscriber gets every published message once and in
order, across two generator processes; the resume and storm modes that the
ringws.v1 envelope's subscribers, leaving and coming back with their
positions (by themselves, or shed by SIGUSR2 while a publisher goes on),
miss nothing and get nothing twice.

Then every mode again over wss://, against a ringws listening with TLS
(bench/tls-setup.sh writes its certificate, as for bench/tls.sh): TLS 1.3
and 1.2, session resumption
proven by the handshakes counted as resumed, records larger than one TLS
record, the publisher over https, and certificate verification with --ca
that accepts the right certificate and refuses another CA's or another
name."""

import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import Runner, T, eq, expect, fail, http_get  # noqa: E402

BENCH = os.environ.get("RINGWS_BENCH", "")
TLS_SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                         "tls-setup.sh")
CLEAN = ("mismatches", "lost", "connect_errors", "handshake_errors", "handshake_timeouts",
         "unexpected_closes", "protocol_errors", "close_timeouts", "abandoned")


def run(url, pids, mode, *args):
    """ringws-bench MODE against url: its exit status, its JSON report (None
    when it printed none) and its stderr."""
    cmd = [BENCH, mode, "--url", url, "--json", "--timeout", "%d" % T(20),
           "--server-pid", ",".join(str(p) for p in pids)] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=T(90))
    except subprocess.TimeoutExpired:
        fail("%s did not finish" % " ".join(cmd))
    try:
        out = json.loads(p.stdout)
    except ValueError:
        out = None
    return p.returncode, out, p.stderr.decode("utf-8", "replace")


class Target:
    """What the generator is pointed at: a base URL (ws:// or wss://) and
    the processes that together are the server (a TLS proxy and the server
    behind it)."""

    def __init__(self, base, pids):
        self.base = base
        self.pids = pids
        self.tls = base.startswith("wss://")

    def url(self, path):
        return self.base + path


def clean(target, mode, path, *args):
    """A run that must end clean; its report.  Over wss every connection's
    handshake is counted, full or resumed, and every orderly close ended
    with the server's close_notify."""
    rc, out, err = run(target.url(path), target.pids, mode, *args)
    if rc != 0:
        fail("%s exited %d: %s" % (mode, rc, err[-600:]))
    if out is None:
        fail("%s printed no JSON" % mode)
    for key in CLEAN:
        eq(out.get(key), 0, "%s: %s" % (mode, key))
    if target.tls:
        expect(out.get("tls", "").startswith("TLSv1."), "the negotiated TLS described",
               out.get("tls"))
        eq(out["tls_closes_without_close_notify"], 0, "%s: closes without close_notify" % mode)
    return out


def t_echo(target):
    out = clean(target, "echo", "/echo", "--conns", 20, "--inflight", 4, "--messages", 2000)
    eq(out["echoed_total"], 2000, "messages echoed byte-exact")
    eq(out["closes_completed"], 20, "closing handshakes completed")
    if target.tls:
        eq((out["tls_handshakes_full"], out["tls_handshakes_resumed"]), (20, 0),
           "TLS handshakes (full, resumed)")
        expect(out["tls"].startswith("TLSv1.3 ") and "server key EC prime256v1" in out["tls"],
               "TLS 1.3 by default, the test certificate's P-256 key", out["tls"])


def t_echo_text(target):
    out = clean(target, "echo", "/echo", "--conns", 10, "--inflight", 2, "--messages", 500,
                "--text", "--size", 300)
    eq(out["echoed_total"], 500, "text messages echoed byte-exact")


def t_echo_large(target):
    # 100 kB messages span seven TLS records each way.
    out = clean(target, "echo", "/echo", "--conns", 4, "--inflight", 2, "--messages", 40,
                "--size", 100000)
    eq(out["echoed_total"], 40, "large messages echoed byte-exact")


def deflate_count(target, name="sent"):
    """The server's ringws_deflate_<name>_total: compressed frames queued
    (sent) or compressed messages received and inflated (inflated); plain
    targets only: over wss the generator talks to a TLS proxy."""
    if target.tls:
        return None
    port = int(target.base.rsplit(":", 1)[1])
    body = http_get(port, "/metrics", tls=False).body.decode()
    return int(re.search(r"^ringws_deflate_%s_total (\d+)" % name, body, re.M).group(1))


def deflate_sent(target):
    return deflate_count(target, "sent")


def t_echo_deflate(target):
    # The answers come compressed (RSV1) and are inflated and checked.
    before = deflate_sent(target)
    out = clean(target, "echo", "/echo", "--conns", 4, "--inflight", 4, "--messages", 1000,
                "--text", "--size", 300, "--deflate")
    eq(out["echoed_total"], 1000, "answers inflated and byte-exact")
    if before is not None:
        eq(deflate_sent(target) - before, 1000, "answers sent compressed")


def t_echo_notifications(target, deflate):
    # JSON notifications of 200 bytes; with --deflate each goes compressed
    # (RSV1), as a browser sends it, so the server inflates every one, and
    # its answers come compressed; without, the same messages go plain.
    before = {n: deflate_count(target, n) for n in ("inflated", "sent")}
    out = clean(target, "echo", "/echo", "--conns", 4, "--inflight", 4, "--messages", 1000,
                "--notifications", "--size", 200, *(["--deflate"] if deflate else []))
    eq(out["echoed_total"], 1000, "notifications echoed byte-exact")
    want = 1000 if deflate else 0
    eq((out["payload"], out["sent_compressed"], out["opcode"]), ("notifications", want, "text"),
       "what was sent")
    if before["sent"] is not None:
        grown = {n: deflate_count(target, n) - v for n, v in before.items()}
        eq(grown, {"inflated": want, "sent": want}, "messages the server inflated, answers "
           "it sent compressed")


def t_fanout_deflate(target):
    before = deflate_sent(target)
    out = clean(target, "fanout", "/ws", "--conns", 100, "--messages", 5, "--rate", 20,
                "--size", 1000, "--deflate")
    eq(out["delivered"], 500, "deliveries inflated and checked")
    for key in ("duplicates", "out_of_order", "recipient_mismatches", "publish_errors"):
        eq(out[key], 0, "fanout: " + key)
    if before is not None:
        eq(deflate_sent(target) - before, 500, "deliveries sent compressed")


def t_connect(target):
    out = clean(target, "connect", "/echo", "--conns", 10, "--messages", 200)
    eq(out["handshakes"], 200, "handshakes completed")
    if target.tls:
        eq((out["tls_handshakes_full"], out["tls_handshakes_resumed"]), (200, 0),
           "TLS handshakes without --resume (full, resumed)")


def t_connect_echo(target):
    out = clean(target, "connect", "/echo", "--conns", 10, "--messages", 200, "--echo",
                "--size", 100)
    eq(out["cycle"], "connect, upgrade, echo, close", "the cycle")
    eq((out["handshakes"], out["echoed_total"]), (200, 200), "(handshakes, echoes byte-exact)")


def resumed(target, *args):
    """connect --resume: only the first connection of each of the 4 in
    flight has no ticket to offer."""
    out = clean(target, "connect", "/echo", "--conns", 4, "--messages", 200, "--resume", *args)
    eq(out["handshakes"], 200, "handshakes completed")
    eq(out["tls_handshakes_full"] + out["tls_handshakes_resumed"], 200, "TLS handshakes counted")
    expect(out["tls_handshakes_resumed"] >= 190, "at least 190 of 200 handshakes resumed",
           "%d resumed, %d full" % (out["tls_handshakes_resumed"], out["tls_handshakes_full"]))
    return out


def t_resume_tls13(target):
    out = resumed(target)
    expect(out["tls"].startswith("TLSv1.3 "), "TLS 1.3", out["tls"])


def t_resume_tls12(target):
    out = resumed(target, "--tls12")
    expect(out["tls"].startswith("TLSv1.2 "), "TLS 1.2 with --tls12", out["tls"])


def t_idle(target):
    out = clean(target, "idle", "/echo", "--conns", 300, "--duration", 1)
    eq(out["opened"], 300, "connections held")
    eq(out["closes_completed"], 300, "closing handshakes completed")
    expect("server_bytes_per_conn" in out, "the server's memory read from every process",
           sorted(out))


def t_fanout(target):
    out = clean(target, "fanout", "/ws", "--conns", 300, "--messages", 5, "--rate", 20,
                "--procs", 2)
    eq(out["subscribers"], 300, "subscribers open")
    eq(out["delivered"], 1500, "deliveries (subscribers x messages)")
    eq(out["messages_complete"], 5, "messages that reached every subscriber")
    for key in ("duplicates", "out_of_order", "recipient_mismatches", "publish_errors"):
        eq(out[key], 0, "fanout: " + key)
    if target.tls:
        eq(out["tls_handshakes_full"], 300, "TLS handshakes of the subscribers")


# Topics with history for the envelope's modes (docs/PUBSUB.md); the
# storm's shed close names at most a second, so that it ends quickly.
HISTORY_ARGS = ["--topic", "hist*=close-1013,history=1000", "--reconnect-window", "1s"]


def t_resume(target):
    # 40 subscribers leave, 100 messages are published, all come back with
    # their positions: each gets exactly the 100 it missed, in order.
    out = clean(target, "resume", "/ws", "--topic", "hist.resume", "--conns", 40,
                "--messages", 100, "--open-window", 40)
    eq(out["subscribers"], 40, "subscribers")
    eq(out["recovered"], 40, "subscriptions recovered")
    eq(out["replayed"], 4000, "messages replayed (subscribers x missed)")
    eq(out["resumed"], 40, "resumes complete")
    for key in ("gap_notices", "epoch_changes", "duplicates", "gaps"):
        eq(out[key], 0, "resume: " + key)
    expect(0 < out["resume_us_p50"] <= out["resume_us_max"], "resume times measured", out)


def t_storm(target):
    # The server sheds every WebSocket while a publisher goes on: each of
    # 40 subscribers comes back when its close says, with its position, and
    # none loses or repeats a message.
    out = clean(target, "storm", "/ws", "--topic", "hist.storm", "--conns", 40, "--rate", 100)
    eq(out["subscribers"], 40, "subscribers")
    eq(out["shed"], 40, "connections shed with 1012")
    eq(out["closes_without_hint"], 0, "shed closes without a retry hint")
    expect(out["retry_hint_ms_max"] < 1000, "hints within --reconnect-window", out)
    eq(out["reconnects"], 40, "reconnects")
    eq(out["recovered"], 40, "reconnects recovered")
    eq(out["live_again"], 40, "subscribers live again")
    for key in ("gap_notices", "epoch_changes", "duplicates", "gaps"):
        eq(out[key], 0, "storm: " + key)
    expect(out["published"] > out["published_before_shed"] > 0,
           "published before and after the shed", out)


def t_verify(target, ca, other_ca):
    out = clean(target, "echo", "/echo", "--conns", 2, "--messages", 20, "--ca", ca)
    eq(out["tls_verify"], "ca", "verification on")
    for args, why in ((("--ca", other_ca), "another CA's certificate"),
                      (("--ca", ca, "--sni", "other.test"), "another name")):
        rc, out, err = run(target.url("/echo"), target.pids, "echo", "--conns", 2,
                           "--messages", 20, *args)
        eq(rc, 1, "exit status with %s" % why)
        eq(out["handshake_errors"], 2, "handshakes refused with %s" % why)
        expect("certificate" in err, "the reason on stderr", err[-300:])


def t_wss_to_plain(srv):
    # A TLS client meeting a plain HTTP server fails its handshakes, quickly.
    rc, out, err = run("wss://127.0.0.1:%d/echo" % srv.port, [srv.pid], "echo", "--conns", 3,
                       "--messages", 10)
    eq(rc, 1, "exit status")
    eq(out["handshake_errors"], 3, "handshakes failed")
    eq(out["opened"], 0, "connections opened")


def t_bad_values():
    # A bad value is reported under its own option's name, whatever the
    # order of the generator's option table.
    for opt in ("--duration", "--conns", "--timeout", "--rate", "--size"):
        p = subprocess.run([BENCH, "echo", opt, "abc"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=T(10))
        err = p.stderr.decode("utf-8", "replace")
        expect(p.returncode != 0, "%s abc refused" % opt, "exit status 0")
        expect("bad value for %s: abc" % opt in err, "the error naming %s" % opt, err[-300:])


# ---- ringws's own TLS listener ---------------------------------------------------


def mode_cases(r, target, prefix):
    """Every mode of the load generator against one target (ws:// or wss://)."""
    for name, fn in (("echo-binary", t_echo), ("echo-text", t_echo_text),
                     ("echo-large", t_echo_large), ("connect", t_connect),
                     ("connect-echo", t_connect_echo), ("idle", t_idle),
                     ("fanout-two-processes", t_fanout), ("resume", t_resume),
                     ("storm", t_storm), ("echo-deflate", t_echo_deflate),
                     ("fanout-deflate", t_fanout_deflate)):
        r.case(prefix + name, fn, target, timeout=60)
    r.case(prefix + "echo-notifications", t_echo_notifications, target, False, timeout=60)
    r.case(prefix + "echo-notifications-deflate", t_echo_notifications, target, True,
           timeout=60)


def tls_cases(r, srv, tmp):
    certs = {}
    for name in ("server", "other"):
        d = os.path.join(tmp, name)
        subprocess.run(["sh", TLS_SETUP, "cert", d], check=True, timeout=T(20))
        certs[name] = (os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    cert, key = certs["server"]
    with r.server(["--workers", "2", "--tls-cert", cert, "--tls-key", key] + HISTORY_ARGS,
                  "tls") as tsrv:
        tls = Target("wss://127.0.0.1:%d" % tsrv.port, [tsrv.pid])
        mode_cases(r, tls, "wss-")
        r.case("wss-connect-resume-tls13", t_resume_tls13, tls, timeout=60)
        r.case("wss-connect-resume-tls12", t_resume_tls12, tls, timeout=60)
        r.case("wss-verify", t_verify, tls, certs["server"][0], certs["other"][0], timeout=60)
    r.case("wss-to-a-plain-server", t_wss_to_plain, srv, timeout=60)


def main():
    r = Runner("loadgen")
    if not os.access(BENCH, os.X_OK):
        fail("RINGWS_BENCH must name the built tools/ringws-bench (got %r)" % BENCH)
    r.case("bad-values-named", t_bad_values, timeout=30)
    with r.server(["--workers", "2"] + HISTORY_ARGS, "two-workers") as srv:
        mode_cases(r, Target("ws://127.0.0.1:%d" % srv.port, [srv.pid]), "")
        with tempfile.TemporaryDirectory(prefix="ringws-loadgen-") as tmp:
            tls_cases(r, srv, tmp)
    r.finish()


if __name__ == "__main__":
    main()
