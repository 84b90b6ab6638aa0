"""The fault checker: conversations exchanging numbered messages across nodes of one Redis while
one fault is injected, every message classified against the promise of docs/protocol.md
("Delivery"): delivered within DELIVERY_BOUND, or its sender told PEER-UNAVAILABLE within it.

Each *link* is one direction of a conversation: a sender socket on one node sending a numbered
message every ``interval`` seconds to a receiver socket on another. Only messages a server was
handed are judged: a sender on a frozen node hands nothing until it wakes, so links send from
nodes the fault leaves alone (and both ways when the fault is Redis's). Every message is one of:

* ``in_time``: it reached the receiver within the bound (and once);
* ``notified``: it did not, and the sender heard PEER-UNAVAILABLE within the bound (it may
  arrive later: ``notified_late`` counts those that did);
* ``late``: it arrived after the bound with no notice; ``lost``: neither arrived nor notified;
* ``sender_closed``: neither, but its sender's own socket ended within the bound after it was
  sent, before a notice could reach it (the window of a socket the server closes: a worker's
  restart); counted apart, never in the faults where only the other node fails;
* ``duplicated`` (arrived more than once) and ``out_of_order`` (after a later one sent on the
  same socket), on top. Order is kept per pair of sockets: a message its sender's socket sent
  just before the server closed it (a worker's shutdown still relays those) may arrive after
  the first ones of the socket that replaced it; ``crossed`` counts those apart.

Notices carry no message number: each is matched to the earliest message not delivered in time
that it can answer (sent at most a bound before it, on the sender's connection it came on, else
an earlier one: see ``answered``). ``detect`` is the time from the
fault to the first notice or the first message not in time, whichever told first; ``converge``
is the time from the fault's end until every link delivers in time again.

The network faults (a node cut off from Redis both ways or one way, a lossy and slow link)
run in network namespaces this module makes (bench/netns.py: RFC 5737 addresses only)::

    n1 (198.51.100.2: node one) --veth-- hub (203.0.113.1: redis-server; the checker) --veth-- n2 (192.0.2.2: node two)

The checker's sockets and redis-server run in ``hub`` (this module again, started there by
``ip netns exec``); the fault is nftables rules in ``n2`` on its traffic with 203.0.113.1, so
its sockets' own connections to the checker go on. This kernel has no ``netem``: the slow
link's 200 ms each way is a delaying proxy in ``hub`` that node two reaches Redis through, its
5% loss an nftables ``numgen`` rule (real packet loss: TCP retransmits).

``python -m bench.faults`` runs every fault and prints the table of docs/operations.md
("Failures"); tests/test_faults.py runs a short form of each.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.processes import PROJECT_DIR, RedisCluster, RedisServer, ServerProcess

PEER_UNAVAILABLE = "PEER-UNAVAILABLE"
CLASSES = ("in_time", "notified", "late", "lost", "duplicated", "out_of_order", "sender_closed")


@dataclass
class Link:
    """One direction of a conversation, and what happened to each of its messages."""

    name: str
    sender_url: str
    receiver_url: str
    #: For a room's members (``/wsroom``): the receiver's id, which the sender's frames name.
    to: str = ""
    sent: dict[int, float] = field(default_factory=dict)
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    notices: list[float] = field(default_factory=list)
    #: When the sender heard the receiver ``left`` the room.
    lefts: list[float] = field(default_factory=list)
    #: When the sender's and the receiver's connections ended (to tell what a restart did).
    sender_closed: list[float] = field(default_factory=list)
    receiver_closed: list[float] = field(default_factory=list)
    receiver_open: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Verdict:
    """A fault's outcome over every link."""

    fault: str
    counts: dict[str, int]
    notified_late: int
    detect: float | None
    converge: float | None
    messages: int
    #: Median and 99th percentile of the time to arrive of the messages sent during the fault
    #: that arrived in time (ms; None if none did).
    during_p50_ms: float | None = None
    during_p99_ms: float | None = None
    #: Seconds from the heal until /connections agreed on every node (None: not within
    #: CONSISTENT_WITHIN after the run; no ghost socket, none missing).
    consistent: float | None = None
    #: The longest a room member waited, from the fault, to hear its peer ``left`` (None: no
    #: peer left), and in how many rooms one did.
    left: float | None = None
    rooms_left: int = 0
    #: Messages of a sender's closed socket that arrived after a later one of the socket that
    #: replaced it (order is per pair of sockets; not in ``out_of_order``).
    crossed: int = 0
    #: For a node cut off: seconds from the fault until it said so (/healthz, /metrics).
    said_cut_off: float | None = None
    #: Whether /connections was checked at all (``consistent`` says nothing otherwise).
    connections_checked: bool = True

    @property
    def holds(self) -> bool:
        """The promise held: nothing late without notice, lost, duplicated or out of order; and
        the cluster converged (/connections agrees with the sockets open)."""
        agreed = self.consistent is not None or not self.connections_checked
        return agreed and not any(self.counts[name] for name in ("late", "lost", "duplicated", "out_of_order"))

    def row(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        counts = " | ".join(str(self.counts[name]) for name in CLASSES)
        during = "-" if self.during_p50_ms is None else f"{self.during_p50_ms:g} / {self.during_p99_ms:g} ms"
        return (
            f"| {self.fault} | {self.messages} | {counts} | {during} | {seconds(self.detect)} | {seconds(self.left)} "
            f"| {seconds(self.converge)} | {seconds(self.consistent)} |"
        )


def connection_at(link: Link, at: float) -> int:
    """Which of the sender's connections was open at ``at`` (0 the first): each one ends, and is
    recorded in ``sender_closed``, before the next opens."""
    return bisect.bisect_left(link.sender_closed, at)


def reconnected_between(link: Link, earlier: int, later: int) -> bool:
    """Whether the sender sent ``later`` on a newer socket than ``earlier``."""
    return connection_at(link, link.sent[earlier]) < connection_at(link, link.sent[later])


def answered(link: Link, missed: dict[int, float], bound: float) -> dict[int, float]:
    """The messages among ``missed`` (number: when sent) a notice answers, and when. Each notice answers
    one: the earliest not answered yet, sent at most a bound before it on the connection the
    notice came on (the server tells the socket that sent it), else on an earlier connection of
    the sender (a notice told to the conversation may reach its newer socket on the same node)."""
    told: dict[int, float] = {}
    pending = sorted(missed.items(), key=lambda item: item[1])
    times = [sent for _, sent in pending]
    for notice in sorted(link.notices):
        here = connection_at(link, notice)
        # Those sent within the bound before the notice (pending is in the order they were sent).
        window = pending[bisect.bisect_left(times, notice - bound) : bisect.bisect_right(times, notice)]
        candidates = [(number, sent) for number, sent in window if number not in told]
        same = [number for number, sent in candidates if connection_at(link, sent) == here]
        earlier = [number for number, sent in candidates if connection_at(link, sent) < here]
        if same or earlier:
            told[(same or earlier)[0]] = notice
    return told


def judge(link: Link, bound: float) -> dict[int, tuple[str, float | None]]:
    """Each message's class (``in_time``, ``notified``, ``late``, ``lost``, ``sender_closed``),
    and for one notified, when the notice that answered it came."""
    first: dict[int, float] = {}
    for number, at in link.arrivals:
        first.setdefault(number, at)
    missed = {number: sent for number, sent in link.sent.items() if not (number in first and first[number] - sent <= bound)}
    told = answered(link, missed, bound)
    classes: dict[int, tuple[str, float | None]] = {}
    for number, sent in link.sent.items():
        if number not in missed:
            classes[number] = ("in_time", None)
        elif number in told:
            classes[number] = ("notified", told[number])
        elif number in first:
            classes[number] = ("late", None)
        elif any(0 <= closed - sent <= bound for closed in link.sender_closed):
            # Its sender's socket ended before a notice could reach it: nobody is left to
            # tell (the window of a socket the server closes, its restart or shutdown).
            classes[number] = ("sender_closed", None)
        else:
            classes[number] = ("lost", None)
    return classes


def classify(links: list[Link], bound: float, fault_at: float, healed_at: float, fault: str) -> Verdict:
    counts = dict.fromkeys(CLASSES, 0)
    notified_late = 0
    first_told: float | None = None
    converged_at = healed_at
    during: list[float] = []
    crossed = 0
    for link in links:
        times: dict[int, list[float]] = {}
        last = -1
        for number, at in link.arrivals:
            times.setdefault(number, []).append(at)
            if number < last:
                if number in link.sent and last in link.sent and reconnected_between(link, number, last):
                    crossed += 1
                else:
                    counts["out_of_order"] += 1
            last = max(last, number)
        counts["duplicated"] += sum(len(arrived) > 1 for arrived in times.values())
        for number, (verdict, notice) in judge(link, bound).items():
            sent, arrived = link.sent[number], times.get(number, [])
            counts[verdict] += 1
            if verdict == "in_time":
                if fault_at <= sent <= healed_at:
                    during.append(arrived[0] - sent)
                continue
            converged_at = max(converged_at, sent)
            if sent >= fault_at:
                first = sent + bound if notice is None else notice
                first_told = first if first_told is None else min(first_told, first)
            notified_late += verdict == "notified" and bool(arrived)
    detect = None if first_told is None else max(0.0, first_told - fault_at)
    lefts = [min(t for t in link.lefts if t >= fault_at) - fault_at for link in links if any(t >= fault_at for t in link.lefts)]
    converge = max(0.0, converged_at - healed_at)
    messages = sum(len(link.sent) for link in links)
    during.sort()
    p50 = round(during[len(during) // 2] * 1000, 1) if during else None
    p99 = round(during[min(len(during) - 1, int(len(during) * 0.99))] * 1000, 1) if during else None
    verdict = Verdict(fault, counts, notified_late, detect, converge, messages, p50, p99)
    verdict.left = max(lefts) if lefts else None
    verdict.rooms_left = len(lefts)
    verdict.crossed = crossed
    return verdict


async def _open(url: str) -> ClientConnection:
    return await connect(url, ping_interval=None, close_timeout=1, open_timeout=2, max_size=None)


async def _receive(link: Link, clock: Callable[[], float], stop: asyncio.Event) -> None:
    """The receiver: records every numbered message; reconnects when its node goes away."""
    while not stop.is_set():
        try:
            async with await _open(link.receiver_url) as ws:
                link.receiver_open.set()
                async for text in ws:
                    if not isinstance(text, str):
                        continue
                    if text.startswith('{"n"'):
                        link.arrivals.append((json.loads(text)["n"], clock()))
                    elif link.to and '"event": "message"' in text:
                        link.arrivals.append((json.loads(text)["data"]["n"], clock()))
        except (OSError, WebSocketException, TimeoutError):
            pass
        link.receiver_closed.append(clock())
        link.receiver_open.clear()
        await asyncio.sleep(0.2)


async def _send(link: Link, clock: Callable[[], float], interval: float, start: asyncio.Event, stop: asyncio.Event) -> None:
    """The sender: a numbered message every ``interval`` once ``start`` is set; hears notices."""
    number = 0
    while not stop.is_set():
        try:
            async with await _open(link.sender_url) as ws:

                async def notices() -> None:
                    async for text in ws:
                        if isinstance(text, str) and PEER_UNAVAILABLE in text:
                            link.notices.append(clock())
                        elif isinstance(text, str) and '"event": "left"' in text:
                            link.lefts.append(clock())

                listener = asyncio.ensure_future(notices())
                try:
                    while not stop.is_set() and not listener.done():
                        if start.is_set():
                            number += 1
                            link.sent[number] = clock()
                            frame = {"to": link.to, "n": number} if link.to else {"n": number, "link": link.name}
                            await ws.send(json.dumps(frame))
                        await asyncio.sleep(interval)
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError, WebSocketException):
                        await listener
        except (OSError, WebSocketException, TimeoutError):
            pass
        link.sender_closed.append(clock())
        await asyncio.sleep(0.2)


@dataclass
class Fault:
    """A fault: what ``inject`` does at the start and ``heal`` undoes after ``lasting`` seconds."""

    name: str
    inject: Callable[[], Awaitable[None]]
    heal: Callable[[], Awaitable[None]]
    lasting: float
    #: The node the fault cuts off (its http:// base): the checker times how long it takes to
    #: say so (``GET /healthz?ready=1`` answering 503, ``webrtc_backplane_cut_off`` 1).
    cut_off: str = ""


async def exercise(
    links: list[Link],
    fault: Fault,
    bound: float,
    before: float = 2.0,
    after: float = 6.0,
    interval: float = 0.05,
    connections: bool = True,
) -> Verdict:
    """Run the links for ``before`` seconds, inject the fault, heal it after its time, run
    ``after`` seconds more, and classify every message; with ``connections``, also wait for
    every node's /connections to agree with the sockets open (it needs ADMIN_TOKEN)."""
    loop = asyncio.get_running_loop()
    clock = loop.time
    start, stop = asyncio.Event(), asyncio.Event()
    tasks = [loop.create_task(_receive(link, clock, stop)) for link in links]
    try:
        await asyncio.wait_for(asyncio.gather(*(link.receiver_open.wait() for link in links)), 15)
        await asyncio.sleep(0.5)  # every receiver registered cluster-wide
        tasks += [loop.create_task(_send(link, clock, interval, start, stop)) for link in links]
        start.set()
        watching: asyncio.Task[float | None] | None = None
        await asyncio.sleep(before)
        fault_at = clock()
        await fault.inject()
        watching = loop.create_task(_says_cut_off(fault.cut_off, clock, fault_at + fault.lasting)) if fault.cut_off else None
        await asyncio.sleep(fault.lasting)
        await fault.heal()
        healed_at = clock()
        agreeing = loop.create_task(_consistent(links, clock, healed_at, after + CONSISTENT_WITHIN)) if connections else None
        await asyncio.sleep(after)
        consistent = await agreeing if agreeing is not None else None
        if consistent is not None and await _consistent(links, clock, healed_at, CONSISTENT_WITHIN) is None:
            consistent = None  # it agreed once, and no longer does
        start.clear()
        await asyncio.sleep(bound + 1.0)  # the last messages' answers
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    verdict = classify(links, bound, fault_at, healed_at, fault.name)
    verdict.consistent = consistent
    verdict.connections_checked = connections
    if watching is not None:
        said = watching.result() if watching.done() and not watching.cancelled() else None
        verdict.said_cut_off = None if said is None else said - fault_at
    return verdict


async def _says_cut_off(base: str, clock: Callable[[], float], until: float) -> float | None:
    """When ``base`` first says, while the fault lasts, that it is cut off: /healthz?ready=1
    answers 503 and /metrics has webrtc_backplane_cut_off 1 (None: it never did)."""

    def ask() -> bool:
        try:
            urllib.request.urlopen(f"{base}/healthz?ready=1", timeout=1).close()
            return False
        except urllib.error.HTTPError as error:
            if error.code != 503:
                return False
        with urllib.request.urlopen(f"{base}/metrics", timeout=1) as response:
            return "webrtc_backplane_cut_off 1.0" in response.read().decode()

    while clock() < until:
        try:
            if await asyncio.to_thread(ask):
                return clock()
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return None


#: Longest the checker waits, after its ``after`` period, for /connections to agree.
CONSISTENT_WITHIN = 20.0
ADMIN_TOKEN = "fault-checker-admin"


def _online(base: str) -> dict[str, int]:
    """Every id online and its sockets, as ``GET /connections`` on ``base`` says (all pages)."""
    ids: dict[str, int] = {}
    after = ""
    while True:
        request = urllib.request.Request(
            f"{base}/connections?limit=1000&after={after}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            page = json.load(response)
        ids.update({entry["id"]: entry["sockets"] for entry in page["ids"]})
        if not page["next"]:
            return ids
        after = page["next"]


async def _consistent(links: list[Link], clock: Callable[[], float], healed_at: float, within: float) -> float | None:
    """Seconds from the heal until every node's /connections lists exactly the checker's
    sockets, one each (no ghost of a socket on a node that died, none missing), or None."""
    expected: dict[str, int] = {}
    bases = set()
    for link in links:
        for url in (link.sender_url, link.receiver_url):
            parts = urllib.parse.urlsplit(url)
            bases.add(f"http://{parts.netloc}")
            if link.to:
                continue  # /connections lists the call sockets (room members are in their rooms)
            expected[urllib.parse.parse_qs(parts.query)["id"][0]] = 1
    deadline = clock() + within
    while True:
        try:
            views = [await asyncio.to_thread(_online, base) for base in sorted(bases)]
            if all(view == expected for view in views):
                return clock() - healed_at
        except (OSError, ValueError, KeyError):
            pass
        if clock() > deadline:
            return None
        await asyncio.sleep(0.25)


# --- the faults ----------------------------------------------------------------------------


def node_env(bound: float, node_ttl: float) -> dict[str, str]:
    return {
        "WEBRTC_ICE_SERVERS": "[]",
        "WEBRTC_DELIVERY_BOUND": str(bound),
        "WEBRTC_NODE_TTL": str(node_ttl),
        "WEBRTC_ADMIN_TOKEN": ADMIN_TOKEN,
    }


def links_between(one: ServerProcess, two: ServerProcess, pairs: int, both_ways: bool) -> list[Link]:
    """``pairs`` conversations of a socket on ``one`` with a socket on ``two``, and as many rooms
    with a member on each; messages from ``one`` to ``two`` (and back, with ``both_ways``)."""
    links = []
    for k in range(pairs):
        a, b = f"a{k}", f"b{k}"
        links.append(Link(f"{a}>{b}", f"{one.ws}/wscall?id={a}&peer_id={b}", f"{two.ws}/wscall?id={b}&peer_id={a}"))
        ra, rb = f"ra{k}", f"rb{k}"
        links.append(Link(f"{ra}>{rb}", f"{one.ws}/wsroom?id={ra}&room=R{k}", f"{two.ws}/wsroom?id={rb}&room=R{k}", to=rb))
        if both_ways:
            c, d = f"c{k}", f"d{k}"
            links.append(Link(f"{c}>{d}", f"{two.ws}/wscall?id={c}&peer_id={d}", f"{one.ws}/wscall?id={d}&peer_id={c}"))
            rc, rd = f"rc{k}", f"rd{k}"
            links.append(Link(f"{rc}>{rd}", f"{two.ws}/wsroom?id={rc}&room=S{k}", f"{one.ws}/wsroom?id={rd}&room=S{k}", to=rd))
    return links


def signal_fault(name: str, server: ServerProcess, first: int, then: int | None, lasting: float) -> Fault:
    async def inject() -> None:
        os.kill(server.pid, first)

    async def heal() -> None:
        if then is not None:
            os.kill(server.pid, then)
        else:  # killed: a new process on the same port
            await asyncio.to_thread(server.start)

    return Fault(name, inject, heal, lasting)


def redis_restart(redis: RedisServer, lasting: float) -> Fault:
    async def inject() -> None:
        await asyncio.to_thread(redis.stop)

    async def heal() -> None:
        await asyncio.to_thread(redis.start)

    return Fault("redis-server restarted", inject, heal, lasting)


#: name -> (what it does to node two or Redis; how long it lasts, and NODE_TTL, in the full
#: run; the same in CI's short one: a shorter freeze, but past a shorter TTL, still reaped).
FAULTS: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "kill": ("SIGKILL of a node, started again", (3.0, 10.0), (2.0, 3.0)),
    "stop5": ("SIGSTOP of a node for 5 s", (5.0, 10.0), (5.0, 10.0)),
    "stop20": ("SIGSTOP of a node for 20 s, reaped meanwhile", (20.0, 10.0), (8.0, 3.0)),
    "redis": ("redis-server restarted, empty", (2.0, 10.0), (1.0, 10.0)),
    "cluster": ("a Redis Cluster master killed (the control channel's), failed over", (0.0, 10.0), (0.0, 10.0)),
    "cut": ("a node cut off from Redis both ways (packets dropped)", (20.0, 10.0), (8.0, 10.0)),
    "cut-in": ("a node cut off one way: it hears nothing from Redis", (20.0, 10.0), (8.0, 10.0)),
    "cut-out": ("a node cut off one way: Redis hears nothing from it", (20.0, 10.0), (8.0, 10.0)),
    "lossy": ("200 ms each way and 5% loss on a node's Redis link", (20.0, 10.0), (8.0, 10.0)),
}
#: The faults that need network namespaces (root, ip, nft).
NETWORK_FAULTS = ("cut", "cut-in", "cut-out", "lossy")


def run_fault(
    key: str, bound: float = 2.0, short: bool = False, pairs: int = 3, folder: str | None = None, tree: str = PROJECT_DIR
) -> Verdict:
    """One fault against two nodes of one redis-server, started here and stopped after; the
    nodes run the webrtc_app in ``tree`` (another revision's, to compare)."""
    if key in NETWORK_FAULTS:
        return run_network_fault(key, bound, short, pairs, folder, tree)
    what, full, brief = FAULTS[key]
    lasting, node_ttl = brief if short else full
    folder = folder or tempfile.mkdtemp(prefix="webrtc-faults-")
    os.makedirs(folder, exist_ok=True)
    env = node_env(bound, node_ttl)
    if key == "cluster":
        with RedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
            one, two = (
                ServerProcess("--redis", cluster.url, env=env, cwd=tree, log_path=os.path.join(folder, f"{key}-{n}.log"))
                for n in ("one", "two")
            )
            with one, two:
                master = cluster.owner("webrtc:control")  # the beats' shard: every node's liveness at once

                async def kill_master() -> None:
                    await asyncio.to_thread(cluster.kill, master)

                async def failover() -> None:
                    pass  # nobody heals it: the cluster promotes the replica by itself

                fault = Fault(what, kill_master, failover, lasting)
                return asyncio.run(exercise(links_between(one, two, pairs, both_ways=True), fault, bound, after=10.0))
    with RedisServer() as redis:
        one = ServerProcess("--redis", redis.url, env=env, cwd=tree, log_path=os.path.join(folder, f"{key}-one.log"))
        two = ServerProcess("--redis", redis.url, env=env, cwd=tree, log_path=os.path.join(folder, f"{key}-two.log"))
        with one, two:
            if key == "kill":
                fault = signal_fault(what, two, signal.SIGKILL, None, lasting)
            elif key.startswith("stop"):
                fault = signal_fault(what, two, signal.SIGSTOP, signal.SIGCONT, lasting)
            else:
                fault = redis_restart(redis, lasting)
            links = links_between(one, two, pairs, both_ways=key == "redis")
            return asyncio.run(exercise(links, fault, bound, after=6.0 if short else 10.0))


# --- the network faults ----------------------------------------------------------------------

HUB, N1, N2 = "203.0.113.1", "198.51.100.2", "192.0.2.2"
DELAY = 0.2
LOSS_PERCENT = 5


def cut_rules(key: str) -> str:
    """The nftables table that makes fault ``key`` in node two's namespace."""
    drop = f"numgen random mod 100 < {LOSS_PERCENT} drop" if key == "lossy" else "drop"
    chains = []
    if key in ("cut", "cut-in", "lossy"):
        chains.append(f"chain input {{\n type filter hook input priority -20; policy accept;\n ip saddr {HUB} {drop}\n }}")
    if key in ("cut", "cut-out", "lossy"):
        chains.append(f"chain output {{\n type filter hook output priority -20; policy accept;\n ip daddr {HUB} {drop}\n }}")
    return "table inet faults {\n" + "\n".join(chains) + "\n}\n"


class NetworkLab:
    """The namespaces of the module's docstring; a context manager that deletes them."""

    def __init__(self) -> None:
        from bench.netns import Host, Namespace  # only here: it needs root, ip and nft

        self.tag = f"wf{os.getpid() % 100000}{os.urandom(2).hex()}"
        self.namespaces: list[Any] = []
        try:
            self.hub = self._add(Namespace(f"{self.tag}-hub"))
            self.hub.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
            self.hub.run("ip", "addr", "add", f"{HUB}/32", "dev", "lo")
            self.one = Host(self._add(Namespace(f"{self.tag}-n1")), self.hub, "veth-n1", "198.51.100.0/24")
            self.two = Host(self._add(Namespace(f"{self.tag}-n2")), self.hub, "veth-n2", "192.0.2.0/24")
        except BaseException:
            self.close()
            raise

    def _add(self, ns: Any) -> Any:
        self.namespaces.append(ns)
        return ns

    def leaks(self) -> dict[str, int]:
        return {ns.name: ns.counter("leaked") for ns in self.namespaces}

    def close(self) -> None:
        for ns in self.namespaces:
            ns.delete()

    def __enter__(self) -> NetworkLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_network_fault(key: str, bound: float, short: bool, pairs: int, folder: str | None, tree: str) -> Verdict:
    """Build the lab, run the checker inside its hub, read its verdict, check nothing leaked."""
    folder = folder or tempfile.mkdtemp(prefix="webrtc-faults-")
    os.makedirs(folder, exist_ok=True)
    with NetworkLab() as lab:
        command = [
            *lab.hub.prefix(), sys.executable, "-m", "bench.faults", key, "--inside", lab.tag, "--bound", str(bound),
            "--pairs", str(pairs), "--folder", folder, "--tree", tree, *(["--short"] if short else []),
        ]  # fmt: skip
        result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
        if result.returncode not in (0, 1) or not result.stdout.strip():
            raise RuntimeError(f"the checker in the lab failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        verdict = Verdict(**json.loads(result.stdout.strip().splitlines()[-1]))
        leaks = lab.leaks()
    if any(leaks.values()):
        raise AssertionError(f"packets left the documentation ranges: {leaks}")
    return verdict


class DelayProxy:
    """TCP from ``listen`` to ``target``, each chunk handed on ``delay`` seconds after it came
    (in order), in a thread of its own; ``delay`` may change while it runs."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.delay = 0.0
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the delaying proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, *self.listen))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def hand_on() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        handing = loop.create_task(hand_on())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await handing
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def inside_lab(key: str, tag: str, bound: float, short: bool, pairs: int, folder: str, tree: str) -> Verdict:
    """The checker in the lab's hub: redis-server, the proxy, node one in n1, node two in n2
    (through the proxy), and the fault as nftables rules in n2."""
    from bench.netns import Namespace, NamespaceServer

    what, full, brief = FAULTS[key]
    lasting, node_ttl = brief if short else full
    n2 = Namespace.attach(f"{tag}-n2")
    # Reached from the nodes' namespaces (documentation addresses, inside the lab only): not loopback.
    with RedisServer(
        "--bind", "127.0.0.1", HUB, "--protected-mode", "no", log_path=os.path.join(folder, f"{key}-redis.log")
    ) as redis:
        proxy = DelayProxy((HUB, 0), ("127.0.0.1", redis.port))
        try:
            proxy_port = proxy.port
            env = node_env(bound, node_ttl)
            one = NamespaceServer(Namespace.attach(f"{tag}-n1"), N1, 0, env)
            two = NamespaceServer(n2, N2, 0, env)
            one.args += ["--redis", f"redis://{HUB}:{redis.port}/0"]
            two.args += ["--redis", f"redis://{HUB}:{proxy_port}/0"]
            for server, name in ((one, "one"), (two, "two")):
                server.cwd, server.log_path = tree, os.path.join(folder, f"{key}-{name}.log")
            with one, two:

                async def inject() -> None:
                    if key == "lossy":
                        proxy.delay = DELAY
                    n2.run("nft", "-f", "-", stdin=cut_rules(key))

                async def heal() -> None:
                    n2.run("nft", "delete", "table", "inet", "faults")
                    proxy.delay = 0.0

                links = links_between(one, two, pairs, both_ways=key == "lossy")
                fault = Fault(what, inject, heal, lasting, cut_off="" if key == "lossy" else two.http)
                return asyncio.run(exercise(links, fault, bound, after=6.0 if short else 10.0))
        finally:
            proxy.stop()


HEADER = (
    "| fault | messages | in time | notified | late, no notice | lost | duplicated | out of order | sender's socket closed "
    "| in time during the fault: p50 / p99 | detected | room peers left | delivering again | /connections agree |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("faults", nargs="*", help=f"which: {', '.join(FAULTS)} (default: all)")
    parser.add_argument("--bound", type=float, default=2.0, help="DELIVERY_BOUND of the nodes (default 2)")
    parser.add_argument("--short", action="store_true", help="CI's short form of each fault")
    parser.add_argument("--json", help="also write the verdicts to this file")
    parser.add_argument("--tree", default=PROJECT_DIR, help="run the webrtc_app of this folder (e.g. another revision's)")
    parser.add_argument("--pairs", type=int, default=3, help="conversations (default 3)")
    parser.add_argument("--folder", help="for the logs (default: a new temporary folder)")
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the network lab's tag: run as its checker
    args = parser.parse_args(argv)
    if args.inside:
        verdict = inside_lab(args.faults[0], args.inside, args.bound, args.short, args.pairs, args.folder, args.tree)
        print(json.dumps(verdict.__dict__))
        return 0 if verdict.holds else 1
    unknown = [key for key in args.faults if key not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}: expected one of {', '.join(FAULTS)}")
    verdicts = []
    print(HEADER)
    for key in args.faults or list(FAULTS):
        verdict = run_fault(key, args.bound, args.short, args.pairs, args.folder, tree=args.tree)
        verdicts.append(verdict)
        print(verdict.row(), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump([verdict.__dict__ for verdict in verdicts], out, indent=1)
    return 0 if all(verdict.holds for verdict in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
