"""The code stays easy to change: lint, types, the core free of Tornado, and the Tornado
versions the transports need.

Two private names of Tornado are still used, each listed in its module's docstring and checked
at import: ``tornado.util._websocket_mask`` (handlers/speedups.py, the C unmasking) and
``TCPServer._handle_connection`` (handlers/frontdoor.py). So the websocket suites run again
here on the lowest Tornado that pip-requirements.txt allows (the main run uses the highest,
which pip picks): an upgrade that renames them fails here, loudly, instead of in production.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import require

from processes import PROJECT_DIR, clean_environment

#: The suites that drive the websocket protocol: raw frames, relay rules, limits, two nodes.
WEBSOCKET_SUITES = [
    "tests/test_protocol.py",
    "tests/test_raw_frames.py",
    "tests/test_signaling.py",
    "tests/test_hardening.py",
    "tests/test_caller.py",
    "tests/test_reciever.py",
    "tests/test_cluster.py",
]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=PROJECT_DIR, env=env or clean_environment(), capture_output=True, text=True, timeout=timeout
    )


def tool(name: str) -> str:
    """A tool installed beside this Python (the virtual environment's bin/)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    found = path if os.path.exists(path) else shutil.which(name)
    require(found, name, "pip install -r tests/requirements.txt")
    return str(found)


def test_ruff_finds_nothing_and_the_code_is_formatted():
    result = run(tool("ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool("ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_follows_the_server_code():
    # The files and the strictness are in pyproject.toml.
    result = run(tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_few_type_ignores_and_each_says_why():
    found = []
    for folder in ("handlers", "handlers/protocol", "routing", "services"):
        for name in sorted(os.listdir(os.path.join(PROJECT_DIR, folder))):
            if name.endswith(".py"):
                found += [(f"{folder}/{name}", line) for line in read_lines(folder, name) if "type: ignore" in line]
    found += [("webrtc_server.py", line) for line in read_lines("webrtc_server.py") if "type: ignore" in line]
    assert len(found) <= 5, found
    for where, line in found:
        assert re.search(r"type: ignore\[[a-z-]+\]\s+#\s*\S", line), f"{where}: a type: ignore needs a code and a reason: {line}"


def read_lines(*path: str) -> list[str]:
    with open(os.path.join(PROJECT_DIR, *path), encoding="utf-8") as handle:
        return handle.read().splitlines()


def lowest_tornado() -> str:
    text = "\n".join(read_lines("pip-requirements.txt"))
    match = re.search(r"^tornado>=([0-9.]+),<", text, re.M)
    assert match, "pip-requirements.txt must give Tornado a range: tornado>=LOW,<HIGH"
    return match.group(1)


def test_the_protocol_core_does_not_import_tornado():
    result = run(
        sys.executable,
        "-c",
        "import sys, handlers.protocol.connection, handlers.protocol.handshake; print('tornado' in sys.modules)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_transports_refuse_a_tornado_whose_private_names_changed():
    import tornado.util
    from tornado.tcpserver import TCPServer

    from handlers import frontdoor, speedups

    original = tornado.util._websocket_mask
    try:
        del tornado.util._websocket_mask
        with pytest.raises(ImportError, match=r"_websocket_mask.*pip-requirements"):
            speedups._tornado_unmask()
    finally:
        tornado.util._websocket_mask = original
    speedups._tornado_unmask()
    handle = TCPServer._handle_connection
    try:
        del TCPServer._handle_connection
        with pytest.raises(ImportError, match=r"_handle_connection.*pip-requirements"):
            frontdoor.check_tornado()
    finally:
        TCPServer._handle_connection = handle
    frontdoor.check_tornado()
    assert speedups.TORNADO_PRIVATE_NAMES == ("tornado.util._websocket_mask",)


def test_no_module_imports_the_entry_point():
    for folder in ("handlers", "handlers/protocol", "routing", "services"):
        for name in sorted(os.listdir(os.path.join(PROJECT_DIR, folder))):
            if name.endswith(".py"):
                text = "\n".join(read_lines(folder, name))
                assert not re.search(r"^\s*(from|import) webrtc_server\b", text, re.M), f"{folder}/{name}"


def test_websocket_suites_pass_on_the_lowest_tornado_allowed(tmp_path):
    version = lowest_tornado()
    target = tmp_path / f"tornado-{version}"
    install = run(
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--only-binary", ":all:", "--target", str(target), f"tornado=={version}",
    )  # fmt: skip
    require(install.returncode == 0, f"tornado {version} from PyPI", f"pip could not install it: {install.stderr[-500:]}")
    # A second environment: the same packages, with this Tornado first on the path (also for
    # the server processes the suites start).
    env = clean_environment(PYTHONPATH=str(target))
    result = run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *WEBSOCKET_SUITES, env=env, timeout=280)
    assert f"tornado {version}" in result.stdout.splitlines()[:8], result.stdout[:2000]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)
