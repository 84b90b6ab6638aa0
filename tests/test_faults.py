"""The fault checker (bench/faults.py) over real processes: two nodes on one real redis-server,
conversations exchanging numbered messages while a node is killed, frozen for 5 s, frozen long
enough to be reaped, cut off from Redis (both ways, one way, or on a slow and lossy link: in
network namespaces), or Redis restarts. Whatever happens, every message is delivered within the
bound or its sender is told within it: none late without a notice, none lost, none twice, none
out of order. This is the short form CI runs; ``python -m bench.faults`` is the long one."""

from __future__ import annotations

import pytest
from conftest import require

from bench.faults import DELAY, FAULTS, NETWORK_FAULTS, Link, Verdict, classify, run_fault
from bench.netns import missing_tools

from processes import MissingProgram

BOUND = 2.0


def checked(key: str, tmp_path) -> Verdict:
    if key in NETWORK_FAULTS:
        missing = missing_tools()
        require(missing is None, f"network namespaces ({missing})", "run as root with iproute2 and nftables")
    try:
        verdict = run_fault(key, BOUND, short=True, folder=str(tmp_path))
    except MissingProgram as missing:
        require(None, missing.what, missing.install)
    logs = "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(tmp_path.glob("*.log")))
    assert verdict.holds, f"{verdict}\n{logs}"
    return verdict


@pytest.mark.parametrize("key", list(FAULTS))
def test_every_message_is_delivered_in_time_or_its_sender_told_through_the_fault(key, tmp_path):
    verdict = checked(key, tmp_path)
    if key == "lossy":
        # A slow, lossy link within the bound: every crossing 200 ms slower, everything in time (or told).
        assert verdict.during_p50_ms is not None and verdict.during_p50_ms >= DELAY * 1000 * 0.9, verdict
    else:
        # The fault was felt (messages not delivered in time were answered), and told within the bound.
        assert verdict.counts["notified"] > 0, verdict
        assert verdict.detect is not None and verdict.detect <= BOUND, verdict
    # Healed, every conversation delivers in time again within a few seconds (the checker
    # goes on for 6 s after the heal, 10 s for a cluster: one that never recovered shows that);
    # a Redis Cluster fails over by itself first (about 2 s with a node timeout of 1 s).
    assert verdict.converge is not None and verdict.converge < (8.0 if key == "cluster" else 4.0), verdict
    # And /connections agrees with the sockets open, on every node (checked(): holds).
    assert verdict.consistent is not None, verdict
    if key in ("kill", "stop5", "stop20", "cut", "cut-in", "cut-out"):
        # Its room members leave for the others within the bound too (one room per pair).
        assert verdict.rooms_left == 3 and verdict.left is not None and verdict.left <= BOUND, verdict
    if key in ("cut", "cut-in", "cut-out"):
        # The node cut off says so within the bound: /healthz?ready=1 503, the metric 1.
        assert verdict.said_cut_off is not None and verdict.said_cut_off <= BOUND, verdict


def test_the_classification_of_each_kind_of_outcome():
    link = Link("a>b", "", "")
    link.sent = {1: 0.0, 2: 1.0, 3: 2.0, 4: 3.0, 5: 4.0, 6: 5.0, 7: 6.0}
    link.arrivals = [(1, 0.1), (2, 1.1), (2, 1.2), (4, 3.1), (3, 3.2), (6, 9.0)]
    # 5 is told in time; 6 is told too late (it arrives late too); 7 is never told nor delivered.
    link.notices = [4.5, 8.5]
    verdict = classify([link], 2.0, fault_at=3.5, healed_at=6.0, fault="made up")
    expected = {"in_time": 4, "notified": 1, "late": 1, "lost": 1, "duplicated": 1, "out_of_order": 1, "sender_closed": 0}
    assert verdict.counts == expected
    assert not verdict.holds
    assert verdict.detect == pytest.approx(1.0)  # the notice of 5, 1 s after the fault
    assert verdict.converge == pytest.approx(0.0)  # 7, sent at the heal, was the last one missed


def test_a_notice_answers_a_message_of_the_connection_it_came_on():
    # A worker's restart: 1-3 were sent on a socket it closed (nobody left to tell), 4 and 5 on
    # the socket that replaced it, and the two notices came on that one: they answer 4 and 5.
    link = Link("a>b", "", "")
    link.sent = {1: 0.0, 2: 0.1, 3: 0.2, 4: 0.5, 5: 0.6}
    link.sender_closed = [0.3]
    link.notices = [0.7, 0.8]
    verdict = classify([link], 2.0, fault_at=0.0, healed_at=1.0, fault="a restart")
    assert verdict.counts["notified"] == 2 and verdict.counts["sender_closed"] == 3, verdict.counts
    assert verdict.counts["lost"] == 0
    # A notice on the newer socket may still answer an older one's message (the same node told
    # the conversation), when nothing of its own connection is waiting.
    link.sent = {1: 0.0, 2: 2.5}
    link.notices = [0.9]
    assert classify([link], 2.0, fault_at=0.0, healed_at=1.0, fault="a restart").counts["notified"] == 1


def test_order_is_kept_per_pair_of_sockets():
    # 2 and 3 were sent on a socket the server closed, 4 on its replacement, which arrived first:
    # crossed a reconnection, not out of order. 6 after 7 on one socket is out of order.
    link = Link("a>b", "", "")
    link.sent = {1: 0.0, 2: 0.1, 3: 0.2, 4: 0.6, 5: 0.7, 6: 0.8, 7: 0.9}
    link.sender_closed = [0.3]
    link.arrivals = [(1, 0.05), (4, 0.65), (2, 0.7), (3, 0.7), (5, 0.75), (7, 0.95), (6, 1.0)]
    verdict = classify([link], 2.0, fault_at=0.0, healed_at=1.0, fault="a restart")
    assert verdict.crossed == 2 and verdict.counts["out_of_order"] == 1, (verdict.crossed, verdict.counts)
