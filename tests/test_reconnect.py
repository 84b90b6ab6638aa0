"""The signaling socket comes back, politely: jittered backoff, longer after "try again later",
and a call in progress survives a server restart (media does not pass through the server).

The pages' policy lives in static/js/backoff.js (tests/js/backoff.test.mjs, run by
tests/test_client_js.py); webrtc_client.py follows the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from datetime import datetime

import pytest
from conftest import refused_with, require, running
from websockets.sync.client import connect as ws_connect

from processes import PROJECT_DIR, RedisServer, ServerProcess, free_port, wait_until

try:
    import webrtc_client
except ImportError:  # aiortc missing: the tests that need it say so
    webrtc_client = None  # type: ignore[assignment]


def node() -> str:
    binary = shutil.which("node")
    require(binary, "Node.js (runs the pages' policy tests)", "apt-get install -y nodejs")
    return binary  # type: ignore[return-value]


def needs_peer() -> None:
    require(webrtc_client, "aiortc (for the Python peer)", "pip install -r peer-requirements.txt")


# --- the policy itself ---------------------------------------------------------------------


def test_the_python_peer_uses_the_same_numbers_as_the_pages():
    needs_peer()
    script = "import('./static/js/backoff.js').then(m => console.log(JSON.stringify({...m.RECONNECT, code: m.TRY_AGAIN_LATER})))"
    pages = json.loads(subprocess.run([node(), "-e", script], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=30).stdout)
    python = {
        "baseMs": webrtc_client.RECONNECT_BASE * 1000,
        "capMs": webrtc_client.RECONNECT_CAP * 1000,
        "floorMs": webrtc_client.RECONNECT_FLOOR * 1000,
        "serverFullMs": webrtc_client.RECONNECT_SERVER_FULL * 1000,
        "stableMs": webrtc_client.RECONNECT_STABLE * 1000,
        "code": webrtc_client.TRY_AGAIN_LATER,
    }
    assert python == pages


def test_the_python_delays_are_jittered_and_bounded():
    needs_peer()
    for attempt in (0, 1, 4, 50):
        delays = [webrtc_client.reconnect_delay(attempt) for _ in range(2000)]
        ceiling = min(webrtc_client.RECONNECT_CAP, 2**attempt * webrtc_client.RECONNECT_BASE)
        assert min(delays) >= webrtc_client.RECONNECT_FLOOR
        assert max(delays) <= webrtc_client.RECONNECT_FLOOR + ceiling
        assert statistics.pstdev(delays) > ceiling / 5  # uniform over the window: about ceiling/3.5
    full = [webrtc_client.reconnect_delay(0, webrtc_client.RECONNECT_SERVER_FULL) for _ in range(200)]
    assert min(full) >= 5.0 and len(set(full)) > 100


# --- the Python peer against real servers --------------------------------------------------


def attempt_times(server: ServerProcess, my_id: str, count: int, timeout: float) -> list[float]:
    """When the server accepted each of the first ``count`` handshakes of ``my_id`` (seconds,
    from the timestamps of its access log)."""
    pattern = re.compile(rf"^(\S+ \S+) .*101 GET /ws\w+\?id={re.escape(my_id)}&", re.M)
    deadline = time.monotonic() + timeout
    while len(found := pattern.findall(server.output())) < count:
        assert time.monotonic() < deadline, f"fewer than {count} handshakes of {my_id} in {timeout} s:\n{server.output()}"
        time.sleep(0.1)
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in found[:count]]


class Runner:
    """A PythonPeer's run() in a thread with its own event loop; the result or error is kept."""

    def __init__(self, peer_factory) -> None:
        self.result: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.peer = None
        self.done = threading.Event()
        threading.Thread(target=self._main, args=(peer_factory,), daemon=True).start()

    def _main(self, peer_factory) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            self.peer = peer_factory()
            await self.peer.run()

        try:
            self.loop.run_until_complete(go())
        except BaseException as error:  # noqa: BLE001 - kept for the test to look at
            self.result = error
        finally:
            self.done.set()

    def stop(self) -> None:
        if not self.done.is_set() and self.peer is not None:
            asyncio.run_coroutine_threadsafe(self.peer.stop(), self.loop).result(10)
        assert self.done.wait(15)


def test_the_python_peer_waits_five_seconds_after_server_full():
    needs_peer()
    with (
        ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_MAX_SOCKETS": "1"}) as server,
        ws_connect(f"{server.ws}/wscall?id=holder&peer_id=nobody"),  # the only place
    ):
        runner = Runner(lambda: webrtc_client.PythonPeer(server.ws, "py-full", "nobody", reply=None))
        try:
            first, second = attempt_times(server, "py-full", 2, timeout=30)
        finally:
            runner.stop()
    assert second - first >= webrtc_client.RECONNECT_SERVER_FULL - 0.2, second - first
    assert runner.result is None


async def serve_503(port: int, retry_after: str, seen: list[float]):
    """A real HTTP server that refuses every websocket handshake with 503 and Retry-After."""
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def refuse(connection, request):
        seen.append(time.monotonic())
        return Response(503, "Service Unavailable", Headers({"Retry-After": retry_after, "Content-Length": "0"}), b"")

    return await serve(lambda ws: ws.close(), "127.0.0.1", port, process_request=refuse)


def test_the_python_peer_honours_retry_after_on_503():
    needs_peer()

    async def scenario() -> list[float]:
        seen: list[float] = []
        port = free_port()
        server = await serve_503(port, "2", seen)
        peer = webrtc_client.PythonPeer(f"ws://127.0.0.1:{port}", "py-503", "nobody", reply=None)
        runner = asyncio.ensure_future(peer.run())
        try:
            deadline = time.monotonic() + 20
            while len(seen) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await peer.stop()
            await asyncio.wait_for(runner, 10)
            server.close()
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) >= 2, seen
    gaps = [later - earlier for earlier, later in zip(seen, seen[1:], strict=False)]
    assert all(gap >= 2.0 - 0.1 for gap in gaps), gaps  # never sooner than the server asked
    assert all(gap <= 2.0 + webrtc_client.RECONNECT_CAP for gap in gaps), gaps
    assert webrtc_client.retry_after.__doc__  # and an HTTP date works as well as seconds:
    from email.utils import formatdate
    from types import SimpleNamespace

    later = SimpleNamespace(response=SimpleNamespace(headers={"Retry-After": formatdate(time.time() + 60, usegmt=True)}))
    assert 55 <= webrtc_client.retry_after(later) <= 61  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "env", "my_id", "peer_id"),
    [
        (4400, {}, "same", "same"),  # id equal to peer_id
        (4403, {"WEBRTC_POLICY": "socket_token"}, "no-token", "x"),  # the policy wants ?token=
        (4429, {"WEBRTC_MAX_SOCKETS_PER_ID": "1"}, "crowded", "x"),  # "crowded" already holds its one socket
    ],
)
def test_the_python_peer_stops_on_refusals_retrying_cannot_fix(code, env, my_id, peer_id):
    needs_peer()
    policies = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "PYTHONPATH": policies, **env}))
        if code == 4429:
            stack.enter_context(ws_connect(f"{server.ws}/wscall?id=crowded&peer_id=x"))
        peer = webrtc_client.PythonPeer(server.ws, my_id, peer_id, reply=None)
        with pytest.raises(webrtc_client.SignalingRefused) as refused:
            asyncio.run(asyncio.wait_for(peer.run(), 20))
    assert (refused.value.code, refused.value.reason) == (code, webrtc_client.FINAL_CLOSE_CODES[code])


# --- the pages -----------------------------------------------------------------------------


def test_a_page_waits_at_least_five_seconds_after_server_full(browser, pages):
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_MAX_SOCKETS": "1"}) as server:
        with ws_connect(f"{server.ws}/wscall?id=holder&peer_id=nobody"):  # the only place
            page = pages(f"{server.http}/call?id=full-page&peer_id=nobody")
            full = "() => /^The server is full: reconnecting in \\d+ s…$/.test(document.getElementById('status').textContent)"
            page.wait_for(full)
            text = page.status_text
        # The place is free at once, yet the page comes back only after its longer wait.
        page.wait_state("not-online")
        first, second = attempt_times(server, "full-page", 2, timeout=5)
    assert int(text.split()[-2]) >= 5, text
    assert second - first >= 5.0 - 0.2, second - first


def test_a_page_says_the_server_is_busy_and_waits_five_seconds_while_the_backplane_is_behind(browser, pages):
    with running(RedisServer()) as redis, ServerProcess("--redis", redis.url, env={"WEBRTC_ICE_SERVERS": "[]"}) as server:
        stop = threading.Event()

        def stalls() -> None:
            # Redis stalls 0.8 s at a time: every beat comes back slow, so the node stays
            # busy (1013 SERVER-BUSY) as long as this goes on.
            while not stop.is_set():
                os.kill(redis.pid, signal.SIGSTOP)
                time.sleep(0.8)
                os.kill(redis.pid, signal.SIGCONT)
                time.sleep(0.1)

        stalling = threading.Thread(target=stalls)
        stalling.start()
        try:
            wait_until(lambda: refused_with(server, 1013, "SERVER-BUSY"), 5, "the node to be busy")
            page = pages(f"{server.http}/call?id=busy-page&peer_id=nobody")
            busy = "() => /^The server is busy: reconnecting in \\d+ s…$/.test(document.getElementById('status').textContent)"
            page.wait_for(busy)
            text = page.status_text
        finally:
            stop.set()
            stalling.join()
            os.kill(redis.pid, signal.SIGCONT)
    assert int(text.split()[-2]) >= 5, text


def test_media_flows_through_a_server_restart_and_the_pages_reattach_to_the_call(browser, pages):
    """The server goes away mid-call: video goes on peer to peer, both pages reconnect their
    socket without ending the call, and the call can still renegotiate and restart ICE."""
    port = free_port()
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_ICE_ACCESS_TOKEN": "restart-token"}
    first = ServerProcess(env=env, port=port).start()
    try:
        caller = pages(f"{first.http}/call?id=carol&peer_id=dave")
        receiver = pages(f"{first.http}/recieve?id=dave&peer_id=carol")
        for page in (caller, receiver):
            page.wait_state("connected")
            page.wait_frames_flowing()
            page.js("() => { window.webrtcApp.state.call.pc.marker = 'the first call'; }")
        assert first.stop() == 0
        for page in (caller, receiver):
            page.wait_for("() => /Signaling lost \\(the call goes on\\)/.test(document.getElementById('status').textContent)")
            page.wait_frames_flowing(more=30)  # a second of video with no server at all
    finally:
        first.kill()
    with ServerProcess(env=env, port=port) as second:
        second.wait_for_line(r"101 GET /wscall\?id=carol", timeout=40)
        second.wait_for_line(r"101 GET /wsrecieve\?id=dave", timeout=40)
        for page in (caller, receiver):
            page.wait_state("connected")
            assert page.js("() => window.webrtcApp.signaling.isOpen")
            assert page.js("() => window.webrtcApp.state.call.pc.marker") == "the first call"
        # Through the new server: a renegotiation (another codec) and an ICE restart.
        caller.select("#codec", "VP9")
        caller.wait_codec("video/VP9")
        receiver.wait_codec("video/VP9", "inbound-rtp")
        ufrag = "() => /a=ice-ufrag:(\\S+)/.exec(window.webrtcApp.state.call.pc.localDescription.sdp)[1]"
        before = {page: page.js(ufrag) for page in (caller, receiver)}
        receiver.js("() => window.webrtcApp.state.call.pc.restartIce()")
        for page in (caller, receiver):
            page.wait_for(f"before => ({ufrag})() !== before", before[page])  # new ICE credentials
            page.wait_frames_flowing()
            assert page.state == "connected"
            assert page.js("() => window.webrtcApp.state.call.pc.marker") == "the first call"
        caller.send_chat("still the same call")
        receiver.wait_chat("still the same call")
