"""The rounds of a run and where their results go: webrtc_app against PeerJS (A B A B ...),
or ``--cluster`` (one node, one node with Redis, two nodes: A B C ...); medians, the JSON of
every round, the markdown in bench/out/, and docs/benchmarks.md for a full run."""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench import PROJECT_DIR, log
from bench.cluster import measure_cluster
from bench.config import (
    CLUSTER_LABELS,
    CLUSTER_VARIANTS,
    DEFAULT_WORKLOADS,
    LABELS,
    ROUND_WORKLOADS,
    SERVERS,
    Config,
    scaling_key,
    scaling_label,
)
from bench.docs import DOCS_FILE, write_cluster_docs, write_docs
from bench.environment import tree_state, version_of
from bench.overload import run_overload
from bench.profiling import run_cluster_profile, run_profile
from bench.report import Results, profile_report, report
from bench.report_cluster import ClusterResults, cluster_layout_text, cluster_report
from bench.report_overload import overload_report
from bench.sampling import wait_for_quiet
from bench.scaling import measure_scaling
from bench.workloads import measure


def measure_undisturbed(cfg: Config, what: str, tag: str, run: Callable[[str], dict[str, float]]) -> tuple[dict[str, float], int]:
    """``run(tag)``, redone (at most cfg.retries times, with the attempt in the tag) while other
    processes used over cfg.max_other_cpu of a core; answers the figures kept and the redos."""
    redone = 0
    for attempt in range(1 + cfg.retries):
        wait_for_quiet(cfg)
        figures = run(f"{tag}{attempt or ''}")
        if figures["other_cpu_pct"] <= cfg.max_other_cpu or attempt == cfg.retries:
            break
        redone += 1
        log(
            f"{what}: other processes used {figures['other_cpu_pct']:.0f}% of a core "
            f"(over {cfg.max_other_cpu:g}%): measuring again"
        )
    return figures, redone


def check_tree(cfg: Config, tree_before: str | None) -> None:
    """Warn in the results if the working tree measured changed during the run."""
    if tree_before is not None and tree_state() != tree_before:
        cfg.warn(
            "webrtc_app's working tree changed during the run (a commit or an edit): its rounds may not all "
            "measure the same code; use --rev to benchmark a fixed revision"
        )


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, default=str)


def run_suite(
    cfg: Config,
    args: argparse.Namespace,
    command: str,
    facts: dict[str, str],
    stamp: str,
    started: float,
    tree_before: str | None,
) -> int:
    """Rounds of every workload against webrtc_app then PeerJS, the profile, and the results."""
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
    results: Results = {kind: defaultdict(list) for kind in SERVERS}
    other_cpu = 0.0
    redone = 0
    for n in range(1, cfg.rounds + 1):
        for workload in (w for w in cfg.workloads if w in ROUND_WORKLOADS):
            for kind in (k for k in SERVERS if k in cfg.servers):
                figures, again = measure_undisturbed(
                    cfg,
                    f"round {n} {workload} {LABELS[kind]}",
                    f"r{n}{workload[0]}{kind[0]}",
                    functools.partial(measure, cfg, kind, workload),
                )
                redone += again
                results[kind][workload].append(figures)
                other_cpu = max(other_cpu, figures.get("other_cpu_pct", 0.0))
                shown = ", ".join(
                    f"{k} {v:,.2f}"
                    for k, v in figures.items()
                    if k not in ("relayed", "idle_seconds") and not k.startswith("rss_mib")
                )
                log(f"round {n} {workload:5} {LABELS[kind]:10}: {shown}")
                if figures["other_cpu_pct"] > cfg.max_other_cpu:
                    log(f"WARNING: other processes used {figures['other_cpu_pct']:.0f}% of a core during this measurement")
    overload = run_overload(cfg)  # capacity and storm: once each
    other_cpu = max([other_cpu, *(figures.get("other_cpu_pct", 0.0) for figures in overload.values())])
    profile = None if args.no_profile or "webrtc_app" not in cfg.servers else run_profile(cfg)
    check_tree(cfg, tree_before)
    elapsed = time.monotonic() - started
    results_md = (
        report(cfg, command, results, facts, other_cpu, redone, elapsed) + "\n\n" + overload_report(cfg, results, overload)
    )
    profile_md = profile_report(cfg, profile, facts) if profile else None
    write_json(
        os.path.join(cfg.out_dir, f"results-{stamp}.json"),
        {
            "command": command,
            "facts": facts,
            "results": results,
            "overload": overload,
            "profile": profile,
            "warnings": cfg.warnings,
        },
    )
    with open(os.path.join(cfg.out_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(results_md + "\n\n" + (profile_md or "") + "\n")
    print(results_md)
    if profile_md:
        print("\n" + profile_md)
    full = not cfg.quick and set(cfg.servers) == set(SERVERS) and set(cfg.workloads) >= set(DEFAULT_WORKLOADS)
    if not args.no_docs and (full or args.write_docs):
        write_docs(results_md, profile_md)
        log(f"results written to {os.path.relpath(DOCS_FILE, PROJECT_DIR)}")
    else:
        log(f"results written to {os.path.relpath(cfg.out_dir, PROJECT_DIR)}/results.md only (docs not touched)")
    return 0


def shown_figures(figures: dict[str, float]) -> str:
    """One measurement across nodes, for the progress log."""
    return ", ".join(
        f"{k} {v:,.2f}" for k, v in figures.items() if k not in ("relayed",) and not k.startswith(("probe_", "core"))
    )


def run_cluster_suite(
    cfg: Config,
    args: argparse.Namespace,
    command: str,
    facts: dict[str, str],
    stamp: str,
    started: float,
    tree_before: str | None,
) -> int:
    """--cluster: alternate rounds of the relay on one node, one node with Redis, two nodes
    through Redis, and one server of 1, 2, 4 ... worker processes (--scaling); medians; writes
    the bench:cluster block of docs/benchmarks.md."""
    for name in ("peer", "ws (inside peer)"):
        facts.pop(name, None)
    facts["redis-server"] = version_of([cfg.redis_server, "--version"]).split(" v=")[-1].split()[0]
    facts["redis-py"] = version_of([cfg.python, "-c", "import redis; print(redis.__version__)"])
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + f"; {cluster_layout_text(cfg)}")
    results: ClusterResults = defaultdict(list)
    other_cpu = 0.0
    redone = 0
    for n in range(1, cfg.rounds + 1):
        for variant in cfg.cluster_variants:
            figures, again = measure_undisturbed(
                cfg,
                f"round {n} {CLUSTER_LABELS[variant]}",
                f"r{n}{'scr'[CLUSTER_VARIANTS.index(variant)]}",
                functools.partial(measure_cluster, cfg, variant),
            )
            redone += again
            results[variant].append(figures)
            other_cpu = max(other_cpu, figures["other_cpu_pct"])
            log(f"round {n} {CLUSTER_LABELS[variant]:17}: {shown_figures(figures)}")
        for processes in cfg.scaling:
            figures, again = measure_undisturbed(
                cfg,
                f"round {n} {scaling_label(processes)}",
                f"r{n}p{processes}",
                functools.partial(measure_scaling, cfg, processes),
            )
            redone += again
            results[scaling_key(processes)].append(figures)
            other_cpu = max(other_cpu, figures["other_cpu_pct"])
            log(f"round {n} {scaling_label(processes):17}: {shown_figures(figures)}")
    profile = None if args.no_profile else run_cluster_profile(cfg)
    check_tree(cfg, tree_before)
    elapsed = time.monotonic() - started
    results_md = cluster_report(cfg, command, results, facts, other_cpu, redone, elapsed, profile)
    write_json(
        os.path.join(cfg.out_dir, f"results-cluster-{stamp}.json"),
        {
            "command": command,
            "facts": facts,
            "layout": cfg.cluster_cpus,
            "results": results,
            "profile": profile,
            "warnings": cfg.warnings,
        },
    )
    with open(os.path.join(cfg.out_dir, "results-cluster.md"), "w", encoding="utf-8") as handle:
        handle.write(results_md + "\n")
    print(results_md)
    full = not cfg.quick and set(cfg.cluster_variants) == set(CLUSTER_VARIANTS) and bool(cfg.scaling)
    if not args.no_docs and (full or args.write_docs):
        write_cluster_docs(results_md)
        log(f"results written to {os.path.relpath(DOCS_FILE, PROJECT_DIR)} (between the bench:cluster markers)")
    else:
        log(f"results written to {os.path.relpath(cfg.out_dir, PROJECT_DIR)}/results-cluster.md only (docs not touched)")
    return 0
