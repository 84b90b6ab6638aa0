"""At its limits the server answers at once and stays up: a real process under a small
descriptor limit (``ulimit -n``), a burst of sockets, and slow clients."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import urllib.request
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from processes import ServerProcess, popen, wait_until

HZ = os.sysconf("SC_CLK_TCK")


def limited(soft: int, hard: int):
    """Start the server as a shell with ``ulimit -Sn soft; ulimit -Hn hard`` would."""

    def spawn(cmd: list[str], **kwargs: Any):
        script = f'ulimit -Sn {soft} && ulimit -Hn {hard} && exec "$@"'
        return popen(["sh", "-c", script, "sh", *cmd], **kwargs)

    return spawn


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def attempt(url: str, held: list[Any]) -> str:
    """Open one socket: "open" (and keep it), or how it was turned away. Never "hung"."""
    try:
        ws = await asyncio.wait_for(connect(url, open_timeout=None, close_timeout=1), 10)
    except InvalidStatus as refused:
        return f"http {refused.response.status_code}"
    except TimeoutError:
        return "hung"
    except (OSError, ConnectionClosed) as error:
        return f"error {type(error).__name__}"
    try:
        await asyncio.wait_for(ws.recv(), 0.5)  # a refused socket is closed at once
    except TimeoutError:
        held.append(ws)
        return "open"
    except ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else 'without a code'}"
    return "message"


def test_a_burst_beyond_the_descriptors_gets_answers_and_the_process_goes_idle():
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_RATE_LIMIT": "0", "WEBRTC_WS_PING_INTERVAL": "0"}
    with ServerProcess(env=env, spawn=limited(256, 256)) as server:
        line = server.wait_for_line("open files:")
        # 256 descriptors, a quarter kept in reserve: 192 sockets.
        assert "soft limit 256 (hard 256): up to 192 signaling sockets" in line, line
        assert metric(server, "webrtc_socket_limit") == 192

        async def burst() -> tuple[dict[str, int], list[Any]]:
            held: list[Any] = []
            urls = [f"{server.ws}/wscall?id=user{n}&peer_id=peer{n}" for n in range(400)]
            outcomes = await asyncio.gather(*(attempt(url, held) for url in urls))
            counts: dict[str, int] = {}
            for outcome in outcomes:
                counts[outcome] = counts.get(outcome, 0) + 1
            return counts, held

        async def scenario() -> None:
            counts, held = await burst()
            print(f"\n400 sockets against 256 descriptors: {counts}")
            assert counts.get("hung", 0) == 0, counts
            assert counts["open"] == 192, counts
            # Every other one was told: 1013 SERVER-FULL after the handshake, or 503 before it.
            assert set(counts) <= {"open", "closed 1013", "http 503"}, counts
            # The burst is over: the process is idle (it spun at a whole core before).
            pid = server.pid
            before = cpu_seconds(pid)
            await asyncio.sleep(2)
            assert cpu_seconds(pid) - before < 0.2
            # Some leave; new sockets are accepted again, by themselves.
            for ws in held[:50]:
                await ws.close()
            await asyncio.sleep(0.5)
            again: list[Any] = []
            results = await asyncio.gather(*(attempt(f"{server.ws}/wscall?id=again{n}&peer_id=x", again) for n in range(40)))
            assert results.count("open") == 40, results
            for ws in held[50:] + again:
                await ws.close()

        asyncio.run(scenario())
        with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as response:
            assert response.status == 200


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit():
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]"}, spawn=limited(256, 1024)) as server:
        line = server.wait_for_line("open files:")
        assert "soft limit raised from 256 to 1024 (hard 1024): up to 924 signaling sockets" in line, line
        assert metric(server, "webrtc_open_files_limit") == 1024
        assert metric(server, "webrtc_socket_limit") == 924


def test_slow_and_idle_clients_are_closed_after_the_header_timeout():
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_HEADER_TIMEOUT": "1"}) as server:
        slow = []
        for n in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(f"GET /call?id=slow{n}&peer_id=x HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())  # and nothing more
            slow.append(sock)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # then it keeps the connection, idle
        started = time.monotonic()

        def closed(sock: socket.socket) -> bool:
            try:
                return sock.recv(65536) == b""
            except ConnectionResetError:
                return True

        for sock in [*slow, idle]:
            sock.settimeout(5)
            assert closed(sock)
            sock.close()
        took = time.monotonic() - started
        assert took < 4, took
        print(f"\n50 slow clients and an idle one closed {took:.1f} s after they stopped sending (timeout 1 s)")


def test_out_of_descriptors_a_connection_that_sent_nothing_makes_room_for_a_newcomer():
    # Idle connections (a slowloris, or clients gone quiet) hold every descriptor: the next
    # client is not answered 503 while one of them has been silent for a second.
    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_MAX_PENDING_HEADS_PER_ADDRESS": "0"}
    with ServerProcess(env=env, spawn=limited(256, 256)) as server:
        server.wait_for_line("open files:")
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(300)]
        time.sleep(1.5)

        async def newcomer() -> str:
            return await attempt(f"{server.ws}/wscall?id=newcomer&peer_id=nobody", [])

        assert asyncio.run(newcomer()) == "open"
        dropped = metric(server, "webrtc_idle_heads_dropped_total")
        assert 1 <= dropped <= 5, dropped  # only as many as the newcomers needed (the metric read is one)
        assert metric(server, "webrtc_busy_address_refusals_total") == 0
        for sock in idle:
            sock.close()


def test_event_loop_lag_is_measured():
    with ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_STATUS_LOG_INTERVAL": "1"}) as server:
        line = server.wait_for_line(r"status: .*event loop lag up to \d+ ms", timeout=10)
        assert "socket(s) of" in line
        wait_until(lambda: metric(server, "webrtc_event_loop_lag_max_seconds") > 0, 10, "a lag to be measured")
        assert metric(server, "webrtc_event_loop_lag_seconds") < 0.25  # an idle server is not late


def test_a_connect_flood_at_the_descriptor_limit_does_not_freeze_the_loop():
    # Out of descriptors, every connection in the backlog is answered 503 with the spare one;
    # that used to run until the backlog was empty, in one callback (5 s with 2,000 waiting).
    import threading

    from raw_ws import TEXT, RawWebSocket, frame

    env = {"WEBRTC_ICE_SERVERS": "[]", "WEBRTC_RATE_LIMIT": "0", "WEBRTC_WS_PING_INTERVAL": "0"}
    with ServerProcess(env=env, spawn=limited(256, 256)) as server:
        a = RawWebSocket("127.0.0.1", server.port, "/wscall?id=steady-a&peer_id=steady-b")
        b = RawWebSocket("127.0.0.1", server.port, "/wscall?id=steady-b&peer_id=steady-a")
        held = [RawWebSocket("127.0.0.1", server.port, f"/wscall?id=fill{n}&peer_id=x") for n in range(200)]
        wait_until(lambda: metric(server, "webrtc_open_sockets") >= 150, 10, "the sockets to fill the descriptors")
        stop = threading.Event()
        flood: list[socket.socket] = []

        def connect_flood() -> None:
            while not stop.is_set() and len(flood) < 2000:
                try:
                    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    flood.append(sock)
                except OSError:
                    time.sleep(0.01)

        threads = [threading.Thread(target=connect_flood) for _ in range(4)]
        for thread in threads:
            thread.start()
        worst = 0.0
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                started = time.monotonic()
                a.send(frame(TEXT, b"still there?"))
                assert b.read_frame() == (TEXT, b"still there?")
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert metric(server, "webrtc_connections_turned_away_total") > 100  # the flood met the limit
        assert worst < 1.5, worst  # the messages in between kept flowing (a freeze was 5 s)
        for sock in flood:
            sock.close()
        for ws in (a, b, *held):
            ws.close()


def test_out_of_descriptors_one_callback_answers_at_most_one_batch_of_the_backlog():
    # The bound itself (the flood above cannot outpace the loop on two cores): 500 real
    # connections wait in a real backlog; one call answers ACCEPT_BATCH of them 503 and
    # returns, the others wait for the loop's next turns.
    import webrtc_server
    from handlers.frontdoor import ACCEPT_BATCH, FrontDoor, FrontDoorHTTPServer

    async def scenario() -> tuple[int, int]:
        app = webrtc_server.make_app(iceServers=[])
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(500)]
        door = FrontDoor(FrontDoorHTTPServer(app), [listener])
        door._take_spare()
        listener.setblocking(False)
        door._turn_away(listener)
        first = app.stats.turned_away
        while app.stats.turned_away < 500:
            door._turn_away(listener)
        for client in clients:
            client.close()
        door.stop()
        return first, app.stats.turned_away

    first, total = asyncio.run(scenario())
    assert first == ACCEPT_BATCH and total == 500
