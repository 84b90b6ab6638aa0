"""The signaling socket's rules over real websockets against an in-process server."""

from __future__ import annotations

from tornado import httpclient, websocket

from routing import BAD_REQUEST, BAD_REQUEST_CODE

from test_common import PEER_UNAVAILABLE_NOTICE, BasicTestCase, on_both_transports, testing


@on_both_transports
class TestBadRequests(BasicTestCase):
    app_options = {"MAX_ID_LENGTH": 16}

    async def assert_refused(self, **query: str) -> None:
        conn = await self._mk_ws_connection(self.app.reverse_url("caller_ws"), **query)
        await self.assert_closed_with(conn, BAD_REQUEST_CODE, BAD_REQUEST)
        self.assertEqual(self.open_sockets(), 0)

    @testing.gen_test
    async def test_missing_id_is_closed_with_4400(self):
        await self.assert_refused()
        await self.assert_refused(peer_id="B")
        await self.assert_refused(id="", peer_id="B")

    @testing.gen_test
    async def test_id_equal_to_peer_id_is_closed_with_4400(self):
        await self.assert_refused(id="A", peer_id="A")

    @testing.gen_test
    async def test_oversized_or_control_character_ids_are_closed_with_4400(self):
        await self.assert_refused(id="A" * 17, peer_id="B")
        await self.assert_refused(id="A", peer_id="B" * 17)
        await self.assert_refused(id="A\nB", peer_id="C")

    @testing.gen_test
    async def test_longest_allowed_id_is_accepted(self):
        a = await self.connect("A" * 16, "B" * 16)
        b = await self.connect("B" * 16, "A" * 16)
        a.write_message("ok")
        await self.assert_next(b, "ok")


@on_both_transports
class TestDelivery(BasicTestCase):
    @testing.gen_test
    async def test_every_route_and_alias_is_the_same_signaling_socket(self):
        a = await self.connect("A", "B", route="caller_ws")
        b1 = await self.connect("B", "A", route="reciever_ws")
        b2 = await self.connect("B", "A", route="receiver_ws")
        a.write_message("to both")
        await self.assert_next(b1, "to both")
        await self.assert_next(b2, "to both")

    @testing.gen_test
    async def test_text_is_relayed_exactly_as_sent(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        for text in ["not json {", '{"type": "video-offer", "sdp": {"type": "offer"}}', "ünïcødé ✓ 名前", " "]:
            a.write_message(text)
            await self.assert_next(b, text)

    @testing.gen_test
    async def test_echo_goes_to_senders_other_devices_in_the_same_conversation_only(self):
        a1 = await self.connect("A", "B")
        a2 = await self.connect("A", "B")
        a_elsewhere = await self.connect("A", "C")
        b = await self.connect("B", "A")
        a1.write_message("m1")
        await self.assert_next(b, "m1")
        await self.assert_next(a2, "m1")
        # a1 gets nothing back and a_elsewhere sees nothing: the next frames each receives prove it.
        b.write_message("reply")
        await self.assert_next(a1, "reply")
        await self.assert_next(a2, "reply")
        a_elsewhere.write_message("to C")
        await self.assert_next(a_elsewhere, PEER_UNAVAILABLE_NOTICE)

    @testing.gen_test
    async def test_peer_unavailable_reaches_every_socket_of_the_conversation(self):
        a1 = await self.connect("A", "B")
        a2 = await self.connect("A", "B")
        a_elsewhere = await self.connect("A", "C")
        c = await self.connect("C", "A")
        a1.write_message("anyone?")
        await self.assert_next(a1, PEER_UNAVAILABLE_NOTICE)
        await self.assert_next(a2, "anyone?")
        await self.assert_next(a2, PEER_UNAVAILABLE_NOTICE)
        # The conversation with C got neither the message nor the notice.
        c.write_message("hello A")
        await self.assert_next(a_elsewhere, "hello A")

    @testing.gen_test
    async def test_pairs_are_isolated(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        c = await self.connect("C", "B")
        c.write_message("intruder")
        # B's only socket talks to A, so C's message reaches nobody...
        await self.assert_next(c, PEER_UNAVAILABLE_NOTICE)
        a.write_message("legit")
        # ... and B's next frame is A's.
        await self.assert_next(b, "legit")

    @testing.gen_test
    async def test_order_between_two_sockets_is_kept(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        for n in range(150):  # within the default rate-limit burst
            a.write_message(f"m{n}")
        for n in range(150):  # within the default rate-limit burst
            await self.assert_next(b, f"m{n}")

    @testing.gen_test
    async def test_sender_without_peer_id_is_told_nobody_received(self):
        a = await self.connect("A")
        await self.connect("B", "A")
        a.write_message("hello?")
        await self.assert_next(a, PEER_UNAVAILABLE_NOTICE)

    @testing.gen_test
    async def test_registry_is_emptied_when_sockets_close(self):
        a = await self.connect("A", "B")
        a2 = await self.connect("A", "C")
        b = await self.connect("B")
        self.assertEqual((self.ids_online(), self.open_sockets()), (2, 3))
        a.close()
        await self.wait_for(lambda: self.open_sockets() == 2)
        self.assertEqual(self.ids_online(), 2)
        a2.close()
        b.close()
        await self.wait_for(lambda: self.open_sockets() == 0)
        self.assertEqual(self.ids_online(), 0)
        self.assertEqual(self.all_sessions(), [])


@on_both_transports
class TestFrames(BasicTestCase):
    app_options = {"MAX_MESSAGE_SIZE": 1024}

    @testing.gen_test
    async def test_binary_frame_is_refused_with_1003(self):
        a = await self.connect("A", "B")
        await self.connect("B", "A")
        a.write_message(b"\x00\x01binary", binary=True)
        await self.assert_closed_with(a, 1003, "BINARY-UNSUPPORTED")
        await self.wait_for(lambda: self.open_sockets() == 1)

    @testing.gen_test
    async def test_oversized_frame_closes_with_1009_and_server_stays_up(self):
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        a.write_message("x" * 1025)
        await self.assert_closed_with(a, 1009, "message too big")
        await self.wait_for(lambda: self.open_sockets() == 1)
        a = await self.connect("A", "B")
        a.write_message("x" * 1024)
        await self.assert_next(b, "x" * 1024)


@on_both_transports
class TestOrigins(BasicTestCase):
    app_options = {"ALLOWED_ORIGINS": ["https://app.example"]}

    async def open_with_origin(self, origin: str) -> websocket.WebSocketClientConnection:
        request = httpclient.HTTPRequest(self.make_url("/wscall", id="A", peer_id="B"), headers={"Origin": origin})
        conn = await websocket.websocket_connect(request)
        self.sockets.append(conn)
        return conn

    @testing.gen_test
    async def test_same_host_and_allowed_origins_are_accepted(self):
        await self.open_with_origin(f"http://127.0.0.1:{self.get_http_port()}")
        await self.open_with_origin("https://app.example")
        await self.wait_for(lambda: self.open_sockets() == 2)

    @testing.gen_test
    async def test_other_origins_get_403(self):
        with self.assertRaises(httpclient.HTTPClientError) as caught:
            await self.open_with_origin("https://evil.example")
        self.assertEqual(caught.exception.code, 403)
        self.assertEqual(self.open_sockets(), 0)
