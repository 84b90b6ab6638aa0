"""The caller and receiver pages, and the start page with a form to pick ids."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from tornado.web import RequestHandler

from routing import check_ids, check_room

if TYPE_CHECKING:
    from handlers.app import WebRTCApplication

# The pages run only our own scripts and talk only to this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def content_security_policy(join_token_url: str) -> str:
    """The pages' policy; a JOIN_TOKEN_URL on another site may be fetched too."""
    parts = urlsplit(join_token_url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return CONTENT_SECURITY_POLICY.replace("connect-src 'self'", f"connect-src 'self' {parts.scheme}://{parts.netloc}")
    return CONTENT_SECURITY_POLICY


def script_json(value: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``.

    ``<`` and ``>`` become ``\\u003c``/``\\u003e``, so no value (an id such as
    ``</script><script>...`` or ``<!--``) can end or alter the element; JSON.parse gives
    the original text back.
    """
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def relative_url(path: str, **query: str) -> str:
    """``path?k=v&...`` in the keyword order, leaving out empty values."""
    pairs = [(key, value) for key, value in query.items() if value]
    return f"{path}?{urlencode(pairs)}" if pairs else path


class PageHandler(RequestHandler):
    """Base of the HTML pages: security headers."""

    application: WebRTCApplication

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", content_security_policy(self.application.config.JOIN_TOKEN_URL))
        self.set_header("X-Content-Type-Options", "nosniff")
        # Page URLs carry ids: do not leak them to other sites.
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Permissions-Policy", "camera=(self), microphone=(self)")

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["join_config"] = self.join_config()
        return namespace

    def join_config(self) -> dict[str, str]:
        """What the page's script needs of join tokens (head.html adds it to the page's config):
        the token of the page's own address (``token=``) and where to renew it; nothing when
        the server wants no tokens."""
        if self.application.join_tokens is None:
            return {}
        # The page holds a token now: no cache may keep it.
        self.set_header("Cache-Control", "no-store")
        return {"joinToken": self.get_argument("token", ""), "joinTokenUrl": self.application.config.JOIN_TOKEN_URL}

    def ice_pass(self) -> str:
        """The ICE token the page embeds; none with join tokens (the join token replaces it)."""
        return "" if self.application.join_tokens is not None else self.application.config.get_ice_pass()

    def render_start(self, problem: str | None = None, my_id: str = "", peer_id: str = "", room: str = "") -> None:
        """The start form, filled in with what the person asked for (and why it cannot open)."""
        if problem:
            self.set_status(400)
        max_members = self.application.config.MAX_ROOM_MEMBERS
        self.render("start.html", problem=problem, my_id=my_id, peer_id=peer_id, room=room, max_members=max_members)


class HomeHandler(PageHandler):
    """``/``: a form to start a call, wait for one or join a room (``/?room=R``: the room's
    invite, with the room filled in)."""

    def get(self) -> None:
        self.render_start(room=self.get_argument("room", ""))


class CallPageHandler(PageHandler):
    """Caller or receiver page; GET with a query and POST with the same form are identical."""

    #: Name of the websocket route the page connects to, and the page title.
    ws_url_name = ""
    title = ""

    def get(self) -> None:
        config = self.application.config
        my_id = self.get_argument("id", "")
        peer_id = self.get_argument("peer_id", "")
        problem = check_ids(my_id, peer_id, config.MAX_ID_LENGTH, self.application.id_pattern)
        if problem:
            self.render_start(problem, my_id, peer_id)
            return
        # base.html takes the original's arguments (tests/test_caller.py renders it with them).
        self.render(
            "base.html",
            ws_uri=relative_url(self.reverse_url(self.ws_url_name), id=my_id, peer_id=peer_id),
            my_id=my_id,
            peer_id=peer_id,
            title=self.title,
            ice_url=config.ICE_URL,
            ice_pass=self.ice_pass(),
            invite_url=self.invite_url(my_id, peer_id),
        )

    post = get

    def invite_url(self, my_id: str, peer_id: str) -> str:
        """The relative URL of the page the peer opens to join this call, or "" if there is none."""
        return ""


class CallerPageHandler(CallPageHandler):
    ws_url_name = "caller_ws"
    title = "Caller"

    def invite_url(self, my_id: str, peer_id: str) -> str:
        # The receiver page of this pair: the caller page shows it as a link and a QR code.
        return relative_url(self.reverse_url("reciever_page"), id=peer_id, peer_id=my_id) if peer_id else ""


class ReceiverPageHandler(CallPageHandler):
    ws_url_name = "reciever_ws"
    title = "Receiver"


class RoomPageHandler(PageHandler):
    """``/room?id=ME&room=ROOM``: the room page, a group call (GET and POST alike)."""

    def get(self) -> None:
        config = self.application.config
        my_id = self.get_argument("id", "")
        room = self.get_argument("room", "")
        problem = check_room(my_id, room, config.MAX_ID_LENGTH, self.application.id_pattern)
        if problem:
            self.render_start(problem, my_id, room=room)
            return
        page_config = {
            "wsUri": relative_url(self.reverse_url("room_ws"), id=my_id, room=room),
            "myId": my_id,
            "room": room,
            "maxMembers": config.MAX_ROOM_MEMBERS,
            "iceUrl": config.ICE_URL,
            "icePass": self.ice_pass(),
            # The start form with the room filled in: whoever opens it picks an id of their own.
            "inviteUrl": relative_url(self.reverse_url("home"), room=room),
        }
        self.render(
            "room.html",
            page_config=page_config,
            module="/static/js/room.js",
            my_id=my_id,
            room=room,
            title=f"Room {room}",
            invite_title="Invite to this room",
            invite_text="Send this link to whoever should join",
        )

    post = get
