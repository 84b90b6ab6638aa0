"""docs/benchmarks.md keeps the latest full results between markers; a run rewrites only
what is between its own markers, never the hand-written text around them."""

from __future__ import annotations

import os

from bench import PROJECT_DIR

DOCS_FILE = os.path.join(PROJECT_DIR, "docs", "benchmarks.md")
RESULTS_START, RESULTS_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
PROFILE_START, PROFILE_END = "<!-- bench:profile:start -->", "<!-- bench:profile:end -->"
CLUSTER_START, CLUSTER_END = "<!-- bench:cluster:start -->", "<!-- bench:cluster:end -->"


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with ``body`` between the markers, or the marked block appended if they are missing."""
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def _rewrite(blocks: list[tuple[str, str, str]]) -> None:
    with open(DOCS_FILE, encoding="utf-8") as handle:
        text = handle.read()
    for start, end, body in blocks:
        text = replace_between(text, start, end, body)
    with open(DOCS_FILE, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_docs(results_md: str, profile_md: str | None) -> None:
    """The results of webrtc_app against PeerJS, and its profile when there is one."""
    blocks = [(RESULTS_START, RESULTS_END, results_md)]
    if profile_md is not None:
        blocks.append((PROFILE_START, PROFILE_END, profile_md))
    _rewrite(blocks)


def write_cluster_docs(results_md: str) -> None:
    """The results across nodes."""
    _rewrite([(CLUSTER_START, CLUSTER_END, results_md)])
