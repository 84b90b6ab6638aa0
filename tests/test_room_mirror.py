"""routing/rooms.py with no socket and no Redis: a node's mirror of the others' pairs, whatever
order the roster's snapshots and the other nodes' frames reach it in."""

from __future__ import annotations

import json

from routing.rooms import FULL, LocalRoster, Rooms, Snapshot
from routing.wire import Batch


class Member:
    def __init__(self, id: str, room: str = "R") -> None:
        self.id, self.room, self.session_id = id, room, f"s-{id}"
        self.held: list[tuple[str, str]] | None = None
        self.heard: list[dict] = []

    def send(self, text: str) -> None:
        self.heard.append(json.loads(text))

    def send_all(self, texts: list[str]) -> None:
        for text in texts:
            self.send(text)


class Roster:
    """A roster whose answers the test gives by hand (as Redis' would come, later)."""

    def __init__(self) -> None:
        self.joins: list[tuple[str, str]] = []
        self.leaves: list[tuple[str, str]] = []
        self.settles: list[tuple[str, object]] = []

    def join(self, room, id, node, limit):
        self.joins.append((room, id))
        return _Pending()

    def leave(self, room, id, node, done):
        self.leaves.append((room, id))

    def settle(self, room, done):
        self.settles.append((room, done))


class _Pending:
    def __await__(self):
        yield  # never completes by itself: the test calls admitted()


def wait(rooms: Rooms, member: Member) -> None:
    """Register ``member``; its roster's answer is the test's to give (admitted())."""
    rooms.join(member, 6).close()  # (the coroutine that would await the roster)


def node(name: str = "here") -> tuple[Rooms, dict[str, Batch]]:
    batches: dict[str, Batch] = {}
    return Rooms(name, Roster(), lambda other: batches.setdefault(other, Batch())), batches


def events(member: Member) -> list[tuple[str, str]]:
    return [(m["event"], m.get("id", "")) for m in member.heard if m.get("msg_type") == "ROOM" and m["event"] != "members"]


def test_a_late_leave_cannot_undo_a_newer_snapshot_and_a_late_snapshot_cannot_undo_a_leave():
    rooms, _ = node()
    a = Member("A")
    wait(rooms, a)
    # B joined on node "there" at version 3 and left at version 5; its leave frame comes first.
    rooms.pair("there", "R", "B", 5, -1)
    assert rooms.admitted(a, Snapshot(4, {"B": 3, "A": 4}, {("B", "there"): 3, ("A", "here"): 4})) == ""
    assert a.heard[0]["members"] == []  # the snapshot's B was already gone
    # C's join (version 7) and a stale snapshot of another socket (version 6, without C).
    rooms.pair("there", "R", "C", 7, 7)
    assert events(a) == [("joined", "C")]
    a2 = Member("A")
    wait(rooms, a2)
    rooms.admitted(a2, Snapshot(6, {"A": 4}, {("A", "here"): 4}))
    assert a2.heard[0]["members"] == ["C"]  # C stays: its join is newer than the snapshot
    rooms.pair("there", "R", "C", 7, 7)  # the same frame twice changes nothing
    assert events(a) == [("joined", "C")]


def test_a_socket_waiting_for_its_roster_hears_nothing_then_members_then_what_came_meanwhile():
    rooms, _ = node()
    a = Member("A")
    wait(rooms, a)
    rooms.pair("there", "R", "B", 9, 2)  # B (there since version 2) announced meanwhile
    rooms.deliver("R", "B", "", '{"msg_type": "ROOM", "event": "message", "from": "B", "data": {"n": 1}}')
    rooms.deliver("R", "Z", "", '{"msg_type": "ROOM", "event": "message", "from": "Z", "data": {"n": 2}}')
    assert a.heard == []
    rooms.admitted(a, Snapshot(8, {"B": 2, "A": 8}, {("B", "there"): 2, ("A", "here"): 8}))
    assert a.heard[0] == {"msg_type": "ROOM", "event": "members", "room": "R", "members": ["B"]}
    # B's message follows; Z's is dropped (Z is no member A was told of).
    assert [m.get("data") for m in a.heard[1:]] == [{"n": 1}]


def test_an_id_is_present_while_any_node_holds_it_and_forgetting_a_node_makes_it_leave():
    rooms, batches = node()
    a = Member("A")
    wait(rooms, a)
    rooms.admitted(a, Snapshot(3, {"A": 1, "B": 2}, {("A", "here"): 1, ("B", "one"): 2, ("B", "two"): 3}))
    assert a.heard[0]["members"] == ["B"]
    assert set(batches) == {"one", "two"}  # A's pair announced to both nodes
    rooms.pair("one", "R", "B", 4, -1)  # B left node one, still on two: no event
    assert events(a) == []
    rooms.forget_node("two")
    assert events(a) == [("left", "B")]


def test_a_broadcast_makes_one_copy_per_node_and_a_to_goes_where_the_member_is():
    rooms, batches = node()
    a, a2 = Member("A"), Member("A")
    for member in (a, a2):
        wait(rooms, member)
    snapshot = Snapshot(5, {"A": 1, "B": 2, "C": 3}, {("A", "here"): 1, ("B", "one"): 2, ("C", "two"): 3, ("C", "one"): 4})
    rooms.admitted(a, snapshot)
    rooms.admitted(a2, snapshot)
    batches.clear()
    rooms.relay(a, '{"all": 1}')
    assert {node: batch.messages for node, batch in batches.items()} == {"one": 1, "two": 1}
    assert a2.heard[-1]["data"] == {"all": 1}
    batches.clear()
    rooms.relay(a, '{"to": "B"}')
    assert {node: batch.messages for node, batch in batches.items()} == {"one": 1}
    rooms.relay(a, '{"to": "D"}')
    assert a.heard[-1] == {"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE", "id": "D"}


def test_the_local_roster_counts_ids_and_forgets_an_empty_room():
    roster = LocalRoster()
    assert isinstance(roster.join("R", "A", "n", 2), Snapshot)
    assert isinstance(roster.join("R", "A", "n", 2), Snapshot)  # a second socket: no new id
    assert isinstance(roster.join("R", "B", "n", 2), Snapshot)
    assert roster.join("R", "C", "n", 2) == FULL
    answers = []
    roster.leave("R", "A", "n", answers.append)
    roster.leave("R", "B", "n", answers.append)
    assert roster.snapshot("R") is None
    later = roster.join("R", "C", "n", 2)
    assert isinstance(later, Snapshot) and later.version > answers[-1][0]  # versions never go back


def ready(rooms: Rooms, id: str = "A") -> Member:
    """``id``'s socket here, with its roster (the room as of version 1, nobody else)."""
    member = Member(id)
    wait(rooms, member)
    rooms.admitted(member, Snapshot(1, {id: 1}, {(id, "here"): 1}))
    return member


def test_visitors_coming_and_going_on_another_node_leave_no_trace_here():
    rooms, _ = node()
    a = ready(rooms)
    for n in range(1000):
        rooms.pair("there", "R", f"V{n}", 2 + 2 * n, 2 + 2 * n)
        rooms.pair("there", "R", f"V{n}", 3 + 2 * n, -1)
    assert events(a)[-2:] == [("joined", "V999"), ("left", "V999")] and len(events(a)) == 2000
    room = rooms.rooms["R"]
    assert (room.pairs, room.seq, room.remote, room.present) == ({}, {"A": 1}, {}, {"A": None})


def test_removed_pairs_are_kept_while_a_snapshot_is_on_its_way_then_forgotten():
    rooms, _ = node()
    a = ready(rooms)
    rooms.pair("there", "R", "B", 3, 3)
    assert events(a) == [("joined", "B")]
    a2 = Member("A")
    wait(rooms, a2)  # its snapshot (version 4, B still in) is on its way...
    rooms.pair("there", "R", "B", 5, -1)  # ...when B leaves
    assert rooms.rooms["R"].pairs == {("B", "there"): (5, False)}
    rooms.admitted(a2, Snapshot(4, {"A": 1, "B": 3}, {("A", "here"): 1, ("B", "there"): 3}))
    assert a2.heard[0]["members"] == []  # the late snapshot did not bring B back
    assert rooms.rooms["R"].pairs == {}  # and nothing is on its way any more


def test_a_late_frame_older_than_the_snapshot_makes_no_ghost():
    rooms, _ = node()
    a = Member("A")
    wait(rooms, a)
    rooms.admitted(a, Snapshot(10, {"A": 10}, {("A", "here"): 10}))
    # G joined at version 5 and left at 7 on "there", before the snapshot: its frames come late.
    rooms.pair("there", "R", "G", 5, 5)
    rooms.pair("there", "R", "G", 7, -1)
    assert events(a) == []
    assert a.heard[0]["members"] == []


def test_a_gone_nodes_pairs_are_kept_until_it_comes_back():
    rooms, _ = node()
    a = ready(rooms)
    rooms.pair("dead", "R", "X", 3, 3)
    rooms.forget_node("dead")
    assert events(a) == [("joined", "X"), ("left", "X")]
    # The reaper has not cleaned the roster yet: a new socket's snapshot still lists X there.
    a2 = Member("A")
    wait(rooms, a2)
    rooms.admitted(a2, Snapshot(6, {"A": 1, "X": 3}, {("A", "here"): 1, ("X", "dead"): 3}))
    assert a2.heard[0]["members"] == [] and events(a) == [("joined", "X"), ("left", "X")]
    # It wakes up and registers X again: X is back, and its old trace may go.
    rooms.pair("dead", "R", "X", 8, 8)
    rooms.pair("dead", "R", "X", 9, -1)
    assert events(a)[-2:] == [("joined", "X"), ("left", "X")]
    assert rooms.rooms["R"].pairs == {}


def test_after_the_roster_was_lost_a_pair_not_registered_again_yet_waits_for_a_second_reading():
    rooms, _ = node()
    a = ready(rooms)
    rooms.pair("there", "R", "B", 3, 3)
    rooms.pair("there", "R", "C", 4, 4)
    # Redis restarted empty: its epoch is 1000. This node registered A again before "there"
    # registered B and C: the snapshot lacks them, which says nothing yet.
    rooms.rejoining("R")
    rooms.rejoined("R", "A", Snapshot(1001, {"A": 1001}, {("A", "here"): 1001}, epoch=1000))
    assert events(a) == [("joined", "B"), ("joined", "C")]
    [(room, done)] = rooms.roster.settles
    assert room == "R"
    rooms.pair("there", "R", "B", 1002, 1002)  # "there" registers B again (C left meanwhile)
    done(Snapshot(1003, {"A": 1001, "B": 1002}, {("A", "here"): 1001, ("B", "there"): 1002}, epoch=1000))
    assert events(a) == [("joined", "B"), ("joined", "C"), ("left", "C")]
    assert rooms.rooms["R"].pairs == {("B", "there"): (1002, True)}
    # A snapshot of the same epoch is believed at once again.
    rooms.pair("there", "R", "D", 1004, 1004)
    a2 = Member("A")
    wait(rooms, a2)
    rooms.admitted(a2, Snapshot(1006, {"A": 1001}, {("A", "here"): 1001}, epoch=1000))
    assert events(a)[3] == ("joined", "D") and sorted(events(a)[4:]) == [("left", "B"), ("left", "D")]


def test_the_ids_of_a_node_counted_down_leave_and_come_back_whole_and_nothing_goes_there_meanwhile():
    rooms, batches = node()
    down: set[str] = set()
    rooms.down = down
    a = Member("A")
    wait(rooms, a)
    rooms.admitted(
        a, Snapshot(4, {"A": 1, "B": 2, "C": 3}, {("A", "here"): 1, ("B", "one"): 2, ("C", "two"): 3, ("C", "one"): 4})
    )
    down.add("one")  # routing/liveness.py counted node one down
    rooms.node_changed("one")
    assert events(a) == [("left", "B")]  # C is still on node two
    batches.clear()
    rooms.relay(a, '{"to": "B"}')
    assert a.heard[-1] == {"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE", "id": "B"}
    rooms.relay(a, '{"all": 1}')
    rooms.relay(a, '{"to": "C"}')
    assert {node: batch.messages for node, batch in batches.items()} == {"two": 2}
    down.discard("one")  # heard again: its pairs were kept
    rooms.node_changed("one")
    assert events(a) == [("left", "B"), ("joined", "B")]
    rooms.relay(a, '{"to": "B"}')
    assert batches["one"].messages == 1
