"""The original's receiver tests, ported to Python 3 / Tornado 6 (same scenarios, same names)."""

import json
from urllib.parse import urlencode

from tornado import template

from test_common import (
    MY_CALLER_ID,
    PEER_UNAVAILABLE_NOTICE,
    TEST_ICE_SERVERS,
    TEST_PEER_ID1,
    TEST_PEER_ID2,
    TEST_PEER_ID3,
    BasicTestCase,
    testing,
    webrtc_server,
)


class TestRecieverApp(BasicTestCase):
    @testing.gen_test
    async def test_recieve_page_uses_RecieveHandler_for_signaling(self):
        await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        uri = self.make_url(self.app.reverse_url("reciever_page"), protocol="http", id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        response = await self.http_client.fetch(uri)
        reciever_ws_uri = self.make_relative_url(self.app.reverse_url("reciever_ws"), id=MY_CALLER_ID, peer_id=TEST_PEER_ID1)
        self.assertEqual(reciever_ws_uri, "/wsrecieve?id=ME&peer_id=PEER1")
        self.assertIn(reciever_ws_uri.encode(), response.body)

    @testing.gen_test
    async def test_recieve_websocket_message_is_sent_to_the_correct_caller(self):
        caller_socket1 = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        caller_socket2 = await self.connect(TEST_PEER_ID3, TEST_PEER_ID2)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        reciever_socket1 = await self.connect(TEST_PEER_ID2, TEST_PEER_ID3, route="reciever_ws")
        reciever_socket.write_message("hey man1")
        await self.assert_next(caller_socket1, "hey man1")
        reciever_socket1.write_message("hey man2")
        await self.assert_next(caller_socket2, "hey man2")
        # Each caller got only its own conversation's message: the next one proves it.
        reciever_socket.write_message("next1")
        await self.assert_next(caller_socket1, "next1")
        reciever_socket1.write_message("next2")
        await self.assert_next(caller_socket2, "next2")

    @testing.gen_test
    async def test_caller_page_is_rendered_correctly(self):
        uri = self.make_url(self.app.reverse_url("reciever_page"), protocol="http", id=TEST_PEER_ID1, peer_id=MY_CALLER_ID)
        response = await self.http_client.fetch(uri)
        loader = template.Loader(webrtc_server.TEMPLATE_DIR)
        expected = loader.load("base.html").generate(
            ws_uri=self.make_relative_url(self.app.reverse_url("reciever_ws"), id=TEST_PEER_ID1, peer_id=MY_CALLER_ID),
            my_id=TEST_PEER_ID1,
            peer_id=MY_CALLER_ID,
            title="Receiver",
            ice_url=self.app.reverse_url("ice_url"),
            ice_pass=self.app.config.get_ice_pass(),
            invite_url="",  # only the caller page invites
        )
        self.assertEqual(response.body, expected)

    @testing.gen_test
    async def test_get_or_post_to_recieve_page_url_gives_same_reciever_page(self):
        uri = self.make_url(self.app.reverse_url("reciever_page"), protocol="http", id=TEST_PEER_ID1, peer_id=MY_CALLER_ID)
        uri_no_query = self.make_url(self.app.reverse_url("reciever_page"), protocol="http")
        body = urlencode({"id": TEST_PEER_ID1, "peer_id": MY_CALLER_ID})
        self.assertEqual(uri, f"{uri_no_query}?{body}")
        response1 = await self.http_client.fetch(uri, method="GET")
        response2 = await self.http_client.fetch(uri_no_query, method="POST", body=body)
        self.assertEqual(response1.code, 200)
        self.assertEqual(response1.body, response2.body)

    @testing.gen_test
    async def test_ice_server_is_retreived_with_correct_token(self):
        uri = self.make_url(self.app.reverse_url("ice_url"), protocol="http")
        response = await self.http_client.fetch(uri, method="POST", body=self.app.config.get_ice_pass())
        self.assertEqual(json.loads(response.body), TEST_ICE_SERVERS)

    @testing.gen_test
    async def test_reciever_ws_gets_peer_unavailable_msg_when_peer_gets_disconnected(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")
        caller_socket.close()
        await self.wait_for(lambda: self.ids_online() == 1)
        reciever_socket.write_message("hey man2")
        reciever_socket.write_message("hey man2")
        await self.assert_next(reciever_socket, PEER_UNAVAILABLE_NOTICE)
        await self.assert_next(reciever_socket, PEER_UNAVAILABLE_NOTICE)

    @testing.gen_test
    async def test_after_reciever_getting_peer_unavailable_and_peer_is_back_online_msg_is_delivered_to_peer(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, MY_CALLER_ID, route="reciever_ws")
        caller_socket.write_message("hey man")
        await self.assert_next(reciever_socket, "hey man")
        caller_socket.close()
        await self.wait_for(lambda: self.ids_online() == 1)
        reciever_socket.write_message("hey man2")
        await self.assert_next(reciever_socket, PEER_UNAVAILABLE_NOTICE)
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket.write_message("hey man")
        await self.assert_next(caller_socket, "hey man")

    @testing.gen_test
    async def test_reciever_with_no_peer_id_gets_message_from_caller_with_reciever_as_peer_id(self):
        caller_socket = await self.connect(MY_CALLER_ID, TEST_PEER_ID1)
        reciever_socket = await self.connect(TEST_PEER_ID1, route="reciever_ws")
        caller_socket.write_message("hey man")
        caller_socket.write_message("hey boy")
        await self.assert_next(reciever_socket, "hey man")
        await self.assert_next(reciever_socket, "hey boy")


if __name__ == "__main__":
    testing.main()
