"""What the driver reads from /proc: CPU time of a process, its memory, and how busy the
whole machine (and each CPU) is; and waiting until other processes leave the machine quiet."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from bench import BenchError, log
from bench.config import Config

HZ = os.sysconf("SC_CLK_TCK")


def user_system_ticks(pid: int) -> tuple[int, int]:
    """utime and stime of every thread of ``pid``, in clock ticks (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks."""
    return sum(user_system_ticks(pid))


def status(pid: int, field: str) -> int:
    """A number of /proc/<pid>/status: VmRSS (KiB), voluntary_ctxt_switches (the main thread's
    wake-ups: an event loop's), ..."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        match = re.search(rf"^{field}:\s+(\d+)", handle.read(), re.M)
    if not match:
        raise BenchError(f"no {field} for pid {pid}")
    return int(match.group(1))


def busy_ticks() -> tuple[int, dict[int, int]]:
    """Busy ticks (everything but idle and iowait, /proc/stat) of all CPUs together, and of each."""
    found: dict[int, int] = {}
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            match = re.match(r"cpu(\d*) (.*)", line)
            if match:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in match.group(2).split()[:8])
                found[int(match.group(1) or -1)] = user + nice + system + irq + softirq + steal
    return found.pop(-1), found


@dataclass
class Snapshot:
    t: float
    ticks: dict[str, int]  # CPU ticks of each process by role
    system: dict[str, int]  # ... of which in the kernel
    wakeups: dict[str, int]  # voluntary context switches of each process's main thread
    machine: int
    cores: dict[int, int]
    rss: int  # KiB of the "server" role (0 without one)


def snapshot(pids: dict[str, int]) -> Snapshot:
    """CPU ticks of each process (by role: "server", "node1", "loadgen1", ...), of the machine and
    of each CPU, and the server's RSS, now."""
    split = {role: user_system_ticks(pid) for role, pid in pids.items()}  # one read of each stat
    return Snapshot(
        time.monotonic(),
        {role: user + system for role, (user, system) in split.items()},
        {role: system for role, (_, system) in split.items()},
        {role: status(pid, "voluntary_ctxt_switches") for role, pid in pids.items()},
        *busy_ticks(),
        status(pids["server"], "VmRSS") if "server" in pids else 0,
    )


def spent(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU seconds of each process (``{role}_cpu_s``, of which ``_sys_s`` in the kernel) and % of one
    core (``_cpu_pct``), its wake-ups, and % of a core for other processes and for each CPU; the
    load generators (loadgen1, loadgen2, ...) also summed as ``loadgen``."""
    wall = b.t - a.t
    seconds = {role: (b.ticks[role] - a.ticks[role]) / HZ for role in a.ticks}
    other = max(0.0, (b.machine - a.machine) / HZ - sum(seconds.values()))
    loadgens = [value for role, value in seconds.items() if role.startswith("loadgen")]
    result = {"wall_s": wall, "other_cpu_pct": 100 * other / wall}
    for role, value in {**seconds, **({"loadgen": sum(loadgens)} if loadgens else {})}.items():
        result[f"{role}_cpu_s"] = value
        result[f"{role}_cpu_pct"] = 100 * value / wall
    for role in a.ticks:
        result[f"{role}_sys_s"] = (b.system[role] - a.system[role]) / HZ
        result[f"{role}_wakeups"] = b.wakeups[role] - a.wakeups[role]
    for core in a.cores:
        result[f"core{core}_pct"] = 100 * (b.cores[core] - a.cores[core]) / HZ / wall
    return result


# ---------------------------------------------------------------- a shared machine


def wait_for_quiet(cfg: Config) -> float:
    """Before a measurement, wait (bounded) until other processes (tests of other work on a shared
    machine) use under cfg.quiet_pct of a core; answers the share seen last, in % of one core."""
    deadline = time.monotonic() + min(cfg.quiet_wait, cfg.quiet_budget)
    started = time.monotonic()
    while True:
        t0, b0 = time.monotonic(), busy_ticks()[0]
        time.sleep(0.5)
        busy = 100 * (busy_ticks()[0] - b0) / HZ / (time.monotonic() - t0)
        if busy <= cfg.quiet_pct or time.monotonic() >= deadline:
            break
    waited = time.monotonic() - started - 0.5
    cfg.quiet_budget = max(0.0, cfg.quiet_budget - waited)
    if busy > cfg.quiet_pct:
        log(f"WARNING: other processes keep using {busy:.0f}% of a core; measuring anyway")
    elif waited > 1:
        log(f"waited {waited:.0f} s for other processes to quiet down")
    return busy
