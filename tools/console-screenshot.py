#!/usr/bin/python3
"""console-screenshot.py [RINGWS] [OUT.png] - the picture of the console in
the README: starts RINGWS (default build/ringws) on a free port, opens the
console in headless Chromium (tests/integration/cdp.py, the machinery of the
console's test), subscribes two connections, and for a few seconds opens
connections and publishes (over HTTP, and one `pub` from the page) so that
the charts have something to show; then writes OUT (default
docs/console.png).  Run it with /usr/bin/python3 (websockets)."""

import asyncio
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "ringws"))
OUT = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "console.png"))
os.environ["RINGWS_BIN"] = BIN
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from cdp import Browser  # noqa: E402
from ringws_test import RawWS, Server  # noqa: E402


def publish(port, topic, text):
    body = text.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /publish/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (topic.encode(), len(body), body))
        while s.recv(4096):
            pass


async def act(b, js):
    await b.eval(js)


async def shoot(port):
    peers = []
    async with Browser(size=(1000, 700)) as b:
        await b.open("http://127.0.0.1:%d/?sub=news" % port)
        await act(b, "document.getElementById('sub-topics').value = 'chat.room, alerts';"
                     "document.querySelector('#sub-form button').click()")
        await b.wait("document.querySelectorAll('#subs li[data-state=open]').length === 2",
                     "two subscriptions open")
        for second in range(8):
            peers += [RawWS.open(port, tls=False) for _ in range(3 + second)]
            for i in range(1 + second % 3):
                publish(port, "news", "price update %d.%d" % (second, i))
            if second == 6:
                await act(b, "document.getElementById('pub-topic').value = 'chat.room';"
                             "document.getElementById('pub-text').value = 'hello from the console';"
                             "document.querySelector('#pub-form button').click()")
                publish(port, "alerts", "disk 91% full on db-2")
            await asyncio.sleep(1)
        await b.wait("document.getElementById('pub-result').className === 'ok'", "the page's pub")
        await b.screenshot(OUT)
    for p in peers:
        p.close()


def main():
    srv = Server(["--workers", "2", "--topic", "chat.*=drop-oldest,publish"], "screenshot").start()
    try:
        asyncio.run(shoot(srv.port))
    finally:
        srv.stop()
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
