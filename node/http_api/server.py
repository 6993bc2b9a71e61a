"""The HTTP front door as the node runs it: listen, serve the routes of app.py, stop."""

from __future__ import annotations

import errno
import logging
import ssl

from aiohttp import web

from node.gateway import Gateway
from node.grpc_server import PortInUse
from node.http_api.app import build_app
from node.http_api.streams import OpenStreams
from plexus.errors import InvalidArgument

__all__ = ["HttpFrontDoor"]

log = logging.getLogger(__name__)

# How long stop() lets requests in progress (a guaranteed publish awaiting its commit)
# finish; open streams are told to end at once and do not wait for it.
SHUTDOWN_TIMEOUT_S = 2.0


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
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; the bound `host:port` (port 0 picks one). A taken port raises PortInUse."""
        host, port = _host_port(self.requested)
        app = build_app(self.gateway, self.streams, self.region)
        app.on_shutdown.append(self._end_streams)
        # handler_cancellation: a client that hangs up ends its stream (and subscriptions) now.
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                raise PortInUse(self.requested) from exc
            raise
        self._runner = runner
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.address = f"{shown}:{bound[1]}"
        scheme = "https" if self.ssl_context else "http"
        log.info("node %s serves HTTP on %s://%s", self.region, scheme, self.address)
        return self.address

    async def stop(self) -> None:
        """Close the listener and every open stream; let requests in progress finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _end_streams(self, _app: web.Application) -> None:
        self.streams.close_all()
