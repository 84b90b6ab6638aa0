"""The signaling socket: ``/wscall?id=ME&peer_id=PEER`` (and its aliases)."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlsplit

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from routing import BAD_REQUEST, BAD_REQUEST_CODE, check_ids

log = logging.getLogger(__name__)

#: Close code and reason for a binary frame: the protocol is JSON text.
UNSUPPORTED_DATA_CODE = 1003
BINARY_UNSUPPORTED = "BINARY-UNSUPPORTED"
#: Close code and reason sent to every socket when the server stops.
GOING_AWAY_CODE = 1001
SERVER_SHUTDOWN = "SERVER-SHUTDOWN"


class SignalingHandler(WebSocketHandler):
    """One signaling socket: a :class:`routing.Session` handed to the app's router.

    The server never parses messages; it relays the text as is.
    """

    id = ""
    peer_id = ""
    session_id = ""
    _joined = False

    def check_origin(self, origin: str) -> bool:
        allowed = self.application.config.ALLOWED_ORIGINS  # type: ignore[attr-defined]
        if "*" in allowed or origin.lower() in (o.lower() for o in allowed):
            return True
        # Otherwise Tornado's rule: the Origin's host must be the one the browser asked.
        if super().check_origin(origin):
            return True
        log.info("signaling socket refused: origin %r not allowed", urlsplit(origin).netloc or origin)
        return False

    def get_compression_options(self) -> None:
        # Signaling messages are small; compression would cost more CPU than it saves.
        return None

    def open(self) -> None:
        config = self.application.config  # type: ignore[attr-defined]
        self.id = self.get_query_argument("id", "")
        self.peer_id = self.get_query_argument("peer_id", "")
        problem = check_ids(self.id, self.peer_id, config.MAX_ID_LENGTH)
        if problem:
            log.info("signaling socket refused (%s) from %s", problem, self.request.remote_ip)
            self.close(BAD_REQUEST_CODE, BAD_REQUEST)
            return
        self.session_id = uuid.uuid4().hex
        self.application.router.join(self)  # type: ignore[attr-defined]
        self._joined = True
        log.debug("open %r -> %r (session %s)", self.id, self.peer_id, self.session_id)

    def on_message(self, message: str | bytes) -> None:
        if not self._joined:
            return
        if isinstance(message, bytes):
            log.info("binary frame from %r refused", self.id)
            self.close(UNSUPPORTED_DATA_CODE, BINARY_UNSUPPORTED)
            return
        self.application.router.relay(self, message)  # type: ignore[attr-defined]

    def send(self, text: str) -> None:
        """Session.send: queue ``text``; a socket already closing just drops it."""
        try:
            self.write_message(text)
        except WebSocketClosedError:
            pass

    def on_close(self) -> None:
        if self._joined:
            self._joined = False
            self.application.router.leave(self)  # type: ignore[attr-defined]
            log.debug("closed %r (session %s)", self.id, self.session_id)
