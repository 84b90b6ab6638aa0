"""routing/directory.py: a node's mirror of where the other nodes' sockets are."""

from __future__ import annotations

from routing.directory import Directory
from routing.wire import entry


def test_destinations_follow_the_rules_across_nodes():
    mirror = Directory("me")
    for id in ("alice", "bob"):
        mirror.track(id)
    mirror.add("bob", "b1", "n2", "alice")  # bob talks to alice on n2: rule 1
    mirror.add("bob", "b2", "n3", "")  # bob hears anyone on n3: rule 1 too
    mirror.add("bob", "b3", "n4", "carol")  # bob talks to carol on n4: not for alice
    mirror.add("alice", "a2", "n5", "bob")  # alice's other device on n5: rule 2
    mirror.add("alice", "a3", "me", "bob")  # this node's own sockets are not mirrored
    peers, mine = mirror.destinations("alice", "bob")
    assert set(peers) == {"n2", "n3"}
    assert set(mine) == {"n5"}
    assert mirror.count("alice") == 1


def test_a_snapshot_replaces_and_leaves_remove_and_nodes_are_forgotten():
    mirror = Directory("me")
    mirror.track("bob")
    mirror.add("bob", "stale", "n9", "alice")
    mirror.load("bob", {"b1": entry("n2", "alice"), "b2": entry("n2", "alice"), "b0": entry("me", "alice")})
    assert set(mirror.destinations("alice", "bob")[0]) == {"n2"}
    assert mirror.count("bob") == 2
    mirror.remove("bob", "b1")
    assert set(mirror.destinations("alice", "bob")[0]) == {"n2"}  # b2 is still there
    mirror.forget_node("n2")
    assert mirror.destinations("alice", "bob") == ((), ())
    mirror.remove("bob", "never-there")  # harmless


def test_ids_not_tracked_are_ignored():
    mirror = Directory("me")
    mirror.add("bob", "b1", "n2", "alice")  # a late event for an id no longer mirrored
    mirror.load("bob", {"b1": entry("n2", "alice")})
    assert mirror.destinations("alice", "bob") == ((), ())
    mirror.track("bob")
    mirror.untrack("bob")
    assert mirror.tracked() == []
