"""WattTime API v3: login, ``signal-index``, forecast, historical MOER and region lookup.

Auth: ``GET /login`` with HTTP Basic returns a bearer token valid for 30 minutes. The token is
renewed proactively once it is older than :attr:`WattTimeProvider.token_refresh_after`, and
once more on a 401 (the server may expire it earlier than we think, e.g. after a restart).

Units: ``co2_moer`` / ``co2_aoer`` values are **lbs CO2 / MWh** and become g/kWh via
:func:`~wattplane.carbon.units.lbs_per_mwh_to_g_per_kwh`. ``/v3/signal-index`` is a 0-100
**percentile** against the next 24 h; it is reported as ``IntensityReading.percentile`` and never
turned into an intensity. Without a subscription ``/v3/forecast`` answers 403 outside the preview
region; the reading then carries the percentile only (``intensity_g_per_kwh is None``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime, timedelta
from typing import Any, ClassVar

from wattplane.carbon.config import SourceConfig
from wattplane.carbon.errors import (
    CarbonAuthError,
    CarbonConfigError,
    CarbonEmptyForecastError,
    CarbonForbiddenError,
    CarbonResponseError,
    CarbonZoneMismatchError,
)
from wattplane.carbon.http import get_json
from wattplane.carbon.model import ForecastPoint, IntensityReading, SignalKind
from wattplane.carbon.parsing import as_dict, as_list, field, parse_time
from wattplane.carbon.providers.base import ProviderContext, request_timeout
from wattplane.carbon.units import check_intensity, check_percentile, lbs_per_mwh_to_g_per_kwh, number

log = logging.getLogger(__name__)

_RATE_UNITS = "lbs_co2_per_mwh"
_FIVE_MIN = timedelta(minutes=5)


class WattTimeProvider:
    """Client for WattTime v3 (one instance, hence one token, per base URL and account)."""

    name: ClassVar[str] = "watttime"
    #: Tokens live 30 minutes; renew 5 minutes early so a request never races the expiry.
    token_refresh_after: ClassVar[timedelta] = timedelta(minutes=25)

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx
        self._token: str | None = None
        self._token_at: datetime | None = None
        self._login_lock = asyncio.Lock()
        self._warned_no_forecast = False
        #: Logins performed (read by tests and useful in debugging; never the token itself).
        self.logins = 0

    def _secrets(self) -> list[str]:
        """Every secret string an error text must not repeat (account, password, token, Basic blob)."""
        creds = self._ctx.credentials
        out = [s.get_secret_value() for s in (creds.watttime_password, creds.watttime_username) if s]
        if creds.watttime_username is not None and creds.watttime_password is not None:
            pair = f"{creds.watttime_username.get_secret_value()}:{creds.watttime_password.get_secret_value()}"
            out.append(base64.b64encode(pair.encode("utf-8")).decode("ascii"))
        if self._token:
            out.append(self._token)
        return out

    async def _login(self, config: SourceConfig) -> str:
        creds = self._ctx.credentials
        if creds.watttime_username is None or creds.watttime_password is None:
            raise CarbonConfigError(
                "no WattTime account (set WATTPLANE_WATTTIME_USERNAME/PASSWORD or pass Credentials)"
            )
        # HTTP Basic built by hand: aiohttp's BasicAuth helper is deprecated in recent releases.
        pair = f"{creds.watttime_username.get_secret_value()}:{creds.watttime_password.get_secret_value()}"
        basic = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        try:
            body = await get_json(
                self._ctx.session,
                f"{config.effective_base_url}/login",
                headers={"Authorization": basic},
                client_timeout=request_timeout(config),
                secrets=self._secrets(),
            )
        except CarbonAuthError as exc:
            raise type(exc)(f"WattTime login refused: {exc}", status=exc.status) from None
        token = as_dict(body, what="watttime login").get("token")
        if not isinstance(token, str) or not token:
            raise CarbonResponseError("watttime login: no token in the answer")
        self.logins += 1
        log.info("WattTime login succeeded (%s)", config.effective_base_url)
        return token

    async def _ensure_token(self, config: SourceConfig, *, force: bool = False, stale: str | None = None) -> str:
        async with self._login_lock:
            now = self._ctx.clock()
            if force and self._token is not None and self._token != stale:
                return self._token  # another task already renewed it
            expired = self._token_at is None or now - self._token_at >= self.token_refresh_after
            if force or self._token is None or expired:
                self._token = await self._login(config)
                self._token_at = now
            return self._token

    async def _get(self, config: SourceConfig, path: str, params: dict[str, str]) -> dict[str, Any]:
        """Authenticated GET; on 401 log in again once and repeat."""
        token = await self._ensure_token(config)
        for attempt in range(2):
            try:
                body = await get_json(
                    self._ctx.session,
                    f"{config.effective_base_url}{path}",
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    client_timeout=request_timeout(config),
                    secrets=self._secrets(),
                )
            except CarbonAuthError as exc:
                if isinstance(exc, CarbonForbiddenError) or attempt == 1:
                    raise
                log.info("WattTime answered 401 on %s; renewing the token", path)
                token = await self._ensure_token(config, force=True, stale=token)
                continue
            return as_dict(body, what=f"watttime {path}")
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _signal_type(config: SourceConfig) -> str:
        return "co2_moer" if config.kind is SignalKind.MARGINAL else "co2_aoer"

    @staticmethod
    def _meta(body: dict[str, Any], config: SourceConfig, *, what: str, units: str) -> dict[str, Any]:
        meta = as_dict(body.get("meta", {}), what=f"{what}.meta")
        got_units = meta.get("units")
        if got_units is not None and got_units != units:
            raise CarbonResponseError(f"{what}: expected units {units!r}, got {got_units!r}")
        region = meta.get("region")
        if region is not None and region != config.zone:
            raise CarbonZoneMismatchError(f"{what}: asked for {config.zone!r}, got {region!r}", status=200)
        return meta

    def _series(self, body: dict[str, Any], config: SourceConfig, *, what: str) -> list[ForecastPoint]:
        meta = self._meta(body, config, what=what, units=_RATE_UNITS)
        period = meta.get("data_point_period_seconds")
        duration = timedelta(seconds=float(period)) if isinstance(period, int | float) else _FIVE_MIN
        points = []
        for i, item in enumerate(as_list(field(body, "data", what=what), what=f"{what}.data")):
            where = f"{what}.data[{i}]"
            obj = as_dict(item, what=where)
            raw = number(field(obj, "value", what=where), what=f"{where}.value")
            value = check_intensity(lbs_per_mwh_to_g_per_kwh(raw), what=f"{where}.value")
            points.append(ForecastPoint(parse_time(field(obj, "point_time", what=where), what=where), value, duration))
        points.sort(key=lambda p: p.timestamp)
        return points

    async def signal_index(self, config: SourceConfig) -> tuple[float, datetime]:
        """The current ``signal-index`` percentile (0-100) and the time it applies to."""
        what = "watttime signal-index"
        body = await self._get(
            config, "/v3/signal-index", {"region": config.zone, "signal_type": self._signal_type(config)}
        )
        self._meta(body, config, what=what, units="percentile")
        data = as_list(field(body, "data", what=what), what=f"{what}.data")
        if not data:
            raise CarbonResponseError(f"{what}: empty data")
        obj = as_dict(data[0], what=f"{what}.data[0]")
        value = check_percentile(number(field(obj, "value", what=what), what=f"{what}.value"))
        return value, parse_time(field(obj, "point_time", what=what), what=what)

    async def forecast(self, config: SourceConfig) -> tuple[ForecastPoint, ...]:
        """The latest forecast (g/kWh), ``config.forecast_horizon_h`` hours long."""
        what = "watttime forecast"
        body = await self._get(
            config,
            "/v3/forecast",
            {
                "region": config.zone,
                "signal_type": self._signal_type(config),
                "horizon_hours": str(config.forecast_horizon_h),
            },
        )
        points = self._series(body, config, what=what)
        if not points:
            raise CarbonEmptyForecastError(f"{what} for {config.zone!r} has no points")
        return tuple(points)

    async def historical(self, config: SourceConfig, start: datetime, end: datetime) -> tuple[ForecastPoint, ...]:
        """Measured rates between ``start`` and ``end`` (g/kWh; subscribers only; ≤ 30 days per call)."""
        if end - start > timedelta(days=30):
            raise CarbonConfigError("WattTime /v3/historical takes at most 30 days per request")
        body = await self._get(
            config,
            "/v3/historical",
            {
                "region": config.zone,
                "signal_type": self._signal_type(config),
                "start": start.isoformat(),
                "end": end.isoformat(),
            },
        )
        return tuple(self._series(body, config, what="watttime historical"))

    async def region_from_loc(self, config: SourceConfig, latitude: float, longitude: float) -> str:
        """The WattTime region containing a point (accepts ``region`` or ``abbrev`` in the answer)."""
        body = await self._get(
            config,
            "/v3/region-from-loc",
            {"latitude": f"{latitude:.6f}", "longitude": f"{longitude:.6f}", "signal_type": self._signal_type(config)},
        )
        for key in ("region", "abbrev"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
        raise CarbonResponseError("watttime region-from-loc: no 'region' or 'abbrev' in the answer")

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """Percentile from ``signal-index`` plus the current rate from the forecast's first point.

        The forecast's point covering "now" is WattTime's nowcast; it is marked estimated.
        """
        percentile, index_time = await self.signal_index(config)
        try:
            points = await self.forecast(config)
        except CarbonForbiddenError:
            if not self._warned_no_forecast:
                log.warning(
                    "WattTime forecast not available to this account for %s; using signal-index only", config.zone
                )
                self._warned_no_forecast = True
            return IntensityReading(
                intensity_g_per_kwh=None,
                kind=config.kind,
                timestamp=index_time,
                source=self.name,
                zone=config.zone,
                estimated=True,
                percentile=percentile,
            )
        now = self._ctx.clock()
        current = next(
            (p for p in points if p.timestamp <= now < p.timestamp + (p.duration or _FIVE_MIN)),
            points[0],
        )
        return IntensityReading(
            intensity_g_per_kwh=current.intensity_g_per_kwh,
            kind=config.kind,
            timestamp=current.timestamp,
            source=self.name,
            zone=config.zone,
            estimated=True,
            forecast=tuple(p for p in points if p.timestamp >= current.timestamp) if config.include_forecast else (),
            percentile=percentile,
        )
