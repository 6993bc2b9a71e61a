"""Cluster membership replicated with Raft (pysyncobj): regions, links, settings.

`RaftMembership` is a `TopologySource`: the node's links follow the replicated
state as it changes. pysyncobj runs on its own thread; every applied command
hands an immutable snapshot to the event loop with `call_soon_threadsafe`, and
commands go out with a callback that resolves an asyncio future, retried
within a deadline. Events never pass through Raft: a region cut off from the
Raft majority keeps routing, it only cannot change membership.

Replicated methods follow pysyncobj's rules (see the workspace notes): they
run on every node, also during journal replay, so they read no clock, do no
I/O, check no leadership, and are idempotent; they answer with a result
string instead of raising.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from federation.auth_state import OFF, AuthState, record_of, state_from_snapshot
from federation.prevote import PreVoteSyncObj
from federation.raft_status import RaftStatus
from federation.topology import ClusterSettings, RegionSpec, Topology
from plexus.errors import AlreadyExists, FailedPrecondition, NotFound, PlexusError, Unavailable
from plexus.tokens import TokenClaims

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.1
# How long an add waits to hear of a refusal (another change still in progress).
ADD_SETTLE_S = 1.0
# Failures after which the same command may succeed when tried again.
_RETRIABLE = {
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.REQUEST_DENIED,
    FAIL_REASON.UNKNOWN_OUTCOME,
    FAIL_REASON.QUEUE_FULL,
}
OK = "ok"
LEADER = 2  # pysyncobj's raft state of a leader (0 follower, 1 candidate)


class MembershipState(SyncObjConsumer):
    """The replicated state. Plain dicts and lists: pysyncobj pickles it into its dump."""

    def __init__(
        self,
        on_change: Callable[[dict[str, Any]], None],
        on_auth_change: Callable[[dict[str, Any]], None] = lambda _snapshot: None,
    ) -> None:
        # Set before SyncObjConsumer.__init__: attributes that exist then are not replicated.
        self._on_change = on_change
        self._on_auth_change = on_auth_change
        super().__init__()
        self.cluster = ""
        self.regions: dict[str, dict[str, str]] = {}
        self.links: list[list[str]] = []
        self.settings: dict[str, Any] = {}
        # Regions whose nodes vote in Raft (at most settings' raft_voters); the others follow.
        self.voters: list[str] = []
        self.version = 0
        # Client tokens (federation/auth_state.py): the signing key (PEM), revocations,
        # tokens issued; apart from `version` so a revocation does not touch the topology.
        self.auth: dict[str, Any] = {
            "signing_key": "",
            "revoked_names": [],
            "revoked_ids": [],
            "issued": [],
            "version": 0,
        }

    @replicated
    def seed(
        self,
        cluster: str,
        regions: dict[str, dict[str, str]],
        links: list[list[str]],
        settings: dict[str, Any],
        voters: list[str],
    ) -> str:
        """The cluster as the first cluster file described it; ignored once seeded."""
        if self.regions:
            return "seeded already"
        self.voters = sorted(voters)
        self.cluster = cluster
        self.regions = {name: dict(spec) for name, spec in regions.items()}
        self.links = sorted(sorted(link) for link in links)
        self.settings = dict(settings)
        return self._changed()

    @replicated
    def add_region(self, name: str, spec: dict[str, str], links: list[str]) -> str:
        if name in self.regions:
            return "exists"
        unknown = [peer for peer in links if peer not in self.regions]
        if unknown:
            return f"unknown:{unknown[0]}"
        self.regions[name] = dict(spec)
        if spec.get("raft") and len(self.voters) < self._voter_count():
            self.voters.append(name)
        for peer in links:
            self.links.append(sorted((name, peer)))
        self.links.sort()
        return self._changed()

    @replicated
    def remove_region(self, name: str) -> str:
        if name not in self.regions:
            return "missing"
        del self.regions[name]
        self.links = [link for link in self.links if name not in link]
        if name in self.voters:
            self.voters.remove(name)
            # Keep the voters' number up: the first follower by name takes the place.
            followers = sorted(
                r for r, spec in self.regions.items() if spec.get("raft") and r not in self.voters
            )
            if followers:
                self.voters.append(followers[0])
        return self._changed()

    @replicated
    def add_link(self, a: str, b: str) -> str:
        for region in (a, b):
            if region not in self.regions:
                return f"unknown:{region}"
        if a == b:
            return "self"
        link = sorted((a, b))
        if link in self.links:
            return "exists"
        self.links.append(link)
        self.links.sort()
        return self._changed()

    @replicated
    def remove_link(self, a: str, b: str) -> str:
        link = sorted((a, b))
        if link not in self.links:
            return "missing"
        self.links.remove(link)
        return self._changed()

    @replicated
    def seed_auth_key(self, signing_key: str) -> str:
        """The key that signs client tokens, from the cluster file; ignored once set."""
        if self.auth["signing_key"]:
            return "seeded already"
        self.auth["signing_key"] = signing_key
        return self._auth_changed()

    @replicated
    def record_token(self, record: dict[str, Any]) -> str:
        if any(issued["jti"] == record["jti"] for issued in self.auth["issued"]):
            return OK  # the same command applied twice (a retry after a timeout)
        self.auth["issued"].append(dict(record))
        return self._auth_changed()

    @replicated
    def revoke_token(self, name: str, jti: str) -> str:
        for key, value in (("revoked_names", name), ("revoked_ids", jti)):
            if value and value not in self.auth[key]:
                self.auth[key].append(value)
        return self._auth_changed()

    def _auth_changed(self) -> str:
        self.auth["version"] += 1
        self._on_auth_change(self.auth_snapshot())
        return OK

    def auth_snapshot(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, list) else value
            for key, value in self.auth.items()
        }

    def _voter_count(self) -> int:
        return int(self.settings.get("raft_voters", ClusterSettings.raft_voters))

    def _changed(self) -> str:
        self.version += 1
        self._on_change(self.snapshot())
        return OK

    def snapshot(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "regions": {name: dict(spec) for name, spec in self.regions.items()},
            "links": [list(link) for link in self.links],
            "settings": dict(self.settings),
            "version": self.version,
            "voters": sorted(self.voters),
        }

    def _deserialize(self, data: dict[str, Any]) -> None:
        # A restart loads the dump file: tell the node what it holds.
        super()._deserialize(data)
        if self.regions:
            self._on_change(self.snapshot())
        if self.auth["version"]:
            self._on_auth_change(self.auth_snapshot())


RAFT_PORT_WAIT_S = 1.0


class RaftPortInUse(FailedPrecondition):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"cannot listen for Raft on {address}: the address is in use or not local")


def check_raft_port_free(address: str, wait_s: float = RAFT_PORT_WAIT_S) -> None:
    """Refuse a taken Raft port at start: pysyncobj would retry the bind forever, silently.

    Waits up to `wait_s` for the port: a SyncObj destroyed in this process
    closes its socket on its tick thread, a moment later.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pysyncobj binds
            try:
                probe.bind((host, int(port)))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RaftPortInUse(address) from exc
        time.sleep(0.05)


class RaftMembership:
    """A TopologySource backed by the Raft-replicated membership."""

    def __init__(
        self,
        region: str,
        self_raft: str,
        other_rafts: Iterable[str],
        secret: str,
        data_dir: Path,
        seed: Topology | None,
    ) -> None:
        self.region = region
        self.self_raft = self_raft
        self.secret = secret
        self._seed = seed
        self._other_rafts = sorted(set(other_rafts) - {self_raft})
        self._data_dir = data_dir
        self._watchers: list[Callable[[Topology], None]] = []
        self._topology = seed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changes = asyncio.Lock()
        self._auth = OFF
        self._auth_watchers: list[Callable[[AuthState], None]] = []
        self._state = MembershipState(self._applied, self._auth_applied)
        self._sync: SyncObj | None = None
        self._seeding: asyncio.Task[None] | None = None
        self._seeding_auth: asyncio.Task[None] | None = None
        # Set once the replicated state holds the cluster (seeded, joined or restored).
        self._ready = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start Raft; with a seed, make sure the cluster is seeded (first writer wins)."""
        self._loop = asyncio.get_running_loop()
        raft_dir = self._data_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        check_raft_port_free(self.self_raft)
        conf = SyncObjConf(
            # Only the address the cluster file names (pysyncobj binds 0.0.0.0 otherwise).
            bindAddress=self.self_raft,
            password=self.secret,
            dynamicMembershipChange=True,
            journalFile=str(raft_dir / "journal"),
            fullDumpFile=str(raft_dir / "dump"),
            useFork=False,
            connectionTimeout=30.0,
            connectionRetryTime=0.5,
            # Ten heartbeats a second (and no more ticks than that) keep an
            # idle voter near 1 % of a core; a new leader still takes about
            # 0.4 s. Entries go out at once rather than with the next beat.
            raftMinTimeout=0.31,
            raftMaxTimeout=0.55,
            appendEntriesPeriod=0.1,
            autoTickPeriod=0.1,
            appendEntriesUseBatch=False,
            leaderFallbackTimeout=3.0,
            commandsWaitLeader=False,
            onStateChanged=self._role_changed,
        )
        # With a pre-vote in front of pysyncobj's election (federation/prevote.py): a
        # voter cut off from the majority does not run its term up and depose the
        # leader when it returns.
        self._sync = PreVoteSyncObj(
            self.self_raft, self._other_rafts, conf=conf, consumers=[self._state]
        )
        if self._seed is not None and not self._state.regions:
            self._seeding = asyncio.create_task(self._seed_until_done(self._seed))
        if self._seed is not None and self._seed.auth_key and not self._state.auth["signing_key"]:
            self._seeding_auth = asyncio.create_task(self._seed_auth_key(self._seed.auth_key))

    def _role_changed(self, old: int, new: int) -> None:
        """On pysyncobj's thread: the leader changed when this node wins or loses the lead."""
        if LEADER not in (old, new):
            return
        term = self._sync.raftCurrentTerm if self._sync is not None else 0
        won = new == LEADER
        log.info(
            "Raft leader changed: region %s %s the leader (term %d)",
            self.region,
            "is now" if won else "is no longer",
            term,
            extra={
                "event": "raft_leader_changed",
                "region": self.region,
                "leader": self.region if won else "",
                "term": term,
            },
        )

    async def _seed_until_done(self, seed: Topology) -> None:
        # Needs a Raft leader: until one is elected, the node runs on the file's topology.
        while not self._state.regions:
            try:
                await self._command(
                    self._state.seed,
                    seed.cluster,
                    {name: _spec_dict(spec) for name, spec in seed.regions.items()},
                    [sorted(link) for link in seed.links],
                    dataclasses.asdict(seed.settings),
                    seed.raft_voters(),
                )
            except Unavailable:
                log.info("membership: no Raft majority yet; seeding again")

    async def _seed_auth_key(self, signing_key: str) -> None:
        # A cluster seeded before it had a key gets the file's key too (first writer wins).
        while not self._state.auth["signing_key"]:
            try:
                await self._command(self._state.seed_auth_key, signing_key)
            except Unavailable:
                log.info("membership: no Raft majority yet; seeding the token key again")

    def stop(self) -> None:
        for task in (self._seeding, self._seeding_auth):
            if task is not None:
                task.cancel()
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None

    # ------------------------------------------------------------ TopologySource

    def current(self) -> Topology:
        if self._topology is None:
            raise Unavailable("the cluster membership has not arrived yet")
        return self._topology

    def watch(self, callback: Callable[[Topology], None]) -> None:
        self._watchers.append(callback)

    def _applied(self, snapshot: dict[str, Any]) -> None:
        # On pysyncobj's thread (or during replay before the loop runs): hand over.
        if self._loop is None or self._loop.is_closed():
            self._publish(snapshot)
            return
        self._loop.call_soon_threadsafe(self._publish, snapshot)

    def _publish(self, snapshot: dict[str, Any]) -> None:
        if not snapshot["regions"]:
            return
        # The replicated state holds the cluster: changes may go ahead (they are
        # ordered by the Raft log, whatever this node has applied so far).
        self._ready.set()
        topology = Topology(
            cluster=snapshot["cluster"],
            secret=self.secret,
            regions={
                name: RegionSpec(name=name, **spec) for name, spec in snapshot["regions"].items()
            },
            links=frozenset(frozenset(link) for link in snapshot["links"]),
            settings=ClusterSettings(**snapshot["settings"]),
            version=snapshot["version"],
            voters=frozenset(snapshot.get("voters", ())),
        )
        # Catching up replays older states (a joining region sees the cluster
        # before it was added): only ever move forward.
        if self._topology is not None and topology.version <= self._topology.version:
            return
        self._topology = topology
        for callback in list(self._watchers):
            callback(topology)

    # ------------------------------------------------------------ tokens

    def auth(self) -> AuthState:
        return self._auth

    def watch_auth(self, callback: Callable[[AuthState], None]) -> None:
        self._auth_watchers.append(callback)

    def _auth_applied(self, snapshot: dict[str, Any]) -> None:
        # On pysyncobj's thread: build the state there (it parses the key), hand it over.
        state = state_from_snapshot(snapshot)
        if self._loop is None or self._loop.is_closed():
            self._publish_auth(state)
            return
        self._loop.call_soon_threadsafe(self._publish_auth, state)

    def _publish_auth(self, state: AuthState) -> None:
        if state.version <= self._auth.version:
            return
        self._auth = state
        for callback in list(self._auth_watchers):
            callback(state)

    async def record_token(self, claims: TokenClaims) -> None:
        await self._replicated_state()
        await self._command(self._state.record_token, record_of(claims))

    async def revoke_token(self, name: str, jti: str) -> None:
        await self._replicated_state()
        await self._command(self._state.revoke_token, name, jti)

    # ------------------------------------------------------------ changes

    async def add_region(self, spec: RegionSpec, links: Iterable[str]) -> Topology:
        """Add a region and its links, then its Raft node (one change at a time)."""
        async with self._changes:
            await self._replicated_state()
            result = await self._command(
                self._state.add_region, spec.name, _spec_dict(spec), list(links)
            )
            _raise_for(result, spec.name)
            if spec.raft and spec.name in self.current().voters:
                await self._membership(self._sync_obj().addNodeToCluster, spec.raft, wait=False)
            return self.current()

    async def remove_region(self, name: str) -> Topology:
        async with self._changes:
            await self._replicated_state()
            spec = self.current().regions.get(name)
            if spec is None:
                raise NotFound(f"no region named {name!r} in the cluster")
            if spec.raft == self.self_raft:
                raise FailedPrecondition(
                    f"region {name!r} cannot remove itself: ask another region"
                )
            voters_before = set(self.current().raft_voters())
            if spec.raft and name in voters_before:
                await self._membership(self._sync_obj().removeNodeFromCluster, spec.raft, wait=True)
            _raise_for(await self._command(self._state.remove_region, name), name)
            after = self.current()
            for promoted in set(after.raft_voters()) - voters_before:
                # It joins Raft when it sees itself a voter (federation/region_membership.py).
                raft = after.regions[promoted].raft
                if raft:
                    await self._membership(self._sync_obj().addNodeToCluster, raft, wait=False)
            return after

    async def add_link(self, a: str, b: str) -> Topology:
        async with self._changes:
            await self._replicated_state()
            _raise_for(await self._command(self._state.add_link, a, b), f"{a}-{b}")
            return self.current()

    async def remove_link(self, a: str, b: str) -> Topology:
        async with self._changes:
            await self._replicated_state()
            _raise_for(await self._command(self._state.remove_link, a, b), f"{a}-{b}")
            return self.current()

    async def _replicated_state(self) -> None:
        """Changes apply to the replicated state: wait (bounded) until it holds the cluster."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._ready.wait()
        except TimeoutError:
            raise _no_majority() from None

    def status(self) -> RaftStatus:
        status = self._sync_obj().getStatus()
        role = {0: "follower", 1: "candidate", LEADER: "leader"}.get(status["state"], "unknown")
        leader = status["leader"]
        return RaftStatus(
            role=role,
            term=int(status["raft_term"]),
            leader=getattr(leader, "address", None) if leader is not None else None,
            commit_index=int(status["commit_idx"]),
            has_quorum=bool(status["has_quorum"]),
        )

    def _sync_obj(self) -> SyncObj:
        if self._sync is None:
            raise Unavailable("membership is not running")
        return self._sync

    async def _command(self, method: Callable[..., Any], *args: Any) -> Any:
        """Apply a replicated command, retrying what may succeed later, within a deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMAND_TIMEOUT_S
        while True:
            future: asyncio.Future[tuple[Any, int]] = loop.create_future()

            def done(
                result: Any, error: int, future: asyncio.Future[tuple[Any, int]] = future
            ) -> None:
                loop.call_soon_threadsafe(_resolve, future, (result, error))

            method(*args, callback=done)
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    result, error = await future
            except TimeoutError:
                raise _no_majority() from None
            if error == FAIL_REASON.SUCCESS:
                return result
            if error not in _RETRIABLE or loop.time() > deadline:
                raise _no_majority()
            if error != FAIL_REASON.LEADER_CHANGED:  # else a new leader is known: at once
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _membership(self, change: Callable[..., None], address: str, wait: bool) -> None:
        """A Raft membership change, retried while another one is still in progress.

        With `wait=False` (adding a node, which completes only once that node
        runs Raft) a change that is neither refused nor done after a short
        while is left to complete on its own.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMAND_TIMEOUT_S
        while True:
            future: asyncio.Future[int] = loop.create_future()

            def done(_result: Any, error: int, future: asyncio.Future[int] = future) -> None:
                loop.call_soon_threadsafe(_resolve, future, error)

            change(address, callback=done)
            patience = max(0.1, deadline - loop.time()) if wait else ADD_SETTLE_S
            try:
                async with asyncio.timeout(patience):
                    error = await future
            except TimeoutError:
                if not wait:
                    return
                raise _no_majority() from None
            if error == FAIL_REASON.SUCCESS:
                return
            if error not in _RETRIABLE or loop.time() > deadline:
                raise _no_majority()
            await asyncio.sleep(RETRY_PAUSE_S)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _no_majority() -> PlexusError:
    return Unavailable(
        "membership cannot change now: this region does not reach a majority of the "
        "cluster's Raft members (events still flow)"
    )


def _raise_for(result: str, what: str) -> None:
    if result == OK:
        return
    if result == "exists":
        raise AlreadyExists(f"{what} already exists in the cluster")
    if result == "missing":
        raise NotFound(f"{what} is not in the cluster")
    if result.startswith("unknown:"):
        raise NotFound(f"no region named {result.split(':', 1)[1]!r} in the cluster")
    if result == "self":
        raise FailedPrecondition(f"a link joins two different regions, got {what}")
    raise FailedPrecondition(f"{what}: {result}")


def _spec_dict(spec: RegionSpec) -> dict[str, str]:
    out = {"grpc": spec.grpc}
    if spec.raft:
        out["raft"] = spec.raft
    return out
