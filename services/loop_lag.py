"""How late the event loop runs a timer: the first thing to look at when a Python server is
overloaded. Every ``interval`` seconds a callback notes how long after its due time it ran;
the worst of the last ``window`` seconds and the worst since start are kept."""

from __future__ import annotations

import asyncio
from collections import deque


class LoopLag:
    def __init__(self, interval: float = 0.25, window: float = 10.0) -> None:
        self.interval = interval
        self._recent: deque[float] = deque(maxlen=max(1, round(window / interval)))
        #: Worst lag since start, in seconds.
        self.worst_ever = 0.0
        self._worst_since_read = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self.interval
            self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        lag = max(0.0, now - self._due)
        self._recent.append(lag)
        if lag > self.worst_ever:
            self.worst_ever = lag
        if lag > self._worst_since_read:
            self._worst_since_read = lag
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick)

    @property
    def recent(self) -> float:
        """Worst lag of the last window, in seconds."""
        return max(self._recent, default=0.0)

    def read_worst(self) -> float:
        """Worst lag since the previous call (the status log's interval), in seconds."""
        worst, self._worst_since_read = self._worst_since_read, 0.0
        return worst
