"""The front door: accepting connections, also when the process is out of descriptors.

Tornado's accept loop, when ``accept()`` fails with EMFILE (no descriptor left), logs the
error and returns; the listening socket stays readable, so the loop calls it again at once:
the process spins at 100% of a core and every connection beyond the limit waits in the
backlog with no answer (measured: 486 of 1,500 sockets hung under ``ulimit -n 1024``).

This loop keeps one spare descriptor, as libuv does. Out of descriptors, it frees the
spare, accepts the waiting connection with it, answers ``503 Service Unavailable`` with a
``Retry-After`` header, closes it and takes the spare back; it does so until the backlog is
empty, so nothing is left hanging and nothing spins. Should it be unable to take its spare
back, it stops watching the listening sockets for a moment and tries again.

Each accepted connection over plain TCP then has its first request head read by
handlers/leanws.py: a WebSocket upgrade to a signaling route stays there (the lean
transport); anything else, and every connection over TLS, goes to Tornado's HTTP server as
if Tornado had accepted it (``TCPServer._handle_connection``, a private method checked at
import, or ``HTTPServer.handle_stream`` with the bytes already read).
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, cast

import tornado
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.tcpserver import TCPServer

from handlers.leanws import HeadReader, LeanSocket, PrefixedIOStream, lean_socket

if TYPE_CHECKING:
    from webrtc_server import WebRTCApplication

log = logging.getLogger(__name__)

#: Connections taken per readiness event of a listening socket (then others get a turn).
ACCEPT_BATCH = 128
#: accept() errors that mean "no descriptor or no memory for one now".
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Longest pause before trying again when even the spare descriptor cannot be had.
MAX_PAUSE = 1.0
#: Request heads read in one event-loop iteration (each leads to a handshake, about 150 us):
#: past it, the others wait for the next iteration, and the messages queued meanwhile go first.
HEADS_PER_ITERATION = 300


def check_tornado() -> None:
    """Fail loudly if Tornado's private connection handler changed."""
    method = getattr(TCPServer, "_handle_connection", None)
    found = tuple(inspect.signature(method).parameters) if callable(method) else None
    if found != ("self", "connection", "address"):
        raise ImportError(
            "handlers/frontdoor.py relies on tornado.tcpserver.TCPServer._handle_connection(connection, address), "
            f"but Tornado {tornado.version} has {found or 'no such method'}: "
            "install a Tornado in the range of pip-requirements.txt"
        )


check_tornado()


def busy_response(retry_after: int) -> bytes:
    """The whole answer to a connection taken with the spare descriptor."""
    body = b'{"error": "service-unavailable", "message": "the server is out of file descriptors"}\n'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Retry-After: %d\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s"
    ) % (retry_after, len(body), body)


class FrontDoor:
    """Accepts on ``sockets`` for ``server`` (whose app is a WebRTCApplication); ``refused``
    counts the 503 answers."""

    def __init__(self, server: HTTPServer, sockets: list[socket.socket]) -> None:
        self.server = server
        self.sockets = sockets
        self.app = cast("WebRTCApplication", server.request_callback)
        self.app.front_door = self  # its refusals show in /metrics
        config = self.app.config
        self.busy = busy_response(config.RETRY_AFTER)
        self.header_timeout = config.HEADER_TIMEOUT
        self.xheaders = bool(server.xheaders)
        # Over TLS the bytes cannot be read before Tornado's SSL stream: Tornado serves all.
        self.lean = server.ssl_options is None
        self.paths = frozenset(self.app.reverse_url(name).encode() for name in ("caller_ws", "reciever_ws", "receiver_ws"))
        self.refused = 0
        self._turns = 0
        self._spare: int | None = None
        self._pause = 0.0
        self.loop = cast(BaseAsyncIOLoop, IOLoop.current()).asyncio_loop

    def start(self) -> None:
        self._take_spare()
        for sock in self.sockets:
            sock.setblocking(False)
        self._watch()

    def stop(self) -> None:
        """Stop accepting and close the listening sockets (as Tornado's ``stop()`` does)."""
        self._unwatch()
        for sock in self.sockets:
            sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def take_turn(self) -> bool:
        """May a request head be read in this loop iteration? (HEADS_PER_ITERATION each.)"""
        if self._turns == 0:
            self.loop.call_soon(self._new_iteration)  # runs at the start of the next one
        if self._turns >= HEADS_PER_ITERATION:
            return False
        self._turns += 1
        return True

    def _new_iteration(self) -> None:
        self._turns = 0

    def _watch(self) -> None:
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _unwatch(self) -> None:
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())

    def _take_spare(self) -> bool:
        try:
            self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            return True
        except OSError:
            self._spare = None
            return False

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    self._turn_away(sock)
                else:
                    log.warning("accept() failed: %s", error)
                return
            self._pause = 0.0
            self._handle(connection, address)

    def _handle(self, connection: socket.socket, address: Any) -> None:
        if self.lean:
            HeadReader(self, connection, address, self.header_timeout)
        else:
            self.server._handle_connection(connection, address)

    def lean_socket(self, head: HeadReader) -> LeanSocket | None:
        """The lean transport for this request head, or None: Tornado serves it."""
        return lean_socket(self.app, head, self.paths, self.xheaders)

    def to_tornado(self, connection: socket.socket, address: Any, prefix: bytes) -> None:
        """Tornado's HTTP server serves the connection, from the bytes already read on."""
        server = self.server
        stream = PrefixedIOStream(
            connection, prefix, max_buffer_size=server.max_buffer_size, read_chunk_size=server.read_chunk_size
        )
        server.handle_stream(stream, address)

    def _turn_away(self, sock: socket.socket) -> None:
        """Out of descriptors: answer every waiting connection 503 with the spare one."""
        while self._spare is not None:
            os.close(self._spare)
            self._spare = None
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                connection = None
            except OSError:
                connection = None
            if connection is not None:
                self.refused += 1
                self._answer_busy(connection)
            if not self._take_spare():
                break  # someone else took the descriptor: pause below
            if connection is None:
                return  # the backlog is empty
        # Not even the spare could be had: stop watching for a moment rather than spin.
        self._unwatch()
        self._pause = min(MAX_PAUSE, self._pause * 2 or 0.01)
        log.warning("out of file descriptors: not accepting for %.2f s", self._pause)
        self.loop.call_later(self._pause, self._resume)

    def _resume(self) -> None:
        if self._spare is None and not self._take_spare():
            self._pause = min(MAX_PAUSE, self._pause * 2)
            self.loop.call_later(self._pause, self._resume)
            return
        self._watch()

    def _answer_busy(self, connection: socket.socket) -> None:
        with connection:
            connection.setblocking(False)
            try:
                # Read what the client already sent, so closing sends FIN rather than RST
                # and it gets to read the answer.
                while connection.recv(65536):
                    pass
            except OSError:
                pass
            try:
                connection.send(self.busy)
            except OSError:
                pass


class FrontDoorHTTPServer(HTTPServer):
    """Tornado's HTTP server, whose listening sockets the front door accepts on."""

    front_door: FrontDoor | None = None

    def add_sockets(self, sockets: Any) -> None:
        self.front_door = FrontDoor(self, list(sockets))
        self.front_door.start()

    def stop(self) -> None:
        if self.front_door is not None:
            self.front_door.stop()
        super().stop()
