"""Rooms (``/wsroom``), rule by rule, as docs/protocol.md words them, over real sockets.

:class:`TestRooms` runs on one node here; test_rooms_cluster.py runs it again on two nodes
of one redis-server and of a Redis Cluster, every member on another node than the one before.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado import websocket

from test_common import BasicTestCase, on_both_transports, testing

BAD_MESSAGE = {"msg_type": "SERVER_NOTICE", "message": "BAD-MESSAGE"}


def unavailable(id: str) -> dict[str, str]:
    return {"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE", "id": id}


def members(room: str, ids: list[str]) -> dict[str, Any]:
    return {"msg_type": "ROOM", "event": "members", "room": room, "members": ids}


def event(kind: str, room: str, id: str) -> dict[str, str]:
    return {"msg_type": "ROOM", "event": kind, "room": room, "id": id}


class RoomTestCase(BasicTestCase):
    """Room sockets on the test's nodes: each new socket on the node after the last one's."""

    def setUp(self) -> None:
        super().setUp()
        self._next_node = 0

    def room_sockets(self) -> list[Any]:
        return [m for app in self.apps for m in app.router.rooms.members()]

    def settled(self) -> bool:
        return super().settled()

    async def enter(
        self, my_id: str, room: str = "R", node: int | None = None, **extra: str
    ) -> websocket.WebSocketClientConnection:
        """Open a room socket (on ``node``, or the next node) and read its ``members`` frame
        (kept in ``conn.roster``), or its close."""
        if node is None:
            node = self._next_node % len(self.ports)
            self._next_node += 1
        query = {"id": my_id, "room": room, **extra}
        conn = await websocket.websocket_connect(self.make_url("/wsroom", node=node, **query))
        self.sockets.append(conn)
        first = await self.read(conn)
        conn.roster = json.loads(first) if first is not None else None  # type: ignore[attr-defined]
        await self.wait_for(lambda: True)  # what it changed has reached every node
        return conn

    async def next_json(self, conn: websocket.WebSocketClientConnection, timeout: float = 3.0) -> Any:
        text = await self.read(conn, timeout)
        return None if text is None else json.loads(text)

    async def silent(self, conn: websocket.WebSocketClientConnection, seconds: float = 0.15) -> bool:
        try:
            message = await asyncio.wait_for(conn.read_message(), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"expected nothing, got {message!r}")

    async def drain(self, conn: websocket.WebSocketClientConnection) -> list[Any]:
        """What the socket hears until it is quiet for 50 ms."""
        heard = []
        while True:
            try:
                heard.append(json.loads(await asyncio.wait_for(conn.read_message(), 0.05)))
            except TimeoutError:
                return heard

    async def leave(self, conn: websocket.WebSocketClientConnection) -> None:
        before = len(self.room_sockets())
        conn.close()
        await self.wait_for(lambda: len(self.room_sockets()) < before)


@on_both_transports
class TestRooms(RoomTestCase):
    @testing.gen_test
    async def test_bad_requests_close_with_4400(self):
        for query in (
            {"room": "R"},
            {"id": "A"},
            {"id": "A", "room": "x" * 257},
            {"id": "x" * 257, "room": "R"},
            {"id": "A", "room": ""},
        ):
            conn = await websocket.websocket_connect(self.make_url("/wsroom", **query))
            self.sockets.append(conn)
            await self.assert_closed_with(conn, 4400, "BAD-REQUEST")

    @testing.gen_test
    async def test_members_first_then_joined_and_left(self):
        a = await self.enter("A")
        self.assertEqual(a.roster, members("R", []))
        b = await self.enter("B")
        self.assertEqual(b.roster, members("R", ["A"]))
        self.assertEqual(await self.next_json(a), event("joined", "R", "B"))
        c = await self.enter("C")
        self.assertEqual(c.roster, members("R", ["A", "B"]))  # in the order they joined
        self.assertEqual(await self.next_json(a), event("joined", "R", "C"))
        self.assertEqual(await self.next_json(b), event("joined", "R", "C"))
        await self.leave(b)
        self.assertEqual(await self.next_json(a), event("left", "R", "B"))
        self.assertEqual(await self.next_json(c), event("left", "R", "B"))
        d = await self.enter("D")
        self.assertEqual(d.roster, members("R", ["A", "C"]))

    @testing.gen_test
    async def test_a_second_device_is_no_event_and_gets_copies(self):
        a = await self.enter("A")
        b = await self.enter("B")
        self.assertEqual(await self.next_json(a), event("joined", "R", "B"))
        b2 = await self.enter("B")
        self.assertEqual(b2.roster, members("R", ["A"]))
        self.assertTrue(await self.silent(a))
        b.write_message('{"say": "hi"}')
        message = {"msg_type": "ROOM", "event": "message", "room": "R", "from": "B", "data": {"say": "hi"}}
        self.assertEqual(await self.next_json(a), message)
        self.assertEqual(await self.next_json(b2), message)  # the sender's other device
        self.assertTrue(await self.silent(b))  # never the sending socket
        await self.leave(b)
        self.assertTrue(await self.silent(a))  # B still has a socket
        await self.leave(b2)
        self.assertEqual(await self.next_json(a), event("left", "R", "B"))

    @testing.gen_test
    async def test_data_is_what_was_sent_and_from_cannot_be_forged(self):
        a = await self.enter("A")
        b = await self.enter("B")
        await self.next_json(a)
        sent = '{ "from": "Z",  "sdp": "v=0\\r\\n", "n": [1, 2.50, {"x": null}], "é": "\\u00e9" }'
        a.write_message(sent)
        text = await self.read(b)
        self.assertEqual(text, '{"msg_type": "ROOM", "event": "message", "room": "R", "from": "A", "data": ' + sent + "}")
        self.assertEqual(json.loads(text)["from"], "A")

    @testing.gen_test
    async def test_to_reaches_that_member_and_the_senders_other_devices(self):
        a = await self.enter("A")
        a2 = await self.enter("A")
        b = await self.enter("B")
        c = await self.enter("C")
        for conn in (a, a2, a, a2, b):
            await self.next_json(conn)  # joined B, joined C
        a.write_message('{"to": "C", "offer": 1}')
        expected = {"msg_type": "ROOM", "event": "message", "room": "R", "from": "A", "data": {"to": "C", "offer": 1}}
        self.assertEqual(await self.next_json(c), expected)
        self.assertEqual(await self.next_json(a2), expected)
        self.assertTrue(await self.silent(b))
        self.assertTrue(await self.silent(a, 0.01))

    @testing.gen_test
    async def test_to_an_absent_id_is_peer_unavailable_and_bad_frames_a_notice(self):
        a = await self.enter("A")
        b = await self.enter("B")
        await self.next_json(a)
        a.write_message('{"to": "nobody"}')
        self.assertEqual(await self.next_json(a), unavailable("nobody"))
        for bad in ("not json", "[1, 2]", '"text"', '{"to": 5}', '{"to": null}', '{"to": "A"}', '{"a": NaN}', "{} {}"):
            a.write_message(bad)
            self.assertEqual(await self.next_json(a), BAD_MESSAGE, bad)
        self.assertTrue(await self.silent(b))
        a.write_message('{"still": "here"}')  # the socket was kept
        self.assertEqual((await self.next_json(b))["data"], {"still": "here"})

    @testing.gen_test
    async def test_a_broadcast_alone_reaches_nobody_without_a_notice(self):
        a = await self.enter("A")
        a.write_message('{"hello": "anyone"}')
        self.assertTrue(await self.silent(a))

    @testing.gen_test
    async def test_binary_frames_close_with_1003(self):
        a = await self.enter("A")
        a.write_message(b"\x00\x01", binary=True)
        await self.assert_closed_with(a, 1003, "BINARY-UNSUPPORTED")

    @testing.gen_test
    async def test_the_room_is_full_at_max_room_members_ids(self):
        conns = [await self.enter(f"M{n}") for n in range(6)]
        seventh = await self.enter("M6")
        self.assertIsNone(seventh.roster)
        self.assertEqual((seventh.close_code, seventh.close_reason), (4409, "ROOM-FULL"))
        again = await self.enter("M0")  # a member's second device is no new id
        self.assertEqual(again.roster, members("R", [f"M{n}" for n in range(1, 6)]))
        for k, conn in enumerate(conns):
            heard = [await self.next_json(conn) for _ in range(5 - k)]
            self.assertEqual(heard, [event("joined", "R", f"M{n}") for n in range(k + 1, 6)])
        self.assertTrue(await self.silent(conns[1]))  # neither M6 nor M0's second socket was an event
        await self.leave(conns[5])
        newcomer = await self.enter("M7")
        self.assertEqual(newcomer.roster["members"], [f"M{n}" for n in range(5)])
        other_room = await self.enter("M6", room="elsewhere")
        self.assertEqual(other_room.roster, members("elsewhere", []))

    @testing.gen_test
    async def test_messages_keep_their_order_between_one_sender_and_one_receiver(self):
        a = await self.enter("A")
        b = await self.enter("B")
        c = await self.enter("C")
        for conn in (a, a, b):
            await self.next_json(conn)
        for n in range(100):
            a.write_message(json.dumps({"n": n} if n % 2 else {"n": n, "to": "B"}))
        got = [(await self.next_json(b))["data"]["n"] for _ in range(100)]
        self.assertEqual(got, list(range(100)))
        self.assertEqual([(await self.next_json(c))["data"]["n"] for _ in range(50)], list(range(1, 100, 2)))

    @testing.gen_test
    async def test_rooms_and_calls_are_separate_worlds(self):
        a = await self.enter("A")
        b_call = await self.connect("B", "A")
        a_call = await self.connect("A", "B")
        b = await self.enter("B")
        self.assertEqual(await self.next_json(a), event("joined", "R", "B"))
        a.write_message('{"in": "room"}')
        self.assertEqual((await self.next_json(b))["data"], {"in": "room"})
        self.assertTrue(await self.silent(b_call))
        a_call.write_message("call")
        self.assertEqual(await self.read(b_call), "call")
        self.assertTrue(await self.silent(b))
        self.assertEqual(sum(app.router.rooms.open_sockets for app in self.apps), 2)

    @testing.gen_test
    async def test_sockets_per_id_and_policy_apply_as_on_wscall(self):
        self.apps[0].config.MAX_SOCKETS_PER_ID = 2  # (each app reads its own snapshot)
        for app in self.apps:
            app.config.MAX_SOCKETS_PER_ID = 2
        await self.enter("A", node=0)
        await self.enter("A", room="other", node=0)
        third = await self.enter("A", room="third", node=0)
        self.assertEqual((third.close_code, third.close_reason), (4429, "TOO-MANY-SOCKETS"))
        for app in self.apps:
            app.config.has_socket_pass = lambda socket: socket.get_query_argument("pass", "") == "yes"
        refused = await self.enter("B")
        self.assertEqual((refused.close_code, refused.close_reason), (4403, "FORBIDDEN"))
        admitted = await self.enter("B", **{"pass": "yes"})
        self.assertEqual(admitted.roster["event"], "members")


class TestRoomRace(RoomTestCase):
    """The last place, asked for by two newcomers at once (on two nodes when there are two)."""

    app_options = {"MAX_ROOM_MEMBERS": 2}

    @testing.gen_test(timeout=30)
    async def test_two_newcomers_cannot_both_get_the_last_place(self):
        for round in range(10):
            room = f"race-{round}"
            first = await self.enter("first", room=room, node=0)
            self.assertEqual(first.roster, members(room, []))
            last = len(self.ports) - 1
            one, two = await asyncio.gather(self.enter("one", room=room, node=0), self.enter("two", room=room, node=last))
            admitted = [conn for conn in (one, two) if conn.roster is not None]
            refused = [conn for conn in (one, two) if conn.roster is None]
            self.assertEqual(len(admitted), 1, f"round {round}")
            self.assertEqual((refused[0].close_code, refused[0].close_reason), (4409, "ROOM-FULL"))
            winner = "one" if admitted[0] is one else "two"
            self.assertEqual(admitted[0].roster, members(room, ["first"]))
            self.assertEqual(await self.next_json(first), event("joined", room, winner))
            self.assertTrue(await self.silent(first, 0.05))


class TestRoomCopies(RoomTestCase):
    """How many copies a room message makes: one per destination node, fanned out there."""

    @testing.gen_test
    async def test_a_broadcast_makes_one_copy_per_other_node(self):
        sender = await self.enter("S", node=0)
        here = await self.enter("H", node=0)
        there = [await self.enter(f"T{n}", node=len(self.ports) - 1) for n in range(4)]
        for conn in [sender, here, *there]:
            await self.drain(conn)
        rooms = [app.router.rooms for app in self.apps]
        forwarded, delivered = rooms[0].forwarded, sum(r.delivered for r in rooms)
        sender.write_message('{"all": 1}')
        for conn in [here, *there]:
            self.assertEqual((await self.next_json(conn))["data"], {"all": 1})
        self.assertEqual(rooms[0].forwarded - forwarded, len(self.apps) - 1)
        self.assertEqual(sum(r.delivered for r in rooms) - delivered, 5)
