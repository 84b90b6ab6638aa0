"""Publishing the batches: one SPUBLISH per destination node and loop iteration, over one
connection per shard (an :class:`Outlet`), answers read in order by its own reader.

A batch leaves as soon as the loop has filled it; Redis' answer says how many subscribers
got it, and none means its node is gone: the node's routing then answers for the batch what
that node would have (routing/nodes.py). A connection that breaks, or leaves a batch
unanswered for COMMAND_TIMEOUT seconds, loses what it carried, and the next batch opens a
new one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from routing import wire
from routing.nodes import NodeRouting
from routing.redis.common import COMMAND_TIMEOUT, Keys, Link, disconnect
from routing.redis.shards import Address, Topology


class Outlet:
    """One shard's publishing connection, and the batches it has not been answered for."""

    def __init__(self, publisher: Publisher, address: Address, connection: Connection) -> None:
        self.publisher = publisher
        self.address = address
        self.connection = connection
        #: (loop time sent, batch) of the batches Redis has not answered yet, oldest first.
        self.waiting: deque[tuple[float, wire.Batch]] = deque()
        self.reader = asyncio.get_running_loop().create_task(self._read(), name=f"redis-outlet-{address[1]}")

    async def send(self, commands: list[tuple[str, str, bytes]], batches: list[wire.Batch]) -> None:
        now = asyncio.get_running_loop().time()
        self.waiting.extend((now, batch) for batch in batches)
        await self.connection.send_packed_command(self.connection.pack_commands(commands), check_health=False)

    async def _read(self) -> None:
        try:
            while True:
                heard = await self.connection.read_response()
                _, batch = self.waiting.popleft()
                self.publisher.answered(batch, heard)
        except (RedisError, OSError, IndexError) as error:
            self.publisher.failed(self, error)

    def overdue(self, now: float) -> bool:
        """Redis has not answered a batch for COMMAND_TIMEOUT seconds (frozen, or cut off)."""
        return bool(self.waiting) and now - self.waiting[0][0] > COMMAND_TIMEOUT

    def close(self) -> None:
        if self.reader is not asyncio.current_task():
            self.reader.cancel()
        asyncio.get_running_loop().create_task(disconnect(self.connection))


class Publisher:
    """Takes the node's batches when ``wake`` is set, and publishes them."""

    def __init__(self, routing: NodeRouting, wake: asyncio.Event, topology: Topology, keys: Keys, link: Link) -> None:
        self.routing = routing
        self.wake = wake
        self.topology = topology
        self.keys = keys
        self.link = link
        self.outlets: dict[Address, Outlet] = {}
        self.busy = False
        #: Batches published so far.
        self.published = 0

    @property
    def settled(self) -> bool:
        """Nothing waits to be published or answered."""
        return not self.routing.batches and not self.busy and not any(outlet.waiting for outlet in self.outlets.values())

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batches = self.routing.take_batches()
            if not batches:
                continue
            self.busy = True
            try:
                await self._publish(batches)
            finally:
                self.busy = False

    async def _publish(self, batches: dict[str, wire.Batch]) -> None:
        topology = self.topology
        if topology.client is None:
            self.routing.lose(batches.values())
            return
        by_shard: dict[Address, list[tuple[str, wire.Batch]]] = {}
        for node, batch in batches.items():
            by_shard.setdefault(topology.address(self.keys.channel("inbox", node)), []).append((node, batch))
        node_name = self.keys.node
        for address, items in by_shard.items():
            commands = [("SPUBLISH", self.keys.channel("inbox", node), batch.encode(node_name)) for node, batch in items]
            try:
                outlet = self.outlets.get(address)
                if outlet is None:
                    outlet = await asyncio.wait_for(self._open(address), COMMAND_TIMEOUT)
                await asyncio.wait_for(outlet.send(commands, [batch for _, batch in items]), COMMAND_TIMEOUT)
                self.published += len(commands)
            except (TimeoutError, RedisError, OSError) as error:
                outlet = self.outlets.get(address)
                if outlet is not None:
                    self.failed(outlet, error)
                else:
                    self.link.lost(error)
                    self.routing.lose(batch for _, batch in items)

    async def _open(self, address: Address) -> Outlet:
        connection = self.topology.connection(address)
        await connection.connect()
        outlet = self.outlets[address] = Outlet(self, address, connection)
        return outlet

    def answered(self, batch: wire.Batch, heard: object) -> None:
        """Redis' answer to a batch: how many subscribers got it (none: its node is gone, or
        not subscribed yet)."""
        if not heard:
            self.routing.unreachable(batch)

    def failed(self, outlet: Outlet, error: BaseException) -> None:
        """A publishing connection broke (or Redis stopped answering on it): what it carried
        and was not answered is lost; the next batch opens a new one."""
        if self.outlets.get(outlet.address) is outlet:
            del self.outlets[outlet.address]
        self.link.lost(error)
        lost = [batch for _, batch in outlet.waiting]
        outlet.waiting.clear()
        if not self.link.stopping:
            self.routing.lose(lost)
        outlet.close()

    def expire(self, now: float) -> None:
        """Fail the outlets Redis has left unanswered too long."""
        for outlet in list(self.outlets.values()):
            if outlet.overdue(now):
                self.failed(outlet, TimeoutError("Redis did not answer a batch of messages in time"))

    def close_all(self, why: str) -> None:
        for outlet in list(self.outlets.values()):
            self.failed(outlet, OSError(why))
