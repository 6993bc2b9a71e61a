"""A link's spool is trimmed as the peer acks: acks that come while a trim commits are not
lost, and are trimmed together in the next commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import lmdb
import pytest

from federation.link import LinkSession
from federation.spools import LinkSpools
from federation.topology import ClusterSettings
from plexus.v1 import link_pb2 as lpb
from storage.environment import Environment
from storage.spool import Spool, StoredEvent
from tests.harness import eventually, open_link_protocol

DEADLINE_S = 10.0
SPOOLED = 30


class _Mesh:
    """Just enough of a Mesh for an open link session that only hears acks."""

    def link_opened(self, link: Any) -> None:
        pass

    def link_closed(self, link: Any, reason: str) -> None:
        pass


class _HeldCommits:
    """The node's commits, run in order; the first one waits until `release()`."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.count = 0
        self.started = asyncio.Event()
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def __call__(self, change: Callable[[lmdb.Transaction], Any]) -> Any:
        self.count += 1
        self.started.set()
        await self._gate.wait()
        with self.env.env.begin(write=True) as txn:
            return change(txn)


async def _spooled_session(env: Environment, spool: Spool) -> tuple[LinkSession, LinkSpools]:
    """An open link session to eu whose spool holds SPOOLED events, all of them sent."""
    commits = _HeldCommits(env)
    spools = LinkSpools(spool, ClusterSettings(), commits)
    commits.release()  # opening the spool allocates the link's id
    await spools.open_all(["eu"])
    forwards = [spools.reserve("eu", 5, b"envelope", enforce_quota=True) for _ in range(SPOOLED)]
    stored = [StoredEvent(seq, b"event", (), 0, 5, (f,)) for seq, f in enumerate(forwards, 1)]
    with env.env.begin(write=True) as txn:
        spool.put_events(txn, stored)
    protocol = open_link_protocol("eu")
    session = LinkSession(_Mesh(), protocol, {}, spools)  # type: ignore[arg-type]
    protocol.sent(SPOOLED)  # everything spooled was sent
    return session, spools


async def _write(frame: lpb.LinkFrame) -> None:
    pass


def _ack(upto: int) -> lpb.LinkFrame:
    return lpb.LinkFrame(ack=lpb.LinkAck(upto=upto))


async def test_acks_heard_while_a_trim_commits_are_trimmed_together_in_the_next(
    env: Environment, spool: Spool
) -> None:
    session, spools = await _spooled_session(env, spool)
    commits = spools.commit = _HeldCommits(env)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    async with asyncio.timeout(DEADLINE_S):
        running = asyncio.create_task(session.run(inbox.get, _write))
        await inbox.put(_ack(10))
        await commits.started.wait()  # the first trim's commit is on its way...
        for upto in (20, SPOOLED):  # ...when the next acks come
            await inbox.put(_ack(upto))
        await eventually(lambda: inbox.empty(), DEADLINE_S, "the acks to be read")
        commits.release()
        await eventually(lambda: spools.links["eu"].depth == 0, DEADLINE_S, "the spool to drain")
        await inbox.put(grpc.aio.EOF)
        await running
    assert commits.count == 2
    assert spool.read_spool(spools.links["eu"].link_id, 0, 100) == []
    with env.reading() as txn:
        assert txn.stat(spool.events)["entries"] == 0


async def test_a_trim_that_fails_is_logged_and_the_next_ack_trims_what_it_left(
    env: Environment, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    session, spools = await _spooled_session(env, spool)
    held = _HeldCommits(env)
    held.release()
    failures = [lmdb.Error("mdb_txn_commit: Input/output error")]

    async def commit(change: Callable[[lmdb.Transaction], Any]) -> Any:
        if failures:
            raise failures.pop()
        return await held(change)

    spools.commit = commit
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    async with asyncio.timeout(DEADLINE_S):
        running = asyncio.create_task(session.run(inbox.get, _write))
        await inbox.put(_ack(10))
        await eventually(lambda: "trimming the spool up to 10 failed" in caplog.text,
                         DEADLINE_S, "the failed trim to be logged")  # fmt: skip
        assert spools.links["eu"].depth == SPOOLED  # nothing trimmed, nothing lost
        await inbox.put(_ack(SPOOLED))
        await eventually(lambda: spools.links["eu"].depth == 0, DEADLINE_S, "the spool to drain")
        await inbox.put(grpc.aio.EOF)
        await running
    assert spool.read_spool(spools.links["eu"].link_id, 0, 100) == []
