"""Across nodes (``--cluster``, docs/benchmarks.md "Across nodes"): the relay workload on one
node, on one node with Redis, or with its callers on one node and its callees on another; and
the scaling table (``--scaling``), the relay against one ``webrtc_server.py start PORT --redis
URL --processes N`` whose workers share the port, so that a pair's two sockets land on different
workers about (N-1)/N of the time. Every process is started fresh for each measurement.

A scrape of the shared port reaches whichever worker accepts it, so the scaling table cannot
check per-node counters; it checks the load generator's counts, Redis's (no command failed,
every worker a node with the same sockets from start to end) and the workers' logs instead."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bench import BenchError
from bench.config import CLUSTER_LABELS, REDIS_PREFIX, Config, Subject, scaling_label
from bench.loadgen import LoadGens
from bench.processes import RedisServer
from bench.sampling import snapshot, spent
from bench.servers import Server, alive, fresh, start_redis, start_webrtc
from bench.workloads import Hook, check_count, metric_delta

#: Given the nodes once started, the hooks to call when the measured phase starts and ends.
Hooks = Callable[[list[Server]], tuple[Hook, Hook]]


class RedisCounters:
    """redis-server's own counters (INFO), read through one connection kept for a measurement."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()

    def close(self) -> None:
        self.client.close()

    def publish_calls(self) -> int:
        """PUBLISH and SPUBLISH commands executed so far (the backplane uses sharded pub/sub)."""
        return published(self.client.info("commandstats"))

    def settle(self, quiet: float = 0.3, timeout: float = 60, beats: int = 8) -> float:
        """Wait until the nodes have handed Redis everything they had queued: PUBLISH calls stop
        growing for ``quiet`` seconds, but for the nodes' beats (routing/liveness.py: one per
        node every DELIVERY_BOUND/8 s, at most ``beats`` in the window, one at a time). A node
        delivers to its own sockets at once and publishes after, so with every pair on one node
        its publishing lags behind the deliveries. Answers when (time.monotonic()) the count was
        last seen growing by more than a beat."""
        deadline = time.monotonic() + timeout
        start = time.monotonic()
        samples: deque[tuple[float, int]] = deque([(start, self.publish_calls())])
        changed = start
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now, calls = time.monotonic(), self.publish_calls()
            if calls - samples[-1][1] > 1:
                changed = now
            samples.append((now, calls))
            while samples[0][0] < now - quiet:
                samples.popleft()
            if now - changed >= quiet and now - start >= quiet and calls - samples[0][1] <= beats:
                return changed
        raise BenchError(f"the nodes kept publishing to Redis for {timeout:g} s after the load generator finished")

    def stats(self) -> dict[str, int]:
        """PUBLISH calls, commands, commands that failed or were refused, reads of client
        sockets, and bytes in and out."""
        info = self.client.info("all")
        return {
            "publish": published(info),
            "failed": sum(
                int(stats.get("failed_calls", 0)) + int(stats.get("rejected_calls", 0))
                for name, stats in info.items()
                if name.startswith("cmdstat_") and isinstance(stats, dict)
            ),
            "commands": int(info["total_commands_processed"]),
            "reads": int(info.get("total_reads_processed", 0)),
            "net_in": int(info["total_net_input_bytes"]),
            "net_out": int(info["total_net_output_bytes"]),
        }


def published(info: dict[str, Any]) -> int:
    """PUBLISH and SPUBLISH calls in an INFO answer."""
    return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("publish", "spublish"))


@dataclass
class RelayRun:
    """What one run of the relay workload measured (drive_relay)."""

    result: dict[str, Any]  # the load generator's "measured" event
    probed: dict[str, Any]  # its "probed" event (empty without probes)
    pids: dict[str, int]  # the processes measured, by role ("loadgen" included)
    use: dict[str, float]  # CPU of each, over the delivery (the load generator's timing)
    work: dict[str, float]  # CPU of each, until Redis had every publication
    published_after: float  # seconds from the start until Redis had every publication
    redis: dict[str, int] | None  # how much Redis's counters grew (RedisCounters.stats)
    readings: dict[str, Any]  # read() after the probes, at "ready" and at "measured"


def drive_relay(
    cfg: Config,
    lg: LoadGens,
    pids: dict[str, int],
    redis_server: RedisServer | None,
    probe: bool,
    read: Callable[[], Any] | None = None,
    on_ready: Hook = None,
    on_measured: Hook = None,
) -> RelayRun:
    """Drive a relay run of ``lg`` through its events, reading the CPU time of ``pids`` (and
    the load generator's) around its measured phase, and Redis's counters when there is a
    Redis; ``read()`` (the nodes' /metrics, say) is called after the probes, when the load
    generator is ready and when it has measured. The load generator must end with no notice."""
    counters = RedisCounters(redis_server) if redis_server else None
    readings: dict[str, Any] = {}
    probed: dict[str, Any] = {}
    pids = {**pids, **lg.pids}
    try:
        if probe:
            # Every pair delivers both ways: from here on, no message may go undelivered.
            (probed,) = lg.expect("probed", cfg.event_timeout)
            readings["probed"] = read() if read else None
            lg.go()
        lg.expect("ready", cfg.event_timeout)
        readings["ready"] = read() if read else None
        if not probe:
            readings["probed"] = readings["ready"]
        if counters:
            counters.settle()  # the warm-up's messages are all published before the measurement
        r0 = counters.stats() if counters else None
        if on_ready:
            on_ready()
        s0 = snapshot(pids)
        lg.go()
        (result,) = lg.expect("measured", cfg.event_timeout)
        s1 = snapshot(pids)
        published = s1.t
        if counters:
            # CPU per message counts until Redis has had every message's PUBLISH (the nodes'
            # CPU % and the rates are over the delivery only, s0 to s1).
            published = max(published, counters.settle())
        s2 = snapshot(pids)
        if on_measured:
            on_measured()
        r1 = counters.stats() if counters else None
        readings["measured"] = read() if read else None
        lg.go()
        (done,) = lg.finish(cfg.event_timeout)
        if done.get("notices"):
            raise BenchError(f"the load generator received {done['notices']} server notices after the probes")
    except BaseException:
        lg.kill()
        raise
    finally:
        if counters:
            counters.close()
    expected = sum(2 * share["pairs"] * share["messages"] for share in lg.shares)
    if result["relayed"] != expected:
        raise BenchError(f"the load generator counted {result['relayed']} relayed messages, expected {expected}")
    redis_delta = {k: r1[k] - r0[k] for k in r0} if r0 and r1 else None
    return RelayRun(result, probed, pids, spent(s0, s1), spent(s0, s2), published - s0.t, redis_delta, readings)


def run_relay_across(
    cfg: Config,
    nodes: list[Server],
    redis_server: RedisServer | None,
    tag: str,
    args: dict[str, Any],
    on_ready: Hook = None,
    on_measured: Hook = None,
) -> dict[str, float]:
    """The relay workload against one node, or with callers on nodes[0] and callees on nodes[1]
    (every message and acknowledgement crossing Redis); CPU of every node and of redis-server."""
    across = len(nodes) == 2
    extra = {"url2": nodes[1].ws} if across else {}
    pids = {f"node{n}": node.pid for n, node in enumerate(nodes, 1)}
    if redis_server:
        pids["redis"] = redis_server.pid
    lg = LoadGens(cfg, nodes[0], "relay", [{**args, **extra}], tag)
    run = drive_relay(cfg, lg, pids, redis_server, across, lambda: [node.metrics() for node in nodes], on_ready, on_measured)
    mp, m0, m1 = run.readings["probed"], run.readings["ready"], run.readings["measured"]
    result = run.result
    # Each node counts the messages its own sockets sent: node 1 the data, node 2 the acks.
    expected = [result["data_messages"], result["acks"]] if across else [result["relayed"]]
    for n in range(len(nodes)):
        what = f"node {n + 1}: " if across else ""
        # PEER-UNAVAILABLE notices: none from the end of the probes (warm-up included) on.
        checks = [
            ("webrtc_messages_relayed_total", m0, expected[n], ""),
            ("webrtc_messages_undelivered_total", mp, 0, " since the pairs were probed"),
        ]
        checks += [("webrtc_backplane_errors_total", m0, 0, "")] if redis_server else []
        for name, before, want, since in checks:
            check_count(cfg, f"{what}{name}{since}", metric_delta(before[n], m1[n], name), want)
        if redis_server:
            check_count(cfg, f"{what}webrtc_backplane_connected", (m1[n] or {}).get("webrtc_backplane_connected"), 1)
    return across_figures(run)


def redis_figures(run: RelayRun) -> dict[str, float]:
    """redis-server's CPU and how much the nodes asked of it, per relayed message."""
    relayed = run.result["relayed"]
    if run.redis is None:
        return {}
    delta = run.redis
    return {
        "us_redis": 1e6 * run.work["redis_cpu_s"] / relayed,
        "redis_cpu_pct": run.use["redis_cpu_pct"],
        "publish_per_msg": delta["publish"] / relayed,
        "publish_per_read": delta["publish"] / max(1, delta["reads"]),
        "redis_in_per_msg": delta["net_in"] / relayed,
        "redis_out_per_msg": delta["net_out"] / relayed,
    }


def common_figures(run: RelayRun) -> dict[str, float]:
    """The figures every relay run has: rate, round trips, the load generator's and the
    machine's CPU use, how long Redis took to have every publication."""
    result, use = run.result, run.use
    figures = {
        "relayed_per_s": result["relayed_per_s"],
        "rtt_p50_ms": result["rtt_ms"]["p50"],
        "rtt_p99_ms": result["rtt_ms"]["p99"],
        "relayed": result["relayed"],
        "seconds": use["wall_s"],
        # Publishing may lag behind local delivery: the rate Redis kept up with, and how far behind it was.
        "sustained_per_s": result["relayed"] / run.published_after,
        "backlog_s": run.published_after - use["wall_s"],
        "us_total": sum(1e6 * run.work[f"{r}_cpu_s"] / result["relayed"] for r in run.pids if not r.startswith("loadgen")),
        "loadgen_cpu_pct": use["loadgen_cpu_pct"],
        "other_cpu_pct": use["other_cpu_pct"],
    }
    figures.update({key: value for key, value in use.items() if key.startswith("core")})
    return figures


def across_figures(run: RelayRun) -> dict[str, float]:
    """The figures of one measurement on one node or across two."""
    relayed = run.result["relayed"]
    figures = common_figures(run)
    for role in ("node1", "node2"):
        if role in run.pids:
            figures[f"us_{role}"] = 1e6 * run.work[f"{role}_cpu_s"] / relayed
            figures[f"{role}_cpu_pct"] = run.use[f"{role}_cpu_pct"]
            # How the CPU went: the kernel's share (system calls, the network stack), and how
            # many messages one wake-up of the node's event loop handled.
            figures[f"{role}_sys_pct"] = 100 * run.work[f"{role}_sys_s"] / max(1e-9, run.work[f"{role}_cpu_s"])
            figures[f"{role}_msgs_per_wakeup"] = relayed / max(1, run.work[f"{role}_wakeups"])
    figures.update(redis_figures(run))
    if "node2" in run.pids:
        figures.update({f"probe_{k}": run.probed[k] for k in ("attempts", "unavailable", "timeouts")})
        if run.redis is not None:
            # Every message crosses: how many of them one SPUBLISH carried.
            figures["msgs_per_publish"] = relayed / max(1, run.redis["publish"])
    return figures


def measure_cluster(
    cfg: Config,
    subject: Subject,
    variant: str,
    tag: str,
    args: dict[str, Any] | None = None,
    hooks: Hooks | None = None,
    light: bool = True,
) -> dict[str, float]:
    """One relay measurement of a webrtc_app revision: one node alone, one node with Redis, or two
    nodes through Redis; every process started fresh and stopped afterwards (nodes first, then redis-server)."""
    cpus = cfg.cluster_cpus
    with fresh(f"relay, {CLUSTER_LABELS[variant]}, {subject.label} ({tag})") as procs:
        redis_server = procs.add(start_redis(cfg, tag)) if variant != "single" else None
        url = redis_server.url if redis_server else None
        if variant == "cluster":
            nodes = [start_webrtc(cfg, f"{tag}-node{n}", cpus[f"node{n}"], url, folder=subject.folder) for n in (1, 2)]
        else:
            nodes = [start_webrtc(cfg, tag, cpus["single"], url, folder=subject.folder)]
        procs += nodes
        on_ready, on_measured = hooks(nodes) if hooks else (None, None)
        figures = run_relay_across(cfg, nodes, redis_server, tag, args or cfg.relay, on_ready, on_measured)
        if light:
            # The same processes at light load: what a round trip costs without queueing.
            calm = run_relay_across(cfg, nodes, redis_server, f"{tag}l", cfg.cluster_light)
            figures.update({f"light_{k}": calm[k] for k in ("rtt_p50_ms", "rtt_p99_ms", "relayed_per_s")})
        return figures


# ---------------------------------------------------------------- the scaling table (--scaling)


#: What each worker logs once it serves (at INFO): its pid and its node on the backplane.
WORKER_LISTENING = re.compile(r"webrtc_app listening on \S+ \(pid (\d+), node (\w+)\)")


def wait_for_workers(cfg: Config, server: Server, processes: int, redis_server: RedisServer) -> list[int]:
    """The workers' pids, once every worker serves and is a node of the backplane."""
    deadline = time.monotonic() + cfg.start_timeout
    workers: dict[int, str] = {}
    with redis_server.client() as client:
        while time.monotonic() < deadline:
            alive(server)
            workers = {int(pid): node for pid, node in WORKER_LISTENING.findall(server.output())}
            if len(workers) >= processes and set(client.smembers(f"{REDIS_PREFIX}nodes")) >= set(workers.values()):
                break
            time.sleep(0.05)
        else:
            raise BenchError(f"{len(workers)} of {processes} workers serving after {cfg.start_timeout:g} s")
    if len(workers) != processes:
        raise BenchError(f"{len(workers)} workers said they were listening, expected {processes} (one restarted?)")
    return list(workers)


def placement(client: redis.Redis) -> dict[str, str]:
    """Which node holds each socket, from the backplane's directory: id -> the node's key."""
    where: dict[str, str] = {}
    for key in client.scan_iter(match=f"{REDIS_PREFIX}node-sessions:*", count=1000):
        for member in client.smembers(key):  # "<id>\0<session>" (the client decodes replies to str)
            where[str(member).split("\0", 1)[0]] = str(key)
    return where


def run_scaled_relay(
    cfg: Config, server: Server, workers: list[int], redis_server: RedisServer, tag: str, args: dict[str, Any]
) -> RelayRun:
    """The relay workload through the shared port, every pair probed first (callers and
    callees alike connect to that one port), the CPU of every worker, of the parent and of
    redis-server counted; answers the run, with the sockets' placement read at "ready" and
    at "measured"."""
    pids = {f"worker{n}": pid for n, pid in enumerate(workers, 1)}
    if server.pid not in workers:
        pids["parent"] = server.pid  # it only waits for its workers, but it is part of the server
    pids["redis"] = redis_server.pid
    # One handshake at a time, as independent clients arrive: the worker that wakes first accepts
    # every connection waiting (Tornado's accept loop drains the backlog), so with 50 at once
    # the callers' burst and the callees' burst each went to one worker, and nearly all or
    # nearly none of the messages crossed, from run to run.
    lg = LoadGens(cfg, server, "relay", [{**args, "url2": server.ws, "open-concurrency": 1}], tag, cfg.scaling_cpus)
    with redis_server.client() as client:
        return drive_relay(cfg, lg, pids, redis_server, probe=True, read=lambda: placement(client))


def scaling_figures(run: RelayRun, processes: int, tag: str, cpus: int) -> dict[str, float]:
    """The figures of one scaling measurement (docs/benchmarks.md, "Across nodes"), on a
    machine of ``cpus`` CPUs."""
    relayed = run.result["relayed"]
    pairs = run.result["pairs"]
    where, after = run.readings["ready"], run.readings["measured"]
    if where != after:
        raise BenchError("the backplane's directory changed during the measurement: sockets moved or were forgotten")
    missing = [f"{tag}r{side}{i}" for i in range(pairs) for side in "ab" if f"{tag}r{side}{i}" not in where]
    if missing:
        raise BenchError(f"{len(missing)} sockets missing from the backplane's directory, such as {missing[0]!r}")
    crossing = sum(1 for i in range(pairs) if where[f"{tag}ra{i}"] != where[f"{tag}rb{i}"])
    per_node = [list(where.values()).count(node) for node in set(where.values())]
    per_node += [0] * (processes - len(per_node))  # a worker that got no socket has no set
    roles = [role for role in run.pids if role.startswith("worker") or role == "parent"]
    worker_pcts = [run.use[f"{role}_cpu_pct"] for role in run.pids if role.startswith("worker")]
    figures = common_figures(run)
    figures.update(
        {
            "us_workers": sum(1e6 * run.work[f"{role}_cpu_s"] / relayed for role in roles),
            # Every process here shares the same CPUs: the load generator's cost bounds the rate too.
            "us_loadgen": 1e6 * run.work["loadgen_cpu_s"] / relayed,
            "workers_cpu_pct": sum(run.use[f"{role}_cpu_pct"] for role in roles),
            "worker_cpu_pct_max": max(worker_pcts),
            "worker_cpu_pct_min": min(worker_pcts),
            "sockets_max": max(per_node),
            "sockets_min": min(per_node),
            "crossed_pct": 100 * crossing / pairs,
            "even_pct": 100 * (processes - 1) / processes,  # what an even random spread would make cross
            "probe_attempts": run.probed["attempts"],
            "probe_unavailable": run.probed["unavailable"],
            "probe_timeouts": run.probed["timeouts"],
        }
    )
    figures.update(redis_figures(run))
    # What these CPUs could relay at most at these costs (server, Redis and load generator).
    figures["ceiling_per_s"] = cpus * 1e6 / (figures["us_total"] + figures["us_loadgen"])
    if run.redis is not None:
        if run.redis["failed"]:
            raise BenchError(f"{run.redis['failed']} Redis commands failed or were rejected during the measurement")
        # Every message of a pair split over two workers crosses: how many of them one SPUBLISH carried.
        figures["msgs_per_publish"] = crossing * 2 * run.result["data_messages"] / pairs / max(1, run.redis["publish"])
    return figures


def measure_scaling(cfg: Config, subject: Subject, processes: int, tag: str) -> dict[str, float]:
    """One scaling measurement: a fresh redis-server and a fresh ``webrtc_server.py start PORT
    --redis URL --processes N`` on every CPU (not pinned to one), at log level info so that each
    worker says its pid and node; stopped afterwards (the server first), their logs checked.
    The server is ready once wait_for_workers() says so: with several workers /metrics labels
    every series by worker, so it has no webrtc_backplane_connected of its own to wait for."""
    with fresh(f"relay, {scaling_label(processes)}, {subject.label} ({tag})") as procs:
        redis_server = procs.add(start_redis(cfg, tag, cfg.scaling_cpus))
        args = ("--redis", redis_server.url, *(("--processes", str(processes)) if processes > 1 else ()))
        server = procs.add(start_webrtc(cfg, tag, cfg.scaling_cpus, args=args, log_level="info", folder=subject.folder))
        workers = wait_for_workers(cfg, server, processes, redis_server)
        run = run_scaled_relay(cfg, server, workers, redis_server, tag, cfg.relay)
        with redis_server.client() as client:
            nodes = client.scard(f"{REDIS_PREFIX}nodes")
        if nodes != processes:
            raise BenchError(f"{nodes} nodes on the backplane after the measurement, expected {processes}")
        return scaling_figures(run, processes, tag, len(cfg.scaling_cpus or os.sched_getaffinity(0)))
