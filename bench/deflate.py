#!/usr/bin/python3
"""deflate.py - what permessage-deflate costs the server, plain against
compressed in the same run: fan-out (bytes on the wire and server CPU per
delivery), memory per idle connection, echo CPU per message.

Usage: bench/deflate.py [--bin build-bench/ringws | --peer BUILD/lws_fanout] [--runs 3]
                        [--modes plain,deflate[,takeover]] [--callgrind]
                        fanout [--conns 10000] [--messages 20] [--size 1024]
                      | idle [--conns 10000] [--published | --echoed]
                      | echo [--messages 20000] [--size 200] [--inflight 1]

With --callgrind (echo only), the server runs under valgrind's callgrind
and each run reports the instructions it executed per echoed message in
user space (repeatable where CPU times are noise; the kernel's share of a
message, most of a plain echo, is not in it).

Each run starts a fresh server (ringws with one worker, or with --peer a
libwebsockets peer of bench/peers/ built by bench/lib.sh, given --deflate in
the compressed runs; pinned to CPU 0, this client on CPU 1), taking the
modes in turn: a client that does not offer permessage-deflate (plain), one
that does (deflate: the stateless mode), and one that does to a server
whose paths keep context (takeover: --deflate-takeover on /ws and /echo,
its memory cap out of the way); prints each run and the medians.  Server CPU is utime + stime from /proc/PID/stat over
the measured part only; bytes on the wire are what the subscribers read
(frame headers included).  The client is raw sockets: it offers what a
browser does and inflates nothing (it counts frames and bytes).  JSON
payloads vary per message, as an application's do.
"""

import argparse
import json
import os
import random
import re
import select
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OFFER = "permessage-deflate; client_max_window_bits"
TICK = os.sysconf("SC_CLK_TCK")


def json_payload(n, seed):
    r = random.Random(seed)
    words = ["order", "shipped", "payment", "received", "your", "status", "update", "team",
             "account", "new", "message", "from", "delivery", "tomorrow"]
    body = {"type": "notification", "id": 100000 + seed, "ts": 1733500000 + seed,
            "user": {"id": r.randrange(10000), "name": r.choice(["alice", "bob", "carol"])},
            "priority": "normal", "text": ""}
    parts = []
    while len(json.dumps(body)) + sum(map(len, parts)) < n:
        parts.append(r.choice(words) + " ")
    body["text"] = "".join(parts)
    return json.dumps(body).encode()


# What each mode adds to the server's command line.
TAKEOVER_ARGS = ["--deflate-takeover", "/ws", "--deflate-takeover", "/echo",
                 "--deflate-takeover-memory", str(1 << 40)]


class Server:
    def __init__(self, a, deflate, extra=()):
        if deflate == "takeover":
            extra = list(extra) + TAKEOVER_ARGS
        out = open(os.devnull, "w")
        if a.peer:
            cmd = [a.peer, "--port", "0"] + (["--deflate"] if deflate else [])
        else:
            cmd = [a.bin, "--port", "0", "--workers", "1", "--max-connections", "19000",
                   "--idle-timeout", "0"] + list(extra)
        self.ringws = not a.peer
        self.cg_dir = None
        if a.callgrind:
            self.cg_dir = tempfile.mkdtemp(prefix="deflate-cg-")
            cmd = ["valgrind", "--tool=callgrind",
                   "--callgrind-out-file=%s/cg.%%p" % self.cg_dir] + cmd
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.PIPE,
                                     stderr=out, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+)", line)
        if not m:
            raise SystemExit("server did not start: %r" % line)
        self.port = int(m.group(1))

    def cpu_s(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
        return 0

    def metric(self, name):
        if not self.ringws:
            return 0
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)", data, re.M)
        return int(m.group(1)) if m else 0

    def instructions(self):
        """Under callgrind: the instructions executed since the last dump
        (each dump counts from the one before)."""
        before = set(os.listdir(self.cg_dir))
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], capture_output=True)
        for _ in range(100):
            new = set(os.listdir(self.cg_dir)) - before
            if new:
                break
            time.sleep(0.1)
        out = subprocess.run(["callgrind_annotate", os.path.join(self.cg_dir, new.pop())],
                             capture_output=True, text=True).stdout
        m = re.search(r"^ *([\d,]+) .*PROGRAM TOTALS", out, re.M)
        return int(m.group(1).replace(",", ""))

    def stop(self):
        if self.cg_dir:
            # Under valgrind the server does not see SIGTERM: callgrind ends it.
            subprocess.run(["callgrind_control", "-k", str(self.proc.pid)], capture_output=True)
            self.proc.wait(30)
            shutil.rmtree(self.cg_dir, ignore_errors=True)
            return
        self.proc.terminate()
        self.proc.wait(10)


def upgrade(port, path, deflate):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
           % (path, "Sec-WebSocket-Extensions: %s\r\n" % OFFER if deflate else ""))
    s.sendall(req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        if not d:
            raise SystemExit("connection closed during the handshake")
        head += d
    got = b"permessage-deflate" in head
    if got != bool(deflate) or not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit("unexpected answer: %r" % head[:300])
    # A takeover server answers without server_no_context_takeover.
    if deflate and (b"server_no_context_takeover" in head) != (deflate != "takeover"):
        raise SystemExit("unexpected answer: %r" % head[:300])
    return s, head.split(b"\r\n\r\n", 1)[1]


class FrameCounter:
    """Counts complete server frames in a byte stream."""

    def __init__(self, rest=b""):
        self.buf = bytearray(rest)
        self.frames = 0
        self.rsv1 = 0
        self.bytes = len(rest)

    def feed(self, data):
        self.bytes += len(data)
        self.buf += data
        pos, b = 0, self.buf
        while len(b) - pos >= 2:
            n, h = b[pos + 1] & 0x7F, 2
            if n == 126:
                if len(b) - pos < 4:
                    break
                n, h = struct.unpack_from("!H", b, pos + 2)[0], 4
            elif n == 127:
                if len(b) - pos < 10:
                    break
                n, h = struct.unpack_from("!Q", b, pos + 2)[0], 10
            if len(b) - pos < h + n:
                break
            self.frames += 1
            self.rsv1 += (b[pos] & 0x40) != 0
            pos += h + n
        del self.buf[:pos]


def publish_conn(port):
    return socket.create_connection(("127.0.0.1", port))


def publish(s, topic, body):
    s.sendall(b"POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % (topic.encode(), len(body)) + body)
    data = b""
    while b"}" not in data:
        data += s.recv(4096)


def run_fanout(a, deflate):
    srv = Server(a, deflate)
    try:
        socks = []
        for i in range(a.conns):
            s, rest = upgrade(srv.port, "/ws?topics=bench", deflate)
            s.setblocking(False)
            socks.append((s, FrameCounter(rest)))
        ep = select.epoll()
        by_fd = {}
        for s, fc in socks:
            ep.register(s.fileno(), select.EPOLLIN)
            by_fd[s.fileno()] = (s, fc)
        pub = publish_conn(srv.port)
        msgs = [json_payload(a.size, i) for i in range(a.messages)]
        cpu0 = srv.cpu_s()
        bytes0 = sum(fc.bytes for _, fc in socks)
        t0 = time.monotonic()
        for m in msgs:
            publish(pub, "bench", m)
        want = a.conns * a.messages
        got = zipped = 0
        deadline = time.monotonic() + 120
        while got < want and time.monotonic() < deadline:
            for fd, _ in ep.poll(1.0):
                s, fc = by_fd[fd]
                before, before_z = fc.frames, fc.rsv1
                try:
                    while True:
                        d = s.recv(1 << 20)
                        if not d:
                            break
                        fc.feed(d)
                except BlockingIOError:
                    pass
                got += fc.frames - before
                zipped += fc.rsv1 - before_z
        took = time.monotonic() - t0
        cpu = srv.cpu_s() - cpu0
        wire = sum(fc.bytes for _, fc in socks) - bytes0
        compressions = srv.metric("ringws_deflate_compressed_total")
        for s, _ in socks:
            s.close()
        pub.close()
        if got < want:
            raise SystemExit("only %d of %d deliveries" % (got, want))
        return {"deflate": deflate, "deliveries": got, "compressed_frames": zipped,
                "compressions": compressions, "payload_bytes": a.size,
                "wire_bytes_per_delivery": wire / got, "cpu_us_per_delivery": cpu * 1e6 / got,
                "seconds": took}
    finally:
        srv.stop()


def run_idle(a, deflate):
    # A small receive ring, touched whole before measuring: requests are
    # written into it one after the other, and its pages touched for the
    # first time (the offer makes requests longer) would read as connection
    # memory.
    srv = Server(a, deflate, ["--recv-buffers", "32"])
    # The peer has no echo; --published: subscribers, measured after one
    # publish reached them all (what a compressor made for it stays).
    path = "/ws?topics=idle" if a.peer or a.published else "/echo"
    try:
        if not a.peer:
            s, rest = upgrade(srv.port, "/echo", False)
            fc = FrameCounter(rest)
            frame = masked(0x82, b"w" * 16000)
            for _ in range(64):
                s.sendall(frame)
            while fc.frames < 64:
                fc.feed(s.recv(1 << 20))
            s.close()
        if a.published:
            # What a worker makes once, not per connection (its compressor
            # and scratch), made before measuring.
            s, rest = upgrade(srv.port, path, deflate)
            pub = publish_conn(srv.port)
            publish(pub, "idle", json_payload(1024, 0))
            pub.close()
            fc = FrameCounter(rest)
            while fc.frames < 1:
                fc.feed(s.recv(65536))
            s.close()
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        socks = [upgrade(srv.port, path, deflate) for _ in range(a.conns)]
        if a.echoed:
            # Each sends one compressed 1 KiB message and reads its echo:
            # with takeover, both of its streams are made.
            for i, (s, rest) in enumerate(socks):
                s.sendall(client_message(json_payload(1024, i), deflate))
                fc = FrameCounter(rest)
                while fc.frames < 1:
                    fc.feed(s.recv(65536))
        if a.published:
            pub = publish_conn(srv.port)
            publish(pub, "idle", json_payload(1024, 1))
            pub.close()
            for s, rest in socks:
                fc = FrameCounter(rest)
                while fc.frames < 1:
                    fc.feed(s.recv(65536))
        socks = [s for s, _ in socks]
        time.sleep(1.0)
        rss = srv.rss_kib() - rss0
        streams = srv.metric('ringws_deflate_takeover_bytes{worker="0"}')
        for s in socks:
            s.close()
        return {"deflate": deflate, "conns": a.conns, "published": a.published, "echoed": a.echoed,
                "rss_bytes_per_conn": rss * 1024 / a.conns,
                "takeover_bytes_per_conn": streams / a.conns}
    finally:
        srv.stop()


def masked(first, payload):
    key = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0xFE, n)
    k = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def client_message(payload, deflate):
    """A client's masked text message, compressed on its own (RSV1) when
    deflate was negotiated."""
    if not deflate:
        return masked(0x81, payload)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return masked(0xC1, (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4])


def run_echo(a, deflate):
    srv = Server(a, deflate)
    try:
        s, rest = upgrade(srv.port, "/echo", deflate)
        msgs = []
        for i in range(64):
            msgs.append(client_message(json_payload(a.size, i), deflate))
        fc = FrameCounter(rest)

        def echo(count):
            sent = inflight = 0
            want = fc.frames + count
            while fc.frames < want:
                while inflight < a.inflight and sent < count:
                    s.sendall(msgs[sent % 64])
                    sent += 1
                    inflight += 1
                before = fc.frames
                fc.feed(s.recv(1 << 20))
                inflight -= fc.frames - before

        res = {"deflate": deflate, "size": a.size, "inflight": a.inflight}
        if a.callgrind:
            echo(min(1000, a.messages))  # the worker's scratch and compressors made
            srv.instructions()  # the counts start again here
            z0 = fc.rsv1
            echo(a.messages)
            res["instructions_per_message"] = srv.instructions() / a.messages
            res["compressed_answers"] = fc.rsv1 - z0
        else:
            cpu0 = srv.cpu_s()
            echo(a.messages)
            res["cpu_us_per_message"] = (srv.cpu_s() - cpu0) * 1e6 / fc.frames
            res["compressed_answers"] = fc.rsv1
        s.close()
        res["messages"] = a.messages
        return res
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build-bench", "ringws"))
    ap.add_argument("--peer", help="a libwebsockets peer of bench/peers/ instead of ringws")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--callgrind", action="store_true",
                    help="echo: instructions per message under callgrind instead of CPU time")
    ap.add_argument("--modes", default="plain,deflate",
                    help="of plain, deflate (stateless), takeover; in this order each run")
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--conns", type=int, default=10000)
    f.add_argument("--messages", type=int, default=20)
    f.add_argument("--size", type=int, default=1024)
    i = sub.add_parser("idle")
    i.add_argument("--conns", type=int, default=10000)
    i.add_argument("--published", action="store_true",
                   help="subscribers, measured after one 1 KiB publish reached them")
    i.add_argument("--echoed", action="store_true",
                   help="echo connections, measured after each echoed one 1 KiB message")
    e = sub.add_parser("echo")
    e.add_argument("--messages", type=int, default=20000)
    e.add_argument("--size", type=int, default=200)
    e.add_argument("--inflight", type=int, default=1)
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    fn = {"fanout": run_fanout, "idle": run_idle, "echo": run_echo}[a.mode]
    # deflate: False (plain), True (stateless) or "takeover".
    modes = {"plain": False, "deflate": True, "takeover": "takeover"}
    names = a.modes.split(",")
    if not names or any(n not in modes for n in names):
        raise SystemExit("--modes: a list of plain, deflate, takeover")
    results = {n: [] for n in names}
    for r in range(a.runs):
        for n in names:
            res = fn(a, modes[n])
            results[n].append(res)
            print(json.dumps(res), flush=True)
    for n in names:
        rows = results[n]
        keys = [k for k, v in rows[0].items() if isinstance(v, float)]
        print("median %s: %s" % (n, ", ".join(
            "%s %.2f" % (k, statistics.median(r[k] for r in rows)) for k in keys)), flush=True)


if __name__ == "__main__":
    main()
