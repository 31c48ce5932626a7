"""ringws.js (the browser client, served at /ringws.js) in headless Chromium
against the real server (cdp.py drives the pages).  Each page opens the
server's /healthz (so that /ringws.js is of the page's own origin) and
imports the module the server serves; the test publishes over HTTP.

- resume across 1012: three pages subscribe to a topic with history while
  the test keeps publishing numbered messages, text and binary; SIGUSR2
  closes every WebSocket with 1012 and a short reconnect hint, twice.  Every
  page ends with every message exactly once, in order (payload numbers and
  offsets), binary ones as bytes, and saw a `recovered` for each reconnect
  that replayed what it missed;
- gap past the history: a client closed, 50 published to a topic that keeps
  10, a new client given the old one's position: `gap` with the old and the
  new position, nothing of the hole delivered, live messages after it; the
  same within the history: `recovered` and exactly the missed ones;
- token refresh: with --token-key and short-lived HS256 tokens, the server
  closes with 4001 at exp; the client asks getToken for a fresh one,
  reconnects and resumes without loss; another client renews its token
  with `auth` before exp and is never closed.

Waits are on conditions in the pages or in the server, never fixed
sleeps."""

import asyncio
import base64
import json
import os
import signal
import sys
import tempfile
import threading
import time

import jwt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import HttpConn, Runner, T, eq, expect, fail, short  # noqa: E402
from cdp import Browser  # noqa: E402

# The page side: every client a test starts records what it receives and
# every event, under a name the test reads back.
PAGE_SETUP = r"""
(async () => {
  const {RingWS} = await import('/ringws.js');
  const text = new TextDecoder();
  window.R = {clients: {}, log: {}, RingWS};
  R.start = (name, topics, opts, since) => {
    const log = {got: {}, events: [], states: [], tokens: 0};
    R.log[name] = log;
    if (opts.tokens) {
      /* The first token the test made that is still valid for a second. */
      const tokens = opts.tokens;
      delete opts.tokens;
      opts.getToken = async () => {
        log.tokens++;
        const now = Date.now() / 1000;
        return tokens.find((t) => JSON.parse(atob(t.split('.')[1].replace(/-/g, '+')
                                                  .replace(/_/g, '/'))).exp > now + 1);
      };
    }
    opts.onStateChange = (state) => log.states.push(state);
    const c = new RingWS('/ws', opts);
    R.clients[name] = c;
    for (const type of ['open', 'close', 'reconnecting', 'recovered', 'gap', 'subscribed',
                        'authed', 'error']) {
      c.addEventListener(type, (e) => log.events.push([type, e.detail]));
    }
    for (const topic of topics) {
      log.got[topic] = [];
      c.subscribe(topic, (data, meta) => {
        const payload = typeof data === 'string' ? 's' + data
          : (data instanceof Uint8Array ? 'b' + text.decode(data) : 'x' + typeof data);
        log.got[topic].push([payload, meta.offset, meta.epoch, meta.topic]);
      }, {since: since && since[topic]});
    }
    return true;
  };
  R.count = (name, type) => R.log[name].events.filter((e) => e[0] === type).length;
  return true;
})()
"""


def js(value):
    return json.dumps(value)


class Publisher:
    """Numbered messages to one topic over one keep-alive HTTP connection:
    "N" as text, every fifth as binary; `publish(n)` for a count, or a
    thread that publishes until stopped."""

    def __init__(self, port, topic, token=None):
        self.port = port
        self.topic = topic
        self.token = token
        self.sent = 0
        self.error = None
        self.stop = threading.Event()
        self.conn = HttpConn(port)
        self.thread = None

    def one(self):
        n = self.sent + 1
        body = str(n).encode()
        head = "POST /publish/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (
            self.topic, len(body))
        if n % 5 == 0:
            head += "Content-Type: application/octet-stream\r\n"
        if self.token:
            head += "Authorization: Bearer %s\r\n" % self.token
        self.conn.send((head + "\r\n").encode() + body)
        resp = self.conn.read_response()
        eq(resp.status, 200, "status of publish %d (%s)" % (n, short(resp.body)))
        self.sent = n

    def publish(self, count):
        for _ in range(count):
            self.one()

    def _run(self, pause):
        try:
            while not self.stop.is_set():
                self.one()
                time.sleep(pause)
        except BaseException as e:  # reported by join()
            self.error = e

    def start(self, pause=0.002):
        self.thread = threading.Thread(target=self._run, args=(pause,), daemon=True)
        self.thread.start()

    async def until(self, n, what):
        deadline = time.monotonic() + T(20)
        while self.sent < n:
            if self.error is not None or time.monotonic() > deadline:
                fail("the publisher reached %d of %d before %s: %s" % (self.sent, n, what,
                                                                     self.error))
            await asyncio.sleep(0.01)

    def join(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(T(10))
        self.conn.close()
        if self.error is not None:
            raise self.error


def expected(first, last):
    """The payloads of messages first..last as the pages record them."""
    return [("b" if n % 5 == 0 else "s") + str(n) for n in range(first, last + 1)]


async def open_page(page, port):
    await page.open("http://127.0.0.1:%d/healthz" % port)
    await page.eval(PAGE_SETUP)


async def start(page, name, topics, opts=None, since=None):
    await page.eval("R.start(%s, %s, %s, %s)" % (js(name), js(topics), js(opts or {}),
                                                 js(since)))


async def subscribed(page, name, n=1):
    await page.wait("R.count(%s, 'subscribed') + R.count(%s, 'recovered') + "
                    "R.count(%s, 'gap') >= %d" % (js(name), js(name), js(name), n),
                    "client %s's subscription answered" % name)


async def received(page, name, topic):
    return await page.eval("R.log[%s].got[%s]" % (js(name), js(topic)))


async def events(page, name, kind):
    return await page.eval("R.log[%s].events.filter((e) => e[0] === %s).map((e) => e[1])"
                           % (js(name), js(kind)))


def check_sequence(got, first, last, what):
    """Every message first..last exactly once, in order, offsets following."""
    payloads = [g[0] for g in got]
    if payloads != expected(first, last):
        dup = len(payloads) - len(set(payloads))
        fail("%s: %d messages, %d duplicated, want %d..%d in order; first differences %s"
             % (what, len(payloads), dup, first, last,
                [(i, p, w) for i, (p, w) in enumerate(zip(payloads, expected(first, last)))
                 if p != w][:5] or payloads[-5:]))
    offsets = [g[1] for g in got]
    eq(offsets, list(range(offsets[0], offsets[0] + len(offsets))) if offsets else [],
       "%s: the offsets one after another" % what)


async def t_resume_1012(srv):
    topic = "t.live"
    async with Browser() as b:
        pages = [b.pages[0], await b.new_page(), await b.new_page()]
        for i, page in enumerate(pages):
            await open_page(page, srv.port)
            await start(page, "p%d" % i, [topic], {"backoff": {"initial": 50, "max": 500}})
        for i, page in enumerate(pages):
            await subscribed(page, "p%d" % i)
        pub = Publisher(srv.port, topic)
        pub.start()
        try:
            for round_ in (1, 2):
                await pub.until(pub.sent + 100, "the %s SIGUSR2" % ("first", "second")[round_ - 1])
                srv.send_signal(signal.SIGUSR2)
                for i, page in enumerate(pages):
                    await page.wait("R.count('p%d', 'open') === %d" % (i, round_ + 1),
                                    "page %d to reconnect after SIGUSR2 %d" % (i, round_))
            await pub.until(pub.sent + 100, "the end")
        finally:
            pub.join()
        last = pub.sent
        missed = 0
        for i, page in enumerate(pages):
            name = "p%d" % i
            await page.wait("(g => g.length && g[g.length - 1][0].endsWith(%s))(R.log.p%d.got[%s])"
                            % (js(str(last)), i, js(topic)), "page %d to receive message %d"
                            % (i, last))
            got = await received(page, name, topic)
            check_sequence(got, 1, last, "page %d" % i)
            expect(all(g[3] == topic for g in got), "the topic with every message", got[:3])
            closes = await events(page, name, "close")
            eq([(c["code"], c["reconnect"]) for c in closes], [(1012, True)] * 2,
               "page %d's closes" % i)
            expect(all("retry after" in c["reason"] for c in closes), "the hint in the reason",
                   closes)
            recovered = await events(page, name, "recovered")
            eq(len(recovered), 2, "page %d's recovered events (%s)" % (i, recovered))
            eq(await events(page, name, "gap"), [], "page %d's gap events" % i)
            # A reconnect that missed messages had them replayed: the
            # recovered range is what the page did not hold.
            for r in recovered:
                expect(r["topic"] == topic and r["to"] >= r["from"] - 1,
                       "a recovered range", r)
                missed += r["to"] - r["from"] + 1
        expect(missed > 0, "messages published while the pages were away, replayed", missed)


async def t_gap_and_since(srv):
    topic = "g.small"
    async with Browser() as b:
        page = b.pages[0]
        await open_page(page, srv.port)
        await start(page, "a", [topic])
        await subscribed(page, "a")
        pub = Publisher(srv.port, topic)
        try:
            pub.publish(5)
            await page.wait("R.log.a.got[%s].length === 5" % js(topic), "the first five")
            saved = await page.eval("R.clients.a.position(%s)" % js(topic))
            eq(saved["offset"], 5, "the position after five messages")
            await page.eval("R.clients.a.close()")
            await page.wait("R.clients.a.state === 'closed'", "the client to close")

            # 50 while away: the history keeps 10.
            pub.publish(50)
            await start(page, "b", [topic], since={topic: saved})
            await subscribed(page, "b")
            gaps = await events(page, "b", "gap")
            eq(gaps, [{"topic": topic, "epoch": saved["epoch"], "oldest": 46, "last": 55,
                       "previousEpoch": saved["epoch"], "previousOffset": 5}], "the gap reported")
            eq(await events(page, "b", "recovered"), [], "no recovered with the gap")
            pub.publish(3)
            await page.wait("R.log.b.got[%s].length >= 3" % js(topic), "live messages after it")
            got = await received(page, "b", topic)
            check_sequence(got, 56, 58, "the messages after the gap")
            saved = await page.eval("R.clients.b.position(%s)" % js(topic))
            await page.eval("R.clients.b.close()")

            # 7 while away, within the history: replayed, exactly.
            pub.publish(7)
            await start(page, "c", [topic], since={topic: "%s:%d" % (saved["epoch"],
                                                                     saved["offset"])})
            await page.wait("R.log.c.got[%s].length >= 7" % js(topic), "the missed messages")
            eq(await events(page, "c", "recovered"),
               [{"topic": topic, "epoch": saved["epoch"], "from": 59, "to": 65}], "the recovery")
            pub.publish(1)
            await page.wait("R.log.c.got[%s].length >= 8" % js(topic), "a live one after them")
            check_sequence(await received(page, "c", topic), 59, 66, "the recovered messages")
            eq(await page.eval("R.clients.c.duplicates"), 0, "duplicates dropped")
        finally:
            pub.join()


def make_secret():
    path = tempfile.mkstemp(prefix="ringws-client-js-", suffix=".key")[1]
    secret = base64.b64encode(os.urandom(33))
    with open(path, "wb") as f:
        f.write(secret + b"\n")
    return secret, path


def token(secret, exp, publish=()):
    return jwt.encode({"sub": "page", "topics": ["t.*"], "publish": list(publish), "exp": exp},
                      secret, algorithm="HS256", headers={"kid": "hs"})


async def t_token_refresh(srv, secret):
    topic = "t.auth"
    now = int(time.time())
    # Tokens valid 2 s apart: each connection lives until its token's exp.
    tokens = [token(secret, now + 2 + 2 * k) for k in range(8)]
    async with Browser() as b:
        page = b.pages[0]
        await open_page(page, srv.port)
        await start(page, "expiring", [topic], {"tokens": tokens, "renewBefore": 0,
                                                "backoff": {"initial": 50, "max": 200}})
        await start(page, "renewing", [topic], {"tokens": tokens, "renewBefore": 1500})
        await subscribed(page, "expiring")
        await subscribed(page, "renewing")
        pub = Publisher(srv.port, topic, token(secret, now + 60, publish=["t.*"]))
        pub.start(pause=0.01)
        try:
            await page.wait("R.count('expiring', 'open') >= 3", "two reconnects after 4001",
                            timeout=15)
            await pub.until(pub.sent + 20, "the end")
        finally:
            pub.join()
        last = pub.sent
        for name in ("expiring", "renewing"):
            await page.wait("(g => g.length && g[g.length - 1][0].endsWith(%s))"
                            "(R.log[%s].got[%s])" % (js(str(last)), js(name), js(topic)),
                            "%s to receive message %d" % (name, last))
            check_sequence(await received(page, name, topic), 1, last, name)
        closes = await events(page, "expiring", "close")
        expect(len(closes) >= 2 and all((c["code"], c["reason"], c["reconnect"]) ==
                                        (4001, "token expired", True) for c in closes),
               "closes with 4001 token expired", closes)
        expect(await page.eval("R.log.expiring.tokens") >= 3, "getToken before each connect",
               await page.eval("R.log.expiring.tokens"))
        eq(await events(page, "renewing", "close"), [], "the renewing client's closes")
        expect(len(await events(page, "renewing", "authed")) >= 2, "renewals answered `authed`",
               await events(page, "renewing", "authed"))


def main():
    r = Runner("client_js")
    with r.server(["--topic", "t.*=close-1013,history=1000", "--topic",
                   "g.*=close-1013,history=10", "--reconnect-window", "300ms"],
                  "history") as srv:
        r.case("resume-across-1012", t_resume_1012, srv, timeout=60)
        r.case("gap-past-history-and-since", t_gap_and_since, srv, timeout=60)
    secret, path = make_secret()
    try:
        with r.server(["--topic", "t.*=close-1013,history=1000", "--token-key", "hs=" + path,
                       "--token-leeway", "0", "--require-token"], "tokens") as srv:
            r.case("token-refresh", t_token_refresh, srv, secret, timeout=60)
    finally:
        os.unlink(path)
    r.finish()


if __name__ == "__main__":
    main()
