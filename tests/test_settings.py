"""settings.py: defaults, environment overrides, secrets from files, the random token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import settings

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh_settings(env: dict[str, str], code: str) -> str:
    """Import settings in a new interpreter with exactly ``env`` and print ``code``'s value."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBRTC_")}
    result = subprocess.run(
        [sys.executable, "-c", f"import settings, json; print(json.dumps({code}))"],
        cwd=PROJECT_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def test_every_option_has_an_environment_variable():
    names = settings.option_names()
    assert {"ICE_URL", "ICE_ACCESS_TOKEN", "iceServers", "POLICY", "ADMIN_TOKEN", "PORT"} <= set(names)
    assert settings.env_name("iceServers") == "WEBRTC_ICE_SERVERS"
    assert settings.env_name("PORT") == "WEBRTC_PORT"


def test_environment_values_take_the_type_of_the_default():
    values = settings.from_environment(
        {
            "WEBRTC_PORT": "9000",
            "WEBRTC_WS_PING_INTERVAL": "2.5",
            "WEBRTC_ICE_SERVERS": '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "c"}]',
            "WEBRTC_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "WEBRTC_ICE_URL": "/ice",
            "UNRELATED": "x",
        }
    )
    assert values == {
        "PORT": 9000,
        "WS_PING_INTERVAL": 2.5,
        "iceServers": [{"urls": "turn:turn.example:3478", "username": "u", "credential": "c"}],
        "ALLOWED_ORIGINS": ["https://a.example", "https://b.example"],
        "ICE_URL": "/ice",
    }
    assert settings.from_environment({"WEBRTC_ALLOWED_ORIGINS": '["*"]'}) == {"ALLOWED_ORIGINS": ["*"]}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBRTC_PORT": "eighty"}, "WEBRTC_PORT: expected an integer"),
        ({"WEBRTC_SHUTDOWN_TIMEOUT": "soon"}, "WEBRTC_SHUTDOWN_TIMEOUT: expected a number"),
        ({"WEBRTC_ICE_SERVERS": "[{"}, "WEBRTC_ICE_SERVERS: invalid JSON"),
        ({"WEBRTC_ICE_SERVERS": '{"urls": "stun:x"}'}, "WEBRTC_ICE_SERVERS: expected a JSON list"),
        ({"WEBRTC_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "WEBRTC_ADMIN_TOKEN_FILE: cannot read /nonexistent/token"),
    ],
)
def test_bad_environment_values_are_explained(env, message):
    with pytest.raises(ValueError, match=message):
        settings.from_environment(env)


def test_secrets_can_come_from_files(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-a-file\n")
    servers_file = tmp_path / "ice.json"
    servers_file.write_text(json.dumps([{"urls": "stun:x"}]))
    values = settings.from_environment(
        {"WEBRTC_ICE_ACCESS_TOKEN_FILE": str(token_file), "WEBRTC_ICE_SERVERS_FILE": str(servers_file)}
    )
    assert values == {"ICE_ACCESS_TOKEN": "from-a-file", "iceServers": [{"urls": "stun:x"}]}
    # The variable itself wins over its _FILE twin.
    assert settings.from_environment({"WEBRTC_ADMIN_TOKEN": "direct", "WEBRTC_ADMIN_TOKEN_FILE": str(token_file)}) == {
        "ADMIN_TOKEN": "direct"
    }


def test_without_a_configured_token_each_start_generates_its_own():
    code = "[settings.ICE_ACCESS_TOKEN, settings.ICE_ACCESS_TOKEN_GENERATED]"
    first, generated = fresh_settings({}, code)
    second, _ = fresh_settings({}, code)
    assert generated is True
    assert len(first) >= 32 and first != second
    with open(settings.__file__, encoding="utf-8") as source:
        assert first not in source.read()


def test_configured_token_is_used_as_is():
    assert fresh_settings(
        {"WEBRTC_ICE_ACCESS_TOKEN": "mine"}, "[settings.ICE_ACCESS_TOKEN, settings.ICE_ACCESS_TOKEN_GENERATED]"
    ) == ["mine", False]


def test_no_turn_password_is_committed():
    for server in settings.iceServers:
        assert "credential" not in server and "username" not in server


def test_resolve_gives_each_app_its_own_snapshot():
    one = settings.resolve(ADMIN_TOKEN="a")
    two = settings.resolve()
    assert one.ADMIN_TOKEN == "a" and two.ADMIN_TOKEN == settings.ADMIN_TOKEN
    assert one.get_ice_pass is settings.get_ice_pass
    with pytest.raises(TypeError, match="unknown setting"):
        settings.resolve(NO_SUCH_OPTION=1)
    overridden = settings.resolve(ICE_ACCESS_TOKEN="per-app")
    assert overridden.get_ice_pass() == "per-app"
