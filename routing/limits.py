"""Per-socket message rate limiting: a token bucket, free of Tornado."""

from __future__ import annotations

#: What a socket's next message gets.
ALLOW, NOTICE, DROP, CLOSE = "allow", "notice", "drop", "close"


class RateLimiter:
    """``rate`` messages per second on average, ``burst`` at once.

    Over the limit a message is dropped; the first drop of an episode answers NOTICE (tell
    the sender once), later ones DROP. A sender that has another ``burst`` of messages
    dropped before it goes quiet long enough to refill the bucket answers CLOSE. The
    episode ends when the bucket is full again.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp", "dropped")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.dropped = 0

    def check(self, now: float, cost: int = 1) -> str:
        """The verdict for what costs ``cost`` tokens now (a message: 1)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens >= self.burst:
            tokens = self.burst
            self.dropped = 0
        self.stamp = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return ALLOW
        self.tokens = tokens
        first = self.dropped == 0
        self.dropped += cost
        if self.dropped > self.burst:
            return CLOSE
        return NOTICE if first else DROP

    #: Frames that already passed (fragments) are charged as messages are: what they cost
    #: counts toward the episode, and a flood of them ends in CLOSE.
    charge = check
