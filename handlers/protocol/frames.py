"""WebSocket frames (RFC 6455) as values: opcodes, close codes, the frames a server writes,
a close frame's payload, and the one exception every protocol violation becomes.

Free of Tornado and of I/O. A client's frames are parsed by :class:`handlers.protocol.
connection.Connection`, which reads them straight from the bytes it is handed.
"""

from __future__ import annotations

import struct

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = frozenset((CONTINUATION, TEXT, BINARY))
CONTROL_OPCODES = frozenset((CLOSE, PING, PONG))

# Close codes (RFC 6455 7.4.1) the server sends.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

#: Longest payload of a control frame, and of a close frame's reason (after its 2-byte code).
MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2


class ProtocolError(Exception):
    """The client broke the protocol: the connection fails with ``code`` and ``reason``
    (the close frame the server sends before closing the TCP connection)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


#: The heads of the short text frames (one allocation per frame instead of two).
_SHORT_TEXT_HEADS = [bytes((0x81, length)) for length in range(126)]


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked (server-to-client) text frame."""
    length = len(payload)
    if length < 126:
        return _SHORT_TEXT_HEADS[length] + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A final, unmasked control frame (close, ping, pong: at most 125 bytes of payload)."""
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("a control frame carries at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


def close_payload(code: int | None, reason: str | None = None) -> bytes:
    """A close frame's payload: the code and the reason, cut to fit (never inside a character)."""
    if code is None:
        return b""
    encoded = (reason or "").encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON:
        encoded = encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + encoded


def valid_close_code(code: int) -> bool:
    """A code a peer may send (RFC 6455 7.4, and IANA's registry): 1004-1006 and 1015 are
    reserved for reports that never travel in a frame."""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code (None: none given) and reason of a client's close frame."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "close frame too short")
    (code,) = struct.unpack("!H", payload[:2])
    try:  # the reason first, then the code: the websockets library's order
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "close reason is not UTF-8") from None
    if not valid_close_code(code):
        raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
    return code, reason


def python_unmask(mask: bytes, data: bytes, /) -> bytes:
    """Unmask a client's payload (XOR with the 4-byte mask), in pure Python. Transports hand
    the connection a C version when they have one (handlers/speedups.py): this one costs
    about seven times as much per message."""
    length = len(data)
    if not length:
        return b""
    key = int.from_bytes((mask * ((length >> 2) + 1))[:length], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(length, "little")
