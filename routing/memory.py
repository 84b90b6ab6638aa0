"""The in-process registry: id -> peer_id -> the open sockets of that conversation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic

from routing import PEER_UNAVAILABLE_NOTICE, BackplaneFigures, S
from routing.rooms import LocalRoster, Rooms


class MemoryRouter(Generic[S]):
    """Routes messages between the sockets of one process.

    Sockets are indexed by their id and then by their peer_id, so each rule of the routing
    module is a dictionary lookup, whatever the number of sockets. Dicts are used as ordered
    sets: a message fans out to several devices in the order they connected.
    """

    #: No backplane: this process is the whole registry.
    node = ""

    def __init__(self) -> None:
        self._ids: dict[str, dict[str, dict[S, None]]] = {}
        self._sockets = 0
        #: Messages handed to relay(), and those that reached no peer socket.
        self.relayed = 0
        self.undelivered = 0
        #: Copies handed to peer sockets here (rule 1), whichever node the sender is on.
        self.delivered = 0
        #: The room sockets (routing/rooms.py), a world apart from the conversations'.
        self.rooms: Rooms[Any] = Rooms(self.node, LocalRoster())

    def join(self, session: S) -> None:
        conversations = self._ids.setdefault(session.id, {})
        group = conversations.setdefault(session.peer_id, {})
        if session not in group:
            group[session] = None
            self._sockets += 1

    def leave(self, session: S, linger: bool = False) -> None:
        conversations = self._ids.get(session.id)
        if conversations is None:
            return
        group = conversations.get(session.peer_id)
        if group is None or session not in group:
            return
        del group[session]
        self._sockets -= 1
        if not group:
            del conversations[session.peer_id]
            if not conversations:
                del self._ids[session.id]

    def release(self, session: S) -> None:
        """Nothing lingers in one process: its own sockets are all there is."""

    def relay(self, sender: S, text: str) -> int:
        """Deliver ``text``; answers how many of the peer's sockets received it."""
        self.relayed += 1
        delivered = self.fan_out(sender, text)
        if not delivered:
            self.undelivered += 1
            self.notify(sender.id, sender.peer_id, PEER_UNAVAILABLE_NOTICE)
        return delivered

    def fan_out(self, sender: S, text: str) -> int:
        """Rules 1 and 2 on this process for a message from ``sender``. Answers how many of
        the peer's sockets got it."""
        return self.deliver(sender.id, sender.peer_id, text, sender)

    def deliver(self, my_id: str, peer_id: str, text: str, sender: S | None = None) -> int:
        """Rules 1 and 2 on this process for a message from ``my_id`` to ``peer_id``: the
        peer's matching sockets, then ``my_id``'s sockets in the conversation other than
        ``sender`` (None when the message comes from another node). Answers how many of
        the peer's sockets got it."""
        delivered = 0
        peer = self._ids.get(peer_id)
        if peer:
            for key in (my_id, ""):
                group = peer.get(key)
                if group:
                    targets = tuple(group)  # a send may lead to a leave
                    for session in targets:
                        session.send(text)
                    delivered += len(targets)
            self.delivered += delivered
        mine = self._ids.get(my_id)
        group = mine.get(peer_id) if mine else None
        if group and (sender is None or len(group) > 1):
            for session in tuple(group):
                if session is not sender:
                    session.send(text)
        return delivered

    def deliver_all(self, my_id: str, peer_id: str, texts: list[str]) -> int:
        """``deliver`` for several messages in a row from another node's socket of ``my_id``:
        the sockets are found once, and each gets the texts in order. Answers how many of
        the peer's sockets got them."""
        delivered = 0
        peer = self._ids.get(peer_id)
        if peer:
            for key in (my_id, ""):
                group = peer.get(key)
                if group:
                    targets = tuple(group)  # a send may lead to a leave
                    for session in targets:
                        session.send_all(texts)
                    delivered += len(targets)
            self.delivered += delivered * len(texts)
        mine = self._ids.get(my_id)
        group = mine.get(peer_id) if mine else None
        if group:
            for session in tuple(group):
                session.send_all(texts)
        return delivered

    def group(self, id: str, peer_id: str) -> tuple[S, ...]:
        """The sockets of ``id`` whose peer_id is ``peer_id`` ("" for those with none)."""
        return tuple(self._ids.get(id, {}).get(peer_id, ()))

    def notify(self, id: str, peer_id: str, notice: str) -> None:
        """Send ``notice`` to every socket of ``id`` in its conversation with ``peer_id`` (rule 3)."""
        for session in self.group(id, peer_id):
            session.send(notice)

    def local_sessions(self) -> list[S]:
        return [s for conversations in self._ids.values() for group in conversations.values() for s in group]

    def count(self, id: str) -> int:
        return sum(len(group) for group in self._ids.get(id, {}).values())

    def sessions(self, id: str) -> list[S]:
        """The open sockets of ``id``, in the order they connected per conversation."""
        return [s for group in self._ids.get(id, {}).values() for s in group]

    async def connections(self, id: str) -> list[dict[str, str | None]]:
        return [{"peer": s.peer_id or None, "session": s.session_id} for s in self.sessions(id)]

    async def online_ids(self) -> dict[str, int]:
        return {id: sum(len(group) for group in conversations.values()) for id, conversations in self._ids.items()}

    @property
    def ids_online(self) -> int:
        return len(self._ids)

    @property
    def open_sockets(self) -> int:
        return self._sockets

    @property
    def busy(self) -> bool:
        return False

    def backplane(self) -> BackplaneFigures | None:
        return None

    async def share(self, name: str, value: str, adopt: Callable[[str], None]) -> bool:
        adopt(value)
        return True

    async def start(self) -> None:
        pass

    async def quiesce(self) -> None:
        pass

    async def stop(self) -> None:
        pass
