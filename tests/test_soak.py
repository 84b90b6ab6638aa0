"""Soak: 20,000 socket connects and disconnects with messages in between, against the real
process. Afterwards the registry is empty and the memory is back where it was."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

from websockets.asyncio.client import connect

from processes import ServerProcess

PAIRS = 10_000  # two sockets each: 20,000 connect/disconnect cycles
WARM_UP_PAIRS = 2_000
CONCURRENCY = 50
RSS_MARGIN = 8 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        match = re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.M)
    assert match
    return int(match.group(1)) * 1024


def gauge(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


async def call_cycles(base: str, pairs: int, tag: str) -> None:
    """``pairs`` short conversations: both sides connect, exchange two messages, hang up."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(pairs):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            a_id, b_id = f"{tag}a{n}", f"{tag}b{n}"
            async with connect(f"{base}?id={b_id}&peer_id={a_id}") as b, connect(f"{base}?id={a_id}&peer_id={b_id}") as a:
                await a.send(f"offer {n}")
                assert await b.recv() == f"offer {n}"
                await b.send(f"answer {n}")
                assert await a.recv() == f"answer {n}"

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), timeout=600)


def wait_until_empty(server: ServerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while gauge(server, "webrtc_open_sockets") or gauge(server, "webrtc_ids_online"):
        assert time.monotonic() < deadline, "sockets left in the registry"
        time.sleep(0.1)


def test_twenty_thousand_connects_leave_nothing_behind():
    with ServerProcess(env={"WEBRTC_STATUS_LOG_INTERVAL": "0"}) as server:
        pid = server.proc.pid  # type: ignore[union-attr]
        base = f"{server.ws}/wscall"
        asyncio.run(call_cycles(base, WARM_UP_PAIRS, "warm"))  # let allocator pools and caches settle
        wait_until_empty(server)
        before = rss_bytes(pid)
        started = time.monotonic()
        asyncio.run(call_cycles(base, PAIRS, "soak"))
        elapsed = time.monotonic() - started
        wait_until_empty(server)
        after = rss_bytes(pid)
        assert gauge(server, "webrtc_messages_relayed_total") == 2 * (PAIRS + WARM_UP_PAIRS)
        assert after - before < RSS_MARGIN, f"RSS grew by {(after - before) / 1024:.0f} KiB over {2 * PAIRS} sockets"
        print(f"\n{2 * PAIRS} sockets in {elapsed:.1f} s; RSS {before / 1048576:.1f} -> {after / 1048576:.1f} MiB")
        assert "Traceback" not in server.output()
