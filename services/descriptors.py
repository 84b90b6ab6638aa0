"""File descriptors: as many as the system allows, and how many sockets that leaves.

Each signaling socket holds a descriptor. Processes usually start with a soft limit of
1,024 (the default of shells, supervisord and many systemd units) although the hard limit
allows far more; a process that stays at 1,024 runs out at about a thousand users, long
before MAX_SOCKETS. So the server raises its soft limit to the hard limit at start, and
counts its socket capacity from what it got, keeping a reserve for pages, Redis, logs and
the connections it must still accept to refuse them clearly.
"""

from __future__ import annotations

import resource
from typing import NamedTuple


class OpenFiles(NamedTuple):
    before: int
    soft: int
    hard: int


def raise_open_files() -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or to 1,048,576 if unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    else:
        target = soft
    return OpenFiles(soft, target, hard)


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE now (a large number if unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def reserve_for(open_files: int, reserved: int) -> int:
    """Descriptors kept out of the signaling sockets' reach: ``reserved``, but never more than
    a quarter of a small limit."""
    return min(reserved, open_files // 4)


def socket_capacity(max_sockets: int, open_files: int, reserved: int) -> int:
    """The most signaling sockets this process can hold: MAX_SOCKETS, or fewer if the
    descriptors (less the reserve) run out first."""
    return max(0, min(max_sockets, open_files - reserve_for(open_files, reserved)))
