"""Who receives a signaling message: webrtc_app's routing rules, free of Tornado.

The websocket handler is a thin adapter: it hands each open socket to a :class:`Router` as
a :class:`Session` and passes every text message to :meth:`Router.relay`. The router decides
who gets it (SPEC.md, "The signaling socket"):

1. every socket of the peer (B) whose own peer_id is the sender's id (A), or who connected
   with no peer_id;
2. every *other* socket of A whose peer_id is B (the sender's other devices);
3. if step 1 reached nobody, every socket of A whose peer_id is B, the sender included,
   gets the ``PEER-UNAVAILABLE`` server notice.

:class:`routing.memory.MemoryRouter` keeps the registry in this process;
:class:`routing.redis.RedisRouter` spans processes and machines through Redis with the same
interface and the same rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from routing.rooms import Rooms

SERVER_NOTICE = "SERVER_NOTICE"
PEER_UNAVAILABLE = "PEER-UNAVAILABLE"

#: Close code and reason for a socket opened with a missing or invalid id/peer_id.
BAD_REQUEST_CODE = 4400
BAD_REQUEST = "BAD-REQUEST"


def server_notice(message: str) -> str:
    """The text frame of a server notice, e.g. ``{"msg_type": "SERVER_NOTICE", "message": ...}``."""
    return json.dumps({"msg_type": SERVER_NOTICE, "message": message})


PEER_UNAVAILABLE_NOTICE = server_notice(PEER_UNAVAILABLE)


class Session(Protocol):
    """One open signaling socket, as the router sees it."""

    #: The socket's own id (never empty).
    id: str
    #: The id it talks to; "" when it connected without one (it then hears from anyone
    #: whose peer_id is its id).
    peer_id: str
    #: Unique name of this socket, shown by /connections.
    session_id: str

    def send(self, text: str) -> None:
        """Queue ``text`` for the socket. Must not raise if the socket is already closing,
        and must not call back into the router."""

    def send_all(self, texts: list[str]) -> None:
        """``send`` for each of ``texts``, in order (a run of messages from another node)."""


#: What a router holds: the sessions of one kind (the signaling sockets of an application).
S = TypeVar("S", bound=Session)


@dataclass
class BackplaneFigures:
    """A backplane's counters, for /metrics."""

    connected: bool
    #: Messages whose cross-node part was lost because Redis was unreachable or behind.
    errors: int
    #: Batches published to other nodes' inboxes.
    batches: int
    #: Messages a destination node found nobody for (the directory had not caught up).
    stale: int
    #: This node hears nothing from Redis (routing/liveness.py): not ready.
    cut_off: bool = False
    #: Other nodes counted unreachable now; counted so far.
    nodes_down: int = 0
    nodes_lost: int = 0
    #: Messages answered PEER-UNAVAILABLE because their node gave no receipt in time.
    unreceipted: int = 0
    #: Seconds the backplane took to converge after the last fault healed.
    convergence: float = 0.0


class Router(Protocol[S]):
    """The registry of open sockets and the delivery rules."""

    #: This process' name on a backplane ("" for a router without one).
    node: str
    #: The room sockets (``/wsroom``), a world apart: routing/rooms.py.
    rooms: Rooms[Any]

    @property
    def relayed(self) -> int:
        """Messages handed to relay()."""

    @property
    def undelivered(self) -> int:
        """Messages that reached no peer socket (rule 3)."""

    def join(self, session: S) -> Awaitable[bool] | None:
        """Register an open socket. May answer an awaitable that completes when the socket
        is reachable from every node (the handler awaits it before reading messages): True,
        or False if a cluster-wide limit refused it (the handler then closes it with 4429)."""

    def leave(self, session: S, linger: bool = False) -> None:
        """Forget a closed socket (idempotent). With ``linger``, what the router keeps to relay
        the socket's own messages (its mirror of the other nodes) stays until :meth:`release`:
        a socket the server closes for its shutdown still relays what its client sent before it
        saw the close."""

    def release(self, session: S) -> None:
        """Drop what ``leave(session, linger=True)`` kept (idempotent)."""

    def relay(self, sender: S, text: str) -> object:
        """Deliver ``text`` from ``sender`` by the rules above, in the order relay is called
        (what it answers is the router's own business: the handler ignores it)."""

    def local_sessions(self) -> list[S]:
        """Every socket registered by this process."""

    def backplane(self) -> BackplaneFigures | None:
        """The backplane's counters (None without one)."""

    def count(self, id: str) -> int:
        """How many sockets ``id`` holds on this process."""

    @property
    def open_sockets(self) -> int:
        """Sockets registered by this process."""

    @property
    def busy(self) -> bool:
        """The backplane is behind (its round trip slower than it can keep the bound with): a
        new socket, whose join is work for every node, is asked to come back later."""

    @property
    def ids_online(self) -> int:
        """Ids with at least one socket on this process."""

    async def connections(self, id: str) -> list[dict[str, str | None]]:
        """``[{"peer": peer_id or None, "session": session_id}]`` for every socket of ``id``."""

    async def online_ids(self) -> dict[str, int]:
        """Every id with a socket, on every node, and how many sockets it holds."""

    async def share(self, name: str, value: str, adopt: Callable[[str], None]) -> bool:
        """Agree with the other nodes on the value of ``name`` (the first node's): ``adopt``
        is called with it. Answers whether they agreed now (True on one process); if Redis
        is unreachable, ``value`` stays this node's own until Redis answers, and ``adopt`` is
        called then if the nodes had agreed on another value meanwhile."""

    async def start(self) -> None:
        """Prepare the router (connect to a backplane, ...)."""

    async def quiesce(self) -> None:
        """The server is about to close its sockets for its shutdown: stop taking part in the
        joins elsewhere (a node that is going away must not be one they wait for)."""

    async def stop(self) -> None:
        """Release what start() took."""


def check_ids(my_id: str, peer_id: str, max_length: int, pattern: re.Pattern[str] | None = None) -> str | None:
    """Why ``my_id``/``peer_id`` cannot open a socket or a page, or None if they can.

    Ids are printable text of at most ``max_length`` characters, matching ``pattern`` in
    full when one is given (an empty peer_id is always allowed).
    """
    if not my_id:
        return "missing id"
    if my_id == peer_id:
        return "id equals peer_id"
    return check_names((("id", my_id), ("peer_id", peer_id)), max_length, pattern)


def check_room(my_id: str, room: str, max_length: int, pattern: re.Pattern[str] | None = None) -> str | None:
    """Why ``my_id``/``room`` cannot open a room socket or the room page, or None if they can."""
    if not my_id:
        return "missing id"
    if not room:
        return "missing room"
    return check_names((("id", my_id), ("room", room)), max_length, pattern)


def check_names(named: tuple[tuple[str, str], ...], max_length: int, pattern: re.Pattern[str] | None) -> str | None:
    """Why one of the ``(name, value)`` pairs breaks the id rules (an empty value passes)."""
    for name, value in named:
        if len(value) > max_length:
            return f"{name} longer than {max_length} characters"
        if not value.isprintable():
            return f"{name} contains control characters"
        if pattern is not None and value and not pattern.fullmatch(value):
            return f"{name} has characters outside ID_PATTERN"
    return None


def page_of_ids(counts: dict[str, int], after: str, limit: int) -> dict[str, object]:
    """One page of the ids online, in order: ``{"ids": [{"id", "sockets"}], "next": cursor}``,
    the ids after ``after``; ``next`` is the cursor of the following page (None at the end)."""
    ids = sorted(id for id in counts if id > after)
    page = ids[:limit]
    return {
        "ids": [{"id": id, "sockets": counts[id]} for id in page],
        "next": page[-1] if len(ids) > limit else None,
    }
