"""The ICE endpoint and its overridable access policy."""

from __future__ import annotations

import json
import os
import sys

import pytest
from tornado import httpclient

import settings

from test_common import TEST_ICE_SERVERS, BasicTestCase, testing, webrtc_server

POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")
if POLICIES not in sys.path:
    sys.path.insert(0, POLICIES)

import rotating_token  # noqa: E402


class IceTestCase(BasicTestCase):
    async def post_token(self, token: str | bytes) -> httpclient.HTTPResponse:
        return await self.http_client.fetch(
            self.get_url(self.app.reverse_url("ice_url")), method="POST", body=token, raise_error=False
        )

    async def page_token(self) -> str:
        response = await self.http_client.fetch(self.get_url("/call?id=ME&peer_id=PEER1"))
        # The page's config: the one JSON object between the element's tags.
        start = response.body.index(b'id="page-config">') + len(b'id="page-config">')
        return json.loads(response.body[start : response.body.index(b"</script>", start)])["icePass"]


class TestIceEndpoint(IceTestCase):
    @testing.gen_test
    async def test_right_token_gets_the_ice_servers(self):
        response = await self.post_token(await self.page_token())
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(response.body), TEST_ICE_SERVERS)
        self.assertTrue(response.headers["Content-Type"].startswith("application/json"))
        self.assertEqual(response.headers["Cache-Control"], "no-store")

    @testing.gen_test
    async def test_wrong_or_missing_token_gets_403_with_json_error(self):
        right = self.app.config.get_ice_pass()
        for token in ["", "wrong", right + "x", right[:-1], b"\xff\xfe", right.upper() if right != right.upper() else "X"]:
            response = await self.post_token(token)
            self.assertEqual(response.code, 403, token)
            self.assertEqual(json.loads(response.body), {"error": "forbidden", "message": "wrong or missing ICE access token"})
            self.assertNotIn(right.encode(), response.body)

    @testing.gen_test
    async def test_get_is_405_with_json_error(self):
        response = await self.http_client.fetch(self.get_url("/ice_servers"), raise_error=False)
        self.assertEqual(response.code, 405)
        self.assertEqual(json.loads(response.body)["error"], "method-not-allowed")


class TestIceUrlSetting(IceTestCase):
    app_options = {"ICE_URL": "/api/ice", "ICE_ACCESS_TOKEN": "configured-token"}

    @testing.gen_test
    async def test_ice_url_and_token_come_from_settings(self):
        self.assertEqual(self.app.reverse_url("ice_url"), "/api/ice")
        self.assertEqual(await self.page_token(), "configured-token")
        self.assertEqual((await self.post_token("configured-token")).code, 200)
        response = await self.http_client.fetch(
            self.get_url("/ice_servers"), method="POST", body="configured-token", raise_error=False
        )
        self.assertEqual(response.code, 404)


class TestRotatingPolicyModule(IceTestCase):
    app_options = {"POLICY": "rotating_token"}

    @testing.gen_test
    async def test_policy_module_rotates_tokens_and_is_honoured(self):
        first = await self.page_token()
        self.assertEqual(first, rotating_token.get_ice_pass())
        self.assertEqual((await self.post_token(first)).code, 200)
        second = rotating_token.rotate()
        self.assertEqual(await self.page_token(), second)
        self.assertEqual((await self.post_token(second)).code, 200)
        self.assertEqual((await self.post_token(first)).code, 200)  # the policy's grace period
        rotating_token.rotate()
        self.assertEqual((await self.post_token(first)).code, 403)  # now too old
        self.assertEqual((await self.post_token(settings.ICE_ACCESS_TOKEN)).code, 403)


class TestPolicyWithOnlyGetIcePass(IceTestCase):
    app_options = {"POLICY": "fixed_token"}

    @testing.gen_test
    async def test_default_check_follows_the_replaced_token(self):
        self.assertEqual(await self.page_token(), "fixed-token-from-policy")
        self.assertEqual((await self.post_token("fixed-token-from-policy")).code, 200)
        self.assertEqual((await self.post_token(settings.ICE_ACCESS_TOKEN)).code, 403)


class TestHooksPassedToMakeApp(IceTestCase):
    def get_app(self):
        self.checked: list[bytes] = []

        def has_ice_pass(handler) -> bool:
            self.checked.append(handler.request.body)
            return handler.request.body == b"let me in"

        return webrtc_server.make_app(iceServers=TEST_ICE_SERVERS, get_ice_pass=lambda: "let me in", has_ice_pass=has_ice_pass)

    @testing.gen_test
    async def test_hooks_given_to_make_app_win(self):
        self.assertEqual(await self.page_token(), "let me in")
        self.assertEqual((await self.post_token("let me in")).code, 200)
        self.assertEqual((await self.post_token("no")).code, 403)
        self.assertEqual(self.checked, [b"let me in", b"no"])


class TestFailingPolicy(IceTestCase):
    def get_app(self):
        def broken(handler) -> bool:
            raise RuntimeError("database down")

        return webrtc_server.make_app(has_ice_pass=broken)

    @testing.gen_test
    async def test_a_crashing_policy_gives_500_json_and_the_server_stays_up(self):
        response = await self.post_token("x")
        self.assertEqual(response.code, 500)
        self.assertEqual(json.loads(response.body)["error"], "internal-server-error")
        self.assertEqual((await self.http_client.fetch(self.get_url("/"))).code, 200)


def test_policy_errors_are_clear():
    with pytest.raises(ValueError, match="cannot import 'no_such_policy_module'"):
        settings.resolve(POLICY="no_such_policy_module")
    with pytest.raises(ValueError, match="defines none of get_ice_pass, has_ice_pass, has_socket_pass"):
        settings.resolve(POLICY="no_hooks")
