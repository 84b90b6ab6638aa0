"""Several load generators side by side on one workload (docs/benchmarks.md, "Several load
generators"): the driver splits the work between them, each from a source address of its own
(127.0.0.2, 127.0.0.3, ...: one address has about 28,000 ephemeral ports, and one process
only as many sockets as its descriptors allow), steps them through the same events together,
and sums what they did. All are pinned to the load generator's CPU, as one would be, or in
turn to the CPUs of ``--loadgen-cpus`` (on a machine with more cores than this one's two).

The calls and relay workloads run this way with ``--calls-loadgens``/``--relay-loadgens``
above 1; capacity and storm (overload.py) always do."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bench import BenchError
from bench.config import Config
from bench.loadgen import LoadGen
from bench.sampling import HZ, cpu_ticks, machine_busy_ticks, rss_kib
from bench.servers import Server
from bench.workloads import check_count, check_relayed


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal shares (the first ones larger by one)."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def source_address(index: int) -> str:
    """The source address of load generator ``index`` of a group: 127.0.0.2, 127.0.0.3, ..."""
    return f"127.0.0.{2 + index}"


class LoadGens:
    """Load generators ``shares[i]`` (each its own --options) on one workload against ``server``."""

    def __init__(self, cfg: Config, server: Server, workload: str, shares: list[dict[str, Any]], name: str) -> None:
        self.procs: list[LoadGen] = []
        try:
            for n, args in enumerate(shares):
                tagged = {**args, "tag": f"{args.get('tag', name)}g{n}", "local-address": source_address(n)}
                cpu = cfg.loadgen_cpus[n % len(cfg.loadgen_cpus)] if cfg.loadgen_cpus else cfg.loadgen_cpu
                self.procs.append(LoadGen(cfg, server, workload, tagged, f"{name}-{n}", cpu))
        except BaseException:
            self.kill()
            raise

    @property
    def pids(self) -> list[int]:
        return [lg.pid for lg in self.procs]

    def expect(self, name: str, timeout: float) -> list[dict[str, Any]]:
        """Event ``name`` from each of them (within ``timeout`` s in all)."""
        deadline = time.monotonic() + timeout
        return [lg.expect(name, max(1.0, deadline - time.monotonic())) for lg in self.procs]

    def go(self) -> None:
        for lg in self.procs:
            lg.go()

    def finish(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for lg in self.procs:
            lg.finish(max(1.0, deadline - time.monotonic()))

    def kill(self) -> None:
        for lg in self.procs:
            lg.kill()


@dataclass
class GroupSample:
    t: float
    server_cpu: int
    loadgen_cpu: list[int]
    machine_busy: int
    rss: int


def group_sample(server_pid: int, pids: list[int]) -> GroupSample:
    """CPU ticks of the server, of each load generator and of the machine, and the server's RSS, now."""
    return GroupSample(
        time.monotonic(), cpu_ticks(server_pid), [cpu_ticks(p) for p in pids], machine_busy_ticks(), rss_kib(server_pid)
    )


def group_usage(a: GroupSample, b: GroupSample) -> dict[str, Any]:
    """As sampling.usage(): the server's CPU seconds and % of a core, the load generators' (all of
    them, and each in ``loadgen_cpu_pcts``), and other processes'."""
    wall = b.t - a.t
    server = (b.server_cpu - a.server_cpu) / HZ
    each = [(y - x) / HZ for x, y in zip(a.loadgen_cpu, b.loadgen_cpu, strict=True)]
    other = max(0.0, (b.machine_busy - a.machine_busy) / HZ - server - sum(each))
    return {
        "wall_s": wall,
        "server_cpu_s": server,
        "server_cpu_pct": 100 * server / wall,
        "loadgen_cpu_pct": 100 * sum(each) / wall,
        "loadgen_cpu_pcts": [100 * x / wall for x in each],
        "other_cpu_pct": 100 * other / wall,
    }


def percentile(values: list[float], p: float) -> float:
    """As the load generator computes it (common.mjs): the ceil(p·n)-th smallest value."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def each_loadgen(use: dict[str, Any]) -> dict[str, float]:
    """Each load generator's CPU as figures of their own (loadgen_cpu_pct_1, _2, ...)."""
    return {f"loadgen_cpu_pct_{n}": pct for n, pct in enumerate(use["loadgen_cpu_pcts"], 1)}


def _measured(cfg: Config, server: Server, group: LoadGens) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The measured phase of relay or calls over a group: results of each, and the CPU used
    between all being ready and all having measured; webrtc_app's counters checked."""
    try:
        group.expect("ready", cfg.event_timeout)
        m0 = server.metrics()
        s0 = group_sample(server.pid, group.pids)
        group.go()
        results = group.expect("measured", cfg.event_timeout)
        s1 = group_sample(server.pid, group.pids)
        m1 = server.metrics()
        if server.kind == "webrtc_app":
            check_relayed(cfg, m0, m1, sum(r["relayed"] for r in results))
        group.go()
        group.finish()
    except BaseException:
        group.kill()
        raise
    return results, group_usage(s0, s1)


def span_seconds(results: list[dict[str, Any]]) -> float:
    """From the first load generator's start to the last one's end (their clocks are the epoch's)."""
    return (max(r["ended_at_ms"] for r in results) - min(r["started_at_ms"] for r in results)) / 1000


def run_calls_split(cfg: Config, server: Server, tag: str, count: int) -> dict[str, float]:
    """The calls workload over ``count`` load generators: the calls, the warm-up calls and the
    calls at a time split between them; calls/s over their common span."""
    args = cfg.calls
    shares = [
        {**args, "calls": calls, "warmup-calls": warmup, "concurrency": max(1, concurrency), "raw": 1}
        for calls, warmup, concurrency in zip(
            split(args["calls"], count), split(args["warmup-calls"], count), split(args["concurrency"], count), strict=True
        )
    ]
    group = LoadGens(cfg, server, "calls", shares, tag)
    results, use = _measured(cfg, server, group)
    if server.kind == "webrtc_app":
        check_count(cfg, "webrtc_open_sockets after the calls", (server.metrics() or {}).get("webrtc_open_sockets"), 0)
    calls = sum(r["calls"] for r in results)
    if calls != args["calls"]:
        raise BenchError(f"the load generators made {calls} calls, expected {args['calls']}")
    setups = [x for r in results for x in r["setup_samples_ms"]]
    return {
        "calls_per_s": calls / span_seconds(results),
        "setup_p50_ms": percentile(setups, 0.5),
        "setup_p99_ms": percentile(setups, 0.99),
        "cpu_ms_per_call": 1e3 * use["server_cpu_s"] / calls,
        "server_cpu_pct": use["server_cpu_pct"],
        "loadgen_cpu_pct": use["loadgen_cpu_pct"],
        "other_cpu_pct": use["other_cpu_pct"],
        "loadgens": count,
        **each_loadgen(use),
    }


def run_relay_split(cfg: Config, server: Server, tag: str, args: dict[str, Any], count: int) -> dict[str, float]:
    """The relay workload over ``count`` load generators, the pairs split between them."""
    shares = [{**args, "pairs": pairs, "raw": 1} for pairs in split(args["pairs"], count) if pairs]
    group = LoadGens(cfg, server, "relay", shares, tag)
    results, use = _measured(cfg, server, group)
    relayed = sum(r["relayed"] for r in results)
    rtts = [x for r in results for x in r["rtt_samples_ms"]]
    return {
        "relayed_per_s": relayed / span_seconds(results),
        "rtt_p50_ms": percentile(rtts, 0.5),
        "rtt_p99_ms": percentile(rtts, 0.99),
        "cpu_us_per_msg": 1e6 * use["server_cpu_s"] / relayed,
        "server_cpu_pct": use["server_cpu_pct"],
        "loadgen_cpu_pct": use["loadgen_cpu_pct"],
        "other_cpu_pct": use["other_cpu_pct"],
        "relayed": relayed,
        "loadgens": len(shares),
        **each_loadgen(use),
    }
