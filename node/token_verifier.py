"""A token's signature and claims checked with the cluster's public key (PyJWT, Ed25519).

node/auth.py imports this module only once authentication is on: PyJWT and
cryptography add about 10 MiB to a node's memory, which a node without a key
does not need.
"""

from __future__ import annotations

from typing import NamedTuple

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from node.permissions import Access
from plexus.errors import Unauthenticated
from plexus.tokens import ALGORITHM, GRANTS_CLAIM, Grants

__all__ = ["TokenVerifier", "Verified"]


class Verified(NamedTuple):
    access: Access
    jti: str
    expires_at: float  # Unix seconds; inf: never


class TokenVerifier:
    """Verifies tokens against one public key (PEM); `Unauthenticated` for a bad one."""

    def __init__(self, verify_key: bytes) -> None:
        self._key = load_pem_public_key(verify_key)

    def verify(self, token: str) -> Verified:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "jti"], "verify_exp": False},
            )
            grants = Grants.from_claim(payload.get(GRANTS_CLAIM, {}))
        except jwt.InvalidSignatureError:
            raise Unauthenticated("forged (its signature is not the cluster's)") from None
        except (jwt.InvalidTokenError, ValueError):
            raise Unauthenticated("malformed (not a Plexus token)") from None
        exp = payload.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) else float("inf")
        return Verified(Access(str(payload["sub"]), grants), str(payload["jti"]), expires_at)
