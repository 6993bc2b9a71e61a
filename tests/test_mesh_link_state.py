"""Link states flooded between meshes: a link coming up never makes routes flap.

Three `Mesh`es wired by in-memory links that deliver frames in order, as a link
stream does; the links open and close as the supervisor would tell them to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from federation.mesh import Mesh
from plexus.v1 import link_pb2 as lpb
from tests.harness import DroppingDelivery


class _Wire:
    """One end of an in-memory link: frames wait in the network until `deliver`."""

    def __init__(self, network: _Network, here: Mesh, peer: str) -> None:
        self.network, self.here, self.peer = network, here, peer

    def send(self, frame: lpb.LinkFrame) -> None:
        self.network.in_flight.append((self.network.meshes[self.peer], self.here.region, frame))

    def send_direct(self, frame: lpb.LinkFrame, count: int) -> None:
        self.send(frame)

    def set_digest(self, digest: int) -> None:
        pass

    def replaced(self) -> None:
        pass


class _Network:
    def __init__(self, regions: list[str]) -> None:
        self.meshes = {r: Mesh(r, DroppingDelivery()) for r in regions}
        self.in_flight: deque[tuple[Mesh, str, lpb.LinkFrame]] = deque()
        self.wires: dict[tuple[str, str], _Wire] = {}

    def open(self, a: str, b: str) -> None:
        for here, peer in ((a, b), (b, a)):
            wire = _Wire(self, self.meshes[here], peer)
            self.wires[(here, peer)] = wire
            self.meshes[here].link_opened(wire)

    def close(self, a: str, b: str) -> None:
        for here, peer in ((a, b), (b, a)):
            wire = self.wires.pop((here, peer))
            self.meshes[here].link_closed(wire, "taken_down")
        # What was on the wire is lost with the stream.
        self.in_flight = deque(f for f in self.in_flight if {f[0].region, f[1]} != {a, b})

    def deliver(self, watch: Callable[[], None] = lambda: None) -> None:
        """Every frame in flight, and those they cause, in order; `watch` after each."""
        while self.in_flight:
            mesh, sender, frame = self.in_flight.popleft()
            if (mesh.region, sender) in self.wires:
                mesh.received(self.wires[(mesh.region, sender)], frame)
                watch()


def test_a_link_that_comes_up_never_takes_a_region_out_of_reach_on_the_way() -> None:
    """us learns that ap-eu is up again; eu's state from while it was cut off must not
    reach us after that and take eu out of reach for a moment (it once did: eu sent
    that old state in its full sync, and ap flooded it on)."""
    net = _Network(["ap", "eu", "us"])
    for a, b in [("ap", "eu"), ("ap", "us"), ("eu", "us")]:
        net.open(a, b)
        net.deliver()
    us = net.meshes["us"]
    assert us.routes.path("eu") == ["us", "eu"]

    net.close("eu", "us")
    net.deliver()
    net.close("ap", "eu")  # eu is cut off: its newest state reaches nobody
    net.deliver()
    assert "eu" not in us.routes.reachable()

    net.open("ap", "eu")
    seen: list[list[str]] = []

    def watch() -> None:
        path = us.routes.path("eu")
        if not seen or seen[-1] != path:
            seen.append(path)

    net.deliver(watch)
    assert seen[-1] == ["us", "ap", "eu"]
    assert [] not in seen[seen.index(["us", "ap", "eu"]) :], f"eu's route flapped: {seen}"


def test_the_new_peer_hears_our_state_with_the_link_and_the_others_hear_it_once() -> None:
    net = _Network(["ap", "eu", "us"])
    net.open("eu", "us")
    net.deliver()
    sent_before = len(net.in_flight)
    assert sent_before == 0
    net.open("ap", "us")

    def states_from_us(to: str) -> list[list[str]]:
        return [
            sorted(frame.link_state.up)
            for mesh, sender, frame in net.in_flight
            if sender == "us" and mesh.region == to and frame.link_state.region == "us"
        ]

    assert states_from_us("ap") == [["ap", "eu"]]
    assert states_from_us("eu") == [["ap", "eu"]]
