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
* ``duplicated`` (arrived more than once) and ``out_of_order`` (after a later one), on top.

Notices carry no message number: each is matched to the earliest message not delivered in time
that it can answer (sent before it, at most a bound before). ``detect`` is the time from the
fault to the first notice or the first message not in time, whichever told first; ``converge``
is the time from the fault's end until every link delivers in time again.

``python -m bench.faults`` runs every fault and prints the table of docs/operations.md
("Failures"); tests/test_faults.py runs a short form of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.processes import PROJECT_DIR, RedisServer, ServerProcess

PEER_UNAVAILABLE = "PEER-UNAVAILABLE"
CLASSES = ("in_time", "notified", "late", "lost", "duplicated", "out_of_order")


@dataclass
class Link:
    """One direction of a conversation, and what happened to each of its messages."""

    name: str
    sender_url: str
    receiver_url: str
    sent: dict[int, float] = field(default_factory=dict)
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    notices: list[float] = field(default_factory=list)
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

    @property
    def holds(self) -> bool:
        """The promise held: nothing late without notice, lost, duplicated or out of order."""
        return not any(self.counts[name] for name in ("late", "lost", "duplicated", "out_of_order"))

    def row(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        counts = " | ".join(str(self.counts[name]) for name in CLASSES)
        return f"| {self.fault} | {self.messages} | {counts} | {seconds(self.detect)} | {seconds(self.converge)} |"


def classify(links: list[Link], bound: float, fault_at: float, healed_at: float, fault: str) -> Verdict:
    counts = dict.fromkeys(CLASSES, 0)
    notified_late = 0
    first_told: float | None = None
    converged_at = healed_at
    for link in links:
        times: dict[int, list[float]] = {}
        last = -1
        for number, at in link.arrivals:
            times.setdefault(number, []).append(at)
            if number < last:
                counts["out_of_order"] += 1
            last = max(last, number)
        notices = sorted(link.notices)
        used = 0
        for number, sent in sorted(link.sent.items()):
            arrived = times.get(number, [])
            if len(arrived) > 1:
                counts["duplicated"] += 1
            if arrived and arrived[0] - sent <= bound:
                counts["in_time"] += 1
                continue
            if sent >= fault_at:
                first_told = min(first_told, sent + bound) if first_told is not None else sent + bound
            converged_at = max(converged_at, sent)
            while used < len(notices) and notices[used] < sent:
                used += 1  # a notice before this message answered an earlier one
            if used < len(notices) and notices[used] - sent <= bound:
                counts["notified"] += 1
                if sent >= fault_at:
                    first_told = min(first_told, notices[used]) if first_told is not None else notices[used]
                used += 1
                notified_late += bool(arrived)
            elif arrived:
                counts["late"] += 1
            else:
                counts["lost"] += 1
    detect = None if first_told is None else max(0.0, first_told - fault_at)
    converge = max(0.0, converged_at - healed_at)
    messages = sum(len(link.sent) for link in links)
    return Verdict(fault, counts, notified_late, detect, converge, messages)


async def _open(url: str) -> ClientConnection:
    return await connect(url, ping_interval=None, close_timeout=1, open_timeout=2, max_size=None)


async def _receive(link: Link, clock: Callable[[], float], stop: asyncio.Event) -> None:
    """The receiver: records every numbered message; reconnects when its node goes away."""
    while not stop.is_set():
        try:
            async with await _open(link.receiver_url) as ws:
                link.receiver_open.set()
                async for text in ws:
                    if isinstance(text, str) and text.startswith('{"n"'):
                        link.arrivals.append((json.loads(text)["n"], clock()))
        except (OSError, WebSocketException, TimeoutError):
            pass
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

                listener = asyncio.ensure_future(notices())
                try:
                    while not stop.is_set() and not listener.done():
                        if start.is_set():
                            number += 1
                            link.sent[number] = clock()
                            await ws.send(json.dumps({"n": number, "link": link.name}))
                        await asyncio.sleep(interval)
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError, WebSocketException):
                        await listener
        except (OSError, WebSocketException, TimeoutError):
            pass
        await asyncio.sleep(0.2)


@dataclass
class Fault:
    """A fault: what ``inject`` does at the start and ``heal`` undoes after ``lasting`` seconds."""

    name: str
    inject: Callable[[], Awaitable[None]]
    heal: Callable[[], Awaitable[None]]
    lasting: float


async def exercise(
    links: list[Link], fault: Fault, bound: float, before: float = 2.0, after: float = 6.0, interval: float = 0.05
) -> Verdict:
    """Run the links for ``before`` seconds, inject the fault, heal it after its time, run
    ``after`` seconds more, and classify every message."""
    loop = asyncio.get_running_loop()
    clock = loop.time
    start, stop = asyncio.Event(), asyncio.Event()
    tasks = [loop.create_task(_receive(link, clock, stop)) for link in links]
    try:
        await asyncio.wait_for(asyncio.gather(*(link.receiver_open.wait() for link in links)), 15)
        await asyncio.sleep(0.5)  # every receiver registered cluster-wide
        tasks += [loop.create_task(_send(link, clock, interval, start, stop)) for link in links]
        start.set()
        await asyncio.sleep(before)
        fault_at = clock()
        await fault.inject()
        await asyncio.sleep(fault.lasting)
        await fault.heal()
        healed_at = clock()
        await asyncio.sleep(after)
        start.clear()
        await asyncio.sleep(bound + 1.0)  # the last messages' answers
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return classify(links, bound, fault_at, healed_at, fault.name)


# --- the faults ----------------------------------------------------------------------------


def node_env(bound: float, node_ttl: float) -> dict[str, str]:
    return {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_DELIVERY_BOUND": str(bound), "WEBRTC_NODE_TTL": str(node_ttl)}


def links_between(one: ServerProcess, two: ServerProcess, pairs: int, both_ways: bool) -> list[Link]:
    """``pairs`` conversations of a socket on ``one`` with a socket on ``two``; messages from
    ``one`` to ``two`` (and back, with ``both_ways``)."""
    links = []
    for k in range(pairs):
        a, b = f"a{k}", f"b{k}"
        links.append(Link(f"{a}>{b}", f"{one.ws}/wscall?id={a}&peer_id={b}", f"{two.ws}/wscall?id={b}&peer_id={a}"))
        if both_ways:
            c, d = f"c{k}", f"d{k}"
            links.append(Link(f"{c}>{d}", f"{two.ws}/wscall?id={c}&peer_id={d}", f"{one.ws}/wscall?id={d}&peer_id={c}"))
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
    "kill": ("SIGKILL of a node, started again", (3.0, 10.0), (2.0, 10.0)),
    "stop5": ("SIGSTOP of a node for 5 s", (5.0, 10.0), (5.0, 10.0)),
    "stop20": ("SIGSTOP of a node for 20 s, reaped meanwhile", (20.0, 10.0), (8.0, 3.0)),
    "redis": ("redis-server restarted, empty", (2.0, 10.0), (1.0, 10.0)),
}


def run_fault(
    key: str, bound: float = 2.0, short: bool = False, pairs: int = 3, folder: str | None = None, tree: str = PROJECT_DIR
) -> Verdict:
    """One fault against two nodes of one redis-server, started here and stopped after; the
    nodes run the webrtc_app in ``tree`` (another revision's, to compare)."""
    what, full, brief = FAULTS[key]
    lasting, node_ttl = brief if short else full
    folder = folder or tempfile.mkdtemp(prefix="webrtc-faults-")
    with RedisServer() as redis:
        env = node_env(bound, node_ttl)
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


HEADER = (
    "| fault | messages | in time | notified | late, no notice | lost | duplicated | out of order | detected | converged |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("faults", nargs="*", help=f"which: {', '.join(FAULTS)} (default: all)")
    parser.add_argument("--bound", type=float, default=2.0, help="DELIVERY_BOUND of the nodes (default 2)")
    parser.add_argument("--short", action="store_true", help="CI's short form of each fault")
    parser.add_argument("--json", help="also write the verdicts to this file")
    parser.add_argument("--tree", default=PROJECT_DIR, help="run the webrtc_app of this folder (e.g. another revision's)")
    args = parser.parse_args(argv)
    unknown = [key for key in args.faults if key not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}: expected one of {', '.join(FAULTS)}")
    verdicts = []
    print(HEADER)
    for key in args.faults or list(FAULTS):
        verdict = run_fault(key, args.bound, args.short, tree=args.tree)
        verdicts.append(verdict)
        print(verdict.row(), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump([verdict.__dict__ for verdict in verdicts], out, indent=1)
    return 0 if all(verdict.holds for verdict in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
