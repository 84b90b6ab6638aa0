"""What people do around a call, in headless Chromium against the real server process: close
a tab and come back, close it for good, restart the server mid-call, open the same id in two
tabs, hold a phone upright or on its side, and start from the form."""

from __future__ import annotations

import itertools
import time
from urllib.parse import parse_qs, urlsplit

from browser import PageDriver

from processes import ServerProcess, free_port

_ids = itertools.count()


def pair_ids() -> tuple[str, str]:
    n = next(_ids)
    return f"life-alice{n}", f"life-bob{n}"


def in_call(server, pages, alice: str, bob: str, **options) -> tuple[PageDriver, PageDriver]:
    receiver = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}", **options)
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}", **options)
    for page in (caller, receiver):
        page.wait_state("connected")
    return caller, receiver


def wait_connected_within(pages: list[PageDriver], seconds: float) -> float:
    """Wait until every page is in the call again; answer how long it took."""
    started = time.monotonic()
    for page in pages:
        page.wait_state("connected", timeout_ms=int(max(0.1, seconds - (time.monotonic() - started)) * 1000))
    for page in pages:
        page.wait_frames_flowing(5)
    return time.monotonic() - started


# An init script: once window.silent is set, the page's pagehide handlers never run, as when a
# tab dies without a word (a crash, a battery pulled): its sockets just close.
SILENT_EXIT_JS = """addEventListener('pagehide', (event) => { if (window.silent) event.stopImmediatePropagation(); });"""


def vanish(page: PageDriver) -> None:
    page.js("() => { window.silent = true; }")
    page.page.close()


# --- a tab closed, and opened again -----------------------------------------------------------


def test_a_tab_closed_and_opened_again_12_s_later_is_back_in_the_call_by_itself(server, pages):
    alice, bob = pair_ids()
    caller, receiver = in_call(server, pages, alice, bob)
    caller.page.close()
    receiver.wait_state("peer-left", timeout_ms=2000)
    time.sleep(12)
    again = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    took = wait_connected_within([again, receiver], 10)
    assert took < 10, took
    assert receiver.status_text == f"In a call with {alice}"


def test_a_tab_that_vanished_without_a_word_and_came_back_12_s_later_is_called_again(server, pages):
    # The case where the peer's page has been retrying meanwhile (ICE restarts, then new
    # connections offering to nobody): the new page must not be taken for the old call.
    alice, bob = pair_ids()
    receiver = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}")
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}", init_script=SILENT_EXIT_JS)
    for page in (caller, receiver):
        page.wait_state("connected")
    vanish(caller)
    receiver.wait_state("reconnecting", timeout_ms=10000)
    time.sleep(12)
    assert receiver.js("() => window.webrtcApp.state.renewals") >= 1  # it did retry meanwhile
    again = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    took = wait_connected_within([again, receiver], 10)
    assert took < 10, took


def test_a_tab_closed_for_good_ends_the_peers_call_within_two_seconds(server, pages):
    alice, bob = pair_ids()
    caller, receiver = in_call(server, pages, alice, bob)
    receiver.wait_quality("bitrate")
    receiver.record_states()
    closed = time.monotonic()
    caller.page.close()
    receiver.wait_state("peer-left", timeout_ms=2000)
    assert time.monotonic() - closed < 2.0
    assert receiver.status_text == f"{alice} left."
    assert "reconnecting" not in receiver.seen_states()
    assert receiver.js("() => document.getElementById('hangup').disabled") is True
    assert receiver.js("() => window.webrtcApp.state.call") is None
    assert receiver.remote_video()["live"] is False
    # The quality panel no longer reads a call that is over.
    receiver.wait_for("() => document.getElementById('q-bitrate').textContent === '–'", timeout_ms=3000)
    # It stays over: no retry loop calls the page that left.
    time.sleep(3)
    assert receiver.state == "peer-left"


# --- a server restart mid-call -----------------------------------------------------------------


def test_after_a_server_restart_the_status_says_the_call_goes_on(pages):
    alice, bob = pair_ids()
    port = free_port()
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_ICE_ACCESS_TOKEN": "life-restart"}
    first = ServerProcess(env=env, port=port).start()
    try:
        caller, receiver = in_call(first, pages, alice, bob)
        assert first.stop() == 0
        for page in (caller, receiver):
            page.wait_for("() => /reconnecting in/.test(document.getElementById('status').textContent)")
    finally:
        first.kill()
    with ServerProcess(env=env, port=port) as second:
        second.wait_for_line(rf"101 GET /wsrecieve\?id={bob}", timeout=30)
        second.wait_for_line(rf"101 GET /wscall\?id={alice}", timeout=30)
        answered = time.monotonic()
        for page, peer in ((caller, bob), (receiver, alice)):
            page.wait_for(
                "text => document.getElementById('status').textContent === text",
                f"In a call with {peer}",
                timeout_ms=int(max(0.1, 10 - (time.monotonic() - answered)) * 1000),
            )
        assert time.monotonic() - answered < 10
        receiver.wait_frames_flowing(5)  # media never went through the server
        caller.send_chat("after the restart")
        receiver.wait_chat("after the restart")


# --- the same id in two tabs ---------------------------------------------------------------


def test_the_same_id_in_a_second_tab_takes_the_call_and_the_first_says_so_without_retrying(server, pages):
    alice, bob = pair_ids()
    first, receiver = in_call(server, pages, alice, bob)
    second = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    first.wait_state("elsewhere")
    assert "another tab" in first.status_text
    wait_connected_within([second, receiver], 20)
    # The first tab stays out: its socket is closed, it does not call, and nothing retries.
    assert first.js("() => window.webrtcApp.signaling.isOpen") is False
    assert first.js("() => window.webrtcApp.state.call") is None
    handshakes = server.output().count(f"101 GET /wscall?id={alice}&")
    time.sleep(4)
    assert first.state == "elsewhere"
    assert server.output().count(f"101 GET /wscall?id={alice}&") == handshakes
    second.send_chat("from the second tab")
    receiver.wait_chat("from the second tab")
    # Restart call brings the call back to the first tab; the second one steps aside.
    first.click("#restart")
    second.wait_state("elsewhere")
    wait_connected_within([first, receiver], 20)
    # Closing the tab that gave the call up does not end the call of the other one.
    second.page.close()
    time.sleep(1.5)
    assert receiver.state == "connected"


# --- a phone ------------------------------------------------------------------------------------

GEOMETRY_JS = """() => { const box = id => document.getElementById(id).getBoundingClientRect().toJSON();
    return {scrollY, innerWidth, innerHeight, remote: box('remote-video'), local: box('local-video'),
            hangup: box('hangup'), mute: box('mute'), chatInput: box('chat-input'),
            overflow: document.documentElement.scrollWidth > innerWidth}; }"""

# How many pixels of each select's chosen option do not fit its box (0: the name shows in full).
CUT_NAMES_JS = """() => { const cut = {}; const canvas = document.createElement('canvas').getContext('2d');
    for (const select of document.querySelectorAll('#settings select')) {
        const style = getComputedStyle(select); canvas.font = `${style.fontSize} ${style.fontFamily}`;
        const text = select.options[select.selectedIndex].text;
        // padding, border and the arrow take about 40 px of a select's width
        cut[select.id] = Math.max(0, Math.ceil(canvas.measureText(text).width - (select.clientWidth - 40)));
    } return cut; }"""


def inside(box: dict[str, float], geometry: dict[str, float]) -> bool:
    within_height = box["top"] >= 0 and box["bottom"] <= geometry["innerHeight"]
    return within_height and box["left"] >= 0 and box["right"] <= geometry["innerWidth"]


def check_call_in_view(page: PageDriver) -> dict[str, float]:
    geometry = page.js(GEOMETRY_JS)
    assert geometry["scrollY"] == 0, geometry  # the page did not scroll itself
    assert geometry["overflow"] is False
    for name in ("remote", "hangup", "mute"):
        assert inside(geometry[name], geometry), (name, geometry)
    remote, local = geometry["remote"], geometry["local"]
    assert remote["height"] >= 0.35 * geometry["innerHeight"] or remote["width"] >= 0.8 * geometry["innerWidth"], geometry
    # The self-view is a corner of the remote video, not a third of it.
    assert local["width"] * local["height"] <= 0.12 * remote["width"] * remote["height"], geometry
    return geometry


def phone_call(server, pages, viewport: tuple[int, int]) -> None:
    alice, bob = pair_ids()
    caller, receiver = in_call(server, pages, alice, bob, viewport=viewport)
    receiver.click("#show-chat")  # the far side, a phone too, chats with its chat open
    caller.wait_chat(f"Connected to {bob}", who="system")
    caller.wait_remote_playing()
    check_call_in_view(caller)
    # The chat waits behind its toggle, which counts what arrived meanwhile.
    assert caller.js("() => document.getElementById('chat-input').getClientRects().length") == 0
    receiver.send_chat("a line while the chat is closed")
    caller.wait_for("() => document.getElementById('chat-unread').textContent === '1'")
    check_call_in_view(caller)
    caller.click("#show-chat")
    caller.wait_chat("a line while the chat is closed")
    assert caller.js("() => document.getElementById('chat-unread').hidden") is True
    geometry = check_call_in_view(caller)
    assert inside(geometry["chatInput"], geometry), geometry  # typing does not hide the video
    caller.send_chat("typed on the phone")
    receiver.wait_chat("typed on the phone")
    receiver.send_chat("and an answer")
    caller.wait_chat("and an answer")
    check_call_in_view(caller)
    caller.click("#show-chat")
    # The devices, the invite and the call quality are behind "More", the device names in full.
    caller.click("#show-more")
    assert caller.js("() => document.getElementById('camera').getClientRects().length") > 0
    assert caller.js("() => document.getElementById('invite').getClientRects().length") > 0
    selects = ("camera", "microphone", "speaker", "resolution", "codec", "bandwidth")
    assert caller.js(CUT_NAMES_JS) == dict.fromkeys(selects, 0)
    caller.click("#show-more")
    check_call_in_view(caller)


def test_on_a_phone_held_upright_the_call_comes_first_and_stays_in_view(server, pages):
    phone_call(server, pages, (390, 844))


def test_on_a_phone_on_its_side_the_call_and_hang_up_fit_the_screen(server, pages):
    phone_call(server, pages, (844, 390))


# --- the start form ---------------------------------------------------------------------------


def test_the_start_form_opens_a_link_to_share_and_needs_a_peer_to_call(server, pages):
    page = pages(f"{server.http}/")
    page.fill("#start-id", "form-alice")
    page.click("#start-call")  # no peer: the browser keeps the form and says why
    assert urlsplit(page.page.url).path == "/"
    assert page.js("() => document.getElementById('start-peer').validationMessage") == "Enter the id of the person to call."
    page.fill("#start-peer", "form-bob")
    with page.page.expect_navigation():
        page.click("#start-call")
    url = urlsplit(page.page.url)
    assert (url.path, parse_qs(url.query)) == ("/call", {"id": ["form-alice"], "peer_id": ["form-bob"]})
    assert page.page.title() == "Caller · form-alice"
    page.wait_state("not-online")
    # The address is the page: opened again (a bookmark, a shared link, a reload), it is the same.
    page.page.reload()
    page.wait_state("not-online")
    assert page.js("() => window.webrtcApp.config.peerId") == "form-bob"
    # Waiting needs no peer, and an empty one is left out of the address.
    page.page.goto(f"{server.http}/")
    page.fill("#start-id", "form-carol")
    with page.page.expect_navigation():
        page.click("#start-wait")
    url = urlsplit(page.page.url)
    assert (url.path, parse_qs(url.query)) == ("/recieve", {"id": ["form-carol"]})
    page.wait_state("waiting")
