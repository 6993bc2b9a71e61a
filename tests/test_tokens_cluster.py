"""Client tokens across a Raft cluster of real node processes: the key from the cluster
file's [auth] section verifies a token in every region, permissions hold at the region a
client connects to, and a revocation reaches every region (voters and a follower)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from plexus import Client, NotPermitted, Unauthenticated
from plexus.tokens import Grants, generate_key, new_claims, sign
from tests.harness import Cluster, eventually

pytestmark = pytest.mark.timeout(120)

# Voters are the first three by name (ap, eu, sa); us follows the membership.
NAMES = ["us", "eu", "ap", "sa"]
LINKS = [("us", "eu"), ("eu", "ap"), ("us", "ap"), ("sa", "us")]


@pytest.fixture(scope="module")
def key_and_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[bytes, Cluster]]:
    root = tmp_path_factory.mktemp("tokens")
    key = generate_key()
    (root / "signing.key").write_bytes(key)
    cluster = Cluster(root / "c", NAMES, LINKS, raft=True, auth_key=root / "signing.key")
    cluster.start()
    try:
        yield key, cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster(key_and_cluster: tuple[bytes, Cluster]) -> Cluster:
    return key_and_cluster[1]


@pytest.fixture
def admin_token(key_and_cluster: tuple[bytes, Cluster]) -> str:
    return sign(new_claims("root", Grants(admin=True)), key_and_cluster[0])


async def test_a_limited_subscriber_in_eu_gets_us_orders_and_never_payments(
    cluster: Cluster, admin_token: str
) -> None:
    async with await Client.connect(cluster.address("us"), token=admin_token) as admin:
        made = await admin.create_token("orders-reader", subscribe=["orders/>"])
        async with await Client.connect(cluster.address("eu"), token=made["token"]) as reader:
            with pytest.raises(NotPermitted) as refused:
                async with reader.subscribe("payments/>") as sub:
                    await sub.next_batch(timeout=5)
            assert (refused.value.target, refused.value.token) == ("payments/>", "orders-reader")
            async with reader.subscribe("orders/>") as sub:
                got: list[str] = []

                async def orders_arrive() -> bool:  # until eu's interest reached us
                    await admin.publish("payments/us/1", b"secret")
                    await admin.publish("orders/us/probe", b"o")
                    await admin.flush()
                    got.extend(e.topic for e in await sub.next_batch(timeout=0.2))
                    return "orders/us/probe" in got

                await eventually(orders_arrive, 20, "orders from us to reach eu")
                await admin.publish("payments/us/2", b"secret")
                await admin.publish("orders/us/last", b"o")
                await admin.flush()

                async def last_arrives() -> bool:
                    got.extend(e.topic for e in await sub.next_batch(timeout=0.2))
                    return "orders/us/last" in got

                await eventually(last_arrives, 10, "the last order")
                # Asked of other regions on the caller's behalf, with its token.
                explained = {r["region"]: r for r in await admin.explain("orders/us/2")}
                assert explained["eu"]["subscribers"] == 1 and not explained["eu"]["error"]
    assert got and all(topic.startswith("orders/") for topic in got)


async def test_a_token_made_at_a_follower_works_everywhere_and_revocation_reaches_all_in_1s(
    cluster: Cluster, admin_token: str
) -> None:
    async with await Client.connect(cluster.address("us"), token=admin_token) as admin:
        made = await admin.create_token("short-lived", publish=["orders/>"])
        clients = {
            name: await Client.connect(cluster.address(name), token=made["token"]) for name in NAMES
        }
        try:
            for client in clients.values():
                await client.node_info()
            await admin.revoke_token("short-lived")
            revoked_at = time.monotonic()
            for name, client in clients.items():

                async def refused(client: Client = client) -> bool:
                    try:
                        await client.node_info()
                    except Unauthenticated as exc:
                        return exc.reason == "revoked"
                    return False

                await eventually(refused, 1.0, f"the revocation to reach {name}")
            assert time.monotonic() - revoked_at < 1.5
            listed = {t["name"]: t for t in await admin.list_tokens()}  # asked of a follower
            assert listed["short-lived"]["revoked"] is True
        finally:
            for client in clients.values():
                await client.close()


async def test_a_forged_token_is_refused_in_every_region(cluster: Cluster) -> None:
    forged = sign(new_claims("root", Grants(admin=True)), generate_key())
    for name in NAMES:
        with pytest.raises(Unauthenticated) as refused:
            await Client.connect(cluster.address(name), token=forged, reconnect=False)
        assert refused.value.reason.startswith("forged")
