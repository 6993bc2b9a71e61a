"""Protobuf bytes built by concatenation (node/framing.py), checked against the protobuf runtime."""

from __future__ import annotations

import random

from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node import framing
from node.delivery import Entry
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
    # Where the encoding moves from one table to two lookups, and to the loop.
    for value in (2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28 - 1, 2**28):
        assert _decode_event(b"\xb8\x01" + framing.varint(value)).delivery_tag == value
        assert len(framing.varint(value)) == (value.bit_length() + 6) // 7


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


def _delivery(body: bytes, field: bytes, tag: int, count: int, redelivered: bool) -> bytes:
    entry = Entry(tag, len(body), delivery_count=count, redelivered=redelivered, data=body)
    (frame,) = framing.queue_deliveries([entry], field)
    return frame


@given(tag=U64, count=st.integers(min_value=0, max_value=2**32 - 1), redelivered=st.booleans())
def test_queue_delivery_decodes_to_exactly_the_delivery_fields(
    tag: int, count: int, redelivered: bool
) -> None:
    body = _client_event(ttl_ms=5000) + pb.Event(id=42).SerializeToString()
    raw = _delivery(body, framing.queue_field("work"), tag, count, redelivered)
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
    raw = _delivery(body, framing.queue_field("real"), 1234, 1, redelivered)
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
    frames = [_delivery(_client_event(), field, tag, 1, False) for tag in range(1, 200)]
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


# --------------------------------------------------------------------------
# scan_request against the runtime's parser, fed any encoding it accepts
# --------------------------------------------------------------------------
# An encoder of our own, independent of node/framing.py, that writes what the
# protobuf wire format allows beyond what serializers write: non-minimal
# varints (tags, values, lengths), values over 32 bits for 32-bit fields,
# repeated and shuffled fields, unknown fields of every wire type, known
# field numbers with other wire types, payloads full of tell-tale bytes.

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
MODE = 4
DELIVERY_NUMBERS = {20: VARINT, 21: VARINT, 22: VARINT, 23: VARINT, 24: LEN}
# Bytes that canonical or non-canonical tags and values are made of.
TELL_TALES = [
    b"\x20\x01",
    b"\x20\x81",
    b"\x20\x81\x00",
    b"\x20\x81\x80\x80\x80\x10",
    b"\xa0\x01",
    b"\xa0\x80\x00\x01",
    b"\xa0\x81\x00",
    b"\xa8\x01\x01",
    b"\xc2\x81\x00\x01q",
    b"\x00",
    b"\x01",
    b"\x80",
    b"\x81",
    b"\xa0",
    b"\xff",
]


def wire_varint(value: int, padding: int = 0) -> bytes:
    """`value` in 7-bit groups, least significant first, with `padding` empty groups after."""
    groups = []
    while True:
        groups.append(value & 0x7F)
        value >>= 7
        if not value:
            break
    groups += [0] * padding
    return bytes(g | 0x80 for g in groups[:-1]) + bytes(groups[-1:])


def wire_field(
    number: int, wire_type: int, body: bytes, tag_padding: int, len_padding: int
) -> bytes:
    tag = wire_varint(number << 3 | wire_type, tag_padding)
    if wire_type == LEN:
        return tag + wire_varint(len(body), len_padding) + body
    if wire_type == START_GROUP:
        return tag + body + wire_varint(number << 3 | END_GROUP, tag_padding)
    return tag + body


PADDING = st.integers(0, 5).map(lambda n: n if n < 4 else 0)  # mostly minimal
TEXT = st.text(st.characters(codec="utf-8"), max_size=12).map(str.encode)
BINARY = st.lists(st.one_of(st.binary(max_size=8), st.sampled_from(TELL_TALES)), max_size=8).map(
    b"".join
)
# Values a 32-bit enum or integer field truncates to 1 (or 0), or keeps.
MODE_VALUES = st.sampled_from([0, 1, 1, 1, 2, 1 + 2**32, 2**32, 2**63 + 1, 2**64 - 1, 129, 257])
U64_VALUES = st.one_of(st.sampled_from([0, 1, 2**32, 2**64 - 1]), U64)


@st.composite
def varint_body(draw: st.DrawFn, values: st.SearchStrategy[int] = U64_VALUES) -> bytes:
    value = draw(values)
    # Stay within 10 bytes, the longest varint a parser takes.
    room = 10 - len(wire_varint(value))
    return wire_varint(value, min(draw(PADDING), room))


@st.composite
def unknown_field(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A field the schema does not have, or a known number with another wire type."""
    number = draw(st.one_of(st.integers(1, 40), st.integers(1, 2**29 - 1)))
    wire_type = draw(st.sampled_from([VARINT, FIXED64, LEN, START_GROUP, FIXED32]))
    if wire_type == VARINT:
        body = draw(varint_body())
    elif wire_type == FIXED64:
        body = draw(st.binary(min_size=8, max_size=8))
    elif wire_type == FIXED32:
        body = draw(st.binary(min_size=4, max_size=4))
    elif wire_type == LEN:
        body = draw(BINARY)
    else:
        inner = st.just(b"") if depth >= 2 else unknown_field(depth + 1)
        body = b"".join(draw(st.lists(inner, max_size=2)))
    return wire_field(number, wire_type, body, draw(PADDING), draw(PADDING))


@st.composite
def event_field(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["topic", "payload", "header", "mode", "mode", "ttl", "id", "origin", "delivery"]
        )
        | st.just("unknown")
    )
    if kind == "unknown":
        return draw(unknown_field())
    if kind == "mode":
        number, wire_type, body = MODE, VARINT, draw(varint_body(MODE_VALUES))
    elif kind == "delivery":
        number = draw(st.sampled_from(sorted(DELIVERY_NUMBERS)))
        wire_type = DELIVERY_NUMBERS[number]
        body = draw(TEXT if wire_type == LEN else varint_body())
    elif kind == "ttl":
        number, wire_type, body = 5, VARINT, draw(varint_body())
    elif kind == "id":
        number, wire_type, body = 10, FIXED64, draw(st.binary(min_size=8, max_size=8))
    elif kind == "header":
        key = wire_field(1, LEN, draw(TEXT), draw(PADDING), draw(PADDING))
        value = wire_field(2, LEN, draw(TEXT), draw(PADDING), draw(PADDING))
        entry = draw(st.permutations([key, value]))
        number, wire_type, body = 3, LEN, b"".join(entry[: draw(st.integers(0, 2))])
    else:
        number, wire_type = {"topic": 1, "payload": 2, "origin": 12}[kind], LEN
        body = draw(BINARY if kind == "payload" else TEXT)
    return wire_field(number, wire_type, body, draw(PADDING), draw(PADDING))


@st.composite
def publish_request(draw: st.DrawFn) -> bytes:
    """A PublishRequest as any producer could write it, fields in any order, repeated."""
    fields = []
    for _ in range(draw(st.integers(0, 4))):
        event = b"".join(draw(st.lists(event_field(), max_size=8)))
        fields.append(wire_field(1, LEN, event, draw(PADDING), draw(PADDING)))
    fields += draw(st.lists(unknown_field(), max_size=2))
    flush = wire_field(2, VARINT, draw(varint_body(st.sampled_from([0, 1, 2]))), draw(PADDING), 0)
    fields += draw(st.lists(st.just(flush), max_size=1))
    random.Random(draw(st.integers(0, 2**32))).shuffle(fields)
    return b"".join(fields)


def _parsed_truth(raw: bytes) -> tuple[bool, bool] | None:
    """(holds a guaranteed event, holds a delivery field) as the runtime parses `raw`."""
    try:
        request = pb.PublishRequest.FromString(raw)
    except DecodeError:
        return None
    guaranteed = any(event.mode == pb.GUARANTEED for event in request.events)
    delivery = any(
        any(getattr(event, name) for name in framing.DELIVERY_FIELDS) for event in request.events
    )
    return guaranteed, delivery


@settings(max_examples=600, deadline=None)
@given(publish_request())
@example(b"\x0a\x03\x20\x81\x00")  # mode = GUARANTEED as a non-minimal varint
@example(b"\x0a\x04\xa0\x80\x00\x01")  # ... behind a non-minimal tag
@example(b"\x0a\x06\x20\x81\x80\x80\x80\x10")  # 2**32 + 1, truncated to 1
@example(b"\x0a\x04\x20\x01\x20\x00")  # given twice, the last (DIRECT) wins
@example(b"\x0a\x04\x20\x00\x20\x01")  # reordered: GUARANTEED last
@example(b"\x0a\x05\xc2\x81\x00\x01q")  # a forged queue behind a non-minimal tag
@example(b"\x0a\x05\xa8\x81\x80\x00\x02")  # redelivered = 2 behind a 4-byte tag
@example(b"\x8a\x80\x00\x04\xb8\x81\x00\x07")  # and a non-minimal event tag
def test_scan_request_covers_what_the_runtime_parses(raw: bytes) -> None:
    truth = _parsed_truth(raw)
    if truth is None:
        return
    guaranteed, delivery = framing.scan_request(raw)
    assert guaranteed or not truth[0]
    assert delivery or not truth[1]


def test_scan_request_generator_reaches_the_cases_that_matter() -> None:
    """The generator above produces parseable requests that hold each truth, non-canonically."""
    seen = {"guaranteed": 0, "delivery": 0, "non-canonical": 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(publish_request())
    def collect(raw: bytes) -> None:
        truth = _parsed_truth(raw)
        if truth is None:
            return
        seen["guaranteed"] += truth[0]
        seen["delivery"] += truth[1]
        seen["non-canonical"] += pb.PublishRequest.FromString(raw).SerializeToString() != raw

    collect()
    assert all(count >= 5 for count in seen.values()), seen


@given(st.lists(st.sampled_from([b"\x81", b"\xa0", b"x\xa0", b"x\x81", b"q"]), max_size=200))
def test_scan_request_on_a_payload_of_lookalike_bytes_is_still_exact(parts: list[bytes]) -> None:
    # Many bytes that look like the start of a hidden field: the scan gives up
    # looking and re-encodes; the answer stays the same.
    request = pb.PublishRequest()
    request.events.add(topic="t/x", payload=b"".join(parts), mode=pb.GUARANTEED)
    request.events.add(topic="t/y", payload=b"".join(parts), delivery_tag=7)
    assert framing.scan_request(request.SerializeToString()) == (True, True)


def test_scan_request_of_a_plain_direct_batch_is_false_false() -> None:
    request = pb.PublishRequest(flush=True)
    for i in range(100):
        request.events.add(topic=f"orders/us/{i}", payload=b"x" * 100, headers={"k": "v"})
    assert framing.scan_request(request.SerializeToString()) == (False, False)
