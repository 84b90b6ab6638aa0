"""routing/wire.py: batches between nodes survive any text, and are read in one pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing import wire

ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)  # NUL and newlines included


def frames_of(payload: bytes) -> tuple[str, list[tuple[str, ...]]]:
    """The frames of a batch, with each message's text cut out, as the receiving node does."""
    sender, fields, joined = wire.decode(payload)
    frames, i, offset = [], 0, 0
    while i < len(fields):
        kind = fields[i]
        width = wire.FIELDS[kind]
        frame = tuple(fields[i : i + 1 + width])
        if kind == "m":
            length = int(frame[6])
            frame = (*frame[:6], joined[offset : offset + length])
            offset += length
        elif kind == "+":  # one more message of the frame before: written out in full here
            assert frames and frames[-1][0] == "m", "a + follows a message"
            length = int(frame[1])
            frame = (*frames[-1][:6], joined[offset : offset + length])
            offset += length
        frames.append(frame)
        i += 1 + width
    assert offset == len(joined)
    return sender, frames


@given(st.lists(st.tuples(ids, ids, texts), max_size=30))
def test_messages_come_out_as_they_went_in_whatever_their_text(messages):
    batch = wire.Batch()
    for n, (my_id, peer_id, text) in enumerate(messages):
        batch.message(my_id, peer_id, f"session{n}", wire.NO_REPLY, "", text)
    batch.notice("a", "b")
    sender, frames = frames_of(batch.encode("node1"))
    assert sender == "node1"
    expected = [("m", a, b, f"session{n}", wire.NO_REPLY, "", t) for n, (a, b, t) in enumerate(messages)]
    assert frames == [*expected, ("u", "a", "b")]
    assert batch.messages == len(messages)


def test_every_kind_of_frame_and_what_a_sender_waits_for():
    batch = wire.Batch()
    batch.message("A", "B", "s1", wire.NO_REPLY, "", "one")
    batch.message("A", "B", "s1", wire.REPLY_IF_NONE, "", "two\nlines\0and a nul")
    batch.message("A", "C", "s2", wire.REPLY_ALWAYS, "7", "")
    batch.none_delivered("X", "Y")
    batch.result("7", 2)
    batch.ack("s9")
    _, frames = frames_of(batch.encode("n"))
    assert [frame[0] for frame in frames] == ["m", "m", "m", "n", "r", "a"]
    assert frames[1][6] == "two\nlines\0and a nul"
    assert batch.waiting() == [(wire.REPLY_IF_NONE, "A", "B", ""), (wire.REPLY_ALWAYS, "A", "C", "7")]


def test_directory_events_and_entries():
    assert wire.joined("n1", "alice", "s1", "bob").split(wire.SEP) == ["j", "n1", "alice", "s1", "bob"]
    assert wire.left("n1", "alice", "s1").split(wire.SEP) == ["l", "n1", "alice", "s1"]
    assert wire.entry("n1", "").partition(wire.SEP) == ("n1", wire.SEP, "")


def test_messages_in_a_row_from_one_socket_travel_as_a_run():
    batch = wire.Batch()
    batch.message("A", "B", "s1", wire.REPLY_IF_NONE, "", "one")
    batch.message("A", "B", "s1", wire.REPLY_IF_NONE, "", "two")
    batch.message("A", "B", "s1", wire.NO_REPLY, "", "three")  # another reply: a new frame
    batch.message("A", "B", "s2", wire.NO_REPLY, "", "four")  # another socket: a new frame
    batch.notice("A", "B")
    batch.message("A", "B", "s2", wire.NO_REPLY, "", "five")  # after another kind: a new frame
    batch.message("A", "C", "s3", wire.REPLY_ALWAYS, "7", "six")
    batch.message("A", "C", "s3", wire.REPLY_ALWAYS, "8", "seven")  # its own seq: never a run
    payload = batch.encode("n")
    _, fields, _ = wire.decode(payload)
    assert [f for f in fields if f in wire.FIELDS] == ["m", "+", "m", "m", "u", "m", "m", "m"]
    _, frames = frames_of(payload)
    assert [frame[-1] for frame in frames if frame[0] == "m"] == ["one", "two", "three", "four", "five", "six", "seven"]
    assert frames[1] == ("m", "A", "B", "s1", wire.REPLY_IF_NONE, "", "two")
    # Unreachable, the sender's node answers for each message of a run.
    assert batch.waiting() == [
        (wire.REPLY_IF_NONE, "A", "B", ""),
        (wire.REPLY_IF_NONE, "A", "B", ""),
        (wire.REPLY_ALWAYS, "A", "C", "7"),
        (wire.REPLY_ALWAYS, "A", "C", "8"),
    ]
    assert batch.messages == 7


@given(
    st.lists(
        st.tuples(st.sampled_from(["s1", "s2"]), st.sampled_from([wire.NO_REPLY, wire.REPLY_IF_NONE]), texts),
        min_size=1,
        max_size=30,
    )
)
def test_runs_come_out_as_the_messages_went_in(messages):
    batch = wire.Batch()
    for session, reply, text in messages:
        batch.message(f"id-{session}", "peer", session, reply, "", text)
    _, frames = frames_of(batch.encode("node1"))
    assert frames == [("m", f"id-{s}", "peer", s, reply, "", text) for s, reply, text in messages]
    assert len(batch.waiting()) == sum(reply == wire.REPLY_IF_NONE for _, reply, _ in messages)
