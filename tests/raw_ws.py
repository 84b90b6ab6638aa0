"""A bare websocket client over a plain socket, for what real clients will not do: stop
answering pings, send fragments, invalid UTF-8 or reserved opcodes."""

from __future__ import annotations

import base64
import os
import socket
import struct

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """One websocket frame as a client sends it (masked)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_responses(sock: socket.socket, count: int = 1) -> list[bytes]:
    """``count`` whole HTTP responses with a Content-Length (pages'), from a blocking socket."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the response")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(rest) < length:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed in the middle of a response")
            rest += chunk
        responses.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return responses


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (the socket must carry no more after it)."""
    return read_responses(sock, 1)[0]


class RawWebSocket:
    """``transport="tornado"``: ask for the socket on a connection that served a page first,
    which Tornado's side (handlers/streamws.py) serves; else the lean transport does."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        timeout: float = 5.0,
        transport: str = "lean",
        key: str | None = None,
        **headers: str,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if transport == "tornado":
            self.sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            read_response(self.sock)
        key = key or base64.b64encode(os.urandom(16)).decode()
        more = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{more}\r\n"
        )
        self.sock.sendall(request.encode("utf-8"))
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (never masked)."""
        b0, b1 = self._read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        return b0 & 0x0F, self._read_exact(length)

    def read_until_close(self) -> tuple[int | None, str]:
        """Skip frames until the server's close frame (code, reason) or the end of the stream."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == CLOSE:
                    if len(payload) >= 2:
                        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
                    return None, ""
        except (ConnectionError, OSError):
            return None, ""

    def close(self) -> None:
        self.sock.close()
