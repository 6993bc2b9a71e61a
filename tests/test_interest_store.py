"""Other regions' interest kept in LMDB: the record format, the writer behind the mesh, restore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from federation.durable_interest import DurableInterest
from federation.mesh import Mesh
from node.commits import Commits
from plexus.v1 import link_pb2 as lpb
from storage.environment import Environment
from storage.interest import InterestStore, KnownInterest, decode, encode
from tests.harness import DroppingDelivery, eventually

WAIT_S = 10.0


class _Link:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.sent: list[lpb.LinkFrame] = []

    def send(self, frame: lpb.LinkFrame) -> None:
        self.sent.append(frame)

    def send_direct(self, frame: lpb.LinkFrame, count: int) -> None:
        pass

    def set_digest(self, digest: int) -> None:
        pass

    def replaced(self) -> None:
        pass


def _full(region: str, version: int, patterns: list[str]) -> lpb.LinkFrame:
    full = lpb.InterestFull(region=region, version=version, patterns=patterns)
    return lpb.LinkFrame(interest_full=full)


def _delta(region: str, version: int, added: list[str]) -> lpb.LinkFrame:
    return lpb.LinkFrame(
        interest_delta=lpb.InterestDelta(region=region, version=version, added=added)
    )


def _kept(store: InterestStore) -> dict[str, tuple[int, frozenset[str]]]:
    return {r.region: (r.version, frozenset(r.patterns)) for r in store.read_all()}


@pytest.fixture
async def commits(env: Environment) -> AsyncIterator[Commits]:
    running = Commits(env, asyncio.get_running_loop())
    running.start()
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


# -- the record -------------------------------------------------------------


def test_a_record_reads_back_as_written() -> None:
    patterns = ["orders/>", "prix/€/*", "a"]
    assert decode("eu", encode(2**64 - 1, patterns)) == KnownInterest(
        "eu", 2**64 - 1, tuple(patterns)
    )
    assert decode("eu", encode(1, [])) == KnownInterest("eu", 1, ())


@pytest.mark.parametrize(
    "value",
    [b"", b"\x02" + encode(1, ["a"])[1:], encode(1, ["abc"])[:-1], encode(1, ["a"]) + b"x"],
    ids=["empty", "unknown-format", "truncated", "trailing"],
)
def test_a_damaged_record_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode("eu", value)


def test_records_are_replaced_deleted_and_an_unreadable_one_skipped(env: Environment) -> None:
    store = InterestStore(env)
    with env.env.begin(write=True) as txn:
        store.put(txn, "eu", 5, ["orders/>"])
        store.put(txn, "ap", 3, ["a/*"])
        store.put(txn, "eu", 6, ["orders/>", "b"])
        txn.put(b"sa", b"junk", db=store.db)
    assert _kept(store) == {"ap": (3, frozenset({"a/*"})), "eu": (6, frozenset({"orders/>", "b"}))}
    with env.env.begin(write=True) as txn:
        store.delete(txn, "ap")
        store.delete(txn, "never-known")
    assert set(_kept(store)) == {"eu"}


# -- the writer behind the mesh ----------------------------------------------


async def test_what_the_mesh_learns_is_kept_and_a_forgotten_region_dropped(
    env: Environment, commits: Commits
) -> None:
    store = InterestStore(env)
    known = DurableInterest(store, commits.submit)
    mesh = Mesh("us", DroppingDelivery(), known)
    await known.restore(mesh, {"us", "eu", "ap"})
    link = _Link("eu")
    mesh.link_opened(link)
    mesh.received(link, _full("eu", 10, ["orders/>"]))
    mesh.received(link, _full("ap", 20, ["a/*"]))
    want = {"eu": (10, frozenset({"orders/>"})), "ap": (20, frozenset({"a/*"}))}
    await eventually(lambda: _kept(store) == want, WAIT_S, "both regions kept")

    mesh.forget("ap")
    await eventually(lambda: set(_kept(store)) == {"eu"}, WAIT_S, "ap's record dropped")


async def test_a_burst_of_ten_thousand_deltas_costs_a_few_commits(
    env: Environment, commits: Commits
) -> None:
    store = InterestStore(env)
    known = DurableInterest(store, commits.submit)
    mesh = Mesh("us", DroppingDelivery(), known)
    await known.restore(mesh, {"us", "eu"})
    link = _Link("eu")
    mesh.link_opened(link)
    mesh.received(link, _full("eu", 100, []))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(10_000):
        mesh.received(link, _delta("eu", 101 + i, [f"orders/{i}"]))
        if i % 100 == 0:
            await asyncio.sleep(0)  # frames arrive over many loop turns
    elapsed = loop.time() - started

    def all_kept() -> bool:
        version, patterns = _kept(store).get("eu", (0, frozenset()))
        return version == 10_100 and len(patterns) == 10_000

    await eventually(all_kept, WAIT_S, "the whole set kept")
    # One write per interval at most, plus the first and the last.
    assert known.writes <= elapsed / known.interval_s + 3, known.writes


async def test_a_restarted_mesh_routes_by_what_was_kept_until_a_full_sync_replaces_it(
    env: Environment, commits: Commits
) -> None:
    store = InterestStore(env)
    with env.env.begin(write=True) as txn:
        store.put(txn, "eu", 10, ["orders/>"])
        store.put(txn, "gone", 4, ["orders/>"])  # left the cluster while this node was down
    known = DurableInterest(store, commits.submit)
    mesh = Mesh("us", DroppingDelivery(), known)
    assert await known.restore(mesh, {"us", "eu"}) == 1
    assert mesh.guaranteed_regions("orders/1") == {"eu"}
    await eventually(lambda: set(_kept(store)) == {"eu"}, WAIT_S, "the departed region dropped")

    link = _Link("eu")
    mesh.link_opened(link)
    mesh.received(link, _full("eu", 9, []))  # older than what was kept: ignored
    assert mesh.guaranteed_regions("orders/1") == {"eu"}
    mesh.received(link, _full("eu", 11, ["billing/>"]))
    assert mesh.guaranteed_regions("orders/1") == frozenset()
    want = {"eu": (11, frozenset({"billing/>"}))}
    await eventually(lambda: _kept(store) == want, WAIT_S, "the synced set kept")


async def test_a_stopping_node_submits_what_is_still_dirty(
    env: Environment, commits: Commits
) -> None:
    store = InterestStore(env)
    known = DurableInterest(store, commits.submit, interval_s=3600)
    mesh = Mesh("us", DroppingDelivery(), known)
    await known.restore(mesh, {"us", "eu"})
    link = _Link("eu")
    mesh.link_opened(link)
    mesh.received(link, _full("eu", 1, ["a"]))
    await eventually(lambda: "eu" in _kept(store), WAIT_S, "the first write")
    mesh.received(link, _full("eu", 2, ["b"]))  # due in an hour
    known.flush()
    await asyncio.to_thread(commits.stop)
    assert _kept(store) == {"eu": (2, frozenset({"b"}))}
