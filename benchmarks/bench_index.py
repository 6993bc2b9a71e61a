"""Micro-benchmark of the subscription index: plexus.topics.SubscriptionTrie.

Builds a trie of 100,000 subscriptions shaped like real interest, then times
matches of a stream drawn from ~10,000 distinct topics (mostly cache hits, as
a node sees them) and, separately, matches of topics never seen before (every
one a cache miss that walks the trie).

The churn case keeps CHURN_SUBSCRIPTIONS subscriptions of the same shapes and
replaces 1% of them per (simulated) second, an unsubscribe and a subscribe
each, while matching a skewed topic stream at a fixed rate per simulated
second; it reports the cache hit rate and the match throughput (matches over
the wall time of matches and changes together).

    .venv/bin/python benchmarks/bench_index.py
    .venv/bin/python benchmarks/bench_index.py --against main --rounds 4   # main vs now
    .venv/bin/python benchmarks/bench_index.py --churn-against main   # churn: main vs now

`run()` returns the rows for the benchmark aggregator.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# Runnable as a script from the repository root without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plexus.topics import SubscriptionTrie, validate_topic

SUBSCRIPTIONS = 100_000
DISTINCT_TOPICS = 10_000
STREAM_MATCHES = 1_000_000
COLD_MATCHES = 100_000
SEED = 20_240_601

CHURN_SUBSCRIPTIONS = 10_000
CHURN_PER_S = CHURN_SUBSCRIPTIONS // 100  # 1% of subscriptions replaced per second
CHURN_SECONDS = 10  # simulated
CHURN_MATCH_RATES = (10_000, 100_000)  # matches per simulated second

REGIONS = ("us", "eu", "ap", "sa", "af")
ORDER_EVENTS = ("created", "paid", "shipped", "cancelled")
DEVICE_KINDS = ("thermo", "meter", "camera", "gateway")


def _customer(i: int) -> str:
    return f"c{i:05d}"


def _device(i: int) -> str:
    return f"d{i:05d}"


def build_patterns(rng: random.Random, count: int = SUBSCRIPTIONS) -> list[str]:
    """`count` patterns, some repeated as several subscribers share interest."""
    return [make_pattern(rng, i / count) for i in range(count)]


def make_pattern(rng: random.Random, shape: float) -> str:
    """One pattern; `shape` in [0, 1) picks its kind in the proportions below."""
    # Half: one customer's orders in one region.
    if shape < 0.5:
        return f"orders/{rng.choice(REGIONS)}/{_customer(rng.randrange(20_000))}/>"
    # Telemetry of one device, any kind.
    if shape < 0.8:
        return f"telemetry/*/{_device(rng.randrange(30_000))}"
    # Prefix wildcards: a family of streams (`ord*` covers `orders`, `ordered`, ...).
    if shape < 0.9:
        prefix = rng.choice(("ord", "orders", "o", "tele"))
        return f"{prefix}*/{rng.choice(REGIONS)}/{_customer(rng.randrange(20_000))}/*"
    # Broad interest: a region's event kind, audit streams, a customer everywhere.
    # Broad subscriptions are few: each one receives a whole region's flow.
    broad = rng.random()
    if broad < 0.05:
        return f"orders/{rng.choice(REGIONS)}/*/{rng.choice(ORDER_EVENTS)}"
    if broad < 0.1:
        return f"audit/{rng.choice(REGIONS)}/>"
    return f"orders/*/{_customer(rng.randrange(20_000))}/created"


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


def churn(trie_class: Any, matches_per_s: int) -> dict[str, Any]:
    """Matches at `matches_per_s` while CHURN_PER_S subscriptions are replaced per second.

    `trie_class` is a SubscriptionTrie (this one, or another version's).
    """
    rng = random.Random(SEED)
    trie = trie_class()
    live: list[tuple[str, int]] = []
    for subscriber, pattern in enumerate(build_patterns(rng, CHURN_SUBSCRIPTIONS)):
        trie.add(pattern, subscriber)
        live.append((pattern, subscriber))
    hot = distinct_topics(rng, DISTINCT_TOPICS, exclude=set())
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(hot))]
    rng.shuffle(hot)
    total = matches_per_s * CHURN_SECONDS
    stream = rng.choices(hot, weights=weights, k=total)
    changes = CHURN_PER_S * CHURN_SECONDS
    # Which subscription each change replaces, and with what: drawn up front.
    replaced = [rng.randrange(CHURN_SUBSCRIPTIONS) for _ in range(changes)]
    replacements = [make_pattern(rng, rng.random()) for _ in range(changes)]
    between = total // changes
    match, cache = trie.match, trie._cache
    for topic in hot * 2:
        match(topic)  # warm, as a running node would be (cached from the second miss)
    next_subscriber = len(live)
    hits = 0
    start = time.perf_counter()
    for change in range(changes):
        for topic in stream[change * between : (change + 1) * between]:
            # Peeking at the cache costs the same for either version.
            hits += topic in cache
            match(topic)
        slot = replaced[change]
        trie.remove(*live[slot])
        live[slot] = (replacements[change], next_subscriber)
        trie.add(*live[slot])
        next_subscriber += 1
        cache = trie._cache  # the old version rebinds it on every change
    seconds = time.perf_counter() - start
    matched = between * changes
    return {
        "matches_per_s_simulated": matches_per_s,
        "hit_rate": hits / matched,
        "matches": matched,
        "changes": changes,
        "seconds": seconds,
        "throughput": matched / seconds,
    }


def churn_rows(trie_class: Any, label: str) -> list[dict]:
    rows = []
    for rate in CHURN_MATCH_RATES:
        result = churn(trie_class, rate)
        rows.append(
            {
                "benchmark": "index",
                "name": f"match, churn 1%/s, {rate // 1000}k matches/s{label}",
                "subscriptions": CHURN_SUBSCRIPTIONS,
                "operations": result["matches"],
                "seconds": round(result["seconds"], 4),
                "ops_per_s": round(result["throughput"]),
                "hit_rate": round(result["hit_rate"], 4),
                "changes_per_s": CHURN_PER_S,
            }
        )
    return rows


def trie_class_at(ref: str) -> Any:
    """SubscriptionTrie as plexus/topics.py was at git `ref` (for before/after runs)."""
    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:plexus/topics.py"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.NamedTemporaryFile(suffix=".py") as file:
        file.write(source)
        file.flush()
        spec = importlib.util.spec_from_file_location(f"topics_at_{ref}", file.name)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.SubscriptionTrie


def workload() -> tuple[list[str], list[str], list[str], list[str]]:
    """The patterns, the hot topics, a skewed stream of them, and the cold topics."""
    rng = random.Random(SEED)
    patterns = build_patterns(rng)
    hot = distinct_topics(rng, DISTINCT_TOPICS, exclude=set())
    # Skewed like real traffic: a few topics are busy, most are quiet.
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(hot))]
    rng.shuffle(hot)
    stream = rng.choices(hot, weights=weights, k=STREAM_MATCHES)
    cold = distinct_topics(rng, COLD_MATCHES, exclude=set(hot))
    return patterns, hot, stream, cold


def match_rows(
    trie_class: Any, label: str = "", clock: Callable[[], float] = time.perf_counter
) -> list[dict]:
    """Build, then time cached and uncached matches with `trie_class` (a
    SubscriptionTrie: this one, or another version's) by `clock`; one row per
    measurement."""
    patterns, hot, stream, cold = workload()
    trie = trie_class()
    start = clock()
    for subscriber, pattern in enumerate(patterns):
        trie.add(pattern, subscriber)
    build_s = clock() - start
    assert len(trie) == SUBSCRIPTIONS

    match = trie.match
    # Warm the cache with every hot topic, as a running node would have it (a
    # topic is cached from its second miss).
    for topic in hot * 2:
        match(topic)
    start = clock()
    delivered = 0
    for topic in stream:
        delivered += len(match(topic))
    cached_s = clock() - start

    # Every cold topic is new to the cache: each match walks the trie.
    start = clock()
    cold_delivered = 0
    for topic in cold:
        cold_delivered += len(match(topic))
    uncached_s = clock() - start

    return [
        _row(f"add (build){label}", SUBSCRIPTIONS, build_s, patterns=len(trie.patterns())),
        _row(
            f"match (cached){label}",
            STREAM_MATCHES,
            cached_s,
            distinct_topics=DISTINCT_TOPICS,
            values_per_match=round(delivered / STREAM_MATCHES, 2),
        ),
        _row(
            f"match (uncached){label}",
            COLD_MATCHES,
            uncached_s,
            distinct_topics=COLD_MATCHES,
            values_per_match=round(cold_delivered / COLD_MATCHES, 2),
        ),
    ]


def run() -> list[dict]:
    """The match rows, topic validation and the churn case; one row per measurement."""
    stream = workload()[2]
    start = time.perf_counter()
    for topic in stream:
        validate_topic(topic)
    validate_s = time.perf_counter() - start
    return [
        *match_rows(SubscriptionTrie),
        _row("validate_topic", STREAM_MATCHES, validate_s),
        *churn_rows(SubscriptionTrie, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--against",
        metavar="REF",
        help="only the match rows, for plexus/topics.py at git REF and as it is now, in "
        "turn, timed in CPU time (the others' load on a shared machine counts less)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --against: how many times each, in turn"
    )
    parser.add_argument(
        "--churn-against",
        metavar="REF",
        help="only the churn case, for plexus/topics.py at git REF and as it is now",
    )
    args = parser.parse_args()
    if args.against:
        before = trie_class_at(args.against)
        rows = []
        for _ in range(args.rounds):
            rows += match_rows(before, f" ({args.against})", time.process_time)
            rows += match_rows(SubscriptionTrie, " (now)", time.process_time)
    elif args.churn_against:
        rows = churn_rows(trie_class_at(args.churn_against), f" ({args.churn_against})")
        rows += churn_rows(SubscriptionTrie, " (now)")
    else:
        rows = run()
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text is enough where rich is absent
        for row in rows:
            hit_rate = f"{row['hit_rate']:.1%}" if "hit_rate" in row else ""
            print(
                f"{row['name']:<48} {row['subscriptions']:>8,} {row['ops_per_s']:>12,}/s {hit_rate}"
            )
        return
    table = Table(title="Subscription index (plexus.topics)")
    table.add_column("measure")
    table.add_column("subscriptions", justify="right")
    table.add_column("operations", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("values/match", justify="right")
    table.add_column("cache hits", justify="right")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['subscriptions']:,}",
            f"{row['operations']:,}",
            f"{row['ops_per_s']:,}",
            str(row.get("values_per_match", "")),
            f"{row['hit_rate']:.1%}" if "hit_rate" in row else "",
        )
    Console(width=max(Console().width, 110)).print(table)


if __name__ == "__main__":
    main()
