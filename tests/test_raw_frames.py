"""The protocol core's rules (handlers/protocol/) over real raw sockets to the real server process."""

from __future__ import annotations

import struct
import time

import pytest
from raw_ws import CLOSE, CONTINUATION, PING, PONG, TEXT, RawWebSocket, frame

from handlers.protocol.frames import text_frame

NOTICE = b'{"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE"}'


def open_pair(server, tag: str) -> tuple[RawWebSocket, RawWebSocket]:
    b = RawWebSocket("127.0.0.1", server.port, f"/wscall?id=b{tag}&peer_id=a{tag}")
    a = RawWebSocket("127.0.0.1", server.port, f"/wscall?id=a{tag}&peer_id=b{tag}")
    # Both registered: a message reaches b (not a notice back to a).
    deadline = time.monotonic() + 5
    while True:
        a.send(frame(TEXT, b"sync"))
        b.sock.settimeout(0.3)
        try:
            if b.read_frame() == (TEXT, b"sync"):
                break
        except (TimeoutError, OSError):
            pass
        assert time.monotonic() < deadline
    a.sock.settimeout(0.1)
    try:
        while True:
            a.read_frame()  # drain notices from early syncs
    except (TimeoutError, OSError):
        pass
    a.sock.settimeout(5)
    b.sock.settimeout(5)
    return a, b


def test_many_frames_in_one_write_are_all_relayed_in_order(server):
    a, b = open_pair(server, "batch")
    a.send(b"".join(frame(TEXT, f"m{n}".encode()) for n in range(100)))
    assert [b.read_frame() for _ in range(100)] == [(TEXT, f"m{n}".encode()) for n in range(100)]


def test_a_frame_arriving_byte_by_byte_is_relayed_once_whole(server):
    a, b = open_pair(server, "split")
    data = frame(TEXT, "ünïcødé, in pieces".encode())
    for i in range(len(data)):
        a.send(data[i : i + 1])
        time.sleep(0.002)
    assert b.read_frame() == (TEXT, "ünïcødé, in pieces".encode())


def test_fragments_make_one_message_and_pings_may_interleave(server):
    a, b = open_pair(server, "frag")
    a.send(frame(TEXT, b"hel", fin=False) + frame(PING, b"p1") + frame(CONTINUATION, b"lo ", fin=False))
    assert a.read_frame() == (PONG, b"p1")
    a.send(frame(CONTINUATION, b"world"))
    assert b.read_frame() == (TEXT, b"hello world")


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_every_length_encoding_is_read_and_written(server, size):
    a, b = open_pair(server, f"len{size}")
    payload = b"x" * size
    a.send(frame(TEXT, payload))
    assert b.read_frame() == (TEXT, payload)
    assert text_frame(payload)[1] == (size if size < 126 else 126 if size < 65536 else 127)


def test_an_unmasked_client_frame_is_accepted_as_tornado_does(server):
    a, b = open_pair(server, "unmasked")
    a.send(frame(TEXT, b"plain", mask=False))
    assert b.read_frame() == (TEXT, b"plain")


def test_a_close_frame_is_answered_with_the_same_code(server):
    a, _ = open_pair(server, "close")
    a.send(frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    assert a.read_until_close()[0] == 1000


def test_continuation_without_a_start_or_a_new_message_inside_one_fails_the_connection(server):
    for bad, reason in (
        (frame(CONTINUATION, b"orphan"), "unexpected continuation frame"),
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), "expected a continuation frame"),
    ):
        ws = RawWebSocket("127.0.0.1", server.port, "/wscall?id=bad&peer_id=nobody")
        ws.send(bad)
        # A close frame that says why (RFC 6455 7.1.7; Tornado used to cut the connection silently).
        assert ws.read_until_close() == (1002, reason)
        ws.close()
    probe = RawWebSocket("127.0.0.1", server.port, "/wscall?id=probe&peer_id=nobody")
    probe.send(frame(TEXT, b"still up?"))
    assert probe.read_frame() == (TEXT, NOTICE)
    probe.close()


def test_a_close_reason_that_is_not_utf8_fails_that_connection_cleanly(server):
    ws = RawWebSocket("127.0.0.1", server.port, "/wscall?id=badclose&peer_id=nobody")
    ws.send(frame(CLOSE, struct.pack("!H", 1000) + b"\xa9\xff"))
    assert ws.read_until_close() == (1007, "close reason is not UTF-8")
    ws.close()
    assert "Traceback" not in server.output()
