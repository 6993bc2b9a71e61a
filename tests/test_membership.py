"""Raft-replicated membership with real pysyncobj nodes on loopback (in one process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.membership import RaftMembership
from federation.topology import ClusterSettings, RegionSpec, Topology
from plexus.errors import AlreadyExists, FailedPrecondition, NotFound
from tests.harness import eventually, free_port


def seed_topology(names: list[str]) -> Topology:
    regions = {
        n: RegionSpec(name=n, grpc=f"127.0.0.1:{free_port()}", raft=f"127.0.0.1:{free_port()}")
        for n in names
    }
    links = frozenset(frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :])
    return Topology("t", "secret", regions, links, ClusterSettings())


@pytest.fixture
async def members(tmp_path: Path):
    started: list[RaftMembership] = []

    async def start(seed: Topology, names: list[str] | None = None) -> dict[str, RaftMembership]:
        out = {}
        rafts = [spec.raft for spec in seed.regions.values()]
        for name in names or list(seed.regions):
            member = RaftMembership(
                name, seed.regions[name].raft, rafts, "secret", tmp_path / name, seed
            )
            await member.start()
            started.append(member)
            out[name] = member
        return out

    yield start
    for member in started:
        member.stop()


def leader_of(members: dict[str, RaftMembership]) -> RaftMembership | None:
    for member in members.values():
        try:
            if member.status().role == "leader":
                return member
        except Exception:
            continue
    return None


async def test_three_regions_elect_a_leader_and_agree_on_the_seeded_membership(members):
    seed = seed_topology(["us", "eu", "ap"])
    cluster = await members(seed)
    await eventually(lambda: leader_of(cluster) is not None, 10, "a leader")
    await eventually(
        lambda: all(m.current().version >= 1 for m in cluster.values()), 10, "the seed applied"
    )
    for member in cluster.values():
        assert set(member.current().regions) == {"us", "eu", "ap"}
        assert member.current().links == seed.links


async def test_changes_reach_every_region_and_bad_changes_are_named(members):
    seed = seed_topology(["us", "eu", "ap"])
    cluster = await members(seed)
    await eventually(lambda: all(m.current().version >= 1 for m in cluster.values()), 10, "seed")
    seen: list[Topology] = []
    cluster["ap"].watch(seen.append)
    await cluster["us"].remove_link("us", "eu")
    await eventually(
        lambda: all(not m.current().has_link("us", "eu") for m in cluster.values()), 5, "unlink"
    )
    assert seen and not seen[-1].has_link("us", "eu")
    await cluster["eu"].add_link("us", "eu")
    with pytest.raises(AlreadyExists):
        await cluster["eu"].add_link("us", "eu")
    with pytest.raises(NotFound, match="'mars'"):
        await cluster["eu"].add_link("us", "mars")
    with pytest.raises(FailedPrecondition, match="cannot remove itself"):
        await cluster["us"].remove_region("us")


async def test_membership_survives_a_restart_of_every_region(members, tmp_path: Path):
    seed = seed_topology(["us", "eu", "ap"])
    cluster = await members(seed)
    await eventually(lambda: all(m.current().version >= 1 for m in cluster.values()), 10, "seed")
    await cluster["us"].remove_link("eu", "ap")
    for member in cluster.values():
        member.stop()
    again = await members(seed)  # same data directories
    await eventually(
        lambda: all(not m.current().has_link("eu", "ap") for m in again.values()), 10, "restored"
    )
