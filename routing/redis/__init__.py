"""Routing across processes and machines through Redis: a directory, and one inbox per node.

Each process (a *node*) keeps its own sockets in a :class:`MemoryRouter` and delivers to
them directly, so local delivery never waits for Redis and goes on when Redis is down.
For the others it routes to *nodes*, not to conversations:

* **The directory** says where every socket is: one Redis hash per id (session -> node and
  peer_id). A node mirrors, in memory (:class:`routing.directory.Directory`), the entries of
  the ids its own sockets involve, kept current by join and leave events published on one
  sharded channel per id. A socket is *ready* (its handler starts reading) only once every
  node that mirrors its id has acknowledged it, so no message sent afterwards can miss it.
* **One inbox per node**: a message for sockets on node N goes to N's inbox. Everything this
  node has for N during one event-loop iteration travels in one SPUBLISH, so Redis' work and
  ours are per batch, not per message (routing/wire.py has the format). One connection per
  shard publishes, batches to one node leave in order, and a node reads its inbox in order,
  so messages between two sockets keep their order across nodes.
* **Exact rule 3.** The node that delivers a message answers when none of the peer's sockets
  there took it (its directory entry was stale: the socket had just left); the sender's node
  then sends PEER-UNAVAILABLE to the sender's conversation, on every node. A destination
  that is gone (SPUBLISH reached no subscriber: the node was killed) counts the same at once.
  Only a socket that closes while the frame is already on its way to it can still lose a
  message counted as delivered, exactly as on a single node.
* **Receipts and beats** (routing/liveness.py): a node that takes no batch (frozen, cut off,
  killed before Redis noticed) gives no receipt, and falls silent on the control channel:
  within DELIVERY_BOUND its senders are told and its sockets count as unreachable until it is
  heard again. A node that does not hear its own beat is cut off, and says so.

What a node knows and decides is routing/nodes.py, free of Redis (tests/test_nodes.py). The
I/O around it is this package, one duty per module: ``jobs.py`` (the directory's writes and
snapshots, in order), ``publisher.py`` (the batches out, and Redis' answers),
``subscriber.py`` (the subscriptions, what arrives, reconnecting), ``presence.py`` (this
node's record, the others', reaping the dead), ``pulse.py`` (ticks and beats), ``shards.py`` (one redis-server or a Redis
Cluster) and ``common.py`` (names, the link's state, time bounds). :class:`RedisRouter`
joins them behind the ``routing.Router`` interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Callable
from typing import Generic

from redis.exceptions import RedisError

from routing import BackplaneFigures, S, wire
from routing.liveness import DEFAULT_BOUND, Timing
from routing.nodes import JoinAcks, NodeRouting
from routing.redis.common import COMMAND_TIMEOUT, STOP_WAIT, Keys, Link, log
from routing.redis.jobs import DirectoryJobs, Register, Unregister
from routing.redis.presence import Presence
from routing.redis.publisher import Publisher
from routing.redis.pulse import Pulse
from routing.redis.rooms import RedisRoster, RoomJoin, RoomLeave
from routing.redis.shards import Topology
from routing.redis.subscriber import Subscriber
from routing.rooms import JoinAnswer


class RedisRouter(Generic[S]):
    """A :class:`routing.Router` spanning every node that shares one Redis (or Redis Cluster)."""

    def __init__(
        self,
        url: str,
        prefix: str = "webrtc:",
        node_ttl: float = 10.0,
        max_sockets_per_id: int = 0,
        delivery_bound: float = DEFAULT_BOUND,
    ) -> None:
        self.url = url
        self.node = uuid.uuid4().hex[:12]
        self.keys = Keys(prefix, self.node)
        self.max_sockets_per_id = max_sockets_per_id
        self.link = Link()
        self._wake = asyncio.Event()
        clock = lambda: asyncio.get_running_loop().time()  # noqa: E731
        self.routing: NodeRouting[S] = NodeRouting(self.node, self._wake.set, clock, Timing(delivery_bound))
        #: The Router's relay: straight to the routing state (the hottest call there is).
        self.relay: Callable[[S, str], None] = self.routing.relay
        self.local = self.routing.local
        self.directory = self.routing.directory
        self.rooms = self.routing.rooms
        self.topology = Topology(url, f"webrtc-node-{self.node}")
        self.jobs = DirectoryJobs(self.topology, self.keys, self.link)
        # The roster read again after Redis lost it: once every live node re-registered, or was reaped.
        self.rooms.roster = RedisRoster(self.jobs, self.keys, self.link, node_ttl * 4 / 3 + 1.0)
        self.publisher = Publisher(self.routing, self._wake, self.topology, self.keys, self.link)
        self.presence = Presence(self.routing, self.publisher, self.topology, self.keys, self.link, node_ttl)
        self.subscriber = Subscriber(
            self.routing,
            self.topology,
            self.keys,
            self.link,
            self.jobs,
            on_control=self.presence.heard,
            on_connected=self._rejoin,
            on_disconnected=lambda: self.publisher.close_all("reconnecting to Redis"),
        )
        self.pulse = Pulse(
            self.routing, self.topology, self.keys, self.link, self.subscriber, self.publisher, lambda: self.settled
        )
        self._tasks: list[asyncio.Task[None]] = []
        #: Sockets that left with ``linger``: their ids stay mirrored until release().
        self._lingering: set[S] = set()
        self._shared: dict[str, str] = {}
        self._adopters: dict[str, Callable[[str], None]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def others(self) -> set[str]:
        """The other live nodes."""
        return self.presence.others

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.subscriber.run(), name="redis-backplane"),
            loop.create_task(self.publisher.run(), name="redis-publisher"),
            loop.create_task(self.jobs.run(), name="redis-directory"),
            loop.create_task(self.presence.run(), name="redis-presence"),
            loop.create_task(self.pulse.run(), name="redis-pulse"),
        ]
        # Wait (briefly) for the backplane, so the first sockets are visible cluster-wide.
        for _ in range(40):
            if self.link.connected:
                break
            await asyncio.sleep(0.05)
        if not self.link.connected:
            log.warning("Redis at %s is not reachable yet: serving local sockets, retrying", self.url)

    async def quiesce(self) -> None:
        """Before the shutdown closes our sockets: unsubscribe from the ids we mirror and wait
        (bounded) until Redis confirmed it, reading meanwhile. Until then each join elsewhere
        on one of those ids counted us among the nodes to acknowledge it, and we do; after, no
        join waits for a node that is going away (the reconnections the shutdown sets off
        would each have waited for it). The inbox and the control channel stay: what the other
        nodes send our sockets until they hear we left is still answered. From here the mirror
        no longer follows the directory, so a notice of ours goes to every live node."""
        self.routing.leaving = True
        try:
            await asyncio.wait_for(self.subscriber.quiesce(), STOP_WAIT)
        except TimeoutError:
            log.warning("Redis did not confirm the unsubscriptions within %.1f s: stopping anyway", STOP_WAIT)

    async def stop(self) -> None:
        """Leave the cluster: our sockets disappear from every directory at once. Bounded in
        time, as a shutdown must be, whatever state the Redis connections are in."""
        await self._settle_outbox()
        self.link.stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WAIT)
        self._tasks = []
        # Unsubscribed first: a socket joining elsewhere meanwhile must not count this node
        # among those that will acknowledge it (it waits for them, up to Timing.join).
        await self.subscriber.disconnect()
        client = self.topology.client
        if client is not None and self.link.connected:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(client.spublish(self.keys.control, f"bye{wire.SEP}{self.node}"), STOP_WAIT)
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.presence.forget(self.node), STOP_WAIT)
        self.publisher.close_all("stopping")
        await self.topology.close()
        self.link.connected = False
        self.link.stopping = False

    async def _settle_outbox(self) -> None:
        """Before leaving: what our sockets sent (the last of it relayed while they closed) is
        published, and each batch gets its receipt or its senders their notice, never nothing.
        The pulse runs meanwhile, so a node that gives no receipt within the wait is counted
        down and its batches answered as ever; what is still unreceipted after a wait and two
        ticks is answered then. Bounded by that, and STOP_WAIT for the last notices to leave."""
        routing = self.routing
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        timing = routing.timing
        deadline = loop.time() + timing.wait + 2 * timing.tick
        while routing.unanswered() and loop.time() < deadline:
            await asyncio.sleep(timing.tick / 2)
        routing.give_up()
        deadline = loop.time() + STOP_WAIT
        while not self.publisher.settled and loop.time() < deadline:
            await asyncio.sleep(timing.tick / 4)

    async def _rejoin(self) -> None:
        """After a (re)connection: Redis may have restarted empty or failed over, so tell it
        about us and every socket of ours again, and say hello."""
        self.pulse.connected()
        await self.presence.refresh()
        for session in self.local.local_sessions():
            self.jobs.put(Register(session, 0))
        await self._rejoin_rooms()
        for name, value in list(self._shared.items()):
            self._settle(name, await self._agree(name, value))
        await self.presence.discover()
        await self.topology.client.spublish(self.keys.control, f"hello{wire.SEP}{self.node}")

    async def _rejoin_rooms(self) -> None:
        """The roster again as this node has it: its pairs added (Redis may have lost them, or
        a node may have reaped us), and the pairs of ids gone meanwhile removed."""
        loop = asyncio.get_running_loop()
        here = self.rooms.pairs_here()
        listed: set[str] = await self.topology.client.smembers(self.keys.node_rooms(self.node))
        for entry in listed:
            room, _, id = entry.partition(wire.SEP)
            if (room, id) not in here:
                self.jobs.put(RoomLeave(room, id, self.node, lambda answer: None))
        for room, id in sorted(here):
            self.rooms.rejoining(room)
            answered: asyncio.Future[JoinAnswer] = loop.create_future()
            answered.add_done_callback(functools.partial(self._rejoined, room, id))
            self.jobs.put(RoomJoin(room, id, 0, answered))

    def _rejoined(self, room: str, id: str, answered: asyncio.Future[JoinAnswer]) -> None:
        self.rooms.rejoined(room, id, answered.result())

    # --- values the nodes agree on ----------------------------------------------------------

    async def share(self, name: str, value: str, adopt: Callable[[str], None]) -> bool:
        """The value of ``name`` that every node of this backplane uses: the first node's.
        (The generated ICE token, so that a page from one node is accepted by any other.)"""
        self._shared[name] = value
        self._adopters[name] = adopt
        adopt(value)
        if self.topology.client is None or not self.link.connected:
            return False
        try:
            agreed = await asyncio.wait_for(self._agree(name, value), COMMAND_TIMEOUT)
        except (TimeoutError, RedisError, OSError) as error:
            log.debug("could not agree on %s with the other nodes: %s", name, error)
            return False
        self._settle(name, agreed)
        return True

    async def _agree(self, name: str, value: str) -> str:
        """Store ``value`` unless the nodes have one already; answer the one they have."""
        client = self.topology.client
        key = self.keys.shared(name)
        await client.set(key, value, nx=True)
        return await client.get(key) or value

    def _settle(self, name: str, agreed: str) -> None:
        if agreed != self._shared.get(name):
            self._shared[name] = agreed
            self._adopters[name](agreed)
            log.info("%s: now the value the nodes of this backplane share", name)

    # --- the Router interface -----------------------------------------------------------

    def join(self, session: S) -> asyncio.Future[bool]:
        """Register locally at once; the answer resolves when every node that mirrors the
        socket's id knows it (True), or when the cluster-wide MAX_SOCKETS_PER_ID refused it
        (False; the caller then leaves and closes it). It waits Timing.join at most (half the
        bound: the socket's messages are held meanwhile): with Redis away, or a node that
        heard the join gone without a word, local delivery works and the rest goes on."""
        self.local.join(session)
        if session.peer_id:
            self.subscriber.want(session.id)
            self.subscriber.want(session.peer_id)
        return asyncio.ensure_future(self._announce(session))

    async def _announce(self, session: S) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.routing.timing.join
        acknowledged: asyncio.Future[None] = loop.create_future()

        def all_acknowledged() -> None:
            if not acknowledged.done():
                acknowledged.set_result(None)

        acks = self.routing.joins[session.session_id] = JoinAcks(done=all_acknowledged)
        try:
            if session.peer_id and self.link.connected:  # with Redis away, local delivery need not wait
                for id in (session.id, session.peer_id):
                    ready = self.subscriber.ready.get(id)
                    if ready is not None:
                        await asyncio.wait_for(asyncio.shield(ready), max(0.0, deadline - loop.time()))
            if session not in self.local.group(session.id, session.peer_id):
                return True  # it left meanwhile
            registered: asyncio.Future[int | None] = loop.create_future()
            self.jobs.put(Register(session, self.max_sockets_per_id, registered))
            heard = await asyncio.wait_for(asyncio.shield(registered), max(0.0, deadline - loop.time()))
            if heard is not None and heard < 0:
                return False
            acks.needed = heard or 0
            acks.check()
            await asyncio.wait_for(asyncio.shield(acknowledged), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pass
        finally:
            self.routing.joins.pop(session.session_id, None)
        return True

    def leave(self, session: S, linger: bool = False) -> None:
        if session not in self.local.group(session.id, session.peer_id):
            return
        self.local.leave(session)
        if session.peer_id:
            if linger:
                self._lingering.add(session)  # its mirror stays until release()
            else:
                self.subscriber.unwant(session.id)
                self.subscriber.unwant(session.peer_id)
        self.jobs.put(Unregister(session.id, session.session_id))

    def release(self, session: S) -> None:
        if session in self._lingering:
            self._lingering.discard(session)
            self.subscriber.unwant(session.id)
            self.subscriber.unwant(session.peer_id)

    @property
    def relayed(self) -> int:
        return self.routing.relayed

    @property
    def undelivered(self) -> int:
        return self.routing.undelivered

    def local_sessions(self) -> list[S]:
        return self.local.local_sessions()

    def backplane(self) -> BackplaneFigures:
        routing = self.routing
        liveness = routing.liveness
        return BackplaneFigures(
            self.link.connected,
            routing.backplane_errors,
            self.publisher.published,
            routing.stale,
            cut_off=liveness.cut_off_since is not None,
            nodes_down=len(liveness.down),
            nodes_lost=liveness.nodes_lost,
            unreceipted=routing.unreceipted,
            convergence=self.pulse.last_convergence,
        )

    def count(self, id: str) -> int:
        # This process only, as the handler's quick check; the cluster-wide
        # MAX_SOCKETS_PER_ID is enforced in Redis when the socket registers.
        return self.local.count(id)

    @property
    def settled(self) -> bool:
        """Nothing waits to reach Redis: subscriptions confirmed, snapshots loaded, no
        directory command or batch of messages on its way (or the router is stopped)."""
        return not self._tasks or (self.jobs.settled and self.publisher.settled and self.subscriber.settled)

    @property
    def ids_online(self) -> int:
        return self.local.ids_online

    @property
    def busy(self) -> bool:
        return self.routing.liveness.busy(self.routing.clock())

    @property
    def open_sockets(self) -> int:
        return self.local.open_sockets

    async def connections(self, id: str) -> list[dict[str, str | None]]:
        """Every socket of ``id`` on every live node (local ones if Redis is away)."""
        client = self.topology.client
        if client is None:
            return await self.local.connections(id)
        try:
            entries: dict[str, str] = await asyncio.wait_for(client.hgetall(self.keys.directory(id)), COMMAND_TIMEOUT)
            nodes = sorted({value.split(wire.SEP, 1)[0] for value in entries.values()} - {self.node})
            pipe = client.pipeline(transaction=False)
            for node in nodes:
                pipe.exists(self.keys.presence(node))
            alive = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT) if nodes else []
        except (TimeoutError, RedisError, OSError):
            return await self.local.connections(id)
        live = {node for node, flag in zip(nodes, alive, strict=True) if flag} | {self.node}
        result: list[dict[str, str | None]] = []
        for session_id, value in entries.items():
            node, _, peer = value.partition(wire.SEP)
            if node in live:
                result.append({"peer": peer or None, "session": session_id})
        return result

    async def online_ids(self) -> dict[str, int]:
        """Every id with a socket on a live node (this node's only if Redis is away)."""
        client = self.topology.client
        if client is None or not self.link.connected:
            return await self.local.online_ids()
        nodes = sorted(self.others | {self.node})
        try:
            pipe = client.pipeline(transaction=False)
            for node in nodes:
                pipe.smembers(self.keys.node_sessions(node))
            listed: list[set[str]] = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT)
        except (TimeoutError, RedisError, OSError):
            return await self.local.online_ids()
        counts: dict[str, int] = {}
        for members in listed:
            for member in members:
                id = member.partition(wire.SEP)[0]
                counts[id] = counts.get(id, 0) + 1
        return counts
