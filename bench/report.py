"""The results of webrtc_app against PeerJS as markdown (docs/benchmarks.md, "Results"): the
figures of each workload, medians and ratios, each round, and the py-spy profile tables."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config import ROUND_WORKLOADS, SERVERS, Config
from bench.environment import version_of
from bench.profiling import py_spy_path

#: A rate or time is flagged (†) when the load generator used this much of its core or more.
LOADGEN_LIMIT = 90

#: results[kind][workload] = the figures of each round
Results = dict[str, dict[str, list[dict[str, float]]]]


@dataclass(frozen=True)
class Figure:
    workload: str
    key: str
    label: str
    fmt: str
    better: str  # "higher" or "lower" or "" (informative)


def figures_for(cfg: Config) -> list[Figure]:
    """The rows of the results table, in order (the idle rows depend on --idle-steps)."""
    steps = cfg.idle_steps
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
    # Several load generators side by side (loadgens.py): each one's CPU too.
    for workload, count in (("relay", cfg.relay_loadgens), ("calls", cfg.calls_loadgens)):
        at = max(n for n, f in enumerate(figures) if f.workload == workload and f.key == "loadgen_cpu_pct") + 1
        figures[at:at] = [
            Figure(workload, f"loadgen_cpu_pct_{n}", f"load generator {n} of {count} CPU (% of one core)", "{:.0f}", "")
            for n in range(1, count + 1 if count > 1 else 1)
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
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def fmt_value(figure: Figure, value: float | None) -> str:
    return "–" if value is None else figure.fmt.format(value)


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


def results_table(cfg: Config, results: Results) -> str:
    """Medians of every figure for both servers, and their ratio."""
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


def rounds_table(cfg: Config, results: Results) -> str:
    """Every round's value of the figures that have a ratio."""
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


def rounds_text(cfg: Config) -> str:
    """How the measurements were repeated: rounds for relay, calls and idle, once for the others."""
    rounds = [w for w in cfg.workloads if w in ROUND_WORKLOADS]
    once = [w for w in cfg.workloads if w not in ROUND_WORKLOADS]
    parts = [f"{cfg.rounds} rounds of {', '.join(rounds)}, A B A B; medians"] if rounds else []
    return "; ".join(parts + ([f"{' and '.join(once)} once"] if once else [])) or "nothing measured"


def report(
    cfg: Config, command: str, results: Results, facts: dict[str, str], other_cpu: float, redone: int, elapsed: float
) -> str:
    """The block between the bench:results markers: command, machine, sizes, tables, warnings."""
    pin = (
        f"server pinned to CPU {cfg.server_cpu}, load generator and driver to CPU {cfg.loadgen_cpu} (taskset)"
        if cfg.server_cpu is not None
        else "no CPU pinning"
    )
    lines = [
        f"Command: `{command}` ({rounds_text(cfg)}; {elapsed / 60:.1f} minutes)",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {pin}.",
        "",
        f"Sizes: relay {cfg.relay['pairs']} pairs × {cfg.relay['messages']:,} data messages of {cfg.relay['size']} bytes "
        f"(+{cfg.relay['warmup']} warm-up each), window {cfg.relay['window']}; calls {cfg.calls['calls']:,} "
        f"({cfg.calls['concurrency']} at a time, {2 + 2 * cfg.calls['candidates']} messages each, "
        f"+{cfg.calls['warmup-calls']} warm-up, {cfg.calls_loadgens} load generator(s)); "
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


# ---------------------------------------------------------------- profiles


def profile_table(profile: dict[str, Any], top: int = 15) -> str:
    """The ``top`` functions of a parsed profile by self time, with their self and total %."""
    samples = profile["samples"] or 1
    lines = [
        "| # | function (file:first line, or library) | self % | total % |",
        "| ---: | --- | ---: | ---: |",
    ]
    for n, (name, own, total) in enumerate(profile["rows"][:top], 1):
        lines.append(f"| {n} | `{name}` | {100 * own / samples:.1f} | {100 * total / samples:.1f} |")
    return "\n".join(lines)


def py_spy_version(cfg: Config) -> str:
    return version_of([py_spy_path(cfg), "--version"]).split()[-1]


def getpid_sentence(callers: list[tuple[str, int]], share: Callable[[int], str]) -> str:
    """Who calls getpid in the native profile: asyncio's C get_running_loop() on Python 3.11."""
    if not callers:
        return (
            "`getpid` (which Python 3.11's C `get_running_loop()` calls for every `Future()`, task and `call_soon`) "
            "does not appear."
        )
    return (
        "`getpid` is called by asyncio's C `get_running_loop()`, which Python 3.11 runs for every `Future()`, task "
        "and `call_soon`, through (innermost Python frame): " + "; ".join(f"`{name}` {share(n)}" for name, n in callers[:5]) + "."
    )


def profile_report(cfg: Config, profile: dict[str, Any], facts: dict[str, str]) -> str:
    """The block between the bench:profile markers, from profiling.run_profile()."""
    relay, native, idle = profile["relay_python"], profile["relay_native"], profile["idle_idle"]
    groups = profile["native"]["groups"]
    share = lambda n: f"{100 * n / (groups['total'] or 1):.1f}%"  # noqa: E731
    lines = [
        f"py-spy {py_spy_version(cfg)}, {cfg.profile_rate} samples/s, `record --function` (line numbers folded into each "
        f"function's first line); samples of the server waiting in epoll are left out. {facts['date']}, webrtc_app "
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
        + ". "
        + getpid_sentence(groups["getpid_callers"], share),
        "",
        f"**{cfg.idle_steps[-1]:,} idle sockets** held {cfg.idle_seconds:g} s with the heartbeat on "
        f"({idle['idle_cpu_pct']:.1f}% of a core while sampled), {profile['idle']['samples']:,} samples of the server "
        "busy:",
        "",
        profile_table(profile["idle"], top=10),
    ]
    return "\n".join(lines)
