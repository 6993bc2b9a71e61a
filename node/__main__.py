"""`python -m node run ...`: run one region node (what `plexus node run` execs)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from plexus.errors import PlexusError


@click.group()
def cli() -> None:
    """The Plexus region node."""


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file with a [node] table.",
)
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(path_type=Path),
    help="Cluster file (cluster-configs/): run one region of it, linked to the others.",
)
@click.option("--region", help="With --cluster: which region this node is.")
@click.option(
    "--join",
    "join_via",
    metavar="HOST:PORT",
    help="With --cluster: join it as a new region through this member's gRPC address.",
)
@click.option("--raft", metavar="HOST:PORT", help="With --join: this region's Raft address.")
@click.option(
    "--link", "links", multiple=True, metavar="REGION", help="With --join: link to this region."
)
@click.option("--name", help="Region name, e.g. us.")
@click.option("--listen", help="gRPC address HOST:PORT (port 0 picks a free one).")
@click.option("--data", type=click.Path(path_type=Path), help="Data directory.")
@click.option("--map-size-mb", type=int, help="Initial LMDB map size in MiB (grows as needed).")
@click.option("--max-payload-bytes", type=int, help="Largest payload accepted.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def run(
    config_file: Path | None,
    cluster_file: Path | None,
    region: str | None,
    join_via: str | None,
    raft: str | None,
    links: tuple[str, ...],
    log_level: str,
    **flags: object,
) -> None:
    """Run a region node until SIGTERM or SIGINT."""
    from federation.cluster_file import load_cluster_file, region_spec
    from node.config import load_config
    from node.joining import JoinRequest
    from node.server import run_node

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        topology = join = None
        if cluster_file is not None:
            if not region:
                raise click.UsageError("--cluster needs --region NAME")
            topology = load_cluster_file(cluster_file)
            if join_via:
                if not raft:
                    raise click.UsageError("--join needs --raft HOST:PORT")
                join = JoinRequest(join_via, raft, links)
                flags = {"name": region, **_given(flags)}
            else:
                spec = region_spec(topology, region)
                flags = {"name": region, "listen": spec.grpc, "data": spec.data, **_given(flags)}
        elif region or join_via:
            raise click.UsageError("--region and --join need --cluster FILE")
        config = load_config(config_file, flags)
        _run(run_node(config, topology, join))
    except PlexusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _given(flags: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in flags.items() if v is not None}


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


if __name__ == "__main__":
    cli()
