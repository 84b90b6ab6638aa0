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
import test_rooms
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


class TestRoomsOnTwoNodes(test_rooms.TestRooms):
    pass


class TestRoomRaceOnTwoNodes(test_rooms.TestRoomRace):
    pass


class TestRoomCopiesOnTwoNodes(test_rooms.TestRoomCopies):
    pass


ON_TWO_NODES = [
    TestRoomCopiesOnTwoNodes,
    TestRoomsOnTwoNodes,
    TestRoomRaceOnTwoNodes,
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
            self.assertIn("webrtc_backplane_stale_total 0.0", text)
            self.assertRegex(text, r"webrtc_backplane_batches_total \d+\.0")
            self.assertIn(f'webrtc_node_info{{node="{app.router.node}"}} 1.0', text)


ON_TWO_NODES.append(TestBackplaneMetrics)


class TestBoundedOutbox(test_signaling.BasicTestCase):
    @test_signaling.testing.gen_test
    async def test_a_full_outbox_sheds_cross_node_copies_and_tells_the_sender(self):
        import routing.nodes

        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        limit = routing.nodes.OUTBOX_LIMIT
        routing.nodes.OUTBOX_LIMIT = 0  # as if Redis had fallen far behind
        try:
            a.write_message("shed")
            await self.assert_next(a, test_signaling.PEER_UNAVAILABLE_NOTICE)
        finally:
            routing.nodes.OUTBOX_LIMIT = limit
        self.assertEqual(self.apps[0].router.routing.backplane_errors, 1)
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
        published = one.publisher.published
        a.write_message("alone")
        await self.assert_next(b, "alone")
        self.assertEqual(one.publisher.published, published)
        c = await self._mk_ws_connection("/wscall", id="C", peer_id="nobody")
        c.write_message("anyone?")
        await self.assert_next(c, test_signaling.PEER_UNAVAILABLE_NOTICE)
        await two.start()  # back: says hello, and the first node publishes again
        await self.wait_for(lambda: one.others == {two.node})

    def node_for(self, my_id):
        return 0  # every socket on the first node


ON_TWO_NODES.append(TestNodesKnowEachOther)


class TestClusterWideLimits(test_signaling.BasicTestCase):
    """MAX_SOCKETS_PER_ID counts an id's sockets on every node, not on each."""

    app_options = {"MAX_SOCKETS_PER_ID": 3}

    @test_signaling.testing.gen_test
    async def test_the_socket_over_the_limit_is_refused_whichever_node_it_reaches(self):
        for _ in range(3):  # alternating nodes: 2 on one, 1 on the other
            await self.connect("A", "B")
        self.assertEqual(sorted(app.router.count("A") for app in self.apps), [1, 2])
        refused = await self.connect("A", "B")  # each node alone would still have room
        await self.assert_closed_with(refused, 4429, "TOO-MANY-SOCKETS")
        self.assertEqual(self.count("A"), 3)
        self.assertEqual(sum(app.stats.rejected["too-many-sockets"] for app in self.apps), 1)
        # A refused socket leaves no trace: when one closes, the next one fits.
        self.sockets[0].close()
        await self.wait_for(lambda: self.count("A") == 2)
        accepted = await self.connect("A", "C")
        self.assertIsNone(accepted.close_code)
        self.assertEqual(self.count("A"), 3)


ON_TWO_NODES.append(TestClusterWideLimits)


class TestExactAcrossNodes(test_signaling.BasicTestCase):
    """PEER-UNAVAILABLE stays exact when a node's mirror of the directory is stale."""

    app_options = {"RATE_LIMIT": 0}

    def inject(self, my_id: str, node: str, session_id: str, peer_id: str) -> None:
        """Write a directory entry, and its join event, for a socket that does not exist (as
        a node that died before it could remove its sockets leaves them)."""
        import redis

        from routing import wire

        router = self.apps[0].router
        kind = redis.RedisCluster if router.topology.cluster else redis.Redis
        with kind.from_url(self.redis.url) as client:
            client.hset(router.keys.directory(my_id), session_id, wire.entry(node, peer_id))
            client.spublish(router.keys.events(my_id), wire.joined(node, my_id, session_id, peer_id))

    @test_signaling.testing.gen_test
    async def test_a_stale_entry_on_a_live_node_gets_the_notice_from_that_node(self):
        a = await self.connect("A", "B")  # first node
        one, two = (app.router for app in self.apps)
        self.inject("B", two.node, "ghost", "A")  # "B is on the second node": it is not
        await self.wait_for(lambda: one.directory.destinations("A", "B")[0])
        a.write_message("to nobody")
        await self.assert_next(a, test_signaling.PEER_UNAVAILABLE_NOTICE)
        self.assertEqual((one.routing.stale, one.undelivered), (1, 1))

    @test_signaling.testing.gen_test
    async def test_each_message_of_a_run_to_a_stale_entry_gets_its_notice(self):
        a = await self.connect("A", "B")
        one, two = (app.router for app in self.apps)
        self.inject("B", two.node, "ghost", "A")
        await self.wait_for(lambda: one.directory.destinations("A", "B")[0])
        for n in range(3):  # one loop iteration: one batch, one run of three messages
            a.write_message(f"to nobody {n}")
        for _ in range(3):
            await self.assert_next(a, test_signaling.PEER_UNAVAILABLE_NOTICE)
        self.assertEqual((one.routing.stale, one.undelivered), (3, 3))

    @test_signaling.testing.gen_test
    async def test_a_message_to_several_nodes_counts_every_answer(self):
        a = await self.connect("A", "B")
        one, two = (app.router for app in self.apps)
        self.inject("B", "deadbeef0000", "ghost", "A")  # a node that is gone: nobody reads its inbox
        b = await self.connect("B", "A")  # the real B, on the second node
        await self.wait_for(lambda: len(one.directory.destinations("A", "B")[0]) == 2)
        a.write_message("one of you")
        await self.assert_next(b, "one of you")  # the live node answers "delivered"
        await self.wait_for(lambda: not one.routing.pending)
        self.assertEqual(one.undelivered, 0)
        b.close()
        await self.wait_for(lambda: two.count("B") == 0)
        # The mirror may or may not know yet that B left: the answer is the same.
        a.write_message("none of you")
        await self.assert_next(a, test_signaling.PEER_UNAVAILABLE_NOTICE)
        self.assertEqual(one.undelivered, 1)

    @test_signaling.testing.gen_test
    async def test_no_message_vanishes_while_the_peer_closes_on_another_node(self):
        """Every message is either handed to one of B's sockets or answered with the notice:
        the window where a message counted as delivered was dropped between nodes is gone."""
        a = await self.connect("A", "B")
        b = await self.connect("B", "A")
        one, two = (app.router for app in self.apps)
        sent = 400
        for n in range(sent):
            a.write_message(f"m{n}")
            if n == 40:
                await self.assert_next(b, "m0")  # the stream flows...
                b.close()  # ...and B leaves while it is in flight
        await self.wait_for(lambda: one.relayed == sent and two.count("B") == 0, timeout=10)
        await self.wait_for(lambda: two.local.delivered + one.undelivered == sent, timeout=10)
        self.assertGreater(one.undelivered, 0)
        self.assertGreater(two.local.delivered, 0)


ON_TWO_NODES.append(TestExactAcrossNodes)
