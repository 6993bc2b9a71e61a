"""The webhook sink against a real HTTP server (tests/webhook_receiver.py: stdlib
http.server in a thread, answering from a script)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from node.server import Node
from plexus.certs import make_ca, make_node_cert
from plexus.client import Client, Event
from plexus.connectors.base import PermanentError, Stats, TransientError
from plexus.connectors.webhook import (
    WebhookRefused,
    WebhookSink,
    WebhookUnavailable,
    retry_after_s,
)
from plexus.v1 import plexus_pb2 as pb
from tests.harness import free_port
from tests.webhook_receiver import HANG, Receiver

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike


def config(url: str, **webhook: Any) -> Any:
    """The settings of a webhook connector file with `[webhook] url` and `webhook`."""
    lines = [f"url = {json.dumps(url)}"] + [f"{k} = {toml_value(v)}" for k, v in webhook.items()]
    text = (
        '[connector]\nname = "orders-hook"\nkind = "webhook"\n'
        '[consume]\nqueue = "orders-hook"\nsubscribe = ["shop/orders/>"]\n'
        "[webhook]\n" + "\n".join(lines) + "\n"
    )
    return WebhookSink.settings.model_validate(tomllib.loads(text))


@asynccontextmanager
async def opened(url: str, **webhook: Any) -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(config(url, **webhook), Stats())
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


def event(n: int, payload: bytes = b'{"n": 1}', delivery: int = 1, **headers: str) -> Event:
    """An event as a queue delivers it (ids as the node makes them: ms << 22 | count)."""
    event_id = (1_764_543_063_123 << 22) | n
    return Event(
        pb.Event(id=event_id, topic=f"shop/orders/{n}", payload=payload, headers=headers,
                 origin_region="us", delivery_count=delivery, mode=pb.GUARANTEED)
    )  # fmt: skip


def readme_verify() -> Any:
    """The receiver's `verify` from the README's webhook section, run as written."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    snippets = [b for b in blocks if "def verify(" in b]
    assert len(snippets) == 1, "the README should show one receiver's verify()"
    namespace: dict[str, Any] = {}
    exec(snippets[0], namespace)
    return namespace["verify"]


# ------------------------------------------------------------------ what is posted


async def test_each_event_is_one_json_post_with_its_id_topic_payload_and_keys(receiver):
    events = [event(1, b'{"op": "insert", "after": {"id": 1}}', source="cdc"),
              event(2, b"plain text"), event(3, b"\xff\x00binary")]  # fmt: skip
    async with opened(receiver.url, headers={"Authorization": "Bearer t0k"}) as sink:
        await sink.write(events)
    bodies = {p.json["id"]: p for p in receiver.posts}
    assert sorted(bodies) == sorted(str(e.id) for e in events)
    first = bodies[str(events[0].id)]
    assert first.json == {
        "id": str(events[0].id), "topic": "shop/orders/1", "region": "us",
        "publish_time": "2025-11-30T22:51:03.123Z", "headers": {"source": "cdc"},
        "delivery_count": 1, "payload": {"op": "insert", "after": {"id": 1}},
        "payload_encoding": "json",
    }  # fmt: skip
    text, binary = bodies[str(events[1].id)].json, bodies[str(events[2].id)].json
    assert (text["payload"], text["payload_encoding"]) == ("plain text", "utf-8")
    assert binary["payload_encoding"] == "base64"
    assert base64.b64decode(binary["payload"]) == b"\xff\x00binary"
    h = first.headers
    assert h["content-type"] == "application/json"
    assert h["idempotency-key"] == f"us-{events[0].id}"
    assert h["authorization"] == "Bearer t0k"
    assert h["user-agent"].startswith("plexus-webhook/")
    assert abs(int(h["x-plexus-timestamp"]) - time.time()) < 60
    assert "x-plexus-signature" not in h


async def test_signature_verifies_with_the_readme_recipe_and_fails_when_tampered(
    receiver, tmp_path
):
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret-from-a-file\n")
    async with opened(receiver.url, secret_file=str(secret)) as sink:
        await sink.write([event(1)])
    (post,) = receiver.posts
    headers = {"X-Plexus-Timestamp": post.headers["x-plexus-timestamp"],
               "X-Plexus-Signature": post.headers["x-plexus-signature"]}  # fmt: skip
    verify = readme_verify()
    assert headers["X-Plexus-Signature"].startswith("sha256=")
    assert verify(b"s3cret-from-a-file", headers, post.body)
    assert not verify(b"another secret", headers, post.body)
    tampered = post.body.replace(b'"n":1', b'"n":2')
    assert tampered != post.body and not verify(b"s3cret-from-a-file", headers, tampered)
    replayed = {**headers, "X-Plexus-Timestamp": str(int(headers["X-Plexus-Timestamp"]) - 3600)}
    assert not verify(b"s3cret-from-a-file", replayed, post.body)


async def test_events_from_a_real_queue_are_posted_with_their_region_and_delivery_count(
    receiver, inproc_node: Node
):
    async with await Client.connect(inproc_node.address) as client:
        await client.create_queue("orders-hook", ["shop/orders/>"])
        for n in range(3):
            await client.publish(f"shop/orders/{n}", json.dumps({"n": n}).encode(), guaranteed=True)
        async with client.consume("orders-hook") as consumer, opened(receiver.url) as sink:
            batch: list[Any] = []
            while len(batch) < 3:
                batch += await consumer.next_batch(timeout=10)
            await sink.write(batch)
            for delivery in batch:
                await delivery.ack()
    posted = {p.json["id"]: p.json for p in receiver.posts}  # arrival order may differ
    assert [posted[str(d.id)]["payload"] for d in batch] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {(b["region"], b["delivery_count"]) for b in posted.values()} == {("us", 1)}


# ------------------------------------------------------------------ failures


async def test_500s_then_200_raise_transient_and_the_retry_posts_only_unconfirmed_events(
    receiver,
):
    receiver.answers.extend([500, 500, 503])
    events = [event(n) for n in range(10)]
    async with opened(receiver.url, concurrency=4) as sink:
        with pytest.raises(TransientError) as raised:
            await sink.write(events)
        assert isinstance(raised.value, WebhookUnavailable)
        assert receiver.url in str(raised.value) and "HTTP 50" in str(raised.value)
        assert "3 events not confirmed" in str(raised.value)
        assert len(receiver.posts) == 10  # the batch's other posts settled first
        await sink.write(events)  # the runtime's retry of the same batch
    assert len(receiver.posts) == 13
    assert receiver.confirmed_ids() == {str(e.id): 1 for e in events}
    assert sink.stats.duplicates == 0


async def test_a_4xx_is_permanent_naming_the_event_and_only_a_redelivery_posts_it_again(
    receiver,
):
    receiver.answers.extend([200, 422])
    events = [event(n) for n in range(4)]
    async with opened(receiver.url, concurrency=1) as sink:
        with pytest.raises(PermanentError) as raised:
            await sink.write(events)
        refused = raised.value
        assert isinstance(refused, WebhookRefused)
        assert (refused.event_id, refused.status) == (events[1].id, 422)
        assert str(refused) == f"{receiver.url} refused event {events[1].id} with HTTP 422"
        assert len(receiver.posts) == 4
        # The runtime narrows the batch down one event at a time: nothing is posted again.
        for n in (0, 2, 3):
            await sink.write([events[n]])
        with pytest.raises(PermanentError, match="HTTP 422"):
            await sink.write([events[1]])
        assert len(receiver.posts) == 4
        receiver.answers.append(422)
        with pytest.raises(PermanentError):  # the queue redelivers the nacked event
            await sink.write([event(1, delivery=2)])
    assert len(receiver.posts) == 5
    assert receiver.posts[-1].json["id"] == str(events[1].id)
    assert receiver.posts[-1].json["delivery_count"] == 2


async def test_a_batch_with_a_refusal_and_a_5xx_is_retried_first_without_the_refused_event(
    receiver,
):
    receiver.answers.extend([200, 422, 500])
    events = [event(n) for n in range(3)]
    async with opened(receiver.url, concurrency=1) as sink:
        with pytest.raises(TransientError, match="HTTP 500"):  # a 5xx never dead-letters
            await sink.write(events)
        with pytest.raises(PermanentError) as raised:
            await sink.write(events)  # the retry posts only the 500's event, then refuses
        assert isinstance(raised.value, WebhookRefused)
        assert raised.value.event_id == events[1].id
        assert [p.json["id"] for p in receiver.posts] == [str(events[n].id) for n in (0, 1, 2, 2)]
        await sink.write([event(1, delivery=2)])  # redelivered after the nack, taken this time
    assert receiver.confirmed_ids() == {str(e.id): 1 for e in events}


async def test_events_a_transform_made_of_one_delivery_get_their_own_keys(receiver):
    receiver.answers.extend([200, 500])
    one = event(1)
    made = [Event(pb.Event(id=one.id, topic=f"shop/made/{n}", payload=b"{}", origin_region="us",
                           delivery_count=1)) for n in range(3)]  # fmt: skip
    async with opened(receiver.url, concurrency=1) as sink:
        with pytest.raises(TransientError):
            await sink.write(made)
        await sink.write(made)  # the retry posts the second copy only
    keys = [p.headers["idempotency-key"] for p in receiver.posts]
    assert keys == [f"us-{one.id}", f"us-{one.id}-1", f"us-{one.id}-2", f"us-{one.id}-1"]
    assert [p.json["topic"] for p in receiver.posts if p.status == 200] == [
        "shop/made/0", "shop/made/2", "shop/made/1"
    ]  # fmt: skip


async def test_429_is_transient_and_its_retry_after_is_honoured(receiver):
    receiver.answers.append(429)
    receiver.answer_headers["Retry-After"] = "1"
    async with opened(receiver.url) as sink:
        with pytest.raises(TransientError, match=r"HTTP 429.*retry after 1 s"):
            await sink.write([event(1)])
        await sink.write([event(1)])
    first, retry = receiver.posts
    assert retry.at - first.at >= 0.9


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("86400", 60.0), ("nan", 0.0), ("soon", 0.0),
     (None, 0.0), ("Wed, 01 Jan 2020 00:00:10 GMT", 10.0), ("Wed, 01 Jan 2020 00:00:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_is_read_as_seconds_or_a_date_and_capped(header, seconds):
    now = 1_577_836_800.0  # 2020-01-01T00:00:00Z
    assert retry_after_s(header, now) == seconds


async def test_a_timeout_is_transient_and_the_resend_is_counted_as_a_duplicate(receiver):
    receiver.answers.append(HANG)  # the receiver takes the event but never answers in time
    async with opened(receiver.url, timeout=0.5) as sink:
        with pytest.raises(TransientError, match=r"no answer within 0\.5 s"):
            await sink.write([event(1)])
        await sink.write([event(1)])
    keys = [p.headers["idempotency-key"] for p in receiver.posts]
    assert keys == [f"us-{event(1).id}"] * 2  # the receiver can drop the second
    assert sink.stats.duplicates == 1


async def test_a_receiver_that_is_down_is_transient():
    url = f"http://127.0.0.1:{free_port()}/hook"
    async with opened(url) as sink:
        with pytest.raises(TransientError, match=f"{re.escape(url)}: cannot connect"):
            await sink.write([event(1)])
    assert sink.stats.duplicates == 0


async def test_posts_in_flight_never_exceed_concurrency(receiver):
    receiver.hold_s = 0.05
    async with opened(receiver.url, concurrency=3) as sink:
        await sink.write([event(n) for n in range(15)])
    assert receiver.max_in_flight == 3
    assert len(receiver.confirmed_ids()) == 15


# ------------------------------------------------------------------ https


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    make_ca(tmp_path / "ca", "hook test CA")
    files = make_node_cert(tmp_path / "ca", "hook", ["127.0.0.1"], tmp_path / "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    r = Receiver(tls=context)
    try:
        yield r, tmp_path / "ca" / "ca.crt"
    finally:
        r.close()


async def test_https_with_a_private_ca_delivers(tls_receiver):
    receiver, ca = tls_receiver
    async with opened(receiver.url, ca=str(ca)) as sink:
        await sink.write([event(1), event(2)])
    assert len(receiver.confirmed_ids()) == 2


async def test_https_without_the_ca_is_a_clear_error_naming_the_ca_key(tls_receiver):
    receiver, _ = tls_receiver
    async with opened(receiver.url) as sink:
        with pytest.raises(TransientError) as raised:
            await sink.write([event(1)])
    message = str(raised.value)
    assert message.startswith(f"{receiver.url}: the receiver's certificate is not trusted")
    assert "set webhook.ca to its CA" in message
    assert receiver.posts == []


async def test_a_ca_file_gone_since_the_settings_were_read_is_a_clear_error(tmp_path: Path):
    ca = make_ca(tmp_path / "ca")
    sink = WebhookSink(config("https://127.0.0.1/hook", ca=str(ca)))
    ca.unlink()
    with pytest.raises(TransientError, match=f"webhook.ca {re.escape(str(ca))}: cannot load"):
        await sink.open()


# ------------------------------------------------------------------ bad configs


@pytest.mark.parametrize(
    ("webhook", "key", "says"),
    [
        ({"url": "ftp://127.0.0.1/hook"}, "url", "scheme should be 'http' or 'https'"),
        ({"url": "not a url"}, "url", "valid URL"),
        ({"timeout": -1}, "timeout", "greater than 0"),
        ({"timeout": "10"}, "timeout", "valid number"),
        ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
        ({"secret": "a", "secret_file": "/etc/hostname"}, "secret_file",
         "give secret or secret_file, not both"),
        ({"secret": ""}, "secret", "empty"),
        ({"secret_file": "/nonexistent/hook.secret"}, "secret_file",
         "cannot read: No such file or directory"),
        ({"ca": "/nonexistent/ca.crt", "url": "https://127.0.0.1/hook"}, "ca", "no such file"),
        ({"ca": "/etc/hostname", "url": "https://127.0.0.1/hook"}, "ca",
         "not a PEM CA certificate"),
        ({"ca": "/etc/hostname"}, "ca", "a CA is for an https url, and url is http://"),
        ({"headers": {"Idempotency-Key": "x"}}, "headers",
         "Idempotency-Key is set by the webhook sink itself"),
        ({"headers": {"bad name": "x"}}, "headers", "not a valid header name"),
        ({"batch": True}, "batch", "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_webhook_settings_name_the_key(webhook: dict[str, Any], key: str, says: str):
    url = webhook.pop("url", "http://127.0.0.1/hook")
    with pytest.raises(ValidationError) as raised:
        config(url, **webhook)
    (error,) = raised.value.errors()
    assert error["loc"] == ("webhook", key)
    assert says in error["msg"]


def test_a_secret_is_never_shown_in_the_settings_or_their_errors():
    settings = config("http://127.0.0.1/hook", secret="s3cret")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    with pytest.raises(ValidationError) as raised:
        config("http://127.0.0.1/hook", secret="s3cret", secret_file="/etc/hostname")
    assert "s3cret" not in str(raised.value.errors())
    assert settings.webhook.signing_key() == b"s3cret"
