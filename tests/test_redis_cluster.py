"""The signaling suites again, on two nodes joined by a real Redis Cluster.

Three masters with a replica each, started as an operator would (tests/processes.py). The
same ``--redis URL`` as for one redis-server: the backplane finds out it is a cluster, and
its keys and sharded channels spread over the three shards.
"""

from __future__ import annotations

import os
import unittest

import test_caller
import test_cluster
import test_connections
import test_reciever
import test_rooms
import test_signaling

from processes import MissingProgram, RedisCluster

CLUSTER: RedisCluster | None = None


def setUpModule() -> None:
    global CLUSTER
    # conftest's require() rule, for unittest: skip, but fail under CI.
    try:
        CLUSTER = RedisCluster().start()
    except MissingProgram as missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(f"{missing} (CI=true: a missing component is a failure)") from None
        raise unittest.SkipTest(str(missing)) from None
    for suite in ON_A_CLUSTER:
        suite.redis = CLUSTER


def tearDownModule() -> None:
    if CLUSTER is not None:
        CLUSTER.stop()


class TestCallerAppOnACluster(test_caller.TestCallerApp):
    pass


class TestRecieverAppOnACluster(test_reciever.TestRecieverApp):
    pass


class TestDeliveryOnACluster(test_signaling.TestDelivery):
    pass


class TestBadRequestsOnACluster(test_signaling.TestBadRequests):
    pass


class TestConnectionsOnACluster(test_connections.TestConnections):
    pass


class TestClusterWideLimitsOnACluster(test_cluster.TestClusterWideLimits):
    pass


class TestExactOnACluster(test_cluster.TestExactAcrossNodes):
    pass


class TestRoomsOnACluster(test_rooms.TestRooms):
    pass


class TestRoomRaceOnACluster(test_rooms.TestRoomRace):
    pass


class TestTheClusterIsReal(test_signaling.BasicTestCase):
    @test_signaling.testing.gen_test
    async def test_the_nodes_see_a_cluster_and_use_every_shard(self):
        assert CLUSTER is not None
        for app in self.apps:
            self.assertTrue(app.router.topology.cluster)
            self.assertEqual(len(app.router.topology.masters()), 3)
        # Ids spread over the shards: the directories of these ids live on all three.
        ids = [f"user{n}" for n in range(12)]
        for n in range(0, len(ids), 2):
            await self.connect(ids[n], ids[n + 1])
            await self.connect(ids[n + 1], ids[n])
        router = self.apps[0].router
        shards = {router.topology.address(router.keys.directory(my_id)) for my_id in ids}
        self.assertEqual(len(shards), 3)
        a = self.sockets[0]
        a.write_message("across the cluster")
        await self.assert_next(self.sockets[1], "across the cluster")


ON_A_CLUSTER = [
    TestRoomsOnACluster,
    TestRoomRaceOnACluster,
    TestCallerAppOnACluster,
    TestRecieverAppOnACluster,
    TestDeliveryOnACluster,
    TestBadRequestsOnACluster,
    TestConnectionsOnACluster,
    TestClusterWideLimitsOnACluster,
    TestExactOnACluster,
    TestTheClusterIsReal,
]
