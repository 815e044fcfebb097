"""UK Carbon Intensity API (NESO): national and regional intensity, 48 h forecast, no auth.

Zones (``SourceConfig.zone``):

* ``national`` (or ``GB``): Great Britain; ``/intensity`` has a measured ``actual`` for past
  half-hours, otherwise the ``forecast`` is used and the reading is marked estimated.
* ``regionid:<1..17>``: a DNO region; regional data carries forecasts only (estimated).
* ``postcode:<outward code>``: e.g. ``postcode:RG10`` (outward code only, not a full postcode).

Values are gCO2/kWh for half-hour periods (``from``/``to`` like ``2018-01-20T12:00Z``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from wattplane.carbon.config import SourceConfig
from wattplane.carbon.errors import (
    CarbonConfigError,
    CarbonEmptyForecastError,
    CarbonNoDataError,
    CarbonResponseError,
    CarbonZoneMismatchError,
)
from wattplane.carbon.http import get_json
from wattplane.carbon.model import ForecastPoint, IntensityReading, SignalKind
from wattplane.carbon.parsing import as_dict, as_list, field, parse_time
from wattplane.carbon.providers.base import ProviderContext, request_timeout, within_horizon
from wattplane.carbon.units import check_intensity, number

_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")
_HALF_HOUR = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class UkZone:
    """A parsed UK zone: national, or regional by region id or postcode."""

    scope: str  # "national" | "regionid" | "postcode"
    value: str = ""

    @property
    def suffix(self) -> str:
        """Path suffix of regional forward endpoints (``/regionid/13``), empty for national."""
        return "" if self.scope == "national" else f"/{self.scope}/{self.value}"


def parse_uk_zone(zone: str) -> UkZone:
    """Parse ``national`` / ``GB`` / ``regionid:N`` / ``postcode:XX9``.

    Raises:
        CarbonConfigError: Anything else (caught before any request is sent).
    """
    text = zone.strip()
    if text.lower() in {"national", "gb", "uk"}:
        return UkZone("national")
    scope, _, value = text.partition(":")
    scope = scope.lower()
    if scope == "regionid" and value.isdigit() and 1 <= int(value) <= 17:
        return UkZone("regionid", str(int(value)))
    if scope == "postcode" and _OUTWARD.match(value.strip().upper()):
        return UkZone("postcode", value.strip().upper())
    raise CarbonConfigError(
        f"UK zone {zone!r} not understood: use 'national', 'regionid:<1-17>' or 'postcode:<outward code>'"
    )


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


class UkCarbonIntensityProvider:
    """Client for api.carbonintensity.org.uk (stateless)."""

    name: ClassVar[str] = "ukcarbon"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx

    async def _get(self, config: SourceConfig, path: str) -> dict[str, Any]:
        if config.kind is not SignalKind.AVERAGE:
            raise CarbonConfigError("the UK Carbon Intensity API provides average intensity only")
        body = await get_json(
            self._ctx.session,
            f"{config.effective_base_url}{path}",
            headers={"Accept": "application/json"},
            client_timeout=request_timeout(config),
        )
        return as_dict(body, what=f"ukcarbon {path}")

    @staticmethod
    def _region(body: dict[str, Any], zone: UkZone, *, what: str) -> dict[str, Any]:
        """The region object of a regional answer (``data`` is a list of one, or the object itself)."""
        data = field(body, "data", what=what)
        if isinstance(data, list):
            if not data:
                raise CarbonNoDataError(f"{what}: no regional data")
            data = data[0]
        region = as_dict(data, what=f"{what}.data")
        got = region.get(zone.scope)
        if got is not None and str(got).upper() != zone.value.upper():
            raise CarbonZoneMismatchError(f"{what}: asked for {zone.scope} {zone.value}, got {got}", status=200)
        return region

    @staticmethod
    def _period(item: Any, *, what: str) -> tuple[datetime, timedelta, float, bool]:
        """(start, duration, g/kWh, estimated) of one half-hour object."""
        obj = as_dict(item, what=what)
        start = parse_time(field(obj, "from", what=what), what=f"{what}.from")
        end = parse_time(field(obj, "to", what=what), what=f"{what}.to") if "to" in obj else start + _HALF_HOUR
        intensity = as_dict(field(obj, "intensity", what=what), what=f"{what}.intensity")
        actual = intensity.get("actual")
        raw = actual if actual is not None else intensity.get("forecast")
        if raw is None:
            raise CarbonNoDataError(f"{what}: neither actual nor forecast intensity")
        value = check_intensity(number(raw, what=f"{what}.intensity"), what=f"{what}.intensity")
        if end <= start:
            raise CarbonResponseError(f"{what}: period ends before it starts")
        return start, end - start, value, actual is None

    def _periods(self, body: dict[str, Any], zone: UkZone, *, what: str) -> list[Any]:
        if zone.scope == "national":
            return as_list(field(body, "data", what=what), what=f"{what}.data")
        region = self._region(body, zone, what=what)
        return as_list(field(region, "data", what=f"{what}.data"), what=f"{what}.data.data")

    async def latest(self, config: SourceConfig) -> IntensityReading:
        """The current half-hour's intensity."""
        zone = parse_uk_zone(config.zone)
        path = "/intensity" if zone.scope == "national" else f"/regional/{zone.scope}/{zone.value}"
        what = f"ukcarbon {path}"
        periods = self._periods(await self._get(config, path), zone, what=what)
        if not periods:
            raise CarbonNoDataError(f"{what}: no periods")
        start, _, value, estimated = self._period(periods[0], what=f"{what}[0]")
        return IntensityReading(
            intensity_g_per_kwh=value,
            kind=SignalKind.AVERAGE,
            timestamp=start,
            source=self.name,
            zone=config.zone,
            estimated=estimated,
        )

    async def forecast(self, config: SourceConfig) -> tuple[ForecastPoint, ...]:
        """Half-hourly forecast from the current half hour, up to 48 h (cut to the horizon)."""
        zone = parse_uk_zone(config.zone)
        now = self._ctx.clock()
        start = now.replace(minute=0 if now.minute < 30 else 30, second=0, microsecond=0)
        if zone.scope == "national":
            path = f"/intensity/{_fmt(start)}/fw48h"
        else:
            path = f"/regional/intensity/{_fmt(start)}/fw48h{zone.suffix}"
        what = f"ukcarbon {path}"
        periods = self._periods(await self._get(config, path), zone, what=what)
        if not periods:
            raise CarbonEmptyForecastError(f"{what}: forecast has no periods")
        points = []
        for i, item in enumerate(periods):
            t, duration, value, _ = self._period(item, what=f"{what}[{i}]")
            points.append(ForecastPoint(t, value, duration))
        points.sort(key=lambda p: p.timestamp)
        return within_horizon(points, start, config.forecast_horizon_h)

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """Current value, plus the forecast when the configuration asks for it."""
        reading = await self.latest(config)
        if config.include_forecast:
            reading = dataclasses.replace(reading, forecast=await self.forecast(config))
        return reading
