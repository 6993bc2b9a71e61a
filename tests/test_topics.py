"""The topic grammar and the subscription trie, against a naive reference matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from plexus.errors import InvalidPattern, InvalidTopic
from plexus.topics import (
    _NOTHING,
    MAX_TOPIC_BYTES,
    STEM_LEVELS,
    SubscriptionTrie,
    _advance,
    _Node,
    _TopicTree,
    pattern_matches,
    validate_pattern,
    validate_topic,
)

# --------------------------------------------------------------------------
# Reference matcher: the grammar read literally, level by level.
# --------------------------------------------------------------------------


def reference_matches(pattern: str, topic: str) -> bool:
    want, have = pattern.split("/"), topic.split("/")
    for i, w in enumerate(want):
        if w == ">":
            return i == len(want) - 1 and len(have) > i
        if i >= len(have):
            return False
        if w == "*":
            continue
        if w.endswith("*"):
            if not have[i].startswith(w[:-1]):
                return False
        elif w != have[i]:
            return False
    return len(want) == len(have)


# --------------------------------------------------------------------------
# Validation tables
# --------------------------------------------------------------------------

VALID_TOPICS = [
    "a",
    "orders/us/created",
    "orders/us/c-42/created",
    "émoji/🚀/ünïcode",
    "with space/and.dots/and-dashes_",
    "x" * MAX_TOPIC_BYTES,
    "é" * (MAX_TOPIC_BYTES // 2),  # 2 bytes each: exactly the limit
]

INVALID_TOPICS = [
    # (topic, 0-based level or None, words the reason must contain)
    ("", None, "empty topic"),
    ("/orders", 0, "empty level"),
    ("orders/", 1, "empty level"),
    ("orders//us", 1, "empty level"),
    ("/", 0, "empty level"),
    ("orders/*/created", 1, "wildcard '*' not allowed in a topic"),
    ("orders/us*", 1, "wildcard '*' not allowed in a topic"),
    ("orders/>", 1, "wildcard '>' not allowed in a topic"),
    ("a>b", 0, "wildcard '>' not allowed"),
    ("orders/u\x00s", 1, "control character U+0000"),
    ("orders/us/\n", 2, "control character U+000A"),
    ("orders\t/us", 0, "control character U+0009"),
    ("a/\x7f", 1, "control character U+007F"),
    ("a/b\x85", 1, "control character U+0085"),
    ("x" * 312, None, "250 bytes at most, got 312"),
    ("é" * 126, None, "250 bytes at most, got 252"),
    ("a/\udc80", None, "not valid UTF-8"),
]

VALID_PATTERNS = [
    "a",
    "orders/us/created",
    "*",
    ">",
    "orders/*",
    "orders/>",
    "*/*/>",
    "ord*",
    "ord*/us/>",
    "orders/c-4*/created",
    "émoji/🚀*",
    "x" * MAX_TOPIC_BYTES,
]

INVALID_PATTERNS = [
    ("", None, "empty pattern"),
    ("/orders", 0, "empty level"),
    ("orders/", 1, "empty level"),
    ("a//b", 1, "empty level"),
    ("orders/>/created", 1, "'>' is only allowed as the last level"),
    (">/a", 0, "'>' is only allowed as the last level"),
    ("orders/a>", 1, "'>' must be a whole level"),
    ("orders/>>", 1, "'>' must be a whole level"),
    ("orders/*us", 1, "'*' may only end a level"),
    ("orders/u*s", 1, "'*' may only end a level"),
    ("orders/**", 1, "'*' may only end a level"),
    ("a/b/c\x01", 2, "control character U+0001"),
    ("x" * 251, None, "250 bytes at most, got 251"),
]


@pytest.mark.parametrize("topic", VALID_TOPICS)
def test_valid_topic_passes(topic: str) -> None:
    validate_topic(topic)


@pytest.mark.parametrize(("topic", "level", "reason"), INVALID_TOPICS)
def test_invalid_topic_names_level_and_reason(topic: str, level: int | None, reason: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        validate_topic(topic)
    err = caught.value
    assert err.topic == topic
    assert err.level == level
    assert reason in err.reason
    assert reason in str(err)
    if level is not None:
        assert f"at level {level + 1}" in str(err)


@pytest.mark.parametrize("pattern", VALID_TOPICS + VALID_PATTERNS)
def test_valid_pattern_passes(pattern: str) -> None:
    validate_pattern(pattern)


@pytest.mark.parametrize(("pattern", "level", "reason"), INVALID_PATTERNS)
def test_invalid_pattern_names_level_and_reason(
    pattern: str, level: int | None, reason: str
) -> None:
    with pytest.raises(InvalidPattern) as caught:
        validate_pattern(pattern)
    err = caught.value
    assert err.pattern == pattern
    assert err.level == level
    assert reason in err.reason
    if level is not None:
        assert f"at level {level + 1}" in str(err)


def test_non_string_topic_is_rejected_with_its_type() -> None:
    with pytest.raises(InvalidTopic, match="must be a string, got bytes"):
        validate_topic(b"orders/us")  # type: ignore[arg-type]
    with pytest.raises(InvalidPattern, match="must be a string, got NoneType"):
        validate_pattern(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Matching examples
# --------------------------------------------------------------------------

MATCH_TABLE = [
    ("orders/us/created", "orders/us/created", True),
    ("orders/us/created", "orders/us", False),
    ("orders/*/created", "orders/eu/created", True),
    ("orders/*/created", "orders/eu/x/created", False),
    ("orders/*", "orders", False),
    ("orders/>", "orders", False),
    ("orders/>", "orders/us", True),
    ("orders/>", "orders/us/created/x", True),
    (">", "anything/at/all", True),
    ("ord*", "ord", True),
    ("ord*", "orders", True),
    ("ord*", "or", False),
    ("ord*/us", "orders/us", True),
    ("ord*/us", "orders/eu", False),
    ("*/us/>", "orders/us/1", True),
    ("*/us/>", "orders/us", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
def test_pattern_matches_table(pattern: str, topic: str, expected: bool) -> None:
    assert reference_matches(pattern, topic) is expected
    assert pattern_matches(pattern, topic) is expected
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add(pattern, "s")
    assert trie.match(topic) == (("s",) if expected else ())


def test_pattern_matches_rejects_an_invalid_pattern() -> None:
    with pytest.raises(InvalidPattern):
        pattern_matches("a/>/b", "a/x/b")


# --------------------------------------------------------------------------
# Trie behaviour
# --------------------------------------------------------------------------


def test_add_is_idempotent_and_len_counts_entries() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    assert trie.add("orders/>", 1)
    assert not trie.add("orders/>", 1)
    assert trie.add("orders/>", 2)
    assert trie.add("orders/*", 1)
    assert len(trie) == 3
    assert trie.patterns() == {"orders/>", "orders/*"}


def test_match_returns_each_value_once_across_patterns() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    for pattern in ("orders/us/created", "orders/*/created", "orders/>", "ord*/us/*", ">"):
        trie.add(pattern, "alice")
    trie.add("orders/eu/>", "bob")
    assert trie.match("orders/us/created") == ("alice",)
    assert sorted(trie.match("orders/eu/created")) == ["alice", "bob"]


def test_remove_absent_returns_false_and_prunes_nodes() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    assert not trie.remove("a/b", 1)
    trie.add("a/b/c*/>", 1)
    trie.add("a/*/x", 2)
    assert not trie.remove("a/b/c*/>", 2)
    assert not trie.remove("a/b/c*", 1)
    assert trie.remove("a/b/c*/>", 1)
    assert trie.remove("a/*/x", 2)
    assert len(trie) == 0
    assert trie.patterns() == set()
    assert trie._root.is_empty()  # every node pruned


def test_add_and_remove_reject_invalid_patterns() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    with pytest.raises(InvalidPattern, match="at level 2"):
        trie.add("a/>/b", 1)
    with pytest.raises(InvalidPattern):
        trie.remove("a//b", 1)
    assert len(trie) == 0


def test_cache_is_invalidated_by_add_and_remove() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    assert trie.match("a/b") == ()
    generation = trie.generation
    trie.add("a/*", 1)
    assert trie.generation > generation
    assert trie.match("a/b") == (1,)
    trie.remove("a/*", 1)
    assert trie.match("a/b") == ()


def test_a_topic_is_cached_from_its_second_miss_so_one_off_topics_cost_no_cache_churn() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("orders/*/>", 1)
    assert trie.match("orders/us/o-1") == (1,)
    assert "orders/us/o-1" not in trie._cache
    assert trie.match("orders/us/o-1") == (1,)
    assert trie._cache["orders/us/o-1"] == (1,)


def test_cache_stays_bounded() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie(cache_size=8)
    trie.add(">", 1)
    for i in range(100):
        assert trie.match(f"t/{i}") == (1,)
        assert trie.match(f"t/{i}") == (1,)
        assert len(trie._cache) <= 8 and len(trie._cache._missed_once) <= 8
    uncached: SubscriptionTrie[int] = SubscriptionTrie(cache_size=0)
    uncached.add(">", 1)
    assert uncached.match("t") == (1,)
    assert not uncached._cache


def test_many_prefixes_at_one_level_use_either_probe() -> None:
    # More prefixes than the level is long, and fewer: both lookup strategies.
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    for prefix in ("o", "or", "ord", "orde", "order", "orders", "x", "xy", "p"):
        trie.add(f"{prefix}*/z", prefix)
    assert set(trie.match("ord/z")) == {"o", "or", "ord"}
    assert set(trie.match("orders/z")) == {"o", "or", "ord", "orde", "order", "orders"}
    assert set(trie.match("ordersandmore/z")) == {"o", "or", "ord", "orde", "order", "orders"}


# --------------------------------------------------------------------------
# Properties against the reference
# --------------------------------------------------------------------------

# A small alphabet of levels that share prefixes, so that matches are common.
LEVELS = ["a", "ab", "abc", "b", "ba", "é"]
topic_levels = st.sampled_from(LEVELS)
pattern_levels = st.one_of(
    st.sampled_from(LEVELS),
    st.just("*"),
    st.sampled_from(["a*", "ab*", "b*", "é*"]),
)

topics = st.lists(topic_levels, min_size=1, max_size=4).map("/".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    levels = draw(st.lists(pattern_levels, min_size=0, max_size=4))
    if not levels or draw(st.booleans()):
        levels.append(">")
    return "/".join(levels)


@settings(deadline=None, max_examples=300)
@given(patterns(), topics)
def test_pattern_matches_agrees_with_reference(pattern: str, topic: str) -> None:
    validate_pattern(pattern)
    validate_topic(topic)
    assert pattern_matches(pattern, topic) == reference_matches(pattern, topic)


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(patterns(), st.integers(0, 3)), max_size=25), st.lists(topics))
def test_trie_match_agrees_with_reference(
    entries: list[tuple[str, int]], probes: list[str]
) -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for pattern, value in entries:
        trie.add(pattern, value)
    for topic in probes:
        expected = {v for p, v in entries if reference_matches(p, topic)}
        got = trie.match(topic)
        assert len(got) == len(set(got))
        assert set(got) == expected


class TrieMachine(RuleBasedStateMachine):
    """Random adds, removes and matches, with a tiny cache so eviction happens too."""

    added = Bundle("added")

    def __init__(self) -> None:
        super().__init__()
        self.trie: SubscriptionTrie[int] = SubscriptionTrie(cache_size=4)
        self.model: set[tuple[str, int]] = set()

    @rule(target=added, pattern=patterns(), value=st.integers(0, 3))
    def add(self, pattern: str, value: int) -> tuple[str, int]:
        assert self.trie.add(pattern, value) == ((pattern, value) not in self.model)
        self.model.add((pattern, value))
        return (pattern, value)

    @rule(target=added, entry=added, value=st.integers(0, 3))
    def add_beside(self, entry: tuple[str, int], value: int) -> tuple[str, int]:
        # Another value for a pattern held: its node's values change, not its shape.
        return self.add(entry[0], value)

    @rule(entry=added)
    def remove_added(self, entry: tuple[str, int]) -> None:
        assert self.trie.remove(*entry) == (entry in self.model)
        self.model.discard(entry)

    @rule(pattern=patterns(), value=st.integers(0, 3))
    def remove_any(self, pattern: str, value: int) -> None:
        assert self.trie.remove(pattern, value) == ((pattern, value) in self.model)
        self.model.discard((pattern, value))

    @rule(topic=topics)
    def match(self, topic: str) -> None:
        # Twice: the second answer comes from the cache and must agree.
        expected = {v for p, v in self.model if reference_matches(p, topic)}
        for _ in range(2):
            got = self.trie.match(topic)
            assert len(got) == len(set(got))
            assert set(got) == expected

    @invariant()
    def counts_agree(self) -> None:
        assert len(self.trie) == len(self.model)
        assert self.trie.patterns() == {p for p, _ in self.model}
        if not self.model:
            assert self.trie._root.is_empty()

    @invariant()
    def every_cached_answer_is_current(self) -> None:
        # What survived adds and removes in the cache is still the right answer.
        cache = self.trie._cache
        for topic, got in cache.items():
            assert set(got) == {v for p, v in self.model if reference_matches(p, topic)}
        # The tree of cached topics and those waiting for it are the cache's keys
        # (unless an overflow dropped the tree, to be rebuilt at the next change).
        tree = cache._tree
        if tree is not None:
            held = tree.matching([], rest=True) + cache._uncounted
            assert sorted(held) == sorted(cache)


TestTrieMachine = TrieMachine.TestCase
TestTrieMachine.settings = settings(deadline=None, max_examples=100, stateful_step_count=40)


class RoomyCacheTrieMachine(TrieMachine):
    """The same with a cache that holds every topic: entries live through many changes."""

    def __init__(self) -> None:
        super().__init__()
        self.trie = SubscriptionTrie(cache_size=10_000)


TestRoomyCacheTrieMachine = RoomyCacheTrieMachine.TestCase
TestRoomyCacheTrieMachine.settings = settings(
    deadline=None, max_examples=100, stateful_step_count=60
)


class TinyMemoTrie(SubscriptionTrie[int]):
    """Bounds small enough for the stem memo to fill, drop and run out of budget."""

    DEFAULT_STEMS = 3
    MIN_MERGED_ENTRIES = 4
    MERGE_COST_SHARE = 1_000  # merged at the first walk through


def _trie_nodes(node: _Node[int]) -> list[_Node[int]]:
    found = [node]
    children = [*node.literals.values(), *node.prefixes.values()]
    if node.star is not None:
        children.append(node.star)
    for child in children:
        found.extend(_trie_nodes(child))
    return found


def assert_stem_memo_is_current(trie: SubscriptionTrie[int]) -> None:
    """Every memoised stem and node set is what a fresh walk of the index would make,
    and the memo is within its bounds."""
    assert not _NOTHING  # the shared empty dict of every node was never written to
    for stem, (found, state) in trie._stems.items():
        nodes, fresh = _advance([trie._root], [], stem.split("/"))
        assert found == fresh
        assert (state is None) == (not nodes)
        if state is not None:
            assert [id(n) for n in state.nodes] == [id(n) for n in nodes]
    interned = trie._stem_sets
    for key, state in interned.items():
        assert key == state.key()
        assert state.rest == [tuple(n.rest) for n in state.nodes if n.rest]
        assert {id(n) for n in state.stars} == {
            id(n.star) for n in state.nodes if n.star is not None
        }
        prefixes = {p: {id(c) for c in held} for p, held in state.prefixes.items()}
        want: dict[str, set[int]] = {}
        for node in state.nodes:
            for prefix, child in node.prefixes.items():
                want.setdefault(prefix, set()).add(id(child))
        assert prefixes == want
        if state.merged is not None:
            merged = {level: {id(c) for c in held} for level, held in state.merged.items()}
            want = {}
            for node in state.nodes:
                for level, child in node.literals.items():
                    want.setdefault(level, set()).add(id(child))
            assert merged == want
    assert trie._merged_entries == sum(s.merged_entries() for s in interned.values())
    assert trie._merged_entries <= max(trie.MIN_MERGED_ENTRIES, 2 * len(trie))
    assert len(trie._stems) <= trie._stems_size
    assert len(interned) <= trie._stems_size
    # Each node lists exactly the interned node sets it is in.
    for node in _trie_nodes(trie._root):
        held = [id(s) for s in node.stems or ()]
        assert sorted(held) == sorted(id(s) for s in interned.values() if node in s.nodes)


# Fewer levels, and patterns and topics deeper than the stems: node sets of several
# nodes, and changes below them, are common.
deep_levels = st.sampled_from(LEVELS[:3])
deep_topics = st.lists(deep_levels, min_size=STEM_LEVELS + 1, max_size=4).map("/".join)


@st.composite
def deep_patterns(draw: st.DrawFn) -> str:
    level = st.one_of(deep_levels, st.just("*"), st.just("a*"))
    levels = draw(st.lists(level, min_size=STEM_LEVELS, max_size=4))
    if draw(st.booleans()):
        levels.append(">")
    return "/".join(levels)


class StemMemoMachine(TrieMachine):
    """Random adds, removes and matches with a stem memo that overflows and runs out of
    merged entries, checked against the reference and against a fresh walk."""

    def __init__(self) -> None:
        super().__init__()
        self.trie = TinyMemoTrie(cache_size=0)

    @rule(target=TrieMachine.added, pattern=deep_patterns(), value=st.integers(0, 3))
    def add_deep(self, pattern: str, value: int) -> tuple[str, int]:
        return self.add(pattern, value)

    @rule(topic=deep_topics)
    def match_deep(self, topic: str) -> None:
        self.match(topic)

    @invariant()
    def memo_is_current(self) -> None:
        assert_stem_memo_is_current(self.trie)


TestStemMemoMachine = StemMemoMachine.TestCase
TestStemMemoMachine.settings = settings(deadline=None, max_examples=150, stateful_step_count=60)


class RoomyStemMemoMachine(StemMemoMachine):
    """The same with room for every stem: node sets live through many changes."""

    def __init__(self) -> None:
        super().__init__()
        self.trie = SubscriptionTrie(cache_size=0)


TestRoomyStemMemoMachine = RoomyStemMemoMachine.TestCase
TestRoomyStemMemoMachine.settings = settings(
    deadline=None, max_examples=150, stateful_step_count=60
)


def test_a_node_set_is_merged_once_walks_have_paid_for_it() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie(cache_size=0)
    for i in range(40):  # two nodes after `orders/us`, 80 literal children
        trie.add(f"orders/us/c{i}/>", i)
        trie.add(f"orders/*/c{i}/created", 100 + i)
    walks = 80 // trie.MERGE_COST_SHARE
    for i in range(walks - 1):
        assert set(trie.match(f"orders/us/c{i}/created")) == {i, 100 + i}
    (stem,) = trie._stem_sets.values()
    assert stem.merged is None
    assert set(trie.match("orders/us/c1/paid")) == {1}
    assert stem.merged is not None and len(stem.merged) == 40
    assert set(trie.match("orders/us/c2/created")) == {2, 102}
    # A one-off stem's own node set is walked too rarely to be merged.
    trie.add("orders/eu/c1/>", 1_000)
    assert set(trie.match("orders/eu/c1/created")) == {1_000, 101}
    assert all(s.merged is None for s in trie._stem_sets.values() if s is not stem)


def test_stem_memo_stays_bounded_under_one_off_topics_and_patterns() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie(cache_size=0)
    trie.add("inbox/*/>", 0)
    trie.add("orders/*/created", 1)
    trie.add("orders/us/>", 2)
    for i in range(3 * trie.DEFAULT_STEMS):
        # A one-off id in the stem: one stem each, all of them one node set.
        assert trie.match(f"orders/{i}/created") == (1,)
        assert set(trie.match(f"inbox/c{i}/m/{i}")) == {0}
        # A subscriber of its own, subscribed and gone again.
        trie.add(f"inbox/c{i}/>", 10 + i)
        assert set(trie.match(f"inbox/c{i}/m/{i}")) == {0, 10 + i}
        trie.remove(f"inbox/c{i}/>", 10 + i)
        assert len(trie._stems) <= trie._stems_size
        assert len(trie._stem_sets) <= 4
    assert_stem_memo_is_current(trie)


@settings(deadline=None, max_examples=300)
@given(st.lists(topics, max_size=30), patterns())
def test_cached_topic_tree_lists_exactly_the_topics_a_pattern_matches(
    held: list[str], pattern: str
) -> None:
    tree = _TopicTree()
    for topic in held:
        tree.add(topic)
    for topic in held[::3]:
        tree.discard(topic)
    left = set(held) - set(held[::3])
    levels = pattern.split("/")
    rest = levels[-1] == ">"
    if rest:
        levels.pop()
    got = tree.matching(levels, rest)
    assert len(got) == len(set(got))
    assert set(got) == {t for t in left if reference_matches(pattern, t)}


def test_a_change_evicts_only_the_cached_topics_its_pattern_matches() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add("orders/>", "audit")
    topics = ["orders/us/c1/created", "orders/eu/c1/created", "orders/us/c2/paid", "t/x"]
    for topic in topics * 2:  # cached from the second miss
        trie.match(topic)
    for pattern in ("orders/us/*/created", "ord*/*/c1/>", "orders/us/c2/paid", "*/x"):
        generation = trie.generation
        trie.add(pattern, "new")
        assert trie.generation > generation
        kept = {t for t in topics if not reference_matches(pattern, t)}
        assert set(trie._cache) == kept
        for topic in topics:
            assert ("new" in trie.match(topic)) is reference_matches(pattern, topic)
        trie.remove(pattern, "new")
        assert set(trie._cache) == kept
        for topic in topics:
            assert "new" not in trie.match(topic)
