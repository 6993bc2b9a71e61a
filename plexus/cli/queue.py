"""`plexus queue`: create, list, describe, purge, delete and consume queues."""

from __future__ import annotations

import sys

import click

from plexus.cli.options import connect, connect_streaming, run, server_option
from plexus.errors import PlexusError

__all__ = ["queue_group"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("queue")
def queue_group() -> None:
    """Manage and consume durable queues."""


@queue_group.command("create")
@click.argument("name")
@click.option(
    "--subscribe",
    "subscriptions",
    multiple=True,
    required=True,
    metavar="PATTERN",
    help="A topic pattern the queue receives (repeatable).",
)
@click.option("--exclusive", is_flag=True, help="One consumer at a time receives.")
@click.option("--max-depth", type=click.IntRange(min=0), default=0, help="0: node default.")
@click.option("--max-bytes", type=click.IntRange(min=0), default=0, help="0: node default.")
@click.option("--max-deliveries", type=click.IntRange(min=0), default=0, help="0: node default.")
@_json_option
@server_option
def create(
    name: str,
    subscriptions: tuple[str, ...],
    exclusive: bool,
    max_depth: int,
    max_bytes: int,
    max_deliveries: int,
    as_json: bool,
    server: str,
) -> None:
    """Create queue NAME; it receives events published from now on that match."""
    from plexus.cli.output import print_json
    from plexus.topics import validate_pattern

    for pattern in subscriptions:
        validate_pattern(pattern)

    async def go() -> None:
        async with await connect(server) as client:
            info = await client.create_queue(
                name,
                list(subscriptions),
                exclusive=exclusive,
                max_depth=max_depth,
                max_bytes=max_bytes,
                max_deliveries=max_deliveries,
            )
        if as_json:
            print_json(info.to_dict())
        else:
            click.echo(f"created queue {info.name} ({', '.join(info.subscriptions)})")

    run(go())


@queue_group.command("list")
@_json_option
@server_option
def list_(as_json: bool, server: str) -> None:
    """List the node's queues with their depth and consumers."""
    from plexus.cli.output import print_json, print_queues

    async def go() -> None:
        async with await connect(server) as client:
            queues = await client.list_queues()
        if as_json:
            print_json([q.to_dict() for q in queues])
        else:
            print_queues(queues)

    run(go())


@queue_group.command("describe")
@click.argument("name")
@_json_option
@server_option
def describe(name: str, as_json: bool, server: str) -> None:
    """Show queue NAME: configuration, limits, depth, consumers."""
    from plexus.cli.output import print_json, print_queue

    async def go() -> None:
        async with await connect(server) as client:
            info = await client.describe_queue(name)
        if as_json:
            print_json(info.to_dict())
        else:
            print_queue(info)

    run(go())


@queue_group.command("purge")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Purge without asking.")
@_json_option
@server_option
def purge(name: str, yes: bool, as_json: bool, server: str) -> None:
    """Drop every event queued in NAME and not yet delivered.

    Deliveries in flight stay with their consumers: acked, they are gone;
    nacked or let go, they are queued again. Asks first unless --yes.
    """
    from plexus.cli.output import print_json

    if not yes and not sys.stdin.isatty():
        raise click.UsageError(
            f"not purging queue {name!r} without confirmation: stdin is not a terminal, pass --yes"
        )

    async def queued() -> int:
        async with await connect(server) as client:
            info = await client.describe_queue(name)
        return info.depth - info.unacked

    async def go() -> int:
        async with await connect(server) as client:
            return await client.purge_queue(name)

    if not yes and not click.confirm(
        f"Purge queue {name} on {server}, dropping its {run(queued())} queued events?"
    ):
        click.echo(f"queue {name} not purged")
        return
    purged = run(go())
    if as_json:
        print_json({"queue": name, "purged": purged})
    else:
        click.echo(f"purged {purged} events from queue {name}")


@queue_group.command("delete")
@click.argument("name")
@server_option
def delete(name: str, server: str) -> None:
    """Delete queue NAME and the events it holds."""

    async def go() -> None:
        async with await connect(server) as client:
            await client.delete_queue(name)

    run(go())
    click.echo(f"deleted queue {name}")


@queue_group.command("consume")
@click.argument("name")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N events.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Exit after S seconds without a new event.",
)
@click.option("--no-ack", is_flag=True, help="Print without acking: the events stay queued.")
@click.option("--prefetch", type=click.IntRange(min=1), default=256, show_default=True)
@_json_option
@server_option
def consume(
    name: str,
    count: int | None,
    timeout: float | None,
    no_ack: bool,
    prefetch: int,
    as_json: bool,
    server: str,
) -> None:
    """Print events from queue NAME, acking each once printed."""
    run(_consume(server, name, count, timeout, no_ack, prefetch, as_json))


async def _consume(
    server: str,
    name: str,
    count: int | None,
    timeout: float | None,
    no_ack: bool,
    prefetch: int,
    as_json: bool,
) -> None:
    from plexus.cli.output import EventPrinter

    printer = EventPrinter(as_json)
    received = 0
    async with await connect_streaming(server, timeout) as client:
        consumer = client.consume(name, prefetch=prefetch, credit_on_receive=no_ack)
        try:
            await consumer.start()
            while count is None or received < count:
                deliveries = await consumer.next_batch(timeout)
                if not deliveries:
                    break
                if count is not None and received + len(deliveries) > count:
                    deliveries = deliveries[: count - received]
                printer.write(deliveries)
                received += len(deliveries)
                if not no_ack:
                    for delivery in deliveries:
                        delivery.ack()
            # Wait until the node confirms every ack durable.
            await consumer.drain(timeout=10.0)
        finally:
            await consumer.close()
    if count is not None and received < count and timeout is None:
        raise PlexusError(f"consumer of {name!r} ended after {received} of {count} events")
