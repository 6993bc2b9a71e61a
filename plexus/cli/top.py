"""`plexus top`: the live terminal view of the mesh."""

from __future__ import annotations

from pathlib import Path

import click

from plexus.cli.cluster import state_dir_option
from plexus.cli.script import require_extra

__all__ = ["top"]


@click.command()
@click.option(
    "--server",
    metavar="HOST:PORT",
    default=None,
    help="Watch the mesh through this node instead of the local cluster of --state-dir.",
)
@click.option(
    "--region",
    metavar="NAME",
    default=None,
    help="Watch the mesh through this region of the local cluster of --state-dir.",
)
@click.option(
    "--ca",
    metavar="FILE",
    default=None,
    envvar="PLEXUS_CA",
    show_envvar=True,
    help="The cluster CA certificate: connect over TLS (default: the local cluster's).",
)
@state_dir_option
def top(server: str | None, region: str | None, ca: str | None, state_dir: Path) -> None:
    """Show the mesh live: topology, regions, events; act on it (? lists the keys, q quits)."""
    require_extra("tui", "plexus top")
    from plexus.local.state import (
        LocalClusterError,
        StateDir,
        resolve_region,
        resolve_region_ca,
    )
    from plexus.tui.actions import Actions
    from plexus.tui.app import TopApp
    from plexus.tui.sources import LiveSource

    if server is not None and region is not None:
        raise click.UsageError("give --server or --region, not both")
    state = StateDir(state_dir)
    token = state.client_token()  # $PLEXUS_TOKEN, else the local cluster's admin token
    if server is not None:
        from plexus.client.channel import parse_address

        parse_address(server)
        source = LiveSource(entry=server, ca=ca, token=token)
    elif region is not None:
        ca = ca or resolve_region_ca(region, state_dir)
        source = LiveSource(entry=resolve_region(region, state_dir), ca=ca, token=token)
    elif state.exists():
        source = LiveSource(state=state, ca=ca)
    else:
        raise LocalClusterError(
            f"no local cluster in {state_dir}: 'plexus up' starts one, or use --server HOST:PORT"
        )
    TopApp(source, Actions(source)).run()
