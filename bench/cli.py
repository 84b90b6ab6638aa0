"""Benchmark webrtc_app against the PeerJS server: relay, call set-up, idle sockets, capacity, reconnect storm.

    python bench/run.py                        # the full suite (~12 minutes), writes docs/benchmarks.md
    python bench/run.py --quick                # a smoke check (~1-3 minutes), writes only bench/out/
    python bench/run.py --rev HEAD --rev HEAD~1  # two revisions side by side (and PeerJS)
    python bench/run.py --cluster              # relay across two nodes joined by Redis, against one node

docs/benchmarks.md says what each workload does, how each figure is computed, and the options.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from bench import BENCH_DIR, BenchError, log
from bench.config import CLUSTER_VARIANTS, DEFAULT_WORKLOADS, PEERJS, SCALING, SERVERS, WORKLOADS, build_config
from bench.environment import install_node_packages, machine_facts, raise_open_files, revisions, tree_state
from bench.hundred import run_hundred
from bench.processes import MissingProgram, RedisServer, find_program
from bench.suite import run_cluster_suite, run_suite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; docs/benchmarks.md lists the useful options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--quick", action="store_true", help="small sizes and 1 round (~1-3 minutes); does not write the docs")
    add("--rounds", type=int, help="rounds per server (default 3, --cluster 5; quick 1)")
    add("--pairs", type=int, help="relay: caller/callee pairs (default 50)")
    add("--messages", type=int, help="relay: measured messages per caller (default 1000)")
    add("--window", type=int, default=20, help="relay: unacknowledged messages per caller (default 20)")
    add("--calls", type=int, help="calls: measured calls (default 1000)")
    add("--call-concurrency", type=int, default=50, help="calls: calls at a time (default 50)")
    add("--idle-steps", help="idle: socket counts to step through (default 4000,10000)")
    add("--idle-seconds", type=float, help="idle: hold window for the CPU figure (default 40 = two ping periods)")
    add("--open-concurrency", type=int, default=50, help="idle: handshakes in flight (default 50)")
    add("--workloads", default=",".join(DEFAULT_WORKLOADS), help=f"a subset of {','.join(WORKLOADS)} ('none': profile only)")
    add("--calls-loadgens", type=int, default=1, help="calls: load generators side by side, the calls split (default 1)")
    add("--relay-loadgens", type=int, default=1, help="relay: load generators side by side, the pairs split (default 1)")
    add("--loadgen-cpus", help="CPUs the load generators of a group are pinned to in turn, e.g. 1,2,3 (default: CPU 1)")
    add("--capacity-sockets", type=int, help="capacity: sockets held (default: as many as webrtc_app's descriptors allow)")
    add("--capacity-seconds", type=float, help="capacity: hold window (default 60 s: three heartbeat rounds)")
    add("--capacity-overflow", type=int, help="capacity: sockets opened beyond the limit after the hold (default 200)")
    add("--storm-sockets", type=int, help="storm: sockets connected when the server restarts (default 20000)")
    add("--storm-timeout", type=float, default=120, help="storm: longest wait for every socket to come back (s)")
    add("--servers", default=",".join(SERVERS), help="a subset of webrtc_app,peerjs")
    add("--no-profile", action="store_true", help="skip the py-spy profile")
    add("--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)")
    add("--max-other-cpu", type=float, default=20, help="redo a measurement disturbed by more than this %% of a core (20)")
    add("--retries", type=int, default=2, help="how many times a disturbed measurement is redone (default 2)")
    add("--no-pin", action="store_true", help="do not pin the server and the load generator to CPUs")
    add("--write-docs", action="store_true", help="write docs/benchmarks.md even with --quick or a subset")
    add("--no-docs", action="store_true", help="never write docs/benchmarks.md")
    add("--npm-dir", help="reuse this folder for the npm installs (default: a temporary folder, removed after)")
    add("--peer-spec", default="peer@^1", help="npm spec of the PeerJS server (default peer@^1)")
    add("--python", help="Python that runs webrtc_app (default: this one)")
    add(
        "--rev",
        action="append",
        help="benchmark this git revision (exported with git archive) instead of the working tree; given again, "
        "each further revision is measured in the same rounds beside the first, as webrtc_app@<short sha>",
    )
    add("--out", default=os.path.join(BENCH_DIR, "out"), help="folder for logs, JSON results and profiles")
    add("--cluster", action="store_true", help="only the relay across two nodes joined by Redis, and --scaling")
    add("--hundred", action="store_true", help="only 100,000 sockets on --processes workers, then a rolling restart")
    add("--hundred-sockets", type=int, help="--hundred: sockets (default 100000)")
    add("--hundred-workers", type=int, help="--hundred: worker processes (default 8)")
    add("--hundred-hold", type=float, help="--hundred: seconds they are held with heartbeats (default 60)")
    add("--hundred-no-restart", action="store_true", help="--hundred: hold them, and no rolling restart")
    add("--redis-server", help="the redis-server binary (default: on PATH, or /usr/bin/redis-server)")
    add("--cluster-layout", choices=("apart", "together"), default="apart", help="--cluster: one node per CPU, or both on CPU 0")
    add("--cluster-variants", default=",".join(CLUSTER_VARIANTS), help="--cluster: a subset of single,single_redis,cluster")
    add("--scaling", default=",".join(map(str, SCALING)), help="--cluster: webrtc_app --processes N for each N (none: skip)")
    args = parser.parse_args(argv)
    unknown = set(args.workloads.split(",")) - {*WORKLOADS, "cluster", "none", ""}
    if unknown:
        parser.error(f"--workloads: unknown {','.join(sorted(unknown))} (choose from {','.join(WORKLOADS)})")
    if args.calls_loadgens < 1 or args.relay_loadgens < 1:
        parser.error("--calls-loadgens and --relay-loadgens: 1 or more")
    if args.workloads == "cluster":
        args.cluster = True
    elif "cluster" in args.workloads.split(","):
        parser.error("--workloads cluster runs alone (it is the same as --cluster)")
    return args


def run(args: argparse.Namespace, command: str) -> int:
    """A whole run: set up (folders, npm packages, the revisions), the suite, then clean up."""
    cfg = build_config(args)
    cfg.command, cfg.started, cfg.stamp = command, time.monotonic(), time.strftime("%Y%m%d-%H%M%S")
    nofile = raise_open_files(max(cfg.idle_steps))
    if cfg.loadgen_cpu is not None:
        os.sched_setaffinity(0, {cfg.loadgen_cpu})  # the driver stays off the server's CPU
    cfg.out_dir = os.path.abspath(args.out)
    cfg.log_dir = os.path.join(cfg.out_dir, f"logs-{cfg.stamp}")
    os.makedirs(cfg.log_dir, exist_ok=True)
    npm = shutil.which("npm")
    if not npm:
        raise BenchError("npm is required")
    temporary: list[str] = []
    if args.npm_dir:
        cfg.npm_dir = os.path.abspath(args.npm_dir)
    else:
        cfg.npm_dir = tempfile.mkdtemp(prefix="webrtc-bench-npm-")
        temporary.append(cfg.npm_dir)
    try:
        if cfg.cluster or args.hundred:  # before anything is installed
            try:
                cfg.redis_server = find_program("redis-server", RedisServer.install, cfg.redis_server or None)
            except MissingProgram:
                raise BenchError(
                    f"redis-server not found ({cfg.redis_server or 'not on PATH, nor /usr/bin/redis-server'}): --cluster "
                    "needs it (Debian: apt-get install redis-server; or give --redis-server PATH)"
                ) from None
        cfg.subjects = revisions(args.rev or [], temporary) if "webrtc_app" in cfg.servers or cfg.cluster else []
        cfg.subjects += [PEERJS] if "peerjs" in cfg.servers and not cfg.cluster else []
        tree_before = None if args.rev else tree_state()
        install_node_packages(cfg, npm, None if cfg.cluster or args.hundred else args.peer_spec, "ws@^8")
        facts = machine_facts(cfg)
        facts["open-file limit"] = str(nofile)
        if args.hundred:
            return run_hundred(cfg, args, facts)
        suite = run_cluster_suite if cfg.cluster else run_suite
        return suite(cfg, args, facts, tree_before)
    finally:
        cfg.children.cleanup()
        for folder in temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """``python bench/run.py ARGS``: answers the exit status (1 when the run failed)."""
    args = parse_args(argv)
    command = "python bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else " " + shlex.join(argv or sys.argv[1:]))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        return run(args, command)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: servers and load generators stopped")
        return 130
