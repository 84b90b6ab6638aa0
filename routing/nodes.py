"""What one node of the backplane knows and decides, free of Redis, of asyncio and of Tornado.

:class:`NodeRouting` holds a node's own sockets (a MemoryRouter), its mirror of where the
sockets its sockets talk to are (routing/directory.py, fed by the directory's events and
snapshots: :class:`Mirror`), the batches it has for other nodes (routing/wire.py), the
answers it waits for, and the joins it waits to see acknowledged. Everything it does is a
method call with the data in and the decision out; routing/redis/ does the I/O around it:
it hands in what Redis delivers (:meth:`NodeRouting.receive`, :meth:`Mirror.event`,
:meth:`Mirror.snapshot`) and publishes what :meth:`NodeRouting.take_batches` gives.
tests/test_nodes.py exercises it with no Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic

from routing import PEER_UNAVAILABLE_NOTICE, S, wire
from routing.directory import Directory
from routing.liveness import Liveness, Timing
from routing.memory import MemoryRouter
from routing.rooms import LocalRoster, Rooms

#: Most messages waiting to be published; past it, cross-node copies are shed and counted.
OUTBOX_LIMIT = 50_000
#: Seconds a message sent to several nodes waits for all their answers before it is
#: counted as delivered (a node that froze meanwhile never answers).
PENDING_TTL = 10.0


@dataclass(slots=True)
class PendingReply:
    """A message sent to several nodes: how many have yet to answer "none of mine took it"."""

    waiting: int
    my_id: str
    peer_id: str
    deadline: float


@dataclass(slots=True)
class JoinAcks:
    """The nodes that acknowledged a socket's join, against how many heard it (None: not known yet)."""

    heard: int = 0
    needed: int | None = None
    done: Callable[[], None] = field(default=lambda: None)

    def check(self) -> None:
        if self.needed is not None and self.heard >= self.needed:
            done, self.done = self.done, lambda: None
            done()


@dataclass(slots=True)
class Interest:
    """An id this node mirrors, because some of its sockets involve it."""

    refs: int = 0
    #: Directory events that arrived while its snapshot was on its way (None once loaded).
    events: list[list[str]] | None = field(default_factory=list)


class Mirror:
    """The ids this node mirrors, and their other nodes' sockets (the directory)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.directory = Directory(node)
        self.interests: dict[str, Interest] = {}

    def want(self, id: str) -> bool:
        """One more socket involves ``id``; True if it was not mirrored (subscribe its events)."""
        interest = self.interests.get(id)
        new = interest is None
        if interest is None:
            interest = self.interests[id] = Interest()
            self.directory.track(id)
        interest.refs += 1
        return new

    def unwant(self, id: str) -> bool:
        """One socket fewer involves ``id``; True if nothing does now (unsubscribe)."""
        interest = self.interests.get(id)
        if interest is None:
            return False
        interest.refs -= 1
        if interest.refs > 0:
            return False
        del self.interests[id]
        self.directory.untrack(id)
        return True

    def reloading(self) -> None:
        """After a reconnection every snapshot is asked again: buffer events until each comes."""
        for interest in self.interests.values():
            if interest.events is None:
                interest.events = []

    def loaded(self, id: str) -> bool:
        interest = self.interests.get(id)
        return interest is not None and interest.events is None

    def snapshot(self, id: str, entries: Mapping[str, str]) -> bool:
        """The directory's entries of ``id``, with the events that came meanwhile on top;
        True if ``id`` is mirrored (and now loaded)."""
        interest = self.interests.get(id)
        if interest is None:
            return False
        self.directory.load(id, entries)
        for event in interest.events or ():
            self.apply(event)
        interest.events = None
        return True

    def event(self, event: list[str]) -> bool:
        """A join or leave event of another node on a mirrored id (applied now, or buffered
        until the id's snapshot); False if the id is not mirrored."""
        interest = self.interests.get(event[2])
        if interest is None:
            return False
        if interest.events is not None:
            interest.events.append(event)
        else:
            self.apply(event)
        return True

    def apply(self, event: list[str]) -> None:
        if event[0] == "j":
            self.directory.add(event[2], event[3], event[1], event[4])
        else:
            self.directory.remove(event[2], event[3])

    @property
    def settled(self) -> bool:
        return all(interest.events is None for interest in self.interests.values())


class NodeRouting(Generic[S]):
    """One node's routing state: its sockets, the mirror, the batches out, the answers awaited.

    ``wake`` is called when a batch gets its first frame (the publisher has work); ``clock``
    answers the time in seconds (the event loop's), read only for what waits for answers;
    ``timing`` the liveness periods (routing/liveness.py), from DELIVERY_BOUND.
    """

    def __init__(self, node: str, wake: Callable[[], None], clock: Callable[[], float], timing: Timing | None = None) -> None:
        self.node = node
        self.clock = clock
        self.timing = timing or Timing()
        self.liveness = Liveness(node, self.timing, self._lost, self._back)
        #: The nodes counted down (unreachable until heard again): the relay skips them.
        self.down = self.liveness.down

        self.local: MemoryRouter[S] = MemoryRouter()
        #: The room sockets (routing/rooms.py): their roster is given by the backplane.
        self.rooms: Rooms[Any] = Rooms(node, LocalRoster(), self.batch)
        self.local.rooms = self.rooms
        self.rooms.down = self.down
        self.mirror = Mirror(node)
        self.directory = self.mirror.directory
        self._wake = wake
        #: Frames for other nodes, by node, until the publisher takes them.
        self.batches: dict[str, wire.Batch] = {}
        #: When the outbox got its first batch (it must leave within the liveness wait).
        self.batched_at = 0.0
        self.queued = 0
        self.pending: dict[str, PendingReply] = {}
        self._seq = itertools.count(1)
        self.joins: dict[str, JoinAcks] = {}
        self.relayed = 0
        self.undelivered = 0
        #: Messages whose cross-node part was lost (Redis unreachable or behind), and messages
        #: a destination node found nobody for (its directory entry was stale).
        self.backplane_errors = 0
        self.stale = 0
        #: Messages answered PEER-UNAVAILABLE because their node gave no receipt in time.
        self.unreceipted = 0
        #: Set once the node is shutting down and no longer follows the directory (its
        #: mirror is as it was): a notice then goes to every live node, not the mirror's.
        self.leaving = False
        self._last_tick = 0.0

    # --- a message from one of this node's sockets ---------------------------------------

    def relay(self, sender: S, text: str) -> None:
        """Rules 1 to 3 (routing/__init__.py): here at once, to other nodes by batch."""
        self.relayed += 1
        my_id, peer_id = sender.id, sender.peer_id
        local = self.local.fan_out(sender, text)
        peers, mine = self.directory.destinations(my_id, peer_id)
        down = self.down
        if down and (peers or mine):
            # The sockets of a node counted down are unreachable until it is heard again.
            peers = [node for node in peers if node not in down]
            mine = [node for node in mine if node not in down]
        if not peers and not mine:
            if not local:
                self.unavailable(my_id, peer_id)
            return
        if self.queued >= OUTBOX_LIMIT:
            # Redis cannot keep up (or is away and the outbox filled): shed the cross-node
            # copies rather than grow without end, exactly as during an outage.
            self.backplane_errors += 1
            if not local:
                self.unavailable(my_id, peer_id)
            return
        self.queued += 1
        session_id = sender.session_id
        if local or not peers:
            reply, seq = wire.NO_REPLY, ""
        elif len(peers) == 1:
            reply, seq = wire.REPLY_IF_NONE, ""
        else:
            reply, seq = wire.REPLY_ALWAYS, str(next(self._seq))
            self.pending[seq] = PendingReply(len(peers), my_id, peer_id, self.clock() + PENDING_TTL)
        for node in peers:
            self.batch(node).message(my_id, peer_id, session_id, reply, seq, text)
        for node in mine:
            if node not in peers:
                self.batch(node).message(my_id, peer_id, session_id, wire.NO_REPLY, "", text)
        if not local and not peers:
            self.unavailable(my_id, peer_id)

    def unavailable(self, my_id: str, peer_id: str) -> None:
        """Rule 3: nobody received it; tell the sender's sockets of this conversation, here
        and on every other node that holds some."""
        self.undelivered += 1
        self.local.notify(my_id, peer_id, PEER_UNAVAILABLE_NOTICE)
        # A leaving node's sockets are closed and reconnect elsewhere, where its mirror cannot
        # say: every node it hears from is told (a rare notice, only for what it answers for).
        nodes = self.liveness.heard if self.leaving else self.directory.nodes(my_id, peer_id)
        for node in nodes:
            if node not in self.down:
                self.batch(node).notice(my_id, peer_id)

    def batch(self, node: str) -> wire.Batch:
        batch = self.batches.get(node)
        if batch is None:
            if not self.batches:
                self.batched_at = self.clock()
            batch = self.batches[node] = wire.Batch(node)
            self._wake()
        return batch

    def take_batches(self) -> dict[str, wire.Batch]:
        """Everything there is to publish, by destination node (the outbox starts anew): the
        receipts due ride along where a batch goes anyway, and each batch with messages is
        numbered for its own receipt."""
        batches, self.batches = self.batches, {}
        self.queued = 0
        liveness = self.liveness
        due = liveness.receipts_due
        if due:
            for node in [node for node in due if node in batches]:
                batches[node].receipt(due.pop(node))
        now = 0.0
        for node, batch in batches.items():
            if batch.messages:
                now = now or self.clock()
                batch.numbered(liveness.number(node, batch.fields, now))
        return batches

    # --- a batch from another node --------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """Deliver another node's batch here, and queue the answers it asks for."""
        sender, fields, texts = wire.decode(payload)
        local = self.local
        i, offset, end = 0, 0, len(fields)
        while i < end:
            kind = fields[i]
            if kind == "m":
                my_id, peer_id, reply, seq = fields[i + 1], fields[i + 2], fields[i + 4], fields[i + 5]
                length = int(fields[i + 6])
                text = texts[offset : offset + length]
                offset += length
                i += 7
                if i < end and fields[i] == "+":
                    # A run of messages from one socket: their sockets are found once.
                    run = [text]
                    while i < end and fields[i] == "+":
                        length = int(fields[i + 1])
                        run.append(texts[offset : offset + length])
                        offset += length
                        i += 2
                    delivered = local.deliver_all(my_id, peer_id, run)
                    count = len(run)
                else:
                    delivered = local.deliver(my_id, peer_id, text)
                    count = 1
                if reply != wire.NO_REPLY:
                    if reply == wire.REPLY_ALWAYS:
                        self.batch(sender).result(seq, delivered)
                    elif not delivered:
                        batch = self.batch(sender)
                        for _ in range(count):  # the sender's node counts and notifies per message
                            batch.none_delivered(my_id, peer_id)
                continue
            if kind == "n":
                self.stale += 1
                self.unavailable(fields[i + 1], fields[i + 2])
            elif kind == "r":
                self.answered(fields[i + 1], int(fields[i + 2]))
            elif kind == "u":
                local.notify(fields[i + 1], fields[i + 2], PEER_UNAVAILABLE_NOTICE)
            elif kind == "a":
                self.acked(fields[i + 1])
            elif kind == "R":
                name, from_id, to, length = fields[i + 1], fields[i + 2], fields[i + 3], int(fields[i + 6])
                text = texts[offset : offset + length]
                offset += length
                if not self.rooms.deliver(name, from_id, to, text) and fields[i + 5] == "1":
                    self.batch(sender).room_unavailable(name, from_id, fields[i + 4], to)
            elif kind == "Q":
                self.rooms.unavailable(fields[i + 1], fields[i + 2], fields[i + 3], fields[i + 4])
            elif kind == "P":
                self.rooms.pair(sender, fields[i + 1], fields[i + 2], int(fields[i + 3]), int(fields[i + 4]))
            elif kind == "S":
                self.liveness.handled(sender, fields[i + 1])
            elif kind == "K":
                self.liveness.receipt(sender, int(fields[i + 1]))
            i += 1 + wire.FIELDS[kind]

    def answered(self, seq: str, delivered: int) -> None:
        pending = self.pending.get(seq)
        if pending is None:
            return
        if delivered:
            del self.pending[seq]
            return
        pending.waiting -= 1
        if pending.waiting <= 0:
            del self.pending[seq]
            self.stale += 1
            self.unavailable(pending.my_id, pending.peer_id)

    def unreachable(self, batch: wire.Batch) -> None:
        """A batch that reached no node: answer for it what its node would have (unless its
        node was counted down meanwhile, and it was answered then)."""
        if batch.number and not self.liveness.settle(batch.node, batch.number):
            return
        self.answer_for(batch.fields)

    def answer_for(self, fields: list[str]) -> int:
        """What the senders of a batch that was not taken (its fields) wait for; answers how
        many messages that was."""
        found = wire.waiting(fields)
        for waited in found:
            if waited[0] == "R":
                _, name, from_id, session_id, to = waited
                self.rooms.unavailable(name, from_id, session_id, to)
            elif waited[0] == wire.REPLY_ALWAYS:
                self.answered(waited[3], 0)
            else:
                self.unavailable(waited[1], waited[2])
        return len(found)

    def lose(self, batches: Iterable[wire.Batch]) -> None:
        """Batches that could not be published: their messages' cross-node part is lost."""
        for batch in batches:
            self.backplane_errors += batch.messages
            self.unreachable(batch)

    # --- liveness (routing/liveness.py) ---------------------------------------------------

    def tick(self, now: float) -> None:
        """Every Timing.tick: receipts due go out, nodes that gave none (or fell silent) go
        down, an outbox that could not leave in time is answered for."""
        liveness = self.liveness
        if now - self._last_tick > self.timing.wait and self._last_tick:
            liveness.resumed(now)  # this node was not running: its backlog is not read yet
        self._last_tick = now
        for node, number in list(liveness.receipts_due.items()):
            self.batch(node).receipt(number)
        liveness.receipts_due.clear()
        liveness.check(now)
        if self.batches and now - self.batched_at > self.timing.wait:
            # The publisher is stuck on Redis (a link that swallows packets): answer now.
            batches, self.batches = self.batches, {}
            self.queued = 0
            self.lose(batches.values())
        self.expire(now)

    def unanswered(self) -> bool:
        """Something of ours has yet to leave or to be receipted, or a receipt we owe is due."""
        liveness = self.liveness
        return bool(self.batches or liveness.receipts_due) or any(liveness.outstanding.values())

    def give_up(self) -> None:
        """Leaving: the batches still without a receipt are answered now (their senders told)."""
        self._answer_unreceipted(self.liveness.give_up())

    def beat(self, node: str, deaf: bool) -> None:
        self.liveness.beat(node, deaf, self.clock())

    def _lost(self, node: str, outstanding: list[list[str]]) -> None:
        """``node`` is counted down: what it did not receipt is answered, and its room members
        leave for the members here (its directory entries and pairs are kept, for its return)."""
        self._answer_unreceipted(outstanding)
        self.rooms.node_changed(node)

    def _answer_unreceipted(self, outstanding: list[list[str]]) -> None:
        for fields in outstanding:
            self.unreceipted += self.answer_for(fields)

    def _back(self, node: str) -> None:
        """``node`` is heard again: its sockets are reachable, its room members back."""
        self.rooms.node_changed(node)

    def expire(self, now: float) -> None:
        """A destination that never answered (frozen): count its messages delivered."""
        for seq in [seq for seq, pending in self.pending.items() if pending.deadline < now]:
            del self.pending[seq]

    # --- the directory's events -----------------------------------------------------------

    def event(self, payload: bytes) -> None:
        """A join or leave event on an id's channel: our own joins count as acknowledged by
        us; another node's join on a mirrored id is applied and acknowledged to that node."""
        event = payload.decode("utf-8").split(wire.SEP)
        kind, node, session_id = event[0], event[1], event[3]
        if node == self.node:
            if kind == "j":
                self.acked(session_id)  # we hear our own join as the others do
            return
        if self.mirror.event(event) and kind == "j":
            self.batch(node).ack(session_id)

    def acked(self, session_id: str) -> None:
        acks = self.joins.get(session_id)
        if acks is not None:
            acks.heard += 1
            acks.check()

    def forget_node(self, node: str) -> None:
        for fields in self.liveness.forget(node):
            self.answer_for(fields)
        self.directory.forget_node(node)
        self.rooms.forget_node(node)
