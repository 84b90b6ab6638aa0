"""What people expect of a call page, in headless Chromium through the real server: device
pickers switching live, screen sharing, the call-quality panel, the invite link, calls with
sound only, and every control usable from the keyboard.

This module's Chromium has the usual fake devices (three cameras, see tests/browser.py) and no
fake permission prompt: the pages get the camera and microphone from the context's
permissions, so that ``--auto-select-tab-capture-source-by-title`` is honoured and screen
sharing captures a real tab (with ``--use-fake-ui-for-media-stream`` Chromium hands out a fake
screen and ignores that flag).
"""

from __future__ import annotations

import itertools

import pytest
from browser import CHROMIUM_ARGS, REFUSE_CAMERA_JS, PageDriver
from conftest import chromium, require

try:
    import zxingcpp
except ImportError:  # the invite test says so
    zxingcpp = None

SHARED_TITLE = "Shared tab for the screen-sharing test"
ARGS = [
    *(arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"),
    f"--auto-select-tab-capture-source-by-title={SHARED_TITLE}",
]
MEDIA = ["camera", "microphone"]
# The fake cameras as the far side sees them: green corners, or yellow ones.
FIRST_CAMERA = "g > 2 * r && g > 2 * b && corner < 80"
SECOND_CAMERA = "g > 2 * b && corner > 150"
MAGENTA = "r > 150 && b > 150 && g < 100"  # the shared tab's background

_ids = itertools.count()


@pytest.fixture(scope="module")
def browser():
    with chromium(ARGS) as launched:
        yield launched


def pair_ids(kind: str) -> tuple[str, str]:
    n = next(_ids)
    return f"{kind}-alice{n}", f"{kind}-bob{n}"


def start_call(server, pages, caller_id: str, receiver_id: str, **options) -> tuple[PageDriver, PageDriver]:
    receiver = pages(f"{server.http}/recieve?id={receiver_id}&peer_id={caller_id}", permissions=MEDIA)
    caller = pages(f"{server.http}/call?id={caller_id}&peer_id={receiver_id}", permissions=MEDIA, **options)
    for page in (caller, receiver):
        page.wait_state("connected")
        page.wait_remote_playing()
    return caller, receiver


def option_value(page: PageDriver, select: str, label: str) -> str:
    """The value of the option of ``select`` whose text is ``label``."""
    value = page.js(
        "([select, label]) => { const o = [...document.querySelectorAll(`${select} option`)].find(o => o.textContent === label);"
        " return o ? o.value : null; }",
        [select, label],
    )
    assert value, f"no {label!r} in {select}: {page.js(f'() => document.querySelector({select!r}).innerText')}"
    return value


def remember_call(page: PageDriver) -> None:
    """Note the page's current call and SDP, to prove later that neither changed."""
    page.js("() => { const c = window.webrtcApp.state.call; window.before = {call: c, sdp: c.pc.remoteDescription.sdp}; }")


def same_call(page: PageDriver) -> bool:
    """The same connection as at remember_call(), without a new offer or answer since."""
    return page.js(
        "() => { const c = window.webrtcApp.state.call; return c === window.before.call"
        " && c.pc.remoteDescription.sdp === window.before.sdp && c.pc.connectionState === 'connected'; }"
    )


def test_switching_camera_keeps_the_call_changes_the_picture_and_is_remembered(server, pages):
    alice, bob = pair_ids("camera")
    caller, receiver = start_call(server, pages, alice, bob)
    caller.wait_sender("video", "fake_device_0")
    receiver.wait_remote_colour(FIRST_CAMERA)
    for page in (caller, receiver):
        remember_call(page)
    assert caller.js("() => [...document.querySelectorAll('#camera option')].map(o => o.textContent)") == [
        "fake_device_0",
        "fake_device_1",
        "fake_device_2",
    ]
    caller.select("#camera", option_value(caller, "#camera", "fake_device_2"))
    receiver.wait_remote_colour(SECOND_CAMERA)
    caller.wait_sender("video", "fake_device_2")
    # replaceTrack: no new offer, no new connection, on either side.
    assert same_call(caller) and same_call(receiver)
    assert caller.js("() => document.getElementById('local-video').srcObject.getVideoTracks()[0].label") == "fake_device_2"
    # The next visit opens the same camera.
    caller.page.reload()
    caller.wait_state("connected")
    caller.wait_sender("video", "fake_device_2")
    assert caller.js("() => document.querySelector('#camera').selectedOptions[0].textContent") == "fake_device_2"
    receiver.wait_remote_colour(SECOND_CAMERA)


def test_microphone_and_speaker_pickers_switch_during_the_call(server, pages):
    alice, bob = pair_ids("audio")
    caller, receiver = start_call(server, pages, alice, bob)
    for page in (caller, receiver):
        remember_call(page)
    caller.select("#microphone", option_value(caller, "#microphone", "Fake Audio Input 1"))
    caller.wait_for("() => window.webrtcApp.state.call.senders.audio.track.label === 'Fake Audio Input 1'")
    receiver.wait_inbound_rising("audio")
    speaker = option_value(receiver, "#speaker", "Fake Audio Output 1")
    receiver.select("#speaker", speaker)
    receiver.wait_for("id => document.getElementById('remote-video').sinkId === id", speaker)
    assert same_call(caller) and same_call(receiver)
    # Mute follows the new microphone.
    caller.click("#mute")
    assert caller.js("() => window.webrtcApp.state.call.senders.audio.track.enabled") is False
    # Both remembered.
    receiver.page.reload()
    receiver.wait_for("id => document.getElementById('remote-video').sinkId === id", speaker)
    caller.page.reload()
    caller.wait_state("connected")
    caller.wait_sender("audio", "Fake Audio Input 1")


def test_a_device_plugged_in_or_out_updates_the_lists(server, pages):
    # Nothing can plug a camera into this machine: the browser's answers are filtered as if
    # fake_device_2 were unplugged, and the page hears the browser's "devicechange" event.
    unplug = """
        window.unplugged = [];
        const list = navigator.mediaDevices.enumerateDevices.bind(navigator.mediaDevices);
        navigator.mediaDevices.enumerateDevices = async () => (await list()).filter(d => !window.unplugged.includes(d.label));
    """
    alice, bob = pair_ids("hotplug")
    page = pages(f"{server.http}/call?id={alice}&peer_id={bob}", init_script=unplug, permissions=MEDIA)
    cameras = "() => [...document.querySelectorAll('#camera option')].map(o => o.textContent).join(',')"
    page.wait_for(f"() => ({cameras})() === 'fake_device_0,fake_device_1,fake_device_2'")
    page.js("() => { window.unplugged = ['fake_device_2']; navigator.mediaDevices.dispatchEvent(new Event('devicechange')); }")
    page.wait_for(f"() => ({cameras})() === 'fake_device_0,fake_device_1'")
    page.js("() => { window.unplugged = []; navigator.mediaDevices.dispatchEvent(new Event('devicechange')); }")
    page.wait_for(f"() => ({cameras})() === 'fake_device_0,fake_device_1,fake_device_2'")


def open_shared_tab(caller: PageDriver):
    """A tab the browser captures when the caller shares its screen (picked by its title)."""
    tab = caller.context.new_page()
    tab.set_content(f"<title>{SHARED_TITLE}</title><body style='margin:0;background:#f0f'><h1>Shared</h1></body>")
    caller.page.bring_to_front()
    return tab


def test_screen_sharing_reaches_the_peer_and_switches_back(server, pages):
    alice, bob = pair_ids("share")
    caller, receiver = start_call(server, pages, alice, bob)
    receiver.wait_remote_colour(FIRST_CAMERA)
    for page in (caller, receiver):
        remember_call(page)
    tab = open_shared_tab(caller)

    # 1. Shared, then stopped with the button.
    caller.click("#share")
    receiver.wait_remote_colour(f"{MAGENTA} && width * 9 === height * 16")  # the tab: 1280x720, not 4:3
    caller.wait_for(
        "() => (window.webrtcApp.state.call.senders.video.track?.label || '').startsWith('web-contents-media-stream://')"
    )
    assert caller.js("() => document.getElementById('share').getAttribute('aria-pressed')") == "true"
    assert caller.js("() => document.getElementById('share').textContent") == "Stop sharing"
    caller.click("#share")
    receiver.wait_remote_colour(f"{FIRST_CAMERA} && width * 3 === height * 4")
    caller.wait_sender("video", "fake_device_0")
    assert caller.js("() => document.getElementById('share').textContent") == "Share screen"

    # 2. The browser ends the capture by itself: the shared tab is closed.
    caller.click("#share")
    receiver.wait_remote_colour(MAGENTA)
    tab.close()
    receiver.wait_remote_colour(FIRST_CAMERA)
    caller.wait_for("() => document.getElementById('share').getAttribute('aria-pressed') === 'false'")

    # 3. The shared track is stopped from the page (no "ended" event then, the page notices).
    open_shared_tab(caller)
    caller.click("#share")
    receiver.wait_remote_colour(MAGENTA)
    caller.js("() => window.webrtcApp.media.screen.stop()")
    receiver.wait_remote_colour(FIRST_CAMERA)
    caller.wait_sender("video", "fake_device_0")
    assert same_call(caller) and same_call(receiver)


def test_in_a_room_the_screen_goes_to_every_member_on_the_same_connections(server, pages):
    room, ids = f"share-room{next(_ids)}", ["ann", "ben", "cat"]
    people = {id: pages(f"{server.http}/room?id={id}&room={room}", permissions=MEDIA) for id in ids}
    for id, page in people.items():
        page.wait_room_tiles([other for other in ids if other != id])
    ann = people["ann"]
    sdps = "() => [...window.webrtcApp.state.members.values()].map(m => m.call.pc.remoteDescription.sdp)"
    before = ann.js(sdps)
    tab = open_shared_tab(ann)
    ann.click("#share")
    for id in ("ben", "cat"):
        people[id].wait_remote_colour(MAGENTA, member="ann")
    every_sender = (
        "(prefix) => [...window.webrtcApp.state.members.values()]"
        ".every(m => (m.call.senders.video.track?.label || '').startsWith(prefix))"
    )
    ann.wait_for(every_sender, "web-contents-media-stream://")
    ann.click("#share")
    for id in ("ben", "cat"):
        people[id].wait_remote_colour(FIRST_CAMERA, member="ann")
    ann.wait_for(every_sender, "fake_device_0")
    assert ann.js(sdps) == before  # one replaceTrack per connection: no new offer
    tab.close()


def test_the_quality_panel_shows_numbers_that_move_and_names_the_path(server, pages):
    alice, bob = pair_ids("quality")
    caller, receiver = start_call(server, pages, alice, bob)
    first = receiver.wait_quality("bitrate", "rtt", "path", "video", "codec")
    assert first["path"] == {"text": "Direct (UDP, host to host)", "value": "direct"}, first
    width, height = map(int, first["video"]["value"].split("x"))  # the camera's 4:3; the encoder may start smaller
    assert 0 < width <= 640 and width * 3 == height * 4 and first["video"]["text"].startswith(f"{width}×{height}, "), first
    assert first["codec"]["value"] and first["codec"]["text"].startswith("↓ ")
    assert 0 <= float(first["rtt"]["value"]) < 200 and first["rtt"]["text"].endswith(" ms")
    assert float(first["bitrate"]["value"]) > 50, first  # a live video call, in kb/s
    assert first["loss"]["text"].startswith("↓ ")
    # Once a second, new numbers; the sparkline fills.
    receiver.wait_for(
        "before => document.getElementById('q-bitrate').dataset.value !== before", first["bitrate"]["value"], timeout_ms=5000
    )
    painted = """() => { const c = document.getElementById('q-sparkline');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0); }"""
    receiver.wait_for(painted, timeout_ms=5000)
    # They follow the call: cap the caller's video at 125 kb/s and the receiver sees it.
    caller.select("#bandwidth", "125")
    receiver.wait_for("() => Number(document.getElementById('q-bitrate').dataset.value) < 200", timeout_ms=20000)
    assert receiver.js("() => document.getElementById('q-warning').hidden") is True  # loopback is no poor connection
    # Hang up: the panel empties.
    caller.click("#hangup")
    caller.wait_for("() => document.getElementById('q-path').textContent === '–'", timeout_ms=5000)


def test_the_invite_link_copies_draws_a_qr_code_and_opens_a_receiver_page_that_joins(server, pages):
    require(zxingcpp, "zxing-cpp (reads the invite's QR code)", "pip install -r tests/requirements.txt")
    alice, bob = pair_ids("invite")
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}", permissions=[*MEDIA, "clipboard-read", "clipboard-write"])
    caller.wait_state("not-online")
    url = caller.js("() => document.getElementById('invite-link').href")
    assert url == f"{server.http}/recieve?id={bob}&peer_id={alice}"
    assert caller.js("() => document.getElementById('invite-link').textContent") == url
    # From the keyboard: focus the button, press Enter.
    caller.page.focus("#invite-copy")
    caller.page.keyboard.press("Enter")
    caller.wait_for("() => document.getElementById('invite-done').textContent === 'Copied'")
    assert caller.js("() => navigator.clipboard.readText()") == url
    # The QR code, read back from the canvas's pixels by a real decoder.
    pixels = caller.js(
        """() => { const c = document.getElementById('invite-qr');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const grey = []; for (let i = 0; i < d.length; i += 4) grey.push(d[i]);
            return {width: c.width, height: c.height, grey}; }"""
    )
    image = memoryview(bytes(pixels["grey"])).cast("B", (pixels["height"], pixels["width"]))
    decoded = zxingcpp.read_barcodes(image)
    assert [code.text for code in decoded] == [url]
    assert decoded[0].format == zxingcpp.BarcodeFormat.QRCode
    # The person invited opens it: the call starts.
    receiver = pages(url, permissions=MEDIA)
    for page in (caller, receiver):
        page.wait_state("connected")
        page.wait_remote_playing()
    # Only the caller page invites.
    assert receiver.js("() => document.getElementById('invite').hidden") is True


def test_a_call_without_a_camera_goes_on_with_sound_and_chat(server, pages):
    alice, bob = pair_ids("nocam")
    receiver = pages(f"{server.http}/recieve?id={bob}&peer_id={alice}", permissions=MEDIA)
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}", init_script=REFUSE_CAMERA_JS, permissions=MEDIA)
    for page in (caller, receiver):
        page.wait_state("connected")
    text = "Camera unavailable (NotAllowedError): the call goes on with sound and chat."
    assert text in caller.chat_texts("system")
    caller.wait_sender("audio", "Fake Default Audio Input")
    caller.wait_sender("video", None)
    receiver.wait_inbound_rising("audio")  # the caller's microphone reaches bob
    caller.wait_inbound_rising("audio")
    caller.wait_remote_playing()  # and alice sees bob
    caller.send_chat("no camera here")
    receiver.wait_chat("no camera here")
    assert caller.js("() => window.webrtcApp.state.call.channel.readyState") == "open"
    # The camera allowed later: Start video sends it in the same call (the video sender was there).
    assert caller.js("() => document.getElementById('camera-off').textContent") == "Start video"
    for page in (caller, receiver):
        remember_call(page)
    caller.js("() => { window.cameraAllowed = true; }")
    caller.click("#camera-off")
    receiver.wait_frames_flowing()
    receiver.wait_remote_colour(FIRST_CAMERA)
    caller.wait_sender("video", "fake_device_0")
    assert same_call(caller) and same_call(receiver)


def test_stop_video_goes_on_with_sound_and_start_video_brings_it_back(server, pages):
    alice, bob = pair_ids("videooff")
    caller, receiver = start_call(server, pages, alice, bob)
    for page in (caller, receiver):
        remember_call(page)
    caller.click("#camera-off")
    assert caller.js("() => document.getElementById('camera-off').getAttribute('aria-pressed')") == "true"
    caller.wait_sender("video", None)
    assert caller.js("() => document.getElementById('local-video').srcObject") is None
    # No more video reaches bob; sound does.
    receiver.wait_for(
        """async () => { const n = async () => { let f = 0; (await window.webrtcApp.state.call.pc.getStats())
                .forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') f += r.framesDecoded || 0; }); return f; };
            const a = await n(); await new Promise(r => setTimeout(r, 1500)); return (await n()) === a; }"""
    )
    receiver.wait_inbound_rising("audio")
    assert same_call(caller) and same_call(receiver)
    caller.click("#camera-off")
    receiver.wait_frames_flowing()
    caller.wait_sender("video", "fake_device_0")
    assert caller.js("() => document.getElementById('camera-off').textContent") == "Stop video"
    assert same_call(caller) and same_call(receiver)


def test_every_control_has_a_visible_label_and_is_reached_with_the_tab_key(server, pages):
    alice, bob = pair_ids("keyboard")
    caller = pages(f"{server.http}/call?id={alice}&peer_id={bob}", permissions=MEDIA)
    caller.wait_state("not-online")
    controls = caller.js(
        """() => [...document.querySelectorAll('button, select, input, a[href]')].filter(e => e.offsetParent !== null).map(e => {
            const label = e.labels && e.labels.length ? e.labels[0].textContent
                : e.getAttribute('aria-label') || e.textContent;
            return {id: e.id, label: label.trim().split(/\\s+/)[0], disabled: e.disabled}; })"""
    )
    for control in controls:
        assert control["id"] and control["label"], control
    wanted = {control["id"] for control in controls if not control["disabled"]}
    for new in ("camera", "microphone", "speaker", "camera-off", "share", "invite-copy", "invite-link"):
        assert new in wanted, (new, controls)
    reached = set()
    for _ in range(len(controls) + 5):
        caller.page.keyboard.press("Tab")
        reached.add(caller.js("() => document.activeElement.id"))
    assert wanted <= reached, wanted - reached
