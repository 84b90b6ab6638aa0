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

#: Sockets visited per event-loop iteration.
CHUNK = 1000


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
        """One tick: ping the quiet, drop the silent, CHUNK sockets per loop iteration so that
        tens of thousands of sockets do not stall the loop for the messages in between."""
        self.tick += 1
        self._visit(tuple(self.sockets()), 0, {}, self.tick)

    def _visit(self, sockets: tuple[Pulse, ...], start: int, pinged: dict[Pulse, int], tick: int) -> None:
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
            asyncio.get_running_loop().call_soon(self._visit, sockets, start + CHUNK, pinged, tick)
        else:
            self._pinged = pinged
