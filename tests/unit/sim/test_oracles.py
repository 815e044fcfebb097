"""The hindsight baselines: the Zeus oracle's static limit and the carbon oracle's schedule are optimal."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.gpu.workloads import LimitCurve
from wattplane.sim.catalog import Catalog
from wattplane.sim.oracles import (
    carbon_schedule,
    lower_hull,
    schedule_for_end,
    slots,
    sweep_limits,
    zeus_limit,
)

CATALOG = Catalog.builtin()
CURVES = [CATALOG.workload(m, f).curve for m in ("A40", "V100") for f in CATALOG.families(m)]


def hourly(values: list[float]) -> tuple:  # (intensity_at, next_change) of a step function, 1 h steps
    def at(t: float) -> float:
        return values[int(t // 3600) % len(values)]

    def nxt(t: float) -> float:
        return (math.floor(t / 3600) + 1) * 3600.0

    return at, nxt


@pytest.mark.parametrize("curve", CURVES)
def test_lower_hull_is_convex_and_below_every_knot(curve: LimitCurve) -> None:
    hull = lower_hull(curve, 100.0, 300.0)
    rates = [p.rate for p in hull]
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    slopes = [(b.power - a.power) / (b.rate - a.rate) for a, b in itertools.pairwise(hull)]
    assert all(s > 0 for s in slopes) and slopes == sorted(slopes)
    for w in sorted({100.0, 300.0, *(x for x in curve.limits if 100 <= x <= 300)}):
        r, p = curve.rate(w), curve.power(w)
        if r > hull[-1].rate or r < hull[0].rate:
            assert r <= hull[-1].rate + 1e-12
            continue
        k = max(i for i, h in enumerate(hull) if h.rate <= r + 1e-15)
        if k == len(hull) - 1:
            assert p >= hull[-1].power - 1e-9
            continue
        a, b = hull[k], hull[k + 1]
        on_hull = a.power + (r - a.rate) * (b.power - a.power) / (b.rate - a.rate)
        assert p >= on_hull - 1e-9


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_zeus_oracle_is_the_brute_force_minimum_of_the_zeus_cost(curve: LimitCurve, eta: float) -> None:
    limits = sweep_limits(100.0, 300.0, 25.0)
    assert limits[0] == 300.0 and limits[-1] == 100.0 and len(limits) == 9

    def cost(w: float) -> float:
        return eta * curve.energy_per_unit(w) + (1 - eta) * 300.0 * curve.time_per_unit(w)

    best = min(cost(w) for w in limits)
    assert cost(zeus_limit(curve, eta=eta, lo=100.0, hi=300.0)) == pytest.approx(best, rel=1e-12)


def _integrate(plan_segments: list[tuple[float, float]], end: float, curve: LimitCurve, at, nxt) -> tuple[float, float]:
    """Work and carbon (per GPU) of running a segment list until ``end``, independently of the oracle."""
    work = carbon = 0.0
    for k, (start, watts) in enumerate(plan_segments):
        stop = plan_segments[k + 1][0] if k + 1 < len(plan_segments) else end
        for a, b, c in slots(start, stop, at, nxt):
            work += (b - a) * curve.rate(watts)
            carbon += (b - a) * curve.power(watts) * c / 3.6e6
    return work, carbon


@pytest.mark.parametrize("curve", CURVES[:6])
def test_carbon_schedule_meets_its_deadline_and_its_own_bill(curve: LimitCurve) -> None:
    at, nxt = hourly([300, 120, 80, 90, 400, 420, 380, 150] * 4)
    t0 = curve.time_per_unit(300.0)
    work = 5 * 3600.0 / t0  # a five-hour job
    plan = carbon_schedule(
        curve,
        lo=100.0,
        hi=300.0,
        work=work,
        start=1800.0,
        uncapped_watts=300.0,
        slowdown=0.05,
        intensity_at=at,
        next_change=nxt,
    )
    assert plan.end <= 1800.0 + 1.05 * work * t0 + 1e-6
    done, carbon = _integrate([(s.start, s.watts) for s in plan.segments], plan.end, curve, at, nxt)
    assert done == pytest.approx(work, rel=1e-9)
    assert carbon == pytest.approx(plan.carbon_per_gpu_g, rel=1e-9)
    _, uncapped = _integrate([(1800.0, 300.0)], 1800.0 + work * t0, curve, at, nxt)
    assert plan.carbon_per_gpu_g <= uncapped + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    curve=st.sampled_from(CURVES),
    intensities=st.lists(st.floats(min_value=20, max_value=700), min_size=12, max_size=12),
    picks=st.lists(st.integers(min_value=0, max_value=20), min_size=12, max_size=12),
    hours=st.floats(min_value=0.5, max_value=4.0),
)
def test_no_schedule_ending_at_the_same_time_emits_less(
    curve: LimitCurve, intensities: list[float], picks: list[int], hours: float
) -> None:
    """Any schedule over the oracle's candidate limits (the hull: other limits are dominated) emits at least as much."""
    at, nxt = hourly(intensities)
    hull = lower_hull(curve, 100.0, 300.0)
    choices = [hull[p % len(hull)].watts for p in picks]
    work = hours * 3600.0 / curve.time_per_unit(300.0)
    t, done, carbon = 0.0, 0.0, 0.0
    for k in range(len(choices) * 4):  # one limit per hour, run until the work is done
        watts = choices[k % len(choices)]
        rate = curve.rate(watts)
        span = min(3600.0, (work - done) / rate)
        carbon += span * curve.power(watts) * at(t) / 3.6e6
        done += span * rate
        t += span
        if done >= work * (1 - 1e-12):
            break
    best = schedule_for_end(hull, work, 0.0, t, slots(0.0, t + 1.0, at, nxt))
    assert best is not None
    assert best.carbon_per_gpu_g <= carbon * (1 + 1e-9) + 1e-12
