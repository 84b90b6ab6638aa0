"""Rooms: group calls of up to MAX_ROOM_MEMBERS ids, on one node or many. Free of Tornado and Redis.

A room socket (``/wsroom?id=ME&room=ROOM``, docs/protocol.md) is a :class:`Member`. This
module decides what its frames do and what it hears; the roster (who is in which room, in
what order, on which nodes) is kept by a :class:`Roster`: :class:`LocalRoster` in this
process, or the Redis scripts of routing/redis/rooms.py, atomically on the room's shard, so
that MAX_ROOM_MEMBERS holds across nodes.

Each node keeps, per room where it has sockets, a :class:`Room`: its own sockets, and a
mirror of the other nodes' *pairs* (an id present on a node). The mirror starts from the
roster a joining socket gets back and is kept current by the ``J`` (a pair added) and ``L``
(a pair removed) frames nodes send each other through their inboxes (routing/wire.py).
Every change carries the room's version from the roster, so a frame that arrives after a
newer roster is ignored. What members see follows from the mirror: an id is *present* while
it has a ready socket here or a pair elsewhere; ``joined`` and ``left`` go out when that
changes, so every node derives the same view whatever order its frames arrive in.

Order: a node announces an id's pair (``J``) before relaying its first message, and
withdraws it (``L``) after its last, through the same inbox as the messages; a socket whose
roster is on its way hears nothing until it has its ``members`` frame, and then the messages
that came meanwhile from ids it was told are present.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Collection, Container
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from routing import PEER_UNAVAILABLE, SERVER_NOTICE, server_notice
from routing.wire import Batch

ROOM = "ROOM"
#: Close code and reason of the id that would be one too many.
ROOM_FULL_CODE, ROOM_FULL = 4409, "ROOM-FULL"
#: Close code and reason when the roster cannot be reached (the backplane is down).
ROSTER_UNAVAILABLE_CODE, ROSTER_UNAVAILABLE = 1013, "ROOMS-UNAVAILABLE"
BAD_MESSAGE = "BAD-MESSAGE"
BAD_MESSAGE_NOTICE = server_notice(BAD_MESSAGE)
#: Most messages held for a socket whose roster is on its way (a few milliseconds' worth).
HELD_LIMIT = 1000

_MISSING = object()


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Python reads NaN and Infinity; browsers do not


_decode = json.JSONDecoder(parse_constant=_no_constant).decode
_quote = json.dumps


class Member(Protocol):
    """A room socket, as the rooms see it."""

    id: str
    room: str
    session_id: str
    #: What arrived for it before its roster (the sender's id and the frame); None once it
    #: has heard its ``members`` frame.
    held: list[tuple[str, str]] | None

    def send(self, text: str) -> None: ...

    def send_all(self, texts: list[str]) -> None: ...


M = TypeVar("M", bound=Member)


@dataclass(slots=True)
class Snapshot:
    """The room as its roster had it when a socket registered."""

    #: The room's version after the registration.
    version: int
    #: id -> the version at which it joined (the order of the ``members`` frame).
    members: dict[str, int]
    #: (id, node) -> the version at which the id got a socket on that node.
    pairs: dict[tuple[str, str], int]
    #: The version the roster started from (when Redis last lost it: a restart without
    #: persistence). A node's pair known from before then and missing here may simply not be
    #: registered again yet.
    epoch: int = 0


#: A registration refused: the room has MAX_ROOM_MEMBERS ids already.
FULL = "full"

#: What a roster answers for a join: the snapshot, FULL, or None (the roster did not answer).
JoinAnswer = Snapshot | str | None
#: What it answers for a leave: the version and the nodes still in the room, or None.
LeaveAnswer = tuple[int, list[str]] | None


class Roster(Protocol):
    """Who is in which room: one process' (LocalRoster), or the backplane's."""

    def join(self, room: str, id: str, node: str, limit: int) -> JoinAnswer | Awaitable[JoinAnswer]:
        """Add a socket of ``id`` on ``node`` (``limit`` ids at most; 0: none)."""

    def leave(self, room: str, id: str, node: str, done: Callable[[LeaveAnswer], None]) -> None:
        """``id`` has no socket left on ``node``; ``done`` gets the answer (at once or later)."""

    def settle(self, room: str, done: Callable[[JoinAnswer], None]) -> None:
        """Read ``room`` again once every live node has had the time to register its ids again
        (after the roster was lost); ``done`` gets the snapshot (or None)."""


class LocalRoster:
    """The roster of one process: what routing/redis/rooms.py's scripts do, in memory."""

    def __init__(self) -> None:
        self._rooms: dict[str, Snapshot] = {}
        self._versions: dict[str, int] = {}

    def join(self, room: str, id: str, node: str, limit: int) -> JoinAnswer:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = Snapshot(self._versions.get(room, 0), {}, {})
        if id not in state.members and 0 < limit <= len(state.members):
            return FULL
        state.version += 1
        state.members.setdefault(id, state.version)
        state.pairs.setdefault((id, node), state.version)
        return Snapshot(state.version, dict(state.members), dict(state.pairs))

    def leave(self, room: str, id: str, node: str, done: Callable[[LeaveAnswer], None]) -> None:
        state = self._rooms.get(room)
        if state is None or state.pairs.pop((id, node), None) is None:
            return done(None)
        state.version += 1
        if not any(other == id for other, _ in state.pairs):
            del state.members[id]
        if not state.pairs:
            self._versions[room] = state.version
            del self._rooms[room]
        done((state.version, sorted({n for _, n in state.pairs})))

    def settle(self, room: str, done: Callable[[JoinAnswer], None]) -> None:
        done(self.snapshot(room))  # never asked: this roster is never lost

    def snapshot(self, room: str) -> Snapshot | None:
        return self._rooms.get(room)


class Room(Generic[M]):
    """One room, as one node sees it."""

    __slots__ = (
        "name", "sockets", "ready", "present", "seq", "pairs", "remote", "nodes", "announced", "prefixes", "floor", "due",
        "settling",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        #: This node's sockets by id (those waiting for their roster too), in join order.
        self.sockets: dict[str, dict[M, None]] = {}
        #: How many of each id's sockets here have their roster.
        self.ready: dict[str, int] = {}
        #: The ids this node's members see present.
        self.present: dict[str, None] = {}
        #: id -> the version at which it joined (the order of ``members``).
        self.seq: dict[str, int] = {}
        #: The other nodes' pairs: (id, node) -> (version, present), removed ones kept so that
        #: an older frame or snapshot cannot bring them back.
        self.pairs: dict[tuple[str, str], tuple[int, bool]] = {}
        #: id -> the other nodes where it has sockets; node -> how many ids it holds.
        self.remote: dict[str, dict[str, None]] = {}
        self.nodes: dict[str, int] = {}
        #: This node's ids whose pair the other nodes were told of.
        self.announced: set[str] = set()
        #: id -> the start of its message frames.
        self.prefixes: dict[str, str] = {}
        #: The version of the newest snapshot loaded: a frame of that version or older says
        #: nothing the mirror does not know.
        self.floor = 0
        #: Snapshots asked for again (a rejoin after the backplane came back) not loaded yet.
        self.due = 0
        #: The roster is to be read again (Rooms.settled): pairs from before it was lost wait.
        self.settling = False

    def prefix(self, id: str) -> str:
        prefix = self.prefixes.get(id)
        if prefix is None:
            prefix = self.prefixes[id] = (
                f'{{"msg_type": "ROOM", "event": "message", "room": {_quote(self.name)}, "from": {_quote(id)}, "data": '
            )
        return prefix

    def set_pair(self, id: str, node: str, version: int, present: bool) -> bool:
        """Apply a pair's change unless something newer is known; True if it applied."""
        known = self.pairs.get((id, node))
        if known is not None and known[0] >= version:
            return False
        self.pairs[(id, node)] = (version, present)
        was = known is not None and known[1]
        if present and not was:
            self.remote.setdefault(id, {})[node] = None
            self.nodes[node] = self.nodes.get(node, 0) + 1
        elif was and not present:
            self._drop(id, node)
        return True

    def forget_node(self, node: str) -> list[str]:
        """Every pair of ``node`` removed (it is gone); answers the ids concerned."""
        ids = [id for (id, n), (_, present) in self.pairs.items() if n == node and present]
        for id in ids:
            version, _ = self.pairs[(id, node)]
            self.pairs[(id, node)] = (version, False)
            self._drop(id, node)
        return ids

    def prune(self, keep: set[str]) -> None:
        """Forget the removed pairs (but those of the nodes in ``keep``) once no snapshot is on
        its way: only an older snapshot could bring them back, and every one asked for from
        now on is newer than their removal. A room with a member here for days and visitors
        coming and going elsewhere keeps no trace of them."""
        if self.due or any(member.held is not None for group in self.sockets.values() for member in group):
            return
        for key, (_, present) in list(self.pairs.items()):
            if not present and key[1] not in keep:
                del self.pairs[key]

    def _drop(self, id: str, node: str) -> None:
        nodes = self.remote[id]
        del nodes[node]
        if not nodes:
            del self.remote[id]
        if self.nodes[node] > 1:
            self.nodes[node] -= 1
        else:
            del self.nodes[node]

    def members_frame(self, id: str) -> str:
        order = self.seq
        others = sorted((other for other in self.present if other != id), key=lambda other: order.get(other, 1 << 62))
        return json.dumps({"msg_type": ROOM, "event": "members", "room": self.name, "members": others})

    def event_frame(self, event: str, id: str) -> str:
        return json.dumps({"msg_type": ROOM, "event": event, "room": self.name, "id": id})


def peer_unavailable(id: str) -> str:
    """The notice for a message ``to`` an id that is not in the room."""
    return json.dumps({"msg_type": SERVER_NOTICE, "message": PEER_UNAVAILABLE, "id": id})


class Rooms(Generic[M]):
    """One node's rooms: its sockets, its mirror of the others, and the rules of room frames.

    ``outbox(node)`` is the batch of frames for another node (routing/nodes.py), or None on a
    process with no backplane (it then has no other node to write to).
    """

    def __init__(self, node: str, roster: Roster, outbox: Callable[[str], Batch] | None = None) -> None:
        self.node = node
        self.roster = roster
        self.outbox = outbox
        self.rooms: dict[str, Room[M]] = {}
        self._per_id: dict[str, int] = {}
        self.open_sockets = 0
        #: Room messages handed to relay(); copies handed to sockets here; frames refused.
        self.relayed = 0
        self.delivered = 0
        self.refused = 0
        #: Copies of room messages put in other nodes' batches (one per node and message).
        self.forwarded = 0
        #: Messages dropped for a socket whose roster took too long.
        self.held_dropped = 0
        #: Nodes gone (reaped or stopped) whose removed pairs are kept, until they come back.
        self.forgotten: set[str] = set()
        #: Nodes counted down for now (routing/liveness.py): their pairs are kept, but their
        #: ids are absent for the members here and nothing is sent there until they are back.
        self.down: Container[str] = frozenset()

    # --- sockets coming and going ---------------------------------------------------------

    def count(self, id: str) -> int:
        """How many room sockets ``id`` holds on this node (every room together)."""
        return self._per_id.get(id, 0)

    def members(self) -> list[M]:
        """Every room socket of this node."""
        return [m for room in self.rooms.values() for group in room.sockets.values() for m in group]

    def join(self, member: M, limit: int) -> str | Awaitable[str]:
        """Register ``member``; answers (at once, or once the roster answered) "" if it is in
        (it has its ``members`` frame), or the reason to close it: ROOM_FULL or ROSTER_UNAVAILABLE."""
        room = self.rooms.get(member.room)
        if room is None:
            room = self.rooms[member.room] = Room(member.room)
        member.held = []
        room.sockets.setdefault(member.id, {})[member] = None
        self._per_id[member.id] = self._per_id.get(member.id, 0) + 1
        self.open_sockets += 1
        answer = self.roster.join(member.room, member.id, self.node, limit)
        if inspect.isawaitable(answer):
            return self._later(member, answer)
        return self.admitted(member, answer)

    async def _later(self, member: M, answer: Awaitable[JoinAnswer]) -> str:
        return self.admitted(member, await answer)

    def admitted(self, member: M, answer: JoinAnswer) -> str:
        """The roster's answer for ``member``'s registration."""
        if answer is None:
            return ROSTER_UNAVAILABLE
        if answer == FULL:
            return ROOM_FULL
        assert isinstance(answer, Snapshot)
        room = self.rooms.get(member.room)
        if room is None:
            return ""  # every socket here left meanwhile: nothing to do
        self._load(room, answer)
        group = room.sockets.get(member.id)
        if group is None or member not in group:
            return ""  # it left meanwhile
        held, member.held = member.held or [], None
        room.prune(self.forgotten)
        room.ready[member.id] = room.ready.get(member.id, 0) + 1
        member.send(room.members_frame(member.id))
        present = room.present
        texts = [text for sender, text in held if sender in present]
        if texts:
            member.send_all(texts)
        self._changed(room, member.id)
        if member.id not in room.announced:
            room.announced.add(member.id)
            self._announce(room, member.id, answer)
        return ""

    def _announce(self, room: Room[M], id: str, answer: Snapshot) -> None:
        """Tell the other nodes in the room that ``id`` has a socket here (as of ``answer``)."""
        if self.outbox is not None:
            seq = answer.members.get(id, answer.version)
            for node in room.nodes:
                self.outbox(node).room_pair(room.name, id, answer.version, seq)

    def leave(self, member: M) -> None:
        """Forget a closed socket (idempotent)."""
        room = self.rooms.get(member.room)
        group = room.sockets.get(member.id) if room is not None else None
        if group is None or member not in group:
            return
        assert room is not None
        id = member.id
        del group[member]
        self.open_sockets -= 1
        if self._per_id[id] > 1:
            self._per_id[id] -= 1
        else:
            del self._per_id[id]
        if member.held is None:
            if room.ready[id] > 1:
                room.ready[id] -= 1
            else:
                del room.ready[id]
        member.held = None
        if not group:
            del room.sockets[id]
            room.announced.discard(id)
            name = room.name
            self.roster.leave(name, id, self.node, lambda answer: self._withdrawn(name, id, answer))
        self._changed(room, id)
        if not room.sockets:
            del self.rooms[room.name]

    def _withdrawn(self, name: str, id: str, answer: LeaveAnswer) -> None:
        """The roster removed ``id``'s pair here: the nodes still in the room hear it."""
        if answer is None or self.outbox is None:
            return
        version, nodes = answer
        for node in nodes:
            if node != self.node:
                self.outbox(node).room_pair(name, id, version, -1)

    # --- what members see -----------------------------------------------------------------

    def _changed(self, room: Room[M], id: str) -> None:
        """``id`` may have come or gone: tell the other ids' ready sockets here."""
        remote = room.remote.get(id)
        down = self.down
        now = id in room.ready or (remote is not None and (not down or any(node not in down for node in remote)))
        if now == (id in room.present):
            return
        if now:
            room.present[id] = None
            text = room.event_frame("joined", id)
        else:
            del room.present[id]
            room.prefixes.pop(id, None)
            room.seq.pop(id, None)  # if it comes back, it is last in the order
            text = room.event_frame("left", id)
        for other, group in room.sockets.items():
            if other != id:
                for member in tuple(group):
                    if member.held is None:
                        member.send(text)

    def _load(self, room: Room[M], snapshot: Snapshot, final: bool = False) -> None:
        """Bring the mirror up to a roster's snapshot (frames on their way are older or newer).

        A pair the mirror knew from before the roster's epoch (Redis lost the roster) and the
        snapshot lacks may belong to a node that has not registered its ids again yet: it stays
        until the roster is read again a while later (``final``), when it goes if still absent."""
        touched: set[str] = set()
        for (id, node), version in snapshot.pairs.items():
            if node != self.node and room.set_pair(id, node, version, True):
                touched.add(id)
        waiting = False
        for (id, node), (version, present) in list(room.pairs.items()):
            if present and version <= snapshot.version and (id, node) not in snapshot.pairs:
                if version < snapshot.epoch and not final:
                    waiting = True
                    continue
                room.set_pair(id, node, snapshot.version, False)  # removed before the snapshot
                touched.add(id)
        room.seq.update(snapshot.members)
        room.floor = max(room.floor, snapshot.version)
        for id in touched:
            self._changed(room, id)
        if waiting and not room.settling:
            room.settling = True
            room.due += 1
            name = room.name
            self.roster.settle(name, lambda answer: self.settled(name, answer))

    def settled(self, name: str, answer: JoinAnswer) -> None:
        """The roster read again after it was lost: the pairs still missing are gone."""
        room = self.rooms.get(name)
        if room is None or not room.settling:
            return
        room.settling = False
        room.due -= 1
        if isinstance(answer, Snapshot):
            self._load(room, answer, final=True)
        room.prune(self.forgotten)

    def rejoining(self, name: str) -> None:
        """A snapshot of room ``name`` is asked for again (``rejoined`` will have it)."""
        room = self.rooms.get(name)
        if room is not None:
            room.due += 1

    def rejoined(self, name: str, id: str, answer: JoinAnswer) -> None:
        """After the backplane came back: the roster has ``id``'s pair here again; the other
        nodes hear of it (they may have forgotten this node meanwhile)."""
        room = self.rooms.get(name)
        if room is not None and room.due:
            room.due -= 1
        if room is None or not isinstance(answer, Snapshot) or id not in room.ready:
            return
        self._load(room, answer)
        room.prune(self.forgotten)
        self._announce(room, id, answer)

    def pairs_here(self) -> set[tuple[str, str]]:
        """(room, id) of every id with a socket here."""
        return {(room.name, id) for room in self.rooms.values() for id in room.sockets}

    # --- another node's frames ------------------------------------------------------------

    def pair(self, sender: str, name: str, id: str, version: int, seq: int) -> None:
        """Node ``sender`` has (``seq`` >= 0: the id's join version) or no longer has (-1)
        a socket of ``id`` in room ``name``."""
        room = self.rooms.get(name)
        if room is None or sender == self.node or version <= room.floor:
            return
        if seq >= 0:
            self.forgotten.discard(sender)  # it is back (a frozen node woke up)
        if room.set_pair(id, sender, version, seq >= 0):
            if seq >= 0:
                room.seq.setdefault(id, seq)
            self._changed(room, id)
            if seq < 0:
                room.prune(self.forgotten)

    def node_changed(self, node: str) -> None:
        """``node`` was counted down, or is back: its ids leave, or come back, for the members
        here (``down`` already says which)."""
        for room in list(self.rooms.values()):
            if node in room.nodes:
                for id in [id for id, nodes in room.remote.items() if node in nodes]:
                    self._changed(room, id)

    def forget_node(self, node: str) -> None:
        """``node`` is gone (it said goodbye, or it was reaped): its members leave. Its removed
        pairs are kept (a snapshot may still list them until the reaper cleans the roster)."""
        self.forgotten.add(node)
        for room in list(self.rooms.values()):
            for id in room.forget_node(node):
                self._changed(room, id)

    def deliver(self, name: str, sender: str, to: str, text: str) -> bool:
        """A message from another node's socket of ``sender``: to ``to``'s sockets here and
        ``sender``'s (its other devices), or to every socket here when ``to`` is "". Answers
        False when ``to`` was named and none of its sockets is here."""
        room = self.rooms.get(name)
        if room is None:
            return not to
        if not to:
            for group in tuple(room.sockets.values()):
                self._hand(group, sender, text)
            return True
        targets = room.sockets.get(to)
        if targets:
            self._hand(targets, sender, text)
        mine = room.sockets.get(sender)
        if mine:
            self._hand(mine, sender, text)
        return bool(targets)

    def unavailable(self, name: str, sender: str, session_id: str, to: str) -> None:
        """Another node found none of ``to``'s sockets for a message from ``session_id``."""
        room = self.rooms.get(name)
        for member in room.sockets.get(sender, ()) if room is not None else ():
            if member.session_id == session_id:
                member.send(peer_unavailable(to))

    def _hand(self, group: dict[M, None], sender: str, text: str, skip: M | None = None) -> None:
        """``text`` to each socket of ``group`` but ``skip``; held for one whose roster is on its way."""
        for member in tuple(group):  # (a send may lead to a leave)
            if member is skip:
                continue
            held = member.held
            if held is None:
                member.send(text)
            elif len(held) < HELD_LIMIT:
                held.append((sender, text))
            else:
                self.held_dropped += 1
                continue
            self.delivered += 1

    # --- a frame from one of this node's sockets ------------------------------------------

    def relay(self, member: M, text: str) -> None:
        """A member's frame: a JSON object, to ``to``'s sockets or to every other member's,
        and to the sender's other sockets, here and on the nodes that hold them."""
        try:
            value = _decode(text)
        except ValueError:
            value = None
        to = value.get("to", _MISSING) if type(value) is dict else None
        if to is None or (to is not _MISSING and (type(to) is not str or to == member.id)):
            self.refused += 1
            member.send(BAD_MESSAGE_NOTICE)
            return
        room = self.rooms[member.room]
        self.relayed += 1
        id = member.id
        frame = f"{room.prefix(id)}{text}}}"
        outbox = self.outbox
        if to is _MISSING:
            for other, group in tuple(room.sockets.items()):
                self._hand(group, id, frame, member if other == id else None)
            if outbox is not None:
                nodes = [node for node in room.nodes if node not in self.down] if self.down else room.nodes
                for node in nodes:
                    outbox(node).room_message(room.name, id, "", member.session_id, False, frame)
                self.forwarded += len(nodes)
            return
        assert isinstance(to, str)
        if to not in room.present:
            member.send(peer_unavailable(to))
            return
        targets = room.sockets.get(to)
        if targets:
            self._hand(targets, id, frame)
        mine = room.sockets.get(id)
        if mine is not None and len(mine) > 1:
            self._hand(mine, id, frame, member)
        if outbox is not None:
            peers: Collection[str] = room.remote.get(to, {})
            own: Collection[str] | None = room.remote.get(id)
            if self.down:  # the nodes counted down (routing/liveness.py) are skipped until heard again
                peers = [node for node in peers if node not in self.down]
                own = [node for node in own or () if node not in self.down]
            ask = not targets and len(peers) == 1  # (several nodes: one of them has it)
            for node in peers:
                outbox(node).room_message(room.name, id, to, member.session_id, ask, frame)
                self.forwarded += 1
            for node in own or ():
                if node not in peers:
                    outbox(node).room_message(room.name, id, to, member.session_id, False, frame)
                    self.forwarded += 1
