"""Many nodes through Redis Cluster (docs/CLUSTER.md), against real
redis-server processes (Debian's redis 7.0): a cluster of three masters,
each with a replica, made with `redis-cli --cluster create` on free loopback
ports in a private directory, and three ringws nodes with `--engine`.

Checked: subscribers spread over the nodes get every message published
through any node (HTTP POST /publish, WebSocket `pub`, and
ringws_publish from an application's thread: examples/ticker) exactly once, in
the same order, with the same epoch and offsets everywhere; a node
subscribes a topic's sharded channel only while it has subscribers
(PUBSUB SHARDNUMSUB on the topic's master counts nodes, and falls to 0
after the last one leaves), and the Redis commands per publish do not grow
with nodes that have no subscriber (INFO commandstats); GET /history is
the same on every node; a ringws node killed while its clients hold
offsets costs them nothing: they resume on another node with `recovered`
and every message they missed; a Redis master killed while a node
publishes costs only the publishes refused during the outage (503): after
its replica takes over, every publish that was answered 200 reaches every
subscriber once, in order; a slot that migrates to another master is
followed (MOVED, and Redis's sunsubscribe) without a message lost; a
topic's history-ttl holds in its stream in Redis too; a Redis stopped
(SIGSTOP) under publishes costs bounded memory (503 past the bound) and
everything flows again once it runs."""

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_TEXT, HttpConn, RawWS, Runner, Server, T, eq, expect,  # noqa: E402
                         fail, upgrade_request, metric)

REDIS = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
EPOCH_RE = re.compile(r"^[0-9a-f]{16}$")


# ---------------------------------------------------------------------------
# Redis


def free_pair():
    """A port p with p + 10000 free as well (a cluster node's bus)."""
    for _ in range(200):
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
    fail("no free port pair")


def cli(port, *args, timeout=5):
    out = subprocess.run([REDIS_CLI, "-p", str(port)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout)
    return out.stdout


def wait_for(cond, what, timeout=10):
    deadline = time.monotonic() + T(timeout)
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("waited %.0fs for %s" % (T(timeout), what))
        time.sleep(0.05)


class RedisNode:
    def __init__(self, root, i):
        self.port = free_pair()
        self.dir = os.path.join(root, "r%d" % i)
        os.mkdir(self.dir)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: cli(self.port, "PING").strip() == "PONG", "redis %d" % self.port)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def role(self):
        m = re.search(r"^role:(\w+)", cli(self.port, "INFO", "replication"), re.M)
        return m.group(1) if m else None


class Cluster:
    def __init__(self, masters=3, replicas=1):
        self.root = tempfile.mkdtemp(prefix="ringws-cluster-")
        self.nodes = [RedisNode(self.root, i) for i in range(masters * (1 + replicas))]
        self.replicas = replicas

    def start(self):
        for n in self.nodes:
            n.start()
        out = subprocess.run([REDIS_CLI, "--cluster", "create"] +
                             ["127.0.0.1:%d" % n.port for n in self.nodes] +
                             ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            fail("redis-cli --cluster create: %s" % out.stdout[-500:])
        for n in self.nodes:
            wait_for(lambda n=n: "cluster_state:ok" in cli(n.port, "CLUSTER", "INFO"),
                     "cluster_state:ok on %d" % n.port, timeout=20)
        # Every replica has its master's data link up (a failover needs it).
        for n in self.nodes:
            if n.role() == "slave":
                wait_for(lambda n=n: "master_link_status:up" in cli(n.port, "INFO", "replication"),
                         "replica %d linked" % n.port, timeout=20)
        return self

    def alive(self):
        return [n for n in self.nodes if n.proc.poll() is None]

    def master_of(self, key):
        """The node serving key's slot now."""
        slot = int(cli(self.alive()[0].port, "CLUSTER", "KEYSLOT", key).strip())
        for line in cli(self.alive()[0].port, "CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" not in f[2] or "fail" in f[2]:
                continue
            for r in f[8:]:
                a, _, b = r.partition("-")
                if a.isdigit() and int(a) <= slot <= int(b or a):
                    port = int(f[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        fail("no master for %s" % key)

    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes[:3])

    def stop(self):
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def channel(topic):
    return "ringws:{%s}:c" % topic


def shard_subscribers(cluster, topic):
    out = cli(cluster.master_of(channel(topic)).port, "PUBSUB", "SHARDNUMSUB", channel(topic))
    lines = out.split()
    return int(lines[1]) if len(lines) == 2 else -1


def commandstats(node):
    """Calls per command on one Redis."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^cmdstat_([a-z|]+):calls=(\d+)", cli(node.port, "INFO", "commandstats"),
                        re.M)}


# ---------------------------------------------------------------------------
# ringws clients


def env_open(port, topics, since=None):
    path = "/ws?topics=" + topics + ("&since=" + since if since else "")
    req, key = upgrade_request(port, path=path, add=[("Sec-WebSocket-Protocol", "ringws.v1")])
    return RawWS.open(port, request=req, key=key)


def recv_env(ws, what, timeout=None):
    ev = ws.recv_event(timeout if timeout is not None else T(10), what)
    if ev.kind not in ("text", "binary"):
        fail("%s: expected a data frame, got %r" % (what, ev))
    head, _, body = ev.data.partition(b"\n")
    return head.decode("ascii").split(" "), body


def expect_notice(ws, kind, topic):
    fields, _ = recv_env(ws, "%s %s" % (kind, topic))
    if fields[:2] != [kind, topic]:
        fail("expected %s %s, got %r" % (kind, topic, fields))
    return fields


def subscribed(ws, topic):
    f = expect_notice(ws, "subscribed", topic)
    expect(EPOCH_RE.match(f[2]), "an epoch", f[2])
    return f[2], int(f[3])


def post(port, topic, body):
    with HttpConn(port) as h:
        h.send(("POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % (topic, len(body))).encode() + body)
        return h.read_response()


def get_json(port, path):
    with HttpConn(port) as h:
        h.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        resp = h.read_response()
    return resp.status, json.loads(resp.body) if resp.status == 200 else None


def collect(ws, topic, n, what):
    """The next n msg frames of topic: [(epoch, offset, body)]."""
    got = []
    for _ in range(n):
        fields, body = recv_env(ws, what)
        if fields[:2] != ["msg", topic]:
            fail("%s: expected msg %s, got %r" % (what, topic, fields))
        got.append((fields[2], int(fields[3]), body))
    return got




def engine_ready(node):
    """Every worker of the node holds the slot map and a connection up to
    each master it names: a publish can no longer meet a worker still
    starting (and be answered 503 for it)."""
    with HttpConn(node.port) as h:
        h.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        text = h.read_response().body.decode()
    state = dict(re.findall(r'^ringws_engine_connections\{state="(up|down)"\} (\d+)$', text, re.M))
    return int(state.get("up", 0)) > 0 and int(state.get("down", 1)) == 0


# ---------------------------------------------------------------------------
# Cases


def t_fanout_everywhere_once(nodes, cluster):
    """Two topics (in different slots as chance has it), two subscribers
    of each on every node; each node publishes 20 messages to each topic,
    half by HTTP, half by a WebSocket `pub`."""
    topics = ["c.fan%d" % i for i in range(2)]
    subs = {t: [] for t in topics}
    start = {}
    for t in topics:
        for node in nodes:
            for _ in range(2):
                ws = env_open(node.port, t)
                epoch, last = subscribed(ws, t)
                subs[t].append(ws)
                if t in start:
                    eq((epoch, last), start[t], "%s's position on every node" % t)
                start[t] = (epoch, last)
    pubs = []
    for node in nodes:
        ws = env_open(node.port, "c.publisher")
        subscribed(ws, "c.publisher")
        pubs.append(ws)
    sent = {t: set() for t in topics}
    for i in range(10):
        for k, node in enumerate(nodes):
            for t in topics:
                body = ("%s http n%d #%d" % (t, k, i)).encode()
                resp = post(node.port, t, body)
                eq(resp.status, 200, "POST /publish through node %d" % k)
                expect(json.loads(resp.body)["recipients"] == len(nodes),
                       "the count of nodes that took it", resp.body)
                sent[t].add(body)
                body = ("%s ws n%d #%d" % (t, k, i)).encode()
                pubs[k].send_frame(OP_TEXT, b"pub " + t.encode() + b" " + body)
                f, _ = recv_env(pubs[k], "published")
                eq(f[:2], ["published", t], "the pub's answer")
                eq(f[2], start[t][0], "the pub's epoch")
                sent[t].add(body)
    for t in topics:
        n = len(sent[t])
        first = None
        for j, ws in enumerate(subs[t]):
            got = collect(ws, t, n, "subscriber %d of %s" % (j, t))
            eq([g[1] for g in got], list(range(start[t][1] + 1, start[t][1] + n + 1)),
               "offsets of subscriber %d of %s" % (j, t))
            eq({g[0] for g in got}, {start[t][0]}, "epoch")
            eq({g[2] for g in got}, sent[t], "every message once")
            if first is None:
                first = [g[2] for g in got]
            eq([g[2] for g in got], first, "the same order on every subscriber")
    # Nothing more: no duplicate arrives late.
    for t in topics:
        for ws in subs[t]:
            ws.send_frame(0x9, b"x")
            ev = ws.recv_event(T(5), "the pong after the last message")
            eq(ev.kind, "pong", "next frame after the messages")
    # Each node shows its engine: connections up, its channels, the lag of
    # the messages it took.
    for k, node in enumerate(nodes):
        with HttpConn(node.port) as h:
            h.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            text = h.read_response().body.decode()
        m = re.search(r'^ringws_engine_connections\{state="up"\} (\d+)$', text, re.M)
        expect(m and int(m.group(1)) >= 3, "node %d: connections to the 3 masters up" % k,
               m and m.group(0))
        m = re.search(r"^ringws_engine_lag_seconds_count (\d+)$", text, re.M)
        expect(m and int(m.group(1)) >= n, "node %d: the lag of every message it took" % k,
               m and m.group(0))
        expect(metric(node.port, "ringws_engine_channels") >= 3, "node %d: its channels" % k,
               metric(node.port, "ringws_engine_channels"))
    # The history is the same through every node.
    views = [get_json(node.port, "/history/%s?limit=1000" % topics[0]) for node in nodes]
    for status, body in views:
        eq(status, 200, "GET /history")
        eq(body, views[0][1], "the history through every node")
    for ws in [w for t in topics for w in subs[t]] + pubs:
        ws.close()


def t_interest(nodes, cluster):
    """A topic subscribed on one node is subscribed in Redis by that node
    alone; the Redis commands a publish costs are the same with one node
    subscribed as with three; the last subscriber gone, the channel goes."""
    t = "c.interest"
    ws0 = env_open(nodes[0].port, t)
    subscribed(ws0, t)
    eq(shard_subscribers(cluster, t), 1, "nodes subscribed with subscribers on one node")

    master = cluster.master_of(channel(t))

    def cost(k):
        before = commandstats(master)
        for i in range(k):
            eq(post(nodes[2].port, t, b"m%d" % i).status, 200, "publish")
        after = commandstats(master)
        # Not ringws's: this test's own reads, and the replica's REPLCONF
        # ACK to its master, once a second.
        return {c: after.get(c, 0) - before.get(c, 0) for c in after
                if after.get(c, 0) != before.get(c, 0) and not c.startswith(("info", "pubsub",
                                                                             "cluster", "replconf"))}

    # The first publish of node 2 may load the script there.
    eq(post(nodes[2].port, t, b"warm-up").status, 200, "publish")
    collect(ws0, t, 1, "the warm-up")
    one = cost(20)
    collect(ws0, t, 20, "the subscriber on node 0")
    others = [env_open(n.port, t) for n in nodes[1:]]
    for ws in others:
        subscribed(ws, t)
    eq(shard_subscribers(cluster, t), 3, "nodes subscribed with subscribers on every node")
    three = cost(20)
    for ws in [ws0] + others:
        collect(ws, t, 20, "a subscriber")
    eq(three, one, "Redis commands for 20 publishes: one node subscribed vs three")
    eq(one.get("evalsha"), 20, "one EVALSHA per publish")
    print("    redis calls for 20 publishes: %s" % sorted(one.items()))
    for ws in [ws0] + others:
        ws.close()
    wait_for(lambda: shard_subscribers(cluster, t) == 0, "the channel unsubscribed", timeout=10)


def t_node_dies_resume(nodes, cluster, args):
    """Clients of a node that is killed (SIGKILL) resume on another with
    what they missed."""
    t = "c.resume"
    victim, survivor = Server(args, "node-victim").start(), nodes[0]
    try:
        ws = env_open(victim.port, t)
        epoch, last = subscribed(ws, t)
    except Exception as e:
        fail("%s [the node: %s]" % (e, victim.stderr_tail(1500)))
    for i in range(5):
        eq(post(survivor.port, t, b"before %d" % i).status, 200, "publish")
    got = collect(ws, t, 5, "on the node to die")
    held = got[-1][1]
    victim.kill()
    for i in range(7):
        eq(post(survivor.port, t, b"after %d" % i).status, 200, "publish")
    ws2 = env_open(nodes[1].port, t, since="%s:%s:%d" % (t, epoch, held))
    f = expect_notice(ws2, "recovered", t)
    eq(f[2:], [epoch, str(held + 1), str(held + 7)], "recovered range")
    got = collect(ws2, t, 7, "the replay")
    eq([g[2] for g in got], [b"after %d" % i for i in range(7)], "what was missed")
    ws.close()
    ws2.close()


def start_migration(cluster, topic):
    """Sets the topic's slot IMPORTING on another master and MIGRATING on
    its own: (source, target, slot, target's id)."""
    src = cluster.master_of(channel(topic))
    dst = next(n for n in cluster.alive() if n is not src and n.role() == "master")
    slot = int(cli(src.port, "CLUSTER", "KEYSLOT", channel(topic)).strip())
    src_id, dst_id = (cli(n.port, "CLUSTER", "MYID").strip() for n in (src, dst))
    eq(cli(dst.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id).strip(), "OK", "importing")
    eq(cli(src.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id).strip(), "OK", "migrating")
    return src, dst, slot, dst_id


def t_slot_migrates(nodes, cluster):
    """The topic's slot moves to another master (IMPORTING/MIGRATING,
    MIGRATE of its keys, SETSLOT NODE) between two runs of publishes: the
    publishing node follows the MOVED answer, the subscribed nodes follow
    Redis's sunsubscribe to the new master, and every subscriber gets all
    ten messages once, in order, in one epoch."""
    t = "c.migrate"
    subs = [env_open(n.port, t) for n in nodes[:2]]
    start = [subscribed(ws, t) for ws in subs]
    for i in range(5):
        eq(post(nodes[2].port, t, b"m%d" % i).status, 200, "publish before the move")
    for ws in subs:
        collect(ws, t, 5, "before the move")
    src, dst, slot, dst_id = start_migration(cluster, t)
    keys = cli(src.port, "CLUSTER", "GETKEYSINSLOT", slot, 100).split()
    expect(keys, "the topic's keys on its master", keys)
    eq(cli(src.port, "MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys).strip(), "OK",
       "MIGRATE")
    for n in cluster.alive():
        if n.role() == "master":
            cli(n.port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    wait_for(lambda: cluster.master_of(channel(t)) is dst, "the slot on its new master")
    for i in range(5, 10):
        resp = post(nodes[2].port, t, b"m%d" % i)
        eq(resp.status, 200, "publish after the move (%r)" % resp.body[:80])
    for k, ws in enumerate(subs):
        got = collect(ws, t, 5, "subscriber %d after the move" % k)
        eq([g[2] for g in got], [b"m%d" % i for i in range(5, 10)], "the messages after the move")
        eq([g[1] for g in got], list(range(start[k][1] + 6, start[k][1] + 11)), "their offsets")
        eq({g[0] for g in got}, {start[k][0]}, "one epoch")
    for ws in subs:
        ws.close()


def t_slot_half_migrated(nodes, cluster):
    """Publishes into a slot caught half migrated (IMPORTING/MIGRATING set,
    then the topic's keys MIGRATEd, before SETSLOT NODE). Redis refuses
    the publish script in both halves, because it names the topic's
    channel as a key and no master holds a channel as a key: with the keys
    still on the source, the source answers TRYAGAIN (some of the script's
    keys there, not all); with them moved, it answers ASK, the node
    follows it (ASKING, then the script on the importing master), and that
    one answers TRYAGAIN (not all keys there). The publisher gets 503 with
    Retry-After, and nothing is published. Once the slot is handed over
    publishes succeed, and every subscriber gets each accepted message once,
    in order, with the next offsets (a refused publish took none)."""
    t = "c.ask"
    subs = [env_open(n.port, t) for n in nodes[:2]]
    start = [subscribed(ws, t) for ws in subs]
    for i in range(3):
        eq(post(nodes[2].port, t, b"a%d" % i).status, 200, "publish before the migration")
    for ws in subs:
        collect(ws, t, 3, "before the migration")
    src, dst, slot, dst_id = start_migration(cluster, t)

    def counts():
        """Errors answered by the source and the target, and ASKING on the target."""
        def errors(n):
            return {m.group(1): int(m.group(2)) for m in
                    re.finditer(r"^errorstat_(\w+):count=(\d+)", cli(n.port, "INFO", "errorstats"),
                                re.M)}
        return (errors(src), errors(dst), commandstats(dst).get("asking", 0))

    def refused(what, expected):
        before = counts()
        for i, node in enumerate(nodes):
            resp = post(node.port, t, b"refused")
            eq(resp.status, 503, "%s through node %d (%r)" % (what, i, resp.body[:80]))
            expect(resp.header("Retry-After"), "Retry-After on the refusal", resp.headers)
        after = counts()
        got = ({k: after[0].get(k, 0) - before[0].get(k, 0) for k in ("ASK", "TRYAGAIN")},
               {k: after[1].get(k, 0) - before[1].get(k, 0) for k in ("ASK", "TRYAGAIN")},
               after[2] - before[2])
        eq(got, expected, "who refused %s (source's errors, target's, ASKING on the target)" % what)

    n = len(nodes)
    refused("a publish with the keys still on the source",
            ({"ASK": 0, "TRYAGAIN": n}, {"ASK": 0, "TRYAGAIN": 0}, 0))
    keys = cli(src.port, "CLUSTER", "GETKEYSINSLOT", slot, 100).split()
    eq(sorted(keys), sorted("ringws:{%s}:%s" % (t, k) for k in "ms"), "the topic's keys")
    eq(cli(src.port, "MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys).strip(), "OK",
       "MIGRATE")
    refused("a publish with the keys on the importing master",
            ({"ASK": n, "TRYAGAIN": 0}, {"ASK": 0, "TRYAGAIN": n}, n))
    for n in cluster.alive():
        if n.role() == "master":
            cli(n.port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    wait_for(lambda: cluster.master_of(channel(t)) is dst, "the slot on its new master")
    for i in range(3, 6):
        resp = post(nodes[i % 3].port, t, b"a%d" % i)
        eq(resp.status, 200, "publish after the hand-over (%r)" % resp.body[:80])
    for k, ws in enumerate(subs):
        got = collect(ws, t, 3, "subscriber %d after the hand-over" % k)
        eq([(g[0], g[1], g[2]) for g in got],
           [(start[k][0], start[k][1] + 4 + i, b"a%d" % (3 + i)) for i in range(3)],
           "the accepted messages once, in order, next offsets, one epoch")
    for ws in subs:
        ws.close()


def t_lost_writes(nodes, cluster):
    """The topic's master loses its last two acknowledged writes (as a
    replica promoted before it had them would: here its stream entries and
    last offset are taken back by hand), then takes three publishes, which
    it gives offsets 4, 5 and 6 again.  The nodes that delivered the lost
    4 and 5 see other messages at those offsets: the epoch is replaced
    (once), the new messages reach every subscriber exactly once under the
    new epoch, and a resume from the old epoch is a gap."""
    t = "c.lost"
    subs = [env_open(n.port, t) for n in nodes[:2]]
    start = [subscribed(ws, t) for ws in subs]
    eq(start[0][1], 0, "a fresh topic")
    for i in range(1, 6):
        eq(post(nodes[2].port, t, b"old %d" % i).status, 200, "publish")
    for ws in subs:
        collect(ws, t, 5, "before the loss")
    master = cluster.master_of(channel(t))
    cli(master.port, "XDEL", "ringws:{%s}:s" % t, "4-0", "5-0")
    eq(cli(master.port, "XSETID", "ringws:{%s}:s" % t, "3-0").strip(), "OK", "the stream at 3")
    cli(master.port, "HSET", "ringws:{%s}:m" % t, "last", 3)
    for i in range(4, 7):
        eq(post(nodes[2].port, t, b"new %d" % i).status, 200, "publish after the loss")
    epochs = set()
    for k, ws in enumerate(subs):
        got = collect(ws, t, 3, "subscriber %d after the loss" % k)
        eq([g[2] for g in got], [b"new 4", b"new 5", b"new 6"], "the new messages, once")
        eq([g[1] for g in got], [4, 5, 6], "their offsets")
        expect(got[0][0] != start[k][0], "a new epoch", got[0][0])
        epochs.add(got[0][0])
    eq(len(epochs), 1, "one new epoch on every node")
    eq(post(nodes[2].port, t, b"new 7").status, 200, "publish")
    new_epoch = epochs.pop()
    for k, ws in enumerate(subs):
        got = collect(ws, t, 1, "subscriber %d" % k)
        eq(got[0][:2], (new_epoch, 7), "the next one")
    ws = env_open(nodes[1].port, t, since="%s:%s:5" % (t, start[0][0]))
    f = expect_notice(ws, "gap", t)
    eq(f[2], new_epoch, "the gap names the new epoch")
    ws.close()
    for w in subs:
        w.close()


def t_master_failover(nodes, cluster):
    """A publisher at a steady pace through one node while the topic's
    master is killed: refusals during the outage only; every accepted
    publish reaches subscribers on the other nodes once, in order."""
    t = "c.failover"
    subs = [env_open(n.port, t) for n in nodes[:2]]
    start = [subscribed(ws, t) for ws in subs]
    master = cluster.master_of(channel(t))
    accepted, refused = [], 0
    first_refusal = last_refusal = None
    stop = threading.Event()
    killed_at = []

    def killer():
        time.sleep(0.5)
        killed_at.append(time.monotonic())
        master.kill()

    threading.Thread(target=killer, daemon=True).start()
    deadline = time.monotonic() + T(20)
    i = 0
    while time.monotonic() < deadline and not stop.is_set():
        body = b"f%d" % i
        i += 1
        try:
            resp = post(nodes[1].port, t, body)
            status = resp.status
        except OSError:
            status = 0
        now = time.monotonic()
        if status == 200:
            accepted.append(body)
            if last_refusal is not None and len(accepted) > 0 and now - last_refusal > 0.5:
                # Served again for half a second after the outage.
                if accepted and time.monotonic() - last_refusal > 1.0:
                    break
        else:
            refused += 1
            first_refusal = first_refusal or now
            last_refusal = now
        time.sleep(0.02)
    expect(killed_at, "the master killed", killed_at)
    expect(refused > 0, "publishes refused during the outage", refused)
    outage = last_refusal - first_refusal
    print("    failover: %d accepted, %d refused over %.2fs" % (len(accepted), refused, outage))
    for k, ws in enumerate(subs):
        got = collect(ws, t, len(accepted), "subscriber %d" % k)
        eq([g[2] for g in got], accepted, "subscriber %d: every accepted publish once, in order" % k)
        offs = [g[1] for g in got if g[0] == start[k][0]]
        eq(offs, sorted(set(offs)), "offsets increase")
    for ws in subs:
        ws.close()


def t_stopped_redis_refuses(port, pid):
    """A Redis that stops answering (SIGSTOP) costs a node bounded memory:
    each worker's connection holds at most 8 MiB of publishes awaiting their
    answers (src/redis_conn.h), past which a publish is answered 503 at once
    rather than queued; once Redis runs again (SIGCONT) the accepted ones
    are answered 200 and publishing works."""
    n, body = 40, b"x" * (512 << 10)  # 20 MiB: more than 2 workers x 8 MiB
    head = ("POST /publish/c.stall HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % len(body)).encode()
    socks, status = [], {}

    def answers(deadline, want):
        while len(status) < want and time.time() < deadline:
            waiting = [s for s in socks if s not in status]
            ready, _, _ = select.select(waiting, [], [], max(0, deadline - time.time()))
            for s in ready:
                line = s.recv(64).split(b"\r\n")[0]
                status[s] = int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    wait_for(lambda: post(port, "c.stall", b"before").status == 200, "the node's engine up")
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head + body)
            socks.append(s)
        answers(time.time() + 10, n - 2 * 16)
        early = sorted(status.values())
        expect(len(early) >= n - 2 * 16 and set(early) == {503}, "503 at once past the bound",
               early)
    finally:
        os.kill(pid, signal.SIGCONT)
    answers(time.time() + 10, n)
    got = sorted(status.values())
    eq(len(got), n, "every publish answered")
    # At least one worker's 8 MiB was taken: 15 of these publishes.
    expect(got.count(200) >= 15 and got.count(200) + got.count(503) == n,
           "the accepted ones answered 200, the others 503", got)
    for s in socks:
        s.close()
    eq(post(port, "c.stall", b"after").status, 200, "a publish once Redis runs again")


def t_single_redis(port):
    """One Redis that is not a cluster serves every slot; it asks for a
    password, which the URL gives."""
    ws = env_open(port, "c.single")
    epoch, last = subscribed(ws, "c.single")
    for i in range(3):
        eq(post(port, "c.single", b"s%d" % i).status, 200, "publish")
    got = collect(ws, "c.single", 3, "the subscriber")
    eq([(g[0], g[1], g[2]) for g in got], [(epoch, last + 1 + i, b"s%d" % i) for i in range(3)],
       "messages through one Redis")
    ws.close()


def t_c_api_thread(nodes, cluster):
    """examples/ticker publishes from a thread of its own
    (ringws_publish): as a fourth node of the cluster, its ticks reach the
    subscribers of two other nodes, in order, with the same offsets."""
    ticker = Server(cmd=[os.environ["RINGWS_EXAMPLE_TICKER"], 0, 20, "redis://" + cluster.seeds()],
                    label="ticker").start()
    try:
        subs = [env_open(n.port, "ticks") for n in nodes[:2]]
        start = [subscribed(ws, "ticks") for ws in subs]
        got = [collect(ws, "ticks", 20, "ticks on node %d" % k) for k, ws in enumerate(subs)]
        for k in range(2):
            n0 = int(got[k][0][2].split()[1])
            eq([g[2] for g in got[k]], [b"tick %d" % (n0 + i) for i in range(20)],
               "consecutive ticks on node %d" % k)
            eq({g[0] for g in got[k]}, {start[k][0]}, "one epoch")
        # The same tick has the same offset on both nodes.
        by_body = [{g[2]: g[1] for g in got[k]} for k in range(2)]
        common = set(by_body[0]) & set(by_body[1])
        expect(common, "ticks seen on both nodes", common)
        for b in common:
            eq(by_body[0][b], by_body[1][b], "offset of %r on both nodes" % b)
        for ws in subs:
            ws.close()
    finally:
        ticker.kill()


def t_c_api_refused_unreported(nodes, cluster):
    """ringws_publish returns 0 once the publish is handed to a worker; if
    Redis then refuses it (here: the topic's slot set migrating, so the
    source answers TRYAGAIN), the tick is lost and the ticker's
    ringws_engine_refused_unreported_total counts it, exactly: the
    subscriber's ticks jump by as many as it counted."""
    ticker = Server(cmd=[os.environ["RINGWS_EXAMPLE_TICKER"], 0, 20, "redis://" + cluster.seeds()],
                    label="ticker").start()
    src = cluster.master_of(channel("ticks"))
    dst = next(n for n in cluster.alive() if n is not src and n.role() == "master")
    slot = int(cli(src.port, "CLUSTER", "KEYSLOT", channel("ticks")).strip())
    try:
        ws = env_open(nodes[0].port, "ticks")
        subscribed(ws, "ticks")
        seen = [int(g[2].split()[1]) for g in collect(ws, "ticks", 3, "ticks")]
        base = metric(ticker.port, "ringws_engine_refused_unreported_total")
        eq(base, 0, "nothing refused yet")
        src_id, dst_id = (cli(n.port, "CLUSTER", "MYID").strip() for n in (src, dst))
        eq(cli(dst.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id).strip(), "OK", "importing")
        eq(cli(src.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id).strip(), "OK", "migrating")
        wait_for(lambda: metric(ticker.port, "ringws_engine_refused_unreported_total") >= 3,
                 "ticks refused while the slot is migrating")
        for n in (src, dst):
            eq(cli(n.port, "CLUSTER", "SETSLOT", slot, "STABLE").strip(), "OK", "migration cancelled")
        while len(seen) < 4 or seen[-1] == seen[-2] + 1:  # up to the first tick after the gap
            seen.append(int(collect(ws, "ticks", 1, "ticks after the migration")[0][2].split()[1]))
        eq(seen[:-1], list(range(seen[0], seen[0] + len(seen) - 1)), "ticks before the gap")
        missing = seen[-1] - seen[-2] - 1
        # Its count may trail the next tick's delivery by the ticker's reading of the answer.
        wait_for(lambda: metric(ticker.port, "ringws_engine_refused_unreported_total") == missing,
                 "as many ticks counted as missing (%d)" % missing)
        ws.close()
    finally:
        for n in (src, dst):
            cli(n.port, "CLUSTER", "SETSLOT", slot, "STABLE")
        ticker.kill()


def t_history_age(port):
    """A node that reads a stream's window keeps each message's age: past
    the rule's history-ttl it is not served (a history read right after the
    publishes serves them)."""
    for i in range(2):
        eq(post(port, "ttl.a", b"t%d" % i).status, 200, "publish")
    status, fresh = get_json(port, "/history/ttl.b")
    eq(status, 200, "GET /history of another topic")
    for i in range(2):
        eq(post(port, "ttl.b", b"t%d" % i).status, 200, "publish")
    # The answer to a publish may come before its message is back through
    # the node's subscription, into its copy of the history.
    wait_for(lambda: [m["text"] for m in get_json(port, "/history/ttl.b")[1]["messages"]]
             == ["t0", "t1"], "a fresh history served")
    time.sleep(1.3)  # the age itself is what is tested: past history-ttl=1s
    status, body = get_json(port, "/history/ttl.a")
    eq(status, 200, "GET /history")
    eq((body["messages"], body["last"], body["oldest"]), ([], 2, 3),
       "messages older than history-ttl, read from the stream now")


def t_history_ttl_in_stream(port, rcli):
    """history-ttl holds in Redis too: a publish trims the stream's entries
    older than the rule's 1 s (by their publish time), and a stream whose
    newest entry is that old expires, while the topic's position stays (the
    next publish continues its offsets in its epoch)."""
    t = "ttl.r"
    ks = "ringws:{%s}:s" % t

    def stream():
        """[(body, publish time in us)] of the stream, oldest first."""
        out = rcli("XRANGE", ks, "-", "+").split("\n")
        # redis-cli without a tty: the ID, then t TYPE p BODY us TIME, a line each.
        return [(out[i + 4], int(out[i + 6])) for i in range(0, len(out) - 6, 7)]

    ws = env_open(port, t)
    epoch, last = subscribed(ws, t)
    eq(post(port, t, b"old").status, 200, "publish")
    t0 = time.monotonic()
    time.sleep(0.5)  # ages are what is tested: "mid" younger than "old" by half the limit
    eq(post(port, t, b"mid").status, 200, "publish")
    time.sleep(max(0.0, t0 + 1.1 - time.monotonic()))  # "old" past history-ttl=1s
    eq(post(port, t, b"new").status, 200, "publish")
    held = stream()
    eq(held[-1][0], "new", "the newest entry in the stream")
    expect("old" not in [h[0] for h in held], "the entry past history-ttl trimmed", held)
    expect(all(h[1] >= held[-1][1] - 1000000 for h in held),
           "no entry older than history-ttl before the newest", held)
    eq([f[3] for f, _ in (recv_env(ws, "msg %d" % i) for i in range(3))],
       [str(last + i) for i in range(1, 4)], "the subscriber's offsets")
    wait_for(lambda: rcli("EXISTS", ks).strip() == "0", "the stream expired after history-ttl",
             timeout=5)
    eq(rcli("EXISTS", "ringws:{%s}:m" % t).strip(), "1", "the topic's position kept")
    eq(post(port, t, b"after").status, 200, "publish after the stream expired")
    fields, body = recv_env(ws, "the message after")
    eq((fields[2], int(fields[3]), body), (epoch, last + 4, b"after"), "same epoch, next offset")
    eq([h[0] for h in stream()], ["after"], "a new stream")
    ws.close()


def t_compressed_across_nodes(nodes, cluster):
    """A publish through one node reaches a subscriber with
    permessage-deflate on another compressed (RSV1), raw and in the
    envelope, with a plain one beside them: the message goes to Redis plain
    and each node with such subscribers compresses it once."""
    ext = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    b, c = nodes[1], nodes[2]
    req, key = upgrade_request(b.port, path="/ws?topics=c.z", add=ext)
    raw = RawWS.open(b.port, request=req, key=key)
    req, key = upgrade_request(b.port, path="/ws?topics=c.z",
                               add=ext + [("Sec-WebSocket-Protocol", "ringws.v1")])
    env = RawWS.open(b.port, request=req, key=key)
    plain = RawWS.open(b.port, path="/ws?topics=c.z")
    try:
        expect(raw.deflate and env.deflate, "permessage-deflate negotiated on node b",
               raw.response.header_all("Sec-WebSocket-Extensions"))
        epoch, last = subscribed(env, "c.z")
        wait_for(lambda: shard_subscribers(cluster, "c.z") >= 1, "node b subscribed to c.z")
        c0 = metric(b.port, "ringws_deflate_compressed_total")
        body = json.dumps({"type": "notification", "text": "order shipped " * 40}).encode()
        eq(post(c.port, "c.z", body).status, 200, "POST /publish through node c")
        ev = raw.expect_event("text", body)
        expect(ev.compressed, "a compressed frame to the raw subscriber", ev)
        eq(plain.expect_event("text", body).compressed, False, "the plain subscriber's frame")
        ev = env.recv_event(T(10), "the envelope")
        expect(ev.compressed, "a compressed ringws.v1 frame", ev)
        eq(ev.data, b"msg c.z %s %d\n" % (epoch.encode(), last + 1) + body, "the envelope")
        eq(metric(b.port, "ringws_deflate_compressed_total") - c0, 1, "compressions on node b")
    finally:
        for ws in (raw, env, plain):
            ws.close()


def main():
    r = Runner("cluster")
    for tool in (REDIS, REDIS_CLI):
        if not os.path.exists(tool):
            print("FAIL %s is not installed (tools/setup.sh installs redis-server)" % tool)
            sys.exit(1)
    cluster = Cluster().start()
    try:
        args = ["--workers", "2", "--engine", "redis://" + cluster.seeds(),
                "--topic", "c.*=history=1000,publish"]
        with r.server(args, "node-a") as a, r.server(args, "node-b") as b, \
                r.server(args, "node-c") as c:
            nodes = [a, b, c]
            wait_for(lambda: all(engine_ready(n) for n in nodes), "every node connected to Redis")
            r.case("fanout-every-node-exactly-once-same-offsets", t_fanout_everywhere_once,
                   nodes, cluster)
            r.case("interest-routing-and-redis-calls-per-publish", t_interest, nodes, cluster)
            r.case("compressed-once-per-node", t_compressed_across_nodes, nodes, cluster)
            if os.environ.get("RINGWS_EXAMPLE_TICKER"):
                r.case("c-api-publish-from-a-thread", t_c_api_thread, nodes, cluster)
                r.case("c-api-publish-refused-after-returning", t_c_api_refused_unreported, nodes,
                       cluster)
            else:
                r.record("c-api-publish-from-a-thread", False,
                         "RINGWS_EXAMPLE_TICKER (examples/ticker) is not set")
            r.case("slot-migrates-to-another-master", t_slot_migrates, nodes, cluster)
            r.case("slot-half-migrated-tryagain-and-ask", t_slot_half_migrated, nodes, cluster)
            r.case("lost-writes-replace-the-epoch", t_lost_writes, nodes, cluster)
            r.case("master-killed-replica-takes-over", t_master_failover, nodes, cluster,
                   timeout=60)
            r.case("node-killed-clients-resume-elsewhere", t_node_dies_resume, nodes, cluster,
                   args)
    finally:
        cluster.stop()
    root = tempfile.mkdtemp(prefix="ringws-redis-")
    single = RedisNode(root, 0)
    try:
        single.proc = subprocess.Popen(
            [REDIS, "--bind", "127.0.0.1", "--port", str(single.port), "--save", "",
             "--appendonly", "no", "--dir", single.dir, "--logfile", "redis.log",
             "--requirepass", "s3cret"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: cli(single.port, "--no-auth-warning", "-a", "s3cret", "PING").strip()
                 == "PONG", "redis")
        # A password in the URL: AUTH on every connection.
        with r.server(["--engine", "redis://:s3cret@127.0.0.1:%d" % single.port, "--topic",
                       "c.*=history=10", "--topic", "ttl.*=history=10,history-ttl=1s"],
                      "single-redis") as srv:
            wait_for(lambda: engine_ready(srv), "the node connected to Redis")
            r.case("one-redis-not-a-cluster-with-a-password", t_single_redis, srv.port)
            r.case("history-age-kept-from-the-stream", t_history_age, srv.port)
            r.case("history-ttl-trims-the-stream", t_history_ttl_in_stream, srv.port,
                   lambda *a: cli(single.port, "--no-auth-warning", "-a", "s3cret", *a))
        with r.server(["--workers", "2", "--engine", "redis://:s3cret@127.0.0.1:%d" % single.port],
                      "single-redis-stopped") as srv:
            r.case("redis-stopped-bounded-then-flows", t_stopped_redis_refuses, srv.port,
                   single.proc.pid)
    finally:
        single.kill()
        shutil.rmtree(root, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
