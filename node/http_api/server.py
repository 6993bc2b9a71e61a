"""The HTTP front door as the node runs it: listen, serve the routes of app.py, stop.

The port is bound at start (a taken one is refused then, as gRPC's is), but
aiohttp, about 9 MiB of a node's memory, loads at the first connection
(serving.py): `plexus up` gives every region an HTTP listener, and most of them
never see a request. The connections that arrive meanwhile wait in the
listener's backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from node.gateway import Gateway
from node.grpc_server import PortInUse
from node.http_api.streams import OpenStreams
from plexus.errors import InvalidArgument

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["HttpFrontDoor"]

log = logging.getLogger(__name__)


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"invalid HTTP address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class HttpFrontDoor:
    """HTTP/1.1 (TLS when given a context) on `address`, publishing and streaming through
    `gateway`."""

    def __init__(
        self, gateway: Gateway, address: str, ssl_context: ssl.SSLContext | None, region: str
    ) -> None:
        self.gateway = gateway
        self.requested = address
        self.ssl_context = ssl_context
        self.region = region
        self.address = ""
        self.streams = OpenStreams()
        self._listener: socket.socket | None = None
        self._serving: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; the bound `host:port` (port 0 picks one). A taken port raises PortInUse."""
        host, port = _host_port(self.requested)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listener = socket.create_server((host, port), family=family)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                raise PortInUse(self.requested) from exc
            raise
        listener.setblocking(False)
        self._listener = listener
        self._serving = asyncio.create_task(self._serve_from_first_connection(listener))
        bound = listener.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.address = f"{shown}:{bound[1]}"
        scheme = "https" if self.ssl_context else "http"
        log.info("node %s serves HTTP on %s://%s", self.region, scheme, self.address)
        return self.address

    async def stop(self) -> None:
        """Close the listener and every open stream; let requests in progress finish."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._listener is not None:
            self._listener.close()  # never served (a runner's cleanup closed a served one)

    async def _serve_from_first_connection(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        first, _ = await loop.sock_accept(listener)
        try:
            # Loaded on a worker thread: the loop goes on serving gRPC and links meanwhile.
            serving = await asyncio.to_thread(importlib.import_module, "node.http_api.serving")
            self._runner = await serving.serve(
                listener, self.ssl_context, self.gateway, self.streams, self.region
            )
        except Exception:
            first.close()
            log.exception("node %s cannot serve HTTP on %s", self.region, self.address)
            return
        try:  # the later connections are served already; this one may take its TLS handshake
            await loop.connect_accepted_socket(self._runner.server, first, ssl=self.ssl_context)
        except (OSError, ssl.SSLError, TimeoutError):
            first.close()  # that client's loss: it hung up or failed its handshake
