"""The backplane's pulse: every tick, the liveness checks of routing/liveness.py; every beat,
this node's beat on the control channel; the log lines and figures of what changed.

A node cut off from Redis long enough that Redis may have dropped its connections (a link
that swallows packets closes nothing) makes its connections again, so that it converges once
the link heals instead of waiting on a connection nobody will ever write to again; unless a new
connection gets its PING answered at once: then Redis is only slow (a machine under load), and
making every connection again, with every socket registered again, would only add to the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.exceptions import RedisError

from routing import wire
from routing.nodes import NodeRouting
from routing.redis.common import Keys, Link, disconnect, log
from routing.redis.publisher import Publisher
from routing.redis.shards import Topology
from routing.redis.subscriber import Subscriber

#: Seconds a new connection has to answer PING before a silent link counts as gone.
PROBE_TIMEOUT = 2.0


class Pulse:
    """Ticks and beats; ``settled`` says whether nothing waits to reach Redis (for the time
    the backplane took to converge after a fault healed)."""

    def __init__(
        self,
        routing: NodeRouting,
        topology: Topology,
        keys: Keys,
        link: Link,
        subscriber: Subscriber,
        publisher: Publisher,
        settled: Callable[[], bool],
    ) -> None:
        self.routing = routing
        self.topology = topology
        self.keys = keys
        self.link = link
        self.subscriber = subscriber
        self.publisher = publisher
        self.settled = settled
        timing = routing.timing
        #: Cut off this long, the connections are made again (and again, as long as it lasts).
        self.reconnect_after = max(3.0, 2 * timing.bound)
        self._connected_at = 0.0
        self._was_cut_off = False
        self._was_connected = False
        self._ever_connected = False
        #: When the last fault healed and the backplane has not converged since (None: it has).
        self.healing_since: float | None = None
        #: Seconds the backplane took to converge after the last fault healed.
        self.last_convergence = 0.0
        self._logged_down: set[str] = set()
        self._probing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timing = self.routing.timing
        next_beat = 0.0
        beating: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(timing.tick)
            now = loop.time()
            self.routing.tick(now)
            self._report(now)
            if self.link.connected and now >= next_beat and (beating is None or beating.done()):
                next_beat = now + timing.beat
                beating = loop.create_task(self._beat(), name="redis-beat")

    def connected(self) -> None:
        """The link is (again) up: this node's own beat is expected from now on."""
        now = asyncio.get_running_loop().time()
        self._connected_at = now
        self.routing.liveness.started(now)

    async def _probe_then_restart(self, silent: float) -> None:
        try:
            await asyncio.wait_for(self._ping_every_shard(), PROBE_TIMEOUT)
        except (RedisError, OSError, TimeoutError):
            self.subscriber.restart(f"heard nothing from Redis for {silent:.0f} s")
            return
        log.info("heard nothing from Redis for %.0f s, but it answers: slow, not gone; keeping the connections", silent)

    async def _ping_every_shard(self) -> None:
        for address in self.topology.masters():
            connection = self.topology.connection(address)
            try:
                await connection.connect()
                await connection.send_command("PING")
                await connection.read_response()
            finally:
                await disconnect(connection)

    async def _beat(self) -> None:
        client = self.topology.client
        if client is None:
            return
        liveness = self.routing.liveness
        deaf = "1" if liveness.cut_off_since is not None else "0"
        beat = wire.SEP.join(("beat", self.keys.node, deaf))
        liveness.sent_beat(asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(client.spublish(self.keys.control, beat), self.reconnect_after)
        except (RedisError, OSError, TimeoutError):
            liveness.beat_failed()

    def _report(self, now: float) -> None:
        liveness = self.routing.liveness
        since = liveness.cut_off_since
        cut_off = since is not None
        if cut_off != self._was_cut_off:
            self._was_cut_off = cut_off
            if cut_off:
                log.warning(
                    "heard nothing from Redis for %.1f s: this node is cut off (not ready); local conversations go on, "
                    "messages for other nodes are answered PEER-UNAVAILABLE",
                    now - liveness.heard_self,
                )
            else:
                log.warning("hears Redis again: no longer cut off")
                self.healing_since = self.healing_since or now
        if (
            since is not None
            and now - since > self.reconnect_after
            and now - self._connected_at > self.reconnect_after
            and (self._probing is None or self._probing.done())
        ):
            # Hearing nothing for long, whatever the connections think: unless Redis answers
            # a new connection at once (it is only slow: a machine under load, where making
            # every connection again would only add to it), make them again (a connection
            # Redis dropped meanwhile would only tell when TCP gives up, minutes on).
            self._connected_at = now
            self._probing = asyncio.get_running_loop().create_task(self._probe_then_restart(now - since))
        down = set(liveness.down)
        for node in sorted(down - self._logged_down):
            if not cut_off:
                log.warning(
                    "node %s is unreachable (%s): messages for its sockets get PEER-UNAVAILABLE", node, liveness.down[node].why
                )
        for node, seconds in liveness.ended:
            log.info("node %s is reachable again, after %.1f s", node, seconds)
            self.healing_since = self.healing_since or now
        liveness.ended.clear()
        self._logged_down = down
        connected = self.link.connected
        if connected and not self._was_connected and self._ever_connected:
            self.healing_since = self.healing_since or now  # reconnected (a restart, a failover)
        self._was_connected = connected
        self._ever_connected = self._ever_connected or connected
        if self.healing_since is not None and connected and not cut_off and not down and self.settled():
            self.last_convergence = now - self.healing_since
            self.healing_since = None
            log.info("the backplane converged %.2f s after the fault healed", self.last_convergence)
