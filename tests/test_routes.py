"""Routing between regions: shortest paths, rerouting, and forwarding that never loops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import chain, combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.routes import RouteTable

Link = frozenset[str]


def links(*pairs: str) -> set[Link]:
    """links("us-eu", "eu-ap") -> {{us, eu}, {eu, ap}}."""
    return {frozenset(pair.split("-")) for pair in pairs}


def table(region: str, up: Iterable[Link], regions: Iterable[str] = ()) -> RouteTable:
    routes = RouteTable(region)
    routes.update(up, regions)
    return routes


CHAIN = links("a-b", "b-c", "c-d", "d-e")
RING = links("a-b", "b-c", "c-d", "d-e", "e-f", "f-a")
HUB = links("hub-s1", "hub-s2", "hub-s3")
FULL = {frozenset(pair) for pair in combinations("abcd", 2)}
PARTIAL = links("a-b", "a-c", "b-c", "c-d", "d-e", "b-e")


def test_chain_goes_through_every_middle_region():
    routes = table("a", CHAIN)
    assert routes.path("e") == ["a", "b", "c", "d", "e"]
    assert {routes.next_hop(r) for r in "bcde"} == {"b"}
    assert table("c", CHAIN).path("a") == ["c", "b", "a"]
    assert table("c", CHAIN).split("abde") == (
        {"b": frozenset("ab"), "d": frozenset("de")},
        frozenset(),
    )


def test_ring_goes_the_short_way_and_ties_break_by_name():
    routes = table("a", RING)
    assert routes.path("c") == ["a", "b", "c"]
    assert routes.path("e") == ["a", "f", "e"]
    # d is three hops either way: the path through the smaller first hop wins,
    # the same answer on every node with this view.
    assert routes.path("d") == ["a", "b", "c", "d"]


def test_ring_with_one_link_down_reroutes_the_long_way():
    routes = table("a", RING)
    routes.update(RING - links("b-c"))
    assert routes.path("c") == ["a", "f", "e", "d", "c"]
    assert routes.next_hop("b") == "b"
    routes.update(RING)
    assert routes.path("c") == ["a", "b", "c"]


def test_hub_and_spoke_crosses_the_hub():
    spoke = table("s1", HUB)
    assert spoke.path("s3") == ["s1", "hub", "s3"]
    assert spoke.split(["s2", "s3", "hub"]) == (
        {"hub": frozenset({"s2", "s3", "hub"})},
        frozenset(),
    )
    assert table("hub", HUB).split(["s1", "s2"])[0] == {
        "s1": frozenset({"s1"}),
        "s2": frozenset({"s2"}),
    }


def test_full_mesh_is_one_hop_everywhere():
    routes = table("a", FULL)
    assert all(routes.path(r) == ["a", r] for r in "bcd")
    assert routes.reachable() == frozenset("bcd")


def test_partial_mesh_takes_shortest_paths():
    routes = table("a", PARTIAL)
    assert routes.path("d") == ["a", "c", "d"]
    assert routes.path("e") == ["a", "b", "e"]
    assert routes.split("bcde")[0] == {"b": frozenset("be"), "c": frozenset("cd")}


def test_partitioned_regions_are_unreachable():
    routes = table("a", CHAIN - links("c-d"))
    assert routes.reachable() == frozenset("bc")
    assert routes.next_hop("d") is None
    assert routes.path("e") == []
    assert routes.split("bde") == ({"b": frozenset("b")}, frozenset("de"))


def test_a_region_without_links_reaches_nothing_and_unknown_regions_are_unreachable():
    routes = RouteTable("a")
    assert routes.reachable() == frozenset()
    assert routes.path("a") == ["a"]
    assert routes.next_hop("a") is None
    assert routes.split(["a", "zz"]) == ({}, frozenset({"zz"}))
    assert routes.forward(["a"]).local


def test_split_never_returns_a_visited_next_hop_and_detours_around_visited_regions():
    routes = table("a", RING)
    # The short way to c is through b; with b visited the event goes the long way.
    assert routes.split("c", visited="b") == ({"f": frozenset("c")}, frozenset())
    # With b and e visited nothing reaches c or d.
    assert routes.split("cd", visited="be") == ({}, frozenset("cd"))
    # A visited destination is never entered again.
    assert routes.split("b", visited="ab") == ({}, frozenset("b"))


def test_forward_gives_each_copy_only_its_own_subtree():
    routes = table("c", CHAIN)
    plan = routes.forward("abde", visited=())
    assert not plan.local and not plan.unreachable
    to_b, to_d = plan.copies
    assert (to_b.next_hop, to_b.destinations) == ("b", frozenset("ab"))
    assert (to_d.next_hop, to_d.destinations) == ("d", frozenset("de"))
    # A copy may never enter where it came from or where its sibling goes.
    assert to_b.visited == frozenset("cde")
    assert to_d.visited == frozenset("abc")


def test_a_lone_copy_may_detour_through_any_region_it_has_not_crossed():
    plan = table("a", RING).forward("c", visited="x")
    (copy,) = plan.copies
    assert copy.visited == frozenset("ax")


def test_bad_links_are_refused():
    with pytest.raises(ValueError, match="two different regions"):
        RouteTable("a").update([frozenset("a")])


def test_update_with_the_same_links_keeps_the_version():
    routes = table("a", RING)
    version = routes.version
    routes.update(set(RING))
    assert routes.version == version
    routes.update(RING - links("a-b"))
    assert routes.version == version + 1


# --- forwarding simulated across every node, each with its own view ---


@st.composite
def connected_graphs(draw: st.DrawFn) -> tuple[list[str], set[Link]]:
    """4-7 regions (names shuffled so ties fall differently), a spanning tree plus extra links."""
    n = draw(st.integers(4, 7))
    names = draw(st.permutations(["ap", "eu", "us", "sa", "af", "me", "oc"]))[:n]
    graph = {frozenset((names[i], names[draw(st.integers(0, i - 1))])) for i in range(1, n)}
    extra = [frozenset(pair) for pair in combinations(names, 2) if frozenset(pair) not in graph]
    graph |= {link for link in extra if draw(st.booleans())}
    return list(names), graph


def simulate(
    tables: dict[str, RouteTable], origin: str, dests: frozenset[str], graph: set[Link]
) -> tuple[Counter[str], Counter[str], int]:
    """Forward one event from `origin` with each node's own table, carrying `visited`.

    Returns how often each region received the event, how often each delivered
    it locally, and the hops taken by the longest delivery.
    """
    received: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    longest = 0
    pending = [(origin, dests, frozenset[str](), 0)]
    while pending:
        region, wanted, visited, hops = pending.pop()
        plan = tables[region].forward(wanted, visited)
        if plan.local:
            delivered[region] += 1
            longest = max(longest, hops)
        for copy in plan.copies:
            assert frozenset((region, copy.next_hop)) in graph, "sent over a link that is not there"
            assert copy.next_hop not in visited
            assert region in copy.visited, "a copy must never come back"
            received[copy.next_hop] += 1
            assert received[copy.next_hop] == 1, f"{copy.next_hop} received the event twice"
            pending.append((copy.next_hop, copy.destinations, copy.visited, hops + 1))
    return received, delivered, longest


def destination_sets(names: list[str], origin: str) -> Iterable[frozenset[str]]:
    others = [n for n in names if n != origin]
    subsets = chain.from_iterable(combinations(others, k) for k in range(1, len(others) + 1))
    return (frozenset(s) for s in subsets)


@settings(max_examples=80, deadline=None)
@given(connected_graphs(), st.data())
def test_no_region_ever_receives_an_event_twice_while_views_disagree(graph_, data):
    names, graph = graph_
    ordered = sorted(graph, key=sorted)
    # Each node sees its own random subset of the links as up: a flap in progress. Every
    # node knows the cluster's regions (the membership), whatever links it sees.
    tables = {
        name: table(
            name,
            [link for link in ordered if data.draw(st.booleans(), label=f"{name} sees")],
            names,
        )
        for name in names
    }
    for origin in names:
        for dests in destination_sets(names, origin):
            _, delivered, _ = simulate(tables, origin, dests, graph)
            assert set(delivered) <= dests
            assert all(count == 1 for count in delivered.values())


@settings(max_examples=80, deadline=None)
@given(connected_graphs())
def test_with_one_view_every_destination_gets_exactly_one_copy_over_shortest_paths(graph_):
    names, graph = graph_
    tables = {name: table(name, graph) for name in names}
    for origin in names:
        distance = {r: len(tables[origin].path(r)) - 1 for r in names}
        for dests in destination_sets(names, origin):
            received, delivered, longest = simulate(tables, origin, dests, graph)
            assert delivered == Counter(dests)
            assert longest == max(distance[d] for d in dests)
            # Only regions on the way to a destination see the event.
            on_paths = {r for d in dests for r in tables[origin].path(d)} - {origin}
            assert set(received) <= on_paths | set(dests)


@settings(max_examples=60, deadline=None)
@given(connected_graphs(), st.data())
def test_split_with_the_path_so_far_never_loops_a_copy(graph_, data):
    """The weaker rule alone (visited = path so far) already keeps each copy loop-free
    and each destination delivered at most once."""
    names, graph = graph_
    ordered = sorted(graph, key=sorted)
    tables = {
        name: table(
            name, [link for link in ordered if data.draw(st.booleans(), label=f"{name} sees")]
        )
        for name in names
    }
    origin = data.draw(st.sampled_from(names))
    dests = frozenset(data.draw(st.sets(st.sampled_from(names), min_size=1)))
    delivered: Counter[str] = Counter()
    pending: list[tuple[str, frozenset[str], tuple[str, ...]]] = [(origin, dests, (origin,))]
    while pending:
        region, wanted, path = pending.pop()
        if region in wanted:
            delivered[region] += 1
        groups, _ = tables[region].split(wanted, visited=path)
        for hop, group in groups.items():
            assert hop not in path, "a copy came back"
            assert frozenset((region, hop)) in graph
            pending.append((hop, group, (*path, hop)))
    assert set(delivered) <= dests
    assert all(count == 1 for count in delivered.values())
