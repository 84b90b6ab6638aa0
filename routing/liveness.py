"""Which other nodes take what this node sends them, and whether this node hears Redis at all;
free of Redis, of asyncio and of Tornado.

The promise (docs/protocol.md, "Delivery"): every text frame a socket hands the server reaches
every matching peer socket within DELIVERY_BOUND seconds, or its sender's conversation gets
PEER-UNAVAILABLE within that bound. Within one node that is immediate. Across nodes, Redis
says a batch was published, not that a node took it: a node frozen (SIGSTOP, a stalled VM),
cut off from Redis (packets dropped, nothing closes) or killed before Redis noticed still
counts as a subscriber. So:

* **Receipts.** Every batch that carries messages is numbered per destination (wire ``S``);
  the destination answers with the number of the last one it handled (``K``), piggybacked on
  what it sends anyway or, at the latest, at the next tick. A batch with no receipt after
  ``wait`` seconds counts as not taken: its senders are told and its node is *down*.
* **Beats.** Every node publishes a beat on the control channel every ``beat`` seconds and
  hears everyone's, its own included. A node silent for ``wait`` seconds is down; a node that
  says it hears nothing (its beat's flag) is down; hearing it again brings it back.
* **Down** means unreachable: messages for sockets there are answered PEER-UNAVAILABLE at once,
  its room members leave for the others, until it is heard again. Its directory entries and room
  pairs are kept meanwhile (it may never know it was counted down), so it comes back whole.
* **Cut off.** A node that does not hear its own beat for ``wait`` seconds is cut off from
  Redis (whichever way): it says so (``/healthz``, a metric, a log line), counts every other
  node down so that its senders are told at once, and goes on with its local conversations.

The defaults put ``wait`` at 0.7 of the bound, beats at an eighth and ticks at a twentieth:
with a bound of 2 s, a batch waits 1.4 s for its receipt, the check runs every 0.1 s, and the
notice leaves by 1.5 s, half a second inside the bound for a loaded event loop. A new socket's
join waits at most half the bound (1 s) for the nodes that mirror its ids, since what the socket
sends meanwhile is held until then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: The default DELIVERY_BOUND (settings.py), and the range it may take, in seconds.
DEFAULT_BOUND = 2.0
MIN_BOUND, MAX_BOUND = 0.5, 60.0
#: The longest a join waits for acknowledgements, whatever the bound.
JOIN_WAIT = 2.0


@dataclass(slots=True)
class Timing:
    """The liveness periods, all derived from the bound."""

    bound: float = DEFAULT_BOUND

    def __post_init__(self) -> None:
        if not MIN_BOUND <= self.bound <= MAX_BOUND:
            raise ValueError(f"DELIVERY_BOUND must be from {MIN_BOUND:g} to {MAX_BOUND:g} seconds, got {self.bound!r}")

    @property
    def wait(self) -> float:
        """Longest a batch waits for its receipt, and a node may stay silent."""
        return self.bound * 0.7

    @property
    def join(self) -> float:
        """Longest a socket's join waits for the nodes that mirror its ids to acknowledge it:
        what the socket sent meanwhile is held until then, and must still arrive in time."""
        return min(JOIN_WAIT, self.bound / 2)

    @property
    def beat(self) -> float:
        return self.bound / 8

    @property
    def slow(self) -> float:
        """A beat of this node's own that takes longer than this to come back says the
        backplane is behind: for ``wait`` seconds from then, new sockets are asked to come
        back later (a reconnection storm paces itself instead of starving the conversations
        already going on)."""
        return self.bound / 4

    @property
    def tick(self) -> float:
        return self.bound / 20


@dataclass(slots=True)
class Outage:
    """One node counted down: since when, and why."""

    since: float
    why: str


@dataclass(slots=True)
class Liveness:
    """One node's view of the others' liveness, and of its own link.

    ``lost(node, outstanding)`` is called when a node goes down, with the fields of every batch
    it left without a receipt (their senders are to be told); ``back(node)`` when it is heard
    again. Both are NodeRouting's.
    """

    node: str
    timing: Timing
    lost: Callable[[str, list[list[str]]], None]
    back: Callable[[str], None]
    #: node -> batch number -> (time sent, its fields) of the batches awaiting a receipt.
    outstanding: dict[str, dict[int, tuple[float, list[str]]]] = field(default_factory=dict)
    #: node -> the number of the last batch of theirs handled here, not yet receipted.
    receipts_due: dict[str, str] = field(default_factory=dict)
    #: node -> when it was last heard (a beat); the nodes down, and why.
    heard: dict[str, float] = field(default_factory=dict)
    down: dict[str, Outage] = field(default_factory=dict)
    #: When this node last heard its own beat; since when it is cut off (None: it is not).
    heard_self: float = 0.0
    cut_off_since: float | None = None
    #: Nodes counted down so far, for /metrics.
    nodes_lost: int = 0
    #: The last outages that ended (node, seconds), for the log and /metrics.
    ended: list[tuple[str, float]] = field(default_factory=list)
    #: When this node's beats not heard back yet were sent, oldest first.
    beats_out: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    #: The last time one came back slower than ``timing.slow`` (None: never).
    slow_at: float | None = None
    _numbers: dict[str, int] = field(default_factory=dict)

    # --- what this node sends -------------------------------------------------------------

    def number(self, node: str, fields: list[str], now: float) -> int:
        """The next number of a batch for ``node``, kept until its receipt."""
        number = self._numbers.get(node, 0) + 1
        self._numbers[node] = number
        pending = self.outstanding.get(node)
        if pending is None:
            pending = self.outstanding[node] = {}
        pending[number] = (now, fields)
        return number

    def settle(self, node: str, number: int) -> bool:
        """A batch that will have no receipt (it reached no node, or was lost on the way out)
        and that its sender answers for now; False if it was answered already."""
        pending = self.outstanding.get(node)
        return pending is not None and pending.pop(number, None) is not None

    def receipt(self, node: str, number: int) -> None:
        """``node`` handled every batch up to ``number``."""
        pending = self.outstanding.get(node)
        while pending:
            first = next(iter(pending))
            if first > number:
                break
            del pending[first]

    def give_up(self) -> list[list[str]]:
        """The fields of every batch still awaiting a receipt, no longer awaited (this node leaves)."""
        return [fields for node in list(self.outstanding) for fields in self._unreceipted(node)]

    def _unreceipted(self, node: str) -> list[list[str]]:
        """The fields of the batches ``node`` has not receipted, no longer awaited."""
        pending = self.outstanding.pop(node, None)
        return [fields for _, fields in pending.values()] if pending else []

    # --- what this node receives ----------------------------------------------------------

    def handled(self, node: str, number: str) -> None:
        self.receipts_due[node] = number

    def beat(self, node: str, deaf: bool, now: float) -> None:
        """A beat of ``node`` (this one's too); ``deaf``: it hears nothing from Redis."""
        if node == self.node:
            self.heard_self = now
            if self.beats_out and now - self.beats_out.popleft() > self.timing.slow:
                self.slow_at = now
            if self.cut_off_since is not None:
                self.cut_off_since = None
            return
        if deaf:
            self.heard.pop(node, None)
            self.go_down(node, now, "it hears nothing from Redis")
            return
        self.heard[node] = now
        if node in self.down and self.cut_off_since is None:
            outage = self.down.pop(node)
            self.ended.append((node, now - outage.since))
            self.back(node)

    def forget(self, node: str) -> list[list[str]]:
        """``node`` left (goodbye, or reaped): what it had not receipted, for its senders."""
        self.heard.pop(node, None)
        self.down.pop(node, None)
        self.receipts_due.pop(node, None)
        self._numbers.pop(node, None)
        return self._unreceipted(node)

    # --- every tick -----------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Count down the nodes that left a batch unreceipted or stayed silent too long, and
        this node cut off if it has not heard itself."""
        wait = self.timing.wait
        if self.heard_self and self.cut_off_since is None and now - self.heard_self > wait:
            self.cut_off_since = now
            for node in sorted(set(self.heard) | set(self.outstanding)):
                self.go_down(node, now, "this node hears nothing from Redis")
        for node, pending in list(self.outstanding.items()):
            if pending and now - next(iter(pending.values()))[0] > wait:
                self.go_down(node, now, f"no receipt for a batch in {wait:.1f} s")
        for node, last in list(self.heard.items()):
            if now - last > wait and node not in self.down:
                self.go_down(node, now, f"no beat for {now - last:.1f} s")

    def go_down(self, node: str, now: float, why: str) -> None:
        lost = self._unreceipted(node)
        if node in self.down:
            if lost:
                self.lost(node, lost)
            return
        self.down[node] = Outage(now, why)
        self.nodes_lost += 1
        self.lost(node, lost)

    def resumed(self, now: float) -> None:
        """This node itself did not run for longer than the wait (it was frozen, or its loop
        blocked): what it has not read yet is not the others' silence. Everyone, this node
        included, gets a fresh wait, counted from now."""
        if self.heard_self:
            self.heard_self = now
        for node in self.heard:
            self.heard[node] = now
        for pending in self.outstanding.values():
            for number, (_, fields) in pending.items():
                pending[number] = (now, fields)

    def started(self, now: float) -> None:
        """The link to Redis is (again) up: this node's beat is expected from now on."""
        self.heard_self = now
        self.beats_out.clear()

    def sent_beat(self, now: float) -> None:
        """This node's beat is on its way."""
        self.beats_out.append(now)

    def beat_failed(self) -> None:
        """The beat last sent could not be published after all: none comes back for it."""
        if self.beats_out:
            self.beats_out.pop()

    def busy(self, now: float) -> bool:
        """A beat of ours came back slow within the last ``wait`` seconds (routing.Router.busy)."""
        return self.slow_at is not None and now - self.slow_at < self.timing.wait
