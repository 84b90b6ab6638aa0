"""Start and stop the processes that the tests run next to the code. The helpers the
benchmarks share, webrtc_app itself (``ServerProcess``), ``RedisServer`` and their common
shape ``HelperProcess`` (start, wait until ready, stop), are in bench/processes.py and
re-exported here; this module adds the test-only ones: a Redis Cluster of several
redis-servers, coturn's ``TurnServer``, and ``run_cli()``.

A new helper subclasses ``HelperProcess``, or composes several, and says how to run it and how
to tell that it is ready. conftest.py's ``running()`` turns a missing program into a skip, or a
failure under CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from typing import Any, Self

import redis

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)  # for the bench package, when pytest runs from elsewhere

from bench.processes import (  # noqa: E402 - the project folder first
    HelperProcess,
    MissingProgram,
    RedisServer,
    ServerProcess,
    Spawn,
    StartError,
    clean_environment,
    find_program,
    free_port,
    popen,
    terminate,
    wait_until,
)

__all__ = [
    "PROJECT_DIR",
    "HelperProcess",
    "MissingProgram",
    "RedisServer",
    "ServerProcess",
    "Spawn",
    "StartError",
    "clean_environment",
    "find_program",
    "free_port",
    "popen",
    "terminate",
    "wait_until",
    "RedisCluster",
    "RedisClusterNode",
    "TurnServer",
    "cluster_port",
    "free_udp_port",
    "run_cli",
    "stun_binding_answered",
]


def free_udp_port(tcp_too: bool = False) -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (and, with ``tcp_too``, free for TCP
    as well: coturn listens on both, and waits forever for a TCP port another test holds)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if not tcp_too:
                return port
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise StartError("no port free for both UDP and TCP")


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


class TurnServer(HelperProcess):
    """coturn's turnserver on a free loopback UDP port, giving TURN REST credentials signed
    with ``secret`` (``--use-auth-secret``), its database and pid file in ``folder``. Ready
    when it answers a STUN Binding request."""

    program = "turnserver"
    what = "coturn's turnserver"
    install = "apt-get install -y coturn"

    def __init__(
        self,
        secret: str,
        folder: str | os.PathLike[str],
        *,
        realm: str = "webrtc-app-test",
        port: int = 0,
        binary: str | None = None,
        log_path: str | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        super().__init__(port=port, binary=binary, log_path=log_path, spawn=spawn)
        self.secret = secret
        self.folder = os.fspath(folder)
        self.realm = realm
        self.relay_low = 0

    def prepare(self) -> None:
        if not self.fixed_port:
            self.port = free_udp_port(tcp_too=True)
        self.relay_low = free_port()  # the start of 21 relay ports

    def command(self) -> list[str]:
        assert self.binary
        return [
            self.binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={self.port}", "--relay-ip=127.0.0.1",
            f"--min-port={self.relay_low}", f"--max-port={self.relay_low + 20}", "--use-auth-secret",
            f"--static-auth-secret={self.secret}", f"--realm={self.realm}", "--allow-loopback-peers",
            "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--log-file=stdout", "--simple-log",
            f"--userdb={os.path.join(self.folder, 'turndb')}", f"--pidfile={os.path.join(self.folder, 'turn.pid')}",
        ]  # fmt: skip

    def ready(self) -> bool:
        return stun_binding_answered(self.port)


def stun_binding_answered(port: int, timeout: float = 0.5) -> bool:
    """Whether a STUN server on 127.0.0.1:``port`` (UDP) answers a Binding request (RFC 5389)."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            answer = sock.recv(2048)
        except TimeoutError:
            return False
    return len(answer) >= 20 and answer[8:20] == transaction and answer[:2] in (b"\x01\x01", b"\x01\x11")


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
