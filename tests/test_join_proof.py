"""Join proofs and challenges, without sockets: good once, in time, for the addresses signed."""

from __future__ import annotations

from federation.join_proof import JoinChallenges, join_proven, prove_join
from plexus.v1 import plexus_pb2 as pb

SECRET = "a-cluster-secret-of-32-bytes-xx"


def request(nonce: bytes = b"n" * 16) -> pb.AddRegionRequest:
    member = pb.RegionMember(name="sa", grpc="10.0.0.9:7400", raft="10.0.0.9:7401")
    return prove_join(SECRET, "demo", pb.AddRegionRequest(region=member, links=["us"], nonce=nonce))


def test_a_proven_join_holds_for_its_secret_and_cluster_only():
    assert join_proven(SECRET, "demo", request())
    assert not join_proven("another-secret-of-many-bytes", "demo", request())
    assert not join_proven(SECRET, "other", request())


def test_changing_any_registered_address_the_links_or_the_nonce_breaks_the_proof():
    for change in (
        lambda r: setattr(r.region, "grpc", "6.6.6.6:7400"),
        lambda r: setattr(r.region, "raft", "6.6.6.6:7401"),
        lambda r: setattr(r.region, "name", "us"),
        lambda r: r.links.append("eu"),
        lambda r: setattr(r, "nonce", b"m" * 16),
    ):
        altered = request()
        change(altered)
        assert not join_proven(SECRET, "demo", altered)


def test_a_challenge_is_redeemed_once_and_only_before_it_expires():
    challenges = JoinChallenges(ttl_ms=1000)
    challenges.issue(b"a", now_ms=0)
    challenges.issue(b"b", now_ms=0)
    assert challenges.redeem(b"a", now_ms=1000)
    assert not challenges.redeem(b"a", now_ms=1000)  # used
    assert not challenges.redeem(b"b", now_ms=1001)  # expired
    assert not challenges.redeem(b"never issued", now_ms=0)


def test_asking_for_challenges_in_a_loop_forgets_the_oldest_instead_of_growing():
    challenges = JoinChallenges(limit=3)
    for n in range(5):
        challenges.issue(bytes([n]), now_ms=0)
    assert not challenges.redeem(bytes([0]), now_ms=0)
    assert all(challenges.redeem(bytes([n]), now_ms=0) for n in (2, 3, 4))
