"""A connector's own Prometheus endpoint (`plexus connector run --metrics HOST:PORT`).

A collector reads the connector's `Stats` when Prometheus scrapes (nothing is
counted twice); prometheus_client serves it on threads of its own, over HTTPS
when given a certificate and key, as a node does with `--metrics-tls`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from plexus.connectors.base import Stats
from plexus.errors import FailedPrecondition

__all__ = ["STATES", "ConnectorCollector", "MetricsEndpoint"]

STATES = ("starting", "running", "retrying", "stopped")
_COUNTERS = (
    ("events_in", "Events the connector took in (read from its source or its queue)."),
    ("events_out", "Events the connector handed on (published, or confirmed by its sink)."),
    ("retries", "Retries after a transient failure."),
    ("errors", "Failures, transient and permanent."),
    ("dead_lettered", "Events refused for good, left to the queue's dead-message queue."),
    ("duplicates", "Resends after a lost confirmation, where the kind can tell."),
)


class ConnectorCollector:
    def __init__(self, name: str, kind: str, stats: Stats) -> None:
        self.labels = [name, kind]
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        names = ["connector", "kind"]
        for field, text in _COUNTERS:
            counter = CounterMetricFamily(f"plexus_connector_{field}", text, labels=names)
            counter.add_metric(self.labels, getattr(self.stats, field))
            yield counter
        lag = GaugeMetricFamily(
            "plexus_connector_lag_seconds",
            "Source: commit to acked by the mesh; sink: published to confirmed by the sink.",
            labels=names,
        )
        lag.add_metric(self.labels, self.stats.lag_s)
        yield lag
        state = GaugeMetricFamily(
            "plexus_connector_state", "1 for the connector's state now.", labels=[*names, "state"]
        )
        for name in STATES:
            state.add_metric([*self.labels, name], 1.0 if self.stats.state == name else 0.0)
        yield state


class MetricsEndpoint:
    """The HTTP(S) server of /metrics, on its own threads."""

    def __init__(self, address: str, https: tuple[Path, Path] | None = None) -> None:
        self.requested = address
        self.https = https
        self.registry = CollectorRegistry()
        self._httpd: Any = None

    def start(self, collector: ConnectorCollector) -> str:
        """Listen; the address bound (port 0 becomes the one picked)."""
        self.registry.register(collector)  # type: ignore[arg-type]
        host, _, port = self.requested.rpartition(":")
        cert, key = self.https or (None, None)
        try:
            self._httpd, _thread = start_http_server(
                int(port),
                host.strip("[]"),
                self.registry,
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
            )
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot serve metrics on {self.requested}: {exc.strerror or exc}"
            ) from None
        return f"{host}:{self._httpd.server_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    def stop(self) -> None:
        """Blocks until the serving thread has stopped: call it off the loop."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
