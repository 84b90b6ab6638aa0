"""Rooms: what a delivered copy of a room message costs the server, and a join storm.

    python bench/rooms.py                 # one node, then two nodes on one redis-server
    python bench/rooms.py --nodes 1 --storm-rooms 200

* **copies**: ``--rooms`` rooms of six members (on two nodes: members alternate between
  them, so most copies cross); every member broadcasts ``--messages`` messages, sent in
  windows of ``--window`` and each window awaited by every other member. The figure is the
  CPU the server processes (and redis-server) used during the phase, per copy delivered to a
  member: five per message.
* **storm**: ``--storm-rooms`` rooms of six, every member opening its socket at once (at most
  ``--concurrency`` handshakes in flight): the time until every member's view (``members``,
  then ``joined`` and ``left``) holds its five others, and a check that every view ends the
  same as the server's roster (Redis' on two nodes; the rooms' own on one).

The load generator runs in this process (websockets' asyncio client), pinned to one CPU
when there are several. Bounded in count and time; every server listens on
127.0.0.1, on ports picked here. Figures go to standard output (docs/benchmarks.md quotes
them with this command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))

from websockets.asyncio.client import connect  # noqa: E402

from bench.processes import RedisServer, ServerProcess  # noqa: E402

SIX = 6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Member:
    def __init__(self, id: str, room: str) -> None:
        self.id, self.room = id, room
        self.view: set[str] = set()
        self.heard = 0
        self.ws: Any = None
        self.complete = asyncio.Event()
        self.window_done = asyncio.Event()
        self.expect = 0

    async def open(self, url: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            self.ws = await connect(f"{url}/wsroom?id={self.id}&room={self.room}", max_queue=None, open_timeout=60)
            first = json.loads(await self.ws.recv())
        self.view = set(first["members"])
        self._check()
        asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            frame = json.loads(text)
            event = frame.get("event")
            if event == "joined":
                self.view.add(frame["id"])
            elif event == "left":
                self.view.discard(frame["id"])
            elif event == "message":
                self.heard += 1
                if self.heard >= self.expect:
                    self.window_done.set()
            self._check()

    def _check(self) -> None:
        if len(self.view) == SIX - 1:
            self.complete.set()


def servers(nodes: int, redis: RedisServer | None) -> list[ServerProcess]:
    env = {"WEBRTC_RATE_LIMIT": "0", "WEBRTC_MAX_SOCKETS_PER_ID": "16", "WEBRTC_ICE_SERVERS": "[]"}
    args = ["--redis", redis.url] if redis is not None else []
    return [ServerProcess(*args, env=env, log_level="warning") for _ in range(nodes)]


async def open_rooms(urls: list[str], rooms: int, concurrency: int, tag: str) -> list[Member]:
    members = [Member(f"{tag}{r}.m{n}", f"{tag}{r}") for r in range(rooms) for n in range(SIX)]
    gate = asyncio.Semaphore(concurrency)
    await asyncio.gather(*(m.open(urls[i % len(urls)], gate) for i, m in enumerate(members)))
    return members


async def copies(urls: list[str], pids: list[int], args: argparse.Namespace) -> dict[str, float]:
    members = await open_rooms(urls, args.rooms, args.concurrency, "copies-")
    await asyncio.wait_for(asyncio.gather(*(m.complete.wait() for m in members)), 60)
    before = sum(cpu_seconds(pid) for pid in pids)
    start = time.monotonic()
    sent = 0
    for window in range(0, args.messages, args.window):
        count = min(args.window, args.messages - window)
        for m in members:
            m.window_done.clear()
            m.expect = m.heard + count * (SIX - 1)
        for m in members:
            for n in range(count):
                await m.ws.send(f'{{"n": {window + n}, "pad": "{"x" * 64}"}}')
        sent += count * len(members)
        await asyncio.wait_for(asyncio.gather(*(m.window_done.wait() for m in members)), 60)
    elapsed = time.monotonic() - start
    used = sum(cpu_seconds(pid) for pid in pids) - before
    delivered = sum(m.heard for m in members)
    assert delivered == sent * (SIX - 1), (delivered, sent)
    for m in members:
        await m.ws.close()
    return {"copies": delivered, "cpu_us_per_copy": 1e6 * used / delivered, "copies_per_s": delivered / elapsed}


async def storm(urls: list[str], redis: RedisServer | None, args: argparse.Namespace) -> dict[str, float]:
    start = time.monotonic()
    members = await open_rooms(urls, args.storm_rooms, args.concurrency, "storm-")
    await asyncio.wait_for(asyncio.gather(*(m.complete.wait() for m in members)), args.storm_timeout)
    took = time.monotonic() - start
    await asyncio.sleep(0.5)  # anything still on its way
    wrong = 0
    rosters: dict[str, set[str]] = {}
    if redis is not None:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url, decode_responses=True)
        from routing.redis.common import Keys

        keys = Keys("webrtc:", "bench")
        for r in range(args.storm_rooms):
            rosters[f"storm-{r}"] = set(client.hkeys(keys.room("members", f"storm-{r}")))
    for m in members:
        expected = rosters.get(m.room, {f"{m.room}.m{n}" for n in range(SIX)}) - {m.id}
        if m.view != expected:
            wrong += 1
    for m in members:
        await m.ws.close()
    return {"sockets": len(members), "seconds_to_complete_rosters": took, "views_differing": wrong}


async def run(args: argparse.Namespace, nodes: int) -> dict[str, Any]:
    cpus = set(range(os.cpu_count() or 1))
    pin = hasattr(os, "sched_setaffinity") and len(cpus) > 1
    if pin:
        os.sched_setaffinity(0, cpus)  # the servers inherit it: every CPU
    redis = RedisServer().start() if nodes > 1 else None
    procs = [s.start() for s in servers(nodes, redis)]
    if pin:
        os.sched_setaffinity(0, {max(cpus)})  # the load generator on one CPU
    try:
        pids = [p.pid for p in procs] + ([redis.pid] if redis is not None else [])
        urls = [p.ws for p in procs]
        result: dict[str, Any] = {"nodes": nodes}
        result["copies"] = await copies(urls, pids, args)
        result["storm"] = await storm(urls, redis, args)
        return result
    finally:
        for p in procs:
            p.stop()
        if redis is not None:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, choices=(1, 2), action="append", help="1, 2 or both (default)")
    parser.add_argument("--rooms", type=int, default=20, help="copies: rooms of six (default 20)")
    parser.add_argument("--messages", type=int, default=200, help="copies: messages per member (default 200)")
    parser.add_argument("--window", type=int, default=10, help="copies: messages per member per window (default 10)")
    parser.add_argument("--storm-rooms", type=int, default=1000, help="storm: rooms of six (default 1000)")
    parser.add_argument("--storm-timeout", type=float, default=120.0, help="storm: longest wait (s)")
    parser.add_argument("--concurrency", type=int, default=400, help="handshakes in flight (default 400)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for nodes in args.nodes or [1, 2]:
        print(json.dumps(asyncio.run(run(args, nodes))), flush=True)


if __name__ == "__main__":
    main()
