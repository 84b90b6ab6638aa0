"""Receiving: one pub/sub connection per shard, subscribed to this node's inbox, the control
channel and the events of every id the node mirrors; after each (re)connection the
subscriptions are made again, every mirrored id's snapshot reloaded and, once Redis has
confirmed the node's inbox, its sockets registered again (``on_connected``); a lost connection fails what is being published
(``on_disconnected``).

What arrives goes to the node's routing state (routing/nodes.py): batches to
``NodeRouting.receive``, directory events to ``NodeRouting.event``, snapshots to
``Mirror.snapshot``; hello, bye and beats (this node's own too) to ``on_control``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from routing import wire
from routing.nodes import NodeRouting
from routing.redis.common import COMMAND_TIMEOUT, Keys, Link, disconnect, log
from routing.redis.jobs import DirectoryJobs, Snapshot
from routing.redis.shards import Address, BackplaneError, Topology

#: Longest wait between two attempts to connect (the first waits 0.1 s, each next twice that).
RECONNECT_DELAY = 1.0
#: Seconds before a snapshot Redis did not answer is asked for again.
SNAPSHOT_RETRY = 0.5


class Subscriber:
    """The node's subscriptions: what it wants, what the connections were asked, what Redis confirmed."""

    def __init__(
        self,
        routing: NodeRouting,
        topology: Topology,
        keys: Keys,
        link: Link,
        jobs: DirectoryJobs,
        on_control: Callable[[str, str, str], None],
        on_connected: Callable[[], Awaitable[None]],
        on_disconnected: Callable[[], None],
    ) -> None:
        self.routing = routing
        self.topology = topology
        self.keys = keys
        self.link = link
        self.jobs = jobs
        self.on_control = on_control
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.wanted: dict[str, str | None] = {keys.inbox: None, keys.control: None}  # channel -> id
        self.asked: set[str] = set()
        self.confirmed: set[str] = set()
        self.connections: dict[Address, Connection] = {}
        self.changes: asyncio.Queue[str] = asyncio.Queue()
        #: Mirrored ids -> done once their snapshot is loaded (a join waits for its ids').
        self.ready: dict[str, asyncio.Future[None]] = {}
        #: Bumped at each connection: a snapshot asked before is stale.
        self.generation = 0
        self._inbox = keys.inbox.encode()
        self._control = keys.control.encode()
        #: Set once Redis confirmed this node's inbox subscription (per connection): only then
        #: are its sockets registered, so that a node that sees them can reach them.
        self.inbox_ready = asyncio.Event()
        #: Set by quiesce(): the node is going away, it subscribes to no more ids.
        self.quiet = False
        #: Set (with why) to make the connections again.
        self._restart = asyncio.Event()
        self._restart_why = ""

    # --- what the node mirrors ------------------------------------------------------------

    def want(self, id: str) -> None:
        if self.routing.mirror.want(id) and not self.quiet:
            channel = self.keys.events(id)
            self.wanted[channel] = id
            self.ready[id] = asyncio.get_running_loop().create_future()
            self.changes.put_nowait(channel)

    def unwant(self, id: str) -> None:
        if self.routing.mirror.unwant(id):
            ready = self.ready.pop(id, None)
            if ready is not None:
                ready.cancel()
            channel = self.keys.events(id)
            self.wanted.pop(channel, None)
            self.changes.put_nowait(channel)

    async def quiesce(self) -> None:
        """Unsubscribe from every mirrored id (the node is going away: no join elsewhere
        should wait for its acknowledgement) and return once Redis confirmed it, reading what
        arrives meanwhile. The inbox and the control channel stay; the mirror stays as it is,
        for what the closing sockets still relay."""
        self.quiet = True
        for channel, id in list(self.wanted.items()):
            if id is not None:
                del self.wanted[channel]
                self.changes.put_nowait(channel)
        while self.link.connected and any(channel not in self.wanted for channel in self.confirmed):
            await asyncio.sleep(0.01)

    @property
    def settled(self) -> bool:
        return self.changes.empty() and set(self.wanted) == self.confirmed and self.routing.mirror.settled

    # --- connecting, and again after each loss --------------------------------------------

    async def run(self) -> None:
        delay = 0.1
        while True:
            readers: list[asyncio.Task[None]] = []
            try:
                await asyncio.wait_for(self.topology.open(), COMMAND_TIMEOUT)
                self.generation += 1
                for address in self.topology.masters():
                    connection = self.topology.connection(address)
                    await asyncio.wait_for(connection.connect(), COMMAND_TIMEOUT)
                    self.connections[address] = connection
                self.routing.mirror.reloading()
                loop = asyncio.get_running_loop()
                for id, ready in self.ready.items():
                    if ready.done():
                        self.ready[id] = loop.create_future()
                for channel in list(self.wanted):
                    await self._subscribe(channel)
                readers = [asyncio.create_task(self._read(c)) for c in self.connections.values()]
                readers.append(asyncio.create_task(self._apply_changes()))
                self._restart.clear()
                readers.append(asyncio.create_task(self._until_restart()))
                await asyncio.wait_for(self.inbox_ready.wait(), COMMAND_TIMEOUT)
                await asyncio.wait_for(self.on_connected(), COMMAND_TIMEOUT)
                if not self.link.connected:
                    cluster = " Cluster" if self.topology.cluster else ""
                    log.info("connected to Redis%s at %s as node %s", cluster, self.topology.url, self.keys.node)
                self.link.connected = True
                delay = 0.1
                done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            except BackplaneError as error:
                log.error("%s", error)
                self.link.lost(error)
                delay = 5.0
            except (TimeoutError, RedisError, OSError) as error:
                self.link.lost(error)
            finally:
                for task in readers:
                    task.cancel()
                self.on_disconnected()
                await self.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY)

    def restart(self, why: str) -> None:
        """Drop the connections and make them again (a link that stopped carrying anything
        without closing: Redis may have dropped us meanwhile, and we would never know)."""
        self._restart_why = why
        self._restart.set()

    async def _until_restart(self) -> None:
        await self._restart.wait()
        self._restart.clear()
        raise OSError(self._restart_why)

    async def disconnect(self) -> None:
        self.inbox_ready.clear()
        connections = list(self.connections.values())
        self.connections.clear()
        self.asked.clear()
        self.confirmed.clear()
        for connection in connections:
            await disconnect(connection)

    async def _subscribe(self, channel: str) -> None:
        connection = self.connections.get(self.topology.address(channel))
        if connection is None:
            raise OSError(f"no connection to the shard of {channel!r}")
        self.asked.add(channel)
        await connection.send_command("SSUBSCRIBE", channel)

    async def _apply_changes(self) -> None:
        while True:
            channel = await self.changes.get()
            # Act on the latest state: a socket may have come or gone meanwhile.
            if channel in self.wanted and channel not in self.asked:
                await self._subscribe(channel)
            elif channel not in self.wanted and channel in self.asked:
                self.asked.discard(channel)
                connection = self.connections.get(self.topology.address(channel))
                if connection is not None:
                    await connection.send_command("SUNSUBSCRIBE", channel)

    # --- what arrives ---------------------------------------------------------------------

    async def _read(self, connection: Connection) -> None:
        inbox, control, routing = self._inbox, self._control, self.routing
        while True:
            reply = await connection.read_response()
            kind, channel, data = reply[0], reply[1], reply[2]
            if kind == b"smessage":
                if channel == inbox:
                    routing.receive(data)
                elif channel == control:
                    verb, _, rest = data.decode().partition(wire.SEP)
                    node, _, flag = rest.partition(wire.SEP)
                    self.on_control(verb, node, flag)
                else:
                    routing.event(data)
            elif kind == b"ssubscribe":
                self._subscribed(channel.decode())
            elif kind == b"sunsubscribe":
                name = channel.decode()
                self.confirmed.discard(name)
                if name in self.wanted:
                    # Redis moved the channel's slot (a resharding): start over.
                    raise OSError(f"Redis dropped our subscription to {name!r}")

    def _subscribed(self, channel: str) -> None:
        self.confirmed.add(channel)
        if channel == self.keys.inbox:
            self.inbox_ready.set()
        id = self.wanted.get(channel)
        if id is not None and id in self.routing.mirror.interests:
            self.jobs.put(Snapshot(id, self.generation, self._loaded))

    def _loaded(self, job: Snapshot, entries: dict[str, str] | None) -> None:
        if job.id not in self.routing.mirror.interests or job.generation != self.generation:
            return  # no longer mirrored, or a newer snapshot is coming
        if entries is None:
            # Redis did not answer: ask again (meanwhile the id's events are kept, so they
            # must not wait for a reconnection that may never come).
            asyncio.get_running_loop().call_later(SNAPSHOT_RETRY, self.jobs.put, job)
            return
        self.routing.mirror.snapshot(job.id, entries)
        ready = self.ready.get(job.id)
        if ready is not None and not ready.done():
            ready.set_result(None)
