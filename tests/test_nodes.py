"""A node's routing state (routing/nodes.py) with no Redis: what it delivers here, what it
batches for other nodes, what it answers and how it treats the answers, and its mirror of the
directory. Two NodeRouting objects talk by handing each other the bytes of their batches, as
Redis would carry them."""

from __future__ import annotations

from dataclasses import dataclass, field

from routing import PEER_UNAVAILABLE_NOTICE, wire
from routing.nodes import JoinAcks, NodeRouting


@dataclass(eq=False)
class Socket:
    id: str
    peer_id: str
    session_id: str
    sent: list[str] = field(default_factory=list)

    def send(self, text: str) -> None:
        self.sent.append(text)

    def send_all(self, texts: list[str]) -> None:
        self.sent += texts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(name: str, clock: Clock | None = None) -> tuple[NodeRouting[Socket], list[int]]:
    wakes: list[int] = []
    return NodeRouting(name, lambda: wakes.append(1), clock or Clock()), wakes


def carry(source: NodeRouting[Socket], *destinations: NodeRouting[Socket]) -> None:
    """Hand every batch of ``source`` to its destination, as Redis would."""
    by_name = {d.node: d for d in destinations}
    for name, batch in source.take_batches().items():
        by_name[name].receive(batch.encode(source.node))


def joined(where: NodeRouting[Socket], socket: Socket, seen_by: NodeRouting[Socket]) -> None:
    """``seen_by`` mirrors ``socket``'s id and hears of its join on ``where``."""
    if not seen_by.mirror.loaded(socket.id):
        seen_by.mirror.want(socket.id)
        seen_by.mirror.snapshot(socket.id, {})
    seen_by.event(wire.joined(where.node, socket.id, socket.session_id, socket.peer_id).encode())


def test_a_message_to_a_socket_here_never_leaves_the_node():
    one, wakes = node("n1")
    alice, bob = Socket("alice", "bob", "s1"), Socket("bob", "alice", "s2")
    one.local.join(alice)
    one.local.join(bob)
    one.relay(alice, "hello")
    assert bob.sent == ["hello"] and one.batches == {} and wakes == []
    one.relay(Socket("carol", "dave", "s3"), "anyone?")
    assert one.undelivered == 1


def test_a_message_to_another_nodes_socket_is_batched_delivered_there_and_acknowledged():
    one, wakes = node("n1")
    two, _ = node("n2")
    alice, bob = Socket("alice", "bob", "s1"), Socket("bob", "alice", "s2")
    one.local.join(alice)
    two.local.join(bob)
    joined(two, bob, seen_by=one)
    carry(one, two)  # n1 acknowledges bob's join to n2
    peers, mine = one.directory.destinations("alice", "bob")
    assert (set(peers), set(mine)) == ({"n2"}, set())
    for text in ("one", "two", "three"):
        one.relay(alice, text)
    assert len(wakes) >= 1 and one.batches["n2"].messages == 3
    batch = one.batches["n2"]
    assert batch.fields.count("m") == 1 and batch.fields.count("+") == 2  # a run: its sockets found once
    carry(one, two)
    assert bob.sent == ["one", "two", "three"]
    assert two.batches == {}  # delivered: nothing to answer
    assert one.undelivered == 0


def test_a_stale_entry_gets_a_notice_per_message_from_the_node_that_found_nobody():
    one, _ = node("n1")
    two, _ = node("n2")
    alice, bob = Socket("alice", "bob", "s1"), Socket("bob", "alice", "s2")
    one.local.join(alice)
    joined(two, bob, seen_by=one)  # n1 believes bob is on n2, but he left there
    one.relay(alice, "a")
    one.relay(alice, "b")
    carry(one, two)
    assert sorted(two.batches) == ["n1"]
    carry(two, one)
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE] * 2
    assert one.stale == 2 and one.undelivered == 2


def test_a_message_to_several_nodes_counts_every_answer_and_times_out():
    clock = Clock()
    one, _ = node("n1", clock)
    two, _ = node("n2")
    three, _ = node("n3")
    alice = Socket("alice", "", "s1")
    alice.peer_id = "bob"
    one.local.join(alice)
    bob2, bob3 = Socket("bob", "alice", "b2"), Socket("bob", "alice", "b3")
    two.local.join(bob2)
    joined(two, bob2, seen_by=one)
    joined(three, bob3, seen_by=one)  # stale: nobody on n3
    one.take_batches()
    one.relay(alice, "both?")
    assert len(one.pending) == 1
    carry(one, two, three)
    carry(two, one)
    carry(three, one)
    assert bob2.sent == ["both?"] and one.pending == {} and one.undelivered == 0
    # A destination that never answers: counted as delivered after PENDING_TTL.
    one.relay(alice, "again")
    one.take_batches()
    clock.now += 11
    one.expire(clock.now)
    assert one.pending == {}


def test_a_batch_that_reached_no_node_is_answered_by_the_sender():
    one, _ = node("n1")
    alice = Socket("alice", "bob", "s1")
    one.local.join(alice)
    joined(node("n2")[0], Socket("bob", "alice", "s2"), seen_by=one)
    one.take_batches()
    one.relay(alice, "lost")
    (batch,) = one.take_batches().values()
    one.unreachable(batch)
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]
    one.relay(alice, "lost too")
    one.lose(one.take_batches().values())
    assert one.backplane_errors == 1 and alice.sent[-1] == PEER_UNAVAILABLE_NOTICE


def test_the_sockets_other_devices_on_other_nodes_get_a_copy_and_the_notice():
    one, _ = node("n1")
    two, _ = node("n2")
    alice, alice_phone = Socket("alice", "bob", "s1"), Socket("alice", "bob", "s9")
    one.local.join(alice)
    two.local.join(alice_phone)
    joined(two, alice_phone, seen_by=one)
    one.take_batches()
    one.relay(alice, "to bob, who is not here")
    assert alice.sent == [PEER_UNAVAILABLE_NOTICE]
    carry(one, two)
    assert alice_phone.sent == ["to bob, who is not here", PEER_UNAVAILABLE_NOTICE]


def test_events_wait_for_their_ids_snapshot_and_joins_are_acknowledged():
    one, _ = node("n1")
    assert one.mirror.want("bob") is True and one.mirror.want("bob") is False
    event = wire.joined("n2", "bob", "s2", "alice").encode()
    one.event(event)
    assert one.directory.count("bob") == 0  # buffered: the snapshot is on its way
    assert list(one.batches) == ["n2"]  # acknowledged at once all the same
    one.mirror.snapshot("bob", {"s7": wire.entry("n3", "alice")})
    assert one.directory.count("bob") == 2 and one.mirror.settled
    one.event(wire.left("n3", "bob", "s7").encode())
    assert one.directory.count("bob") == 1
    one.mirror.unwant("bob")
    assert one.mirror.unwant("bob") is True
    one.event(wire.joined("n2", "bob", "s8", "alice").encode())
    assert one.directory.count("bob") == 0  # no longer mirrored


def test_a_join_is_done_once_every_node_that_heard_it_acknowledged_it():
    one, _ = node("n1")
    done: list[int] = []
    one.joins["s1"] = JoinAcks(done=lambda: done.append(1))
    one.event(wire.joined("n1", "alice", "s1", "bob").encode())  # our own join, heard
    one.acked("s1")
    assert done == []  # how many heard it is not known yet
    one.joins["s1"].needed = 3
    one.joins["s1"].check()
    assert done == []
    two, _ = node("n2")
    two.mirror.want("alice")
    two.mirror.snapshot("alice", {})
    two.event(wire.joined("n1", "alice", "s1", "bob").encode())
    carry(two, one)
    assert done == [1]


def test_a_full_outbox_sheds_cross_node_copies():
    import routing.nodes

    one, _ = node("n1")
    alice = Socket("alice", "bob", "s1")
    one.local.join(alice)
    joined(node("n2")[0], Socket("bob", "alice", "s2"), seen_by=one)
    limit = routing.nodes.OUTBOX_LIMIT
    routing.nodes.OUTBOX_LIMIT = 0
    try:
        one.relay(alice, "shed")
    finally:
        routing.nodes.OUTBOX_LIMIT = limit
    assert one.backplane_errors == 1 and alice.sent == [PEER_UNAVAILABLE_NOTICE]


def test_a_leaving_node_answers_what_was_not_receipted_to_every_node_it_hears():
    one, _ = node("n1")
    two, _ = node("n2")
    three, _ = node("n3")
    alice, bob = Socket("alice", "bob", "s1"), Socket("bob", "alice", "s2")
    one.local.join(alice)
    joined(two, bob, seen_by=one)
    one.relay(alice, "the last word")
    one.take_batches()  # published to n2, which never answers
    assert one.unanswered()
    # Shutting down: alice's socket here closed, she reconnected on n3, which n1's mirror
    # (no longer following the directory) does not know; n1 hears n2 and n3 beat.
    one.local.leave(alice)
    again = Socket("alice", "bob", "s3")
    three.local.join(again)
    one.beat("n2", False)
    one.beat("n3", False)
    one.leaving = True
    one.give_up()
    assert not one.liveness.outstanding and one.unreceipted == 1
    carry(one, two, three)
    assert again.sent == [PEER_UNAVAILABLE_NOTICE]
    assert not one.unanswered()
