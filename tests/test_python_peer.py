"""The Python peer (webrtc_client.py, aiortc) through the real server: with itself and with Chromium."""

from __future__ import annotations

import re

import pytest
from browser import REFUSE_CAMERA_JS
from conftest import require
from peer_thread import PeerThread

try:
    import webrtc_client
except ImportError:  # aiortc missing: the tests below say so
    webrtc_client = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def needs_aiortc():
    require(webrtc_client, "aiortc (for the Python peer)", "pip install -r peer-requirements.txt")


def test_two_python_peers_call_each_other_through_the_server(server):
    caller = PeerThread(server.ws, "py-alice", "py-bob", reply=None)
    receiver = PeerThread(server.ws, "py-bob", "py-alice", route="/wsrecieve")
    try:
        for side in (caller, receiver):
            side.wait(side.peer.connected.is_set, "the connection")
            side.wait(lambda side=side: side.peer.frames_received >= 10, "video frames")
        caller.wait(lambda: caller.call(caller.peer.send_chat("hi bob")), "the chat to be sent", timeout=5)
        receiver.wait(lambda: receiver.peer.chat_received == ["hi bob"], "bob to read the chat")
        caller.wait(lambda: caller.peer.chat_received == ["echo: hi bob"], "bob's reply")
    finally:
        caller.stop()
        receiver.stop()


@pytest.mark.parametrize("bot_role", ["caller", "receiver"])
def test_python_peer_and_chromium_page_see_each_other_and_chat(server, pages, bot_role):
    bot_id, human_id = f"bot-{bot_role}", f"human-{bot_role}"
    page_route = "recieve" if bot_role == "caller" else "call"
    page = pages(f"{server.http}/{page_route}?id={human_id}&peer_id={bot_id}")
    page.wait_state("waiting", "not-online")
    bot = PeerThread(server.ws, bot_id, human_id, route="/wscall" if bot_role == "caller" else "/wsrecieve")
    try:
        page.wait_state("connected")
        video = page.wait_remote_playing()
        assert (video["width"], video["height"]) == (320, 240)  # the bot's colour bars
        bot.wait(lambda: bot.peer.frames_received >= 10, "the page's video at the bot")
        page.send_chat("hello bot <b>")
        page.wait_chat("echo: hello bot <b>")
        assert bot.peer.chat_received == ["hello bot <b>"]
        assert bot.call(bot.peer.send_chat("hello human"))
        page.wait_chat("hello human")
        assert page.js("() => window.webrtcApp.state.call.channel.readyState") == "open"
    finally:
        bot.stop()


def test_a_page_without_a_camera_calls_the_python_peer(server, pages):
    # The page offers a video sender without a track (ready for a camera later): aiortc answers it.
    page = pages(f"{server.http}/call?id=human-nocam&peer_id=bot-nocam", init_script=REFUSE_CAMERA_JS)
    page.wait_state("camera-refused", "not-online")
    bot = PeerThread(server.ws, "bot-nocam", "human-nocam", route="/wsrecieve")
    try:
        page.wait_state("connected")
        assert page.sender_label("video") is None and page.sender_label("audio")
        video = page.wait_remote_playing()
        assert (video["width"], video["height"]) == (320, 240)  # the bot's colour bars
        page.send_chat("sound only")
        page.wait_chat("echo: sound only")
    finally:
        bot.stop()


# The page's first connection finds no candidate, as Chromium's sometimes does when offers cross
# and it rolls its own back (its answer then waits at "new" for ever): made relay-only with no
# relay here, so it surely finds none.
GATHER_NOTHING_FIRST_JS = """{
    const Native = window.RTCPeerConnection;
    window.connectionsMade = 0;
    window.RTCPeerConnection = function (config) {
        window.connectionsMade += 1;
        return new Native(window.connectionsMade === 1 ? {...config, iceServers: [], iceTransportPolicy: 'relay'} : config);
    };
    window.RTCPeerConnection.prototype = Native.prototype;
}"""


def test_a_first_connection_that_finds_no_candidate_is_replaced_by_itself(server, pages):
    page = pages(f"{server.http}/call?id=human-gather&peer_id=bot-gather", init_script=GATHER_NOTHING_FIRST_JS)
    page.wait_state("waiting", "not-online")
    bot = PeerThread(server.ws, "bot-gather", "human-gather", route="/wsrecieve")
    try:
        page.wait_state("connected")
        assert page.js("() => window.connectionsMade") == 2
        video = page.wait_remote_playing()
        assert (video["width"], video["height"]) == (320, 240)
        bot.wait(lambda: bot.peer.frames_received >= 10, "the page's video at the bot")
    finally:
        bot.stop()


def test_the_bot_sends_colour_bars_and_ends_its_call_when_the_page_closes(server, pages):
    page = pages(f"{server.http}/call?id=human-bars&peer_id=bot-bars")
    bot = PeerThread(server.ws, "bot-bars", "human-bars", route="/wsrecieve")
    try:
        page.wait_state("connected")
        # Colour, not grey: the bars' mean saturation (max - min channel) is about 140.
        picture = page.wait_remote_colour("saturation > 80")
        assert picture["width"] == 320
        bot.wait(bot.peer.connected.is_set, "the bot's connection")
        page.page.close()  # the tab closes: its goodbye ends the bot's call at once
        bot.wait(lambda: not bot.peer.connected.is_set(), "the bot to see the page leave", timeout=2)
    finally:
        bot.stop()


def test_the_command_line_bot_reports_at_once_and_counts_what_it_records(server, tmp_path):
    import os
    import re
    import subprocess
    import sys
    import time

    from processes import PROJECT_DIR, clean_environment

    av = pytest.importorskip("av")
    recording = tmp_path / "call.mp4"
    command = [sys.executable, "webrtc_client.py", server.ws, "--id", "cli-bot", "--peer", "py-other", "--record", str(recording)]
    started = time.monotonic()
    cli = subprocess.Popen(command, cwd=PROJECT_DIR, env=clean_environment(), stderr=subprocess.PIPE, text=True)
    other = PeerThread(server.ws, "py-other", "cli-bot", route="/wsrecieve", reply=None)
    lines: list[str] = []
    try:
        assert cli.stderr is not None
        first = cli.stderr.readline()
        assert time.monotonic() - started < 4, first  # a status line at once, not after five seconds
        lines.append(first)
        while not re.search(r"connected=True frames received=([1-9]\d*)", lines[-1]):
            assert time.monotonic() - started < 30, lines
            lines.append(cli.stderr.readline())
        other.wait(lambda: other.peer.frames_received >= 30, "the CLI bot's bars at the other peer")
        other.stop()  # its goodbye: the CLI bot says the call ended
        while "connected=False" not in lines[-1]:
            assert time.monotonic() - started < 40, lines
            lines.append(cli.stderr.readline())
    finally:
        cli.terminate()
        cli.wait(15)
        other.stop()
    assert any("py-other left" in line for line in lines), lines
    counted = int(re.findall(r"frames received=(\d+)", "".join(lines))[-1])
    with av.open(str(recording)) as container:
        recorded = sum(1 for _ in container.decode(video=0))
    assert counted > 0 and recorded > 0
    assert abs(counted - recorded) <= max(5, counted // 10), (counted, recorded)
    assert os.path.getsize(recording) > 0


# --- the bot in a room ---------------------------------------------------------------------------


def test_the_bot_in_a_room_with_two_pages_sends_bars_counts_frames_and_echoes(server, pages):
    # The bot is there first (the first page offers to it), the second page comes after (the
    # bot's "members" lists the first one: it offers to it; the second offers to the bot).
    first = pages(f"{server.http}/room?id=room-ann&room=bots")
    bot = PeerThread(server.ws, "room-bot", "bots", room=True)
    try:
        bot.wait(bot.peer.admitted.is_set, "the bot's admission")
        second = pages(f"{server.http}/room?id=room-ben&room=bots")
        for page, other in ((first, "room-ben"), (second, "room-ann")):
            bot_tile = page.wait_room_tiles(["room-bot", other])["room-bot"]
            assert (bot_tile["width"], bot_tile["height"]) == (320, 240)  # the bot's colour bars
            page.wait_room_videos_advance(["room-bot"])
            page.wait_state("connected")
        bot.wait(lambda: sorted(bot.peer.connected()) == ["room-ann", "room-ben"], "both connections")
        bot.wait(lambda: all(bot.peer.frames_received.get(id, 0) >= 10 for id in ("room-ann", "room-ben")), "both pages' video")
        first.send_chat("hello bot <b>")
        for page in (first, second):
            page.wait_chat("echo: hello bot <b>")
        assert bot.peer.chat_received == [("room-ann", "hello bot <b>")]
        second.wait_chat("hello bot <b>")
        bot.stop()  # it leaves: its tile goes from both pages
        for page in (first, second):
            page.wait_for("() => !document.querySelector('#tiles .tile[data-id=\"room-bot\"]')", timeout_ms=3000)
    finally:
        bot.stop()


def test_the_command_line_bot_joins_a_room(server, pages):
    import subprocess
    import sys
    import time

    from processes import PROJECT_DIR, clean_environment

    command = [sys.executable, "webrtc_client.py", server.ws, "--id", "cli-room-bot", "--room", "cli-room", "--report-every", "1"]
    started = time.monotonic()
    cli = subprocess.Popen(command, cwd=PROJECT_DIR, env=clean_environment(), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert cli.stderr is not None
        page = pages(f"{server.http}/room?id=cli-ann&room=cli-room")
        page.wait_room_tiles(["cli-room-bot"])
        lines.append(cli.stderr.readline())
        while not re.search(r"room=cli-room members=1 connected=1 frames received=cli-ann:[1-9]", lines[-1]):
            assert time.monotonic() - started < 30, lines
            lines.append(cli.stderr.readline())
        page.send_chat("hi cli")
        page.wait_chat("echo: hi cli")
    finally:
        cli.terminate()
        cli.wait(15)
    page.wait_for("() => !document.querySelector('#tiles .tile[data-id=\"cli-room-bot\"]')", timeout_ms=3000)
