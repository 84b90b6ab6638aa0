"""The room page in headless Chromium, through the real server: four people in a room each
see the three others' videos play; one leaves and its tile goes at once, comes back and the
tiles come back; the chat reaches everyone; Mute and Stop video show on the others' tiles; a
full room says so; the start form and the invite lead to the room.

Each page is its own browser context with the fake camera (tests/browser.py), so four pages
are four people, each with three peer connections.
"""

from __future__ import annotations

import itertools
import os
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from browser import ROOM_TILES_JS, PageDriver

from processes import ServerProcess, free_port

SHOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "room.png")
_rooms = itertools.count()


@pytest.fixture(scope="module")
def small_server():
    """A server whose rooms take two people, for the full room."""
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_MAX_ROOM_MEMBERS": "2"}) as process:
        yield process


def room_name() -> str:
    return f"room{next(_rooms)}"


def open_room(server, pages, my_id: str, room: str, **options) -> PageDriver:
    page = pages(f"{server.http}/room?{urlencode({'id': my_id, 'room': room})}", **options)
    page.select("#resolution", "320x240")  # four pages, twelve connections, two cores
    return page


def test_four_people_see_each_other_one_leaves_and_comes_back(server, pages, tmp_path):
    room = f"standup-{room_name()}"
    ids = ["ann", "ben", "cat", "dan"]
    people = {id: open_room(server, pages, id, room) for id in ids}
    for id, page in people.items():
        others = [other for other in ids if other != id]
        page.wait_room_tiles(others)
        page.wait_state("connected")
        page.wait_room_videos_advance(others)
    # The chat reaches everyone; then the README's picture of a room.
    people["ben"].send_chat("Morning all!")
    people["ann"].wait_chat("Morning all!")
    people["ann"].send_chat("Hi ben, cat, dan")
    for id in ("ben", "cat", "dan"):
        people[id].wait_chat("Hi ben, cat, dan")
    people["ann"].screenshot(SHOT if os.environ.get("UPDATE_SCREENSHOT") else str(tmp_path / "room.png"))
    # dan closes his tab: within two seconds his tile is gone from every other page.
    people.pop("dan").close()
    left_at = time.monotonic()
    for page in people.values():
        within = max(1, int((left_at + 2.0 - time.monotonic()) * 1000))
        page.wait_for(f"() => !Object.keys(({ROOM_TILES_JS})()).includes('dan')", timeout_ms=within)
    assert time.monotonic() - left_at <= 2.0
    for id, page in people.items():
        assert sorted(page.room_tiles()) == sorted(set(ids) - {id, "dan"})
        page.wait_state("connected")
    # He comes back: the tiles come back, and play.
    people["dan"] = open_room(server, pages, "dan", room)
    for id, page in people.items():
        others = [other for other in ids if other != id]
        page.wait_room_tiles(others)
        page.wait_room_videos_advance(others)


def test_chat_reaches_everyone_and_mute_and_stop_video_show_on_the_tiles(server, pages):
    room = room_name()
    ann, ben, cat = (open_room(server, pages, id, room) for id in ("ann", "ben", "cat"))
    for page, others in ((ann, ["ben", "cat"]), (ben, ["ann", "cat"]), (cat, ["ann", "ben"])):
        page.wait_room_tiles(others)
    ann.send_chat("hello room <b>")
    for page in (ben, cat):
        page.wait_chat("hello room <b>")
        authors = page.js("() => [...document.querySelectorAll('#chat-log .chat-line.peer strong')].map(e => e.textContent)")
        assert authors == ["ann"]
    assert ann.chat_texts("me") == ["hello room <b>"]
    # Mute: ann's tile shows it on the others' pages, and her microphone is off on every connection.
    ann.click("#mute")
    for page in (ben, cat):
        page.wait_for("() => { const t = document.querySelector('.tile[data-id=\"ann\"] .badge-muted'); return t && !t.hidden; }")
    assert ann.js("() => window.webrtcApp.media.stream.getAudioTracks().every(t => !t.enabled)")
    ann.click("#mute")
    for page in (ben, cat):
        page.wait_for("() => document.querySelector('.tile[data-id=\"ann\"] .badge-muted').hidden")
    # Stop video: every connection of ann's sends nothing as video (one replaceTrack each, no
    # new offer), and the others know.
    offers = ann.js("() => [...window.webrtcApp.state.members.values()].map(m => m.call.pc.localDescription.sdp)")
    ann.click("#camera-off")
    ann.wait_for("() => [...window.webrtcApp.state.members.values()].every(m => m.call.senders.video.track === null)")
    for page in (ben, cat):
        page.wait_for("() => window.webrtcApp.state.members.get('ann').sending === false")
    assert offers == ann.js("() => [...window.webrtcApp.state.members.values()].map(m => m.call.pc.localDescription.sdp)")
    ann.click("#camera-off")
    ann.wait_for("() => [...window.webrtcApp.state.members.values()].every(m => m.call.senders.video.track !== null)")
    for page in (ben, cat):
        page.wait_for("() => window.webrtcApp.state.members.get('ann').sending === true")


def test_a_full_room_says_so_and_join_again_gets_in_once_there_is_room(small_server, pages):
    room = room_name()
    ann = open_room(small_server, pages, "ann", room)
    ben = open_room(small_server, pages, "ben", room)
    ann.wait_room_tiles(["ben"])
    cat = open_room(small_server, pages, "cat", room)
    cat.wait_state("room-full")
    assert "full" in cat.status_text and "2 people" in cat.status_text
    assert cat.js("() => !document.getElementById('rejoin').hidden")
    assert sorted(ann.room_tiles()) == ["ben"]
    # ben leaves with the Leave button: ann sees it, cat gets in with Join again.
    ben.click("#leave")
    ben.wait_state("left")
    ann.wait_for(f"() => Object.keys(({ROOM_TILES_JS})()).length === 0")
    ann.wait_state("alone")
    cat.click("#rejoin")
    cat.wait_room_tiles(["ann"])
    ann.wait_room_tiles(["cat"])
    cat.wait_state("connected")


def test_a_second_tab_takes_the_room_and_the_first_steps_aside(server, pages):
    room = room_name()
    ann = open_room(server, pages, "ann", room)
    ben = open_room(server, pages, "ben", room)
    ben.wait_room_tiles(["ann"])
    first = ben.js("() => window.webrtcApp.state.members.get('ann').session")
    again = open_room(server, pages, "ben", room)  # ben, in a second tab
    again.wait_room_tiles(["ann"])
    ben.wait_state("elsewhere")
    assert ben.room_tiles() == {}
    # ann is connected to the new tab's page, with no tile twice.
    ann.wait_for("(first) => window.webrtcApp.state.members.get('ben').session !== (first || '')", first)
    ann.wait_room_tiles(["ben"])


def test_bad_names_get_the_form_and_the_start_form_and_invite_lead_to_the_room(server, pages):
    page = pages(f"{server.http}/room?id=ann")
    assert "Cannot open this page: missing room." in page.js("() => document.body.innerText")
    assert page.js("() => document.getElementById('start-id').value") == "ann"
    # The room's invite is the start form with the room filled in: a newcomer picks an id.
    room = room_name()
    ann = open_room(server, pages, "ann", room)
    invite = ann.js("() => document.getElementById('invite-link').href")
    assert urlsplit(invite).path == "/" and parse_qs(urlsplit(invite).query) == {"room": [room]}
    assert ann.js("() => document.getElementById('invite-qr').width") > 0
    newcomer = pages(invite)
    assert newcomer.js("() => document.getElementById('start-room').value") == room
    newcomer.click("#start-join")  # no id yet: the browser keeps the form
    assert urlsplit(newcomer.page.url).path == "/"
    newcomer.fill("#start-id", "ben")
    newcomer.fill("#start-peer", "someone")  # another button's field: not in the room's address
    with newcomer.page.expect_navigation():
        newcomer.click("#start-join")
    url = urlsplit(newcomer.page.url)
    assert (url.path, parse_qs(url.query)) == ("/room", {"id": ["ben"], "room": [room]})
    assert newcomer.page.title() == f"Room {room} · ben"
    newcomer.wait_room_tiles(["ann"])
    ann.wait_room_tiles(["ben"])


def test_after_a_server_restart_the_room_comes_back_by_itself(pages):
    port = free_port()
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_ICE_ACCESS_TOKEN": "room-restart"}
    room, ids = room_name(), ["ann", "ben", "cat"]
    first = ServerProcess(env=env, port=port).start()
    try:
        people = {id: open_room(first, pages, id, room) for id in ids}
        for id, page in people.items():
            page.wait_room_tiles([other for other in ids if other != id])
        assert first.stop() == 0
        for page in people.values():
            page.wait_state("reconnecting")
    finally:
        first.kill()
    # The new server knows nobody: the pages join again by themselves, and every connection
    # is made again.
    with ServerProcess(env=env, port=port):
        for id, page in people.items():
            others = [other for other in ids if other != id]
            page.wait_room_tiles(others, timeout_ms=60000)
            page.wait_room_videos_advance(others)
            page.wait_state("connected")
