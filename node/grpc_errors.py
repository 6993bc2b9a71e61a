"""The gRPC calls that ended with a status other than OK, counted by method and code.

Every node counts them (its server's interceptor); the metrics endpoint, when
it is on, reads the counts (node/metrics.py). Kept apart from the metrics so a
node serving none does not load prometheus_client.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["GrpcErrors"]


class GrpcErrors(grpc.aio.ServerInterceptor):
    """Counts RPCs that end with a status other than OK, by method and status code.

    It wraps each call's handler once per call (not per message), on the loop.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.lstrip("/")
        kind = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        behaviour = getattr(handler, kind)
        return handler._replace(**{kind: self._counted(method, behaviour)})

    def _counted(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in behaviour(request, context):
                        yield item
                except BaseException as exc:
                    self._failed(method, context, exc)
                    raise

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                self._failed(method, context, exc)
                raise

        return call

    def _failed(self, method: str, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        # Only a call that raised is read for its code: the handlers here end every
        # failure by raising (an abort, a cancellation, a bug), never by set_code alone.
        code = _status_code(context.code())
        if code is None:
            cancelled = isinstance(error, asyncio.CancelledError)
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
        if code is grpc.StatusCode.OK:
            return
        self.count(method, code.name)

    def count(self, method: str, code: str) -> None:
        """One failure of `method` with status `code`: also what a stream carrying many
        requests (the Subscriptions stream) says for each it refused inside it."""
        key = (method, code)
        self.counts[key] = self.counts.get(key, 0) + 1


_HANDLER_KINDS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _status_code(code: Any) -> grpc.StatusCode | None:
    """The call's status code as grpc.StatusCode (grpc.aio may report it as an int)."""
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _CODES_BY_VALUE.get(int(code), grpc.StatusCode.UNKNOWN)
