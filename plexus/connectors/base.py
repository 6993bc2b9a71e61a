"""What every connector kind is built from: its settings, its counters, its context.

A connector is a client of its region's node (DESIGN.md, "The edge"): a source
publishes guaranteed events and confirms its own position only once the mesh
acked them; a sink consumes a durable queue and acks an event only once its
destination confirmed it. The runtime (`plexus.connectors.runtime`) reads the
file, connects, reports the counters and stops on SIGTERM; a kind only moves
events.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from plexus.client import Client, Event
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "ConnectorSection",
    "ConsumeSection",
    "Context",
    "Outgoing",
    "PermanentError",
    "PublishSection",
    "Sink",
    "Source",
    "Stats",
    "TransientError",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectorSection(Section):
    """`[connector]`: present in every file."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    # "module:function": gets an Event, returns an Outgoing, a list of them, or None.
    transform: str | None = None


class PublishSection(Section):
    """`[publish]`: where a source's events go."""

    topic: str


class ConsumeSection(Section):
    """`[consume]`: the durable queue a sink reads, created if absent."""

    queue: str = Field(min_length=1)
    subscribe: list[str] = Field(min_length=1)
    max_deliveries: int = Field(default=5, ge=1)
    prefetch: int = Field(default=256, ge=1)
    # Seconds a delivery's transient failures are retried before it goes back to the
    # queue (a delivery spent, toward max_deliveries); default: the kind's own.
    retry_for: float | None = Field(default=None, gt=0)


@dataclass(slots=True)
class Outgoing:
    """An event a transform (or a source) hands on."""

    topic: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Stats:
    """The counters `plexus connector list` and Prometheus show."""

    events_in: int = 0
    events_out: int = 0
    retries: int = 0
    errors: int = 0
    dead_lettered: int = 0
    duplicates: int = 0  # a sink's resends after a lost confirmation, where it can tell
    lag_s: float = 0.0  # source: commit -> acked by the mesh; sink: published -> confirmed
    position: str = ""  # source: the confirmed LSN; sink: the last acked event id
    last_error: str = ""
    state: str = "starting"  # starting | running | retrying | stopped

    def failed(self, error: BaseException | str) -> None:
        self.errors += 1
        self.last_error = " ".join(str(error).split())[:500]


class TransientError(Exception):
    """The destination or source failed in a way worth retrying (down, 5xx, timeout)."""


class PermanentError(Exception):
    """This event can never be written (bad shape for the table...): dead-letter it."""


@dataclass(slots=True)
class Context:
    """What the runtime gives a kind: a connected client and where to count."""

    name: str
    client: Client
    stats: Stats
    stopping: asyncio.Event
    transform: Callable[[Event], Sequence[Outgoing]] | None = None
    # A source sets it once what is committed from then on is captured (a CDC source:
    # once it streams from its slot): only then does `connector run` say it runs.
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, event: Outgoing, key: str) -> asyncio.Future[list[int | None]]:
        """Publish `event` guaranteed, through the transform when there is one.

        `key` (e.g. a source position) makes a resend after a crash stored
        once; each event a transform makes gets `key/i`. The future resolves
        once the mesh acked every resulting event durable.
        """
        out = [event] if self.transform is None else self.transform(_as_event(event))
        futures = [
            self.client.publish_nowait(
                o.topic, o.payload, guaranteed=True, headers=o.headers or None,
                key=key if self.transform is None else f"{key}/{i}",
            )
            for i, o in enumerate(out)
        ]  # fmt: skip
        self.stats.events_out += len(futures)
        return asyncio.gather(*futures)


def _as_event(event: Outgoing) -> Event:
    return Event(pb.Event(topic=event.topic, payload=event.payload, headers=event.headers))


class Source(ABC):
    """Reads a system and publishes guaranteed events until `ctx.stopping` is set."""

    kind: ClassVar[str]
    settings: ClassVar[type[BaseModel]]  # the whole file, [connector] included

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    @abstractmethod
    async def run(self, ctx: Context) -> None: ...


class Sink(ABC):
    """Writes a batch of queue deliveries to a destination; the runtime acks after."""

    kind: ClassVar[str]
    settings: ClassVar[type[BaseModel]]  # the whole file, [connector] and [consume] included
    # How long a transient failure is retried per delivery when [consume] retry_for
    # is not given; None: for as long as it takes (a table replica must keep its order).
    retry_for: ClassVar[float | None] = None

    def __init__(self, config: BaseModel, stats: Stats | None = None) -> None:
        self.config = config
        # The runtime's counters (its Context.stats; it counts events in and out):
        # a sink counts what only it can tell, such as its duplicates.
        self.stats = stats if stats is not None else Stats()

    async def open(self) -> None:
        """Connect to the destination (raise TransientError while it is unreachable)."""
        return None

    @abstractmethod
    async def write(self, events: Sequence[Event]) -> None:
        """Write `events` in order, confirmed by the destination when this returns.

        TransientError: the runtime retries the same batch with backoff (order kept).
        PermanentError: the runtime nacks the events so the queue dead-letters
        them after `max_deliveries`; it should name the event and what was wrong.
        """

    async def close(self) -> None:
        """Release the destination."""
        return None
