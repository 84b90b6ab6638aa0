"""supervisord with the repository's own supervisord.conf runs the server in the background."""

from __future__ import annotations

import configparser
import os
import resource
import shutil
import subprocess
import sys
import urllib.request

import pytest

import settings

from processes import PROJECT_DIR, clean_environment, free_port, wait_until

CONF = os.path.join(PROJECT_DIR, "supervisord.conf")
SOCKET = os.path.join(PROJECT_DIR, "supervisor.sock")
BIN = os.path.dirname(sys.executable)


def tool(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("supervisorctl"), "-c", CONF, *args], env=env, capture_output=True, text=True, timeout=30)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def conf_minfds() -> int:
    conf = configparser.RawConfigParser()
    conf.read(CONF)
    return conf.getint("supervisord", "minfds")


def test_supervisord_gives_the_server_descriptors_for_the_default_max_sockets():
    assert conf_minfds() >= settings.MAX_SOCKETS + settings.RESERVED_DESCRIPTORS


def test_supervisord_starts_and_stops_the_server(tmp_path):
    port = free_port()
    # The venv's python must be the one supervisord's `python` finds.
    env = clean_environment(WEBRTC_PORT=str(port), WEBRTC_HOST="127.0.0.1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if os.path.exists(SOCKET) and ctl(env, "pid").returncode == 0:
        pytest.fail("a supervisord started from this folder is already running: stop it (supervisorctl shutdown) first")
    # This machine's hard descriptor limit may be below the conf's minfds (here: 20,000 for
    # every process, root included), and supervisord would refuse to start: ask for what it has.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    minfds = [] if hard == resource.RLIM_INFINITY or hard >= conf_minfds() else ["--minfds", str(hard)]
    started = subprocess.run(
        [
            tool("supervisord"),
            "-c",
            CONF,
            *minfds,
            "-l",
            str(tmp_path / "supervisord.log"),
            "-j",
            str(tmp_path / "supervisord.pid"),
        ],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: answers(url), 20, "the server to answer")
        wait_until(lambda: "RUNNING" in ctl(env, "status", "webrtc").stdout, 20, "RUNNING status")
        stopped = ctl(env, "stop", "webrtc")
        assert "webrtc: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not answers(url)
        assert "STOPPED" in ctl(env, "status", "webrtc").stdout
        with open(os.path.join(PROJECT_DIR, "webrtc.log"), encoding="utf-8") as log:
            text = log.read()
        assert f"listening on http://127.0.0.1:{port}" in text
        # The server runs with supervisord's descriptors (the soft limit raised to the hard).
        expected = min(settings.MAX_SOCKETS, (conf_minfds() if not minfds else hard) - settings.RESERVED_DESCRIPTORS)
        assert f"up to {expected} signaling sockets" in text
        assert text.rstrip().endswith("stopped")  # a clean SIGTERM shutdown, not a kill
    finally:
        ctl(env, "shutdown")
        wait_until(lambda: not os.path.exists(SOCKET), 20, "supervisord to exit")
