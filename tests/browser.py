"""Drive the pages in Debian's Chromium with Playwright (never a downloaded browser)."""

from __future__ import annotations

import time
from typing import Any

# Chromium flags that make calls work headless on a machine with no camera and, maybe, only
# a loopback interface; and that keep it from reaching out to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
TIMEOUT_MS = 20000


class PageDriver:
    """One caller or receiver page in its own browser context."""

    def __init__(self, browser: Any, url: str, init_script: str | None = None, viewport: tuple[int, int] = (1280, 720)) -> None:
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)

    def js(self, expression: str, arg: Any = None) -> Any:
        """Evaluate a function expression, e.g. ``"() => 1"`` (the CSP forbids plain strings)."""
        return self.page.evaluate(expression, arg)

    @property
    def state(self) -> str:
        return self.page.get_attribute("#status", "data-state") or ""

    @property
    def status_text(self) -> str:
        return self.page.inner_text("#status")

    def wait_state(self, *states: str, timeout_ms: int = TIMEOUT_MS) -> str:
        self.page.wait_for_function(
            "states => states.includes(document.getElementById('status').dataset.state)",
            arg=list(states),
            timeout=timeout_ms,
        )
        return self.state

    def remote_video(self) -> dict[str, float]:
        return self.js(
            "() => { const v = document.getElementById('remote-video');"
            " return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime, live: !!v.srcObject}; }"
        )

    def wait_remote_playing(self, timeout: float = 20.0) -> dict[str, float]:
        """Wait until the remote video has frames and its clock advances."""
        self.page.wait_for_function(
            "() => { const v = document.getElementById('remote-video'); return v.videoWidth > 0 && v.currentTime > 0; }",
            timeout=timeout * 1000,
        )
        first = self.remote_video()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(200)
            now = self.remote_video()
            if now["time"] > first["time"]:
                return now
        raise AssertionError(f"remote video is not advancing: {first}")

    def send_chat(self, text: str) -> None:
        self.page.fill("#chat-input", text)
        self.page.click("#chat-send")

    def chat_texts(self, who: str = "peer") -> list[str]:
        return self.page.eval_on_selector_all(f"#chat-log .chat-line.{who} .text", "els => els.map(e => e.textContent)")

    def wait_chat(self, text: str, who: str = "peer") -> None:
        self.page.wait_for_function(
            "([who, text]) => [...document.querySelectorAll(`#chat-log .chat-line.${who} .text`)]"
            ".some(e => e.textContent === text)",
            arg=[who, text],
        )

    def wait_codec(self, mime: str, kind: str = "outbound-rtp") -> None:
        """Wait until this page sends (or, with inbound-rtp, receives) video with codec ``mime``."""
        self.page.wait_for_function(
            """async ([kind, mime]) => {
                const stats = await window.webrtcApp.state.call.pc.getStats();
                let found = '';
                stats.forEach(r => {
                    const codec = r.type === kind && r.kind === 'video' && r.codecId && stats.get(r.codecId);
                    if (codec) found = codec.mimeType;
                });
                return found === mime;
            }""",
            arg=[kind, mime],
        )

    def close(self) -> None:
        self.context.close()
