"""What both transports of the signaling socket do the same, over the one protocol core.

:class:`Transport` is a signaling socket (handlers/signaling.py) over a connection
(handlers/protocol/connection.py): it hands the bytes read to the core and the events to the
rules, writes what a loop iteration queued once, at its end, gives the client
``CLOSE_WAIT`` seconds to answer a close frame, and ends the connection once, whatever ends
it (the client's close, a broken rule, an exception, a full socket, the server). The two
subclasses say only how bytes are read and written: handlers/leanws.py on the raw socket,
handlers/streamws.py on Tornado's IOStream.
"""

from __future__ import annotations

import asyncio
import logging

from handlers.protocol.connection import CLOSED, CLOSING, PING_RECEIVED, PONG_RECEIVED, Connection, Failed
from handlers.protocol.handshake import Request
from handlers.signaling import SignalingSocket, SocketContext

log = logging.getLogger(__name__)

#: Most bytes read from a socket at once.
READ_CHUNK = 65536
#: Seconds a closing socket waits for the client's close frame.
CLOSE_WAIT = 5.0
#: Bytes of its send buffer the kernel keeps for a signaling socket (it doubles the figure):
#: signaling is small, and a client that never reads holds no more kernel memory than this.
SEND_BUFFER = 128 * 1024


class PendingWrites:
    """The sockets that queued frames during this loop iteration: one callback at its end
    writes them all, in the order they queued (one event-loop callback per iteration, not one
    per socket: with thousands of sockets a heartbeat tick or a busy relay queues many)."""

    __slots__ = ("sockets", "loop")

    def __init__(self) -> None:
        self.sockets: list[Transport] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, socket: Transport) -> None:
        if not self.sockets:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.loop.call_soon(self.flush)
        self.sockets.append(socket)

    def flush(self) -> None:
        sockets, self.sockets = self.sockets, []
        for socket in sockets:
            try:
                socket._flush()
            except Exception:  # noqa: BLE001 - one socket's failure is not the others'
                log.exception("writing to a signaling socket failed")
                socket._finish()


class Transport(SignalingSocket, Connection):
    """A signaling socket over the protocol core; subclasses implement :meth:`_write`,
    :meth:`_start_reading` and :meth:`_release`."""

    __slots__ = (*SignalingSocket.SOCKET_ATTRIBUTES, "loop", "_finished", "_close_timer")

    # The router's Session.send and the heartbeat's ping go straight to the core.
    send = Connection.send_text
    send_all = Connection.send_texts
    send_ping = Connection.send_ping
    close = Connection.close

    def __init__(self, context: SocketContext, request: Request) -> None:
        Connection.__init__(self, context.limits)
        self._init_socket(context, request)
        self.loop = asyncio.get_running_loop()
        self._finished = False
        self._close_timer: asyncio.TimerHandle | None = None

    # --- what a subclass implements -------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        """Write ``data`` (all that waits): what the socket does not take goes back with unsent()."""
        raise NotImplementedError

    def _start_reading(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Stop reading and writing, and close the socket (called once)."""
        raise NotImplementedError

    # --- the life of a connection ---------------------------------------------------------

    async def _open(self) -> None:
        """Admit the socket (its rules), then read; a failure ends it."""
        try:
            await self.admit()
        except Exception:
            log.exception("admitting a signaling socket failed")
            self._finish()
            return
        if self.ready:
            self.request = None  # only the handshake needed it: an idle socket is held for hours
        if not self._finished:
            self._start_reading()

    def _received(self, data: bytes) -> None:
        """Bytes the socket read: the core's events, in order, to the rules."""
        try:
            before = self.frames_received
            events = self.receive_data(data)
            for event in events:
                if type(event) is str or type(event) is bytes:  # the usual case first
                    self.received(event)
                elif event is PING_RECEIVED or event is PONG_RECEIVED:
                    self.heard_from()
                elif isinstance(event, Failed):
                    log.info("closing %r (session %s): %s", self.id, self.session_id, event.reason)
            fragments = self.frames_received - before - len(events)
            if fragments > 0:
                self.charge(fragments)
        except Exception:  # noqa: BLE001 - never leave a connection half-handled
            log.exception("handling a signaling socket's frames failed")
            self._finish()
            return
        if self.state is CLOSED and not self._finished:
            self._flush()  # the close frame we answered, then the end

    def _eof(self) -> None:
        """The client ended the TCP connection (or it broke)."""
        self._finish()

    # --- writing --------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Connection's hook: the outbox has its first frame; it leaves at the end of this loop
        iteration, with every frame queued meanwhile, in one write."""
        self.context.writes.add(self)

    def _flush(self) -> None:
        if self._finished:
            return
        data = self.data_to_send()
        if data:
            self._write(data)
        self._after_write()

    def _after_write(self) -> None:
        """Once written: a closed connection ends; a closing one waits for the client's close."""
        if self._finished:
            return
        if self.state is CLOSED:
            if self.writing_done:
                self._finish()
        elif self.state is CLOSING and self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_WAIT, self._finish)

    def abandon(self, why: str) -> None:
        """Connection's hook: drop the connection now (it holds too many unsent bytes)."""
        log.info("dropping %r (session %s): %s", self.id, self.session_id, why)
        self.context.stats.closed["unsent-limit"] += 1
        self._finish()

    # --- the end --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self._finished and self.state is not CLOSED

    def _finish(self) -> None:
        """The connection is over: release the socket and leave the registry (once)."""
        if self._finished:
            return
        self._finished = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.receive_eof()
        self._release()
        self.closed()
