"""Micro-benchmark of the subscription index: plexus.topics.SubscriptionTrie.

Builds a trie of 100,000 subscriptions shaped like real interest, then times
matches of a stream drawn from ~10,000 distinct topics (mostly cache hits, as
a node sees them) and, separately, matches of topics never seen before (every
one a cache miss that walks the trie).

    .venv/bin/python benchmarks/bench_index.py

`run()` returns the rows for the benchmark aggregator.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

# Runnable as a script from the repository root without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plexus.topics import SubscriptionTrie, validate_topic

SUBSCRIPTIONS = 100_000
DISTINCT_TOPICS = 10_000
STREAM_MATCHES = 1_000_000
COLD_MATCHES = 100_000
SEED = 20_240_601

REGIONS = ("us", "eu", "ap", "sa", "af")
ORDER_EVENTS = ("created", "paid", "shipped", "cancelled")
DEVICE_KINDS = ("thermo", "meter", "camera", "gateway")


def _customer(i: int) -> str:
    return f"c{i:05d}"


def _device(i: int) -> str:
    return f"d{i:05d}"


def build_patterns(rng: random.Random) -> list[str]:
    """SUBSCRIPTIONS patterns, some repeated as several subscribers share interest."""
    patterns: list[str] = []
    # Half: one customer's orders in one region.
    for _ in range(50_000):
        patterns.append(f"orders/{rng.choice(REGIONS)}/{_customer(rng.randrange(20_000))}/>")
    # Telemetry of one device, any kind.
    for _ in range(30_000):
        patterns.append(f"telemetry/*/{_device(rng.randrange(30_000))}")
    # Prefix wildcards: a family of streams (`ord*` covers `orders`, `ordered`, ...).
    for _ in range(10_000):
        prefix = rng.choice(("ord", "orders", "o", "tele"))
        patterns.append(f"{prefix}*/{rng.choice(REGIONS)}/{_customer(rng.randrange(20_000))}/*")
    # Broad interest: a region's event kind, audit streams, a customer everywhere.
    for _ in range(10_000):
        # Broad subscriptions are few: each one receives a whole region's flow.
        shape = rng.random()
        if shape < 0.05:
            patterns.append(f"orders/{rng.choice(REGIONS)}/*/{rng.choice(ORDER_EVENTS)}")
        elif shape < 0.1:
            patterns.append(f"audit/{rng.choice(REGIONS)}/>")
        else:
            patterns.append(f"orders/*/{_customer(rng.randrange(20_000))}/created")
    return patterns


def make_topic(rng: random.Random) -> str:
    """One realistic topic; customers and devices drawn from wide ranges."""
    kind = rng.random()
    if kind < 0.6:
        customer = _customer(rng.randrange(40_000))
        return f"orders/{rng.choice(REGIONS)}/{customer}/{rng.choice(ORDER_EVENTS)}"
    if kind < 0.9:
        return f"telemetry/{rng.choice(DEVICE_KINDS)}/{_device(rng.randrange(60_000))}"
    return f"audit/{rng.choice(REGIONS)}/login/u{rng.randrange(10_000)}"


def distinct_topics(rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    topics: set[str] = set()
    while len(topics) < count:
        topic = make_topic(rng)
        if topic not in exclude:
            topics.add(topic)
    return sorted(topics)


def _row(name: str, operations: int, seconds: float, **extra: object) -> dict:
    return {
        "benchmark": "index",
        "name": name,
        "subscriptions": SUBSCRIPTIONS,
        "operations": operations,
        "seconds": round(seconds, 4),
        "ops_per_s": round(operations / seconds),
        **extra,
    }


def run() -> list[dict]:
    """Build, then time cached and uncached matches; one row per measurement."""
    rng = random.Random(SEED)
    patterns = build_patterns(rng)

    trie: SubscriptionTrie[int] = SubscriptionTrie()
    start = time.perf_counter()
    for subscriber, pattern in enumerate(patterns):
        trie.add(pattern, subscriber)
    build_s = time.perf_counter() - start
    assert len(trie) == SUBSCRIPTIONS

    hot = distinct_topics(rng, DISTINCT_TOPICS, exclude=set())
    # Skewed like real traffic: a few topics are busy, most are quiet.
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(hot))]
    rng.shuffle(hot)
    stream = rng.choices(hot, weights=weights, k=STREAM_MATCHES)
    cold = distinct_topics(rng, COLD_MATCHES, exclude=set(hot))

    match = trie.match
    # Warm the cache with every hot topic, as a running node would have it.
    for topic in hot:
        match(topic)
    start = time.perf_counter()
    delivered = 0
    for topic in stream:
        delivered += len(match(topic))
    cached_s = time.perf_counter() - start

    # Every cold topic is new to the cache: each match walks the trie and
    # stores its result (with eviction once the cache is full).
    start = time.perf_counter()
    cold_delivered = 0
    for topic in cold:
        cold_delivered += len(match(topic))
    uncached_s = time.perf_counter() - start

    start = time.perf_counter()
    for topic in stream:
        validate_topic(topic)
    validate_s = time.perf_counter() - start

    return [
        _row("add (build)", SUBSCRIPTIONS, build_s, patterns=len(trie.patterns())),
        _row(
            "match (cached)",
            STREAM_MATCHES,
            cached_s,
            distinct_topics=DISTINCT_TOPICS,
            values_per_match=round(delivered / STREAM_MATCHES, 2),
        ),
        _row(
            "match (uncached)",
            COLD_MATCHES,
            uncached_s,
            distinct_topics=COLD_MATCHES,
            values_per_match=round(cold_delivered / COLD_MATCHES, 2),
        ),
        _row("validate_topic", STREAM_MATCHES, validate_s),
    ]


def main() -> None:
    rows = run()
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text is enough where rich is absent
        for row in rows:
            print(f"{row['name']:<18} {row['subscriptions']:>8,} {row['ops_per_s']:>12,}/s")
        return
    table = Table(title="Subscription index (plexus.topics)")
    table.add_column("measure")
    table.add_column("subscriptions", justify="right")
    table.add_column("operations", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("values/match", justify="right")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['subscriptions']:,}",
            f"{row['operations']:,}",
            f"{row['ops_per_s']:,}",
            str(row.get("values_per_match", "")),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
