"""The three workloads against one server (docs/benchmarks.md, "The workloads"): relay, calls
and idle. Each runs the load generator, samples the server's CPU and memory at its events,
checks webrtc_app's own counters, and answers the figures of one measurement."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import BenchError
from bench.config import Config, Subject
from bench.loadgen import LoadGens, merged, split
from bench.sampling import HZ, snapshot, spent
from bench.servers import Server, alive, fresh, start_server

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
    cfg: Config, server: Server, group: LoadGens, on_ready: Hook = None, on_measured: Hook = None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The measured phase of relay or calls: each load generator's result and the CPU used between
    all being ready and all having measured, with webrtc_app's own counters checked."""
    pids = {"server": server.pid, **group.pids}
    try:
        group.expect("ready", cfg.event_timeout)
        m0 = server.metrics()
        if on_ready:
            on_ready()
        s0 = snapshot(pids)
        group.go()
        results = group.expect("measured", cfg.event_timeout)
        s1 = snapshot(pids)
        if on_measured:
            on_measured()
        m1 = server.metrics()
        if server.kind == "webrtc_app":
            check_relayed(cfg, m0, m1, sum(r["relayed"] for r in results))
        group.go()
        group.finish()
    except BaseException:
        group.kill()
        raise
    return results, spent(s0, s1)


def cpu_shares(use: dict[str, float], count: int) -> dict[str, float]:
    """The server's, the load generators' and other processes' % of a core, and with several load
    generators each one's (loadgen_cpu_pct_1, _2, ...)."""
    shares = {key: use[key] for key in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct")}
    if count > 1:
        shares.update({f"loadgen_cpu_pct_{n}": use[f"loadgen{n}_cpu_pct"] for n in range(1, count + 1)})
        shares["loadgens"] = count
    return shares


def run_relay(
    cfg: Config, server: Server, tag: str, args: dict[str, Any], count: int = 1, on_ready: Hook = None, on_measured: Hook = None
) -> dict[str, float]:
    """The relay workload: pairs exchanging acknowledged messages, a window in flight each; on
    ``count`` load generators, the pairs split between them."""
    shares = [{**args, "pairs": pairs, **({"raw": 1} if count > 1 else {})} for pairs in split(args["pairs"], count) if pairs]
    results, use = measure_phase(cfg, server, LoadGens(cfg, server, "relay", shares, tag), on_ready, on_measured)
    relayed = sum(r["relayed"] for r in results)
    rate, p50, p99 = merged(results, "relayed", "rtt")
    return {
        "relayed_per_s": rate,
        "rtt_p50_ms": p50,
        "rtt_p99_ms": p99,
        "cpu_us_per_msg": 1e6 * use["server_cpu_s"] / relayed,
        **cpu_shares(use, len(shares)),
        "relayed": relayed,
    }


def run_calls(cfg: Config, server: Server, tag: str, count: int = 1) -> dict[str, float]:
    """The calls workload: connect two sockets, offer, answer, candidates, close; many at a time;
    on ``count`` load generators, the calls, warm-up calls and calls at a time split between them."""
    args = cfg.calls
    shares = [
        {**args, "calls": calls, "warmup-calls": warmup, "concurrency": max(1, concurrency), **({"raw": 1} if count > 1 else {})}
        for calls, warmup, concurrency in zip(
            split(args["calls"], count), split(args["warmup-calls"], count), split(args["concurrency"], count), strict=True
        )
    ]
    results, use = measure_phase(cfg, server, LoadGens(cfg, server, "calls", shares, tag))
    if server.kind == "webrtc_app":
        check_count(cfg, "webrtc_open_sockets after the calls", (server.metrics() or {}).get("webrtc_open_sockets"), 0)
    calls = sum(r["calls"] for r in results)
    if calls != args["calls"]:
        raise BenchError(f"the load generators made {calls} calls, expected {args['calls']}")
    rate, p50, p99 = merged(results, "calls", "setup")
    return {
        "calls_per_s": rate,
        "setup_p50_ms": p50,
        "setup_p99_ms": p99,
        "cpu_ms_per_call": 1e3 * use["server_cpu_s"] / calls,
        **cpu_shares(use, count),
    }


def run_idle(
    cfg: Config, server: Server, tag: str, args: dict[str, Any] | None = None, on_hold: Hook = None, on_held: Hook = None
) -> dict[str, float]:
    """The idle workload: open sockets step by step (CPU per socket opened, RSS per socket),
    then hold them all for cfg.idle_seconds (CPU while idle)."""
    args = args or cfg.idle
    lg = LoadGens(cfg, server, "idle", [args], tag)
    pids = {"server": server.pid, **lg.pids}
    figures: dict[str, float] = {}
    steps = [int(s) for s in str(args["steps"]).split(",")]
    others = []
    try:
        lg.expect("ready", cfg.event_timeout)
        base = snapshot(pids)
        lg.go()
        previous = base
        for step in steps:
            (event,) = lg.expect("opened", cfg.event_timeout)
            opened = snapshot(pids)
            figures[f"open_per_s_{step}"] = event["opened_per_s"]
            figures[f"cpu_us_per_open_{step}"] = 1e6 * (opened.ticks["server"] - previous.ticks["server"]) / HZ / event["batch"]
            use = spent(previous, opened)
            figures[f"loadgen_cpu_pct_open_{step}"] = use["loadgen_cpu_pct"]
            others.append(use["other_cpu_pct"])
            time.sleep(cfg.settle_seconds)  # let buffers of the handshakes go before reading RSS
            settled = snapshot(pids)
            figures[f"rss_kib_per_socket_{step}"] = (settled.rss - base.rss) / step
            figures[f"rss_mib_{step}"] = settled.rss / 1024
            if server.kind == "webrtc_app":
                check_count(cfg, "webrtc_open_sockets", (server.metrics() or {}).get("webrtc_open_sockets"), step)
            previous = snapshot(pids)
            lg.go()
        lg.expect("holding", cfg.event_timeout)
        if on_hold:
            on_hold()
        h0 = snapshot(pids)
        deadline = time.monotonic() + cfg.idle_seconds
        while time.monotonic() < deadline:  # bounded: the hold window
            alive(server)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        h1 = snapshot(pids)
        if on_held:
            on_held()
        lg.go()
        (held,) = lg.expect("held", cfg.event_timeout)
        if held["unexpected_closes"]:
            raise BenchError(f"{held['unexpected_closes']} idle sockets were closed by {server.kind}")
        lg.go()
        lg.finish(timeout=cfg.event_timeout)
    except BaseException:
        lg.kill()
        raise
    use = spent(h0, h1)
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


def measure(cfg: Config, subject: Subject, workload: str, tag: str) -> dict[str, float]:
    """One workload against a freshly started server, stopped afterwards."""
    with fresh(f"{workload} against {subject.label} ({tag})") as procs:
        server = procs.add(start_server(cfg, subject, tag))
        if workload == "relay":
            return run_relay(cfg, server, tag, cfg.relay, cfg.relay_loadgens)
        if workload == "calls":
            return run_calls(cfg, server, tag, cfg.calls_loadgens)
        return run_idle(cfg, server, tag)
