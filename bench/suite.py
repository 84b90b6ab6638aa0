"""The rounds of a run and where their results go: webrtc_app against PeerJS (A B A B ...),
or ``--cluster`` (one node, one node with Redis, two nodes, the scaling table: A B C ...); the
JSON of every round, the markdown in bench/out/, and for a full run docs/benchmarks.md, of which
a run rewrites only the blocks between its own markers, never the hand-written text around them."""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench import PROJECT_DIR, log
from bench.chart import chart
from bench.cluster import measure_cluster, measure_scaling
from bench.config import (
    CLUSTER_LABELS,
    CLUSTER_VARIANTS,
    DEFAULT_WORKLOADS,
    ROUND_WORKLOADS,
    SERVERS,
    Config,
    scaling_key,
    scaling_label,
)
from bench.environment import tree_state, version_of
from bench.overload import run_overload
from bench.profiling import run_cluster_profile, run_profile
from bench.report import Results, cluster_layout_text, cluster_report, profile_report, report
from bench.sampling import wait_for_quiet
from bench.workloads import measure

DOCS_FILE = os.path.join(PROJECT_DIR, "docs", "benchmarks.md")
CHART_FILE = os.path.join(PROJECT_DIR, "docs", "benchmarks.svg")
RESULTS_MARKERS = ("<!-- bench:results:start -->", "<!-- bench:results:end -->")
PROFILE_MARKERS = ("<!-- bench:profile:start -->", "<!-- bench:profile:end -->")
CLUSTER_MARKERS = ("<!-- bench:cluster:start -->", "<!-- bench:cluster:end -->")

#: One measurement of a round: (the results' server, the results' workload or variant, its label, its tag, run(tag)).
Measurement = tuple[str, str, str, str, Callable[[str], dict[str, float]]]


def measure_undisturbed(cfg: Config, what: str, tag: str, run: Callable[[str], dict[str, float]]) -> tuple[dict[str, float], int]:
    """``run(tag)``, redone (at most cfg.retries times, with the attempt in the tag) while other
    processes used over cfg.max_other_cpu of a core; answers the figures kept and the redos."""
    redone = 0
    for attempt in range(1 + cfg.retries):
        wait_for_quiet(cfg)
        figures = run(tag=f"{tag}{attempt or ''}")
        if figures["other_cpu_pct"] <= cfg.max_other_cpu or attempt == cfg.retries:
            break
        redone += 1
        used = figures["other_cpu_pct"]
        log(f"{what}: other processes used {used:.0f}% of a core (over {cfg.max_other_cpu:g}%): measuring again")
    return figures, redone


def run_rounds(cfg: Config, plan: list[Measurement]) -> tuple[Results, float, int]:
    """cfg.rounds rounds of every measurement of ``plan``, in its order (A B C A B C ...):
    results[server][workload] = the figures of each round; the most other processes used of a
    core during a kept measurement, and how many measurements were redone."""
    results: Results = defaultdict(lambda: defaultdict(list))
    other_cpu, redone = 0.0, 0
    for n in range(1, cfg.rounds + 1):
        for server, what, label, tag, run in plan:
            figures, again = measure_undisturbed(cfg, f"round {n} {label}", f"r{n}{tag}", run)
            redone += again
            results[server][what].append(figures)
            other_cpu = max(other_cpu, figures["other_cpu_pct"])
            shown = ", ".join(
                f"{k} {v:,.2f}"
                for k, v in figures.items()
                if isinstance(v, int | float)
                and k not in ("relayed", "idle_seconds")
                and not k.startswith(("rss_mib", "probe_", "core"))
            )
            log(f"round {n} {label:17}: {shown}")
            if figures["other_cpu_pct"] > cfg.max_other_cpu:
                log(f"WARNING: other processes used {figures['other_cpu_pct']:.0f}% of a core during this measurement")
    return results, other_cpu, redone


def check_tree(cfg: Config, tree_before: str | None) -> None:
    """Warn in the results if the working tree measured changed during the run."""
    if tree_before is not None and tree_state() != tree_before:
        cfg.warn(
            "webrtc_app's working tree changed during the run (a commit or an edit): its rounds may not all "
            "measure the same code; use --rev to benchmark a fixed revision"
        )


def write(path: str, data: dict[str, Any] | str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        if isinstance(data, str):
            handle.write(data + "\n")
        else:
            json.dump(data, handle, indent=1, default=str)


def write_docs(blocks: list[tuple[tuple[str, str], str]]) -> None:
    """docs/benchmarks.md with each body between its markers (the block appended if they are missing)."""
    with open(DOCS_FILE, encoding="utf-8") as handle:
        text = handle.read()
    for (start, end), body in blocks:
        block = f"{start}\n{body}\n{end}"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(DOCS_FILE, "w", encoding="utf-8") as handle:
        handle.write(text)


def publish(
    cfg: Config, args: argparse.Namespace, full: bool, name: str, markdown: str, blocks: list[tuple[tuple[str, str], str]]
) -> bool:
    """The results on stdout and in bench/out/``name``; in docs/benchmarks.md too for a full run (or
    --write-docs): answers whether the docs were written."""
    write(os.path.join(cfg.out_dir, name), markdown)
    print(markdown)
    if not args.no_docs and (full or args.write_docs):
        write_docs(blocks)
        log(f"results written to {os.path.relpath(DOCS_FILE, PROJECT_DIR)}")
        return True
    log(f"results written to {os.path.relpath(cfg.out_dir, PROJECT_DIR)}/{name} only (docs not touched)")
    return False


def run_suite(cfg: Config, args: argparse.Namespace, facts: dict[str, str], tree_before: str | None) -> int:
    """Rounds of every workload against webrtc_app then PeerJS, capacity and the storm once, the
    profile, and the results."""
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
    plan: list[Measurement] = [
        (s.key, workload, f"{workload} {s.label}", f"{workload[0]}{s.tag}", functools.partial(measure, cfg, s, workload))
        for workload in cfg.workloads
        if workload in ROUND_WORKLOADS
        for s in cfg.subjects
    ]
    results, other_cpu, redone = run_rounds(cfg, plan)
    overload = run_overload(cfg)  # capacity and storm: once each
    other_cpu = max([other_cpu, *(figures.get("other_cpu_pct", 0.0) for once in overload.values() for figures in once.values())])
    profile = None if args.no_profile or not cfg.revisions else run_profile(cfg)
    check_tree(cfg, tree_before)
    results_md = report(cfg, results, overload, facts, other_cpu, redone)
    profile_md = profile_report(cfg, profile, facts) if profile else None
    data = {"command": cfg.command, "facts": facts, "results": results, "overload": overload, "profile": profile}
    write(os.path.join(cfg.out_dir, f"results-{cfg.stamp}.json"), {**data, "warnings": cfg.warnings})
    full = not cfg.quick and set(cfg.servers) == set(SERVERS) and set(cfg.workloads) >= set(DEFAULT_WORKLOADS)
    blocks = [(RESULTS_MARKERS, results_md)] + ([(PROFILE_MARKERS, profile_md)] if profile_md else [])
    svg = chart(cfg, results, facts, cfg.command)
    if svg:
        write(os.path.join(cfg.out_dir, "benchmarks.svg"), svg)
    if publish(cfg, args, full, "results.md", results_md + "\n\n" + (profile_md or ""), blocks) and svg:
        write(CHART_FILE, svg)  # the chart docs/benchmarks.md shows
        log(f"chart written to {os.path.relpath(CHART_FILE, PROJECT_DIR)}")
    return 0


def run_cluster_suite(cfg: Config, args: argparse.Namespace, facts: dict[str, str], tree_before: str | None) -> int:
    """--cluster: alternate rounds of the relay on one node, one node with Redis, two nodes
    through Redis, and one server of 1, 2, 4 ... worker processes (--scaling); medians; writes
    the bench:cluster block of docs/benchmarks.md."""
    for name in ("peer", "ws (inside peer)"):
        facts.pop(name, None)
    facts["redis-server"] = version_of([cfg.redis_server, "--version"]).split(" v=")[-1].split()[0]
    facts["redis-py"] = version_of([cfg.python, "-c", "import redis; print(redis.__version__)"])
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {cluster_layout_text(cfg)}")
    several = len(cfg.revisions) > 1
    plan: list[Measurement] = []
    for what, label, tag, run in [
        *(
            (v, CLUSTER_LABELS[v], "scr"[CLUSTER_VARIANTS.index(v)], functools.partial(measure_cluster, variant=v))
            for v in cfg.cluster_variants
        ),
        *((scaling_key(n), scaling_label(n), f"p{n}", functools.partial(measure_scaling, processes=n)) for n in cfg.scaling),
    ]:
        for s in cfg.revisions:  # each revision right after the other on the same measurement
            more = "" if s.tag == "w" else s.tag
            plan.append((s.key, what, f"{label} {s.label}" if several else label, tag + more, functools.partial(run, cfg, s)))
    results, other_cpu, redone = run_rounds(cfg, plan)
    profile = None if args.no_profile else run_cluster_profile(cfg)
    check_tree(cfg, tree_before)
    results_md = cluster_report(cfg, results, facts, other_cpu, redone, profile)
    data = {"command": cfg.command, "facts": facts, "layout": cfg.cluster_cpus, "results": results, "profile": profile}
    write(os.path.join(cfg.out_dir, f"results-cluster-{cfg.stamp}.json"), {**data, "warnings": cfg.warnings})
    full = not cfg.quick and set(cfg.cluster_variants) == set(CLUSTER_VARIANTS) and bool(cfg.scaling)
    publish(cfg, args, full, "results-cluster.md", results_md, [(CLUSTER_MARKERS, results_md)])
    return 0
