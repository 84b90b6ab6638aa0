"""Routing across processes and machines through Redis (redis-py's asyncio client).

Each process (a *node*) keeps its own sockets in a :class:`MemoryRouter` and delivers to
them directly, so local delivery never waits for Redis and goes on when Redis is down.
Other nodes are reached with pub/sub, on one channel per conversation:

* ``<prefix>c\\0B\\0A`` has a subscriber on every node holding a socket of B whose peer_id is A;
* ``<prefix>a\\0B`` has one on every node holding a socket of B with no peer_id.

A message from A to B is published on ``c B A`` and ``a B`` (rule 1) and on ``c A B`` (rule 2,
the sender's devices elsewhere). PUBLISH answers how many nodes subscribe to a channel,
which is exactly rule 1's question, "did any socket of B talking to A, or to anyone,
receive it?", asked cluster-wide. When nobody did, the PEER-UNAVAILABLE notice goes to the
sender's conversation on every node (rule 3). One node publishes through one connection, in
order, so messages between two sockets keep their order across nodes.

Nodes announce themselves with a key that expires after ``node_ttl`` seconds unless
refreshed. A node that sees another's key gone reaps it: closes its pub/sub connection on
the Redis side (a node cut off without a FIN would otherwise keep its subscriptions until
Redis' TCP keepalive notices) and removes its sockets from the registry that /connections
reads. So a dead node's ids stop counting as online within ``node_ttl`` plus one refresh
period; a node that is merely killed closes its connections at once and stops counting
immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from typing import Any, cast

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from routing import PEER_UNAVAILABLE_NOTICE, Session
from routing.memory import MemoryRouter

log = logging.getLogger(__name__)

SEP = "\0"  # ids cannot contain control characters, so this separator is unambiguous
MESSAGE, NOTICE = "m", "n"
#: Longest a socket's open() waits for its channel to be subscribed before going on.
JOIN_WAIT = 2.0
#: Longest each step of stop() may take.
STOP_WAIT = 1.0
#: Longest a pipeline or a presence round may wait for Redis before it counts as lost.
COMMAND_TIMEOUT = 5.0
#: Most jobs waiting to be sent to Redis; past it, cross-node copies are dropped and counted.
OUTBOX_LIMIT = 50_000
BATCH = 256


class RedisRouter:
    """A :class:`routing.Router` spanning every node that shares one Redis."""

    def __init__(self, url: str, prefix: str = "webrtc:", node_ttl: float = 10.0) -> None:
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.node = uuid.uuid4().hex[:12]
        self._own_prefix = self.node + SEP
        self.local = MemoryRouter()
        self.relayed = 0
        self.undelivered = 0
        #: Messages whose cross-node part was lost because Redis was unreachable.
        self.backplane_errors = 0
        self.connected = False
        self._channels: Counter[str] = Counter()  # channel -> local sockets listening
        self._confirmed: set[str] = set()  # channels Redis confirmed we subscribe to
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._outbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._subscriptions: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Redis | None = None
        self._busy = False  # a batch is on its way to Redis
        #: Other live nodes. While there are none, nobody can be reached through Redis and
        #: messages are not published at all: a lone node costs what a memory router costs.
        self.others: set[str] = set()

    # --- keys and channels --------------------------------------------------------------

    def _conversation(self, id: str, peer_id: str) -> str:
        """The channel of the sockets of ``id`` with this peer_id ("" = those with none)."""
        if peer_id:
            return f"{self.prefix}c{SEP}{id}{SEP}{peer_id}"
        return f"{self.prefix}a{SEP}{id}"

    def _sessions_key(self, id: str) -> str:
        return f"{self.prefix}s{SEP}{id}"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}node{SEP}{node}"

    def _node_sessions_key(self, node: str) -> str:
        return f"{self.prefix}node-sessions{SEP}{node}"

    @property
    def _control(self) -> str:
        """Where nodes say hello and goodbye (it also keeps our pub/sub subscribed)."""
        return f"{self.prefix}control"

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def _client_name(self) -> str:
        return f"webrtc-node-{self.node}"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        # A client name per node lets the reaper find a dead node's pub/sub connection.
        # No retries inside redis-py: the loops below reconnect, and a message must not wait
        # for Redis to come back while local sockets could be served.
        self._client = Redis.from_url(
            self.url,
            client_name=self._client_name,
            decode_responses=True,
            socket_connect_timeout=2,
            # No per-reply timeout: redis-py wraps every reply of a pipeline in one, which
            # cost an eighth of a node's CPU under load (docs/benchmarks.md). Each batch
            # and each presence round has one deadline of its own instead (COMMAND_TIMEOUT).
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        self._tasks = [
            asyncio.create_task(self._publisher(), name="redis-publisher"),
            asyncio.create_task(self._listener(), name="redis-listener"),
            asyncio.create_task(self._presence(), name="redis-presence"),
        ]
        # Wait (briefly) for the backplane, so the first sockets are visible cluster-wide.
        for _ in range(40):
            if self.connected:
                break
            await asyncio.sleep(0.05)
        if not self.connected:
            log.warning("Redis at %s is not reachable yet: serving local sockets, retrying", self.url)

    async def stop(self) -> None:
        """Leave the cluster: our sockets disappear from /connections at once. Bounded in
        time, as a shutdown must be, whatever state the Redis connections are in."""
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=STOP_WAIT)
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._client.publish(self._control, f"bye{SEP}{self.node}"), STOP_WAIT)
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._forget_node(self.node), STOP_WAIT)
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._client.aclose(), STOP_WAIT)

    # --- the Router interface -----------------------------------------------------------

    def join(self, session: Session) -> asyncio.Future[None]:
        """Register locally at once; the returned future resolves when other nodes can
        reach the socket, and only then does it appear in /connections (each step waits
        JOIN_WAIT seconds at most if Redis is away: local delivery works meanwhile)."""
        self.local.join(session)
        channel = self._conversation(session.id, session.peer_id)
        self._channels[channel] += 1
        subscribed = None
        if channel not in self._confirmed:
            subscribed = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(channel, []).append(subscribed)
            if self._channels[channel] == 1:
                self._subscriptions.put_nowait(("subscribe", channel))
        return asyncio.ensure_future(self._announce(session, subscribed))

    async def _announce(self, session: Session, subscribed: asyncio.Future[None] | None) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            if subscribed is not None:
                await asyncio.wait_for(asyncio.shield(subscribed), JOIN_WAIT)
            if session not in self.local.group(session.id, session.peer_id):
                return  # it left meanwhile
            registered = asyncio.get_running_loop().create_future()
            self._outbox.put_nowait(("register", session.id, session.session_id, session.peer_id, registered))
            await asyncio.wait_for(asyncio.shield(registered), JOIN_WAIT)

    def leave(self, session: Session) -> None:
        if session not in self.local.group(session.id, session.peer_id):
            return
        self.local.leave(session)
        channel = self._conversation(session.id, session.peer_id)
        self._channels[channel] -= 1
        if self._channels[channel] <= 0:
            del self._channels[channel]
            self._subscriptions.put_nowait(("unsubscribe", channel))
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
        self._outbox.put_nowait(("unregister", session.id, session.session_id))

    def relay(self, sender: Session, text: str) -> None:
        self.relayed += 1
        local = self.local.fan_out(sender, text)
        if self.others:
            if self._outbox.qsize() < OUTBOX_LIMIT:
                self._outbox.put_nowait(("message", sender.id, sender.peer_id, sender.session_id, text, local))
                return  # the publisher decides rule 3 once Redis has answered
            # Redis cannot keep up (or is away and the queue filled): shed the cross-node
            # copy rather than grow without end, exactly as during an outage.
            self.backplane_errors += 1
        # No other node (or none reachable now): rule 3 on what this node delivered.
        if not local:
            self._unavailable(sender.id, sender.peer_id)

    def _unavailable(self, my_id: str, peer_id: str) -> None:
        """Rule 3: nobody received it; tell the sender's sockets of this conversation here."""
        self.undelivered += 1
        self.local.notify(my_id, peer_id, PEER_UNAVAILABLE_NOTICE)

    def local_sessions(self) -> list[Session]:
        return self.local.local_sessions()

    def count(self, id: str) -> int:
        return self.local.count(id)

    @property
    def settled(self) -> bool:
        """Nothing waits to reach Redis: every (un)subscription confirmed, the outbox empty."""
        return (
            self._outbox.empty()
            and self._subscriptions.empty()
            and not self._busy
            and self._confirmed - {self._control} == set(self._channels)
        )

    @property
    def ids_online(self) -> int:
        return self.local.ids_online

    @property
    def open_sockets(self) -> int:
        return self.local.open_sockets

    async def connections(self, id: str) -> list[dict[str, str | None]]:
        """Every socket of ``id`` on every live node (local ones if Redis is away)."""
        assert self._client is not None
        try:
            # decode_responses=True: every reply below is text, whatever redis-py's types say.
            entries = cast(
                "dict[str, str]", await asyncio.wait_for(self._client.hgetall(self._sessions_key(id)), COMMAND_TIMEOUT)
            )
            nodes = sorted({value.split(SEP, 1)[0] for value in entries.values()})
            alive = await self._client.mget([self._node_key(node) for node in nodes]) if nodes else []
        except (TimeoutError, RedisError, OSError):
            return await self.local.connections(id)
        live = {node for node, flag in zip(nodes, alive, strict=True) if flag is not None} | {self.node}
        result: list[dict[str, str | None]] = []
        for session_id, value in entries.items():
            node, _, peer = value.partition(SEP)
            if node in live:
                result.append({"peer": peer or None, "session": session_id})
        return result

    # --- publishing (one connection, in order) ------------------------------------------

    async def _publisher(self) -> None:
        assert self._client is not None
        while True:
            jobs = [await self._outbox.get()]
            while len(jobs) < BATCH and not self._outbox.empty():
                jobs.append(self._outbox.get_nowait())
            self._busy = True
            try:
                await self._send_batch(jobs)
            finally:
                self._busy = False

    async def _send_batch(self, jobs: list[tuple[Any, ...]]) -> None:
        """Send a batch of jobs in one pipeline, then decide the notices from the replies."""
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        counted: list[tuple[int, int, tuple[Any, ...]]] = []  # (first reply, replies for rule 1, job)
        registered: list[asyncio.Future[None]] = []
        index = 0
        for job in jobs:
            kind = job[0]
            if kind == "message":
                _, my_id, peer_id, session_id, text, _ = job
                payload = f"{self.node}{SEP}{MESSAGE}{SEP}{session_id}{SEP}{text}"
                # Rule 1 (the peer's sockets talking to us, or to anyone) then rule 2 (ours).
                rule1 = [self._conversation(peer_id, my_id), self._conversation(peer_id, "")] if peer_id else []
                for channel in (*rule1, self._conversation(my_id, peer_id)):
                    pipe.publish(channel, payload)
                counted.append((index, len(rule1), job))
                index += len(rule1) + 1
            elif kind == "notice":
                _, my_id, peer_id = job
                pipe.publish(self._conversation(my_id, peer_id), f"{self.node}{SEP}{NOTICE}{SEP}{SEP}{PEER_UNAVAILABLE_NOTICE}")
                index += 1
            elif kind == "register":
                _, my_id, session_id, peer_id, done = job
                pipe.hset(self._sessions_key(my_id), session_id, f"{self.node}{SEP}{peer_id}")
                pipe.sadd(self._node_sessions_key(self.node), f"{my_id}{SEP}{session_id}")
                registered.append(done)
                index += 2
            elif kind == "unregister":
                _, my_id, session_id = job
                pipe.hdel(self._sessions_key(my_id), session_id)
                pipe.srem(self._node_sessions_key(self.node), f"{my_id}{SEP}{session_id}")
                index += 2
        try:
            results: list[Any] | None = await asyncio.wait_for(pipe.execute(raise_on_error=False), COMMAND_TIMEOUT)
        except (TimeoutError, RedisError, OSError) as error:
            self._lost(error)
            results = None
        for done in registered:
            if not done.done():
                done.set_result(None)
        for first, rule1_count, job in counted:
            my_id, peer_id, local = job[1], job[2], job[5]
            remote = 0
            if results is None:
                self.backplane_errors += 1  # the other nodes could not be told
            else:
                for channel, reply in zip(
                    (self._conversation(peer_id, my_id), self._conversation(peer_id, "")),
                    results[first : first + rule1_count],
                    strict=False,
                ):
                    # PUBLISH counts our own subscription too; local sockets were served directly.
                    if isinstance(reply, int):
                        remote += reply - (1 if channel in self._confirmed else 0)
            if local + max(remote, 0) == 0:
                self._unavailable(my_id, peer_id)
                if results is not None:
                    self._outbox.put_nowait(("notice", my_id, peer_id))

    def _lost(self, error: BaseException) -> None:
        if self.connected:
            log.warning("lost Redis (%s): local delivery goes on, other nodes are unreachable", error)
        self.connected = False

    # --- receiving ----------------------------------------------------------------------

    async def _listener(self) -> None:
        """Keep one pub/sub connection subscribed to our channels, reconnecting as needed."""
        assert self._client is not None
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            self._confirmed.clear()
            control = asyncio.create_task(self._subscriber(pubsub))
            try:
                # Subscribe to what our sockets listen on (all of it again after a reconnect).
                await pubsub.subscribe(self._control, *self._channels)
                await self._refresh_presence(register_all=True)
                await self._discover()
                await self._client.publish(self._control, f"hello{SEP}{self.node}")
                if not self.connected:
                    log.info("connected to Redis at %s as node %s", self.url, self.node)
                self.connected = True
                delay = 0.1
                async for message in pubsub.listen():
                    self._on_pubsub(message)
            except (RedisError, OSError) as error:
                self._lost(error)
            finally:
                control.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await control
                with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(pubsub.aclose(), STOP_WAIT)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _subscriber(self, pubsub: Any) -> None:
        while True:
            action, channel = await self._subscriptions.get()
            # Act on the latest state: a socket may have come or gone meanwhile.
            if action == "subscribe" and channel in self._channels:
                await pubsub.subscribe(channel)
            elif action == "unsubscribe" and channel not in self._channels:
                await pubsub.unsubscribe(channel)

    def _on_pubsub(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            self._confirmed.add(channel)
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
            return
        if kind == "unsubscribe":
            self._confirmed.discard(channel)
            return
        if kind != "message":
            return
        data = message["data"]
        if channel == self._control:
            verb, _, node = data.partition(SEP)
            if node != self.node:
                if verb == "hello":
                    self.others.add(node)
                elif verb == "bye":
                    self.others.discard(node)
            return
        if data.startswith(self._own_prefix):
            return  # our own message coming back on a channel we also listen on: delivered already
        _, _, session_id, text = data.split(SEP, 3)
        body = channel[len(self.prefix) :]
        if body.startswith("c" + SEP):
            my_id, _, peer_id = body[2:].partition(SEP)
        else:
            my_id, peer_id = body[2:], ""
        for session in self.local.group(my_id, peer_id):
            if session.session_id != session_id:
                session.send(text)

    # --- presence: our node record, and reaping dead nodes -------------------------------

    async def _presence(self) -> None:
        period = self.node_ttl / 3
        while True:
            await asyncio.sleep(period)
            try:
                await asyncio.wait_for(self._refresh_presence(register_all=False), COMMAND_TIMEOUT)
                await asyncio.wait_for(self._reap(), COMMAND_TIMEOUT)
            except (TimeoutError, RedisError, OSError) as error:
                self._lost(error)

    async def _refresh_presence(self, register_all: bool) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._node_key(self.node), "1", px=int(self.node_ttl * 1000))
        pipe.sadd(self._nodes_key, self.node)
        if register_all:
            # After a (re)connection: Redis may have restarted empty, so tell it everything.
            for session in self.local.local_sessions():
                pipe.hset(self._sessions_key(session.id), session.session_id, f"{self.node}{SEP}{session.peer_id}")
                pipe.sadd(self._node_sessions_key(self.node), f"{session.id}{SEP}{session.session_id}")
        await pipe.execute()

    async def _discover(self) -> tuple[list[str], list[str]]:
        """The other nodes registered in Redis, split into (alive, dead); the alive join
        ``others`` (never removed here: a node that said hello meanwhile must stay)."""
        assert self._client is not None
        members = cast("set[str]", await self._client.smembers(self._nodes_key))
        nodes = [n for n in members if n != self.node]
        if not nodes:
            return [], []
        flags = await self._client.mget([self._node_key(n) for n in nodes])
        alive = [n for n, flag in zip(nodes, flags, strict=True) if flag is not None]
        dead = [n for n, flag in zip(nodes, flags, strict=True) if flag is None]
        self.others.update(alive)
        return alive, dead

    async def _reap(self) -> None:
        assert self._client is not None
        _, dead = await self._discover()
        if dead:
            clients = await self._client.client_list(_type="pubsub")
            for node in dead:
                for client in clients:
                    if client.get("name") == f"webrtc-node-{node}":
                        with contextlib.suppress(RedisError):
                            await self._client.client_kill_filter(_id=client["id"])
                log.info("node %s stopped refreshing its presence: its sockets are forgotten", node)
                self.others.discard(node)
                await self._forget_node(node)

    async def _forget_node(self, node: str) -> None:
        assert self._client is not None
        members = cast("set[str]", await self._client.smembers(self._node_sessions_key(node)))
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            my_id, _, session_id = member.partition(SEP)
            pipe.hdel(self._sessions_key(my_id), session_id)
        pipe.delete(self._node_sessions_key(node), self._node_key(node))
        pipe.srem(self._nodes_key, node)
        await pipe.execute()
