"""Client tokens on an in-process node with a key: who may publish, subscribe, consume,
create, purge and administer, and how missing, malformed, forged, expired and revoked
tokens are refused."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.cluster_file import load_cluster_file
from node.server import Node
from plexus import Client, NotPermitted, Unauthenticated
from plexus.errors import ConfigError, PlexusError
from plexus.tokens import Grants, generate_key, new_claims, sign
from tests.harness import eventually
from tests.inprocess import InProcessNodes
from tests.signing import token

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def node(keyed_node: Node) -> Node:
    return keyed_node


@pytest.fixture
async def admin(node: Node, key: bytes) -> AsyncIterator[Client]:
    async with await Client.connect(node.address, token=token(key, "root", admin=True)) as c:
        yield c


async def connect(node: Node, token: str | None) -> Client:
    return await Client.connect(node.address, token=token, reconnect=False)


async def refusal(call: object) -> PlexusError:
    with pytest.raises(PlexusError) as info:
        await call  # type: ignore[misc]
    return info.value


# ---------------------------------------------------------------- authentication


async def test_a_call_without_a_token_is_unauthenticated_saying_missing(node: Node) -> None:
    err = await refusal(connect(node, None))
    assert isinstance(err, Unauthenticated) and err.reason == "missing"


async def test_a_malformed_token_is_unauthenticated(node: Node) -> None:
    err = await refusal(connect(node, "not-a-token"))
    assert isinstance(err, Unauthenticated) and err.reason.startswith("malformed")


async def test_a_token_signed_with_another_key_is_forged(node: Node) -> None:
    err = await refusal(connect(node, token(generate_key(), "mallory", admin=True)))
    assert isinstance(err, Unauthenticated) and err.reason.startswith("forged")


async def test_an_expired_token_is_unauthenticated_naming_it(node: Node, key: bytes) -> None:
    expired = sign(
        new_claims("late", Grants(admin=True), expires_in_s=1).__class__(
            name="late", jti="j1", grants=Grants(admin=True), expires_at=1, issued_at=0
        ),
        key,
    )
    err = await refusal(connect(node, expired))
    assert isinstance(err, Unauthenticated) and (err.reason, err.token) == ("expired", "late")


async def test_a_revoked_token_stops_working_at_once(node: Node, admin: Client) -> None:
    made = await admin.create_token("temp", publish=["orders/>"])
    async with await connect(node, made["token"]) as client:
        await client.node_info()
        await admin.revoke_token("temp")
        err = await refusal(client.node_info())
    assert isinstance(err, Unauthenticated) and (err.reason, err.token) == ("revoked", "temp")
    listed = {t["name"]: t for t in await admin.list_tokens()}
    assert listed["temp"]["revoked"] is True


async def test_a_revocation_ends_open_subscribe_and_consume_streams(
    node: Node, admin: Client
) -> None:
    made = await admin.create_token("streamer", subscribe=["s/>"], consume=["work"])
    await admin.create_queue("work", ["w/>"])
    async with (
        await connect(node, made["token"]) as client,
        client.subscribe("s/>") as sub,
        client.consume("work") as consumer,
    ):
        await sub.next_batch(timeout=0.05)
        deliveries = aiter(consumer)
        await admin.revoke_token("streamer")
        with pytest.raises(Unauthenticated) as ended:
            await sub.next_batch(timeout=5)
        assert ended.value.reason == "revoked"
        with pytest.raises(Unauthenticated):
            await anext(deliveries)


async def test_a_node_without_a_key_runs_open(inproc_nodes: InProcessNodes) -> None:
    open_node = await inproc_nodes.start("eu")
    async with await Client.connect(open_node.address) as client:
        await client.publish("any/topic", b"x", guaranteed=False)
        await client.create_queue("q", ["any/>"])


# ---------------------------------------------------------------- permissions


async def test_publish_is_refused_per_event_naming_topic_permission_and_token(
    node: Node, admin: Client
) -> None:
    made = await admin.create_token("limited", publish=["orders/>"], subscribe=["orders/>"])
    await admin.create_queue("all", [">"])
    async with await connect(node, made["token"]) as client:
        assert await client.publish("orders/us/1", b"ok", guaranteed=True)
        err = await refusal(client.publish("payments/us/1", b"no", guaranteed=True))
        assert await client.publish("orders/us/2", b"ok", guaranteed=True)
    assert isinstance(err, NotPermitted)
    assert (err.token, err.permission, err.target) == ("limited", "publish", "payments/us/1")
    assert "payments/us/1" in str(err) and "limited" in str(err)
    assert (await admin.describe_queue("all")).depth == 2


async def test_subscribe_needs_a_covering_pattern(node: Node, admin: Client) -> None:
    made = await admin.create_token("reader", subscribe=["orders/>"])
    async with await connect(node, made["token"]) as client:
        async with client.subscribe("orders/us/*") as sub:
            await sub.next_batch(timeout=0.05)
        with pytest.raises(NotPermitted) as info:
            async with client.subscribe("payments/>") as sub:
                await sub.next_batch(timeout=5)
    assert (info.value.permission, info.value.target) == ("subscribe", "payments/>")


async def test_queue_permissions_go_by_queue_name(node: Node, admin: Client) -> None:
    made = await admin.create_token(
        "worker", subscribe=["jobs/>"], create=["jobs"], consume=["jobs"], purge=["jobs"]
    )
    async with await connect(node, made["token"]) as client:
        await client.create_queue("jobs", ["jobs/>"])
        err = await refusal(client.create_queue("other", ["jobs/>"]))
        assert (err.permission, err.target) == ("create", "other")  # type: ignore[attr-defined]
        err = await refusal(client.create_queue("jobs2", ["payments/>"]))
        assert isinstance(err, NotPermitted) and err.permission in ("create", "subscribe")
        await admin.create_queue("billing", ["b/>"])
        await admin.publish("jobs/1", b"j", guaranteed=True)
        async with client.consume("jobs") as consumer:
            delivery = await anext(aiter(consumer))
            await delivery.ack()
        with pytest.raises(NotPermitted) as info:
            async with client.consume("billing") as consumer:
                await anext(aiter(consumer))
        assert (info.value.permission, info.value.target) == ("consume", "billing")
        assert await client.purge_queue("jobs") == 0
        err = await refusal(client.purge_queue("billing"))
        assert (err.permission, err.target) == ("purge", "billing")  # type: ignore[attr-defined]
        err = await refusal(client.delete_queue("jobs"))
        assert err.permission == "admin"  # type: ignore[attr-defined]


async def test_admin_calls_need_admin_and_are_audited(
    node: Node, admin: Client, caplog: pytest.LogCaptureFixture
) -> None:
    made = await admin.create_token("plain", publish=[">"])
    async with await connect(node, made["token"]) as client:
        for call in (
            client.clients(),
            client.create_token("x"),
            client.revoke_token("root"),
            client.list_tokens(),
            client.delete_queue("q"),
        ):
            err = await refusal(call)
            assert isinstance(err, NotPermitted) and (err.token, err.permission) == (
                "plain",
                "admin",
            )
    with caplog.at_level(logging.INFO, logger="plexus.audit"):
        await admin.revoke_token("plain")
        await eventually(lambda: "revoke token by root (plain)" in caplog.text, 5, "audit line")
    assert made["token"] not in caplog.text


# ---------------------------------------------------------------- configuration


def write_cluster(tmp_path: Path, key_line: str) -> Path:
    file = tmp_path / "cluster.toml"
    file.write_text(
        '[cluster]\nname = "t"\nsecret = "s3cret-of-at-least-16-bytes"\n'
        '[[region]]\nname = "us"\ngrpc = "127.0.0.1:7000"\n'
        f"[auth]\n{key_line}\n"
    )
    return file


def test_the_cluster_file_auth_key_is_read_relative_to_the_file(tmp_path: Path, key: bytes) -> None:
    topology = load_cluster_file(write_cluster(tmp_path, 'key = "signing.key"'))
    assert topology.auth_key.encode() == key
    assert "PRIVATE" not in repr(topology)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('key = "absent.key"', "cannot read the token signing key"),
        ('key = "cluster.toml"', "is not a PEM private key"),
        ('kee = "signing.key"', "unknown key (did you mean 'key'?)"),
    ],
)
def test_a_bad_auth_key_is_a_config_error_naming_the_key(
    tmp_path: Path, key: bytes, line: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_cluster_file(write_cluster(tmp_path, line))
    assert any(p.startswith("auth.ke") and problem in p for p in err.value.problems)


async def test_a_node_with_an_unreadable_auth_key_does_not_start(
    inproc_nodes: InProcessNodes, tmp_path: Path
) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(ConfigError, match=r"bad\.key"):
        await inproc_nodes.start("us", auth_key=tmp_path / "bad.key")
