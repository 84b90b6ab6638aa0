"""Calls across networks where no direct path exists, and networks that change mid-call.

Built as /work/shared/NETWORK-TESTS.md says (tests/netns.py): the server and a real coturn in
namespace ``srv`` (203.0.113.1), one browser in ``a`` (198.51.100.0/24) and one in ``b``
(192.0.2.0/24); ``srv`` does not forward, so only a TURN relay can carry a call between ``a``
and ``b``. Every namespace counts the packets it tries to send anywhere else: zero, checked
after each test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sys
import time

import pytest
from browser import CHROMIUM_ARGS, SELECTED_PAIR_JS, PageDriver
from conftest import find_chromium, require
from firefox import Firefox, missing_firefox_parts
from netns import SERVICE_ADDRESS, TurnLab, missing_tools, turn_entries, wrapper_script

from processes import PROJECT_DIR, HelperProcess

PORTS = {"turn": 8080, "no-turn": 8081, "wrong-secret": 8082}
TOKEN = "lab-token"
_ids = itertools.count()


@pytest.fixture(scope="module")
def lab():
    missing = missing_tools()
    require(not missing, "network namespaces", missing or "")
    require(shutil.which("turnserver"), "coturn's turnserver", "apt-get install -y coturn")
    with TurnLab() as lab:
        lab.server("turn", turn_entries(), PORTS["turn"], TOKEN)
        lab.server("no-turn", [], PORTS["no-turn"], TOKEN)
        lab.server("wrong-secret", turn_entries(secret="not-the-secret"), PORTS["wrong-secret"], TOKEN)
        yield lab


@pytest.fixture(autouse=True)
def nothing_leaves_the_lab(lab):
    yield
    assert lab.leaks() == {ns.name: 0 for ns in lab.namespaces}


@pytest.fixture(scope="module")
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright, "Playwright for Python", "pip install -r tests/requirements.txt")
    require(find_chromium(), "Chromium", "apt-get install -y chromium")
    with sync_playwright() as playwright:
        yield playwright


def chromium_in(playwright, lab, host):
    origins = ",".join(f"http://{SERVICE_ADDRESS}:{port}" for port in PORTS.values())
    args = [*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origins}"]
    return playwright.chromium.launch(executable_path=wrapper_script(lab.folder, host.ns, find_chromium()), args=args)


@pytest.fixture(scope="module")
def browsers(playwright, lab):
    """Chromium in a and in b, and Firefox in b (started when a test first asks for it)."""
    opened: dict[str, object] = {"chromium-a": chromium_in(playwright, lab, lab.a)}
    opened["chromium-b"] = chromium_in(playwright, lab, lab.b)

    def get(name: str):
        if name not in opened:
            assert name == "firefox-b"
            missing = missing_firefox_parts()
            require(not missing, "Firefox driven by puppeteer-core", missing or "")
            opened[name] = Firefox(prefix=lab.b.ns.prefix(), secure_hosts=SERVICE_ADDRESS)
        return opened[name]

    yield get
    for name, browser in opened.items():
        browser.quit() if name.startswith("firefox") else browser.close()  # type: ignore[attr-defined]


@pytest.fixture
def open_page(lab, browsers):
    opened = []

    def open_page(browser: str, server: str, role: str, my_id: str, peer_id: str):
        url = f"{lab.servers[server].http}/{role}?id={my_id}&peer_id={peer_id}"
        driver = browsers(browser)
        page = driver.open(url) if browser.startswith("firefox") else PageDriver(driver, url)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        assert page.errors == [], page.errors
        page.close()


def pair_ids() -> tuple[str, str]:
    n = next(_ids)
    return f"alice{n}", f"bob{n}"


def start_call(open_page, server: str, b_browser: str = "chromium-b"):
    """alice (Chromium in a) calls bob (in b); both wait until connected and video flows."""
    alice, bob = pair_ids()
    receiver = open_page(b_browser, server, "recieve", bob, alice)
    caller = open_page("chromium-a", server, "call", alice, bob)
    for page in (caller, receiver):
        page.record_states()
    with explained("the call did not start", caller, receiver):
        for page in (caller, receiver):
            page.wait_state("connected", timeout_ms=30000)
            page.wait_frames_flowing()
    return caller, receiver


@contextlib.contextmanager
def explained(what: str, *pages):
    """On a failure, say where each page stood (status, call states, counters)."""
    try:
        yield
    except Exception as error:
        raise AssertionError(f"{what}: " + "; ".join(str(page.describe()) for page in pages)) from error


def five_second_cut(host, *pages) -> None:
    """Unplug ``host``'s cable for five seconds; within them, each of ``pages`` says "reconnecting"."""
    host.unplug()
    cut = time.monotonic()
    try:
        for page in pages:
            page.wait_state("reconnecting", timeout_ms=5000)  # within the cut: the pages noticed
        time.sleep(max(0.0, 5.0 - (time.monotonic() - cut)))
    finally:
        host.plug()


# --- TURN ----------------------------------------------------------------------------------


@pytest.mark.parametrize("b_browser", ["chromium-b", "firefox-b"])
def test_only_turn_can_carry_the_call_and_it_does(lab, open_page, b_browser):
    assert lab.a.can_ping(SERVICE_ADDRESS) and lab.b.can_ping(SERVICE_ADDRESS)
    assert not lab.a.can_ping(lab.b.address) and not lab.b.can_ping(lab.a.address)  # no route between them
    caller, receiver = start_call(open_page, "turn", b_browser)
    # TURN REST credentials from the ICE endpoint, the secret never sent.
    (entry,) = caller.js("() => window.webrtcApp.state.iceServers")
    assert entry["username"].endswith(":" + caller.js("() => window.webrtcApp.config.myId")) and "secret" not in entry
    # Just connected, a side may still report its selected pair "in-progress" for a moment.
    pairs = [
        page.wait_for(f"async () => {{ const p = await ({SELECTED_PAIR_JS})(); return p && p.state === 'succeeded' && p; }}")
        for page in (caller, receiver)
    ]
    assert any("relay" in (pair["local"]["candidateType"], pair["remote"]["candidateType"]) for pair in pairs), pairs  # type: ignore[index]
    for page in (caller, receiver):
        page.wait_remote_playing()
    # The quality panel says so too (a side may know the relay's address only as a peer-reflexive one).
    paths = [page.wait_for("() => document.getElementById('q-path').dataset.value") for page in (caller, receiver)]
    assert "relay" in paths, paths
    relayed = (caller, receiver)[paths.index("relay")]
    assert relayed.js("() => document.getElementById('q-path').textContent").startswith("Through a TURN relay (")


def test_turn_over_tcp_when_udp_to_the_server_is_blocked(lab, open_page):
    # A corporate network: a may only speak TCP to the outside.
    lab.a.ns.block(f"ip daddr {SERVICE_ADDRESS} meta l4proto udp")
    try:
        caller, receiver = start_call(open_page, "turn")
        pair = caller.selected_pair()
        assert pair and pair["local"]["candidateType"] == "relay" and pair["local"]["relayProtocol"] == "tcp", pair
        caller.wait_for("() => document.getElementById('q-path').textContent === 'Through a TURN relay (TCP)'")
        assert lab.a.ns.counter("blocked") > 0  # a did try UDP first
        receiver.wait_remote_playing()
        caller.wait_remote_playing()
    finally:
        lab.a.ns.unblock()


def test_a_lossy_network_is_shown_as_a_poor_connection(lab, open_page):
    caller, receiver = start_call(open_page, "turn")
    for page in (caller, receiver):
        page.wait_for("() => document.getElementById('q-bitrate').dataset.value !== ''")
        assert page.js("() => document.getElementById('q-warning').hidden") is True
    # A quarter of what bob sends to the relay is lost on the way.
    lab.b.ns.block(f"ip daddr {SERVICE_ADDRESS} meta l4proto udp numgen random mod 100 < 25")
    try:
        warning = "() => { const w = document.getElementById('q-warning'); return !w.hidden && w.textContent; }"
        # alice counts the missing packets herself; bob hears of his from alice's reports (RTCP).
        for page in (caller, receiver):
            text = page.wait_for(warning, timeout_ms=15000)
            assert re.fullmatch(r"Poor connection: \d+% of packets lost(, \d+ ms round trip)?", text), text
        assert lab.b.ns.counter("blocked") > 0
        assert caller.state == "connected"
    finally:
        lab.b.ns.unblock()
    for page in (caller, receiver):
        page.wait_for("() => document.getElementById('q-warning').hidden", timeout_ms=15000)


def test_calls_that_cannot_connect_say_why(lab, open_page):
    """Without a TURN entry, and with TURN credentials the relay refuses, the call fails (no
    spinner) and each page says why; the refused credentials are reported at once."""
    pages = {}
    for server in ("no-turn", "wrong-secret"):
        alice, bob = pair_ids()
        receiver = open_page("chromium-b", server, "recieve", bob, alice)
        caller = open_page("chromium-a", server, "call", alice, bob)
        for page in (caller, receiver):
            page.record_states()
        pages[server] = (caller, receiver)
    for page in pages["wrong-secret"]:
        page.wait_for("() => /refused this page's credentials \\(error 401\\)/.test(document.body.textContent)", timeout_ms=15000)
    reasons = {"no-turn": "this server offers no relay \\(TURN\\) server", "wrong-secret": "refused this page's credentials"}
    for server, reason in reasons.items():
        # A page that has failed still answers its peer's new connection (the peer may renew
        # its own, e.g. when Chromium gathered nothing after offers crossed): the pair has
        # settled once both pages are failed at the same time.
        deadline = time.monotonic() + 120
        while not all(page.state == "failed" for page in pages[server]):
            assert time.monotonic() < deadline, [page.describe() for page in pages[server]]
            time.sleep(0.25)
        for page in pages[server]:
            assert re.search(reason, page.status_text), page.status_text
            assert "connected" not in page.seen_states()


# --- network changes -----------------------------------------------------------------------


@pytest.mark.parametrize("b_browser", ["chromium-b", "firefox-b"])
def test_a_five_second_cut_is_survived_without_pressing_anything(lab, open_page, b_browser):
    caller, receiver = start_call(open_page, "turn", b_browser)
    for page in (caller, receiver):
        page.record_states()
    five_second_cut(lab.b, caller, receiver)  # bob's cable
    with explained("the call did not come back", caller, receiver):
        for page in (caller, receiver):
            page.wait_frames_flowing(more=30, timeout=45)
            page.wait_state("connected", timeout_ms=10000)
    for page in (caller, receiver):
        assert any(re.search(r"reconnecting", text) for text in page.seen_texts()), page.seen_texts()


@pytest.mark.parametrize("mover", ["chromium-a", "firefox-b"])
def test_a_new_address_mid_call_restarts_ice_and_reopens_the_signaling_socket(lab, open_page, mover):
    caller, receiver = start_call(open_page, "turn", "firefox-b" if mover == "firefox-b" else "chromium-b")
    moving, host = (caller, lab.a) if mover == "chromium-a" else (receiver, lab.b)
    for page in (caller, receiver):
        page.record_states()
        page.js("() => { window.webrtcApp.state.call.pc.marker = 'before the move'; }")
    my_id = moving.js("() => window.webrtcApp.config.myId")
    new_address = host.move(host.address_number + 10)
    server = lab.servers["turn"]
    # Its old TCP connection is dead without knowing it: the page opens a new one by itself.
    server.wait_for_line(rf"101 GET /ws\w+\?id={my_id}&\S* \({re.escape(new_address)}\)", timeout=30)
    with explained("the call did not come back", caller, receiver):
        for page in (caller, receiver):
            page.wait_frames_flowing(more=30, timeout=45)
            page.wait_state("connected", timeout_ms=10000)
    assert "reconnecting" in moving.seen_states()  # (its peer may not even notice)
    # The same connection with new ICE candidates: not a new call.
    restarts = 0
    for page in (caller, receiver):
        assert page.js("() => window.webrtcApp.state.call.pc.marker") == "before the move"
        restarts += page.js("() => window.webrtcApp.state.call.iceRestarts")
    assert restarts >= 1
    pair = moving.selected_pair()
    assert pair and (pair["local"]["address"] in (new_address, SERVICE_ADDRESS)), pair


@contextlib.contextmanager
def lab_room(lab, browsers, name: str):
    """A room of three on the "turn" server: ann and cat in a, ben in b, connected; yields
    {id: page} in that order (closed afterwards, with no page error)."""
    n = next(_ids)
    ids = {"chromium-a": [f"ann{n}", f"cat{n}"], "chromium-b": [f"ben{n}"]}
    url = f"{lab.servers['turn'].http}/room?room={name}{n}&id="
    pages = {member: PageDriver(browsers(browser), url + member) for browser, members in ids.items() for member in members}
    try:
        with explained("the room did not connect", *pages.values()):
            for me, page in pages.items():
                page.wait_room_tiles([other for other in pages if other != me], timeout_ms=40000)
                page.wait_state("connected", timeout_ms=30000)
        yield pages
        for page in pages.values():
            assert page.errors == [], page.errors
    finally:
        for page in pages.values():
            page.close()


def room_comes_back(pages) -> None:
    """Every page of the room shows the others' videos playing again, and says connected."""
    with explained("the room did not come back", *pages.values()):
        for me, page in pages.items():
            others = [other for other in pages if other != me]
            page.wait_room_tiles(others, timeout_ms=60000)
            page.wait_room_videos_advance(others, timeout=45)
            page.wait_state("connected", timeout_ms=30000)


def test_a_five_second_cut_in_a_room_restarts_ice_on_each_connection_and_nobody_leaves(lab, browsers):
    with lab_room(lab, browsers, "lab-cut") as pages:
        ann, cat, ben = pages.values()  # in a, in a, in b
        for page in pages.values():
            page.record_states()
            # Marks this page's connections, and counts the tiles it ever removed.
            page.js("""() => { for (const m of window.webrtcApp.state.members.values()) m.call.pc.marker = 'before the cut';
                window.tilesRemoved = 0;
                new MutationObserver(records => { for (const r of records) window.tilesRemoved += r.removedNodes.length; })
                    .observe(document.getElementById('tiles'), {childList: true}); }""")
        five_second_cut(lab.b, ben)  # ben's cable
        room_comes_back(pages)
        # The same connections, with new ICE candidates; no one left the room on anyone's page.
        same = "() => [...window.webrtcApp.state.members.values()].every(m => m.call.pc.marker === 'before the cut')"
        restarts = "() => [...window.webrtcApp.state.members.values()].reduce((n, m) => n + m.call.iceRestarts, 0)"
        for page in pages.values():
            assert page.js(same)
            assert page.js("() => window.tilesRemoved") == 0
        assert ben.js(restarts) + ann.js(restarts) + cat.js(restarts) >= 2
        assert "reconnecting" in ben.seen_states()


def test_a_new_address_in_a_room_brings_every_connection_back(lab, browsers):
    with lab_room(lab, browsers, "lab-move") as pages:
        ben_id, ben = list(pages.items())[2]  # the one in b
        ben.record_states()
        new_address = lab.b.move(lab.b.address_number + 10)
        # Its socket died with the old address: the page opens a new one by itself.
        lab.servers["turn"].wait_for_line(rf"101 GET /wsroom\?\S*id={ben_id}\S* \({re.escape(new_address)}\)", timeout=60)
        room_comes_back(pages)
        assert "reconnecting" in ben.seen_states()


# --- the Python peer -----------------------------------------------------------------------


class PeerProcess(HelperProcess):
    """``python webrtc_client.py`` inside a namespace, reporting its status twice a second;
    ready once it reports."""

    STATUS = re.compile(r"connected=(\w+) frames received=(\d+) chat lines=\d+ recoveries=(\d+)")

    def __init__(self, lab: TurnLab, host, my_id: str, peer_id: str) -> None:
        super().__init__()
        self.ns, self.server = host.ns, lab.servers["turn"]
        self.my_id, self.peer_id = my_id, peer_id

    def prepare(self) -> None:
        pass  # it listens on no port

    def command(self) -> list[str]:
        return [*self.ns.prefix(), sys.executable, "webrtc_client.py", self.server.ws, "--id", self.my_id,
                "--peer", self.peer_id, "--ice-token", TOKEN, "--report-every", "0.5"]  # fmt: skip

    def popen_options(self) -> dict[str, object]:
        return {"cwd": PROJECT_DIR}

    def ready(self) -> bool:
        return self.STATUS.search(self.output()) is not None

    def status(self) -> tuple[bool, int, int]:
        """(connected, frames received, recoveries) from its last status line."""
        for line in reversed(self.lines):
            if match := self.STATUS.search(line):
                return match.group(1) == "True", int(match.group(2)), int(match.group(3))
        return False, 0, 0

    def wait(self, condition, what: str, timeout: float = 30.0) -> tuple[bool, int, int]:
        deadline = time.monotonic() + timeout
        while not condition(*self.status()):
            assert self.running, "the peer exited:\n" + self.log_tail()
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + self.log_tail()
            time.sleep(0.2)
        return self.status()


def test_the_python_peer_recovers_after_its_link_is_cut(lab, open_page):
    require(os.path.exists(os.path.join(PROJECT_DIR, "webrtc_client.py")), "webrtc_client.py", "")
    try:
        import aiortc  # noqa: F401
    except ImportError:
        require(None, "aiortc (for the Python peer)", "pip install -r peer-requirements.txt")
    human, bot_id = pair_ids()
    page = open_page("chromium-b", "turn", "recieve", human, bot_id)
    bot = PeerProcess(lab, lab.a, bot_id, human).start()
    try:
        page.wait_state("connected", timeout_ms=30000)
        page.wait_frames_flowing()
        _, frames, _ = bot.wait(lambda connected, frames, _: connected and frames > 10, "the page's video at the bot")
        page.record_states()
        five_second_cut(lab.a, page)  # the bot's cable
        page.wait_frames_flowing(more=30, timeout=45)
        page.wait_state("connected", timeout_ms=10000)
        now = bot.status()[1]
        bot.wait(lambda connected, frames, _: connected and frames > now + 30, "video at the bot again")
        # aiortc cannot restart ICE: the bot answered the page's restart with a new connection.
        assert bot.status()[2] >= 1, bot.log_tail()
    finally:
        bot.stop()
