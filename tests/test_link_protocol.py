"""The link protocol state machine, frame by frame, through a fake link (no sockets)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from federation.link_protocol import (
    PROTOCOL_VERSION,
    Close,
    CloseReason,
    Deliver,
    LinkProtocol,
    LinkState,
    Opened,
    Resync,
    Role,
    Send,
    Store,
    Trim,
    link_proof,
)
from plexus.v1 import link_pb2 as lpb

HEARTBEAT_MS = 100
DEAD_MS = 600


def end(
    region: str,
    peer: str | None,
    *,
    secret: str = "s3cret",
    cluster: str = "demo",
    received_upto: int = 0,
    admit=lambda region: None,
    now: int = 0,
    window: int = 1000,
) -> LinkProtocol:
    return LinkProtocol(
        cluster=cluster,
        secret=secret,
        region=region,
        dialled_peer=peer,
        admit=admit,
        nonce=region.encode() * 8,
        received_upto=received_upto,
        heartbeat_ms=HEARTBEAT_MS,
        dead_after_ms=DEAD_MS,
        now_ms=now,
        send_window=window,
    )


def sent(actions) -> list[lpb.LinkFrame]:
    return [a.frame for a in actions if isinstance(a, Send)]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def exchange(a: LinkProtocol, b: LinkProtocol, actions_of_a, now: int = 0):
    """Deliver a's frames to b and back until quiet; returns every action of both ends."""
    seen = {id(a): list(actions_of_a), id(b): []}
    queue = [(b, f) for f in sent(actions_of_a)]
    while queue:
        target, frame = queue.pop(0)
        other = a if target is b else b
        actions = target.receive(frame, now)
        seen[id(target)].extend(actions)
        queue.extend((other, f) for f in sent(actions))
    return seen[id(a)], seen[id(b)]


def connect(a: LinkProtocol, b: LinkProtocol):
    return exchange(a, b, a.start(0))


def guaranteed(*seqs: int) -> lpb.LinkFrame:
    events = [lpb.GuaranteedEvent(link_seq=s, destinations=["eu"], event=b"e%d" % s) for s in seqs]
    return lpb.LinkFrame(guaranteed=lpb.GuaranteedBatch(events=events))


# ------------------------------------------------------------------ handshake


def test_handshake_opens_both_ends_with_each_others_high_water_marks():
    us, eu = end("eu", "us", received_upto=5), end("us", None, received_upto=9)
    a_actions, b_actions = connect(us, eu)
    assert us.state is eu.state is LinkState.OPEN
    assert of(a_actions, Opened) == [Opened("us", 9)]
    assert of(b_actions, Opened) == [Opened("eu", 5)]
    assert eu.peer == "eu" and us.peer == "us"


def test_acceptor_waits_for_hello_and_dialler_speaks_first():
    assert end("us", None).start(0) == []
    (frame,) = sent(end("eu", "us").start(0))
    assert frame.hello.region == "eu" and frame.hello.protocol_version == PROTOCOL_VERSION


def test_the_secret_never_travels_only_proofs_over_the_peers_nonce():
    dialler, acceptor = end("eu", "us", secret="topsecret"), end("us", None, secret="topsecret")
    (hello,) = sent(dialler.start(0))
    (answer,) = sent(acceptor.receive(hello, 0))
    (proof,) = sent(dialler.receive(answer, 0))
    for frame in (hello, answer, proof):
        assert b"topsecret" not in frame.SerializeToString()
    assert hello.hello.proof == b""  # the dialler proves nothing before it is challenged
    common = {"cluster": "demo", "verifier_nonce": b"eu" * 8, "prover_nonce": b"us" * 8}
    assert answer.hello.proof == link_proof(
        "topsecret", role=Role.ACCEPTOR, prover="us", verifier="eu", **common
    )
    assert proof.proof.proof == link_proof(
        "topsecret",
        role=Role.DIALLER,
        cluster="demo",
        prover="eu",
        verifier="us",
        verifier_nonce=b"us" * 8,
        prover_nonce=b"eu" * 8,
    )


def test_acceptor_opens_only_once_the_dialler_proved_it_over_the_acceptors_nonce():
    dialler, acceptor = end("eu", "us"), end("us", None)
    (hello,) = sent(dialler.start(0))
    answer = acceptor.receive(hello, 0)
    assert acceptor.state is LinkState.HANDSHAKE and not of(answer, Opened)
    dialler_actions = dialler.receive(sent(answer)[0], 0)
    assert dialler.state is LinkState.OPEN and of(dialler_actions, Opened)
    assert of(acceptor.receive(sent(dialler_actions)[0], 0), Opened) == [Opened("eu", 0)]


def recorded_handshake() -> tuple[lpb.LinkFrame, lpb.LinkFrame]:
    """The dialler's hello and proof of a real handshake, as an eavesdropper saw them."""
    dialler, acceptor = end("eu", "us"), end("us", None)
    (hello,) = sent(dialler.start(0))
    (answer,) = sent(acceptor.receive(hello, 0))
    (proof,) = sent(dialler.receive(answer, 0))
    return hello, proof


def acceptor_with_fresh_nonce() -> LinkProtocol:
    fresh = end("us", None)
    fresh._nonce = b"fresh-nonce-0123"
    return fresh


def test_a_replayed_hello_and_proof_are_refused_by_an_acceptor_with_a_fresh_nonce():
    hello, proof = recorded_handshake()
    acceptor = acceptor_with_fresh_nonce()
    acceptor.receive(hello, 0)
    actions = acceptor.receive(proof, 0)
    assert not of(actions, Opened) and acceptor.state is LinkState.CLOSED
    assert of(actions, Close)[0].reason is CloseReason.WRONG_SECRET


def test_a_replayed_hello_alone_never_opens_and_frames_instead_of_the_proof_close():
    hello, _ = recorded_handshake()
    acceptor = acceptor_with_fresh_nonce()
    acceptor.receive(hello, 0)
    ack = lpb.LinkFrame(ack=lpb.LinkAck(upto=5))
    actions = acceptor.receive(ack, 0)
    assert not of(actions, Trim) and of(actions, Close)[0].reason is CloseReason.PROTOCOL_ERROR
    silent = acceptor_with_fresh_nonce()
    silent.receive(hello, 0)
    assert of(silent.tick(DEAD_MS + 1), Close)[0].reason is CloseReason.HANDSHAKE_TIMEOUT


def test_an_acceptors_proof_reflected_back_as_the_diallers_is_refused():
    dialler, acceptor = end("eu", "us"), end("us", None)
    (hello,) = sent(dialler.start(0))
    (answer,) = sent(acceptor.receive(hello, 0))
    reflected = lpb.LinkFrame(proof=lpb.LinkProof(proof=answer.hello.proof))
    assert of(acceptor.receive(reflected, 0), Close)[0].reason is CloseReason.WRONG_SECRET


def test_a_dialler_refuses_an_acceptor_whose_proof_is_not_over_its_nonce():
    dialler = end("eu", "us")
    dialler.start(0)
    other_dialler, acceptor = end("eu", "us"), end("us", None)
    other_dialler._nonce = b"another-nonce-01"
    (answer,) = sent(acceptor.receive(sent(other_dialler.start(0))[0], 0))
    actions = dialler.receive(answer, 0)
    assert not of(actions, Opened) and of(actions, Close)[0].reason is CloseReason.WRONG_SECRET


def test_a_proof_for_another_cluster_or_version_does_not_hold():
    common = {
        "role": Role.DIALLER,
        "prover": "eu",
        "verifier": "us",
        "verifier_nonce": b"n1",
        "prover_nonce": b"n2",
    }
    proof = link_proof("s", cluster="demo", **common)
    assert proof != link_proof("s", cluster="other", **common)
    assert proof != link_proof("s", cluster="demo", **{**common, "prover": "us", "verifier": "eu"})


def refused_with(dialler: LinkProtocol, acceptor: LinkProtocol) -> tuple[CloseReason, CloseReason]:
    a_actions, b_actions = connect(dialler, acceptor)
    assert dialler.state is acceptor.state is LinkState.CLOSED
    (refusal,) = [f.refusal for f in sent(b_actions) if f.HasField("refusal")]
    assert refusal.detail
    return of(a_actions, Close)[0].reason, of(b_actions, Close)[0].reason


def test_wrong_secret_is_refused_by_the_dialler_first_and_both_ends_say_why():
    # The acceptor proves first: a dialler with another secret cannot check its proof.
    dialler, acceptor = end("eu", "us", secret="nope"), end("us", None)
    a_actions, b_actions = connect(dialler, acceptor)
    assert dialler.state is acceptor.state is LinkState.CLOSED
    (refusal,) = [f.refusal for f in sent(a_actions) if f.HasField("refusal")]
    assert refusal.reason == "WRONG_SECRET" and "us" in refusal.detail
    assert of(b_actions, Close)[0].reason is CloseReason.REFUSED


def test_wrong_cluster_is_refused():
    _, theirs = refused_with(end("eu", "us", cluster="other"), end("us", None))
    assert theirs is CloseReason.WRONG_CLUSTER


def test_other_protocol_version_is_refused():
    acceptor = end("us", None)
    hello = sent(end("eu", "us").start(0))[0]
    hello.hello.protocol_version = 99
    actions = acceptor.receive(hello, 0)
    assert of(actions, Close)[0].reason is CloseReason.VERSION_MISMATCH


def test_acceptor_refuses_a_region_the_node_does_not_admit():
    acceptor = end("us", None, admit=lambda r: CloseReason.UNKNOWN_REGION)
    _, theirs = refused_with(end("mars", "us"), acceptor)
    assert theirs is CloseReason.UNKNOWN_REGION


def test_dialler_refuses_a_different_region_answering():
    dialler = end("eu", "us")
    impostor = end("ap", None)
    a_actions, _ = connect(dialler, impostor)
    assert of(a_actions, Close)[0].reason is CloseReason.WRONG_PEER


def test_a_hello_with_a_short_nonce_is_refused():
    hello = sent(end("eu", "us").start(0))[0]
    hello.hello.nonce = b"x" * 8
    actions = end("us", None).receive(hello, 0)
    assert of(actions, Close)[0].reason is CloseReason.PROTOCOL_ERROR


def test_a_proof_after_the_handshake_closes_the_link():
    _, b = opened()
    frame = lpb.LinkFrame(proof=lpb.LinkProof(proof=b"x"))
    assert of(b.receive(frame, 0), Close)[0].reason is CloseReason.PROTOCOL_ERROR


def test_frames_before_hello_and_empty_frames_close_the_link():
    acceptor = end("us", None)
    assert of(acceptor.receive(guaranteed(1), 0), Close)[0].reason is CloseReason.PROTOCOL_ERROR
    other = end("us", None)
    assert of(other.receive(lpb.LinkFrame(), 0), Close)[0].reason is CloseReason.BAD_FRAME


def test_closed_end_ignores_everything():
    acceptor = end("us", None)
    acceptor.receive(lpb.LinkFrame(), 0)
    assert acceptor.receive(guaranteed(1), 1) == [] and acceptor.tick(10_000) == []


# ------------------------------------------------------------------ liveness


def opened() -> tuple[LinkProtocol, LinkProtocol]:
    a, b = end("eu", "us"), end("us", None)
    connect(a, b)
    return a, b


def test_heartbeats_go_out_every_interval_and_the_next_beat_echoes_for_round_trip():
    a, b = opened()
    (beat,) = sent(a.tick(HEARTBEAT_MS))
    assert a.tick(HEARTBEAT_MS + 10) == []
    assert sent(b.receive(beat, HEARTBEAT_MS + 3)) == []  # no frame just to echo
    (answer,) = sent(b.tick(HEARTBEAT_MS + 53))  # b's own beat, 50 ms later
    assert answer.heartbeat.echo_held_ms == 50
    a.receive(answer, HEARTBEAT_MS + 57)
    assert a.rtt_ms == 7


def test_silent_peer_is_declared_down_within_the_dead_interval():
    a, _ = opened()
    assert not of(a.tick(DEAD_MS), Close)
    (close,) = of(a.tick(DEAD_MS + 1), Close)
    assert close.reason is CloseReason.PEER_SILENT and a.state is LinkState.CLOSED


def test_next_tick_is_the_next_heartbeat_or_the_silence_deadline():
    a, _ = opened()
    assert a.next_tick_ms(0) == HEARTBEAT_MS
    sent(a.tick(HEARTBEAT_MS))
    assert a.next_tick_ms(HEARTBEAT_MS) == 2 * HEARTBEAT_MS
    a.tick(DEAD_MS + 1)
    assert a.state is LinkState.CLOSED and a.next_tick_ms(DEAD_MS + 1) is None


def test_a_handshake_is_looked_at_each_beat_until_its_deadline():
    a = end("eu", "us")
    a.start(0)
    assert a.next_tick_ms(0) == HEARTBEAT_MS
    assert a.next_tick_ms(DEAD_MS - 10) == DEAD_MS + 1


def test_handshake_that_never_finishes_times_out():
    a = end("eu", "us")
    a.start(0)
    assert of(a.tick(DEAD_MS + 1), Close)[0].reason is CloseReason.HANDSHAKE_TIMEOUT


def test_digest_mismatch_twice_in_a_row_asks_for_a_resync():
    a, b = opened()
    a.local_digest, b.local_digest = 1, 2
    first = sent(a.tick(HEARTBEAT_MS))[0]
    assert not of(b.receive(first, HEARTBEAT_MS), Resync)
    second = sent(a.tick(2 * HEARTBEAT_MS))[0]
    assert of(b.receive(second, 2 * HEARTBEAT_MS), Resync)
    b.local_digest = 1
    third = sent(a.tick(3 * HEARTBEAT_MS))[0]
    assert not of(b.receive(third, 3 * HEARTBEAT_MS), Resync) and b.digest_mismatches == 0


def test_interest_and_event_frames_are_handed_up():
    _, b = opened()
    frame = lpb.LinkFrame(interest_delta=lpb.InterestDelta(region="eu", version=2, added=["x/>"]))
    assert b.receive(frame, 1) == [Deliver(frame)]


def test_take_down_tells_the_peer():
    a, b = opened()
    actions = a.take_down(CloseReason.TAKEN_DOWN)
    assert of(actions, Close)[0].reason is CloseReason.TAKEN_DOWN
    (frame,) = sent(actions)
    assert of(b.receive(frame, 1), Close)[0].reason is CloseReason.REFUSED


# ------------------------------------------------------------------ guaranteed


def test_guaranteed_events_are_stored_then_acked_then_trimmed():
    a, b = opened()
    assert a.room() == 1000
    a.sent(3)
    assert a.room() == 997
    (store,) = of(b.receive(guaranteed(1, 2, 3), 1), Store)
    assert [e.link_seq for e in store.events] == [1, 2, 3] and store.upto == 3
    (ack,) = sent(b.stored(3))
    assert of(a.receive(ack, 2), Trim) == [Trim(3)] and a.room() == 1000


def test_the_send_window_is_bounded_in_bytes_as_well_as_events():
    a = end("eu", "us")
    a.send_window_bytes = 1_000
    b = end("us", None)
    connect(a, b)
    a.sent(2, 600)
    assert a.room() == 998 and a.room_bytes() == 400
    a.sent(3, 600)  # a batch may overshoot by its last event
    assert a.room_bytes() == 0 and a.room() == 0
    b.receive(guaranteed(1, 2), 1)
    (ack,) = sent(b.stored(2))
    a.receive(ack, 2)
    assert a.in_flight_bytes == 600 and a.room_bytes() == 400  # batch 3 is still out
    b.receive(guaranteed(3), 3)
    (ack,) = sent(b.stored(3))
    a.receive(ack, 4)
    assert a.in_flight_bytes == 0 and a.room() == 1000 and a.room_bytes() == 1_000


def test_duplicates_after_a_lost_ack_are_not_stored_again_but_acked_again():
    a, b = opened()
    a.sent(2)
    b.receive(guaranteed(1, 2), 1)
    b.stored(2)  # the ack is lost
    actions = b.receive(guaranteed(1, 2), 2)
    assert not of(actions, Store)
    assert [f.ack.upto for f in sent(actions)] == [2]


def test_partly_duplicate_batch_stores_only_the_new_events():
    _, b = opened()
    b.receive(guaranteed(1, 2), 1)
    (store,) = of(b.receive(guaranteed(2, 3), 2), Store)
    assert [e.link_seq for e in store.events] == [3]


def test_link_sequences_going_backwards_close_the_link():
    _, b = opened()
    assert of(b.receive(guaranteed(3, 2), 1), Close)[0].reason is CloseReason.PROTOCOL_ERROR


def test_a_hole_in_link_sequences_is_accepted():
    _, b = opened()
    (store,) = of(b.receive(guaranteed(1, 3), 1), Store)
    assert [e.link_seq for e in store.events] == [1, 3]


def test_an_ack_for_more_than_was_sent_closes_the_link():
    a, _ = opened()
    a.sent(2)
    frame = lpb.LinkFrame(ack=lpb.LinkAck(upto=5))
    assert of(a.receive(frame, 1), Close)[0].reason is CloseReason.PROTOCOL_ERROR


def test_reconnect_resumes_after_what_the_receiver_stored():
    a, b = opened()
    a.sent(4)
    b.receive(guaranteed(1, 2, 3, 4), 1)
    b.stored(2)  # crash before 3 and 4 were durable
    a2, b2 = end("eu", "us"), end("us", None, received_upto=b.received_upto)
    a_actions, _ = connect(a2, b2)
    assert of(a_actions, Opened) == [Opened("us", 2)]
    assert a2.sent_upto == a2.acked_upto == 2


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 5), st.booleans(), st.booleans()), max_size=40))
def test_every_event_is_stored_once_in_order_whatever_is_lost_or_repeated(steps):
    """Batches are lost, duplicated and links cut; the receiver ends with 1..N stored once each."""
    spool: list[int] = []  # sender's spool: link seqs not yet trimmed
    next_seq = 1
    stored: list[int] = []
    receiver_upto = 0
    a, b = end("eu", "us"), end("us", None)
    connect(a, b)
    for size, lose, cut in [*steps, (0, False, True), (0, False, False)]:
        spool.extend(range(next_seq, next_seq + size))
        next_seq += size
        # The sender sends what the window allows, starting after what was acked.
        outstanding = [s for s in spool if s > a.sent_upto][: a.room()]
        if outstanding:
            a.sent(outstanding[-1])
            frame = guaranteed(*outstanding)
            if not lose:
                for action in b.receive(frame, 0):
                    if isinstance(action, Store):
                        stored.extend(e.link_seq for e in action.events)
                        for f in sent(b.stored(action.upto)):
                            for back in a.receive(f, 0):
                                if isinstance(back, Trim):
                                    spool = [s for s in spool if s > back.upto]
                    elif isinstance(action, Send):
                        for back in a.receive(action.frame, 0):
                            if isinstance(back, Trim):
                                spool = [s for s in spool if s > back.upto]
        if cut or lose:
            receiver_upto = b.received_upto
            a, b = end("eu", "us"), end("us", None, received_upto=receiver_upto)
            connect(a, b)
            spool = [s for s in spool if s > a.acked_upto]
    assert stored == list(range(1, next_seq))
