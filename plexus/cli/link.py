"""`plexus link`: a region's links to other regions, and taking one down and up for drills."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from plexus.cli.cluster import state_dir_option
from plexus.cli.options import connect, run, server_option
from plexus.cli.output import age

if TYPE_CHECKING:
    from plexus.client.info import LinkInfo, LinksView, RegionInterest

__all__ = ["link_group"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

# A symbol as well as a colour, so the state reads without colour too.
_STATES = {
    "up": ("✔", "green"),
    "connecting": ("…", "yellow"),
    "down": ("✖", "red"),
}
# Patterns shown per region in the interest table; the rest are counted.
_PATTERNS_SHOWN = 3
_POLL_S = 0.05


@click.group("link")
def link_group() -> None:
    """Show this region's links; take one down and up (drills)."""


@link_group.command("list")
@_json_option
@server_option
def list_(as_json: bool, server: str) -> None:
    """Show each link of the node's region, and the interest it learned per region."""
    from plexus.cli.output import print_json

    async def go() -> None:
        async with await connect(server) as client:
            view = await client.list_links()
        if as_json:
            print_json(view.to_dict())
        else:
            print_links(view)

    run(go())


@link_group.command("down")
@click.argument("peer")
@_json_option
@server_option
def down(peer: str, as_json: bool, server: str) -> None:
    """Take the link to region PEER down and hold it down until `plexus link up PEER`."""
    from plexus.cli.output import print_json

    async def go() -> None:
        async with await connect(server) as client:
            link = await client.set_link(peer, up=False)
        if as_json:
            print_json(link.to_dict())
        else:
            click.echo(
                f"link to {peer}: {_state_plain(link)}; 'plexus link up {peer}' brings it back"
            )

    run(go())


@link_group.command("up")
@click.argument("peer")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait up to this long for the link to come up before printing its state (0: don't).",
)
@_json_option
@server_option
def up(peer: str, wait: float, as_json: bool, server: str) -> None:
    """Let the link to region PEER come back up after `plexus link down PEER`."""
    from plexus.cli.output import print_json

    async def go() -> None:
        async with await connect(server) as client:
            link = await client.set_link(peer, up=True)
            deadline = time.monotonic() + wait
            while not link.up and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
                link = (await client.list_links(interest=False)).link(peer) or link
        if as_json:
            print_json(link.to_dict())
        elif link.up:
            click.echo(f"link to {peer}: {_state_plain(link)}")
        else:
            click.echo(f"link to {peer}: released, not up yet: {_state_plain(link)}")

    run(go())


# ------------------------------------------------------------------ printing


def print_links(view: LinksView) -> None:
    """A table per link, then the interest table; one line for a region that runs alone."""
    from rich.console import Console

    console = Console(highlight=False)
    if not view.links:
        console.print(f"region {view.region} runs alone: no links", markup=False)
    for link in view.links:
        console.print(_link_table(view.region, link))
    if view.interest:
        console.print(_interest_table(view.region, view.interest))


def _link_table(region: str, link: LinkInfo) -> Any:
    from rich.table import Table

    name = "-".join(sorted((region, link.peer)))
    table = Table(title=f"link {name} (to {link.peer})", show_header=False, min_width=40)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    dialler, acceptor = (region, link.peer) if link.dialler else (link.peer, region)
    rows = [
        ("state", _state_cell(link.state)),
        ("role", f"{'dialler' if link.dialler else 'acceptor'} ({dialler} dials {acceptor})"),
        ("round-trip", _rtt(link.rtt_ms) if link.up else "-"),
        ("events/s in / out", f"{_count(link.events_in_per_s)} / {_count(link.events_out_per_s)}"),
        ("bytes/s in / out", f"{_bytes(link.bytes_in_per_s)} / {_bytes(link.bytes_out_per_s)}"),
        ("events in / out", f"{link.events_in} / {link.events_out}"),
        ("direct dropped", str(link.direct_dropped)),
        ("spooled", f"{link.spool_depth}, oldest {age(link.spool_oldest_age_ms)}"),
        ("held down", "[bold]yes[/bold] (plexus link up)" if link.held_down else "no"),
    ]
    if not link.up:
        rows.append(("reason", _escape(link.reason or "-")))
    for field, value in rows:
        table.add_row(field, value)
    return table


def _interest_table(region: str, interest: tuple[RegionInterest, ...]) -> Any:
    from rich.table import Table

    table = Table(title="interest learned")
    table.add_column("region", no_wrap=True)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("patterns", overflow="fold")
    table.add_column("next hop")
    table.add_column("reachable")
    for item in interest:
        shown = [str(len(item.patterns))]
        if item.patterns:
            shown = [f"{len(item.patterns)}:", ", ".join(item.patterns[:_PATTERNS_SHOWN])]
        more = len(item.patterns) - _PATTERNS_SHOWN
        if more > 0:
            shown.append(f"+{more} more")
        here = item.region == region
        table.add_row(
            f"{item.region} (here)" if here else item.region,
            str(item.version),
            _escape(" ".join(shown)),
            "-" if here else (item.next_hop or "-"),
            "[green]✔ yes[/green]" if item.reachable else "[red]✖ no[/red]",
        )
    return table


def _state_cell(state: str) -> str:
    symbol, colour = _STATES.get(state, ("?", "magenta"))
    return f"[{colour}]{symbol} {state}[/{colour}]"


def _state_plain(link: LinkInfo) -> str:
    symbol, _ = _STATES.get(link.state, ("?", ""))
    text = f"{symbol} {link.state}"
    if link.held_down:
        text += ", held down"
    if not link.up and link.reason:
        text += f" ({link.reason})"
    return text


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _rtt(ms: float) -> str:
    if ms <= 0:
        return "-"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def _count(rate: float) -> str:
    if rate < 1000:
        return f"{rate:.0f}"
    if rate < 1_000_000:
        return f"{rate / 1000:.1f}k"
    return f"{rate / 1_000_000:.2f}M"


def _bytes(rate: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if rate < 1024:
            return f"{rate:.0f} {unit}" if unit == "B" else f"{rate:.1f} {unit}"
        rate /= 1024
    return f"{rate:.1f} GiB"


@link_group.command("add")
@click.argument("a")
@click.argument("b")
@state_dir_option
def add(a: str, b: str, state_dir: Path) -> None:
    """Link regions A and B of the local cluster (one replicated change; routes follow)."""
    from plexus.local import membership
    from plexus.local.state import StateDir

    membership.add_link(StateDir(state_dir), a, b)
    click.echo(f"link {a}-{b} added")


@link_group.command("remove")
@click.argument("a")
@click.argument("b")
@state_dir_option
def remove(a: str, b: str, state_dir: Path) -> None:
    """Remove the link between regions A and B of the local cluster."""
    from plexus.local import membership
    from plexus.local.state import StateDir

    membership.remove_link(StateDir(state_dir), a, b)
    click.echo(f"link {a}-{b} removed")
