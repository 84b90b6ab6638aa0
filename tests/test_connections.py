"""/connections: the original's JSON shape, behind an admin credential."""

from __future__ import annotations

import json

from test_common import BasicTestCase, testing


class TestConnectionsDisabled(BasicTestCase):
    @testing.gen_test
    async def test_without_admin_token_the_route_answers_404(self):
        await self.connect("ME", "PEER1")
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            response = await self.http_client.fetch(self.get_url("/connections?id=ME"), headers=headers, raise_error=False)
            self.assertEqual(response.code, 404)
            self.assertNotIn(b"PEER1", response.body)


class TestConnections(BasicTestCase):
    app_options = {"ADMIN_TOKEN": "admin-secret"}

    async def get(self, query: str, token: str | None = "admin-secret", scheme: str = "Bearer"):
        headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
        return await self.http_client.fetch(self.get_url(f"/connections{query}"), headers=headers, raise_error=False)

    @testing.gen_test
    async def test_missing_or_wrong_credential_gets_401(self):
        await self.connect("ME", "PEER1")
        for token, scheme in ((None, "Bearer"), ("wrong", "Bearer"), ("admin-secret", "Basic"), ("admin-secre", "Bearer")):
            response = await self.get("?id=ME", token, scheme)
            self.assertEqual(response.code, 401)
            self.assertEqual(response.headers["WWW-Authenticate"], 'Bearer realm="webrtc_app"')
            self.assertNotIn(b"PEER1", response.body)

    @testing.gen_test
    async def test_lists_every_socket_of_the_id_with_its_peer_and_session(self):
        await self.connect("ME", "PEER1")
        await self.connect("ME", "PEER2")
        await self.connect("ME")
        await self.connect("PEER1", "ME")
        response = await self.get("?id=ME")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers["Content-Type"].startswith("application/json"))
        listed = json.loads(response.body)
        self.assertEqual(sorted(str(c["peer"]) for c in listed), ["None", "PEER1", "PEER2"])
        sessions = [c["session"] for c in listed]
        self.assertEqual(len(set(sessions)), 3)
        self.assertTrue(all(isinstance(s, str) and len(s) == 32 for s in sessions))
        self.assertEqual(sorted(sessions), sorted(s.session_id for s in self.all_sessions() if s.id == "ME"))

    @testing.gen_test
    async def test_unknown_id_is_an_empty_list_and_an_empty_id_is_400(self):
        self.assertEqual(json.loads((await self.get("?id=nobody")).body), [])
        response = await self.get("?id=")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(response.body), {"error": "bad-request", "message": "empty id"})

    @testing.gen_test
    async def test_without_an_id_it_lists_who_is_online_page_by_page(self):
        self.assertEqual(json.loads((await self.get("")).body), {"ids": [], "next": None})
        for n in range(7):
            await self.connect(f"online{n}", "PEER1")
        await self.connect("online3", "PEER2")  # a second socket of one id
        seen: list[dict] = []
        after = ""
        for _ in range(10):
            page = json.loads((await self.get(f"?limit=3&after={after}")).body)
            self.assertLessEqual(len(page["ids"]), 3)
            seen += page["ids"]
            if page["next"] is None:
                break
            after = page["next"]
        self.assertEqual([entry["id"] for entry in seen], [f"online{n}" for n in range(7)])
        self.assertEqual({entry["id"]: entry["sockets"] for entry in seen}["online3"], 2)
        everyone = json.loads((await self.get("")).body)
        self.assertEqual(len(everyone["ids"]), 7)
        for bad in ("0", "1001", "ten", "-1"):
            response = await self.get(f"?limit={bad}")
            self.assertEqual(response.code, 400)
            self.assertEqual(json.loads(response.body)["message"], "limit must be a number from 1 to 1000")
        self.assertEqual((await self.get("", token="wrong")).code, 401)
