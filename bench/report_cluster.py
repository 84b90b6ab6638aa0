"""The results across nodes as markdown (docs/benchmarks.md, between the bench:cluster
markers): one column per variant, each round, and the profiles of both nodes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from bench import PROJECT_DIR
from bench.config import CLUSTER_LABELS, Config
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
    ClusterFigure("sustained_per_s", "relayed msgs/s until Redis had every PUBLISH", "{:,.0f}", "higher"),
    ClusterFigure("backlog_s", "PUBLISH backlog at the last delivery (s to drain)", "{:.2f}", ""),
    ClusterFigure("light_rtt_p50_ms", "light load: round trip p50 (ms)", "{:.2f}", "lower"),
    ClusterFigure("light_rtt_p99_ms", "light load: round trip p99 (ms)", "{:.2f}", "lower"),
    ClusterFigure("us_node1", "CPU µs per relayed msg: node 1 (callers; the only node otherwise)", "{:.1f}", "lower"),
    ClusterFigure("us_node2", "CPU µs per relayed msg: node 2 (callees)", "{:.1f}", "lower"),
    ClusterFigure("us_redis", "CPU µs per relayed msg: redis-server", "{:.1f}", "lower"),
    ClusterFigure("us_total", "CPU µs per relayed msg: total (nodes + redis-server)", "{:.1f}", "lower"),
    ClusterFigure("node1_cpu_pct", "node 1 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("node2_cpu_pct", "node 2 CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("redis_cpu_pct", "redis-server CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("loadgen_cpu_pct", "load generator CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("other_cpu_pct", "other processes' CPU (% of one core)", "{:.0f}", ""),
    ClusterFigure("publish_per_msg", "Redis PUBLISH commands per relayed msg", "{:.2f}", ""),
    ClusterFigure("publish_per_read", "PUBLISH per read of a client socket by Redis (≈ pipeline batch)", "{:.0f}", ""),
    ClusterFigure("redis_in_per_msg", "bytes into Redis per relayed msg", "{:.0f}", ""),
    ClusterFigure("redis_out_per_msg", "bytes out of Redis per relayed msg", "{:.0f}", ""),
]


def cluster_figures(results: ClusterResults) -> list[ClusterFigure]:
    """CLUSTER_FIGURES, and how busy each CPU was."""
    figures = list(CLUSTER_FIGURES)
    cores = sorted({k for runs in results.values() for run in runs for k in run if re.fullmatch(r"core\d+_pct", k)})
    for key in cores:
        figures.append(ClusterFigure(key, f"CPU {key[4:-4]} busy (%)", "{:.0f}", ""))
    return figures


def cluster_table(cfg: Config, results: ClusterResults) -> str:
    """Medians of every figure for each variant, and 2 nodes / 1 node."""
    variants = cfg.cluster_variants
    head = [CLUSTER_LABELS[v] for v in variants]
    ratio = "single" in variants
    lines = [
        "| figure | " + " | ".join(head) + (" | 2 nodes / 1 node |" if ratio else " |"),
        "| --- | " + " | ".join("---:" for _ in head) + (" | ---: |" if ratio else " |"),
    ]
    flagged = False
    for figure in cluster_figures(results):
        values = {v: median([run[figure.key] for run in results.get(v, []) if figure.key in run]) for v in variants}
        if all(value is None for value in values.values()):
            continue
        cells = []
        for v in variants:
            cell = "–" if values[v] is None else figure.fmt.format(values[v])
            loadgen = median([run["loadgen_cpu_pct"] for run in results.get(v, [])])
            if (
                values[v] is not None
                and figure.key in ("relayed_per_s", "rtt_p50_ms", "rtt_p99_ms")
                and (loadgen or 0) >= LOADGEN_LIMIT
            ):
                cell += " †"
                flagged = True
            cells.append(cell)
        row = f"| {figure.label} | " + " | ".join(cells)
        if ratio:
            a, b = values.get("cluster"), values.get("single")
            # Per-process rows compare to the single node's only process, so only the total gets a ratio.
            comparable = figure.better and figure.key not in ("us_node1", "us_node2", "us_redis")
            row += " | " + (f"{a / b:.2f}" if comparable and a is not None and b else "–")
        lines.append(row + " |")
    if flagged:
        lines += [
            "",
            f"† The load generator used {LOADGEN_LIMIT}% or more of its core here (median): this rate or time is partly "
            "its own limit. CPU per relayed message is not affected.",
        ]
    return "\n".join(lines)


def cluster_rounds_table(cfg: Config, results: ClusterResults) -> str:
    """Every round's value of the figures that have a direction (better higher or lower)."""
    variants = cfg.cluster_variants
    lines = [
        "| figure | " + " | ".join(f"{CLUSTER_LABELS[v]}, each round" for v in variants) + " |",
        "| --- | " + " | ".join("---" for _ in variants) + " |",
    ]
    for figure in CLUSTER_FIGURES:
        if not figure.better:
            continue
        cells = [
            " / ".join(figure.fmt.format(run[figure.key]) for run in results.get(v, []) if figure.key in run) or "–"
            for v in variants
        ]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {figure.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cluster_layout_text(cfg: Config) -> str:
    """Which CPU each process ran on."""
    cpus = cfg.cluster_cpus
    if cpus["node1"] is None:
        return "no CPU pinning"
    return (
        f"pinned with taskset: the single node to CPU {cpus['single']}; across nodes node 1 to CPU {cpus['node1']} and "
        f"node 2 to CPU {cpus['node2']}; redis-server to CPU {cpus['redis']}; the load generator and the driver to "
        f"CPU {cpus['loadgen']} (layout `{cfg.layout}`)"
    )


def profile_areas_text(areas: dict[str, int]) -> str:
    """A node's samples by area (profiling.profile_areas) in words."""
    total = areas.get("samples") or 1
    pct = lambda key: f"{100 * areas.get(key, 0) / total:.0f}%"  # noqa: E731
    return (
        f"receiving its inbox (`RedisRouter._read`: redis-py reading each SPUBLISH pushed to it, then "
        f"`RedisRouter._on_batch`) {pct('receive')}, of which the RESP reader {pct('receive_parser')}, decoding the "
        f"batches {pct('receive_decode')} and delivering to its sockets (`MemoryRouter.deliver`, the frames written "
        f"included) {pct('receive_deliver')}; publishing (`RedisRouter._publisher`/`_publish`, `Outlet.send`: one "
        f"SPUBLISH per destination node and loop iteration) {pct('publish')}, of which packing the commands "
        f"{pct('publish_pack')} and encoding the batches {pct('publish_encode')}; reading Redis's answers to them "
        f"(`Outlet._read`) {pct('answers')}; the WebSocket side (reading, parsing and sending frames) "
        f"{pct('websocket')}, of which routing each message (`RedisRouter.relay`: local fan-out and adding it to "
        f"a batch) {pct('websocket_relay')}; the rest (the event loop and its timers) {pct('rest')}"
    )


VARIANT_TEXT = {
    "single": "webrtc_app without a backplane, as in the table above",
    "single_redis": "one webrtc_app node of a backplane, every pair on it (local delivery, plus the PUBLISH "
    "that tells other nodes)",
    "cluster": "callers on node 1, callees on node 2, every message and acknowledgement through Redis",
}


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
    order = " ".join("ABC"[: len(cfg.cluster_variants)]) + " ..."
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
        "",
        cluster_table(cfg, results),
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
