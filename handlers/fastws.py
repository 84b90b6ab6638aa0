"""Tornado's websocket protocol with a leaner path for the frames a relay moves.

Why: profiled under relay load (docs/benchmarks.md), Tornado 6's protocol spends most of a
relayed message's CPU on machinery rather than work: three ``read_bytes`` Futures per
incoming frame (header, mask, payload), a Task wrapped around every ``write_message``, and
one ``send`` system call per outgoing frame; every Future also asks the kernel for the pid
(``getpid``) and feeds the garbage collector.

What changes, and only that:

* Receiving: read whatever the socket has (up to ``READ_CHUNK`` bytes, one Future) and parse
  every complete frame in it synchronously, with the frame reader the lean transport uses
  too (handlers/frames.py: Tornado's validation rules).
* Sending text: frames are appended to a per-socket list and written together once per
  event-loop iteration, straight to the socket when nothing is queued before them (plain
  TCP only; TLS streams go through Tornado's ``IOStream.write`` as before). No Future, no
  Task. Control frames (ping, pong, close) still go through Tornado, after the queued data.

The handshake, the close handshake, pings, and every public ``WebSocketHandler`` method are
Tornado's own.

Tornado's private names this module depends on (a subclass of a private protocol is the
price of the speed; :func:`check_tornado` verifies them at import, and CI runs the websocket
suites on the lowest and the highest Tornado that pip-requirements.txt allows):

* ``WebSocketProtocol13._receive_frame_loop()``: overridden; Tornado awaits it once the
  handshake is done, and it is where reading starts;
* ``WebSocketProtocol13._write_frame(fin, opcode, data, flags)``: overridden, so control
  frames leave after the text frames queued before them;
* ``WebSocketProtocol13._handle_message(opcode, data)``: called for close, ping and pong
  frames, which Tornado answers itself;
* ``WebSocketProtocol._abort()``: called to drop a connection that broke the protocol;
* ``tornado.util._websocket_mask(mask, data)``: Tornado's C unmasking (it falls back to
  pure Python when the speedups are not built), imported by handlers/frames.py.

Everything else it uses is public: ``stream``, ``params.max_message_size``,
``client_terminated``, ``close_code``/``close_reason``, ``is_closing()``, ``close()`` and the
handler's ``on_message``/``on_ws_connection_close``. Fragment state is this module's own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, cast

import tornado
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketProtocol13

from handlers.frames import TOO_BIG, TOO_BIG_CODE, FrameReader, text_frame

log = logging.getLogger(__name__)

#: Most bytes read from a socket at once.
READ_CHUNK = 65536


#: The private methods this module overrides or calls, with their parameters (see above).
TORNADO_PRIVATE_METHODS = {
    "_receive_frame_loop": ("self",),
    "_write_frame": ("self", "fin", "opcode", "data", "flags"),
    "_handle_message": ("self", "opcode", "data"),
    "_abort": ("self",),
}


def check_tornado() -> None:
    """Fail loudly if this Tornado changed a private method the fast path relies on, rather
    than let an upgrade silently skip our reader or break the close handshake."""
    for name, parameters in TORNADO_PRIVATE_METHODS.items():
        method = getattr(WebSocketProtocol13, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else None
        if found != parameters:
            raise ImportError(
                f"handlers/fastws.py relies on tornado.websocket.WebSocketProtocol13.{name}{parameters}, "
                f"but Tornado {tornado.version} has {found or 'no such method'}: "
                "install a Tornado in the range of pip-requirements.txt"
            )


check_tornado()


class FastWebSocketProtocol(WebSocketProtocol13, FrameReader):
    _outbox: list[bytes] | None = None
    #: The start of a frame whose end has not arrived yet (usually nothing: whole frames
    #: are parsed straight from the chunk the socket gave).
    _pending: bytes = b""
    _reported_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fragment = None
        self._fragment_opcode = 0

    # --- sending ------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue a text message; it leaves with the others at the end of this loop iteration."""
        if self.is_closing():
            raise WebSocketClosedError()
        frame = text_frame(text.encode("utf-8"))
        if self._outbox is None:
            self._outbox = [frame]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._outbox.append(frame)

    def write_message(self, message: str | bytes | dict[str, Any], binary: bool = False) -> asyncio.Future[None]:
        if binary or isinstance(message, dict):
            return super().write_message(message, binary)
        self.send_text(message if isinstance(message, str) else message.decode("utf-8"))
        # Callers may await what write_message returns: give them a done future.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, None
        if not outbox or self.stream.closed():
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        stream = self.stream
        if type(stream) is IOStream and not stream.writing():
            try:
                sent = stream.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the connection is gone; the read side will notice and close
            if sent == len(data):
                return
            data = data[sent:]
        try:
            stream.write(data)  # Tornado buffers the rest and waits for the socket
        except StreamClosedError:
            pass

    def _write_frame(self, fin: bool, opcode: int, data: bytes, flags: int = 0) -> asyncio.Future[None]:
        # Pings, pongs and the close frame leave after the text already queued.
        if self._outbox:
            self._flush()
        return super()._write_frame(fin, opcode, data, flags)

    # --- receiving ----------------------------------------------------------------------

    async def _receive_frame_loop(self) -> None:
        # Tornado awaits this coroutine at the bottom of the handshake's coroutine chain
        # (_execute, get, accept_connection, _accept_connection), so a connection that reads
        # in a loop keeps all of those frames alive for its whole life. Reading through
        # callbacks instead lets the chain finish now: about 2 KiB less per idle socket.
        self._read_next()

    def _read_next(self) -> None:
        try:
            # read_bytes answers a Future (typed as an Awaitable): a callback costs no Task.
            cast("asyncio.Future[bytes]", self.stream.read_bytes(READ_CHUNK, partial=True)).add_done_callback(self._on_chunk)
        except StreamClosedError:
            self._on_stream_closed()

    def _on_chunk(self, future: asyncio.Future[bytes]) -> None:
        try:
            chunk = future.result()
        except StreamClosedError:
            self._on_stream_closed()
            return
        except Exception:  # noqa: BLE001 - never leave a connection half-handled
            log.exception("reading a websocket failed")
            self._abort()
            self._on_stream_closed()
            return
        data = self._pending + chunk if self._pending else chunk
        try:
            consumed = self._parse(data, self.params.max_message_size)
        except ValueError:
            # Malformed input Tornado's own handlers reject (e.g. a close reason that is
            # not UTF-8): drop the connection, as Tornado's accept_connection does.
            self._abort()
            self._on_stream_closed()
            return
        except Exception:  # noqa: BLE001
            log.exception("handling a websocket frame failed")
            self._abort()
            self._on_stream_closed()
            return
        if consumed < len(data) or self._pending:
            self._pending = data[consumed:]
        if self.client_terminated or self.stream.closed():
            self._on_stream_closed()
        else:
            self._read_next()

    def _on_stream_closed(self) -> None:
        if self._reported_close:
            return
        self._reported_close = True
        if not self.stream.closed():
            # The client's close frame arrived: Tornado has answered it; wait for the end.
            self.stream.set_close_callback(self._report_close)
            return
        self._abort()
        self._report_close()

    def _report_close(self) -> None:
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    # --- what each frame does (handlers/frames.py parses them) --------------------------

    def _too_big(self) -> None:
        self.close(TOO_BIG_CODE, TOO_BIG)
        self._abort()

    def _on_control(self, opcode: int, payload: bytes) -> None:
        # Close, ping, pong, unknown opcodes: exactly as Tornado does.
        handled = self._handle_message(opcode, payload)
        if handled is not None:
            asyncio.ensure_future(handled)

    def _on_message(self, message: str | bytes) -> bool:
        """The handler's callbacks run synchronously, in frame order (SignalingHandler's are
        plain functions); one that returns an awaitable is left to run on its own."""
        try:
            result = self.handler.on_message(message)
            if result is not None and inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            log.exception("uncaught exception in on_message")
            self._abort()
            return False
        return True
