"""A real video call between two pages in headless Chromium, through the real server process."""

from __future__ import annotations

import itertools
import os

from browser import PageDriver

from processes import ServerProcess, free_port

SHOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "call.png")
_ids = itertools.count()


def pair_ids() -> tuple[str, str]:
    n = next(_ids)
    return f"alice{n}", f"bob{n}"


def start_call(server, pages, caller_id: str, receiver_id: str, **options) -> tuple[PageDriver, PageDriver]:
    receiver = pages(f"{server.http}/recieve?id={receiver_id}&peer_id={caller_id}")
    caller = pages(f"{server.http}/call?id={caller_id}&peer_id={receiver_id}", **options)
    for page in (caller, receiver):
        page.wait_state("connected")
    return caller, receiver


def test_call_connects_and_video_plays_both_ways(server, pages, tmp_path):
    alice, bob = pair_ids()
    # Tall enough for every control, the invite and the quality panel in the README's picture.
    caller, receiver = start_call(server, pages, alice, bob, viewport=(1280, 790))
    for page, peer in ((caller, bob), (receiver, alice)):
        video = page.wait_remote_playing()
        assert video["width"] > 0 and video["height"] > 0
        assert page.status_text == f"In a call with {peer}"
    receiver.send_chat(f"Hello {alice}, I can see you")
    caller.wait_chat(f"Hello {alice}, I can see you")
    caller.send_chat(f"Hello {bob}, can you see me?")
    receiver.wait_chat(f"Hello {bob}, can you see me?")
    # UPDATE_SCREENSHOT=1 refreshes the README's picture of a live call: the caller's page, with
    # its invite, and a quality panel with some seconds of bitrate behind it.
    if os.environ.get("UPDATE_SCREENSHOT"):
        caller.wait_for("() => window.webrtcApp.quality.history.length >= 12", timeout_ms=30000)
    caller.page.screenshot(path=SHOT if os.environ.get("UPDATE_SCREENSHOT") else str(tmp_path / "call.png"))


def test_chat_goes_both_ways_and_html_stays_text(server, pages):
    alice, bob = pair_ids()
    caller, receiver = start_call(server, pages, alice, bob)
    caller.send_chat("hello from the caller")
    receiver.wait_chat("hello from the caller")
    receiver.send_chat("hello back")
    caller.wait_chat("hello back")
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    caller.send_chat(hostile)
    receiver.wait_chat(hostile)
    assert receiver.js("() => document.querySelectorAll('#chat-log img, #chat-log b').length") == 0
    assert receiver.js("() => window.pwned === undefined")
    # The chat went over the data channel.
    assert caller.js("() => window.webrtcApp.state.call.channel.readyState") == "open"


def test_chat_falls_back_to_the_signaling_socket_without_a_call(server, pages):
    alice, bob = pair_ids()
    caller, receiver = start_call(server, pages, alice, bob)
    caller.page.click("#hangup")
    receiver.wait_state("peer-left")
    caller.send_chat("after the call")
    receiver.wait_chat("after the call")


def test_hang_up_ends_the_call_on_both_sides_and_restart_brings_it_back(server, pages):
    alice, bob = pair_ids()
    caller, receiver = start_call(server, pages, alice, bob)
    caller.page.click("#hangup")
    assert caller.wait_state("ended") == "ended"
    assert receiver.wait_state("peer-left") == "peer-left"
    assert receiver.status_text == f"{alice} hung up."
    for page in (caller, receiver):
        assert page.remote_video()["live"] is False
        assert page.js("() => window.webrtcApp.state.call") is None
    receiver.page.click("#restart")
    for page in (caller, receiver):
        page.wait_state("connected")
        page.wait_remote_playing()


def test_mute_disables_the_audio_track(server, pages):
    alice, bob = pair_ids()
    caller, _ = start_call(server, pages, alice, bob)
    audio_enabled = (
        "() => window.webrtcApp.state.call.pc.getSenders().filter(s => s.track && s.track.kind === 'audio')[0].track.enabled"
    )
    assert caller.js(audio_enabled) is True
    caller.page.click("#mute")
    assert caller.js(audio_enabled) is False
    assert caller.page.inner_text("#mute") == "Unmute"
    assert caller.page.get_attribute("#mute", "aria-pressed") == "true"
    caller.page.click("#mute")
    assert caller.js(audio_enabled) is True


def test_layout_fits_a_phone_and_a_laptop(server, pages):
    alice, bob = pair_ids()
    layout = (
        "() => { const box = id => document.querySelector(id).getBoundingClientRect();"
        " return {stage: box('.stage'), remote: box('#remote-video'), controls: box('.call-controls'), chat: box('.chat'),"
        " toggle: box('#show-chat'), overflow: document.documentElement.scrollWidth > innerWidth}; }"
    )
    phone_page = pages(f"{server.http}/call?id={alice}&peer_id={bob}", viewport=(390, 844))
    phone = phone_page.js(layout)
    assert phone["overflow"] is False
    assert phone["controls"]["top"] >= phone["remote"]["bottom"]  # one column: the controls under the video
    assert phone["chat"]["height"] == 0 and phone["toggle"]["height"] > 0  # the chat behind its toggle
    phone_page.click("#show-chat")
    phone = phone_page.js(layout)
    assert phone["chat"]["top"] >= phone["controls"]["bottom"]  # then under the controls
    laptop = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}").js(layout)
    assert laptop["toggle"]["height"] == 0  # everything shown, no toggles
    assert laptop["overflow"] is False
    assert laptop["chat"]["left"] >= laptop["stage"]["right"]  # side by side


def test_caller_alone_sees_peer_not_online(server, pages):
    alice, bob = pair_ids()
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    caller.wait_state("not-online")
    assert caller.status_text == f"{bob} not online"


def test_receiver_without_peer_id_adopts_its_caller(server, pages):
    alice, bob = pair_ids()
    receiver = pages(f"{server.http}/recieve?id={bob}")
    receiver.wait_state("waiting")
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    for page in (caller, receiver):
        page.wait_state("connected")
    assert receiver.page.inner_text("#peer-id") == alice
    receiver.send_chat("found you")
    caller.wait_chat("found you")


def test_camera_refused_is_shown_and_the_call_still_receives(server, pages):
    alice, bob = pair_ids()
    refuse = (
        "navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    receiver = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}", init_script=refuse)
    receiver.wait_state("camera-refused", "waiting", "not-online")
    assert receiver.js("() => window.webrtcApp.state.localStream.getTracks().length") == 0  # nothing to send
    assert any("Camera or microphone unavailable (NotAllowedError)" in line for line in receiver.chat_texts("system"))
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    receiver.wait_state("connected")
    receiver.wait_remote_playing()  # bob sees alice without a camera of his own
    caller.wait_state("connected")


def test_resolution_codec_and_bandwidth_choices_take_effect(server, pages):
    alice, bob = pair_ids()
    receiver = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}")
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}")
    for page in (caller, receiver):
        page.wait_state("connected")
    caller.page.select_option("#codec", "VP9")
    caller.wait_codec("video/VP9")
    receiver.wait_codec("video/VP9", "inbound-rtp")
    caller.page.select_option("#resolution", "320x240")
    caller.page.wait_for_function(
        "() => { const s = window.webrtcApp.state.localStream.getVideoTracks()[0].getSettings();"
        " return s.width === 320 && s.height === 240; }"
    )
    receiver.page.wait_for_function("() => document.getElementById('remote-video').videoWidth === 320")
    caller.page.select_option("#bandwidth", "125")
    caller.page.wait_for_function(
        "() => window.webrtcApp.state.call.videoSender().getParameters().encodings[0].maxBitrate === 125000"
    )
    caller.page.select_option("#codec", "H264")
    caller.wait_codec("video/H264")
    receiver.wait_codec("video/H264", "inbound-rtp")
    caller.page.select_option("#codec", "VP8")
    caller.wait_codec("video/VP8")
    receiver.wait_codec("video/VP8", "inbound-rtp")
    # Renegotiation kept the call and the cap.
    assert caller.state == "connected"
    assert caller.js("() => window.webrtcApp.state.call.videoSender().getParameters().encodings[0].maxBitrate") == 125000


def test_pages_reconnect_after_a_server_restart_and_a_new_call_works(browser, pages):
    alice, bob = pair_ids()
    port = free_port()
    first = ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_ICE_ACCESS_TOKEN": "restart-token"}, port=port).start()
    try:
        caller, receiver = start_call(first, pages, alice, bob)
        assert first.stop() == 0
        for page in (caller, receiver):
            page.page.wait_for_function("() => /reconnecting in/.test(document.getElementById('status').textContent)")
    finally:
        first.kill()
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_ICE_ACCESS_TOKEN": "restart-token"}, port=port) as second:
        second.wait_for_line(rf"101 GET /wsrecieve\?id={bob}", timeout=30)
        second.wait_for_line(rf"101 GET /wscall\?id={alice}", timeout=30)
        caller.page.click("#restart")
        for page in (caller, receiver):
            page.wait_state("connected")
            page.wait_remote_playing()
        caller.send_chat("still here")
        receiver.wait_chat("still here")
