"""The scaling table (``--cluster``, ``--scaling 1,2,4``; docs/benchmarks.md "Across nodes"):
the relay workload against one ``webrtc_server.py start PORT --redis URL --processes N``. Its
N workers share one listening socket, so the kernel hands each connection to whichever worker
accepts it first, and a pair's two sockets land on different workers about (N-1)/N of the
time: every message of such a pair crosses nodes through Redis.

Each worker is its own process and its own node, and a scrape of /metrics reaches whichever
worker accepts it, so the per-node counters that the other variants check cannot be read
here. What is checked instead: the load generator's own counts (every message arrived once,
in order, at the right socket, and no notice after the probes), Redis's (no command failed;
every worker stayed a node of the backplane, with the same sockets, from start to end), and
the workers' logs (none lost Redis, none restarted). Where each socket is comes from the
backplane's directory in Redis (one set of sockets per node).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import redis

from bench import BenchError
from bench.cluster import RelayRun, common_figures, drive_relay, redis_figures
from bench.config import REDIS_PREFIX, Config, Subject, scaling_label
from bench.loadgen import LoadGens
from bench.processes import RedisServer
from bench.servers import Server, alive, fresh, start_redis, start_webrtc

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
        redis_server = start_redis(cfg, tag, cfg.scaling_cpus)
        procs.append(redis_server)
        args = ("--redis", redis_server.url, *(("--processes", str(processes)) if processes > 1 else ()))
        server = start_webrtc(cfg, tag, cfg.scaling_cpus, args=args, log_level="info", folder=subject.folder)
        procs.append(server)
        workers = wait_for_workers(cfg, server, processes, redis_server)
        run = run_scaled_relay(cfg, server, workers, redis_server, tag, cfg.relay)
        with redis_server.client() as client:
            nodes = client.scard(f"{REDIS_PREFIX}nodes")
        if nodes != processes:
            raise BenchError(f"{nodes} nodes on the backplane after the measurement, expected {processes}")
        return scaling_figures(run, processes, tag, len(cfg.scaling_cpus or os.sched_getaffinity(0)))
