"""A link flapped many times between real regions while every core is busy.

Both ends must log each transition exactly once (up, down, up, ... the same
count on each side), no gRPC call error or traceback may appear, both ends'
metrics must agree at the end, and the flapping must not cost a Raft
election (the term and leader stay the same).

`PLEXUS_LINK_FLAPS` sets the number of down/up cycles (default 120, ~12 s; 300 took 30 s
on 2 busy cores; 500 passed in 45 s). Each cycle waits for both ends to see the
link down, then up. Against the links of before this test, the acceptor kept
reporting a link up after the dialler's cancelled call ended it (stuck within
40 cycles), a region logged "is up" twice in a row, grpc failed writes on
cancelled calls with a traceback, and the Raft term moved.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from plexus import Client
from tests.harness import Cluster, eventually
from tests.test_metrics import scrape, value

pytestmark = [pytest.mark.slow, pytest.mark.solo, pytest.mark.timeout(900)]

FLAPS = int(os.environ.get("PLEXUS_LINK_FLAPS", "120"))
REGIONS = ["us", "eu", "ap"]
LINKS = [("eu", "us"), ("eu", "ap"), ("us", "ap")]
STATE_DEADLINE_S = 30.0
TRANSITION = re.compile(r"link (\w+)-(\w+) is (up|down)\b")


@contextmanager
def saturated_cpu() -> Iterator[None]:
    """One busy-looping process per core, killed on the way out."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
        for proc in spinners:
            proc.wait(10)


def transitions(log: Path, region: str, peer: str) -> list[str]:
    found = []
    for line in log.read_text().splitlines():
        match = TRANSITION.search(line)
        if match and match.group(1, 2) == (region, peer):
            found.append(match.group(3))
    while found[:1] == ["down"]:  # dialled before the peer listened, at start-up
        found.pop(0)
    return found


async def link_state(client: Client, peer: str) -> str:
    link = (await client.list_links()).link(peer)
    assert link is not None
    return link.state


async def test_a_link_flapped_under_cpu_load_logs_each_transition_once_on_both_sides(
    tmp_path: Path,
) -> None:
    # Heartbeats every 0.5 s (dead after 1.5 s): with 0.1 s, a saturated CPU alone
    # makes links time out; here each transition is the test's own.
    cluster = Cluster(tmp_path / "c", REGIONS, LINKS, raft=True, heartbeat_ms=500)
    try:
        cluster.start()
        await flap(cluster)
    finally:
        cluster.close()


async def flap(cluster: Cluster) -> None:
    clients = {r: await Client.connect(cluster.address(r)) for r in REGIONS}
    try:

        async def all_up() -> bool:
            for a, b in LINKS:
                if await link_state(clients[a], b) != "up":
                    return False
                if await link_state(clients[b], a) != "up":
                    return False
            return True

        async def raft_agreed() -> bool:
            views = [(await clients[r].membership())["raft"] for r in REGIONS]
            return len({v["leader"] for v in views}) == 1 and bool(views[0]["leader"])

        await eventually(all_up, STATE_DEADLINE_S, "every link up")
        await eventually(raft_agreed, STATE_DEADLINE_S, "a Raft leader")
        before = (await clients["us"].membership())["raft"]

        async def both(state: str) -> bool:
            here = await link_state(clients["eu"], "us")
            there = await link_state(clients["us"], "eu")
            if state == "up":
                return here == there == "up"
            return "up" not in (here, there)

        with saturated_cpu():
            traffic = asyncio.create_task(direct_traffic(clients["us"], clients["eu"]))
            try:
                for cycle in range(FLAPS):
                    # Either end holds the link down: the dialler (eu) or the acceptor (us).
                    side, peer = ("eu", "us") if cycle % 2 == 0 else ("us", "eu")
                    await clients[side].set_link(peer, up=False)
                    await eventually(lambda: both("down"), STATE_DEADLINE_S, f"down #{cycle}")
                    await clients[side].set_link(peer, up=True)
                    await eventually(lambda: both("up"), STATE_DEADLINE_S, f"up #{cycle}")
            finally:
                traffic.cancel()
                await asyncio.gather(traffic, return_exceptions=True)

        after = (await clients["us"].membership())["raft"]
        assert (after["leader"], after["term"]) == (before["leader"], before["term"])
        for region in REGIONS:
            view = (await clients[region].membership())["raft"]
            assert view["term"] == before["term"], (region, view)
        metrics = {r: (await clients[r].node_info()).metrics_address for r in ("eu", "us")}
    finally:
        for client in clients.values():
            await client.close()

    # Logs: every cycle is one down and one up, in order, on both ends.
    expected = ["up"] + ["down", "up"] * FLAPS
    for region, peer in (("eu", "us"), ("us", "eu")):
        log = cluster.nodes[region].log_path
        assert transitions(log, region, peer) == expected, (region, log.read_text()[-3000:])
    for region in REGIONS:
        text = cluster.nodes[region].log_path.read_text()
        assert "Traceback" not in text and "GRPC_CALL_ERROR" not in text, text[-3000:]
    # Metrics: both ends see the link up (and nothing else), with no direct event
    # dropped for a full buffer, at the Raft term they started with.
    for region, peer in (("eu", "us"), ("us", "eu")):
        text = scrape(metrics[region])
        assert value(text, "plexus_link_state", peer=peer, state="up") == 1, text
        assert value(text, "plexus_link_state", peer=peer, state="down") == 0, text
        assert value(text, "plexus_link_state", peer=peer, state="connecting") == 0, text
        assert value(text, "plexus_link_direct_dropped_total", peer=peer) == 0
        assert value(text, "plexus_raft_term") == before["term"], text


async def direct_traffic(publisher: Client, subscriber: Client) -> None:
    """Direct events from us to a subscriber in eu for as long as the flapping lasts."""
    sub = subscriber.subscribe("flap/>")
    reader = asyncio.create_task(drain(sub))
    try:
        sequence = 0
        while True:
            sequence += 1
            await publisher.publish(f"flap/{sequence % 10}", b"x" * 256)
            if sequence % 50 == 0:
                await publisher.flush(timeout=20)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def drain(sub: object) -> None:
    async for _event in sub:  # type: ignore[attr-defined]
        pass


CRASHES = 5


def lifetimes(log: Path) -> list[Path]:
    """`log` split per process lifetime (a restarted node appends to the same file)."""
    parts = re.split(r"(?m)^.* INFO node\.server: node \w+ serving on .*$", log.read_text())
    paths = []
    for number, part in enumerate(parts[1:]):
        path = log.with_suffix(f".life{number}")
        path.write_text(part)
        paths.append(path)
    return paths


def alternates(states: list[str]) -> bool:
    return all(state == ("up" if i % 2 == 0 else "down") for i, state in enumerate(states))


async def test_a_follower_killed_and_restarted_under_load_leaves_exact_link_logs_and_no_election(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / "c", REGIONS, LINKS, raft=True, heartbeat_ms=500)
    try:
        cluster.start()
        clients = {r: await Client.connect(cluster.address(r)) for r in REGIONS}
        try:

            async def raft_agreed() -> bool:
                views = [(await clients[r].membership())["raft"] for r in REGIONS]
                return len({v["leader"] for v in views}) == 1 and bool(views[0]["leader"])

            await eventually(raft_agreed, STATE_DEADLINE_S, "a Raft leader")
            before = (await clients["ap"].membership())["raft"]
            roles = {r: (await clients[r].membership())["raft"]["role"] for r in ("eu", "us")}
            # Crash a follower of the eu-us link's two ends; the other one survives.
            victim = "us" if roles["us"] == "follower" else "eu"
            survivor = "eu" if victim == "us" else "us"

            async def state(region: str, peer: str) -> str:
                async with await Client.connect(cluster.address(region)) as client:
                    return await link_state(client, peer)

            with saturated_cpu():
                for crash in range(CRASHES):
                    for _ in range(5):
                        await clients[survivor].set_link(victim, up=False)
                        await eventually(
                            lambda: _is(state(survivor, victim), "down"), STATE_DEADLINE_S, "down"
                        )
                        await clients[survivor].set_link(victim, up=True)
                        for a, b in ((victim, survivor), (survivor, victim)):
                            # Both ends: a flap while one is connecting is no transition there.
                            await eventually(
                                lambda a=a, b=b: _is(state(a, b), "up"), STATE_DEADLINE_S, "up"
                            )
                    cluster.kill(victim)
                    await eventually(
                        lambda: _is(state(survivor, victim), "down"), STATE_DEADLINE_S, "crash seen"
                    )
                    await clients[victim].close()
                    cluster.restart(victim)
                    clients[victim] = await Client.connect(cluster.address(victim))
                    for a, b in ((victim, survivor), (survivor, victim)):
                        await eventually(
                            lambda a=a, b=b: _is(state(a, b), "up"),
                            STATE_DEADLINE_S,
                            f"up #{crash}",
                        )
            after = (await clients["ap"].membership())["raft"]
            assert (after["leader"], after["term"]) == (before["leader"], before["term"])
        finally:
            for client in clients.values():
                await client.close()
        check_crash_logs(cluster, survivor, victim)  # before close() takes links down
    finally:
        cluster.close()


def check_crash_logs(cluster: Cluster, survivor: str, victim: str) -> None:
    survived = transitions(cluster.nodes[survivor].log_path, survivor, victim)
    assert alternates(survived) and survived[-1] == "up", survived
    # Five operator flaps and one crash per round, each seen as one down and one up.
    assert len(survived) == 1 + 2 * 6 * CRASHES, survived
    for life in lifetimes(cluster.nodes[victim].log_path):
        states = transitions(life, victim, survivor)
        assert alternates(states), (life, states)
    for region in REGIONS:
        text = cluster.nodes[region].log_path.read_text()
        assert "Traceback" not in text and "GRPC_CALL_ERROR" not in text, text[-3000:]


async def _is(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]
