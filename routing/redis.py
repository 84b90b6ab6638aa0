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

Nodes announce themselves with a key that expires after ``node_ttl`` seconds unless
refreshed. A node that sees another's key gone reaps it: closes its pub/sub connections on
the Redis side (a node cut off without a FIN would otherwise keep its inbox subscribed
until Redis' TCP keepalive notices) and removes its sockets from the directory, telling the
nodes that mirror them. A node that loses Redis (restart, failover) reconnects, subscribes
again, reloads what it mirrors and registers its sockets again.

The same code runs on one redis-server or on a Redis Cluster (routing/shards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from routing import PEER_UNAVAILABLE_NOTICE, BackplaneFigures, S, wire
from routing.directory import Directory
from routing.memory import MemoryRouter
from routing.shards import Address, BackplaneError, Topology, tag

log = logging.getLogger(__name__)

SEP = wire.SEP
#: Longest a socket's open() waits for the cluster to know it before going on anyway.
JOIN_WAIT = 2.0
#: Longest each step of stop() may take.
STOP_WAIT = 1.0
#: Longest a round of commands or publications may wait for Redis before it counts as lost.
COMMAND_TIMEOUT = 5.0
#: Most messages waiting to be published; past it, cross-node copies are shed and counted.
OUTBOX_LIMIT = 50_000
#: Seconds before a snapshot Redis did not answer is asked for again.
SNAPSHOT_RETRY = 0.5
#: Most directory commands sent in one pipeline.
BATCH = 512
#: Seconds a message sent to several nodes waits for all their answers before it is
#: counted as delivered (a node that froze meanwhile never answers).
PENDING_TTL = 10.0

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


class Interest:
    """An id this node mirrors, because some of its sockets involve it."""

    __slots__ = ("refs", "ready", "events")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refs = 0
        #: Done once the events are subscribed and the snapshot loaded.
        self.ready: asyncio.Future[None] = loop.create_future()
        #: Events that arrived while the snapshot was on its way (None once loaded).
        self.events: list[list[str]] | None = []


class Acks:
    """The nodes that have acknowledged a socket's join, against how many heard it."""

    __slots__ = ("heard", "needed", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.heard = 0
        self.needed: int | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    def check(self) -> None:
        if self.needed is not None and self.heard >= self.needed and not self.done.done():
            self.done.set_result(None)


class Outlet:
    """One shard's publishing connection. Batches are written as soon as they are ready; a
    reader takes Redis' answers, in order, and matches each to the batch it answers (how
    many nodes heard it: none means its node is gone)."""

    def __init__(self, router: RedisRouter, address: Address, connection: Connection) -> None:
        self.router = router
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
                if not heard:
                    self.router._unreachable(batch)  # its node is gone (or not subscribed yet)
        except (RedisError, OSError, IndexError) as error:
            self.router._outlet_failed(self, error)

    def overdue(self, now: float) -> bool:
        """Redis has not answered a batch for COMMAND_TIMEOUT seconds (frozen, or cut off)."""
        return bool(self.waiting) and now - self.waiting[0][0] > COMMAND_TIMEOUT

    def close(self) -> None:
        if self.reader is not asyncio.current_task():
            self.reader.cancel()
        asyncio.get_running_loop().create_task(disconnect(self.connection))


async def disconnect(connection: Connection) -> None:
    """Close a connection, whatever state it is in, within STOP_WAIT."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.disconnect(), STOP_WAIT)


class RedisRouter(Generic[S]):
    """A :class:`routing.Router` spanning every node that shares one Redis (or Redis Cluster)."""

    def __init__(self, url: str, prefix: str = "webrtc:", node_ttl: float = 10.0, max_sockets_per_id: int = 0) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"REDIS_PREFIX must not contain braces (Redis Cluster hash tags), got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.max_sockets_per_id = max_sockets_per_id
        self.node = uuid.uuid4().hex[:12]
        self.local: MemoryRouter[S] = MemoryRouter()
        self.directory = Directory(self.node)
        self.relayed = 0
        self.undelivered = 0
        #: Messages whose cross-node part was lost because Redis was unreachable or behind.
        self.backplane_errors = 0
        #: Batches published, and messages a destination found nobody for (stale directory).
        self.batches = 0
        self.stale = 0
        self.connected = False
        self._stopping = False
        #: Other live nodes (they said hello, or their presence key is alive).
        self.others: set[str] = set()
        self._topology = Topology(url, f"webrtc-node-{self.node}")
        self._inbox = self._channel("inbox", self.node)
        self._inbox_bytes = self._inbox.encode()
        self._control = f"{prefix}control"
        self._control_bytes = self._control.encode()
        # Outgoing frames, by destination node, until the publisher takes them.
        self._batches: dict[str, wire.Batch] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._publishing = False
        self._outlets: dict[Address, Outlet] = {}
        self._seq = itertools.count(1)
        self._pending: dict[str, list[Any]] = {}  # seq -> [answers awaited, my_id, peer_id, deadline]
        # Directory commands, in order.
        self._jobs: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._running_jobs = False
        # Pub/sub: what we want, what the current connections were asked, what Redis confirmed.
        self._interests: dict[str, Interest] = {}
        self._acks: dict[str, Acks] = {}
        self._wanted: dict[str, str | None] = {self._inbox: None, self._control: None}  # channel -> id
        self._asked: set[str] = set()
        self._confirmed: set[str] = set()
        self._subscribers: dict[Address, Connection] = {}
        self._subscription_changes: asyncio.Queue[str] = asyncio.Queue()
        self._generation = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._shared: dict[str, str] = {}
        self._adopters: dict[str, Callable[[str], None]] = {}

    # --- names --------------------------------------------------------------------------

    def _channel(self, kind: str, name: str) -> str:
        """A key or sharded channel of one id or node: ``<prefix><kind>:{digest}``."""
        return f"{self.prefix}{kind}:{tag(name)}"

    def _events(self, id: str) -> str:
        return self._channel("events", id)

    def _dir(self, id: str) -> str:
        return self._channel("dir", id)

    def _presence(self, node: str) -> str:
        return self._channel("node", node)

    def _node_sessions(self, node: str) -> str:
        return self._channel("node-sessions", node)

    @property
    def _nodes(self) -> str:
        return f"{self.prefix}nodes"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._backplane(), name="redis-backplane"),
            loop.create_task(self._publisher(), name="redis-publisher"),
            loop.create_task(self._run_jobs(), name="redis-directory"),
            loop.create_task(self._presence_loop(), name="redis-presence"),
        ]
        # Wait (briefly) for the backplane, so the first sockets are visible cluster-wide.
        for _ in range(40):
            if self.connected:
                break
            await asyncio.sleep(0.05)
        if not self.connected:
            log.warning("Redis at %s is not reachable yet: serving local sockets, retrying", self.url)

    async def stop(self) -> None:
        """Leave the cluster: our sockets disappear from every directory at once. Bounded in
        time, as a shutdown must be, whatever state the Redis connections are in."""
        self._stopping = True  # closing our own connections is not losing Redis
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WAIT)
        self._tasks = []
        client = self._topology.client
        if client is not None and self.connected:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(client.spublish(self._control, f"bye{SEP}{self.node}"), STOP_WAIT)
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._forget_node(self.node), STOP_WAIT)
        await self._disconnect()
        await self._topology.close()
        self.connected = False
        self._stopping = False

    async def share(self, name: str, value: str, adopt: Callable[[str], None]) -> bool:
        """The value of ``name`` that every node of this backplane uses: the first node's.
        (The generated ICE token, so that a page from one node is accepted by any other.)"""
        self._shared[name] = value
        self._adopters[name] = adopt
        adopt(value)
        client = self._topology.client
        if client is None or not self.connected:
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
        client = self._topology.client
        key = f"{self.prefix}shared:{name}"
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
        (False; the caller then leaves and closes it). Each step waits JOIN_WAIT at most: with
        Redis away, local delivery works meanwhile."""
        self.local.join(session)
        if session.peer_id:
            self._want(session.id)
            self._want(session.peer_id)
        return asyncio.ensure_future(self._announce(session))

    async def _announce(self, session: S) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_WAIT
        acks = self._acks[session.session_id] = Acks(loop)
        try:
            if session.peer_id and self.connected:  # with Redis away, local delivery need not wait
                for id in (session.id, session.peer_id):
                    interest = self._interests.get(id)
                    if interest is not None:
                        await asyncio.wait_for(asyncio.shield(interest.ready), max(0.0, deadline - loop.time()))
            if session not in self.local.group(session.id, session.peer_id):
                return True  # it left meanwhile
            registered: asyncio.Future[int | None] = loop.create_future()
            self._jobs.put_nowait(("register", session, self.max_sockets_per_id, registered))
            heard = await asyncio.wait_for(asyncio.shield(registered), max(0.0, deadline - loop.time()))
            if heard is not None and heard < 0:
                return False
            acks.needed = heard or 0
            acks.check()
            await asyncio.wait_for(asyncio.shield(acks.done), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pass
        finally:
            self._acks.pop(session.session_id, None)
        return True

    def leave(self, session: S) -> None:
        if session not in self.local.group(session.id, session.peer_id):
            return
        self.local.leave(session)
        if session.peer_id:
            self._unwant(session.id)
            self._unwant(session.peer_id)
        self._jobs.put_nowait(("unregister", session.id, session.session_id))

    def relay(self, sender: S, text: str) -> None:
        self.relayed += 1
        my_id, peer_id = sender.id, sender.peer_id
        local = self.local.fan_out(sender, text)
        peers, mine = self.directory.destinations(my_id, peer_id)
        if not peers and not mine:
            if not local:
                self._unavailable(my_id, peer_id)
            return
        if self._queued >= OUTBOX_LIMIT:
            # Redis cannot keep up (or is away and the outbox filled): shed the cross-node
            # copies rather than grow without end, exactly as during an outage.
            self.backplane_errors += 1
            if not local:
                self._unavailable(my_id, peer_id)
            return
        self._queued += 1
        session_id = sender.session_id
        if local or not peers:
            reply, seq = wire.NO_REPLY, ""
        elif len(peers) == 1:
            reply, seq = wire.REPLY_IF_NONE, ""
        else:
            reply, seq = wire.REPLY_ALWAYS, str(next(self._seq))
            self._pending[seq] = [len(peers), my_id, peer_id, asyncio.get_running_loop().time() + PENDING_TTL]
        for node in peers:
            self._batch(node).message(my_id, peer_id, session_id, reply, seq, text)
        for node in mine:
            if node not in peers:
                self._batch(node).message(my_id, peer_id, session_id, wire.NO_REPLY, "", text)
        if not local and not peers:
            self._unavailable(my_id, peer_id)

    def _unavailable(self, my_id: str, peer_id: str) -> None:
        """Rule 3: nobody received it; tell the sender's sockets of this conversation, here
        and on every other node that holds some."""
        self.undelivered += 1
        self.local.notify(my_id, peer_id, PEER_UNAVAILABLE_NOTICE)
        for node in self.directory.nodes(my_id, peer_id):
            self._batch(node).notice(my_id, peer_id)

    def _batch(self, node: str) -> wire.Batch:
        batch = self._batches.get(node)
        if batch is None:
            batch = self._batches[node] = wire.Batch()
            self._wake.set()
        return batch

    def local_sessions(self) -> list[S]:
        return self.local.local_sessions()

    def backplane(self) -> BackplaneFigures:
        return BackplaneFigures(self.connected, self.backplane_errors, self.batches, self.stale)

    def count(self, id: str) -> int:
        # This process only, as the handler's quick check; the cluster-wide
        # MAX_SOCKETS_PER_ID is enforced in Redis when the socket registers.
        return self.local.count(id)

    @property
    def settled(self) -> bool:
        """Nothing waits to reach Redis: subscriptions confirmed, snapshots loaded, no
        directory command or batch of messages on its way (or the router is stopped)."""
        return not self._tasks or (
            self._jobs.empty()
            and not self._running_jobs
            and not self._batches
            and not self._publishing
            and not any(outlet.waiting for outlet in self._outlets.values())
            and self._subscription_changes.empty()
            and set(self._wanted) == self._confirmed
            and all(interest.events is None for interest in self._interests.values())
        )

    @property
    def ids_online(self) -> int:
        return self.local.ids_online

    @property
    def open_sockets(self) -> int:
        return self.local.open_sockets

    async def connections(self, id: str) -> list[dict[str, str | None]]:
        """Every socket of ``id`` on every live node (local ones if Redis is away)."""
        client = self._topology.client
        if client is None:
            return await self.local.connections(id)
        try:
            entries: dict[str, str] = await asyncio.wait_for(client.hgetall(self._dir(id)), COMMAND_TIMEOUT)
            nodes = sorted({value.split(SEP, 1)[0] for value in entries.values()} - {self.node})
            pipe = client.pipeline(transaction=False)
            for node in nodes:
                pipe.exists(self._presence(node))
            alive = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT) if nodes else []
        except (TimeoutError, RedisError, OSError):
            return await self.local.connections(id)
        live = {node for node, flag in zip(nodes, alive, strict=True) if flag} | {self.node}
        result: list[dict[str, str | None]] = []
        for session_id, value in entries.items():
            node, _, peer = value.partition(SEP)
            if node in live:
                result.append({"peer": peer or None, "session": session_id})
        return result

    async def online_ids(self) -> dict[str, int]:
        """Every id with a socket on a live node (this node's only if Redis is away)."""
        client = self._topology.client
        if client is None or not self.connected:
            return await self.local.online_ids()
        nodes = sorted(self.others | {self.node})
        try:
            pipe = client.pipeline(transaction=False)
            for node in nodes:
                pipe.smembers(self._node_sessions(node))
            listed: list[set[str]] = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT)
        except (TimeoutError, RedisError, OSError):
            return await self.local.online_ids()
        counts: dict[str, int] = {}
        for members in listed:
            for member in members:
                id = member.partition(SEP)[0]
                counts[id] = counts.get(id, 0) + 1
        return counts

    # --- interests: the ids this node mirrors --------------------------------------------

    def _want(self, id: str) -> None:
        interest = self._interests.get(id)
        if interest is None:
            interest = self._interests[id] = Interest(asyncio.get_running_loop())
            self.directory.track(id)
            channel = self._events(id)
            self._wanted[channel] = id
            self._subscription_changes.put_nowait(channel)
        interest.refs += 1

    def _unwant(self, id: str) -> None:
        interest = self._interests.get(id)
        if interest is None:
            return
        interest.refs -= 1
        if interest.refs > 0:
            return
        del self._interests[id]
        self.directory.untrack(id)
        interest.ready.cancel()
        channel = self._events(id)
        self._wanted.pop(channel, None)
        self._subscription_changes.put_nowait(channel)

    def _on_subscribed(self, channel: str) -> None:
        self._confirmed.add(channel)
        id = self._wanted.get(channel)
        if id is not None and id in self._interests:
            self._jobs.put_nowait(("snapshot", id, self._generation))

    def _on_snapshot(self, id: str, generation: int, entries: dict[str, str]) -> None:
        interest = self._interests.get(id)
        if interest is None or generation != self._generation:
            return  # no longer mirrored, or a newer snapshot is coming
        self.directory.load(id, entries)
        for event in interest.events or ():
            self._apply(event)
        interest.events = None
        if not interest.ready.done():
            interest.ready.set_result(None)

    def _on_event(self, payload: bytes) -> None:
        event = payload.decode("utf-8").split(SEP)
        kind, node, id, session_id = event[0], event[1], event[2], event[3]
        if node == self.node:
            if kind == "j":
                self._acked(session_id)  # we hear our own join like the others do
            return
        interest = self._interests.get(id)
        if interest is None:
            return
        if kind == "j":
            self._batch(node).ack(session_id)
        if interest.events is not None:
            interest.events.append(event)  # applied on top of the snapshot
        else:
            self._apply(event)

    def _apply(self, event: list[str]) -> None:
        if event[0] == "j":
            self.directory.add(event[2], event[3], event[1], event[4])
        else:
            self.directory.remove(event[2], event[3])

    def _acked(self, session_id: str) -> None:
        acks = self._acks.get(session_id)
        if acks is not None:
            acks.heard += 1
            acks.check()

    # --- receiving a batch --------------------------------------------------------------

    def _on_batch(self, payload: bytes) -> None:
        sender, fields, texts = wire.decode(payload)
        local = self.local
        i, offset, end = 0, 0, len(fields)
        while i < end:
            kind = fields[i]
            if kind == "m":
                my_id, peer_id, reply, seq = fields[i + 1], fields[i + 2], fields[i + 4], fields[i + 5]
                length = int(fields[i + 6])
                text = texts[offset : offset + length]
                offset += length
                i += 7
                if i < end and fields[i] == "+":
                    # A run of messages from one socket: their sockets are found once.
                    run = [text]
                    while i < end and fields[i] == "+":
                        length = int(fields[i + 1])
                        run.append(texts[offset : offset + length])
                        offset += length
                        i += 2
                    delivered = local.deliver_all(my_id, peer_id, run)
                    count = len(run)
                else:
                    delivered = local.deliver(my_id, peer_id, text)
                    count = 1
                if reply != wire.NO_REPLY:
                    if reply == wire.REPLY_ALWAYS:
                        self._batch(sender).result(seq, delivered)
                    elif not delivered:
                        batch = self._batch(sender)
                        for _ in range(count):  # the sender's node counts and notifies per message
                            batch.none_delivered(my_id, peer_id)
                continue
            if kind == "n":
                self.stale += 1
                self._unavailable(fields[i + 1], fields[i + 2])
            elif kind == "r":
                self._answered(fields[i + 1], int(fields[i + 2]))
            elif kind == "u":
                self.local.notify(fields[i + 1], fields[i + 2], PEER_UNAVAILABLE_NOTICE)
            elif kind == "a":
                self._acked(fields[i + 1])
            i += 1 + wire.FIELDS[kind]

    def _answered(self, seq: str, delivered: int) -> None:
        pending = self._pending.get(seq)
        if pending is None:
            return
        if delivered:
            del self._pending[seq]
            return
        pending[0] -= 1
        if pending[0] <= 0:
            del self._pending[seq]
            self.stale += 1
            self._unavailable(pending[1], pending[2])

    def _unreachable(self, batch: wire.Batch) -> None:
        """A batch that reached no node: answer for it what its node would have."""
        for reply, my_id, peer_id, seq in batch.waiting():
            if reply == wire.REPLY_ALWAYS:
                self._answered(seq, 0)
            else:
                self._unavailable(my_id, peer_id)

    # --- publishing batches (one connection per shard, in order) ------------------------

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batches, self._batches = self._batches, {}
            self._queued = 0
            if not batches:
                continue
            self._publishing = True
            try:
                await self._publish(batches)
            finally:
                self._publishing = False

    async def _publish(self, batches: dict[str, wire.Batch]) -> None:
        """Send each batch to its node's inbox, without waiting for Redis' answers (the
        outlet's reader takes them): a batch leaves as soon as the loop has filled it."""
        topology = self._topology
        if topology.client is None:
            self._lose(batches.values())
            return
        by_shard: dict[Address, list[tuple[str, wire.Batch]]] = {}
        for node, batch in batches.items():
            by_shard.setdefault(topology.address(self._channel("inbox", node)), []).append((node, batch))
        for address, items in by_shard.items():
            commands = [("SPUBLISH", self._channel("inbox", node), batch.encode(self.node)) for node, batch in items]
            try:
                outlet = self._outlets.get(address)
                if outlet is None:
                    outlet = await asyncio.wait_for(self._open_outlet(address), COMMAND_TIMEOUT)
                await asyncio.wait_for(outlet.send(commands, [batch for _, batch in items]), COMMAND_TIMEOUT)
                self.batches += len(commands)
            except (TimeoutError, RedisError, OSError) as error:
                outlet = self._outlets.get(address)
                if outlet is not None:
                    self._outlet_failed(outlet, error)
                else:
                    self._lost(error)
                    self._lose(batch for _, batch in items)

    async def _open_outlet(self, address: Address) -> Outlet:
        connection = self._topology.connection(address)
        await connection.connect()
        outlet = self._outlets[address] = Outlet(self, address, connection)
        return outlet

    def _outlet_failed(self, outlet: Outlet, error: BaseException) -> None:
        """A publishing connection broke (or Redis stopped answering on it): what it carried
        and was not answered is lost; the next batch opens a new one."""
        if self._outlets.get(outlet.address) is outlet:
            del self._outlets[outlet.address]
        self._lost(error)
        lost = [batch for _, batch in outlet.waiting]
        outlet.waiting.clear()
        if not self._stopping:
            self._lose(lost)
        outlet.close()

    def _lose(self, batches: Iterable[wire.Batch]) -> None:
        """Batches that could not be published: their messages' cross-node part is lost."""
        for batch in batches:
            self.backplane_errors += batch.messages
            self._unreachable(batch)

    def _lost(self, error: BaseException) -> None:
        if self._stopping:
            return
        if self.connected:
            log.warning("lost Redis (%s): local delivery goes on, other nodes are unreachable", error)
        else:
            log.debug("Redis still unreachable: %r", error)
        self.connected = False

    # --- directory commands (in order, one pipeline per round) --------------------------

    async def _run_jobs(self) -> None:
        while True:
            jobs = [await self._jobs.get()]
            while len(jobs) < BATCH and not self._jobs.empty():
                jobs.append(self._jobs.get_nowait())
            self._running_jobs = True
            try:
                await self._run(jobs)
            finally:
                self._running_jobs = False

    async def _run(self, jobs: list[tuple[Any, ...]]) -> None:
        client = self._topology.client
        results: list[Any] | None = None
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for job in jobs:
                self._add_commands(pipe, job)
            try:
                results = await asyncio.wait_for(pipe.execute(raise_on_error=False), COMMAND_TIMEOUT)
            except (TimeoutError, RedisError, OSError) as error:
                self._lost(error)
        replies = iter(results or ())
        for job in jobs:
            kind = job[0]
            if kind == "register":
                heard = next(replies, None)
                next(replies, None)
                done: asyncio.Future[int | None] | None = job[3]
                if done is not None and not done.done():
                    done.set_result(heard if isinstance(heard, int) else None)
            elif kind == "unregister":
                for _ in range(3):
                    next(replies, None)
            elif kind == "snapshot":
                entries = next(replies, None)
                if isinstance(entries, dict):
                    self._on_snapshot(job[1], job[2], entries)
                elif job[1] in self._interests and job[2] == self._generation:
                    # Redis did not answer: ask again (meanwhile the id's events are kept,
                    # so they must not wait for a reconnection that may never come).
                    asyncio.get_running_loop().call_later(SNAPSHOT_RETRY, self._jobs.put_nowait, job)

    def _add_commands(self, pipe: Any, job: tuple[Any, ...]) -> None:
        kind = job[0]
        if kind == "register":
            session, limit = job[1], job[2]
            event = wire.joined(self.node, session.id, session.session_id, session.peer_id)
            value = wire.entry(self.node, session.peer_id)
            pipe.execute_command(
                "EVAL", REGISTER, 1, self._dir(session.id), session.session_id, value, limit, self._events(session.id), event
            )
            pipe.sadd(self._node_sessions(self.node), f"{session.id}{SEP}{session.session_id}")
        elif kind == "unregister":
            my_id, session_id = job[1], job[2]
            pipe.hdel(self._dir(my_id), session_id)
            pipe.spublish(self._events(my_id), wire.left(self.node, my_id, session_id))
            pipe.srem(self._node_sessions(self.node), f"{my_id}{SEP}{session_id}")
        elif kind == "snapshot":
            pipe.hgetall(self._dir(job[1]))

    # --- subscriptions (one reader per shard), and reconnecting ---------------------------

    async def _backplane(self) -> None:
        """Keep one pub/sub connection per shard subscribed to what we want; after each
        (re)connection, reload what we mirror and register our sockets again."""
        delay = 0.1
        while True:
            readers: list[asyncio.Task[None]] = []
            try:
                await asyncio.wait_for(self._topology.open(), COMMAND_TIMEOUT)
                self._generation += 1
                for address in self._topology.masters():
                    connection = self._topology.connection(address)
                    await asyncio.wait_for(connection.connect(), COMMAND_TIMEOUT)
                    self._subscribers[address] = connection
                for interest in self._interests.values():
                    if interest.events is None:
                        interest.events = []  # reloaded below: buffer events until then
                    if interest.ready.done():
                        interest.ready = asyncio.get_running_loop().create_future()
                for channel in list(self._wanted):
                    await self._subscribe(channel)
                readers = [asyncio.create_task(self._read(c)) for c in self._subscribers.values()]
                readers.append(asyncio.create_task(self._apply_subscription_changes()))
                await asyncio.wait_for(self._rejoin(), COMMAND_TIMEOUT)
                if not self.connected:
                    log.info(
                        "connected to Redis%s at %s as node %s", " Cluster" if self._topology.cluster else "", self.url, self.node
                    )
                self.connected = True
                delay = 0.1
                done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            except BackplaneError as error:
                log.error("%s", error)
                self._lost(error)
                delay = 5.0
            except (TimeoutError, RedisError, OSError) as error:
                self._lost(error)
            finally:
                for task in readers:
                    task.cancel()
                await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _disconnect(self) -> None:
        connections = list(self._subscribers.values())
        self._subscribers.clear()
        for outlet in list(self._outlets.values()):
            self._outlet_failed(outlet, OSError("reconnecting to Redis"))
        self._asked.clear()
        self._confirmed.clear()
        for connection in connections:
            await disconnect(connection)

    async def _subscribe(self, channel: str) -> None:
        connection = self._subscribers.get(self._topology.address(channel))
        if connection is None:
            raise OSError(f"no connection to the shard of {channel!r}")
        self._asked.add(channel)
        await connection.send_command("SSUBSCRIBE", channel)

    async def _apply_subscription_changes(self) -> None:
        while True:
            channel = await self._subscription_changes.get()
            # Act on the latest state: a socket may have come or gone meanwhile.
            if channel in self._wanted and channel not in self._asked:
                await self._subscribe(channel)
            elif channel not in self._wanted and channel in self._asked:
                self._asked.discard(channel)
                connection = self._subscribers.get(self._topology.address(channel))
                if connection is not None:
                    await connection.send_command("SUNSUBSCRIBE", channel)

    async def _read(self, connection: Connection) -> None:
        inbox, control = self._inbox_bytes, self._control_bytes
        while True:
            reply = await connection.read_response()
            kind, channel, data = reply[0], reply[1], reply[2]
            if kind == b"smessage":
                if channel == inbox:
                    self._on_batch(data)
                elif channel == control:
                    self._on_control(data.decode())
                else:
                    self._on_event(data)
            elif kind == b"ssubscribe":
                self._on_subscribed(channel.decode())
            elif kind == b"sunsubscribe":
                name = channel.decode()
                self._confirmed.discard(name)
                if name in self._wanted:
                    # Redis moved the channel's slot (a resharding): start over.
                    raise OSError(f"Redis dropped our subscription to {name!r}")

    def _on_control(self, data: str) -> None:
        verb, _, node = data.partition(SEP)
        if node == self.node:
            return
        if verb == "hello":
            self.others.add(node)
        elif verb == "bye":
            self.others.discard(node)
            self.directory.forget_node(node)

    async def _rejoin(self) -> None:
        """After a (re)connection: Redis may have restarted empty or failed over, so tell
        it about us and every socket of ours again, and say hello."""
        client = self._topology.client
        await self._refresh_presence()
        for session in self.local.local_sessions():
            self._jobs.put_nowait(("register", session, 0, None))
        for name, value in list(self._shared.items()):
            self._settle(name, await self._agree(name, value))
        await self._discover()
        await client.spublish(self._control, f"hello{SEP}{self.node}")

    # --- presence: our node record, and reaping dead nodes -------------------------------

    async def _presence_loop(self) -> None:
        period = self.node_ttl / 3
        while True:
            await asyncio.sleep(period)
            self._expire_pending()
            if not self.connected:
                continue
            try:
                await asyncio.wait_for(self._refresh_presence(), COMMAND_TIMEOUT)
                await asyncio.wait_for(self._reap(), COMMAND_TIMEOUT)
            except (TimeoutError, RedisError, OSError) as error:
                self._lost(error)

    def _expire_pending(self) -> None:
        now = asyncio.get_running_loop().time()
        for outlet in list(self._outlets.values()):
            if outlet.overdue(now):
                self._outlet_failed(outlet, TimeoutError("Redis did not answer a batch of messages in time"))
        for seq in [seq for seq, pending in self._pending.items() if pending[3] < now]:
            del self._pending[seq]  # a destination never answered (frozen): count it delivered

    async def _refresh_presence(self) -> None:
        pipe = self._topology.client.pipeline(transaction=False)
        pipe.set(self._presence(self.node), "1", px=int(self.node_ttl * 1000))
        pipe.sadd(self._nodes, self.node)
        await pipe.execute()

    async def _discover(self) -> list[str]:
        """The other nodes registered in Redis whose presence expired; the live ones join
        ``others`` (never removed here: a node that said hello meanwhile must stay)."""
        client = self._topology.client
        members: set[str] = await client.smembers(self._nodes)
        nodes = sorted(members - {self.node})
        if not nodes:
            return []
        pipe = client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._presence(node))
        flags = await pipe.execute()
        self.others.update(node for node, flag in zip(nodes, flags, strict=True) if flag)
        return [node for node, flag in zip(nodes, flags, strict=True) if not flag]

    async def _reap(self) -> None:
        dead = await self._discover()
        if not dead:
            return
        names = {f"webrtc-node-{node}" for node in dead}
        for address in self._topology.masters():
            await self._kill_clients(address, names)
        for node in dead:
            log.info("node %s stopped refreshing its presence: its sockets are forgotten", node)
            self.others.discard(node)
            self.directory.forget_node(node)
            await self._forget_node(node)

    async def _kill_clients(self, address: Address, names: set[str]) -> None:
        """Close, on the Redis side, the connections of dead nodes (their inbox may still be
        subscribed by a connection nobody reads)."""
        connection = self._topology.connection(address)
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

    async def _forget_node(self, node: str) -> None:
        """Remove ``node``'s sockets from the directory, telling the nodes that mirror them."""
        client = self._topology.client
        members: set[str] = await client.smembers(self._node_sessions(node))
        pipe = client.pipeline(transaction=False)
        for member in members:
            my_id, _, session_id = member.partition(SEP)
            pipe.hdel(self._dir(my_id), session_id)
            pipe.spublish(self._events(my_id), wire.left(node, my_id, session_id))
        pipe.delete(self._node_sessions(node))
        pipe.delete(self._presence(node))
        pipe.srem(self._nodes, node)
        await pipe.execute()
