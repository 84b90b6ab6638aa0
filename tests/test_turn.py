"""TURN REST credentials from the ICE endpoint against a real coturn (turnserver)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from conftest import require

from server_process import ServerProcess, free_port, terminate

SECRET = "turn-shared-secret-for-tests"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def turnserver(tmp_path_factory):
    binary = shutil.which("turnserver")
    require(binary, "coturn's turnserver", "apt-get install -y coturn")
    try:
        import aioice.turn  # noqa: F401
    except ImportError:
        require(None, "aioice (TURN client)", "pip install -r tests/requirements.txt")
    folder = tmp_path_factory.mktemp("turn")
    port = free_udp_port()
    relay_low = free_port()
    proc = subprocess.Popen(
        [
            binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
            f"--min-port={relay_low}", f"--max-port={relay_low + 20}", "--use-auth-secret",
            f"--static-auth-secret={SECRET}", "--realm=webrtc-app-test", "--allow-loopback-peers",
            "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--log-file=stdout", "--simple-log",
            f"--userdb={folder / 'turndb'}", f"--pidfile={folder / 'turn.pid'}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Ready when a first (anonymous) allocation is answered, even with 401.
        deadline = time.monotonic() + 15
        while asyncio.run(allocate(port, "probe", "probe")) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("turnserver did not start:\n" + (proc.stdout.read() if proc.stdout else ""))
            time.sleep(0.2)
        yield port
    finally:
        terminate(proc)


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
