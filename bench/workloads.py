"""The three workloads against one server (docs/benchmarks.md, "The workloads"): relay, calls
and idle. Each runs the load generator, samples the server's CPU and memory at its events,
checks webrtc_app's own counters, and answers the figures of one measurement."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import BenchError
from bench.config import LABELS, Config
from bench.loadgen import LoadGen
from bench.sampling import HZ, sample, usage
from bench.servers import Server, start_server, stop_server

#: Called at a point of a measured phase (py-spy attaches and detaches through these).
Hook = Callable[[], None] | None


def metric_delta(before: dict[str, float] | None, after: dict[str, float] | None, name: str) -> float | None:
    """How much a /metrics counter grew, or None when it was not read."""
    if before is None or after is None or name not in before or name not in after:
        return None
    return after[name] - before[name]


def check_count(cfg: Config, what: str, got: float | None, expected: float) -> None:
    """webrtc_app counted what the load generator did; a count missing from /metrics only warns."""
    if got is None:
        cfg.warn(f"webrtc_app's /metrics has no {what}: server-side count not checked")
        return
    if got != expected:
        raise BenchError(f"webrtc_app counted {got:g} for {what}, the load generator {expected:g}: messages lost or duplicated")


def check_relayed(cfg: Config, m0: dict[str, float] | None, m1: dict[str, float] | None, relayed: float) -> None:
    """webrtc_app's own counters agree with the load generator: every message relayed, none undelivered."""
    check_count(cfg, "webrtc_messages_relayed_total", metric_delta(m0, m1, "webrtc_messages_relayed_total"), relayed)
    check_count(cfg, "webrtc_messages_undelivered_total", metric_delta(m0, m1, "webrtc_messages_undelivered_total"), 0)


def measure_phase(
    cfg: Config, server: Server, lg: LoadGen, on_ready: Hook = None, on_measured: Hook = None, open_sockets_after: bool = False
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
    """The server's, the load generator's and other processes' % of a core, from usage()."""
    return {key: use[key] for key in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct")}


def run_relay(
    cfg: Config, server: Server, tag: str, args: dict[str, Any], on_ready: Hook = None, on_measured: Hook = None
) -> dict[str, float]:
    """The relay workload: pairs exchanging acknowledged messages, a window in flight each."""
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
    """The calls workload: connect two sockets, offer, answer, candidates, close; many at a time."""
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
    cfg: Config, server: Server, tag: str, args: dict[str, Any] | None = None, on_hold: Hook = None, on_held: Hook = None
) -> dict[str, float]:
    """The idle workload: open sockets step by step (CPU per socket opened, RSS per socket),
    then hold them all for cfg.idle_seconds (CPU while idle)."""
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
    """One workload against a freshly started server, stopped afterwards; relay and calls with
    several load generators side by side when cfg says so (loadgens.py)."""
    from bench.loadgens import run_calls_split, run_relay_split  # it builds on this module

    server = start_server(cfg, kind, tag)
    finished = False
    try:
        if workload == "relay":
            if cfg.relay_loadgens > 1:
                figures = run_relay_split(cfg, server, tag, cfg.relay, cfg.relay_loadgens)
            else:
                figures = run_relay(cfg, server, tag, cfg.relay)
        elif workload == "calls":
            if cfg.calls_loadgens > 1:
                figures = run_calls_split(cfg, server, tag, cfg.calls_loadgens)
            else:
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
        if finished:
            stop_server(server)  # checks its exit status and its log
        else:
            server.process.stop(timeout=10)  # the first error is the one to report
