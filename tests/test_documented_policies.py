"""The policy modules docs/operations.md shows, taken from the page as written, in the real
server: the hooks read the socket through the names they always used (get_query_argument,
get_cookie), on both transports."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
import urllib.error
import urllib.request

import pytest
from raw_ws import CLOSE, TEXT, RawWebSocket, frame

from processes import PROJECT_DIR, ServerProcess

SECRET = "documented-secret"


def documented_module(name: str) -> str:
    with open(os.path.join(PROJECT_DIR, "docs", "operations.md"), encoding="utf-8") as handle:
        text = handle.read()
    for block in re.findall(r"```python\n(.+?)\n```", text, re.S):
        if block.startswith(f"# {name}.py"):
            return block
    raise AssertionError(f"docs/operations.md shows no {name}.py")


@pytest.fixture
def policy_dir(tmp_path):
    for name in ("my_ice_policy", "my_socket_policy"):
        (tmp_path / f"{name}.py").write_text(documented_module(name), encoding="utf-8")
    return str(tmp_path)


def sign(user: str) -> str:
    return hmac.new(SECRET.encode(), user.encode(), hashlib.sha256).hexdigest()


def outcome(server: ServerProcess, transport: str, query: str, **headers: str) -> int | None:
    """The close code the socket gets, or None if it was let in (its message relayed)."""
    ws = RawWebSocket("127.0.0.1", server.port, f"/wscall?{query}", transport=transport, **headers)
    try:
        ws.send(frame(TEXT, b"anyone?"))
        opcode, payload = ws.read_frame()
        return struct.unpack("!H", payload[:2])[0] if opcode == CLOSE else None
    finally:
        ws.close()


@pytest.mark.parametrize("transport", ["lean", "tornado"])
def test_the_documented_socket_policy_lets_in_signed_tokens_and_session_cookies(policy_dir, transport):
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_POLICY": "my_socket_policy", "MY_SOCKET_SECRET": SECRET, "PYTHONPATH": policy_dir}
    with ServerProcess(env=env) as server:
        assert outcome(server, transport, f"id=ann&peer_id=bo&token=ann.{sign('ann')}") is None
        assert outcome(server, transport, "id=ann&peer_id=bo", Cookie=f"session=ann.{sign('ann')}") is None
        assert outcome(server, transport, f"id=ann&peer_id=bo&token=eve.{sign('eve')}") == 4403
        assert outcome(server, transport, "id=ann&peer_id=bo&token=ann.forged") == 4403
        assert outcome(server, transport, "id=ann&peer_id=bo") == 4403
        assert "Traceback" not in server.output()


def test_the_documented_ice_policy_hands_out_and_accepts_its_hourly_token(policy_dir):
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_POLICY": "my_ice_policy", "MY_ICE_SECRET": SECRET, "PYTHONPATH": policy_dir}
    with ServerProcess(env=env) as server:
        with urllib.request.urlopen(f"{server.http}/call?id=ann&peer_id=bo", timeout=10) as response:
            page = response.read().decode()
        config = json.loads(re.search(r'id="page-config">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
        request = urllib.request.Request(f"{server.http}/ice_servers", data=config["icePass"].encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and json.load(response) == []
        wrong = urllib.request.Request(f"{server.http}/ice_servers", data=b"not-the-token", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=10)
        assert refused.value.code == 403
