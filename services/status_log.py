"""A status line in the log every few minutes: what the server carries, and what it refused."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from services.loop_lag import LoopLag

if TYPE_CHECKING:
    from handlers.signaling import SocketContext

log = logging.getLogger("webrtc_app.status")


class StatusLog:
    def __init__(self, context: SocketContext, loop_lag: LoopLag) -> None:
        self.context = context
        self.loop_lag = loop_lag
        self.last_relayed = 0

    def write(self) -> None:
        router, stats = self.context.router, self.context.stats
        relayed = router.relayed - self.last_relayed
        self.last_relayed = router.relayed
        log.info(
            "status: %d socket(s) of %d, %d id(s) online, %d message(s) relayed since last status, "
            "%d undelivered, %d rate-limited, %d refused in all, event loop lag up to %.0f ms",
            router.open_sockets,
            self.context.socket_limit,
            router.ids_online,
            relayed,
            router.undelivered,
            stats.rate_limited,
            sum(stats.rejected.values()),
            1000 * self.loop_lag.read_worst(),
        )
