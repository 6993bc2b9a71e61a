"""The seam between the SDK and gRPC: channel options, addresses, status errors.

Every gRPC error the SDK sees is turned into a `plexus.errors.PlexusError` here
and nowhere else, so callers only ever catch the Plexus taxonomy.
"""

from __future__ import annotations

import grpc
from grpc import aio

from plexus.errors import InvalidArgument, PlexusError, Unavailable, error_from_status

__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "open_channel",
    "parse_address",
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

# Status codes that mean "the node could not be reached or went away".
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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


def open_channel(address: str) -> aio.Channel:
    """An insecure grpc.aio channel to a node (call inside a running event loop)."""
    parse_address(address)
    return aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def translate_rpc_error(exc: grpc.RpcError, address: str) -> PlexusError:
    """The PlexusError for a failed call; connection failures name the address."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else None
    return translate_status(code, details, address)


def translate_status(code: grpc.StatusCode, details: str | None, address: str) -> PlexusError:
    """The PlexusError for a call that ended with status `code`."""
    details = details or code.name
    if code in _UNREACHABLE:
        return Unavailable(f"cannot reach node at {address}: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return Unavailable(f"call to node at {address} cancelled: {details}")
    return error_from_status(code, details)


def stream_broke(exc: grpc.RpcError, address: str, what: str) -> PlexusError:
    """The error for a stream that ended: the node's refusal, else Unavailable."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else None
    return stream_ended(code, details, address, what)


def stream_ended(
    code: grpc.StatusCode, details: str | None, address: str, what: str
) -> PlexusError:
    """Like `stream_broke`, from a status read off a finished call."""
    if code in _DELIBERATE:
        return error_from_status(code, details or code.name)
    reason = f": {details}" if details and code != grpc.StatusCode.OK else ""
    return Unavailable(f"{what} to node at {address} broke ({code.name.lower()}){reason}")
