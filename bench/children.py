"""The processes the driver starts: each pinned to a CPU when asked (taskset), sent SIGTERM
by the kernel if the driver dies, and ended by ``cleanup()`` whatever happens."""

from __future__ import annotations

import functools
import subprocess
from typing import Any

from bench import log

from processes import Spawn, popen, terminate

#: Where a child may run: one CPU, a tuple of CPUs, or None (wherever the driver may).
Cpus = int | tuple[int, ...] | None


class Children:
    """Every process a run started, so that the run ends them all, even on an error or Ctrl-C."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(self, cmd: list[str], cpu: Cpus = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` (pinned to ``cpu``, or to the CPUs of a tuple, when given) as
        ``subprocess.Popen(cmd, **kwargs)`` does."""
        if cpu is not None:
            cpus = ",".join(str(c) for c in cpu) if isinstance(cpu, tuple) else str(cpu)
            cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs cmd: the pid stays the command's
        proc = popen(cmd, **kwargs)
        self._procs = [p for p in self._procs if p.poll() is None]
        self._procs.append(proc)
        return proc

    def on_cpu(self, cpu: Cpus) -> Spawn:
        """spawn() pinned to ``cpu``, for a helper process of tests/processes.py."""
        return functools.partial(self.spawn, cpu=cpu)

    def cleanup(self) -> None:
        """End every process still running (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self._procs:
            try:
                terminate(proc, timeout=5)
            except Exception as exc:  # noqa: BLE001 - cleaning up, keep going
                log(f"could not stop pid {proc.pid}: {exc}")
        self._procs = []
