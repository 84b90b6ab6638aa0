"""The pages with join tokens on, in Chromium: a good token makes a call and a room, a bad,
missing or expired one is said in words with no reconnection loop, and an expired token is
renewed through the operator's backend (a test backend here, on another port, that mints only
for the session cookie the browser carries)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest

from processes import ServerProcess

SECRET = "page-tests-shared-secret-of-32-bytes-or-more"
SESSION = "session=letmein"
_ids = itertools.count()


def mint(sub: str, ttl: float = 600, **more: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + int(ttl), "iat": now, **more}, SECRET, "HS256", {"kid": "k1"})


class Backend:
    """The operator's backend: POST /token with the session cookie answers a fresh token for the
    form's id (and peer_id or room); without the cookie, 401. Tokens it mints live ``ttl``."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.ttl = 600.0
        self.origin = ""
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                fields = {key: values[-1] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
                cookie = self.headers.get("Cookie") or ""
                backend.asked.append({"fields": fields, "cookie": cookie})
                if SESSION not in cookie:
                    self.answer(401, b'{"error": "no session"}')
                    return
                scope = {"room": fields["room"]} if "room" in fields else {}
                body = json.dumps({"token": mint(fields["id"], backend.ttl, **scope)}).encode()
                self.answer(200, body)

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Access-Control-Allow-Origin", backend.origin)
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backend():
    made = Backend()
    yield made
    made.close()


def token_server(**env: str) -> ServerProcess:
    return ServerProcess(
        env={
            "WEBRTC_ICE_SERVERS": "[]",
            "WEBRTC_JOIN_TOKEN_KEYS": json.dumps({"k1": SECRET}),
            "WEBRTC_JOIN_TOKEN_LEEWAY": "0",
            **env,
        }
    )


@pytest.fixture(scope="module")
def server(backend):
    with token_server(WEBRTC_JOIN_TOKEN_URL=backend.url) as process:
        backend.origin = process.http
        yield process


@pytest.fixture(scope="module")
def no_renewal():
    with token_server() as process:
        yield process


def names() -> tuple[str, str]:
    n = next(_ids)
    return f"tina{n}", f"ugo{n}"


WITH_COOKIE = f"document.cookie = '{SESSION}; path=/'"
SOCKET_STATE_JS = "() => { const s = window.webrtcApp.signaling; return [s.socket && s.socket.readyState, s.retryTimer]; }"


def assert_no_reconnection(page: Any) -> None:
    """The socket is closed and no retry is scheduled, a few seconds on."""
    time.sleep(3)
    ready_state, timer = page.js(SOCKET_STATE_JS)
    assert ready_state == 3 and timer is None


def test_good_tokens_make_a_call_and_the_ice_request_takes_the_join_token(server, pages):
    tina, ugo = names()
    receiver = pages(f"{server.http}/recieve?id={ugo}&peer_id={tina}&token={mint(ugo, peer=tina)}")
    caller = pages(f"{server.http}/call?id={tina}&peer_id={ugo}&token={mint(tina)}")
    for page in (caller, receiver):
        page.wait_state("connected")
        page.wait_remote_playing()
        assert not any("ICE servers refused" in line for line in page.console_tail())
    # The invite does not hand the caller's token on: the receiver needs a token of its own.
    invite = caller.js("() => document.getElementById('invite-link').href")
    assert "token" not in invite


def test_a_room_with_tokens_admits_each_member(server, pages):
    tina, ugo = names()
    one = pages(f"{server.http}/room?id={tina}&room=T{tina}&token={mint(tina, room=f'T{tina}')}")
    two = pages(f"{server.http}/room?id={ugo}&room=T{tina}&token={mint(ugo, room=f'T{tina}')}")
    for page, other in ((one, ugo), (two, tina)):
        page.wait_room_tiles([other])


@pytest.mark.parametrize(
    ("token", "state", "words"),
    [
        (None, "token-required", "carries no join token"),
        ("forged", "token-invalid", "refused this page's join token"),
        ("other-id", "token-invalid", "refused this page's join token"),
        ("expired", "token-expired", "join token expired"),
    ],
)
def test_a_missing_bad_or_expired_token_is_said_in_words_and_not_retried(no_renewal, pages, token, state, words):
    tina, ugo = names()
    value = {
        None: None,
        "forged": jwt.encode({"sub": tina, "exp": int(time.time()) + 600}, "f" * 40, "HS256", {"kid": "k1"}),
        "other-id": mint("somebody-else"),
        "expired": mint(tina, ttl=-60),
    }[token]
    query = f"id={tina}&peer_id={ugo}" + (f"&token={value}" if value else "")
    page = pages(f"{no_renewal.http}/call?{query}")
    page.wait_state(state)
    assert words in page.status_text
    assert_no_reconnection(page)
    assert page.state == state
    if token == "expired":
        assert "Open the link again" in page.status_text


def test_an_expired_token_is_renewed_through_the_backend_with_the_sites_cookies(server, backend, pages):
    tina, ugo = names()
    before = len(backend.asked)
    # A page renews a token that ends within 5 s before it connects: this one lives 8 s.
    expires = time.time() + 8
    receiver = pages(f"{server.http}/recieve?id={ugo}&peer_id={tina}&token={mint(ugo)}", init_script=WITH_COOKIE)
    caller = pages(f"{server.http}/call?id={tina}&peer_id={ugo}&token={mint(tina, ttl=8)}", init_script=WITH_COOKIE)
    caller.wait_state("connected")
    receiver.wait_state("connected")
    assert backend.asked[before:] == []
    time.sleep(max(0.0, expires - time.time()) + 1.5)  # the caller's token has expired; its socket and its call go on
    assert caller.js("() => window.webrtcApp.signaling.isOpen")
    caller.js("() => window.webrtcApp.signaling.reconnect()")  # as after a network change
    caller.wait_for("() => window.webrtcApp.signaling.isOpen && window.webrtcApp.signaling.tokenRenewals === 1")
    asked = backend.asked[before:]
    assert len(asked) == 1 and asked[0]["fields"] == {"id": tina, "peer_id": ugo} and SESSION in asked[0]["cookie"]
    # The new socket works: the call is still up, and chat over the server reaches the peer.
    caller.wait_state("connected")
    message = {"type": "message", "text": "renewed", "name": tina, "target": ugo, "date": 0}
    caller.js("(message) => window.webrtcApp.signaling.send(message)", message)
    receiver.wait_chat("renewed")


def test_a_page_opened_without_a_token_asks_the_backend_and_without_a_session_says_so(server, backend, pages):
    tina, ugo = names()
    room = f"N{tina}"
    before = len(backend.asked)
    page = pages(f"{server.http}/room?id={tina}&room={room}", init_script=WITH_COOKIE)
    page.wait_state("alone")
    assert backend.asked[before]["fields"] == {"id": tina, "room": room}
    stranger = pages(f"{server.http}/room?id={ugo}&room={room}")  # no session cookie: the backend says 401
    stranger.wait_state("token-required")
    assert "carries no join token" in stranger.status_text
    assert_no_reconnection(stranger)
