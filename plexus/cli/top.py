"""`plexus top`: the live terminal view of the mesh."""

from __future__ import annotations

from pathlib import Path

import click

from plexus.cli.cluster import state_dir_option

__all__ = ["top"]


@click.command()
@click.option(
    "--server",
    metavar="HOST:PORT",
    default=None,
    help="Watch through this node instead of the local cluster of --state-dir.",
)
@state_dir_option
def top(server: str | None, state_dir: Path) -> None:
    """Show the regions and links of the mesh, live (q quits, ? helps)."""
    from plexus.local.state import LocalClusterError, StateDir
    from plexus.tui.app import TopApp
    from plexus.tui.sources import local_cluster, one_node

    if server is None and not StateDir(state_dir).exists():
        raise LocalClusterError(
            f"no local cluster in {state_dir}: 'plexus up' starts one, or use --server HOST:PORT"
        )
    source = one_node(server) if server else local_cluster(state_dir)
    TopApp(source).run()
