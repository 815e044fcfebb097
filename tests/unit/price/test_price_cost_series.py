"""The cost series a price section hands the budgeted planner: normalisation, negative prices, weights 0 and 1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from wattplane.api.v1alpha1.energypolicy import JobCarbonBudget, LimitSeconds
from wattplane.planner import carbonbudget as cb
from wattplane.planner.context import CarbonInput
from wattplane.price.cost import INDEX_SCALE, PricedCarbonInput, cost_input
from wattplane.price.series import PriceSeries

NOW = datetime(2023, 7, 2, 6, tzinfo=UTC)
HOUR = timedelta(hours=1)


def carbon(values: list[float], *, history: list[float] | None = None) -> CarbonInput:
    """A carbon signal: ``values[0]`` now, the rest hourly ahead; ``history`` hourly before now."""
    past = history or []
    return CarbonInput(
        intensity=values[0],
        time=NOW,
        forecast=tuple((NOW + HOUR * k, v) for k, v in enumerate(values[1:], start=1)),
        history=tuple((NOW - HOUR * (len(past) - k), v) for k, v in enumerate(past)),
        source="trace/DE-LU",
    )


def prices(values: list[float], *, first: datetime = NOW) -> PriceSeries:
    return PriceSeries.from_intervals(
        [(first + HOUR * k, first + HOUR * (k + 1), v) for k, v in enumerate(values)], unit="EUR/MWh"
    )


def series(signal: CarbonInput) -> list[float]:
    assert signal.intensity is not None
    return [signal.intensity, *(v for _, v in signal.forecast)]


def test_price_only_floors_negative_prices_at_zero_and_scales_the_rest_by_their_mean() -> None:
    day = [50.0, -500.0, -5.0, 0.0, 100.0, 150.0]
    got = cost_input(carbon([300.0] * 6), prices(day), weight=1.0, now=NOW, lookahead_hours=6.0)
    assert isinstance(got, PricedCarbonInput) and not got.stale
    floored_mean = (50 + 0 + 0 + 0 + 100 + 150) / 6
    assert series(got) == pytest.approx([INDEX_SCALE * max(p, 0.0) / floored_mean for p in day])
    assert all(v >= 0 for v in series(got))  # the planner only takes non-negative series
    assert got.price == 50.0 and got.carbon_intensity == 300.0 and got.price_unit == "EUR/MWh"


def test_a_window_of_only_negative_prices_is_all_zero_cost_not_an_error() -> None:
    got = cost_input(None, prices([-10.0, -500.0, -0.01]), weight=1.0, now=NOW, lookahead_hours=3.0)
    assert not got.stale
    assert series(got) == [0.0, 0.0, 0.0]


def test_price_only_needs_no_carbon_signal() -> None:
    got = cost_input(None, prices([10.0, 30.0]), weight=1.0, now=NOW, lookahead_hours=2.0)
    assert not got.stale
    assert series(got) == pytest.approx([INDEX_SCALE * 0.5, INDEX_SCALE * 1.5])


def test_half_weight_mixes_each_signal_relative_to_its_own_mean() -> None:
    intensity = [200.0, 400.0, 300.0, 300.0]
    day = [10.0, 10.0, 40.0, -20.0]
    got = cost_input(carbon(intensity), prices(day), weight=0.5, now=NOW, lookahead_hours=4.0)
    carbon_mean = sum(intensity) / 4
    price_mean = (10 + 10 + 40 + 0) / 4
    expected = [0.5 * i + 0.5 * carbon_mean * max(p, 0) / price_mean for i, p in zip(intensity, day, strict=True)]
    assert series(got) == pytest.approx(expected)


def test_weight_zero_hands_the_carbon_signal_through_unchanged() -> None:
    signal = carbon([300.0, 500.0, 100.0], history=[250.0, 260.0])
    got = cost_input(signal, prices([-500.0, 900.0, 1.0]), weight=0.0, now=NOW, lookahead_hours=24.0)
    assert (got.intensity, got.time, got.forecast, got.history, got.stale) == (
        signal.intensity,
        signal.time,
        signal.forecast,
        signal.history,
        signal.stale,
    )
    assert got.price == -500.0  # shown, never used


def test_a_missing_price_is_held_for_the_staleness_bound_then_the_cost_is_stale() -> None:
    short = prices([40.0, 60.0], first=NOW - 3 * HOUR)  # ends an hour before now
    held = cost_input(None, short, weight=1.0, now=NOW, lookahead_hours=6.0, price_max_staleness_s=7200)
    assert not held.stale and held.price == 60.0 and "price held since" in held.message
    gone = cost_input(None, short, weight=1.0, now=NOW, lookahead_hours=6.0, price_max_staleness_s=1800)
    assert gone.stale and "no price for now" in gone.message
    nothing = cost_input(carbon([300.0]), None, weight=0.5, now=NOW, lookahead_hours=6.0)
    assert nothing.stale and "no price fetched yet" in nothing.message


def test_a_stale_carbon_signal_stales_a_mixed_cost_but_not_a_price_only_one() -> None:
    stale = CarbonInput(intensity=300.0, time=NOW, stale=True, message="HTTP 503")
    assert cost_input(stale, prices([10.0, 20.0]), weight=0.5, now=NOW, lookahead_hours=1.0).stale
    assert not cost_input(stale, prices([10.0, 20.0]), weight=1.0, now=NOW, lookahead_hours=1.0).stale


# -- what the planner makes of it -------------------------------------------------------------------

DEFAULT = 300.0
CURVE = cb.prior_curve(DEFAULT)


def plan(signal: CarbonInput) -> tuple[float | None, list[tuple[str, float]]]:
    account = cb.settle(
        JobCarbonBudget(
            job="j",
            gpu_model="A40",
            time_at_limits=[LimitSeconds(watts=DEFAULT, seconds=12 * 3600.0)],
            updated_at=NOW.isoformat(),
        ),
        DEFAULT,
        NOW,
        max_slowdown=0.05,
    )
    decision = cb.decide(
        account,
        curve=CURVE,
        lo=0.5 * DEFAULT,
        hi=DEFAULT,
        signal=signal,
        signal_usable=not signal.stale,
        fallback_max=False,
        lookahead_hours=24.0,
        job_age_s=12 * 3600.0,
        now=NOW,
    )
    return decision.watts, [(p.start, p.watts) for p in decision.account.planned]


DIRTY_EVENINGS = [200.0] * 12 + [450.0] * 6 + [200.0] * 6
EXPENSIVE_MORNINGS = [200.0] * 3 + [30.0] * 6 + [-40.0] * 3 + [90.0] * 12


def test_weight_zero_plans_exactly_what_the_carbon_only_policy_plans() -> None:
    signal = carbon(DIRTY_EVENINGS)
    price_plan = plan(cost_input(signal, prices(EXPENSIVE_MORNINGS), weight=0.0, now=NOW, lookahead_hours=24.0))
    assert price_plan == plan(signal)


def test_weight_one_plans_on_the_price_alone() -> None:
    """The plan follows the price's shape whatever the carbon does, and slows down in the dear hours."""
    priced = cost_input(carbon(DIRTY_EVENINGS), prices(EXPENSIVE_MORNINGS), weight=1.0, now=NOW, lookahead_hours=24.0)
    watts, steps = plan(priced)
    floored = [max(p, 0.0) for p in EXPENSIVE_MORNINGS]
    as_carbon = carbon(floored)  # the price shape as if it were intensity: the same plan (scale-free)
    assert (watts, steps) == plan(as_carbon)
    # slowed in the expensive first hours, uncapped at negative prices
    assert watts is not None and watts < DEFAULT
    at = dict(steps)
    negative_hour = (NOW + 9 * HOUR).isoformat().replace("+00:00", "Z")
    assert at.get(negative_hour, DEFAULT) == DEFAULT
