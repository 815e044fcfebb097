"""Green Software Foundation Carbon Aware SDK WebAPI: ``emissions/bylocation`` and forecasts.

The WebAPI is self-hosted and fronts WattTime, Electricity Maps or JSON data; it already
converts to g/kWh (``rating`` / ``value``). Which kind (average / marginal) it serves depends on
its configured data source, so the kind is taken from ``SourceConfig.kind``. Locations are cloud
region names (``eastus``, ``westeurope``). The WebAPI has no auth of its own; a bearer token is
sent only if one is configured (for deployments behind an authenticating proxy).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, ClassVar

from wattplane.carbon.config import SourceConfig
from wattplane.carbon.errors import CarbonEmptyForecastError, CarbonNoDataError, CarbonZoneMismatchError
from wattplane.carbon.http import get_json
from wattplane.carbon.model import ForecastPoint, IntensityReading
from wattplane.carbon.parsing import as_dict, as_list, field, parse_duration, parse_time
from wattplane.carbon.providers.base import ProviderContext, request_timeout, within_horizon
from wattplane.carbon.units import check_intensity, number

#: How far back ``bylocation`` looks for the most recent value.
LOOKBACK = timedelta(hours=2)


class CarbonAwareSdkProvider:
    """Client for a Carbon Aware SDK WebAPI instance (stateless)."""

    name: ClassVar[str] = "carbon-aware-sdk"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx

    async def _get(self, config: SourceConfig, path: str, params: dict[str, str]) -> Any:
        token = self._ctx.credentials.carbon_aware_sdk_token
        headers = {"Accept": "application/json"}
        secrets: list[str] = []
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
            secrets.append(token.get_secret_value())
        return await get_json(
            self._ctx.session,
            f"{config.effective_base_url}{path}",
            params=params,
            headers=headers,
            client_timeout=request_timeout(config),
            secrets=secrets,
        )

    @staticmethod
    def _check_location(config: SourceConfig, obj: dict[str, Any], *, what: str) -> None:
        got = obj.get("location")
        if isinstance(got, str) and got.lower() != config.zone.lower():
            raise CarbonZoneMismatchError(f"{what}: asked for {config.zone!r}, got {got!r}", status=200)

    async def latest(self, config: SourceConfig) -> IntensityReading:
        """The most recent ``rating`` for the location within :data:`LOOKBACK`."""
        now = self._ctx.clock()
        what = "carbon-aware-sdk emissions/bylocation"
        body = await self._get(
            config,
            "/emissions/bylocation",
            {"location": config.zone, "time": (now - LOOKBACK).isoformat(), "toTime": now.isoformat()},
        )
        items = as_list(body if body is not None else [], what=what)
        if not items:
            raise CarbonNoDataError(f"{what}: no data for {config.zone!r} in the last {LOOKBACK}")
        parsed = []
        for i, item in enumerate(items):
            where = f"{what}[{i}]"
            obj = as_dict(item, what=where)
            self._check_location(config, obj, what=where)
            t = parse_time(field(obj, "time", what=where), what=where)
            value = check_intensity(number(field(obj, "rating", what=where), what=f"{where}.rating"), what=where)
            parsed.append((t, value))
        t, value = max(parsed, key=lambda tv: tv[0])
        return IntensityReading(
            intensity_g_per_kwh=value, kind=config.kind, timestamp=t, source=self.name, zone=config.zone
        )

    async def forecast(self, config: SourceConfig) -> tuple[ForecastPoint, ...]:
        """``forecastData`` of ``emissions/forecasts/current`` (501 when the source cannot forecast)."""
        what = "carbon-aware-sdk emissions/forecasts/current"
        body = await self._get(config, "/emissions/forecasts/current", {"location": config.zone})
        items = as_list(body if body is not None else [], what=what)
        if not items:
            raise CarbonEmptyForecastError(f"{what}: no forecast for {config.zone!r}")
        first = as_dict(items[0], what=f"{what}[0]")
        self._check_location(config, first, what=f"{what}[0]")
        data = as_list(field(first, "forecastData", what=f"{what}[0]"), what=f"{what}[0].forecastData")
        if not data:
            raise CarbonEmptyForecastError(f"{what}: forecastData is empty for {config.zone!r}")
        points = []
        for i, item in enumerate(data):
            where = f"{what}[0].forecastData[{i}]"
            obj = as_dict(item, what=where)
            value = check_intensity(number(field(obj, "value", what=where), what=f"{where}.value"), what=where)
            raw_duration = obj.get("duration")
            # The SDK's forecast DTO gives duration as minutes (a number); emissions use TimeSpans.
            duration = (
                timedelta(minutes=float(raw_duration))
                if isinstance(raw_duration, int | float) and not isinstance(raw_duration, bool)
                else parse_duration(raw_duration, what=where)
            )
            points.append(ForecastPoint(parse_time(field(obj, "timestamp", what=where), what=where), value, duration))
        start = min(p.timestamp for p in points)
        return within_horizon(points, start, config.forecast_horizon_h)

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """Current value, plus the forecast when the configuration asks for it."""
        reading = await self.latest(config)
        if config.include_forecast:
            reading = dataclasses.replace(reading, forecast=await self.forecast(config))
        return reading
