"""Client tokens for tests, signed with the `key` fixture (tests/conftest.py)."""

from __future__ import annotations

from plexus.tokens import Grants, new_claims, sign


def token(key: bytes, name: str, expires_in_s: int | None = None, **grants: object) -> str:
    """A token named `name` with `grants` (publish=[...], admin=True, ...)."""
    return sign(new_claims(name, Grants(**grants), expires_in_s), key)  # type: ignore[arg-type]
