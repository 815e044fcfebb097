"""The one data model every carbon source is translated into.

Units are fixed here so that nothing downstream has to know which API a number came from:
intensities are **grams CO2(eq) per kWh** and times are **timezone-aware UTC datetimes**.
WattTime's ``signal-index`` is a 0-100 *percentile* of the coming day's MOER, not an intensity;
it travels in its own field (:attr:`IntensityReading.percentile`) and is never converted.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta


class SignalKind(enum.StrEnum):
    """Which emission rate a number describes.

    Average (consumption-based) rates say what the grid mix emits per kWh; marginal rates
    (MOER) say what the generator that follows a change in load emits. They differ a lot and
    must not be mixed in one policy.
    """

    AVERAGE = "average"
    MARGINAL = "marginal"


class FallbackMode(enum.StrEnum):
    """What a signal carries once its last good reading is older than the staleness bound."""

    #: Keep handing out the last good value, flagged stale (the caller decides how much to trust it).
    LAST_GOOD = "last-good"
    #: Hand out a configured fixed intensity instead (e.g. a conservative "dirty grid" value).
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One value of a series: the intensity from ``timestamp`` for ``duration``.

    ``duration`` is what the source states (UK: 30 min, WattTime: 5 min); when ``None`` the point
    lasts until the next one (see :mod:`wattplane.carbon.forecast`).
    """

    timestamp: datetime
    intensity_g_per_kwh: float
    duration: timedelta | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("ForecastPoint.timestamp must be timezone-aware (UTC)")
        if not math.isfinite(self.intensity_g_per_kwh):
            raise ValueError("ForecastPoint.intensity_g_per_kwh must be finite")


@dataclass(frozen=True, slots=True)
class IntensityReading:
    """What one successful fetch from one source says about one zone.

    Attributes:
        intensity_g_per_kwh: Carbon intensity in gCO2(eq)/kWh, or ``None`` when the source
            only offered a relative index (WattTime ``signal-index`` without MOER access).
        kind: Average or marginal.
        timestamp: Start of the period the value describes (UTC).
        source: Provider name (``electricitymaps``, ``watttime``, ``ukcarbon``,
            ``carbon-aware-sdk``, ``trace``).
        zone: Zone / region / location as the source names it.
        estimated: ``True`` when the source marks the value as estimated or forecast rather
            than measured.
        forecast: Future values, oldest first; empty when not requested or not offered.
        percentile: WattTime ``signal-index`` (0-100, higher is dirtier relative to the next
            24 h); ``None`` for every other source.
    """

    intensity_g_per_kwh: float | None
    kind: SignalKind
    timestamp: datetime
    source: str
    zone: str
    estimated: bool = False
    forecast: tuple[ForecastPoint, ...] = ()
    percentile: float | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("IntensityReading.timestamp must be timezone-aware (UTC)")
        if self.intensity_g_per_kwh is None and self.percentile is None:
            raise ValueError("IntensityReading needs an intensity or a percentile")


@dataclass(frozen=True, slots=True)
class CarbonSignal:
    """What :meth:`CarbonService.get` hands out: a reading plus how far to trust it.

    It is always returned, never raised: provider trouble shows up in ``error`` and ``fresh``.

    Attributes:
        source: Provider name from the configuration.
        zone: Zone from the configuration.
        kind: Kind from the configuration.
        intensity_g_per_kwh: The value to act on: the latest good reading's intensity, or the
            fixed fallback once the reading is older than the staleness bound; ``None`` when
            there is nothing to offer.
        fresh: ``True`` while the last good reading is younger than the staleness bound.
        age_seconds: Seconds since the last successful fetch; ``None`` if there never was one.
        reading: The last good reading (possibly stale), with its forecast and percentile.
        error: Reason code of the most recent failed fetch (see :mod:`wattplane.carbon.errors`),
            ``None`` when the most recent fetch succeeded.
        error_message: Human-readable detail for ``error`` (never contains credentials).
        fallback: Which fallback produced ``intensity_g_per_kwh`` when not fresh, else ``None``.
        fetched_at: When the last good reading was fetched (UTC).
    """

    source: str
    zone: str
    kind: SignalKind
    intensity_g_per_kwh: float | None
    fresh: bool
    age_seconds: float | None
    reading: IntensityReading | None = None
    error: str | None = None
    error_message: str | None = None
    fallback: FallbackMode | None = None
    fetched_at: datetime | None = None

    @property
    def stale(self) -> bool:
        """The opposite of ``fresh``, for readability at call sites."""
        return not self.fresh

    @property
    def forecast(self) -> tuple[ForecastPoint, ...]:
        """Forecast of the last good reading (empty when none was fetched)."""
        return self.reading.forecast if self.reading is not None else ()

    @property
    def percentile(self) -> float | None:
        """WattTime ``signal-index`` of the last good reading, if any."""
        return self.reading.percentile if self.reading is not None else None

    @property
    def usable(self) -> bool:
        """Whether ``intensity_g_per_kwh`` holds a value a policy can act on."""
        return self.intensity_g_per_kwh is not None
