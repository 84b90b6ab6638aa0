"""Shared helpers for the tests that run the app in this process on a real socket.

Kept under the original's name so the ported tests read as they did; the original's
``python -m tornado.testing discover tests/`` still runs them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

from tornado import testing, websocket

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import webrtc_server  # noqa: E402
from routing import PEER_UNAVAILABLE_NOTICE  # noqa: E402

MY_CALLER_ID = "ME"
TEST_PEER_ID1 = "PEER1"
TEST_PEER_ID2 = "PEER2"
TEST_PEER_ID3 = "PEER3"
TEST_ICE_SERVERS = [{"urls": "stun:127.0.0.1:3478"}]


class BasicTestCase(testing.AsyncHTTPTestCase):
    """A fresh app (own registry) per test, served on a free loopback port."""

    #: Options for make_app, per test class.
    app_options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.sockets: list[websocket.WebSocketClientConnection] = []
        super().setUp()

    def tearDown(self) -> None:
        for conn in self.sockets:
            conn.close()
        self.app.stop_services()
        super().tearDown()

    def get_app(self) -> webrtc_server.WebRTCApplication:
        options = {"iceServers": TEST_ICE_SERVERS, **self.app_options}
        return webrtc_server.make_app(**options)

    @property
    def app(self) -> webrtc_server.WebRTCApplication:
        return self._app  # type: ignore[return-value]

    def make_url(self, path: str, protocol: str = "ws", **kwargs: str) -> str:
        url = f"{protocol}://127.0.0.1:{self.get_http_port()}{path}"
        if kwargs:
            url = f"{url}?{urlencode(OrderedDict(kwargs))}"
        return url

    @staticmethod
    def make_relative_url(path: str, **kwargs: str) -> str:
        return f"{path}?{urlencode(OrderedDict(kwargs))}" if kwargs else path

    async def _mk_ws_connection(self, path: str, **kwargs: str) -> websocket.WebSocketClientConnection:
        """Open a signaling socket and wait until the server has registered it."""
        before = self.app.router.open_sockets
        conn = await websocket.websocket_connect(self.make_url(path, protocol="ws", **kwargs))
        self.sockets.append(conn)
        await self.wait_for(lambda: self.app.router.open_sockets > before or conn.close_code is not None)
        return conn

    async def connect(
        self, my_id: str, peer_id: str | None = None, route: str = "caller_ws"
    ) -> websocket.WebSocketClientConnection:
        query = {"id": my_id} if peer_id is None else {"id": my_id, "peer_id": peer_id}
        return await self._mk_ws_connection(self.app.reverse_url(route), **query)

    async def wait_for(self, condition: Any, timeout: float = 3.0) -> None:
        """Poll ``condition()`` until true (server-side effects of a client action)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.005)

    async def read(self, conn: websocket.WebSocketClientConnection, timeout: float = 3.0) -> str | bytes | None:
        return await asyncio.wait_for(conn.read_message(), timeout)

    async def assert_next(self, conn: websocket.WebSocketClientConnection, expected: str) -> None:
        self.assertEqual(await self.read(conn), expected)

    async def assert_closed_with(self, conn: websocket.WebSocketClientConnection, code: int, reason: str) -> None:
        self.assertIsNone(await self.read(conn))
        self.assertEqual((conn.close_code, conn.close_reason), (code, reason))


__all__ = [
    "BasicTestCase",
    "MY_CALLER_ID",
    "PEER_UNAVAILABLE_NOTICE",
    "TEST_ICE_SERVERS",
    "TEST_PEER_ID1",
    "TEST_PEER_ID2",
    "TEST_PEER_ID3",
    "testing",
    "webrtc_server",
]
