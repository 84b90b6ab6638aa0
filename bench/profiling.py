"""py-spy on webrtc_app (docs/benchmarks.md, "Where webrtc_app spends its time"): under the
relay load and with idle sockets on one node, and on both nodes at once across nodes; and
py-spy's raw (collapsed) stacks aggregated by function, library or area of the code."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench import PROJECT_DIR, BenchError, log
from bench.cluster import measure_cluster
from bench.config import Config
from bench.processes import terminate
from bench.sampling import wait_for_quiet
from bench.servers import Server, fresh, start_server
from bench.workloads import run_idle, run_relay


def py_spy_path(cfg: Config) -> str:
    """py-spy beside the Python that runs webrtc_app, else on PATH."""
    beside = os.path.join(os.path.dirname(cfg.python), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy") or beside


class PySpy:
    """``py-spy record`` on one process, writing ``path`` in ``fmt`` (raw or flamegraph) when stopped.
    It pauses the server for each sample (its default: its --nonblocking mode failed on most samples
    here and the ones it kept were skewed); samples of the server waiting in epoll are left out."""

    def __init__(self, cfg: Config, label: str, pid: int, path: str, fmt: str = "raw", options: tuple[str, ...] = ()) -> None:
        self.cfg, self.label, self.path = cfg, label, path
        self.log_path = os.path.join(cfg.log_dir, f"py-spy-{label}.log")
        self.cmd = [py_spy_path(cfg), "record", "--pid", str(pid), "--rate", str(cfg.profile_rate), "--format", fmt]
        self.cmd += ["-o", path, *options]
        self.proc: subprocess.Popen[Any] | None = None
        if os.path.exists(path):
            os.remove(path)

    def log_tail(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-2000:]

    def errors(self) -> int:
        """Samples py-spy failed to take, from its summary line (-1 if it printed none)."""
        match = re.search(r"Samples: (\d+) Errors: (\d+)", self.log_tail())
        return int(match.group(2)) if match else -1

    def kill(self) -> None:
        if self.proc:
            terminate(self.proc)


def hooks(spies: list[PySpy]) -> tuple[Callable[[], None], Callable[[], None]]:
    """What starts py-spy on each process (on the load generator's CPU) before the load starts,
    and what stops it (it writes its file on Ctrl-C)."""

    def attach() -> None:
        for spy in spies:
            with open(spy.log_path, "wb") as out:
                spy.proc = spy.cfg.children.spawn(spy.cmd, spy.cfg.loadgen_cpu, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        for spy in spies:
            if spy.proc and spy.proc.poll() is not None:
                raise BenchError(f"py-spy failed to start on {spy.label}:\n{spy.log_tail()}")

    def detach() -> None:
        for spy in spies:
            if spy.proc:
                spy.proc.send_signal(signal.SIGINT)
        for spy in spies:
            if spy.proc:
                try:
                    spy.proc.wait(60)
                finally:
                    terminate(spy.proc)
            if not os.path.exists(spy.path):
                raise BenchError(f"py-spy wrote no {spy.path}:\n{spy.log_tail()}")

    return attach, detach


def run_profile(cfg: Config) -> dict[str, Any]:
    """webrtc_app (the first revision) sampled by py-spy under the relay load (Python frames, then
    native frames too, then a flame graph) and while 10,000 sockets sit idle; answers the aggregated profiles."""
    if not os.path.exists(py_spy_path(cfg)):
        raise BenchError("py-spy is not installed: pip install -r bench/requirements.txt")
    idle_args = {**cfg.idle, "steps": str(cfg.idle["steps"]).split(",")[-1]}
    passes = (
        # name, workload, py-spy format, options, output
        ("python", "relay", "raw", ("--function",), "profile-relay.txt"),
        ("native", "relay", "raw", ("--function", "--native"), "profile-relay-native.txt"),
        ("flamegraph", "relay", "flamegraph", (), "profile-relay.svg"),
        ("idle", "idle", "raw", ("--function",), "profile-idle.txt"),
    )
    results: dict[str, Any] = {}
    for name, workload, fmt, options, filename in passes:
        path, tag = os.path.join(cfg.out_dir, filename), f"prof{name[0]}"
        wait_for_quiet(cfg)
        with fresh(f"profile ({name})") as procs:
            server = procs.add(start_server(cfg, cfg.revisions[0], f"profile-{name}"))
            spy = PySpy(cfg, name, server.pid, path, fmt, options)
            attach, detach = hooks([spy])
            try:
                if workload == "relay":
                    figures = run_relay(cfg, server, tag, cfg.profile_relay, on_ready=attach, on_measured=detach)
                else:
                    figures = run_idle(cfg, server, tag, idle_args, on_hold=attach, on_held=detach)
            finally:
                spy.kill()
        figures["py_spy_errors"] = spy.errors()
        results[f"{workload}_{name}"] = figures
        shown = f"{figures['relayed_per_s']:,.0f} msgs/s" if workload == "relay" else f"{figures['idle_cpu_pct']:.1f}% CPU idle"
        log(f"profile ({name}) written to {os.path.relpath(path, PROJECT_DIR)}: {shown} under py-spy")
        if fmt == "raw":
            samples, rows = parse_raw_profile(path)
            results[name] = {"samples": samples, "rows": rows, "file": path}
            if "--native" in options:
                results[name]["groups"] = native_groups(path)
    return results


def run_cluster_profile(cfg: Config) -> dict[str, Any]:
    """py-spy on node 1 and node 2 at once (Python frames, --function) under the relay across nodes."""
    if not os.path.exists(py_spy_path(cfg)):
        raise BenchError("py-spy is not installed: pip install -r bench/requirements.txt")
    paths = {role: os.path.join(cfg.out_dir, f"profile-cluster-{role}.txt") for role in ("node1", "node2")}
    spies: list[PySpy] = []

    def on_nodes(nodes: list[Server]) -> tuple[Any, Any]:
        for (role, path), node in zip(paths.items(), nodes, strict=True):
            spies.append(PySpy(cfg, f"cluster-{role}", node.pid, path, options=("--function",)))
        return hooks(spies)

    wait_for_quiet(cfg)
    try:
        # Across nodes a message costs more: the relay's own sizes give seconds of samples.
        figures = measure_cluster(cfg, cfg.revisions[0], "cluster", "profc", cfg.relay, on_nodes, light=False)
    finally:
        for spy in spies:
            spy.kill()
    result: dict[str, Any] = {"figures": figures}
    for role, path in paths.items():
        samples, rows = parse_raw_profile(path)
        result[role] = {"samples": samples, "rows": rows, "file": path, "areas": profile_areas(path)}
    shown = f"{figures['relayed_per_s']:,.0f} msgs/s under py-spy"
    log(f"cluster profiles written to {os.path.relpath(paths['node1'], PROJECT_DIR)} and -node2.txt: {shown}")
    return result


# ---------------------------------------------------------------- py-spy's raw stacks


def _stacks(path: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) stacks as (code frames, outermost first; samples)."""
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            # py-spy puts the thread name first ("process 1:..." / "thread (0x..)"): skip non-code frames.
            frames = [f for f in stack.split(";") if f and "(" in f and not f.startswith(("process ", "thread "))]
            stacks.append((frames, int(count_text)))
    return stacks


def frame_name(frame: str) -> str:
    """'write_message (/…/site-packages/tornado/websocket.py:123)' -> 'write_message (tornado/websocket.py:123)'."""
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


def parse_raw_profile(path: str) -> tuple[int, list[tuple[str, int, int]]]:
    """py-spy's raw stacks -> total samples, [(function, self, total)] by self time."""
    self_counts: dict[str, int] = defaultdict(int)
    total_counts: dict[str, int] = defaultdict(int)
    samples = 0
    for frames, count in _stacks(path):
        samples += count
        if not frames:
            continue
        self_counts[frame_name(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            total_counts[name] += count
    rows = sorted(((name, n, total_counts[name]) for name, n in self_counts.items()), key=lambda r: -r[1])
    return samples, rows


def native_groups(path: str) -> dict[str, Any]:
    """From a --native profile: self time by library, and who calls getpid (innermost Python frame)."""
    libraries: dict[str, int] = defaultdict(int)
    getpid_callers: dict[str, int] = defaultdict(int)
    total = 0
    for frames, count in _stacks(path):
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        library = re.search(r"\(([^():]+\.so[.\d]*)\)$", leaf)
        libraries[library.group(1) if library else "Python code (the interpreter running it)"] += count
        if leaf.startswith("getpid "):
            python = [f for f in frames if re.search(r"\.py:\d+\)$", f)]
            getpid_callers[frame_name(python[-1]) if python else "?"] += count
    return {
        "total": total,
        "libraries": sorted(libraries.items(), key=lambda kv: -kv[1]),
        "getpid_callers": sorted(getpid_callers.items(), key=lambda kv: -kv[1]),
    }


#: What a node of the backplane does, by the functions on a sample's stack (routing/redis/, routing/nodes.py),
#: checked in this order: the first that matches names the sample's area.
AREAS = (
    # Its inbox: redis-py reading each SPUBLISH pushed to it, then the batch decoded and delivered.
    ("receive", ("Subscriber._read ",)),
    # Its outbox: the publisher task taking the loop iteration's batches, packing one SPUBLISH
    # per destination node and writing them (Outlet.send).
    ("publish", ("Publisher.run ", "Publisher._publish ", "Outlet.send ")),
    # Redis's answers to those SPUBLISH (how many nodes heard each), read by each outlet.
    ("answers", ("Outlet._read ",)),
    ("websocket", ("(handlers/", "(tornado/")),
)
#: Parts of an area, by the functions on the stack (several may match one sample).
AREA_PARTS = {
    "receive": (
        ("parser", ("read_response", "HiredisParser", "_AsyncRESP")),
        ("decode", ("decode (routing/wire.py",)),
        ("deliver", ("MemoryRouter.deliver ", "MemoryRouter.deliver_all ")),
    ),
    "publish": (("pack", ("pack_command",)), ("encode", ("Batch.encode ",))),
    "websocket": (("relay", ("NodeRouting.relay ",)),),
}


def profile_areas(path: str) -> dict[str, int]:
    """Samples of a node's profile (py-spy raw) by what the node was doing (AREAS, and the
    parts of each in AREA_PARTS), the rest being the event loop and its timers."""
    areas: dict[str, int] = defaultdict(int)
    for frames, count in _stacks(path):
        if not frames:
            continue
        areas["samples"] += count
        text = ";".join(frame_name(f) for f in frames)
        area = next((name for name, marks in AREAS if any(mark in text for mark in marks)), "rest")
        areas[area] += count
        for part, marks in AREA_PARTS.get(area, ()):
            if any(mark in text for mark in marks):
                areas[f"{area}_{part}"] += count
    return dict(areas)
