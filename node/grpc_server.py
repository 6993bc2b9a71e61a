"""The node's gRPC server: options, binding a port (0 picks one), refusing a taken one."""

from __future__ import annotations

import socket

import grpc

from node.grpc_errors import GrpcErrors
from plexus.errors import FailedPrecondition

MAX_MESSAGE_BYTES = 128 << 20

GRPC_OPTIONS = [
    # Two nodes must never share a port silently (gRPC enables SO_REUSEPORT by default).
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


class PortInUse(FailedPrecondition):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"cannot listen on {address}: the address is in use or not local")


def bind_server(
    listen: str, grpc_errors: GrpcErrors, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, str]:
    """A gRPC server bound to `listen` (not started yet), and the "host:port" it bound;
    TLS with `credentials`, else plaintext."""
    check_port_free(listen)
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[grpc_errors])
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise PortInUse(listen)
    return server, f"{listen.rpartition(':')[0]}:{port}"


def check_port_free(address: str) -> None:
    """Refuse a taken port ourselves: gRPC would also log a C-level error line."""
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise PortInUse(address) from exc
