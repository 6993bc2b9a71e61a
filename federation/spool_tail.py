"""A link's newest committed guaranteed events, kept in memory for its sender.

While a link is up and its sender keeps up, what was just committed to its spool
is what it sends next: the sender takes it from here instead of reading it back
from disk. Anything else (a sender behind, a new stream resuming from the
peer's mark, a sequence gap left by a failed commit) finds the tail not
starting right after what was sent, and the sender reads the spool on disk,
which always holds everything.
"""

from __future__ import annotations

from collections import deque

from plexus.v1 import link_pb2 as lpb
from plexus.wire import varint

# Past either bound the sender is behind: the oldest leave the tail, and the sender
# reads the spool until it reaches what the tail still holds. (At 100,000 events/s,
# 8,192 events are 80 ms of slack; a link whose sender is not running keeps none.)
TAIL_MAX_EVENTS = 8192
TAIL_MAX_BYTES = 8 << 20

# Field tags of GuaranteedEvent (link_seq = 1, event = 4), GuaranteedBatch.events (1)
# and LinkFrame.guaranteed (8).
_LINK_SEQ = b"\x08"
_EVENT = b"\x22"
_BATCH_EVENT = b"\x0a"
_FRAME_GUARANTEED = b"\x42"


class SpoolTail:
    """(link seq, envelope, event) of committed spool entries, in sequence order, no gaps."""

    __slots__ = ("_bytes", "_items", "_senders")

    def __init__(self) -> None:
        self._items: deque[tuple[int, bytes, bytes]] = deque()
        self._bytes = 0
        # Senders running (an old stream's may still be winding down beside a new one's):
        # with none, nothing is kept.
        self._senders = 0

    def __len__(self) -> int:
        return len(self._items)

    def sender_started(self) -> None:
        self._senders += 1

    def sender_stopped(self) -> None:
        self._senders -= 1
        if not self._senders:
            self.clear()

    def append(self, link_seq: int, envelope: bytes, data: bytes) -> None:
        if not self._senders:
            return
        size = len(envelope) + len(data)
        items = self._items
        if items and link_seq != items[-1][0] + 1:
            self.clear()  # a gap: the disk says what lies between
        items.append((link_seq, envelope, data))
        self._bytes += size
        while len(items) > TAIL_MAX_EVENTS or (self._bytes > TAIL_MAX_BYTES and len(items) > 1):
            _seq, old_envelope, old_data = items.popleft()
            self._bytes -= len(old_envelope) + len(old_data)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def take(self, after: int, limit: int, max_bytes: int) -> list[tuple[int, bytes, bytes]] | None:
        """Up to `limit` events right after link seq `after` (stopping once `max_bytes` are
        taken, at least one), or None when the tail does not start right after `after`."""
        items = self._items
        while items and items[0][0] <= after:
            self._bytes -= len(items[0][1]) + len(items[0][2])
            items.popleft()
        if not items or items[0][0] != after + 1:
            return None
        taken = []
        size = 0
        while items and len(taken) < limit and (not taken or size < max_bytes):
            item = items.popleft()
            item_size = len(item[1]) + len(item[2])
            self._bytes -= item_size
            size += item_size
            taken.append(item)
        return taken


def guaranteed_frame(events: list[tuple[int, bytes, bytes]]) -> lpb.LinkFrame:
    """A LinkFrame carrying these (link seq, envelope, event) as one GuaranteedBatch.

    The envelope is an encoded GuaranteedEvent holding destinations, visited and
    topic; appending the link seq and event fields to it gives the whole event
    (protobuf merges concatenated fields), so no event is parsed or built here.
    """
    parts: list[bytes] = []
    for link_seq, envelope, data in events:
        seq, size = varint(link_seq), varint(len(data))
        length = len(envelope) + len(seq) + len(size) + len(data) + 2  # with the two tags
        parts += (_BATCH_EVENT, varint(length), envelope, _LINK_SEQ, seq, _EVENT, size, data)
    batch = b"".join(parts)
    return lpb.LinkFrame.FromString(_FRAME_GUARANTEED + varint(len(batch)) + batch)
