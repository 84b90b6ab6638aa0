"""Fixtures shared by the pytest-style tests, and the rule for missing components.

A test that needs a real component (Chromium, redis-server, turnserver, aiortc) skips with
the reason on a developer's machine, but fails when CI=true: a green CI must not hide a
missing install step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from browser import CHROMIUM_ARGS, PageDriver
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from processes import HelperProcess, MissingProgram, ServerProcess

Helper = TypeVar("Helper", bound=HelperProcess)


def pytest_report_header() -> str:
    # tests/test_quality.py reads this line to know which Tornado a run really used.
    import tornado

    return f"tornado {tornado.version}"


def require(condition: object, what: str, install: str) -> None:
    """Skip (or fail under CI) unless ``condition`` holds."""
    if condition:
        return
    message = f"{what} is not available: {install}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI=true: a missing component is a failure)")
    pytest.skip(message)


def refused_with(server: ServerProcess, code: int, reason: str) -> bool:
    """Open a /wscall socket; true if the server closes it at once with ``code`` and ``reason``."""
    with connect(f"{server.ws}/wscall?id=probe&peer_id=nobody") as ws:
        try:
            ws.recv(timeout=0.3)
        except TimeoutError:
            return False
        except ConnectionClosed as closed:
            return closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (code, reason)
    return False


@contextmanager
def running(helper: Helper) -> Iterator[Helper]:
    """A helper process (redis-server, turnserver, ...) started for a test and stopped after;
    if its program is not installed, the test skips (fails under CI) as require() says."""
    try:
        helper.start()
    except MissingProgram as missing:
        require(None, missing.what, missing.install)
    try:
        yield helper
    finally:
        helper.stop()


def find_chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server():
    """The real server process, shared by a module's tests (which use ids of their own)."""
    # No STUN: every call stays on this machine.
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]"}) as process:
        yield process


@contextmanager
def chromium(args: list[str] = CHROMIUM_ARGS) -> Iterator[Any]:
    """Debian's Chromium launched by Playwright with ``args``, closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright, "Playwright for Python", "pip install -r tests/requirements.txt")
    executable = find_chromium()
    require(executable, "Chromium", "apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser():
    # Per module, not per session: Playwright's sync API keeps an event loop running while
    # it is open, and the Tornado tests in other modules need to run their own.
    with chromium() as launched:
        yield launched


@pytest.fixture
def pages(browser):
    opened: list[PageDriver] = []

    def open_page(
        url: str, init_script: str | None = None, viewport: tuple[int, int] = (1280, 720), permissions: list[str] | None = None
    ) -> PageDriver:
        driver = PageDriver(browser, url, init_script, viewport, permissions)
        opened.append(driver)
        return driver

    yield open_page
    for driver in opened:
        assert driver.errors == [], driver.errors
        driver.close()
