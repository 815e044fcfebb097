"""Hindsight baselines: what the best possible controller would have done, job by job.

**zeus-oracle**: the static limit a complete Zeus sweep would settle on, computed on the workload's
true curve: :func:`wattplane.planner.efficiency.oracle_limit` over the limits the online sweep could
probe (from the maximum down in ``step`` watts to the floor). No profiling cost, no measurement noise.

**carbon-oracle**: the limit schedule that minimises a training job's carbon given perfect knowledge
of the carbon trace, finishing within ``(1 + slowdown)`` of its uncapped time. For a fixed end time
``E`` the job runs throughout ``[start, E)``; in every trace interval ``i`` (intensity ``c_i``, length
``τ_i``) it spends fractions ``x_ik`` of the interval at limit ``k`` (switching mid-interval is allowed,
which a power limit can do). The problem

    minimise Σ_i Σ_k c_i · P_k · τ_i · x_ik   s.t.   Σ_i Σ_k r_k · τ_i · x_ik = W,   Σ_k x_ik = 1,   x ≥ 0

is a linear program with one coupling constraint. Only points on the lower convex hull of the
``(r_k, P_k)`` pairs can be optimal, and between knots of a piecewise-linear curve ``(r(l), P(l))``
moves on a straight line, so the curve's knots are all the limits needed. Starting from every interval
at the hull's slowest point, the cheapest way to add work is the hull edge with the lowest
``c_i · ΔP/Δr`` over all intervals; hull slopes increase along the hull, so taking edges in that order
(the last one fractionally) is the exact optimum of this continuous knapsack. A negative ``c_i`` (an
electricity price below zero, for the price-oracle) turns the interval's cost concave in the rate: the
cheapest mixes there lie on the chord from the slowest to the fastest hull point, so such an interval
offers that one chord (of negative cost per unit of work, so it is taken first). The end time is chosen
over a grid of ``end_points`` values between the uncapped finish and the deadline (plus every interval
boundary in that range): the result is optimal for this LP up to that grid and the interval
resolution of the trace, so it is the physical limit of carbon-aware capping for the job, apart from
the grid. Inference services are never capped by either oracle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wattplane.agent.gpu.workloads import LimitCurve
from wattplane.api.v1alpha1.energypolicy import ProfilePoint
from wattplane.planner.carbonbudget import OperatingPoint
from wattplane.planner.carbonbudget import lower_hull as planner_hull
from wattplane.planner.efficiency import oracle_limit


def sweep_limits(lo: float, hi: float, step: float) -> list[float]:
    """The limits a sweep from ``hi`` down to ``lo`` in ``step`` watts probes (the floor itself last)."""
    out = []
    w = hi
    while w > lo + 1e-6:
        out.append(round(w, 6))
        w -= step
    out.append(lo)
    return out


def zeus_limit(curve: LimitCurve, *, eta: float, lo: float, hi: float, step: float = 25.0) -> float:
    """The zeus-oracle's static limit for a workload (same cost function as the online sweep)."""
    points = [
        ProfilePoint(watts=w, seconds_per_unit=curve.time_per_unit(w), joules_per_unit=curve.energy_per_unit(w))
        for w in sweep_limits(lo, hi, step)
    ]
    return oracle_limit(points, eta=eta)


@dataclass(frozen=True)
class HullPoint:
    """One limit on the lower convex hull: rate (units/s) and power (W) there."""

    watts: float
    rate: float
    power: float


def lower_hull(curve: LimitCurve, lo: float, hi: float) -> list[HullPoint]:
    """Limits among the curve's knots in ``[lo, hi]`` (and ``lo``, ``hi``) on the lower hull of power over rate.

    Sorted by rate; every point is the cheapest way to reach its rate, and slopes increase. The hull is
    the planner's own (:func:`wattplane.planner.carbonbudget.lower_hull`), with absolute rates.
    """
    candidates = sorted({lo, hi, *(x for x in curve.limits if lo <= x <= hi)})
    points = [OperatingPoint(w, curve.rate(w), curve.power(w)) for w in candidates]
    return [HullPoint(p.watts, p.speed, p.power) for p in planner_hull(points)]


@dataclass(frozen=True)
class Segment:
    """From ``start`` (virtual s) the job's GPUs run at ``watts``."""

    start: float
    watts: float


@dataclass(frozen=True)
class CarbonPlan:
    """The carbon-oracle's schedule for one job."""

    segments: tuple[Segment, ...]
    end: float
    carbon_per_gpu_g: float


def carbon_schedule(
    curve: LimitCurve,
    *,
    lo: float,
    hi: float,
    work: float,
    start: float,
    uncapped_watts: float,
    slowdown: float,
    intensity_at: Callable[[float], float],
    next_change: Callable[[float], float],
    end_points: int = 24,
) -> CarbonPlan:
    """The minimum-carbon schedule finishing ``work`` by ``start + (1 + slowdown) · T0`` (see the module docstring).

    ``T0`` is the time at ``uncapped_watts`` (the device default). Falls back to running uncapped when no
    schedule within the deadline exists (a curve with nothing faster than the default).
    """
    hull = lower_hull(curve, lo, hi)
    t0 = work / curve.rate(uncapped_watts)
    deadline = start + (1.0 + max(0.0, slowdown)) * t0
    fastest = hull[-1].rate
    earliest = start + work / fastest
    slots_all = slots(start, deadline, intensity_at, next_change)
    ends = {deadline, max(earliest, start + t0 * 1e-9)}
    if end_points > 1 and deadline > earliest:
        ends.update(earliest + (deadline - earliest) * k / (end_points - 1) for k in range(end_points))
    ends.update(b for _, b, _ in slots_all if earliest < b < deadline)
    best: CarbonPlan | None = None
    for end in sorted(ends):
        plan = schedule_for_end(hull, work, start, end, slots_all)
        if plan is not None and (best is None or plan.carbon_per_gpu_g < best.carbon_per_gpu_g - 1e-12):
            best = plan
    if best is None:
        watts = uncapped_watts
        carbon = sum(
            curve.power(watts) * (min(b, start + t0) - a) * c / 3.6e6
            for a, b, c in slots(start, start + t0, intensity_at, next_change)
        )
        return CarbonPlan((Segment(start, watts),), start + t0, carbon)
    return best


def slots(
    start: float, end: float, intensity_at: Callable[[float], float], next_change: Callable[[float], float]
) -> list[tuple[float, float, float]]:
    """``(from, to, intensity)`` intervals of a step function covering ``[start, end)``."""
    out = []
    t = start
    while t < end - 1e-9:
        nxt = min(end, next_change(t))
        out.append((t, nxt, intensity_at(t)))
        t = nxt
    return out


def schedule_for_end(
    hull: Sequence[HullPoint], work: float, start: float, end: float, slots_all: Sequence[tuple[float, float, float]]
) -> CarbonPlan | None:
    """The exact LP optimum for a fixed end time (``None`` when ``end`` is infeasible).

    ``slots_all`` are ``(from, to, intensity)`` intervals from ``start`` covering at least ``[start, end)``.
    """
    window = [(a, min(b, end), c) for a, b, c in slots_all if a < end - 1e-9]
    base = hull[0]
    done = sum((b - a) * base.rate for a, b, _ in window)
    top = sum((b - a) * hull[-1].rate for a, b, _ in window)
    if done > work * (1 + 1e-12) or top < work * (1 - 1e-12):
        return None  # cannot stay busy until ``end`` without overshooting, or cannot finish by it
    level = [0] * len(window)  # hull vertex each slot sits at
    frac = [0.0] * len(window)  # fraction of the slot spent on the next vertex up (the top one on a chord)
    chord = [c < 0 for _, _, c in window]  # negative cost: only the chord from the slowest to the fastest point
    top = len(hull) - 1
    upgrades = sorted(
        [
            (c * (hull[e + 1].power - hull[e].power) / (hull[e + 1].rate - hull[e].rate), i, e)
            for i, (_, _, c) in enumerate(window)
            if not chord[i]
            for e in range(top)
        ]
        + [
            (c * (hull[top].power - hull[0].power) / (hull[top].rate - hull[0].rate), i, top - 1)
            for i, (_, _, c) in enumerate(window)
            if chord[i] and top > 0
        ]
    )
    need = work - done
    for _, i, e in upgrades:
        if need <= 0:
            break
        a, b, _ = window[i]
        lower = 0 if chord[i] else e
        gain = (b - a) * (hull[e + 1].rate - hull[lower].rate)
        if gain <= need:
            level[i], need = e + 1, need - gain
        else:
            level[i], frac[i], need = lower, need / gain, 0.0
    segments: list[Segment] = []
    carbon = 0.0
    for i, (a, b, c) in enumerate(window):
        low = hull[level[i]]
        if frac[i] > 0:
            high = hull[top if chord[i] else level[i] + 1]
            split = a + (b - a) * frac[i]
            segments += [Segment(a, high.watts), Segment(split, low.watts)]
            carbon += c * ((split - a) * high.power + (b - split) * low.power) / 3.6e6
        else:
            segments.append(Segment(a, low.watts))
            carbon += c * (b - a) * low.power / 3.6e6
    merged: list[Segment] = []
    for s in segments:
        if not merged or not math.isclose(merged[-1].watts, s.watts):
            merged.append(s)
    return CarbonPlan(tuple(merged), end, carbon)
