"""UK Carbon Intensity API (national and regional) against a loopback server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from wattplane.carbon import CarbonService, SourceConfig

Serve = Callable[[web.Application], Awaitable[str]]


def _period(start: datetime, forecast: Any, actual: Any = None, *, regional: bool = False) -> dict[str, Any]:
    fmt = "%Y-%m-%dT%H:%MZ"
    intensity: dict[str, Any] = {"forecast": forecast, "index": "moderate"}
    if not regional:
        intensity["actual"] = actual
    item: dict[str, Any] = {
        "from": start.strftime(fmt),
        "to": (start + timedelta(minutes=30)).strftime(fmt),
        "intensity": intensity,
    }
    if regional:
        item["generationmix"] = [{"fuel": "gas", "perc": 40.1}, {"fuel": "wind", "perc": 30.2}]
    return item


class FakeUk:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.national_actual: Any = 181
        self.status = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/intensity", self.national)
        app.router.add_get("/intensity/{start}/fw48h", self.national_fw48h)
        app.router.add_get("/regional/regionid/{id}", self.regional)
        app.router.add_get("/regional/postcode/{pc}", self.postcode)
        app.router.add_get("/regional/intensity/{start}/fw48h/regionid/{id}", self.regional_fw48h)
        return app

    def _gate(self, request: web.Request) -> web.Response | None:
        self.paths.append(request.path)
        assert request.headers.get("Accept") == "application/json"
        if self.status != 200:
            return web.json_response({"error": {"code": "500", "message": "down"}}, status=self.status)
        return None

    async def national(self, request: web.Request) -> web.Response:
        if (r := self._gate(request)) is not None:
            return r
        start = datetime.fromisoformat("2024-12-01T05:00+00:00")
        return web.json_response({"data": [_period(start, 190, self.national_actual)]})

    async def national_fw48h(self, request: web.Request) -> web.Response:
        if (r := self._gate(request)) is not None:
            return r
        start = datetime.fromisoformat(request.match_info["start"].replace("Z", "+00:00"))
        return web.json_response({"data": [_period(start + timedelta(minutes=30 * i), 200 - i) for i in range(96)]})

    def _region(self, regionid: int, periods: list[dict[str, Any]], postcode: str | None = None) -> dict[str, Any]:
        region: dict[str, Any] = {
            "regionid": regionid,
            "dnoregion": "Scottish Hydro Electric Power Distribution",
            "shortname": "North Scotland",
            "data": periods,
        }
        if postcode is not None:
            region["postcode"] = postcode
        return region

    async def regional(self, request: web.Request) -> web.Response:
        if (r := self._gate(request)) is not None:
            return r
        rid = int(request.match_info["id"])
        if rid == 9:  # answers for a different region than asked
            rid = 10
        start = datetime.fromisoformat("2024-12-01T05:00+00:00")
        return web.json_response({"data": [self._region(rid, [_period(start, 25, regional=True)])]})

    async def postcode(self, request: web.Request) -> web.Response:
        if (r := self._gate(request)) is not None:
            return r
        pc = request.match_info["pc"]
        if pc == "ZZ9":
            return web.json_response({"error": {"code": "400 Bad Request", "message": "Invalid postcode"}}, status=400)
        start = datetime.fromisoformat("2024-12-01T05:00+00:00")
        return web.json_response({"data": [self._region(1, [_period(start, 33, regional=True)], postcode=pc)]})

    async def regional_fw48h(self, request: web.Request) -> web.Response:
        if (r := self._gate(request)) is not None:
            return r
        start = datetime.fromisoformat(request.match_info["start"].replace("Z", "+00:00"))
        periods = [_period(start + timedelta(minutes=30 * i), 50 + i, regional=True) for i in range(96)]
        # The forward regional endpoints answer with an object, not a one-element list.
        return web.json_response({"data": self._region(int(request.match_info["id"]), periods)})


@pytest.fixture
def fake() -> FakeUk:
    return FakeUk()


@pytest.fixture
async def uk(fake: FakeUk, serve: Serve) -> str:
    return await serve(fake.app())


def cfg(base_url: str, zone: str = "national", **kw: Any) -> SourceConfig:
    return SourceConfig(provider="ukcarbon", zone=zone, base_url=base_url, timeout_s=2.0, **kw)


async def test_national_uses_actual_when_present(uk: str, fake: FakeUk, service: CarbonService) -> None:
    signal = await service.get(cfg(uk))
    assert signal.intensity_g_per_kwh == 181.0
    assert signal.reading is not None and not signal.reading.estimated
    assert signal.reading.timestamp.isoformat() == "2024-12-01T05:00:00+00:00"
    assert fake.paths == ["/intensity"]


async def test_national_falls_back_to_forecast_and_marks_it_estimated(
    uk: str, fake: FakeUk, service: CarbonService
) -> None:
    fake.national_actual = None
    signal = await service.get(cfg(uk))
    assert signal.intensity_g_per_kwh == 190.0
    assert signal.reading is not None and signal.reading.estimated


async def test_national_forecast_starts_at_the_current_half_hour(uk: str, fake: FakeUk, service: CarbonService) -> None:
    # the fixture clock stands at 05:10 UTC -> the half hour began at 05:00
    signal = await service.get(cfg(uk, include_forecast=True, forecast_horizon_h=2))
    assert "/intensity/2024-12-01T05:00Z/fw48h" in fake.paths
    assert [p.intensity_g_per_kwh for p in signal.forecast] == [200, 199, 198, 197]
    assert all(p.duration == timedelta(minutes=30) for p in signal.forecast)


async def test_regional_by_id_with_forecast_object_shape(uk: str, fake: FakeUk, service: CarbonService) -> None:
    signal = await service.get(cfg(uk, zone="regionid:1", include_forecast=True, forecast_horizon_h=1))
    assert signal.error is None, signal.error_message
    assert signal.intensity_g_per_kwh == 25.0
    assert signal.reading is not None and signal.reading.estimated  # regional data is forecast only
    assert [p.intensity_g_per_kwh for p in signal.forecast] == [50, 51]
    assert fake.paths == ["/regional/regionid/1", "/regional/intensity/2024-12-01T05:00Z/fw48h/regionid/1"]


async def test_regional_by_postcode(uk: str, fake: FakeUk, service: CarbonService) -> None:
    signal = await service.get(cfg(uk, zone="postcode:rg10"))
    assert signal.intensity_g_per_kwh == 33.0
    assert fake.paths == ["/regional/postcode/RG10"]


async def test_region_mismatch_is_rejected(uk: str, service: CarbonService) -> None:
    signal = await service.get(cfg(uk, zone="regionid:9"))
    assert signal.error == "ZoneMismatch"


async def test_bad_postcode_400_is_an_http_error(uk: str, service: CarbonService) -> None:
    signal = await service.get(cfg(uk, zone="postcode:ZZ9"))
    assert signal.error == "HTTPError"
    assert "400" in (signal.error_message or "")


@pytest.mark.parametrize("zone", ["regionid:18", "postcode:RG10 1AB", "Reading", "regionid:x"])
async def test_unparseable_zone_is_a_config_error_without_any_request(
    uk: str, fake: FakeUk, service: CarbonService, zone: str
) -> None:
    signal = await service.get(cfg(uk, zone=zone))
    assert signal.error == "ConfigError"
    assert fake.paths == []


async def test_server_errors_exhaust_retries_then_report(uk: str, fake: FakeUk, service: CarbonService) -> None:
    fake.status = 500
    signal = await service.get(cfg(uk))
    assert signal.error == "ServerError"
    assert len(fake.paths) == 3
    assert signal.intensity_g_per_kwh is None and not signal.fresh
