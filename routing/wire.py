"""What nodes of the Redis backplane say to each other, free of Redis and of Tornado.

Each node has one inbox (a sharded pub/sub channel). Everything one node has for another
during one event-loop iteration travels as one *batch*, one SPUBLISH::

    <sender node> "\\n" <fields, joined by NUL> "\\n" <the texts of the messages, concatenated>

Ids, peer ids, session ids and node names never contain control characters (``check_ids``
refuses them), so NUL and the two newlines are unambiguous; message texts may contain
anything, so they are cut by the lengths given in the fields. A batch is decoded with one
``decode`` and one ``split`` whatever it holds: the cost is per batch, not per message.

Frames, each a kind and its fields:

* ``m`` A B session reply seq length: a message from A's socket ``session`` to B. The
  inbox's node delivers it by rules 1 and 2 (routing/__init__.py) to its own sockets. ``reply``
  says what the sender's node needs back: ``0`` nothing, ``1`` an ``n`` if none of B's
  sockets here got it, ``2`` an ``r`` with ``seq`` whatever happened.
* ``+`` length: one more message of the frame before (an ``m`` or a ``+``): from the same
  socket, asking the same reply (``0`` or ``1``; never ``2``, whose ``seq`` is per message).
  A socket usually sends several messages in a row (a burst of ICE candidates, a window of
  chat), so the receiving node finds their sockets once for the run, not once per message.
* ``n`` A B: none of B's sockets here took A's message (rule 3 is the sender's node's call).
* ``r`` seq count: how many of B's sockets here took message ``seq``.
* ``u`` A B: deliver the PEER-UNAVAILABLE notice to A's sockets talking to B here.
* ``a`` session: this node has added ``session`` to its directory (a join waits for these).

Receipts (routing/liveness.py), so that a destination node that does not take a batch is
noticed within DELIVERY_BOUND, whatever the reason (frozen, cut off from Redis, killed with
its subscription still counted):

* ``S`` number: the end of a batch that carries messages, numbered per destination node.
* ``K`` number: every batch up to ``number`` from you has been handled here (its messages
  handed to their sockets, or answered with ``n``/``r``/``Q``). Batches to one node leave in
  order and its inbox is read in order, so one receipt covers all the batches before it.

Room frames (routing/rooms.py):

* ``R`` room from to session ask length: a room message (the frame as members get it) from
  ``from``'s socket ``session``, to ``to``'s sockets and ``from``'s there ("" : to every
  socket there). ``ask`` ``1``: answer a ``Q`` if none of ``to``'s sockets is there.
* ``Q`` room from session to: none of ``to``'s sockets took the message of ``session``.
* ``P`` room id version seq: the sending node has a socket of ``id`` in ``room`` since
  ``version`` (``seq``: the id's join version), or, with ``seq`` ``-1``, no longer has one.

Directory events go on one channel per id instead (``event``): ``j`` node id session peer
when a socket joins, ``l`` node id session when it leaves.
"""

from __future__ import annotations

SEP = "\0"

#: What a message asks back from the node that delivers it.
NO_REPLY, REPLY_IF_NONE, REPLY_ALWAYS = "0", "1", "2"


class Batch:
    """The frames one node has for another, in the order they were added."""

    __slots__ = ("fields", "texts", "messages", "_run", "node", "number")

    def __init__(self, node: str = "") -> None:
        #: The node it is for, and its number once it is handed to the publisher (0: none).
        self.node = node
        self.number = 0
        self.fields: list[str] = []
        self.texts: list[str] = []
        self.messages = 0
        #: The session and reply of the last frame when it is a message that a ``+`` may
        #: continue (a session's id and peer id never change, so the session says both).
        self._run: tuple[str, str] | None = None

    def message(self, my_id: str, peer_id: str, session_id: str, reply: str, seq: str, text: str) -> None:
        run = self._run
        if run is not None and run[0] == session_id and run[1] == reply:
            self.fields += ("+", str(len(text)))
        else:
            self.fields += ("m", my_id, peer_id, session_id, reply, seq, str(len(text)))
            self._run = (session_id, reply) if reply != REPLY_ALWAYS else None
        self.texts.append(text)
        self.messages += 1

    def waiting(self) -> list[tuple[str, ...]]:
        """What the senders of this batch's messages wait for (``waiting``)."""
        return waiting(self.fields)

    def none_delivered(self, my_id: str, peer_id: str) -> None:
        self.fields += ("n", my_id, peer_id)
        self._run = None

    def result(self, seq: str, count: int) -> None:
        self.fields += ("r", seq, str(count))
        self._run = None

    def notice(self, my_id: str, peer_id: str) -> None:
        self.fields += ("u", my_id, peer_id)
        self._run = None

    def ack(self, session_id: str) -> None:
        self.fields += ("a", session_id)
        self._run = None

    def room_message(self, room: str, sender: str, to: str, session_id: str, ask: bool, text: str) -> None:
        self.fields += ("R", room, sender, to, session_id, "1" if ask else "0", str(len(text)))
        self.texts.append(text)
        self.messages += 1
        self._run = None

    def room_unavailable(self, room: str, sender: str, session_id: str, to: str) -> None:
        self.fields += ("Q", room, sender, session_id, to)
        self._run = None

    def room_pair(self, room: str, id: str, version: int, seq: int) -> None:
        self.fields += ("P", room, id, str(version), str(seq))
        self._run = None

    def numbered(self, number: int) -> None:
        """Ask the destination for a receipt (``S``)."""
        self.number = number
        self.fields += ("S", str(number))
        self._run = None

    def receipt(self, number: str) -> None:
        self.fields += ("K", number)
        self._run = None

    def encode(self, sender: str) -> bytes:
        return f"{sender}\n{SEP.join(self.fields)}\n{''.join(self.texts)}".encode()


def waiting(fields: list[str]) -> list[tuple[str, ...]]:
    """The messages of a batch (its fields) whose sender waits for an answer: if the batch
    cannot reach its node, or its node never gives a receipt, the sender's node answers them
    itself. ``(reply, A, B, seq)`` for a call message that asked a reply, ``("R", room, from,
    session, to)`` for a room message that asked one."""
    found: list[tuple[str, ...]] = []
    i, end = 0, len(fields)
    last: tuple[str, str, str, str] | None = None
    while i < end:
        kind = fields[i]
        if kind == "m":
            last = (fields[i + 4], fields[i + 1], fields[i + 2], fields[i + 5])
        if kind in "m+" and last is not None and last[0] != NO_REPLY:
            found.append(last)
        elif kind == "R" and fields[i + 5] == "1":
            found.append(("R", fields[i + 1], fields[i + 2], fields[i + 4], fields[i + 3]))
        i += 1 + FIELDS[kind]
    return found


def decode(payload: bytes) -> tuple[str, list[str], str]:
    """(sender node, fields, texts) of a batch."""
    text = payload.decode("utf-8")
    first = text.index("\n")
    second = text.index("\n", first + 1)
    return text[:first], text[first + 1 : second].split(SEP), text[second + 1 :]


#: Fields each frame kind carries after its kind.
FIELDS = {"m": 6, "+": 1, "n": 2, "r": 2, "u": 2, "a": 1, "R": 6, "Q": 4, "P": 4, "S": 1, "K": 1}


def joined(node: str, my_id: str, session_id: str, peer_id: str) -> str:
    """The event of a socket joining the directory of ``my_id``."""
    return SEP.join(("j", node, my_id, session_id, peer_id))


def left(node: str, my_id: str, session_id: str) -> str:
    """The event of a socket leaving the directory of ``my_id``."""
    return SEP.join(("l", node, my_id, session_id))


def entry(node: str, peer_id: str) -> str:
    """A directory entry's value: where the socket is and whom it talks to."""
    return f"{node}{SEP}{peer_id}"
