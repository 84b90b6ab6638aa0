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
from tornado.httpserver import HTTPServer

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import webrtc_server  # noqa: E402
from handlers.frontdoor import FrontDoorHTTPServer  # noqa: E402
from routing import PEER_UNAVAILABLE_NOTICE  # noqa: E402

MY_CALLER_ID = "ME"
TEST_PEER_ID1 = "PEER1"
TEST_PEER_ID2 = "PEER2"
TEST_PEER_ID3 = "PEER3"
TEST_ICE_SERVERS = [{"urls": "stun:127.0.0.1:3478"}]


class BasicTestCase(testing.AsyncHTTPTestCase):
    """A fresh app (own registry) per test, served on a free loopback port.

    With ``redis`` set (see test_cluster.py), the test runs against two apps, two nodes of
    one Redis backplane, and sockets alternate between them: the first socket of an id goes
    to one node, its next socket to the other, and consecutive ids start on different nodes.
    """

    #: Options for make_app, per test class.
    app_options: dict[str, Any] = {}
    #: A RedisServer shared by the class: run every test on two nodes joined through it.
    redis: Any = None
    #: Which transport carries the signaling sockets: "lean" (the front door, as the real
    #: server over plain TCP) or "tornado" (Tornado's own HTTP server, as over TLS).
    transport = "lean"

    def setUp(self) -> None:
        self.sockets: list[websocket.WebSocketClientConnection] = []
        self._placement: dict[str, int] = {}
        super().setUp()
        self.apps = [self.app]
        self.ports = [self.get_http_port()]
        self.io_loop.add_callback(self.app.start_services)  # as serve() does, once the loop runs
        if self.redis is not None:
            second = self.get_app()
            sock, port = testing.bind_unused_port()
            self.second_server = self.http_server_for(second)
            self.second_server.add_sockets([sock])
            self.apps.append(second)
            self.ports.append(port)
            self.io_loop.add_callback(second.start_services)
            for app in self.apps:
                self.io_loop.run_sync(app.router.start)
            self.io_loop.run_sync(lambda: self.wait_for(lambda: all(len(app.router.others) == 1 for app in self.apps)))

    def tearDown(self) -> None:
        for conn in self.sockets:
            conn.close()
        for app in self.apps:
            app.stop_services()
        if self.redis is not None:
            self.second_server.stop()
            for app in self.apps:
                self.io_loop.run_sync(app.router.stop)
        super().tearDown()

    def get_http_server(self) -> HTTPServer:
        return self.http_server_for(self._app)

    def http_server_for(self, app: webrtc_server.WebRTCApplication) -> HTTPServer:
        if self.transport == "tornado":
            return HTTPServer(app)
        return FrontDoorHTTPServer(app)

    def get_app(self) -> webrtc_server.WebRTCApplication:
        options = {"iceServers": TEST_ICE_SERVERS, **self.app_options}
        if self.redis is not None:
            options.update(REDIS_URL=self.redis.url, REDIS_PREFIX=f"test-{id(self)}:", NODE_TTL=3.0)
        return webrtc_server.make_app(**options)

    @property
    def app(self) -> webrtc_server.WebRTCApplication:
        return self._app  # type: ignore[return-value]

    def node_for(self, my_id: str | None) -> int:
        """Which node the next socket of ``my_id`` goes to."""
        if len(self.ports) == 1 or not my_id:
            return 0
        first = self._placement.setdefault(my_id, len(self._placement))
        opened = sum(1 for s in self.all_sessions() if s.id == my_id)
        return (first + opened) % len(self.ports)

    def make_url(self, path: str, protocol: str = "ws", node: int = 0, **kwargs: str) -> str:
        port = self.ports[node] if hasattr(self, "ports") else self.get_http_port()
        url = f"{protocol}://127.0.0.1:{port}{path}"
        if kwargs:
            url = f"{url}?{urlencode(OrderedDict(kwargs))}"
        return url

    # The registry as the tests see it: every node's sockets together.

    def all_sessions(self) -> list[Any]:
        return [s for app in self.apps for s in app.router.local_sessions()]

    def open_sockets(self) -> int:
        return sum(app.router.open_sockets for app in self.apps)

    def ids_online(self) -> int:
        return len({s.id for s in self.all_sessions()})

    def count(self, my_id: str) -> int:
        return sum(app.router.count(my_id) for app in self.apps)

    def settled(self) -> bool:
        """Every node's subscriptions and registry writes have reached Redis."""
        return all(getattr(app.router, "settled", True) for app in self.apps)

    @staticmethod
    def make_relative_url(path: str, **kwargs: str) -> str:
        return f"{path}?{urlencode(OrderedDict(kwargs))}" if kwargs else path

    async def _mk_ws_connection(self, path: str, **kwargs: str) -> websocket.WebSocketClientConnection:
        """Open a signaling socket and wait until every node can reach it."""
        ready = sum(1 for s in self.all_sessions() if s.ready)
        node = self.node_for(kwargs.get("id"))
        conn = await websocket.websocket_connect(self.make_url(path, protocol="ws", node=node, **kwargs))
        self.sockets.append(conn)
        await self.wait_for(lambda: sum(1 for s in self.all_sessions() if s.ready) > ready or conn.close_code is not None)
        return conn

    async def connect(
        self, my_id: str, peer_id: str | None = None, route: str = "caller_ws"
    ) -> websocket.WebSocketClientConnection:
        query = {"id": my_id} if peer_id is None else {"id": my_id, "peer_id": peer_id}
        return await self._mk_ws_connection(self.app.reverse_url(route), **query)

    async def wait_for(self, condition: Any, timeout: float = 3.0) -> None:
        """Poll ``condition()`` until true (server-side effects of a client action), and
        until the backplane, if any, has caught up with it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (condition() and self.settled()):
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


def on_both_transports(suite: type[BasicTestCase]) -> type[BasicTestCase]:
    """Run ``suite`` over both transports of the signaling socket: as written (the lean one,
    as the real server over plain TCP), and again over Tornado's (handlers/streamws.py, as over
    TLS), as ``<Name>OverTornado`` in the suite's own module."""
    variant = type(f"{suite.__name__}OverTornado", (suite,), {"transport": "tornado", "__module__": suite.__module__})
    variant.__qualname__ = variant.__name__
    setattr(sys.modules[suite.__module__], variant.__name__, variant)
    return suite


__all__ = [
    "on_both_transports",
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
