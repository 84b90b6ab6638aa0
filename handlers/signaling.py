"""The signaling socket's rules: ``/wscall?id=ME&peer_id=PEER`` (and its aliases).

:class:`SignalingSocket` decides who may open a socket, what a message does and how a socket
ends; it is what the router (a ``routing.Session``) and the heartbeat (a ``Pulse``) see. It
depends on a :class:`SocketContext` built once per application, not on Tornado. The
websocket protocol under it is handlers/protocol/ (one core), which the two transports
drive: handlers/leanws.py over the raw socket, handlers/streamws.py over Tornado's IOStream
(TLS, and a socket asked for on a connection that served a page first); handlers/transport.py
is what they share.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from handlers.protocol.connection import Limits
from handlers.protocol.handshake import Request
from routing import BAD_REQUEST, BAD_REQUEST_CODE, Router, check_ids, server_notice
from routing.limits import ALLOW, CLOSE, NOTICE, RateLimiter
from routing.tokens import TOKEN_CODE, JoinTokens, TokenRefused

if TYPE_CHECKING:
    from handlers.transport import PendingWrites
    from services.heartbeat import Heartbeat
    from services.metrics import Stats

log = logging.getLogger(__name__)

# Close codes and reasons of the sockets the server ends (docs/protocol.md lists them all).
UNSUPPORTED_DATA_CODE, BINARY_UNSUPPORTED = 1003, "BINARY-UNSUPPORTED"
GOING_AWAY_CODE, SERVER_SHUTDOWN, PING_TIMEOUT = 1001, "SERVER-SHUTDOWN", "PING-TIMEOUT"
POLICY_VIOLATION_CODE, RATE_LIMITED = 1008, "RATE-LIMITED"
INTERNAL_ERROR_CODE, SERVER_ERROR = 1011, "SERVER-ERROR"
TRY_AGAIN_LATER_CODE, SERVER_FULL, SERVER_BUSY = 1013, "SERVER-FULL", "SERVER-BUSY"
FORBIDDEN_CODE, FORBIDDEN = 4403, "FORBIDDEN"
TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS = 4429, "TOO-MANY-SOCKETS"

RATE_LIMITED_NOTICE = server_notice(RATE_LIMITED)


@dataclass(eq=False)
class SocketContext:
    """What a signaling socket's rules depend on, built once per application."""

    config: SimpleNamespace
    router: Router[SignalingSocket]
    stats: Stats
    heartbeat: Heartbeat
    #: The protocol's limits: message size, unsent bytes per socket and for the process.
    limits: Limits
    #: Most sockets this process holds (MAX_SOCKETS, or fewer if descriptors run out first).
    socket_limit: int
    id_pattern: re.Pattern[str] | None
    #: The access log: (status, method, uri, remote ip, seconds).
    log_access: Callable[[int, str, str, str | None, float], None]
    #: The sockets with frames to write at the end of this loop iteration (the transports').
    writes: PendingWrites
    #: The join tokens a socket must carry (JOIN_TOKEN_KEYS), or None: no token needed.
    tokens: JoinTokens | None = None
    #: Where this kind of socket's messages go, how many sockets an id holds, and how a socket
    #: leaves: the router's (``/wscall``), or its rooms' (``/wsroom``, see :meth:`for_rooms`).
    relay: Callable[[Any, str], object] = field(init=False)
    count: Callable[[str], int] = field(init=False)
    leave: Callable[[Any], None] = field(init=False)
    #: Whether a socket the server closes for its shutdown still relays what its client sent
    #: before it saw the close (a call's messages need nothing but their ids; a room socket's
    #: room may be gone once it left).
    drains: bool = True

    def __post_init__(self) -> None:
        router = self.router
        self.relay, self.count, self.leave = router.relay, router.count, router.leave

    def for_rooms(self) -> SocketContext:
        """The context of the room sockets: the same limits and services, the router's rooms."""
        rooms = self.router.rooms
        context = copy.copy(self)
        context.relay, context.count, context.leave = rooms.relay, rooms.count, rooms.leave
        context.drains = False
        return context

    @property
    def open_sockets(self) -> int:
        """Sockets of both kinds this process holds (MAX_SOCKETS counts them together)."""
        return self.router.open_sockets + self.router.rooms.open_sockets


class MissingArgumentError(LookupError):
    """A hook asked for a query argument without a default, and the socket has none."""


_NO_DEFAULT: Any = object()


class SignalingSocket:
    """One signaling socket's rules. The server never parses messages; it relays the text as is.

    A transport provides ``context`` and ``request`` (set by :meth:`_init_socket`),
    ``send(text)`` (the router's ``Session.send``), ``close(code, reason)``, ``send_ping()``
    and ``connected``; it calls :meth:`admit` once the handshake is answered (and reads no
    message before it returns), :meth:`received` for each message, :meth:`heard_from` for
    each ping or pong, :meth:`charge` for frames that carried no message (fragments) and
    :meth:`closed` once the connection is over.
    """

    if not TYPE_CHECKING:  # (a type checker reads the annotations below as the attributes)
        __slots__ = ()

    #: The attributes it keeps (its transports make them slots: no per-socket dict).
    SOCKET_ATTRIBUTES = (
        "context",
        "request",
        "id",
        "peer_id",
        "session_id",
        "heard",
        "ready",
        "_joined",
        "_draining",
        "_limiter",
    )

    context: SocketContext
    #: The handshake, for the rules and the ``has_socket_pass`` hooks; None once admitted (an
    #: idle socket is held for hours, and its headers were a tenth of its memory).
    request: Request | None
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
    #: Closed by the server's shutdown: what the client sent before it saw the close still goes on.
    _draining: bool
    _limiter: RateLimiter | None

    def _init_socket(self, context: SocketContext, request: Request) -> None:
        self.context = context
        self.request = request
        self.id = self.peer_id = self.session_id = ""
        self.heard = 0
        self.ready = self._joined = self._draining = False
        self._limiter = None

    # --- what a transport provides --------------------------------------------------------

    def send(self, text: str) -> None:
        """Session.send: queue ``text``; a socket already closing drops it."""
        raise NotImplementedError

    def send_all(self, texts: list[str]) -> None:
        """Session.send_all: ``send`` for each, as one write."""
        raise NotImplementedError

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        raise NotImplementedError

    def send_ping(self, payload: bytes = b"") -> None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    # --- what has_socket_pass hooks read (Tornado's names) ---------------------------------

    def get_query_argument(self, name: str, default: Any = _NO_DEFAULT, strip: bool = True) -> str | None:
        value = self.request.argument(name, strip) if self.request is not None else None
        if value is None:
            if default is _NO_DEFAULT:
                raise MissingArgumentError(name)
            return default
        return value

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        value = self.request.cookie(name) if self.request is not None else None
        return default if value is None else value

    @property
    def remote_ip(self) -> str | None:
        return self.request.remote_ip if self.request is not None else None

    # --- the rules ------------------------------------------------------------------------

    async def admit(self) -> None:
        """Check the ids, the join token, the limits and the policy, then enter (or close)."""
        context = self.context
        config = context.config
        problem = self._read_names()
        if problem:
            return self.refuse(BAD_REQUEST_CODE, BAD_REQUEST, problem)
        tokens = context.tokens
        if tokens is not None:
            peer, room = self._scope()
            try:
                tokens.check(self._token(), self.id, peer, room)
            except TokenRefused as refused:
                return self.refuse(TOKEN_CODE, refused.reason, refused.why)
        if not self._within_limits():
            return
        try:
            allowed = config.has_socket_pass(self)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception:
            log.exception("has_socket_pass failed")
            return self.refuse(INTERNAL_ERROR_CODE, SERVER_ERROR, "has_socket_pass raised")
        if not self.connected:
            return  # the client left while the hook was thinking
        if not allowed:
            return self.refuse(FORBIDDEN_CODE, FORBIDDEN, "has_socket_pass said no")
        # Again: other sockets may have joined while an asynchronous hook was thinking. From
        # here to joining nothing awaits, so the limits hold.
        if not self._within_limits():
            return
        if config.RATE_LIMIT > 0:
            self._limiter = RateLimiter(config.RATE_LIMIT, config.RATE_LIMIT_BURST, time.monotonic())
        self.session_id = uuid.uuid4().hex
        self.heard = context.heartbeat.tick
        self._joined = True
        await self._enter()

    def _read_names(self) -> str | None:
        """Read the socket's names from the query; answers what is wrong with them, if anything."""
        context = self.context
        self.id = self.get_query_argument("id", "") or ""
        self.peer_id = self.get_query_argument("peer_id", "") or ""
        return check_ids(self.id, self.peer_id, context.config.MAX_ID_LENGTH, context.id_pattern)

    def _token(self) -> str:
        """The query's ``token=`` ("" if none; one that is not UTF-8 is read as is, and refused)."""
        token = self.get_query_argument("token", "")
        if not token and self.request is not None:
            raw = self.request.query_arguments.get("token")
            if raw:
                return raw[-1].decode("utf-8", "replace")
        return token or ""

    def _scope(self) -> tuple[str | None, str | None]:
        """What a join token must allow besides the id: (peer, room); a call's peer here."""
        return self.peer_id, None

    async def _enter(self) -> None:
        """Join the router; across nodes, wait until other nodes can reach this socket (the
        transport holds its messages until admit() returns, so none is relayed before)."""
        reachable = self.context.router.join(self)
        if reachable is not None and not await reachable:
            self._leave()
            limit = self.context.config.MAX_SOCKETS_PER_ID
            return self.refuse(TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS, f"id already has {limit} sockets in the cluster")
        self.ready = True
        log.debug("open %r -> %r (session %s)", self.id, self.peer_id, self.session_id)

    def _within_limits(self) -> bool:
        context = self.context
        if context.open_sockets >= context.socket_limit:
            self.refuse(TRY_AGAIN_LATER_CODE, SERVER_FULL, f"{context.socket_limit} sockets open")
            return False
        if context.router.busy:
            self.refuse(TRY_AGAIN_LATER_CODE, SERVER_BUSY, "the backplane is behind")
            return False
        limit = context.config.MAX_SOCKETS_PER_ID
        if context.count(self.id) >= limit:
            self.refuse(TOO_MANY_SOCKETS_CODE, TOO_MANY_SOCKETS, f"id already has {limit} sockets")
            return False
        return True

    def refuse(self, code: int, reason: str, why: str) -> None:
        self.context.stats.rejected[reason.lower()] += 1
        log.info("signaling socket refused (%s) from %s", why, self.remote_ip)
        self.close(code, reason)

    def received(self, message: str | bytes) -> None:
        """A message from the client: relayed as is, within the rate limit."""
        if not self._joined:
            if self._draining and isinstance(message, str):
                # The server is shutting down and closed it: the client sent this before it saw
                # the close, so it still goes to the peer (a notice could not reach it now).
                self.context.stats.relayed_bytes += len(message.encode("utf-8"))
                self.context.relay(self, message)
            return
        context = self.context
        self.heard = context.heartbeat.tick
        if isinstance(message, bytes):
            log.info("binary frame from %r refused", self.id)
            return self.end(UNSUPPORTED_DATA_CODE, BINARY_UNSUPPORTED)
        if self._limiter is not None:
            verdict = self._limiter.check(time.monotonic())
            if verdict is not ALLOW:
                return self.limited(verdict)
        # len() is the UTF-8 size of ASCII text (isascii() is a flag check), the usual case.
        context.stats.relayed_bytes += len(message) if message.isascii() else len(message.encode("utf-8"))
        context.relay(self, message)

    def heard_from(self) -> None:
        """A ping or a pong from the client: it is alive; a ping costs what a message does."""
        self.heard = self.context.heartbeat.tick
        if self._limiter is not None and self._joined:
            verdict = self._limiter.check(time.monotonic())
            if verdict is not ALLOW:
                self.limited(verdict)

    def charge(self, frames: int) -> None:
        """Frames that carried no message of their own (fragments): each costs what a message
        does, so that a flood of empty fragments meets the rate limit too."""
        if self._limiter is not None and self._joined:
            verdict = self._limiter.charge(time.monotonic(), frames)
            if verdict is not ALLOW:
                self.limited(verdict)

    def limited(self, verdict: str) -> None:
        self.context.stats.rate_limited += 1
        if verdict is NOTICE:
            log.info("rate limit reached by %r (session %s)", self.id, self.session_id)
            self.send(RATE_LIMITED_NOTICE)
        elif verdict is CLOSE:
            log.info("closing %r (session %s): it kept sending over the rate limit", self.id, self.session_id)
            self.end(POLICY_VIOLATION_CODE, RATE_LIMITED)

    def ping(self) -> None:
        """Pulse.ping; a socket already closing is skipped."""
        self.send_ping()

    def drop(self) -> None:
        """Pulse.drop: the peer stopped answering; forget it now, close without waiting."""
        log.info("dropping %r (session %s): no answer to pings", self.id, self.session_id)
        self.end(GOING_AWAY_CODE, PING_TIMEOUT)

    def end(self, code: int, reason: str) -> None:
        """Close from the server's side, leaving the registry at once."""
        self.context.stats.closed[reason.lower()] += 1
        self._draining = reason == SERVER_SHUTDOWN and self.context.drains
        self._leave(linger=self._draining)
        self.close(code, reason)

    def closed(self) -> None:
        """The connection is over (the transport calls this once)."""
        self._leave()
        if self._draining:
            self._draining = False
            self.context.router.release(self)

    def _leave(self, linger: bool = False) -> None:
        if self._joined:
            self._joined = False
            if linger:
                self.context.router.leave(self, linger=True)
            else:
                self.context.leave(self)
            log.debug("closed %r (session %s)", self.id, self.session_id)
