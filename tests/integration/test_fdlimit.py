"""Descriptor exhaustion: with a low RLIMIT_NOFILE the server's direct
descriptor table is small; connections beyond it are refused at once (the
kernel resets them), the multishot accept that the kernel ends is re-armed,
and service resumes as soon as slots free up.  Also --max-connections:
beyond it new connections are closed at once, and served again below it;
and --max-per-address: one source address cannot take more than its share
across all workers, while other addresses are still served, also on a
dual-stack listener where IPv4 peers arrive as ::ffff:a.b.c.d."""

import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import Runner, Server, T, eq, expect, fail  # noqa: E402

LIMIT = 48


def healthz(port, source="127.0.0.1", host="127.0.0.1"):
    """Returns 'ok', 'refused' (reset or closed without an answer) or
    'silent', and the socket, which the caller keeps open or closes."""
    s = socket.create_connection((host, port), timeout=T(3), source_address=(source, 0))
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        data = s.recv(200)
    except (ConnectionResetError, BrokenPipeError):
        return "refused", s
    except socket.timeout:
        return "silent", s
    if data.startswith(b"HTTP/1.1 200"):
        return "ok", s
    if not data:
        return "refused", s
    fail("unexpected answer %r" % data[:60])


def start_with_nofile(limit, args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        return Server(args, "nofile-%d" % limit).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill_and_recover(srv, n, capacity, what):
    held, seen = [], {"ok": 0, "refused": 0, "silent": 0}
    for _ in range(n):
        verdict, s = healthz(srv.port)
        seen[verdict] += 1
        held.append(s)
    eq(seen["silent"], 0, "connections left unanswered (%s)" % what)
    expect(seen["ok"] <= capacity, "at most %d served while full" % capacity, seen)
    expect(seen["ok"] >= capacity - 8, "about %d served before the table filled" % capacity, seen)
    expect(seen["refused"] >= n - capacity, "the rest refused at once", seen)
    for s in held:
        s.close()
    deadline = time.monotonic() + T(5)
    while True:
        verdict, s = healthz(srv.port)
        s.close()
        if verdict == "ok":
            break
        if time.monotonic() > deadline:
            fail("service did not resume after connections closed (%s)" % what)
        time.sleep(0.1)
    # Everything is served again, up to the capacity.
    again = []
    for _ in range(capacity // 2):
        verdict, s = healthz(srv.port)
        again.append(s)
        eq(verdict, "ok", "a connection after recovery (%s)" % what)
    for s in again:
        s.close()


def t_nofile():
    srv = start_with_nofile(LIMIT, ["--workers", "1"])
    try:
        fill_and_recover(srv, LIMIT + 30, LIMIT, "RLIMIT_NOFILE %d" % LIMIT)
        expect(srv.alive(), "server still running", "exited")
        srv.stop()
    finally:
        srv.kill()


def t_max_connections():
    srv = Server(["--workers", "1", "--max-connections", "20"], "max-conn-20").start()
    try:
        fill_and_recover(srv, 50, 20, "--max-connections 20")
        srv.stop()
    finally:
        srv.kill()


def t_max_per_address():
    srv = Server(["--workers", "2", "--max-per-address", "5"], "per-address-5").start()
    try:
        held, verdicts = [], []
        for _ in range(12):
            verdict, s = healthz(srv.port, "127.0.0.3")
            verdicts.append(verdict)
            held.append(s)
        eq(verdicts.count("ok"), 5, "connections served from one address (%s)" % verdicts)
        eq(verdicts.count("refused"), 7, "connections refused from that address")
        verdict, other = healthz(srv.port, "127.0.0.4")
        eq(verdict, "ok", "another address while the first is at its limit")
        other.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + T(5)
        while True:
            verdict, s = healthz(srv.port, "127.0.0.3")
            s.close()
            if verdict == "ok":
                break
            if time.monotonic() > deadline:
                fail("the address was not served again after its connections closed")
            time.sleep(0.1)
        srv.stop()
    finally:
        srv.kill()


def dual_stack_missing():
    """Why a dual-stack listener cannot be tested here, or None."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as ls:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            ls.bind(("::", 0))
            ls.listen(1)
            with socket.create_connection(("127.0.0.1", ls.getsockname()[1]), timeout=T(3)):
                peer = ls.accept()[0]
                peer.close()
            with socket.create_connection(("::1", ls.getsockname()[1]), timeout=T(3)):
                pass
    except OSError as e:
        return "no dual-stack IPv6 socket with IPv4 and ::1 peers on this machine: %s" % e
    return None


def t_max_per_address_dual_stack():
    """Behind --bind :: an IPv4 peer is ::ffff:a.b.c.d; it must be counted
    as that IPv4 address, not as the /64 that every IPv4 peer shares."""
    why = dual_stack_missing()
    if why:
        print("     skip: %s" % why, flush=True)
        return
    srv = Server(["--workers", "2", "--bind", "::", "--max-per-address", "2"], "per-address-dual-stack").start()
    try:
        held, verdicts = [], []
        for _ in range(3):
            verdict, s = healthz(srv.port, "127.0.0.1")
            verdicts.append(verdict)
            held.append(s)
        eq(verdicts, ["ok", "ok", "refused"], "three connections from 127.0.0.1 with a limit of 2")
        verdict, other = healthz(srv.port, "127.0.0.2")
        held.append(other)
        eq(verdict, "ok", "127.0.0.2 while 127.0.0.1 is at its limit (both IPv4 through the IPv6 listener)")
        verdict, v6 = healthz(srv.port, "::1", "::1")
        held.append(v6)
        eq(verdict, "ok", "::1 while 127.0.0.1 is at its limit")
        for s in held:
            s.close()
        eq(srv.stop(), [], "problems of the server's life")
    finally:
        srv.kill()


def main():
    r = Runner("fdlimit")
    r.case("direct-table-full-then-resumes", t_nofile, timeout=60)
    r.case("max-connections-then-resumes", t_max_connections, timeout=60)
    r.case("max-per-address-across-workers", t_max_per_address, timeout=60)
    r.case("max-per-address-dual-stack-ipv4", t_max_per_address_dual_stack, timeout=60)
    r.finish()


if __name__ == "__main__":
    main()
