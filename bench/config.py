"""Every option of a run and its default, in one place: ``build_config()`` turns the command
line (cli.py) into a ``Config``, which every other module reads."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from bench import PROJECT_DIR, BenchError, log
from bench.processes import Children

SERVERS = ("webrtc_app", "peerjs")
WORKLOADS = ("relay", "calls", "idle", "capacity", "storm")
#: Measured in every round, webrtc_app then PeerJS; the others (overload.py) once per run.
ROUND_WORKLOADS = ("relay", "calls", "idle")
#: What a run measures without --workloads (all: the whole run stays under about 15 minutes).
DEFAULT_WORKLOADS = WORKLOADS

#: What --cluster alternates, in this order in every round (docs/benchmarks.md, "Across nodes").
CLUSTER_VARIANTS = ("single", "single_redis", "cluster")
CLUSTER_LABELS = {"single": "1 node", "single_redis": "1 node + Redis", "cluster": "2 nodes via Redis"}
#: What --scaling measures by default: webrtc_app --processes N on one port (cluster.py).
SCALING = (1, 2, 4)
#: The Redis key prefix of the backplane (settings.REDIS_PREFIX), which the scaling variant reads.
REDIS_PREFIX = "webrtc:"


def scaling_label(processes: int) -> str:
    """How the results name the scaling measurement of ``processes`` workers (scaling_key() its key)."""
    return f"{processes} process{'es' if processes > 1 else ''}"


def scaling_key(processes: int) -> str:
    return f"procs{processes}"


# The environment webrtc_app runs with (docs/benchmarks.md, "Servers"), and no other WEBRTC_*.
WEBRTC_ENV = {
    "WEBRTC_RATE_LIMIT": "0",
    "WEBRTC_STATUS_LOG_INTERVAL": "0",
    "WEBRTC_MAX_SOCKETS": "100000",
    "WEBRTC_ICE_SERVERS": "[]",
    "WEBRTC_WS_PING_INTERVAL": "20",
    "WEBRTC_WS_PING_TIMEOUT": "10",
    "WEBRTC_ICE_ACCESS_TOKEN": "benchmark",  # only silences the "random token" warning
}


@dataclass
class Subject:
    """A server under test: a webrtc_app revision (the first is "webrtc_app", each further one
    "webrtc_app@<short sha>"), or PeerJS. ``key`` names its results and ``tag`` its measurements."""

    key: str
    label: str
    kind: str  # "webrtc_app" or "peerjs"
    tag: str  # "w" for the first revision, "w1", "w2", ... for the others, "p" for PeerJS
    folder: str = PROJECT_DIR  # where webrtc_app runs from: the working tree, or the export of --rev
    rev: str = ""  # as --rev gave it ("" for the working tree)
    commit: str = ""  # its full commit id ("" for the working tree)


PEERJS = Subject("peerjs", "PeerJS", "peerjs", "p")


@dataclass
class Config:
    """A run's sizes and settings, and the little state the whole run shares (warnings, children)."""

    rounds: int
    quick: bool
    relay: dict[str, Any]
    calls: dict[str, Any]
    idle: dict[str, Any]
    idle_seconds: float
    settle_seconds: float
    profile_relay: dict[str, Any]
    profile_rate: int
    servers: tuple[str, ...]
    workloads: tuple[str, ...]
    python: str
    node: str
    npm_dir: str = ""
    subjects: list[Subject] = field(default_factory=list)  # in the order of each round (A B C ...)
    log_dir: str = ""
    out_dir: str = ""
    server_cpu: int | None = 0
    loadgen_cpu: int | None = 1
    start_timeout: float = 30
    quiet_pct: float = 10.0
    quiet_wait: float = 30.0
    quiet_budget: float = 240.0
    max_other_cpu: float = 20.0
    retries: int = 2
    event_timeout: float = 300
    warnings: list[str] = field(default_factory=list)
    children: Children = field(default_factory=Children)
    command: str = ""  # as the results quote it
    started: float = 0.0  # time.monotonic() at the start of the run
    stamp: str = ""  # of its files in bench/out/
    # --cluster: the Redis backplane (cluster.py)
    cluster: bool = False
    redis_server: str = ""
    layout: str = "apart"
    cluster_cpus: dict[str, int | None] = field(default_factory=dict)
    cluster_variants: tuple[str, ...] = ()
    cluster_light: dict[str, Any] = field(default_factory=dict)
    # --cluster --scaling: worker counts of one webrtc_app --processes N, and the CPUs that
    # every process of that variant may run on (all of them: the workers are not pinned).
    scaling: tuple[int, ...] = ()
    scaling_cpus: tuple[int, ...] | None = None
    # Several load generators side by side (loadgen.py), and the overload workloads (overload.py)
    calls_loadgens: int = 1
    relay_loadgens: int = 1
    loadgen_cpus: tuple[int | None, ...] = ()  # empty: loadgen_cpu
    capacity: dict[str, Any] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)

    @property
    def revisions(self) -> list[Subject]:
        """The webrtc_app revisions measured (the first is "webrtc_app")."""
        return [s for s in self.subjects if s.kind == "webrtc_app"]

    @property
    def idle_steps(self) -> list[int]:
        """The socket counts the idle workload steps through."""
        return [int(s) for s in str(self.idle["steps"]).split(",")]

    def warn(self, warning: str) -> None:
        """A warning for the results (once each), logged now."""
        if warning not in self.warnings:
            self.warnings.append(warning)
            log(f"WARNING: {warning}")


def build_config(args: argparse.Namespace) -> Config:
    """The Config of a run from its command line (cli.parse_args)."""
    quick = args.quick
    relay = {
        "pairs": args.pairs or (10 if quick else 50),
        "messages": args.messages or (300 if quick else 1000),
        "warmup": 30 if quick else 100,
        "window": args.window,
        "size": 200,
    }
    calls = {
        "calls": args.calls or (200 if quick else 1000),
        "warmup-calls": 20 if quick else 50,
        "concurrency": args.call_concurrency,
        "candidates": 9,
    }
    idle = {"steps": args.idle_steps or ("400,1000" if quick else "4000,10000"), "open-concurrency": args.open_concurrency}
    # Long enough for a few thousand samples at webrtc_app's current pace (~100k msgs/s sampled).
    profile_relay = {**relay, "messages": relay["messages"] * (1 if quick else 5)}
    cpus = os.sched_getaffinity(0)
    pin = not args.no_pin and len(cpus) >= 2
    server_cpu, loadgen_cpu = (sorted(cpus)[0], sorted(cpus)[1]) if pin else (None, None)
    node = shutil.which("node")
    if not node:
        raise BenchError("node (Node.js 18+) is required")
    # Across nodes (--cluster), by layout: "apart" gives each node a core, as the single node has,
    # shared only with a light process (Redis on node 1's, the load generator and the driver on
    # node 2's); "together" puts both nodes on CPU 0 (webrtc_app has one core in every variant).
    c0, c1 = server_cpu, loadgen_cpu
    node2, redis = (c1, c0) if args.cluster_layout == "apart" else (c0, c1)
    cluster_cpus = {"single": c0, "node1": c0, "node2": node2, "redis": redis, "loadgen": c1}
    scaling = parse_scaling(args.scaling)
    variants = tuple(v for v in args.cluster_variants.split(",") if v)
    unknown = set(variants) - set(CLUSTER_VARIANTS)
    if unknown or "cluster" not in variants:
        raise BenchError(f"--cluster-variants: a subset of {','.join(CLUSTER_VARIANTS)} that includes cluster")
    return Config(
        # --cluster: 5 rounds, as its measurements are short and this machine has slow spells
        # of a few seconds that hit single measurements (docs/benchmarks.md, "Across nodes").
        rounds=args.rounds or (1 if quick else 5 if args.cluster else 3),
        quick=quick,
        relay=relay,
        calls=calls,
        idle=idle,
        idle_seconds=args.idle_seconds if args.idle_seconds is not None else (5 if quick else 40),
        settle_seconds=1 if quick else 2,
        profile_relay=profile_relay,
        profile_rate=args.profile_rate,
        servers=tuple(args.servers.split(",")),
        workloads=tuple(w for w in args.workloads.split(",") if w and w != "none"),
        python=args.python or sys.executable,
        node=node,
        server_cpu=server_cpu,
        loadgen_cpu=loadgen_cpu,
        max_other_cpu=args.max_other_cpu,
        retries=args.retries,
        quiet_wait=5 if quick else 30,
        cluster=args.cluster,
        redis_server=args.redis_server or "",
        layout=args.cluster_layout,
        cluster_cpus=cluster_cpus,
        cluster_variants=tuple(v for v in CLUSTER_VARIANTS if v in variants),
        # Light load: a few pairs, one message in flight each, so a round trip is not queueing.
        cluster_light={**relay, "pairs": 5, "messages": 200 if quick else 1000, "warmup": 20 if quick else 50, "window": 1},
        scaling=scaling,
        # The driver pins itself to the load generator's CPU and its children inherit that:
        # the scaling variant's processes are given every CPU explicitly.
        scaling_cpus=tuple(sorted(cpus)) if pin else None,
        calls_loadgens=args.calls_loadgens,
        relay_loadgens=args.relay_loadgens,
        loadgen_cpus=tuple(int(c) for c in args.loadgen_cpus.split(",")) if args.loadgen_cpus and pin else (),
        capacity={  # sockets 0: as many as webrtc_app's descriptors allow
            "sockets": args.capacity_sockets if args.capacity_sockets is not None else (1000 if quick else 0),
            # Several heartbeat rounds (WS_PING_INTERVAL 20 s: a 60 s hold sees about 3).
            "seconds": args.capacity_seconds if args.capacity_seconds is not None else (5 if quick else 60),
            "overflow": args.capacity_overflow if args.capacity_overflow is not None else (50 if quick else 200),
            "open-concurrency": args.open_concurrency,
            "per-loadgen": 7000,  # sockets per load generator at most: its descriptors, its source address's ports
        },
        storm={
            "sockets": args.storm_sockets or (300 if quick else 20000),
            "timeout": args.storm_timeout,
            "open-concurrency": args.open_concurrency,
            "per-loadgen": 7000,
        },
    )


def parse_scaling(text: str) -> tuple[int, ...]:
    """--scaling: "1,2,4" -> (1, 2, 4); "none" or "" -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        counts = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise BenchError(f"--scaling: comma-separated process counts such as 1,2,4, or none; got {text!r}") from None
    if not counts or any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise BenchError(f"--scaling: distinct process counts of 1 or more, or none; got {text!r}")
    return tuple(sorted(counts))
