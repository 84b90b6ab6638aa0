"""What is measured, and on what: the npm packages (PeerJS, ws), the webrtc_app revision
(the working tree or ``--rev``), the machine's facts and versions for the results, and the
open-file limit the idle workload needs."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import tempfile

from bench import PROJECT_DIR, BenchError, log
from bench.config import Config, Subject

NOFILE = 200_000


def version_of(cmd: list[str]) -> str:
    """What ``cmd`` prints (stripped), or "?" if it cannot run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def git(*args: str) -> str:
    """What ``git ARGS`` prints about this repository (stripped)."""
    return version_of(["git", "-C", PROJECT_DIR, *args])


def npm_version(cfg: Config, folder: str, package: str) -> str:
    """The version of an npm ``package`` installed in cfg.npm_dir/``folder``."""
    try:
        with open(os.path.join(cfg.npm_dir, folder, "node_modules", package, "package.json"), encoding="utf-8") as handle:
            return json.load(handle)["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def machine_facts(cfg: Config) -> dict[str, str]:
    """The date, the machine, and the version of everything measured, for the results."""
    cpu_model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    tornado = version_of([cfg.python, "-c", "import tornado; print(tornado.version)"])
    first = cfg.revisions[0] if cfg.revisions else None
    commit = git("rev-parse", "--short", first.commit if first and first.commit else "HEAD")
    # Uncommitted changes to the server's files (tracked or not), outside bench/ and this doc.
    dirty = bool(first and not first.commit and git("status", "--porcelain", "--", ".", ":!bench", ":!docs/benchmarks.md"))
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1048576:.0f} GiB",
        "kernel": platform.release(),
        "python": version_of([cfg.python, "-c", "import platform; print(platform.python_version())"]),
        "tornado": tornado,
        "node": version_of([cfg.node, "--version"]),
        "peer": npm_version(cfg, "peer", "peer"),
        "ws (load generator)": npm_version(cfg, "loadgen", "ws"),
        "ws (inside peer)": npm_version(cfg, "peer", "ws"),
        "webrtc_app commit": commit + (" plus uncommitted changes (working tree)" if dirty else ""),
        **({"also measured": ", ".join(f"{s.label} (`--rev {s.rev}`)" for s in cfg.revisions[1:])} if cfg.revisions[1:] else {}),
    }


def install_node_packages(cfg: Config, npm: str, peer_spec: str | None, ws_spec: str) -> None:
    """npm install the PeerJS server (unless ``peer_spec`` is None) and the load generator's ws,
    each in a folder of its own."""
    for folder, spec in (("peer", peer_spec), ("loadgen", ws_spec)):
        if spec is None:
            continue
        path = os.path.join(cfg.npm_dir, folder)
        if os.path.isdir(os.path.join(path, "node_modules", spec.split("@")[0] or spec)):
            continue
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "package.json"), "w", encoding="utf-8") as handle:
            json.dump({"name": f"bench-{folder}", "private": True}, handle)
        log(f"npm install {spec} in {path}")
        command = [npm, "install", "--no-audit", "--no-fund", "--loglevel", "error", spec]
        result = subprocess.run(command, cwd=path, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise BenchError(f"npm install {spec} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def tree_state() -> str:
    """A fingerprint of webrtc_app's working tree: HEAD, changes to tracked files, untracked files."""
    digest = hashlib.sha1()
    for cmd in (["rev-parse", "HEAD"], ["diff", "HEAD", "--", ".", ":!bench", ":!docs/benchmarks.md"]):
        digest.update(subprocess.run(["git", "-C", PROJECT_DIR, *cmd], capture_output=True, timeout=60).stdout)
    for name in git("ls-files", "--others", "--exclude-standard", "--", ".", ":!bench").split():
        try:
            with open(os.path.join(PROJECT_DIR, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
        except OSError:
            pass
    return digest.hexdigest()


def revisions(revs: list[str], temporary: list[str]) -> list[Subject]:
    """The webrtc_app revisions to measure: the working tree without --rev, else each --rev,
    resolved once (so that the export and the commit named in the results agree even if someone
    commits meanwhile) and exported with ``git archive`` into a temporary folder, appended to
    ``temporary`` (the checkout is only read). The first is "webrtc_app", the others
    "webrtc_app@<short sha>"."""
    if not revs:
        return [Subject("webrtc_app", "webrtc_app", "webrtc_app", "w")]
    subjects: list[Subject] = []
    for n, rev in enumerate(revs):
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise BenchError(f"{rev!r} is not a revision of {PROJECT_DIR}")
        label = f"webrtc_app@{git('rev-parse', '--short', commit)}" if n else "webrtc_app"
        if label in (s.label for s in subjects):
            raise BenchError(f"--rev {rev}: {label} is measured already")
        folder = tempfile.mkdtemp(prefix="webrtc-bench-server-")
        temporary.append(folder)
        archive = subprocess.run(["git", "-C", PROJECT_DIR, "archive", "--format=tar", commit], capture_output=True, timeout=120)
        if archive.returncode != 0:
            raise BenchError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace')}")
        unpack = subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, capture_output=True, timeout=120)
        if unpack.returncode != 0:
            raise BenchError(f"cannot unpack {rev}: {unpack.stderr.decode(errors='replace')}")
        subjects.append(Subject(label, label, "webrtc_app", f"w{n or ''}", folder, rev, commit))
    return subjects


def raise_open_files(sockets: int) -> int:
    """Raise this process's open-file limit (inherited by the servers and the load generator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(soft, NOFILE), max(hard, NOFILE)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue  # no CAP_SYS_RESOURCE: the hard limit stays, raise the soft one to it
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sockets + 1000:
        raise BenchError(f"the open-file limit is {soft}; {sockets:,} sockets need more (raise ulimit -n)")
    return soft
