"""The link protocol between two regions, sans-IO: frames and time in, actions out.

`LinkProtocol` holds one end of one `Link.Connect` stream: the handshake
(cluster, protocol version, and a challenge-response proof of the shared
secret: each end proves it over the other's fresh nonce, so a recorded
handshake cannot be replayed), heartbeats with
round-trip time and silence detection, the receive side of guaranteed
sequencing (duplicates dropped, cumulative acks once stored) and the send
window of guaranteed events. It never touches a socket, a clock or a disk:
the asyncio shell feeds it frames and `now_ms`, and performs the actions it
returns. Interest, link-state and event frames are handed up as actions.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from plexus.v1 import link_pb2 as lpb

# 2: challenge-response handshake (version 1 signed each end's own nonce: replayable).
PROTOCOL_VERSION = 2
# Guaranteed events a sender may have unacked on a link: bounds the memory of
# both ends and lets a slow peer slow the sender down instead of growing it.
DEFAULT_SEND_WINDOW = 20_000
# ... and their bytes (payloads, topics, headers): 20,000 events of 1 MiB would be 20 GiB.
DEFAULT_SEND_WINDOW_BYTES = 32 << 20
# A hello's nonce: fresh random bytes, enough that none comes twice.
NONCE_BYTES = (16, 64)


class LinkState(enum.Enum):
    HANDSHAKE = "connecting"
    OPEN = "up"
    CLOSED = "down"


class CloseReason(enum.Enum):
    WRONG_CLUSTER = "the peer belongs to another cluster"
    WRONG_SECRET = "the peer does not know the cluster secret"
    VERSION_MISMATCH = "the peer speaks another link protocol version"
    UNKNOWN_REGION = "the peer is not a region linked to this one"
    DUPLICATE_LINK = "this link is already up"
    WRONG_PEER = "a different region answered than the one dialled"
    WRONG_CERTIFICATE = "the peer's TLS certificate does not name the region it claims"
    PEER_SILENT = "no frame from the peer within the dead interval"
    UNREACHABLE = "the peer cannot be reached"
    STREAM_LOST = "the stream to the peer broke"
    HANDSHAKE_TIMEOUT = "the handshake did not finish in time"
    BAD_FRAME = "the peer sent a frame that cannot be understood"
    PROTOCOL_ERROR = "the peer broke the protocol"
    INTERNAL_ERROR = "a bug in this node's own code (see its log)"
    REFUSED = "the peer refused the link"
    TAKEN_DOWN = "an operator took the link down"
    SHUTDOWN = "the node is stopping"


# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Send:
    frame: lpb.LinkFrame


@dataclass(frozen=True, slots=True)
class Opened:
    peer: str
    # The peer's stored high-water mark of our guaranteed events: resend after it.
    peer_received_upto: int


@dataclass(frozen=True, slots=True)
class Close:
    reason: CloseReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Deliver:
    """An interest, link-state or direct frame for the shell to apply."""

    frame: lpb.LinkFrame


@dataclass(frozen=True, slots=True)
class Store:
    """Guaranteed events to store durably; then call `stored(upto)`."""

    events: list[lpb.GuaranteedEvent]
    upto: int


@dataclass(frozen=True, slots=True)
class Trim:
    """The peer stored everything up to `upto`: delete it from the spool."""

    upto: int


@dataclass(frozen=True, slots=True)
class Resync:
    """Interest digests differ: the shell should ask the peer for a full sync."""


Action = Send | Opened | Close | Deliver | Store | Trim | Resync

# Given a region that says hello, None to accept it or the reason to refuse.
Admission = Callable[[str], CloseReason | None]


class Role(enum.Enum):
    DIALLER = "dialler"
    ACCEPTOR = "acceptor"


def link_proof(
    secret: str,
    *,
    role: Role,
    cluster: str,
    prover: str,
    verifier: str,
    verifier_nonce: bytes,
    prover_nonce: bytes,
) -> bytes:
    """What `prover` shows `verifier` on one stream: it knows the cluster secret.

    The role and the order of the names keep a proof from being reflected back
    or relayed as the other end's; the verifier's nonce makes it fresh.
    """
    head = f"plexus-link-v{PROTOCOL_VERSION}|{role.value}|{cluster}|{PROTOCOL_VERSION}|"
    message = f"{head}{prover}|{verifier}|".encode() + verifier_nonce + prover_nonce
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


class LinkProtocol:
    """One end of one link."""

    def __init__(
        self,
        *,
        cluster: str,
        secret: str,
        region: str,
        dialled_peer: str | None,
        admit: Admission,
        nonce: bytes,
        received_upto: int,
        heartbeat_ms: int,
        dead_after_ms: int,
        now_ms: int,
        send_window: int = DEFAULT_SEND_WINDOW,
        send_window_bytes: int = DEFAULT_SEND_WINDOW_BYTES,
        received_mark: Callable[[str], int] | None = None,
    ) -> None:
        self.cluster = cluster
        self.region = region
        self._secret = secret
        self._admit = admit
        self._nonce = nonce
        # The acceptor, between its hello and the dialler's proof: the peer's hello.
        self._peer_hello: lpb.Hello | None = None
        self.peer = dialled_peer
        self.dialler = dialled_peer is not None
        self.state = LinkState.HANDSHAKE
        self.close_reason: CloseReason | None = None
        self.heartbeat_ms = heartbeat_ms
        self.dead_after_ms = dead_after_ms
        self.started_ms = now_ms
        self.last_heard_ms = now_ms
        self.last_heartbeat_ms = 0
        self.rtt_ms: float | None = None
        # The peer's last heartbeat (its clock) and when it arrived (ours): the
        # next beat echoes both, so round trips need no frames of their own.
        self.peer_beat_sent_ms = 0
        self.peer_beat_heard_ms = 0
        self.local_digest = 0
        self.digest_mismatches = 0
        # Guaranteed events: what we stored from the peer, and our send window.
        self.received_upto = received_upto
        self.stored_pending_upto = received_upto
        self.sent_upto = 0
        self.acked_upto = 0
        self.send_window = send_window
        self.send_window_bytes = send_window_bytes
        # (last link seq, bytes) of each sent, unacked batch, oldest first.
        self._in_flight: deque[tuple[int, int]] = deque()
        self.in_flight_bytes = 0
        # The accepting end learns which peer it has from the hello: then it
        # looks up what it already stored from that peer.
        self._received_mark = received_mark

    # ------------------------------------------------------------ inputs

    def start(self, now_ms: int) -> list[Action]:
        """The stream is connected; the dialler speaks first."""
        return [Send(self._hello())] if self.dialler else []

    def receive(self, frame: lpb.LinkFrame, now_ms: int) -> list[Action]:
        if self.state is LinkState.CLOSED:
            return []
        self.last_heard_ms = now_ms
        kind = frame.WhichOneof("frame")
        if kind is None:
            return self._refuse(CloseReason.BAD_FRAME, "a frame with no content")
        if kind == "refusal":
            return self._close(
                CloseReason.REFUSED, f"{frame.refusal.reason}: {frame.refusal.detail}"
            )
        if self.state is LinkState.HANDSHAKE:
            if self._peer_hello is not None:
                if kind != "proof":
                    return self._refuse(CloseReason.PROTOCOL_ERROR, f"{kind} before the proof")
                return self._on_proof(self._peer_hello, frame.proof.proof)
            if kind != "hello":
                return self._refuse(CloseReason.PROTOCOL_ERROR, f"{kind} before hello")
            return self._on_hello(frame.hello)
        if kind == "proof":
            return self._refuse(CloseReason.PROTOCOL_ERROR, "a proof after the handshake")
        if kind == "hello":
            return self._refuse(CloseReason.PROTOCOL_ERROR, "a second hello")
        if kind == "heartbeat":
            return self._on_heartbeat(frame.heartbeat, now_ms)
        if kind == "guaranteed":
            return self._on_guaranteed(frame.guaranteed.events)
        if kind == "ack":
            return self._on_ack(frame.ack.upto)
        return [Deliver(frame)]

    def tick(self, now_ms: int) -> list[Action]:
        """Heartbeats and silence detection; call again at `next_tick_ms()`."""
        if self.state is LinkState.CLOSED:
            return []
        if self.state is LinkState.HANDSHAKE:
            if now_ms - self.started_ms > self.dead_after_ms:
                return self._close(CloseReason.HANDSHAKE_TIMEOUT, f"{self.dead_after_ms} ms")
            return []
        if now_ms - self.last_heard_ms > self.dead_after_ms:
            silent = now_ms - self.last_heard_ms
            return self._close(CloseReason.PEER_SILENT, f"silent for {silent} ms")
        if now_ms - self.last_heartbeat_ms >= self.heartbeat_ms:
            self.last_heartbeat_ms = now_ms
            beat = lpb.Heartbeat(sent_ms=now_ms, interest_digest=self.local_digest)
            if self.peer_beat_sent_ms:
                beat.echo_ms = self.peer_beat_sent_ms
                beat.echo_held_ms = now_ms - self.peer_beat_heard_ms
            return [Send(lpb.LinkFrame(heartbeat=beat))]
        return []

    def next_tick_ms(self, now_ms: int) -> int | None:
        """When `tick` has something to do next (None once closed): an idle link wakes per beat.

        During the handshake, once a beat too: the link may open meanwhile.
        """
        if self.state is LinkState.CLOSED:
            return None
        if self.state is LinkState.HANDSHAKE:
            return min(self.started_ms + self.dead_after_ms + 1, now_ms + self.heartbeat_ms)
        silent_at = self.last_heard_ms + self.dead_after_ms + 1
        return min(self.last_heartbeat_ms + self.heartbeat_ms, silent_at)

    def stored(self, upto: int) -> list[Action]:
        """Guaranteed events up to `upto` from the peer are durable: ack them."""
        if upto <= self.received_upto:
            return []
        self.received_upto = upto
        if self.state is not LinkState.OPEN:
            return []
        return [Send(lpb.LinkFrame(ack=lpb.LinkAck(upto=upto)))]

    def take_down(self, reason: CloseReason, detail: str = "") -> list[Action]:
        """Close from this side (operator, shutdown, topology change)."""
        if self.state is LinkState.CLOSED:
            return []
        refusal = lpb.Refusal(reason=reason.name, detail=detail or reason.value)
        return [Send(lpb.LinkFrame(refusal=refusal)), *self._close(reason, detail)]

    # ------------------------------------------------------------ send window

    def room(self) -> int:
        """How many more guaranteed events may be sent now (0 while the bytes window is full)."""
        if self.state is not LinkState.OPEN or self.room_bytes() == 0:
            return 0
        return max(0, self.send_window - (self.sent_upto - self.acked_upto))

    def room_bytes(self) -> int:
        """How many more bytes of guaranteed events may be sent now: a batch may overshoot
        by its last event, so one event larger than the window still goes."""
        return max(0, self.send_window_bytes - self.in_flight_bytes)

    def sent(self, upto: int, size: int = 0) -> None:
        if upto <= self.sent_upto:
            return
        self.sent_upto = upto
        self._in_flight.append((upto, size))
        self.in_flight_bytes += size

    # ------------------------------------------------------------ internals

    def _hello(self, proof: bytes = b"") -> lpb.LinkFrame:
        hello = lpb.Hello(
            cluster=self.cluster,
            region=self.region,
            protocol_version=PROTOCOL_VERSION,
            proof=proof,
            nonce=self._nonce,
            received_upto=self.received_upto,
        )
        return lpb.LinkFrame(hello=hello)

    def _proof(self, role: Role, peer: lpb.Hello) -> bytes:
        """This end's proof for the peer, over the peer's nonce."""
        return link_proof(
            self._secret,
            role=role,
            cluster=self.cluster,
            prover=self.region,
            verifier=peer.region,
            verifier_nonce=peer.nonce,
            prover_nonce=self._nonce,
        )

    def _proven(self, role: Role, peer: lpb.Hello, proof: bytes) -> bool:
        """The peer's proof, in `role`, covers our own nonce of this stream."""
        expected = link_proof(
            self._secret,
            role=role,
            cluster=self.cluster,
            prover=peer.region,
            verifier=self.region,
            verifier_nonce=self._nonce,
            prover_nonce=peer.nonce,
        )
        return hmac.compare_digest(expected, proof)

    def _on_hello(self, hello: lpb.Hello) -> list[Action]:
        if hello.cluster != self.cluster:
            return self._refuse(CloseReason.WRONG_CLUSTER, f"peer cluster {hello.cluster!r}")
        if hello.protocol_version != PROTOCOL_VERSION:
            return self._refuse(
                CloseReason.VERSION_MISMATCH,
                f"peer speaks version {hello.protocol_version}, this node {PROTOCOL_VERSION}",
            )
        shortest, longest = NONCE_BYTES
        if not shortest <= len(hello.nonce) <= longest:
            detail = f"a hello nonce of {len(hello.nonce)} bytes, not {shortest}-{longest}"
            return self._refuse(CloseReason.PROTOCOL_ERROR, detail)
        if self.dialler:
            if hello.region != self.peer:
                return self._refuse(
                    CloseReason.WRONG_PEER, f"dialled {self.peer!r}, {hello.region!r} answered"
                )
            if not self._proven(Role.ACCEPTOR, hello, hello.proof):
                return self._refuse(CloseReason.WRONG_SECRET, f"region {hello.region!r}")
            proof = lpb.LinkProof(proof=self._proof(Role.DIALLER, hello))
            return [Send(lpb.LinkFrame(proof=proof)), *self._open(hello)]
        refusal = self._admit(hello.region)
        if refusal is not None:
            return self._refuse(refusal, f"{refusal.value} (region {hello.region!r})")
        if self._received_mark is not None:
            self.received_upto = self.stored_pending_upto = self._received_mark(hello.region)
        # Not open yet: the dialler has proven nothing until it answers our nonce.
        self._peer_hello = hello
        return [Send(self._hello(self._proof(Role.ACCEPTOR, hello)))]

    def _on_proof(self, hello: lpb.Hello, proof: bytes) -> list[Action]:
        if not self._proven(Role.DIALLER, hello, proof):
            return self._refuse(CloseReason.WRONG_SECRET, f"region {hello.region!r}")
        return self._open(hello)

    def _open(self, hello: lpb.Hello) -> list[Action]:
        self._peer_hello = None
        self.peer = hello.region
        self.state = LinkState.OPEN
        self.sent_upto = self.acked_upto = hello.received_upto
        return [Opened(hello.region, hello.received_upto)]

    def _on_heartbeat(self, beat: lpb.Heartbeat, now_ms: int) -> list[Action]:
        actions: list[Action] = []
        if beat.echo_ms:
            self.rtt_ms = float(max(0, now_ms - beat.echo_ms - beat.echo_held_ms))
        if beat.sent_ms:
            self.peer_beat_sent_ms, self.peer_beat_heard_ms = beat.sent_ms, now_ms
            if beat.interest_digest != self.local_digest:
                self.digest_mismatches += 1
                # Two in a row: a single one is often a delta still in flight.
                if self.digest_mismatches == 2:
                    actions.append(Resync())
            else:
                self.digest_mismatches = 0
        return actions

    def _on_guaranteed(self, events: list[lpb.GuaranteedEvent]) -> list[Action]:
        fresh = [e for e in events if e.link_seq > self.stored_pending_upto]
        if not fresh:
            # All duplicates of what we stored: say so again, the first ack was lost.
            return [Send(lpb.LinkFrame(ack=lpb.LinkAck(upto=self.received_upto)))]
        # Sequences only grow (a failed commit on the sender may leave a hole; the
        # stream itself loses nothing, and a new stream resumes from our mark).
        previous = self.stored_pending_upto
        for event in fresh:
            if event.link_seq <= previous:
                return self._refuse(
                    CloseReason.PROTOCOL_ERROR,
                    f"guaranteed event {event.link_seq} after {previous}",
                )
            previous = event.link_seq
        self.stored_pending_upto = fresh[-1].link_seq
        return [Store(fresh, fresh[-1].link_seq)]

    def _on_ack(self, upto: int) -> list[Action]:
        if upto > self.sent_upto:
            return self._refuse(
                CloseReason.PROTOCOL_ERROR, f"ack of {upto}, only {self.sent_upto} sent"
            )
        if upto <= self.acked_upto:
            return []
        self.acked_upto = upto
        while self._in_flight and self._in_flight[0][0] <= upto:
            self.in_flight_bytes -= self._in_flight.popleft()[1]
        return [Trim(upto)]

    def _refuse(self, reason: CloseReason, detail: str) -> list[Action]:
        refusal = lpb.Refusal(reason=reason.name, detail=detail)
        return [Send(lpb.LinkFrame(refusal=refusal)), *self._close(reason, detail)]

    def _close(self, reason: CloseReason, detail: str) -> list[Action]:
        self.state = LinkState.CLOSED
        self.close_reason = reason
        return [Close(reason, detail)]
