"""The results across nodes as markdown (docs/benchmarks.md, between the bench:cluster
markers): one column per variant, each round, and the profiles of both nodes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from bench import PROJECT_DIR
from bench.config import CLUSTER_LABELS, Config, scaling_key, scaling_label
from bench.report import LOADGEN_LIMIT, median, profile_table, py_spy_version

#: results[variant] = the figures of each round
ClusterResults = dict[str, list[dict[str, float]]]


@dataclass(frozen=True)
class ClusterFigure:
    key: str
    label: str
    fmt: str
    better: str  # "higher", "lower" or "" (informative: no ratio)


CLUSTER_FIGURES = [
    ClusterFigure("relayed_per_s", "relayed msgs/s (both directions)", "{:,.0f}", "higher"),
    ClusterFigure("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower"),
    ClusterFigure("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower"),
    ClusterFigure("sustained_per_s", "relayed msgs/s until Redis had every publication", "{:,.0f}", "higher"),
    ClusterFigure("backlog_s", "publications backlog at the last delivery (s to drain)", "{:.2f}", ""),
    ClusterFigure("seconds", "measured phase (s)", "{:.2f}", ""),
    ClusterFigure("light_rtt_p50_ms", "light load: round trip p50 (ms)", "{:.2f}", "lower"),
    ClusterFigure("light_rtt_p99_ms", "light load: round trip p99 (ms)", "{:.2f}", "lower"),
    ClusterFigure("us_node1", "CPU µs per relayed msg: node 1 (callers; the only node otherwise)", "{:.1f}", "lower"),
    ClusterFigure("us_node2", "CPU µs per relayed msg: node 2 (callees)", "{:.1f}", "lower"),
    ClusterFigure("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    ClusterFigure("us_total", "CPU µs per relayed msg: total (nodes + redis-server)", "{:.1f}", "lower"),
    ClusterFigure("node1_cpu_pct", "node 1 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("node2_cpu_pct", "node 2 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("node1_sys_pct", "node 1 CPU in the kernel (% of its CPU)", "{:.0f}", ""),
    ClusterFigure("node2_sys_pct", "node 2 CPU in the kernel (% of its CPU)", "{:.0f}", ""),
    ClusterFigure("node1_msgs_per_wakeup", "relayed msgs per wake-up of node 1's event loop", "{:.1f}", ""),
    ClusterFigure("node2_msgs_per_wakeup", "relayed msgs per wake-up of node 2's event loop", "{:.1f}", ""),
    ClusterFigure("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("publish_per_msg", "Redis PUBLISH + SPUBLISH commands per relayed msg", "{:.3f}", ""),
    ClusterFigure("msgs_per_publish", "messages crossing nodes per SPUBLISH (batch size)", "{:.0f}", ""),
    ClusterFigure("publish_per_read", "SPUBLISH per read of a client socket by Redis (commands per write)", "{:.1f}", ""),
    ClusterFigure("redis_in_per_msg", "bytes into Redis per relayed msg", "{:.0f}", ""),
    ClusterFigure("redis_out_per_msg", "bytes out of Redis per relayed msg", "{:.0f}", ""),
]

#: Rows worked out from the medians of two light-load rows: a variant's minus the single node's.
LIGHT_DIFFERENCES = {
    "light_rtt_p50_ms": "light load: round trip p50, difference from 1 node (ms)",
    "light_rtt_p99_ms": "light load: round trip p99, difference from 1 node (ms)",
}

#: The scaling table's rows (scaling.py): one column per process count.
SCALING_FIGURES = [
    ClusterFigure("relayed_per_s", "relayed msgs/s (all workers, both directions)", "{:,.0f}", "higher"),
    ClusterFigure("rtt_p50_ms", "round trip p50 (ms)", "{:.1f}", "lower"),
    ClusterFigure("rtt_p99_ms", "round trip p99 (ms)", "{:.1f}", "lower"),
    ClusterFigure("seconds", "measured phase (s)", "{:.2f}", ""),
    ClusterFigure("crossed_pct", "messages that crossed nodes (%)", "{:.0f}", ""),
    ClusterFigure("sockets_max", "sockets on the busiest worker (2 per pair in all)", "{:.0f}", ""),
    ClusterFigure("sockets_min", "sockets on the least busy worker", "{:.0f}", ""),
    ClusterFigure("msgs_per_publish", "messages crossing nodes per SPUBLISH (batch size)", "{:.0f}", ""),
    ClusterFigure("us_workers", "CPU µs per relayed msg: workers (all of them, and their parent)", "{:.1f}", "lower"),
    ClusterFigure("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    ClusterFigure("us_total", "CPU µs per relayed msg: total (workers + redis-server)", "{:.1f}", "lower"),
    ClusterFigure("us_loadgen", "CPU µs per relayed msg: load generator", "{:.1f}", ""),
    ClusterFigure(
        "ceiling_per_s", "what the CPUs could relay at these costs (CPUs × 10⁶ / (total + load generator µs))", "{:,.0f}", ""
    ),
    ClusterFigure("workers_cpu_pct", "workers CPU, all together (% of one core)", "{:.0f}", ""),
    ClusterFigure("worker_cpu_pct_max", "busiest worker CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("worker_cpu_pct_min", "least busy worker CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
]


def cluster_figures(results: ClusterResults, base: list[ClusterFigure] = CLUSTER_FIGURES) -> list[ClusterFigure]:
    """``base`` (CLUSTER_FIGURES), and how busy each CPU was."""
    figures = list(base)
    cores = sorted({k for runs in results.values() for run in runs for k in run if re.fullmatch(r"core\d+_pct", k)})
    for key in cores:
        figures.append(ClusterFigure(key, f"CPU {key[4:-4]} busy (%)", "{:.0f}", ""))
    return figures


def medians(results: ClusterResults, columns: list[str], key: str) -> dict[str, float | None]:
    """The median of figure ``key`` in each column (None where no round has it)."""
    return {c: median([run[key] for run in results.get(c, []) if key in run]) for c in columns}


def cells(results: ClusterResults, columns: list[str], figure: ClusterFigure) -> tuple[list[str], bool]:
    """The cells of one row of medians, rates and times marked † where the load generator was
    near its limit; answers them, and whether any was marked."""
    values = medians(results, columns, figure.key)
    out, flagged = [], False
    for c in columns:
        cell = "–" if values[c] is None else figure.fmt.format(values[c])
        loadgen = median([run["loadgen_cpu_pct"] for run in results.get(c, [])])
        limited = (loadgen or 0) >= LOADGEN_LIMIT
        if values[c] is not None and figure.key in ("relayed_per_s", "rtt_p50_ms", "rtt_p99_ms") and limited:
            cell += " †"
            flagged = True
        out.append(cell)
    return out, flagged


def dagger_note(flagged: bool) -> list[str]:
    if not flagged:
        return []
    return [
        "",
        f"† The load generator used {LOADGEN_LIMIT}% or more of its core here (median): this rate or time is partly "
        "its own limit. CPU per relayed message is not affected.",
    ]


def cluster_table(cfg: Config, results: ClusterResults) -> str:
    """Medians of every figure for each variant, and 2 nodes / 1 node."""
    variants = list(cfg.cluster_variants)
    head = [CLUSTER_LABELS[v] for v in variants]
    ratio = "single" in variants
    lines = [
        "| figure | " + " | ".join(head) + (" | 2 nodes / 1 node |" if ratio else " |"),
        "| --- | " + " | ".join("---:" for _ in head) + (" | ---: |" if ratio else " |"),
    ]
    flagged = False
    for figure in cluster_figures(results):
        values = medians(results, variants, figure.key)
        if all(value is None for value in values.values()):
            continue
        row, marked = cells(results, variants, figure)
        flagged = flagged or marked
        line = f"| {figure.label} | " + " | ".join(row)
        if ratio:
            a, b = values.get("cluster"), values.get("single")
            # Per-process rows compare to the single node's only process, so only the total gets a ratio.
            comparable = figure.better and figure.key not in ("us_node1", "us_node2", "us_redis")
            line += " | " + (f"{a / b:.2f}" if comparable and a is not None and b else "–")
        lines.append(line + " |")
        base = values.get("single")
        if figure.key in LIGHT_DIFFERENCES and base is not None:
            diffs = [f"{value - base:+.2f}" if v != "single" and value is not None else "–" for v, value in values.items()]
            lines.append(f"| {LIGHT_DIFFERENCES[figure.key]} | " + " | ".join(diffs) + (" | – |" if ratio else " |"))
    return "\n".join(lines + dagger_note(flagged))


def cluster_rounds_table(cfg: Config, results: ClusterResults) -> str:
    """Every round's value of the figures that have a direction (better higher or lower),
    for each variant and each process count of the scaling table."""
    columns = list(cfg.cluster_variants) + [scaling_key(n) for n in cfg.scaling]
    labels = [CLUSTER_LABELS[v] for v in cfg.cluster_variants] + [scaling_label(n) for n in cfg.scaling]
    lines = [
        "| figure | " + " | ".join(f"{label}, each round" for label in labels) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    seen = set()
    for figure in CLUSTER_FIGURES + SCALING_FIGURES:
        if not figure.better or figure.key in seen:
            continue
        seen.add(figure.key)
        row = [
            " / ".join(figure.fmt.format(run[figure.key]) for run in results.get(c, []) if figure.key in run) or "–"
            for c in columns
        ]
        if any(cell != "–" for cell in row):
            label = figure.label if figure.key != "us_workers" else "CPU µs per relayed msg: workers"
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def scaling_table(cfg: Config, results: ClusterResults) -> str:
    """Medians of every scaling figure for each process count, the speed-up over the fewest
    processes and what random placement would make cross."""
    columns = [scaling_key(n) for n in cfg.scaling]
    lines = [
        "| figure | " + " | ".join(scaling_label(n) for n in cfg.scaling) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    flagged = False
    first = columns[0]
    for figure in cluster_figures({c: results.get(c, []) for c in columns}, SCALING_FIGURES):
        values = medians(results, columns, figure.key)
        if all(value is None for value in values.values()):
            continue
        row, marked = cells(results, columns, figure)
        flagged = flagged or marked
        lines.append(f"| {figure.label} | " + " | ".join(row) + " |")
        base = values[first]
        if figure.key in ("relayed_per_s", "us_total") and base:
            what = "speed-up" if figure.key == "relayed_per_s" else "CPU per relayed msg"
            ratios = [f"{value / base:.2f}" if value is not None else "–" for value in values.values()]
            lines.append(f"| {what} against {scaling_label(cfg.scaling[0])} | " + " | ".join(ratios) + " |")
        if figure.key == "crossed_pct":
            lines.append(
                "| the same if sockets were spread evenly at random (%) | "
                + " | ".join(f"{100 * (n - 1) / n:.0f}" for n in cfg.scaling)
                + " |"
            )
    return "\n".join(lines + dagger_note(flagged))


def targets_table(results: ClusterResults) -> str:
    """The targets of the issue "A backplane that scales", each against the medians measured."""

    def value(variant: str, key: str) -> float | None:
        return median([run[key] for run in results.get(variant, []) if key in run])

    single, alone, across = (value(v, "us_total") for v in ("single", "single_redis", "cluster"))
    rows = []
    if single and across is not None:
        ratio = across / single
        met = "yes" if ratio <= 2 else "no"
        rows.append(
            "| CPU per relayed msg when every message crosses two nodes (nodes + redis-server) / 1 node's "
            f"| {across:.1f} / {single:.1f} µs = {ratio:.2f}× | at most 2× (moonshot 1.5×) | {met}"
            f"{' (moonshot too)' if ratio <= 1.5 else ''} |"
        )
    if single and alone is not None:
        rows.append(
            "| CPU per relayed msg of a node on a backplane with no other node (node + redis-server) / 1 node's "
            f"| {alone:.1f} / {single:.1f} µs = {alone / single:.2f}× | what one node costs (1×) | – |"
        )
    light_single, light_across = value("single", "light_rtt_p50_ms"), value("cluster", "light_rtt_p50_ms")
    if light_single is not None and light_across is not None:
        diff = light_across - light_single
        rows.append(
            "| light load round trip p50 across two nodes, minus 1 node's "
            f"| {light_across:.2f} − {light_single:.2f} = {diff:+.2f} ms | within 1 ms | {'yes' if diff <= 1 else 'no'} |"
        )
    if not rows:
        return ""
    head = ["| target | measured (medians) | target | met |", "| --- | --- | --- | --- |"]
    return "\n".join(head + rows)


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


def profile_areas_text(areas: dict[str, int]) -> str:
    """A node's samples by area (profiling.profile_areas) in words."""
    total = areas.get("samples") or 1
    pct = lambda key: f"{100 * areas.get(key, 0) / total:.0f}%"  # noqa: E731
    return (
        f"receiving its inbox (`RedisRouter._read`: redis-py reading each SPUBLISH pushed to it, then "
        f"`RedisRouter._on_batch`) {pct('receive')}, of which the RESP reader {pct('receive_parser')}, decoding the "
        f"batches {pct('receive_decode')} and delivering to its sockets (`MemoryRouter.deliver` and `deliver_all`, "
        f"the frames written included) {pct('receive_deliver')}; publishing (`RedisRouter._publisher`/`_publish`, "
        f"`Outlet.send`: one SPUBLISH per destination node and loop iteration) {pct('publish')}, of which packing the commands "
        f"{pct('publish_pack')} and encoding the batches {pct('publish_encode')}; reading Redis's answers to them "
        f"(`Outlet._read`) {pct('answers')}; the WebSocket side (reading, parsing and sending frames) "
        f"{pct('websocket')}, of which routing each message (`RedisRouter.relay`: local fan-out and adding it to "
        f"a batch) {pct('websocket_relay')}; the rest (the event loop and its timers) {pct('rest')}"
    )


VARIANT_TEXT = {
    "single": "webrtc_app without a backplane, as in the table above",
    "single_redis": "one webrtc_app node of a backplane with no other node, every pair on it (local delivery; "
    "its sockets are in the directory in Redis, but it publishes nothing)",
    "cluster": "callers on node 1, callees on node 2, every message and acknowledgement through Redis",
}


def scaling_text(cfg: Config, results: ClusterResults) -> str:
    """What the scaling table measured, and how it was checked."""
    runs = [run for n in cfg.scaling for run in results.get(scaling_key(n), [])]
    attempts = sum(int(run.get("probe_attempts", 0)) for run in runs)
    unavailable = sum(int(run.get("probe_unavailable", 0)) for run in runs)
    timeouts = sum(int(run.get("probe_timeouts", 0)) for run in runs)
    counts = ", ".join(str(n) for n in cfg.scaling)
    return (
        f"**Scaling over worker processes** (`--scaling {','.join(str(n) for n in cfg.scaling)}`): one "
        f"`webrtc_server.py start PORT --redis URL --processes N` for N = {counts} (N = 1 serves without forking), "
        "its workers sharing one listening socket, and a redis-server of its own; the relay sizes above, every socket "
        "connecting to the one port, one handshake at a time (the callees', then the callers'), so the kernel decides "
        "which worker gets each, and every message of a pair whose two sockets landed on different workers crosses "
        "nodes. Where each socket is comes from the backplane's directory in Redis. CPU is that of every worker, their "
        "parent, redis-server and the load generator, from `/proc`; all of them share the CPUs. Checks: "
        f"every pair probed first ({attempts:,} probes over {len(runs)} measurement(s), {unavailable} PEER-UNAVAILABLE "
        f"notice(s) and {timeouts} silent probe(s)); then the load generator's (every message once, in order, no "
        "notice), Redis's (no command failed, every worker a node of the backplane from start to end, no socket moved "
        "in the directory) and the logs' (no worker lost Redis or restarted). The workers' `/metrics` are not read: "
        "each is one worker's, and a scrape of the shared port reaches whichever worker accepts it."
    )


def cluster_report(
    cfg: Config,
    command: str,
    results: ClusterResults,
    facts: dict[str, str],
    other_cpu: float,
    redone: int,
    elapsed: float,
    profile: dict[str, Any] | None,
) -> str:
    """The block between the bench:cluster markers: command, machine, sizes, tables, profiles."""
    relay = cfg.relay
    order = " ".join("ABCDEFGHIJ"[: len(cfg.cluster_variants) + len(cfg.scaling)]) + " ..."
    runs = results.get("cluster", [])
    attempts = sum(int(run.get("probe_attempts", 0)) for run in runs)
    unavailable = sum(int(run.get("probe_unavailable", 0)) for run in runs)
    timeouts = sum(int(run.get("probe_timeouts", 0)) for run in runs)
    lines = [
        f"Command: `{command}` ({cfg.rounds} rounds, {order}; medians; {elapsed / 60:.1f} minutes)",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {cluster_layout_text(cfg)}.",
        "",
        f"Sizes: relay {relay['pairs']} pairs × {relay['messages']:,} data messages of {relay['size']} bytes "
        f"(+{relay['warmup']} warm-up each), window {relay['window']}, in each variant: "
        + "; ".join(f"**{CLUSTER_LABELS[v]}**: {VARIANT_TEXT[v]}" for v in cfg.cluster_variants)
        + ". A fresh redis-server (no persistence) and fresh nodes for every measurement. Light load: then, on the "
        f"same processes, {cfg.cluster_light['pairs']} pairs × {cfg.cluster_light['messages']:,} messages "
        f"(+{cfg.cluster_light['warmup']} warm-up), window {cfg.cluster_light['window']}.",
        "",
        f"No loss: across nodes the load generator probed every pair until a message got through both ways before the "
        f"warm-up ({attempts:,} probes for {len(runs) * relay['pairs']:,} pairs over {len(runs)} measurement(s), "
        f"{unavailable} PEER-UNAVAILABLE notice(s) and {timeouts} silent probe(s) during the probes); from then on "
        "no notice arrived, every message arrived once and in order, and each node's /metrics counted exactly the "
        "messages its sockets sent, none undelivered, no backplane error.",
        "",
        f"Other processes on the machine (this machine is shared): at most {other_cpu:.0f}% of one core during a kept "
        f"measurement; {redone} measurement(s) redone because they used over {cfg.max_other_cpu:g}%.",
    ]
    targets = targets_table(results)
    if targets:
        lines += ["", "**The issue's targets** (medians of the table below):", "", targets]
    lines += ["", cluster_table(cfg, results)]
    if cfg.scaling:
        lines += ["", scaling_text(cfg, results), "", scaling_table(cfg, results)]
    lines += [
        "",
        "<details><summary>Each round</summary>",
        "",
        cluster_rounds_table(cfg, results),
        "",
        "</details>",
    ]
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
    for warning in cfg.warnings:
        lines += ["", f"Warning: {warning}"]
    return "\n".join(lines)
