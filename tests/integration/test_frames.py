"""Frame-level rules of RFC 6455 as the server enforces them, on raw sockets:
each protocol error gets its exact close code and then the server closes
TCP; pings are answered with identical pongs; control frames may interleave
a fragmented message; the close handshake and the close codes."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ringws_test import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,  # noqa: E402
                         Runner, T, build_frame, close_payload, upgrade_request)


def fails_with(port, code, data, chops=None, before=()):
    """Sends `data` (frames) on a fresh connection; the server must echo the
    messages in `before` and then close with `code`, then close TCP."""
    with RawWS.open(port) as ws:
        ws.send_raw(data, chops=chops)
        for opcode, payload in before:
            ws.expect_echo(opcode, payload)
        ws.fail_expected(code)


def t_unmasked(port):
    fails_with(port, 1002, build_frame(OP_TEXT, "not masked", mask=False))
    fails_with(port, 1002, build_frame(OP_TEXT, "ok") + build_frame(OP_BINARY, b"bare", mask=False),
               before=[(OP_TEXT, b"ok")])
    fails_with(port, 1002, build_frame(OP_PING, b"p", mask=False))


def t_rsv(port):
    for rsv in (1, 2, 3, 4, 5, 6, 7):
        fails_with(port, 1002, build_frame(OP_TEXT, "rsv", rsv=rsv))
    fails_with(port, 1002, build_frame(OP_PING, b"", rsv=4))
    fails_with(port, 1002, build_frame(OP_TEXT, "a", fin=False) + build_frame(OP_CONT, "b", rsv=1))


def t_reserved_opcodes(port):
    for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        fails_with(port, 1002, build_frame(op, b"x"))
        fails_with(port, 1002, build_frame(op, b""))


def t_control_too_long(port):
    for op in (OP_PING, OP_PONG, OP_CLOSE):
        payload = struct.pack("!H", 1000) + b"r" * 124 if op == OP_CLOSE else b"p" * 126
        fails_with(port, 1002, build_frame(op, payload))
    # A 125-byte ping is the largest allowed.
    with RawWS.open(port) as ws:
        ws.send_frame(OP_PING, b"q" * 125)
        ws.expect_pong(b"q" * 125)


def t_control_fragmented(port):
    for op in (OP_PING, OP_PONG, OP_CLOSE):
        payload = close_payload(1000) if op == OP_CLOSE else b"frag"
        fails_with(port, 1002, build_frame(op, payload, fin=False) + build_frame(OP_CONT, b"", fin=True))
    fails_with(port, 1002, build_frame(OP_PING, b"alone", fin=False))


def t_bad_continuation(port):
    fails_with(port, 1002, build_frame(OP_CONT, "nothing to continue"))
    fails_with(port, 1002, build_frame(OP_CONT, "nothing", fin=False))
    fails_with(port, 1002, build_frame(OP_TEXT, "done") + build_frame(OP_CONT, "late"),
               before=[(OP_TEXT, b"done")])


def t_new_message_inside_fragmented(port):
    for op in (OP_TEXT, OP_BINARY):
        fails_with(port, 1002, build_frame(OP_TEXT, "part", fin=False) + build_frame(op, "new"))
        fails_with(port, 1002, build_frame(OP_BINARY, b"part", fin=False) + build_frame(op, b"new", fin=False))


def t_length_top_bit(port):
    frame = build_frame(OP_BINARY, b"", length=(1 << 63) | 5, len_form=64)
    fails_with(port, 1002, frame)
    frame = build_frame(OP_BINARY, b"", length=0xFFFFFFFFFFFFFFFF, len_form=64)
    fails_with(port, 1002, frame)


def t_huge_length_default(port):
    # 1 TiB announced, nothing sent: over the 16 MiB default at once.
    fails_with(port, 1009, build_frame(OP_BINARY, b"", length=1 << 40, len_form=64))
    fails_with(port, 1009, build_frame(OP_TEXT, b"", length=(16 << 20) + 1, len_form=64))


def t_max_message(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_BINARY, b"m" * 1024)
        ws.expect_echo(OP_BINARY, b"m" * 1024)
        ws.send_frame(OP_TEXT, "a" * 500, fin=False)
        ws.send_frame(OP_CONT, "b" * 524)
        ws.expect_echo(OP_TEXT, "a" * 500 + "b" * 524)
        ws.close_handshake()
    fails_with(port, 1009, build_frame(OP_BINARY, b"m" * 1025))
    fails_with(port, 1009, build_frame(OP_TEXT, "a" * 600, fin=False) + build_frame(OP_CONT, "b" * 425))
    fails_with(port, 1009, build_frame(OP_BINARY, b"a" * 1000, fin=False) + build_frame(OP_CONT, b"", fin=False)
               + build_frame(OP_CONT, b"b" * 30, fin=False) + build_frame(OP_CONT, b"c"))
    # Announced length alone is enough to refuse.
    fails_with(port, 1009, build_frame(OP_BINARY, b"", length=4096, len_form=16))


def t_invalid_utf8(port):
    fails_with(port, 1007, build_frame(OP_TEXT, b"abc\xff"))
    fails_with(port, 1007, build_frame(OP_TEXT, b"\xed\xa0\x80"))
    fails_with(port, 1007, build_frame(OP_TEXT, b"ok\xce", fin=False) + build_frame(OP_CONT, b"zz"))
    fails_with(port, 1007, build_frame(OP_TEXT, b"truncated \xe2\x82"))
    # Binary payloads are not text.
    with RawWS.open(port) as ws:
        ws.send_frame(OP_BINARY, b"\xff\xfe\xed\xa0\x80")
        ws.expect_echo(OP_BINARY, b"\xff\xfe\xed\xa0\x80")


def t_utf8_across_fragments(port):
    snow = "☃".encode()  # 3 bytes
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, b"x" + snow[:1], fin=False)
        ws.send_frame(OP_CONT, snow[1:2], fin=False)
        ws.send_frame(OP_CONT, snow[2:] + b"y")
        ws.expect_echo(OP_TEXT, b"x" + snow + b"y")
        ws.close_handshake()


# RFC 6455's codes and 1012-1014, registered with IANA after it.
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
               4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def t_close_valid_codes(port):
    for code in VALID_CODES:
        with RawWS.open(port) as ws:
            ws.send_close(code, "bye")
            try:
                ws.expect_close(code)
                ws.expect_eof()
            except AssertionError as e:
                raise AssertionError("close code %d: %s" % (code, e))


def t_close_invalid_codes(port):
    for code in INVALID_CODES:
        try:
            fails_with(port, 1002, build_frame(OP_CLOSE, close_payload(code)))
        except AssertionError as e:
            raise AssertionError("close code %d: %s" % (code, e))


def t_close_one_byte(port):
    fails_with(port, 1002, build_frame(OP_CLOSE, b"\x03"))


def t_close_bad_reason(port):
    fails_with(port, 1007, build_frame(OP_CLOSE, close_payload(1000, b"bad \xc0\xaf")))
    fails_with(port, 1007, build_frame(OP_CLOSE, close_payload(1000, b"\xed\xa0\x80")))


def t_close_empty(port):
    with RawWS.open(port) as ws:
        ws.send_close()
        ws.expect_close({None, 1000})
        ws.expect_eof()


def t_close_reason_max(port):
    with RawWS.open(port) as ws:
        ws.send_close(1000, "r" * 123)
        ws.expect_close(1000)
        ws.expect_eof()


def t_close_then_data_ignored(port):
    with RawWS.open(port) as ws:
        ws.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, "after close")
                    + build_frame(OP_PING, b"after close"))
        ws.expect_close(1000)
        ws.expect_eof()


def t_ping_pong(port):
    with RawWS.open(port) as ws:
        for payload in (b"", b"1", b"hello", bytes(range(125)), b"\xff\x00\xfe", "ü".encode()):
            ws.send_frame(OP_PING, payload)
            ws.expect_pong(payload)
        ws.close_handshake()


def t_unsolicited_pong(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_PONG, b"")
        ws.send_frame(OP_PONG, b"unsolicited")
        ws.send_frame(OP_TEXT, "after pongs")
        ws.expect_echo(OP_TEXT, "after pongs")
        ws.expect_silence(0.3)
        ws.close_handshake()


def t_interleaved_ping(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "frag-1 ", fin=False)
        ws.send_frame(OP_PING, b"in between")
        ws.expect_pong(b"in between")
        ws.send_frame(OP_CONT, "frag-2 ", fin=False)
        ws.send_frame(OP_PONG, b"unsolicited in between")
        ws.send_frame(OP_PING, b"again")
        ws.send_frame(OP_CONT, "frag-3")
        ws.expect_pong(b"again")
        ws.expect_echo(OP_TEXT, "frag-1 frag-2 frag-3")
        ws.close_handshake()


def t_close_inside_fragmented(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "half", fin=False)
        ws.send_close(1000)
        ws.expect_close(1000)
        ws.expect_eof()


def t_handshake_and_frames_one_write(port):
    request, key = upgrade_request(port)
    extra = (build_frame(OP_PING, b"early ping") + build_frame(OP_TEXT, "early text")
             + build_frame(OP_CLOSE, close_payload(1000)))
    with RawWS.open(port, request=request, key=key, extra=extra) as ws:
        ws.expect_pong(b"early ping")
        ws.expect_echo(OP_TEXT, "early text")
        ws.expect_close(1000)
        ws.expect_eof()


def t_zero_mask(port):
    with RawWS.open(port) as ws:
        ws.send_frame(OP_TEXT, "zero mask", key=b"\0\0\0\0")
        ws.expect_echo(OP_TEXT, "zero mask")


def t_error_after_messages(port):
    # Messages before the error are all answered, then the error close.
    data = b"".join(build_frame(OP_TEXT, "m%d" % i) for i in range(5)) + build_frame(6, b"")
    fails_with(port, 1002, data, before=[(OP_TEXT, b"m%d" % i) for i in range(5)])


def t_error_chopped(port):
    # The offending header arrives a byte at a time.
    fails_with(port, 1002, build_frame(OP_TEXT, "chopped", rsv=2), chops=1)
    fails_with(port, 1009, build_frame(OP_BINARY, b"", length=1 << 40, len_form=64), chops=1)


def t_server_closes_after_error_without_reply(port):
    # We never answer the close: the server still closes TCP (close timeout
    # is 3 s by default).
    with RawWS.open(port) as ws:
        ws.send_frame(5, b"")
        ws.expect_close(1002)
        ws.expect_eof(timeout=T(3) + 2.5)


def t_ten_pings(port):
    with RawWS.open(port) as ws:
        ws.send_raw(b"".join(build_frame(OP_PING, b"ping %d" % i) for i in range(10)))
        for i in range(10):
            ws.expect_pong(b"ping %d" % i)
        ws.close_handshake()


def main():
    r = Runner("frames")
    with r.server([], "default") as srv:
        p = srv.port
        for cid, fn in [
            ("unmasked-1002", t_unmasked), ("rsv-1002", t_rsv), ("reserved-opcodes-1002", t_reserved_opcodes),
            ("control-over-125-1002", t_control_too_long), ("control-fragmented-1002", t_control_fragmented),
            ("continuation-without-start-1002", t_bad_continuation),
            ("new-message-inside-fragmented-1002", t_new_message_inside_fragmented),
            ("length-top-bit-1002", t_length_top_bit), ("huge-length-1009", t_huge_length_default),
            ("invalid-utf8-1007", t_invalid_utf8), ("utf8-across-fragments", t_utf8_across_fragments),
            ("close-valid-codes-echoed", t_close_valid_codes), ("close-invalid-codes-1002", t_close_invalid_codes),
            ("close-1-byte-1002", t_close_one_byte), ("close-reason-not-utf8-1007", t_close_bad_reason),
            ("close-empty", t_close_empty), ("close-reason-123", t_close_reason_max),
            ("close-then-data-ignored", t_close_then_data_ignored), ("ping-pong", t_ping_pong),
            ("unsolicited-pong-ignored", t_unsolicited_pong), ("interleaved-ping", t_interleaved_ping),
            ("close-inside-fragmented", t_close_inside_fragmented),
            ("frames-with-handshake", t_handshake_and_frames_one_write), ("zero-mask-key", t_zero_mask),
            ("error-after-messages", t_error_after_messages), ("error-chopped", t_error_chopped),
            ("ten-pings", t_ten_pings),
            ("closes-tcp-without-close-reply", t_server_closes_after_error_without_reply),
        ]:
            r.case(cid, fn, p)
    with r.server(["--max-message", "1024", "--recv-buffer", "256", "--recv-buffers", "512"], "max-1024") as srv:
        r.case("max-message-1009", t_max_message, srv.port)
        r.case("rsv-1002[rb256]", t_rsv, srv.port)
        r.case("interleaved-ping[rb256]", t_interleaved_ping, srv.port)
    r.finish()


if __name__ == "__main__":
    main()
