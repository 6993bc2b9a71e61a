"""The cluster's token state: the key that signs client tokens, revocations, tokens issued.

In a cluster with Raft it is part of the replicated membership
(federation/membership.py), seeded from the cluster file's `[auth] key`, so
every region verifies any token and a revocation reaches every region. Regions
that follow the membership without voting receive the public half of the key
and the revocations in the membership they watch; they never hold the signing
key. A node alone (`--auth-key`) keeps the same state in memory (`LocalAuth`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from plexus.tokens import Grants, TokenClaims, public_key_pem


@dataclass(frozen=True)
class AuthState:
    """One snapshot of the token state (an empty `verify_key`: authentication is off)."""

    verify_key: bytes = b""
    signing_key: bytes = field(default=b"", repr=False)  # never in logs or reprs
    revoked_names: frozenset[str] = frozenset()
    revoked_ids: frozenset[str] = frozenset()
    issued: tuple[TokenClaims, ...] = ()
    version: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.verify_key)

    def is_revoked(self, name: str, jti: str) -> bool:
        return name in self.revoked_names or jti in self.revoked_ids


OFF = AuthState()


def state_of_key(signing_key: bytes) -> AuthState:
    """The state of a fresh key: nothing revoked or issued yet."""
    return AuthState(verify_key=public_key_pem(signing_key), signing_key=signing_key)


def state_from_snapshot(snapshot: dict[str, Any]) -> AuthState:
    """The state held in the replicated membership (plain values, as pysyncobj pickles)."""
    signing_key = snapshot.get("signing_key", "").encode()
    if not signing_key:
        return AuthState(version=snapshot.get("version", 0))
    return AuthState(
        verify_key=public_key_pem(signing_key),
        signing_key=signing_key,
        revoked_names=frozenset(snapshot.get("revoked_names", ())),
        revoked_ids=frozenset(snapshot.get("revoked_ids", ())),
        issued=tuple(claims_from_record(r) for r in snapshot.get("issued", ())),
        version=snapshot.get("version", 0),
    )


def record_of(claims: TokenClaims) -> dict[str, Any]:
    """An issued token as plain values, for the replicated state."""
    return {
        "name": claims.name,
        "jti": claims.jti,
        "grants": claims.grants.as_claim(),
        "expires_at": claims.expires_at,
        "issued_at": claims.issued_at,
    }


def claims_from_record(record: dict[str, Any]) -> TokenClaims:
    return TokenClaims(
        name=record["name"],
        jti=record["jti"],
        grants=Grants.from_claim(record["grants"]),
        expires_at=record["expires_at"],
        issued_at=record["issued_at"],
    )


class LocalAuth:
    """The token state of a node without replicated membership: in memory, this node only."""

    def __init__(self, state: AuthState) -> None:
        self._state = state
        self._watchers: list[Callable[[AuthState], None]] = []

    def auth(self) -> AuthState:
        return self._state

    def watch_auth(self, callback: Callable[[AuthState], None]) -> None:
        self._watchers.append(callback)

    async def record_token(self, claims: TokenClaims) -> None:
        self._set(replace(self._state, issued=(*self._state.issued, claims)))

    async def revoke_token(self, name: str, jti: str) -> None:
        state = self._state
        if name:
            state = replace(state, revoked_names=state.revoked_names | {name})
        if jti:
            state = replace(state, revoked_ids=state.revoked_ids | {jti})
        self._set(state)

    def _set(self, state: AuthState) -> None:
        self._state = replace(state, version=state.version + 1)
        for callback in list(self._watchers):
            callback(self._state)


class TokenStore(Protocol):
    """Where a node's token state lives: replicated membership, or `LocalAuth`."""

    def auth(self) -> AuthState: ...

    def watch_auth(self, callback: Callable[[AuthState], None]) -> None: ...

    async def record_token(self, claims: TokenClaims) -> None: ...

    async def revoke_token(self, name: str, jti: str) -> None: ...
