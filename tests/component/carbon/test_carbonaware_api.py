"""GSF Carbon Aware SDK WebAPI against a loopback server with its JSON shapes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from wattplane.carbon import CarbonService, SourceConfig

Serve = Callable[[web.Application], Awaitable[str]]


class FakeSdk:
    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.emissions: list[dict[str, Any]] = [
            {"location": "eastus", "time": "2024-12-01T04:00:00+00:00", "rating": 410.5, "duration": "01:00:00"},
            {"location": "eastus", "time": "2024-12-01T05:00:00+00:00", "rating": 388.25, "duration": "01:00:00"},
        ]
        self.forecast_status = 200
        self.forecast_points: list[dict[str, Any]] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/emissions/bylocation", self.bylocation)
        app.router.add_get("/emissions/forecasts/current", self.forecast)
        return app

    async def bylocation(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if request.query["location"] == "mars":
            return web.json_response(
                {"title": "ArgumentException", "status": 400, "detail": "Unknown location: 'mars'"}, status=400
            )
        return web.json_response(self.emissions)

    async def forecast(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.forecast_status != 200:
            return web.json_response({"title": "NotImplemented", "status": 501}, status=self.forecast_status)
        points = self.forecast_points
        if points is None:
            points = [
                {"location": "eastus", "timestamp": f"2024-12-01T05:{m:02d}:00+00:00", "duration": 5, "value": 300 + m}
                for m in range(10, 60, 5)
            ]
        return web.json_response(
            [
                {
                    "generatedAt": "2024-12-01T05:10:00+00:00",
                    "requestedAt": "2024-12-01T05:10:00+00:00",
                    "location": "eastus",
                    "dataStartAt": "2024-12-01T05:10:00+00:00",
                    "dataEndAt": "2024-12-02T05:10:00+00:00",
                    "windowSize": 5,
                    "optimalDataPoints": points[:1],
                    "forecastData": points,
                }
            ]
        )


@pytest.fixture
def fake() -> FakeSdk:
    return FakeSdk()


@pytest.fixture
async def sdk(fake: FakeSdk, serve: Serve) -> str:
    return await serve(fake.app())


def cfg(base_url: str, zone: str = "eastus", **kw: Any) -> SourceConfig:
    return SourceConfig(provider="carbon-aware-sdk", zone=zone, base_url=base_url, timeout_s=2.0, **kw)


async def test_bylocation_takes_the_latest_rating_and_sends_a_time_window(
    sdk: str, fake: FakeSdk, service: CarbonService
) -> None:
    signal = await service.get(cfg(sdk, kind="marginal"))
    assert signal.intensity_g_per_kwh == 388.25
    assert signal.kind.value == "marginal"
    q = fake.queries[0]
    assert q["location"] == "eastus"
    assert q["toTime"].startswith("2024-12-01T05:10:00") and q["time"].startswith("2024-12-01T03:10:00")


async def test_forecast_points_with_minute_durations(sdk: str, service: CarbonService) -> None:
    signal = await service.get(cfg(sdk, include_forecast=True))
    assert signal.error is None, signal.error_message
    assert [p.intensity_g_per_kwh for p in signal.forecast][:3] == [310, 315, 320]
    assert signal.forecast[0].duration == timedelta(minutes=5)


async def test_501_means_the_data_source_cannot_forecast(sdk: str, fake: FakeSdk, service: CarbonService) -> None:
    fake.forecast_status = 501
    signal = await service.get(cfg(sdk, include_forecast=True))
    assert signal.error == "NotSupported"
    assert len([q for q in fake.queries if "toTime" not in q]) == 1  # not retried


async def test_empty_forecast_data_is_an_error(sdk: str, fake: FakeSdk, service: CarbonService) -> None:
    fake.forecast_points = []
    signal = await service.get(cfg(sdk, include_forecast=True))
    assert signal.error == "EmptyForecast"


async def test_no_emissions_is_no_data(sdk: str, fake: FakeSdk, service: CarbonService) -> None:
    fake.emissions = []
    signal = await service.get(cfg(sdk))
    assert signal.error == "NoData"


async def test_unknown_location_and_wrong_location(sdk: str, fake: FakeSdk, service: CarbonService) -> None:
    unknown = await service.get(cfg(sdk, zone="mars"))
    assert unknown.error == "HTTPError" and "Unknown location" in (unknown.error_message or "")
    fake.emissions[1]["location"] = "westeurope"
    wrong = await service.get(cfg(sdk))
    assert wrong.error == "ZoneMismatch"


async def test_negative_rating_is_rejected(sdk: str, fake: FakeSdk, service: CarbonService) -> None:
    fake.emissions[1]["rating"] = -3.0
    signal = await service.get(cfg(sdk))
    assert signal.error == "InvalidValue"
