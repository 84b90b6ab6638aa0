"""The lean transport of the signaling socket: its handshake in front of Tornado's HTTP
server, then frames straight over the socket.

Why: opening a socket through Tornado cost 430 µs of CPU, 85% of it Tornado's
general-purpose HTTP server (request objects, routing, a handler with a dozen attributes),
and an idle socket held about 12 KiB in Tornado's per-connection objects
(docs/benchmarks.md). Here a fresh connection's first request head is read and parsed by
httptools (the parser of uvloop and uvicorn); a well-formed WebSocket upgrade to a
signaling route gets its ``101`` at once and becomes a :class:`LeanSocket`: one slotted
object over the raw socket, reading with one readiness callback and writing what a loop
iteration queued in one ``send``.

Everything else goes to Tornado unchanged, with the bytes already read handed over in
front of the stream (:class:`PrefixedIOStream`): pages, the ICE endpoint, the operators'
endpoints, and every upgrade the lean path does not take (a wrong method, version or
origin, odd headers, undecodable arguments), which Tornado answers as it always did.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Any

import httptools
from tornado.httputil import HTTPHeaders, parse_cookie, parse_qs_bytes
from tornado.iostream import IOStream
from tornado.netutil import is_valid_ip
from tornado.web import MissingArgumentError

from handlers.frames import CLOSE, PING, PONG, TOO_BIG, TOO_BIG_CODE, FrameReader, close_payload, control_frame, text_frame
from handlers.signaling import SignalingSocket, origin_allowed

if TYPE_CHECKING:
    from webrtc_server import WebRTCApplication

log = logging.getLogger(__name__)

#: Most bytes read from a socket at once.
READ_CHUNK = 65536
#: A request head longer than this goes to Tornado (which refuses it).
MAX_HEAD = 16384
#: Bytes a client may leave unread (a slow or stuck reader) before it is dropped.
MAX_UNSENT = 4 * 1024 * 1024
#: Seconds a closing socket waits for the client's close frame.
CLOSE_WAIT = 5.0
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Tornado's argument clean-up: control characters other than \t \n \r become spaces.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")
_NO_DEFAULT: Any = object()


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


class LeanRequest:
    """What a ``has_socket_pass`` hook may read of the handshake (as Tornado's request)."""

    __slots__ = ("method", "uri", "path", "query", "headers", "remote_ip", "query_arguments", "started")

    def __init__(self, uri: str, headers: HTTPHeaders, remote_ip: str, query_arguments: dict[str, list[bytes]]) -> None:
        self.method = "GET"
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.headers = headers
        self.remote_ip = remote_ip
        self.query_arguments = query_arguments
        self.started = time.monotonic()

    @property
    def arguments(self) -> dict[str, list[bytes]]:
        return self.query_arguments

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    def request_time(self) -> float:
        return time.monotonic() - self.started


class HeadReader:
    """Reads the first request head of a fresh connection, then hands the connection on."""

    __slots__ = ("door", "sock", "address", "buffer", "parser", "method", "url", "headers", "complete", "timer")

    def __init__(self, door: Any, sock: socket.socket, address: Any, timeout: float) -> None:
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
            self._hand_over(None)  # Tornado answers 400
            return True
        if self.complete:
            self._hand_over(self.door.lean_socket(self))
        elif len(self.buffer) > MAX_HEAD:
            self._hand_over(None)
        else:
            return False
        return True

    def _stop(self) -> None:
        self.door.loop.remove_reader(self.sock.fileno())
        self.timer.cancel()
        # The parser holds this reader (its callbacks) and this reader the parser: without
        # this, every connection left a cycle for the garbage collector, whose passes over a
        # reconnect storm's garbage stalled the loop for up to 250 ms.
        self.parser = None

    def _hand_over(self, lean: LeanSocket | None) -> None:
        self._stop()
        if lean is None:
            self.door.to_tornado(self.sock, self.address, bytes(self.buffer))
        else:
            lean.start()

    def _drop(self) -> None:
        """Headers not complete in time (a slow client), or the client left."""
        self._stop()
        self.sock.close()


def lean_socket(app: WebRTCApplication, head: HeadReader, paths: frozenset[bytes], xheaders: bool) -> LeanSocket | None:
    """A LeanSocket for a well-formed WebSocket upgrade to a signaling route, or None for
    anything else (Tornado serves it, and answers the errors)."""
    path, _, query = head.url.partition(b"?")
    if head.method != b"GET" or path not in paths or not head.buffer.endswith(b"\r\n\r\n"):
        return None
    headers = HTTPHeaders()
    for name, value in head.headers:
        headers.add(name.decode("latin1"), value.decode("latin1"))
    if (
        headers.get("Upgrade", "").lower() != "websocket"
        or "upgrade" not in (token.strip() for token in headers.get("Connection", "").lower().split(","))
        or headers.get("Sec-WebSocket-Version") != "13"
        or not headers.get("Sec-WebSocket-Key")
        or "Content-Length" in headers
        or "Transfer-Encoding" in headers
    ):
        return None
    origin = headers.get("Origin") or headers.get("Sec-Websocket-Origin")
    if origin and not origin_allowed(origin, headers.get("Host"), app.config.ALLOWED_ORIGINS):
        return None  # Tornado refuses it with 403, and counts it
    try:
        uri = head.url.decode("ascii")
        arguments = parse_qs_bytes(query.decode("latin1"), keep_blank_values=True)
        for values in arguments.values():
            for value in values:
                value.decode("utf-8")
    except UnicodeDecodeError:
        return None  # Tornado answers 400
    remote_ip = head.address[0] if isinstance(head.address, tuple) else "127.0.0.1"
    if xheaders:
        remote_ip = forwarded_ip(headers, remote_ip)
    return LeanSocket(app, head.sock, LeanRequest(uri, headers, remote_ip, arguments))


def forwarded_ip(headers: HTTPHeaders, remote_ip: str) -> str:
    """The client's address behind a proxy, as Tornado's ``xheaders`` reads it."""
    ip = headers.get("X-Forwarded-For", remote_ip).split(",")[-1].strip()
    ip = headers.get("X-Real-Ip", ip)
    return ip if is_valid_ip(ip) else remote_ip


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()).decode("ascii")


class LeanSocket(SignalingSocket, FrameReader):
    """A signaling socket over a raw socket: the frames of handlers/frames.py, writes
    gathered per loop iteration, the close handshake and pings as RFC 6455 says."""

    __slots__ = (
        *SignalingSocket.SOCKET_ATTRIBUTES,
        *FrameReader.FRAME_ATTRIBUTES,
        "sock",
        "fd",
        "loop",
        "request",
        "client_terminated",
        "server_terminated",
        "close_code",
        "close_reason",
        "_pending",
        "_outbox",
        "_unsent",
        "_finished",
        "_close_timer",
    )

    def __init__(self, app: WebRTCApplication, sock: socket.socket, request: LeanRequest) -> None:
        self._init_socket()
        self.app = app
        self.sock = sock
        self.fd = sock.fileno()
        # Writes are gathered per loop iteration already: Nagle's algorithm would only hold a
        # frame back until the previous one is acknowledged (as Tornado's websocket, no delay).
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket in a test): nothing to delay
        self.loop = asyncio.get_running_loop()
        self.request: LeanRequest | None = request
        self.client_terminated = self.server_terminated = self._finished = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._fragment = None
        self._fragment_opcode = 0
        self._pending = b""
        self._outbox: list[bytes] | None = None
        self._unsent: bytearray | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # --- the handshake ----------------------------------------------------------------

    def start(self) -> None:
        """Answer 101, then check and join the socket; read once that is decided."""
        request = self.request
        assert request is not None
        key = accept_key(request.headers["Sec-WebSocket-Key"])
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % key.encode("ascii")
        )
        self.app.log_access(101, "GET", request.uri, request.remote_ip, request.request_time())
        asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        try:
            await self.admit()
        except Exception:
            log.exception("admitting a signaling socket failed")
            self._abort()
            return
        if self.ready:
            self.request = None  # only the handshake needed it: an idle socket is held for hours
        if not self._finished:
            self.loop.add_reader(self.fd, self._readable)

    # --- what has_socket_pass hooks may call (Tornado's names) --------------------------

    def get_query_argument(self, name: str, default: Any = _NO_DEFAULT, strip: bool = True) -> str | None:
        values = self.request.query_arguments.get(name) if self.request is not None else None
        if not values:
            if default is _NO_DEFAULT:
                raise MissingArgumentError(name)
            return default
        value = _CONTROL_CHARS.sub(" ", values[-1].decode("utf-8"))
        return value.strip() if strip else value

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        if self.request is None or "Cookie" not in self.request.headers:
            return default
        return parse_cookie(self.request.headers["Cookie"]).get(name, default)

    # --- SignalingSocket's transport ------------------------------------------------------

    def query_argument(self, name: str) -> str:
        return self.get_query_argument(name, "") or ""

    @property
    def remote_ip(self) -> str | None:
        return self.request.remote_ip if self.request is not None else None

    @property
    def connected(self) -> bool:
        return not (self._finished or self.client_terminated)

    def write_text(self, text: str) -> None:
        if self.server_terminated:
            return
        frame = text_frame(text.encode("utf-8"))
        if self._outbox is None:
            self._outbox = [frame]
            self.loop.call_soon(self._flush)
        else:
            self._outbox.append(frame)

    def send_ping(self) -> None:
        if not self.server_terminated:
            self._control(PING)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the close handshake (the queued text leaves first), or finish it."""
        if self.server_terminated or self._finished:
            return
        self.server_terminated = True
        self._control(CLOSE, close_payload(code, reason))
        if self.client_terminated:
            self._finish_when_sent()
        else:
            self._close_timer = self.loop.call_later(CLOSE_WAIT, self._abort)

    # --- reading ------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._finish()
        if not chunk:
            return self._finish()  # the client closed the connection
        data = self._pending + chunk if self._pending else chunk
        try:
            consumed = self._parse(data, self.app.config.MAX_MESSAGE_SIZE)
        except ValueError:
            return self._abort()  # e.g. a close reason that is not UTF-8, as Tornado does
        except Exception:
            log.exception("handling a websocket frame failed")
            return self._abort()
        if consumed < len(data) or self._pending:
            self._pending = data[consumed:]

    def _abort(self) -> None:
        self.client_terminated = self.server_terminated = True
        self._finish()

    def _too_big(self) -> None:
        self.close(TOO_BIG_CODE, TOO_BIG)
        self._abort()

    def _on_message(self, message: str | bytes) -> bool:
        try:
            self.received(message)
        except Exception:
            log.exception("uncaught exception in on_message")
            self._abort()
        return not self._finished

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == CLOSE:
            self.client_terminated = True
            if len(payload) >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
                self.close_reason = payload[2:].decode("utf-8")  # ValueError: dropped
            # Answer with the same code (RFC 6455 5.5.1), then close the connection.
            self.close(self.close_code)
            self._finish_when_sent()
        elif opcode == PING:
            self._control(PONG, payload)
        elif opcode == PONG:
            self.heard_from()
        else:
            self._abort()  # an unknown opcode, as Tornado does

    # --- writing ------------------------------------------------------------------------

    def _control(self, opcode: int, payload: bytes = b"") -> None:
        # After the text already queued: a close must not overtake the messages before it.
        self._flush()
        self._write(control_frame(opcode, payload))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox and not self._finished:
            self._write(outbox[0] if len(outbox) == 1 else b"".join(outbox))

    def _write(self, data: bytes) -> None:
        if self._finished:
            return
        if self._unsent is not None:  # the socket is full: the rest waits its turn
            self._unsent += data
            if len(self._unsent) > MAX_UNSENT:
                log.info("dropping %r (session %s): it does not read what it is sent", self.id, self.session_id)
                self._abort()
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return self._finish()
        if sent < len(data):
            self._unsent = bytearray(data[sent:])
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        unsent = self._unsent
        assert unsent is not None
        try:
            sent = self.sock.send(unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._finish()
        del unsent[:sent]
        if not unsent:
            self._unsent = None
            self.loop.remove_writer(self.fd)
            if self.server_terminated and self.client_terminated:
                self._finish()

    def _finish_when_sent(self) -> None:
        if self._unsent is None:
            self._finish()

    def _finish(self) -> None:
        """The connection is over: release the socket and leave the registry."""
        if self._finished:
            return
        self._finished = True
        self.client_terminated = self.server_terminated = True
        self.loop.remove_reader(self.fd)
        if self._unsent is not None:
            self.loop.remove_writer(self.fd)
            self._unsent = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._outbox = None
        self.sock.close()
        self.closed()
