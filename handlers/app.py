"""The Tornado application and its factory: routes, the objects every handler reaches (typed),
the signaling sockets' context, the background services and the access log.

webrtc_server.py (the entry point: command line, serving, workers) builds it with
:func:`make_app`; no module imports the entry point.
"""

from __future__ import annotations

import logging
import os
import re
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote_plus

from prometheus_client import CollectorRegistry
from tornado.ioloop import PeriodicCallback
from tornado.web import Application, RequestHandler, URLSpec

import settings
from handlers.ice import IceServersHandler
from handlers.pages import CallerPageHandler, HomeHandler, ReceiverPageHandler, RoomPageHandler
from handlers.protocol.connection import Limits
from handlers.signaling import SignalingSocket, SocketContext
from handlers.status import ConnectionsHandler, HealthHandler, MetricsHandler
from handlers.streamws import RoomHandler, SignalingHandler
from handlers.transport import PendingWrites
from routing import Router
from routing.memory import MemoryRouter
from routing.tokens import JoinTokens, parse_keys
from services.descriptors import open_files_limit, socket_capacity
from services.heartbeat import Heartbeat
from services.loop_lag import LoopLag
from services.metrics import Stats, make_registry
from services.status_log import StatusLog
from services.workers import WorkerGroup

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_DIR = os.path.join(PROJECT_DIR, "templates")
STATIC_DIR = os.path.join(PROJECT_DIR, "static")

access_log = logging.getLogger("tornado.access")
log = logging.getLogger(__name__)

#: The names of the signaling socket's routes (the original's, and the aliases).
SIGNALING_ROUTES = ("caller_ws", "reciever_ws", "receiver_ws")


class WebRTCApplication(Application):
    """A Tornado application with its own options (``config``), registry (``router``),
    counters (``stats``), signaling context and background services (heartbeat, status log)."""

    #: This worker's group under --processes N (one /metrics scrape reports them all), or None.
    workers: WorkerGroup | None = None

    def __init__(self, config: SimpleNamespace, router: Router[SignalingSocket], routes: list[URLSpec]) -> None:
        super().__init__(
            routes,
            template_path=TEMPLATE_DIR,
            static_path=STATIC_DIR,
            log_function=self.log_request,
        )
        self.config = config
        self.router = router
        self.stats = Stats()
        #: The open-file limit the socket limit was computed from, and that limit: MAX_SOCKETS,
        #: or fewer if the descriptors run out first (services/descriptors.py).
        self.open_files = open_files_limit()
        self.socket_limit = socket_capacity(config.MAX_SOCKETS, self.open_files, config.RESERVED_DESCRIPTORS)
        self.loop_lag = LoopLag()
        #: The join tokens sockets and the ICE endpoint need (JOIN_TOKEN_KEYS), or None: off.
        self.join_tokens = JoinTokens.from_config(config)
        # Our own heartbeat (one timer for all sockets) replaces per-socket pings.
        self.heartbeat = Heartbeat(config.WS_PING_INTERVAL, config.WS_PING_TIMEOUT, self.signaling_sockets)
        self.context = SocketContext(
            config=config,
            router=router,
            stats=self.stats,
            heartbeat=self.heartbeat,
            limits=Limits(config.MAX_MESSAGE_SIZE, config.MAX_UNSENT, config.MAX_UNSENT_TOTAL),
            socket_limit=self.socket_limit,
            id_pattern=re.compile(config.ID_PATTERN) if config.ID_PATTERN else None,
            log_access=self.log_access,
            writes=PendingWrites(),
            tokens=self.join_tokens,
        )
        #: The room sockets' (``/wsroom``): the same limits and services, the router's rooms.
        self.room_context = self.context.for_rooms()
        self.metrics_registry: CollectorRegistry | None = (
            make_registry(self.context, self.loop_lag, self.open_files) if config.METRICS else None
        )
        self._timers: list[PeriodicCallback] | None = None

    @property
    def id_pattern(self) -> re.Pattern[str] | None:
        return self.context.id_pattern

    def signaling_sockets(self) -> list[SignalingSocket]:
        """This process' open signaling sockets, room sockets included."""
        return self.router.local_sessions() + self.router.rooms.members()

    def reload_join_tokens(self) -> bool:
        """SIGHUP: read WEBRTC_JOIN_TOKEN_KEYS_FILE again and take its keys (rotation); open
        sockets stay. A file that cannot be read or holds a bad key changes nothing. Answers
        whether the keys changed."""
        tokens = self.join_tokens
        if tokens is None:
            log.warning("SIGHUP: join tokens are off (JOIN_TOKEN_KEYS is empty): restart the server to turn them on")
            return False
        try:
            found = settings.reread("JOIN_TOKEN_KEYS")
            if found is None:
                log.warning("SIGHUP: the join token keys do not come from WEBRTC_JOIN_TOKEN_KEYS_FILE: nothing to read again")
                return False
            path, value = found
            keys = parse_keys(value)
            tokens.reload(keys)
        except ValueError as exc:
            log.error("SIGHUP: join token keys unchanged: %s", exc)
            return False
        log.info("SIGHUP: join token keys read again from %s: %s", path, ", ".join(sorted(keys)))
        return True

    def start_services(self) -> None:
        """Start the periodic duties on the running loop (idempotent)."""
        if self._timers is not None:
            return
        self._timers = []
        if self.heartbeat.enabled:
            self._timers.append(PeriodicCallback(self.heartbeat.beat, self.heartbeat.tick_seconds * 1000))
        if self.config.STATUS_LOG_INTERVAL > 0:
            status = StatusLog(self.context, self.loop_lag)
            self._timers.append(PeriodicCallback(status.write, self.config.STATUS_LOG_INTERVAL * 1000))
        for timer in self._timers:
            timer.start()
        self.loop_lag.start()

    def stop_services(self) -> None:
        for timer in self._timers or ():
            timer.stop()
        self._timers = None
        self.loop_lag.stop()

    def log_request(self, handler: RequestHandler) -> None:
        """Tornado's access log hook."""
        request = handler.request
        self.log_access(handler.get_status(), request.method or "", request.uri or "", request.remote_ip, request.request_time())

    def log_access(self, status: int, method: str, uri: str, remote_ip: str | None, seconds: float) -> None:
        """The access log (Tornado's format), with secret-looking query arguments (``?token=``) masked."""
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if not access_log.isEnabledFor(level):
            return
        shown = redact_query(uri, self.config.LOG_REDACTED_ARGUMENTS)
        ms = 1000.0 * seconds
        fields = {"status": status, "method": method, "uri": shown, "remote_ip": remote_ip, "ms": round(ms, 2)}
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, shown, remote_ip, ms, extra=fields)


def redact_query(uri: str, names: list[str]) -> str:
    """``uri`` with the values of the query arguments called ``names`` replaced by ``***``."""
    path, sep, query = uri.partition("?")
    if not sep or not names:
        return uri
    lowered = {name.lower() for name in names}
    parts = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        parts.append(f"{key}=***" if eq and unquote_plus(key).lower() in lowered else part)
    return f"{path}?{'&'.join(parts)}"


def make_app(
    config: SimpleNamespace | None = None, router: Router[SignalingSocket] | None = None, **options: Any
) -> WebRTCApplication:
    """Build the application.

    ``config`` is a ``settings.resolve()`` snapshot; without one, ``options`` (any names
    from settings.py, and the hooks ``get_ice_pass``/``has_ice_pass``/``has_socket_pass``)
    override settings.py. ``router`` defaults to a fresh in-memory registry, or to the Redis
    backplane when REDIS_URL is set (start it with ``await app.router.start()``).
    """
    config = config or settings.resolve(**options)
    if not config.ICE_URL.startswith("/"):
        raise ValueError(f"ICE_URL must be a path starting with '/', got {config.ICE_URL!r}")
    routes = [
        URLSpec(r"/", HomeHandler, name="home"),
        URLSpec(r"/call", CallerPageHandler, name="caller_page"),
        URLSpec(r"/recieve", ReceiverPageHandler, name="reciever_page"),
        URLSpec(r"/receive", ReceiverPageHandler, name="receiver_page"),
        URLSpec(r"/room", RoomPageHandler, name="room_page"),
        URLSpec(r"/wscall", SignalingHandler, name="caller_ws"),
        URLSpec(r"/wsrecieve", SignalingHandler, name="reciever_ws"),
        URLSpec(r"/wsreceive", SignalingHandler, name="receiver_ws"),
        URLSpec(r"/wsroom", RoomHandler, name="room_ws"),
        URLSpec(re.escape(config.ICE_URL), IceServersHandler, name="ice_url"),
        URLSpec(r"/connections", ConnectionsHandler, name="clients_url"),
        URLSpec(r"/healthz", HealthHandler, name="health"),
    ]
    if config.METRICS:
        routes.append(URLSpec(r"/metrics", MetricsHandler, name="metrics"))
    return WebRTCApplication(config, router or make_router(config), routes)


def make_router(config: SimpleNamespace) -> Router[SignalingSocket]:
    """The in-memory registry, or the Redis backplane when REDIS_URL is set."""
    if config.REDIS_URL:
        from routing.redis import RedisRouter  # redis-py is only needed with a backplane

        return RedisRouter[SignalingSocket](
            config.REDIS_URL, config.REDIS_PREFIX, config.NODE_TTL, config.MAX_SOCKETS_PER_ID, config.DELIVERY_BOUND
        )
    return MemoryRouter[SignalingSocket]()
