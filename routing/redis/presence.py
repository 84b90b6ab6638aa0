"""Presence: this node's record (a key that expires after NODE_TTL unless refreshed), the
other live nodes, and reaping the dead.

A node that sees another's key gone reaps it: closes its pub/sub connections on the Redis
side (a node cut off without a FIN would otherwise keep its inbox subscribed until Redis'
TCP keepalive notices) and removes its sockets from the directory, telling the nodes that
mirror them.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from routing import wire
from routing.nodes import NodeRouting
from routing.redis.common import COMMAND_TIMEOUT, Keys, Link, log
from routing.redis.publisher import Publisher
from routing.redis.rooms import forget_rooms
from routing.redis.shards import Address, Topology


class Presence:
    """This node's presence, and what it knows of the others'."""

    def __init__(
        self, routing: NodeRouting, publisher: Publisher, topology: Topology, keys: Keys, link: Link, ttl: float
    ) -> None:
        self.routing = routing
        self.publisher = publisher
        self.topology = topology
        self.keys = keys
        self.link = link
        self.ttl = ttl
        #: Other live nodes (they said hello, or their presence key is alive).
        self.others: set[str] = set()

    async def run(self) -> None:
        """Every third of NODE_TTL: give up on what Redis left unanswered, refresh our record, reap."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            now = asyncio.get_running_loop().time()
            self.publisher.expire(now)
            self.routing.expire(now)
            if not self.link.connected:
                continue
            try:
                await asyncio.wait_for(self.refresh(), COMMAND_TIMEOUT)
                await asyncio.wait_for(self.reap(), COMMAND_TIMEOUT)
            except (TimeoutError, RedisError, OSError) as error:
                self.link.lost(error)

    def heard(self, verb: str, node: str, flag: str) -> None:
        """A beat (this node's own too: routing/liveness.py), or another node's hello or bye,
        on the control channel."""
        if verb == "beat":
            self.routing.beat(node, flag == "1")
        elif node == self.keys.node:
            return
        elif verb == "hello":
            self.others.add(node)
        elif verb == "bye":
            self.others.discard(node)
            self.routing.forget_node(node)

    async def refresh(self) -> None:
        pipe = self.topology.client.pipeline(transaction=False)
        pipe.set(self.keys.presence(self.keys.node), "1", px=int(self.ttl * 1000))
        pipe.sadd(self.keys.nodes, self.keys.node)
        await pipe.execute()

    async def discover(self) -> list[str]:
        """The other nodes registered in Redis whose presence expired; the live ones join
        ``others`` (never removed here: a node that said hello meanwhile must stay)."""
        client = self.topology.client
        members: set[str] = await client.smembers(self.keys.nodes)
        nodes = sorted(members - {self.keys.node})
        if not nodes:
            return []
        pipe = client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self.keys.presence(node))
        flags = await pipe.execute()
        self.others.update(node for node, flag in zip(nodes, flags, strict=True) if flag)
        return [node for node, flag in zip(nodes, flags, strict=True) if not flag]

    async def reap(self) -> None:
        dead = await self.discover()
        if not dead:
            return
        names = {f"webrtc-node-{node}" for node in dead}
        for address in self.topology.masters():
            await self._kill_clients(address, names)
        for node in dead:
            log.info("node %s stopped refreshing its presence: its sockets are forgotten", node)
            self.others.discard(node)
            self.routing.forget_node(node)
            await self.forget(node)

    async def _kill_clients(self, address: Address, names: set[str]) -> None:
        """Close, on the Redis side, the connections of dead nodes (their inbox may still be
        subscribed by a connection nobody reads)."""
        connection = self.topology.connection(address)
        try:
            await connection.connect()
            await connection.send_command("CLIENT", "LIST")
            listing = await connection.read_response()
            for line in (listing.decode() if isinstance(listing, bytes) else str(listing)).splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                if fields.get("name") in names:
                    await connection.send_command("CLIENT", "KILL", "ID", fields["id"])
                    with contextlib.suppress(RedisError):
                        await connection.read_response()
        finally:
            await connection.disconnect()

    async def forget(self, node: str) -> None:
        """Remove ``node``'s sockets from the directory, telling the nodes that mirror them."""
        client = self.topology.client
        keys = self.keys
        members: set[str] = await client.smembers(keys.node_sessions(node))
        pipe = client.pipeline(transaction=False)
        for member in members:
            my_id, _, session_id = member.partition(wire.SEP)
            pipe.hdel(keys.directory(my_id), session_id)
            pipe.spublish(keys.events(my_id), wire.left(node, my_id, session_id))
        pipe.delete(keys.node_sessions(node))
        pipe.delete(keys.presence(node))
        pipe.srem(keys.nodes, node)
        await pipe.execute()
        await forget_rooms(client, keys, node)
