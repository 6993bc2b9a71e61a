"""The topology drawing and the tail's sampling, pure: no terminal, no node."""

from __future__ import annotations

import pytest

from plexus.tui.model import LinkState, Mesh, RegionState
from plexus.tui.rates import Rates
from plexus.tui.tail import Sampler
from plexus.tui.topology import Layout, choose_layout, draw, fmt_rate

SHAPES = ("chain", "ring", "hub-and-spoke", "full-mesh")
SIZES = ((80, 19), (120, 30), (200, 50))


def names_of(n: int) -> list[str]:
    return ["us", "eu", "ap"] if n == 3 else [f"r{i:02d}" for i in range(n)]


def links_of(shape: str, names: list[str]) -> list[tuple[str, str]]:
    n = len(names)
    if shape == "chain":
        return [(names[i], names[i + 1]) for i in range(n - 1)]
    if shape == "ring":
        return [(names[i], names[(i + 1) % n]) for i in range(n)]
    if shape == "hub-and-spoke":
        return [(names[0], other) for other in names[1:]]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def mesh_of(shape: str, n: int, states: tuple[str, ...] = ("up",)) -> Mesh:
    names = names_of(n)
    links = links_of(shape, names)
    return Mesh(
        cluster="test",
        regions=tuple(
            RegionState(name, f"127.0.0.1:{7000 + i}", True) for i, name in enumerate(names)
        ),
        links=tuple(
            LinkState(a, b, states[i % len(states)], rate_ab=1200.0, rate_ba=3.0)
            for i, (a, b) in enumerate(links)
        ),
    )


EXPECTED = {
    ("chain", 3): Layout.CHAIN,
    ("chain", 7): Layout.CHAIN,
    ("chain", 12): Layout.CHAIN,
    ("ring", 3): Layout.RING,
    ("ring", 7): Layout.RING,
    ("ring", 12): Layout.RING,
    ("hub-and-spoke", 3): Layout.CHAIN,  # a hub with two spokes is a chain
    ("hub-and-spoke", 7): Layout.HUB,
    ("hub-and-spoke", 12): Layout.HUB,
    ("full-mesh", 3): Layout.RING,  # three regions all linked are a triangle
    ("full-mesh", 7): Layout.MATRIX,
    ("full-mesh", 12): Layout.MATRIX,
}


@pytest.mark.parametrize(("shape", "n"), list(EXPECTED))
def test_layout_follows_the_shape(shape: str, n: int):
    mesh = mesh_of(shape, n)
    assert (
        choose_layout([r.name for r in mesh.regions], [k.key for k in mesh.links])
        is (EXPECTED[shape, n])
    )


@pytest.mark.parametrize(("shape", "n"), list(EXPECTED))
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_region_is_drawn_once_inside_the_space(shape: str, n: int, width: int, height: int):
    mesh = mesh_of(shape, n)
    lines = draw(mesh, width, height).plain.split("\n")
    assert len(lines) <= height
    assert all(len(line) <= width for line in lines), "a line runs past the width"
    labels = [word for line in lines for word in line.split() if word in set(names_of(n))]
    if choose_layout([r.name for r in mesh.regions], [k.key for k in mesh.links]) is Layout.MATRIX:
        assert sorted(labels) == sorted(names_of(n) * 2)  # a column and a row each
    else:
        assert sorted(labels) == sorted(names_of(n))


@pytest.mark.parametrize(("shape", "n"), [(s, n) for s in SHAPES[:3] for n in (3, 7, 12)])
def test_a_drawing_marks_every_link_once_with_its_state(shape: str, n: int):
    mesh = mesh_of(shape, n, states=("up", "down", "connecting"))
    text = draw(mesh, 80, 19).plain
    marks = {state: sum(k.state == state for k in mesh.links) for state in ("up", "down")}
    # Region labels carry ● too: count link marks as those not followed by a name.
    assert text.count("○") == marks["down"]
    assert text.count("◌") == sum(k.state == "connecting" for k in mesh.links)
    assert text.count("●") == len(mesh.regions) + marks["up"]


def test_a_chain_shows_the_rate_each_way_with_arrows_along_the_flow():
    mesh = Mesh(
        "t",
        (RegionState("us", "", True), RegionState("eu", "", True)),
        (LinkState("us", "eu", "up", rate_ab=1200.0, rate_ba=3.0),),
    )
    text = draw(mesh, 80, 5).plain
    assert "● us ───●─── ● eu" in text
    assert "→1.2k ←3" in text  # us is on the left: its 1.2k/s flow right
    flipped = Mesh("t", mesh.regions[::-1], mesh.links)
    assert "←1.2k" in draw(flipped, 80, 5).plain  # eu on the left now: us's flow points left


def test_a_link_that_is_not_up_is_dotted_and_says_so():
    mesh = Mesh(
        "t",
        (RegionState("us", "", True), RegionState("eu", "", False)),
        (LinkState("us", "eu", "down", held_down=True),),
    )
    text = draw(mesh, 80, 5).plain
    assert "● us ···○··· ○ eu" in text
    assert "held down" in text


def test_the_matrix_reads_row_to_column():
    mesh = mesh_of("full-mesh", 7)
    lines = draw(mesh, 80, 19).plain.split("\n")
    assert lines[0].split() == names_of(7)
    r00 = lines[1].split()
    assert r00[:3] == ["●", "r00", "·"]
    assert r00[3:5] == ["●", "1.2k"]  # r00 → r01: the a→b rate
    r01 = lines[2].split()
    assert r01[2:4] == ["●", "3"]  # r01 → r00: the b→a rate


def test_a_crowded_drawing_turns_into_the_matrix():
    mesh = mesh_of("ring", 12)
    lines = draw(mesh, 40, 8).plain.split("\n")
    assert len(lines) == 13 and lines[1].startswith("● r00")  # a header, then a row each


def test_the_selected_region_and_link_stand_out():
    mesh = mesh_of("chain", 3)
    text = draw(mesh, 80, 5, selected_region="eu", selected_link=("eu", "ap"))
    styled = {text.plain[span.start : span.end]: str(span.style) for span in text.spans}
    assert "reverse" in styled[" eu"]
    assert any("reverse" in style and "─" in chars for chars, style in styled.items())


@pytest.mark.parametrize(
    ("per_s", "shown"),
    [
        (0, "0"),
        (0.4, "<1"),
        (12, "12"),
        (950, "950"),
        (1234, "1.2k"),
        (34_000, "34k"),
        (1_500_000, "1.5M"),
    ],
)
def test_rates_fit_in_four_characters(per_s: float, shown: str):
    assert fmt_rate(per_s) == shown


def test_rates_come_from_counter_deltas_and_a_restart_gives_zero():
    rates = Rates()
    assert rates.per_s("q", 100, now=10.0) == 0.0
    assert rates.per_s("q", 400, now=11.5) == 200.0
    assert rates.per_s("q", 5, now=12.0) == 0.0  # the counter went back: the node restarted


def test_the_tail_shows_every_event_while_under_the_budget():
    sampler = Sampler(lines_per_s=20)
    picked = [sampler.offer(1, 0, now=i * 0.1) for i in range(10)]
    assert all(p == [0] for p in picked)
    assert sampler.skipped == 0 and sampler.one_in == 1


def test_the_tail_samples_one_in_n_when_events_come_fast():
    sampler = Sampler(lines_per_s=20)
    shown = 0
    for tick in range(30):  # 3 s of 100-event batches every 0.1 s: 1,000 events/s
        shown += len(sampler.offer(100, 0, now=tick * 0.1))
    assert shown <= 20 * 3, "more lines than the budget"
    assert sampler.one_in == 50  # 1,000/s over a budget of 20 lines/s
    assert sampler.skipped == sampler.seen - sampler.shown == 3000 - shown


def test_events_the_node_discarded_for_the_tail_count_as_skipped():
    sampler = Sampler(lines_per_s=20)
    sampler.offer(5, 0, now=0.0)
    sampler.offer(1, 995, now=0.5)
    assert sampler.seen == 1001 and sampler.skipped == 1001 - sampler.shown
    assert sampler.pause_s(now=0.5) == 0.0  # under the budget: keep reading
    sampler.offer(100, 0, now=0.6)
    assert sampler.pause_s(now=0.6) == pytest.approx(0.4)  # budget spent: wait for the window
