"""Interest propagation, sans-IO: what this region advertises, and what it knows of the others.

`LocalInterest` holds this region's patterns (direct and queue subscriptions)
with reference counts and keeps the minimal advertised set: the held patterns
no other held pattern covers. Each change to that set is one `InterestDelta`
with the region's version after it. `RemoteInterest` applies other regions'
full syncs and deltas, detects stale and missing deltas, answers "which regions
want this topic" per published event, and digests the versions it holds for
heartbeats. No I/O, no clock, no asyncio: the link shell feeds frames in and
sends what comes out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from federation.covering import PatternSet, covers, generality_key
from plexus.errors import InvalidPattern
from plexus.topics import SubscriptionTrie, validate_pattern

__all__ = [
    "DeltaResult",
    "InterestDelta",
    "LocalInterest",
    "RemoteInterest",
    "covers",
    "interest_digest",
]

# Versions travel as uint64 (proto `InterestDelta.version`) and are digested as 8 bytes.
MAX_VERSION = 2**64 - 1


@dataclass(frozen=True, slots=True)
class InterestDelta:
    """A change to a region's advertised interest.

    `version` is the region's interest version after applying it; the delta
    applies to `version - 1`. `added` and `removed` are disjoint and sorted.
    """

    region: str
    version: int
    added: tuple[str, ...]
    removed: tuple[str, ...]


class DeltaResult(Enum):
    """What `RemoteInterest.apply_delta` did with a delta."""

    APPLIED = "applied"
    # Already reflected (version <= known), or about this region itself: ignored.
    STALE = "stale"
    # One or more deltas are missing: the caller must ask for a full sync of the region.
    GAP = "gap"


def interest_digest(versions: Mapping[str, int]) -> int:
    """A stable 64-bit digest of (region, version) pairs, equal for equal mappings."""
    # Length-prefixed names and fixed-width versions keep the encoding unambiguous;
    # blake2b, unlike hash(), is the same in every process and on every machine.
    h = hashlib.blake2b(digest_size=8)
    for region in sorted(versions):
        name = region.encode("utf-8")
        h.update(len(name).to_bytes(4, "big"))
        h.update(name)
        h.update(versions[region].to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


class LocalInterest:
    """This region's own interest: every local pattern (direct subscriptions and queue
    subscriptions) with a reference count, and the minimal set advertised to other regions:
    patterns covered by another held pattern are not advertised (with `orders/>` held,
    `orders/us/*` adds nothing), so subscription churn costs little traffic.

    Complexity, with d levels per pattern: adding a pattern held already, or
    removing one reference of several, is O(1); adding a new pattern is
    O(d x wildcards covering each level) to find an advertised pattern covering
    it, plus O(k) for the k advertised patterns it displaces; removing a
    pattern that was not advertised is O(d); removing an advertised one finds
    the held patterns it covered in the trie of held patterns and re-advertises
    those nothing else covers, O(k log k + k x d) for k such patterns. No
    operation scans all held patterns unless the pattern covers them all.

    `version` starts at `version` (0 by default) and bumps by one per delta. A
    region that restarts should start above every version it ever sent (e.g.
    persisted, or seeded from the wall clock in microseconds by the shell):
    other regions ignore full syncs older than what they know.
    """

    __slots__ = ("_advertised", "_frozen", "_held", "_refs", "_version", "region")

    def __init__(self, region: str, version: int = 0) -> None:
        if not 0 <= version <= MAX_VERSION:
            raise ValueError(f"version must be in 0..2**64-1, got {version}")
        self.region = region
        self._version = version
        self._refs: dict[str, int] = {}
        # All held patterns, to find what an advertised pattern was hiding.
        self._held = PatternSet()
        # The maximal held patterns under covering: what other regions see.
        self._advertised = PatternSet()
        self._frozen: frozenset[str] | None = frozenset()

    @property
    def version(self) -> int:
        """The version of `advertised`: bumped by one per delta returned."""
        return self._version

    @property
    def advertised(self) -> frozenset[str]:
        """The patterns advertised to other regions."""
        if self._frozen is None:
            self._frozen = frozenset(self._advertised)
        return self._frozen

    def snapshot(self) -> tuple[int, frozenset[str]]:
        """(version, advertised) for a full sync."""
        return self._version, self.advertised

    def refcount(self, pattern: str) -> int:
        """How many times `pattern` is held (0 if not)."""
        return self._refs.get(pattern, 0)

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._refs

    def __len__(self) -> int:
        """The number of distinct patterns held."""
        return len(self._refs)

    def add(self, pattern: str) -> InterestDelta | None:
        """Hold one more reference to `pattern`; the delta, or None if `advertised` is unchanged."""
        return self.update(added=(pattern,))

    def remove(self, pattern: str) -> InterestDelta | None:
        """Drop one reference to `pattern`; the delta, or None if `advertised` is unchanged.

        Removing the last reference to an advertised pattern re-advertises the
        held patterns it covered that nothing else covers. Removing a pattern
        not held is a no-op (like an unsubscribe repeated).
        """
        return self.update(removed=(pattern,))

    def update(
        self, added: Iterable[str] = (), removed: Iterable[str] = ()
    ) -> InterestDelta | None:
        """Apply many changes as one delta (adds first, then removes); None if no net change.

        Batching 10,000 subscriptions costs one delta and one version instead
        of 10,000. All patterns are validated before anything changes.
        """
        if isinstance(added, str) or isinstance(removed, str):
            raise TypeError("added and removed are iterables of patterns, not one pattern")
        adding = list(added)
        removing = list(removed)
        for pattern in (*adding, *removing):
            validate_pattern(pattern)
        # Pattern -> whether it was advertised before this update, for every
        # pattern whose advertised state this update touched.
        before: dict[str, bool] = {}
        for pattern in adding:
            self._add(pattern, before)
        for pattern in removing:
            self._remove(pattern, before)
        now = self._advertised
        gained = sorted(p for p, was in before.items() if not was and p in now)
        lost = sorted(p for p, was in before.items() if was and p not in now)
        if not gained and not lost:
            return None
        self._version += 1
        self._frozen = None
        return InterestDelta(self.region, self._version, tuple(gained), tuple(lost))

    def _add(self, pattern: str, before: dict[str, bool]) -> None:
        count = self._refs.get(pattern, 0)
        self._refs[pattern] = count + 1
        if count:
            return
        self._held.add(pattern)
        advertised = self._advertised
        # A held pattern covering this one implies an advertised one does
        # (covering is transitive), so checking the advertised set suffices.
        if next(advertised.covering(pattern), None) is not None:
            return
        for hidden in advertised.covered_by(pattern):
            advertised.discard(hidden)
            before.setdefault(hidden, True)
        advertised.add(pattern)
        before.setdefault(pattern, False)

    def _remove(self, pattern: str, before: dict[str, bool]) -> None:
        count = self._refs.get(pattern, 0)
        if count > 1:
            self._refs[pattern] = count - 1
            return
        if not count:
            return
        del self._refs[pattern]
        self._held.discard(pattern)
        advertised = self._advertised
        if not advertised.discard(pattern):
            # Another advertised pattern covers it and still does.
            return
        before.setdefault(pattern, True)
        # The held patterns it covered, most general first: a candidate comes
        # after every candidate covering it, so each one is either covered by
        # what is advertised so far or maximal, and never hides an earlier one.
        # No previously advertised pattern is covered by a candidate: it would
        # then have been covered by `pattern`, hence not advertised.
        for candidate in sorted(self._held.covered_by(pattern), key=generality_key):
            if next(advertised.covering(candidate), None) is None:
                advertised.add(candidate)
                before.setdefault(candidate, False)


class RemoteInterest:
    """What this region knows of every other region's advertised interest, with versions.

    `regions_for` is the per-event hot path: one `SubscriptionTrie` holds every
    (pattern, region) pair, so repeated topics answer from its match cache.
    Patterns received are validated before anything changes: a full sync or
    delta with an invalid pattern raises `InvalidPattern` and is not applied.
    """

    __slots__ = ("_patterns", "_trie", "_versions", "self_region")

    def __init__(self, self_region: str) -> None:
        self.self_region = self_region
        self._versions: dict[str, int] = {}
        self._patterns: dict[str, set[str]] = {}
        self._trie: SubscriptionTrie[str] = SubscriptionTrie()

    # -- applying ---------------------------------------------------------

    def apply_full(self, region: str, version: int, patterns: Iterable[str]) -> bool:
        """Replace `region`'s interest; True if what we hold (patterns or version) changed.

        Ignored (False) when `version` is older than the version known, and for
        this region itself (its own interest is `LocalInterest`'s).
        """
        if region == self.self_region or version < self._versions.get(region, 0):
            return False
        wanted = set(patterns)
        known = region in self._versions
        held = self._patterns.get(region, set())
        changed = not known or version != self._versions[region] or wanted != held
        self._change(region, held, wanted - held, held - wanted)
        self._versions[region] = version
        return changed

    def apply_delta(self, delta: InterestDelta) -> DeltaResult:
        """Apply a delta if it is the next one for its region.

        The result is `(patterns - removed) | added`; removing a pattern not
        held is a no-op.
        """
        region = delta.region
        if region == self.self_region:
            return DeltaResult.STALE
        known = self._versions.get(region, 0)
        if delta.version <= known:
            return DeltaResult.STALE
        if delta.version > known + 1:
            return DeltaResult.GAP
        held = self._patterns.get(region, set())
        # O(size of the delta), not of the region's interest.
        added = set(delta.added)
        to_add = added - held
        to_remove = {p for p in delta.removed if p in held and p not in added}
        self._change(region, held, to_add, to_remove)
        self._versions[region] = delta.version
        return DeltaResult.APPLIED

    def _change(self, region: str, held: set[str], to_add: set[str], to_remove: set[str]) -> None:
        """Update `region`'s patterns and the trie, all or nothing."""
        trie = self._trie
        done: list[str] = []
        try:
            # The trie validates each pattern; an invalid one undoes the adds.
            for pattern in to_add:
                trie.add(pattern, region)
                done.append(pattern)
        except InvalidPattern:
            for pattern in done:
                trie.remove(pattern, region)
            raise
        for pattern in to_remove:
            trie.remove(pattern, region)
        held -= to_remove
        held |= to_add
        self._patterns[region] = held

    def forget(self, region: str) -> None:
        """Drop everything known of `region` (removed or unreachable)."""
        self._versions.pop(region, None)
        for pattern in self._patterns.pop(region, ()):
            self._trie.remove(pattern, region)

    # -- reading ----------------------------------------------------------

    def regions_for(self, topic: str) -> frozenset[str]:
        """The regions (never this one) with interest matching `topic` (assumed valid)."""
        return frozenset(self._trie.match(topic))

    def version_of(self, region: str) -> int:
        """The interest version known for `region`, 0 if unknown."""
        return self._versions.get(region, 0)

    def patterns_of(self, region: str) -> frozenset[str]:
        """The patterns `region` advertises, as far as we know."""
        return frozenset(self._patterns.get(region, ()))

    def regions(self) -> frozenset[str]:
        """The regions whose interest we know (possibly empty interest)."""
        return frozenset(self._versions)

    def versions(self) -> dict[str, int]:
        """A copy of region -> known version."""
        return dict(self._versions)

    def digest(self, regions: Iterable[str] | None = None) -> int:
        """`interest_digest` of the versions known for `regions` (all known when None).

        A region asked for but unknown counts as version 0. To digest a view
        that includes this region, use `interest_digest` with its own version.
        """
        if regions is None:
            return interest_digest(self._versions)
        return interest_digest({region: self._versions.get(region, 0) for region in regions})
