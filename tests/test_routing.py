"""The routing rules alone: MemoryRouter with fake sessions, no network, no Tornado."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from routing import PEER_UNAVAILABLE_NOTICE, check_ids, server_notice
from routing.memory import MemoryRouter


@dataclass(eq=False)
class FakeSession:
    id: str
    peer_id: str = ""
    session_id: str = "s"
    inbox: list[str] = field(default_factory=list)

    def send(self, text: str) -> None:
        self.inbox.append(text)

    def send_all(self, texts: list[str]) -> None:
        for text in texts:
            self.send(text)


@pytest.fixture
def router() -> MemoryRouter:
    return MemoryRouter()


def join(router: MemoryRouter, my_id: str, peer_id: str = "", name: str = "s") -> FakeSession:
    session = FakeSession(my_id, peer_id, name)
    router.join(session)
    return session


def test_notice_text_is_the_originals():
    assert PEER_UNAVAILABLE_NOTICE == '{"msg_type": "SERVER_NOTICE", "message": "PEER-UNAVAILABLE"}'
    assert server_notice("X") == '{"msg_type": "SERVER_NOTICE", "message": "X"}'


def test_message_reaches_peer_sockets_talking_to_sender_or_to_anyone(router):
    a = join(router, "A", "B")
    b_with_a = join(router, "B", "A")
    b_open = join(router, "B", "")
    b_with_c = join(router, "B", "C")
    assert router.relay(a, "hi") == 2
    assert b_with_a.inbox == ["hi"]
    assert b_open.inbox == ["hi"]
    assert b_with_c.inbox == []
    assert a.inbox == []  # never back to the sender


def test_sender_other_devices_in_same_conversation_get_a_copy(router):
    a1 = join(router, "A", "B", "a1")
    a2 = join(router, "A", "B", "a2")
    a_other = join(router, "A", "C", "a3")
    b = join(router, "B", "A")
    router.relay(a1, "offer")
    assert a2.inbox == ["offer"]
    assert a1.inbox == [] and a_other.inbox == []
    assert b.inbox == ["offer"]


def test_peer_unavailable_goes_to_every_socket_of_the_conversation(router):
    a1 = join(router, "A", "B", "a1")
    a2 = join(router, "A", "B", "a2")
    a_other = join(router, "A", "C", "a3")
    assert router.relay(a1, "offer") == 0
    assert a1.inbox == [PEER_UNAVAILABLE_NOTICE]
    assert a2.inbox == ["offer", PEER_UNAVAILABLE_NOTICE]
    assert a_other.inbox == []
    assert router.undelivered == 1 and router.relayed == 1


def test_peer_busy_with_someone_else_counts_as_unavailable(router):
    a = join(router, "A", "B")
    b = join(router, "B", "C")
    router.relay(a, "offer")
    assert b.inbox == []
    assert a.inbox == [PEER_UNAVAILABLE_NOTICE]


def test_sender_without_peer_id_reaches_nobody(router):
    a = join(router, "A", "")
    join(router, "B", "A")
    assert router.relay(a, "x") == 0
    assert a.inbox == [PEER_UNAVAILABLE_NOTICE]


def test_order_is_kept(router):
    a = join(router, "A", "B")
    b = join(router, "B", "A")
    for n in range(100):
        router.relay(a, str(n))
    assert b.inbox == [str(n) for n in range(100)]


def test_leave_removes_the_id_when_its_last_socket_goes(router):
    a1 = join(router, "A", "B", "a1")
    a2 = join(router, "A", "C", "a2")
    assert router.ids_online == 1 and router.open_sockets == 2
    router.leave(a1)
    assert router.ids_online == 1 and router.open_sockets == 1
    router.leave(a2)
    router.leave(a2)  # idempotent
    assert router.ids_online == 0 and router.open_sockets == 0
    assert router.local_sessions() == []


def test_peer_back_online_receives_at_once(router):
    a = join(router, "A", "B")
    b = join(router, "B", "A")
    router.leave(b)
    router.relay(a, "lost")
    b2 = join(router, "B", "A")
    router.relay(a, "found")
    assert b2.inbox == ["found"]
    assert a.inbox == [PEER_UNAVAILABLE_NOTICE]


def test_connections_lists_each_socket_with_its_peer(router):
    join(router, "A", "B", "s1")
    join(router, "A", "", "s2")
    result = asyncio.run(router.connections("A"))
    assert sorted(result, key=lambda c: c["session"]) == [
        {"peer": "B", "session": "s1"},
        {"peer": None, "session": "s2"},
    ]
    assert asyncio.run(router.connections("nobody")) == []


def test_a_session_leaving_during_fan_out_does_not_break_it(router):
    a = join(router, "A", "B")

    class Leaver(FakeSession):
        def send(self, text: str) -> None:
            super().send(text)
            router.leave(self)

    leaver = Leaver("B", "A", "l")
    router.join(leaver)
    other = join(router, "B", "A", "o")
    assert router.relay(a, "x") == 2
    assert leaver.inbox == ["x"] and other.inbox == ["x"]


@pytest.mark.parametrize(
    ("my_id", "peer_id", "problem"),
    [
        ("", "B", "missing id"),
        ("A", "A", "id equals peer_id"),
        ("A" * 11, "B", "id longer than 10 characters"),
        ("A", "B" * 11, "peer_id longer than 10 characters"),
        ("A\x00", "B", "id contains control characters"),
        ("A", "B\n", "peer_id contains control characters"),
    ],
)
def test_check_ids_explains_what_is_wrong(my_id, peer_id, problem):
    assert check_ids(my_id, peer_id, 10) == problem


def test_check_ids_accepts_any_printable_text():
    assert check_ids("Ünïcødé 名前 </script>", "", 64) is None
    assert check_ids("A" * 10, "B" * 10, 10) is None
