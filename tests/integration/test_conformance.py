"""A conformance suite modelled on the Autobahn WebSocket testsuite, sections
1-7 and 9, with small sizes, against the echo endpoint.

Each case has an id in Autobahn's numbering ("6.3.2"); cases this suite adds
to a section take the next free numbers, and UTF-8 cases get suffixes for
their variants (".split@K": two frames cut after byte K, ".bytewise": one
frame per byte, ".failfast-frame"/".failfast-chop": the message stops right
after the first byte that makes it invalid, in a non-final frame or in the
middle of one frame, and the server must close with 1007 without waiting for
the rest). Where Autobahn accepts NON-STRICT or INFORMATIONAL behaviour this
suite requires the strict one: echoes of messages sent before an error are
required, pongs to pings inside a fragmented message must come before the
rest of the message is sent, and a close must come with its exact code.
Close codes follow the IANA registry, which added 1012-1014 after the list
Autobahn's 7.9 cases treat as invalid: those are echoed here.

Sections 1-7 run on a thread pool (each case on its own connection);
section 9 (large messages) runs one case at a time.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,  # noqa: E402
                         Runner, T, build_frame, close_payload, utf8_first_invalid, utf8_valid)


# ---------------------------------------------------------------------------
# A small language for cases: a case is a list of steps run in order on one
# connection; each step is a function of the RawWS.


def F(opcode, payload=b"", **kw):
    return build_frame(opcode, payload, **kw)


def W(*frames, chops=None, pause=0.0):
    """Write the frames in one go (or in `chops`)."""
    data = b"".join(frames)
    return lambda ws: ws.send_raw(data, chops=chops, pause=pause)


def WF(*frames, pause=0.005):
    """Write each frame with its own write ("frame-wise chops")."""
    def step(ws):
        for i, f in enumerate(frames):
            ws.send_raw(f)
            if pause and i + 1 < len(frames):
                time.sleep(pause)
    return step


def WO(*frames):
    """Write the bytes one at a time ("octet-wise chops")."""
    data = b"".join(frames)
    return lambda ws: ws.send_raw(data, chops=1, pause=0.0002)


def SLEEP(t):
    return lambda ws: time.sleep(t)


def GET(kind, data=None, timeout=None):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return lambda ws: ws.expect_event(kind, data, timeout)


def CLEAN(code=1000, reason=b""):
    """We close; the server answers with the same code and closes TCP."""
    return lambda ws: ws.close_handshake(code, reason)


def FAIL(code, timeout=None):
    """The server closes with `code` (and nothing else comes first)."""
    return lambda ws: ws.fail_expected(code, timeout)


def CLOSED(codes):
    """We already sent a close: the server answers with one of `codes` and
    closes TCP."""
    def step(ws):
        ws.expect_close(codes)
        ws.expect_eof()
    return step


def run_steps(port, steps):
    with RawWS.open(port) as ws:
        for step in steps:
            step(ws)


CASES = []


def add(cid, *steps):
    CASES.append((cid, run_steps, None, list(steps)))


# ---------------------------------------------------------------------------
# 1 Framing

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]
for i, n in enumerate(LENGTHS, 1):
    add("1.1.%d" % i, W(F(OP_TEXT, b"*" * n)), GET("text", b"*" * n), CLEAN())
    add("1.2.%d" % i, W(F(OP_BINARY, b"\xfe" * n)), GET("binary", b"\xfe" * n), CLEAN())
add("1.1.8", W(F(OP_TEXT, b"*" * 65535), chops=997, pause=0.001), GET("text", b"*" * 65535), CLEAN())
add("1.2.8", W(F(OP_BINARY, b"\xfe" * 65535), chops=997, pause=0.001), GET("binary", b"\xfe" * 65535), CLEAN())
add("1.1.9", W(F(OP_TEXT, b"*" * 65536), chops=[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    GET("text", b"*" * 65536), CLEAN())
add("1.2.9", W(*[F(OP_BINARY, bytes([i]) * i) for i in range(130)]),
    *[GET("binary", bytes([i]) * i) for i in range(130)], CLEAN())

# ---------------------------------------------------------------------------
# 2 Pings and pongs

add("2.1", W(F(OP_PING)), GET("pong", b""), CLEAN())
add("2.2", W(F(OP_PING, b"Hello, world!")), GET("pong", b"Hello, world!"), CLEAN())
BINPING = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
add("2.3", W(F(OP_PING, BINPING)), GET("pong", BINPING), CLEAN())
add("2.4", W(F(OP_PING, b"\xfe" * 125)), GET("pong", b"\xfe" * 125), CLEAN())
add("2.5", W(F(OP_PING, b"\xfe" * 126)), FAIL(1002))
add("2.6", WO(F(OP_PING, b"\xfe" * 125)), GET("pong", b"\xfe" * 125), CLEAN())
add("2.7", W(F(OP_PONG)), CLEAN())
add("2.8", W(F(OP_PONG, b"unsolicited pong payload")), CLEAN())
add("2.9", W(F(OP_PONG, b"unsolicited pong payload"), F(OP_PING, b"ping payload")),
    GET("pong", b"ping payload"), CLEAN())
add("2.10", W(*[F(OP_PING, b"payload-%d" % i) for i in range(10)]),
    *[GET("pong", b"payload-%d" % i) for i in range(10)], CLEAN())
add("2.11", WO(*[F(OP_PING, b"payload-%d" % i) for i in range(10)]),
    *[GET("pong", b"payload-%d" % i) for i in range(10)], CLEAN())
add("2.12", W(F(OP_PING, b"frag", fin=False), F(OP_CONT, b"ment")), FAIL(1002))
add("2.13", W(F(OP_PING, b"\xfe" * 200, len_form=16)), FAIL(1002))
add("2.14", W(F(OP_PING, b"", length=1 << 20, len_form=64)), FAIL(1002))

# ---------------------------------------------------------------------------
# 3 Reserved bits

add("3.1", W(F(OP_TEXT, b"Hello, world!", rsv=1)), FAIL(1002))
add("3.2", W(F(OP_TEXT, b"small"), F(OP_TEXT, b"small", rsv=2), F(OP_PING)), GET("text", b"small"), FAIL(1002))
add("3.3", WF(F(OP_TEXT, b"small"), F(OP_TEXT, b"small", rsv=3), F(OP_PING)), GET("text", b"small"), FAIL(1002))
add("3.4", WO(F(OP_TEXT, b"small"), F(OP_TEXT, b"small", rsv=4), F(OP_PING)), GET("text", b"small"), FAIL(1002))
add("3.5", W(F(OP_BINARY, bytes(range(8)), rsv=5)), FAIL(1002))
add("3.6", W(F(OP_PING, b"ping", rsv=6)), FAIL(1002))
add("3.7", W(F(OP_CLOSE, close_payload(1000), rsv=7)), FAIL(1002))
add("3.8", W(F(OP_TEXT, b"frag", fin=False), F(OP_CONT, b"ment", rsv=1)), FAIL(1002))

# ---------------------------------------------------------------------------
# 4 Opcodes

for group, ops in (("4.1", (3, 4, 5, 6, 7)), ("4.2", (11, 12, 13, 14, 15))):
    add(group + ".1", W(F(ops[0])), FAIL(1002))
    add(group + ".2", W(F(ops[1], b"reserved opcode payload")), FAIL(1002))
    add(group + ".3", W(F(OP_TEXT, b"small"), F(ops[2]), F(OP_PING)), GET("text", b"small"), FAIL(1002))
    add(group + ".4", W(F(OP_TEXT, b"small"), F(ops[3], b"payload"), F(OP_PING)), GET("text", b"small"), FAIL(1002))
    add(group + ".5", WO(F(OP_TEXT, b"small"), F(ops[4], b"payload"), F(OP_PING)), GET("text", b"small"), FAIL(1002))

# ---------------------------------------------------------------------------
# 5 Fragmentation

f1, f2 = b"fragment1", b"fragment2"
add("5.1", W(F(OP_PING, f1, fin=False), F(OP_CONT, f2)), FAIL(1002))
add("5.2", W(F(OP_PONG, f1, fin=False), F(OP_CONT, f2)), FAIL(1002))
add("5.3", W(F(OP_TEXT, f1, fin=False), F(OP_CONT, f2)), GET("text", f1 + f2), CLEAN())
add("5.4", WF(F(OP_TEXT, f1, fin=False), F(OP_CONT, f2)), GET("text", f1 + f2), CLEAN())
add("5.5", WO(F(OP_TEXT, f1, fin=False), F(OP_CONT, f2)), GET("text", f1 + f2), CLEAN())
add("5.6", W(F(OP_TEXT, f1, fin=False), F(OP_PING, b"ping payload"), F(OP_CONT, f2)),
    GET("pong", b"ping payload"), GET("text", f1 + f2), CLEAN())
add("5.7", WF(F(OP_TEXT, f1, fin=False), F(OP_PING, b"ping payload"), F(OP_CONT, f2)),
    GET("pong", b"ping payload"), GET("text", f1 + f2), CLEAN())
add("5.8", WO(F(OP_TEXT, f1, fin=False), F(OP_PING, b"ping payload"), F(OP_CONT, f2)),
    GET("pong", b"ping payload"), GET("text", f1 + f2), CLEAN())
nothing = F(OP_CONT, b"non-continuation payload")
add("5.9", W(nothing, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
add("5.10", WF(nothing, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
add("5.11", WO(nothing, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
nothing_nf = F(OP_CONT, b"non-continuation payload", fin=False)
add("5.12", W(nothing_nf, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
add("5.13", WF(nothing_nf, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
add("5.14", WO(nothing_nf, F(OP_TEXT, b"Hello, world!")), FAIL(1002))
add("5.15", W(F(OP_TEXT, f1, fin=False), F(OP_CONT, f2), F(OP_CONT, b"fragment3", fin=False),
              F(OP_TEXT, b"fragment4")), GET("text", f1 + f2), FAIL(1002))
add("5.16", W(*([nothing_nf, F(OP_TEXT, f1, fin=False), F(OP_CONT, f2)] * 2)), FAIL(1002))
add("5.17", W(*([nothing, F(OP_TEXT, f1, fin=False), F(OP_CONT, f2)] * 2)), FAIL(1002))
add("5.18", W(F(OP_TEXT, f1, fin=False), F(OP_TEXT, f2)), FAIL(1002))
add("5.19", W(F(OP_TEXT, b"frag1", fin=False), F(OP_CONT, b"frag2", fin=False), F(OP_PING, b"pongme 1!")),
    GET("pong", b"pongme 1!"), SLEEP(0.5),
    W(F(OP_CONT, b"frag3", fin=False), F(OP_CONT, b"frag4", fin=False), F(OP_PING, b"pongme 2!")),
    GET("pong", b"pongme 2!"), SLEEP(0.5),
    W(F(OP_CONT, b"frag5")), GET("text", b"frag1frag2frag3frag4frag5"), CLEAN())
add("5.20", WF(F(OP_TEXT, b"frag1", fin=False), F(OP_CONT, b"frag2", fin=False), F(OP_PING, b"pongme 1!")),
    GET("pong", b"pongme 1!"), SLEEP(0.5),
    WF(F(OP_CONT, b"frag3", fin=False), F(OP_CONT, b"frag4", fin=False), F(OP_PING, b"pongme 2!")),
    GET("pong", b"pongme 2!"), SLEEP(0.5),
    WF(F(OP_CONT, b"frag5")), GET("text", b"frag1frag2frag3frag4frag5"), CLEAN())
# Additions.
add("5.21", W(F(OP_BINARY, b"\x00\x01", fin=False), F(OP_CONT, b"\x02\x03")),
    GET("binary", b"\x00\x01\x02\x03"), CLEAN())
add("5.22", W(F(OP_TEXT, b"a", fin=False), *[F(OP_CONT, bytes([98 + i % 20]), fin=False) for i in range(98)],
              F(OP_CONT, b"z")),
    GET("text", b"a" + bytes(98 + i % 20 for i in range(98)) + b"z"), CLEAN())
add("5.23", W(F(OP_TEXT, b"", fin=False), F(OP_CONT, b"", fin=False), F(OP_CONT, b"middle", fin=False),
              F(OP_CONT, b"")), GET("text", b"middle"), CLEAN())
add("5.24", W(F(OP_BINARY, b"part", fin=False), F(OP_PONG, b"x"), F(OP_PING, b"y"), F(OP_CONT, b"rest")),
    GET("pong", b"y"), GET("binary", b"partrest"), CLEAN())
add("5.25", W(F(OP_BINARY, b"bin", fin=False), F(OP_BINARY, b"ary")), FAIL(1002))
add("5.26", W(F(OP_TEXT, b"text", fin=False), F(OP_BINARY, b"binary", fin=False)), FAIL(1002))
add("5.27", W(F(OP_TEXT, b"a", fin=False), F(OP_CONT, b"b")), GET("text", b"ab"),
    W(F(OP_CONT, b"c")), FAIL(1002))
add("5.28", W(F(OP_TEXT, b"a", fin=False), F(OP_CLOSE, close_payload(1000), fin=False)), FAIL(1002))

# ---------------------------------------------------------------------------
# 6 UTF-8 handling

KOSME = "κόσμε".encode()


def text_case(cid, payload, frames, chops=None):
    """Send `payload` as text split into `frames` (list of byte pieces);
    expect an echo if it is valid UTF-8, a 1007 close otherwise."""
    fs = [F(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(frames) - 1)) for i, p in enumerate(frames)]
    if utf8_valid(payload):
        add(cid, W(*fs, chops=chops), GET("text", payload), CLEAN())
    else:
        add(cid, W(*fs, chops=chops), FAIL(1007))


add("6.1.1", W(F(OP_TEXT, b"")), GET("text", b""), CLEAN())
add("6.1.2", W(F(OP_TEXT, b"", fin=False), F(OP_CONT, b"", fin=False), F(OP_CONT, b"")), GET("text", b""), CLEAN())
add("6.1.3", W(F(OP_TEXT, b"", fin=False), F(OP_CONT, b"middle frame payload", fin=False), F(OP_CONT, b"")),
    GET("text", b"middle frame payload"), CLEAN())

HELLO = "Hello-µ@ßöäüàá-UTF-8!!".encode()
text_case("6.2.1", HELLO, [HELLO])
text_case("6.2.2", HELLO, [HELLO[:12], HELLO[12:]])  # cut at a code point boundary
text_case("6.2.3", HELLO, [HELLO[i:i + 1] for i in range(len(HELLO))])
text_case("6.2.4", KOSME, [KOSME[i:i + 1] for i in range(len(KOSME))])

BAD = KOSME + b"\xed\xa0\x80" + b"edited"
text_case("6.3.1", BAD, [BAD])
text_case("6.3.2", BAD, [BAD[i:i + 1] for i in range(len(BAD))])


def fail_fast_frames(cid, pieces_before, bad_piece):
    """6.4-style: valid fragments, a fragment that makes the text invalid,
    then we wait: the 1007 close must come before the message is finished."""
    steps = [W(F(OP_TEXT, pieces_before[0], fin=False))]
    for p in pieces_before[1:]:
        steps.append(W(F(OP_CONT, p, fin=False)))
    steps += [SLEEP(0.1), W(F(OP_CONT, bad_piece, fin=False)), FAIL(1007)]
    add(cid, *steps)


fail_fast_frames("6.4.1", [KOSME], b"\xf4\x90\x80\x80")
fail_fast_frames("6.4.2", [KOSME + b"\xf4"], b"\x90")


def fail_fast_chop(cid, valid, bad, rest):
    """One frame announcing the whole payload, delivered in chops: the close
    must come after the invalid chop, before the frame is complete."""
    frame = F(OP_TEXT, valid + bad + rest)
    hlen = len(frame) - len(valid + bad + rest)
    a, b = hlen + len(valid), hlen + len(valid) + len(bad)
    add(cid, W(frame[:a]), SLEEP(0.1), W(frame[a:b]), FAIL(1007))


fail_fast_chop("6.4.3", KOSME, b"\xf4\x90\x80\x80", b"edited")
fail_fast_chop("6.4.4", KOSME + b"\xf4", b"\x90", b"\x80\x80edited")


def seqs_ffff():
    out = []
    for plane in range(17):
        for low in (0xFFFE, 0xFFFF):
            out.append(chr(plane * 0x10000 + low).encode())
    out += [chr(c).encode() for c in (0xFDD0, 0xFDDF, 0xFDEF)]
    return out


K = KOSME
UTF8_TABLE = [
    # 6.5 valid texts
    ("6.5", [K, HELLO, "日本語テキスト".encode(), "😀👍🏽".encode(),
             "a\x7f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff".encode()]),
    # 6.6 prefixes of κόσμε: truncated sequences at the end are invalid
    ("6.6", [K[:i] for i in range(1, len(K) + 1)]),
    # 6.7 first possible sequence of each length
    ("6.7", [b"\x00", b"\xc2\x80", b"\xe0\xa0\x80", b"\xf0\x90\x80\x80"]),
    # 6.8 first possible 5 and 6 byte sequences (not UTF-8 any more)
    ("6.8", [b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"]),
    # 6.9 last possible sequence of each length
    ("6.9", [b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf"]),
    # 6.10 last possible 4, 5, 6 byte patterns (beyond U+10FFFF)
    ("6.10", [b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf\xbf"]),
    # 6.11 other boundary conditions
    ("6.11", [b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80"]),
    # 6.12 unexpected continuation bytes
    ("6.12", [b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80", b"\x80\xbf\x80\xbf", b"\x80\xbf\x80\xbf\x80",
              b"\x80\xbf\x80\xbf\x80\xbf", bytes(range(0x80, 0xC0))]),
    # 6.13 lonely start bytes, each followed by a space
    ("6.13", [b"".join(bytes([c]) + b" " for c in range(lo, hi))
              for lo, hi in ((0xC0, 0xE0), (0xE0, 0xF0), (0xF0, 0xF8), (0xF8, 0xFC), (0xFC, 0xFE))]),
    # 6.14 sequences with the last continuation byte missing
    ("6.14", [b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
              b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf",
              b"\xc2", b"\xe0\xa0", b"\xf0\x90\x80", b"\xf4\x8f\xbf", b"ok\xe2\x82"]),
    # 6.15 concatenation of incomplete sequences
    ("6.15", [b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf"
              b"\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf"]),
    # 6.16 impossible bytes
    ("6.16", [b"\xfe", b"\xff", b"\xfe\xfe\xff\xff", b"a\xf5\x80\x80\x80"]),
    # 6.17 overlong ASCII '/'
    ("6.17", [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xf8\x80\x80\x80\xaf",
              b"\xfc\x80\x80\x80\x80\xaf"]),
    # 6.18 maximum overlong sequences
    ("6.18", [b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf", b"\xf8\x87\xbf\xbf\xbf",
              b"\xfc\x83\xbf\xbf\xbf\xbf"]),
    # 6.19 overlong NUL
    ("6.19", [b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xf8\x80\x80\x80\x80",
              b"\xfc\x80\x80\x80\x80\x80"]),
    # 6.20 single UTF-16 surrogates
    ("6.20", [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf", b"\xed\xb0\x80",
              b"\xed\xbe\x80", b"\xed\xbf\xbf"]),
    # 6.21 paired UTF-16 surrogates
    ("6.21", [a + b for a in (b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf")
              for b in (b"\xed\xb0\x80", b"\xed\xbf\xbf")]),
    # 6.22 noncharacters: valid UTF-8, must be echoed
    ("6.22", seqs_ffff()),
    # 6.23 U+FFFD and friends: valid
    ("6.23", [b"\xef\xbf\xbd", b"\xef\xbf\xbd" * 3, b"a\xef\xbf\xbdb", K + b"\xef\xbf\xbd" + K]),
]

UTF8_SELFCHECK = []
for section, seqs in UTF8_TABLE:
    for j, seq in enumerate(seqs, 1):
        cid = "%s.%d" % (section, j)
        valid = utf8_valid(seq)
        first_bad = utf8_first_invalid(seq)
        # Two independent validators must agree on every entry of the table:
        # a valid text has no bad byte, a text with a bad byte is invalid,
        # and an invalid text without one is a truncated valid prefix.
        completable = any(utf8_valid(seq + bytes([c]) * k) for c in (0x80, 0x90, 0xA0, 0xBF) for k in (1, 2, 3))
        if (valid and first_bad is not None) or (not valid and first_bad is None and not completable):
            UTF8_SELFCHECK.append(cid)
        text_case(cid, seq, [seq])
        for k in range(1, len(seq)):
            text_case("%s.split@%d" % (cid, k), seq, [seq[:k], seq[k:]])
        if len(seq) > 1:
            text_case(cid + ".bytewise", seq, [seq[i:i + 1] for i in range(len(seq))])
        if first_bad is not None:
            upto = seq[:first_bad + 1]
            add(cid + ".failfast-frame", W(F(OP_TEXT, upto, fin=False)), FAIL(1007))
            rest = b"x" * 32
            frame = F(OP_TEXT, seq + rest)
            cut = len(frame) - len(seq + rest) + first_bad + 1
            add(cid + ".failfast-chop", W(frame[:cut]), FAIL(1007))
        if not valid and first_bad is None:
            # Only the end of the message shows it is truncated: the message
            # is fine so far and must not be refused before it ends.
            add(cid + ".not-early", W(F(OP_TEXT, seq, fin=False)), lambda ws: ws.expect_silence(0.3),
                W(F(OP_CONT, b"")), FAIL(1007))

# ---------------------------------------------------------------------------
# 7 Close handling

add("7.1.1", W(F(OP_TEXT, b"Hello World!")), GET("text", b"Hello World!"), CLEAN())
add("7.1.2", W(F(OP_CLOSE, close_payload(1000)), F(OP_CLOSE, close_payload(1000))), CLOSED(1000))
add("7.1.3", W(F(OP_CLOSE, close_payload(1000)), F(OP_PING, b"Hello World!")), CLOSED(1000))
add("7.1.4", W(F(OP_CLOSE, close_payload(1000)), F(OP_TEXT, b"Hello World!")), CLOSED(1000))
add("7.1.5", W(F(OP_TEXT, b"fragment1", fin=False), F(OP_CLOSE, close_payload(1000)), F(OP_CONT, b"fragment2")),
    CLOSED(1000))
BIG = b"*" * (256 << 10)
add("7.1.6", W(F(OP_TEXT, BIG), F(OP_CLOSE, close_payload(1000)), F(OP_PING, b"Hello World!")),
    GET("text", BIG, timeout=T(10)), CLOSED(1000))
add("7.3.1", W(F(OP_CLOSE)), CLOSED({None, 1000}))
add("7.3.2", W(F(OP_CLOSE, b"\x03")), FAIL(1002))
add("7.3.3", W(F(OP_CLOSE, close_payload(1000))), CLOSED(1000))
add("7.3.4", W(F(OP_CLOSE, close_payload(1000, b"Hello World!"))), CLOSED(1000))
add("7.3.5", W(F(OP_CLOSE, close_payload(1000, b"*" * 123))), CLOSED(1000))
add("7.3.6", W(F(OP_CLOSE, close_payload(1000, b"*" * 124))), FAIL(1002))
add("7.5.1", W(F(OP_CLOSE, close_payload(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"))),
    FAIL(1007))
add("7.5.2", W(F(OP_CLOSE, close_payload(1000, b"truncated \xe2\x82"))), FAIL(1007))
add("7.5.3", W(F(OP_CLOSE, close_payload(1000, "κόσμε ünïcödé reason")), ), CLOSED(1000))
for j, code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999], 1):
    add("7.7.%d" % j, W(F(OP_CLOSE, close_payload(code, b"reason"))), CLOSED(code))
# Autobahn's 7.9 list predates the IANA registry's 1012-1014 (Service
# Restart, Try Again Later, Bad Gateway): those are valid codes, echoed like
# the 7.7 ones; the rest of the list is still refused.
for j, code in enumerate([0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999], 1):
    if 1012 <= code <= 1014:
        add("7.9.%d" % j, W(F(OP_CLOSE, close_payload(code))), CLOSED(code))
    else:
        add("7.9.%d" % j, W(F(OP_CLOSE, close_payload(code))), FAIL(1002))
add("7.13.1", W(F(OP_CLOSE, close_payload(5000))), FAIL(1002))
add("7.13.2", W(F(OP_CLOSE, close_payload(65535))), FAIL(1002))

# ---------------------------------------------------------------------------
# 9 Limited performance (sizes up to 4 MiB), run one at a time

HEAVY = []


def heavy(cid, fn, *args):
    HEAVY.append((cid, fn) + args)


def big_text(n):
    block = ("ascii κόσμε 日本語 😀 " * 64).encode()
    data = (block * (n // len(block) + 1))[:n]
    # Do not end inside a character.
    while not utf8_valid(data):
        data = data[:-1] + b"."
    return data


def big_binary(n):
    block = os.urandom(4096)
    return (block * (n // 4096 + 1))[:n]


def one_frame(port, opcode, n):
    data = big_text(n) if opcode == OP_TEXT else big_binary(n)
    with RawWS.open(port) as ws:
        ws.send_raw(F(opcode, data), timeout=T(60))
        ws.expect_event("text" if opcode == OP_TEXT else "binary", data, timeout=T(60))
        ws.close_handshake()


def fragmented(port, opcode, n, frag):
    data = big_text(n) if opcode == OP_TEXT else big_binary(n)
    pieces = [data[i:i + frag] for i in range(0, n, frag)]
    stream = b"".join(F(opcode if i == 0 else OP_CONT, p, fin=(i == len(pieces) - 1))
                      for i, p in enumerate(pieces))
    with RawWS.open(port) as ws:
        ws.send_raw(stream, timeout=T(60))
        ws.expect_event("text" if opcode == OP_TEXT else "binary", data, timeout=T(60))
        ws.close_handshake()


def chopped(port, opcode, n, chop_size):
    data = big_text(n) if opcode == OP_TEXT else big_binary(n)
    with RawWS.open(port) as ws:
        ws.send_raw(F(opcode, data), chops=chop_size, timeout=T(60))
        ws.expect_event("text" if opcode == OP_TEXT else "binary", data, timeout=T(60))
        ws.close_handshake()


def round_trips(port, opcode, n, count):
    data = big_text(n) if opcode == OP_TEXT else big_binary(n)
    kind = "text" if opcode == OP_TEXT else "binary"
    frame_cache = [F(opcode, data) for _ in range(8)]
    with RawWS.open(port) as ws:
        for i in range(count):
            ws.send_raw(frame_cache[i % 8])
            ws.expect_event(kind, data)
        ws.close_handshake()


SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
for j, n in enumerate(SIZES, 1):
    heavy("9.1.%d" % j, one_frame, OP_TEXT, n)
for j, n in enumerate(SIZES, 1):
    heavy("9.2.%d" % j, one_frame, OP_BINARY, n)
FRAGS = [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10]
for j, frag in enumerate(FRAGS, 1):
    heavy("9.3.%d" % j, fragmented, OP_TEXT, 4 << 20, frag)
for j, frag in enumerate(FRAGS, 1):
    heavy("9.4.%d" % j, fragmented, OP_BINARY, 4 << 20, frag)
CHOPS = [64, 128, 256, 512, 1024, 2048]
for j, c in enumerate(CHOPS, 1):
    heavy("9.5.%d" % j, chopped, OP_TEXT, 1 << 20, c)
for j, c in enumerate(CHOPS, 1):
    heavy("9.6.%d" % j, chopped, OP_BINARY, 1 << 20, c)
for j, n in enumerate([0, 16, 64, 256, 1024, 4096], 1):
    heavy("9.7.%d" % j, round_trips, OP_TEXT, n, 500)
for j, n in enumerate([0, 16, 64, 256, 1024, 4096], 1):
    heavy("9.8.%d" % j, round_trips, OP_BINARY, n, 500)


def main():
    r = Runner("conformance")
    if UTF8_SELFCHECK:
        r.record("utf8-table-selfcheck", False, "the two UTF-8 validators of the suite disagree on %s" % UTF8_SELFCHECK)
    with r.server([], "default") as srv:
        port = srv.port
        r.parallel([(cid, fn, port, steps) for cid, fn, _, steps in CASES], workers=16, timeout=60)
        for cid, fn, *args in HEAVY:
            r.case(cid, fn, port, *args, timeout=90)
    r.finish()


if __name__ == "__main__":
    main()
