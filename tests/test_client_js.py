"""The pages' pure modules (static/js/backoff.js, codecs.js) pass their tests under Node's own
test runner (tests/js/*.test.mjs): no browser, no npm package needed."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from conftest import require

from processes import PROJECT_DIR


def test_the_node_suites_pass():
    node = shutil.which("node")
    require(node, "Node.js (runs tests/js/*.test.mjs)", "apt-get install -y nodejs")
    suites = sorted(glob.glob(os.path.join(PROJECT_DIR, "tests", "js", "*.test.mjs")))
    assert len(suites) >= 2, suites
    result = subprocess.run([node, "--test", *suites], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)  # type: ignore[list-item]
    assert result.returncode == 0, result.stdout + result.stderr
    passed = int(re.search(r"^# pass (\d+)$", result.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert passed >= 8 and re.search(r"^# fail 0$", result.stdout, re.M), result.stdout
