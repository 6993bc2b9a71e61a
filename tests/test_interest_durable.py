"""A region killed (-9) and restarted routes by the interest it last knew until its links sync."""

from __future__ import annotations

from pathlib import Path

import grpc
import lmdb
import pytest

from plexus import Client
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from storage.interest import decode
from tests.harness import Cluster, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EVENTS = 200
WAIT_S = 15.0


async def _links(cluster: Cluster, region: str) -> pb.ListLinksResponse:
    async with grpc.aio.insecure_channel(cluster.address(region)) as channel:
        return await rpc.AdminStub(channel).ListLinks(pb.ListLinksRequest())


async def _set_link(cluster: Cluster, region: str, peer: str, up: bool) -> None:
    async with grpc.aio.insecure_channel(cluster.address(region)) as channel:
        await rpc.AdminStub(channel).SetLink(pb.SetLinkRequest(peer=peer, up=up))


async def _link_state(cluster: Cluster, region: str, peer: str) -> str:
    return {link.peer: link.state for link in (await _links(cluster, region)).links}.get(peer, "")


async def _knows(cluster: Cluster, region: str, of: str, pattern: str) -> bool:
    interest = {i.region: set(i.patterns) for i in (await _links(cluster, region)).interest}
    return pattern in interest.get(of, set())


def _kept(cluster: Cluster, region: str) -> dict[str, frozenset[str]]:
    """What `region` has written to disk of other regions' interest (read alongside the node)."""
    path = cluster.root / region / "lmdb"
    with lmdb.open(str(path), readonly=True, max_dbs=8, lock=True) as env:
        try:
            db = env.open_db(b"interest", create=False)
        except lmdb.NotFoundError:
            return {}
        with env.begin(db=db) as txn:
            return {
                key.decode(): frozenset(decode(key.decode(), value).patterns)
                for key, value in txn.cursor()
            }


@pytest.fixture
def cluster(tmp_path: Path):
    made = Cluster(tmp_path, ["eu", "us"], [("eu", "us")])
    made.start()
    yield made
    made.close()


async def _link_up(cluster: Cluster) -> None:
    async def up() -> bool:
        return await _link_state(cluster, "us", "eu") == "up"

    await eventually(up, WAIT_S, "the link us-eu up")


@pytest.mark.parametrize("hold_link", [True, False], ids=["link-held-down", "link-racing"])
async def test_eu_queue_gets_us_events_published_after_us_restarts_before_the_link_syncs(
    cluster: Cluster, hold_link: bool
) -> None:
    async with await Client.connect(cluster.address("eu")) as eu:
        await eu.create_queue("far", ["orders/>"])
    await eventually(lambda: _knows(cluster, "us", "eu", "orders/>"), WAIT_S, "us to learn eu's")
    await eventually(
        lambda: "orders/>" in _kept(cluster, "us").get("eu", ()), WAIT_S, "us to keep eu's"
    )

    # eu keeps the link down: us comes back knowing only what it kept of eu's interest.
    if hold_link:
        await _set_link(cluster, "eu", "us", up=False)
    cluster.kill("us")
    cluster.restart("us")
    async with await Client.connect(cluster.address("us")) as us:
        acked = [await us.publish(f"orders/{i}", b"%d" % i, guaranteed=True) for i in range(EVENTS)]
        assert all(isinstance(event_id, int) for event_id in acked)
        if hold_link:
            assert await _link_state(cluster, "us", "eu") != "up", "published before link sync"

    if hold_link:
        await _set_link(cluster, "eu", "us", up=True)
    await _link_up(cluster)
    async with await Client.connect(cluster.address("eu")) as eu:
        depth = 0

        async def all_stored() -> bool:
            nonlocal depth
            depth = (await eu.describe_queue("far")).depth
            return depth >= EVENTS

        try:
            await eventually(all_stored, WAIT_S, "eu's queue to get every event")
        except AssertionError:
            raise AssertionError(f"eu's queue got {depth} of {EVENTS} events") from None
        assert depth == EVENTS, f"eu's queue got {depth} of {EVENTS} events"


async def test_events_spooled_for_interest_eu_dropped_while_cut_off_are_dropped_there_quietly(
    cluster: Cluster,
) -> None:
    async with await Client.connect(cluster.address("eu")) as eu:
        await eu.create_queue("far", ["orders/>"])
        await eventually(
            lambda: _knows(cluster, "us", "eu", "orders/>"), WAIT_S, "us to learn eu's"
        )
        await _set_link(cluster, "eu", "us", up=False)
        await eu.delete_queue("far")  # us cannot hear of it: it keeps spooling for eu
    async with await Client.connect(cluster.address("us")) as us:
        for i in range(EVENTS):
            await us.publish(f"orders/{i}", b"%d" % i, guaranteed=True)
    spooled = {link.peer: link.spool_depth for link in (await _links(cluster, "us")).links}
    assert spooled["eu"] == EVENTS

    await _set_link(cluster, "eu", "us", up=True)
    await _link_up(cluster)

    async def drained() -> bool:
        links = (await _links(cluster, "us")).links
        return {link.peer: link.spool_depth for link in links}["eu"] == 0

    await eventually(drained, WAIT_S, "us's spool for eu acked")

    async def synced() -> bool:
        return not await _knows(cluster, "us", "eu", "orders/>")

    await eventually(synced, WAIT_S, "us to sync eu's interest")
    async with await Client.connect(cluster.address("eu")) as eu:
        assert await eu.list_queues() == []
    eu_log = cluster.nodes["eu"].log_path.read_text()
    assert " ERROR " not in eu_log and "Traceback" not in eu_log, eu_log[-2000:]
