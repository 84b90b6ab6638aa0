"""Real server processes on one redis-server: relaying across nodes, a node killed or frozen,
Redis restarting, and --processes."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import pytest
from conftest import refused_with, running
from raw_ws import CLOSE, TEXT, RawWebSocket, frame
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from routing import PEER_UNAVAILABLE_NOTICE
from routing.redis.common import Keys

from processes import RedisServer, ServerProcess, run_cli, wait_until

NODE_TTL = 2.0
ADMIN = "cluster-admin"


@pytest.fixture
def redis():
    with running(RedisServer()) as server:
        yield server


def node(redis: RedisServer, *args: str) -> ServerProcess:
    env = {"WEBRTC_NODE_TTL": str(NODE_TTL), "WEBRTC_ADMIN_TOKEN": ADMIN, "WEBRTC_ICE_SERVERS": "[]"}
    return ServerProcess("--redis", redis.url, *args, env=env)


def connections(server: ServerProcess, my_id: str) -> list[dict]:
    request = urllib.request.Request(f"{server.http}/connections?id={my_id}", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def join(stack: ExitStack, server: ServerProcess, my_id: str, peer_id: str, seen_from: ServerProcess | None = None):
    """Open a socket and wait until the whole cluster can reach it."""
    ws = stack.enter_context(connect(f"{server.ws}/wscall?id={my_id}&peer_id={peer_id}"))
    wait_until(lambda: any(c["peer"] == peer_id for c in connections(seen_from or server, my_id)), 10, f"{my_id} to be visible")
    return ws


def receive(ws, timeout: float = 5.0) -> str | None:
    try:
        return ws.recv(timeout=timeout)
    except TimeoutError:
        return None


def delivered(sender, receiver, text: str) -> bool:
    """Send ``text``; true if ``receiver`` has it within half a second."""
    sender.send(text)
    return receive(receiver, 0.5) == text


def notice_arrives(ws, probe: str) -> bool:
    """Send ``probe``; true if the PEER-UNAVAILABLE notice comes back within 0.2 s."""
    ws.send(probe)
    return receive(ws, 0.2) == PEER_UNAVAILABLE_NOTICE


def test_messages_cross_nodes_both_ways_and_connections_see_the_cluster(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice = join(stack, one, "alice", "bob")
        bob = join(stack, two, "bob", "alice", seen_from=one)
        alice.send("offer")
        assert receive(bob) == "offer"
        bob.send("answer")
        assert receive(alice) == "answer"
        for n in range(150):  # order holds across nodes (within the rate-limit burst)
            alice.send(f"candidate {n}")
        assert [receive(bob) for _ in range(150)] == [f"candidate {n}" for n in range(150)]
        assert [c["peer"] for c in connections(one, "bob")] == ["alice"]
        assert [c["peer"] for c in connections(two, "alice")] == ["bob"]
        # A peer whose only socket talks to someone else is unavailable, wherever it is.
        carol = join(stack, one, "carol", "bob")
        carol.send("hello?")
        assert receive(carol) == PEER_UNAVAILABLE_NOTICE
        # A clean stop is not an outage: no warning, no message counted as lost.
        for server in (two, one):
            assert server.stop() == 0
            assert "lost Redis" not in server.output(), server.output()


def test_a_killed_node_stops_counting_at_once_and_is_forgotten_within_the_ttl(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice = join(stack, one, "alice", "bob")
        join(stack, two, "bob", "alice", seen_from=one)
        os.kill(two.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        # The kernel closes its Redis connections, so its subscriptions go at once.
        took = wait_until(lambda: notice_arrives(alice, "probe"), NODE_TTL, "PEER-UNAVAILABLE after SIGKILL")
        assert took < 1.5  # at once, give or take a loaded machine
        # Its registry entries go once its presence expires (node_ttl + a refresh period).
        wait_until(lambda: connections(one, "bob") == [], NODE_TTL * 4 / 3 + 2, "bob to leave /connections")


def test_a_frozen_node_is_unreachable_within_the_bound_reaped_within_the_ttl_and_rejoins_when_it_wakes(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice = join(stack, one, "alice", "bob")
        bob = join(stack, two, "bob", "alice", seen_from=one)
        pid = two.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)  # no FIN: its connections stay open, as with a lost machine
        try:
            # Redis still counts its subscriptions, but it gives no receipt and falls silent:
            # within DELIVERY_BOUND (2 s) its sockets count as unreachable.
            start = time.monotonic()
            alice.send("probe while frozen")
            assert receive(alice, 3.0) == PEER_UNAVAILABLE_NOTICE
            assert time.monotonic() - start < 2.0 + 0.5  # the bound, give or take a loaded machine
            alice.send("probe while counted down")
            assert receive(alice, 0.5) == PEER_UNAVAILABLE_NOTICE  # at once now
            # It is reaped, as before: its sockets leave the directory.
            wait_until(lambda: connections(one, "bob") == [], NODE_TTL * 4 / 3 + 2, "the frozen node to be reaped")
        finally:
            os.kill(pid, signal.SIGCONT)
        # Awake again, it reconnects, resubscribes and registers its sockets by itself.
        wait_until(lambda: connections(one, "bob") != [], 10, "the node to rejoin")
        while receive(bob, 0.5) is not None:
            pass  # the first probe, which reached it before it froze further
        wait_until(lambda: delivered(alice, bob, "welcome back"), 10, "alice's message to reach bob again")


def test_redis_restarting_keeps_local_delivery_and_the_cluster_recovers(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice = join(stack, one, "alice", "bob")
        bob = join(stack, two, "bob", "alice", seen_from=one)
        carol = join(stack, one, "carol", "dave")
        dave = join(stack, one, "dave", "carol")
        redis.stop()
        # Same node: delivered as always.
        carol.send("local while Redis is down")
        assert receive(dave) == "local while Redis is down"
        # Across nodes: not delivered, and the sender is told the peer is unavailable.
        alice.send("lost while Redis is down")
        assert receive(alice) == PEER_UNAVAILABLE_NOTICE
        assert receive(bob, 0.5) is None
        # A socket opened meanwhile serves at once (it does not wait for the backplane).
        started = time.monotonic()
        erin = stack.enter_context(connect(f"{one.ws}/wscall?id=erin&peer_id=frank"))
        erin.send("anyone?")
        assert receive(erin) == PEER_UNAVAILABLE_NOTICE
        assert time.monotonic() - started < 1.5
        redis.start()  # the same port, empty: no persistence
        took = wait_until(lambda: connections(one, "bob") != [], 15, "the nodes to reconnect and re-register")
        alice.send("after the restart")
        assert receive(bob) == "after the restart"
        bob.send("and back")
        assert receive(alice) == "and back"
        print(f"\ncluster recovered {took:.1f} s after Redis came back")


def test_processes_share_one_port_and_stop_together(redis):
    with node(redis, "--processes", "2") as server, ExitStack() as stack:
        workers = wait_until(lambda: len(set(re.findall(r"listening on \S+ \(pid (\d+)", server.output()))) == 2, 15, "2 workers")
        assert workers < 15
        pairs = []
        for n in range(12):  # the kernel spreads these connections over both workers
            a = join(stack, server, f"a{n}", f"b{n}")
            b = join(stack, server, f"b{n}", f"a{n}")
            pairs.append((a, b))
        for n, (a, b) in enumerate(pairs):
            a.send(f"hello {n}")
            assert receive(b) == f"hello {n}"
        # Each worker listens on its own socket (SO_REUSEPORT): the kernel spreads the
        # connections over both, where one shared socket let bursts pile onto one worker.
        from routing.redis.shards import tag

        with redis.client() as client:
            places = [client.hvals(f"webrtc:dir:{tag(f'{side}{n}')}")[0].split("\0")[0] for side in "ab" for n in range(12)]
        assert sorted(places.count(node) for node in set(places))[0] >= 3, places
        assert server.stop(signal.SIGTERM) == 0
        for a, _ in pairs:
            with pytest.raises(ConnectionClosed) as closed:
                a.recv(timeout=10)
            assert closed.value.rcvd.code == 1001
        assert "all workers stopped" in server.output()


def test_processes_without_redis_is_a_one_line_error():
    result = run_cli("start", "0", "--processes", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "webrtc_server.py: error: --processes above 1 needs the Redis backplane (--redis URL or WEBRTC_REDIS_URL)"
    ]


def test_workers_stop_when_their_parent_is_killed(redis):
    with node(redis, "--processes", "2") as server:
        wait_until(lambda: len(set(re.findall(r"listening on \S+ \(pid (\d+)", server.output()))) == 2, 15, "2 workers")
        workers = [int(pid) for pid in set(re.findall(r"listening on \S+ \(pid (\d+)", server.output()))]
        os.kill(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

        wait_until(lambda: all(gone(pid) for pid in workers), 15, "the orphaned workers to stop")


def ice_pass_of_a_page(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.http}/call?id=alice&peer_id=bob", timeout=10) as response:
        page = response.read().decode()
    config = re.search(r'<script type="application/json" id="page-config">(.*?)</script>', page, re.S)
    assert config, page[:2000]
    return json.loads(config.group(1))["icePass"]


def ice_status(server: ServerProcess, token: str) -> int:
    request = urllib.request.Request(f"{server.http}/ice_servers", data=token.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_nodes_of_one_backplane_share_the_generated_ice_token(redis):
    # No ICE_ACCESS_TOKEN: each process generates one, and the first node's is used by all.
    with node(redis) as one, node(redis) as two, ServerProcess(env={"WEBRTC_ICE_SERVERS": "[]"}) as alone:
        token = ice_pass_of_a_page(one)
        assert ice_pass_of_a_page(two) == token
        assert ice_status(two, token) == 200  # a page from one node, its ICE from another
        assert ice_status(one, ice_pass_of_a_page(two)) == 200
        # A server without the backplane keeps a token of its own.
        assert ice_pass_of_a_page(alone) != token
        assert ice_status(alone, token) == 403
        for server in (one, two, alone):
            assert token not in server.output()  # never logged


def test_a_node_started_while_redis_is_unreachable_says_one_thing_and_takes_the_shared_token_later(redis):
    with node(redis) as one:
        token = ice_pass_of_a_page(one)
        redis.stop()
        with node(redis) as two:
            two.wait_for_line("ICE_ACCESS_TOKEN is not set")
            lines = [line for line in two.output().splitlines() if "ICE_ACCESS_TOKEN" in line or "agree" in line]
            assert len(lines) == 1, lines  # one line, which does not claim what did not happen
            assert "this node's own until Redis answers" in lines[0]
            assert "shared by the nodes" not in lines[0]
            assert ice_pass_of_a_page(two) != token
            redis.start()
            # Once Redis answers (empty: it restarted), the nodes agree on one token again,
            # the one the first node to re-register stores; each takes it.
            wait_until(lambda: ice_pass_of_a_page(two) == ice_pass_of_a_page(one), 20, "the nodes to agree on one token")
            agreed = ice_pass_of_a_page(one)
            assert ice_status(two, agreed) == 200 and ice_status(one, agreed) == 200


def metric_lines(server: ServerProcess, name: str) -> list[str]:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return [line for line in lines if line.startswith((name + "{", name + " "))]


def test_one_metrics_scrape_reports_every_worker_and_log_lines_say_which_worker(redis):
    with node(redis, "--processes", "3") as server, ExitStack() as stack:
        wait_until(lambda: len(set(re.findall(r"listening on \S+ \(pid (\d+)", server.output()))) == 3, 15, "3 workers")
        for n in range(10):
            join(stack, server, f"m{n}", f"n{n}")
        for _ in range(6):  # whichever worker a scrape reaches, it reports them all
            open_sockets = metric_lines(server, "webrtc_open_sockets")
            workers = sorted(re.search(r'worker="(\d+)"', line).group(1) for line in open_sockets)  # type: ignore[union-attr]
            assert workers == ["0", "1", "2"], open_sockets
            assert sum(float(line.rsplit(" ", 1)[1]) for line in open_sockets) == 10
            nodes = metric_lines(server, "webrtc_node_info")
            assert len({re.search(r'node="(\w+)"', line).group(1) for line in nodes}) == 3, nodes  # type: ignore[union-attr]
            assert len(metric_lines(server, "process_resident_memory_bytes")) == 3
        for number in range(3):
            assert re.search(rf"^\S+ \S+ INFO worker {number} webrtc_app: webrtc_app listening on", server.output(), re.M)


def test_a_node_that_hears_nothing_from_redis_says_so_and_serves_its_own_sockets(redis):
    with node(redis) as one, ExitStack() as stack:
        carol = join(stack, one, "carol", "dave")
        dave = join(stack, one, "dave", "carol")
        with urllib.request.urlopen(f"{one.http}/healthz?ready=1", timeout=5) as response:
            assert json.load(response) == {"status": "ok", "ready": True}
        os.kill(redis.pid, signal.SIGSTOP)  # nothing closes: Redis just stops answering
        try:
            start = time.monotonic()
            one.wait_for_line(r"heard nothing from Redis for 1\.\d s: this node is cut off", 5)
            assert time.monotonic() - start < 2.5  # within DELIVERY_BOUND, give or take a loaded machine
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{one.http}/healthz?ready=1", timeout=5)
            assert refused.value.code == 503
            assert json.load(refused.value) == {"status": "ok", "ready": False, "why": "hears nothing from Redis (cut off)"}
            with urllib.request.urlopen(f"{one.http}/healthz", timeout=5) as response:  # alive: not to be restarted
                assert json.load(response)["ready"] is False
            with urllib.request.urlopen(f"{one.http}/metrics", timeout=5) as response:
                assert "webrtc_backplane_cut_off 1.0" in response.read().decode()
            carol.send("local as ever")
            assert receive(dave) == "local as ever"
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        one.wait_for_line("hears Redis again: no longer cut off", 10)
        wait_until(lambda: ready(one), 10, "the node to be ready again")


def ready(server: ServerProcess) -> bool:
    try:
        with urllib.request.urlopen(f"{server.http}/healthz?ready=1", timeout=5) as response:
            return json.load(response)["ready"]
    except urllib.error.HTTPError:
        return False


def raw_alice_and_bob(stack: ExitStack, one: ServerProcess, two: ServerProcess):
    """alice on node one over a raw socket (she answers the close only when told), bob on node two."""
    alice = RawWebSocket("127.0.0.1", one.port, "/wscall?id=alice&peer_id=bob")
    stack.callback(alice.close)
    assert alice.status == 101
    wait_until(lambda: any(c["peer"] == "bob" for c in connections(one, "alice")), 10, "alice to be visible")
    return alice, join(stack, two, "bob", "alice", seen_from=one)


def shutdown_close(alice: RawWebSocket, one: ServerProcess) -> bytes:
    """SIGTERM node one; answers the payload of the close alice gets (not answered yet)."""
    one.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    opcode, payload = alice.read_frame()
    assert opcode == CLOSE and payload[2:] == b"SERVER-SHUTDOWN"
    return payload


def test_what_a_client_sent_before_it_saw_the_shutdowns_close_still_reaches_its_peer(redis):
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = raw_alice_and_bob(stack, one, two)
        payload = shutdown_close(alice, one)
        # Frames already on their way when the close came: the server relays them still.
        alice.send(frame(TEXT, b"sent before alice saw the close"))
        alice.send(frame(CLOSE, payload[:2]))
        assert receive(bob) == "sent before alice saw the close"
        assert one.proc.wait(15) == 0  # type: ignore[union-attr]


def shard_subscribers(redis: RedisServer, channel: str) -> int:
    with redis.client() as client:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


def test_a_stopping_node_leaves_the_joins_elsewhere_before_it_closes_its_sockets(redis):
    # A join waits for every node subscribed to its ids' events to acknowledge it; a node that is
    # shutting down must not be one of them (the sockets it closes reconnect elsewhere at once).
    events = Keys("webrtc:", "").events("alice")
    with node(redis) as one, node(redis) as two, ExitStack() as stack:
        alice, bob = raw_alice_and_bob(stack, one, two)
        assert shard_subscribers(redis, events) == 2  # both nodes mirror alice
        payload = shutdown_close(alice, one)
        # alice does not answer the close yet: node one waits for it (SHUTDOWN_TIMEOUT), and
        # meanwhile only node two listens to alice's events.
        assert shard_subscribers(redis, events) == 1
        again = join(stack, two, "alice", "bob")
        assert delivered(again, bob, "alice again, on node two")
        alice.send(frame(CLOSE, payload[:2]))
        assert one.proc.wait(15) == 0  # type: ignore[union-attr]


def test_a_stopping_node_tells_the_senders_of_what_it_could_not_deliver_wherever_they_reconnected(redis):
    # alice's last message leaves node one for bob's node two, which froze: no receipt comes.
    # Node one is shutting down and alice is already on node three; node one must not exit
    # with it unanswered: her conversation hears PEER-UNAVAILABLE there, within the bound.
    with node(redis) as one, node(redis) as two, node(redis) as three, ExitStack() as stack:
        alice, bob = raw_alice_and_bob(stack, one, two)
        pid = two.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            payload = shutdown_close(alice, one)
            alice.send(frame(TEXT, b"sent as node one closed"))
            sent = time.monotonic()
            alice.send(frame(CLOSE, payload[:2]))
            again = stack.enter_context(connect(f"{three.ws}/wscall?id=alice&peer_id=bob"))
            assert receive(again, 3.0) == PEER_UNAVAILABLE_NOTICE
            assert time.monotonic() - sent < 2.0 + 0.5  # the bound, give or take a loaded machine
            assert one.proc.wait(15) == 0  # type: ignore[union-attr]
        finally:
            os.kill(pid, signal.SIGCONT)


def test_while_the_backplane_is_behind_new_sockets_are_asked_to_come_back_later(redis):
    # A beat that comes back slow says Redis (or this node) is behind: a reconnection storm
    # must not add every socket's join to it while the conversations going on wait.
    with node(redis) as one, ExitStack() as stack:
        alice = join(stack, one, "alice", "bob")
        bob = join(stack, one, "bob", "alice")
        assert not refused_with(one, 1013, "SERVER-BUSY")
        os.kill(redis.pid, signal.SIGSTOP)
        time.sleep(0.9)  # slower than a quarter of the bound, not long enough to be cut off
        os.kill(redis.pid, signal.SIGCONT)
        wait_until(lambda: refused_with(one, 1013, "SERVER-BUSY"), 1.0, "a new socket to be refused as busy")
        assert delivered(alice, bob, "the sockets already open go on")
        # For the liveness wait (1.4 s) after the last slow beat; then they are taken again.
        wait_until(lambda: not refused_with(one, 1013, "SERVER-BUSY"), 3.0, "new sockets to be taken again")
        assert "server-busy" in " ".join(metric_lines(one, "webrtc_sockets_rejected_total"))
