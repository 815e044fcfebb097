"""Forecast helpers: step-function semantics, weighted statistics, the cleanest window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.carbon import ForecastPoint, cleanest_window, value_at, window_mean, window_percentile

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def hourly(*values: float) -> list[ForecastPoint]:
    return [ForecastPoint(T0 + i * H, v) for i, v in enumerate(values)]


def test_value_at_is_a_step_function() -> None:
    pts = hourly(100, 200, 300)
    assert value_at(pts, T0) == 100
    assert value_at(pts, T0 + 1.5 * H) == 200
    assert value_at(pts, T0 + 2.99 * H) == 300  # last point lasts one median step
    assert value_at(pts, T0 + 3 * H) is None
    assert value_at(pts, T0 - timedelta(seconds=1)) is None


def test_explicit_durations_leave_gaps_uncovered() -> None:
    pts = [ForecastPoint(T0, 10, timedelta(minutes=30)), ForecastPoint(T0 + H, 20, timedelta(minutes=30))]
    assert value_at(pts, T0 + timedelta(minutes=45)) is None
    assert window_mean(pts, T0, T0 + 2 * H) is None  # a gap inside the window


def test_window_mean_is_time_weighted() -> None:
    pts = hourly(100, 400)
    assert window_mean(pts, T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)) == 250
    assert window_mean(pts, T0, T0 + timedelta(minutes=80)) == pytest.approx((100 * 60 + 400 * 20) / 80)
    assert window_mean(pts, T0, T0 + 3 * H) is None
    with pytest.raises(ValueError):
        window_mean(pts, T0, T0)


def test_window_percentile_weights_by_time() -> None:
    pts = [
        ForecastPoint(T0, 500, timedelta(minutes=10)),
        ForecastPoint(T0 + timedelta(minutes=10), 100, timedelta(minutes=50)),
    ]
    end = T0 + H
    assert window_percentile(pts, T0, end, 50) == 100  # 50 of 60 minutes are at 100
    assert window_percentile(pts, T0, end, 90) == 500
    assert window_percentile(pts, T0, end, 0) == 100
    assert window_percentile(pts, T0, end, 100) == 500
    with pytest.raises(ValueError):
        window_percentile(pts, T0, end, 101)


def test_cleanest_window_finds_the_dip_before_the_deadline() -> None:
    pts = hourly(300, 250, 100, 90, 280, 50, 40, 30)
    best = cleanest_window(pts, 2 * H, deadline=T0 + 5 * H)
    assert best is not None
    assert (best.start, best.end, best.mean_g_per_kwh) == (T0 + 2 * H, T0 + 4 * H, 95)
    later = cleanest_window(pts, 2 * H, deadline=T0 + 8 * H)
    assert later is not None and later.start == T0 + 6 * H and later.mean_g_per_kwh == 35


def test_cleanest_window_can_straddle_steps_and_respects_earliest() -> None:
    pts = hourly(100, 100, 500, 100)
    best = cleanest_window(pts, 90 * timedelta(minutes=1), deadline=T0 + 4 * H, earliest=T0 + timedelta(minutes=20))
    assert best is not None and best.start == T0 + timedelta(minutes=20) and best.mean_g_per_kwh == 100


def test_cleanest_window_none_when_it_does_not_fit() -> None:
    pts = hourly(1, 2)
    assert cleanest_window(pts, 3 * H, deadline=T0 + 10 * H) is None
    assert cleanest_window(pts, H, deadline=T0 + timedelta(minutes=30)) is None
    assert cleanest_window([], H, deadline=T0 + H) is None
    with pytest.raises(ValueError):
        cleanest_window(pts, timedelta(0), deadline=T0 + H)


def test_ties_go_to_the_earliest_window() -> None:
    best = cleanest_window(hourly(5, 5, 5, 5), H, deadline=T0 + 4 * H)
    assert best is not None and best.start == T0


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=900), min_size=2, max_size=12),
    length_min=st.integers(min_value=5, max_value=180),
    deadline_min=st.integers(min_value=0, max_value=12 * 60),
)
def test_cleanest_window_beats_every_window_on_a_five_minute_grid(
    values: list[int], length_min: int, deadline_min: int
) -> None:
    pts = hourly(*values)
    length = timedelta(minutes=length_min)
    deadline = T0 + timedelta(minutes=deadline_min)
    best = cleanest_window(pts, length, deadline)
    grid = [T0 + timedelta(minutes=m) for m in range(0, len(values) * 60, 5)]
    feasible = [s for s in grid if s + length <= min(deadline, T0 + len(values) * H)]
    if not feasible:
        assert best is None
        return
    assert best is not None
    assert best.end <= deadline and best.end - best.start == length
    assert best.mean_g_per_kwh == pytest.approx(window_mean(pts, best.start, best.end))
    for s in feasible:
        mean = window_mean(pts, s, s + length)
        assert mean is not None and best.mean_g_per_kwh <= mean + 1e-9
