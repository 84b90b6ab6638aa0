"""What the backplane's parts share: the names of its keys and channels, the state of the
node's link to Redis, and its bounds in time."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio.connection import Connection

from routing.redis.shards import tag

log = logging.getLogger("routing.redis")

#: Longest each step of stop() may take.
STOP_WAIT = 1.0
#: Longest a round of commands or publications may wait for Redis before it counts as lost.
COMMAND_TIMEOUT = 5.0


class Keys:
    """The names of one deployment's keys and channels (several may share one Redis)."""

    def __init__(self, prefix: str, node: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"REDIS_PREFIX must not contain braces (Redis Cluster hash tags), got {prefix!r}")
        self.prefix = prefix
        self.node = node
        self.inbox = self.channel("inbox", node)
        self.control = f"{prefix}control"
        self.nodes = f"{prefix}nodes"

    def channel(self, kind: str, name: str) -> str:
        """A key or sharded channel of one id or node: ``<prefix><kind>:{digest}``."""
        return f"{self.prefix}{kind}:{tag(name)}"

    def events(self, id: str) -> str:
        return self.channel("events", id)

    def directory(self, id: str) -> str:
        return self.channel("dir", id)

    def presence(self, node: str) -> str:
        return self.channel("node", node)

    def node_sessions(self, node: str) -> str:
        return self.channel("node-sessions", node)

    def room(self, kind: str, room: str) -> str:
        """A key of one room ("members", "pairs", "version"): every one on the room's shard."""
        return self.channel(f"room-{kind}", room)

    def node_rooms(self, node: str) -> str:
        """The rooms where ``node`` has sockets ("room NUL id"), for reaping it."""
        return self.channel("node-rooms", node)

    def shared(self, name: str) -> str:
        return f"{self.prefix}shared:{name}"


class Link:
    """Whether this node is connected to Redis, and the one place that says it was lost."""

    def __init__(self) -> None:
        self.connected = False
        #: True while the router stops (closing its own connections is not losing Redis).
        self.stopping = False

    def lost(self, error: BaseException) -> None:
        if self.stopping:
            return
        if self.connected:
            log.warning("lost Redis (%s): local delivery goes on, other nodes are unreachable", error)
        else:
            log.debug("Redis still unreachable: %r", error)
        self.connected = False


async def disconnect(connection: Connection) -> None:
    """Close a connection, whatever state it is in, within STOP_WAIT."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.disconnect(), STOP_WAIT)
