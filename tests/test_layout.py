"""Promises about the code's shape that the README makes."""

from __future__ import annotations

import subprocess
import sys

from processes import PROJECT_DIR, clean_environment


def run_python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_DIR, env=clean_environment(), capture_output=True, text=True, timeout=timeout
    )


def test_routing_does_not_import_tornado():
    result = run_python("-c", "import sys, routing, routing.memory; print('tornado' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_originals_test_command_still_runs_the_ported_tests():
    result = run_python("-m", "tornado.testing", "discover", "tests/")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stderr.strip().splitlines()
    assert summary[-1] == "OK", result.stderr[-3000:]
    ran = next(line for line in summary if line.startswith("Ran "))
    assert int(ran.split()[1]) >= 20  # test_caller + test_reciever at least
