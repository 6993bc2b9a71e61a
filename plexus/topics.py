"""The topic grammar and the subscription index shared by every layer.

A *topic* is a `/`-separated list of non-empty levels, UTF-8, at most
`MAX_TOPIC_BYTES` bytes, with no wildcard and no control character:
`orders/us/created`.

A *pattern* (a subscription) uses the same levels plus wildcards:

- `*` as a whole level matches exactly one level;
- `ord*` (a prefix, then `*` ending the level) matches one level that starts
  with the prefix: `ord` and `orders`, not `or`;
- `>` as the whole last level matches one or more remaining levels.

`SubscriptionTrie` is the index the router matches every published event
against. It follows nats-server's sublist: one trie node per level, with
literal children in a dict plus one child per wildcard kind, and a bounded
match cache from which an add or remove evicts only the topics its pattern
matches. Pure code: no I/O, no clock, no asyncio; not thread-safe (one event
loop owns it).
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import chain, islice
from typing import Any, Generic, TypeVar

from plexus.errors import InvalidPattern, InvalidTopic

__all__ = [
    "MAX_TOPIC_BYTES",
    "SubscriptionTrie",
    "TopicSet",
    "pattern_matches",
    "utf8_size",
    "validate_pattern",
    "validate_topic",
]

MAX_TOPIC_BYTES: int = 250

SEPARATOR = "/"
WILDCARD_ONE = "*"
WILDCARD_REST = ">"

V = TypeVar("V", bound=Hashable)

# The walk's state after a topic's first levels is memoised (SubscriptionTrie._walk), for
# up to the match cache's size of distinct stems, and at least DEFAULT_STEMS.
STEM_LEVELS = 2
DEFAULT_STEMS = 4_096

# Keys the topic ending at a node of a `_TopicTree`; no level is empty.
_END = ""

# Control characters (Unicode category Cc): C0, DEL and C1. They break
# terminals, logs and line-based tools, and no sane topic needs them.
_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def utf8_size(text: str) -> int | None:
    """`text`'s length in UTF-8 bytes; None when it cannot be UTF-8 (a lone surrogate)."""
    # ASCII is the common case: its length in characters is its length in bytes.
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _byte_length_problem(text: str) -> str | None:
    """Why `text` is not a short enough UTF-8 string, or None if it is."""
    size = utf8_size(text)
    if size is None:
        return "not valid UTF-8 (lone surrogate)"
    if size > MAX_TOPIC_BYTES:
        return f"{MAX_TOPIC_BYTES} bytes at most, got {size}"
    return None


def _control_problem(level: str) -> str | None:
    for char in level:
        if char in _CONTROL:
            return f"control character U+{ord(char):04X}"
    return None


def _topic_problem(topic: object) -> tuple[str, int | None] | None:
    """The first thing wrong with `topic` as (reason, 0-based level), or None."""
    if not isinstance(topic, str):
        return f"must be a string, got {type(topic).__name__}", None
    if not topic:
        return "empty topic", None
    reason = _byte_length_problem(topic)
    if reason is not None:
        return reason, None
    for index, level in enumerate(topic.split(SEPARATOR)):
        if not level:
            return "empty level", index
        if WILDCARD_ONE in level:
            return (
                "wildcard '*' not allowed in a topic (use it in a subscription pattern)",
                index,
            )
        if WILDCARD_REST in level:
            return (
                "wildcard '>' not allowed in a topic (use it in a subscription pattern)",
                index,
            )
        reason = _control_problem(level)
        if reason is not None:
            return reason, index
    return None


def _pattern_problem(pattern: object) -> tuple[str, int | None] | None:
    """The first thing wrong with `pattern` as (reason, 0-based level), or None."""
    if not isinstance(pattern, str):
        return f"must be a string, got {type(pattern).__name__}", None
    if not pattern:
        return "empty pattern", None
    reason = _byte_length_problem(pattern)
    if reason is not None:
        return reason, None
    levels = pattern.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if not level:
            return "empty level", index
        if WILDCARD_REST in level:
            if level != WILDCARD_REST:
                return "'>' must be a whole level", index
            if index != last:
                return "'>' is only allowed as the last level", index
            continue
        star = level.find(WILDCARD_ONE)
        if star != -1 and star != len(level) - 1:
            return "'*' may only end a level", index
        reason = _control_problem(level)
        if reason is not None:
            return reason, index
    return None


def _looks_clean(text: str) -> bool:
    """Cheap pre-check that lets the common valid case skip the level loop."""
    return (
        text.isascii()
        and text.isprintable()  # no control character in ASCII
        and 0 < len(text) <= MAX_TOPIC_BYTES
        and text[0] != SEPARATOR
        and text[-1] != SEPARATOR
        and "//" not in text
    )


def validate_topic(topic: str) -> None:
    """Raise `InvalidTopic` naming the level and the reason if `topic` is not valid."""
    # Every publish validates its topic, so the usual ASCII topic takes a few
    # C-level string scans and no Python loop.
    if (
        isinstance(topic, str)
        and _looks_clean(topic)
        and WILDCARD_ONE not in topic
        and WILDCARD_REST not in topic
    ):
        return
    problem = _topic_problem(topic)
    if problem is not None:
        reason, level = problem
        raise InvalidTopic(topic, reason, level=level)


def validate_pattern(pattern: str) -> None:
    """Raise `InvalidPattern` naming the level and the reason if `pattern` is not valid."""
    if (
        isinstance(pattern, str)
        and _looks_clean(pattern)
        and WILDCARD_ONE not in pattern
        and WILDCARD_REST not in pattern
    ):
        return
    problem = _pattern_problem(pattern)
    if problem is not None:
        reason, level = problem
        raise InvalidPattern(pattern, reason, level=level)


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether `pattern` matches `topic`; validates the pattern, assumes a valid topic.

    For single checks; to match many patterns use `SubscriptionTrie`.
    """
    validate_pattern(pattern)
    wanted = pattern.split(SEPARATOR)
    levels = topic.split(SEPARATOR)
    for index, want in enumerate(wanted):
        if want == WILDCARD_REST:
            # Valid patterns hold '>' only last; it needs at least one level.
            return len(levels) > index
        if index >= len(levels):
            return False
        if want[-1] == WILDCARD_ONE:
            if not levels[index].startswith(want[:-1]):
                return False
        elif want != levels[index]:
            return False
    return len(levels) == len(wanted)


# --------------------------------------------------------------------------
# Subscription trie
# --------------------------------------------------------------------------


class _Node(Generic[V]):
    """One level of the trie: children by kind, and the values of patterns ending here."""

    __slots__ = ("literals", "prefixes", "rest", "star", "values")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[V]] = {}
        # `*` gets its own slot rather than prefixes[""]: it is by far the most
        # common wildcard and a slot read is cheaper than a dict probe.
        self.star: _Node[V] | None = None
        # `ord*` -> child, keyed by the prefix without the `*`.
        self.prefixes: dict[str, _Node[V]] = {}
        # Values of patterns ending here. Dicts (not sets) so that match
        # results keep a stable insertion order.
        self.values: dict[V, None] = {}
        # Values of patterns ending in `/>` after this node.
        self.rest: dict[V, None] = {}

    def is_empty(self) -> bool:
        return not (self.literals or self.star or self.prefixes or self.values or self.rest)


class _TopicTree:
    """A set of topics stored level by level, to list those a pattern matches.

    A node is a dict from level to child; the empty string, never a level,
    keys the topic that ends at a node. A child with nothing below it is just
    its topic (a str), which saves a dict per topic.
    """

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root: dict[str, Any] = {}

    def add(self, topic: str) -> None:
        levels = topic.split(SEPARATOR)
        node = self._root
        for level in levels[:-1]:
            child = node.get(level)
            if child is None:
                child = node[level] = {}
            elif type(child) is str:
                child = node[level] = {_END: child}
            node = child
        last = levels[-1]
        child = node.get(last)
        if child is None or type(child) is str:
            node[last] = topic
        else:
            child[_END] = topic

    def discard(self, topic: str) -> None:
        levels = topic.split(SEPARATOR)
        path: list[tuple[dict[str, Any], str]] = []
        node: Any = self._root
        for level in levels:
            if type(node) is str:
                return
            child = node.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        parent, last = path.pop()
        if type(node) is str:
            del parent[last]
        else:
            node.pop(_END, None)
            if node:
                return
            del parent[last]
        # Prune the nodes left empty, bottom up.
        for grandparent, level in reversed(path):
            if parent:
                break
            del grandparent[level]
            parent = grandparent

    def matching(self, levels: list[str], rest: bool) -> list[str]:
        """The topics held that the pattern `levels` matches (`rest`: it ended in `/>`)."""
        nodes: list[dict[str, Any]] = [self._root]
        for index, level in enumerate(levels):
            last = index == len(levels) - 1 and not rest
            following: list[Any] = []
            for node in nodes:
                if level == WILDCARD_ONE:
                    following.extend(child for key, child in node.items() if key)
                elif level[-1] == WILDCARD_ONE:
                    prefix = level[:-1]
                    following.extend(
                        child for key, child in node.items() if key and key.startswith(prefix)
                    )
                else:
                    child = node.get(level)
                    if child is not None:
                        following.append(child)
            if not last:
                # Topics ending here are too short for what follows.
                following = [child for child in following if type(child) is not str]
            if not following:
                return []
            nodes = following
        found: list[str] = []
        if not rest:
            for node in nodes:
                topic = node if type(node) is str else node.get(_END)
                if topic is not None:
                    found.append(topic)
            return found
        # `>`: every topic at least one level below these nodes.
        stack = [child for node in nodes for key, child in node.items() if key]
        while stack:
            node = stack.pop()
            if type(node) is str:
                found.append(node)
                continue
            for key, child in node.items():
                if key:
                    stack.append(child)
                else:
                    found.append(child)
        return found


class SubscriptionTrie(Generic[V]):
    """An index of (pattern, value) entries, matched against topics.

    `match` answers from a bounded cache of recent topics when it can. An
    `add` or `remove` that changes the index evicts from the cache only the
    topics its pattern matches (nats-server's sublist does the same), found
    through a tree of the cached topics rather than by testing each one, so
    subscriber churn leaves the rest of the cache, and its hit rate, alone.
    Every such change bumps `generation`.
    """

    DEFAULT_CACHE_SIZE = 32_768

    __slots__ = (
        "_cache",
        "_cache_size",
        "_cached_topics",
        "_count",
        "_generation",
        "_missed_once",
        "_patterns",
        "_patterns_of",
        "_root",
        "_shared",
        "_stems",
        "_stems_size",
        "_uncounted_topics",
    )

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """`cache_size` bounds the match cache in topics; 0 turns the cache off."""
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._root: _Node[V] = _Node()
        self._cache: dict[str, tuple[V, ...]] = {}
        # The keys of `_cache`, level by level, to find those a pattern matches.
        # Kept lazily: topics cached since the last change wait in
        # `_uncounted_topics`, and a cache overflow drops the tree (None) to
        # be rebuilt at the next change; a stream of new topics without
        # subscription changes then pays nothing for it.
        self._cached_topics: _TopicTree | None = _TopicTree()
        self._uncounted_topics: list[str] = []
        self._missed_once: set[str] = set()
        self._cache_size = cache_size
        self._count = 0
        self._generation = 0
        # pattern -> number of values subscribed with it.
        self._patterns: dict[str, int] = {}
        # value -> number of patterns it is subscribed with, and how many values have
        # more than one (only then may a match find a value twice).
        self._patterns_of: dict[V, int] = {}
        self._shared = 0
        # A topic's first STEM_LEVELS levels -> the walk's nodes and values after them
        # (see `_walk`); emptied by every change to the index.
        self._stems: dict[str, tuple[list[_Node[V]], list[dict[V, None]]]] = {}
        self._stems_size = max(cache_size, DEFAULT_STEMS)

    # -- reading ----------------------------------------------------------

    def match(self, topic: str) -> tuple[V, ...]:
        """The distinct values whose patterns match `topic` (assumed valid)."""
        # Hot path: one dict lookup. try/except costs nothing when it hits.
        try:
            return self._cache[topic]
        except KeyError:
            return self._match_miss(topic)

    def __len__(self) -> int:
        """The number of (pattern, value) entries."""
        return self._count

    def patterns(self) -> set[str]:
        """The distinct patterns held."""
        return set(self._patterns)

    @property
    def generation(self) -> int:
        """A counter bumped by every add or remove that changed the index."""
        return self._generation

    # -- writing ----------------------------------------------------------

    def add(self, pattern: str, value: V) -> bool:
        """Subscribe `value` with `pattern`; False if that entry was already there."""
        validate_pattern(pattern)
        node = self._root
        levels = pattern.split(SEPARATOR)
        if levels[-1] == WILDCARD_REST:
            levels.pop()
            rest = True
        else:
            rest = False
        for level in levels:
            if level == WILDCARD_ONE:
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif level[-1] == WILDCARD_ONE:
                prefix = level[:-1]
                child = node.prefixes.get(prefix)
                if child is None:
                    child = node.prefixes[prefix] = _Node()
                node = child
            else:
                child = node.literals.get(level)
                if child is None:
                    child = node.literals[level] = _Node()
                node = child
        bucket = node.rest if rest else node.values
        if value in bucket:
            # Nodes created on the way down are impossible here: the entry
            # exists, so its whole path did already.
            return False
        bucket[value] = None
        self._count += 1
        held = self._patterns_of[value] = self._patterns_of.get(value, 0) + 1
        if held == 2:
            self._shared += 1
        self._patterns[pattern] = self._patterns.get(pattern, 0) + 1
        self._evict(pattern, levels, rest)
        return True

    def remove(self, pattern: str, value: V) -> bool:
        """Unsubscribe `value` from `pattern`; False if that entry was not there.

        Raises `InvalidPattern` for an invalid pattern, as `add` does.
        """
        validate_pattern(pattern)
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        if rest:
            levels.pop()
        # The path down, to prune nodes left empty on the way back up.
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in levels:
            if level == WILDCARD_ONE:
                child = node.star
            elif level[-1] == WILDCARD_ONE:
                child = node.prefixes.get(level[:-1])
            else:
                child = node.literals.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        bucket = node.rest if rest else node.values
        if value not in bucket:
            return False
        del bucket[value]
        self._count -= 1
        held = self._patterns_of[value] - 1
        if held:
            self._patterns_of[value] = held
            if held == 1:
                self._shared -= 1
        else:
            del self._patterns_of[value]
        left = self._patterns[pattern] - 1
        if left:
            self._patterns[pattern] = left
        else:
            del self._patterns[pattern]
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            if level == WILDCARD_ONE:
                parent.star = None
            elif level[-1] == WILDCARD_ONE:
                del parent.prefixes[level[:-1]]
            else:
                del parent.literals[level]
            node = parent
        self._evict(pattern, levels, rest)
        return True

    # -- internals --------------------------------------------------------

    def _evict(self, pattern: str, levels: list[str], rest: bool) -> None:
        """Drop the cached topics that `pattern` matches (its `levels`, then `/>` if `rest`)."""
        self._generation += 1
        if self._stems:
            self._stems.clear()
        cache = self._cache
        if not cache:
            return
        cached_topics = self._topic_tree()
        if not rest and WILDCARD_ONE not in pattern:
            # A literal pattern matches one topic: itself.
            if cache.pop(pattern, None) is not None:
                cached_topics.discard(pattern)
            return
        for topic in cached_topics.matching(levels, rest):
            del cache[topic]
            cached_topics.discard(topic)

    def _topic_tree(self) -> _TopicTree:
        """The tree of the cached topics, brought up to date."""
        tree = self._cached_topics
        if tree is None:
            tree = self._cached_topics = _TopicTree()
            self._uncounted_topics = list(self._cache)
        for topic in self._uncounted_topics:
            tree.add(topic)
        self._uncounted_topics = []
        return tree

    def _match_miss(self, topic: str) -> tuple[V, ...]:
        result = self._walk(topic)
        cache = self._cache
        size = self._cache_size
        if size:
            # A topic is cached the second time it misses: a stream of topics seen
            # once (unique ids in them) then costs no cache churn at all.
            once = self._missed_once
            if topic not in once:
                if len(once) >= size:
                    once.clear()
                once.add(topic)
                return result
            if len(cache) >= size:
                # Evict the oldest half (dicts keep insertion order): amortised
                # O(1) per insert, and recent topics survive.
                for stale in list(islice(cache, size // 2 or 1)):
                    del cache[stale]
                self._cached_topics = None
                self._uncounted_topics = []
            cache[topic] = result
            if self._cached_topics is not None:
                self._uncounted_topics.append(topic)
        return result

    def _walk(self, topic: str) -> tuple[V, ...]:
        """Match `topic` against the trie, level by level, breadth first.

        Topics share their first levels far more than their whole (`orders/us`
        starts every order from one region), and those levels are where the
        walk fans out most (the root's prefix wildcards, then one branch per
        wildcard), so the walk's state after the first two levels is memoised
        by them, until the index changes.
        """
        levels = topic.split(SEPARATOR)
        if len(levels) <= STEM_LEVELS:
            nodes, found = _advance([self._root], [], levels)
        else:
            stem = levels[0] + SEPARATOR + levels[1]
            memo = self._stems
            state = memo.get(stem)
            if state is None:
                if len(memo) >= self._stems_size:
                    memo.clear()
                state = memo[stem] = _advance([self._root], [], levels[:STEM_LEVELS])
            nodes, stem_found = state
            found = stem_found.copy()
            if nodes:
                nodes, found = _advance(nodes, found, levels[STEM_LEVELS:])
        for node in nodes:
            if node.values:
                found.append(node.values)
        if len(found) <= 1:
            return tuple(found[0]) if found else ()
        values = chain.from_iterable(found)
        # A value held under one pattern only can match once: no need to dedup.
        return tuple(dict.fromkeys(values) if self._shared else values)


def _advance(
    nodes: list[_Node[V]], found: list[dict[V, None]], levels: list[str]
) -> tuple[list[_Node[V]], list[dict[V, None]]]:
    """The nodes reached from `nodes` by `levels`, and `found` plus the values (a dict
    each) of `/>` patterns passed on the way (each has at least one level after it)."""
    for level in levels:
        following: list[_Node[V]] = []
        for node in nodes:
            if node.rest:
                found.append(node.rest)
            child = node.literals.get(level)
            if child is not None:
                following.append(child)
            if node.star is not None:
                following.append(node.star)
            prefixes = node.prefixes
            if prefixes:
                # Probe whichever is smaller: the prefixes held here, or
                # the prefixes of this level.
                if len(prefixes) <= len(level):
                    for prefix, child in prefixes.items():
                        if level.startswith(prefix):
                            following.append(child)
                else:
                    for end in range(1, len(level) + 1):
                        child = prefixes.get(level[:end])
                        if child is not None:
                            following.append(child)
        if not following:
            return following, found
        nodes = following
    return nodes, found


class TopicSet:
    """A set of topics, to list those a pattern matches: `SubscriptionTrie` the other way
    round (patterns given, topics held), e.g. the topics that have a retained message."""

    __slots__ = ("_tree",)

    def __init__(self) -> None:
        self._tree = _TopicTree()

    def add(self, topic: str) -> None:
        """Hold `topic` (valid; a topic already held stays once)."""
        self._tree.add(topic)

    def discard(self, topic: str) -> None:
        self._tree.discard(topic)

    def matching(self, pattern: str) -> list[str]:
        """The topics held that `pattern` (valid) matches, in no particular order."""
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        return self._tree.matching(levels[:-1] if rest else levels, rest)
