"""The room socket's rules: ``/wsroom?id=ME&room=ROOM`` (docs/protocol.md, "Rooms").

:class:`RoomRules` is a signaling socket whose messages go to a room (routing/rooms.py)
instead of a conversation: the same admission (id rules, origin, join token, ``has_socket_pass``, socket
limits), the same limits on what it sends, the same heartbeat and ends. Its context is the
signaling one with the router's rooms in place of the router (``SocketContext.for_rooms``). A
transport mixes it in before its own class (handlers/leanws.py, handlers/streamws.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from handlers.signaling import SignalingSocket
from routing import check_room
from routing.rooms import ROOM_FULL, ROOM_FULL_CODE, ROSTER_UNAVAILABLE_CODE

if TYPE_CHECKING:
    from handlers.protocol.handshake import Request
    from handlers.signaling import SocketContext

log = logging.getLogger(__name__)


class RoomRules(SignalingSocket):
    """One room socket's rules (a transport provides the rest, as for SignalingSocket)."""

    if not TYPE_CHECKING:
        __slots__ = ()

    #: The attributes it keeps besides SignalingSocket's (the transport's class makes them slots).
    ROOM_ATTRIBUTES = ("room", "held")

    room: str
    #: What arrived for it before its roster (routing.rooms.Member.held).
    held: list[tuple[str, str]] | None

    def _init_socket(self, context: SocketContext, request: Request) -> None:
        super()._init_socket(context, request)
        self.room = ""
        self.held = None

    def _read_names(self) -> str | None:
        context = self.context
        self.id = self.get_query_argument("id", "") or ""
        self.room = self.get_query_argument("room", "") or ""
        return check_room(self.id, self.room, context.config.MAX_ID_LENGTH, context.id_pattern)

    def _scope(self) -> tuple[str | None, str | None]:
        return None, self.room

    async def _enter(self) -> None:
        """Join the room: once the roster answered, the socket has its ``members`` frame."""
        config = self.context.config
        verdict = self.context.router.rooms.join(self, config.MAX_ROOM_MEMBERS)
        if not isinstance(verdict, str):
            verdict = await verdict
        if verdict:
            self._leave()
            if verdict == ROOM_FULL:
                return self.refuse(ROOM_FULL_CODE, ROOM_FULL, f"room has {config.MAX_ROOM_MEMBERS} members")
            return self.refuse(ROSTER_UNAVAILABLE_CODE, verdict, "the rooms' roster did not answer")
        if not self.connected:
            return self._leave()
        self.ready = True
        log.debug("open %r in room %r (session %s)", self.id, self.room, self.session_id)
