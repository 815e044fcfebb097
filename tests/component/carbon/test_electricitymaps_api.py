"""Electricity Maps v3 against a loopback server that speaks its JSON and its failure modes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from repodata import TEST_DATA
from wattplane.carbon import CarbonService, Credentials, RetryPolicy, SourceConfig
from wattplane.carbon.errors import CarbonZoneMismatchError
from wattplane.carbon.providers import ElectricityMapsProvider
from wattplane.carbon.testing import InstantSleep, ManualClock

Serve = Callable[[web.Application], Awaitable[str]]

TOKEN = "em-s3cret-token-9f8e7d"
SAMPLE = TEST_DATA / "electricitymaps_api_history_sample_US-MIDW-MISO.json"  # a recorded API response


def _latest(zone: str, value: Any = 302, *, estimated: bool = False) -> dict[str, Any]:
    return {
        "zone": zone,
        "carbonIntensity": value,
        "datetime": "2024-12-01T05:00:00.000Z",
        "updatedAt": "2024-12-01T05:44:10.595Z",
        "createdAt": "2024-11-28T05:43:54.038Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": estimated,
        "estimationMethod": "TIME_SLICER_AVERAGE" if estimated else None,
    }


class FakeElectricityMaps:
    """Known zones DE and US-MIDW-MISO; the caller's own location is FR (for the fallback trap)."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.latest_override: Callable[[web.Request], web.StreamResponse | None] | None = None
        self.forecast_body: Any = None
        self.fallback_to_caller = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v3/carbon-intensity/latest", self.latest)
        app.router.add_get("/v3/carbon-intensity/history", self.history)
        app.router.add_get("/v3/carbon-intensity/forecast", self.forecast)
        return app

    def _auth(self, request: web.Request) -> web.Response | None:
        self.requests.append(request)
        token = request.headers.get("auth-token")
        if token is None:
            return web.json_response({"error": "Missing auth-token header"}, status=401)
        if token != TOKEN:
            # A careless server echoing the bad token back: the client must not repeat it.
            return web.json_response({"error": f"Invalid token {token}"}, status=401)
        return None

    def _zone(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        zone = request.query.get("zone", "")
        if zone in {"DE", "US-MIDW-MISO"}:
            return zone, None
        if self.fallback_to_caller:
            return "FR", None  # the silent caller-location fallback
        return None, web.json_response({"error": f'Zone "{zone}" does not exist.'}, status=404)

    async def latest(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        if self.latest_override is not None and (resp := self.latest_override(request)) is not None:
            return resp
        zone, error = self._zone(request)
        return error or web.json_response(_latest(zone or ""))

    async def history(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        zone, error = self._zone(request)
        if error:
            return error
        if zone == "US-MIDW-MISO":
            return web.Response(body=SAMPLE.read_bytes(), content_type="application/json")
        return web.json_response({"zone": zone, "history": [_latest(zone or "")]})

    async def forecast(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        zone, error = self._zone(request)
        if error:
            return error
        if self.forecast_body is not None:
            return web.json_response(self.forecast_body)
        points = [
            {"carbonIntensity": 300 - 10 * h, "datetime": f"2024-12-01T{5 + h:02d}:00:00.000Z"}
            for h in range(30)
            if 5 + h < 24
        ]
        return web.json_response({"zone": zone, "forecast": points, "updatedAt": "2024-12-01T05:00:00.000Z"})


@pytest.fixture
def fake() -> FakeElectricityMaps:
    return FakeElectricityMaps()


@pytest.fixture
async def em(fake: FakeElectricityMaps, serve: Serve) -> str:
    return await serve(fake.app())


def cfg(base_url: str, zone: str = "DE", **kw: Any) -> SourceConfig:
    return SourceConfig(
        provider="electricitymaps", zone=zone, base_url=base_url, timeout_s=kw.pop("timeout_s", 2.0), **kw
    )


def creds(token: str = TOKEN) -> Credentials:
    return Credentials(electricitymaps_token=SecretStr(token))


async def test_latest_sends_token_zone_and_factor_and_parses_the_reading(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, emission_factor_type="direct"))
    assert signal.error is None
    assert signal.fresh and signal.intensity_g_per_kwh == 302.0
    assert signal.reading is not None and signal.reading.timestamp.isoformat() == "2024-12-01T05:00:00+00:00"
    assert signal.reading.kind.value == "average" and signal.reading.estimated is False
    req = fake.requests[0]
    assert req.headers["auth-token"] == TOKEN
    assert req.query["zone"] == "DE"
    assert req.query["emissionFactorType"] == "direct"
    assert req.query["shouldUseFallbackCallerLookup"] == "false"


async def test_history_parses_the_real_api_sample(em: str, clock: ManualClock) -> None:
    import aiohttp
    from wattplane.carbon.providers import ProviderContext

    async with aiohttp.ClientSession() as session:
        provider = ElectricityMapsProvider(ProviderContext(session=session, credentials=creds(), clock=clock))
        points = await provider.history(cfg(em, zone="US-MIDW-MISO"))
    expected = json.loads(SAMPLE.read_text())["history"]
    assert len(points) == len(expected) == 24
    assert [p.intensity_g_per_kwh for p in points] == [float(h["carbonIntensity"]) for h in expected]
    assert points[0].timestamp.isoformat() == "2024-11-30T06:00:00+00:00"


async def test_forecast_is_attached_and_cut_to_the_horizon(em: str, make_service: Callable[..., CarbonService]) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, include_forecast=True, forecast_horizon_h=6))
    assert signal.error is None
    assert [p.intensity_g_per_kwh for p in signal.forecast] == [300, 290, 280, 270, 260, 250]


async def test_empty_forecast_is_an_error_not_a_flat_line(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    fake.forecast_body = {"zone": "DE", "forecast": [], "updatedAt": "2024-12-01T05:00:00.000Z"}
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, include_forecast=True))
    assert signal.error == "EmptyForecast"
    assert signal.intensity_g_per_kwh is None and not signal.fresh


async def test_caller_location_fallback_is_detected_and_rejected(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    fake.fallback_to_caller = True
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, zone="XX-NOWHERE"))
    assert signal.error == "ZoneMismatch"
    assert signal.intensity_g_per_kwh is None
    assert "XX-NOWHERE" in (signal.error_message or "") and "FR" in (signal.error_message or "")


async def test_fallback_in_history_points_is_rejected_too(
    em: str, fake: FakeElectricityMaps, clock: ManualClock
) -> None:
    import aiohttp
    from wattplane.carbon.providers import ProviderContext

    fake.fallback_to_caller = True
    async with aiohttp.ClientSession() as session:
        provider = ElectricityMapsProvider(ProviderContext(session=session, credentials=creds(), clock=clock))
        with pytest.raises(CarbonZoneMismatchError):
            await provider.history(cfg(em, zone="XX-NOWHERE"))


async def test_unknown_zone_404_is_reported_with_the_server_message(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService], sleeps: InstantSleep
) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, zone="XX-NOWHERE"))
    assert signal.error == "UnknownZone"
    assert "does not exist" in (signal.error_message or "")
    assert len(fake.requests) == 1 and sleeps.delays == []  # a bad zone is not retried


@pytest.mark.parametrize("token", [None, "wrong-token-abc123"])
async def test_auth_failure_never_leaks_the_token(
    em: str,
    make_service: Callable[..., CarbonService],
    caplog: pytest.LogCaptureFixture,
    token: str | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = Credentials() if token is None else creds(token)
    async with make_service(credentials) as svc:
        signal = await svc.get(cfg(em))
    if token is None:
        assert signal.error == "ConfigError" and "WATTPLANE_ELECTRICITYMAPS_TOKEN" in (signal.error_message or "")
    else:
        assert signal.error == "Unauthorized"
        everything = caplog.text + repr(signal) + str(signal.error_message) + repr(credentials)
        assert token not in everything
        assert "***" in (signal.error_message or "")  # the echoed token was redacted
    assert TOKEN not in caplog.text


async def test_nonsense_values_are_errors(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    values = iter([-5, 99_999, None, "high", True])
    fake.latest_override = lambda request: web.json_response(_latest("DE", next(values)))
    reasons = []
    async with make_service(creds()) as svc:
        for _ in range(5):
            reasons.append((await svc.refresh(cfg(em))).error)
    assert reasons == ["InvalidValue", "InvalidValue", "NoData", "MalformedResponse", "MalformedResponse"]


async def test_truncated_and_malformed_json(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    bodies = iter(['{"zone": "DE", "carbonIntensity": 3', "<html>502 Bad Gateway</html>", '["DE"]'])
    fake.latest_override = lambda request: web.Response(text=next(bodies), content_type="application/json")
    async with make_service(creds()) as svc:
        errors = [(await svc.refresh(cfg(em))).error for _ in range(3)]
    assert errors == ["MalformedResponse", "MalformedResponse", "MalformedResponse"]


async def test_body_cut_short_by_the_server_is_a_transport_error(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    async def short_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "500", "Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"zone": "DE", "carbonInt')
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", short_body)
    from aiohttp.test_utils import TestServer

    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with make_service(creds()) as svc:
            signal = await svc.get(cfg(str(server.make_url("")).rstrip("/")))
    finally:
        await server.close()
    assert signal.error == "TransportError"
    assert "truncated" in (signal.error_message or "")


async def test_500_then_success_is_retried_with_backoff(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService], sleeps: InstantSleep
) -> None:
    statuses = iter([500, 503])

    def flaky(request: web.Request) -> web.Response | None:
        status = next(statuses, None)
        return None if status is None else web.json_response({"error": "upstream down"}, status=status)

    fake.latest_override = flaky
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em))
    assert signal.error is None and signal.intensity_g_per_kwh == 302.0
    assert len(fake.requests) == 3
    assert len(sleeps.delays) == 2
    assert 0.25 <= sleeps.delays[0] <= 0.5 and 0.5 <= sleeps.delays[1] <= 1.0  # doubling, jittered


async def test_429_retry_after_is_honoured(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService], sleeps: InstantSleep
) -> None:
    answered = iter([web.json_response({"error": "Too many requests"}, status=429, headers={"Retry-After": "7"})])
    fake.latest_override = lambda request: next(answered, None)
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em))
    assert signal.error is None
    assert sleeps.delays == [7.0]


async def test_timeout_is_reported_quickly(
    em: str, fake: FakeElectricityMaps, make_service: Callable[..., CarbonService]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.6)
        return web.json_response(_latest("DE"))

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", slow)
    from aiohttp.test_utils import TestServer

    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    loop = asyncio.get_running_loop()
    try:
        async with make_service(creds(), retry=RetryPolicy(attempts=1)) as svc:
            started = loop.time()
            signal = await svc.get(cfg(str(server.make_url("")).rstrip("/"), timeout_s=0.2))
            elapsed = loop.time() - started
    finally:
        await server.close()
    assert signal.error == "Timeout"
    assert elapsed < 0.5


async def test_marginal_kind_is_a_config_error(em: str, make_service: Callable[..., CarbonService]) -> None:
    async with make_service(creds()) as svc:
        signal = await svc.get(cfg(em, kind="marginal"))
    assert signal.error == "ConfigError"
