"""The README's commands are the ones CI runs."""

from __future__ import annotations

import os
import re

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path: str) -> str:
    with open(os.path.join(PROJECT_DIR, *path), encoding="utf-8") as handle:
        return handle.read()


def commands_under(heading: str) -> list[str]:
    section = read("README.md").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section, re.S)


def test_ci_runs_exactly_the_readme_test_command():
    (command,) = commands_under("Run the tests")
    ci_lines = [line.strip() for line in read(".ci", "run").splitlines()]
    assert command in ci_lines


def test_readme_start_command_starts_the_server():
    (command,) = commands_under("Start the server")
    assert command.endswith("pip install -r pip-requirements.txt && python webrtc_server.py start 8888")


def test_operations_shows_the_coturn_settings_the_network_tests_use():
    from netns import COTURN_SETTINGS

    section = read("docs", "operations.md").split("## Behind NAT and firewalls\n", 1)[1].split("\n## ", 1)[0]
    documented = {line.split("=", 1)[0] for block in re.findall(r"```\n(.+?)\n```", section, re.S) for line in block.splitlines()}
    used = {setting.split("=", 1)[0] for setting in COTURN_SETTINGS}
    assert used - {"no-tls", "no-dtls"} <= documented, used - documented  # the lab has no TLS; the docs show it


def test_the_layout_table_names_files_that_exist():
    table = read("README.md").split("## Layout\n", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows
    for row in rows:
        where, what = row.split("|")[1:3]
        folders = [name.strip("`") for name in re.findall(r"`[^`]+`", where)]
        for folder in folders:
            assert os.path.exists(os.path.join(PROJECT_DIR, folder)), folder
        # Every file the row names, at the top or anywhere under the row's folders.
        present = {
            os.path.relpath(os.path.join(top, file), os.path.join(PROJECT_DIR, folder))
            for folder in folders
            for top, _, files in os.walk(os.path.join(PROJECT_DIR, folder))
            for file in files
        }
        for name in re.findall(r"`([\w/.-]+\.(?:py|js|mjs|txt|toml|json))`", what):
            found = os.path.exists(os.path.join(PROJECT_DIR, name)) or any(
                path == name or path.endswith("/" + name) for path in present
            )
            assert found, (where, name)
