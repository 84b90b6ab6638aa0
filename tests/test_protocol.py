"""The websocket protocol core (handlers/protocol/) with no socket at all: bytes in, events and
bytes out, as the websockets library tests its own (tests/test_protocol.py there). The same
core is then fuzzed against the websockets library's sans-I/O protocol as the reference."""

from __future__ import annotations

import codecs
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_ws import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, frame

from handlers.protocol.connection import (
    CLOSED,
    CLOSING,
    OPEN,
    PING_RECEIVED,
    PONG_RECEIVED,
    CloseReceived,
    Connection,
    Failed,
    Limits,
)
from handlers.protocol.frames import close_payload, control_frame, parse_close, python_unmask, text_frame
from handlers.protocol.handshake import (
    HandshakeError,
    Headers,
    Request,
    accept_key,
    check_upgrade,
    forwarded_ip,
    origin_allowed,
    valid_key,
)

MAX_SIZE = 1000


class Recorder(Connection):
    """A connection whose transport only notes what the core asks of it."""

    __slots__ = ("flushes", "abandoned")

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits or Limits(MAX_SIZE, 10_000, 100_000))
        self.flushes = 0
        self.abandoned: str | None = None

    def flush_soon(self) -> None:
        self.flushes += 1

    def abandon(self, why: str) -> None:
        self.abandoned = why
        self.receive_eof()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames a server wrote."""
    found, i = [], 0
    while i < len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        assert data[i] & 0x80 and not data[i + 1] & 0x80  # final, unmasked
        i += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, i)
            i += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, i)
            i += 8
        found.append((opcode, bytes(data[i : i + length])))
        i += length
    return found


def sent(connection: Connection) -> list[tuple[int, bytes]]:
    return server_frames(bytes(connection.data_to_send()))


def close_frame(code: int, reason: str = "") -> tuple[int, bytes]:
    return (CLOSE, close_payload(code, reason))


# --- frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_use_the_shortest_length(size):
    data = text_frame(b"x" * size)
    assert data[1] == (size if size < 126 else 126 if size < 65536 else 127)
    assert server_frames(data) == [(TEXT, b"x" * size)]


def test_python_unmask_is_its_own_inverse_and_matches_the_definition():
    mask, data = b"\x01\x02\x03\x04", bytes(range(11))
    assert python_unmask(mask, data) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert python_unmask(mask, python_unmask(mask, data)) == data
    assert python_unmask(mask, b"") == b""


def test_close_payloads_are_cut_between_characters_and_parsed_back():
    payload = close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    assert parse_close(payload) == (1000, "é" * 61)
    assert parse_close(b"") == (None, "")


def test_control_frames_are_short():
    with pytest.raises(ValueError):
        control_frame(PING, b"x" * 126)


# --- messages in ------------------------------------------------------------------------------


def test_text_and_binary_messages_become_events_in_order():
    connection = Recorder()
    data = frame(TEXT, "héllo".encode()) + frame(BINARY, b"\x00\x01") + frame(TEXT, b"")
    assert connection.receive_data(data) == ["héllo", b"\x00\x01", ""]
    assert connection.frames_received == 3
    assert connection.data_to_send() == b""


def test_a_frame_split_anywhere_is_read_once_whole():
    data = frame(TEXT, b"x" * 300)
    connection = Recorder()
    events = []
    for byte in data:
        events += connection.receive_data(bytes([byte]))
    assert events == ["x" * 300]


def test_fragments_make_one_message_and_control_frames_may_come_between():
    connection = Recorder()
    data = frame(TEXT, b"he", fin=False) + frame(PING, b"p") + frame(CONTINUATION, b"ll", fin=False) + frame(CONTINUATION, b"o")
    assert connection.receive_data(data) == [PING_RECEIVED, "hello"]
    assert sent(connection) == [(PONG, b"p")]
    assert connection.frames_received == 4


def test_an_unmasked_frame_is_accepted_as_tornado_did():
    assert Recorder().receive_data(frame(TEXT, b"plain", mask=False)) == ["plain"]


def test_several_pings_read_together_get_one_pong_for_the_last():
    connection = Recorder()
    events = connection.receive_data(frame(PING, b"1") + frame(PING, b"2") + frame(PING, b"3"))
    assert events == [PING_RECEIVED] * 3
    assert connection.flushes == 1
    assert sent(connection) == [(PONG, b"3")]


def test_a_pong_is_heard_and_not_answered():
    connection = Recorder()
    assert connection.receive_data(frame(PONG, b"")) == [PONG_RECEIVED]
    assert sent(connection) == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"x", rsv=1), 1002),  # reserved bits: no extension negotiated
        (frame(0x3, b"x"), 1002),  # reserved opcode
        (frame(0xB, b""), 1002),
        (frame(PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(CONTINUATION, b"x"), 1002),  # continuation with nothing to continue
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),  # a new message inside one
        (frame(TEXT, b"\xff\xfe"), 1007),
        (frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\x28"), 1007),  # bad UTF-8 across fragments
        (frame(TEXT, b"x" * (MAX_SIZE + 1)), 1009),
        (frame(TEXT, b"x" * 600, fin=False) + frame(CONTINUATION, b"x" * 600), 1009),  # too big in all
        (frame(CLOSE, b"\x03"), 1002),  # a close payload of one byte
        (frame(CLOSE, struct.pack("!H", 1005)), 1002),  # a code no frame may carry
        (frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),  # a reason that is not UTF-8
    ],
)
def test_a_broken_rule_fails_the_connection_with_its_code_and_reads_no_more(data, code):
    connection = Recorder()
    events = connection.receive_data(data + frame(TEXT, b"after"))
    assert isinstance(events[-1], Failed) and events[-1].code == code, events
    assert "after" not in events
    assert connection.state is CLOSED
    frames = sent(connection)
    assert frames[-1][0] == CLOSE and struct.unpack("!H", frames[-1][1][:2])[0] == code
    assert connection.receive_data(frame(TEXT, b"later")) == []


def test_a_huge_frame_is_refused_from_its_header_before_its_payload_arrives():
    connection = Recorder()
    events = connection.receive_data(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 40) + b"\x00\x00\x00\x00")
    assert events == [Failed(1009, "message too big")]


# --- closing ----------------------------------------------------------------------------------


def test_a_client_close_is_answered_with_the_same_code_and_ends_the_connection():
    connection = Recorder()
    connection.send_text("before")
    events = connection.receive_data(frame(CLOSE, close_payload(4000, "bye")) + frame(TEXT, b"ignored"))
    assert events == [CloseReceived(4000, "bye")]
    assert connection.state is CLOSED
    assert sent(connection) == [(TEXT, b"before"), close_frame(4000, "bye")]
    assert connection.writing_done


def test_an_empty_close_is_answered_empty():
    connection = Recorder()
    assert connection.receive_data(frame(CLOSE, b"")) == [CloseReceived(None, "")]
    assert sent(connection) == [(CLOSE, b"")]


def test_the_server_closes_after_the_text_queued_and_sends_nothing_more():
    connection = Recorder()
    connection.send_text("one")
    connection.close(4400, "BAD-REQUEST")
    connection.send_text("two")
    connection.send_ping()
    assert connection.state is CLOSING
    assert sent(connection) == [(TEXT, b"one"), close_frame(4400, "BAD-REQUEST")]
    # The client may still send before its close frame; its close ends the handshake.
    assert connection.receive_data(frame(TEXT, b"late") + frame(CLOSE, close_payload(4400))) == ["late", CloseReceived(4400, "")]
    assert connection.state is CLOSED
    assert sent(connection) == []  # no second close frame


def test_a_pong_owed_leaves_before_a_close_frame():
    connection = Recorder()
    connection.receive_data(frame(PING, b"p"))
    connection.close(1001, "SERVER-SHUTDOWN")
    assert sent(connection) == [(PONG, b"p"), close_frame(1001, "SERVER-SHUTDOWN")]


def test_the_end_of_the_tcp_connection_drops_what_waits():
    connection = Recorder()
    connection.send_text("never sent")
    connection.receive_eof()
    assert connection.state is CLOSED and connection.data_to_send() == b""


# --- bytes out, and what a connection may hold --------------------------------------------------


def test_what_one_iteration_queues_leaves_in_one_write():
    connection = Recorder()
    for text in ("a", "b", "c"):
        connection.send_text(text)
    assert connection.flushes == 1
    assert sent(connection) == [(TEXT, b"a"), (TEXT, b"b"), (TEXT, b"c")]
    connection.send_text("d")
    assert connection.flushes == 2


def test_bytes_the_socket_did_not_take_leave_first_and_new_ones_wait_behind():
    limits = Limits(MAX_SIZE, 10_000, 100_000)
    connection = Recorder(limits)
    connection.send_text("first")
    data = connection.data_to_send()
    connection.unsent(data[3:])  # the socket took 3 bytes
    connection.send_text("second")
    assert connection.flushes == 1  # the transport waits for the socket, not for the loop
    assert connection.backlog == len(data) - 3 + len(text_frame(b"second"))
    assert limits.held == connection.backlog
    rest = connection.data_to_send()
    assert data[:3] + rest == text_frame(b"first") + text_frame(b"second")
    assert limits.held == 0 and connection.backlog == 0


def test_a_connection_that_holds_too_much_is_abandoned():
    limits = Limits(MAX_SIZE, 1000, 100_000)
    connection = Recorder(limits)
    connection.send_text("x")
    connection.unsent(connection.data_to_send())  # the socket takes nothing
    for _ in range(10):
        connection.send_text("y" * 200)
    assert connection.abandoned and "does not read" in connection.abandoned
    assert limits.dropped == 1 and limits.held == 0


def test_the_process_budget_drops_the_largest_holders_first():
    limits = Limits(MAX_SIZE, 10_000, 3000)  # the four below hold 2,628 bytes with their headers
    connections = [Recorder(limits) for _ in range(4)]
    for size, connection in zip((300, 900, 1200, 200), connections, strict=True):
        connection.send_text("x")
        connection.unsent(connection.data_to_send())
        connection.send_text("y" * size)
    assert [c.abandoned is not None for c in connections] == [False, False, False, False]
    connections[0].send_text("z" * 500)  # over the budget: the largest goes
    assert [c.abandoned is not None for c in connections] == [False, False, True, False]
    assert limits.shed == 1 and limits.held <= 3000


def test_a_writer_holding_bytes_counts_them_and_gets_at_most_a_chunk():
    limits = Limits(MAX_SIZE, 10_000, 100_000)
    connection = Recorder(limits)
    for _ in range(10):
        connection.send_text("x" * 100)
    chunk = connection.data_to_send(limit=500)
    assert len(chunk) == 500
    connection.in_flight = len(chunk)
    connection.unsent(b"")
    assert limits.held == connection.backlog == 10 * 102
    connection.in_flight = 0
    rest = connection.data_to_send()
    assert chunk + rest == text_frame(b"x" * 100) * 10


# --- the handshake ------------------------------------------------------------------------------


def upgrade(**headers: str) -> Request:
    fields = {
        "Host": "example.org",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    return Request("GET", "/wscall?id=a&peer_id=b", Headers((k, v) for k, v in fields.items() if v), "192.0.2.1")


def test_the_accept_key_is_the_rfcs_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_upgrade(upgrade(), []) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upgrade": "h2c"}, 400),
        ({"Connection": "keep-alive"}, 400),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://["}, 403),  # not a URL: refused, not a crash
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Key": ""}, 400),
        ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=é"}, 400),  # not ASCII
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # not 16 bytes
    ],
)
def test_a_request_that_cannot_be_upgraded_gets_tornados_status(headers, status):
    with pytest.raises(HandshakeError) as refused:
        check_upgrade(upgrade(**headers), [])
    assert refused.value.status == status


def test_origins_of_the_same_host_or_allowed_pass():
    assert origin_allowed("http://example.org", "example.org", [])
    assert origin_allowed("https://app.example", "example.org", ["https://APP.example"])
    assert origin_allowed("http://anything", "example.org", ["*"])
    assert not origin_allowed("null", "example.org", [])
    assert valid_key("dGhlIHNhbXBsZSBub25jZQ==") and not valid_key(None)


def test_the_request_reads_arguments_cookies_and_forwarded_addresses_as_tornado():
    request = Request(
        "GET", "/wscall?id=%20A%01b%20&id=last&bad=%ff&empty=", Headers([("Cookie", "session=s1; other=2")]), "127.0.0.1"
    )
    assert request.argument("id") == "last"
    assert Request("GET", "/x?id=%20A%01b%20", Headers(), "").argument("id") == "A b"
    assert request.argument("bad") is None and request.argument("empty") == "" and request.argument("none") is None
    assert request.cookie("session") == "s1" and request.cookie("missing") is None
    headers = Headers([("X-Forwarded-For", "198.51.100.1, 203.0.113.9")])
    assert forwarded_ip(headers, "127.0.0.1") == "203.0.113.9"
    assert forwarded_ip(Headers([("X-Forwarded-For", "not an address")]), "127.0.0.1") == "127.0.0.1"
    assert Headers([("A", "1"), ("a", "2")]).get("a") == "1,2"


# --- against the reference: the websockets library's sans-I/O protocol ------------------------------

websockets_protocol = pytest.importorskip("websockets.protocol")
websockets_frames = pytest.importorskip("websockets.frames")


def reference_outcome(frames: list[bytes]) -> tuple[list[str | bytes], int | None]:
    """The messages websockets' server protocol reads from ``frames``, and the close code it
    sends. Its Protocol leaves UTF-8 to the connection above it, which fails the connection
    with 1007 on the first text it cannot decode: modelled here as the frames arrive."""
    protocol = websockets_protocol.Protocol(websockets_protocol.Side.SERVER, max_size=MAX_SIZE)
    messages: list[str | bytes] = []
    parts: list[bytes] = []
    kind = decoder = None
    for data in frames:
        protocol.receive_data(data)
        for event in protocol.events_received():
            opcode = event.opcode
            if opcode in (websockets_frames.Opcode.TEXT, websockets_frames.Opcode.BINARY):
                kind, parts = opcode, []
                decoder = codecs.getincrementaldecoder("utf-8")() if opcode == websockets_frames.Opcode.TEXT else None
            elif opcode != websockets_frames.Opcode.CONT:
                continue
            parts.append(event.data)
            if decoder is not None:
                try:
                    decoder.decode(event.data, event.fin)
                except UnicodeDecodeError:
                    return messages, 1007
            if event.fin:
                whole = b"".join(parts)
                messages.append(whole.decode() if kind == websockets_frames.Opcode.TEXT else whole)
        for chunk in protocol.data_to_send():
            for opcode, payload in server_frames(chunk):
                if opcode == CLOSE:
                    return messages, struct.unpack("!H", payload[:2])[0] if payload else 1005
    return messages, None


def our_outcome(data: bytes) -> tuple[list[str | bytes], int | None]:
    connection = Recorder()
    messages = [event for event in connection.receive_data(data) if isinstance(event, (str, bytes))]
    code = None
    for opcode, payload in sent(connection):
        if opcode == CLOSE and code is None:
            code = struct.unpack("!H", payload[:2])[0] if payload else 1005
    return messages, code


client_frames = st.lists(
    st.tuples(
        st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE, 0x3, 0xB]),
        st.binary(max_size=200)
        | st.text(max_size=60).map(str.encode)
        | st.sampled_from([b"\xe2\x82", b"\xac", b"\xff", b"x" * (MAX_SIZE // 2 + 1)])
        | st.integers(0, 5000).map(lambda code: struct.pack("!H", code) + b"why"),
        st.booleans(),  # fin
        st.sampled_from([0, 0, 0, 0, 1, 4]),  # reserved bits
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=client_frames, cut=st.integers(0, 40))
def test_the_core_reads_what_the_websockets_library_reads_and_closes_as_it_does(sequence, cut):
    frames = [frame(op, payload[:125] if op & 0x8 else payload, fin=fin, rsv=rsv) for op, payload, fin, rsv in sequence]
    data = b"".join(frames)
    expected = reference_outcome(frames)
    assert our_outcome(data) == expected
    # The same bytes in two reads, cut anywhere, give the same.
    connection = Recorder()
    split = min(cut, len(data))
    events = connection.receive_data(data[:split]) + connection.receive_data(data[split:])
    assert [event for event in events if isinstance(event, (str, bytes))] == expected[0]


def test_the_states_in_order():
    connection = Recorder()
    assert connection.state is OPEN
    connection.close()
    assert connection.state is CLOSING
    connection.receive_data(frame(CLOSE, b""))
    assert connection.state is CLOSED
