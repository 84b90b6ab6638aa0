#!/usr/bin/env python3
"""A Python peer for webrtc_app: joins a call through /wscall like a page does (aiortc), or
a room through /wsroom like the room page does.

It speaks the pages' protocol (docs/protocol.md), so bots, recorders and tests can call a
browser or each other:

    python webrtc_client.py ws://127.0.0.1:8888 --id bot --peer alice
    python webrtc_client.py ws://127.0.0.1:8888 --id bot --room standup

It sends a test video track (the eight colour bars, scrolling), counts the frames it receives
(recording them too with --record FILE), and answers every chat line on the ``chat`` data channel with
"echo: <text>" (but never an echo). Requirements: ``pip install -r peer-requirements.txt``.

It reconnects the signaling socket with the pages' policy (jittered exponential backoff, longer
after 1013 SERVER-FULL or an HTTP 503's Retry-After) and stops on 4400/4403/4429. aiortc cannot
restart ICE, so when a call's path breaks (the peer sends an ICE-restart offer, or the
connection fails) it replaces the connection with a new one, as the pages' Restart call does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import inspect
import json
import logging
import random
import re
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

log = logging.getLogger("webrtc_client")

ChatReply = Callable[[str], "str | None | Awaitable[str | None]"]
OnVideo = Callable[[MediaStreamTrack], None]

# Reconnection policy: the same numbers as static/js/backoff.js (a test checks they agree).
RECONNECT_BASE = 1.0  # the first retry waits up to this long (seconds)
RECONNECT_CAP = 30.0  # the random part never exceeds this
RECONNECT_FLOOR = 0.25  # the least wait
RECONNECT_SERVER_FULL = 5.0  # the least wait after 1013 SERVER-FULL (or a 503 without Retry-After)
RECONNECT_STABLE = 10.0  # a socket open this long was a success: the next drop starts over
RETRY_AFTER_MAX = 600.0  # a longer Retry-After is taken as this
TRY_AGAIN_LATER = 1013
# Refusals that retrying cannot fix (docs/protocol.md), as the pages stop on them too.
FINAL_CLOSE_CODES = {4400: "BAD-REQUEST", 4401: "TOKEN-INVALID", 4403: "FORBIDDEN", 4409: "ROOM-FULL", 4429: "TOO-MANY-SOCKETS"}
TOKEN_CODE, TOKEN_EXPIRED = 4401, "TOKEN-EXPIRED"
# Renewed tokens in a row the server still called expired (a backend whose clock is behind).
MAX_TOKEN_RENEWALS = 2
# How long a recovery waits for the signaling socket to come back before it goes on anyway.
REOPEN_TIMEOUT = 15.0


def reconnect_delay(attempt: int, floor: float = RECONNECT_FLOOR, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnection number ``attempt`` (0 for the first retry).

    "Full jitter": ``floor`` plus a random part in [0, min(cap, base * 2**attempt)], so that
    clients dropped together do not come back together.
    """
    ceiling = min(RECONNECT_CAP, RECONNECT_BASE * 2 ** min(max(0, attempt), 30))
    return floor + rand() * ceiling


def retry_after(error: InvalidStatus) -> float | None:
    """The wait a refused handshake asks for (``Retry-After``: seconds or an HTTP date), if any."""
    value = error.response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


#: Where a client gets a fresh join token when its own expired: called with no argument, it
#: answers the token (or a coroutine that does); what it raises ends the client.
TokenRenewal = Callable[[], "str | Awaitable[str]"]


class SignalingRefused(ValueError):
    """The server refused this socket for good (4400 BAD-REQUEST, 4401 TOKEN-*, 4403 FORBIDDEN, 4429)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused the socket: {code} {reason or FINAL_CLOSE_CODES[code]}")
        self.code, self.reason = code, reason


ECHO_PREFIX = "echo: "


def echo_reply(text: str) -> str | None:
    """The default chat behaviour: answer every line, except echoes (two bots would loop)."""
    return None if text.startswith(ECHO_PREFIX) else ECHO_PREFIX + text


def allow_loopback_candidates() -> None:
    """Let aioice offer 127.0.0.1 as a host candidate.

    aioice leaves loopback out of its host addresses, so on a machine whose only interface is
    loopback (a CI container) it would gather no candidate at all. Chromium started with
    --allow-loopback-in-peer-connection gathers loopback candidates too, so both can meet.
    """
    original = aioice.ice.get_host_addresses
    if getattr(original, "with_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback.with_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


#: The eight bars of the classic test card at 75%: white, yellow, cyan, green, magenta, red,
#: blue, black, as (Y, U, V) in BT.601's video range.
BARS = (
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
)


class ColourBars(VideoStreamTrack):
    """A test pattern: the eight colour bars, scrolling sideways, 320x240 at 30 fps."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0
        # One period of the bars across the picture, twice over, so that a scrolled row is a slice.
        bar = max(2, width // len(BARS)) // 2 * 2
        self._luma = bytes(BARS[(x // bar) % len(BARS)][0] for x in range(2 * width))
        self._u = bytes(BARS[(2 * x // bar) % len(BARS)][1] for x in range(width))
        self._v = bytes(BARS[(2 * x // bar) % len(BARS)][2] for x in range(width))
        self._period = bar * len(BARS)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=self.width, height=self.height, format="yuv420p")
        shift = (self.count * 4) % self._period
        half = shift // 2
        frame.planes[0].update(self._luma[shift : shift + self.width] * self.height)
        frame.planes[1].update(self._u[half : half + self.width // 2] * (self.height // 2))
        frame.planes[2].update(self._v[half : half + self.width // 2] * (self.height // 2))
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class CountingTrack(MediaStreamTrack):
    """Hands on the frames of ``source`` (to a recorder), counting them as they pass."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, count: Callable[[], None]) -> None:
        super().__init__()
        self.source = source
        self.count = count

    async def recv(self) -> Any:
        frame = await self.source.recv()
        self.count()
        return frame


class SignalingClient:
    """A signaling socket that stays open until ``stop()``, reconnecting with the pages' policy.

    Subclasses say what to do once it is open (``_on_open``) and with each text frame
    (``_on_frame``). ``signaling_open`` is set while a socket is open; ``notices`` collects the
    server's SERVER_NOTICE texts.
    """

    def __init__(
        self, url: str, my_id: str, loopback: bool, token: str | None = None, renew_token: TokenRenewal | None = None
    ) -> None:
        self.base_url = url
        #: The join token the socket carries (``token=``), and where a fresh one comes from
        #: when the server says it expired (None: the client stops with SignalingRefused).
        self.token = token
        self.renew_token = renew_token
        self.my_id = my_id
        self.session = uuid.uuid4().hex
        self.ws: ClientConnection | None = None
        self.stopped = asyncio.Event()
        self.signaling_open = asyncio.Event()
        self.notices: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reopen_now = False
        if loopback:
            allow_loopback_candidates()

    @property
    def url(self) -> str:
        """The socket's URL, with the current join token."""
        return f"{self.base_url}&{urlencode({'token': self.token})}" if self.token else self.base_url

    async def _renewed(self) -> bool:
        """Ask ``renew_token`` for a fresh token; answers whether one came."""
        if self.renew_token is None:
            return False
        token = self.renew_token()
        if inspect.isawaitable(token):
            token = await token
        if not token:
            return False
        self.token = str(token)
        return True

    async def _on_open(self) -> None:
        """The socket is open (again)."""

    async def _on_frame(self, frame: str) -> None:
        raise NotImplementedError

    def _read(self, frame: str) -> dict[str, Any] | None:
        """A frame's JSON object, or None for what is not one and for a SERVER_NOTICE (kept in ``notices``)."""
        try:
            message = json.loads(frame)
        except json.JSONDecodeError:
            return None
        if not isinstance(message, dict):
            return None
        if message.get("msg_type") == "SERVER_NOTICE":
            self.notices.append(str(message.get("message")))
            return None
        return message

    async def _send_json(self, message: dict[str, Any]) -> bool:
        """Send ``message`` with this client's session; False when no socket is open."""
        if self.ws is None:
            return False
        try:
            await self.ws.send(json.dumps({**message, "session": self.session}))
        except ConnectionClosed:
            return False
        return True

    async def run(self) -> None:
        """Stay connected to the server until stop(), reconnecting after a drop.

        Raises SignalingRefused when the server refuses the socket for good.
        """
        attempt = renewals = 0
        while not self.stopped.is_set():
            floor, opened_at, reason = RECONNECT_FLOOR, 0.0, ""
            try:
                async with connect(self.url, open_timeout=10) as ws:
                    self.ws, opened_at = ws, time.monotonic()
                    self.signaling_open.set()
                    await self._on_open()
                    async for frame in ws:
                        if isinstance(frame, str):
                            await self._on_frame(frame)
                code, reason = ws.close_code, ws.close_reason or ""
                why = f"closed {code} {reason}".strip()
            except ConnectionClosed as error:
                code, reason = (error.rcvd.code, error.rcvd.reason) if error.rcvd else (None, "")
                why = str(error)
            except InvalidStatus as error:
                code, why = None, str(error)
                if error.response.status_code == 503:  # the server is at its limit: wait as told
                    floor = retry_after(error) or RECONNECT_SERVER_FULL
            except (TimeoutError, OSError) as error:
                code, why = None, str(error) or type(error).__name__
            finally:
                self.ws = None
                self.signaling_open.clear()
            stable = opened_at and time.monotonic() - opened_at >= RECONNECT_STABLE
            if stable:
                attempt = renewals = 0
            if code == TOKEN_CODE and reason == TOKEN_EXPIRED and renewals < MAX_TOKEN_RENEWALS and await self._renewed():
                renewals += 1
                log.info("join token expired: reconnecting with a fresh one")
                continue
            if code in FINAL_CLOSE_CODES:
                raise SignalingRefused(code, reason)
            if code == TRY_AGAIN_LATER:
                floor = RECONNECT_SERVER_FULL
            if self._reopen_now:  # we dropped it ourselves (a recovery): come back at once
                self._reopen_now, delay = False, 0.0
            else:
                delay, attempt = reconnect_delay(attempt, floor), attempt + 1
            if not self.stopped.is_set():
                log.info("signaling lost (%s); reconnecting in %.1f s", why, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), delay)

    async def _reopen_signaling(self) -> None:
        """Drop the signaling socket and wait (bounded) for a new one.

        After a network change the old socket may be dead without knowing it (TCP can take
        minutes to tell): a recovery must not send its offer into it.
        """
        ws = self.ws
        if ws is not None:
            self._reopen_now = True
            ws.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wait_reopened(ws), REOPEN_TIMEOUT)

    async def _wait_reopened(self, old: ClientConnection | None) -> None:
        while self.ws is None or self.ws is old:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """End the connections (``_end``), close the socket, and stop what they left running."""
        self.stopped.set()
        await self._end()
        if self.ws is not None:
            await self.ws.close()
        await self._cancel_tasks()

    async def _end(self) -> None:
        """What a subclass says and closes before the socket closes."""

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        """End what the calls left running (a track's reader, a chat reply), not later on a closed loop."""
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def media_connection(ice_servers: list[dict[str, Any]], on_video: OnVideo) -> tuple[RTCPeerConnection, Any]:
    """A connection as the pages make one: the colour bars out, the far side's audio and video
    in (``on_video`` gets its video track), and the negotiated "chat" data channel."""
    pc = RTCPeerConnection(RTCConfiguration([RTCIceServer(**server) for server in ice_servers]))
    pc.addTrack(ColourBars())
    pc.addTransceiver("audio", direction="recvonly")
    # The pages open the same negotiated channel: no in-band announcement needed.
    channel = pc.createDataChannel("chat", negotiated=True, id=0)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            on_video(track)

    return pc, channel


async def add_candidate(pc: RTCPeerConnection | None, candidate: dict[str, Any]) -> None:
    """Apply a page's trickled ``new-ice-candidate`` (``{candidate, sdpMid, sdpMLineIndex}``)."""
    text = candidate.get("candidate") or ""
    if pc is None or not text or pc.remoteDescription is None:
        return
    parsed = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    with contextlib.suppress(ValueError):
        await pc.addIceCandidate(parsed)


async def chat_answer(reply: ChatReply | None, text: str) -> str | None:
    """What ``reply`` answers to a chat line (a function or a coroutine function), or None."""
    answer = reply(text) if reply is not None else None
    if isinstance(answer, Awaitable):
        answer = await answer
    return answer or None


async def count_frames(track: MediaStreamTrack, count: Callable[[], None]) -> None:
    """Read ``track`` to its end, calling ``count`` for each frame."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
            count()


class PythonPeer(SignalingClient):
    """One side of a call, driven through the webrtc_app signaling socket.

    ``await peer.run()`` connects (and reconnects) until ``peer.stop()``. Progress is visible
    through ``connected`` (an asyncio.Event set when media flows both ways is possible),
    ``frames_received``, ``chat_received`` and ``notices``.
    """

    def __init__(
        self,
        server: str,
        my_id: str,
        peer_id: str,
        *,
        route: str = "/wscall",
        ice_servers: list[dict[str, Any]] | None = None,
        reply: ChatReply | None = echo_reply,
        record: str | None = None,
        loopback: bool = True,
        token: str | None = None,
        renew_token: TokenRenewal | None = None,
    ) -> None:
        url = f"{server.rstrip('/')}{route}?{urlencode({'id': my_id, 'peer_id': peer_id})}"
        super().__init__(url, my_id, loopback, token, renew_token)
        self.peer_id = peer_id
        self.ice_servers = ice_servers or []
        self.reply = reply
        self.record = record
        self.polite = my_id > peer_id  # the same rule as the pages
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.recorder: MediaRecorder | None = None
        self.connected = asyncio.Event()
        self.frames_received = 0
        self.recoveries = 0  # connections replaced after the path broke
        self.chat_received: list[str] = []
        self._making_offer = False
        self._peer_session: str | None = None
        self._started_by_us = False  # the current call came from our start-call (restart)

    async def _on_open(self) -> None:
        await self._send({"type": "username", "date": _now_ms()})

    async def _end(self) -> None:
        # Say goodbye, as a page does when its tab closes: the peer ends its call at once.
        await self._send({"type": "hang-up", "reason": "left", "date": _now_ms()})
        await self._close_call()

    async def _send(self, message: dict[str, Any]) -> bool:
        return await self._send_json({**message, "name": self.my_id, "target": self.peer_id})

    async def _on_frame(self, frame: str) -> None:
        message = self._read(frame)
        if message is None:
            return
        if message.get("target") != self.my_id or message.get("name") != self.peer_id:
            return
        kind = message.get("type")
        session = message.get("session")
        if kind == "username":
            # A page our call has not heard from (a new one, or our retry's offer went nowhere
            # while the peer was away): call it. The same page back on its socket: nothing to do.
            if not (self._peer_session is not None and self._peer_session == session and self._is_current(session)):
                await self._new_call(session)
                await self._offer()
        elif kind == "start-call":
            # Both sides restarted at once: the impolite one keeps its own new call.
            if not (self._started_by_us and not self.polite):
                await self._close_call()
        elif kind == "video-offer":
            await self._on_offer(message, session)
        elif kind == "video-answer":
            if self._is_current(session) and self.pc and self.pc.signalingState == "have-local-offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(**message["sdp"]))
        elif kind == "new-ice-candidate":
            await add_candidate(self.pc, message.get("candidate") or {})
        elif kind == "hang-up":
            # A page of the peer's that our call is not with (a tab that gave the call up) says nothing of ours.
            if self._peer_session is None or session is None or session == self._peer_session:
                await self._close_call()
                log.info("%s %s", self.peer_id, "left" if message.get("reason") == "left" else "hung up")
        elif kind == "message":
            await self._on_chat(message, on_channel=False)

    # --- the call -----------------------------------------------------------------------

    def _is_current(self, session: str | None) -> bool:
        if self.pc is None or self.pc.connectionState in ("failed", "closed"):
            return False
        if self._peer_session is None:
            self._peer_session = session
        return self._peer_session == session

    async def _new_call(self, peer_session: str | None) -> RTCPeerConnection:
        await self._close_call()
        pc, self.channel = media_connection(self.ice_servers, lambda track: self._spawn(self._consume(track)))
        self.pc, self._peer_session = pc, peer_session
        self.channel.on("message", lambda data: self._spawn(self._on_channel_message(data)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.info("connection %s", pc.connectionState)
            if pc.connectionState == "connected":
                self._started_by_us = False
                pc.was_connected = True  # type: ignore[attr-defined]
                self.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.connected.clear()
                if pc is self.pc and pc.connectionState == "failed" and getattr(pc, "was_connected", False):
                    self._spawn(self._recover("the connection failed", reopen=True))

        return pc

    async def _recover(self, why: str, reopen: bool) -> None:
        """Replace a call whose path broke by a new connection (aiortc cannot restart ICE)."""
        if self.stopped.is_set():
            return
        self.recoveries += 1
        log.info("recovering: %s; making a new connection", why)
        if reopen:
            await self._reopen_signaling()
        await self._restart_call()

    async def _restart_call(self) -> None:
        """What the pages' Restart call does: start-call, then a fresh offer."""
        await self._send({"type": "start-call", "date": _now_ms()})
        await self._new_call(None)
        self._started_by_us = True
        await self._offer()

    async def _offer(self) -> None:
        pc = self.pc
        if pc is None or pc.signalingState != "stable":
            return
        self._making_offer = True
        try:
            await pc.setLocalDescription(await pc.createOffer())
            # aiortc gathers every candidate before it answers: they travel in the SDP.
            await self._send({"type": "video-offer", "sdp": _description(pc)})
        finally:
            self._making_offer = False

    async def _on_offer(self, message: dict[str, Any], session: str | None) -> None:
        if self.pc is not None and self._is_current(session) and _is_ice_restart(self.pc, message["sdp"].get("sdp", "")):
            # The peer lost its path and restarts ICE, which aiortc cannot: a new connection.
            await self._recover("the peer restarts ICE", reopen=False)
            return
        collision = self.pc is not None and (self._making_offer or self.pc.signalingState != "stable")
        if collision and not self.polite:
            return  # the polite side gives way
        if collision or not self._is_current(session):
            # aiortc cannot roll back an offer: yield by starting a fresh connection instead.
            await self._new_call(session)
        pc = self.pc
        assert pc is not None
        await pc.setRemoteDescription(RTCSessionDescription(**message["sdp"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send({"type": "video-answer", "sdp": _description(pc)})

    async def _consume(self, track: MediaStreamTrack) -> None:
        if self.record:
            self.recorder = MediaRecorder(self.record)
            self.recorder.addTrack(CountingTrack(track, self._count_frame))
            await self.recorder.start()
            return
        await count_frames(track, self._count_frame)

    def _count_frame(self) -> None:
        self.frames_received += 1

    async def _close_call(self) -> None:
        pc, self.pc, self.channel = self.pc, None, None
        self.connected.clear()
        if self.recorder is not None:
            await self.recorder.stop()
            self.recorder = None
        if pc is not None:
            await pc.close()

    # --- chat ---------------------------------------------------------------------------

    async def send_chat(self, text: str, on_channel: bool = True) -> bool:
        """Send a chat line: on the data channel when open (and ``on_channel``), else through the server."""
        message = {"type": "message", "name": self.my_id, "target": self.peer_id, "text": text, "date": _now_ms()}
        if on_channel and self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(message))
            return True
        return await self._send(message)

    async def _on_channel_message(self, data: str | bytes) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(data)
            if isinstance(message, dict) and message.get("type") == "message":
                await self._on_chat(message, on_channel=True)
            elif isinstance(message, dict) and message.get("type") == "hang-up":  # the page closes
                await self._close_call()
                log.info("%s left", self.peer_id)

    async def _on_chat(self, message: dict[str, Any], on_channel: bool) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            return
        self.chat_received.append(text)
        answer = await chat_answer(self.reply, text)
        if answer:
            # The way the line came: a page sends through the server while its channel is not
            # open yet, and a message on a channel the far side has not opened may be lost.
            await self.send_chat(answer, on_channel=on_channel)


class RoomMember:
    """Another member of the bot's room, and the bot's connection with it."""

    def __init__(self, member_id: str) -> None:
        self.id = member_id
        self.pc: RTCPeerConnection | None = None
        self.session: str | None = None  # the page session the connection is with


class RoomPeer(SignalingClient):
    """A bot in a room (``/wsroom``, docs/protocol.md "Rooms"): one connection per other member,
    made as the room page makes them.

    It offers to every member it finds when it arrives (``members``) and answers a newcomer's
    offer (``joined``, then the offer); it sends each of them the colour bars, counts each one's
    frames (``frames_received[id]``) and answers the room's chat lines to everyone (``reply``).
    ``members`` holds the other ids present, in the order they joined; ``chat_received`` the
    lines heard, as (from, text).
    """

    def __init__(
        self,
        server: str,
        my_id: str,
        room: str,
        *,
        ice_servers: list[dict[str, Any]] | None = None,
        reply: ChatReply | None = echo_reply,
        loopback: bool = True,
        token: str | None = None,
        renew_token: TokenRenewal | None = None,
    ) -> None:
        url = f"{server.rstrip('/')}/wsroom?{urlencode({'id': my_id, 'room': room})}"
        super().__init__(url, my_id, loopback, token, renew_token)
        self.room = room
        self.ice_servers = ice_servers or []
        self.reply = reply
        self.members: dict[str, RoomMember] = {}
        self.frames_received: dict[str, int] = {}
        self.chat_received: list[tuple[str, str]] = []
        self.admitted = asyncio.Event()  # set once the server said who is here

    def connected(self) -> list[str]:
        """The members whose connection with the bot is up."""
        return [
            member.id for member in self.members.values() if member.pc is not None and member.pc.connectionState == "connected"
        ]

    async def _end(self) -> None:
        for member in list(self.members.values()):
            await self._close(member)
        # The socket closes next: the others hear "left".

    async def _on_frame(self, frame: str) -> None:
        message = self._read(frame)
        if message is None or message.get("msg_type") != "ROOM" or message.get("room") != self.room:
            return
        event, member_id = message.get("event"), message.get("id")
        if event == "members":
            # (Re)admitted: the others saw us leave and come back, so every connection starts
            # over, offered by us.
            ids = [id for id in message.get("members") or [] if isinstance(id, str)]
            for gone in set(self.members) - set(ids):
                await self._close(self.members.pop(gone))
            self.admitted.set()
            for id in ids:
                await self._offer(self.members.setdefault(id, RoomMember(id)))
        elif event == "joined" and isinstance(member_id, str):
            # A newcomer, or a member back: its offer follows.
            await self._close(self.members.setdefault(member_id, RoomMember(member_id)))
        elif event == "left" and member_id in self.members:
            await self._close(self.members.pop(member_id))
        elif event == "message":
            await self._on_message(message.get("from"), message.get("data"))

    async def _on_message(self, sender: Any, data: Any) -> None:
        member = self.members.get(sender) if isinstance(sender, str) else None
        if member is None or not isinstance(data, dict):
            return  # nobody we know of (our own other device's copies included), or not ours to read
        kind, session = data.get("type"), data.get("session")
        pc = member.pc
        if kind == "video-offer" and isinstance(data.get("sdp"), dict):
            await self._on_offer(member, data["sdp"], session)
        elif kind == "video-answer" and pc is not None and pc.signalingState == "have-local-offer":
            if member.session in (None, session):
                member.session = session
                await pc.setRemoteDescription(RTCSessionDescription(**data["sdp"]))
        elif kind == "new-ice-candidate" and member.session == session:
            await add_candidate(pc, data.get("candidate") or {})
        elif kind == "start-call":
            await self._close(member)  # the member starts over: its offer follows
        elif kind == "message" and isinstance(data.get("text"), str):
            await self._on_chat(member.id, data["text"])

    async def _on_offer(self, member: RoomMember, sdp: dict[str, Any], session: Any) -> None:
        pc = member.pc
        if pc is not None and member.session == session and _is_ice_restart(pc, sdp.get("sdp", "")):
            # The member lost its path and restarts ICE, which aiortc cannot: a new connection,
            # as the room page's renewal (start-call, then our offer).
            await self._offer(member)
            return
        collision = pc is not None and pc.signalingState != "stable"
        if collision and self.my_id < member.id:
            return  # the impolite side keeps its own offer
        if pc is None or collision or member.session not in (None, session) or pc.connectionState in ("failed", "closed"):
            pc = await self._connect(member)  # aiortc cannot roll back: a fresh connection answers
        member.session = session if isinstance(session, str) else None
        await pc.setRemoteDescription(RTCSessionDescription(**sdp))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send_json({"type": "video-answer", "sdp": _description(pc), "to": member.id})

    async def _connect(self, member: RoomMember) -> RTCPeerConnection:
        await self._close(member)
        pc, _channel = media_connection(
            self.ice_servers, lambda track: self._spawn(count_frames(track, lambda: self._count(member.id)))
        )
        member.pc = pc
        return pc

    async def _offer(self, member: RoomMember) -> None:
        """A new connection with ``member``: start-call (it ends the one it has with us, if any),
        then our offer."""
        await self._send_json({"type": "start-call", "to": member.id, "date": _now_ms()})
        pc = await self._connect(member)
        # aiortc gathers every candidate before it answers: they travel in the SDP.
        await pc.setLocalDescription(await pc.createOffer())
        await self._send_json({"type": "video-offer", "sdp": _description(pc), "to": member.id})

    def _count(self, member_id: str) -> None:
        self.frames_received[member_id] = self.frames_received.get(member_id, 0) + 1

    async def _close(self, member: RoomMember) -> None:
        pc, member.pc, member.session = member.pc, None, None
        if pc is not None:
            await pc.close()

    async def _on_chat(self, sender: str, text: str) -> None:
        self.chat_received.append((sender, text))
        answer = await chat_answer(self.reply, text)
        if answer:
            await self.send_chat(answer)

    async def send_chat(self, text: str) -> bool:
        """A chat line to everyone in the room."""
        return await self._send_json({"type": "message", "text": text, "date": _now_ms()})


def _ice_ufrags(sdp: str) -> set[str]:
    return set(re.findall(r"^a=ice-ufrag:(\S+)", sdp, re.M))


def _is_ice_restart(pc: RTCPeerConnection, offer_sdp: str) -> bool:
    """Whether an offer changes the ICE credentials of the connection it renegotiates."""
    current = pc.remoteDescription
    if current is None:
        return False
    before, after = _ice_ufrags(current.sdp), _ice_ufrags(offer_sdp)
    return bool(before and after and before != after)


def _description(pc: RTCPeerConnection) -> dict[str, str]:
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


def _now_ms() -> int:
    return int(time.time() * 1000)


def fetch_ice_servers(server: str, token: str, ice_url: str = "/ice_servers", my_id: str = "") -> list[dict[str, Any]]:
    """POST ``token`` to the server's ICE endpoint, as a page does (``my_id`` names us in TURN credentials)."""
    http = server.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    query = f"?{urlencode({'id': my_id})}" if my_id else ""
    request = urllib.request.Request(f"{http}{ice_url}{query}", data=token.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _report(peer: PythonPeer | RoomPeer) -> tuple[tuple[Any, ...], str]:
    """The status line for ``peer``, and what it depends on (a new line whenever that changes)."""
    signaling = "open" if peer.signaling_open.is_set() else "closed"
    if isinstance(peer, RoomPeer):
        members, connected = sorted(peer.members), sorted(peer.connected())
        frames = ",".join(f"{id}:{peer.frames_received.get(id, 0)}" for id in members) or "-"
        state: tuple[Any, ...] = (signaling, tuple(members), tuple(connected), len(peer.chat_received))
        line = (
            f"signaling={signaling} room={peer.room} members={len(members)} connected={len(connected)} frames received={frames}"
        )
        return state, f"{line} chat lines={state[3]}"
    state = (signaling, peer.connected.is_set(), len(peer.chat_received), peer.recoveries)
    line = f"signaling={signaling} connected={state[1]} frames received={peer.frames_received} chat lines={state[2]}"
    return state, f"{line} recoveries={state[3]}"


async def _main(args: argparse.Namespace) -> None:
    # With join tokens on, the join token is what the ICE endpoint takes.
    ice_token = args.ice_token or args.token
    ice_servers = fetch_ice_servers(args.server, ice_token, my_id=args.id) if ice_token else []
    reply = None if args.no_echo else echo_reply
    peer: PythonPeer | RoomPeer
    if args.room:
        peer = RoomPeer(args.server, args.id, args.room, ice_servers=ice_servers, reply=reply, token=args.token)
    else:
        route = "/wsrecieve" if args.role == "receiver" else "/wscall"
        peer = PythonPeer(
            args.server,
            args.id,
            args.peer,
            route=route,
            ice_servers=ice_servers,
            reply=reply,
            record=args.record,
            token=args.token,
        )
    runner = asyncio.ensure_future(peer.run())
    last: tuple[Any, ...] | None = None
    reported = 0.0
    try:
        while not runner.done():
            # A line at once, whenever the call's state changes, and every report_every seconds.
            state, line = _report(peer)
            now = time.monotonic()
            if state != last or now - reported >= args.report_every:
                log.info("%s", line)
                last, reported = state, now
            await asyncio.wait([runner], timeout=0.25)
        runner.result()  # a refusal (SignalingRefused) ends the program with its message
    finally:
        await peer.stop()
        await runner


def main() -> None:
    parser = argparse.ArgumentParser(description="Join a webrtc_app call, or a room, from Python.")
    parser.add_argument("server", help="the server's websocket base, e.g. ws://127.0.0.1:8888")
    parser.add_argument("--id", required=True, help="this peer's id")
    whom = parser.add_mutually_exclusive_group(required=True)
    whom.add_argument("--peer", help="the id to call or to wait for")
    whom.add_argument("--room", help="join this room as a bot: video to every member, echo on the room's chat")
    parser.add_argument("--role", choices=("caller", "receiver"), default="caller", help="which socket route to use")
    parser.add_argument("--ice-token", help="token for the ICE endpoint (else no STUN/TURN; with --token, that one)")
    parser.add_argument(
        "--token", help="the join token the server asks for (JOIN_TOKEN_KEYS), e.g. from `webrtc_server.py token`"
    )
    parser.add_argument("--record", metavar="FILE", help="record the received video (e.g. call.mp4; calls only)")
    parser.add_argument("--no-echo", action="store_true", help="do not answer chat lines")
    parser.add_argument("--report-every", type=float, default=5.0, metavar="SECONDS", help="log a status line this often")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)  # one line per ICE check otherwise
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
