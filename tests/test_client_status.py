"""A client's name and reported status: sent with its calls, shown by `clients()`."""

from __future__ import annotations

import pytest

from node.server import Node
from plexus.client import Client
from plexus.errors import InvalidArgument
from tests.harness import eventually
from tests.signing import token

pytestmark = pytest.mark.timeout(30)


async def test_a_named_client_that_reported_is_listed_with_its_status(inproc_node: Node) -> None:
    async with (
        await Client.connect(inproc_node.address, name="orders-eu") as named,
        await Client.connect(inproc_node.address) as admin,
    ):
        # No stream open yet: the report alone lists it.
        await named.report_status({"kind": "file-sink", "state": "running", "events_in": "3"})
        (listed,) = [c for c in await admin.clients() if c.name == "orders-eu"]
        assert listed.status == {"events_in": "3", "kind": "file-sink", "state": "running"}

        # A stream opened later joins the same entry; a new report replaces the old one.
        await named.publish("t/1", b"x", guaranteed=True)
        await named.report_status({"kind": "file-sink", "state": "retrying"})
        (listed,) = [c for c in await admin.clients() if c.name == "orders-eu"]
        assert listed.publishers == 1 and listed.events_published == 1
        assert listed.status == {"kind": "file-sink", "state": "retrying"}
        assert listed.to_dict()["status"]["state"] == "retrying"


async def test_a_client_that_only_streams_shows_its_name_and_no_status(inproc_node: Node) -> None:
    async with (
        await Client.connect(inproc_node.address, name="worker-7") as named,
        await Client.connect(inproc_node.address) as admin,
    ):
        await named.create_queue("jobs", ["jobs/>"])
        consumer = named.consume("jobs")
        await consumer.start()

        async def listed() -> bool:
            return any(c.name == "worker-7" for c in await admin.clients())

        await eventually(listed, 5, "worker-7 listed")
        (entry,) = [c for c in await admin.clients() if c.name == "worker-7"]
        assert entry.consuming == ("jobs",) and entry.status == {}
        await consumer.close()


async def test_a_status_over_the_bounds_is_refused_naming_the_key(inproc_node: Node) -> None:
    async with await Client.connect(inproc_node.address, name="big") as client:
        with pytest.raises(InvalidArgument, match="status 'last_error' is 2000 bytes"):
            await client.report_status({"last_error": "x" * 2000})
        with pytest.raises(InvalidArgument, match="33 keys"):
            await client.report_status({f"k{i}": "v" for i in range(33)})


async def test_a_token_without_any_grant_may_report(keyed_node: Node, key: bytes) -> None:
    node = keyed_node
    async with (
        await Client.connect(node.address, token=token(key, "sink"), name="sink") as limited,
        await Client.connect(node.address, token=token(key, "root", admin=True)) as admin,
    ):
        await limited.report_status({"kind": "file-sink", "state": "running"})
        assert [c.status["state"] for c in await admin.clients() if c.name == "sink"] == ["running"]
