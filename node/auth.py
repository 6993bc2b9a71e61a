"""Who a client is: the token in a call's `authorization: Bearer` metadata, verified.

A token's signature is checked once (PyJWT, Ed25519) and the verified token
kept in a bounded cache, so a call costs a dict lookup; expiry and revocation
are checked on every call, against the replicated token state
(federation/auth_state.py), which this follows as it changes. Without a key
the node runs open: every call gets `OPEN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.auth_state import OFF, AuthState
from node.permissions import OPEN, Access
from plexus.errors import ConfigError, InvalidArgument, Unauthenticated
from plexus.tokens import public_key_pem

if TYPE_CHECKING:
    from node.token_verifier import TokenVerifier, Verified

log = logging.getLogger("plexus.audit")

AUTHORIZATION = "authorization"
BEARER = "bearer "
# Verified tokens kept (then the cache starts again).
VERIFIED_TOKENS_CACHE = 4_096


class Authenticator:
    """Turns a call's metadata into an `Access`, or refuses it with `Unauthenticated`."""

    def __init__(self, state: AuthState = OFF) -> None:
        self._state = state
        self._verifier: TokenVerifier | None = None
        self._verified: dict[str, Verified] = {}
        # The wake-up events of open Subscribe and Consume streams: set when the state
        # changes, so that a stream whose token was revoked ends though it is idle.
        self._streams: set[asyncio.Event] = set()
        self.follow(state)

    @property
    def state(self) -> AuthState:
        return self._state

    @property
    def enabled(self) -> bool:
        return self._state.enabled

    def follow(self, state: AuthState) -> None:
        """Take a new token state; a new key forgets every token verified with the old one."""
        if state.verify_key != self._state.verify_key or self._verifier is None:
            self._verifier = _verifier(state.verify_key) if state.enabled else None
            self._verified.clear()
        self._state = state
        for wake in self._streams:
            wake.set()

    @contextlib.contextmanager
    def watching(self, wake: asyncio.Event) -> Iterator[None]:
        """While open, a stream is woken by every change of the token state (to re-check)."""
        self._streams.add(wake)
        try:
            yield
        finally:
            self._streams.discard(wake)

    def identify(self, metadata: Iterable[tuple[str, Any]] | None) -> Access:
        """The caller's access, from its call metadata."""
        if not self._state.enabled:
            return OPEN
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated("missing")
        verified = self._verified.get(token)
        if verified is None:
            assert self._verifier is not None  # enabled: follow() made it
            verified = self._verifier.verify(token)
            if len(self._verified) >= VERIFIED_TOKENS_CACHE:
                self._verified.clear()
            self._verified[token] = verified
        self.check(verified.access, verified.jti, verified.expires_at)
        return verified.access

    def check(self, access: Access, jti: str, expires_at: float) -> None:
        if self._state.is_revoked(access.name, jti):
            raise Unauthenticated("revoked", access.name)
        if time.time() >= expires_at:
            raise Unauthenticated("expired", access.name)

    def expires_at(self, metadata: Iterable[tuple[str, Any]] | None) -> float:
        """When the caller's token expires (Unix seconds; inf: never, or no authentication),
        so that an open stream can end then; refuses a token as `identify` does."""
        if not self._state.enabled:
            return float("inf")
        self.identify(metadata)  # verified and cached, or refused
        return self._verified[bearer_token(metadata) or ""].expires_at

    def still_valid(self, metadata: Iterable[tuple[str, Any]] | None) -> None:
        """Refuse a stream's token that was revoked, or expired, since the stream began."""
        if self._state.enabled:
            self.identify(metadata)


def _verifier(verify_key: bytes) -> TokenVerifier:
    # PyJWT and cryptography load here, once authentication is on (node/token_verifier.py).
    from node.token_verifier import TokenVerifier

    return TokenVerifier(verify_key)


def read_signing_key(path: Path) -> bytes:
    """The token signing key in `path` (PEM), or a ConfigError naming the file."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            str(path), [f"cannot read the token signing key: {exc.strerror}"]
        ) from None
    try:
        public_key_pem(pem)
    except InvalidArgument as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    return pem


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token in `authorization: Bearer <token>`, or None."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            if value[: len(BEARER)].lower() == BEARER:
                return value[len(BEARER) :].strip()
            return value.strip()
    return None


def forwarded(metadata: Iterable[tuple[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    """The caller's authorization, for a call this node makes on its behalf to another."""
    token = bearer_token(metadata)
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


def audit(access: Access, action: str, target: str = "") -> None:
    """One line per admin action, naming who made it (the token's name, never the token)."""
    log.info(
        "audit: %s by %s%s",
        action,
        access.name,
        f" ({target})" if target else "",
        extra={"event": "audit", "identity": access.name, "action": action, "target": target},
    )
