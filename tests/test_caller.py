"""The original's caller tests, ported to Python 3 / Tornado 6 (same scenarios, same names)."""

from urllib.parse import urlencode

from tornado import template

from test_common import (
    MY_CALLER_ID,
    PEER_UNAVAILABLE_NOTICE,
    TEST_PEER_ID1,
    TEST_PEER_ID2,
    BasicTestCase,
    on_both_transports,
    testing,
    webrtc_server,
)


@on_both_transports
class TestCallerApp(BasicTestCase):
    def expected_page(self, ws_route: str, my_id: str, peer_id: str, title: str) -> bytes:
        loader = template.Loader(webrtc_server.TEMPLATE_DIR)
        return loader.load("base.html").generate(
            ws_uri=self.make_relative_url(self.app.reverse_url(ws_route), id=my_id, peer_id=peer_id),
            my_id=my_id,
            peer_id=peer_id,
            title=title,
            ice_url=self.app.reverse_url("ice_url"),
            ice_pass=self.app.config.get_ice_pass(),
            # The caller page invites its peer to the receiver page of the pair.
            invite_url=self.make_relative_url(self.app.reverse_url("reciever_page"), id=peer_id, peer_id=my_id)
            if ws_route == "caller_ws"
            else "",
        )

    @testing.gen_test
    async def test_caller_page_is_rendered_correctly(self):
        uri = self.make_url(self.app.reverse_url("caller_page"), protocol="http", id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        response = await self.http_client.fetch(uri)
        self.assertEqual(response.body, self.expected_page("caller_ws", MY_CALLER_ID, TEST_PEER_ID1, "Caller"))

    @testing.gen_test
    async def test_client_count_increases_everytime_ws_logs_in(self):
        await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        self.assertEqual(self.ids_online(), 1)
        await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        self.assertEqual(self.ids_online(), 2)

    @testing.gen_test
    async def test_caller_page_contain_ice_credentials_with_incorrect_ice_token(self):
        uri = self.make_url(self.app.reverse_url("caller_page"), protocol="http", id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        expected_with_current_token = self.expected_page("caller_ws", MY_CALLER_ID, TEST_PEER_ID1, "Caller")
        # The page embeds get_ice_pass() as it is at render time.
        self.app.config.get_ice_pass = lambda: ""
        response = await self.http_client.fetch(uri)
        self.assertNotEqual(response.body, expected_with_current_token)
        self.assertEqual(response.body, self.expected_page("caller_ws", MY_CALLER_ID, TEST_PEER_ID1, "Caller"))

    @testing.gen_test
    async def test_caller_page_uses_CallHandler_for_signaling(self):
        uri = self.make_url(self.app.reverse_url("caller_page"), protocol="http", id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        response = await self.http_client.fetch(uri)
        caller_ws_uri = self.make_relative_url(self.app.reverse_url("caller_ws"), id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        self.assertEqual(caller_ws_uri, "/wscall?id=ME&peer_id=PEER1")
        self.assertIn(caller_ws_uri.encode(), response.body)

    @testing.gen_test
    async def test_get_or_post_to_call_page_url_gives_same_caller_page(self):
        uri = self.make_url(self.app.reverse_url("caller_page"), protocol="http", id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        uri_no_query = self.make_url(self.app.reverse_url("caller_page"), protocol="http")
        body = urlencode({"id": MY_CALLER_ID, "peer_id": TEST_PEER_ID1})
        self.assertEqual(uri, f"{uri_no_query}?{body}")
        response1 = await self.http_client.fetch(uri, method="GET")
        response2 = await self.http_client.fetch(uri_no_query, method="POST", body=body)
        self.assertEqual(response1.code, 200)
        self.assertEqual(response1.body, response2.body)

    @testing.gen_test
    async def test_caller1_connects_to_peer2_then_again_caller1_connects_to_peer2_using_separate_client_passes(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        caller_socket2 = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        caller_socket2.write_message("hey boy")
        received = [await self.read(reciever_socket), await self.read(reciever_socket)]
        # Order is kept per pair of sockets; two sending sockets may interleave.
        self.assertCountEqual(received, ["hey man", "hey boy"])

    @testing.gen_test
    async def test_caller1_connects_from_2_clients_msg_to_peer_2_from_either_client_is_seen_in_sibling_client(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        caller_socket2 = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        reciever_socket2 = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        self.assertEqual(self.count(MY_CALLER_ID), 2)
        caller_socket.write_message("hey man")
        await self.assert_next(caller_socket2, "hey man")
        caller_socket2.write_message("hey boy")
        await self.assert_next(caller_socket, "hey boy")
        for receiver in (reciever_socket, reciever_socket2):
            await self.assert_next(receiver, "hey man")
            await self.assert_next(receiver, "hey boy")

    @testing.gen_test
    async def test_two_callers_can_converse_with_same_reciepent_provided_its_separate_conversation(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey boy")
        await self.assert_next(reciever_socket, "hey boy")
        caller_socket2 = await self.connect(TEST_PEER_ID2, TEST_PEER_ID1)
        caller_socket2.write_message("hello man")
        # PEER1's only socket talks to ME: PEER2 is told PEER1 is unavailable to it.
        await self.assert_next(caller_socket2, PEER_UNAVAILABLE_NOTICE)
        reciever_socket2 = await self.connect(TEST_PEER_ID1, TEST_PEER_ID2, route="reciever_ws")
        caller_socket2.write_message("hello man")
        await self.assert_next(reciever_socket2, "hello man")
        # The first conversation saw none of it.
        caller_socket.write_message("still here")
        await self.assert_next(reciever_socket, "still here")

    @testing.gen_test
    async def test_subsequent_messages_from_caller_websocket_goes_to_reciepient_peer_websocket(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")
        caller_socket.write_message("hey man2")
        await self.assert_next(reciever_socket, "hey man2")

    @testing.gen_test
    async def test_caller_ws_gets_peer_unavailable_msg_when_peer_gets_disconnected(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")
        reciever_socket.close()
        await self.wait_for(lambda: self.ids_online() == 1)
        caller_socket.write_message("hey man2")
        await self.assert_next(caller_socket, PEER_UNAVAILABLE_NOTICE)

    @testing.gen_test
    async def test_after_caller_getting_peer_unavailable_and_peer_is_back_online_msg_is_delivered_to_peer(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")
        reciever_socket.close()
        await self.wait_for(lambda: self.ids_online() == 1)
        caller_socket.write_message("hey man2")
        await self.assert_next(caller_socket, PEER_UNAVAILABLE_NOTICE)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")

    @testing.gen_test
    async def test_caller_with_no_peer_id_gets_message_from_reciever_with_caller_as_peer_id(self):
        caller_socket = await self.connect(MY_CALLER_ID)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        reciever_socket.write_message("HEY MAN")
        reciever_socket.write_message("HEY MAN AGAIN")
        await self.assert_next(caller_socket, "HEY MAN")
        await self.assert_next(caller_socket, "HEY MAN AGAIN")


if __name__ == "__main__":
    testing.main()
