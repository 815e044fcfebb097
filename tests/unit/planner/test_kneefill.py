"""Knee-aware water-filling: worked examples and the invariants for any class of GPUs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.planner.kneefill import effective_knees, knee_water_fill, water_level


def test_above_the_knees_first_then_below() -> None:
    wants = {"a": 300.0, "b": 300.0}
    knees = {"a": 250.0, "b": 150.0}
    floors = {"a": 100.0, "b": 100.0}
    # 500 W: both keep their knees (400 W), the 100 W above them is levelled: L = 250 → a 250, b 250.
    assert knee_water_fill(wants, knees, floors, 500.0) == {"a": 250.0, "b": 250.0}
    # 420 W: still above both knees (400 W): a stays at its knee 250, b gets the level 170.
    assert knee_water_fill(wants, knees, floors, 420.0) == pytest.approx({"a": 250.0, "b": 170.0})
    # 380 W: below the knees' sum: stage two levels between floors and knees: L = 230 → a 230, b 150.
    assert knee_water_fill(wants, knees, floors, 380.0) == pytest.approx({"a": 230.0, "b": 150.0})
    # Plain water-filling would have cut a to 190 and b to 190 at 380 W: a below its knee while b is above.


def test_unknown_knee_is_cut_only_with_the_others_below_their_knees() -> None:
    wants = {"profiled": 300.0, "unknown": 300.0}
    knees = {"profiled": 200.0, "unknown": None}
    floors = {"profiled": 100.0, "unknown": 100.0}
    assert knee_water_fill(wants, knees, floors, 520.0) == pytest.approx({"profiled": 220.0, "unknown": 300.0})
    assert knee_water_fill(wants, knees, floors, 400.0) == pytest.approx({"profiled": 200.0, "unknown": 200.0})


def test_enough_for_everyone_and_not_even_the_floors() -> None:
    wants = {"a": 200.0, "b": 50.0}  # b asks for less than its floor: raised to it
    floors = {"a": 100.0, "b": 100.0}
    assert knee_water_fill(wants, {}, floors, 1000.0) == {"a": 200.0, "b": 100.0}
    assert knee_water_fill(wants, {}, floors, 150.0) == {"a": 100.0, "b": 100.0}
    assert knee_water_fill({}, {}, {}, 100.0) == {}


@st.composite
def classes(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float | None], dict[str, float], float]:
    n = draw(st.integers(1, 8))
    wants: dict[str, float] = {}
    knees: dict[str, float | None] = {}
    floors: dict[str, float] = {}
    for i in range(n):
        floor = draw(st.floats(0, 300))
        wants[f"g{i}"] = draw(st.floats(0, 700))
        knees[f"g{i}"] = draw(st.none() | st.floats(0, 700))
        floors[f"g{i}"] = floor
    amount = draw(st.floats(0, 5000))
    return wants, knees, floors, amount


@given(classes())
def test_invariants(case: tuple[dict[str, float], dict[str, float | None], dict[str, float], float]) -> None:
    wants, knees, floors, amount = case
    out = knee_water_fill(wants, knees, floors, amount)
    tops = {k: max(w, floors[k]) for k, w in wants.items()}
    knee = effective_knees(tops, knees, floors)
    tol = 1e-6 * max(1.0, amount)
    for k, watts in out.items():
        assert floors[k] - 1e-9 <= watts <= tops[k] + 1e-9
    total = math.fsum(out.values())
    if amount >= math.fsum(tops.values()):
        assert out == tops
    elif amount >= math.fsum(floors.values()):
        assert total == pytest.approx(amount, abs=tol)
    else:
        assert out == floors
    # Knee order: if anyone is below its knee, nobody is above its own.
    below = [k for k in out if out[k] < knee[k] - tol]
    above = [k for k in out if out[k] > knee[k] + tol]
    assert not (below and above), (below, above, out, knee)


@given(classes(), st.floats(0, 500))
def test_more_watts_never_lower_anyone(
    case: tuple[dict[str, float], dict[str, float | None], dict[str, float], float], extra: float
) -> None:
    wants, knees, floors, amount = case
    less = knee_water_fill(wants, knees, floors, amount)
    more = knee_water_fill(wants, knees, floors, amount + extra)
    for k in wants:
        assert more[k] >= less[k] - 1e-6


def test_water_level_solves_the_clamped_sum() -> None:
    lows = {"a": 0.0, "b": 100.0}
    highs = {"a": 300.0, "b": 150.0}
    level = water_level(lows, highs, 300.0)
    assert level == pytest.approx(150.0)
    assert math.fsum(min(max(level, lows[k]), highs[k]) for k in lows) == pytest.approx(300.0)
    assert water_level(lows, highs, 50.0) == 0.0  # below the lows: the lowest breakpoint
