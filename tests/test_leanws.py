"""The lean transport (handlers/leanws.py) over real sockets: which requests it takes, what it
hands to Tornado, and how it treats odd clients. The frame rules themselves are proven by
test_fastws.py and test_fuzz.py, which talk to the real process over this transport."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest
from raw_ws import CLOSE, TEXT, RawWebSocket, frame

from processes import ServerProcess

NOTICE = b'{"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE"}'


@pytest.fixture(scope="module")
def server():
    env = {
        "WEBRTC_ICE_SERVERS": "[]",
        "WEBRTC_RATE_LIMIT": "0",
        "WEBRTC_XHEADERS": "1",
        "WEBRTC_POLICY": "cookie_policy",
        "PYTHONPATH": os.path.join(os.path.dirname(__file__), "policies"),
    }
    with ServerProcess(env=env) as process:
        yield process


def handshake(path: str, **headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Cookie": "session=let-me-in",
        **headers,
    }
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode()


def response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def connect(server: ServerProcess, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(request)
    return sock


def test_a_well_formed_upgrade_is_answered_by_the_lean_path(server):
    sock = connect(server, handshake("/wscall?id=lean1&peer_id=x"))
    head = response_head(sock)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"TornadoServer" not in head  # Tornado did not see it
    sock.sendall(frame(TEXT, b"anyone?"))
    assert sock.recv(4096).endswith(NOTICE)
    sock.close()


def test_a_head_that_arrives_in_pieces_is_still_taken(server):
    request = handshake("/wsreceive?id=lean2&peer_id=x")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    for n in range(0, len(request), 7):
        sock.sendall(request[n : n + 7])
        time.sleep(0.005)
    assert response_head(sock).startswith(b"HTTP/1.1 101")
    sock.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake("/wscall?id=a&peer_id=b", **{"Sec-WebSocket-Version": "8"}), b"426"),
        (handshake("/wscall?id=a&peer_id=b", Upgrade="h2c"), b"400"),
        (handshake("/wscall?id=a&peer_id=b", Origin="http://evil.example"), b"403"),
        (handshake("/wscall?id=%ff&peer_id=b"), b"101"),  # Tornado's way: accepted, then closed
        (b"POST /wscall?id=a&peer_id=b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GARBAGE\r\n\r\n", b"400"),
    ],
)
def test_everything_else_is_answered_by_tornado_as_before(server, request_bytes, status):
    sock = connect(server, request_bytes)
    head = response_head(sock)
    assert head.split(b" ", 2)[1] == status, head
    if status != b"400" or b"GARBAGE" not in request_bytes:
        assert b"TornadoServer" in head
    sock.close()


def test_a_socket_after_a_page_on_the_same_connection_goes_through_tornado(server):
    sock = connect(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = response_head(sock)
    assert data.startswith(b"HTTP/1.1 200")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
    while len(body) < length:
        body += sock.recv(4096)
    sock.sendall(handshake("/wscall?id=lean3&peer_id=x"))
    head = response_head(sock)
    assert head.startswith(b"HTTP/1.1 101") and b"TornadoServer" in head
    sock.close()


def test_the_socket_policy_reads_cookies_and_headers_on_the_lean_path(server):
    sock = connect(server, handshake("/wscall?id=lean4&peer_id=x", Cookie="session=wrong"))
    data = response_head(sock)  # the close frame may come in the same read as the 101
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    raw = RawWebSocket.__new__(RawWebSocket)
    raw.sock, raw.buffer = sock, rest
    assert raw.read_until_close() == (4403, "FORBIDDEN")
    sock.close()


def test_forwarded_addresses_are_logged_with_xheaders(server):
    sock = connect(server, handshake("/wscall?id=lean5&peer_id=x", **{"X-Forwarded-For": "203.0.113.7"}))
    assert response_head(sock).startswith(b"HTTP/1.1 101")
    server.wait_for_line(r"101 GET /wscall\?id=lean5&peer_id=x \(203\.0\.113\.7\)")
    sock.close()


def test_a_client_that_never_reads_is_dropped_before_it_costs_memory(server):
    reader = RawWebSocket("127.0.0.1", server.port, "/wscall?id=sink&peer_id=source")
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer = RawWebSocket("127.0.0.1", server.port, "/wscall?id=source&peer_id=sink")
    big = frame(TEXT, b"x" * 60000)
    dropped = False
    for _ in range(400):  # 24 MB at most, against a 4 MiB allowance (plus the kernel's buffers)
        writer.send(big)
        if "does not read what it is sent" in server.output():
            dropped = True
            break
    server.wait_for_line("dropping 'sink' .* does not read what it is sent", timeout=10)
    assert dropped or "does not read" in server.output()
    writer.send(frame(TEXT, b"still up?"))
    while True:  # notices for the copies that found nobody once it was gone
        opcode, payload = writer.read_frame()
        if payload == NOTICE:
            break
    writer.send(frame(CLOSE, b"\x03\xe8"))
    writer.close()
    reader.close()


def test_a_client_that_vanishes_without_a_close_frame_leaves_the_registry(server):
    sock = connect(server, handshake("/wscall?id=ghost&peer_id=lean6"))
    assert response_head(sock).startswith(b"HTTP/1.1 101")
    peer = RawWebSocket("127.0.0.1", server.port, "/wscall?id=lean6&peer_id=ghost")
    peer.send(frame(TEXT, b"hello ghost"))
    assert sock.recv(4096).endswith(b"hello ghost")
    sock.close()  # no close frame: the TCP connection just ends
    deadline = time.monotonic() + 5
    while True:
        peer.send(frame(TEXT, b"still there?"))
        if peer.read_frame() == (TEXT, NOTICE):
            break
        assert time.monotonic() < deadline
    peer.close()


NO_CYCLES_SCRIPT = r"""
import asyncio, base64, gc, os, sys
sys.path.insert(0, os.getcwd())
import webrtc_server
from handlers.frontdoor import FrontDoorHTTPServer
from handlers.leanws import HeadReader, LeanSocket
from tornado.netutil import bind_sockets


async def main():
    app = webrtc_server.make_app(iceServers=[], WS_PING_INTERVAL=0, STATUS_LOG_INTERVAL=0)
    server = FrontDoorHTTPServer(app)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    for n in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /wscall?id=u{n}&peer_id=p{n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\x88\x82abcd" + bytes(a ^ b for a, b in zip(b"\x03\xe8", b"ab")))  # close 1000, masked
        await reader.read()  # until the server closes
        writer.close()
    await asyncio.sleep(0.2)
    gc.collect()
    left = [type(o).__name__ for o in gc.garbage if isinstance(o, (HeadReader, LeanSocket))]
    print("CYCLES", len(left), sorted(set(left)))


asyncio.run(main())
"""


def test_connections_leave_no_cycles_for_the_garbage_collector():
    """Each connection's objects are freed as soon as it ends: cycles left for the garbage
    collector made its passes over a reconnect storm stall the loop for up to 250 ms."""
    import subprocess
    import sys

    from processes import PROJECT_DIR, clean_environment

    result = subprocess.run(
        [sys.executable, "-c", NO_CYCLES_SCRIPT],
        cwd=PROJECT_DIR,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "CYCLES 0 []" in result.stdout, result.stdout + result.stderr[-3000:]
