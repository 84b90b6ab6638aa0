"""TURN REST credentials from the ICE endpoint against a real coturn (turnserver)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from conftest import require, running

from processes import ServerProcess, TurnServer

SECRET = "turn-shared-secret-for-tests"


@pytest.fixture(scope="module")
def turnserver(tmp_path_factory):
    try:
        import aioice.turn  # noqa: F401
    except ImportError:
        require(None, "aioice (TURN client)", "pip install -r tests/requirements.txt")
    with running(TurnServer(SECRET, tmp_path_factory.mktemp("turn"))) as turn:
        yield turn.port


async def allocate(port: int, username: str, password: str) -> str | None:
    """Allocate a relay on the TURN server: "ok", "refused" (401/403), or None if it did not answer."""
    import aioice.stun
    import aioice.turn

    try:
        transport, _ = await asyncio.wait_for(
            aioice.turn.create_turn_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", port), username, password, lifetime=60),
            5,
        )
    except aioice.stun.TransactionFailed as error:
        code = error.response.attributes.get("ERROR-CODE", (0, ""))[0]
        return "refused" if code in (401, 403, 437, 441) else f"error {code}"
    except (TimeoutError, aioice.stun.TransactionTimeout, ConnectionError):
        return None
    transport.close()
    return "ok"


def ice_servers(server: ServerProcess, token: str, user: str) -> list[dict]:
    request = urllib.request.Request(f"{server.http}/ice_servers?id={user}", data=token.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def webrtc_with_turn(turn_port: int, ttl: int) -> ServerProcess:
    entry = {"urls": f"turn:127.0.0.1:{turn_port}?transport=udp", "secret": SECRET, "ttl": ttl}
    return ServerProcess(env={"WEBRTC_ICE_ACCESS_TOKEN": "tok", "WEBRTC_ICE_SERVERS": json.dumps([entry])})


def test_issued_credentials_allocate_on_coturn(turnserver):
    with webrtc_with_turn(turnserver, ttl=600) as server:
        (turn,) = ice_servers(server, "tok", "alice")
    assert "secret" not in turn and SECRET not in json.dumps(turn)
    assert turn["username"].endswith(":alice")
    assert asyncio.run(allocate(turnserver, turn["username"], turn["credential"])) == "ok"


def test_expired_credentials_are_refused(turnserver):
    with webrtc_with_turn(turnserver, ttl=-60) as server:  # expired a minute ago
        (turn,) = ice_servers(server, "tok", "alice")
    assert asyncio.run(allocate(turnserver, turn["username"], turn["credential"])) == "refused"


def test_forged_credentials_are_refused(turnserver):
    with webrtc_with_turn(turnserver, ttl=600) as server:
        (turn,) = ice_servers(server, "tok", "alice")
    expiry, user = turn["username"].split(":", 1)
    # The same credential with another name or a later expiry, or a guessed credential.
    assert asyncio.run(allocate(turnserver, f"{expiry}:mallory", turn["credential"])) == "refused"
    assert asyncio.run(allocate(turnserver, f"{int(expiry) + 86400}:{user}", turn["credential"])) == "refused"
    assert asyncio.run(allocate(turnserver, turn["username"], "Zm9yZ2VkIGNyZWRlbnRpYWw=")) == "refused"
