"""Prometheus metrics of a node, served over HTTP at /metrics.

The publish path pays nothing for them: a custom collector reads the node's
existing counters and state when Prometheus scrapes. prometheus_client serves
scrapes on threads of its own; what lives on the event loop is read *on* the
loop (one snapshot per scrape, handed over with `run_coroutine_threadsafe`),
so a scrape never sees a dict changing under it. Raft status is read on the
scrape's thread: that is pysyncobj's to answer, never the loop's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from federation.link_protocol import LinkState
from federation.raft_status import RaftStatus
from federation.supervisor import LinkSupervisor
from node.direct import DirectRouter
from node.grpc_errors import GrpcErrors
from node.publishing import Publisher
from node.queues import QueueTable
from plexus import __version__
from plexus.errors import FailedPrecondition
from storage.environment import Environment

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_S = 5.0
RAFT_ROLES = ("leader", "follower", "candidate", "non-voter")


class MetricsPortInUse(FailedPrecondition):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"cannot serve metrics on {address}: the address is in use or not local")


# ------------------------------------------------------------------ what is read


@dataclass
class NodeParts:
    """The parts of a running node that metrics read (all of them live on the loop)."""

    region: str
    env: Environment
    router: DirectRouter
    queues: QueueTable
    publisher: Publisher
    # Guaranteed events sent to queue consumers (the Broker service counts them).
    guaranteed_out: Callable[[], int]
    grpc_errors: GrpcErrors
    # Refusals by a limit since the node started, by the limit's name.
    limits_hit: Callable[[], Mapping[str, int]]
    supervisor: LinkSupervisor | None = None
    raft_status: Callable[[], RaftStatus] | None = None


def node_families(parts: NodeParts) -> list[Metric]:
    """Every metric of the node except Raft's, read now (call it on the loop)."""
    counters = parts.publisher.counters
    delivered, discarded = parts.router.counts()
    info = GaugeMetricFamily(
        "plexus_node_info",
        "The node's region and version (always 1).",
        labels=["region", "version"],
    )
    info.add_metric([parts.region, __version__], 1)
    events_in = CounterMetricFamily(
        "plexus_events_in",
        "Events clients published to this node, by delivery mode.",
        labels=["mode"],
    )
    events_in.add_metric(["direct"], counters.direct_in)
    events_in.add_metric(["guaranteed"], counters.guaranteed_in)
    events_out = CounterMetricFamily(
        "plexus_events_out",
        "Deliveries to local clients by delivery mode: direct events to subscribers, "
        "guaranteed events (redeliveries included) to queue consumers.",
        labels=["mode"],
    )
    events_out.add_metric(["direct"], delivered)
    events_out.add_metric(["guaranteed"], parts.guaranteed_out())
    families: list[Metric] = [
        info,
        events_in,
        events_out,
        CounterMetricFamily(
            "plexus_direct_discarded",
            "Direct events discarded because a subscriber's buffer was full.",
            value=discarded,
        ),
        GaugeMetricFamily(
            "plexus_subscriptions",
            "Direct subscriptions on this node.",
            value=len(parts.router.index),
        ),
        GaugeMetricFamily(
            "plexus_storage_used_bytes", "Bytes used in the LMDB map.", value=parts.env.used_bytes()
        ),
        GaugeMetricFamily(
            "plexus_storage_map_bytes",
            "Size of the LMDB map (it grows).",
            value=parts.env.map_bytes(),
        ),
    ]
    families += _queue_families(parts.queues)
    if parts.supervisor is not None:
        families += _link_families(parts.supervisor)
    errors = CounterMetricFamily(
        "plexus_grpc_errors",
        "gRPC calls to this node that ended with a status other than OK, by method and code.",
        labels=["method", "code"],
    )
    for (method, code), count in sorted(parts.grpc_errors.counts.items()):
        errors.add_metric([method, code], count)
    families.append(errors)
    hits = CounterMetricFamily(
        "plexus_limit_hits",
        "Requests and events refused by a limit (a setting, a queue's or a link spool's "
        "quota, the disk), by the limit's name.",
        labels=["limit"],
    )
    for limit, count in sorted(parts.limits_hit().items()):
        hits.add_metric([limit], count)
    families.append(hits)
    return families


def _queue_families(queues: QueueTable) -> list[Metric]:
    label = ["queue"]
    depth = GaugeMetricFamily("plexus_queue_depth", "Events in the queue.", labels=label)
    size = GaugeMetricFamily("plexus_queue_bytes", "Payload bytes in the queue.", labels=label)
    consumers = GaugeMetricFamily("plexus_queue_consumers", "Bound consumers.", labels=label)
    unacked = GaugeMetricFamily(
        "plexus_queue_unacked", "Events delivered and not yet acked.", labels=label
    )
    stored = CounterMetricFamily(
        "plexus_queue_events_in", "Events stored into the queue.", labels=label
    )
    acked = CounterMetricFamily(
        "plexus_queue_events_acked", "Events acked and removed from the queue.", labels=label
    )
    for queue in sorted(queues.by_name.values(), key=lambda q: q.name):
        name = [queue.name]
        depth.add_metric(name, queue.depth)
        size.add_metric(name, queue.bytes)
        consumers.add_metric(name, len(queue.consumers))
        unacked.add_metric(name, len(queue.delivery.inflight))
        stored.add_metric(name, queue.events_in)
        acked.add_metric(name, queue.events_out)
    return [depth, size, consumers, unacked, stored, acked]


def _link_families(supervisor: LinkSupervisor) -> list[Metric]:
    label = ["peer"]
    state = GaugeMetricFamily(
        "plexus_link_state",
        "1 for the link's current state (up, connecting, down), 0 for the others.",
        labels=["peer", "state"],
    )
    rtt = GaugeMetricFamily(
        "plexus_link_rtt_seconds", "Round-trip time of the link's last heartbeat.", labels=label
    )
    dropped = CounterMetricFamily(
        "plexus_link_direct_dropped",
        "Direct events dropped because the link's buffer was full (since the link last opened).",
        labels=label,
    )
    depth = GaugeMetricFamily(
        "plexus_link_spool_depth", "Guaranteed events spooled for the link.", labels=label
    )
    size = GaugeMetricFamily("plexus_link_spool_bytes", "Bytes spooled for the link.", labels=label)
    oldest = GaugeMetricFamily(
        "plexus_link_spool_oldest_age_seconds",
        "How long the oldest event spooled for the link has waited (0 when empty).",
        labels=label,
    )
    shed = CounterMetricFamily(
        "plexus_link_spool_discarded",
        "Spooled events discarded to make room (spool_full = discard-oldest).",
        labels=label,
    )
    spools = supervisor.spools
    for peer, now in sorted(supervisor.link_states().items()):
        for each in LinkState:
            state.add_metric([peer, each.value], 1 if each is now else 0)
        session = supervisor.sessions.get(peer)
        if session is not None:
            dropped.add_metric([peer], session.direct_dropped)
            if session.protocol.rtt_ms:
                rtt.add_metric([peer], session.protocol.rtt_ms / 1000)
        spool = spools.links.get(peer)
        if spool is not None:
            depth.add_metric([peer], spool.depth)
            size.add_metric([peer], spool.bytes)
            oldest.add_metric([peer], spools.oldest_age_ms(peer) / 1000)
            shed.add_metric([peer], spool.discarded)
    quota = GaugeMetricFamily(
        "plexus_link_spool_quota_bytes",
        "Most bytes one link's spool may hold.",
        value=spools.settings.link_spool_quota_bytes,
    )
    return [state, rtt, dropped, depth, size, oldest, shed, quota]


def raft_families(status: RaftStatus) -> list[Metric]:
    role = GaugeMetricFamily(
        "plexus_raft_role",
        "1 for this region's Raft role, 0 for the others (non-voter: follows the voters).",
        labels=["role"],
    )
    for each in RAFT_ROLES:
        role.add_metric([each], 1 if status.role == each else 0)
    return [
        role,
        GaugeMetricFamily("plexus_raft_term", "Current Raft term.", value=status.term),
        GaugeMetricFamily(
            "plexus_raft_commit_index", "Raft commit index.", value=status.commit_index
        ),
        GaugeMetricFamily(
            "plexus_raft_has_quorum",
            "1 when this voter reaches a majority of the Raft members.",
            value=int(status.has_quorum),
        ),
    ]


# ------------------------------------------------------------------ serving


class NodeCollector(Collector):
    """What a scrape sees: a snapshot taken on the node's loop, plus Raft status."""

    def __init__(self, loop: asyncio.AbstractEventLoop, parts: NodeParts) -> None:
        self.loop = loop
        self.parts = parts

    def collect(self) -> Iterable[Metric]:
        async def snapshot() -> list[Metric]:
            return node_families(self.parts)

        future = asyncio.run_coroutine_threadsafe(snapshot(), self.loop)
        yield from future.result(SNAPSHOT_TIMEOUT_S)
        if self.parts.raft_status is not None:
            try:
                status = self.parts.raft_status()
            except RuntimeError:  # pysyncobj changed its members mid-read: next scrape
                return
            yield from raft_families(status)


class MetricsServer:
    """The HTTP server of /metrics, on its own threads."""

    def __init__(self, address: str, https: tuple[Path, Path] | None = None) -> None:
        self.requested = address
        # (certificate, key): serve HTTPS with them (Prometheus scrapes with the CA file).
        self.https = https
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._httpd: Any = None

    def start(self) -> str:
        """Listen; the address actually bound (a port 0 becomes the one picked)."""
        host, _, port = self.requested.rpartition(":")
        try:
            cert, key = self.https or (None, None)
            self._httpd, _thread = start_http_server(
                int(port),
                host.strip("[]"),
                self.registry,
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
            )
        except OSError as exc:
            raise MetricsPortInUse(self.requested) from exc
        return f"{host}:{self._httpd.server_port}"

    def collect(self, collector: Collector) -> None:
        self.registry.register(collector)

    def stop(self) -> None:
        """Blocks until the serving thread has stopped: call it off the loop."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
