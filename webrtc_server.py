#!/usr/bin/env python3
"""webrtc_app: a WebRTC signaling server with caller and receiver pages.

Run it in the foreground with ``python webrtc_server.py start 8888``; see ``--help``.
Embed it with ``make_app(**options)``, where options are any names from ``settings.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys
import time
from types import SimpleNamespace
from typing import Any, NoReturn

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, URLSpec

import settings
from handlers.ice import IceServersHandler
from handlers.pages import CallerPageHandler, HomeHandler, ReceiverPageHandler
from handlers.signaling import GOING_AWAY_CODE, SERVER_SHUTDOWN, SignalingHandler
from handlers.status import ConnectionsHandler
from routing import Router
from routing.memory import MemoryRouter

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_DIR = os.path.join(PROJECT_DIR, "templates")
STATIC_DIR = os.path.join(PROJECT_DIR, "static")
LOG_LEVELS = ("debug", "info", "warning", "error")

log = logging.getLogger("webrtc_app")


class WebRTCApplication(Application):
    """A Tornado application with its own options (``config``) and registry (``router``)."""

    config: SimpleNamespace
    router: Router


def make_app(config: SimpleNamespace | None = None, router: Router | None = None, **options: Any) -> WebRTCApplication:
    """Build the application.

    ``config`` is a ``settings.resolve()`` snapshot; without one, ``options`` (any names
    from settings.py, and the hooks ``get_ice_pass``/``has_ice_pass``) override settings.py.
    ``router`` defaults to a fresh in-memory registry.
    """
    config = config or settings.resolve(**options)
    if not config.ICE_URL.startswith("/"):
        raise ValueError(f"ICE_URL must be a path starting with '/', got {config.ICE_URL!r}")
    routes = [
        URLSpec(r"/", HomeHandler, name="home"),
        URLSpec(r"/call", CallerPageHandler, name="caller_page"),
        URLSpec(r"/recieve", ReceiverPageHandler, name="reciever_page"),
        URLSpec(r"/receive", ReceiverPageHandler, name="receiver_page"),
        URLSpec(r"/wscall", SignalingHandler, name="caller_ws"),
        URLSpec(r"/wsrecieve", SignalingHandler, name="reciever_ws"),
        URLSpec(r"/wsreceive", SignalingHandler, name="receiver_ws"),
        URLSpec(re.escape(config.ICE_URL), IceServersHandler, name="ice_url"),
        URLSpec(r"/connections", ConnectionsHandler, name="clients_url"),
    ]
    app = WebRTCApplication(
        routes,
        template_path=TEMPLATE_DIR,
        static_path=STATIC_DIR,
        websocket_max_message_size=config.MAX_MESSAGE_SIZE,
        websocket_ping_interval=config.WS_PING_INTERVAL,
        websocket_ping_timeout=config.WS_PING_TIMEOUT,
    )
    app.config = config
    app.router = router or MemoryRouter()
    return app


async def shutdown(server: HTTPServer, app: WebRTCApplication, timeout: float) -> None:
    """Stop accepting, close every socket with 1001, wait for them up to ``timeout`` seconds."""
    server.stop()
    sessions = app.router.local_sessions()
    log.info("shutting down: closing %d socket(s)", len(sessions))
    for session in sessions:
        session.close(GOING_AWAY_CODE, SERVER_SHUTDOWN)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while app.router.local_sessions() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await app.router.stop()


async def serve(config: SimpleNamespace, host: str, port: int) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    app = make_app(config)
    await app.router.start()
    sockets = bind_sockets(port, address=host or None)
    server = HTTPServer(app, max_body_size=config.MAX_BODY_SIZE)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()
    shown_host = host or ("[::]" if sockets[0].family == socket.AF_INET6 else "0.0.0.0")
    if ":" in shown_host and not shown_host.startswith("["):
        shown_host = f"[{shown_host}]"
    log.info("webrtc_app listening on http://%s:%d (pid %d)", shown_host, bound[1], os.getpid())
    if settings.ICE_ACCESS_TOKEN_GENERATED and config.get_ice_pass is settings.get_ice_pass:
        log.warning(
            "ICE_ACCESS_TOKEN is not set: using a random token for this run "
            "(set WEBRTC_ICE_ACCESS_TOKEN to share one between processes or machines)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await shutdown(server, app, config.SHUTDOWN_TIMEOUT)
    log.info("stopped")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as a script calling us can show it as is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="webrtc_server.py",
        description="WebRTC signaling server with caller and receiver pages.",
        epilog="Every option of settings.py can also be set with WEBRTC_<NAME> environment variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    start = commands.add_parser("start", help="run the server in the foreground (stop it with Ctrl-C or SIGTERM)")
    start.add_argument("port", nargs="?", type=_port, help=f"port to listen on (default {settings.PORT}; 0 picks a free one)")
    start.add_argument("--host", help="address to listen on (default: every interface)")
    start.add_argument("--log-level", choices=LOG_LEVELS, help=f"default {settings.LOG_LEVEL}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = settings.resolve()
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    level = args.log_level or str(config.LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        parser.exit(2, f"{parser.prog}: error: invalid LOG_LEVEL {level!r}: expected one of {', '.join(LOG_LEVELS)}\n")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = config.HOST if args.host is None else args.host
    port = config.PORT if args.port is None else args.port
    try:
        asyncio.run(serve(config, host, port))
    except OSError as exc:
        # Port in use, address not available, ...: one line, not a traceback.
        parser.exit(1, f"{parser.prog}: error: cannot listen on {host or '*'}:{port}: {exc.strerror or exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
