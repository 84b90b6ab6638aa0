#!/usr/bin/env python3
"""webrtc_app: a WebRTC signaling server with caller and receiver pages.

Run it in the foreground with ``python webrtc_server.py start 8888``; see ``--help``.
Embed it with ``make_app(**options)``, where options are any names from ``settings.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any, NoReturn

from prometheus_client import generate_latest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import settings
from handlers.app import PROJECT_DIR, STATIC_DIR, TEMPLATE_DIR, WebRTCApplication, make_app, make_router, redact_query
from handlers.frontdoor import FrontDoorHTTPServer
from handlers.leanws import MAX_HEAD
from handlers.signaling import GOING_AWAY_CODE, SERVER_SHUTDOWN
from routing import check_ids, check_room
from routing.liveness import Timing
from routing.tokens import DEFAULT_TTL, JoinTokens
from services import logs
from services.descriptors import raise_open_files, reserve_for
from services.workers import WorkerGroup

#: What embedders and the tests reach through the entry point (the code lives in handlers/app.py).
__all__ = ["PROJECT_DIR", "STATIC_DIR", "TEMPLATE_DIR", "WebRTCApplication", "main", "make_app", "make_router", "redact_query"]

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Allocations between two young-generation collections (CPython's default is 700).
GC_THRESHOLD = 20_000
#: Connections the kernel queues before the server accepts them (Tornado's default is 128;
#: the kernel caps it at net.core.somaxconn). Thousands of pages reconnecting after a restart
#: arrive within a second or two: a short queue drops their SYNs, and each waits a second.
LISTEN_BACKLOG = 4096

__version__ = "2.0.0"

log = logging.getLogger("webrtc_app")


async def shutdown(server: HTTPServer, app: WebRTCApplication, timeout: float) -> None:
    """Stop accepting, leave the other nodes' joins, close every socket with 1001, wait for
    them up to ``timeout`` seconds."""
    server.stop()
    app.stop_services()
    # Before any socket closes (and reconnects to another node, whose join would count this
    # one among those to acknowledge it).
    await app.router.quiesce()
    sockets = app.signaling_sockets()
    log.info("shutting down: closing %d socket(s)", len(sockets))
    for handler in sockets:
        handler.end(GOING_AWAY_CODE, SERVER_SHUTDOWN)
    # Wait for the close handshakes, so clients see 1001 rather than a cut connection.
    deadline = time.monotonic() + timeout
    while any(h.connected for h in sockets) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await app.router.stop()


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext | None:
    """The server's TLS context, or None to serve plain http/ws."""
    if not certfile and not keyfile:
        return None
    if not (certfile and keyfile):
        raise ValueError("TLS needs both a certificate (--certfile) and its key (--keyfile)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def listening_line(sockets: list[socket.socket], host: str, tls: bool) -> str:
    bound = sockets[0].getsockname()
    shown_host = host or ("[::]" if sockets[0].family == socket.AF_INET6 else "0.0.0.0")
    if ":" in shown_host and not shown_host.startswith("["):
        shown_host = f"[{shown_host}]"
    return f"{'https' if tls else 'http'}://{shown_host}:{bound[1]}"


async def serve(config: SimpleNamespace, sockets: list[socket.socket], host: str, workers: WorkerGroup | None = None) -> None:
    """Serve on already bound ``sockets`` until SIGTERM or SIGINT, then shut down cleanly;
    ``workers``: this worker's group, under --processes."""
    files = raise_open_files()
    app = make_app(config)
    registry = app.metrics_registry
    if workers is not None and registry is not None:
        app.workers = workers
        await workers.start(lambda: generate_latest(registry))
    log.info(
        "open files: soft limit %s (hard %d): up to %d signaling sockets (MAX_SOCKETS %d, %d descriptors kept in reserve)",
        f"raised from {files.before} to {files.soft}" if files.soft != files.before else str(files.soft),
        files.hard,
        app.socket_limit,
        config.MAX_SOCKETS,
        reserve_for(app.open_files, config.RESERVED_DESCRIPTORS),
    )
    tls = tls_context(config.CERTFILE, config.KEYFILE)
    await app.router.start()
    generated = settings.ICE_ACCESS_TOKEN_GENERATED and config.get_ice_pass is settings.get_ice_pass
    agreed = False
    if generated:

        def adopt(token: str) -> None:
            config.ICE_ACCESS_TOKEN = settings.ICE_ACCESS_TOKEN = token

        # Nodes of one backplane hand out one token, so any node accepts a page from another.
        agreed = await app.router.share("ice-token", config.ICE_ACCESS_TOKEN, adopt)
    server = FrontDoorHTTPServer(
        app,
        max_body_size=config.MAX_BODY_SIZE,
        xheaders=config.XHEADERS,
        ssl_options=tls,
        # Tornado's default is an hour: a few thousand slow or idle clients would hold every
        # descriptor. This bounds the headers of a request and an idle keep-alive connection.
        idle_connection_timeout=config.HEADER_TIMEOUT,
        body_timeout=config.HEADER_TIMEOUT,
        max_header_size=MAX_HEAD,  # as the lean path reads them (431 past it)
    )
    server.add_sockets(sockets)
    app.start_services()
    # The objects made at start-up live forever: keep the cyclic garbage collector from
    # scanning them again and again, and let it run less often under load (a relay makes
    # many short-lived objects but few cycles). Profiled: ~9% of relay CPU before.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    # The handlers first: a signal sent once the line below is out must not find them missing
    # (a worker ignores SIGHUP until here, and would miss a key rotation).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_join_tokens)  # key rotation
    node = app.router.node
    log.info(
        "webrtc_app listening on %s (pid %d%s)",
        listening_line(sockets, host, tls is not None),
        os.getpid(),
        f", node {node}" if node else "",
    )
    if generated:
        if not app.router.node:
            shared = ""
        elif agreed:
            shared = ", shared by the nodes of this backplane"
        else:
            shared = ", this node's own until Redis answers (then the one the nodes share; set ICE_ACCESS_TOKEN to avoid this)"
        log.warning("ICE_ACCESS_TOKEN is not set: using a random token for this run%s", shared)
    await stop.wait()
    await shutdown(server, app, config.SHUTDOWN_TIMEOUT)
    if app.workers is not None:
        await app.workers.stop()
    log.info("stopped")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as a script calling us can show it as is.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535")
    return int(text)


def version_line() -> str:
    import tornado

    return f"webrtc_app {__version__} (Python {platform.python_version()}, Tornado {tornado.version})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="webrtc_server.py",
        description="WebRTC signaling server with caller and receiver pages.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    start = commands.add_parser("start", help="run the server in the foreground (stop it with Ctrl-C or SIGTERM)")
    start.add_argument("port", nargs="?", type=_port, help=f"port to listen on (default {settings.PORT}; 0 picks a free one)")
    start.add_argument("--host", help="address to listen on (default: every interface)")
    start.add_argument("--log-level", choices=LOG_LEVELS, help=f"default {settings.LOG_LEVEL}")
    start.add_argument("--log-format", choices=logs.LOG_FORMATS, help=f"lines, or JSON objects (default {settings.LOG_FORMAT})")
    start.add_argument("--xheaders", action="store_true", default=None, help="trust X-Forwarded-For/-Proto from a reverse proxy")
    start.add_argument("--certfile", help="serve https/wss with this PEM certificate chain")
    start.add_argument("--keyfile", help="the certificate's PEM private key")
    start.add_argument("--redis", metavar="URL", help="join other nodes through this Redis (redis://host:6379/0)")
    start.add_argument("--processes", type=_count, help="worker processes sharing the port (needs --redis)")
    token = commands.add_parser(
        "token",
        help="print a join token signed with a shared secret of JOIN_TOKEN_KEYS (for scripts and tests)",
        description="Print a join token (JWT) signed with a shared secret of JOIN_TOKEN_KEYS, "
        "with the audience and issuer the server checks.",
    )
    token.add_argument("--id", required=True, help="the id the token admits (its sub claim)")
    scope = token.add_mutually_exclusive_group()
    scope.add_argument("--peer", metavar="ID", help="admit only a call with this peer_id (default: a call with anyone)")
    scope.add_argument("--room", metavar="ROOM", help="admit this room's socket (/wsroom) instead of a call")
    token.add_argument("--ttl", type=_seconds, default=DEFAULT_TTL, help=f"seconds the token is valid (default {DEFAULT_TTL})")
    token.add_argument("--kid", help="the key to sign with (needed when JOIN_TOKEN_KEYS has several shared secrets)")
    # The top-level --help shows what a newcomer needs first: how to start, with every option.
    parser.epilog = (
        "start the server:\n  "
        + start.format_usage().removeprefix("usage: ").strip()
        + "\n  (python webrtc_server.py start --help says what each option does)\n\n"
        "Every option of settings.py can also be set with a WEBRTC_<NAME> environment variable."
    )
    return parser


def _seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid lifetime {text!r}: expected a number of seconds from 1")
    return int(text)


def mint_token(args: argparse.Namespace) -> int:
    """The ``token`` command: print a join token, or one line saying why not."""
    try:
        config = settings.resolve()
        tokens = JoinTokens.from_config(config)
        if tokens is None:
            raise ValueError("JOIN_TOKEN_KEYS is empty: set it (or WEBRTC_JOIN_TOKEN_KEYS_FILE) to a shared secret first")
        pattern = re.compile(config.ID_PATTERN) if config.ID_PATTERN else None
        if args.room is not None:
            problem = check_room(args.id, args.room, config.MAX_ID_LENGTH, pattern)
        else:
            problem = check_ids(args.id, args.peer or "", config.MAX_ID_LENGTH, pattern)
        if problem:
            raise ValueError(problem)
        print(tokens.mint(args.id, peer=args.peer, room=args.room, ttl=args.ttl, kid=args.kid))
    except ValueError as exc:
        print(f"webrtc_server.py token: error: {exc}", file=sys.stderr)
        return 2
    return 0


def beyond_loopback(sockets: list[socket.socket]) -> bool:
    """Whether any of ``sockets`` listens on an address other machines can reach."""
    for sock in sockets:
        address = sock.getsockname()[0]
        try:
            if not ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
                return True
        except ValueError:
            return True
    return False


def warn_if_open(config: SimpleNamespace, sockets: list[socket.socket]) -> None:
    """One warning when anyone on the network may open a socket as any id."""
    if config.JOIN_TOKEN_KEYS or config.has_socket_pass is not settings.has_socket_pass or not beyond_loopback(sockets):
        return
    log.warning(
        "listening beyond loopback with neither join tokens (JOIN_TOKEN_KEYS) nor a socket policy (has_socket_pass): "
        "anyone who reaches this server may connect as any id and read what is sent to it "
        '(docs/operations.md, "On the internet")'
    )


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid process count {text!r}: expected a number from 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        return mint_token(args)
    overrides = {
        "XHEADERS": args.xheaders,
        "CERTFILE": args.certfile,
        "KEYFILE": args.keyfile,
        "REDIS_URL": args.redis,
        "PROCESSES": args.processes,
    }
    try:
        config = settings.resolve(**{name: value for name, value in overrides.items() if value is not None})
        tls_context(config.CERTFILE, config.KEYFILE)  # a bad certificate is a command-line error
        JoinTokens.from_config(config)  # so is a bad join token key
        Timing(float(config.DELIVERY_BOUND))  # and a delivery bound out of range
        if config.PROCESSES > 1 and not config.REDIS_URL:
            raise ValueError("--processes above 1 needs the Redis backplane (--redis URL or WEBRTC_REDIS_URL)")
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    level = args.log_level or str(config.LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        parser.exit(2, f"{parser.prog}: error: invalid LOG_LEVEL {level!r}: expected one of {', '.join(LOG_LEVELS)}\n")
    config.LOG_FORMAT = args.log_format or str(config.LOG_FORMAT).lower()
    if config.LOG_FORMAT not in logs.LOG_FORMATS:
        parser.exit(2, f"{parser.prog}: error: invalid LOG_FORMAT {config.LOG_FORMAT!r}: expected text or json\n")
    config.LOG_LEVEL = level
    logs.configure(level, config.LOG_FORMAT)
    host = config.HOST if args.host is None else args.host
    port = config.PORT if args.port is None else args.port
    try:
        # Workers each listen on a socket of their own (SO_REUSEPORT), so that the kernel
        # spreads connections over them instead of handing bursts to whichever wakes first.
        sockets = bind_sockets(port, address=host or None, reuse_port=config.PROCESSES > 1, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        # Port in use, address not available, ...: one line, not a traceback.
        parser.exit(1, f"{parser.prog}: error: cannot listen on {host or '*'}:{port}: {exc.strerror or exc}\n")
    warn_if_open(config, sockets)
    if config.PROCESSES > 1:
        return run_workers(config, sockets, host)
    asyncio.run(serve(config, sockets, host))
    return 0


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM if the supervising process dies, even by
    SIGKILL (supervisord's last resort), so no worker is left holding the port (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the parent process on this system")
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


#: A worker that ran this long before it exited is restarted at once, not after a crash loop's backoff.
STABLE_WORKER_SECONDS = 30.0


def run_workers(config: SimpleNamespace, sockets: list[socket.socket], host: str) -> int:
    """Fork PROCESSES workers sharing ``sockets``; pass SIGTERM/SIGINT on; restart a worker
    that dies on its own; exit 0 once all have stopped after a signal."""
    log.info("starting %d worker processes on %s", config.PROCESSES, listening_line(sockets, host, bool(config.CERTFILE)))
    workers: dict[int, int] = {}  # pid -> worker number
    started: dict[int, float] = {}  # pid -> when it was forked
    stopping = False
    parent = os.getpid()
    # The workers' private sockets, through which one /metrics scrape reaches them all.
    folder = tempfile.mkdtemp(prefix="webrtc_app-workers-")

    port = sockets[0].getsockname()[1]

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: a fresh event loop, its own node on the backplane
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() reloads keys on it
            logs.configure(config.LOG_LEVEL, config.LOG_FORMAT, worker=number)  # each line says which worker wrote it
            stop_with_parent(parent)
            try:
                own = bind_sockets(port, address=host or None, reuse_port=True, backlog=LISTEN_BACKLOG)
                for inherited in sockets:
                    inherited.close()
                asyncio.run(serve(config, own, host, WorkerGroup(folder, number, config.PROCESSES)))
                code = 0
            except Exception:  # noqa: BLE001 - logged, and the parent restarts us
                log.exception("worker %d failed", number)
                code = 1
            os._exit(code)
        workers[pid] = number
        started[pid] = time.monotonic()

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pass_on(signum: int, _frame: Any) -> None:
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, pass_on)  # each worker reads the join token keys again
    for number in range(config.PROCESSES):
        spawn(number)
    # The workers hold the port now (a listening socket nobody accepts on would take its
    # share of the connections and leave them hanging).
    for sock in sockets:
        sock.close()
    failures = 0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        number = workers.pop(pid, -1)
        ran = time.monotonic() - started.pop(pid, 0.0)
        if number < 0 or stopping:
            continue
        # A worker that crashes at once again and again waits longer each time (up to 5 s); one
        # that had been serving a while (or was restarted on purpose: a rolling restart) not.
        failures = failures + 1 if ran < STABLE_WORKER_SECONDS else 1
        log.warning("worker %d (pid %d) exited with status %d: restarting it", number, pid, os.waitstatus_to_exitcode(status))
        time.sleep(min(failures - 1, 5))
        spawn(number)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("all workers stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
