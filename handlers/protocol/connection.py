"""One websocket connection, the server's side, after the handshake: bytes in, events and
bytes out, with every rule of RFC 6455 in one place and no I/O (no socket, no event loop).

A transport (handlers/leanws.py over a raw socket, handlers/streamws.py over Tornado's
IOStream) drives it:

* :meth:`Connection.receive_data` with what the socket read: it answers the events, in order:
  a ``str`` for each text message, ``bytes`` for a binary one, :data:`PING`/:data:`PONG`
  when a control frame says the client is alive, :class:`CloseReceived` when the client's
  close frame arrived, :class:`Failed` when the client broke the protocol (the connection has
  queued its close frame and will read no more). :meth:`receive_eof` when the socket ended.
* :meth:`send_text`, :meth:`send_ping`, :meth:`close` and :meth:`fail` queue frames; the
  first frame queued into an empty outbox calls :meth:`flush_soon`, and the transport then
  writes :meth:`data_to_send` (everything a loop iteration queued, in one write) and hands
  back with :meth:`unsent` what the socket did not take. While the socket is full, new frames
  wait behind those bytes, counted against ``Limits.max_unsent`` for this connection and
  ``Limits.max_unsent_total`` for the process (the largest holders are dropped first,
  :meth:`abandon`).
* :attr:`state`: ``OPEN``; ``CLOSING`` once the server sent its close frame and waits for
  the client's; ``CLOSED`` once the close handshake is done or the connection failed: the
  transport ends the TCP connection when the outbox is written.

Its rules are the RFC's, checked in the order the websockets library checks them
(tests/test_protocol.py fuzzes the two against each other; docs/protocol.md lists the
differences): an unknown opcode, reserved bits (no extension is negotiated), a fragmented or
long control frame, a continuation out of place, a bad close frame fail with 1002; a message
over ``max_size`` bytes (all its fragments, decided from the header) with 1009; text that is
not UTF-8 (checked fragment by fragment) with 1007; a close frame in the middle of a
fragmented message with 1002. Several pings read at once get one pong
(RFC 6455 5.5.3 allows answering the last only). ``frames_received`` counts every frame, so
that a rate limit can charge fragments and control frames as well as messages.
"""

from __future__ import annotations

import codecs
import struct
from typing import NamedTuple

from handlers.protocol.frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    PING,
    PONG,
    PROTOCOL_ERROR,
    TEXT,
    ProtocolError,
    close_payload,
    control_frame,
    parse_close,
    python_unmask,
    text_frame,
)

OPEN, CLOSING, CLOSED = "open", "closing", "closed"


class Heard(NamedTuple):
    """A ping or a pong from the client: it is alive (a ping is answered by the connection)."""

    kind: str


PING_RECEIVED = Heard("ping")
PONG_RECEIVED = Heard("pong")


class CloseReceived(NamedTuple):
    """The client's close frame (its code, None when it gave none, and its reason)."""

    code: int | None
    reason: str


class Failed(NamedTuple):
    """The client broke the protocol; the connection sent (queued) this close frame."""

    code: int
    reason: str


Event = str | bytes | Heard | CloseReceived | Failed


class Limits:
    """What the connections of one server may hold: the largest message, and the bytes the
    sockets have not taken yet, per connection and for the whole process. Connections that
    wait on a full socket register here with what they hold; past ``max_unsent_total`` the
    largest are dropped first, until the process is back under it."""

    def __init__(self, max_size: int, max_unsent: int, max_unsent_total: int) -> None:
        self.max_size = max_size
        self.max_unsent = max_unsent
        self.max_unsent_total = max_unsent_total
        #: Bytes held by connections waiting on a full socket, in all, and by each of them.
        self.held = 0
        self.holders: dict[Connection, int] = {}
        #: Connections dropped for holding too much: alone, and to keep the process under its budget.
        self.dropped = 0
        self.shed = 0

    def hold(self, connection: Connection, size: int) -> None:
        before = self.holders.pop(connection, 0)
        if size:
            self.holders[connection] = size
        self.held += size - before
        while self.held > self.max_unsent_total and self.holders:
            largest = max(self.holders, key=self.holders.__getitem__)
            self.held -= self.holders.pop(largest)
            self.shed += 1
            largest.abandon("the process holds too many unsent bytes: its largest reader is dropped")


class Connection:
    """The protocol state of one connection (see the module's docstring). Transports subclass
    it and implement :meth:`flush_soon` and :meth:`abandon`."""

    __slots__ = (
        "limits",
        "state",
        "close_code",
        "close_reason",
        "frames_received",
        "in_flight",
        "_fragment",
        "_fragment_opcode",
        "_decoder",
        "_pending",
        "_outbox",
        "_unsent",
        "_pong",
    )

    #: Unmasks a client's payload: ``unmask(mask, data)``. Transports give a C version.
    unmask = staticmethod(python_unmask)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.state = OPEN
        #: The code and reason of the client's close frame, or of the failure.
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames_received = 0
        #: Bytes a transport has handed to a writer that has not written them yet (Tornado's
        #: IOStream): they count against the limits as unsent bytes do.
        self.in_flight = 0
        self._fragment: bytearray | None = None
        self._fragment_opcode = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._pending = b""
        self._outbox: list[bytes] | None = None
        #: Bytes waiting for a full socket (None while the socket takes what it is given).
        self._unsent: bytearray | None = None
        self._pong: bytes | None = None

    # --- what a transport implements -----------------------------------------------------

    def flush_soon(self) -> None:
        """The outbox was empty and has a frame now: write data_to_send() soon (once per loop
        iteration, so that what one iteration queued leaves in one write)."""
        raise NotImplementedError

    def abandon(self, why: str) -> None:
        """Drop the connection now, without a close handshake (it holds too many unsent bytes)."""
        raise NotImplementedError

    # --- bytes in ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse what the socket read; answer the events (see the module's docstring)."""
        events: list[Event] = []
        if self.state is CLOSED:
            return events
        buffer = self._pending + data if self._pending else data
        try:
            used = self._parse(buffer, events)
        except ProtocolError as error:
            self.fail(error.code, error.reason)
            events.append(Failed(error.code, error.reason))
            self._pending = b""
            return events
        if used < len(buffer) or self._pending:
            self._pending = buffer[used:]
        return events

    def receive_eof(self) -> None:
        """The client closed the TCP connection (or it broke): nothing more will be sent."""
        self.state = CLOSED
        self._outbox = self._unsent = None
        self._pong = None
        self.limits.hold(self, 0)

    def _parse(self, buffer: bytes, events: list[Event]) -> int:
        position = 0
        end = len(buffer)
        max_size = self.limits.max_size
        while end - position >= 2 and self.state is not CLOSED:
            header, second = buffer[position], buffer[position + 1]
            opcode = header & 0x0F
            if 2 < opcode < 8 or opcode > PONG:
                raise ProtocolError(PROTOCOL_ERROR, f"invalid opcode {opcode}")
            length = second & 0x7F
            offset = position + 2
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
            if length > max_size or (opcode < 8 and self._fragment is not None and length + len(self._fragment) > max_size):
                raise ProtocolError(MESSAGE_TOO_BIG, "message too big")  # the reason docs/protocol.md gives
            masked = second & 0x80
            if end - offset < length + (4 if masked else 0):
                break  # wait for the rest of this frame
            if masked:
                mask = buffer[offset : offset + 4]
                offset += 4
                payload = self.unmask(mask, buffer[offset : offset + length])
            else:
                payload = buffer[offset : offset + length]
            position = offset + length
            if header & 0x70:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits must be 0")
            self.frames_received += 1
            if opcode & 0x8:
                if not header & 0x80:
                    raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise ProtocolError(PROTOCOL_ERROR, "control frame too long")
                self._control(opcode, payload, events)
            else:
                message = self._data(header & 0x80, opcode, payload)
                if message is not None:
                    events.append(message)
        return position

    def _data(self, final: int, opcode: int, payload: bytes) -> str | bytes | None:
        """One data frame, with the rules of fragments: the whole message once it is whole."""
        fragment = self._fragment
        if opcode == CONTINUATION:
            if fragment is None:
                raise ProtocolError(PROTOCOL_ERROR, "unexpected continuation frame")
            fragment += payload
            if self._decoder is not None:
                self._check_utf8(payload, bool(final))
            if not final:
                return None
            self._fragment = self._decoder = None
            if self._fragment_opcode == TEXT:
                return fragment.decode("utf-8")
            return bytes(fragment)
        if fragment is not None:
            raise ProtocolError(PROTOCOL_ERROR, "expected a continuation frame")
        if not final:
            self._fragment = bytearray(payload)
            self._fragment_opcode = opcode
            if opcode == TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
                self._check_utf8(payload, False)
            return None
        if opcode == TEXT:
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_DATA, "invalid UTF-8 in a text message") from None
        return bytes(payload) if opcode == BINARY else None

    def _check_utf8(self, payload: bytes, final: bool) -> None:
        assert self._decoder is not None
        try:
            self._decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "invalid UTF-8 in a text message") from None

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == PING:
            if self.state is OPEN:
                waiting = self._pong is not None
                self._pong = bytes(payload)  # the last ping's payload: one pong for those read together
                if not waiting and self._outbox is None and self._unsent is None:
                    self.flush_soon()
            events.append(PING_RECEIVED)
        elif opcode == PONG:
            events.append(PONG_RECEIVED)
        else:
            code, reason = parse_close(payload)
            if self._fragment is not None:
                raise ProtocolError(PROTOCOL_ERROR, "incomplete fragmented message")
            self.close_code, self.close_reason = code, reason
            if self.state is OPEN:
                self._queue(control_frame(CLOSE, bytes(payload)))  # answered with the same code
            self.state = CLOSED
            events.append(CloseReceived(code, reason))

    # --- bytes out -----------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue a text message (dropped once the connection is closing)."""
        if self.state is OPEN:
            self._queue(text_frame(text.encode("utf-8")))

    def send_texts(self, texts: list[str]) -> None:
        """Queue several text messages, in order, as one write (dropped once closing)."""
        if self.state is OPEN:
            self._queue(b"".join([text_frame(text.encode("utf-8")) for text in texts]))

    def send_ping(self, payload: bytes = b"") -> None:
        if self.state is OPEN:
            self._queue(control_frame(PING, payload))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the close handshake: the text queued before leaves first, then the close frame;
        the client's close frame (or the transport's patience) ends it."""
        if self.state is OPEN:
            self._queue(control_frame(CLOSE, close_payload(code, reason)))
            self.state = CLOSING

    def fail(self, code: int, reason: str) -> None:
        """End the connection for a broken rule: a close frame (unless one was sent), then no more."""
        if self.state is OPEN:
            self._queue(control_frame(CLOSE, close_payload(code, reason)))
        if self.state is not CLOSED:
            self.close_code, self.close_reason = code, reason
            self.state = CLOSED

    def _queue(self, frame: bytes) -> None:
        if self._pong is not None and frame[0] & 0x0F == CLOSE:
            self._take_pong()  # a pong owed goes before the close frame
        unsent = self._unsent
        if unsent is not None:  # the socket is full: the frame waits behind what it has not taken
            unsent += frame
            held = len(unsent) + self.in_flight
            limits = self.limits
            if held > limits.max_unsent:
                limits.hold(self, 0)
                limits.dropped += 1
                self.abandon(f"it does not read what it is sent ({held} bytes waiting)")
            else:
                limits.hold(self, held)
        elif self._outbox is None:
            self._outbox = [frame]
            self.flush_soon()
        else:
            self._outbox.append(frame)

    def _take_pong(self) -> None:
        pong, self._pong = self._pong, None
        if pong is not None:
            frame = control_frame(PONG, pong)
            if self._unsent is not None:
                self._unsent += frame
            elif self._outbox is None:
                self._outbox = [frame]
            else:
                self._outbox.append(frame)

    def data_to_send(self, limit: int | None = None) -> bytes | bytearray:
        """What to write now: the bytes the socket did not take before, then what was queued
        since, in order (at most ``limit`` bytes; the rest stays). The caller owns them: what
        the socket does not take goes back with :meth:`unsent`."""
        if self._pong is not None:
            self._take_pong()
        unsent = self._unsent
        if unsent is None:
            outbox = self._outbox
            if outbox is None:
                return b""
            self._outbox = None
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            if limit is not None and len(data) > limit:
                self._unsent = bytearray(data[limit:])
                self.limits.hold(self, len(self._unsent) + self.in_flight)
                return data[:limit]
            return data
        if limit is not None and len(unsent) > limit:
            chunk = bytes(unsent[:limit])
            del unsent[:limit]
            self.limits.hold(self, len(unsent) + self.in_flight)
            return chunk
        self._unsent = None
        self.limits.hold(self, self.in_flight)
        return unsent

    def unsent(self, rest: bytes | bytearray) -> None:
        """Bytes the socket did not take (maybe none, when a writer holds them: ``in_flight``):
        they leave first when it has room, and frames queued meanwhile wait behind them."""
        if self.state is CLOSED and not rest and not self.in_flight:
            return
        waiting = self._unsent
        if waiting is None:
            waiting = self._unsent = rest if isinstance(rest, bytearray) else bytearray(rest)
        else:
            waiting[:0] = rest
        if self._outbox is not None:  # queued meanwhile (by another route than flush_soon)
            waiting += b"".join(self._outbox)
            self._outbox = None
        held = len(waiting) + self.in_flight
        if held > self.limits.max_unsent:
            self.limits.hold(self, 0)
            self.limits.dropped += 1
            self.abandon(f"it does not read what it is sent ({held} bytes waiting)")
        else:
            self.limits.hold(self, held)

    @property
    def backlog(self) -> int:
        """Bytes waiting for the socket, and with a writer (0 while the socket keeps up)."""
        return (len(self._unsent) if self._unsent is not None else 0) + self.in_flight

    @property
    def writing_done(self) -> bool:
        """Nothing waits to be written (the transport may end a CLOSED connection's TCP now)."""
        return self._outbox is None and self._unsent is None and self._pong is None and not self.in_flight
