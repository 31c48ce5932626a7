#!/usr/bin/python3
"""tls_storm.py - what a storm of TLS handshakes does to the delivery latency
of established wss connections, with ringws's handshake budget and without
it (a budget so large that it never binds).

Why it exists: a full TLS handshake costs the server a signature (about a
millisecond with RSA 2048), and a reconnect storm brings thousands; a worker
that serves every handshake in a loop turn before it flushes makes every
established connection wait that long for its messages.  This runs one
ringws worker pinned to CPU 0 with an RSA 2048 certificate; on CPU 1, 20
wss connections echo a 20-byte message one at a time (each round trip
timed) while STORM processes open TLS connections (full handshakes, closed
at once) as fast as they can.  Each setting runs --reps times, alternating;
the table gives the medians of the echo round trip percentiles, of the
handshakes per second the server completed, and of how many were put off.

With --admission B1,B2,... it measures a reconnect storm instead, once
per --max-handshakes bound (0: none): CLIENTS wss clients come at once
(`ringws-bench idle --retry`: each TLS handshake, upgrade and close; a
client refused with 503 comes back after its Retry-After, one that waited
past --timeout comes back at once), beside the same 20 echoing
connections.  The table gives the medians of the time until every client
was upgraded, the server's CPU over the storm, the 503s, the handshakes
retried after a timeout, and the echo round trips during the storm.  Where
the bound is checked (the upgrade request, which over TLS comes after the
TLS handshake) decides what a refusal can save.

Usage: bench/tls_storm.py [--reps N] [--duration S] [--storm P] [--out FILE]
  [--binary PATH] [--admission BOUNDS [--clients N] [--timeout S]]
Defaults: 3 reps of 6 s, 3 storm processes, build-bench/ringws (built by
`meson setup build-bench --buildtype=release && ninja -C build-bench`);
with --admission 4000 clients, a 5 s client timeout.
Every process it starts is stopped by PID; ports are picked at run time.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ECHO_CONNS = 20
BUDGETS = [("budget 2 ms (default)", "2ms"), ("no budget (1000 ms)", "1000ms")]


def make_cert(d):
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", key, "-out", cert, "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


def start_server(binary, cert, key, budget, extra=()):
    p = subprocess.Popen(["taskset", "-c", "0", binary, "--port", "0", "--workers", "1",
                          "--tls-cert", cert, "--tls-key", key,
                          "--tls-handshake-budget", budget, "--max-connections", "60000",
                          "--handshake-timeout", "30s", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r":(\d+)", line)
    if not m:
        p.kill()
        sys.exit("ringws did not start: " + line)
    return p, int(m.group(1))


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


UPGRADE = (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
# A masked text frame of 20 bytes (mask 0), and the server's unmasked echo.
FRAME = bytes([0x81, 0x80 | 20, 0, 0, 0, 0]) + b"x" * 20
ECHO = bytes([0x81, 20]) + b"x" * 20


async def echo_client(port, until, rtts, stop=None):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx())
    w.write(UPGRADE)
    await r.readuntil(b"\r\n\r\n")
    while time.monotonic() < until and not (stop and stop.is_set()):
        t = time.monotonic()
        w.write(FRAME)
        got = await r.readexactly(len(ECHO))
        if got != ECHO:
            raise RuntimeError("bad echo")
        rtts.append(time.monotonic() - t)
    w.close()


def echo_proc(port, duration, q, stop=None):
    os.sched_setaffinity(0, {1})
    rtts = []

    async def main():
        until = time.monotonic() + duration
        await asyncio.gather(*[echo_client(port, until, rtts, stop) for _ in range(ECHO_CONNS)])
    asyncio.run(main())
    q.put(rtts)


def storm_proc(port, duration, q):
    os.sched_setaffinity(0, {1})
    done = 0

    async def one(until):
        nonlocal done
        ctx = client_ctx()
        while time.monotonic() < until:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                done += 1
                w.close()
            except OSError:
                await asyncio.sleep(0.01)

    async def main():
        until = time.monotonic() + duration
        await asyncio.gather(*[one(until) for _ in range(64)])
    asyncio.run(main())
    q.put(done)


def metric(port, name):
    s = socket.create_connection(("127.0.0.1", port))
    ctx = client_ctx().wrap_socket(s)
    ctx.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = ctx.recv(65536)
        if not d:
            break
        data += d
    ctx.close()
    total = 0
    for line in data.decode().splitlines():
        if line.startswith(name):
            total += int(line.split()[-1])
    return total


def run_once(binary, cert, key, budget, duration, storm):
    server, port = start_server(binary, cert, key, budget)
    try:
        q = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=echo_proc, args=(port, duration, q))]
        procs += [multiprocessing.Process(target=storm_proc, args=(port, duration - 1, q))
                  for _ in range(storm)]
        hs0 = metric(port, "ringws_tls_handshakes_total")
        for p in procs:
            p.start()
        results = [q.get(timeout=duration + 60) for _ in procs]
        for p in procs:
            p.join(timeout=10)
        hs = metric(port, "ringws_tls_handshakes_total") - hs0 - 2
        deferred = metric(port, "ringws_tls_handshakes_deferred_total")
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=30)
    if rc != 0:
        sys.exit(f"ringws exited with status {rc}")
    rtts = sorted(next(r for r in results if isinstance(r, list)))
    pct = lambda f: rtts[min(len(rtts) - 1, int(f * len(rtts)))] * 1000
    return {"p50": pct(0.5), "p99": pct(0.99), "max": rtts[-1] * 1000,
            "hs_per_s": hs / duration, "deferred": deferred, "echoes": len(rtts)}


def cpu_s(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(rtts, f):
    rtts = sorted(rtts)
    return rtts[min(len(rtts) - 1, int(f * len(rtts)))] * 1000 if rtts else float("nan")


def run_admission(a, cert, key, bound):
    """One reconnect storm against a server with --max-handshakes bound."""
    bench = os.path.join(os.path.dirname(a.binary), "tools", "ringws-bench")
    server, port = start_server(a.binary, cert, key, "2ms", ["--max-handshakes", str(bound)])
    try:
        q, stop = multiprocessing.Queue(), multiprocessing.Event()
        echo = multiprocessing.Process(target=echo_proc, args=(port, 600, q, stop))
        echo.start()
        time.sleep(1)  # the echo connections are open and echoing
        cpu0 = cpu_s(server.pid)
        out = subprocess.run(["taskset", "-c", "1", bench, "idle",
                              "--url", f"wss://127.0.0.1:{port}/echo", "--conns", str(a.clients),
                              "--open-window", str(a.clients), "--retry",
                              "--timeout", str(a.timeout), "--duration", "120", "--json"],
                             capture_output=True, text=True, timeout=240)
        cpu = cpu_s(server.pid) - cpu0
        stop.set()
        rtts = q.get(timeout=60)
        echo.join(timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=30)
    if rc != 0:
        sys.exit(f"ringws exited with status {rc}")
    r = json.loads(out.stdout)
    if r.get("opened") != a.clients:
        sys.exit(f"bound {bound}: {r.get('opened')} of {a.clients} opened: {out.stderr[-400:]}")
    return {"all_open_s": (r["all_open_ns"] - r["start_ns"]) / 1e9, "server_cpu_s": cpu,
            "refused_503": r["refused_503_retry_after"],
            "timeouts_retried": r["connect_timeouts_retried"] + r["upgrade_timeouts_retried"],
            "p50": percentile(rtts, 0.5), "p99": percentile(rtts, 0.99), "echoes": len(rtts)}


def admission(a, cert, key):
    bounds = [int(b) for b in a.admission.split(",")]
    runs = {b: [] for b in bounds}
    for rep in range(a.reps):
        for b in (bounds if rep % 2 == 0 else bounds[::-1]):
            r = run_admission(a, cert, key, b)
            runs[b].append(r)
            print(f"rep {rep + 1} --max-handshakes {b}: " +
                  ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    lines = ["| --max-handshakes | all upgraded s | server CPU s | 503s | timeouts retried | "
             "echo RTT p50 ms | p99 ms | echoes |", "|---|---|---|---|---|---|---|---|"]
    for b in bounds:
        med = {k: statistics.median(r[k] for r in runs[b]) for k in runs[b][0]}
        lines.append(f"| {b or 'none'} | {med['all_open_s']:.2f} | {med['server_cpu_s']:.2f} | "
                     f"{med['refused_503']:.0f} | {med['timeouts_retried']:.0f} | "
                     f"{med['p50']:.2f} | {med['p99']:.2f} | {med['echoes']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--storm", type=int, default=3)
    ap.add_argument("--binary", default="build-bench/ringws")
    ap.add_argument("--out")
    ap.add_argument("--admission")
    ap.add_argument("--clients", type=int, default=4000)
    ap.add_argument("--timeout", type=float, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cert, key = make_cert(d)
        if a.admission:
            table = admission(a, cert, key)
            print(table)
            if a.out:
                with open(a.out, "w") as f:
                    f.write(table + "\n")
            return
        runs = {label: [] for label, _ in BUDGETS}
        for rep in range(a.reps):
            order = BUDGETS if rep % 2 == 0 else BUDGETS[::-1]
            for label, budget in order:
                r = run_once(a.binary, cert, key, budget, a.duration, a.storm)
                runs[label].append(r)
                print(f"rep {rep + 1} {label}: " +
                      ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    lines = ["| setting | echo RTT p50 ms | p99 ms | max ms | echoes | handshakes/s | deferred |",
             "|---|---|---|---|---|---|---|"]
    for label, _ in BUDGETS:
        med = {k: statistics.median(r[k] for r in runs[label]) for k in runs[label][0]}
        lines.append(f"| {label} | {med['p50']:.2f} | {med['p99']:.2f} | {med['max']:.1f} | "
                     f"{med['echoes']:.0f} | {med['hs_per_s']:.0f} | {med['deferred']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
