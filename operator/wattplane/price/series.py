"""Electricity prices as a step function of time: intervals ``[start, end)`` with one price each.

Every source ends up here: a CSV trace (each row lasts until the next), the HTTP JSON document, and
later OpenADR ``PRICE`` signals, which arrive as ``(start, end, price)`` intervals already
(:meth:`PriceSeries.from_intervals`). Prices are held in the policy's currency per MWh whatever the
source's energy unit, so a kWh source and a MWh source compare directly.

Validation is strict because a price feeds a planner that spends real slowdown: a non-finite value, a
magnitude beyond :data:`MAX_ABS_PER_MWH`, an interval that ends before it starts or overlaps another
is a :class:`PriceError` naming the interval, never a silently dropped point. Negative prices are
valid (DE-LU cleared at −500 EUR/MWh in 2023) and kept as they are; what the planner makes of them is
decided in :mod:`wattplane.price.cost`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

#: Largest believable price magnitude, per MWh in any currency. Day-ahead auctions cap far below it
#: (EU single day-ahead coupling: −500 … +4,000 EUR/MWh, ERCOT's offer cap 5,000 USD/MWh); a value
#: beyond it is a unit mistake (per kWh read as per MWh the other way round) or garbage.
MAX_ABS_PER_MWH: Final = 100_000.0

_UNIT = re.compile(r"^([A-Z]{3})/(MWh|kWh)$")


class PriceError(ValueError):
    """A price source said something that cannot be a price series (the message says what and where)."""


def parse_unit(unit: str) -> tuple[str, float]:
    """``(currency, factor to per-MWh)`` of a unit such as ``EUR/MWh`` or ``USD/kWh``."""
    match = _UNIT.match(unit.strip()) if isinstance(unit, str) else None
    if match is None:
        raise PriceError(f"unknown price unit {unit!r} (expected like EUR/MWh or USD/kWh)")
    return match.group(1), 1000.0 if match.group(2) == "kWh" else 1.0


def convert(value: float, source_unit: str, target_unit: str) -> float:
    """``value`` in ``source_unit`` expressed in ``target_unit`` (same currency only: no FX rates here)."""
    src_cur, src_factor = parse_unit(source_unit)
    dst_cur, dst_factor = parse_unit(target_unit)
    if src_cur != dst_cur:
        raise PriceError(f"prices in {src_cur} cannot be used by a policy priced in {dst_cur}")
    return value * src_factor / dst_factor


@dataclass(frozen=True)
class PriceInterval:
    """One price in force over ``[start, end)`` (aware UTC), in the series' unit."""

    start: datetime
    end: datetime
    price: float


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class PriceSeries:
    """Sorted, non-overlapping price intervals (gaps allowed) in ``unit``.

    Build with :meth:`from_intervals` or :meth:`from_points`, which validate.
    """

    intervals: tuple[PriceInterval, ...]
    unit: str = "EUR/MWh"

    @classmethod
    def from_intervals(
        cls, intervals: Iterable[tuple[datetime, datetime, float]], *, unit: str, source_unit: str | None = None
    ) -> PriceSeries:
        """A series from ``(start, end, price)`` triples (OpenADR-style), converted from ``source_unit``.

        Raises:
            PriceError: A non-finite or absurd price, an empty or reversed interval, or overlaps.
        """
        _, factor = parse_unit(unit)
        if source_unit is not None:
            convert(0.0, source_unit, unit)  # an unknown unit or another currency fails even without rows
        out: list[PriceInterval] = []
        for start, end, price in intervals:
            start, end = _aware(start), _aware(end)
            where = f"interval starting {start.isoformat()}"
            if isinstance(price, bool) or not isinstance(price, int | float):
                raise PriceError(f"{where}: price is not a number ({price!r})")
            value = convert(float(price), source_unit, unit) if source_unit is not None else float(price)
            if not math.isfinite(value):
                raise PriceError(f"{where}: price is not finite ({price!r})")
            if abs(value * factor) > MAX_ABS_PER_MWH:
                raise PriceError(
                    f"{where}: price {price!r} {source_unit or unit} is beyond ±{MAX_ABS_PER_MWH:,.0f} per MWh"
                )
            if end <= start:
                raise PriceError(f"{where}: end {end.isoformat()} is not after the start")
            out.append(PriceInterval(start, end, value))
        out.sort(key=lambda i: i.start)
        for a, b in itertools.pairwise(out):
            if b.start < a.end:
                raise PriceError(f"intervals starting {a.start.isoformat()} and {b.start.isoformat()} overlap")
        return cls(tuple(out), unit)

    @classmethod
    def from_points(
        cls, points: Iterable[tuple[datetime, float]], *, unit: str, source_unit: str | None = None
    ) -> PriceSeries:
        """A series from ``(start, price)`` rows: each holds until the next, the last for the median step."""
        rows = sorted((_aware(t), v) for t, v in points)
        for a, b in itertools.pairwise(rows):
            if a[0] == b[0]:
                raise PriceError(f"two prices for {a[0].isoformat()}")
        if not rows:
            return cls((), unit)
        gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(rows))
        step = gaps[len(gaps) // 2] if gaps else timedelta(hours=1)
        ends = [b[0] for b in rows[1:]] + [rows[-1][0] + step]
        return cls.from_intervals(
            ((t, e, v) for (t, v), e in zip(rows, ends, strict=True)), unit=unit, source_unit=source_unit
        )

    def __len__(self) -> int:
        return len(self.intervals)

    @functools.cached_property
    def _starts(self) -> list[datetime]:
        """Interval starts, for bisecting (computed once: the series is immutable)."""
        return [iv.start for iv in self.intervals]

    def covering(self, t: datetime) -> PriceInterval | None:
        """The interval in force at ``t`` (``None`` in a gap or outside the series)."""
        t = _aware(t)
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self.intervals[i].end:
            return self.intervals[i]
        return None

    def at(self, t: datetime) -> float | None:
        """The price in force at ``t``, or ``None``."""
        interval = self.covering(t)
        return interval.price if interval is not None else None

    @property
    def end(self) -> datetime | None:
        """End of the last interval (how far the series reaches)."""
        return self.intervals[-1].end if self.intervals else None

    def window(self, start: datetime, end: datetime) -> PriceSeries:
        """The intervals that overlap ``[start, end)`` (not clipped)."""
        return PriceSeries(tuple(i for i in self.intervals if i.end > start and i.start < end), self.unit)

    def merged(self, newer: PriceSeries, *, keep_after: datetime) -> PriceSeries:
        """This series updated with ``newer`` (which wins where they overlap), from ``keep_after`` on.

        How a live feed keeps its recent past for the planner's persistence forecast.
        """
        if newer.unit != self.unit:
            return newer.window(keep_after, datetime.max.replace(tzinfo=UTC))
        first = newer.intervals[0].start if newer.intervals else None
        last = newer.end
        kept = [
            i
            for i in self.intervals
            if i.end > keep_after and (first is None or last is None or i.end <= first or i.start >= last)
        ]
        combined = sorted([*kept, *(i for i in newer.intervals if i.end > keep_after)], key=lambda i: i.start)
        return PriceSeries(tuple(combined), self.unit)


__all__ = ["MAX_ABS_PER_MWH", "PriceError", "PriceInterval", "PriceSeries", "convert", "parse_unit"]
