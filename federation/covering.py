"""Covering between subscription patterns, and a set of patterns indexed for it.

`general` *covers* `specific` when every topic `specific` matches is also
matched by `general`. A region advertises only the patterns no other pattern
it holds covers, so covering must be exact in the safe direction: a wrong
"covers" would drop a subscription another region needs.

Why the rules below are exact. A pattern matches a product of per-level sets
(`>` stands for "one or more further levels, anything"); every level set is
non-empty and every prefix level matches its own prefix (`ord*` matches
`ord`), so a product is included in another exactly when the lengths allow it
and each level set is included in the other's:

- levels: literal `a` covers only `a`; prefix `p*` (`*` is the empty prefix)
  covers literal `a` when `a` starts with `p`, and prefix `q*` when `q` starts
  with `p` (else the topic level `q` itself, or any level not starting with `p`
  when `q` is empty, is a witness);
- lengths: a pattern without `>` covers only patterns without `>` of the same
  length; `g1/.../g(m-1)/>` covers a pattern of n levels (its own `>` counted)
  when m <= n and each gi covers the specific level i for i < m.

Mutual covering therefore implies equal strings: levels covering each other are
equal, lengths covering each other are equal, and `>` is on both or neither.
So covering is a partial order on pattern strings, and the advertised set (its
maximal elements) is unique.

Topics are at most 250 bytes, which makes a few more pairs cover each other in
theory (`x...x/*` vs `x...x/>` near the limit). Ignoring the limit only ever
answers "does not cover" there: safe, it just advertises one more pattern.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

from plexus.topics import validate_pattern

__all__ = ["PatternSet", "covers", "generality_key"]

SEPARATOR = "/"
WILDCARD_ONE = "*"
WILDCARD_REST = ">"


def _level_covers(general: str, specific: str) -> bool:
    """Whether one pattern level (literal or prefix, never `>`) covers another."""
    if general[-1] == WILDCARD_ONE:
        prefix = general[:-1]
        # `specific` is a literal or `q*`; both need the text to start with the prefix.
        text = specific[:-1] if specific[-1] == WILDCARD_ONE else specific
        return text.startswith(prefix)
    return general == specific


def covers(general: str, specific: str) -> bool:
    """True when every topic matched by `specific` is also matched by `general`.

    Exact over the grammar (see the module docstring); raises `InvalidPattern`
    for an invalid pattern.
    """
    validate_pattern(general)
    validate_pattern(specific)
    if general == specific:
        return True
    g = general.split(SEPARATOR)
    s = specific.split(SEPARATOR)
    if g[-1] == WILDCARD_REST:
        # `>` at index m-1 takes whatever `specific` has from there on, `>` included.
        head = len(g) - 1
        if len(s) <= head:
            return False
    else:
        # Without `>` the length is fixed; `specific` must not vary it.
        if s[-1] == WILDCARD_REST or len(s) != len(g):
            return False
        head = len(g)
    return all(_level_covers(g[i], s[i]) for i in range(head))


def generality_key(pattern: str) -> tuple[int, int, int, str]:
    """A sort key under which a pattern sorts before every pattern it strictly covers.

    Patterns with `>` first, then fewer levels, then the sum of level keys
    (a prefix `p*` counts len(p), a literal `a` len(a) + 1: a level that
    covers another never counts more, and counts less when different).
    The string breaks ties only to make the order total.
    """
    levels = pattern.split(SEPARATOR)
    rest = levels[-1] == WILDCARD_REST
    weight = 0
    for level in levels[:-1] if rest else levels:
        weight += len(level) - 1 if level[-1] == WILDCARD_ONE else len(level) + 1
    return (0 if rest else 1, len(levels), weight, pattern)


class _Node:
    """One level of a `PatternSet` trie."""

    __slots__ = ("end", "literal_keys", "literals", "prefix_keys", "prefixes", "rest")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        # `ord*` -> child keyed by "ord"; `*` is the empty prefix "".
        self.prefixes: dict[str, _Node] = {}
        # The keys of each dict in order, for `covered_by` to find the keys
        # starting with a prefix by bisection. Built on the first such query
        # at this node, then kept up to date: nodes never asked pay nothing.
        self.literal_keys: list[str] | None = None
        self.prefix_keys: list[str] | None = None
        # The pattern ending at this node, and the one ending in `/>` after it.
        # The path fixes the string, so a node holds at most one of each.
        self.end: str | None = None
        self.rest: str | None = None

    def is_empty(self) -> bool:
        return not (self.literals or self.prefixes or self.end or self.rest)

    def children(self) -> Iterator[_Node]:
        yield from self.literals.values()
        yield from self.prefixes.values()

    def descend(self, level: str) -> _Node:
        """The child for a pattern level (literal or prefix), created if missing."""
        if level[-1] == WILDCARD_ONE:
            table, key, keys = self.prefixes, level[:-1], self.prefix_keys
        else:
            table, key, keys = self.literals, level, self.literal_keys
        child = table.get(key)
        if child is None:
            child = table[key] = _Node()
            if keys is not None:
                insort(keys, key)
        return child

    def existing(self, level: str) -> _Node:
        """The child for a pattern level; it must exist."""
        if level[-1] == WILDCARD_ONE:
            return self.prefixes[level[:-1]]
        return self.literals[level]

    def prune(self, level: str) -> None:
        """Drop the child for `level`."""
        if level[-1] == WILDCARD_ONE:
            table, key, keys = self.prefixes, level[:-1], self.prefix_keys
        else:
            table, key, keys = self.literals, level, self.literal_keys
        del table[key]
        if keys is not None:
            del keys[bisect_left(keys, key)]

    def children_starting_with(self, prefix: str) -> Iterator[_Node]:
        """The children whose literal or prefix starts with `prefix` (all for "")."""
        if not prefix:
            yield from self.children()
            return
        if self.literals:
            if self.literal_keys is None:
                self.literal_keys = sorted(self.literals)
            yield from _range(self.literals, self.literal_keys, prefix)
        if self.prefixes:
            if self.prefix_keys is None:
                self.prefix_keys = sorted(self.prefixes)
            yield from _range(self.prefixes, self.prefix_keys, prefix)


def _range(table: dict[str, _Node], keys: list[str], prefix: str) -> Iterator[_Node]:
    """The nodes of `table` whose sorted key in `keys` starts with `prefix`."""
    # Keys starting with `prefix` are contiguous in sorted order, from its position on.
    for index in range(bisect_left(keys, prefix), len(keys)):
        key = keys[index]
        if not key.startswith(prefix):
            return
        yield table[key]


def _prefix_children(prefixes: dict[str, _Node], text: str) -> Iterator[_Node]:
    """The children of `prefixes` whose prefix `text` starts with."""
    # Probe whichever is smaller: the prefixes held here or those of `text`.
    if len(prefixes) <= len(text) + 1:
        for prefix, child in prefixes.items():
            if text.startswith(prefix):
                yield child
    else:
        for end in range(len(text) + 1):
            child = prefixes.get(text[:end])
            if child is not None:
                yield child


class PatternSet:
    """A set of valid patterns in a trie, queried by covering rather than by topic.

    With d levels per pattern: `covering(p)` follows, per level, the literal
    child and the prefix children covering p's level (found by probing the
    level's own prefixes), so it costs O(d x those children), independent of
    the size of the set. `covered_by(p)` visits only the subtrees p covers:
    a literal level follows one child, `ord*` bisects the sorted child keys,
    O(log n + children starting with `ord`); only `*` and `>` list every child
    below them, which they cover anyway unless deeper levels rule them out.
    Add and discard are O(d) (plus a sorted insert where keys were sorted).
    """

    __slots__ = ("_patterns", "_root")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._root = _Node()
        self._patterns: set[str] = set()
        for pattern in patterns:
            self.add(pattern)

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._patterns

    def __len__(self) -> int:
        return len(self._patterns)

    def __iter__(self) -> Iterator[str]:
        return iter(self._patterns)

    def add(self, pattern: str) -> bool:
        """Add a valid pattern; False if it was there already."""
        if pattern in self._patterns:
            return False
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        if rest:
            levels.pop()
        node = self._root
        for level in levels:
            node = node.descend(level)
        if rest:
            node.rest = pattern
        else:
            node.end = pattern
        self._patterns.add(pattern)
        return True

    def discard(self, pattern: str) -> bool:
        """Remove a pattern; False if it was not there."""
        if pattern not in self._patterns:
            return False
        self._patterns.remove(pattern)
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        if rest:
            levels.pop()
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in levels:
            path.append((node, level))
            node = node.existing(level)
        if rest:
            node.rest = None
        else:
            node.end = None
        # Prune the nodes left empty, so that dead branches cost no walk.
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            parent.prune(level)
            node = parent
        return True

    def covering(self, pattern: str) -> Iterator[str]:
        """The patterns held that cover `pattern` (itself included if held)."""
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        if rest:
            levels.pop()
        nodes = [self._root]
        for level in levels:
            following: list[_Node] = []
            for node in nodes:
                if node.rest is not None:
                    # A `>` here covers this level and all that follow.
                    yield node.rest
                if level[-1] == WILDCARD_ONE:
                    # A prefix level is covered only by shorter-or-equal prefixes.
                    following.extend(_prefix_children(node.prefixes, level[:-1]))
                else:
                    child = node.literals.get(level)
                    if child is not None:
                        following.append(child)
                    if node.prefixes:
                        following.extend(_prefix_children(node.prefixes, level))
            if not following:
                return
            nodes = following
        for node in nodes:
            # Same length: a `>` covers a `>`; a fixed length covers only a fixed length.
            found = node.rest if rest else node.end
            if found is not None:
                yield found

    def covered_by(self, pattern: str) -> list[str]:
        """The patterns held that `pattern` covers (itself included if held)."""
        levels = pattern.split(SEPARATOR)
        rest = levels[-1] == WILDCARD_REST
        if rest:
            levels.pop()
        nodes = [self._root]
        for level in levels:
            following: list[_Node] = []
            if level[-1] == WILDCARD_ONE:
                prefix = level[:-1]
                for node in nodes:
                    following.extend(node.children_starting_with(prefix))
            else:
                for node in nodes:
                    child = node.literals.get(level)
                    if child is not None:
                        following.append(child)
            if not following:
                return []
            nodes = following
        found: list[str] = []
        if not rest:
            for node in nodes:
                if node.end is not None:
                    found.append(node.end)
            return found
        # `>` covers what ends in `>` right here and everything deeper.
        stack: list[_Node] = []
        for node in nodes:
            if node.rest is not None:
                found.append(node.rest)
            stack.extend(node.children())
        while stack:
            node = stack.pop()
            if node.end is not None:
                found.append(node.end)
            if node.rest is not None:
                found.append(node.rest)
            stack.extend(node.children())
        return found
