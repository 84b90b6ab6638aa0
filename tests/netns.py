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
import subprocess
import tempfile
import uuid
from collections.abc import Sequence

from processes import HelperProcess, ServerProcess

DOCUMENTATION_RANGES = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
SERVICE_ADDRESS = "203.0.113.1"
SERVICE_NET = "203.0.113.0/24"
TURN_PORT = 3478
TURN_SECRET = "netns-turn-secret-for-tests"
TURN_REALM = "webrtc-app-netns"

# Every packet leaving the namespace goes to loopback or a documentation range; anything else
# is dropped and counted. A second chain, with its own counter, can block some traffic on
# purpose (a firewall in a test); its drops are expected and counted apart.
GUARD_RULES = """
table inet guard {{
  counter leaked {{ }}
  counter blocked {{ }}
  chain firewall {{
    type filter hook output priority -10; policy accept;
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oif "lo" accept
    ip daddr {{ {ranges} }} accept
    counter name "leaked" drop
  }}
}}
""".format(ranges=", ".join(DOCUMENTATION_RANGES))


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


def run(*command: str, timeout: float = 15.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def missing_tools() -> str | None:
    """What this machine lacks to build namespaces, or None."""
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("ping", "iputils-ping")):
        if not shutil.which(tool):
            return f"{tool} (apt-get install -y {package})"
    if os.geteuid() != 0:
        return "root (ip netns add needs it)"
    probe = f"wrtc-probe-{uuid.uuid4().hex[:8]}"
    result = run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"permission to make network namespaces ({result.stderr.strip()})"
    run("ip", "netns", "del", probe, check=False)
    return None


class Namespace:
    """One network namespace with IPv6 off, loopback up and the guard in place."""

    def __init__(self, name: str) -> None:
        self.name = name
        run("ip", "netns", "add", name)
        try:
            # Before any link is up: otherwise the kernel sends IPv6 link-local and multicast.
            self.run(
                "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv6.conf.lo.disable_ipv6=1",
            )  # fmt: skip
            self.run("nft", "-f", "-", stdin=GUARD_RULES)
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            run("ip", "netns", "del", name, check=False)
            raise

    def prefix(self) -> list[str]:
        """The command prefix that runs a program in this namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(
        self, *command: str, stdin: str | None = None, check: bool = True, timeout: float = 15.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.prefix(), *command], input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"[{self.name}] {' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def counter(self, name: str) -> int:
        """Packets counted by the guard's counter ``leaked`` or ``blocked``."""
        listing = json.loads(self.run("nft", "-j", "list", "counter", "inet", "guard", name).stdout)
        for item in listing["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(f"no counter {name} in {self.name}")

    def block(self, rule: str) -> None:
        """Add a firewall rule that drops (and counts as ``blocked``) some outgoing traffic."""
        self.run("nft", "add", "rule", "inet", "guard", "firewall", *rule.split(), "counter", "name", "blocked", "drop")

    def unblock(self) -> None:
        """Remove the firewall rules ``block`` added (their counter keeps its count)."""
        self.run("nft", "flush", "chain", "inet", "guard", "firewall")

    def delete(self) -> None:
        run("ip", "netns", "del", self.name, check=False)


class Host:
    """A namespace joined to ``srv`` by a veth pair, reaching 203.0.113.0/24 through it."""

    def __init__(self, ns: Namespace, srv: Namespace, link: str, subnet: str) -> None:
        self.ns, self.srv = ns, srv
        self.link = link  # the interface's name, in both namespaces
        self.net = subnet.rsplit(".", 1)[0]  # e.g. "198.51.100"
        self.gateway = f"{self.net}.1"
        self.address = f"{self.net}.2"
        # Made inside the namespaces: no interface ever appears in the machine's own.
        srv.run("ip", "link", "add", link, "type", "veth", "peer", "name", link, "netns", ns.name)
        srv.run("ip", "addr", "add", f"{self.gateway}/24", "dev", link)
        srv.run("ip", "link", "set", link, "up")
        ns.run("ip", "addr", "add", f"{self.address}/24", "dev", link)
        ns.run("ip", "link", "set", link, "up")
        self.route()

    def route(self) -> None:
        self.ns.run("ip", "route", "replace", SERVICE_NET, "via", self.gateway)

    @property
    def address_number(self) -> int:
        return int(self.address.rsplit(".", 1)[1])

    def unplug(self) -> None:
        """Pull the cable: the link goes down (and its routes with it)."""
        self.ns.run("ip", "link", "set", self.link, "down")

    def plug(self) -> None:
        """Plug it back, and put the route back as DHCP would."""
        self.ns.run("ip", "link", "set", self.link, "up")
        self.route()

    def move(self, host_number: int) -> str:
        """Give the host a new address in its subnet (a new network after a roam); answer it."""
        new = f"{self.net}.{host_number}"
        # The old one first: deleting a primary address also deletes the secondaries.
        self.ns.run("ip", "addr", "del", f"{self.address}/24", "dev", self.link)
        self.ns.run("ip", "addr", "add", f"{new}/24", "dev", self.link)
        self.route()
        self.address = new
        return new

    def can_ping(self, address: str) -> bool:
        return self.ns.run("ping", "-c", "1", "-W", "1", address, check=False, timeout=5).returncode == 0


class NamespaceServer(ServerProcess):
    """webrtc_app (``python webrtc_server.py start``) inside a namespace, on an address of it."""

    def __init__(self, ns: Namespace, address: str, port: int, env: dict[str, str]) -> None:
        super().__init__("--host", address, env=env, port=port)  # the last --host wins
        self.ns, self.address = ns, address

    def command(self) -> list[str]:
        return [*self.ns.prefix(), *super().command()]

    @property
    def http(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.address}:{self.port}"


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
