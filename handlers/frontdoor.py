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
import itertools
import logging
import math
import os
import socket
from typing import Any, cast

import tornado
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.tcpserver import TCPServer

from handlers.app import SIGNALING_ROUTES, WebRTCApplication
from handlers.leanws import HeadReader, LeanRoomSocket, LeanSocket, PrefixedIOStream, Routes, lean_socket

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
#: Seconds a connection may send nothing at all before, at the cap of heads being read, it is
#: dropped to make room for a new one (a browser sends its head at once).
IDLE_HEAD = 1.0


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
    """Accepts on ``sockets`` for ``server``, whose application is a WebRTCApplication; its
    refusals are counted in the application's Stats (``turned_away``)."""

    def __init__(self, server: HTTPServer, sockets: list[socket.socket]) -> None:
        self.server = server
        self.sockets = sockets
        app = server.request_callback
        assert isinstance(app, WebRTCApplication)
        self.context = app.context
        self.stats = app.stats
        config = app.config
        self.busy = busy_response(config.RETRY_AFTER)
        self.header_timeout = config.HEADER_TIMEOUT
        self.xheaders = bool(server.xheaders)
        # Over TLS the bytes cannot be read before Tornado's SSL stream: Tornado serves all.
        self.lean = server.ssl_options is None
        calls, rooms = (LeanSocket, app.context), (LeanRoomSocket, app.room_context)
        self.routes: Routes = {app.reverse_url(name).encode(): calls for name in SIGNALING_ROUTES}
        self.routes[app.reverse_url("room_ws").encode()] = rooms
        # Connections whose first head is still being read, in all and by address: each holds
        # a descriptor, so an idle client must not be able to take them all cheaply. Behind a
        # proxy (XHEADERS) every connection comes from the proxy: then only the total counts.
        # The door never stops accepting (a full backlog drops connections in the kernel, which
        # clients see as resets): when the heads reach MAX_PENDING_HEADS, or accept() runs out
        # of descriptors, a head that has sent nothing for IDLE_HEAD seconds is dropped for
        # each newcomer, oldest first. An address holding
        # MAX_PENDING_HEADS_PER_ADDRESS heads whose oldest has sent nothing for half of
        # HEADER_TIMEOUT (no browser waits that long), and none of whose heads arrived in that
        # time, gets 503 for the next; a burst of clients that send their heads (a restart's
        # reconnections from behind one NAT, even from a client too busy to send them at once)
        # is never refused.
        self.max_heads = config.MAX_PENDING_HEADS
        self.max_heads_per_address = 0 if self.xheaders else config.MAX_PENDING_HEADS_PER_ADDRESS
        self.address_patience = config.HEADER_TIMEOUT / 2
        #: The heads being read, oldest first.
        self.heads: dict[HeadReader, None] = {}
        self.heads_by_address: dict[str, dict[HeadReader, None]] = {}  # oldest first
        #: When a head last arrived from an address that holds heads (it is making progress).
        self.heard_from: dict[str, float] = {}
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
        some_idle = True  # until a look finds none: heads do not age within one callback
        for _ in range(ACCEPT_BATCH):
            if some_idle and len(self.heads) >= self.max_heads:
                some_idle = self._drop_an_idle_head()  # it makes room for the newcomer
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    if some_idle and self._drop_an_idle_head():
                        continue  # its descriptor is free now: take the newcomer
                    self._turn_away(sock)
                else:
                    log.warning("accept() failed: %s", error)
                return
            self._pause = 0.0
            self._handle(connection, address)

    def _handle(self, connection: socket.socket, address: Any) -> None:
        if not self.lean:
            self.server._handle_connection(connection, address)
            return
        host = address[0] if isinstance(address, tuple) else ""
        own = self.heads_by_address.get(host)
        if own is not None and self.max_heads_per_address and len(own) >= self.max_heads_per_address:
            oldest = next(iter(own))
            now = self.loop.time()
            patience = self.address_patience
            if now - oldest.accepted >= patience and now - self.heard_from.get(host, -math.inf) >= patience and oldest.idle():
                self.stats.turned_away += 1
                self.stats.busy_address += 1
                self._answer_busy(connection)  # this address holds heads it does not send: later
                return
        head = HeadReader(self, connection, address, self.header_timeout)
        self.heads[head] = None
        self.heads_by_address.setdefault(host, {})[head] = None

    def _drop_an_idle_head(self) -> bool:
        """Heads or descriptors scarce, a newcomer waiting: drop the oldest head whose client
        has sent nothing for IDLE_HEAD seconds or more (slow or idle), and answer whether there
        was one. One for one: every head dropped may be a client that comes back."""
        now = self.loop.time()
        for head in itertools.islice(self.heads, ACCEPT_BATCH):  # the oldest, a batch at most per look
            if now - head.accepted < IDLE_HEAD:
                break
            if head.idle():
                self.stats.idle_heads_dropped += 1
                head._drop()
                return True
        return False

    def head_done(self, head: HeadReader) -> None:
        """A head has been read (or given up on): its place is free."""
        self.heads.pop(head, None)
        address = head.address
        host = address[0] if isinstance(address, tuple) else ""
        own = self.heads_by_address.get(host)
        if own is not None:
            own.pop(head, None)
            if not own:
                del self.heads_by_address[host]
                self.heard_from.pop(host, None)
            elif head.buffer:
                self.heard_from[host] = self.loop.time()

    def lean_socket(self, head: HeadReader) -> LeanSocket | None:
        """The lean transport for this request head, or None: Tornado serves it."""
        return lean_socket(head, self.routes, self.xheaders)

    def to_tornado(self, connection: socket.socket, address: Any, prefix: bytes) -> None:
        """Tornado's HTTP server serves the connection, from the bytes already read on."""
        server = self.server
        stream = PrefixedIOStream(
            connection, prefix, max_buffer_size=server.max_buffer_size, read_chunk_size=server.read_chunk_size
        )
        server.handle_stream(stream, address)

    def _turn_away(self, sock: socket.socket) -> None:
        """Out of descriptors: answer waiting connections 503 with the spare one, ACCEPT_BATCH
        at most per call (the listening socket stays readable: the rest get their turn after
        the other callbacks of this loop iteration)."""
        for _ in range(ACCEPT_BATCH):
            if self._spare is None:
                break
            os.close(self._spare)
            self._spare = None
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                connection = None
            except OSError:
                connection = None
            if connection is not None:
                self.stats.turned_away += 1
                self._answer_busy(connection)
            if not self._take_spare():
                break  # someone else took the descriptor: pause below
            if connection is None:
                return  # the backlog is empty
        else:
            return  # this call's share is done: the listening socket is still readable
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
