"""A recorded link handshake replayed against a real node: refused, the spool untouched.

An eavesdropper records what a genuine dialler (one that knows the secret) sends
to region us while it claims to be eu; replaying those frames later, with an ack
meant to delete what us spooled for eu, must get a refusal and leave the spool be.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from federation.link_protocol import LinkProtocol, Send
from plexus import Client
from plexus.v1 import link_pb2 as lpb
from plexus.v1 import link_pb2_grpc as lrpc
from tests.harness import Cluster, eventually

SECRET = "test-secret-0123456789"
SPOOLED = 3


def genuine_dialler() -> LinkProtocol:
    return LinkProtocol(
        cluster="test",
        secret=SECRET,
        region="eu",
        dialled_peer="us",
        admit=lambda region: None,
        nonce=os.urandom(16),
        received_upto=0,
        heartbeat_ms=60_000,
        dead_after_ms=120_000,
        now_ms=0,
    )


async def record_handshake(address: str) -> list[lpb.LinkFrame]:
    """The frames a genuine dialler sends us as eu, as seen on the wire."""
    dialler = genuine_dialler()
    recorded = [a.frame for a in dialler.start(0) if isinstance(a, Send)]
    async with grpc.aio.insecure_channel(address) as channel:
        call = lrpc.LinkStub(channel).Connect()
        await call.write(recorded[0])
        answer = await call.read()
        recorded += [a.frame for a in dialler.receive(answer, 0) if isinstance(a, Send)]
        assert recorded[-1].HasField("proof"), f"no proof sent after {answer}"
        await call.write(recorded[-1])
        call.cancel()
    return recorded


async def replay(address: str, recorded: list[lpb.LinkFrame]) -> list[lpb.LinkFrame]:
    """Send the recorded hello and proof, then at once an ack of the spool; what us answers."""
    hello, proof = recorded
    ack = lpb.LinkFrame(ack=lpb.LinkAck(upto=SPOOLED))
    for _ in range(5):
        answers = []
        async with grpc.aio.insecure_channel(address) as channel:
            call = lrpc.LinkStub(channel).Connect()
            await call.write(hello)
            answers.append(await call.read())
            await call.write(proof)
            try:
                await call.write(ack)
            except grpc.aio.AioRpcError:
                # us refused the proof and ended the call before the ack went out,
                # and gRPC then drops what it had received: replay again.
                continue
            while (frame := await call.read()) is not grpc.aio.EOF:
                answers.append(frame)
            return answers
    raise AssertionError("us ended every replayed call before the pipelined ack was written")


async def spool_depth(client: Client) -> int:
    (link,) = (await client.list_links(interest=False)).links
    return link.spool_depth


async def test_a_replayed_link_hello_is_refused_and_the_spool_stays(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ["eu", "us"], [("eu", "us")], secret=SECRET)
    cluster.start()
    try:
        async with (
            await Client.connect(cluster.address("eu")) as eu,
            await Client.connect(cluster.address("us")) as us,
        ):
            await eu.create_queue("far", ["far/>"])

            async def us_knows_eu_interest() -> bool:
                view = await us.list_links()
                return any("far/>" in i.patterns for i in view.interest if i.region == "eu")

            await eventually(us_knows_eu_interest, 10, "us to learn eu's interest")
        cluster.kill("eu")
        async with await Client.connect(cluster.address("us")) as us:
            for n in range(SPOOLED):
                await us.publish(f"far/{n}", b"x", guaranteed=True)
            assert await spool_depth(us) == SPOOLED

            recorded = await record_handshake(cluster.address("us"))
            answers = await replay(cluster.address("us"), recorded)

            assert answers[0].hello.region == "us"
            assert answers[0].hello.nonce != recorded[0].hello.nonce  # a fresh challenge
            refusals = [f.refusal for f in answers if f.HasField("refusal")]
            assert [r.reason for r in refusals] == ["WRONG_SECRET"], answers
            assert not any(f.HasField("guaranteed") for f in answers)
            assert await spool_depth(us) == SPOOLED
    finally:
        for node in cluster.nodes.values():
            node.kill()
