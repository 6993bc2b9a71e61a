"""`plexus cert ca` and `plexus cert node`: the certificates of a cluster with TLS on."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["cert_group"]


@click.group("cert")
def cert_group() -> None:
    """Make a cluster CA and node certificates (for the cluster file's [tls] section)."""


@cert_group.command("ca")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write ca.crt and ca.key into (made 0700; files 0600).",
)
def cert_ca(out: Path) -> None:
    """Make the cluster's CA: it signs node certificates, clients verify nodes with ca.crt."""
    from plexus.certs import make_ca

    path = make_ca(out)
    click.echo(f"CA certificate {path} (give it to clients with --ca), key {out / 'ca.key'}")


@cert_group.command("node")
@click.option(
    "--ca",
    "ca_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of the CA made by 'plexus cert ca'.",
)
@click.option("--region", required=True, help="The region the certificate names.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="A host name or IP address clients and regions dial the node on (repeatable).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write REGION.crt and REGION.key into.",
)
def cert_node(ca_dir: Path, region: str, hosts: tuple[str, ...], out: Path) -> None:
    """Make region REGION's certificate and key, signed by the CA."""
    from plexus.certs import make_node_cert

    if not hosts:
        raise click.UsageError("give at least one --host the node is reached on")
    files = make_node_cert(ca_dir, region, list(hosts), out)
    click.echo(f"region {region}: certificate {files.cert}, key {files.key}")
