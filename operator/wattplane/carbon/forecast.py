"""Pure helpers over a forecast (or any) series of :class:`ForecastPoint`.

A series is read as a step function: each point's value holds from its timestamp for its
``duration``, or, when that is ``None``, until the next point (the last point then lasts as
long as the median spacing; a lone point without duration covers only its instant). Gaps
between points are *not* filled: a window that touches a gap is not covered, because guessing
there is how a scheduler picks a "clean" hour that was really missing data.

Everything is deterministic and free of I/O, so the planner and the simulator can use it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from wattplane.carbon.model import ForecastPoint


@dataclass(frozen=True, slots=True)
class Window:
    """A time window and its time-weighted mean intensity (g/kWh)."""

    start: datetime
    end: datetime
    mean_g_per_kwh: float


Segment = tuple[datetime, datetime, float]


def segments(points: Sequence[ForecastPoint]) -> list[Segment]:
    """Turn points into sorted ``(start, end, value)`` intervals, the step function they mean."""
    pts = sorted(points, key=lambda p: p.timestamp)
    if not pts:
        return []
    gaps = [(b.timestamp - a.timestamp) for a, b in itertools.pairwise(pts)]
    default = statistics.median_low(gaps) if gaps else timedelta(0)
    out: list[Segment] = []
    for i, p in enumerate(pts):
        if p.duration is not None:
            end = p.timestamp + p.duration
        elif i + 1 < len(pts):
            end = pts[i + 1].timestamp
        else:
            end = p.timestamp + default
        if end > p.timestamp:
            out.append((p.timestamp, end, p.intensity_g_per_kwh))
    return out


def value_at(points: Sequence[ForecastPoint], t: datetime) -> float | None:
    """Value in force at ``t``, or ``None`` when no point covers it."""
    for start, end, value in segments(points):
        if start <= t < end:
            return value
    return None


def _overlaps(segs: Sequence[Segment], start: datetime, end: datetime) -> list[tuple[float, float]] | None:
    """``(value, seconds)`` of each segment overlapping [start, end); ``None`` if not fully covered."""
    out: list[tuple[float, float]] = []
    cursor = start
    for s, e, v in segs:
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            return None  # a gap inside the window
        stop = min(e, end)
        out.append((v, (stop - cursor).total_seconds()))
        cursor = stop
        if cursor >= end:
            return out
    return None


def window_mean(points: Sequence[ForecastPoint], start: datetime, end: datetime) -> float | None:
    """Time-weighted mean over [start, end); ``None`` if the series does not cover all of it.

    Raises:
        ValueError: ``end`` is not after ``start``.
    """
    if end <= start:
        raise ValueError("window end must be after its start")
    parts = _overlaps(segments(points), start, end)
    if parts is None:
        return None
    total = sum(w for _, w in parts)
    return sum(v * w for v, w in parts) / total


def window_percentile(points: Sequence[ForecastPoint], start: datetime, end: datetime, q: float) -> float | None:
    """Time-weighted percentile ``q`` (0-100) over [start, end); ``None`` if not fully covered.

    The result is the smallest value such that at least ``q`` % of the window's *time* has an
    intensity at or below it (so a 30-minute point counts six times a 5-minute one).

    Raises:
        ValueError: ``q`` outside [0, 100] or an empty window.
    """
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError("q must be within [0, 100]")
    if end <= start:
        raise ValueError("window end must be after its start")
    parts = _overlaps(segments(points), start, end)
    if parts is None:
        return None
    parts.sort()
    total = sum(w for _, w in parts)
    target = total * q / 100.0
    acc = 0.0
    for value, weight in parts:
        acc += weight
        if acc >= target - 1e-9 * total:
            return value
    return parts[-1][0]


def cleanest_window(
    points: Sequence[ForecastPoint],
    length: timedelta,
    deadline: datetime,
    *,
    earliest: datetime | None = None,
) -> Window | None:
    """The window of ``length`` with the lowest mean that ends by ``deadline``.

    The mean of a step function over a sliding window changes linearly between the moments
    where the window's start or end crosses a step, so the minimum is at one of those moments;
    only they are tried. Ties go to the earliest window (run sooner when it costs nothing).

    Args:
        points: Forecast points.
        length: Window length (> 0).
        deadline: The window must end at or before this.
        earliest: The window must not start before this (e.g. now); default: series start.

    Returns:
        The best fully covered window, or ``None`` if none fits.

    Raises:
        ValueError: ``length`` is not positive.
    """
    if length <= timedelta(0):
        raise ValueError("length must be positive")
    segs = segments(points)
    if not segs:
        return None
    lo = max(earliest, segs[0][0]) if earliest is not None else segs[0][0]
    hi = min(deadline, segs[-1][1]) - length
    if hi < lo:
        return None
    candidates = {lo, hi}
    for s, e, _ in segs:
        for edge in (s, e):
            for start in (edge, edge - length):
                if lo <= start <= hi:
                    candidates.add(start)
    best: Window | None = None
    for start in sorted(candidates):
        parts = _overlaps(segs, start, start + length)
        if parts is None:
            continue
        mean = sum(v * w for v, w in parts) / sum(w for _, w in parts)
        if best is None or mean < best.mean_g_per_kwh - 1e-9:
            best = Window(start, start + length, mean)
    return best
