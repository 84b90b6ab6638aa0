"""The servers under test, each freshly started for a measurement and stopped after it:
webrtc_app (tests/processes.py's ServerProcess, as the tests run it) and the PeerJS server
(bench/peerjs_server.mjs)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import BENCH_DIR, BenchError
from bench.config import WEBRTC_ENV, Config
from bench.processes import Cpus, HelperProcess, ServerProcess, Spawn, StartError


@dataclass
class Server:
    """A server under test: ``kind`` is "webrtc_app" or "peerjs"."""

    kind: str
    process: HelperProcess

    @property
    def proc(self) -> subprocess.Popen[Any]:
        assert self.process.proc is not None
        return self.process.proc

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return self.process.log_path or ""

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines)

    def check_alive(self) -> None:
        """Raise BenchError (with the end of its log) if the server has exited."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.kind} (pid {self.pid}) exited with {self.proc.returncode}:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float] | None:
        """webrtc_app's /metrics as {name: value} for unlabelled samples (None for PeerJS)."""
        if self.kind != "webrtc_app":
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+) (\S+)$", text, re.M)}


class PeerJSServer(HelperProcess):
    """bench/peerjs_server.mjs: the PeerJS server as an application embeds it. It picks a free
    port and prints it; ready when that port accepts connections."""

    def __init__(self, node: str, npm_dir: str, *, log_path: str, spawn: Spawn, limit: int = 100_000) -> None:
        super().__init__(binary=node, log_path=log_path, spawn=spawn)
        self.npm_dir = npm_dir
        self.limit = limit

    @property
    def name(self) -> str:
        return "PeerJS"

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


def _start(process: HelperProcess, cfg: Config) -> None:
    try:
        process.start(cfg.start_timeout)
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
) -> Server:
    """webrtc_app pinned to ``cpu``; a node of the Redis backplane at ``redis_url`` when given;
    ``args`` are more of its options (``--processes N``); holding at most ``limit`` sockets
    when given (WEBRTC_MAX_SOCKETS)."""
    # At --log-level warning it prints no "listening" line: ServerProcess picks the port and waits for /healthz.
    process = ServerProcess(
        *(["--redis", redis_url] if redis_url else []),
        *args,
        env={**WEBRTC_ENV, "WEBRTC_MAX_SOCKETS": str(limit)} if limit else WEBRTC_ENV,
        python=cfg.python,
        cwd=cfg.server_dir,
        log_level=log_level,
        log_path=os.path.join(cfg.log_dir, f"{name}.log"),
        spawn=cfg.children.on_cpu(cpu),
    )
    _start(process, cfg)
    server = Server("webrtc_app", process)
    server.check_alive()
    if redis_url:
        _wait_until(
            lambda: (server.metrics() or {}).get("webrtc_backplane_connected") == 1,
            server,
            "webrtc_app's Redis backplane",
            cfg.start_timeout,
        )
    return server


def start_peerjs(cfg: Config, name: str, limit: int | None = None) -> Server:
    """The PeerJS server pinned to the server's CPU; holding at most ``limit`` sockets when given (concurrent_limit)."""
    log_path = os.path.join(cfg.log_dir, f"{name}.log")
    spawn = cfg.children.on_cpu(cfg.server_cpu)
    process = PeerJSServer(cfg.node, cfg.npm_dir, log_path=log_path, spawn=spawn, limit=limit or 100_000)
    _start(process, cfg)
    return Server("peerjs", process)


def start_server(cfg: Config, kind: str, name: str, limit: int | None = None) -> Server:
    """A fresh server of ``kind`` ("webrtc_app" or "peerjs") on the server's CPU; its log is ``name``.log.
    ``limit``: the most sockets it holds (default: more than its descriptors allow)."""
    if kind == "webrtc_app":
        return start_webrtc(cfg, name, cfg.server_cpu, limit=limit)
    return start_peerjs(cfg, name, limit)


def stop_server(server: Server) -> None:
    """Stop a server that must still be running, and check its exit status and its log."""
    server.check_alive()
    status = server.process.stop(timeout=10)
    text = server.log_tail(200)
    if "Traceback" in text or "peerjs error" in text:
        raise BenchError(f"{server.kind} logged an error:\n{text[-3000:]}")
    if status not in (0, -signal.SIGTERM):
        raise BenchError(f"{server.kind} stopped with exit status {status}:\n{text[-3000:]}")


def _wait_until(predicate: Callable[[], bool], server: Server, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    status = server.proc.poll()
    tail = server.process.output()[-3000:]
    server.process.stop(timeout=10)
    raise BenchError(f"{what} did not start ({'exit status ' + str(status) if status is not None else 'timed out'}):\n{tail}")
