"""Scheduled budget windows: which target holds when, the ramps the nodes are told, and the plan around them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from wattplane.api.v1alpha1.energypolicy import BudgetSpec, BudgetWindow, EnergyPolicySpec
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import Planner, plan
from wattplane.planner.schedule import RAMP_RELEASE_SLACK, budget_target, node_ramps
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PolicyView

T0 = datetime(2026, 7, 1, 14, 0, tzinfo=UTC)


def window(name: str, start_min: float, end_min: float, **target: float) -> BudgetWindow:
    return BudgetWindow.model_validate(
        {
            "name": name,
            "start": (T0 + timedelta(minutes=start_min)).isoformat(),
            "end": (T0 + timedelta(minutes=end_min)).isoformat(),
            **target,
        }
    )


def spec(watts: float | None, *windows: BudgetWindow) -> BudgetSpec:
    return BudgetSpec(watts=watts, schedule=list(windows) or None)


def test_a_window_needs_one_target_and_an_end_after_its_start() -> None:
    with pytest.raises(ValidationError, match="exactly one of watts or fraction"):
        window("both", 0, 10, watts=100.0, fraction=0.5)
    with pytest.raises(ValidationError, match="exactly one of watts or fraction"):
        window("none", 0, 10)
    with pytest.raises(ValidationError, match="end must be after start"):
        window("backwards", 10, 0, watts=100.0)
    with pytest.raises(ValidationError, match="a budget needs watts, a schedule"):
        BudgetSpec()


def test_the_target_is_the_standing_budget_outside_windows_and_the_lowest_inside() -> None:
    s = spec(8000.0, window("shed", 0, 180, fraction=0.75), window("deep", 60, 90, watts=5000.0))
    before = budget_target(s, T0 - timedelta(minutes=1), reference_watts=10_000.0)
    assert (before.watts, before.window, before.next_change_at) == (8000.0, None, T0)
    during = budget_target(s, T0 + timedelta(minutes=30), reference_watts=10_000.0)
    assert during.watts == pytest.approx(6000.0)  # 75 % of the standing budget, not of the reference
    assert during.window == "shed"
    assert during.next_change_at == T0 + timedelta(minutes=60)
    deepest = budget_target(s, T0 + timedelta(minutes=75), reference_watts=10_000.0)
    assert (deepest.watts, deepest.window) == (5000.0, "deep")
    after = budget_target(s, T0 + timedelta(minutes=200), reference_watts=10_000.0)
    assert (after.watts, after.window, after.next_change_at) == (8000.0, None, None)


def test_without_a_standing_budget_a_fraction_is_of_the_default_limits_and_nothing_holds_outside() -> None:
    s = spec(None, window("shed", 0, 180, fraction=0.75, ramp_watts_per_second=100.0))
    assert budget_target(s, T0 - timedelta(seconds=1), reference_watts=10_000.0).watts is None
    during = budget_target(s, T0, reference_watts=10_000.0)
    assert during.watts == pytest.approx(7500.0)
    assert during.ramp_watts_per_second == 100.0
    # After the end the rate stays in force until the climb back (2500 W at 100 W/s) has had time.
    end = T0 + timedelta(minutes=180)
    climbing = budget_target(s, end + timedelta(seconds=10), reference_watts=10_000.0)
    assert climbing.watts is None
    assert climbing.ramp_watts_per_second == 100.0
    assert climbing.next_change_at == end + timedelta(seconds=25) + RAMP_RELEASE_SLACK
    released = budget_target(s, end + timedelta(seconds=25) + RAMP_RELEASE_SLACK, reference_watts=10_000.0)
    assert (released.watts, released.ramp_watts_per_second, released.next_change_at) == (None, None, None)


def test_windows_from_outside_the_spec_count_like_its_own() -> None:
    s = spec(8000.0)
    event = window("openadr-ev1", 0, 60, watts=4000.0)
    assert budget_target(s, T0 + timedelta(minutes=1), 10_000.0, (event,)).window == "openadr-ev1"
    assert budget_target(s, T0 + timedelta(minutes=1), 10_000.0).window is None


@given(
    rate=st.floats(min_value=0.1, max_value=1e5),
    parts=st.dictionaries(
        st.text(min_size=1, max_size=5), st.one_of(st.just(0.0), st.floats(min_value=1, max_value=1e4)), max_size=12
    ),
)
def test_node_ramps_add_up_to_the_node_sets_rate(rate: float, parts: dict[str, float]) -> None:
    ramps = node_ramps(rate, parts)
    if math.fsum(parts.values()) > 0:
        assert math.fsum(ramps.values()) == pytest.approx(rate, rel=1e-9)
    assert all(r > 0 for r in ramps.values())
    assert node_ramps(None, parts) == {}


def _fleet(nodes: int, gpus: int, watts: float) -> FleetSnapshot:
    views = [
        GpuView(
            node=f"n{n}",
            uuid=f"GPU-{n}-{i}",
            index=i,
            model="A40",
            min_watts=100.0,
            max_watts=300.0,
            default_watts=300.0,
            power_watts=watts,
        )
        for n in range(nodes)
        for i in range(gpus)
    ]
    return FleetSnapshot(gpus=tuple(views), nodes=tuple(sorted({g.node for g in views})))


def _policy(budget: BudgetSpec) -> PolicyView:
    return PolicyView(name="grid", spec=EnergyPolicySpec(budget=budget))


def test_a_plan_shares_the_window_target_and_tells_each_node_its_part_of_the_ramp() -> None:
    fleet = _fleet(nodes=4, gpus=2, watts=280.0)  # 2240 W drawn, 2400 W of default limits
    policy = _policy(spec(None, window("shed", 0, 180, fraction=0.75, ramp_watts_per_second=60.0)))
    before = plan(fleet, [policy], PlanContext(now=T0 - timedelta(minutes=5)))
    assert before.node_budgets == {}
    assert before.node_budget_ramps == {}
    assert before.next_change_at == T0
    report = before.policies["grid"].budget
    assert report is not None and report.watts == 0.0 and report.next_change == "2026-07-01T14:00:00Z"

    during = plan(fleet, [policy], PlanContext(now=T0 + timedelta(seconds=1)))
    assert math.fsum(during.node_budgets.values()) <= 1800.0 + 1e-6  # 75 % of 2400 W
    assert math.fsum(during.node_budgets.values()) == pytest.approx(1800.0, abs=0.01)
    assert set(during.node_budget_ramps) == {"n0", "n1", "n2", "n3"}
    assert math.fsum(during.node_budget_ramps.values()) == pytest.approx(60.0)
    report = during.policies["grid"].budget
    assert report is not None
    assert (report.watts, report.window, report.ramp_watts_per_second) == (pytest.approx(1800.0), "shed", 60.0)
    assert report.shortfall_watts == pytest.approx(2240.0 - 1800.0)

    after = plan(fleet, [policy], PlanContext(now=T0 + timedelta(minutes=180, seconds=5)))
    assert after.node_budgets == {}  # the target lapsed ...
    assert math.fsum(after.node_budget_ramps.values()) == pytest.approx(60.0)  # ... and the agents climb back


def test_a_long_lived_planner_moves_the_shares_when_a_window_starts_with_nothing_else_changing() -> None:
    fleet = _fleet(nodes=2, gpus=2, watts=250.0)
    policy = _policy(spec(1200.0, window("shed", 0, 60, watts=800.0)))
    planner = Planner()
    first = planner.plan(fleet, [policy], PlanContext(now=T0 - timedelta(seconds=30)))
    assert math.fsum(first.node_budgets.values()) == pytest.approx(1200.0, abs=0.01)  # headroom shared too
    second = planner.plan(fleet, [policy], PlanContext(now=T0 + timedelta(seconds=1)))
    assert math.fsum(second.node_budgets.values()) == pytest.approx(800.0, abs=0.01)
    third = planner.plan(fleet, [policy], PlanContext(now=T0 + timedelta(minutes=61)))
    assert math.fsum(third.node_budgets.values()) == pytest.approx(1200.0, abs=0.01)
