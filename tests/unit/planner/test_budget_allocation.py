"""Budget allocation (POLCA): worked examples and the invariants that must hold for any fleet."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.planner.budget import (
    DEFAULT_DEMAND_MARGIN,
    IDLE_RANK,
    BudgetAllocation,
    BudgetGpu,
    allocate,
    budget_rank,
)

MW = 1e-3  # shares and caps are rounded down to the milliwatt


def gpu(
    node: str, uuid: str, rank: int, *, floor: float = 100, ceiling: float = 300, measured: float | None = None
) -> BudgetGpu:
    return BudgetGpu(node, uuid, rank, floor, ceiling, measured)


# -- worked examples ----------------------------------------------------------------------------------


def test_lowest_priority_is_cut_first_and_the_budget_is_shared_exactly() -> None:
    gpus = [
        gpu("n1", "train-high", 1000),
        gpu("n1", "train-low", 0),
        gpu("n2", "normal", 500),
        gpu("n2", "idle", IDLE_RANK),
    ]
    # Ceilings only: demand 1200 W. At 900 W the idle GPU goes to its floor (100), then the low one
    # gives up what is still missing: 1200 - 900 - 200 = 100 W → 200 W.
    result = allocate(900, gpus, demand_margin=None)
    assert result.feasible and result.minimum_watts == 400 and result.demand_watts == 1200
    assert result.gpu_watts == {"train-high": 300, "train-low": 200, "idle": 100, "normal": 300}
    assert result.caps == {"train-low": 200, "idle": 100}
    assert result.cut_gpus == 2
    assert result.node_shares == {"n1": 500, "n2": 400}
    assert result.message == (
        "demand 1200 W exceeds the budget of 900 W: 2 of 4 GPU(s) cut, lowest priority first, up to priority 0"
    )

    tighter = allocate(500, gpus, demand_margin=None)  # 100 W above the floors: the high GPU's class
    assert tighter.caps == {"train-high": 200, "train-low": 100, "idle": 100, "normal": 100}
    assert tighter.node_shares == {"n1": 300, "n2": 200}


def test_a_class_is_water_filled_to_one_common_level() -> None:
    gpus = [gpu("a", "g1", 500, ceiling=300), gpu("a", "g2", 500, ceiling=200), gpu("b", "g3", 500, ceiling=250)]
    result = allocate(600, gpus, demand_margin=None)
    # L + 200 + L = 600 → L = 200: g2 already asks for no more, so it is not cut.
    assert result.caps == {"g1": 200, "g3": 200}
    assert result.gpu_watts["g2"] == 200
    assert result.node_shares == {"a": 400, "b": 200}


def test_water_level_respects_each_floor() -> None:
    gpus = [gpu("a", "big-floor", 0, floor=250, ceiling=400), gpu("a", "small", 0, floor=50, ceiling=400)]
    result = allocate(500, gpus, demand_margin=None)
    # The level is 250: the big floor is already there, the small one is raised to it.
    assert result.caps == {"big-floor": 250, "small": 250}


def test_idle_gpus_lend_their_watts_under_measured_demand() -> None:
    idle = [gpu("quiet", f"q{i}", 500, measured=60) for i in range(4)]
    busy = [gpu("busy", f"b{i}", 500, measured=300) for i in range(4)]
    measured = allocate(2000, idle + busy)  # each asks for measured + 10 % of 300 W, at least its floor (100 W)
    assert measured.feasible and measured.cut_gpus == 0 and measured.demand_watts == pytest.approx(4 * 100 + 4 * 300)
    # The 400 W nobody asked for go where GPUs can still rise: all of it to the quiet node.
    assert measured.node_shares == {"busy": 1200, "quiet": 800}
    assert "fits the budget of 2000 W" in measured.message

    ceilings = allocate(2000, idle + busy, demand_margin=None)
    assert ceilings.cut_gpus == 8 and ceilings.node_shares == {"busy": 1000, "quiet": 1000}


def test_a_cut_gpu_regains_power_step_by_step_as_the_budget_frees() -> None:
    # Two GPUs at their caps of 150 W; the other pod left, so there is room now.
    gpus = [gpu("n", "a", 0, measured=150), gpu("n", "b", 0, measured=150)]
    result = allocate(1000, gpus)
    assert result.gpu_watts == {"a": 180, "b": 180}  # 150 + 10 % of 300, not the full 300 at once
    assert result.node_shares == {"n": 1000}


def test_unknown_measurement_asks_for_the_ceiling() -> None:
    result = allocate(1000, [gpu("n", "new", 500, measured=None), gpu("n", "old", 500, measured=100)])
    assert result.demand_watts == pytest.approx(300 + 130)


def test_infeasible_budget_holds_every_gpu_at_its_floor_and_says_by_how_much() -> None:
    gpus = [gpu("n1", "a", 1000), gpu("n1", "b", 0), gpu("n2", "c", 500, floor=200)]
    result = allocate(300, gpus)
    assert not result.feasible and result.minimum_watts == 400
    assert result.caps == {"a": 100, "b": 100, "c": 200} and result.cut_gpus == 3
    assert result.node_shares == {"n1": 150, "n2": 150}  # floors scaled down to the budget
    assert result.message == (
        "infeasible: the 3 GPU(s) on 2 node(s) need at least 400 W, 100 W over the budget of 300 W;"
        " every GPU held at its minimum"
    )


def test_no_gpus_and_nonsense_numbers_never_raise() -> None:
    assert allocate(1000, []).node_shares == {}
    weird = [
        BudgetGpu("n", "nan-floor", 0, math.nan, 300, math.nan),
        BudgetGpu("n", "low-ceiling", 0, 200, 100, -50),  # ceiling below floor: the floor wins
        BudgetGpu("n", "inf", 0, 100, math.inf, math.inf),
    ]
    result = allocate(math.nan, weird)
    assert not result.feasible and all(math.isfinite(v) for v in result.node_shares.values())
    result = allocate(250, weird)
    assert all(math.isfinite(v) for v in result.gpu_watts.values())
    assert result.gpu_watts["low-ceiling"] == 200


def test_budget_rank_orders_idle_low_normal_high_and_inference() -> None:
    assert budget_rank(500, None, has_pod=False) == IDLE_RANK
    assert budget_rank(0, "training", has_pod=True) == 0
    assert budget_rank(500, None, has_pod=True) == 500
    assert budget_rank(1000, "training", has_pod=True) == 1000
    assert budget_rank(0, "inference", has_pod=True) == 1000  # inference is cut last, like high
    assert budget_rank(5000, None, has_pod=True) == 1000 and budget_rank(-3, None, has_pod=True) == 0
    ranks = [
        budget_rank(*args) for args in [(0, None, False), (0, None, True), (500, None, True), (0, "inference", True)]
    ]
    assert ranks == sorted(ranks)


# -- hysteresis ---------------------------------------------------------------------------------------


def two_nodes(measured_a: float, measured_b: float) -> list[BudgetGpu]:
    return [
        gpu("a", "ga", 500, ceiling=700, measured=measured_a),
        gpu("b", "gb", 500, ceiling=700, measured=measured_b),
    ]


def test_small_share_changes_are_held_and_large_ones_pass() -> None:
    first = allocate(1000, two_nodes(400, 400))  # each asks 470 W; the 60 W left are split as headroom
    assert first.node_shares == {"a": 500, "b": 500} and first.gpu_watts == {"ga": 470, "gb": 470}
    previous = {"a": 510.0, "b": 490.0}  # last round's shares, within 5 %
    held = allocate(1000, two_nodes(400, 400), previous, 0.05)
    assert held.node_shares == previous and held.held_nodes == 2
    assert held.message.endswith("; 2 node share(s) kept by hysteresis")
    moved = allocate(1000, two_nodes(400, 400), {"a": 600.0, "b": 400.0}, 0.05)
    assert moved.node_shares == {"a": 500, "b": 500} and moved.held_nodes == 0


def test_hysteresis_never_lifts_the_total_above_the_budget() -> None:
    # a would keep 520 (within 5 % of it), but b moved too far and takes its new 500: 1020 > 1000.
    result = allocate(1000, two_nodes(400, 400), {"a": 520.0, "b": 400.0}, 0.05)
    assert result.node_shares == {"a": 500, "b": 500} and result.held_nodes == 0


def test_hysteresis_never_starves_what_a_node_was_allocated() -> None:
    # Node a's GPU now asks 480 W (410 measured + 70); last round's 478 is within 5 % but too little.
    result = allocate(1200, two_nodes(410, 630), {"a": 478.0, "b": 700.0}, 0.05)
    assert result.gpu_watts["ga"] == pytest.approx(480)
    assert result.node_shares == {"a": 500, "b": 700} and result.held_nodes == 0


# -- properties -----------------------------------------------------------------------------------------

RANKS = st.sampled_from([IDLE_RANK, 0, 500, 1000])


@st.composite
def fleets(draw: st.DrawFn) -> list[BudgetGpu]:
    n = draw(st.integers(0, 24))
    nodes = [f"node-{i}" for i in range(draw(st.integers(1, 5)))]
    out: list[BudgetGpu] = []
    for i in range(n):
        floor = draw(st.sampled_from([0.0, 50.0, 100.0, 150.5]))
        ceiling = floor + draw(st.floats(0, 600))
        measured = draw(st.none() | st.floats(0, 800))
        out.append(BudgetGpu(draw(st.sampled_from(nodes)), f"gpu-{i}", draw(RANKS), floor, ceiling, measured))
    return out


Scenario = tuple[float, list[BudgetGpu], dict[str, float], float, float | None]
"""Budget, GPUs, previous shares, hysteresis fraction, demand margin."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    gpus = draw(fleets())
    top = sum(g.ceiling_watts for g in gpus) * 1.3 + 1
    budget = draw(st.floats(0, top))
    previous = draw(st.dictionaries(st.sampled_from([f"node-{i}" for i in range(6)]), st.floats(0, top), max_size=6))
    hysteresis = draw(st.sampled_from([0.0, 0.05, 0.5]))
    margin = draw(st.sampled_from([None, DEFAULT_DEMAND_MARGIN, 0.0]))
    return budget, gpus, previous, hysteresis, margin


def run(s: Scenario) -> BudgetAllocation:
    budget, gpus, previous, hysteresis, margin = s
    return allocate(budget, gpus, previous, hysteresis, demand_margin=margin)


@given(scenarios())
def test_caps_and_allocations_stay_within_floor_and_ceiling(s: Scenario) -> None:
    result = run(s)
    by_uuid = {g.uuid: g for g in s[1]}
    for uuid, cap in result.caps.items():
        assert by_uuid[uuid].floor_watts <= cap <= by_uuid[uuid].ceiling_watts
    for uuid, watts in result.gpu_watts.items():
        assert by_uuid[uuid].floor_watts <= watts <= by_uuid[uuid].ceiling_watts
    assert result.cut_gpus == len(result.caps)


@given(scenarios())
def test_shares_never_exceed_the_budget_and_fill_it_when_feasible(s: Scenario) -> None:
    budget, gpus, _, _, margin = s
    result = run(s)
    assert math.fsum(result.node_shares.values()) <= budget
    assert result.feasible == (math.fsum(g.floor_watts for g in gpus) <= budget)
    assert all(v >= 0 for v in result.node_shares.values())
    if result.feasible and gpus and budget > 0:
        assert math.fsum(result.gpu_watts.values()) <= budget + 1e-9 * budget
        unheld = allocate(budget, gpus, demand_margin=margin)
        assert math.fsum(unheld.node_shares.values()) >= budget - MW * (len(gpus) + len(unheld.node_shares) + 1)
        for node, share in unheld.node_shares.items():  # a node's share covers its GPUs' allocations
            given_watts = math.fsum(unheld.gpu_watts[g.uuid] for g in gpus if g.node == node)
            assert share >= given_watts - MW * (len(gpus) + 1)


@given(scenarios())
def test_with_ceilings_as_demand_the_limits_alone_keep_the_budget(s: Scenario) -> None:
    budget, gpus, previous, hysteresis, _ = s
    result = allocate(budget, gpus, previous, hysteresis, demand_margin=None)
    if result.feasible:
        limits = [result.caps.get(g.uuid, max(g.ceiling_watts, g.floor_watts)) for g in gpus]
        assert math.fsum(limits) <= budget + 1e-9 * max(budget, 1)


@given(scenarios())
def test_no_gpu_is_cut_while_a_lower_priority_one_is_above_its_floor(s: Scenario) -> None:
    result = run(s)
    if not result.feasible or not result.caps:
        return
    by_uuid = {g.uuid: g for g in s[1]}
    highest_cut = max(by_uuid[u].priority_rank for u in result.caps)
    for g in s[1]:
        if g.priority_rank < highest_cut:
            assert result.gpu_watts[g.uuid] == g.floor_watts, (g, highest_cut)


@given(scenarios())
def test_within_the_cut_class_every_cut_gpu_sits_at_one_level(s: Scenario) -> None:
    result = run(s)
    if not result.feasible or not result.caps:
        return
    by_uuid = {g.uuid: g for g in s[1]}
    cut_class = max(by_uuid[u].priority_rank for u in result.caps)
    level = [c for u, c in result.caps.items() if by_uuid[u].priority_rank == cut_class and c > by_uuid[u].floor_watts]
    if level:
        assert max(level) - min(level) <= MW
        for g in s[1]:  # nobody in that class was left above the level
            if g.priority_rank == cut_class:
                assert result.gpu_watts[g.uuid] <= max(level) + MW or result.gpu_watts[g.uuid] == g.floor_watts


@given(scenarios())
def test_same_input_same_output_in_any_order(s: Scenario) -> None:
    budget, gpus, previous, hysteresis, margin = s
    first = run(s)
    shuffled = list(gpus)
    random.Random(len(gpus)).shuffle(shuffled)
    second = allocate(budget, shuffled, dict(previous), hysteresis, demand_margin=margin)
    assert first == second


@given(scenarios())
def test_feeding_the_shares_back_changes_nothing(s: Scenario) -> None:
    budget, gpus, _, hysteresis, margin = s
    first = run(s)
    again = allocate(budget, gpus, first.node_shares, hysteresis, demand_margin=margin)
    assert again.node_shares == first.node_shares
    assert again.caps == first.caps and again.gpu_watts == first.gpu_watts


@given(scenarios())
def test_infeasibility_is_reported_with_every_gpu_at_its_floor(s: Scenario) -> None:
    gpus = s[1]
    result = run(s)
    if result.feasible:
        return
    for g in gpus:
        assert result.gpu_watts[g.uuid] == max(g.floor_watts, 0.0)
    assert result.message.startswith("infeasible:") and "W over the budget" in result.message
