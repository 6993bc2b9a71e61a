"""Live membership with real processes: regions join and leave, leaders fail, clusters restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from plexus import Client
from plexus.errors import FailedPrecondition
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import Cluster, eventually, free_port
from tests.test_federation import (
    all_links_up,
    consume_all,
    knows_interest,
    receive,
    views_agree,
)

NAMES = ["us", "eu", "ap"]
LINKS = [("us", "eu"), ("eu", "ap"), ("us", "ap")]


@pytest.fixture
def cluster(tmp_path: Path):
    made = Cluster(tmp_path / "c", NAMES, LINKS, raft=True)
    made.start()
    yield made
    made.close()


async def membership(cluster: Cluster, region: str) -> pb.MembershipInfo:
    async with grpc.aio.insecure_channel(cluster.address(region)) as channel:
        return await rpc.AdminStub(channel).GetMembership(pb.MembershipRequest())


async def admin(cluster: Cluster, region: str):
    channel = grpc.aio.insecure_channel(cluster.address(region))
    return channel, rpc.AdminStub(channel)


async def leader(cluster: Cluster, among: list[str]) -> str:
    """The region whose node is the Raft leader, once one is elected."""
    found: list[str] = []

    async def elected() -> bool:
        for region in among:
            try:
                if (await membership(cluster, region)).raft_role == "leader":
                    found.append(region)
                    return True
            except grpc.aio.AioRpcError:
                continue
        return False

    await eventually(elected, 10, "a Raft leader")
    return found[-1]


async def test_a_region_added_live_receives_events_published_elsewhere(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    await leader(cluster, NAMES)
    cluster.join("sa", via="eu", links=["us"])
    await all_links_up(cluster, [("sa", "us")])
    async with (
        await Client.connect(cluster.address("sa")) as sa,
        await Client.connect(cluster.address("ap")) as ap,
        sa.subscribe("live/>") as sub,
    ):
        await knows_interest(cluster, "ap", "sa", "live/>")
        for i in range(300):
            await ap.publish(f"live/{i}", b"%d" % i)
        got = await receive(sub, 300)
    assert [e.payload for e in got] == [b"%d" % i for i in range(300)]
    names = {r.name for r in (await membership(cluster, "us")).regions}
    assert names == {"us", "eu", "ap", "sa"}


async def test_a_region_removed_live_is_gone_and_the_others_lose_nothing(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    await leader(cluster, NAMES)
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("stay", ["rm/>"])
        await knows_interest(cluster, "us", "eu", "rm/>")
        acks = [us.publish_nowait(f"rm/{i}", b"%d" % i, guaranteed=True) for i in range(500)]
        channel, stub = await admin(cluster, "us")
        async with channel:
            reply = await stub.RemoveRegion(pb.RemoveRegionRequest(name="ap"))
        assert {r.name for r in reply.regions} == {"us", "eu"}
        acks += [us.publish_nowait(f"rm/{i}", b"%d" % i, guaranteed=True) for i in range(500, 1000)]
        await asyncio.gather(*acks)
        cluster.nodes["ap"].proc.wait(10)  # ap stopped itself
        got = await consume_all(eu, "stay", expected=1000)
    assert sorted(d.payload for d in got) == sorted(b"%d" % i for i in range(1000))
    assert "ap" not in {r.name for r in (await membership(cluster, "eu")).regions}


async def test_removing_the_raft_leaders_region_works(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    chief = await leader(cluster, NAMES)
    other = next(n for n in NAMES if n != chief)
    channel, stub = await admin(cluster, other)
    async with channel:
        await stub.RemoveRegion(pb.RemoveRegionRequest(name=chief))
    rest = [n for n in NAMES if n != chief]
    new = await leader(cluster, rest)
    assert new in rest
    assert chief not in {r.name for r in (await membership(cluster, new)).regions}


async def test_a_region_cannot_remove_itself_and_unknown_regions_are_named(cluster: Cluster):
    await leader(cluster, NAMES)
    channel, stub = await admin(cluster, "us")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError, match="cannot remove itself"):
            await stub.RemoveRegion(pb.RemoveRegionRequest(name="us"))
        with pytest.raises(grpc.aio.AioRpcError, match="'mars'"):
            await stub.RemoveRegion(pb.RemoveRegionRequest(name="mars"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddRegion(pb.AddRegionRequest(region=pb.RegionMember(name="x"), proof=b"no"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_killing_the_raft_leader_elects_another_and_changes_work_again(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    chief = await leader(cluster, NAMES)
    cluster.kill(chief)
    rest = [n for n in NAMES if n != chief]
    await leader(cluster, rest)
    a, b = rest
    channel, stub = await admin(cluster, a)
    async with channel:
        reply = await stub.RemoveLink(pb.LinkChangeRequest(a=a, b=b))
    assert f"{min(a, b)}-{max(a, b)}" not in reply.links


@pytest.mark.slow
async def test_a_full_restart_keeps_membership_queues_and_spooled_events(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    await leader(cluster, NAMES)
    channel, stub = await admin(cluster, "us")
    async with channel:
        await stub.RemoveLink(pb.LinkChangeRequest(a="us", b="ap"))
    async with await Client.connect(cluster.address("ap")) as ap:
        await ap.create_queue("kept", ["keep/>"])
    await knows_interest(cluster, "us", "ap", "keep/>")
    channel, stub = await admin(cluster, "eu")
    async with channel:
        await stub.SetLink(pb.SetLinkRequest(peer="ap", up=False))  # events wait in eu's spool
    async with await Client.connect(cluster.address("us")) as us:
        for i in range(200):
            await us.publish(f"keep/{i}", b"%d" % i, guaranteed=True)
    for region in NAMES:
        cluster.nodes[region].stop()
    for region in NAMES:
        cluster.restart(region)
    await all_links_up(cluster, [("us", "eu"), ("eu", "ap")])

    async def restored() -> bool:
        # The journal is replayed once a leader is elected again.
        infos = [await membership(cluster, region) for region in NAMES]
        return all("ap-us" not in info.links for info in infos)

    await eventually(restored, 10, "every region to replay the membership journal")
    info = await membership(cluster, "ap")
    assert {r.name for r in info.regions} == set(NAMES)
    await views_agree(cluster, NAMES)
    async with await Client.connect(cluster.address("ap")) as ap:
        got = await consume_all(ap, "kept", expected=200)
    assert sorted(d.payload for d in got) == sorted(b"%d" % i for i in range(200))


async def test_a_node_joining_with_the_wrong_secret_is_refused_with_one_line(
    cluster: Cluster, tmp_path: Path
):
    await leader(cluster, NAMES)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(cluster.file.read_text().replace(cluster.secret, "a-wrong-secret-of-24-byte"))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "node", "run", "--cluster", str(wrong), "--region", "zz",
         "--join", cluster.address("us"), "--raft", f"127.0.0.1:{free_port()}",
         "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "zz")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "does not know the cluster secret" in result.stderr
    assert "zz" not in {r.name for r in (await membership(cluster, "us")).regions}


async def test_killing_a_follower_during_a_membership_change_leaves_the_cluster_consistent(
    cluster: Cluster,
):
    await all_links_up(cluster, LINKS)
    chief = await leader(cluster, NAMES)
    follower = next(n for n in NAMES if n != chief)
    channel, stub = await admin(cluster, chief)
    async with channel:
        change = asyncio.ensure_future(stub.RemoveLink(pb.LinkChangeRequest(a="us", b="eu")))
        cluster.kill(follower)
        await change  # two of three voters remain: the change commits
    cluster.restart(follower)

    async def agreed() -> bool:
        infos = [await membership(cluster, n) for n in NAMES]
        return all("eu-us" not in info.links for info in infos)

    await eventually(agreed, 15, "the restarted follower to catch up")


@pytest.mark.slow
async def test_three_regions_vote_by_default_followers_forward_changes_and_replace_a_voter(
    tmp_path: Path,
):
    names = ["a", "b", "c", "d", "e", "f", "g"]
    ring = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    big = Cluster(tmp_path / "big", names, ring, raft=True)
    big.start()
    try:
        await leader(big, names[:3])

        async def roles() -> dict[str, str]:
            return {n: (await membership(big, n)).raft_role for n in names if n in big.nodes}

        async def three_voters() -> bool:
            seen = await roles()
            return sorted(n for n, r in seen.items() if r == "non-voter") == ["d", "e", "f", "g"]

        await eventually(three_voters, 15, "a-c to vote and d-g to follow")
        channel, stub = await admin(big, "b")
        async with channel:
            await stub.AddLink(pb.LinkChangeRequest(a="a", b="d"))
            follower_channel, follower = await admin(big, "g")
            async with follower_channel:  # a follower hands the change to a voter
                await follower.AddLink(pb.LinkChangeRequest(a="b", b="e"))
                with pytest.raises(grpc.aio.AioRpcError, match="no region named 'zz'"):
                    await follower.RemoveRegion(pb.RemoveRegionRequest(name="zz"))

            async def followed() -> bool:
                return {"a-d", "b-e"} <= set((await membership(big, "g")).links)

            await eventually(followed, 10, "the follower g to see the new links")
            big.join("h", via="g", links=["g"])  # joining through a follower, too
            await all_links_up(big, [("g", "h")])
            await stub.RemoveRegion(pb.RemoveRegionRequest(name="a"))

        async def promoted() -> bool:
            info = await membership(big, "d")
            return info.raft_role in ("leader", "follower") and bool(info.raft_leader)

        await eventually(promoted, 15, "d to be promoted to a Raft voter")
        channel, stub = await admin(big, "d")
        async with channel:
            reply = await stub.RemoveLink(pb.LinkChangeRequest(a="c", b="d"))
        assert "c-d" not in reply.links
    finally:
        big.close()


async def test_a_one_region_cluster_grows_region_by_region(tmp_path: Path):
    solo = Cluster(tmp_path / "solo", ["aa"], [], raft=True)
    solo.start()
    try:
        await leader(solo, ["aa"])
        solo.join("bb", via="aa", links=["aa"])
        solo.join("cc", via="aa", links=["bb"])
        await all_links_up(solo, [("aa", "bb"), ("bb", "cc")])

        async def three_voters() -> bool:
            info = await membership(solo, "cc")
            return {r.name for r in info.regions if r.voter} == {"aa", "bb", "cc"}

        await eventually(three_voters, 10, "three voting regions")
        channel, stub = await admin(solo, "cc")
        async with channel:
            reply = await stub.AddLink(pb.LinkChangeRequest(a="aa", b="cc"))
        assert "aa-cc" in reply.links
    finally:
        solo.close()


async def test_a_leaving_region_refuses_publishes_while_it_drains(cluster: Cluster):
    await all_links_up(cluster, LINKS)
    async with await Client.connect(cluster.address("eu")) as eu:
        await eu.create_queue("drain", ["dr/>"])
    await knows_interest(cluster, "us", "eu", "dr/>")
    channel, us_admin = await admin(cluster, "us")
    async with channel, await Client.connect(cluster.address("us")) as us:
        await us_admin.SetLink(pb.SetLinkRequest(peer="eu", up=False))
        await us_admin.SetLink(pb.SetLinkRequest(peer="ap", up=False))
        await us.publish("dr/x", b"spooled", guaranteed=True)  # waits in us's spool
        leaving = asyncio.ensure_future(
            us_admin.Shutdown(pb.ShutdownRequest(drain_timeout_ms=1500))
        )

        async def refused() -> bool:
            try:
                await us.publish("dr/y", b"late", guaranteed=True)
            except FailedPrecondition as exc:
                return "leaving the cluster" in str(exc)
            return False

        await eventually(refused, 5, "us to refuse publishes while it drains")
        reply = await leaving
    assert reply.spooled_left >= 1  # reported, not silently dropped
