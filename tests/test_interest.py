"""Pattern covering and interest propagation, against brute force and naive models."""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.covering import PatternSet, covers, generality_key
from federation.interest import (
    DeltaResult,
    InterestDelta,
    LocalInterest,
    RemoteInterest,
    interest_digest,
)
from plexus.errors import InvalidPattern
from plexus.topics import pattern_matches

# --------------------------------------------------------------------------
# A small exact world for brute force.
#
# Patterns: levels from PATTERN_LEVELS, at most 3 levels, `>` only last.
# Topics: every topic of at most 4 levels over TOPIC_LEVELS. This universe is
# exact for those patterns, i.e. "every universe topic s matches, g matches"
# holds exactly when covers(g, s) should:
# - per level, the universe separates every pair of pattern levels that do not
#   cover each other: `x` is outside `a*`, `ab`/`abc` are outside `a`, `b` is
#   outside `a*`, and `a*` and `*` match several levels, never just one;
# - per length, a witness needs at most one level beyond the 3 of the longest
#   specific pattern (`a/b/>` vs `a/b/*` needs `a/b/x/x`): 4 levels suffice;
# - every level set is non-empty in the universe, so a witness at one level
#   extends to a whole topic.
# --------------------------------------------------------------------------

PATTERN_LEVELS = ["a", "ab", "b", "*", "a*", ">"]
TOPIC_LEVELS = ["a", "ab", "abc", "b", "x"]


def _all_patterns(levels: list[str], depth: int) -> list[str]:
    found = []
    for n in range(1, depth + 1):
        for parts in itertools.product(levels, repeat=n):
            if ">" not in parts[:-1]:
                found.append("/".join(parts))
    return found


SMALL_PATTERNS = _all_patterns(PATTERN_LEVELS, 3)
UNIVERSE = [
    "/".join(parts) for n in range(1, 5) for parts in itertools.product(TOPIC_LEVELS, repeat=n)
]


def naive_matches(pattern: str, topic: str) -> bool:
    """The grammar read literally (no validation: patterns here are valid)."""
    want, have = pattern.split("/"), topic.split("/")
    for i, w in enumerate(want):
        if w == ">":
            return len(have) > i
        if i >= len(have):
            return False
        if w.endswith("*"):
            if not have[i].startswith(w[:-1]):
                return False
        elif w != have[i]:
            return False
    return len(want) == len(have)


@cache
def matched(pattern: str) -> frozenset[str]:
    return frozenset(t for t in UNIVERSE if naive_matches(pattern, t))


def brute_covers(general: str, specific: str) -> bool:
    return matched(specific) <= matched(general)


# --------------------------------------------------------------------------
# covers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        ("orders/>", "orders/us/*", True),
        ("orders/*", "orders/>", False),  # '>' can match 2+ levels
        ("ord*/x", "orders/x", True),
        ("o*/x", "ord*/x", True),
        ("ord*/x", "o*/x", False),
        ("a/>", "a/b/>", True),
        ("a/*/>", "a/>", False),
        ("*", "a", True),
        ("a", "*", False),
        ("a", "a", True),
        ("a", "b", False),
        ("a", "a/b", False),
        ("a/b", "a", False),
        (">", "a", True),
        (">", "a/b/c", True),
        (">", "*/>", True),
        (">", ">", True),
        ("*/>", ">", False),  # '>' matches the one-level `a`
        ("a/>", ">", False),
        ("*", "ord*", True),
        ("ord*", "*", False),
        ("ord*", "ord", True),  # `ord*` matches `ord` itself
        ("ord*", "ord*", True),
        ("orders*", "ord*", False),
        ("ord*", "or", False),
        ("ord*", "order", True),
        ("a/*", "a/>", False),
        ("a/*/*", "a/>", False),
        ("a/>", "a", False),  # '>' needs at least one level
        ("a/>", "a/*", True),
        ("a/>", "a/b*/c/>", True),
        ("*/*", "a/b", True),
        ("*/b", "a/*", False),
        ("a*/b*", "ab/bc", True),
        ("a*/b*", "ab*/b*", True),
        ("a*/b*", "ab*/*", False),
        ("*/>", "a/b*", True),
        ("*/*/>", "a/b", False),
    ],
)
def test_covers_table(general: str, specific: str, expected: bool) -> None:
    assert covers(general, specific) is expected


def test_covers_rejects_invalid_patterns() -> None:
    with pytest.raises(InvalidPattern):
        covers("a/>/b", "a")
    with pytest.raises(InvalidPattern):
        covers("a", "a*b")


def test_covers_equals_brute_force_for_every_small_pair() -> None:
    # 186 patterns: every pair, exact both ways (sound and complete).
    wrong = [
        (g, s) for g in SMALL_PATTERNS for s in SMALL_PATTERNS if covers(g, s) != brute_covers(g, s)
    ]
    assert not wrong, wrong[:10]


small_pattern = st.sampled_from(SMALL_PATTERNS)


@given(small_pattern, small_pattern)
def test_covers_equals_brute_force(general: str, specific: str) -> None:
    assert covers(general, specific) == brute_covers(general, specific)


# A wider alphabet, where no finite universe is cheap: check soundness by
# instantiating the specific pattern into topics it matches.
WIDE_LEVELS = ["a", "ab", "abc", "b", "ba", "*", "a*", "ab*", "b*", "abc*"]
SUFFIXES = ["", "a", "b", "c", "bc", "x"]


@st.composite
def wide_patterns(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(WIDE_LEVELS), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append(">")
    return "/".join(levels)


@st.composite
def topic_of(draw: st.DrawFn, pattern: str) -> str:
    """A topic `pattern` matches, each wildcard filled in at random."""
    levels = []
    for level in pattern.split("/"):
        if level == ">":
            more = draw(st.integers(1, 3))
            levels.extend(draw(st.sampled_from(["a", "ab", "b", "x"])) for _ in range(more))
        elif level.endswith("*"):
            levels.append(level[:-1] + draw(st.sampled_from(SUFFIXES)) or "x")
        else:
            levels.append(level)
    return "/".join(levels)


@given(wide_patterns(), wide_patterns(), st.data())
def test_covers_is_sound_on_a_wide_alphabet(general: str, specific: str, data: st.DataObject):
    if covers(general, specific):
        for _ in range(5):
            topic = data.draw(topic_of(specific))
            assert pattern_matches(specific, topic)
            assert pattern_matches(general, topic), (general, specific, topic)


@given(wide_patterns(), wide_patterns())
def test_mutual_covering_means_equal_strings(a: str, b: str) -> None:
    assert (covers(a, b) and covers(b, a)) == (a == b)


@given(wide_patterns(), wide_patterns(), wide_patterns())
def test_covers_is_transitive(a: str, b: str, c: str) -> None:
    if covers(a, b) and covers(b, c):
        assert covers(a, c)


def test_generality_key_sorts_coverers_first() -> None:
    for g in SMALL_PATTERNS:
        for s in SMALL_PATTERNS:
            if g != s and covers(g, s):
                assert generality_key(g) < generality_key(s), (g, s)


@settings(max_examples=60, deadline=None)
@given(
    st.sets(wide_patterns(), max_size=20), wide_patterns(), st.lists(wide_patterns(), max_size=5)
)
def test_pattern_set_queries_agree_with_covers(held: set[str], probe: str, more: list[str]) -> None:
    index = PatternSet(held)
    assert sorted(index.covering(probe)) == sorted(p for p in held if covers(p, probe))
    assert sorted(index.covered_by(probe)) == sorted(p for p in held if covers(probe, p))
    for pattern in list(held)[::2]:
        assert index.discard(pattern)
        held.discard(pattern)
    assert not index.discard("never/held")
    assert set(index) == held
    assert sorted(index.covering(probe)) == sorted(p for p in held if covers(p, probe))
    assert sorted(index.covered_by(probe)) == sorted(p for p in held if covers(probe, p))
    # Add after queries sorted some child keys: they must stay in step.
    for pattern in [*list(held)[::3], probe]:
        index.discard(pattern)
        held.discard(pattern)
    for pattern in [*more, probe]:
        index.add(pattern)
        held.add(pattern)
    assert set(index) == held
    for pattern in [probe, *more]:
        assert sorted(index.covered_by(pattern)) == sorted(p for p in held if covers(pattern, p))


# --------------------------------------------------------------------------
# LocalInterest
# --------------------------------------------------------------------------


def test_covered_subscription_adds_nothing() -> None:
    local = LocalInterest("us")
    delta = local.add("orders/>")
    assert delta == InterestDelta("us", 1, ("orders/>",), ())
    assert local.add("orders/us/*") is None
    assert local.advertised == {"orders/>"}
    assert local.version == 1


def test_general_subscription_replaces_the_ones_it_covers() -> None:
    local = LocalInterest("us")
    local.add("orders/us/*")
    local.add("orders/eu/created")
    local.add("billing/x")
    delta = local.add("orders/>")
    assert delta == InterestDelta("us", 4, ("orders/>",), ("orders/eu/created", "orders/us/*"))
    assert local.advertised == {"orders/>", "billing/x"}


def test_removing_the_general_pattern_readvertises_what_it_hid() -> None:
    local = LocalInterest("us")
    for pattern in ["orders/>", "orders/us/*", "orders/us/created", "orders/eu/x", "o*/y"]:
        local.add(pattern)
    assert local.advertised == {"orders/>", "o*/y"}
    delta = local.remove("orders/>")
    # `orders/us/created` stays hidden by `orders/us/*`; `orders/eu/x` comes back.
    assert delta == InterestDelta("us", 3, ("orders/eu/x", "orders/us/*"), ("orders/>",))
    assert local.advertised == {"orders/us/*", "orders/eu/x", "o*/y"}


def test_duplicates_are_one_pattern_with_a_refcount() -> None:
    local = LocalInterest("us")
    assert local.add("a/b") is not None
    assert local.add("a/b") is None
    assert local.refcount("a/b") == 2
    assert local.remove("a/b") is None
    assert local.advertised == {"a/b"}
    delta = local.remove("a/b")
    assert delta == InterestDelta("us", 2, (), ("a/b",))
    assert local.refcount("a/b") == 0
    assert "a/b" not in local
    assert local.snapshot() == (2, frozenset())


def test_removing_a_pattern_not_held_is_a_noop() -> None:
    local = LocalInterest("us")
    assert local.remove("a/b") is None
    assert local.version == 0


def test_invalid_pattern_changes_nothing() -> None:
    local = LocalInterest("us")
    with pytest.raises(InvalidPattern):
        local.update(added=["a/b", "a/>/c"])
    assert local.snapshot() == (0, frozenset())
    assert len(local) == 0
    with pytest.raises(TypeError):
        local.update(added="a/b")


def test_update_batches_many_changes_into_one_delta() -> None:
    local = LocalInterest("us")
    delta = local.update(added=[f"orders/{i}/*" for i in range(100)] + ["x"], removed=["x"])
    assert delta is not None and delta.version == 1
    assert len(delta.added) == 100 and delta.removed == ()
    # Net zero: added and removed within one update.
    assert local.update(added=["y"], removed=["y"]) is None
    assert local.version == 1


def test_version_can_start_above_zero() -> None:
    local = LocalInterest("us", version=1_000)
    assert local.add("a").version == 1_001  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        LocalInterest("us", version=-1)


def test_ten_thousand_patterns_hidden_and_restored_by_one() -> None:
    local = LocalInterest("us")
    delta = local.update(added=[f"orders/{i}/*" for i in range(10_000)])
    assert delta is not None and len(delta.added) == 10_000
    for i in range(0, 10_000, 100):
        assert local.add(f"orders/{i}/created") is None
    delta = local.add("orders/>")
    assert delta is not None and len(delta.removed) == 10_000
    assert local.advertised == {"orders/>"}
    delta = local.remove("orders/>")
    assert delta is not None and len(delta.added) == 10_000
    assert local.advertised == {f"orders/{i}/*" for i in range(10_000)}


def apply(delta: InterestDelta, patterns: set[str]) -> None:
    assert not set(delta.added) & set(delta.removed)
    assert set(delta.removed) <= patterns
    assert not set(delta.added) & patterns
    patterns -= set(delta.removed)
    patterns |= set(delta.added)


def maximal(held: set[str]) -> set[str]:
    return {p for p in held if not any(q != p and covers(q, p) for q in held)}


operations = st.lists(
    st.tuples(st.booleans(), st.lists(small_pattern, min_size=1, max_size=3)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(operations)
def test_local_interest_against_a_model(ops: list[tuple[bool, list[str]]]) -> None:
    local = LocalInterest("us")
    refs: dict[str, int] = {}
    replayed: set[str] = set()
    version = 0
    for is_add, patterns in ops:
        if is_add:
            delta = local.update(added=patterns)
            for p in patterns:
                refs[p] = refs.get(p, 0) + 1
        else:
            delta = local.update(removed=patterns)
            for p in patterns:
                if refs.get(p):
                    refs[p] -= 1
                    if not refs[p]:
                        del refs[p]
        if delta is not None:
            version += 1
            assert delta.region == "us" and delta.version == version
            assert delta.added or delta.removed
            apply(delta, replayed)
        # (c) the deltas reproduce the advertised set; no empty-change deltas.
        assert replayed == local.advertised
        assert local.version == version
        # The advertised set is exactly the maximal held patterns, hence
        # (b) no advertised pattern covers another.
        assert local.advertised == maximal(set(refs))
        assert all(local.refcount(p) == n for p, n in refs.items())
    # (a) advertised matches exactly the topics the full held set matches.
    held_topics = frozenset().union(*(matched(p) for p in refs))
    advertised_topics = frozenset().union(*(matched(p) for p in local.advertised))
    assert held_topics == advertised_topics
    for a, b in itertools.permutations(local.advertised, 2):
        assert not covers(a, b)


# --------------------------------------------------------------------------
# RemoteInterest
# --------------------------------------------------------------------------


def test_full_sync_then_deltas() -> None:
    remote = RemoteInterest("us")
    assert remote.apply_full("eu", 5, ["orders/>", "billing/*"])
    assert remote.regions_for("orders/1") == {"eu"}
    assert remote.apply_delta(InterestDelta("eu", 6, ("audit/x",), ("orders/>",))) is (
        DeltaResult.APPLIED
    )
    assert remote.patterns_of("eu") == {"billing/*", "audit/x"}
    assert remote.regions_for("orders/1") == frozenset()
    assert remote.regions_for("audit/x") == {"eu"}
    assert remote.version_of("eu") == 6
    assert remote.versions() == {"eu": 6}
    assert remote.regions() == {"eu"}


def test_stale_deltas_and_full_syncs_are_ignored() -> None:
    remote = RemoteInterest("us")
    remote.apply_full("eu", 5, ["a"])
    assert remote.apply_delta(InterestDelta("eu", 5, ("b",), ())) is DeltaResult.STALE
    assert remote.apply_delta(InterestDelta("eu", 3, ("b",), ())) is DeltaResult.STALE
    assert not remote.apply_full("eu", 4, ["c"])
    assert not remote.apply_full("eu", 5, ["a"])  # same version, same content
    assert remote.patterns_of("eu") == {"a"}
    assert remote.version_of("eu") == 5


def test_gap_is_detected_and_nothing_applied() -> None:
    remote = RemoteInterest("us")
    assert remote.apply_delta(InterestDelta("eu", 2, ("a",), ())) is DeltaResult.GAP
    assert remote.regions() == frozenset()
    remote.apply_full("eu", 2, ["a"])
    assert remote.apply_delta(InterestDelta("eu", 4, ("b",), ())) is DeltaResult.GAP
    assert remote.patterns_of("eu") == {"a"}
    # The first delta of an unknown region applies to version 0.
    assert remote.apply_delta(InterestDelta("ap", 1, ("x",), ())) is DeltaResult.APPLIED
    assert remote.regions_for("x") == {"ap"}


def test_forget_drops_the_region() -> None:
    remote = RemoteInterest("us")
    remote.apply_full("eu", 3, ["a/>"])
    remote.apply_full("ap", 1, ["a/b"])
    assert remote.regions_for("a/b") == {"eu", "ap"}
    remote.forget("eu")
    remote.forget("nowhere")
    assert remote.regions_for("a/b") == {"ap"}
    assert remote.version_of("eu") == 0
    assert remote.patterns_of("eu") == frozenset()
    # After forgetting, any version is accepted again (e.g. a restarted region).
    assert remote.apply_full("eu", 1, ["z"])


def test_own_region_is_never_held() -> None:
    remote = RemoteInterest("us")
    assert not remote.apply_full("us", 1, ["a"])
    assert remote.apply_delta(InterestDelta("us", 1, ("a",), ())) is DeltaResult.STALE
    assert remote.regions_for("a") == frozenset()
    assert remote.regions() == frozenset()


def test_invalid_remote_pattern_changes_nothing() -> None:
    remote = RemoteInterest("us")
    remote.apply_full("eu", 1, ["a"])
    with pytest.raises(InvalidPattern):
        remote.apply_full("eu", 2, ["b", "b/>/c"])
    with pytest.raises(InvalidPattern):
        remote.apply_delta(InterestDelta("eu", 2, ("b**",), ()))
    assert remote.version_of("eu") == 1
    assert remote.patterns_of("eu") == {"a"}


REGIONS = ["us", "eu", "ap", "sa"]
frame = st.one_of(
    st.tuples(
        st.just("full"),
        st.sampled_from(REGIONS),
        st.integers(0, 6),
        st.sets(small_pattern, max_size=4),
    ),
    st.tuples(
        st.just("delta"),
        st.sampled_from(REGIONS),
        st.integers(1, 6),
        st.sets(small_pattern, max_size=3),
        st.sets(small_pattern, max_size=3),
    ),
    st.tuples(st.just("forget"), st.sampled_from(REGIONS)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(frame, max_size=30), st.lists(st.sampled_from(UNIVERSE), max_size=20))
def test_remote_interest_against_a_model(frames: list[tuple], topics: list[str]) -> None:
    remote = RemoteInterest("us")
    model: dict[str, tuple[int, set[str]]] = {}
    for item in frames:
        kind, region = item[0], item[1]
        if kind == "forget":
            remote.forget(region)
            model.pop(region, None)
        elif kind == "full":
            _, _, version, patterns = item
            changed = remote.apply_full(region, version, patterns)
            known = model.get(region)
            if region == "us" or (known and version < known[0]):
                assert not changed
            else:
                assert changed == (known != (version, patterns))
                model[region] = (version, set(patterns))
        else:
            _, _, version, added, removed = item
            added = added - removed
            result = remote.apply_delta(
                InterestDelta(region, version, tuple(added), tuple(removed))
            )
            known_version, patterns = model.get(region, (0, set()))
            if region == "us" or version <= known_version:
                assert result is DeltaResult.STALE
            elif version > known_version + 1:
                assert result is DeltaResult.GAP
            else:
                assert result is DeltaResult.APPLIED
                model[region] = (version, (patterns - removed) | added)
        assert remote.versions() == {r: v for r, (v, _) in model.items()}
        assert remote.regions() == set(model)
        for region in REGIONS:
            assert remote.patterns_of(region) == model.get(region, (0, set()))[1]
        for topic in topics:
            want = {r for r, (_, ps) in model.items() if any(naive_matches(p, topic) for p in ps)}
            assert remote.regions_for(topic) == want
            assert "us" not in remote.regions_for(topic)


versions_map = st.dictionaries(
    st.sampled_from([*REGIONS, "é", "u", "s"]), st.integers(0, 2**64 - 1)
)


@given(versions_map, versions_map)
def test_digest_equal_iff_versions_equal(a: dict[str, int], b: dict[str, int]) -> None:
    assert (interest_digest(a) == interest_digest(b)) == (a == b)
    assert interest_digest(dict(reversed(list(a.items())))) == interest_digest(a)
    assert 0 <= interest_digest(a) < 2**64


def test_digest_of_remote_interest() -> None:
    remote = RemoteInterest("us")
    remote.apply_full("eu", 3, ["a"])
    remote.apply_full("ap", 7, [])
    assert remote.digest() == interest_digest({"eu": 3, "ap": 7})
    assert remote.digest(["eu"]) == interest_digest({"eu": 3})
    assert remote.digest(["eu", "sa"]) == interest_digest({"eu": 3, "sa": 0})
    # A node's own view, itself included, as it goes out with heartbeats.
    assert interest_digest({**remote.versions(), "us": 9}) == interest_digest(
        {"us": 9, "eu": 3, "ap": 7}
    )


def test_digest_is_stable_across_runs() -> None:
    # Pinned: the digest goes over the wire between processes (salted hash() would differ).
    assert interest_digest({"eu": 3, "us": 12, "ap": 0}) == 13503523701187139644
    assert interest_digest({}) == 16476032584258269876
