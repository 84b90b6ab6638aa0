"""The processes of one measurement, each started fresh and stopped after it: webrtc_app
(processes.py's ServerProcess, as the tests run it), the PeerJS server (bench/peerjs_server.mjs)
and redis-server; ``fresh()`` stops them whatever happens and checks their exits and logs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, TypeVar

import redis

from bench import BENCH_DIR, BenchError
from bench.config import WEBRTC_ENV, Config, Subject
from bench.processes import Cpus, HelperProcess, RedisServer, ServerProcess, Spawn, StartError

#: What webrtc_app logs when something went wrong while it served (a node, or a worker's parent).
TROUBLE = ("lost Redis", "not reachable", "restarting it", "Traceback")

P = TypeVar("P", bound=HelperProcess)


class Webrtc(ServerProcess):
    """webrtc_app under test."""

    kind = "webrtc_app"

    def metrics(self) -> dict[str, float]:
        """Its /metrics as {sample: value}, labelled samples too (``name{label="x"}``)."""
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


class PeerJSServer(HelperProcess):
    """bench/peerjs_server.mjs: the PeerJS server as an application embeds it. It picks a free
    port and prints it; ready when that port accepts connections."""

    kind = "peerjs"

    def __init__(self, node: str, npm_dir: str, *, log_path: str, spawn: Spawn, limit: int = 100_000) -> None:
        super().__init__(binary=node, log_path=log_path, spawn=spawn)
        self.npm_dir = npm_dir
        self.limit = limit

    @property
    def name(self) -> str:
        return "PeerJS"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def metrics(self) -> None:
        return None  # it has none

    def prepare(self) -> None:
        self.port = 0

    def command(self) -> list[str]:
        assert self.binary
        script = os.path.join(BENCH_DIR, "peerjs_server.mjs")
        return [self.binary, script, "--host", "127.0.0.1", "--port", "0", "--concurrent_limit", str(self.limit)]

    def popen_options(self) -> dict[str, Any]:
        env = {**os.environ, "BENCH_PEER_MODULES": os.path.join(self.npm_dir, "peer", "node_modules")}
        return {"cwd": BENCH_DIR, "env": env}

    def ready(self) -> bool:
        match = re.search(r"peerjs listening on http://[^:]+:(\d+)", self.output())
        if not match:
            return False
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=2):
            self.port = int(match.group(1))
            return True


Server = Webrtc | PeerJSServer


def alive(process: HelperProcess) -> None:
    """Raise BenchError (with the end of its log) if ``process`` has exited."""
    if not process.running:
        status = process.proc.returncode if process.proc else None
        raise BenchError(f"{process.name} (pid {process.pid}) exited with {status}:\n{process.log_tail()}")


def start(cfg: Config, process: P) -> P:
    """``process`` started (StartError becomes BenchError)."""
    try:
        return process.start(cfg.start_timeout)
    except StartError as exc:
        raise BenchError(str(exc)) from None


def start_webrtc(
    cfg: Config,
    name: str,
    cpu: Cpus,
    redis_url: str | None = None,
    args: tuple[str, ...] = (),
    log_level: str = "warning",
    limit: int | None = None,
    folder: str | None = None,
) -> Webrtc:
    """webrtc_app (from ``folder``, default the first revision's) pinned to ``cpu``; a node of the
    Redis backplane at ``redis_url`` when given, ready once /metrics says it is connected; ``args``
    are more of its options; holding at most ``limit`` sockets when given (WEBRTC_MAX_SOCKETS).
    At log level warning it prints no "listening" line: ServerProcess picks the port and waits for /healthz."""
    server = start(
        cfg,
        Webrtc(
            *(["--redis", redis_url] if redis_url else []),
            *args,
            env={**WEBRTC_ENV, "WEBRTC_MAX_SOCKETS": str(limit)} if limit else WEBRTC_ENV,
            python=cfg.python,
            cwd=folder or cfg.revisions[0].folder,
            log_level=log_level,
            log_path=os.path.join(cfg.log_dir, f"{name}.log"),
            spawn=cfg.children.on_cpu(cpu),
        ),
    )
    deadline = time.monotonic() + cfg.start_timeout
    while redis_url and not _connected(server):
        if not server.running or time.monotonic() > deadline:
            why = "timed out" if server.running else "exited"
            server.stop(timeout=10)
            raise BenchError(f"webrtc_app's Redis backplane did not start ({why}):\n{server.output()[-3000:]}")
        time.sleep(0.05)
    return server


def _connected(server: Webrtc) -> bool:
    """Every node of ``server`` is connected to Redis (each worker's, under --processes)."""
    try:
        flags = [value for name, value in server.metrics().items() if name.split("{")[0] == "webrtc_backplane_connected"]
    except OSError:
        return False
    return bool(flags) and all(flag == 1 for flag in flags)


def start_server(cfg: Config, subject: Subject, name: str, limit: int | None = None) -> Server:
    """A fresh server under test (a webrtc_app revision, or PeerJS) on the server's CPU; its log is
    ``name``.log. ``limit``: the most sockets it holds (default: more than its descriptors allow)."""
    if subject.kind == "webrtc_app":
        return start_webrtc(cfg, name, cfg.server_cpu, limit=limit, folder=subject.folder)
    spawn = cfg.children.on_cpu(cfg.server_cpu)
    log_path = os.path.join(cfg.log_dir, f"{name}.log")
    return start(cfg, PeerJSServer(cfg.node, cfg.npm_dir, log_path=log_path, spawn=spawn, limit=limit or 100_000))


def start_redis(cfg: Config, name: str, cpus: Cpus = None) -> RedisServer:
    """A fresh redis-server of our own on a free port (no persistence), on the CPU of the
    --cluster layout, or on ``cpus`` when given."""
    log_path = os.path.join(cfg.log_dir, f"{name}.redis.log")
    spawn = cfg.children.on_cpu(cpus or cfg.cluster_cpus["redis"])
    return start(cfg, RedisServer("--dir", cfg.log_dir, binary=cfg.redis_server, log_path=log_path, spawn=spawn))


def stop_checked(process: HelperProcess) -> None:
    """Stop a process that must still be running: it must exit with status 0 or SIGTERM's, log no
    error, and webrtc_app must have logged no TROUBLE before it was told to stop (a node closing
    its connections as it shuts down may say "lost Redis", which loses nothing measured)."""
    alive(process)
    before = process.output() if isinstance(process, Webrtc) else ""
    status = process.stop(timeout=10)
    trouble = [line for line in before.splitlines() if any(word in line for word in TROUBLE)]
    if trouble:
        raise BenchError(f"{process.name} logged trouble while it served:\n" + "\n".join(trouble[-20:]))
    text = process.log_tail(200)
    if "Traceback" in text or "peerjs error" in text:
        raise BenchError(f"{process.name} logged an error:\n{text[-3000:]}")
    if status not in (0, -signal.SIGTERM):
        raise BenchError(f"{process.name} stopped with exit status {status}:\n{text[-3000:]}")


class Processes(list[HelperProcess]):
    def add(self, process: P) -> P:
        """``process``, now one of the measurement's."""
        self.append(process)
        return process


@contextlib.contextmanager
def fresh(what: str) -> Iterator[Processes]:
    """The processes of one measurement, which the body starts and add()s: stopped afterwards, the
    last first, and checked (stop_checked) if the body succeeded. A BenchError or Redis error of
    the body comes back as a BenchError that says ``what`` and ends with each one's log."""
    procs = Processes()
    try:
        yield procs
    except BaseException as exc:
        tails = "".join(
            f"\n{p.name} ({'still running' if p.running else 'exited'}), end of {p.log_path}:\n{p.log_tail()}" for p in procs
        )
        for process in reversed(procs):
            process.stop(timeout=10)
        if isinstance(exc, BenchError | redis.RedisError):
            raise BenchError(f"{what}: {exc}{tails}") from None
        raise
    for process in reversed(procs):
        stop_checked(process)
