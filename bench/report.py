"""The results as markdown (docs/benchmarks.md, "Results" and "Across nodes"), every table built
from table.py's one model: the results table and each round, capacity with its projection to
100,000 sockets, the storm, the targets, the py-spy profiles, and the ``--cluster`` tables."""

from __future__ import annotations

import os
import re
import string
import time
from dataclasses import replace
from typing import Any

from bench import PROJECT_DIR
from bench.config import CLUSTER_LABELS, ROUND_WORKLOADS, Config, Subject, scaling_key, scaling_label
from bench.environment import version_of
from bench.overload import PROJECTED_SOCKETS, open_files_limit
from bench.profiling import py_spy_path
from bench.table import LOADGEN_LIMIT, Column, Ratio, Row, markdown, medians, rounds

#: results[server][workload] = the figures of each round; the same for --cluster, by variant.
Results = dict[str, dict[str, list[dict[str, Any]]]]
#: overload[server] = the figures of its one capacity run; overload["storm"] = the storm's.
Overload = dict[str, dict[str, Any]]

#: Storm targets: all back within this long after SIGTERM (s), no stall longer (ms).
STORM_BACK_S = 30
STORM_STALL_MS = 250
#: Calls target: webrtc_app's calls/s at least this many times PeerJS's.
CALLS_RATIO = 1.2
#: Heartbeat target: % of a core per 10,000 idle sockets.
HEARTBEAT_PCT_PER_10K = 2.0

NOTE = (
    f"† The load generator used {LOADGEN_LIMIT}% or more of its core in this workload (median): this rate or time is "
    "partly its own limit, so the server may do better than shown. CPU per unit of work is not affected."
)
CLUSTER_NOTE = (
    f"† The load generator used {LOADGEN_LIMIT}% or more of its core here (median): this rate or time is partly "
    "its own limit. CPU per relayed message is not affected."
)


def kinds(counts: dict[str, Any]) -> str:
    """{"close 1013": 200, ...} as "close 1013 200, ..." (largest first)."""
    return ", ".join(f"{kind} {n:,.0f}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def columns_of(subjects: list[Subject], results: Results) -> tuple[list[Column], list[Ratio]]:
    """A column per server measured, and webrtc_app's ratio to each of the others (PeerJS first)."""
    columns = [Column(s.label, results[s.key]) for s in subjects if s.key in results]
    first = columns[0] if columns and columns[0].label == "webrtc_app" else None
    others = sorted((c for c in columns if first and c is not first), key=lambda c: c.label != "PeerJS")
    return columns, [Ratio(f"{first.label} / {c.label}", first, c) for c in others if first]


def header(cfg: Config, how: str, facts: dict[str, str], where: str) -> list[str]:
    """The lines every results block starts with: the command and the machine."""
    return [
        f"Command: `{cfg.command}` ({how}; {(time.monotonic() - cfg.started) / 60:.1f} minutes)",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {where}.",
    ]


def disturbed(cfg: Config, other_cpu: float, redone: int) -> str:
    return (
        f"Other processes on the machine (this machine is shared): at most {other_cpu:.0f}% of one core during a kept "
        f"measurement; {redone} measurement(s) redone because they used over {cfg.max_other_cpu:g}%."
    )


# ---------------------------------------------------------------- webrtc_app against PeerJS


def result_rows(cfg: Config) -> list[Row]:
    """The rows of the results table, in order (the idle rows depend on --idle-steps)."""
    rows: list[Row] = []
    own = {
        "relay": [
            Row("relayed_per_s", "relayed msgs/s (both directions)", "{:,.0f}", "higher", dagger="loadgen_cpu_pct"),
            Row("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower", dagger="loadgen_cpu_pct"),
            Row("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower", dagger="loadgen_cpu_pct"),
            Row("cpu_us_per_msg", "server CPU µs per relayed msg", "{:.1f}", "lower"),
        ],
        "calls": [
            Row("calls_per_s", "calls/s", "{:,.0f}", "higher", dagger="loadgen_cpu_pct"),
            Row("setup_p50_ms", "set-up time p50 (ms)", "{:.1f}", "lower", dagger="loadgen_cpu_pct"),
            Row("setup_p99_ms", "set-up time p99 (ms)", "{:.1f}", "lower", dagger="loadgen_cpu_pct"),
            Row("cpu_ms_per_call", "server CPU ms per call", "{:.2f}", "lower"),
        ],
    }
    for workload, count in (("relay", cfg.relay_loadgens), ("calls", cfg.calls_loadgens)):
        rows += own[workload] + [
            Row("server_cpu_pct", "server CPU (% of one core)", "{:.0f}"),
            Row("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}"),
            # Several load generators side by side: each one's CPU too.
            *(
                Row(f"loadgen_cpu_pct_{n}", f"load generator {n} of {count} CPU (% of one core)", "{:.0f}")
                for n in range(1, count + 1)
                if count > 1
            ),
            Row("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}"),
        ]
        rows = [replace(row, group=row.group or workload) for row in rows]
    steps, previous = cfg.idle_steps, 0
    for step in steps:
        span = f"({previous:,} → {step:,})"
        rows += [
            Row(f"open_per_s_{step}", f"sockets opened/s {span}", "{:,.0f}", "higher", dagger=f"loadgen_cpu_pct_open_{step}"),
            Row(f"cpu_us_per_open_{step}", f"server CPU µs per socket opened {span}", "{:.0f}", "lower"),
            Row(f"loadgen_cpu_pct_open_{step}", f"load generator CPU {span} (% of one core)", "{:.0f}"),
            Row(f"rss_kib_per_socket_{step}", f"RSS KiB per socket at {step:,}", "{:.1f}", "lower"),
        ]
        previous = step
    last = f"{steps[-1]:,}"
    rows += [
        Row("rss_kib_per_socket_held", f"RSS KiB per socket at {last}, after the hold", "{:.1f}", "lower"),
        Row(f"rss_mib_{steps[-1]}", f"server RSS MiB at {last}", "{:.0f}", "lower"),
        Row("idle_cpu_pct", f"server CPU % while {last} sockets idle", "{:.2f}", "lower"),
        Row("pings_per_socket", "server pings per socket in the hold", "{:.2f}"),
        Row("heartbeats_per_socket", "client heartbeats per socket in the hold", "{:.2f}"),
        Row("other_cpu_pct", "other processes' CPU, highest of the steps and the hold (% of one core)", "{:.0f}"),
    ]
    rows = [replace(row, group=row.group or "idle") for row in rows]
    return [row for row in rows if row.group in cfg.workloads]


def rounds_text(cfg: Config) -> str:
    """How the measurements were repeated: rounds for relay, calls and idle, once for the others."""
    each = [w for w in cfg.workloads if w in ROUND_WORKLOADS]
    once = [w for w in cfg.workloads if w not in ROUND_WORKLOADS]
    order = " ".join(string.ascii_uppercase[: len(cfg.subjects)])
    parts = [f"{cfg.rounds} rounds of {', '.join(each)}, {order} {order}; medians"] if each else []
    return "; ".join(parts + ([f"{' and '.join(once)} once"] if once else [])) or "nothing measured"


def pinning(cfg: Config) -> str:
    if cfg.server_cpu is None:
        return "no CPU pinning"
    return f"server pinned to CPU {cfg.server_cpu}, load generator and driver to CPU {cfg.loadgen_cpu} (taskset)"


def report(cfg: Config, results: Results, overload: Overload, facts: dict[str, str], other_cpu: float, redone: int) -> str:
    """The block between the bench:results markers: command, machine, sizes, tables, warnings,
    then capacity, the storm and the targets."""
    relay, calls = cfg.relay, cfg.calls
    columns, ratios = columns_of(cfg.subjects, results)
    rows = result_rows(cfg)
    lines = [
        *header(cfg, rounds_text(cfg), facts, pinning(cfg)),
        "",
        f"Sizes: relay {relay['pairs']} pairs × {relay['messages']:,} data messages of {relay['size']} bytes "
        f"(+{relay['warmup']} warm-up each), window {relay['window']}; calls {calls['calls']:,} "
        f"({calls['concurrency']} at a time, {2 + 2 * calls['candidates']} messages each, "
        f"+{calls['warmup-calls']} warm-up, {cfg.calls_loadgens} load generator(s)); "
        f"idle {cfg.idle['steps']} sockets ({cfg.idle['open-concurrency']} handshakes at a time), held {cfg.idle_seconds:g} s.",
        "",
        disturbed(cfg, other_cpu, redone),
        "",
        medians(rows, columns, ratios, grouped=True, note=NOTE),
        "",
        "<details><summary>Each round</summary>",
        "",
        rounds(rows, columns, grouped=True),
        "",
        "</details>",
    ]
    lines += [line for warning in cfg.warnings for line in ("", f"Warning: {warning}")]
    return "\n".join(lines) + "\n\n" + overload_report(cfg, results, overload)


# ---------------------------------------------------------------- capacity, storm, targets

CAPACITY_ROWS = [
    Row("sockets", "sockets held", "{:,.0f}"),
    Row("loadgens", "load generators (one source address each)", "{:.0f}"),
    Row("open_per_s", "sockets opened/s", "{:,.0f}", "higher"),
    Row("cpu_us_per_open", "server CPU µs per socket opened", "{:.0f}", "lower"),
    Row("loadgen_cpu_pct_open", "load generators' CPU while opening (% of one core)", "{:.0f}"),
    Row("listen_drops_open", "connections dropped on a full accept queue while opening (kernel, machine-wide)", "{:,.0f}"),
    Row("rss_kib_per_socket", "RSS KiB per socket, all open", "{:.1f}", "lower"),
    Row("rss_kib_per_socket_held", "RSS KiB per socket, after the hold", "{:.1f}", "lower"),
    Row("rss_mib", "server RSS MiB, all open", "{:,.0f}", "lower"),
    Row("kernel_kib_per_connection", "kernel KiB per connection, both ends (slab + TCP buffers, machine-wide)", "{:.1f}"),
    Row("hold_seconds", "hold (s)", "{:.0f}"),
    Row("hold_cpu_pct", "server CPU while holding (% of one core)", "{:.2f}", "lower"),
    Row("hold_cpu_pct_per_10k", "server CPU while holding, per 10,000 sockets (% of one core)", "{:.2f}", "lower"),
    Row("pings_per_socket", "server pings per socket in the hold", "{:.2f}"),
    Row("heartbeats_per_socket", "client heartbeats per socket in the hold", "{:.2f}"),
    Row("hold_lag_ms", "event-loop lag while holding, worst (ms)", "{:.0f}"),
    Row("lag_max_ms", "event-loop lag since start, worst (ms; opening included)", "{:.0f}"),
    Row("probe_lag_ms", "a bare asyncio loop on the server's CPU meanwhile: its worst lag (ms; the machine's share)", "{:.0f}"),
    Row("overflow_verdict_p50_ms", "sockets beyond the limit: time to the answer p50 (ms)", "{:.1f}", "lower"),
    Row("overflow_verdict_max_ms", "sockets beyond the limit: time to the answer, slowest (ms)", "{:.1f}", "lower"),
    Row("other_cpu_pct", "other processes' CPU, highest of opening and hold (% of one core)", "{:.0f}"),
]

STORM_ROWS = [
    Row("sockets", "sockets connected before the restart", "{:,.0f}"),
    Row("loadgens", "load generators (one source address each)", "{:.0f}"),
    Row("shutdown_s", "SIGTERM to the old process's exit (s)", "{:.2f}"),
    Row("shutdown_cpu_s", "old process's CPU from SIGTERM to its exit (s)", "{:.2f}"),
    Row("first_drop_s", "SIGTERM to the first client seeing its socket closed (s)"),
    Row("last_drop_s", "SIGTERM to the last client seeing its socket closed (s)"),
    Row("start_s", "new process: start to answering /healthz (s)", "{:.2f}"),
    Row("down_s", "SIGTERM to the new process answering (s)", "{:.2f}"),
    Row("back_s", "SIGTERM to the last socket back (s)"),
    Row("back_after_ready_s", "new process answering to the last socket back (s)"),
    Row("refused", "tries refused (ECONNREFUSED), all", "{:,.0f}"),
    Row("refused_after_ready", "… of which after the new process answered", "{:,.0f}"),
    Row("server_full", "tries closed with 1013 SERVER-FULL", "{:,.0f}"),
    Row("unavailable", "tries answered 503 (out of descriptors, or an address's unsent heads)", "{:,.0f}"),
    Row("busy_address", "… of which for the heads their address held unsent (server's count)", "{:,.0f}"),
    Row("idle_heads_dropped", "connections dropped having sent nothing for a second (server's count)", "{:,.0f}"),
    Row("other_failures", "other failed tries", "{:,.0f}"),
    Row("max_attempt", "most tries one socket needed", "{:.0f}"),
    Row("reconnects_peak_per_s", "reconnections in the busiest second", "{:,.0f}"),
    Row("listen_drops", "connections dropped on a full accept queue, SIGTERM to all back (kernel, machine-wide)", "{:,.0f}"),
    Row("lag_max_ms", "new process's worst event-loop stall (ms, webrtc_event_loop_lag_max_seconds)", "{:.0f}"),
    Row("lag_at_ready_ms", "… the worst already when it first answered /healthz (ms)", "{:.0f}"),
    Row(
        "probe_lag_ms",
        "a bare asyncio loop on the server's CPU, restart to all back: its worst lag (ms; the machine's share)",
        "{:.0f}",
    ),
    Row("startup_cpu_s", "new process's CPU until it answered (s; start-up)", "{:.2f}"),
    Row("storm_cpu_pct", "new process's CPU from answering to all back (% of one core)", "{:.0f}"),
    Row("cpu_us_per_reconnect", "… per socket back (µs)", "{:.0f}"),
    Row("loadgen_cpu_pct", "load generators' CPU over the same time (% of one core)", "{:.0f}"),
    Row("loadgen_cpu_us_per_reconnect", "… per socket back (µs)", "{:.0f}"),
    Row("other_cpu_pct", "other processes' CPU over the same time (% of one core)", "{:.0f}"),
    Row("rss_mib_after", "new process's RSS with all back (MiB)", "{:,.0f}"),
    Row("drops", "how the sockets were dropped (close code)", kinds),
    Row("other_kinds", "other failed tries by kind", kinds),
]

#: webrtc_app at 100,000 sockets is measured (bench/hundred.py), not projected.
MEASURED_HUNDRED = (
    f'**{{label}} at {PROJECTED_SOCKETS:,} sockets**: measured, not projected, in "100,000 sockets, measured" '
    "below (`python bench/run.py --hundred`: 8 workers on one Redis, a rolling restart)."
)

PROJECTION_CAVEATS = (
    "PeerJS's projection rests on memory and heartbeat CPU growing linearly with the sockets held, which the steps "
    "of the idle workload and this run support over the range measured; it ignores what does not show at this "
    "size: the kernel's socket buffers of busy sockets (idle ones hold none, and none of it is in RSS), more "
    "heartbeat rounds falling behind if one round takes longer than its tick, the CPU caches (a heartbeat round "
    "over 100,000 sockets touches more memory than fits), garbage-collector passes over more objects, and the "
    "traffic of sockets that are not idle. Past the open-file limit one process holds no more: "
    "100,000 sockets need the limit raised (WEBRTC_MAX_SOCKETS and the descriptors) or several processes "
    "(--processes with the Redis backplane)."
)


def projection_text(figures: dict[str, Any], label: str, kind: str = "peerjs") -> str:
    if kind == "webrtc_app":
        return MEASURED_HUNDRED.format(label=label)
    stall = figures.get("projected_stall_ms")
    if stall is None or stall != stall:  # NaN: PeerJS has no lag gauge
        stall_text = ""
    else:
        stall_text = (
            f"; if the worst stall while holding ({figures['hold_lag_ms']:.0f} ms) is the heartbeat's round, which pings "
            f"every quiet socket in one callback, it would grow to about {stall:,.0f} ms"
        )
    return (
        f"**{label} at {PROJECTED_SOCKETS:,} sockets** (linear from the {figures['sockets']:,} measured): about "
        f"{figures['projected_rss_mib']:,.0f} MiB of RSS ({figures['rss_base_mib']:.0f} MiB at start + "
        f"{figures['rss_kib_per_socket_held']:.1f} KiB per socket), plus about {figures['projected_kernel_mib']:,.0f} MiB "
        f"of kernel memory for the server's ends of the connections (half the {figures['kernel_kib_per_connection']:.1f} "
        f"KiB per connection measured for both ends), and {figures['projected_hold_cpu_pct']:.1f}% of a core for the "
        f"heartbeat ({figures['hold_cpu_pct_per_10k']:.2f}% per 10,000){stall_text}. With about "
        f"{figures['per_process']:,} sockets per process at this open-file limit ({open_files_limit():,}), that is "
        f"{figures['projected_processes']} processes."
    )


def storm_rows(storms: list[Column]) -> list[Row]:
    """STORM_ROWS, and a row for the columns whose load generators were saturated or not all back."""
    rows = list(STORM_ROWS)
    limited = [c.value("loadgen_cpu_pct") for c in storms if c.value("loadgen_limited")]
    if limited:
        rows.append(
            Row(
                "loadgen_limited",
                f"† the load generators used {max(limited):.0f}% of their core(s): the storm's pace was partly "
                "theirs (a late client's request meets the server's 10 s header timeout: \"reset\")",
                lambda flag: "†" if flag else "–",
            )
        )
    if not all(c.value("complete") for c in storms):
        rows.append(Row("not_back", "**not all back**: open when the load generators gave up", "{}"))
    return rows


def overload_report(cfg: Config, results: Results, overload: Overload) -> str:
    """The capacity and storm sections and the targets, for the end of the results block."""
    lines: list[str] = []
    capacity = [s for s in cfg.subjects if s.key in overload["capacity"]]
    if capacity:
        first = overload["capacity"][capacity[0].key]
        columns, ratios = columns_of(capacity, {s.key: {"": [overload["capacity"][s.key]]} for s in capacity})
        answered = f"how the {first.get('overflow', 0):,} sockets beyond the limit were answered"
        lines += [
            f"**Capacity** (one run per server: {first['sockets']:,} idle sockets from {first['loadgens']} load generators, "
            f"held {cfg.capacity['seconds']:g} s, then {first.get('overflow', 0):,} more):",
            "",
            medians([*CAPACITY_ROWS, Row("overflow_outcomes", answered, kinds)], columns, ratios),
            "",
            # webrtc_app's is measured (the working tree's); an earlier revision's is neither.
            *(
                line
                for s in capacity
                if not (s.kind == "webrtc_app" and s.rev)
                for line in (projection_text(overload["capacity"][s.key], s.label, s.kind), "")
            ),
            PROJECTION_CAVEATS,
            "",
        ]
    storms = [s for s in cfg.revisions if s.key in overload["storm"]]
    if storms:
        storm = overload["storm"][storms[0].key]
        columns = [Column.of(s.label, [overload["storm"][s.key]]) for s in storms]
        lines += [
            f"**Reconnect storm** ({' and '.join(s.label for s in storms)}; {storm['sockets']:,} sockets, the server "
            "restarted with SIGTERM and started again on the same port, every client reconnecting with the pages' backoff):",
            "",
            medians(storm_rows(columns), columns, keep=True),
            "",
        ]
    lines += ["**Targets**:", "", targets_table(cfg, results, overload)]
    return "\n".join(lines)


def _median(results: Results, key: str, workload: str, figure: str) -> float | None:
    return Column("", results.get(key, {})).value(figure, workload)


def _loadgen_limited(results: Results, key: str) -> str | None:
    """Why a server's calls/s is not its own limit (its load generator saturated while the server
    was not), or None."""
    loadgen = _median(results, key, "calls", "loadgen_cpu_pct")
    server = _median(results, key, "calls", "server_cpu_pct")
    if loadgen is not None and loadgen >= LOADGEN_LIMIT and (server is None or server < LOADGEN_LIMIT):
        label = {"peerjs": "PeerJS"}.get(key, key)
        return f"the load generators used {loadgen:.0f}% of their core and {label} {server or 0:.0f}% of its own"
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
    rows: list[list[str]] = []

    def met(target: str, result: str, ok: bool, how: str = "") -> None:
        rows.append([target, result, ("yes" if ok else "**no**") + how])

    def compare(target: str, ours: float | None, theirs: float | None, unit: str, fmt: str) -> None:
        shown = " vs ".join(fmt.format(v) if v is not None else "–" for v in (ours, theirs)) + f" {unit}"
        if ours is None or theirs is None:
            rows.extend([[target, shown, "–"]] if ours is not None or theirs is not None else [])
        else:
            met(target, shown, ours <= theirs)

    def values(workload: str, figure: str) -> tuple[float | None, float | None]:
        return _median(results, "webrtc_app", workload, figure), _median(results, "peerjs", workload, figure)

    steps, last = cfg.idle_steps, cfg.idle_steps[-1]
    heartbeat = f"heartbeat CPU per 10,000 sockets < {HEARTBEAT_PCT_PER_10K:g}% of a core"
    for step in steps if "idle" in cfg.workloads else []:
        target = f"handshake: server CPU per socket opened ≤ PeerJS (idle, up to {step:,})"
        compare(target, *values("idle", f"cpu_us_per_open_{step}"), "µs", "{:.0f}")
    if "calls" in cfg.workloads:
        a, b = values("calls", "calls_per_s")
        if a is not None and b:
            rows.append(
                [f"calls/s ≥ {CALLS_RATIO}× PeerJS", f"{a:,.0f} vs {b:,.0f} ({a / b:.2f}×)", calls_verdict(results, a / b)]
            )
        a, b = values("calls", "cpu_ms_per_call")
        compare("calls: server CPU per call ≤ PeerJS (informative)", a, b, "ms", "{:.2f}")
        if a and b:  # what each server's core would allow if the load generator were not the limit (on 2 cores it is)
            target = f"calls/s one core allows ≥ {CALLS_RATIO}× PeerJS (derived: 1,000 / server CPU ms per call)"
            met(target, f"{1000 / a:,.0f} vs {1000 / b:,.0f} ({b / a:.2f}×)", b / a >= CALLS_RATIO, " (derived)")
    if "idle" in cfg.workloads:
        compare(f"idle: RSS KiB per socket ≤ PeerJS at {last:,}", *values("idle", f"rss_kib_per_socket_{last}"), "KiB", "{:.1f}")
        pct = _median(results, "webrtc_app", "idle", "idle_cpu_pct")
        if pct is not None:
            per10k = pct * 10_000 / last
            met(f"idle: {heartbeat} (idle, {last:,} held)", f"{per10k:.2f}%", per10k < HEARTBEAT_PCT_PER_10K)
    mine, theirs = overload["capacity"].get("webrtc_app", {}), overload["capacity"].get("peerjs", {})
    if mine or theirs:
        n = mine.get("sockets") or theirs.get("sockets") or 0
        a, b = mine.get("rss_kib_per_socket_held"), theirs.get("rss_kib_per_socket_held")
        compare(f"capacity: RSS KiB per socket ≤ PeerJS at {n:,}", a, b, "KiB", "{:.1f}")
        a, b = mine.get("cpu_us_per_open"), theirs.get("cpu_us_per_open")
        compare(f"handshake: server CPU per socket opened ≤ PeerJS (capacity, {n:,})", a, b, "µs", "{:.0f}")
        if mine:
            per10k = mine["hold_cpu_pct_per_10k"]
            at = f"{per10k:.2f}%"
            met(f"capacity: {heartbeat} ({n:,} held {mine['hold_seconds']:.0f} s)", at, per10k < HEARTBEAT_PCT_PER_10K)
    storm = overload["storm"].get("webrtc_app")
    if storm:
        back, complete = storm["back_s"], storm["complete"]
        wrong = storm["refused_after_ready"] + storm["server_full"] + storm["unavailable"] + storm["other_failures"]
        late = f"{back:.1f} s" if complete else f"{storm['open_after']:,} back after {cfg.storm['timeout']:g} s"
        met(
            f"storm: all {storm['sockets']:,} back within {STORM_BACK_S} s of the restart",
            late,
            complete and back <= STORM_BACK_S,
        )
        kinds_of = (
            f"(refused after the restart {storm['refused_after_ready']:,}, 1013 {storm['server_full']:,}, "
            f"503 {storm['unavailable']:,}, other {storm['other_failures']:,})"
        )
        met("storm: nothing refused that would not be at steady state", f"{wrong:,} {kinds_of}", wrong == 0)
        stall = f"{storm['lag_max_ms']:.0f} ms (a bare asyncio loop on the same CPU meanwhile: {storm['probe_lag_ms']:.0f} ms)"
        met(f"storm: no event-loop stall over {STORM_STALL_MS} ms", stall, storm["lag_max_ms"] <= STORM_STALL_MS)
    return markdown(["target", "result (webrtc_app vs PeerJS)", "met"], rows)


# ---------------------------------------------------------------- profiles


def profile_table(profile: dict[str, Any], top: int = 15) -> str:
    """The ``top`` functions of a parsed profile by self time, with their self and total %."""
    samples = profile["samples"] or 1
    rows = [
        [str(n), f"`{name}`", f"{100 * own / samples:.1f}", f"{100 * total / samples:.1f}"]
        for n, (name, own, total) in enumerate(profile["rows"][:top], 1)
    ]
    return markdown(["#", "function (file:first line, or library)", "self %", "total %"], rows, "rlr")


def py_spy_version(cfg: Config) -> str:
    return version_of([py_spy_path(cfg), "--version"]).split()[-1]


def profile_report(cfg: Config, profile: dict[str, Any], facts: dict[str, str]) -> str:
    """The block between the bench:profile markers, from profiling.run_profile()."""
    relay, native, idle = profile["relay_python"], profile["relay_native"], profile["idle_idle"]
    groups = profile["native"]["groups"]
    share = lambda n: f"{100 * n / (groups['total'] or 1):.1f}%"  # noqa: E731
    callers = groups["getpid_callers"]
    if callers:
        getpid = (
            "`getpid` is called by asyncio's C `get_running_loop()`, which Python 3.11 runs for every `Future()`, task "
            "and `call_soon`, through (innermost Python frame): "
            + "; ".join(f"`{name}` {share(n)}" for name, n in callers[:5])
            + "."
        )
    else:
        getpid = (
            "`getpid` (which Python 3.11's C `get_running_loop()` calls for every `Future()`, task and `call_soon`) "
            "does not appear."
        )
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
        + getpid,
        "",
        f"**{cfg.idle_steps[-1]:,} idle sockets** held {cfg.idle_seconds:g} s with the heartbeat on "
        f"({idle['idle_cpu_pct']:.1f}% of a core while sampled), {profile['idle']['samples']:,} samples of the server "
        "busy:",
        "",
        profile_table(profile["idle"], top=10),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- across nodes (--cluster)

DAGGER = "loadgen_cpu_pct"
CLUSTER_ROWS = [
    Row("relayed_per_s", "relayed msgs/s (both directions)", "{:,.0f}", "higher", dagger=DAGGER),
    Row("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower", dagger=DAGGER),
    Row("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower", dagger=DAGGER),
    Row("sustained_per_s", "relayed msgs/s until Redis had every publication", "{:,.0f}", "higher"),
    Row("backlog_s", "publications backlog at the last delivery (s to drain)", "{:.2f}"),
    Row("seconds", "measured phase (s)", "{:.2f}"),
    Row("light_rtt_p50_ms", "light load: round trip p50 (ms)", "{:.2f}", "lower"),
    Row(
        "light_rtt_p50_ms",
        "light load: round trip p50, difference from 1 node (ms)",
        "{:+.2f}",
        versus=lambda v, b: v - b,
        on_base=False,
    ),
    Row("light_rtt_p99_ms", "light load: round trip p99 (ms)", "{:.2f}", "lower"),
    Row(
        "light_rtt_p99_ms",
        "light load: round trip p99, difference from 1 node (ms)",
        "{:+.2f}",
        versus=lambda v, b: v - b,
        on_base=False,
    ),
    Row("us_node1", "CPU µs per relayed msg: node 1 (callers; the only node otherwise)", "{:.1f}", "lower"),
    Row("us_node2", "CPU µs per relayed msg: node 2 (callees)", "{:.1f}", "lower"),
    Row("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    Row("us_total", "CPU µs per relayed msg: total (nodes + redis-server)", "{:.1f}", "lower"),
    Row("node1_cpu_pct", "node 1 CPU (% of one core)", "{:.0f}"),
    Row("node2_cpu_pct", "node 2 CPU (% of one core)", "{:.0f}"),
    Row("node1_sys_pct", "node 1 CPU in the kernel (% of its CPU)", "{:.0f}"),
    Row("node2_sys_pct", "node 2 CPU in the kernel (% of its CPU)", "{:.0f}"),
    Row("node1_msgs_per_wakeup", "relayed msgs per wake-up of node 1's event loop", "{:.1f}"),
    Row("node2_msgs_per_wakeup", "relayed msgs per wake-up of node 2's event loop", "{:.1f}"),
    Row("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}"),
    Row("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}"),
    Row("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}"),
    Row("publish_per_msg", "Redis PUBLISH + SPUBLISH commands per relayed msg", "{:.3f}"),
    Row("msgs_per_publish", "messages crossing nodes per SPUBLISH (batch size)", "{:.0f}"),
    Row("publish_per_read", "SPUBLISH per read of a client socket by Redis (commands per write)", "{:.1f}"),
    Row("redis_in_per_msg", "bytes into Redis per relayed msg", "{:.0f}"),
    Row("redis_out_per_msg", "bytes out of Redis per relayed msg", "{:.0f}"),
]
#: The scaling table's rows (cluster.py), one column per process count; "{first}" is the first count's label.
SCALING_ROWS = [
    Row("relayed_per_s", "relayed msgs/s (all workers, both directions)", "{:,.0f}", "higher", dagger=DAGGER),
    Row("relayed_per_s", "speed-up against {first}", "{:.2f}", versus=lambda v, b: v / b),
    Row("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower", dagger=DAGGER),
    Row("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower", dagger=DAGGER),
    Row("seconds", "measured phase (s)", "{:.2f}"),
    Row("crossed_pct", "messages that crossed nodes (%)", "{:.0f}"),
    Row("even_pct", "the same if sockets were spread evenly at random (%)", "{:.0f}"),
    Row("sockets_max", "sockets on the busiest worker (2 per pair in all)", "{:.0f}"),
    Row("sockets_min", "sockets on the least busy worker", "{:.0f}"),
    Row("msgs_per_publish", "messages crossing nodes per SPUBLISH (batch size)", "{:.0f}"),
    Row("us_workers", "CPU µs per relayed msg: workers (all of them, and their parent)", "{:.1f}", "lower"),
    Row("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    Row("us_total", "CPU µs per relayed msg: total (workers + redis-server)", "{:.1f}", "lower"),
    Row("us_total", "CPU per relayed msg against {first}", "{:.2f}", versus=lambda v, b: v / b),
    Row("us_loadgen", "CPU µs per relayed msg: load generator", "{:.1f}"),
    Row("ceiling_per_s", "what the CPUs could relay at these costs (CPUs × 10⁶ / (total + load generator µs))", "{:,.0f}"),
    Row("workers_cpu_pct", "workers CPU, all together (% of one core)", "{:.0f}"),
    Row("worker_cpu_pct_max", "busiest worker CPU (% of one core)", "{:.0f}"),
    Row("worker_cpu_pct_min", "least busy worker CPU (% of one core)", "{:.0f}"),
    Row("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}"),
    Row("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}"),
    Row("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}"),
]

VARIANT_TEXT = {
    "single": "webrtc_app without a backplane, as in the table above",
    "single_redis": "one webrtc_app node of a backplane with no other node, every pair on it (local delivery; "
    "its sockets are in the directory in Redis, but it publishes nothing)",
    "cluster": "callers on node 1, callees on node 2, every message and acknowledgement through Redis",
}


def core_rows(columns: list[Column]) -> list[Row]:
    """How busy each CPU was, for the CPUs the runs of ``columns`` measured."""
    cores = {key for c in columns for runs in c.runs.values() for run in runs for key in run if re.fullmatch(r"core\d+_pct", key)}
    return [Row(key, f"CPU {key[4:-4]} busy (%)", "{:.0f}") for key in sorted(cores)]


def cluster_layout_text(cfg: Config) -> str:
    """Which CPU each process ran on."""
    cpus = cfg.cluster_cpus
    if cpus["node1"] is None:
        return "no CPU pinning"
    text = (
        f"pinned with taskset: the single node to CPU {cpus['single']}; across nodes node 1 to CPU {cpus['node1']} and "
        f"node 2 to CPU {cpus['node2']}; redis-server to CPU {cpus['redis']}; the load generator and the driver to "
        f"CPU {cpus['loadgen']} (layout `{cfg.layout}`)"
    )
    if cfg.scaling and cfg.scaling_cpus:
        text += (
            f"; in the scaling table every process (the workers, redis-server, the load generator) may run on CPUs "
            f"{','.join(str(c) for c in cfg.scaling_cpus)} (`taskset -c`), the kernel placing them"
        )
    return text


def probes(runs: list[dict[str, Any]]) -> list[int]:
    """Probes sent, PEER-UNAVAILABLE notices and silent probes over ``runs``."""
    return [sum(int(run.get(f"probe_{k}", 0)) for run in runs) for k in ("attempts", "unavailable", "timeouts")]


def profile_areas_text(areas: dict[str, int]) -> str:
    """A node's samples by area (profiling.profile_areas) in words."""
    total = areas.get("samples") or 1
    pct = lambda key: f"{100 * areas.get(key, 0) / total:.0f}%"  # noqa: E731
    return (
        f"receiving its inbox (`Subscriber._read`: redis-py reading each SPUBLISH pushed to it, then "
        f"`NodeRouting.receive`) {pct('receive')}, of which the RESP reader {pct('receive_parser')}, decoding the "
        f"batches {pct('receive_decode')} and delivering to its sockets (`MemoryRouter.deliver` and `deliver_all`, "
        f"the frames written included) {pct('receive_deliver')}; publishing (`Publisher.run`/`_publish`, "
        f"`Outlet.send`: one SPUBLISH per destination node and loop iteration) {pct('publish')}, of which packing the commands "
        f"{pct('publish_pack')} and encoding the batches {pct('publish_encode')}; reading Redis's answers to them "
        f"(`Outlet._read`) {pct('answers')}; the WebSocket side (reading, parsing and sending frames) "
        f"{pct('websocket')}, of which routing each message (`NodeRouting.relay`: local fan-out and adding it to "
        f"a batch) {pct('websocket_relay')}; the rest (the event loop and its timers) {pct('rest')}"
    )


def cluster_targets(single: Column | None, alone: Column | None, across: Column) -> list[list[str]]:
    """The targets of the issue "A backplane that scales", each against the medians measured."""
    rows = []
    one, cross, shared = single.value("us_total") if single else None, across.value("us_total"), alone and alone.value("us_total")
    if one and cross is not None:
        met = ("yes" if cross / one <= 2 else "no") + (" (moonshot too)" if cross / one <= 1.5 else "")
        what = "CPU per relayed msg when every message crosses two nodes (nodes + redis-server) / 1 node's"
        rows.append([what, f"{cross:.1f} / {one:.1f} µs = {cross / one:.2f}×", "at most 2× (moonshot 1.5×)", met])
    if one and shared is not None:
        what = "CPU per relayed msg of a node on a backplane with no other node (node + redis-server) / 1 node's"
        rows.append([what, f"{shared:.1f} / {one:.1f} µs = {shared / one:.2f}×", "what one node costs (1×)", "–"])
    light, far = single.value("light_rtt_p50_ms") if single else None, across.value("light_rtt_p50_ms")
    if light is not None and far is not None:
        what = "light load round trip p50 across two nodes, minus 1 node's"
        rows.append(
            [what, f"{far:.2f} − {light:.2f} = {far - light:+.2f} ms", "within 1 ms", "yes" if far - light <= 1 else "no"]
        )
    return rows


def cluster_report(cfg: Config, results: Results, facts: dict[str, str], other_cpu: float, redone: int, profile: Any) -> str:
    """The block between the bench:cluster markers: command, machine, sizes, tables, profiles."""
    relay, light = cfg.relay, cfg.cluster_light
    revs = cfg.revisions
    variants: dict[str, dict[str, Column]] = {}  # by revision, by variant
    scaled: dict[str, list[Column]] = {}  # by revision, by process count
    for rev in revs:
        runs, suffix = results.get(rev.key, {}), "" if rev is revs[0] else f", {rev.label}"
        by = variants[rev.key] = {v: Column.of(CLUSTER_LABELS[v] + suffix, runs.get(v, [])) for v in cfg.cluster_variants}
        for column in by.values():
            column.base = by.get("single")
        counts = scaled[rev.key] = [Column.of(scaling_label(n) + suffix, runs.get(scaling_key(n), [])) for n in cfg.scaling]
        for column in counts:
            column.base = counts[0]
    across = [run for by in variants.values() for run in by["cluster"].runs[""]]
    attempts, unavailable, timeouts = probes(across)
    order = " ".join(string.ascii_uppercase[: len(revs) * (len(cfg.cluster_variants) + len(cfg.scaling))]) + " ..."
    lines = [
        *header(cfg, f"{cfg.rounds} rounds, {order}; medians", facts, cluster_layout_text(cfg)),
        "",
        f"Sizes: relay {relay['pairs']} pairs × {relay['messages']:,} data messages of {relay['size']} bytes "
        f"(+{relay['warmup']} warm-up each), window {relay['window']}, in each variant: "
        + "; ".join(f"**{CLUSTER_LABELS[v]}**: {VARIANT_TEXT[v]}" for v in cfg.cluster_variants)
        + ". A fresh redis-server (no persistence) and fresh nodes for every measurement. Light load: then, on the "
        f"same processes, {light['pairs']} pairs × {light['messages']:,} messages "
        f"(+{light['warmup']} warm-up), window {light['window']}.",
        "",
        f"No loss: across nodes the load generator probed every pair until a message got through both ways before the "
        f"warm-up ({attempts:,} probes for {len(across) * relay['pairs']:,} pairs over "
        f"{len(across)} measurement(s), {unavailable} PEER-UNAVAILABLE notice(s) and {timeouts} silent "
        "probe(s) during the probes); from then on no notice arrived, every message arrived once and in order, and each "
        "node's /metrics counted exactly the messages its sockets sent, none undelivered, no backplane error.",
        "",
        disturbed(cfg, other_cpu, redone),
    ]
    targets = []
    for rev in revs:
        by = variants[rev.key]
        rows = cluster_targets(by.get("single"), by.get("single_redis"), by["cluster"])
        targets += [[f"{row[0]} ({rev.label})" if rev is not revs[0] else row[0], *row[1:]] for row in rows]
    if targets:
        lines += [
            "",
            "**The issue's targets** (medians of the table below):",
            "",
            markdown(["target", "measured (medians)", "target", "met"], targets),
        ]
    skip = frozenset({"us_node1", "us_node2", "us_redis"})  # a node's own CPU against the single node's only process
    ratios = [
        Ratio("2 nodes / 1 node" + ("" if rev is revs[0] else f", {rev.label}"), by["cluster"], by["single"], skip)
        for rev in revs
        if "single" in (by := variants[rev.key])
    ]
    ratios += [
        Ratio(f"{revs[0].label} / {rev.label}, {CLUSTER_LABELS[v]}", variants[revs[0].key][v], variants[rev.key][v])
        for rev in revs[1:]
        for v in cfg.cluster_variants
    ]
    columns = [column for by in variants.values() for column in by.values()]
    lines += ["", medians(CLUSTER_ROWS + core_rows(columns), columns, ratios, note=CLUSTER_NOTE)]
    every = [column for counts in scaled.values() for column in counts]
    if cfg.scaling:
        counts = ", ".join(str(n) for n in cfg.scaling)
        attempts, unavailable, timeouts = probes([run for c in every for run in c.runs[""]])
        first = scaling_label(cfg.scaling[0])
        rows = [replace(row, label=row.label.format(first=first)) for row in SCALING_ROWS]
        versus = [
            Ratio(f"{revs[0].label} / {rev.label}, {scaling_label(n)}", scaled[revs[0].key][i], scaled[rev.key][i])
            for rev in revs[1:]
            for i, n in enumerate(cfg.scaling)
        ]
        lines += [
            "",
            f"**Scaling over worker processes** (`--scaling {','.join(str(n) for n in cfg.scaling)}`): one "
            f"`webrtc_server.py start PORT --redis URL --processes N` for N = {counts} (N = 1 serves without forking), "
            "its workers sharing one listening socket, and a redis-server of its own; the relay sizes above, every socket "
            "connecting to the one port, one handshake at a time (the callees', then the callers'), so the kernel decides "
            "which worker gets each, and every message of a pair whose two sockets landed on different workers crosses "
            "nodes. Where each socket is comes from the backplane's directory in Redis. CPU is that of every worker, their "
            "parent, redis-server and the load generator, from `/proc`; all of them share the CPUs. Checks: "
            f"every pair probed first ({attempts:,} probes over {sum(len(c.runs['']) for c in every)} measurement(s), "
            f"{unavailable} PEER-UNAVAILABLE notice(s) and {timeouts} silent probe(s)); then the load generator's (every "
            "message once, in order, no notice), Redis's (no command failed, every worker a node of the backplane from "
            "start to end, no socket moved in the directory) and the logs' (no worker lost Redis or restarted). The "
            "workers' `/metrics` are not read: each is one worker's, and a scrape of the shared port reaches whichever "
            "worker accepts it.",
            "",
            medians(rows + core_rows(every), every, versus, note=CLUSTER_NOTE),
        ]
    each = {r.key: r for r in reversed(CLUSTER_ROWS + SCALING_ROWS) if r.better}  # the first row of each figure
    each["us_workers"] = replace(each["us_workers"], label="CPU µs per relayed msg: workers")
    keys = [r.key for r in CLUSTER_ROWS + SCALING_ROWS]
    each_round = sorted(each.values(), key=lambda r: keys.index(r.key))
    lines += ["", "<details><summary>Each round</summary>", "", rounds(each_round, columns + every), "", "</details>"]
    if profile:
        figures = profile["figures"]
        lines += [
            "",
            f"**Profiles across nodes** (py-spy {py_spy_version(cfg)}, "
            f"{cfg.profile_rate} samples/s on each node at once, `record --function`, Python frames; samples of a node "
            f"waiting in epoll left out; a separate run of {figures['relayed']:,} relayed messages, "
            f"{figures['relayed_per_s']:,.0f} msgs/s while sampled; raw stacks in "
            f"`{os.path.relpath(cfg.out_dir, PROJECT_DIR)}/profile-cluster-node1.txt` and `-node2.txt`). Self = samples "
            "whose innermost Python frame is the function (time in the C code it calls counts as its own); total = "
            "samples with the function anywhere on the stack.",
        ]
        for role, what in (("node1", "callers"), ("node2", "callees")):
            lines += [
                "",
                f"Node {role[-1]} ({what}; {figures[f'{role}_cpu_pct']:.0f}% of a core while sampled), "
                f"{profile[role]['samples']:,} samples:",
                "",
                profile_table(profile[role], top=10),
                "",
                f"Node {role[-1]}'s samples by what it was doing: {profile_areas_text(profile[role]['areas'])}.",
            ]
    lines += [line for warning in cfg.warnings for line in ("", f"Warning: {warning}")]
    return "\n".join(lines)
