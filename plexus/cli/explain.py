"""`plexus explain TOPIC`: where an event on TOPIC published at a node would go."""

from __future__ import annotations

from typing import Any

import click

from plexus.cli.options import connect, run, server_option

__all__ = ["explain"]


@click.command()
@click.argument("topic")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_option
def explain(topic: str, as_json: bool, server: str) -> None:
    """Show which regions, queues and subscribers an event on TOPIC would reach, and by
    which path, computed from the routing and interest state: nothing is sent."""
    from plexus.cli.output import print_json

    async def go() -> None:
        async with await connect(server) as client:
            regions = await client.explain(topic)
        if as_json:
            print_json({"topic": topic, "regions": regions})
        else:
            print_explained(topic, regions)

    run(go())


def print_explained(topic: str, regions: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"an event on {topic}")
    for column in ("region", "path", "subscribers", "queues", "note"):
        table.add_column(column)
    for r in regions:
        note = r["error"] or ("" if r["reachable"] else "cut off: spooled until a path returns")
        if not note and r["guaranteed_path"] != r["path"]:
            # A detour carries direct events only: guaranteed ones keep to their route.
            note = "guaranteed: " + " → ".join(r["guaranteed_path"]) + ", spooled until it is up"
        table.add_row(
            r["region"],
            " → ".join(r["path"]) or "-",
            str(r["subscribers"]),
            ", ".join(r["queues"]) or "-",
            note,
        )
    if len(regions) == 1 and not regions[0]["subscribers"] and not regions[0]["queues"]:
        Console().print(f"nobody holds interest in {topic}: the event would go nowhere")
        return
    Console().print(table)
