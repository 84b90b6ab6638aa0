#!/usr/bin/env python3
"""A Python peer for webrtc_app: joins a call through /wscall like a page does (aiortc).

It speaks the pages' protocol (docs/protocol.md), so bots, recorders and tests can call a
browser or each other:

    python webrtc_client.py ws://127.0.0.1:8888 --id bot --peer alice

It sends a test video track (moving colour bars), counts the frames it receives (or records
them with --record FILE), and answers every chat line on the ``chat`` data channel with
"echo: <text>" (but never an echo). Requirements: ``pip install -r peer-requirements.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
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


class ColourBars(VideoStreamTrack):
    """A test pattern: vertical bars that scroll, 320x240 at 30 fps."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=self.width, height=self.height, format="yuv420p")
        shift = self.count * 4
        row = bytes(((x + shift) // 40 * 37) % 256 for x in range(self.width))
        frame.planes[0].update(row * self.height)
        chroma = bytes([128]) * (self.width // 2 * self.height // 2)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class PythonPeer:
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
    ) -> None:
        self.url = f"{server.rstrip('/')}{route}?{urlencode({'id': my_id, 'peer_id': peer_id})}"
        self.my_id, self.peer_id = my_id, peer_id
        self.ice_servers = ice_servers or []
        self.reply = reply
        self.record = record
        self.session = uuid.uuid4().hex
        self.polite = my_id > peer_id  # the same rule as the pages
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.ws: ClientConnection | None = None
        self.recorder: MediaRecorder | None = None
        self.connected = asyncio.Event()
        self.stopped = asyncio.Event()
        self.frames_received = 0
        self.chat_received: list[str] = []
        self.notices: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._making_offer = False
        self._peer_session: str | None = None
        if loopback:
            allow_loopback_candidates()

    # --- signaling ----------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected to the server until stop(), reconnecting after a drop."""
        delay = 0.5
        while not self.stopped.is_set():
            try:
                async with connect(self.url, open_timeout=10) as ws:
                    self.ws = ws
                    delay = 0.5
                    await self._send({"type": "username", "date": _now_ms()})
                    async for frame in ws:
                        if isinstance(frame, str):
                            await self._on_frame(frame)
            except (TimeoutError, OSError, ConnectionClosed, InvalidStatus) as error:
                if isinstance(error, ConnectionClosed) and error.rcvd and error.rcvd.code == 4400:
                    raise ValueError(f"the server refused the ids: {error.rcvd.reason}") from None
                log.info("signaling lost (%s); reconnecting in %.1f s", error, delay)
            finally:
                self.ws = None
            if not self.stopped.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), delay)
                delay = min(delay * 2, 10)

    async def stop(self) -> None:
        self.stopped.set()
        await self._close_call()
        if self.ws is not None:
            await self.ws.close()

    async def _send(self, message: dict[str, Any]) -> bool:
        if self.ws is None:
            return False
        full = {**message, "name": self.my_id, "target": self.peer_id, "session": self.session}
        try:
            await self.ws.send(json.dumps(full))
        except ConnectionClosed:
            return False
        return True

    async def _on_frame(self, frame: str) -> None:
        try:
            message = json.loads(frame)
        except json.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("msg_type") == "SERVER_NOTICE":
            self.notices.append(str(message.get("message")))
            return
        if message.get("target") != self.my_id or message.get("name") != self.peer_id:
            return
        kind = message.get("type")
        session = message.get("session")
        if kind == "username":
            if not self._is_current(session):
                await self._new_call(session)
                await self._offer()
        elif kind == "start-call":
            await self._close_call()
        elif kind == "video-offer":
            await self._on_offer(message, session)
        elif kind == "video-answer":
            if self._is_current(session) and self.pc and self.pc.signalingState == "have-local-offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(**message["sdp"]))
        elif kind == "new-ice-candidate":
            await self._on_candidate(message.get("candidate") or {})
        elif kind == "hang-up":
            await self._close_call()
        elif kind == "message":
            await self._on_chat(message)

    # --- the call -----------------------------------------------------------------------

    def _is_current(self, session: str | None) -> bool:
        if self.pc is None or self.pc.connectionState in ("failed", "closed"):
            return False
        if self._peer_session is None:
            self._peer_session = session
        return self._peer_session == session

    async def _new_call(self, peer_session: str | None) -> RTCPeerConnection:
        await self._close_call()
        config = RTCConfiguration([RTCIceServer(**server) for server in self.ice_servers])
        pc = RTCPeerConnection(config)
        self.pc, self._peer_session = pc, peer_session
        pc.addTrack(ColourBars())
        pc.addTransceiver("audio", direction="recvonly")
        # The pages open the same negotiated channel: no in-band announcement needed.
        self.channel = pc.createDataChannel("chat", negotiated=True, id=0)
        self.channel.on("message", lambda data: self._spawn(self._on_channel_message(data)))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._spawn(self._consume(track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.info("connection %s", pc.connectionState)
            if pc.connectionState == "connected":
                self.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.connected.clear()

        return pc

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

    async def _on_candidate(self, candidate: dict[str, Any]) -> None:
        text = candidate.get("candidate") or ""
        if self.pc is None or not text or self.pc.remoteDescription is None:
            return
        parsed = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        with contextlib.suppress(ValueError):
            await self.pc.addIceCandidate(parsed)

    async def _consume(self, track: MediaStreamTrack) -> None:
        if self.record:
            self.recorder = MediaRecorder(self.record)
            self.recorder.addTrack(track)
            await self.recorder.start()
            return
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
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

    async def send_chat(self, text: str) -> bool:
        """Send a chat line: on the data channel when open, else through the server."""
        message = {"type": "message", "name": self.my_id, "target": self.peer_id, "text": text, "date": _now_ms()}
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(message))
            return True
        return await self._send(message)

    async def _on_channel_message(self, data: str | bytes) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(data)
            if isinstance(message, dict) and message.get("type") == "message":
                await self._on_chat(message)

    async def _on_chat(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            return
        self.chat_received.append(text)
        if self.reply is not None:
            answer = self.reply(text)
            if asyncio.iscoroutine(answer) or isinstance(answer, asyncio.Future):
                answer = await answer
            if answer:
                await self.send_chat(answer)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _description(pc: RTCPeerConnection) -> dict[str, str]:
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


def _now_ms() -> int:
    return int(time.time() * 1000)


def fetch_ice_servers(server: str, token: str, ice_url: str = "/ice_servers") -> list[dict[str, Any]]:
    """POST ``token`` to the server's ICE endpoint, as a page does."""
    http = server.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    request = urllib.request.Request(f"{http}{ice_url}", data=token.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


async def _main(args: argparse.Namespace) -> None:
    ice_servers = fetch_ice_servers(args.server, args.ice_token) if args.ice_token else []
    peer = PythonPeer(
        args.server,
        args.id,
        args.peer,
        route="/wsrecieve" if args.role == "receiver" else "/wscall",
        ice_servers=ice_servers,
        reply=None if args.no_echo else echo_reply,
        record=args.record,
    )
    runner = asyncio.ensure_future(peer.run())
    try:
        while not runner.done():
            await asyncio.sleep(5)
            log.info(
                "connected=%s frames received=%d chat lines=%d",
                peer.connected.is_set(),
                peer.frames_received,
                len(peer.chat_received),
            )
    finally:
        await peer.stop()
        await runner


def main() -> None:
    parser = argparse.ArgumentParser(description="Join a webrtc_app call from Python.")
    parser.add_argument("server", help="the server's websocket base, e.g. ws://127.0.0.1:8888")
    parser.add_argument("--id", required=True, help="this peer's id")
    parser.add_argument("--peer", required=True, help="the id to call or to wait for")
    parser.add_argument("--role", choices=("caller", "receiver"), default="caller", help="which socket route to use")
    parser.add_argument("--ice-token", help="token for the ICE endpoint (else no STUN/TURN)")
    parser.add_argument("--record", metavar="FILE", help="record the received video (e.g. call.mp4)")
    parser.add_argument("--no-echo", action="store_true", help="do not answer chat lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
