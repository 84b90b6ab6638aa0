"""Drive the pages in real browsers: Debian's Chromium with Playwright (here) and Debian's
firefox-esr through puppeteer-core (tests/firefox.py). Never a downloaded browser.

``CallPage`` holds what the tests ask of a page (its status, videos, chat, call statistics)
on top of a few primitives each browser driver implements, so one test body can drive a
Chromium page and a Firefox page side by side.
"""

from __future__ import annotations

import collections
import time
from typing import Any

# Chromium flags that make calls work headless on a machine with no camera and, maybe, only
# a loopback interface; and that keep it from reaching out to the internet (host candidates
# as addresses, not mDNS names that would be resolved by multicast).
# Three fake cameras: fake_device_0 (the default) draws a green picture with a moving pie and
# green corners; fake_device_2 (MJPEG) a still green one with yellow corners, which the far side
# tells apart by the red of a corner (REMOTE_PICTURE_JS); fake_device_1 is a Y16 depth camera,
# grey on the page, of which WebRTC sends no frame.
FAKE_DEVICES = "--use-fake-device-for-media-stream=device-count=3"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    FAKE_DEVICES,
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
TIMEOUT_MS = 20000

# The selected ICE candidate pair of the current call, from getStats():
# {state, local: {candidateType, protocol, relayProtocol, address}, remote: {...}} or null.
SELECTED_PAIR_JS = """async () => {
    const call = window.webrtcApp.state.call;
    if (!call) return null;
    const stats = await call.pc.getStats();
    let pair = null;
    stats.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    // Firefox has no transport stats: its selected pair says so itself.
    if (!pair) stats.forEach(r => { if (r.type === 'candidate-pair' && r.selected) pair = r; });
    if (!pair) return null;
    const side = id => { const c = stats.get(id) || {};
        return {candidateType: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol || null,
                address: c.address || c.ip || null}; };
    return {state: pair.state, local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId)};
}"""

# An init script: the person refuses the camera (until the page sets window.cameraAllowed) but
# allows the microphone.
REFUSE_CAMERA_JS = """{
    const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (constraints) => constraints && constraints.video && !window.cameraAllowed
        ? Promise.reject(new DOMException('Permission denied', 'NotAllowedError')) : open(constraints);
}"""

# The quality panel: {rtt: {text, value}, loss: ..., bitrate, video, codec, path}.
QUALITY_JS = """() => Object.fromEntries([...document.querySelectorAll('.quality dd')].map(
    d => [d.id.slice(2), {text: d.textContent, value: d.dataset.value || ''}]))"""

# The remote video's picture, drawn 32x24 on a canvas: mean colour (r, g, b), saturation (max -
# min channel, 0 for grey), the red of its top-right corner (2x2 of those pixels) and its size.
# ``member``: the room page's tile of that member instead.
REMOTE_PICTURE_JS = """(member) => { const v = member
        ? document.querySelector(`#tiles .tile[data-id="${member}"] video`) : document.getElementById('remote-video');
    const c = document.createElement('canvas'); c.width = 32; c.height = 24;
    const g = c.getContext('2d'); g.drawImage(v, 0, 0, 32, 24);
    const px = g.getImageData(0, 0, 32, 24).data; let r = 0, gr = 0, b = 0, sat = 0;
    for (let i = 0; i < px.length; i += 4) { r += px[i]; gr += px[i + 1]; b += px[i + 2];
        sat += Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]); }
    const red = (x, y) => px[(y * 32 + x) * 4];
    const n = px.length / 4;
    return {r: r / n, g: gr / n, b: b / n, saturation: sat / n, corner: (red(30, 0) + red(31, 0) + red(30, 1) + red(31, 1)) / 4,
            width: v.videoWidth, height: v.videoHeight}; }"""

# A room page's tiles: {id: {width, height, time, state, muted}} for every other member's tile.
ROOM_TILES_JS = """() => Object.fromEntries([...document.querySelectorAll('#tiles .tile:not(.self)')].map(t => {
    const v = t.querySelector('video');
    return [t.dataset.id, {width: v.videoWidth, height: v.videoHeight, time: v.currentTime, state: t.dataset.state || '',
                           muted: !t.querySelector('.badge-muted').hidden}]; }))"""


class CallPage:
    """A caller or receiver page, whatever the browser. Subclasses implement the primitives."""

    browser_name = ""

    # --- primitives ---------------------------------------------------------------------

    def js(self, expression: str, arg: Any = None) -> Any:
        """Evaluate a function expression, e.g. ``"() => 1"`` (the CSP forbids plain strings)."""
        raise NotImplementedError

    def wait_for(self, expression: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
        """Wait until the function expression returns something truthy (awaiting promises)."""
        raise NotImplementedError

    def click(self, selector: str) -> None:
        raise NotImplementedError

    def fill(self, selector: str, text: str) -> None:
        raise NotImplementedError

    def select(self, selector: str, value: str) -> None:
        raise NotImplementedError

    def screenshot(self, path: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- what the tests ask -------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.js("() => document.getElementById('status').dataset.state") or ""

    @property
    def status_text(self) -> str:
        return self.js("() => document.getElementById('status').textContent")

    def wait_state(self, *states: str, timeout_ms: int = TIMEOUT_MS) -> str:
        try:
            self.wait_for("states => states.includes(document.getElementById('status').dataset.state)", list(states), timeout_ms)
        except Exception as exc:  # the browser's timeout, whichever driver: say where the page is instead
            try:
                where: Any = self.describe()
            except Exception as inner:  # the page itself is gone
                where = f"(page not readable: {inner})"
            console = self.console_tail()
            raise AssertionError(f"{self.browser_name} page never reached {states}: {where}; console: {console}") from exc
        return self.state

    def console_tail(self) -> list[str]:
        """The page's last console messages, where the driver collects them."""
        return []

    def remote_video(self) -> dict[str, float]:
        return self.js(
            "() => { const v = document.getElementById('remote-video');"
            " return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime, live: !!v.srcObject}; }"
        )

    def wait_remote_playing(self, timeout: float = 20.0) -> dict[str, float]:
        """Wait until the remote video has frames and its clock advances."""
        self.wait_for(
            "() => { const v = document.getElementById('remote-video'); return v.videoWidth > 0 && v.currentTime > 0; }",
            timeout_ms=int(timeout * 1000),
        )
        first = self.remote_video()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.remote_video()
            if now["time"] > first["time"]:
                return now
        raise AssertionError(f"remote video is not advancing: {first}")

    def frames_decoded(self) -> int:
        """Video frames this page's current call has decoded so far (inbound-rtp)."""
        return self.js(
            """async () => { const call = window.webrtcApp.state.call; if (!call) return 0;
                let n = 0; (await call.pc.getStats()).forEach(r => {
                    if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
                return n; }"""
        )

    def wait_frames_flowing(self, more: int = 10, timeout: float = 20.0) -> int:
        """Wait until ``more`` new video frames are decoded from now on (counted on the current
        connection: if the page replaces it meanwhile, from the new one's start)."""
        self.js("() => { window.frameBase = null; }")
        self.wait_for(
            """async (more) => { const call = window.webrtcApp.state.call; if (!call) return false;
                let n = 0; (await call.pc.getStats()).forEach(r => {
                    if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
                if (!window.frameBase || window.frameBase.pc !== call.pc) window.frameBase = {pc: call.pc, n};
                return n >= window.frameBase.n + more; }""",
            more,
            int(timeout * 1000),
        )
        return self.frames_decoded()

    def remote_colour(self, member: str | None = None) -> dict[str, float]:
        """What the remote video (in a room, ``member``'s tile) shows now (see REMOTE_PICTURE_JS)."""
        return self.js(REMOTE_PICTURE_JS, member)

    def wait_remote_colour(self, condition: str, timeout_ms: int = TIMEOUT_MS, member: str | None = None) -> dict[str, float]:
        """Wait until the remote picture (in a room, ``member``'s tile) satisfies ``condition``, a
        JS expression over r, g, b, saturation, corner, width and height (e.g. ``"saturation < 5"``)."""
        self.wait_for(
            f"(member) => {{ const p = ({REMOTE_PICTURE_JS})(member); if (!p.width) return false;"
            f" const {{r, g, b, saturation, corner, width, height}} = p; return {condition}; }}",
            member,
            timeout_ms=timeout_ms,
        )
        return self.remote_colour(member)

    def inbound_bytes(self, kind: str) -> int:
        """Bytes of ``kind`` ("audio" or "video") this page's current call has received (inbound-rtp)."""
        return self.js(
            """async (kind) => { const call = window.webrtcApp.state.call; if (!call) return 0;
                let n = 0; (await call.pc.getStats()).forEach(r => {
                    if (r.type === 'inbound-rtp' && r.kind === kind) n += r.bytesReceived || 0; });
                return n; }""",
            kind,
        )

    def wait_inbound_rising(self, kind: str, more: int = 2000, timeout: float = 20.0) -> int:
        """Wait until ``more`` bytes of ``kind`` arrive from now on; answer the new total."""
        start = self.inbound_bytes(kind)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.inbound_bytes(kind)
            if now >= start + more:
                return now
            time.sleep(0.2)
        raise AssertionError(f"{kind} is not arriving: {start} bytes, then {self.inbound_bytes(kind)}")

    def sender_label(self, kind: str) -> str | None:
        """The label of the track this page's call sends as ``kind`` (None: it sends nothing)."""
        return self.js(
            "kind => { const s = window.webrtcApp.state.call.senders[kind]; return s && s.track ? s.track.label : null; }", kind
        )

    def wait_sender(self, kind: str, label: str | None, timeout_ms: int = TIMEOUT_MS) -> None:
        """Wait until the call sends ``label``'s track as ``kind`` (None: nothing). A sender's
        ``track`` changes when replaceTrack()'s promise resolves on the page's main thread,
        which on a busy machine can be after its first frames reached the far side."""
        self.wait_for(
            """([kind, label]) => { const s = window.webrtcApp.state.call.senders[kind];
                return ((s && s.track) ? s.track.label : null) === label; }""",
            [kind, label],
            timeout_ms,
        )

    def quality(self) -> dict[str, dict[str, str]]:
        """The quality panel as a person reads it (text) with the value behind each line."""
        return self.js(QUALITY_JS)

    def wait_quality(self, *fields: str, timeout_ms: int = TIMEOUT_MS) -> dict[str, dict[str, str]]:
        """The quality panel, once all of ``fields`` (e.g. "rtt", "path") show a value: read in
        the same turn, since a new connection empties the panel."""
        return self.wait_for(
            f"fields => {{ const q = ({QUALITY_JS})(); return fields.every(f => q[f].value !== '') && q; }}",
            list(fields),
            timeout_ms,
        )

    def describe(self) -> dict[str, Any]:
        """What a failing test should print about this page: status, call states, counters."""
        return self.js(
            """() => { const s = window.webrtcApp.state, c = s.call, st = document.getElementById('status');
                return {status: st.dataset.state, text: st.textContent, seen: window.seenStates || null,
                        renewals: s.renewals, signaling: window.webrtcApp.signaling.isOpen,
                        call: c && {connection: c.pc.connectionState, ice: c.pc.iceConnectionState,
                                    signalingState: c.pc.signalingState, recoveries: c.recoveries,
                                    local: c.pc.localDescription && c.pc.localDescription.type,
                                    remote: c.pc.remoteDescription && c.pc.remoteDescription.type,
                                    transceivers: c.pc.getTransceivers().map(
                                        t => `${t.mid}:${t.direction}:${t.sender.track ? t.sender.track.kind : '-'}`),
                                    iceRestarts: c.iceRestarts, stalled: c.stalled, givenUp: c.givenUp}}; }"""
        )

    def selected_pair(self) -> dict[str, Any] | None:
        return self.js(SELECTED_PAIR_JS)

    def record_states(self) -> None:
        """From now on, remember every status the page shows (see ``seen_states``, ``seen_texts``)."""
        self.js(
            """() => { const status = document.getElementById('status');
                window.seenStates = [status.dataset.state]; window.seenTexts = [status.textContent];
                new MutationObserver(() => {
                    if (window.seenStates.at(-1) !== status.dataset.state) window.seenStates.push(status.dataset.state);
                    if (window.seenTexts.at(-1) !== status.textContent) window.seenTexts.push(status.textContent);
                }).observe(status, {attributes: true, childList: true, characterData: true, subtree: true}); }"""
        )

    def seen_states(self) -> list[str]:
        return self.js("() => window.seenStates")

    def seen_texts(self) -> list[str]:
        return self.js("() => window.seenTexts")

    # --- the room page --------------------------------------------------------------------

    def room_tiles(self) -> dict[str, dict[str, Any]]:
        """The other members' tiles (see ROOM_TILES_JS)."""
        return self.js(ROOM_TILES_JS)

    def wait_room_tiles(self, ids: list[str], timeout_ms: int = 30000) -> dict[str, dict[str, Any]]:
        """Wait until the other members' tiles are exactly ``ids``, each playing video."""
        try:
            self.wait_for(
                f"""(ids) => {{ const t = ({ROOM_TILES_JS})(); const names = Object.keys(t).sort();
                    return JSON.stringify(names) === JSON.stringify([...ids].sort())
                        && names.every(id => t[id].width > 0 && t[id].time > 0); }}""",
                ids,
                timeout_ms,
            )
        except Exception as exc:  # the browser's timeout, whichever driver: say what the page shows
            me = self.js("() => window.webrtcApp.config.myId")
            raise AssertionError(f"{self.browser_name} {me}: tiles {self.room_tiles()}, not {ids}; {self.status_text}") from exc
        return self.room_tiles()

    def wait_room_videos_advance(self, ids: list[str], timeout: float = 20.0) -> None:
        """Every one of ``ids``' tiles shows new frames (its video clock moves on)."""
        first = self.room_tiles()
        # A tile may be gone for a moment (its connection made again): its clock is taken when
        # it shows up, and must move on from there.
        since = {id: first[id]["time"] for id in ids if id in first}
        deadline = time.monotonic() + timeout
        waiting = set(ids)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.room_tiles()
            for id in waiting:
                if id in now and id not in since:
                    since[id] = now[id]["time"]
            waiting = {id for id in waiting if not (id in now and id in since and now[id]["time"] > since[id])}
        assert not waiting, f"videos not advancing: {sorted(waiting)} ({first} then {self.room_tiles()})"

    def send_chat(self, text: str) -> None:
        self.fill("#chat-input", text)
        self.click("#chat-send")

    def chat_texts(self, who: str = "peer") -> list[str]:
        return self.js(f"() => [...document.querySelectorAll('#chat-log .chat-line.{who} .text')].map(e => e.textContent)")

    def wait_chat(self, text: str, who: str = "peer") -> None:
        self.wait_for(
            "([who, text]) => [...document.querySelectorAll(`#chat-log .chat-line.${who} .text`)]"
            ".some(e => e.textContent === text)",
            [who, text],
        )

    def wait_codec(self, mime: str, kind: str = "outbound-rtp") -> None:
        """Wait until this page sends (or, with inbound-rtp, receives) video with codec ``mime``."""
        self.wait_for(
            """async ([kind, mime]) => {
                const stats = await window.webrtcApp.state.call.pc.getStats();
                let found = '';
                stats.forEach(r => {
                    const codec = r.type === kind && r.kind === 'video' && r.codecId && stats.get(r.codecId);
                    if (codec) found = codec.mimeType;
                });
                return found.toLowerCase() === mime.toLowerCase();
            }""",
            [kind, mime],
        )


class PageDriver(CallPage):
    """One page in Chromium (Playwright), in its own browser context."""

    browser_name = "chromium"

    def __init__(
        self,
        browser: Any,
        url: str,
        init_script: str | None = None,
        viewport: tuple[int, int] = (1280, 720),
        permissions: list[str] | None = None,
    ) -> None:
        # permissions: what the page may use without asking (e.g. "camera", "clipboard-read"),
        # for a browser started without --use-fake-ui-for-media-stream.
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, permissions=permissions or [])
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.console: collections.deque[str] = collections.deque(maxlen=20)
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.goto(url)

    def console_tail(self) -> list[str]:
        return list(self.console)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def wait_for(self, expression: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
        return self.page.wait_for_function(expression, arg=arg, timeout=timeout_ms).json_value()

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def fill(self, selector: str, text: str) -> None:
        self.page.fill(selector, text)

    def select(self, selector: str, value: str) -> None:
        self.page.select_option(selector, value)

    def screenshot(self, path: str) -> None:
        self.page.screenshot(path=path)

    def close(self) -> None:
        self.context.close()
