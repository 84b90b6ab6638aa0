"""Start and stop the processes that the tests run next to the code. The helpers the
benchmarks share, webrtc_app itself (``ServerProcess``), ``RedisServer`` and their common
shape ``HelperProcess`` (start, wait until ready, stop), and a Redis Cluster of several
redis-servers (the fault checker kills its masters too), are in bench/processes.py and
re-exported here; this module adds the test-only ones: coturn's ``TurnServer``, and ``run_cli()``.

A new helper subclasses ``HelperProcess``, or composes several, and says how to run it and how
to tell that it is ready. conftest.py's ``running()`` turns a missing program into a skip, or a
failure under CI.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)  # for the bench package, when pytest runs from elsewhere

from bench.processes import (  # noqa: E402 - the project folder first
    HelperProcess,
    MissingProgram,
    RedisCluster,
    RedisClusterNode,
    RedisServer,
    ServerProcess,
    Spawn,
    StartError,
    clean_environment,
    cluster_port,
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
