"""A recorded join request replayed against a live cluster, and one with altered addresses."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from federation.join_proof import prove_join
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import Cluster, free_port
from tests.test_membership_live import LINKS, NAMES, leader, membership


@pytest.fixture
def cluster(tmp_path: Path):
    made = Cluster(tmp_path / "c", NAMES, LINKS, raft=True)
    made.start()
    yield made
    made.close()


async def genuine_join(stub: rpc.AdminStub, cluster: Cluster, name: str) -> pb.AddRegionRequest:
    """What a joining node that knows the secret sends, over a challenge from `stub`."""
    challenge = await stub.JoinChallenge(pb.JoinChallengeRequest())
    member = pb.RegionMember(
        name=name, grpc=f"127.0.0.1:{free_port()}", raft=f"127.0.0.1:{free_port()}"
    )
    request = pb.AddRegionRequest(region=member, nonce=challenge.nonce)
    return prove_join(cluster.secret, "test", request)


async def refused(stub: rpc.AdminStub, request: pb.AddRegionRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddRegion(request)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return err.value.details() or ""


async def test_a_replayed_join_request_is_refused(cluster: Cluster):
    await leader(cluster, NAMES)
    async with grpc.aio.insecure_channel(cluster.address("us")) as channel:
        stub = rpc.AdminStub(channel)
        recorded = await genuine_join(stub, cluster, "sa")
        await stub.AddRegion(recorded)
        assert "sa" in {r.name for r in (await membership(cluster, "us")).regions}
        await stub.RemoveRegion(pb.RemoveRegionRequest(name="sa", force=True))
        detail = await refused(stub, recorded)
    assert "'sa'" in detail and "already used" in detail
    assert "sa" not in {r.name for r in (await membership(cluster, "us")).regions}


async def test_a_join_whose_addresses_were_altered_is_refused(cluster: Cluster):
    await leader(cluster, NAMES)
    async with grpc.aio.insecure_channel(cluster.address("eu")) as channel:
        stub = rpc.AdminStub(channel)
        altered = await genuine_join(stub, cluster, "sa")
        altered.region.grpc = "203.0.113.9:7400"
        assert "proof does not hold" in await refused(stub, altered)
        elsewhere = await genuine_join(stub, cluster, "sa")
        elsewhere.links.append("us")
        assert "proof does not hold" in await refused(stub, elsewhere)
    assert "sa" not in {r.name for r in (await membership(cluster, "eu")).regions}


async def test_a_challenge_from_one_member_is_no_good_at_another(cluster: Cluster):
    await leader(cluster, NAMES)
    async with (
        grpc.aio.insecure_channel(cluster.address("us")) as us,
        grpc.aio.insecure_channel(cluster.address("ap")) as ap,
    ):
        request = await genuine_join(rpc.AdminStub(us), cluster, "sa")
        assert "unknown here" in await refused(rpc.AdminStub(ap), request)
