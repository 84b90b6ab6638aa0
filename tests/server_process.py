"""Run the real server as a user does (``python webrtc_server.py start PORT``) for a test."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on https?://\S+:(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without WEBRTC_* (a developer's own settings), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBRTC_")}
    env.update(extra)
    return env


class ServerProcess:
    """The server in a child process; its log lines are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int = 0) -> None:
        self.args = ["start", str(port), "--host", "127.0.0.1", *args]
        self.env = clean_environment(**(env or {}))
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "webrtc_server.py", *self.args],
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        line = self.wait_for_line(LISTENING, timeout)
        self.port = int(LISTENING.search(line).group(1))  # type: ignore[union-attr]
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout: float = 10.0) -> str:
        """The first line (already seen or coming) matching ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line matching {regex.pattern!r}; got:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited before logging {regex.pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if regex.search(line):
                return line

    def output(self) -> str:
        """Everything logged so far (drains what is queued)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.output()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def terminate(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a helper process (redis-server, turnserver), then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python webrtc_server.py ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "webrtc_server.py", *args],
        cwd=PROJECT_DIR,
        env=clean_environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
