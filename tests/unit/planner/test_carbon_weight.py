"""Carbon weight (Chase): curve, percentile rank, coverage, staleness and fallbacks, and its properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.api.v1alpha1.energypolicy import CarbonCurve, CarbonSourceRef, CarbonSpec, CurvePoint
from wattplane.planner.carbon import MIN_COVERAGE, carbon_limit, carbon_weight, curve_weight
from wattplane.planner.context import CarbonInput

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SOURCE = CarbonSourceRef(provider="trace", zone="DE")
#: w = rank / 100, so a test can read the rank straight off the weight.
IDENTITY = CarbonCurve(basis="ForecastPercentile", points=[CurvePoint(x=0, weight=0), CurvePoint(x=100, weight=1)])


def curve(basis: str, *points: tuple[float, float]) -> CarbonCurve:
    return CarbonCurve(basis=basis, points=[CurvePoint(x=x, weight=w) for x, w in points])


def spec(**kw: object) -> CarbonSpec:
    return CarbonSpec(source=SOURCE, **kw)


def hourly(values: list[float], start: datetime = NOW + HOUR) -> tuple[tuple[datetime, float], ...]:
    return tuple((start + HOUR * i, v) for i, v in enumerate(values))


def past(values: list[float]) -> tuple[tuple[datetime, float], ...]:
    """``values`` for the hours before NOW, oldest first."""
    return hourly(values, start=NOW - HOUR * len(values))


# -- the curve -------------------------------------------------------------------------------------


def test_curve_is_linear_between_points_sorted_by_x_and_flat_beyond_the_ends() -> None:
    c = curve("Absolute", (400, 0.0), (100, 1.0), (200, 0.5))  # given out of order
    assert curve_weight(c, 0) == 1.0
    assert curve_weight(c, 100) == 1.0
    assert curve_weight(c, 150) == pytest.approx(0.75)
    assert curve_weight(c, 200) == 0.5
    assert curve_weight(c, 300) == pytest.approx(0.25)
    assert curve_weight(c, 400) == 0.0
    assert curve_weight(c, 5000) == 0.0


def test_a_single_point_curve_is_flat() -> None:
    assert curve_weight(curve("Absolute", (300, 0.4)), 0) == 0.4
    assert curve_weight(curve("Absolute", (300, 0.4)), 900) == 0.4


def test_curve_ignores_nonsense_points_and_answers_none_when_nothing_is_left() -> None:
    broken = CarbonCurve.model_construct(
        basis="Absolute",
        points=[
            CurvePoint.model_construct(x=math.nan, weight=0.5),
            CurvePoint.model_construct(x=100, weight=7.0),  # clamped to 1
            CurvePoint.model_construct(x=200, weight=-1.0),  # clamped to 0
        ],
    )
    assert curve_weight(broken, 150) == pytest.approx(0.5)
    assert curve_weight(broken, math.nan) is None
    empty = CarbonCurve.model_construct(basis="Absolute", points=[])
    assert curve_weight(empty, 100) is None
    decision = carbon_weight(spec(curve=empty), CarbonInput(intensity=300, time=NOW), NOW)
    assert decision.weight is None and "no usable points" in decision.reason


def test_absolute_basis_reads_the_current_intensity() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)))
    decision = carbon_weight(s, CarbonInput(intensity=250, time=NOW), NOW)
    assert decision.weight == pytest.approx(0.25)
    assert decision.x == 250 and decision.percentile is None and not decision.stale and decision.fallback is None
    assert decision.reason == "carbon 250 g/kWh → w=0.25"


# -- percentile rank ----------------------------------------------------------------------------------


def test_rank_is_the_share_of_the_window_that_is_cleaner() -> None:
    forecast = hourly([float(v) for v in range(100, 330, 10)])  # 23 hours: 100 ... 320
    s = spec(curve=IDENTITY)
    for current, cleaner in ((50, 0), (400, 23), (205, 11), (200, 10.5)):  # 200 ties with one value: half
        decision = carbon_weight(s, CarbonInput(intensity=current, time=NOW, forecast=forecast), NOW)
        assert decision.percentile == pytest.approx(100 * cleaner / 23)
        assert decision.weight == pytest.approx(cleaner / 23)
        assert decision.ranked_against == "forecast"


def test_a_flat_window_ranks_the_current_value_at_the_median() -> None:
    decision = carbon_weight(spec(curve=IDENTITY), CarbonInput(300, NOW, forecast=hourly([300.0] * 23)), NOW)
    assert decision.percentile == 50


def test_reason_names_intensity_rank_window_and_weight() -> None:
    forecast = hourly([100.0] * 19 + [400.0] * 4)
    decision = carbon_weight(spec(), CarbonInput(312, NOW, forecast=forecast), NOW)  # default curve: 60 → 1, 80 → 0
    assert decision.reason == "carbon 312 g/kWh, 83rd percentile of next 24 h → w=0.00"


def test_rank_is_time_weighted_and_only_counts_the_window() -> None:
    # Clean for 2 h in 5-minute steps, then dirty hourly; points beyond the 6-h window do not count.
    fine = tuple((NOW + timedelta(minutes=5 * k), 100.0) for k in range(24))
    coarse = hourly([500.0] * 10, start=NOW + 2 * HOUR)
    s = spec(curve=IDENTITY, lookahead_hours=6)
    decision = carbon_weight(s, CarbonInput(300, NOW - timedelta(minutes=1), forecast=fine + coarse), NOW)
    # Each point holds until the next but at most the median spacing (5 min), so the hourly points
    # count 5 minutes each: 2 h clean against 4 × 5 min dirty.
    assert decision.percentile == pytest.approx(100 * 120 / (120 + 20))


def test_the_current_reading_is_not_ranked_against_itself() -> None:
    forecast = ((NOW, 300.0), *hourly([400.0] * 23))
    decision = carbon_weight(spec(curve=IDENTITY), CarbonInput(300, NOW, forecast=forecast), NOW)
    assert decision.percentile == 0  # without the exclusion the tie would count half


def test_short_forecast_falls_back_to_history_and_says_so() -> None:
    forecast = hourly([500.0] * 5)  # 5 of 24 h: under a quarter
    history = past([100.0] * 24)
    decision = carbon_weight(spec(curve=IDENTITY), CarbonInput(300, NOW, forecast=forecast, history=history), NOW)
    assert decision.ranked_against == "history" and decision.percentile == 100
    assert "percentile of past 24 h (forecast covers 21%)" in decision.reason


def test_a_forecast_covering_exactly_a_quarter_is_enough() -> None:
    forecast = hourly([500.0] * 6)  # 6 points holding 1 h each: 6 of 24 h
    signal = CarbonInput(300, NOW, forecast=forecast, history=past([1.0] * 24))
    decision = carbon_weight(spec(curve=IDENTITY), signal, NOW)
    assert MIN_COVERAGE == 0.25 and decision.ranked_against == "forecast" and decision.percentile == 0


def test_gaps_in_the_forecast_are_not_coverage() -> None:
    # Spacings 1 h and 18 h: each point holds at most the (lower) median spacing, 1 h, so 3 of 24 h.
    sparse = ((NOW + HOUR, 100.0), (NOW + 2 * HOUR, 100.0), (NOW + 20 * HOUR, 100.0))
    decision = carbon_weight(spec(curve=IDENTITY), CarbonInput(300, NOW, forecast=sparse), NOW)
    assert decision.ranked_against is None
    assert "nothing to rank against (forecast 12%, history 0% of 24 h), assumed median" in decision.reason


def test_nothing_to_rank_against_uses_the_median_or_the_forced_fallback() -> None:
    signal = CarbonInput(300, NOW)
    median = carbon_weight(spec(curve=IDENTITY), signal, NOW)
    assert median.weight == 0.5 and median.percentile == 50 and median.fallback == "LastGood" and not median.stale
    efficient = carbon_weight(spec(curve=IDENTITY, fallback="Efficient"), signal, NOW)
    assert efficient.weight == 0 and efficient.fallback == "Efficient" and efficient.intensity == 300
    fast = carbon_weight(spec(curve=IDENTITY, fallback="Max"), signal, NOW)
    assert fast.weight == 1 and "nothing to rank against" in fast.reason


# -- staleness and fallbacks ---------------------------------------------------------------------


def test_a_signal_older_than_the_bound_is_stale() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)), max_staleness_seconds=3600, fallback="Efficient")
    fresh = carbon_weight(s, CarbonInput(200, NOW - timedelta(seconds=3600)), NOW)
    assert not fresh.stale and fresh.weight == pytest.approx(0.5)
    just_too_old = carbon_weight(s, CarbonInput(200, NOW - timedelta(seconds=3601)), NOW)
    assert just_too_old.stale and just_too_old.weight == 0 and just_too_old.fallback == "Efficient"
    old = carbon_weight(s, CarbonInput(200, NOW - 3 * HOUR, message="HTTP 503"), NOW)
    assert old.reason == "carbon signal stale (age 3.0 h > 60 min) (HTTP 503); Efficient: w=0.00"


def test_the_source_can_declare_a_signal_stale() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)), fallback="Max")
    decision = carbon_weight(s, CarbonInput(200, NOW, stale=True, message="rate limited"), NOW)
    assert decision.stale and decision.weight == 1 and "rate limited" in decision.reason


def test_a_future_timestamp_is_not_stale() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)))
    assert not carbon_weight(s, CarbonInput(200, NOW + 2 * HOUR), NOW).stale


def test_last_good_keeps_the_old_value_but_flags_it() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)), fallback="LastGood")
    decision = carbon_weight(s, CarbonInput(150, NOW - 5 * HOUR), NOW)
    assert decision.stale and decision.fallback == "LastGood" and decision.weight == pytest.approx(0.75)
    assert "LastGood: last carbon 150 g/kWh" in decision.reason


def test_last_good_without_any_value_sets_no_limit() -> None:
    s = spec(fallback="LastGood")
    for signal in (None, CarbonInput(None, None, stale=True, message="never fetched")):
        decision = carbon_weight(s, signal, NOW)
        assert decision.weight is None and decision.stale
        assert "no earlier value to keep; no carbon limit" in decision.reason


def test_fixed_uses_the_fallback_intensity_on_the_absolute_curve() -> None:
    s = spec(curve=curve("Absolute", (100, 1.0), (300, 0.0)), fallback="Fixed", fallback_intensity=250)
    decision = carbon_weight(s, None, NOW)
    assert decision.weight == pytest.approx(0.25) and decision.intensity == 250 and decision.stale
    assert decision.reason == "no carbon signal; Fixed: assumed carbon 250 g/kWh → w=0.25"


def test_fixed_ranks_the_fallback_intensity_against_what_is_known() -> None:
    s = spec(curve=IDENTITY, fallback="Fixed", fallback_intensity=250)
    stale = CarbonInput(999, NOW - 3 * HOUR, forecast=hourly([100.0] * 12 + [400.0] * 12, start=NOW - 2 * HOUR))
    decision = carbon_weight(s, stale, NOW)
    # The forecast's points from NOW on: hours 0..9 at 100 (10 h), then 12 h at 400, 2 h uncovered.
    assert decision.ranked_against == "forecast" and decision.percentile == pytest.approx(100 * 10 / 22)
    nothing = carbon_weight(s, None, NOW)
    assert nothing.percentile == 50 and "assumed median" in nothing.reason


def test_fixed_without_a_value_sets_no_limit() -> None:
    broken = CarbonSpec.model_construct(source=SOURCE, curve=IDENTITY, fallback="Fixed")  # skips the validator
    decision = carbon_weight(broken, None, NOW)
    assert decision.weight is None and "no valid fallbackIntensity" in decision.reason


@pytest.mark.parametrize("bad", [math.nan, -5.0, math.inf])
def test_nonsense_intensities_count_as_missing(bad: float) -> None:
    decision = carbon_weight(spec(fallback="Efficient"), CarbonInput(bad, NOW), NOW)
    assert decision.stale and decision.weight == 0
    assert decision.reason.startswith("unusable carbon intensity")


def test_nonsense_forecast_points_are_skipped_and_naive_times_read_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    forecast = tuple((naive_now + HOUR * (i + 1), v) for i, v in enumerate([100.0, math.nan, -1.0] + [500.0] * 20))
    decision = carbon_weight(spec(curve=IDENTITY), CarbonInput(300, naive_now, forecast=forecast), NOW)
    assert decision.ranked_against == "forecast" and decision.percentile == pytest.approx(100 / 21)


def test_nonsense_lookahead_never_raises() -> None:
    broken = spec(curve=IDENTITY).model_copy(update={"lookahead_hours": math.nan})
    decision = carbon_weight(broken, CarbonInput(300, NOW, forecast=hourly([1.0] * 23)), NOW)
    assert decision.percentile == 50 and "nothing to rank against" in decision.reason
    huge = spec(curve=IDENTITY).model_copy(update={"lookahead_hours": 1e300})
    assert carbon_weight(huge, CarbonInput(300, NOW, forecast=hourly([1.0] * 23)), NOW).percentile == 50


# -- the limit -------------------------------------------------------------------------------------


def test_limit_moves_from_efficient_to_max_with_the_weight() -> None:
    assert carbon_limit(180, 300, 0) == 180
    assert carbon_limit(180, 300, 1) == 300
    assert carbon_limit(180, 300, 0.5) == 240
    assert carbon_limit(180, 300, 3) == 300 and carbon_limit(180, 300, -1) == 180
    assert carbon_limit(180, 300, math.nan) == 180  # an unreadable weight saves energy
    assert carbon_limit(math.nan, 300, 0.5) == 300 and carbon_limit(180, math.inf, 0.5) == 180


# -- properties ----------------------------------------------------------------------------------------

finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.none()


@st.composite
def curves(draw: st.DrawFn, basis: str, non_increasing: bool = False) -> CarbonCurve:
    top = 100 if basis == "ForecastPercentile" else 2000
    xs = draw(st.lists(st.integers(0, top), min_size=1, max_size=6, unique=True))
    ws = draw(st.lists(st.floats(0, 1), min_size=len(xs), max_size=len(xs)))
    if non_increasing:
        ws = sorted(ws, reverse=True)
        xs = sorted(xs)
    return curve(basis, *zip(xs, ws, strict=True))


@st.composite
def signals(draw: st.DrawFn) -> CarbonInput | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    points = st.tuples(
        st.integers(-48, 48).map(lambda h: NOW + timedelta(minutes=30 * h)),
        st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1000),
    )
    return CarbonInput(
        intensity=draw(finite_or_not | st.floats(0, 1000)),
        time=draw(st.none() | st.integers(-20, 4).map(lambda h: NOW + HOUR * h)),
        forecast=tuple(draw(st.lists(points, max_size=40))),
        history=tuple(draw(st.lists(points, max_size=40))),
        stale=draw(st.booleans()),
        message=draw(st.text(max_size=100)),
    )


@st.composite
def specs(draw: st.DrawFn) -> CarbonSpec:
    basis = draw(st.sampled_from(["Absolute", "ForecastPercentile"]))
    fallback = draw(st.sampled_from(["LastGood", "Fixed", "Efficient", "Max"]))
    return spec(
        curve=draw(curves(basis)),
        fallback=fallback,
        fallback_intensity=draw(st.floats(0, 5000)) if fallback == "Fixed" else None,
        lookahead_hours=draw(st.sampled_from([0.5, 3, 24, 72])),
        max_staleness_seconds=draw(st.sampled_from([60, 3600, 86400])),
    )


@given(specs(), signals())
def test_weight_is_in_0_1_or_none_and_every_decision_explains_itself(s: CarbonSpec, signal: CarbonInput | None) -> None:
    decision = carbon_weight(s, signal, NOW)
    assert decision.weight is None or 0 <= decision.weight <= 1
    assert decision.reason and "\n" not in decision.reason and len(decision.reason) < 300
    if decision.percentile is not None:
        assert 0 <= decision.percentile <= 100
    if decision.weight is None:
        assert s.fallback in ("LastGood", "Fixed") or s.curve.points == []


@given(curves("Absolute", non_increasing=True), st.floats(0, 3000), st.floats(0, 3000))
def test_absolute_weight_never_rises_with_intensity_when_the_curve_does_not(c: CarbonCurve, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    s = spec(curve=c)
    w_lo = carbon_weight(s, CarbonInput(lo, NOW), NOW).weight
    w_hi = carbon_weight(s, CarbonInput(hi, NOW), NOW).weight
    assert w_lo is not None and w_hi is not None and w_hi <= w_lo + 1e-12


@given(
    curves("ForecastPercentile", non_increasing=True),
    st.lists(st.floats(0, 1000), min_size=23, max_size=23),
    st.floats(0, 1000),
    st.floats(0, 1000),
)
def test_percentile_weight_never_rises_with_intensity_against_the_same_forecast(
    c: CarbonCurve, window: list[float], a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    s = spec(curve=c)
    forecast = hourly(window)
    low = carbon_weight(s, CarbonInput(lo, NOW, forecast=forecast), NOW)
    high = carbon_weight(s, CarbonInput(hi, NOW, forecast=forecast), NOW)
    assert low.percentile is not None and high.percentile is not None and low.percentile <= high.percentile
    assert low.weight is not None and high.weight is not None and high.weight <= low.weight + 1e-12


@given(st.floats(1, 1000), st.floats(1, 1000), st.floats(allow_nan=True, allow_infinity=True))
def test_limit_lies_between_efficient_and_max(efficient: float, maximum: float, w: float) -> None:
    limit = carbon_limit(efficient, maximum, w)
    assert min(efficient, maximum) <= limit <= max(efficient, maximum)


@given(st.floats(1, 1000), st.floats(1, 1000), st.floats(0, 1), st.floats(0, 1))
def test_limit_grows_with_the_weight(efficient: float, extra: float, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert carbon_limit(efficient, efficient + extra, lo) <= carbon_limit(efficient, efficient + extra, hi)
