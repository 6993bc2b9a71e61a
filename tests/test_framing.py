"""Protobuf bytes built by concatenation (node/framing.py), checked against the protobuf runtime."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node import framing
from plexus.v1 import plexus_pb2 as pb

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _client_event(**fields: object) -> bytes:
    """An event as a client publishes it, possibly with node-set fields filled in."""
    return pb.Event(
        topic="orders/us/created", payload=b"\x00payload\xff", **fields
    ).SerializeToString()


def _decode_event(raw: bytes) -> pb.Event:
    event = pb.Event()
    event.ParseFromString(raw)
    return event


def _decode_batch(raw: bytes) -> pb.EventBatch:
    batch = pb.EventBatch()
    batch.ParseFromString(raw)
    return batch


# --------------------------------------------------------------------------
# varint
# --------------------------------------------------------------------------


@given(U64)
def test_varint_matches_protobuf_encoding_of_a_uint64(value: int) -> None:
    encoded = pb.Event(delivery_tag=value).SerializeToString()
    if value == 0:
        assert encoded == b""  # proto3 omits a default scalar
        assert framing.varint(0) == b"\x00"
    else:
        assert encoded == b"\xb8\x01" + framing.varint(value)


@given(U64)
def test_varint_decodes_back_to_the_same_value(value: int) -> None:
    assert _decode_event(b"\xb8\x01" + framing.varint(value)).delivery_tag == value


def test_varint_boundaries() -> None:
    assert framing.varint(0x7F) == b"\x7f"
    assert framing.varint(0x80) == b"\x80\x01"
    assert framing.varint(300) == b"\xac\x02"
    assert len(framing.varint(2**64 - 1)) == 10


# --------------------------------------------------------------------------
# node-set fields
# --------------------------------------------------------------------------


def test_unframe_returns_the_event_inside_a_frame() -> None:
    for size in (0, 5, 127, 128, 300, 20_000):
        body = pb.Event(topic="t", payload=b"p" * size).SerializeToString()
        assert framing.unframe(framing.frame(body)) == body


def test_with_discards_sets_discarded_before_and_overrides_the_client() -> None:
    body = _client_event(discarded_before=99)
    assert _decode_event(framing.with_discards(body, 3)).discarded_before == 3
    assert _decode_event(framing.with_discards(body, 0)).discarded_before == 0


# --------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(U64, min_size=8, max_size=8))
def test_joined_frames_are_an_event_batch(payloads: list[bytes], ids: list[int]) -> None:
    events = [
        pb.Event(topic=f"t/{i}", payload=p, headers={"k": str(i)}) for i, p in enumerate(payloads)
    ]
    bodies = [
        e.SerializeToString() + pb.Event(id=ids[i]).SerializeToString()
        for i, e in enumerate(events)
    ]
    batch = _decode_batch(b"".join(framing.frame(b) for b in bodies))
    assert len(batch.events) == len(events)
    for i, (got, sent) in enumerate(zip(batch.events, events, strict=True)):
        want = pb.Event()
        want.CopyFrom(sent)
        want.id = ids[i]
        assert got == want


def test_frame_of_a_large_event_uses_a_multi_byte_length() -> None:
    body = _client_event() + b"\x12" + framing.varint(70_000) + b"x" * 70_000  # payload again
    batch = _decode_batch(framing.frame(body))
    assert batch.events[0].payload == b"x" * 70_000


# --------------------------------------------------------------------------
# queue delivery
# --------------------------------------------------------------------------


@given(tag=U64, count=st.integers(min_value=0, max_value=2**32 - 1), redelivered=st.booleans())
def test_queue_delivery_decodes_to_exactly_the_delivery_fields(
    tag: int, count: int, redelivered: bool
) -> None:
    body = _client_event(ttl_ms=5000) + pb.Event(id=42).SerializeToString()
    raw = framing.queue_delivery(body, framing.queue_field("work"), tag, count, redelivered)
    (event,) = _decode_batch(raw).events
    want = pb.Event(
        topic="orders/us/created",
        payload=b"\x00payload\xff",
        ttl_ms=5000,
        id=42,
        delivery_tag=tag,
        delivery_count=count,
        redelivered=redelivered,
        queue="work",
    )
    assert event == want


@given(redelivered=st.booleans())
def test_queue_delivery_overrides_delivery_fields_a_client_set(redelivered: bool) -> None:
    body = _client_event(
        delivery_tag=1,
        delivery_count=77,
        redelivered=True,
        queue="forged",
        discarded_before=5,
    )
    raw = framing.queue_delivery(body, framing.queue_field("real"), 1234, 1, redelivered)
    (event,) = _decode_batch(raw).events
    assert event.delivery_tag == 1234
    assert event.delivery_count == 1
    assert event.queue == "real"
    assert event.redelivered is redelivered


@given(st.text(max_size=300))
def test_queue_field_decodes_to_the_queue_name(name: str) -> None:
    assert _decode_event(framing.queue_field(name)) == pb.Event(queue=name)


def test_consume_events_is_a_consume_response_with_those_events() -> None:
    field = framing.queue_field("jobs")
    frames = [
        framing.queue_delivery(_client_event(), field, tag, 1, False) for tag in range(1, 200)
    ]
    response = pb.ConsumeResponse()
    response.ParseFromString(framing.consume_events(frames))
    assert response.WhichOneof("action") == "events"
    assert [e.delivery_tag for e in response.events.events] == list(range(1, 200))
    assert all(e.queue == "jobs" for e in response.events.events)


def test_consume_events_with_no_frames_is_an_empty_batch() -> None:
    response = pb.ConsumeResponse()
    response.ParseFromString(framing.consume_events([]))
    assert response.WhichOneof("action") == "events"
    assert len(response.events.events) == 0


@given(
    st.lists(
        st.tuples(
            st.binary(max_size=300),
            st.sampled_from([0, 1]),
            st.sampled_from(
                [None, "delivery_count", "redelivered", "discarded_before", "delivery_tag", "queue"]
            ),
        ),
        max_size=6,
    )
)
def test_scan_request_never_misses_guaranteed_events_or_delivery_fields(events) -> None:
    request = pb.PublishRequest()
    for payload, mode, forged in events:
        event = request.events.add(topic="t/x", payload=payload, mode=mode)
        if forged == "queue":
            event.queue = "q"
        elif forged == "redelivered":
            event.redelivered = True
        elif forged is not None:
            setattr(event, forged, 1)
    guaranteed, delivery = framing.scan_request(request.SerializeToString())
    if any(mode == 1 for _, mode, _ in events):
        assert guaranteed
    if any(forged for _, _, forged in events):
        assert delivery
