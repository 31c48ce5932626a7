"""Headless Chromium driven over the DevTools protocol, for pages that must
be used, not only loaded: the test types into the page, clicks, and waits
for what the page shows (an expression polled until it holds), while it
drives the server from outside; Page.captureScreenshot takes pictures for
the docs (tools/console-screenshot.py).

Chromium (the same binary and flags as test_browser.py) runs in a session of
its own with a fresh profile and --remote-debugging-port=0; the port it
picks is read from DevToolsActivePort in the profile.  Python's websockets
library speaks to each page's target: the first page is the browser's own
(Browser.eval and the rest act on it), new_page() opens more, each a tab of
its own with its own connections.  Every wait is bounded."""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websockets

from ringws_test import T, fail
from test_browser import CHROMIUM, CHROMIUM_FLAGS, _tail


class Page:
    """One page target: commands, expressions, waits."""

    def __init__(self, ws, size):
        self.ws = ws
        self.size = size
        self.next_id = 0

    async def setup(self):
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.size[0],
                        height=self.size[1], deviceScaleFactor=1, mobile=False)
        return self

    async def send(self, method, **params):
        """One command; its result (events in between are skipped)."""
        self.next_id += 1
        ident = self.next_id
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), T(30)))
            if msg.get("id") != ident:
                continue
            if "error" in msg:
                fail("DevTools %s: %s" % (method, msg["error"]))
            return msg["result"]

    async def eval(self, expr):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in r:
            fail("the page threw on %r: %s" % (expr, r["exceptionDetails"].get("exception", {})
                                                 .get("description", r["exceptionDetails"])))
        return r["result"].get("value")

    async def wait(self, expr, what, timeout=10):
        """Polls expr until it is truthy; returns its value."""
        deadline = time.monotonic() + T(timeout)
        while True:
            value = await self.eval(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                fail("timed out after %.0fs waiting for %s (%s)" % (T(timeout), what, expr))
            await asyncio.sleep(0.05)

    async def open(self, url):
        """Navigates and waits for the page's load event."""
        await self.send("Page.navigate", url=url)
        await self.wait("document.readyState === 'complete' && location.href === %s"
                        % json.dumps(url), "the page to load")

    async def screenshot(self, path):
        shot = await self.send("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


class Browser:
    """One Chromium with one page, and more on demand; use with `async with`."""

    def __init__(self, ca=None, size=(1100, 800)):
        self.ca = ca
        self.size = size
        self.proc = None
        self.profile = None
        self.err = None
        self.port = None
        self.pages = []

    async def __aenter__(self):
        if not os.access(CHROMIUM, os.X_OK):
            fail("no browser at %s: install the chromium package (tools/setup.sh does) "
                 "or point RINGWS_CHROMIUM at one" % CHROMIUM)
        self.profile = tempfile.mkdtemp(prefix="ringws-cdp-")
        if self.ca is not None:
            self.ca.nss_db(self.profile)
        self.err = tempfile.TemporaryFile()
        cmd = [CHROMIUM] + CHROMIUM_FLAGS + [
            "--user-data-dir=" + self.profile, "--remote-debugging-port=0",
            "--window-size=%d,%d" % self.size, "--hide-scrollbars", "about:blank"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, start_new_session=True, close_fds=True,
                                     env=dict(os.environ, HOME=self.profile))
        try:
            await self._attach()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _attach(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + T(30)
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                fail("chromium gave no DevTools port (status %s); stderr %s"
                     % (self.proc.poll(), _tail(self.err)))
            await asyncio.sleep(0.05)
        self.port = int(open(port_file).read().split("\n")[0])
        while True:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % self.port,
                                        timeout=T(5)) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                fail("chromium shows no page target")
            await asyncio.sleep(0.05)
        await self._page(pages[0])

    async def _page(self, target):
        ws = await websockets.connect(target["webSocketDebuggerUrl"], max_size=None,
                                      ping_interval=None, open_timeout=T(10))
        page = Page(ws, self.size)
        self.pages.append(page)
        return await page.setup()

    async def new_page(self):
        """Another tab (about:blank), as another visitor's would be."""
        req = urllib.request.Request("http://127.0.0.1:%d/json/new?about:blank" % self.port,
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=T(5)) as r:
            return await self._page(json.load(r))

    async def __aexit__(self, *exc):
        for page in self.pages:
            await page.ws.close()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.err is not None:
            self.err.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # The first page's methods, for tests that use one page.
    async def send(self, method, **params):
        return await self.pages[0].send(method, **params)

    async def eval(self, expr):
        return await self.pages[0].eval(expr)

    async def wait(self, expr, what, timeout=10):
        return await self.pages[0].wait(expr, what, timeout)

    async def open(self, url):
        await self.pages[0].open(url)

    async def screenshot(self, path):
        await self.pages[0].screenshot(path)
