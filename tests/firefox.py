"""Drive Debian's firefox-esr from the Python tests.

Playwright cannot drive Debian's Firefox (it needs its own patched build) and Debian has no
geckodriver, so a small Node program (tests/js/firefox_server.mjs) launches Firefox with npm
``puppeteer-core`` over WebDriver BiDi and takes commands as JSON lines on stdin. The program
may run inside a network namespace (``prefix=["ip", "netns", "exec", NS]``): it talks to
Firefox over that namespace's loopback and to us over pipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

from browser import TIMEOUT_MS, CallPage

from processes import popen

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_SCRIPT = os.path.join(PROJECT_DIR, "tests", "js", "firefox_server.mjs")
PUPPETEER = os.path.join(PROJECT_DIR, "node_modules", "puppeteer-core", "package.json")
INSTALL = "PUPPETEER_SKIP_DOWNLOAD=1 npm ci (in the project folder, with Node 18 or newer)"
WEBSOCKET_REFUSED = re.compile(r"Firefox can.t establish a connection to the server at wss?://")


def find_firefox() -> str | None:
    return os.environ.get("FIREFOX") or shutil.which("firefox-esr") or shutil.which("firefox")


def missing_firefox_parts() -> str | None:
    """What is missing to drive Firefox here, or None."""
    if not find_firefox():
        return "firefox-esr (apt-get install -y firefox-esr)"
    if not shutil.which("node"):
        return "Node.js (apt-get install -y nodejs npm)"
    if not os.path.exists(PUPPETEER):
        return f"npm puppeteer-core: {INSTALL}"
    return None


class FirefoxError(AssertionError):
    """A command failed in Firefox (a timeout, a selector that matched nothing, a page error)."""


class Firefox:
    """One headless Firefox, driven through the Node program."""

    def __init__(self, prefix: Sequence[str] = (), secure_hosts: str = "", timeout: float = 60.0) -> None:
        env = {**os.environ, "FIREFOX": find_firefox() or "firefox-esr"}
        if secure_hosts:
            env["FIREFOX_SECURE_HOSTS"] = secure_hosts
        # popen(): the driver gets SIGTERM if this test run dies, and puppeteer then closes Firefox.
        self.proc = popen(
            [*prefix, "node", SERVER_SCRIPT],
            cwd=PROJECT_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: Firefox goes with it if we must kill it
        )
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.page_errors: dict[int, list[str]] = {}
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._next_id = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        ready = self._next_answer(timeout)
        if ready.get("event") != "ready":
            self.quit()
            raise FirefoxError(f"Firefox did not start: {ready}")
        self.version: str = ready["version"]

    def _read_stdout(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("event") == "pageerror":
                self.page_errors.setdefault(message["page"], []).append(message["message"])
            else:
                self._answers.put(message)
        self._answers.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def _next_answer(self, timeout: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise FirefoxError(f"no answer from Firefox in {timeout} s") from None
        if answer is None:
            raise FirefoxError("the Firefox driver exited:\n" + "\n".join(self.stderr[-30:]))
        return answer

    def command(self, op: str, timeout: float = 60.0, **fields: Any) -> Any:
        """Run one command and answer its result (one at a time: the program runs them in order)."""
        with self._lock:
            self._next_id += 1
            assert self.proc.stdin
            self.proc.stdin.write(json.dumps({"id": self._next_id, "op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            answer = self._next_answer(timeout)
        if answer.get("id") != self._next_id:
            raise FirefoxError(f"answer out of order: {answer}")
        if "error" in answer:
            raise FirefoxError(f"{op} failed in Firefox: {answer['error']}")
        return answer.get("result")

    def open(self, url: str, viewport: tuple[int, int] = (1280, 720), init_script: str | None = None) -> FirefoxPage:
        return FirefoxPage(self, url, viewport, init_script)

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                # The driver and the Firefox it started, by the group this object made.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class FirefoxPage(CallPage):
    """One page in Firefox, in its own browser context (its own user)."""

    browser_name = "firefox"

    def __init__(
        self, firefox: Firefox, url: str, viewport: tuple[int, int] = (1280, 720), init_script: str | None = None
    ) -> None:
        self.firefox = firefox
        self.number: int = firefox.command("open", url=url, width=viewport[0], height=viewport[1], initScript=init_script)

    @property
    def errors(self) -> list[str]:
        # Firefox also reports a websocket that cannot connect (a cut network, a server
        # restart) as a page error; the page handles those, so they are not script errors.
        return [error for error in self.firefox.page_errors.get(self.number, []) if not WEBSOCKET_REFUSED.match(error)]

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.firefox.command("evaluate", page=self.number, fn=expression, arg=arg)

    def wait_for(self, expression: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
        return self.firefox.command(
            "waitFor", timeout=timeout_ms / 1000 + 30, page=self.number, fn=expression, arg=arg, timeoutMs=timeout_ms
        )

    def click(self, selector: str) -> None:
        self.firefox.command("click", page=self.number, selector=selector)

    def fill(self, selector: str, text: str) -> None:
        self.firefox.command("fill", page=self.number, selector=selector, value=text)

    def select(self, selector: str, value: str) -> None:
        self.firefox.command("select", page=self.number, selector=selector, value=value)

    def screenshot(self, path: str) -> None:
        self.firefox.command("screenshot", page=self.number, path=path)

    def close(self) -> None:
        self.firefox.command("close", page=self.number)
