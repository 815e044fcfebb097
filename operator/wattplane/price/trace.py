"""Recorded price traces: a CSV loader and a replay on the operator's clock.

CSV format: a header, then one row per interval start. The timestamp column is the first one (ISO 8601,
UTC when it carries no offset); the price column is the first whose name contains ``price`` (else the
second column). The unit is read from that name where it says one (``price_eur_per_mwh`` →
``EUR/MWh``, ``price_usd_per_kwh`` → ``USD/kWh``), else it is the policy's. ``.gz`` files are read
transparently; a UTF-8 byte-order mark is ignored. A row that cannot be read is an error naming the
row, never a skipped hour.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wattplane.price.series import PriceError, PriceSeries

_UNIT_IN_NAME = re.compile(r"price_([a-z]{3})_per_(mwh|kwh)", re.IGNORECASE)


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def unit_from_header(name: str) -> str | None:
    """The unit a column name such as ``price_eur_per_mwh`` states, or ``None``."""
    match = _UNIT_IN_NAME.search(name)
    if match is None:
        return None
    return f"{match.group(1).upper()}/{'MWh' if match.group(2).lower() == 'mwh' else 'kWh'}"


def load_price_trace(path: str | Path, *, unit: str = "EUR/MWh") -> PriceSeries:
    """Load a price CSV into a series in ``unit``.

    Raises:
        PriceError: Unreadable file, header without a price column, a bad row, a wrong currency.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise PriceError(f"{path.name}: cannot read ({exc})") from None
    if len(rows) < 2:
        raise PriceError(f"{path.name}: no price rows")
    header = [h.strip() for h in rows[0]]
    column = next((i for i, h in enumerate(header) if "price" in h.lower()), 1 if len(header) > 1 else -1)
    if column <= 0:
        raise PriceError(f"{path.name}: needs a timestamp column and a price column (header {header})")
    source_unit = unit_from_header(header[column]) or unit
    points: list[tuple[datetime, float]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) <= column:
            raise PriceError(f"{path.name}: row {number} has no price")
        try:
            t = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
        except ValueError:
            raise PriceError(f"{path.name}: row {number}: unreadable timestamp {row[0][:40]!r}") from None
        try:
            value = float(row[column])
        except ValueError:
            raise PriceError(f"{path.name}: row {number}: price {row[column][:40]!r} is not a number") from None
        points.append((t if t.tzinfo is not None else t.replace(tzinfo=UTC), value))
    try:
        return PriceSeries.from_points(points, unit=unit, source_unit=source_unit)
    except PriceError as exc:
        raise PriceError(f"{path.name}: {exc}") from None


#: Most intervals a replay hands out on each side of now (a sped-up replay packs many into an hour).
MAX_INTERVALS_EACH_WAY = 2000


class PriceReplay:
    """A loaded trace on a (sped-up) clock: its first interval starts when the replay starts; it loops.

    Intervals are stamped in replay (wall-clock) time, so a consumer treats the replay like a live feed.
    """

    def __init__(self, series: PriceSeries, *, speedup: float = 1.0, started_at: datetime) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        if not series.intervals:
            raise PriceError("an empty price trace cannot be replayed")
        self.series = series
        self.speedup = speedup
        self.started_at = started_at
        self._origin = series.intervals[0].start
        end = series.end
        assert end is not None
        self._span = (end - self._origin).total_seconds()
        lengths = sorted((i.end - i.start).total_seconds() for i in series.intervals)
        self._step = lengths[len(lengths) // 2]

    def window(self, now: datetime, *, back: timedelta, ahead: timedelta) -> PriceSeries:
        """The replayed intervals overlapping ``[now − back, now + ahead)``, in wall-clock time."""
        position = (now - self.started_at).total_seconds() * self.speedup
        reach = MAX_INTERVALS_EACH_WAY * self._step  # a fast replay would otherwise hand out millions
        lo = max(((now - back) - self.started_at).total_seconds() * self.speedup, position - reach)
        hi = min(((now + ahead) - self.started_at).total_seconds() * self.speedup, position + reach)
        out = []
        first_loop = int(lo // self._span) if lo > 0 else 0
        loop = first_loop
        while loop * self._span < hi:
            shift = loop * self._span
            for iv in self.series.intervals:
                a = (iv.start - self._origin).total_seconds() + shift
                b = (iv.end - self._origin).total_seconds() + shift
                if b <= max(lo, 0.0) or a >= hi:
                    continue
                out.append((self._wall(a), self._wall(b), iv.price))
            loop += 1
        return PriceSeries.from_intervals(out, unit=self.series.unit)

    def _wall(self, position_s: float) -> datetime:
        return self.started_at + timedelta(seconds=position_s / self.speedup)


__all__ = ["PriceReplay", "load_price_trace", "unit_from_header"]
