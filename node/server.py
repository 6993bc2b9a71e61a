"""The composition root of a region node: storage, routing, queues and gRPC, wired and run."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from federation.durable_interest import DurableInterest
from federation.forwarding import GuaranteedForwarder
from federation.mesh import Mesh
from federation.spools import LinkSpools
from federation.supervisor import LinkService, LinkSupervisor
from federation.topology import StaticTopology, Topology
from node.admin_service import AdminService, add_admin_service
from node.clients import ClientRegistry
from node.commits import Commits
from node.config import NodeConfig
from node.direct import DirectRouter
from node.joining import JoinRequest, start_membership
from node.metrics import GrpcErrors, MetricsServer, NodeCollector, NodeParts
from node.publishing import Dedup, Publisher
from node.queues import QueueTable
from node.service import SERVICE, BrokerService, handlers
from node.subscription_list import SubscriptionList
from plexus.errors import FailedPrecondition
from plexus.v1 import link_pb2_grpc as lrpc
from plexus.v1 import plexus_pb2  # noqa: F401  (registers plexus.v1 for reflection)
from storage.dedup import DedupLog
from storage.environment import Environment
from storage.interest import InterestStore
from storage.spool import Spool

log = logging.getLogger(__name__)

ADMIN_SERVICE = "plexus.v1.Admin"
EXPIRY_SWEEP_S = 1.0
STOP_GRACE_S = 2.0
MAX_MESSAGE_BYTES = 128 << 20

GRPC_OPTIONS = [
    # Two nodes must never share a port silently (gRPC enables SO_REUSEPORT by default).
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


class PortInUse(FailedPrecondition):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"cannot listen on {address}: the address is in use or not local")


async def run_node(
    config: NodeConfig, topology: Topology | None = None, join: JoinRequest | None = None
) -> None:
    """Run a node until SIGTERM or SIGINT; raises PlexusError when it cannot start.

    With a `topology`, the node is region `config.name` of that cluster: it
    serves the Link service and keeps its links up.
    """
    loop = asyncio.get_running_loop()
    env = Environment(config.data, config.map_size_mb << 20)
    commits = Commits(env, loop)
    commits.start()
    server = metrics = None
    try:
        spool = Spool(env)
        mesh = supervisor = known = None
        router = DirectRouter()
        local = _Local(router)
        membership = None
        if topology is not None:
            membership = await start_membership(config, topology, join)
            source = membership or StaticTopology(topology)
            known = DurableInterest(InterestStore(env), commits.submit)
            mesh = Mesh(config.name, local, known)
            local.spools = LinkSpools(spool, topology.settings, commits.submit)
            supervisor = LinkSupervisor(config.name, source, mesh, local.spools)
            # Before serving: route by the interest known before a restart, over spools ready.
            current = source.current()
            await known.restore(mesh, current.regions)
            mesh.set_configured_links(current.links)
            await local.spools.open_all(current.neighbours(config.name))
            router.interest = mesh
        queues = QueueTable(spool, commits, config, mesh)
        queues.recover(spool.last_seq())
        dedup = Dedup.open(DedupLog(env), config.dedup_window_events, config.dedup_window_s)
        publisher = Publisher(
            config.name, router, queues, spool, commits, config.max_payload_bytes, dedup
        )
        local.publisher = publisher
        if mesh is not None and local.spools is not None:
            publisher.remote = mesh
            publisher.forwarder = GuaranteedForwarder(mesh, local.spools)

        _check_port_free(config.listen)
        grpc_errors = GrpcErrors()
        server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[grpc_errors])
        try:
            port = server.add_insecure_port(config.listen)
        except RuntimeError:
            port = 0
        if not port:
            raise PortInUse(config.listen)
        host = config.listen.rpartition(":")[0]
        address = f"{host}:{port}"
        metrics_address = ""
        wanted = config.metrics_address()
        if wanted is not None:
            metrics = MetricsServer(wanted)
            metrics_address = metrics.start()
        clients = ClientRegistry()
        service = BrokerService(
            config, address, env, router, queues, publisher, clients, metrics_address
        )
        if metrics is not None:
            parts = NodeParts(
                config.name,
                env,
                router,
                queues,
                publisher,
                lambda: service.guaranteed_out,
                grpc_errors,
                supervisor,
                membership.status if membership is not None else None,
            )
            metrics.collect(NodeCollector(loop, parts))
        server.add_generic_rpc_handlers((handlers(service),))

        def local_view(topic: str) -> tuple[int, list[str]]:
            return len(router.index.match(topic)), sorted(q.name for q in queues.match(topic))

        stop = asyncio.Event()
        add_admin_service(
            server,
            AdminService(
                config.name,
                supervisor,
                mesh,
                local_view,
                membership,
                stop.set,
                lambda error: setattr(publisher, "leaving", error),
                clients=clients,
                subscriptions=SubscriptionList(router, queues),
            ),
        )
        if supervisor is not None:
            lrpc.add_LinkServicer_to_server(LinkService(supervisor), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            SERVICE,
            ADMIN_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        await server.start()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        serving = f", metrics on http://{metrics_address}/metrics" if metrics_address else ""
        print(f"plexus node {config.name} listening on {address}{serving}", flush=True)
        log.info("node %s serving on %s%s, data in %s", config.name, address, serving, config.data)
        sweeper = asyncio.create_task(_sweep_expired(queues))
        if supervisor is not None:
            await supervisor.start()

            def follow(now: Topology) -> None:
                if config.name not in now.regions:
                    log.info("region %s was removed from the cluster: stopping", config.name)
                    stop.set()

            supervisor.source.watch(follow)
        await stop.wait()
        log.info("node %s stopping", config.name)
        sweeper.cancel()
        if supervisor is not None:
            await supervisor.stop()
        if membership is not None:
            membership.stop()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        if server is not None:
            await server.stop(STOP_GRACE_S)
        if metrics is not None:
            await asyncio.to_thread(metrics.stop)
        if known is not None:
            known.flush()
        await asyncio.to_thread(commits.stop)
        env.close()


class _Local:
    """Local delivery for events that reached this region over a link."""

    def __init__(self, router: DirectRouter) -> None:
        self.router = router
        self.publisher: Publisher | None = None
        self.spools: LinkSpools | None = None

    def deliver_direct(self, items: list[tuple[str, bytes]]) -> None:
        self.router.fan_out(items)

    def store_guaranteed(
        self, peer: str, events: list[Any], upto: int, done: Callable[[], None]
    ) -> None:
        assert self.publisher is not None and self.spools is not None
        link = self.spools.links[peer]
        store = self.spools.store

        def record(txn: Any) -> None:
            store.set_received(txn, link.link_id, upto)

        def landed() -> None:
            link.received_upto = upto
            done()

        self.publisher.store_relayed(events, upto, record, landed)


def _check_port_free(address: str) -> None:
    """Refuse a taken port ourselves: gRPC would also log a C-level error line."""
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise PortInUse(address) from exc


async def _sweep_expired(queues: QueueTable) -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_S)
        try:
            queues.expire_all()
        except Exception:
            log.exception("expiry sweep failed")
