"""Property-based fuzzing of every input against the real server process: it answers or
closes cleanly, and stays up."""

from __future__ import annotations

import http.client
import struct
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_ws import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawWebSocket, frame

from processes import ServerProcess

MAX_MESSAGE = 4096
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOKEN = "fuzz-token"

ids = st.text(max_size=300) | st.sampled_from(["", "A", "a" * 257, "</script>", "%00", "\x00", "\u2028", "😀" * 10])


@pytest.fixture(scope="module")
def server():
    env = {"WEBRTC_MAX_MESSAGE_SIZE": str(MAX_MESSAGE), "WEBRTC_ICE_ACCESS_TOKEN": TOKEN, "WEBRTC_ICE_SERVERS": "[]"}
    with ServerProcess(env=env) as process:
        yield process
        assert_alive(process)


def assert_alive(server: ServerProcess) -> None:
    assert server.proc is not None and server.proc.poll() is None, "the server died:\n" + server.output()[-3000:]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    assert "Traceback" not in server.output(), server.output()[-3000:]


def http_request(server: ServerProcess, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@FUZZ
@given(my_id=ids, peer_id=ids, route=st.sampled_from(["/call", "/recieve", "/receive"]), post=st.booleans())
def test_pages_answer_200_or_400(server, my_id, peer_id, route, post):
    query = urlencode({"id": my_id, "peer_id": peer_id})
    if post:
        status = http_request(server, "POST", route, query.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    else:
        status = http_request(server, "GET", f"{route}?{query}")
    assert status in (200, 400)
    assert server.proc.poll() is None


@FUZZ
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"]),
)
def test_page_forms_with_garbage_bodies_never_fail_the_server(server, body, content_type):
    assert http_request(server, "POST", "/call", body, {"Content-Type": content_type}) in (200, 400)


@FUZZ
@given(body=st.binary(max_size=3000), query=st.text(max_size=50))
def test_ice_bodies_answer_403_unless_right(server, body, query):
    status = http_request(server, "POST", f"/ice_servers?id={quote(query)}", body)
    assert status == (200 if body == TOKEN.encode() else 403)


@FUZZ
@given(raw_query=st.binary(max_size=200))
def test_raw_socket_query_strings_never_fail_the_server(server, raw_query):
    path = "/wscall?" + quote(raw_query, safe="=&")
    ws = RawWebSocket("127.0.0.1", server.port, path)
    try:
        assert ws.status == 101
        ws.send(frame(TEXT, b"hello?"))
        opcode, payload = ws.read_frame()
        if opcode == CLOSE:
            assert struct.unpack("!H", payload[:2])[0] == 4400  # BAD-REQUEST
        else:
            assert payload == b'{"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE"}'
    finally:
        ws.close()


frames = st.lists(
    st.tuples(
        st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE, 0x3, 0xB]),
        st.binary(max_size=300) | st.text(max_size=100).map(str.encode) | st.just(b"x" * (MAX_MESSAGE + 1)),
        st.booleans(),  # fin
        st.sampled_from([0, 0, 0, 1, 4]),  # reserved bits
        st.booleans(),  # masked
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(sequence=frames)
def test_any_frame_sequence_is_answered_or_closed_cleanly(server, sequence):
    ws = RawWebSocket("127.0.0.1", server.port, "/wscall?id=fuzzer&peer_id=nobody", timeout=2)
    try:
        for opcode, payload, fin, rsv, masked in sequence:
            if opcode in (PING, PONG, CLOSE):
                payload = payload[:125]  # control frames are short; longer ones are tested as data
            try:
                ws.send(frame(opcode, payload, fin=fin, rsv=rsv, mask=masked))
            except OSError:
                break  # the server already closed: fine
        try:
            ws.sock.settimeout(0.5)
            ws.read_until_close()
        except TimeoutError:
            pass  # e.g. waiting for the rest of a fragmented message: fine
    finally:
        ws.close()
    assert server.proc.poll() is None


def test_a_header_announcing_a_huge_frame_is_closed_with_1009(server):
    ws = RawWebSocket("127.0.0.1", server.port, "/wscall?id=big&peer_id=nobody")
    try:
        ws.send(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 40) + b"\x00\x00\x00\x00")
        assert ws.read_until_close()[0] == 1009
    finally:
        ws.close()


def test_invalid_utf8_in_a_text_frame_ends_that_socket_only(server):
    ws = RawWebSocket("127.0.0.1", server.port, "/wscall?id=utf&peer_id=nobody")
    try:
        ws.send(frame(TEXT, b"\xff\xfe\xfd"))
        code, _ = ws.read_until_close()
        assert code == 1007  # invalid data, in a close frame
    finally:
        ws.close()
    assert_alive(server)
