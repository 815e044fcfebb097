"""CarbonService behaviour over real HTTP: shared cache, refresh, backoff, staleness, fallbacks, metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from wattplane.carbon import CarbonService, Credentials, FallbackMode, RetryPolicy, SourceConfig
from wattplane.carbon.metrics import register_metrics
from wattplane.carbon.testing import InstantSleep, ManualClock

Serve = Callable[[web.Application], Awaitable[str]]


class Scripted:
    """A UK-shaped ``/intensity`` endpoint whose answers the test scripts (default: 150 g/kWh)."""

    def __init__(self) -> None:
        self.hits = 0
        self.script: list[Callable[[], web.Response]] = []
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            return self.script.pop(0)()
        return ok(150)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/intensity", self.handle)
        return app


def ok(value: Any) -> web.Response:
    return web.json_response(
        {
            "data": [
                {
                    "from": "2024-12-01T05:00Z",
                    "to": "2024-12-01T05:30Z",
                    "intensity": {"forecast": value, "actual": value, "index": "low"},
                }
            ]
        }
    )


def fail(status: int, **headers: str) -> Callable[[], web.Response]:
    return lambda: web.json_response({"error": {"message": "nope"}}, status=status, headers=headers)


@pytest.fixture
def api() -> Scripted:
    return Scripted()


@pytest.fixture
async def base(api: Scripted, serve: Serve) -> str:
    return await serve(api.app())


def cfg(base_url: str, **kw: Any) -> SourceConfig:
    kw.setdefault("refresh_interval_s", 300)
    kw.setdefault("staleness_bound_s", 1800)
    kw.setdefault("timeout_s", 2.0)
    return SourceConfig(provider="ukcarbon", zone="national", base_url=base_url, **kw)


async def test_one_cache_per_source_and_zone_shared_by_callers(
    base: str, api: Scripted, service: CarbonService
) -> None:
    results = await asyncio.gather(*(service.get(cfg(base)) for _ in range(10)))
    assert api.hits == 1  # concurrent callers waited for one fetch
    assert {r.intensity_g_per_kwh for r in results} == {150.0}
    # a second policy with other freshness settings still shares the entry
    await service.get(cfg(base, staleness_bound_s=600))
    assert api.hits == 1


async def test_refresh_interval_is_respected(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock
) -> None:
    await service.get(cfg(base))
    clock.advance(299)
    await service.get(cfg(base))
    assert api.hits == 1
    clock.advance(2)
    api.script.append(lambda: ok(99))
    signal = await service.get(cfg(base))
    assert api.hits == 2 and signal.intensity_g_per_kwh == 99.0 and signal.age_seconds == 0


async def test_failure_keeps_last_good_then_goes_stale_with_last_good_fallback(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock
) -> None:
    await service.get(cfg(base))
    clock.advance(400)
    api.script += [fail(500)] * 3
    during = await service.get(cfg(base))
    assert during.error == "ServerError"
    assert during.fresh and during.intensity_g_per_kwh == 150.0 and during.fallback is None
    assert during.age_seconds == 400
    clock.advance(1500)  # 1900 s since the last good fetch > 1800 s bound
    api.script += [fail(503)] * 3
    stale = await service.get(cfg(base))
    assert stale.stale and stale.fallback is FallbackMode.LAST_GOOD
    assert stale.intensity_g_per_kwh == 150.0 and stale.error == "ServerError"


async def test_fixed_fallback_replaces_a_stale_value(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock
) -> None:
    config = cfg(base, fallback="fixed", fallback_intensity_g_per_kwh=700)
    assert (await service.get(config)).intensity_g_per_kwh == 150.0
    api.script += [fail(500)] * 30
    clock.advance(2000)
    signal = await service.get(config)
    assert signal.stale and signal.fallback is FallbackMode.FIXED and signal.intensity_g_per_kwh == 700
    assert signal.reading is not None and signal.reading.intensity_g_per_kwh == 150.0  # still visible


async def test_never_fetched_and_failing_gives_no_value_or_the_fixed_one(
    base: str, api: Scripted, service: CarbonService
) -> None:
    api.script += [fail(500)] * 6
    none = await service.get(cfg(base))
    assert none.intensity_g_per_kwh is None and none.age_seconds is None and not none.usable
    fixed = await service.refresh(cfg(base, fallback="fixed", fallback_intensity_g_per_kwh=500))
    assert fixed.intensity_g_per_kwh == 500 and fixed.fallback is FallbackMode.FIXED


async def test_failed_source_is_not_hammered(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock, sleeps: InstantSleep
) -> None:
    api.script += [fail(500)] * 100
    await service.get(cfg(base))
    assert api.hits == 3  # one fetch = 3 attempts
    for _ in range(5):
        await service.get(cfg(base))
    assert api.hits == 3  # backoff: later gets served from the cache
    clock.advance(5)
    await service.get(cfg(base))
    assert api.hits == 6


async def test_long_retry_after_stops_the_fetch_and_defers_the_next_one(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock, sleeps: InstantSleep
) -> None:
    api.script.append(fail(429, **{"Retry-After": "120"}))  # more than max_retry_after_s (30)
    signal = await service.get(cfg(base, refresh_interval_s=60))
    assert signal.error == "RateLimited" and api.hits == 1 and sleeps.delays == []
    clock.advance(100)
    await service.get(cfg(base, refresh_interval_s=60))
    assert api.hits == 1  # Retry-After not over yet although the refresh interval is
    clock.advance(21)
    assert (await service.get(cfg(base, refresh_interval_s=60))).error is None
    assert api.hits == 2


async def test_http_date_retry_after_is_understood(
    base: str, api: Scripted, service: CarbonService, sleeps: InstantSleep
) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    api.script.append(fail(429, **{"Retry-After": when}))
    signal = await service.get(cfg(base))
    assert signal.error is None
    assert len(sleeps.delays) == 1 and 7 <= sleeps.delays[0] <= 10


async def test_timeout_and_refused_connection(
    base: str, api: Scripted, make_service: Callable[..., CarbonService]
) -> None:
    api.delay = 0.6
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with make_service(retry=RetryPolicy(attempts=1)) as svc:
        slow = await svc.get(cfg(base, timeout_s=0.2))
        refused = await svc.get(cfg(f"http://127.0.0.1:{closed_port}"))
    assert slow.error == "Timeout"
    assert refused.error == "TransportError"


async def test_a_provider_bug_never_escapes(base: str, service: CarbonService, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = service.provider(cfg(base))

    async def broken(config: SourceConfig) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(provider, "fetch", broken)
    signal = await service.get(cfg(base))
    assert signal.error == "InternalError" and signal.intensity_g_per_kwh is None


async def test_credentials_by_ref_and_rotation(
    serve: Serve, make_service: Callable[..., CarbonService], clock: ManualClock
) -> None:
    seen: list[str] = []

    async def latest(request: web.Request) -> web.Response:
        token = request.headers.get("auth-token", "")
        seen.append(token)
        if token != "new-token":
            return web.json_response({"error": "bad token"}, status=401)
        return web.json_response({"zone": "DE", "carbonIntensity": 321, "datetime": "2024-12-01T05:00:00Z"})

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", latest)
    url = await serve(app)
    config = SourceConfig(provider="electricitymaps", zone="DE", base_url=url, credentials_ref="ns/em")
    old = Credentials(electricitymaps_token=SecretStr("old-token"))
    async with make_service(credentials_by_ref={"ns/em": old}) as svc:
        unknown = await svc.get(config.model_copy(update={"credentials_ref": "ns/other"}))
        assert unknown.error == "ConfigError"
        assert (await svc.get(config)).error == "Unauthorized"
        svc.set_credentials("ns/em", Credentials(electricitymaps_token=SecretStr("new-token")))
        signal = await svc.get(config)  # no waiting out the backoff after a rotation
    assert signal.intensity_g_per_kwh == 321
    assert seen == ["old-token", "new-token"]


async def test_metrics_are_read_at_scrape_time(
    base: str, api: Scripted, service: CarbonService, clock: ManualClock
) -> None:
    registry = CollectorRegistry()
    register_metrics(service, registry)
    await service.get(cfg(base))
    clock.advance(400)
    api.script += [fail(500)] * 3
    await service.get(cfg(base))
    clock.advance(25)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    labels = {"source": "ukcarbon", "zone": "national", "kind": "average"}

    def value(family: str, **extra: str) -> float:
        want = labels | extra if "reason" not in extra else {"source": "ukcarbon", "zone": "national"} | extra
        return next(s.value for s in families[family].samples if s.labels == want and not s.name.endswith("_created"))

    assert value("wattplane_grid_carbon_intensity_grams_per_kwh") == 150.0
    assert value("wattplane_grid_carbon_signal_age_seconds") == 425.0
    assert value("wattplane_grid_carbon_signal_stale") == 0.0
    assert value("wattplane_carbon_fetch_errors", reason="ServerError") == 1.0
    clock.advance(2000)
    again = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    stale = next(s.value for s in again["wattplane_grid_carbon_signal_stale"].samples if s.labels == labels)
    assert stale == 1.0
