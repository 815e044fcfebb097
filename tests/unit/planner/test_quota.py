"""Watt quotas: worked examples and the invariants that must hold for any group of GPUs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.planner.budget import IDLE_RANK
from wattplane.planner.kneefill import effective_knees
from wattplane.planner.quota import QuotaAllocation, QuotaGpu, QuotaParams, allocate_quota, demand_watts

NO_HYSTERESIS = QuotaParams(hysteresis_fraction=0.0)
TOL = 1e-6
MILLIWATT = 1e-3


def gpu(
    uuid: str,
    rank: int = 500,
    *,
    measured: float | None = None,
    cap: float | None = None,
    busy: bool = True,
    knee: float | None = None,
    floor: float = 100.0,
    ceiling: float = 300.0,
) -> QuotaGpu:
    return QuotaGpu(uuid, rank, floor, ceiling, measured, cap, busy, knee)


# -- demand --------------------------------------------------------------------------------------------


def test_demand_running_free_power_bound_idle_and_unknown() -> None:
    def demand(g: QuotaGpu) -> tuple[float, bool]:
        watts, idle = demand_watts(g)
        return round(watts, 9), idle

    assert demand(gpu("free", measured=180.0)) == (210.0, False)  # + 10 % of 300 W
    assert demand(gpu("bound", measured=196.0, cap=200.0)) == (300.0, False)  # hidden by the cap
    assert demand(gpu("below", measured=150.0, cap=200.0)) == (180.0, False)
    assert demand(gpu("idle", measured=30.0, busy=False)) == (100.0, True)  # its draw, at least the floor
    assert demand(gpu("unknown")) == (300.0, False)
    # No work but drawing a lot (a stale utilisation reading): not treated as idle.
    assert demand(gpu("odd", measured=250.0, busy=False)) == (280.0, False)


# -- worked examples -----------------------------------------------------------------------------------


def test_priorities_are_cut_lowest_first() -> None:
    gpus = [gpu("hi", 1000), gpu("mid", 500), gpu("lo", 0), gpu("spare", IDLE_RANK)]
    result = allocate_quota(900, gpus, params=NO_HYSTERESIS)
    # Ceilings asked (no measurement): 1200 W. The spare GPU goes to its floor first, then "lo" gives
    # up the 200 W still missing... no: 900 - 300 - 300 - 100 = 200 W for lo.
    assert result.caps == {"hi": 300.0, "mid": 300.0, "lo": 200.0, "spare": 100.0}
    assert result.reasons == {"hi": "demand", "mid": "demand", "lo": "cut", "spare": "floor"}
    assert result.feasible and result.cut_gpus == 2 and result.allocated_watts == 900.0
    assert result.message == (
        "demand 1200 W exceeds the quota of 900 W: 2 of 4 GPU(s) cut, lowest priority first, up to priority 0"
    )


def test_knees_are_reached_before_anyone_goes_below_one() -> None:
    gpus = [gpu("a", knee=250.0), gpu("b", knee=150.0)]
    result = allocate_quota(420, gpus, params=NO_HYSTERESIS)
    assert result.caps == {"a": 250.0, "b": 170.0}
    assert result.reasons == {"a": "knee", "b": "knee"}
    plain = allocate_quota(420, gpus, params=replace(NO_HYSTERESIS, knee_aware=False))
    assert plain.caps == {"a": 210.0, "b": 210.0}  # one level: a below its knee while b is above
    deeper = allocate_quota(380, gpus, params=NO_HYSTERESIS)
    assert deeper.caps == {"a": 230.0, "b": 150.0}
    assert deeper.reasons == {"a": "cut", "b": "knee"}


def test_leftover_goes_as_headroom_and_the_sum_stays_under_the_quota() -> None:
    gpus = [gpu("busy", measured=200.0), gpu("quiet", measured=30.0, busy=False)]
    result = allocate_quota(500, gpus, params=NO_HYSTERESIS)
    # Demands 230 (200 + 30) and 100 (idle: its floor); 170 W left, shared by room to rise:
    # busy 70 of 270, quiet 200 of 270 → busy 230 + 44.074, quiet 100 + 125.925.
    assert result.demands == {"busy": 230.0, "quiet": 100.0}
    assert result.caps["busy"] == pytest.approx(230 + 170 * 70 / 270, abs=1e-3)
    assert result.caps["quiet"] == pytest.approx(100 + 170 * 200 / 270, abs=1e-3)
    assert result.allocated_watts <= 500.0
    assert result.reasons == {"busy": "headroom", "quiet": "headroom"}
    assert result.lent_watts == pytest.approx(300 - result.caps["quiet"])


def test_idle_headroom_comes_back_in_one_round() -> None:
    first = allocate_quota(450, [gpu("x", measured=30.0, busy=False), gpu("y", measured=296.0, cap=300.0)])
    # x idle asks for its floor, y (at its ceiling) for 300: 50 W headroom, all of it to x (y has no room).
    assert first.caps == {"x": 150.0, "y": 300.0}
    # x gets work and runs into its cap: it asks for its ceiling, and the quota is shared at once.
    second = allocate_quota(
        450,
        [gpu("x", measured=148.0, cap=150.0), gpu("y", measured=296.0, cap=300.0)],
        previous_caps=first.caps,
    )
    assert second.caps == {"x": 225.0, "y": 225.0}
    assert second.held_gpus == 0


def test_hysteresis_keeps_caps_that_move_little() -> None:
    params = QuotaParams(hysteresis_fraction=0.05)
    gpus = [gpu("a", measured=150.0), gpu("b", measured=160.0)]
    first = allocate_quota(400, gpus, params=params)
    jitter = [gpu("a", measured=153.0), gpu("b", measured=157.0)]
    second = allocate_quota(400, jitter, previous_caps=first.caps, params=params)
    assert second.caps == first.caps
    assert second.held_gpus == 2 and set(second.reasons.values()) == {"held"}
    assert second.message.endswith("2 cap(s) kept by hysteresis")
    # A real change goes through.
    moved = allocate_quota(400, [gpu("a", measured=290.0, cap=first.caps["a"]), gpu("b", measured=100.0)], first.caps)
    assert moved.caps != first.caps and moved.allocated_watts <= 400.0


def test_infeasible_quota_says_by_how_much() -> None:
    result = allocate_quota(250, [gpu("a"), gpu("b"), gpu("c")])
    assert not result.feasible
    assert result.caps == {"a": 100.0, "b": 100.0, "c": 100.0}
    assert set(result.reasons.values()) == {"infeasible"}
    assert result.message.startswith("infeasible: the 3 GPU(s) need at least 300 W at their minimum limits, 50 W over")


def test_no_gpus_and_nonsense_quota() -> None:
    assert allocate_quota(100, []).message == "quota covers no GPU"
    result = allocate_quota(math.nan, [gpu("a")])
    assert result.quota_watts == 0.0 and not result.feasible


# -- invariants ----------------------------------------------------------------------------------------

RANKS = (IDLE_RANK, 0, 500, 1000)


@st.composite
def fleets(draw: st.DrawFn) -> list[QuotaGpu]:
    n = draw(st.integers(1, 10))
    out = []
    for i in range(n):
        floor = draw(st.sampled_from([50.0, 100.0, 125.0, 200.0]))
        ceiling = floor + draw(st.floats(0, 500))
        out.append(
            QuotaGpu(
                uuid=f"gpu-{i}",
                priority_rank=draw(st.sampled_from(RANKS)),
                floor_watts=floor,
                ceiling_watts=ceiling,
                measured_watts=draw(st.none() | st.floats(0, ceiling * 1.05)),
                cap_watts=draw(st.none() | st.floats(floor, ceiling)),
                busy=draw(st.booleans()),
                efficient_watts=draw(st.none() | st.floats(floor, ceiling)),
            )
        )
    return out


quotas = st.floats(0, 6000)
hysteresis = st.sampled_from([0.0, 0.05, 0.2])


def previous_of(draw_from: list[QuotaGpu], data: st.DataObject) -> dict[str, float] | None:
    if not data.draw(st.booleans()):
        return None
    return {g.uuid: data.draw(st.floats(g.floor_watts, g.ceiling_watts)) for g in draw_from}


def check_bounds(gpus: list[QuotaGpu], result: QuotaAllocation) -> None:
    by = {g.uuid: g for g in gpus}
    for uuid, cap in result.caps.items():
        g = by[uuid]
        assert g.floor_watts - TOL <= cap <= max(g.ceiling_watts, g.floor_watts) + TOL
    if result.feasible:
        assert math.fsum(result.caps.values()) <= result.quota_watts + TOL
    else:
        assert result.caps == {g.uuid: g.floor_watts for g in gpus}


def check_priority(gpus: list[QuotaGpu], result: QuotaAllocation) -> None:
    """No GPU cut below its demand while a lower-ranked one is above its floor."""
    by = {g.uuid: g for g in gpus}
    cut = [u for u, cap in result.caps.items() if cap < result.demands[u] - TOL]
    raised = [u for u, cap in result.caps.items() if cap > by[u].floor_watts + TOL]
    for h in cut:
        for low in raised:
            assert by[low].priority_rank >= by[h].priority_rank, (h, low, result)


@given(fleets(), quotas, hysteresis, st.data())
def test_caps_within_bounds_and_sum_within_quota(
    gpus: list[QuotaGpu], quota: float, fraction: float, data: st.DataObject
) -> None:
    result = allocate_quota(quota, gpus, previous_of(gpus, data), QuotaParams(hysteresis_fraction=fraction))
    check_bounds(gpus, result)
    assert result.feasible == (math.fsum(g.floor_watts for g in gpus) <= quota)
    assert result.allocated_watts == pytest.approx(math.fsum(result.caps.values()))


@given(fleets(), quotas, hysteresis, st.data())
def test_priority_order_is_never_inverted(
    gpus: list[QuotaGpu], quota: float, fraction: float, data: st.DataObject
) -> None:
    result = allocate_quota(quota, gpus, previous_of(gpus, data), QuotaParams(hysteresis_fraction=fraction))
    if result.feasible:
        check_priority(gpus, result)


@given(fleets(), quotas)
def test_knee_order_within_a_class(gpus: list[QuotaGpu], quota: float) -> None:
    result = allocate_quota(quota, gpus, params=NO_HYSTERESIS)
    if not result.feasible:
        return
    by = {g.uuid: g for g in gpus}
    for rank in RANKS:
        members = [u for u in result.caps if by[u].priority_rank == rank]
        knee = effective_knees(
            {u: result.demands[u] for u in members},
            {u: by[u].efficient_watts for u in members},
            {u: by[u].floor_watts for u in members},
        )
        below = [u for u in members if result.caps[u] < knee[u] - MILLIWATT]  # caps are rounded down to it
        above = [u for u in members if result.caps[u] > knee[u] + MILLIWATT]
        assert not (below and above), (rank, below, above, result)


@given(fleets(), quotas, st.data())
def test_lent_headroom_comes_back_in_one_round(gpus: list[QuotaGpu], quota: float, data: st.DataObject) -> None:
    lender = data.draw(st.sampled_from([g.uuid for g in gpus]))
    before = [replace(g, measured_watts=min(20.0, g.floor_watts), busy=False) if g.uuid == lender else g for g in gpus]
    first = allocate_quota(quota, before, params=NO_HYSTERESIS)
    if not first.feasible:
        return
    # The lender gets work and draws its whole cap: one round later it holds what it would hold had
    # it asked for its ceiling all along (no memory of the lending).
    after = [
        replace(g, measured_watts=first.caps[g.uuid], cap_watts=first.caps[g.uuid], busy=True)
        if g.uuid == lender
        else g
        for g in before
    ]
    second = allocate_quota(quota, after, previous_caps=first.caps, params=NO_HYSTERESIS)
    reference = [replace(g, measured_watts=None, cap_watts=None) if g.uuid == lender else g for g in before]
    fresh = allocate_quota(quota, reference, params=NO_HYSTERESIS)
    assert second.demands[lender] == fresh.demands[lender]
    assert second.caps[lender] == pytest.approx(fresh.caps[lender], abs=1e-3)
    # With hysteresis the lender is never held below what it is allocated now.
    held = allocate_quota(quota, after, previous_caps=first.caps, params=QuotaParams(hysteresis_fraction=0.2))
    assert held.caps[lender] >= min(fresh.caps[lender], fresh.demands[lender]) - 1e-3


@given(fleets(), quotas)
def test_same_round_twice_is_stable(gpus: list[QuotaGpu], quota: float) -> None:
    params = QuotaParams(hysteresis_fraction=0.05)
    first = allocate_quota(quota, gpus, params=params)
    again = allocate_quota(quota, list(reversed(gpus)), previous_caps=first.caps, params=params)
    assert again.caps == first.caps
