"""Carbon-aware power within each job's own slowdown budget (the carbon section's ``Budgeted`` mode).

A job promised "at most S slower than uncapped" owns a budget of lost run time that grows with the
work it does. Each planning round this module decides the job's power limit for now by receding-horizon
optimisation over the carbon forecast, and keeps the job's account.

**The job's curve.** Operating points (limit, speed, power) where speed is the progress rate relative
to the device default limit (1.0 = uncapped). They come from the job's Zeus profile once its sweep is
done (measured seconds and joules per unit of progress), and before that from :data:`PRIOR_TRAINING`,
a deliberately pessimistic curve: at every fraction of the default limit it takes the *slowest* of the
Zeus A40 and V100 training workloads (so a prior never promises more speed than a real job keeps) and
their median power. Only the lower convex hull of power over speed matters: a point above it is beaten
by mixing its neighbours.

**The schedule.** Over the horizon's slots i (length τ_i, intensity c_i) the job picks points
(speed ρ_i, power P_i) to

    minimise Σ τ_i · (c_i · P_i − V · ρ_i)   subject to   U + Σ τ_i (1 − ρ_i) ≤ S · (B + Σ τ_i ρ_i)

where U is the run time lost so far, B the uncapped-equivalent run time so far (so S·B is the budget
earned), and V the carbon that a unit of work would cost later at the horizon's mean intensity on the
job's most energy-efficient point (the value of getting work done now rather than after the horizon).
The constraint says the job is still within its promise at the end of the horizon. It is a linear
program with one coupling constraint over a convex hull per slot: with the Lagrange multiplier λ each
slot independently takes the hull vertex where the edge slope ΔP/Δρ crosses (V + λ)/c_i, so dirty
slots run slower. Raising λ moves slots up their hull edges in order of c_i · ΔP/Δρ; taking those
upgrades in that order until the required work is met (the last fractionally) finds the λ that spends
the budget exactly, without bisection. The limit for now is the first slot's point; the rest of the
schedule is reported in status and re-planned next round as forecasts, profiles and progress change.

**Jobs of unknown length.** A job's end is not known, so the account must hold whenever it ends. The
horizon is the job's own age (at least an hour, at most the look-ahead): a job that has run for two
hours is likely to run for about as long again, so it does not save its budget for dirty hours it will
probably never see. The plan may bank budget in clean hours and spend it in dirty ones, but never
borrows: once the job has used what it earned, it runs no slower than the break-even speed
``1 / (1 + S)``, which keeps the account where it is. If the job is nevertheless more than
:data:`OVERDRAFT` beyond its budget (a profile that re-priced the past, a sweep that cost more than
the budget held), it runs uncapped until the account is back inside.

**Mixing.** The optimum may split a slot between two neighbouring hull vertices. A limit between them is
not the same thing: the curve between two hull vertices lies above their chord. So the GPUs always run
at a vertex, and the split happens in time: the plan is recomputed every round with the account as it
stands, so running the lower vertex makes the upper one due sooner and the other way round. The current
vertex is kept while the split is not lopsided (:data:`KEEP_BAND`), so this costs a few writes an hour.

**Forecasts.** The recorded forecast is used as far as it reaches; beyond it, the measured history
shifted by one look-ahead stands in (persistence: yesterday's hours for today's). With neither, all slots
carry the current value: the job then runs at the most efficient point that keeps its promise
(efficient-only). A stale or missing signal is handled by the section's ``fallback``: ``Max`` runs
uncapped; every other fallback plans efficient-only on a flat forecast (the budget is kept either way).

**The account.** Time at each limit (:func:`settle`), priced each round on the best known curve, so a
profile that arrives later re-prices the past as well. It lives in policy status and survives an
operator restart: the time since the last update is charged at the limit the GPUs report now.

Pure: no I/O, deterministic, never raises on odd numbers (non-finite inputs are treated as missing).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from wattplane.api.v1alpha1.energypolicy import JobCarbonBudget, JobProfile, LimitSeconds, PlannedLimit
from wattplane.planner.context import CarbonInput

#: Fraction of default limit → (speed, power) relative to the default limit; see the module docstring.
#: From the Zeus A40 and V100 training sweeps: slowest workload's speed, median workload's power.
PRIOR_TRAINING: Final[tuple[tuple[float, float, float], ...]] = (
    (0.30, 0.227, 0.476),
    (0.40, 0.302, 0.532),
    (0.50, 0.573, 0.656),
    (0.60, 0.750, 0.769),
    (0.70, 0.906, 0.877),
    (0.80, 0.949, 0.973),
    (0.90, 0.977, 1.000),
    (1.00, 1.000, 1.000),
)

#: How far past its budget a job may drift (fraction of its uncapped-equivalent run time) before it
#: runs uncapped to recover; keeps a wrong forecast or a re-priced past from breaking the promise.
OVERDRAFT: Final = 0.005

#: Shortest planning horizon, seconds (see "Jobs of unknown length").
MIN_HORIZON_S: Final = 3600.0

#: A fractional plan keeps the current vertex while its share of the slot stays inside
#: ``(KEEP_BAND, 1 − KEEP_BAND)``.
KEEP_BAND: Final = 0.2

#: The account keeps at most this many limits; beyond it the two closest are merged.
MAX_BINS: Final = 128

#: At most this many future steps are reported in status.
MAX_PLANNED: Final = 48

Source = Literal["profile", "prior"]


@dataclass(frozen=True)
class OperatingPoint:
    """One power limit of a job's curve.

    Attributes:
        watts: The limit.
        speed: Progress rate relative to the device default limit (1.0 = uncapped).
        power: Draw at that limit, in any unit common to the whole curve (only ratios matter).
    """

    watts: float
    speed: float
    power: float


@dataclass(frozen=True)
class JobCurve:
    """A job's operating points, sorted by limit, and where they came from."""

    points: tuple[OperatingPoint, ...]
    source: Source
    default_watts: float

    def speed(self, watts: float) -> float:
        """Relative speed at ``watts``: linear between points, flat above, the prior's shape below.

        Below the lowest measured point the prior's shape continues from it, so a profile never
        flatters a limit nobody measured.
        """
        pts = self.points
        if watts >= pts[-1].watts:
            return pts[-1].speed
        if watts <= pts[0].watts:
            if self.source == "prior" or self.default_watts <= 0:
                return pts[0].speed
            scale = _prior_speed(watts / self.default_watts) / _prior_speed(pts[0].watts / self.default_watts)
            return pts[0].speed * scale
        for a, b in itertools.pairwise(pts):
            if a.watts <= watts <= b.watts:
                share = (watts - a.watts) / (b.watts - a.watts) if b.watts > a.watts else 0.0
                return a.speed + share * (b.speed - a.speed)
        return pts[-1].speed  # unreachable: the points cover the range


@dataclass(frozen=True)
class BudgetDecision:
    """The budgeted carbon section's answer for one job this round.

    Attributes:
        watts: The limit for now; ``None`` when the section sets nothing (fallback ``Max``).
        account: The job's account, brought up to date, with the figures and the plan filled in.
        reason: Short human-readable account, for ``GpuTarget.reason``.
    """

    watts: float | None
    account: JobCarbonBudget
    reason: str


def _finite(value: object) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _real(value: object) -> bool:
    """A usable intensity: a finite, non-negative number."""
    if type(value) is float:
        return 0.0 <= value < math.inf
    return _finite(value) and float(value) >= 0  # type: ignore[arg-type]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def _iso(t: datetime) -> str:
    return _aware(t).astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=4096)
def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def _prior_speed(fraction: float) -> float:
    return _interp(fraction, [(f, s) for f, s, _ in PRIOR_TRAINING])


def _interp(x: float, table: Sequence[tuple[float, float]]) -> float:
    if x <= table[0][0]:
        return table[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


@functools.lru_cache(maxsize=64)
def prior_curve(default_watts: float) -> JobCurve:
    """:data:`PRIOR_TRAINING` scaled to a device's default limit."""
    points = tuple(OperatingPoint(f * default_watts, s, p * default_watts) for f, s, p in PRIOR_TRAINING)
    return JobCurve(points, "prior", default_watts)


def profile_curve(profile: JobProfile | None, default_watts: float) -> JobCurve | None:
    """The measured curve of a finished Zeus sweep (``None`` when there is none to use).

    Speed is relative to the time per unit at the device default limit (interpolated; the highest
    measured point when the default lies above the sweep); power is job watts.
    """
    if profile is None or profile.state != "Done":
        return None
    measured = tuple((p.watts, p.seconds_per_unit, p.joules_per_unit) for p in profile.points)
    return _measured_curve(measured, default_watts)


@functools.lru_cache(maxsize=4096)
def _measured_curve(measured: tuple[tuple[float, float, float], ...], default_watts: float) -> JobCurve | None:
    """:func:`profile_curve` on the points alone: a finished profile is the same every round, built once."""
    usable = sorted(
        (w, s, j) for w, s, j in measured if _finite(w) and _finite(s) and _finite(j) and w > 0 and s > 0 and j > 0
    )
    if len(usable) < 2:
        return None
    reference = _interp(default_watts, [(w, s) for w, s, _ in usable])
    points = tuple(OperatingPoint(w, reference / s, j / s) for w, s, j in usable)
    return JobCurve(points, "profile", default_watts)


def lower_hull(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """The points on the lower convex hull of power over speed, sorted by speed (slopes increase).

    A point that is slower and not cheaper than another is dropped first: it is never worth running.
    """
    ordered = sorted(points, key=lambda p: (p.speed, p.power))
    pruned: list[OperatingPoint] = []
    for p in ordered:
        while pruned and pruned[-1].power >= p.power:
            pruned.pop()
        if not pruned or p.speed > pruned[-1].speed + 1e-12:
            pruned.append(p)
    hull: list[OperatingPoint] = []
    for p in pruned:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(a: OperatingPoint, b: OperatingPoint, c: OperatingPoint) -> float:
    return (b.speed - a.speed) * (c.power - a.power) - (b.power - a.power) * (c.speed - a.speed)


@functools.lru_cache(maxsize=4096)
def _hull(curve: JobCurve, lo: float, hi: float) -> list[OperatingPoint]:
    """The hull of ``curve`` in ``[lo, hi]`` (curves are values: equal curves share one hull)."""
    return lower_hull(candidate_points(curve, lo, hi))


def candidate_points(curve: JobCurve, lo: float, hi: float) -> list[OperatingPoint]:
    """The curve's points inside ``[lo, hi]`` watts, plus both ends (interpolated)."""
    inside = [p for p in curve.points if lo < p.watts < hi]
    ends = []
    for w in (lo, hi):
        power = _interp(w, [(p.watts, p.power) for p in curve.points])
        ends.append(OperatingPoint(w, curve.speed(w), power))
    return [ends[0], *inside, ends[1]] if hi > lo else [ends[1]]


def settle(
    account: JobCarbonBudget, watts: float | None, now: datetime, *, max_slowdown: float | None = None
) -> JobCarbonBudget:
    """``account`` with the time since its last update charged at ``watts`` (the limit in force).

    ``max_slowdown``, when given, becomes the account's budget (the policy's or the pod's, as of now).
    """
    now = _aware(now)
    last = _parse(account.updated_at)
    seconds = (now - last).total_seconds() if last is not None else 0.0
    bins = {b.watts: b.seconds for b in account.time_at_limits if _finite(b.watts) and _finite(b.seconds)}
    if seconds > 0 and watts is not None and _finite(watts) and watts > 0:
        key = round(float(watts), 1)
        bins[key] = bins.get(key, 0.0) + seconds
    while len(bins) > MAX_BINS:
        ordered = sorted(bins)
        a, b = min(itertools.pairwise(ordered), key=lambda ab: ab[1] - ab[0])
        sa, sb = bins.pop(a), bins.pop(b)
        bins[round((a * sa + b * sb) / (sa + sb), 1) if sa + sb > 0 else a] = sa + sb
    known = {entry.watts: entry for entry in account.time_at_limits}  # unchanged entries are shared, not rebuilt
    entries = [_entry(known.get(w), w, round(t, 3)) for w, t in sorted(bins.items())]
    update: dict[str, object] = {
        "time_at_limits": entries,
        "updated_at": _iso(now) if last is None or seconds >= 0 else account.updated_at,
    }
    if max_slowdown is not None:
        update["max_slowdown"] = max_slowdown
    return account.model_copy(update=update)


def _entry(known: LimitSeconds | None, watts: float, seconds: float) -> LimitSeconds:
    if known is not None and known.seconds == seconds:
        return known
    return LimitSeconds.model_construct(watts=watts, seconds=seconds)


def price(account: JobCarbonBudget, curve: JobCurve) -> tuple[float, float]:
    """``(lost seconds, uncapped-equivalent seconds)`` of the time in ``account`` on ``curve``."""
    lost = base = 0.0
    for b in account.time_at_limits:
        speed = curve.speed(b.watts)
        lost += b.seconds * (1.0 - speed)
        base += b.seconds * speed
    return lost, base


@dataclass(frozen=True)
class Slot:
    """A stretch of the horizon at one forecast intensity."""

    start: datetime
    seconds: float
    intensity: float


@functools.lru_cache(maxsize=64)
def forecast_slots(signal: CarbonInput | None, now: datetime, horizon_s: float) -> tuple[tuple[Slot, ...], str]:
    """The horizon ``[now, now + horizon_s)`` as intensity slots, and what they are based on.

    The current value holds until the first forecast point; the forecast is used as far as it reaches,
    then history shifted by the horizon; a slot with nothing known carries the current value.
    """
    now = _aware(now)
    end = now + timedelta(seconds=horizon_s)
    current = signal.intensity if signal is not None and _finite(signal.intensity) else None
    if current is None or current < 0:
        return (Slot(now, horizon_s, 1.0),), "no signal"
    steps: dict[datetime, float] = {now: float(current)}
    forecast = [(_aware(t), float(v)) for t, v in (signal.forecast if signal else ()) if _real(v)]
    forecast = [(t, v) for t, v in forecast if now < t < end]
    reach = max((t for t, _ in forecast), default=now)
    if forecast:
        gaps = sorted((b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(forecast))
        reach += timedelta(seconds=gaps[len(gaps) // 2] if gaps else 3600.0)
    for t, v in forecast:
        steps[t] = v
    basis = "forecast" if forecast else ""
    shift = timedelta(seconds=horizon_s)
    history = [(_aware(t) + shift, float(v)) for t, v in (signal.history if signal else ()) if _real(v)]
    used_history = False
    for t, v in history:
        if max(reach, now) < t < end and t not in steps:
            steps[t] = v
            used_history = True
    if used_history:
        basis = f"{basis} + history" if basis else "history"
    times = sorted(steps)
    slots = tuple(
        Slot(t, (nxt - t).total_seconds(), steps[t])
        for t, nxt in zip(times, [*times[1:], end], strict=False)
        if nxt > t
    )
    return slots, basis or "current value only"


def _schedule(hull: Sequence[OperatingPoint], slots: Sequence[Slot], need: float, value: float) -> list[float]:
    """Per slot, the (fractional) hull level: ``k + f`` means vertex k, moved f of the way to k + 1."""
    levels: list[int] = []
    for s in slots:
        k = 0
        while k + 1 < len(hull) and value * (hull[k + 1].speed - hull[k].speed) > s.intensity * (
            hull[k + 1].power - hull[k].power
        ):
            k += 1
        levels.append(k)
    work = math.fsum(s.seconds * hull[k].speed for s, k in zip(slots, levels, strict=True))
    out = [float(k) for k in levels]
    deficit = need - work
    if deficit <= 0:
        return out
    upgrades = sorted(
        (
            s.intensity * (hull[e + 1].power - hull[e].power) / (hull[e + 1].speed - hull[e].speed),
            i,
            e,
        )
        for i, (s, k) in enumerate(zip(slots, levels, strict=True))
        for e in range(k, len(hull) - 1)
    )
    for _, i, e in upgrades:
        gain = slots[i].seconds * (hull[e + 1].speed - hull[e].speed)
        if gain <= deficit:
            out[i] = e + 1.0
            deficit -= gain
        else:
            out[i] = e + deficit / gain
            break
    return out


def _watts_at(hull: Sequence[OperatingPoint], level: float, current: float | None = None) -> float:
    """The hull vertex to run for a fractional ``level`` (see "Mixing" in the module docstring).

    ``current`` is the limit the GPUs run at now: between :data:`KEEP_BAND` of the edge it is kept, so
    the time split between two vertices changes the limit a few times an hour, not every round.
    """
    k = min(int(level), len(hull) - 1)
    f = level - k
    if k + 1 >= len(hull) or f <= 0:
        return hull[k].watts
    lower, upper = hull[k].watts, hull[k + 1].watts
    if current is not None and KEEP_BAND < f < 1 - KEEP_BAND and current in (lower, upper):
        return current
    return upper if f >= 0.5 else lower


def _watts_for_speed(hull: Sequence[OperatingPoint], speed: float) -> float:
    """The slowest hull vertex that runs at least ``speed`` (the fastest when none does)."""
    return next((p.watts for p in hull if p.speed >= speed), hull[-1].watts)


def decide(
    account: JobCarbonBudget,
    *,
    curve: JobCurve,
    lo: float,
    hi: float,
    signal: CarbonInput | None,
    signal_usable: bool,
    fallback_max: bool,
    lookahead_hours: float,
    job_age_s: float,
    now: datetime,
    current_watts: float | None = None,
) -> BudgetDecision:
    """The job's limit for now within its budget (``account`` must already be :func:`settle`-d)."""
    budget = account.max_slowdown
    lost, base = price(account, curve)
    allowed = budget * base
    figures = {
        "used_seconds": round(lost, 3),
        "allowed_seconds": round(allowed, 3),
        "curve": curve.source,
    }
    # The target's reason must stay the same while the decision does (the operator writes a GpuNode
    # whenever a target changes): the running figures go into the account's message only.
    head = f"carbon budget {budget:.1%} ({curve.source} curve)"
    spent = f"used {lost:.0f} s of {allowed:.0f} s"
    if not signal_usable and fallback_max:
        return _answer(account, None, figures, [], f"{head}: signal unusable, fallback Max", spent)
    if lost > (budget + OVERDRAFT) * base + 1e-9:
        return _answer(account, hi, figures, [], f"{head}: over budget, uncapped until back inside → {hi:g} W", spent)
    # Whole hours: jobs of similar age share one horizon, and its slots are computed once a round.
    hours = min(max(job_age_s, MIN_HORIZON_S), max(lookahead_hours, 0.0) * 3600.0 or MIN_HORIZON_S) / 3600.0
    horizon = math.ceil(hours - 1e-9) * 3600.0
    slots, basis = forecast_slots(signal if signal_usable else None, now, horizon)
    if not signal_usable:
        basis = "signal unusable: efficient only"
        slots = tuple(Slot(s.start, s.seconds, 1.0) for s in slots)
    hull = _hull(curve, lo, hi)
    total = math.fsum(s.seconds for s in slots)
    need = (total - (allowed - lost)) / (1.0 + budget)
    mean = math.fsum(s.seconds * s.intensity for s in slots) / total if total > 0 else 0.0
    value = mean * min(p.power / p.speed for p in hull)
    levels = _schedule(hull, slots, need, value)
    planned = [(s.start, _watts_at(hull, lvl)) for s, lvl in zip(slots, levels, strict=True)]
    planned[0] = (planned[0][0], _watts_at(hull, levels[0], current_watts))
    watts = planned[0][1]
    grid = f"{slots[0].intensity:.0f} g/kWh now" if signal_usable else "no usable carbon signal"
    why = f"{head}: {grid} ({basis})"
    if lost >= allowed:
        # Spent: never borrow against hours the job may not live to see. Hold the account where it is.
        even = _watts_for_speed(hull, 1.0 / (1.0 + budget))
        if even > watts:
            watts = even
            planned[0] = (planned[0][0], watts)
            why += ", budget spent: break-even speed"
    spent += f", planned over the next {horizon / 3600:.0f} h"
    return _answer(account, watts, figures, planned, f"{why} → {watts:g} W", spent)


@functools.lru_cache(maxsize=4096)
def _step(start: datetime, watts: float) -> PlannedLimit:
    """One planned step (steps are shared by the jobs that plan the same limit for the same slot)."""
    return PlannedLimit.model_construct(start=_iso(start), watts=watts)


def _answer(
    account: JobCarbonBudget,
    watts: float | None,
    figures: Mapping[str, object],
    planned: Sequence[tuple[datetime, float]],
    reason: str,
    spent: str,
) -> BudgetDecision:
    steps: list[PlannedLimit] = []
    for start, w in planned:
        if steps and steps[-1].watts == w:
            continue
        if len(steps) == MAX_PLANNED:
            break
        steps.append(_step(start, w))
    updated = account.model_copy(update={**figures, "planned": steps, "message": f"{spent}; {reason}"})
    return BudgetDecision(watts, updated, reason)


__all__ = [
    "OVERDRAFT",
    "PRIOR_TRAINING",
    "BudgetDecision",
    "JobCurve",
    "OperatingPoint",
    "Slot",
    "decide",
    "forecast_slots",
    "lower_hull",
    "price",
    "prior_curve",
    "profile_curve",
    "settle",
]
