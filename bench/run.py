#!/usr/bin/env python3
"""Benchmark webrtc_app against the PeerJS server: relay, call set-up and idle sockets.

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
redis-server of its own, in alternate rounds with one node alone (and one node with Redis);
its results go between the ``bench:cluster`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(BENCH_DIR)
DOCS_FILE = os.path.join(PROJECT_DIR, "docs", "benchmarks.md")
RESULTS_START, RESULTS_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
PROFILE_START, PROFILE_END = "<!-- bench:profile:start -->", "<!-- bench:profile:end -->"
CLUSTER_START, CLUSTER_END = "<!-- bench:cluster:start -->", "<!-- bench:cluster:end -->"

HZ = os.sysconf("SC_CLK_TCK")
SERVERS = ("webrtc_app", "peerjs")
LABELS = {"webrtc_app": "webrtc_app", "peerjs": "PeerJS"}
WORKLOADS = ("relay", "calls", "idle")
NOFILE = 200_000

# The environment webrtc_app runs with (docs/benchmarks.md, "Servers").
WEBRTC_ENV = {
    "WEBRTC_RATE_LIMIT": "0",
    "WEBRTC_STATUS_LOG_INTERVAL": "0",
    "WEBRTC_MAX_SOCKETS": "100000",
    "WEBRTC_ICE_SERVERS": "[]",
    "WEBRTC_WS_PING_INTERVAL": "20",
    "WEBRTC_WS_PING_TIMEOUT": "10",
    "WEBRTC_ICE_ACCESS_TOKEN": "benchmark",  # only silences the "random token" warning
}


class BenchError(Exception):
    """A benchmark could not run or its counts did not add up: the run stops."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes


_children: list[subprocess.Popen[Any]] = []
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this driver dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(cmd: list[str], cpu: int | None, **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a child (pinned to ``cpu`` with taskset when given) that cleanup() will end."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 10) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; answers the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def cleanup() -> None:
    for proc in list(_children):
        try:
            stop(proc, timeout=5)
        except Exception as exc:  # noqa: BLE001 - cleaning up, keep going
            log(f"could not stop pid {proc.pid}: {exc}")


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ /proc


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        match = re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M)
    if not match:
        raise BenchError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def machine_busy_ticks() -> int:
    """Busy ticks of all CPUs together (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal


@dataclass
class Sample:
    t: float
    server_cpu: int
    loadgen_cpu: int
    machine_busy: int
    rss: int


def sample(server_pid: int, loadgen_pid: int) -> Sample:
    return Sample(time.monotonic(), cpu_ticks(server_pid), cpu_ticks(loadgen_pid), machine_busy_ticks(), rss_kib(server_pid))


def usage(a: Sample, b: Sample) -> dict[str, float]:
    """CPU seconds of the server between two samples, and CPU % of one core for everyone."""
    wall = b.t - a.t
    server = (b.server_cpu - a.server_cpu) / HZ
    loadgen = (b.loadgen_cpu - a.loadgen_cpu) / HZ
    other = max(0.0, (b.machine_busy - a.machine_busy) / HZ - server - loadgen)
    return {
        "wall_s": wall,
        "server_cpu_s": server,
        "server_cpu_pct": 100 * server / wall,
        "loadgen_cpu_pct": 100 * loadgen / wall,
        "other_cpu_pct": 100 * other / wall,
    }


def wait_for_quiet(cfg: Config) -> float:
    """Before a measurement, wait (bounded) until other processes use under cfg.quiet_pct of a core.

    This machine may be shared (tests of other work); their CPU use is also reported for every
    measurement (other_cpu_pct). Answers the share seen last, in % of one core.
    """
    deadline = time.monotonic() + min(cfg.quiet_wait, cfg.quiet_budget)
    started = time.monotonic()
    while True:
        t0, b0 = time.monotonic(), machine_busy_ticks()
        time.sleep(0.5)
        busy = 100 * (machine_busy_ticks() - b0) / HZ / (time.monotonic() - t0)
        if busy <= cfg.quiet_pct or time.monotonic() >= deadline:
            break
    waited = time.monotonic() - started - 0.5
    cfg.quiet_budget = max(0.0, cfg.quiet_budget - waited)
    if busy > cfg.quiet_pct:
        log(f"WARNING: other processes keep using {busy:.0f}% of a core; measuring anyway")
    elif waited > 1:
        log(f"waited {waited:.0f} s for other processes to quiet down")
    return busy


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    kind: str
    proc: subprocess.Popen[Any]
    port: int
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.kind} (pid {self.pid}) exited with {self.proc.returncode}:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float] | None:
        """webrtc_app's /metrics as {name: value} for unlabelled samples (None for PeerJS)."""
        if self.kind != "webrtc_app":
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+) (\S+)$", text, re.M)}


def _wait_for(predicate: Any, server_proc: subprocess.Popen[Any], what: str, log_path: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_proc.poll() is not None:
            break
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.05)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    status = server_proc.poll()
    stop(server_proc)
    raise BenchError(f"{what} did not start ({'exit status ' + str(status) if status is not None else 'timed out'}):\n{tail}")


def start_webrtc(cfg: Config, name: str, cpu: int | None, redis_url: str | None = None) -> Server:
    """webrtc_app pinned to ``cpu``; a node of the Redis backplane at ``redis_url`` when given."""
    # --log-level warning prints no "listening" line, so the driver picks the port itself.
    port = free_port()
    log_path = os.path.join(cfg.log_dir, f"{name}.log")
    env = {k: v for k, v in os.environ.items() if k != "WEBRTC_REDIS_URL"}
    env.update(WEBRTC_ENV)
    cmd = [cfg.python, "webrtc_server.py", "start", str(port), "--host", "127.0.0.1", "--log-level", "warning"]
    if redis_url:
        cmd += ["--redis", redis_url]
    with open(log_path, "wb") as out:
        proc = spawn(cmd, cpu, cwd=cfg.server_dir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200 and b'"ok"' in response.read()

    _wait_for(healthy, proc, "webrtc_app", log_path, cfg.start_timeout)
    time.sleep(0.2)
    server = Server("webrtc_app", proc, port, log_path)
    server.check_alive()  # not someone else's server on a port we raced for
    if redis_url:

        def connected() -> bool:
            return (server.metrics() or {}).get("webrtc_backplane_connected") == 1

        _wait_for(connected, proc, "webrtc_app's Redis backplane", log_path, cfg.start_timeout)
    return server


def start_peerjs(cfg: Config, name: str) -> Server:
    log_path = os.path.join(cfg.log_dir, f"{name}.log")
    env = {**os.environ, "BENCH_PEER_MODULES": os.path.join(cfg.npm_dir, "peer", "node_modules")}
    cmd = [
        cfg.node,
        os.path.join(BENCH_DIR, "peerjs_server.mjs"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--concurrent_limit",
        "100000",
    ]
    with open(log_path, "wb") as out:
        proc = spawn(cmd, cfg.server_cpu, cwd=BENCH_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def listening() -> int | None:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            match = re.search(r"peerjs listening on http://[^:]+:(\d+)", handle.read())
        if not match:
            return None
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=2):
            return int(match.group(1))

    port = _wait_for(listening, proc, "PeerJS", log_path, cfg.start_timeout)
    return Server("peerjs", proc, port, log_path)


def start_server(cfg: Config, kind: str, name: str) -> Server:
    return start_webrtc(cfg, name, cfg.server_cpu) if kind == "webrtc_app" else start_peerjs(cfg, name)


def stop_server(server: Server) -> None:
    server.check_alive()
    status = stop(server.proc)
    text = server.log_tail(200)
    if "Traceback" in text or "peerjs error" in text:
        raise BenchError(f"{server.kind} logged an error:\n{text[-3000:]}")
    if status not in (0, -signal.SIGTERM):
        raise BenchError(f"{server.kind} stopped with exit status {status}:\n{text[-3000:]}")


# ------------------------------------------------------------------ load generator


class LoadGen:
    """bench/loadgen.mjs: prints `EVENT {json}` lines, waits for `go` after each."""

    def __init__(self, cfg: Config, server: Server, workload: str, args: dict[str, Any], name: str) -> None:
        self.log_path = os.path.join(cfg.log_dir, f"{name}.loadgen.log")
        proto = "webrtc" if server.kind == "webrtc_app" else "peerjs"
        cmd = [cfg.node, os.path.join(BENCH_DIR, "loadgen.mjs"), "--proto", proto, "--url", server.ws_url, "--workload", workload]
        for key, value in args.items():
            cmd += [f"--{key}", str(value)]
        env = {**os.environ, "BENCH_NODE_MODULES": os.path.join(cfg.npm_dir, "loadgen", "node_modules")}
        self.stderr = open(self.log_path, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = spawn(
            cmd,
            cfg.loadgen_cpu,
            cwd=BENCH_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def event(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"the load generator said nothing for {timeout:.0f} s:\n{self.log_tail()}") from None
            if line is None:
                self.proc.wait(5)
                raise BenchError(f"the load generator exited ({self.proc.returncode}) early:\n{self.log_tail()}")
            if line.startswith("EVENT "):
                event = json.loads(line[6:])
                if event["event"] == "error":
                    raise BenchError(f"the load generator failed: {event['message']}\n{self.log_tail()}")
                return event

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        event = self.event(timeout)
        if event["event"] != name:
            raise BenchError(f"expected event {name!r} from the load generator, got {event}")
        return event

    def go(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> None:
        self.expect("done", timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("the load generator did not exit") from None
        finally:
            stop(self.proc)
            self.stderr.close()
        if self.proc.returncode != 0:
            raise BenchError(f"the load generator exited with {self.proc.returncode}:\n{self.log_tail()}")

    def kill(self) -> None:
        stop(self.proc, timeout=2)
        self.stderr.close()

    def log_tail(self) -> str:
        self.stderr.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-3000:]


# ------------------------------------------------------------------ workloads


@dataclass
class Config:
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
    server_dir: str = PROJECT_DIR
    rev: str | None = None
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
    # --cluster: the Redis backplane (see "across nodes" below)
    cluster: bool = False
    redis_server: str = ""
    layout: str = "apart"
    cluster_cpus: dict[str, int | None] = field(default_factory=dict)
    cluster_variants: tuple[str, ...] = ()
    cluster_profile_relay: dict[str, Any] = field(default_factory=dict)
    cluster_light: dict[str, Any] = field(default_factory=dict)


def check_count(cfg: Config, what: str, got: float | None, expected: float) -> None:
    if got is None:
        warning = f"webrtc_app's /metrics has no {what}: server-side count not checked"
        if warning not in cfg.warnings:
            cfg.warnings.append(warning)
            log(f"WARNING: {warning}")
        return
    if got != expected:
        raise BenchError(f"webrtc_app counted {got:g} for {what}, the load generator {expected:g}: messages lost or duplicated")


def check_relayed(cfg: Config, m0: dict[str, float] | None, m1: dict[str, float] | None, relayed: float) -> None:
    """webrtc_app's own counters agree with the load generator: every message relayed, none undelivered."""
    check_count(cfg, "webrtc_messages_relayed_total", metric_delta(m0, m1, "webrtc_messages_relayed_total"), relayed)
    check_count(cfg, "webrtc_messages_undelivered_total", metric_delta(m0, m1, "webrtc_messages_undelivered_total"), 0)


def metric_delta(before: dict[str, float] | None, after: dict[str, float] | None, name: str) -> float | None:
    if before is None or after is None or name not in before or name not in after:
        return None
    return after[name] - before[name]


def measure_phase(
    cfg: Config, server: Server, lg: LoadGen, on_ready: Any = None, on_measured: Any = None, open_sockets_after: bool = False
) -> tuple[dict[str, Any], dict[str, float]]:
    """One measured phase of a relay or calls run: the load generator's result and the CPU
    used between its "ready" and "measured" events, with webrtc_app's own counters checked."""
    try:
        lg.expect("ready", cfg.event_timeout)
        m0 = server.metrics()
        if on_ready:
            on_ready()
        s0 = sample(server.pid, lg.pid)
        lg.go()
        result = lg.expect("measured", cfg.event_timeout)
        s1 = sample(server.pid, lg.pid)
        if on_measured:
            on_measured()
        m1 = server.metrics()
        if server.kind == "webrtc_app":
            check_relayed(cfg, m0, m1, result["relayed"])
            if open_sockets_after:
                check_count(cfg, "webrtc_open_sockets after the calls", (m1 or {}).get("webrtc_open_sockets"), 0)
        lg.go()
        lg.finish()
    except BaseException:
        lg.kill()
        raise
    return result, usage(s0, s1)


def cpu_shares(use: dict[str, float]) -> dict[str, float]:
    return {key: use[key] for key in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct")}


def run_relay(
    cfg: Config, server: Server, tag: str, args: dict[str, Any], on_ready: Any = None, on_measured: Any = None
) -> dict[str, float]:
    lg = LoadGen(cfg, server, "relay", {**args, "tag": tag}, tag)
    result, use = measure_phase(cfg, server, lg, on_ready, on_measured)
    return {
        "relayed_per_s": result["relayed_per_s"],
        "rtt_p50_ms": result["rtt_ms"]["p50"],
        "rtt_p99_ms": result["rtt_ms"]["p99"],
        "cpu_us_per_msg": 1e6 * use["server_cpu_s"] / result["relayed"],
        **cpu_shares(use),
        "relayed": result["relayed"],
    }


def run_calls(cfg: Config, server: Server, tag: str) -> dict[str, float]:
    lg = LoadGen(cfg, server, "calls", {**cfg.calls, "tag": tag}, tag)
    result, use = measure_phase(cfg, server, lg, open_sockets_after=True)
    return {
        "calls_per_s": result["calls_per_s"],
        "setup_p50_ms": result["setup_ms"]["p50"],
        "setup_p99_ms": result["setup_ms"]["p99"],
        "cpu_ms_per_call": 1e3 * use["server_cpu_s"] / result["calls"],
        **cpu_shares(use),
    }


def run_idle(
    cfg: Config, server: Server, tag: str, args: dict[str, Any] | None = None, on_hold: Any = None, on_held: Any = None
) -> dict[str, float]:
    args = args or cfg.idle
    lg = LoadGen(cfg, server, "idle", {**args, "tag": tag}, tag)
    figures: dict[str, float] = {}
    steps = [int(s) for s in str(args["steps"]).split(",")]
    others = []
    try:
        lg.expect("ready", cfg.event_timeout)
        base = sample(server.pid, lg.pid)
        lg.go()
        previous = base
        for step in steps:
            event = lg.expect("opened", cfg.event_timeout)
            opened = sample(server.pid, lg.pid)
            figures[f"open_per_s_{step}"] = event["opened_per_s"]
            figures[f"cpu_us_per_open_{step}"] = 1e6 * (opened.server_cpu - previous.server_cpu) / HZ / event["batch"]
            figures[f"loadgen_cpu_pct_open_{step}"] = usage(previous, opened)["loadgen_cpu_pct"]
            others.append(usage(previous, opened)["other_cpu_pct"])
            time.sleep(cfg.settle_seconds)  # let buffers of the handshakes go before reading RSS
            settled = sample(server.pid, lg.pid)
            figures[f"rss_kib_per_socket_{step}"] = (settled.rss - base.rss) / step
            figures[f"rss_mib_{step}"] = settled.rss / 1024
            if server.kind == "webrtc_app":
                check_count(cfg, "webrtc_open_sockets", (server.metrics() or {}).get("webrtc_open_sockets"), step)
            previous = sample(server.pid, lg.pid)
            lg.go()
        lg.expect("holding", cfg.event_timeout)
        if on_hold:
            on_hold()
        h0 = sample(server.pid, lg.pid)
        deadline = time.monotonic() + cfg.idle_seconds
        while time.monotonic() < deadline:  # bounded: the hold window
            server.check_alive()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        h1 = sample(server.pid, lg.pid)
        if on_held:
            on_held()
        lg.go()
        held = lg.expect("held", cfg.event_timeout)
        if held["unexpected_closes"]:
            raise BenchError(f"{held['unexpected_closes']} idle sockets were closed by {server.kind}")
        lg.go()
        lg.finish(timeout=cfg.event_timeout)
    except BaseException:
        lg.kill()
        raise
    use = usage(h0, h1)
    last = steps[-1]
    figures.update(
        {
            "idle_cpu_pct": use["server_cpu_pct"],
            "idle_seconds": use["wall_s"],
            "rss_kib_per_socket_held": (h1.rss - base.rss) / last,
            "pings_per_socket": held["pings_received"] / last,
            "heartbeats_per_socket": held["heartbeats_sent"] / last,
            "loadgen_cpu_pct": use["loadgen_cpu_pct"],
            "other_cpu_pct": max([use["other_cpu_pct"], *others]),
        }
    )
    return figures


def measure(cfg: Config, kind: str, workload: str, tag: str) -> dict[str, float]:
    """One workload against a freshly started server, stopped afterwards."""
    server = start_server(cfg, kind, tag)
    finished = False
    try:
        if workload == "relay":
            figures = run_relay(cfg, server, tag, cfg.relay)
        elif workload == "calls":
            figures = run_calls(cfg, server, tag)
        else:
            figures = run_idle(cfg, server, tag)
        finished = True
        return figures
    except BenchError as exc:
        state = "still running" if server.proc.poll() is None else f"exited with status {server.proc.returncode}"
        raise BenchError(
            f"{workload} against {LABELS[kind]} ({tag}): {exc}\n"
            f"{LABELS[kind]} {state}; end of its log {server.log_path}:\n{server.log_tail()}"
        ) from None
    finally:
        if server.proc in _children:
            if finished:
                stop_server(server)  # checks its exit status and its log
            else:
                stop(server.proc)  # the first error is the one to report


# ------------------------------------------------------------------ profile


def parse_raw_profile(path: str) -> tuple[int, list[tuple[str, int, int]]]:
    """py-spy's raw (collapsed) stacks -> total samples, [(function, self, total)] by self time."""
    self_counts: dict[str, int] = defaultdict(int)
    total_counts: dict[str, int] = defaultdict(int)
    samples = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame for frame in stack.split(";") if frame]
            # py-spy puts the thread name first ("process 1:..." / "thread (0x..)"): skip non-code frames.
            frames = [f for f in frames if "(" in f and not f.startswith(("process ", "thread "))]
            samples += count
            if not frames:
                continue
            self_counts[_frame_name(frames[-1])] += count
            for name in {_frame_name(f) for f in frames}:
                total_counts[name] += count
    rows = sorted(((name, n, total_counts[name]) for name, n in self_counts.items()), key=lambda r: -r[1])
    return samples, rows


def _frame_name(frame: str) -> str:
    """'write_message (tornado/websocket.py:123)' -> 'write_message (tornado/websocket.py:123)' with a short path."""
    match = re.match(r"(.*?) \((.*?)(?::(\d+))?\)$", frame)
    if not match:
        return frame
    function, path, line = match.groups()
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        if path.startswith(PROJECT_DIR + "/"):
            path = path[len(PROJECT_DIR) + 1 :]
    return f"{function} ({path}:{line})" if line else f"{function} ({path})"


def run_profile(cfg: Config) -> dict[str, Any]:
    """webrtc_app sampled by py-spy under the relay load (Python frames, then native frames too,
    then a flame graph) and while 10,000 sockets sit idle; answers the aggregated profiles."""
    py_spy = py_spy_path(cfg)
    if not os.path.exists(py_spy):
        raise BenchError("py-spy is not installed: pip install -r bench/requirements.txt")
    idle_args = {**cfg.idle, "steps": str(cfg.idle["steps"]).split(",")[-1]}
    passes = (
        # name, workload, py-spy format, options, output
        ("python", "relay", "raw", ["--function"], "profile-relay.txt"),
        ("native", "relay", "raw", ["--function", "--native"], "profile-relay-native.txt"),
        ("flamegraph", "relay", "flamegraph", [], "profile-relay.svg"),
        ("idle", "idle", "raw", ["--function"], "profile-idle.txt"),
    )
    results: dict[str, Any] = {}
    for name, workload, fmt, options, filename in passes:
        path = os.path.join(cfg.out_dir, filename)
        if os.path.exists(path):
            os.remove(path)
        wait_for_quiet(cfg)
        server = start_server(cfg, "webrtc_app", f"profile-{name}")
        spy: dict[str, subprocess.Popen[Any]] = {}
        spy_log = os.path.join(cfg.log_dir, f"py-spy-{name}.log")
        # py-spy pauses the server for each sample (its default): its --nonblocking mode
        # failed on most samples here and the ones it kept were skewed. Samples of the
        # server waiting in epoll are left out (no --idle).
        cmd = [py_spy, "record", "--pid", str(server.pid), "--rate", str(cfg.profile_rate), "--format", fmt, "-o", path, *options]

        def start_spy(cmd: list[str] = cmd, spy_log: str = spy_log, spy: dict[str, Any] = spy) -> None:
            with open(spy_log, "wb") as out:
                spy["proc"] = spawn(cmd, cfg.loadgen_cpu, stdout=out, stderr=subprocess.STDOUT)
            time.sleep(1.0)  # attach before the load starts
            if spy["proc"].poll() is not None:
                with open(spy_log, encoding="utf-8", errors="replace") as handle:
                    raise BenchError(f"py-spy failed to start:\n{handle.read()[-2000:]}")

        def stop_spy(spy: dict[str, Any] = spy) -> None:
            proc = spy["proc"]
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                proc.wait(60)
            finally:
                stop(proc)

        try:
            if workload == "relay":
                figures = run_relay(cfg, server, f"prof{name[0]}", cfg.profile_relay, on_ready=start_spy, on_measured=stop_spy)
            else:
                figures = run_idle(cfg, server, f"prof{name[0]}", idle_args, on_hold=start_spy, on_held=stop_spy)
        except BaseException:
            if "proc" in spy:
                stop(spy["proc"])
            stop(server.proc)
            raise
        stop_server(server)
        if not os.path.exists(path):
            with open(spy_log, encoding="utf-8", errors="replace") as handle:
                raise BenchError(f"py-spy wrote no {path}:\n{handle.read()[-2000:]}")
        with open(spy_log, encoding="utf-8", errors="replace") as handle:
            match = re.search(r"Samples: (\d+) Errors: (\d+)", handle.read())
        figures["py_spy_errors"] = int(match.group(2)) if match else -1
        results[f"{workload}_{name}"] = figures
        shown = f"{figures['relayed_per_s']:,.0f} msgs/s" if workload == "relay" else f"{figures['idle_cpu_pct']:.1f}% CPU idle"
        log(f"profile ({name}) written to {os.path.relpath(path, PROJECT_DIR)}: {shown} under py-spy")
        if fmt == "raw":
            samples, rows = parse_raw_profile(path)
            results[name] = {"samples": samples, "rows": rows, "file": path}
            if "--native" in options:
                results[name]["groups"] = native_groups(path)
    return results


def native_groups(path: str) -> dict[str, Any]:
    """From a --native profile: self time by library, and who calls getpid (innermost Python frame)."""
    libraries: dict[str, int] = defaultdict(int)
    getpid_callers: dict[str, int] = defaultdict(int)
    total = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            leaf = frames[-1]
            library = re.search(r"\(([^():]+\.so[.\d]*)\)$", leaf)
            libraries[library.group(1) if library else "Python code (the interpreter running it)"] += count
            if leaf.startswith("getpid "):
                python = [f for f in frames if re.search(r"\.py:\d+\)$", f)]
                getpid_callers[_frame_name(python[-1]) if python else "?"] += count
    return {
        "total": total,
        "libraries": sorted(libraries.items(), key=lambda kv: -kv[1]),
        "getpid_callers": sorted(getpid_callers.items(), key=lambda kv: -kv[1]),
    }


# ------------------------------------------------------------------ figures and report


@dataclass(frozen=True)
class Figure:
    workload: str
    key: str
    label: str
    fmt: str
    better: str  # "higher" or "lower" or "" (informative)


def figures_for(cfg: Config) -> list[Figure]:
    steps = [int(s) for s in str(cfg.idle["steps"]).split(",")]
    figures = [
        Figure("relay", "relayed_per_s", "relayed msgs/s (both directions)", "{:,.0f}", "higher"),
        Figure("relay", "rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower"),
        Figure("relay", "rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower"),
        Figure("relay", "cpu_us_per_msg", "server CPU µs per relayed msg", "{:.1f}", "lower"),
        Figure("relay", "server_cpu_pct", "server CPU (% of one core)", "{:.0f}", ""),
        Figure("relay", "loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
        Figure("relay", "other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
        Figure("calls", "calls_per_s", "calls/s", "{:,.0f}", "higher"),
        Figure("calls", "setup_p50_ms", "set-up time p50 (ms)", "{:.1f}", "lower"),
        Figure("calls", "setup_p99_ms", "set-up time p99 (ms)", "{:.1f}", "lower"),
        Figure("calls", "cpu_ms_per_call", "server CPU ms per call", "{:.2f}", "lower"),
        Figure("calls", "server_cpu_pct", "server CPU (% of one core)", "{:.0f}", ""),
        Figure("calls", "loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
        Figure("calls", "other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
    ]
    previous = 0
    for step in steps:
        figures += [
            Figure("idle", f"open_per_s_{step}", f"sockets opened/s ({previous:,} → {step:,})", "{:,.0f}", "higher"),
            Figure(
                "idle", f"cpu_us_per_open_{step}", f"server CPU µs per socket opened ({previous:,} → {step:,})", "{:.0f}", "lower"
            ),
            Figure(
                "idle",
                f"loadgen_cpu_pct_open_{step}",
                f"load generator CPU ({previous:,} → {step:,}) (% of one core)",
                "{:.0f}",
                "",
            ),
            Figure("idle", f"rss_kib_per_socket_{step}", f"RSS KiB per socket at {step:,}", "{:.1f}", "lower"),
        ]
        previous = step
    figures += [
        Figure("idle", "rss_kib_per_socket_held", f"RSS KiB per socket at {steps[-1]:,}, after the hold", "{:.1f}", "lower"),
        Figure("idle", f"rss_mib_{steps[-1]}", f"server RSS MiB at {steps[-1]:,}", "{:.0f}", "lower"),
        Figure("idle", "idle_cpu_pct", f"server CPU % while {steps[-1]:,} sockets idle", "{:.2f}", "lower"),
        Figure("idle", "pings_per_socket", "server pings per socket in the hold", "{:.2f}", ""),
        Figure("idle", "heartbeats_per_socket", "client heartbeats per socket in the hold", "{:.2f}", ""),
        Figure("idle", "other_cpu_pct", "other processes' CPU, highest of the steps and the hold (% of one core)", "{:.0f}", ""),
    ]
    return figures


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_value(figure: Figure, value: float | None) -> str:
    return "–" if value is None else figure.fmt.format(value)


def results_table(cfg: Config, results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    flagged = False
    lines = [
        "| workload | figure | webrtc_app | PeerJS | webrtc_app / PeerJS |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for figure in figures_for(cfg):
        if figure.workload not in cfg.workloads:
            continue
        values = {
            kind: median([run[figure.key] for run in results.get(kind, {}).get(figure.workload, []) if figure.key in run])
            for kind in SERVERS
        }
        a, b = values["webrtc_app"], values["peerjs"]
        ratio = "–" if a is None or not b or not figure.better else f"{a / b:.2f}"
        cells = [fmt_value(figure, a), fmt_value(figure, b)]
        for n, kind in enumerate(SERVERS):
            if values[kind] is not None and limited_by_loadgen(figure, results.get(kind, {}).get(figure.workload, [])):
                cells[n] += " †"
                flagged = True
        lines.append(f"| {figure.workload} | {figure.label} | {cells[0]} | {cells[1]} | {ratio} |")
    if flagged:
        lines += [
            "",
            f"† The load generator used {LOADGEN_LIMIT}% or more of its core in this workload (median): this rate or time is "
            "partly its own limit, so the server may do better than shown. CPU per unit of work is not affected.",
        ]
    return "\n".join(lines)


LOADGEN_LIMIT = 90


def limited_by_loadgen(figure: Figure, runs: list[dict[str, float]]) -> bool:
    """A rate or latency measured while the load generator was near 100% of its core."""
    if not figure.better or "cpu" in figure.key or "rss" in figure.key:
        return False
    key = "loadgen_cpu_pct"
    if figure.workload == "idle":
        if not figure.key.startswith("open_per_s_"):
            return False
        key = "loadgen_cpu_pct_open_" + figure.key.rsplit("_", 1)[1]
    loadgen = median([run[key] for run in runs if key in run])
    return loadgen is not None and loadgen >= LOADGEN_LIMIT


def rounds_table(cfg: Config, results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    lines = ["| workload | figure | webrtc_app, each round | PeerJS, each round |", "| --- | --- | --- | --- |"]
    for figure in figures_for(cfg):
        if figure.workload not in cfg.workloads or not figure.better:
            continue
        cells = []
        for kind in SERVERS:
            runs = results.get(kind, {}).get(figure.workload, [])
            cells.append(" / ".join(fmt_value(figure, run.get(figure.key)) for run in runs) or "–")
        lines.append(f"| {figure.workload} | {figure.label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def profile_table(profile: dict[str, Any], top: int = 15) -> str:
    samples = profile["samples"] or 1
    lines = [
        "| # | function (file:first line, or library) | self % | total % |",
        "| ---: | --- | ---: | ---: |",
    ]
    for n, (name, own, total) in enumerate(profile["rows"][:top], 1):
        lines.append(f"| {n} | `{name}` | {100 * own / samples:.1f} | {100 * total / samples:.1f} |")
    return "\n".join(lines)


def profile_report(cfg: Config, profile: dict[str, Any], facts: dict[str, str]) -> str:
    py_spy = version_of([py_spy_path(cfg), "--version"]).split()[-1]
    relay, native, idle = profile["relay_python"], profile["relay_native"], profile["idle_idle"]
    groups = profile["native"]["groups"]
    share = lambda n: f"{100 * n / (groups['total'] or 1):.1f}%"  # noqa: E731
    lines = [
        f"py-spy {py_spy}, {cfg.profile_rate} samples/s, `record --function` (line numbers folded into each function's "
        f"first line); samples of the server waiting in epoll are left out. {facts['date']}, webrtc_app "
        f"{facts['webrtc_app commit']}.",
        "",
        f"**Relay** ({relay['relayed']:,} relayed messages, {cfg.profile_relay['pairs']} pairs, window "
        f"{cfg.profile_relay['window']}; {relay['relayed_per_s']:,.0f} msgs/s while sampled, server CPU "
        f"{relay['server_cpu_pct']:.0f}% of a core), Python frames only: {profile['python']['samples']:,} samples. "
        "Self = samples whose innermost Python frame is the function, so time in the C code it calls (a system call, "
        "asyncio's C Future and Task, the garbage collector) counts as its own; total = samples with the function "
        "anywhere on the stack.",
        "",
        profile_table(profile["python"]),
        "",
        f"**Relay with native frames** (`--native`: C functions of libc and libpython appear as frames of their own; "
        f"{native['relayed_per_s']:,.0f} msgs/s while sampled, {profile['native']['samples']:,} samples):",
        "",
        profile_table(profile["native"], top=12),
        "",
        "Self time by where the innermost frame is: "
        + "; ".join(f"{name} {share(n)}" for name, n in groups["libraries"][:4])
        + ". `getpid` is called by asyncio's C `get_running_loop()`, which Python 3.11 runs for every `Future()`, task "
        "and `call_soon`, through (innermost Python frame): "
        + "; ".join(f"`{name}` {share(n)}" for name, n in groups["getpid_callers"][:5])
        + ".",
        "",
        f"**{idle_args_label(cfg)} idle sockets** held {cfg.idle_seconds:g} s with the heartbeat on "
        f"({idle['idle_cpu_pct']:.1f}% of a core while sampled), {profile['idle']['samples']:,} samples of the server "
        "busy:",
        "",
        profile_table(profile["idle"], top=10),
    ]
    return "\n".join(lines)


def idle_args_label(cfg: Config) -> str:
    return f"{int(str(cfg.idle['steps']).split(',')[-1]):,}"


def py_spy_path(cfg: Config) -> str:
    beside = os.path.join(os.path.dirname(cfg.python), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy") or beside


def version_of(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def npm_version(cfg: Config, folder: str, package: str) -> str:
    try:
        with open(os.path.join(cfg.npm_dir, folder, "node_modules", package, "package.json"), encoding="utf-8") as handle:
            return json.load(handle)["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def machine_facts(cfg: Config) -> dict[str, str]:
    cpu_model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    tornado = version_of([cfg.python, "-c", "import tornado; print(tornado.version)"])
    commit = version_of(["git", "-C", PROJECT_DIR, "rev-parse", "--short", cfg.rev or "HEAD"])
    dirty = 0
    if not cfg.rev:
        # Uncommitted changes to the server's files (tracked or not), outside bench/ and this doc.
        status = version_of(["git", "-C", PROJECT_DIR, "status", "--porcelain", "--", ".", ":!bench", ":!docs/benchmarks.md"])
        dirty = bool(status.strip())
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1048576:.0f} GiB",
        "kernel": platform.release(),
        "python": version_of([cfg.python, "-c", "import platform; print(platform.python_version())"]),
        "tornado": tornado,
        "node": version_of([cfg.node, "--version"]),
        "peer": npm_version(cfg, "peer", "peer"),
        "ws (load generator)": npm_version(cfg, "loadgen", "ws"),
        "ws (inside peer)": npm_version(cfg, "peer", "ws"),
        "webrtc_app commit": commit + (" plus uncommitted changes (working tree)" if dirty else ""),
    }


def report(
    cfg: Config, command: str, results: dict[str, Any], facts: dict[str, str], other_cpu: float, redone: int, elapsed: float
) -> str:
    pin = (
        f"server pinned to CPU {cfg.server_cpu}, load generator and driver to CPU {cfg.loadgen_cpu} (taskset)"
        if cfg.server_cpu is not None
        else "no CPU pinning"
    )
    lines = [
        f"Command: `{command}` ({cfg.rounds} rounds, A B A B; medians; {elapsed / 60:.1f} minutes)",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {pin}.",
        "",
        f"Sizes: relay {cfg.relay['pairs']} pairs × {cfg.relay['messages']:,} data messages of {cfg.relay['size']} bytes "
        f"(+{cfg.relay['warmup']} warm-up each), window {cfg.relay['window']}; calls {cfg.calls['calls']:,} "
        f"({cfg.calls['concurrency']} at a time, {2 + 2 * cfg.calls['candidates']} messages each, "
        f"+{cfg.calls['warmup-calls']} warm-up); "
        f"idle {cfg.idle['steps']} sockets ({cfg.idle['open-concurrency']} handshakes at a time), held {cfg.idle_seconds:g} s.",
        "",
        f"Other processes on the machine (this machine is shared): at most {other_cpu:.0f}% of one core during a kept "
        f"measurement; {redone} measurement(s) redone because they used over {cfg.max_other_cpu:g}%.",
        "",
        results_table(cfg, results),
        "",
        "<details><summary>Each round</summary>",
        "",
        rounds_table(cfg, results),
        "",
        "</details>",
    ]
    for warning in cfg.warnings:
        lines += ["", f"Warning: {warning}"]
    return "\n".join(lines)


def replace_between(text: str, start: str, end: str, body: str) -> str:
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_docs(results_md: str, profile_md: str | None) -> None:
    with open(DOCS_FILE, encoding="utf-8") as handle:
        text = handle.read()
    text = replace_between(text, RESULTS_START, RESULTS_END, results_md)
    if profile_md is not None:
        text = replace_between(text, PROFILE_START, PROFILE_END, profile_md)
    with open(DOCS_FILE, "w", encoding="utf-8") as handle:
        handle.write(text)


# ------------------------------------------------------------------ across nodes (--cluster)

#: What --cluster alternates, in this order in every round (docs/benchmarks.md, "Across nodes").
CLUSTER_VARIANTS = ("single", "single_redis", "cluster")
CLUSTER_LABELS = {
    "single": "1 node",
    "single_redis": "1 node + Redis",
    "cluster": "2 nodes via Redis",
}


def find_redis_server(given: str) -> str:
    """The redis-server binary: ``given``, else redis-server on PATH, else /usr/bin/redis-server."""
    candidates = [given] if given else [shutil.which("redis-server") or "", "/usr/bin/redis-server"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BenchError(
        f"redis-server not found ({given or 'not on PATH, nor /usr/bin/redis-server'}): --cluster needs it "
        "(Debian: apt-get install redis-server; or give --redis-server PATH)"
    )


def redis_command(port: int, *args: str, timeout: float = 5.0) -> Any:
    """Send one command to the redis-server on 127.0.0.1:``port`` and answer its decoded reply
    (RESP2; just enough for PING and INFO, so the driver needs no Redis client)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        with sock.makefile("rb") as reader:
            return _resp_reply(reader)


def _resp_reply(reader: Any) -> Any:
    line = reader.readline(1_000_000)
    if not line.endswith(b"\r\n"):
        raise OSError("redis-server closed the connection")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise BenchError(f"redis-server answered an error: {body.decode(errors='replace')}")
    if kind == b":":
        return int(body)
    if kind == b"$":
        length = int(body)
        return None if length < 0 else reader.read(length + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_resp_reply(reader) for _ in range(count)]
    raise OSError(f"unexpected reply from redis-server: {line[:80]!r}")


@dataclass
class RedisServer:
    proc: subprocess.Popen[Any]
    port: int
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])

    def info(self) -> dict[str, str]:
        text = redis_command(self.port, "INFO", "all")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def publish_calls(self) -> int:
        text = redis_command(self.port, "INFO", "commandstats")
        match = re.search(r"^cmdstat_publish:calls=(\d+)", text, re.M)
        return int(match.group(1)) if match else 0

    def settle(self, quiet: float = 0.3, timeout: float = 60) -> float:
        """Wait until the nodes have handed Redis everything they had queued: PUBLISH calls stop
        growing for ``quiet`` seconds. A node delivers to its own sockets at once and publishes
        after, so with every pair on one node its publishing lags behind the deliveries.
        Answers when (time.monotonic()) the count was last seen growing."""
        deadline = time.monotonic() + timeout
        last, since = self.publish_calls(), time.monotonic()
        changed = 0.0
        while time.monotonic() < deadline:
            time.sleep(0.02)
            calls = self.publish_calls()
            if calls != last:
                last, since = calls, time.monotonic()
                changed = since
            elif time.monotonic() - since >= quiet:
                return changed
        raise BenchError(f"the nodes kept publishing to Redis for {timeout:g} s after the load generator finished")

    def stats(self) -> dict[str, int]:
        """Redis' own counters: PUBLISH calls, reads and writes of client sockets, bytes."""
        info = self.info()
        publish = re.search(r"(?:^|,)calls=(\d+)", info.get("cmdstat_publish", ""))
        return {
            "publish": int(publish.group(1)) if publish else 0,
            "commands": int(info["total_commands_processed"]),
            "reads": int(info.get("total_reads_processed", 0)),
            "net_in": int(info["total_net_input_bytes"]),
            "net_out": int(info["total_net_output_bytes"]),
        }


def start_redis(cfg: Config, name: str) -> RedisServer:
    """A fresh redis-server of our own on a free port (no persistence), answering PING."""
    log_path = os.path.join(cfg.log_dir, f"{name}.redis.log")
    for _attempt in range(3):  # a free port may be taken again before redis-server binds it
        port = free_port()
        cmd = [
            cfg.redis_server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", cfg.log_dir,
        ]  # fmt: skip
        with open(log_path, "ab") as out:
            proc = spawn(cmd, cfg.cluster_cpus["redis"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        redis = RedisServer(proc, port, log_path)
        deadline = time.monotonic() + cfg.start_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if redis_command(port, "PING", timeout=2) == "PONG":
                    # Ours, not another redis-server on a port we raced for.
                    if int(redis.info().get("process_id", -1)) == proc.pid:
                        return redis
                    break
            except (OSError, BenchError):  # not listening yet, or still loading
                pass
            time.sleep(0.05)
        status = proc.poll()
        stop(proc)
        if status is None and time.monotonic() >= deadline:
            raise BenchError(f"redis-server did not answer PING within {cfg.start_timeout:g} s:\n{redis.log_tail()}")
        log(f"redis-server did not start on port {port} (exit status {status}); trying another port")
    raise BenchError(f"redis-server did not start:\n{RedisServer(proc, port, log_path).log_tail()}")


def stop_redis(redis: RedisServer) -> None:
    if redis.proc.poll() is not None:
        raise BenchError(f"redis-server exited with {redis.proc.returncode} during the run:\n{redis.log_tail()}")
    status = stop(redis.proc)
    if status not in (0, -signal.SIGTERM):
        raise BenchError(f"redis-server stopped with exit status {status}:\n{redis.log_tail()}")


def cpu_busy_by_core() -> dict[int, int]:
    """Busy ticks of each CPU (/proc/stat cpuN lines, everything but idle and iowait)."""
    cores = {}
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            match = re.match(r"cpu(\d+) (.*)", line)
            if match:
                values = [int(v) for v in match.group(2).split()]
                user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
                cores[int(match.group(1))] = user + nice + system + irq + softirq + steal
    return cores


@dataclass
class Snapshot:
    t: float
    ticks: dict[str, int]  # CPU ticks of each process by role
    machine: int
    cores: dict[int, int]


def snapshot(pids: dict[str, int]) -> Snapshot:
    return Snapshot(
        time.monotonic(), {role: cpu_ticks(pid) for role, pid in pids.items()}, machine_busy_ticks(), cpu_busy_by_core()
    )


def spent(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU seconds of each process, and % of one core for each, for other processes, for each CPU."""
    wall = b.t - a.t
    seconds = {role: (b.ticks[role] - a.ticks[role]) / HZ for role in a.ticks}
    other = max(0.0, (b.machine - a.machine) / HZ - sum(seconds.values()))
    result = {"wall_s": wall, "other_cpu_pct": 100 * other / wall}
    for role, value in seconds.items():
        result[f"{role}_cpu_s"] = value
        result[f"{role}_cpu_pct"] = 100 * value / wall
    for core in a.cores:
        result[f"core{core}_pct"] = 100 * (b.cores[core] - a.cores[core]) / HZ / wall
    return result


def run_relay_across(
    cfg: Config,
    nodes: list[Server],
    redis: RedisServer | None,
    tag: str,
    args: dict[str, Any],
    on_ready: Any = None,
    on_measured: Any = None,
) -> dict[str, float]:
    """The relay workload against one node, or with callers on nodes[0] and callees on nodes[1]
    (every message and acknowledgement crossing Redis); CPU of every node and of redis-server."""
    across = len(nodes) == 2
    extra = {"url2": nodes[1].ws_url} if across else {}
    lg = LoadGen(cfg, nodes[0], "relay", {**args, "tag": tag, **extra}, tag)
    probed: dict[str, Any] = {}
    try:
        if across:
            # Every pair delivers both ways: from here on, no message may go undelivered.
            probed = lg.expect("probed", cfg.event_timeout)
            mp = [node.metrics() for node in nodes]
            lg.go()
        lg.expect("ready", cfg.event_timeout)
        m0 = [node.metrics() for node in nodes]
        if not across:
            mp = m0
        if redis:
            redis.settle()  # the warm-up's messages are all published before the measurement
        r0 = redis.stats() if redis else None
        if on_ready:
            on_ready()
        pids = {f"node{n}": node.pid for n, node in enumerate(nodes, 1)}
        if redis:
            pids["redis"] = redis.pid
        pids["loadgen"] = lg.pid
        s0 = snapshot(pids)
        lg.go()
        result = lg.expect("measured", cfg.event_timeout)
        s1 = snapshot(pids)
        published = s1.t
        if redis:
            # CPU per message counts until Redis has had every message's PUBLISH (the nodes'
            # CPU % and the rates are over the delivery only, s0 to s1).
            published = max(published, redis.settle())
        s2 = snapshot(pids)
        if on_measured:
            on_measured()
        r1 = redis.stats() if redis else None
        m1 = [node.metrics() for node in nodes]
        relayed = result["relayed"]
        if relayed != 2 * args["pairs"] * args["messages"]:
            raise BenchError(
                f"the load generator counted {relayed} relayed messages, expected {2 * args['pairs'] * args['messages']}"
            )
        # Each node counts the messages its own sockets sent: node 1 the data, node 2 the acks.
        expected = [result["data_messages"], result["acks"]] if across else [relayed]
        for n in range(len(nodes)):
            what = f"node {n + 1}: " if across else ""
            check_count(
                cfg,
                f"{what}webrtc_messages_relayed_total",
                metric_delta(m0[n], m1[n], "webrtc_messages_relayed_total"),
                expected[n],
            )
            # PEER-UNAVAILABLE notices: none from the end of the probes (warm-up included) on.
            check_count(
                cfg,
                f"{what}webrtc_messages_undelivered_total since the pairs were probed",
                metric_delta(mp[n], m1[n], "webrtc_messages_undelivered_total"),
                0,
            )
            if redis:
                check_count(
                    cfg, f"{what}webrtc_backplane_errors_total", metric_delta(m0[n], m1[n], "webrtc_backplane_errors_total"), 0
                )
                check_count(cfg, f"{what}webrtc_backplane_connected", (m1[n] or {}).get("webrtc_backplane_connected"), 1)
        lg.go()
        done = lg.expect("done", cfg.event_timeout)
        if done.get("notices"):
            raise BenchError(f"the load generator received {done['notices']} server notices after the probes")
        lg.proc.wait(60)
        stop(lg.proc)
        lg.stderr.close()
        if lg.proc.returncode != 0:
            raise BenchError(f"the load generator exited with {lg.proc.returncode}:\n{lg.log_tail()}")
    except BaseException:
        lg.kill()
        raise
    use = spent(s0, s1)
    work = spent(s0, s2)
    per_msg = lambda role: 1e6 * work[f"{role}_cpu_s"] / relayed  # noqa: E731
    figures = {
        "relayed_per_s": result["relayed_per_s"],
        "rtt_p50_ms": result["rtt_ms"]["p50"],
        "rtt_p99_ms": result["rtt_ms"]["p99"],
        "relayed": relayed,
        "seconds": use["wall_s"],
        # Publishing may lag behind local delivery: the rate Redis kept up with, and how far behind it was.
        "sustained_per_s": relayed / (published - s0.t),
        "backlog_s": published - s1.t,
        "us_node1": per_msg("node1"),
        "us_total": sum(per_msg(role) for role in pids if role != "loadgen"),
        "loadgen_cpu_pct": use["loadgen_cpu_pct"],
        "node1_cpu_pct": use["node1_cpu_pct"],
        "other_cpu_pct": use["other_cpu_pct"],
    }
    for key, value in use.items():
        if key.startswith("core"):
            figures[key] = value
    if across:
        figures.update({"us_node2": per_msg("node2"), "node2_cpu_pct": use["node2_cpu_pct"]})
        figures.update({f"probe_{k}": probed[k] for k in ("attempts", "unavailable", "timeouts")})
    if redis and r0 and r1:
        delta = {k: r1[k] - r0[k] for k in r0}
        figures.update(
            {
                "us_redis": per_msg("redis"),
                "redis_cpu_pct": use["redis_cpu_pct"],
                "publish_per_msg": delta["publish"] / relayed,
                "publish_per_read": delta["publish"] / max(1, delta["reads"]),
                "redis_in_per_msg": delta["net_in"] / relayed,
                "redis_out_per_msg": delta["net_out"] / relayed,
            }
        )
    return figures


def stop_node(server: Server) -> None:
    stop_server(server)
    text = server.log_tail(200)
    if "lost Redis" in text or "not reachable" in text:
        raise BenchError(f"{server.kind} lost its Redis backplane during the run:\n{text[-3000:]}")


def measure_cluster(
    cfg: Config, variant: str, tag: str, args: dict[str, Any] | None = None, hooks: Any = None, light: bool = True
) -> dict[str, float]:
    """One relay measurement: one node alone, one node with Redis, or two nodes through Redis;
    every process started fresh and stopped afterwards (nodes first, then redis-server)."""
    args = args or cfg.relay
    cpus = cfg.cluster_cpus
    redis = None
    nodes: list[Server] = []
    finished = False
    try:
        if variant != "single":
            redis = start_redis(cfg, tag)
        if variant == "cluster":
            nodes.append(start_webrtc(cfg, f"{tag}-node1", cpus["node1"], redis.url if redis else None))
            nodes.append(start_webrtc(cfg, f"{tag}-node2", cpus["node2"], redis.url if redis else None))
        else:
            nodes.append(start_webrtc(cfg, tag, cpus["single"], redis.url if redis else None))
        on_ready, on_measured = hooks(nodes) if hooks else (None, None)
        figures = run_relay_across(cfg, nodes, redis, tag, args, on_ready, on_measured)
        if light:
            # The same processes at light load: what a round trip costs without queueing.
            calm = run_relay_across(cfg, nodes, redis, f"{tag}l", cfg.cluster_light)
            figures.update({f"light_{k}": calm[k] for k in ("rtt_p50_ms", "rtt_p99_ms", "relayed_per_s")})
        finished = True
        return figures
    except BenchError as exc:
        tails = "".join(
            f"\nnode {n} ({'still running' if s.proc.poll() is None else f'exit status {s.proc.returncode}'}), "
            f"end of {s.log_path}:\n{s.log_tail()}"
            for n, s in enumerate(nodes, 1)
        )
        if redis:
            tails += f"\nredis-server, end of {redis.log_path}:\n{redis.log_tail(10)}"
        raise BenchError(f"relay, {CLUSTER_LABELS[variant]} ({tag}): {exc}{tails}") from None
    finally:
        for server in nodes:
            if server.proc in _children:
                if finished:
                    stop_node(server)
                else:
                    stop(server.proc)
        if redis and redis.proc in _children:
            if finished:
                stop_redis(redis)
            else:
                stop(redis.proc)


def run_cluster_profile(cfg: Config) -> dict[str, Any]:
    """py-spy on node 1 and node 2 at once (Python frames, --function) under the relay across nodes."""
    py_spy = py_spy_path(cfg)
    if not os.path.exists(py_spy):
        raise BenchError("py-spy is not installed: pip install -r bench/requirements.txt")
    spies: dict[str, subprocess.Popen[Any]] = {}
    paths = {role: os.path.join(cfg.out_dir, f"profile-cluster-{role}.txt") for role in ("node1", "node2")}
    for path in paths.values():
        if os.path.exists(path):
            os.remove(path)

    def hooks(nodes: list[Server]) -> tuple[Any, Any]:
        def start_spies() -> None:
            for role, node in zip(paths, nodes, strict=True):
                cmd = [py_spy, "record", "--pid", str(node.pid), "--rate", str(cfg.profile_rate), "--format", "raw"]
                with open(os.path.join(cfg.log_dir, f"py-spy-cluster-{role}.log"), "wb") as out:
                    spies[role] = spawn(
                        [*cmd, "-o", paths[role], "--function"], cfg.loadgen_cpu, stdout=out, stderr=subprocess.STDOUT
                    )
            time.sleep(1.0)  # attach before the load starts
            for role, proc in spies.items():
                if proc.poll() is not None:
                    raise BenchError(f"py-spy failed to start on {role}: see {cfg.log_dir}/py-spy-cluster-{role}.log")

        def stop_spies() -> None:
            for proc in spies.values():
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            for proc in spies.values():
                try:
                    proc.wait(60)
                finally:
                    stop(proc)

        return start_spies, stop_spies

    wait_for_quiet(cfg)
    try:
        figures = measure_cluster(cfg, "cluster", "profc", cfg.cluster_profile_relay, hooks, light=False)
    finally:
        for proc in spies.values():
            stop(proc)
    result: dict[str, Any] = {"figures": figures}
    for role, path in paths.items():
        if not os.path.exists(path):
            raise BenchError(f"py-spy wrote no {path}: see {cfg.log_dir}/py-spy-cluster-{role}.log")
        samples, rows = parse_raw_profile(path)
        result[role] = {"samples": samples, "rows": rows, "file": path, "areas": profile_areas(path)}
    shown = f"{figures['relayed_per_s']:,.0f} msgs/s under py-spy"
    log(f"cluster profiles written to {os.path.relpath(paths['node1'], PROJECT_DIR)} and -node2.txt: {shown}")
    return result


def profile_areas(path: str) -> dict[str, int]:
    """Samples of a node's profile (py-spy raw) by what the node was doing: receiving from Redis,
    publishing to it (and within those, redis-py's RESP parser and command packing), the
    WebSocket side, the rest."""
    areas: dict[str, int] = defaultdict(int)
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            areas["samples"] += count
            text = ";".join(frames)
            if "RedisRouter._listener " in text:
                area = "listener"
            elif "RedisRouter._publisher " in text:
                area = "publisher"
            elif "(handlers/" in text or "(tornado/" in text:
                area = "websocket"
            else:
                area = "rest"
            areas[area] += count
            if area in ("listener", "publisher"):
                if "_AsyncRESP3Parser." in text or "_AsyncRESPBase." in text or "HiredisParser" in text:
                    areas[f"{area}_parser"] += count
                if "pack_command" in text:
                    areas[f"{area}_pack"] += count
                if "(asyncio/timeouts.py:" in text:  # redis-py's socket_timeout around each reply
                    areas[f"{area}_timeout"] += count
    return dict(areas)


def profile_areas_text(areas: dict[str, int]) -> str:
    total = areas.get("samples") or 1
    pct = lambda key: f"{100 * areas.get(key, 0) / total:.0f}%"  # noqa: E731
    return (
        f"receiving from Redis (the pub/sub listener: redis-py reading and parsing each message, then "
        f"`RedisRouter._on_pubsub`) {pct('listener')}, of which the RESP parser {pct('listener_parser')} and "
        f"`asyncio.timeout` {pct('listener_timeout')}; publishing (`RedisRouter._publisher`: building the pipeline, "
        f"packing the commands, reading the PUBLISH replies) {pct('publisher')}, of which packing "
        f"{pct('publisher_pack')}, the RESP parser {pct('publisher_parser')} and the `asyncio.timeout` redis-py "
        f"sets around each reply it reads {pct('publisher_timeout')}; the WebSocket side (reading, parsing and "
        f"sending frames) {pct('websocket')}; the rest (the event loop and its timers) {pct('rest')}"
    )


@dataclass(frozen=True)
class ClusterFigure:
    key: str
    label: str
    fmt: str
    better: str  # "higher", "lower" or "" (informative: no ratio)


CLUSTER_FIGURES = [
    ClusterFigure("relayed_per_s", "relayed msgs/s (both directions)", "{:,.0f}", "higher"),
    ClusterFigure("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower"),
    ClusterFigure("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower"),
    ClusterFigure("sustained_per_s", "relayed msgs/s until Redis had every PUBLISH", "{:,.0f}", "higher"),
    ClusterFigure("backlog_s", "PUBLISH backlog at the last delivery (s to drain)", "{:.2f}", ""),
    ClusterFigure("light_rtt_p50_ms", "light load: round trip p50 (ms)", "{:.2f}", "lower"),
    ClusterFigure("light_rtt_p99_ms", "light load: round trip p99 (ms)", "{:.2f}", "lower"),
    ClusterFigure("us_node1", "CPU µs per relayed msg: node 1 (callers; the only node otherwise)", "{:.1f}", "lower"),
    ClusterFigure("us_node2", "CPU µs per relayed msg: node 2 (callees)", "{:.1f}", "lower"),
    ClusterFigure("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    ClusterFigure("us_total", "CPU µs per relayed msg: total (nodes + redis-server)", "{:.1f}", "lower"),
    ClusterFigure("node1_cpu_pct", "node 1 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("node2_cpu_pct", "node 2 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("publish_per_msg", "Redis PUBLISH commands per relayed msg", "{:.2f}", ""),
    ClusterFigure("publish_per_read", "PUBLISH per read of a client socket by Redis (≈ pipeline batch)", "{:.0f}", ""),
    ClusterFigure("redis_in_per_msg", "bytes into Redis per relayed msg", "{:.0f}", ""),
    ClusterFigure("redis_out_per_msg", "bytes out of Redis per relayed msg", "{:.0f}", ""),
]


def cluster_figures(cfg: Config, results: dict[str, list[dict[str, float]]]) -> list[ClusterFigure]:
    figures = list(CLUSTER_FIGURES)
    cores = sorted({k for runs in results.values() for run in runs for k in run if re.fullmatch(r"core\d+_pct", k)})
    for key in cores:
        figures.append(ClusterFigure(key, f"CPU {key[4:-4]} busy (%)", "{:.0f}", ""))
    return figures


def cluster_table(cfg: Config, results: dict[str, list[dict[str, float]]]) -> str:
    variants = cfg.cluster_variants
    head = [CLUSTER_LABELS[v] for v in variants]
    ratio = "single" in variants
    lines = [
        "| figure | " + " | ".join(head) + (" | 2 nodes / 1 node |" if ratio else " |"),
        "| --- | " + " | ".join("---:" for _ in head) + (" | ---: |" if ratio else " |"),
    ]
    flagged = False
    for figure in cluster_figures(cfg, results):
        values = {v: median([run[figure.key] for run in results.get(v, []) if figure.key in run]) for v in variants}
        if all(value is None for value in values.values()):
            continue
        cells = []
        for v in variants:
            cell = "–" if values[v] is None else figure.fmt.format(values[v])
            loadgen = median([run["loadgen_cpu_pct"] for run in results.get(v, [])])
            if (
                values[v] is not None
                and figure.key in ("relayed_per_s", "rtt_p50_ms", "rtt_p99_ms")
                and (loadgen or 0) >= LOADGEN_LIMIT
            ):
                cell += " †"
                flagged = True
            cells.append(cell)
        row = f"| {figure.label} | " + " | ".join(cells)
        if ratio:
            a, b = values.get("cluster"), values.get("single")
            # Per-process rows compare to the single node's only process, so only the total gets a ratio.
            comparable = figure.better and figure.key not in ("us_node1", "us_node2", "us_redis")
            row += " | " + (f"{a / b:.2f}" if comparable and a is not None and b else "–")
        lines.append(row + " |")
    if flagged:
        lines += [
            "",
            f"† The load generator used {LOADGEN_LIMIT}% or more of its core here (median): this rate or time is partly "
            "its own limit. CPU per relayed message is not affected.",
        ]
    return "\n".join(lines)


def cluster_rounds_table(cfg: Config, results: dict[str, list[dict[str, float]]]) -> str:
    variants = cfg.cluster_variants
    lines = [
        "| figure | " + " | ".join(f"{CLUSTER_LABELS[v]}, each round" for v in variants) + " |",
        "| --- | " + " | ".join("---" for _ in variants) + " |",
    ]
    for figure in CLUSTER_FIGURES:
        if not figure.better:
            continue
        cells = [
            " / ".join(figure.fmt.format(run[figure.key]) for run in results.get(v, []) if figure.key in run) or "–"
            for v in variants
        ]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {figure.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cluster_layout_text(cfg: Config) -> str:
    cpus = cfg.cluster_cpus
    if cpus["node1"] is None:
        return "no CPU pinning"
    return (
        f"pinned with taskset: the single node to CPU {cpus['single']}; across nodes node 1 to CPU {cpus['node1']} and "
        f"node 2 to CPU {cpus['node2']}; redis-server to CPU {cpus['redis']}; the load generator and the driver to "
        f"CPU {cpus['loadgen']} (layout `{cfg.layout}`)"
    )


def cluster_report(
    cfg: Config,
    command: str,
    results: dict[str, list[dict[str, float]]],
    facts: dict[str, str],
    other_cpu: float,
    redone: int,
    elapsed: float,
    profile: dict[str, Any] | None,
) -> str:
    relay = cfg.relay
    order = " ".join("ABC"[: len(cfg.cluster_variants)]) + " ..."
    runs = results.get("cluster", [])
    attempts = sum(int(run.get("probe_attempts", 0)) for run in runs)
    unavailable = sum(int(run.get("probe_unavailable", 0)) for run in runs)
    timeouts = sum(int(run.get("probe_timeouts", 0)) for run in runs)
    lines = [
        f"Command: `{command}` ({cfg.rounds} rounds, {order}; medians; {elapsed / 60:.1f} minutes)",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {cluster_layout_text(cfg)}.",
        "",
        f"Sizes: relay {relay['pairs']} pairs × {relay['messages']:,} data messages of {relay['size']} bytes "
        f"(+{relay['warmup']} warm-up each), window {relay['window']}, in each variant: "
        + "; ".join(
            f"**{CLUSTER_LABELS[v]}**: "
            + {
                "single": "webrtc_app without a backplane, as in the table above",
                "single_redis": "one webrtc_app node of a backplane, every pair on it (local delivery, plus the PUBLISH "
                "that tells other nodes)",
                "cluster": "callers on node 1, callees on node 2, every message and acknowledgement through Redis",
            }[v]
            for v in cfg.cluster_variants
        )
        + ". A fresh redis-server (no persistence) and fresh nodes for every measurement. Light load: then, on the "
        f"same processes, {cfg.cluster_light['pairs']} pairs × {cfg.cluster_light['messages']:,} messages "
        f"(+{cfg.cluster_light['warmup']} warm-up), window {cfg.cluster_light['window']}.",
        "",
        f"No loss: across nodes the load generator probed every pair until a message got through both ways before the "
        f"warm-up ({attempts:,} probes for {len(runs) * relay['pairs']:,} pairs over {len(runs)} measurement(s), "
        f"{unavailable} PEER-UNAVAILABLE notice(s) and {timeouts} silent probe(s) during the probes); from then on "
        "no notice arrived, every message arrived once and in order, and each node's /metrics counted exactly the "
        "messages its sockets sent, none undelivered, no backplane error.",
        "",
        f"Other processes on the machine (this machine is shared): at most {other_cpu:.0f}% of one core during a kept "
        f"measurement; {redone} measurement(s) redone because they used over {cfg.max_other_cpu:g}%.",
        "",
        cluster_table(cfg, results),
        "",
        "<details><summary>Each round</summary>",
        "",
        cluster_rounds_table(cfg, results),
        "",
        "</details>",
    ]
    if profile:
        figures = profile["figures"]
        lines += [
            "",
            f"**Profiles across nodes** (py-spy {version_of([py_spy_path(cfg), '--version']).split()[-1]}, "
            f"{cfg.profile_rate} samples/s on each node at once, `record --function`, Python frames; samples of a node "
            f"waiting in epoll left out; a separate run of {figures['relayed']:,} relayed messages, "
            f"{figures['relayed_per_s']:,.0f} msgs/s while sampled; raw stacks in "
            f"`{os.path.relpath(cfg.out_dir, PROJECT_DIR)}/profile-cluster-node1.txt` and `-node2.txt`). Self = samples "
            "whose innermost Python frame is the function (time in the C code it calls counts as its own); total = "
            "samples with the function anywhere on the stack.",
        ]
        for role, what in (("node1", "callers"), ("node2", "callees")):
            lines += [
                "",
                f"Node {role[-1]} ({what}; {figures[f'{role}_cpu_pct']:.0f}% of a core while sampled), "
                f"{profile[role]['samples']:,} samples:",
                "",
                profile_table(profile[role], top=10),
                "",
                f"Node {role[-1]}'s samples by what it was doing: {profile_areas_text(profile[role]['areas'])}.",
            ]
    for warning in cfg.warnings:
        lines += ["", f"Warning: {warning}"]
    return "\n".join(lines)


def run_cluster(
    cfg: Config,
    args: argparse.Namespace,
    command: str,
    facts: dict[str, str],
    stamp: str,
    started: float,
    tree_before: str | None,
) -> int:
    """--cluster: alternate rounds of the relay on one node, one node with Redis and two nodes
    through Redis; medians; writes the bench:cluster block of docs/benchmarks.md."""
    for name in ("peer", "ws (inside peer)"):
        facts.pop(name, None)
    facts["redis-server"] = version_of([cfg.redis_server, "--version"]).split(" v=")[-1].split()[0]
    facts["redis-py"] = version_of([cfg.python, "-c", "import redis; print(redis.__version__)"])
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {cluster_layout_text(cfg)}")
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    other_cpu = 0.0
    redone = 0
    for n in range(1, cfg.rounds + 1):
        for variant in cfg.cluster_variants:
            for attempt in range(1 + cfg.retries):
                tag = f"r{n}{'scr'[CLUSTER_VARIANTS.index(variant)]}{attempt or ''}"
                wait_for_quiet(cfg)
                figures = measure_cluster(cfg, variant, tag)
                if figures["other_cpu_pct"] <= cfg.max_other_cpu or attempt == cfg.retries:
                    break
                redone += 1
                log(
                    f"round {n} {CLUSTER_LABELS[variant]}: other processes used {figures['other_cpu_pct']:.0f}% of a core "
                    f"(over {cfg.max_other_cpu:g}%): measuring again"
                )
            results[variant].append(figures)
            other_cpu = max(other_cpu, figures["other_cpu_pct"])
            shown = ", ".join(
                f"{k} {v:,.2f}" for k, v in figures.items() if k not in ("relayed",) and not k.startswith(("probe_", "core"))
            )
            log(f"round {n} {CLUSTER_LABELS[variant]:17}: {shown}")
    profile = None if args.no_profile else run_cluster_profile(cfg)
    if tree_before is not None and tree_state() != tree_before:
        warning = (
            "webrtc_app's working tree changed during the run (a commit or an edit): its rounds may not all "
            "measure the same code; use --rev to benchmark a fixed revision"
        )
        cfg.warnings.append(warning)
        log(f"WARNING: {warning}")
    elapsed = time.monotonic() - started
    results_md = cluster_report(cfg, command, results, facts, other_cpu, redone, elapsed, profile)
    with open(os.path.join(cfg.out_dir, f"results-cluster-{stamp}.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "command": command,
                "facts": facts,
                "layout": cfg.cluster_cpus,
                "results": results,
                "profile": profile,
                "warnings": cfg.warnings,
            },
            handle,
            indent=1,
            default=str,
        )
    with open(os.path.join(cfg.out_dir, "results-cluster.md"), "w", encoding="utf-8") as handle:
        handle.write(results_md + "\n")
    print(results_md)
    full = not cfg.quick and set(cfg.cluster_variants) == set(CLUSTER_VARIANTS)
    if not args.no_docs and (full or args.write_docs):
        with open(DOCS_FILE, encoding="utf-8") as handle:
            text = handle.read()
        with open(DOCS_FILE, "w", encoding="utf-8") as handle:
            handle.write(replace_between(text, CLUSTER_START, CLUSTER_END, results_md))
        log(f"results written to {os.path.relpath(DOCS_FILE, PROJECT_DIR)} (between the bench:cluster markers)")
    else:
        log(f"results written to {os.path.relpath(cfg.out_dir, PROJECT_DIR)}/results-cluster.md only (docs not touched)")
    return 0


# ------------------------------------------------------------------ setup


def install_node_packages(cfg: Config, npm: str, peer_spec: str | None, ws_spec: str) -> None:
    """npm install the PeerJS server (unless ``peer_spec`` is None) and the load generator's ws,
    each in a folder of its own."""
    for folder, spec in (("peer", peer_spec), ("loadgen", ws_spec)):
        if spec is None:
            continue
        path = os.path.join(cfg.npm_dir, folder)
        if os.path.isdir(os.path.join(path, "node_modules", spec.split("@")[0] or spec)):
            continue
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "package.json"), "w", encoding="utf-8") as handle:
            json.dump({"name": f"bench-{folder}", "private": True}, handle)
        log(f"npm install {spec} in {path}")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel", "error", spec],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise BenchError(f"npm install {spec} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def tree_state() -> str:
    """A fingerprint of webrtc_app's working tree: HEAD, changes to tracked files, untracked files."""
    digest = hashlib.sha1()
    for cmd in (["rev-parse", "HEAD"], ["diff", "HEAD", "--", ".", ":!bench", ":!docs/benchmarks.md"]):
        digest.update(subprocess.run(["git", "-C", PROJECT_DIR, *cmd], capture_output=True, timeout=60).stdout)
    untracked = subprocess.run(
        ["git", "-C", PROJECT_DIR, "ls-files", "--others", "--exclude-standard", "--", ".", ":!bench"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    for name in untracked:
        try:
            with open(os.path.join(PROJECT_DIR, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
        except OSError:
            pass
    return digest.hexdigest()


def export_revision(rev: str, folder: str) -> None:
    """Unpack ``rev`` of this repository into ``folder`` (read-only for the repository)."""
    archive = subprocess.run(["git", "-C", PROJECT_DIR, "archive", "--format=tar", rev], capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace')}")
    unpack = subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, capture_output=True, timeout=120)
    if unpack.returncode != 0:
        raise BenchError(f"cannot unpack {rev}: {unpack.stderr.decode(errors='replace')}")


def raise_open_files(sockets: int) -> int:
    """Raise this process's open-file limit (inherited by the servers and the load generator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(soft, NOFILE), max(hard, NOFILE)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue  # no CAP_SYS_RESOURCE: the hard limit stays, raise the soft one to it
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sockets + 1000:
        raise BenchError(f"the open-file limit is {soft}; {sockets:,} sockets need more (raise ulimit -n)")
    return soft


def build_config(args: argparse.Namespace) -> Config:
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
    python = args.python or sys.executable
    node = shutil.which("node")
    if not node:
        raise BenchError("node (Node.js 18+) is required")
    # Across nodes (--cluster): which CPU each process runs on, by layout.
    if pin:
        c0, c1 = server_cpu, loadgen_cpu
        if args.cluster_layout == "apart":
            # Each node has a core, as the single node has (nodes of a cluster run on machines
            # of their own), shared only with a light process: Redis (~5% of a core here) on
            # node 1's, the load generator (~10%) and the driver on node 2's.
            cluster_cpus = {"single": c0, "node1": c0, "node2": c1, "redis": c0, "loadgen": c1}
        else:  # together: both nodes share CPU 0 (webrtc_app has one core in every variant)
            cluster_cpus = {"single": c0, "node1": c0, "node2": c0, "redis": c1, "loadgen": c1}
    else:
        cluster_cpus = dict.fromkeys(("single", "node1", "node2", "redis", "loadgen"))
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
        python=python,
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
        # Across nodes a message costs 10-20 times more: the same sizes give seconds of samples.
        cluster_profile_relay={**relay},
        # Light load: a few pairs, one message in flight each, so a round trip is not queueing.
        cluster_light={**relay, "pairs": 5, "messages": 200 if quick else 1000, "warmup": 20 if quick else 50, "window": 1},
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset of relay,calls,idle ('none': profile only)"
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
    args = parser.parse_args(argv)
    if args.workloads == "cluster":
        args.cluster = True
    elif "cluster" in args.workloads.split(","):
        parser.error("--workloads cluster runs alone (it is the same as --cluster)")
    return args


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace, command: str) -> int:
    started = time.monotonic()
    cfg = build_config(args)
    nofile = raise_open_files(max(int(s) for s in str(cfg.idle["steps"]).split(",")))
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
        if cfg.cluster:
            cfg.redis_server = find_redis_server(cfg.redis_server)  # before anything is installed
        if args.rev:
            # Resolved once, so the export and the commit named in the results are the same
            # even if someone commits meanwhile.
            commit = version_of(["git", "-C", PROJECT_DIR, "rev-parse", "--verify", f"{args.rev}^{{commit}}"])
            if not re.fullmatch(r"[0-9a-f]{40}", commit):
                raise BenchError(f"{args.rev!r} is not a revision of {PROJECT_DIR}")
            server_tmp = cfg.server_dir = tempfile.mkdtemp(prefix="webrtc-bench-server-")
            export_revision(commit, server_tmp)
            cfg.rev = commit
        tree_before = None if args.rev else tree_state()
        install_node_packages(cfg, npm, None if cfg.cluster else args.peer_spec, "ws@^8")
        facts = machine_facts(cfg)
        facts["open-file limit"] = str(nofile)
        if cfg.cluster:
            return run_cluster(cfg, args, command, facts, stamp, started, tree_before)
        log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
        results: dict[str, dict[str, list[dict[str, float]]]] = {kind: defaultdict(list) for kind in SERVERS}
        other_cpu = 0.0
        redone = 0
        for n in range(1, cfg.rounds + 1):
            for workload in cfg.workloads:
                for kind in (k for k in SERVERS if k in cfg.servers):
                    for attempt in range(1 + cfg.retries):
                        tag = f"r{n}{workload[0]}{kind[0]}{attempt or ''}"
                        wait_for_quiet(cfg)
                        figures = measure(cfg, kind, workload, tag)
                        if figures["other_cpu_pct"] <= cfg.max_other_cpu or attempt == cfg.retries:
                            break
                        redone += 1
                        log(
                            f"round {n} {workload} {LABELS[kind]}: other processes used {figures['other_cpu_pct']:.0f}% "
                            f"of a core (over {cfg.max_other_cpu:g}%): measuring again"
                        )
                    results[kind][workload].append(figures)
                    other_cpu = max(other_cpu, figures.get("other_cpu_pct", 0.0))
                    shown = ", ".join(
                        f"{k} {v:,.2f}"
                        for k, v in figures.items()
                        if k not in ("relayed", "idle_seconds") and not k.startswith("rss_mib")
                    )
                    log(f"round {n} {workload:5} {LABELS[kind]:10}: {shown}")
                    if figures["other_cpu_pct"] > cfg.max_other_cpu:
                        log(f"WARNING: other processes used {figures['other_cpu_pct']:.0f}% of a core during this measurement")
        profile = None if args.no_profile or "webrtc_app" not in cfg.servers else run_profile(cfg)
        if tree_before is not None and tree_state() != tree_before:
            warning = (
                "webrtc_app's working tree changed during the run (a commit or an edit): its rounds may not all "
                "measure the same code; use --rev to benchmark a fixed revision"
            )
            cfg.warnings.append(warning)
            log(f"WARNING: {warning}")
        elapsed = time.monotonic() - started
        results_md = report(cfg, command, results, facts, other_cpu, redone, elapsed)
        profile_md = None
        if profile:
            profile_md = profile_report(cfg, profile, facts)
        with open(os.path.join(cfg.out_dir, f"results-{stamp}.json"), "w", encoding="utf-8") as handle:
            json.dump(
                {"command": command, "facts": facts, "results": results, "profile": profile, "warnings": cfg.warnings},
                handle,
                indent=1,
                default=str,
            )
        with open(os.path.join(cfg.out_dir, "results.md"), "w", encoding="utf-8") as handle:
            handle.write(results_md + "\n\n" + (profile_md or "") + "\n")
        print(results_md)
        if profile_md:
            print("\n" + profile_md)
        full = not cfg.quick and set(cfg.servers) == set(SERVERS) and set(cfg.workloads) == set(WORKLOADS)
        if not args.no_docs and (full or args.write_docs):
            write_docs(results_md, profile_md)
            log(f"results written to {os.path.relpath(DOCS_FILE, PROJECT_DIR)}")
        else:
            log(f"results written to {os.path.relpath(cfg.out_dir, PROJECT_DIR)}/results.md only (docs not touched)")
        return 0
    finally:
        cleanup()
        for folder in (temporary, server_tmp):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
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
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
