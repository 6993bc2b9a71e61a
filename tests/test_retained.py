"""MQTT retained messages (node/mqtt/retained.py over storage/retained.py), on real LMDB
through the node's commit writer: kept per topic, cleared by an empty payload, found by
pattern from memory, bounded with a refusal naming the limit, and still there after the
environment is reopened or its process is killed with -9."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.commits import Commits
from node.mqtt.retained import RetainedStore
from plexus.errors import InvalidArgument, InvalidPattern, InvalidTopic, LimitReached
from plexus.topics import TopicSet, pattern_matches
from plexus.v1 import plexus_pb2 as pb
from storage.environment import Environment
from tests.harness import eventually

pytestmark = pytest.mark.timeout(60)
MAX_MESSAGES = 100
MAX_BYTES = 1 << 20


def message(topic: str, payload: bytes) -> pb.Event:
    return pb.Event(topic=topic, payload=payload, mode=pb.DeliveryMode.GUARANTEED)


def seen(store: RetainedStore, *patterns: str) -> list[tuple[str, bytes]]:
    return [(e.topic, e.payload) for e in store.matching(patterns)]


class Storage:
    """A data directory opened and closed like a node does: environment, writer, store."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.env: Environment | None = None
        self.commits: Commits | None = None

    async def open(
        self, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES
    ) -> RetainedStore:
        await self.close()
        self.env = Environment(self.data)
        self.commits = Commits(self.env, asyncio.get_running_loop())
        self.commits.start()
        return await RetainedStore.open(
            self.env, self.commits, max_messages=max_messages, max_bytes=max_bytes
        )

    async def close(self) -> None:
        if self.commits is not None:
            await asyncio.to_thread(self.commits.stop)
            self.commits = None
        if self.env is not None:
            self.env.close()
            self.env = None


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened = Storage(tmp_path / "data")
    try:
        yield opened
    finally:
        await opened.close()


async def test_the_last_retained_message_per_topic_comes_back_after_a_reopen(
    storage: Storage,
) -> None:
    store = await storage.open()
    await store.retain("home/kitchen/temp", message("home/kitchen/temp", b"20"))
    await store.retain("home/hall/temp", message("home/hall/temp", b"18"))
    await store.retain("home/kitchen/temp", message("home/kitchen/temp", b"21"))

    store = await storage.open()

    assert seen(store, "home/>") == [("home/hall/temp", b"18"), ("home/kitchen/temp", b"21")]
    assert len(store) == 2


async def test_an_empty_payload_clears_the_topic_and_it_stays_cleared(storage: Storage) -> None:
    store = await storage.open()
    await store.retain("door/state", message("door/state", b"open"))
    await store.retain("door/state", message("door/state", b""))
    assert seen(store, "door/>") == []
    await store.retain("never/kept", message("never/kept", b""))  # nothing to clear: fine

    store = await storage.open()

    assert seen(store, ">") == []
    assert store.bytes == 0


async def test_retained_messages_are_found_by_pattern_each_once_by_topic(
    storage: Storage,
) -> None:
    store = await storage.open()
    for topic in ("a", "a/b", "a/b/c", "a/x", "orders/1", "ord/2", "other/3"):
        await store.retain(topic, message(topic, topic.encode()))

    assert [t for t, _ in seen(store, "a/>")] == ["a/b", "a/b/c", "a/x"]
    assert [t for t, _ in seen(store, "a", "a/>")] == ["a", "a/b", "a/b/c", "a/x"]
    assert [t for t, _ in seen(store, "a/*")] == ["a/b", "a/x"]
    assert [t for t, _ in seen(store, "ord*/*")] == ["ord/2", "orders/1"]
    assert [t for t, _ in seen(store, "a/b", "a/*", "*/b")] == ["a/b", "a/x"]
    assert len(seen(store, ">")) == 7
    assert seen(store, "nothing/>") == []


async def test_the_count_limit_refuses_a_new_topic_naming_it_and_keeps_what_is_there(
    storage: Storage,
) -> None:
    store = await storage.open(max_messages=2)
    await store.retain("s/1", message("s/1", b"a"))
    await store.retain("s/2", message("s/2", b"b"))

    with pytest.raises(LimitReached, match="retained_max_messages = 2"):
        await store.retain("s/3", message("s/3", b"c"))

    await store.retain("s/1", message("s/1", b"replaced"))  # a topic held: no new message
    await store.retain("s/2", message("s/2", b""))
    await store.retain("s/3", message("s/3", b"c"))  # room again
    assert seen(store, "s/*") == [("s/1", b"replaced"), ("s/3", b"c")]
    assert store.limits_hit["retained_max_messages"] == 1


async def test_the_bytes_limit_refuses_naming_it(storage: Storage) -> None:
    small = message("big/1", b"x" * 100)
    store = await storage.open(max_bytes=len(small.SerializeToString()) * 2)
    await store.retain("big/1", small)
    await store.retain("big/2", message("big/2", b"y" * 100))

    with pytest.raises(LimitReached, match="retained_max_bytes") as refused:
        await store.retain("big/3", message("big/3", b"z"))
    assert refused.value.limit == "retained_max_bytes"
    with pytest.raises(LimitReached, match="retained_max_bytes"):
        await store.retain("big/1", message("big/1", b"x" * 101))  # replacing, yet larger
    await store.retain("big/1", message("big/1", b"x" * 99))
    assert [p for _, p in seen(store, "big/*")] == [b"x" * 99, b"y" * 100]


async def test_retains_at_once_never_pass_the_limit_together(storage: Storage) -> None:
    store = await storage.open(max_messages=5)
    results = await asyncio.gather(
        *(store.retain(f"t/{i}", message(f"t/{i}", b"v")) for i in range(12)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, LimitReached) for r in results if r is not None)
    assert len(store) == 5
    store = await storage.open(max_messages=5)
    assert len(store) == 5


async def test_limits_lowered_below_what_is_kept_keep_it_all_and_refuse_new_ones(
    storage: Storage,
) -> None:
    store = await storage.open()
    for i in range(3):
        await store.retain(f"k/{i}", message(f"k/{i}", b"v"))

    store = await storage.open(max_messages=2)

    assert len(seen(store, "k/*")) == 3
    with pytest.raises(LimitReached, match="retained_max_messages = 2"):
        await store.retain("k/9", message("k/9", b"v"))


async def test_a_retain_whose_caller_is_cancelled_still_lands_in_memory_and_on_disk(
    storage: Storage,
) -> None:
    store = await storage.open()
    task = asyncio.create_task(store.retain("c/1", message("c/1", b"kept")))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its awaited commit
    task.cancel()
    await eventually(lambda: seen(store, "c/1") == [("c/1", b"kept")], 5, "the commit")
    store = await storage.open()
    assert seen(store, "c/1") == [("c/1", b"kept")]


async def test_bad_topics_and_patterns_are_refused_naming_them(storage: Storage) -> None:
    store = await storage.open()
    with pytest.raises(InvalidTopic, match="'a//b'"):
        await store.retain("a//b", message("a//b", b"v"))
    with pytest.raises(InvalidArgument, match="'x/y' is not 'x/z'"):
        await store.retain("x/z", message("x/y", b"v"))
    with pytest.raises(InvalidPattern, match="'a/>/b'"):
        store.matching(["a/>/b"])
    assert len(store) == 0


KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from node.commits import Commits
    from node.mqtt.retained import RetainedStore
    from plexus.v1 import plexus_pb2 as pb
    from storage.environment import Environment

    async def main() -> None:
        env = Environment(Path(sys.argv[1]))
        commits = Commits(env, asyncio.get_running_loop())
        commits.start()
        store = await RetainedStore.open(env, commits, max_messages=10_000, max_bytes=1 << 26)
        i = 0
        while True:  # until killed
            topic = f"k/{i % 50}"
            await store.retain(topic, pb.Event(topic=topic, payload=str(i).encode()))
            print(topic, i, flush=True)
            i += 1

    asyncio.run(main())
    """
)


async def test_every_acknowledged_retain_survives_kill_9(storage: Storage) -> None:
    """A real process retains in a loop and says each one once `retain` returned; killed
    with -9, its data directory holds at least that message for each topic."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(storage.data)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        while len(acked) < 50 or min(acked.values()) < 100:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, f"the writer process ended (exit {proc.poll()})"
            topic, number = line.split()
            acked[topic] = int(number)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    store = await storage.open(max_messages=10_000, max_bytes=1 << 26)

    kept = {e.topic: int(e.payload) for e in store.matching(["k/*"])}
    assert kept.keys() == acked.keys()
    assert all(kept[t] >= acked[t] for t in acked)


LEVELS = st.sampled_from(["a", "b", "ab", "$s"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join)
PATTERN_LEVELS = st.sampled_from(["a", "b", "ab", "*", "a*", "$s"])
PATTERNS = st.tuples(st.lists(PATTERN_LEVELS, min_size=1, max_size=4), st.booleans()).map(
    lambda p: "/".join(p[0] + ([">"] if p[1] else []))
)


@given(st.sets(TOPICS, max_size=12), st.sets(TOPICS, max_size=4), PATTERNS)
def test_a_topic_set_lists_what_pattern_matches_says(
    held: set[str], dropped: set[str], pattern: str
) -> None:
    topics = TopicSet()
    for topic in held:
        topics.add(topic)
    for topic in dropped:
        topics.discard(topic)
    left = held - dropped
    assert sorted(topics.matching(pattern)) == sorted(
        t for t in left if pattern_matches(pattern, t)
    )
