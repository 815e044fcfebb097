"""The series a ``Budgeted`` carbon section with a ``price`` part spends its budgets on.

The budgeted planner (:mod:`wattplane.planner.carbonbudget`) takes one non-negative series and runs
each job slower where it is high. With a price section that series is the *cost*::

    cost(t) = (1 − w) · I(t) + w · Ī · P⁺(t) / P̄⁺

with I the carbon intensity, P⁺ = max(P, 0) the price floored at zero, and Ī, P̄⁺ their time-weighted
means over ``[now − L, now + L)`` (L = ``lookaheadHours``): each signal counts relative to its own
level, so w = 0.5 means "a price 10 % above its mean weighs as much as carbon 10 % above its mean".
The price term is scaled by Ī so that a mixed cost reads as carbon-equivalent g/kWh and the planner's
value of work (mean cost times the best energy per unit of work) stays in the same units. A price-only
cost (w = 1) is an index instead, :data:`INDEX_SCALE` at the window's mean price, so it never moves with
a carbon signal it does not use.

Why the floor at zero: the planner's objective is Σ cost · energy, and an hour whose price is zero or
negative is one where using energy costs nothing or pays. The cost-optimal plan runs such hours
uncapped whatever the magnitude (−5 or −500 EUR/MWh), and a series of 0 makes the planner do exactly
that while keeping the series non-negative, which the planner requires. Normalising by the plain mean
instead would flip signs when the mean is negative and divide by zero when it is zero; both happen in
DE-LU on sunny weekends. When every price of the window is ≤ 0 the price term is 0 everywhere (run
uncapped as far as the price is concerned).

The weight is exact at the ends: w = 0 hands the carbon signal through unchanged (the policy behaves
as the carbon-only policy, bit for bit) and w = 1 needs no carbon signal at all (the planner's plans
do not change when the whole series is scaled, so the index is as good a unit as any).
A price that no interval covers is held for ``maxStalenessSeconds`` after its interval ended (day-ahead
prices come a day early, so a feed that is down for a while still has now); beyond that the cost is
stale and the section's fallback applies, as for a stale carbon signal.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wattplane.planner.context import CarbonInput
from wattplane.price.series import PriceInterval, PriceSeries

#: The value of a price-only cost (w = 1) at the window's mean price.
INDEX_SCALE = 100.0


@dataclass(frozen=True)
class PricedCarbonInput(CarbonInput):
    """A cost series in the shape of a carbon signal, with what it was made of (for status and explain).

    ``intensity``/``forecast``/``history`` are the cost (carbon-equivalent g/kWh, or an index for a
    price-only section; see the module docstring); the fields below are the real carbon intensity and
    price now.
    """

    # The fields that say what the cost is made of live on CarbonInput (price_weight, carbon_intensity,
    # price, price_unit): the planner reads them there, without importing this layer.


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


class _Steps:
    """Carbon points as a step function: each holds until the next, at most one median step."""

    def __init__(self, points: Iterable[tuple[datetime, float]]) -> None:
        by_time = {_aware(t): float(v) for t, v in points if isinstance(t, datetime) and _real(v)}
        self.times = sorted(by_time)
        self.values = [by_time[t] for t in self.times]
        gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(self.times))
        step = gaps[(len(gaps) - 1) // 2] if gaps else 3600.0
        self.ends = [
            min(t + timedelta(seconds=step), nxt)
            for t, nxt in zip(self.times, [*self.times[1:], datetime.max.replace(tzinfo=UTC)], strict=False)
        ]

    def at(self, t: datetime) -> float | None:
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[i] if i >= 0 and t < self.ends[i] else None

    def segments(self) -> Iterable[tuple[datetime, datetime, float]]:
        return zip(self.times, self.ends, self.values, strict=True)


def _mean(segments: Iterable[tuple[datetime, datetime, float]], lo: datetime, hi: datetime) -> float | None:
    """Time-weighted mean of a step function over the covered part of ``[lo, hi)``."""
    total = weighted = 0.0
    for a, b, v in segments:
        seconds = (min(b, hi) - max(a, lo)).total_seconds()
        if seconds > 0:
            total += seconds
            weighted += seconds * v
    return weighted / total if total > 0 else None


def _price_now(prices: PriceSeries | None, now: datetime, max_staleness_s: float) -> tuple[PriceInterval | None, str]:
    """The interval whose price applies now (held after its end within the bound), and a problem, if any."""
    if prices is None or not prices.intervals:
        return None, "no price fetched yet"
    interval = prices.covering(now)
    if interval is not None:
        return interval, ""
    before = [i for i in prices.intervals if i.end <= now]
    if before and (now - before[-1].end).total_seconds() <= max_staleness_s:
        return before[-1], f"price held since {before[-1].end.isoformat()}"
    if before:
        return None, f"no price for now (the series ended {before[-1].end.isoformat()})"
    return None, f"no price for now (the series starts {prices.intervals[0].start.isoformat()})"


def cost_input(
    carbon: CarbonInput | None,
    prices: PriceSeries | None,
    *,
    weight: float,
    now: datetime,
    lookahead_hours: float,
    price_max_staleness_s: float = 7200.0,
    price_source: str = "",
    price_message: str = "",
) -> PricedCarbonInput:
    """The cost series for one policy this round (see the module docstring); never raises."""
    now = _aware(now)
    w = min(max(float(weight), 0.0), 1.0) if math.isfinite(weight) else 1.0
    interval, price_problem = _price_now(prices, now, price_max_staleness_s)
    price_problem = "; ".join(p for p in (price_message, price_problem) if p)
    unit = prices.unit if prices is not None else ""
    price_now = interval.price if interval is not None else None
    carbon_now = carbon.intensity if carbon is not None and _real(carbon.intensity) else None
    source = f"{carbon.source if carbon is not None else ''} + price {price_source} (w={w:g})".lstrip()
    display = {"carbon_intensity": carbon_now, "price": price_now, "price_unit": unit, "price_weight": w}
    if w == 0.0:
        # Exactly the carbon-only policy: the price is shown, never used.
        base = carbon or CarbonInput(stale=True, message="no carbon signal")
        return PricedCarbonInput(
            intensity=base.intensity,
            time=base.time,
            forecast=base.forecast,
            history=base.history,
            stale=base.stale,
            source=source,
            message=base.message,
            **display,  # type: ignore[arg-type]
        )
    need_carbon = w < 1.0
    carbon_problem = ""
    if need_carbon and (carbon is None or carbon_now is None or carbon.stale):
        carbon_problem = (carbon.message if carbon is not None else "") or "no usable carbon signal"
    window = timedelta(hours=max(lookahead_hours, 1.0))
    lo, hi = now - window, now + window
    steps = _Steps(
        [*(carbon.history if carbon else ()), *(carbon.forecast if carbon else ())]
        + ([(carbon.time, carbon_now)] if carbon is not None and carbon.time is not None and carbon_now else [])
    )
    carbon_mean = _mean(steps.segments(), lo, hi)
    scale = carbon_mean if need_carbon and carbon_mean is not None and carbon_mean > 0 else INDEX_SCALE
    if need_carbon and carbon_mean is None:
        carbon_problem = carbon_problem or "carbon signal covers none of the window"
    in_window = prices.window(lo, hi).intervals if prices is not None else ()
    price_mean = _mean(((i.start, i.end, max(i.price, 0.0)) for i in in_window), lo, hi) or 0.0

    def cost(i_value: float | None, p_value: float | None) -> float | None:
        if (need_carbon and i_value is None) or p_value is None:
            return None
        price_term = scale * max(p_value, 0.0) / price_mean if price_mean > 0 else 0.0
        return (1.0 - w) * (i_value or 0.0) + w * price_term

    times = {i.start for i in in_window}
    if need_carbon:
        times.update(t for t in steps.times if lo <= t < hi)
    current_time = max((t for t in times if t <= now), default=None)
    current = cost(carbon_now, price_now)
    points: list[tuple[datetime, float]] = []
    for t in sorted(times):
        value = cost(steps.at(t) if need_carbon else None, prices.at(t) if prices is not None else None)
        if value is not None:
            points.append((t, value))
    problems = [p for p in (carbon_problem, price_problem) if p]
    stale = bool(carbon_problem) or price_now is None or current is None
    now_text = f"price {price_now:.2f} {unit}" if price_now is not None else "no price now"
    return PricedCarbonInput(
        intensity=current,
        time=current_time or (carbon.time if carbon is not None else None),
        forecast=_after(points, current_time or now),
        history=tuple((t, v) for t, v in points if current_time is not None and t < current_time),
        stale=stale,
        source=source,
        message="; ".join([now_text, *problems]),
        **display,  # type: ignore[arg-type]
    )


def _after(points: Sequence[tuple[datetime, float]], t: datetime) -> tuple[tuple[datetime, float], ...]:
    return tuple((pt, v) for pt, v in points if pt > t)


__all__ = ["INDEX_SCALE", "PricedCarbonInput", "cost_input"]
