"""Regions linked over gRPC: interest propagation, routing over any topology, direct events."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from plexus import Client
from plexus.errors import ResourceExhausted
from plexus.v1 import link_pb2 as lpb
from plexus.v1 import link_pb2_grpc as lrpc
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import Cluster, eventually

LINKS_UP_S = 10.0


@pytest.fixture
def cluster_factory(tmp_path: Path):
    made: list[Cluster] = []

    def make(regions: list[str], links: list[tuple[str, str]], **options) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(made)}", regions, links, **options)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.close()


async def links_of(cluster: Cluster, region: str) -> pb.ListLinksResponse:
    async with grpc.aio.insecure_channel(cluster.address(region)) as channel:
        return await rpc.AdminStub(channel).ListLinks(pb.ListLinksRequest())


async def set_link(cluster: Cluster, region: str, peer: str, up: bool) -> None:
    async with grpc.aio.insecure_channel(cluster.address(region)) as channel:
        await rpc.AdminStub(channel).SetLink(pb.SetLinkRequest(peer=peer, up=up))


async def all_links_up(cluster: Cluster, links: list[tuple[str, str]]) -> None:
    async def up() -> bool:
        for a, b in links:
            for region, peer in ((a, b), (b, a)):
                states = {k.peer: k.state for k in (await links_of(cluster, region)).links}
                if states.get(peer) != "up":
                    return False
        return True

    await eventually(up, LINKS_UP_S, f"links {links} up")


async def knows_interest(cluster: Cluster, region: str, of: str, pattern: str) -> None:
    async def known() -> bool:
        interest = {i.region: set(i.patterns) for i in (await links_of(cluster, region)).interest}
        return pattern in interest.get(of, set())

    await eventually(known, LINKS_UP_S, f"{region} to learn {of}'s interest in {pattern}")


async def receive(sub, count: int, timeout: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await sub.next_batch(timeout=max(0.01, deadline - time.monotonic())))
    return got


async def test_eu_subscription_receives_events_published_in_us(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        async with eu.subscribe("orders/>") as sub:
            await knows_interest(cluster, "us", "eu", "orders/>")
            for i in range(500):
                await us.publish(f"orders/us/{i}", b"%d" % i)
            await us.publish("other/x", b"not for eu")
            got = await receive(sub, 500)
        assert [e.payload for e in got] == [b"%d" % i for i in range(500)]
        assert all(e.origin_region == "us" for e in got)
        # Only what eu asked for crossed the link.
        await us.flush()
        link = (await links_of(cluster, "us")).links[0]
        assert link.events_out == 500


async def test_removed_subscription_stops_pulling_events(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        async with eu.subscribe("gone/>"):
            await knows_interest(cluster, "us", "eu", "gone/>")

        async def forgotten() -> bool:
            interest = {i.region: set(i.patterns) for i in (await links_of(cluster, "us")).interest}
            return "gone/>" not in interest.get("eu", set())

        await eventually(forgotten, 5, "us to forget eu's interest")
        for i in range(100):
            await us.publish(f"gone/{i}", b"x")
        await us.flush()
        assert (await links_of(cluster, "us")).links[0].events_out == 0


async def test_chain_carries_events_from_one_end_to_the_other_through_the_middle(cluster_factory):
    links = [("a", "b"), ("b", "c")]
    cluster = cluster_factory(["a", "b", "c"], links)
    await all_links_up(cluster, links)
    async with (
        await Client.connect(cluster.address("c")) as c,
        await Client.connect(cluster.address("a")) as a,
        c.subscribe("chain/>") as sub,
    ):
        await knows_interest(cluster, "a", "c", "chain/>")
        for i in range(200):
            await a.publish(f"chain/{i}", b"%d" % i)
        got = await receive(sub, 200)
    assert [e.payload for e in got] == [b"%d" % i for i in range(200)]
    route = {i.region: i.next_hop for i in (await links_of(cluster, "a")).interest}
    assert route["c"] == "b"


async def test_ring_reroutes_around_a_cut_link_and_routes_return(cluster_factory):
    links = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
    cluster = cluster_factory(["a", "b", "c", "d"], links)
    await all_links_up(cluster, links)
    async with (
        await Client.connect(cluster.address("b")) as b,
        await Client.connect(cluster.address("a")) as a,
        b.subscribe("ring/>") as sub,
    ):
        await knows_interest(cluster, "a", "b", "ring/>")
        await set_link(cluster, "a", "b", up=False)

        async def rerouted() -> bool:
            hops = {i.region: i.next_hop for i in (await links_of(cluster, "a")).interest}
            return hops.get("b") == "d"

        await eventually(rerouted, 5, "a to route to b the long way (a-d-c-b)")
        for i in range(100):
            await a.publish(f"ring/{i}", b"%d" % i)
        got = await receive(sub, 100)
        assert [e.payload for e in got] == [b"%d" % i for i in range(100)]

        await set_link(cluster, "a", "b", up=True)

        async def direct_again() -> bool:
            hops = {i.region: i.next_hop for i in (await links_of(cluster, "a")).interest}
            return hops.get("b") == "b"

        await eventually(direct_again, 10, "the direct route a-b to return")


async def test_new_subscription_pulls_events_from_the_other_region(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
        eu.subscribe("fast/>") as sub,
    ):
        # Publish until the first event crosses: that is when eu's interest reached us.
        async def crossed() -> bool:
            await us.publish("fast/x", b"x")
            return bool(await sub.next_batch(timeout=0.005))

        await eventually(crossed, 10, "a us event on the new eu subscription")


async def test_peer_with_the_wrong_secret_is_refused_and_nobody_crashes(
    cluster_factory, tmp_path: Path
):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    # Another "eu" that knows where us is, but not the secret; eu dials us.
    impostor = Cluster(
        tmp_path / "impostor",
        ["eu", "us"],
        [("eu", "us")],
        secret="a-wrong-secret-0123456789",
        ports={"us": cluster.ports["us"]},
    )
    impostor.start("eu")
    try:

        async def refused() -> bool:
            return "wrong_secret" in impostor.nodes["eu"].log_path.read_text().lower()

        await eventually(refused, 10, "the impostor to be refused")
        assert cluster.nodes["us"].running and impostor.nodes["eu"].running
        await all_links_up(cluster, [("eu", "us")])
    finally:
        impostor.close()


async def test_garbage_on_the_link_port_is_refused_without_harm(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    # A frame with nothing in it, and a batch before any hello: each is refused
    # on its own stream (the node closes a stream once it refused it, so a
    # second write on the same stream would race that close).
    for frame in (lpb.LinkFrame(), lpb.LinkFrame(guaranteed=lpb.GuaranteedBatch())):
        async with grpc.aio.insecure_channel(cluster.address("us")) as channel:
            call = lrpc.LinkStub(channel).Connect()
            await call.write(frame)
            answer = await call.read()
            assert answer.WhichOneof("frame") == "refusal"
            call.cancel()
    raw = grpc.aio.insecure_channel(cluster.address("us"))
    stream = raw.stream_stream("/plexus.v1.Link/Connect")

    async def garbage() -> AsyncIterator[bytes]:
        yield b"\xff\xff\xff\xff not protobuf"

    answers = [lpb.LinkFrame.FromString(raw_answer) async for raw_answer in stream(garbage())]
    assert [a.refusal.reason for a in answers] == ["BAD_FRAME"]
    await raw.close()
    assert cluster.nodes["us"].running
    await all_links_up(cluster, [("eu", "us")])


def random_connected_graph(names: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """A random spanning tree plus a few extra links."""
    links = set()
    for i in range(1, len(names)):
        links.add(tuple(sorted((names[i], names[rng.randrange(i)]))))
    for _ in range(rng.randint(0, len(names))):
        a, b = rng.sample(names, 2)
        links.add(tuple(sorted((a, b))))
    return sorted(links)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_subscriber_gets_each_event_exactly_once_on_random_topologies(
    cluster_factory, seed: int
):
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(rng.randint(4, 7))]
    links = random_connected_graph(names, rng)
    cluster = cluster_factory(names, links)
    await all_links_up(cluster, links)
    clients = {n: await Client.connect(cluster.address(n)) for n in names}
    try:
        subs = {n: clients[n].subscribe("loop/>") for n in names}
        for sub in subs.values():
            await sub.ready()
        for n in names:
            for other in names:
                if other != n:
                    await knows_interest(cluster, n, other, "loop/>")
        for n in names:
            for i in range(20):
                await clients[n].publish(f"loop/{n}/{i}", f"{n}-{i}".encode())
        expected = {f"{n}-{i}".encode() for n in names for i in range(20)}
        for n, sub in subs.items():
            got = [e.payload for e in await receive(sub, len(expected), timeout=15)]
            assert sorted(got) == sorted(expected), f"{n} on {links}"
            assert not await sub.next_batch(timeout=0.2), f"{n} got extra copies on {links}"
    finally:
        for client in clients.values():
            await client.close()


async def consume_all(
    client: Client,
    queue: str,
    idle_s: float = 1.0,
    *,
    expected: int = 0,
    deadline_s: float = 30.0,
) -> list:
    """Consume and ack: at least `expected` events (waiting up to `deadline_s` for
    them), then on until the queue has been quiet for `idle_s`, so duplicates show."""
    got = []
    deadline = time.monotonic() + deadline_s
    async with client.consume(queue, prefetch=1000) as consumer:
        while True:
            waiting = len(got) < expected and time.monotonic() < deadline
            batch = await consumer.next_batch(timeout=idle_s)
            if not batch and not waiting:
                break
            got.extend(batch)
            for delivery in batch:
                delivery.ack()
        await consumer.drain()
    return got


async def test_guaranteed_events_reach_a_queue_in_another_region_exactly_once(cluster_factory):
    links = [("ap", "eu"), ("eu", "us")]  # a chain: us -> eu -> ap
    cluster = cluster_factory(["ap", "eu", "us"], links)
    await all_links_up(cluster, links)
    async with (
        await Client.connect(cluster.address("ap")) as ap,
        await Client.connect(cluster.address("us")) as us,
    ):
        await ap.create_queue("apq", ["xg/>"])
        await knows_interest(cluster, "us", "ap", "xg/>")
        acks = [us.publish_nowait(f"xg/{i}", b"g%d" % i, guaranteed=True) for i in range(1000)]
        await asyncio.gather(*acks)
        got = await consume_all(ap, "apq", expected=1000)
    payloads = [d.payload for d in got]
    assert sorted(payloads) == sorted(b"g%d" % i for i in range(1000))
    assert len(payloads) == len(set(payloads))
    assert all(d.origin_region == "us" for d in got)


async def test_relayed_events_of_mixed_routes_each_land_where_they_are_wanted(cluster_factory):
    # us -> eu -> ap: one link batch holds, in turn, events for two queues in eu (one
    # route, two topics), for ap only and for both regions.
    links = [("ap", "eu"), ("eu", "us")]
    cluster = cluster_factory(["ap", "eu", "us"], links)
    await all_links_up(cluster, links)
    wanted = {"eu": ["eu", "eu2", "both"], "ap": ["ap", "both"]}
    async with (
        await Client.connect(cluster.address("ap")) as ap,
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        clients = {"eu": eu, "ap": ap}
        for region, kinds in wanted.items():
            for kind in kinds:
                await clients[region].create_queue(f"mix-{kind}", [f"mix/{kind}/>"])
                await knows_interest(cluster, "us", region, f"mix/{kind}/>")
        kinds = ("eu", "eu2", "ap", "both")
        published = [(kinds[i % 4], b"m%d" % i) for i in range(800)]
        acks = [
            us.publish_nowait(f"mix/{kind}/x", payload, guaranteed=True)
            for kind, payload in published
        ]
        await asyncio.gather(*acks)
        got = {
            (region, kind): await consume_all(clients[region], f"mix-{kind}", expected=200)
            for region, kinds in wanted.items()
            for kind in kinds
        }
    # Each queue gets its events, once each, in publish order.
    for (_region, kind), deliveries in got.items():
        assert [d.payload for d in deliveries] == [p for k, p in published if k == kind]


async def test_link_cut_under_load_loses_nothing_and_duplicates_nothing(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")])
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("cutq", ["cut/>"])
        await knows_interest(cluster, "us", "eu", "cut/>")
        acks = []
        for i in range(3000):
            acks.append(us.publish_nowait(f"cut/{i}", b"c%d" % i, guaranteed=True))
            if i == 1000:
                await set_link(cluster, "us", "eu", up=False)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the stream send: the cut lands mid-stream
        await asyncio.gather(*acks)
        spooled = (await links_of(cluster, "us")).links[0]
        assert spooled.state != "up" and spooled.spool_depth > 0
        await set_link(cluster, "us", "eu", up=True)
        await all_links_up(cluster, [("eu", "us")])
        got = await consume_all(eu, "cutq", expected=3000)
    payloads = [d.payload for d in got]
    assert len(payloads) == len(set(payloads)), "duplicates in the queue"
    assert set(payloads) == {b"c%d" % i for i in range(3000)}


async def publish_until_stopped(
    client: Client, prefix: str, stop: asyncio.Event, acked: set[bytes]
) -> None:
    """Publish guaranteed events until `stop`, adding the payloads the node acked to `acked`."""
    i = 0
    while not stop.is_set():
        batch = [(b"%s-%d" % (prefix.encode(), i + k)) for k in range(50)]
        i += 50
        futures = [client.publish_nowait(f"{prefix}/x", p, guaranteed=True) for p in batch]
        for payload, result in zip(
            batch, await asyncio.gather(*futures, return_exceptions=True), strict=True
        ):
            if not isinstance(result, BaseException):
                acked.add(payload)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
async def test_kill_9_of_the_middle_region_of_a_chain_loses_and_duplicates_nothing(
    cluster_factory, seed: int
):
    links = [("a", "b"), ("b", "c")]
    cluster = cluster_factory(["a", "b", "c"], links)
    await all_links_up(cluster, links)
    async with (
        await Client.connect(cluster.address("c")) as c,
        await Client.connect(cluster.address("a")) as a,
    ):
        await c.create_queue("midq", ["mid/>"])
        await knows_interest(cluster, "a", "c", "mid/>")
        stop = asyncio.Event()
        acked: set[bytes] = set()
        publisher = asyncio.create_task(publish_until_stopped(a, "mid", stop, acked))
        crash_after = random.Random(seed).randint(200, 2000)  # the moment of the crash
        await eventually(lambda: len(acked) >= crash_after, 30, f"{crash_after} acks")
        cluster.kill("b")

        async def a_spools_for_b() -> bool:
            return any(k.spool_depth for k in (await links_of(cluster, "a")).links)

        await eventually(a_spools_for_b, 10, "a to spool events while b is down")
        cluster.restart("b")
        await all_links_up(cluster, links)
        recovered_at = len(acked)
        await eventually(lambda: len(acked) >= recovered_at + 500, 30, "acks after recovery")
        stop.set()
        await publisher

        got = await consume_all(c, "midq", expected=len(acked))
    payloads = [d.payload for d in got]
    assert acked, "nothing was acked"
    assert len(payloads) == len(set(payloads)), "an event reached the queue twice"
    missing = acked - set(payloads)
    assert not missing, f"{len(missing)} acked events never arrived, e.g. {sorted(missing)[:3]}"


async def test_full_link_spool_refuses_publishes_naming_the_link_then_drains(cluster_factory):
    cluster = cluster_factory(
        ["eu", "us"], [("eu", "us")], settings={"link_spool_quota_bytes": 1 << 20}
    )
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("fullq", ["full/>"])
        await knows_interest(cluster, "us", "eu", "full/>")
        await set_link(cluster, "us", "eu", up=False)
        payload = b"p" * 10_000
        accepted = 0
        with pytest.raises(ResourceExhausted, match="link to 'eu' is full"):
            for _ in range(200):
                await us.publish("full/x", payload, guaranteed=True)
                accepted += 1
        assert 50 < accepted < 110
        await set_link(cluster, "us", "eu", up=True)

        async def drained() -> bool:
            return (await links_of(cluster, "us")).links[0].spool_depth == 0

        await eventually(drained, 10, "the spool to drain")
        await us.publish("full/x", payload, guaranteed=True)
        got = await consume_all(eu, "fullq", expected=accepted + 1)
    assert len(got) == accepted + 1


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_interest_views_heal_after_links_reset_during_10000_subscription_changes(
    cluster_factory,
):
    names = ["a", "b", "c"]
    links = [("a", "b"), ("b", "c"), ("a", "c")]
    heartbeat_ms = 200
    cluster = cluster_factory(names, links, heartbeat_ms=heartbeat_ms)
    await all_links_up(cluster, links)
    rng = random.Random(7)
    clients = {n: await Client.connect(cluster.address(n)) for n in names}
    open_subs: dict[str, list] = {n: [] for n in names}
    stop = asyncio.Event()

    async def flap() -> None:
        while not stop.is_set():
            a, b = rng.choice(links)
            await set_link(cluster, a, b, up=False)
            await asyncio.sleep(rng.uniform(0.01, 0.2))  # the link stays down a random while
            await set_link(cluster, a, b, up=True)
            await asyncio.sleep(rng.uniform(0.01, 0.2))  # and up a random while

    flapper = asyncio.create_task(flap())
    try:
        changes = 0
        while changes < 10_000:
            region = rng.choice(names)
            subs = open_subs[region]
            if subs and rng.random() < 0.5:
                await subs.pop(rng.randrange(len(subs))).close()
            else:
                pattern = f"t{rng.randrange(40)}/{rng.choice(['*', '>', 'x', 'y*'])}"
                sub = clients[region].subscribe(pattern)
                await sub.ready()
                subs.append(sub)
            changes += 1
    finally:
        stop.set()
        await flapper
    for a, b in links:
        await set_link(cluster, a, b, up=True)
    await all_links_up(cluster, links)
    await views_agree(cluster, names)
    for n in names:
        for sub in open_subs[n]:
            await sub.close()
        await clients[n].close()


async def views_agree(cluster: Cluster, names: list[str], timeout: float = 10.0) -> None:
    """Wait until every region's view of every region's interest is that region's own."""

    async def agree() -> bool:
        views = {}
        for n in names:
            views[n] = {i.region: set(i.patterns) for i in (await links_of(cluster, n)).interest}
        return all(views[n].get(m) == views[m][m] for n in names for m in names)

    await eventually(agree, timeout, "interest views to agree")


async def spools_drained(cluster: Cluster, names: list[str], timeout: float = 10.0) -> None:
    async def drained() -> bool:
        for n in names:
            if any(k.spool_depth for k in (await links_of(cluster, n)).links):
                return False
        return True

    await eventually(drained, timeout, "every link spool to drain")


@pytest.mark.slow
async def test_explain_agrees_with_real_delivery_for_random_topics(cluster_factory):
    names = ["a", "b", "c"]
    links = [("a", "b"), ("b", "c")]
    cluster = cluster_factory(names, links)
    await all_links_up(cluster, links)
    rng = random.Random(11)
    levels = ["x", "y", "xy"]

    def pattern() -> str:
        parts = [rng.choice([*levels, "*", "x*"]) for _ in range(rng.randint(1, 2))]
        return "/".join(["ex", *parts, *([">"] if rng.random() < 0.3 else [])])

    clients = {n: await Client.connect(cluster.address(n)) for n in names}
    subs = {}
    try:
        for n in names:
            for k in range(3):
                subs[(n, k)] = clients[n].subscribe(pattern())
                await subs[(n, k)].ready()
            await clients[n].create_queue(f"q{n}", [pattern(), pattern()])
        await views_agree(cluster, names)
        topics = sorted(
            {
                "ex/" + "/".join(rng.choice(levels) for _ in range(rng.randint(1, 3)))
                for _ in range(40)
            }
        )
        explained = {t: await clients["a"].explain(t) for t in topics}
        for t in topics:
            await clients["a"].publish(t, t.encode(), guaranteed=True)
        await spools_drained(cluster, names)  # every relayed event is stored at its hop
        received: dict[tuple[str, int], list[bytes]] = {}
        for key, sub in subs.items():
            received[key] = [e.payload for e in await sub.next_batch(timeout=0.5)]
            while more := await sub.next_batch(timeout=0.1):
                received[key].extend(e.payload for e in more)
        queued = {
            n: [d.payload for d in await consume_all(clients[n], f"q{n}", 0.5)] for n in names
        }
        for t in topics:
            by_region = {r["region"]: r for r in explained[t]}
            for n in names:
                got = sum(received[(n, k)].count(t.encode()) for k in range(3))
                said = by_region.get(n, {"subscribers": 0, "queues": []})
                assert got == said["subscribers"], f"{t} in {n}: {got} got it, explain said {said}"
                in_queue = t.encode() in queued[n]
                assert in_queue == (f"q{n}" in said["queues"]), f"{t} queue in {n}: {said}"
            for r in explained[t]:
                assert r["path"][0] == "a" and r["path"][-1] == r["region"]
                assert r["guaranteed_path"] == r["path"]  # every link is up
    finally:
        for sub in subs.values():
            await sub.close()
        for client in clients.values():
            await client.close()


async def test_discard_oldest_policy_keeps_the_newest_events_and_counts_the_rest(cluster_factory):
    cluster = cluster_factory(
        ["eu", "us"],
        [("eu", "us")],
        settings={"link_spool_quota_bytes": 1 << 20, "spool_full": "discard-oldest"},
    )
    await all_links_up(cluster, [("eu", "us")])
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("newest", ["new/>"])
        await knows_interest(cluster, "us", "eu", "new/>")
        await set_link(cluster, "us", "eu", up=False)
        for i in range(300):
            await us.publish("new/x", b"%04d" % i + b"p" * 10_000, guaranteed=True)
        await set_link(cluster, "us", "eu", up=True)
        await spools_drained(cluster, ["us"])
        discarded = (await links_of(cluster, "us")).links[0].spool_discarded
        assert discarded > 0
        got = [
            int(d.payload[:4]) for d in await consume_all(eu, "newest", expected=300 - discarded)
        ]
    assert got == sorted(got) and got[-1] == 299
    assert len(got) + discarded == 300


async def test_a_silent_peer_is_declared_down_as_silent(cluster_factory):
    cluster = cluster_factory(["eu", "us"], [("eu", "us")], heartbeat_ms=100)
    await all_links_up(cluster, [("eu", "us")])
    frozen = cluster.nodes["us"].proc
    assert frozen is not None
    os.kill(frozen.pid, signal.SIGSTOP)  # alive but silent: no frame, no close
    try:

        async def down() -> bool:
            return (await links_of(cluster, "eu")).links[0].state != "up"

        async def dialling_again() -> bool:
            return (await links_of(cluster, "eu")).links[0].state == "connecting"

        # Heartbeats notice it: the stream itself stays open while the process is stopped.
        await eventually(down, 10, "eu to declare the silent us down")
        # eu dials again, and hangs on the stopped process: the last close still says why.
        await eventually(dialling_again, 10, "eu to dial us again")
        reason = (await links_of(cluster, "eu")).links[0].reason
        assert "silent" in reason, reason
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await all_links_up(cluster, [("eu", "us")])


async def test_guaranteed_events_ttl_holds_in_the_region_they_are_relayed_to(cluster_factory):
    """A relayed event expires at its publish time plus its TTL in eu, as it would in us:
    one that arrives alive moves to eu's dead-message queue once the TTL passes, one that
    arrives already expired (its link was cut) goes there too; one without a TTL stays."""
    links = [("eu", "us")]
    cluster = cluster_factory(["eu", "us"], links)
    await all_links_up(cluster, links)
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("ttlq", ["ttl/>"])
        await knows_interest(cluster, "us", "eu", "ttl/>")

        async def depths() -> tuple[int, int]:
            queues = {q.name: q.depth for q in await eu.list_queues()}
            return queues["ttlq"], queues["ttlq.dmq"]

        # Arrives alive, then outlives its TTL in eu, where nobody consumes it.
        await us.publish("ttl/alive", b"alive", guaranteed=True, ttl_ms=1_500)
        await us.publish("ttl/kept", b"kept", guaranteed=True)

        async def alive_expired() -> bool:
            return await depths() == (1, 1)

        await eventually(alive_expired, 15, "the event with a TTL to move to ttlq.dmq in eu")

        # Spooled in us while the link is down, past its TTL before it reaches eu.
        await set_link(cluster, "us", "eu", up=False)
        late_id = await us.publish("ttl/late", b"late", guaranteed=True, ttl_ms=200)
        assert late_id is not None
        await eventually(
            lambda: time.time() * 1000 > (late_id >> 22) + 200, 5, "the late event's TTL to pass"
        )
        await set_link(cluster, "us", "eu", up=True)

        async def late_expired() -> bool:
            return await depths() == (1, 2)

        await eventually(late_expired, 20, "the event expired on arrival to move to ttlq.dmq")
        dead = await consume_all(eu, "ttlq.dmq", idle_s=0.3, expected=2)
        kept = await consume_all(eu, "ttlq", idle_s=0.3, expected=1)
    assert sorted(d.payload for d in dead) == [b"alive", b"late"]
    assert [d.payload for d in kept] == [b"kept"]


TRIANGLE = [("ap", "eu"), ("ap", "us"), ("eu", "us")]


async def test_guaranteed_events_spooled_for_a_region_are_not_overtaken_by_a_detour(
    cluster_factory,
):
    cluster = cluster_factory(["ap", "eu", "us"], TRIANGLE)
    await all_links_up(cluster, TRIANGLE)
    async with (
        await Client.connect(cluster.address("eu")) as eu,
        await Client.connect(cluster.address("us")) as us,
    ):
        await eu.create_queue("ordq", ["ord/>"])
        await knows_interest(cluster, "us", "eu", "ord/>")
        # eu cut off: these wait in us's spool towards eu.
        await set_link(cluster, "us", "eu", up=False)
        await set_link(cluster, "ap", "eu", up=False)
        for i in range(300):
            await us.publish("ord/x", b"%d" % i, guaranteed=True)

        # A way to eu comes back through ap first, then the direct link.
        await set_link(cluster, "ap", "eu", up=True)

        async def eu_reachable_through_ap() -> bool:
            hops = {i.region: i.next_hop for i in (await links_of(cluster, "us")).interest}
            return hops.get("eu") == "ap"

        await eventually(eu_reachable_through_ap, 10, "us to reach eu through ap")
        [eu_view] = [r for r in await us.explain("ord/x") if r["region"] == "eu"]
        assert eu_view["path"] == ["us", "ap", "eu"]
        assert eu_view["guaranteed_path"] == ["us", "eu"]
        for i in range(300, 600):
            await us.publish("ord/x", b"%d" % i, guaranteed=True)
        await set_link(cluster, "us", "eu", up=True)
        await all_links_up(cluster, TRIANGLE)
        got = await consume_all(eu, "ordq", expected=600)
    order = [int(d.payload) for d in got]
    assert sorted(order) == list(range(600))
    assert order == list(range(600)), f"out of publish order at eu: {_runs(order)}"


def _runs(order: list[int]) -> list[tuple[int, int]]:
    """Consecutive stretches, e.g. [(0, 299), (300, 599)]: where the order breaks."""
    runs, start = [], order[0]
    for a, b in itertools.pairwise(order):
        if b != a + 1:
            runs.append((start, a))
            start = b
    return [*runs, (start, order[-1])]
