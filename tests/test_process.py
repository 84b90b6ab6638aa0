"""The real process, started as a user starts it, driven with a plain websocket client."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import webrtc_server
from routing import PEER_UNAVAILABLE_NOTICE

from processes import ServerProcess, free_port, run_cli

POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies")


def post(url: str, body: bytes) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def close_of(ws) -> tuple[int, str]:
    """Read until the server closes ``ws``; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_script_relays_through_the_real_server(server):
    with connect(f"{server.ws}/wscall?id=alice&peer_id=bob") as alice, connect(f"{server.ws}/wscall?id=bob&peer_id=alice") as bob:
        alice.send(json.dumps({"type": "username", "name": "alice", "target": "bob"}))
        assert json.loads(bob.recv(timeout=10)) == {"type": "username", "name": "alice", "target": "bob"}
        bob.send("pong")
        assert alice.recv(timeout=10) == "pong"
    with connect(f"{server.ws}/wscall?id=alice&peer_id=bob") as alice:
        alice.send("anyone?")
        assert alice.recv(timeout=10) == PEER_UNAVAILABLE_NOTICE


def test_bad_request_close_code_reaches_a_plain_client(server):
    with connect(f"{server.ws}/wscall?peer_id=bob") as ws:
        assert close_of(ws) == (4400, "BAD-REQUEST")


def test_sigterm_closes_sockets_with_1001_and_exits_0():
    with ServerProcess() as process, ExitStack() as stack:
        sockets = [stack.enter_context(connect(f"{process.ws}/wscall?id=a{n}&peer_id=b{n}")) for n in range(3)]
        process.wait_for_line(r"101 GET /wscall\?id=a2")
        assert process.stop(signal.SIGTERM) == 0
        for ws in sockets:
            assert close_of(ws) == (1001, "SERVER-SHUTDOWN")
        assert "shutting down: closing 3 socket(s)" in process.output()


def test_sigint_stops_cleanly_too():
    with ServerProcess() as process, connect(f"{process.ws}/wscall?id=a&peer_id=b") as ws:
        process.wait_for_line(r"101 GET /wscall")
        assert process.stop(signal.SIGINT) == 0
        assert close_of(ws) == (1001, "SERVER-SHUTDOWN")
        assert "Traceback" not in process.output()


def test_chosen_port_is_used():
    port = free_port()
    with ServerProcess(port=port) as process:
        assert process.port == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200


def test_random_token_is_announced_but_never_logged(server):
    line = server.wait_for_line("ICE_ACCESS_TOKEN is not set")
    page = urllib.request.urlopen(f"{server.http}/call?id=a&peer_id=b", timeout=10).read().decode()
    token = page.split('"icePass": "', 1)[1].split('"', 1)[0]
    assert post(f"{server.http}/ice_servers", token.encode())[0] == 200
    assert token not in line and token not in server.output()


def test_token_from_a_file_and_policy_from_the_environment(tmp_path):
    token_file = tmp_path / "ice_token"
    token_file.write_text("file-token\n")
    with ServerProcess(
        env={"WEBRTC_ICE_ACCESS_TOKEN_FILE": str(token_file), "WEBRTC_ICE_SERVERS": '[{"urls": "stun:127.0.0.1:1"}]'}
    ) as process:
        assert post(f"{process.http}/ice_servers", b"file-token") == (200, b'[{"urls": "stun:127.0.0.1:1"}]')
        assert post(f"{process.http}/ice_servers", b"other")[0] == 403
        assert "ICE_ACCESS_TOKEN is not set" not in process.output()
    with ServerProcess(env={"WEBRTC_POLICY": "fixed_token", "PYTHONPATH": POLICIES}) as process:
        assert post(f"{process.http}/ice_servers", b"fixed-token-from-policy")[0] == 200


def test_help_lists_the_command_and_options():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "start" in result.stdout
    # The top-level help shows start's options too (the README says it lists them).
    for option in ("--host", "--log-level", "--log-format", "--redis", "--processes", "--version", "start --help"):
        assert option in result.stdout, option
    start_help = run_cli("start", "--help")
    assert start_help.returncode == 0
    for option in ("port", "--host", "--log-level"):
        assert option in start_help.stdout


def test_version_says_the_release_and_what_it_runs_on():
    import platform

    import tornado

    result = run_cli("--version")
    assert result.returncode == 0
    expected = f"webrtc_app {webrtc_server.__version__} (Python {platform.python_version()}, Tornado {tornado.version})"
    assert result.stdout.strip() == expected


def test_json_log_format_writes_one_object_per_line_with_the_access_fields():
    with ServerProcess("--log-format", "json", env={"WEBRTC_ICE_SERVERS": "[]"}) as server:
        with connect(f"{server.ws}/wscall?id=json-alice&peer_id=json-bob&token=secret-looking") as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == PEER_UNAVAILABLE_NOTICE
        lines = [line for line in server.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is a JSON object
    assert all({"time", "level", "logger", "message", "pid"} <= set(entry) for entry in entries)
    listening = next(entry for entry in entries if "listening on" in entry["message"])
    assert listening["level"] == "info" and listening["logger"] == "webrtc_app"
    access = next(entry for entry in entries if entry["logger"] == "tornado.access" and entry.get("status") == 101)
    assert access["method"] == "GET" and access["remote_ip"] == "127.0.0.1" and isinstance(access["ms"], float)
    assert access["uri"] == "/wscall?id=json-alice&peer_id=json-bob&token=***"
    assert "secret-looking" not in "\n".join(lines)
    assert run_cli("start", "0", env={"WEBRTC_LOG_FORMAT": "xml"}).stderr.strip() == (
        "webrtc_server.py: error: invalid LOG_FORMAT 'xml': expected text or json"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "eighty"], "invalid port 'eighty'"),
        (["start", "70000"], "invalid port '70000'"),
        (["start", "8888", "--bogus"], "unrecognized arguments: --bogus"),
        (["start", "8888", "--log-level", "loud"], "invalid choice: 'loud'"),
        (["stop"], "invalid choice: 'stop'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_command_lines_get_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_bad_environment_gets_one_line_and_exit_2():
    result = run_cli("start", "0", env={"WEBRTC_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["webrtc_server.py: error: WEBRTC_PORT: expected an integer, got 'eighty'"]


def test_port_in_use_gets_one_line_and_exit_1(server):
    result = run_cli("start", str(server.port), "--host", "127.0.0.1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{server.port}" in lines[0], result.stderr
