"""Electricity Maps API v3: ``carbon-intensity/latest``, ``/history`` and ``/forecast``.

Auth is an ``auth-token`` header. Values are average (consumption-based) intensities in
gCO2eq/kWh; ``emissionFactorType`` selects ``lifecycle`` (the API's default) or ``direct``.

The trap handled here: for a zone it does not recognise, the API may answer with data for the
*caller's own location* instead of an error. Every response's ``zone`` is compared with the
requested one, and a mismatch is an error (``ZoneMismatch``), never a value. The request also
asks the API not to fall back (``shouldUseFallbackCallerLookup=false``).

Data © Electricity Maps; free-tier data is for non-commercial use, see their terms.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any, ClassVar

from wattplane.carbon.config import SourceConfig
from wattplane.carbon.errors import (
    CarbonConfigError,
    CarbonEmptyForecastError,
    CarbonNoDataError,
    CarbonZoneMismatchError,
)
from wattplane.carbon.http import get_json
from wattplane.carbon.model import ForecastPoint, IntensityReading, SignalKind
from wattplane.carbon.parsing import as_dict, as_list, field, parse_time
from wattplane.carbon.providers.base import ProviderContext, request_timeout, within_horizon
from wattplane.carbon.units import check_intensity, number

log = logging.getLogger(__name__)

_HOUR = timedelta(hours=1)


class ElectricityMapsProvider:
    """Client for Electricity Maps v3 (one instance per base URL and credentials)."""

    name: ClassVar[str] = "electricitymaps"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx

    def _token(self) -> str:
        token = self._ctx.credentials.electricitymaps_token
        if token is None or not token.get_secret_value():
            raise CarbonConfigError(
                "no Electricity Maps token (set WATTPLANE_ELECTRICITYMAPS_TOKEN or pass Credentials)"
            )
        return token.get_secret_value()

    async def _get(self, config: SourceConfig, endpoint: str) -> dict[str, Any]:
        if config.kind is not SignalKind.AVERAGE:
            raise CarbonConfigError("Electricity Maps v3 provides average intensity only; use kind 'average'")
        token = self._token()
        url = f"{config.effective_base_url}/v3/carbon-intensity/{endpoint}"
        params = {
            "zone": config.zone,
            "emissionFactorType": config.emission_factor_type,
            "shouldUseFallbackCallerLookup": "false",
        }
        body = await get_json(
            self._ctx.session,
            url,
            params=params,
            headers={"auth-token": token},
            client_timeout=request_timeout(config),
            secrets=[token],
        )
        obj = as_dict(body, what=f"electricitymaps {endpoint}")
        self._check_zone(config, obj, what=endpoint)
        return obj

    @staticmethod
    def _check_zone(config: SourceConfig, obj: dict[str, Any], *, what: str) -> None:
        zone = obj.get("zone")
        if zone is not None and zone != config.zone:
            raise CarbonZoneMismatchError(
                f"electricitymaps {what}: asked for zone {config.zone!r}, got data for {zone!r} "
                "(the API's caller-location fallback); refusing it",
                status=200,
            )
        if zone is None:
            log.debug("electricitymaps %s response carries no zone; cannot verify it", what)

    @staticmethod
    def _point(item: Any, *, what: str) -> tuple[Any, float]:
        obj = as_dict(item, what=what)
        raw = field(obj, "carbonIntensity", what=what)
        if raw is None:
            raise CarbonNoDataError(f"{what}: carbonIntensity is null (no data for this hour)")
        value = check_intensity(number(raw, what=f"{what}.carbonIntensity"), what=f"{what}.carbonIntensity")
        return obj, value

    async def latest(self, config: SourceConfig) -> IntensityReading:
        """The current hour's intensity for ``config.zone``."""
        obj, value = self._point(await self._get(config, "latest"), what="electricitymaps latest")
        return IntensityReading(
            intensity_g_per_kwh=value,
            kind=SignalKind.AVERAGE,
            timestamp=parse_time(field(obj, "datetime", what="electricitymaps latest"), what="datetime"),
            source=self.name,
            zone=config.zone,
            estimated=bool(obj.get("isEstimated", False)),
        )

    async def history(self, config: SourceConfig) -> tuple[ForecastPoint, ...]:
        """The past 24 hourly values (oldest first), as the API's ``/history`` returns them."""
        obj = await self._get(config, "history")
        items = as_list(field(obj, "history", what="electricitymaps history"), what="history")
        points = []
        for i, item in enumerate(items):
            what = f"electricitymaps history[{i}]"
            self._check_zone(config, as_dict(item, what=what), what=what)
            point, value = self._point(item, what=what)
            points.append(ForecastPoint(parse_time(field(point, "datetime", what=what), what=what), value, _HOUR))
        points.sort(key=lambda p: p.timestamp)
        return tuple(points)

    async def forecast(self, config: SourceConfig) -> tuple[ForecastPoint, ...]:
        """Hourly forecast, cut to ``config.forecast_horizon_h`` (paid plans only)."""
        obj = await self._get(config, "forecast")
        items = as_list(field(obj, "forecast", what="electricitymaps forecast"), what="forecast")
        if not items:
            raise CarbonEmptyForecastError(f"electricitymaps forecast for {config.zone!r} has no points")
        points = []
        for i, item in enumerate(items):
            what = f"electricitymaps forecast[{i}]"
            point, value = self._point(item, what=what)
            points.append(ForecastPoint(parse_time(field(point, "datetime", what=what), what=what), value, _HOUR))
        start = min(p.timestamp for p in points)
        return within_horizon(points, start, config.forecast_horizon_h)

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """``latest``, plus ``forecast`` when the configuration asks for it."""
        reading = await self.latest(config)
        if config.include_forecast:
            reading = dataclasses.replace(reading, forecast=await self.forecast(config))
        return reading
