"""supervisord with the repository's own supervisord.conf runs the server in the background."""

from __future__ import annotations

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


def with_hard_limit(hard: int):
    """A preexec_fn: this hard descriptor limit (and a soft one of at most 1,024), as on a
    machine that allows no more."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))

    return limit


@pytest.mark.parametrize("hard", [20000, 4096])
def test_the_readme_command_runs_the_server_in_the_background_under_an_ordinary_hard_limit(hard):
    # Exactly the README's `WEBRTC_PORT=8888 supervisord` in the project folder (on a free
    # port, listening on loopback only), on a machine whose hard limit is `hard`.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        pytest.skip(f"this machine's hard descriptor limit is below {hard}")
    port = free_port()
    # The venv's python must be the one supervisord's `python` finds.
    env = clean_environment(WEBRTC_PORT=str(port), WEBRTC_HOST="127.0.0.1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if os.path.exists(SOCKET) and ctl(env, "pid").returncode == 0:
        pytest.fail("a supervisord started from this folder is already running: stop it (supervisorctl shutdown) first")
    log_path = os.path.join(PROJECT_DIR, "webrtc.log")
    logged_before = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    started = subprocess.run(
        [tool("supervisord")],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=with_hard_limit(hard),
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: answers(url), 20, "the server to answer")
        wait_until(lambda: "RUNNING" in ctl(env, "status", "webrtc").stdout, 20, "RUNNING status")
        stopped = ctl(env, "stop", "webrtc")
        assert "webrtc: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not answers(url)
        assert "STOPPED" in ctl(env, "status", "webrtc").stdout
        with open(log_path, encoding="utf-8") as log:
            log.seek(logged_before)
            text = log.read()
        assert f"listening on http://127.0.0.1:{port}" in text
        # The server raised its soft limit to the hard one it inherited, and holds that many
        # sockets less the reserve.
        expected = min(settings.MAX_SOCKETS, hard - settings.RESERVED_DESCRIPTORS)
        assert f"(hard {hard}): up to {expected} signaling sockets" in text, text
        assert text.rstrip().endswith("stopped")  # a clean SIGTERM shutdown, not a kill
    finally:
        ctl(env, "shutdown")
        wait_until(lambda: not os.path.exists(SOCKET), 20, "supervisord to exit")
