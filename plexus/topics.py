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
matches. A miss starts from a memo of where the walk stands after a topic's first
two levels, with the third level's literals of all the nodes there merged into one
map (`_Stem`). Pure code: no I/O, no clock, no asyncio; not thread-safe (one event
loop owns it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Sequence
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
T = TypeVar("T")

# The walk's state after a topic's first levels is memoised (SubscriptionTrie._walk).
STEM_LEVELS = 2

# What a trie node's dicts are until something is put in them: most nodes are leaves,
# and one shared empty dict, hot in the CPU's cache, is cheaper to look into than a
# dict of their own. Never written to: `add` replaces it first.
_NOTHING: dict[Any, Any] = {}

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

    __slots__ = (
        "literals",
        "prefixes",
        "rest",
        "rest_tuple",
        "star",
        "stems",
        "values",
        "values_tuple",
    )

    def __init__(self) -> None:
        self.literals: dict[str, _Node[V]] = _NOTHING
        # `*` gets its own slot rather than prefixes[""]: it is by far the most
        # common wildcard and a slot read is cheaper than a dict probe.
        self.star: _Node[V] | None = None
        # `ord*` -> child, keyed by the prefix without the `*`.
        self.prefixes: dict[str, _Node[V]] = _NOTHING
        # Values of patterns ending here. Dicts (not sets) so that match
        # results keep a stable insertion order.
        self.values: dict[V, None] = _NOTHING
        # Values of patterns ending in `/>` after this node.
        self.rest: dict[V, None] = _NOTHING
        # `values` and `rest` as tuples, made when a match first needs them after a
        # change (None until then): a match then joins tuples, or returns one as is.
        self.values_tuple: tuple[V, ...] | None = None
        self.rest_tuple: tuple[V, ...] | None = None
        # The memo's node sets this node is in (set at depth STEM_LEVELS only), to
        # update when a child is added or removed here.
        self.stems: list[_Stem[V]] | None = None

    def is_empty(self) -> bool:
        return not (self.literals or self.star or self.prefixes or self.values or self.rest)

    def fresh_values(self) -> tuple[V, ...]:
        found = self.values_tuple = tuple(self.values)
        return found

    def fresh_rest(self) -> tuple[V, ...]:
        found = self.rest_tuple = tuple(self.rest)
        return found


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


class _MatchCache(dict[str, tuple[Any, ...]]):
    """A trie's match cache, topic -> values, bounded to `size` topics, that answers a
    miss by walking the trie (`__missing__`), so that the trie's `match` is its
    `__getitem__`: a hit runs no Python code and a miss raises no KeyError."""

    __slots__ = ("_missed_once", "_size", "_tree", "_uncounted", "_walk")

    def __init__(self, walk: Callable[[str], tuple[Any, ...]], size: int) -> None:
        super().__init__()
        self._walk = walk
        self._size = size
        self._missed_once: set[str] = set()
        # The keys, level by level, to find those a pattern matches. Kept lazily:
        # topics cached since the last change wait in `_uncounted`, and an overflow
        # drops the tree (None) to be rebuilt at the next change; a stream of new
        # topics without subscription changes then pays nothing for it.
        self._tree: _TopicTree | None = _TopicTree()
        self._uncounted: list[str] = []

    def __missing__(self, topic: str) -> tuple[Any, ...]:
        result = self._walk(topic)
        size = self._size
        if size:
            # A topic is cached the second time it misses: a stream of topics seen
            # once (unique ids in them) then costs no cache churn at all.
            once = self._missed_once
            if topic not in once:
                if len(once) >= size:
                    once.clear()
                once.add(topic)
                return result
            if len(self) >= size:
                # Evict the oldest half (dicts keep insertion order): amortised
                # O(1) per insert, and recent topics survive.
                for stale in list(islice(self, size // 2 or 1)):
                    del self[stale]
                self._tree = None
                self._uncounted = []
            self[topic] = result
            if self._tree is not None:
                self._uncounted.append(topic)
        return result

    def evict(self, pattern: str, levels: list[str], rest: bool) -> None:
        """Drop the cached topics that `pattern` matches (its `levels`, then `/>` if `rest`)."""
        if not self:
            return
        tree = self.topic_tree()
        if not rest and WILDCARD_ONE not in pattern:
            # A literal pattern matches one topic: itself.
            if self.pop(pattern, None) is not None:
                tree.discard(pattern)
            return
        for topic in tree.matching(levels, rest):
            del self[topic]
            tree.discard(topic)

    def topic_tree(self) -> _TopicTree:
        """The tree of the cached topics, brought up to date."""
        tree = self._tree
        if tree is None:
            tree = self._tree = _TopicTree()
            self._uncounted = list(self)
        for topic in self._uncounted:
            tree.add(topic)
        self._uncounted = []
        return tree


class SubscriptionTrie(Generic[V]):
    """An index of (pattern, value) entries, matched against topics.

    `match(topic)` gives the distinct values whose patterns match `topic` (assumed
    valid). It answers from a bounded cache of recent topics when it can. An
    `add` or `remove` that changes the index evicts from the cache only the
    topics its pattern matches (nats-server's sublist does the same), found
    through a tree of the cached topics rather than by testing each one, so
    subscriber churn leaves the rest of the cache, and its hit rate, alone.
    Every such change bumps `generation`.
    """

    DEFAULT_CACHE_SIZE = 32_768
    # The stem memo holds up to the match cache's size of stems and of node sets, and
    # at least DEFAULT_STEMS; the node sets' merged maps at most MIN_MERGED_ENTRIES
    # entries, or twice the index's entries if more.
    DEFAULT_STEMS = 4_096
    MIN_MERGED_ENTRIES = 65_536
    # A node set's literals are merged once walks have gone through it as many times
    # as its literal children / MERGE_COST_SHARE: the copy then costs each walk that
    # paid for it a few dict inserts at most, and a set used a few times (one
    # client's own stem) is never copied.
    MERGE_COST_SHARE = 8

    __slots__ = (
        "_cache",
        "_count",
        "_generation",
        "_merged_entries",
        "_patterns",
        "_patterns_of",
        "_root",
        "_shared",
        "_stem_sets",
        "_stems",
        "_stems_size",
        "match",
    )

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """`cache_size` bounds the match cache in topics; 0 turns the cache off."""
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._root: _Node[V] = _Node()
        self._cache = _MatchCache(self._walk, cache_size)
        # The cache's own lookup: a hit runs no Python code, a miss walks the trie.
        self.match: Callable[[str], tuple[V, ...]] = self._cache.__getitem__
        self._count = 0
        self._generation = 0
        # pattern -> number of values subscribed with it.
        self._patterns: dict[str, int] = {}
        # value -> number of patterns it is subscribed with, and how many values have
        # more than one (only then may a match find a value twice).
        self._patterns_of: dict[V, int] = {}
        self._shared = 0
        # A topic's first STEM_LEVELS levels -> the `/>` values passed on the way and
        # the set of nodes reached (see `_walk`), interned in `_stem_sets` by the
        # nodes' ids; each holds at most `_stems_size` entries. A change below
        # the stems updates the node sets it touches; one within them forgets the stems.
        self._stems: dict[str, tuple[list[tuple[V, ...]], _Stem[V] | None]] = {}
        self._stem_sets: dict[tuple[int, ...], _Stem[V]] = {}
        self._stems_size = max(cache_size, self.DEFAULT_STEMS)
        self._merged_entries = 0

    # -- reading ----------------------------------------------------------

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
        # The first node created on the way down: (its depth, its parent, its level).
        created: tuple[int, _Node[V], str] | None = None
        for depth, level in enumerate(levels, 1):
            if level == WILDCARD_ONE:
                child = node.star
                if child is None:
                    child = node.star = _Node()
                    created = created or (depth, node, level)
            elif level[-1] == WILDCARD_ONE:
                prefix = level[:-1]
                child = node.prefixes.get(prefix)
                if child is None:
                    if node.prefixes is _NOTHING:
                        node.prefixes = {}
                    child = node.prefixes[prefix] = _Node()
                    created = created or (depth, node, level)
            else:
                child = node.literals.get(level)
                if child is None:
                    if node.literals is _NOTHING:
                        node.literals = {}
                    child = node.literals[level] = _Node()
                    created = created or (depth, node, level)
            node = child
        bucket = node.rest if rest else node.values
        if value in bucket:
            # Nodes created on the way down are impossible here: the entry
            # exists, so its whole path did already.
            return False
        if bucket is _NOTHING:
            bucket = {}
            if rest:
                node.rest = bucket
            else:
                node.values = bucket
        bucket[value] = None
        self._reshaped(created, node, rest, len(levels))
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
        end = node
        # The topmost node pruned: (its depth, its parent, its level).
        pruned: tuple[int, _Node[V], str] | None = None
        for depth in range(len(path), 0, -1):
            if not node.is_empty():
                break
            parent, level = path[depth - 1]
            if level == WILDCARD_ONE:
                parent.star = None
            elif level[-1] == WILDCARD_ONE:
                del parent.prefixes[level[:-1]]
            else:
                del parent.literals[level]
            if depth == STEM_LEVELS and node.stems:
                self._retire(node)
            pruned = (depth, parent, level)
            node = parent
        self._reshaped(pruned, end, rest, len(levels))
        self._evict(pattern, levels, rest)
        return True

    # -- internals --------------------------------------------------------

    def _reshaped(
        self, moved: tuple[int, _Node[V], str] | None, end: _Node[V], rest: bool, depth: int
    ) -> None:
        """Bring the stem memo up to date after an entry was added or removed at `end`
        (at `depth`, in its `rest` or `values`); `moved`: the topmost node created or
        pruned on the way (depth, parent, level), if any."""
        if moved is not None:
            moved_depth, parent, level = moved
            if moved_depth <= STEM_LEVELS:
                # The node sets the stems reach change (the sets interned stay right:
                # a set with a pruned node was retired).
                self._stems.clear()
            elif moved_depth == STEM_LEVELS + 1 and parent.stems:
                for stem in parent.stems:
                    self._merged_entries += stem.child_moved(level)
        if rest:
            end.rest_tuple = None
            if depth < STEM_LEVELS:
                self._stems.clear()  # they hold these values (not their node sets)
            elif depth == STEM_LEVELS and end.stems:
                for stem in end.stems:
                    stem.refresh_rest()
        else:
            end.values_tuple = None
        if self._merged_entries > self._merged_budget():
            self._drop_stems()

    def _merged_budget(self) -> int:
        return max(self.MIN_MERGED_ENTRIES, 2 * self._count)

    def _merge(self, stem: _Stem[V]) -> None:
        """Merge `stem`'s literals if the budget allows; else try again after as many
        walks again."""
        if stem.merge(self._merged_budget() - self._merged_entries):
            self._merged_entries += stem.merged_entries()
        else:
            stem.merge_after = 2 * stem.walks

    def _retire(self, pruned: _Node[V]) -> None:
        """Forget the interned node sets that hold `pruned`, a node just pruned at depth
        STEM_LEVELS."""
        for stem in pruned.stems or ():
            del self._stem_sets[stem.key()]
            self._merged_entries -= stem.merged_entries()
            for node in stem.nodes:
                if node is not pruned and node.stems is not None:
                    node.stems.remove(stem)
        pruned.stems = None

    def _drop_stems(self) -> None:
        for stem in self._stem_sets.values():
            for node in stem.nodes:
                node.stems = None
        self._stem_sets.clear()
        self._stems.clear()
        self._merged_entries = 0

    def _stem(self, stem: str, levels: list[str]) -> tuple[list[tuple[V, ...]], _Stem[V] | None]:
        """The memo's entry for `stem` (a topic's first STEM_LEVELS `levels`), made."""
        nodes, found = _advance([self._root], [], levels[:STEM_LEVELS])
        state: _Stem[V] | None = None
        if nodes:
            key = _Stem.key_of(nodes)
            state = self._stem_sets.get(key)
            if state is None:
                if len(self._stem_sets) >= self._stems_size:
                    self._drop_stems()
                state = self._stem_sets[key] = _Stem(nodes, self.MERGE_COST_SHARE)
                for node in nodes:
                    if node.stems is None:
                        node.stems = []
                    node.stems.append(state)
        memo = self._stems
        if len(memo) >= self._stems_size:
            memo.clear()
        entry = memo[stem] = (found, state)
        return entry

    def _evict(self, pattern: str, levels: list[str], rest: bool) -> None:
        self._generation += 1
        self._cache.evict(pattern, levels, rest)

    def _walk(self, topic: str) -> tuple[V, ...]:
        """Match `topic` against the trie, level by level, breadth first.

        Topics share their first levels far more than their whole (`orders/us`
        starts every order from one region), and those levels are where the
        walk fans out most (the root's prefix wildcards, then one branch per
        wildcard), so the walk's state after the first two levels is memoised
        by them, with what the next level reaches from it in one map.
        """
        levels = topic.split(SEPARATOR)
        last = len(levels) - 1
        nodes: Sequence[_Node[V]] = ()
        if last < STEM_LEVELS:
            nodes, found = _advance([self._root], [], levels)
        else:
            key = levels[0] + SEPARATOR + levels[1]
            found, stem = self._stems.get(key) or self._stem(key, levels)
            if stem is not None:
                if stem.merged is None:
                    nodes, found, depth = stem.nodes, found.copy(), STEM_LEVELS
                    stem.walks += 1
                    if stem.walks >= stem.merge_after:
                        self._merge(stem)
                else:
                    found = found + stem.rest
                    level = levels[STEM_LEVELS]
                    children = stem.merged.get(level)
                    nodes = stem.stars if children is None else children + stem.stars
                    if stem.prefixes:
                        nodes = stem.with_prefixes(nodes, level)
                    depth = STEM_LEVELS + 1
                if depth < last:
                    nodes, found = _advance(nodes, found, levels[depth:last])
                if depth <= last:
                    _finish(nodes, found, levels[last])
                    nodes = ()
        for node in nodes:
            if node.values:
                found.append(node.values_tuple or node.fresh_values())
        if len(found) <= 1:
            # One pattern's values, as they are: nothing to build.
            return found[0] if found else ()
        if len(found) == 2 and not self._shared:
            return found[0] + found[1]
        values = chain.from_iterable(found)
        # A value held under one pattern only can match once: no need to dedup.
        return tuple(dict.fromkeys(values) if self._shared else values)


class _Stem(Generic[V]):
    """The nodes a walk reaches after a topic's first STEM_LEVELS levels, with their
    literal children merged by level once it has been walked through often enough,
    so that the next level costs one probe however many nodes there are (a state of a
    lazily built DFA). The trie updates it when a child of one of its nodes is added
    or removed, or their `/>` values change."""

    __slots__ = ("merge_after", "merged", "nodes", "prefixes", "rest", "stars", "walks")

    def __init__(self, nodes: list[_Node[V]], cost_share: int) -> None:
        """`cost_share`: walks through it per literal child to merge (see
        `SubscriptionTrie.MERGE_COST_SHARE`)."""
        self.nodes = nodes
        self.rest: list[tuple[V, ...]] = []
        self.refresh_rest()
        self.stars: tuple[_Node[V], ...] = ()
        self.prefixes: dict[str, tuple[_Node[V], ...]] = {}
        self._refresh_wildcards()
        # level -> the children of `nodes` with that literal; None until merged.
        self.merged: dict[str, tuple[_Node[V], ...]] | None = None
        self.walks = 0
        with_literals = [node.literals for node in nodes if node.literals]
        # Fewer than two with literals: one probe either way, never merged.
        self.merge_after = (
            sum(map(len, with_literals)) // cost_share if len(with_literals) > 1 else sys.maxsize
        )

    def merge(self, budget: int) -> bool:
        """Merge the literals of `nodes` if they are at most `budget` entries."""
        with_literals = [node.literals for node in self.nodes if node.literals]
        if sum(map(len, with_literals)) > budget:
            return False
        merged: dict[str, tuple[_Node[V], ...]] = {}
        for literals in with_literals:
            for level, child in literals.items():
                held = merged.get(level)
                merged[level] = (child,) if held is None else (*held, child)
        self.merged = merged
        return True

    def merged_entries(self) -> int:
        return 0 if self.merged is None else len(self.merged)

    def key(self) -> tuple[int, ...]:
        return self.key_of(self.nodes)

    @staticmethod
    def key_of(nodes: Sequence[_Node[Any]]) -> tuple[int, ...]:
        """What the trie interns a node set by: the nodes' ids (a `_Stem` holds them, so
        no id is reused while it is interned)."""
        return tuple(map(id, nodes))

    def with_prefixes(self, following: Sequence[_Node[V]], level: str) -> list[_Node[V]]:
        """`following` and the children of `nodes` whose prefixes `level` starts with."""
        reached = list(following)
        for held in _prefixed(self.prefixes, level):
            reached.extend(held)
        return reached

    def refresh_rest(self) -> None:
        self.rest = [node.rest_tuple or node.fresh_rest() for node in self.nodes if node.rest]

    def child_moved(self, level: str) -> int:
        """Follow a child added to or removed from one of `nodes` at `level` (a pattern's
        level); the change in the number of merged entries."""
        if level[-1] == WILDCARD_ONE:
            self._refresh_wildcards()
            return 0
        merged = self.merged
        if merged is None:
            return 0
        held = level in merged
        found = [node.literals.get(level) for node in self.nodes]
        children = tuple(child for child in found if child is not None)
        if children:
            merged[level] = children
        else:
            merged.pop(level, None)
        return bool(children) - held

    def _refresh_wildcards(self) -> None:
        self.stars = tuple(node.star for node in self.nodes if node.star is not None)
        prefixes: dict[str, tuple[_Node[V], ...]] = {}
        for node in self.nodes:
            for prefix, child in node.prefixes.items():
                prefixes[prefix] = (*prefixes.get(prefix, ()), child)
        self.prefixes = prefixes


def _prefixed(prefixes: dict[str, T], level: str) -> list[T]:
    """What `prefixes` holds under the prefixes `level` starts with."""
    # Probe whichever is smaller: the prefixes held, or the prefixes of this level.
    if len(prefixes) <= len(level):
        return [held for prefix, held in prefixes.items() if level.startswith(prefix)]
    found = (prefixes.get(level[:end]) for end in range(1, len(level) + 1))
    return [held for held in found if held is not None]


def _advance(
    nodes: Sequence[_Node[V]], found: list[tuple[V, ...]], levels: list[str]
) -> tuple[Sequence[_Node[V]], list[tuple[V, ...]]]:
    """The nodes reached from `nodes` by `levels`, and `found` plus the values (a tuple
    each) of `/>` patterns passed on the way (each has at least one level after it)."""
    for level in levels:
        following: list[_Node[V]] = []
        for node in nodes:
            if node.rest:
                found.append(node.rest_tuple or node.fresh_rest())
            child = node.literals.get(level)
            if child is not None:
                following.append(child)
            if node.star is not None:
                following.append(node.star)
            if node.prefixes:
                following.extend(_prefixed(node.prefixes, level))
        if not following:
            return following, found
        nodes = following
    return nodes, found


def _finish(nodes: Sequence[_Node[V]], found: list[tuple[V, ...]], level: str) -> None:
    """Add to `found` the values of the patterns that `level`, a topic's last, ends
    from `nodes`, and of the `/>` patterns passed."""
    for node in nodes:
        if node.rest:
            found.append(node.rest_tuple or node.fresh_rest())
        child = node.literals.get(level)
        if child is not None and child.values:
            found.append(child.values_tuple or child.fresh_values())
        child = node.star
        if child is not None and child.values:
            found.append(child.values_tuple or child.fresh_values())
        if node.prefixes:
            for child in _prefixed(node.prefixes, level):
                if child.values:
                    found.append(child.values_tuple or child.fresh_values())


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
