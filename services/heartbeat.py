"""Find sockets whose peer vanished without a FIN (network gone, laptop closed).

One timer for all sockets instead of a task per socket: every ``tick_seconds`` (half the
timeout) the service pings the sockets it has not heard from for ``interval`` seconds and
drops those silent for longer than ``interval + timeout``. Sockets note when they last
heard anything (a message or a pong) as the current tick number, which costs an attribute
store per message instead of a clock read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Protocol

#: Sockets visited at once; the chunks of one tick are spread over at most half of it.
CHUNK = 500
#: Longest pause between two chunks, in seconds.
MAX_SPACING = 0.05


class Pulse(Protocol):
    """What the heartbeat needs from a socket."""

    #: Tick number when the socket last heard from its peer.
    heard: int

    def ping(self) -> None: ...

    def drop(self) -> None:
        """Leave the registry now and close (the peer cannot answer anyway)."""


class Heartbeat:
    def __init__(self, interval: float, timeout: float, sockets: Callable[[], Iterable[Pulse]]) -> None:
        self.enabled = interval > 0
        self.tick_seconds = (timeout or interval) / 2 if self.enabled else 0.0
        self.tick = 0
        self.sockets = sockets
        if self.enabled:
            # A live peer is heard again at most ping_after ticks after the last time;
            # one more tick of silence means it is gone (see the module docstring).
            self.ping_after = max(1, math.ceil(interval / self.tick_seconds))
            self.drop_after = self.ping_after + 1
        #: Sockets dropped so far.
        self.dropped = 0
        self._pinged: dict[Pulse, int] = {}

    def beat(self) -> None:
        """One tick: ping the quiet, drop the silent, CHUNK sockets at a time, the chunks
        spread over (at most) half the tick. Sockets opened together stay in step: pinged in
        one go, tens of thousands of them would stall the loop, and their pongs, arriving
        together, stall it again (measured: 240 ms for 13,500 pongs)."""
        self.tick += 1
        sockets = tuple(self.sockets())
        chunks = max(1, math.ceil(len(sockets) / CHUNK))
        spacing = min(MAX_SPACING, self.tick_seconds / 2 / chunks)
        self._visit(sockets, 0, {}, self.tick, spacing)

    def _visit(self, sockets: tuple[Pulse, ...], start: int, pinged: dict[Pulse, int], tick: int, spacing: float) -> None:
        previous = self._pinged
        for socket in sockets[start : start + CHUNK]:
            silent = tick - socket.heard
            if silent > self.drop_after:
                self.dropped += 1
                socket.drop()
            elif silent >= self.ping_after:
                last_ping = previous.get(socket, -1)
                if last_ping <= socket.heard:
                    socket.ping()
                    last_ping = tick
                pinged[socket] = last_ping
        if start + CHUNK < len(sockets):
            asyncio.get_running_loop().call_later(spacing, self._visit, sockets, start + CHUNK, pinged, tick, spacing)
        else:
            self._pinged = pinged
