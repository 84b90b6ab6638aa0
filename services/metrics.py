"""Counters of one app and their Prometheus exposition (read at scrape time, not per message)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from routing.redis import RedisRouter
    from webrtc_server import WebRTCApplication


class Stats:
    """Plain counters the handlers bump: an integer addition is all the hot path pays."""

    def __init__(self) -> None:
        #: Sockets refused, by reason (origin, bad-request, forbidden, too-many-sockets, server-full).
        self.rejected: Counter[str] = Counter()
        #: Sockets the server closed, by reason (binary, rate-limited, ping-timeout, shutdown).
        self.closed: Counter[str] = Counter()
        self.rate_limited = 0
        self.relayed_bytes = 0


class AppCollector:
    """Exposes an app's router, stats and heartbeat as Prometheus metrics."""

    def __init__(self, app: WebRTCApplication) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        router, stats = self.app.router, self.app.stats
        yield GaugeMetricFamily("webrtc_open_sockets", "Signaling sockets open on this process.", value=router.open_sockets)
        yield GaugeMetricFamily("webrtc_ids_online", "Ids with at least one socket on this process.", value=router.ids_online)
        yield CounterMetricFamily("webrtc_messages_relayed", "Messages received for relaying.", value=router.relayed)
        yield CounterMetricFamily(
            "webrtc_messages_undelivered",
            "Messages no peer socket received (PEER-UNAVAILABLE notices).",
            value=router.undelivered,
        )
        yield CounterMetricFamily(
            "webrtc_relayed_bytes", "UTF-8 bytes of the messages received for relaying.", value=stats.relayed_bytes
        )
        yield CounterMetricFamily("webrtc_messages_rate_limited", "Messages dropped by the rate limit.", value=stats.rate_limited)
        yield GaugeMetricFamily(
            "webrtc_socket_limit",
            "Most signaling sockets this process holds: MAX_SOCKETS, or fewer if its descriptors run out first.",
            value=self.app.socket_limit,
        )
        yield GaugeMetricFamily(
            "webrtc_open_files_limit", "This process' open-file (descriptor) limit.", value=self.app.open_files
        )
        front_door = self.app.front_door
        yield CounterMetricFamily(
            "webrtc_connections_turned_away",
            "Connections answered 503 because the process was out of descriptors.",
            value=front_door.refused if front_door is not None else 0,
        )
        lag = self.app.loop_lag
        yield GaugeMetricFamily(
            "webrtc_event_loop_lag_seconds", "Worst delay of the event loop's timers over the last 10 s.", value=lag.recent
        )
        yield GaugeMetricFamily(
            "webrtc_event_loop_lag_max_seconds", "Worst delay of the event loop's timers since start.", value=lag.worst_ever
        )
        rejected = CounterMetricFamily("webrtc_sockets_rejected", "Sockets refused, by reason.", labels=["reason"])
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        closed = CounterMetricFamily(
            "webrtc_sockets_closed_by_server", "Sockets the server closed, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.closed.items()):
            closed.add_metric([reason], count)
        yield closed
        if router.node:  # the Redis backplane
            backplane = cast("RedisRouter", router)
            yield GaugeMetricFamily(
                "webrtc_backplane_connected", "1 while this node is connected to Redis.", value=int(backplane.connected)
            )
            yield CounterMetricFamily(
                "webrtc_backplane_errors",
                "Messages whose cross-node part was lost because Redis was unreachable.",
                value=backplane.backplane_errors,
            )
            yield CounterMetricFamily(
                "webrtc_backplane_batches", "Batches of messages published to other nodes' inboxes.", value=backplane.batches
            )
            yield CounterMetricFamily(
                "webrtc_backplane_stale",
                "Messages a destination node found nobody for (the directory had not caught up).",
                value=backplane.stale,
            )
            info = GaugeMetricFamily("webrtc_node_info", "This process' node id on the backplane.", labels=["node"])
            info.add_metric([router.node], 1)
            yield info


def make_registry(app: WebRTCApplication) -> CollectorRegistry:
    """A registry of its own per app (no global state), with the process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AppCollector(app))
    ProcessCollector(registry=registry)
    return registry
