#!/usr/bin/python3
"""storm.py - a reconnect storm against one ringws server that is delivering
to established subscribers, with admission on (the defaults) and off.

Why it exists: when a node restarts, all its clients come back within
seconds; the handshakes must not stall the delivery to the connections
already open (docs/TUNING.md, "Reconnect storms").  This measures how long
a storm takes to be absorbed, how many tries fail and how (503 with
Retry-After, timeouts, resets), and what it does to the delivery latency
of the established subscribers.

What it does, per mode and repetition (modes alternating): starts ringws
(--workers W --max-connections 19500: a worker's ring holds at most
ulimit -n connections), then `ringws-bench fanout`: S subscribers of one
topic (two client processes), one 16-byte publish per second over HTTP,
every delivery checked, each message's publish time and its recipients'
latency histogram written out (--per-message).  After --before publishes
it starts the storm: `ringws-bench idle --retry`: N clients (over many source addresses
127.0.0.x, --threads rings of at most 20000) connecting all at once, each
subscribing another topic; a 503 is tried again after its Retry-After
(plus up to a second), a timeout (10 s from the connect's start, whether
the TCP connection was made or not) or a reset after 1-2 s.  Once all N
are open (or --bound seconds passed) and closed again, the publishes
stop.  The subscribers' latencies are pooled over the messages published
before the storm and over those published during it (from its start to
the last client open).  Modes: on (the defaults: --accepts-per-turn
256, no handshake bound), off (--accepts-per-turn 0 --max-handshakes 0),
hN (the defaults but --max-handshakes N; h4096: the defaults before this
measurement chose them).

Usage: bench/storm.py [--storm 100000] [--subscribers 10000] [--reps 1]
                      [--modes on,off,h16384] [--workers 8] [--before 10]
                      [--bound 60] [--build DIR]
  DIR (default build-bench) must hold ringws and tools/ringws-bench (a
  release tree).  Runs past 20,000 connections belong under
  a shared lock (flock) where the machine is shared.  Every process it
  starts is ended by its PID; the server binds port 0."""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MODES = {"on": [], "off": ["--accepts-per-turn", "0", "--max-handshakes", "0"]}


def mode_flags(mode):
    """on: the defaults; off: no admission; hN: the defaults with
    --max-handshakes N."""
    if mode in MODES:
        return MODES[mode]
    if re.fullmatch(r"h\d+", mode):
        return ["--max-handshakes", mode[1:]]
    sys.exit("unknown mode %s" % mode)


def mode_label(mode):
    return {"on": "on (defaults)", "off": "off"}.get(mode, "--max-handshakes %s" % mode[1:])


def start_server(build, workers, mode):
    args = [os.path.join(build, "ringws"), "--port", "0", "--workers", str(workers),
            "--max-connections", "19500"] + mode_flags(mode)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    m = re.search(r":(\d+)$", proc.stdout.readline().strip())
    if not m:
        proc.kill()
        sys.exit("ringws did not start")
    return proc, int(m.group(1))


def metrics(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for m in re.finditer(r"^(ringws_[a-z_]+)(\{[^}]*\})? ([0-9.e+]+)$", text, re.M):
        key = m.group(1) + (m.group(2) or "")
        out[key] = out.get(key, 0) + float(m.group(3))
    return out


NETSTAT = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop")


def netstat():
    """The kernel's counters of connections its listen queues dropped."""
    with open("/proc/net/netstat") as f:
        rows = [line.split() for line in f]
    out = {}
    for names, values in zip(rows[::2], rows[1::2]):
        if names[0] == "TcpExt:":
            out = {k: int(v) for k, v in zip(names[1:], values[1:]) if k in NETSTAT}
    return out


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(cond, limit, what):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("waited %ds for %s" % (limit, what))
        time.sleep(0.1)


def pooled(lines, lo_ns, hi_ns):
    """Percentiles of the recipients' latencies over the messages published
    in [lo_ns, hi_ns), from their histograms (value:count pairs)."""
    buckets, msgs = {}, 0
    for seq, pub, count, pairs in lines:
        if lo_ns <= pub < hi_ns:
            msgs += 1
            for v, c in pairs:
                buckets[v] = buckets.get(v, 0) + c
    total = sum(buckets.values())
    res = {"messages": msgs, "deliveries": total}
    for p in (50, 99, 100):
        seen, want = 0, total * p / 100
        for v in sorted(buckets):
            seen += buckets[v]
            if seen >= want:
                res["p%d_ms" % p] = v / 1e6
                break
    return res


def read_per_message(path):
    lines = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            pairs = [tuple(int(x) for x in p.split(":")) for p in parts[3:]]
            lines.append((int(parts[0]), int(parts[1]), int(parts[2]), pairs))
    return lines


def run(a, mode, tmp):
    bench = os.path.join(a.build, "tools", "ringws-bench")
    per_msg = os.path.join(tmp, "per-message")
    server, port = start_server(a.build, a.workers, mode)
    fan = storm = None
    try:
        fan = subprocess.Popen(
            [bench, "fanout", "--url", "ws://127.0.0.1:%d/ws" % port, "--topic", "live",
             "--conns", str(a.subscribers), "--procs", "2", "--messages",
             str(a.before + a.bound + 10), "--rate", "1", "--size", "16", "--timeout", "30",
             "--per-message", per_msg, "--server-pid", str(server.pid), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_for(lambda: metrics(port).get("ringws_connections_open", 0) >= a.subscribers, 60,
                 "the subscribers")
        time.sleep(1.5 + a.before)  # the fanout settles 1 s, then publishes each second
        before, cpu0, net0 = metrics(port), cpu_s(server.pid), netstat()
        storm = subprocess.run(
            [bench, "idle", "--url", "ws://127.0.0.1:%d/ws?topics=storm" % port,
             "--conns", str(a.storm), "--threads", str(-(-a.storm // 18000)),
             "--src-addrs", str(a.storm // 5000 + 1), "--open-window", "20000",
             "--retry", "--duration", str(a.bound), "--timeout", "10", "--json"],
            capture_output=True, text=True, timeout=a.bound + 120)
        after, cpu1, net1 = metrics(port), cpu_s(server.pid), netstat()
        time.sleep(3)
        fan.send_signal(signal.SIGINT)  # ends the publishes; the report follows
        out, _ = fan.communicate(timeout=120)
    finally:
        for p in (fan, server):
            if p and p.poll() is None:
                p.kill()
                p.wait()
    s = json.loads(storm.stdout)
    f = json.loads(out)
    lines = read_per_message(per_msg)
    start, end = s["start_ns"], s["all_open_ns"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after
             if k.startswith(("ringws_handshakes", "ringws_accepts_deferred"))}
    return {
        "mode": mode,
        "storm_opened": s["opened"], "storm_conns": a.storm, "all_open_s": s["open_s"],
        "refused_503": s["refused_503_retry_after"], "retry_after_max_s": s["retry_after_max_s"],
        "refused_other": s["refused_other"], "connect_timeouts": s["connect_timeouts_retried"],
        "upgrade_timeouts": s["upgrade_timeouts_retried"],
        "resets": s["resets_retried"], "client_max_turn_s": s["client_max_turn_s"],
        "before": pooled(lines, 0, start), "during": pooled(lines, start, end + 1),
        # Each message's recipients but the last one's (the publishes
        # were interrupted, perhaps under its deliveries).
        "short_messages": sum(1 for _, _, c, _ in lines[:-1] if c != f.get("subscribers")),
        "delivered": f.get("delivered"),
        "expected": (f.get("subscribers") or 0) * (f.get("messages") or 0),
        "duplicates": f.get("duplicates"), "out_of_order": f.get("out_of_order"),
        "publish_errors": f.get("publish_errors"), "server_metrics": delta,
        # The storm's opening and closing, and the publishes meanwhile.
        "server_cpu_s": round(cpu1 - cpu0, 2),
        # Machine-wide: other work on the machine counts too.
        "kernel": {k: net1.get(k, 0) - net0.get(k, 0) for k in NETSTAT},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--storm", type=int, default=100000)
    ap.add_argument("--subscribers", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--modes", default="on,off")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--before", type=int, default=10)
    ap.add_argument("--bound", type=int, default=60)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    a = ap.parse_args()
    results = []
    modes = a.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="ringws-storm-") as tmp:
        for rep in range(a.reps):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                r = run(a, mode, tmp)
                print(json.dumps(r), flush=True)
                results.append(r)
    print()
    print("| admission | all %d open after (s) | 503 + Retry-After | other status | "
          "timeouts before / after connected | resets | 101s sent | listen overflows | subscribers p50 / p99 / max before (ms) | during (ms) | delivered | "
          "messages short |" % a.storm)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        b, d = r["before"], r["during"]
        print("| %s | %s | %d | %d | %d / %d | %d | %d | %d | %.1f / %.1f / %.1f (%d msgs) | "
              "%.1f / %.1f / %.1f (%d msgs) | %s/%s | %d |" % (
                  mode_label(r["mode"]),
                  ("%.1f" % r["all_open_s"]) if r["storm_opened"] == r["storm_conns"]
                  else "%d open at %.0f" % (r["storm_opened"], r["all_open_s"]),
                  r["refused_503"], r["refused_other"], r["connect_timeouts"],
                  r["upgrade_timeouts"], r["resets"],
                  r["server_metrics"].get('ringws_handshakes_total{outcome="101"}', 0),
                  r["kernel"]["ListenOverflows"],
                  b.get("p50_ms", 0), b.get("p99_ms", 0), b.get("p100_ms", 0), b["messages"],
                  d.get("p50_ms", 0), d.get("p99_ms", 0), d.get("p100_ms", 0), d["messages"],
                  r["delivered"], r["expected"], r["short_messages"]))

    if a.reps > 1:
        print()
        print("Medians over the runs:")
        print()
        print("| admission | all open after (s) | 503 + Retry-After | timeouts before / after "
              "connected | resets | server CPU (s) | p50 / p99 before (ms) | "
              "p50 / p99 during (ms) |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in modes:
            rs = [r for r in results if r["mode"] == mode]
            if not rs:
                continue
            med = lambda f: statistics.median(f(r) for r in rs)
            print("| %s | %.1f | %d | %d / %d | %d | %.1f | %.1f / %.1f | %.1f / %.1f |" % (
                mode_label(mode), med(lambda r: r["all_open_s"]),
                med(lambda r: r["refused_503"]), med(lambda r: r["connect_timeouts"]),
                med(lambda r: r["upgrade_timeouts"]), med(lambda r: r["resets"]),
                med(lambda r: r["server_cpu_s"]), med(lambda r: r["before"].get("p50_ms", 0)), med(lambda r: r["before"].get("p99_ms", 0)),
                med(lambda r: r["during"].get("p50_ms", 0)), med(lambda r: r["during"].get("p99_ms", 0))))


if __name__ == "__main__":
    main()
