"""The one seam where a node's errors become gRPC statuses, for every service it serves.

It lives in federation, the lowest layer that serves gRPC, so that the link
service here and the node's client and admin services (node/) share it.

An error raised on purpose (`PlexusError`) ends the call with its status code,
its message and, in the status details, a `google.rpc.ErrorInfo` naming its
class and fields (see plexus/errors.py), so any gRPC client can read it. Any
other exception inside a servicer is a bug in the node: it is logged as one,
with what was being done, and the peer gets INTERNAL "internal error in node
<region>, see its log"; never a status that blames the peer's request.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc_status import rpc_status

from plexus.errors import InternalError, PlexusError, status_of

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def trailing_metadata(exc: PlexusError) -> tuple[tuple[str, str | bytes], ...]:
    """The trailing metadata that carries `exc`'s details (`grpc-status-details-bin`)."""
    return tuple(rpc_status.to_status(status_of(exc)).trailing_metadata)


async def abort(context: grpc.aio.ServicerContext, exc: PlexusError) -> NoReturn:
    """End the call with `exc`'s status code, message and details."""
    await context.abort(exc.status_code, str(exc), trailing_metadata=trailing_metadata(exc))
    raise AssertionError("context.abort returned")  # it raises; this satisfies NoReturn


async def refuse(
    context: grpc.aio.ServicerContext, exc: BaseException, region: str, what: str
) -> NoReturn:
    """End the call for an exception that escaped a servicer: the peer's error, or a bug here."""
    if isinstance(exc, PlexusError):
        await abort(context, exc)
    log.error(
        "bug in node %s while %s for %s",
        region,
        what,
        _peer(context),
        exc_info=exc,
        extra={"event": "internal_error", "region": region},
    )
    await abort(context, InternalError(region))


def guard(region: str, what: str, fn: Handler) -> Handler:
    """`fn` (unary or stream-request call) with its errors answered as statuses."""

    @functools.wraps(fn)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except grpc.aio.BaseError:
            raise  # gRPC's own: the call was aborted already, or it ended
        except Exception as exc:
            await refuse(context, exc, region, what)

    return guarded


def guard_stream(region: str, what: str, fn: StreamHandler) -> StreamHandler:
    """An async-generator servicer (`fn`) with its errors answered as statuses."""

    @functools.wraps(fn)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in fn(request, context):
                yield response
        except grpc.aio.BaseError:
            raise
        except Exception as exc:
            await refuse(context, exc, region, what)

    return guarded


def guard_servicer(servicer: Any, region: str, service: str) -> Any:
    """`servicer` seen through `guard`: what `add_*Servicer_to_server` registers."""
    return _Guarded(servicer, region, service)


class _Guarded:
    def __init__(self, servicer: Any, region: str, service: str) -> None:
        self._servicer, self._region, self._service = servicer, region, service

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._servicer, name)
        what = f"serving {self._service}/{name}"
        if inspect.isasyncgenfunction(method):
            return guard_stream(self._region, what, method)
        if inspect.iscoroutinefunction(method):
            return guard(self._region, what, method)
        return method


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # a context that no longer knows its peer
        return "an unknown peer"
