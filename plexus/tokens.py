"""Client tokens: what they grant, and how they are signed and read (Ed25519 JWTs).

A token is a JWT signed with the cluster's Ed25519 key (`EdDSA`), through
PyJWT: `sub` is the token's name, `jti` its unique id, `exp` its expiry
(optional), and the `plexus` claim its grants. The node verifies tokens
(node/auth.py); `plexus up` and `plexus token create --key FILE` sign them
offline. Signing and verifying need the server extra (PyJWT, cryptography),
imported only here, when used, so the SDK alone does not need them.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from plexus.errors import InvalidArgument

ALGORITHM = "EdDSA"
GRANTS_CLAIM = "plexus"
# A queue grant of "*" covers every queue.
ANY_QUEUE = "*"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Grants:
    """What a token may do: topic patterns to publish and subscribe, queue names, admin."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    consume: tuple[str, ...] = ()
    create: tuple[str, ...] = ()
    purge: tuple[str, ...] = ()
    admin: bool = False

    def as_claim(self) -> dict[str, Any]:
        return {
            "publish": list(self.publish),
            "subscribe": list(self.subscribe),
            "consume": list(self.consume),
            "create": list(self.create),
            "purge": list(self.purge),
            "admin": self.admin,
        }

    @classmethod
    def from_claim(cls, claim: Any) -> Grants:
        if not isinstance(claim, dict):
            raise ValueError("the plexus claim is not an object")

        def texts(key: str) -> tuple[str, ...]:
            values = claim.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"the plexus claim's {key} is not a list of strings")
            return tuple(values)

        return cls(
            publish=texts("publish"),
            subscribe=texts("subscribe"),
            consume=texts("consume"),
            create=texts("create"),
            purge=texts("purge"),
            admin=claim.get("admin") is True,
        )


@dataclass(frozen=True)
class TokenClaims:
    """A token's contents once its signature is checked."""

    name: str
    jti: str
    grants: Grants
    expires_at: int | None = None  # Unix seconds
    issued_at: int = field(default=0)

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "sub": self.name,
            "jti": self.jti,
            "iat": self.issued_at,
            GRANTS_CLAIM: self.grants.as_claim(),
        }
        if self.expires_at is not None:
            payload["exp"] = self.expires_at
        return payload


def new_claims(name: str, grants: Grants, expires_in_s: int | None = None) -> TokenClaims:
    """Claims for a new token named `name`: a fresh id, issued now."""
    if not name:
        raise InvalidArgument("a token needs a name")
    now = int(time.time())
    expires = now + expires_in_s if expires_in_s is not None else None
    return TokenClaims(name, secrets.token_hex(16), grants, expires, now)


def sign(claims: TokenClaims, private_key_pem: bytes) -> str:
    """The token for `claims`, signed with an Ed25519 private key (PEM)."""
    jwt = _jwt()
    return str(jwt.encode(claims.as_payload(), _private_key(private_key_pem), algorithm=ALGORITHM))


def generate_key() -> bytes:
    """A new Ed25519 private key, as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(private_key_pem: bytes) -> bytes:
    """The public half of an Ed25519 private key (PEM), as PEM: what verifies tokens."""
    from cryptography.hazmat.primitives import serialization

    return (
        _private_key(private_key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"the signing key is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument("the signing key is not an Ed25519 key")
    return key


def _jwt() -> Any:
    try:
        import jwt
    except ImportError:  # the SDK alone: signing is the server's (or plexus up's) business
        raise InvalidArgument("signing tokens needs PyJWT: install plexus-mesh[server]") from None
    return jwt


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `90s`, `15m`, `12h`, `30d` or `2w`."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidArgument(
            f"invalid duration {text!r}: a positive number and a unit (s, m, h, d, w), e.g. 30d"
        )
    return int(match.group(1)) * _UNIT_S[match.group(2)]
