"""Limits, the socket hook, rate limiting, the heartbeat, health and metrics, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from raw_ws import RawWebSocket
from tornado import websocket

from handlers.ice import turn_credentials
from routing import BAD_REQUEST, BAD_REQUEST_CODE
from routing.limits import ALLOW, CLOSE, DROP, NOTICE, RateLimiter

from test_common import PEER_UNAVAILABLE_NOTICE, BasicTestCase, on_both_transports, testing, webrtc_server

POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")
if POLICIES not in sys.path:
    sys.path.insert(0, POLICIES)

RATE_LIMITED_NOTICE = '{"msg_type": "SERVER_NOTICE", "message": "RATE-LIMITED"}'


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


class TestIdPattern(BasicTestCase):
    app_options = {"ID_PATTERN": "[A-Za-z0-9_-]+"}

    @testing.gen_test
    async def test_ids_outside_the_pattern_are_refused_on_socket_and_page(self):
        for query in ({"id": "a b", "peer_id": "c"}, {"id": "a", "peer_id": "<b>"}, {"id": "ünï"}):
            conn = await self._mk_ws_connection("/wscall", **query)
            await self.assert_closed_with(conn, BAD_REQUEST_CODE, BAD_REQUEST)
            page = await self.http_client.fetch(self.make_url("/call", protocol="http", **query), raise_error=False)
            self.assertEqual(page.code, 400)
            self.assertIn(b"outside ID_PATTERN", page.body)
        await self.connect("good_id-1", "peer-2")
        self.assertEqual(self.open_sockets(), 1)


@on_both_transports
class TestSocketLimits(BasicTestCase):
    app_options = {"MAX_SOCKETS_PER_ID": 2, "MAX_SOCKETS": 4}

    @testing.gen_test
    async def test_an_id_may_hold_only_so_many_sockets(self):
        first = await self.connect("A", "B")
        await self.connect("A", "C")
        third = await self.connect("A", "B")
        await self.assert_closed_with(third, 4429, "TOO-MANY-SOCKETS")
        await self.connect("B", "A")  # other ids are not affected
        first.close()
        await self.wait_for(lambda: self.count("A") == 1)
        await self.connect("A", "B")
        self.assertEqual(self.count("A"), 2)
        self.assertEqual(self.app.stats.rejected["too-many-sockets"], 1)

    @testing.gen_test
    async def test_the_server_holds_only_so_many_sockets(self):
        for n in range(4):
            await self.connect(f"id{n}")
        newest = await self.connect("one-too-many")
        await self.assert_closed_with(newest, 1013, "SERVER-FULL")
        self.assertEqual(self.open_sockets(), 4)


@on_both_transports
class TestSocketPolicyModule(BasicTestCase):
    app_options = {"POLICY": "socket_token"}

    @testing.gen_test
    async def test_sockets_without_the_token_get_4403(self):
        for query in ({"id": "A", "peer_id": "B"}, {"id": "A", "peer_id": "B", "token": "wrong"}):
            conn = await self._mk_ws_connection("/wscall", **query)
            await self.assert_closed_with(conn, 4403, "FORBIDDEN")
        a = await self._mk_ws_connection("/wscall", id="A", peer_id="B", token="let-me-in")
        b = await self._mk_ws_connection("/wscall", id="B", peer_id="A", token="let-me-in")
        a.write_message("authorised")
        await self.assert_next(b, "authorised")
        self.assertEqual(self.app.stats.rejected["forbidden"], 2)


@on_both_transports
class TestAsyncSocketHook(BasicTestCase):
    def get_app(self):
        async def has_socket_pass(handler) -> bool:
            await asyncio.sleep(0.05)  # e.g. a database lookup
            return handler.get_query_argument("id") != "banned"

        return webrtc_server.make_app(has_socket_pass=has_socket_pass)

    @testing.gen_test
    async def test_a_coroutine_hook_is_awaited_and_messages_wait_for_it(self):
        banned = await self._mk_ws_connection("/wscall", id="banned", peer_id="B")
        await self.assert_closed_with(banned, 4403, "FORBIDDEN")
        b = await self.connect("B", "A")
        a = await websocket.websocket_connect(self.make_url("/wscall", id="A", peer_id="B"))
        self.sockets.append(a)
        a.write_message("sent before the hook answered")
        await self.assert_next(b, "sent before the hook answered")


@on_both_transports
class TestRateLimit(BasicTestCase):
    app_options = {"RATE_LIMIT": 5.0, "RATE_LIMIT_BURST": 5}

    @testing.gen_test
    async def test_a_burst_passes_then_a_notice_then_a_flood_is_closed(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        for n in range(5):
            a.write_message(f"m{n}")
        for n in range(5):
            await self.assert_next(b, f"m{n}")
        a.write_message("over the limit")
        await self.assert_next(a, RATE_LIMITED_NOTICE)
        for n in range(10):
            a.write_message(f"flood{n}")
        await self.assert_closed_with(a, 1008, "RATE-LIMITED")
        # None of the dropped messages reached B: its next frame is a fresh one.
        c = await self.connect("C", "B")
        b2 = await self.connect("B", "C")
        c.write_message("fresh")
        await self.assert_next(b2, "fresh")
        self.assertGreaterEqual(self.app.stats.rate_limited, 6)
        self.assertEqual(self.app.stats.closed["rate-limited"], 1)

    @testing.gen_test
    async def test_a_sender_that_slows_down_is_served_again(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        for n in range(6):
            a.write_message(f"m{n}")
        await self.assert_next(a, RATE_LIMITED_NOTICE)
        for n in range(5):
            await self.assert_next(b, f"m{n}")
        await asyncio.sleep(1.1)  # refills the bucket (5 per second)
        a.write_message("later")
        await self.assert_next(b, "later")


def test_rate_limiter_alone():
    limiter = RateLimiter(rate=2.0, burst=3, now=0.0)
    assert [limiter.check(0.0) for _ in range(4)] == [ALLOW, ALLOW, ALLOW, NOTICE]
    assert limiter.check(0.0) == DROP
    assert limiter.check(0.5) == ALLOW  # one token back after half a second
    assert limiter.check(0.5) == DROP  # same episode: no second notice
    assert limiter.check(0.5) == CLOSE  # a fourth drop: more than a burst dropped
    fresh = RateLimiter(rate=2.0, burst=2, now=0.0)
    assert [fresh.check(0.0) for _ in range(3)] == [ALLOW, ALLOW, NOTICE]
    assert fresh.check(5.0) == ALLOW and fresh.dropped == 0  # quiet long enough: episode over


@on_both_transports
class TestHeartbeat(BasicTestCase):
    app_options = {"WS_PING_INTERVAL": 0.4, "WS_PING_TIMEOUT": 0.2}

    @testing.gen_test(timeout=15)
    async def test_a_peer_that_stops_answering_is_dropped_and_its_peer_told(self):
        a = await self.connect("A", "B")
        loop = asyncio.get_running_loop()
        # B completes the handshake, then never reads again: no pong, no FIN.
        raw = await loop.run_in_executor(None, RawWebSocket, "127.0.0.1", self.get_http_port(), "/wscall?id=B&peer_id=A")
        try:
            await self.wait_for(lambda: self.count("B") == 1)
            vanished = time.monotonic()
            await self.wait_for(lambda: self.count("B") == 0, timeout=5)
            dropped_after = time.monotonic() - vanished
            self.assertLess(dropped_after, 0.4 + 0.2 + 0.3)  # interval + timeout, and a little slack
            a.write_message("are you there?")
            await self.assert_next(a, PEER_UNAVAILABLE_NOTICE)
            self.assertEqual(self.app.stats.closed["ping-timeout"], 1)
        finally:
            raw.close()

    @testing.gen_test(timeout=15)
    async def test_an_idle_peer_that_answers_pings_stays(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        await asyncio.sleep(2.0)  # five intervals of silence, answered by pongs
        self.assertEqual(self.open_sockets(), 2)
        a.write_message("still there")
        await self.assert_next(b, "still there")


class TestHealthAndMetrics(BasicTestCase):
    @testing.gen_test
    async def test_healthz(self):
        response = await self.http_client.fetch(self.get_url("/healthz"))
        self.assertEqual(response.body, b'{"status": "ok", "ready": true}')

    @testing.gen_test
    async def test_metrics_count_what_happened(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        a.write_message("héllo")  # 6 bytes in UTF-8
        await self.assert_next(b, "héllo")
        c = await self.connect("C", "nobody")
        c.write_message("x")
        await self.assert_next(c, PEER_UNAVAILABLE_NOTICE)
        refused = await self._mk_ws_connection("/wscall", peer_id="B")
        await self.assert_closed_with(refused, BAD_REQUEST_CODE, BAD_REQUEST)
        response = await self.http_client.fetch(self.get_url("/metrics"))
        self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
        text = response.body.decode()
        self.assertEqual(metric(text, "webrtc_open_sockets"), 3)
        self.assertEqual(metric(text, "webrtc_ids_online"), 3)
        self.assertEqual(metric(text, "webrtc_messages_relayed_total"), 2)
        self.assertEqual(metric(text, "webrtc_messages_undelivered_total"), 1)
        self.assertEqual(metric(text, "webrtc_relayed_bytes_total"), 7)
        self.assertIn('webrtc_sockets_rejected_total{reason="bad-request"} 1.0', text)
        self.assertGreater(metric(text, "process_resident_memory_bytes"), 0)
        self.assertNotIn("héllo", text)


class TestMetricsOff(BasicTestCase):
    app_options = {"METRICS": False}

    @testing.gen_test
    async def test_metrics_can_be_turned_off(self):
        response = await self.http_client.fetch(self.get_url("/metrics"), raise_error=False)
        self.assertEqual(response.code, 404)


class TestTurnRestCredentials(BasicTestCase):
    app_options = {
        "ICE_ACCESS_TOKEN": "t",
        "iceServers": [
            {"urls": "stun:127.0.0.1:3478"},
            {"urls": ["turn:127.0.0.1:3478"], "secret": "shared-secret", "ttl": 600},
        ],
    }

    @testing.gen_test
    async def test_entries_with_a_secret_get_time_limited_credentials(self):
        before = int(time.time())
        response = await self.http_client.fetch(self.get_url("/ice_servers?id=alice"), method="POST", body="t")
        stun, turn = json.loads(response.body)
        self.assertEqual(stun, {"urls": "stun:127.0.0.1:3478"})
        self.assertEqual(set(turn), {"urls", "username", "credential"})
        expiry, user = turn["username"].split(":", 1)
        self.assertEqual(user, "alice")
        self.assertTrue(before + 600 <= int(expiry) <= int(time.time()) + 600)
        self.assertEqual(turn["credential"], turn_credentials("shared-secret", "alice", 600, now=int(expiry) - 600)["credential"])
        self.assertNotIn(b"shared-secret", response.body)


def test_turn_credentials_match_the_turn_rest_formula():
    creds = turn_credentials("secret", "bob", 600, now=1700000000)
    assert creds["username"] == "1700000600:bob"
    # printf '1700000600:bob' | openssl dgst -sha1 -hmac secret -binary | base64
    assert creds["credential"] == "A4qB3L6nx48uMwd81/6lNO/4m48="
