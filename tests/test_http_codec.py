"""The HTTP front door's event codec (node/http_api/codec.py), without sockets: what a
client reads of an event it can publish back unchanged; bad fields are named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.http_api.codec import event_from_json, event_json, flag, headers_of
from plexus.errors import InvalidArgument
from plexus.v1 import plexus_pb2 as pb

pytestmark = pytest.mark.timeout(60)


@given(payload=st.binary(max_size=200), headers=st.dictionaries(st.text(), st.text(), max_size=3))
def test_an_event_read_from_json_publishes_back_the_same_payload_and_headers(
    payload: bytes, headers: dict[str, str]
) -> None:
    sent = pb.Event(topic="a/b", payload=payload, headers=headers, id=(1_764_000_000_000 << 22) + 5)
    read = event_json(sent)
    assert read["id"] == str(sent.id) and read["published_ms"] == 1_764_000_000_000
    again, key = event_from_json(read)
    assert (again.topic, again.payload, dict(again.headers), key) == ("a/b", payload, headers, "")


def test_text_stays_text_and_other_bytes_are_base64() -> None:
    assert event_json(pb.Event(payload="été".encode()))["encoding"] == "utf-8"
    assert event_json(pb.Event(payload=b"\xff"))["payload"] == "/w=="


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"payload": "x"}, "'topic'"),
        ({"topic": "a", "payload": 5}, "'payload'"),
        ({"topic": "a", "payload": "%%", "encoding": "base64"}, "base64"),
        ({"topic": "a", "encoding": "utf-16"}, "'encoding'"),
        ({"topic": "a", "headers": {"k": 1}}, "'headers'"),
        ({"topic": "a", "guaranteed": "yes"}, "'guaranteed'"),
        ({"topic": "a", "key": "k"}, "guaranteed"),
        ({"topic": "a", "ttl_ms": -1}, "'ttl_ms'"),
    ],
)
def test_a_bad_field_is_refused_naming_it(message: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        event_from_json(message)


def test_plexus_headers_and_content_type_become_event_headers() -> None:
    request = {"Plexus-Header-Shelf": "4", "Content-Type": "text/plain", "Accept": "*/*"}
    assert headers_of(request) == {"shelf": "4", "content-type": "text/plain"}


def test_a_flag_is_true_false_or_named_as_wrong() -> None:
    assert flag("guaranteed", "") and flag("guaranteed", "TRUE") and not flag("g", None)
    with pytest.raises(InvalidArgument, match="'guaranteed'"):
        flag("guaranteed", "maybe")
