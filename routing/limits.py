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

    def check(self, now: float) -> str:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens >= self.burst:
            tokens = self.burst
            self.dropped = 0
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return ALLOW
        self.tokens = tokens
        self.dropped += 1
        if self.dropped > self.burst:
            return CLOSE
        return NOTICE if self.dropped == 1 else DROP
