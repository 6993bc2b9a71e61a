"""What the HTTP tests ask and read: tokens, headers, JSON errors, SSE messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a JSON error answer."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    return dict(response.json()["error"])


async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, data as JSON) of each SSE message; comments (keep-alives) skipped."""
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
