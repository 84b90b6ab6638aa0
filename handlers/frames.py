"""WebSocket frames (RFC 6455) as the signaling socket reads and writes them, free of Tornado.

:class:`FrameReader` is a mixin for a connection: ``_parse(buffer)`` handles every complete
frame at the start of ``buffer`` synchronously, in order, and answers the bytes it used; the
connection keeps the rest for the next chunk. Its rules are Tornado's: reserved bits set
(no extension is negotiated), a malformed control frame, a continuation out of place, a
message over ``max_message_size`` (decided from the header, before the payload is read:
1009) or text that is not UTF-8 end the connection. Both of the signaling socket's
transports use it: Tornado's protocol (handlers/fastws.py, for TLS and reused connections)
and the lean one (handlers/leanws.py).
"""

from __future__ import annotations

import struct

from tornado.util import _websocket_mask  # C unmasking (pure Python without the speedups)

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
#: Close code and reason of a message over the size limit.
TOO_BIG_CODE, TOO_BIG = 1009, "message too big"


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked (server-to-client) text frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A final, unmasked control frame (close, ping, pong: at most 125 bytes of payload)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def close_payload(code: int | None, reason: str | None) -> bytes:
    if code is None:
        return b""
    return struct.pack("!H", code) + (reason or "").encode("utf-8")[:123]


class FrameReader:
    """Parsing of client frames; the connection says what each one does. It provides
    ``client_terminated`` (True once the client's close frame arrived) and ``_abort()`` (the
    client broke the protocol: drop the connection now)."""

    #: A fragmented message so far, and its opcode (text or binary).
    FRAME_ATTRIBUTES = ("_fragment", "_fragment_opcode")
    _fragment: bytearray | None
    _fragment_opcode: int

    client_terminated: bool

    def _abort(self) -> None:
        raise NotImplementedError

    def _too_big(self) -> None:
        """A message over max_message_size: close with 1009 and drop the connection."""
        raise NotImplementedError

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """A close, ping, pong or unknown control frame (the connection answers it)."""
        raise NotImplementedError

    def _on_message(self, message: str | bytes) -> bool:
        """A whole text (str) or binary (bytes) message; False if the connection ended."""
        raise NotImplementedError

    def _parse(self, buffer: bytes, max_size: int) -> int:
        """Handle every complete frame at the start of ``buffer``; answer the bytes used.
        ``max_size``: the largest message accepted, in bytes (fragments together)."""
        position = 0
        end = len(buffer)
        while end - position >= 2 and not self.client_terminated:
            header, second = buffer[position], buffer[position + 1]
            opcode = header & 0x0F
            final = header & 0x80
            if header & 0x70:  # reserved bits: no extension is negotiated
                self._abort()
                return end
            length = second & 0x7F
            offset = position + 2
            if opcode & 0x8 and (length >= 126 or not final):  # malformed control frame
                self._abort()
                return end
            if length == 126:
                if end - offset < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset)
                offset += 2
            elif length == 127:
                if end - offset < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset)
                offset += 8
            pending = len(self._fragment) if self._fragment is not None else 0
            if length + pending > max_size:
                self._too_big()
                return end
            masked = second & 0x80
            if end - offset < length + (4 if masked else 0):
                break  # wait for the rest of this frame
            if masked:
                mask = buffer[offset : offset + 4]
                offset += 4
                payload = _websocket_mask(mask, buffer[offset : offset + length])
            else:
                payload = buffer[offset : offset + length]
            position = offset + length
            if not self._frame(final, opcode, payload):
                return end
        return position

    def _frame(self, final: int, opcode: int, payload: bytes) -> bool:
        """One frame, with the rules for fragments; False if the connection ended."""
        if opcode == 0:  # continuation
            if self._fragment is None:
                self._abort()
                return False
            self._fragment.extend(payload)
            if not final:
                return True
            opcode = self._fragment_opcode
            payload = bytes(self._fragment)
            self._fragment = None
        elif not opcode & 0x8:  # a new data message
            if self._fragment is not None:
                self._abort()
                return False
            if not final:
                self._fragment_opcode = opcode
                self._fragment = bytearray(payload)
                return True
        if opcode == TEXT:
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._abort()
                return False
        elif opcode == BINARY:
            message = payload
        else:
            self._on_control(opcode, payload)
            return not self.client_terminated
        return self._on_message(message)
