"""Operator logs: link down with its reason and up again, in the text format and as one
JSON object per line (node processes); a full queue logged once per fill (in-process)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import plexus
from node.server import Node
from plexus.errors import ResourceExhausted
from tests.harness import Cluster, NodeProcess, eventually, wait_for

pytestmark = pytest.mark.timeout(120)
DEADLINE_S = 20.0


def json_lines(node: NodeProcess) -> list[dict[str, Any]]:
    """The node's log lines (stderr), each of which must be one JSON object."""
    lines = [line for line in node.log_path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def events(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(node) if line.get("event") == event]


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    cluster = Cluster(tmp_path, ["us", "eu"], [("us", "eu")])
    yield cluster
    cluster.close()


def test_text_log_says_link_down_with_reason_then_up(pair: Cluster):
    pair.start()
    us = pair.nodes["us"]
    wait_for(lambda: "link us-eu is up" in us.log_path.read_text(), DEADLINE_S, "link up line")
    pair.kill("eu")
    down = re.compile(r" WARNING federation\.mesh: link us-eu is down: (stream_lost|peer_silent): ")
    wait_for(lambda: down.search(us.log_path.read_text()), DEADLINE_S, "link down line")
    pair.restart("eu")
    wait_for(lambda: us.log_path.read_text().count("link us-eu is up") == 2, DEADLINE_S, "up again")


def test_json_log_has_one_object_per_line_with_fields(
    pair: Cluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PLEXUS_LOG_FORMAT", "json")  # as `plexus up` hands it to its nodes
    pair.start()
    us = pair.nodes["us"]
    wait_for(lambda: events(us, "link_up"), DEADLINE_S, "link_up")
    pair.kill("eu")
    wait_for(lambda: events(us, "link_down"), DEADLINE_S, "link_down")
    (down,) = events(us, "link_down")
    assert down["level"] == "WARNING" and down["logger"] == "federation.mesh"
    assert (down["region"], down["peer"]) == ("us", "eu")
    assert down["reason"].split(":")[0] in ("stream_lost", "peer_silent")
    assert down["message"].startswith("link us-eu is down: ") and down["time"]
    pair.restart("eu")
    wait_for(lambda: len(events(us, "link_up")) == 2, DEADLINE_S, "link_up again")


async def test_full_queue_is_logged_once_per_fill(
    inproc_node: Node, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="node")

    def events(event: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == event]

    async with await plexus.Client.connect(inproc_node.address) as client:
        await client.create_queue("small", ["jobs/>"], max_depth=2)
        for n in range(2):
            await client.publish(f"jobs/{n}", b"x", guaranteed=True)
        for n in range(5):
            with pytest.raises(ResourceExhausted, match="queue 'small' is full"):
                await client.publish(f"jobs/{n}", b"x", guaranteed=True)
        async with client.consume("small") as consumer:
            async for delivery in consumer:
                await delivery.ack()
                break
        await eventually(lambda: events("queue_has_room"), DEADLINE_S, "room again")
    (full,) = events("queue_full")
    assert getattr(full, "queue", None) == "small" and full.levelname == "WARNING"
    assert "refusing publishes" in full.getMessage()


LEADER_LINE = re.compile(r"Raft leader changed: region (\w+) is now the leader \(term (\d+)\)")


def leaders(cluster: Cluster) -> list[tuple[str, int]]:
    """(region, term) of every "is now the leader" line in the cluster's node logs."""
    found = []
    for node in cluster.nodes.values():
        found += [(m[1], int(m[2])) for m in LEADER_LINE.finditer(node.log_path.read_text())]
    return found


@pytest.mark.slow
def test_leader_changes_and_regions_joining_and_leaving_are_logged(tmp_path: Path):
    names = ["us", "eu", "ap"]
    trio = Cluster(tmp_path, names, [("us", "eu"), ("eu", "ap"), ("us", "ap")], raft=True)
    trio.start()
    try:
        wait_for(lambda: leaders(trio), DEADLINE_S, "a leader line")
        first, term = max(leaders(trio), key=lambda found: found[1])
        trio.join("sa", via="us", links=["us"])
        joined = "region sa joined the cluster"
        wait_for(
            lambda: all(joined in trio.nodes[n].log_path.read_text() for n in names),
            DEADLINE_S,
            "every region to log that sa joined",
        )
        trio.kill(first)
        wait_for(
            lambda: any(t > term and r != first for r, t in leaders(trio)),
            DEADLINE_S,
            "another region to log that it leads",
        )
    finally:
        trio.close()


async def test_a_spool_over_80_percent_of_its_quota_is_logged_once_then_its_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PLEXUS_LOG_FORMAT", "json")
    pair = Cluster(
        tmp_path, ["us", "eu"], [("us", "eu")], settings={"link_spool_quota_bytes": 1 << 20}
    )
    pair.start()
    try:
        us = pair.nodes["us"]
        async with await plexus.Client.connect(pair.address("eu")) as eu:
            await eu.create_queue("far", ["spool/>"])
        async with await plexus.Client.connect(us.address) as client:

            async def eu_wants_it() -> bool:
                return any(r["queues"] for r in (await client.explain("spool/x"))[1:])

            await eventually(eu_wants_it, DEADLINE_S, "us to know eu's queue")
            pair.kill("eu")
            payload = b"x" * 1000
            for batch in range(20):  # up to ~1 MB against a 1 MiB quota: over 80 % first
                for n in range(50):
                    client.publish_nowait(f"spool/{batch}/{n}", payload, guaranteed=True)
                await client.flush()
                if events(us, "spool_high"):
                    break
            for n in range(20):  # more while high: no second line
                client.publish_nowait(f"spool/more/{n}", payload, guaranteed=True)
            await client.flush()
        (high,) = events(us, "spool_high")
        assert high["peer"] == "eu" and high["level"] == "WARNING"
        assert high["bytes"] > 0.8 * high["quota"]
        pair.restart("eu")
        wait_for(lambda: events(us, "spool_low"), DEADLINE_S, "the drain logged")
        assert len(events(us, "spool_high")) == 1
    finally:
        pair.close()
