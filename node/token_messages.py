"""Client tokens as the Admin service shows them: grants and token infos in protobuf."""

from __future__ import annotations

from federation.auth_state import AuthState
from plexus.tokens import Grants, TokenClaims
from plexus.v1 import plexus_pb2 as pb


def grants_of(message: pb.TokenGrants) -> Grants:
    return Grants(
        publish=tuple(message.publish),
        subscribe=tuple(message.subscribe),
        consume=tuple(message.consume),
        create=tuple(message.create),
        purge=tuple(message.purge),
        admin=message.admin,
    )


def token_info(claims: TokenClaims, state: AuthState) -> pb.TokenInfo:
    grants = claims.grants
    return pb.TokenInfo(
        name=claims.name,
        id=claims.jti,
        grants=pb.TokenGrants(
            publish=grants.publish,
            subscribe=grants.subscribe,
            consume=grants.consume,
            create=grants.create,
            purge=grants.purge,
            admin=grants.admin,
        ),
        expires_at=claims.expires_at or 0,
        issued_at=claims.issued_at,
        revoked=state.is_revoked(claims.name, claims.jti),
    )
