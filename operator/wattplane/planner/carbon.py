"""Chase-style carbon weight: from a carbon signal to how fast a policy's GPUs may run.

Chase (Yang, Meng, Chung and Chowdhury, "Chasing Low-Carbon Electricity for Practical and Sustainable
DNN Training", ICLR 2023 workshop) neither moves nor delays a training job: it lowers the GPUs' power
limit while the grid is dirty and raises it while the grid is clean, and uses a forecast to tell the
dirty hours from the clean ones. Here a policy's curve maps the signal to a performance weight w in
[0, 1] and each GPU's limit becomes ``efficient + w · (max − efficient)`` (:func:`carbon_limit`).

The curve's x (``curve.basis``):

* ``Absolute``: the current intensity, g/kWh. Simple, but a fixed threshold spends a very different
  slowdown in a windy week than in a calm one, and drifts as the grid decarbonises.
* ``ForecastPercentile``: where the current intensity ranks, 0 (cleanest) to 100 (dirtiest), among the
  forecast values for ``[now, now + lookaheadHours)``: the time-weighted share of the window that is
  cleaner than now, ties counting half. The current value takes part in the ranking as "now" and is
  never compared with itself, so the cleanest value of the window ranks 0 and the dirtiest 100 and a
  flat window ranks 50. The slowdown then lands in the dirtiest hours *of every window*, whatever the
  level of the grid.

Coverage: a ranking needs a window, not a few points. If the forecast covers less than
:data:`MIN_COVERAGE` (a quarter) of the look-ahead, the current value is ranked against the measured
history of the past ``lookaheadHours`` instead (the persistence forecast: yesterday's cycle stands in
for today's) and the reason says so. A quarter of a day is about the width of the solar valley or of
the evening peak, so less than that sees one regime of the diurnal cycle at most and ranks hours by
accident; asking for much more would throw away real forecasts that stop a few hours short of the
window. Points are read as a step function: each holds until the next one, but no longer than the
(lower) median spacing, so a gap in the data is not covered.

When the signal cannot be used as it is, ``fallback`` decides:

==================  ===========================================================================
situation           result
==================  ===========================================================================
stale, or missing   ``Efficient`` → w = 0; ``Max`` → w = 1; ``LastGood`` → the last value, flagged
                    stale (no limit at all when there never was one); ``Fixed`` →
                    ``fallbackIntensity`` in place of the signal.
nothing to rank     ``Efficient``/``Max`` as above; ``LastGood`` and ``Fixed`` keep running on the
against             value they have and take its rank as the median (50): a rank that cannot be
                    checked counts as neither clean nor dirty (the default curve then runs fast).
==================  ===========================================================================

A signal is stale when its source says so or when its ``time`` lies more than
``maxStalenessSeconds`` before ``now``; a signal without a ``time`` is judged by the flag alone.
Nothing here raises on odd input (NaN, negative values, empty curves, naive datetimes): the result
is then a decision with a reason that says what was wrong, so a broken signal can never stop a plan.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeGuard

from wattplane.api.v1alpha1.energypolicy import CarbonCurve, CarbonSpec
from wattplane.planner.context import CarbonInput

MIN_COVERAGE: Final = 0.25
"""Share of the look-ahead window a forecast (or the history) must cover to rank against it."""

MEDIAN_RANK: Final = 50.0
"""Rank assumed when there is nothing to rank the current value against."""

MAX_LOOKAHEAD_HOURS: Final = 24 * 366
"""Longest window considered (the API allows 72 h; this only keeps nonsense from overflowing dates)."""

Fallback = Literal["LastGood", "Fixed", "Efficient", "Max"]
RankedAgainst = Literal["forecast", "history"]


@dataclass(frozen=True)
class WeightDecision:
    """The carbon section's weight for one planning round, and why.

    Attributes:
        weight: Performance weight w in [0, 1]; ``None`` when the section sets no limit this round.
        intensity: The intensity the decision used, g/kWh (the signal's, or ``fallbackIntensity``).
        x: The curve's input (intensity or rank), ``None`` when the curve was not consulted.
        percentile: The rank 0-100 under ``ForecastPercentile`` (assumed 50 when nothing to rank against).
        ranked_against: Whether the rank came from the forecast or the history (``None``: neither).
        stale: The signal was missing, unusable or too old, so the fallback applied.
        fallback: The fallback that shaped the result, if one did.
        reason: Short human-readable account, for ``GpuTarget.reason`` and the policy status.
    """

    weight: float | None
    intensity: float | None
    x: float | None
    percentile: float | None
    ranked_against: RankedAgainst | None
    stale: bool
    fallback: Fallback | None
    reason: str


def carbon_weight(spec: CarbonSpec, signal: CarbonInput | None, now: datetime) -> WeightDecision:
    """The weight w the policy's curve gives for ``signal`` at ``now``; never raises."""
    now = _aware(now)
    problem = _signal_problem(spec, signal, now)
    intensity = _intensity(signal)
    fallback: Fallback | None = None
    prefix = ""
    if problem is not None:
        fallback = spec.fallback
        prefix = f"{problem}; {fallback}: "
        if fallback in ("Efficient", "Max"):
            return _forced(fallback, prefix, None, stale=True)
        if fallback == "Fixed":
            intensity = float(spec.fallback_intensity) if _usable(spec.fallback_intensity) else None
            if intensity is None:
                return _nothing(f"{prefix}no valid fallbackIntensity; no carbon limit", fallback)
            prefix += "assumed "
        elif intensity is None:
            return _nothing(f"{prefix}no earlier value to keep; no carbon limit", fallback)
        else:
            prefix += "last "
    if intensity is None:  # unreachable: a usable signal has an intensity; kept for the type checker
        return _nothing("no carbon intensity; no carbon limit", fallback)
    stale = problem is not None
    text = f"{prefix}carbon {_num(intensity)} g/kWh"

    if spec.curve.basis == "Absolute":
        return _weighed(spec.curve, intensity, intensity, None, None, stale, fallback, text)

    hours = min(spec.lookahead_hours, MAX_LOOKAHEAD_HOURS) if _finite(spec.lookahead_hours) else 0.0
    hours = max(hours, 0.0)
    window = timedelta(hours=hours)
    current_time = _aware(signal.time) if signal is not None and signal.time is not None else None
    forecast = signal.forecast if signal is not None else ()
    history = signal.history if signal is not None else ()
    rank, forecast_coverage = _rank(intensity, forecast, now, now + window, current_time)
    if rank is not None:
        where = f"{_ordinal(rank)} percentile of next {hours:g} h"
        return _weighed(spec.curve, intensity, rank, rank, "forecast", stale, fallback, f"{text}, {where}")
    rank, history_coverage = _rank(intensity, history, now - window, now, current_time)
    if rank is not None:
        where = f"{_ordinal(rank)} percentile of past {hours:g} h (forecast covers {forecast_coverage:.0%})"
        return _weighed(spec.curve, intensity, rank, rank, "history", stale, fallback, f"{text}, {where}")
    cover = f"forecast {forecast_coverage:.0%}, history {history_coverage:.0%} of {hours:g} h"
    if fallback is None and spec.fallback in ("Efficient", "Max"):
        prefix = f"{text}, nothing to rank against ({cover}); {spec.fallback}: "
        return _forced(spec.fallback, prefix, intensity, stale=False)
    where = f"nothing to rank against ({cover}), assumed median"
    return _weighed(
        spec.curve, intensity, MEDIAN_RANK, MEDIAN_RANK, None, stale, fallback or spec.fallback, f"{text}, {where}"
    )


def carbon_limit(efficient_watts: float, max_watts: float, weight: float) -> float:
    """``efficient + w · (max − efficient)`` with w clamped to [0, 1]; a non-finite w counts as 0."""
    if not _finite(efficient_watts):
        return max_watts
    if not _finite(max_watts):
        return efficient_watts
    w = min(max(weight, 0.0), 1.0) if _finite(weight) else 0.0
    limit = efficient_watts + w * (max_watts - efficient_watts)
    lo, hi = min(efficient_watts, max_watts), max(efficient_watts, max_watts)
    return min(max(limit, lo), hi)  # rounding must not step outside the two ends


def curve_weight(curve: CarbonCurve, x: float) -> float | None:
    """The curve's weight at ``x``: linear between points sorted by x, flat beyond the ends.

    Points with a non-finite x or weight are ignored and weights are clamped to [0, 1] (a validated
    curve has neither problem); ``None`` when no point is left or ``x`` is not a number.
    """
    points = sorted(
        (float(p.x), min(max(float(p.weight), 0.0), 1.0)) for p in curve.points if _finite(p.x) and _finite(p.weight)
    )
    if not points or not _finite(x):
        return None
    xs = [px for px, _ in points]
    i = bisect.bisect_right(xs, x)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (x0, w0), (x1, w1) = points[i - 1], points[i]  # x0 <= x < x1, so x1 > x0
    return w0 + (w1 - w0) * (x - x0) / (x1 - x0)


def _weighed(
    curve: CarbonCurve,
    intensity: float,
    x: float,
    percentile: float | None,
    ranked_against: RankedAgainst | None,
    stale: bool,
    fallback: Fallback | None,
    text: str,
) -> WeightDecision:
    weight = curve_weight(curve, x)
    if weight is None:
        return _nothing(f"{text}; the curve has no usable points, no carbon limit", fallback, stale=stale)
    return WeightDecision(
        weight=weight,
        intensity=intensity,
        x=x,
        percentile=percentile,
        ranked_against=ranked_against,
        stale=stale,
        fallback=fallback,
        reason=f"{text} → w={weight:.2f}",
    )


def _forced(
    fallback: Literal["Efficient", "Max"], prefix: str, intensity: float | None, *, stale: bool
) -> WeightDecision:
    weight = 0.0 if fallback == "Efficient" else 1.0
    return WeightDecision(weight, intensity, None, None, None, stale, fallback, f"{prefix}w={weight:.2f}")


def _nothing(reason: str, fallback: Fallback | None, *, stale: bool = True) -> WeightDecision:
    return WeightDecision(None, None, None, None, None, stale, fallback, reason)


def _intensity(signal: CarbonInput | None) -> float | None:
    if signal is None or not _usable(signal.intensity):
        return None
    return float(signal.intensity)


def _signal_problem(spec: CarbonSpec, signal: CarbonInput | None, now: datetime) -> str | None:
    """Why ``signal`` cannot be used as it is, or ``None`` when it is fresh and usable."""
    if signal is None:
        return "no carbon signal"
    if not _usable(signal.intensity):
        what = "no carbon intensity" if signal.intensity is None else f"unusable carbon intensity {signal.intensity!r}"
        return _with_message(what, signal.message)
    if signal.stale:
        return _with_message("carbon signal stale", signal.message)
    if signal.time is not None:
        age = (now - _aware(signal.time)).total_seconds()
        bound = spec.max_staleness_seconds
        if _finite(bound) and age > bound:
            return _with_message(f"carbon signal stale (age {_duration(age)} > {_duration(bound)})", signal.message)
    return None


def _rank(
    current: float,
    samples: Iterable[tuple[datetime, float]],
    start: datetime,
    end: datetime,
    current_time: datetime | None,
) -> tuple[float | None, float]:
    """``(rank 0-100 of current among samples in [start, end), share of the window covered)``.

    The rank is ``None`` when the samples cover less than :data:`MIN_COVERAGE` of the window.
    """
    span = (end - start).total_seconds()
    if span <= 0:
        return None, 0.0
    by_time: dict[datetime, float] = {}
    for point in samples:
        t, v = _sample(point)
        if t is not None and v is not None and t != current_time:  # the current value is not its own rival
            by_time[t] = v
    points = sorted(by_time.items())
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points)]
    if not gaps:
        return None, 0.0  # one point has no duration to speak of
    step = statistics.median_low(gaps)  # the smaller middle: a big gap never widens the others
    cleaner = equal = covered = 0.0
    for i, (t, v) in enumerate(points):
        held = min(gaps[i], step) if i < len(gaps) else step
        seconds = _overlap(t, t + timedelta(seconds=held), start, end)
        if seconds <= 0:
            continue
        covered += seconds
        if v < current:
            cleaner += seconds
        elif v == current:
            equal += seconds
    coverage = min(covered / span, 1.0)
    if coverage < MIN_COVERAGE:
        return None, coverage
    return 100.0 * (cleaner + 0.5 * equal) / covered, coverage


def _sample(point: object) -> tuple[datetime | None, float | None]:
    """A usable ``(aware time, g/kWh)`` from one forecast or history point, else ``(None, None)``."""
    if not isinstance(point, tuple) or len(point) != 2:
        return None, None
    t, v = point
    if not isinstance(t, datetime) or not _usable(v):
        return None, None
    return _aware(t), float(v)


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return max((min(a1, b1) - max(a0, b0)).total_seconds(), 0.0)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _finite(value: object) -> TypeGuard[float]:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)  # ints are always finite


def _usable(value: object) -> TypeGuard[float]:
    """A real intensity: a finite number, not negative."""
    return _finite(value) and value >= 0


def _with_message(what: str, message: str) -> str:
    text = " ".join(str(message).split())
    if not text:
        return what
    return f"{what} ({text[:77] + '...' if len(text) > 80 else text})"


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def _ordinal(rank: float) -> str:
    n = round(rank)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
