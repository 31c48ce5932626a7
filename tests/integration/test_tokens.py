"""Signed tokens (JWT) as docs/SECURITY.md and docs/PUBSUB.md promise them,
driven from outside.  Keys are made here with `openssl genpkey` (RSA 2048,
EC P-256, Ed25519, and an HMAC secret); tokens are made with PyJWT, and the
forged ones (alg none, algorithm confusion, tampered parts, bad base64) by
hand with Python's hmac and base64.

A token of every algorithm opens the pub/sub path; an expired one, one not
yet valid, one signed with the wrong key, one whose header names another
algorithm than its key's (an HS256 token whose secret is the RSA public key's
PEM), alg none, tampered claims or signature, bad base64, an unknown kid and a
missing kid among several keys are refused with 401 and the reason, counted
in /metrics by reason; tokens within the leeway open.  The token is taken
from ?token=, Authorization: Bearer and the --token-cookie cookie.  Topics
outside the token's claims are refused with 403 at the upgrade and close
1008 on a later `sub`; `pub` needs the publish claim; POST /publish needs a
token covering the topic (403 otherwise, 401 invalid or missing, loopback
included).  --require-token refuses the pub/sub path without a token.
SIGHUP reads the key files again (a bad one keeps the keys in use).  An
open connection is closed with 4001 "token expired" at exp unless `auth`
brought a fresh token of the same sub first; 2000 connections expiring at
once are closed over several ticks while an echo connection stays fast."""

import base64
import hashlib
import hmac
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jwt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_PING, OP_TEXT, HttpConn, RawWS, Runner, T,  # noqa: E402
                         eq, expect, fail, http_get,
                         upgrade_request)

TMP = tempfile.mkdtemp(prefix="ringws-tokens-")
LEEWAY = 5


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_keys():
    """Private PEMs for signing, public PEMs (and the secret) for the server."""
    keys = {}
    for name, algo in (("rs", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                       ("rs_other", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                       ("es", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                       ("ed", ["-algorithm", "ed25519"])):
        priv, pub = os.path.join(TMP, name + ".pem"), os.path.join(TMP, name + ".pub")
        openssl("genpkey", *algo, "-out", priv)
        openssl("pkey", "-in", priv, "-pubout", "-out", pub)
        keys[name] = (open(priv, "rb").read(), pub)
    secret = base64.b64encode(os.urandom(33))
    path = os.path.join(TMP, "hs.key")
    with open(path, "wb") as f:
        f.write(secret + b"\n")  # one trailing newline is not part of it
    keys["hs"] = (secret, path)
    return keys


KEYS = make_keys()
ALG = {"hs": "HS256", "rs": "RS256", "es": "ES256", "ed": "EdDSA"}


def claims(sub="alice", topics=("news", "sport.*"), publish=("chat.*",), exp=60, nbf=None,
           **extra):
    now = int(time.time())
    c = {"sub": sub, "topics": topics if isinstance(topics, str) else list(topics),
         "publish": list(publish)}
    if exp is not None:
        c["exp"] = now + exp
    if nbf is not None:
        c["nbf"] = now + nbf
    c.update(extra)
    return c


def token(kid="hs", key=None, alg=None, header_kid=True, **kw):
    """A token signed with PyJWT by the private key (or secret) of kid."""
    return jwt.encode(claims(**kw), key if key is not None else KEYS[kid][0],
                      algorithm=alg or ALG[kid], headers={"kid": kid} if header_kid else None)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header, payload, secret=None):
    """A token made by hand: HS256 over the parts with `secret`, or no
    signature at all."""
    signing = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(payload).encode())
    sig = b64u(hmac.new(secret, signing.encode(), hashlib.sha256).digest()) if secret else ""
    return signing + "." + sig


def signed_parts(h, p):
    """HS256 over two encoded parts as they are, however malformed."""
    sig = hmac.new(KEYS["hs"][0], (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64u(sig)


def upgrade(port, path="/ws", tok=None, via="query", topics=None, cookie="jwt"):
    """Sends an upgrade carrying the token `via` query, bearer or cookie;
    returns (response, HttpConn)."""
    query = []
    if topics:
        query.append("topics=" + topics)
    add = []
    if tok is not None and via == "query":
        query.append("token=" + tok)
    elif tok is not None and via == "bearer":
        add.append(("Authorization", "Bearer " + tok))
    elif tok is not None and via == "cookie":
        add.append(("Cookie", "theme=dark; %s=%s; lang=en" % (cookie, tok)))
    full = path + ("?" + "&".join(query) if query else "")
    req, key = upgrade_request(port, path=full, add=add)
    hc = HttpConn(port)
    hc.send(req)
    return hc.read_response(), hc, req, key


def expect_status(port, status, tok, what, reason=None, **kw):
    resp, hc, _, _ = upgrade(port, tok=tok, **kw)
    hc.close()
    eq(resp.status, status, what)
    if status == 401:
        www = resp.header("WWW-Authenticate") or ""
        expect(www.startswith("Bearer"), "WWW-Authenticate: Bearer", www)
        if reason:
            expect('error_description="%s"' % reason in www, "reason %s in WWW-Authenticate" % reason,
                   www)
            expect(("token " + reason).encode() in resp.body, "reason in the body", resp.body)
    return resp


def ws_open(port, tok=None, via="query", topics=None, path="/ws"):
    query = []
    if topics:
        query.append("topics=" + topics)
    add = []
    if tok is not None and via == "query":
        query.append("token=" + tok)
    elif tok is not None and via == "bearer":
        add.append(("Authorization", "Bearer " + tok))
    elif tok is not None and via == "cookie":
        add.append(("Cookie", "jwt=" + tok))
    full = path + ("?" + "&".join(query) if query else "")
    req, key = upgrade_request(port, path=full, add=add)
    return RawWS.open(port, request=req, key=key)


def sync(ws, tag=b"sync"):
    """A ping answered means every command before it was handled."""
    ws.send_frame(OP_PING, tag)
    ws.expect_pong(tag)


def publish(port, topic, body, tok=None):
    headers = [("Content-Length", str(len(body))), ("Connection", "close")]
    if tok is not None:
        headers.append(("Authorization", "Bearer " + tok))
    head = "POST /publish/%s HTTP/1.1\r\nHost: x\r\n" % topic
    head += "".join("%s: %s\r\n" % h for h in headers)
    with HttpConn(port) as c:
        c.send(head.encode() + b"\r\n" + body)
        return c.read_response()


def metrics(port):
    text = http_get(port, "/metrics").body.decode()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r'^ringws_auth_failures_total\{reason="(\w+)"\} (\d+)$', text,
                                 re.M)}


# ---------------------------------------------------------------------------
# Verification at the upgrade (several keys: a kid selects each)


def t_valid(port, kid):
    ws = ws_open(port, token(kid), topics="news,sport.eu")
    sync(ws)
    eq(publish(port, "sport.eu", b"goal", token(kid)).status, 403,
       "a publish outside the publish claim")
    eq(publish(port, "chat.x", b"hi", token(kid)).status, 200, "a publish within it")
    ws.close()


def t_refused(port, tok, reason):
    expect_status(port, 401, tok, "a token refused for " + reason, reason)


def t_within_leeway(port):
    ws = ws_open(port, token("rs", exp=-(LEEWAY - 3)))
    ws.close()
    ws = ws_open(port, token("es", nbf=LEEWAY - 3))
    ws.close()


def t_no_token_anonymous(port):
    # Without --require-token a subscriber may come without a token; with
    # keys loaded it may not publish.
    ws = ws_open(port, topics="anything")
    sync(ws)
    ws.send_frame(OP_TEXT, b"pub chat.x hi")
    ev = ws.fail_expected(1008)
    expect(b"not allowed" in ev.reason, "the reason", ev.reason)


def t_auth_brings_token(port):
    # A connection that came without a token gets the claims of one `auth`
    # brings: it may then publish where the publish claim allows.
    sub = ws_open(port, token("ed", topics=("chat.*",)), topics="chat.late")
    ws = ws_open(port)
    ws.send_frame(OP_TEXT, ("auth " + token("es")).encode())
    ws.send_frame(OP_TEXT, b"pub chat.late hello")
    sub.expect_event("text", b"hello")
    ws.send_frame(OP_TEXT, b"sub secret")
    ws.fail_expected(1008)
    sub.close()


def t_echo_path_checked(port):
    # A token on any WebSocket path is verified.
    expect_status(port, 401, token("hs", exp=-100), "an expired token on /echo", "expired",
                  path="/echo")
    resp, hc, _, _ = upgrade(port, path="/echo", tok=token("hs"))
    hc.close()
    eq(resp.status, 101, "a valid token on /echo")


def t_sources(port, via):
    # The claims of the token from each source are in force: topics outside
    # them are refused, inside them accepted.
    expect_status(port, 403, token("ed"), "topics outside the claims via " + via,
                  topics="secret", via=via)
    ws = ws_open(port, token("ed"), via=via, topics="news")
    sync(ws)
    ws.close()


def t_topics_403(port):
    resp = expect_status(port, 403, token("hs"), "?topics= outside the claims",
                         topics="news,secret")
    expect("insufficient_scope" in (resp.header("WWW-Authenticate") or ""), "insufficient_scope",
           resp.header("WWW-Authenticate"))


def t_sub_1008(port):
    ws = ws_open(port, token("hs"))
    ws.send_frame(OP_TEXT, b"sub sport.tennis,news")
    sync(ws)
    ws.send_frame(OP_TEXT, b"sub secret")
    ev = ws.fail_expected(1008)
    expect(b"token" in ev.reason, "the reason names the token", ev.reason)


def t_pub_claims(port):
    sub = ws_open(port, token("hs", topics=("chat.*",)), topics="chat.room")
    pub = ws_open(port, token("rs"))
    pub.send_frame(OP_TEXT, b"pub chat.room hello")
    sub.expect_event("text", b"hello")
    pub.send_frame(OP_TEXT, b"pub news nope")
    pub.fail_expected(1008)
    sub.close()


def t_publish_http(port):
    eq(publish(port, "chat.a", b"x").status, 401, "a loopback publish without a token")
    eq(publish(port, "chat.a", b"x", "not.a.token").status, 401, "a malformed token")
    eq(publish(port, "chat.a", b"x", token("hs", exp=-100)).status, 401, "an expired token")
    eq(publish(port, "news", b"x", token("hs")).status, 403, "a topic outside the publish claim")
    resp = publish(port, "chat.a", b"x", token("ed"))
    eq((resp.status, resp.body), (200, b'{"recipients":0}\n'), "a covered topic")


def t_metrics(port, before):
    after = metrics(port)
    for reason in ("malformed", "bad_signature", "unknown_kid", "alg_mismatch", "expired",
                   "not_yet_valid", "topic_denied", "publish_denied", "missing"):
        expect(after.get(reason, 0) > before.get(reason, 0),
               "ringws_auth_failures_total{reason=%s} grew" % reason, (before, after))


def refusals():
    """(case, token, reason) for the server with four keys."""
    good = token("hs")
    h, p, s = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    tampered["topics"] = ["*"]
    sig = list(s)
    sig[5] = "A" if sig[5] != "A" else "B"
    rs_pub_pem = open(KEYS["rs"][1], "rb").read()
    return [
        ("expired", token("hs", exp=-(LEEWAY + 30)), "expired"),
        ("not-yet-valid", token("rs", nbf=LEEWAY + 30), "not_yet_valid"),
        ("wrong-key-hmac", token("hs", key=base64.b64encode(os.urandom(33))), "bad_signature"),
        ("wrong-key-rsa", token("rs", key=KEYS["rs_other"][0]), "bad_signature"),
        # Algorithm confusion: HS256 "signed" with the RSA public key's PEM.
        ("alg-confusion", forged({"alg": "HS256", "kid": "rs", "typ": "JWT"}, claims(), rs_pub_pem),
         "alg_mismatch"),
        ("alg-none", forged({"alg": "none", "kid": "hs"}, claims()), "alg_mismatch"),
        ("alg-other", token("hs", alg="HS384"), "alg_mismatch"),
        ("tampered-claims", h + "." + b64u(json.dumps(tampered).encode()) + "." + s,
         "bad_signature"),
        ("tampered-signature", h + "." + p + "." + "".join(sig), "bad_signature"),
        ("bad-base64-signature", h + "." + p + "." + s[:-2] + "+/", "malformed"),
        ("bad-base64-header", "*" + h + "." + p + "." + s, "malformed"),
        ("bad-base64-claims", signed_parts(h, p[:-2] + "+/"), "malformed"),
        ("padded-base64", h + "=." + p + "." + s, "malformed"),
        ("two-parts", h + "." + p, "malformed"),
        ("unknown-kid", token("hs", key=KEYS["hs"][0]).replace(h, b64u(json.dumps(
            {"alg": "HS256", "kid": "nobody"}).encode())), "unknown_kid"),
        ("no-kid-among-several", token("hs", header_kid=False), "unknown_kid"),
        ("claims-of-wrong-type", token("ed", topics="news"), "malformed"),
    ]


# ---------------------------------------------------------------------------
# --require-token, one key without a kid


def t_require(port):
    resp = expect_status(port, 401, None, "the pub/sub path without a token")
    eq(resp.header("WWW-Authenticate"), "Bearer", "a plain challenge")
    ws = ws_open(port, token("hs", header_kid=False), topics="news")
    ws.close()
    # Other WebSocket paths take no token.
    resp, hc, _, _ = upgrade(port, path="/echo")
    hc.close()
    eq(resp.status, 101, "/echo without a token")


# ---------------------------------------------------------------------------
# SIGHUP reads the key files again


ROTATE = os.path.join(TMP, "rotate.key")


def hs_token(secret):
    return jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "r"})


def reload_keys(srv, word):
    """SIGHUP, then waits for the server to log `word` once more."""
    before = srv.stderr_text().count(word)
    srv.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + T(5)
    while srv.stderr_text().count(word) == before:
        if time.monotonic() > deadline:
            fail("no %r in the log after SIGHUP: %s" % (word, srv.stderr_tail(400)))
        time.sleep(0.02)


def t_rotate(srv):
    old, new = b"o" * 40, b"n" * 40
    expect_status(srv.port, 101, hs_token(old), "a token of the key loaded at start")
    with open(ROTATE, "wb") as f:
        f.write(new)
    reload_keys(srv, "token keys reloaded")
    expect_status(srv.port, 401, hs_token(old), "a token of the replaced key", "bad_signature")
    expect_status(srv.port, 101, hs_token(new), "a token of the new key")
    with open(ROTATE, "wb") as f:
        f.write(b"short")
    reload_keys(srv, "token key reload failed")
    expect(ROTATE in srv.stderr_text(), "the bad file named in the log", srv.stderr_tail(300))
    expect_status(srv.port, 101, hs_token(new), "the keys in use kept after a bad reload")


# ---------------------------------------------------------------------------
# Expiry of open connections (--token-leeway 0)


def t_expiry(port):
    t0 = time.monotonic()
    ws = ws_open(port, token("hs", header_kid=False, exp=2))
    ev = ws.expect_close(4001, timeout=T(6))
    eq(bytes(ev.reason), b"token expired", "the close reason")
    took = time.monotonic() - t0
    # exp is a whole second 1-2 s ahead.
    expect(0.9 <= took <= T(3), "a close 1-2 s after the upgrade", "%.2fs" % took)


def t_refresh(port):
    ws = ws_open(port, token("hs", header_kid=False, exp=2), topics="news")
    ws.send_frame(OP_TEXT, ("auth " + token("hs", header_kid=False, exp=60)).encode())
    sync(ws)
    ws.expect_silence(3.5)
    sync(ws, b"still open")
    ws.close()


def t_refresh_other_sub(port):
    ws = ws_open(port, token("hs", header_kid=False))
    ws.send_frame(OP_TEXT, ("auth " + token("hs", header_kid=False, sub="mallory")).encode())
    ev = ws.fail_expected(1008)
    eq(bytes(ev.reason), b"subject_changed", "the reason")


def t_refresh_narrower(port):
    ws = ws_open(port, token("hs", header_kid=False), topics="news")
    ws.send_frame(OP_TEXT, ("auth " + token("hs", header_kid=False, topics=("sport.*",))).encode())
    ev = ws.fail_expected(1008)
    eq(bytes(ev.reason), b"topic_denied", "the reason")


def t_refresh_invalid(port):
    ws = ws_open(port, token("hs", header_kid=False))
    ws.send_frame(OP_TEXT, ("auth " + token("hs", header_kid=False, exp=-60)).encode())
    ev = ws.fail_expected(1008)
    eq(bytes(ev.reason), b"expired", "the reason")


MANY = 2000


def t_many_expire(port):
    """MANY connections whose tokens end in the same second are closed with
    4001, spread over several ticks, while an echo connection keeps being
    answered promptly."""
    tok = token("hs", header_kid=False, exp=3)
    deadline = time.monotonic() + T(20)
    echo = ws_open(port, path="/echo")  # before the many: its descriptor stays low for select()
    socks = []
    sel = selectors.DefaultSelector()
    for i in range(MANY):
        s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
        req, _ = upgrade_request(port, path="/ws?token=" + tok)
        s.sendall(req)
        socks.append(s)
    bufs = {}
    for s in socks:
        s.setblocking(False)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
    closed_at = {}
    worst = 0.0
    n = 0
    while len(closed_at) < MANY and time.monotonic() < deadline:
        t1 = time.monotonic()
        payload = b"e%d" % n
        n += 1
        echo.send_frame(OP_TEXT, payload)
        echo.expect_event("text", payload, timeout=T(5))
        worst = max(worst, time.monotonic() - t1)
        for key, _ in sel.select(timeout=0.01):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            bufs[s] += data
            if s not in closed_at and b"\r\n\r\n" in bufs[s]:
                head, _, frames = bufs[s].partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101"):
                    fail("an upgrade was refused: %r" % head[:60])
                if len(frames) >= 4 and frames[0] == 0x88:
                    eq(frames[2:4], b"\x0f\xa1", "close code 4001")
                    closed_at[s] = time.monotonic()
                    sel.unregister(s)
            if not data:
                sel.unregister(s)
    for s in socks:
        s.close()
    eq(len(closed_at), MANY, "connections closed for their exp")
    spread = max(closed_at.values()) - min(closed_at.values())
    # At most a bounded number close per tick: the burst takes several.
    expect(spread >= 0.3, "the closes spread over several ticks", "%.3fs" % spread)
    expect(worst < T(0.5), "echo answered promptly throughout", "worst %.3fs" % worst)
    echo.close()


def main():
    r = Runner("tokens")
    spec = ["--token-key", "hs=" + KEYS["hs"][1], "--token-key", "rs=" + KEYS["rs"][1],
            "--token-key", "es=" + KEYS["es"][1], "--token-key", "ed=" + KEYS["ed"][1]]
    with r.server(spec + ["--workers", "2", "--token-leeway", "%ds" % LEEWAY,
                          "--token-cookie", "jwt"], "four-keys") as srv:
        before = metrics(srv.port)
        for kid in ("hs", "rs", "es", "ed"):
            r.case("valid-" + ALG[kid], t_valid, srv.port, kid)
        for name, tok, reason in refusals():
            r.case("refused-" + name, t_refused, srv.port, tok, reason)
        r.case("within-leeway", t_within_leeway, srv.port)
        r.case("no-token-anonymous", t_no_token_anonymous, srv.port)
        r.case("auth-brings-a-token", t_auth_brings_token, srv.port)
        r.case("echo-path-checked", t_echo_path_checked, srv.port)
        for via in ("query", "bearer", "cookie"):
            r.case("token-via-" + via, t_sources, srv.port, via)
        r.case("topics-outside-claims-403", t_topics_403, srv.port)
        r.case("sub-outside-claims-1008", t_sub_1008, srv.port)
        r.case("pub-by-publish-claim", t_pub_claims, srv.port)
        r.case("publish-http", t_publish_http, srv.port)
        r.case("metrics-by-reason", t_metrics, srv.port, before)
    with open(ROTATE, "wb") as f:
        f.write(b"o" * 40)
    with r.server(["--token-key", "r=" + ROTATE], "rotation") as srv:
        r.case("sighup-reloads-keys", t_rotate, srv)
    with r.server(["--token-key", KEYS["hs"][1], "--require-token", "--token-leeway", "0",
                   "--workers", "1"], "one-key") as srv:
        r.case("require-token", t_require, srv.port)
        r.parallel([("expiry-4001", t_expiry, srv.port),
                    ("refresh-by-auth", t_refresh, srv.port),
                    ("refresh-other-sub-1008", t_refresh_other_sub, srv.port),
                    ("refresh-narrower-1008", t_refresh_narrower, srv.port),
                    ("refresh-invalid-1008", t_refresh_invalid, srv.port)])
        r.case("many-expire-at-once", t_many_expire, srv.port, timeout=60)
    shutil.rmtree(TMP, ignore_errors=True)  # finish() leaves by os._exit: no atexit
    r.finish()


if __name__ == "__main__":
    main()
