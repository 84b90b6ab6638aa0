"""The directory's writes and reads, in order: one pipeline per round of jobs.

Each job is a small class that says which commands it sends and what it does with their
replies: a socket registering (and the cluster-wide MAX_SOCKETS_PER_ID checked in the same
step), one leaving, a snapshot of an id's entries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from routing import Session, wire
from routing.redis.common import COMMAND_TIMEOUT, Keys, Link
from routing.redis.shards import Topology

#: Most directory commands sent in one pipeline.
BATCH = 512

#: Adds a socket to its id's directory and tells the nodes that mirror the id, in one step,
#: unless the id already has ARGV[3] sockets (0: no limit). Answers how many nodes heard
#: the event, or -1 when the limit refused the socket.
REGISTER = """
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= limit then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SPUBLISH', ARGV[4], ARGV[5])
"""


class Job(Protocol):
    def commands(self, pipe: Any, keys: Keys) -> None: ...

    def done(self, replies: Iterator[Any]) -> None:
        """Its replies (None for each if Redis did not answer)."""


@dataclass
class Register:
    """A socket joins its id's directory; ``registered`` gets how many nodes heard of it
    (-1: MAX_SOCKETS_PER_ID refused it; None: Redis did not answer)."""

    session: Session
    limit: int
    registered: asyncio.Future[int | None] | None = None

    def commands(self, pipe: Any, keys: Keys) -> None:
        session = self.session
        event = wire.joined(keys.node, session.id, session.session_id, session.peer_id)
        value = wire.entry(keys.node, session.peer_id)
        pipe.execute_command(
            "EVAL", REGISTER, 1, keys.directory(session.id), session.session_id, value, self.limit, keys.events(session.id), event
        )
        pipe.sadd(keys.node_sessions(keys.node), f"{session.id}{wire.SEP}{session.session_id}")

    def done(self, replies: Iterator[Any]) -> None:
        heard = next(replies, None)
        next(replies, None)
        if self.registered is not None and not self.registered.done():
            self.registered.set_result(heard if isinstance(heard, int) else None)


@dataclass
class Unregister:
    """A socket leaves its id's directory, and the nodes that mirror the id are told."""

    id: str
    session_id: str

    def commands(self, pipe: Any, keys: Keys) -> None:
        pipe.hdel(keys.directory(self.id), self.session_id)
        pipe.spublish(keys.events(self.id), wire.left(keys.node, self.id, self.session_id))
        pipe.srem(keys.node_sessions(keys.node), f"{self.id}{wire.SEP}{self.session_id}")

    def done(self, replies: Iterator[Any]) -> None:
        for _ in range(3):
            next(replies, None)


@dataclass
class Snapshot:
    """The entries of an id's directory (``loaded`` gets them, or None if Redis did not answer)."""

    id: str
    generation: int
    loaded: Callable[[Snapshot, dict[str, str] | None], None]

    def commands(self, pipe: Any, keys: Keys) -> None:
        pipe.hgetall(keys.directory(self.id))

    def done(self, replies: Iterator[Any]) -> None:
        entries = next(replies, None)
        self.loaded(self, entries if isinstance(entries, dict) else None)


class DirectoryJobs:
    """Runs the jobs in the order they were put, BATCH at most per pipeline."""

    def __init__(self, topology: Topology, keys: Keys, link: Link) -> None:
        self.topology = topology
        self.keys = keys
        self.link = link
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.running = False

    def put(self, job: Job) -> None:
        self.queue.put_nowait(job)

    @property
    def settled(self) -> bool:
        return self.queue.empty() and not self.running

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            while len(jobs) < BATCH and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            self.running = True
            try:
                await self._round(jobs)
            finally:
                self.running = False

    async def _round(self, jobs: list[Job]) -> None:
        client = self.topology.client
        results: list[Any] | None = None
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for job in jobs:
                job.commands(pipe, self.keys)
            try:
                results = await asyncio.wait_for(pipe.execute(raise_on_error=False), COMMAND_TIMEOUT)
            except (TimeoutError, RedisError, OSError) as error:
                self.link.lost(error)
        replies = iter(results or ())
        for job in jobs:
            job.done(replies)
