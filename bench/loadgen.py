"""The driver's side of the load generator (bench/loadgen.mjs, one Node.js process): it prints
``EVENT {json}`` lines at every measurement point and waits for ``go`` after each."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from typing import Any

from bench import BENCH_DIR, BenchError
from bench.config import Config
from bench.processes import Cpus, terminate
from bench.servers import Server


class LoadGen:
    """One run of bench/loadgen.mjs against ``server``: ``workload`` with ``args`` as its --options,
    pinned to ``cpu`` (default: cfg.loadgen_cpu)."""

    def __init__(self, cfg: Config, server: Server, workload: str, args: dict[str, Any], name: str, cpu: Cpus | int = -1) -> None:
        """It runs on the load generator's CPU (-1), or on ``cpu`` (a CPU, a tuple of CPUs, or
        None for any)."""
        self.args = args
        self.log_path = os.path.join(cfg.log_dir, f"{name}.loadgen.log")
        proto = "webrtc" if server.kind == "webrtc_app" else "peerjs"
        cmd = [cfg.node, os.path.join(BENCH_DIR, "loadgen.mjs"), "--proto", proto, "--url", server.ws_url, "--workload", workload]
        for key, value in args.items():
            cmd += [f"--{key}", str(value)]
        env = {**os.environ, "BENCH_NODE_MODULES": os.path.join(cfg.npm_dir, "loadgen", "node_modules")}
        self.stderr = open(self.log_path, "wb")  # noqa: SIM115 - closed in finish() or kill()
        self.proc = cfg.children.spawn(
            cmd,
            cfg.loadgen_cpu if cpu == -1 else cpu,  # -1: the load generator's CPU
            cwd=BENCH_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def event(self, timeout: float) -> dict[str, Any]:
        """The next event it prints; its "error" event, an early exit or silence raise BenchError."""
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
                return event

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event, which must be ``name``."""
        event = self.event(timeout)
        if event["event"] != name:
            raise BenchError(f"expected event {name!r} from the load generator, got {event}")
        return event

    def go(self) -> None:
        """Let it go on past the event it printed last."""
        assert self.proc.stdin
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        """Its last event (``done``), then its exit, which must be status 0; answers that event."""
        last = self.expect("done", timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("the load generator did not exit") from None
        finally:
            terminate(self.proc)
            self.stderr.close()
        if self.proc.returncode != 0:
            raise BenchError(f"the load generator exited with {self.proc.returncode}:\n{self.log_tail()}")
        return last

    def kill(self) -> None:
        """End it now (on an error)."""
        terminate(self.proc, timeout=2)
        self.stderr.close()

    def log_tail(self) -> str:
        """The end of what it wrote on stderr."""
        self.stderr.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-3000:]
