"""Benchmark webrtc_app against the PeerJS server: relay, call set-up, idle sockets, capacity, reconnect storm.

    python bench/run.py            # the full suite (~10 minutes), writes docs/benchmarks.md
    python bench/run.py --quick    # a smoke check (~1-2 minutes), writes only bench/out/
    python bench/run.py --cluster  # relay across two nodes joined by Redis, against one node

It installs PeerJS (npm package ``peer``) and ``ws`` into a temporary folder, then runs
``--rounds`` rounds; in each round every workload runs against webrtc_app and then PeerJS
(A B A B ...), each on a freshly started server pinned to CPU 0 while the load generator
(bench/loadgen.mjs, Node.js) runs on CPU 1. It takes the median of every figure over the
rounds and the ratio webrtc_app/PeerJS, profiles webrtc_app under the relay load with
py-spy, and writes the results between the markers of docs/benchmarks.md.
docs/benchmarks.md says what each workload does and how each figure is computed.

``--cluster`` measures webrtc_app's Redis backplane instead (no PeerJS): the relay workload
with its callers on one node and its callees on another, both joined through a
redis-server of its own, in alternate rounds with one node alone (and one node with Redis),
and with one server of 1, 2 and 4 worker processes sharing its port (``--scaling``); its
results go between the ``bench:cluster`` markers of docs/benchmarks.md.
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
from bench.config import CLUSTER_VARIANTS, DEFAULT_WORKLOADS, SCALING, SERVERS, WORKLOADS, build_config
from bench.environment import (
    export_revision,
    install_node_packages,
    machine_facts,
    raise_open_files,
    resolve_revision,
    tree_state,
)
from bench.processes import MissingProgram, RedisServer, find_program
from bench.suite import run_cluster_suite, run_suite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; docs/benchmarks.md lists the useful options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 round (~1-2 minutes); does not write the docs")
    parser.add_argument("--rounds", type=int, help="rounds per server (default 3, --cluster 5; quick 1)")
    parser.add_argument("--pairs", type=int, help="relay: caller/callee pairs (default 50)")
    parser.add_argument("--messages", type=int, help="relay: measured messages per caller (default 1000)")
    parser.add_argument("--window", type=int, default=20, help="relay: unacknowledged messages per caller (default 20)")
    parser.add_argument("--calls", type=int, help="calls: measured calls (default 1000)")
    parser.add_argument("--call-concurrency", type=int, default=50, help="calls: calls at a time (default 50)")
    parser.add_argument("--idle-steps", help="idle: socket counts to step through (default 4000,10000)")
    parser.add_argument("--idle-seconds", type=float, help="idle: hold window for the CPU figure (default 40 = two ping periods)")
    parser.add_argument("--open-concurrency", type=int, default=50, help="idle: handshakes in flight (default 50)")
    parser.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default {','.join(DEFAULT_WORKLOADS)}; 'none': profile only)",
    )
    parser.add_argument(
        "--calls-loadgens",
        type=int,
        default=1,
        help="calls: load generator processes side by side, the calls split (default 1: on one CPU two are slower)",
    )
    parser.add_argument(
        "--relay-loadgens", type=int, default=1, help="relay: load generator processes, the pairs split (default 1)"
    )
    parser.add_argument(
        "--loadgen-cpus",
        help="CPUs the load generators of a group are pinned to in turn, e.g. 1,2,3 on a bigger machine "
        "(default: the load generator's CPU, 1)",
    )
    overload = parser.add_argument_group("overload (capacity and storm, measured once per run)")
    overload.add_argument(
        "--capacity-sockets", type=int, help="capacity: sockets held (default: as many as webrtc_app's descriptors allow)"
    )
    overload.add_argument("--capacity-seconds", type=float, help="capacity: hold window (default 60 s: three heartbeat rounds)")
    overload.add_argument(
        "--capacity-overflow", type=int, help="capacity: sockets opened beyond the limit after the hold (default 200)"
    )
    overload.add_argument("--storm-sockets", type=int, help="storm: sockets connected when the server restarts (default 20000)")
    overload.add_argument(
        "--storm-timeout", type=float, default=120, help="storm: longest wait for every socket to come back (s)"
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of webrtc_app,peerjs")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=20,
        help="redo a measurement during which other processes used more than this %% of a core (default 20)",
    )
    parser.add_argument("--retries", type=int, default=2, help="how many times a disturbed measurement is redone (default 2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the load generator to CPUs")
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md even with --quick or a subset")
    parser.add_argument("--no-docs", action="store_true", help="never write docs/benchmarks.md")
    parser.add_argument("--npm-dir", help="reuse this folder for the npm installs (default: a temporary folder, removed after)")
    parser.add_argument("--peer-spec", default="peer@^1", help="npm spec of the PeerJS server (default peer@^1)")
    parser.add_argument("--python", help="Python that runs webrtc_app (default: this one)")
    parser.add_argument(
        "--rev",
        help="benchmark this git revision of webrtc_app (exported with git archive to a temporary folder) "
        "instead of the working tree",
    )
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "out"), help="folder for logs, JSON results and profiles")
    cluster = parser.add_argument_group("across nodes (the Redis backplane)")
    cluster.add_argument(
        "--cluster",
        action="store_true",
        help="only the relay across two webrtc_app nodes joined by a redis-server of its own, in alternate rounds "
        "with one node (--workloads cluster says the same); writes the bench:cluster block of the docs",
    )
    cluster.add_argument(
        "--redis-server", help="the redis-server binary (default: redis-server on PATH, or /usr/bin/redis-server)"
    )
    cluster.add_argument(
        "--cluster-layout",
        choices=("apart", "together"),
        default="apart",
        help="apart (default): node 1 and redis-server on CPU 0, node 2 and the load generator on CPU 1; "
        "together: both nodes on CPU 0, redis-server and the load generator on CPU 1",
    )
    cluster.add_argument(
        "--cluster-variants",
        default=",".join(CLUSTER_VARIANTS),
        help="what to alternate with (default single,single_redis,cluster: one node alone, one node with Redis, "
        "two nodes through Redis)",
    )
    cluster.add_argument(
        "--scaling",
        default=",".join(str(n) for n in SCALING),
        help="with --cluster: also the relay on one webrtc_app --processes N sharing one port, for each N of this "
        "list (default 1,2,4; 'none' skips it)",
    )
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
    """A whole run: set up (folders, npm packages, the revision), the suite, then clean up."""
    started = time.monotonic()
    cfg = build_config(args)
    nofile = raise_open_files(max(cfg.idle_steps))
    if cfg.loadgen_cpu is not None:
        os.sched_setaffinity(0, {cfg.loadgen_cpu})  # the driver stays off the server's CPU
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg.out_dir = os.path.abspath(args.out)
    cfg.log_dir = os.path.join(cfg.out_dir, f"logs-{stamp}")
    os.makedirs(cfg.log_dir, exist_ok=True)
    npm = shutil.which("npm")
    if not npm:
        raise BenchError("npm is required")
    temporary = None
    if args.npm_dir:
        cfg.npm_dir = os.path.abspath(args.npm_dir)
    else:
        temporary = cfg.npm_dir = tempfile.mkdtemp(prefix="webrtc-bench-npm-")
    server_tmp = None
    try:
        if cfg.cluster:  # before anything is installed
            try:
                cfg.redis_server = find_program("redis-server", RedisServer.install, cfg.redis_server or None)
            except MissingProgram:
                raise BenchError(
                    f"redis-server not found ({cfg.redis_server or 'not on PATH, nor /usr/bin/redis-server'}): --cluster "
                    "needs it (Debian: apt-get install redis-server; or give --redis-server PATH)"
                ) from None
        if args.rev:
            cfg.rev = resolve_revision(args.rev)
            server_tmp = cfg.server_dir = tempfile.mkdtemp(prefix="webrtc-bench-server-")
            export_revision(cfg.rev, server_tmp)
        tree_before = None if args.rev else tree_state()
        install_node_packages(cfg, npm, None if cfg.cluster else args.peer_spec, "ws@^8")
        facts = machine_facts(cfg)
        facts["open-file limit"] = str(nofile)
        suite = run_cluster_suite if cfg.cluster else run_suite
        return suite(cfg, args, command, facts, stamp, started, tree_before)
    finally:
        cfg.children.cleanup()
        for folder in (temporary, server_tmp):
            if folder:
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
