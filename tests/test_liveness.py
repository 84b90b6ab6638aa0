"""Receipts and beats (routing/liveness.py) in a node's routing state, with no Redis: a node
that takes no batch, or falls silent, is counted down within the wait and its senders told
exactly once; a node that hears nothing is cut off. tests/test_faults.py has the same over real
processes and real faults."""

from __future__ import annotations

import pytest
from test_nodes import Clock, Socket, carry, joined

from routing import PEER_UNAVAILABLE_NOTICE, wire
from routing.liveness import Timing
from routing.nodes import NodeRouting


def pair(clock: Clock) -> tuple[NodeRouting[Socket], NodeRouting[Socket], Socket, Socket]:
    """alice on n1, bob on n2, each mirroring the other."""
    one = NodeRouting("n1", lambda: None, clock)
    two = NodeRouting("n2", lambda: None, clock)
    alice, bob = Socket("alice", "bob", "s1"), Socket("bob", "alice", "s2")
    one.local.join(alice)
    two.local.join(bob)
    joined(two, bob, seen_by=one)
    joined(one, alice, seen_by=two)
    carry(one, two)
    carry(two, one)
    for routing in (one, two):  # both hear every beat so far
        for name in ("n1", "n2"):
            routing.beat(name, False)
    return one, two, alice, bob


def beats(routing: NodeRouting[Socket], *names: str) -> None:
    for name in names:
        routing.beat(name, False)


def kinds(batch: wire.Batch) -> list[str]:
    fields, found, i = batch.fields, [], 0
    while i < len(fields):
        found.append(fields[i])
        i += 1 + wire.FIELDS[fields[i]]
    return found


def test_a_batch_with_messages_is_numbered_and_its_receipt_rides_back_or_leaves_at_the_next_tick():
    clock = Clock()
    one, two, alice, bob = pair(clock)
    one.relay(alice, "hi")
    batch = one.take_batches()["n2"]
    assert kinds(batch) == ["m", "S"] and batch.number == 1
    assert list(one.liveness.outstanding["n2"]) == [1]
    two.receive(batch.encode("n1"))
    assert bob.sent == ["hi"]
    bob_says = Socket("bob", "alice", "s2")
    two.relay(bob_says, "hello back")  # the receipt rides on what n2 sends anyway
    back = two.take_batches()["n1"]
    assert kinds(back) == ["m", "K", "S"]
    one.receive(back.encode("n2"))
    assert one.liveness.outstanding["n2"] == {}
    assert alice.sent == ["hello back"]
    # With nothing to send, n1's receipt for n2's batch leaves at the next tick, on its own.
    assert one.batches == {}
    one.tick(clock.now)
    alone = one.take_batches()["n2"]
    assert kinds(alone) == ["K"] and alone.number == 0


def test_a_node_that_gives_no_receipt_is_down_within_the_wait_and_each_sender_told_once():
    clock = Clock()
    one, two, alice, _ = pair(clock)
    one.relay(alice, "one")
    one.take_batches()  # published, and never taken (n2 is frozen)
    clock.now += 0.5
    one.relay(alice, "two")
    one.take_batches()
    clock.now += one.timing.wait - 0.6  # the first batch is 0.1 s inside the wait
    beats(one, "n1", "n2")  # both still beat: only the receipt is missing
    one.tick(clock.now)
    assert alice.sent == [] and not one.down
    clock.now += 0.2  # the first batch is past the wait
    beats(one, "n1", "n2")
    one.tick(clock.now)
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE] * 2  # both batches answered, once each
    assert set(one.down) == {"n2"} and one.unreceipted == 2 and one.liveness.nodes_lost == 1
    beats(one, "n1")
    one.tick(clock.now + 0.1)
    assert len(alice.sent) == 2
    # Meanwhile: at once, and nothing is published for n2.
    one.relay(alice, "three")
    assert alice.sent[-1] == PEER_UNAVAILABLE_NOTICE and len(alice.sent) == 3
    assert "n2" not in one.batches
    # A late receipt changes nothing: every message was answered already, and none twice.
    one.receive(_receipt("n2", 2))
    assert len(alice.sent) == 3


def _receipt(sender: str, number: int) -> bytes:
    batch = wire.Batch()
    batch.receipt(str(number))
    return batch.encode(sender)


def test_a_down_node_heard_again_is_reachable_at_once():
    clock = Clock()
    one, two, alice, bob = pair(clock)
    one.relay(alice, "lost")
    one.take_batches()
    clock.now += one.timing.wait + 0.1
    beats(one, "n1")
    one.tick(clock.now)
    assert "n2" in one.down
    one.beat("n2", False)
    assert not one.down and one.liveness.ended and one.liveness.ended[0][0] == "n2"
    one.relay(alice, "welcome")
    carry(one, two)
    assert bob.sent == ["welcome"]


def test_a_silent_node_goes_down_and_one_that_says_it_hears_nothing_too():
    clock = Clock()
    one, _, alice, _ = pair(clock)
    clock.now += one.timing.wait - 0.05
    one.beat("n1", False)  # n1 hears itself, not n2
    one.tick(clock.now)
    assert not one.down
    clock.now += 0.1
    one.beat("n1", False)
    one.tick(clock.now)
    assert set(one.down) == {"n2"} and "no beat" in one.down["n2"].why
    one.beat("n2", False)
    assert not one.down
    one.beat("n2", True)  # its own beat says it is deaf: counted down at once
    assert "hears nothing" in one.down["n2"].why
    one.relay(alice, "x")
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]


def test_a_node_that_does_not_hear_its_own_beat_is_cut_off_and_counts_the_others_down():
    clock = Clock()
    one, _, alice, _ = pair(clock)
    carol, dave = Socket("carol", "dave", "s3"), Socket("dave", "carol", "s4")
    one.local.join(carol)
    one.local.join(dave)
    one.relay(alice, "in flight")
    one.take_batches()
    clock.now += one.timing.wait + 0.1
    one.beat("n2", False)  # the others still beat: it is n1 that hears nothing of its own
    one.tick(clock.now)
    assert one.liveness.cut_off_since == clock.now and "n2" in one.down
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]
    carol.send, sent = (lambda text: None), dave.sent
    one.relay(carol, "local conversations go on")
    assert sent == ["local conversations go on"]
    one.beat("n2", False)  # heard while cut off: still down, until n1 hears itself
    assert "n2" in one.down
    one.beat("n1", False)
    assert one.liveness.cut_off_since is None
    one.beat("n2", False)
    assert not one.down


def test_a_batch_lost_on_the_way_out_is_answered_once_whatever_comes_later():
    clock = Clock()
    one, _, alice, _ = pair(clock)
    one.relay(alice, "into the void")
    batches = one.take_batches()
    one.lose(batches.values())  # the publishing connection broke
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]
    clock.now += one.timing.wait + 0.1
    one.tick(clock.now)  # no receipt either: but it was answered already
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]


def test_an_outbox_the_publisher_cannot_send_is_answered_within_the_wait():
    clock = Clock()
    one, _, alice, _ = pair(clock)
    one.relay(alice, "stuck")  # the publisher never takes it (stuck on a dead link)
    clock.now += one.timing.wait + 0.1
    one.tick(clock.now)
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE] and one.batches == {} and one.queued == 0


def test_the_bound_sets_every_period_and_has_a_range():
    timing = Timing(2.0)
    assert (timing.wait, timing.beat, timing.tick) == (pytest.approx(1.4), 0.25, 0.1)
    for bad in (0.1, 0, -1, 61):
        with pytest.raises(ValueError, match="DELIVERY_BOUND"):
            Timing(bad)


def test_a_node_that_was_not_running_itself_gives_everyone_a_fresh_wait_instead_of_counting_them_down():
    clock = Clock()
    one, _, alice, _ = pair(clock)
    one.tick(clock.now)
    one.relay(alice, "before the freeze")
    one.take_batches()
    clock.now += 5.0  # n1 itself was frozen (SIGSTOP) or its loop blocked: nothing read meanwhile
    one.tick(clock.now)
    assert not one.down and one.liveness.cut_off_since is None and alice.sent == []
    one.receive(_receipt("n2", 1))  # the backlog it reads next has n2's receipt and beats
    beats(one, "n1", "n2")
    clock.now += one.timing.wait
    one.tick(clock.now)
    assert not one.down and alice.sent == []


def test_a_join_waits_half_the_bound_at_most_two_seconds():
    # What a new socket sends while its join waits is held: it must still arrive within the bound.
    assert Timing(2.0).join == 1.0 and Timing(0.5).join == 0.25 and Timing(60.0).join == 2.0


def test_a_beat_of_its_own_that_comes_back_slow_makes_a_node_busy_for_the_wait():
    clock = Clock()
    one = NodeRouting("n1", lambda: None, clock)
    liveness, timing = one.liveness, one.timing
    liveness.sent_beat(clock.now)
    clock.now += timing.slow / 2
    one.beat("n1", False)  # back in time
    assert not liveness.busy(clock.now)
    liveness.sent_beat(clock.now)
    liveness.sent_beat(clock.now + 0.1)
    liveness.beat_failed()  # the second could not be published
    clock.now += timing.slow * 2
    one.beat("n1", False)
    assert liveness.busy(clock.now) and not liveness.beats_out
    clock.now += timing.wait - 0.01
    assert liveness.busy(clock.now)
    clock.now += 0.02
    assert not liveness.busy(clock.now)
    liveness.sent_beat(clock.now)
    liveness.started(clock.now)  # a new connection: what was on its way is not awaited
    assert not liveness.beats_out
