"""The `webhook` sink: one HTTP POST per event, acked once the receiver answered 2xx.

One POST per event (no batches in a body) keeps receivers simple: a body is
one event, its `Idempotency-Key` drops the duplicates a lost response causes,
and one bad event is refused alone. Up to `concurrency` POSTs of a batch are in
flight at once; `write` returns only when every one got a 2xx.

The receiver's answer decides: 2xx confirms; 408, 429, 5xx, timeouts and
connection errors are worth retrying (`TransientError`: the runtime retries
the same batch, and only the events not yet confirmed are posted again); any
other status refuses the event (`PermanentError`: the runtime nacks, and the
queue dead-letters it after `max_deliveries`). A batch with both is retried
first, without its refused events, so that only a refusal ever counts toward
dead-lettering; a refused delivery written again (the runtime narrowing a
batch down to the event to nack) is refused without another POST.

Counting: the runtime counts events in, and events out once `write`
returned; the sink counts `duplicates`, the events it posted again after an
answer was lost.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import ClassVar, TypeVar

import aiohttp
import yarl

from plexus import __version__
from plexus.client import Event
from plexus.connectors.base import PermanentError, Sink, Stats, TransientError
from plexus.connectors.webhook_request import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    encode_body,
    sign,
)
from plexus.connectors.webhook_settings import WebhookSettings

__all__ = ["WebhookRefused", "WebhookSink", "WebhookUnavailable"]

# A receiver's Retry-After is honoured up to this; beyond it the runtime's backoff rules.
MAX_RETRY_AFTER_S = 60.0
# Events confirmed (or posted with an unknown outcome) that are remembered, so that
# a retried or redelivered batch posts only what the receiver has not confirmed.
REMEMBERED_EVENTS = 65_536
RETRIED_STATUSES = frozenset({408, 429})
V = TypeVar("V")
# An event as the sink tells it apart: (origin region, event id, copy; see _keys).
EventKey = tuple[str, int, int]


class WebhookRefused(PermanentError):
    """The receiver refused an event (4xx other than 408/429, or a redirect)."""

    def __init__(self, event_id: int, url: str, status: int, refused: int) -> None:
        self.event_id, self.url, self.status = event_id, url, status
        more = f" (and {refused - 1} more events of the batch)" if refused > 1 else ""
        super().__init__(f"{url} refused event {event_id} with HTTP {status}{more}")


class WebhookUnavailable(TransientError):
    """The receiver did not confirm some events: down, slow, overloaded or 5xx."""

    def __init__(self, url: str, reason: str, failed: int, retry_after_s: float) -> None:
        self.url, self.reason, self.retry_after_s = url, reason, retry_after_s
        after = f"; it asked to retry after {retry_after_s:g} s" if retry_after_s else ""
        super().__init__(f"{url}: {reason} ({failed} events not confirmed{after})")


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"
    RETRY = "retry"
    REFUSED = "refused"


def verdict(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.CONFIRMED
    if status in RETRIED_STATUSES or status >= 500:
        return Verdict.RETRY
    return Verdict.REFUSED


def retry_after_s(value: str | None, now: float) -> float:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), capped."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return 0.0
    if not seconds > 0:  # NaN included
        return 0.0
    return min(seconds, MAX_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class Failure:
    event_id: int
    verdict: Verdict
    status: int  # 0: no HTTP response
    reason: str
    retry_after_s: float = 0.0


class WebhookSink(Sink):
    kind: ClassVar[str] = "webhook"
    settings: ClassVar[type[WebhookSettings]] = WebhookSettings
    # A receiver that stays down dead-letters after max_deliveries x this, rather
    # than holding every later event: one POST per event has no order to keep.
    retry_for: ClassVar[float | None] = 15.0

    def __init__(self, config: WebhookSettings, stats: Stats | None = None) -> None:
        super().__init__(config, stats)
        self.hook = config.webhook
        self.url = str(config.webhook.url)
        self._client: aiohttp.ClientSession | None = None
        # Dicts as bounded ordered sets, oldest first.
        self._confirmed: dict[EventKey, None] = {}
        self._maybe_received: dict[EventKey, None] = {}
        self._not_before = 0.0  # monotonic time a Retry-After asked us to wait until
        # Refusals, by the delivery they answered: the same delivery written again
        # (its batch retried for another event's 5xx, or narrowed down by the
        # runtime) is refused again without a POST; a redelivery is posted.
        self._refused: dict[EventKey, tuple[int, Failure]] = {}

    async def open(self) -> None:
        # Building the TLS context reads certificate files: not on the event loop.
        hook = self.hook
        verify: ssl.SSLContext | bool = True
        if hook.ca is not None:
            try:
                verify = await asyncio.to_thread(ssl.create_default_context, cafile=str(hook.ca))
            except OSError as exc:  # the CA file changed since the settings were read
                raise TransientError(f"webhook.ca {hook.ca}: cannot load: {exc}") from None
        # aiohttp rather than httpx: a POST costs it a fifth of the CPU, which is what
        # bounds a webhook's events/s. The POST's deadline is _post's asyncio.timeout.
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=hook.concurrency, ssl=verify),
            headers={"User-Agent": f"plexus-webhook/{__version__}", **hook.headers},
            timeout=aiohttp.ClientTimeout(),
            proxy=_env_proxy(self.url),  # its user:password too
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def write(self, events: Sequence[Event]) -> None:
        if self._client is None:
            await self.open()
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        keyed = list(zip(_keys(events), events, strict=True))
        todo = [(k, e) for k, e in keyed if k not in self._confirmed and not self._refusal(k, e)]
        slots = asyncio.Semaphore(self.hook.concurrency)
        # Tasks take the semaphore in creation order, so POSTs start in queue order.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._post(k, e, slots)) for k, e in todo]
        retry = []
        for (key, event), task in zip(todo, tasks, strict=True):
            failure = task.result()
            if failure is None:
                continue
            if failure.verdict is Verdict.REFUSED:
                _remember(self._refused, key, (event.delivery_count, failure))
            else:
                retry.append(failure)
        # Retries first: a 5xx must never count toward dead-lettering an event.
        if retry:
            after = max(f.retry_after_s for f in retry)
            if after:
                self._not_before = time.monotonic() + after
            raise WebhookUnavailable(self.url, retry[0].reason, len(retry), after)
        refused = [f for f in (self._refusal(k, e) for k, e in keyed) if f is not None]
        if refused:
            first = refused[0]
            raise WebhookRefused(first.event_id, self.url, first.status, len(refused))

    def _refusal(self, key: EventKey, event: Event) -> Failure | None:
        """The receiver's refusal of this very delivery (a redelivery is posted again)."""
        earlier = self._refused.get(key)
        return earlier[1] if earlier is not None and earlier[0] == event.delivery_count else None

    async def _post(self, key: EventKey, event: Event, slots: asyncio.Semaphore) -> Failure | None:
        assert self._client is not None
        body = encode_body(event)
        async with slots:
            headers = self._request_headers(key, body)
            try:
                async with asyncio.timeout(self.hook.timeout):
                    response = await self._client.post(
                        self.url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                    )
                    async with response:
                        await response.read()
            except aiohttp.ClientConnectorError as exc:  # never reached the receiver
                return Failure(event.id, Verdict.RETRY, 0, _describe(exc, self.hook.timeout))
            except (aiohttp.ClientError, TimeoutError) as exc:  # it may have got the POST
                _remember(self._maybe_received, key, None)
                return Failure(event.id, Verdict.RETRY, 0, _describe(exc, self.hook.timeout))
        status = response.status
        outcome = verdict(status)
        if outcome is Verdict.CONFIRMED:
            # events_out is the runtime's: it counts a batch once write() returned.
            _remember(self._confirmed, key, None)
            if key in self._maybe_received:  # an earlier POST's answer was lost
                del self._maybe_received[key]
                self.stats.duplicates += 1
            return None
        reason = f"HTTP {status}"
        if status in (301, 302, 303, 307, 308):
            reason += f" redirect to {response.headers.get('location', '?')}: set url to it"
        wait = retry_after_s(response.headers.get("retry-after"), time.time())
        return Failure(event.id, outcome, status, reason, wait)

    def _request_headers(self, key: EventKey, body: bytes) -> dict[str, str]:
        # Stamped and signed when sent (not when first tried), so a retry is fresh.
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: _idempotency_key(key),
            TIMESTAMP_HEADER: timestamp,
        }
        secret = self.hook.signing_key()
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        return headers


def _keys(events: Sequence[Event]) -> list[EventKey]:
    """(region, id, copy): a transform may make several events of one delivery, all with
    its id; they come together and in the same order each time, so `copy` tells them apart."""
    copies: collections.Counter[tuple[str, int]] = collections.Counter()
    keys = []
    for event in events:
        origin = (event.origin_region, event.id)
        keys.append((*origin, copies[origin]))
        copies[origin] += 1
    return keys


def _idempotency_key(key: EventKey) -> str:
    region, event_id, copy = key
    return f"{region}-{event_id}" if copy == 0 else f"{region}-{event_id}-{copy}"


def _remember(seen: dict[EventKey, V], key: EventKey, value: V) -> None:
    seen[key] = value
    if len(seen) > REMEMBERED_EVENTS:
        del seen[next(iter(seen))]


def _env_proxy(url: str) -> yarl.URL | None:
    """The proxy HTTP(S)_PROXY and NO_PROXY name for `url`, read once (aiohttp's
    trust_env would read them, and ~/.netrc, in a thread for every POST)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return yarl.URL(proxy) if proxy else None


def _describe(exc: BaseException, timeout: float) -> str:
    """One line for a failure without an HTTP response."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"the receiver's certificate is not trusted ({text}): set webhook.ca to its CA"
    return f"cannot connect: {text}"
