#!/usr/bin/python3
"""cluster.py - fan-out over three ringws nodes through a Redis Cluster next
to one node alone, on this machine, in one run.

Why it exists: the Redis engine (docs/CLUSTER.md) must cost little against a
single node: the time from a publish to its last delivery, the server CPU
per delivery on each node, and the Redis commands per publish, which must
not grow with nodes that have no subscriber.

What it does: starts a Redis Cluster of three masters (no replicas: they
would take CPU from the nodes) on free loopback ports in a private
directory, then for each subscriber count and repetition, alternating the
order: (a) one ringws node (--workers W, in-process engine), (a') the same
with --workers 3W (as many threads as (b)), and (b) three ringws nodes
(--workers W each, --engine redis://...), each driven by
`ringws-bench fanout` (N subscribers, --procs a multiple of 3 that keeps
each client process under 18000 descriptors: spread over the three
nodes in (b) with --sub-url; --messages binary messages (20) of 16 bytes
published over HTTP to the first node at --rate per second (5), every
delivery checked).  It reads
the server CPU per delivery that ringws-bench measures from the first
publish to the last delivery (summed over the nodes, and each node's over
the deliveries it made), each node's CPU time
over the whole run (/proc/PID/stat: how the work spreads), INFO
commandstats of every master, and prints a markdown table of medians.  Also a line per
run with the figures, and, at the end, the Redis commands per publish
with subscribers on one node and on three.

Usage: bench/cluster.py [--conns 1000,10000] [--reps 3] [--workers W]
                        [--modes single,single3,cluster] [--messages 20]
                        [--rate 5] [--build DIR]
  W (default 1) is each cluster node's workers; a worker holds at most
  19500 connections (its ring's table is capped by ulimit -n), so 100,000
  subscribers need --workers 2 and the modes single3,cluster, and a
  --rate low enough that a publish reaches its last subscriber before the
  next one is made (0.25: 100,000 deliveries take about a second here).
  DIR (default build-bench) must hold ringws and tools/ringws-bench (a
  release tree: meson setup build-bench --buildtype=release).
Every process it starts is ended by its PID; it uses only ports the kernel
or a bind check found free."""

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_pair():
    for _ in range(500):
        p = random.randint(20000, 50000)
        socks = []
        try:
            for q in (p, p + 10000):
                s = socket.socket()
                s.bind(("127.0.0.1", q))
                socks.append(s)
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit("no free port pair")


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=10).stdout


def wait(cond, what, limit=20):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("waited %ds for %s" % (limit, what))
        time.sleep(0.05)


def start_cluster(root):
    ports, procs = [free_pair() for _ in range(3)], []
    for p in ports:
        d = os.path.join(root, str(p))
        os.mkdir(d)
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(p), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
             "--dir", d, "--logfile", "redis.log"], stdout=subprocess.DEVNULL))
    for p in ports:
        wait(lambda p=p: cli(p, "PING").strip() == "PONG", "redis %d" % p)
    subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in ports] +
                   ["--cluster-yes"], capture_output=True, check=True, timeout=60)
    for p in ports:
        wait(lambda p=p: "cluster_state:ok" in cli(p, "CLUSTER", "INFO"), "cluster ok")
    return ports, procs


def start_node(build, workers, args):
    proc = subprocess.Popen([os.path.join(build, "ringws"), "--port", "0", "--workers", str(workers),
                             "--max-connections", "19500"] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r":(\d+)$", line.strip())
    if not m:
        proc.kill()
        sys.exit("ringws did not start: %r" % line)
    return proc, int(m.group(1))


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def calls(ports):
    total = {}
    for p in ports:
        for m in re.finditer(r"^cmdstat_([a-z|]+):calls=(\d+)", cli(p, "INFO", "commandstats"), re.M):
            total[m.group(1)] = total.get(m.group(1), 0) + int(m.group(2))
    return total


def fanout_procs(conns):
    """A multiple of 3 (a third of the subscribers on each node), each
    process under 18000 connections (ulimit -n is 20000)."""
    return 3 * -(-conns // (3 * 18000))


def fanout(build, conns, urls, pids, messages, rate):
    cmd = [os.path.join(build, "tools", "ringws-bench"), "fanout", "--conns", str(conns),
           "--procs", str(fanout_procs(conns)), "--messages", str(messages), "--rate", str(rate), "--size", "16",
           "--url", urls[0], "--server-pid", ",".join(map(str, pids)), "--timeout", "60", "--json"]
    for u in urls[1:] if len(urls) > 1 else []:
        cmd += ["--sub-url", u]
    if len(urls) > 1:
        cmd += ["--sub-url", urls[0]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(out.stdout)
    except ValueError:
        sys.exit("ringws-bench: %s %s" % (out.stdout[-500:], out.stderr[-500:]))


def run(build, mode, conns, redis_ports, workers, messages, rate):
    nodes = []
    try:
        if mode.startswith("single"):
            nodes.append(start_node(build, workers * (3 if mode == "single3" else 1), []))
        else:
            seeds = ",".join("127.0.0.1:%d" % p for p in redis_ports)
            for _ in range(3):
                nodes.append(start_node(build, workers, ["--engine", "redis://" + seeds]))
        urls = ["ws://127.0.0.1:%d/ws?topics=bench" % port for _, port in nodes]
        cpu0 = [cpu_s(p.pid) for p, _ in nodes]
        c0 = calls(redis_ports)
        r = fanout(build, conns, urls, [p.pid for p, _ in nodes], messages, rate)
        c1 = calls(redis_ports)
        cpu1 = [cpu_s(p.pid) for p, _ in nodes]
    finally:
        for p, _ in nodes:
            p.terminate()
            p.wait(timeout=30)
    cmds = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if c1.get(k, 0) != c0.get(k, 0)
            and not k.startswith(("info", "cluster", "ping"))}
    return {
        "mode": mode, "conns": conns,
        "ok": r.get("delivered") == r.get("expected") and not r.get("duplicates")
        and not r.get("out_of_order"),
        "last_p50_ms": r.get("last_delivery_us_p50", 0) / 1e3,
        "last_max_ms": r.get("last_delivery_us_max", 0) / 1e3,
        # From the first publish to the last delivery, summed over the nodes.
        "cpu_us_per_delivery_all": r.get("server_cpu_us_per_delivery", 0),
        # The whole run (handshakes included), per node: how the work spreads.
        "cpu_s_per_node": [round(b - a, 2) for a, b in zip(cpu0, cpu1)],
        # From the first publish to the last delivery, per node, over the
        # deliveries it made (a third each: its subscriber processes).
        "cpu_us_per_delivery_node": [
            round(r.get("server_cpu_s_%d" % i, 0) * 1e6 * len(nodes) / max(r.get("delivered", 1), 1), 2)
            for i in range(len(nodes))] if len(nodes) > 1 else [],
        "redis_calls": cmds,
        "messages": r.get("messages"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", default="1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--modes", default="single,single3,cluster")
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--rate", type=float, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ringws-bench-cluster-")
    ports, procs = start_cluster(root)
    results = []
    try:
        for conns in [int(c) for c in a.conns.split(",")]:
            for rep in range(a.reps):
                modes = a.modes.split(",")
                for mode in (modes if rep % 2 == 0 else modes[::-1]):
                    r = run(a.build, mode, conns, ports, a.workers, a.messages, a.rate)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| subscribers | nodes | publish to last delivery, p50 (ms) | max (ms) | "
          "server CPU per delivery, nodes summed (us) | per node (us) | Redis calls per publish | runs ok |")
    print("|---|---|---|---|---|---|---|---|")
    w = a.workers
    labels = {"single": "1, %d worker%s" % (w, "s" if w > 1 else ""), "single3": "1, %d workers" % (3 * w),
              "cluster": "3 x %d worker%s, Redis Cluster" % (w, "s" if w > 1 else "")}
    for conns in sorted({r["conns"] for r in results}):
        for mode in a.modes.split(","):
            rs = [r for r in results if r["conns"] == conns and r["mode"] == mode]
            per_pub = {}
            for r in rs:
                for k, v in r["redis_calls"].items():
                    per_pub.setdefault(k, []).append(v / max(r["messages"] or 1, 1))
            calls_s = ", ".join("%s %.1f" % (k, statistics.median(v)) for k, v in sorted(per_pub.items())) or "none"
            each = [statistics.median(r["cpu_us_per_delivery_node"][i] for r in rs)
                    for i in range(len(rs[0]["cpu_us_per_delivery_node"]))]
            print("| %d | %s | %.2f | %.2f | %.2f | %s | %s | %d/%d |" % (
                conns, labels[mode],
                statistics.median(r["last_p50_ms"] for r in rs),
                statistics.median(r["last_max_ms"] for r in rs),
                statistics.median(r["cpu_us_per_delivery_all"] for r in rs),
                " / ".join("%.2f" % e for e in each) or "-",
                calls_s, sum(r["ok"] for r in rs), len(rs)))

if __name__ == "__main__":
    main()
