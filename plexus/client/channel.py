"""The seam between the SDK and gRPC: channel options, addresses, status errors.

Every gRPC error the SDK sees is turned into a `plexus.errors.PlexusError` here
and nowhere else, so callers only ever catch the Plexus taxonomy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc import aio

from plexus.errors import (
    InvalidArgument,
    PlexusError,
    Timeout,
    Unavailable,
    code_from_int,
    error_from_status,
    error_info,
    status_details,
)
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "error_from_ack",
    "open_channel",
    "parse_address",
    "read_ca",
    "stream_broke",
    "stream_ended",
    "translate_rpc_error",
    "translate_status",
]

# Event batches may carry up to ~1 MiB of events plus one 1 MiB payload.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Ping an idle connection every 5 minutes (the server's default floor), so
    # a dead peer behind a NAT or firewall is noticed without provoking
    # "too many pings" from the node.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # One connection per Client: gRPC would otherwise share one between every
    # channel to the same node in a process, and the node lists clients by connection.
    ("grpc.use_local_subchannel_pool", 1),
    # Fail fast towards a node that is down instead of backing off for long.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

# Status codes the node sends on purpose (see the .proto); any other status
# ending a stream means the connection broke.
_DELIBERATE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


# gRPC's words for why a TLS connection failed, and what that means for the user.
TLS_REASONS = (
    (
        ("wrong_version_number",),
        "TLS handshake failed: the node does not serve TLS (connect without a CA)",
    ),
    (
        (
            "signature failure",
            "certificate_verify_failed",
            "certificate verify failed",
            "local issuer",
            "unknown_ca",
            "self signed",
        ),
        "TLS: the node's certificate is not signed by the CA given",
    ),
    (
        ("hostname verification", "not in peer certificate"),
        "TLS: the node's certificate does not name the host dialled",
    ),
    (("handshake",), "TLS handshake failed (does the node serve TLS?)"),
)
# How a TLS node's refusal of a plaintext client looks to that client.
PLAINTEXT_REFUSED = ("socket closed", "connection reset", "end of file")


def parse_address(address: str) -> tuple[str, int]:
    """Split `HOST:PORT` (or `[v6]:PORT`); raise InvalidArgument naming what is wrong."""
    if not isinstance(address, str) or not address:
        raise InvalidArgument(f"invalid server address {address!r}: expected HOST:PORT")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(f"invalid server address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgument(
            f"invalid server address {address!r}: write an IPv6 host as [HOST]:PORT"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(
            f"invalid server address {address!r}: port must be a number from 1 to 65535"
        )
    return host, int(port_text)


def open_channel(address: str, ca: bytes | None = None) -> aio.Channel:
    """A grpc.aio channel to a node (call inside a running event loop): TLS verifying
    the node against the CA certificate `ca` (PEM), else plaintext. The token and name go
    with each call (plexus.client.credentials), not with the channel."""
    parse_address(address)
    if ca is None:
        return aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    return aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def read_ca(ca: str | Path | bytes | None) -> bytes | None:
    """The PEM bytes of a CA certificate given as a file or as bytes; InvalidArgument naming
    the file when it cannot be read or holds no certificate."""
    if ca is None or isinstance(ca, bytes):
        pem = ca
        where = "the CA given"
    else:
        where = str(ca)
        try:
            pem = Path(ca).expanduser().read_bytes()
        except OSError as exc:
            raise InvalidArgument(
                f"cannot read the CA certificate {where}: {exc.strerror}"
            ) from None
    if pem is not None and b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidArgument(f"{where} is not a PEM certificate (the cluster CA's ca.crt)")
    return pem


def unreachable_reason(details: str, tls: bool) -> str:
    """A short reason from gRPC's long connection-failure details; says when TLS is why."""
    lowered = details.lower()
    if tls:
        for needles, reason in TLS_REASONS:
            if any(needle in lowered for needle in needles):
                return reason
    for needle, reason in (
        ("connection refused", "connection refused (is the node running?)"),
        ("dns resolution failed", "unknown host"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
    ):
        if needle in lowered:
            return reason
    if not tls and any(n in lowered for n in PLAINTEXT_REFUSED):
        return "the node closed the connection: it may serve TLS only (give its CA: --ca or ca=)"
    return details.splitlines()[0] if details else "unavailable"


Metadata = Sequence[tuple[str, str | bytes]]


def translate_rpc_error(
    exc: grpc.RpcError, address: str, timeout: float | None = None
) -> PlexusError:
    """The PlexusError for a failed call; connection failures name the address.

    `timeout` is the deadline the call was given, for the `Timeout` it may become.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else None
    metadata = _trailing_metadata(exc)
    return translate_status(code, details, address, metadata, timeout=timeout)


def translate_status(
    code: grpc.StatusCode,
    details: str | None,
    address: str,
    trailing_metadata: Metadata | None = None,
    *,
    timeout: float | None = None,
) -> PlexusError:
    """The PlexusError for a call that ended with status `code`.

    The node's own refusals come back as their specific class (the reason and
    fields in the status details); a passed deadline is `Timeout`, never
    "cannot reach node".
    """
    reason, fields = error_info(status_details(trailing_metadata))
    details = details or code.name
    if reason:  # the node said it on purpose, whatever the code
        return error_from_status(code, details, reason, fields)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"call to node at {address}", timeout)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"cannot reach node at {address}: {details}")
    if code == grpc.StatusCode.CANCELLED:
        # Cancelled by this side's closing, or by the node going away: the
        # client, which knows whether it was closed, raises ClientClosed itself.
        return Unavailable(f"call to node at {address} cancelled: {details}")
    return error_from_status(code, details)


def stream_broke(exc: grpc.RpcError, address: str, what: str) -> PlexusError:
    """The error for a stream that ended: the node's refusal, else Unavailable."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else None
    return stream_ended(code, details, address, what, _trailing_metadata(exc))


def stream_ended(
    code: grpc.StatusCode,
    details: str | None,
    address: str,
    what: str,
    trailing_metadata: Metadata | None = None,
) -> PlexusError:
    """Like `stream_broke`, from a status (and trailing metadata) read off a finished call."""
    reason, fields = error_info(status_details(trailing_metadata))
    if reason or code in _DELIBERATE:
        return error_from_status(code, details or code.name, reason, fields)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"{what} to node at {address}", None)
    reason_text = f": {details}" if details and code != grpc.StatusCode.OK else ""
    return Unavailable(f"{what} to node at {address} broke ({code.name.lower()}){reason_text}")


def error_from_ack(error: pb.Error) -> PlexusError:
    """The error for an event the node refused in a publish stream (`PublishAck.error`)."""
    return error_from_status(
        code_from_int(error.code), error.message, error.reason, dict(error.fields)
    )


def _trailing_metadata(exc: grpc.RpcError) -> Metadata | None:
    try:
        metadata = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    except Exception:  # a call that never got its trailers
        return None
    return tuple(metadata) if metadata else None
