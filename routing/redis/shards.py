"""Where the backplane's keys and channels live: one redis-server, or a Redis Cluster.

The same ``--redis URL`` works for both: at each (re)connection the server at the URL is
asked whether it is part of a cluster. Either way the backplane uses sharded pub/sub
(SSUBSCRIBE/SPUBLISH, Redis 7 and newer), so in a cluster a message goes to the shard that
owns its channel instead of to every shard, and each key and channel of one id carries a
hash tag made from the id (``{...}``) so they share a slot.

Commands go through redis-py's client (``Redis`` or ``RedisCluster``, which follows the
cluster's redirections). The two busy connections, publishing batches and receiving them,
are plain redis-py connections to each shard's master, driven by the router itself: a
pipeline per round, no per-message bookkeeping.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

Address = tuple[str, int]

#: Sharded pub/sub, and the script that checks a limit and publishes in one step.
MIN_REDIS_VERSION = (7, 0)
CONNECT_TIMEOUT = 2.0


class BackplaneError(Exception):
    """The Redis at the URL cannot serve as a backplane (too old, wrong kind)."""


class Topology:
    """The command client, and where each key or channel lives."""

    def __init__(self, url: str, client_name: str) -> None:
        self.url = url
        self.client_name = client_name
        self._kwargs: dict[str, Any] = dict(parse_url(url))
        self.cluster = False
        self.client: Any = None  # Redis or RedisCluster, text replies
        self._home: Address = (str(self._kwargs.get("host", "127.0.0.1")), int(self._kwargs.get("port", 6379)))
        self._known: list[Address] = []

    async def open(self) -> None:
        """Ask what the server at the URL is (or, if it is down, another node of the cluster
        seen before), and build the client for it."""
        error: Exception = OSError(f"no Redis answered at {self._home[0]}:{self._home[1]}")
        for address in dict.fromkeys([self._home, *self._known]):
            try:
                server, cluster = await self._probe(address)
                break
            except (RedisError, OSError) as failure:
                error = failure
        else:
            raise error
        version = tuple(int(part) for part in server.get("redis_version", "0.0").split(".")[:2])
        if version < MIN_REDIS_VERSION:
            raise BackplaneError(
                f"the backplane needs Redis {'.'.join(map(str, MIN_REDIS_VERSION))} or newer (sharded pub/sub); "
                f"{address[0]}:{address[1]} runs {server.get('redis_version', 'an unknown version')}"
            )
        self.cluster = cluster.get("cluster_enabled") == "1"
        # No per-reply timeout (redis-py wraps every reply in one); each round of commands
        # has one deadline of its own instead.
        client: Redis | RedisCluster
        if self.cluster:
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in dict.fromkeys([address, *self._known])],
                username=self._kwargs.get("username"),
                password=self._kwargs.get("password"),
                ssl=self.url.startswith("rediss://"),
                client_name=self.client_name,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
            )
            await client.initialize()
            # Remember every node, replicas too: one of them may be the next way in.
            self._known = [(node.host, int(node.port)) for node in client.get_nodes()]
        else:
            client = Redis.from_url(
                self.url,
                client_name=self.client_name,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=None,
                retry=Retry(NoBackoff(), 0),
            )
        await self.close()
        self.client = client

    async def _probe(self, address: Address) -> tuple[dict[str, str], dict[str, str]]:
        probe = self.connection(address)
        try:
            await probe.connect()
            await probe.send_command("INFO", "server")
            server = _info(await probe.read_response())
            await probe.send_command("INFO", "cluster")
            return server, _info(await probe.read_response())
        finally:
            await probe.disconnect()

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None

    async def refresh(self) -> None:
        """Learn the cluster's shards again (after a failover or a resharding)."""
        if self.cluster and self.client is not None:
            await self.client.nodes_manager.initialize()

    def address(self, key: str) -> Address:
        """The master that owns ``key`` (or a sharded channel of that name)."""
        if not self.cluster:
            return self._home
        node = self.client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        return (node.host, int(node.port))

    def masters(self) -> list[Address]:
        if not self.cluster:
            return [self._home]
        return [(node.host, int(node.port)) for node in self.client.get_primaries()]

    def connection(self, address: Address) -> Connection:
        """A new (unconnected) connection to ``address`` with the URL's credentials: bytes
        replies and RESP2, as pub/sub readers want."""
        kwargs = dict(self._kwargs)
        kwargs.pop("connection_class", None)
        kwargs.update(
            host=address[0],
            port=address[1],
            client_name=self.client_name,
            protocol=2,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        if self.cluster:
            kwargs.pop("db", None)
        connection_class = SSLConnection if self.url.startswith("rediss://") else Connection
        return connection_class(**kwargs)


def _info(reply: Any) -> dict[str, str]:
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    return {key: value.strip() for key, value in pairs}


def tag(name: str) -> str:
    """``{digest}``: the hash tag that puts every key and channel of one id (or node) in one
    slot. A digest, not the name itself: an id may contain braces, which would cut a tag."""
    return "{" + hashlib.blake2b(name.encode("utf-8"), digest_size=8).hexdigest() + "}"
