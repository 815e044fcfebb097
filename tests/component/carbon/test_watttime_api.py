"""WattTime v3 against a loopback server: login, token expiry, percentile vs MOER, units."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from wattplane.carbon import CarbonService, Credentials, SourceConfig
from wattplane.carbon.errors import CarbonAuthError
from wattplane.carbon.providers import ProviderContext, WattTimeProvider
from wattplane.carbon.testing import ManualClock

Serve = Callable[[web.Application], Awaitable[str]]
USER = "gridwatcher"
PASSWORD = "pa55-W0rd-never-log-me"


class FakeWattTime:
    """Issues random bearer tokens; a token can be revoked to simulate expiry on the server side."""

    def __init__(self) -> None:
        self.valid_tokens: set[str] = set()
        self.logins = 0
        self.unauthorized = 0
        self.forecast_status = 200
        self.forecast_units = "lbs_co2_per_mwh"
        self.forecast_values: list[float] = [800.0, 900.0, 1000.0]
        self.index_value: Any = 42.0
        self.seen: list[tuple[str, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/login", self.login)
        app.router.add_get("/v3/signal-index", self.signal_index)
        app.router.add_get("/v3/forecast", self.forecast)
        app.router.add_get("/v3/historical", self.historical)
        app.router.add_get("/v3/region-from-loc", self.region_from_loc)
        return app

    def expire_all_tokens(self) -> None:
        self.valid_tokens.clear()

    async def login(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if header != expected:
            return web.json_response({"error": "invalid credentials"}, status=401)
        self.logins += 1
        token = secrets.token_hex(16)
        self.valid_tokens.add(token)
        return web.json_response({"token": token})

    def _check(self, request: web.Request) -> web.Response | None:
        self.seen.append((request.path, dict(request.query)))
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in self.valid_tokens:
            self.unauthorized += 1
            return web.json_response({"error": "token expired"}, status=401)
        return None

    def _meta(self, request: web.Request, units: str) -> dict[str, Any]:
        return {
            "region": request.query["region"],
            "signal_type": request.query["signal_type"],
            "model": {"date": "2024-10-01", "type": "binned_regression"},
            "units": units,
            "data_point_period_seconds": 300,
            "generated_at": "2024-12-01T05:10:00+00:00",
            "warnings": [],
        }

    async def signal_index(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        if request.query["region"] == "NOWHERE":
            return web.json_response({"error": "region not found"}, status=404)
        return web.json_response(
            {
                "data": [{"point_time": "2024-12-01T05:10:00+00:00", "value": self.index_value}],
                "meta": self._meta(request, "percentile"),
            }
        )

    async def forecast(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        if self.forecast_status != 200:
            return web.json_response({"error": "subscription required"}, status=self.forecast_status)
        data = [
            {"point_time": f"2024-12-01T05:{10 + 5 * i:02d}:00+00:00", "value": v}
            for i, v in enumerate(self.forecast_values)
        ]
        return web.json_response({"data": data, "meta": self._meta(request, self.forecast_units)})

    async def historical(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        data = [{"point_time": "2024-11-30T00:00:00+00:00", "value": 1000.0}]
        return web.json_response({"data": data, "meta": self._meta(request, "lbs_co2_per_mwh")})

    async def region_from_loc(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        if request.query.get("latitude", "").startswith("51"):
            return web.json_response({"abbrev": "UK", "name": "United Kingdom", "signal_type": "co2_moer"})
        return web.json_response(
            {"region": "CAISO_NORTH", "region_full_name": "California ISO Northern", "signal_type": "co2_moer"}
        )


@pytest.fixture
def fake() -> FakeWattTime:
    return FakeWattTime()


@pytest.fixture
async def wt(fake: FakeWattTime, serve: Serve) -> str:
    return await serve(fake.app())


def creds(password: str = PASSWORD) -> Credentials:
    return Credentials(watttime_username=SecretStr(USER), watttime_password=SecretStr(password))


def cfg(base_url: str, zone: str = "CAISO_NORTH", **kw: Any) -> SourceConfig:
    return SourceConfig(
        provider="watttime", zone=zone, base_url=base_url, kind=kw.pop("kind", "marginal"), timeout_s=2.0, **kw
    )


async def test_moer_is_converted_from_lbs_per_mwh_and_index_stays_a_percentile(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService]
) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(wt, include_forecast=True))
    assert signal.error is None, signal.error_message
    assert signal.intensity_g_per_kwh == pytest.approx(800.0 * 0.45359237)
    assert signal.percentile == 42.0
    assert [p.intensity_g_per_kwh for p in signal.forecast] == pytest.approx([362.873896, 408.233133, 453.59237])
    assert all(p.duration == timedelta(minutes=5) for p in signal.forecast)
    assert signal.reading is not None and signal.reading.estimated
    assert ("/v3/signal-index", {"region": "CAISO_NORTH", "signal_type": "co2_moer"}) in fake.seen
    assert fake.logins == 1


async def test_average_kind_asks_for_aoer(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService]
) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(wt, kind="average"))
    assert signal.error is None
    assert {q["signal_type"] for _, q in fake.seen} == {"co2_aoer"}


async def test_token_expiring_mid_run_triggers_one_relogin(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService], clock: ManualClock
) -> None:
    config = cfg(wt, refresh_interval_s=60)
    async with make_service(creds()) as svc:
        first = await svc.get(config)
        fake.expire_all_tokens()  # the server forgets the token before our 25 minutes are up
        clock.advance(120)
        second = await svc.get(config)
    assert first.error is None and second.error is None
    assert fake.logins == 2
    assert fake.unauthorized == 1


async def test_token_is_renewed_before_the_30_minute_expiry(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService], clock: ManualClock
) -> None:
    config = cfg(wt, refresh_interval_s=60)
    async with make_service(creds()) as svc:
        await svc.get(config)
        clock.advance(10 * 60)
        await svc.get(config)
        assert fake.logins == 1  # still young: reused
        clock.advance(16 * 60)  # 26 minutes old
        signal = await svc.get(config)
    assert signal.error is None
    assert fake.logins == 2 and fake.unauthorized == 0  # renewed proactively, never bounced


async def test_bad_password_is_unauthorized_and_never_logged(
    wt: str, make_service: Callable[..., CarbonService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Pa55word-zz91"
    credentials = creds(wrong)
    async with make_service(credentials) as svc:
        signal = await svc.get(cfg(wt))
    assert signal.error == "Unauthorized"
    assert "login refused" in (signal.error_message or "")
    leaked = caplog.text + repr(signal) + repr(credentials) + str(credentials) + str(signal.error_message)
    assert wrong not in leaked and USER not in leaked


async def test_missing_account_is_a_config_error(wt: str, make_service: Callable[..., CarbonService]) -> None:
    async with make_service(Credentials()) as svc:
        signal = await svc.get(cfg(wt))
    assert signal.error == "ConfigError"


async def test_forecast_forbidden_degrades_to_percentile_only(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService]
) -> None:
    fake.forecast_status = 403
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(wt))
    assert signal.error is None and signal.fresh
    assert signal.intensity_g_per_kwh is None
    assert signal.percentile == 42.0
    assert not signal.usable


@pytest.mark.parametrize(
    ("units", "reason"), [("percentile", "MalformedResponse"), ("kg_co2_per_mwh", "MalformedResponse")]
)
async def test_unexpected_units_are_refused(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService], units: str, reason: str
) -> None:
    fake.forecast_units = units
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(wt))
    assert signal.error == reason
    assert units in (signal.error_message or "")


async def test_percentile_out_of_range_and_absurd_moer_are_rejected(
    wt: str, fake: FakeWattTime, make_service: Callable[..., CarbonService]
) -> None:
    async with make_service(creds()) as svc:
        fake.index_value = 150
        bad_index = await svc.refresh(cfg(wt))
        fake.index_value = 42.0
        fake.forecast_values = [20_000.0]  # 9072 g/kWh after conversion
        bad_moer = await svc.refresh(cfg(wt))
        fake.forecast_values = []
        empty = await svc.refresh(cfg(wt))
    assert bad_index.error == "InvalidValue"
    assert bad_moer.error == "InvalidValue"
    assert empty.error == "EmptyForecast"


async def test_unknown_region_is_404(wt: str, make_service: Callable[..., CarbonService]) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(wt, zone="NOWHERE"))
    assert signal.error == "UnknownZone"


async def test_region_lookup_and_historical(wt: str, fake: FakeWattTime, clock: ManualClock) -> None:
    async with aiohttp.ClientSession() as session:
        provider = WattTimeProvider(ProviderContext(session=session, credentials=creds(), clock=clock))
        config = cfg(wt)
        assert await provider.region_from_loc(config, 37.77, -122.42) == "CAISO_NORTH"
        assert await provider.region_from_loc(config, 51.5, -0.12) == "UK"
        history = await provider.historical(config, clock() - timedelta(days=1), clock())
        with pytest.raises(Exception, match="30 days"):
            await provider.historical(config, clock() - timedelta(days=31), clock())
    assert history[0].intensity_g_per_kwh == pytest.approx(453.59237)
    assert fake.logins == 1
    query = next(q for path, q in fake.seen if path == "/v3/region-from-loc")
    assert query["latitude"] == "37.770000" and query["signal_type"] == "co2_moer"


async def test_concurrent_requests_share_one_login(wt: str, fake: FakeWattTime, clock: ManualClock) -> None:
    import asyncio

    async with aiohttp.ClientSession() as session:
        provider = WattTimeProvider(ProviderContext(session=session, credentials=creds(), clock=clock))
        results = await asyncio.gather(*(provider.signal_index(cfg(wt)) for _ in range(5)))
    assert [value for value, _ in results] == [42.0] * 5
    assert fake.logins == 1


async def test_login_refusal_raises_auth_error_directly(wt: str, clock: ManualClock) -> None:
    async with aiohttp.ClientSession() as session:
        provider = WattTimeProvider(ProviderContext(session=session, credentials=creds("nope-123456"), clock=clock))
        with pytest.raises(CarbonAuthError) as info:
            await provider.signal_index(cfg(wt))
    assert "nope-123456" not in str(info.value)
