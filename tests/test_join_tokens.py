"""Join tokens (JOIN_TOKEN_KEYS) in the real server: every refusal reason over a real socket on
both transports and on a second node of a Redis backplane, every algorithm, key rotation with
SIGHUP, the ICE endpoint and TURN credentials bound to the token (on a real coturn), the
``token`` command, and no token in any log line."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from typing import Any

import jwt
import pytest
from conftest import running
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from raw_ws import CLOSE, TEXT, RawWebSocket, frame
from test_turn import SECRET as TURN_SECRET
from test_turn import allocate, turnserver  # noqa: F401 - the fixture
from websockets.sync.client import connect

from processes import PROJECT_DIR, RedisServer, ServerProcess, run_cli, wait_until

sys.path.insert(0, PROJECT_DIR)
import settings  # noqa: E402
from routing.tokens import JoinTokens, parse_keys  # noqa: E402
from webrtc_server import beyond_loopback, warn_if_open  # noqa: E402

SHARED = "a-shared-secret-of-at-least-32-bytes-for-tests"
AUDIENCE, ISSUER = "webrtc-app-tests", "https://backend.example"


def pem_public(private: Any) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


PRIVATE = {
    "rsa": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    "ec": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "ed": (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
}
KEYS = {"hs": SHARED, **{kid: pem_public(private) for kid, (private, _) in PRIVATE.items()}}


def claims(sub: str = "ann", **more: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": sub, "exp": now + 600, "iat": now, "aud": AUDIENCE, "iss": ISSUER}
    base.update(more)
    return {name: value for name, value in base.items() if value is not None}


def mint(kid: str = "hs", sub: str = "ann", **more: Any) -> str:
    """A token signed as a backend would sign it, with the key ``kid`` names."""
    if kid in PRIVATE:
        private, algorithm = PRIVATE[kid]
        return jwt.encode(claims(sub, **more), private, algorithm=algorithm, headers={"kid": kid})
    return jwt.encode(claims(sub, **more), SHARED, algorithm="HS256", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict[str, Any], body: dict[str, Any], secret: bytes | None) -> str:
    """A token no library would sign: alg none, or an HMAC keyed with a public key's PEM."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing}.{signature}"


def keys_file(tmp_path, keys: dict[str, str]) -> str:
    path = tmp_path / "join-token-keys.json"
    path.write_text(json.dumps(keys), encoding="utf-8")
    return str(path)


def token_env(path: str, **more: str) -> dict[str, str]:
    env = {
        "WEBRTC_ICE_SERVERS": "[]",
        "WEBRTC_JOIN_TOKEN_KEYS_FILE": path,
        "WEBRTC_JOIN_TOKEN_AUDIENCE": AUDIENCE,
        "WEBRTC_JOIN_TOKEN_ISSUER": ISSUER,
    }
    env.update(more)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(env=token_env(keys_file(tmp_path_factory.mktemp("keys"), KEYS))) as process:
        yield process


def outcome(server: ServerProcess, path: str, transport: str = "lean") -> tuple[int, str] | str:
    """The close (code, reason) the socket gets, or "admitted" (its first frame was no close)."""
    ws = RawWebSocket("127.0.0.1", server.port, path, transport=transport)
    try:
        assert ws.status == 101
        if not path.startswith("/wsroom"):
            ws.send(frame(TEXT, b'{"hello": 1}'))  # an admitted call socket hears PEER-UNAVAILABLE
        opcode, payload = ws.read_frame()
        if opcode == CLOSE:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        return "admitted"
    finally:
        ws.close()


def call(token: str | None, my_id: str = "ann", peer: str = "bo") -> str:
    query = f"/wscall?id={my_id}&peer_id={peer}"
    return query + (f"&token={token}" if token is not None else "")


def room(token: str | None, my_id: str = "ann", name: str = "R") -> str:
    query = f"/wsroom?id={my_id}&room={name}"
    return query + (f"&token={token}" if token is not None else "")


def hmac_with_pem(kid: str) -> str:
    return by_hand({"alg": "HS256", "kid": kid}, claims(), KEYS[kid].encode())


def now() -> int:
    """The time a case is built at: cases are built when their test runs, not at import, so a
    long suite cannot age an "expired within the leeway" token into a plainly expired one."""
    return int(time.time())


REQUIRED, INVALID, EXPIRED = (4401, "TOKEN-REQUIRED"), (4401, "TOKEN-INVALID"), (4401, "TOKEN-EXPIRED")
REFUSALS = {
    "no token": lambda: (call(None), REQUIRED),
    "empty token": lambda: (call(""), REQUIRED),
    "room socket without token": lambda: (room(None), REQUIRED),
    "alg none": lambda: (call(by_hand({"alg": "none", "kid": "hs", "typ": "JWT"}, claims(), None)), INVALID),
    "alg none, no kid": lambda: (call(by_hand({"alg": "none", "typ": "JWT"}, claims(), None)), INVALID),
    "HMAC keyed with the RSA key's PEM": lambda: (call(hmac_with_pem("rsa")), INVALID),
    "HMAC keyed with the EdDSA key's PEM": lambda: (call(hmac_with_pem("ed")), INVALID),
    "wrong secret": lambda: (call(jwt.encode(claims(), "another-secret-of-" + "x" * 20, "HS256", {"kid": "hs"})), INVALID),
    "RS256 signed by another key": lambda: (
        call(jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", {"kid": "rsa"})),
        INVALID,
    ),
    "ES256 under the EdDSA key": lambda: (call(jwt.encode(claims(), PRIVATE["ec"][0], "ES256", {"kid": "ed"})), INVALID),
    "unknown kid": lambda: (call(jwt.encode(claims(), SHARED, "HS256", {"kid": "gone"})), INVALID),
    "no kid": lambda: (call(jwt.encode(claims(), SHARED, "HS256")), INVALID),
    "expired": lambda: (call(mint(exp=now() - 120)), EXPIRED),
    "expired, room": lambda: (room(mint(exp=now() - 120, room="R")), EXPIRED),
    "expired and forged": lambda: (call(jwt.encode(claims(exp=now() - 120), "x" * 40, "HS256", {"kid": "hs"})), INVALID),
    "nbf in the future": lambda: (call(mint(nbf=now() + 300)), INVALID),
    "no exp": lambda: (call(mint(exp=None)), INVALID),
    "no sub": lambda: (call(mint(sub=None)), INVALID),
    "sub of another id": lambda: (call(mint(sub="eve")), INVALID),
    "peer not the socket's": lambda: (call(mint(peer="carl")), INVALID),
    "room token on a call socket": lambda: (call(mint(room="R")), INVALID),
    "call token on a room socket": lambda: (room(mint()), INVALID),
    "another room": lambda: (room(mint(room="S")), INVALID),
    "peer claim on a room socket": lambda: (room(mint(room="R", peer="bo")), INVALID),
    "wrong audience": lambda: (call(mint(aud="someone-else")), INVALID),
    "no audience": lambda: (call(mint(aud=None)), INVALID),
    "wrong issuer": lambda: (call(mint(iss="https://evil.example")), INVALID),
    "oversized": lambda: (call(mint(pad="x" * 4200)), INVALID),
    "garbage": lambda: (call("not-a-token"), INVALID),
    "three garbage parts": lambda: (call("a.b.c"), INVALID),
    "binary garbage": lambda: (call("%FF%FE%00.%01.%02"), INVALID),
}
ADMITTED = {
    "HS256": lambda: call(mint("hs")),
    "RS256": lambda: call(mint("rsa")),
    "ES256": lambda: call(mint("ec")),
    "EdDSA": lambda: call(mint("ed")),
    "HS256, room": lambda: room(mint("hs", room="R")),
    "RS256, room": lambda: room(mint("rsa", room="R")),
    "ES256, room": lambda: room(mint("ec", room="R")),
    "EdDSA, room": lambda: room(mint("ed", room="R")),
    "peer claim matching": lambda: call(mint(peer="bo")),
    "receiver with no peer_id": lambda: call(mint(), peer=""),
    "expired within the 30 s leeway": lambda: call(mint(exp=now() - 5)),
}


@pytest.mark.parametrize("transport", ["lean", "tornado"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_closes_with_4401_and_its_reason(server, transport, case):
    path, expected = REFUSALS[case]()
    assert outcome(server, path, transport) == expected


@pytest.mark.parametrize("transport", ["lean", "tornado"])
@pytest.mark.parametrize("case", list(ADMITTED))
def test_valid_tokens_of_every_algorithm_are_admitted(server, transport, case):
    assert outcome(server, ADMITTED[case](), transport) == "admitted"


def test_an_admitted_pair_talks_and_no_token_reaches_the_log(server):
    refused = [REFUSALS[case]() for case in REFUSALS]
    admitted = [ADMITTED[case]() for case in ADMITTED]
    for path, expected in refused:
        assert outcome(server, path) == expected
    for path in admitted:
        assert outcome(server, path) == "admitted"
    with (
        connect(f"{server.ws}{call(mint('ec', sub='cy'), 'cy', 'di')}") as cy,
        connect(f"{server.ws}{call(mint('ed', sub='di', peer='cy'), 'di', 'cy')}") as di,
    ):
        wait_until(lambda: relayed(cy, di), 10, "cy's message to di")
    wait_until(lambda: "token=***" in server.output(), 10, "the access log's masked token")
    output = server.output()
    for path, _ in refused:
        token = path.partition("&token=")[2]
        if len(token) > 8:
            assert token not in output
    for path in admitted:
        assert path.partition("&token=")[2] not in output
    assert "Traceback" not in output


def metrics_ids(server: ServerProcess) -> bytes:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
        return response.read()


def test_refusals_are_counted_by_reason_in_the_metrics(server):
    outcome(server, call(None))
    outcome(server, call(mint(exp=now() - 120)))
    text = metrics_ids(server).decode()
    for reason in ("token-required", "token-expired", "token-invalid"):
        assert f'reason="{reason}"' in text


def test_an_open_socket_outlives_its_tokens_expiry(tmp_path):
    env = token_env(keys_file(tmp_path, {"hs": SHARED}), WEBRTC_JOIN_TOKEN_LEEWAY="0")
    with ServerProcess(env=env) as server, ExitStack() as stack:
        ed = stack.enter_context(connect(f"{server.ws}{call(mint(exp=int(time.time()) + 2, sub='ed'), 'ed', 'fay')}"))
        fay = stack.enter_context(connect(f"{server.ws}{call(mint(sub='fay', peer='ed'), 'fay', 'ed')}"))
        time.sleep(3)
        assert outcome(server, call(mint(exp=int(time.time()) - 1, sub="ed"), "ed", "fay")) == EXPIRED
        ed.send('{"still": "here"}')
        assert json.loads(fay.recv(timeout=5)) == {"still": "here"}


# --- across nodes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis():
    with running(RedisServer()) as server:
        yield server


def test_refusals_and_admissions_hold_on_every_node_of_a_backplane(redis, tmp_path):
    env = token_env(keys_file(tmp_path, KEYS))
    with ServerProcess("--redis", redis.url, env=env) as one, ServerProcess("--redis", redis.url, env=env) as two:
        for transport in ("lean", "tornado"):
            for case in ("no token", "expired", "unknown kid", "sub of another id", "another room", "alg none"):
                path, expected = REFUSALS[case]()
                assert outcome(two, path, transport) == expected, case
        with (
            connect(f"{one.ws}{call(mint('rsa', sub='gil'), 'gil', 'hal')}") as gil,
            connect(f"{two.ws}{call(mint('ec', sub='hal'), 'hal', 'gil')}") as hal,
        ):
            wait_until(lambda: relayed(hal, gil), 10, "hal's message on the other node")
        with connect(f"{one.ws}{room(mint('ed', sub='ivy', room='Q'), 'ivy', 'Q')}") as ivy:
            assert json.loads(ivy.recv(timeout=5))["event"] == "members"
            with connect(f"{two.ws}{room(mint('hs', sub='jo', room='Q'), 'jo', 'Q')}") as jo:
                assert json.loads(jo.recv(timeout=5))["members"] == ["ivy"]


def relayed(sender: Any, receiver: Any) -> bool:
    sender.send('{"across": true}')
    try:
        return json.loads(receiver.recv(timeout=1)) == {"across": True}
    except TimeoutError:
        return False


# --- rotation ----------------------------------------------------------------------------


def test_rotation_old_and_new_keys_then_sighup_drops_the_old_and_keeps_open_sockets(tmp_path):
    old_secret, new_secret = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32

    def signed(kid: str, secret: str, sub: str, peer: str) -> str:
        return jwt.encode(claims(sub, peer=peer), secret, "HS256", {"kid": kid})

    path = keys_file(tmp_path, {"2026-11": old_secret, "2026-12": new_secret})
    with ServerProcess(env=token_env(path)) as server, ExitStack() as stack:
        kay = stack.enter_context(connect(f"{server.ws}{call(signed('2026-11', old_secret, 'kay', 'lu'), 'kay', 'lu')}"))
        assert outcome(server, call(signed("2026-12", new_secret, "ann", "bo"))) == "admitted"
        keys_file(tmp_path, {"2026-12": new_secret})
        os.kill(server.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "read again" in server.output(), 10, "the keys read again")
        assert outcome(server, call(signed("2026-11", old_secret, "ann", "bo"))) == INVALID
        assert outcome(server, call(signed("2026-12", new_secret, "ann", "bo"))) == "admitted"
        lu = stack.enter_context(connect(f"{server.ws}{call(signed('2026-12', new_secret, 'lu', 'kay'), 'lu', 'kay')}"))
        time.sleep(0.3)
        kay.send('{"opened with": "the old key"}')
        assert json.loads(lu.recv(timeout=5)) == {"opened with": "the old key"}
        # A broken file changes nothing, and says why.
        (tmp_path / "join-token-keys.json").write_text("{not json", encoding="utf-8")
        os.kill(server.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "join token keys unchanged" in server.output(), 10, "the refusal of a bad file")
        assert outcome(server, call(signed("2026-12", new_secret, "ann", "bo"))) == "admitted"
        assert server.running and "Traceback" not in server.output()


def test_sighup_reaches_every_worker(redis, tmp_path):
    path = keys_file(tmp_path, {"a": "a" * 32, "b": "b" * 32})
    with ServerProcess("--redis", redis.url, "--processes", "2", env=token_env(path)) as server:
        wait_until(lambda: server.output().count("listening on") >= 2, 20, "both workers")
        keys_file(tmp_path, {"b": "b" * 32})
        os.kill(server.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: server.output().count("read again") == 2, 10, "both workers reading the keys again")
        for _ in range(6):  # whichever worker takes it refuses the removed key
            assert outcome(server, call(jwt.encode(claims(), "a" * 32, "HS256", {"kid": "a"}))) == INVALID
        assert server.running


# --- the ICE endpoint and TURN -----------------------------------------------------------


def post_ice(server: ServerProcess, body: str, user: str = "ann") -> tuple[int, Any]:
    request = urllib.request.Request(f"{server.http}/ice_servers?id={user}", data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_ice_needs_a_join_token_and_turn_credentials_carry_its_sub(turnserver, tmp_path):  # noqa: F811
    entry = {"urls": f"turn:127.0.0.1:{turnserver}?transport=udp", "secret": TURN_SECRET, "ttl": 86400}
    env = token_env(keys_file(tmp_path, KEYS), WEBRTC_ICE_SERVERS=json.dumps([entry]), WEBRTC_ICE_ACCESS_TOKEN="ice-token")
    with ServerProcess(env=env) as server:
        assert post_ice(server, "") == (401, {"error": "token-required", "message": "join token refused: no join token"})
        status, body = post_ice(server, "ice-token")  # the page's ICE token no longer does
        assert (status, body["error"]) == (401, "token-invalid")
        assert post_ice(server, mint(exp=now() - 120))[1]["error"] == "token-expired"
        assert post_ice(server, mint(sub="mo", exp=int(time.time()) + 600, room="R"), user="somebody-else")[0] == 200
        token_exp = int(time.time()) + 300
        status, servers = post_ice(server, mint("ed", sub="mo", exp=token_exp), user="not-mo")
        assert status == 200
        (turn,) = servers
        expiry, _, user = turn["username"].partition(":")
        assert user == "mo" and int(expiry) == token_exp  # the token's end, not the entry's day
        assert TURN_SECRET not in json.dumps(turn)
        # Real credentials: coturn allocates with them, not with another user's name.
        assert asyncio_allocate(turnserver, turn["username"], turn["credential"]) == "ok"
        assert asyncio_allocate(turnserver, f"{expiry}:eve", turn["credential"]) == "refused"
        # Pages embed no ICE token: the join token replaces it.
        with urllib.request.urlopen(f"{server.http}/call?id=ann&peer_id=bo&token=x", timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Cache-Control"] == "no-store"
        assert "ice-token" not in page and '"joinToken": "x"' in page and '"icePass": ""' in page


def asyncio_allocate(port: int, username: str, password: str) -> str | None:
    return asyncio.run(allocate(port, username, password))


# --- the token command, the keys' checks, the warning ------------------------------------


def test_the_token_command_mints_what_the_server_admits(server, tmp_path):
    env = {"WEBRTC_JOIN_TOKEN_KEYS": json.dumps(KEYS), "WEBRTC_JOIN_TOKEN_AUDIENCE": AUDIENCE, "WEBRTC_JOIN_TOKEN_ISSUER": ISSUER}
    done = run_cli("token", "--id", "ann", "--peer", "bo", "--ttl", "60", env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert outcome(server, call(token)) == "admitted"
    assert outcome(server, call(token, peer="carl")) == INVALID
    payload = jwt.decode(token, SHARED, algorithms=["HS256"], audience=AUDIENCE)
    assert payload["exp"] - payload["iat"] == 60 and payload["iss"] == ISSUER
    done = run_cli("token", "--id", "ann", "--room", "R", env=env)
    assert outcome(server, room(done.stdout.strip())) == "admitted"
    refused = run_cli("token", "--id", "ann", "--kid", "rsa", env=env)
    assert refused.returncode == 2 and "public key" in refused.stderr and refused.stdout == ""
    refused = run_cli("token", "--id", "ann", env={})
    assert refused.returncode == 2 and "JOIN_TOKEN_KEYS is empty" in refused.stderr
    two = {"WEBRTC_JOIN_TOKEN_KEYS": json.dumps({"a": "a" * 32, "b": "b" * 32})}
    refused = run_cli("token", "--id", "ann", env=two)
    assert refused.returncode == 2 and "--kid" in refused.stderr
    assert run_cli("token", "--id", "ann", "--kid", "b", env=two).returncode == 0
    refused = run_cli("token", "--id", "a" * 300, env=two)
    assert refused.returncode == 2 and "id" in refused.stderr


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"k": "short"}, "at least 32 bytes"),
        ({"k": pem_public(PRIVATE["rsa"][0]).replace("A", "B", 5)}, "not a PEM public key"),
        (
            {
                "k": PRIVATE["ec"][0]
                .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                .decode()
            },
            "a private key",
        ),  # fmt: skip
        ({"k": pem_public(rsa.generate_private_key(public_exponent=65537, key_size=1024))}, "2048 bits"),
        ({"k": pem_public(ec.generate_private_key(ec.SECP256K1()))}, "not one of P-256"),
        ({"k": 12}, "as text"),
    ],
)
def test_a_bad_key_is_a_one_line_error_at_start(keys, message):
    done = run_cli("start", "0", "--host", "127.0.0.1", env={"WEBRTC_JOIN_TOKEN_KEYS": json.dumps(keys)})
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_every_curve_and_key_type_gets_its_one_algorithm():
    p384 = pem_public(ec.generate_private_key(ec.SECP384R1()))
    keys = parse_keys({"hs": SHARED, "p384": p384, **{kid: KEYS[kid] for kid in PRIVATE}})
    assert {kid: key.algorithm for kid, key in keys.items()} == {
        "hs": "HS256",
        "p384": "ES384",
        "rsa": "RS256",
        "ec": "ES256",
        "ed": "EdDSA",
    }
    tokens = JoinTokens(keys)
    grant = tokens.check(jwt.encode({"sub": "x", "exp": now() + 60}, PRIVATE["ec"][0], "ES256", {"kid": "ec"}), "x", "", None)
    assert grant.sub == "x" and grant.exp == now() + 60


def test_the_warning_is_for_servers_beyond_loopback_with_no_tokens_and_no_policy(caplog):
    unbound = socket.socket()  # 0.0.0.0: every interface (nothing listens here)
    loopback = socket.socket()
    loopback.bind(("127.0.0.1", 0))
    warning = "anyone who reaches this server may connect as any id"
    try:
        assert beyond_loopback([unbound]) and not beyond_loopback([loopback])
        for config, warned in (
            (settings.resolve(), True),
            (settings.resolve(JOIN_TOKEN_KEYS={"k": SHARED}), False),
            (settings.resolve(has_socket_pass=lambda handler: True), False),
        ):
            caplog.clear()
            warn_if_open(config, [unbound])
            assert (warning in caplog.text) is warned
            caplog.clear()
            warn_if_open(config, [loopback])
            assert warning not in caplog.text
    finally:
        unbound.close()
        loopback.close()
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]"}) as server:  # on 127.0.0.1: no warning
        assert "anyone who reaches this server" not in server.output()


# --- the Python peer ---------------------------------------------------------------------


def test_the_python_peer_carries_its_token_and_renews_it_when_it_expired(tmp_path):
    from webrtc_client import PythonPeer, SignalingRefused

    env = token_env(keys_file(tmp_path, {"hs": SHARED}), WEBRTC_JOIN_TOKEN_LEEWAY="0")
    asked: list[float] = []

    def renew() -> str:
        asked.append(time.time())
        return mint(sub="bot", peer="pat")

    async def scenario(server: ServerProcess) -> None:
        bad = PythonPeer(server.ws, "bot", "pat", token=mint(sub="eve"))
        with pytest.raises(SignalingRefused) as refused:
            await asyncio.wait_for(bad.run(), 10)
        assert (refused.value.code, refused.value.reason) == (4401, "TOKEN-INVALID")
        unrenewed = PythonPeer(server.ws, "bot", "pat", token=mint(sub="bot", exp=int(time.time()) - 1))
        with pytest.raises(SignalingRefused) as refused:
            await asyncio.wait_for(unrenewed.run(), 10)
        assert refused.value.reason == "TOKEN-EXPIRED"
        peer = PythonPeer(server.ws, "bot", "pat", token=mint(sub="bot", exp=int(time.time()) + 2), renew_token=renew)
        runner = asyncio.ensure_future(peer.run())
        try:
            await asyncio.wait_for(peer.signaling_open.wait(), 10)
            await asyncio.sleep(2.5)  # its token has expired; the open socket stays
            assert peer.signaling_open.is_set() and not asked
            await peer._reopen_signaling()  # the network drops it: it must come back
            assert peer.signaling_open.is_set() and len(asked) == 1
        finally:
            await peer.stop()
            await runner

    with ServerProcess(env=env) as server:
        asyncio.run(scenario(server))
