"""A webhook connector as the runtime runs it: a connector file, a real queue on an in-process
node, a real HTTP receiver that fails for a while, for good, or loses an answer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.server import Node
from plexus.client import Client
from plexus.connectors import config, runtime
from plexus.connectors.base import Stats
from tests.harness import eventually
from tests.webhook_receiver import HANG, Receiver

pytestmark = pytest.mark.timeout(60)
EVENTS = 20


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@contextlib.asynccontextmanager
async def webhook_connector(
    node: Node, tmp_path: Path, url: str, extra: str = "", retry_for: float | None = None
) -> AsyncIterator[tuple[Client, Stats]]:
    """The connector file of a user, run by the runtime until the block ends."""
    path = tmp_path / "hook.toml"
    path.write_text(
        '[connector]\nname = "orders-hook"\nkind = "webhook"\n'
        '[consume]\nqueue = "orders-hook"\nsubscribe = ["orders/>"]\nmax_deliveries = 2\n'
        + (f"retry_for = {retry_for}\n" if retry_for else "")
        + f'[webhook]\nurl = "{url}"\n{extra}'
    )
    loaded = config.load(path)
    stats, stopping = Stats(), asyncio.Event()
    async with await Client.connect(node.address) as client:
        running = asyncio.create_task(runtime.run_connector(loaded, client, stopping, stats))
        await eventually(lambda: stats.state == "running", 10, "the connector running")
        try:
            yield client, stats
        finally:
            stopping.set()
            await running


async def publish(client: Client, count: int) -> None:
    for n in range(count):
        await client.publish(f"orders/{n}", f'{{"n": {n}}}', guaranteed=True)


async def drained(client: Client, queue: str) -> bool:
    info = await client.describe_queue(queue)
    return info.depth == 0 and info.unacked == 0


async def test_a_receiver_returning_500_for_a_while_loses_nothing_and_gets_each_event_once(
    inproc_node: Node, tmp_path: Path, receiver: Receiver
):
    receiver.answers.extend([500] * 4)  # the runtime backs off 0.1 s, doubling
    async with webhook_connector(inproc_node, tmp_path, receiver.url) as (client, stats):
        await publish(client, EVENTS)
        await eventually(lambda: len(receiver.confirmed_ids()) == EVENTS, 30, "every event")
        await eventually(lambda: drained(client, "orders-hook"), 10, "every event acked")
    assert set(receiver.confirmed_ids().values()) == {1}
    assert sorted(p.json["payload"]["n"] for p in receiver.posts if p.status == 200) == list(
        range(EVENTS)
    )
    assert stats.retries >= 1 and "HTTP 500" in stats.last_error
    assert (stats.events_in, stats.events_out, stats.dead_lettered) == (EVENTS, EVENTS, 0)


async def test_a_receiver_that_always_refuses_fills_the_dead_message_queue(
    inproc_node: Node, tmp_path: Path, receiver: Receiver
):
    receiver.default = 400
    async with webhook_connector(inproc_node, tmp_path, receiver.url) as (client, stats):
        await publish(client, 5)

        async def all_dead() -> bool:
            return (await client.describe_queue("orders-hook.dmq")).depth == 5

        await eventually(all_dead, 30, "five events in the dead-message queue")
    # One POST per delivery (max_deliveries = 2): narrowing a batch down posts nothing again.
    assert set(collections.Counter(p.json["id"] for p in receiver.posts).values()) == {2}
    assert stats.dead_lettered == 5 and stats.events_out == 0
    assert "refused event" in stats.last_error and "HTTP 400" in stats.last_error


async def test_a_receiver_that_stays_down_fills_the_dead_message_queue_after_its_retry_budget(
    inproc_node: Node, tmp_path: Path, receiver: Receiver
):
    receiver.default = 503
    async with webhook_connector(inproc_node, tmp_path, receiver.url, retry_for=0.5) as (
        client,
        stats,
    ):
        await publish(client, 3)

        async def all_dead() -> bool:
            return (await client.describe_queue("orders-hook.dmq")).depth == 3

        await eventually(all_dead, 30, "three events in the dead-message queue")
        assert (await client.describe_queue("orders-hook")).depth == 0
    assert stats.dead_lettered == 3 and stats.events_out == 0
    assert "still failing after 0.5 s" in stats.last_error and "HTTP 503" in stats.last_error


async def test_an_answer_lost_to_a_timeout_is_posted_again_and_counted_as_a_duplicate(
    inproc_node: Node, tmp_path: Path, receiver: Receiver
):
    receiver.answers.append(HANG)  # takes the first event, never answers in time
    async with webhook_connector(inproc_node, tmp_path, receiver.url, "timeout = 0.5\n") as (
        client,
        stats,
    ):
        await publish(client, 1)
        await eventually(lambda: len(receiver.posts) == 2, 20, "the event posted again")
        await eventually(lambda: drained(client, "orders-hook"), 10, "the event acked")
    first, again = receiver.posts
    assert first.headers["idempotency-key"] == again.headers["idempotency-key"]
    assert stats.duplicates == 1 and stats.events_out == 1
