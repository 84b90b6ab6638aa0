"""Calls with Debian's Firefox (firefox-esr, headless, fake camera), driven through npm
puppeteer-core over WebDriver BiDi (tests/firefox.py), beside Chromium and the Python peer."""

from __future__ import annotations

import itertools

import pytest
from browser import REFUSE_CAMERA_JS
from conftest import require
from firefox import Firefox, missing_firefox_parts
from peer_thread import PeerThread
from test_call_page import FIRST_CAMERA, SECOND_CAMERA, option_value

try:
    import webrtc_client
except ImportError:  # aiortc missing: the test that needs it says so
    webrtc_client = None  # type: ignore[assignment]

_ids = itertools.count()


@pytest.fixture(scope="module")
def firefox():
    missing = missing_firefox_parts()
    require(not missing, "Firefox driven by puppeteer-core", missing or "")
    browser = Firefox()
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def firefox_pages(firefox):
    opened = []

    def open_page(url: str, init_script: str | None = None):
        page = firefox.open(url, init_script=init_script)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        assert page.errors == [], page.errors
        page.close()


def names(kind: str) -> tuple[str, str]:
    n = next(_ids)
    return f"{kind}-fox{n}", f"{kind}-chrome{n}"


@pytest.mark.parametrize("firefox_role", ["caller", "receiver"])
def test_firefox_and_chromium_call_each_other_and_chat(server, pages, firefox_pages, firefox_role):
    fox_id, chrome_id = names(firefox_role)
    fox_route, chrome_route = ("call", "recieve") if firefox_role == "caller" else ("recieve", "call")
    chrome = pages(f"{server.http}/{chrome_route}?id={chrome_id}&peer_id={fox_id}")
    fox = firefox_pages(f"{server.http}/{fox_route}?id={fox_id}&peer_id={chrome_id}")
    assert "Firefox/" in fox.js("() => navigator.userAgent")
    for page, peer in ((fox, chrome_id), (chrome, fox_id)):
        page.wait_state("connected")
        video = page.wait_remote_playing()
        assert video["width"] > 0 and video["height"] > 0
        page.wait_frames_flowing()
        assert page.status_text == f"In a call with {peer}"
    fox.send_chat("hello from Firefox")
    chrome.wait_chat("hello from Firefox")
    chrome.send_chat("hello from Chromium")
    fox.wait_chat("hello from Chromium")
    for page in (fox, chrome):
        assert page.js("() => window.webrtcApp.state.call.channel.readyState") == "open"  # not via the server


def test_firefox_calls_the_python_peer(server, firefox_pages):
    require(webrtc_client, "aiortc (for the Python peer)", "pip install -r peer-requirements.txt")
    fox = firefox_pages(f"{server.http}/call?id=fox-human&peer_id=fox-bot")
    fox.wait_state("waiting", "not-online")
    bot = PeerThread(server.ws, "fox-bot", "fox-human", route="/wsrecieve")
    try:
        fox.wait_state("connected")
        video = fox.wait_remote_playing()
        assert (video["width"], video["height"]) == (320, 240)  # the bot's colour bars
        bot.wait(lambda: bot.peer.frames_received >= 10, "Firefox's video at the bot")
        fox.send_chat("hello bot")
        fox.wait_chat("echo: hello bot")
        assert bot.call(bot.peer.send_chat("hello Firefox"))
        fox.wait_chat("hello Firefox")
    finally:
        bot.stop()


def test_firefox_hangs_up_and_restarts_the_call(server, pages, firefox_pages):
    fox_id, chrome_id = names("hangup")
    chrome = pages(f"{server.http}/recieve?id={chrome_id}&peer_id={fox_id}")
    fox = firefox_pages(f"{server.http}/call?id={fox_id}&peer_id={chrome_id}")
    for page in (fox, chrome):
        page.wait_state("connected")
    fox.click("#hangup")
    assert fox.wait_state("ended") == "ended"
    assert chrome.wait_state("peer-left") == "peer-left"
    assert chrome.status_text == f"{fox_id} hung up."
    for page in (fox, chrome):
        assert page.js("() => window.webrtcApp.state.call") is None
    fox.click("#restart")
    for page in (fox, chrome):
        page.wait_state("connected")
        page.wait_remote_playing()
        page.wait_frames_flowing()


def test_the_codec_selector_offers_only_what_firefox_can_send(server, pages, firefox_pages):
    fox_id, chrome_id = names("codec")
    chrome = pages(f"{server.http}/recieve?id={chrome_id}&peer_id={fox_id}")
    fox = firefox_pages(f"{server.http}/call?id={fox_id}&peer_id={chrome_id}")
    options = "() => [...document.querySelectorAll('#codec option')].map(o => [o.value, o.disabled, o.textContent])"
    sendable = "() => RTCRtpSender.getCapabilities('video').codecs.map(c => c.mimeType)"
    # Offline Firefox has no H264 (Cisco's OpenH264 plugin is a download): the page says so.
    assert "video/H264" not in fox.js(sendable)
    assert ["H264", True, "H264 (not available in this browser)"] in fox.js(options)
    assert ["VP8", False, "VP8"] in fox.js(options) and ["VP9", False, "VP9"] in fox.js(options)
    # Chromium can send H264: there it stays a choice.
    assert "video/H264" in chrome.js(sendable)
    assert ["H264", False, "H264"] in chrome.js(options)
    for page in (fox, chrome):
        page.wait_state("connected")
    for codec in ("VP9", "VP8"):
        fox.select("#codec", codec)
        fox.wait_codec(f"video/{codec}")
        chrome.wait_codec(f"video/{codec}", "inbound-rtp")
    assert fox.state == "connected"
    # Chromium may choose H264, but its Firefox peer cannot receive it: the page says so.
    chrome.select("#codec", "H264")
    chrome.wait_for(
        "() => [...document.querySelectorAll('#chat-log .system .text')]"
        ".some(e => /browser cannot use H264: the call goes on with (VP8|VP9|AV1)\\.$/.test(e.textContent))",
        timeout_ms=15000,
    )
    assert chrome.state == "connected" and fox.state == "connected"


def test_firefox_without_a_camera_calls_with_sound_and_chat(server, pages, firefox, firefox_pages):
    fox_id, chrome_id = names("nocam")
    chrome = pages(f"{server.http}/recieve?id={chrome_id}&peer_id={fox_id}")
    fox = firefox_pages(f"{server.http}/call?id={fox_id}&peer_id={chrome_id}", init_script=REFUSE_CAMERA_JS)
    for page in (fox, chrome):
        page.wait_state("connected")
    assert "Camera unavailable (NotAllowedError): the call goes on with sound and chat." in fox.chat_texts("system")
    assert fox.sender_label("video") is None and fox.sender_label("audio")
    chrome.wait_inbound_rising("audio")  # Firefox's microphone reaches Chromium
    fox.wait_remote_playing()  # and Firefox sees Chromium
    fox.send_chat("sound only")
    chrome.wait_chat("sound only")


def test_firefox_shows_call_quality_and_sees_chromium_switch_camera(server, pages, firefox_pages):
    fox_id, chrome_id = names("quality")
    chrome = pages(f"{server.http}/recieve?id={chrome_id}&peer_id={fox_id}")
    fox = firefox_pages(f"{server.http}/call?id={fox_id}&peer_id={chrome_id}")
    for page in (fox, chrome):
        page.wait_state("connected")
        page.wait_remote_playing()
    # Firefox's panel, from Firefox's getStats (no transport stats, RTCP round trips).
    panel = fox.wait_quality("bitrate", "rtt", "path", "video")
    assert panel["path"]["value"] == "direct" and panel["path"]["text"].startswith("Direct ("), panel
    assert float(panel["bitrate"]["value"]) > 50, panel
    width, height = map(int, panel["video"]["value"].split("x"))
    assert 0 < width <= 640 and width * 3 == height * 4, panel  # the camera's 4:3 (its size follows the bandwidth)
    # Chromium swaps its camera with replaceTrack: Firefox sees the other picture, in the same call.
    fox.wait_remote_colour(FIRST_CAMERA)
    fox.js("() => { window.before = window.webrtcApp.state.call; }")
    chrome.select("#camera", option_value(chrome, "#camera", "fake_device_2"))
    fox.wait_remote_colour(SECOND_CAMERA)
    assert fox.js("() => window.webrtcApp.state.call === window.before") and fox.state == "connected"


def wait_system_line(page, start: str) -> list[str]:
    page.wait_for(
        "start => [...document.querySelectorAll('#chat-log .system .text')].some(e => e.textContent.startsWith(start))", start
    )
    return page.chat_texts("system")


def test_firefox_headless_cannot_share_a_screen_and_says_so(server, firefox_pages):
    # Headless Firefox has no screen to offer: getDisplayMedia rejects with NotFoundError.
    fox_id, chrome_id = names("share")
    fox = firefox_pages(f"{server.http}/call?id={fox_id}&peer_id={chrome_id}")
    fox.wait_state("not-online")
    fox.click("#share")
    assert "Screen not shared (NotFoundError)." in wait_system_line(fox, "Screen not shared")
    assert fox.js("() => document.getElementById('share').getAttribute('aria-pressed')") == "false"
    assert fox.js("() => window.webrtcApp.media.videoTrack.readyState") == "live"  # the camera goes on


def test_a_firefox_member_in_a_room_with_chromium_members(server, pages, firefox_pages):
    n = next(_ids)
    room, fox_id, ann_id, ben_id = f"fox-room{n}", f"room-fox{n}", f"room-ann{n}", f"room-ben{n}"
    ann = pages(f"{server.http}/room?id={ann_id}&room={room}")
    fox = firefox_pages(f"{server.http}/room?id={fox_id}&room={room}")  # offers to ann, who waits for it
    ann.wait_room_tiles([fox_id])
    ben = pages(f"{server.http}/room?id={ben_id}&room={room}")  # offers to ann and to Firefox
    for page, others in ((fox, [ann_id, ben_id]), (ann, [fox_id, ben_id]), (ben, [ann_id, fox_id])):
        page.wait_room_tiles(others)
        page.wait_room_videos_advance(others)
        page.wait_state("connected")
    fox.send_chat("hello from Firefox")
    ann.wait_chat("hello from Firefox")
    ben.wait_chat("hello from Firefox")
    ben.send_chat("hello from Chromium")
    fox.wait_chat("hello from Chromium")
    fox.click("#leave")
    fox.wait_state("left")
    for page, other in ((ann, ben_id), (ben, ann_id)):
        page.wait_for("(id) => !document.querySelector(`#tiles .tile[data-id='${id}']`)", fox_id, 3000)
        assert sorted(page.room_tiles()) == [other]
