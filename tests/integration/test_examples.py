"""The programs of examples/ do what their opening comments say, driven from
outside with the websockets library and raw sockets: echo sends back text
and binary messages as they came; chat relays a message to every member of
its room (the sender too) and to no other room, and refuses upgrades
without a valid room and name (400) or for a room it does not open (403);
ticker's subscribers, through the built-in pub/sub path, get its thread's
ticks consecutively numbered and in order.  Each example stops cleanly on
SIGTERM (and echo on SIGINT) with no sanitizer report.

The example binaries come in RINGWS_EXAMPLE_ECHO, _CHAT and _TICKER."""

import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (HttpConn, Runner, Server, T, eq, expect, fail,  # noqa: E402
                         upgrade_request, ws_connect)


def example(name):
    path = os.environ.get("RINGWS_EXAMPLE_" + name.upper())
    if not path:
        fail("RINGWS_EXAMPLE_%s is not set: point it at the built example" % name.upper())
    return path


async def t_echo(port):
    async with ws_connect(port, "/echo") as ws:
        for i in range(50):
            await ws.send("text %d é" % i)
            eq(await ws.recv(), "text %d é" % i, "echoed text")
        payload = bytes(range(256)) * 300
        await ws.send(payload)
        eq(await ws.recv(), payload, "echoed binary")


def t_sigint():
    srv = Server(cmd=[example("echo"), 0], label="echo-sigint").start()
    problems = srv.stop(signal.SIGINT)
    expect(not problems, "echo ends cleanly on SIGINT", "; ".join(problems))


def upgrade_status(port, query):
    req, _ = upgrade_request(port, "/" + query)
    with HttpConn(port) as c:
        c.send(req)
        return c.read_response().status


def t_chat_refusals(port):
    for query, status in (("?room=lobby", 400), ("?name=ann", 400), ("", 400),
                          ("?room=lob%20by&name=ann", 400), ("?room=lobby&name=", 400),
                          ("?room=attic&name=ann", 403), ("?name=ann&room=games", 101)):
        eq(upgrade_status(port, query), status, "status of an upgrade to /" + query)


async def t_chat_rooms(port):
    join = lambda room, name: ws_connect(port, "/chat?room=%s&name=%s" % (room, name))  # noqa: E731
    async with join("lobby", "ann") as ann, join("lobby", "bob") as bob, \
            join("games", "cat") as cat:
        await bob.send("hi all")
        eq(await asyncio.wait_for(ann.recv(), T(5)), "bob: hi all", "ann's message from her room")
        eq(await bob.recv(), "bob: hi all", "bob's own message back")
        # Had the lobby's message reached cat, it would come before her own:
        # it was in her worker's inbox before she published.
        await cat.send("anyone?")
        eq(await asyncio.wait_for(cat.recv(), T(5)), "cat: anyone?",
           "cat's first message (none from the lobby)")
        await ann.send("bye")
        eq(await bob.recv(), "ann: bye", "bob's second message")
        eq(await ann.recv(), "ann: bye", "ann's own message back")
        try:
            extra = await asyncio.wait_for(cat.recv(), 0.2)
        except asyncio.TimeoutError:
            return
        fail("cat, in another room, got %r" % extra)


async def t_ticker(port):
    async with ws_connect(port, "/ws?topics=ticks") as ws:
        ticks = []
        for _ in range(10):
            word, n = (await asyncio.wait_for(ws.recv(), T(5))).split()
            eq(word, "tick", "message word")
            ticks.append(int(n))
        eq(ticks, list(range(ticks[0], ticks[0] + 10)), "ten ticks in order, none missing")


def main():
    r = Runner("examples", watchdog=T(120))
    with r.server(cmd=[example("echo"), 0], label="echo") as srv:
        r.case("echo-text-and-binary", t_echo, srv.port)
    r.case("echo-stops-on-sigint", t_sigint)
    with r.server(cmd=[example("chat"), 0, "lobby", "games"], label="chat") as srv:
        r.case("chat-refuses-bad-queries", t_chat_refusals, srv.port)
        r.case("chat-relays-within-a-room", t_chat_rooms, srv.port)
    with r.server(cmd=[example("ticker"), 0, 20], label="ticker") as srv:
        r.case("ticker-ticks-in-order", t_ticker, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
