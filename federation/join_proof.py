"""Proof that a joining region knows the cluster secret, good for one join only, sans-IO.

A member hands out a fresh nonce (`JoinChallenges.issue`); the joiner's
`AddRegionRequest` carries it and an HMAC over it, the cluster and every
address being registered, so a recorded request cannot be replayed and its
addresses cannot be changed on the way. The member redeems the nonce once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict

from plexus.v1 import plexus_pb2 as pb

# Long enough for one join round trip, short enough that a nonce is of no use later.
JOIN_CHALLENGE_TTL_MS = 30_000
# Outstanding challenges a member remembers; past this the oldest are forgotten
# (someone asking for challenges in a loop cannot grow a member's memory).
MAX_OUTSTANDING_CHALLENGES = 1024
NONCE_BYTES = 16


def join_proof(secret: str, cluster: str, request: pb.AddRegionRequest) -> bytes:
    region = request.region
    covered = [
        cluster,
        request.nonce.hex(),
        region.name,
        region.grpc,
        region.raft,
        list(request.links),
    ]
    message = b"plexus-join-v2|" + json.dumps(covered).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def prove_join(secret: str, cluster: str, request: pb.AddRegionRequest) -> pb.AddRegionRequest:
    """`request` (with the member's nonce) signed with the cluster secret."""
    request.proof = join_proof(secret, cluster, request)
    return request


def join_proven(secret: str, cluster: str, request: pb.AddRegionRequest) -> bool:
    return hmac.compare_digest(join_proof(secret, cluster, request), request.proof)


class JoinChallenges:
    """The nonces one member handed out and not yet seen back."""

    def __init__(
        self, ttl_ms: int = JOIN_CHALLENGE_TTL_MS, limit: int = MAX_OUTSTANDING_CHALLENGES
    ) -> None:
        self.ttl_ms = ttl_ms
        self.limit = limit
        self._expiry_ms: OrderedDict[bytes, int] = OrderedDict()

    def issue(self, nonce: bytes, now_ms: int) -> None:
        self._expiry_ms[nonce] = now_ms + self.ttl_ms
        while len(self._expiry_ms) > self.limit:
            self._expiry_ms.popitem(last=False)

    def redeem(self, nonce: bytes, now_ms: int) -> bool:
        """True once for a nonce issued here and not expired; it is forgotten either way."""
        expiry = self._expiry_ms.pop(nonce, None)
        return expiry is not None and now_ms <= expiry
