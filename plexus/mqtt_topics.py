"""MQTT topics and topic filters as Plexus topics and patterns, one to one.

An MQTT topic is the Plexus topic of the same text (`a/b` is `a/b`) unless it
holds what Plexus's grammar (`plexus.topics`) does not allow. Those parts are
escaped, reversibly, as `%` and two upper-case hex digits giving the code
point:

- `%` itself: `%25`;
- the Plexus wildcard characters `*` (`%2A`) and `>` (`%3E`);
- control characters, C0 (U+0001..U+001F), DEL and C1 (U+0080..U+009F):
  `%01`..`%1F`, `%7F`, `%80`..`%9F`;
- an empty level (MQTT allows `/a`, `a//b`, `a/`): the level `%` alone, which
  no escaped text can otherwise give (`/a` is `%/a`).

So `to_mqtt_topic(to_plexus_topic(t)) == t` for every valid MQTT topic, and
a gRPC client reaches the MQTT topic `t` by publishing `to_plexus_topic(t)`.

The other way, `to_mqtt_topic` reads any valid Plexus topic: it undoes the
escapes above (exactly those, upper-case hex), keeps every other `%` as it is
(`%41`, `%2a`, a lone `%` topic stay literal), and writes the `+` and `#`
Plexus allows in topics but MQTT reserves for filters as `%2B` and `%23`.
Such topics, which no MQTT client could have published, reach MQTT
subscribers under that text; publishing back to it lands on its escaped
form, not on the original.

Filters: `+` is `*`, `#` is `>`, with MQTT's meaning that `a/#` matches `a`
too (`to_plexus_patterns` gives both `a` and `a/>`). MQTT does not let a
filter whose first level is a wildcard match topics starting with `$`
(`$SYS/...`); Plexus patterns know nothing of that, so whoever delivers to an
MQTT subscriber checks `mqtt_filter_matches` for `$` topics. An MQTT 5
shared subscription (`$share/group/filter`) is the session's to take apart:
these functions read it as an ordinary filter.
"""

from __future__ import annotations

import re

from plexus.errors import InvalidPattern, InvalidTopic
from plexus.topics import MAX_TOPIC_BYTES, utf8_size, validate_pattern, validate_topic

__all__ = [
    "EMPTY_LEVEL",
    "mqtt_filter_matches",
    "to_mqtt_topic",
    "to_plexus_patterns",
    "to_plexus_topic",
    "validate_mqtt_filter",
    "validate_mqtt_topic",
]

SEPARATOR = "/"
# The Plexus level that stands for an empty MQTT level.
EMPTY_LEVEL = "%"
MQTT_SINGLE = "+"
MQTT_MULTI = "#"
# MQTT strings are at most 65535 bytes of UTF-8.
MAX_MQTT_TOPIC_BYTES = 65_535

_ESCAPED = (
    0x25,  # %
    0x2A,  # *
    0x3E,  # >
    *range(0x01, 0x20),  # C0 but U+0000, which MQTT forbids
    0x7F,
    *range(0x80, 0xA0),
)
_ESCAPE = str.maketrans({code: f"%{code:02X}" for code in _ESCAPED})
_UNESCAPE = {f"%{code:02X}": chr(code) for code in _ESCAPED}
_NEEDS_ESCAPE = re.compile(r"[%*>\x01-\x1f\x7f-\x9f]")
# One pass over a Plexus level: an escape to undo, or an MQTT wildcard to escape.
_FROM_PLEXUS = re.compile(r"%[0-9A-F]{2}|[+#]")
_MQTT_WILDCARDS = {MQTT_SINGLE: "%2B", MQTT_MULTI: "%23"}


def _mqtt_string_problem(text: object) -> str | None:
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if not text:
        return "empty (MQTT topics and filters have at least one character)"
    if "\x00" in text:
        return "U+0000 is not allowed in MQTT"
    size = utf8_size(text)
    if size is None:
        return "not valid UTF-8 (lone surrogate)"
    if size > MAX_MQTT_TOPIC_BYTES:
        return f"{MAX_MQTT_TOPIC_BYTES} bytes at most in MQTT, got {size}"
    return None


def validate_mqtt_topic(topic: str) -> None:
    """Raise `InvalidTopic` if `topic` is not a valid MQTT topic name."""
    reason = _mqtt_string_problem(topic)
    if reason is not None:
        raise InvalidTopic(topic, reason)
    if MQTT_SINGLE not in topic and MQTT_MULTI not in topic:
        return
    for index, level in enumerate(topic.split(SEPARATOR)):
        if MQTT_SINGLE in level or MQTT_MULTI in level:
            raise InvalidTopic(
                topic,
                "MQTT wildcards '+' and '#' are not allowed in a topic name "
                "(use them in a topic filter)",
                level=index,
            )


def validate_mqtt_filter(topic_filter: str) -> None:
    """Raise `InvalidPattern` if `topic_filter` is not a valid MQTT topic filter."""
    reason = _mqtt_string_problem(topic_filter)
    if reason is not None:
        raise InvalidPattern(topic_filter, reason)
    levels = topic_filter.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if MQTT_MULTI in level:
            if level != MQTT_MULTI:
                raise InvalidPattern(topic_filter, "'#' must be a whole level", level=index)
            if index != last:
                raise InvalidPattern(
                    topic_filter, "'#' is only allowed as the last level", level=index
                )
        elif MQTT_SINGLE in level and level != MQTT_SINGLE:
            raise InvalidPattern(topic_filter, "'+' must be a whole level", level=index)


def _escape_level(level: str) -> str:
    return level.translate(_ESCAPE) if level else EMPTY_LEVEL


def _escape(topic: str) -> str:
    """`topic`'s levels escaped for Plexus (wildcard levels pass as they are)."""
    # Most topics need nothing: a C-level scan, then back unchanged.
    if (
        _NEEDS_ESCAPE.search(topic) is None
        and topic[0] != SEPARATOR
        and topic[-1] != SEPARATOR
        and "//" not in topic
    ):
        return topic
    return SEPARATOR.join(_escape_level(level) for level in topic.split(SEPARATOR))


def _size_problem(escaped: str) -> str | None:
    size = len(escaped) if escaped.isascii() else len(escaped.encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        return f"{size} bytes once escaped for Plexus, {MAX_TOPIC_BYTES} at most"
    return None


def to_plexus_topic(mqtt_topic: str) -> str:
    """The Plexus topic of an MQTT topic name; `InvalidTopic` naming what MQTT forbids."""
    validate_mqtt_topic(mqtt_topic)
    escaped = _escape(mqtt_topic)
    reason = _size_problem(escaped)
    if reason is not None:
        raise InvalidTopic(mqtt_topic, reason)
    validate_topic(escaped)  # holds by construction; a change to the grammar shows here
    return escaped


def _unescape_match(match: re.Match[str]) -> str:
    text = match.group()
    return _MQTT_WILDCARDS.get(text) or _UNESCAPE.get(text, text)


def to_mqtt_topic(plexus_topic: str) -> str:
    """The MQTT topic name of a valid Plexus topic (see the module docstring for odd `%`s)."""
    if "%" not in plexus_topic and "+" not in plexus_topic and "#" not in plexus_topic:
        return plexus_topic
    levels = plexus_topic.split(SEPARATOR)
    if len(levels) == 1 and levels[0] == EMPTY_LEVEL:
        # An MQTT topic has at least one character: `%` alone stays itself.
        return plexus_topic
    return SEPARATOR.join(
        "" if level == EMPTY_LEVEL else _FROM_PLEXUS.sub(_unescape_match, level) for level in levels
    )


def to_plexus_patterns(mqtt_filter: str) -> list[str]:
    """The Plexus patterns that together match what an MQTT topic filter matches.

    One pattern, or two for a filter ending in `/#` (`a/#`: `a` and `a/>`).
    `InvalidPattern` names the filter and what is wrong with it.
    """
    validate_mqtt_filter(mqtt_filter)
    levels = [
        "*" if level == MQTT_SINGLE else ">" if level == MQTT_MULTI else _escape_level(level)
        for level in mqtt_filter.split(SEPARATOR)
    ]
    pattern = SEPARATOR.join(levels)
    reason = _size_problem(pattern)
    if reason is not None:
        raise InvalidPattern(mqtt_filter, reason)
    validate_pattern(pattern)
    if len(levels) > 1 and levels[-1] == ">":
        # MQTT's `a/#` also matches its parent `a`.
        return [SEPARATOR.join(levels[:-1]), pattern]
    return [pattern]


def mqtt_filter_matches(topic_filter: str, mqtt_topic: str) -> bool:
    """Whether an MQTT topic filter matches an MQTT topic name, by MQTT's rules (section 4.7).

    Validates the filter (`InvalidPattern`); assumes a valid topic.
    """
    validate_mqtt_filter(topic_filter)
    wanted = topic_filter.split(SEPARATOR)
    if mqtt_topic.startswith("$") and wanted[0] in (MQTT_SINGLE, MQTT_MULTI):
        return False
    levels = mqtt_topic.split(SEPARATOR)
    for index, want in enumerate(wanted):
        if want == MQTT_MULTI:
            # Matches the parent level too: `a/#` matches `a`.
            return True
        if index >= len(levels) or (want != MQTT_SINGLE and want != levels[index]):
            return False
    return len(levels) == len(wanted)
