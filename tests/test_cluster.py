"""The signaling behaviour suites again, on two nodes joined by a real redis-server.

Each class below is an existing suite run as it is, with its sockets spread over two
nodes (see BasicTestCase.node_for): caller and receiver on different nodes, and an id's
second device on the other node from its first.
"""

from __future__ import annotations

import os
import unittest

import test_caller
import test_connections
import test_reciever
import test_signaling

from processes import MissingProgram, RedisServer

REDIS: RedisServer | None = None


def setUpModule() -> None:
    global REDIS
    # conftest's require() rule, for unittest: skip, but fail under CI.
    try:
        REDIS = RedisServer().start()
    except MissingProgram as missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(f"{missing} (CI=true: a missing component is a failure)") from None
        raise unittest.SkipTest(str(missing)) from None
    for suite in ON_TWO_NODES:
        suite.redis = REDIS


def tearDownModule() -> None:
    if REDIS is not None:
        REDIS.stop()


class TestCallerAppOnTwoNodes(test_caller.TestCallerApp):
    pass


class TestRecieverAppOnTwoNodes(test_reciever.TestRecieverApp):
    pass


class TestDeliveryOnTwoNodes(test_signaling.TestDelivery):
    pass


class TestBadRequestsOnTwoNodes(test_signaling.TestBadRequests):
    pass


class TestConnectionsOnTwoNodes(test_connections.TestConnections):
    pass


ON_TWO_NODES = [
    TestCallerAppOnTwoNodes,
    TestRecieverAppOnTwoNodes,
    TestDeliveryOnTwoNodes,
    TestBadRequestsOnTwoNodes,
    TestConnectionsOnTwoNodes,
]


class TestTheTwoNodesAreReal(test_signaling.BasicTestCase):
    """The harness itself: sockets really sit on different nodes, and only Redis joins them."""

    @test_signaling.testing.gen_test
    async def test_caller_and_receiver_sit_on_different_nodes_joined_only_by_redis(self):
        self.assertEqual(len(self.apps), 2)
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        a2 = await self.connect("A", "B")  # A's second device: the other node
        (a_session,) = self.apps[0].router.local_sessions()
        b_session, a2_session = sorted(self.apps[1].router.local_sessions(), key=lambda s: s.id, reverse=True)
        self.assertEqual((a_session.id, b_session.id, a2_session.id), ("A", "B", "A"))
        self.assertNotEqual(self.apps[0].router.node, self.apps[1].router.node)
        a.write_message("across")
        await self.assert_next(b, "across")
        await self.assert_next(a2, "across")  # the echo to A's device on the other node
        # Node 1 never saw the message locally: it came through Redis.
        self.assertEqual((self.apps[0].router.relayed, self.apps[1].router.relayed), (1, 0))


ON_TWO_NODES.append(TestTheTwoNodesAreReal)


class TestBackplaneMetrics(test_signaling.BasicTestCase):
    @test_signaling.testing.gen_test
    async def test_each_node_reports_its_backplane(self):
        for app, port in zip(self.apps, self.ports, strict=True):
            response = await self.http_client.fetch(f"http://127.0.0.1:{port}/metrics")
            text = response.body.decode()
            self.assertIn("webrtc_backplane_connected 1.0", text)
            self.assertIn("webrtc_backplane_errors_total 0.0", text)
            self.assertIn(f'webrtc_node_info{{node="{app.router.node}"}} 1.0', text)


ON_TWO_NODES.append(TestBackplaneMetrics)


class TestBoundedOutbox(test_signaling.BasicTestCase):
    @test_signaling.testing.gen_test
    async def test_a_full_outbox_sheds_cross_node_copies_and_tells_the_sender(self):
        import routing.redis

        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        limit = routing.redis.OUTBOX_LIMIT
        routing.redis.OUTBOX_LIMIT = 0  # as if Redis had fallen far behind
        try:
            a.write_message("shed")
            await self.assert_next(a, test_signaling.PEER_UNAVAILABLE_NOTICE)
        finally:
            routing.redis.OUTBOX_LIMIT = limit
        self.assertEqual(self.apps[0].router.backplane_errors, 1)
        a.write_message("flows again")
        await self.assert_next(b, "flows again")


ON_TWO_NODES.append(TestBoundedOutbox)


class TestNodesKnowEachOther(test_signaling.BasicTestCase):
    @test_signaling.testing.gen_test
    async def test_hello_and_bye_and_a_lone_node_that_skips_redis(self):
        one, two = (app.router for app in self.apps)
        self.assertEqual((one.others, two.others), ({two.node}, {one.node}))
        await two.stop()  # says goodbye
        await self.wait_for(lambda: not one.others)
        # Alone, a node relays without Redis, exactly as the memory router does.
        a = await self._mk_ws_connection("/wscall", id="A", peer_id="B")
        b = await self._mk_ws_connection("/wscall", id="B", peer_id="A")
        self.assertEqual(self.count("A") + self.count("B"), 2)
        relayed_by_redis = one._outbox.qsize()
        a.write_message("alone")
        await self.assert_next(b, "alone")
        self.assertEqual(one._outbox.qsize(), relayed_by_redis)
        c = await self._mk_ws_connection("/wscall", id="C", peer_id="nobody")
        c.write_message("anyone?")
        await self.assert_next(c, test_signaling.PEER_UNAVAILABLE_NOTICE)
        await two.start()  # back: says hello, and the first node publishes again
        await self.wait_for(lambda: one.others == {two.node})

    def node_for(self, my_id):
        return 0  # every socket on the first node


ON_TWO_NODES.append(TestNodesKnowEachOther)
