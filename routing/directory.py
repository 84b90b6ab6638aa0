"""Which other node holds which socket: one node's mirror of the backplane's directory.

The directory itself lives in Redis (one hash per id: session -> node and peer_id). Each node
mirrors only the ids its own sockets involve (their ids and their peer_ids), kept current by
join and leave events, so routing a message is two dictionary lookups here, not a question
to Redis. Free of Redis and Tornado.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from routing.wire import SEP


class RemoteSockets:
    """The sockets of one id on other nodes."""

    __slots__ = ("sessions", "by_peer")

    def __init__(self) -> None:
        #: session id -> (node, peer_id)
        self.sessions: dict[str, tuple[str, str]] = {}
        #: peer_id -> node -> how many of this id's sockets there talk to peer_id
        self.by_peer: dict[str, dict[str, int]] = {}

    def add(self, session_id: str, node: str, peer_id: str) -> None:
        if session_id in self.sessions:
            return
        self.sessions[session_id] = (node, peer_id)
        nodes = self.by_peer.setdefault(peer_id, {})
        nodes[node] = nodes.get(node, 0) + 1

    def remove(self, session_id: str) -> None:
        found = self.sessions.pop(session_id, None)
        if found is None:
            return
        node, peer_id = found
        nodes = self.by_peer[peer_id]
        if nodes[node] > 1:
            nodes[node] -= 1
            return
        del nodes[node]
        if not nodes:
            del self.by_peer[peer_id]


class Directory:
    """The other nodes' sockets of the ids this node tracks."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._ids: dict[str, RemoteSockets] = {}

    def track(self, id: str) -> None:
        """Start mirroring ``id`` (its events are subscribed; a snapshot follows)."""
        self._ids.setdefault(id, RemoteSockets())

    def untrack(self, id: str) -> None:
        self._ids.pop(id, None)

    def tracked(self) -> list[str]:
        return list(self._ids)

    def load(self, id: str, entries: Mapping[str, str]) -> None:
        """Replace what is known of ``id`` by a snapshot of its Redis hash."""
        if id not in self._ids:
            return
        sockets = self._ids[id] = RemoteSockets()
        for session_id, value in entries.items():
            node, _, peer_id = value.partition(SEP)
            if node != self.node:
                sockets.add(session_id, node, peer_id)

    def add(self, id: str, session_id: str, node: str, peer_id: str) -> None:
        sockets = self._ids.get(id)
        if sockets is not None and node != self.node:
            sockets.add(session_id, node, peer_id)

    def remove(self, id: str, session_id: str) -> None:
        sockets = self._ids.get(id)
        if sockets is not None:
            sockets.remove(session_id)

    def forget_node(self, node: str) -> None:
        """Drop every socket of ``node`` (it said goodbye, or it was reaped)."""
        for sockets in self._ids.values():
            for session_id in [s for s, (n, _) in sockets.sessions.items() if n == node]:
                sockets.remove(session_id)

    def destinations(self, my_id: str, peer_id: str) -> tuple[Collection[str], Collection[str]]:
        """The other nodes a message from ``my_id`` to ``peer_id`` must reach: those holding a
        socket of ``peer_id`` that talks to ``my_id`` or to anyone (rule 1), and those holding
        another socket of ``my_id`` that talks to ``peer_id`` (rule 2)."""
        rule1: Collection[str] = ()
        peer = self._ids.get(peer_id)
        if peer is not None and peer.by_peer:
            to_me = peer.by_peer.get(my_id)
            to_anyone = peer.by_peer.get("")
            # Usually one of the two, and one node: no set is built then.
            rule1 = to_me.keys() | to_anyone.keys() if to_me and to_anyone else to_me or to_anyone or ()
        mine = self._ids.get(my_id)
        rule2: Collection[str] = mine.by_peer.get(peer_id, ()) if mine is not None else ()
        return rule1, rule2

    def nodes(self, my_id: str, peer_id: str) -> Iterable[str]:
        """The other nodes holding a socket of ``my_id`` that talks to ``peer_id``."""
        mine = self._ids.get(my_id)
        return mine.by_peer.get(peer_id, ()) if mine is not None else ()

    def count(self, id: str) -> int:
        """How many sockets ``id`` holds on other nodes (as far as this node knows)."""
        sockets = self._ids.get(id)
        return len(sockets.sessions) if sockets is not None else 0
