"""How a node dials other nodes and secures its other listeners, TLS or plaintext.

Nothing here parses a certificate: federation/tls.py does, with cryptography,
and a node imports it only when it has TLS (node/server.py), so that a node
without TLS does not carry cryptography's ~7 MiB of memory.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from federation.tls import NodeTls

__all__ = ["REGION_DOMAIN", "channel_to", "region_dns_name", "server_ssl_context"]

# The DNS name suffix a node certificate names its region with (plexus/certs.py writes it).
REGION_DOMAIN = "region.plexus"


def region_dns_name(region: str) -> str:
    return f"{region}.{REGION_DOMAIN}"


def channel_to(
    tls: NodeTls | None,
    address: str,
    region: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.aio.Channel:
    """A channel to another node: TLS when this node has TLS (with `region`, the peer's
    certificate must name that region), else plaintext."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    named = [("grpc.ssl_target_name_override", region_dns_name(region))] if region else []
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=[*options, *named])


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS for a listener that is not gRPC (MQTT, HTTP): the node's own certificate and key,
    TLS 1.2 or newer; clients verify it with the cluster CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
