"""The console page at "/" used in headless Chromium (cdp.py): the test
subscribes through the page's form (a ringws.js client), publishes over HTTP
from outside and waits for the message in the page's list with the
subscription it came on, its topic and its offset; publishes through the
page's form over the WebSocket `pub` (to a topic whose rule allows it:
delivered, and the offset it got shown; to one without: the server's 1008
shown as a refusal) and over POST /publish (a page's POST carries an Origin:
the 403 shown); the live figures follow /metrics: the connections figure
moves with connections the test opens and matches what the server reports,
the deliveries chart peaks after publishes, and the charts are drawn; after
SIGUSR2 closes every WebSocket, with the browser offline while the test
publishes, the subscription comes back and says what its resume found (a
topic with nothing missed: recovered; one whose history lost part of what
was missed: the gap) and receives again.  Over https the same page
subscribes over wss:// and receives.

Waits are on conditions in the page or in the server, never fixed sleeps."""

import asyncio
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import HttpConn, RawWS, Runner, T, eq, expect, fail, http_get, short  # noqa: E402
from cdp import Browser  # noqa: E402
import tls_ca  # noqa: E402


def publish(port, topic, text, tls=False):
    """POST /publish from the test (loopback, no Origin); returns recipients.
    tls: False, or the client's SSLContext."""
    body = text.encode()
    with HttpConn(port, tls=tls) as c:
        c.send(("POST /publish/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                % (topic, len(body))).encode() + body)
        resp = c.read_response()
    eq(resp.status, 200, "status of the test's publish (%s)" % short(resp.body))
    return json.loads(resp.body)["recipients"]


def server_value(port, name, tls=False):
    """A sample of /metrics summed over its labels, as the test reads it."""
    resp = http_get(port, "/metrics", tls=tls)
    eq(resp.status, 200, "status of GET /metrics")
    total = 0.0
    for line in resp.body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def js(value):
    return json.dumps(value)


async def fill(b, ident, value):
    await b.eval("document.getElementById(%s).value = %s" % (js(ident), js(value)))


async def submit(b, form):
    """Clicks the form's button, as a user would."""
    await b.eval("document.querySelector('#%s button').click()" % form)


def message_with(text):
    """[subscription, topic, offset] of the page's message whose payload is text."""
    return ("[...document.querySelectorAll('#msgs li:not(.notice)')].filter("
            "li => li.querySelector('.payload').textContent === %s)"
            ".map(li => ['.conn', '.topic', '.offset'].map("
            "c => li.querySelector(c).textContent))[0]" % js(text))


NOTICES = "[...document.querySelectorAll('#msgs li.notice .note')].map(n => n.textContent)"


async def offline(b, yes):
    """Chromium's network offline (no new connection opens) or back."""
    await b.send("Network.enable")
    await b.send("Network.emulateNetworkConditions", offline=yes, latency=0,
                 downloadThroughput=-1, uploadThroughput=-1)


async def subscribe(b, topics):
    before = await b.eval("document.querySelectorAll('#subs li').length")
    await fill(b, "sub-topics", topics)
    await submit(b, "sub-form")
    await b.wait("document.querySelectorAll('#subs li[data-state=open]').length === %d" % (before + 1),
                 "the subscription on the page to open")


async def page_publish(b, via, topic, text):
    await b.eval("document.getElementById('pub-result').textContent = ''")
    await fill(b, "pub-via", via)
    await fill(b, "pub-topic", topic)
    await fill(b, "pub-text", text)
    await submit(b, "pub-form")


FIGURE = "Number(document.getElementById('fig-connections').textContent)"


async def figure_matches(b, port, cond):
    """Waits until the page's connections figure equals the server's count
    (less the test's own request) and cond holds for it; returns it."""
    deadline = time.monotonic() + T(10)
    while True:
        want = server_value(port, "ringws_connections_open") - 1
        shown = await b.eval(FIGURE)
        if shown == want and cond(shown):
            return shown
        if time.monotonic() > deadline:
            fail("the connections figure %s, the server %s, after %.0fs" % (shown, want, T(10)))
        await asyncio.sleep(0.1)


def unique(tag):
    return "%s %s" % (tag, os.urandom(4).hex())


async def t_console(srv):
    port = srv.port
    async with Browser() as b:
        await b.open("http://127.0.0.1:%d/" % port)
        eq(await b.eval("document.title"), "ringws console", "the page's title")
        await b.wait("document.getElementById('metrics-state').textContent === 'live'",
                     "the figures from /metrics")

        # Subscribe through the form; publish from outside.
        await subscribe(b, "news, chat.room")
        eq(await b.eval("document.querySelector('#subs li .topics').textContent"),
           "news, chat.room", "the subscription's topics on the page")
        text = unique("from the test <b>&amp;")
        eq(publish(port, "news", text), 1, "recipients of the test's publish")
        shown = await b.wait(message_with(text), "the published message in the page's list")
        eq(shown, ["#1", "news", "1"], "the subscription, topic and offset shown with the message")

        # Publish through the form: `pub` where the rule allows it ...
        text = unique("from the page")
        await page_publish(b, "ws", "chat.room", text)
        eq(await b.wait(message_with(text), "the page's own pub in its list"),
           ["#1", "chat.room", "1"], "the subscription, topic and offset of the page's pub")
        eq(await b.wait("(r => r.className === 'ok' && r.textContent.startsWith('published') && "
                        "r.textContent)(document.getElementById('pub-result'))",
                        "the answer to the pub"),
           "published to chat.room at offset 1", "the offset the pub got, shown")
        # ... refused where no rule allows it: the server's close, shown.
        await page_publish(b, "ws", "news", unique("not allowed"))
        got = await b.wait("(r => r.className === 'err' && r.textContent)"
                           "(document.getElementById('pub-result'))", "the refusal of the pub")
        eq(got, "refused: 1008 publishing to this topic is not allowed", "the refusal shown")
        # POST /publish from a page carries an Origin: without a token, 403.
        await page_publish(b, "http", "news", unique("by post"))
        got = await b.wait("(r => r.className === 'err' && r.textContent)"
                           "(document.getElementById('pub-result'))", "the refusal of the POST")
        eq(got, "refused: 403 Forbidden: a request with an Origin needs a publish token",
           "the refusal shown")
        expect(await b.eval("document.querySelectorAll('#subs li[data-state=open]').length") == 1,
               "the subscription still open after the refusals", "closed")

        # The connections figure follows the server: it moves by the
        # connections the test opens (beside the page's subscriber and
        # echo), and equals what /metrics says less the test's own request.
        await b.wait("%s > 0" % FIGURE, "a connections figure")
        extra = [RawWS.open(port, path="/echo", tls=False) for _ in range(5)]
        try:
            shown = await figure_matches(b, port, lambda n: n >= 2 + 5)
        finally:
            for ws in extra:
                ws.close()
        await figure_matches(b, port, lambda n: n <= shown - 5)

        # The deliveries chart: publishes show as a peak, and it is drawn.
        for i in range(5):
            publish(port, "news", "burst %d" % i)
        await b.wait("Number(document.getElementById('peak-deliveries').textContent"
                     ".replace('peak ', '')) > 0", "a peak of deliveries per second")
        for name in ("connections", "deliveries", "in", "out"):
            drawn = await b.eval(
                "(c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                ".some((v, i) => i %% 4 === 3 && v > 0))(document.getElementById('chart-' + %s))"
                % js(name))
            expect(drawn, "the %s chart drawn" % name, "an empty canvas")

        # Every WebSocket closed with 1012 while the browser is offline (it
        # cannot come back until the test says so): 5 published meanwhile
        # to news, whose history keeps 3; the subscription resumes from
        # what it saw and says what it found.
        await offline(b, True)
        srv.send_signal(signal.SIGUSR2)
        await b.wait("document.querySelector('#subs li').dataset.state === 'reconnecting'",
                     "the subscription closed and waiting to reconnect")
        for i in range(5):
            publish(port, "news", "while away %d" % i)
        await offline(b, False)
        notices = await b.wait("(n => n.length === 2 && n)(%s)" % NOTICES,
                               "the subscription's notices after its reconnect", timeout=20)
        eq(sorted(notices), ["chat.room recovered nothing missed",
                             "news gap: had 6, history holds 9..11"], "the notices of the resume")
        text = unique("after the reconnect")
        eq(publish(port, "news", text), 1, "recipients after the reconnect")
        eq(await b.wait(message_with(text), "a message after the reconnect"), ["#1", "news", "12"],
           "the message after the reconnect")


async def t_console_https(port, ca):
    async with Browser(ca=ca) as b:
        await b.open("https://127.0.0.1:%d/" % port)
        await b.wait("document.getElementById('metrics-state').textContent === 'live'",
                     "the figures from /metrics over https")
        await subscribe(b, "secure")
        text = unique("over wss")
        eq(publish(port, "secure", text, tls=ca.client_context()), 1, "recipients of the test's publish")
        eq(await b.wait(message_with(text), "the message over wss"), ["#1", "secure", "1"],
           "the subscription, topic and offset shown with the message")
        eq(await b.eval("document.getElementById('status').textContent"), "open",
           "the echo WebSocket over wss")


def main():
    r = Runner("console")
    with r.server(["--workers", "2", "--topic", "chat.*=drop-oldest,publish,history=100",
                   "--topic", "news=close-1013,history=3", "--reconnect-window", "300ms"],
                  "console") as srv:
        r.case("console-subscribe-publish-figures", t_console, srv, timeout=90)
    ca = tls_ca.shared_ca()
    with r.server([], "tls", tls=[ca.issue()]) as srv:
        r.case("console-over-https", t_console_https, srv.port, ca, timeout=90)
    r.finish()


if __name__ == "__main__":
    main()
