"""The lean transport of the signaling socket: its handshake in front of Tornado's HTTP
server, then the protocol core (handlers/protocol/) straight over the raw socket.

Why: opening a socket through Tornado cost 430 µs of CPU, 85% of it Tornado's
general-purpose HTTP server, and an idle socket held about 12 KiB in Tornado's
per-connection objects (docs/benchmarks.md). Here a fresh connection's first request head is
read and parsed by httptools (the parser of uvloop and uvicorn); a well-formed WebSocket
upgrade to a signaling route (handlers/protocol/handshake.py says what that is) gets its
``101`` at once and becomes a :class:`LeanSocket`: one slotted object over the raw socket,
reading with one readiness callback and writing what a loop iteration queued in one ``send``.
Bytes that came after the head in the same read are the socket's first frames.

Everything else goes to Tornado unchanged, with the bytes already read handed over in front
of the stream (:class:`PrefixedIOStream`): pages, the ICE endpoint, the operators' endpoints,
and every upgrade the handshake's checks refuse, which Tornado's side (handlers/streamws.py)
answers with the same checks. A head longer than ``MAX_HEAD`` is answered 431 here.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import httptools
from tornado.iostream import IOStream

from handlers import speedups
from handlers.protocol.handshake import HandshakeError, Headers, Request, check_upgrade, forwarded_ip, switching_protocols
from handlers.rooms import RoomRules
from handlers.signaling import SocketContext
from handlers.transport import READ_CHUNK, SEND_BUFFER, Transport

if TYPE_CHECKING:
    from handlers.frontdoor import FrontDoor

log = logging.getLogger(__name__)

#: Longest request head read in front of Tornado (and by Tornado, for TLS): 431 past it.
MAX_HEAD = 16384


def head_too_long() -> bytes:
    body = b'{"error": "request-header-fields-too-large", "message": "the request head is too long"}\n'
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
    ) % (len(body), body)


HEAD_TOO_LONG = head_too_long()


class PrefixedIOStream(IOStream):
    """An IOStream whose first reads answer bytes already taken off the socket."""

    def __init__(self, sock: socket.socket, prefix: bytes, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._prefix = prefix

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if self._prefix:
            size = min(len(buf), len(self._prefix))
            buf[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        return super().read_from_fd(buf)


class HeadReader:
    """Reads the first request head of a fresh connection, then hands the connection on."""

    __slots__ = ("door", "sock", "address", "buffer", "parser", "method", "url", "headers", "complete", "timer", "accepted")

    def __init__(self, door: FrontDoor, sock: socket.socket, address: Any, timeout: float) -> None:
        self.door = door
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        loop = door.loop
        self.accepted = loop.time()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)
        self.timer = loop.call_later(timeout, self._expire)

    # httptools' callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True
        if self.parser is not None:
            self.method = self.parser.get_method()

    def _readable(self) -> None:
        # This loop iteration may have handled its share of handshakes: then this one waits
        # (its data stays in the socket, which is ready again at the next iteration), so that
        # a reconnect storm cannot stall the messages in between.
        if self.door.take_turn():
            self._read()

    def idle(self) -> bool:
        """True if the client has sent nothing yet."""
        if self.buffer:
            return False
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)  # b"": it left
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return True

    def _expire(self) -> None:
        """HEADER_TIMEOUT: a client whose head is complete but waited for its turn is served
        now; one whose head is still incomplete is slow (or gone), and is dropped."""
        if not self._read():
            self._drop()

    def _read(self) -> bool:
        """Read what the client sent; answers True once the connection is handed on or dropped."""
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._drop()
            return True
        if not data or self.parser is None:
            self._drop()  # the client left
            return True
        self.buffer += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the head of an upgrade request is complete
        except httptools.HttpParserError:
            self._hand_over()  # Tornado answers 400
            return True
        end = self.buffer.find(b"\r\n\r\n")
        if (end < 0 and len(self.buffer) > MAX_HEAD) or end + 4 > MAX_HEAD:
            self._refuse(HEAD_TOO_LONG)
        elif self.complete:
            self._hand_over()
        else:
            return False
        return True

    def _stop(self) -> None:
        self.door.loop.remove_reader(self.sock.fileno())
        self.timer.cancel()
        self.door.head_done(self)
        # The parser holds this reader (its callbacks) and this reader the parser: without
        # this, every connection left a cycle for the garbage collector, whose passes over a
        # reconnect storm's garbage stalled the loop for up to 250 ms.
        self.parser = None

    def _hand_over(self) -> None:
        """The lean socket, if this is an upgrade it takes; else Tornado, from the bytes read on."""
        self._stop()
        try:
            lean = self.door.lean_socket(self)
        except Exception:  # noqa: BLE001 - whatever the request, the connection is answered or closed
            log.exception("reading a request head failed")
            self.sock.close()
            return
        if lean is None:
            self.door.to_tornado(self.sock, self.address, bytes(self.buffer))

    def _refuse(self, answer: bytes) -> None:
        self._stop()
        try:
            self.sock.send(answer)
        except OSError:
            pass
        self.sock.close()

    def _drop(self) -> None:
        """Headers not complete in time (a slow client), or the client left."""
        self._stop()
        self.sock.close()


#: The socket routes the lean path serves: path -> the socket's class and its context.
Routes = dict[bytes, tuple["type[LeanSocket]", SocketContext]]


def lean_socket(head: HeadReader, routes: Routes, xheaders: bool) -> LeanSocket | None:
    """Start a LeanSocket (or LeanRoomSocket) for a well-formed WebSocket upgrade to a socket
    route, or answer None for anything else (Tornado serves it, and answers the errors)."""
    path, _, _ = head.url.partition(b"?")
    route = routes.get(path) if head.method == b"GET" else None
    if route is None:
        return None
    kind, context = route
    headers = Headers((name.decode("latin1"), value.decode("latin1")) for name, value in head.headers)
    if "Content-Length" in headers or "Transfer-Encoding" in headers:
        return None
    try:
        uri = head.url.decode("ascii")
    except UnicodeDecodeError:
        return None  # Tornado answers 400
    remote_ip = head.address[0] if isinstance(head.address, tuple) else "127.0.0.1"
    if xheaders:
        remote_ip = forwarded_ip(headers, remote_ip)
    request = Request("GET", uri, headers, remote_ip)
    try:
        accept = check_upgrade(request, context.config.ALLOWED_ORIGINS)
    except HandshakeError:
        return None  # Tornado's side answers it with the same checks (and counts a refused origin)
    for values in request.query_arguments.values():
        for value in values:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return None  # as Tornado always did: accepted there, then closed with 4400
    leftover = bytes(head.buffer[head.buffer.index(b"\r\n\r\n") + 4 :])
    lean = kind(context, head.sock, request, leftover)
    lean.start(accept)
    return lean


class LeanSocket(Transport):
    """A signaling socket over a raw socket, with the protocol core."""

    __slots__ = ("sock", "fd")

    unmask = speedups.unmask

    def __init__(self, context: SocketContext, sock: socket.socket, request: Request, leftover: bytes = b"") -> None:
        super().__init__(context, request)
        self.sock = sock
        self.fd = sock.fileno()
        # Writes are gathered per loop iteration already: Nagle's algorithm would only hold a
        # frame back until the previous one is acknowledged (as Tornado's websocket, no delay).
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass  # not TCP (a Unix socket in a test): nothing to delay
        # Frames that came with the head: the core reads them first, once the socket is admitted.
        self._pending = leftover

    def start(self, accept: str) -> None:
        """Answer 101, then check and join the socket; read once that is decided."""
        request = self.request
        assert request is not None
        self._write(switching_protocols(accept))
        self.context.log_access(101, "GET", request.uri, request.remote_ip, request.request_time())
        self.loop.create_task(self._open())

    def _start_reading(self) -> None:
        self.loop.add_reader(self.fd, self._readable)
        if self._pending:
            self._received(b"")

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._eof()
        if not chunk:
            return self._eof()  # the client closed the connection
        self._received(chunk)

    def _write(self, data: bytes | bytearray) -> None:
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return self._finish()
        if sent < len(data):
            if isinstance(data, bytearray):
                del data[:sent]
                self.unsent(data)
            else:
                self.unsent(data[sent:])
            if not self._finished:
                self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        data = self.data_to_send()
        if data:
            self._write(data)
            if self._finished or self.backlog:
                return  # still waiting for room
        self.loop.remove_writer(self.fd)
        self._after_write()

    def _release(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()


class LeanRoomSocket(RoomRules, LeanSocket):
    """A room socket over a raw socket."""

    __slots__ = RoomRules.ROOM_ATTRIBUTES
