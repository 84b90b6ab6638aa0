"""Counters of one app and their Prometheus exposition (read at scrape time, not per message)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from services.loop_lag import LoopLag

if TYPE_CHECKING:
    from handlers.signaling import SocketContext


class Stats:
    """Plain counters the handlers bump: an integer addition is all the hot path pays."""

    def __init__(self) -> None:
        #: Sockets refused, by reason (origin, bad-request, forbidden, too-many-sockets, server-full).
        self.rejected: Counter[str] = Counter()
        #: Sockets the server closed, by reason (binary, rate-limited, ping-timeout, shutdown, unsent-limit).
        self.closed: Counter[str] = Counter()
        self.rate_limited = 0
        self.relayed_bytes = 0
        #: Connections answered 503 at once: out of descriptors, or too many request heads unread.
        self.turned_away = 0
        #: … of which for the heads their address holds and does not send (not for descriptors).
        self.busy_address = 0
        #: Connections dropped for a newcomer (past MAX_PENDING_HEADS, or out of descriptors),
        #: having sent nothing for a second.
        self.idle_heads_dropped = 0


class AppCollector:
    """Exposes a server's router, counters, limits and loop lag as Prometheus metrics."""

    def __init__(self, context: SocketContext, loop_lag: LoopLag, open_files: int) -> None:
        self.context = context
        self.loop_lag = loop_lag
        self.open_files = open_files

    def collect(self) -> Iterator[Metric]:
        context = self.context
        router, stats, limits = context.router, context.stats, context.limits
        yield GaugeMetricFamily("webrtc_open_sockets", "Signaling sockets open on this process.", value=router.open_sockets)
        yield GaugeMetricFamily("webrtc_ids_online", "Ids with at least one socket on this process.", value=router.ids_online)
        yield CounterMetricFamily("webrtc_messages_relayed", "Messages received for relaying.", value=router.relayed)
        yield CounterMetricFamily(
            "webrtc_messages_undelivered",
            "Messages no peer socket received (PEER-UNAVAILABLE notices).",
            value=router.undelivered,
        )
        rooms = router.rooms
        yield GaugeMetricFamily("webrtc_room_sockets", "Room sockets open on this process.", value=rooms.open_sockets)
        yield GaugeMetricFamily("webrtc_rooms", "Rooms with a socket on this process.", value=len(rooms.rooms))
        yield CounterMetricFamily(
            "webrtc_room_messages", "Room messages received from this process' sockets.", value=rooms.relayed
        )
        yield CounterMetricFamily(
            "webrtc_room_copies_delivered", "Copies of room messages handed to this process' sockets.", value=rooms.delivered
        )
        yield CounterMetricFamily(
            "webrtc_room_copies_forwarded", "Copies of room messages sent to other nodes (one per node).", value=rooms.forwarded
        )
        yield CounterMetricFamily("webrtc_room_frames_refused", "Room frames refused with BAD-MESSAGE.", value=rooms.refused)
        yield CounterMetricFamily(
            "webrtc_relayed_bytes", "UTF-8 bytes of the messages received for relaying.", value=stats.relayed_bytes
        )
        yield CounterMetricFamily("webrtc_messages_rate_limited", "Messages dropped by the rate limit.", value=stats.rate_limited)
        yield GaugeMetricFamily(
            "webrtc_socket_limit",
            "Most signaling sockets this process holds: MAX_SOCKETS, or fewer if its descriptors run out first.",
            value=context.socket_limit,
        )
        yield GaugeMetricFamily("webrtc_open_files_limit", "This process' open-file (descriptor) limit.", value=self.open_files)
        yield CounterMetricFamily(
            "webrtc_connections_turned_away",
            "Connections answered 503 at once: out of descriptors, or too many request heads unread.",
            value=stats.turned_away,
        )
        yield CounterMetricFamily(
            "webrtc_busy_address_refusals",
            "Connections answered 503 because their address holds MAX_PENDING_HEADS_PER_ADDRESS heads it does not send.",
            value=stats.busy_address,
        )
        yield CounterMetricFamily(
            "webrtc_idle_heads_dropped",
            "Connections that sent nothing, dropped to make room for new ones (past MAX_PENDING_HEADS, or out of descriptors).",
            value=stats.idle_heads_dropped,
        )
        yield GaugeMetricFamily(
            "webrtc_unsent_bytes", "Bytes waiting for sockets that do not read fast enough (MAX_UNSENT_TOTAL).", value=limits.held
        )
        lag = self.loop_lag
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
        figures = router.backplane()
        if figures is not None:
            yield GaugeMetricFamily(
                "webrtc_backplane_connected", "1 while this node is connected to Redis.", value=int(figures.connected)
            )
            yield CounterMetricFamily(
                "webrtc_backplane_errors",
                "Messages whose cross-node part was lost because Redis was unreachable.",
                value=figures.errors,
            )
            yield CounterMetricFamily(
                "webrtc_backplane_batches", "Batches of messages published to other nodes' inboxes.", value=figures.batches
            )
            yield CounterMetricFamily(
                "webrtc_backplane_stale",
                "Messages a destination node found nobody for (the directory had not caught up).",
                value=figures.stale,
            )
            yield GaugeMetricFamily(
                "webrtc_backplane_cut_off",
                "1 while this node hears nothing from Redis (not its own beat): it is not ready.",
                value=int(figures.cut_off),
            )
            yield GaugeMetricFamily(
                "webrtc_backplane_nodes_down",
                "Other nodes counted unreachable now (no receipt, or silent).",
                value=figures.nodes_down,
            )
            yield CounterMetricFamily(
                "webrtc_backplane_nodes_lost", "Times another node was counted unreachable.", value=figures.nodes_lost
            )
            yield CounterMetricFamily(
                "webrtc_backplane_unreceipted",
                "Messages answered PEER-UNAVAILABLE because their node gave no receipt within the delivery bound.",
                value=figures.unreceipted,
            )
            yield GaugeMetricFamily(
                "webrtc_backplane_convergence_seconds",
                "Seconds the backplane took to converge after the last fault healed.",
                value=figures.convergence,
            )
            info = GaugeMetricFamily("webrtc_node_info", "This process' node id on the backplane.", labels=["node"])
            info.add_metric([router.node], 1)
            yield info


def make_registry(context: SocketContext, loop_lag: LoopLag, open_files: int) -> CollectorRegistry:
    """A registry of its own per app (no global state), with the process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AppCollector(context, loop_lag, open_files))
    ProcessCollector(registry=registry)
    return registry
