"""Network namespaces for tests and benchmarks that need a network where things fail: hosts
that cannot reach each other (tests/netns.py's TurnLab), or a node cut off from Redis
(bench/faults.py's network faults).

The rules are /work/shared/NETWORK-TESTS.md's (and the team's): only the RFC 5737
documentation ranges, IPv6 off before any link comes up, no default route, an nftables guard
per namespace that counts every packet leaving for anywhere else (the users assert zero),
unique names, and everything deleted in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

from bench.processes import ServerProcess

DOCUMENTATION_RANGES = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
SERVICE_ADDRESS = "203.0.113.1"
SERVICE_NET = "203.0.113.0/24"

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

    @classmethod
    def attach(cls, name: str) -> Namespace:
        """The namespace ``name``, made by another process (which deletes it)."""
        ns = cls.__new__(cls)
        ns.name = name
        return ns

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
