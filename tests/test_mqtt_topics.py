"""MQTT topics and filters on Plexus: the escape round trip and MQTT's matching rules (4.7)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from plexus.errors import InvalidPattern, InvalidTopic
from plexus.mqtt_topics import (
    mqtt_filter_matches,
    to_mqtt_topic,
    to_plexus_patterns,
    to_plexus_topic,
)
from plexus.topics import MAX_TOPIC_BYTES, pattern_matches, validate_topic

pytestmark = pytest.mark.timeout(60)

# Levels drawn to hit what Plexus's grammar forbids: empty levels, '*', '>',
# '%' (the escape character), control characters, '$', and any other text.
_LEVEL_CHARS = st.one_of(
    st.sampled_from(["a", "b", "*", ">", "%", "%2A", "%25", "$", "\x01", "\x7f", "\x85", " "]),
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00/+#"),
)
_LEVELS = st.lists(_LEVEL_CHARS, max_size=4).map("".join)
# At most 5 levels of 4 characters: even escaped, far below MAX_TOPIC_BYTES.
MQTT_TOPICS = st.lists(_LEVELS, min_size=1, max_size=5).map("/".join).filter(bool)
_FILTER_LEVELS = st.one_of(_LEVELS, st.just("+"))
MQTT_FILTERS = st.builds(
    lambda levels, multi: "/".join([*levels, "#"] if multi else levels) or "#",
    st.lists(_FILTER_LEVELS, min_size=0, max_size=4),
    st.booleans(),
).filter(lambda f: f != "")


@given(MQTT_TOPICS)
def test_every_mqtt_topic_maps_to_a_valid_plexus_topic_and_back(topic: str) -> None:
    plexus_topic = to_plexus_topic(topic)
    validate_topic(plexus_topic)
    assert to_mqtt_topic(plexus_topic) == topic


@given(MQTT_TOPICS, MQTT_TOPICS)
def test_distinct_mqtt_topics_stay_distinct_on_plexus(one: str, other: str) -> None:
    assume(one != other)
    assert to_plexus_topic(one) != to_plexus_topic(other)


@given(MQTT_FILTERS, MQTT_TOPICS)
def test_mqtt_matching_agrees_with_plexus_matching_of_the_mapped_patterns(
    topic_filter: str, topic: str
) -> None:
    try:
        patterns = to_plexus_patterns(topic_filter)
    except InvalidPattern:
        assume(False)
    plexus_topic = to_plexus_topic(topic)
    on_plexus = any(pattern_matches(p, plexus_topic) for p in patterns)
    in_mqtt = mqtt_filter_matches(topic_filter, topic)
    if topic.startswith("$") and topic_filter[0] in "+#":
        # MQTT's one rule Plexus patterns do not know: the deliverer drops these.
        assert not in_mqtt
    else:
        assert on_plexus == in_mqtt


@pytest.mark.parametrize(
    ("mqtt", "plexus"),
    [
        ("a/b", "a/b"),
        ("sensors/us/1", "sensors/us/1"),
        ("/a", "%/a"),
        ("a//b", "a/%/b"),
        ("a/", "a/%"),
        ("/", "%/%"),
        ("50%", "50%25"),
        ("a*b/>", "a%2Ab/%3E"),
        ("bell\x07", "bell%07"),
        ("next\x85line", "next%85line"),
        ("$SYS/uptime", "$SYS/uptime"),
        ("émoji/🚀", "émoji/🚀"),
    ],
)
def test_topic_mapping_examples(mqtt: str, plexus: str) -> None:
    assert to_plexus_topic(mqtt) == plexus
    assert to_mqtt_topic(plexus) == mqtt


@pytest.mark.parametrize(
    ("plexus", "mqtt"),
    [
        ("a/%41", "a/%41"),  # not one of the escaped characters: literal
        ("a/%2a", "a/%2a"),  # lower-case hex is not an escape
        ("a/%", "a/"),
        ("%", "%"),  # an MQTT topic is never empty
        ("100%", "100%"),
        ("a/%00", "a/%00"),  # U+0000 is not an MQTT character
        ("a/#/b+c", "a/%23/b%2Bc"),  # MQTT wildcards, allowed in Plexus topics
    ],
)
def test_plexus_topics_from_grpc_with_odd_percent_signs_map_to_valid_mqtt_topics(
    plexus: str, mqtt: str
) -> None:
    validate_topic(plexus)
    assert to_mqtt_topic(plexus) == mqtt
    to_plexus_topic(mqtt)  # a valid MQTT topic name


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("", "empty"),
        ("a/+", "wildcards"),
        ("a/#", "wildcards"),
        ("sport/tennis#", "wildcards"),
        ("a\x00b", "U+0000"),
        ("a/\ud800", "UTF-8"),
        ("x" * (MAX_TOPIC_BYTES + 1), "250 at most"),
        ("*" * 100, "once escaped for Plexus"),
        ("x" * 65_536, "65535 bytes"),
    ],
)
def test_invalid_mqtt_topics_are_refused_naming_the_problem(topic: str, words: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        to_plexus_topic(topic)
    assert words in str(info.value)
    assert info.value.topic == topic


@pytest.mark.parametrize(
    ("topic_filter", "words"),
    [
        ("", "empty"),
        ("sport/tennis#", "'#' must be a whole level"),
        ("sport/tennis/#/ranking", "'#' is only allowed as the last level"),
        ("sport+", "'+' must be a whole level"),
        ("sport/+player", "'+' must be a whole level"),
        ("a\x00", "U+0000"),
        ("*" * 100, "once escaped for Plexus"),
    ],
)
def test_invalid_mqtt_filters_are_refused_naming_the_problem(topic_filter: str, words: str) -> None:
    with pytest.raises(InvalidPattern) as info:
        to_plexus_patterns(topic_filter)
    assert words in str(info.value)
    assert info.value.pattern == topic_filter


@pytest.mark.parametrize(
    ("topic_filter", "patterns"),
    [
        ("#", [">"]),
        ("+", ["*"]),
        ("a/#", ["a", "a/>"]),
        ("+/#", ["*", "*/>"]),
        ("a/+/c", ["a/*/c"]),
        ("/#", ["%", "%/>"]),
        ("+/+", ["*/*"]),
        ("a*/b>", ["a%2A/b%3E"]),  # Plexus wildcard characters are literal in MQTT
    ],
)
def test_filters_map_to_plexus_patterns(topic_filter: str, patterns: list[str]) -> None:
    assert to_plexus_patterns(topic_filter) == patterns


# MQTT 5.0 section 4.7 (and 3.1.1 section 4.7), its examples one by one.
@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+", "sport", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+/tennis/#", "sport/tennis/x", True),
        ("#", "$SYS/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("ACCOUNTS", "Accounts", False),
        ("a/b", "a/b/", False),
    ],
)
def test_mqtt_filter_matching_follows_the_spec_examples(
    topic_filter: str, topic: str, matches: bool
) -> None:
    assert mqtt_filter_matches(topic_filter, topic) is matches
    if not topic.startswith("$") or topic_filter[0] not in "+#":
        plexus_topic = to_plexus_topic(topic)
        on_plexus = any(pattern_matches(p, plexus_topic) for p in to_plexus_patterns(topic_filter))
        assert on_plexus is matches
