"""Rooms across real server processes on one redis-server: a node killed, frozen or stopped
with members in a room; the others hear them leave."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack

import pytest
from conftest import running
from test_cluster_process import NODE_TTL, node
from websockets.sync.client import connect

from processes import RedisServer, wait_until


@pytest.fixture
def redis():
    with running(RedisServer()) as server:
        yield server


def enter(stack: ExitStack, server, my_id: str, room: str = "R") -> tuple[object, dict]:
    ws = stack.enter_context(connect(f"{server.ws}/wsroom?id={my_id}&room={room}"))
    return ws, json.loads(ws.recv(timeout=10))


def next_event(ws, timeout: float) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def alice_and_bob(stack: ExitStack, one, two) -> tuple[object, object]:
    """alice in room R on node one, bob on node two, and alice has heard bob join."""
    alice, roster = enter(stack, one, "alice")
    assert roster["members"] == []
    bob, roster = enter(stack, two, "bob")
    assert roster["members"] == ["alice"]
    assert next_event(alice, 5) == {"msg_type": "ROOM", "event": "joined", "room": "R", "id": "bob"}
    return alice, bob


def test_members_on_a_killed_node_leave_for_the_others_once_it_is_reaped(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = alice_and_bob(stack, one, two)
        bob.send('{"to": "alice", "hello": 1}')
        assert next_event(alice, 5)["data"] == {"to": "alice", "hello": 1}
        os.kill(two.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        start = time.monotonic()
        # As its sockets leave the directory: once its presence expires (NODE_TTL and a refresh).
        assert next_event(alice, NODE_TTL * 4 / 3 + 3) == {"msg_type": "ROOM", "event": "left", "room": "R", "id": "bob"}
        assert time.monotonic() - start < NODE_TTL * 4 / 3 + 3
        # Its place is free again, in the roster too.
        carol, roster = enter(stack, one, "carol")
        assert roster["members"] == ["alice"]


def test_members_of_a_stopped_node_leave_at_once(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = alice_and_bob(stack, one, two)
        two.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert next_event(alice, 3) == {"msg_type": "ROOM", "event": "left", "room": "R", "id": "bob"}
        wait_until(lambda: two.proc.poll() is not None, 10, "the node to stop")  # type: ignore[union-attr]
        dave, roster = enter(stack, one, "dave")
        assert roster["members"] == ["alice"]


def test_a_frozen_node_is_reaped_and_its_members_come_back_when_it_wakes(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = alice_and_bob(stack, one, two)
        pid = two.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert next_event(alice, NODE_TTL * 4 / 3 + 3)["event"] == "left"
        finally:
            os.kill(pid, signal.SIGCONT)
        # Awake, it finds it was reaped, registers its sockets again and says so.
        assert next_event(alice, NODE_TTL * 4 / 3 + 5) == {"msg_type": "ROOM", "event": "joined", "room": "R", "id": "bob"}
        bob.send('{"back": true}')
        assert next_event(alice, 5)["data"] == {"back": True}


def test_after_redis_restarts_empty_room_versions_go_on_from_the_clock_and_changes_still_count(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        for _ in range(10):  # comings and goings on node one: its mirror has seen versions grow
            with connect(f"{one.ws}/wsroom?id=visitor&room=R") as visitor:
                visitor.recv(timeout=10)
        alice, _ = enter(stack, one, "alice")
        redis.stop()
        redis.start()  # the same port, empty: no persistence, every room version gone
        with redis.client() as client:
            pairs = lambda: [client.hlen(key) for key in client.keys("*room-pairs*")]  # noqa: E731
            wait_until(lambda: pairs() == [1], 15, "node one to register alice again")
            version = int(client.get(client.keys("*room-version*")[0]))
        assert version > time.time() * 1_000_000 - 60_000_000  # started from the clock, not from 0
        # Versions after the restart are newer than what node one saw before it.
        bob, roster = enter(stack, two, "bob")
        assert roster["members"] == ["alice"]
        assert next_event(alice, 5) == {"msg_type": "ROOM", "event": "joined", "room": "R", "id": "bob"}
        bob.close()
        assert next_event(alice, 5) == {"msg_type": "ROOM", "event": "left", "room": "R", "id": "bob"}


def quiet(ws, seconds: float) -> list[dict]:
    """What ``ws`` hears within ``seconds``."""
    heard, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            heard.append(next_event(ws, left))
        except TimeoutError:
            break
    return heard


def test_after_redis_restarts_a_member_whose_node_registers_it_late_never_leaves(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = alice_and_bob(stack, one, two)
        pid = one.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)  # node one will register alice again late
        try:
            redis.stop()
            redis.start()  # empty
            with redis.client() as client:
                # Node two has registered bob again: its snapshot has no alice yet.
                wait_until(lambda: [client.hlen(key) for key in client.keys("*room-pairs*")] == [1], 10, "node two")
                time.sleep(0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        with redis.client() as client:
            wait_until(lambda: [client.hlen(key) for key in client.keys("*room-pairs*")] == [2], 10, "node one")
        alice.send('{"to": "bob", "still": "here"}')
        # Bob heard no "left" for alice and no "joined": only her message.
        message = {"msg_type": "ROOM", "event": "message", "room": "R", "from": "alice", "data": {"to": "bob", "still": "here"}}
        assert quiet(bob, 2.0) == [message]


def test_a_member_who_left_while_redis_was_down_leaves_for_the_others_once_the_roster_is_read_again(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = alice_and_bob(stack, one, two)
        with connect(f"{one.ws}/wsroom?id=dave&room=R") as dave:
            dave.recv(timeout=10)
            assert next_event(bob, 5)["id"] == "dave"
            redis.stop()
        # dave left while Redis was down: nobody could be told.
        redis.start()  # empty: node one registers only alice again
        started = time.monotonic()
        assert next_event(bob, NODE_TTL * 4 / 3 + 5) == {"msg_type": "ROOM", "event": "left", "room": "R", "id": "dave"}
        assert time.monotonic() - started < NODE_TTL * 4 / 3 + 5
        # On dave's own node it was known at once, Redis or not.
        assert [(m["event"], m["id"]) for m in quiet(alice, 0.5)] == [("joined", "dave"), ("left", "dave")]
