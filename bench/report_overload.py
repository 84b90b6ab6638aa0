"""The overload results as markdown (docs/benchmarks.md, "capacity", "storm" and "Targets"):
capacity side by side for both servers with the projection to 100,000 sockets, the storm,
and the issue's targets, each met or not, from the rounds and from these."""

from __future__ import annotations

import math
from typing import Any

from bench.config import LABELS, Config
from bench.overload import PROJECTED_SOCKETS, open_files_limit
from bench.report import LOADGEN_LIMIT, Results, median

#: overload[kind] = the figures of its one capacity run; overload["storm"] = the storm's.
Overload = dict[str, dict[str, Any]]

#: Storm targets: all back within this long after SIGTERM (s), no stall longer (ms).
STORM_BACK_S = 30
STORM_STALL_MS = 250
#: Calls target: webrtc_app's calls/s at least this many times PeerJS's.
CALLS_RATIO = 1.2
#: Heartbeat target: % of a core per 10,000 idle sockets.
HEARTBEAT_PCT_PER_10K = 2.0


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _kinds(counts: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {n:,.0f}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


CAPACITY_ROWS = (
    # key, label, format, better ("lower"/"higher"/"" informative)
    ("sockets", "sockets held", "{:,.0f}", ""),
    ("loadgens", "load generators (one source address each)", "{:.0f}", ""),
    ("open_per_s", "sockets opened/s", "{:,.0f}", "higher"),
    ("cpu_us_per_open", "server CPU µs per socket opened", "{:.0f}", "lower"),
    ("loadgen_cpu_pct_open", "load generators' CPU while opening (% of one core)", "{:.0f}", ""),
    ("listen_drops_open", "connections dropped on a full accept queue while opening (kernel, machine-wide)", "{:,.0f}", ""),
    ("rss_kib_per_socket", "RSS KiB per socket, all open", "{:.1f}", "lower"),
    ("rss_kib_per_socket_held", "RSS KiB per socket, after the hold", "{:.1f}", "lower"),
    ("rss_mib", "server RSS MiB, all open", "{:,.0f}", "lower"),
    ("kernel_kib_per_connection", "kernel KiB per connection, both ends (slab + TCP buffers, machine-wide)", "{:.1f}", ""),
    ("hold_seconds", "hold (s)", "{:.0f}", ""),
    ("hold_cpu_pct", "server CPU while holding (% of one core)", "{:.2f}", "lower"),
    ("hold_cpu_pct_per_10k", "server CPU while holding, per 10,000 sockets (% of one core)", "{:.2f}", "lower"),
    ("pings_per_socket", "server pings per socket in the hold", "{:.2f}", ""),
    ("heartbeats_per_socket", "client heartbeats per socket in the hold", "{:.2f}", ""),
    ("hold_lag_ms", "event-loop lag while holding, worst (ms)", "{:.0f}", ""),
    ("lag_max_ms", "event-loop lag since start, worst (ms; opening included)", "{:.0f}", ""),
    ("probe_lag_ms", "a bare asyncio loop on the server's CPU meanwhile: its worst lag (ms; the machine's share)", "{:.0f}", ""),
    ("overflow_verdict_p50_ms", "sockets beyond the limit: time to the answer p50 (ms)", "{:.1f}", "lower"),
    ("overflow_verdict_max_ms", "sockets beyond the limit: time to the answer, slowest (ms)", "{:.1f}", "lower"),
    ("other_cpu_pct", "other processes' CPU, highest of opening and hold (% of one core)", "{:.0f}", ""),
)


def capacity_table(cfg: Config, overload: Overload) -> str:
    kinds = [k for k in ("webrtc_app", "peerjs") if k in overload]
    lines = [
        "| figure | " + " | ".join(LABELS[k] for k in kinds) + (" | webrtc_app / PeerJS |" if len(kinds) == 2 else " |"),
        "| --- | " + " | ".join("---:" for _ in kinds) + (" | ---: |" if len(kinds) == 2 else " |"),
    ]
    for key, label, fmt, better in CAPACITY_ROWS:
        values = [overload[k].get(key) for k in kinds]
        if all(v is None for v in values):
            continue
        cells = [_fmt(v, fmt) for v in values]
        if len(kinds) == 2:
            a, b = values
            cells.append(f"{a / b:.2f}" if better and a is not None and b else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    outcome = [f"{_kinds(overload[k].get('overflow_outcomes', {}))}" for k in kinds]
    lines.append(
        f"| how the {overload[kinds[0]].get('overflow', 0):,} sockets beyond the limit were answered | "
        + " | ".join(outcome)
        + (" | – |" if len(kinds) == 2 else " |")
    )
    return "\n".join(lines)


def projection_text(figures: dict[str, Any], label: str) -> str:
    n = figures["sockets"]
    return (
        f"**{label} at {PROJECTED_SOCKETS:,} sockets** (linear from the {n:,} measured): about "
        f"{figures['projected_rss_mib']:,.0f} MiB of RSS ({figures['rss_base_mib']:.0f} MiB at start + "
        f"{figures['rss_kib_per_socket_held']:.1f} KiB per socket), plus about {figures['projected_kernel_mib']:,.0f} MiB "
        f"of kernel memory for the server's ends of the connections (half the {figures['kernel_kib_per_connection']:.1f} "
        f"KiB per connection measured for both ends), and {figures['projected_hold_cpu_pct']:.1f}% of a core for the "
        f"heartbeat ({figures['hold_cpu_pct_per_10k']:.2f}% per 10,000){_stall(figures)}. With about "
        f"{figures['per_process']:,} sockets per process at this open-file limit ({open_files_limit():,}), that is "
        f"{figures['projected_processes']} processes."
    )


def _stall(figures: dict[str, Any]) -> str:
    stall = figures.get("projected_stall_ms")
    if stall is None or math.isnan(stall):
        return ""
    return (
        f"; if the worst stall while holding ({figures['hold_lag_ms']:.0f} ms) is the heartbeat's round, which pings "
        f"every quiet socket in one callback, it would grow to about {stall:,.0f} ms"
    )


PROJECTION_CAVEATS = (
    "The projection rests on memory and heartbeat CPU growing linearly with the sockets held, which the steps "
    "of the idle workload and this run support over the range measured; it ignores what does not show at this "
    "size: the kernel's socket buffers of busy sockets (idle ones hold none, and none of it is in RSS), more "
    "heartbeat rounds falling behind if one round takes longer than its tick, the CPU caches (a heartbeat round "
    "over 100,000 sockets touches more memory than fits), garbage-collector passes over more objects, and the "
    "traffic of sockets that are not idle. Past the open-file limit one process holds no more: "
    "100,000 sockets need the limit raised (WEBRTC_MAX_SOCKETS and the descriptors) or several processes "
    "(--processes with the Redis backplane)."
)

STORM_ROWS = (
    ("sockets", "sockets connected before the restart", "{:,.0f}"),
    ("loadgens", "load generators (one source address each)", "{:.0f}"),
    ("shutdown_s", "SIGTERM to the old process's exit (s)", "{:.2f}"),
    ("shutdown_cpu_s", "old process's CPU from SIGTERM to its exit (s)", "{:.2f}"),
    ("first_drop_s", "SIGTERM to the first client seeing its socket closed (s)", "{:.1f}"),
    ("last_drop_s", "SIGTERM to the last client seeing its socket closed (s)", "{:.1f}"),
    ("start_s", "new process: start to answering /healthz (s)", "{:.2f}"),
    ("down_s", "SIGTERM to the new process answering (s)", "{:.2f}"),
    ("back_s", "SIGTERM to the last socket back (s)", "{:.1f}"),
    ("back_after_ready_s", "new process answering to the last socket back (s)", "{:.1f}"),
    ("refused", "tries refused (ECONNREFUSED), all", "{:,.0f}"),
    ("refused_after_ready", "… of which after the new process answered", "{:,.0f}"),
    ("server_full", "tries closed with 1013 SERVER-FULL", "{:,.0f}"),
    ("unavailable", "tries answered 503 (out of descriptors)", "{:,.0f}"),
    ("other_failures", "other failed tries", "{:,.0f}"),
    ("max_attempt", "most tries one socket needed", "{:.0f}"),
    ("reconnects_peak_per_s", "reconnections in the busiest second", "{:,.0f}"),
    ("listen_drops", "connections dropped on a full accept queue, SIGTERM to all back (kernel, machine-wide)", "{:,.0f}"),
    ("lag_max_ms", "new process's worst event-loop stall (ms, webrtc_event_loop_lag_max_seconds)", "{:.0f}"),
    ("lag_at_ready_ms", "… the worst already when it first answered /healthz (ms)", "{:.0f}"),
    (
        "probe_lag_ms",
        "a bare asyncio loop on the server's CPU, restart to all back: its worst lag (ms; the machine's share)",
        "{:.0f}",
    ),
    ("startup_cpu_s", "new process's CPU until it answered (s; start-up)", "{:.2f}"),
    ("storm_cpu_pct", "new process's CPU from answering to all back (% of one core)", "{:.0f}"),
    ("cpu_us_per_reconnect", "… per socket back (µs)", "{:.0f}"),
    ("loadgen_cpu_pct", "load generators' CPU over the same time (% of one core)", "{:.0f}"),
    ("loadgen_cpu_us_per_reconnect", "… per socket back (µs)", "{:.0f}"),
    ("other_cpu_pct", "other processes' CPU over the same time (% of one core)", "{:.0f}"),
    ("rss_mib_after", "new process's RSS with all back (MiB)", "{:,.0f}"),
)


def storm_table(storm: dict[str, Any]) -> str:
    lines = ["| figure | webrtc_app |", "| --- | ---: |"]
    for key, label, fmt in STORM_ROWS:
        lines.append(f"| {label} | {_fmt(storm.get(key), fmt)} |")
    lines.append(f"| how the sockets were dropped (close code) | {_kinds(storm.get('drops', {}))} |")
    lines.append(f"| other failed tries by kind | {_kinds(storm.get('other_kinds', {}))} |")
    if storm.get("loadgen_cpu_pct", 0) >= LOADGEN_LIMIT * len(set(storm.get("loadgen_cpus", [None]))):
        lines.append(
            f"| † the load generators used {storm['loadgen_cpu_pct']:.0f}% of their core(s): the storm's pace was partly "
            "theirs (a late client's request meets the server's 10 s header timeout: \"reset\") | † |"
        )
    if not storm.get("complete"):
        lines.append(
            f"| **not all back**: open when the load generators gave up | {storm.get('open_after', 0):,} "
            f"of {storm['sockets']:,} |"
        )
    return "\n".join(lines)


def _median(results: Results, kind: str, workload: str, key: str) -> float | None:
    return median([run[key] for run in results.get(kind, {}).get(workload, []) if key in run])


def _loadgen_limited(results: Results, kind: str) -> str | None:
    """Why a server's calls/s is not its own limit (its load generator saturated while the server
    was not), or None."""
    loadgen = _median(results, kind, "calls", "loadgen_cpu_pct")
    server = _median(results, kind, "calls", "server_cpu_pct")
    if loadgen is not None and loadgen >= LOADGEN_LIMIT and (server is None or server < LOADGEN_LIMIT):
        return f"the load generators used {loadgen:.0f}% of their core and {LABELS[kind]} {server or 0:.0f}% of its own"
    return None


def calls_verdict(results: Results, ratio: float) -> str:
    """calls/s ≥ CALLS_RATIO × PeerJS's: a measured rate is the server's own limit only when the
    server, not the load generator, was saturated. A ratio above the target needs PeerJS's run to
    be such; a ratio below it needs webrtc_app's."""
    if ratio >= CALLS_RATIO:
        why = _loadgen_limited(results, "peerjs")
        return f"not shown: against PeerJS {why}" if why else "yes"
    why = _loadgen_limited(results, "webrtc_app")
    return f"not shown: against webrtc_app {why}" if why else "**no**"


def targets_table(cfg: Config, results: Results, overload: Overload) -> str:
    """The issue's targets (docs/benchmarks.md, "Targets"): what each is measured by, the figures, met or not."""
    rows: list[tuple[str, str, str]] = []

    def compare(target: str, ours: float | None, theirs: float | None, unit: str, fmt: str, ok: bool | None) -> None:
        if ours is None and theirs is None:
            return
        verdict = "–" if ok is None else "yes" if ok else "**no**"
        rows.append((target, f"{_fmt(ours, fmt)} vs {_fmt(theirs, fmt)} {unit}", verdict))

    steps = cfg.idle_steps
    if "idle" in cfg.workloads:
        for step in steps:
            a = _median(results, "webrtc_app", "idle", f"cpu_us_per_open_{step}")
            b = _median(results, "peerjs", "idle", f"cpu_us_per_open_{step}")
            ok = None if a is None or b is None else a <= b
            compare(f"handshake: server CPU per socket opened ≤ PeerJS (idle, up to {step:,})", a, b, "µs", "{:.0f}", ok)
    if "calls" in cfg.workloads:
        a = _median(results, "webrtc_app", "calls", "calls_per_s")
        b = _median(results, "peerjs", "calls", "calls_per_s")
        if a is not None and b:
            rows.append(
                (f"calls/s ≥ {CALLS_RATIO}× PeerJS", f"{a:,.0f} vs {b:,.0f} ({a / b:.2f}×)", calls_verdict(results, a / b))
            )
        a = _median(results, "webrtc_app", "calls", "cpu_ms_per_call")
        b = _median(results, "peerjs", "calls", "cpu_ms_per_call")
        compare(
            "calls: server CPU per call ≤ PeerJS (informative)", a, b, "ms", "{:.2f}", None if a is None or b is None else a <= b
        )
        if a and b:
            # What each server's core would allow if the load generator were not the limit: a
            # derived figure, for when it is (on 2 cores it is).
            rows.append(
                (
                    f"calls/s one core allows ≥ {CALLS_RATIO}× PeerJS (derived: 1,000 / server CPU ms per call)",
                    f"{1000 / a:,.0f} vs {1000 / b:,.0f} ({b / a:.2f}×)",
                    "yes (derived)" if b / a >= CALLS_RATIO else "**no** (derived)",
                )
            )
    if "idle" in cfg.workloads:
        last = steps[-1]
        a = _median(results, "webrtc_app", "idle", f"rss_kib_per_socket_{last}")
        b = _median(results, "peerjs", "idle", f"rss_kib_per_socket_{last}")
        compare(
            f"idle: RSS KiB per socket ≤ PeerJS at {last:,}", a, b, "KiB", "{:.1f}", None if a is None or b is None else a <= b
        )
        pct = _median(results, "webrtc_app", "idle", "idle_cpu_pct")
        if pct is not None:
            per10k = pct * 10_000 / last
            rows.append(
                (
                    f"idle: heartbeat CPU per 10,000 sockets < {HEARTBEAT_PCT_PER_10K:g}% of a core (idle, {last:,} held)",
                    f"{per10k:.2f}%",
                    "yes" if per10k < HEARTBEAT_PCT_PER_10K else "**no**",
                )
            )
    if "webrtc_app" in overload or "peerjs" in overload:
        mine, theirs = overload.get("webrtc_app", {}), overload.get("peerjs", {})
        n = mine.get("sockets") or theirs.get("sockets") or 0
        a, b = mine.get("rss_kib_per_socket_held"), theirs.get("rss_kib_per_socket_held")
        compare(
            f"capacity: RSS KiB per socket ≤ PeerJS at {n:,}", a, b, "KiB", "{:.1f}", None if a is None or b is None else a <= b
        )
        a, b = mine.get("cpu_us_per_open"), theirs.get("cpu_us_per_open")
        compare(
            f"handshake: server CPU per socket opened ≤ PeerJS (capacity, {n:,})",
            a,
            b,
            "µs",
            "{:.0f}",
            None if a is None or b is None else a <= b,
        )
        if mine:
            per10k = mine["hold_cpu_pct_per_10k"]
            rows.append(
                (
                    f"capacity: heartbeat CPU per 10,000 sockets < {HEARTBEAT_PCT_PER_10K:g}% of a core ({n:,} held "
                    f"{mine['hold_seconds']:.0f} s)",
                    f"{per10k:.2f}% ({mine['projected_hold_cpu_pct']:.1f}% at {PROJECTED_SOCKETS:,})",
                    "yes" if per10k < HEARTBEAT_PCT_PER_10K else "**no**",
                )
            )
    storm = overload.get("storm")
    if storm:
        back = storm["back_s"]
        rows.append(
            (
                f"storm: all {storm['sockets']:,} back within {STORM_BACK_S} s of the restart",
                f"{back:.1f} s" if storm["complete"] else f"{storm['open_after']:,} back after {cfg.storm['timeout']:g} s",
                "yes" if storm["complete"] and back <= STORM_BACK_S else "**no**",
            )
        )
        wrong = storm["refused_after_ready"] + storm["server_full"] + storm["unavailable"] + storm["other_failures"]
        rows.append(
            (
                "storm: nothing refused that would not be at steady state",
                f"{wrong:,} (refused after the restart {storm['refused_after_ready']:,}, 1013 {storm['server_full']:,}, "
                f"503 {storm['unavailable']:,}, other {storm['other_failures']:,})",
                "yes" if wrong == 0 else "**no**",
            )
        )
        rows.append(
            (
                f"storm: no event-loop stall over {STORM_STALL_MS} ms",
                f"{storm['lag_max_ms']:.0f} ms (a bare asyncio loop on the same CPU meanwhile: {storm['probe_lag_ms']:.0f} ms)",
                "yes" if storm["lag_max_ms"] <= STORM_STALL_MS else "**no**",
            )
        )
    lines = ["| target | result (webrtc_app vs PeerJS) | met |", "| --- | --- | --- |"]
    lines += [f"| {target} | {result} | {verdict} |" for target, result, verdict in rows]
    return "\n".join(lines)


def overload_report(cfg: Config, results: Results, overload: Overload) -> str:
    """The capacity and storm sections and the targets, for the end of the results block."""
    lines: list[str] = []
    capacity = {k: v for k, v in overload.items() if k in ("webrtc_app", "peerjs")}
    if capacity:
        first = next(iter(capacity.values()))
        lines += [
            f"**Capacity** (one run per server: {first['sockets']:,} idle sockets from {first['loadgens']} load generators, "
            f"held {cfg.capacity['seconds']:g} s, then {first.get('overflow', 0):,} more):",
            "",
            capacity_table(cfg, capacity),
            "",
        ]
        for kind, figures in capacity.items():
            lines += [projection_text(figures, LABELS[kind]), ""]
        lines += [PROJECTION_CAVEATS, ""]
    storm = overload.get("storm")
    if storm:
        lines += [
            f"**Reconnect storm** (webrtc_app; {storm['sockets']:,} sockets, the server restarted with SIGTERM and started "
            "again on the same port, every client reconnecting with the pages' backoff):",
            "",
            storm_table(storm),
            "",
        ]
    lines += ["**Targets**:", "", targets_table(cfg, results, overload)]
    return "\n".join(lines)
