"""Start and stop the processes that the benchmarks and the tests run next to the code:
webrtc_app itself (``ServerProcess``) and ``RedisServer``, each a ``HelperProcess``; and
``Children``, the processes of one benchmark run, pinned to CPUs and ended whatever happens.

A helper's ``start()`` runs its ``command()`` and waits until ``ready()`` says it serves,
``stop()`` ends it (a signal, then SIGKILL if it lingers), and ``with helper:`` does both. One
that picked its own free port and lost it to another process before binding it is started
again on another port; once started, it keeps its port for a restart. Its output goes to
``log_path`` when one is given, else it is collected in memory (``output()``,
``wait_for_line()``). tests/processes.py re-exports these and adds the test-only helpers (a
Redis Cluster, turnserver). Only the standard library and redis-py.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import IO, Any, ClassVar, Self

import redis

from bench import log

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on https?://\S+:(\d+)")
ADDRESS_IN_USE = re.compile(r"address already in use", re.I)
QUIET_LOG_LEVELS = ("warning", "error", "critical")

#: Starts a command, as ``subprocess.Popen(cmd, **kwargs)`` does (Children.on_cpu() pins it to a CPU).
Spawn = Callable[..., "subprocess.Popen[Any]"]
#: Where a child may run: one CPU, a tuple of CPUs, or None (wherever the parent may).
Cpus = int | tuple[int, ...] | None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without WEBRTC_* (a developer's own settings), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBRTC_")}
    env.update(extra)
    return env


_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Loaded in the parent: between fork and exec the child should only call, not dlopen.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, with the child sent SIGTERM when its parent dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG), so a killed test run or benchmark leaves no helper behind."""
    libc = _libc()

    def die_with_parent() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return subprocess.Popen(cmd, preexec_fn=die_with_parent, **kwargs)


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
    """Send ``signum`` (SIGTERM), then SIGKILL if the process lingers ``timeout`` seconds; answers its exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signum)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    return proc.returncode


class MissingProgram(RuntimeError):
    """A helper's program is not installed."""

    def __init__(self, what: str, install: str) -> None:
        super().__init__(f"{what} is not available: {install}")
        self.what = what
        self.install = install


class StartError(RuntimeError):
    """A helper process exited, or did not become ready in time."""


def find_program(name: str, install: str, given: str | None = None, what: str | None = None) -> str:
    """The path of ``given``, else of ``name`` on PATH or in /usr/bin or /usr/sbin; raises MissingProgram."""
    candidates = [given] if given else [shutil.which(name), f"/usr/bin/{name}", f"/usr/sbin/{name}"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise MissingProgram(what or name, install)


class HelperProcess:
    """One program run for a test or a benchmark. Subclasses say ``command()`` and ``ready()``,
    and may choose ports in ``prepare()`` and add Popen options (cwd, env) in ``popen_options()``."""

    program: ClassVar[str] = ""  # looked up with find_program() unless ``binary`` is given; "" for none
    what: ClassVar[str] = ""  # how skip messages name it (default: program)
    install: ClassVar[str] = ""  # how to install it, for the skip message
    start_timeout: ClassVar[float] = 15.0
    stop_timeout: ClassVar[float] = 10.0

    def __init__(
        self, *, port: int = 0, binary: str | None = None, log_path: str | None = None, spawn: Spawn | None = None
    ) -> None:
        self.port = port
        self.fixed_port = bool(port)
        self.binary = binary
        self.log_path = log_path
        self.spawn = spawn or popen
        self.proc: subprocess.Popen[Any] | None = None
        self.lines: list[str] = []  # the output, when it is not written to log_path
        self._more_output = threading.Condition()
        self._eof = True
        self._pump: threading.Thread | None = None

    # ---------------------------------------------------------------- what a helper says

    @property
    def name(self) -> str:
        return self.program or type(self).__name__

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the process serves (polled while it starts; OSError counts as not yet)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before each attempt to start: pick a free port unless one was given (or kept from a start)."""
        if not self.fixed_port:
            self.port = free_port()

    def popen_options(self) -> dict[str, Any]:
        """Extra keyword arguments for Popen, such as cwd and env."""
        return {}

    # ---------------------------------------------------------------- the common shape

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Run the command and wait until ready(); raises StartError (with the output) if it is not."""
        if self.binary is None and self.program:
            self.binary = find_program(self.program, self.install, what=self.what or None)
        timeout = self.start_timeout if timeout is None else timeout
        attempts = 1 if self.fixed_port else 3
        attempt = 1
        while True:
            self.prepare()
            self._launch(append=attempt > 1)
            if self._wait_until_ready(timeout):
                self.fixed_port = True  # a restart comes back on the same port
                return self
            status = self.proc.poll() if self.proc else None
            output = self.output()
            self.stop(timeout=5)
            if status is not None and attempt < attempts and ADDRESS_IN_USE.search(output):
                attempt += 1  # another process took the free port before this one bound it
                continue
            why = f"exit status {status}" if status is not None else f"not ready within {timeout:g} s"
            raise StartError(f"{self.name} did not start ({why}):\n{output[-3000:]}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float | None = None) -> int | None:
        """Send ``signum``, wait (SIGKILL after ``timeout`` s) and answer the exit status; all its output is then collected."""
        if self.proc is None:
            return None
        status = terminate(self.proc, self.stop_timeout if timeout is None else timeout, signum)
        if self._pump is not None:
            self._pump.join(2)  # the last lines, unless a child of it still holds the pipe
        return status

    def kill(self) -> None:
        """SIGKILL, no waiting for a clean exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- output

    def output(self) -> str:
        """Everything it printed so far."""
        if self.log_path:
            try:
                with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                    return handle.read()
            except OSError:
                return ""
        with self._more_output:
            return "\n".join(self.lines)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of output()."""
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout: float = 10.0) -> str:
        """The first line (already printed or coming) matching ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            lines, more = self._lines_so_far()
            for line in lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(lines)
            if not more:
                raise AssertionError(f"{self.name} exited before logging {regex.pattern!r}:\n" + "\n".join(lines))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line matching {regex.pattern!r}; got:\n" + "\n".join(lines))
            self._await_output(seen, remaining)

    def _launch(self, append: bool) -> None:
        cmd = self.command()
        options = {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, **self.popen_options()}
        if self.log_path:
            with open(self.log_path, "ab" if append else "wb") as out:
                self.proc = self.spawn(cmd, stdout=out, **options)
            return
        self.proc = self.spawn(cmd, stdout=subprocess.PIPE, text=True, errors="replace", **options)
        self._eof = False
        self._pump = threading.Thread(target=self._collect, args=(self.proc.stdout,), daemon=True)
        self._pump.start()

    def _collect(self, stream: IO[str]) -> None:
        with stream:  # closed at the end of the output, not left to the garbage collector
            for line in stream:
                with self._more_output:
                    self.lines.append(line.rstrip("\n"))
                    self._more_output.notify_all()
        with self._more_output:
            self._eof = True
            self._more_output.notify_all()

    def _lines_so_far(self) -> tuple[list[str], bool]:
        """Every line of output so far, and whether more may come."""
        if self.log_path:
            more = self.running  # asked before reading, so nothing printed before the exit is missed
            return self.output().splitlines(), more
        with self._more_output:
            return list(self.lines), not self._eof

    def _await_output(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` s for more than ``seen`` lines (polls a log file every 50 ms)."""
        if self.log_path:
            time.sleep(min(timeout, 0.05))
            return
        with self._more_output:
            if len(self.lines) == seen and not self._eof:
                self._more_output.wait(timeout)

    def _wait_until_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            try:
                if self.ready():
                    return True
            except OSError:
                pass
            self._await_output(len(self.lines), min(0.05, max(0.0, deadline - time.monotonic())))
        return False


class ServerProcess(HelperProcess):
    """webrtc_app as a user runs it: ``python webrtc_server.py start PORT --host 127.0.0.1 ARGS``.

    Ready when it logs its "listening on" line (which says the port: by default it picks one);
    at a quiet ``log_level`` (warning and above), which prints no such line, the port is picked
    here and it is ready when ``GET /healthz`` answers.
    """

    stop_timeout = 15.0

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int = 0,
        python: str = sys.executable,
        cwd: str = PROJECT_DIR,
        log_level: str | None = None,
        log_path: str | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        super().__init__(port=port, log_path=log_path, spawn=spawn)
        self.args = list(args)
        self.env = clean_environment(**(env or {}))
        self.python = python
        self.cwd = cwd
        self.log_level = log_level
        self.quiet = log_level in QUIET_LOG_LEVELS

    @property
    def name(self) -> str:
        return "webrtc_app"

    def prepare(self) -> None:
        if not self.fixed_port and not self.quiet:
            self.port = 0  # the server picks a free port and says which
        else:
            super().prepare()

    def command(self) -> list[str]:
        level = ["--log-level", self.log_level] if self.log_level else []
        return [self.python, "webrtc_server.py", "start", str(self.port), "--host", "127.0.0.1", *level, *self.args]

    def popen_options(self) -> dict[str, Any]:
        return {"cwd": self.cwd, "env": self.env}

    def ready(self) -> bool:
        if not self.quiet:
            match = LISTENING.search(self.output())
            if match:
                self.port = int(match.group(1))
            return bool(match)
        with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as response:
            if response.status != 200 or b'"ok"' not in response.read():
                return False
        time.sleep(0.2)  # someone else's server on a port we raced for answers too: ours must still run
        return self.running

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        # A test's server needs no clean shutdown (tests of the shutdown call stop() themselves).
        self.kill()


class RedisServer(HelperProcess):
    """redis-server on a free loopback port with no persistence; ``args`` are more of its
    options (``--dir``, ``--cluster-enabled yes``, ...). Ready when it answers PING and INFO
    says it is this process (not another redis-server on a port we raced for)."""

    program = "redis-server"
    install = "apt-get install -y redis-server"

    def __init__(
        self,
        *args: str,
        port: int = 0,
        binary: str | None = None,
        log_path: str | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        super().__init__(port=port, binary=binary, log_path=log_path, spawn=spawn)
        self.args = list(args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        assert self.binary
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self.args]

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A redis-py client of this server (replies decoded to str)."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def ready(self) -> bool:
        try:
            with self.client(timeout=2) as client:
                return client.ping() and client.info("server").get("process_id") == self.pid
        except redis.RedisError:  # not listening yet, or still loading
            return False


#: A cluster node also listens on its port + 10000, for the other nodes (the cluster bus).
CLUSTER_BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free port whose cluster bus port is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise StartError("no free port pair for a Redis Cluster node")


class RedisClusterNode(RedisServer):
    """One redis-server of a Redis Cluster, its cluster state in ``folder``."""

    def __init__(self, folder: str, node_timeout_ms: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        self.node_timeout_ms = node_timeout_ms

    def prepare(self) -> None:
        if not self.fixed_port:
            self.port = cluster_port()

    def command(self) -> list[str]:
        return [
            *super().command(), "--cluster-enabled", "yes", "--dir", self.folder,
            "--cluster-config-file", f"nodes-{self.port}.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
            # Replicas copy their master at once, not after the default 5 s wait for more
            # replicas: a replica that never synced refuses to take over.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip


class RedisCluster:
    """A real Redis Cluster: ``masters`` masters with ``replicas`` replicas each, made the way
    an operator makes one (``redis-server --cluster-enabled yes`` for each node, then
    ``redis-cli --cluster create``). A short ``node_timeout_ms`` so a failover takes a second
    or two. Ready when every node says the cluster is ok and every replica has synced."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000, folder: str | None = None) -> None:
        self.masters_wanted = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.folder = folder or ""
        self._own_folder = folder is None
        self.nodes: list[RedisClusterNode] = []

    @property
    def url(self) -> str:
        """Any live node's address will do: the backplane learns the others from it."""
        return (self.live() or self.nodes)[0].url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 30.0) -> Self:
        cli = find_program("redis-cli", RedisServer.install)
        if self._own_folder:
            self.folder = tempfile.mkdtemp(prefix="webrtc-redis-cluster-")
        try:
            for _ in range(self.masters_wanted * (1 + self.replicas)):
                self.nodes.append(RedisClusterNode(self.folder, self.node_timeout_ms).start())
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"]
            result = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                raise StartError(f"redis-cli --cluster create failed:\n{result.stdout[-2000:]}{result.stderr[-1000:]}")
            wait_until(self.healthy, timeout, "the Redis Cluster to be healthy")
            wait_until(self.replicas_in_sync, timeout, "every replica of the Redis Cluster to copy its master")
        except BaseException:
            self.stop()
            raise
        return self

    def info(self, node: RedisServer, section: str) -> dict[str, Any]:
        try:
            with node.client(timeout=2) as client:
                return client.info(section)
        except redis.RedisError:
            return {}

    def live(self) -> list[RedisClusterNode]:
        return [node for node in self.nodes if node.running]

    def healthy(self) -> bool:
        """Every live node says the cluster is ok (every slot is served)."""
        return all(self.info(node, "cluster").get("cluster_enabled") and self._state(node) == "ok" for node in self.live())

    def _state(self, node: RedisServer) -> str:
        try:
            with node.client(timeout=2) as client:
                return str(client.execute_command("CLUSTER", "INFO")).split("cluster_state:", 1)[1].split()[0]
        except (redis.RedisError, IndexError):
            return ""

    def replicas_in_sync(self) -> bool:
        roles = [self.info(node, "replication") for node in self.live()]
        replicas = [role for role in roles if role.get("role") == "slave"]
        return len(replicas) == self.masters_wanted * self.replicas and all(r.get("master_link_status") == "up" for r in replicas)

    def masters(self) -> list[int]:
        """Ports of the live masters, as the cluster sees them."""
        return sorted(node.port for node in self.live() if self.info(node, "replication").get("role") == "master")

    def owner(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot."""
        for node in self.live():
            try:
                with node.client(timeout=2) as client:
                    slot = client.execute_command("CLUSTER", "KEYSLOT", key)
                    for low, high, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                        if low <= slot <= high:
                            return int(master[1])
            except redis.RedisError:
                continue
        raise StartError(f"no live node of the cluster knows who serves {key!r}")

    def kill(self, port: int) -> None:
        """A master's machine dies: SIGKILL, no goodbye."""
        next(node for node in self.nodes if node.port == port).kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._own_folder and self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; answers how long it took (an AssertionError past ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


class Children:
    """Every process a benchmark run started, so that the run ends them all, even on an error or Ctrl-C."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(self, cmd: list[str], cpu: Cpus = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """``popen(cmd, **kwargs)``, pinned with taskset to ``cpu`` (or the CPUs of a tuple) when given."""
        if cpu is not None:
            cpus = ",".join(str(c) for c in cpu) if isinstance(cpu, tuple) else str(cpu)
            cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs cmd: the pid stays the command's
        proc = popen(cmd, **kwargs)
        self._procs = [p for p in self._procs if p.poll() is None]
        self._procs.append(proc)
        return proc

    def on_cpu(self, cpu: Cpus) -> Spawn:
        """spawn() pinned to ``cpu``, for a helper process."""
        return functools.partial(self.spawn, cpu=cpu)

    def cleanup(self) -> None:
        """End every process still running (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self._procs:
            try:
                terminate(proc, timeout=5)
            except Exception as exc:  # noqa: BLE001 - cleaning up, keep going
                log(f"could not stop pid {proc.pid}: {exc}")
        self._procs = []
