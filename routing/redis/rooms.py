"""The rooms' roster in Redis: who is in each room, in what order, on which nodes.

Four keys per room, all on the room's shard (one hash tag): ``room-members`` (id -> the
version at which it joined), ``room-pairs`` ("id NUL node" -> the version at which the id got
a socket on that node), ``room-version`` (a counter every change bumps, started from the
clock so that it never goes back, not even after Redis lost its keys) and ``room-epoch``
(where the counter started: a node's pair known from before it may not be registered again
yet, so a snapshot that lacks it does not remove it until the roster is read again). A script adds or
removes a pair and answers the room as it stands, in one step: two newcomers on two nodes
racing for the last place cannot both get it. Each node also lists its pairs (``node-rooms``)
so that the node that reaps it can remove them. What a node does with the answers is
routing/rooms.py; the jobs run in the directory's queue (jobs.py), in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from routing import wire
from routing.redis.common import COMMAND_TIMEOUT, Keys, Link
from routing.redis.jobs import DirectoryJobs
from routing.rooms import FULL, JoinAnswer, LeaveAnswer, Snapshot

#: Seconds the version of an empty room is kept (a node's mirror may still hold its changes).
VERSION_KEPT = 86400

#: KEYS members, pairs, version, epoch; ARGV id, node, limit. Answers {-1} when the room has
#: limit ids and ``id`` is not one, else {version, members (flat), pairs (flat), epoch}.
JOIN = r"""
local id, node, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seq = redis.call('HGET', KEYS[1], id)
if not seq and limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then
  return {-1}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  -- A new room (or a Redis that lost its keys): versions start from the clock, in
  -- microseconds, so they never go below what the nodes' mirrors saw before; the epoch says
  -- where this roster started.
  local now = redis.call('TIME')
  local start = now[1] .. string.format('%06d', tonumber(now[2]))
  redis.call('SET', KEYS[3], start)
  redis.call('SET', KEYS[4], start)
end
local version = redis.call('INCR', KEYS[3])
redis.call('PERSIST', KEYS[3])
redis.call('PERSIST', KEYS[4])
if not seq then
  redis.call('HSET', KEYS[1], id, version)
end
redis.call('HSETNX', KEYS[2], id .. '\0' .. node, version)
return {version, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[4]) or '0'}
"""

#: KEYS members, pairs, version, epoch. Answers {version, members, pairs, epoch} ({-2} for a
#: room that is not there), changing nothing.
READ = r"""
local version = redis.call('GET', KEYS[3])
if not version then
  return {-2}
end
return {tonumber(version), redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[4]) or '0'}
"""

#: KEYS members, pairs, version, epoch; ARGV id, node, kept. Answers {0} if the pair was not there,
#: else {version, the nodes still in the room}.
LEAVE = r"""
local id, node = ARGV[1], ARGV[2]
if redis.call('HDEL', KEYS[2], id .. '\0' .. node) == 0 then
  return {0}
end
local version = redis.call('INCR', KEYS[3])
local mine, gone, nodes, seen = id .. '\0', 1, {}, {}
for _, key in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(key, 1, #mine) == mine then
    gone = 0
  end
  local other = string.sub(key, string.find(key, '\0', 1, true) + 1)
  if not seen[other] then
    seen[other] = true
    nodes[#nodes + 1] = other
  end
end
if gone == 1 then
  redis.call('HDEL', KEYS[1], id)
end
if #nodes == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
return {version, nodes}
"""


def run_script(pipe: Any, keys: Keys, script: str, room: str, *args: str | int) -> None:
    """Queue ``script`` (JOIN, LEAVE or READ) on ``pipe`` with the four keys of ``room``, all on its shard."""
    names = [keys.room(kind, room) for kind in ("members", "pairs", "version", "epoch")]
    pipe.execute_command("EVAL", script, len(names), *names, *args)


def _pairs(flat: list[str]) -> Iterator[tuple[str, str]]:
    return zip(flat[::2], flat[1::2], strict=True)


@dataclass
class RoomJoin:
    """A socket of ``id`` joins ``room`` on this node."""

    room: str
    id: str
    limit: int
    answered: asyncio.Future[JoinAnswer]

    def commands(self, pipe: Any, keys: Keys) -> None:
        run_script(pipe, keys, JOIN, self.room, self.id, keys.node, self.limit)
        pipe.sadd(keys.node_rooms(keys.node), f"{self.room}{wire.SEP}{self.id}")

    def done(self, replies: Iterator[Any]) -> None:
        reply = next(replies, None)
        next(replies, None)
        if not self.answered.done():
            self.answered.set_result(self.answer(reply))

    @staticmethod
    def answer(reply: Any) -> JoinAnswer:
        if not isinstance(reply, list) or not reply:
            return None
        if reply[0] == -1:
            return FULL
        members = {id: int(seq) for id, seq in _pairs(reply[1])}
        pairs: dict[tuple[str, str], int] = {}
        for key, version in _pairs(reply[2]):
            id, _, node = key.partition(wire.SEP)
            pairs[(id, node)] = int(version)
        return Snapshot(int(reply[0]), members, pairs, int(reply[3]))


@dataclass
class RoomRead:
    """Read ``room``'s roster, changing nothing (Rooms.settled)."""

    room: str
    answered: Callable[[JoinAnswer], None]

    def commands(self, pipe: Any, keys: Keys) -> None:
        run_script(pipe, keys, READ, self.room)

    def done(self, replies: Iterator[Any]) -> None:
        reply = next(replies, None)
        # No room (it cannot be, while this node has a member in it): nothing to go by.
        self.answered(None if isinstance(reply, list) and reply[:1] == [-2] else RoomJoin.answer(reply))


@dataclass
class RoomLeave:
    """``id`` has no socket left in ``room`` on ``node``."""

    room: str
    id: str
    node: str
    left: Callable[[LeaveAnswer], None]

    def commands(self, pipe: Any, keys: Keys) -> None:
        run_script(pipe, keys, LEAVE, self.room, self.id, self.node, VERSION_KEPT * 1000)
        pipe.srem(keys.node_rooms(self.node), f"{self.room}{wire.SEP}{self.id}")

    def done(self, replies: Iterator[Any]) -> None:
        reply = next(replies, None)
        next(replies, None)
        if isinstance(reply, list) and len(reply) == 2:
            self.left((int(reply[0]), list(reply[1])))
        else:
            self.left(None)


class RedisRoster:
    """routing.rooms.Roster over the directory's job queue."""

    def __init__(self, jobs: DirectoryJobs, keys: Keys, link: Link, settle_after: float) -> None:
        self.jobs = jobs
        self.keys = keys
        self.link = link
        #: Seconds by which every live node has registered its ids again (else it is reaped).
        self.settle_after = settle_after

    async def join(self, room: str, id: str, node: str, limit: int) -> JoinAnswer:
        if not self.link.connected:
            return None
        answered: asyncio.Future[JoinAnswer] = asyncio.get_running_loop().create_future()
        self.jobs.put(RoomJoin(room, id, limit, answered))
        try:
            return await asyncio.wait_for(answered, COMMAND_TIMEOUT)
        except TimeoutError:
            return None

    def leave(self, room: str, id: str, node: str, done: Callable[[LeaveAnswer], None]) -> None:
        self.jobs.put(RoomLeave(room, id, node, done))

    def settle(self, room: str, done: Callable[[JoinAnswer], None]) -> None:
        asyncio.get_running_loop().call_later(self.settle_after, lambda: self.jobs.put(RoomRead(room, done)))


async def forget_rooms(client: Any, keys: Keys, node: str) -> None:
    """Remove every pair of ``node`` (it is gone; every node forgets it in its own mirror)."""
    entries: set[str] = await client.smembers(keys.node_rooms(node))
    if entries:
        pipe = client.pipeline(transaction=False)
        for entry in sorted(entries):
            room, _, id = entry.partition(wire.SEP)
            run_script(pipe, keys, LEAVE, room, id, node, VERSION_KEPT * 1000)
        await pipe.execute()
    await client.delete(keys.node_rooms(node))
