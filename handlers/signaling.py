"""The signaling socket: ``/wscall?id=ME&peer_id=PEER`` (and its aliases).

:class:`SignalingSocket` holds the socket's rules (who may open one, what a message does,
how it ends) and is what the router and the heartbeat see. Two transports carry it:

* the lean one (handlers/leanws.py): the handshake parsed by httptools in front of Tornado,
  then frames over the raw socket; plain TCP connections whose first request is a
  well-formed upgrade to a signaling route take it;
* Tornado's (:class:`SignalingHandler`, with handlers/fastws.py's frame path): connections
  over TLS, a signaling request on a connection that served a page first, and every
  handshake the lean path does not take (Tornado answers their errors).
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from handlers.fastws import FastWebSocketProtocol
from routing import BAD_REQUEST, BAD_REQUEST_CODE, check_ids, server_notice
from routing.limits import ALLOW, CLOSE, NOTICE, RateLimiter

if TYPE_CHECKING:
    from webrtc_server import WebRTCApplication

log = logging.getLogger(__name__)

# Close codes and reasons of the sockets the server ends (docs/protocol.md lists them all).
UNSUPPORTED_DATA_CODE, BINARY_UNSUPPORTED = 1003, "BINARY-UNSUPPORTED"
GOING_AWAY_CODE, SERVER_SHUTDOWN, PING_TIMEOUT = 1001, "SERVER-SHUTDOWN", "PING-TIMEOUT"
POLICY_VIOLATION_CODE, RATE_LIMITED = 1008, "RATE-LIMITED"
TRY_AGAIN_LATER_CODE, SERVER_FULL = 1013, "SERVER-FULL"
FORBIDDEN_CODE, FORBIDDEN = 4403, "FORBIDDEN"
TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS = 4429, "TOO-MANY-SOCKETS"

RATE_LIMITED_NOTICE = server_notice(RATE_LIMITED)


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """An ``Origin`` in ALLOWED_ORIGINS ("*" for any), or else Tornado's rule: its host must
    be the one the browser asked (the ``Host`` header)."""
    if "*" in allowed or origin.lower() in (o.lower() for o in allowed):
        return True
    return urlsplit(origin).netloc.lower() == host


class SignalingSocket:
    """One signaling socket: a :class:`routing.Session` handed to the app's router, and a
    :class:`services.heartbeat.Pulse`. The server never parses messages; it relays the text
    as is.

    A transport provides ``app``, ``close(code, reason)``, ``query_argument(name)``,
    ``remote_ip``, ``write_text(text)``, ``send_ping()`` and ``connected``, and for
    ``has_socket_pass`` hooks Tornado's ``get_query_argument``, ``get_cookie`` and ``request``
    (with ``headers``, ``remote_ip``, ``uri``, ``path`` and ``query``); it calls :meth:`admit` once the
    handshake is done (and reads no message before it returns), :meth:`received` for each
    message, :meth:`heard_from` for each pong and :meth:`closed` when the connection ends.
    """

    #: The attributes it keeps (the lean transport makes them slots: no per-socket dict).
    SOCKET_ATTRIBUTES = ("app", "id", "peer_id", "session_id", "heard", "ready", "_joined", "_limiter")

    app: WebRTCApplication
    #: The socket's own id, and the id it talks to ("" for anyone).
    id: str
    peer_id: str
    #: Unique name of this socket, shown by /connections.
    session_id: str
    #: Heartbeat tick when the peer was last heard (services.heartbeat).
    heard: int
    #: True once every node can reach the socket (tests wait for it).
    ready: bool

    _joined: bool
    _limiter: RateLimiter | None

    def _init_socket(self) -> None:
        self.id = self.peer_id = self.session_id = ""
        self.heard = 0
        self.ready = self._joined = False
        self._limiter = None

    # --- what a transport provides --------------------------------------------------------

    if TYPE_CHECKING:  # Tornado's WebSocketHandler has it already: no stub may hide it

        def close(self, code: int | None = None, reason: str | None = None) -> None: ...

    def query_argument(self, name: str) -> str:
        """The last value of a query argument, as Tornado's ``get_query_argument`` gives it
        (control characters replaced, stripped), or ""."""
        raise NotImplementedError

    def write_text(self, text: str) -> None:
        """Queue a text frame; a connection already closing drops it."""
        raise NotImplementedError

    def send_ping(self) -> None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    @property
    def remote_ip(self) -> str | None:
        raise NotImplementedError

    # --- the rules ------------------------------------------------------------------------

    async def admit(self) -> None:
        """Check the ids, the limits and the policy, then join the router (or close)."""
        app = self.app
        config = app.config
        router = app.router
        app.start_services()
        self.id = self.query_argument("id")
        self.peer_id = self.query_argument("peer_id")
        problem = check_ids(self.id, self.peer_id, config.MAX_ID_LENGTH, app.id_pattern)
        if problem:
            return self.refuse(BAD_REQUEST_CODE, BAD_REQUEST, problem)
        if router.open_sockets >= app.socket_limit:
            return self.refuse(TRY_AGAIN_LATER_CODE, SERVER_FULL, f"{app.socket_limit} sockets open")
        if router.count(self.id) >= config.MAX_SOCKETS_PER_ID:
            return self.refuse(TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS, f"id already has {config.MAX_SOCKETS_PER_ID} sockets")
        allowed = config.has_socket_pass(self)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            return self.refuse(FORBIDDEN_CODE, FORBIDDEN, "has_socket_pass said no")
        if not self.connected:
            return  # the client left while the hook was thinking
        if config.RATE_LIMIT > 0:
            self._limiter = RateLimiter(config.RATE_LIMIT, config.RATE_LIMIT_BURST, time.monotonic())
        self.session_id = uuid.uuid4().hex
        self.heard = app.heartbeat.tick
        self._joined = True
        reachable = router.join(self)
        # Across nodes: wait until other nodes can reach this socket; the transport holds
        # its messages until admit() returns, so none is relayed before.
        if reachable is not None and not await reachable:
            self._leave()
            limit = config.MAX_SOCKETS_PER_ID
            return self.refuse(TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS, f"id already has {limit} sockets in the cluster")
        self.ready = True
        log.debug("open %r -> %r (session %s)", self.id, self.peer_id, self.session_id)

    def refuse(self, code: int, reason: str, why: str) -> None:
        self.app.stats.rejected[reason.lower()] += 1
        log.info("signaling socket refused (%s) from %s", why, self.remote_ip)
        self.close(code, reason)

    def received(self, message: str | bytes) -> None:
        """A message from the client: relayed as is, within the rate limit."""
        if not self._joined:
            return
        app = self.app
        self.heard = app.heartbeat.tick
        if isinstance(message, bytes):
            log.info("binary frame from %r refused", self.id)
            return self.end(UNSUPPORTED_DATA_CODE, BINARY_UNSUPPORTED)
        if self._limiter is not None:
            verdict = self._limiter.check(time.monotonic())
            if verdict is not ALLOW:
                return self.limited(verdict)
        # len() is the UTF-8 size of ASCII text (isascii() is a flag check), the usual case.
        app.stats.relayed_bytes += len(message) if message.isascii() else len(message.encode("utf-8"))
        app.router.relay(self, message)

    def limited(self, verdict: str) -> None:
        self.app.stats.rate_limited += 1
        if verdict is NOTICE:
            log.info("rate limit reached by %r (session %s)", self.id, self.session_id)
            self.send(RATE_LIMITED_NOTICE)
        elif verdict is CLOSE:
            log.info("closing %r (session %s): it kept sending over the rate limit", self.id, self.session_id)
            self.end(POLICY_VIOLATION_CODE, RATE_LIMITED)

    def send(self, text: str) -> None:
        """Session.send: queue ``text``; a socket already closing just drops it."""
        self.write_text(text)

    def heard_from(self) -> None:
        """A pong (or anything) from the client: it is alive."""
        self.heard = self.app.heartbeat.tick

    def ping(self, data: str | bytes = b"") -> None:
        """Pulse.ping; a socket already closing is skipped."""
        self.send_ping()

    def drop(self) -> None:
        """Pulse.drop: the peer stopped answering; forget it now, close without waiting."""
        log.info("dropping %r (session %s): no answer to pings", self.id, self.session_id)
        self.end(GOING_AWAY_CODE, PING_TIMEOUT)

    def end(self, code: int, reason: str) -> None:
        """Close from the server's side, leaving the registry at once."""
        self.app.stats.closed[reason.lower()] += 1
        self._leave()
        self.close(code, reason)

    def closed(self) -> None:
        """The connection is over (the transport calls this once)."""
        self._leave()

    def _leave(self) -> None:
        if self._joined:
            self._joined = False
            self.app.router.leave(self)
            log.debug("closed %r (session %s)", self.id, self.session_id)


class SignalingHandler(SignalingSocket, WebSocketHandler):
    """The signaling socket over Tornado's websocket protocol (with fastws.py's frame path)."""

    application: WebRTCApplication
    ws_connection: FastWebSocketProtocol | None

    def initialize(self) -> None:
        self._init_socket()
        self.app = self.application

    def check_origin(self, origin: str) -> bool:
        if origin_allowed(origin, self.request.headers.get("Host"), self.application.config.ALLOWED_ORIGINS):
            return True
        self.application.stats.rejected["origin"] += 1
        log.info("signaling socket refused: origin %r not allowed", urlsplit(origin).netloc or origin[:100])
        return False

    def get_compression_options(self) -> None:
        # Signaling messages are small; compression would cost more CPU than it saves.
        return None

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol, with the leaner relay path of handlers/fastws.py."""
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, WebSocketProtocol13):
            return None  # not a version-13 handshake: Tornado answers 426
        return FastWebSocketProtocol(self, protocol.mask_outgoing, protocol.params)

    async def open(self) -> None:
        await self.admit()
        if self.ready:
            self._forget_request()

    def _forget_request(self) -> None:
        """Drop what only the handshake needed: an idle socket is held for hours, and its
        parsed headers and arguments were a tenth of its memory (docs/benchmarks.md)."""
        request = self.request
        request.headers = HTTPHeaders()
        request.arguments, request.query_arguments, request.body_arguments, request.files = {}, {}, {}, {}
        self.path_args, self.path_kwargs = [], {}

    def query_argument(self, name: str) -> str:
        return self.get_query_argument(name, "") or ""

    def on_message(self, message: str | bytes) -> None:
        self.received(message)

    def on_pong(self, data: bytes) -> None:
        self.heard_from()

    def on_close(self) -> None:
        self.closed()

    def write_text(self, text: str) -> None:
        connection = self.ws_connection
        if connection is None:
            return
        try:
            connection.send_text(text)
        except WebSocketClosedError:
            pass

    def send_ping(self) -> None:
        try:
            WebSocketHandler.ping(self, b"")
        except WebSocketClosedError:
            pass

    @property
    def connected(self) -> bool:
        return self.ws_connection is not None and self.close_code is None

    @property
    def remote_ip(self) -> str | None:
        return self.request.remote_ip
