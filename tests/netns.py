"""Networks where peers cannot reach each other, built from network namespaces.

The rules are /work/shared/NETWORK-TESTS.md's (and the team's): only the RFC 5737
documentation ranges, IPv6 off before any link comes up, no default route, an nftables guard
per namespace that counts every packet leaving for anywhere else (the tests assert zero),
unique names, and everything deleted in a ``finally``.

``TurnLab`` is the shape the call tests use::

    a (198.51.100.2) --veth-- srv (203.0.113.1 on lo: webrtc_app, coturn) --veth-- b (192.0.2.2)

``srv`` does not forward, so ``a`` and ``b`` reach the server but never each other: only a
TURN relay on ``srv`` can carry a call between them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence

from bench.netns import (  # noqa: F401 - the namespaces themselves, shared with bench/faults.py
    DOCUMENTATION_RANGES,
    SERVICE_ADDRESS,
    SERVICE_NET,
    Host,
    Namespace,
    NamespaceServer,
    missing_tools,
    run,
)

from processes import HelperProcess

TURN_PORT = 3478
TURN_SECRET = "netns-turn-secret-for-tests"
TURN_REALM = "webrtc-app-netns"

# coturn as the lab runs it; docs/operations.md shows the same settings (tests/test_docs.py
# checks). Only TURN over UDP and TCP: the lab has no certificate a browser would trust.
COTURN_SETTINGS = [
    f"listening-ip={SERVICE_ADDRESS}",
    f"relay-ip={SERVICE_ADDRESS}",
    f"listening-port={TURN_PORT}",
    "min-port=49152",
    "max-port=49652",  # room for every allocation of a module's calls, restarts and renewals
    "use-auth-secret",
    f"static-auth-secret={TURN_SECRET}",
    f"realm={TURN_REALM}",
    "fingerprint",
    "no-cli",
    "no-tls",
    "no-dtls",
    "no-multicast-peers",
    # Relay between documentation addresses only.
    "denied-peer-ip=0.0.0.0-255.255.255.255",
    "allowed-peer-ip=192.0.2.0-192.0.2.255",
    "allowed-peer-ip=198.51.100.0-198.51.100.255",
    "allowed-peer-ip=203.0.113.0-203.0.113.255",
]


class NamespaceTurnServer(HelperProcess):
    """coturn inside a namespace, from a configuration file; ready once it listens on UDP and TCP."""

    program = "turnserver"
    what = "coturn's turnserver"
    install = "apt-get install -y coturn"

    def __init__(self, ns: Namespace, conf: str) -> None:
        super().__init__(port=TURN_PORT)
        self.ns, self.conf = ns, conf

    def command(self) -> list[str]:
        assert self.binary
        return [*self.ns.prefix(), self.binary, "-c", self.conf, "--log-file=stdout"]

    def ready(self) -> bool:
        sockets = self.ns.run("ss", "-lntu", check=False).stdout
        return len(re.findall(rf"{re.escape(SERVICE_ADDRESS)}:{TURN_PORT}\b", sockets)) >= 2


def turn_entries(transports: Sequence[str] = ("udp", "tcp"), secret: str = TURN_SECRET) -> list[dict[str, object]]:
    """The ``iceServers`` setting for the lab's coturn: TURN REST credentials from the secret."""
    urls = [f"turn:{SERVICE_ADDRESS}:{TURN_PORT}?transport={transport}" for transport in transports]
    return [{"urls": urls, "secret": secret, "ttl": 3600}]


class TurnLab:
    """srv (server + coturn), a and b; see the module's docstring. Use as a context manager."""

    def __init__(self) -> None:
        self.tag = f"wrtc{os.getpid()}{uuid.uuid4().hex[:6]}"
        self.namespaces: list[Namespace] = []
        self.turn: NamespaceTurnServer | None = None
        self.servers: dict[str, NamespaceServer] = {}
        self.folder = tempfile.mkdtemp(prefix=f"{self.tag}-")

    def __enter__(self) -> TurnLab:
        try:
            self.srv = self._namespace("srv")
            self.srv.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
            self.srv.run("ip", "addr", "add", f"{SERVICE_ADDRESS}/32", "dev", "lo")
            self.a = Host(self._namespace("a"), self.srv, "veth-a", "198.51.100.0/24")
            self.b = Host(self._namespace("b"), self.srv, "veth-b", "192.0.2.0/24")
            self.start_turn()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _namespace(self, role: str) -> Namespace:
        ns = Namespace(f"{self.tag}-{role}")
        self.namespaces.append(ns)
        return ns

    def start_turn(self) -> None:
        """coturn on 203.0.113.1:3478 (UDP and TCP), relaying only between documentation addresses."""
        conf = os.path.join(self.folder, "turnserver.conf")
        files = [f"userdb={os.path.join(self.folder, 'turndb')}", f"pidfile={os.path.join(self.folder, 'turn.pid')}"]
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("\n".join([*COTURN_SETTINGS, *files, "simple-log", ""]))
        self.turn = NamespaceTurnServer(self.srv, conf).start()

    def server(self, name: str, ice_servers: list[dict[str, object]], port: int, token: str = "lab-token") -> NamespaceServer:
        """webrtc_app on 203.0.113.1:``port`` handing out ``ice_servers``; ``self.servers[name]``."""
        env = {"WEBRTC_ICE_SERVERS": json.dumps(ice_servers), "WEBRTC_ICE_ACCESS_TOKEN": token}
        server = NamespaceServer(self.srv, SERVICE_ADDRESS, port, env)
        self.servers[name] = server
        return server.start()

    def leaks(self) -> dict[str, int]:
        """Packets each namespace tried to send outside loopback and the documentation ranges."""
        return {ns.name: ns.counter("leaked") for ns in self.namespaces}

    def close(self) -> None:
        for server in self.servers.values():
            server.kill()
        if self.turn is not None:
            self.turn.stop()
        for ns in self.namespaces:
            ns.delete()
        shutil.rmtree(self.folder, ignore_errors=True)


def wrapper_script(folder: str, ns: Namespace, program: str) -> str:
    """An executable that runs ``program`` inside ``ns`` (for a driver that wants a browser path)."""
    path = os.path.join(folder, f"{os.path.basename(program)}-in-{ns.name}")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f'#!/bin/sh\nexec ip netns exec {ns.name} {program} "$@"\n')
    os.chmod(path, 0o755)
    return path
