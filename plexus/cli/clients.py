"""`plexus clients` and `plexus subscriptions`: who is connected to a node, and what
the node subscribes to on their behalf and for its queues."""

from __future__ import annotations

import click

from plexus.cli.options import connect, run, server_option

__all__ = ["clients", "subscriptions"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command("clients")
@_json_option
@server_option
def clients(as_json: bool, server: str) -> None:
    """List the clients connected to the node: their streams and event counts.

    A client is a connection with a Publish, Subscribe or Consume stream open.
    --json also names each one's subscription patterns and consumed queues;
    `plexus subscriptions` lists patterns with the client holding each.
    """
    from plexus.cli.output import print_clients, print_json

    async def go() -> None:
        async with await connect(server) as client:
            connected = await client.clients()
        if as_json:
            print_json([c.to_dict() for c in connected])
        else:
            print_clients(connected)

    run(go())


@click.command("subscriptions")
@click.option(
    "--contains",
    default="",
    metavar="TEXT",
    help="Only subscriptions whose pattern or queue name contains TEXT (case-sensitive).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    metavar="N",
    help="List at most N (up to 10000); the total that matched is shown too.",
)
@_json_option
@server_option
def subscriptions(contains: str, limit: int, as_json: bool, server: str) -> None:
    """List the node's subscriptions, direct and queue, by pattern."""
    from plexus.cli.output import print_json, print_subscriptions

    async def go() -> None:
        async with await connect(server) as client:
            view = await client.subscriptions(contains=contains, limit=limit)
        if as_json:
            print_json(view.to_dict())
        else:
            print_subscriptions(view, contains)

    run(go())
