"""Node settings: from a TOML file and command-line flags, validated in one place.

Every problem is reported at once, each naming its source (file or flag) and key.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plexus.errors import ConfigError

REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
MAX_PAYLOAD_BYTES_LIMIT = 64 << 20
MAX_SUBSCRIBER_BUFFER_EVENTS = 1_000_000
# `metrics = "off"` (or `--no-metrics`): the node serves no metrics.
METRICS_OFF = "off"


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="region name: lower-case letters, digits, '-'")
    listen: str = Field(default="127.0.0.1:7000", description="gRPC address, HOST:PORT")
    metrics: str | None = Field(
        default=None,
        description="Prometheus metrics address, HOST:PORT or 'off'; "
        "unset: a free port on the gRPC host",
    )
    mqtt: str | None = Field(
        default=None, description="MQTT listener address, HOST:PORT (0: a free port); unset: none"
    )
    http: str | None = Field(
        default=None, description="HTTP gateway address, HOST:PORT (0: a free port); unset: none"
    )
    data: Path = Field(description="data directory (LMDB environment, lock)")
    map_size_mb: int = Field(default=1024, ge=1, description="initial LMDB map size; grows")
    max_payload_bytes: int = Field(
        default=1 << 20,
        ge=1,
        le=MAX_PAYLOAD_BYTES_LIMIT,
        description="largest event accepted, counted whole: payload, topic, headers",
    )
    # Bounds: memory in bytes as well as counts, per client and per node (docs/architecture.md,
    # "Limits"). Past one, the event or stream is refused naming the setting.
    subscriber_buffer_events: int = Field(
        default=10_000, ge=1, le=MAX_SUBSCRIBER_BUFFER_EVENTS, description="default per subscriber"
    )
    subscriber_buffer_bytes: int = Field(
        default=8 << 20,
        ge=1,
        le=1 << 30,
        description="encoded events buffered per subscriber; past it they are discarded, counted",
    )
    consumer_inflight_bytes: int = Field(
        default=64 << 20,
        ge=1,
        description="delivered, unacked bytes per consumer, whatever its credits",
    )
    max_headers: int = Field(default=64, ge=0, description="headers per event")
    max_header_bytes: int = Field(
        default=16 << 10, ge=0, description="keys and values of one event's headers, in bytes"
    )
    max_subscriptions_per_client: int = Field(
        default=4_096, ge=1, description="Subscribe streams open on one client connection"
    )
    max_streams_per_client: int = Field(
        default=8_192, ge=1, description="Publish, Subscribe and Consume streams per connection"
    )
    max_queues: int = Field(default=50_000, ge=1, description="queues in this region")
    retained_max_messages: int = Field(
        default=100_000, ge=1, description="MQTT retained messages kept (one per topic)"
    )
    retained_max_bytes: int = Field(
        default=64 << 20, ge=1, description="MQTT retained messages kept, encoded bytes"
    )
    max_client_connections: int = Field(
        default=0,
        ge=0,
        description="client connections with streams open; 0: the open-file limit less a "
        "reserve for admin calls, links and storage",
    )
    queue_max_depth: int = Field(default=1_000_000, ge=1, description="default per queue")
    queue_max_bytes: int = Field(default=1 << 30, ge=1, description="default per queue")
    queue_max_deliveries: int = Field(default=0, ge=0, description="default; 0 = no limit")
    dedup_window_events: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="de-duplication keys of guaranteed events remembered; 0 = off",
    )
    auth_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs and verifies client tokens; "
        "in a cluster it seeds the replicated key. Unset: the node runs open",
    )
    dedup_window_s: float = Field(
        default=120.0, gt=0, le=86_400, description="how long a de-duplication key is remembered"
    )
    tls_cert: Path | None = Field(default=None, description="this node's certificate (PEM)")
    tls_key: Path | None = Field(default=None, description="its private key (PEM)")
    tls_ca: Path | None = Field(default=None, description="the cluster CA certificate (PEM)")
    metrics_tls: bool = Field(
        default=False, description="serve metrics over HTTPS with the node's certificate"
    )
    insecure: bool = Field(
        default=False, description="allow plaintext gRPC on an address other than loopback"
    )

    @field_validator("name")
    @classmethod
    def _region_name(cls, value: str) -> str:
        if not REGION_NAME.match(value):
            raise ValueError(
                "must be 1-32 lower-case letters, digits or '-', starting with a letter"
            )
        return value

    @field_validator("listen", "mqtt", "http")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _is_address(value):
            raise ValueError("must be HOST:PORT with a port from 0 to 65535")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is not None and value != METRICS_OFF and not _is_address(value):
            raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, or {METRICS_OFF!r}")
        return value

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> NodeConfig:
        given = [f for f in TLS_FILES if getattr(self, f) is not None]
        if given and len(given) != len(TLS_FILES):
            missing = ", ".join(f for f in TLS_FILES if f not in given)
            raise ValueError(f"TLS needs tls_cert, tls_key and tls_ca together: {missing} missing")
        if self.metrics_tls and not given:
            raise ValueError("metrics_tls needs TLS: give tls_cert, tls_key and tls_ca")
        for key in ("listen", "mqtt", "http"):
            address = getattr(self, key)
            if address is None or given or self.insecure or is_loopback(address.rpartition(":")[0]):
                continue
            # Anyone who reaches the port could publish, read and administer, in plaintext.
            raise ValueError(
                f"{key}: {address!r} is not a loopback address and TLS is off: give "
                "tls_cert, tls_key and tls_ca (--tls-cert/--tls-key/--tls-ca, or the "
                "cluster file's [tls]), or insecure (--insecure) to serve plaintext there"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def metrics_address(self) -> str | None:
        """Where to serve metrics (None: nowhere); by default a free port on the gRPC host."""
        if self.metrics == METRICS_OFF:
            return None
        return self.metrics or f"{self.listen.rpartition(':')[0]}:0"


TLS_FILES = ("tls_cert", "tls_key", "tls_ca")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_address(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def load_config(file: Path | None, overrides: dict[str, Any]) -> NodeConfig:
    """Settings from `file` (its [node] table), then flags that were given."""
    values: dict[str, Any] = {}
    source = "command line"
    if file is not None:
        source = str(file)
        try:
            doc = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
        table = doc.get("node", doc)
        if not isinstance(table, dict):
            raise ConfigError(source, ["[node] must be a table"])
        values.update(table)
        source = f"{file} [node]"
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return NodeConfig(**values)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top)"
            msg = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule across settings: its message names them
                problems.append(msg)
                continue
            if err["type"] == "missing":
                msg = "missing (required)"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{key}: {msg}" + _got(err))
        raise ConfigError(source, problems) from None


def _got(err: Any) -> str:
    if err["type"] in ("missing", "extra_forbidden"):
        return ""
    return f" (got {err.get('input')!r})"
