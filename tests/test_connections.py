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
    async def test_unknown_id_is_an_empty_list_and_missing_id_is_400(self):
        self.assertEqual(json.loads((await self.get("?id=nobody")).body), [])
        response = await self.get("")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(response.body), {"error": "bad-request", "message": "missing id"})
