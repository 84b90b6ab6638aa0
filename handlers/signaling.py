"""The signaling socket: ``/wscall?id=ME&peer_id=PEER`` (and its aliases)."""

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


class SignalingHandler(WebSocketHandler):
    """One signaling socket: a :class:`routing.Session` handed to the app's router.

    The server never parses messages; it relays the text as is.
    """

    application: WebRTCApplication
    ws_connection: FastWebSocketProtocol | None
    id = ""
    peer_id = ""
    session_id = ""
    #: Heartbeat tick when the peer was last heard (services.heartbeat).
    heard = 0
    #: True once every node can reach the socket (tests wait for it).
    ready = False
    _joined = False
    _limiter: RateLimiter | None = None

    def check_origin(self, origin: str) -> bool:
        allowed = self.application.config.ALLOWED_ORIGINS
        if "*" in allowed or origin.lower() in (o.lower() for o in allowed):
            return True
        # Otherwise Tornado's rule: the Origin's host must be the one the browser asked.
        if super().check_origin(origin):
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

    def refuse(self, code: int, reason: str, why: str) -> None:
        self.application.stats.rejected[reason.lower()] += 1
        log.info("signaling socket refused (%s) from %s", why, self.request.remote_ip)
        self.close(code, reason)

    async def open(self) -> None:
        app = self.application
        config = app.config
        router = app.router
        app.start_services()
        self.id = self.get_query_argument("id", "")
        self.peer_id = self.get_query_argument("peer_id", "")
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
        if self.ws_connection is None or self.close_code is not None:
            return  # the client left while the hook was thinking
        if config.RATE_LIMIT > 0:
            self._limiter = RateLimiter(config.RATE_LIMIT, config.RATE_LIMIT_BURST, time.monotonic())
        self.session_id = uuid.uuid4().hex
        self.heard = app.heartbeat.tick
        self._joined = True
        reachable = router.join(self)
        # Across nodes: wait until other nodes can reach this socket; Tornado holds its
        # messages until open() returns, so none is relayed before.
        if reachable is not None and not await reachable:
            self._leave()
            return self.refuse(
                TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS, f"id already has {config.MAX_SOCKETS_PER_ID} sockets in the cluster"
            )
        self.ready = True
        log.debug("open %r -> %r (session %s)", self.id, self.peer_id, self.session_id)
        self._forget_request()

    def _forget_request(self) -> None:
        """Drop what only the handshake needed: an idle socket is held for hours, and its
        parsed headers and arguments were a tenth of its memory (docs/benchmarks.md)."""
        request = self.request
        request.headers = HTTPHeaders()
        request.arguments, request.query_arguments, request.body_arguments, request.files = {}, {}, {}, {}
        self.path_args, self.path_kwargs = [], {}

    def on_message(self, message: str | bytes) -> None:
        if not self._joined:
            return
        app = self.application
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
        self.application.stats.rate_limited += 1
        if verdict is NOTICE:
            log.info("rate limit reached by %r (session %s)", self.id, self.session_id)
            self.send(RATE_LIMITED_NOTICE)
        elif verdict is CLOSE:
            log.info("closing %r (session %s): it kept sending over the rate limit", self.id, self.session_id)
            self.end(POLICY_VIOLATION_CODE, RATE_LIMITED)

    def send(self, text: str) -> None:
        """Session.send: queue ``text``; a socket already closing just drops it."""
        connection = self.ws_connection
        if connection is None:
            return
        try:
            connection.send_text(text)
        except WebSocketClosedError:
            pass

    def on_pong(self, data: bytes) -> None:
        self.heard = self.application.heartbeat.tick

    def ping(self, data: str | bytes = b"") -> None:
        """Pulse.ping (also Tornado's ping); a socket already closing is skipped."""
        try:
            super().ping(data)
        except WebSocketClosedError:
            pass

    def drop(self) -> None:
        """Pulse.drop: the peer stopped answering; forget it now, close without waiting."""
        log.info("dropping %r (session %s): no answer to pings", self.id, self.session_id)
        self.end(GOING_AWAY_CODE, PING_TIMEOUT)

    def end(self, code: int, reason: str) -> None:
        """Close from the server's side, leaving the registry at once."""
        self.application.stats.closed[reason.lower()] += 1
        self._leave()
        self.close(code, reason)

    def on_close(self) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._joined:
            self._joined = False
            self.application.router.leave(self)
            log.debug("closed %r (session %s)", self.id, self.session_id)
