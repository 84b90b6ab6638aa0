"""The signaling socket over Tornado's HTTP server: connections over TLS, a socket asked for on
a connection that served a page first, and every upgrade the lean path hands over.

:class:`SignalingHandler` is a plain ``RequestHandler``: it checks the handshake with the
same checks as the lean path (handlers/protocol/handshake.py), answers 101 and then leaves
Tornado's HTTP processing through the door Tornado documents for this,
``RequestHandler.detach()``. What follows is :class:`StreamSocket`: the protocol core over
the IOStream Tornado handed back (its TLS included), read with ``read_bytes(partial=True)``
and written with ``write()``, one write in flight at a time, at most ``WRITE_CHUNK`` bytes:
the rest waits in the core, counted against the same limits as on the lean path. No private
name of Tornado is used here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from tornado.iostream import IOStream, StreamClosedError
from tornado.web import RequestHandler

from handlers import speedups
from handlers.protocol.handshake import HandshakeError, Headers, Request, check_upgrade
from handlers.rooms import RoomRules
from handlers.signaling import SocketContext
from handlers.transport import READ_CHUNK, SEND_BUFFER, Transport

if TYPE_CHECKING:
    from handlers.app import WebRTCApplication

log = logging.getLogger(__name__)

#: Most bytes handed to the IOStream at once (the rest waits in the core, counted).
WRITE_CHUNK = 65536


class SignalingHandler(RequestHandler):
    """The handshake on Tornado's side; then the socket is a StreamSocket."""

    application: WebRTCApplication

    def socket_kind(self) -> tuple[type[StreamSocket], SocketContext]:
        return StreamSocket, self.application.context

    def get(self) -> None:
        kind, context = self.socket_kind()
        tornado_request = self.request
        request = Request(
            "GET",
            tornado_request.uri or "",
            Headers(tornado_request.headers.get_all()),
            tornado_request.remote_ip or "",
        )
        try:
            accept = check_upgrade(request, context.config.ALLOWED_ORIGINS)
        except HandshakeError as refused:
            if refused.status == 403:
                context.stats.rejected["origin"] += 1
                log.info("signaling socket refused: origin not allowed")
            self.set_status(refused.status)
            for name, value in refused.headers.items():
                self.set_header(name, value)
            self.finish(refused.message)
            return
        self.set_status(101)
        self.clear_header("Content-Type")
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.set_header("Sec-WebSocket-Accept", accept)
        self.finish()
        kind(context, self.detach(), request).start()


class StreamSocket(Transport):
    """A signaling socket over a Tornado IOStream, with the protocol core."""

    __slots__ = ("stream",)

    unmask = speedups.unmask

    def __init__(self, context: SocketContext, stream: IOStream, request: Request) -> None:
        super().__init__(context, request)
        self.stream = stream

    def start(self) -> None:
        self.stream.set_nodelay(True)
        try:
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass
        self.loop.create_task(self._open())

    def _start_reading(self) -> None:
        try:
            future = self.stream.read_bytes(READ_CHUNK, partial=True)
        except StreamClosedError:
            return self._eof()
        asyncio.ensure_future(future).add_done_callback(self._read_done)

    def _read_done(self, future: asyncio.Future[bytes]) -> None:
        try:
            chunk = future.result()
        except StreamClosedError:
            return self._eof()
        except Exception:  # noqa: BLE001 - never leave a connection half-handled
            log.exception("reading a signaling socket failed")
            return self._finish()
        self._received(chunk)
        if not self._finished:
            self._start_reading()

    def _flush(self) -> None:
        if self._finished or self.in_flight:
            return  # the write in flight flushes again when it is done
        data = self.data_to_send(WRITE_CHUNK)
        if not data:
            self._after_write()
            return
        self._write(data)

    def _write(self, data: bytes | bytearray) -> None:
        self.in_flight = len(data)
        self.unsent(b"")  # frames queued meanwhile wait behind these bytes, counted
        try:
            written = self.stream.write(bytes(data))
        except StreamClosedError:
            return self._finish()
        asyncio.ensure_future(written).add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self.in_flight = 0
        if future.exception() is not None:
            return self._finish()
        self._flush()

    def _release(self) -> None:
        self.stream.close()


class StreamRoomSocket(RoomRules, StreamSocket):
    """A room socket over a Tornado IOStream."""

    __slots__ = RoomRules.ROOM_ATTRIBUTES


class RoomHandler(SignalingHandler):
    """``/wsroom`` on Tornado's side."""

    def socket_kind(self) -> tuple[type[StreamSocket], SocketContext]:
        return StreamRoomSocket, self.application.room_context
