"""A Redis Cluster loses a master: real server processes recover by themselves, and the
signaling suites pass again on the cluster that failed over."""

from __future__ import annotations

import io
import re
import time
import unittest
from contextlib import ExitStack

import pytest
import test_caller
import test_signaling
from conftest import running
from test_cluster_process import NODE_TTL, connections, join, node, receive

from processes import RedisCluster, wait_until

#: Longest the cluster may take to carry messages again after a master dies: Redis' own
#: failover (cluster-node-timeout 1 s, then an election), plus the nodes' reconnection.
RECOVERY_BOUND = 10.0


@pytest.fixture
def cluster():
    with running(RedisCluster()) as started:
        yield started


def node_name(server) -> str:
    return re.search(r", node ([0-9a-f]+)\)", server.wait_for_line(r"listening on")).group(1)  # type: ignore[union-attr]


def inbox_key(node: str) -> str:
    from routing.redis.shards import tag

    return f"webrtc:inbox:{tag(node)}"


def test_a_master_dies_and_the_cluster_carries_messages_again_within_the_bound(cluster):
    with node(cluster) as one, node(cluster) as two, ExitStack() as stack:
        assert "connected to Redis Cluster" in one.wait_for_line("connected to Redis")
        alice = join(stack, one, "alice", "bob")
        bob = join(stack, two, "bob", "alice", seen_from=one)
        alice.send("before")
        assert receive(bob) == "before"
        # Kill the master that holds the receiving node's inbox: the worst place.
        victim = cluster.owner(inbox_key(node_name(two)))
        killed = time.monotonic()
        cluster.kill(victim)

        def flows() -> bool:
            alice.send("probe")
            got = receive(bob, 0.2)
            while got is not None and got != "probe":
                got = receive(bob, 0.2)
            return got == "probe"

        wait_until(flows, RECOVERY_BOUND, "messages to cross the cluster again")
        took = time.monotonic() - killed
        print(f"\nmessages crossed again {took:.1f} s after the master was killed (bound {RECOVERY_BOUND} s)")
        assert victim not in cluster.masters()
        while receive(alice, 0.3) is not None:
            pass  # the notices for the probes that were lost meanwhile
        # Everything works again: both ways, the directory, a new pair, exact notices.
        bob.send("and back")
        assert receive(alice) == "and back"
        assert [c["peer"] for c in connections(one, "bob")] == ["alice"]
        carol = join(stack, two, "carol", "dave")
        dave = join(stack, one, "dave", "carol", seen_from=two)
        carol.send("new pair")
        assert receive(dave) == "new pair"
        bob.close()
        wait_until(lambda: connections(one, "bob") == [], NODE_TTL * 2, "bob to leave")
        alice.send("anyone?")
        assert receive(alice) == test_signaling.PEER_UNAVAILABLE_NOTICE
        # The nodes' --redis URL names one node; when that one dies, they find the others.
        url_node = int(one.args[one.args.index("--redis") + 1].rsplit(":", 1)[1].split("/")[0])
        if url_node in cluster.masters():
            killed = time.monotonic()
            cluster.kill(url_node)
            dave_flows = lambda: carol.send("again") or receive(dave, 0.3) == "again"  # noqa: E731
            wait_until(dave_flows, RECOVERY_BOUND, "messages to cross again after the URL's node died")
            print(f"and {time.monotonic() - killed:.1f} s after the master named by --redis was killed")
        # The cluster suites pass again on the cluster that failed over.
        suites = [test_signaling.TestDelivery, test_signaling.TestBadRequests, test_caller.TestCallerApp]
        loader = unittest.TestLoader()
        tests = unittest.TestSuite(
            loader.loadTestsFromTestCase(type(f"{suite.__name__}AfterFailover", (suite,), {"redis": cluster})) for suite in suites
        )
        result = unittest.TextTestRunner(verbosity=0, stream=io.StringIO()).run(tests)
        assert result.wasSuccessful(), result.failures + result.errors
        assert result.testsRun >= 15
