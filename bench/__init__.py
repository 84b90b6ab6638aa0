"""The benchmark suite: webrtc_app against the PeerJS server, and across nodes joined by Redis.

Run it with ``python bench/run.py`` (docs/benchmarks.md says what it measures and how).
One concern per module, in the order a run goes through them:

    run.py            the entry point (``python bench/run.py``)
    cli.py            the command line, and a run from setup to clean-up
    config.py         every option and its default (``Config``)
    environment.py    what is measured and where: npm installs, the revisions (--rev), the machine's facts
    processes.py      the processes it starts (webrtc_app, redis-server): pinned to a CPU, ended whatever happens
    sampling.py       CPU time and memory from /proc, and waiting for a quiet machine
    servers.py        the processes of one measurement (webrtc_app, PeerJS, redis-server), checked as they stop
    loadgen.py        the driver's side of the load generators (loadgen.mjs, loadgen/*.mjs): one or several side by side
    workloads.py      relay, calls and idle against one server: one measurement each
    overload.py       capacity (every socket the descriptors allow) and the reconnect storm, once each
    cluster.py        the relay across nodes joined by a redis-server (``--cluster``), and ``--scaling``
    profiling.py      py-spy on webrtc_app, and its samples aggregated
    table.py          the one table model of the results: rows of figures over columns of rounds, medians, ratios, †
    report.py         every table of the results as markdown, from that model
    chart.py          the headline comparison as an SVG of bars (docs/benchmarks.svg)
    suite.py          the rounds (A B A B ...) and where the results are written (bench/out/, docs/benchmarks.md)

bench/processes.py starts and stops webrtc_app and redis-server for the tests too (tests/processes.py).
"""

from __future__ import annotations

import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(BENCH_DIR)


class BenchError(Exception):
    """A benchmark could not run or its counts did not add up: the run stops."""


def log(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
