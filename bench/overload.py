"""The overload workloads, once per run (docs/benchmarks.md, "capacity" and "storm"): one server
holding as many idle sockets as its descriptors allow, from several load generators, with a
linear projection to 100,000 sockets; and the reconnect storm, webrtc_app restarted under
thousands of sockets that come back with the pages' backoff policy."""

from __future__ import annotations

import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from bench import BenchError, log
from bench.config import Config
from bench.loadgen import LoadGens, split
from bench.sampling import HZ, cpu_ticks, snapshot, spent, wait_for_quiet
from bench.servers import Server, alive, fresh, start, start_server
from bench.table import LOADGEN_LIMIT

#: webrtc_app's RESERVED_DESCRIPTORS default (settings.py): its socket limit is the open-file
#: limit less these. PeerJS is given the same number of sockets.
RESERVED_DESCRIPTORS = 100
#: Extra seconds granted over the load generators' own bound before the driver gives up on them.
GRACE = 30
#: How often the event loop's lag is read while holding (webrtc_event_loop_lag_seconds is the worst of 10 s).
LAG_POLL = 9.0
#: The sockets the projection is made for.
PROJECTED_SOCKETS = 100_000


def labelled(metrics: dict[str, float], name: str) -> dict[str, float]:
    """The samples of a labelled metric by their (single) label value."""
    found = {}
    for key, value in metrics.items():
        match = re.fullmatch(rf'{name}\{{\w+="([^"]*)"\}}', key)
        if match:
            found[match.group(1)] = value
    return found


def kernel_memory_kib() -> float:
    """The kernel's slab memory plus the pages of TCP socket buffers, in KiB, machine-wide
    (/proc/meminfo Slab, /proc/net/sockstat TCP mem): what sockets cost outside any RSS."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        slab = re.search(r"^Slab:\s+(\d+) kB", meminfo.read(), re.M)
    with open("/proc/net/sockstat", encoding="ascii") as sockstat:
        pages = re.search(r"^TCP:.* mem (\d+)", sockstat.read(), re.M)
    return (int(slab.group(1)) if slab else 0) + (int(pages.group(1)) if pages else 0) * os.sysconf("SC_PAGE_SIZE") / 1024


def listen_drops() -> int:
    """Connections the kernel dropped because a listening socket's accept queue was full
    (TcpExt ListenDrops of /proc/net/netstat, machine-wide): the client retries its SYN after
    1 s, then 3 s, 7 s, ... so each one is seconds of delay."""
    with open("/proc/net/netstat", encoding="ascii") as netstat:
        lines = [line.split() for line in netstat if line.startswith("TcpExt:")]
    if len(lines) < 2:
        return 0
    return int(dict(zip(lines[0], lines[1], strict=False)).get("ListenDrops", 0))


def open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def shares(opts: dict[str, Any], sockets: int, **extra: Any) -> list[dict[str, Any]]:
    """The options of each load generator for ``sockets``: at least two, none holding more than
    opts["per-loadgen"], the handshakes in flight split between them."""
    count = max(2, math.ceil(sockets / opts["per-loadgen"]))
    per_open = max(1, math.ceil(opts["open-concurrency"] / count))
    return [{"sockets": n, "open-concurrency": per_open, **extra} for n in split(sockets, count)]


class LagProbe:
    """A bare asyncio loop pinned to the server's CPU, doing nothing but the timer webrtc_app's
    lag gauge uses (one every 0.25 s): what it sees late is the machine's doing (other
    processes, the hypervisor), not the server's. On a shared machine a server's stall can only
    be told from the machine's by comparing with it. ``stop()`` answers its worst lag in ms."""

    CODE = (
        "import asyncio, signal\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop(); stop = asyncio.Event(); worst = 0.0\n"
        "    loop.add_signal_handler(signal.SIGTERM, stop.set)\n"
        "    end = loop.time() + {limit}\n"
        "    while not stop.is_set() and loop.time() < end:\n"
        "        due = loop.time() + 0.25\n"
        "        try:\n"
        "            await asyncio.wait_for(stop.wait(), 0.25)\n"
        "        except TimeoutError:\n"
        "            worst = max(worst, loop.time() - due)\n"
        "    print(f'worst {{1000 * worst:.3f}}', flush=True)\n"
        "asyncio.run(main())\n"
    )

    def __init__(self, cfg: Config, limit: float) -> None:
        self.proc = cfg.children.spawn(
            [sys.executable, "-c", self.CODE.format(limit=limit)], cfg.server_cpu, stdout=subprocess.PIPE, text=True
        )

    def stop(self) -> float:
        """Its worst lag (ms) since it started; NaN if it said nothing."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        match = re.search(r"worst ([\d.]+)", out or "")
        return float(match.group(1)) if match else float("nan")


# ---------------------------------------------------------------- capacity


def descriptor_capacity() -> int:
    """The most sockets webrtc_app's descriptors allow: its open-file limit (inherited from the
    driver) less its reserve. PeerJS, which keeps no reserve, could hold a few more."""
    return open_files_limit() - RESERVED_DESCRIPTORS


def capacity_sockets(cfg: Config) -> tuple[int, int | None]:
    """How many sockets the capacity workload holds, and the socket limit the servers are given:
    none when the descriptors are the limit (the default), else the sockets held (both servers
    then refuse the overflow by their own socket limit: webrtc_app's MAX_SOCKETS, PeerJS's
    concurrent_limit)."""
    asked = cfg.capacity["sockets"]
    if not asked or asked >= descriptor_capacity():
        return descriptor_capacity(), None
    return asked, asked


def capacity(cfg: Config, server: Server, tag: str, sockets: int) -> dict[str, Any]:
    """Hold ``sockets`` on ``server``: the figures of docs/benchmarks.md, "capacity"."""
    opts = cfg.capacity
    figures: dict[str, Any] = {"per_process": descriptor_capacity()}
    if server.kind == "webrtc_app":
        limit = int(server.metrics()["webrtc_socket_limit"])
        figures["socket_limit"] = limit
        if sockets > limit:
            cfg.warn(f"capacity: {sockets:,} sockets asked, webrtc_app holds at most {limit:,}: holding {limit:,}")
            sockets = limit
    # Each one's own bound on the whole run (default 300 s) must outlast the hold; the first opens the overflow.
    parts = shares(opts, sockets, timeout=int(opts["seconds"]) + 300, overflow=0)
    parts[0]["overflow"] = opts["overflow"]
    count = len(parts)
    log(f"capacity {server.kind}: {sockets:,} sockets from {count} load generators")
    group = LoadGens(cfg, server, "capacity", parts, tag)
    pids = {"server": server.pid, **group.pids}
    try:
        group.expect("ready", cfg.event_timeout)
        kernel0 = kernel_memory_kib()
        drops0 = listen_drops()
        base = snapshot(pids)
        group.go()
        opened = group.expect("opened", cfg.event_timeout)
        done_opening = snapshot(pids)
        drops_opening = listen_drops() - drops0
        time.sleep(cfg.settle_seconds)
        settled = snapshot(pids)
        kernel1 = kernel_memory_kib()
        if server.kind == "webrtc_app":
            held = server.metrics()["webrtc_open_sockets"]
            if held != sockets:
                raise BenchError(f"webrtc_app says {held:g} sockets open, the load generators opened {sockets}")
        group.go()
        group.expect("holding", cfg.event_timeout)
        hold, lag = _hold(cfg, server, pids, opts["seconds"])
        group.go()
        held_events = group.expect("held", cfg.event_timeout)
        closes = sum(e["unexpected_closes"] for e in held_events)
        if closes:
            raise BenchError(f"{closes} held sockets were closed by {server.kind}")
        after_hold = snapshot(pids)
        metrics_after = server.metrics() if server.kind == "webrtc_app" else {}
        group.go()
        overflowed = group.expect("overflowed", cfg.event_timeout + opts["overflow"] * 0.5)
        group.go()
        group.finish(cfg.event_timeout)
    except BaseException:
        group.kill()
        raise
    opening = spent(base, done_opening)
    extra = overflowed[0]
    figures.update(
        {
            "sockets": sockets,
            "loadgens": count,
            "open_per_s": sockets / max(e["seconds"] for e in opened),
            "cpu_us_per_open": 1e6 * opening["server_cpu_s"] / sockets,
            "loadgen_cpu_pct_open": opening["loadgen_cpu_pct"],
            "listen_drops_open": drops_opening,
            "rss_base_mib": base.rss / 1024,
            "rss_mib": settled.rss / 1024,
            "rss_kib_per_socket": (settled.rss - base.rss) / sockets,
            "rss_kib_per_socket_held": (after_hold.rss - base.rss) / sockets,
            "kernel_kib_per_connection": (kernel1 - kernel0) / sockets,
            "hold_seconds": hold["wall_s"],
            "hold_cpu_pct": hold["server_cpu_pct"],
            "hold_cpu_pct_per_10k": hold["server_cpu_pct"] * 10_000 / sockets,
            "pings_per_socket": sum(e["pings_received"] for e in held_events) / sockets,
            "heartbeats_per_socket": sum(e["heartbeats_sent"] for e in held_events) / sockets,
            "loadgen_cpu_pct_hold": hold["loadgen_cpu_pct"],
            "probe_lag_ms": hold["probe_lag_ms"],
            "other_cpu_pct": max(opening["other_cpu_pct"], hold["other_cpu_pct"]),
            "overflow": extra["sockets"],
            "overflow_outcomes": extra["outcomes"],
            "overflow_verdict_p50_ms": extra["verdict_ms"]["p50"],
            "overflow_verdict_max_ms": extra["verdict_ms"]["max"],
        }
    )
    if lag is not None:
        figures["hold_lag_ms"] = 1000 * lag
        figures["lag_max_ms"] = 1000 * metrics_after.get("webrtc_event_loop_lag_max_seconds", float("nan"))
        figures["turned_away"] = metrics_after.get("webrtc_connections_turned_away_total", 0.0)
        figures["rejected"] = labelled(metrics_after, "webrtc_sockets_rejected_total")
    figures.update(projection(figures))
    return figures


def _hold(cfg: Config, server: Server, pids: dict[str, int], seconds: float) -> tuple[dict[str, Any], float | None]:
    """Hold ``seconds`` (bounded), reading webrtc_app's lag every LAG_POLL s; answers the usage
    (the server CPU of the /metrics reads taken out, and the lag probe's worst) and the worst
    lag seen (None for PeerJS)."""
    probe = LagProbe(cfg, seconds + 30)
    start = snapshot(pids)
    deadline = time.monotonic() + seconds
    lags: list[float] = []
    scraping = 0  # server CPU ticks spent answering /metrics
    next_poll = time.monotonic() + LAG_POLL
    while time.monotonic() < deadline:
        alive(server)
        if server.kind == "webrtc_app" and time.monotonic() >= next_poll:
            lag, ticks = _lag_now(server)
            lags.append(lag)
            scraping += ticks
            next_poll = time.monotonic() + LAG_POLL
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if server.kind == "webrtc_app":
        lag, ticks = _lag_now(server)
        lags.append(lag)
        scraping += ticks
    end = snapshot(pids)
    end.ticks["server"] -= scraping
    use = spent(start, end)
    use["probe_lag_ms"] = probe.stop()
    return use, max(lags) if lags else None


def _lag_now(server: Server) -> tuple[float, int]:
    """webrtc_event_loop_lag_seconds now, and the server CPU ticks the read cost."""
    before = cpu_ticks(server.pid)
    lag = server.metrics()["webrtc_event_loop_lag_seconds"]
    return lag, cpu_ticks(server.pid) - before


def projection(figures: dict[str, Any]) -> dict[str, Any]:
    """Linear from the measured per-socket figures to PROJECTED_SOCKETS (report.py says what it ignores)."""
    scale = PROJECTED_SOCKETS / figures["sockets"]
    return {
        "projected_rss_mib": figures["rss_base_mib"] + PROJECTED_SOCKETS * figures["rss_kib_per_socket_held"] / 1024,
        "projected_kernel_mib": PROJECTED_SOCKETS * figures["kernel_kib_per_connection"] / 2 / 1024,
        "projected_hold_cpu_pct": figures["hold_cpu_pct"] * scale,
        # The worst stall while holding, if it is the heartbeat's round (one callback pings every
        # socket silent for WS_PING_INTERVAL), grows with the sockets too.
        "projected_stall_ms": figures.get("hold_lag_ms", float("nan")) * scale,
        "projected_processes": math.ceil(PROJECTED_SOCKETS / figures["per_process"]),
    }


# ---------------------------------------------------------------- storm


def storm(cfg: Config, server: Server, tag: str) -> dict[str, Any]:
    """The reconnect storm against webrtc_app: the figures of docs/benchmarks.md, "storm"."""
    opts = cfg.storm
    limit = int(server.metrics()["webrtc_socket_limit"])
    sockets = opts["sockets"]
    if sockets > limit:
        cfg.warn(
            f"storm: {sockets:,} sockets asked, webrtc_app holds at most {limit:,} (its descriptors less its reserve): "
            f"storming with {limit:,}"
        )
        sockets = limit
    parts = shares(opts, sockets, **{"storm-timeout": opts["timeout"], "timeout": int(opts["timeout"]) + 300})
    count = len(parts)
    log(f"storm: {sockets:,} sockets from {count} load generators, then a restart")
    group = LoadGens(cfg, server, "storm", parts, tag)
    pids = {"server": server.pid, **group.pids}
    try:
        group.expect("ready", cfg.event_timeout)
        group.go()
        group.expect("opened", cfg.event_timeout)
        held = server.metrics()["webrtc_open_sockets"]
        if held != sockets:
            raise BenchError(f"webrtc_app says {held:g} sockets open before the restart, the load generators opened {sockets}")
        group.go()  # they now wait for every socket to be dropped and back
        probe = LagProbe(cfg, opts["timeout"] + 2 * GRACE)
        drops0 = listen_drops()
        shutdown_cpu, t_term, t_exit = _terminate(server)
        status = server.stop(timeout=10)  # reaps it
        if status not in (0, -signal.SIGTERM):
            raise BenchError(f"webrtc_app exited with status {status} on SIGTERM:\n{server.log_tail()}")
        if "Traceback" in server.log_tail(200):
            raise BenchError(f"webrtc_app logged an error while shutting down:\n{server.log_tail()}")
        server.log_path = (server.log_path or "").replace(".log", "-restarted.log")
        t_spawn = time.time()
        start(cfg, server)
        t_ready = time.time()
        ready = snapshot({**pids, "server": server.pid})  # the new process's
        # Its worst stall so far: its start-up, and the first of the storm (the sockets queue
        # up in its backlog as soon as it listens, before it answers /healthz).
        lag_at_ready = server.metrics()["webrtc_event_loop_lag_max_seconds"]
        backs = group.expect("back", opts["timeout"] + GRACE)
        at_back = snapshot({**pids, "server": server.pid})
        probe_lag = probe.stop()
        accept_drops = listen_drops() - drops0
        time.sleep(cfg.settle_seconds)
        metrics = server.metrics()
        group.go()
        results = group.expect("held", cfg.event_timeout)
        group.go()
        group.finish(cfg.event_timeout)
    except BaseException:
        group.kill()
        raise
    use = spent(ready, at_back)
    failures, drops = Counter(), Counter()
    timeline: dict[str, Counter[int]] = defaultdict(Counter)  # kind -> 100 ms bin -> count
    per_second: Counter[int] = Counter()  # reconnections
    for result in results:
        failures.update(result["failures"])
        drops.update(result["drops"])
        for kind, bins in result["timeline"].items():
            timeline[kind].update({int(bin_): n for bin_, n in bins.items()})
    for bin_, n in timeline["open"].items():
        per_second[bin_ // 10] += n
    ready_bin = math.floor(t_ready * 10)
    drop_bins = sorted(timeline["drop"])
    complete = all(b["complete"] for b in backs)
    last_open = max(b["last_open_at_ms"] for b in backs) / 1000
    other = {k: n for k, n in failures.items() if k not in ("refused", "close 1013", "http 503")}
    cpus = {cfg.loadgen_cpus[n % len(cfg.loadgen_cpus)] for n in range(count)} if cfg.loadgen_cpus else {cfg.loadgen_cpu}
    open_after = sum(r["open"] for r in results)
    return {
        "sockets": sockets,
        "socket_limit": limit,
        "loadgens": count,
        "loadgen_cpus": sorted(cpus, key=str),
        # The storm's pace was partly the load generators' when they used (nearly) all of their CPUs.
        "loadgen_limited": use["loadgen_cpu_pct"] >= LOADGEN_LIMIT * len(cpus),
        "complete": complete,
        "open_after": open_after,
        "not_back": None if complete else f"{open_after:,} of {sockets:,}",
        "open_sockets_metric": metrics.get("webrtc_open_sockets", float("nan")),
        "shutdown_s": t_exit - t_term,
        # When the clients saw their socket closed (100 ms bins), from SIGTERM.
        "first_drop_s": drop_bins[0] / 10 - t_term if drop_bins else float("nan"),
        "last_drop_s": (drop_bins[-1] + 1) / 10 - t_term if drop_bins else float("nan"),
        "shutdown_cpu_s": shutdown_cpu,
        "start_s": t_ready - t_spawn,
        "down_s": t_ready - t_term,
        "back_s": last_open - t_term if complete else float("nan"),
        "back_after_ready_s": last_open - t_ready if complete else float("nan"),
        "drops": dict(drops),
        "failures": dict(failures),
        "refused": failures.get("refused", 0),
        # In a 100 ms bin after the one it answered in (the clocks are read in two processes).
        "refused_after_ready": sum(n for bin_, n in timeline["refused"].items() if bin_ > ready_bin),
        "server_full": failures.get("close 1013", 0),
        "unavailable": failures.get("http 503", 0),
        "other_failures": sum(other.values()),
        "other_kinds": other,
        "max_attempt": max(b["max_attempt"] for b in backs),
        "reconnects_peak_per_s": max(per_second.values(), default=0),
        "listen_drops": accept_drops,
        "lag_max_ms": 1000 * metrics.get("webrtc_event_loop_lag_max_seconds", float("nan")),
        "lag_at_ready_ms": 1000 * lag_at_ready,
        "probe_lag_ms": probe_lag,
        "rejected": labelled(metrics, "webrtc_sockets_rejected_total"),
        "turned_away": metrics.get("webrtc_connections_turned_away_total", 0.0),
        "busy_address": metrics.get("webrtc_busy_address_refusals_total", float("nan")),
        "idle_heads_dropped": metrics.get("webrtc_idle_heads_dropped_total", float("nan")),
        "startup_cpu_s": ready.ticks["server"] / HZ,
        "storm_cpu_pct": use["server_cpu_pct"],
        "storm_cpu_s": use["server_cpu_s"],
        "cpu_us_per_reconnect": 1e6 * use["server_cpu_s"] / max(1, sockets),
        "storm_seconds": use["wall_s"],
        "loadgen_cpu_pct": use["loadgen_cpu_pct"],
        "loadgen_cpu_us_per_reconnect": 1e6 * use["loadgen_cpu_pct"] * use["wall_s"] / 100 / max(1, sockets),
        "other_cpu_pct": use["other_cpu_pct"],
        "rss_mib_after": at_back.rss / 1024,
        "timeline_opens_per_s": {str(k - math.floor(t_term)): v for k, v in sorted(per_second.items())},
    }


def _terminate(server: Server, timeout: float = 30) -> tuple[float, float, float]:
    """SIGTERM, then watch (bounded) until it exits: answers its CPU seconds from the signal to the
    last reading before it exited (every 20 ms), and the times (epoch) of the signal and of the exit."""
    pid = server.pid
    before = last = cpu_ticks(pid)
    t_term = time.time()
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server.proc.poll() is None and time.monotonic() < deadline:
        try:
            last = cpu_ticks(pid)
        except (OSError, IndexError, ValueError):
            pass  # it is exiting
        time.sleep(0.02)
    return (last - before) / HZ, t_term, time.time()


# ---------------------------------------------------------------- the run's part


def run_overload(cfg: Config) -> dict[str, dict[str, dict[str, Any]]]:
    """Capacity (each server, once) and the storm (each webrtc_app revision, once), each on a fresh
    server once the machine is quiet, as cfg.workloads asks: {"capacity": {server: figures},
    "storm": {server: figures}}."""
    found: dict[str, dict[str, dict[str, Any]]] = {"capacity": {}, "storm": {}}
    sockets, limit = capacity_sockets(cfg)
    plan = [("capacity", s, f"cap{s.tag}", limit) for s in cfg.subjects if "capacity" in cfg.workloads]
    plan += [("storm", s, f"storm{s.tag[1:]}", None) for s in cfg.revisions if "storm" in cfg.workloads]
    for what, subject, tag, most in plan:
        wait_for_quiet(cfg)
        with fresh(f"{what} against {subject.label} ({tag})") as procs:
            server = procs.add(start_server(cfg, subject, tag, most))
            figures = found[what][subject.key] = (
                capacity(cfg, server, tag, sockets) if what == "capacity" else storm(cfg, server, tag)
            )
        if what == "capacity":
            log(
                f"capacity {subject.label}: {figures['sockets']:,} sockets, {figures['rss_kib_per_socket_held']:.1f} KiB "
                f"each, {figures['hold_cpu_pct']:.2f}% of a core holding, overflow {figures['overflow_outcomes']}"
            )
        else:
            log(
                f"storm {subject.label}: {figures['sockets']:,} sockets, back {figures['back_s']:.1f} s after SIGTERM, failed "
                f"tries {figures['failures']}, worst stall {figures['lag_max_ms']:.0f} ms"
            )
    return found
