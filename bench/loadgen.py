"""The driver's side of the load generators (bench/loadgen.mjs, Node.js): one, or several side
by side on one workload (docs/benchmarks.md, "Several load generators"), each then with a
tag and a source address of its own (127.0.0.2, 127.0.0.3, ...: one address has about 28,000
ephemeral ports, one process only as many sockets as its descriptors allow). Each prints
``EVENT {json}`` at every measurement point and waits for ``go``; the driver steps them
through the same events together and sums what they did."""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import threading
import time
from typing import Any

from bench import BENCH_DIR, BenchError
from bench.config import Config
from bench.processes import Cpus, terminate


class LoadGen:
    """One run of bench/loadgen.mjs: ``workload`` with ``args`` as its --options, speaking ``proto``
    to ``url``, pinned to ``cpu``."""

    def __init__(self, cfg: Config, proto: str, url: str, workload: str, args: dict[str, Any], name: str, cpu: Cpus) -> None:
        self.log_path = os.path.join(cfg.log_dir, f"{name}.loadgen.log")
        cmd = [cfg.node, os.path.join(BENCH_DIR, "loadgen.mjs"), "--proto", proto, "--url", url, "--workload", workload]
        for key, value in args.items():
            cmd += [f"--{key}", str(value)]
        env = {**os.environ, "BENCH_NODE_MODULES": os.path.join(cfg.npm_dir, "loadgen", "node_modules")}
        self.stderr = open(self.log_path, "wb")  # noqa: SIM115 - closed in finish() or kill()
        self.proc = cfg.children.spawn(
            cmd, cpu, cwd=BENCH_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event, which must be ``name``; its "error" event, an early exit or silence raise BenchError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"the load generator said nothing for {timeout:.0f} s:\n{self.log_tail()}") from None
            if line is None:
                self.proc.wait(5)
                raise BenchError(f"the load generator exited ({self.proc.returncode}) early:\n{self.log_tail()}")
            if line.startswith("EVENT "):
                event = json.loads(line[6:])
                if event["event"] == "error":
                    raise BenchError(f"the load generator failed: {event['message']}\n{self.log_tail()}")
                if event["event"] != name:
                    raise BenchError(f"expected event {name!r} from the load generator, got {event}")
                return event

    def go(self) -> None:
        """Let it go on past the event it printed last."""
        assert self.proc.stdin
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        """Its last event (``done``), then its exit, which must be status 0."""
        last = self.expect("done", timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("the load generator did not exit") from None
        finally:
            self.kill()
        if self.proc.returncode != 0:
            raise BenchError(f"the load generator exited with {self.proc.returncode}:\n{self.log_tail()}")
        return last

    def kill(self) -> None:
        terminate(self.proc, timeout=2)
        self.stderr.close()

    def log_tail(self) -> str:
        """The end of what it wrote on stderr."""
        if not self.stderr.closed:
            self.stderr.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-3000:]


def source_addresses(n: int, sources: int) -> str:
    """Load generator ``n``'s source addresses: 127.0.0.(2+n), or with several, 127.0.(2+n).1,
    .2, ... (the kernel searches one address's ports at each bind: bench/loadgen/client.mjs)."""
    if sources == 1:
        return f"127.0.0.{2 + n}"
    return ",".join(f"127.0.{2 + n}.{1 + k}" for k in range(sources))


class LoadGens:
    """Load generators on one workload against ``server``, ``shares[i]`` the options of the i-th;
    one runs on ``cpu`` (-1: the load generator's CPU), several on the load generator's CPU or in
    turn on those of --loadgen-cpus."""

    def __init__(
        self,
        cfg: Config,
        server: Any,
        workload: str,
        shares: list[dict[str, Any]],
        name: str,
        cpu: Cpus = -1,
        sources: int = 1,
    ) -> None:
        proto = "webrtc" if server.kind == "webrtc_app" else "peerjs"
        self.shares = shares
        self.procs: list[LoadGen] = []
        try:
            if len(shares) == 1:
                where = cfg.loadgen_cpu if cpu == -1 else cpu
                self.procs.append(LoadGen(cfg, proto, server.ws, workload, {**shares[0], "tag": name}, name, where))
            for n, args in enumerate(shares if len(shares) > 1 else []):
                tagged = {**args, "tag": f"{name}g{n}", "local-address": source_addresses(n, sources)}
                where = cfg.loadgen_cpus[n % len(cfg.loadgen_cpus)] if cfg.loadgen_cpus else cfg.loadgen_cpu
                self.procs.append(LoadGen(cfg, proto, server.ws, workload, tagged, f"{name}-{n}", where))
        except BaseException:
            self.kill()
            raise

    @property
    def pids(self) -> dict[str, int]:
        """Their pids by role, loadgen1, loadgen2, ... (sampling.spent() sums them as "loadgen")."""
        return {f"loadgen{n}": lg.proc.pid for n, lg in enumerate(self.procs, 1)}

    def expect(self, name: str, timeout: float) -> list[dict[str, Any]]:
        """Event ``name`` from each of them (within ``timeout`` s in all)."""
        deadline = time.monotonic() + timeout
        return [lg.expect(name, max(1.0, deadline - time.monotonic())) for lg in self.procs]

    def go(self) -> None:
        for lg in self.procs:
            lg.go()

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [lg.finish(max(1.0, deadline - time.monotonic())) for lg in self.procs]

    def kill(self) -> None:
        for lg in self.procs:
            lg.kill()


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal shares (the first ones larger by one)."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def percentile(values: list[float], p: float) -> float:
    """As the load generator computes it (common.mjs): the ceil(p·n)-th smallest value."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def merged(results: list[dict[str, Any]], done: str, samples: str) -> tuple[float, float, float]:
    """``done`` per second (relayed, calls) and the p50 and p99 of ``samples`` (rtt, setup): one load
    generator's own, or over several, from all their samples (--raw 1) and their common span
    (their clocks are the epoch's)."""
    if len(results) == 1:
        result = results[0]
        return result[f"{done}_per_s"], result[f"{samples}_ms"]["p50"], result[f"{samples}_ms"]["p99"]
    values = [x for r in results for x in r[f"{samples}_samples_ms"]]
    span = (max(r["ended_at_ms"] for r in results) - min(r["started_at_ms"] for r in results)) / 1000
    return sum(r[done] for r in results) / span, percentile(values, 0.5), percentile(values, 0.99)
