"""The composition root of a region node: storage, routing, queues and gRPC, as one object.

`Node(config)` builds nothing until `await node.start()`, which returns once
the node serves (its `address` then holds the port it bound, also for port 0);
`await node.stop()` tears it down gracefully. Tests, benchmarks and embedding
applications run nodes in-process this way; `python -m node run` is a thin
shell over it (node/__main__.py) that adds signals and the "listening" line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from federation.auth_state import OFF, LocalAuth, TokenStore, state_of_key
from federation.durable_interest import DurableInterest
from federation.forwarding import GuaranteedForwarder
from federation.mesh import Mesh
from federation.region_membership import RegionMembership
from federation.spools import LinkSpools
from federation.supervisor import LinkService, LinkSupervisor
from federation.topology import StaticTopology, Topology
from federation.transport import server_ssl_context
from node.admin_service import AdminService, add_admin_service
from node.auth import Authenticator, read_signing_key
from node.clients import ClientRegistry, raise_open_file_limit
from node.commits import Commits
from node.config import NodeConfig
from node.direct import DirectRouter
from node.gateway import Gateway
from node.grpc_errors import GrpcErrors
from node.grpc_server import PortInUse, bind_server, check_port_free
from node.joining import JoinRequest, start_membership
from node.local_delivery import RelayedDelivery
from node.publishing import Dedup, Publisher
from node.queues import QueueTable
from node.service import SERVICE, BrokerService, handlers
from node.subscription_list import SubscriptionList
from plexus.v1 import link_pb2_grpc as lrpc
from plexus.v1 import plexus_pb2  # noqa: F401  (registers plexus.v1 for reflection)
from storage.dedup import DedupLog
from storage.environment import Environment
from storage.interest import InterestStore
from storage.spool import Spool

if TYPE_CHECKING:
    from federation.tls import NodeTls
    from node.http_api.server import HttpFrontDoor
    from node.metrics import MetricsServer
    from node.mqtt.retained import RetainedStore
    from node.mqtt.server import MqttFrontDoor

log = logging.getLogger(__name__)

ADMIN_SERVICE = "plexus.v1.Admin"
EXPIRY_SWEEP_S = 1.0
STOP_GRACE_S = 2.0
HEALTH_SERVICES = ("", SERVICE)

__all__ = ["Node", "PortInUse"]


class FrontDoor(Protocol):
    """A listener beside gRPC (MQTT, HTTP) over the node's gateway."""

    async def start(self) -> str: ...

    async def stop(self) -> None: ...


class Node:
    """One region node: `start()`, `address`, `stop()`.

    With a `topology`, the node is region `config.name` of that cluster: it
    serves the Link service and keeps its links up; with `join`, it first
    joins the running cluster through a member.
    """

    def __init__(
        self, config: NodeConfig, topology: Topology | None = None, join: JoinRequest | None = None
    ) -> None:
        self.config = config
        self.topology = topology
        self.join = join
        self.address = ""
        self.metrics_address = ""
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False
        self._teardown: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._env: Environment | None = None
        self._commits: Commits | None = None
        self._membership: RegionMembership | None = None
        self._supervisor: LinkSupervisor | None = None
        self._known: DurableInterest | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics: MetricsServer | None = None
        self._queues: QueueTable | None = None
        self._health: health.aio.HealthServicer | None = None
        self._links_started = False
        # What the MQTT and HTTP front doors call; set once started.
        self.gateway: Gateway | None = None
        self.mqtt_address = ""
        # The MQTT and HTTP listeners, when `mqtt` and `http` are set.
        self.mqtt: MqttFrontDoor | None = None
        self.http: HttpFrontDoor | None = None
        self.http_address = ""
        self._front_doors: list[FrontDoor] = []
        # MQTT's retained messages, kept durably per topic (when MQTT is on).
        self.retained: RetainedStore | None = None

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def request_stop(self) -> None:
        """Ask the node to stop (admin Shutdown, a signal, removal from the cluster)."""
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Return once the node has stopped, whoever asked it to."""
        await self._stopped.wait()

    async def start(self) -> None:
        """Build everything and serve; raises PlexusError (e.g. PortInUse, DataDirLocked)
        when the node cannot start, having closed whatever it had opened."""
        if self._started:
            raise RuntimeError(f"node {self.config.name} was started already")
        self._started = True
        try:
            await self._start()
        except BaseException:
            self._teardown = asyncio.ensure_future(self._stop(quiet=True))
            await asyncio.shield(self._teardown)
            raise
        self._tasks.append(asyncio.create_task(self._stop_when_requested()))

    async def stop(self) -> None:
        """Stop gracefully: links, membership, gRPC (with grace), metrics, writer, LMDB.

        Idempotent; also safe on a node that never started."""
        self._stop_requested.set()
        if not self._started:
            self._stopped.set()
            return
        await asyncio.shield(self._begin_stop())

    def _begin_stop(self) -> asyncio.Future[None]:
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._stop())
        return self._teardown

    async def _stop_when_requested(self) -> None:
        await self._stop_requested.wait()
        self._begin_stop()

    async def _start(self) -> None:
        config, topology = self.config, self.topology
        loop = asyncio.get_running_loop()
        open_files = raise_open_file_limit()  # before anything holds a file
        # Before recovering anything: a taken port ends it.
        for address in (config.listen, config.mqtt, config.http):
            if address is not None:
                check_port_free(address)
        tls = _load_tls(config)
        self._env = env = Environment(config.data, config.map_size_mb << 20)
        self._commits = commits = Commits(env, loop)
        commits.start()
        spool = Spool(env)
        mesh = supervisor = membership = None
        router = DirectRouter()
        local = RelayedDelivery(router)
        if topology is not None and config.auth_key is not None and not topology.auth_key:
            # --auth-key seeds the cluster's replicated key like the file's [auth] key.
            topology = replace(topology, auth_key=read_signing_key(config.auth_key).decode())
        if topology is not None:
            self._membership = membership = await start_membership(config, topology, self.join, tls)
            source = membership or StaticTopology(topology)
            self._known = known = DurableInterest(InterestStore(env), commits.submit)
            mesh = Mesh(config.name, local, known)
            local.spools = LinkSpools(spool, topology.settings, commits.submit)
            self._supervisor = supervisor = LinkSupervisor(
                config.name, source, mesh, local.spools, tls
            )
            # Before serving: route by the interest known before a restart, over spools ready.
            current = source.current()
            await known.restore(mesh, current.regions)
            mesh.set_configured_links(current.links)
            await local.spools.open_all(current.neighbours(config.name))
            router.interest = mesh
        self._queues = queues = QueueTable(spool, commits, config, mesh)
        queues.recover(spool.last_seq())
        dedup = Dedup.open(DedupLog(env), config.dedup_window_events, config.dedup_window_s)
        publisher = Publisher(
            config.name,
            router,
            queues,
            spool,
            commits,
            config.max_payload_bytes,
            dedup,
            max_headers=config.max_headers,
            max_header_bytes=config.max_header_bytes,
        )
        local.publisher = publisher
        if mesh is not None and local.spools is not None:
            publisher.remote = mesh
            publisher.forwarder = GuaranteedForwarder(mesh, local.spools)

        grpc_errors = GrpcErrors()
        self._server, self.address = server, address = bind_server(
            config.listen, grpc_errors, tls.server_credentials() if tls else None
        )
        wanted = config.metrics_address()
        if wanted is not None:
            # prometheus_client (~4 MiB) loads only in a node that serves metrics.
            from node.metrics import MetricsServer

            https = (config.tls_cert, config.tls_key) if config.metrics_tls else None
            self._metrics = MetricsServer(wanted, https)
            self.metrics_address = self._metrics.start()
        clients = ClientRegistry.from_config(config, open_files)
        tokens = _token_store(config, topology, membership)
        auth = Authenticator(tokens.auth())
        tokens.watch_auth(auth.follow)
        log.info(
            "node %s %s",
            config.name,
            "requires client tokens"
            if auth.enabled
            else "runs open: no token key, no authentication",
        )
        service = BrokerService(
            config,
            address,
            env,
            router,
            queues,
            publisher,
            clients,
            self.metrics_address,
            auth,
            grpc_errors,
        )
        self.gateway = Gateway(config, auth, router, queues, publisher, clients)
        if self._metrics is not None:
            from node.metrics import NodeCollector, NodeParts

            parts = NodeParts(
                config.name,
                env,
                router,
                queues,
                publisher,
                lambda: service.guaranteed_out,
                grpc_errors,
                lambda: clients.limits_hit + queues.limits_hit + self._retained_limits_hit(),
                supervisor,
                membership.status if membership is not None else None,
            )
            self._metrics.collect(NodeCollector(loop, parts))
        server.add_generic_rpc_handlers((handlers(service),))

        def local_view(topic: str) -> tuple[int, list[str]]:
            return len(router.index.match(topic)), sorted(q.name for q in queues.match(topic))

        add_admin_service(
            server,
            AdminService(
                config.name,
                supervisor,
                mesh,
                local_view,
                membership,
                self.request_stop,
                lambda error: setattr(publisher, "leaving", error),
                clients=clients,
                subscriptions=SubscriptionList(router, queues),
                tls=tls,
                auth=auth,
                tokens=tokens,
            ),
        )
        if supervisor is not None:
            lrpc.add_LinkServicer_to_server(LinkService(supervisor), server)
        self._health = health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            SERVICE,
            ADMIN_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        await server.start()
        await self._open_front_doors(self.gateway)
        for name in HEALTH_SERVICES:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        scheme = "https" if config.metrics_tls else "http"
        serving = f", metrics on {scheme}://{self.metrics_address}/metrics" if wanted else ""
        log.info("node %s serving on %s%s, data in %s", config.name, address, serving, config.data)
        if tls is not None and config.name not in tls.regions:
            log.warning(
                "node %s: its certificate %s names %s, not region %s: links will be refused",
                config.name,
                config.tls_cert,
                ", ".join(repr(r) for r in tls.regions) or "no region",
                config.name,
                extra={"event": "wrong_certificate", "region": config.name},
            )
        if tls is None:
            log.warning(
                "node %s is open: no TLS, plaintext gRPC on %s (give --tls-cert, --tls-key "
                "and --tls-ca, or the cluster file's [tls], to serve TLS)",
                config.name,
                address,
                extra={"event": "open_node", "region": config.name},
            )
        self._tasks.append(asyncio.create_task(_sweep_expired(queues)))
        if supervisor is not None:
            self._links_started = True
            await supervisor.start()
            supervisor.source.watch(self._follow)

    def _retained_limits_hit(self) -> Counter[str]:
        return self.retained.limits_hit if self.retained is not None else Counter()

    async def _open_front_doors(self, gateway: Gateway) -> None:
        """MQTT and HTTP, where configured, with the node's TLS certificate when it has one."""
        config = self.config
        tls = (
            server_ssl_context(config.tls_cert, config.tls_key)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        if config.mqtt is not None:
            from node.mqtt.retained import RetainedStore
            from node.mqtt.server import MqttFrontDoor

            assert self._env is not None and self._commits is not None
            self.retained = await RetainedStore.open(
                self._env,
                self._commits,
                max_messages=config.retained_max_messages,
                max_bytes=config.retained_max_bytes,
            )
            self.mqtt = mqtt = MqttFrontDoor(gateway, config.mqtt, tls, config.name, self.retained)
            self._front_doors.append(mqtt)
            self.mqtt_address = await mqtt.start()
        if config.http is not None:
            from node.http_api.server import HttpFrontDoor

            self.http = http = HttpFrontDoor(gateway, config.http, tls, config.name)
            self._front_doors.append(http)
            self.http_address = await http.start()

    def _follow(self, now: Topology) -> None:
        if self.config.name not in now.regions and not self.stop_requested:
            log.info("region %s was removed from the cluster: stopping", self.config.name)
            self.request_stop()

    async def _stop(self, quiet: bool = False) -> None:
        if not quiet:
            log.info("node %s stopping", self.config.name)
        try:
            await self._close()
        finally:
            self._stopped.set()

    async def _close(self) -> None:
        """Close what was opened, in the reverse order; each step runs even if one failed."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        steps: list[Callable[[], Any]] = [lambda: asyncio.gather(*tasks, return_exceptions=True)]
        if self._supervisor is not None and self._links_started:
            steps.append(self._supervisor.stop)
        if self._membership is not None:
            steps.append(self._membership.stop)
        if self._health is not None:
            steps.append(self._not_serving)
        for door in reversed(self._front_doors):
            steps.append(door.stop)
        if self._server is not None or self._metrics is not None:
            steps.append(self._stop_servers)
        if self._known is not None:
            steps.append(self._known.flush)  # before the writer ends: it applies what is queued
        if self._queues is not None:
            steps.append(self._queues.settle)  # its reads from disk, before the LMDB closes
        if self._commits is not None:
            steps.append(lambda: asyncio.to_thread(self._commits.stop))  # type: ignore[union-attr]
        if self._env is not None:
            steps.append(self._env.close)
        for step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result) or asyncio.isfuture(result):
                    await result
            except Exception:
                log.exception("node %s: a step of stopping failed", self.config.name)

    async def _stop_servers(self) -> None:
        """gRPC with grace; meanwhile the metrics server (up to its 0.5 s poll interval)."""
        metrics, server = self._metrics, self._server
        await asyncio.gather(
            *([asyncio.to_thread(metrics.stop)] if metrics is not None else []),
            *([server.stop(STOP_GRACE_S)] if server is not None else []),
        )

    async def _not_serving(self) -> None:
        assert self._health is not None
        for name in HEALTH_SERVICES:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


def _load_tls(config: NodeConfig) -> NodeTls | None:
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        return None
    # Certificates are parsed (cryptography loaded) only for a node with TLS.
    from federation.tls import load_node_tls

    return load_node_tls(config.tls_cert, config.tls_key, config.tls_ca)


def _token_store(
    config: NodeConfig, topology: Topology | None, membership: RegionMembership | None
) -> TokenStore:
    """The replicated token state in a Raft cluster; else this node's own, from its key."""
    if membership is not None:
        return membership
    if config.auth_key is not None:
        return LocalAuth(state_of_key(read_signing_key(config.auth_key)))
    if topology is not None and topology.auth_key:
        return LocalAuth(state_of_key(topology.auth_key.encode()))
    return LocalAuth(OFF)


async def _sweep_expired(queues: QueueTable) -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_S)
        try:
            queues.expire_all()
        except Exception:
            log.exception("expiry sweep failed")
