"""aiohttp serving the routes of app.py on a listening socket the front door bound.

node/http_api/server.py imports this module at the listener's first connection.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.gateway import Gateway
from node.http_api.app import build_app
from node.http_api.streams import OpenStreams

__all__ = ["serve"]

# How long stop() lets requests in progress (a guaranteed publish awaiting its commit)
# finish; open streams are told to end at once and do not wait for it.
SHUTDOWN_TIMEOUT_S = 2.0


async def serve(
    listener: socket.socket,
    ssl_context: ssl.SSLContext | None,
    gateway: Gateway,
    streams: OpenStreams,
    region: str,
) -> web.AppRunner:
    """Serve every connection `listener` accepts from now on; the runner stops it."""
    app = build_app(gateway, streams, region)
    app.on_shutdown.append(_ending(streams))
    # handler_cancellation: a client that hangs up ends its stream (and subscriptions) now.
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None
    )
    await runner.setup()
    await web.SockSite(runner, listener, ssl_context=ssl_context).start()
    return runner


def _ending(streams: OpenStreams) -> Callable[[web.Application], Awaitable[None]]:
    async def end_streams(_app: web.Application) -> None:
        streams.close_all()

    return end_streams
