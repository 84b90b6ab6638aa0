"""100,000 sockets on this machine, measured (``python bench/run.py --hundred``): webrtc_app as
``--processes N`` workers on one redis-server, load generators from several 127.0.0.x source
addresses, every socket held with heartbeats while the fault checker's conversations cross
workers, then a rolling restart of the workers one by one.

What it reports (docs/benchmarks.md, "100,000 sockets"): memory per socket (the workers' RSS,
and the kernel's TCP memory for both ends), the workers' CPU while they only keep sockets alive
(heartbeats), the cross-worker message latency under that load, how long each worker's sockets
take to come back after its restart (the pages' own reconnect policy, static/js/backoff.js), and
the checker's classification of every message during the rolling restart (bench/faults.py).

A process here may hold 20,000 descriptors at most (the hard limit of this machine), so the
sockets are spread over 8 workers and 7 load generators, each load generator's over 8 source
addresses (127.0.2.1-8, 127.0.3.1-8, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

from bench import BenchError, log
from bench.config import Config
from bench.faults import Fault, Verdict, connection_at, exercise, judge, reconnected_between
from bench.faults import Link as CheckedLink
from bench.loadgen import LoadGens, split
from bench.overload import kernel_memory_kib
from bench.processes import RedisServer
from bench.sampling import HZ, cpu_ticks
from bench.servers import Webrtc, start, start_webrtc

#: How the run is made (``--hundred-*`` options override the first three).
SOCKETS, WORKERS, HOLD_SECONDS = 100_000, 8, 60.0
PER_LOADGEN = 15_000  # a load generator's sockets: its descriptors
#: Source addresses per load generator: with one, each bind() scanned most of its ports in the
#: kernel (the first 100,000-socket runs opened 210 sockets a second, half the CPU in that scan).
SOURCES = 8
CHECKED_PAIRS = 6  # the fault checker's conversations (each side lands on a worker of the kernel's choice)
#: Seconds between two scrapes of /metrics while the sockets come back: a scrape costs every
#: worker a listing of its descriptors (the process collector), some 12,500 here, and at ten
#: a second the first runs spent a fifth of a worker's time on it.
SCRAPE_EVERY = 1.0
#: Longest the load generators may take to open every socket (each registers cluster-wide).
OPEN_WITHIN = 1500.0


def children(pid: int) -> list[int]:
    """The worker processes of the server (its children)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
            found += [int(child) for child in handle.read().split()]
    return sorted(found)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_sockets(server: Webrtc, tries: int = 10, workers: int = 0) -> int:
    """Sockets every worker holds together (one scrape reports every worker; while a worker is
    too busy to answer in time the scrape is answered 503, and asked again). With ``workers``,
    -1 when the scrape did not report that many (a worker did not answer in time)."""
    for _ in range(tries - 1):
        try:
            metrics = server.metrics()
            break
        except OSError:  # urllib's HTTPError and URLError included
            time.sleep(0.5)
    else:
        metrics = server.metrics()
    series = [value for name, value in metrics.items() if name.split("{")[0] == "webrtc_open_sockets"]
    if workers and len(series) < workers:
        return -1
    return int(sum(series))


def workers_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total / HZ


def checked_links(server: Webrtc, pairs: int) -> list[CheckedLink]:
    return [
        CheckedLink(f"h{k}>i{k}", f"{server.ws}/wscall?id=ha{k}&peer_id=hb{k}", f"{server.ws}/wscall?id=hb{k}&peer_id=ha{k}")
        for k in range(pairs)
    ]


def closed_by_server(server: Webrtc) -> dict[str, int]:
    """The sockets the workers closed so far, by reason (a restarted worker's count starts over)."""
    closed: dict[str, int] = {}
    for name, value in server.metrics().items():
        if name.startswith("webrtc_sockets_closed_by_server_total{"):
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            closed[reason] = closed.get(reason, 0) + int(value)
    return closed


def rolling_restart(server: Webrtc, total: int, back_within: float) -> list[dict[str, Any]]:
    """SIGTERM each worker in turn; the parent starts a new one. Waits, after each, until every
    socket is open again; answers, per worker, how long its sockets took to come back."""
    restarts = []
    pids = children(server.pid)
    workers = len(pids)
    for pid in pids:
        t_term = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        deadline = t_term + back_within
        exited = None
        scraped = 0.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if exited is None and pid not in children(server.pid):
                exited = time.monotonic() - t_term
            if time.monotonic() - scraped < SCRAPE_EVERY:
                continue
            scraped = time.monotonic()
            now_open = open_sockets(server, workers=workers)
            if now_open < 0:
                continue  # a worker did not answer this scrape (or its successor is not up yet)
            if exited is not None and now_open >= total:
                break
        back = time.monotonic() - t_term
        restarts.append({"pid": pid, "back_s": back, "exited_s": exited, "complete": open_sockets(server) >= total})
        log(
            f"hundred: worker {pid} restarted (exited after {exited or 0:.1f} s), "
            f"all back after {back:.1f} s; closed by the workers: {closed_by_server(server)}"
        )
    return restarts


def run_hundred(cfg: Config, args: argparse.Namespace, facts: dict[str, str]) -> int:
    sockets = args.hundred_sockets or SOCKETS
    workers = args.hundred_workers or WORKERS
    hold = args.hundred_hold or HOLD_SECONDS
    redis_binary = cfg.redis_server or "/usr/bin/redis-server"
    redis = start(cfg, RedisServer(binary=redis_binary, log_path=os.path.join(cfg.log_dir, "hundred.redis.log")))
    try:
        server = start_webrtc(cfg, "hundred", None, redis.url, args=("--processes", str(workers)))
        try:
            return _measure(cfg, server, sockets, workers, hold, facts, not args.hundred_no_restart)
        finally:
            server.stop()
    finally:
        redis.stop()


def _measure(
    cfg: Config, server: Webrtc, sockets: int, workers: int, hold: float, facts: dict[str, str], restart: bool = True
) -> int:
    count = max(2, -(-sockets // PER_LOADGEN))
    parts = [
        {"sockets": n, "open-concurrency": max(1, 400 // count), "storm-timeout": 1200, "timeout": 3600}
        for n in split(sockets, count)
    ]
    log(f"hundred: {sockets:,} sockets from {count} load generators on {workers} workers")
    rss0 = sum(rss_kib(pid) for pid in children(server.pid))
    kernel0 = kernel_memory_kib()
    group = LoadGens(cfg, server, "storm", parts, "hu", sources=SOURCES)
    figures: dict[str, Any] = {"sockets": sockets, "workers": workers, "loadgens": count}
    try:
        group.expect("ready", cfg.event_timeout)
        started = time.monotonic()
        group.go()
        opened = group.expect("opened", OPEN_WITHIN)
        figures["open_s"] = time.monotonic() - started
        # Tries closed with 1013 while they opened (SERVER-BUSY: the backplane was behind).
        figures["open_refused"] = sum(event.get("refused", 0) for event in opened)
        held = open_sockets(server)
        if held != sockets:
            raise BenchError(f"the workers hold {held:,} sockets, the load generators opened {sockets:,}")
        pids = children(server.pid)
        metrics = server.metrics()
        figures["per_worker"] = sorted(int(v) for name, v in metrics.items() if name.startswith("webrtc_open_sockets{"))
        # Held with heartbeats (WS_PING_INTERVAL 20 s: three rounds a minute) while the checker's
        # conversations cross workers: their latency under this load, and the heartbeat CPU.
        cpu0, t0 = workers_cpu(pids), time.monotonic()
        quiet = Fault("held, nothing injected", _nothing, _nothing, max(1.0, hold - 5.0))
        held_links = checked_links(server, CHECKED_PAIRS)
        figures["held"] = asyncio.run(exercise(held_links, quiet, 2.0, before=1.0, after=1.0, connections=False)).__dict__
        cpu1, t1 = workers_cpu(pids), time.monotonic()
        figures["hold_s"] = t1 - t0
        figures["heartbeat_cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
        figures["rss_kib_per_socket"] = (sum(rss_kib(pid) for pid in pids) - rss0) / sockets
        figures["kernel_kib_per_connection"] = (kernel_memory_kib() - kernel0) / sockets
        log(f"hundred: held {', '.join(f'{k} {v}' for k, v in figures.items() if k != 'held')}")
        log(
            f"hundred: the checker while held: {figures['held']['counts']}, p50/p99 {figures['held']['during_p50_ms']}"
            f" / {figures['held']['during_p99_ms']} ms"
        )
        if not restart:
            group.kill()
            report(figures, facts, cfg.command)
            return 0
        # The rolling restart, the checker's conversations going on meanwhile.
        group.go()  # the load generators now wait for every socket to be dropped and back
        restarts: list[dict[str, Any]] = []

        async def restart_all() -> None:
            restarts.extend(await asyncio.to_thread(rolling_restart, server, sockets + 2 * CHECKED_PAIRS, 300.0))

        rolling = Fault("a rolling restart of every worker", restart_all, _nothing, 0.0)
        links = checked_links(server, CHECKED_PAIRS)
        verdict: Verdict = asyncio.run(exercise(links, rolling, 2.0, before=2.0, after=5.0, connections=False))
        figures["rolling"] = verdict.__dict__
        _explain(links, 2.0)
        figures["restarts"] = restarts
        backs = group.expect("back", 1300)
        figures["all_back"] = all(b["complete"] for b in backs)
        group.go()
        helds = group.expect("held", cfg.event_timeout)
        figures["drops"] = _summed(held["drops"] for held in helds)
        figures["failures"] = _summed(held["failures"] for held in helds)
        figures["max_attempt"] = max(held["max_attempt"] for held in helds)
        log(f"hundred: dropped by close code {figures['drops']}, failed tries {figures['failures']}")
        group.go()
        group.finish(cfg.event_timeout)
    except BaseException:
        group.kill()
        raise
    report(figures, facts, cfg.command)
    return 0 if verdict.holds and figures["all_back"] else 1


def _explain(links: list[CheckedLink], bound: float) -> None:
    """Log each message not in time, its class, and the sender's and receiver's reconnections
    and the notices around it."""
    for link in links:
        arrived: dict[int, float] = {}
        last = -1
        for number, at in link.arrivals:
            arrived.setdefault(number, at)
            if number < last and number in link.sent and last in link.sent:
                kind = "crossed a reconnection" if reconnected_between(link, number, last) else "out of order"
                log(
                    f"{link.name} #{number} {kind}: sent {link.sent[number]:.2f}, arrived {at:.2f} after "
                    f"#{last} (sent {link.sent[last]:.2f}); receiver closed {_near(link.receiver_closed, at - 1)}"
                )
            last = max(last, number)
        for number, (verdict, notice) in sorted(judge(link, bound).items()):
            if verdict == "in_time":
                continue
            sent, at = link.sent[number], arrived.get(number)
            late = "-" if at is None else round(at - sent, 2)
            told = "-" if notice is None else round(notice - sent, 2)
            log(
                f"{link.name} #{number} {verdict}: sent {sent:.2f} on connection {connection_at(link, sent)}, "
                f"arrived {late}, told {told}; "
                f"sender closed {_near(link.sender_closed, sent)}, receiver closed {_near(link.receiver_closed, sent)}, "
                f"notices {_near(link.notices, sent)}"
            )


def _summed(tables: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for table in tables:
        for kind, n in table.items():
            total[kind] = total.get(kind, 0) + n
    return total


def _near(times: list[float], sent: float) -> list[float]:
    return [round(t - sent, 2) for t in times if -1 <= t - sent <= 3]


async def _nothing() -> None:
    return None


def report(figures: dict[str, Any], facts: dict[str, str], command: str) -> None:
    """The figures as docs/benchmarks.md quotes them: the hold, and the rolling restart if it ran."""
    held = figures["held"]
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {facts.get('cpu', '')}; {facts.get('memory', '')}; open-file limit {facts.get('open-file limit', '')}",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| sockets held (workers, load generators) | {figures['sockets']:,} ({figures['workers']}, {figures['loadgens']}) |",
        f"| sockets per worker, fewest to most | {', '.join(f'{n:,}' for n in figures['per_worker'])} |",
        f"| time to open them all (s) | {figures['open_s']:.1f} |",
        f"| held with heartbeats (s) | {figures['hold_s']:.0f} |",
        f"| workers' CPU while holding them (% of one core, all workers) | {figures['heartbeat_cpu_pct']:.1f} |",
        f"| workers' RSS per socket (KiB) | {figures['rss_kib_per_socket']:.2f} |",
        f"| kernel memory per connection, both ends (KiB; slab and TCP buffers) | {figures['kernel_kib_per_connection']:.2f} |",
        f"| cross-worker message latency under that load, p50 / p99 (ms) | {held['during_p50_ms']} / {held['during_p99_ms']} |",
        f"| checker while held: in time / notified / late / lost / twice / out of order / sender closed | {_counts(held)} |",
    ]
    if "rolling" in figures:
        backs = [r["back_s"] for r in figures["restarts"]]
        exits = [r["exited_s"] or 0.0 for r in figures["restarts"]]
        lines += [
            f"| rolling restart: each worker exited after (s; SIGTERM to exit) | {', '.join(f'{e:.1f}' for e in exits)} |",
            f"| rolling restart: every socket open again and the worker exited, after (s) "
            f"| {', '.join(f'{b:.1f}' for b in backs)} |",
            f"| rolling restart: checker, the same | {_counts(figures['rolling'])} |",
            f"| rolling restart: messages of a closed socket that arrived after its replacement's first | "
            f"{figures['rolling']['crossed']} |",
            f"| rolling restart: sockets dropped, by close code | {_kinds(figures['drops'])} |",
            f"| rolling restart: failed reconnection tries, by kind (most tries of one socket) "
            f"| {_kinds(figures['failures'])} ({figures['max_attempt']}) |",
            f"| every socket back after the rolling restart | {'yes' if figures['all_back'] else 'no'} |",
        ]
    print("\n".join(lines), flush=True)
    log("hundred: done")


def _kinds(table: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(table.items(), key=lambda item: -item[1])) or "none"


def _counts(verdict: dict[str, Any]) -> str:
    counts = verdict["counts"]
    names = ("in_time", "notified", "late", "lost", "duplicated", "out_of_order", "sender_closed")
    return " / ".join(str(counts[name]) for name in names)
