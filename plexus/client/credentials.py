"""What every call of a client carries as metadata: its token, `authorization: Bearer
<token>`, and its name, `plexus-client-name: <name>` (shown by `plexus clients`).

The `Connection` passes them with each call it makes (unary calls and every kind
of stream), so a reconnect (a new channel) keeps them. Not by a client
interceptor: grpc.aio routes every write of an intercepted stream through a
queue and a task of its own, a hand-off per event on the publish path. With
TLS the same token could travel as call credentials; on a plaintext channel
gRPC allows only metadata.
"""

from __future__ import annotations

AUTHORIZATION = "authorization"
NAME = "plexus-client-name"

Headers = tuple[tuple[str, str], ...]


def call_metadata(token: str | None, name: str | None = None) -> Headers | None:
    """The metadata that sends `token` and `name` with a call (None without either)."""
    headers: Headers = ()
    if token:
        headers += ((AUTHORIZATION, f"Bearer {token}"),)
    if name:
        headers += ((NAME, name),)
    return headers or None
