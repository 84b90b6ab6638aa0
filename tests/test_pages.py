"""The caller/receiver pages: content, escaping, GET == POST, errors, assets."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from urllib.parse import urlencode

from tornado import httpclient

from test_common import BasicTestCase, testing, webrtc_server

HOSTILE_IDS = ["</script><script>alert(1)</script>", "'\";", "<!--<script>", '"><img src=x onerror=alert(1)>']


class PageParser(HTMLParser):
    """Collects what matters for safety: elements with their attributes, and script bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(body: bytes) -> PageParser:
    parser = PageParser()
    parser.feed(body.decode("utf-8"))
    return parser


class PageCase(BasicTestCase):
    """Fetch a page by its route's name, GET or POST, and read its JSON config."""

    async def page(self, route: str, method: str = "GET", raise_error: bool = True, **query: str) -> httpclient.HTTPResponse:
        path = self.app.reverse_url(route)
        if method == "POST":
            return await self.http_client.fetch(
                self.make_url(path, protocol="http"), method="POST", body=urlencode(query), raise_error=raise_error
            )
        return await self.http_client.fetch(self.make_url(path, protocol="http", **query), raise_error=raise_error)

    @staticmethod
    def config_of(body: bytes) -> dict:
        page = parse(body)
        configs = [
            text
            for (_, attrs), text in zip([e for e in page.elements if e[0] == "script"], page.scripts, strict=True)
            if attrs.get("type") == "application/json"
        ]
        assert len(configs) == 1
        return json.loads(configs[0])


class TestPages(PageCase):
    @testing.gen_test
    async def test_page_carries_ids_socket_url_title_and_ice_details(self):
        response = await self.page("caller_page", id="ME", peer_id="PEER1")
        self.assertEqual(response.headers["Content-Type"], "text/html; charset=UTF-8")
        self.assertEqual(
            self.config_of(response.body),
            {
                "wsUri": "/wscall?id=ME&peer_id=PEER1",
                "myId": "ME",
                "peerId": "PEER1",
                "role": "Caller",
                "iceUrl": "/ice_servers",
                "icePass": self.app.config.get_ice_pass(),
                "inviteUrl": "/recieve?id=PEER1&peer_id=ME",
            },
        )
        self.assertIn(b"<title>Caller", response.body)
        receiver = await self.page("reciever_page", id="PEER1", peer_id="ME")
        self.assertEqual(self.config_of(receiver.body)["wsUri"], "/wsrecieve?id=PEER1&peer_id=ME")
        # Only the caller invites; a caller without a peer has no one to invite.
        self.assertEqual(self.config_of(receiver.body)["inviteUrl"], "")
        alone = await self.page("caller_page", id="ME")
        self.assertEqual(self.config_of(alone.body)["inviteUrl"], "")
        self.assertIn(b"<title>Receiver", receiver.body)

    @testing.gen_test
    async def test_ice_pass_is_read_at_render_time(self):
        tokens = iter(["first", "second"])
        self.app.config.get_ice_pass = lambda: next(tokens)
        first = await self.page("caller_page", id="ME", peer_id="PEER1")
        second = await self.page("caller_page", id="ME", peer_id="PEER1")
        self.assertEqual([self.config_of(r.body)["icePass"] for r in (first, second)], ["first", "second"])

    @testing.gen_test
    async def test_get_and_post_give_identical_pages_on_every_page_route(self):
        for route in ("caller_page", "reciever_page", "receiver_page"):
            for query in ({"id": "ME", "peer_id": "PEER1"}, {"id": "ME"}, {"id": HOSTILE_IDS[0], "peer_id": HOSTILE_IDS[1]}):
                got = await self.page(route, **query)
                posted = await self.page(route, method="POST", **query)
                self.assertEqual(got.code, 200)
                self.assertEqual(got.body, posted.body, (route, query))

    @testing.gen_test
    async def test_receive_alias_renders_the_receiver_page(self):
        alias = await self.page("receiver_page", id="PEER1", peer_id="ME")
        original = await self.page("reciever_page", id="PEER1", peer_id="ME")
        self.assertEqual(alias.body, original.body)

    @testing.gen_test
    async def test_page_without_peer_id_leaves_it_out_of_the_socket_url(self):
        response = await self.page("reciever_page", id="PEER1")
        self.assertEqual(self.config_of(response.body)["wsUri"], "/wsrecieve?id=PEER1")

    @testing.gen_test
    async def test_hostile_ids_cannot_break_or_inject_into_the_page(self):
        for my_id in HOSTILE_IDS:
            for peer_id in HOSTILE_IDS:
                if my_id == peer_id:
                    continue
                response = await self.page("caller_page", id=my_id, peer_id=peer_id)
                page = parse(response.body)
                scripts = [attrs for tag, attrs in page.elements if tag == "script"]
                # Exactly our two scripts: the JSON config and the module; no injected element.
                self.assertEqual(
                    scripts, [{"type": "application/json", "id": "page-config"}, {"type": "module", "src": "/static/js/main.js"}]
                )
                self.assertFalse([attrs for tag, attrs in page.elements if tag == "img"])
                self.assertFalse(any(name.startswith("on") for _, attrs in page.elements for name in attrs))
                config = self.config_of(response.body)
                # The config round-trips the ids exactly.
                self.assertEqual((config["myId"], config["peerId"]), (my_id, peer_id))
                self.assertEqual(config["wsUri"], "/wscall?" + urlencode({"id": my_id, "peer_id": peer_id}))

    @testing.gen_test
    async def test_missing_or_bad_ids_get_400_with_a_form(self):
        for query in ({}, {"peer_id": "PEER1"}, {"id": "ME", "peer_id": "ME"}, {"id": "x" * 300}):
            response = await self.page("caller_page", raise_error=False, **query)
            self.assertEqual(response.code, 400, query)
            self.assertIn(b"Cannot open this page", response.body)
            self.assertIn(b'<form id="start-form" method="get"', response.body)

    @testing.gen_test
    async def test_home_page_offers_the_form(self):
        response = await self.http_client.fetch(self.get_url("/"))
        self.assertIn(b'formaction="/call"', response.body)
        self.assertIn(b'formaction="/recieve"', response.body)

    @testing.gen_test
    async def test_pages_send_security_headers(self):
        response = await self.page("caller_page", id="ME", peer_id="PEER1")
        csp = response.headers["Content-Security-Policy"]
        self.assertIn("script-src 'self'", csp)
        self.assertIn("connect-src 'self'", csp)
        self.assertEqual(response.headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response.headers["Referrer-Policy"], "no-referrer")

    @testing.gen_test
    async def test_page_assets_are_served_and_nothing_comes_from_the_internet(self):
        response = await self.page("caller_page", id="ME", peer_id="PEER1")
        page = parse(response.body)
        urls = [attrs.get("src") or attrs.get("href") for _, attrs in page.elements if attrs.get("src") or attrs.get("href")]
        self.assertTrue(urls)
        modules = []
        for url in urls:
            if url.startswith("data:"):
                continue
            self.assertTrue(url.startswith("/static/"), url)
            asset = await self.http_client.fetch(self.get_url(url))
            self.assertEqual(asset.code, 200)
            if url.endswith(".js"):
                modules.append(url)
        # Follow the module graph: every import is local, and no file names a remote URL.
        seen: set[str] = set()
        while modules:
            url = modules.pop()
            if url in seen:
                continue
            seen.add(url)
            asset = await self.http_client.fetch(self.get_url(url))
            self.assertIn("javascript", asset.headers["Content-Type"])
            text = asset.body.decode()
            for target in re.findall(r"""from\s+["']([^"']+)["']""", text):
                self.assertTrue(target.startswith("./"), target)
                modules.append(os.path.normpath(os.path.join(os.path.dirname(url), target)))
        self.assertGreaterEqual(len(seen), 4)
        vendor = os.path.join(webrtc_server.PROJECT_DIR, "static", "js", "vendor")
        for folder, _, files in os.walk(os.path.join(webrtc_server.PROJECT_DIR, "static")):
            for name in files:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    text = handle.read()
                if folder == vendor and name.endswith(".js"):
                    # A vendored module keeps its notice, which names its home page; its code may not.
                    text = re.sub(r"\A/\*.*?\*/", "", text, flags=re.S)
                self.assertNotRegex(text, r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", name)
        for name in os.listdir(webrtc_server.TEMPLATE_DIR):
            with open(os.path.join(webrtc_server.TEMPLATE_DIR, name), encoding="utf-8") as handle:
                self.assertNotRegex(handle.read(), r"https?://", name)


class TestRoomPage(PageCase):
    """``/room?id=&room=``: the room page, rendered as the call pages are (the same checks)."""

    @testing.gen_test
    async def test_room_page_carries_the_id_room_socket_url_limit_and_invite(self):
        response = await self.page("room_page", id="ME", room="standup")
        self.assertEqual(
            self.config_of(response.body),
            {
                "wsUri": "/wsroom?id=ME&room=standup",
                "myId": "ME",
                "room": "standup",
                "maxMembers": self.app.config.MAX_ROOM_MEMBERS,
                "iceUrl": "/ice_servers",
                "icePass": self.app.config.get_ice_pass(),
                "inviteUrl": "/?room=standup",
            },
        )
        self.assertIn(b"<title>Room standup \xc2\xb7 ME</title>", response.body)
        posted = await self.page("room_page", method="POST", id="ME", room="standup")
        self.assertEqual(posted.body, response.body)
        scripts = [attrs for tag, attrs in parse(response.body).elements if tag == "script"]
        module = {"type": "module", "src": "/static/js/room.js"}
        self.assertEqual(scripts, [{"type": "application/json", "id": "page-config"}, module])
        self.assertIn("script-src 'self'", response.headers["Content-Security-Policy"])

    @testing.gen_test
    async def test_hostile_names_cannot_break_or_inject_into_the_room_page(self):
        for my_id in HOSTILE_IDS:
            for room in HOSTILE_IDS:
                page = parse((await self.page("room_page", id=my_id, room=room)).body)
                self.assertEqual(len([attrs for tag, attrs in page.elements if tag == "script"]), 2)
                self.assertFalse([attrs for tag, attrs in page.elements if tag == "img"])
                self.assertFalse(any(name.startswith("on") for _, attrs in page.elements for name in attrs))
                config = self.config_of((await self.page("room_page", id=my_id, room=room)).body)
                self.assertEqual((config["myId"], config["room"]), (my_id, room))
                self.assertEqual(config["wsUri"], "/wsroom?" + urlencode({"id": my_id, "room": room}))

    @testing.gen_test
    async def test_missing_or_bad_names_get_400_with_the_form_filled_in(self):
        cases = [
            ({"room": "standup"}, b"missing id"),
            ({"id": "ME"}, b"missing room"),
            ({"id": "ME", "room": "x" * 300}, b"room longer than"),
            ({"id": "x" * 300, "room": "standup"}, b"id longer than"),
        ]
        for query, why in cases:
            response = await self.page("room_page", raise_error=False, **query)
            self.assertEqual(response.code, 400, query)
            self.assertIn(b"Cannot open this page: " + why, response.body)
            self.assertIn(b'formaction="/room"', response.body)
        kept = await self.page("room_page", raise_error=False, id="ME")
        self.assertIn(b'name="id" value="ME"', kept.body)

    @testing.gen_test
    async def test_the_home_page_takes_a_room_and_the_invite_fills_it_in(self):
        home = await self.http_client.fetch(self.get_url("/"))
        self.assertIn(b'formaction="/room"', home.body)
        self.assertIn(f"up to {self.app.config.MAX_ROOM_MEMBERS} people".encode(), home.body)
        invited = await self.http_client.fetch(self.get_url("/?" + urlencode({"room": '"><b>x'})))
        self.assertIn(b'name="room" value="&quot;&gt;&lt;b&gt;x"', invited.body)
        self.assertIn(b"autofocus", invited.body)
