"""Where `plexus top` reads the mesh: every region's node, asked concurrently.

The regions to ask come from a local cluster's record (`--state-dir`) or, through
one node (`--server`, `--region`), from the replicated membership it reports.
One client per region stays open between refreshes; a region that does not
answer shows as down, its client is dropped, and the next refresh reconnects.
A refresh asks for the links without the interest (the patterns of every region),
so its cost does not grow with the subscriptions of the mesh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from plexus.errors import PlexusError, Timeout, Unavailable
from plexus.local.ops import link_state
from plexus.tui.model import (
    ClientRow,
    LinkState,
    Mesh,
    QueueRow,
    RegionDetail,
    RegionState,
    SpoolRow,
)
from plexus.tui.rates import Rates

if TYPE_CHECKING:
    from plexus.client import Client
    from plexus.client.info import LinksView, SubscriptionsView
    from plexus.local.state import StateDir

__all__ = ["LiveSource", "Source"]

CONNECT_TIMEOUT_S = 1.0
# A node that hangs must not hold a refresh for long: it shows as down instead.
ASK_TIMEOUT_S = 2.0

T = TypeVar("T")


class Source(Protocol):
    """What the views read; a fixed one feeds them in tests."""

    title: str

    async def mesh(self) -> Mesh: ...

    async def region(self, name: str) -> RegionDetail: ...

    async def clients(self, region: str) -> tuple[ClientRow, ...]: ...

    async def subscriptions(self, region: str, contains: str, limit: int) -> SubscriptionsView: ...

    async def client(self, region: str) -> Client: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    address: str
    running: bool  # False only when the local record knows the process is gone


@dataclass(frozen=True, slots=True)
class _Answer:
    view: LinksView | None = None
    membership: dict[str, Any] | None = None
    error: str = ""


class LiveSource:
    """The mesh of a local cluster (`state`) or as seen through the node at `entry`."""

    def __init__(
        self,
        *,
        state: StateDir | None = None,
        entry: str | None = None,
        ca: str | None = None,
        token: str | None = None,
    ) -> None:
        if (state is None) == (entry is None):
            raise ValueError("give a local cluster's state or an entry node, not both")
        self.state = state
        # A local cluster's own token (PLEXUS_TOKEN, else its admin token) unless one is given.
        self.token = token if token is not None or state is None else state.client_token()
        self.entry = entry
        # The CA that verifies the nodes (TLS); a local cluster's own by default.
        if ca is None and state is not None and state.ca_cert.exists():
            ca = str(state.ca_cert)
        self.ca = ca
        self.title = f"local cluster in {state.path}" if state else f"through {entry}"
        self._clients: dict[str, Client] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._membership: dict[str, Any] | None = None
        self._addresses: dict[str, str] = {}
        self._rates = Rates()

    # ------------------------------------------------------------ reading

    async def mesh(self) -> Mesh:
        cluster, targets, record_links = await self._targets()
        answers = await asyncio.gather(*(self._ask(t) for t in targets))
        by_name = dict(zip((t.name for t in targets), answers, strict=True))
        self._learn([a.membership for a in answers if a.membership])
        views = {name: a.view for name, a in by_name.items()}
        links = self._membership["links"] if self._membership else record_links
        regions = tuple(_region_state(t, by_name[t.name]) for t in targets)
        return Mesh(
            cluster=cluster or (self._membership or {}).get("cluster", "") or "",
            regions=regions,
            links=tuple(_link(a, b, views) for a, b in links),
        )

    async def region(self, name: str) -> RegionDetail:
        """One region in detail; rates come from its counters since the last call."""
        info, queues, view, membership = await self._ask_region(
            name,
            lambda client: asyncio.gather(
                client.node_info(),
                client.list_queues(),
                client.list_links(interest=False),
                client.membership(),
            ),
        )
        now = time.monotonic()
        rate = self._rates.per_s
        dead_queues = {q.dead_message_queue for q in queues if q.dead_message_queue}
        depth = {q.name: q.depth for q in queues}
        raft = membership["raft"]
        return RegionDetail(
            name=name,
            address=self.address_of(name),
            version=info.version,
            uptime_ms=info.uptime_ms,
            metrics_address=info.metrics_address,
            raft_role=raft["role"],
            raft_term=raft["term"],
            raft_leader=next(
                (r["name"] for r in membership["regions"] if r["raft"] == raft["leader"]),
                raft["leader"],
            ),
            subscriptions=info.subscriptions,
            rate_in=rate((name, "in"), info.direct_in + info.guaranteed_in, now),
            rate_out=rate((name, "out"), info.direct_out + info.guaranteed_out, now),
            discarded=info.discarded,
            queues=tuple(
                QueueRow(
                    name=q.name,
                    depth=q.depth,
                    consumers=q.consumers,
                    unacked=q.unacked,
                    rate_in=rate((name, q.name, "in"), q.events_in, now),
                    rate_out=rate((name, q.name, "out"), q.events_out, now),
                    oldest_age_ms=q.oldest_age_ms,
                    dead=depth.get(q.dead_message_queue, 0),
                )
                for q in queues
                if q.name not in dead_queues
            ),
            spools=tuple(
                SpoolRow(
                    peer=link.peer,
                    state=link.state,
                    depth=link.spool_depth,
                    oldest_age_ms=link.spool_oldest_age_ms,
                    direct_dropped=link.direct_dropped,
                    held_down=link.held_down,
                    reason=link.reason,
                )
                for link in view.links
            ),
        )

    async def clients(self, region: str) -> tuple[ClientRow, ...]:
        """The clients connected to `region` now, in the order they connected."""
        infos = await self._ask_region(region, lambda client: client.clients())
        now_ms = time.time() * 1000
        return tuple(
            ClientRow(
                id=c.id,
                peer=c.peer,
                connected_ms=max(0, int(now_ms - c.connected_since_ms)),
                publishers=c.publishers,
                subscriptions=len(c.subscriptions),
                consuming=c.consuming,
                published=c.events_published,
                delivered=c.events_delivered,
                discarded=c.events_discarded,
            )
            for c in infos
        )

    async def subscriptions(self, region: str, contains: str, limit: int) -> SubscriptionsView:
        """At most `limit` of the subscriptions of `region` that contain `contains`, searched
        by the node, and how many matched in all."""
        return await self._ask_region(
            region, lambda client: client.subscriptions(contains=contains, limit=limit)
        )

    # ------------------------------------------------------------ clients

    async def _ask_region(self, name: str, ask: Callable[[Client], Awaitable[T]]) -> T:
        """`ask` the node of region `name`, within ASK_TIMEOUT_S. A node that does not
        answer is Unavailable, and its client is dropped so that the next call reconnects."""
        address = self.address_of(name)
        try:
            client = await self._client(address)
            async with asyncio.timeout(ASK_TIMEOUT_S):
                return await ask(client)
        except (Unavailable, Timeout, TimeoutError) as exc:
            await self._drop(address)
            raise _unavailable(name, address, exc) from None

    def address_of(self, region: str) -> str:
        try:
            return self._addresses[region]
        except KeyError:
            raise Unavailable(f"region {region} is not in the mesh (yet)") from None

    async def client(self, region: str) -> Client:
        """The open client of `region` (connecting when needed), for the tail and actions."""
        return await self._client(self.address_of(region))

    async def _client(self, address: str) -> Client:
        from plexus.client import Client

        async with self._connecting.setdefault(address, asyncio.Lock()):
            client = self._clients.get(address)
            if client is None:
                client = await Client.connect(
                    address, timeout=CONNECT_TIMEOUT_S, ca=self.ca, token=self.token
                )
                self._clients[address] = client
            return client

    async def _drop(self, address: str) -> None:
        client = self._clients.pop(address, None)
        if client is not None:
            await client.close(timeout=0.5)

    async def close(self) -> None:
        for address in list(self._clients):
            await self._drop(address)

    # ------------------------------------------------------------ which regions

    async def _targets(self) -> tuple[str, list[_Target], list[list[str]]]:
        if self.state is not None:
            cluster, targets, links = await asyncio.to_thread(_read_record, self.state)
        else:
            cluster, targets, links = await self._entry_targets()
        self._addresses = {t.name: t.address for t in targets}
        return cluster, targets, links

    async def _entry_targets(self) -> tuple[str, list[_Target], list[list[str]]]:
        assert self.entry is not None
        if self._membership is None:
            answer = await self._ask(_Target("", self.entry, True))
            if answer.membership is None or answer.view is None:
                raise Unavailable(answer.error)
            self._learn([answer.membership])
            if not answer.membership["regions"]:  # a node outside any cluster
                return answer.view.region, [_Target(answer.view.region, self.entry, True)], []
        assert self._membership is not None
        targets = [_Target(r["name"], r["grpc"], True) for r in self._membership["regions"]]
        return self._membership["cluster"], targets, []

    def _learn(self, memberships: list[dict[str, Any]]) -> None:
        """Keep the newest membership any region reported."""
        for membership in memberships:
            if self._membership is None or membership["version"] > self._membership["version"]:
                self._membership = membership

    async def _ask(self, target: _Target) -> _Answer:
        if not target.running:
            return _Answer(error="stopped")
        try:
            client = await self._client(target.address)
            async with asyncio.timeout(ASK_TIMEOUT_S):
                view, membership = await asyncio.gather(
                    client.list_links(interest=False), client.membership()
                )
        except (PlexusError, TimeoutError) as exc:
            await self._drop(target.address)
            return _Answer(error=str(_unavailable(target.name, target.address, exc)))
        return _Answer(view, membership)


def _read_record(state: StateDir) -> tuple[str, list[_Target], list[list[str]]]:
    """The local cluster's regions, with whether each process still runs (reads files)."""
    from plexus.local.launcher import is_running

    record = state.load()
    targets = [
        _Target(r.name, r.grpc, is_running(r.pid, record.cluster_file)) for r in record.regions
    ]
    return record.cluster, targets, [list(link) for link in record.links]


def _unavailable(name: str, address: str, exc: BaseException) -> Unavailable:
    if isinstance(exc, TimeoutError | Timeout):
        return Unavailable(f"region {name} at {address} did not answer within {ASK_TIMEOUT_S} s")
    return exc if isinstance(exc, Unavailable) else Unavailable(str(exc))


def _region_state(target: _Target, answer: _Answer) -> RegionState:
    raft = (answer.membership or {}).get("raft", {})
    return RegionState(
        name=target.name,
        address=target.address,
        up=answer.view is not None,
        raft_role=raft.get("role", ""),
        raft_term=raft.get("term", 0),
        error=answer.error,
    )


def _link(a: str, b: str, views: dict[str, LinksView | None]) -> LinkState:
    """A link as both ends report it; each way's rate as its sending end counts it."""
    va, vb = views.get(a), views.get(b)
    la = va.link(b) if va is not None else None
    lb = vb.link(a) if vb is not None else None
    return LinkState(
        a=a,
        b=b,
        state=link_state(va, vb, a, b),
        rate_ab=la.events_out_per_s if la else (lb.events_in_per_s if lb else 0.0),
        rate_ba=lb.events_out_per_s if lb else (la.events_in_per_s if la else 0.0),
        spool_depth=(la.spool_depth if la else 0) + (lb.spool_depth if lb else 0),
        held_down=bool((la and la.held_down) or (lb and lb.held_down)),
    )
